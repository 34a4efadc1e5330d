//! A client stopped with SIGSTOP past the heartbeat limit is unresponsive, not dead: the
//! server disconnects it but its memory stays its own until it exits, and after SIGCONT
//! every operation it tries fails with `Disconnected` instead of landing in another
//! client's memory.
#![cfg(unix)]
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::time::{Duration, Instant};

use shm_tests::{peer_exe, unique_name, Lines, Peer, SegmentGuard};

const HEARTBEAT_MS: u64 = 20;
/// Missed keepalives before a client is unresponsive: 500 ms at 20 ms beats, far above what
/// a live client needs on a loaded machine (it takes them every 10 ms).
const MAX_MISSED: u64 = 25;
/// Bytes each client holds, with a pattern of its own.
const HELD: usize = 65536;
/// Hang guard for one answer.
const ANSWER: Duration = Duration::from_secs(60);

/// A peer driven over stdin/stdout lines.
struct Driven {
    peer: Peer,
    lines: Lines,
    who: &'static str,
}

impl Driven {
    /// Sends `cmd`, returns the first line starting with `reply` (other lines - the
    /// collector's messages and events - are shown on stderr).
    fn ask(&mut self, cmd: &str, reply: &str) -> String {
        self.peer.write_line(cmd);
        let who = self.who;
        let line = self.lines.expect(
            ANSWER,
            &format!("{who}: answer to {cmd:?}"),
            |l| l.starts_with(reply),
            |l| eprintln!("{who}: {l}"),
        );
        eprintln!("{who}: {cmd} -> {line}");
        line
    }

    fn pid(&self) -> libc::pid_t {
        self.peer.child.id() as libc::pid_t
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a signal to our own child process (not yet reaped: the `Peer` owns it).
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({}, {sig})", self.pid());
    }
}

/// Stops `a` with SIGSTOP at a moment it does not hold the region lock, and returns once
/// it is stopped. A process stopped while it holds the lock blocks every process of the
/// segment until it continues (alive is alive: its lock is not broken), which is not what
/// these tests are about; so a stop that lands inside one of `a`'s operations (its
/// keepalive thread takes the lock every few milliseconds) is undone and tried again.
fn stop_outside_lock(a: &Driven, server: &mut Driven) {
    for attempt in 0..100u64 {
        a.signal(libc::SIGSTOP);
        let mut status = 0;
        // SAFETY: waits for a state change of our own child; WUNTRACED reports the stop
        // without reaping it.
        let r = unsafe { libc::waitpid(a.pid(), &mut status, libc::WUNTRACED) };
        assert!(
            r == a.pid() && libc::WIFSTOPPED(status),
            "A stopped ({status:#x})"
        );
        if server.ask("holder", "holder") != format!("holder {}", a.pid()) {
            return;
        }
        a.signal(libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(1 + attempt));
    }
    panic!("A held the region lock at each of 100 stops");
}

/// A driven client of segment `name`; with `cached`, through a buffer cache.
fn driven(name: &str, who: &'static str, cached: bool) -> (Driven, String) {
    let args: &[&str] = if cached {
        &["driven", name, "cached"]
    } else {
        &["driven", name]
    };
    let mut peer = Peer::spawn_captured(peer_exe!(), args);
    let lines = peer.lines();
    let first = lines
        .next_within(ANSWER)
        .unwrap_or_else(|| panic!("{who} did not connect"));
    let w: Vec<&str> = first.split_whitespace().collect();
    assert!(w.len() == 3 && w[0] == "connected", "{who}: {first}");
    (Driven { peer, lines, who }, w[1].to_owned())
}

/// A collector server on segment `name` with this file's heartbeat settings; with `kill`,
/// it kills clients that stop answering keepalives.
fn collector(name: &str, kill: bool) -> Driven {
    let (beat, missed) = (HEARTBEAT_MS.to_string(), MAX_MISSED.to_string());
    let mut args = vec![
        "collector",
        name,
        "--heartbeat",
        &beat,
        "--max-missed",
        &missed,
    ];
    if kill {
        args.extend(["--kill-unresponsive", "1"]);
    }
    let mut peer = Peer::spawn(peer_exe!(), &args);
    let lines = peer.lines();
    let first = lines.next_within(ANSWER).expect("server started");
    assert_eq!(first, "serving 1");
    Driven {
        peer,
        lines,
        who: "server",
    }
}

/// `available N min_free M check ...` -> (N, check text).
fn stats(c: &mut Driven) -> (u64, String) {
    let line = c.ask("stats", "available ");
    let w: Vec<&str> = line.splitn(6, ' ').collect();
    assert_eq!(w.len(), 6, "{line}");
    (w[1].parse().unwrap(), w[5].to_owned())
}

/// Bytes the segment records for process `pid`, if it is registered.
fn held_by(c: &mut Driven, pid: libc::pid_t) -> Option<u64> {
    held_and_cached_by(c, pid).map(|(held, _)| held)
}

/// Bytes the segment records for process `pid` and the bytes of those in its buffer
/// cache, if it is registered.
fn held_and_cached_by(c: &mut Driven, pid: libc::pid_t) -> Option<(u64, u64)> {
    let line = c.ask("procs", "procs");
    assert!(!line.contains("error("), "the process list failed: {line}");
    line.split_whitespace().skip(1).find_map(|p| {
        let f: Vec<&str> = p.split(':').collect();
        (f.len() == 4 && f[0] == pid.to_string())
            .then(|| (f[1].parse().unwrap(), f[3].parse().unwrap()))
    })
}

/// Client A holds 64 KiB with a known pattern and is SIGSTOPped for far longer than
/// heartbeat x max_missed; meanwhile client B connects, exchanges messages and holds 64 KiB
/// of its own. Invariants:
/// - the server stops treating A as a client (it is unresponsive), but A's memory is not
///   reclaimed while A is stopped: A stays registered with its bytes, and the server's
///   available bytes do not go back up;
/// - after SIGCONT, A's held buffer still has its own content, and writing to it changes
///   nothing of B's; every operation of A (send of the buffer it holds, alloc, alloc + send)
///   fails with `Disconnected`;
/// - B's buffer is unchanged and B keeps working (echo, send) throughout;
/// - A's memory comes back only after A exits; once A and B are gone, available bytes are
///   back to the value from before any client connected and `check()` passes; after the
///   server quits, its segment is gone from `/dev/shm`.
#[test]
fn stopped_client_is_unresponsive_not_dead() {
    stopped_client("stopped", false);
}

/// The same with buffer caches on the clients, A's holding blocks when it stops. Also:
/// while A is stopped, the blocks in its cache stay its own and in its cache (nobody
/// drains or reclaims a live process's cache); they come back when A exits.
#[test]
fn stopped_client_with_a_buffer_cache_is_unresponsive_not_dead() {
    stopped_client("stopped-cached", true);
}

fn stopped_client(label: &str, cached: bool) {
    let name = unique_name(label);
    let _guard = SegmentGuard(name.clone());
    let mut failures: Vec<String> = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            eprintln!("FAILED: {what}");
            failures.push(what);
        }
    };

    let mut server = collector(&name, false);
    let (start, check) = stats(&mut server);
    assert_eq!(check, "ok");

    // A connects and holds a buffer (with a cache: after echoes that leave blocks in it).
    let (mut a, a_id) = driven(&name, "A", cached);
    if cached {
        for (i, size) in [100, 1000, 4000, 20000].iter().enumerate() {
            assert_eq!(a.ask(&format!("echo {size} {i}"), "echo"), "echo ok");
        }
    }
    assert_eq!(a.ask(&format!("hold {HELD} 0x5a"), "hold"), "hold ok");
    assert_eq!(a.ask("verify", "verify"), format!("verify ok {HELD}"));
    let (with_a, _) = stats(&mut server);
    assert!(start - with_a >= HELD as u64, "A's buffer is counted");
    let a_pid = a.pid();
    let a_bytes = held_by(&mut server, a_pid).expect("A registered");
    assert!(a_bytes >= HELD as u64);

    // A stops, for well past heartbeat x max_missed; the server gives up on it.
    stop_outside_lock(&a, &mut server);
    let (_, a_cached) = held_and_cached_by(&mut server, a_pid).expect("A registered");
    assert_eq!(
        cached,
        a_cached > 0,
        "A's cache holds {a_cached} bytes (caches on: {cached})"
    );
    std::thread::sleep(Duration::from_millis(3 * HEARTBEAT_MS * MAX_MISSED));
    let end = Instant::now() + ANSWER;
    loop {
        let clients = server.ask("clients", "clients");
        if !clients.split_whitespace().any(|c| c == a_id) {
            break;
        }
        assert!(
            Instant::now() < end,
            "the server still lists the stopped client A ({a_id}) as a client"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Its memory is still its own.
    let (stopped, _) = stats(&mut server);
    expect(
        stopped <= with_a,
        format!("while A is stopped, available bytes rose from {with_a} to {stopped} (A's memory was reclaimed)"),
    );
    let a_now = held_and_cached_by(&mut server, a_pid);
    expect(
        a_now.is_some_and(|(b, c)| b >= HELD as u64 + c && c == a_cached),
        format!(
            "while A is stopped, the segment records {a_now:?} bytes (held, cached) for it \
             (held {a_bytes}, {a_cached} cached when it stopped)"
        ),
    );

    // B works meanwhile.
    let (mut b, _) = driven(&name, "B", cached);
    expect(
        b.ask("echo 4096 1", "echo") == "echo ok",
        "B's first echo".into(),
    );
    assert_eq!(b.ask(&format!("hold {HELD} 0xb7"), "hold"), "hold ok");
    expect(
        b.ask("verify", "verify") == format!("verify ok {HELD}"),
        "B's buffer right after filling it".into(),
    );
    let (both, _) = stats(&mut server);
    expect(
        both + HELD as u64 <= with_a,
        format!(
            "with A stopped and B holding {HELD} bytes: available {both}, with A alone {with_a}"
        ),
    );
    let a_now = held_and_cached_by(&mut server, a_pid);
    expect(
        a_now.is_some_and(|(b, c)| b >= HELD as u64 + c && c == a_cached),
        format!(
            "after B came, the segment records {a_now:?} bytes (held, cached) for the stopped A"
        ),
    );

    // A resumes. Its own buffer is as it left it, and writing to it touches nobody else.
    a.signal(libc::SIGCONT);
    let got = a.ask("verify", "verify");
    expect(
        got == format!("verify ok {HELD}"),
        format!("resumed A's own buffer: {got:?} (its memory was given to someone else)"),
    );
    let got = a.ask("write 0xee", "write");
    expect(
        got == "write ok",
        format!("resumed A writing its buffer: {got:?}"),
    );
    let got = b.ask("verify", "verify");
    expect(
        got == format!("verify ok {HELD}"),
        format!("B's buffer after the resumed A wrote its own: {got:?}"),
    );
    // It is disconnected, whatever it tries.
    for (cmd, reply) in [
        ("sendheld 5", "sendheld"),
        ("alloc 100", "alloc"),
        ("send 100 6", "send"),
    ] {
        let got = a.ask(cmd, reply);
        expect(
            got.starts_with(&format!("{reply} err Disconnected"))
                || got.starts_with(&format!("{reply} alloc-err Disconnected")),
            format!("resumed A: {cmd:?} gave {got:?}, expected Disconnected"),
        );
    }
    let got = b.ask("echo 4096 2", "echo");
    expect(
        got == "echo ok",
        format!("B's echo after A resumed: {got:?}"),
    );
    let got = b.ask("send 1000 3", "send");
    expect(
        got == "send ok",
        format!("B's send after A resumed: {got:?}"),
    );
    let a_now = held_by(&mut server, a_pid);
    expect(
        a_now.is_some_and(|b| b >= HELD as u64),
        format!("resumed (disconnected, alive) A: the segment records {a_now:?} bytes for it"),
    );

    // A exits: now, and only now, its memory comes back.
    assert_eq!(a.ask("quit", "bye"), "bye");
    let st = a.peer.wait(ANSWER);
    let (_, a_err) = a.peer.finish_output();
    expect(
        st.success() && a_err.trim().is_empty(),
        format!("A's exit: {st}, stderr {a_err:?}"),
    );
    let mut polls = 0;
    while held_by(&mut server, a_pid).is_some() && polls < 600 {
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    expect(polls < 600, "A is still registered after exiting".into());
    let got = b.ask("verify", "verify");
    expect(
        got == format!("verify ok {HELD}"),
        format!("B's buffer after A exited: {got:?}"),
    );
    let got = b.ask("echo 4096 4", "echo");
    expect(
        got == "echo ok",
        format!("B's echo after A exited: {got:?}"),
    );
    assert_eq!(b.ask("quit", "bye"), "bye");
    let st = b.peer.wait(ANSWER);
    let (_, b_err) = b.peer.finish_output();
    expect(
        st.success() && b_err.trim().is_empty(),
        format!("B's exit: {st}, stderr {b_err:?}"),
    );

    let mut polls = 0;
    let (end_avail, check) = loop {
        let (avail, check) = stats(&mut server);
        polls += 1;
        if avail == start || polls >= 600 {
            break (avail, check);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    expect(
        end_avail == start,
        format!("after A and B exited: available {end_avail}, before any client {start}"),
    );
    expect(check == "ok", format!("check at the end: {check}"));

    assert_eq!(server.ask("quit", "bye"), "bye");
    expect(
        server.peer.wait(ANSWER).success(),
        "server exit status".into(),
    );
    #[cfg(target_os = "linux")]
    {
        let path = shm_tests::shm_path(&name);
        expect(
            !path.exists(),
            format!("{} remains after the server quit", path.display()),
        );
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// With `ServerOptions::kill_unresponsive`, a client stopped past the heartbeat limit is
/// killed by the server (Linux confirms it is the process holding the client's liveness
/// mark before signalling), and its memory comes back once it is dead: available bytes
/// return to their value from before it connected.
#[cfg(target_os = "linux")]
#[test]
fn an_unresponsive_client_is_killed_when_asked() {
    let name = unique_name("killed");
    let _guard = SegmentGuard(name.clone());
    let mut server = collector(&name, true);
    let (start, _) = stats(&mut server);
    let (mut a, _) = driven(&name, "A", false);
    assert_eq!(a.ask(&format!("hold {HELD} 0x5a"), "hold"), "hold ok");
    stop_outside_lock(&a, &mut server);
    let status = a.peer.wait(ANSWER);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the stopped client was killed: {status}"
    );
    let mut polls = 0;
    let (end, check) = loop {
        let (avail, check) = stats(&mut server);
        polls += 1;
        if avail == start || polls >= 600 {
            break (avail, check);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(end, start, "the killed client's memory came back");
    assert_eq!(check, "ok");
    assert_eq!(server.ask("quit", "bye"), "bye");
    assert!(server.peer.wait(ANSWER).success());
}
