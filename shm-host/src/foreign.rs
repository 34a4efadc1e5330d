//! Servers and clients over memory this library did not map: a driver's mapping, a device
//! window, a `memfd` received over a Unix socket.
//!
//! [`ForeignSystem`] is a [`System`] whose only segment is one piece of memory the caller
//! hands in ([`ForeignMapping`], made with an `unsafe` constructor whose contract the
//! caller keeps), so [`Server::create_on`](crate::Server::create_on) and
//! [`Client::connect_on`](crate::Client::connect_on) work over it unchanged: "create"
//! formats the memory if it holds no heap yet (and says it exists otherwise, so a new
//! server takes over from a stopped or dead one by the usual rules), "open" hands out the
//! same memory, and there are no names to remove or list. The segment name given to
//! `create_on`/`connect_on` is only a label in errors and displays.
//!
//! What the memory cannot say for itself comes from two providers:
//! - [`Doorbells`]: how a receiver sleeps and a sender wakes it, and how a process waits
//!   for a word to change. [`PolledDoorbells`] works on any memory that takes atomic
//!   operations (it polls, sleeping up to 1 ms); on Linux `SemDoorbells` puts a
//!   process-shared `sem_t` in the doorbell and waits on words with futexes, which works
//!   for every shared mapping of ordinary memory (a memfd, a file, `MAP_SHARED |
//!   MAP_ANONYMOUS` inherited over `fork`).
//! - [`Liveness`]: how an attachment shows that it lives and tells whether others do.
//!   [`AssumeAlive`] is the safe default when only memory is given: it has no evidence,
//!   so it never declares anyone dead (a killed participant's memory, and a lock it died
//!   holding, stay taken). On Linux `FdLiveness` takes a descriptor of the object behind
//!   the memory (a memfd) and gives the same kernel evidence as named segments: an
//!   open-file-description lock per attachment, which the kernel drops when its process
//!   exits. On Windows `ProcessLiveness` gives the evidence of named Windows segments (pid
//!   and creation time), which needs no object.
//!
//! The segment's size is the memory's: `ServerOptions::size` and `CreateOptions` (mode,
//! pre-faulting) are not used, since the memory already exists.

use std::any::Any;
use std::hash::{BuildHasher, Hasher};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shm_core::format::MAGIC;
use shm_core::system::{CreateOptions, SegmentName, SystemError, SystemResult};
use shm_core::{AttachError, Doorbell, ProcessId, Processes, Region, WaitNotify, WaitOutcome};
use shm_polling as polling;

use crate::system::{Mapping, System};

// Empty on systems that offer no providers beyond the portable ones (QNX).
#[allow(unused_imports)]
pub use crate::sys::foreign_providers::*;

/// Memory someone else mapped, shared by every [`ForeignSystem`] and segment made from it
/// (cloning is cheap: the clones share one keeper).
#[derive(Clone)]
pub struct ForeignMapping {
    memory: Arc<Memory>,
}

struct Memory {
    ptr: NonNull<u8>,
    len: usize,
    /// Whatever keeps the memory mapped (an unmapping guard, a driver handle); dropped
    /// with the last clone.
    _keeper: Box<dyn Any + Send + Sync>,
}

// SAFETY: the pointer is only an address; by `ForeignMapping::new`'s contract the memory
// is valid from any thread until the keeper is dropped, and all access to it goes through
// shm-core's atomics or the ownership protocol.
unsafe impl Send for Memory {}
// SAFETY: as above.
unsafe impl Sync for Memory {}

impl std::fmt::Debug for ForeignMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForeignMapping")
            .field("ptr", &self.memory.ptr)
            .field("len", &self.memory.len)
            .finish()
    }
}

impl ForeignMapping {
    /// Memory at `ptr`, `len` bytes long, kept valid by `keeper` (dropped when the last
    /// clone of this mapping, and so the last server, client, segment and buffer over it,
    /// is gone; pass `()` for memory that outlives the process).
    ///
    /// Fails with [`SystemError::BadSize`] for an empty or over-4 GiB length (offsets are
    /// 32-bit) and with an attach error for a null or not 16-aligned `ptr`. A server
    /// refuses memory under 4096 bytes.
    ///
    /// # Safety
    ///
    /// Until `keeper` is dropped:
    /// - **Validity:** `ptr..ptr + len` is mapped, readable and writable, from every
    ///   thread of this process; nothing unmaps or remaps it (other than `keeper`'s drop).
    /// - **Same memory everywhere:** every process (and every `ForeignMapping` in this
    ///   one) that attaches to it sees the same bytes: a shared mapping of one object, not
    ///   a private or copy-on-write one, at any address. The memory is coherent between
    ///   them and supports the CPU's atomic operations, read-modify-write included
    ///   (ordinary cacheable RAM; a device window qualifies only if it is such memory).
    /// - **Who writes:** only this library, in the processes that attach to it, reads or
    ///   writes the bytes; other code touches them only through buffers it owns (as the
    ///   safe API allows). Corrupted bytes give errors, but a foreign writer can still
    ///   lose or alter messages, and writing a live buffer's bytes is a data race.
    /// - **Size:** the object behind the memory is at least `len` bytes long and is not
    ///   truncated while mapped (a lost page raises `SIGBUS`; a [`Liveness`] that knows
    ///   the object, such as Linux's `FdLiveness`, lets the server notice truncation at
    ///   its next heartbeat).
    /// - **Formatting:** memory that holds no heap yet is formatted by the first server
    ///   created over it; no other process may create a server over it or attach to it
    ///   until that `create_on` has returned (hand the memory to clients after it).
    pub unsafe fn new(
        ptr: *mut u8,
        len: usize,
        keeper: impl Any + Send + Sync,
    ) -> SystemResult<Self> {
        if len == 0 || len as u64 > u64::from(u32::MAX) {
            return Err(SystemError::BadSize { size: len as u64 });
        }
        let ptr = NonNull::new(ptr).ok_or(SystemError::Core(AttachError::BadConfig.into()))?;
        if ptr.as_ptr() as usize % 16 != 0 {
            return Err(SystemError::Core(AttachError::Misaligned.into()));
        }
        Ok(ForeignMapping {
            memory: Arc::new(Memory {
                ptr,
                len,
                _keeper: Box::new(keeper),
            }),
        })
    }

    /// Whether the memory holds a heap (its header's magic words), as far as a look
    /// without the lock can tell.
    pub fn holds_heap(&self) -> bool {
        let base = self.memory.ptr.as_ptr().cast::<u32>();
        MAGIC.iter().enumerate().all(|(i, &word)| {
            // SAFETY: the memory is at least 1 byte long and 16-aligned (checked in `new`)
            // but may be shorter than the header: read only whole words inside it. Words
            // of a mapping shared with other processes are read atomically.
            (i + 1) * 4 <= self.memory.len
                && unsafe { AtomicU32::from_ptr(base.add(i)) }.load(Ordering::Acquire) == word
        })
    }
}

impl Mapping for ForeignMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.memory.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.memory.len
    }
}

/// How receivers sleep and senders wake them in foreign memory, and how a process waits
/// for a word to change ([`WaitNotify`], used by the region lock's backoff and by blocking
/// allocation). The methods are [`System`]'s doorbell methods without the mapping.
///
/// A wrong implementation costs wake-ups (a receiver sleeps until its timeout), never
/// memory safety: every participant of one memory must use the same kind.
pub trait Doorbells: WaitNotify + Clone + Send + Sync + 'static {
    /// Prepares the wait object in `bell` (its owner, before anyone rings).
    fn bell_init(&self, region: &Region<'_>, bell: &Doorbell) -> SystemResult<()>;
    /// Wakes the owner of `bell` (called after [`Doorbell::should_ring`] said so).
    fn bell_ring(&self, region: &Region<'_>, bell: &Doorbell) -> SystemResult<()>;
    /// Sleeps until `bell` rings or `timeout` passes (may wake spuriously); called after
    /// [`Doorbell::prepare_wait`].
    fn bell_wait(
        &self,
        region: &Region<'_>,
        bell: &Doorbell,
        timeout: Option<Duration>,
    ) -> SystemResult<WaitOutcome>;
    /// Releases the wait object in `bell` (its owner, when leaving).
    fn bell_destroy(&self, region: &Region<'_>, bell: &Doorbell);
}

/// Doorbells that need nothing from the operating system: a sleeper polls its doorbell's
/// `waiting` word, which a ringer clears, with a backoff that spins, yields, then sleeps
/// up to 1 ms ([`polling::MAX_SLEEP`]); word waits poll the same way. Works on any memory
/// the [`ForeignMapping`] contract admits, at the cost of up to 1 ms of wake-up latency
/// for a receiver that went to sleep (busy-poll receivers do not sleep).
#[derive(Clone, Copy, Debug, Default)]
pub struct PolledDoorbells;

impl WaitNotify for PolledDoorbells {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        polling::poll_wait(word, expected, timeout)
    }
    fn notify_all(&self, _word: &AtomicU32) {
        // Pollers see the word change by themselves.
    }
    fn relax(&self, round: u32) {
        polling::relax(round)
    }
    fn now(&self) -> Option<Duration> {
        Some(polling::now())
    }
}

impl Doorbells for PolledDoorbells {
    fn bell_init(&self, _region: &Region<'_>, bell: &Doorbell) -> SystemResult<()> {
        bell.os_ready.store(1, Ordering::Release);
        Ok(())
    }
    fn bell_ring(&self, _region: &Region<'_>, _bell: &Doorbell) -> SystemResult<()> {
        // `should_ring` cleared `waiting` before this call: that is the signal.
        Ok(())
    }
    fn bell_wait(
        &self,
        _region: &Region<'_>,
        bell: &Doorbell,
        timeout: Option<Duration>,
    ) -> SystemResult<WaitOutcome> {
        // `prepare_wait` set `waiting` to 1; a ringer swaps it to 0.
        Ok(polling::poll_wait(&bell.waiting, 1, timeout))
    }
    fn bell_destroy(&self, _region: &Region<'_>, bell: &Doorbell) {
        bell.os_ready.store(0, Ordering::Release);
    }
}

/// How one attachment to foreign memory shows that it lives, and tells whether others do.
///
/// # Safety
///
/// Memory is reclaimed, and locks are broken, on this provider's word: an implementation
/// must make [`Processes::is_alive`] of its presences answer `false` only when the process
/// that entered under that identity is gone (or the identity is one no participant ever
/// has, such as tag 0), for every identity the participants of the same memory entered
/// with. "Cannot tell" is alive. A provider whose evidence needs every participant to use
/// it (as `FdLiveness` does) says so in its own `unsafe` constructor. Two live
/// processes never share an identity (attachments of one process may).
pub unsafe trait Liveness: Clone + Send + Sync + 'static {
    /// One attachment's presence: its identity, held for as long as the value lives.
    type Presence: Processes + Send + Sync + 'static;

    /// Enters `memory`: takes this attachment's identity there.
    fn enter(&self, memory: &ForeignMapping) -> SystemResult<Self::Presence>;

    /// Kills participant `id` if the provider can confirm which process it is; returns
    /// whether it did (`ServerOptions::kill_unresponsive`). The default cannot.
    fn terminate(&self, memory: &ForeignMapping, id: ProcessId) -> SystemResult<bool> {
        let _ = (memory, id);
        Ok(false)
    }

    /// The size the object behind the memory has now, where the provider knows the object
    /// (a server stops using memory found shorter than its mapping). The default knows
    /// only the mapping.
    fn object_size(&self, memory: &ForeignMapping) -> SystemResult<u64> {
        Ok(memory.len() as u64)
    }
}

/// Liveness without evidence: every participant counts as alive for as long as its
/// identity is registered (identities are random non-zero 32-bit tags; 0 counts as dead,
/// since no participant has it).
///
/// Nothing is ever reclaimed on a guess, which is the rule, so with this provider:
/// - a participant that dies without leaving keeps its memory for as long as the memory
///   exists; the server reports it `Unresponsive` after its missed keepalives and stops
///   delivering to it, but never `Died`;
/// - a participant that dies holding the region lock blocks every other one for good;
/// - a server that died cannot be taken over (a server that stopped cleanly can).
///
/// Every participant of one memory must use `AssumeAlive` (another provider may treat its
/// identities as dead).
#[derive(Clone, Copy, Debug, Default)]
pub struct AssumeAlive;

/// An [`AssumeAlive`] attachment's identity.
#[derive(Debug)]
pub struct AssumedPresence {
    me: ProcessId,
}

impl Processes for AssumedPresence {
    fn current_process(&self) -> ProcessId {
        self.me
    }
    fn is_alive(&self, id: ProcessId) -> bool {
        id.tag != 0
    }
}

/// A tag no other attachment is likely to have: std's randomly keyed SipHash over the pid,
/// a process-wide counter and the time; never 0.
fn random_tag() -> u32 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(t);
        let tag = h.finish() as u32;
        if tag != 0 {
            return tag;
        }
    }
}

// SAFETY: `is_alive` answers `false` only for tag 0, which no `AssumeAlive` attachment
// has (`random_tag` never returns it); the contract makes every participant use it.
unsafe impl Liveness for AssumeAlive {
    type Presence = AssumedPresence;

    fn enter(&self, _memory: &ForeignMapping) -> SystemResult<AssumedPresence> {
        Ok(AssumedPresence {
            me: ProcessId {
                pid: std::process::id(),
                tag: random_tag(),
            },
        })
    }
}

/// A [`System`] over one piece of foreign memory, with its doorbell and liveness
/// providers. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct ForeignSystem<B: Doorbells, L: Liveness> {
    memory: ForeignMapping,
    bells: B,
    liveness: L,
}

impl<B: Doorbells, L: Liveness> ForeignSystem<B, L> {
    /// A system whose segment is `memory`, with `bells` and `liveness`. The memory's
    /// contract was promised when it was made ([`ForeignMapping::new`]); the providers'
    /// by their types.
    pub fn new(memory: ForeignMapping, bells: B, liveness: L) -> Self {
        ForeignSystem {
            memory,
            bells,
            liveness,
        }
    }

    /// The memory.
    pub fn memory(&self) -> &ForeignMapping {
        &self.memory
    }
}

impl<B: Doorbells, L: Liveness> WaitNotify for ForeignSystem<B, L> {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        self.bells.wait(word, expected, timeout)
    }
    fn notify_all(&self, word: &AtomicU32) {
        self.bells.notify_all(word)
    }
    fn notify_one(&self, word: &AtomicU32) {
        self.bells.notify_one(word)
    }
    fn relax(&self, round: u32) {
        self.bells.relax(round)
    }
    fn now(&self) -> Option<Duration> {
        self.bells.now()
    }
}

// SAFETY: the memory is a `ForeignMapping`, whose `unsafe` constructor's caller promised
// it valid, fixed and reached only through this crate for as long as the mapping lives;
// liveness is the `Liveness` provider's, an `unsafe` trait with the same promise as
// `System::Presence` (dead only on evidence); the fork generation is the native system's.
unsafe impl<B: Doorbells, L: Liveness> System for ForeignSystem<B, L> {
    type Mapping = ForeignMapping;
    type Presence = L::Presence;

    fn enter(&self, m: &ForeignMapping) -> SystemResult<L::Presence> {
        self.liveness.enter(m)
    }

    fn terminate(&self, m: &ForeignMapping, id: ProcessId) -> SystemResult<bool> {
        self.liveness.terminate(m, id)
    }

    fn object_size(&self, m: &ForeignMapping) -> SystemResult<u64> {
        self.liveness.object_size(m)
    }

    fn fork_generation(&self) -> u32 {
        // A forked child is another process whatever memory it shares.
        System::fork_generation(&crate::NativeSystem)
    }

    /// The memory, when it holds no heap yet (the caller formats it); `Exists` when it
    /// does, so a server takes it over only by the takeover rules. The size and options
    /// are the memory's own.
    fn create(
        &self,
        _name: &SegmentName,
        _size: usize,
        _opts: CreateOptions,
    ) -> SystemResult<ForeignMapping> {
        if self.memory.holds_heap() {
            return Err(SystemError::Exists);
        }
        Ok(self.memory.clone())
    }

    fn open(&self, _name: &SegmentName) -> SystemResult<ForeignMapping> {
        Ok(self.memory.clone())
    }

    /// Foreign memory has no name: nothing to remove (its owner unmaps it).
    fn unlink(&self, _name: &SegmentName) -> SystemResult<()> {
        Ok(())
    }

    fn list(&self, _each: &mut dyn FnMut(SegmentName)) -> SystemResult<()> {
        Ok(())
    }

    fn bell_init(&self, _m: &ForeignMapping, r: &Region<'_>, bell: &Doorbell) -> SystemResult<()> {
        self.bells.bell_init(r, bell)
    }

    fn bell_ring(&self, _m: &ForeignMapping, r: &Region<'_>, bell: &Doorbell) -> SystemResult<()> {
        self.bells.bell_ring(r, bell)
    }

    fn bell_wait(
        &self,
        _m: &ForeignMapping,
        r: &Region<'_>,
        bell: &Doorbell,
        timeout: Option<Duration>,
    ) -> SystemResult<WaitOutcome> {
        self.bells.bell_wait(r, bell, timeout)
    }

    fn bell_destroy(&self, _m: &ForeignMapping, r: &Region<'_>, bell: &Doorbell) {
        self.bells.bell_destroy(r, bell)
    }
}
