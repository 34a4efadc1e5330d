//! [`Journal`] and [`Tx`]: an undo log that makes every operation atomic with respect to
//! errors and to the death of the process running it.
//!
//! Every word an operation changes in live metadata goes through [`Tx::set`], which first
//! records the word's offset and old value in the journal (once per word), publishes the
//! new length with `Release`, and only then stores the new value. Finishing the operation
//! sets the length to 0 - that is the commit point. If the process dies before that, the
//! process that breaks its lock finds a non-empty journal and restores the old values in
//! reverse order ([`recover`]); restoring is idempotent, so a recoverer that dies too is
//! simply followed by another. An operation that fails with an error undoes itself the
//! same way, so no error leaves a half-done change behind.
//!
//! Words in memory that no live structure reaches yet (the payload of a free block being
//! turned into a new owner table) are written with [`Tx::set_fresh`], unlogged: if the
//! operation is undone they are unreachable again.

use core::sync::atomic::{
    AtomicU32,
    Ordering::{Acquire, Relaxed, Release},
};

use crate::error::{corrupt, CorruptionKind, Error};
use crate::layout::{JOURNALED_HEADER_START, JOURNAL_CAPACITY};
use crate::region::{Region, ShmSafe};

/// One journaled word: where it is and what it held before the operation.
#[repr(C)]
#[derive(Debug)]
pub struct JournalEntry {
    /// Offset of the word.
    pub offset: AtomicU32,
    /// Its value before the operation.
    pub old: AtomicU32,
}

/// The undo journal in the region header.
#[repr(C)]
#[derive(Debug)]
pub struct Journal {
    /// Number of valid entries; 0 when no operation is in progress.
    pub len: AtomicU32,
    /// Code of the operation in progress (for diagnostics).
    pub op: AtomicU32,
    /// Reserved, zero (keeps the entries 16-byte aligned).
    pub reserved: [AtomicU32; 2],
    /// The entries.
    pub entries: [JournalEntry; JOURNAL_CAPACITY],
}

// SAFETY: repr(C), only AtomicU32 (directly and in JournalEntry), no padding.
unsafe impl ShmSafe for Journal {}
// SAFETY: repr(C), two AtomicU32.
unsafe impl ShmSafe for JournalEntry {}

/// Stops an operation after a set number of journal steps, as if its process had died.
///
/// Process-local. Disabled unless the `fault-injection` feature is on.
#[derive(Debug, Default)]
pub struct FaultInjector {
    #[cfg(feature = "fault-injection")]
    fuel: AtomicU32,
}

impl FaultInjector {
    /// Arms the injector: the operation fails with [`Error::InjectedCrash`] at its
    /// `steps`-th journal step (1 = the first). 0 disarms it.
    #[cfg(feature = "fault-injection")]
    pub fn arm(&self, steps: u32) {
        self.fuel.store(steps, Relaxed);
    }

    /// Whether the armed crash has not fired yet.
    #[cfg(feature = "fault-injection")]
    pub fn armed(&self) -> bool {
        self.fuel.load(Relaxed) != 0
    }

    #[inline]
    pub(crate) fn step(&self) -> Result<(), Error> {
        #[cfg(feature = "fault-injection")]
        {
            let fuel = self.fuel.load(Relaxed);
            if fuel == 1 {
                self.fuel.store(0, Relaxed);
                return Err(Error::InjectedCrash);
            }
            if fuel > 1 {
                self.fuel.store(fuel - 1, Relaxed);
            }
        }
        Ok(())
    }
}

/// An operation in progress: the only way live metadata is changed.
pub(crate) struct Tx<'a, 'm> {
    region: &'a Region<'m>,
    journal: &'m Journal,
    len: u32,
    faults: &'a FaultInjector,
}

impl<'a, 'm> Tx<'a, 'm> {
    /// Starts an operation. The caller holds the region lock and the journal is empty.
    pub(crate) fn begin(
        region: &'a Region<'m>,
        journal: &'m Journal,
        op: u32,
        faults: &'a FaultInjector,
    ) -> Self {
        journal.op.store(op, Relaxed);
        Tx {
            region,
            journal,
            len: 0,
            faults,
        }
    }

    /// Changes a word of live metadata, journaling its old value first.
    #[inline]
    pub(crate) fn set(&mut self, word: &AtomicU32, value: u32) -> Result<(), Error> {
        let offset = self.region.offset_of(word)?;
        let logged = self.journal.entries[..self.len as usize]
            .iter()
            .any(|e| e.offset.load(Relaxed) == offset);
        if !logged {
            self.faults.step()?;
            let slot = self
                .journal
                .entries
                .get(self.len as usize)
                .ok_or(Error::JournalFull)?;
            slot.offset.store(offset, Relaxed);
            slot.old.store(word.load(Relaxed), Relaxed);
            self.len += 1;
            // Release: a recoverer that sees the new length sees the entry.
            self.journal.len.store(self.len, Release);
        }
        self.faults.step()?;
        word.store(value, Relaxed);
        Ok(())
    }

    /// Writes a word that no live structure reaches yet; not journaled.
    #[inline]
    pub(crate) fn set_fresh(&mut self, word: &AtomicU32, value: u32) -> Result<(), Error> {
        self.faults.step()?;
        word.store(value, Relaxed);
        Ok(())
    }

    /// Makes the operation permanent. Returns how many words it journaled.
    pub(crate) fn commit(self) -> Result<u32, Error> {
        self.faults.step()?;
        self.journal.len.store(0, Release);
        Ok(self.len)
    }

    /// Undoes the operation.
    pub(crate) fn rollback(self) -> Result<u32, Error> {
        recover(self.region, self.journal)
    }
}

/// Undoes whatever operation the journal records, restoring old values newest first, and
/// empties it. Returns the number of words restored.
///
/// The journal is untrusted (a dead or hostile process wrote it): a length over capacity
/// or an entry outside the region is reported as corruption, without writing anything.
pub(crate) fn recover(region: &Region<'_>, journal: &Journal) -> Result<u32, Error> {
    let len = journal.len.load(Acquire);
    if len as usize > JOURNAL_CAPACITY {
        let at = region.offset_of(&journal.len).unwrap_or(0);
        return Err(corrupt(at, CorruptionKind::BadJournal));
    }
    // Validate every entry before touching anything: it must name a word of live metadata,
    // never the identity part of the header, the lock, or the journal itself.
    let journal_start = region.offset_of(&journal.len)?;
    let journal_end = journal_start + core::mem::size_of::<Journal>() as u32;
    for e in &journal.entries[..len as usize] {
        let off = e.offset.load(Relaxed);
        let bad = || {
            corrupt(
                region.offset_of(&e.offset).unwrap_or(0),
                CorruptionKind::BadJournal,
            )
        };
        if off < JOURNALED_HEADER_START || (off >= journal_start && off < journal_end) {
            return Err(bad());
        }
        region.word(off).map_err(|_| bad())?;
    }
    for e in journal.entries[..len as usize].iter().rev() {
        let word = region.word(e.offset.load(Relaxed))?;
        word.store(e.old.load(Relaxed), Relaxed);
    }
    journal.len.store(0, Release);
    Ok(len)
}
