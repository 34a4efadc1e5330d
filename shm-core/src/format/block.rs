//! [`BlockHeader`]: the 16 bytes in front of every block.
//!
//! A block is `size` bytes at an offset aligned to the heap alignment: its header, then
//! the payload. Blocks tile each range of the region exactly, from the first block to an
//! end marker (a header-only used block with the `END` flag) that stops merging across a
//! gap between ranges.
//!
//! | word | free block                         | used block                          |
//! |------|------------------------------------|-------------------------------------|
//! | 0    | size \| flags                      | size \| `USED` \| flags             |
//! | 1    | offset of the previous block       | offset of the previous block        |
//! | 2    | offset of the next free block      | reference count                     |
//! | 3    | reserved for a size-class index    | first owner: process slot, cell     |
//!
//! A used block is owned by processes (word 3 names the first owner cell, word 2 counts
//! them), is system data (word 3 `NO_OWNER`, count 0) or is kept (word 3 `KEPT_OWNER`,
//! count 0: owned by the region until a process takes it). A used block whose word 3 names
//! an owner cell but whose count is 0 is cached: freed into its one owner's process cache
//! (see [`Cache`](crate::Cache)), still owned by that process alone, so it counts as one
//! reference wherever references are counted, and is freed with its owner. Only its
//! owner writes that word while the block is cached, without the lock.
//!
//! Word 1 is a boundary tag: with it a block's physical neighbours are both found in O(1).
//! Word 3 of a free block is left for a future size-class index (a previous-free link).

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::region::ShmSafe;

/// Default block alignment, in bytes.
pub const DEFAULT_ALIGN: u32 = 16;

/// Smallest and largest block alignment accepted by [`HeapConfig`](crate::HeapConfig).
pub const ALIGN_RANGE: (u32, u32) = (8, 4096);

/// Marker for "no owner" in an owner reference (word 3 of a system block, the `next` of
/// the last cell on an owner chain).
pub const NO_OWNER: u32 = u32::MAX;

/// Owner word of a kept block: owned by the region rather than by a process, with
/// reference count 0, so no reclaim frees it (see [`Heap::keep`](crate::Heap::keep)).
/// Its slot byte, 0xFF, is never a process slot (a table holds at most 255).
pub const KEPT_OWNER: u32 = u32::MAX - 1;

/// Flag: the block is in use (allocated, an end marker, or system data).
pub const USED: u32 = 1;
/// Flag: the block was placed at the high end (long-lived service data).
pub const SERVICE: u32 = 2;
/// Flag: end marker of a range.
pub const END: u32 = 4;
/// All flag bits; sizes are multiples of at least 8.
pub const FLAGS: u32 = 7;

/// Header of one block.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct BlockHeader {
    /// Size in bytes including this header, ORed with the flags.
    pub size_flags: AtomicU32,
    /// Offset of the physically previous block in the same range, 0 for the first.
    pub prev_phys: AtomicU32,
    /// Free: next free block (0 ends the list). Used: reference count (0 with an owner:
    /// cached, one reference; see [`BlockHeader::refs`]).
    pub link: AtomicU32,
    /// Used: first owner reference ([`OwnerRef`]). Free: reserved.
    pub owner: AtomicU32,
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for BlockHeader {}

impl BlockHeader {
    /// Size in bytes, header included.
    #[inline]
    pub fn size(&self) -> u32 {
        self.size_flags.load(Relaxed) & !FLAGS
    }

    /// Flag bits.
    #[inline]
    pub fn flags(&self) -> u32 {
        self.size_flags.load(Relaxed) & FLAGS
    }

    /// Whether the block is in use.
    #[inline]
    pub fn is_used(&self) -> bool {
        self.flags() & USED != 0
    }

    /// Reference count of a used block: word 2, except that a cached block (count 0 with
    /// an owner) holds one.
    #[inline]
    pub fn refs(&self) -> u32 {
        cached_refs(self.link.load(Relaxed), self.owner.load(Relaxed))
    }

    /// Whether this used block is cached: owned, with count 0.
    #[inline]
    pub fn is_cached(&self) -> bool {
        self.link.load(Relaxed) == 0 && OwnerRef::unpack(self.owner.load(Relaxed)).is_some()
    }
}

/// The reference count a used block's count word `link` and owner word `owner` mean: the
/// count, or 1 for a cached block (count 0, owner a cell).
#[inline]
pub const fn cached_refs(link: u32, owner: u32) -> u32 {
    if link == 0 && OwnerRef::unpack(owner).is_some() {
        1
    } else {
        link
    }
}

/// A reference to one owner cell: process slot in the high byte, cell index in the low 24
/// bits, so a process can own up to [`MAX_CELLS`](crate::format::MAX_CELLS) blocks and a
/// region has at most [`MAX_SLOTS`](crate::format::MAX_SLOTS) slots. Slot 0xFF is never a
/// process slot, so [`NO_OWNER`] and [`KEPT_OWNER`] are never references.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    /// Process slot (below [`MAX_SLOTS`](crate::format::MAX_SLOTS)).
    pub slot: u16,
    /// Cell index in that process's owner table (below
    /// [`MAX_CELLS`](crate::format::MAX_CELLS)).
    pub cell: u32,
}

/// Bits of an owner reference that hold the cell index.
pub const CELL_BITS: u32 = 24;
/// The cell index of an owner reference.
const CELL_MASK: u32 = (1 << CELL_BITS) - 1;
/// The slot of an owner reference, once shifted down.
const SLOT_MASK: u32 = u32::MAX >> CELL_BITS;

impl OwnerRef {
    /// Packs into the stored word.
    #[inline]
    /// Both fields are in range wherever a reference is made (a record's slot is below
    /// the table's checked capacity, a cell below its array's); the masks only keep an
    /// out-of-range value from spilling into the other field.
    pub const fn pack(self) -> u32 {
        ((self.slot as u32 & SLOT_MASK) << CELL_BITS) | (self.cell & CELL_MASK)
    }

    /// Unpacks a stored word; `None` for [`NO_OWNER`] and [`KEPT_OWNER`].
    #[inline]
    pub const fn unpack(word: u32) -> Option<Self> {
        if word == NO_OWNER || word == KEPT_OWNER {
            None
        } else {
            Some(OwnerRef {
                slot: (word >> CELL_BITS) as u16,
                cell: word & CELL_MASK,
            })
        }
    }
}
