//! The region lock's wait protocol (`shm-core/src/lock.rs`), driven through the test kit
//! with a futex-like platform: each test states the invariant it checks.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use core::mem::size_of;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed, Ordering::SeqCst};
use core::time::Duration;
use std::sync::{Condvar, Mutex};

use shm_core::format::RegionHeader;
use shm_core::testkit::{lock_acquire, lock_release, AlignedBuf};
use shm_core::{ProcessId, Processes, Region, WaitNotify, WaitOutcome};

/// A zeroed region header in memory of its own (the lock words start free).
struct Header {
    buf: AlignedBuf,
}

impl Header {
    fn new() -> Self {
        Header {
            buf: AlignedBuf::new(size_of::<RegionHeader>()),
        }
    }

    fn get(&self) -> &RegionHeader {
        // SAFETY: `buf` is zeroed and 4096-aligned, and the region's lifetime is that of
        // `&self`, which keeps `buf` alive.
        let region = unsafe { Region::from_raw(self.buf.as_ptr(), self.buf.len()) }.unwrap();
        region.get(0).unwrap()
    }
}

/// A platform whose waits behave like futex waits: a waiter returns at once if the
/// word differs, otherwise sleeps until a `notify_one` hands it one wake-up (or a long
/// timeout passes, which counts as a missed wake-up); a wake-up with nobody asleep is
/// lost. It counts sleeps, wake-ups and timeouts.
#[derive(Default)]
struct CountingWaits {
    /// (sleepers, wake-ups handed out and not yet taken)
    state: Mutex<(u32, u32)>,
    woken: Condvar,
    sleeps: AtomicU32,
    timeouts: AtomicU32,
    notifies: AtomicU32,
}

impl Processes for CountingWaits {
    fn current_process(&self) -> ProcessId {
        ProcessId::from_pid(1)
    }
    fn is_alive(&self, _id: ProcessId) -> bool {
        true
    }
}

impl WaitNotify for CountingWaits {
    fn wait(&self, word: &AtomicU32, expected: u32, _timeout: Option<Duration>) -> WaitOutcome {
        let mut state = self.state.lock().unwrap();
        if word.load(SeqCst) != expected {
            return WaitOutcome::Woken;
        }
        self.sleeps.fetch_add(1, SeqCst);
        state.0 += 1;
        loop {
            let (next, result) = self
                .woken
                .wait_timeout(state, Duration::from_secs(60))
                .unwrap();
            state = next;
            if state.1 > 0 {
                state.1 -= 1;
                state.0 -= 1;
                return WaitOutcome::Woken;
            }
            if result.timed_out() {
                state.0 -= 1;
                self.timeouts.fetch_add(1, SeqCst);
                return WaitOutcome::TimedOut;
            }
        }
    }
    fn notify_all(&self, _word: &AtomicU32) {
        unreachable!("the lock wakes one waiter at a time")
    }
    fn notify_one(&self, _word: &AtomicU32) {
        let mut state = self.state.lock().unwrap();
        if state.0 > state.1 {
            state.1 += 1;
        }
        self.notifies.fetch_add(1, SeqCst);
        self.woken.notify_all();
    }
}

/// A waiter that went to sleep on a held lock gets it through the holder's release,
/// which wakes it (no timeout, no liveness check), and the contention flag is cleared
/// once nobody waits any more.
#[test]
fn a_sleeping_waiter_is_woken_by_the_release() {
    let mem = Header::new();
    let hdr = mem.get();
    let platform = CountingWaits::default();
    let holder = ProcessId::from_pid(1);
    let waiter = ProcessId::from_pid(2);
    assert_eq!(lock_acquire(hdr, &platform, holder), None);
    std::thread::scope(|s| {
        let got = s.spawn(|| lock_acquire(hdr, &platform, waiter));
        while platform.sleeps.load(SeqCst) == 0 {
            std::thread::yield_now();
        }
        lock_release(hdr, &platform);
        assert_eq!(got.join().unwrap(), None);
    });
    assert_eq!(hdr.lock.holder(), Some(waiter));
    assert_eq!(
        platform.timeouts.load(SeqCst),
        0,
        "the waiter was never woken"
    );
    assert_eq!(platform.notifies.load(SeqCst), 1);
    // The woken waiter marked the lock contended in case others slept behind it: its
    // release pays one wake-up, and leaves the flag clear.
    lock_release(hdr, &platform);
    assert_eq!(hdr.lock.holder(), None);
    assert_eq!(hdr.lock_contended.load(Relaxed), 0);
    assert_eq!(platform.notifies.load(SeqCst), 2);
    assert_eq!(lock_acquire(hdr, &platform, holder), None);
    lock_release(hdr, &platform);
    assert_eq!(
        platform.notifies.load(SeqCst),
        2,
        "nobody waits: no wake-up"
    );
}

/// Many threads contending for the lock all get it, each once per round, and none of
/// them ever waits for a timeout: every sleep ends with a release's wake-up.
#[test]
fn contending_waiters_are_all_woken() {
    let mem = Header::new();
    let hdr = mem.get();
    let platform = CountingWaits::default();
    let counter = AtomicU32::new(0);
    let threads: u32 = if cfg!(miri) { 3 } else { 6 };
    let rounds: u32 = if cfg!(miri) { 20 } else { 2_000 };
    std::thread::scope(|s| {
        for t in 0..threads {
            let (platform, counter) = (&platform, &counter);
            s.spawn(move || {
                let me = ProcessId::from_pid(t + 10);
                for _ in 0..rounds {
                    assert_eq!(lock_acquire(hdr, platform, me), None);
                    // Not atomic as a whole: only the lock keeps increments apart.
                    let v = counter.load(Relaxed);
                    std::thread::yield_now();
                    counter.store(v + 1, Relaxed);
                    lock_release(hdr, platform);
                }
            });
        }
    });
    assert_eq!(counter.load(Relaxed), threads * rounds);
    assert_eq!(platform.timeouts.load(SeqCst), 0, "a wake-up was missed");
    assert_eq!(hdr.lock_contended.load(Relaxed), 0);
}

/// A waiter that died asleep leaves the contention flag set: the next release clears
/// it and pays one wake-up, later ones none.
#[test]
fn a_dead_waiters_flag_costs_one_wake_up() {
    let mem = Header::new();
    let hdr = mem.get();
    let platform = CountingWaits::default();
    hdr.lock_contended.store(1, Relaxed);
    let me = ProcessId::from_pid(1);
    for _ in 0..3 {
        assert_eq!(lock_acquire(hdr, &platform, me), None);
        lock_release(hdr, &platform);
    }
    assert_eq!(platform.notifies.load(SeqCst), 1);
    assert_eq!(hdr.lock_contended.load(Relaxed), 0);
    assert_eq!(hdr.lock_wake.load(Relaxed), 1);
}
