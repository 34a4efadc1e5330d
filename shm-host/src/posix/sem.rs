//! Doorbells as `sem_t` placed inside the region with `sem_init(pshared = 1)`.
//!
//! The semaphore goes in the doorbell's platform area, at an address aligned for `sem_t`:
//! a misaligned `sem_t` makes `sem_post`/`sem_wait` fail with `EINVAL` on Linux. The
//! alignment and size come from the type and are checked against the area at compile
//! time and again, on the actual address, by [`Doorbell::os_area`].

use std::mem::{align_of, size_of};
use std::time::Duration;

use shm_core::doorbell::{Doorbell, OS_AREA_ALIGN, OS_AREA_BYTES};
use shm_core::{Region, WaitOutcome};

use crate::error::{HostError, Result};

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
        return Err(HostError::last_os("sem_init"));
    }
    bell.os_ready.store(1, std::sync::atomic::Ordering::Release);
    Ok(())
}

/// Refuses a doorbell whose semaphore is not initialised (or torn down): using it would
/// be undefined behaviour. `call` names the operation in the error.
fn ready(bell: &Doorbell, call: &'static str) -> Result<()> {
    if bell.os_ready.load(std::sync::atomic::Ordering::Acquire) == 0 {
        return Err(HostError::Os {
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
        return Err(HostError::last_os("sem_post"));
    }
    Ok(())
}

/// `sem_wait` / `sem_timedwait`, retrying on `EINTR`.
pub fn wait(
    region: &Region<'_>,
    bell: &Doorbell,
    timeout: Option<Duration>,
) -> Result<WaitOutcome> {
    ready(bell, "sem_wait")?;
    let sem = sem_ptr(region, bell)?;
    let deadline = match timeout {
        None => None,
        Some(t) => Some(realtime_deadline(t)?),
    };
    loop {
        let r = match &deadline {
            // SAFETY: `sem` is initialised (os_ready) and mapped.
            None => unsafe { libc::sem_wait(sem) },
            // SAFETY: as above; `ts` is a valid timespec.
            Some(ts) => unsafe { libc::sem_timedwait(sem, ts) },
        };
        if r == 0 {
            return Ok(WaitOutcome::Woken);
        }
        let e = HostError::last_os(if deadline.is_some() {
            "sem_timedwait"
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

/// Now plus `t` on `CLOCK_REALTIME`, as `sem_timedwait` wants it.
fn realtime_deadline(t: Duration) -> Result<libc::timespec> {
    // SAFETY: an all-zero timespec is valid; clock_gettime overwrites it.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) } != 0 {
        return Err(HostError::last_os("clock_gettime"));
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
