//! Who may act: members, incarnations and participant ids (see `Member` and `Incarnation`). Each test
//! states the invariant it checks.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

mod common;

use std::sync::atomic::Ordering::Relaxed;

use common::Fixture;
use shm_core::format::record_bytes;
use shm_core::format::MAX_SLOTS;
use shm_core::format::{BlockHeader, OwnerRef};
use shm_core::format::{KIND_CLIENT, KIND_SERVER, P_DISCONNECTED};
use shm_core::testkit::snapshot::Snapshot;
use shm_core::testkit::TestPlatform;
use shm_core::ParticipantId;
use shm_core::{
    Control, CorruptionKind, Error, Heap, HeapConfig, Incarnation, Member, ProcessId, Received,
    SendMode,
};

type H = Heap<'static, TestPlatform>;

fn snap(heap: &H) -> Snapshot {
    Snapshot::take(heap).unwrap()
}

/// Asserts two snapshots are equal, naming the first difference.
fn same(a: &Snapshot, b: &Snapshot, what: &str) {
    if let Some(d) = a.diff(b) {
        panic!("{what} changed the heap: {d}");
    }
}

/// A server and a connected client, queues of 4.
struct Parties {
    f: Fixture,
    server: Member,
    sp: ParticipantId,
    client: Member,
    cp: ParticipantId,
}

fn connected(f: Fixture, server_pid: u32, client_pid: u32) -> Parties {
    let heap = &f.heap;
    let server = heap.register_as(ProcessId::from_pid(server_pid)).unwrap();
    let sp = heap.create_participant(server, KIND_SERVER, 4).unwrap();
    heap.start_server(server, sp.at, 100, 3).unwrap();
    let client = heap.register_as(ProcessId::from_pid(client_pid)).unwrap();
    let cp = connect(heap, server, client);
    Parties {
        sp: sp.id(),
        cp,
        f,
        server,
        client,
    }
}

/// Creates `client`'s participant and connects it to `server` (both queues drained).
fn connect(heap: &H, server: Member, client: Member) -> ParticipantId {
    let sp = heap.participant(heap.server_status().participant).unwrap();
    let cp = heap.create_participant(client, KIND_CLIENT, 4).unwrap();
    heap.connect(client, cp.at, |_| {}).unwrap();
    assert_eq!(
        heap.recv(&sp).unwrap(),
        Some(Received::Control {
            control: Control::Connect,
            participant: cp.at
        })
    );
    heap.accept(server, cp.at, |_| {}).unwrap();
    assert!(heap.recv(&cp).unwrap().is_some());
    cp.id()
}

/// A reclaim names an incarnation, not a slot: once process A was reclaimed and B
/// registered in A's slot, reclaiming A again fails with `StaleMember` and leaves B's
/// record, blocks and ownership exactly as they were.
#[test]
fn stale_reclaim_does_not_touch_the_slots_next_owner() {
    let f = Fixture::new(64 * 1024);
    let heap = &f.heap;
    let keep = heap.register_as(ProcessId::from_pid(10)).unwrap();
    let a = heap.register_as(ProcessId::from_pid(11)).unwrap();
    heap.try_alloc(a, 64).unwrap();
    f.platform.kill(11);
    assert_eq!(heap.reclaim(a.incarnation()).unwrap().blocks_freed, 1);

    let b = heap.register_as(ProcessId::from_pid(12)).unwrap();
    assert_eq!(b.slot(), a.slot(), "arranged: B reuses A's slot");
    assert_ne!(b.serial(), a.serial());
    let mine = heap.try_alloc(b, 100).unwrap();
    let shared = heap.try_alloc(keep, 40).unwrap();
    heap.share(keep, shared, b).unwrap();
    heap.reserve(b, 200).unwrap();
    let before = snap(heap);

    assert_eq!(
        heap.reclaim(a.incarnation()),
        Err(Error::StaleMember {
            process: a.incarnation()
        })
    );
    // Through the watchdog too: A's pid is dead, but B (alive) holds the slot.
    assert_eq!(heap.reclaim_dead().unwrap(), 0);
    same(&before, &snap(heap), "a stale reclaim");
    assert_eq!(heap.owner_of(mine).unwrap(), Some(b.slot()));
    assert_eq!(heap.ref_count(shared).unwrap(), 2);
    assert_eq!(
        heap.process(b.slot()).unwrap().incarnation(),
        b.incarnation()
    );
    heap.check().unwrap();
}

/// A `ParticipantId` names its owner's incarnation: after a client's participant was
/// reclaimed and a new client got a participant at the very same offset (and the same
/// slot), a send to the old id fails with `PeerGone`, the block stays the sender's and
/// the new client's queue stays empty; a send to the new id works.
#[test]
fn stale_participant_id_gives_peer_gone() {
    let p = connected(Fixture::new(64 * 1024), 100, 101);
    let heap = &p.f.heap;
    p.f.platform.kill(101);
    assert_eq!(heap.reclaim_dead().unwrap(), 1);

    let c2 = heap.register_as(ProcessId::from_pid(102)).unwrap();
    let cp2 = connect(heap, p.server, c2);
    assert_eq!(cp2.at, p.cp.at, "arranged: the same participant offset");
    assert_eq!(cp2.owner.slot, p.cp.owner.slot, "arranged: the same slot");
    assert_ne!(cp2.owner, p.cp.owner);

    let b = heap.try_alloc(p.server, 32).unwrap();
    for mode in [SendMode::Give, SendMode::Share] {
        assert_eq!(
            heap.send(p.server, p.cp, b, 1, mode, |_| {}),
            Err(Error::PeerGone)
        );
    }
    assert_eq!(
        heap.send_control(p.server, p.cp, Control::Disconnected, p.cp.at, |_| {}),
        Err(Error::PeerGone)
    );
    assert_eq!(heap.heartbeat(p.server, p.cp), Err(Error::PeerGone));
    assert_eq!(heap.owner_of(b).unwrap(), Some(p.server.slot()));
    assert_eq!(heap.ref_count(b).unwrap(), 1);
    let q = heap.participant(cp2.at).unwrap();
    assert!(q.queue.is_empty());
    assert_eq!(q.queue.enqueued(), 1, "only the Connected answer");
    assert_eq!(q.info().state, shm_core::format::P_CONNECTED);

    heap.send(p.server, cp2, b, 1, SendMode::Give, |_| {})
        .unwrap();
    assert_eq!(
        heap.recv(&q).unwrap(),
        Some(Received::Message {
            block: b,
            tag: 1,
            from: p.server.incarnation(),
            shared: false,
        })
    );
    heap.check().unwrap();
}

/// A member with the right slot but a wrong serial (a forged or outdated handle) and a
/// revoked member are refused with `StaleMember` by alloc, free, give, share, release,
/// reserve and send, and nothing changes.
#[test]
fn forged_and_revoked_members_are_refused() {
    let p = connected(Fixture::new(64 * 1024), 100, 101);
    let heap = &p.f.heap;
    let c = p.client;
    let block = heap.try_alloc(c, 64).unwrap();
    let before = snap(heap);
    let forged = Member::forged_for_tests(Incarnation {
        slot: c.slot(),
        serial: c.serial().wrapping_add(1),
    });
    for m in [forged, c.revoked()] {
        let stale = Err(Error::StaleMember {
            process: m.incarnation(),
        });
        assert_eq!(heap.try_alloc(m, 16).map(drop), stale);
        assert_eq!(heap.try_alloc_service(m, 16).map(drop), stale);
        assert_eq!(heap.free(m, block), stale);
        assert_eq!(heap.give(m, block, p.server), stale);
        assert_eq!(heap.share(m, block, p.server), stale);
        assert_eq!(heap.release(m, block).map(drop), stale);
        assert_eq!(heap.reserve(m, 64).map(drop), stale);
        assert_eq!(
            heap.send(m, p.sp, block, 1, SendMode::Give, |_| {})
                .map(drop),
            stale
        );
        assert_eq!(
            heap.send(m, p.sp, block, 1, SendMode::Share, |_| {})
                .map(drop),
            stale
        );
        assert_eq!(heap.unregister(m).map(drop), stale);
        // As the receiving side of a give, too.
        assert_eq!(
            heap.give(c, block, m),
            Err(Error::StaleMember {
                process: m.incarnation()
            })
        );
        same(&before, &snap(heap), "an operation by a stale member");
    }
    // The real member still works.
    heap.send(c, p.sp, block, 1, SendMode::Give, |_| {})
        .unwrap();
    assert_eq!(heap.owner_of(block).unwrap(), Some(p.server.slot()));
    heap.check().unwrap();
}

/// A region whose `proc_capacity` claims u32::MAX slots and whose block has a reference
/// count of u32::MAX on an owner cell linked to itself: `release` (and every other walk of
/// that chain) returns an error after a bounded walk (at most `MAX_SLOTS` cells, a
/// process-local bound) instead of following the loop 2^32 times under the lock. The call
/// returning with `Corrupted(BadRefCount)` is the assertion; a 2^32-step walk would not
/// return in any test run. A count of exactly `MAX_SLOTS` on the same loop walks the most
/// the bound allows and must end in the same error.
#[test]
fn hostile_capacity_and_self_linked_cell_give_an_error() {
    // Under miri a shorter legal walk: the bound itself is exercised by the u32::MAX case.
    let longest = if cfg!(miri) { 200 } else { MAX_SLOTS };
    for refs in [u32::MAX, MAX_SLOTS + 1, longest] {
        let f = Fixture::new(64 * 1024);
        let heap = &f.heap;
        let a = heap.register_as(ProcessId::from_pid(10)).unwrap();
        let b = heap.register_as(ProcessId::from_pid(11)).unwrap();
        let x = heap.try_alloc(a, 64).unwrap();
        let hdr = heap.raw_header_for_tests();
        let region = heap.region();
        let h: &BlockHeader = region.get(x.get() - heap.block_header_size()).unwrap();
        let head = OwnerRef::unpack(h.owner.load(Relaxed)).unwrap();
        assert_eq!(head.slot, a.slot().0);
        let table = hdr.heap.proc_table.load(Relaxed);
        let rec = region
            .word(table + 4 * u32::from(head.slot))
            .unwrap()
            .load(Relaxed);
        let cell_next = rec + record_bytes(head.cell) + 4;
        // The corruption: the cell names itself as the next owner, the count is huge, the
        // table claims u32::MAX slots.
        region.word(cell_next).unwrap().store(head.pack(), Relaxed);
        h.link.store(refs, Relaxed);
        hdr.heap.proc_capacity.store(u32::MAX, Relaxed);

        let r = heap.release(a, x);
        assert!(
            matches!(&r, Err(Error::Corrupted(c)) if c.kind == CorruptionKind::BadRefCount),
            "refs {refs}: release gave {r:?}"
        );
        // Every other call that walks the chain returns as well, with an error.
        assert!(heap.free(a, x).is_err());
        assert!(heap.give(a, x, b).is_err());
        assert!(heap.share(a, x, b).is_err());
        assert!(heap.owners(x, |_| {}).is_err());
        assert!(heap.check().is_err());
        // Whatever these answer, they answer.
        let _ = heap.stats();
        let _ = heap.processes().map(|ps| ps.count());
        let _ = heap.reclaim_dead();
        f.platform.kill(10);
        let _ = heap.reclaim(a.incarnation());
    }
}

/// `reclaim` refuses a process the platform reports alive with `StillAlive`: nothing is
/// freed, its participant stays reachable, the server entry stays. ("Cannot tell" counts
/// as alive; only the platform's "dead" lets others take a process's memory.)
#[test]
fn reclaiming_a_live_process_is_refused() {
    let p = connected(Fixture::new(64 * 1024), 100, 101);
    let heap = &p.f.heap;
    heap.try_alloc(p.client, 64).unwrap();
    heap.reserve(p.server, 128).unwrap();
    let before = snap(heap);
    for m in [p.client, p.server] {
        assert_eq!(
            heap.reclaim(m.incarnation()),
            Err(Error::StillAlive {
                process: m.incarnation()
            })
        );
    }
    assert_eq!(heap.reclaim_dead().unwrap(), 0);
    same(&before, &snap(heap), "reclaiming live processes");
    assert!(heap.server_status().running);
    heap.participant(p.cp.at).unwrap();
    // Once dead it goes.
    p.f.platform.kill(101);
    assert!(heap.reclaim(p.client.incarnation()).unwrap().references >= 2);
    assert!(heap.participant(p.cp.at).is_err());
    heap.check().unwrap();
}

/// A client whose participant the server marked disconnected (`send_control` with
/// `Control::Disconnected`) can no longer send: `Error::Disconnected`, its block stays its
/// own with one reference, and nothing reaches the server's queue.
#[test]
fn a_disconnected_sender_cannot_send() {
    let p = connected(Fixture::new(64 * 1024), 100, 101);
    let heap = &p.f.heap;
    heap.send_control(p.server, p.cp, Control::Disconnected, p.cp.at, |_| {})
        .unwrap();
    let cp = heap.participant(p.cp.at).unwrap();
    assert_eq!(cp.info().state, P_DISCONNECTED);
    assert_eq!(
        heap.recv(&cp).unwrap(),
        Some(Received::Control {
            control: Control::Disconnected,
            participant: p.cp.at
        })
    );
    let b = heap.try_alloc(p.client, 48).unwrap();
    let before = snap(heap);
    for mode in [SendMode::Give, SendMode::Share] {
        assert_eq!(
            heap.send(p.client, p.sp, b, 3, mode, |_| {}),
            Err(Error::Disconnected)
        );
    }
    same(&before, &snap(heap), "a refused send");
    assert_eq!(heap.owner_of(b).unwrap(), Some(p.client.slot()));
    assert_eq!(heap.ref_count(b).unwrap(), 1);
    let sp = heap.participant(p.sp.at).unwrap();
    assert_eq!(heap.recv(&sp).unwrap(), None);
    // Reconnecting makes it a sender again.
    heap.connect(p.client, p.cp.at, |_| {}).unwrap();
    heap.send(p.client, p.sp, b, 3, SendMode::Give, |_| {})
        .unwrap();
    heap.check().unwrap();
}

/// `unregister` is a live process's own cleanup: it needs no death certificate, returns
/// everything, and afterwards the member is stale everywhere (also for `reclaim`).
#[test]
fn unregister_is_the_live_process_cleanup() {
    let f = Fixture::with(
        64 * 1024,
        HeapConfig {
            max_processes: 4,
            ..HeapConfig::default()
        },
    );
    let heap = &f.heap;
    let baseline = heap.stats().unwrap().free_bytes;
    let a = heap.register_as(ProcessId::from_pid(10)).unwrap();
    heap.try_alloc(a, 64).unwrap();
    heap.reserve(a, 100).unwrap();
    let r = heap.unregister(a).unwrap();
    assert_eq!(r.blocks_freed, 2);
    assert_eq!(heap.stats().unwrap().free_bytes, baseline);
    let stale = Err(Error::StaleMember {
        process: a.incarnation(),
    });
    assert_eq!(heap.unregister(a).map(drop), stale);
    assert_eq!(heap.reclaim(a.incarnation()).map(drop), stale);
    assert_eq!(heap.try_alloc(a, 8).map(drop), stale);
    heap.check().unwrap();
}

/// A destroyed participant's id is stale: after its owner destroyed it and reused the
/// memory for an ordinary block at the same offset (same size, service end), the server's
/// control entries and heartbeats to the old `ParticipantId` must fail (`PeerGone` or
/// `BadOffset`) and leave the owner's block bytes alone, instead of treating the leftover
/// record bytes in that block as a live participant and writing a queue entry and a
/// keepalive word into the owner's data.
#[test]
fn destroyed_participant_id_is_stale_even_if_its_memory_is_reused() {
    let p = connected(Fixture::new(64 * 1024), 100, 101);
    let heap = &p.f.heap;
    heap.reserve(p.server, 256).unwrap();
    let at = p.cp.at;
    let len = heap.block_len(at).unwrap();
    heap.destroy_participant(p.client, at).unwrap();
    let reused = heap.try_alloc_service(p.client, len).unwrap();
    assert_eq!(
        reused, at,
        "arranged: the client's new block is where its participant was"
    );
    // The client's data: whatever it left there (here, the old record bytes).
    let before = snap(heap);
    let control = heap.send_control(p.server, p.cp, Control::ServerStopping, at, |_| {});
    let beat = heap.heartbeat(p.server, p.cp);
    for r in [control.map(drop), beat.map(drop)] {
        assert!(
            matches!(r, Err(Error::PeerGone | Error::BadOffset { .. })),
            "a send to a destroyed participant gave {r:?}"
        );
    }
    same(&before, &snap(heap), "a send to a destroyed participant");
}
