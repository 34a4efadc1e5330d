//! The C side of the firmware: `src/heap5_demo.c` uses the FreeRTOS heap_5 API of
//! `shm-heap5` (a second heap, in its own two RAM banks, beside the region of `main.rs`),
//! as a FreeRTOS application's C code would.

use core::mem::{offset_of, size_of};

// Linked for the functions it exports, which only the C code calls.
use shm_heap5 as _;

use crate::Failure;

/// What `heap5_demo` reports: `struct heap5_demo` in `heap5_demo.c`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeapDemo {
    /// Regions given to `vPortDefineHeapRegions`.
    pub regions: u32,
    /// 256-byte blocks `pvPortMalloc` gave before it returned NULL.
    pub blocks: u32,
    /// Bit i set: a block came from region i.
    pub regions_used: u32,
    /// `vApplicationMallocFailedHook` calls.
    pub hook_calls: u32,
    /// `xPortGetFreeHeapSize()` after each exhaustion run, all blocks freed.
    pub free_bytes: u32,
    /// `xPortGetMinimumEverFreeHeapSize()` after the runs.
    pub lowest_free: u32,
    /// `HeapStats_t::xNumberOfSuccessfulAllocations` at the end.
    pub allocations: u32,
    /// `HeapStats_t::xNumberOfSuccessfulFrees` at the end.
    pub frees: u32,
}

const _: () = {
    assert!(size_of::<HeapDemo>() == 32);
    assert!(offset_of!(HeapDemo, regions) == 0);
    assert!(offset_of!(HeapDemo, blocks) == 4);
    assert!(offset_of!(HeapDemo, regions_used) == 8);
    assert!(offset_of!(HeapDemo, hook_calls) == 12);
    assert!(offset_of!(HeapDemo, free_bytes) == 16);
    assert!(offset_of!(HeapDemo, lowest_free) == 20);
    assert!(offset_of!(HeapDemo, allocations) == 24);
    assert!(offset_of!(HeapDemo, frees) == 28);
};

unsafe extern "C" {
    /// Runs the C demonstration; 0, or the source line of the first failed check.
    fn heap5_demo(out: *mut HeapDemo) -> i32;
}

/// Runs `heap5_demo` once.
pub(crate) fn run() -> Result<HeapDemo, Failure> {
    let mut out = HeapDemo::default();
    // SAFETY: `heap5_demo` writes only `*out`, a valid `HeapDemo` with the C layout
    // (asserted above), and is called once: it defines the heap_5 regions, which must
    // happen once.
    let failed_line = unsafe { heap5_demo(&mut out) };
    if failed_line != 0 {
        return Err(Failure::CHeap { line: failed_line });
    }
    if out.regions_used != 0b11 {
        return Err(Failure::Other(
            "the C blocks did not come from both regions",
        ));
    }
    Ok(out)
}
