//! [`Heap`]: a heap_5-style allocator over a [`Region`], with owner tables, reserves,
//! reference-counted sharing, crash recovery and a full consistency check.
//!
//! The design is FreeRTOS heap_5's: blocks tile the region, a block is split when the
//! remainder can hold a minimum block, and a freed block is merged at once with both free
//! neighbours. Like heap_5 the heap may span several disjoint ranges that share one base.
//! Unlike heap_5, the free blocks are found through a size-class index (TLSF's two-level
//! segregated lists with bitmaps, see the `index` module) instead of one address-ordered
//! list, so allocating and freeing are O(1); every link is an offset, every block records its
//! owners, service data is taken from the high end, and every change of the blocks goes
//! through an undo journal so that a process dying mid-operation leaves nothing half-done
//! (the index, boundary tags and counts are derived from the blocks and rebuilt after an
//! undo instead, see [`journal`]).
//!
//! Invariants, all checked by [`Heap::check`]:
//! 1. In each range, blocks tile `[first block, end marker)` exactly; each block's
//!    `prev_phys` names the block before it (0 for the first).
//! 2. No two free blocks are physical neighbours, and the size-class index lists every free
//!    block exactly once, in the list of its class (the index's own invariants are in
//!    [`index`]).
//! 3. Every used block other than system data (the process table, process records and the
//!    root block) and kept blocks is named by exactly `refcount` owner cells, chained from
//!    its header; every used cell names such a block.
//! 4. The statistics in [`HeapState`](crate::format::HeapState) match the walk.
//! 5. The journal is empty whenever the lock is free.
//! 6. Kept blocks (owned by the region, see [`Heap::keep`]) have reference count 0 and are
//!    counted in the header; the kept root is 0 or names one of them.

mod alloc;
mod cache;
mod check;

pub use cache::{Cache, CacheConfig, CacheStats};
mod freelist;
mod index;
mod inspect;
mod kept;
mod members;
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

pub use check::CheckReport;
pub(crate) use freelist::Placement;
pub use members::ReclaimReport;
pub(crate) use members::ReclaimStep;
pub(crate) use space::{align_up, Space};
use space::{heap_ranges, zero_words, Geometry};
pub use stats::{BlockInfo, HeapSnapshot, HeapStats, ProcessInfo, ProcessIter};
pub(crate) use txn::{HeapView, Txn};

use crate::error::{AttachError, Error};
use crate::format::{
    BlockHeader, Doorbell, RegionHeader, DEFAULT_ALIGN, END, FORMAT_VERSION, LAYOUT_FINGERPRINT,
    MAGIC, NO_OWNER, USED,
};
use crate::journal::{self, FaultInjector, Tx};
use crate::lock::{self, Acquired};
use crate::platform::Platform;
use crate::region::Region;

/// Options for formatting a region with [`Heap::init`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapConfig {
    /// Block alignment in bytes: a power of two from 8 to 4096. Payloads are aligned to
    /// it. Default 16.
    pub align: u32,
    /// Entries in the process table: how many processes may be registered at once, 1 to
    /// 255 ([`MAX_SLOTS`](crate::format::MAX_SLOTS); `init` refuses others with
    /// [`AttachError::BadConfig`]). Default 64.
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
    ResetMinFree = 13,
    Keep = 14,
    Take = 15,
    SetKeptRoot = 16,
}

/// The first operation code free for layers above the heap (see [`Heap::transact`]).
pub(crate) const FIRST_CLIENT_OP: u32 = 17;

/// A heap over a region, used by one process (which may use it from several threads).
///
/// Operations name the acting process by a [`Member`](crate::Member), obtained from
/// [`register`](Heap::register) and checked under the lock at every operation (a member
/// whose registration ended gets [`Error::StaleMember`]). A process normally registers
/// once; firmware, tests and simulators may register several members in one program.
///
/// `Heap` is `Send` and `Sync` when its platform is (the firmware platforms and the hosts'
/// are): the region's state is only touched through atomics under the region lock. With
/// a platform that is not `Sync`, neither is the heap (`tests/send_sync.rs` and
/// `tests/compile_fail/` pin both).
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
        if config.max_processes == 0 || u32::from(config.max_processes) > crate::format::MAX_SLOTS {
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
        // A word of the header that must hold what this build writes there.
        let expect = |word: &AtomicU32, expected: u32, err: fn(u32, u32) -> AttachError| {
            let found = word.load(Relaxed);
            match found == expected {
                true => Ok(()),
                false => Err(Error::from(err(found, expected))),
            }
        };
        expect(&hdr.version, FORMAT_VERSION, |found, expected| {
            AttachError::Version { found, expected }
        })?;
        expect(&hdr.fingerprint, LAYOUT_FINGERPRINT, |found, expected| {
            AttachError::Layout { found, expected }
        })?;
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
        self.platform.critical(|| {
            self.lock()?;
            let (r, end) = self.one_op(code, f, after);
            if end == OpEnd::Release {
                lock::release(self.space.hdr, &self.platform);
            }
            r
        })
    }

    /// Runs `f` with the region lock held across several operations, each journaled and
    /// committed on its own through [`Session::op`] (a cache's refill or drain: many
    /// blocks for one acquisition, without one journal having to hold them all).
    pub(crate) fn session<R>(
        &self,
        f: impl FnOnce(&mut Session<'_, 'm, P>) -> R,
    ) -> Result<R, Error> {
        self.platform.critical(|| {
            self.lock()?;
            let mut s = Session {
                heap: self,
                held: false,
            };
            let r = f(&mut s);
            if !s.held {
                lock::release(self.space.hdr, &self.platform);
            }
            Ok(r)
        })
    }

    /// One operation with the lock held: journaled, committed on success and undone on
    /// error. Says whether the lock is to be released, or kept as a process that died
    /// there would keep it (an injected crash, and only that: a live process that keeps
    /// the lock after a real error would stop every other process for good).
    fn one_op<R>(
        &self,
        code: u32,
        f: impl FnOnce(&mut Tx<'_, 'm>, &Space<'m>) -> Result<R, Error>,
        after: impl FnOnce(&R),
    ) -> (Result<R, Error>, OpEnd) {
        let mut tx = self.space.begin(code, &self.faults);
        let done = f(&mut tx, &self.space).and_then(|v| {
            // Blocks the operation replaced (owner arrays that moved), last.
            while let Some(b) = tx.take_retired() {
                self.space.free_block_at(&mut tx, b)?;
            }
            Ok(v)
        });
        match done {
            Ok(v) => {
                // An injected crash from here on "dies" holding the lock, leaving the
                // journal or the deferred store for the recoverer. A real error (a
                // deferred store `complete` refuses as corrupt, which it also drops) comes
                // after the commit: nothing is left to undo, and the lock is released.
                let (logged, deferred) = match tx.commit() {
                    Ok(c) => c,
                    Err(e) => return (Err(e), OpEnd::after(e)),
                };
                self.journal_high_water.fetch_max(logged, Relaxed);
                if let Some(store) = deferred {
                    let made = self
                        .faults
                        .step()
                        .and_then(|_| self.space.journal().complete(&self.space.region, store));
                    if let Err(e) = made {
                        return (Err(e), OpEnd::after(e));
                    }
                }
                after(&v);
                (Ok(v), OpEnd::Release)
            }
            Err(Error::InjectedCrash) => (Err(Error::InjectedCrash), OpEnd::Hold),
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
                (undone.and(Err(e)), OpEnd::Release)
            }
        }
    }

    /// Takes the region lock; if it was broken from a dead holder, or a journal is left
    /// over for any reason, undoes the unfinished operation before anything else, and
    /// rebuilds the derived state it may have left (see [`journal`]).
    fn lock(&self) -> Result<(), Error> {
        let hdr = self.space.hdr;
        let me = self.platform.current_process();
        if let Acquired::FromDead(_) = lock::acquire(hdr, &self.platform, me) {
            hdr.lock_breaks.fetch_add(1, Relaxed);
        }
        if hdr.journal.len.load(Acquire) != 0 {
            let also = self.space.journaled_header_words();
            if let Err(e) = journal::recover(&self.space.region, self.space.journal(), &also) {
                lock::release(hdr, &self.platform);
                return Err(e);
            }
        }
        // Derived state an unfinished (or undone) operation may have left behind.
        if hdr.derived_dirty.load(Acquire) != 0 {
            if let Err(e) = self.space.rebuild_derived() {
                lock::release(hdr, &self.platform);
                return Err(e);
            }
        }
        // A process that died after committing but before making its deferred store (a
        // sender, before publishing its entry): make it, and wake the receiver, which may
        // sleep on the doorbell for it.
        let journal = self.space.journal();
        if let Some(store) = journal.pending() {
            if let Err(e) = journal.complete(&self.space.region, store) {
                lock::release(hdr, &self.platform);
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
}

/// How [`Heap::one_op`] left the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpEnd {
    /// Finished (committed or undone): the lock may be released.
    Release,
    /// Stopped as a dying process would (an injected crash): the lock stays held, the
    /// journal or deferred store is left for whoever breaks it.
    Hold,
}

impl OpEnd {
    /// How an operation that failed with `e` after its commit leaves the lock.
    fn after(e: Error) -> Self {
        if e == Error::InjectedCrash {
            OpEnd::Hold
        } else {
            OpEnd::Release
        }
    }
}

/// The region lock held across several operations (see [`Heap::session`]).
pub(crate) struct Session<'h, 'm, P: Platform> {
    heap: &'h Heap<'m, P>,
    /// Set once an operation stopped as a dying process: the lock stays held and every
    /// later operation of the session fails the same way.
    held: bool,
}

impl<'m, P: Platform> Session<'_, 'm, P> {
    /// Runs `f` as one operation: journaled, committed on success, undone on error.
    pub(crate) fn op<R>(
        &mut self,
        code: OpCode,
        f: impl FnOnce(&mut Tx<'_, 'm>, &Space<'m>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        if self.held {
            return Err(Error::InjectedCrash);
        }
        let (r, end) = self.heap.one_op(code as u32, f, |_| {});
        self.held = end == OpEnd::Hold;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::DeferredStore;
    use crate::platform::SpinPlatform;

    #[repr(C, align(64))]
    struct Memory([u8; 1 << 16]);

    /// A real (not injected) error after the commit - a deferred store that `complete`
    /// refuses - releases the lock: a live process that kept it would stop every other
    /// process for good. The store is dropped, and the next operation runs.
    #[test]
    fn a_real_error_after_the_commit_releases_the_lock() {
        let mut memory = ::alloc::boxed::Box::new(Memory([0; 1 << 16]));
        let region = match Region::from_slice(&mut memory.0) {
            Ok(r) => r,
            Err(e) => panic!("region: {e}"),
        };
        let heap = match Heap::init(region, HeapConfig::default(), SpinPlatform::new(1)) {
            Ok(h) => h,
            Err(e) => panic!("init: {e}"),
        };
        // A store into the header, which `complete` refuses as corruption.
        let refused = DeferredStore {
            at: 4,
            expect: 0,
            value: 1,
            bell: 0,
        };
        let r = heap.op(OpCode::SetApp, |tx, _| tx.defer(refused));
        assert!(
            matches!(r, Err(Error::Corrupted(_))),
            "the refused store is reported: {r:?}"
        );
        assert_eq!(heap.space.hdr.lock.holder(), None, "the lock is released");
        assert!(
            heap.space.journal().pending().is_none(),
            "the store is dropped"
        );
        let next = heap.op(OpCode::SetApp, |_, _| Ok(()));
        assert_eq!(next, Ok(()), "the next operation takes the lock");
    }
}
