//! Churn with real processes in a default-size (16 MiB) segment: many clients come and go,
//! some are SIGKILLed (TerminateProcess on Windows) at random moments, and nothing is
//! lost, duplicated or corrupted.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use shm_tests::{churn, peer_exe, unique_name, Lines, Peer, Rng, SegmentGuard};

/// Clients kept running at once.
const ALIVE: usize = 22;
/// Messages per client.
const PER_CLIENT: u32 = 12;
/// Completed sends to reach before no more clients are started (fewer where processes
/// are slow to start, under Wine).
const TARGET_SENDS: usize = if cfg!(windows) { 1000 } else { 3000 };
/// Bytes of received messages the collector keeps (so the segment fills up).
const HOLD: usize = 13 << 20;
/// Hang guard for the whole run.
const LIMIT: Duration = Duration::from_secs(120);

/// What the collector reported for one message.
#[derive(Debug)]
struct Arrival {
    tag: u32,
    len: usize,
    sum: u32,
    /// Length claimed by the header.
    header_len: u32,
}

/// Everything read from the collector so far.
#[derive(Default)]
struct Collected {
    /// By (client, seq) from the message header; more than one entry is a duplicate.
    arrivals: HashMap<(u32, u32), Vec<Arrival>>,
    /// Messages without a churn header, collector errors, unknown lines.
    bad: Vec<String>,
    connected_now: i64,
    max_connected: i64,
    connected_total: u64,
}

impl Collected {
    fn take(&mut self, line: &str) -> Option<String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.first().copied() {
            Some("msg") if w.len() == 8 => {
                let parsed = (|| {
                    let tag: u32 = w[2].parse().ok()?;
                    let len: usize = w[3].parse().ok()?;
                    let sum = u32::from_str_radix(w[4].trim_start_matches("0x"), 16).ok()?;
                    let client: u32 = w[5].parse().ok()?;
                    let seq: u32 = w[6].parse().ok()?;
                    let header_len: u32 = w[7].parse().ok()?;
                    Some((client, seq, tag, len, sum, header_len))
                })();
                match parsed {
                    Some((client, seq, tag, len, sum, header_len)) => {
                        self.arrivals
                            .entry((client, seq))
                            .or_default()
                            .push(Arrival {
                                tag,
                                len,
                                sum,
                                header_len,
                            });
                    }
                    None => self.bad.push(line.to_owned()),
                }
                None
            }
            Some("event") => {
                match w.get(1).copied() {
                    Some("connected") => {
                        self.connected_now += 1;
                        self.connected_total += 1;
                        self.max_connected = self.max_connected.max(self.connected_now);
                    }
                    Some("disconnected" | "died") => self.connected_now -= 1,
                    _ => {}
                }
                None
            }
            Some("available" | "bye" | "clients" | "procs") => Some(line.to_owned()),
            _ => {
                self.bad.push(line.to_owned());
                None
            }
        }
    }

    /// Reads what is waiting; returns the first reply (non-message) line, if any.
    fn drain(&mut self, lines: &Lines) -> Option<String> {
        let mut reply = None;
        while let Ok(line) = lines.try_next() {
            if let Some(r) = self.take(&line) {
                reply.get_or_insert(r);
            }
        }
        reply
    }

    /// Reads until a reply line (within a hang guard).
    fn reply(&mut self, lines: &Lines, what: &str) -> String {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = lines
                .next_within(left)
                .unwrap_or_else(|| panic!("collector did not answer {what}"));
            if let Some(r) = self.take(&line) {
                return r;
            }
        }
    }
}

/// `available N min_free M check ...` -> (N, M, check text).
fn parse_stats(line: &str) -> (u64, u64, String) {
    let w: Vec<&str> = line.splitn(6, ' ').collect();
    assert!(
        w.len() == 6 && w[0] == "available" && w[2] == "min_free" && w[4] == "check",
        "bad stats line {line:?}"
    );
    (
        w[1].parse().unwrap_or_else(|_| panic!("{line}")),
        w[3].parse().unwrap_or_else(|_| panic!("{line}")),
        w[5].to_owned(),
    )
}

/// A running client.
struct Running {
    id: u32,
    peer: Peer,
    /// How long after its start signal to SIGKILL it, if it is one of the victims.
    kill_after: Option<Duration>,
    /// When to SIGKILL it (set with the start signal).
    kill_at: Option<Instant>,
}

impl Running {
    /// Lets the client start sending; starts its kill timer.
    fn go(&mut self) {
        self.peer.write_line("go");
        self.kill_at = self.kill_after.map(|d| Instant::now() + d);
    }
}

/// A client that is gone.
struct Finished {
    id: u32,
    killed: bool,
    success: bool,
    /// (seq, checksum) of each `ok` line.
    oks: Vec<(u32, u32)>,
    /// Other stdout lines, and stderr.
    noise: Vec<String>,
    stderr: String,
}

fn finish(mut r: Running, killed: bool) -> Finished {
    let status = if killed {
        r.peer.kill();
        None
    } else {
        Some(r.peer.wait(Duration::from_secs(60)))
    };
    let (lines, stderr) = r.peer.finish_output();
    let mut oks = Vec::new();
    let mut noise = Vec::new();
    for l in lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["ok", id, seq, sum] if id.parse::<u32>().ok() == Some(r.id) => {
                match (
                    seq.parse(),
                    u32::from_str_radix(sum.trim_start_matches("0x"), 16),
                ) {
                    (Ok(seq), Ok(sum)) => oks.push((seq, sum)),
                    _ => noise.push(l),
                }
            }
            ["connected", _] => {}
            _ => noise.push(l),
        }
    }
    Finished {
        id: r.id,
        killed,
        success: status.is_some_and(|s| s.success()),
        oks,
        noise,
        stderr,
    }
}

/// At least 20 client processes connected at once (more than 20 over the run, new ones
/// started as others finish or are SIGKILLed at random moments, about half of them)
/// complete at least 1,000 sends (3,000 on Linux) of checksummed messages of 1 KiB to
/// 256 KiB, each with a blocking allocation and `send_and_wait`, into a default-size
/// (16 MiB) segment whose server keeps up to 13 MiB of what it received, so the segment
/// fills up and allocations wait for memory. Invariants:
/// - every send a client reported completed arrived exactly once, intact (length and
///   checksum as built independently here, and as the client reported);
/// - nothing arrived that was never sent or arrived twice; a killed client's message in
///   flight (only the one after its last reported send) may arrive, intact, at most once;
/// - no client that was not killed failed (exit status, error output);
/// - once every client is gone and reclaimed, the server's available bytes equal their
///   value from before any client connected, and `check()` passes;
/// - after the server quits, nothing of the segment remains in `/dev/shm`.
#[test]
fn churn_with_killed_clients_loses_nothing() {
    let name = unique_name("churn");
    let _guard = SegmentGuard(name.clone());
    let started = Instant::now();
    let mut rng = Rng::new(0x00c4_0e5e_ed15_7a11);
    let mut collector = Peer::spawn(
        peer_exe!(),
        &["collector", &name, "--hold", &HOLD.to_string()],
    );
    let lines = collector.lines();
    let first = lines
        .next_within(Duration::from_secs(60))
        .expect("collector started");
    assert_eq!(first, "serving 1", "collector: {first}");
    let mut got = Collected::default();
    collector.write_line("stats");
    let (start, _, check) = parse_stats(&got.reply(&lines, "stats"));
    assert_eq!(check, "ok");

    let mut running: Vec<Running> = Vec::new();
    let mut finished: Vec<Finished> = Vec::new();
    let mut next_id = 0u32;
    let spawn = |rng: &mut Rng, next_id: &mut u32| -> Running {
        let id = *next_id;
        *next_id += 1;
        let peer = Peer::spawn_captured(
            peer_exe!(),
            &[
                "churn-client",
                &name,
                &id.to_string(),
                &PER_CLIENT.to_string(),
            ],
        );
        // About half are killed, at a moment anywhere from before their first send to
        // after their last.
        let kill_after = (rng.below(2) == 0).then(|| Duration::from_millis(rng.below(700)));
        Running {
            id,
            peer,
            kill_after,
            kill_at: None,
        }
    };

    // The first wave connects completely before anyone sends: at least ALIVE at once.
    for _ in 0..ALIVE {
        let r = spawn(&mut rng, &mut next_id);
        running.push(r);
    }
    {
        let end = Instant::now() + Duration::from_secs(60);
        while got.connected_now < ALIVE as i64 {
            assert!(
                Instant::now() < end,
                "only {} of the first {ALIVE} clients connected",
                got.connected_now
            );
            if let Some(line) = lines.next_within(Duration::from_millis(50)) {
                got.take(&line);
            }
        }
    }
    for r in &mut running {
        r.go();
    }

    let mut completed = 0usize;
    let mut last_progress = 0usize;
    loop {
        assert!(
            started.elapsed() < LIMIT,
            "churn stalled: {completed} sends completed, {} clients running",
            running.len()
        );
        if let Some(r) = got.drain(&lines) {
            panic!("unexpected collector reply {r:?}");
        }
        let now = Instant::now();
        let mut i = 0;
        while i < running.len() {
            let due = running[i].kill_at.is_some_and(|k| now >= k);
            let exited = !due && running[i].peer.child.try_wait().unwrap().is_some();
            if due || exited {
                let f = finish(running.swap_remove(i), due);
                completed += f.oks.len();
                finished.push(f);
            } else {
                i += 1;
            }
        }
        if completed >= last_progress + 200 {
            last_progress = completed;
            eprintln!(
                "churn: {completed} sends completed, {} clients started, {} running, {} killed",
                next_id,
                running.len(),
                finished.iter().filter(|f| f.killed).count()
            );
        }
        if completed < TARGET_SENDS {
            while running.len() < ALIVE {
                let mut r = spawn(&mut rng, &mut next_id);
                r.go();
                running.push(r);
            }
        } else if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "churn: done: {completed} sends completed by {next_id} clients ({} killed), at most {} connected at once",
        finished.iter().filter(|f| f.killed).count(),
        got.max_connected
    );

    // Every client is gone; wait until the server has reclaimed them all.
    let mut polls = 0;
    let (available, min_free, check) = loop {
        collector.write_line("stats");
        let (available, min_free, check) = parse_stats(&got.reply(&lines, "stats"));
        polls += 1;
        if available == start || polls >= 600 {
            break (available, min_free, check);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("churn: lowest free bytes during the run: {min_free} of a 16 MiB segment");
    // The stats reply comes after every message line the collector printed before it.
    assert!(got.drain(&lines).is_none());

    // Per client: what it reported against what arrived.
    let mut failures: Vec<String> = Vec::new();
    let mut by_client: BTreeMap<u32, Vec<(u32, &Arrival)>> = BTreeMap::new();
    for ((client, seq), list) in &got.arrivals {
        for a in list {
            by_client.entry(*client).or_default().push((*seq, a));
        }
        if list.len() > 1 {
            failures.push(format!(
                "client {client} seq {seq} arrived {} times",
                list.len()
            ));
        }
        if *client >= next_id || *seq >= PER_CLIENT {
            failures.push(format!(
                "message never sent arrived: client {client} seq {seq}: {:?}",
                list
            ));
            continue;
        }
        let want_len = churn::len(*client, *seq);
        let want_sum = shm_host::checksum(&churn::message(*client, *seq));
        for a in list {
            if a.len != want_len || a.header_len as usize != want_len || a.sum != want_sum {
                failures.push(format!(
                    "client {client} seq {seq} corrupted: {a:?}, expected {want_len} bytes checksum {want_sum:#010x}"
                ));
            }
            if a.tag != *seq {
                failures.push(format!("client {client} seq {seq} has tag {}", a.tag));
            }
        }
    }
    for f in &finished {
        if !f.killed {
            if !f.success || !f.stderr.trim().is_empty() || !f.noise.is_empty() {
                failures.push(format!(
                    "client {} (not killed) failed: success {}, {} sends, output {:?}, stderr {:?}",
                    f.id,
                    f.success,
                    f.oks.len(),
                    f.noise,
                    f.stderr.trim()
                ));
            }
            if f.oks.len() != PER_CLIENT as usize && f.success {
                failures.push(format!(
                    "client {} exited cleanly after {} of {PER_CLIENT} sends",
                    f.id,
                    f.oks.len()
                ));
            }
        }
        for (i, (seq, sum)) in f.oks.iter().enumerate() {
            if *seq != i as u32 {
                failures.push(format!("client {} reported seq {seq} as send {i}", f.id));
            }
            match got.arrivals.get(&(f.id, *seq)).map(Vec::as_slice) {
                None | Some([]) => {
                    failures.push(format!("lost: client {} seq {seq} (reported sent)", f.id))
                }
                Some(list) => {
                    if list.iter().any(|a| a.sum != *sum) {
                        failures.push(format!(
                            "client {} seq {seq}: reported checksum {sum:#010x}, arrived {list:?}",
                            f.id
                        ));
                    }
                }
            }
        }
        // Only the message after the last reported one may have been in flight.
        let reported = f.oks.len() as u32;
        for (seq, _) in by_client.get(&f.id).map(Vec::as_slice).unwrap_or(&[]) {
            let allowed = *seq < reported || (f.killed && *seq == reported);
            if !allowed {
                failures.push(format!(
                    "client {} seq {seq} arrived but was never reported sent ({} reported, killed {})",
                    f.id, reported, f.killed
                ));
            }
        }
    }
    let killed = finished.iter().filter(|f| f.killed).count();
    assert!(
        failures.is_empty() && got.bad.is_empty(),
        "{} problems (first 30):\n{}\ncollector lines not understood (first 10): {:?}",
        failures.len(),
        failures
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        got.bad.iter().take(10).collect::<Vec<_>>()
    );
    assert!(
        completed >= TARGET_SENDS,
        "{completed} sends completed, fewer than {TARGET_SENDS}"
    );
    assert!(next_id as usize > 20, "only {next_id} clients over the run");
    assert!(killed > 0, "no client was killed");
    assert!(
        got.max_connected >= 20,
        "at most {} clients connected at once",
        got.max_connected
    );
    assert_eq!(
        available, start,
        "available bytes after every client is gone ({polls} polls): {available}, before any client: {start}"
    );
    assert_eq!(check, "ok", "check after the churn");

    collector.write_line("quit");
    assert_eq!(got.reply(&lines, "quit"), "bye");
    assert!(collector.wait(Duration::from_secs(60)).success());
    #[cfg(target_os = "linux")]
    {
        let path = shm_tests::shm_path(&name);
        assert!(
            !path.exists(),
            "{} remains after the server quit",
            path.display()
        );
        let left: Vec<String> = std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(&name))
            .collect();
        assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    }
}
