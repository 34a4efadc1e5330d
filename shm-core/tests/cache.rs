//! Process caches (`Heap::cache`): blocks freed into a cache stay owned by it and are
//! counted by `check()`; hits take no lock and write no journal; raw operations refuse
//! cached blocks; the bounds hold; a drain request is honoured on the next operation; a
//! dropped cache gives everything back.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

mod common;

use core::sync::atomic::AtomicU32;
use core::time::Duration;
use std::collections::BTreeMap;

use common::Fixture;
use shm_core::testkit::{AlignedBuf, TestPlatform};
use shm_core::{
    CacheConfig, Error, Heap, HeapConfig, Offset, Platform, ProcessId, Processes, Region,
    WaitNotify, WaitOutcome,
};

const SMALL: CacheConfig = CacheConfig {
    max_bytes: 8 << 10,
    max_block: 1 << 10,
    refill_bytes: 1 << 10,
};

/// Blocks freed into the cache are handed out again without new heap allocations; they
/// stay owned by the cache's member, counted once, and `check()` reports them as cached.
#[test]
fn cached_blocks_stay_owned_and_are_counted() {
    let f = Fixture::new(4 << 20);
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    let blocks: Vec<Offset> = (0..20).map(|i| cache.alloc(40 + i * 13).unwrap()).collect();
    let owner = f.heap.owner_of(blocks[0]).unwrap().unwrap();
    let owned = f.heap.process(owner).unwrap().bytes;
    let allocs = f.heap.stats().unwrap().allocs;
    for &b in &blocks {
        cache.free(b).unwrap();
    }
    let s = cache.stats();
    assert!(s.blocks >= 20 && s.drains == 0, "{s:?}");
    let rep = f.heap.check().unwrap();
    assert_eq!(rep.cached_blocks, s.blocks);
    assert_eq!(rep.cached_bytes, u64::from(s.bytes));
    let mut cached = 0;
    f.heap
        .for_each_block(|b| {
            if b.cached {
                cached += 1;
                assert_eq!((b.refs, b.owner), (1, Some(owner)));
            }
        })
        .unwrap();
    assert_eq!(cached, s.blocks);
    assert_eq!(f.heap.ref_count(blocks[3]).unwrap(), 1);
    assert_eq!(
        f.heap.process(owner).unwrap().bytes,
        owned,
        "freeing into the cache keeps the blocks owned"
    );
    let again: Vec<Offset> = (0..20).map(|i| cache.alloc(40 + i * 13).unwrap()).collect();
    let mut a = again.clone();
    let mut b = blocks.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same blocks come back");
    assert_eq!(f.heap.stats().unwrap().allocs, allocs, "no heap allocation");
    assert_eq!(f.heap.check().unwrap().cached_blocks, cache.stats().blocks);
}

/// Nobody else can act on a cached block: raw frees, releases, gives and shares by another
/// member fail, a second free into the cache is a double free, and blocks the cache did
/// not hand out are refused. The heap stays consistent throughout.
#[test]
fn raw_operations_and_bad_frees_are_refused() {
    let f = Fixture::new(128 * 1024);
    let other = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let third = f.heap.register_as(ProcessId::from_pid(101)).unwrap();
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    let p = cache.alloc(64).unwrap();
    let live = cache.alloc(64).unwrap();
    cache.free(p).unwrap();
    assert_eq!(cache.free(p), Err(Error::DoubleFree { offset: p }));
    assert!(f.heap.free(other, p).is_err());
    assert!(f.heap.release(other, p).is_err());
    assert!(f.heap.give(other, p, third).is_err());
    assert!(f.heap.share(other, p, third).is_err());
    assert!(f.heap.free(other, live).is_err());
    let theirs = f.heap.try_alloc(other, 64).unwrap();
    assert!(matches!(
        cache.free(theirs),
        Err(Error::NotOwner { offset, .. }) if offset == theirs
    ));
    let shared = f.heap.try_alloc(other, 64).unwrap();
    f.heap.share(other, shared, third).unwrap();
    assert!(matches!(cache.free(shared), Err(Error::NotOwner { .. })));
    assert!(matches!(
        cache.free(Offset::new(p.get() + 4)),
        Err(Error::BadOffset { .. })
    ));
    f.heap.free(other, theirs).unwrap();
    assert_eq!(
        cache.free(theirs),
        Err(Error::DoubleFree { offset: theirs })
    );
    // The refused operations changed nothing: the cached block comes back intact.
    assert_eq!(cache.alloc(64).unwrap(), p);
    cache.free(live).unwrap();
    f.heap.check().unwrap();
}

/// A platform whose waits fail the test: an operation that finds the region lock held
/// (after its short spin) would wait, so any use of the lock while another process holds
/// it panics.
#[derive(Clone, Debug)]
struct NeverWait(TestPlatform);

impl Processes for NeverWait {
    fn current_process(&self) -> ProcessId {
        self.0.current_process()
    }
    fn is_alive(&self, id: ProcessId) -> bool {
        self.0.is_alive(id)
    }
}

impl WaitNotify for NeverWait {
    fn wait(&self, _: &AtomicU32, _: u32, _: Option<Duration>) -> WaitOutcome {
        panic!("waited for the region lock");
    }
    fn notify_all(&self, _: &AtomicU32) {}
}

impl Platform for NeverWait {}

/// A cache hit, allocating or freeing, takes no lock and writes no journal: with the
/// region lock held by another live process, hits complete; a miss waits for the lock
/// (which shows the test would catch a hit that took it).
#[test]
fn cache_hits_take_no_lock_and_write_no_journal() {
    let buf = AlignedBuf::new(128 * 1024);
    let platform = NeverWait(TestPlatform::new(1));
    // SAFETY: `buf` outlives `heap` (declared before it, dropped after).
    let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
    let heap = Heap::init(region, HeapConfig::default(), platform.clone()).unwrap();
    let holder = heap.register_as(ProcessId::from_pid(50)).unwrap();
    let mut cache = heap.cache(CacheConfig::default()).unwrap();
    let a = cache.alloc(100).unwrap();
    let b = cache.alloc(100).unwrap();
    cache.free(a).unwrap();
    // Another live process stops inside an operation, holding the lock.
    platform.0.set_pid(50);
    heap.faults().arm(1);
    assert_eq!(heap.try_alloc(holder, 10), Err(Error::InjectedCrash));
    platform.0.set_pid(1);
    heap.faults().arm(1);
    for _ in 0..100 {
        let x = cache.alloc(100).unwrap();
        cache.free(x).unwrap();
    }
    cache.free(b).unwrap();
    assert!(heap.faults().armed(), "a cache hit journaled a write");
    heap.faults().arm(0);
    let miss = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cache.alloc(5000)));
    assert!(miss.is_err(), "a refill takes the lock");
    std::mem::forget(cache);
}

/// The bounds hold after every free: the cache never holds more than `max_bytes`, and a
/// class never more than a quarter of it (at least one largest block); a free that does
/// not fit goes to the heap.
#[test]
fn bounds_hold_and_what_does_not_fit_goes_to_the_heap() {
    let f = Fixture::new(512 * 1024);
    let mut cache = f.heap.cache(SMALL).unwrap();
    let n = if cfg!(miri) { 100 } else { 300 };
    let blocks: Vec<Offset> = (0..n)
        .map(|i| cache.alloc(16 + (i % 7) * 90).unwrap())
        .collect();
    for &b in &blocks {
        cache.free(b).unwrap();
        assert!(
            cache.stats().bytes <= SMALL.max_bytes,
            "{:?}",
            cache.stats()
        );
    }
    let mut per_size: BTreeMap<u32, u32> = BTreeMap::new();
    f.heap
        .for_each_block(|b| {
            if b.cached {
                *per_size.entry(b.size).or_default() += b.size;
            }
        })
        .unwrap();
    for (size, bytes) in per_size {
        assert!(
            bytes <= (SMALL.max_bytes / 4).max(SMALL.max_block),
            "{bytes} cached bytes of {size}-byte blocks"
        );
    }
    assert!(cache.stats().passed > 0, "{:?}", cache.stats());
    f.heap.check().unwrap();
}

/// An allocation that finds too little memory asks every cache to give its blocks back;
/// a cache honours it on its next operation, and the allocation then succeeds.
#[test]
fn a_drain_request_is_honoured_on_the_next_operation() {
    let f = Fixture::new(96 * 1024);
    let other = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    let mine: Vec<Offset> = (0..40).map(|_| cache.alloc(200).unwrap()).collect();
    for &b in &mine {
        cache.free(b).unwrap();
    }
    let cached = cache.stats().bytes;
    assert!(cached > 4096, "{:?}", cache.stats());
    let mut theirs = Vec::new();
    while let Ok(b) = f.heap.try_alloc(other, 1000) {
        theirs.push(b);
    }
    assert!(matches!(
        f.heap.try_alloc(other, 1000),
        Err(Error::OutOfMemory { .. })
    ));
    assert_eq!(
        cache.stats().bytes,
        cached,
        "nothing drained before an operation"
    );
    let small = cache.alloc(16).unwrap();
    assert!(
        cache.stats().bytes < cached,
        "the cache gave its blocks back: {:?}",
        cache.stats()
    );
    f.heap.try_alloc(other, 1000).unwrap();
    cache.free(small).unwrap();
    f.heap.check().unwrap();
}

/// An allocator blocked in `Heap::alloc` on a full heap whose free room sits in a cache
/// gets it: the cache gives its blocks back on its next operation, and the frees wake the
/// allocator.
#[test]
fn a_blocked_allocator_gets_the_memory_a_cache_gives_back() {
    let f = Fixture::new(96 * 1024);
    let other = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    let mine: Vec<Offset> = (0..40).map(|_| cache.alloc(200).unwrap()).collect();
    cache.drain().unwrap(); // the refill's spare blocks
    while f.heap.try_alloc(other, 64).is_ok() {}
    for &b in &mine {
        cache.free(b).unwrap();
    }
    assert!(f.heap.stats().unwrap().largest_alloc < 1000);
    let hdr: &shm_core::format::RegionHeader = f.heap.region().get(0).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| f.heap.alloc(other, 1000));
        while hdr.waiters.load(core::sync::atomic::Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let drains = cache.stats().drains;
        let small = cache.alloc(16).unwrap();
        let honoured = cache.stats().drains > drains;
        if !honoured {
            cache.drain().unwrap(); // let the waiter finish, then fail below
        }
        let got = waiter.join().unwrap();
        assert!(honoured, "the cache's next operation gave its blocks back");
        assert!(got.is_ok(), "{got:?}");
        cache.free(small).unwrap();
    });
    f.heap.check().unwrap();
}

/// A refill that finds no memory gives back what the cache holds in other classes and
/// tries again: with the heap full and the only room in this cache's own small blocks,
/// a large allocation succeeds through a drain.
#[test]
fn a_refill_that_finds_no_memory_drains_this_cache_first() {
    let f = Fixture::new(if cfg!(miri) { 32 * 1024 } else { 64 * 1024 });
    let other = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    let mut small = Vec::new();
    while let Ok(b) = cache.alloc(48) {
        small.push(b);
    }
    // Fill what is left (the last refill's spare blocks come back on the next cache
    // operation, asked for by the failed allocation) with blocks nobody frees.
    cache.drain().unwrap();
    while f.heap.try_alloc(other, 16).is_ok() {}
    // Cache the most recent blocks (neighbours), as many as its bound holds.
    let bound = f.heap.stats().unwrap().heap_bytes / 8;
    let n = (bound / 64).saturating_sub(2) as usize;
    for &b in small.iter().rev().take(n) {
        cache.free(b).unwrap();
    }
    assert_eq!(cache.stats().blocks as usize, n, "{:?}", cache.stats());
    assert!(f.heap.stats().unwrap().largest_alloc < 2000);
    let drains = cache.stats().drains;
    let b = cache.alloc(2000).unwrap();
    assert!(cache.stats().drains > drains, "{:?}", cache.stats());
    cache.free(b).unwrap();
    f.heap.check().unwrap();
}

/// Dropping a cache unregisters it: every block, cached or handed out, goes back, and the
/// heap's free bytes return to what they were before it.
#[test]
fn dropping_a_cache_gives_everything_back() {
    let f = Fixture::new(256 * 1024);
    let before = f.heap.stats().unwrap().free_bytes;
    {
        let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
        let kept: Vec<Offset> = (0..50).map(|i| cache.alloc(30 + i * 40).unwrap()).collect();
        for &b in kept.iter().step_by(2) {
            cache.free(b).unwrap();
        }
        assert!(f.heap.check().unwrap().cached_blocks > 0);
    }
    let rep = f.heap.check().unwrap();
    assert_eq!((rep.cached_blocks, rep.processes), (0, 0));
    assert_eq!(f.heap.stats().unwrap().free_bytes, before);
}

/// A bad configuration is refused with a typed error.
#[test]
fn bad_configurations_are_refused() {
    let f = Fixture::new(64 * 1024);
    for config in [
        CacheConfig {
            max_block: 8,
            ..CacheConfig::default()
        },
        CacheConfig {
            max_bytes: 100,
            max_block: 1000,
            ..CacheConfig::default()
        },
    ] {
        assert!(matches!(
            f.heap.cache(config),
            Err(Error::InvalidSize { .. })
        ));
    }
    assert_eq!(f.heap.check().unwrap().processes, 0);
}

/// Random allocations and frees through a cache, small and above its largest class:
/// live blocks never overlap and hold what was written, `check()` holds throughout, and a
/// drain leaves nothing cached.
#[test]
fn random_churn_keeps_blocks_apart_and_the_heap_consistent() {
    let f = Fixture::new(1 << 20);
    let before = f.heap.stats().unwrap().free_bytes;
    let mut cache = f.heap.cache(SMALL).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut live: BTreeMap<u32, (u32, u8)> = BTreeMap::new();
    let rounds = if cfg!(miri) { 300 } else { 20_000 };
    for i in 0..rounds {
        if live.is_empty() || next(100) < 55 {
            let size = if next(10) == 0 {
                1 + next(3000)
            } else {
                1 + next(300)
            } as u32;
            let p = match cache.alloc(size) {
                Ok(p) => p,
                Err(Error::OutOfMemory { .. }) => continue,
                Err(e) => panic!("alloc {size}: {e}"),
            };
            let (ptr, len) = f.heap.payload(p).unwrap();
            assert!(len >= size);
            let fill = (i % 251) as u8;
            // SAFETY: the payload is `len` bytes of a block this cache just handed out.
            unsafe { core::ptr::write_bytes(ptr.as_ptr(), fill, size as usize) };
            if let Some((&q, &(qs, _))) = live.range(..p.get()).next_back() {
                assert!(q + qs <= p.get(), "{q}+{qs} overlaps {p}");
            }
            if let Some((&q, _)) = live.range(p.get()..).next() {
                assert!(p.get() + size <= q, "{p}+{size} overlaps {q}");
            }
            live.insert(p.get(), (size, fill));
        } else {
            let k = *live.keys().nth(next(live.len() as u64) as usize).unwrap();
            let (size, fill) = live.remove(&k).unwrap();
            let (ptr, _) = f.heap.payload(Offset::new(k)).unwrap();
            // SAFETY: `size` bytes of a live block of this cache, written above.
            let bytes = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), size as usize) };
            assert!(
                bytes.iter().all(|&b| b == fill),
                "block {k} was overwritten"
            );
            cache.free(Offset::new(k)).unwrap();
        }
        if i % 512 == 0 {
            assert_eq!(f.heap.check().unwrap().cached_blocks, cache.stats().blocks);
        }
    }
    for &k in live.keys() {
        cache.free(Offset::new(k)).unwrap();
    }
    cache.drain().unwrap();
    assert_eq!(cache.stats().blocks, 0);
    assert_eq!(f.heap.check().unwrap().cached_blocks, 0);
    drop(cache);
    assert_eq!(f.heap.stats().unwrap().free_bytes, before);
}

/// A class's block is up to a quarter larger than the request: when the heap has room for
/// the request but not for the class's block, the allocation still succeeds (from the heap
/// directly), and a request that cannot fit reports its own size.
#[test]
fn a_request_that_fits_the_heap_but_not_its_class_block_succeeds() {
    let f = Fixture::new(64 * 1024);
    let other = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    f.heap.reserve_cells(other, 4096).unwrap();
    let hole = f.heap.try_alloc(other, 950).unwrap();
    while f.heap.try_alloc(other, 16).is_ok() {}
    f.heap.free(other, hole).unwrap();
    let largest = f.heap.stats().unwrap().largest_alloc;
    assert!(
        (940..1008).contains(&largest),
        "room for the request, not for a 1 KiB class block: {largest}"
    );
    let b = cache.alloc(940).unwrap();
    assert_eq!(f.heap.check().unwrap().cached_blocks, 0);
    assert_eq!(
        cache.alloc(2000),
        Err(Error::OutOfMemory { requested: 2000 })
    );
    cache.free(b).unwrap();
    f.heap.check().unwrap();
}

/// Blocks above `max_block` are never cached, in either direction.
#[test]
fn blocks_above_max_block_go_to_the_heap() {
    let f = Fixture::new(1 << 20);
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    for size in [33 * 1024, 36 * 1000, 40_000] {
        let b = cache.alloc(size).unwrap();
        cache.free(b).unwrap();
    }
    let s = cache.stats();
    assert_eq!((s.blocks, s.passed), (0, 6), "{s:?}");
    assert_eq!(f.heap.check().unwrap().cached_blocks, 0);
}

/// A drain gives back blocks of several classes under one lock acquisition (up to 64
/// blocks per acquisition), and an allocation that needed a refill is not counted as a
/// hit.
#[test]
fn a_drain_takes_the_lock_once_per_64_blocks_across_classes() {
    let f = Fixture::new(1 << 20);
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    let blocks: Vec<Offset> = [40u32, 100, 200, 400, 800]
        .iter()
        .flat_map(|&size| (0..10).map(move |_| size))
        .map(|size| cache.alloc(size).unwrap())
        .collect();
    let s = cache.stats();
    assert_eq!(s.hits, 50 - s.refills, "{s:?}");
    cache.drain().unwrap(); // the refills' spare blocks
    for &b in &blocks {
        cache.free(b).unwrap();
    }
    assert_eq!(cache.stats().blocks, 50);
    let drains = cache.stats().drains;
    cache.drain().unwrap();
    assert_eq!(cache.stats().drains, drains + 1, "{:?}", cache.stats());
    assert_eq!(f.heap.check().unwrap().cached_blocks, 0);
}

/// `Cache::reserve_cells` grows the cache's own owner array up front.
#[test]
fn a_cache_can_reserve_owner_cells() {
    let f = Fixture::new(1 << 20);
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    let b = cache.alloc(16).unwrap();
    let slot = f.heap.owner_of(b).unwrap().unwrap();
    assert!(cache.reserve_cells(1000).unwrap() >= 1000);
    assert!(f.heap.process(slot).unwrap().cell_capacity >= 1000);
    cache.free(b).unwrap();
    f.heap.check().unwrap();
}

/// A cached block's list link lives in its payload, where another process could write:
/// a link pointing at a header forged inside a live block (this cache's slot, count 0,
/// the right size) is refused, because no owner cell of the cache names it. The list is
/// dropped with an error; nothing is handed out twice.
#[test]
fn a_forged_list_link_is_refused() {
    use core::sync::atomic::Ordering::Relaxed;
    use shm_core::format::BlockHeader;
    let f = Fixture::new(256 * 1024);
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    let a = cache.alloc(100).unwrap();
    let host = cache.alloc(1000).unwrap();
    cache.drain().unwrap();
    cache.free(a).unwrap();
    assert_eq!(cache.stats().blocks, 1);
    let region = f.heap.region();
    let real: &BlockHeader = region.get(a.get() - 16).unwrap();
    // A fake block inside `host`'s payload, a copy of `a`'s header.
    let fake = host.get() + 256;
    let forged: &BlockHeader = region.get(fake - 16).unwrap();
    forged
        .size_flags
        .store(real.size_flags.load(Relaxed), Relaxed);
    forged.link.store(0, Relaxed);
    forged.owner.store(real.owner.load(Relaxed), Relaxed);
    // `a`'s list link now names the fake block, as if a second block were cached.
    let link: &AtomicU32 = region.get(a.get()).unwrap();
    link.store(fake, Relaxed);
    // Hand `a` out (it is genuine), then free it and one more so the list is `a` -> fake.
    assert_eq!(cache.alloc(100).unwrap(), a);
    let other = cache.alloc(100).unwrap();
    cache.free(other).unwrap();
    cache.free(a).unwrap();
    link.store(fake, Relaxed);
    assert_eq!(cache.alloc(100).unwrap(), a);
    assert!(matches!(cache.alloc(100), Err(Error::Corrupted(_))));
    cache.free(a).unwrap();
    f.heap.check().unwrap();
}

/// A refill that finds no free block for its whole batch carves what one free block holds:
/// here the only free blocks are holes of 400 bytes, three 128-byte class blocks and 16
/// bytes too few for a block of their own, so each run is three blocks and the last
/// absorbs the 16 bytes, and the refill goes on from hole to hole until its batch is full
/// or the holes are used up. Every block is handed out once, and `check()` holds.
#[test]
fn a_refill_carves_what_one_free_block_holds() {
    const HOLE: u32 = 400;
    const CLASS: u32 = 128; // the class of a 100-byte request with 16-byte headers
    let f = Fixture::new(64 << 10);
    let other = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    // Room for the owner cells first: the full heap below leaves none to grow them.
    cache.reserve_cells(64).unwrap();
    let holes: Vec<u32> = (0..4)
        .map(|_| {
            let hole = f.heap.try_alloc(other, HOLE - 16).unwrap();
            f.heap.try_alloc(other, 48).unwrap(); // keeps the holes apart
            hole.get() - 16
        })
        .collect();
    // The rest taken, largest blocks first (few of them: the owner array must not grow).
    f.heap.reserve_cells(other, 256).unwrap();
    for size in [4096, 1024, 256, 64, 16] {
        while f.heap.try_alloc(other, size).is_ok() {}
    }
    assert!(
        f.heap.stats().unwrap().largest_free_block < 32,
        "no room but the holes"
    );
    for &h in &holes {
        f.heap.free(other, Offset::new(h + 16)).unwrap();
    }
    f.heap.check().unwrap();

    let mut got = Vec::new();
    for _ in 0..holes.len() * 3 {
        got.push(cache.alloc(100).unwrap());
        f.heap.check().unwrap();
    }
    assert_eq!(cache.stats().refills, 1, "one refill, a run from each hole");
    let last = cache.alloc(100);
    assert!(matches!(last, Err(Error::OutOfMemory { .. })), "{last:?}");
    let mut sorted = got.iter().map(|p| p.get()).collect::<Vec<_>>();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "no block handed out twice");
    let mut sizes: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    f.heap
        .for_each_block(|b| {
            if let Some(&h) = holes.iter().find(|&&h| (h..h + HOLE).contains(&b.offset)) {
                assert!(b.used && !b.cached, "{b:?}");
                sizes.entry(h).or_default().push(b.size);
            }
        })
        .unwrap();
    for h in &holes {
        assert_eq!(sizes[h], [CLASS, CLASS, HOLE - 2 * CLASS], "hole at {h}");
    }
    drop(cache);
    f.heap.check().unwrap();
}

/// A refill on a nearly full heap uses the owner cells its member has, without growing
/// the array to room for a whole run: here the only free block is a 480-byte hole, which
/// an owner array grown for a run of 32 would take, leaving nothing to carve from. The
/// member's 16 initial cells are all free, so the run is the three blocks the hole holds.
#[test]
fn a_refill_on_a_nearly_full_heap_does_not_grow_the_owner_array_for_a_whole_run() {
    let f = Fixture::new(64 << 10);
    let other = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let mut cache = f.heap.cache(CacheConfig::default()).unwrap();
    let hole = f.heap.try_alloc(other, 480 - 16).unwrap();
    f.heap.reserve_cells(other, 256).unwrap();
    for size in [4096, 1024, 256, 64, 16] {
        while f.heap.try_alloc(other, size).is_ok() {}
    }
    f.heap.free(other, hole).unwrap();
    let member = |heap: &Heap<'static, TestPlatform>| {
        let mut found = None;
        for p in heap.processes().unwrap() {
            let p = p.unwrap();
            if p.id != ProcessId::from_pid(100) {
                found = Some(p);
            }
        }
        found.unwrap()
    };
    let cells = member(&f.heap).cell_capacity;
    let got: Vec<Offset> = (0..3).map(|_| cache.alloc(100).unwrap()).collect();
    assert_eq!(cache.stats().refills, 1);
    assert_eq!(
        member(&f.heap).cell_capacity,
        cells,
        "the array did not grow"
    );
    assert!(got
        .iter()
        .all(|p| (hole.get()..hole.get() + 480).contains(&p.get())));
    f.heap.check().unwrap();
}
