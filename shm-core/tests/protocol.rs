//! Offset queues and the client/server protocol in one address space: each test states
//! the invariant it checks.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

mod common;

use common::Fixture;
use shm_core::format::{KIND_CLIENT, KIND_SERVER, P_CONNECTED};
use shm_core::Beat;
use shm_core::ParticipantId;
use shm_core::{Control, Error, Member, Offset, ProcessId, Received, SendMode};

struct Parties {
    f: Fixture,
    server: Member,
    server_p: ParticipantId,
    client: Member,
    client_p: ParticipantId,
}

/// A server and one connected client, each with a queue of `cap` slots.
fn connected(cap: u32) -> Parties {
    connected_in(256 * 1024, cap)
}

/// Like [`connected`], in a region of `size` bytes (small ones format faster under miri).
fn connected_in(size: usize, cap: u32) -> Parties {
    let f = Fixture::new(size);
    let server = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let client = f.heap.register_as(ProcessId::from_pid(101)).unwrap();
    let sp = f.heap.create_participant(server, KIND_SERVER, cap).unwrap();
    f.heap.start_server(server, sp.at, 100, 3).unwrap();
    let cp = f.heap.create_participant(client, KIND_CLIENT, cap).unwrap();
    let gen = f.heap.connect(client, cp.at, |_| {}).unwrap();
    assert_eq!(gen, 1);
    let got = f.heap.recv(&sp).unwrap();
    assert_eq!(
        got,
        Some(Received::Control {
            control: Control::Connect,
            participant: cp.at
        })
    );
    f.heap.accept(server, cp.at, |_| {}).unwrap();
    assert_eq!(
        f.heap.recv(&cp).unwrap(),
        Some(Received::Control {
            control: Control::Connected,
            participant: cp.at
        })
    );
    Parties {
        server_p: sp.id(),
        client_p: cp.id(),
        f,
        server,
        client,
    }
}

/// Messages arrive in order, each exactly once, and the receiver owns each block from the
/// moment it was sent; the queue wraps around many times.
#[test]
fn messages_arrive_in_order_and_change_owner() {
    let p = connected(4);
    let heap = &p.f.heap;
    let sp = heap.participant(p.server_p.at).unwrap();
    for round in 0..25u32 {
        let blocks: Vec<Offset> = (0..3)
            .map(|_| heap.try_alloc(p.client, 40).unwrap())
            .collect();
        for (i, b) in blocks.iter().enumerate() {
            heap.send(
                p.client,
                p.server_p,
                *b,
                round * 10 + i as u32,
                SendMode::Give,
                |_| {},
            )
            .unwrap();
            assert_eq!(heap.owner_of(*b).unwrap(), Some(p.server.slot()));
        }
        for (i, b) in blocks.iter().enumerate() {
            let got = heap.recv(&sp).unwrap();
            assert_eq!(
                got,
                Some(Received::Message {
                    block: *b,
                    tag: round * 10 + i as u32,
                    from: p.client.incarnation(),
                    shared: false,
                })
            );
            heap.free(p.server, *b).unwrap();
        }
        assert_eq!(heap.recv(&sp).unwrap(), None);
    }
    heap.check().unwrap();
}

/// A full queue refuses the send and the block stays with the sender.
#[test]
fn full_queue_keeps_the_block_with_the_sender() {
    let p = connected(2);
    let heap = &p.f.heap;
    for _ in 0..2 {
        let b = heap.try_alloc(p.client, 8).unwrap();
        heap.send(p.client, p.server_p, b, 1, SendMode::Give, |_| {})
            .unwrap();
    }
    let b = heap.try_alloc(p.client, 8).unwrap();
    assert_eq!(
        heap.send(p.client, p.server_p, b, 1, SendMode::Give, |_| {})
            .err(),
        Some(Error::QueueFull)
    );
    assert_eq!(heap.owner_of(b).unwrap(), Some(p.client.slot()));
    heap.check().unwrap();
}

/// Tags in the control range are refused; so are sends to a participant not connected.
#[test]
fn reserved_tags_and_unconnected_receivers_are_refused() {
    let p = connected(4);
    let heap = &p.f.heap;
    let b = heap.try_alloc(p.client, 8).unwrap();
    assert!(matches!(
        heap.send(
            p.client,
            p.server_p,
            b,
            Control::Connect as u32,
            SendMode::Give,
            |_| {}
        ),
        Err(Error::ReservedTag { .. })
    ));
    let other = heap.register_as(ProcessId::from_pid(102)).unwrap();
    let op = heap.create_participant(other, KIND_CLIENT, 4).unwrap();
    assert_eq!(
        heap.send(p.client, op.id(), b, 1, SendMode::Give, |_| {})
            .err(),
        Some(Error::NotConnected)
    );
    assert_eq!(heap.owner_of(b).unwrap(), Some(p.client.slot()));
}

/// Broadcast: a shared send makes each receiver a co-owner; the block is freed when the
/// last one releases it.
#[test]
fn shared_send_counts_owners() {
    let p = connected(4);
    let heap = &p.f.heap;
    let c2 = heap.register_as(ProcessId::from_pid(102)).unwrap();
    let c2p = heap.create_participant(c2, KIND_CLIENT, 4).unwrap();
    heap.connect(c2, c2p.at, |_| {}).unwrap();
    let sp = heap.participant(p.server_p.at).unwrap();
    heap.recv(&sp).unwrap();
    heap.accept(p.server, c2p.at, |_| {}).unwrap();
    heap.recv(&c2p).unwrap();
    let b = heap.try_alloc(p.server, 64).unwrap();
    heap.send(p.server, p.client_p, b, 7, SendMode::Share, |_| {})
        .unwrap();
    heap.send(p.server, c2p.id(), b, 7, SendMode::Share, |_| {})
        .unwrap();
    assert_eq!(heap.ref_count(b).unwrap(), 3);
    heap.release(p.server, b).unwrap();
    let cp = heap.participant(p.client_p.at).unwrap();
    assert_eq!(
        heap.recv(&cp).unwrap(),
        Some(Received::Message {
            block: b,
            tag: 7,
            from: p.server.incarnation(),
            shared: true,
        })
    );
    assert_eq!(heap.release(p.client, b), Ok(false));
    assert_eq!(heap.release(c2, b), Ok(true));
    heap.check().unwrap();
}

/// A sender dying at any step of a send leaves either no trace (block still the sender's,
/// nothing queued) or a complete send (block the receiver's, entry queued exactly once),
/// once another process has broken its lock - including a death between commit and the
/// publishing store; either way the next send is received whole.
#[test]
fn send_is_atomic_under_crashes_at_every_step() {
    let mut outcomes = (0, 0);
    for steps in 1..=200 {
        let p = connected_in(24 * 1024, 4);
        let heap = &p.f.heap;
        let b = heap.try_alloc(p.client, 32).unwrap();
        heap.faults().arm(steps);
        let r = heap.send(p.client, p.server_p, b, 9, SendMode::Give, |_| {});
        let crashed = r.err() == Some(Error::InjectedCrash);
        heap.faults().arm(0);
        if crashed {
            // The sender is dead; the next operation (as another process) recovers.
            p.f.platform.kill(1);
            p.f.platform.set_pid(2);
        } else {
            assert!(r.is_ok(), "{:?}", r.err());
        }
        heap.check().unwrap();
        let sp = heap.participant(p.server_p.at).unwrap();
        let owner = heap.owner_of(b).unwrap();
        let first = heap.recv(&sp).unwrap();
        let second = heap.recv(&sp).unwrap();
        assert_eq!(second, None, "at most one entry");
        if owner == Some(p.server.slot()) {
            assert_eq!(
                first,
                Some(Received::Message {
                    block: b,
                    tag: 9,
                    from: p.client.incarnation(),
                    shared: false,
                })
            );
            outcomes.1 += 1;
        } else {
            assert_eq!(owner, Some(p.client.slot()));
            assert_eq!(first, None);
            outcomes.0 += 1;
        }
        // The queue goes on: whatever an undone send wrote into its slot (entry words are
        // not journaled), the next entry arrives whole, exactly once.
        let b2 = heap.try_alloc(p.client, 32).unwrap();
        heap.send(p.client, p.server_p, b2, 10, SendMode::Give, |_| {})
            .unwrap();
        assert_eq!(
            heap.recv(&sp).unwrap(),
            Some(Received::Message {
                block: b2,
                tag: 10,
                from: p.client.incarnation(),
                shared: false,
            })
        );
        assert_eq!(heap.recv(&sp).unwrap(), None);
        heap.check().unwrap();
        if !crashed {
            assert!(steps > 1);
            break;
        }
    }
    assert!(outcomes.0 > 5, "crashes before commit: {outcomes:?}");
    assert!(outcomes.1 >= 1, "crashes after commit: {outcomes:?}");
}

/// A restarted server gets a new generation; clients of the old one are refused by the new
/// server until they reconnect.
#[test]
fn server_restart_changes_generation() {
    let p = connected(4);
    let heap = &p.f.heap;
    // The server dies; a watchdog reclaims it.
    p.f.platform.kill(100);
    assert_eq!(heap.reclaim_dead().unwrap(), 1);
    assert!(!heap.server_status().running);
    let b = heap.try_alloc(p.client, 8).unwrap();
    assert!(heap
        .send(p.client, p.server_p, b, 1, SendMode::Give, |_| {})
        .is_err());
    let cp = heap.participant(p.client_p.at).unwrap();
    assert!(matches!(
        heap.connect(p.client, cp.at, |_| {}),
        Err(Error::NoServer)
    ));
    // A new server.
    let s2 = heap.register_as(ProcessId::from_pid(103)).unwrap();
    let s2p = heap.create_participant(s2, KIND_SERVER, 4).unwrap();
    assert_eq!(heap.start_server(s2, s2p.at, 100, 3).unwrap(), 2);
    // A second server while this one lives is refused.
    let s3 = heap.register_as(ProcessId::from_pid(104)).unwrap();
    let s3p = heap.create_participant(s3, KIND_SERVER, 4).unwrap();
    assert_eq!(
        heap.start_server(s3, s3p.at, 100, 3),
        Err(Error::ServerRunning)
    );
    // The old client reconnects to generation 2.
    let gen = heap.connect(p.client, cp.at, |_| {}).unwrap();
    assert_eq!(gen, 2);
    assert!(matches!(
        heap.recv(&s2p).unwrap(),
        Some(Received::Control {
            control: Control::Connect,
            ..
        })
    ));
    heap.accept(s2, cp.at, |_| {}).unwrap();
    assert_eq!(
        cp.rec.state.load(std::sync::atomic::Ordering::Relaxed),
        P_CONNECTED
    );
    heap.check().unwrap();
}

/// Heartbeats: a client that takes its keepalives never misses; one that stops misses
/// once per beat. Keepalive packets come from the server's reserve, so they keep flowing
/// on a full heap.
#[test]
fn heartbeat_counts_misses_and_survives_a_full_heap() {
    let p = connected(4);
    let heap = &p.f.heap;
    heap.reserve(p.server, 1024).unwrap();
    // Fill the heap.
    let mut hog = Vec::new();
    while let Ok(b) = heap.try_alloc(p.client, 512) {
        hog.push(b);
    }
    while let Ok(b) = heap.try_alloc(p.client, 16) {
        hog.push(b);
    }
    for seq in 1..=5 {
        assert_eq!(
            heap.heartbeat(p.server, p.client_p).unwrap(),
            Beat::Sent { seq }
        );
        assert_eq!(
            heap.take_keepalive(p.client, p.client_p.at).unwrap(),
            Some(seq)
        );
    }
    assert_eq!(
        heap.heartbeat(p.server, p.client_p).unwrap(),
        Beat::Sent { seq: 6 }
    );
    assert_eq!(
        heap.heartbeat(p.server, p.client_p).unwrap(),
        Beat::Missed { missed: 1 }
    );
    assert_eq!(
        heap.heartbeat(p.server, p.client_p).unwrap(),
        Beat::Missed { missed: 2 }
    );
    heap.check().unwrap();
}

/// Reclaiming a dead client returns its participant, its queue and every message waiting
/// in it: free bytes go back to what they were before it registered.
#[test]
fn reclaiming_a_client_returns_its_queue_and_messages() {
    let p = connected(8);
    let heap = &p.f.heap;
    let baseline = heap.stats().unwrap().free_bytes;
    let c2 = heap.register_as(ProcessId::from_pid(105)).unwrap();
    let c2p = heap.create_participant(c2, KIND_CLIENT, 8).unwrap();
    heap.connect(c2, c2p.at, |_| {}).unwrap();
    let sp = heap.participant(p.server_p.at).unwrap();
    heap.recv(&sp).unwrap();
    heap.accept(p.server, c2p.at, |_| {}).unwrap();
    for i in 0..5 {
        let b = heap.try_alloc(p.server, 100 + i).unwrap();
        heap.send(p.server, c2p.id(), b, i, SendMode::Give, |_| {})
            .unwrap();
    }
    let mine = heap.try_alloc(c2, 300).unwrap();
    heap.share(c2, mine, p.server).unwrap();
    p.f.platform.kill(105);
    assert_eq!(heap.reclaim_dead().unwrap(), 1);
    heap.release(p.server, mine).unwrap();
    assert_eq!(heap.stats().unwrap().free_bytes, baseline);
    assert!(heap
        .participants()
        .unwrap()
        .all(|(_, _, s)| s != c2.incarnation()));
    heap.check().unwrap();
}

/// Bytes from a fixed xorshift generator.
fn stream(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The protocol fuzz target's interpreter (`testkit::protocol_ops`) on fixed inputs: on a
/// well-formed region, long operation streams (crashes included) keep `check()` passing,
/// never report corruption, and deliver every message to a receiver that owns it; the
/// runs reach every part of the protocol (guards against an interpreter that silently
/// stopped doing something).
#[test]
fn protocol_interpreter_on_fixed_inputs() {
    use shm_core::testkit::protocol_ops::{self, ProtoStats};
    let (runs, len) = if cfg!(miri) { (1, 120) } else { (24, 1200) };
    let mut total = ProtoStats::default();
    for seed in 0..runs {
        let ops = stream(0x5eed_0000 + seed, len);
        let s = protocol_ops::run(&protocol_ops::encode_formed(seed as u8, &ops));
        total.ops += s.ops;
        total.ok += s.ok;
        total.messages += s.messages;
        total.accepted += s.accepted;
        total.keepalives += s.keepalives;
        total.crashes += s.crashes;
        total.reclaimed += s.reclaimed;
    }
    println!("{total:?}");
    assert!(total.ok > total.ops / 4, "{total:?}");
    if !cfg!(miri) {
        assert!(total.messages > 20, "{total:?}");
        assert!(total.accepted > 5, "{total:?}");
        assert!(total.keepalives > 5, "{total:?}");
        assert!(total.crashes > 20, "{total:?}");
        assert!(total.reclaimed > 5, "{total:?}");
    }
}

/// The interpreter's hostile scenario on fixed inputs: a protocol region image (intact,
/// then with bytes flipped) attached and driven by forged members: every call returns.
/// The intact image must let operations through (the scenario reaches past `attach`).
#[test]
fn protocol_interpreter_on_hostile_images() {
    use shm_core::testkit::protocol_ops;
    let img = protocol_ops::sample_image(16 * 1024);
    let ops = stream(0xbad, if cfg!(miri) { 120 } else { 1500 });
    let s = protocol_ops::run(&protocol_ops::encode_hostile(&img, &ops));
    assert!(s.ok > 10, "{s:?}");
    let flips = if cfg!(miri) { 1 } else { 40 };
    for i in 0..flips {
        let mut bad = img.clone();
        for (j, b) in stream(i + 1, 6).chunks(2).enumerate() {
            let at = (usize::from(b[0]) << 6 | usize::from(b[1])) * (j + 1) % bad.len();
            bad[at] ^= 1 << (b[1] % 8);
        }
        protocol_ops::run(&protocol_ops::encode_hostile(&bad, &ops));
    }
}

/// The server entry lives in a root block, allocated at the first server start (a fresh
/// heap has none), owned by no process and kept by reclaim: a dead server's entry is
/// recognised by its incarnation no longer being registered, and a new server reuses the
/// block with the next generation.
#[test]
fn dead_server_entry_is_recognised_by_its_incarnation() {
    let fresh = Fixture::new(64 * 1024);
    assert_eq!(
        fresh.heap.snapshot().root,
        0,
        "no server entry without a server"
    );
    assert!(!fresh.heap.server_status().running);

    let p = connected(4);
    let heap = &p.f.heap;
    let root = heap.snapshot().root;
    assert_ne!(root, 0);
    let before = heap.server_status();
    assert!(before.running);
    assert_eq!(before.owner, p.server.incarnation());

    p.f.platform.kill(100);
    heap.reclaim(p.server.incarnation()).unwrap();
    let after = heap.server_status();
    assert!(!after.running, "its incarnation is gone");
    assert_eq!(
        after.generation, before.generation,
        "the entry itself is kept"
    );
    assert_eq!(heap.snapshot().root, root);
    heap.check().unwrap();
    assert_eq!(
        heap.connect(p.client, p.client_p.at, |_| {}),
        Err(Error::NoServer)
    );

    // A new process in the reclaimed slot (same slot, new serial) is not the old server.
    let next = heap.register_as(ProcessId::from_pid(102)).unwrap();
    assert_eq!(next.slot(), p.server.slot());
    assert!(!heap.server_status().running);
    let np = heap.create_participant(next, KIND_SERVER, 4).unwrap();
    assert_eq!(heap.start_server(next, np.at, 100, 3), Ok(2));
    assert_eq!(heap.snapshot().root, root, "the root block is reused");
    assert!(heap.server_status().running);
    heap.check().unwrap();
}

/// Server identity across a takeover: a new server may replace one that died before it was
/// reclaimed; from then on neither the dead server's incarnation nor the process that later
/// gets its slot acts as the server (heartbeats refused, stop ignored), reclaiming the dead
/// one leaves the new entry alone, and a second start while the new server lives is
/// refused.
#[test]
fn takeover_entry_belongs_to_the_new_server_only() {
    let p = connected(4);
    let heap = &p.f.heap;
    p.f.platform.kill(100);

    // Takeover before the dead server is reclaimed: the root block is reused.
    let root = heap.snapshot().root;
    let new = heap.register_as(ProcessId::from_pid(102)).unwrap();
    let np = heap.create_participant(new, KIND_SERVER, 4).unwrap();
    assert_eq!(heap.start_server(new, np.at, 100, 3), Ok(2));
    assert_eq!(heap.snapshot().root, root);
    let owner = heap.server_status().owner;
    assert_eq!(owner, new.incarnation());

    // The dead server, still registered, is not the server any more.
    assert_eq!(heap.heartbeat(p.server, p.client_p), Err(Error::NoServer));
    heap.stop_server(p.server).unwrap();
    assert!(
        heap.server_status().running,
        "the old server stopped the new"
    );

    // Reclaiming it leaves the new entry alone; its slot's next owner is not the server.
    heap.reclaim(p.server.incarnation()).unwrap();
    let st = heap.server_status();
    assert!(st.running);
    assert_eq!((st.owner, st.generation), (owner, 2));
    let heir = heap.register_as(ProcessId::from_pid(103)).unwrap();
    assert_eq!(heir.slot(), p.server.slot());
    assert_eq!(heap.heartbeat(heir, p.client_p), Err(Error::NoServer));
    heap.stop_server(heir).unwrap();
    assert!(
        heap.server_status().running,
        "the slot's heir stopped the server"
    );

    // A second server while this one lives is refused.
    let rival = heap.register_as(ProcessId::from_pid(104)).unwrap();
    let rp = heap.create_participant(rival, KIND_SERVER, 4).unwrap();
    assert_eq!(
        heap.start_server(rival, rp.at, 100, 3),
        Err(Error::ServerRunning)
    );
    assert!(matches!(
        heap.heartbeat(new, p.client_p),
        Ok(Beat::Sent { .. })
    ));
    assert_eq!(heap.snapshot().root, root, "one root block");
    heap.check().unwrap();
}

/// A send of a block its sender owns alone journals 14 words: 11 to move the owner (a cell
/// taken from the receiver's free list and one returned to the sender's, the chain link,
/// both processes' counts) and 3 for the queue (its tail, its count, the deferred store's
/// target). The entry's words and the rest of the deferred store are not journaled:
/// nothing reads them before the store publishes them.
#[test]
fn a_send_journals_fourteen_words() {
    let p = connected(4);
    let b = p.f.heap.try_alloc(p.client, 32).unwrap();
    let fresh = p.f.attach_again();
    fresh
        .send(p.client, p.server_p, b, 3, SendMode::Give, |_| {})
        .unwrap();
    assert_eq!(fresh.journal_high_water(), 14);
    p.f.heap.check().unwrap();
}
