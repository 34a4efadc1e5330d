//! The allocators compared, each behind [`BenchAlloc`] (what the replay needs) and
//! [`Contender`] (how to make a fresh instance over the arena). Six small adapters in one
//! file (about 450 lines), so that they can be read side by side.

use std::alloc::{GlobalAlloc, Layout, System};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use shm_core::format::MAX_CELLS;
use shm_core::{Cache, CacheConfig, Error, Heap, HeapConfig, Member, Offset, Region, SpinPlatform};

use crate::fragmentation::PROBE_CELL_MARGIN;
use crate::{Arena, ALIGN};

/// A live allocation: its address or offset and the size asked for (which talc,
/// linked_list_allocator and the system allocator need back on free).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handle {
    raw: usize,
    size: u32,
}

/// What the replay loop needs from an allocator.
pub(crate) trait BenchAlloc {
    /// Allocates `size` bytes aligned to [`ALIGN`]; `None` when it cannot.
    fn alloc(&mut self, size: u32) -> Option<Handle>;
    /// Frees a block this allocator returned; `false` if the allocator reported an error.
    fn free(&mut self, h: Handle) -> bool;
    /// The error behind the last failed call, if the allocator reports one worth
    /// showing (anything but plain out-of-memory).
    fn take_error(&mut self) -> Option<String> {
        None
    }
    /// A consistency check after a replay (untimed).
    fn check(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Gets ready for the fragmentation probe, which may allocate about one block per
    /// free block the allocator has. Returns what it did, if anything, for the table.
    fn prepare_probe(&mut self) -> Result<Option<String>, String> {
        Ok(None)
    }
    /// The allocator's own account of its free memory, if it keeps one (to cross-check
    /// the fragmentation probe).
    fn own_view(&mut self) -> Result<Option<OwnView>, String> {
        Ok(None)
    }
    /// Called once after every replay with the blocks still live. The region
    /// allocators are simply re-initialised next time; the system allocator frees them.
    fn release_all(&mut self, live: &mut dyn Iterator<Item = Handle>) {
        let _ = live;
    }
}

/// An allocator's own account of its free memory ([`HeapStats`](shm_core::HeapStats) for
/// shm-core), next to which the fragmentation probe's figures are printed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OwnView {
    /// Largest free block, header included.
    pub(crate) largest_free_block: u32,
    /// Largest request that would succeed now (payload bytes).
    pub(crate) largest_alloc: u32,
    /// Bytes in free blocks, headers included.
    pub(crate) free_bytes: u32,
    /// Number of free blocks.
    pub(crate) free_blocks: u32,
    /// Bytes of header in front of every payload.
    pub(crate) header_bytes: u32,
}

/// One allocator family: its name and how to make a fresh instance over the arena.
pub(crate) trait Contender {
    const NAME: &'static str;
    type Alloc<'a>: BenchAlloc;
    fn init(arena: &mut Arena) -> Self::Alloc<'_>;
}

pub(crate) fn layout(size: u32) -> Option<Layout> {
    Layout::from_size_align(size as usize, ALIGN).ok()
}

// shm-core ---------------------------------------------------------------------------------------

pub(crate) fn process_id() -> u32 {
    std::process::id()
}

pub(crate) struct ShmCore;

pub(crate) struct ShmCoreAlloc<'a> {
    heap: Heap<'a, SpinPlatform>,
    me: Member,
    error: Option<Error>,
}

impl Contender for ShmCore {
    const NAME: &'static str = "shm-core";
    type Alloc<'a> = ShmCoreAlloc<'a>;
    fn init(arena: &mut Arena) -> ShmCoreAlloc<'_> {
        // SAFETY: `arena` is borrowed mutably for as long as the returned heap lives, so
        // its `len` bytes are valid for reads and writes and nothing else touches them.
        let region = unsafe { Region::from_raw(arena.ptr.as_ptr(), arena.len) }
            .expect("shm-core accepts the 64 MiB region");
        // One process, uncontended: the lock names this process, no interrupt masking.
        // (The host's per-segment platform adds only liveness probes, which an
        // uncontended lock never makes.)
        let heap = Heap::init(
            region,
            HeapConfig::default(),
            SpinPlatform::new(process_id()),
        )
        .expect("shm-core formats the region");
        let me = heap
            .register()
            .expect("shm-core registers the benchmark process");
        ShmCoreAlloc {
            heap,
            me,
            error: None,
        }
    }
}

impl BenchAlloc for ShmCoreAlloc<'_> {
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<Handle> {
        handle_of(self.heap.try_alloc(self.me, size), size, &mut self.error)
    }

    #[inline]
    fn free(&mut self, h: Handle) -> bool {
        freed(
            self.heap.free(self.me, Offset::new(h.raw as u32)),
            &mut self.error,
        )
    }

    fn take_error(&mut self) -> Option<String> {
        self.error.take().map(|e| format!("{e:?}"))
    }

    fn check(&mut self) -> Result<(), String> {
        self.heap
            .check()
            .map(|_| ())
            .map_err(|e| format!("Heap::check: {e:?}"))
    }

    /// Grows the owner array to hold a cell for every live block, every free block and a
    /// margin: one per block of the greedy fill (each round takes one whole free block), so
    /// no array move is needed halfway. A move allocates from the high end and fails once
    /// the fill has taken every large block, which would end the fill early (seen in the
    /// smoke run: 12 of 162 free blocks filled). When the array already has room this does
    /// nothing; otherwise the heap the probe sees differs from the replay's by one move.
    fn prepare_probe(&mut self) -> Result<Option<String>, String> {
        let s = self
            .heap
            .stats()
            .map_err(|e| format!("Heap::stats: {e:?}"))?;
        let me = self
            .heap
            .process(self.me.slot())
            .map_err(|e| format!("Heap::process: {e:?}"))?;
        let want = (me.blocks + s.free_blocks + PROBE_CELL_MARGIN).min(MAX_CELLS);
        if want <= me.cell_capacity {
            return Ok(None);
        }
        let cap = self
            .heap
            .reserve_cells(self.me, want)
            .map_err(|e| format!("Heap::reserve_cells({want}): {e:?}"))?;
        Ok(Some(format!(
            "owner array grown from {} to {cap} cells before the probe",
            me.cell_capacity
        )))
    }

    fn own_view(&mut self) -> Result<Option<OwnView>, String> {
        let s = self
            .heap
            .stats()
            .map_err(|e| format!("Heap::stats: {e:?}"))?;
        Ok(Some(OwnView {
            largest_free_block: s.largest_free_block,
            largest_alloc: s.largest_alloc,
            free_bytes: s.free_bytes,
            free_blocks: s.free_blocks,
            header_bytes: self.heap.block_header_size(),
        }))
    }
}

/// The handle for shm-core's answer to an allocation of `size` bytes: `None` for out of
/// memory, and for any other error, which is kept in `error` for the report. `TooLarge`
/// (more than the region could ever hold) only comes from the fragmentation probe's first,
/// oversized requests.
#[inline]
fn handle_of(r: Result<Offset, Error>, size: u32, error: &mut Option<Error>) -> Option<Handle> {
    match r {
        Ok(off) => Some(Handle {
            raw: off.get() as usize,
            size,
        }),
        Err(Error::OutOfMemory { .. } | Error::TooLarge { .. }) => None,
        Err(e) => {
            *error = Some(e);
            None
        }
    }
}

/// Whether shm-core's free succeeded; its error is kept in `error` for the report.
#[inline]
fn freed(r: Result<(), Error>, error: &mut Option<Error>) -> bool {
    r.map_err(|e| *error = Some(e)).is_ok()
}

// shm-core with a process cache --------------------------------------------------------------

/// shm-core's heap used through a process [`Cache`] with the default bounds: what a
/// process that allocates through a cache pays.
pub(crate) struct ShmCoreCache;

pub(crate) struct ShmCoreCacheAlloc<'a> {
    cache: Cache<'a, 'a, SpinPlatform>,
    error: Option<Error>,
}

impl Contender for ShmCoreCache {
    const NAME: &'static str = "shm-core cache";
    type Alloc<'a> = ShmCoreCacheAlloc<'a>;
    fn init(arena: &mut Arena) -> ShmCoreCacheAlloc<'_> {
        let plain = ShmCore::init(arena);
        // The cache borrows the heap handle for as long as the arena is borrowed; the
        // handle (a few hundred bytes) is leaked once per replay rather than kept in a
        // self-referential struct. The arena itself is re-initialised by the next replay.
        let heap: &Heap<'_, SpinPlatform> = Box::leak(Box::new(plain.heap));
        let cache = heap
            .cache(CacheConfig::default())
            .expect("shm-core makes a cache");
        ShmCoreCacheAlloc { cache, error: None }
    }
}

impl BenchAlloc for ShmCoreCacheAlloc<'_> {
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<Handle> {
        handle_of(self.cache.alloc(size), size, &mut self.error)
    }

    #[inline]
    fn free(&mut self, h: Handle) -> bool {
        freed(self.cache.free(Offset::new(h.raw as u32)), &mut self.error)
    }

    fn take_error(&mut self) -> Option<String> {
        self.error.take().map(|e| format!("{e:?}"))
    }

    fn check(&mut self) -> Result<(), String> {
        let rep = self
            .cache
            .heap()
            .check()
            .map_err(|e| format!("Heap::check: {e:?}"))?;
        if rep.cached_blocks != self.cache.stats().blocks {
            return Err(format!(
                "check counts {} cached blocks, the cache {}",
                rep.cached_blocks,
                self.cache.stats().blocks
            ));
        }
        Ok(())
    }
}

// rlsf -------------------------------------------------------------------------------------------

pub(crate) struct Rlsf;

/// TLSF with 24 first-level classes (blocks up to 512 MiB) and 32 second-level lists.
pub(crate) type RlsfTlsf<'a> = rlsf::Tlsf<'a, u32, u32, 24, 32>;

pub(crate) struct RlsfAlloc<'a> {
    tlsf: RlsfTlsf<'a>,
}

impl Contender for Rlsf {
    const NAME: &'static str = "rlsf";
    type Alloc<'a> = RlsfAlloc<'a>;
    fn init(arena: &mut Arena) -> RlsfAlloc<'_> {
        let mut tlsf = RlsfTlsf::new();
        let pool = NonNull::slice_from_raw_parts(arena.ptr, arena.len);
        // SAFETY: the arena is borrowed mutably for as long as `tlsf` lives (`'a`), so the
        // pool outlives it and nothing else uses it meanwhile.
        let added = unsafe { tlsf.insert_free_block_ptr(pool) };
        added.expect("rlsf takes the 64 MiB pool");
        RlsfAlloc { tlsf }
    }
}

impl BenchAlloc for RlsfAlloc<'_> {
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<Handle> {
        let p = self.tlsf.allocate(layout(size)?)?;
        Some(Handle {
            raw: p.as_ptr() as usize,
            size,
        })
    }

    #[inline]
    fn free(&mut self, h: Handle) -> bool {
        let Some(p) = NonNull::new(h.raw as *mut u8) else {
            return false;
        };
        // SAFETY: `h` came from `self.tlsf.allocate` with alignment `ALIGN` and is freed
        // once (the replay takes it out of its slot).
        unsafe { self.tlsf.deallocate(p, ALIGN) };
        true
    }
}

// rlsf under a lock word -------------------------------------------------------------------------

/// rlsf with every call inside the lock protocol a shared region needs, as shm-core takes
/// it: a compare-and-swap of a 64-bit word from 0 to the caller's identity (pid and tag,
/// asked of the platform every time), released by a store. The word is never contended
/// here; the row shows what the lock alone adds to the fastest allocator in the table, the
/// floor for any allocator that must serialise processes on one region.
pub(crate) struct RlsfLocked;

pub(crate) struct RlsfLockedAlloc<'a> {
    inner: RlsfAlloc<'a>,
    lock: AtomicU64,
    /// The holder word this process writes (pid and tag), computed once as shm-core's
    /// platforms cache their identity.
    word: u64,
}

impl RlsfLockedAlloc<'_> {
    #[inline]
    pub(crate) fn locked<R>(&mut self, f: impl FnOnce(&mut RlsfAlloc<'_>) -> R) -> R {
        let word = self.word;
        while self
            .lock
            .compare_exchange(0, word, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        let r = f(&mut self.inner);
        self.lock.store(0, Ordering::Release);
        r
    }
}

impl Contender for RlsfLocked {
    const NAME: &'static str = "rlsf + lock";
    type Alloc<'a> = RlsfLockedAlloc<'a>;
    fn init(arena: &mut Arena) -> RlsfLockedAlloc<'_> {
        let me = shm_core::ProcessId::from_pid(process_id());
        RlsfLockedAlloc {
            inner: Rlsf::init(arena),
            lock: AtomicU64::new(0),
            word: u64::from(me.pid) | (u64::from(me.tag) << 32),
        }
    }
}

impl BenchAlloc for RlsfLockedAlloc<'_> {
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<Handle> {
        self.locked(|a| a.alloc(size))
    }

    #[inline]
    fn free(&mut self, h: Handle) -> bool {
        self.locked(|a| a.free(h))
    }
}

// linked_list_allocator --------------------------------------------------------------------------

pub(crate) struct LinkedList;

pub(crate) struct LinkedListAlloc<'a> {
    heap: linked_list_allocator::Heap,
    _arena: PhantomData<&'a mut Arena>,
}

impl Contender for LinkedList {
    const NAME: &'static str = "linked_list_allocator";
    type Alloc<'a> = LinkedListAlloc<'a>;
    fn init(arena: &mut Arena) -> LinkedListAlloc<'_> {
        let mut heap = linked_list_allocator::Heap::empty();
        // SAFETY: called once on an empty heap; the arena is valid for `'static` (never
        // freed) and borrowed mutably for as long as `heap` lives, so nothing else uses it.
        unsafe { heap.init(arena.ptr.as_ptr(), arena.len) };
        LinkedListAlloc {
            heap,
            _arena: PhantomData,
        }
    }
}

impl BenchAlloc for LinkedListAlloc<'_> {
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<Handle> {
        let p = self.heap.allocate_first_fit(layout(size)?).ok()?;
        Some(Handle {
            raw: p.as_ptr() as usize,
            size,
        })
    }

    #[inline]
    fn free(&mut self, h: Handle) -> bool {
        let (Some(p), Some(l)) = (NonNull::new(h.raw as *mut u8), layout(h.size)) else {
            return false;
        };
        // SAFETY: `p` came from `allocate_first_fit` with this very layout and is freed
        // once (the replay takes it out of its slot).
        unsafe { self.heap.deallocate(p, l) };
        true
    }
}

// talc -------------------------------------------------------------------------------------------

pub(crate) struct Talc;

pub(crate) struct TalcAlloc<'a> {
    talc: talc::base::Talc<talc::source::Manual, talc::DefaultBinning>,
    _arena: PhantomData<&'a mut Arena>,
}

impl Contender for Talc {
    const NAME: &'static str = "talc";
    type Alloc<'a> = TalcAlloc<'a>;
    fn init(arena: &mut Arena) -> TalcAlloc<'_> {
        let mut talc = talc::base::Talc::new(talc::source::Manual);
        // SAFETY: the arena is borrowed mutably for as long as `talc` lives, so nothing
        // else mutates the claimed span; `Manual` allows manual heap management.
        let claimed = unsafe { talc.claim(arena.ptr.as_ptr(), arena.len) };
        claimed.expect("talc claims the 64 MiB span");
        TalcAlloc {
            talc,
            _arena: PhantomData,
        }
    }
}

impl BenchAlloc for TalcAlloc<'_> {
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<Handle> {
        let l = layout(size)?;
        // SAFETY: every size in the workloads is at least 16, so `l.size()` is non-zero.
        let p = unsafe { self.talc.allocate(l) }?;
        Some(Handle {
            raw: p.as_ptr() as usize,
            size,
        })
    }

    #[inline]
    fn free(&mut self, h: Handle) -> bool {
        let Some(l) = layout(h.size) else {
            return false;
        };
        // SAFETY: `h.raw` came from `self.talc.allocate` with this very layout and is
        // freed once (the replay takes it out of its slot).
        unsafe { self.talc.deallocate(h.raw as *mut u8, l) };
        true
    }
}

// system -----------------------------------------------------------------------------------------

pub(crate) struct Sys;

pub(crate) struct SysAlloc;

impl Contender for Sys {
    const NAME: &'static str = "system";
    type Alloc<'a> = SysAlloc;
    fn init(_arena: &mut Arena) -> SysAlloc {
        SysAlloc
    }
}

impl BenchAlloc for SysAlloc {
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<Handle> {
        let l = layout(size)?;
        // SAFETY: every size in the workloads is at least 16, so `l.size()` is non-zero.
        let p = unsafe { System.alloc(l) };
        (!p.is_null()).then_some(Handle {
            raw: p as usize,
            size,
        })
    }

    #[inline]
    fn free(&mut self, h: Handle) -> bool {
        let Some(l) = layout(h.size) else {
            return false;
        };
        // SAFETY: `h.raw` came from `System.alloc` with this very layout and is freed once
        // (the replay takes it out of its slot).
        unsafe { System.dealloc(h.raw as *mut u8, l) };
        true
    }

    fn release_all(&mut self, live: &mut dyn Iterator<Item = Handle>) {
        for h in live {
            self.free(h);
        }
    }
}
