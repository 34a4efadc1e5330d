//! The operations, each run inside one journaled transaction by [`Heap`](crate::Heap).
//!
//! Order matters for atomicity only through the journal: every operation may fail at any
//! step and is then undone as a whole. One rule is kept by hand: words in free memory that
//! a new block will hold are written ([`Tx::set_fresh`]) before the block is carved, so
//! nothing live ever points at half-written memory.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{BlockHeader, OwnerCell, OwnerRef, KEPT_OWNER, NO_OWNER, SERVICE, USED};
use crate::heap::freelist::{Found, Piece};
use crate::heap::owners::{ChainPos, RecordRef};
use crate::heap::{Placement, ReclaimStep, Space};
use crate::ids::ProcSlot;
use crate::journal::Tx;
use crate::offset::Offset;

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
    add_u64(tx, words, 1)
}

/// Adds `n` to a 64-bit counter stored as two words.
pub(super) fn add_u64(tx: &mut Tx<'_, '_>, words: &[AtomicU32; 2], n: u32) -> Result<(), Error> {
    let old = words[0].load(Relaxed);
    let lo = old.wrapping_add(n);
    tx.set(&words[0], lo)?;
    if lo < old {
        tx.set(&words[1], words[1].load(Relaxed).wrapping_add(1))?;
    }
    Ok(())
}

/// Adds (or with `add == false` subtracts) `bytes` to a process's owned-bytes counter.
#[inline]
pub(super) fn owned(
    tx: &mut Tx<'_, '_>,
    r: &RecordRef<'_>,
    bytes: u32,
    add: bool,
) -> Result<(), Error> {
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

impl<'m> Space<'m> {
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
        let r = self.record(me)?;
        self.alloc_in(tx, r, size, placement)
    }

    /// The block size for a payload of `size` bytes and the largest block any range can
    /// hold; [`Error::TooLarge`] when the block is larger.
    #[inline]
    pub(crate) fn block_for(&self, size: u32) -> Result<(u32, u32), Error> {
        let need = self.geo.block_size(size)?;
        let max = self.max_block();
        if need > max {
            return Err(Error::TooLarge {
                requested: size,
                max: max.saturating_sub(self.geo.hsize),
            });
        }
        Ok((need, max))
    }

    /// [`Self::alloc`] for the process whose record `me` is (validated in this operation).
    pub(crate) fn alloc_in(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: RecordRef<'m>,
        size: u32,
        placement: Placement,
    ) -> Result<Offset, Error> {
        let (need, _) = self.block_for(size)?;
        let (r, index, cell) = self.take_cell_in(tx, me)?;
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
        if !self.geo.is_aligned(b) {
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

    /// `free`: the caller must be the only owner. `me` is the caller's record, validated
    /// in this operation.
    pub(crate) fn free(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: RecordRef<'m>,
        p: Offset,
    ) -> Result<(), Error> {
        let (h, b) = self.used_block(p)?;
        if let Some(pos) = self.sole_owner(me, p, h) {
            return self.drop_ref(tx, p, (h, b), pos).map(|_| ());
        }
        let me = me.slot;
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

    /// The common case of `free` and `give`, checked once: `me` is block `p`'s first and
    /// only owner, its cell names `p` and ends the chain. `None` sends the caller down the general
    /// path, which finds the right error.
    fn sole_owner(
        &self,
        rec: RecordRef<'m>,
        p: Offset,
        h: &'m BlockHeader,
    ) -> Option<ChainPos<'m>> {
        let head = OwnerRef::unpack(h.owner.load(Relaxed))?;
        if head.slot != rec.slot.0 || h.link.load(Relaxed) != 1 {
            return None;
        }
        let cell = self.cell(&rec, head.cell).ok()?;
        let ends = cell.block.load(Relaxed) == p.get() && cell.next.load(Relaxed) == NO_OWNER;
        ends.then_some(ChainPos {
            link: &h.owner,
            at: head,
            cell,
            rec,
        })
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
        self.drop_ref(tx, p, (h, b), pos)
    }

    /// Drops the reference at `pos` on the chain of block `p` (header `h` at `b`), whose
    /// process is `pos.rec`'s; frees the block when it was the last. Returns whether it was.
    fn drop_ref(
        &self,
        tx: &mut Tx<'_, 'm>,
        p: Offset,
        (h, b): (&'m BlockHeader, u32),
        pos: ChainPos<'m>,
    ) -> Result<bool, Error> {
        let r = &pos.rec;
        let size = h.size();
        tx.set(pos.link, pos.cell.next.load(Relaxed))?;
        self.put_cell(tx, r, pos.at.cell, pos.cell)?;
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

    /// `give`: moves `me`'s reference to `to`. `me` and `to` are records validated in
    /// this operation, where they are now (no owner array has moved since).
    pub(crate) fn give(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: RecordRef<'m>,
        p: Offset,
        to: RecordRef<'m>,
    ) -> Result<(), Error> {
        let (h, _) = self.used_block(p)?;
        if to.slot == me.slot {
            // Validate ownership, change nothing.
            let (mine, _) = self.chain_find(p, h, me.slot, None)?;
            return mine.map(|_| ()).ok_or(Error::NotOwner {
                offset: p,
                process: me.slot,
            });
        }
        // Take `to`'s cell first: growing its array must happen before we hold positions.
        let (rt, index, new_cell) = self.take_cell_in(tx, to)?;
        // The common case, `me` the only owner, checked without walking the chain; `to`
        // cannot be on a chain that `me` ends.
        let pos = match self.sole_owner(me, p, h) {
            Some(pos) => pos,
            None => {
                let (pos, to_owns) = self.chain_find(p, h, me.slot, Some(rt.slot))?;
                let pos = pos.ok_or(Error::NotOwner {
                    offset: p,
                    process: me.slot,
                })?;
                if to_owns {
                    return Err(Error::AlreadyOwner {
                        offset: p,
                        process: rt.slot,
                    });
                }
                pos
            }
        };
        let size = h.size();
        tx.set(&new_cell.block, p.get())?;
        tx.set(&new_cell.next, pos.cell.next.load(Relaxed))?;
        tx.set(pos.link, rt.owner_ref(index).pack())?;
        // `me`'s record as the caller or the walk found it: only `to`'s array can have
        // moved (in `take_cell_in`, before either).
        let rm = pos.rec;
        self.put_cell(tx, &rm, pos.at.cell, pos.cell)?;
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

    /// Lists the owners of block `p` (none for a kept block).
    pub(crate) fn owners(&self, p: Offset, mut f: impl FnMut(ProcSlot)) -> Result<(), Error> {
        let (h, _) = self.used_block(p)?;
        if h.owner.load(Relaxed) == KEPT_OWNER && h.link.load(Relaxed) == 0 {
            return Ok(());
        }
        self.walk_chain(p, h, |pos| f(ProcSlot(pos.at.slot)))
    }

    /// `keep`: block `p`, which `me` owns alone, becomes kept (owned by the region).
    pub(crate) fn keep(&self, tx: &mut Tx<'_, 'm>, me: ProcSlot, p: Offset) -> Result<(), Error> {
        let (h, _) = self.used_block(p)?;
        // The checks and errors of `free`: `Kept` for a kept block, `BadOffset` for system
        // data, then `me` must be the first and only owner.
        let head = self.owner_head(p, h)?;
        let (mine, _) = self.chain_find(p, h, me, None)?;
        let pos = mine.ok_or(Error::NotOwner {
            offset: p,
            process: me,
        })?;
        if head.slot != me.0 || h.link.load(Relaxed) != 1 {
            return Err(Error::Shared { offset: p });
        }
        let r = self.record(me)?;
        self.put_cell(tx, &r, pos.at.cell, pos.cell)?;
        owned(tx, &r, h.size(), false)?;
        if r.rec.reserve.load(Relaxed) == p.get() {
            tx.set(&r.rec.reserve, 0)?;
        }
        tx.set(&h.link, 0)?;
        tx.set(&h.owner, KEPT_OWNER)?;
        let kept = &self.hdr.heap.kept_blocks;
        let n = kept
            .load(Relaxed)
            .checked_add(1)
            .ok_or_else(|| self.kept_count_bad())?;
        tx.set(kept, n)
    }

    /// `take`: kept block `p` becomes `me`'s alone; the kept root is cleared if it named
    /// `p`.
    pub(crate) fn take(&self, tx: &mut Tx<'_, 'm>, me: ProcSlot, p: Offset) -> Result<(), Error> {
        let (h, b) = self.used_block(p)?;
        if h.owner.load(Relaxed) != KEPT_OWNER {
            return Err(Error::NotKept { offset: p });
        }
        if h.link.load(Relaxed) != 0 {
            return Err(corrupt(b, CorruptionKind::BadRefCount));
        }
        let kept = &self.hdr.heap.kept_blocks;
        let n = kept
            .load(Relaxed)
            .checked_sub(1)
            .ok_or_else(|| self.kept_count_bad())?;
        // Taking a cell may grow the owner array: a new service block, never this one.
        let (r, index, cell) = self.take_cell(tx, me)?;
        tx.set(&cell.block, p.get())?;
        tx.set(&cell.next, NO_OWNER)?;
        tx.set(&h.owner, r.owner_ref(index).pack())?;
        tx.set(&h.link, 1)?;
        owned(tx, &r, h.size(), true)?;
        tx.set(kept, n)?;
        if self.hdr.kept_root.load(Relaxed) == p.get() {
            tx.set(&self.hdr.kept_root, 0)?;
        }
        Ok(())
    }

    /// `set_kept_root`: names kept block `p` (or nothing) as the kept root.
    pub(crate) fn set_kept_root(
        &self,
        tx: &mut Tx<'_, 'm>,
        p: Option<Offset>,
    ) -> Result<(), Error> {
        let word = match p {
            None => 0,
            Some(p) => {
                let (h, _) = self.used_block(p)?;
                if h.owner.load(Relaxed) != KEPT_OWNER {
                    return Err(Error::NotKept { offset: p });
                }
                p.get()
            }
        };
        tx.set(&self.hdr.kept_root, word)
    }

    /// The kept root, if it names a kept block (read without the lock; a damaged word
    /// names nothing).
    pub(crate) fn kept_root(&self) -> Option<Offset> {
        let p = Offset::from_link(self.hdr.kept_root.load(Relaxed))?;
        let (h, _) = self.used_block(p).ok()?;
        (h.owner.load(Relaxed) == KEPT_OWNER).then_some(p)
    }

    /// The error for a kept-block counter that cannot move as asked.
    fn kept_count_bad(&self) -> Error {
        let at = self
            .region
            .offset_of(&self.hdr.heap.kept_blocks)
            .unwrap_or(0);
        corrupt(at, CorruptionKind::BadStatistics)
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
        // A size no block can hold is refused as such, whether or not there is a reserve.
        let need = self.geo.block_size(size)?;
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
        let r = self.record(slot)?;
        if *cursor == 0 {
            // From the first step on, the incarnation may no longer act (see
            // `ProcessRecord::leaving`); a reclaim resumed after a crash finds it set.
            let newly = r.rec.leaving.load(Relaxed) == 0;
            if newly {
                tx.set(&r.rec.leaving, 1)?;
            }
            if self.detach(tx, slot)? || newly {
                return Ok(ReclaimStep::Detached);
            }
        }
        let cap = r.rec.cell_capacity.load(Relaxed);
        while *cursor < cap {
            let p = self.cell(&r, *cursor)?.block.load(Relaxed);
            if p != 0 {
                let (h, _) = self
                    .used_block(Offset::new(p))
                    .map_err(|_| corrupt(r.cell_offset(*cursor), CorruptionKind::BadOwner))?;
                let bytes = h.size();
                // A block in the process's cache is owned by it alone: make it an
                // ordinary block, then release it like any other.
                if h.is_cached() {
                    tx.set(&h.link, 1)?;
                }
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
