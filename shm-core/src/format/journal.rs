//! The undo journal's words ([`JournalHead`], [`JournalEntry`]) and the deferred store
//! ([`DeferredWords`]), as they lie in the region header. What they mean is in the
//! `journal` module, which writes them.

use core::sync::atomic::AtomicU32;

use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::region::ShmSafe;

/// Undo-journal capacity, in words. One operation never logs more distinct words than this
/// (the tests record the high-water mark of every operation and assert it).
pub const JOURNAL_CAPACITY: usize = 96;

/// One journaled word: where it is and what it held before the operation.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct JournalEntry {
    /// Offset of the word.
    pub offset: AtomicU32,
    /// Its value before the operation.
    pub old: AtomicU32,
}

/// The journal's length and current operation, on the region's hot cache line next to
/// the lock (both are written by every operation).
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct JournalHead {
    /// Number of valid entries; 0 when no operation is in progress.
    pub len: AtomicU32,
    /// Code of the operation in progress (for diagnostics).
    pub op: AtomicU32,
}

/// The journal's entries.
pub type JournalEntries = [JournalEntry; JOURNAL_CAPACITY];

/// A store deferred until after an operation commits: "when the word at `at` holds
/// `expect`, store `value` there, then ring the doorbell at `bell` (0: none)". Recorded
/// inside the operation (`at` journaled, the other words written before it and meaning
/// nothing while it is 0), made after its commit, and completed by whoever breaks the lock
/// of a process that died in between. `at` is 0 when none is pending.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct DeferredWords {
    /// Offset of the word to store to; 0 when no store is pending.
    pub at: AtomicU32,
    /// The value the word must hold for the store to happen.
    pub expect: AtomicU32,
    /// The value to store.
    pub value: AtomicU32,
    /// Offset of a doorbell to ring after the store, 0 when none.
    pub bell: AtomicU32,
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for JournalHead {}
// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for JournalEntry {}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for DeferredWords {}
