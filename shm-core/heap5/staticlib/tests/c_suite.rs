//! The C side of the heap_5 API: builds `libshm_heap5.a` for the host (a nested
//! `cargo build` into its own target folder, `target/heap5-c`), compiles the C programs in
//! `tests/c/` against it with `gcc -Wall -Wextra -Werror` and runs them.
//!
//! - `heap5_test.c`, the test suite, links the library built with the `malloc-failed-hook`
//!   feature (it counts the hook's calls);
//! - `readme_example.c`, the README's example, links the default build, which shows that
//!   without the feature the library does not need the hook.
//!
//! Needs `gcc` on the PATH.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::path::{Path, PathBuf};
use std::process::Command;

/// The libraries `std` needs when linked into a C program (from `rustc --print
/// native-static-libs`, less `-lc`).
const NATIVE_LIBS: [&str; 6] = ["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// This test's own target folder: beside the outer build's, which cargo keeps locked.
fn target_dir() -> PathBuf {
    // The test binary is <target>/debug/deps/c_suite-<hash>.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    target.join("heap5-c")
}

/// Builds the static library with `features` and copies it to `<target>/<name>.a`.
fn build_library(features: &str, name: &str) -> PathBuf {
    let target = target_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = crate_dir().join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target);
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "cargo build of libshm_heap5.a failed");
    let copy = target.join(format!("{name}.a"));
    std::fs::copy(target.join("debug/libshm_heap5.a"), &copy).unwrap();
    copy
}

/// Compiles `source` against `library` and returns the program's path.
fn compile(source: &str, library: &Path) -> PathBuf {
    let program = target_dir().join(source.trim_end_matches(".c"));
    let out = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir().join("../include"))
        .arg(crate_dir().join("tests/c").join(source))
        .arg(library)
        .args(NATIVE_LIBS)
        .arg("-o")
        .arg(&program)
        .output()
        .expect("gcc runs (is it installed?)");
    assert!(
        out.status.success(),
        "gcc {source} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    program
}

/// Runs `program` and returns its standard output; fails the test on a non-zero exit.
fn run(program: &Path) -> String {
    let out = Command::new(program).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}{}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// One test, so that the two builds never run at once in the same target folder.
#[test]
fn c_programs_pass_against_the_static_library() {
    let with_hook = build_library("malloc-failed-hook", "libshm_heap5-hook");
    let suite = run(&compile("heap5_test.c", &with_hook));
    assert!(suite.starts_with("heap5 C tests passed: "), "{suite}");

    let plain = build_library("", "libshm_heap5-plain");
    let example = run(&compile("readme_example.c", &plain));
    assert!(
        example.starts_with("hello from heap_5: ") && example.ends_with(" 1 allocation\n"),
        "{example}"
    );
}

/// The README's C example is `tests/c/readme_example.c`, which the test above compiles
/// and runs.
#[test]
fn readme_c_example_is_the_compiled_file() {
    let readme = include_str!("../../../../README.md");
    let marker = "## FreeRTOS heap_5 API";
    let from = readme.find(marker).expect("the README's heap_5 section");
    let rest = &readme[from..];
    let open = rest.find("```c\n").expect("a C block in it") + "```c\n".len();
    let body = &rest[open..];
    let close = body.find("```\n").expect("its end");
    assert_eq!(&body[..close], include_str!("c/readme_example.c"));
}
