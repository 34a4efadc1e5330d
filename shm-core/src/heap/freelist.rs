//! The heap_5 algorithm over offsets: an address-ordered singly linked free list, first
//! fit from the low end, last fit from the high end, split, and merge with both
//! neighbours on free.
//!
//! Every walk is bounded by the number of blocks the heap could hold; a longer walk means a
//! cycle and is reported as corruption instead of looping forever.

use core::sync::atomic::Ordering::Relaxed;

use crate::block::{BlockHeader, SERVICE, USED};
use crate::error::{corrupt, CorruptionKind, Error};
use crate::heap::{Placement, Space};
use crate::journal::Tx;

/// A used block about to be carved out of a free one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Piece {
    /// Offset of the new block.
    pub at: u32,
    /// Its size (a too-small back remainder already absorbed).
    pub size: u32,
    /// Flags besides `USED` (only `SERVICE` is kept).
    pub flags: u32,
    /// Initial reference count.
    pub refs: u32,
    /// Initial first owner word.
    pub owner: u32,
}

/// A free block found on the list, with its predecessor on the list (0 for the head).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    pub prev: u32,
    pub at: u32,
    pub size: u32,
}

impl<'m> Space<'m> {
    /// Upper bound on the length of any walk over blocks, from the process-local ranges
    /// (never from the region's own, untrusted, numbers).
    #[inline]
    pub(crate) fn walk_limit(&self) -> u32 {
        self.max_blocks
    }

    /// A block on the free list, checked: a valid block, marked free.
    #[inline]
    fn free_block(&self, b: u32) -> Result<&'m BlockHeader, Error> {
        let h = self.block(b)?;
        if h.is_used() {
            return Err(corrupt(b, CorruptionKind::BadFreeList));
        }
        Ok(h)
    }

    /// Walks the free list, calling `visit` for each block until it returns true. Checks
    /// address order and bounds the walk.
    pub(crate) fn walk_free(
        &self,
        mut visit: impl FnMut(Found) -> Result<bool, Error>,
    ) -> Result<Option<Found>, Error> {
        let mut prev = 0u32;
        let mut cur = self.hdr.heap.free_head.load(Relaxed);
        let mut steps = 0u32;
        while cur != 0 {
            steps += 1;
            if steps > self.walk_limit() {
                return Err(corrupt(cur, CorruptionKind::Cycle));
            }
            if cur <= prev {
                return Err(corrupt(cur, CorruptionKind::BadFreeList));
            }
            let h = self.free_block(cur)?;
            let found = Found {
                prev,
                at: cur,
                size: h.size(),
            };
            if visit(found)? {
                return Ok(Some(found));
            }
            prev = cur;
            cur = h.link.load(Relaxed);
        }
        Ok(None)
    }

    /// First free block of at least `need` bytes (lowest address).
    pub(crate) fn first_fit(&self, need: u32) -> Result<Option<Found>, Error> {
        self.walk_free(|f| Ok(f.size >= need))
    }

    /// Last free block of at least `need` bytes (highest address).
    pub(crate) fn last_fit(&self, need: u32) -> Result<Option<Found>, Error> {
        let mut last = None;
        self.walk_free(|f| {
            if f.size >= need {
                last = Some(f);
            }
            Ok(false)
        })?;
        Ok(last)
    }

    /// The free block that contains `[b, b + need)`, if any.
    pub(crate) fn containing(&self, b: u32, need: u32) -> Result<Option<Found>, Error> {
        let end = b.checked_add(need).ok_or(Error::InvalidSize {
            requested: u64::from(need),
        })?;
        let mut hit = None;
        self.walk_free(|f| {
            if f.at > b {
                return Ok(true); // past it: address order means no later block holds it
            }
            if end <= f.at + f.size {
                hit = Some(f);
                return Ok(true);
            }
            Ok(false)
        })?;
        Ok(hit)
    }

    /// Where in free block `f` a block of `need` bytes goes for `placement`, and its final
    /// size (a remainder too small to be a block is absorbed).
    pub(crate) fn place(&self, f: Found, need: u32, placement: Placement) -> (u32, u32) {
        let spare = f.size - need;
        if spare < self.geo.min_block {
            (f.at, f.size)
        } else {
            match placement {
                Placement::Low => (f.at, need),
                Placement::High => (f.at + spare, need),
            }
        }
    }

    /// Carves the used block `piece` out of free block `f`, which must contain it with a
    /// front gap of 0 or at least a minimum block. A back gap smaller than a minimum block
    /// must already be absorbed into `piece.size`.
    pub(crate) fn carve(&self, tx: &mut Tx<'_, 'm>, f: Found, piece: Piece) -> Result<(), Error> {
        let Piece {
            at,
            size,
            flags,
            refs,
            owner,
        } = piece;
        let fh = self.free_block(f.at)?;
        let front = at - f.at;
        let back = f.at + f.size - (at + size);
        debug_assert!(front == 0 || front >= self.geo.min_block);
        debug_assert!(back == 0 || back >= self.geo.min_block);
        let next_phys = self.block(f.at + f.size)?;
        let old_next_free = fh.link.load(Relaxed);
        let old_prev_phys = fh.prev_phys.load(Relaxed);
        let heap = &self.hdr.heap;

        // The remainder after the new block, if any, becomes a free block.
        let mut after_piece = old_next_free; // what follows the piece's list position
        if back > 0 {
            let rest_at = at + size;
            let rest: &BlockHeader = self.region.get(rest_at)?;
            tx.set(&rest.size_flags, back)?;
            tx.set(&rest.prev_phys, at)?;
            tx.set(&rest.link, old_next_free)?;
            tx.set(&rest.owner, crate::layout::NO_OWNER)?;
            tx.set(&next_phys.prev_phys, rest_at)?;
            after_piece = rest_at;
        } else {
            tx.set(&next_phys.prev_phys, at)?;
        }

        if front > 0 {
            // `f` stays free in front, shrunk; it keeps its list position.
            tx.set(&fh.size_flags, front)?;
            tx.set(&fh.link, after_piece)?;
        } else {
            // `f` leaves the list; its predecessor now points past it.
            self.set_next_free(tx, f.prev, after_piece)?;
        }

        let ph: &BlockHeader = self.region.get(at)?;
        tx.set(&ph.size_flags, size | USED | (flags & SERVICE))?;
        tx.set(&ph.prev_phys, if front > 0 { f.at } else { old_prev_phys })?;
        tx.set(&ph.link, refs)?;
        tx.set(&ph.owner, owner)?;

        // Statistics use wrapping arithmetic: they come from shared memory, and a wrong
        // count must not panic here; `check` reports it.
        let free_bytes = heap.free_bytes.load(Relaxed).wrapping_sub(size);
        tx.set(&heap.free_bytes, free_bytes)?;
        if free_bytes < heap.min_free_bytes.load(Relaxed) {
            tx.set(&heap.min_free_bytes, free_bytes)?;
        }
        let free_blocks = heap
            .free_blocks
            .load(Relaxed)
            .wrapping_add(u32::from(front > 0) + u32::from(back > 0))
            .wrapping_sub(1);
        tx.set(&heap.free_blocks, free_blocks)?;
        tx.set(
            &heap.used_blocks,
            heap.used_blocks.load(Relaxed).wrapping_add(1),
        )?;
        Ok(())
    }

    /// Points the free-list link after `prev` (the head when `prev` is 0) at `next`.
    fn set_next_free(&self, tx: &mut Tx<'_, 'm>, prev: u32, next: u32) -> Result<(), Error> {
        if prev == 0 {
            tx.set(&self.hdr.heap.free_head, next)
        } else {
            tx.set(&self.block(prev)?.link, next)
        }
    }

    /// Returns the used block at `b` to the free list, merging it with free neighbours.
    /// Its owner bookkeeping must already be undone.
    pub(crate) fn free_block_at(&self, tx: &mut Tx<'_, 'm>, b: u32) -> Result<(), Error> {
        let h = self.block(b)?;
        let size = h.size();
        let heap = &self.hdr.heap;

        // The list neighbours: last free block before `b`, and the one after it.
        let mut prev = 0u32;
        self.walk_free(|f| {
            if f.at > b {
                return Ok(true);
            }
            if f.at == b {
                return Err(corrupt(b, CorruptionKind::BadFreeList));
            }
            prev = f.at;
            Ok(false)
        })?;
        let next = if prev == 0 {
            heap.free_head.load(Relaxed)
        } else {
            self.block(prev)?.link.load(Relaxed)
        };

        // The physical neighbours, found through size and boundary tag.
        // Both tags are checked, so the merged sizes below stay inside the range.
        let prev_phys = h.prev_phys.load(Relaxed);
        let merge_prev = if prev_phys == 0 {
            false
        } else {
            let p = self.block(prev_phys)?;
            if prev_phys >= b || p.size() != b - prev_phys {
                return Err(corrupt(b, CorruptionKind::BadBoundaryTag));
            }
            !p.is_used()
        };
        if merge_prev && prev_phys != prev {
            return Err(corrupt(prev_phys, CorruptionKind::LostFreeBlock));
        }
        let np_at = b + size;
        let np = self.block(np_at)?;
        if np.prev_phys.load(Relaxed) != b {
            return Err(corrupt(np_at, CorruptionKind::BadBoundaryTag));
        }
        let merge_next = !np.is_used();
        if merge_next && np_at != next {
            return Err(corrupt(np_at, CorruptionKind::LostFreeBlock));
        }

        let mut blocks = heap.free_blocks.load(Relaxed);
        match (merge_prev, merge_next) {
            (false, false) => {
                tx.set(&h.size_flags, size)?;
                tx.set(&h.link, next)?;
                tx.set(&h.owner, crate::layout::NO_OWNER)?;
                self.set_next_free(tx, prev, b)?;
                blocks = blocks.wrapping_add(1);
            }
            (true, false) => {
                tx.set(&h.size_flags, size)?; // stale header reads as free
                let ph = self.block(prev)?;
                tx.set(&ph.size_flags, ph.size() + size)?;
                tx.set(&np.prev_phys, prev)?;
            }
            (false, true) => {
                let nsize = np.size();
                let after = self.block(np_at + nsize)?;
                tx.set(&h.size_flags, size + nsize)?;
                tx.set(&h.link, np.link.load(Relaxed))?;
                tx.set(&h.owner, crate::layout::NO_OWNER)?;
                tx.set(&after.prev_phys, b)?;
                self.set_next_free(tx, prev, b)?;
            }
            (true, true) => {
                tx.set(&h.size_flags, size)?;
                let nsize = np.size();
                let after = self.block(np_at + nsize)?;
                let ph = self.block(prev)?;
                tx.set(&ph.size_flags, ph.size() + size + nsize)?;
                tx.set(&ph.link, np.link.load(Relaxed))?;
                tx.set(&after.prev_phys, prev)?;
                blocks = blocks.wrapping_sub(1);
            }
        }
        tx.set(&heap.free_blocks, blocks)?;
        tx.set(
            &heap.free_bytes,
            heap.free_bytes.load(Relaxed).wrapping_add(size),
        )?;
        tx.set(
            &heap.used_blocks,
            heap.used_blocks.load(Relaxed).wrapping_sub(1),
        )?;
        Ok(())
    }
}
