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
//! - `uds` (a Unix-domain stream socket, where the system has them: Linux, Windows 10 and
//!   later; elsewhere a note says it is skipped) and `pipe` (the peer's stdin and
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
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use shm_host::RecvMode;

use crate::util::{parse_duration, parse_size};

mod measure;
mod plan;
mod report;
mod shm;
mod stream;

use plan::Plan;
use report::Output;

/// The bench's errors: what failed, with what was being done (`{:#}` shows the chain).
type Res<T> = anyhow::Result<T>;

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
    /// A Unix-domain stream socket (where the system has them).
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

/// Parses `A,B` (two CPU numbers).
fn parse_pin(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?}: give two CPU numbers, e.g. 0,1");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let a = a.trim().parse().map_err(|_| bad())?;
    let b = b.trim().parse().map_err(|_| bad())?;
    Ok((a, b))
}

/// Pins the calling thread (and the threads it starts later) to `cpu`, where the system
/// offers it (it says so where not).
fn pin_to(cpu: usize) -> Res<()> {
    shm_host::cli::pin_current_thread(cpu).with_context(|| format!("pinning to CPU {cpu}"))
}

// ----- entry points -------------------------------------------------------------------------

/// Runs the benchmark.
pub fn run(args: Args) -> Res<()> {
    let stop = shm_host::install_stop_handler()?;
    let plan = Plan::new(&args, stop)?;
    if let Some((me, _)) = args.pin {
        pin_to(me)?;
    }
    let mut out = Output::new(plan.json, plan.rows());
    let result = (|| -> Res<()> {
        out.progress("cacheline", "busy", None);
        let r = measure::cacheline(&plan, "start")?;
        out.push_reference(r);
        for &mech in &plan.mechanisms {
            match mech {
                Mechanism::Shm => {
                    for &mode in &plan.modes {
                        shm::run_shm(&plan, mode, false, &mut out)?;
                    }
                }
                Mechanism::ShmCycle => shm::run_shm(&plan, plan.cycle_mode(), true, &mut out)?,
                Mechanism::Uds => stream::run_uds(&plan, &mut out)?,
                Mechanism::Pipe => stream::run_pipe(&plan, &mut out)?,
            }
        }
        let r = measure::cacheline(&plan, "end")?;
        out.push_reference(r);
        Ok(())
    })();
    // Whatever was measured is shown, also when a later row failed.
    out.finish(&plan);
    result
}

/// Runs the peer.
pub fn run_peer(args: PeerArgs) -> Res<()> {
    if let Some(cpu) = args.cpu {
        pin_to(cpu)?;
    }
    match args.mechanism {
        Mechanism::Shm | Mechanism::ShmCycle => {
            let name = args.name.as_deref().context("--name is required")?;
            shm::peer_shm(name, args.mode, args.mechanism == Mechanism::ShmCycle)
        }
        Mechanism::Uds => stream::peer_uds(args.socket.as_deref().context("--socket is required")?),
        Mechanism::Pipe => stream::peer_pipe(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU pairs parse, and bad ones are refused with a message.
    #[test]
    fn arguments() {
        assert_eq!(parse_pin("0,1"), Ok((0, 1)));
        assert!(parse_pin("0").is_err());
    }
}
