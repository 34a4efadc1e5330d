//! [`Segment`]: a named mapping with a heap in it, and this process's registration.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use shm_core::Doorbell;
use shm_core::{
    Cache, CacheConfig, CheckReport, Heap, HeapConfig, HeapStats, Incarnation, Member, Offset,
    ProcessId, ProcessInfo, Processes, Region, ServerStatus, WaitOutcome,
};

use crate::error::{HostError, NamedResult, Result};
use crate::name::SegmentName;
use crate::system::{CreateOptions, Mapping, SegmentPlatform, System};
use crate::NativeSystem;

/// The heap of a segment, with this attachment's platform.
pub(crate) type SegmentHeap<S> = Heap<'static, SegmentPlatform<S>>;

/// A mapped segment holding a region, attached as a heap.
///
/// The heap refers to the mapping's memory, so it is declared first and dropped first;
/// the `'static` lifetime it carries never leaves this type except shortened to `&self`
/// (and in an attachment's buffer cache, which is gone before its segment is). It sits in
/// an allocation of its own, so that the cache's reference into it stays valid while the
/// attachment is borrowed mutably to be dropped.
pub struct Segment<S: System = NativeSystem> {
    heap: Arc<SegmentHeap<S>>,
    mapping: std::sync::Arc<S::Mapping>,
    name: SegmentName,
    system: S,
}

impl<S: System> std::fmt::Debug for Segment<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.mapping.len())
            .finish()
    }
}

impl<S: System> Segment<S> {
    /// Creates segment `name` of `size` bytes and formats a heap in it.
    pub fn create(
        system: S,
        name: &SegmentName,
        size: usize,
        opts: CreateOptions,
        config: HeapConfig,
    ) -> Result<Self> {
        let mapping = system.create(name, size, opts).named(name)?;
        let made = Self::with_heap(system.clone(), name, mapping, |region, sys| {
            Heap::init(region, config, sys)
        });
        if made.is_err() {
            // Do not leave a half-made segment behind.
            let _ = system.unlink(name);
        }
        made
    }

    /// Opens segment `name` and attaches to the heap in it.
    pub fn open(system: S, name: &SegmentName) -> Result<Self> {
        let mapping = system.open(name).named(name)?;
        Self::attach(system, name, mapping)
    }

    /// Formats a heap in an existing mapping (a file, a memfd, ...). Everything in it is
    /// overwritten.
    ///
    /// # Safety
    ///
    /// No process, this one included, uses the memory behind `mapping` meanwhile or
    /// afterwards as anything but this new heap: it is fresh memory, or whatever heap it
    /// held has no live attachment, no live [`Buffer`](crate::Buffer) and no kept block
    /// anyone still wants. Formatting a segment in use would hand the blocks its
    /// processes own (and the kept blocks of a file-backed segment) out again, so that two
    /// owners write the same bytes. [`Segment::create`] and
    /// [`Server::create_on`](crate::Server::create_on) never format a segment that exists.
    pub unsafe fn format(
        system: S,
        name: &SegmentName,
        mapping: S::Mapping,
        config: HeapConfig,
    ) -> Result<Self> {
        Self::with_heap(system, name, mapping, |region, sys| {
            Heap::init(region, config, sys)
        })
    }

    /// Attaches to the heap in an existing mapping (a file, a memfd, ...).
    pub fn attach(system: S, name: &SegmentName, mapping: S::Mapping) -> Result<Self> {
        Self::with_heap(system, name, mapping, |region, sys| {
            Heap::attach(region, sys)
        })
    }

    fn with_heap(
        system: S,
        name: &SegmentName,
        mapping: S::Mapping,
        make: impl FnOnce(
            Region<'static>,
            SegmentPlatform<S>,
        ) -> Result<SegmentHeap<S>, shm_core::Error>,
    ) -> Result<Self> {
        let min = 4096u64;
        if (mapping.len() as u64) < min {
            return Err(HostError::TooSmall {
                size: mapping.len() as u64,
                needed: min,
            });
        }
        // SAFETY: the mapping is valid for reads and writes for as long as it is mapped;
        // the heap made from this region is stored next to the mapping and dropped first
        // (field order), and its 'static lifetime is never exposed beyond `&self`.
        let region = unsafe { Region::from_raw(mapping.as_ptr(), mapping.len()) }?;
        // This attachment's presence mark: taken before anything in the region can name
        // us, held until the heap (which owns it) is dropped.
        let presence = system.enter(&mapping)?;
        let mapping = std::sync::Arc::new(mapping);
        let heap = make(
            region,
            SegmentPlatform::new(system.clone(), presence, std::sync::Arc::clone(&mapping)),
        )?;
        Ok(Segment {
            heap: Arc::new(heap),
            mapping,
            name: name.clone(),
            system,
        })
    }

    /// The heap itself, for code that needs the core's full API (firmware-style use of
    /// a host segment, fault-injection tests).
    ///
    /// # Safety
    ///
    /// The heap's operations can name any offset, and [`Heap::payload`] hands out raw
    /// pointers. The caller must act only as members it registered itself through this
    /// heap, must not read or write the payload of a block it does not own (or co-own
    /// read-only), and must not keep using a block's bytes after releasing or sending
    /// it. The safe types ([`Server`](crate::Server), [`Client`](crate::Client),
    /// [`Buffer`](crate::Buffer)) keep these rules themselves.
    pub unsafe fn heap(&self) -> &Heap<'_, SegmentPlatform<S>> {
        &self.heap
    }

    /// The heap with the mapping's lifetime, for types that keep the segment alive.
    pub(crate) fn heap_static(&self) -> &SegmentHeap<S> {
        &self.heap
    }

    /// The heap's own allocation (see the type's documentation).
    pub(crate) fn heap_arc(&self) -> &Arc<SegmentHeap<S>> {
        &self.heap
    }

    /// This attachment's identity in the segment (the pid is for display; the tag is what
    /// liveness is judged by).
    pub fn me(&self) -> ProcessId {
        self.heap.platform().current_process()
    }

    /// Whether the process `id` is alive, as this attachment can tell: `false` only on
    /// evidence that it is gone.
    pub fn is_alive(&self, id: ProcessId) -> bool {
        self.heap.platform().is_alive(id)
    }

    /// Statistics, taken under the region lock.
    pub fn stats(&self) -> Result<HeapStats> {
        Ok(self.heap.stats()?)
    }

    /// Statistics read without the lock (may be inconsistent while others work).
    pub fn stats_unlocked(&self) -> Result<HeapStats> {
        Ok(self.heap.stats_unlocked()?)
    }

    /// Every invariant of the region, checked under the region lock.
    pub fn check(&self) -> Result<CheckReport> {
        Ok(self.heap.check()?)
    }

    /// Like [`check`](Self::check) without the lock: for a segment whose lock holder is
    /// stopped. Concurrent operations make it report spurious problems.
    pub fn check_unlocked(&self) -> Result<CheckReport> {
        Ok(self.heap.check_unlocked()?)
    }

    /// The registered processes (a snapshot read without the lock).
    pub fn processes(&self) -> Result<Vec<ProcessInfo>> {
        let mut v = Vec::new();
        for p in self.heap.processes()? {
            v.push(p?);
        }
        Ok(v)
    }

    /// The participants (offset, kind, owner), read without the lock.
    pub fn participants(&self) -> Result<Vec<(Offset, u32, Incarnation)>> {
        Ok(self.heap.participants()?.collect())
    }

    /// A snapshot of one participant.
    pub fn participant(&self, at: Offset) -> Result<shm_core::ParticipantInfo> {
        Ok(self.heap.participant(at)?.info())
    }

    /// The server entry.
    pub fn server_status(&self) -> ServerStatus {
        self.heap.server_status()
    }

    /// The region lock's holder, if it is taken.
    pub fn lock_holder(&self) -> Option<ProcessId> {
        self.heap.snapshot().lock_holder
    }

    /// Words in the undo journal (non-zero only while an operation runs, or after its
    /// process died in one).
    pub fn journal_len(&self) -> u32 {
        self.heap.snapshot().journal_len
    }

    /// The kept root (see [`Server::keep`](crate::Server::keep)), if one is set.
    pub fn kept_root(&self) -> Option<Offset> {
        self.heap.kept_root()
    }

    /// Block alignment in bytes.
    pub fn align(&self) -> u32 {
        self.heap.align()
    }

    /// Usable payload bytes of a used block.
    pub fn block_len(&self, block: Offset) -> Result<u32> {
        Ok(self.heap.block_len(block)?)
    }

    /// Calls `f` with every block in address order (read without the lock).
    pub fn for_each_block(&self, f: impl FnMut(shm_core::BlockInfo)) -> Result<()> {
        Ok(self.heap.for_each_block(f)?)
    }

    /// Writes the segment's memory through to its backing store and waits until it is
    /// there: `msync(MS_SYNC)` for a file-backed segment (`FileSystem`); nothing for a
    /// segment held in memory only (POSIX, System V, Windows, QNX), which has no store.
    /// Only a file-backed segment survives a restart of the machine, and then only what
    /// was flushed (see the README's "File-backed segments").
    pub fn flush(&self) -> Result<()> {
        self.system.flush(&self.mapping).named(&self.name)
    }

    /// The segment's name.
    pub fn name(&self) -> &SegmentName {
        &self.name
    }

    /// The mapping.
    pub fn mapping(&self) -> &S::Mapping {
        &self.mapping
    }

    /// The system.
    pub fn system(&self) -> &S {
        &self.system
    }

    /// Prepares a doorbell's wait object.
    pub fn bell_init(&self, bell: &Doorbell) -> Result<()> {
        Ok(self
            .system
            .bell_init(&self.mapping, self.heap.region(), bell)?)
    }

    /// Rings `bell` if its owner sleeps (or is about to).
    pub fn ring_if_waiting(&self, bell: &Doorbell) -> Result<()> {
        if bell.should_ring() {
            self.system
                .bell_ring(&self.mapping, self.heap.region(), bell)?;
        }
        Ok(())
    }

    /// Sleeps on `bell`.
    pub fn bell_wait(&self, bell: &Doorbell, timeout: Option<Duration>) -> Result<WaitOutcome> {
        Ok(self
            .system
            .bell_wait(&self.mapping, self.heap.region(), bell, timeout)?)
    }

    /// Releases `bell`'s wait object.
    pub fn bell_destroy(&self, bell: &Doorbell) {
        self.system
            .bell_destroy(&self.mapping, self.heap.region(), bell)
    }
}

/// A process cache over an attachment's registration, for its buffers.
type BufferCache<S> = Cache<'static, 'static, SegmentPlatform<S>>;

/// A segment plus this process's registration in it. Dropping the last handle unregisters
/// the process, which returns everything it still owns.
pub(crate) struct Attachment<S: System> {
    /// The buffer cache when enabled (`ClientOptions::cache`, `ServerOptions::cache`):
    /// its bounds, and the cache, made on first use. It refers to the segment's heap, so
    /// it is declared before the segment (and taken out first when dropped).
    cache: Option<(CacheConfig, Mutex<Option<BufferCache<S>>>)>,
    pub seg: Segment<S>,
    /// The registration; private so that it is used only through [`Attachment::me`].
    member: Member,
    /// The fork generation at registration: a forked child is another process and must
    /// not act as this one.
    forks: u32,
}

impl<S: System> Attachment<S> {
    pub fn new(seg: Segment<S>, cache: Option<CacheConfig>) -> Result<Self> {
        if let Some(config) = cache {
            // The cache is made on first use; bad bounds are refused now rather than
            // leaving every buffer to the heap silently.
            seg.heap_static().check_cache_config(config)?;
        }
        let member = seg.heap_static().register()?;
        let forks = seg.system().fork_generation();
        Ok(Attachment {
            cache: cache.map(|c| (c, Mutex::new(None))),
            seg,
            member,
            forks,
        })
    }

    /// Allocates a block of `size` bytes through the buffer cache: `None` without one.
    pub fn cache_alloc(&self, size: u32) -> Option<std::result::Result<Offset, shm_core::Error>> {
        self.with_cache(|c| c.alloc(size))
    }

    /// Frees `block`, which a buffer of this attachment held, into the buffer cache;
    /// `false` when it was not taken (no cache, or a block it does not take, such as one
    /// other processes co-own), so the caller releases it the usual way.
    pub fn cache_free(&self, block: Offset) -> bool {
        matches!(self.with_cache(|c| c.free(block)), Some(Ok(())))
    }

    /// Gives the buffer cache's blocks back if an allocation somewhere asked caches to
    /// (for the periodic ticks of an otherwise idle process). Does not make a cache.
    pub fn cache_drain_if_asked(&self) {
        if let Some(cache) = self.lock_cache().as_mut().and_then(|(_, c)| c.as_mut()) {
            let _ = cache.drain_if_asked();
        }
    }

    /// The buffer cache's bounds and its slot, locked; `None` without a cache, and in a
    /// forked child (the lock may have been held by another thread of the parent at the
    /// fork, and the cache is the parent's anyway).
    fn lock_cache(&self) -> Option<(CacheConfig, MutexGuard<'_, Option<BufferCache<S>>>)> {
        let (config, slot) = self.cache.as_ref()?;
        if self.seg.system().fork_generation() != self.forks {
            return None;
        }
        Some((*config, slot.lock().unwrap_or_else(PoisonError::into_inner)))
    }

    /// Runs `f` on the buffer cache, making it first if needed; `None` without one (or if
    /// it cannot be made: buffers then come from the heap directly).
    fn with_cache<T>(
        &self,
        f: impl FnOnce(&mut BufferCache<S>) -> std::result::Result<T, shm_core::Error>,
    ) -> Option<std::result::Result<T, shm_core::Error>> {
        let (config, mut guard) = self.lock_cache()?;
        if guard.is_none() {
            // SAFETY: the heap lives in its own `Arc` allocation, which the segment keeps
            // until it is dropped; the cache lives in this attachment's `cache` field, which
            // is declared before `seg` and is taken out in `drop` before anything else, so
            // the reference never outlives the heap (nor the mapping the heap refers to).
            let heap: &'static SegmentHeap<S> = unsafe { &*Arc::as_ptr(self.seg.heap_arc()) };
            // SAFETY: `member_cache`'s contract holds: this member acts on a block given out
            // by the cache, or freed into it, from one place at a time: the cache gives each
            // block to one `Buffer`, the only handle to it, and takes a block back only from
            // a `Buffer` being dropped, and never one that was co-owned (`Buffer::shared`).
            // Every other operation on a buffer's block (send, keep, a copy-on-write move,
            // a broadcast) consumes the buffer or borrows it, which excludes its drop; the
            // attachment's own blocks (participant, keepalives, reserve) never become
            // buffers; the cache is forgotten before the member unregisters (`drop`).
            *guard = unsafe { heap.member_cache(self.me(), config) }.ok();
        }
        guard.as_mut().map(f)
    }

    /// The member to act as. In a forked child (another process, which shares the
    /// mapping but not the registration) every operation fails with
    /// [`shm_core::Error::StaleMember`].
    pub fn me(&self) -> Member {
        if self.seg.system().fork_generation() == self.forks {
            self.member
        } else {
            // A member whose serial cannot match: every core operation refuses it.
            self.member_of_another_process()
        }
    }

    /// The registration, for display and for comparing with what the region says.
    pub fn incarnation(&self) -> Incarnation {
        self.member.incarnation()
    }

    fn member_of_another_process(&self) -> Member {
        // The core checks slot and serial under the lock; a forked child shares both
        // numbers with its parent, so it must not pass them on. Registering again is the
        // child's way in; until then its operations fail.
        self.member.revoked()
    }

    pub fn heap(&self) -> &SegmentHeap<S> {
        self.seg.heap_static()
    }
}

impl<S: System> Drop for Attachment<S> {
    fn drop(&mut self) {
        // The cache's blocks are the registration's: unregistering below frees them, and a
        // forked child or a truncated mapping must not touch them. So the cache is
        // forgotten rather than drained (it holds no resource of its own).
        if let Some((_, slot)) = self.cache.as_mut() {
            let cache = slot
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            std::mem::forget(cache);
        }
        if self.seg.system().fork_generation() != self.forks {
            return; // a forked child's copy: the registration is the parent's
        }
        let mapped = self.seg.mapping().len() as u64;
        if matches!(self.seg.system().object_size(self.seg.mapping()), Ok(now) if now < mapped) {
            return; // truncated under us: touching the lost pages would raise SIGBUS
        }
        // Errors cannot be reported from drop; a failure leaves the slot to the watchdog of
        // another process once this one has exited.
        let _ = self.seg.heap_static().unregister(self.member);
    }
}
