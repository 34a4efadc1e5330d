//! Puts `memory.x` where the linker finds it (cortex-m-rt's `link.x` includes it) and
//! compiles the C part, `src/heap5_demo.c`, with the target's C compiler
//! (`arm-none-eabi-gcc`, Debian package `gcc-arm-none-eabi`), warnings as errors.

use std::{env, error::Error, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    fs::write(out.join("memory.x"), include_bytes!("memory.x"))?;
    println!("cargo:rustc-link-search={}", out.display());

    cc::Build::new()
        .file("src/heap5_demo.c")
        .include("../../heap5/include")
        .flag("-std=c11")
        .flag("-Wextra")
        .warnings(true)
        .warnings_into_errors(true)
        .try_compile("heap5_demo")?;

    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=src/heap5_demo.c");
    println!("cargo:rerun-if-changed=../../heap5/include/heap5.h");
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
