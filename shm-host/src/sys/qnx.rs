//! QNX Neutrino: the system is the `shm-qnx` crate's [`QnxSystem`](shm_qnx::QnxSystem)
//! (POSIX shared memory sized with `shm_ctl`, `sem_t` doorbells, liveness from
//! `DCMD_PROC_INFO`), and the stop handler the POSIX one shared with Linux.

use crate::error::Result;

pub use shm_qnx::QnxSystem as NativeSystem;

/// Makes SIGINT/SIGTERM set the returned flag instead of ending the process.
pub fn install_stop_handler() -> Result<&'static std::sync::atomic::AtomicBool> {
    Ok(shm_posix::signal::install_stop_handler()?)
}
