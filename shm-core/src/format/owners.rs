//! The process table and owner tables: which process owns which block.
//!
//! Every registered process has a [`ProcessRecord`] in a service block (allocated from the
//! high end of the heap), followed by its owner array of [`OwnerCell`]s. A used cell holds
//! the payload offset of a block the process owns; a free cell holds the index of the next
//! free cell, so the free cells form a list inside the array and taking or returning a cell
//! is O(1). When the array is full it is moved to a larger service block.
//!
//! A process table in its own service block maps a [`ProcSlot`](crate::ProcSlot) to the
//! offset of that process's record. Each block header names its first owner as (slot,
//! cell), and each cell names the next co-owner the same way, so:
//! - freeing a block finds its owner's cell in O(1), whatever the number of processes
//!   (the original design searched the process list);
//! - a block shared by `n` processes is on a chain of exactly `n` cells (its reference
//!   count), and releasing one reference walks at most that chain;
//! - moving an owner array does not touch any block header (slots and cell indices stay).

use core::mem::size_of;
use core::sync::atomic::AtomicU32;

use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::region::ShmSafe;

/// Most process slots a region can have: an owner reference keeps 8 bits for the slot
/// (see [`OwnerRef`](crate::format::OwnerRef)), and 0xFF is never a slot. Also a
/// process-local bound for every walk over slots or owner chains, whatever the region's
/// (untrusted) `proc_capacity` says.
pub const MAX_SLOTS: u32 = 0xFF;

/// Marker for "no cell" in a free-cell link.
pub const NO_CELL: u32 = 0xFF_FFFF;

/// Most cells one owner table holds, so most blocks one process owns at once (the cell
/// index is 24 bits, 0xFF_FFFF means none).
pub const MAX_CELLS: u32 = 0xFF_FFFF;

/// A registered process: identity, owner-array bookkeeping, reserve. Its owner cells
/// follow it in the same block.
///
/// Invariants (checked by [`Heap::check`](crate::Heap::check)):
/// - `slot` is the index of the process-table entry that points here;
/// - `cells_used` plus the length of the free-cell list starting at `free_cell` equals
///   `cell_capacity`, and the block is large enough for `cell_capacity` cells;
/// - `owned_bytes` is the sum of the sizes of the blocks its used cells name;
/// - `reserve` is 0 or the payload offset of a block this process owns;
/// - `leaving` is 0 or 1, and once 1 it stays 1 until the record is freed.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
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
    /// 1 once reclaiming or unregistering this incarnation has begun, 0 before. A leaving
    /// incarnation may not act any more: its blocks are being freed one operation at a
    /// time, and bytes it wrote into one (a participant record, say) would pass
    /// validation again if it allocated the same block anew. (Also keeps the cells that
    /// follow 8-aligned.)
    pub leaving: AtomicU32,
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for ProcessRecord {}

/// One entry of an owner array.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct OwnerCell {
    /// Used: payload offset of the owned block. Free: 0.
    pub block: AtomicU32,
    /// Used: the next co-owner ([`OwnerRef`](crate::format::OwnerRef) word, or `NO_OWNER`).
    /// Free: next free cell index, or [`NO_CELL`].
    pub next: AtomicU32,
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
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
