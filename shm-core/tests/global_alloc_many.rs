//! `RegionAllocator` as a real program's allocator: more than 100,000 live allocations of
//! mixed sizes at once (more than one process could own before owner references got a
//! 24-bit cell index). Each test states the invariant it checks.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use core::alloc::{GlobalAlloc, Layout};

use shm_core::RegionAllocator;
use shm_core::{HeapConfig, SpinPlatform};

/// Region bytes: room for the live set below with a margin (miri runs a small one).
const MEMORY: usize = if cfg!(miri) { 256 << 10 } else { 64 << 20 };
/// Live allocations held at once.
const LIVE: usize = if cfg!(miri) { 150 } else { 120_000 };

#[repr(C, align(64))]
struct Memory([u8; MEMORY]);

static ALLOC: RegionAllocator<SpinPlatform> = RegionAllocator::new();
static mut BYTES: Memory = Memory([0; MEMORY]);

/// A size from 1 to 600 bytes and an alignment of 1 to 16, from a fixed pseudo-random
/// sequence.
fn layout(seed: &mut u64) -> Layout {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let r = *seed >> 33;
    Layout::from_size_align(1 + (r % 600) as usize, 1 << ((r >> 12) % 5)).unwrap()
}

/// Every allocation succeeds while memory remains, with more than 100,000 live at once; each
/// keeps its bytes (a pattern written at allocation is intact at free); after a churn of
/// half of them and freeing all, every block is back, and the heap checks out.
#[test]
fn more_than_100000_live_allocations_of_mixed_sizes() {
    // SAFETY: this test is the only user of BYTES, borrowed mutably once.
    let memory: &'static mut [u8] = unsafe { &mut (*core::ptr::addr_of_mut!(BYTES)).0 };
    ALLOC
        .init(memory, HeapConfig::default(), SpinPlatform::new(1))
        .unwrap();
    let heap = ALLOC.heap().unwrap();
    let used_at_start = heap.stats().unwrap().used_blocks;
    let mut seed = 7;
    let alloc = |seed: &mut u64, i: usize| {
        let l = layout(seed);
        // SAFETY: non-zero size; freed below with the same layout.
        let p = unsafe { ALLOC.alloc(l) };
        assert!(!p.is_null(), "allocation {i} ({l:?}) failed");
        assert_eq!(p as usize % l.align(), 0);
        // SAFETY: `p` is a fresh allocation of `l.size()` bytes.
        unsafe { p.write_bytes(i as u8, l.size()) };
        (p, l, i as u8)
    };
    let check_and_free = |(p, l, byte): (*mut u8, Layout, u8)| {
        // SAFETY: `p` is a live allocation of `l.size()` bytes, freed once.
        unsafe {
            let bytes = core::slice::from_raw_parts(p, l.size());
            assert!(
                bytes.iter().all(|b| *b == byte),
                "an allocation's bytes changed"
            );
            ALLOC.dealloc(p, l);
        }
    };
    let mut live: Vec<_> = (0..LIVE).map(|i| alloc(&mut seed, i)).collect();
    assert!(heap.stats().unwrap().used_blocks as usize > LIVE);
    heap.check().unwrap();
    // Churn: free every other one, allocate as many again.
    let mut kept = Vec::with_capacity(LIVE);
    for (n, a) in live.drain(..).enumerate() {
        if n % 2 == 0 {
            check_and_free(a);
        } else {
            kept.push(a);
        }
    }
    let refill = LIVE - kept.len();
    kept.extend((0..refill).map(|i| alloc(&mut seed, LIVE + i)));
    heap.check().unwrap();
    for a in kept {
        check_and_free(a);
    }
    heap.check().unwrap();
    // Every block came back; only the allocator's owner array stays at its grown size.
    assert_eq!(heap.stats().unwrap().used_blocks, used_at_start);
}
