//! Waiting without a cross-process futex (Windows, QNX), for systems that have `std`:
//! [`poll_wait`] re-reads the word with a backoff that spins briefly, then yields, then
//! sleeps up to [`MAX_SLEEP`]; [`relax`] is the pause between a region lock waiter's first
//! tries; [`now`] the monotonic clock.
//!
//! Polling is only used by the heap's blocking allocation (waiting for someone to free
//! memory) and by a region lock waiter after its first tries (waiting for a release's
//! wake-up counter to move); message delivery uses each system's doorbells. A crate of its own, under
//! `shm-host/`, so that `shm-core` stays `no_std` with no operating system: `shm-host`
//! (Linux, Windows) and `shm-qnx` both use it.

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;
use std::sync::OnceLock;
use std::time::Instant;

use shm_core::WaitOutcome;

/// Rounds spent spinning before yielding.
const SPIN_ROUNDS: u32 = 16;
/// Rounds spent yielding before sleeping.
const YIELD_ROUNDS: u32 = 32;
/// First sleep; each later one doubles, up to [`MAX_SLEEP`].
const FIRST_SLEEP: Duration = Duration::from_micros(50);
/// Longest pause between two reads of the word.
pub const MAX_SLEEP: Duration = Duration::from_millis(1);

/// How long to pause after `round` reads that found the word unchanged: nothing (spin)
/// for the first rounds, a yield (`Some(ZERO)`) for the next, then growing sleeps.
pub fn backoff(round: u32) -> Option<Duration> {
    if round < SPIN_ROUNDS {
        None
    } else if round < YIELD_ROUNDS {
        Some(Duration::ZERO)
    } else {
        let doublings = round.saturating_sub(YIELD_ROUNDS).min(16);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        Some(FIRST_SLEEP.saturating_mul(factor).min(MAX_SLEEP))
    }
}

/// Blocks while `word == expected`, until the word changes or `timeout` passes.
pub fn poll_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    // A timeout too large to add to `now` is no timeout.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut round: u32 = 0;
    loop {
        if word.load(Ordering::Acquire) != expected {
            return WaitOutcome::Woken;
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return WaitOutcome::TimedOut,
            },
            None => None,
        };
        match backoff(round) {
            None => core::hint::spin_loop(),
            Some(Duration::ZERO) => std::thread::yield_now(),
            Some(pause) => std::thread::sleep(left.map_or(pause, |l| l.min(pause))),
        }
        round = round.saturating_add(1);
    }
}

/// Backoff for a contended region lock: spin briefly, then yield, then sleep a little.
pub fn relax(round: u32) {
    if round < 64 {
        core::hint::spin_loop();
    } else if round < 128 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Time since the first call in this process (monotonic, through `Instant`).
pub fn now() -> Duration {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
    use super::*;
    use std::sync::Arc;

    /// A word that already differs returns at once, even with a zero timeout.
    #[test]
    fn a_changed_word_returns_at_once() {
        let w = AtomicU32::new(5);
        assert_eq!(poll_wait(&w, 4, Some(Duration::ZERO)), WaitOutcome::Woken);
        assert_eq!(poll_wait(&w, 4, None), WaitOutcome::Woken);
    }

    /// An unchanged word times out, and not before the timeout.
    #[test]
    fn an_unchanged_word_times_out() {
        let w = AtomicU32::new(1);
        let t = Duration::from_millis(30);
        let start = Instant::now();
        assert_eq!(poll_wait(&w, 1, Some(t)), WaitOutcome::TimedOut);
        assert!(start.elapsed() >= t);
        assert_eq!(
            poll_wait(&w, 1, Some(Duration::ZERO)),
            WaitOutcome::TimedOut
        );
    }

    /// A change made by another thread wakes a waiter without a timeout, promptly.
    #[test]
    fn a_change_by_another_thread_wakes_the_waiter() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&w);
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w2.store(1, Ordering::Release);
        });
        let start = Instant::now();
        assert_eq!(poll_wait(&w, 0, None), WaitOutcome::Woken);
        assert_eq!(w.load(Ordering::Acquire), 1);
        assert!(start.elapsed() < Duration::from_secs(5));
        waker.join().unwrap();
    }

    /// The backoff spins, then yields, then sleeps in growing steps that never exceed
    /// `MAX_SLEEP`, even after very many rounds.
    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(0), None);
        assert_eq!(backoff(SPIN_ROUNDS), Some(Duration::ZERO));
        assert_eq!(backoff(YIELD_ROUNDS), Some(FIRST_SLEEP));
        assert_eq!(backoff(YIELD_ROUNDS + 1), Some(FIRST_SLEEP * 2));
        let mut last = Duration::ZERO;
        for r in YIELD_ROUNDS..YIELD_ROUNDS + 100 {
            let p = backoff(r).unwrap();
            assert!(p >= last && p <= MAX_SLEEP);
            last = p;
        }
        assert_eq!(backoff(u32::MAX), Some(MAX_SLEEP));
    }

    /// The clock is monotonic.
    #[test]
    fn now_is_monotonic() {
        let a = now();
        let b = now();
        assert!(b >= a);
    }
}
