//! `attach` on arbitrary bytes, then operations: every call must return (no panic, no
//! hang, no memory error) whatever the region holds (`shm_core::testkit::hostile`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shm_core::testkit::hostile::run(data);
});
