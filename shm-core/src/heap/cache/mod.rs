//! [`Cache`]: a process's own stock of freed blocks over the shared heap (the type's doc
//! says how it works); how one is made is in `make`, the class lists in `list`, refills
//! and drains in `batch`, size classes in `classes`.

mod batch;
mod classes;
mod list;
mod make;

use core::sync::atomic::{
    fence,
    Ordering::{Acquire, Relaxed},
};

use crate::error::Error;
use crate::format::{BlockHeader, OwnerRef, NO_OWNER, USED};
use crate::heap::owners::RecordRef;
use crate::heap::Heap;
use crate::ids::Member;
use crate::offset::Offset;
use crate::platform::Platform;
use classes::{Classes, MAX_CLASSES};
pub use make::CacheConfig;

/// What a [`Cache`] did and holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Allocations and frees served without the lock.
    pub hits: u64,
    /// Refills (one lock acquisition each).
    pub refills: u64,
    /// Drains (one lock acquisition per batch of up to 64 blocks).
    pub drains: u64,
    /// Allocations and frees that went to the heap one at a time: blocks above
    /// `max_block`, and frees that found their class or the cache full.
    pub passed: u64,
    /// Blocks cached now.
    pub blocks: u32,
    /// Bytes cached now, headers included.
    pub bytes: u32,
}

/// One size class's list: cached blocks linked through the first word of their payloads.
#[derive(Clone, Copy, Debug, Default)]
struct Class {
    /// Block size of the class, header included (0 for a class not in use).
    size: u32,
    /// Payload offset of the first cached block, 0 when none.
    head: u32,
    /// Blocks on the list (the bound of every walk over it).
    blocks: u32,
    /// Their sizes, headers included.
    bytes: u32,
}

/// A process's own stock of freed blocks, by size class, over the shared [`Heap`] (the
/// idea of glibc's tcache and mimalloc's local free lists).
///
/// A cache made by [`Heap::cache`] is a registration of its own, whose member it never
/// hands out: nobody else can act as it, and every block it owns is reached only through
/// `&mut Cache`. One made by [`Heap::member_cache`] works over a registration the caller
/// also uses (for a process whose messages should come from and go back to a cache), and
/// relies on the caller to act on each block from one place at a time. Its blocks stay
/// owned by the member in the region's tables the whole time:
/// - a block handed out by [`Cache::alloc`] is an ordinary owned block (count 1);
/// - a block freed into the cache keeps its owner cell, and its count word becomes 0:
///   "cached" (see [`BlockHeader`]). Raw operations refuse it, `check()` counts it as one
///   reference, `for_each_block` reports it, and reclaiming the process frees it.
///
/// So a cache hit, either way, reads the block's header and writes its count word and the
/// first payload word (the link of the class's list, which lives in the cached block's
/// own payload): no lock, no journal, no word another process writes. A crash at any
/// point leaves the block owned by the dead process, with count 0 or 1, and both mean one
/// reference to the reclaimer: nothing leaks, nothing is owned twice.
///
/// Refills and drains take the region lock once for a batch. A refill carves runs of
/// consecutive blocks, each run one journaled operation; a drain frees each block in an
/// operation of its own (so a crash midway leaves every block either cached or in the
/// heap). The
/// cache is bounded per class and in bytes (a free that would pass a bound goes to the
/// heap, and so do blocks above `max_block`), and it gives everything back when the heap
/// runs low: an allocation that finds too little memory bumps the header's `cache_drain`
/// word, and every cache that sees it change drains on its next operation (a blocked
/// allocator waits for the frees that follow).
///
/// ```
/// use shm_core::{CacheConfig, Heap, HeapConfig, Region, SpinPlatform};
///
/// #[repr(align(16))]
/// struct Memory([u8; 64 * 1024]);
/// let mut memory = Memory([0; 64 * 1024]);
/// let region = Region::from_slice(&mut memory.0)?;
/// let heap = Heap::init(region, HeapConfig::default(), SpinPlatform::new(1))?;
/// let mut cache = heap.cache(CacheConfig::default())?;
/// let a = cache.alloc(100)?; // a refill: one lock acquisition for a batch of blocks
/// cache.free(a)?; // into the cache: no lock
/// let b = cache.alloc(100)?; // from the cache: no lock
/// assert_eq!(a, b);
/// assert!(cache.stats().hits >= 2);
/// heap.check()?;
/// # Ok::<(), shm_core::Error>(())
/// ```
///
/// Made by [`Heap::cache`], which registers it as a member of its own; dropping it
/// unregisters that member: every block it still holds, cached or handed out, is freed.
/// Made by [`Heap::member_cache`], dropping it gives its cached blocks back to the heap.
pub struct Cache<'h, 'm, P: Platform> {
    heap: &'h Heap<'m, P>,
    /// The registration that owns every block of this cache: its own, never handed out
    /// ([`Heap::cache`]), or the caller's ([`Heap::member_cache`]).
    me: Member,
    /// Whether `me` is this cache's own registration (unregistered on drop).
    own_member: bool,
    /// Its record, looked up again after every operation under the lock. Only operations
    /// on this member move it (when its owner array grows); those of a shared member's
    /// other users are noticed through the process table (see `record_moved`).
    rec: RecordRef<'m>,
    /// The platform's fork generation at registration: a forked copy must not act.
    forks: u32,
    /// The header's `cache_drain` as last honoured.
    drain_seen: u32,
    classes: [Class; MAX_CLASSES],
    /// Classes in use: those whose blocks are at most `max_block`.
    class_count: usize,
    /// The largest block kept (`CacheConfig::max_block`); larger frees go to the heap.
    max_block: u32,
    /// Size classes of this heap's alignment.
    scheme: Classes,
    max_bytes: u32,
    class_max_bytes: u32,
    refill_bytes: u32,
    stats: CacheStats,
}

impl<P: Platform> core::fmt::Debug for Cache<'_, '_, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Cache")
            .field("incarnation", &self.me.incarnation())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<'h, 'm, P: Platform> Cache<'h, 'm, P> {
    /// The heap this cache allocates from.
    pub fn heap(&self) -> &'h Heap<'m, P> {
        self.heap
    }

    /// What this cache did and holds.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Allocates at least `size` bytes, owned by this cache's member. From the cache when
    /// it holds a block of the size class (no lock); otherwise a refill fetches a batch
    /// under one lock acquisition; blocks above `max_block` come from the heap directly.
    ///
    /// # Errors
    /// - [`Error::OutOfMemory`]: the heap has no block for it, even after this cache gave
    ///   back what it held (other caches are asked to give theirs back too).
    /// - [`Error::InvalidSize`], [`Error::TooLarge`], [`Error::OwnerTableFull`]: as
    ///   [`Heap::try_alloc`].
    /// - [`Error::StaleMember`]: in a forked copy of the process that made the cache.
    /// - [`Error::Corrupted`]: a cached block's header or the class list in its payload was
    ///   overwritten; the list is dropped (its blocks stay owned by this cache's member
    ///   until it unregisters or dies).
    pub fn alloc(&mut self, size: u32) -> Result<Offset, Error> {
        self.same_process()?;
        let need = self.heap.space.geo.block_size(size)?;
        self.honour_drain_request()?;
        let Some(c) = self.class_for_alloc(need) else {
            return self.alloc_direct(size);
        };
        self.follow_record()?;
        if let Some(p) = self.pop(c)? {
            self.stats.hits = self.stats.hits.saturating_add(1);
            return Ok(p);
        }
        match self.refill(c) {
            Ok(()) => self.pop(c)?.ok_or(Error::OutOfMemory { requested: size }),
            // The class's block is up to a quarter larger than asked for: the exact size
            // may still fit (and a failure then reports the size asked for).
            Err(Error::OutOfMemory { .. } | Error::TooLarge { .. }) => self.alloc_direct(size),
            Err(e) => Err(e),
        }
    }

    /// Lets this cache own up to `cells` blocks without growing its owner array again
    /// (see [`Heap::reserve_cells`]): for a process that holds many blocks at once, so a
    /// refill on a nearly full heap does not fail for want of room to grow the array.
    ///
    /// # Errors
    /// As [`Heap::reserve_cells`].
    pub fn reserve_cells(&mut self, cells: u32) -> Result<u32, Error> {
        self.same_process()?;
        let r = self.heap.reserve_cells(self.me, cells);
        self.refresh_record()?;
        r
    }

    /// Frees `block`, which this cache handed out: into the cache (no lock), or, when
    /// its class is full or it is larger than `max_block`, to the heap.
    ///
    /// # Errors
    /// - [`Error::BadOffset`]: `block` names no used block, or service data (a
    ///   participant, the member's reserve, a block from a reserve or
    ///   [`Heap::try_alloc_service`]) that only its owner's own operations free.
    /// - [`Error::DoubleFree`]: `block` is free, or already in this cache.
    /// - [`Error::NotOwner`]: this cache did not hand it out. [`Error::Shared`]: it has
    ///   other owners.
    /// - [`Error::StaleMember`]: in a forked copy of the process that made the cache.
    pub fn free(&mut self, block: Offset) -> Result<(), Error> {
        self.same_process()?;
        self.honour_drain_request()?;
        self.follow_record()?;
        let Some(h) = self
            .sole_owned(block)
            .or_else(|| self.sole_owned_after_move(block))
        else {
            return Err(self.why_not_freeable(block));
        };
        let size = h.size();
        let Some(c) = self.class_for_free(size) else {
            return self.free_direct(block);
        };
        if self.class(c).bytes.saturating_add(size) > self.class_max_bytes
            || self.stats.bytes.saturating_add(size) > self.max_bytes
        {
            // Full: this one goes to the heap. (Draining a batch to make room would make
            // this free pay for many.)
            return self.free_direct(block);
        }
        self.push(c, block, h, size)?;
        self.stats.hits = self.stats.hits.saturating_add(1);
        Ok(())
    }

    /// Gives every cached block back if an allocation somewhere asked caches to since
    /// this cache last looked (every `alloc` and `free` looks too): for a process that
    /// may stay idle, to call now and then (the host's clients and servers do it at each
    /// heartbeat).
    ///
    /// # Errors
    /// As [`drain`](Cache::drain).
    pub fn drain_if_asked(&mut self) -> Result<(), Error> {
        self.same_process()?;
        self.honour_drain_request()
    }

    /// Gives every cached block back to the heap (in batches of up to 64 per lock
    /// acquisition).
    ///
    /// # Errors
    /// The failures of [`Heap::free`]; a block that could not be freed stays cached.
    pub fn drain(&mut self) -> Result<(), Error> {
        self.same_process()?;
        self.drain_all()
    }

    /// The header of `block` if this member owns it alone, with count 1: its owner cell
    /// names it and ends its chain. (Only this member changes its own blocks' owners, and
    /// a cell names a block only while that block is the one it owns.)
    #[inline(always)]
    fn sole_owned(&self, block: Offset) -> Option<&'m BlockHeader> {
        let h = self.header(block.get())?;
        let head = OwnerRef::unpack(h.owner.load(Relaxed))?;
        // A used block, not service data (a participant, a reserve, a block from one:
        // their owners' own operations free them) nor an end marker.
        if h.flags() != USED || head.slot != self.me.slot().0 || h.link.load(Relaxed) != 1 {
            return None;
        }
        let cell = self.heap.space.cell(&self.rec, head.cell).ok()?;
        (cell.block.load(Relaxed) == block.get() && cell.next.load(Relaxed) == NO_OWNER)
            .then_some(h)
    }

    /// `sole_owned` once more if this member's record moved while it was read (another
    /// process's send grew a shared member's owner array): a refusal read from the old
    /// array must not stand.
    #[cold]
    fn sole_owned_after_move(&mut self, block: Offset) -> Option<&'m BlockHeader> {
        if !self.follow_record().ok()? {
            return None;
        }
        self.sole_owned(block)
    }

    /// Looks this member's record up again if it moved (see `record_moved`); whether it
    /// did.
    #[inline(always)]
    pub(super) fn follow_record(&mut self) -> Result<bool, Error> {
        if !self.record_moved() {
            return Ok(false);
        }
        self.look_up_record()?;
        Ok(true)
    }

    /// Whether this member's record is no longer where `rec` says, or no longer this
    /// member's, or leaving (never, for a cache's own member: only its own operations move it, and
    /// each looks it up again). The acquire fence orders the cell reads before it ahead of
    /// the check; the acquire load pairs with the release fence before a move publishes
    /// the new place.
    #[inline(always)]
    fn record_moved(&self) -> bool {
        if self.own_member {
            return false;
        }
        fence(Acquire);
        self.record_elsewhere()
    }

    /// Whether the process table no longer names `rec` as this member's record: it moved
    /// (an owner array grew), or the member is going or gone (the entry changed, the record
    /// there has another serial, or its reclaim has begun). Otherwise a full lookup
    /// would find `rec` and accept it: a record is only ever moved or freed, never remade
    /// where it stands.
    #[inline(always)]
    fn record_elsewhere(&self) -> bool {
        self.heap
            .space
            .table_entry(self.me.slot())
            .map_or(true, |entry| entry.load(Acquire) != self.rec.at)
            || self.rec.rec.serial.load(Relaxed) != self.me.serial()
            || self.rec.rec.leaving.load(Relaxed) != 0
    }

    /// After an operation of this cache's under the lock, which may have moved this
    /// member's record (an owner array that grew): looks it up again if the process table
    /// no longer names `rec`, and only then (a full lookup validates the record, about 200
    /// instructions, a tenth of an average plain operation).
    pub(super) fn refresh_record(&mut self) -> Result<(), Error> {
        if self.record_elsewhere() {
            self.look_up_record()?;
        }
        Ok(())
    }

    /// Looks this member's record up again, validated, through the process table.
    fn look_up_record(&mut self) -> Result<(), Error> {
        self.rec = self.heap.space.member_record(self.me)?;
        Ok(())
    }

    /// Why `block` cannot be freed into this cache: the precise error, for the rare path.
    #[cold]
    fn why_not_freeable(&self, block: Offset) -> Error {
        let not_mine = Error::NotOwner {
            offset: block,
            process: self.me.slot(),
        };
        let h = match self.heap.space.used_block(block) {
            Ok((h, _)) => h,
            Err(e) => return e,
        };
        let mine =
            OwnerRef::unpack(h.owner.load(Relaxed)).is_some_and(|o| o.slot == self.me.slot().0);
        if mine && h.flags() != USED {
            return Error::BadOffset { offset: block };
        }
        match h.link.load(Relaxed) {
            0 if mine => Error::DoubleFree { offset: block },
            n if n > 1 && mine => Error::Shared { offset: block },
            _ => not_mine,
        }
    }

    /// Refuses to act in a forked copy of the process (another process, sharing the
    /// mapping and this memory's copy of the cache).
    fn same_process(&self) -> Result<(), Error> {
        if self.heap.platform.fork_generation() == self.forks {
            Ok(())
        } else {
            Err(Error::StaleMember {
                process: self.me.incarnation(),
            })
        }
    }

    /// Drains everything if an allocation somewhere asked caches to (see the module docs).
    #[inline(always)]
    fn honour_drain_request(&mut self) -> Result<(), Error> {
        let now = self.heap.space.hdr.cache_drain.load(Acquire);
        if now != self.drain_seen {
            self.drain_on_request(now)?;
        }
        Ok(())
    }

    /// Honours drain request `now` (the rare path of `honour_drain_request`).
    #[cold]
    fn drain_on_request(&mut self, now: u32) -> Result<(), Error> {
        self.drain_seen = now;
        if self.stats.blocks != 0 {
            self.drain_all()?;
        }
        Ok(())
    }

    /// Class `c`'s list head and counts (`c` is below `class_count`; empty otherwise).
    fn class(&self, c: usize) -> Class {
        self.classes.get(c).copied().unwrap_or_default()
    }

    fn class_mut(&mut self, c: usize) -> Result<&mut Class, Error> {
        self.classes.get_mut(c).ok_or(Error::InvalidSize {
            requested: c as u64,
        })
    }

    /// Block size of class `c` (0 past the classes in use).
    fn class_size(&self, c: usize) -> u32 {
        self.class(c).size
    }

    /// The class whose blocks hold a block of `need` bytes; `None` above the largest.
    #[inline]
    fn class_for_alloc(&self, need: u32) -> Option<usize> {
        self.scheme.up(need).filter(|&c| c < self.class_count)
    }

    /// The class a free block of `size` bytes serves (the largest whose size it covers);
    /// `None` above the largest.
    #[inline]
    fn class_for_free(&self, size: u32) -> Option<usize> {
        if size > self.max_block {
            return None;
        }
        let c = self.scheme.up(size)?;
        let c = if self.class_size(c) == size {
            c
        } else {
            c.checked_sub(1)?
        };
        (c < self.class_count).then_some(c)
    }
}

impl<P: Platform> Drop for Cache<'_, '_, P> {
    fn drop(&mut self) {
        if self.same_process().is_err() {
            return; // a forked copy: the registration is the parent's
        }
        // Errors cannot be reported from drop; the blocks stay the member's then, freed
        // when it unregisters or is reclaimed with the process.
        if self.own_member {
            let _ = self.heap.unregister(self.me);
        } else {
            let _ = self.drain_all();
        }
    }
}
