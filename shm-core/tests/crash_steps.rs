//! Crash at every step, truly: every heap and protocol operation is stopped by fault
//! injection at each of its journaled steps, from the first to the last, and the test
//! asserts that the crash fired at every one of them and that one step more lets the
//! operation complete, so the loop covers each operation's whole length, however long it
//! grows. After each crash another process breaks the lock (the crashed pid is declared
//! dead, the next operation runs as a new pid) and the heap must pass `check()` and mean
//! exactly what it meant before the operation or what a run without a crash leaves
//! (compared with [`Snapshot`]: statistics, used blocks with owners and payload bytes,
//! processes, server entry, participants and their queued entries). Reclaiming works in
//! committed steps: a crash in any of them leaves a heap made of "before" and "after"
//! parts, and another reclaim finishes it to exactly "after".
#![allow(clippy::unwrap_used)] // tests report failures by panicking

mod common;

use common::Trial;
use shm_core::format::{KIND_CLIENT, KIND_SERVER};
use shm_core::testkit::snapshot::Snapshot;
use shm_core::testkit::{AlignedBuf, TestPlatform};
use shm_core::ParticipantId;
use shm_core::{
    Control, Error, Heap, HeapConfig, Member, Offset, ProcessId, Received, Region, SendMode,
};

type H = Heap<'static, TestPlatform>;

/// Pid of the process that runs the operations (the one that "dies" when a crash fires).
const ACTOR: u32 = 1;
/// Pid of the process that recovers after a crash.
const RECOVERER: u32 = 2;
/// Journal steps after which an operation that still crashes counts as runaway.
const MAX_STEPS: u32 = 5000;

/// Every handle a scenario needs, as plain values (valid in every copy of the image).
#[derive(Clone, Copy, Debug)]
struct Ctx {
    /// The running server (pid 100) and its participant.
    s: Member,
    sp: ParticipantId,
    /// A connected client (pid 101) with one message waiting in its queue.
    c: Member,
    cp: ParticipantId,
    /// A client (pid 102) whose `Connect` waits in the server's queue and whose keepalive
    /// mailbox holds a packet.
    d: Member,
    dp: ParticipantId,
    /// A client (pid 103) with a participant, not connected.
    e: Member,
    ep: Offset,
    /// A would-be server (pid 104) with a server participant.
    t: Member,
    tp: Offset,
    /// Plain members (pids 105, 106) with blocks, shared blocks and a reserve.
    a: Member,
    b: Member,
    a_free: Offset,
    a_give: Offset,
    a_share: Offset,
    a_last: Offset,
    shared: Offset,
    hole: Offset,
    c_msg: Offset,
    s_bcast: Offset,
    /// A block of `a`'s to keep, and a kept block named as the kept root.
    a_keep: Offset,
    kept: Offset,
}

/// A formatted region after the setup, as bytes, and the handles into it.
struct World {
    image: Vec<u8>,
    ctx: Ctx,
}

/// One attached copy of the world's image.
fn world() -> World {
    let buf = AlignedBuf::new(32 * 1024);
    let ctx = {
        // SAFETY: `buf` outlives `heap`, dropped at the end of this block.
        let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
        let config = HeapConfig {
            align: 16,
            max_processes: 8,
        };
        let heap = Heap::init(region, config, TestPlatform::new(ACTOR)).unwrap();
        let reg = |pid| heap.register_as(ProcessId::from_pid(pid)).unwrap();
        let (s, c, d, e, t, a, b) = (
            reg(100),
            reg(101),
            reg(102),
            reg(103),
            reg(104),
            reg(105),
            reg(106),
        );
        heap.reserve(s, 256).unwrap();
        let sp = heap.create_participant(s, KIND_SERVER, 4).unwrap();
        heap.start_server(s, sp.at, 100, 3).unwrap();
        let cp = heap.create_participant(c, KIND_CLIENT, 4).unwrap();
        heap.connect(c, cp.at, |_| {}).unwrap();
        assert!(matches!(
            heap.recv(&sp).unwrap(),
            Some(Received::Control {
                control: Control::Connect,
                ..
            })
        ));
        heap.accept(s, cp.at, |_| {}).unwrap();
        assert!(heap.recv(&cp).unwrap().is_some());
        let dp = heap.create_participant(d, KIND_CLIENT, 4).unwrap();
        heap.connect(d, dp.at, |_| {}).unwrap();
        heap.heartbeat(s, dp.id()).unwrap();
        let ep = heap.create_participant(e, KIND_CLIENT, 4).unwrap();
        let tp = heap.create_participant(t, KIND_SERVER, 4).unwrap();

        let a_free = heap.try_alloc(a, 100).unwrap();
        heap.try_alloc(a, 64).unwrap();
        let hole = heap.try_alloc(a, 200).unwrap();
        heap.try_alloc(a, 64).unwrap();
        let a_give = heap.try_alloc(a, 48).unwrap();
        let a_share = heap.try_alloc(a, 80).unwrap();
        let shared = heap.try_alloc(a, 96).unwrap();
        heap.share(a, shared, b).unwrap();
        let a_last = heap.try_alloc(a, 40).unwrap();
        heap.reserve(a, 300).unwrap();
        heap.try_alloc(b, 120).unwrap();
        let b2 = heap.try_alloc(b, 30).unwrap();
        heap.share(b, b2, a).unwrap();

        let c_msg = heap.try_alloc(c, 64).unwrap();
        let c_own = heap.try_alloc(c, 50).unwrap();
        heap.share(c, c_own, s).unwrap();
        let s_to_c = heap.try_alloc(s, 72).unwrap();
        heap.send(s, cp.id(), s_to_c, 5, SendMode::Give, |_| {})
            .unwrap();
        let s_bcast = heap.try_alloc(s, 88).unwrap();
        let a_keep = heap.try_alloc(a, 56).unwrap();
        let kept = heap.try_alloc(b, 44).unwrap();
        heap.keep(b, kept).unwrap();
        heap.set_kept_root(b, Some(kept)).unwrap();
        // Last, so that no allocation above takes it.
        heap.free(a, hole).unwrap();
        heap.check().unwrap();
        Ctx {
            s,
            sp: sp.id(),
            c,
            cp: cp.id(),
            d,
            dp: dp.id(),
            e,
            ep: ep.at,
            t,
            tp: tp.at,
            a,
            b,
            a_free,
            a_give,
            a_share,
            a_last,
            shared,
            hole,
            c_msg,
            s_bcast,
            a_keep,
            kept,
        }
    };
    World {
        image: buf.bytes().to_vec(),
        ctx,
    }
}

/// The process a reclaiming operation reclaims, and its pid.
type Victim = fn(&Ctx) -> (Member, u32);

/// An operation under test.
struct CrashOp {
    name: &'static str,
    /// Platform state the operation needs (processes declared dead).
    prepare: fn(&TestPlatform),
    run: fn(&H, &Ctx) -> Result<(), Error>,
    /// For reclaiming operations: the process being reclaimed and its pid. A crash leaves
    /// it partly reclaimed; another reclaim finishes it.
    victim: Option<Victim>,
}

fn nothing(_: &TestPlatform) {}

fn ops() -> Vec<CrashOp> {
    fn op(name: &'static str, run: fn(&H, &Ctx) -> Result<(), Error>) -> CrashOp {
        CrashOp {
            name,
            prepare: nothing,
            run,
            victim: None,
        }
    }
    vec![
        op("try_alloc", |h, x| h.try_alloc(x.a, 150).map(drop)),
        op("try_alloc_service", |h, x| {
            h.try_alloc_service(x.a, 150).map(drop)
        }),
        op("free", |h, x| h.free(x.a, x.a_free)),
        op("alloc_at", |h, x| {
            let p = h.alloc_at(x.a, x.hole, 100)?;
            assert_eq!(p, x.hole);
            Ok(())
        }),
        op("reserve (replacing one)", |h, x| {
            h.reserve(x.a, 500).map(drop)
        }),
        op("alloc_from_reserve", |h, x| {
            h.alloc_from_reserve(x.a, 60).map(drop)
        }),
        op("give (to another member)", |h, x| {
            h.give(x.a, x.a_give, x.b)?;
            assert_eq!(h.owner_of(x.a_give), Ok(Some(x.b.slot())));
            Ok(())
        }),
        op("share", |h, x| h.share(x.a, x.a_share, x.b)),
        op("release (shared)", |h, x| {
            assert!(!h.release(x.a, x.shared)?);
            Ok(())
        }),
        op("release (last reference)", |h, x| {
            assert!(h.release(x.a, x.a_last)?);
            Ok(())
        }),
        op("keep", |h, x| h.keep(x.a, x.a_keep)),
        op("take (the kept root)", |h, x| {
            h.take(x.a, x.kept)?;
            assert_eq!(h.kept_root(), None);
            Ok(())
        }),
        op("set_kept_root (clear)", |h, x| h.set_kept_root(x.a, None)),
        op("register", |h, _| {
            h.register_as(ProcessId::from_pid(107)).map(drop)
        }),
        CrashOp {
            name: "unregister (all steps)",
            prepare: nothing,
            run: |h, x| h.unregister(x.b).map(drop),
            victim: Some(|x| (x.b, 106)),
        },
        CrashOp {
            name: "reclaim client (all steps)",
            prepare: |p| p.kill(101),
            run: |h, x| {
                let r = h.reclaim(x.c.incarnation())?;
                assert!(r.references >= 4, "{r:?}");
                Ok(())
            },
            victim: Some(|x| (x.c, 101)),
        },
        CrashOp {
            name: "reclaim_dead (all steps)",
            prepare: |p| p.kill(105),
            run: |h, _| {
                assert_eq!(h.reclaim_dead()?, 1);
                Ok(())
            },
            victim: Some(|x| (x.a, 105)),
        },
        op("create_participant", |h, x| {
            h.create_participant(x.a, KIND_CLIENT, 4).map(drop)
        }),
        CrashOp {
            name: "start_server (old one dead)",
            prepare: |p| p.kill(100),
            run: |h, x| {
                assert_eq!(h.start_server(x.t, x.tp, 100, 3)?, 2);
                Ok(())
            },
            victim: None,
        },
        op("connect", |h, x| h.connect(x.e, x.ep, |_| {}).map(drop)),
        op("accept", |h, x| h.accept(x.s, x.dp.at, |_| {}).map(drop)),
        op("heartbeat", |h, x| {
            assert!(matches!(
                h.heartbeat(x.s, x.cp)?,
                shm_core::Beat::Sent { .. }
            ));
            Ok(())
        }),
        op("take_keepalive", |h, x| {
            assert!(h.take_keepalive(x.d, x.dp.at)?.is_some());
            Ok(())
        }),
        op("send_control (Disconnected)", |h, x| {
            h.send_control(x.s, x.cp, Control::Disconnected, x.cp.at, |_| {})
        }),
        op("send (give)", |h, x| {
            h.send(x.c, x.sp, x.c_msg, 1, SendMode::Give, |_| {})
                .map(drop)
        }),
        op("send (share: broadcast)", |h, x| {
            h.send(x.s, x.cp, x.s_bcast, 2, SendMode::Share, |_| {})
                .map(drop)
        }),
        op("destroy_participant", |h, x| {
            h.destroy_participant(x.c, x.cp.at)
        }),
    ]
}

/// What one run of an operation did.
struct Outcome {
    /// Whether the armed crash fired.
    fired: bool,
    /// After a crash: the state once another process recovered.
    recovered: Option<Snapshot>,
    /// The final state (after finishing a reclaim, for reclaiming operations).
    end: Snapshot,
}

/// Runs `op` on a fresh copy of the world, crashing at step `arm` (if any).
fn run(w: &World, op: &CrashOp, arm: Option<u32>) -> Outcome {
    let t = Trial::attach(&w.image, ACTOR);
    let heap = &t.heap;
    (op.prepare)(&t.platform);
    if let Some(k) = arm {
        heap.faults().arm(k);
    }
    let r = (op.run)(heap, &w.ctx);
    let fired = arm.is_some() && !heap.faults().armed();
    heap.faults().arm(0);
    assert_eq!(
        fired,
        r == Err(Error::InjectedCrash),
        "{}: crash fired {fired} but the operation returned {r:?}",
        op.name
    );
    if !fired {
        assert_eq!(r, Ok(()), "{}", op.name);
        return Outcome {
            fired,
            recovered: None,
            end: Snapshot::take(heap).unwrap(),
        };
    }
    // The actor died holding the lock; another process recovers.
    t.platform.kill(ACTOR);
    t.platform.set_pid(RECOVERER);
    if let Err(e) = heap.check() {
        panic!(
            "{} crashed at step {arm:?}: check after recovery: {e}",
            op.name
        );
    }
    let recovered = Snapshot::take(heap).unwrap();
    if let Some(victim) = op.victim {
        let (m, pid) = victim(&w.ctx);
        t.platform.kill(pid);
        heap.reclaim(m.incarnation()).unwrap();
        heap.check().unwrap();
    }
    Outcome {
        fired,
        recovered: Some(recovered),
        end: Snapshot::take(heap).unwrap(),
    }
}

/// Per operation: crashes at every step 1..=N fire, N+1 completes, and every recovered
/// state is "before" or "after" (made of their parts for reclaiming, finished to "after"
/// by another reclaim). Returns N and how many recovered states were "after".
fn crash_every_step(
    w: &World,
    before: &Snapshot,
    op: &CrashOp,
    steps: Option<&[u32]>,
) -> (u32, u32) {
    let after = run(w, op, None).end;
    assert_ne!(&after, before, "{}: the operation changed nothing", op.name);
    let mut completed_after = 0;
    let mut check = |k: u32, o: &Outcome| {
        let Some(mid) = &o.recovered else { return };
        if op.victim.is_some() {
            let except = op.victim.map(|v| v(&w.ctx).0.slot().0);
            if let Err(e) = mid.is_between(before, &after, except) {
                panic!("{} crashed at step {k}: recovered state: {e}", op.name);
            }
            if let Some(d) = o.end.diff(&after) {
                panic!(
                    "{} crashed at step {k}, reclaim finished: not \"after\": {d}",
                    op.name
                );
            }
        } else if mid == &after {
            completed_after += 1;
        } else if let Some(d) = mid.diff(before) {
            panic!(
                "{} crashed at step {k}: recovered state is neither before nor after: \
                 vs before: {d}; vs after: {}",
                op.name,
                mid.diff(&after).unwrap_or_default()
            );
        }
    };
    if let Some(sample) = steps {
        for &k in sample {
            let o = run(w, op, Some(k));
            check(k, &o);
        }
        return (0, completed_after);
    }
    let mut k = 1;
    loop {
        let o = run(w, op, Some(k));
        if !o.fired {
            // One step more than the operation has: it completed, exactly as without a
            // crash.
            if let Some(d) = o.end.diff(&after) {
                panic!(
                    "{}: armed at {k}, not fired, state differs from a plain run: {d}",
                    op.name
                );
            }
            break;
        }
        check(k, &o);
        assert!(
            k < MAX_STEPS,
            "{}: still crashing after {MAX_STEPS} steps",
            op.name
        );
        k += 1;
    }
    let n = k - 1;
    assert!(n >= 1, "{}: the crash never fired", op.name);
    (n, completed_after)
}

/// Every operation (heap and protocol) crashed at every one of its journaled steps: see
/// the module documentation for the invariant. Under miri a sample of operations and
/// steps.
#[test]
fn crash_at_every_step_of_every_operation_truly() {
    let w = world();
    let before = Snapshot::take(&Trial::attach(&w.image, ACTOR).heap).unwrap();
    let all = ops();
    let mut report = Vec::new();
    for op in &all {
        let (n, late) = if cfg!(miri) {
            // Slow: heap operations (kept blocks included), one reclaiming and one
            // protocol operation, one crash each.
            if ![
                "give (to another member)",
                "keep",
                "take (the kept root)",
                "reclaim client (all steps)",
                "send (give)",
            ]
            .contains(&op.name)
            {
                continue;
            }
            crash_every_step(&w, &before, op, Some(&[3]))
        } else {
            crash_every_step(&w, &before, op, None)
        };
        report.push(format!(
            "{:<32} {n:>4} steps ({late} recovered as completed)",
            op.name
        ));
    }
    println!("{}", report.join("\n"));
    if !cfg!(miri) {
        assert_eq!(report.len(), all.len());
    }
}
