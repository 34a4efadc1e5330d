//! What must not compile: the no-forgery rules of `Member`, the borrows a `Region` holds,
//! the `unsafe` doors, and the thread-safety a heap must not claim. Each case is one file
//! in `tests/compile_fail/` with the compiler's expected answer beside it (`.stderr`;
//! regenerate with `TRYBUILD=overwrite cargo test -p shm-core --test compile_fail` after a
//! toolchain update, then review the diff).
//!
//! Not under miri (it cannot run the compiler) and not on Windows: the cases check the
//! compiler's answers, which do not depend on the target, and the Wine runs would only
//! run the compiler again, slowly.
#![cfg(not(any(miri, windows)))]

#[test]
fn compile_fail() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
