//! Processes killed with SIGKILL (TerminateProcess on Windows) at random points: memory
//! comes back, a restarted server is found again. (A lock held by a killed process is
//! broken: `shm-host/tests/lock_break.rs`, whose crate's tests have fault injection.)
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shm_core::{CacheConfig, Error};
use shm_host::{Client, ClientOptions, HostError, RecvMode, Server, ServerEvent, ServerOptions};
use shm_tests::{eventually, peer_exe, unique_name, Peer};

fn server_with(name: &str, cache: Option<CacheConfig>) -> Server<shm_host::NativeSystem> {
    Server::create_with(
        name,
        ServerOptions {
            size: 16 << 20,
            heartbeat: Duration::from_millis(20),
            cache,
            ..ServerOptions::default()
        },
    )
    .unwrap()
}

/// Echoes every message until `stop`; returns how many it echoed.
fn echo(server: &Server<shm_host::NativeSystem>, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(msg) = server.recv_timeout(Duration::from_millis(10)).unwrap() {
            n += 1;
            // The client may have been killed: then the buffer comes back and is dropped.
            let _ = server.send(msg.from, msg.buffer, msg.tag);
        }
    }
    n
}

/// A client killed during traffic (five times, at whatever point each kill lands) is
/// noticed by the server, everything it held comes back - the server's free bytes return
/// to the baseline from before any client came - and `check()` passes.
#[test]
fn killed_clients_give_back_all_memory() {
    kill_clients_during_traffic("kill-client", false);
}

/// The same with buffer caches on every side: clients killed with blocks in their caches,
/// handed out, in flight and half sent give everything back, and the server's own cache
/// holds the rest (`check()` counts it): nothing leaks, nothing is owned twice.
#[test]
fn killed_clients_with_buffer_caches_give_back_all_memory() {
    kill_clients_during_traffic("kill-cached", true);
}

fn kill_clients_during_traffic(prefix: &str, cached: bool) {
    let name = unique_name(prefix);
    let server = server_with(&name, cached.then(CacheConfig::default));
    let baseline = server.available_bytes().unwrap();
    let mode = if cached { "cached" } else { "" };
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let echoer = s.spawn(|| echo(&server, &stop));
        let mut survivor = Peer::spawn(peer_exe!(), &["stream", &name, "99", mode]);
        assert_eq!(survivor.read_line(), "ready");
        for round in 0..5 {
            let id = round.to_string();
            let mut victim = Peer::spawn(peer_exe!(), &["stream", &name, &id, mode]);
            assert_eq!(victim.read_line(), "ready");
            // Let it get into the middle of its traffic.
            std::thread::sleep(Duration::from_millis(30 + 17 * round));
            victim.kill();
        }
        let mut died = 0;
        eventually(Duration::from_secs(30), "five deaths noticed", || {
            for ev in std::iter::from_fn(|| server.try_event()) {
                if matches!(ev, ServerEvent::Died { .. }) {
                    died += 1;
                }
            }
            (died >= 5).then_some(())
        });
        assert_eq!(died, 5, "each killed client is declared dead once");
        // The survivor kept going the whole time; stop it too, then the echo loop.
        survivor.kill();
        eventually(Duration::from_secs(30), "all clients reclaimed", || {
            let procs = server.segment().processes().unwrap().len();
            (procs == 1).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        assert!(echoer.join().unwrap() > 0, "traffic flowed");
    });
    // Messages the killed clients had in flight to the server were dropped by `echo`;
    // everything else they owned was reclaimed with them.
    // The server's own cache holds the blocks it received and dropped.
    eventually(
        Duration::from_secs(10),
        "memory back to the baseline",
        || {
            let _ = server.try_recv().unwrap();
            let in_cache = server.segment().check().unwrap().cached_bytes;
            let bound = if cached {
                CacheConfig::default().max_bytes
            } else {
                0
            };
            assert!(in_cache <= u64::from(bound), "{in_cache} bytes cached");
            (server.available_bytes().unwrap() + in_cache == baseline).then_some(())
        },
    );
}

/// A server killed and restarted in the same segment is detected by its client (the
/// generation changes), which reconnects without being restarted and talks to the new one;
/// the dead server's memory is reclaimed.
#[test]
fn clients_survive_a_server_restart() {
    let name = unique_name("restart");
    let mut s1 = Peer::spawn(peer_exe!(), &["server", &name]);
    assert_eq!(s1.read_line(), "serving 1");
    let client = Client::connect(&name).unwrap();
    client.wait_connected(Duration::from_secs(10)).unwrap();
    client
        .send(client.alloc_from(b"first").unwrap(), 1)
        .unwrap();
    let echo = client
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(&echo.buffer[..], b"first");
    drop(echo);

    s1.kill();
    let mut s2 = Peer::spawn(peer_exe!(), &["server", &name]);
    assert_eq!(s2.read_line(), "serving 2");
    // The old connection is refused with a clear reason...
    let err = client
        .send(client.alloc_from(b"lost").unwrap(), 2)
        .unwrap_err();
    assert!(
        matches!(err.error, HostError::Core(Error::ServerRestarted)),
        "{}",
        err.error
    );
    // ...and a reconnect reaches the new server.
    client.reconnect().unwrap();
    client.wait_connected(Duration::from_secs(10)).unwrap();
    assert_eq!(client.generation(), 2);
    client.send(err.buffer, 3).unwrap();
    let echo = client
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!((&echo.buffer[..], echo.tag), (&b"lost"[..], 3));
    drop(echo);
    let heap = client.segment();
    // Registered now: the new server and this client; the old server was reclaimed.
    assert_eq!(heap.processes().unwrap().len(), 2);
    heap.check().unwrap();
    drop(client);
    s2.kill();
    // The killed server could not remove the segment; do it here.
    let _ = shm_host::System::unlink(
        &shm_host::NativeSystem,
        &shm_host::SegmentName::new(&name).unwrap(),
    );
}

/// Connecting where no server runs fails with a clear error, not a hang.
#[test]
fn no_server_is_a_clear_error() {
    let name = unique_name("no-server");
    match Client::connect(&name) {
        Err(HostError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {:?}", other.err()),
    }
}

/// A client blocked in `recv` when its server is SIGKILLed does not wait forever: in every
/// receive mode, `recv` returns an error once the server is gone (the keepalive thread
/// reclaims the dead server, and the receive loop notices between its waits).
#[test]
fn recv_returns_when_the_server_is_killed() {
    for mode in [RecvMode::Blocking, RecvMode::default(), RecvMode::BusyPoll] {
        let name = unique_name(&format!("recv-dead-{mode}"));
        let mut s = Peer::spawn(peer_exe!(), &["server", &name]);
        assert_eq!(s.read_line(), "serving 1");
        let client = Client::connect_with(
            &name,
            ClientOptions {
                recv_mode: mode,
                ..ClientOptions::default()
            },
        )
        .unwrap();
        client.wait_connected(Duration::from_secs(10)).unwrap();
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| client.recv());
            std::thread::sleep(Duration::from_millis(50));
            s.kill();
            // The hang guard: a recv that never returns fails the test instead.
            let end = std::time::Instant::now() + Duration::from_secs(60);
            while !waiting.is_finished() {
                assert!(
                    std::time::Instant::now() < end,
                    "recv ({mode}) still waiting after the server died"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            let got = waiting.join().unwrap();
            assert!(
                got.is_err(),
                "recv ({mode}) returned a message from a dead server"
            );
        });
        drop(client);
        let _ = shm_host::System::unlink(
            &shm_host::NativeSystem,
            &shm_host::SegmentName::new(&name).unwrap(),
        );
    }
}

/// Processes allocating and freeing through process caches are killed at whatever point
/// each kill lands (a hit, a refill or a drain under the lock, a full cache): their cached
/// blocks are visible as cached while they run (in `check()` and in `shmipc inspect`), and once they are reclaimed every byte is
/// back and `check()` passes. Four at once, at the default segment size.
#[test]
fn processes_killed_with_full_caches_give_back_all_memory() {
    let name = unique_name("kill-cache");
    let server =
        Server::<shm_host::NativeSystem>::create_with(&name, ServerOptions::default()).unwrap();
    let heap = server.segment();
    let baseline = server.available_bytes().unwrap();
    let mut peers: Vec<Peer> = (0..4)
        .map(|i| Peer::spawn(peer_exe!(), &["cache-churn", &name, &(7 + i).to_string()]))
        .collect();
    for p in &mut peers {
        let line = p.read_line();
        let cached: u64 = line
            .strip_prefix("ready ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("peer said {line:?}"));
        assert!(cached > 0, "{line}");
    }
    let rep = heap.check().unwrap();
    assert!(rep.cached_blocks > 0, "{rep:?}");
    // `shmipc inspect` shows each process's cached bytes.
    let out = std::process::Command::new(shm_tests::shmipc_exe())
        .args(["inspect", &name, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let with_cache = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["cached_bytes"].as_u64().unwrap() > 0)
        .count();
    assert!(with_cache >= 1, "{report}");
    for (round, p) in peers.iter_mut().enumerate() {
        // Let it get into the middle of its churn.
        std::thread::sleep(Duration::from_millis(20 + 13 * round as u64));
        p.kill();
    }
    eventually(Duration::from_secs(30), "all four reclaimed", || {
        let _ = server.watchdog();
        (heap.processes().unwrap().len() == 1).then_some(())
    });
    let rep = heap.check().unwrap();
    assert_eq!(rep.cached_blocks, 0, "{rep:?}");
    assert_eq!(server.available_bytes().unwrap(), baseline);
}
