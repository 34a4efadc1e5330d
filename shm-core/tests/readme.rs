//! The README shows shm-core's crate doc example under "Using it" and says so; this keeps
//! the two equal. (shm-host runs the README's examples as doctests, and this crate runs
//! its doc example, so both copies compile and run; equality makes the README's copy the
//! one shm-core's own `cargo test --doc` checks.)

/// The text of the first ```` ```rust ```` block after `marker` in `markdown`.
fn rust_block_after<'a>(markdown: &'a str, marker: &str) -> Option<&'a str> {
    let from = markdown.find(marker)?;
    let rest = markdown.get(from..)?;
    let open = rest.find("```rust\n")?;
    let body = rest.get(open + "```rust\n".len()..)?;
    let close = body.find("```\n")?;
    body.get(..close)
}

/// The crate doc's first example, with the `//! ` prefixes removed.
fn crate_doc_example(lib_rs: &str) -> String {
    let doc: Vec<&str> = lib_rs
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .collect();
    let open = doc.iter().position(|l| *l == "```").expect("a code block");
    let len = doc[open + 1..]
        .iter()
        .position(|l| *l == "```")
        .expect("its end");
    doc[open + 1..open + 1 + len]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn readme_core_example_is_the_crate_doc_example() {
    let readme = include_str!("../../README.md");
    let lib_rs = include_str!("../src/lib.rs");
    let in_readme = rust_block_after(readme, "On firmware or any byte region").expect("block");
    assert_eq!(in_readme, crate_doc_example(lib_rs));
}
