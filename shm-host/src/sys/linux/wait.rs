//! Futex waits on words in shared memory (not `FUTEX_PRIVATE`, so they work across
//! processes).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use shm_core::WaitOutcome;

/// Blocks while `*word == expected`, until woken or `timeout`.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned 4-byte atomic for the duration of the call;
    // FUTEX_WAIT only reads it; `ts_ptr` is null or points at a live timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
        )
    };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        WaitOutcome::TimedOut
    } else {
        WaitOutcome::Woken
    }
}

/// Wakes every waiter on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned 4-byte atomic; FUTEX_WAKE does not access memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// Wakes one waiter on `word`.
pub fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned 4-byte atomic; FUTEX_WAKE does not access memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
    }
}

/// Implements `WaitNotify` for a Linux system: futex waits on the words themselves, the
/// polled backoff and the monotonic clock. Every Linux system (and the foreign-memory
/// doorbells) waits this way, so the impl is written once.
macro_rules! futex_wait_notify {
    ($system:ty) => {
        impl shm_core::WaitNotify for $system {
            fn wait(
                &self,
                word: &std::sync::atomic::AtomicU32,
                expected: u32,
                timeout: Option<std::time::Duration>,
            ) -> shm_core::WaitOutcome {
                $crate::sys::linux::wait::futex_wait(word, expected, timeout)
            }
            fn notify_all(&self, word: &std::sync::atomic::AtomicU32) {
                $crate::sys::linux::wait::futex_wake_all(word)
            }
            fn notify_one(&self, word: &std::sync::atomic::AtomicU32) {
                $crate::sys::linux::wait::futex_wake_one(word)
            }
            fn relax(&self, round: u32) {
                shm_polling::relax(round)
            }
            fn now(&self) -> Option<std::time::Duration> {
                Some(shm_polling::now())
            }
        }
    };
}
pub(crate) use futex_wait_notify;
