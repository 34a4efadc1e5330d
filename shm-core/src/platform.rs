//! What the core needs from the platform, as small traits: who am I, is that process
//! alive, and how to wait for a word to change. `shm-host` and `shm-qnx` implement them
//! for operating systems; [`SpinPlatform`] and [`CriticalSectionPlatform`] serve firmware.

use core::sync::atomic::AtomicU32;
use core::time::Duration;

use crate::doorbell::Doorbell;
use crate::region::Region;

/// Identifies a process for as long as it lives.
///
/// `pid` alone is not enough: operating systems reuse process ids, so a dead lock holder's
/// pid may belong to a new, live process. `tag` tells the two apart (on Linux a hash of the
/// process start time, on Windows of its creation time); 0 means "unknown", and then only
/// `pid` is compared. `pid` is never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// Operating-system process id (or task id on firmware); never 0.
    pub pid: u32,
    /// Distinguishes processes that had the same `pid` at different times; 0 if unknown.
    pub tag: u32,
}

impl ProcessId {
    /// A process id with an unknown tag.
    pub const fn from_pid(pid: u32) -> Self {
        ProcessId { pid, tag: 0 }
    }
}

impl core::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.pid)
    }
}

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

/// Everything a [`Heap`](crate::Heap) needs from its platform.
pub trait Platform: Processes + WaitNotify {
    /// Runs one operation on the region. Firmware runs it inside a critical section so an
    /// interrupt handler cannot interleave with the main loop; hosts just call `f`.
    fn critical<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }

    /// Wakes the owner of `bell`, which sleeps on the platform's object in it. Called when
    /// this process completes another (dead) process's send, so the receiver does not
    /// sleep on a message that is there. Platforms whose receivers never sleep on a
    /// doorbell (they poll) need not do anything.
    fn ring(&self, region: &Region<'_>, bell: &Doorbell) {
        let _ = (region, bell);
    }
}

impl<T: Processes + ?Sized> Processes for &T {
    fn current_process(&self) -> ProcessId {
        (**self).current_process()
    }
    fn is_alive(&self, id: ProcessId) -> bool {
        (**self).is_alive(id)
    }
}

impl<T: WaitNotify + ?Sized> WaitNotify for &T {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        (**self).wait(word, expected, timeout)
    }
    fn notify_all(&self, word: &AtomicU32) {
        (**self).notify_all(word)
    }
    fn relax(&self, round: u32) {
        (**self).relax(round)
    }
    fn now(&self) -> Option<Duration> {
        (**self).now()
    }
}

/// A shared reference to a platform is a platform, so several heaps (or a heap and the
/// code around it) can use one.
impl<T: Platform> Platform for &T {
    fn critical<R>(&self, f: impl FnOnce() -> R) -> R {
        (**self).critical(f)
    }
    fn ring(&self, region: &Region<'_>, bell: &Doorbell) {
        (**self).ring(region, bell)
    }
}

/// A platform for a single program with no operating system and no interrupts touching
/// the region: one process, always alive; waiting spins.
#[derive(Clone, Copy, Debug)]
pub struct SpinPlatform {
    id: ProcessId,
}

impl SpinPlatform {
    /// A platform whose one process has id `pid` (non-zero).
    pub const fn new(pid: u32) -> Self {
        SpinPlatform {
            id: ProcessId::from_pid(pid),
        }
    }
}

impl Default for SpinPlatform {
    fn default() -> Self {
        SpinPlatform::new(1)
    }
}

impl Processes for SpinPlatform {
    fn current_process(&self) -> ProcessId {
        self.id
    }
    fn is_alive(&self, _id: ProcessId) -> bool {
        true
    }
}

impl WaitNotify for SpinPlatform {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        spin_wait(word, expected, timeout)
    }
    fn notify_all(&self, _word: &AtomicU32) {}
}

impl Platform for SpinPlatform {}

/// Spins a bounded number of rounds while `word == expected`. Without a clock a timeout
/// cannot be measured, so a bounded spin stands for it: the caller re-checks its
/// condition and, with a timeout, gives up after this returns `TimedOut`.
fn spin_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    const ROUNDS: u32 = 1 << 16;
    for _ in 0..ROUNDS {
        if word.load(core::sync::atomic::Ordering::Acquire) != expected {
            return WaitOutcome::Woken;
        }
        core::hint::spin_loop();
    }
    if timeout.is_some() {
        WaitOutcome::TimedOut
    } else {
        WaitOutcome::Woken
    }
}

/// A firmware platform: like [`SpinPlatform`], but every operation runs inside
/// `critical_section::with`, so the main loop and interrupt handlers can share one region.
#[cfg(feature = "critical-section")]
#[derive(Clone, Copy, Debug)]
pub struct CriticalSectionPlatform {
    id: ProcessId,
}

#[cfg(feature = "critical-section")]
impl CriticalSectionPlatform {
    /// A platform whose one process has id `pid` (non-zero).
    pub const fn new(pid: u32) -> Self {
        CriticalSectionPlatform {
            id: ProcessId::from_pid(pid),
        }
    }
}

#[cfg(feature = "critical-section")]
impl Processes for CriticalSectionPlatform {
    fn current_process(&self) -> ProcessId {
        self.id
    }
    fn is_alive(&self, _id: ProcessId) -> bool {
        true
    }
}

#[cfg(feature = "critical-section")]
impl WaitNotify for CriticalSectionPlatform {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        spin_wait(word, expected, timeout)
    }
    fn notify_all(&self, _word: &AtomicU32) {}
}

#[cfg(feature = "critical-section")]
impl Platform for CriticalSectionPlatform {
    fn critical<R>(&self, f: impl FnOnce() -> R) -> R {
        critical_section::with(|_| f())
    }
}
