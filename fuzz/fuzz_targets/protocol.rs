//! The client/server protocol driven by decoded operations (participants, server start,
//! connect/accept, sends and receives, control entries, heartbeats, destroying
//! participants, kills and reclaims, injected crashes), on a well-formed region with
//! `check()` after every step, or on an arbitrary region image where every call must
//! return (`shm_core::testkit::protocol_ops`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shm_core::testkit::protocol_ops::run(data);
});
