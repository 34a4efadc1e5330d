//! Owner tables: which process owns which block.
//!
//! Every registered process has a [`ProcessRecord`] in a service block (allocated from the
//! high end of the heap), followed by its owner array of [`OwnerCell`]s. A used cell holds
//! the payload offset of a block the process owns; a free cell holds the index of the next
//! free cell, so the free cells form a list inside the array and taking or returning a
//! cell is O(1). When the array is full it is moved to a larger service block.
//!
//! A process table in its own service block maps a [`ProcSlot`] to the offset of that
//! process's record. Each block header names its first owner as (slot, cell), and each
//! cell names the next co-owner the same way, so:
//! - freeing a block finds its owner's cell in O(1), whatever the number of processes
//!   (the original design searched the process list);
//! - a block shared by `n` processes is on a chain of exactly `n` cells (its reference
//!   count), and releasing one reference walks at most that chain;
//! - moving an owner array does not touch any block header (slots and cell indices stay).

use core::mem::size_of;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::block::{BlockHeader, OwnerRef};
use crate::error::{corrupt, CorruptionKind, Error};
use crate::layout::{MAX_CELLS, NO_CELL};
use crate::region::ShmSafe;

pub use crate::ids::ProcSlot;

/// A registered process: identity, owner-array bookkeeping, reserve. Its owner cells
/// follow it in the same block.
///
/// Invariants (checked by [`Heap::check`](crate::Heap::check)):
/// - `slot` is the index of the process-table entry that points here;
/// - `cells_used` plus the length of the free-cell list starting at `free_cell` equals
///   `cell_capacity`, and the block is large enough for `cell_capacity` cells;
/// - `owned_bytes` is the sum of the sizes of the blocks its used cells name;
/// - `reserve` is 0 or the payload offset of a block this process owns.
#[repr(C)]
#[derive(Debug)]
pub struct ProcessRecord {
    /// Operating-system process id.
    pub pid: AtomicU32,
    /// Process-id reuse tag (see [`ProcessId`](crate::ProcessId)).
    pub tag: AtomicU32,
    /// This record's slot in the process table.
    pub slot: AtomicU32,
    /// Registration serial number; tells a reused slot from its previous occupant.
    pub serial: AtomicU32,
    /// Number of cells in the owner array.
    pub cell_capacity: AtomicU32,
    /// Number of used cells.
    pub cells_used: AtomicU32,
    /// Index of the first free cell, [`NO_CELL`] when full.
    pub free_cell: AtomicU32,
    /// Payload offset of the reserve block, 0 when none.
    pub reserve: AtomicU32,
    /// Bytes of all blocks this process owns or co-owns (headers included).
    pub owned_bytes: AtomicU32,
    /// Words for the layer above (the protocol keeps its client record offset here).
    pub app: [AtomicU32; 3],
    /// Allocations of this process blocked waiting for memory (its share of the header's
    /// `waiters`, given back when a dead process is reclaimed).
    pub waiting: AtomicU32,
    /// Reserved, zero (keeps the cells that follow 8-aligned).
    pub reserved: AtomicU32,
}

// SAFETY: repr(C), only AtomicU32, no padding.
unsafe impl ShmSafe for ProcessRecord {}

/// One entry of an owner array.
#[repr(C)]
#[derive(Debug)]
pub struct OwnerCell {
    /// Used: payload offset of the owned block. Free: 0.
    pub block: AtomicU32,
    /// Used: the next co-owner ([`OwnerRef`] word, or `NO_OWNER`). Free: next free cell
    /// index, or [`NO_CELL`].
    pub next: AtomicU32,
}

// SAFETY: repr(C), two AtomicU32.
unsafe impl ShmSafe for OwnerCell {}

/// Cells in a new owner array.
pub const INITIAL_CELLS: u32 = 16;

/// Bytes of payload a process block with `cells` cells needs. Saturates at `u32::MAX` for
/// a count too large to fit (no block is that large).
pub const fn record_bytes(cells: u32) -> u32 {
    cells
        .saturating_mul(size_of::<OwnerCell>() as u32)
        .saturating_add(size_of::<ProcessRecord>() as u32)
}

/// The next capacity when an owner array of `cells` is full, or `None` at the limit.
pub const fn grown_capacity(cells: u32) -> Option<u32> {
    if cells >= MAX_CELLS {
        None
    } else if cells >= MAX_CELLS / 2 {
        Some(MAX_CELLS)
    } else {
        cells.checked_mul(2)
    }
}

/// A validated process record: its offset and a reference to it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordRef<'m> {
    /// Payload offset of the record.
    pub at: u32,
    /// The record.
    pub rec: &'m ProcessRecord,
    /// Its slot.
    pub slot: ProcSlot,
}

impl<'m> RecordRef<'m> {
    /// Offset of cell `index` (unchecked against the capacity). Saturates at `u32::MAX`,
    /// which is no word's offset (misaligned, past every range): reading there fails.
    #[inline]
    pub(crate) fn cell_offset(&self, index: u32) -> u32 {
        self.at.saturating_add(record_bytes(index))
    }

    /// The owner reference naming cell `index` of this process.
    #[inline]
    pub(crate) fn owner_ref(&self, index: u32) -> OwnerRef {
        OwnerRef {
            slot: self.slot.0,
            cell: index as u16,
        }
    }
}

/// Checks that a record's block is large enough for its capacity and that its counters are
/// in range. `block` is the record's block header.
pub(crate) fn validate_record(
    at: u32,
    rec: &ProcessRecord,
    block: &BlockHeader,
    header_size: u32,
    slot: ProcSlot,
) -> Result<(), Error> {
    let cap = rec.cell_capacity.load(Relaxed);
    let used = rec.cells_used.load(Relaxed);
    let free = rec.free_cell.load(Relaxed);
    let bad = || corrupt(at, CorruptionKind::BadOwnerTable);
    if rec.slot.load(Relaxed) != u32::from(slot.0) {
        return Err(corrupt(at, CorruptionKind::BadProcessTable));
    }
    if cap == 0 || cap > MAX_CELLS || used > cap || (free != NO_CELL && free >= cap) {
        return Err(bad());
    }
    if header_size
        .checked_add(record_bytes(cap))
        .is_none_or(|need| block.size() < need)
        || !block.is_used()
    {
        return Err(bad());
    }
    Ok(())
}
