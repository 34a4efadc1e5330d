//! [`Space`]: where everything is - the region, its header, the block geometry and the
//! ranges the blocks tile - and the checked way from an offset to a block header
//! ([`Space::block`], [`Space::used_block`]). Every part of the heap works through it.

use core::mem::size_of;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::error::{corrupt, AttachError, CorruptionKind, Error};
use crate::format::{BlockHeader, RegionHeader, ALIGN_RANGE, END, MAX_RANGES, USED};
use crate::journal::{FaultInjector, Journal, Tx};
use crate::offset::Offset;
use crate::region::Region;

/// Sizes derived from the alignment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// Block alignment.
    pub align: u32,
    /// Bytes of header in front of each payload (16 rounded up to the alignment).
    pub hsize: u32,
    /// Smallest block worth splitting off.
    pub min_block: u32,
    /// `align - 1`: an offset or size is aligned when it has none of these bits. A mask
    /// test instead of a remainder, because `align` is a power of two (checked in `new`)
    /// and the test sits on every block lookup.
    align_mask: u32,
}

impl Geometry {
    pub(crate) fn new(align: u32, base_addr: usize) -> Result<Self, Error> {
        if !align.is_power_of_two() || align < ALIGN_RANGE.0 || align > ALIGN_RANGE.1 {
            return Err(AttachError::BadConfig.into());
        }
        // Offsets are aligned relative to the base, so the base must be aligned too.
        if base_addr.checked_rem(align as usize) != Some(0) {
            return Err(AttachError::Misaligned.into());
        }
        let hsize =
            align_up(size_of::<BlockHeader>() as u32, align).ok_or(AttachError::BadConfig)?;
        Ok(Geometry {
            align,
            hsize,
            min_block: hsize.checked_mul(2).ok_or(AttachError::BadConfig)?,
            align_mask: align.checked_sub(1).ok_or(AttachError::BadConfig)?,
        })
    }

    /// Whether `v` is a multiple of the alignment.
    #[inline]
    pub(crate) fn is_aligned(&self, v: u32) -> bool {
        v & self.align_mask == 0
    }

    /// Block size for a request of `bytes` payload bytes.
    #[inline]
    pub(crate) fn block_size(&self, bytes: u32) -> Result<u32, Error> {
        if bytes == 0 {
            return Err(Error::InvalidSize { requested: 0 });
        }
        let need = bytes
            .checked_add(self.hsize)
            .and_then(|n| align_up(n, self.align))
            .ok_or(Error::InvalidSize {
                requested: u64::from(bytes),
            })?;
        Ok(need.max(self.min_block))
    }
}

/// Rounds up to a multiple of a power of two, `None` on overflow.
#[inline]
pub(crate) const fn align_up(v: u32, align: u32) -> Option<u32> {
    let Some(mask) = align.checked_sub(1) else {
        return None;
    };
    match v.checked_add(mask) {
        Some(x) => Some(x & !mask),
        None => None,
    }
}

/// Where the blocks of one range are: the first block and the end marker.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeapRange {
    /// Offset of the first block.
    pub lo: u32,
    /// Offset of the end marker (one past the last block).
    pub hi: u32,
}

/// Everything an operation needs to find its way around the region.
#[derive(Debug)]
pub(crate) struct Space<'m> {
    pub region: Region<'m>,
    pub hdr: &'m RegionHeader,
    pub geo: Geometry,
    pub ranges: heapless::Vec<HeapRange, MAX_RANGES>,
    /// Most blocks the ranges can hold: the bound on every walk.
    pub max_blocks: u32,
}

impl<'m> Space<'m> {
    /// The undo journal.
    pub(crate) fn journal(&self) -> Journal<'m> {
        Journal {
            head: &self.hdr.journal,
            entries: &self.hdr.journal_entries,
            deferred: &self.hdr.deferred,
            dirty: &self.hdr.derived_dirty,
        }
    }

    /// Starts an operation with code `op` (the caller holds the lock; see [`Tx::begin`]).
    pub(crate) fn begin<'a>(&'a self, op: u32, faults: &'a FaultInjector) -> Tx<'a, 'm> {
        Tx::begin(&self.region, self.journal(), op, faults)
    }

    /// Header words outside the allocator state that operations journal: the deferred
    /// store's and the waiter count.
    pub(crate) fn journaled_header_words(&self) -> [&'m AtomicU32; 5] {
        let [at, expect, value, bell] = self.journal().deferred_words();
        [at, expect, value, bell, &self.hdr.waiters]
    }

    /// The root word (see [`RegionHeader::root`]).
    pub(crate) fn root(&self) -> &'m AtomicU32 {
        &self.hdr.root
    }

    pub(crate) fn new(
        region: Region<'m>,
        hdr: &'m RegionHeader,
        geo: Geometry,
        ranges: heapless::Vec<HeapRange, MAX_RANGES>,
    ) -> Self {
        let max_blocks = ranges
            .iter()
            .map(|r| {
                // A bound: saturating only makes it looser (`hi > lo`, `min_block > 0`).
                r.hi.saturating_sub(r.lo)
                    .checked_div(geo.min_block)
                    .map_or(u32::MAX, |n| n.saturating_add(1))
            })
            .fold(1u32, u32::saturating_add);
        Space {
            region,
            hdr,
            geo,
            ranges,
            max_blocks,
        }
    }
}

impl<'m> Space<'m> {
    /// The range holding block offset `b`, if any.
    #[inline]
    pub(crate) fn range_of(&self, b: u32) -> Option<HeapRange> {
        self.ranges.iter().copied().find(|r| b >= r.lo && b <= r.hi)
    }

    /// The header of the block at `b`, checked: aligned, inside a range, its size sane and
    /// inside the same range. End markers are returned as they are.
    #[inline]
    pub(crate) fn block(&self, b: u32) -> Result<&'m BlockHeader, Error> {
        self.block_or_end(b).map(|(h, _)| h)
    }

    /// [`Self::block`], and whether `b` is its range's end marker (told by its place, so
    /// a later read of the header's flags cannot change the answer).
    #[inline]
    fn block_or_end(&self, b: u32) -> Result<(&'m BlockHeader, bool), Error> {
        if !self.geo.is_aligned(b) {
            return Err(corrupt(b, CorruptionKind::Misaligned));
        }
        let r = self
            .range_of(b)
            .ok_or_else(|| corrupt(b, CorruptionKind::OutOfBounds))?;
        let h: &'m BlockHeader = self.region.get(b)?;
        let size = h.size();
        if b == r.hi {
            if h.size_flags.load(Relaxed) != self.geo.hsize | USED | END {
                return Err(corrupt(b, CorruptionKind::BadBlockSize));
            }
        } else if h.flags() & END != 0
            || size < self.geo.min_block
            || !self.geo.is_aligned(size)
            // `b <= r.hi` (from `range_of`): the room never saturates.
            || size > r.hi.saturating_sub(b)
        {
            return Err(corrupt(b, CorruptionKind::BadBlockSize));
        }
        Ok((h, b == r.hi))
    }

    /// A used, non-end block named by a payload offset from a caller; a bad offset is the
    /// caller's error ([`Error::BadOffset`], [`Error::DoubleFree`]), not corruption.
    pub(crate) fn used_block(&self, payload: Offset) -> Result<(&'m BlockHeader, u32), Error> {
        let bad = Error::BadOffset { offset: payload };
        let b = payload.get().checked_sub(self.geo.hsize).ok_or(bad)?;
        let (h, end) = self.block_or_end(b).map_err(|_| bad)?;
        // The range's last offset is its end marker, whatever its flags say by now (a
        // second read of the header could see them changed).
        if end || h.flags() & END != 0 {
            return Err(bad);
        }
        if !h.is_used() {
            return Err(Error::DoubleFree { offset: payload });
        }
        Ok((h, b))
    }
}

/// Where the blocks of each range go: range 0 starts after the header, the others at their
/// first aligned offset; each ends with an end marker at its last aligned offset. A range
/// too small for one block and its end marker is left out. Computed from the process-local
/// view of the region, never from its (untrusted) bytes.
pub(crate) fn heap_ranges(
    region: &Region<'_>,
    geo: &Geometry,
) -> Result<heapless::Vec<HeapRange, MAX_RANGES>, Error> {
    let hdr_len = size_of::<RegionHeader>() as u32;
    let mut ranges = heapless::Vec::new();
    for i in 0..region.range_count() {
        let (start, end) = region.range(i).ok_or(AttachError::BadConfig)?;
        let lo = align_up(if i == 0 { hdr_len } else { start }, geo.align)
            .ok_or(AttachError::BadConfig)?;
        let mask = geo.align.checked_sub(1).ok_or(AttachError::BadConfig)?;
        let hi = (end & !mask).saturating_sub(geo.hsize);
        if hi.checked_sub(lo).is_none_or(|len| len < geo.min_block) {
            continue;
        }
        ranges
            .push(HeapRange { lo, hi })
            .map_err(|_| AttachError::BadConfig)?;
    }
    Ok(ranges)
}

/// Zeroes `len` bytes (a multiple of 4) at `off`.
pub(crate) fn zero_words(region: &Region<'_>, off: u32, len: u32) -> Result<(), Error> {
    let end = off
        .checked_add(len)
        .ok_or_else(|| corrupt(off, CorruptionKind::OutOfBounds))?;
    for o in (off..end).step_by(4) {
        region.word(o)?.store(0, Relaxed);
    }
    Ok(())
}
