//! Rebuilding the derived state from the blocks, after an undo.
//!
//! Operations journal only what the blocks are (headers' sizes and flags, owners, reference
//! counts, owner tables, records); what follows from them - the size-class index, every
//! block's boundary tag and the free and used counts - is written unjournaled, flagged by
//! the header's `derived_dirty` word (see [`journal`](crate::journal)). After an undo that
//! flag is still set, and [`Space::rebuild_derived`] recomputes all of it with two walks
//! over the blocks: one up each range through the sizes (the boundary tags and counts),
//! one down through the fresh boundary tags (the index). It runs under the lock, after an
//! operation failed halfway or a dead holder's lock was broken, never on the common path.

use core::sync::atomic::Ordering::{Relaxed, Release};

use crate::error::{corrupt, CorruptionKind, Error};
use crate::heap::Space;

impl<'m> Space<'m> {
    /// Recomputes the index, the boundary tags and the free and used counts from the
    /// blocks, then clears `derived_dirty`. Fails, leaving the flag set, on blocks that do
    /// not tile their ranges or on two free neighbours: corruption that no undo makes.
    pub(crate) fn rebuild_derived(&self) -> Result<(), Error> {
        let heap = &self.hdr.heap;
        let mut free_bytes = 0u32;
        let mut free_blocks = 0u32;
        let mut used_blocks = 0u32;
        let mut steps = 0u32;
        // Up each range through the sizes: `block` checks every size against the range,
        // so each step moves forward and the walk ends at the end marker.
        for r in &self.ranges {
            let mut x = r.lo;
            let mut prev = 0u32;
            let mut prev_free = false;
            while x < r.hi {
                steps = steps
                    .checked_add(1)
                    .ok_or_else(|| corrupt(x, CorruptionKind::Cycle))?;
                if steps > self.walk_limit() {
                    return Err(corrupt(x, CorruptionKind::Cycle));
                }
                let h = self.block(x)?;
                h.prev_phys.store(prev, Relaxed);
                if h.is_used() {
                    used_blocks = used_blocks.wrapping_add(1);
                    prev_free = false;
                } else {
                    if prev_free {
                        return Err(corrupt(x, CorruptionKind::Uncoalesced));
                    }
                    free_bytes = free_bytes.wrapping_add(h.size());
                    free_blocks = free_blocks.wrapping_add(1);
                    prev_free = true;
                }
                prev = x;
                // `block` checked the size against the range, but it is read again.
                x = x
                    .checked_add(h.size())
                    .ok_or_else(|| corrupt(x, CorruptionKind::BadBlockSize))?;
            }
            self.block(r.hi)?.prev_phys.store(prev, Relaxed);
        }
        // Down each range through the tags just written, each free block pushed in front
        // of its list: the lists come out in address order.
        // Bounded again: the tags live in shared memory.
        self.index_clear();
        let mut steps = 0u32;
        for r in self.ranges.iter().rev() {
            let mut x = self.block(r.hi)?.prev_phys.load(Relaxed);
            while x >= r.lo && x < r.hi {
                steps = steps
                    .checked_add(1)
                    .ok_or_else(|| corrupt(x, CorruptionKind::Cycle))?;
                if steps > self.walk_limit() {
                    return Err(corrupt(x, CorruptionKind::Cycle));
                }
                let h = self.block(x)?;
                if !h.is_used() {
                    self.index_push_front(x, h)?;
                }
                if x == r.lo {
                    break;
                }
                x = h.prev_phys.load(Relaxed);
            }
        }
        heap.free_bytes.store(free_bytes, Relaxed);
        heap.free_blocks.store(free_blocks, Relaxed);
        heap.used_blocks.store(used_blocks, Relaxed);
        if heap.min_free_bytes.load(Relaxed) > free_bytes {
            heap.min_free_bytes.store(free_bytes, Relaxed);
        }
        self.hdr.derived_dirty.store(0, Release);
        Ok(())
    }
}
