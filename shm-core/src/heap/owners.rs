//! The process table, process records and owner chains, as the allocator walks and changes
//! them (their layout is in [`format`](crate::format)): registering a process, growing its
//! owner array, taking and returning cells, and finding a block's owners.
//!
//! Every registered process has a record in a service block (allocated from the high end
//! of the heap), followed by its owner array of cells. A used cell holds the payload offset
//! of a block the process owns; a free cell holds the index of the next free cell, so the
//! free cells form a list inside the array and taking or returning a cell is O(1). When the
//! array is full it is moved to a larger service block.
//!
//! Each block header names its first owner as (slot, cell), and each cell names the next
//! co-owner the same way, so:
//! - freeing a block finds its owner's cell in O(1), whatever the number of processes
//!   (the original design searched the process list);
//! - a block shared by `n` processes is on a chain of exactly `n` cells (its reference
//!   count), and releasing one reference walks at most that chain;
//! - moving an owner array does not touch any block header (slots and cell indices stay).

use core::sync::atomic::{
    fence, AtomicU32,
    Ordering::{Acquire, Relaxed, Release},
};

use crate::error::{corrupt, AttachError, CorruptionKind, Error};
use crate::format::{
    grown_capacity, record_bytes, BlockHeader, OwnerCell, OwnerRef, ProcessRecord, INITIAL_CELLS,
    KEPT_OWNER, MAX_CELLS, MAX_SLOTS, NO_CELL, NO_OWNER, SERVICE,
};
use crate::heap::freelist::Piece;
use crate::heap::{Placement, Space};
use crate::ids::{Incarnation, Member, ProcSlot, ProcessId};
use crate::journal::{FaultInjector, Tx};
use crate::offset::Offset;

/// A system block (process table, record or root block): service data with no owner cell.
pub(crate) fn system_piece(at: u32, size: u32) -> Piece {
    Piece {
        at,
        size,
        flags: SERVICE,
        refs: 0,
        owner: NO_OWNER,
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
    /// The record's application word `index`; `InvalidSize` past the last one.
    #[inline]
    pub fn app_word(&self, index: usize) -> Result<&'m AtomicU32, Error> {
        self.rec.app.get(index).ok_or(Error::InvalidSize {
            requested: index as u64,
        })
    }

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
            cell: index,
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

/// A place in a block's owner chain: the word that links to it, and the cell itself.
#[derive(Clone, Copy)]
pub(crate) struct ChainPos<'m> {
    /// The header's `owner` word or the previous cell's `next` word.
    pub link: &'m AtomicU32,
    /// The cell's owner reference.
    pub at: OwnerRef,
    /// The cell.
    pub cell: &'m OwnerCell,
    /// The validated record of the cell's process (looked up once, on the walk).
    pub rec: RecordRef<'m>,
}

impl<'m> Space<'m> {
    /// Allocates the root block: `bytes` of zeroed system data from the high end (owned by
    /// no process, like the process table, so no reclaim frees it), its offset recorded in
    /// the header's root word. Fails if the region has a root already.
    pub(crate) fn alloc_root(&self, tx: &mut Tx<'_, 'm>, bytes: u32) -> Result<Offset, Error> {
        let root = self.root();
        if root.load(Relaxed) != 0 {
            let at = self.region.offset_of(root)?;
            return Err(corrupt(at, CorruptionKind::BadProcessTable));
        }
        let payload = self.alloc_system(tx, bytes)?;
        tx.set(root, payload)?;
        Ok(Offset::new(payload))
    }

    /// Carves a block of `bytes` of zeroed system data (owned by no process) from the high
    /// end; returns its payload offset. The process table and the root block are made so.
    fn alloc_system(&self, tx: &mut Tx<'_, 'm>, bytes: u32) -> Result<u32, Error> {
        let need = self.geo.block_size(bytes)?;
        let f = self
            .last_fit(need)?
            .ok_or(Error::OutOfMemory { requested: bytes })?;
        let (at, size) = self.place(f, need, Placement::High)?;
        let bad = || corrupt(at, CorruptionKind::BadBlockSize);
        let payload = at.checked_add(self.geo.hsize).ok_or_else(bad)?;
        let end = payload.checked_add(bytes).ok_or_else(bad)?;
        for o in (payload..end).step_by(4) {
            tx.set_fresh(self.region.word(o)?, 0)?;
        }
        self.carve(tx, f, system_piece(at, size))?;
        Ok(payload)
    }

    /// Marks `slot`'s process as no longer taking part: clears its application words, so
    /// that the layer above no longer finds what they pointed at. The first step of
    /// reclaiming. Returns whether a word changed.
    pub(crate) fn detach(&self, tx: &mut Tx<'_, 'm>, slot: ProcSlot) -> Result<bool, Error> {
        let r = self.record(slot)?;
        let mut changed = false;
        for w in &r.rec.app {
            if w.load(Relaxed) != 0 {
                tx.set(w, 0)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Formats the process table as the first service block. Called by `init` only.
    pub(crate) fn init_process_table(&self, capacity: u16) -> Result<(), Error> {
        let faults = FaultInjector::default();
        let mut tx = self.begin(0, &faults);
        let bytes = u32::from(capacity)
            .checked_mul(4)
            .ok_or(AttachError::BadConfig)?;
        let table = self.alloc_system(&mut tx, bytes)?;
        let h = &self.hdr.heap;
        tx.set(&h.proc_table, table)?;
        tx.set(&h.proc_capacity, u32::from(capacity))?;
        // Formatting leaves no history: the minimum starts from the formatted state.
        tx.set(&h.min_free_bytes, h.free_bytes.load(Relaxed))?;
        tx.commit().map(|_| ())
    }

    /// The process-table entry for `slot`.
    pub(crate) fn table_entry(&self, slot: ProcSlot) -> Result<&'m AtomicU32, Error> {
        // An owner reference holds 8 bits of slot: whatever the (untrusted) header says,
        // no slot at or above MAX_SLOTS is ever used, so none can alias a lower one.
        let cap = self.hdr.heap.proc_capacity.load(Relaxed).min(MAX_SLOTS);
        if u32::from(slot.0) >= cap {
            return Err(Error::NotRegistered { process: slot });
        }
        let table = self.hdr.heap.proc_table.load(Relaxed);
        let at = table
            .checked_add(4 * u32::from(slot.0))
            .ok_or_else(|| corrupt(table, CorruptionKind::BadProcessTable))?;
        self.region
            .word(at)
            .map_err(|_| corrupt(table, CorruptionKind::BadProcessTable))
    }

    /// The record of a registered process, validated.
    pub(crate) fn record(&self, slot: ProcSlot) -> Result<RecordRef<'m>, Error> {
        // Acquire: pairs with the release fence in `grow_to`, so a lock-free reader (a
        // process cache) that finds a moved record finds it copied.
        let at = self.table_entry(slot)?.load(Acquire);
        if at == 0 {
            return Err(Error::NotRegistered { process: slot });
        }
        let bad = || corrupt(at, CorruptionKind::BadProcessTable);
        let b = at.checked_sub(self.geo.hsize).ok_or_else(bad)?;
        let block = self.block(b).map_err(|_| bad())?;
        let rec: &'m ProcessRecord = self.region.get(at)?;
        validate_record(at, rec, block, self.geo.hsize, slot)?;
        Ok(RecordRef { at, rec, slot })
    }

    /// The record of the incarnation `inc`: its slot must still hold that registration.
    /// Every operation that acts as or on a process goes through here, under the lock, so
    /// a handle that outlived its registration never reaches the slot's next occupant.
    pub(crate) fn incarnation(&self, inc: Incarnation) -> Result<RecordRef<'m>, Error> {
        let r = self.leaving_incarnation(inc)?;
        if r.rec.leaving.load(Relaxed) != 0 {
            return Err(Error::StaleMember { process: inc });
        }
        Ok(r)
    }

    /// Like [`Self::incarnation`], but also a record whose reclaim has begun: for the
    /// reclaim itself, which goes on over several operations (and crashes).
    pub(crate) fn leaving_incarnation(&self, inc: Incarnation) -> Result<RecordRef<'m>, Error> {
        let stale = Error::StaleMember { process: inc };
        let r = match self.record(inc.slot) {
            Ok(r) => r,
            Err(Error::NotRegistered { .. }) => return Err(stale),
            Err(e) => return Err(e),
        };
        if r.rec.serial.load(Relaxed) != inc.serial {
            return Err(stale);
        }
        Ok(r)
    }

    /// The slot of member `m`, checked to hold its incarnation (see [`Self::incarnation`]).
    #[inline]
    pub(crate) fn member(&self, m: Member) -> Result<ProcSlot, Error> {
        self.member_record(m).map(|r| r.slot)
    }

    /// The record of member `m`, checked to hold its incarnation: for an operation that
    /// goes on to use the record, so that it is looked up and validated once.
    #[inline]
    pub(crate) fn member_record(&self, m: Member) -> Result<RecordRef<'m>, Error> {
        self.incarnation(m.incarnation())
    }

    /// Cell `index` of a validated record. (Always inlined: the cache's lock-free paths
    /// call it on every operation.)
    #[inline(always)]
    pub(crate) fn cell(&self, r: &RecordRef<'m>, index: u32) -> Result<&'m OwnerCell, Error> {
        if index >= r.rec.cell_capacity.load(Relaxed) {
            return Err(corrupt(r.at, CorruptionKind::BadOwner));
        }
        self.region.get(r.cell_offset(index))
    }

    /// The cell an owner reference names.
    pub(crate) fn cell_of(&self, o: OwnerRef) -> Result<(RecordRef<'m>, &'m OwnerCell), Error> {
        let r = self.record(ProcSlot(o.slot))?;
        let c = self.cell(&r, o.cell)?;
        Ok((r, c))
    }

    /// Registers a process: a record with a fresh owner array, from the high end.
    pub(crate) fn register(&self, tx: &mut Tx<'_, 'm>, id: ProcessId) -> Result<Member, Error> {
        let h = &self.hdr.heap;
        let cap = h.proc_capacity.load(Relaxed);
        let mut slot = None;
        for i in 0..cap.min(MAX_SLOTS) {
            if self.table_entry(ProcSlot(i as u16))?.load(Relaxed) == 0 {
                slot = Some(ProcSlot(i as u16));
                break;
            }
        }
        let slot = slot.ok_or(Error::TooManyProcesses {
            capacity: cap as u16,
        })?;
        let bytes = record_bytes(INITIAL_CELLS);
        let need = self.geo.block_size(bytes)?;
        let f = self
            .last_fit(need)?
            .ok_or(Error::OutOfMemory { requested: bytes })?;
        let (at, size) = self.place(f, need, Placement::High)?;
        let rec_at = at
            .checked_add(self.geo.hsize)
            .ok_or_else(|| corrupt(at, CorruptionKind::BadBlockSize))?;
        let rec: &'m ProcessRecord = self.region.get(rec_at)?;
        tx.set_fresh(&rec.pid, id.pid)?;
        tx.set_fresh(&rec.tag, id.tag)?;
        tx.set_fresh(&rec.slot, u32::from(slot.0))?;
        let serial = h.registrations.load(Relaxed);
        tx.set_fresh(&rec.serial, serial)?;
        tx.set_fresh(&rec.cell_capacity, INITIAL_CELLS)?;
        tx.set_fresh(&rec.cells_used, 0)?;
        tx.set_fresh(&rec.free_cell, NO_CELL)?; // empty list; format_free_cells fills it
        tx.set_fresh(&rec.reserve, 0)?;
        tx.set_fresh(&rec.owned_bytes, 0)?;
        for w in &rec.app {
            tx.set_fresh(w, 0)?;
        }
        tx.set_fresh(&rec.waiting, 0)?;
        tx.set_fresh(&rec.leaving, 0)?;
        let r = RecordRef {
            at: rec_at,
            rec,
            slot,
        };
        self.format_free_cells(tx, &r, 0, INITIAL_CELLS)?;
        self.carve(tx, f, system_piece(at, size))?;
        tx.set(self.table_entry(slot)?, rec_at)?;
        tx.set(&h.proc_count, h.proc_count.load(Relaxed).wrapping_add(1))?;
        tx.set(
            &h.registrations,
            h.registrations.load(Relaxed).wrapping_add(1),
        )?;
        Ok(Member::new(Incarnation { slot, serial }))
    }

    /// Writes cells `from..to` of a record that is not live yet as a free-cell chain ending
    /// in the chain the record's `free_cell` held.
    pub(crate) fn format_free_cells(
        &self,
        tx: &mut Tx<'_, 'm>,
        r: &RecordRef<'m>,
        from: u32,
        to: u32,
    ) -> Result<(), Error> {
        let tail = r.rec.free_cell.load(Relaxed);
        for i in from..to {
            let c: &OwnerCell = self.region.get(r.cell_offset(i))?;
            tx.set_fresh(&c.block, 0)?;
            let next = i.checked_add(1).filter(|&n| n < to).unwrap_or(tail);
            tx.set_fresh(&c.next, next)?;
        }
        tx.set_fresh(&r.rec.free_cell, from)
    }

    /// Moves a full owner array to a block twice its size, from the high end.
    pub(crate) fn grow(&self, tx: &mut Tx<'_, 'm>, slot: ProcSlot) -> Result<RecordRef<'m>, Error> {
        let cap = self.record(slot)?.rec.cell_capacity.load(Relaxed);
        let new_cap = grown_capacity(cap).ok_or(Error::OwnerTableFull { process: slot })?;
        self.grow_to(tx, slot, new_cap)
    }

    /// Makes `slot`'s owner array hold at least `cells` cells (at most `MAX_CELLS`).
    pub(crate) fn reserve_cells(
        &self,
        tx: &mut Tx<'_, 'm>,
        slot: ProcSlot,
        cells: u32,
    ) -> Result<u32, Error> {
        let cap = self.record(slot)?.rec.cell_capacity.load(Relaxed);
        if cells <= cap {
            return Ok(cap);
        }
        if cells > MAX_CELLS {
            return Err(Error::OwnerTableFull { process: slot });
        }
        let r = self.grow_to(tx, slot, cells)?;
        Ok(r.rec.cell_capacity.load(Relaxed))
    }

    /// Moves `slot`'s owner array to a block holding `new_cap` cells (more than now).
    pub(crate) fn grow_to(
        &self,
        tx: &mut Tx<'_, 'm>,
        slot: ProcSlot,
        new_cap: u32,
    ) -> Result<RecordRef<'m>, Error> {
        let old = self.record(slot)?;
        let cap = old.rec.cell_capacity.load(Relaxed);
        let bytes = record_bytes(new_cap);
        let need = self.geo.block_size(bytes)?;
        let f = self
            .last_fit(need)?
            .ok_or(Error::OutOfMemory { requested: bytes })?;
        let (at, size) = self.place(f, need, Placement::High)?;
        let out = |at| corrupt(at, CorruptionKind::OutOfBounds);
        let new_at = at.checked_add(self.geo.hsize).ok_or_else(|| out(at))?;
        // Copy record and used cells into the free block, then add the new free cells.
        for off in (0..record_bytes(cap)).step_by(4) {
            let from = old.at.checked_add(off).ok_or_else(|| out(old.at))?;
            let v = self.region.word(from)?.load(Relaxed);
            let to = new_at.checked_add(off).ok_or_else(|| out(new_at))?;
            tx.set_fresh(self.region.word(to)?, v)?;
        }
        let new = RecordRef {
            at: new_at,
            rec: self.region.get(new_at)?,
            slot,
        };
        tx.set_fresh(&new.rec.cell_capacity, new_cap)?;
        self.format_free_cells(tx, &new, cap, new_cap)?;
        self.carve(tx, f, system_piece(at, size))?;
        // Release: the copy above is visible to whoever sees the new place (see `record`).
        fence(Release);
        tx.set(self.table_entry(slot)?, new_at)?;
        // Release again: a lock-free reader that sees the old record's block reused sees
        // the new place too (its check re-reads the table after an acquire fence).
        fence(Release);
        let old_b = old
            .at
            .checked_sub(self.geo.hsize)
            .ok_or_else(|| corrupt(old.at, CorruptionKind::BadProcessTable))?;
        // Freed when the operation ends, so that a second move in it copies unlogged.
        if !tx.retire(old_b) {
            self.free_block_at(tx, old_b)?;
        }
        self.record(slot)
    }

    /// Takes a free cell of `slot`'s owner array, growing the array when full. The cell's
    /// words are left for the caller to fill.
    pub(crate) fn take_cell(
        &self,
        tx: &mut Tx<'_, 'm>,
        slot: ProcSlot,
    ) -> Result<(RecordRef<'m>, u32, &'m OwnerCell), Error> {
        let r = self.record(slot)?;
        self.take_cell_in(tx, r)
    }

    /// [`Self::take_cell`] of the process whose record `r` is, validated by the caller in
    /// this operation. The returned record is where the array is now (growing moves it).
    pub(crate) fn take_cell_in(
        &self,
        tx: &mut Tx<'_, 'm>,
        mut r: RecordRef<'m>,
    ) -> Result<(RecordRef<'m>, u32, &'m OwnerCell), Error> {
        if r.rec.free_cell.load(Relaxed) == NO_CELL {
            r = self.grow(tx, r.slot)?;
        }
        let index = r.rec.free_cell.load(Relaxed);
        let c = self.cell(&r, index)?;
        let next = c.next.load(Relaxed);
        let cap = r.rec.cell_capacity.load(Relaxed);
        if c.block.load(Relaxed) != 0 || (next != NO_CELL && next >= cap) {
            return Err(corrupt(r.cell_offset(index), CorruptionKind::BadOwnerTable));
        }
        tx.set(&r.rec.free_cell, next)?;
        tx.set(
            &r.rec.cells_used,
            r.rec.cells_used.load(Relaxed).wrapping_add(1),
        )?;
        Ok((r, index, c))
    }

    /// Returns cell `index` (`c`, already looked up through `r`) to its array's free list.
    pub(crate) fn put_cell(
        &self,
        tx: &mut Tx<'_, 'm>,
        r: &RecordRef<'m>,
        index: u32,
        c: &'m OwnerCell,
    ) -> Result<(), Error> {
        tx.set(&c.block, 0)?;
        tx.set(&c.next, r.rec.free_cell.load(Relaxed))?;
        tx.set(&r.rec.free_cell, index)?;
        tx.set(
            &r.rec.cells_used,
            r.rec.cells_used.load(Relaxed).wrapping_sub(1),
        )
    }

    // ----- owner chains ---------------------------------------------------------------------

    /// The first owner of the used block at payload `p`, checked against its cell. A
    /// mismatch means `p` does not name a live block: the caller's error.
    pub(crate) fn owner_head(&self, p: Offset, h: &'m BlockHeader) -> Result<OwnerRef, Error> {
        self.owner_head_pos(p, h).map(|pos| pos.at)
    }

    /// [`Self::owner_head`] with the head's place on the chain (the header's `owner` word
    /// links to it), for a walk that goes on from there without looking it up again.
    fn owner_head_pos(&self, p: Offset, h: &'m BlockHeader) -> Result<ChainPos<'m>, Error> {
        let bad = Error::BadOffset { offset: p };
        let word = h.owner.load(Relaxed);
        if word == KEPT_OWNER {
            return Err(Error::Kept { offset: p });
        }
        let head = OwnerRef::unpack(word).ok_or(bad)?;
        let (rec, cell) = self.cell_of(head).map_err(|_| bad)?;
        // A cached block (count 0) is its owner's cache's alone: no operation that
        // changes owners may start from it (reclaim makes it an ordinary block first).
        if cell.block.load(Relaxed) != p.get() || h.link.load(Relaxed) == 0 {
            return Err(bad);
        }
        Ok(ChainPos {
            link: &h.owner,
            at: head,
            cell,
            rec,
        })
    }

    /// Walks block `p`'s owner chain: exactly its reference count of cells (never more
    /// than there are process slots, as a process holds one cell per block), each checked
    /// to name `p`, the last ending the chain. Calls `visit` with each position.
    pub(crate) fn walk_chain(
        &self,
        p: Offset,
        h: &'m BlockHeader,
        visit: impl FnMut(ChainPos<'m>),
    ) -> Result<(), Error> {
        self.walk_chain_from(p, h, None, visit)
    }

    /// [`Self::walk_chain`], given the head's position when the caller has checked it
    /// already (from `owner_head_pos` on the same header, with nothing written since).
    fn walk_chain_from(
        &self,
        p: Offset,
        h: &'m BlockHeader,
        mut head: Option<ChainPos<'m>>,
        mut visit: impl FnMut(ChainPos<'m>),
    ) -> Result<(), Error> {
        let refs = h.refs();
        // Bounded by a process-local limit too: `proc_capacity` is read from the region,
        // and a hostile value (u32::MAX) must not make this walk long under the lock. A
        // process holds one cell per block, and slots are 16-bit.
        if refs > self.hdr.heap.proc_capacity.load(Relaxed) || refs > MAX_SLOTS {
            return Err(corrupt(p.get(), CorruptionKind::BadRefCount));
        }
        let mut link: &'m AtomicU32 = &h.owner;
        for _ in 0..refs {
            let pos = match head.take() {
                Some(pos) => pos,
                None => {
                    let at = OwnerRef::unpack(link.load(Relaxed))
                        .ok_or_else(|| corrupt(p.get(), CorruptionKind::BadRefCount))?;
                    let (rec, cell) = self
                        .cell_of(at)
                        .map_err(|_| corrupt(p.get(), CorruptionKind::BadOwner))?;
                    if cell.block.load(Relaxed) != p.get() {
                        return Err(corrupt(p.get(), CorruptionKind::BadOwner));
                    }
                    ChainPos {
                        link,
                        at,
                        cell,
                        rec,
                    }
                }
            };
            link = &pos.cell.next;
            visit(pos);
        }
        if link.load(Relaxed) != NO_OWNER {
            return Err(corrupt(p.get(), CorruptionKind::BadRefCount));
        }
        Ok(())
    }

    /// The position of `find`'s cell on block `p`'s chain, if there, and whether `absent`
    /// is on it.
    pub(crate) fn chain_find(
        &self,
        p: Offset,
        h: &'m BlockHeader,
        find: ProcSlot,
        absent: Option<ProcSlot>,
    ) -> Result<(Option<ChainPos<'m>>, bool), Error> {
        let head = self.owner_head_pos(p, h)?;
        let mut found = None;
        let mut seen_absent = false;
        self.walk_chain_from(p, h, Some(head), |pos| {
            if pos.at.slot == find.0 && found.is_none() {
                found = Some(pos);
            }
            seen_absent |= Some(ProcSlot(pos.at.slot)) == absent;
        })?;
        Ok((found, seen_absent))
    }
}
