//! Operation sequences against the reference model, `check()` after every step (the same
//! interpreter as the proptest suite: `shm_core::testkit::model`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shm_core::testkit::model::run(data);
});
