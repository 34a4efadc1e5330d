//! FreeRTOS heap_5's API over a shm-core [`Heap`]: a project replaces `heap_5.c` with
//! this library (as `libshm_heap5.a`, from the `shm-heap5-staticlib` crate, or as this
//! crate in a Rust firmware) and links.
//!
//! The functions have FreeRTOS's names, signatures and types (`portable.h`; the committed
//! header `include/heap5.h` declares the same for programs built without FreeRTOS):
//!
//! | C function | behaviour |
//! |------------|-----------|
//! | `void vPortDefineHeapRegions(const HeapRegion_t *)` | formats the regions, in address order, up to the `{NULL, 0}` entry (any entry of size 0 ends the list, as in heap_5), as one heap |
//! | `void *pvPortMalloc(size_t)` | a block aligned to [`PORT_BYTE_ALIGNMENT`], or NULL (always NULL for 0 bytes, as heap_5) |
//! | `void *pvPortCalloc(size_t, size_t)` | zeroed `n * size` bytes, or NULL (also when `n * size` overflows) |
//! | `void vPortFree(void *)` | frees a block; NULL does nothing |
//! | `size_t xPortGetFreeHeapSize(void)` | bytes in free blocks, headers included, as heap_5 counts them |
//! | `size_t xPortGetMinimumEverFreeHeapSize(void)` | the lowest free bytes since the regions were defined or the last reset |
//! | `void xPortResetHeapMinimumEverFreeHeapSize(void)` | restarts that low-water mark from the current free bytes |
//! | `void vPortGetHeapStats(HeapStats_t *)` | every `HeapStats_t` field |
//! | `void vPortHeapResetState(void)` | forgets the heap, so the regions may be defined again (FreeRTOS 11.1) |
//!
//! Where heap_5 stops at a failed `configASSERT`, this library does something defined:
//! - before the regions are defined (or when they cannot be used: more than
//!   [`MAX_REGIONS`], not in increasing address order, overlapping, more than 4 GiB from the
//!   first, or a first region too small for the heap's header), `pvPortMalloc` returns NULL
//!   and the statistics read 0;
//! - a second `vPortDefineHeapRegions` (without `vPortHeapResetState` in between) is
//!   ignored: the blocks already handed out stay valid;
//! - `vPortFree` ignores a pointer outside the regions, and a second free of a block until
//!   its memory is handed out again. Like heap_5, it cannot recognise every pointer that
//!   is not a block it returned: freeing one is undefined.
//!
//! # The malloc-failed hook
//! With the Cargo feature `malloc-failed-hook` (FreeRTOS's `configUSE_MALLOC_FAILED_HOOK
//! == 1`), every NULL from `pvPortMalloc` calls the application's
//! `void vApplicationMallocFailedHook(void)`, after the critical section, as heap_5 does.
//! Without the feature the library does not reference the hook.
//!
//! # Thread safety
//! Every function runs inside `critical_section::with` (the [`critical-section`] crate),
//! where heap_5 suspends the scheduler. The program that links the library provides the
//! implementation:
//! - on a host (and in `libshm_heap5.a` built for a host), `critical-section`'s `std`
//!   implementation: one process-wide lock;
//! - in a Rust firmware, the usual one for its target, e.g. `cortex-m`'s
//!   `critical-section-single-core` (interrupts off: interrupt handlers may allocate too);
//! - in a C FreeRTOS project, the feature `freertos-critical-section` implements it with
//!   `vTaskSuspendAll()` / `xTaskResumeAll()`, exactly heap_5's guard (so, as with heap_5,
//!   interrupt handlers must not allocate).
//!
//! [`critical-section`]: https://docs.rs/critical-section
//!
//! # Example
//! ```
//! use shm_heap5::{pvPortMalloc, vPortDefineHeapRegions, vPortFree, xPortGetFreeHeapSize};
//! use shm_heap5::HeapRegion_t;
//!
//! #[repr(align(16))]
//! struct Ram([u8; 16 * 1024]);
//! static mut RAM: Ram = Ram([0; 16 * 1024]);
//!
//! // SAFETY (example): RAM is used by nothing else, for the rest of the program.
//! unsafe {
//!     let ram = core::ptr::addr_of_mut!(RAM.0).cast::<u8>();
//!     let regions = [
//!         HeapRegion_t { pucStartAddress: ram, xSizeInBytes: 8 * 1024 },
//!         // A second region: its own address range, here 4 KiB further on.
//!         HeapRegion_t { pucStartAddress: ram.add(12 * 1024), xSizeInBytes: 4 * 1024 },
//!         HeapRegion_t { pucStartAddress: core::ptr::null_mut(), xSizeInBytes: 0 },
//!     ];
//!     vPortDefineHeapRegions(regions.as_ptr());
//!     let before = xPortGetFreeHeapSize();
//!     let p = pvPortMalloc(100);
//!     assert!(!p.is_null() && p as usize % shm_heap5::PORT_BYTE_ALIGNMENT == 0);
//!     vPortFree(p);
//!     assert_eq!(xPortGetFreeHeapSize(), before);
//! }
//! ```
#![no_std]
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
// The exported items keep FreeRTOS's C names.
#![allow(non_snake_case, non_camel_case_types)]

use core::cell::RefCell;
use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ptr;

use critical_section::Mutex;
use shm_core::format::MAX_RANGES;
use shm_core::{Heap, HeapConfig, HeapStats, Member, RawRange, Region, SpinPlatform};

#[cfg(all(feature = "freertos-critical-section", target_os = "none"))]
mod freertos_critical_section;

/// FreeRTOS's `portBYTE_ALIGNMENT`: every block `pvPortMalloc` returns is aligned to it.
///
/// 8 (the Cortex-M ports' value) unless the environment variable
/// `SHM_HEAP5_BYTE_ALIGNMENT` names another power of two from 8 to 4096 when the crate is
/// built (a larger value also satisfies ports that ask for 1, 2 or 4). Any other value
/// stops the build.
pub const PORT_BYTE_ALIGNMENT: usize = byte_alignment(option_env!("SHM_HEAP5_BYTE_ALIGNMENT"));

/// Most regions `vPortDefineHeapRegions` accepts: shm-core's [`MAX_RANGES`].
pub const MAX_REGIONS: usize = MAX_RANGES;

/// Parses [`PORT_BYTE_ALIGNMENT`] at compile time.
// Evaluated by the compiler only: an index or sum out of range stops the build.
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
const fn byte_alignment(value: Option<&str>) -> usize {
    let Some(text) = value else {
        return 8;
    };
    let bytes = text.as_bytes();
    let mut n: usize = 0;
    let mut i = 0;
    while i < bytes.len() {
        let digit = bytes[i];
        assert!(
            digit.is_ascii_digit() && n < 10_000,
            "SHM_HEAP5_BYTE_ALIGNMENT is not a number from 8 to 4096"
        );
        n = n * 10 + (digit - b'0') as usize;
        i += 1;
    }
    assert!(
        n.is_power_of_two() && n >= 8 && n <= 4096,
        "SHM_HEAP5_BYTE_ALIGNMENT must be a power of two from 8 to 4096"
    );
    n
}

/// One region of RAM given to the heap (FreeRTOS `HeapRegion_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HeapRegion_t {
    /// First byte of the region; any alignment (the start is rounded up).
    pub pucStartAddress: *mut u8,
    /// Bytes in the region; 0 ends the list.
    pub xSizeInBytes: usize,
}

/// Heap statistics (FreeRTOS `HeapStats_t`). Sizes are of whole blocks, headers included,
/// as heap_5 counts them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats_t {
    /// Bytes in all free blocks (not the largest request that would succeed).
    pub xAvailableHeapSpaceInBytes: usize,
    /// The largest free block.
    pub xSizeOfLargestFreeBlockInBytes: usize,
    /// The smallest free block (0 when none is free).
    pub xSizeOfSmallestFreeBlockInBytes: usize,
    /// Free blocks.
    pub xNumberOfFreeBlocks: usize,
    /// The lowest `xAvailableHeapSpaceInBytes` since the regions were defined or the
    /// low-water mark was last reset.
    pub xMinimumEverFreeBytesRemaining: usize,
    /// `pvPortMalloc` calls that returned a block.
    pub xNumberOfSuccessfulAllocations: usize,
    /// `vPortFree` calls that freed a block.
    pub xNumberOfSuccessfulFrees: usize,
}

// The C layout of both structures, as FreeRTOS's portable.h declares them.
const _: () = {
    const W: usize = size_of::<usize>();
    assert!(size_of::<HeapRegion_t>() == 2 * W);
    assert!(offset_of!(HeapRegion_t, pucStartAddress) == 0);
    assert!(offset_of!(HeapRegion_t, xSizeInBytes) == W);
    assert!(size_of::<HeapStats_t>() == 7 * W);
    assert!(offset_of!(HeapStats_t, xAvailableHeapSpaceInBytes) == 0);
    assert!(offset_of!(HeapStats_t, xSizeOfLargestFreeBlockInBytes) == W);
    assert!(offset_of!(HeapStats_t, xSizeOfSmallestFreeBlockInBytes) == 2 * W);
    assert!(offset_of!(HeapStats_t, xNumberOfFreeBlocks) == 3 * W);
    assert!(offset_of!(HeapStats_t, xMinimumEverFreeBytesRemaining) == 4 * W);
    assert!(offset_of!(HeapStats_t, xNumberOfSuccessfulAllocations) == 5 * W);
    assert!(offset_of!(HeapStats_t, xNumberOfSuccessfulFrees) == 6 * W);
};

/// The heap once the regions are defined.
struct Heap5 {
    /// Every operation already runs inside the critical section of the C function that
    /// calls it, so the heap needs no platform lock of its own: one process, never dead.
    heap: Heap<'static, SpinPlatform>,
    /// The one registration that owns every block.
    me: Member,
    /// shm-core's counts when the regions were defined: registering allocates the
    /// process record, which is not a `pvPortMalloc`.
    allocs_before: u64,
    frees_before: u64,
}

/// The heap, `None` until `vPortDefineHeapRegions` succeeds.
static HEAP: Mutex<RefCell<Option<Heap5>>> = Mutex::new(RefCell::new(None));

/// Runs `f` on the heap inside the critical section; `None` when no heap is defined.
fn with_heap<R>(f: impl FnOnce(&Heap5) -> R) -> Option<R> {
    critical_section::with(|cs| {
        // Only `vPortDefineHeapRegions` and `vPortHeapResetState` borrow mutably, inside
        // this same critical section, and nothing here calls them: the borrow succeeds.
        let heap = HEAP.borrow(cs).try_borrow().ok()?;
        heap.as_ref().map(f)
    })
}

/// The heap's statistics, or `None` when there is no heap (or it reports damage).
fn stats() -> Option<HeapStats> {
    with_heap(|h| h.heap.stats().ok()).flatten()
}

/// Formats `regions` as the heap.
///
/// # Safety
/// As [`vPortDefineHeapRegions`].
unsafe fn define(regions: *const HeapRegion_t) -> Option<Heap5> {
    let mut ranges: heapless::Vec<RawRange, MAX_REGIONS> = heapless::Vec::new();
    let mut next = regions;
    loop {
        // SAFETY: the caller passes an array that ends with an entry of size 0, and the
        // loop stops there (or after MAX_REGIONS + 1 entries, all inside the array).
        let region = unsafe { next.read() };
        if region.xSizeInBytes == 0 {
            break;
        }
        let mut range = RawRange {
            ptr: region.pucStartAddress,
            len: region.xSizeInBytes,
        };
        if ranges.is_empty() {
            // The heap's header needs a 16-byte aligned base; blocks, the alignment.
            let align = PORT_BYTE_ALIGNMENT.max(16);
            let skip = range.ptr.align_offset(align);
            range.len = range.len.checked_sub(skip)?;
            range.ptr = range.ptr.wrapping_add(skip);
        }
        ranges.push(range).ok()?;
        // SAFETY: this entry had a non-zero size, so the array goes on.
        next = unsafe { next.add(1) };
    }
    // SAFETY: the caller gives every region to the heap for good (until
    // vPortHeapResetState) and touches it only through blocks it allocated.
    let region = unsafe { Region::from_raw_ranges(&ranges) }.ok()?;
    let config = HeapConfig {
        // In range (checked when PORT_BYTE_ALIGNMENT was parsed).
        align: PORT_BYTE_ALIGNMENT as u32,
        max_processes: 1,
    };
    let heap = Heap::init(region, config, SpinPlatform::new(1)).ok()?;
    let me = heap.register().ok()?;
    let stats = heap.stats().ok()?;
    Some(Heap5 {
        heap,
        me,
        allocs_before: stats.allocs,
        frees_before: stats.frees,
    })
}

/// Defines the heap's RAM: `regions` lists them in increasing address order and ends with
/// an entry of size 0 (`{NULL, 0}`). Only the first call has an effect (see the crate
/// documentation for regions that cannot be used).
///
/// # Safety
/// `regions` points to such an array. Each region is memory that is valid for reads and
/// writes and that nothing else uses from now on (until [`vPortHeapResetState`]): the
/// heap writes its bookkeeping there.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vPortDefineHeapRegions(regions: *const HeapRegion_t) {
    if regions.is_null() {
        return;
    }
    critical_section::with(|cs| {
        let Ok(mut slot) = HEAP.borrow(cs).try_borrow_mut() else {
            return;
        };
        if slot.is_none() {
            // SAFETY: forwarded from the caller.
            *slot = unsafe { define(regions) };
        }
    });
}

/// Forgets the heap (FreeRTOS 11.1's `vPortHeapResetState`), so that
/// [`vPortDefineHeapRegions`] may be called again. Every block handed out before becomes
/// invalid, as in FreeRTOS (which calls this before restarting the scheduler).
#[unsafe(no_mangle)]
pub extern "C" fn vPortHeapResetState() {
    critical_section::with(|cs| {
        if let Ok(mut slot) = HEAP.borrow(cs).try_borrow_mut() {
            *slot = None;
        }
    });
}

/// Allocates `size` bytes aligned to [`PORT_BYTE_ALIGNMENT`]; NULL when there is no room,
/// no heap, or `size` is 0 (then, with the feature `malloc-failed-hook`, after calling
/// `vApplicationMallocFailedHook()`).
#[unsafe(no_mangle)]
pub extern "C" fn pvPortMalloc(size: usize) -> *mut c_void {
    let block = u32::try_from(size).ok().and_then(|size| {
        with_heap(|h| {
            let block = h.heap.try_alloc(h.me, size).ok()?;
            h.heap.payload(block).ok().map(|(p, _)| p.as_ptr())
        })
        .flatten()
    });
    match block {
        Some(p) => p.cast(),
        None => {
            malloc_failed();
            ptr::null_mut()
        }
    }
}

/// Allocates `n * size` zeroed bytes, like [`pvPortMalloc`]; NULL also when the product
/// overflows (then without calling the hook, as FreeRTOS's `pvPortCalloc`).
#[unsafe(no_mangle)]
pub extern "C" fn pvPortCalloc(n: usize, size: usize) -> *mut c_void {
    let Some(bytes) = n.checked_mul(size) else {
        return ptr::null_mut();
    };
    let p = pvPortMalloc(bytes);
    if !p.is_null() {
        // SAFETY: `p` is a fresh block of at least `bytes` bytes, owned by the caller.
        unsafe { p.cast::<u8>().write_bytes(0, bytes) };
    }
    p
}

#[cfg(feature = "malloc-failed-hook")]
fn malloc_failed() {
    unsafe extern "C" {
        /// FreeRTOS's hook, defined by the application.
        fn vApplicationMallocFailedHook();
    }
    // SAFETY: with this feature the application defines the hook, a plain C function
    // without arguments; it runs outside the critical section, as in heap_5.
    unsafe { vApplicationMallocFailedHook() }
}

#[cfg(not(feature = "malloc-failed-hook"))]
fn malloc_failed() {}

/// Frees a block from [`pvPortMalloc`]. NULL does nothing; a pointer outside the regions,
/// or to a block freed already (until its memory is handed out again), is ignored.
///
/// # Safety
/// `pv` is NULL or a pointer returned by [`pvPortMalloc`] or [`pvPortCalloc`] and not
/// freed since; the caller does not use the block afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vPortFree(pv: *mut c_void) {
    if pv.is_null() {
        return;
    }
    with_heap(|h| {
        if let Some(block) = h.heap.region().offset_of_ptr(pv.cast()) {
            // An error means the pointer names no live block: heap_5 would assert;
            // nothing was changed, so ignoring it is the safe choice.
            let _ = h.heap.free(h.me, block);
        }
    });
}

/// Bytes in free blocks, headers included (0 without a heap).
#[unsafe(no_mangle)]
pub extern "C" fn xPortGetFreeHeapSize() -> usize {
    stats().map_or(0, |s| s.free_bytes as usize)
}

/// The lowest [`xPortGetFreeHeapSize`] since the regions were defined or the last
/// [`xPortResetHeapMinimumEverFreeHeapSize`] (0 without a heap).
#[unsafe(no_mangle)]
pub extern "C" fn xPortGetMinimumEverFreeHeapSize() -> usize {
    stats().map_or(0, |s| s.min_ever_free_bytes as usize)
}

/// Restarts the low-water mark of [`xPortGetMinimumEverFreeHeapSize`] from the current
/// free bytes.
#[unsafe(no_mangle)]
pub extern "C" fn xPortResetHeapMinimumEverFreeHeapSize() {
    with_heap(|h| {
        // An error means the heap reports damage; the statistics then read 0 anyway.
        let _ = h.heap.reset_min_ever_free();
    });
}

/// Fills `*out` with the heap's statistics (all zero without a heap).
///
/// # Safety
/// `out` is NULL (then nothing happens) or points to a writable `HeapStats_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vPortGetHeapStats(out: *mut HeapStats_t) {
    if out.is_null() {
        return;
    }
    let counted = with_heap(|h| {
        let s = h.heap.stats().ok()?;
        Some(HeapStats_t {
            xAvailableHeapSpaceInBytes: s.free_bytes as usize,
            xSizeOfLargestFreeBlockInBytes: s.largest_free_block as usize,
            xSizeOfSmallestFreeBlockInBytes: s.smallest_free_block as usize,
            xNumberOfFreeBlocks: s.free_blocks as usize,
            xMinimumEverFreeBytesRemaining: s.min_ever_free_bytes as usize,
            // Counters wrap at size_t, as heap_5's do.
            xNumberOfSuccessfulAllocations: s.allocs.wrapping_sub(h.allocs_before) as usize,
            xNumberOfSuccessfulFrees: s.frees.wrapping_sub(h.frees_before) as usize,
        })
    })
    .flatten()
    .unwrap_or_default();
    // SAFETY: `out` is non-null and writable (the caller's contract).
    unsafe { out.write(counted) };
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::byte_alignment;

    /// The build-time alignment: 8 by default, or the power of two the variable names.
    #[test]
    fn byte_alignment_is_parsed() {
        assert_eq!(byte_alignment(None), 8);
        assert_eq!(byte_alignment(Some("8")), 8);
        assert_eq!(byte_alignment(Some("64")), 64);
        assert_eq!(byte_alignment(Some("4096")), 4096);
        for bad in ["4", "12", "8192", "x", "", "99999999999999999999"] {
            assert!(
                std::panic::catch_unwind(|| byte_alignment(Some(bad))).is_err(),
                "{bad:?}"
            );
        }
    }
}
