//! What must not compile for a user of the crates as published: the test kit's
//! `Member::forged_for_tests` without the `testkit` feature, `Segment::format` (which
//! overwrites a heap that may be in use) outside `unsafe`, and a `System` implemented
//! without `unsafe impl` (the safe API trusts its mappings and liveness answers). The
//! first case lives here, not in
//! shm-core's compile-fail tests, because this crate is the one that depends on shm-core
//! without `testkit` (shm-core's and shm-host's own tests turn it on, and trybuild builds
//! its cases with the features of the crate under test). The expected answer is the
//! `.stderr` beside the case (`TRYBUILD=overwrite cargo test -p shm-tests --test
//! compile_fail` after a toolchain update, then review the diff).
//!
//! Only on Linux: the case checks the compiler's answer, which does not depend on the
//! target, so the Windows (Wine) build of the tests leaves it out.
#![cfg(target_os = "linux")]

#[test]
fn compile_fail() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
