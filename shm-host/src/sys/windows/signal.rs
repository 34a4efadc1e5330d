//! Ctrl-C, Ctrl-Break and closing the console set a flag instead of ending the process,
//! so a foreground server can shut down cleanly (the counterpart of SIGINT/SIGTERM on
//! Linux). `TerminateProcess` (Task Manager, `taskkill /F`) cannot be intercepted; a
//! server killed that way is handled like a crash, and its segment disappears with the
//! last handle anyway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use windows_sys::core::BOOL;
use windows_sys::Win32::System::Console::{
    SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT, CTRL_LOGOFF_EVENT,
    CTRL_SHUTDOWN_EVENT,
};

use super::segment::last_error;
use crate::error::Result;

/// How long a close/logoff/shutdown event holds the process (Windows kills it when the
/// handler returns, and after 5 s at the latest) so the main thread can shut down.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

static STOP: AtomicBool = AtomicBool::new(false);

/// Runs on a thread Windows creates for the event.
unsafe extern "system" fn on_ctrl(ctrl_type: u32) -> BOOL {
    match ctrl_type {
        CTRL_C_EVENT | CTRL_BREAK_EVENT => {
            STOP.store(true, Ordering::SeqCst);
            1
        }
        CTRL_CLOSE_EVENT | CTRL_LOGOFF_EVENT | CTRL_SHUTDOWN_EVENT => {
            STOP.store(true, Ordering::SeqCst);
            std::thread::sleep(CLOSE_GRACE);
            1
        }
        _ => 0,
    }
}

/// Installs the handler (idempotent) and returns the flag it sets.
pub fn install_stop_handler() -> Result<&'static AtomicBool> {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.load(Ordering::SeqCst) {
        return Ok(&STOP);
    }
    // SAFETY: `on_ctrl` is a valid handler for the life of the process (a plain function)
    // that only stores to an atomic and sleeps.
    if unsafe { SetConsoleCtrlHandler(Some(on_ctrl), 1) } == 0 {
        return Err(last_error("SetConsoleCtrlHandler").into());
    }
    INSTALLED.store(true, Ordering::SeqCst);
    Ok(&STOP)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Installing twice works and returns the same, unset flag.
    #[test]
    fn install_is_idempotent() {
        let a = install_stop_handler().unwrap();
        let b = install_stop_handler().unwrap();
        assert!(std::ptr::eq(a, b));
        assert!(!a.load(Ordering::SeqCst));
    }
}
