//! [`System`]: what the host layer needs from an operating system beyond the core's
//! [`Platform`](shm_core::Platform): named segments and doorbells. Linux and Windows
//! implementations live in `sys/`; QNX's in the `shm-qnx` crate.

use std::time::Duration;

use std::sync::atomic::AtomicU32;

use shm_core::Doorbell;
use shm_core::{Platform, ProcessId, Processes, Region, WaitNotify, WaitOutcome};

use crate::error::Result;
use crate::name::SegmentName;

/// A mapped segment: memory shared with other processes, unmapped on drop.
pub trait Mapping: Send + Sync + 'static {
    /// Start of the mapping.
    fn as_ptr(&self) -> *mut u8;
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Whether the mapping is empty (never, for a usable segment).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Options for creating a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Permission bits on POSIX systems (default 0600: only the creating user).
    pub mode: u32,
    /// Touch every page at creation so that no page fault happens later on the hot path.
    pub prefault: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            mode: 0o600,
            prefault: false,
        }
    }
}

/// An operating system, as the host layer uses it.
///
/// Identity and liveness are per attachment ([`System::Presence`]), not per system: on
/// Linux the evidence that a process lives is a lock the kernel holds for it on the
/// segment itself, which works across PID namespaces and users and cannot outlive it.
pub trait System: WaitNotify + Clone + Send + Sync + 'static {
    /// Its mapping type.
    type Mapping: Mapping;

    /// How one attachment of a segment shows that it lives, and tells whether others do.
    /// [`Processes::is_alive`] must answer `false` only on evidence that the process is
    /// gone; "cannot tell" (no permission, another PID namespace, a failed query) is
    /// alive.
    type Presence: Processes + Send + Sync + 'static;

    /// Enters segment `m`: takes this attachment's presence mark there (for as long as the
    /// returned value lives) and returns the identity it acts under.
    fn enter(&self, m: &Self::Mapping) -> Result<Self::Presence>;

    /// Refuses to take over an existing segment that belongs to another user or whose
    /// permissions are wider than `opts` asks for (where the system can tell).
    fn check_takeover(
        &self,
        name: &SegmentName,
        m: &Self::Mapping,
        opts: &CreateOptions,
    ) -> Result<()> {
        let _ = (name, m, opts);
        Ok(())
    }

    /// Kills the process `id` (a participant of segment `m`) if the system can confirm
    /// that it is that participant; returns whether it did. The default cannot.
    fn terminate(&self, m: &Self::Mapping, id: ProcessId) -> Result<bool> {
        let _ = (m, id);
        Ok(false)
    }

    /// The size the segment's object has now (it can shrink under a mapping on systems
    /// where a process with write access may truncate it).
    fn object_size(&self, m: &Self::Mapping) -> Result<u64> {
        Ok(m.len() as u64)
    }

    /// A number that changes in a forked child (0 where processes do not fork). A handle
    /// made before a fork refuses to act in the child: the child is another process.
    fn fork_generation(&self) -> u32 {
        0
    }

    /// Creates a new segment of `size` bytes; fails with
    /// [`HostError::Exists`](crate::HostError::Exists) if the name is taken.
    fn create(&self, name: &SegmentName, size: usize, opts: CreateOptions)
        -> Result<Self::Mapping>;

    /// Maps an existing segment; fails with [`HostError::NotFound`](crate::HostError::NotFound).
    fn open(&self, name: &SegmentName) -> Result<Self::Mapping>;

    /// Removes a segment's name (mappings stay valid until unmapped).
    fn unlink(&self, name: &SegmentName) -> Result<()>;

    /// Names of the segments this library created that still exist (for `shmipc clean`).
    /// Systems whose segments cannot outlive their last user return an empty list.
    fn list(&self) -> Result<Vec<SegmentName>>;

    /// Prepares the wait object in `bell` (called by the bell's owner before anyone rings).
    fn bell_init(&self, m: &Self::Mapping, region: &Region<'_>, bell: &Doorbell) -> Result<()>;

    /// Wakes the owner of `bell`.
    fn bell_ring(&self, m: &Self::Mapping, region: &Region<'_>, bell: &Doorbell) -> Result<()>;

    /// Sleeps until `bell` rings or `timeout` passes (may wake spuriously).
    fn bell_wait(
        &self,
        m: &Self::Mapping,
        region: &Region<'_>,
        bell: &Doorbell,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome>;

    /// Releases the wait object in `bell` (its owner, when leaving).
    fn bell_destroy(&self, m: &Self::Mapping, region: &Region<'_>, bell: &Doorbell);
}

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
}

impl<S: System> WaitNotify for SegmentPlatform<S> {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        self.system.wait(word, expected, timeout)
    }
    fn notify_all(&self, word: &AtomicU32) {
        self.system.notify_all(word)
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
