//! QNX Neutrino: the system is the `shm-qnx` crate's [`QnxSystem`](shm_qnx::QnxSystem)
//! (POSIX shared memory sized with `shm_ctl`, `sem_t` doorbells, liveness from
//! `DCMD_PROC_INFO`), and the stop handler the POSIX one shared with Linux.

use crate::error::Result;

pub use shm_qnx::QnxSystem as NativeSystem;

/// Runs `f` on the system of kind `b`: the native (POSIX) one only on QNX.
pub fn run_on_backend<F: crate::OnSystem>(b: &crate::Backend, f: F) -> Option<F::Output> {
    match b {
        crate::Backend::Native | crate::Backend::Posix => Some(f.on(NativeSystem)),
        _ => None,
    }
}

/// The kinds `shmipc clean` scans.
pub fn listed_backends() -> Vec<crate::Backend> {
    vec![crate::Backend::Posix]
}

/// Makes SIGINT/SIGTERM set the returned flag instead of ending the process.
pub fn install_stop_handler() -> Result<&'static std::sync::atomic::AtomicBool> {
    Ok(shm_posix::signal::install_stop_handler()?)
}

/// OS services the `shmipc` tool needs beyond the IPC API (the same functions in every OS
/// folder's `cli.rs`).
#[cfg(feature = "cli")]
pub mod cli {
    pub use shm_posix::cli::{
        parent_process_id, uds_accept, uds_connect, uds_listen, unbuffered_stdio, UdsListener,
        UdsStream,
    };

    /// Pinning is not offered on QNX (`shmipc bench --pin` says so).
    pub fn pin_current_thread(_cpu: usize) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "pinning to a CPU is supported on Linux only",
        ))
    }
}
