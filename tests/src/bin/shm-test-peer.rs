//! Helper process for the integration tests. Roles:
//!
//! - `client NAME ID COUNT WINDOW`: connects, sends COUNT checked messages (at most WINDOW
//!   unanswered), verifies every echo, prints `done ID COUNT`, exits 0 (1 on any error).
//! - `stream NAME ID`: like `client` but never stops (for kill tests); prints `ready`.
//! - `server NAME`: a server that echoes every message; prints `serving GEN`. A line
//!   `quit` on stdin flushes the segment (`Server::flush`), drops the server (a clean
//!   stop), prints `bye` and exits.
//!
//! - `keep NAME SEQ`: a client that writes a checksummed message, keeps it as the kept
//!   root, flushes and prints `kept OFFSET`, then exits at a line on stdin.
//! - `take NAME`: a client that takes the kept root, verifies it, prints
//!   `took CLIENT SEQ OFFSET`, frees it and exits.
//!
//! `client`, `stream`, `server`, `keep` and `take` run on the kind of segment the
//! environment variable `SHM_TEST_BACKEND` names (`native`, `posix`, `sysv`,
//! `file:PATH`; `native` when unset).
//! - `send-one NAME TAG`: connects, sends one message with TAG, prints `sent`, waits for the
//!   echo and prints `echo TAG`, then waits for a line on stdin before exiting.
//! - `collector NAME [--heartbeat MS] [--max-missed N] [--hold BYTES] [--kill-unresponsive 0|1]`: a server (default
//!   options unless given: 16 MiB) printing `serving GEN`, then one line per message,
//!   `msg FROM TAG LEN CHECKSUM CLIENT SEQ HLEN` (the last three from a churn header, `-`
//!   without one), and per event, `event connected|disconnected|died|other DEBUG`.
//!   Messages whose tag has bit 31 set are echoed to their sender; others are kept (up to
//!   BYTES and 128 messages, oldest dropped first; all dropped when idle) so the segment
//!   fills up.
//!   Commands on stdin: `stats` -> `available N min_free M check ok|FAILED ...`; `clients`
//!   -> `clients ID...`; `procs` -> `procs PID:BYTES:BLOCKS:CACHED_BYTES...` (registered
//!   processes, the bytes of their blocks in buffer caches);
//!   `quit` (or the end of stdin) drops the server, prints `bye` and exits.
//! - `churn-client NAME ID COUNT`: connects, prints `connected PEER`, waits for a line on
//!   stdin, then sends COUNT churn messages (`shm_tests::churn`) with tag SEQ, each with a
//!   blocking allocation and `send_and_wait`, printing `ok ID SEQ CHECKSUM` after each.
//! - `driven NAME [cached]`: a client (with a buffer cache if `cached`) driven by stdin
//!   lines, answering each with one line (see
//!   `driven`): `hold SIZE BYTE`, `verify`, `write BYTE`, `sendheld TAG`, `alloc SIZE`,
//!   `send SIZE TAG`, `echo SIZE TAG`, `quit`.
#![allow(clippy::unwrap_used)] // a test helper: any failure ends it with a message

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::sync::mpsc;
use std::time::Duration;

use shm_host::{
    Backend, Client, ClientOptions, OnSystem, Segment, SegmentName, Server, ServerEvent,
    ServerOptions, System,
};
use shm_tests::{churn, wire};

/// Tag bit asking the collector to echo a message back.
const ECHO: u32 = 1 << 31;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or("") };
    let result = match arg(0) {
        "client" | "stream" | "cache-churn" | "server" | "keep" | "take" => on_backend(&args),
        "send-one" => send_one(arg(1), arg(2).parse().unwrap()),
        "collector" => collector(arg(1), &args[2..]),
        "churn-client" => churn_client(arg(1), arg(2).parse().unwrap(), arg(3).parse().unwrap()),
        // `driven NAME [cached]`: with `cached`, through a buffer cache.
        "driven" => driven(arg(1), arg(2) == "cached"),
        #[cfg(unix)]
        // `fork-alloc NAME [cached]`: with `cached`, through a buffer cache.
        "fork-alloc" => fork_alloc(arg(1), arg(2) == "cached"),
        #[cfg(unix)]
        "fork-cache" => fork_cache(arg(1)),
        other => Err(format!("unknown role {other:?}")),
    };
    if let Err(e) = result {
        eprintln!("shm-test-peer {args:?}: {e}");
        std::process::exit(1);
    }
}

/// The roles that run on the kind of segment `SHM_TEST_BACKEND` names.
fn on_backend(args: &[String]) -> Result<(), String> {
    let backend: Backend = std::env::var("SHM_TEST_BACKEND")
        .unwrap_or_else(|_| "native".into())
        .parse()?;
    backend.run(Role(args)).map_err(|e| e.to_string())?
}

struct Role<'a>(&'a [String]);

impl OnSystem for Role<'_> {
    type Output = Result<(), String>;
    fn on<S: System>(self, system: S) -> Result<(), String> {
        let arg = |i: usize| -> &str { self.0.get(i).map(String::as_str).unwrap_or("") };
        match arg(0) {
            "client" => client(
                system,
                arg(1),
                arg(2).parse().unwrap(),
                arg(3).parse().unwrap(),
                arg(4).parse().unwrap(),
                false,
                None,
            ),
            // `stream NAME ID [cached]`: with `cached`, through a buffer cache.
            "stream" => client(
                system,
                arg(1),
                arg(2).parse().unwrap(),
                u32::MAX,
                8,
                true,
                (arg(3) == "cached").then(shm_core::CacheConfig::default),
            ),
            "cache-churn" => cache_churn(system, arg(1), arg(2).parse().unwrap()),
            "server" => server(system, arg(1)),
            "keep" => keep(system, arg(1), arg(2).parse().unwrap()),
            "take" => take(system, arg(1)),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// Forks. The child runs `child` and leaves with `_exit` and what `child` returned as its
/// exit code, without running destructors (they are the parent's); the parent waits for
/// it and returns that code (-1 if the child did not exit normally).
#[cfg(unix)]
fn in_forked_child(child: impl FnOnce() -> i32) -> Result<i32, String> {
    // SAFETY: the child only runs `child` and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        let code = child();
        // SAFETY: ends the child without running destructors (they are the parent's).
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child we forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    })
}

/// A client of segment `name` (with a buffer cache if `cached`), once the server has
/// accepted it (waiting up to `patience`).
fn connected_client(name: &str, cached: bool, patience: Duration) -> Result<Client, String> {
    let opts = ClientOptions {
        cache: cached.then(shm_core::CacheConfig::default),
        ..ClientOptions::default()
    };
    let c = Client::connect_with(name, opts).map_err(|e| format!("connect: {e}"))?;
    c.wait_connected(patience)
        .map_err(|e| format!("wait_connected: {e}"))?;
    Ok(c)
}

/// `fork-alloc NAME [cached]`: connects (with a buffer cache if `cached`), prints
/// `cached BYTES` (the bytes in buffer caches, from the segment's check), forks; the child
/// (another process sharing the mapping and the parent's handles) tries to allocate and
/// send with the parent's client and exits 0 if both were refused as a stale registration,
/// 1 if either succeeded, 2 on any other error; the parent prints `child CODE`, then
/// allocates and sends itself and prints `parent ok`. The child makes no heap allocation
/// of this process (it may have been forked while another thread held the allocator's
/// lock) and leaves with `_exit`.
#[cfg(unix)]
fn fork_alloc(name: &str, cached: bool) -> Result<(), String> {
    use shm_core::Error;
    use shm_host::HostError;
    let c = connected_client(name, cached, Duration::from_secs(20))?;
    // With a cache, the first allocation refills a batch of blocks of its class, and the
    // one dropped here joins them: blocks of the child's size wait in it at the fork.
    drop(c.alloc(64).map_err(|e| format!("alloc: {e}"))?);
    let held = c.alloc(64).map_err(|e| format!("alloc: {e}"))?;
    let check = c.segment().check().map_err(|e| format!("check: {e}"))?;
    println!("cached {}", check.cached_bytes);
    let mut held = Some(held);
    let code = in_forked_child(|| {
        let stale = |e: &HostError| matches!(e, HostError::Core(Error::StaleMember { .. }));
        let Some(held) = held.take() else { return 2 };
        match (c.alloc(64), c.send(held, 1)) {
            (Err(a), Err(s)) if stale(&a) && stale(&s.error) => 0,
            (Ok(_), _) | (_, Ok(())) => 1,
            _ => 2,
        }
    })?;
    println!("child {code}");
    let mut b = c.alloc(64).map_err(|e| format!("parent alloc: {e}"))?;
    b.extend_from_slice(b"parent")
        .map_err(|e| format!("parent write: {e}"))?;
    c.send(b, 2).map_err(|e| format!("parent send: {e}"))?;
    drop(held);
    println!("parent ok");
    Ok(())
}

/// `fork-cache NAME`: makes a process cache, caches a block, forks; the child must get
/// `StaleMember` from the cache for an allocation (which would take the cached block) and
/// a free (`child 0`); the parent then gets its cached block back (`parent ok`).
#[cfg(unix)]
fn fork_cache(name: &str) -> Result<(), String> {
    use shm_core::Error;
    let seg = Segment::open(
        shm_host::NativeSystem,
        &SegmentName::new(name).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    // SAFETY: acts only as the cache's own member and writes no payload.
    let heap = unsafe { seg.heap() };
    let mut cache = heap
        .cache(shm_core::CacheConfig::default())
        .map_err(|e| e.to_string())?;
    let cached = cache.alloc(64).map_err(|e| e.to_string())?;
    let live = cache.alloc(64).map_err(|e| e.to_string())?;
    cache.free(cached).map_err(|e| e.to_string())?;
    let code = in_forked_child(|| {
        let stale = |r: &Result<(), Error>| matches!(r, Err(Error::StaleMember { .. }));
        match (cache.alloc(64).map(drop), cache.free(live)) {
            (a, f) if stale(&a) && stale(&f) => 0,
            _ => 1,
        }
    })?;
    println!("child {code}");
    let again = cache.alloc(64).map_err(|e| format!("parent alloc: {e}"))?;
    if again != cached {
        return Err(format!("parent got {again}, not its cached {cached}"));
    }
    cache.free(live).map_err(|e| format!("parent free: {e}"))?;
    cache.free(again).map_err(|e| format!("parent free: {e}"))?;
    heap.check().map_err(|e| format!("check: {e}"))?;
    println!("parent ok");
    Ok(())
}

fn client<S: System>(
    system: S,
    name: &str,
    id: u32,
    count: u32,
    window: usize,
    announce: bool,
    cache: Option<shm_core::CacheConfig>,
) -> Result<(), String> {
    let opts = ClientOptions {
        cache,
        ..ClientOptions::default()
    };
    let c = Client::connect_on(system, name, opts).map_err(|e| format!("connect: {e}"))?;
    c.wait_connected(Duration::from_secs(20))
        .map_err(|e| format!("wait_connected: {e}"))?;
    if announce {
        println!("ready");
    }
    let mut outstanding: VecDeque<u32> = VecDeque::new();
    let mut next = 0u32;
    let mut done = 0u32;
    while done < count {
        while next < count && outstanding.len() < window {
            let size = wire::HEADER + wire::body_len(id, next);
            let mut buf = c.alloc(size).map_err(|e| format!("alloc: {e}"))?;
            buf.resize(size).map_err(|e| format!("resize: {e}"))?;
            wire::encode(buf.as_mut_slice().map_err(|e| e.to_string())?, id, next);
            let mut pending = buf;
            loop {
                match c.send(pending, next) {
                    Ok(()) => break,
                    Err(e)
                        if matches!(
                            e.error,
                            shm_host::HostError::Core(shm_core::Error::QueueFull)
                        ) =>
                    {
                        pending = e.buffer;
                        std::thread::yield_now();
                    }
                    Err(e) => return Err(format!("send {next}: {e}")),
                }
            }
            outstanding.push_back(next);
            next += 1;
        }
        let msg = c
            .recv_timeout(Duration::from_secs(20))
            .map_err(|e| format!("recv: {e}"))?
            .ok_or("no echo within 20 s")?;
        let (cid, seq) = wire::decode(&msg.buffer)?;
        let expected = outstanding.pop_front().ok_or("echo nobody asked for")?;
        if cid != id || seq != expected || msg.tag != expected {
            return Err(format!(
                "echo {cid}/{seq} tag {}, expected {id}/{expected}",
                msg.tag
            ));
        }
        done += 1;
    }
    println!("done {id} {count}");
    Ok(())
}

/// `cache-churn NAME SEED`: allocates and frees through a process cache
/// (`Heap::cache`) without end: fills it, prints `ready CACHED_BYTES`, then keeps
/// allocating and freeing random sizes (refills and drains under the lock, hits without
/// it) until it is killed. Every block it writes is checked before it is freed.
fn cache_churn<S: System>(system: S, name: &str, seed: u64) -> Result<(), String> {
    let seg = Segment::open(system, &SegmentName::new(name).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    // SAFETY: acts only as the cache's own member and writes only payloads of blocks the
    // cache handed out to it.
    let heap = unsafe { seg.heap() };
    let mut cache = heap
        .cache(shm_core::CacheConfig::default())
        .map_err(|e| e.to_string())?;
    let mut rng = shm_tests::Rng::new(seed);
    let mut live: Vec<(shm_core::Offset, u8)> = Vec::new();
    let size = |rng: &mut shm_tests::Rng| {
        let most = if rng.below(8) == 0 { 8000 } else { 600 };
        1 + rng.below(most) as u32
    };
    let first: Vec<shm_core::Offset> = (0..400)
        .map(|_| cache.alloc(size(&mut rng)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("fill: {e}"))?;
    for (i, b) in first.into_iter().enumerate() {
        if i % 4 == 0 {
            let (p, _) = heap.payload(b).map_err(|e| e.to_string())?;
            // SAFETY: the first payload byte of a block the cache just handed out.
            unsafe { p.as_ptr().write(0xA5) };
            live.push((b, 0xA5));
        } else {
            cache.free(b).map_err(|e| format!("free: {e}"))?;
        }
    }
    println!("ready {}", cache.stats().bytes);
    let mut n = 0u32;
    loop {
        n = n.wrapping_add(1);
        if live.len() < 50 || rng.below(2) == 0 {
            let want = size(&mut rng);
            let b = match cache.alloc(want) {
                Ok(b) => b,
                Err(shm_core::Error::OutOfMemory { .. }) => continue,
                Err(e) => return Err(format!("alloc: {e}")),
            };
            let (p, len) = heap.payload(b).map_err(|e| e.to_string())?;
            let fill = n as u8;
            // SAFETY: the payload is `len >= want` bytes of a block the cache just handed
            // to this process, which nobody else writes.
            unsafe { std::ptr::write_bytes(p.as_ptr(), fill, want.min(len) as usize) };
            live.push((b, fill));
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let (b, fill) = live.swap_remove(i);
            let (p, _) = heap.payload(b).map_err(|e| e.to_string())?;
            // SAFETY: the first byte of a live block of this process, written above.
            let first = unsafe { p.as_ptr().read() };
            if first != fill {
                return Err(format!("block {b} was overwritten"));
            }
            cache.free(b).map_err(|e| format!("free: {e}"))?;
        }
    }
}

fn server<S: System>(system: S, name: &str) -> Result<(), String> {
    let s = Server::create_on(
        system,
        name,
        ServerOptions {
            size: 8 << 20,
            heartbeat: Duration::from_millis(50),
            ..ServerOptions::default()
        },
    )
    .map_err(|e| format!("server: {e}"))?;
    println!("serving {}", s.generation());
    let commands = stdin_lines();
    loop {
        if commands.try_recv().is_ok_and(|l| l.trim() == "quit") {
            s.flush().map_err(|e| format!("flush: {e}"))?;
            drop(s);
            println!("bye");
            return Ok(());
        }
        if let Some(msg) = s
            .recv_timeout(Duration::from_millis(100))
            .map_err(|e| e.to_string())?
        {
            let _ = s.send(msg.from, msg.buffer, msg.tag);
        }
    }
}

/// `keep NAME SEQ`: writes wire message (`KEPT_CLIENT`, SEQ), keeps it, names it the kept
/// root, flushes the segment and prints `kept OFFSET`; then waits for a line on stdin and
/// exits (or is killed).
fn keep<S: System>(system: S, name: &str, seq: u32) -> Result<(), String> {
    let c = Client::connect_on(system, name, ClientOptions::default())
        .map_err(|e| format!("connect: {e}"))?;
    let size = wire::HEADER + wire::body_len(KEPT_CLIENT, seq);
    let mut buf = c.alloc(size).map_err(|e| e.to_string())?;
    buf.resize(size).map_err(|e| e.to_string())?;
    wire::encode(
        buf.as_mut_slice().map_err(|e| e.to_string())?,
        KEPT_CLIENT,
        seq,
    );
    let at = c.keep(buf).map_err(|e| format!("keep: {e}"))?;
    c.set_kept_root(Some(at))
        .map_err(|e| format!("root: {e}"))?;
    c.segment().flush().map_err(|e| format!("flush: {e}"))?;
    println!("kept {}", at.get());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

/// `take NAME`: takes the kept root, verifies it as a wire message and prints
/// `took CLIENT SEQ OFFSET`; then drops it (freeing the block) and exits.
fn take<S: System>(system: S, name: &str) -> Result<(), String> {
    let c = Client::connect_on(system, name, ClientOptions::default())
        .map_err(|e| format!("connect: {e}"))?;
    let root = c.kept_root().ok_or("no kept root")?;
    let buf = c.take(root).map_err(|e| format!("take: {e}"))?;
    let (client, seq) = wire::decode(&buf)?;
    if c.take(root).is_ok() {
        return Err("the kept block was taken twice".into());
    }
    println!("took {client} {seq} {}", root.get());
    Ok(())
}

/// The client number in the kept block's wire message.
const KEPT_CLIENT: u32 = 77;

fn send_one(name: &str, tag: u32) -> Result<(), String> {
    let c = Client::connect(name).map_err(|e| format!("connect: {e}"))?;
    c.send(c.alloc_from(b"one").map_err(|e| e.to_string())?, tag)
        .map_err(|e| e.to_string())?;
    println!("sent");
    let msg = c
        .recv_timeout(Duration::from_secs(20))
        .map_err(|e| e.to_string())?
        .ok_or("no echo")?;
    println!("echo {}", msg.tag);
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

/// Lines of stdin, read on a thread (so a loop can poll for commands); the channel ends
/// with stdin.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if tx.send(line.trim().to_owned()).is_err() {
                return;
            }
        }
    });
    rx
}

fn collector(name: &str, opts: &[String]) -> Result<(), String> {
    let mut options = ServerOptions::default();
    let mut hold_limit = 0usize;
    let mut it = opts.iter();
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--heartbeat" => options.heartbeat = Duration::from_millis(value),
            "--max-missed" => options.max_missed = value as u32,
            "--hold" => hold_limit = value as usize,
            "--kill-unresponsive" => options.kill_unresponsive = value != 0,
            other => return Err(format!("unknown option {other}")),
        }
    }
    let server = Server::create_with(name, options).map_err(|e| format!("server: {e}"))?;
    println!("serving {}", server.generation());
    let commands = stdin_lines();
    let mut held: VecDeque<shm_host::Message<shm_host::NativeSystem>> = VecDeque::new();
    let mut held_bytes = 0usize;
    loop {
        while let Some(ev) = server.try_event() {
            // Not an exhaustive `match`: events the library may add print as `other`.
            let kind = if matches!(ev, ServerEvent::Connected(_)) {
                "connected"
            } else if matches!(ev, ServerEvent::Disconnected(_)) {
                "disconnected"
            } else if matches!(ev, ServerEvent::Died { .. }) {
                "died"
            } else {
                "other"
            };
            println!("event {kind} {ev:?}");
        }
        match server.recv_timeout(Duration::from_millis(20)) {
            Ok(Some(msg)) => {
                let sum = shm_host::checksum(&msg.buffer);
                let head = churn::header(&msg.buffer)
                    .map_or("- - -".to_owned(), |(c, s, l)| format!("{c} {s} {l}"));
                println!(
                    "msg {} {} {} {sum:#010x} {head}",
                    msg.from,
                    msg.tag,
                    msg.buffer.len()
                );
                if msg.tag & ECHO != 0 {
                    if let Err(e) = server.send(msg.from, msg.buffer, msg.tag) {
                        println!("echo-failed {} {}", msg.from, e.error);
                    }
                } else if hold_limit > 0 {
                    held_bytes += msg.buffer.len();
                    held.push_back(msg);
                    while held_bytes > hold_limit || held.len() > 128 {
                        let Some(old) = held.pop_front() else { break };
                        held_bytes -= old.buffer.len();
                    }
                }
            }
            Ok(None) => {
                held.clear();
                held_bytes = 0;
            }
            Err(e) => println!("error recv: {e}"),
        }
        loop {
            let cmd = match commands.try_recv() {
                Ok(c) => c,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => "quit".to_owned(),
            };
            match cmd.as_str() {
                "stats" => {
                    held.clear();
                    held_bytes = 0;
                    let heap = server.segment();
                    let available = server
                        .available_bytes()
                        .map_or_else(|e| format!("error({e})"), |a| a.to_string());
                    let min_free = heap.stats().map_or_else(
                        |e| format!("error({e})"),
                        |s| s.min_ever_free_bytes.to_string(),
                    );
                    let check = match heap.check() {
                        Ok(_) => "ok".to_owned(),
                        Err(e) => format!("FAILED {e:?}"),
                    };
                    println!("available {available} min_free {min_free} check {check}");
                }
                "clients" => {
                    let ids: Vec<String> = server.clients().iter().map(|c| c.to_string()).collect();
                    println!("clients {}", ids.join(" "));
                }
                "holder" => match server.segment().lock_holder() {
                    Some(id) => println!("holder {}", id.pid),
                    None => println!("holder none"),
                },
                // `procs pid:bytes:blocks:cached_bytes ...`
                "procs" => {
                    let mut out = String::from("procs");
                    // Both the process list and the block walk read without the lock: an
                    // operation running meanwhile (a record moving, a reclaim) can make
                    // either fail, so the pair is tried again.
                    let list = || {
                        let mut cached: HashMap<u16, u64> = HashMap::new();
                        server
                            .segment()
                            .for_each_block(|b| {
                                if let (true, Some(owner)) = (b.cached, b.owner) {
                                    *cached.entry(owner.0).or_default() += u64::from(b.size);
                                }
                            })
                            .and_then(|()| server.segment().processes())
                            .map(|procs| (procs, cached))
                    };
                    let mut listed = list();
                    for _ in 1..1000 {
                        if listed.is_ok() {
                            break;
                        }
                        listed = list();
                    }
                    match listed {
                        Ok((procs, cached)) => {
                            for p in procs {
                                let c = cached.get(&p.slot.0).copied().unwrap_or(0);
                                out += &format!(" {}:{}:{}:{c}", p.id.pid, p.bytes, p.blocks)
                            }
                        }
                        Err(e) => out += &format!(" error({e:?})"),
                    }
                    println!("{out}");
                }
                "quit" => {
                    drop(held);
                    drop(server);
                    println!("bye");
                    return Ok(());
                }
                "" => {}
                other => println!("unknown command {other:?}"),
            }
        }
    }
}

fn churn_client(name: &str, id: u32, count: u32) -> Result<(), String> {
    let c = Client::connect(name).map_err(|e| format!("connect: {e}"))?;
    c.wait_connected(Duration::from_secs(30))
        .map_err(|e| format!("wait_connected: {e}"))?;
    println!("connected {}", c.id());
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .map_err(|e| format!("stdin: {e}"))?;
    for seq in 0..count {
        let len = churn::len(id, seq);
        let mut buf = c
            .alloc_timeout(len, Duration::from_secs(30))
            .map_err(|e| format!("alloc {seq} ({len} bytes): {e}"))?;
        buf.resize(len).map_err(|e| format!("resize {seq}: {e}"))?;
        let bytes = buf
            .as_mut_slice()
            .map_err(|e| format!("as_mut_slice: {e}"))?;
        churn::fill(bytes, id, seq);
        let sum = shm_host::checksum(bytes);
        c.send_and_wait(buf, seq, Duration::from_secs(30))
            .map_err(|e| format!("send {seq}: {e}"))?;
        println!("ok {id} {seq} {sum:#010x}");
    }
    Ok(())
}

/// One reply line per command; errors are printed as `err DEBUG | DISPLAY` (the test
/// matches the `Debug` form, e.g. `err Disconnected | ...`), never ending the process.
fn driven(name: &str, cached: bool) -> Result<(), String> {
    fn err(e: &shm_host::HostError) -> String {
        format!("err {e:?} | {e}")
    }
    fn pattern(b: &mut [u8], byte: u8) {
        b.fill(byte);
    }
    let c = connected_client(name, cached, Duration::from_secs(30))?;
    println!("connected {} {}", c.id(), std::process::id());
    let mut held: Option<(shm_host::Buffer<shm_host::NativeSystem>, u8)> = None;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> usize {
            words
                .get(i)
                .and_then(|w| {
                    w.strip_prefix("0x")
                        .map_or_else(|| w.parse().ok(), |h| usize::from_str_radix(h, 16).ok())
                })
                .unwrap_or(0)
        };
        let reply = match words.first().copied().unwrap_or("") {
            "hold" => match c.alloc(num(1)) {
                Ok(mut b) => {
                    let byte = num(2) as u8;
                    match b
                        .resize(num(1))
                        .and_then(|()| b.as_mut_slice().map(|s| pattern(s, byte)))
                    {
                        Ok(()) => {
                            held = Some((b, byte));
                            "hold ok".to_owned()
                        }
                        Err(e) => format!("hold {}", err(&e)),
                    }
                }
                Err(e) => format!("hold {}", err(&e)),
            },
            "verify" => match &held {
                None => "verify nothing held".to_owned(),
                Some((b, byte)) => match b.iter().position(|x| x != byte) {
                    None => format!("verify ok {}", b.len()),
                    Some(i) => format!("verify bad at {i}: {:#04x}, expected {byte:#04x}", b[i]),
                },
            },
            "write" => match held.as_mut() {
                None => "write nothing held".to_owned(),
                Some((b, byte)) => {
                    *byte = num(1) as u8;
                    let v = *byte;
                    match b.as_mut_slice() {
                        Ok(s) => {
                            pattern(s, v);
                            "write ok".to_owned()
                        }
                        Err(e) => format!("write {}", err(&e)),
                    }
                }
            },
            "sendheld" => match held.take() {
                None => "sendheld nothing held".to_owned(),
                Some((b, byte)) => match c.send(b, num(1) as u32) {
                    Ok(()) => "sendheld ok".to_owned(),
                    Err(e) => {
                        // The buffer comes back with the error: still held.
                        let reply = format!("sendheld {}", err(&e.error));
                        held = Some((e.buffer, byte));
                        reply
                    }
                },
            },
            "alloc" => match c.alloc(num(1)) {
                Ok(b) => {
                    drop(b);
                    "alloc ok".to_owned()
                }
                Err(e) => format!("alloc {}", err(&e)),
            },
            "send" => match c.alloc(num(1)) {
                Ok(mut b) => {
                    let _ = b.resize(num(1));
                    match c.send_and_wait(b, num(2) as u32, Duration::from_secs(10)) {
                        Ok(()) => "send ok".to_owned(),
                        Err(e) => format!("send {}", err(&e)),
                    }
                }
                Err(e) => format!("send alloc-{}", err(&e)),
            },
            "echo" => {
                let size = num(1);
                let tag = num(2) as u32 | ECHO;
                let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
                match c.alloc_from(&data) {
                    Err(e) => format!("echo alloc-{}", err(&e)),
                    Ok(b) => match c.send(b, tag) {
                        Err(e) => format!("echo {}", err(&e.error)),
                        Ok(()) => match c.recv_timeout(Duration::from_secs(30)) {
                            Ok(Some(m)) if m.tag == tag && m.buffer[..] == data[..] => {
                                "echo ok".to_owned()
                            }
                            Ok(Some(m)) => format!(
                                "echo wrong reply: tag {:#x}, {} bytes",
                                m.tag,
                                m.buffer.len()
                            ),
                            Ok(None) => "echo no reply".to_owned(),
                            Err(e) => format!("echo recv-{}", err(&e)),
                        },
                    },
                }
            }
            "quit" => {
                println!("bye");
                return Ok(());
            }
            other => format!("unknown command {other:?}"),
        };
        println!("{reply}");
    }
    Ok(())
}
