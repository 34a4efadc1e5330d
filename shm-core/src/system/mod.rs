//! [`System`]: what a host needs from an operating system beyond the core's
//! [`Platform`](crate::Platform): named segments, doorbells, and liveness per attachment.
//!
//! Only the definitions live here (no OS, no allocator): the implementations are in
//! `shm-host` (Linux, Windows) and `shm-qnx` (QNX), and `shm-host`'s safe API is generic
//! over this trait. Keeping the trait below both lets `shm-qnx` implement it without
//! depending on `shm-host`, and `shm-host` pick `shm-qnx` as its native system on QNX.
//!
//! - [`name`]: [`SegmentName`], a validated name in a bounded string.
//! - [`error`]: [`SystemError`], what an operation fails with, and [`Refusal`].
//! - [`process_tag`]: the pid-reuse tag made from a start time.

pub mod error;
pub mod name;
pub mod process_tag;

use core::time::Duration;

use crate::format::Doorbell;
use crate::ids::ProcessId;
use crate::os::{Processes, WaitNotify, WaitOutcome};
use crate::region::Region;

pub use error::{Refusal, SystemError, SystemResult};
pub use name::{NameError, SegmentName, MAX_NAME_LEN, PREFIX};
pub use process_tag::start_time_tag;

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

/// An operating system, as a host uses it.
///
/// Identity and liveness are per attachment ([`System::Presence`]), not per system: on
/// Linux the evidence that a process lives is a lock the kernel holds for it on the
/// segment itself, which works across PID namespaces and users and cannot outlive it.
///
/// Every implementation passes the same contract tests (`shm-host/tests/system_contract.rs`).
///
/// # Safety
///
/// `shm-host`'s safe API builds heaps on this system's mappings and hands out the blocks
/// of processes it judges dead, so an implementation promises:
/// - every value of [`System::Mapping`] (however it was made) is memory valid for reads
///   and writes from [`Mapping::as_ptr`] for [`Mapping::len`] bytes for as long as the
///   value lives, always the same address and length, and other code (in this or other
///   processes) reaches it only through this crate's protocol (as
///   [`Region::from_raw`](crate::Region::from_raw) requires);
/// - [`System::Presence`] answers [`Processes::is_alive`] `false` only for a process that
///   can no longer act in the segment, and [`Processes::current_process`] gives each live
///   process an identity no other live process has (attachments of one process may share
///   one, as on Windows and QNX; Linux gives each attachment its own);
/// - [`fork_generation`](System::fork_generation) changes in a forked child, where
///   processes fork.
pub unsafe trait System: WaitNotify + Clone + Send + Sync + 'static {
    /// Its mapping type.
    type Mapping: Mapping;

    /// How one attachment of a segment shows that it lives, and tells whether others do.
    /// [`Processes::is_alive`] must answer `false` only on evidence that the process is
    /// gone; "cannot tell" (no permission, another PID namespace, a failed query) is
    /// alive.
    type Presence: Processes + Send + Sync + 'static;

    /// Enters segment `m`: takes this attachment's presence mark there (for as long as the
    /// returned value lives) and returns the identity it acts under.
    fn enter(&self, m: &Self::Mapping) -> SystemResult<Self::Presence>;

    /// Refuses ([`SystemError::TakeoverRefused`]) to take over an existing segment that
    /// belongs to another user or whose permissions are wider than `opts` asks for (where
    /// the system can tell).
    fn check_takeover(
        &self,
        name: &SegmentName,
        m: &Self::Mapping,
        opts: &CreateOptions,
    ) -> SystemResult<()> {
        let _ = (name, m, opts);
        Ok(())
    }

    /// Kills the process `id` (a participant of segment `m`) if the system can confirm
    /// that it is that participant; returns whether it did. The default cannot.
    fn terminate(&self, m: &Self::Mapping, id: ProcessId) -> SystemResult<bool> {
        let _ = (m, id);
        Ok(false)
    }

    /// The size the segment's object has now (it can shrink under a mapping on systems
    /// where a process with write access may truncate it).
    fn object_size(&self, m: &Self::Mapping) -> SystemResult<u64> {
        Ok(m.len() as u64)
    }

    /// A number that changes in a forked child (0 where processes do not fork). A handle
    /// made before a fork refuses to act in the child: the child is another process.
    fn fork_generation(&self) -> u32 {
        0
    }

    /// Creates a new segment of `size` bytes; fails with [`SystemError::Exists`] if the
    /// name is taken.
    fn create(
        &self,
        name: &SegmentName,
        size: usize,
        opts: CreateOptions,
    ) -> SystemResult<Self::Mapping>;

    /// Maps an existing segment; fails with [`SystemError::NotFound`].
    fn open(&self, name: &SegmentName) -> SystemResult<Self::Mapping>;

    /// Removes a segment's name (mappings stay valid until unmapped).
    fn unlink(&self, name: &SegmentName) -> SystemResult<()>;

    /// Removes segment `m`, known by `name`. The default removes the name
    /// ([`unlink`](System::unlink)), whatever segment it names by now; a system that can
    /// tell segments apart removes exactly `m` (System V: `IPC_RMID` on the mapped id; a
    /// file: only if the path still leads to the mapped file), so that a segment made
    /// under the name since is left alone.
    fn remove(&self, name: &SegmentName, m: &Self::Mapping) -> SystemResult<()> {
        let _ = m;
        self.unlink(name)
    }

    /// What a server does with its segment `m` of name `name` at a clean shutdown: by
    /// default [`remove`](System::remove) it; a system whose segments are meant to outlive
    /// their processes (a file) keeps it.
    fn withdraw(&self, name: &SegmentName, m: &Self::Mapping) -> SystemResult<()> {
        self.remove(name, m)
    }

    /// Writes the segment's memory through to its backing store, waiting until it is
    /// there (`msync(MS_SYNC)` for a file). The default does nothing: a segment held in
    /// memory only has no store to write to.
    fn flush(&self, m: &Self::Mapping) -> SystemResult<()> {
        let _ = m;
        Ok(())
    }

    /// Calls `each` with the name of every segment this library created that still
    /// exists (for `shmipc clean`), in no particular order. Systems whose segments cannot
    /// outlive their last user call it for none.
    fn list(&self, each: &mut dyn FnMut(SegmentName)) -> SystemResult<()>;

    /// Prepares the wait object in `bell` (called by the bell's owner before anyone rings).
    fn bell_init(
        &self,
        m: &Self::Mapping,
        region: &Region<'_>,
        bell: &Doorbell,
    ) -> SystemResult<()>;

    /// Wakes the owner of `bell`.
    fn bell_ring(
        &self,
        m: &Self::Mapping,
        region: &Region<'_>,
        bell: &Doorbell,
    ) -> SystemResult<()>;

    /// Sleeps until `bell` rings or `timeout` passes (may wake spuriously).
    fn bell_wait(
        &self,
        m: &Self::Mapping,
        region: &Region<'_>,
        bell: &Doorbell,
        timeout: Option<Duration>,
    ) -> SystemResult<WaitOutcome>;

    /// Releases the wait object in `bell` (its owner, when leaving).
    fn bell_destroy(&self, m: &Self::Mapping, region: &Region<'_>, bell: &Doorbell);
}
