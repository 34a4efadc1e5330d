//! [`RegionAllocator`]: a `GlobalAlloc` over a region, so firmware can use one as its heap
//! (feature `global-alloc`).
//!
//! The adapter only translates: layouts to sizes, pointers to offsets. Allocation is the
//! ordinary [`Heap`] algorithm, done as one registered process. Alignments above the
//! heap's are served by allocating `size + align` and recording the block's offset just
//! in front of the aligned pointer.
//!
//! ```
//! use shm_core::RegionAllocator;
//! use shm_core::{HeapConfig, SpinPlatform};
//! use core::alloc::{GlobalAlloc, Layout};
//!
//! static HEAP: RegionAllocator<SpinPlatform> = RegionAllocator::new();
//!
//! #[repr(align(16))]
//! struct Memory([u8; 16 * 1024]);
//! static mut MEMORY: Memory = Memory([0; 16 * 1024]);
//!
//! // SAFETY (example): MEMORY is used by nothing else.
//! let memory: &'static mut [u8] = unsafe { &mut *core::ptr::addr_of_mut!(MEMORY.0) };
//! HEAP.init(memory, HeapConfig::default(), SpinPlatform::new(1))?;
//! let layout = Layout::from_size_align(100, 8).unwrap();
//! // SAFETY (example): non-zero layout, freed with the same layout.
//! unsafe {
//!     let p = HEAP.alloc(layout);
//!     assert!(!p.is_null());
//!     HEAP.dealloc(p, layout);
//! }
//! # Ok::<(), shm_core::Error>(())
//! ```
//! On firmware, mark the static `#[global_allocator]` and use
//! [`CriticalSectionPlatform`](crate::CriticalSectionPlatform) so interrupt handlers may
//! allocate too.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use crate::{Error, Heap, HeapConfig, Member, Offset, Platform, Region};

/// A region used as the global allocator. Until [`init`](RegionAllocator::init) runs,
/// every allocation fails (returns null).
pub struct RegionAllocator<P: Platform + Send + Sync + 'static> {
    /// The error when `init` failed: then every allocation returns null, and later calls
    /// to `init` report the same error.
    heap: spin::Once<Result<(Heap<'static, P>, Member), Error>>,
}

impl<P: Platform + Send + Sync + 'static> core::fmt::Debug for RegionAllocator<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegionAllocator")
            .field("usable", &self.slot().is_some())
            .finish()
    }
}

impl<P: Platform + Send + Sync + 'static> Default for RegionAllocator<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Platform + Send + Sync + 'static> RegionAllocator<P> {
    /// An allocator with no memory yet.
    pub const fn new() -> Self {
        RegionAllocator {
            heap: spin::Once::new(),
        }
    }

    /// Formats `memory` as the heap and registers the program as its one process. Only the
    /// first call has an effect; later calls return its result again (they cannot use
    /// their `memory`, which is left untouched).
    pub fn init(
        &self,
        memory: &'static mut [u8],
        config: HeapConfig,
        platform: P,
    ) -> Result<(), Error> {
        self.heap
            .call_once(|| {
                Region::from_slice(memory)
                    .and_then(|region| Heap::init(region, config, platform))
                    .and_then(|heap| heap.register().map(|me| (heap, me)))
            })
            .as_ref()
            .map(|_| ())
            .map_err(|e| *e)
    }

    fn slot(&self) -> Option<&(Heap<'static, P>, Member)> {
        self.heap.get().and_then(|r| r.as_ref().ok())
    }

    /// The heap, once initialised.
    pub fn heap(&self) -> Option<&Heap<'static, P>> {
        self.slot().map(|(h, _)| h)
    }

    /// The member that owns every block this allocator hands out.
    pub fn process(&self) -> Option<Member> {
        self.slot().map(|(_, me)| *me)
    }
}

// SAFETY: `alloc` returns either null or a pointer to at least `layout.size()` bytes aligned
// to `layout.align()`, inside a block owned by this allocator's process and used for
// nothing else until `dealloc` frees it; `dealloc` frees exactly the block `alloc` made.
unsafe impl<P: Platform + Send + Sync + 'static> GlobalAlloc for RegionAllocator<P> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((heap, me)) = self.slot() else {
            return ptr::null_mut();
        };
        let Ok(size) = u32::try_from(layout.size()) else {
            return ptr::null_mut();
        };
        let align = layout.align();
        if align <= heap.align() as usize {
            return match heap.try_alloc(*me, size).and_then(|b| heap.payload(b)) {
                Ok((p, _)) => p.as_ptr(),
                Err(_) => ptr::null_mut(),
            };
        }
        // Over-aligned: room to slide the pointer, plus 4 bytes for the block's offset.
        // An alignment that does not fit in u32 cannot be provided by a heap whose
        // offsets are u32 (a plain `as u32` would turn 2^32 into 0 and the shift below
        // would leave the block).
        let Some(padded) = u32::try_from(align)
            .ok()
            .and_then(|a| a.checked_add(4))
            .and_then(|extra| size.checked_add(extra))
        else {
            return ptr::null_mut();
        };
        let Ok((base, _)) = heap.try_alloc(*me, padded).and_then(|b| heap.payload(b)) else {
            return ptr::null_mut();
        };
        let block = heap
            .region()
            .offset_of_ptr(base.as_ptr())
            .map_or(0, Offset::get);
        // The first multiple of `align` at least 4 bytes into the payload.
        let base_addr = base.as_ptr() as usize;
        let Some(shift) = base_addr
            .checked_add(4)
            .and_then(|a| a.checked_next_multiple_of(align))
            .and_then(|a| a.checked_sub(base_addr))
        else {
            // Only at the very top of the address space, where no heap lies.
            let _ = heap.free(*me, Offset::new(block));
            return ptr::null_mut();
        };
        // SAFETY: `shift <= align + 3 < padded - size`, so the aligned pointer and the
        // `size` bytes after it stay inside the block.
        let aligned = unsafe { base.as_ptr().add(shift) };
        // SAFETY: `aligned - 4` is inside the block (shift >= 4) and 4-aligned (aligned is
        // aligned to more than the heap alignment, which is at least 8).
        unsafe { aligned.sub(4).cast::<u32>().write(block) };
        aligned
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((heap, me)) = self.slot() else {
            return;
        };
        let block = if layout.align() <= heap.align() as usize {
            heap.region().offset_of_ptr(ptr)
        } else {
            // SAFETY: `alloc` stored the block's offset in the 4 bytes before `ptr`.
            Some(Offset::new(unsafe { ptr.sub(4).cast::<u32>().read() }))
        };
        if let Some(block) = block {
            // An error here means the caller passed a pointer this allocator did not
            // make; GlobalAlloc has no way to report it, and ignoring it is the safe choice.
            let _ = heap.free(*me, block);
        }
    }
}
