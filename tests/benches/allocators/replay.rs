//! Replaying a workload on a fresh allocator, counting failures (never a panic).

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::contenders::{BenchAlloc, Contender, Handle};
use crate::workloads::{Op, Workload};
use crate::Arena;

/// What went wrong during replays: counted, never a panic.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) failed_allocs: u64,
    pub(crate) failed_frees: u64,
    /// Frees skipped because the block's allocation had failed.
    pub(crate) skipped_frees: u64,
    /// First few unexpected errors, with where they happened.
    pub(crate) errors: Vec<String>,
}

impl Tally {
    pub(crate) fn note(&mut self, phase: &str, index: usize, op: Op, error: String) {
        if self.errors.len() < 8 {
            self.errors
                .push(format!("{phase} op #{index} {op:?}: {error}"));
        }
    }
}

/// Replays `ops` on `a`. With `TIME_EACH`, pushes the duration of every single allocator
/// call (ns) onto `lat`; otherwise the loop carries no timing code at all.
#[inline(never)]
pub(crate) fn replay<A: BenchAlloc, const TIME_EACH: bool>(
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

pub(crate) fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

/// One full run on a fresh allocator: init and setup untimed, then the timed ops.
/// Returns the time of the timed part.
pub(crate) fn run_once<C: Contender, const TIME_EACH: bool>(
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
