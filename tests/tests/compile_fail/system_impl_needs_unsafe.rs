// The safe API trusts a system's mapping (its bytes are dereferenced as a heap) and its
// liveness answers (a process judged dead loses its blocks to others): a system made in
// safe code must not be able to lie about either. This one maps nothing at all and calls
// every process dead; with a safe `impl System`, `Server::create_on(Bogus, ...)` would
// write a heap at address 0x1000.
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use shm_core::{Doorbell, ProcessId, Processes, Region, WaitNotify, WaitOutcome};
use shm_host::{CreateOptions, Mapping, NativeSystem, SegmentName, System, SystemError};

struct Nowhere;

impl Mapping for Nowhere {
    fn as_ptr(&self) -> *mut u8 {
        0x1000 as *mut u8
    }
    fn len(&self) -> usize {
        1 << 20
    }
}

struct Everyone;

impl Processes for Everyone {
    fn current_process(&self) -> ProcessId {
        ProcessId { pid: 1, tag: 1 }
    }
    fn is_alive(&self, _: ProcessId) -> bool {
        false
    }
}

#[derive(Clone)]
struct Bogus;

impl WaitNotify for Bogus {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        NativeSystem.wait(word, expected, timeout)
    }
    fn notify_all(&self, word: &AtomicU32) {
        NativeSystem.notify_all(word)
    }
}

impl System for Bogus {
    type Mapping = Nowhere;
    type Presence = Everyone;

    fn enter(&self, _m: &Nowhere) -> Result<Everyone, SystemError> {
        Ok(Everyone)
    }
    fn create(&self, _: &SegmentName, _: usize, _: CreateOptions) -> Result<Nowhere, SystemError> {
        Ok(Nowhere)
    }
    fn open(&self, _: &SegmentName) -> Result<Nowhere, SystemError> {
        Ok(Nowhere)
    }
    fn unlink(&self, _: &SegmentName) -> Result<(), SystemError> {
        Ok(())
    }
    fn list(&self, _: &mut dyn FnMut(SegmentName)) -> Result<(), SystemError> {
        Ok(())
    }
    fn bell_init(&self, _: &Nowhere, _: &Region<'_>, _: &Doorbell) -> Result<(), SystemError> {
        Ok(())
    }
    fn bell_ring(&self, _: &Nowhere, _: &Region<'_>, _: &Doorbell) -> Result<(), SystemError> {
        Ok(())
    }
    fn bell_wait(
        &self,
        _: &Nowhere,
        _: &Region<'_>,
        _: &Doorbell,
        _: Option<Duration>,
    ) -> Result<WaitOutcome, SystemError> {
        Ok(WaitOutcome::Woken)
    }
    fn bell_destroy(&self, _: &Nowhere, _: &Region<'_>, _: &Doorbell) {}
}

fn main() {
    let _ = shm_host::Server::create_on(Bogus, "nowhere", shm_host::ServerOptions::default());
}
