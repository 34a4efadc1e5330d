//! Waiting for a word in shared memory to change.
//!
//! Windows has no cross-process futex: `WaitOnAddress` only wakes threads of the same
//! process. So [`wait`] polls the word with the shared backoff of
//! [`poll_wait`](shm_polling::poll_wait) (spin, yield, then sleeps doubling
//! from 50 µs up to 1 ms) until it changes or the timeout passes, and [`notify_all`] has
//! nothing to do. Blocking allocation (waiting for the region's free epoch to move) and a
//! waiter on a contended region lock (waiting for its wake-up counter to move) therefore
//! react within about a millisecond, and each costs one short wake-up per millisecond. Receivers do not poll: they sleep on their doorbell's
//! semaphore (`bell.rs`).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use shm_core::WaitOutcome;

use shm_polling as polling;

/// Blocks while `*word == expected`, until it changes or `timeout` passes.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    polling::poll_wait(word, expected, timeout)
}

/// Wakes every waiter on `word`: nothing to do, waiters poll.
pub fn notify_all(_word: &AtomicU32) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    /// An unchanged word makes the wait time out, not too early.
    #[test]
    fn wait_times_out() {
        let word = AtomicU32::new(5);
        let t0 = Instant::now();
        assert_eq!(
            wait(&word, 5, Some(Duration::from_millis(30))),
            WaitOutcome::TimedOut
        );
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert_eq!(wait(&word, 5, Some(Duration::ZERO)), WaitOutcome::TimedOut);
    }

    /// A word that differs returns at once; a change from another thread ends the wait.
    #[test]
    fn wait_sees_changes() {
        let word = Arc::new(AtomicU32::new(1));
        assert_eq!(wait(&word, 0, None), WaitOutcome::Woken);
        let w = Arc::clone(&word);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.store(2, Ordering::Release);
            notify_all(&w);
        });
        assert_eq!(
            wait(&word, 1, Some(Duration::from_secs(10))),
            WaitOutcome::Woken
        );
        assert_eq!(word.load(Ordering::Acquire), 2);
        t.join().unwrap();
    }
}
