//! The operations, each run inside one journaled transaction by [`Heap`](crate::Heap).
//!
//! Order matters for atomicity only through the journal: every operation may fail at any
//! step and is then undone as a whole. One rule is kept by hand: words in free memory that
//! a new block will hold are written ([`Tx::set_fresh`]) before the block is carved, so
//! nothing live ever points at half-written memory.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::block::{BlockHeader, OwnerRef, SERVICE, USED};
use crate::error::{corrupt, AttachError, CorruptionKind, Error};
use crate::heap::freelist::{Found, Piece};
use crate::heap::{Placement, ReclaimStep, Space};
use crate::journal::{FaultInjector, Tx};
use crate::layout::{MAX_SLOTS, NO_CELL, NO_OWNER};
use crate::owners::{
    grown_capacity, record_bytes, validate_record, OwnerCell, ProcSlot, ProcessRecord, RecordRef,
    INITIAL_CELLS,
};
use crate::platform::ProcessId;
use crate::{Incarnation, Member, Offset};

/// A system block (process table or record): service data with no owner cell.
fn system_piece(at: u32, size: u32) -> Piece {
    Piece {
        at,
        size,
        flags: SERVICE,
        refs: 0,
        owner: NO_OWNER,
    }
}

/// A block with one owner.
fn owned_piece(at: u32, size: u32, flags: u32, owner: u32) -> Piece {
    Piece {
        at,
        size,
        flags,
        refs: 1,
        owner,
    }
}

/// Increments a 64-bit counter stored as two words.
fn bump_u64(tx: &mut Tx<'_, '_>, words: &[AtomicU32; 2]) -> Result<(), Error> {
    let lo = words[0].load(Relaxed).wrapping_add(1);
    tx.set(&words[0], lo)?;
    if lo == 0 {
        tx.set(&words[1], words[1].load(Relaxed).wrapping_add(1))?;
    }
    Ok(())
}

/// Adds (or with `add == false` subtracts) `bytes` to a process's owned-bytes counter.
fn owned(tx: &mut Tx<'_, '_>, r: &RecordRef<'_>, bytes: u32, add: bool) -> Result<(), Error> {
    let v = r.rec.owned_bytes.load(Relaxed);
    tx.set(
        &r.rec.owned_bytes,
        if add {
            v.wrapping_add(bytes)
        } else {
            v.wrapping_sub(bytes)
        },
    )
}

/// A place in a block's owner chain: the word that links to it, and the cell itself.
#[derive(Clone, Copy)]
pub(crate) struct ChainPos<'m> {
    /// The header's `owner` word or the previous cell's `next` word.
    link: &'m AtomicU32,
    /// The cell's owner reference.
    at: OwnerRef,
    /// The cell.
    cell: &'m OwnerCell,
}

impl<'m> Space<'m> {
    // ----- process table and records ----------------------------------------------------

    /// Lists each range's one free block in the index. Called by `init` only.
    pub(crate) fn init_index(&self) -> Result<(), Error> {
        let faults = FaultInjector::default();
        let mut tx = self.begin(0, &faults);
        for r in &self.ranges {
            let h = self.region.get(r.lo)?;
            let size = r.hi.checked_sub(r.lo).ok_or(AttachError::BadConfig)?;
            self.index_insert(&mut tx, r.lo, h, size, false)?;
        }
        tx.commit().map(|_| ())
    }

    /// Formats the process table as the first service block. Called by `init` only.
    pub(crate) fn init_process_table(&self, capacity: u16) -> Result<(), Error> {
        let faults = FaultInjector::default();
        let mut tx = self.begin(0, &faults);
        let bytes = u32::from(capacity)
            .checked_mul(4)
            .ok_or(AttachError::BadConfig)?;
        let need = self.geo.block_size(bytes)?;
        let f = self
            .last_fit(need)?
            .ok_or(Error::OutOfMemory { requested: bytes })?;
        let (at, size) = self.place(f, need, Placement::High)?;
        let bad = || corrupt(at, CorruptionKind::BadBlockSize);
        let table = at.checked_add(self.geo.hsize).ok_or_else(bad)?;
        let table_end = table.checked_add(bytes).ok_or_else(bad)?;
        for o in (table..table_end).step_by(4) {
            tx.set_fresh(self.region.word(o)?, 0)?;
        }
        self.carve(&mut tx, f, system_piece(at, size))?;
        let h = &self.hdr.heap;
        tx.set(&h.proc_table, table)?;
        tx.set(&h.proc_capacity, u32::from(capacity))?;
        // Formatting leaves no history: the minimum starts from the formatted state.
        tx.set(&h.min_free_bytes, h.free_bytes.load(Relaxed))?;
        tx.commit().map(|_| ())
    }

    /// The process-table entry for `slot`.
    fn table_entry(&self, slot: ProcSlot) -> Result<&'m AtomicU32, Error> {
        let cap = self.hdr.heap.proc_capacity.load(Relaxed);
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
        let at = self.table_entry(slot)?.load(Relaxed);
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
        self.incarnation(m.incarnation()).map(|r| r.slot)
    }

    /// Cell `index` of a validated record.
    fn cell(&self, r: &RecordRef<'m>, index: u32) -> Result<&'m OwnerCell, Error> {
        if index >= r.rec.cell_capacity.load(Relaxed) {
            return Err(corrupt(r.at, CorruptionKind::BadOwner));
        }
        self.region.get(r.cell_offset(index))
    }

    /// The cell an owner reference names.
    fn cell_of(&self, o: OwnerRef) -> Result<(RecordRef<'m>, &'m OwnerCell), Error> {
        let r = self.record(ProcSlot(o.slot))?;
        let c = self.cell(&r, u32::from(o.cell))?;
        Ok((r, c))
    }

    /// Registers a process: a record with a fresh owner array, from the high end.
    pub(crate) fn register(&self, tx: &mut Tx<'_, 'm>, id: ProcessId) -> Result<Member, Error> {
        let h = &self.hdr.heap;
        let cap = h.proc_capacity.load(Relaxed);
        let mut slot = None;
        for i in 0..cap.min(u32::from(u16::MAX)) {
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
        tx.set_fresh(&rec.reserved, 0)?;
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
    fn format_free_cells(
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
    fn grow(&self, tx: &mut Tx<'_, 'm>, slot: ProcSlot) -> Result<RecordRef<'m>, Error> {
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
        if cells > crate::layout::MAX_CELLS {
            return Err(Error::OwnerTableFull { process: slot });
        }
        let r = self.grow_to(tx, slot, cells)?;
        Ok(r.rec.cell_capacity.load(Relaxed))
    }

    /// Moves `slot`'s owner array to a block holding `new_cap` cells (more than now).
    fn grow_to(
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
        tx.set(self.table_entry(slot)?, new_at)?;
        let old_b = old
            .at
            .checked_sub(self.geo.hsize)
            .ok_or_else(|| corrupt(old.at, CorruptionKind::BadProcessTable))?;
        self.free_block_at(tx, old_b)?;
        self.record(slot)
    }

    /// Takes a free cell of `slot`'s owner array, growing the array when full. The cell's
    /// words are left for the caller to fill.
    fn take_cell(
        &self,
        tx: &mut Tx<'_, 'm>,
        slot: ProcSlot,
    ) -> Result<(RecordRef<'m>, u32, &'m OwnerCell), Error> {
        let mut r = self.record(slot)?;
        if r.rec.free_cell.load(Relaxed) == NO_CELL {
            r = self.grow(tx, slot)?;
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
    fn put_cell(
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
    fn owner_head(&self, p: Offset, h: &'m BlockHeader) -> Result<OwnerRef, Error> {
        let bad = Error::BadOffset { offset: p };
        let head = OwnerRef::unpack(h.owner.load(Relaxed)).ok_or(bad)?;
        let (_, c) = self.cell_of(head).map_err(|_| bad)?;
        if c.block.load(Relaxed) != p.get() || h.link.load(Relaxed) == 0 {
            return Err(bad);
        }
        Ok(head)
    }

    /// Walks block `p`'s owner chain: exactly its reference count of cells (never more
    /// than there are process slots, as a process holds one cell per block), each checked
    /// to name `p`, the last ending the chain. Calls `visit` with each position.
    pub(crate) fn walk_chain(
        &self,
        p: Offset,
        h: &'m BlockHeader,
        mut visit: impl FnMut(ChainPos<'m>),
    ) -> Result<(), Error> {
        let refs = h.link.load(Relaxed);
        // Bounded by a process-local limit too: `proc_capacity` is read from the region,
        // and a hostile value (u32::MAX) must not make this walk long under the lock. A
        // process holds one cell per block, and slots are 16-bit.
        if refs > self.hdr.heap.proc_capacity.load(Relaxed) || refs > MAX_SLOTS {
            return Err(corrupt(p.get(), CorruptionKind::BadRefCount));
        }
        let mut link: &'m AtomicU32 = &h.owner;
        for _ in 0..refs {
            let at = OwnerRef::unpack(link.load(Relaxed))
                .ok_or_else(|| corrupt(p.get(), CorruptionKind::BadRefCount))?;
            let (_, cell) = self
                .cell_of(at)
                .map_err(|_| corrupt(p.get(), CorruptionKind::BadOwner))?;
            if cell.block.load(Relaxed) != p.get() {
                return Err(corrupt(p.get(), CorruptionKind::BadOwner));
            }
            visit(ChainPos { link, at, cell });
            link = &cell.next;
        }
        if link.load(Relaxed) != NO_OWNER {
            return Err(corrupt(p.get(), CorruptionKind::BadRefCount));
        }
        Ok(())
    }

    /// The position of `find`'s cell on block `p`'s chain, if there, and whether `absent`
    /// is on it.
    fn chain_find(
        &self,
        p: Offset,
        h: &'m BlockHeader,
        find: ProcSlot,
        absent: Option<ProcSlot>,
    ) -> Result<(Option<ChainPos<'m>>, bool), Error> {
        self.owner_head(p, h)?;
        let mut found = None;
        let mut seen_absent = false;
        self.walk_chain(p, h, |pos| {
            if pos.at.slot == find.0 && found.is_none() {
                found = Some(pos);
            }
            seen_absent |= Some(ProcSlot(pos.at.slot)) == absent;
        })?;
        Ok((found, seen_absent))
    }

    // ----- operations ---------------------------------------------------------------------

    /// Largest block any range can hold.
    pub(crate) fn max_block(&self) -> u32 {
        // `hi > lo` for every range (process-local, see `heap_ranges`).
        self.ranges
            .iter()
            .map(|r| r.hi.saturating_sub(r.lo))
            .max()
            .unwrap_or(0)
    }

    /// `alloc` and `alloc_service`.
    pub(crate) fn alloc(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: ProcSlot,
        size: u32,
        placement: Placement,
    ) -> Result<Offset, Error> {
        let need = self.geo.block_size(size)?;
        let max = self.max_block();
        if need > max {
            return Err(Error::TooLarge {
                requested: size,
                max: max.saturating_sub(self.geo.hsize),
            });
        }
        let (r, index, cell) = self.take_cell(tx, me)?;
        let f = match placement {
            Placement::Low => self.good_fit(need)?,
            Placement::High => self.last_fit(need)?,
        }
        .ok_or(Error::OutOfMemory { requested: size })?;
        let (at, bsize) = self.place(f, need, placement)?;
        let flags = if placement == Placement::High {
            SERVICE
        } else {
            0
        };
        let owner = r.owner_ref(index).pack();
        self.carve(tx, f, owned_piece(at, bsize, flags, owner))?;
        let p = at
            .checked_add(self.geo.hsize)
            .ok_or_else(|| corrupt(at, CorruptionKind::BadBlockSize))?;
        tx.set(&cell.block, p)?;
        tx.set(&cell.next, NO_OWNER)?;
        owned(tx, &r, bsize, true)?;
        bump_u64(tx, &self.hdr.heap.allocs)?;
        Ok(Offset::new(p))
    }

    /// `alloc_at`.
    pub(crate) fn alloc_at(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: ProcSlot,
        offset: Offset,
        size: u32,
    ) -> Result<Offset, Error> {
        let unavailable = Error::Unavailable { offset };
        let need = self.geo.block_size(size)?;
        let b = offset
            .get()
            .checked_sub(self.geo.hsize)
            .ok_or(unavailable)?;
        if b.checked_rem(self.geo.align) != Some(0) {
            return Err(unavailable);
        }
        let range = self.range_of(b).ok_or(unavailable)?;
        if b.checked_add(need).is_none_or(|end| end > range.hi) {
            return Err(unavailable);
        }
        let (r, index, cell) = self.take_cell(tx, me)?;
        let f: Found = self.containing(b, need)?.ok_or(unavailable)?;
        // `containing` found `f` around `[b, b + need)`.
        let bad = || corrupt(f.at, CorruptionKind::BadBlockSize);
        let front = b.checked_sub(f.at).ok_or_else(bad)?;
        if front != 0 && front < self.geo.min_block {
            return Err(unavailable);
        }
        let back = b
            .checked_add(need)
            .and_then(|end| f.at.checked_add(f.size)?.checked_sub(end))
            .ok_or_else(bad)?;
        let bsize = if back < self.geo.min_block {
            need.checked_add(back).ok_or_else(bad)?
        } else {
            need
        };
        self.carve(tx, f, owned_piece(b, bsize, 0, r.owner_ref(index).pack()))?;
        tx.set(&cell.block, offset.get())?;
        tx.set(&cell.next, NO_OWNER)?;
        owned(tx, &r, bsize, true)?;
        bump_u64(tx, &self.hdr.heap.allocs)?;
        Ok(offset)
    }

    /// `free`: the caller must be the only owner.
    pub(crate) fn free(&self, tx: &mut Tx<'_, 'm>, me: ProcSlot, p: Offset) -> Result<(), Error> {
        let (h, b) = self.used_block(p)?;
        if let Some((r, pos)) = self.sole_owner(me, p, h) {
            return self.drop_ref(tx, &r, p, (h, b), pos).map(|_| ());
        }
        let head = self.owner_head(p, h)?;
        if head.slot != me.0 {
            // `me` might co-own it; either way it is not `me`'s alone to free.
            let (mine, _) = self.chain_find(p, h, me, None)?;
            return Err(match mine {
                Some(_) => Error::Shared { offset: p },
                None => Error::NotOwner {
                    offset: p,
                    process: me,
                },
            });
        }
        if h.link.load(Relaxed) != 1 {
            return Err(Error::Shared { offset: p });
        }
        self.release(tx, me, p).map(|_| ())
    }

    /// The common case of `free`, checked once: `me` is block `p`'s first and only owner,
    /// its cell names `p` and ends the chain. `None` sends the caller down the general
    /// path, which finds the right error.
    fn sole_owner(
        &self,
        me: ProcSlot,
        p: Offset,
        h: &'m BlockHeader,
    ) -> Option<(RecordRef<'m>, ChainPos<'m>)> {
        let head = OwnerRef::unpack(h.owner.load(Relaxed))?;
        if head.slot != me.0 || h.link.load(Relaxed) != 1 {
            return None;
        }
        let r = self.record(me).ok()?;
        let cell = self.cell(&r, u32::from(head.cell)).ok()?;
        let ends = cell.block.load(Relaxed) == p.get() && cell.next.load(Relaxed) == NO_OWNER;
        ends.then_some((
            r,
            ChainPos {
                link: &h.owner,
                at: head,
                cell,
            },
        ))
    }

    /// `release`: drops `me`'s reference; frees the block when it was the last.
    pub(crate) fn release(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: ProcSlot,
        p: Offset,
    ) -> Result<bool, Error> {
        let (h, b) = self.used_block(p)?;
        let (pos, _) = self.chain_find(p, h, me, None)?;
        let pos = pos.ok_or(Error::NotOwner {
            offset: p,
            process: me,
        })?;
        let r = self.record(me)?;
        self.drop_ref(tx, &r, p, (h, b), pos)
    }

    /// Drops the reference of `r`'s process, at `pos` on the chain of block `p` (header
    /// `h` at `b`); frees the block when it was the last. Returns whether it was.
    fn drop_ref(
        &self,
        tx: &mut Tx<'_, 'm>,
        r: &RecordRef<'m>,
        p: Offset,
        (h, b): (&'m BlockHeader, u32),
        pos: ChainPos<'m>,
    ) -> Result<bool, Error> {
        let size = h.size();
        tx.set(pos.link, pos.cell.next.load(Relaxed))?;
        self.put_cell(tx, r, u32::from(pos.at.cell), pos.cell)?;
        owned(tx, r, size, false)?;
        if r.rec.reserve.load(Relaxed) == p.get() {
            tx.set(&r.rec.reserve, 0)?;
        }
        let refs = h.link.load(Relaxed).wrapping_sub(1);
        tx.set(&h.link, refs)?;
        if refs == 0 {
            self.free_block_at(tx, b)?;
            bump_u64(tx, &self.hdr.heap.frees)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// `give`: moves `me`'s reference to `to`.
    pub(crate) fn give(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: ProcSlot,
        p: Offset,
        to: ProcSlot,
    ) -> Result<(), Error> {
        let (h, _) = self.used_block(p)?;
        self.record(to)?;
        if to == me {
            // Validate ownership, change nothing.
            let (mine, _) = self.chain_find(p, h, me, None)?;
            return mine.map(|_| ()).ok_or(Error::NotOwner {
                offset: p,
                process: me,
            });
        }
        // Take `to`'s cell first: growing its array must happen before we hold positions.
        let (rt, index, new_cell) = self.take_cell(tx, to)?;
        let (pos, to_owns) = self.chain_find(p, h, me, Some(to))?;
        let pos = pos.ok_or(Error::NotOwner {
            offset: p,
            process: me,
        })?;
        if to_owns {
            return Err(Error::AlreadyOwner {
                offset: p,
                process: to,
            });
        }
        let size = h.size();
        tx.set(&new_cell.block, p.get())?;
        tx.set(&new_cell.next, pos.cell.next.load(Relaxed))?;
        tx.set(pos.link, rt.owner_ref(index).pack())?;
        let rm = self.record(me)?;
        self.put_cell(tx, &rm, u32::from(pos.at.cell), pos.cell)?;
        owned(tx, &rm, size, false)?;
        owned(tx, &rt, size, true)?;
        if rm.rec.reserve.load(Relaxed) == p.get() {
            tx.set(&rm.rec.reserve, 0)?;
        }
        Ok(())
    }

    /// `share`: adds `with` as a co-owner.
    pub(crate) fn share(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: ProcSlot,
        p: Offset,
        with: ProcSlot,
    ) -> Result<(), Error> {
        let (h, _) = self.used_block(p)?;
        self.record(with)?;
        let already = Error::AlreadyOwner {
            offset: p,
            process: with,
        };
        if with == me {
            return Err(already);
        }
        let (rw, index, new_cell) = self.take_cell(tx, with)?;
        let (mine, with_owns) = self.chain_find(p, h, me, Some(with))?;
        if mine.is_none() {
            return Err(Error::NotOwner {
                offset: p,
                process: me,
            });
        }
        if with_owns {
            return Err(already);
        }
        tx.set(&new_cell.block, p.get())?;
        tx.set(&new_cell.next, h.owner.load(Relaxed))?;
        tx.set(&h.owner, rw.owner_ref(index).pack())?;
        tx.set(&h.link, h.link.load(Relaxed).wrapping_add(1))?;
        owned(tx, &rw, h.size(), true)?;
        // A shared block cannot be cut up for reserved allocations any more.
        let rm = self.record(me)?;
        if rm.rec.reserve.load(Relaxed) == p.get() {
            tx.set(&rm.rec.reserve, 0)?;
        }
        Ok(())
    }

    /// Lists the owners of block `p`.
    pub(crate) fn owners(&self, p: Offset, mut f: impl FnMut(ProcSlot)) -> Result<(), Error> {
        let (h, _) = self.used_block(p)?;
        self.walk_chain(p, h, |pos| f(ProcSlot(pos.at.slot)))
    }

    /// `reserve`: replaces `me`'s reserve with a new block of `size` bytes.
    pub(crate) fn reserve(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: ProcSlot,
        size: u32,
    ) -> Result<Offset, Error> {
        let old = self.record(me)?.rec.reserve.load(Relaxed);
        if old != 0 {
            self.release(tx, me, Offset::new(old))?;
        }
        let p = self.alloc(tx, me, size, Placement::High)?;
        tx.set(&self.record(me)?.rec.reserve, p.get())?;
        Ok(p)
    }

    /// `alloc_from_reserve`: cuts `size` bytes from the front of `me`'s reserve.
    pub(crate) fn alloc_from_reserve(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: ProcSlot,
        size: u32,
    ) -> Result<Offset, Error> {
        let r = self.record(me)?;
        let p = r.rec.reserve.load(Relaxed);
        if p == 0 {
            return Err(Error::ReserveTooSmall {
                requested: size,
                available: 0,
            });
        }
        let p = Offset::new(p);
        let bad = || corrupt(r.at, CorruptionKind::BadOwnerTable);
        let (h, b) = self.used_block(p).map_err(|_| bad())?;
        let total = h.size();
        let need = self.geo.block_size(size)?;
        if need > total {
            return Err(Error::ReserveTooSmall {
                requested: size,
                available: total.saturating_sub(self.geo.hsize),
            });
        }
        // Split only if the rest can be a block and can get an owner cell. When the heap
        // is too full to grow the owner array (which writes nothing before failing), the
        // whole reserve is handed out instead: a reserve must work on a full heap.
        let mut split = false;
        if total
            .checked_sub(need)
            .is_some_and(|rest| rest >= self.geo.min_block)
        {
            match self.take_cell(tx, me) {
                Ok(cell) => {
                    self.split_reserve(tx, b, h, need, cell)?;
                    split = true;
                }
                Err(Error::OutOfMemory { .. }) | Err(Error::OwnerTableFull { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if !split {
            tx.set(&self.record(me)?.rec.reserve, 0)?;
        }
        bump_u64(tx, &self.hdr.heap.allocs)?;
        Ok(p)
    }

    /// Splits the reserve block at `b` after `need` bytes; the rest, owned through the
    /// given new cell, becomes the reserve.
    fn split_reserve(
        &self,
        tx: &mut Tx<'_, 'm>,
        b: u32,
        h: &'m BlockHeader,
        need: u32,
        (r, index, cell): (RecordRef<'m>, u32, &'m OwnerCell),
    ) -> Result<(), Error> {
        let total = h.size();
        let bad = || corrupt(b, CorruptionKind::BadBlockSize);
        let rest_at = b.checked_add(need).ok_or_else(bad)?;
        let next_phys = self.block(b.checked_add(total).ok_or_else(bad)?)?;
        let rest: &'m BlockHeader = self.region.get(rest_at)?;
        let rest_size = total.checked_sub(need).ok_or_else(bad)?;
        tx.set(&rest.size_flags, rest_size | USED | SERVICE)?;
        tx.set(&rest.prev_phys, b)?;
        tx.set(&rest.link, 1)?;
        tx.set(&rest.owner, r.owner_ref(index).pack())?;
        tx.set(&next_phys.prev_phys, rest_at)?;
        tx.set(&h.size_flags, need | h.flags())?;
        let rest_p = rest_at.checked_add(self.geo.hsize).ok_or_else(bad)?;
        tx.set(&cell.block, rest_p)?;
        tx.set(&cell.next, NO_OWNER)?;
        tx.set(&r.rec.reserve, rest_p)?;
        let heap = &self.hdr.heap;
        tx.set(
            &heap.used_blocks,
            heap.used_blocks.load(Relaxed).wrapping_add(1),
        )
    }

    /// One step of `reclaim`: drops the next reference `slot` holds, or, when none is
    /// left, frees its record and slot.
    pub(crate) fn reclaim_step(
        &self,
        tx: &mut Tx<'_, 'm>,
        slot: ProcSlot,
        cursor: &mut u32,
    ) -> Result<ReclaimStep, Error> {
        if *cursor == 0 && self.detach(tx, slot)? {
            return Ok(ReclaimStep::Detached);
        }
        let r = self.record(slot)?;
        let cap = r.rec.cell_capacity.load(Relaxed);
        while *cursor < cap {
            let p = self.cell(&r, *cursor)?.block.load(Relaxed);
            if p != 0 {
                let (h, _) = self
                    .used_block(Offset::new(p))
                    .map_err(|_| corrupt(r.cell_offset(*cursor), CorruptionKind::BadOwner))?;
                let bytes = h.size();
                let freed = self.release(tx, slot, Offset::new(p))?;
                return Ok(ReclaimStep::Released { bytes, freed });
            }
            *cursor = cursor.saturating_add(1); // below `cap`
        }
        let h = &self.hdr.heap;
        // Allocations it was blocked in when it died will never unregister as waiters.
        let waiting = r.rec.waiting.load(Relaxed);
        if waiting != 0 {
            let all = &self.hdr.waiters;
            tx.set(all, all.load(Relaxed).saturating_sub(waiting))?;
        }
        tx.set(self.table_entry(slot)?, 0)?;
        tx.set(&h.proc_count, h.proc_count.load(Relaxed).wrapping_sub(1))?;
        tx.set(&h.reclaims, h.reclaims.load(Relaxed).wrapping_add(1))?;
        let b =
            r.at.checked_sub(self.geo.hsize)
                .ok_or_else(|| corrupt(r.at, CorruptionKind::BadProcessTable))?;
        self.free_block_at(tx, b)?;
        Ok(ReclaimStep::Done)
    }
}
