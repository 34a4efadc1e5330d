//! [`Region`]: this process's view of a region's memory, and the only place where an
//! [`Offset`] becomes a pointer.
//!
//! A region is one or more disjoint ranges of memory that share one base address (the start
//! of the first range, where the header lives). Offsets are measured from that base. Each
//! range keeps its own pointer, so turning an offset into a pointer never steps from one
//! allocation into another, and every conversion is bounds-checked against the ranges.
//!
//! Shared structures are read and written through [`ShmSafe`] types made only of atomics:
//! another process may write the same words at any time, so plain loads and stores would
//! be data races. Relaxed atomic accesses compile to plain moves on the targets we support
//! and keep even a hostile writer from causing undefined behaviour in this process.

use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::AtomicU32;

use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::error::{corrupt, AttachError, CorruptionKind, Error};
use crate::offset::Offset;

/// Most disjoint ranges one region may span (a format constant: the header records that
/// many ranges).
pub const MAX_RANGES: usize = 8;

/// Marks a type that may be placed in a region and referenced from several processes.
///
/// Half of the contract is proven by the compiler, through the supertraits: `FromBytes`
/// (every bit pattern is a valid value, whatever another process wrote), `IntoBytes` (no
/// padding: every byte belongs to a field) and `KnownLayout`, derived by `zerocopy`, and
/// an alignment of at most 8 (asserted where a region hands out a `&T`).
///
/// # Safety
/// The other half is the implementer's: every field is an `AtomicU32`/`AtomicU64` (or an
/// array or structure of them), so that shared mutation through `&Self` - by this
/// process's threads and by other processes - is never a data race.
pub unsafe trait ShmSafe: Sync + FromBytes + IntoBytes + KnownLayout {}

// SAFETY: AtomicU32 is a single 4-byte atomic.
unsafe impl ShmSafe for AtomicU32 {}

/// One range of memory as supplied by the caller.
#[derive(Clone, Copy, Debug)]
pub struct RawRange {
    /// Start of the range.
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

#[derive(Clone, Copy, Debug)]
struct RangeView {
    /// Pointer to the byte at offset `start`.
    ptr: NonNull<u8>,
    /// Offset of the first byte of the range.
    start: u32,
    /// Offset one past the last byte of the range.
    end: u32,
}

/// This process's view of a region: where each of its ranges is mapped.
///
/// A `Region` holds no state of its own beyond the mapping; everything else lives in the
/// region's bytes. Copying the bytes to another address and building a new `Region` over
/// the copy gives the same heap.
#[derive(Clone, Debug)]
pub struct Region<'m> {
    /// The first range (offset 0 up, holding the header): most regions have no other, so
    /// `ptr` and `offset_of` try it before walking `ranges`.
    first: RangeView,
    ranges: heapless::Vec<RangeView, MAX_RANGES>,
    _memory: PhantomData<&'m [AtomicU32]>,
}

// SAFETY: a `Region` is a set of pointers into memory that is only ever accessed through
// atomics (shared structures) or through the block-ownership protocol (payloads), both of
// which are sound from any thread; the pointers themselves carry no thread affinity.
unsafe impl Send for Region<'_> {}
// SAFETY: as above; `&Region` only hands out `&T` for `T: ShmSafe` (atomics) and raw
// pointers, so sharing it between threads cannot create a data race by itself.
unsafe impl Sync for Region<'_> {}

impl<'m> Region<'m> {
    /// A region over one slice of memory, borrowed for as long as the `Region` lives.
    ///
    /// The slice must start at an address aligned to 16.
    pub fn from_slice(memory: &'m mut [u8]) -> Result<Self, Error> {
        let range = RawRange {
            ptr: memory.as_mut_ptr(),
            len: memory.len(),
        };
        // SAFETY: the exclusive borrow of `memory` for 'm makes it valid, and accessed
        // only through this `Region`, for the whole lifetime of the view.
        unsafe { Self::from_raw_ranges(&[range]) }
    }

    /// A region over one range of raw memory (a shared-memory mapping).
    ///
    /// # Safety
    /// `ptr..ptr+len` must be valid for reads and writes for `'m`, and other code (in this
    /// or other processes) may access it only through this crate's protocol.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> Result<Self, Error> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::from_raw_ranges(&[RawRange { ptr, len }]) }
    }

    /// A region made of several disjoint ranges sharing one base: the start of the first
    /// range, which holds the header. Ranges must be in increasing address order and must
    /// not overlap; at most [`MAX_RANGES`] of them, all within 4 GiB
    /// of the base (offsets are 32-bit).
    ///
    /// # Safety
    /// Every range must be valid for reads and writes for `'m`, and other code may access
    /// it only through this crate's protocol.
    pub unsafe fn from_raw_ranges(ranges: &[RawRange]) -> Result<Self, Error> {
        let first = ranges.first().ok_or(AttachError::BadConfig)?;
        if ranges.len() > MAX_RANGES {
            return Err(AttachError::BadConfig.into());
        }
        let base = first.ptr as usize;
        if base % 16 != 0 {
            return Err(AttachError::Misaligned.into());
        }
        let mut views = heapless::Vec::new();
        let mut prev_end: u64 = 0;
        for r in ranges {
            let ptr = NonNull::new(r.ptr).ok_or(AttachError::BadConfig)?;
            let addr = r.ptr as usize;
            let start = addr.checked_sub(base).ok_or(AttachError::BadConfig)? as u64;
            let end = start
                .checked_add(r.len as u64)
                .ok_or(AttachError::BadConfig)?;
            if end > u64::from(u32::MAX) {
                return Err(AttachError::TooLarge { supplied: end }.into());
            }
            if start < prev_end || r.len == 0 {
                return Err(AttachError::BadConfig.into());
            }
            prev_end = end;
            views
                .push(RangeView {
                    ptr,
                    start: start as u32,
                    end: end as u32,
                })
                .map_err(|_| AttachError::BadConfig)?;
        }
        let first_view = *views.first().ok_or(AttachError::BadConfig)?;
        Ok(Region {
            first: first_view,
            ranges: views,
            _memory: PhantomData,
        })
    }

    /// Address of the base (offset 0), for alignment checks and diagnostics.
    pub fn base_addr(&self) -> usize {
        self.ranges.first().map_or(0, |r| r.ptr.as_ptr() as usize)
    }

    /// Number of ranges.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// `(start, end)` offsets of range `i`.
    pub fn range(&self, i: usize) -> Option<(u32, u32)> {
        self.ranges.get(i).map(|r| (r.start, r.end))
    }

    /// Offset one past the last byte of the last range.
    pub fn end(&self) -> u32 {
        self.ranges.last().map_or(0, |r| r.end)
    }

    /// Total bytes over all ranges.
    pub fn total_len(&self) -> u64 {
        // `end > start` for every range (checked when the view was built).
        self.ranges
            .iter()
            .map(|r| u64::from(r.end.saturating_sub(r.start)))
            .sum()
    }

    /// The pointer to `len` bytes at `offset`, if they lie inside one range.
    ///
    /// This is the edge where an offset read from shared memory (untrusted) becomes a
    /// pointer: nothing else in the crate does pointer arithmetic on region memory.
    #[inline]
    pub fn ptr(&self, offset: Offset, len: u32) -> Result<NonNull<u8>, Error> {
        let off = offset.get();
        let end = off
            .checked_add(len)
            .ok_or_else(|| corrupt(off, CorruptionKind::OutOfBounds))?;
        if end <= self.first.end {
            // SAFETY: the first range starts at offset 0 and `off <= end <= first.end`, so
            // the result is inside the range `first.ptr` points into (or one past its end
            // for a zero length), as the loop below gives for any range.
            return Ok(unsafe { self.first.ptr.add(off as usize) });
        }
        for r in self.ranges.iter().skip(1) {
            if end > r.end {
                continue;
            }
            if let Some(rel) = off.checked_sub(r.start) {
                // SAFETY: `rel = off - r.start <= end - r.start <= r.end - r.start`, the
                // length of the range `r.ptr` points into, so the result stays inside it
                // (or one past its end, for a zero length).
                return Ok(unsafe { r.ptr.add(rel as usize) });
            }
        }
        Err(corrupt(off, CorruptionKind::OutOfBounds))
    }

    /// A shared reference to the `T` stored at `offset`, after checking bounds and
    /// alignment. The reference lives as long as the mapping.
    #[inline(always)]
    pub fn get<T: ShmSafe>(&self, offset: u32) -> Result<&'m T, Error> {
        // The base is 16-aligned and offsets are checked against `T`'s alignment below;
        // an alignment above 8 would need more than the format promises.
        const { assert!(align_of::<T>() <= 8) };
        if (offset as usize).checked_rem(align_of::<T>()) != Some(0) {
            return Err(corrupt(offset, CorruptionKind::Misaligned));
        }
        let p = self.ptr(Offset::new(offset), size_of::<T>() as u32)?;
        // SAFETY: `p` is in bounds for `size_of::<T>()` bytes, aligned for `T` (the base is
        // 16-aligned and `T`'s alignment is at most 8), the memory is valid for 'm, and
        // `T: ShmSafe` is made only of atomics, so any bits are a valid `T` and concurrent
        // access through `&T` is sound.
        Ok(unsafe { p.cast::<T>().as_ref() })
    }

    /// The word at `offset` (4-aligned, in bounds).
    #[inline]
    pub fn word(&self, offset: u32) -> Result<&'m AtomicU32, Error> {
        self.get::<AtomicU32>(offset)
    }

    /// The offset of a word referenced inside this region (the inverse of [`word`]).
    ///
    /// [`word`]: Region::word
    #[inline]
    pub fn offset_of(&self, word: &AtomicU32) -> Result<u32, Error> {
        let addr = word as *const AtomicU32 as usize;
        // The first range starts at offset 0: a word inside it is at `rel` (< its end, so
        // it fits in u32).
        if let Some(rel) = addr.checked_sub(self.first.ptr.as_ptr() as usize) {
            if rel
                .checked_add(4)
                .is_some_and(|e| e <= self.first.end as usize)
            {
                return Ok(rel as u32);
            }
        }
        for r in self.ranges.iter().skip(1) {
            let start = r.ptr.as_ptr() as usize;
            // `end > start` (checked when the view was built).
            let len = r.end.saturating_sub(r.start) as usize;
            let Some(rel) = addr.checked_sub(start) else {
                continue;
            };
            if rel.checked_add(4).is_some_and(|e| e <= len) {
                // `rel < len`, so `rel` fits in u32 and `r.start + rel < r.end`.
                if let Some(off) = r.start.checked_add(rel as u32) {
                    return Ok(off);
                }
            }
        }
        Err(corrupt(0, CorruptionKind::OutOfBounds))
    }

    /// The offset of a byte pointer into this region, if it points into one of its ranges.
    pub fn offset_of_ptr(&self, ptr: *const u8) -> Option<Offset> {
        let addr = ptr as usize;
        self.ranges.iter().find_map(|r| {
            let start = r.ptr.as_ptr() as usize;
            // `end > start` (checked when the view was built).
            let len = r.end.saturating_sub(r.start) as usize;
            let rel = addr.checked_sub(start).filter(|rel| *rel < len)?;
            // `rel < len`, so `rel` fits in u32 and `r.start + rel < r.end`.
            r.start.checked_add(rel as u32).map(Offset::new)
        })
    }

    /// Whether `offset..offset+len` lies inside one range.
    #[inline]
    pub fn contains(&self, offset: u32, len: u32) -> bool {
        self.ptr(Offset::new(offset), len).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::AtomicU32;

    use super::{RawRange, Region};
    use crate::offset::Offset;

    #[repr(align(16))]
    struct Memory([u8; 512]);

    /// Offsets map to `base + offset` exactly when `offset..offset+len` lies inside one
    /// range (a zero length at a range's end included), and `offset_of` maps a word back
    /// exactly when the word lies inside one range: the first range (tried before the
    /// others) and the later ones alike, with accesses that straddle a range's end, fall
    /// in a gap or overflow refused.
    #[test]
    #[allow(clippy::arithmetic_side_effects)]
    fn offsets_resolve_inside_one_range_only() {
        let mut memory = Memory([0; 512]);
        let base = memory.0.as_mut_ptr();
        // Ranges [0, 130), [192, 256), [320, 512): gaps between them, and a first range
        // whose last word would straddle its end.
        let spans = [(0u32, 130u32), (192, 256), (320, 512)];
        let ranges = spans.map(|(start, end)| RawRange {
            // SAFETY: `start < 512`, inside `memory`.
            ptr: unsafe { base.add(start as usize) },
            len: (end - start) as usize,
        });
        // SAFETY: the ranges lie inside `memory`, which outlives `region` and is reached
        // only through it (and the word references below, atomics) meanwhile.
        let region = unsafe { Region::from_raw_ranges(&ranges) }.unwrap();
        let inside = |off: u32, len: u32| {
            spans
                .iter()
                .any(|&(start, end)| off >= start && off + len <= end)
        };
        for len in [0u32, 1, 4, 8, 64] {
            for off in 0..520u32 {
                match region.ptr(Offset::new(off), len) {
                    Ok(p) => {
                        assert!(inside(off, len), "offset {off} len {len} resolved outside");
                        assert_eq!(p.as_ptr() as usize, base as usize + off as usize);
                    }
                    Err(_) => assert!(!inside(off, len), "offset {off} len {len} refused inside"),
                }
            }
        }
        assert!(
            region.ptr(Offset::new(u32::MAX - 2), 4).is_err(),
            "offset + len overflows"
        );
        for off in (0..512u32).step_by(4) {
            // The word at `base + off`, whether or not the region covers it.
            // SAFETY: `off + 4 <= 512`, inside `memory`, 4-aligned (the base is 16-aligned).
            let word: &AtomicU32 = unsafe { &*base.add(off as usize).cast::<AtomicU32>() };
            match region.offset_of(word) {
                Ok(o) => {
                    assert!(inside(off, 4), "word at {off} found outside the ranges");
                    assert_eq!(o, off);
                    assert!(core::ptr::eq(region.word(off).unwrap(), word));
                }
                Err(_) => {
                    assert!(!inside(off, 4), "word at {off} refused inside a range");
                    assert!(region.word(off).is_err());
                }
            }
        }
    }
}
