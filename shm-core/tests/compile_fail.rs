//! What must not compile: the no-forgery rules of `Member`, the borrows a `Region` holds,
//! the `unsafe` doors, and the thread-safety a heap must not claim. Each case is one file
//! in `tests/compile_fail/` with the compiler's expected answer beside it (`.stderr`;
//! regenerate with `TRYBUILD=overwrite cargo test -p shm-core --test compile_fail` after a
//! toolchain update, then review the diff).
//!
//! Only on Linux, and not under miri (it cannot run the compiler): the cases check the
//! compiler's answers, which do not depend on the target, so the Windows (Wine) and QNX
//! builds of the tests leave them out.
#![cfg(all(target_os = "linux", not(miri)))]

#[test]
fn compile_fail() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
