//! Doorbells as `sem_t` placed inside the region with `sem_init(pshared = 1)`.
//!
//! The semaphore goes in the doorbell's platform area, at an address aligned for `sem_t`:
//! a misaligned `sem_t` makes `sem_post`/`sem_wait` fail with `EINVAL` on Linux. The
//! alignment and size come from the type and are checked against the area at compile
//! time and again, on the actual address, by [`Doorbell::os_area`].

use std::mem::{align_of, size_of};
use std::time::Duration;

use shm_core::format::{Doorbell, OS_AREA_ALIGN, OS_AREA_BYTES};
use shm_core::{Region, WaitOutcome};

use shm_core::system::{SystemError, SystemResult as Result};

use crate::last_os;

const _: () = assert!(size_of::<libc::sem_t>() <= OS_AREA_BYTES);
const _: () = assert!(align_of::<libc::sem_t>() <= OS_AREA_ALIGN);

/// The `sem_t` of a doorbell, at an address checked for `sem_t`'s alignment.
pub fn sem_ptr(region: &Region<'_>, bell: &Doorbell) -> Result<*mut libc::sem_t> {
    let p = bell.os_area(region, size_of::<libc::sem_t>(), align_of::<libc::sem_t>())?;
    Ok(p.cast())
}

/// `sem_init(pshared = 1, value = 0)` in the doorbell.
pub fn init(region: &Region<'_>, bell: &Doorbell) -> Result<()> {
    let sem = sem_ptr(region, bell)?;
    // SAFETY: `sem` points at OS_AREA_BYTES >= size_of::<sem_t>() bytes of the region,
    // aligned for sem_t, owned by the caller's participant and not in use by anyone yet.
    if unsafe { libc::sem_init(sem, 1, 0) } != 0 {
        return Err(last_os("sem_init"));
    }
    bell.os_ready.store(1, std::sync::atomic::Ordering::Release);
    Ok(())
}

/// Refuses a doorbell whose semaphore is not initialised (or torn down): using it would
/// be undefined behaviour. `call` names the operation in the error.
fn ready(bell: &Doorbell, call: &'static str) -> Result<()> {
    if bell.os_ready.load(std::sync::atomic::Ordering::Acquire) == 0 {
        return Err(SystemError::Os {
            call,
            code: libc::EINVAL,
        });
    }
    Ok(())
}

/// `sem_post`.
pub fn post(region: &Region<'_>, bell: &Doorbell) -> Result<()> {
    ready(bell, "sem_post")?;
    let sem = sem_ptr(region, bell)?;
    // SAFETY: `sem` was initialised by `init` (os_ready) and lives in the mapped region.
    if unsafe { libc::sem_post(sem) } != 0 {
        return Err(last_os("sem_post"));
    }
    Ok(())
}

/// `sem_wait` / a timed wait, retrying on `EINTR`. On glibc the timed wait is
/// `sem_clockwait` on `CLOCK_MONOTONIC`, so setting the wall clock neither stretches nor
/// cuts the timeout; elsewhere (QNX, other libcs) it stays `sem_timedwait` on
/// `CLOCK_REALTIME`.
pub fn wait(
    region: &Region<'_>,
    bell: &Doorbell,
    timeout: Option<Duration>,
) -> Result<WaitOutcome> {
    ready(bell, "sem_wait")?;
    let sem = sem_ptr(region, bell)?;
    let deadline = match timeout {
        None => None,
        Some(t) => Some(deadline(WAIT_CLOCK, t)?),
    };
    loop {
        let r = match &deadline {
            // SAFETY: `sem` is initialised (os_ready) and mapped.
            None => unsafe { libc::sem_wait(sem) },
            // SAFETY: as above; `ts` is a valid timespec on WAIT_CLOCK.
            Some(ts) => unsafe { timed_wait(sem, ts) },
        };
        if r == 0 {
            return Ok(WaitOutcome::Woken);
        }
        let e = last_os(if deadline.is_some() {
            TIMED_WAIT
        } else {
            "sem_wait"
        });
        match e.os_code() {
            Some(libc::EINTR) => continue,
            Some(libc::ETIMEDOUT) => return Ok(WaitOutcome::TimedOut),
            _ => return Err(e),
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod clock {
    // The libc crate does not bind `sem_clockwait` for linux-gnu; glibc has it since 2.30.
    extern "C" {
        pub fn sem_clockwait(
            sem: *mut libc::sem_t,
            clock: libc::clockid_t,
            abstime: *const libc::timespec,
        ) -> libc::c_int;
    }
}

/// The clock the timed wait's absolute deadline is on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const WAIT_CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const WAIT_CLOCK: libc::clockid_t = libc::CLOCK_REALTIME;

/// The timed wait's name in errors.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TIMED_WAIT: &str = "sem_clockwait";
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const TIMED_WAIT: &str = "sem_timedwait";

/// Waits on `sem` until the absolute time `ts` on [`WAIT_CLOCK`].
///
/// # Safety
/// `sem` is an initialised, mapped `sem_t`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe fn timed_wait(sem: *mut libc::sem_t, ts: &libc::timespec) -> libc::c_int {
    // SAFETY: the caller guarantees `sem`; `ts` is a valid timespec; CLOCK_MONOTONIC is
    // one of the two clocks sem_clockwait accepts.
    unsafe { clock::sem_clockwait(sem, WAIT_CLOCK, ts) }
}

/// Waits on `sem` until the absolute time `ts` on [`WAIT_CLOCK`].
///
/// # Safety
/// `sem` is an initialised, mapped `sem_t`.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
unsafe fn timed_wait(sem: *mut libc::sem_t, ts: &libc::timespec) -> libc::c_int {
    // SAFETY: the caller guarantees `sem`; `ts` is a valid timespec on CLOCK_REALTIME,
    // the clock sem_timedwait measures against.
    unsafe { libc::sem_timedwait(sem, ts) }
}

/// `sem_destroy`.
pub fn destroy(region: &Region<'_>, bell: &Doorbell) {
    if bell.os_ready.swap(0, std::sync::atomic::Ordering::AcqRel) == 0 {
        return;
    }
    if let Ok(sem) = sem_ptr(region, bell) {
        // SAFETY: initialised by `init`; no one waits on it any more (its owner is leaving).
        unsafe { libc::sem_destroy(sem) };
    }
}

/// Now plus `t` on `clock`, the absolute deadline the timed wait wants.
fn deadline(clock: libc::clockid_t, t: Duration) -> Result<libc::timespec> {
    // SAFETY: an all-zero timespec is valid; clock_gettime overwrites it.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Err(last_os("clock_gettime"));
    }
    let nanos = now.tv_nsec as u64 + u64::from(t.subsec_nanos());
    let secs = (now.tv_sec as u64)
        .saturating_add(t.as_secs())
        .saturating_add(nanos / 1_000_000_000);
    Ok(libc::timespec {
        tv_sec: secs.min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(clock: libc::clockid_t) -> libc::timespec {
        // SAFETY: an all-zero timespec is valid; clock_gettime overwrites it.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: valid clock id and out-pointer.
        assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0);
        ts
    }

    fn nanos(ts: &libc::timespec) -> i128 {
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    }

    /// On glibc the timed wait's deadline is on CLOCK_MONOTONIC (immune to wall-clock
    /// steps): it lies between the monotonic clock read before and `t` after the clock
    /// read after computing it. A CLOCK_REALTIME deadline would be decades off.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn timed_wait_deadline_is_monotonic() {
        assert_eq!(WAIT_CLOCK, libc::CLOCK_MONOTONIC);
        let t = Duration::from_secs(5);
        let before = nanos(&now(libc::CLOCK_MONOTONIC));
        let d = nanos(&deadline(WAIT_CLOCK, t).expect("deadline"));
        let after = nanos(&now(libc::CLOCK_MONOTONIC));
        assert!(
            d >= before + t.as_nanos() as i128,
            "deadline before now + t"
        );
        assert!(d <= after + t.as_nanos() as i128, "deadline after now + t");
    }

    /// The monotonic timed wait really waits on the semaphore: a posted semaphore is
    /// taken at once, an unposted one reports a timeout (ETIMEDOUT, not EINVAL: the
    /// symbol and the clock are accepted).
    #[test]
    fn timed_wait_takes_a_post_and_times_out() {
        let mut sem = std::mem::MaybeUninit::<libc::sem_t>::uninit();
        // SAFETY: `sem` is writable, aligned storage for a sem_t; process-private.
        assert_eq!(unsafe { libc::sem_init(sem.as_mut_ptr(), 0, 1) }, 0);
        let ts = deadline(WAIT_CLOCK, Duration::from_millis(1)).expect("deadline");
        // SAFETY: initialised above.
        assert_eq!(unsafe { timed_wait(sem.as_mut_ptr(), &ts) }, 0);
        // SAFETY: as above.
        let r = unsafe { timed_wait(sem.as_mut_ptr(), &ts) };
        let e = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((r, e), (-1, Some(libc::ETIMEDOUT)));
        // SAFETY: initialised, no waiters.
        unsafe { libc::sem_destroy(sem.as_mut_ptr()) };
    }
}
