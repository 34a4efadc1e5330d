//! A forked child is another process: it shares the parent's mapping and handles, but it
//! cannot act as the parent's registration.
#![cfg(unix)]
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::time::Duration;

use shm_host::{Server, ServerOptions};
use shm_tests::{peer_exe, unique_name, Peer};

/// A child forked from a connected client gets `StaleMember` when it allocates or sends
/// with the parent's client (nothing it does lands in the region as the parent), and the
/// parent goes on working: its send arrives.
#[test]
fn a_forked_child_cannot_act_as_its_parent() {
    forked_child_of_a_client("fork", false);
}

/// The same with a buffer cache on the client, a block waiting in it at the fork: the
/// child gets `StaleMember`, not the parent's cached block (the attachment does not touch
/// its cache, or the cache's lock, in a forked child).
#[test]
fn a_forked_child_cannot_use_its_parents_buffer_cache() {
    forked_child_of_a_client("fork-cached", true);
}

fn forked_child_of_a_client(label: &str, cached: bool) {
    let name = unique_name(label);
    let server = Server::create_with(
        &name,
        ServerOptions {
            size: 1 << 20,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let args: &[&str] = if cached {
        &["fork-alloc", &name, "cached"]
    } else {
        &["fork-alloc", &name]
    };
    let mut peer = Peer::spawn(peer_exe!(), args);
    // The server accepts the connection while it receives.
    let mut lines = Vec::new();
    let mut got = None;
    for _ in 0..600 {
        if let Some(m) = server.recv_timeout(Duration::from_millis(100)).unwrap() {
            got = Some((m.tag, m.buffer.to_vec()));
            break;
        }
    }
    let cached_line = peer.read_line();
    let cached_bytes: u64 = cached_line
        .strip_prefix("cached ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected `cached BYTES`, got {cached_line:?}"));
    assert_eq!(
        cached,
        cached_bytes > 0,
        "blocks wait in a buffer cache at the fork exactly when the client has one"
    );
    lines.push(peer.read_line());
    lines.push(peer.read_line());
    assert_eq!(
        lines,
        ["child 0", "parent ok"],
        "child refused, parent works"
    );
    assert_eq!(
        got,
        Some((2, b"parent".to_vec())),
        "only the parent's send arrived"
    );
    assert!(peer.wait(Duration::from_secs(60)).success());
    server.segment().check().unwrap();
}

/// A process cache copied into a forked child refuses to act there (`StaleMember` for an
/// allocation that would take the parent's cached block, and for a free), and the parent
/// gets its cached block back untouched.
#[test]
fn a_forked_child_cannot_use_its_parents_cache() {
    let name = unique_name("fork-cache");
    let server = Server::create_with(
        &name,
        ServerOptions {
            size: 1 << 20,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let mut peer = Peer::spawn(peer_exe!(), &["fork-cache", &name]);
    let lines = [peer.read_line(), peer.read_line()];
    assert_eq!(
        lines,
        ["child 0", "parent ok"],
        "child refused, parent works"
    );
    assert!(peer.wait(Duration::from_secs(60)).success());
    server.segment().check().unwrap();
}
