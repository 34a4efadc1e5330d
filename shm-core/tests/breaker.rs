//! The lock breaker finishes a dead sender's send completely: the entry becomes visible and
//! the receiver, asleep on its doorbell, is woken.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use shm_core::format::{KIND_CLIENT, KIND_SERVER};
use shm_core::testkit::{AlignedBuf, TestPlatform};
use shm_core::Doorbell;
use shm_core::{
    Control, Error, Heap, HeapConfig, Platform, ProcessId, Processes, Received, Region, SendMode,
    WaitNotify, WaitOutcome,
};

/// The test platform, recording which doorbells it was asked to ring (by offset).
#[derive(Clone)]
struct RingSpy {
    inner: TestPlatform,
    rung: Arc<AtomicU32>,
}

impl Processes for RingSpy {
    fn current_process(&self) -> ProcessId {
        self.inner.current_process()
    }
    fn is_alive(&self, id: ProcessId) -> bool {
        self.inner.is_alive(id)
    }
}

impl WaitNotify for RingSpy {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        self.inner.wait(word, expected, timeout)
    }
    fn notify_all(&self, word: &AtomicU32) {
        self.inner.notify_all(word)
    }
    fn notify_one(&self, word: &AtomicU32) {
        self.inner.notify_one(word)
    }
}

impl Platform for RingSpy {
    fn ring(&self, region: &Region<'_>, bell: &Doorbell) {
        let at = region.offset_of(&bell.waiting).unwrap();
        self.rung.store(at, Relaxed);
    }
}

/// What a send crashed at one step left, once another process broke its lock.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The send finished: the step is past its end.
    Completed,
    /// Committed, unpublished: the breaker published it and rang the receiver.
    Published,
    /// Undone: nothing queued, nobody rung.
    Undone,
}

/// Sends one message with a crash injected at `steps`, recovers as another process, and
/// checks what recovery left (see [`Outcome`]).
fn send_crashed_at(steps: u32) -> Outcome {
    // Small: one region is formatted per crash point (slow under miri otherwise).
    let buf = AlignedBuf::new(24 * 1024);
    let spy = RingSpy {
        inner: TestPlatform::new(1),
        rung: Arc::new(AtomicU32::new(0)),
    };
    // SAFETY: `buf` outlives `heap` (dropped at the end, after it).
    let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
    let heap = Heap::init(region, HeapConfig::default(), spy.clone()).unwrap();
    let server = heap.register_as(ProcessId::from_pid(100)).unwrap();
    let client = heap.register_as(ProcessId::from_pid(101)).unwrap();
    let sp = heap.create_participant(server, KIND_SERVER, 4).unwrap();
    heap.start_server(server, sp.at, 100, 3).unwrap();
    let cp = heap.create_participant(client, KIND_CLIENT, 4).unwrap();
    heap.connect(client, cp.at, |_| {}).unwrap();
    assert!(matches!(
        heap.recv(&sp).unwrap(),
        Some(Received::Control {
            control: Control::Connect,
            ..
        })
    ));
    let block = heap.try_alloc(client, 64).unwrap();
    // The server sleeps on its doorbell.
    sp.bell.prepare_wait();
    heap.faults().arm(steps);
    let r = heap.send(client, sp.id(), block, 5, SendMode::Give, |_| {});
    heap.faults().arm(0);
    let outcome = if r.is_ok() {
        Outcome::Completed
    } else {
        assert_eq!(r.err(), Some(Error::InjectedCrash));
        // Committed (journal empty) with the publication still recorded: the window.
        let snap = heap.snapshot();
        let pending = snap.deferred_pending && snap.journal_len == 0;
        // The sender is dead; another process's next operation breaks its lock.
        spy.inner.kill(1);
        spy.inner.set_pid(2);
        heap.check().unwrap();
        let got = heap.recv(&sp).unwrap();
        if pending {
            assert_eq!(
                got,
                Some(Received::Message {
                    block,
                    tag: 5,
                    from: client.incarnation(),
                    shared: false,
                })
            );
            let bell_at = heap.region().offset_of(&sp.bell.waiting).unwrap();
            assert_eq!(
                spy.rung.load(Relaxed),
                bell_at,
                "the sleeping receiver was woken (crash at step {steps})"
            );
            assert_eq!(sp.bell.waiting.load(Relaxed), 0);
            Outcome::Published
        } else {
            assert_eq!(got, None);
            assert_eq!(spy.rung.load(Relaxed), 0);
            Outcome::Undone
        }
    };
    drop(heap);
    drop(buf);
    outcome
}

/// A sender that dies after its send committed but before the entry was published leaves
/// the publication to whoever breaks its lock; that process publishes the entry and rings
/// the receiver's doorbell, because the receiver may be asleep on it. Every crash point of
/// the send either is undone or ends published and rung, and at least one is the latter.
#[test]
fn lock_breaker_publishes_and_wakes_the_receiver() {
    const LIMIT: u32 = 400;
    if cfg!(miri) {
        // A sample: find the send's length by bisection, then crash at its last step (the
        // window between commit and publication), its first and its middle.
        let (mut lo, mut hi) = (1, LIMIT);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if send_crashed_at(mid) == Outcome::Completed {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        assert!(lo > 1 && lo < LIMIT, "the send never completed");
        assert_eq!(send_crashed_at(lo - 1), Outcome::Published);
        assert_eq!(send_crashed_at(1), Outcome::Undone);
        assert_ne!(send_crashed_at(lo / 2), Outcome::Completed);
        return;
    }
    let mut published = 0;
    for steps in 1..=LIMIT {
        match send_crashed_at(steps) {
            Outcome::Completed => {
                assert!(
                    published > 0,
                    "no crash fell between commit and publication"
                );
                return;
            }
            Outcome::Published => published += 1,
            Outcome::Undone => {}
        }
    }
    panic!("the send never completed within {LIMIT} steps");
}

/// A platform whose waits block until the test opens a gate, so an allocator can be held
/// "blocked" while the test declares its process dead.
#[derive(Clone)]
struct Gate {
    inner: TestPlatform,
    open: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Processes for Gate {
    fn current_process(&self) -> ProcessId {
        self.inner.current_process()
    }
    fn is_alive(&self, id: ProcessId) -> bool {
        self.inner.is_alive(id)
    }
}

impl WaitNotify for Gate {
    fn wait(&self, _word: &AtomicU32, _expected: u32, _timeout: Option<Duration>) -> WaitOutcome {
        let (lock, cv) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        WaitOutcome::TimedOut
    }
    fn notify_all(&self, _word: &AtomicU32) {}
}

impl Platform for Gate {}

/// An allocator that dies while blocked for memory does not leave the region believing
/// someone waits: reclaiming its process gives its registration back (`waiters` returns to
/// 0, so frees skip the wake-up again), and the count never goes below zero.
#[test]
fn a_dead_blocked_allocator_is_no_longer_counted_as_waiting() {
    let buf = AlignedBuf::new(24 * 1024);
    let gate = Gate {
        inner: TestPlatform::new(1),
        open: Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
    };
    // SAFETY: `buf` outlives `heap` (dropped at the end, after it).
    let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
    let heap = Heap::init(region, HeapConfig::default(), gate.clone()).unwrap();
    let hog = heap.register_as(ProcessId::from_pid(100)).unwrap();
    let waiter = heap.register_as(ProcessId::from_pid(101)).unwrap();
    while heap.try_alloc(hog, 256).is_ok() {}
    let waiters = || heap.snapshot().waiters;
    std::thread::scope(|s| {
        let blocked = s.spawn(|| heap.alloc_timeout(waiter, 4096, Some(Duration::from_secs(60))));
        while waiters() == 0 {
            std::thread::yield_now();
        }
        // Its process dies while blocked; a watchdog reclaims it.
        gate.inner.kill(101);
        assert_eq!(heap.reclaim_dead().unwrap(), 1);
        assert_eq!(
            waiters(),
            0,
            "the dead waiter's registration was given back"
        );
        // Were it still running, its next step finds its registration gone.
        let (lock, cv) = &*gate.open;
        *lock.lock().unwrap() = true;
        cv.notify_all();
        assert!(matches!(
            blocked.join().unwrap(),
            Err(Error::StaleMember { .. } | Error::Timeout)
        ));
    });
    assert_eq!(waiters(), 0, "never below zero");
    heap.check().unwrap();
    drop(heap);
    drop(buf);
}
