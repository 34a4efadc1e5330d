//! `shmipc demo`: creates a segment, starts a server and several client processes, streams
//! buffers of growing size both ways (the server sends each buffer back: the same block,
//! never copied), kills one client with SIGKILL mid-stream, shows the server noticing and
//! reclaiming its memory, and prints a summary. Cleans up after itself.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shm_host::{checksum, Client, PeerId, RecvMode, Server, ServerEvent, ServerOptions};

use crate::util::{human_bytes, latency_histogram, nanos, parse_size};

/// Arguments of `demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Client processes.
    #[arg(long, default_value_t = 3)]
    pub clients: u32,
    /// Round trips per client.
    #[arg(long, default_value_t = 4000)]
    pub messages: u32,
    /// Largest message (sizes grow from 8 bytes by powers of 8 up to this).
    #[arg(long, default_value = "256KiB", value_parser = parse_size)]
    pub max_size: usize,
    /// Segment size.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub size: usize,
    /// Do not kill a client.
    #[arg(long)]
    pub no_kill: bool,
}

/// Arguments of the hidden `demo-client` (one client process of the demo).
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// Segment name.
    #[arg(long)]
    pub name: String,
    /// Round trips.
    #[arg(long)]
    pub messages: u32,
    /// Largest message.
    #[arg(long)]
    pub max_size: usize,
}

/// Message sizes: 8, 64, 512, ... up to `max`.
fn sizes(max: usize) -> Vec<usize> {
    let mut v = vec![8usize];
    while let Some(&last) = v.last() {
        let next = last * 8;
        if next > max {
            break;
        }
        v.push(next);
    }
    if v.last() != Some(&max) && max > 8 {
        v.push(max);
    }
    v
}

/// Fills a message: sequence number, then a pattern derived from it.
fn fill(buf: &mut [u8], seq: u32) {
    buf.fill(seq as u8);
    let n = buf.len().min(4);
    buf[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

/// Checksum of the bytes that identify a message: all of a small one, a sample of a
/// large one (the demo shows IPC, the integration tests check every byte).
fn sample_sum(buf: &[u8]) -> u32 {
    if buf.len() <= 4096 {
        return checksum(buf);
    }
    let sample: Vec<u8> = buf
        .iter()
        .step_by(509)
        .copied()
        .chain(buf.last().copied())
        .collect();
    checksum(&sample)
}

/// One client process: connect, stream, verify each echo, report.
pub fn run_client(args: ClientArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect_with(
        &args.name,
        shm_host::ClientOptions {
            recv_mode: RecvMode::Adaptive {
                spin: Duration::from_micros(200),
            },
            ..Default::default()
        },
    )?;
    // The parent reads this line before its server starts receiving, so print it first.
    println!("hello {}", client.id());
    client.wait_connected(Duration::from_secs(10))?;
    let sizes = sizes(args.max_size);
    // Round-trip times: a histogram of fixed size (the victim of the demo streams
    // without end).
    let mut rtts = latency_histogram()?;
    let mut bytes = 0u64;
    for seq in 0..args.messages {
        let size = sizes[seq as usize % sizes.len()];
        let mut buf = client.alloc(size)?;
        buf.resize(size)?;
        fill(buf.as_mut_slice()?, seq);
        let sum = sample_sum(&buf);
        let t = Instant::now();
        client.send(buf, seq)?;
        let reply = client
            .recv_timeout(Duration::from_secs(10))?
            .ok_or("no echo within 10 s")?;
        rtts.saturating_record(nanos(t.elapsed()));
        if reply.tag != seq || reply.buffer.len() != size || sample_sum(&reply.buffer) != sum {
            return Err(format!("echo {seq} corrupted").into());
        }
        bytes += 2 * size as u64;
    }
    println!(
        "result messages={} bytes={} p50_ns={} p99_ns={}",
        args.messages,
        bytes,
        rtts.value_at_quantile(0.5),
        rtts.value_at_quantile(0.99)
    );
    Ok(())
}

struct Proc {
    child: Child,
    id: Option<PeerId>,
    lines: Option<std::io::Lines<BufReader<std::process::ChildStdout>>>,
    killed: bool,
}

/// Runs the demo.
pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("demo-{}", std::process::id());
    let server = Server::create_with(
        &name,
        ServerOptions {
            size: args.size,
            heartbeat: Duration::from_millis(50),
            recv_mode: RecvMode::Adaptive {
                spin: Duration::from_micros(200),
            },
            ..ServerOptions::default()
        },
    )?;
    let heap = server.segment();
    // Free bytes plus the server's unused reserve: see Server::available_bytes.
    let baseline = server.available_bytes()?;
    println!(
        "segment {name}: {}, server generation {}, {} free",
        human_bytes(args.size as u64),
        server.generation(),
        human_bytes(baseline)
    );
    let exe = std::env::current_exe()?;
    let victim = if args.no_kill || args.clients < 2 {
        None
    } else {
        Some(1usize)
    };
    let mut procs = Vec::new();
    for i in 0..args.clients as usize {
        // The victim streams without end, so it is surely mid-stream when it is killed.
        let messages = if Some(i) == victim {
            u32::MAX
        } else {
            args.messages
        };
        let mut child = Command::new(&exe)
            .args(["demo-client", "--name", &name])
            .args(["--messages", &messages.to_string()])
            .args(["--max-size", &args.max_size.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = child.stdout.take().map(|o| BufReader::new(o).lines());
        let id = lines
            .as_mut()
            .and_then(|l| l.next())
            .and_then(|l| l.ok())
            .and_then(|l| parse_peer(&l));
        procs.push(Proc {
            child,
            id,
            lines,
            killed: false,
        });
    }
    println!(
        "{} clients streaming {} round trips each, sizes {:?}",
        args.clients,
        args.messages,
        sizes(args.max_size)
            .iter()
            .map(|s| human_bytes(*s as u64))
            .collect::<Vec<_>>()
    );

    let stop = AtomicBool::new(false);
    let echoed = AtomicU64::new(0);
    let per_client: Mutex<HashMap<PeerId, (u64, u64)>> = Mutex::new(HashMap::new());
    let events: Mutex<Vec<ServerEvent>> = Mutex::new(Vec::new());
    let mut victim_report = None;
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        // The server: echo every buffer back to its sender, as is.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match server.recv_timeout(Duration::from_millis(20)) {
                    Ok(Some(msg)) => {
                        let len = msg.buffer.len() as u64;
                        {
                            let mut pc = per_client.lock().unwrap_or_else(|p| p.into_inner());
                            let e = pc.entry(msg.from).or_default();
                            e.0 += 1;
                            e.1 += len;
                        }
                        echoed.fetch_add(1, Ordering::Relaxed);
                        // A client killed meanwhile: the buffer comes back and is dropped.
                        let _ = server.send(msg.from, msg.buffer, msg.tag);
                    }
                    Ok(None) => {}
                    Err(e) => eprintln!("server: {e}"),
                }
                while let Some(ev) = server.try_event() {
                    events.lock().unwrap_or_else(|p| p.into_inner()).push(ev);
                }
            }
        });

        let started = Instant::now();
        let mut last_print = Instant::now();
        let mut killed_at = None;
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let done = echoed.load(Ordering::Relaxed);
            if let Some(v) = victim {
                let victim_done = procs[v].id.map_or(0, |id| {
                    per_client
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&id)
                        .map_or(0, |c| c.0)
                });
                if !procs[v].killed && victim_done >= u64::from(args.messages / 4).max(1) {
                    let before = server.available_bytes()?;
                    let pid = procs[v].child.id();
                    procs[v].child.kill()?; // SIGKILL on Unix, TerminateProcess on Windows
                    procs[v].child.wait()?;
                    procs[v].killed = true;
                    killed_at = Some(Instant::now());
                    println!(
                        "killed client {v} (pid {pid}) mid-stream; free memory now {}",
                        human_bytes(before)
                    );
                }
            }
            if last_print.elapsed() >= Duration::from_millis(500) {
                last_print = Instant::now();
                println!(
                    "progress: {done} messages echoed ({:.0}/s)",
                    done as f64 / started.elapsed().as_secs_f64()
                );
            }
            // Report the server noticing the kill.
            if let (Some(v), None) = (victim, &victim_report) {
                let evs = events.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(ServerEvent::Died {
                    client,
                    reason,
                    bytes_freed,
                }) = evs.iter().copied().find(|e| {
                    matches!(e, ServerEvent::Died { client, .. } if Some(*client) == procs[v].id)
                }) {
                    let now = server.available_bytes()?;
                    println!(
                        "server noticed: client {client} died ({reason:?}); {} reclaimed, free memory now {}",
                        human_bytes(bytes_freed),
                        human_bytes(now)
                    );
                    victim_report = Some(bytes_freed);
                }
            }
            let running = procs
                .iter_mut()
                .filter(|p| !p.killed)
                .any(|p| matches!(p.child.try_wait(), Ok(None)));
            if !running && (victim.is_none() || victim_report.is_some()) {
                break;
            }
            // The heartbeat notices a death within a few intervals; a minute is a failure.
            if killed_at
                .is_some_and(|t| victim_report.is_none() && t.elapsed() > Duration::from_secs(60))
            {
                stop.store(true, Ordering::Relaxed);
                return Err("the server did not notice the killed client within a minute".into());
            }
            if !running && victim.is_some() && killed_at.is_none() {
                stop.store(true, Ordering::Relaxed);
                return Err("every client finished before one could be killed".into());
            }
            if started.elapsed() > Duration::from_secs(300) {
                stop.store(true, Ordering::Relaxed);
                return Err("demo did not finish within 5 minutes".into());
            }
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;

    // Results.
    let mut ok = true;
    println!();
    println!(
        "{:<7} {:>7} {:<9} {:>9} {:>11} {:>11} {:>11}",
        "client", "pid", "status", "messages", "bytes", "rtt p50", "rtt p99"
    );
    let pc = per_client.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (i, p) in procs.iter_mut().enumerate() {
        let pid = p.child.id();
        let status = p.child.wait()?;
        let result = p
            .lines
            .as_mut()
            .and_then(|l| l.map_while(Result::ok).find(|l| l.starts_with("result ")));
        let seen = p.id.and_then(|id| pc.get(&id).copied()).unwrap_or_default();
        match (p.killed, result) {
            (true, _) => println!(
                "{i:<7} {pid:>7} {:<9} {:>9} {:>11} {:>11} {:>11}",
                "killed",
                seen.0,
                human_bytes(seen.1 * 2),
                "-",
                "-"
            ),
            (false, Some(line)) if status.success() => {
                let f = |k: &str| field(&line, k).unwrap_or(0);
                println!(
                    "{i:<7} {pid:>7} {:<9} {:>9} {:>11} {:>9.1}us {:>9.1}us",
                    "finished",
                    f("messages"),
                    human_bytes(f("bytes")),
                    f("p50_ns") as f64 / 1e3,
                    f("p99_ns") as f64 / 1e3
                );
            }
            _ => {
                ok = false;
                println!("{i:<7} {pid:>7} {:<9} ({status})", "FAILED");
            }
        }
    }
    // Everything the clients held is back: only the server's own memory is in use.
    let after = server.available_bytes()?;
    let check = heap.check();
    println!();
    println!(
        "free memory: {} with only the server, {} after the clients (difference {} bytes)",
        human_bytes(baseline),
        human_bytes(after),
        after as i64 - baseline as i64
    );
    match &check {
        Ok(r) => println!("check: ok ({} blocks, {} processes)", r.blocks, r.processes),
        Err(e) => println!("check: FAILED: {e}"),
    }
    ok &= after == baseline && check.is_ok();
    drop(server);
    println!("segment {name} removed");
    if ok {
        Ok(())
    } else {
        Err("demo found a problem (see above)".into())
    }
}

fn parse_peer(line: &str) -> Option<PeerId> {
    let rest = line.strip_prefix("hello #")?;
    let (slot, serial) = rest.split_once('.')?;
    Some(PeerId {
        slot: slot.parse().ok()?,
        serial: serial.parse().ok()?,
    })
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}
