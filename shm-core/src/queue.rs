//! [`OffsetQueue`]: a bounded ring of `(block offset, tag)` entries in the region, one per
//! participant. Many senders, one receiver.
//!
//! Senders enqueue inside the same journaled operation that hands the block to the receiver
//! (see [`Heap::send`](crate::Heap::send)), so a sender that dies halfway leaves neither a
//! block owned by no one nor a published slot half written: the operation is undone. The
//! one store that makes the entry visible to the receiver - the slot's sequence number - is
//! made after the operation commits, through the journal's deferred store ([`Tx::defer`]),
//! which whoever breaks a dead sender's lock completes. So the receiver can never see an
//! entry that is later undone. The entry's words themselves are not journaled: until its
//! sequence number is published nobody reads them, an undo leaves the slot unpublished
//! (the tail, journaled, goes back), and the next send writes over them.
//!
//! The receiver dequeues without the lock (it is the only one that moves `head`). Each slot
//! carries a sequence number as in Vyukov's bounded queue: `seq == pos` means free for the
//! sender at `pos`, `seq == pos + 1` means full for the receiver at `pos`.
//!
//! Layout: a 192-byte [`QueueHeader`] (sender line, receiver line, constants), then
//! `capacity` 32-byte [`QueueSlot`]s. Everything read from it is validated: a corrupted
//! queue gives [`Error::Corrupted`], never a wild access.

use core::mem::size_of;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{QueueHeader, QueueSlot, NO_SENDER, SLOT_BYTES};
use crate::journal::{DeferredStore, Tx};
use crate::offset::Offset;
use crate::region::Region;

/// A validated view of a queue in a region.
#[derive(Clone, Copy, Debug)]
pub struct OffsetQueue<'m> {
    hdr: &'m QueueHeader,
    capacity: u32,
    slots: u32,
}

/// An entry taken from a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueEntry {
    /// The block (or participant, for control entries).
    pub offset: Offset,
    /// The tag.
    pub tag: u32,
    /// The sender's slot, with [`FROM_SHARED`](crate::format::FROM_SHARED) set for a
    /// block sent shared; [`NO_SENDER`] for control entries.
    pub from: u32,
    /// The sender's registration serial (0 for control entries).
    pub from_serial: u32,
}

impl<'m> OffsetQueue<'m> {
    /// Formats a queue with `capacity` slots (a power of two, at least 2) at offset `at`.
    /// The memory must not be reachable by anyone else yet (fresh writes, not journaled).
    pub(crate) fn format(
        tx: &mut Tx<'_, 'm>,
        region: &Region<'m>,
        at: u32,
        capacity: u32,
    ) -> Result<Self, Error> {
        if !capacity.is_power_of_two() || capacity < 2 {
            return Err(Error::InvalidSize {
                requested: u64::from(capacity),
            });
        }
        let hdr: &'m QueueHeader = region.get(at)?;
        let out = || corrupt(at, CorruptionKind::OutOfBounds);
        let slots = at
            .checked_add(size_of::<QueueHeader>() as u32)
            .ok_or_else(out)?;
        tx.set_fresh(&hdr.tail, 0)?;
        tx.set_fresh(&hdr.enqueued, 0)?;
        tx.set_fresh(&hdr.head, 0)?;
        tx.set_fresh(&hdr.capacity, capacity)?;
        tx.set_fresh(&hdr.slots, slots)?;
        for i in 0..capacity {
            let s_at = SLOT_BYTES
                .checked_mul(i)
                .and_then(|o| slots.checked_add(o))
                .ok_or_else(out)?;
            let s: &QueueSlot = region.get(s_at)?;
            tx.set_fresh(&s.seq, i)?;
            tx.set_fresh(&s.offset, 0)?;
            tx.set_fresh(&s.tag, 0)?;
            tx.set_fresh(&s.from, NO_SENDER)?;
            tx.set_fresh(&s.from_serial, 0)?;
        }
        Ok(OffsetQueue {
            hdr,
            capacity,
            slots,
        })
    }

    /// Opens the queue at `at`, validating its constants against the region.
    pub fn open(region: &Region<'m>, at: u32) -> Result<Self, Error> {
        let hdr: &'m QueueHeader = region.get(at)?;
        let capacity = hdr.capacity.load(Relaxed);
        let slots = hdr.slots.load(Relaxed);
        let bad = || corrupt(at, CorruptionKind::BadQueue);
        if !capacity.is_power_of_two()
            || !(2..=(1 << 24)).contains(&capacity)
            || Some(slots) != at.checked_add(size_of::<QueueHeader>() as u32)
            || !capacity
                .checked_mul(SLOT_BYTES)
                .is_some_and(|bytes| region.contains(slots, bytes))
        {
            return Err(bad());
        }
        Ok(OffsetQueue {
            hdr,
            capacity,
            slots,
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Entries waiting (a snapshot).
    pub fn len(&self) -> u32 {
        self.hdr
            .tail
            .load(Relaxed)
            .wrapping_sub(self.hdr.head.load(Relaxed))
            .min(self.capacity)
    }

    /// Whether no entry is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the entry pushed at `position` (see [`Heap::send`](crate::Heap::send)) has
    /// been taken by the receiver.
    pub fn taken(&self, position: u32) -> bool {
        // Positions wrap; anything within half the number space behind `head` is taken.
        self.hdr
            .head
            .load(Acquire)
            .wrapping_sub(position.wrapping_add(1))
            < (1 << 31)
    }

    /// Messages ever enqueued (wrapping).
    pub fn enqueued(&self) -> u32 {
        self.hdr.enqueued.load(Relaxed)
    }

    #[inline]
    fn slot(&self, pos: u32, region: &Region<'m>) -> Result<&'m QueueSlot, Error> {
        // The capacity is a power of two of at least 2 (checked by `format` and `open`), so
        // this is the mask of its low bits; were it 0, the checks below still catch it.
        let index = pos & self.capacity.wrapping_sub(1);
        let at = index
            .checked_mul(SLOT_BYTES)
            .and_then(|o| self.slots.checked_add(o))
            .ok_or_else(|| corrupt(self.slots, CorruptionKind::BadQueue))?;
        region.get(at)
    }

    /// Sender side, under the region lock: writes the entry into the next slot (unjournaled,
    /// see the module documentation), advances the tail (journaled) and defers the store
    /// of the slot's sequence number that makes it visible until the operation commits
    /// ([`Tx::defer`]); whoever makes that store rings the doorbell at offset `bell` (0:
    /// none) after it. Returns the entry's position. Fails with [`Error::QueueFull`] when
    /// the receiver has not freed the slot yet.
    pub(crate) fn push(
        &self,
        tx: &mut Tx<'_, 'm>,
        region: &Region<'m>,
        entry: QueueEntry,
        bell: u32,
    ) -> Result<u32, Error> {
        let pos = self.hdr.tail.load(Relaxed);
        let slot = self.slot(pos, region)?;
        let seq = slot.seq.load(Acquire);
        if seq != pos {
            // The receiver has not taken the entry from one lap ago (full), or the
            // numbers are inconsistent (corrupted); either way nothing was written.
            return if seq.wrapping_add(self.capacity) == pos.wrapping_add(1) {
                Err(Error::QueueFull)
            } else {
                Err(corrupt(
                    region.offset_of(&slot.seq)?,
                    CorruptionKind::BadQueue,
                ))
            };
        }
        // The slot is this sender's to fill until its sequence number is published.
        tx.set_unpublished(&slot.offset, entry.offset.get())?;
        tx.set_unpublished(&slot.tag, entry.tag)?;
        tx.set_unpublished(&slot.from, entry.from)?;
        tx.set_unpublished(&slot.from_serial, entry.from_serial)?;
        tx.set(&self.hdr.tail, pos.wrapping_add(1))?;
        tx.set(
            &self.hdr.enqueued,
            self.hdr.enqueued.load(Relaxed).wrapping_add(1),
        )?;
        tx.defer(DeferredStore {
            at: region.offset_of(&slot.seq)?,
            expect: pos,
            value: pos.wrapping_add(1),
            bell,
        })?;
        Ok(pos)
    }

    /// Receiver side, without the lock: takes the oldest published entry, if any. Only
    /// the queue's owner may call this, and from one thread at a time.
    pub fn pop(&self, region: &Region<'m>) -> Result<Option<QueueEntry>, Error> {
        let pos = self.hdr.head.load(Relaxed);
        let slot = self.slot(pos, region)?;
        let seq = slot.seq.load(Acquire);
        if seq != pos.wrapping_add(1) {
            return Ok(None);
        }
        let entry = QueueEntry {
            offset: Offset::new(slot.offset.load(Relaxed)),
            tag: slot.tag.load(Relaxed),
            from: slot.from.load(Relaxed),
            from_serial: slot.from_serial.load(Relaxed),
        };
        self.hdr.head.store(pos.wrapping_add(1), Relaxed);
        // Release: the sender that reuses the slot sees our reads done.
        slot.seq.store(pos.wrapping_add(self.capacity), Release);
        Ok(Some(entry))
    }

    /// Whether the word at `offset` is an entry word of one of this queue's slots (any
    /// word but the sequence number): what it holds means something only while its slot
    /// is published: a send that is undone leaves the words it wrote there.
    pub fn is_entry_word(&self, offset: u32) -> bool {
        let Some(rel) = offset.checked_sub(self.slots) else {
            return false;
        };
        rel / SLOT_BYTES < self.capacity && rel % SLOT_BYTES != 0
    }

    /// Receiver side: every entry still queued, without taking them (for reclaiming).
    pub fn for_each_pending(
        &self,
        region: &Region<'m>,
        mut f: impl FnMut(QueueEntry),
    ) -> Result<(), Error> {
        let head = self.hdr.head.load(Relaxed);
        for i in 0..self.capacity {
            let pos = head.wrapping_add(i);
            let slot = self.slot(pos, region)?;
            if slot.seq.load(Acquire) != pos.wrapping_add(1) {
                break;
            }
            f(QueueEntry {
                offset: Offset::new(slot.offset.load(Relaxed)),
                tag: slot.tag.load(Relaxed),
                from: slot.from.load(Relaxed),
                from_serial: slot.from_serial.load(Relaxed),
            });
        }
        Ok(())
    }
}
