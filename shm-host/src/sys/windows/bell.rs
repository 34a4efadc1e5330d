//! Doorbells as named semaphores.
//!
//! Windows has no process-shared semaphore that can live inside the region, so a doorbell
//! names a kernel semaphore instead. Its owner creates it in `bell_init` with a fresh
//! random 64-bit nonce, writes the nonce into the doorbell's platform area and sets
//! `os_ready`; the semaphore is `Local\shmipc-bell.SEGMENT.OFFSET.NONCE` (see
//! [`WinMapping::bell_name`]). Ringers read the nonce, open the semaphore by name once and
//! cache the handle in their mapping (keyed by the doorbell's offset, replaced when the
//! nonce changes), then `ReleaseSemaphore`; the owner waits with `WaitForSingleObject`.
//!
//! Crashes: a kernel object lives as long as some handle to it does, and the OS closes a
//! dead process's handles. Because every incarnation of a doorbell gets a new nonce, a
//! semaphore left over from a crashed owner (kept alive by a ringer's cached handle, with
//! a stale count) is never opened by, and never wakes or blocks, the next owner of that
//! doorbell. A crashed ringer leaves nothing at all.
//!
//! Platform area layout: `os[0]`, `os[1]`: nonce (low, high word); `os[2]`: the owner's
//! pid (diagnostics only).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use shm_core::Doorbell;
use shm_core::{Region, WaitOutcome};
use windows_sys::Win32::Foundation::{
    GetLastError, SetLastError, ERROR_ALREADY_EXISTS, ERROR_INVALID_HANDLE, ERROR_TOO_MANY_POSTS,
    WAIT_ABANDONED, WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Threading::{
    CreateSemaphoreW, OpenSemaphoreW, ReleaseSemaphore, WaitForSingleObject, INFINITE,
    SEMAPHORE_MODIFY_STATE, SYNCHRONIZATION_SYNCHRONIZE,
};

use super::segment::{last_error, os_error, wide, OwnedHandle, OwnerOnly, WinMapping};
use shm_core::system::SystemResult as Result;

/// Highest count of a doorbell semaphore. The protocol posts at most once per sleep plus
/// one stale post, so this is never reached; a post beyond it is ignored.
const MAX_COUNT: i32 = i32::MAX;

/// Cached semaphore handles beyond which a cache miss first drops stale entries.
const PRUNE_AT: usize = 64;

/// Offset of the platform area inside a doorbell (cache keys are platform-area offsets).
const OS_AT: u32 = std::mem::offset_of!(Doorbell, os) as u32;

/// A nonce no other doorbell incarnation has (std's randomly keyed SipHash over the pid, a
/// process-wide counter and the time); never 0.
fn new_nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(t);
    h.finish() | 1
}

fn read_nonce(bell: &Doorbell) -> u64 {
    u64::from(bell.os[0].load(Ordering::Relaxed))
        | u64::from(bell.os[1].load(Ordering::Relaxed)) << 32
}

/// Creates the owner's semaphore for `bell` and publishes its nonce.
pub fn init(m: &WinMapping, region: &Region<'_>, bell: &Doorbell) -> Result<()> {
    let at = region.offset_of(&bell.os[0])?;
    let security = OwnerOnly::new()?;
    let sa = security.attributes();
    // A collision of 64-bit random nonces is all but impossible; retry a few times anyway
    // rather than share a semaphore with someone else.
    for _ in 0..4 {
        let nonce = new_nonce();
        let w = wide(&m.bell_name(at, nonce));
        // SAFETY: clearing the thread's last error has no preconditions.
        unsafe { SetLastError(0) };
        // SAFETY: `sa` and its descriptor live until the call returns; `w` is
        // NUL-terminated; counts are in range.
        let h = unsafe { CreateSemaphoreW(&sa, 0, MAX_COUNT, w.as_ptr()) };
        // SAFETY: no preconditions; read right after the call.
        let err = unsafe { GetLastError() };
        if h.is_null() {
            return Err(os_error("CreateSemaphoreW", err));
        }
        let h = OwnedHandle(h);
        if err == ERROR_ALREADY_EXISTS {
            continue;
        }
        bell.os[0].store(nonce as u32, Ordering::Relaxed);
        bell.os[1].store((nonce >> 32) as u32, Ordering::Relaxed);
        bell.os[2].store(std::process::id(), Ordering::Relaxed);
        m.bells
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(at, (nonce, Arc::new(h)));
        bell.os_ready.store(1, Ordering::Release);
        return Ok(());
    }
    Err(os_error("CreateSemaphoreW", ERROR_ALREADY_EXISTS))
}

/// The semaphore of `bell`'s current incarnation: cached, or opened by name.
fn semaphore(
    m: &WinMapping,
    region: &Region<'_>,
    bell: &Doorbell,
    call: &'static str,
) -> Result<Arc<OwnedHandle>> {
    if bell.os_ready.load(Ordering::Acquire) == 0 {
        // Not initialised, or its owner has left.
        return Err(os_error(call, ERROR_INVALID_HANDLE));
    }
    let at = region.offset_of(&bell.os[0])?;
    let nonce = read_nonce(bell);
    let mut bells = m.bells.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((n, h)) = bells.get(&at) {
        if *n == nonce {
            return Ok(Arc::clone(h));
        }
    }
    if bells.len() >= PRUNE_AT {
        // Forget doorbells that are gone or re-initialised since (their owners left or
        // died), so a long-running process does not keep their semaphores alive.
        bells.retain(|&o, (n, _)| {
            region
                .get::<Doorbell>(o.wrapping_sub(OS_AT))
                .is_ok_and(|b| b.os_ready.load(Ordering::Acquire) != 0 && read_nonce(b) == *n)
        });
    }
    let w = wide(&m.bell_name(at, nonce));
    // SAFETY: `w` is NUL-terminated; a null result is handled below.
    let h = unsafe {
        OpenSemaphoreW(
            SEMAPHORE_MODIFY_STATE | SYNCHRONIZATION_SYNCHRONIZE,
            0,
            w.as_ptr(),
        )
    };
    if h.is_null() {
        // ERROR_FILE_NOT_FOUND: the owner has gone (crashed or left) since it set os_ready.
        return Err(last_error("OpenSemaphoreW"));
    }
    let h = Arc::new(OwnedHandle(h));
    // Replaces (and closes, once unused) the handle of an older incarnation.
    bells.insert(at, (nonce, Arc::clone(&h)));
    Ok(h)
}

/// `ReleaseSemaphore(1)`.
pub fn ring(m: &WinMapping, region: &Region<'_>, bell: &Doorbell) -> Result<()> {
    let h = semaphore(m, region, bell, "ReleaseSemaphore")?;
    // SAFETY: `h` is an open semaphore handle with SEMAPHORE_MODIFY_STATE; the previous
    // count out-pointer may be null.
    if unsafe { ReleaseSemaphore(h.0, 1, std::ptr::null_mut()) } == 0 {
        // SAFETY: no preconditions; read right after the call.
        let err = unsafe { GetLastError() };
        if err != ERROR_TOO_MANY_POSTS {
            return Err(os_error("ReleaseSemaphore", err));
        }
    }
    Ok(())
}

/// `WaitForSingleObject` with `timeout` rounded up to whole milliseconds.
pub fn wait(
    m: &WinMapping,
    region: &Region<'_>,
    bell: &Doorbell,
    timeout: Option<Duration>,
) -> Result<WaitOutcome> {
    let h = semaphore(m, region, bell, "WaitForSingleObject")?;
    let ms = match timeout {
        None => INFINITE,
        Some(t) => {
            let ms = t.as_nanos().div_ceil(1_000_000);
            u32::try_from(ms).map_or(INFINITE - 1, |ms| ms.min(INFINITE - 1))
        }
    };
    // SAFETY: `h` is an open semaphore handle with SYNCHRONIZE access.
    match unsafe { WaitForSingleObject(h.0, ms) } {
        WAIT_OBJECT_0 | WAIT_ABANDONED => Ok(WaitOutcome::Woken),
        WAIT_TIMEOUT => Ok(WaitOutcome::TimedOut),
        WAIT_FAILED => Err(last_error("WaitForSingleObject")),
        // No other result is documented for a single semaphore: count it as spurious.
        _ => Ok(WaitOutcome::Woken),
    }
}

/// Closes the owner's semaphore handle (the semaphore goes with the last handle).
pub fn destroy(m: &WinMapping, region: &Region<'_>, bell: &Doorbell) {
    if bell.os_ready.swap(0, Ordering::AcqRel) == 0 {
        return;
    }
    if let Ok(at) = region.offset_of(&bell.os[0]) {
        m.bells
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_core::system::{CreateOptions, Mapping, SegmentName};
    use std::time::Instant;

    fn segment(tag: &str) -> (WinMapping, WinMapping) {
        use std::sync::atomic::AtomicUsize;
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name =
            SegmentName::new(&format!("wintest-bell-{tag}-{}-{n}", std::process::id())).unwrap();
        let a = WinMapping::create(&name, 64 * 1024, CreateOptions::default()).unwrap();
        let b = WinMapping::open(&name).unwrap();
        (a, b)
    }

    fn region(m: &WinMapping) -> Region<'_> {
        // SAFETY: (test) the mapping is valid for `len` bytes while it lives.
        unsafe { Region::from_raw(m.as_ptr(), m.len()) }.unwrap()
    }

    /// A doorbell rung through one mapping wakes its owner waiting in another thread on
    /// another mapping of the same segment (as another process would).
    #[test]
    fn ring_wakes_a_waiter() {
        let (owner, ringer) = segment("wake");
        let (ro, rr) = (region(&owner), region(&ringer));
        let bell_o: &Doorbell = ro.get(4096).unwrap();
        let bell_r: &Doorbell = rr.get(4096).unwrap();
        init(&owner, &ro, bell_o).unwrap();
        assert_ne!(read_nonce(bell_r), 0);
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                let t0 = Instant::now();
                let r = wait(&owner, &ro, bell_o, Some(Duration::from_secs(20))).unwrap();
                (r, t0.elapsed())
            });
            std::thread::sleep(Duration::from_millis(50));
            ring(&ringer, &rr, bell_r).unwrap();
            let (r, took) = t.join().unwrap();
            assert_eq!(r, WaitOutcome::Woken);
            assert!(took < Duration::from_secs(10));
        });
        // A post before the wait is kept: the next wait returns at once.
        ring(&ringer, &rr, bell_r).unwrap();
        assert_eq!(
            wait(&owner, &ro, bell_o, Some(Duration::from_secs(5))).unwrap(),
            WaitOutcome::Woken
        );
        destroy(&owner, &ro, bell_o);
        assert_eq!(bell_r.os_ready.load(Ordering::Acquire), 0);
        assert!(ring(&ringer, &rr, bell_r).is_err(), "rang a destroyed bell");
    }

    /// A wait with nothing rung times out, not much too early.
    #[test]
    fn wait_times_out() {
        let (owner, _other) = segment("timeout");
        let ro = region(&owner);
        let bell: &Doorbell = ro.get(8192).unwrap();
        init(&owner, &ro, bell).unwrap();
        let t0 = Instant::now();
        assert_eq!(
            wait(&owner, &ro, bell, Some(Duration::from_millis(40))).unwrap(),
            WaitOutcome::TimedOut
        );
        assert!(t0.elapsed() >= Duration::from_millis(30));
        destroy(&owner, &ro, bell);
        destroy(&owner, &ro, bell); // twice is harmless
    }

    /// A re-initialised doorbell gets a new semaphore: a post left in the old one (its
    /// owner "crashed" without destroying it) does not reach the new owner, and ringers
    /// switch to the new one.
    #[test]
    fn new_incarnation_gets_a_fresh_semaphore() {
        let (owner, ringer) = segment("fresh");
        let (ro, rr) = (region(&owner), region(&ringer));
        let bell_o: &Doorbell = ro.get(4096).unwrap();
        let bell_r: &Doorbell = rr.get(4096).unwrap();
        init(&owner, &ro, bell_o).unwrap();
        let first = read_nonce(bell_o);
        ring(&ringer, &rr, bell_r).unwrap(); // a stale post, never consumed
                                             // The owner vanishes without bell_destroy; a new owner initialises the same bell.
        owner.bells.lock().unwrap().clear();
        let (owner2, _keep) = (WinMapping::open(owner.name()).unwrap(), ());
        let ro2 = region(&owner2);
        let bell_o2: &Doorbell = ro2.get(4096).unwrap();
        init(&owner2, &ro2, bell_o2).unwrap();
        assert_ne!(read_nonce(bell_o2), first);
        assert_eq!(
            wait(&owner2, &ro2, bell_o2, Some(Duration::from_millis(20))).unwrap(),
            WaitOutcome::TimedOut,
            "the stale post leaked into the new semaphore"
        );
        ring(&ringer, &rr, bell_r).unwrap();
        assert_eq!(
            wait(&owner2, &ro2, bell_o2, Some(Duration::from_secs(5))).unwrap(),
            WaitOutcome::Woken
        );
        assert_eq!(ringer.bells.lock().unwrap().len(), 1, "old handle replaced");
        destroy(&owner2, &ro2, bell_o2);
    }

    /// A ringer's handle cache drops doorbells whose owners have left once it is large.
    #[test]
    fn ringer_cache_forgets_departed_bells() {
        let (owner, ringer) = segment("prune");
        let (ro, rr) = (region(&owner), region(&ringer));
        let n = PRUNE_AT as u32 + 6;
        for i in 0..n {
            let at = 4096 + i * 128;
            init(&owner, &ro, ro.get(at).unwrap()).unwrap();
            ring(&ringer, &rr, rr.get(at).unwrap()).unwrap();
        }
        assert!(ringer.bells.lock().unwrap().len() >= PRUNE_AT);
        for i in 1..n {
            destroy(&owner, &ro, ro.get(4096 + i * 128).unwrap());
        }
        let last: &Doorbell = ro.get(4096 + n * 128).unwrap();
        init(&owner, &ro, last).unwrap();
        ring(&ringer, &rr, rr.get(4096 + n * 128).unwrap()).unwrap();
        // The first bell (still live) and the new one remain.
        assert_eq!(ringer.bells.lock().unwrap().len(), 2);
        assert_eq!(owner.bells.lock().unwrap().len(), 2);
        assert_eq!(
            wait(&owner, &ro, last, Some(Duration::from_secs(5))).unwrap(),
            WaitOutcome::Woken
        );
    }
}
