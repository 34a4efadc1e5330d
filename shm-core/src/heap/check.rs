//! [`Heap::check`](crate::Heap::check): walks everything and reports the first broken
//! invariant. Every walk is bounded, so corrupted bytes give an error, never a hang.

use core::sync::atomic::Ordering::Relaxed;

use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{OwnerCell, OwnerRef, END, KEPT_OWNER, NO_CELL, NO_OWNER};
use crate::heap::owners::RecordRef;
use crate::heap::Space;
use crate::ids::ProcSlot;
use crate::offset::Offset;

/// What a successful [`Heap::check`](crate::Heap::check) walked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Blocks visited, end markers excluded.
    pub blocks: u32,
    /// Of which used (including system data).
    pub used_blocks: u32,
    /// Of which free.
    pub free_blocks: u32,
    /// Bytes in free blocks.
    pub free_bytes: u64,
    /// Registered processes.
    pub processes: u32,
    /// Used owner cells over all processes (= sum of reference counts).
    pub owner_cells: u64,
    /// Kept blocks (owned by the region; counted in `used_blocks` too).
    pub kept_blocks: u32,
    /// Bytes in kept blocks, headers included.
    pub kept_bytes: u64,
    /// Cached blocks: freed into their owner's process cache, still owned (counted in
    /// `used_blocks` too; see [`Cache`](crate::Cache)).
    pub cached_blocks: u32,
    /// Bytes in cached blocks, headers included.
    pub cached_bytes: u64,
}

impl<'m> Space<'m> {
    pub(crate) fn check(&self) -> Result<CheckReport, Error> {
        let heap = &self.hdr.heap;
        let mut rep = CheckReport::default();
        if self.hdr.journal.len.load(Relaxed) != 0 || self.hdr.deferred.at.load(Relaxed) != 0 {
            let at = self.region.offset_of(&self.hdr.journal.len)?;
            return Err(corrupt(at, CorruptionKind::BadJournal));
        }

        // 0. Process table and owner tables. Their capacities bound every chain walk below:
        //    records must fit in their blocks, so the total is at most the region size / 8.
        let table = heap.proc_table.load(Relaxed);
        let cap = heap.proc_capacity.load(Relaxed);
        let table_bad = || corrupt(table, CorruptionKind::BadProcessTable);
        let (th, _) = self
            .used_block(Offset::new(table))
            .map_err(|_| table_bad())?;
        if th.owner.load(Relaxed) != NO_OWNER
            // u32 values in a u64: cannot saturate.
            || u64::from(th.size())
                < u64::from(self.geo.hsize).saturating_add(u64::from(cap).saturating_mul(4))
            || cap > crate::format::MAX_SLOTS
        {
            return Err(table_bad());
        }
        // The counts below are bounded by `cap` or by the walk limit, and the sums are of
        // at most that many u32 values in a u64: saturating never happens.
        let mut cell_capacity: u64 = 0;
        for slot in 0..cap {
            match self.record(ProcSlot(slot as u16)) {
                Ok(r) => {
                    rep.processes = rep.processes.saturating_add(1);
                    cell_capacity =
                        cell_capacity.saturating_add(u64::from(r.rec.cell_capacity.load(Relaxed)));
                }
                Err(Error::NotRegistered { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if rep.processes != heap.proc_count.load(Relaxed) {
            return Err(table_bad());
        }

        // 1. Tiling, boundary tags, coalescing, owner chains of every used block.
        let mut total: u64 = 0;
        let mut system: u32 = 0;
        let mut ref_sum: u64 = 0;
        let mut steps = 0u32;
        for r in &self.ranges {
            let mut b = r.lo;
            let mut prev = 0u32;
            let mut prev_free = false;
            while b < r.hi {
                steps = steps
                    .checked_add(1)
                    .ok_or_else(|| corrupt(b, CorruptionKind::Cycle))?;
                if steps > self.walk_limit() {
                    return Err(corrupt(b, CorruptionKind::Cycle));
                }
                let h = self.block(b)?;
                if h.flags() & END != 0 {
                    return Err(corrupt(b, CorruptionKind::BadTiling));
                }
                if h.prev_phys.load(Relaxed) != prev {
                    return Err(corrupt(b, CorruptionKind::BadBoundaryTag));
                }
                let size = h.size();
                rep.blocks = rep.blocks.saturating_add(1);
                if h.is_used() {
                    prev_free = false;
                    rep.used_blocks = rep.used_blocks.saturating_add(1);
                    let refs = h.refs();
                    let owner = h.owner.load(Relaxed);
                    if owner == NO_OWNER || owner == KEPT_OWNER {
                        if refs != 0 {
                            return Err(corrupt(b, CorruptionKind::BadRefCount));
                        }
                        if owner == NO_OWNER {
                            system = system.saturating_add(1);
                        } else {
                            rep.kept_blocks = rep.kept_blocks.saturating_add(1);
                            rep.kept_bytes = rep.kept_bytes.saturating_add(u64::from(size));
                        }
                    } else {
                        ref_sum = ref_sum.saturating_add(u64::from(refs));
                        if ref_sum > cell_capacity {
                            return Err(corrupt(b, CorruptionKind::BadRefCount));
                        }
                        let p = b
                            .checked_add(self.geo.hsize)
                            .ok_or_else(|| corrupt(b, CorruptionKind::BadBlockSize))?;
                        self.check_chain(Offset::new(p), refs)?;
                        if h.is_cached() {
                            rep.cached_blocks = rep.cached_blocks.saturating_add(1);
                            rep.cached_bytes = rep.cached_bytes.saturating_add(u64::from(size));
                        }
                    }
                } else {
                    if prev_free {
                        return Err(corrupt(b, CorruptionKind::Uncoalesced));
                    }
                    prev_free = true;
                    rep.free_blocks = rep.free_blocks.saturating_add(1);
                    rep.free_bytes = rep.free_bytes.saturating_add(u64::from(size));
                }
                total = total.saturating_add(u64::from(size));
                prev = b;
                // `block` checked that this stays within the range, but the size is read
                // again (and `check_unlocked` runs beside other processes).
                b = b
                    .checked_add(size)
                    .ok_or_else(|| corrupt(b, CorruptionKind::BadBlockSize))?;
            }
            if b != r.hi {
                return Err(corrupt(b, CorruptionKind::BadTiling));
            }
            let end = self.block(r.hi)?;
            if end.prev_phys.load(Relaxed) != prev {
                return Err(corrupt(r.hi, CorruptionKind::BadBoundaryTag));
            }
        }

        // 2. The index lists exactly the free blocks, each in its class.
        let (listed, listed_bytes) = self.check_index()?;
        let stats_at = self.region.offset_of(&heap.free_bytes)?;
        if listed != rep.free_blocks || listed_bytes != rep.free_bytes {
            let at = self.region.offset_of(&self.hdr.index.fl_bitmap)?;
            return Err(corrupt(at, CorruptionKind::LostFreeBlock));
        }

        // 3. Statistics.
        let stat = |w: &core::sync::atomic::AtomicU32| u64::from(w.load(Relaxed));
        if stat(&heap.heap_bytes) != total
            || stat(&heap.free_bytes) != rep.free_bytes
            || stat(&heap.free_blocks) != u64::from(rep.free_blocks)
            || stat(&heap.used_blocks) != u64::from(rep.used_blocks)
            || stat(&heap.min_free_bytes) > rep.free_bytes
            || stat(&heap.kept_blocks) != u64::from(rep.kept_blocks)
        {
            return Err(corrupt(stats_at, CorruptionKind::BadStatistics));
        }

        // 4. Owner tables.
        for slot in 0..cap {
            if let Ok(r) = self.record(ProcSlot(slot as u16)) {
                rep.owner_cells = rep
                    .owner_cells
                    .saturating_add(u64::from(self.check_record(&r)?));
            }
        }
        // System blocks are exactly the table, the records and the root block (if any);
        // owner cells are exactly the references counted in the blocks.
        let root = self.root().load(Relaxed);
        if root != 0 {
            let root_bad = || corrupt(root, CorruptionKind::BadOwner);
            let (rh, _) = self.used_block(Offset::new(root)).map_err(|_| root_bad())?;
            if rh.owner.load(Relaxed) != NO_OWNER {
                return Err(root_bad());
            }
        }
        // The kept root is empty or names a kept block.
        let kept_root = self.hdr.kept_root.load(Relaxed);
        if kept_root != 0 {
            let kept_bad = || corrupt(kept_root, CorruptionKind::BadOwner);
            let (kh, _) = self
                .used_block(Offset::new(kept_root))
                .map_err(|_| kept_bad())?;
            if kh.owner.load(Relaxed) != KEPT_OWNER {
                return Err(kept_bad());
            }
        }
        let expected_system = rep
            .processes
            .checked_add(1)
            .and_then(|n| n.checked_add(u32::from(root != 0)));
        if Some(system) != expected_system {
            return Err(corrupt(table, CorruptionKind::BadOwner));
        }
        if ref_sum != rep.owner_cells {
            return Err(corrupt(table, CorruptionKind::BadRefCount));
        }
        Ok(rep)
    }

    /// Checks that block `p`'s owner chain has exactly `refs` cells, each naming `p`.
    ///
    /// The chain ending in `NO_OWNER` after exactly `refs` hops proves its cells distinct
    /// (a repeated cell would repeat forever). Cells of different chains name different
    /// blocks, so together with "used cells = sum of reference counts" (checked by the
    /// caller) this proves every used cell lies on the chain of the block it names.
    fn check_chain(&self, p: Offset, refs: u32) -> Result<(), Error> {
        let (h, _) = self
            .used_block(p)
            .map_err(|_| corrupt(p.get(), CorruptionKind::BadOwner))?;
        if refs == 0 {
            return Err(corrupt(p.get(), CorruptionKind::BadRefCount));
        }
        self.walk_chain(p, h, |_| {})
    }

    /// Checks one owner table; returns its number of used cells.
    fn check_record(&self, r: &RecordRef<'m>) -> Result<u32, Error> {
        let bad = || corrupt(r.at, CorruptionKind::BadOwnerTable);
        let (rh, _) = self.used_block(Offset::new(r.at)).map_err(|_| bad())?;
        if rh.owner.load(Relaxed) != NO_OWNER {
            return Err(bad());
        }
        if r.rec.leaving.load(Relaxed) > 1 {
            return Err(bad());
        }
        let cap = r.rec.cell_capacity.load(Relaxed);
        // Free-cell list: bounded by the capacity, every cell on it empty.
        let mut free = 0u32;
        let mut next = r.rec.free_cell.load(Relaxed);
        while next != NO_CELL {
            free = free.saturating_add(1); // stops past `cap` below
            if next >= cap || free > cap {
                return Err(bad());
            }
            let c: &OwnerCell = self.region.get(r.cell_offset(next))?;
            if c.block.load(Relaxed) != 0 {
                return Err(bad());
            }
            next = c.next.load(Relaxed);
        }
        // Used cells: each names a used block (that it is on that block's chain follows
        // from the chain checks; see `check_chain`).
        let mut used = 0u32;
        let mut bytes = 0u32;
        let reserve = r.rec.reserve.load(Relaxed);
        let mut reserve_found = reserve == 0;
        for i in 0..cap {
            let c: &OwnerCell = self.region.get(r.cell_offset(i))?;
            let p = c.block.load(Relaxed);
            if p == 0 {
                continue;
            }
            used = used.saturating_add(1); // at most `cap`
            let (h, _) = self
                .used_block(Offset::new(p))
                .map_err(|_| corrupt(r.cell_offset(i), CorruptionKind::BadOwner))?;
            // A cell never names system data or a kept block.
            if OwnerRef::unpack(h.owner.load(Relaxed)).is_none() {
                return Err(corrupt(r.cell_offset(i), CorruptionKind::BadOwner));
            }
            bytes = bytes.wrapping_add(h.size());
            reserve_found |= p == reserve;
        }
        if used != r.rec.cells_used.load(Relaxed)
            || used.checked_add(free) != Some(cap)
            || bytes != r.rec.owned_bytes.load(Relaxed)
            || !reserve_found
        {
            return Err(bad());
        }
        Ok(used)
    }
}
