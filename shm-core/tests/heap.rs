//! Allocator behaviour: each test states the invariant it checks.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

mod common;

use common::Fixture;
use shm_core::testkit::{AlignedBuf, TestPlatform};
use shm_core::{
    AttachError, CorruptionKind, Error, Heap, HeapConfig, Incarnation, Member, Offset, ProcSlot,
    ProcessId, RawRange, Region, SpinPlatform,
};

fn two_processes(f: &Fixture) -> (Member, Member) {
    let a = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let b = f.heap.register_as(ProcessId::from_pid(101)).unwrap();
    (a, b)
}

/// A freshly formatted heap passes `check` and holds one free block per range.
#[test]
fn init_gives_a_consistent_empty_heap() {
    let f = Fixture::new(64 * 1024);
    let rep = f.heap.check().unwrap();
    assert_eq!(rep.free_blocks, 1);
    assert_eq!(rep.processes, 0);
    let s = f.heap.stats().unwrap();
    assert_eq!(s.free_blocks, 1);
    assert_eq!(s.largest_free_block, s.free_bytes);
    assert_eq!(s.min_ever_free_bytes, s.free_bytes);
}

/// User blocks come first fit from the low end, in address order; service blocks from the
/// high end, above every user block.
#[test]
fn user_blocks_low_service_blocks_high() {
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let x = f.heap.try_alloc(a, 100).unwrap();
    let y = f.heap.try_alloc(a, 100).unwrap();
    let s = f.heap.try_alloc_service(a, 100).unwrap();
    assert!(x < y, "first fit takes the lowest free block");
    assert!(s > y, "service data comes from the high end");
    // Free x: the next small request reuses that hole (first fit).
    f.heap.free(a, x).unwrap();
    let z = f.heap.try_alloc(a, 50).unwrap();
    assert_eq!(z, x);
    f.heap.check().unwrap();
}

/// A block is split only when the rest can hold a minimum block; freeing merges with both
/// neighbours, so alternating frees end in a single free block again.
#[test]
fn split_and_coalesce_with_both_neighbours() {
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let before = f.heap.stats().unwrap();
    let blocks: Vec<Offset> = (0..8).map(|_| f.heap.try_alloc(a, 200).unwrap()).collect();
    assert_eq!(f.heap.stats().unwrap().free_blocks, before.free_blocks);
    for b in blocks.iter().step_by(2) {
        f.heap.free(a, *b).unwrap();
    }
    assert_eq!(f.heap.stats().unwrap().free_blocks, before.free_blocks + 4);
    for b in blocks.iter().skip(1).step_by(2) {
        f.heap.free(a, *b).unwrap();
        f.heap.check().unwrap();
    }
    let after = f.heap.stats().unwrap();
    assert_eq!(after.free_blocks, before.free_blocks);
    assert_eq!(after.free_bytes, before.free_bytes);
    assert!(after.min_ever_free_bytes < after.free_bytes);
    assert_eq!((after.allocs, after.frees), (8, 8));
}

/// Resetting the low-water mark (FreeRTOS `xPortResetHeapMinimumEverFreeHeapSize`) restarts
/// it from the current free bytes; later allocations lower it again, frees do not raise it.
#[test]
fn reset_min_ever_free_restarts_the_low_water_mark() {
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let x = f.heap.try_alloc(a, 4000).unwrap();
    f.heap.free(a, x).unwrap();
    let s = f.heap.stats().unwrap();
    assert!(s.min_ever_free_bytes < s.free_bytes);
    f.heap.reset_min_ever_free().unwrap();
    let s = f.heap.stats().unwrap();
    assert_eq!(s.min_ever_free_bytes, s.free_bytes);
    let y = f.heap.try_alloc(a, 100).unwrap();
    let low = f.heap.stats().unwrap().free_bytes;
    f.heap.free(a, y).unwrap();
    let s = f.heap.stats().unwrap();
    assert_eq!(s.min_ever_free_bytes, low);
    assert!(low < s.free_bytes);
    f.heap.check().unwrap();
}

/// A remainder smaller than a minimum block is not split off: the allocation absorbs it.
#[test]
fn small_remainder_is_absorbed() {
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let hs = f.heap.block_header_size();
    let x = f.heap.try_alloc(a, 256).unwrap();
    let _guard = f.heap.try_alloc(a, 16).unwrap();
    f.heap.free(a, x).unwrap();
    // The hole holds 256 + header bytes; asking a little less leaves under a minimum block.
    let y = f.heap.try_alloc(a, 256 - hs).unwrap();
    assert_eq!(y, x);
    assert_eq!(f.heap.block_len(y).unwrap(), 256);
    f.heap.check().unwrap();
}

/// `free` needs the sole owner; errors are typed and change nothing.
#[test]
fn free_errors_are_typed_and_harmless() {
    let f = Fixture::new(64 * 1024);
    let (a, b) = two_processes(&f);
    let x = f.heap.try_alloc(a, 64).unwrap();
    assert_eq!(
        f.heap.free(b, x),
        Err(Error::NotOwner {
            offset: x,
            process: b.slot()
        })
    );
    let bogus = Offset::new(x.get() + 16);
    assert!(matches!(
        f.heap.free(a, bogus),
        Err(Error::BadOffset { .. }) | Err(Error::DoubleFree { .. })
    ));
    assert!(matches!(
        f.heap.free(a, Offset::new(u32::MAX)),
        Err(Error::BadOffset { .. })
    ));
    f.heap.free(a, x).unwrap();
    assert_eq!(f.heap.free(a, x), Err(Error::DoubleFree { offset: x }));
    assert_eq!(
        f.heap.try_alloc(a, 0),
        Err(Error::InvalidSize { requested: 0 })
    );
    assert!(matches!(
        f.heap.try_alloc(a, 1 << 30),
        Err(Error::TooLarge { .. })
    ));
    let nobody = Incarnation {
        slot: ProcSlot(40),
        serial: 0,
    };
    assert_eq!(
        f.heap.try_alloc(Member::forged_for_tests(nobody), 8),
        Err(Error::StaleMember { process: nobody })
    );
    f.heap.check().unwrap();
}

/// Ownership moves with `give`; `share` adds co-owners; the block lives until its last
/// owner releases it.
#[test]
fn give_share_release() {
    let f = Fixture::new(64 * 1024);
    let (a, b) = two_processes(&f);
    let c = f.heap.register_as(ProcessId::from_pid(102)).unwrap();
    let x = f.heap.try_alloc(a, 64).unwrap();
    f.heap.give(a, x, b).unwrap();
    assert_eq!(f.heap.owner_of(x).unwrap(), Some(b.slot()));
    assert!(matches!(f.heap.free(a, x), Err(Error::NotOwner { .. })));
    f.heap.share(b, x, c).unwrap();
    assert_eq!(f.heap.ref_count(x).unwrap(), 2);
    assert_eq!(f.heap.free(b, x), Err(Error::Shared { offset: x }));
    assert!(matches!(
        f.heap.share(b, x, c),
        Err(Error::AlreadyOwner { .. })
    ));
    f.heap.check().unwrap();
    assert_eq!(f.heap.release(b, x), Ok(false));
    assert_eq!(f.heap.ref_count(x).unwrap(), 1);
    assert_eq!(f.heap.release(c, x), Ok(true));
    assert_eq!(f.heap.release(c, x), Err(Error::DoubleFree { offset: x }));
    f.heap.check().unwrap();
}

/// Reclaiming a process frees what it owned alone, drops its share of shared blocks (which
/// stay alive for the others) and frees its record: free bytes return to the baseline.
#[test]
fn reclaim_returns_everything_and_keeps_shared_blocks() {
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let baseline = f.heap.stats().unwrap().free_bytes;
    let d = f.heap.register_as(ProcessId::from_pid(103)).unwrap();
    let owned: Vec<Offset> = (0..40).map(|_| f.heap.try_alloc(d, 100).unwrap()).collect();
    let shared = f.heap.try_alloc(d, 100).unwrap();
    f.heap.share(d, shared, a).unwrap();
    f.heap.reserve(d, 500).unwrap();
    assert_eq!(
        f.heap.reclaim(d.incarnation()),
        Err(Error::StillAlive {
            process: d.incarnation()
        }),
        "a process not known dead keeps its memory"
    );
    f.platform.kill(103);
    let rep = f.heap.reclaim(d.incarnation()).unwrap();
    assert_eq!(rep.references, 42);
    assert_eq!(rep.blocks_freed, 41);
    assert_eq!(f.heap.ref_count(shared).unwrap(), 1);
    assert_eq!(f.heap.owner_of(shared).unwrap(), Some(a.slot()));
    assert!(
        f.heap.free(d, owned[0]).is_err(),
        "a reclaimed process owns nothing"
    );
    f.heap.free(a, shared).unwrap();
    assert_eq!(f.heap.stats().unwrap().free_bytes, baseline);
    f.heap.check().unwrap();
}

/// A process whose platform says it died is reclaimed by `reclaim_dead`.
#[test]
fn reclaim_dead_uses_liveness() {
    let f = Fixture::new(64 * 1024);
    let (a, b) = two_processes(&f);
    f.heap.try_alloc(a, 10).unwrap();
    f.heap.try_alloc(b, 10).unwrap();
    f.platform.kill(101);
    assert_eq!(f.heap.reclaim_dead().unwrap(), 1);
    assert!(f.heap.process(b.slot()).is_err());
    assert!(f.heap.process(a.slot()).is_ok());
    f.heap.check().unwrap();
}

/// The owner array starts small and moves to a larger service block when full; block
/// headers keep naming the right cells.
#[test]
fn owner_array_grows() {
    let f = Fixture::new(256 * 1024);
    let (a, b) = two_processes(&f);
    let blocks: Vec<Offset> = (0..100).map(|_| f.heap.try_alloc(a, 32).unwrap()).collect();
    assert!(f.heap.process(a.slot()).unwrap().cell_capacity >= 100);
    f.heap.check().unwrap();
    for x in &blocks[..50] {
        f.heap.give(a, *x, b).unwrap();
    }
    f.heap.check().unwrap();
    for x in &blocks[..50] {
        f.heap.free(b, *x).unwrap();
    }
    for x in &blocks[50..] {
        f.heap.free(a, *x).unwrap();
    }
    f.heap.check().unwrap();
}

/// One process can own more than 65,536 blocks at once (the owner reference's cell index
/// is 24 bits): its owner array grows past 2^16 cells, every block is freed again, and the
/// heap checks out before and after. Under miri a hundred blocks stand in (the
/// crossing itself is too slow there).
#[test]
fn a_process_owns_more_than_65536_blocks() {
    let count: usize = if cfg!(miri) { 100 } else { 70_000 };
    let f = Fixture::new(8 << 20);
    let (a, _) = two_processes(&f);
    let blocks: Vec<Offset> = (0..count)
        .map(|i| {
            f.heap
                .try_alloc(a, 16)
                .unwrap_or_else(|e| panic!("allocation {i}: {e}"))
        })
        .collect();
    let info = f.heap.process(a.slot()).unwrap();
    assert_eq!(info.blocks as usize, count);
    assert!(info.cell_capacity as usize >= count);
    f.heap.check().unwrap();
    for x in blocks {
        f.heap.free(a, x).unwrap();
    }
    assert_eq!(f.heap.process(a.slot()).unwrap().blocks, 0);
    f.heap.check().unwrap();
}

/// A process table holds at most 255 processes (an owner reference keeps 8 bits of
/// slot): `init` refuses more with `BadConfig`, and takes exactly 255.
#[test]
fn process_table_holds_at_most_255() {
    for (max_processes, ok) in [(255u16, true), (256, false), (u16::MAX, false), (0, false)] {
        let buf = AlignedBuf::new(64 * 1024);
        // SAFETY: `buf` outlives the region and the heap, both dropped in this iteration.
        let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
        let config = HeapConfig {
            align: 16,
            max_processes,
        };
        match Heap::init(region, config, TestPlatform::new(1)) {
            Ok(heap) => {
                assert!(ok, "{max_processes} processes accepted");
                heap.check().unwrap();
            }
            Err(e) => {
                assert!(!ok, "{max_processes} processes refused: {e}");
                assert_eq!(e, Error::Attach(AttachError::BadConfig));
            }
        }
    }
}

/// `alloc_at` takes exactly the asked offset when it is free, and refuses when any part of
/// it is used or a header would not fit in front.
#[test]
fn alloc_at_takes_exact_offsets() {
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let hs = f.heap.block_header_size();
    let x = f.heap.try_alloc(a, 100).unwrap();
    let want = Offset::new(x.get() + 4096);
    assert_eq!(f.heap.alloc_at(a, want, 64), Ok(want));
    assert_eq!(
        f.heap.alloc_at(a, want, 64),
        Err(Error::Unavailable { offset: want })
    );
    assert!(matches!(
        f.heap.alloc_at(a, Offset::new(x.get() + hs), 16),
        Err(Error::Unavailable { .. })
    ));
    // Right behind x, the gap in front would be smaller than a minimum block.
    let after_x = Offset::new(x.get() + f.heap.block_len(x).unwrap() + 2 * hs);
    assert!(matches!(
        f.heap.alloc_at(a, after_x, 16),
        Err(Error::Unavailable { .. })
    ));
    f.heap.check().unwrap();
    f.heap.free(a, want).unwrap();
    f.heap.check().unwrap();
}

/// A reserve serves allocations even when the heap is otherwise full. (Cutting a reserve
/// in two needs a free owner cell; on a full heap the owner array cannot grow, so the
/// process sizes it up front, as the `reserve_cells` documentation says.)
#[test]
fn reserve_works_on_a_full_heap() {
    let f = Fixture::new(48 * 1024);
    let (a, _) = two_processes(&f);
    f.heap.reserve_cells(a, 1024).unwrap();
    let r = f.heap.reserve(a, 1024).unwrap();
    // Fill the rest of the heap.
    while f.heap.try_alloc(a, 64).is_ok() {}
    while f.heap.try_alloc(a, 16).is_ok() {}
    assert!(matches!(
        f.heap.try_alloc(a, 100),
        Err(Error::OutOfMemory { .. })
    ));
    let x = f.heap.alloc_from_reserve(a, 100).unwrap();
    assert_eq!(x, r, "the block is cut from the front of the reserve");
    let y = f.heap.alloc_from_reserve(a, 100).unwrap();
    assert!(y > x);
    assert!(matches!(
        f.heap.alloc_from_reserve(a, 4096),
        Err(Error::ReserveTooSmall { .. })
    ));
    f.heap.check().unwrap();
}

/// A size no block can hold (zero, or one whose block length overflows) is
/// `InvalidSize` from `alloc_from_reserve`, with or without a reserve, and the reserve is
/// untouched.
#[test]
fn alloc_from_reserve_refuses_impossible_sizes_with_or_without_a_reserve() {
    let f = Fixture::new(48 * 1024);
    let (a, _) = two_processes(&f);
    for size in [0, u32::MAX, u32::MAX - 7] {
        assert!(
            matches!(
                f.heap.alloc_from_reserve(a, size),
                Err(Error::InvalidSize { .. })
            ),
            "no reserve, size {size}"
        );
    }
    let r = f.heap.reserve(a, 1024).unwrap();
    for size in [0, u32::MAX, u32::MAX - 7] {
        assert!(
            matches!(
                f.heap.alloc_from_reserve(a, size),
                Err(Error::InvalidSize { .. })
            ),
            "with a reserve, size {size}"
        );
        assert_eq!(f.heap.process(a.slot()).unwrap().reserve, r.get());
    }
    assert!(
        matches!(
            f.heap.alloc_from_reserve(a, 4096),
            Err(Error::ReserveTooSmall { .. })
        ),
        "a valid size larger than the reserve is still ReserveTooSmall"
    );
    assert_eq!(f.heap.alloc_from_reserve(a, 100).unwrap(), r);
    f.heap.check().unwrap();
}

/// The same bytes work at another address: copy the region, attach, carry on.
#[test]
fn region_is_position_independent() {
    let f = Fixture::new(64 * 1024);
    let (a, b) = two_processes(&f);
    let x = f.heap.try_alloc(a, 100).unwrap();
    f.heap.share(a, x, b).unwrap();
    let copy = AlignedBuf::copy_of(f.buf.bytes());
    // SAFETY: `copy` outlives `moved`.
    let region = unsafe { Region::from_raw(copy.as_ptr(), copy.len()) }.unwrap();
    let moved = Heap::attach(region, TestPlatform::new(1)).unwrap();
    moved.check().unwrap();
    assert_eq!(moved.ref_count(x).unwrap(), 2);
    moved.release(a, x).unwrap();
    moved.release(b, x).unwrap();
    moved.check().unwrap();
    drop(moved);
}

/// `attach` refuses bytes it cannot read, each with its own error.
#[test]
fn attach_refuses_incompatible_regions() {
    let f = Fixture::new(16 * 1024);
    let bytes = f.buf.bytes().to_vec();
    let attach = |mut img: Vec<u8>, patch: &dyn Fn(&mut Vec<u8>)| {
        patch(&mut img);
        let buf = AlignedBuf::copy_of(&img);
        // SAFETY: `buf` lives until the end of this closure; the heap is dropped before.
        let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
        Heap::attach(region, SpinPlatform::new(1)).map(|_| ())
    };
    assert_eq!(attach(bytes.clone(), &|_| {}), Ok(()));
    assert_eq!(
        attach(bytes.clone(), &|b| b[0] ^= 1),
        Err(Error::Attach(AttachError::BadMagic))
    );
    assert!(matches!(
        attach(bytes.clone(), &|b| b[8] = 99),
        Err(Error::Attach(AttachError::Version { found: 99, .. }))
    ));
    assert!(matches!(
        attach(bytes.clone(), &|b| b[12] ^= 0xff),
        Err(Error::Attach(AttachError::Layout { .. }))
    ));
    let short = bytes[..8192].to_vec();
    assert!(matches!(
        attach(short, &|_| {}),
        Err(Error::Attach(AttachError::SizeMismatch { .. }))
    ));
    assert_eq!(
        attach(vec![0u8; 8192], &|_| {}),
        Err(Error::Attach(AttachError::BadMagic))
    );
    let text = Error::Attach(AttachError::Layout {
        found: 1,
        expected: 2,
    })
    .to_string();
    assert!(text.contains("incompatible"), "{text}");
}

/// Like heap_5, one heap may span several disjoint ranges sharing one base; no block
/// straddles a gap and merging stops at each range's end marker.
#[test]
fn heap_spans_disjoint_ranges() {
    let buf = AlignedBuf::new(48 * 1024);
    let base = buf.as_ptr();
    // SAFETY: all three ranges lie inside `buf`, which outlives the heap.
    let ranges = unsafe {
        [
            RawRange {
                ptr: base,
                len: 16 * 1024,
            },
            RawRange {
                ptr: base.add(20 * 1024 + 8),
                len: 8 * 1024,
            },
            RawRange {
                ptr: base.add(32 * 1024),
                len: 16 * 1024,
            },
        ]
    };
    // SAFETY: as above.
    let region = unsafe { Region::from_raw_ranges(&ranges) }.unwrap();
    let heap = Heap::init(region, HeapConfig::default(), TestPlatform::new(1)).unwrap();
    let a = heap.register_as(ProcessId::from_pid(100)).unwrap();
    // Grow the owner array while the top range has room, so it stays there.
    let warm: Vec<Offset> = (0..64).map(|_| heap.try_alloc(a, 8).unwrap()).collect();
    for x in warm {
        heap.free(a, x).unwrap();
    }
    let baseline = heap.stats().unwrap().free_blocks;
    let (mut first_range_free, mut widest) = (0, 0);
    heap.for_each_block(|b| {
        if !b.used && b.offset < 16 * 1024 {
            first_range_free += b.size;
        }
        widest = widest.max(b.size);
    })
    .unwrap();
    assert!(widest <= 16 * 1024, "no block is wider than a range");
    let header = std::mem::size_of::<shm_core::format::RegionHeader>() as u32;
    assert!(
        first_range_free > 16 * 1024 - header - 64,
        "range 0 holds the header and one free block"
    );
    // A request larger than the middle range but smaller than the others skips it.
    let mut got = Vec::new();
    while let Ok(x) = heap.try_alloc(a, 1000) {
        let o = x.get() as usize;
        let in_gap =
            (16 * 1024..20 * 1024 + 8).contains(&o) || (28 * 1024 + 8..32 * 1024).contains(&o);
        assert!(!in_gap, "block {o:#x} in a gap");
        got.push(x);
    }
    assert!(got.len() > 30);
    heap.check().unwrap();
    for x in got {
        heap.free(a, x).unwrap();
    }
    assert_eq!(
        heap.stats().unwrap().free_blocks,
        baseline,
        "no merge across a gap"
    );
    heap.check().unwrap();
    drop(heap);
}

/// Every supported alignment gives payloads aligned to it.
#[test]
fn alignments() {
    for align in [8u32, 16, 64, 256] {
        let f = Fixture::with(
            64 * 1024,
            HeapConfig {
                align,
                max_processes: 4,
            },
        );
        let (a, _) = two_processes(&f);
        for size in [1u32, 7, 100, 1000] {
            let x = f.heap.try_alloc(a, size).unwrap();
            let (p, len) = f.heap.payload(x).unwrap();
            assert_eq!(p.as_ptr() as usize % align as usize, 0, "align {align}");
            assert!(len >= size);
        }
        f.heap.check().unwrap();
    }
    for bad in [0u32, 3, 4, 8192, 8192 * 2] {
        let buf = AlignedBuf::new(16 * 1024);
        // SAFETY: `buf` outlives the attempt.
        let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
        let r = Heap::init(
            region,
            HeapConfig {
                align: bad,
                max_processes: 4,
            },
            SpinPlatform::new(1),
        );
        assert_eq!(r.err(), Some(Error::Attach(AttachError::BadConfig)));
    }
}

/// The process table has a fixed capacity.
#[test]
fn process_table_capacity() {
    let f = Fixture::with(
        64 * 1024,
        HeapConfig {
            align: 16,
            max_processes: 3,
        },
    );
    let members: Vec<Member> = (0..3)
        .map(|pid| f.heap.register_as(ProcessId::from_pid(100 + pid)).unwrap())
        .collect();
    assert_eq!(
        f.heap.register_as(ProcessId::from_pid(200)),
        Err(Error::TooManyProcesses { capacity: 3 })
    );
    f.heap.unregister(members[1]).unwrap();
    let again = f.heap.register_as(ProcessId::from_pid(201)).unwrap();
    assert_eq!(again.slot(), ProcSlot(1));
    assert_ne!(again, members[1], "a reused slot is a new incarnation");
    f.heap.check().unwrap();
}

/// `try_alloc` fails at once when full; `alloc_timeout` waits and gives up with `Timeout`.
#[test]
fn blocking_alloc_times_out_when_nothing_is_freed() {
    let f = Fixture::new(16 * 1024);
    let (a, _) = two_processes(&f);
    while f.heap.try_alloc(a, 256).is_ok() {}
    assert_eq!(
        f.heap
            .alloc_timeout(a, 256, Some(core::time::Duration::from_millis(1))),
        Err(Error::Timeout)
    );
    // A request that can never fit is refused at once rather than waited for.
    assert!(matches!(
        f.heap.alloc(a, 1 << 20),
        Err(Error::TooLarge { .. })
    ));
}

/// A blocked allocator gets memory when another thread frees some.
#[test]
#[cfg_attr(miri, ignore = "spins for a long time under miri")]
fn blocking_alloc_wakes_on_free() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let buf = AlignedBuf::new(16 * 1024);
    // SAFETY: `buf` outlives the heap (scoped threads end before it is dropped).
    let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
    let heap = Heap::init(region, HeapConfig::default(), SpinPlatform::new(1)).unwrap();
    let a = heap.register_as(ProcessId::from_pid(100)).unwrap();
    let mut held = Vec::new();
    while let Ok(x) = heap.try_alloc(a, 256) {
        held.push(x);
    }
    let waiting = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = &heap;
        let w = &waiting;
        let waiter = s.spawn(move || {
            w.store(true, Ordering::SeqCst);
            h.alloc(a, 256)
        });
        while !waiting.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        heap.free(a, held.pop().unwrap()).unwrap();
        let got = waiter.join().unwrap();
        assert!(got.is_ok(), "{got:?}");
    });
    heap.check().unwrap();
}

/// Corrupted bytes are reported by `check` with the broken invariant, and operations
/// return errors instead of panicking or looping.
#[test]
fn corruption_is_reported_not_followed() {
    let f = Fixture::new(32 * 1024);
    let (a, _) = two_processes(&f);
    let x = f.heap.try_alloc(a, 64).unwrap();
    let y = f.heap.try_alloc(a, 64).unwrap();
    f.heap.free(a, x).unwrap();
    let hs = f.heap.block_header_size();
    let base = f.buf.as_ptr();
    let word = |off: u32| -> *mut u32 {
        // SAFETY: test offsets lie inside the buffer.
        unsafe { base.add(off as usize).cast::<u32>() }
    };
    // Free block x points to itself: a cycle in the free list.
    let xb = x.get() - hs;
    // SAFETY: `xb + 8` is the link word of block x, inside the buffer.
    let saved = unsafe { word(xb + 8).read() };
    // SAFETY: as above; no heap operation runs concurrently.
    unsafe { word(xb + 8).write(xb) };
    let e = f.heap.check().unwrap_err();
    assert!(
        matches!(e, Error::Corrupted(c) if matches!(c.kind, CorruptionKind::BadFreeList | CorruptionKind::Cycle)),
        "{e}"
    );
    // Operations that follow the broken link report it and change nothing: listing the
    // free blocks, and freeing y, which merges with x and so unlinks it.
    assert!(f.heap.stats().is_err());
    assert!(matches!(f.heap.free(a, y), Err(Error::Corrupted(_))));
    // SAFETY: restoring the word written above.
    unsafe { word(xb + 8).write(saved) };
    f.heap.check().unwrap();
    // A used block's size made to run past the end of the range.
    let yb = y.get() - hs;
    // SAFETY: `yb` is block y's size word.
    unsafe { word(yb).write(0x7fff_fff1) };
    let e = f.heap.check().unwrap_err();
    assert!(matches!(e, Error::Corrupted(_)), "{e}");
    assert!(matches!(f.heap.free(a, y), Err(Error::BadOffset { .. })));
}

/// Derived state (index, boundary tags, free and used counts) flagged dirty is rebuilt
/// from the blocks by the next operation, before anything else: with every list head,
/// bitmap, tag and count wiped, `check` under the lock finds a consistent heap with the
/// same blocks, and allocation works on it. Unlocked, the same wipe is reported.
#[test]
fn dirty_derived_state_is_rebuilt_from_the_blocks() {
    use shm_core::format::BlockHeader;
    use std::sync::atomic::Ordering::Relaxed;
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let blocks: Vec<Offset> = (0..24)
        .map(|i| f.heap.try_alloc(a, 40 + 60 * i).unwrap())
        .collect();
    for b in blocks.iter().step_by(3) {
        f.heap.free(a, *b).unwrap();
    }
    let before = f.heap.stats().unwrap();
    let rep_before = f.heap.check().unwrap();
    assert!(before.free_blocks > 5);

    let hdr = f.heap.raw_header_for_tests();
    hdr.index.fl_bitmap.store(0, Relaxed);
    for w in hdr
        .index
        .sl_bitmap
        .iter()
        .chain(hdr.index.heads.iter().flatten())
    {
        w.store(0, Relaxed);
    }
    hdr.heap.free_bytes.store(7, Relaxed);
    hdr.heap.free_blocks.store(0, Relaxed);
    hdr.heap.used_blocks.store(0, Relaxed);
    let hsize = f.heap.block_header_size();
    for b in &blocks[1..] {
        let h: &BlockHeader = f.heap.region().get(b.get() - hsize).unwrap();
        h.prev_phys.store(0, Relaxed);
    }
    assert!(f.heap.check_unlocked().is_err(), "the wipe is visible");

    hdr.derived_dirty.store(1, Relaxed);
    let rep = f.heap.check().unwrap();
    assert_eq!(rep, rep_before);
    assert_eq!(hdr.derived_dirty.load(Relaxed), 0);
    let after = f.heap.stats().unwrap();
    assert_eq!(after.free_bytes, before.free_bytes);
    assert_eq!(after.free_blocks, before.free_blocks);
    assert_eq!(after.largest_free_block, before.largest_free_block);
    let x = f.heap.try_alloc(a, 40).unwrap();
    assert_eq!(x, blocks[0], "the lowest hole of its class is found");
    f.heap.check().unwrap();
}

/// A rebuild meets blocks that no undo could make (here, a size running past the range)
/// with a corruption error, not a panic or a walk off the end, and leaves the flag set so
/// that every later operation reports it too.
#[test]
fn rebuild_reports_broken_tiling() {
    use shm_core::format::BlockHeader;
    use std::sync::atomic::Ordering::Relaxed;
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let x = f.heap.try_alloc(a, 100).unwrap();
    let h: &BlockHeader = f
        .heap
        .region()
        .get(x.get() - f.heap.block_header_size())
        .unwrap();
    h.size_flags.store(0x00ff_fff0 | 1, Relaxed);
    f.heap
        .raw_header_for_tests()
        .derived_dirty
        .store(1, Relaxed);
    for _ in 0..2 {
        assert!(matches!(f.heap.check(), Err(Error::Corrupted(_))));
        assert!(matches!(f.heap.try_alloc(a, 16), Err(Error::Corrupted(_))));
    }
    assert_eq!(f.heap.raw_header_for_tests().derived_dirty.load(Relaxed), 1);
}

/// The size-class index: a request as large as the largest free block is served even
/// though rounding it up to its class boundary finds nothing (the fallback scan of its own
/// class), and a request one alignment step larger fails with `OutOfMemory`.
#[test]
fn requests_fitting_only_their_own_class_are_served() {
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let largest = f.heap.stats().unwrap().largest_alloc;
    let (fl, _) = shm_core::format::class_of(largest);
    assert!(fl > 0, "the test needs a logarithmic class");
    assert!(matches!(
        f.heap.try_alloc(a, largest + 16),
        Err(Error::OutOfMemory { .. })
    ));
    let x = f.heap.try_alloc(a, largest).unwrap();
    assert_eq!(f.heap.stats().unwrap().free_blocks, 0);
    f.heap.free(a, x).unwrap();
    f.heap.check().unwrap();
}

/// `check` verifies the index against the blocks: a cleared bitmap bit, a list that lost
/// its block, and a block listed in the wrong class are each reported; allocations that
/// meet the damage return errors; restoring the word makes the heap whole again.
#[test]
fn index_damage_is_reported() {
    use shm_core::format::{class_of, FL_COUNT, SL_COUNT};
    use std::sync::atomic::Ordering::Relaxed;
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    // Three used blocks with a free 1 KiB hole between the first two.
    let x = f.heap.try_alloc(a, 64).unwrap();
    let hole = f.heap.try_alloc(a, 1024).unwrap();
    let _y = f.heap.try_alloc(a, 64).unwrap();
    let hole_size = f.heap.block_len(hole).unwrap() + f.heap.block_header_size();
    f.heap.free(a, hole).unwrap();
    f.heap.check().unwrap();
    let idx = &f.heap.raw_header_for_tests().index;
    let (fl, sl) = class_of(hole_size);
    let hole_block = hole.get() - f.heap.block_header_size();
    assert_eq!(idx.heads[fl][sl].load(Relaxed), hole_block);

    let expect = |want: &[CorruptionKind]| {
        let e = f.heap.check().unwrap_err();
        assert!(
            matches!(e, Error::Corrupted(c) if want.contains(&c.kind)),
            "{e} (wanted {want:?})"
        );
    };
    // A bitmap bit cleared: the list is non-empty but unmarked.
    let saved = idx.sl_bitmap[fl].load(Relaxed);
    idx.sl_bitmap[fl].store(saved & !(1 << sl), Relaxed);
    expect(&[CorruptionKind::BadFreeList]);
    idx.sl_bitmap[fl].store(saved, Relaxed);
    f.heap.check().unwrap();

    // The list head emptied: the hole is free but on no list.
    idx.heads[fl][sl].store(0, Relaxed);
    expect(&[CorruptionKind::BadFreeList, CorruptionKind::LostFreeBlock]);
    // A list head naming a used block is met by the next allocation searching that class
    // (one whose block size is the class's smallest: 1024 bytes).
    idx.heads[fl][sl].store(x.get() - f.heap.block_header_size(), Relaxed);
    assert_eq!(class_of(1024), (fl, sl));
    assert!(matches!(
        f.heap.try_alloc(a, 1024 - f.heap.block_header_size()),
        Err(Error::Corrupted(c)) if c.kind == CorruptionKind::BadFreeList
    ));
    idx.heads[fl][sl].store(hole_block, Relaxed);
    f.heap.check().unwrap();

    // The hole listed in another class.
    let other = if sl + 1 < SL_COUNT {
        (fl, sl + 1)
    } else {
        (fl + 1, 0)
    };
    assert!(other.0 < FL_COUNT);
    idx.heads[fl][sl].store(0, Relaxed);
    idx.heads[other.0][other.1].store(hole_block, Relaxed);
    let bits = [
        idx.sl_bitmap[fl].load(Relaxed),
        idx.sl_bitmap[other.0].load(Relaxed),
    ];
    idx.sl_bitmap[fl].store(bits[0] & !(1 << sl), Relaxed);
    idx.sl_bitmap[other.0].fetch_or(1 << other.1, Relaxed);
    idx.fl_bitmap.fetch_or(1 << other.0, Relaxed);
    expect(&[CorruptionKind::BadFreeList]);
    idx.heads[other.0][other.1].store(0, Relaxed);
    idx.sl_bitmap[other.0].store(bits[1], Relaxed);
    idx.sl_bitmap[fl].store(bits[0], Relaxed);
    idx.heads[fl][sl].store(hole_block, Relaxed);
    if idx.sl_bitmap[other.0].load(Relaxed) == 0 {
        idx.fl_bitmap.fetch_and(!(1 << other.0), Relaxed);
    }
    f.heap.check().unwrap();
}

/// A block's size changed while `for_each_block` walks the blocks (here by the visitor,
/// standing in for another process writing the region between the check and the step)
/// is reported as corruption. The walk used to step by the size read again after the
/// check, unchecked: a size near 4 GiB overflowed the offset (a panic with overflow checks,
/// a wrapped offset without).
#[test]
fn block_walk_reports_a_size_changed_under_it() {
    use shm_core::format::BlockHeader;
    use std::sync::atomic::Ordering::Relaxed;
    let f = Fixture::new(32 * 1024);
    let (a, _) = two_processes(&f);
    let x = f.heap.try_alloc(a, 64).unwrap();
    let xb = x.get() - f.heap.block_header_size();
    let h: &BlockHeader = f.heap.region().get(xb).unwrap();
    let saved = h.size_flags.load(Relaxed);
    let r = f.heap.for_each_block(|info| {
        if info.offset == xb {
            h.size_flags.store(0xffff_fff0 | (saved & 7), Relaxed);
        }
    });
    assert!(
        matches!(r, Err(Error::Corrupted(c)) if c.kind == CorruptionKind::BadBlockSize),
        "{r:?}"
    );
    h.size_flags.store(saved, Relaxed);
    f.heap.check().unwrap();
}
