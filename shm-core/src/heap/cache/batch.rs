//! A [`Cache`]'s trips to the heap: refills and drains in batches under one lock
//! acquisition (each block its own journaled operation), and the allocations and frees
//! too large for any class.

use core::sync::atomic::Ordering::Relaxed;

use crate::error::Error;
use crate::format::{BlockHeader, OwnerRef};
use crate::heap::cache::Cache;
use crate::heap::{Heap, OpCode, Placement, Space};
use crate::ids::Member;
use crate::journal::Tx;
use crate::offset::Offset;
use crate::platform::Platform;

/// Most blocks one refill fetches, and one drain session returns: the longest a cache
/// holds the lock.
pub(super) const BATCH: u32 = 64;

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
            for _ in 0..n {
                match s.op(OpCode::Alloc, |tx, sp| sp.alloc_cached(tx, me, payload)) {
                    Ok((p, h)) => {
                        got = got.saturating_add(1);
                        let actual = h.size();
                        // Marked cached by the committed operation; link it in.
                        if let Err(e) = self.push(c, p, h, actual) {
                            last = Err(e);
                            break;
                        }
                    }
                    Err(e) => {
                        last = Err(e);
                        break;
                    }
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
    /// Allocates a block with `payload` bytes for member `me`, cached (count 0). Returns
    /// its payload offset and header.
    pub(super) fn alloc_cached(
        &self,
        tx: &mut Tx<'_, 'm>,
        me: Member,
        payload: u32,
    ) -> Result<(Offset, &'m BlockHeader), Error> {
        let p = self.alloc_in(tx, self.member_record(me)?, payload, Placement::Low)?;
        let (h, _) = self.used_block(p)?;
        tx.set(&h.link, 0)?;
        Ok((p, h))
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
