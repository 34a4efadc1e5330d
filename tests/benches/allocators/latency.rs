//! The latency pass: median wall time per op over un-instrumented replays, and the
//! distribution of single-op times from one instrumented replay.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::contenders::{
    Contender, LinkedList, Rlsf, RlsfLocked, ShmCore, ShmCoreCache, Sys, Talc,
};
use crate::replay::{nanos, run_once, Tally};
use crate::workloads::Workload;
use crate::{Arena, MEAN_BUDGET, MEAN_MAX_REPLAYS, REGION_BYTES, SEED};

/// One row of the latency table.
pub(crate) struct Row {
    workload: &'static str,
    allocator: &'static str,
    ops: usize,
    ns_per_op: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    tally: Tally,
}

/// The distribution of `samples` (ns) in a histogram (the one `shmipc bench` uses too):
/// exact below 2048 ns, within 0.1 % above; percentiles by nearest rank.
fn histogram(samples: &[u32]) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, u64::from(u32::MAX), 3)
        .expect("a histogram of 3 significant digits up to u32::MAX is valid");
    for &ns in samples {
        h.saturating_record(u64::from(ns));
    }
    h
}

pub(crate) fn latency_row<C: Contender>(arena: &mut Arena, w: &Workload) -> Row {
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
    let lat = histogram(&lat);
    Row {
        workload: w.name,
        allocator: C::NAME,
        ops: w.ops.len(),
        ns_per_op: wall.as_nanos() as f64 / w.ops.len().max(1) as f64,
        p50: lat.value_at_quantile(0.50),
        p99: lat.value_at_quantile(0.99),
        p999: lat.value_at_quantile(0.999),
        max: lat.max(),
        tally,
    }
}

/// Median cost of `Instant::now()` + `elapsed()` with nothing in between.
pub(crate) fn timer_overhead() -> u64 {
    let v: Vec<u32> = (0..100_000)
        .map(|_| nanos(black_box(Instant::now()).elapsed()))
        .collect();
    histogram(&v).value_at_quantile(0.5)
}

/// Time a bare loop of clock reads lost to something else (the guest's vCPU descheduled,
/// an interrupt): the gaps over [`STALL_NS`] between consecutive reads in [`STALL_WINDOW`].
pub(crate) struct Stalls {
    count: usize,
    median_ns: u64,
    longest_ns: u64,
}

/// A gap between two clock reads longer than this is a stall.
const STALL_NS: u32 = 1_000;
/// How long the bare loop runs.
const STALL_WINDOW: Duration = Duration::from_millis(100);

impl Stalls {
    pub(crate) fn measure() -> Self {
        let start = Instant::now();
        let mut last = start;
        let mut gaps = Vec::new();
        while last.duration_since(start) < STALL_WINDOW {
            let now = black_box(Instant::now());
            let gap = nanos(now.duration_since(last));
            if gap > STALL_NS {
                gaps.push(gap);
            }
            last = now;
        }
        gaps.sort_unstable();
        Stalls {
            count: gaps.len(),
            median_ns: gaps.get(gaps.len() / 2).copied().map_or(0, u64::from),
            longest_ns: gaps.last().copied().map_or(0, u64::from),
        }
    }

    /// One line: what the bare loop lost, and the operation time from which p99.9 is
    /// the stalls'.
    fn describe(&self, out: &mut String, when: &str) {
        let _ = write!(
            out,
            "Stalls {when} the timed replays: a bare loop of clock reads lost over {} µs {} \
             times in {} ms (median {} ns, longest {} ns)",
            STALL_NS / 1000,
            self.count,
            STALL_WINDOW.as_millis(),
            self.median_ns,
            self.longest_ns
        );
        match self.p999_floor_ns() {
            Some(floor) => {
                let _ = writeln!(
                    out,
                    ": at this rate one op in a thousand of over about {floor} ns contains \
                     one, and a p99.9 is then this machine's stall, not the allocator's."
                );
            }
            None => out.push_str(".\n"),
        }
    }

    /// The operation time above which at least one timed operation in a thousand
    /// contains a stall, so that p99.9 measures this machine rather than the allocator.
    fn p999_floor_ns(&self) -> Option<u128> {
        let window = STALL_WINDOW.as_nanos();
        (self.count != 0).then(|| window / (1000 * self.count as u128))
    }
}

pub(crate) fn latency_table(arena: &mut Arena, ws: &[Workload]) -> String {
    let overhead = timer_overhead();
    let before = Stalls::measure();
    let mut rows = Vec::new();
    for w in ws {
        rows.push(latency_row::<ShmCore>(arena, w));
        rows.push(latency_row::<ShmCoreCache>(arena, w));
        rows.push(latency_row::<Rlsf>(arena, w));
        rows.push(latency_row::<RlsfLocked>(arena, w));
        rows.push(latency_row::<LinkedList>(arena, w));
        rows.push(latency_row::<Talc>(arena, w));
        rows.push(latency_row::<Sys>(arena, w));
        eprintln!("latency pass: {} done", w.name);
    }
    let after = Stalls::measure();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Allocators over one pre-faulted {} MiB region, identical op sequences (seed {SEED:#x}).",
        REGION_BYTES >> 20
    );
    let _ = writeln!(
        out,
        "`ns/op`: median un-instrumented replay time / timed ops. Percentiles and max: \
         every op timed with `Instant`, timer overhead ~{overhead} ns included. shm-core {}.",
        shm_tests::shm_core_build()
    );
    for (when, stalls) in [("before", &before), ("after", &after)] {
        stalls.describe(&mut out, when);
    }
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
pub(crate) fn push_errors<'a>(
    out: &mut String,
    items: impl Iterator<Item = (String, &'a Vec<String>)>,
) {
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
