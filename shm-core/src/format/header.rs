//! [`RegionHeader`]: the fixed structure at offset 0 of every region.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::format::index::FreeIndex;
use crate::format::journal::{DeferredWords, JournalEntries, JournalHead};
use crate::format::lock::LockWord;
use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::region::{ShmSafe, MAX_RANGES};

/// "SHMIPC" followed by two format bytes, as two little-endian words.
pub const MAGIC: [u32; 2] = [
    u32::from_le_bytes(*b"SHMI"),
    u32::from_le_bytes(*b"PC\0\x01"),
];

/// Region format version. Bumped whenever the meaning of the bytes changes.
pub const FORMAT_VERSION: u32 = 8;

/// One range of the region, as recorded in the header (offsets from the base).
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct RangeDesc {
    /// Offset of the first byte.
    pub start: AtomicU32,
    /// Length in bytes.
    pub len: AtomicU32,
}

/// Allocator state and statistics.
///
/// Invariants (checked by [`Heap::check`](crate::Heap::check)):
/// - `free_bytes` and `free_blocks` are the sum of sizes and the number of free blocks;
/// - `min_free_bytes <= free_bytes`;
/// - `used_blocks` counts used blocks other than end markers;
/// - `proc_count` counts the non-zero entries of the process table;
/// - `kept_blocks` counts the kept blocks.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct HeapState {
    /// Reserved, zero (the free-list head of format 1; the free blocks are now found
    /// through [`RegionHeader::index`]).
    pub reserved0: AtomicU32,
    /// Bytes in all blocks (header included), end markers excluded. Fixed at format time.
    pub heap_bytes: AtomicU32,
    /// Bytes in free blocks (headers included).
    pub free_bytes: AtomicU32,
    /// Lowest value `free_bytes` has had.
    pub min_free_bytes: AtomicU32,
    /// Number of free blocks.
    pub free_blocks: AtomicU32,
    /// Number of used blocks.
    pub used_blocks: AtomicU32,
    /// Successful allocations, low and high word.
    pub allocs: [AtomicU32; 2],
    /// Successful frees, low and high word.
    pub frees: [AtomicU32; 2],
    /// Payload offset of the process table block.
    pub proc_table: AtomicU32,
    /// Entries in the process table.
    pub proc_capacity: AtomicU32,
    /// Registered processes.
    pub proc_count: AtomicU32,
    /// Registrations so far; the serial number of the next one.
    pub registrations: AtomicU32,
    /// Processes reclaimed after they died (or unregistered).
    pub reclaims: AtomicU32,
    /// Kept blocks: used blocks owned by the region rather than by a process (owner word
    /// [`KEPT_OWNER`](crate::format::KEPT_OWNER)), which no reclaim frees.
    pub kept_blocks: AtomicU32,
}

/// The region header at offset 0.
///
/// `magic`, `version`, `fingerprint` and `ready` let [`Heap::attach`](crate::Heap::attach)
/// refuse bytes it cannot read; `ranges` record where the heap lives; `lock` serialises
/// every mutation and names its holder so that a dead holder's lock can be broken; the
/// journal lets whoever breaks that lock undo the dead holder's half-done operation.
///
/// The words every operation writes - the lock, the journal's length, the deferred
/// store of a send - share one cache line (offset 128), so that an operation moves
/// as few lines as possible between cores.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct RegionHeader {
    /// [`MAGIC`].
    pub magic: [AtomicU32; 2],
    /// [`FORMAT_VERSION`].
    pub version: AtomicU32,
    /// [`LAYOUT_FINGERPRINT`](crate::format::LAYOUT_FINGERPRINT).
    pub fingerprint: AtomicU32,
    /// Offset one past the end of the last range.
    pub size: AtomicU32,
    /// Block alignment in bytes (a power of two).
    pub align: AtomicU32,
    /// Number of valid entries in `ranges`.
    pub range_count: AtomicU32,
    /// Non-zero once `init` has finished formatting.
    pub ready: AtomicU32,
    /// The ranges, in address order; range 0 starts at offset 0 and holds this header.
    pub ranges: [RangeDesc; MAX_RANGES],
    /// Bumped when an allocation finds too little memory: every process cache (see
    /// [`Cache`](crate::Cache)) that sees it change returns its blocks to the heap on its
    /// next operation. An advisory counter, changed outside operations and never
    /// journaled. It shares the read-mostly line of the ranges, not the lock's, so a
    /// cache's check of it stays a hit.
    pub cache_drain: AtomicU32,
    /// Reserved, zero (keeps the lock on its own cache line).
    pub reserved0: [AtomicU32; 7],
    /// The region lock.
    pub lock: LockWord,
    /// The journal's length and current operation.
    pub journal: JournalHead,
    /// A store deferred until after the running operation commits (a queue entry's
    /// publication); `at` is 0 when none is pending. Whoever breaks the lock of a process
    /// that died between its commit and the store makes it, and rings the doorbell it
    /// names, so a receiver does not sleep on a message that is there (see the `journal`
    /// module).
    pub deferred: DeferredWords,
    /// Times a dead holder's lock was broken.
    pub lock_breaks: AtomicU32,
    /// Incremented after every free; blocking allocators wait for it to change.
    pub free_epoch: AtomicU32,
    /// Number of blocked allocators (frees skip the wake-up when zero).
    pub waiters: AtomicU32,
    /// Non-zero while an operation may have left derived state (the size-class index,
    /// boundary tags, free and used counts) out of step with the blocks: set before the
    /// first unjournaled write of such state, cleared after the journal is emptied.
    /// Whoever finds it set under the lock rebuilds that state from the blocks (see the
    /// `journal` module).
    pub derived_dirty: AtomicU32,
    /// Non-zero when a process may be sleeping for the lock: set by every waiter before
    /// it tries the lock once more and sleeps, cleared by the releaser that then wakes one
    /// (see the `lock` module). A waiter that died leaves it set for one release only.
    pub lock_contended: AtomicU32,
    /// Counts releases that found [`lock_contended`](Self::lock_contended) set; waiters
    /// sleep on it (a futex on Linux), so a release between a waiter's last try and its
    /// sleep is never missed.
    pub lock_wake: AtomicU32,
    /// Reserved, zero.
    pub reserved1: [AtomicU32; 2],
    /// Allocator state.
    pub heap: HeapState,
    /// Payload offset of the root structure of the layer above the heap (the protocol's
    /// server entry), 0 when it has none yet. That structure lives in a system block
    /// (owned by no process, like the process table), so reclaiming processes never frees
    /// it; the heap knows nothing of its contents.
    pub root: AtomicU32,
    /// Payload offset of the kept block the application named as its root (where a later
    /// process finds the data kept across restarts), 0 when none. Names a kept block
    /// whenever it is not 0; taking that block clears it.
    pub kept_root: AtomicU32,
    /// Reserved, zero (keeps the journal's entries on a cache line of their own).
    pub reserved2: [AtomicU32; 14],
    /// The undo journal's entries (its length is in `journal`).
    pub journal_entries: JournalEntries,
    /// The size-class index over the free blocks.
    pub index: FreeIndex,
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for RegionHeader {}

/// Offset of the first header word an operation may change (the allocator state); words
/// before it (identity, ranges, lock) are never journaled, so a journal naming them is
/// corrupt.
pub const JOURNALED_HEADER_START: u32 = core::mem::offset_of!(RegionHeader, heap) as u32;

/// Reads a 64-bit counter stored as two words.
pub(crate) fn load_u64(words: &[AtomicU32; 2]) -> u64 {
    u64::from(words[0].load(Relaxed)) | (u64::from(words[1].load(Relaxed)) << 32)
}
