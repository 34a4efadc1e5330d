//! Defects found by attacking the protocol layer, each pinned by the test that found it.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

mod common;

use common::Fixture;
use shm_core::format::INITIAL_CELLS;
use shm_core::format::{KIND_CLIENT, KIND_SERVER};
use shm_core::ProcessId;

/// A participant can be created when its owner's owner array is exactly full: the array
/// grows before the operation that carves the participant, so that operation does not
/// journal a whole array of fresh cells (it used to fail with `JournalFull`).
#[test]
fn participant_creation_with_a_full_owner_array() {
    for capacity in [2, 64, 1024] {
        let f = Fixture::new(1 << 20);
        let me = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
        for _ in 0..INITIAL_CELLS {
            f.heap.try_alloc(me, 32).unwrap();
        }
        let info = f.heap.process(me.slot()).unwrap();
        assert_eq!(info.blocks, info.cell_capacity, "the owner array is full");
        f.heap
            .create_participant(me, KIND_CLIENT, capacity)
            .unwrap();
        f.heap.check().unwrap();
    }
}

/// The deferred store in the header is untrusted (any process may have written it): whoever
/// takes the lock completes it only as the queue publication it stands for (`value` is
/// `expect + 1`, as a slot's sequence number moves) and only outside the header - never as
/// an arbitrary store, which would let a hostile process make a lock breaker write a word
/// of its choice.
#[test]
fn deferred_store_completes_only_a_publication() {
    use core::mem::offset_of;
    use core::sync::atomic::Ordering::Relaxed;
    use shm_core::format::{RegionHeader, FORMAT_VERSION};
    use shm_core::Region;

    let f = Fixture::new(1 << 16);
    let me = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let block = f.heap.try_alloc(me, 64).unwrap();
    // SAFETY: the fixture's buffer outlives `region`; only atomics are accessed through it.
    let region = unsafe { Region::from_raw(f.buf.as_ptr(), f.buf.len()) }.unwrap();
    let d = offset_of!(RegionHeader, deferred) as u32;
    let forge = |at: u32, expect: u32, value: u32| {
        region.word(d + 4).unwrap().store(expect, Relaxed);
        region.word(d + 8).unwrap().store(value, Relaxed);
        region.word(d + 12).unwrap().store(0, Relaxed);
        region.word(d).unwrap().store(at, Relaxed);
    };
    let target = region.word(block.get()).unwrap();
    target.store(7, Relaxed);

    // An arbitrary value into a block.
    forge(block.get(), 7, 0xdead_beef);
    let _ = f.heap.try_alloc(me, 32);
    assert_eq!(target.load(Relaxed), 7, "an arbitrary store was made");
    assert_eq!(region.word(d).unwrap().load(Relaxed), 0, "the record stays");

    // A publication-shaped store into the header's identity.
    let version = offset_of!(RegionHeader, version) as u32;
    forge(version, FORMAT_VERSION, FORMAT_VERSION + 1);
    let _ = f.heap.try_alloc(me, 32);
    assert_eq!(
        region.word(version).unwrap().load(Relaxed),
        FORMAT_VERSION,
        "a header word was stored"
    );

    // A real publication's shape still completes, and the heap goes on working.
    forge(block.get(), 7, 8);
    let _ = f.heap.try_alloc(me, 32);
    assert_eq!(target.load(Relaxed), 8);
    f.heap.try_alloc(me, 32).unwrap();
    f.heap.check().unwrap();
}

/// A root word naming the process table (the other block owned by no process) is not taken
/// for the server's root block: starting a server reports the damaged root word instead
/// of writing the server entry over the process table, which stays intact.
#[test]
fn root_word_naming_the_process_table_is_ignored() {
    use core::mem::offset_of;
    use core::sync::atomic::Ordering::Relaxed;
    use shm_core::format::{HeapState, RegionHeader, KIND_SERVER};
    use shm_core::Region;

    let f = Fixture::new(1 << 16);
    let me = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    // SAFETY: the fixture's buffer outlives `region`; only atomics are accessed through it.
    let region = unsafe { Region::from_raw(f.buf.as_ptr(), f.buf.len()) }.unwrap();
    let table = (offset_of!(RegionHeader, heap) + offset_of!(HeapState, proc_table)) as u32;
    let proc_table = region.word(table).unwrap().load(Relaxed);
    assert_ne!(proc_table, 0);
    let root = offset_of!(RegionHeader, root) as u32;
    region.word(root).unwrap().store(proc_table, Relaxed);

    let sp = f.heap.create_participant(me, KIND_SERVER, 4).unwrap();
    assert!(!f.heap.server_status().running);
    assert!(matches!(
        f.heap.start_server(me, sp.at, 100, 3),
        Err(shm_core::Error::Corrupted(_))
    ));
    assert!(!f.heap.server_status().running);
    assert_eq!(
        f.heap.processes().unwrap().count(),
        1,
        "the process table is intact"
    );
    // The root word itself stays damaged, and the full check says so.
    assert!(f.heap.check().is_err());
}

/// Once the reclaim of a process has begun, that incarnation can no longer act: the
/// reclaim frees its blocks one operation at a time, and a record it wrote into one (its
/// participant) would otherwise pass validation again if it allocated the same bytes
/// anew - and a send to it would then find a "corrupted" queue. Found by the `protocol`
/// fuzz target: a reclaim crashed halfway, then the dead member kept allocating. Crashes
/// the reclaim at every step (the budget is checked to cover the whole reclaim), and at
/// each one checks that the region holds, the dead member is refused once anything of
/// it was freed, and its participant never validates over other bytes.
#[test]
fn a_member_being_reclaimed_can_no_longer_act() {
    use shm_core::{Error, ParticipantId, SendMode};
    let (actor, dead_pid) = (1, 100);
    let mut partial = 0;
    let mut completed = false;
    // Under miri a sample of the steps (each one formats a region and runs the reclaim).
    for steps in (1..=400u32).step_by(if cfg!(miri) { 41 } else { 1 }) {
        let f = Fixture::new(1 << 16);
        let other = f.heap.register_as(ProcessId::from_pid(200)).unwrap();
        let x = f.heap.register_as(ProcessId::from_pid(dead_pid)).unwrap();
        let server = f.heap.create_participant(other, KIND_SERVER, 4).unwrap();
        f.heap.start_server(other, server.at, 100, 3).unwrap();
        let p = f.heap.create_participant(x, KIND_CLIENT, 4).unwrap();
        f.heap.connect(x, p.at, |_| {}).unwrap();
        f.heap.accept(other, p.at, |_| {}).unwrap();
        let to = ParticipantId {
            at: p.at,
            owner: x.incarnation(),
        };
        let bytes = f.heap.block_len(p.at).unwrap();
        for size in [32, 200, 900] {
            f.heap.try_alloc(x, size).unwrap();
        }
        f.platform.kill(dead_pid);
        f.heap.faults().arm(steps);
        let r = f.heap.reclaim_dead();
        let fired = !f.heap.faults().armed();
        f.heap.faults().arm(0);
        if !fired {
            assert_eq!(r, Ok(1), "an unbroken reclaim");
            println!("the reclaim completed unbroken with {steps} steps armed");
            completed = true;
            break;
        }
        assert_eq!(r, Err(Error::InjectedCrash));
        // The reclaimer died holding the lock; the next process breaks it.
        f.platform.kill(actor);
        f.platform.set_pid(actor + 1);
        f.heap.check().unwrap();
        let still = f
            .heap
            .process(x.slot())
            .is_ok_and(|i| i.incarnation() == x.incarnation());
        let freed = f.heap.block_len(p.at).is_err();
        if still && freed {
            partial += 1;
        }
        // Whatever the dead member can still do, its old participant never validates
        // over bytes it reallocated, and a send never reports corruption.
        match f.heap.try_alloc(x, bytes) {
            Ok(_) => assert!(!freed, "step {steps}: a leaving member allocated"),
            Err(e) => assert!(matches!(e, Error::StaleMember { .. }), "step {steps}: {e}"),
        }
        let b = f.heap.try_alloc(other, 16).unwrap();
        match f.heap.send(other, to, b, 1, SendMode::Give, |_| {}) {
            Ok(_) => assert!(!freed, "step {steps}: sent to a freed participant"),
            Err(e) => assert!(matches!(e, Error::PeerGone), "step {steps}: {e}"),
        }
        f.heap.check().unwrap();
        // Anyone finishes the reclaim.
        assert_eq!(f.heap.reclaim_dead(), Ok(1));
        f.heap.check().unwrap();
    }
    assert!(completed, "the step budget covers the whole reclaim");
    assert!(partial > 0, "some crash left the reclaim half done");
}

/// A heartbeat succeeds when the server's and the client's owner arrays are both full
/// (with and without a server reserve to cut the packet from): the packet takes a cell of
/// each, and growing both arrays inside the heartbeat's one operation journaled the whole
/// second copy (the first growth freed memory) and overflowed the journal. Found by the
/// protocol interpreter's fixed inputs once its well-formed runs stopped reusing offsets,
/// and by pseudo-random inputs. The old arrays are freed when the operation ends, so the
/// heartbeat is also crashed at every step (under miri every 120th, without a reserve; the budget is checked to
/// cover it): after each crash the region checks out and the next heartbeat goes through.
#[test]
fn heartbeat_with_both_owner_arrays_full() {
    use shm_core::{Beat, Error, Member, ParticipantId};
    // A server and a client whose owner arrays are full, the client's grown once already
    // (a longer copy).
    let world = |server_reserve: u32| -> (Fixture, Member, Member, ParticipantId) {
        let f = Fixture::new(1 << 16);
        let s = f.heap.register_as(ProcessId::from_pid(200)).unwrap();
        let c = f.heap.register_as(ProcessId::from_pid(201)).unwrap();
        let sp = f.heap.create_participant(s, KIND_SERVER, 4).unwrap();
        f.heap.start_server(s, sp.at, 100, 3).unwrap();
        if server_reserve > 0 {
            f.heap.reserve(s, server_reserve).unwrap();
        }
        let cp = f.heap.create_participant(c, KIND_CLIENT, 4).unwrap();
        f.heap.connect(c, cp.at, |_| {}).unwrap();
        f.heap.accept(s, cp.at, |_| {}).unwrap();
        for (who, at_least) in [(s, 0), (c, 2 * INITIAL_CELLS)] {
            loop {
                let i = f.heap.process(who.slot()).unwrap();
                if i.blocks == i.cell_capacity && i.blocks >= at_least {
                    break;
                }
                f.heap.try_alloc(who, 32).unwrap();
            }
        }
        let to = ParticipantId {
            at: cp.at,
            owner: c.incarnation(),
        };
        (f, s, c, to)
    };
    for server_reserve in [0, 600] {
        let (f, s, c, to) = world(server_reserve);
        let beat = f.heap.heartbeat(s, to).unwrap();
        assert!(matches!(beat, Beat::Sent { .. }), "{beat:?}");
        f.heap.check().unwrap();
        assert_eq!(f.heap.take_keepalive(c, to.at).unwrap(), Some(1));
        f.heap.check().unwrap();

        if cfg!(miri) && server_reserve > 0 {
            continue;
        }
        let mut completed = false;
        for steps in (1..=600u32).step_by(if cfg!(miri) { 120 } else { 1 }) {
            let (f, s, _, to) = world(server_reserve);
            f.heap.faults().arm(steps);
            let r = f.heap.heartbeat(s, to);
            let fired = !f.heap.faults().armed();
            f.heap.faults().arm(0);
            if !fired {
                assert!(matches!(r, Ok(Beat::Sent { .. })), "{r:?}");
                println!(
                    "reserve {server_reserve}: the heartbeat completed with {steps} steps armed"
                );
                completed = true;
                break;
            }
            assert_eq!(r, Err(Error::InjectedCrash), "step {steps}");
            // The actor died holding the lock; the next one recovers.
            f.platform.kill(1);
            f.platform.set_pid(2);
            f.heap.check().unwrap();
            let r = f.heap.heartbeat(s, to);
            assert!(
                matches!(r, Ok(Beat::Sent { .. })),
                "after step {steps}: {r:?}"
            );
            f.heap.check().unwrap();
        }
        assert!(completed, "the step budget covers the whole heartbeat");
    }
}

/// A participant block is never sent: giving or sharing it would hand its record,
/// doorbell and queue to the receiver as message bytes to write, and once the block came
/// back to its owner alone (given back, or the share released) the record would validate
/// again over whatever the receiver wrote. `send` refuses it with `BadOffset` and changes
/// nothing; the participant stays its owner's.
#[test]
fn a_participant_block_is_never_sent() {
    use shm_core::{Error, ParticipantId, SendMode};
    for (mode, from_server) in [
        (SendMode::Give, false),
        (SendMode::Share, false),
        (SendMode::Give, true),
        (SendMode::Share, true),
    ] {
        let f = Fixture::new(1 << 16);
        let s = f.heap.register_as(ProcessId::from_pid(200)).unwrap();
        let c = f.heap.register_as(ProcessId::from_pid(300)).unwrap();
        let sp = f.heap.create_participant(s, KIND_SERVER, 4).unwrap();
        f.heap.start_server(s, sp.at, 100, 3).unwrap();
        let cp = f.heap.create_participant(c, KIND_CLIENT, 4).unwrap();
        f.heap.connect(c, cp.at, |_| {}).unwrap();
        f.heap.accept(s, cp.at, |_| {}).unwrap();
        let (me, mine, to) = if from_server {
            (
                s,
                sp.at,
                ParticipantId {
                    at: cp.at,
                    owner: c.incarnation(),
                },
            )
        } else {
            (
                c,
                cp.at,
                ParticipantId {
                    at: sp.at,
                    owner: s.incarnation(),
                },
            )
        };
        let r = f.heap.send(me, to, mine, 1, mode, |_| {});
        assert!(
            matches!(r, Err(Error::BadOffset { .. })),
            "{mode:?} from server {from_server}: {r:?}"
        );
        let p = f.heap.participant(mine).unwrap();
        assert_eq!(p.owner, me.incarnation());
        let mut owners = Vec::new();
        f.heap.owners(mine, |o| owners.push(o)).unwrap();
        assert_eq!(owners, [me.slot()]);
        f.heap.check().unwrap();
    }
}
