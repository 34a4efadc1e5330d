//! Statistics ([`HeapStats`], like FreeRTOS `vPortGetHeapStats`) and per-process
//! information ([`ProcessInfo`]).

use core::sync::atomic::Ordering::Relaxed;

use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{load_u64, OwnerRef, RegionHeader, KEPT_OWNER, NO_OWNER, SERVICE};
use crate::heap::Space;
use crate::ids::{Incarnation, ProcSlot, ProcessId};

/// Heap statistics. Sizes are of whole blocks, headers included, as in heap_5.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes in all blocks (fixed when the region is formatted).
    pub heap_bytes: u32,
    /// Bytes in free blocks (heap_5 `xAvailableHeapSpaceInBytes`).
    pub free_bytes: u32,
    /// Largest free block (`xSizeOfLargestFreeBlockInBytes`).
    pub largest_free_block: u32,
    /// Smallest free block (`xSizeOfSmallestFreeBlockInBytes`); 0 when none is free.
    pub smallest_free_block: u32,
    /// Number of free blocks (`xNumberOfFreeBlocks`).
    pub free_blocks: u32,
    /// Lowest `free_bytes` since formatting (`xMinimumEverFreeBytesRemaining`).
    pub min_ever_free_bytes: u32,
    /// Successful allocations (`xNumberOfSuccessfulAllocations`).
    pub allocs: u64,
    /// Successful frees (`xNumberOfSuccessfulFrees`).
    pub frees: u64,
    /// Used blocks, system data included.
    pub used_blocks: u32,
    /// Registered processes.
    pub processes: u32,
    /// Times a dead process's lock was broken.
    pub lock_breaks: u32,
    /// Largest request that would succeed now (payload bytes).
    pub largest_alloc: u32,
    /// Kept blocks: owned by the region, not by a process (see
    /// [`Heap::keep`](crate::Heap::keep)).
    pub kept_blocks: u32,
}

/// One registered process, as its record describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its slot.
    pub slot: ProcSlot,
    /// Its identity.
    pub id: ProcessId,
    /// Registration serial number.
    pub serial: u32,
    /// Blocks it owns or co-owns (used owner cells).
    pub blocks: u32,
    /// Bytes in those blocks.
    pub bytes: u32,
    /// Capacity of its owner array.
    pub cell_capacity: u32,
    /// Payload offset of its reserve, 0 when none.
    pub reserve: u32,
    /// The application words.
    pub app: [u32; 3],
}

impl ProcessInfo {
    /// The registration this record belongs to.
    pub fn incarnation(&self) -> Incarnation {
        Incarnation {
            slot: self.slot,
            serial: self.serial,
        }
    }
}

/// One block, as [`Heap::for_each_block`](crate::Heap::for_each_block) reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// Offset of the block (its header).
    pub offset: u32,
    /// Size in bytes, header included.
    pub size: u32,
    /// Whether it is in use.
    pub used: bool,
    /// Whether it was placed at the high end (service data).
    pub service: bool,
    /// Whether it is system data (process table or a process record).
    pub system: bool,
    /// Whether it is kept: owned by the region, not by a process.
    pub kept: bool,
    /// Reference count (0 for free, system and kept blocks; 1 for a cached block).
    pub refs: u32,
    /// Whether it is cached: freed into its one owner's process [`Cache`](crate::Cache),
    /// still owned by that process.
    pub cached: bool,
    /// First owner (`None` for free, system and kept blocks).
    pub owner: Option<ProcSlot>,
}

impl<'m> Space<'m> {
    /// Visits every block of every range in address order (bounded walk).
    pub(crate) fn for_each_block(&self, mut f: impl FnMut(BlockInfo)) -> Result<(), Error> {
        let mut steps = 0u32;
        for r in &self.ranges {
            let mut b = r.lo;
            while b < r.hi {
                steps = steps
                    .checked_add(1)
                    .ok_or_else(|| corrupt(b, CorruptionKind::Cycle))?;
                if steps > self.walk_limit() {
                    return Err(corrupt(b, CorruptionKind::Cycle));
                }
                let h = self.block(b)?;
                let used = h.is_used();
                let owner = h.owner.load(Relaxed);
                f(BlockInfo {
                    offset: b,
                    size: h.size(),
                    used,
                    service: h.flags() & SERVICE != 0,
                    system: used && owner == NO_OWNER,
                    kept: used && owner == KEPT_OWNER,
                    refs: if used { h.refs() } else { 0 },
                    cached: used && h.is_cached(),
                    owner: if used {
                        OwnerRef::unpack(owner).map(|o| ProcSlot(o.slot))
                    } else {
                        None
                    },
                });
                // Read again after `block` checked it (and after `f`): another process, or
                // `f`, may have changed it since.
                b = b
                    .checked_add(h.size())
                    .ok_or_else(|| corrupt(b, CorruptionKind::BadBlockSize))?;
            }
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> Result<HeapStats, Error> {
        let h = &self.hdr.heap;
        let mut s = HeapStats {
            heap_bytes: h.heap_bytes.load(Relaxed),
            free_bytes: h.free_bytes.load(Relaxed),
            min_ever_free_bytes: h.min_free_bytes.load(Relaxed),
            allocs: load_u64(&h.allocs),
            frees: load_u64(&h.frees),
            used_blocks: h.used_blocks.load(Relaxed),
            processes: h.proc_count.load(Relaxed),
            lock_breaks: self.hdr.lock_breaks.load(Relaxed),
            kept_blocks: h.kept_blocks.load(Relaxed),
            ..HeapStats::default()
        };
        let mut smallest = u32::MAX;
        self.walk_free(|f| {
            s.free_blocks = s.free_blocks.saturating_add(1); // at most the walk limit
            s.largest_free_block = s.largest_free_block.max(f.size);
            smallest = smallest.min(f.size);
            Ok(false)
        })?;
        s.smallest_free_block = if s.free_blocks == 0 { 0 } else { smallest };
        s.largest_alloc = s.largest_free_block.saturating_sub(self.geo.hsize);
        Ok(s)
    }

    pub(crate) fn process_info(&self, slot: ProcSlot) -> Result<ProcessInfo, Error> {
        let r = self.record(slot)?;
        let rec = r.rec;
        Ok(ProcessInfo {
            slot,
            id: ProcessId {
                pid: rec.pid.load(Relaxed),
                tag: rec.tag.load(Relaxed),
            },
            serial: rec.serial.load(Relaxed),
            blocks: rec.cells_used.load(Relaxed),
            bytes: rec.owned_bytes.load(Relaxed),
            cell_capacity: rec.cell_capacity.load(Relaxed),
            reserve: rec.reserve.load(Relaxed),
            app: [
                rec.app[0].load(Relaxed),
                rec.app[1].load(Relaxed),
                rec.app[2].load(Relaxed),
            ],
        })
    }
}

/// Iterator over the registered processes (see [`Heap::processes`](crate::Heap::processes)).
#[derive(Debug)]
pub struct ProcessIter<'a, 'm> {
    space: &'a Space<'m>,
    next: u32,
    cap: u32,
}

impl<'a, 'm> ProcessIter<'a, 'm> {
    pub(crate) fn new(space: &'a Space<'m>) -> Result<Self, Error> {
        let cap = space.hdr.heap.proc_capacity.load(Relaxed);
        if cap > crate::format::MAX_SLOTS {
            let at = space.region.offset_of(&space.hdr.heap.proc_capacity)?;
            return Err(corrupt(at, CorruptionKind::BadProcessTable));
        }
        Ok(ProcessIter {
            space,
            next: 0,
            cap,
        })
    }
}

impl Iterator for ProcessIter<'_, '_> {
    type Item = Result<ProcessInfo, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.cap {
            let slot = ProcSlot(self.next as u16);
            self.next = self.next.saturating_add(1); // below `cap`
            match self.space.process_info(slot) {
                Err(Error::NotRegistered { .. }) => continue,
                other => return Some(other),
            }
        }
        None
    }
}

/// The words of the region header that change at run time, at one moment, as plain values
/// (see [`Heap::snapshot`](crate::Heap::snapshot)). Read without the lock: for inspection
/// tools and tests, not for decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapSnapshot {
    /// The region lock's holder, if it is taken.
    pub lock_holder: Option<ProcessId>,
    /// Words in the undo journal (non-zero only while an operation runs, or after its
    /// process died in one).
    pub journal_len: u32,
    /// Code of the operation the journal belongs to (diagnostics).
    pub journal_op: u32,
    /// Whether a store deferred until after a commit (a send's publication) is pending.
    pub deferred_pending: bool,
    /// Times a dead holder's lock was broken.
    pub lock_breaks: u32,
    /// Incremented after every free that had waiters.
    pub free_epoch: u32,
    /// Allocations blocked waiting for memory.
    pub waiters: u32,
    /// Whether derived state (size-class index, boundary tags, counts) awaits a rebuild.
    pub derived_dirty: bool,
    /// Payload offset of the layer above's root structure, 0 when none.
    pub root: u32,
    /// The kept root word (see [`Heap::kept_root`](crate::Heap::kept_root)), 0 when none.
    pub kept_root: u32,
}

impl HeapSnapshot {
    pub(crate) fn read(hdr: &RegionHeader) -> Self {
        HeapSnapshot {
            lock_holder: hdr.lock.holder(),
            journal_len: hdr.journal.len.load(Relaxed),
            journal_op: hdr.journal.op.load(Relaxed),
            deferred_pending: hdr.deferred.at.load(Relaxed) != 0,
            lock_breaks: hdr.lock_breaks.load(Relaxed),
            free_epoch: hdr.free_epoch.load(Relaxed),
            waiters: hdr.waiters.load(Relaxed),
            derived_dirty: hdr.derived_dirty.load(Relaxed) != 0,
            root: hdr.root.load(Relaxed),
            kept_root: hdr.kept_root.load(Relaxed),
        }
    }
}
