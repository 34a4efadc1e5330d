//! One-way latency of a message between two processes, this library against iceoryx2 and
//! a raw cache line, and many-to-one throughput, all in one run.
//!
//! # What is measured
//!
//! Every latency row is a ping-pong between this process and a peer process (this bench
//! binary started again with `--peer ROLE`), both sides busy-polling; one way is half a
//! timed round trip. Every message carries a 16-byte stamp (sequence number, length,
//! kind, checksum; `stamp.rs`) that the sender writes into the payload and the receiver
//! checks; the rest of the payload is neither written nor read, as befits zero-copy.
//!
//! * `cycle` (ours, full cycle): each way, allocate a block of the payload size, write the
//!   stamp, send, receive, free (`ours.rs`).
//! * `same` (ours, same buffer): one block goes back and forth; each side checks the
//!   stamp and writes its own; no allocation or free.
//! * `iceoryx2` (Linux): publish/subscribe, each way loan a slice of the payload size,
//!   write the stamp, send, receive, release (`iceoryx.rs`), at 8 B and 1 MiB.
//! * `cacheline` (Linux): two processes hand a counter back and forth in one cache line
//!   of a shared mapping (`cacheline.rs`): the floor for any handoff between these CPUs.
//!   Timed in batches of 100 round trips (its p99 is that of the batches' means).
//!
//! Ours runs over payloads from 8 B to 16 MiB, so that its flatness can be judged.
//!
//! CPUs: this process runs on CPU 0 and every peer on CPU 1 (`link::CPUS`), where the
//! system lets a process choose (Linux; elsewhere a note says they are not pinned).
//!
//! Interleaving: every row's peer is started once and, between its measurements, blocks
//! until the bench writes `resume` to its stdin (`link::wait_resume`): an idle peer never
//! wakes, so it cannot take the shared CPU from the row being measured. Each of
//! [`Config::rounds`] rounds measures the floor, then each payload size's rows one after
//! the other (their order rotating from round to round); the tables show, per row, the
//! median over the rounds of each round's p50 and p99 (from an HdrHistogram of every
//! timed round trip, or batch, of that round). The ratios divide these medians, within
//! the same run.
//!
//! Many-to-one (`many.rs`): 1, 2, 4 and 8 client processes each allocate and send 64-byte
//! messages to one server, which receives and frees them; aggregate messages per second,
//! the median of the rounds, per number of clients. The server runs on CPU 0 and the
//! clients share CPU 1.
//!
//! Honesty checks, in every run: each peer prints how many messages it received, which
//! must equal what was sent to it; every answer's stamp must be intact and carry the
//! question's sequence number; the many-to-one server checks every client's messages
//! arrive complete and in order. Any failure ends the run with an error (and a non-zero
//! exit status). Nothing is asserted about time.
//!
//! # Running
//!
//! ```text
//! cargo bench -p shm-tests --bench ipc              # the full run, under a minute on 2 cores
//! IPC_BENCH_QUICK=1 cargo bench -p shm-tests --bench ipc   # the smoke run, optimised
//! cargo test -p shm-tests --benches                 # the smoke run (CI): a few seconds
//! ```
//!
//! Without `--bench` on the command line (as under `cargo test`), or with
//! `IPC_BENCH_QUICK=1`, the run shrinks to a smoke run: two rounds, 8 B and 1 MiB, 50
//! round trips per row, 200 messages per many-to-one client. The tables are also written
//! as JSON to `<target dir>/ipc.json`.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

#[cfg(target_os = "linux")]
mod cacheline;
#[cfg(target_os = "linux")]
mod iceoryx;
mod link;
mod many;
mod ours;
mod report;
mod stamp;

use link::{PingPong, Res};
use report::{Results, Sample};

/// Set to `1` for the smoke run under `cargo bench`.
const QUICK_VAR: &str = "IPC_BENCH_QUICK";
/// Payload sizes iceoryx2 is compared at.
const COMPARED: [usize; 2] = [8, 1 << 20];

/// How much one run measures.
#[derive(Clone, Debug)]
pub struct Config {
    /// A smoke run.
    pub quick: bool,
    /// Rounds (each measures every row once).
    pub rounds: usize,
    /// Payload sizes of our rows.
    pub sweep: Vec<usize>,
    /// Least untimed round trips before each measurement, then until `warm` has passed.
    pub min_warm: u64,
    /// Warm-up time.
    pub warm: Duration,
    /// Least timed round trips per measurement.
    pub min_timed: u64,
    /// Timed round trips go on until this has passed (and at least `min_timed` ran)...
    pub time: Duration,
    /// ... or this many ran.
    pub max_timed: u64,
    /// Client counts of the many-to-one rows.
    pub clients: Vec<usize>,
    /// Messages per many-to-one client.
    pub per_client: u64,
}

impl Config {
    fn full() -> Config {
        Config {
            quick: false,
            rounds: 5,
            sweep: vec![
                8,
                64,
                512,
                4 << 10,
                32 << 10,
                256 << 10,
                1 << 20,
                4 << 20,
                16 << 20,
            ],
            min_warm: 20,
            warm: Duration::from_millis(20),
            min_timed: 200,
            time: Duration::from_millis(100),
            max_timed: 100_000,
            clients: vec![1, 2, 4, 8],
            per_client: 20_000,
        }
    }

    fn quick() -> Config {
        Config {
            quick: true,
            rounds: 2,
            sweep: COMPARED.to_vec(),
            min_warm: 10,
            warm: Duration::ZERO,
            min_timed: 50,
            time: Duration::ZERO,
            max_timed: 50,
            clients: vec![1, 2, 4, 8],
            per_client: 200,
        }
    }
}

/// A latency row: its name, the link to its peer and how many data messages it sent.
struct Row {
    name: &'static str,
    link: Box<dyn PingPong>,
    sent: u64,
}

impl Row {
    fn new(name: &'static str, link: impl PingPong + 'static) -> Row {
        Row {
            name,
            link: Box::new(link),
            sent: 0,
        }
    }

    /// One measurement at `len` bytes: a warm-up, then timed round trips (in batches),
    /// then a pause.
    fn measure(&mut self, len: usize, cfg: &Config) -> Res<Sample> {
        let what = |e: String| format!("{} at {len} B: {e}", self.name);
        link::resume(self.link.peer()).map_err(what)?;
        let started = Instant::now();
        let mut warmed = 0u64;
        while warmed < cfg.min_warm || started.elapsed() < cfg.warm {
            self.link.round_trip(len, self.sent).map_err(what)?;
            self.sent += 1;
            warmed += 1;
        }
        let batch = u64::from(self.link.batch());
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
            .map_err(|e| format!("histogram: {e}"))?;
        let start = Instant::now();
        let mut last = start;
        let mut timed = 0u64;
        while timed < cfg.min_timed || (last - start < cfg.time && timed < cfg.max_timed) {
            for _ in 0..batch {
                self.link.round_trip(len, self.sent).map_err(what)?;
                self.sent += 1;
            }
            let now = Instant::now();
            let one_way = (now - last).as_nanos() / u128::from(2 * batch);
            h.saturating_record(u64::try_from(one_way).unwrap_or(u64::MAX));
            last = now;
            timed += batch;
        }
        self.link.pause().map_err(what)?;
        Ok(Sample {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            round_trips: timed,
        })
    }

    /// Stops the peer and checks it received every message sent.
    fn finish(mut self) -> Res<()> {
        let name = self.name;
        link::resume(self.link.peer()).map_err(|e| format!("{name}: {e}"))?;
        self.link.stop().map_err(|e| format!("{name}: {e}"))?;
        link::finish_peer(self.link.peer(), self.sent).map_err(|e| format!("{name}: {e}"))
    }
}

/// The latency rows, one round after the other; then the many-to-one rounds.
fn run(cfg: &Config) -> Res<Results> {
    let max = cfg.sweep.iter().copied().max().unwrap_or(8);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pinned = link::pin();
    let mut floor = floor_row()?;
    let mut ours_rows = Vec::new();
    for mode in ["cycle", "cached", "same"] {
        ours_rows.push(Row::new(mode, ours::Ours::start(mode, max)?));
    }
    // Per payload size: the rows measured at that size only.
    let mut by_len = Vec::new();
    for &len in &cfg.sweep {
        by_len.push((len, compared_rows(len)?));
    }
    let mut results = Results::new(cfg, pinned, cpus);
    for round in 0..cfg.rounds {
        eprintln!("round {} of {}", round + 1, cfg.rounds);
        if let Some(row) = floor.as_mut() {
            let s = row.measure(64, cfg)?;
            results.push(row.name, 64, s);
        }
        for (len, rows) in &mut by_len {
            // Our rows share their peers across sizes; the others are per size.
            let n = ours_rows.len() + rows.len();
            for k in 0..n {
                let i = (k + round) % n;
                let row = match ours_rows.get_mut(i) {
                    Some(r) => r,
                    None => &mut rows[i - ours_rows.len()],
                };
                let s = row.measure(*len, cfg)?;
                results.push(row.name, *len, s);
            }
        }
    }
    for row in floor.into_iter().chain(ours_rows.drain(..)) {
        row.finish()?;
    }
    for (_, rows) in by_len {
        for row in rows {
            row.finish()?;
        }
    }
    for round in 0..cfg.rounds {
        for &n in &cfg.clients {
            eprintln!("many-to-one: {n} clients, round {}", round + 1);
            let rate = many::round(n, cfg.per_client, &round.to_string())?;
            results.push_many(n, rate);
        }
    }
    Ok(results)
}

/// The floor's row, where there is one (Linux).
#[cfg(target_os = "linux")]
fn floor_row() -> Res<Option<Row>> {
    Ok(Some(Row::new("cacheline", cacheline::CacheLine::start()?)))
}

/// The floor's row, where there is one (Linux).
#[cfg(not(target_os = "linux"))]
fn floor_row() -> Res<Option<Row>> {
    Ok(None)
}

/// The other library's rows at `len` bytes (Linux: iceoryx2 at the compared sizes).
#[cfg(target_os = "linux")]
fn compared_rows(len: usize) -> Res<Vec<Row>> {
    if COMPARED.contains(&len) {
        Ok(vec![Row::new("iceoryx2", iceoryx::Iceoryx::start(len)?)])
    } else {
        Ok(Vec::new())
    }
}

/// The other library's rows at `len` bytes (none off Linux).
#[cfg(not(target_os = "linux"))]
fn compared_rows(_len: usize) -> Res<Vec<Row>> {
    Ok(Vec::new())
}

/// The peer roles (`EXE --peer ROLE ARGS...`).
fn peer(args: &[String]) -> Res<()> {
    link::exit_with_parent();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "ours" => ours::peer(arg(1), arg(2)),
        "many" => many::peer(arg(1), arg(2)),
        #[cfg(target_os = "linux")]
        "cacheline" => cacheline::peer(arg(1)),
        #[cfg(target_os = "linux")]
        "iceoryx2" => iceoryx::peer(arg(1), arg(2)),
        other => Err(format!("unknown peer role {other:?}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--peer") {
        if let Err(e) = peer(&args[1..]) {
            eprintln!("ipc bench peer {:?}: {e}", &args[1..]);
            std::process::exit(1);
        }
        return;
    }
    let quick =
        !args.iter().any(|a| a == "--bench") || std::env::var(QUICK_VAR).is_ok_and(|v| v == "1");
    let cfg = if quick {
        Config::quick()
    } else {
        Config::full()
    };
    match run(&cfg) {
        Ok(results) => {
            println!("\n{}", results.table());
            let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
            let path = tmp.parent().unwrap_or(tmp).join("ipc.json");
            match std::fs::write(&path, results.json()) {
                Ok(()) => println!("(JSON in {})", path.display()),
                Err(e) => eprintln!("could not write {}: {e}", path.display()),
            }
        }
        Err(e) => {
            eprintln!("ipc bench: {e}");
            std::process::exit(1);
        }
    }
}
