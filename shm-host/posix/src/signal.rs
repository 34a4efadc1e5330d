//! SIGINT and SIGTERM set a flag instead of killing the process, so a foreground server
//! can shut down cleanly (and remove its segment).

use std::sync::atomic::{AtomicBool, Ordering};

use shm_core::system::SystemResult as Result;

use crate::last_os;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic store.
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers (idempotent) and returns the flag they set.
pub fn install_stop_handler() -> Result<&'static AtomicBool> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero sigaction is valid (empty mask, no flags) before we fill it.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: `sa` is a valid sigaction whose handler only performs an atomic store.
        if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
            return Err(last_os("sigaction"));
        }
    }
    Ok(&STOP)
}
