//! `shmipc bench`: one-way latency and throughput of this library against a Unix-domain
//! socket and a pipe, measured in the same run, for payloads from 8 B to 64 MiB.
//!
//! Every row is a ping-pong between this process and one peer process (`shmipc bench-peer`,
//! started for each mechanism and mode and stopped after it):
//!
//! - `shm` (modes `busy`, `blocking`, `adaptive`; both sides use the mode): this process
//!   is the server. It sends a buffer of `payload` bytes to the peer, a client, which sends
//!   the very same buffer back. Nothing is copied and neither side touches the payload:
//!   each way costs one send (a journaled operation under the region lock) and one
//!   lock-free receive, whatever the size.
//! - `shm-cycle` (busy, or the first mode given): the full cycle alloc -> send -> recv ->
//!   free, each way. This process allocates a buffer and sends it; the peer receives it,
//!   frees it, allocates a buffer of the same size and sends that back; this process
//!   receives and frees it. The payload is not written (filling it is the application's
//!   copy, not the transport's).
//! - `uds` (Unix only: a Unix-domain stream socket) and `pipe` (the peer's stdin and
//!   stdout): the payload is written and read in full each way with blocking I/O, so it is
//!   copied into and out of the kernel. Their mode is `blocking`.
//! - `--modes poll` (diagnostic, not run by default): the shm rows with both sides calling
//!   `try_recv` in a tight loop, one PAUSE per check, instead of the library's busy mode
//!   (which checks the queue once per 32 PAUSEs): it separates the transport's own cost
//!   from the back-off of the receive loop.
//!
//! - A reference, measured at the start and at the end: two threads of this process hand
//!   a cache line back and forth (`cacheline` in the JSON, a header line in the table):
//!   the floor for any handoff through shared memory between these two CPUs right now.
//!   On a virtual machine it moves with where the host runs the virtual CPUs.
//!
//! How to read it: `p50`/`p99` are one-way latencies, i.e. half of a timed round trip, over
//! `iters` round trips after a warm-up; `min` (JSON only) is the fastest. `msgs/s` counts
//! both directions (two messages per round trip) and `MiB/s` is that times the payload.
//! Iterations scale with the time per round trip (`--time` per row, at least 30). Busy
//! mode keeps one core spinning on each side: other work on the machine preempts the
//! spinners (the table header shows the load average), which shows in the p99 first and,
//! on a machine with as many runnable tasks as cores, in the p50 too.
//!
//! Commands: `shmipc bench` (all rows, about 90 s on two cores),
//! `shmipc bench --json` (one JSON object per line), `shmipc bench --quick` (a smoke run of
//! a few seconds), `shmipc bench --pin 0,1` (this process on CPU 0, the peer on CPU 1).

use std::fmt::Display;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::time::{Duration, Instant};

use shm_host::{
    Buffer, Client, ClientOptions, CreateOptions, Message, NativeSystem, PeerId, RecvMode, Server,
    ServerEvent, ServerOptions,
};

use crate::util::{human_bytes, parse_size, percentile, Json};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Largest payload accepted (the segment holds two of them and offsets are 32-bit).
const MAX_PAYLOAD: usize = 1 << 30;
/// Tag of the message that tells an shm peer to exit (below the protocol's control tags).
const TAG_STOP: u32 = 0xFFFF_0000;
/// How long one wait for an answer lasts before the peer and Ctrl-C are checked.
const POLL: Duration = Duration::from_millis(100);
/// A round trip taking longer than this is an error (the peer hangs).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer waits for the next message before giving up.
const PEER_IDLE: Duration = Duration::from_secs(120);
/// How long the peer may take to start and connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the shm rows wait for the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The library's receive mode, on both sides.
    Lib(RecvMode),
    /// Both sides call `try_recv` in a tight loop (diagnostic): the transport without the
    /// back-off of the library's busy-poll loop.
    Poll,
}

impl Mode {
    /// The receive mode the server and the client are created with.
    fn recv_mode(self) -> RecvMode {
        match self {
            Mode::Lib(m) => m,
            Mode::Poll => RecvMode::BusyPoll,
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        if s == "poll" {
            Ok(Mode::Poll)
        } else {
            s.parse()
                .map(Mode::Lib)
                .map_err(|_| format!("unknown mode {s:?} (busy, blocking, adaptive, poll)"))
        }
    }
}

impl Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Lib(m) => m.fmt(f),
            Mode::Poll => f.write_str("poll"),
        }
    }
}

/// A transport measured by `bench`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// This library: the same buffer goes back and forth, never copied.
    Shm,
    /// This library: alloc -> send -> recv -> free, each way.
    ShmCycle,
    /// A Unix-domain stream socket (not on Windows).
    Uds,
    /// A pair of pipes: the peer's stdin and stdout.
    Pipe,
}

impl Mechanism {
    fn name(self) -> &'static str {
        match self {
            Mechanism::Shm => "shm",
            Mechanism::ShmCycle => "shm-cycle",
            Mechanism::Uds => "uds",
            Mechanism::Pipe => "pipe",
        }
    }
}

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// One JSON object per line (mechanism, mode, payload_bytes, iterations, p50_ns, p99_ns,
    /// min_ns, msgs_per_s, mib_per_s) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Receive modes of the shm rows, comma-separated: busy, blocking, adaptive (the
    /// library's), or poll (diagnostic: both sides spin on `try_recv` themselves).
    #[arg(long, value_delimiter = ',', default_value = "busy,blocking,adaptive")]
    pub modes: Vec<Mode>,
    /// Mechanisms to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "shm,shm-cycle,uds,pipe"
    )]
    pub mechanisms: Vec<Mechanism>,
    /// Smallest payload (then powers of 4 from 4x this, up to --max-size).
    #[arg(long, default_value = "8", value_parser = parse_size)]
    pub min_size: usize,
    /// Largest payload [default: 64MiB; 16MiB with --quick].
    #[arg(long, value_parser = parse_size)]
    pub max_size: Option<usize>,
    /// Smoke run of a few seconds: sizes by powers of 64, short rows.
    #[arg(long)]
    pub quick: bool,
    /// Timed part of each row, e.g. 500ms or 2s [default: 1s; 25ms with --quick]. At least
    /// 30 round trips are timed whatever it says.
    #[arg(long, value_parser = parse_duration)]
    pub time: Option<Duration>,
    /// Pins this process to CPU A and the peers to CPU B (Linux): `--pin 0,1`.
    #[arg(long, value_name = "A,B", value_parser = parse_pin)]
    pub pin: Option<(usize, usize)>,
}

/// Arguments of the hidden `bench-peer` (the other end of each ping-pong).
#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    /// What to answer on.
    #[arg(long, value_enum)]
    pub mechanism: Mechanism,
    /// Segment name (shm, shm-cycle).
    #[arg(long)]
    pub name: Option<String>,
    /// Receive mode (shm, shm-cycle).
    #[arg(long, default_value = "busy")]
    pub mode: Mode,
    /// Socket path (uds).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// CPU to pin this process to (Linux).
    #[arg(long)]
    pub cpu: Option<usize>,
}

// ----- small helpers ---------------------------------------------------------------------

/// Adds what was being done to an error.
trait Context<T> {
    fn context<C: Display>(self, what: impl FnOnce() -> C) -> Res<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context<C: Display>(self, what: impl FnOnce() -> C) -> Res<T> {
        self.map_err(|e| format!("{}: {e}", what()).into())
    }
}

/// Parses `500ms`, `2s`, `1.5s`, `250us`, `1min`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{s:?} is not a duration (try 500ms, 2s)");
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "m" | "min" => v * 60.0,
        _ => return Err(bad()),
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(format!(
            "{s:?}: give a duration above 0 and at most an hour"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `A,B` (two CPU numbers).
fn parse_pin(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?}: give two CPU numbers, e.g. 0,1");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let a = a.trim().parse().map_err(|_| bad())?;
    let b = b.trim().parse().map_err(|_| bad())?;
    Ok((a, b))
}

/// Pins the calling thread (and the threads it starts later) to `cpu`.
#[cfg(target_os = "linux")]
fn pin_to(cpu: usize) -> Res<()> {
    let limit = libc::CPU_SETSIZE as usize;
    if cpu >= limit {
        return Err(format!("CPU {cpu} is out of range (at most {})", limit - 1).into());
    }
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so the bit lies inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size given.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn pin_to(_cpu: usize) -> Res<()> {
    Err("--pin is supported on Linux only".into())
}

/// `8 B`, `64 KiB`, `16 MiB`: like `human_bytes`, without a decimal for whole numbers.
fn size_label(n: usize) -> String {
    let s = human_bytes(n as u64);
    s.replace(".0 ", " ")
}

/// `312 ns`, `4.7 us`, `12.3 ms`.
fn fmt_ns(ns: u64) -> String {
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} us", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// MiB/s: one decimal while small, whole numbers above.
fn fmt_mib(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// `3.12M`, `812k`, `41.0`.
fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

/// Little-endian u64 from 8 bytes.
fn le_u64(b: &[u8]) -> Res<u64> {
    Ok(u64::from_le_bytes(b.try_into()?))
}

// ----- the plan ----------------------------------------------------------------------------

/// How long each row runs.
#[derive(Clone, Copy, Debug)]
struct Budget {
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

/// Payload sizes: `min`, then the powers of `step` from 4 x `min` below `max`, then `max`.
fn sizes(min: usize, max: usize, step: usize) -> Vec<usize> {
    let mut v = vec![min];
    let mut p = 1usize;
    while let Some(next) = p.checked_mul(step) {
        p = next;
        if p >= max {
            break;
        }
        if p >= min.saturating_mul(4) {
            v.push(p);
        }
    }
    if max > min {
        v.push(max);
    }
    v
}

/// Everything a run needs.
struct Plan {
    json: bool,
    sizes: Vec<usize>,
    modes: Vec<Mode>,
    mechanisms: Vec<Mechanism>,
    budget: Budget,
    segment: usize,
    exe: PathBuf,
    peer_cpu: Option<usize>,
    /// `--pin`.
    pin: Option<(usize, usize)>,
    /// CPUs this process may use (before any pinning).
    cpus: usize,
    stop: &'static AtomicBool,
}

impl Plan {
    fn new(args: &Args, stop: &'static AtomicBool) -> Res<Plan> {
        let max = args
            .max_size
            .unwrap_or(if args.quick { 16 << 20 } else { 64 << 20 });
        let min = args.min_size;
        if min == 0 {
            return Err("--min-size must be at least 1 byte".into());
        }
        if max > MAX_PAYLOAD {
            return Err(format!(
                "--max-size {} is too large (at most {})",
                human_bytes(max as u64),
                human_bytes(MAX_PAYLOAD as u64)
            )
            .into());
        }
        if min > max {
            return Err(format!(
                "--min-size {} is above --max-size {}",
                human_bytes(min as u64),
                human_bytes(max as u64)
            )
            .into());
        }
        let mut modes = Vec::new();
        for m in &args.modes {
            if !modes.contains(m) {
                modes.push(*m);
            }
        }
        let mut mechanisms = Vec::new();
        for m in &args.mechanisms {
            if !mechanisms.contains(m) {
                mechanisms.push(*m);
            }
        }
        if modes.is_empty() || mechanisms.is_empty() {
            return Err("nothing to measure (give --modes and --mechanisms)".into());
        }
        let time = args.time.unwrap_or(if args.quick {
            Duration::from_millis(25)
        } else {
            Duration::from_secs(1)
        });
        let budget = Budget {
            warm: (time / 10).clamp(Duration::from_millis(2), Duration::from_millis(200)),
            time,
            min_rounds: 30,
            max_rounds: 1_000_000,
            copy_bytes: if args.quick { 1 << 30 } else { 16 << 30 },
        };
        // One payload-sized block is live at a time; twice that leaves room for the
        // allocator's headers, the queues and any fragmentation.
        let segment = (2 * max + (32 << 20)).max(16 << 20);
        let exe = std::env::current_exe().context(|| "finding this executable")?;
        Ok(Plan {
            json: args.json,
            sizes: sizes(min, max, if args.quick { 64 } else { 4 }),
            modes,
            mechanisms,
            budget,
            segment,
            exe,
            peer_cpu: args.pin.map(|(_, b)| b),
            pin: args.pin,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            stop,
        })
    }

    /// The mode of the shm-cycle rows: busy if asked for, else the first mode.
    fn cycle_mode(&self) -> Mode {
        let busy = Mode::Lib(RecvMode::BusyPoll);
        if self.modes.contains(&busy) {
            busy
        } else {
            self.modes[0]
        }
    }

    fn rows(&self) -> usize {
        let per_size: usize = self
            .mechanisms
            .iter()
            .map(|m| match m {
                Mechanism::Shm => self.modes.len(),
                Mechanism::Uds if cfg!(not(unix)) => 0,
                _ => 1,
            })
            .sum();
        per_size * self.sizes.len()
    }

    /// `bench-peer` for `mech`, with no standard input or output.
    fn peer_command(&self, mech: Mechanism) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(["bench-peer", "--mechanism", mech.name()]);
        if let Some(cpu) = self.peer_cpu {
            c.args(["--cpu", &cpu.to_string()]);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        c
    }

    fn check_stop(&self) -> Res<()> {
        if self.stop.load(Relaxed) {
            Err("interrupted".into())
        } else {
            Ok(())
        }
    }
}

// ----- results ----------------------------------------------------------------------------

/// One measured row.
#[derive(Clone, Debug)]
struct Row {
    mechanism: &'static str,
    mode: String,
    payload: usize,
    iterations: u64,
    p50_ns: u64,
    p99_ns: u64,
    min_ns: u64,
    msgs_per_s: f64,
    mib_per_s: f64,
    /// For the cache-line reference: measured at the "start" or the "end" of the run.
    when: Option<&'static str>,
}

impl Row {
    fn json(&self) -> Json {
        let mut obj = vec![
            ("mechanism", Json::from(self.mechanism)),
            ("mode", Json::from(self.mode.as_str())),
            ("payload_bytes", Json::from(self.payload)),
            ("iterations", Json::from(self.iterations)),
            ("p50_ns", Json::from(self.p50_ns)),
            ("p99_ns", Json::from(self.p99_ns)),
            ("min_ns", Json::from(self.min_ns)),
            ("msgs_per_s", Json::from(self.msgs_per_s.round())),
            (
                "mib_per_s",
                Json::from((self.mib_per_s * 10.0).round() / 10.0),
            ),
        ];
        if let Some(when) = self.when {
            obj.push(("when", Json::from(when)));
        }
        Json::obj(obj)
    }
}

/// Where rows go: JSON lines at once, or a table at the end; progress on stderr.
struct Output {
    json: bool,
    tty: bool,
    rows: Vec<Row>,
    /// The cache-line references (not part of the table).
    reference: Vec<Row>,
    notes: Vec<String>,
    total: usize,
    started: Instant,
    /// `/proc/loadavg` when the run started (empty elsewhere).
    load_at_start: String,
}

impl Output {
    fn new(json: bool, total: usize) -> Output {
        Output {
            json,
            tty: std::io::stderr().is_terminal(),
            rows: Vec::new(),
            reference: Vec::new(),
            notes: Vec::new(),
            total,
            started: Instant::now(),
            load_at_start: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }
    }

    /// A progress line: overwritten in place on a terminal, one per phase otherwise.
    fn progress(&self, mech: &str, mode: &str, payload: Option<usize>) {
        let done = self.rows.len();
        let secs = self.started.elapsed().as_secs();
        match payload {
            Some(n) if self.tty => eprint!(
                "\r\x1b[K[{done}/{}] {secs}s {mech} {mode} {}",
                self.total,
                size_label(n)
            ),
            None if !self.tty => {
                eprintln!("bench: [{done}/{}] {secs}s {mech} {mode}", self.total)
            }
            _ => {}
        }
    }

    fn clear_progress(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }

    fn push(&mut self, row: Row) {
        self.print_json(&row);
        self.rows.push(row);
    }

    fn push_reference(&mut self, row: Row) {
        self.print_json(&row);
        self.reference.push(row);
    }

    fn print_json(&self, row: &Row) {
        if self.json {
            self.clear_progress();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", row.json().render());
            let _ = out.flush();
        }
    }

    #[cfg(not(unix))]
    fn note(&mut self, note: String) {
        if self.json {
            eprintln!("bench: {note}");
        }
        self.notes.push(note);
    }

    /// Prints the table (table mode) and a summary of the headline figures.
    fn finish(&self, plan: &Plan) {
        self.clear_progress();
        if self.json || self.rows.is_empty() {
            return;
        }
        println!(
            "shmipc bench: ping-pong with one peer process, {} CPUs{}; shm segment {} prefaulted",
            plan.cpus,
            match plan.pin {
                Some((a, b)) => format!(", pinned to CPUs {a} (bench) and {b} (peer)"),
                None => String::new(),
            },
            size_label(plan.segment)
        );
        println!("one-way latency = round trip / 2; msgs/s counts both directions");
        // Busy polling competes with any other work for the cores: show how loaded they were.
        if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
            let fields: Vec<&str> = load.split_whitespace().take(3).collect();
            println!(
                "load average {} at the start, {} at the end (1, 5, 15 min)",
                self.load_at_start,
                fields.join(" ")
            );
        }
        if !self.reference.is_empty() {
            let parts: Vec<String> = self
                .reference
                .iter()
                .map(|r| {
                    format!(
                        "{} (p99 {}) at the {}",
                        fmt_ns(r.p50_ns),
                        fmt_ns(r.p99_ns),
                        r.when.unwrap_or("?")
                    )
                })
                .collect();
            println!(
                "a cache line between two spinning threads, one way: {}",
                parts.join(", ")
            );
        }
        for n in &self.notes {
            println!("note: {n}");
        }
        println!();
        println!(
            "{:<10} {:<9} {:>9} {:>8} {:>10} {:>10} {:>9} {:>10}",
            "mechanism", "mode", "payload", "iters", "p50", "p99", "msgs/s", "MiB/s"
        );
        let mut last = "";
        for r in &self.rows {
            if !last.is_empty() && last != r.mechanism {
                println!();
            }
            last = r.mechanism;
            println!(
                "{:<10} {:<9} {:>9} {:>8} {:>10} {:>10} {:>9} {:>10}",
                r.mechanism,
                r.mode,
                size_label(r.payload),
                r.iterations,
                fmt_ns(r.p50_ns),
                fmt_ns(r.p99_ns),
                fmt_rate(r.msgs_per_s),
                fmt_mib(r.mib_per_s)
            );
        }
        self.summary();
    }

    fn find(&self, mech: &str, mode: &str, payload: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.mechanism == mech && r.mode == mode && r.payload == payload)
    }

    fn summary(&self) {
        let mut picks: Vec<usize> = Vec::new();
        for n in [
            8,
            16 << 20,
            self.rows.iter().map(|r| r.payload).max().unwrap_or(8),
        ] {
            if !picks.contains(&n) && self.rows.iter().any(|r| r.payload == n) {
                picks.push(n);
            }
        }
        let cell = |r: &Row| format!("{} (p99 {})", fmt_ns(r.p50_ns), fmt_ns(r.p99_ns));
        let mut lines = Vec::new();
        for &n in &picks {
            let parts: Vec<String> = [("shm", "busy"), ("uds", "blocking"), ("pipe", "blocking")]
                .iter()
                .filter_map(|&(m, mode)| self.find(m, mode, n).map(|r| format!("{m} {}", cell(r))))
                .collect();
            if !parts.is_empty() {
                lines.push(format!("  {:>8}: {}", size_label(n), parts.join(", ")));
            }
        }
        if !lines.is_empty() {
            println!();
            println!("one-way latency p50, shm busy-poll vs uds and pipe:");
            for l in lines {
                println!("{l}");
            }
        }
        let cycles: Vec<String> = picks
            .iter()
            .filter_map(|&n| {
                self.rows
                    .iter()
                    .find(|r| r.mechanism == "shm-cycle" && r.payload == n)
                    .map(|r| {
                        format!(
                            "  {:>8}: {} per cycle, {} cycles/s ({})",
                            size_label(n),
                            cell(r),
                            fmt_rate(r.msgs_per_s),
                            r.mode
                        )
                    })
            })
            .collect();
        if !cycles.is_empty() {
            println!("alloc -> send -> recv -> free (shm-cycle):");
            for l in cycles {
                println!("{l}");
            }
        }
    }
}

// ----- measuring ----------------------------------------------------------------------------

/// One end of a ping-pong with a peer process.
trait Link {
    /// Readies `rounds` round trips of `n`-byte payloads (not timed).
    fn prepare(&mut self, n: usize, rounds: u64) -> Res<()>;
    /// One round trip.
    fn round(&mut self) -> Res<()>;
    /// Tells the peer to exit.
    fn finish(&mut self) -> Res<()>;
}

/// Timed results of one row.
struct Stats {
    rounds: u64,
    /// Sorted round-trip times.
    samples: Vec<Duration>,
    elapsed: Duration,
}

/// Runs up to `rounds` round trips in chunks of about an eighth (each announced with
/// `prepare`, outside the timing), and stops after a chunk once `cap` has passed with at
/// least `min` done: other work preempting a spinning side can make round trips thousands
/// of times slower than the pace they were sized by. Pushes each round trip's time to
/// `samples` if given; returns how many were done and their total time.
fn run_rounds<L: Link + ?Sized>(
    link: &mut L,
    n: usize,
    rounds: u64,
    (min, cap): (u64, Duration),
    plan: &Plan,
    mut samples: Option<&mut Vec<Duration>>,
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
                return Err("interrupted".into());
            }
            link.round()?;
            if let Some(v) = samples.as_deref_mut() {
                let now = Instant::now();
                v.push(now - last);
                last = now;
            }
        }
        total += if samples.is_some() {
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
fn measure<L: Link + ?Sized>(link: &mut L, n: usize, copies: bool, plan: &Plan) -> Res<Stats> {
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
    let mut samples = Vec::with_capacity(rounds as usize);
    let cap = (b.min_rounds, 2 * b.time);
    let (rounds, elapsed) = run_rounds(link, n, rounds, cap, plan, Some(&mut samples))?;
    samples.sort_unstable();
    Ok(Stats {
        rounds,
        samples,
        elapsed,
    })
}

/// Measures every payload size over `link` and records the rows.
fn run_sizes<L: Link + ?Sized>(
    link: &mut L,
    mech: Mechanism,
    mode: &str,
    plan: &Plan,
    out: &mut Output,
) -> Res<()> {
    let copies = matches!(mech, Mechanism::Uds | Mechanism::Pipe);
    for &n in &plan.sizes {
        out.progress(mech.name(), mode, Some(n));
        let s = measure(link, n, copies, plan).map_err(|e| {
            // Ctrl-C also stops the peer: its failure is not the news.
            let e = if plan.stop.load(Relaxed) {
                "interrupted".to_owned()
            } else {
                e.to_string()
            };
            format!("{} {mode} {}: {e}", mech.name(), size_label(n))
        })?;
        let half = |d: Duration| (d.as_nanos() / 2) as u64;
        let secs = s.elapsed.as_secs_f64().max(1e-9);
        let msgs = 2.0 * s.rounds as f64 / secs;
        out.push(Row {
            mechanism: mech.name(),
            mode: mode.to_owned(),
            payload: n,
            iterations: s.rounds,
            p50_ns: half(percentile(&s.samples, 50.0)),
            p99_ns: half(percentile(&s.samples, 99.0)),
            min_ns: half(s.samples.first().copied().unwrap_or_default()),
            msgs_per_s: msgs,
            mib_per_s: msgs * n as f64 / f64::from(1u32 << 20),
            when: None,
        });
    }
    Ok(())
}

/// The reference for everything else: two threads of this process hand a cache line back
/// and forth (one spinning on it until the other writes it), on the CPUs of `--pin` if
/// given. One-way time = round trip / 2, timed per batch of 100 round trips. On a virtual
/// machine it changes with where the host runs the virtual CPUs, hence a measurement at
/// the start and at the end of the run.
fn cacheline(plan: &Plan, when: &'static str) -> Res<Row> {
    #[repr(align(128))]
    struct Line(AtomicU64);
    const BATCH: u64 = 100;
    let line = Line(AtomicU64::new(0));
    // Either side sets it to stop the other (failure, Ctrl-C, time is up).
    let abort = AtomicBool::new(false);
    let budget =
        (plan.budget.time / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let max_batches: u64 = 100_000;
    let mut samples = Vec::new();
    let mut elapsed = Duration::ZERO;
    std::thread::scope(|s| -> Res<()> {
        let (line, abort) = (&line, &abort);
        let other = s.spawn(move || -> Result<(), String> {
            if let Some(cpu) = plan.peer_cpu {
                if let Err(e) = pin_to(cpu) {
                    abort.store(true, Relaxed);
                    return Err(e.to_string());
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
            samples.push(t.elapsed() / BATCH as u32);
            elapsed = start.elapsed();
            if (elapsed >= budget && samples.len() >= 30) || plan.stop.load(Relaxed) {
                break;
            }
        }
        abort.store(true, Relaxed);
        match other.join() {
            Ok(r) => r.map_err(|e| format!("cache-line reference: {e}"))?,
            Err(_) => return Err("cache-line reference: the second thread panicked".into()),
        }
        plan.check_stop()
    })?;
    samples.sort_unstable();
    let rounds = samples.len() as u64 * BATCH;
    let half = |d: Duration| (d.as_nanos() / 2) as u64;
    let msgs = 2.0 * rounds as f64 / elapsed.as_secs_f64().max(1e-9);
    Ok(Row {
        mechanism: "cacheline",
        mode: "busy".into(),
        payload: 64,
        iterations: rounds,
        p50_ns: half(percentile(&samples, 50.0)),
        p99_ns: half(percentile(&samples, 99.0)),
        min_ns: half(samples.first().copied().unwrap_or_default()),
        msgs_per_s: msgs,
        mib_per_s: msgs * 64.0 / f64::from(1u32 << 20),
        when: Some(when),
    })
}

/// A peer process; killed and waited for if it is still running when dropped.
struct Peer {
    child: Child,
    what: String,
}

impl Peer {
    fn spawn(mut cmd: Command, what: String) -> Res<Peer> {
        let child = cmd
            .spawn()
            .context(|| format!("starting the {what} peer"))?;
        Ok(Peer { child, what })
    }

    /// Fails if the peer has exited.
    fn check(&mut self) -> Res<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(format!("the {} peer exited early ({st})", self.what).into()),
            Err(e) => Err(format!("checking on the {} peer: {e}", self.what).into()),
        }
    }

    /// Waits for the peer to exit (it was told to) and checks it succeeded.
    fn finish(mut self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self
                .child
                .try_wait()
                .context(|| format!("waiting for the {} peer", self.what))?;
            if let Some(st) = status {
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("the {} peer failed ({st})", self.what).into())
                };
            }
            if Instant::now() >= deadline {
                // Dropping `self` kills it.
                return Err(format!("the {} peer did not exit within 10 s", self.what).into());
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

// ----- shm ------------------------------------------------------------------------------------

type Srv = Server<NativeSystem>;

/// This process as the server; the peer a client that echoes (or frees and allocates).
struct ShmLink<'a> {
    server: &'a Srv,
    peer: PeerId,
    process: &'a mut Peer,
    plan: &'a Plan,
    cycle: bool,
    /// Spin on `try_recv` instead of waiting in the receive mode.
    poll: bool,
    /// Echo mode: the buffer going back and forth.
    buf: Option<Buffer<NativeSystem>>,
    n: usize,
    /// The tag of every message: the payload size (the cycle peer allocates that much).
    tag: u32,
}

impl ShmLink<'_> {
    /// The peer's answer; checks on the peer and on Ctrl-C while waiting.
    fn reply(&mut self) -> Res<Message<NativeSystem>> {
        let (server, process, plan) = (self.server, &mut *self.process, self.plan);
        wait_msg(
            self.poll,
            |t| server.recv_timeout(t),
            |waited| {
                process.check()?;
                plan.check_stop()?;
                if waited >= REPLY_TIMEOUT {
                    return Err(format!("no answer from the peer in {} s", waited.as_secs()).into());
                }
                Ok(())
            },
        )
    }
}

/// The next message from `recv` (a `recv_timeout`). With `poll`, spins on it with a zero
/// timeout (what `try_recv` does); otherwise waits in the receive mode, `POLL` at a time.
/// Between waits (every 2^16 polls) `tick` gets the time waited so far and may give up.
fn wait_msg<M>(
    poll: bool,
    mut recv: impl FnMut(Duration) -> shm_host::Result<Option<M>>,
    mut tick: impl FnMut(Duration) -> Res<()>,
) -> Res<M> {
    if poll {
        let mut since: Option<Instant> = None;
        let mut spins = 0u32;
        loop {
            if let Some(m) = recv(Duration::ZERO).context(|| "receiving")? {
                return Ok(m);
            }
            // One PAUSE per check (what the library's loop does 32 times per check).
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % (1 << 16) == 0 {
                let t0 = *since.get_or_insert_with(Instant::now);
                tick(t0.elapsed())?;
            }
        }
    }
    let mut waited = Duration::ZERO;
    loop {
        if let Some(m) = recv(POLL).context(|| "receiving")? {
            return Ok(m);
        }
        waited += POLL;
        tick(waited)?;
    }
}

impl Link for ShmLink<'_> {
    fn prepare(&mut self, n: usize, _rounds: u64) -> Res<()> {
        self.tag = u32::try_from(n).context(|| "payload size")?;
        if self.cycle || (self.n == n && self.buf.is_some()) {
            self.n = n;
            return Ok(());
        }
        self.buf = None; // free the previous size's buffer first
        let mut b = self
            .server
            .alloc(n)
            .context(|| format!("allocating {}", size_label(n)))?;
        b.resize(n)
            .context(|| format!("resizing to {}", size_label(n)))?;
        self.buf = Some(b);
        self.n = n;
        Ok(())
    }

    fn round(&mut self) -> Res<()> {
        if self.cycle {
            let b = self
                .server
                .alloc(self.n)
                .context(|| format!("allocating {}", size_label(self.n)))?;
            self.server
                .send(self.peer, b, self.tag)
                .map_err(|e| format!("sending: {}", e.error))?;
            let m = self.reply()?;
            if m.tag != self.tag {
                return Err(format!("answer has tag {}, expected {}", m.tag, self.tag).into());
            }
            drop(m); // frees the peer's buffer
        } else {
            let b = self.buf.take().ok_or("no buffer (prepare first)")?;
            self.server
                .send(self.peer, b, self.tag)
                .map_err(|e| format!("sending: {}", e.error))?;
            let m = self.reply()?;
            if m.buffer.len() != self.n {
                return Err(
                    format!("echo holds {} bytes, expected {}", m.buffer.len(), self.n).into(),
                );
            }
            self.buf = Some(m.buffer);
        }
        Ok(())
    }

    fn finish(&mut self) -> Res<()> {
        self.buf = None;
        let b = self.server.alloc(8).context(|| "allocating")?;
        self.server
            .send(self.peer, b, TAG_STOP)
            .map_err(|e| format!("telling the peer to stop: {}", e.error))?;
        Ok(())
    }
}

/// Accepts the peer's connection; returns its identity.
fn wait_for_client(server: &Srv, process: &mut Peer, plan: &Plan) -> Res<PeerId> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        // Receiving handles the connection request; no message can come before it.
        if let Some(m) = server
            .recv_timeout(Duration::from_millis(5))
            .context(|| "waiting for the peer to connect")?
        {
            return Err(format!("unexpected message (tag {}) from {}", m.tag, m.from).into());
        }
        while let Some(ev) = server.try_event() {
            if let ServerEvent::Connected(id) = ev {
                return Ok(id);
            }
        }
        process.check()?;
        plan.check_stop()?;
        if Instant::now() >= deadline {
            return Err(format!(
                "the peer did not connect within {} s",
                CONNECT_TIMEOUT.as_secs()
            )
            .into());
        }
    }
}

/// The shm rows of one mode (`cycle`: the alloc -> send -> recv -> free rows).
fn run_shm(plan: &Plan, mode: Mode, cycle: bool, out: &mut Output) -> Res<()> {
    let mech = if cycle {
        Mechanism::ShmCycle
    } else {
        Mechanism::Shm
    };
    out.progress(mech.name(), &mode.to_string(), None);
    let name = format!("bench-{}-{}-{mode}", std::process::id(), mech.name());
    let server = Server::create_with(
        &name,
        ServerOptions {
            size: plan.segment,
            // Keepalives are locked operations: keep them rare while measuring.
            heartbeat: Duration::from_secs(1),
            max_missed: 60,
            recv_mode: mode.recv_mode(),
            create: CreateOptions {
                prefault: true,
                ..CreateOptions::default()
            },
            ..ServerOptions::default()
        },
    )
    .context(|| format!("creating segment {name} of {}", size_label(plan.segment)))?;
    let mut cmd = plan.peer_command(mech);
    cmd.args(["--name", &name, "--mode", &mode.to_string()]);
    let mut process = Peer::spawn(cmd, format!("{} {mode}", mech.name()))?;
    let peer = wait_for_client(&server, &mut process, plan)?;
    let mut link = ShmLink {
        server: &server,
        peer,
        process: &mut process,
        plan,
        cycle,
        poll: mode == Mode::Poll,
        buf: None,
        n: 0,
        tag: 0,
    };
    run_sizes(&mut link, mech, &mode.to_string(), plan, out)?;
    link.finish()?;
    drop(link);
    process.finish()?;
    drop(server); // removes the segment
    Ok(())
}

/// The peer of the shm rows: a client echoing each buffer (or freeing it and sending a
/// fresh one of the size in its tag) until told to stop.
fn peer_shm(name: &str, mode: Mode, cycle: bool) -> Res<()> {
    let client = Client::connect_with(
        name,
        ClientOptions {
            recv_mode: mode.recv_mode(),
            ..ClientOptions::default()
        },
    )
    .context(|| format!("connecting to segment {name}"))?;
    client
        .wait_connected(CONNECT_TIMEOUT)
        .context(|| "waiting for the server to accept")?;
    #[cfg(unix)]
    let parent = std::os::unix::process::parent_id();
    loop {
        let msg = wait_msg(
            mode == Mode::Poll,
            |t| client.recv_timeout(t),
            |idle| {
                #[cfg(unix)]
                if std::os::unix::process::parent_id() != parent {
                    return Err("the bench process is gone".into());
                }
                if idle >= PEER_IDLE {
                    return Err(format!("no message for {} s", idle.as_secs()).into());
                }
                Ok(())
            },
        )?;
        let tag = msg.tag;
        if tag == TAG_STOP {
            return Ok(());
        }
        let buffer = if cycle {
            drop(msg); // free
            client
                .alloc(tag as usize)
                .context(|| format!("allocating {tag} bytes"))?
        } else {
            msg.buffer
        };
        client
            .send(buffer, tag)
            .map_err(|e| format!("sending back: {}", e.error))?;
    }
}

// ----- uds and pipe -----------------------------------------------------------------------

/// A byte stream to the peer. Each phase starts with a 16-byte header (payload size,
/// round trips; 0 round trips: exit), then the payloads go back and forth in full.
struct StreamLink<R: Read, W: Write> {
    r: R,
    w: W,
    tx: Vec<u8>,
    rx: Vec<u8>,
    n: usize,
}

impl<R: Read, W: Write> StreamLink<R, W> {
    fn new(r: R, w: W) -> Self {
        StreamLink {
            r,
            w,
            tx: Vec::new(),
            rx: Vec::new(),
            n: 0,
        }
    }

    fn header(&mut self, n: usize, rounds: u64) -> Res<()> {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&(n as u64).to_le_bytes());
        h[8..].copy_from_slice(&rounds.to_le_bytes());
        self.w.write_all(&h).context(|| "writing to the peer")?;
        Ok(())
    }
}

impl<R: Read, W: Write> Link for StreamLink<R, W> {
    fn prepare(&mut self, n: usize, rounds: u64) -> Res<()> {
        if self.tx.len() < n {
            // Written now, so that the pages exist before anything is timed.
            self.tx = vec![0xa5; n];
            self.rx = vec![0x5a; n];
        }
        self.n = n;
        self.header(n, rounds)
    }

    fn round(&mut self) -> Res<()> {
        let n = self.n;
        self.w
            .write_all(&self.tx[..n])
            .context(|| "writing to the peer")?;
        self.r.read_exact(&mut self.rx[..n]).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "reading the echo: the peer closed its end (did it exit?)".to_owned()
            } else {
                format!("reading the echo: {e}")
            }
        })?;
        Ok(())
    }

    fn finish(&mut self) -> Res<()> {
        self.header(0, 0)
    }
}

/// The peer of the stream rows: echoes each phase's payloads until told to stop.
fn echo_stream(mut r: impl Read, mut w: impl Write) -> Res<()> {
    let mut buf = Vec::new();
    loop {
        let mut h = [0u8; 16];
        match r.read_exact(&mut h) {
            Ok(()) => {}
            // The bench process went away between phases.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("reading: {e}").into()),
        }
        let n = usize::try_from(le_u64(&h[..8])?)?;
        let rounds = le_u64(&h[8..])?;
        if rounds == 0 {
            return Ok(());
        }
        if n > MAX_PAYLOAD {
            return Err(format!("payload of {n} bytes announced (corrupt stream?)").into());
        }
        if buf.len() < n {
            buf = vec![0u8; n];
        }
        for _ in 0..rounds {
            r.read_exact(&mut buf[..n]).context(|| "reading")?;
            w.write_all(&buf[..n]).context(|| "writing")?;
        }
    }
}

/// Deletes a file when dropped.
#[cfg(unix)]
struct RemoveOnDrop(PathBuf);

#[cfg(unix)]
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The uds rows: a listener at a temporary path, the peer connects to it.
#[cfg(unix)]
fn run_uds(plan: &Plan, out: &mut Output) -> Res<()> {
    use std::os::unix::net::UnixListener;

    out.progress("uds", "blocking", None);
    let path = std::env::temp_dir().join(format!("shmipc-bench-{}.sock", std::process::id()));
    // A leftover of an earlier process with our pid.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).context(|| format!("binding {}", path.display()))?;
    let remove = RemoveOnDrop(path.clone());
    listener
        .set_nonblocking(true)
        .context(|| "making the listener non-blocking")?;
    let mut cmd = plan.peer_command(Mechanism::Uds);
    cmd.arg("--socket").arg(&path);
    let mut process = Peer::spawn(cmd, "uds".into())?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                process.check()?;
                plan.check_stop()?;
                if Instant::now() >= deadline {
                    return Err("the uds peer did not connect within 10 s".into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("accepting on {}: {e}", path.display()).into()),
        }
    };
    drop(remove);
    drop(listener);
    stream
        .set_nonblocking(false)
        .context(|| "making the socket blocking")?;
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .context(|| "setting a read timeout")?;
    stream
        .set_write_timeout(Some(REPLY_TIMEOUT))
        .context(|| "setting a write timeout")?;
    let r = stream.try_clone().context(|| "cloning the socket")?;
    let mut link = StreamLink::new(r, stream);
    run_sizes(&mut link, Mechanism::Uds, "blocking", plan, out)?;
    link.finish()?;
    drop(link);
    process.finish()
}

#[cfg(unix)]
fn peer_uds(path: &Path) -> Res<()> {
    let s = std::os::unix::net::UnixStream::connect(path)
        .context(|| format!("connecting to {}", path.display()))?;
    let r = s.try_clone().context(|| "cloning the socket")?;
    echo_stream(r, s)
}

#[cfg(not(unix))]
fn peer_uds(_: &Path) -> Res<()> {
    Err("Unix-domain sockets are not measured on this system".into())
}

/// The pipe rows: the peer's stdin and stdout.
fn run_pipe(plan: &Plan, out: &mut Output) -> Res<()> {
    out.progress("pipe", "blocking", None);
    let mut cmd = plan.peer_command(Mechanism::Pipe);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut process = Peer::spawn(cmd, "pipe".into())?;
    let w = process
        .child
        .stdin
        .take()
        .ok_or("the pipe peer has no stdin")?;
    let r = process
        .child
        .stdout
        .take()
        .ok_or("the pipe peer has no stdout")?;
    let mut link = StreamLink::new(r, w);
    run_sizes(&mut link, Mechanism::Pipe, "blocking", plan, out)?;
    link.finish()?;
    drop(link);
    process.finish()
}

/// Unbuffered handles on this process's stdin and stdout (std's are buffered).
#[cfg(unix)]
fn raw_stdio() -> Res<(std::fs::File, std::fs::File)> {
    use std::os::fd::AsFd;
    let r = std::io::stdin().as_fd().try_clone_to_owned()?;
    let w = std::io::stdout().as_fd().try_clone_to_owned()?;
    Ok((r.into(), w.into()))
}

#[cfg(windows)]
fn raw_stdio() -> Res<(std::fs::File, std::fs::File)> {
    use std::os::windows::io::AsHandle;
    let r = std::io::stdin().as_handle().try_clone_to_owned()?;
    let w = std::io::stdout().as_handle().try_clone_to_owned()?;
    Ok((r.into(), w.into()))
}

// ----- entry points -------------------------------------------------------------------------

/// Runs the benchmark.
pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let stop = shm_host::install_stop_handler()?;
    let plan = Plan::new(&args, stop)?;
    if let Some((me, _)) = args.pin {
        pin_to(me)?;
    }
    let mut out = Output::new(plan.json, plan.rows());
    let result = (|| -> Res<()> {
        out.progress("cacheline", "busy", None);
        let r = cacheline(&plan, "start")?;
        out.push_reference(r);
        for &mech in &plan.mechanisms {
            match mech {
                Mechanism::Shm => {
                    for &mode in &plan.modes {
                        run_shm(&plan, mode, false, &mut out)?;
                    }
                }
                Mechanism::ShmCycle => run_shm(&plan, plan.cycle_mode(), true, &mut out)?,
                #[cfg(unix)]
                Mechanism::Uds => run_uds(&plan, &mut out)?,
                #[cfg(not(unix))]
                Mechanism::Uds => out.note(
                    "Unix-domain sockets are not measured on this system (only shm and pipe)"
                        .into(),
                ),
                Mechanism::Pipe => run_pipe(&plan, &mut out)?,
            }
        }
        let r = cacheline(&plan, "end")?;
        out.push_reference(r);
        Ok(())
    })();
    // Whatever was measured is shown, also when a later row failed.
    out.finish(&plan);
    result
}

/// Runs the peer.
pub fn run_peer(args: PeerArgs) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(cpu) = args.cpu {
        pin_to(cpu)?;
    }
    match args.mechanism {
        Mechanism::Shm | Mechanism::ShmCycle => {
            let name = args.name.as_deref().ok_or("--name is required")?;
            peer_shm(name, args.mode, args.mechanism == Mechanism::ShmCycle)
        }
        Mechanism::Uds => peer_uds(args.socket.as_deref().ok_or("--socket is required")?),
        Mechanism::Pipe => {
            let (r, w) = raw_stdio()?;
            echo_stream(r, w)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes go from the minimum by powers of the step to the maximum.
    #[test]
    fn size_steps() {
        let v = sizes(8, 64 << 20, 4);
        assert_eq!(v.first(), Some(&8));
        assert_eq!(v.get(1), Some(&64));
        assert!(v.contains(&(16 << 20)));
        assert_eq!(v.last(), Some(&(64 << 20)));
        assert_eq!(v.len(), 12);
        assert_eq!(
            sizes(8, 16 << 20, 64),
            vec![8, 64, 4096, 256 << 10, 16 << 20]
        );
        assert_eq!(sizes(100, 100, 4), vec![100]);
        assert_eq!(sizes(1, 8, 4), vec![1, 4, 8]);
    }

    /// Durations and CPU pairs parse, and bad ones are refused with a message.
    #[test]
    fn arguments() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1 fortnight").is_err());
        assert_eq!(parse_pin("0,1"), Ok((0, 1)));
        assert!(parse_pin("0").is_err());
        assert_eq!(fmt_ns(312), "312 ns");
        assert_eq!(fmt_ns(12_345), "12.3 us");
        assert_eq!(size_label(16 << 20), "16 MiB");
    }
}
