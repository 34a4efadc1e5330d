//! [`Instance`]: the runner's heap, the buffer it lives in, and the process caches over
//! it. The caches borrow the heap for as long as they live, so the heap sits in an
//! allocation of its own and this module alone hands out that borrow: the caches are
//! reached only through the methods here, and none outlives the heap.

use alloc::boxed::Box;
use alloc::collections::btree_map::Entry;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ptr::NonNull;

use crate::testkit::ops::Setup;
use crate::testkit::{AlignedBuf, TestPlatform};
use crate::{Cache, CacheConfig, Error, Heap, HeapConfig, Member, RawRange, Region};

/// A process cache over the runner's heap.
pub(super) type RunnerCache = Cache<'static, 'static, TestPlatform>;

/// A heap, the buffer it lives in, and one cache per model process that has used one.
/// Dropped in that order: the caches borrow the heap, the heap the buffer.
pub(super) struct Instance {
    /// Caches by process slot.
    caches: BTreeMap<u16, RunnerCache>,
    /// The heap, in an allocation of its own (`Box::leak`) so that the caches' borrows of
    /// it stay valid while the instance moves; freed in `Drop`.
    heap: NonNull<Heap<'static, TestPlatform>>,
    buf: AlignedBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        // The caches are forgotten, not dropped: dropping one drains it, heap operations
        // that may run while a failed step unwinds with a crash still armed (the drain
        // would then stop with the lock held, and the next one wait for it forever). A
        // cache owns no memory of its own; its blocks go with the heap.
        self.heap().faults().arm(0);
        for (_, c) in core::mem::take(&mut self.caches) {
            core::mem::forget(c);
        }
        // SAFETY: `heap` came from `Box::leak` in `new` and is freed only here; every
        // borrow of it is gone (the caches above; `heap()`'s end with `&self`).
        drop(unsafe { Box::from_raw(self.heap.as_ptr()) });
    }
}

/// The ranges of a run's region inside its buffer: range 0 at the start, others after
/// gaps that are not multiples of the alignment.
fn ranges(setup: &Setup, buf: &AlignedBuf) -> Vec<RawRange> {
    let s = setup.size;
    let base = buf.as_ptr();
    let cuts: &[(usize, usize)] = match setup.ranges {
        1 => &[(0, s)],
        2 => &[(0, s / 2), (s / 2 + 72, s)],
        _ => &[(0, s / 2), (s / 2 + 72, 3 * s / 4), (3 * s / 4 + 200, s)],
    };
    cuts.iter()
        .map(|&(a, b)| RawRange {
            // SAFETY: `a < s = buf.len()`, so the pointer stays inside the buffer.
            ptr: unsafe { base.add(a) },
            len: b - a,
        })
        .collect()
}

impl Instance {
    pub(super) fn region(setup: &Setup, buf: &AlignedBuf) -> Region<'static> {
        let rs = ranges(setup, buf);
        // SAFETY: the ranges lie inside `buf`, which the `Instance` owns and drops only
        // after the heap (field order), so they stay valid while any `Region` made here is
        // used; nothing else accesses the buffer while the heap exists.
        match unsafe { Region::from_raw_ranges(&rs) } {
            Ok(r) => r,
            Err(e) => panic!("region over test buffer: {e}"),
        }
    }

    fn new(heap: Heap<'static, TestPlatform>, buf: AlignedBuf) -> Self {
        Instance {
            caches: BTreeMap::new(),
            heap: NonNull::from(Box::leak(Box::new(heap))),
            buf,
        }
    }

    pub(super) fn init(setup: &Setup, platform: &TestPlatform) -> Self {
        let buf = AlignedBuf::new(setup.size);
        let config = HeapConfig {
            align: setup.align,
            max_processes: setup.max_processes,
        };
        let heap = match Heap::init(Self::region(setup, &buf), config, platform.clone()) {
            Ok(h) => h,
            Err(e) => panic!("init {setup:?}: {e}"),
        };
        Instance::new(heap, buf)
    }

    /// The heap.
    pub(super) fn heap(&self) -> &Heap<'static, TestPlatform> {
        // SAFETY: valid from `new` until `Drop` frees it; no `&mut` to it exists while
        // `self` lives.
        unsafe { self.heap.as_ref() }
    }

    /// The copy of this instance's bytes at another address, attached there. The caches
    /// must have been drained and removed ([`Self::drain_cache`]): any left are forgotten,
    /// and the blocks they held stay cached in the copy, where `verify` finds them.
    pub(super) fn relocate(self, setup: &Setup, platform: &TestPlatform) -> Self {
        let copy = AlignedBuf::copy_of(self.buf.bytes());
        drop(self);
        let heap = match Heap::attach(Self::region(setup, &copy), platform.clone()) {
            Ok(h) => h,
            Err(e) => panic!("attach after relocation: {e}"),
        };
        Instance::new(heap, copy)
    }

    /// The cache of the process in `slot`, made over `member` now if it has none.
    ///
    /// # Safety
    /// [`Heap::member_cache`]'s contract, for as long as the cache lives: no operation of
    /// `member` on a block runs while the cache acts on it, no block a co-owner may still
    /// give back is freed into it, and the cache is removed before `member` unregisters.
    pub(super) unsafe fn cache(
        &mut self,
        slot: u16,
        member: Member,
        config: CacheConfig,
    ) -> Result<&mut RunnerCache, Error> {
        match self.caches.entry(slot) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                // SAFETY: valid from `new` until `Drop`, which removes every cache (this
                // one lives only in `caches`) before it frees the heap; no `&mut` to the
                // heap is ever made.
                let heap: &'static Heap<'static, TestPlatform> = unsafe { &*self.heap.as_ptr() };
                // SAFETY: the caller's (see above).
                let cache = unsafe { heap.member_cache(member, config) }?;
                Ok(e.insert(cache))
            }
        }
    }

    /// The cache of the process in `slot`, if it has one.
    pub(super) fn existing_cache(&mut self, slot: u16) -> Option<&mut RunnerCache> {
        self.caches.get_mut(&slot)
    }

    /// Drains and removes the cache of the process in `slot`, if it has one.
    pub(super) fn drain_cache(&mut self, slot: u16) -> Result<(), Error> {
        match self.caches.remove(&slot) {
            Some(mut c) => c.drain(),
            None => Ok(()),
        }
    }

    /// Removes the cache of the process in `slot` without a word to the heap (the process
    /// died: its cache's memory is gone; reclaiming it frees the cached blocks).
    pub(super) fn forget_cache(&mut self, slot: u16) {
        if let Some(c) = self.caches.remove(&slot) {
            core::mem::forget(c);
        }
    }

    /// The slots of the processes with a cache.
    pub(super) fn cache_slots(&self) -> Vec<u16> {
        self.caches.keys().copied().collect()
    }

    /// Blocks each cache holds now, by slot (from the caches' own statistics).
    pub(super) fn cached_blocks(&self) -> BTreeMap<u16, u32> {
        self.caches
            .iter()
            .map(|(&s, c)| (s, c.stats().blocks))
            .collect()
    }
}
