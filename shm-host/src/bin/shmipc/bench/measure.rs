//! Timing one row: the warm-up, the timed round trips and their histogram, the cache-line
//! reference, and the peer process at the other end.

use std::process::{Child, Command};
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use hdrhistogram::Histogram;

use super::plan::Plan;
use super::report::{size_label, Output, Row};
use super::{pin_to, Mechanism, Res};
use crate::util::{latency_histogram, nanos};

/// How long each row runs.
#[derive(Clone, Copy, Debug)]
pub(super) struct Budget {
    /// Warm-up time (untimed round trips).
    warm: Duration,
    /// Timed part.
    time: Duration,
    /// Least timed round trips.
    min_rounds: u64,
    /// Most timed round trips.
    max_rounds: u64,
    /// Most bytes copied per row (uds and pipe), when the time allows more.
    copy_bytes: u64,
}

impl Budget {
    /// The budget of a row whose timed part is `time` (`quick`: a smoke run).
    pub(super) fn new(time: Duration, quick: bool) -> Budget {
        Budget {
            warm: (time / 10).clamp(Duration::from_millis(2), Duration::from_millis(200)),
            time,
            min_rounds: 30,
            max_rounds: 1_000_000,
            copy_bytes: if quick { 1 << 30 } else { 16 << 30 },
        }
    }
}

/// One end of a ping-pong with a peer process.
pub(super) trait Link {
    /// Readies `rounds` round trips of `n`-byte payloads (not timed).
    fn prepare(&mut self, n: usize, rounds: u64) -> Res<()>;
    /// One round trip.
    fn round(&mut self) -> Res<()>;
    /// Tells the peer to exit.
    fn finish(&mut self) -> Res<()>;
}

/// Timed results of one row.
pub(super) struct Stats {
    rounds: u64,
    /// Round-trip times in nanoseconds.
    latency: Histogram<u64>,
    elapsed: Duration,
}

/// Runs up to `rounds` round trips in chunks of about an eighth (each announced with
/// `prepare`, outside the timing), and stops after a chunk once `cap` has passed with at
/// least `min` done: other work preempting a spinning side can make round trips thousands
/// of times slower than the pace they were sized by. Records each round trip's time in
/// `latency` if given; returns how many were done and their total time.
pub(super) fn run_rounds<L: Link + ?Sized>(
    link: &mut L,
    n: usize,
    rounds: u64,
    (min, cap): (u64, Duration),
    plan: &Plan,
    mut latency: Option<&mut Histogram<u64>>,
) -> Res<(u64, Duration)> {
    let chunk = (rounds / 8).max(1);
    let mut done = 0u64;
    let mut total = Duration::ZERO;
    while done < rounds {
        let k = chunk.min(rounds - done);
        link.prepare(n, k)?;
        let start = Instant::now();
        let mut last = start;
        for _ in 0..k {
            if plan.stop.load(Relaxed) {
                bail!("interrupted");
            }
            link.round()?;
            if let Some(h) = latency.as_deref_mut() {
                let now = Instant::now();
                h.saturating_record(nanos(now - last));
                last = now;
            }
        }
        total += if latency.is_some() {
            last - start
        } else {
            start.elapsed()
        };
        done += k;
        if done >= min && total >= cap {
            break;
        }
    }
    Ok((done, total))
}

/// Warms up, sizes the run from the warm-up's pace, then times every round trip.
pub(super) fn measure<L: Link + ?Sized>(
    link: &mut L,
    n: usize,
    copies: bool,
    plan: &Plan,
) -> Res<Stats> {
    let b = &plan.budget;
    // First touch of the memory involved, and a first estimate.
    link.prepare(n, 2)?;
    link.round()?;
    let t = Instant::now();
    link.round()?;
    let first = t.elapsed().as_nanos().max(1);
    // Warm-up.
    let warm = (b.warm.as_nanos() / first).clamp(1, u128::from(b.max_rounds)) as u64;
    let (warmed, took) = run_rounds(link, n, warm, (1, 2 * b.warm), plan, None)?;
    // The faster estimate: preemption only slows rounds down, and the cap bounds the time.
    let pace = (took.as_nanos() / u128::from(warmed.max(1))).clamp(1, first);
    // The timed part.
    let mut rounds = (b.time.as_nanos() / pace).min(u128::from(b.max_rounds)) as u64;
    if copies {
        rounds = rounds.min(b.copy_bytes / (2 * n as u64).max(1));
    }
    let rounds = rounds.max(b.min_rounds);
    let mut latency = latency_histogram()?;
    let cap = (b.min_rounds, 2 * b.time);
    let (rounds, elapsed) = run_rounds(link, n, rounds, cap, plan, Some(&mut latency))?;
    Ok(Stats {
        rounds,
        latency,
        elapsed,
    })
}

/// Measures every payload size over `link` and records the rows.
pub(super) fn run_sizes<L: Link + ?Sized>(
    link: &mut L,
    mech: Mechanism,
    mode: &str,
    plan: &Plan,
    out: &mut Output,
) -> Res<()> {
    let copies = matches!(mech, Mechanism::Uds | Mechanism::Pipe);
    for &n in &plan.sizes {
        out.progress(mech.name(), mode, Some(n));
        let s = measure(link, n, copies, plan)
            .map_err(|e| {
                // Ctrl-C also stops the peer: its failure is not the news.
                if plan.stop.load(Relaxed) {
                    anyhow!("interrupted")
                } else {
                    e
                }
            })
            .with_context(|| format!("{} {mode} {}", mech.name(), size_label(n)))?;
        out.push(Row::new(
            (mech.name(), mode),
            n,
            s.rounds,
            &s.latency,
            s.elapsed,
            None,
        ));
    }
    Ok(())
}

/// The reference for everything else: two threads of this process hand a cache line back
/// and forth (one spinning on it until the other writes it), on the CPUs of `--pin` if
/// given. One-way time = round trip / 2, timed per batch of 100 round trips. On a virtual
/// machine it changes with where the host runs the virtual CPUs, hence a measurement at
/// the start and at the end of the run.
pub(super) fn cacheline(plan: &Plan, when: &'static str) -> Res<Row> {
    #[repr(align(128))]
    struct Line(AtomicU64);
    const BATCH: u64 = 100;
    let line = Line(AtomicU64::new(0));
    // Either side sets it to stop the other (failure, Ctrl-C, time is up).
    let abort = AtomicBool::new(false);
    let budget =
        (plan.budget.time / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let max_batches: u64 = 100_000;
    // Per batch: the time of one round trip.
    let mut latency = latency_histogram()?;
    let mut batches = 0u64;
    let mut elapsed = Duration::ZERO;
    std::thread::scope(|s| -> Res<()> {
        let (line, abort) = (&line, &abort);
        let other = s.spawn(move || -> Result<(), String> {
            if let Some(cpu) = plan.peer_cpu {
                if let Err(e) = pin_to(cpu) {
                    abort.store(true, Relaxed);
                    return Err(format!("{e:#}"));
                }
            }
            for i in 0..max_batches * BATCH {
                let want = 2 * i + 1;
                while line.0.load(Acquire) != want {
                    if abort.load(Relaxed) {
                        return Ok(());
                    }
                    std::hint::spin_loop();
                }
                line.0.store(want + 1, Release);
            }
            Ok(())
        });
        let start = Instant::now();
        let mut i = 0u64;
        'batches: for _ in 0..max_batches {
            let t = Instant::now();
            for _ in 0..BATCH {
                line.0.store(2 * i + 1, Release);
                while line.0.load(Acquire) != 2 * i + 2 {
                    if abort.load(Relaxed) {
                        break 'batches;
                    }
                    std::hint::spin_loop();
                }
                i += 1;
            }
            latency.saturating_record(nanos(t.elapsed() / BATCH as u32));
            batches += 1;
            elapsed = start.elapsed();
            if (elapsed >= budget && batches >= 30) || plan.stop.load(Relaxed) {
                break;
            }
        }
        abort.store(true, Relaxed);
        match other.join() {
            Ok(r) => r.map_err(|e| anyhow!("cache-line reference: {e}"))?,
            Err(_) => bail!("cache-line reference: the second thread panicked"),
        }
        plan.check_stop()
    })?;
    Ok(Row::new(
        ("cacheline", "busy"),
        64,
        batches * BATCH,
        &latency,
        elapsed,
        Some(when),
    ))
}

/// A peer process; killed and waited for if it is still running when dropped.
pub(super) struct Peer {
    pub(super) child: Child,
    what: String,
}

impl Peer {
    pub(super) fn spawn(mut cmd: Command, what: String) -> Res<Peer> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting the {what} peer"))?;
        Ok(Peer { child, what })
    }

    /// Fails if the peer has exited.
    pub(super) fn check(&mut self) -> Res<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(anyhow!("the {} peer exited early ({st})", self.what)),
            Err(e) => Err(anyhow!("checking on the {} peer: {e}", self.what)),
        }
    }

    /// Waits for the peer to exit (it was told to) and checks it succeeded.
    pub(super) fn finish(mut self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for the {} peer", self.what))?;
            if let Some(st) = status {
                return if st.success() {
                    Ok(())
                } else {
                    Err(anyhow!("the {} peer failed ({st})", self.what))
                };
            }
            if Instant::now() >= deadline {
                // Dropping `self` kills it.
                bail!("the {} peer did not exit within 10 s", self.what);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
