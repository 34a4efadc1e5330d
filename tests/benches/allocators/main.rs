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
//!   region (about 46,000 blocks), then free
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
//!    and unexpected errors are listed under the table. Above the table, two `Stalls`
//!    lines say how often a bare loop of clock reads lost more than 1 µs (the vCPU
//!    descheduled, an interrupt) in 100 ms before and after the timed replays. A stall
//!    lands in whatever op is running, so the longer an op, the more often: from the op
//!    time the line names, more than one op in a thousand contains one, and that op's
//!    p99.9 measures the machine, not the allocator (on a busy guest, every locked
//!    operation of shm-core's and at times rlsf's on W4). The header also says whether
//!    shm-core was built with `fault-injection` (see `shm_core::FAULT_INJECTION`).
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
use std::ptr::NonNull;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

mod contenders;
mod fragmentation;
mod latency;
mod replay;
mod workloads;

use contenders::{Contender, LinkedList, Rlsf, RlsfLocked, ShmCore, ShmCoreCache, Sys, Talc};
use fragmentation::fragmentation_table;
use latency::latency_table;
use replay::{run_once, Tally};
use workloads::{workloads, Params, Workload};

/// Size of the one region every allocator works in.
pub(crate) const REGION_BYTES: usize = 64 << 20;
/// Alignment of the region buffer (a page).
pub(crate) const REGION_ALIGN: usize = 4096;
/// Alignment every allocation asks for (shm-core's default block alignment).
pub(crate) const ALIGN: usize = 16;
/// Seed of the op generator; every workload derives its own stream from it.
pub(crate) const SEED: u64 = 0x5348_4d2d_414c_4c4f; // "SHM-ALLO"

/// W1: churn steps after the fill (each = 1 free + 1 alloc).
pub(crate) const W1_STEPS: u32 = 50_000;
/// W2: churn steps after the fill.
pub(crate) const W2_STEPS: u32 = 50_000;
/// W3: rounds of 1,000 allocations freed in reverse.
pub(crate) const W3_ROUNDS: u32 = 100;
/// W4: bursts to half the region. One burst already takes linked_list_allocator about
/// 12 s per replay (criterion needs at least 11 replays); a second burst starts from the
/// same fully coalesced heap, so it adds time rather than information.
pub(crate) const W4_BURSTS: u32 = 1;

/// Latency pass: time spent on repeated un-instrumented replays for the `ns/op` column.
pub(crate) const MEAN_BUDGET: Duration = Duration::from_millis(500);
/// Latency pass: most un-instrumented replays per allocator and workload.
pub(crate) const MEAN_MAX_REPLAYS: usize = 25;

/// Set to `1` to print the latency table and skip criterion.
pub(crate) const LATENCY_ONLY_VAR: &str = "ALLOC_BENCH_LATENCY_ONLY";

// ----- the region -----------------------------------------------------------------------------

/// The 64 MiB buffer all region allocators are initialised over, one at a time.
///
/// It is never freed: it lives until the process exits, so it is valid for `'static`, as
/// `linked_list_allocator::Heap::init` asks. Allocators borrow it mutably, so only one
/// uses it at a time.
pub(crate) struct Arena {
    ptr: NonNull<u8>,
    len: usize,
}

impl Arena {
    /// Allocates the buffer and writes every byte of it, so no page fault is timed later.
    pub(crate) fn new(len: usize) -> Self {
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
        bench_one::<ShmCoreCache>(&mut g, arena, w);
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
