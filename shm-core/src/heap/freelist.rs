//! Free blocks: carving a used block out of one, returning a used block with immediate
//! merging into both free neighbours, and the two placements that are not a class lookup
//! ([`Space::last_fit`] for service data at the high end, [`Space::containing`] for
//! `alloc_at`).
//!
//! Physical neighbours are found in O(1): the next through the block's size, the previous
//! through its boundary tag (`prev_phys`). Every walk is bounded by the number of blocks
//! the heap could hold; a longer walk means a cycle and is reported as corruption instead
//! of looping forever.

use core::sync::atomic::Ordering::Relaxed;

use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{BlockHeader, SERVICE, USED};
use crate::heap::Space;
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

/// A free block: where and how large.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
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

    /// The block physically before `b` in range `lo..` and its header, checked against
    /// `b`'s boundary tag.
    #[inline]
    fn prev_phys(
        &self,
        b: u32,
        h: &BlockHeader,
        lo: u32,
    ) -> Result<Option<(u32, &'m BlockHeader)>, Error> {
        if b == lo {
            return Ok(None);
        }
        let p = h.prev_phys.load(Relaxed);
        if p < lo || p >= b {
            return Err(corrupt(b, CorruptionKind::BadBoundaryTag));
        }
        let ph = self.block(p)?;
        if Some(ph.size()) != b.checked_sub(p) {
            return Err(corrupt(b, CorruptionKind::BadBoundaryTag));
        }
        Ok(Some((p, ph)))
    }

    /// Last free block of at least `need` bytes (highest address): a walk down from the
    /// end of the last range, through the boundary tags. Used for service data, which is
    /// rare; near the top of a heap there are few blocks to pass.
    pub(crate) fn last_fit(&self, need: u32) -> Result<Option<Found>, Error> {
        let mut steps = 0u32;
        for r in self.ranges.iter().rev() {
            let mut cur = self.prev_phys(r.hi, self.block(r.hi)?, r.lo)?;
            while let Some((b, h)) = cur {
                steps = steps
                    .checked_add(1)
                    .ok_or_else(|| corrupt(b, CorruptionKind::Cycle))?;
                if steps > self.walk_limit() {
                    return Err(corrupt(b, CorruptionKind::Cycle));
                }
                if !h.is_used() && h.size() >= need {
                    return Ok(Some(Found {
                        at: b,
                        size: h.size(),
                    }));
                }
                cur = self.prev_phys(b, h, r.lo)?;
            }
        }
        Ok(None)
    }

    /// The free block that contains `[b, b + need)`, if any: a walk up its range (for
    /// `alloc_at`, which is rare).
    pub(crate) fn containing(&self, b: u32, need: u32) -> Result<Option<Found>, Error> {
        let end = b.checked_add(need).ok_or(Error::InvalidSize {
            requested: u64::from(need),
        })?;
        let Some(r) = self.range_of(b) else {
            return Ok(None);
        };
        let mut x = r.lo;
        let mut steps = 0u32;
        while x < r.hi {
            steps = steps
                .checked_add(1)
                .ok_or_else(|| corrupt(x, CorruptionKind::Cycle))?;
            if steps > self.walk_limit() {
                return Err(corrupt(x, CorruptionKind::Cycle));
            }
            let h = self.block(x)?;
            // `block` checked that this stays in the range, but the size is read again.
            let next = x
                .checked_add(h.size())
                .ok_or_else(|| corrupt(x, CorruptionKind::BadBlockSize))?;
            if next > b {
                let fits = !h.is_used() && end <= next;
                return Ok(fits.then_some(Found {
                    at: x,
                    size: h.size(),
                }));
            }
            x = next;
        }
        Ok(None)
    }

    /// Where in free block `f` a block of `need` bytes goes for `placement`, and its final
    /// size (a remainder too small to be a block is absorbed).
    pub(crate) fn place(
        &self,
        f: Found,
        need: u32,
        placement: Placement,
    ) -> Result<(u32, u32), Error> {
        let bad = || corrupt(f.at, CorruptionKind::BadBlockSize);
        let spare = f.size.checked_sub(need).ok_or_else(bad)?;
        Ok(if spare < self.geo.min_block {
            (f.at, f.size)
        } else {
            match placement {
                Placement::Low => (f.at, need),
                Placement::High => (f.at.checked_add(spare).ok_or_else(bad)?, need),
            }
        })
    }

    /// Carves the used block `piece` out of free block `f`, which must contain it with a
    /// front gap of 0 or at least a minimum block. A back gap smaller than a minimum block
    /// must already be absorbed into `piece.size`. The gaps stay free, each on its list.
    pub(crate) fn carve(&self, tx: &mut Tx<'_, 'm>, f: Found, piece: Piece) -> Result<(), Error> {
        let Piece {
            at,
            size,
            flags,
            refs,
            owner,
        } = piece;
        let fh = self.free_block(f.at)?;
        let bad = || corrupt(f.at, CorruptionKind::BadBlockSize);
        let f_end = f.at.checked_add(f.size).ok_or_else(bad)?;
        let piece_end = at.checked_add(size).ok_or_else(bad)?;
        let front = at.checked_sub(f.at).ok_or_else(bad)?;
        let back = f_end.checked_sub(piece_end).ok_or_else(bad)?;
        debug_assert!(front == 0 || front >= self.geo.min_block);
        debug_assert!(back == 0 || back >= self.geo.min_block);
        let next_phys = self.block(f_end)?;
        let heap = &self.hdr.heap;
        self.index_remove(tx, f.at, fh, f.size)?;

        // The piece's header: `f`'s own when it starts there; otherwise in `f`'s payload,
        // which nothing live reaches (if the operation is undone, it is payload again; if
        // the operation freed that memory earlier, `set_fresh` journals).
        let ph: &'m BlockHeader = self.region.get(at)?;
        if front > 0 {
            tx.set(&fh.size_flags, front)?;
            self.index_insert(tx, f.at, fh, front, false)?;
            tx.set_fresh(&ph.size_flags, size | USED | (flags & SERVICE))?;
            tx.set_fresh(&ph.prev_phys, f.at)?;
            tx.set_fresh(&ph.link, refs)?;
            tx.set_fresh(&ph.owner, owner)?;
        } else {
            tx.set(&ph.size_flags, size | USED | (flags & SERVICE))?;
            // `f`'s list links until now (derived, or journaled by the free that made
            // `f` in this operation): an undo makes `f` free again and rebuilds them.
            tx.set_derived(&ph.link, refs)?;
            tx.set_derived(&ph.owner, owner)?;
        }
        // The remainder after the piece, if any, becomes a free block (in `f`'s payload).
        if back > 0 {
            let rest_at = piece_end;
            let rest: &'m BlockHeader = self.region.get(rest_at)?;
            tx.set_fresh(&rest.size_flags, back)?;
            tx.set_fresh(&rest.prev_phys, at)?;
            self.index_insert(tx, rest_at, rest, back, true)?;
            tx.set_derived(&next_phys.prev_phys, rest_at)?;
        } else if front > 0 {
            tx.set_derived(&next_phys.prev_phys, at)?;
        }

        // Statistics use wrapping arithmetic: they come from shared memory, and a wrong
        // count must not panic here; `check` reports it. The counts are derived state;
        // the low-water mark is history, which no rebuild could recompute, so it is
        // journaled.
        let free_bytes = heap.free_bytes.load(Relaxed).wrapping_sub(size);
        tx.set_derived(&heap.free_bytes, free_bytes)?;
        if free_bytes < heap.min_free_bytes.load(Relaxed) {
            tx.set(&heap.min_free_bytes, free_bytes)?;
        }
        let gaps = u32::from(front > 0).saturating_add(u32::from(back > 0)); // 0..=2
        if gaps != 1 {
            let blocks = heap.free_blocks.load(Relaxed);
            tx.set_derived(&heap.free_blocks, blocks.wrapping_add(gaps).wrapping_sub(1))?;
        }
        tx.set_derived(
            &heap.used_blocks,
            heap.used_blocks.load(Relaxed).wrapping_add(1),
        )?;
        Ok(())
    }

    /// Carves `count` used blocks of `size` bytes each, one after another, from the front
    /// of free block `f` (a cache's refill: one search, one index removal and at most one
    /// insertion for the whole run). `f` must hold them; a remainder too small to be a
    /// block is absorbed by the last. Each block gets reference count `refs` and the
    /// owner word `owner_of` returns for its payload offset, which must not allocate (the
    /// run's blocks have no boundary tags a walk could follow until it ends). Returns the
    /// last block's size.
    pub(crate) fn carve_run(
        &self,
        tx: &mut Tx<'_, 'm>,
        f: Found,
        size: u32,
        count: u32,
        refs: u32,
        mut owner_of: impl FnMut(&mut Tx<'_, 'm>, u32) -> Result<u32, Error>,
    ) -> Result<u32, Error> {
        let fh = self.free_block(f.at)?;
        let bad = || corrupt(f.at, CorruptionKind::BadBlockSize);
        let f_end = f.at.checked_add(f.size).ok_or_else(bad)?;
        let run = size.checked_mul(count).filter(|&r| r != 0 && r <= f.size);
        let spare = run.and_then(|r| f.size.checked_sub(r)).ok_or_else(bad)?;
        // A remainder that cannot be a block goes to the last one.
        let (back, last) = if spare < self.geo.min_block {
            (0, size.checked_add(spare).ok_or_else(bad)?)
        } else {
            (spare, size)
        };
        let next_phys = self.block(f_end)?;
        let heap = &self.hdr.heap;
        self.index_remove(tx, f.at, fh, f.size)?;

        let (mut at, mut prev) = (f.at, 0u32);
        for i in 1..=count {
            let bsize = if i == count { last } else { size };
            let payload = at.checked_add(self.geo.hsize).ok_or_else(bad)?;
            let owner = owner_of(tx, payload)?;
            if at == f.at {
                // `f`'s own header; its list links until now are derived (an undo makes
                // `f` free again and rebuilds them).
                tx.set(&fh.size_flags, bsize | USED)?;
                tx.set_derived(&fh.link, refs)?;
                tx.set_derived(&fh.owner, owner)?;
            } else {
                // In `f`'s payload, which nothing live reaches (see `carve`).
                let h: &'m BlockHeader = self.region.get(at)?;
                tx.set_fresh(&h.size_flags, bsize | USED)?;
                tx.set_fresh(&h.prev_phys, prev)?;
                tx.set_fresh(&h.link, refs)?;
                tx.set_fresh(&h.owner, owner)?;
            }
            prev = at;
            at = at.checked_add(bsize).ok_or_else(bad)?;
        }
        if back > 0 {
            let rest: &'m BlockHeader = self.region.get(at)?;
            tx.set_fresh(&rest.size_flags, back)?;
            tx.set_fresh(&rest.prev_phys, prev)?;
            self.index_insert(tx, at, rest, back, true)?;
            tx.set_derived(&next_phys.prev_phys, at)?;
        } else {
            tx.set_derived(&next_phys.prev_phys, prev)?;
            let blocks = heap.free_blocks.load(Relaxed);
            tx.set_derived(&heap.free_blocks, blocks.wrapping_sub(1))?;
        }
        // Statistics as in `carve`: derived, but for the low-water mark.
        let taken = f.size.wrapping_sub(back);
        let free_bytes = heap.free_bytes.load(Relaxed).wrapping_sub(taken);
        tx.set_derived(&heap.free_bytes, free_bytes)?;
        if free_bytes < heap.min_free_bytes.load(Relaxed) {
            tx.set(&heap.min_free_bytes, free_bytes)?;
        }
        tx.set_derived(
            &heap.used_blocks,
            heap.used_blocks.load(Relaxed).wrapping_add(count),
        )?;
        Ok(last)
    }

    /// Returns the used block at `b` to the index, merged with its free neighbours. Its
    /// owner bookkeeping must already be undone.
    pub(crate) fn free_block_at(&self, tx: &mut Tx<'_, 'm>, b: u32) -> Result<(), Error> {
        tx.freeing();
        let h = self.block(b)?;
        let size = h.size();
        let heap = &self.hdr.heap;
        let range = self
            .range_of(b)
            .ok_or_else(|| corrupt(b, CorruptionKind::OutOfBounds))?;

        // The physical neighbours, found through the boundary tag and the size; both tags
        // are checked, so the merged size below stays inside the range.
        let before = self
            .prev_phys(b, h, range.lo)?
            .filter(|(_, ph)| !ph.is_used());
        let bad_size = |at| corrupt(at, CorruptionKind::BadBlockSize);
        let np_at = b.checked_add(size).ok_or_else(|| bad_size(b))?;
        let np = self.block(np_at)?;
        if np.prev_phys.load(Relaxed) != b {
            return Err(corrupt(np_at, CorruptionKind::BadBoundaryTag));
        }
        let merge_next = !np.is_used();

        let mut start = b;
        let mut head = h;
        let mut total = size;
        let mut blocks = heap.free_blocks.load(Relaxed).wrapping_add(1);
        if let Some((p, ph)) = before {
            let psize = ph.size();
            self.index_remove(tx, p, ph, psize)?;
            // `b`'s header is now inside a free block: mark it free, so that a later
            // free of the same offset is reported as a double free.
            tx.set(&h.size_flags, size)?;
            start = p;
            head = ph;
            total = total.checked_add(psize).ok_or_else(|| bad_size(p))?;
            blocks = blocks.wrapping_sub(1);
        }
        let mut after = np;
        if merge_next {
            let nsize = np.size();
            self.index_remove(tx, np_at, np, nsize)?;
            after = self.block(np_at.checked_add(nsize).ok_or_else(|| bad_size(np_at))?)?;
            total = total.checked_add(nsize).ok_or_else(|| bad_size(np_at))?;
            blocks = blocks.wrapping_sub(1);
        }
        if after.prev_phys.load(Relaxed) != start {
            tx.set_derived(&after.prev_phys, start)?;
        }
        tx.set(&head.size_flags, total)?;
        if before.is_none() {
            // `b`'s link words become list links (derived, unjournaled); as a used block's
            // reference count and owner they are not derived, so journal them first.
            tx.keep(&h.link)?;
            tx.keep(&h.owner)?;
        }
        self.index_insert(tx, start, head, total, false)?;

        if blocks != heap.free_blocks.load(Relaxed) {
            tx.set_derived(&heap.free_blocks, blocks)?;
        }
        tx.set_derived(
            &heap.free_bytes,
            heap.free_bytes.load(Relaxed).wrapping_add(size),
        )?;
        tx.set_derived(
            &heap.used_blocks,
            heap.used_blocks.load(Relaxed).wrapping_sub(1),
        )?;
        Ok(())
    }
}

/// Where an allocation is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// From the front of a good fit, so user blocks grow up from the low end.
    Low,
    /// Last fit from the high end (service data).
    High,
}
