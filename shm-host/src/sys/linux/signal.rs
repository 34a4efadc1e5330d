//! SIGINT and SIGTERM set a flag instead of killing the process, so a foreground server
//! can shut down cleanly (and remove its segment): the POSIX handler shared with QNX
//! ([`shm_posix::signal`]).

use crate::error::Result;

/// Installs the handlers (idempotent) and returns the flag they set.
pub fn install_stop_handler() -> Result<&'static std::sync::atomic::AtomicBool> {
    Ok(shm_posix::signal::install_stop_handler()?)
}
