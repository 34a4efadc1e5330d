//! A [`Cache`]'s trips to the heap: refills and drains in batches under one lock
//! acquisition, and the allocations and frees too large for any class. A refill carves
//! its blocks in runs, up to [`RUN`] blocks from one free block in one journaled
//! operation; a drain frees each block in an operation of its own.

use core::sync::atomic::Ordering::Relaxed;

use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{OwnerRef, JOURNAL_CAPACITY, NO_CELL, NO_OWNER};
use crate::heap::cache::Cache;
use crate::heap::ops::{add_u64, owned};
use crate::heap::{Heap, OpCode, Placement, Space};
use crate::ids::Member;
use crate::journal::Tx;
use crate::offset::Offset;
use crate::platform::Platform;

/// Most blocks one refill fetches, and one drain session returns: the longest a cache
/// holds the lock.
pub(super) const BATCH: u32 = 64;

/// Most blocks one refill operation carves (see [`Space::alloc_cached_run`]): it
/// journals two words per block (the owner cell) besides a fixed few, and a journal
/// holds [`JOURNAL_CAPACITY`] words.
pub(super) const RUN: u32 = 32;
const _: () = assert!(2 * RUN as usize + 24 <= JOURNAL_CAPACITY);

/// Blocks a refill operation carved: `count` of them from offset `at` on, each `size`
/// bytes but the last, which is `last` bytes (a remainder too small to be a block
/// absorbed).
#[derive(Clone, Copy, Debug)]
pub(super) struct CachedRun {
    at: u32,
    count: u32,
    size: u32,
    last: u32,
}

impl<'m, P: Platform> Cache<'_, 'm, P> {
    /// Fetches a batch of class `c`'s blocks under one lock acquisition. When the heap
    /// has none, gives back what this cache holds and tries once more.
    #[inline(never)]
    pub(super) fn refill(&mut self, c: usize) -> Result<(), Error> {
        let size = self.class_size(c);
        if size == 0 {
            return Err(Error::InvalidSize { requested: 0 });
        }
        let room = |cache: &Self| {
            let left = cache
                .class_max_bytes
                .saturating_sub(cache.class(c).bytes)
                .min(cache.max_bytes.saturating_sub(cache.stats.bytes));
            left.checked_div(size)
                .unwrap_or(0)
                .min(cache.batch_of(c))
                .max(1)
        };
        let r = self.fetch(c, size, room(self));
        if matches!(r, Err(Error::OutOfMemory { .. })) && self.stats.blocks != 0 {
            self.drain_all()?;
            return self.fetch(c, size, room(self));
        }
        r
    }

    /// Allocates up to `n` cached blocks of `size` bytes into class `c` in one session.
    /// Succeeds if it got at least one.
    fn fetch(&mut self, c: usize, size: u32, n: u32) -> Result<(), Error> {
        let heap = self.heap;
        let me = self.me;
        let payload = size.saturating_sub(heap.space.geo.hsize);
        let (got, last) = heap.session(|s| {
            let mut got = 0u32;
            let mut last = Ok(());
            while got < n {
                let want = n.saturating_sub(got);
                let made = s
                    .op(OpCode::Alloc, |tx, sp| {
                        sp.alloc_cached_run(tx, me, payload, want)
                    })
                    // Marked cached by the committed operation; link them in.
                    .and_then(|run| self.push_run(c, run, &mut got));
                if let Err(e) = made {
                    last = Err(e);
                    break;
                }
            }
            (got, last)
        })?;
        if got != 0 {
            self.stats.refills = self.stats.refills.saturating_add(1);
        }
        if last == Err(Error::InjectedCrash) {
            return last;
        }
        // A record that cannot be found again means this member is gone; the next
        // operation says so. What this one did stands.
        let _ = self.refresh_record();
        if got != 0 {
            Ok(())
        } else {
            last
        }
    }

    /// Links the blocks of `run`, committed, into class `c`'s list, counting them in
    /// `got`.
    fn push_run(&mut self, c: usize, run: CachedRun, got: &mut u32) -> Result<(), Error> {
        let hsize = self.heap.space.geo.hsize;
        let mut at = run.at;
        for i in 1..=run.count {
            let size = if i == run.count { run.last } else { run.size };
            let p = at.checked_add(hsize);
            let h = p.and_then(|p| self.header(p));
            let (Some(p), Some(h)) = (p, h) else {
                return Err(corrupt(at, CorruptionKind::OutOfBounds));
            };
            self.push(c, Offset::new(p), h, size)?;
            *got = got.saturating_add(1);
            at = at.saturating_add(size);
        }
        Ok(())
    }

    /// Blocks of class `c` one refill fetches: `refill_bytes` worth, 1 to 64.
    fn batch_of(&self, c: usize) -> u32 {
        self.refill_bytes
            .checked_div(self.class_size(c))
            .unwrap_or(1)
            .clamp(1, BATCH)
    }

    /// Gives every cached block back to the heap, up to 64 blocks per lock acquisition
    /// across classes. A block whose free fails is dropped from its list (it stays owned by
    /// this member, and is freed when it unregisters or dies), so it cannot stop every
    /// later drain; the error is returned.
    pub(super) fn drain_all(&mut self) -> Result<(), Error> {
        let heap = self.heap;
        let me = self.me;
        let mut c = 0usize;
        loop {
            while c < self.class_count && self.class(c).blocks == 0 {
                c = c.saturating_add(1);
            }
            if c >= self.class_count {
                return Ok(());
            }
            let last = heap.session(|s| {
                // Under the lock nobody moves this member's record; a member that is gone
                // (a member cache used after its member unregistered) stops the drain here.
                self.follow_record()?;
                let mut batch = 0u32;
                while c < self.class_count && batch < BATCH {
                    if self.class(c).blocks == 0 {
                        c = c.saturating_add(1);
                        continue;
                    }
                    let Some((p, _)) = self.take(c)? else {
                        c = c.saturating_add(1); // not reached: the class has blocks
                        continue;
                    };
                    batch = batch.saturating_add(1);
                    s.op(OpCode::Free, |tx, sp| sp.free_cached(tx, me, p))?;
                }
                Ok(())
            });
            self.stats.drains = self.stats.drains.saturating_add(1);
            // Blocked allocators wake for whatever this batch freed, even if it stopped
            // early.
            heap.freed();
            last.and_then(|r| r)?;
            self.refresh_record()?;
        }
    }

    /// An allocation above the largest class, from the heap.
    #[inline(never)]
    pub(super) fn alloc_direct(&mut self, size: u32) -> Result<Offset, Error> {
        self.stats.passed = self.stats.passed.saturating_add(1);
        let me = self.me;
        let once = |heap: &Heap<'m, P>| {
            heap.op(OpCode::Alloc, |tx, s| {
                s.alloc_in(tx, s.member_record(me)?, size, Placement::Low)
            })
        };
        let mut r = once(self.heap);
        if matches!(r, Err(Error::OutOfMemory { .. })) && self.stats.blocks != 0 {
            self.drain_all()?;
            r = once(self.heap);
        }
        self.heap.on_out_of_memory(&r);
        // A record that cannot be found again means this member is gone; the next
        // operation says so. The block, if any, is the caller's.
        let _ = self.refresh_record();
        r
    }

    /// A free of a block no class takes, to the heap.
    #[inline(never)]
    pub(super) fn free_direct(&mut self, block: Offset) -> Result<(), Error> {
        self.stats.passed = self.stats.passed.saturating_add(1);
        let me = self.me;
        self.heap.op(OpCode::Free, |tx, s| {
            s.free(tx, s.member_record(me)?, block)
        })?;
        self.heap.freed();
        self.refresh_record()
    }
}

impl<'m> Space<'m> {
    /// Allocates up to `want` (1 to [`RUN`]) blocks of `payload` bytes for member `me`,
    /// cached (count 0), as one run carved from one free block (see
    /// [`Space::carve_run`]). Fewer when the free block found holds fewer.
    pub(super) fn alloc_cached_run(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: Member,
        payload: u32,
        want: u32,
    ) -> Result<CachedRun, Error> {
        let mut r = self.member_record(me)?;
        let (need, max) = self.block_for(payload)?;
        // The owner cells first: growing the array allocates, which the run cannot
        // allow. As for one block, the array grows only when it has no free cell (once,
        // doubling); a run is as long as the free cells allow, so a nearly full heap is
        // not asked for room it does not need (see `Cache::reserve_cells`).
        if r.rec.free_cell.load(Relaxed) == NO_CELL {
            r = self.grow(tx, r.slot)?;
        }
        let free_cells = r
            .rec
            .cell_capacity
            .load(Relaxed)
            .saturating_sub(r.rec.cells_used.load(Relaxed));
        let want = want.clamp(1, RUN).min(free_cells);
        if want == 0 {
            return Err(corrupt(r.at, CorruptionKind::BadOwnerTable));
        }
        // A free block for the whole run if one is listed, else for as many as it holds.
        let whole = match need.checked_mul(want) {
            Some(all) if want > 1 && all <= max => self.fit(all, false)?,
            _ => None,
        };
        let f = match whole {
            Some(f) => f,
            None => self
                .good_fit(need)?
                .ok_or(Error::OutOfMemory { requested: payload })?,
        };
        let count = want.min(f.size.checked_div(need).unwrap_or(0));
        let at = f.at;
        let last = self.carve_run(tx, f, need, count, 0, |tx, p| {
            // Never grows here: the cells were counted above (a free list that says
            // otherwise is corrupt).
            if r.rec.free_cell.load(Relaxed) == NO_CELL {
                return Err(corrupt(r.at, CorruptionKind::BadOwnerTable));
            }
            let (_, index, cell) = self.take_cell_in(tx, r)?;
            tx.set(&cell.block, p)?;
            tx.set(&cell.next, NO_OWNER)?;
            Ok(r.owner_ref(index).pack())
        })?;
        let bytes = need
            .checked_mul(count.saturating_sub(1))
            .and_then(|b| b.checked_add(last))
            .ok_or_else(|| corrupt(at, CorruptionKind::BadBlockSize))?;
        owned(tx, &r, bytes, true)?;
        add_u64(tx, &self.hdr.heap.allocs, count)?;
        Ok(CachedRun {
            at,
            count,
            size: need,
            last,
        })
    }

    /// Frees block `p`, cached by member `me`.
    pub(super) fn free_cached(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: Member,
        p: Offset,
    ) -> Result<(), Error> {
        let rec = self.member_record(me)?;
        let (h, _) = self.used_block(p)?;
        let mine = OwnerRef::unpack(h.owner.load(Relaxed)).is_some_and(|o| o.slot == me.slot().0);
        if !mine || h.link.load(Relaxed) != 0 {
            return Err(Error::NotOwner {
                offset: p,
                process: me.slot(),
            });
        }
        tx.set(&h.link, 1)?;
        self.free(tx, rec, p)
    }
}
