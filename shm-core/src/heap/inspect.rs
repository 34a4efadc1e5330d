//! The inspection half of the [`Heap`] facade: blocks, owners, statistics, checks and the
//! process table, read with the lock or (the `_unlocked` variants) without.

use core::sync::atomic::Ordering::Relaxed;

use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::OwnerRef;
use crate::heap::{BlockInfo, CheckReport, Heap, HeapStats, OpCode, ProcessInfo, ProcessIter};
use crate::ids::ProcSlot;
use crate::offset::Offset;
use crate::platform::Platform;

impl<'m, P: Platform> Heap<'m, P> {
    /// Usable payload bytes of a used block (at least what was asked for).
    pub fn block_len(&self, block: Offset) -> Result<u32, Error> {
        let (b, at) = self.space.used_block(block)?;
        // `used_block` checked the size, but another process may have changed it since.
        b.size()
            .checked_sub(self.space.geo.hsize)
            .ok_or_else(|| corrupt(at, CorruptionKind::BadBlockSize))
    }

    /// A pointer to the payload of a used block and its usable length.
    ///
    /// Reading or writing through the pointer is up to the caller, who must own the block
    /// (or otherwise know no one writes it concurrently).
    pub fn payload(&self, block: Offset) -> Result<(core::ptr::NonNull<u8>, u32), Error> {
        let len = self.block_len(block)?;
        Ok((self.space.region.ptr(block, len)?, len))
    }

    /// Reference count of a used block.
    pub fn ref_count(&self, block: Offset) -> Result<u32, Error> {
        let (b, _) = self.space.used_block(block)?;
        Ok(b.refs())
    }

    /// The slot of the first owner of a used block.
    pub fn owner_of(&self, block: Offset) -> Result<Option<ProcSlot>, Error> {
        let (b, _) = self.space.used_block(block)?;
        Ok(OwnerRef::unpack(b.owner.load(Relaxed)).map(|r| ProcSlot(r.slot)))
    }

    /// Calls `f` with every owner of a used block (read without the lock; at most as many
    /// as there are process slots).
    pub fn owners(&self, block: Offset, f: impl FnMut(ProcSlot)) -> Result<(), Error> {
        self.space.owners(block, f)
    }

    /// Calls `f` with every block in address order, read without the lock (for inspection
    /// tools; concurrent operations may make it report an error).
    pub fn for_each_block(&self, f: impl FnMut(BlockInfo)) -> Result<(), Error> {
        self.space.for_each_block(f)
    }

    /// Walks the whole region and reports the first broken invariant (see the module
    /// documentation). Takes the lock, so it sees a quiescent heap.
    pub fn check(&self) -> Result<CheckReport, Error> {
        self.op(OpCode::Check, |_, s| s.check())
    }

    /// Like [`check`](Heap::check) without taking the lock: for inspecting a region whose
    /// processes may all be gone. Concurrent operations make it report spurious problems.
    pub fn check_unlocked(&self) -> Result<CheckReport, Error> {
        self.space.check()
    }

    /// Statistics, like FreeRTOS `vPortGetHeapStats`.
    pub fn stats(&self) -> Result<HeapStats, Error> {
        self.op(OpCode::Check, |_, s| s.stats())
    }

    /// Restarts the low-water mark of the free bytes from the current free bytes, like
    /// FreeRTOS `xPortResetHeapMinimumEverFreeHeapSize`: from now on
    /// [`HeapStats::min_ever_free_bytes`] is the lowest value since this call.
    pub fn reset_min_ever_free(&self) -> Result<(), Error> {
        self.op(OpCode::ResetMinFree, |tx, s| {
            let h = &s.hdr.heap;
            // History, not derived state: journaled like the update in `take`.
            tx.set(&h.min_free_bytes, h.free_bytes.load(Relaxed))
        })
    }

    /// Statistics without taking the lock (see [`check_unlocked`](Heap::check_unlocked)).
    pub fn stats_unlocked(&self) -> Result<HeapStats, Error> {
        self.space.stats()
    }

    /// The registered processes, read without the lock.
    pub fn processes(&self) -> Result<ProcessIter<'_, 'm>, Error> {
        ProcessIter::new(&self.space)
    }

    /// Information about one registered process.
    pub fn process(&self, slot: ProcSlot) -> Result<ProcessInfo, Error> {
        self.space.process_info(slot)
    }
}
