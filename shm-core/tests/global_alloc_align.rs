//! `RegionAllocator` with over-aligned layouts: each test states the invariant it checks.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use core::alloc::{GlobalAlloc, Layout};

use shm_core::RegionAllocator;
use shm_core::{HeapConfig, SpinPlatform};

#[repr(C, align(64))]
struct Memory([u8; 64 * 1024]);

/// Initialises `alloc` over `memory`. Each test passes statics of its own (no leaked boxes:
/// miri reports leaks).
fn allocator(
    alloc: &'static RegionAllocator<SpinPlatform>,
    memory: &'static mut Memory,
) -> &'static RegionAllocator<SpinPlatform> {
    alloc
        .init(&mut memory.0, HeapConfig::default(), SpinPlatform::new(1))
        .unwrap();
    alloc
}

/// A fresh allocator with its own memory, for one test.
macro_rules! fresh_allocator {
    () => {{
        static ALLOC: RegionAllocator<SpinPlatform> = RegionAllocator::new();
        static mut MEMORY: Memory = Memory([0; 64 * 1024]);
        // SAFETY: this macro expands once per test function, so the static is borrowed
        // mutably exactly once, for the rest of the program.
        allocator(&ALLOC, unsafe { &mut *core::ptr::addr_of_mut!(MEMORY) })
    }};
}

/// An alignment of 2^32 or more cannot be provided by a heap with u32 offsets: `alloc`
/// returns null instead of truncating the alignment (which slid the pointer out of the
/// block and wrote the block offset out of bounds), and the heap stays consistent.
#[cfg(target_pointer_width = "64")]
#[test]
fn alignment_beyond_u32_is_refused() {
    let a = fresh_allocator!();
    for shift in [32u32, 33, 40] {
        let layout = Layout::from_size_align(16, 1usize << shift).unwrap();
        // SAFETY: non-zero size; nothing is returned to free.
        let p = unsafe { a.alloc(layout) };
        assert!(p.is_null(), "alignment 2^{shift} must be refused");
    }
    a.heap().unwrap().check().unwrap();
}

/// An over-aligned allocation that fits is aligned, usable for its whole size, and
/// freed by `dealloc` (the heap returns to one free block, and `check` passes).
#[test]
fn over_aligned_allocation_round_trips() {
    let a = fresh_allocator!();
    let heap = a.heap().unwrap();
    let before = heap.stats().unwrap().free_bytes;
    let layout = Layout::from_size_align(100, 4096).unwrap();
    // SAFETY: non-zero layout, freed below with the same layout.
    unsafe {
        let p = a.alloc(layout);
        assert!(!p.is_null());
        assert_eq!(p as usize % 4096, 0);
        p.write_bytes(0xAB, 100);
        heap.check().unwrap();
        a.dealloc(p, layout);
    }
    assert_eq!(heap.stats().unwrap().free_bytes, before);
    heap.check().unwrap();
}

/// An alignment larger than the whole region cannot be met: null, nothing leaked.
#[test]
fn alignment_larger_than_the_region_is_refused() {
    let a = fresh_allocator!();
    let layout = Layout::from_size_align(16, 1 << 20).unwrap();
    // SAFETY: non-zero size; nothing is returned to free.
    let p = unsafe { a.alloc(layout) };
    assert!(p.is_null());
    a.heap().unwrap().check().unwrap();
}
