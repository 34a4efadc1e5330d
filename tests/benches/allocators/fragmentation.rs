//! The fragmentation probe: the largest request each region allocator accepts after a
//! workload, and a greedy fill, next to shm-core's own account.

use std::fmt::Write as _;
use std::time::Instant;

use crate::contenders::{BenchAlloc, Contender, Handle, LinkedList, OwnView, Rlsf, ShmCore, Talc};
use crate::latency::push_errors;
use crate::replay::{replay, Tally};
use crate::workloads::Workload;
use crate::{Arena, ALIGN, REGION_BYTES};

/// Granularity of the probe's requests: every probed size is a multiple of [`ALIGN`].
pub(crate) const PROBE_STEP: u32 = ALIGN as u32;
/// shm-core: owner cells reserved beyond live + free blocks before the probe.
pub(crate) const PROBE_CELL_MARGIN: u32 = 16;

/// Asks an allocator which sizes it can serve right now, leaving it as it was.
pub(crate) struct Prober<'p, A> {
    a: &'p mut A,
    /// Allocator calls made so far (allocations, successful or not).
    probes: u64,
    /// First few unexpected errors.
    errors: Vec<String>,
}

impl<A: BenchAlloc> Prober<'_, A> {
    pub(crate) fn note(&mut self, what: String) {
        if self.errors.len() < 8 {
            self.errors.push(what);
        }
    }

    /// Whether `alloc(size)` succeeds now; a block it gets is freed at once.
    pub(crate) fn fits(&mut self, size: u32) -> bool {
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
    pub(crate) fn largest_fit(&mut self, hi: u32) -> Option<u32> {
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
pub(crate) struct Probe {
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
pub(crate) fn probe<A: BenchAlloc>(a: &mut A) -> Probe {
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
pub(crate) struct FragRow {
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
pub(crate) fn frag_row<C: Contender>(arena: &mut Arena, w: &Workload) -> FragRow {
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
pub(crate) fn own_view<A: BenchAlloc>(a: &mut A, tally: &mut Tally, when: &str) -> Option<OwnView> {
    a.own_view().unwrap_or_else(|e| {
        tally.errors.push(format!("{when}: {e}"));
        None
    })
}

pub(crate) fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

pub(crate) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The fragmentation table (Markdown) for the workloads marked for it; empty if none is.
pub(crate) fn fragmentation_table(arena: &mut Arena, ws: &[Workload]) -> String {
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
