//! [`Platform`]: everything a [`Heap`](crate::Heap) needs from its platform, and the two
//! platforms for firmware ([`SpinPlatform`], [`CriticalSectionPlatform`]). `shm-host` and
//! `shm-qnx` implement it for operating systems.
//!
//! The process and waiting parts ([`Processes`], [`WaitNotify`]) live in the bottom layer
//! (`os`); this trait sits above the doorbell because ringing one needs its structure.

use core::sync::atomic::AtomicU32;
use core::time::Duration;

use crate::format::Doorbell;
use crate::ids::ProcessId;
use crate::os::{Processes, WaitNotify, WaitOutcome};
use crate::region::Region;

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
