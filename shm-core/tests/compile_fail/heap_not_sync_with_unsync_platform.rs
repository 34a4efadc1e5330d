// A heap is `Sync` only when its platform is: a platform with unsynchronised state (a
// `Cell`) must not be reached from two threads through a shared heap.
use std::cell::Cell;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use shm_core::{Heap, Platform, ProcessId, Processes, WaitNotify, WaitOutcome};

struct CountingPlatform {
    calls: Cell<u32>,
}

impl Processes for CountingPlatform {
    fn current_process(&self) -> ProcessId {
        self.calls.set(self.calls.get() + 1);
        ProcessId::from_pid(1)
    }
    fn is_alive(&self, _: ProcessId) -> bool {
        true
    }
}

impl WaitNotify for CountingPlatform {
    fn wait(&self, _: &AtomicU32, _: u32, _: Option<Duration>) -> WaitOutcome {
        WaitOutcome::Woken
    }
    fn notify_all(&self, _: &AtomicU32) {}
}

impl Platform for CountingPlatform {}

fn is_sync<T: Sync>() {}

fn main() {
    is_sync::<Heap<'static, CountingPlatform>>();
}
