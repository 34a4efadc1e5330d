//! The latency pass: median wall time per op over un-instrumented replays, and the
//! distribution of single-op times from one instrumented replay.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

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

pub(crate) fn latency_table(arena: &mut Arena, ws: &[Workload]) -> String {
    let overhead = timer_overhead();
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
