//! What the core needs from an operating system, with no region in sight: who am I and is
//! that process alive ([`Processes`]), and how to wait for a word to change
//! ([`WaitNotify`]). The [`Platform`](crate::Platform) trait adds what needs the region's
//! structures (running an operation in a critical section, ringing a doorbell).

use core::sync::atomic::AtomicU32;
use core::time::Duration;

use crate::ids::ProcessId;

/// Process identity and liveness.
pub trait Processes {
    /// The calling process.
    fn current_process(&self) -> ProcessId;

    /// Whether `id` names a process that still runs. Must not report a live process as
    /// dead (that would break a lock someone holds); may report a dead one as alive for a
    /// while (that only delays recovery).
    ///
    /// A platform that tags its processes should report a tag it would never produce (0,
    /// or one that does not match the live process with that pid) as dead: otherwise a
    /// corrupted lock word naming some unrelated long-lived pid would never be broken.
    fn is_alive(&self, id: ProcessId) -> bool;

    /// Changes in a process made by `fork` (a copy of its memory that is another process).
    /// State kept in process memory that acts as this process without the lock (a
    /// [`Cache`](crate::Cache)) compares it and refuses to act in the copy. Platforms
    /// without `fork` keep the default, 0. Must be cheap: it is read on every cache
    /// operation.
    fn fork_generation(&self) -> u32 {
        0
    }
}

/// How [`WaitNotify::wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The word changed, a notification arrived, or the wait ended spuriously.
    Woken,
    /// The timeout passed.
    TimedOut,
}

/// Waiting for a word in the region to change, futex style.
pub trait WaitNotify {
    /// Blocks while `word` holds `expected`, until [`notify_all`] on the same word, the
    /// timeout, or a spurious wake-up. Returns at once if the word differs.
    ///
    /// [`notify_all`]: WaitNotify::notify_all
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome;

    /// Wakes every waiter on `word`.
    fn notify_all(&self, word: &AtomicU32);

    /// Wakes at least one waiter on `word` (the region lock hands itself to one waiter at
    /// a time). Platforms that cannot wake just one wake them all.
    fn notify_one(&self, word: &AtomicU32) {
        self.notify_all(word)
    }

    /// Called between attempts to take a contended lock; `round` counts the attempts.
    /// Spin, yield or sleep as the platform prefers.
    fn relax(&self, round: u32) {
        let _ = round;
        core::hint::spin_loop();
    }

    /// A monotonic clock for deadlines, if the platform has one.
    fn now(&self) -> Option<Duration> {
        None
    }
}

impl<T: Processes + ?Sized> Processes for &T {
    fn current_process(&self) -> ProcessId {
        (**self).current_process()
    }
    fn is_alive(&self, id: ProcessId) -> bool {
        (**self).is_alive(id)
    }
    fn fork_generation(&self) -> u32 {
        (**self).fork_generation()
    }
}

impl<T: WaitNotify + ?Sized> WaitNotify for &T {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        (**self).wait(word, expected, timeout)
    }
    fn notify_all(&self, word: &AtomicU32) {
        (**self).notify_all(word)
    }
    fn notify_one(&self, word: &AtomicU32) {
        (**self).notify_one(word)
    }
    fn relax(&self, round: u32) {
        (**self).relax(round)
    }
    fn now(&self) -> Option<Duration> {
        (**self).now()
    }
}
