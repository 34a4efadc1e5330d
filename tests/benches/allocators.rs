//! shm-core's allocator against other allocators, on one op sequence replayed identically.
//!
//! # What is compared
//!
//! * `shm-core`: this workspace's heap_5-style allocator (blocks tiling the region, immediate
//!   coalescing, a TLSF-style size-class index over the free blocks, owner table and undo
//!   journal per operation, one lock word), through [`Heap::try_alloc`] / [`Heap::free`] with
//!   one registered process on `SpinPlatform`, uncontended (the lock protocol is the same).
//! * `rlsf`: TLSF (two-level segregated fit, O(1) alloc and free).
//! * `rlsf + lock`: rlsf with each call inside the lock protocol shm-core uses for a shared
//!   region (compare-and-swap of a 64-bit word to the caller's pid and tag, release by a
//!   store), uncontended: the cost of the lock alone, on top of the fastest allocator.
//! * `linked_list_allocator`: an address-ordered hole list, first fit (the closest relative
//!   of heap_5, without owners or journal).
//! * `talc`: dlmalloc-style boundary tags with binned free lists.
//! * `system`: the process's system allocator (glibc malloc here). It does not use the
//!   region; it is the baseline.
//!
//! Every allocator but `system` is (re)initialised over the same 64 MiB buffer, allocated
//! once (aligned to 4096) and pre-faulted (every page written) before anything is timed.
//! Every request asks for 16-byte alignment, shm-core's default.
//!
//! # Workloads
//!
//! A fixed-seed generator (splitmix64) turns each workload into one list of
//! `Alloc { id, size }` / `Free { id }` ops, replayed by the same code for every allocator
//! (the [`BenchAlloc`] trait). Sizes are log-uniform in the ranges given.
//!
//! * **W1 churn**: fill to 10,000 live blocks of 16..4096 B (not timed), then
//!   [`W1_STEPS`] steps, each freeing a random live block and allocating a new one (2 ops).
//! * **W2 churn, large**: the same with 2,000 live blocks of 16..65,536 B, [`W2_STEPS`] steps.
//! * **W3 LIFO**: 1,000 x 64 B allocated, then freed in reverse; [`W3_ROUNDS`] rounds.
//! * **W4 bursts**: allocate 16..4096 B blocks until their sizes add up to 50 % of the
//!   region (about 46,000 blocks, under shm-core's 65,535 blocks per owner table), then free
//!   them all in a random order; [`W4_BURSTS`] bursts.
//!
//! An allocation that fails is counted and reported, never a panic; a later `Free` of the
//! same id is then skipped. For shm-core, any error other than `OutOfMemory` (or `TooLarge`,
//! which only the fragmentation probe provokes) is reported with the op index, and
//! [`Heap::check`] runs (untimed) after every latency replay.
//!
//! # Running
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p shm-tests --bench allocators
//! ALLOC_BENCH_LATENCY_ONLY=1 cargo bench -p shm-tests --bench allocators   # table only
//! cargo bench -p shm-tests --bench allocators -- W1                        # one criterion group
//! ```
//!
//! A full run takes about 3 minutes on 2 cores (under a minute of latency pass and
//! fragmentation probe, then criterion); most of it is linked_list_allocator on W4, whose
//! frees walk an address-ordered free list. Without `--bench` on the command line
//! (`cargo test -p shm-tests --benches`) every workload is shrunk to a smoke test that runs
//! in a few seconds.
//!
//! # Reading the output
//!
//! 1. **Latency table** (printed first, Markdown, also written to
//!    `<target dir>/allocators-latency.md`): per workload and allocator, `ns/op` is the
//!    median wall time of un-instrumented replays (as many as fit in half a second, at least
//!    one) divided by the timed ops; `p50` .. `max` come from one more replay with
//!    `Instant::now()` around every single op, so they include the timer's own cost
//!    (measured and printed above the table, about 20 ns here). `failed allocs` counts
//!    failed allocations (0 unless an allocator genuinely runs out of memory); failed frees
//!    and unexpected errors are listed under the table.
//! 2. **Fragmentation table** (printed after the latency table, appended to the same file),
//!    for the workloads that end with live blocks (W1 and W2) and every region allocator
//!    (not `system`). Each allocator replays the workload's setup and timed ops once more,
//!    untimed, on a fresh instance, and is then probed with requests that are multiples of
//!    16 B: `largest` is the largest payload `alloc` accepts (binary search from 16 B to
//!    the region size, every successful probe freed at once); then a greedy fill
//!    allocates the largest acceptable size again and again, keeping each block, until
//!    not even 16 B fit (each round's search starts at the previous round's result, since
//!    that only shrinks). `largest / fill` is `largest` over the fill's sum: 1.0 means no
//!    fragmentation, and the measure depends on nothing but `alloc` succeeding, so it is
//!    the same for every allocator. It includes the allocator's own size rounding: TLSF
//!    (rlsf) serves a request only from a size class wholly above it, so its `largest`
//!    can be up to 1/32 below its largest free block even on an empty heap. Under the
//!    table, shm-core's own view ([`Heap::stats`]: largest free block, free bytes, free
//!    blocks, whole blocks with headers) before the probe and after the fill cross-checks
//!    it: `largest` should equal the largest request, and fill + one header per fill
//!    block + what is left free should equal the free bytes. Before the probe, shm-core's
//!    owner array is grown (if needed) to a cell for every live and free block, so the
//!    fill cannot stop early on a failed array move; the table says when that happened.
//!    A line per allocator goes to stderr. The probes take about 2.5 s in all, mostly
//!    the free-list walkers on W1 (linked_list_allocator about 1.4 s, shm-core 0.7 s;
//!    rlsf and talc a few ms).
//! 3. **Criterion**: one group per workload, one function per allocator, `iter_custom`
//!    timing only the timed part of the replay (W1/W2's fill and each run's
//!    initialisation are excluded). `Throughput::Elements` is the number of timed ops, so
//!    criterion's `thrpt` is ops per second, and ns/op = time / ops = 1e3 / (Melem/s).
//!    Sample sizes are small (10, flat sampling) so the slow allocators finish.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::hint::black_box;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use shm_core::format::MAX_CELLS;
use shm_core::{Error, Heap, HeapConfig, Member, Offset, Region, SpinPlatform};

/// Size of the one region every allocator works in.
const REGION_BYTES: usize = 64 << 20;
/// Alignment of the region buffer (a page).
const REGION_ALIGN: usize = 4096;
/// Alignment every allocation asks for (shm-core's default block alignment).
const ALIGN: usize = 16;
/// Seed of the op generator; every workload derives its own stream from it.
const SEED: u64 = 0x5348_4d2d_414c_4c4f; // "SHM-ALLO"

/// W1: churn steps after the fill (each = 1 free + 1 alloc).
const W1_STEPS: u32 = 50_000;
/// W2: churn steps after the fill.
const W2_STEPS: u32 = 50_000;
/// W3: rounds of 1,000 allocations freed in reverse.
const W3_ROUNDS: u32 = 100;
/// W4: bursts to half the region. One burst already takes linked_list_allocator about
/// 12 s per replay (criterion needs at least 11 replays); a second burst starts from the
/// same fully coalesced heap, so it adds time rather than information.
const W4_BURSTS: u32 = 1;

/// Latency pass: time spent on repeated un-instrumented replays for the `ns/op` column.
const MEAN_BUDGET: Duration = Duration::from_millis(500);
/// Latency pass: most un-instrumented replays per allocator and workload.
const MEAN_MAX_REPLAYS: usize = 25;

/// Set to `1` to print the latency table and skip criterion.
const LATENCY_ONLY_VAR: &str = "ALLOC_BENCH_LATENCY_ONLY";

// ----- the region -----------------------------------------------------------------------------

/// The 64 MiB buffer all region allocators are initialised over, one at a time.
///
/// It is never freed: it lives until the process exits, so it is valid for `'static`, as
/// `linked_list_allocator::Heap::init` asks. Allocators borrow it mutably, so only one
/// uses it at a time.
struct Arena {
    ptr: NonNull<u8>,
    len: usize,
}

impl Arena {
    /// Allocates the buffer and writes every byte of it, so no page fault is timed later.
    fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, REGION_ALIGN).expect("region layout is valid");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { System.alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        // SAFETY: `ptr` is valid for writes of `len` bytes: it was just allocated with
        // that size, and nothing else refers to it yet.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0xA5, len) };
        Arena { ptr, len }
    }
}

// ----- the op sequence ------------------------------------------------------------------------

/// One step of a workload. `id` names a slot in the replay's table of live blocks.
#[derive(Clone, Copy, Debug)]
enum Op {
    Alloc { id: u32, size: u32 },
    Free { id: u32 },
}

/// splitmix64: small, fast, and the same sequence on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Log-uniform in `lo..=hi`.
    fn log_uniform(&mut self, lo: u32, hi: u32) -> u32 {
        let (l, h) = (f64::from(lo).ln(), f64::from(hi).ln());
        let v = (l + (h - l) * self.unit()).exp().round() as u32;
        v.clamp(lo, hi)
    }
}

/// One workload: an untimed prefix and the timed ops, both replayed on a fresh allocator.
struct Workload {
    /// Criterion group name and table label.
    name: &'static str,
    /// One-line description for the table.
    about: String,
    /// Ops run before the clock starts (W1/W2's fill).
    setup: Vec<Op>,
    /// Timed ops.
    ops: Vec<Op>,
    /// Size of the live-block table (largest id + 1).
    slots: usize,
    /// Whether the fragmentation table probes the heap this workload leaves behind.
    probe_fragmentation: bool,
}

/// Sizes of the workloads: full for `cargo bench`, tiny for `cargo test --benches`.
#[derive(Clone, Copy)]
struct Params {
    w1_live: u32,
    w1_steps: u32,
    w2_live: u32,
    w2_steps: u32,
    w3_blocks: u32,
    w3_rounds: u32,
    w4_target: u64,
    w4_bursts: u32,
}

impl Params {
    const FULL: Params = Params {
        w1_live: 10_000,
        w1_steps: W1_STEPS,
        w2_live: 2_000,
        w2_steps: W2_STEPS,
        w3_blocks: 1_000,
        w3_rounds: W3_ROUNDS,
        w4_target: REGION_BYTES as u64 / 2,
        w4_bursts: W4_BURSTS,
    };
    const SMOKE: Params = Params {
        w1_live: 500,
        w1_steps: 500,
        w2_live: 100,
        w2_steps: 500,
        w3_blocks: 1_000,
        w3_rounds: 2,
        w4_target: REGION_BYTES as u64 / 64,
        w4_bursts: 1,
    };
}

/// Fill to `live` blocks, then `steps` x (free a random live block, allocate a new one in
/// its slot).
fn churn(name: &'static str, seed: u64, live: u32, lo: u32, hi: u32, steps: u32) -> Workload {
    let mut rng = SplitMix(seed);
    let setup = (0..live)
        .map(|id| Op::Alloc {
            id,
            size: rng.log_uniform(lo, hi),
        })
        .collect();
    let mut ops = Vec::with_capacity(2 * steps as usize);
    for _ in 0..steps {
        let id = rng.below(live as usize) as u32;
        ops.push(Op::Free { id });
        ops.push(Op::Alloc {
            id,
            size: rng.log_uniform(lo, hi),
        });
    }
    Workload {
        name,
        about: format!("{live} live, {lo}..{hi} B, {steps} steps"),
        setup,
        ops,
        slots: live as usize,
        probe_fragmentation: true,
    }
}

/// `rounds` x (`blocks` x 64 B allocated, then freed in reverse).
fn lifo(blocks: u32, rounds: u32) -> Workload {
    let mut ops = Vec::with_capacity(2 * (blocks * rounds) as usize);
    for _ in 0..rounds {
        ops.extend((0..blocks).map(|id| Op::Alloc { id, size: 64 }));
        ops.extend((0..blocks).rev().map(|id| Op::Free { id }));
    }
    Workload {
        name: "W3-lifo",
        about: format!("{blocks} x 64 B, free in reverse, {rounds} rounds"),
        setup: Vec::new(),
        ops,
        slots: blocks as usize,
        probe_fragmentation: false,
    }
}

/// `bursts` x (allocate 16..4096 B until `target` bytes are live, free all in random order).
fn bursts(seed: u64, target: u64, bursts: u32) -> Workload {
    let mut rng = SplitMix(seed);
    let mut ops = Vec::new();
    let mut slots = 0usize;
    for _ in 0..bursts {
        let mut bytes = 0u64;
        let mut ids = Vec::new();
        while bytes < target {
            let id = ids.len() as u32;
            let size = rng.log_uniform(16, 4096);
            ops.push(Op::Alloc { id, size });
            ids.push(id);
            bytes += u64::from(size);
        }
        slots = slots.max(ids.len());
        // Fisher-Yates.
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.below(i + 1));
        }
        ops.extend(ids.into_iter().map(|id| Op::Free { id }));
    }
    Workload {
        name: "W4-bursts",
        about: format!(
            "16..4096 B to {} MiB live ({slots} blocks), free in random order, {bursts} burst(s)",
            target >> 20
        ),
        setup: Vec::new(),
        ops,
        slots,
        probe_fragmentation: false,
    }
}

fn workloads(p: Params) -> Vec<Workload> {
    vec![
        churn("W1-churn", SEED ^ 1, p.w1_live, 16, 4096, p.w1_steps),
        churn(
            "W2-churn-large",
            SEED ^ 2,
            p.w2_live,
            16,
            65_536,
            p.w2_steps,
        ),
        lifo(p.w3_blocks, p.w3_rounds),
        bursts(SEED ^ 4, p.w4_target, p.w4_bursts),
    ]
}

// ----- the allocators -------------------------------------------------------------------------

/// A live allocation: its address or offset and the size asked for (which talc,
/// linked_list_allocator and the system allocator need back on free).
#[derive(Clone, Copy, Debug)]
struct Handle {
    raw: usize,
    size: u32,
}

/// What the replay loop needs from an allocator.
trait BenchAlloc {
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
struct OwnView {
    /// Largest free block, header included.
    largest_free_block: u32,
    /// Largest request that would succeed now (payload bytes).
    largest_alloc: u32,
    /// Bytes in free blocks, headers included.
    free_bytes: u32,
    /// Number of free blocks.
    free_blocks: u32,
    /// Bytes of header in front of every payload.
    header_bytes: u32,
}

/// One allocator family: its name and how to make a fresh instance over the arena.
trait Contender {
    const NAME: &'static str;
    type Alloc<'a>: BenchAlloc;
    fn init(arena: &mut Arena) -> Self::Alloc<'_>;
}

fn layout(size: u32) -> Option<Layout> {
    Layout::from_size_align(size as usize, ALIGN).ok()
}

// shm-core ---------------------------------------------------------------------------------------

fn process_id() -> u32 {
    std::process::id()
}

struct ShmCore;

struct ShmCoreAlloc<'a> {
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
        match self.heap.try_alloc(self.me, size) {
            Ok(off) => Some(Handle {
                raw: off.get() as usize,
                size,
            }),
            // `TooLarge` (more than the region could ever hold) only comes from the
            // fragmentation probe's first, oversized requests.
            Err(Error::OutOfMemory { .. } | Error::TooLarge { .. }) => None,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    #[inline]
    fn free(&mut self, h: Handle) -> bool {
        match self.heap.free(self.me, Offset::new(h.raw as u32)) {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
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

// rlsf -------------------------------------------------------------------------------------------

struct Rlsf;

/// TLSF with 24 first-level classes (blocks up to 512 MiB) and 32 second-level lists.
type RlsfTlsf<'a> = rlsf::Tlsf<'a, u32, u32, 24, 32>;

struct RlsfAlloc<'a> {
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
struct RlsfLocked;

struct RlsfLockedAlloc<'a> {
    inner: RlsfAlloc<'a>,
    lock: AtomicU64,
    /// The holder word this process writes (pid and tag), computed once as shm-core's
    /// platforms cache their identity.
    word: u64,
}

impl RlsfLockedAlloc<'_> {
    #[inline]
    fn locked<R>(&mut self, f: impl FnOnce(&mut RlsfAlloc<'_>) -> R) -> R {
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

struct LinkedList;

struct LinkedListAlloc<'a> {
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

struct Talc;

struct TalcAlloc<'a> {
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

struct Sys;

struct SysAlloc;

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

// ----- the replay -----------------------------------------------------------------------------

/// What went wrong during replays: counted, never a panic.
#[derive(Default)]
struct Tally {
    failed_allocs: u64,
    failed_frees: u64,
    /// Frees skipped because the block's allocation had failed.
    skipped_frees: u64,
    /// First few unexpected errors, with where they happened.
    errors: Vec<String>,
}

impl Tally {
    fn note(&mut self, phase: &str, index: usize, op: Op, error: String) {
        if self.errors.len() < 8 {
            self.errors
                .push(format!("{phase} op #{index} {op:?}: {error}"));
        }
    }
}

/// Replays `ops` on `a`. With `TIME_EACH`, pushes the duration of every single allocator
/// call (ns) onto `lat`; otherwise the loop carries no timing code at all.
#[inline(never)]
fn replay<A: BenchAlloc, const TIME_EACH: bool>(
    a: &mut A,
    ops: &[Op],
    slots: &mut [Option<Handle>],
    tally: &mut Tally,
    lat: &mut Vec<u32>,
    phase: &str,
) {
    for (i, &op) in ops.iter().enumerate() {
        match op {
            Op::Alloc { id, size } => {
                let t = TIME_EACH.then(Instant::now);
                let h = a.alloc(size);
                if let Some(t) = t {
                    lat.push(nanos(t.elapsed()));
                }
                match h {
                    Some(h) => slots[id as usize] = Some(h),
                    None => {
                        tally.failed_allocs += 1;
                        if let Some(e) = a.take_error() {
                            tally.note(phase, i, op, e);
                        }
                    }
                }
            }
            Op::Free { id } => {
                let Some(h) = slots[id as usize].take() else {
                    tally.skipped_frees += 1;
                    continue;
                };
                let t = TIME_EACH.then(Instant::now);
                let ok = a.free(h);
                if let Some(t) = t {
                    lat.push(nanos(t.elapsed()));
                }
                if !ok {
                    tally.failed_frees += 1;
                    let e = a.take_error().unwrap_or_else(|| "free failed".into());
                    tally.note(phase, i, op, e);
                }
            }
        }
    }
}

fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

/// One full run on a fresh allocator: init and setup untimed, then the timed ops.
/// Returns the time of the timed part.
fn run_once<C: Contender, const TIME_EACH: bool>(
    arena: &mut Arena,
    w: &Workload,
    slots: &mut Vec<Option<Handle>>,
    tally: &mut Tally,
    lat: &mut Vec<u32>,
    check: bool,
) -> Duration {
    slots.clear();
    slots.resize(w.slots, None);
    let mut a = C::init(arena);
    replay::<_, false>(&mut a, &w.setup, slots, tally, lat, "setup");
    let start = Instant::now();
    replay::<_, TIME_EACH>(&mut a, black_box(&w.ops), slots, tally, lat, "timed");
    let elapsed = start.elapsed();
    if check {
        if let Err(e) = a.check() {
            tally.errors.push(format!("after replay: {e}"));
        }
    }
    a.release_all(&mut slots.iter_mut().filter_map(Option::take));
    elapsed
}

// ----- latency pass ---------------------------------------------------------------------------

/// One row of the latency table.
struct Row {
    workload: &'static str,
    allocator: &'static str,
    ops: usize,
    ns_per_op: f64,
    p50: u32,
    p99: u32,
    p999: u32,
    max: u32,
    tally: Tally,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency_row<C: Contender>(arena: &mut Arena, w: &Workload) -> Row {
    let mut slots = Vec::new();
    let mut tally = Tally::default();
    let mut lat = Vec::new();
    // Mean: the median of replays without per-op timing, as many as fit in
    // `MEAN_BUDGET` (at least one, so the slow allocators run it once). Failures are
    // counted on the first replay only: every replay is the same op sequence.
    let mut walls = Vec::new();
    let started = Instant::now();
    while walls.is_empty() || (started.elapsed() < MEAN_BUDGET && walls.len() < MEAN_MAX_REPLAYS) {
        let mut t = Tally::default();
        let d = run_once::<C, false>(arena, w, &mut slots, &mut t, &mut lat, walls.is_empty());
        if walls.is_empty() {
            tally = t;
        }
        walls.push(d);
    }
    walls.sort_unstable();
    let wall = walls[walls.len() / 2];
    // Distribution: one more replay, timing every op.
    let mut lat = Vec::with_capacity(w.ops.len());
    let mut again = Tally::default();
    run_once::<C, true>(arena, w, &mut slots, &mut again, &mut lat, true);
    tally.errors.extend(again.errors);
    lat.sort_unstable();
    Row {
        workload: w.name,
        allocator: C::NAME,
        ops: w.ops.len(),
        ns_per_op: wall.as_nanos() as f64 / w.ops.len().max(1) as f64,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        p999: percentile(&lat, 0.999),
        max: lat.last().copied().unwrap_or(0),
        tally,
    }
}

/// Median cost of `Instant::now()` + `elapsed()` with nothing in between.
fn timer_overhead() -> u32 {
    let mut v: Vec<u32> = (0..100_000)
        .map(|_| nanos(black_box(Instant::now()).elapsed()))
        .collect();
    v.sort_unstable();
    percentile(&v, 0.5)
}

fn latency_table(arena: &mut Arena, ws: &[Workload]) -> String {
    let overhead = timer_overhead();
    let mut rows = Vec::new();
    for w in ws {
        rows.push(latency_row::<ShmCore>(arena, w));
        rows.push(latency_row::<Rlsf>(arena, w));
        rows.push(latency_row::<RlsfLocked>(arena, w));
        rows.push(latency_row::<LinkedList>(arena, w));
        rows.push(latency_row::<Talc>(arena, w));
        rows.push(latency_row::<Sys>(arena, w));
        eprintln!("latency pass: {} done", w.name);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Allocators over one pre-faulted {} MiB region, identical op sequences (seed {SEED:#x}).",
        REGION_BYTES >> 20
    );
    let _ = writeln!(
        out,
        "`ns/op`: median un-instrumented replay time / timed ops. Percentiles and max: \
         every op timed with `Instant`, timer overhead ~{overhead} ns included."
    );
    out.push('\n');
    for w in ws {
        let _ = writeln!(
            out,
            "- **{}**: {} ({} timed ops)",
            w.name,
            w.about,
            w.ops.len()
        );
    }
    out.push('\n');
    out.push_str(
        "| workload | allocator | ops | ns/op | p50 ns | p99 ns | p99.9 ns | max ns | failed allocs |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |",
            r.workload,
            r.allocator,
            r.ops,
            r.ns_per_op,
            r.p50,
            r.p99,
            r.p999,
            r.max,
            r.tally.failed_allocs
        );
    }
    push_errors(
        &mut out,
        rows.iter()
            .filter(|r| {
                let t = &r.tally;
                t.failed_frees != 0 || t.skipped_frees != 0 || !t.errors.is_empty()
            })
            .map(|r| {
                let t = &r.tally;
                (
                    format!(
                        "{} / {}: {} failed frees, {} frees skipped after failed allocs",
                        r.workload, r.allocator, t.failed_frees, t.skipped_frees
                    ),
                    &t.errors,
                )
            }),
    );
    out
}

/// Appends an "Errors:" list to a table: one line per `(headline, errors)`, the errors
/// indented under it. Nothing when there are none.
fn push_errors<'a>(out: &mut String, items: impl Iterator<Item = (String, &'a Vec<String>)>) {
    let mut problems = String::new();
    for (headline, errors) in items {
        let _ = writeln!(problems, "- {headline}");
        for e in errors {
            let _ = writeln!(problems, "  - {e}");
        }
    }
    if !problems.is_empty() {
        out.push_str("\nErrors:\n\n");
        out.push_str(&problems);
    }
}

// ----- fragmentation probe --------------------------------------------------------------------

/// Granularity of the probe's requests: every probed size is a multiple of [`ALIGN`].
const PROBE_STEP: u32 = ALIGN as u32;
/// shm-core: owner cells reserved beyond live + free blocks before the probe.
const PROBE_CELL_MARGIN: u32 = 16;

/// Asks an allocator which sizes it can serve right now, leaving it as it was.
struct Prober<'p, A> {
    a: &'p mut A,
    /// Allocator calls made so far (allocations, successful or not).
    probes: u64,
    /// First few unexpected errors.
    errors: Vec<String>,
}

impl<A: BenchAlloc> Prober<'_, A> {
    fn note(&mut self, what: String) {
        if self.errors.len() < 8 {
            self.errors.push(what);
        }
    }

    /// Whether `alloc(size)` succeeds now; a block it gets is freed at once.
    fn fits(&mut self, size: u32) -> bool {
        self.probes += 1;
        match self.a.alloc(size) {
            Some(h) => {
                if !self.a.free(h) {
                    let e = self.a.take_error().unwrap_or_else(|| "free failed".into());
                    self.note(format!("probe free of {size} B: {e}"));
                }
                true
            }
            None => {
                if let Some(e) = self.a.take_error() {
                    self.note(format!("probe alloc of {size} B: {e}"));
                }
                false
            }
        }
    }

    /// The largest `n` in `1..=hi` for which `alloc(n * PROBE_STEP)` succeeds, by binary
    /// search; `None` if not even `PROBE_STEP` bytes fit. Assumes success is monotone in
    /// the size, as it is for every allocator here. Tries `hi` first: in a greedy fill the
    /// previous round's size often fits again, and then one call settles the round.
    fn largest_fit(&mut self, hi: u32) -> Option<u32> {
        if hi == 0 {
            return None;
        }
        if self.fits(hi * PROBE_STEP) {
            return Some(hi);
        }
        if hi == 1 || !self.fits(PROBE_STEP) {
            return None;
        }
        // Invariant: `lo` fits, nothing above `hi` does.
        let (mut lo, mut hi) = (1, hi - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.fits(mid * PROBE_STEP) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Some(lo)
    }
}

/// What the probe found (all sizes are payload bytes).
struct Probe {
    /// Largest allocatable block.
    largest: u64,
    /// Sum of the greedy fill's blocks.
    fill: u64,
    /// The greedy fill's blocks, still allocated.
    kept: Vec<Handle>,
    /// Allocator calls the probe made.
    probes: u64,
    errors: Vec<String>,
}

/// Finds the largest allocatable block of `a`, then fills `a` greedily with the largest
/// allocatable block until not even [`PROBE_STEP`] bytes fit. The fill's blocks stay
/// allocated (in [`Probe::kept`]) for the caller to release.
fn probe<A: BenchAlloc>(a: &mut A) -> Probe {
    let mut p = Prober {
        a,
        probes: 0,
        errors: Vec::new(),
    };
    let top = u32::try_from(REGION_BYTES).unwrap_or(u32::MAX) / PROBE_STEP;
    let largest = p.largest_fit(top).unwrap_or(0);
    let mut kept = Vec::new();
    let mut fill = 0u64;
    // The largest allocatable size only shrinks as the fill goes on, so each round's
    // search starts below the previous round's result.
    let mut hi = largest;
    while let Some(n) = p.largest_fit(hi) {
        let size = n * PROBE_STEP;
        match p.a.alloc(size) {
            Some(h) => {
                kept.push(h);
                fill += u64::from(size);
                hi = n;
            }
            None => {
                let e = p.a.take_error().unwrap_or_else(|| "out of memory".into());
                p.note(format!("fill: {size} B fitted, then failed: {e}"));
                break;
            }
        }
    }
    Probe {
        largest: u64::from(largest * PROBE_STEP),
        fill,
        kept,
        probes: p.probes,
        errors: p.errors,
    }
}

/// One row of the fragmentation table.
struct FragRow {
    workload: &'static str,
    allocator: &'static str,
    /// Largest allocatable block (payload bytes).
    largest: u64,
    /// Sum of the greedy fill (payload bytes).
    fill: u64,
    /// Blocks in the greedy fill.
    blocks: usize,
    /// The allocator's own view before the probe and after the fill.
    before: Option<OwnView>,
    after: Option<OwnView>,
    /// What [`BenchAlloc::prepare_probe`] did, if anything.
    prepared: Option<String>,
    tally: Tally,
}

/// Replays `w`'s setup and timed ops (untimed) on a fresh allocator, then probes it.
fn frag_row<C: Contender>(arena: &mut Arena, w: &Workload) -> FragRow {
    let started = Instant::now();
    let mut slots = vec![None; w.slots];
    let mut tally = Tally::default();
    let mut lat = Vec::new();
    let mut a = C::init(arena);
    replay::<_, false>(&mut a, &w.setup, &mut slots, &mut tally, &mut lat, "setup");
    replay::<_, false>(&mut a, &w.ops, &mut slots, &mut tally, &mut lat, "ops");
    let prepared = match a.prepare_probe() {
        Ok(note) => note,
        Err(e) => {
            tally.errors.push(format!("before the probe: {e}"));
            None
        }
    };
    let before = own_view(&mut a, &mut tally, "before the probe");
    let mut p = probe(&mut a);
    let after = own_view(&mut a, &mut tally, "after the fill");
    if let Err(e) = a.check() {
        tally.errors.push(format!("after the fill: {e}"));
    }
    tally.errors.extend(p.errors.iter().cloned());
    let blocks = p.kept.len();
    a.release_all(
        &mut slots
            .iter_mut()
            .filter_map(Option::take)
            .chain(p.kept.drain(..)),
    );
    eprintln!(
        "fragmentation: {} / {}: largest {:.1} KiB, greedy fill {:.1} KiB in {blocks} blocks, \
         {} probes, {:.2?}",
        w.name,
        C::NAME,
        kib(p.largest),
        kib(p.fill),
        p.probes,
        started.elapsed()
    );
    FragRow {
        workload: w.name,
        allocator: C::NAME,
        largest: p.largest,
        fill: p.fill,
        blocks,
        before,
        after,
        prepared,
        tally,
    }
}

/// `a`'s own view, an error noted in `tally` (with `when`) rather than returned.
fn own_view<A: BenchAlloc>(a: &mut A, tally: &mut Tally, when: &str) -> Option<OwnView> {
    a.own_view().unwrap_or_else(|e| {
        tally.errors.push(format!("{when}: {e}"));
        None
    })
}

fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The fragmentation table (Markdown) for the workloads marked for it; empty if none is.
fn fragmentation_table(arena: &mut Arena, ws: &[Workload]) -> String {
    let mut rows = Vec::new();
    for w in ws.iter().filter(|w| w.probe_fragmentation) {
        rows.push(frag_row::<ShmCore>(arena, w));
        rows.push(frag_row::<Rlsf>(arena, w));
        rows.push(frag_row::<LinkedList>(arena, w));
        rows.push(frag_row::<Talc>(arena, w));
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Fragmentation at the end of W1/W2: largest allocatable block / sum of a greedy fill \
         of largest allocatable blocks (payload bytes); 1.0 = no fragmentation. Each \
         allocator replays the workload's setup and timed ops once more (untimed), then is \
         probed with requests in multiples of {PROBE_STEP} B: `largest` by binary search, \
         then the fill takes the largest allocatable block again and again until not even \
         {PROBE_STEP} B fit."
    );
    out.push('\n');
    out.push_str(
        "| workload | allocator | largest KiB | greedy fill KiB | fill blocks | largest / fill |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|\n");
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {} | {:.3} |",
            r.workload,
            r.allocator,
            kib(r.largest),
            kib(r.fill),
            r.blocks,
            ratio(r.largest, r.fill)
        );
    }
    let mut views = String::new();
    for r in &rows {
        let (Some(b), Some(a)) = (r.before, r.after) else {
            continue;
        };
        let headers = r.blocks as u64 * u64::from(b.header_bytes);
        let _ = writeln!(
            views,
            "- {} / {}: before the probe, largest free block {:.1} KiB (largest request \
             {:.1} KiB), {:.1} KiB free in {} blocks, largest / free {:.3}; after the fill, \
             {:.1} KiB free in {} blocks. Fill + {} headers of {} B + left free = {:.1} KiB.",
            r.workload,
            r.allocator,
            kib(b.largest_free_block.into()),
            kib(b.largest_alloc.into()),
            kib(b.free_bytes.into()),
            b.free_blocks,
            ratio(b.largest_free_block.into(), b.free_bytes.into()),
            kib(a.free_bytes.into()),
            a.free_blocks,
            r.blocks,
            b.header_bytes,
            kib(r.fill + headers + u64::from(a.free_bytes))
        );
    }
    for r in &rows {
        if let Some(note) = &r.prepared {
            let _ = writeln!(views, "- {} / {}: {note}.", r.workload, r.allocator);
        }
    }
    if !views.is_empty() {
        out.push_str(
            "\nOwn view (shm-core: `Heap::stats`, whole blocks, headers included), to \
             cross-check the probe:\n\n",
        );
        out.push_str(&views);
    }
    push_errors(
        &mut out,
        rows.iter()
            .filter(|r| {
                let t = &r.tally;
                t.failed_allocs != 0 || t.failed_frees != 0 || !t.errors.is_empty()
            })
            .map(|r| {
                let t = &r.tally;
                (
                    format!(
                        "{} / {}: {} failed allocs, {} failed frees in the replay",
                        r.workload, r.allocator, t.failed_allocs, t.failed_frees
                    ),
                    &t.errors,
                )
            }),
    );
    out
}

// ----- criterion ------------------------------------------------------------------------------

fn bench_one<C: Contender>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    arena: &mut Arena,
    w: &Workload,
) {
    let mut slots = Vec::new();
    let mut lat = Vec::new();
    let mut tally = Tally::default();
    g.bench_function(BenchmarkId::from_parameter(C::NAME), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| run_once::<C, false>(arena, w, &mut slots, &mut tally, &mut lat, false))
                .sum()
        })
    });
    if tally.failed_allocs != 0 || tally.failed_frees != 0 || !tally.errors.is_empty() {
        eprintln!(
            "{} / {}: {} failed allocs, {} failed frees over all criterion runs; {:?}",
            w.name,
            C::NAME,
            tally.failed_allocs,
            tally.failed_frees,
            tally.errors
        );
    }
}

fn criterion_pass(arena: &mut Arena, ws: &[Workload]) {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    for w in ws {
        let mut g = c.benchmark_group(w.name);
        g.sampling_mode(SamplingMode::Flat);
        g.throughput(Throughput::Elements(w.ops.len() as u64));
        bench_one::<ShmCore>(&mut g, arena, w);
        bench_one::<Rlsf>(&mut g, arena, w);
        bench_one::<RlsfLocked>(&mut g, arena, w);
        bench_one::<LinkedList>(&mut g, arena, w);
        bench_one::<Talc>(&mut g, arena, w);
        bench_one::<Sys>(&mut g, arena, w);
        g.finish();
    }
    c.final_summary();
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let params = if bench_mode {
        Params::FULL
    } else {
        Params::SMOKE
    };
    let mut arena = Arena::new(REGION_BYTES);
    let ws = workloads(params);

    let mut table = latency_table(&mut arena, &ws);
    println!("\n{table}");
    let frag = fragmentation_table(&mut arena, &ws);
    if !frag.is_empty() {
        println!("{frag}");
        table.push('\n');
        table.push_str(&frag);
    }
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = tmp.parent().unwrap_or(tmp).join("allocators-latency.md");
    match std::fs::write(&path, &table) {
        Ok(()) => println!("(written to {})\n", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }

    if std::env::var(LATENCY_ONLY_VAR).is_ok_and(|v| v == "1") {
        return;
    }
    criterion_pass(&mut arena, &ws);
}
