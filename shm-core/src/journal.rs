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
//! Derived state - the size-class index (its bitmaps, list heads and the list links in
//! free blocks' headers), the boundary tags (`prev_phys`) and the free and used counts -
//! is not journaled: it follows from the blocks themselves. [`Tx::set_derived`] writes it
//! directly, after setting the header's `derived_dirty` word once per operation; an undo
//! (after an error, or by whoever breaks a dead holder's lock) is then followed by a
//! rebuild of all derived state from the blocks, one walk over them. A rebuild is rare; a
//! journal entry per index link on every operation was most of an operation's cost. The
//! rule that keeps this sound: the first write an operation makes to a word whose old
//! value is not derived (a used block's header or payload) goes through the journal.
//! Commit empties the journal before it clears `derived_dirty`, so a crash in between
//! leaves a committed operation and a rebuild of its (already consistent) state.
//!
//! Words in memory that no live structure reaches yet (the payload of a free block being
//! turned into a new owner table) are written with [`Tx::set_fresh`], unlogged: if the
//! operation is undone they are unreachable again. That holds only for memory that was
//! free when the operation began: once an operation has freed a block, undoing it brings
//! that block back to life, so from then on "fresh" words are journaled like any other.
//! An owner array that moved is therefore freed only when the operation ends
//! ([`Tx::retire`]): an operation that moves two arrays (a heartbeat takes a cell of the
//! server's and then one of the client's) would otherwise journal every word the second
//! move copies, and even the smallest array overflows the journal.
//!
//! Words that nobody reads until the operation's deferred store publishes them (a queue
//! slot's entry) are written with [`Tx::set_unpublished`], unlogged: an undo leaves them
//! unpublished. The deferred store's own words other than its target ([`Tx::defer`]) are
//! written unlogged too: they mean nothing while the journaled target is 0.

use core::sync::atomic::{
    AtomicU32,
    Ordering::{Acquire, Relaxed, Release},
};

use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{
    DeferredWords, JournalEntries, JournalHead, RegionHeader, JOURNALED_HEADER_START,
};
use crate::region::Region;

/// The journal's words in the region header: its head and entries, the deferred store,
/// and the derived-state flag.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Journal<'m> {
    /// Length and operation.
    pub head: &'m JournalHead,
    /// Entries.
    pub entries: &'m JournalEntries,
    /// The store deferred until after commit.
    pub deferred: &'m DeferredWords,
    /// Non-zero while derived state may be out of step with the blocks.
    pub dirty: &'m AtomicU32,
}

/// A store an operation defers until after it commits (see [`Tx::defer`]): when the word
/// at `at` holds `expect`, store `value` there, then ring the doorbell at `bell` (0:
/// none). A compare-and-swap, so completing it twice (a recoverer after a process that
/// died right after making it) changes nothing the second time. Only a publication is
/// ever made (`value` is `expect + 1`, to a word past the header; see
/// [`Journal::complete`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeferredStore {
    /// Offset of the word.
    pub at: u32,
    /// The value it must hold.
    pub expect: u32,
    /// The value to store.
    pub value: u32,
    /// Offset of a doorbell to ring afterwards, 0 when none.
    pub bell: u32,
}

impl<'m> Journal<'m> {
    /// The deferred store's header words, outside the allocator state, which [`recover`]
    /// accepts in a journal (operations journal only `at` now; a journal written by an
    /// older build may name the others).
    pub(crate) fn deferred_words(&self) -> [&'m AtomicU32; 4] {
        let d = self.deferred;
        [&d.at, &d.expect, &d.value, &d.bell]
    }

    /// The deferred store recorded in the header, if one is pending.
    pub(crate) fn pending(&self) -> Option<DeferredStore> {
        let d = self.deferred;
        let at = d.at.load(Acquire);
        (at != 0).then(|| DeferredStore {
            at,
            expect: d.expect.load(Relaxed),
            value: d.value.load(Relaxed),
            bell: d.bell.load(Relaxed),
        })
    }

    /// Makes a deferred store and marks it done. Release, so what the operation wrote
    /// before is seen first by whoever reads the stored word.
    ///
    /// The record is untrusted (a dead or hostile process wrote it), and whoever breaks a
    /// lock makes it: so only the store it exists for is made - a publication, which moves
    /// a word one step on (`value` is `expect + 1`, as a queue slot's sequence number), to
    /// a word past the header. Anything else is reported as corruption, and dropped.
    pub(crate) fn complete(&self, region: &Region<'_>, s: DeferredStore) -> Result<(), Error> {
        let done = if s.value == s.expect.wrapping_add(1)
            && s.at as usize >= core::mem::size_of::<RegionHeader>()
        {
            region.word(s.at).map(|w| {
                let _ = w.compare_exchange(s.expect, s.value, Release, Relaxed);
            })
        } else {
            Err(corrupt(
                region.offset_of(&self.deferred.at).unwrap_or(0),
                CorruptionKind::BadJournal,
            ))
        };
        self.deferred.at.store(0, Release);
        done
    }
}

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
                self.fuel.store(fuel.saturating_sub(1), Relaxed);
            }
        }
        Ok(())
    }
}

/// An operation in progress: the only way live metadata is changed.
pub(crate) struct Tx<'a, 'm> {
    region: &'a Region<'m>,
    journal: Journal<'m>,
    len: u32,
    /// Words journaled so far, as a filter: one bit per word, chosen by a hash of its
    /// offset. A clear bit proves the
    /// word is not in the journal yet; a set bit means "maybe", checked by a scan. Most
    /// writes go to words never written before in the operation, so most skip the scan.
    /// (128 bits, measured: fewer scans, but more instructions per write than they save.)
    seen: u64,
    /// False once the operation has freed memory (see the module documentation).
    fresh_unlogged: bool,
    /// Whether this operation has set the header's `derived_dirty` word.
    dirty: bool,
    /// The store this operation deferred until after its commit, if any.
    deferred: Option<DeferredStore>,
    /// Blocks to free when the operation ends (see [`Tx::retire`]): the first
    /// `retired_len` entries.
    retired: [u32; RETIRED_MAX],
    retired_len: usize,
    faults: &'a FaultInjector,
}

/// How many blocks one operation can retire; more are freed at once. Two arrays move in
/// the operations that move most (a heartbeat, a give).
const RETIRED_MAX: usize = 2;

impl<'a, 'm> Tx<'a, 'm> {
    /// Starts an operation. The caller holds the region lock and the journal is empty.
    pub(crate) fn begin(
        region: &'a Region<'m>,
        journal: Journal<'m>,
        op: u32,
        faults: &'a FaultInjector,
    ) -> Self {
        journal.head.op.store(op, Relaxed);
        Tx {
            region,
            journal,
            len: 0,
            seen: 0,
            fresh_unlogged: true,
            dirty: false,
            deferred: None,
            retired: [0; RETIRED_MAX],
            retired_len: 0,
            faults,
        }
    }

    /// Changes a word of live metadata, journaling its old value first.
    #[inline]
    pub(crate) fn set(&mut self, word: &AtomicU32, value: u32) -> Result<(), Error> {
        let offset = self.region.offset_of(word)?;
        // Fibonacci hashing spreads the words of one block header (consecutive offsets)
        // and headers a power of two apart over different bits.
        let bit = 1u64 << ((offset / 4).wrapping_mul(0x9E37_79B9) >> 26);
        let logged = self.seen & bit != 0
            && self
                .journal
                .entries
                .get(..self.len as usize)
                .is_some_and(|logged| logged.iter().any(|e| e.offset.load(Relaxed) == offset));
        if !logged {
            self.seen |= bit;
            self.faults.step()?;
            let slot = self
                .journal
                .entries
                .get(self.len as usize)
                .ok_or(Error::JournalFull)?;
            let len = self.len.checked_add(1).ok_or(Error::JournalFull)?;
            slot.offset.store(offset, Relaxed);
            slot.old.store(word.load(Relaxed), Relaxed);
            self.len = len;
            // Release: a recoverer that sees the new length sees the entry.
            self.journal.head.len.store(self.len, Release);
        }
        self.faults.step()?;
        word.store(value, Relaxed);
        Ok(())
    }

    /// Writes a word in memory that was free when the operation began and that no live
    /// structure reaches yet; not journaled, unless the operation has freed memory.
    #[inline]
    pub(crate) fn set_fresh(&mut self, word: &AtomicU32, value: u32) -> Result<(), Error> {
        if !self.fresh_unlogged {
            return self.set(word, value);
        }
        self.faults.step()?;
        word.store(value, Relaxed);
        Ok(())
    }

    /// Writes a word that nobody reads until this operation's deferred store publishes it
    /// (a queue slot's entry, see [`Self::defer`]), unjournaled: an undo leaves the word
    /// unpublished, and whatever it then holds is written over before it is published.
    #[inline]
    pub(crate) fn set_unpublished(&mut self, word: &AtomicU32, value: u32) -> Result<(), Error> {
        self.faults.step()?;
        word.store(value, Relaxed);
        Ok(())
    }

    /// Writes a word of derived state (see the module documentation), unjournaled: an undo
    /// of this operation is followed by a rebuild that recomputes it. The word's old value
    /// must be derived state too, or already journaled by this operation.
    #[inline]
    pub(crate) fn set_derived(&mut self, word: &AtomicU32, value: u32) -> Result<(), Error> {
        if !self.dirty {
            self.faults.step()?;
            // Release: a recoverer that sees any derived write below sees the flag.
            self.journal.dirty.store(1, Release);
            self.dirty = true;
        }
        self.faults.step()?;
        word.store(value, Relaxed);
        Ok(())
    }

    /// Journals a word's current value without changing it, so that later unjournaled
    /// writes to it ([`set_derived`](Self::set_derived)) are undone too.
    #[inline]
    pub(crate) fn keep(&mut self, word: &AtomicU32) -> Result<(), Error> {
        self.set(word, word.load(Relaxed))
    }

    /// Whether this operation wrote derived state, so that an undo must rebuild it.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Records that the operation frees memory: from now on "fresh" words are journaled,
    /// since an undo would make the freed block live again.
    #[inline]
    pub(crate) fn freeing(&mut self) {
        self.fresh_unlogged = false;
    }

    /// Asks for the used block at `b` to be freed when the operation ends, rather than
    /// now, so that fresh words written meanwhile stay unlogged (see the module
    /// documentation). Returns `false`, recording nothing, when the caller must free it
    /// now instead.
    pub(crate) fn retire(&mut self, b: u32) -> bool {
        match self.retired.get_mut(self.retired_len) {
            Some(slot) => {
                *slot = b;
                self.retired_len = self.retired_len.saturating_add(1); // below RETIRED_MAX
                true
            }
            None => false,
        }
    }

    /// The next block retired by [`Self::retire`], taken off the list.
    pub(crate) fn take_retired(&mut self) -> Option<u32> {
        let n = self.retired_len.checked_sub(1)?;
        self.retired_len = n;
        self.retired.get(n).copied()
    }

    /// Records a store to make after this operation commits (one per operation; a later
    /// call replaces an earlier one). Its target is journaled: if the operation is undone,
    /// the record is gone with it (see below). The heap makes the store right after the
    /// commit, still under the lock; whoever breaks the lock of a process that died in
    /// between makes it instead (see [`Journal::pending`]). This is how a queue entry
    /// becomes visible only once the operation that wrote it can no longer be undone.
    ///
    /// Only `at` is journaled: the record means nothing while `at` is 0, which it is
    /// whenever no operation is under way (a commit is followed by the store, which clears
    /// it, and an undo restores it). So the other three words are written unjournaled
    /// before `at`, and an undo that puts `at` back to 0 discards them with it.
    pub(crate) fn defer(&mut self, store: DeferredStore) -> Result<(), Error> {
        let d = self.journal.deferred;
        self.faults.step()?;
        d.expect.store(store.expect, Relaxed);
        d.value.store(store.value, Relaxed);
        d.bell.store(store.bell, Relaxed);
        self.set(&d.at, store.at)?;
        self.deferred = Some(store);
        Ok(())
    }

    /// Makes the operation permanent. Returns how many words it journaled and the store
    /// it deferred, for the caller to make (see [`Journal::complete`]).
    pub(crate) fn commit(self) -> Result<(u32, Option<DeferredStore>), Error> {
        debug_assert!(
            self.retired_len == 0,
            "retired blocks are freed before the commit"
        );
        self.faults.step()?;
        self.journal.head.len.store(0, Release);
        // After the journal: a crash in between must not undo what the derived state
        // already describes (the rebuild then sees the committed blocks).
        if self.dirty {
            self.journal.dirty.store(0, Release);
        }
        Ok((self.len, self.deferred))
    }

    /// Undoes the operation; `also` as for [`recover`]. Derived state is left to the
    /// caller's rebuild: `derived_dirty` stays set if the operation set it.
    pub(crate) fn rollback(self, also: &[&AtomicU32]) -> Result<u32, Error> {
        recover(self.region, self.journal, also)
    }
}

/// Undoes whatever operation the journal records, restoring old values newest first, and
/// empties it. Returns the number of words restored. `also` lists header words before
/// [`JOURNALED_HEADER_START`] that operations may journal (the deferred store's, the
/// waiter count).
///
/// The journal is untrusted (a dead or hostile process wrote it): a length over capacity
/// or an entry naming anything else than live metadata is reported as corruption, without
/// writing anything.
pub(crate) fn recover(
    region: &Region<'_>,
    journal: Journal<'_>,
    also: &[&AtomicU32],
) -> Result<u32, Error> {
    let len = journal.head.len.load(Acquire);
    let Some(entries) = journal.entries.get(..len as usize) else {
        // A length over the capacity.
        let at = region.offset_of(&journal.head.len).unwrap_or(0);
        return Err(corrupt(at, CorruptionKind::BadJournal));
    };
    // Validate every entry before touching anything: it must name a word of live metadata,
    // never the identity part of the header, the lock, or the journal itself.
    let entries_start = region.offset_of(&journal.entries[0].offset)?;
    let entries_end = entries_start
        .checked_add(core::mem::size_of::<JournalEntries>() as u32)
        .ok_or_else(|| corrupt(entries_start, CorruptionKind::BadJournal))?;
    for e in entries {
        let off = e.offset.load(Relaxed);
        let bad = || {
            corrupt(
                region.offset_of(&e.offset).unwrap_or(0),
                CorruptionKind::BadJournal,
            )
        };
        let allowed_header_word = also
            .iter()
            .any(|w| region.offset_of(w).is_ok_and(|o| o == off));
        if (off < JOURNALED_HEADER_START && !allowed_header_word)
            || (off >= entries_start && off < entries_end)
        {
            return Err(bad());
        }
        region.word(off).map_err(|_| bad())?;
    }
    for e in entries.iter().rev() {
        let word = region.word(e.offset.load(Relaxed))?;
        word.store(e.old.load(Relaxed), Relaxed);
    }
    journal.head.len.store(0, Release);
    Ok(len)
}
