//! What must not compile: using a buffer after sending it, writing through a shared
//! buffer, and reaching a segment's heap without `unsafe`. Each case is one file in
//! `tests/compile_fail/` with the compiler's expected answer beside it (`.stderr`;
//! regenerate with `TRYBUILD=overwrite cargo test -p shm-host --test compile_fail` after
//! a toolchain update, then review the diff).
//!
//! Not on Windows (the Wine runs) or under miri: the cases check the compiler's answers,
//! which do not depend on the target, and under Wine they would only run the compiler
//! again, slowly (miri cannot run it at all).
#![cfg(not(any(miri, windows)))]

#[test]
fn compile_fail() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
