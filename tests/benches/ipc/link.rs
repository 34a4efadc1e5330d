//! What every ping-pong row has in common: the peer process at the other end, waiting for
//! an answer without hanging, and the per-link message count checked against the peer's.

use std::io::{BufRead, Write};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use shm_tests::Peer;

/// The bench's errors: what failed, in words.
pub type Res<T> = Result<T, String>;

/// Longest wait for one answer or for a peer to start: a hang, not a timing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// One end of a ping-pong with a peer process.
pub trait PingPong {
    /// One round trip of `len`-byte messages: message `seq` out, its answer back, checked.
    fn round_trip(&mut self, len: usize, seq: u64) -> Res<()>;
    /// Ends a measurement: the peer stops spinning and waits for [`resume`]. Returns once
    /// the peer has seen the pause (so that no later message can overtake it).
    fn pause(&mut self) -> Res<()>;
    /// Tells the peer to exit (it then prints `done RECEIVED`); after a [`resume`].
    fn stop(&mut self) -> Res<()>;
    /// The peer process.
    fn peer(&mut self) -> &mut Peer;
    /// Round trips timed together (1: each one; the cache line's are shorter than the
    /// clock's resolution is useful for, so they are timed in batches).
    fn batch(&self) -> u32 {
        1
    }
}

/// The CPUs this process (the first) and its peers (the second) run on, as with
/// `shmipc bench --pin 0,1`. Unpinned, a peer woken from its wait between measurements is
/// often placed on this process's CPU, and two spinning processes of low priority
/// (`nice`) sharing one CPU hand over at the scheduler's pace, not the transport's.
pub const CPUS: (usize, usize) = (0, 1);

/// Whether [`pin`] succeeded: peers are then started on [`CPUS`]`.1`.
static PINNED: AtomicBool = AtomicBool::new(false);

/// Pins this thread (and the threads and processes it starts later) to [`CPUS`]`.0`,
/// where the system offers it and has both CPUs; says so where not. Returns whether it
/// did (trying the peers' CPU first, so that a peer's start cannot fail on it later).
pub fn pin() -> bool {
    let pin = shm_host::cli::pin_current_thread;
    match pin(CPUS.1).and_then(|()| pin(CPUS.0)) {
        Ok(()) => {
            PINNED.store(true, Relaxed);
            true
        }
        Err(e) => {
            eprintln!("(not pinned to CPUs {CPUS:?}: {e})");
            false
        }
    }
}

/// Starts this bench binary again as a peer: `EXE --peer ROLE ARGS...`, on [`CPUS`]`.1`
/// if this process is pinned (a child inherits the CPUs of the thread that starts it).
pub fn spawn_peer(role: &str, args: &[&str]) -> Res<Peer> {
    let pinned = PINNED.load(Relaxed);
    if pinned {
        shm_host::cli::pin_current_thread(CPUS.1).map_err(|e| format!("pinning: {e}"))?;
    }
    let peer = start_peer(role, args);
    if pinned {
        shm_host::cli::pin_current_thread(CPUS.0).map_err(|e| format!("pinning: {e}"))?;
    }
    peer
}

fn start_peer(role: &str, args: &[&str]) -> Res<Peer> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let exe = exe
        .to_str()
        .ok_or_else(|| format!("executable path {} is not UTF-8", exe.display()))?
        .to_owned();
    let mut all = vec!["--peer", role];
    all.extend_from_slice(args);
    Ok(Peer::spawn(&exe, &all))
}

/// Fails if `peer` has exited.
pub fn check_alive(peer: &mut Peer) -> Res<()> {
    match peer.child.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(st)) => Err(format!("the peer exited early ({st})")),
        Err(e) => Err(format!("checking on the peer: {e}")),
    }
}

/// Calls `poll` in a tight loop until it gives a value. Every 4096 calls it checks that
/// the peer still runs and that [`PATIENCE`] has not run out.
pub fn spin_until<T>(peer: &mut Peer, mut poll: impl FnMut() -> Res<Option<T>>) -> Res<T> {
    let mut since: Option<Instant> = None;
    let mut spins = 0u32;
    loop {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(4096) {
            let t0 = *since.get_or_insert_with(Instant::now);
            check_alive(peer)?;
            if t0.elapsed() > PATIENCE {
                return Err(format!("no answer in {} s", PATIENCE.as_secs()));
            }
        }
    }
}

/// A peer's last line, `done RECEIVED`, checked against the `sent` data messages; then
/// its exit status. Waits at most [`PATIENCE`] for each (then kills the peer).
pub fn finish_peer(peer: &mut Peer, sent: u64) -> Res<()> {
    let Some(line) = peer.lines().next_within(PATIENCE) else {
        let status = wait_exit(peer)?;
        return Err(format!(
            "the peer exited ({status}) without a `done N` line"
        ));
    };
    let got: Option<u64> = line.strip_prefix("done ").and_then(|n| n.parse().ok());
    let status = wait_exit(peer)?;
    match got {
        Some(n) if n == sent && status.success() => Ok(()),
        Some(n) => Err(format!(
            "the peer received {n} messages of the {sent} sent, and exited with {status}"
        )),
        None => Err(format!(
            "the peer ended with {line:?} instead of `done N` ({status})"
        )),
    }
}

/// Waits for the peer to exit (it was told to), at most [`PATIENCE`].
pub fn wait_exit(peer: &mut Peer) -> Res<ExitStatus> {
    let end = Instant::now() + PATIENCE;
    loop {
        if let Some(st) = peer.child.try_wait().map_err(|e| e.to_string())? {
            return Ok(st);
        }
        if Instant::now() > end {
            peer.kill();
            return Err("the peer did not exit".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One token per [`resume`] line the bench wrote to this peer's stdin, passed on by
/// [`exit_with_parent`]'s thread to [`wait_resume`].
static RESUMES: OnceLock<Mutex<Receiver<()>>> = OnceLock::new();

/// The line that lets a paused peer spin again (see [`resume`]).
const RESUME: &str = "resume";

/// In a peer: ends this process once the bench's end of its stdin closes (the bench
/// exited or was killed), so that no peer is left spinning; until then, passes each
/// [`resume`] to [`wait_resume`].
pub fn exit_with_parent() {
    let (tx, rx) = mpsc::channel();
    let _ = RESUMES.set(Mutex::new(rx));
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l == RESUME => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        std::process::exit(3);
    });
}

/// Lets `peer` out of its [`wait_resume`]: before a measurement, and before telling it to
/// stop. Every peer waits once at its start and once after each pause, which its
/// [`PingPong::pause`] makes sure it has seen, so resumes and waits pair up.
pub fn resume(peer: &mut Peer) -> Res<()> {
    let stdin = peer.child.stdin.as_mut().ok_or("the peer has no stdin")?;
    let line = format!("{RESUME}\n");
    if let Err(e) = stdin.write_all(line.as_bytes()) {
        check_alive(peer)?;
        return Err(format!("resuming the peer: {e}"));
    }
    Ok(())
}

/// In a peer: blocks until the bench calls [`resume`]. A peer waits here at its start and
/// after every pause, so that the idle peers of the other rows (all peers share one CPU)
/// do not poll on the CPU where the measured one spins (our clients' keepalive threads
/// still wake there, every 500 ms). When idle peers polled every 100 µs instead, the
/// p99 of every row was several times higher (see the README).
pub fn wait_resume() -> Res<()> {
    let rx = RESUMES
        .get()
        .ok_or("wait_resume before exit_with_parent")?
        .lock()
        .map_err(|_| "resume channel poisoned")?;
    rx.recv().map_err(|_| "the stdin thread ended".to_owned())
}

/// A file name for this run's shared objects (segment names, mapping files): unique to
/// this bench process and `what`.
pub fn unique(what: &str) -> String {
    format!("ipc-bench-{}-{what}", std::process::id())
}
