//! Real processes exchanging messages through one segment.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::collections::HashSet;
use std::time::Duration;

use shm_host::{Server, ServerEvent, ServerOptions};
use shm_tests::{peer_exe, unique_name, wire, Peer};

/// One server and 4 client processes exchange 100,000 messages (25,000 per client, each
/// echoed back): every message arrives exactly once with its checksum intact, in both
/// directions, and afterwards every byte the clients used is back and `check()` passes.
#[test]
fn four_clients_100k_messages_nothing_lost_or_duplicated() {
    const CLIENTS: u32 = 4;
    const PER_CLIENT: u32 = 25_000;
    let name = unique_name("traffic");
    let server = Server::create_with(
        &name,
        ServerOptions {
            size: 32 << 20,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let baseline = server.available_bytes().unwrap();
    let count = PER_CLIENT.to_string();
    let mut peers: Vec<Peer> = (0..CLIENTS)
        .map(|id| {
            Peer::spawn(
                peer_exe!(),
                &["client", &name, &id.to_string(), &count, "16"],
            )
        })
        .collect();
    let mut seen: HashSet<(u32, u32)> = HashSet::new();
    let total = (CLIENTS * PER_CLIENT) as usize;
    while seen.len() < total {
        let msg = server
            .recv_timeout(Duration::from_secs(30))
            .unwrap()
            .unwrap_or_else(|| panic!("stalled after {} messages", seen.len()));
        let (client, seq) = wire::decode(&msg.buffer).unwrap();
        assert_eq!(msg.tag, seq, "tag travels with the message");
        assert!(seen.insert((client, seq)), "duplicate {client}/{seq}");
        server.send(msg.from, msg.buffer, msg.tag).unwrap();
    }
    for (id, p) in peers.iter_mut().enumerate() {
        assert_eq!(p.read_line(), format!("done {id} {PER_CLIENT}"));
        assert!(p.wait(Duration::from_secs(30)).success());
    }
    for id in 0..CLIENTS {
        for seq in 0..PER_CLIENT {
            assert!(seen.contains(&(id, seq)), "lost {id}/{seq}");
        }
    }
    // Each client leaves either by a Disconnect entry (handled inside recv) or, if it exited
    // before the server read that entry, by the heartbeat finding its process gone.
    let mut gone = 0;
    shm_tests::eventually(Duration::from_secs(30), "every client gone", || {
        let _ = server.recv_timeout(Duration::from_millis(20)).unwrap();
        while let Some(ev) = server.try_event() {
            if matches!(ev, ServerEvent::Disconnected(_) | ServerEvent::Died { .. }) {
                gone += 1;
            }
        }
        (gone >= CLIENTS).then_some(())
    });
    shm_tests::eventually(Duration::from_secs(10), "client memory returned", || {
        (server.segment().processes().unwrap().len() == 1).then_some(())
    });
    assert_eq!(server.available_bytes().unwrap(), baseline);
    server.segment().check().unwrap();
}

/// A message sent with `shmipc send`-style waiting is taken by the server before the
/// sender is told so; a client can disconnect and connect again and talk as before.
#[test]
fn clients_disconnect_and_reconnect() {
    let name = unique_name("reconnect");
    let server = Server::create(&name, 4 << 20).unwrap();
    for round in 0..3u32 {
        let mut p = Peer::spawn(
            peer_exe!(),
            &["send-one", &name, &(100 + round).to_string()],
        );
        let msg = server
            .recv_timeout(Duration::from_secs(20))
            .unwrap()
            .unwrap();
        assert_eq!(msg.tag, 100 + round);
        assert_eq!(&msg.buffer[..], b"one");
        server.send(msg.from, msg.buffer, msg.tag).unwrap();
        assert_eq!(p.read_line(), "sent");
        assert_eq!(p.read_line(), format!("echo {}", 100 + round));
        p.write_line("bye");
        assert!(p.wait(Duration::from_secs(20)).success());
    }
    // The same process connecting twice in a row.
    let c1 = shm_host::Client::connect(&name).unwrap();
    drop(c1);
    let c2 = shm_host::Client::connect(&name).unwrap();
    c2.send(c2.alloc_from(b"again").unwrap(), 5).unwrap();
    let msg = server
        .recv_timeout(Duration::from_secs(20))
        .unwrap()
        .unwrap();
    assert_eq!((&msg.buffer[..], msg.tag), (&b"again"[..], 5));
    drop(msg);
    drop(c2);
    server.segment().check().unwrap();
}
