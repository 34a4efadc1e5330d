//! What must not compile: using a buffer after sending it, duplicating one, writing
//! through a shared buffer, and reaching a segment's heap without `unsafe`. Each case is
//! one file in `tests/compile_fail/` with the compiler's expected answer beside it
//! (`.stderr`; regenerate with `TRYBUILD=overwrite cargo test -p shm-host --test
//! compile_fail` after a toolchain update, then review the diff).
//!
//! Only on Linux, and not under miri (it cannot run the compiler): the cases check the
//! compiler's answers, which do not depend on the target, so the Windows (Wine) and QNX
//! builds of the tests leave them out.
#![cfg(all(target_os = "linux", not(miri)))]

#[test]
fn compile_fail() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
