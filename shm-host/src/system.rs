//! [`System`]: what the host layer needs from an operating system beyond the core's
//! [`Platform`]: named segments and doorbells. The trait is defined
//! in shm-core ([`shm_core::system`]) and re-exported here; the Linux and Windows
//! implementations live in `sys/`, QNX's in the `shm-qnx` crate. [`SegmentPlatform`]
//! joins a system with one attachment's presence into the core's `Platform`.

use std::time::Duration;

use std::sync::atomic::AtomicU32;

use shm_core::Doorbell;
use shm_core::{Platform, ProcessId, Processes, Region, WaitNotify, WaitOutcome};

pub use shm_core::system::{CreateOptions, Mapping, System};

/// The core's platform for one attachment of a segment: the system's waiting and
/// notification, and the attachment's own identity and liveness probes.
pub struct SegmentPlatform<S: System> {
    system: S,
    presence: S::Presence,
    /// The mapping, shared with the segment, for ringing doorbells from inside the core.
    mapping: std::sync::Arc<S::Mapping>,
}

impl<S: System> std::fmt::Debug for SegmentPlatform<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentPlatform")
            .field("me", &self.presence.current_process())
            .finish()
    }
}

impl<S: System> SegmentPlatform<S> {
    /// Pairs a system with an attachment's presence in `mapping`.
    pub fn new(system: S, presence: S::Presence, mapping: std::sync::Arc<S::Mapping>) -> Self {
        SegmentPlatform {
            system,
            presence,
            mapping,
        }
    }

    /// The system.
    pub fn system(&self) -> &S {
        &self.system
    }
}

impl<S: System> Processes for SegmentPlatform<S> {
    fn current_process(&self) -> ProcessId {
        self.presence.current_process()
    }
    fn is_alive(&self, id: ProcessId) -> bool {
        self.presence.is_alive(id)
    }
    fn fork_generation(&self) -> u32 {
        self.system.fork_generation()
    }
}

impl<S: System> WaitNotify for SegmentPlatform<S> {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        self.system.wait(word, expected, timeout)
    }
    fn notify_all(&self, word: &AtomicU32) {
        self.system.notify_all(word)
    }
    fn notify_one(&self, word: &AtomicU32) {
        self.system.notify_one(word)
    }
    fn relax(&self, round: u32) {
        self.system.relax(round)
    }
    fn now(&self) -> Option<Duration> {
        self.system.now()
    }
}

impl<S: System> Platform for SegmentPlatform<S> {
    fn ring(&self, region: &Region<'_>, bell: &Doorbell) {
        // A failed post only costs the receiver a wait until its timeout.
        let _ = self.system.bell_ring(&self.mapping, region, bell);
    }
}
