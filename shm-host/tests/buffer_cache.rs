//! Buffer caches (`ServerOptions::cache`, `ClientOptions::cache`): buffers, the received
//! ones included, go back into the process's cache when dropped and come out of it again,
//! without heap allocations; broadcast buffers, co-owned, are released as before; a
//! client leaving gives its cached blocks back with everything else.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::time::Duration;

use shm_host::{CacheConfig, Client, ClientOptions, HostError, Server, ServerOptions};

const WAIT: Duration = Duration::from_secs(10);

fn name(test: &str) -> String {
    format!("bcache-{test}-{}", std::process::id())
}

fn pair(test: &str) -> (Server, Client) {
    let name = name(test);
    let server = Server::create_with(
        &name,
        ServerOptions {
            size: 8 << 20,
            cache: Some(CacheConfig::default()),
            // No keepalive packets (each one an allocation and a free in the heap) while
            // a test counts the heap's allocations and frees.
            heartbeat: Duration::from_secs(3600),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let client = cached_client(&server, &name);
    (server, client)
}

/// A client of segment `name` with a buffer cache, accepted by `server`.
fn cached_client(server: &Server, name: &str) -> Client {
    let client = Client::connect_with(
        name,
        ClientOptions {
            cache: Some(CacheConfig::default()),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    // The server accepts while it receives; nothing else is in its queue yet.
    assert!(server.try_recv().unwrap().is_none());
    client
}

/// Drops the last share of a block (`drop_last`) and checks that the block was freed in
/// the heap, not put in a cache.
fn assert_freed_not_cached(server: &Server, drop_last: impl FnOnce()) {
    let cached = server.segment().check().unwrap().cached_blocks;
    let frees = server.segment().stats().unwrap().frees;
    drop_last();
    assert_eq!(server.segment().check().unwrap().cached_blocks, cached);
    assert_eq!(server.segment().stats().unwrap().frees, frees + 1);
}

/// Waits up to `WAIT` for `done`, failing with `what` after that.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// After a first round trip has filled both caches, further round trips (allocate, send,
/// receive, drop, each way) make no heap allocation and no heap free; the data arrives
/// intact, and the heap's check counts the cached blocks.
#[test]
fn round_trips_reuse_cached_blocks() {
    let (server, client) = pair("trips");
    let trip = |i: u32| {
        let b = client.alloc_from(&i.to_le_bytes()).unwrap();
        client.send(b, 1).unwrap();
        let m = server.recv_timeout(WAIT).unwrap().unwrap();
        assert_eq!(&m.buffer[..], &i.to_le_bytes());
        let answer = server.alloc_from(&(i + 1).to_le_bytes()).unwrap();
        server.send(m.from, answer, 2).unwrap();
        drop(m);
        let back = client.recv_timeout(WAIT).unwrap().unwrap();
        assert_eq!(&back.buffer[..], &(i + 1).to_le_bytes());
    };
    trip(0);
    let before = server.segment().stats().unwrap();
    for i in 1..200 {
        trip(i);
    }
    let after = server.segment().stats().unwrap();
    assert_eq!(
        (after.allocs, after.frees),
        (before.allocs, before.frees),
        "round trips through caches allocate and free nothing in the heap"
    );
    assert!(server.segment().check().unwrap().cached_blocks >= 2);
}

/// A broadcast buffer is co-owned: dropping it in one process releases that process's
/// share under the lock (no cache takes a block others own or owned: their release may
/// still be in flight), and the last owner's drop frees it in the heap, not into a cache.
#[test]
fn co_owned_buffers_are_released_not_cached() {
    let (server, client) = pair("shared");
    let b = server.alloc_from(b"to all").unwrap();
    let report = server.broadcast(&b, 3);
    assert_eq!(report.sent.len(), 1, "{:?}", report.failed);
    let m = client.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(m.buffer.owners().unwrap(), 2);
    drop(m);
    assert_eq!(b.owners().unwrap(), 1, "the client's share was released");
    assert_eq!(&b[..], b"to all");
    assert_freed_not_cached(&server, move || drop(b));
}

/// A broadcast block whose other owner let go before it was received is still released
/// under the lock, not cached: the receiver knows it was sent shared from the queue entry,
/// not from a count another owner's release may be changing.
#[test]
fn a_broadcast_received_after_the_sender_let_go_is_released() {
    let (server, client) = pair("shared-late");
    let b = server.alloc_from(b"to all").unwrap();
    assert_eq!(server.broadcast(&b, 3).sent.len(), 1);
    drop(b); // the server's share, released
    let m = client.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(m.buffer.owners().unwrap(), 1);
    assert_freed_not_cached(&server, move || drop(m));
}

/// A client that disconnects gives back every block, its cached ones included: the free
/// bytes and the server's cache add up to what they were before it came.
#[test]
fn a_leaving_client_gives_back_its_cache() {
    let (server, client) = pair("leave");
    drop(client);
    let base_free = server.available_bytes().unwrap();
    let base_cached = server.segment().check().unwrap().cached_bytes;
    let client = cached_client(&server, &name("leave"));
    let held: Vec<_> = (0..50)
        .map(|i| client.alloc(64 + i * 10).unwrap())
        .collect();
    drop(held); // into the client's cache
    assert!(server.segment().check().unwrap().cached_bytes > base_cached);
    drop(client);
    wait_until("memory came back", || {
        let _ = server.try_recv().unwrap();
        let free = server.available_bytes().unwrap();
        let cached = server.segment().check().unwrap().cached_bytes;
        free + cached == base_free + base_cached
    });
}

/// An idle client's cache goes back to the heap when the heap runs low: a failed
/// allocation asks every cache to drain, and the client's keepalive tick honours the
/// request though the application does nothing.
#[test]
fn an_idle_client_gives_its_cache_back_when_the_heap_runs_low() {
    let name = name("idle-client");
    idle_cache_drains(&name, Idle::Client);
}

/// The same for an idle server: its heartbeat tick honours the request.
#[test]
fn an_idle_server_gives_its_cache_back_when_the_heap_runs_low() {
    let name = name("idle-server");
    idle_cache_drains(&name, Idle::Server);
}

#[derive(Clone, Copy, PartialEq)]
enum Idle {
    Client,
    Server,
}

/// `idle` (with a cache) fills its cache and goes idle; the other side (without one)
/// allocates until the heap is full; the idle side's cache must then empty by itself.
fn idle_cache_drains(name: &str, idle: Idle) {
    let cache = |side| (side == idle).then(CacheConfig::default);
    let server = Server::create_with(
        name,
        ServerOptions {
            size: 2 << 20,
            cache: cache(Idle::Server),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let client = Client::connect_with(
        name,
        ClientOptions {
            cache: cache(Idle::Client),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert!(server.try_recv().unwrap().is_none());
    let alloc = |n: usize| match idle {
        Idle::Client => client.alloc(n),
        Idle::Server => server.alloc(n),
    };
    let held: Vec<_> = [1000, 2000, 4000, 8000]
        .iter()
        .flat_map(|&n| (0..8).map(move |_| n))
        .map(|n| alloc(n).unwrap())
        .collect();
    drop(held);
    let cached = || server.segment().check().unwrap().cached_bytes;
    assert!(
        cached() > 0,
        "the idle side's cache holds its dropped buffers"
    );
    // The busy side fills the heap until an allocation fails (which asks caches to
    // drain; whatever a drain gives back meanwhile, the loop takes too).
    let mut hog = Vec::new();
    loop {
        let b = match idle {
            Idle::Client => server.alloc(4096),
            Idle::Server => client.alloc(4096),
        };
        match b {
            Ok(b) => hog.push(b),
            Err(_) => break,
        }
    }
    wait_until("the idle side drained its cache", || cached() == 0);
    drop(hog);
    drop(client);
}

/// When its cache cannot refill (the heap is full), a cached client's allocation goes the
/// way an uncached one does: it fails with `OutOfMemory`; with a timeout it goes to the
/// heap's wait (a cache cannot wait), so it fails with `Timeout`, not `OutOfMemory`, when
/// nothing is freed; and it succeeds after another process has freed memory.
#[test]
fn a_full_heap_sends_cached_allocations_the_usual_way() {
    let name = name("full");
    let server = Server::create_with(
        &name,
        ServerOptions {
            size: 2 << 20,
            // No keepalive packets coming and going while the heap is full.
            heartbeat: Duration::from_secs(3600),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let client = cached_client(&server, &name);
    // Full: what is left is smaller than the client's block (about 1.3 KB).
    let mut hog = Vec::new();
    for size in [4096, 512, 64] {
        while let Ok(b) = server.alloc(size) {
            hog.push(b);
        }
    }
    let err = client.alloc(1000).err();
    assert!(
        matches!(
            err,
            Some(HostError::Core(shm_core::Error::OutOfMemory { .. }))
        ),
        "{err:?}"
    );
    let err = client.alloc_timeout(1000, Duration::from_millis(20)).err();
    assert!(
        matches!(err, Some(HostError::Core(shm_core::Error::Timeout))),
        "{err:?}"
    );
    drop(hog);
    let got = client.alloc_timeout(1000, WAIT).map(|b| b.capacity());
    assert!(matches!(got, Ok(n) if n >= 1000), "{got:?}");
    server.segment().check().unwrap();
}
