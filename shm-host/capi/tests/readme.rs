//! The README's "From C" section against what it describes: its C example is
//! `examples/hello.c` (which `c_programs.rs` compiles and runs against `shmipc serve`),
//! the cbindgen version it names is the one CI pins, and its link line is the one the
//! tests use.
#![allow(clippy::unwrap_used)] // test code

const README: &str = include_str!("../../../README.md");

/// The README's "From C" section.
fn section() -> &'static str {
    let from = README.find("\n## From C\n").expect("a From C section");
    let rest = &README[from + 1..];
    let end = rest[1..].find("\n## ").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

/// The text of the first ```` ```LANG ```` block in `text`.
fn block<'a>(text: &'a str, lang: &str) -> &'a str {
    let open = format!("```{lang}\n");
    let start = text.find(&open).expect("a code block") + open.len();
    let len = text[start..].find("```\n").expect("its end");
    &text[start..start + len]
}

#[test]
fn readme_c_example_is_hello_c() {
    assert_eq!(block(section(), "c"), include_str!("../examples/hello.c"));
}

#[test]
fn readme_names_the_cbindgen_version_ci_pins() {
    let ci = include_str!("../../../.ci/run");
    let pinned = ci
        .lines()
        .find_map(|l| l.strip_prefix("CBINDGEN_VERSION="))
        .expect("CBINDGEN_VERSION in .ci/run");
    assert!(
        section().contains(&format!("cbindgen {pinned} ")),
        "the README should name cbindgen {pinned}"
    );
    // The header says which generator wrote it only through this file's comment; the
    // configuration is the one the README's command uses.
    assert!(ci.contains("--config shm-host/capi/cbindgen.toml --crate shm-capi"));
}

#[test]
fn readme_link_line_is_the_tests_link_line() {
    let sh = block(section(), "sh");
    let libs = "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc";
    assert!(sh.contains(libs), "{sh}");
    let tests = include_str!("c_programs.rs");
    assert!(tests.contains(&format!("const NATIVE_LIBS: &str = \"{libs}\";")));
}
