//! The safe API in one process (a server and clients side by side): buffers, broadcast,
//! copy-on-write, back-pressure and receive modes. Each test states its invariant.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::io::Write;
use std::time::Duration;

use shm_host::buffer::policy_capacity;
use shm_host::{Client, ClientOptions, HostError, RecvMode, Server, ServerEvent, ServerOptions};

fn name(test: &str) -> String {
    format!("api-{test}-{}", std::process::id())
}

fn server(test: &str) -> Server<shm_host::NativeSystem> {
    Server::create_with(
        &name(test),
        ServerOptions {
            size: 8 << 20,
            queue_capacity: 8,
            ..ServerOptions::default()
        },
    )
    .unwrap()
}

/// Capacity follows the original design: under 128 B reserve 256; under 64 KiB, size +
/// 256; else size + 512. A buffer grows by that policy when written past its end, keeping
/// its data, and `io::Write` appends.
#[test]
fn buffers_grow_by_the_policy() {
    assert_eq!(policy_capacity(10), 256);
    assert_eq!(policy_capacity(1000), 1256);
    assert_eq!(policy_capacity(100_000), 100_512);
    let s = server("grow");
    let mut b = s.alloc(10).unwrap();
    assert!(b.capacity() >= 256 && b.capacity() < 256 + 64);
    assert!(b.is_empty());
    b.write_all(&[1u8; 200]).unwrap();
    let first = b.offset();
    b.write_all(&[2u8; 1000]).unwrap(); // past the end: moves
    assert_ne!(b.offset(), first);
    assert!(b.capacity() >= 1200 + 256);
    assert_eq!(&b[..200], &[1u8; 200][..]);
    assert_eq!(&b[200..], &[2u8; 1000][..]);
    b.resize(10).unwrap();
    assert_eq!(b.len(), 10);
    b.clear().unwrap();
    assert!(b.is_empty());
}

/// A header is prepended into the headroom without moving the data (same block); when it
/// does not fit, the buffer moves and the result is the same bytes.
#[test]
fn prepend_uses_the_headroom() {
    let s = server("prepend");
    let mut b = s.alloc_from(b"payload").unwrap();
    let room = b.headroom();
    assert!(room >= 16);
    let at = b.offset();
    b.prepend(b"HDR:").unwrap();
    assert_eq!(b.offset(), at, "no copy: same block");
    assert_eq!(&b[..], b"HDR:payload");
    assert_eq!(b.headroom(), room - 4);
    let big = vec![7u8; room + 10];
    b.prepend(&big).unwrap();
    assert_eq!(&b[..big.len()], &big[..]);
    assert_eq!(&b[big.len()..], b"HDR:payload");
}

/// Broadcast sends one block to every client without copying: each receives the same
/// offset; a client writing to it gets its own copy (copy-on-write) and the others still
/// see the original; the block is freed when its last owner drops it.
#[test]
fn broadcast_shares_and_copies_on_write() {
    let s = server("broadcast");
    let c1 = Client::connect(&name("broadcast")).unwrap();
    let c2 = Client::connect(&name("broadcast")).unwrap();
    // Let the server accept both (connections complete while it receives).
    assert!(s.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
    assert_eq!(s.clients().len(), 2);
    let b = s.alloc_from(b"to all").unwrap();
    let report = s.broadcast(&b, 9);
    assert_eq!((report.sent.len(), report.failed.len()), (2, 0));
    assert_eq!(b.owners().unwrap(), 3);
    let mut m1 = c1.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    let m2 = c2.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(m1.buffer.offset(), b.offset());
    assert_eq!(m2.buffer.offset(), b.offset());
    assert_eq!(m1.tag, 9);
    m1.buffer.as_mut_slice().unwrap()[0] = b'T';
    assert_ne!(m1.buffer.offset(), b.offset(), "written copy is private");
    assert_eq!(&m1.buffer[..], b"To all");
    assert_eq!(&m2.buffer[..], b"to all");
    assert_eq!(&b[..], b"to all");
    assert_eq!(b.owners().unwrap(), 2);
    let seg = s.segment();
    let shared = b.offset();
    drop(b);
    drop(m2);
    assert!(seg.block_len(shared).is_err(), "freed with its last owner");
    drop(m1);
    seg.check().unwrap();
}

/// A full queue refuses the send and hands the buffer back untouched; after the receiver
/// catches up the same buffer goes through.
#[test]
fn full_queue_returns_the_buffer() {
    let s = server("full");
    let c = Client::connect(&name("full")).unwrap();
    let mut sent = 0;
    let back = loop {
        match c.send(c.alloc_from(&[sent as u8; 32]).unwrap(), sent) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100, "queue never filled");
    };
    assert!(matches!(
        back.error,
        HostError::Core(shm_core::Error::QueueFull)
    ));
    assert_eq!(&back.buffer[..], &[sent as u8; 32][..]);
    // The server drains; the returned buffer can be sent again.
    for i in 0..sent {
        let m = s.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(m.tag, i);
    }
    c.send(back.buffer, sent).unwrap();
    assert_eq!(
        s.recv_timeout(Duration::from_secs(5)).unwrap().unwrap().tag,
        sent
    );
}

/// Every receive mode delivers, and a timeout with nothing to take returns `None`.
#[test]
fn every_receive_mode_delivers() {
    for (i, mode) in [
        RecvMode::BusyPoll,
        RecvMode::Blocking,
        RecvMode::Adaptive {
            spin: Duration::from_micros(20),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let test = format!("mode{i}");
        let s = Server::create_with(
            &name(&test),
            ServerOptions {
                size: 4 << 20,
                recv_mode: mode,
                ..ServerOptions::default()
            },
        )
        .unwrap();
        let c = Client::connect_with(
            &name(&test),
            ClientOptions {
                recv_mode: mode,
                ..ClientOptions::default()
            },
        )
        .unwrap();
        assert!(s.recv_timeout(Duration::from_millis(20)).unwrap().is_none());
        std::thread::scope(|sc| {
            sc.spawn(|| {
                // Sends after the other side is already waiting (blocking mode sleeps).
                std::thread::sleep(Duration::from_millis(30));
                c.send(c.alloc_from(b"x").unwrap(), 1).unwrap();
            });
            let m = s.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(m.map(|m| m.tag), Some(1), "{mode}");
        });
        assert!(c.recv_timeout(Duration::from_millis(10)).unwrap().is_none());
    }
}

/// Connect and clean disconnect are reported as events, in order.
#[test]
fn events_report_connects_and_disconnects() {
    let s = server("events");
    let c = Client::connect(&name("events")).unwrap();
    let id = c.id();
    assert!(s.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
    assert_eq!(s.try_event(), Some(ServerEvent::Connected(id)));
    drop(c);
    assert!(s.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
    assert_eq!(s.try_event(), Some(ServerEvent::Disconnected(id)));
    assert!(s.clients().is_empty());
}

/// A second server on a segment whose server lives is refused, and says why.
#[test]
fn one_live_server_per_segment() {
    let s = server("two");
    let second = Server::create(&name("two"), 8 << 20);
    assert!(matches!(
        second.err(),
        Some(HostError::TakeoverRefused {
            why: shm_host::Refusal::ServerAlive,
            ..
        })
    ));
    drop(s);
}

/// A segment whose mode is wider than the new server asks for is not taken over (the
/// mode is checked before the server's liveness).
// POSIX only: the mode is a POSIX permission mask. Windows ignores it (a security
// descriptor limits every section to its creator's user), so there is nothing wider.
#[cfg(unix)]
#[test]
fn a_wider_segment_is_not_taken_over() {
    let opts = |mode| ServerOptions {
        size: 1 << 20,
        create: shm_host::CreateOptions {
            mode,
            ..Default::default()
        },
        ..ServerOptions::default()
    };
    let s = Server::create_with(&name("wide"), opts(0o666)).unwrap();
    let second = Server::create_with(&name("wide"), opts(0o600));
    assert!(matches!(
        second.err(),
        Some(HostError::TakeoverRefused {
            why: shm_host::Refusal::WiderMode { asked: 0o600, .. },
            ..
        })
    ));
    drop(s);
}

/// Clearing a broadcast buffer is copy-on-write: the clearing client gets an empty buffer
/// of its own, while the other receivers and the sender still see the original data in
/// the shared block (which keeps one owner fewer).
#[test]
fn clear_after_broadcast_leaves_other_owners_intact() {
    let s = server("bclear");
    let c1 = Client::connect(&name("bclear")).unwrap();
    let c2 = Client::connect(&name("bclear")).unwrap();
    assert!(s.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
    assert_eq!(s.clients().len(), 2);
    let b = s.alloc_from(b"keep me").unwrap();
    let report = s.broadcast(&b, 3);
    assert_eq!((report.sent.len(), report.failed.len()), (2, 0));
    let mut m1 = c1.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    let m2 = c2.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(m1.buffer.offset(), b.offset());
    m1.buffer.clear().unwrap();
    assert!(m1.buffer.is_empty());
    assert_ne!(m1.buffer.offset(), b.offset(), "cleared copy is private");
    assert_eq!(&m2.buffer[..], b"keep me");
    assert_eq!(&b[..], b"keep me");
    assert_eq!(b.owners().unwrap(), 2);
    m1.buffer.write_all(b"new").unwrap();
    assert_eq!(&m1.buffer[..], b"new");
    assert_eq!(&m2.buffer[..], b"keep me");
    drop((b, m1, m2));
    s.segment().check().unwrap();
}

/// A client id names one incarnation: after that client left, a send to its id fails with
/// `PeerGone` and hands the buffer back, even when a newer client took the same slot; the
/// newer client receives nothing.
#[test]
fn a_departed_clients_id_never_reaches_its_successor() {
    let s = server("successor");
    let c1 = Client::connect(&name("successor")).unwrap();
    assert!(s.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
    let old = c1.id();
    drop(c1);
    assert!(s.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
    assert_eq!(s.try_event(), Some(ServerEvent::Connected(old)));
    assert_eq!(s.try_event(), Some(ServerEvent::Disconnected(old)));
    let c2 = Client::connect(&name("successor")).unwrap();
    assert!(s.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
    let new = c2.id();
    assert_eq!(new.slot, old.slot, "the slot was reused");
    assert_ne!(new, old, "by another incarnation");
    let back = s
        .send(old, s.alloc_from(b"for c1").unwrap(), 1)
        .unwrap_err();
    assert!(matches!(
        back.error,
        HostError::Core(shm_core::Error::PeerGone)
    ));
    assert_eq!(&back.buffer[..], b"for c1");
    assert!(c2
        .recv_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
    s.send(new, back.buffer, 2).unwrap();
    assert_eq!(
        c2.recv_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .tag,
        2
    );
}

/// Kept buffers: `keep` consumes the buffer and leaves the block to the segment (a
/// broadcast buffer is copied first, so the co-owners keep theirs); the kept root finds
/// it; `take` gives it back to any process with its bytes and clears the root; a second
/// `take`, a take of a block that is not kept, and naming such a block as the root fail.
#[test]
fn kept_buffers_are_taken_once() {
    use shm_core::Error;
    let s = server("kept");
    let c = Client::connect(&name("kept")).unwrap();
    assert!(s.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
    assert_eq!(s.kept_root(), None);

    let at = c.keep(c.alloc_from(b"kept bytes").unwrap()).unwrap();
    c.set_kept_root(Some(at)).unwrap();
    assert_eq!(s.kept_root(), Some(at));
    assert_eq!(s.segment().stats().unwrap().kept_blocks, 1);
    let b = s.take(at).unwrap();
    assert_eq!(
        (&b[..], b.offset(), b.owners().unwrap()),
        (&b"kept bytes"[..], at, 1)
    );
    assert_eq!(s.kept_root(), None);
    let twice = c.take(at).unwrap_err();
    assert!(
        matches!(twice, HostError::Core(Error::NotKept { .. })),
        "{twice}"
    );
    let refused = s.set_kept_root(Some(at)).unwrap_err();
    assert!(
        matches!(refused, HostError::Core(Error::NotKept { .. })),
        "{refused}"
    );
    drop(b);

    // A broadcast buffer: kept as a private copy.
    let b = s.alloc_from(b"to all").unwrap();
    assert_eq!(s.broadcast(&b, 1).sent.len(), 1);
    let m = c.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    let shared = b.offset();
    let kept = s.keep(b).unwrap();
    assert_ne!(kept, shared, "a shared block is copied before it is kept");
    assert_eq!(&m.buffer[..], b"to all");
    assert_eq!(m.buffer.owners().unwrap(), 1);
    let back = c.take(kept).unwrap();
    assert_eq!(&back[..], b"to all");
    drop((back, m));
    assert_eq!(s.segment().check().unwrap().kept_blocks, 0);
}

/// With several threads receiving, a client's first message is never handled before its
/// connection: replying to it never fails with `PeerGone` (the server used to accept a
/// `Connect` after releasing the queue, so another receiver could take the next message
/// first and find the client unknown).
#[test]
fn concurrent_receivers_accept_a_connection_before_its_messages() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
    /// Stops the receiving threads also when the test fails (a panic in the scope).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Relaxed);
        }
    }
    let s = server("concurrent-receivers");
    let stop = AtomicBool::new(false);
    let refused = AtomicU32::new(0);
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        for _ in 0..3 {
            scope.spawn(|| {
                while !stop.load(Relaxed) {
                    if let Ok(Some(m)) = s.recv_timeout(Duration::from_millis(20)) {
                        if s.send(m.from, m.buffer, m.tag).is_err() {
                            refused.fetch_add(1, Relaxed);
                        }
                    }
                }
            });
        }
        let name = s.segment().name().as_str().to_owned();
        for round in 0..200 {
            let c = Client::connect(&name).unwrap();
            let mut b = c.alloc(8).unwrap();
            b.write_all(b"first").unwrap();
            c.send(b, round).unwrap();
            if c.recv_timeout(Duration::from_secs(5)).unwrap().is_none() {
                break; // counted as refused by the server thread
            }
        }
    });
    assert_eq!(refused.load(Relaxed), 0);
}

/// A buffer is sent only through the server or client it came from. Its block offset
/// means nothing in another attachment: there it may name a block the other side owns
/// and still holds (here: the same history in two segments puts both servers' held
/// messages at the same offset), which would hand that block away while a `Buffer`
/// still points into it.
#[test]
fn a_buffer_is_sent_only_through_its_own_server_or_client() {
    let sa = server("foreign-a");
    let sb = server("foreign-b");
    let ca = Client::connect(sa.segment().name().as_str()).unwrap();
    let cb = Client::connect(sb.segment().name().as_str()).unwrap();
    for (c, text) in [(&ca, b"held by A"), (&cb, b"held by B")] {
        let mut b = c.alloc(16).unwrap();
        b.write_all(text).unwrap();
        c.send(b, 1).unwrap();
    }
    let held_a = sa.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    let held_b = sb.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(held_a.buffer.offset(), held_b.buffer.offset());

    // Server A with server B's buffer: refused, the buffer comes back unchanged.
    let back = sa.send(held_a.from, held_b.buffer, 9).unwrap_err();
    assert!(
        matches!(back.error, HostError::ForeignBuffer),
        "{}",
        back.error
    );
    assert_eq!(&back.buffer[..], b"held by B");
    let report = sa.broadcast(&back.buffer, 9);
    assert!(report.sent.is_empty());
    assert!(matches!(report.failed[..], [(_, HostError::ForeignBuffer)]));
    // A client of the same segment is another attachment too.
    let theirs = ca.alloc(4).unwrap();
    let back = sa.send(held_a.from, theirs, 9).unwrap_err();
    assert!(matches!(back.error, HostError::ForeignBuffer));
    let back = cb.send(back.buffer, 9).unwrap_err();
    assert!(matches!(back.error, HostError::ForeignBuffer));
    // Nothing moved: A's client got nothing, A's server still owns its message alone.
    assert!(ca.try_recv().unwrap().is_none());
    assert_eq!(&held_a.buffer[..], b"held by A");
    assert_eq!(held_a.buffer.owners().unwrap(), 1);
    drop(back);
    sa.segment().check().unwrap();
    sb.segment().check().unwrap();
}

/// `keep` through a server or client refuses a buffer of another one: the offset it
/// returns would name nothing in that segment. The refused buffer is released, and both
/// segments stay consistent with nothing kept.
#[test]
fn keep_refuses_a_buffer_of_another_segment() {
    let sa = server("keep-foreign-a");
    let sb = server("keep-foreign-b");
    let foreign = sb.alloc_from(b"of B").unwrap();
    let e = sa.keep(foreign).unwrap_err();
    assert!(matches!(e, HostError::ForeignBuffer), "{e}");
    for s in [&sa, &sb] {
        let report = s.segment().check().unwrap();
        assert_eq!(report.kept_blocks, 0);
    }
}
