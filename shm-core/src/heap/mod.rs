//! [`Heap`]: a heap_5-style allocator over a [`Region`], with owner tables, reserves,
//! reference-counted sharing, crash recovery and a full consistency check.
//!
//! The design is FreeRTOS heap_5's: blocks tile the region, a block is split when the
//! remainder can hold a minimum block, and a freed block is merged at once with both free
//! neighbours. Like heap_5 the heap may span several disjoint ranges that share one base.
//! Unlike heap_5, the free blocks are found through a size-class index (TLSF's two-level
//! segregated lists with bitmaps, see the `index` module) instead of one address-ordered list, so
//! allocating and freeing are O(1); every link is an offset, every block records its
//! owners, service data is taken from the high end, and every change of the blocks goes
//! through an undo journal so that a process dying mid-operation leaves nothing half-done
//! (the index, boundary tags and counts are derived from the blocks and rebuilt after an
//! undo instead, see [`journal`](crate::journal)).
//!
//! Invariants, all checked by [`Heap::check`]:
//! 1. In each range, blocks tile `[first block, end marker)` exactly; each block's
//!    `prev_phys` names the block before it (0 for the first).
//! 2. No two free blocks are physical neighbours, and the size-class index lists every free
//!    block exactly once, in the list of its class (the index's own invariants are in
//!    [`index`]).
//! 3. Every used block other than system data (the process table and process records) is
//!    named by exactly `refcount` owner cells, chained from its header; every used cell
//!    names such a block.
//! 4. The statistics in [`HeapState`](crate::format::HeapState) match the walk.
//! 5. The journal is empty whenever the lock is free.

mod check;
mod freelist;
mod index;
mod ops;
pub(crate) mod owners;
mod rebuild;
mod space;
mod stats;
mod txn;

use core::mem::size_of;
use core::sync::atomic::{
    AtomicU32,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use core::time::Duration;

pub use check::CheckReport;
pub(crate) use space::{align_up, Space};
use space::{heap_ranges, zero_words, Geometry};
pub use stats::{BlockInfo, HeapSnapshot, HeapStats, ProcessInfo, ProcessIter};
pub(crate) use txn::{HeapView, Txn};

use crate::error::{corrupt, AttachError, CorruptionKind, Error};
use crate::format::{
    BlockHeader, Doorbell, OwnerRef, RegionHeader, DEFAULT_ALIGN, END, FORMAT_VERSION,
    LAYOUT_FINGERPRINT, MAGIC, NO_OWNER, USED,
};
use crate::ids::{Incarnation, Member, ProcSlot, ProcessId};
use crate::journal::{self, FaultInjector, Tx};
use crate::lock::{self, Acquired};
use crate::offset::Offset;
use crate::os::WaitOutcome;
use crate::platform::Platform;
use crate::region::Region;

/// Options for formatting a region with [`Heap::init`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapConfig {
    /// Block alignment in bytes: a power of two from 8 to 4096. Payloads are aligned to
    /// it. Default 16.
    pub align: u32,
    /// Entries in the process table: how many processes may be registered at once.
    /// Default 64.
    pub max_processes: u16,
}

impl Default for HeapConfig {
    fn default() -> Self {
        HeapConfig {
            align: DEFAULT_ALIGN,
            max_processes: 64,
        }
    }
}

/// Operation codes recorded in the journal (diagnostics only).
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub(crate) enum OpCode {
    Alloc = 1,
    Free = 2,
    AllocAt = 3,
    Reserve = 4,
    AllocFromReserve = 5,
    Give = 6,
    Share = 7,
    Release = 8,
    Register = 9,
    Reclaim = 10,
    Check = 11,
    SetApp = 12,
}

/// The first operation code free for layers above the heap (see [`Heap::transact`]).
pub(crate) const FIRST_CLIENT_OP: u32 = 13;

/// A heap over a region, used by one process (which may use it from several threads).
///
/// Operations name the acting process by a [`Member`], obtained from
/// [`register`](Heap::register) and checked under the lock at every operation (a member
/// whose registration ended gets [`Error::StaleMember`]). A process normally registers
/// once; firmware, tests and simulators may register several members in one program.
#[derive(Debug)]
pub struct Heap<'m, P: Platform> {
    space: Space<'m>,
    platform: P,
    faults: FaultInjector,
    /// Most words one operation of this handle has journaled (process-local diagnostics).
    journal_high_water: AtomicU32,
}

impl<'m, P: Platform> Heap<'m, P> {
    /// Formats `region` as an empty heap and returns a handle to it.
    ///
    /// Everything in the region is overwritten. The header goes at the start of the first
    /// range; each range ends with an end marker; the process table is the first service
    /// block, at the high end.
    pub fn init(region: Region<'m>, config: HeapConfig, platform: P) -> Result<Self, Error> {
        let geo = Geometry::new(config.align, region.base_addr())?;
        if config.max_processes == 0 || config.max_processes == u16::MAX {
            return Err(AttachError::BadConfig.into());
        }
        let hdr_len = size_of::<RegionHeader>() as u32;
        // u32 values in a u64: these cannot saturate.
        let needed = u64::from(hdr_len)
            .saturating_add(u64::from(geo.align))
            .saturating_add(u64::from(geo.min_block).saturating_mul(4));
        let (r0_start, r0_end) = region.range(0).ok_or(AttachError::BadConfig)?;
        let r0_len = u64::from(r0_end.checked_sub(r0_start).ok_or(AttachError::BadConfig)?);
        if r0_len < needed {
            return Err(AttachError::TooSmall {
                supplied: r0_len,
                needed,
            }
            .into());
        }
        let hdr: &'m RegionHeader = region.get(0)?;
        // Not ready while formatting: a process attaching now is refused.
        hdr.ready.store(0, Release);
        hdr.magic[0].store(0, Relaxed);
        zero_words(&region, 0, hdr_len)?;

        let ranges = heap_ranges(&region, &geo)?;
        if ranges.first().map(|r| r.lo) != align_up(hdr_len, geo.align) {
            return Err(AttachError::TooSmall {
                supplied: r0_len,
                needed,
            }
            .into());
        }

        // Identity, ranges and geometry.
        hdr.version.store(FORMAT_VERSION, Relaxed);
        hdr.fingerprint.store(LAYOUT_FINGERPRINT, Relaxed);
        hdr.size.store(region.end(), Relaxed);
        hdr.align.store(geo.align, Relaxed);
        hdr.range_count.store(region.range_count() as u32, Relaxed);
        for i in 0..region.range_count() {
            let (start, end) = region.range(i).ok_or(AttachError::BadConfig)?;
            let d = hdr.ranges.get(i).ok_or(AttachError::BadConfig)?;
            d.start.store(start, Relaxed);
            d.len.store(
                end.checked_sub(start).ok_or(AttachError::BadConfig)?,
                Relaxed,
            );
        }

        // One free block per range, each with its end marker.
        let mut heap_bytes = 0u32;
        for r in &ranges {
            let size = r.hi.checked_sub(r.lo).ok_or(AttachError::BadConfig)?;
            let b: &BlockHeader = region.get(r.lo)?;
            b.size_flags.store(size, Relaxed);
            b.prev_phys.store(0, Relaxed);
            let end: &BlockHeader = region.get(r.hi)?;
            end.size_flags.store(geo.hsize | USED | END, Relaxed);
            end.prev_phys.store(r.lo, Relaxed);
            end.link.store(0, Relaxed);
            end.owner.store(NO_OWNER, Relaxed);
            heap_bytes = heap_bytes.checked_add(size).ok_or(AttachError::BadConfig)?;
        }
        let h = &hdr.heap;
        h.heap_bytes.store(heap_bytes, Relaxed);
        h.free_bytes.store(heap_bytes, Relaxed);
        h.min_free_bytes.store(heap_bytes, Relaxed);
        h.free_blocks.store(ranges.len() as u32, Relaxed);

        let heap = Heap {
            space: Space::new(region, hdr, geo, ranges),
            platform,
            faults: FaultInjector::default(),
            journal_high_water: AtomicU32::new(0),
        };
        // The free blocks go into the index; the process table is the first service block.
        heap.space.init_index()?;
        heap.space.init_process_table(config.max_processes)?;
        // Publish: identity last, so a concurrent attach never sees a half-made region.
        hdr.magic[1].store(MAGIC[1], Relaxed);
        hdr.magic[0].store(MAGIC[0], Relaxed);
        hdr.ready.store(1, Release);
        Ok(heap)
    }

    /// Attaches to a region formatted by [`init`](Heap::init) (possibly by another
    /// process, possibly mapped at another address).
    ///
    /// Refuses with [`Error::Attach`] a region that is not formatted, uses another format
    /// version, was built with an incompatible layout, or does not match the memory
    /// supplied. The rest of the region is not walked here (see [`check`](Heap::check));
    /// every later operation bounds-checks what it reads.
    pub fn attach(region: Region<'m>, platform: P) -> Result<Self, Error> {
        let hdr_len = size_of::<RegionHeader>() as u64;
        let (s0, e0) = region.range(0).ok_or(AttachError::BadConfig)?;
        let r0_len = u64::from(e0.checked_sub(s0).ok_or(AttachError::BadConfig)?);
        if r0_len < hdr_len {
            return Err(AttachError::TooSmall {
                supplied: r0_len,
                needed: hdr_len,
            }
            .into());
        }
        let hdr: &'m RegionHeader = region.get(0)?;
        if hdr.ready.load(Acquire) == 0
            || hdr.magic[0].load(Relaxed) != MAGIC[0]
            || hdr.magic[1].load(Relaxed) != MAGIC[1]
        {
            return Err(AttachError::BadMagic.into());
        }
        let version = hdr.version.load(Relaxed);
        if version != FORMAT_VERSION {
            return Err(AttachError::Version {
                found: version,
                expected: FORMAT_VERSION,
            }
            .into());
        }
        let fp = hdr.fingerprint.load(Relaxed);
        if fp != LAYOUT_FINGERPRINT {
            return Err(AttachError::Layout {
                found: fp,
                expected: LAYOUT_FINGERPRINT,
            }
            .into());
        }
        let recorded = u64::from(hdr.size.load(Relaxed));
        if recorded != u64::from(region.end()) {
            return Err(AttachError::SizeMismatch {
                recorded,
                supplied: u64::from(region.end()),
            }
            .into());
        }
        let geo = Geometry::new(hdr.align.load(Relaxed), region.base_addr())?;
        let count = hdr.range_count.load(Relaxed) as usize;
        if count != region.range_count() {
            return Err(AttachError::BadConfig.into());
        }
        for i in 0..count {
            let (start, end) = region.range(i).ok_or(AttachError::BadConfig)?;
            let d = hdr.ranges.get(i).ok_or(AttachError::BadConfig)?;
            let len = end.checked_sub(start).ok_or(AttachError::BadConfig)?;
            if d.start.load(Relaxed) != start || d.len.load(Relaxed) != len {
                return Err(AttachError::SizeMismatch {
                    recorded: u64::from(d.len.load(Relaxed)),
                    supplied: u64::from(len),
                }
                .into());
            }
        }
        let ranges = heap_ranges(&region, &geo)?;
        Ok(Heap {
            space: Space::new(region, hdr, geo, ranges),
            platform,
            faults: FaultInjector::default(),
            journal_high_water: AtomicU32::new(0),
        })
    }

    /// The platform this handle uses.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The region this heap lives in.
    pub fn region(&self) -> &Region<'m> {
        &self.space.region
    }

    /// The words of the region header that change at run time (the lock, the journal,
    /// the waiters), read without the lock, as plain values: for inspection tools.
    pub fn snapshot(&self) -> HeapSnapshot {
        HeapSnapshot::read(self.space.hdr)
    }

    /// The live region header, for white-box tests that damage it on purpose (feature
    /// `testkit`). Writing through it bypasses the lock and the journal.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn raw_header_for_tests(&self) -> &'m RegionHeader {
        self.space.hdr
    }

    /// Block alignment in bytes.
    pub fn align(&self) -> u32 {
        self.space.geo.align
    }

    /// Bytes of header in front of every payload.
    pub fn block_header_size(&self) -> u32 {
        self.space.geo.hsize
    }

    /// The block size (header included) a request of `size` bytes takes, or the error
    /// the request would fail with for its size alone.
    pub fn block_size_for(&self, size: u32) -> Result<u32, Error> {
        self.space.geo.block_size(size)
    }

    /// The largest request this region can ever serve (one whole range, empty).
    pub fn max_alloc(&self) -> u32 {
        self.space.max_block().saturating_sub(self.space.geo.hsize)
    }

    /// The most words any one operation of this handle journaled so far. The journal holds
    /// [`JOURNAL_CAPACITY`](crate::format::JOURNAL_CAPACITY); tests assert the margin.
    pub fn journal_high_water(&self) -> u32 {
        self.journal_high_water.load(Relaxed)
    }

    /// The fault injector of this handle (tests only).
    #[cfg(feature = "fault-injection")]
    pub fn faults(&self) -> &FaultInjector {
        &self.faults
    }

    /// Runs `f` as one operation: under the region lock (breaking it if its holder died,
    /// and undoing that holder's half-done operation first), inside the platform's
    /// critical section, journaled, committed on success and undone on error.
    pub(crate) fn op<R>(
        &self,
        code: OpCode,
        f: impl FnOnce(&mut Tx<'_, 'm>, &Space<'m>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.run(code as u32, f, |_| {})
    }

    /// The operation machinery behind [`op`](Self::op) and [`transact`](Self::transact).
    /// A store the operation deferred ([`Tx::defer`]) is made after the commit, still under
    /// the lock; a process that breaks the lock of one that died in between makes it.
    /// `after` runs after that store, still under the lock: waking a receiver there means
    /// its doorbell cannot be freed (which takes the lock) while this process touches it.
    pub(crate) fn run<R>(
        &self,
        code: u32,
        f: impl FnOnce(&mut Tx<'_, 'm>, &Space<'m>) -> Result<R, Error>,
        after: impl FnOnce(&R),
    ) -> Result<R, Error> {
        let hdr = self.space.hdr;
        self.platform.critical(|| {
            self.lock()?;
            let mut tx = self.space.begin(code, &self.faults);
            match f(&mut tx, &self.space) {
                Ok(v) => {
                    // An error from here on is an injected crash: "die" holding the lock,
                    // leaving the journal or the deferred store for the recoverer.
                    let (logged, deferred) = tx.commit()?;
                    self.journal_high_water.fetch_max(logged, Relaxed);
                    if let Some(store) = deferred {
                        self.faults.step()?;
                        self.space.journal().complete(&self.space.region, store)?;
                    }
                    after(&v);
                    hdr.lock.release();
                    Ok(v)
                }
                Err(Error::InjectedCrash) => Err(Error::InjectedCrash),
                Err(e) => {
                    let dirty = tx.is_dirty();
                    let undone = tx
                        .rollback(&self.space.journaled_header_words())
                        .and_then(|_| {
                            if dirty {
                                self.space.rebuild_derived()
                            } else {
                                Ok(())
                            }
                        });
                    hdr.lock.release();
                    undone.and(Err(e))
                }
            }
        })
    }

    /// Takes the region lock; if it was broken from a dead holder, or a journal is left
    /// over for any reason, undoes the unfinished operation before anything else, and
    /// rebuilds the derived state it may have left (see [`journal`](crate::journal)).
    fn lock(&self) -> Result<(), Error> {
        let hdr = self.space.hdr;
        let me = self.platform.current_process();
        if let Acquired::FromDead(_) = lock::acquire(&hdr.lock, &self.platform, me) {
            hdr.lock_breaks.fetch_add(1, Relaxed);
        }
        if hdr.journal.len.load(Acquire) != 0 {
            let also = self.space.journaled_header_words();
            if let Err(e) = journal::recover(&self.space.region, self.space.journal(), &also) {
                hdr.lock.release();
                return Err(e);
            }
        }
        // Derived state an unfinished (or undone) operation may have left behind.
        if hdr.derived_dirty.load(Acquire) != 0 {
            if let Err(e) = self.space.rebuild_derived() {
                hdr.lock.release();
                return Err(e);
            }
        }
        // A process that died after committing but before making its deferred store (a
        // sender, before publishing its entry): make it, and wake the receiver, which may
        // sleep on the doorbell for it.
        let journal = self.space.journal();
        if let Some(store) = journal.pending() {
            if let Err(e) = journal.complete(&self.space.region, store) {
                hdr.lock.release();
                return Err(e);
            }
            if store.bell != 0 {
                if let Ok(bell) = self.space.region.get::<Doorbell>(store.bell) {
                    if bell.should_ring() {
                        self.platform.ring(&self.space.region, bell);
                    }
                }
            }
        }
        Ok(())
    }

    /// Announces that memory was freed: wakes blocked allocators, if any. Allocators
    /// register under the lock (see [`alloc_timeout`](Heap::alloc_timeout)), so the
    /// common case, nobody waiting, costs one load of a word on the lock's cache line.
    fn freed(&self) {
        let hdr = self.space.hdr;
        if hdr.waiters.load(SeqCst) != 0 {
            hdr.free_epoch.fetch_add(1, SeqCst);
            self.platform.notify_all(&hdr.free_epoch);
        }
    }

    // ----- process registration -------------------------------------------------------

    /// Registers the calling process (as the platform identifies it) and returns the
    /// member handle to act as it.
    pub fn register(&self) -> Result<Member, Error> {
        self.register_as(self.platform.current_process())
    }

    /// Registers a member whose liveness the platform answers under `id` (firmware tasks,
    /// simulated processes in tests). The member is reclaimed by others once the platform
    /// reports `id` dead.
    pub fn register_as(&self, id: ProcessId) -> Result<Member, Error> {
        if id.pid == 0 {
            return Err(Error::InvalidSize { requested: 0 });
        }
        self.op(OpCode::Register, |tx, s| s.register(tx, id))
    }

    /// Unregisters `process`: everything it owns is released (shared blocks stay alive for
    /// their other owners) and its slot is freed.
    pub fn unregister(&self, me: Member) -> Result<ReclaimReport, Error> {
        self.reclaim_incarnation(me.incarnation(), false)
    }

    // ----- allocation ------------------------------------------------------------------

    /// Allocates `size` bytes for `me`: from the front of the smallest free block whose
    /// size class fits (see the `index` module). Fails at once with [`Error::OutOfMemory`] when no
    /// free block is large enough.
    pub fn try_alloc(&self, me: Member, size: u32) -> Result<Offset, Error> {
        self.op(OpCode::Alloc, |tx, s| {
            s.alloc(tx, s.member(me)?, size, Placement::Low)
        })
    }

    /// Allocates `size` bytes of long-lived service data for `me`, from the high end, so
    /// that it fragments the heap only when the heap is nearly full.
    pub fn try_alloc_service(&self, me: Member, size: u32) -> Result<Offset, Error> {
        self.op(OpCode::Alloc, |tx, s| {
            s.alloc(tx, s.member(me)?, size, Placement::High)
        })
    }

    /// Allocates `size` bytes for `me`, waiting for other processes to free memory when
    /// none fits. Fails with [`Error::TooLarge`] at once if the request can never fit.
    pub fn alloc(&self, me: Member, size: u32) -> Result<Offset, Error> {
        self.alloc_timeout(me, size, None)
    }

    /// Like [`alloc`](Heap::alloc), giving up with [`Error::Timeout`] after `timeout`
    /// (measured with the platform's clock; without one, after the platform's bounded wait).
    pub fn alloc_timeout(
        &self,
        me: Member,
        size: u32,
        timeout: Option<Duration>,
    ) -> Result<Offset, Error> {
        let hdr = self.space.hdr;
        let deadline = timeout.and_then(|t| self.platform.now().and_then(|n| n.checked_add(t)));
        // Whether this call is registered as a waiter (in the header's `waiters` and in its
        // own record's `waiting`, so that a reclaim gives the count back if it dies here).
        // Registration and deregistration both happen under the lock.
        let mut registered = false;
        loop {
            // On failure the allocator registers as a waiter and reads the epoch inside
            // the failed operation, under the lock: a free that runs after it sees the
            // registration (so frees need no atomic read-modify-write when nobody waits),
            // and one that ran before it left memory this attempt would have found.
            let mut epoch = None;
            let r = self.op(OpCode::Alloc, |tx, s| {
                let slot = s.member(me)?;
                if registered {
                    unregister_waiter(s, slot);
                    registered = false;
                }
                let r = s.alloc(tx, slot, size, Placement::Low);
                if let Err(Error::OutOfMemory { .. }) = r {
                    // Not journaled: the registration outlives the operation's undo.
                    hdr.waiters.fetch_add(1, SeqCst);
                    if let Ok(rec) = s.record(slot) {
                        rec.rec.waiting.fetch_add(1, SeqCst);
                    }
                    registered = true;
                    epoch = Some(hdr.free_epoch.load(SeqCst));
                }
                r
            });
            let Some(epoch) = epoch else { return r };
            let remaining = match (timeout, deadline, self.platform.now()) {
                (Some(_), Some(d), Some(now)) => match d.checked_sub(now) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        // `now >= d`: the deadline has passed.
                        self.stop_waiting(me);
                        return Err(Error::Timeout);
                    }
                },
                (t, _, _) => t,
            };
            let outcome = self.platform.wait(&hdr.free_epoch, epoch, remaining);
            if outcome == WaitOutcome::TimedOut && deadline.is_none() {
                self.stop_waiting(me);
                return Err(Error::Timeout);
            }
        }
    }

    /// Deregisters a waiter of `me` that gives up (under the lock, as it registered).
    fn stop_waiting(&self, me: Member) {
        let _ = self.op(OpCode::Alloc, |_, s| {
            unregister_waiter(s, s.member(me)?);
            Ok(())
        });
    }

    /// Allocates a block for `me` whose payload starts exactly at `offset`, holding at
    /// least `size` bytes. Fails with [`Error::Unavailable`] unless that range lies in one
    /// free block with room for a block header in front of it.
    pub fn alloc_at(&self, me: Member, offset: Offset, size: u32) -> Result<Offset, Error> {
        self.op(OpCode::AllocAt, |tx, s| {
            s.alloc_at(tx, s.member(me)?, offset, size)
        })
    }

    /// Frees a block `me` owns alone.
    pub fn free(&self, me: Member, block: Offset) -> Result<(), Error> {
        self.op(OpCode::Free, |tx, s| s.free(tx, s.member(me)?, block))?;
        self.freed();
        Ok(())
    }

    /// Sets aside a reserve of `size` bytes for `me`, from the high end, replacing any
    /// reserve `me` had. Returns the reserve's payload offset.
    pub fn reserve(&self, me: Member, size: u32) -> Result<Offset, Error> {
        let r = self.op(OpCode::Reserve, |tx, s| s.reserve(tx, s.member(me)?, size));
        self.freed();
        r
    }

    /// Allocates `size` bytes for `me` out of its reserve. Succeeds whenever the reserve
    /// is large enough, however full the heap is: the block is cut from the front of the
    /// reserve and the rest stays reserved.
    pub fn alloc_from_reserve(&self, me: Member, size: u32) -> Result<Offset, Error> {
        self.op(OpCode::AllocFromReserve, |tx, s| {
            s.alloc_from_reserve(tx, s.member(me)?, size)
        })
    }

    /// Hands `me`'s reference to `block` over to process `to` (how a buffer changes hands
    /// on send). If `block` is shared, only `me`'s reference moves.
    pub fn give(&self, me: Member, block: Offset, to: Member) -> Result<(), Error> {
        self.op(OpCode::Give, |tx, s| {
            s.give(tx, s.member(me)?, block, s.member(to)?)
        })
    }

    /// Makes process `with` a co-owner of `block`, which `me` owns or co-owns. The block
    /// is freed when its last owner releases it.
    pub fn share(&self, me: Member, block: Offset, with: Member) -> Result<(), Error> {
        self.op(OpCode::Share, |tx, s| {
            s.share(tx, s.member(me)?, block, s.member(with)?)
        })
    }

    /// Drops `me`'s reference to `block`; frees the block if it was the last. Returns
    /// whether the block was freed.
    pub fn release(&self, me: Member, block: Offset) -> Result<bool, Error> {
        let freed = self.op(OpCode::Release, |tx, s| s.release(tx, s.member(me)?, block))?;
        if freed {
            self.freed();
        }
        Ok(freed)
    }

    /// Returns everything the dead process `process` owned and frees its slot. First its
    /// application words (and, if it is the registered server, the server entry) are
    /// cleared, so nobody finds its participant any more; then blocks it owned alone are
    /// freed, its references to shared blocks are dropped (a block still held by someone
    /// else stays alive), its reserve is freed. Works in steps of one block, each its own
    /// journaled operation, so a crash midway leaves a consistent heap and a later
    /// `reclaim` finishes the job.
    ///
    /// Every step checks under the lock that the slot still holds `process` (a slot that
    /// moved on to a newer process fails with [`Error::StaleMember`] and is not touched),
    /// and the first step that the platform reports the process dead
    /// ([`Error::StillAlive`] otherwise): "cannot tell" is alive.
    pub fn reclaim(&self, process: Incarnation) -> Result<ReclaimReport, Error> {
        self.reclaim_incarnation(process, true)
    }

    /// `reclaim` and `unregister`: the latter acts for the caller itself, alive.
    fn reclaim_incarnation(
        &self,
        process: Incarnation,
        must_be_dead: bool,
    ) -> Result<ReclaimReport, Error> {
        let mut report = ReclaimReport::default();
        let mut cursor = 0u32;
        let mut first = true;
        loop {
            let step = self.op(OpCode::Reclaim, |tx, s| {
                let r = s.incarnation(process)?;
                if first && must_be_dead {
                    let id = ProcessId {
                        pid: r.rec.pid.load(Relaxed),
                        tag: r.rec.tag.load(Relaxed),
                    };
                    if id.pid != 0 && self.platform.is_alive(id) {
                        return Err(Error::StillAlive { process });
                    }
                }
                s.reclaim_step(tx, process.slot, &mut cursor)
            });
            let step = match step {
                Ok(step) => step,
                // Someone else finished reclaiming it between two of our steps.
                Err(Error::StaleMember { .. }) if !first => break,
                Err(e) => return Err(e),
            };
            first = false;
            match step {
                // Counts for the caller's information: saturating is harmless.
                ReclaimStep::Released { bytes, freed } => {
                    report.references = report.references.saturating_add(1);
                    if freed {
                        report.blocks_freed = report.blocks_freed.saturating_add(1);
                        report.bytes_freed = report.bytes_freed.saturating_add(u64::from(bytes));
                    }
                }
                ReclaimStep::Detached => {}
                ReclaimStep::Done => break,
            }
        }
        self.freed();
        Ok(report)
    }

    /// Reclaims every registered process the platform reports dead (except the caller).
    /// Returns how many were reclaimed. The table is read without the lock; each
    /// reclaim re-checks its incarnation and liveness under it, so a slot that changed
    /// hands meanwhile is left alone.
    pub fn reclaim_dead(&self) -> Result<u32, Error> {
        let me = self.platform.current_process();
        let mut count = 0u32;
        for info in self.processes()? {
            let info = info?;
            if info.id != me && !self.platform.is_alive(info.id) {
                match self.reclaim(info.incarnation()) {
                    Ok(_) => count = count.saturating_add(1), // at most the slots
                    Err(Error::StaleMember { .. } | Error::StillAlive { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(count)
    }

    /// Makes `me`'s owner array hold at least `cells` cells now, so that owning up to that
    /// many blocks never moves it (a move allocates service memory while the lock is held,
    /// and a full heap makes it fail). Returns the capacity.
    pub fn reserve_cells(&self, me: Member, cells: u32) -> Result<u32, Error> {
        self.op(OpCode::Reserve, |tx, s| {
            s.reserve_cells(tx, s.member(me)?, cells)
        })
    }

    /// Stores `value` in application word `index` (0..3) of `process`'s record, a place
    /// for the layer above to find per-process data.
    pub fn set_app_word(&self, me: Member, index: usize, value: u32) -> Result<(), Error> {
        self.op(OpCode::SetApp, |tx, s| {
            let r = s.incarnation(me.incarnation())?;
            let w = r.rec.app.get(index).ok_or(Error::InvalidSize {
                requested: index as u64,
            })?;
            tx.set(w, value)
        })
    }

    // ----- inspection ------------------------------------------------------------------

    /// Usable payload bytes of a used block (at least what was asked for).
    pub fn block_len(&self, block: Offset) -> Result<u32, Error> {
        let (b, at) = self.space.used_block(block)?;
        // `used_block` checked the size, but another process may have changed it since.
        b.size()
            .checked_sub(self.space.geo.hsize)
            .ok_or_else(|| corrupt(at, CorruptionKind::BadBlockSize))
    }

    /// A pointer to the payload of a used block and its usable length.
    ///
    /// Reading or writing through the pointer is up to the caller, who must own the block
    /// (or otherwise know no one writes it concurrently).
    pub fn payload(&self, block: Offset) -> Result<(core::ptr::NonNull<u8>, u32), Error> {
        let len = self.block_len(block)?;
        Ok((self.space.region.ptr(block, len)?, len))
    }

    /// Reference count of a used block.
    pub fn ref_count(&self, block: Offset) -> Result<u32, Error> {
        let (b, _) = self.space.used_block(block)?;
        Ok(b.link.load(Relaxed))
    }

    /// The slot of the first owner of a used block.
    pub fn owner_of(&self, block: Offset) -> Result<Option<ProcSlot>, Error> {
        let (b, _) = self.space.used_block(block)?;
        Ok(OwnerRef::unpack(b.owner.load(Relaxed)).map(|r| ProcSlot(r.slot)))
    }

    /// Calls `f` with every owner of a used block (read without the lock; at most as many
    /// as there are process slots).
    pub fn owners(&self, block: Offset, f: impl FnMut(ProcSlot)) -> Result<(), Error> {
        self.space.owners(block, f)
    }

    /// Calls `f` with every block in address order, read without the lock (for inspection
    /// tools; concurrent operations may make it report an error).
    pub fn for_each_block(&self, f: impl FnMut(BlockInfo)) -> Result<(), Error> {
        self.space.for_each_block(f)
    }

    /// Walks the whole region and reports the first broken invariant (see the module
    /// documentation). Takes the lock, so it sees a quiescent heap.
    pub fn check(&self) -> Result<CheckReport, Error> {
        self.op(OpCode::Check, |_, s| s.check())
    }

    /// Like [`check`](Heap::check) without taking the lock: for inspecting a region whose
    /// processes may all be gone. Concurrent operations make it report spurious problems.
    pub fn check_unlocked(&self) -> Result<CheckReport, Error> {
        self.space.check()
    }

    /// Statistics, like FreeRTOS `vPortGetHeapStats`.
    pub fn stats(&self) -> Result<HeapStats, Error> {
        self.op(OpCode::Check, |_, s| s.stats())
    }

    /// Statistics without taking the lock (see [`check_unlocked`](Heap::check_unlocked)).
    pub fn stats_unlocked(&self) -> Result<HeapStats, Error> {
        self.space.stats()
    }

    /// The registered processes, read without the lock.
    pub fn processes(&self) -> Result<stats::ProcessIter<'_, 'm>, Error> {
        stats::ProcessIter::new(&self.space)
    }

    /// Information about one registered process.
    pub fn process(&self, slot: ProcSlot) -> Result<ProcessInfo, Error> {
        self.space.process_info(slot)
    }
}

/// What [`Heap::reclaim`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// References dropped (owned blocks, shared references and the reserve).
    pub references: u32,
    /// Blocks freed because the reclaimed process was their last owner.
    pub blocks_freed: u32,
    /// Bytes in those blocks, headers included.
    pub bytes_freed: u64,
}

/// Where an allocation is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// From the front of a good fit, so user blocks grow up from the low end.
    Low,
    /// Last fit from the high end (service data).
    High,
}

/// One step of reclaiming a process.
pub(crate) enum ReclaimStep {
    /// Its application words (and server entry) were cleared.
    Detached,
    Released {
        bytes: u32,
        freed: bool,
    },
    Done,
}

/// Takes one blocked allocation of `slot` off the waiter counts (under the lock). Both
/// counts saturate: a registration lost to an undone owner-array move (the record it was
/// counted in was rolled back) must not wrap them.
fn unregister_waiter(s: &Space<'_>, slot: ProcSlot) {
    let all = &s.hdr.waiters;
    all.store(all.load(SeqCst).saturating_sub(1), SeqCst);
    if let Ok(r) = s.record(slot) {
        let mine = &r.rec.waiting;
        mine.store(mine.load(SeqCst).saturating_sub(1), SeqCst);
    }
}
