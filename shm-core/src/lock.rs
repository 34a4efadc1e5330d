//! Taking and releasing the region lock ([`acquire`], [`release`]).
//!
//! Taking it is a compare-and-swap of the lock word from 0 to the caller's [`ProcessId`]
//! (the word is [`LockWord`]). A waiter first retries for a few rounds, then sleeps on the
//! header's `lock_wake` counter through the platform's [`WaitNotify::wait`] (a futex on
//! Linux), so a contended lock costs its waiters a wake-up, not fixed sleeps. The
//! protocol, in the style of a three-state futex mutex, with the holder kept apart:
//! - a sleeping waiter reads `lock_wake`, sets `lock_contended`, tries the lock once more
//!   and sleeps only while `lock_wake` still holds what it read;
//! - a releaser clears the lock word, and if `lock_contended` was set it clears it, bumps
//!   `lock_wake` and wakes one sleeper;
//! - a waiter that sleeps once keeps setting `lock_contended` on every later try, so that
//!   when it gets the lock its own release wakes the next sleeper.
//!
//! A sequentially consistent fence on each side (after the waiter sets the flag, after
//! the releaser clears the word) means a release cannot slip between a waiter's last try
//! and its sleep unseen: either the releaser sees the flag, or the
//! waiter's try sees the lock free. A waiter that died while sleeping leaves the flag set;
//! the next release clears it and pays for one wake-up.
//!
//! A waiter whose sleep times out asks the platform whether the holder still lives; if
//! not, it swaps the dead holder's id for its own (only one waiter can win that swap) and
//! the heap undoes the dead holder's half-done operation from the journal.

use core::sync::atomic::{fence, Ordering::SeqCst};
use core::time::Duration;

use crate::format::RegionHeader;
use crate::ids::ProcessId;
use crate::os::{Processes, WaitNotify, WaitOutcome};

/// Rounds of retrying (with the platform's [`WaitNotify::relax`]) before sleeping.
const SPIN_ROUNDS: u32 = 64;

/// How long a sleeping waiter waits before it checks that the holder still lives.
const LIVENESS_PERIOD: Duration = Duration::from_millis(5);

/// How often (in rounds) a waiter on a platform whose waits return at once (no clock,
/// a bounded spin) checks whether the holder is alive.
const LIVENESS_EVERY: u32 = 64;

/// How the caller got the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// It was free.
    Free,
    /// It was held by this dead process, whose lock was broken.
    FromDead(ProcessId),
}

/// Takes the region lock in `hdr`, breaking it if its holder died.
pub(crate) fn acquire<P: Processes + WaitNotify>(
    hdr: &RegionHeader,
    platform: &P,
    me: ProcessId,
) -> Acquired {
    let lock = &hdr.lock;
    if lock.try_acquire(me) {
        return Acquired::Free;
    }
    let mut round: u32 = 0;
    // Set once this waiter has slept: from then on it marks the lock contended on every
    // try, so its own release wakes whoever sleeps after it.
    let mut slept = false;
    loop {
        round = round.wrapping_add(1);
        if !slept && round < SPIN_ROUNDS {
            platform.relax(round);
            if lock.try_acquire(me) {
                return Acquired::Free;
            }
            continue;
        }
        let seen = hdr.lock_wake.load(SeqCst);
        hdr.lock_contended.store(1, SeqCst);
        // Pairs with the fence in `release`: either that releaser sees the flag, or this
        // try sees its release.
        fence(SeqCst);
        if lock.try_acquire(me) {
            return Acquired::Free;
        }
        slept = true;
        let outcome = platform.wait(&hdr.lock_wake, seen, Some(LIVENESS_PERIOD));
        if outcome == WaitOutcome::TimedOut || round % LIVENESS_EVERY == 0 {
            if let Some(holder) = lock.holder() {
                let dead = holder.pid == 0 || (holder != me && !platform.is_alive(holder));
                if dead && lock.try_break(holder, me) {
                    return Acquired::FromDead(holder);
                }
            }
        }
        // The next try sets the flag first: the release that woke this waiter cleared it,
        // and others may still sleep.
    }
}

/// Releases the region lock in `hdr` and wakes one sleeping waiter, if any may sleep.
/// The common case, nobody waiting, costs one load of a word on the lock's cache line.
pub(crate) fn release<P: WaitNotify>(hdr: &RegionHeader, platform: &P) {
    hdr.lock.release();
    // Pairs with the fence in `acquire` (see the module docs).
    fence(SeqCst);
    if hdr.lock_contended.load(SeqCst) != 0 && hdr.lock_contended.swap(0, SeqCst) != 0 {
        hdr.lock_wake.fetch_add(1, SeqCst);
        platform.notify_one(&hdr.lock_wake);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
    extern crate std;

    use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
    use std::sync::{Condvar, Mutex};
    use std::time::Duration as StdDuration;

    use zerocopy::FromZeros;

    use super::*;

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
                    .wait_timeout(state, StdDuration::from_secs(60))
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
        let hdr = RegionHeader::new_zeroed();
        let platform = CountingWaits::default();
        let holder = ProcessId::from_pid(1);
        let waiter = ProcessId::from_pid(2);
        assert_eq!(acquire(&hdr, &platform, holder), Acquired::Free);
        std::thread::scope(|s| {
            let got = s.spawn(|| acquire(&hdr, &platform, waiter));
            while platform.sleeps.load(SeqCst) == 0 {
                std::thread::yield_now();
            }
            release(&hdr, &platform);
            assert_eq!(got.join().unwrap(), Acquired::Free);
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
        release(&hdr, &platform);
        assert_eq!(hdr.lock.holder(), None);
        assert_eq!(hdr.lock_contended.load(Relaxed), 0);
        assert_eq!(platform.notifies.load(SeqCst), 2);
        assert_eq!(acquire(&hdr, &platform, holder), Acquired::Free);
        release(&hdr, &platform);
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
        let hdr = RegionHeader::new_zeroed();
        let platform = CountingWaits::default();
        let counter = AtomicU32::new(0);
        let threads: u32 = if cfg!(miri) { 3 } else { 6 };
        let rounds: u32 = if cfg!(miri) { 20 } else { 2_000 };
        std::thread::scope(|s| {
            for t in 0..threads {
                let (hdr, platform, counter) = (&hdr, &platform, &counter);
                s.spawn(move || {
                    let me = ProcessId::from_pid(t + 10);
                    for _ in 0..rounds {
                        assert_eq!(acquire(hdr, platform, me), Acquired::Free);
                        // Not atomic as a whole: only the lock keeps increments apart.
                        let v = counter.load(Relaxed);
                        std::thread::yield_now();
                        counter.store(v + 1, Relaxed);
                        release(hdr, platform);
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
        let hdr = RegionHeader::new_zeroed();
        let platform = CountingWaits::default();
        hdr.lock_contended.store(1, Relaxed);
        let me = ProcessId::from_pid(1);
        for _ in 0..3 {
            assert_eq!(acquire(&hdr, &platform, me), Acquired::Free);
            release(&hdr, &platform);
        }
        assert_eq!(platform.notifies.load(SeqCst), 1);
        assert_eq!(hdr.lock_contended.load(Relaxed), 0);
        assert_eq!(hdr.lock_wake.load(Relaxed), 1);
    }
}
