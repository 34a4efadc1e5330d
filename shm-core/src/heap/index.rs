//! [`FreeIndex`](crate::format::FreeIndex): the size-class index over the free blocks, kept
//! in the region header.
//!
//! Two-level segregated lists with bitmaps, as in TLSF: a free block's size picks a
//! first-level class (its power of two) and one of [`SL_COUNT`] second-level classes (equal
//! slices of that power of two); sizes below 256 are classed linearly in steps of 8. Each
//! class has a doubly linked list of its free blocks, through the blocks' own header words
//! (`link` = next, word 3 = previous, both offsets, 0 = none). One bit per non-empty list,
//! and one bit per first-level class with any non-empty list, make finding a fitting class
//! two `trailing_zeros`: O(1), like inserting and removing.
//!
//! A request first tries the first few blocks of its own class (a close fit); then it is
//! rounded up to the next class boundary, so that any block of the class found fits (TLSF's
//! good fit). A request that fits only in its own class's blocks (the heap is nearly full,
//! or the request is as large as the largest block) then scans that one list, so an
//! allocation fails only when no free block holds it, exactly as with first fit.
//!
//! Invariants (checked by [`Heap::check`](crate::Heap::check)): 1. Every free block is on
//! exactly one list: the list of its size's class.
//! 2. On every list, each block's previous link names the block before it (0 for the
//!    head); the lists are finite.
//! 3. Bit `sl` of `sl_bitmap[fl]` is set exactly when list `(fl, sl)` is non-empty; bit
//!    `fl` of `fl_bitmap` exactly when `sl_bitmap[fl]` is not 0.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::error::AttachError;
use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{class_of, search_class, BlockHeader, FL_COUNT, SL_COUNT};
use crate::heap::freelist::Found;
use crate::heap::Space;
use crate::journal::{FaultInjector, Tx};

/// How many blocks of a request's own class are tried before the class search. A small
/// constant keeps allocation O(1); see [`Space::good_fit`].
pub const OWN_CLASS_PROBE: u32 = 4;

/// How many fitting classes' first blocks are compared, the lowest address winning.
pub const CLASS_PROBE: u32 = 4;

impl<'m> Space<'m> {
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

    /// A block the index names, checked: a valid block, marked free.
    #[inline]
    pub(crate) fn free_block(&self, b: u32) -> Result<&'m BlockHeader, Error> {
        let h = self.block(b)?;
        if h.is_used() {
            return Err(corrupt(b, CorruptionKind::BadFreeList));
        }
        Ok(h)
    }

    /// The head word of list `(fl, sl)`.
    #[inline]
    fn head(&self, fl: usize, sl: usize) -> Result<&'m AtomicU32, Error> {
        let idx = &self.hdr.index;
        idx.heads.get(fl).and_then(|l| l.get(sl)).ok_or_else(|| {
            corrupt(
                self.region.offset_of(&idx.fl_bitmap).unwrap_or(0),
                CorruptionKind::BadFreeList,
            )
        })
    }

    /// Adds the free block `b` (header `h`, `size` bytes, already marked free) to its
    /// class's list: first if it lies below the head, else second. With `fresh`, `b`'s own
    /// link words are in memory that nothing live reached before the operation (see
    /// [`Tx::set_fresh`]); without, they must be derived state or already journaled.
    ///
    /// Every write is derived state ([`Tx::set_derived`]): an undo rebuilds the index.
    pub(crate) fn index_insert(
        &self,
        tx: &mut Tx<'_, 'm>,
        b: u32,
        h: &'m BlockHeader,
        size: u32,
        fresh: bool,
    ) -> Result<(), Error> {
        let (fl, sl) = class_of(size);
        let idx = &self.hdr.index;
        let head_word = self.head(fl, sl)?;
        let head = head_word.load(Relaxed);
        let (prev, next) = if head == 0 || b < head {
            (None, head)
        } else {
            // Behind the head: the head stays the lower of the two, so allocations lean
            // towards low addresses and the high end stays whole, as with first fit.
            let hh = self.free_block(head)?;
            (Some(hh), hh.link.load(Relaxed))
        };
        if next != 0 {
            tx.set_derived(&self.free_block(next)?.owner, b)?;
        }
        let prev_at = if prev.is_some() { head } else { 0 };
        if fresh {
            tx.set_fresh(&h.link, next)?;
            tx.set_fresh(&h.owner, prev_at)?;
        } else {
            tx.set_derived(&h.link, next)?;
            tx.set_derived(&h.owner, prev_at)?;
        }
        if let Some(hh) = prev {
            return tx.set_derived(&hh.link, b);
        }
        tx.set_derived(head_word, b)?;
        if head == 0 {
            let sl_word = idx
                .sl_bitmap
                .get(fl)
                .ok_or_else(|| corrupt(b, CorruptionKind::BadFreeList))?;
            let slm = sl_word.load(Relaxed);
            tx.set_derived(sl_word, slm | (1 << sl))?;
            if slm == 0 {
                tx.set_derived(&idx.fl_bitmap, idx.fl_bitmap.load(Relaxed) | (1 << fl))?;
            }
        }
        Ok(())
    }

    /// Takes the free block `b` (header `h`, `size` bytes) off its list. Its own link
    /// words are left as they are; the caller reuses them. Derived writes only.
    pub(crate) fn index_remove(
        &self,
        tx: &mut Tx<'_, 'm>,
        b: u32,
        h: &'m BlockHeader,
        size: u32,
    ) -> Result<(), Error> {
        let (fl, sl) = class_of(size);
        let idx = &self.hdr.index;
        let next = h.link.load(Relaxed);
        let prev = h.owner.load(Relaxed);
        if next != 0 {
            let nh = self.free_block(next)?;
            if nh.owner.load(Relaxed) != b || next == b {
                return Err(corrupt(next, CorruptionKind::BadFreeList));
            }
            tx.set_derived(&nh.owner, prev)?;
        }
        if prev == 0 {
            let head_word = self.head(fl, sl)?;
            if head_word.load(Relaxed) != b {
                return Err(corrupt(b, CorruptionKind::LostFreeBlock));
            }
            tx.set_derived(head_word, next)?;
            if next == 0 {
                let sl_word = idx
                    .sl_bitmap
                    .get(fl)
                    .ok_or_else(|| corrupt(b, CorruptionKind::BadFreeList))?;
                let slm = sl_word.load(Relaxed) & !(1 << sl);
                tx.set_derived(sl_word, slm)?;
                if slm == 0 {
                    tx.set_derived(&idx.fl_bitmap, idx.fl_bitmap.load(Relaxed) & !(1 << fl))?;
                }
            }
        } else {
            let ph = self.free_block(prev)?;
            if ph.link.load(Relaxed) != b || prev == b {
                return Err(corrupt(prev, CorruptionKind::BadFreeList));
            }
            tx.set_derived(&ph.link, next)?;
        }
        Ok(())
    }

    /// Clears the index (every list empty), with plain stores: for the rebuild only.
    pub(crate) fn index_clear(&self) {
        let idx = &self.hdr.index;
        idx.fl_bitmap.store(0, Relaxed);
        for w in idx.sl_bitmap.iter().chain(idx.heads.iter().flatten()) {
            w.store(0, Relaxed);
        }
    }

    /// Puts the free block `b` in front of its class's list, with plain stores: for the
    /// rebuild only, which pushes blocks from the highest address down, so every list ends
    /// up in address order.
    pub(crate) fn index_push_front(&self, b: u32, h: &BlockHeader) -> Result<(), Error> {
        let (fl, sl) = class_of(h.size());
        let idx = &self.hdr.index;
        let head_word = self.head(fl, sl)?;
        let head = head_word.load(Relaxed);
        if head != 0 {
            self.free_block(head)?.owner.store(b, Relaxed);
        }
        h.link.store(head, Relaxed);
        h.owner.store(0, Relaxed);
        head_word.store(b, Relaxed);
        idx.sl_bitmap
            .get(fl)
            .ok_or_else(|| corrupt(b, CorruptionKind::BadFreeList))?
            .fetch_or(1 << sl, Relaxed);
        idx.fl_bitmap.fetch_or(1 << fl, Relaxed);
        Ok(())
    }

    /// The first non-empty list at or above class `(fl, sl)`, from the bitmaps.
    #[inline]
    fn next_listed(&self, fl: usize, sl: usize) -> Result<Option<(usize, usize)>, Error> {
        let idx = &self.hdr.index;
        let at = || self.region.offset_of(&idx.fl_bitmap).unwrap_or(0);
        let here = idx
            .sl_bitmap
            .get(fl)
            .ok_or_else(|| corrupt(at(), CorruptionKind::BadFreeList))?
            .load(Relaxed)
            & (u32::MAX << sl);
        if here != 0 {
            return Ok(Some((fl, here.trailing_zeros() as usize)));
        }
        let above = idx.fl_bitmap.load(Relaxed)
            & (fl as u32)
                .checked_add(1)
                .and_then(|s| u32::MAX.checked_shl(s))
                .unwrap_or(0);
        if above == 0 {
            return Ok(None);
        }
        let fl = above.trailing_zeros() as usize;
        let slm = idx
            .sl_bitmap
            .get(fl)
            .ok_or_else(|| corrupt(at(), CorruptionKind::BadFreeList))?
            .load(Relaxed);
        if slm == 0 {
            return Err(corrupt(at(), CorruptionKind::BadFreeList));
        }
        Ok(Some((fl, slm.trailing_zeros() as usize)))
    }

    /// A free block of at least `need` bytes (a multiple of the alignment), `None` when no
    /// free block holds it:
    /// 1. one of the first [`OWN_CLASS_PROBE`] blocks of `need`'s own class that fits (a
    ///    close fit, so requests between class boundaries do not eat into larger blocks);
    /// 2. else the head of the lowest non-empty class all of whose blocks fit (O(1));
    /// 3. else, the heap being nearly full, the rest of `need`'s own class.
    #[inline]
    pub(crate) fn good_fit(&self, need: u32) -> Result<Option<Found>, Error> {
        self.fit(need, true)
    }

    /// [`Self::good_fit`] without its third step (`exhaustive` false): bounded work, for a
    /// search that has another to fall back on (a cache's run of blocks, then one block).
    #[inline]
    pub(crate) fn fit(&self, need: u32, exhaustive: bool) -> Result<Option<Found>, Error> {
        let (fl, sl) = class_of(need);
        let (mut found, probed) = self.fit_in_list(fl, sl, need, OWN_CLASS_PROBE)?;
        if found.is_some() {
            return Ok(found);
        }
        if let Some(mut class) = search_class(need) {
            // The heads of the first few non-empty classes that fit: take the lowest.
            let mut classes = 0u32;
            while let Some((fl, sl)) = self.next_listed(class.0, class.1)? {
                let at = self.head(fl, sl)?.load(Relaxed);
                let h = self.free_block(at)?;
                let size = h.size();
                if size < need {
                    return Err(corrupt(at, CorruptionKind::BadFreeList));
                }
                if found.is_none_or(|f: Found| at < f.at) {
                    found = Some(Found { at, size });
                }
                classes = classes.saturating_add(1); // at most CLASS_PROBE
                if classes == CLASS_PROBE {
                    break;
                }
                class = if let Some(sl) = sl.checked_add(1).filter(|&s| s < SL_COUNT) {
                    (fl, sl)
                } else if let Some(fl) = fl.checked_add(1).filter(|&f| f < FL_COUNT) {
                    (fl, 0)
                } else {
                    break;
                };
            }
            if found.is_some() {
                return Ok(found);
            }
        }
        if probed < OWN_CLASS_PROBE || !exhaustive {
            return Ok(None); // the whole own class was probed, or need not be
        }
        Ok(self.fit_in_list(fl, sl, need, u32::MAX)?.0)
    }

    /// The first of at most `limit` blocks of list `(fl, sl)` that holds `need` bytes, and
    /// how many blocks were looked at.
    fn fit_in_list(
        &self,
        fl: usize,
        sl: usize,
        need: u32,
        limit: u32,
    ) -> Result<(Option<Found>, u32), Error> {
        let mut found = None;
        let mut seen = 0u32;
        self.walk_list(fl, sl, &mut |f| {
            seen = seen.saturating_add(1); // at most the walk limit
            if f.size >= need {
                found = Some(f);
            }
            Ok(found.is_some() || seen == limit)
        })?;
        Ok((found, seen))
    }

    /// Walks list `(fl, sl)` from its head, calling `visit` for each block until it
    /// returns true; checks each block is free and its previous link. Returns the number
    /// of blocks visited. Bounded by the walk limit.
    pub(crate) fn walk_list(
        &self,
        fl: usize,
        sl: usize,
        visit: &mut dyn FnMut(Found) -> Result<bool, Error>,
    ) -> Result<u32, Error> {
        let mut prev = 0u32;
        let mut cur = self.head(fl, sl)?.load(Relaxed);
        let mut steps = 0u32;
        while cur != 0 {
            steps = steps
                .checked_add(1)
                .ok_or_else(|| corrupt(cur, CorruptionKind::Cycle))?;
            if steps > self.walk_limit() {
                return Err(corrupt(cur, CorruptionKind::Cycle));
            }
            let h = self.free_block(cur)?;
            if h.owner.load(Relaxed) != prev {
                return Err(corrupt(cur, CorruptionKind::BadFreeList));
            }
            if visit(Found {
                at: cur,
                size: h.size(),
            })? {
                break;
            }
            prev = cur;
            cur = h.link.load(Relaxed);
        }
        Ok(steps)
    }

    /// Visits every listed free block, class by class (bounded as a whole by the walk
    /// limit), until `visit` returns true.
    pub(crate) fn walk_free(
        &self,
        mut visit: impl FnMut(Found) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mut total = 0u32;
        let mut stop = false;
        for fl in 0..FL_COUNT {
            for sl in 0..SL_COUNT {
                total = total.saturating_add(self.walk_list(fl, sl, &mut |f| {
                    stop = visit(f)?;
                    Ok(stop)
                })?);
                if stop {
                    return Ok(());
                }
                if total > self.walk_limit() {
                    return Err(corrupt(
                        self.head(fl, sl).map_or(0, |w| w.load(Relaxed)),
                        CorruptionKind::Cycle,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks invariants 1-3 of the index: returns the number of listed blocks and their
    /// bytes, for the caller to compare with the free blocks of a physical walk.
    pub(crate) fn check_index(&self) -> Result<(u32, u64), Error> {
        let idx = &self.hdr.index;
        let at = self.region.offset_of(&idx.fl_bitmap)?;
        let bad = || corrupt(at, CorruptionKind::BadFreeList);
        let flm = idx.fl_bitmap.load(Relaxed);
        if flm >> FL_COUNT != 0 {
            return Err(bad());
        }
        let mut count = 0u32;
        let mut bytes = 0u64;
        for (fl, sl_word) in idx.sl_bitmap.iter().enumerate() {
            let slm = sl_word.load(Relaxed);
            if (slm != 0) != (flm & (1 << fl) != 0) {
                return Err(bad());
            }
            for sl in 0..SL_COUNT {
                let mut wrong_class = None;
                let n = self.walk_list(fl, sl, &mut |f| {
                    if class_of(f.size) != (fl, sl) {
                        wrong_class = Some(f.at);
                        return Ok(true);
                    }
                    // At most the walk limit (< 2^32) sizes below 2^32: no saturation.
                    bytes = bytes.saturating_add(u64::from(f.size));
                    Ok(false)
                })?;
                if let Some(b) = wrong_class {
                    return Err(corrupt(b, CorruptionKind::BadFreeList));
                }
                if (n != 0) != (slm & (1 << sl) != 0) {
                    return Err(bad());
                }
                count = count.saturating_add(n);
                if count > self.walk_limit() {
                    return Err(corrupt(at, CorruptionKind::Cycle));
                }
            }
        }
        Ok((count, bytes))
    }
}
