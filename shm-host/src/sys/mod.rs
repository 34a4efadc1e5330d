//! The operating-system layer: the one place that picks an implementation by target.
//! Every OS folder has the same files (`bell.rs`, `process.rs`, `segment.rs`, `signal.rs`,
//! `wait.rs`) and exports the same [`NativeSystem`], `install_stop_handler` and the
//! segment kinds it offers (`run_on_backend`, `listed_backends`); Linux adds two more
//! systems, `SysvSystem` (`sysv/`) and `FileSystem` (`file.rs`); QNX's
//! implementation is the `shm-qnx` crate (which `qnx.rs` re-exports), since it must not
//! depend on this crate. Nothing outside this module names an OS; the crate root
//! re-exports everything public here.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{
    file::{FileMapping, FileSystem},
    signal::install_stop_handler,
    sysv::{SysvMapping, SysvSystem},
    NativeSystem,
};
#[cfg(target_os = "linux")]
pub(crate) use linux::{listed_backends, run_on_backend};

#[cfg(any(target_os = "nto", target_os = "qnx"))]
mod qnx;
#[cfg(any(target_os = "nto", target_os = "qnx"))]
pub use qnx::{install_stop_handler, NativeSystem};
#[cfg(any(target_os = "nto", target_os = "qnx"))]
pub(crate) use qnx::{listed_backends, run_on_backend};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{listed_backends, run_on_backend};
#[cfg(windows)]
pub use windows::{signal::install_stop_handler, NativeSystem};

/// The doorbell and liveness providers for memory mapped by others ([`crate::foreign`])
/// that this system offers beyond the portable ones: on Linux `SemDoorbells` and
/// `FdLiveness`, on Windows `ProcessLiveness`; none yet on QNX. Re-exported by
/// `crate::foreign`.
pub(crate) mod foreign_providers {
    #[cfg(target_os = "linux")]
    pub use super::linux::foreign::{FdLiveness, SemDoorbells};
    #[cfg(windows)]
    pub use super::windows::foreign::ProcessLiveness;
}

/// The POSIX pieces Linux and QNX share (`shm_open` mappings, `sem_t` doorbells), at
/// their old path `shm_host::posix`.
#[cfg(unix)]
pub use shm_posix as posix;

#[cfg(not(any(target_os = "linux", target_os = "nto", target_os = "qnx", windows)))]
compile_error!("shm-host runs on Linux, Windows and QNX Neutrino; this target is none of them");

// The `cli` feature's OS services (`cli` in each OS's module): CPU pinning, unbuffered
// standard I/O, the parent process, the same functions on every system. Public (as
// `shm_host::cli`) for the `shmipc` binary only, so hidden from the docs.
#[cfg(all(target_os = "linux", feature = "cli"))]
#[doc(hidden)]
pub use linux::cli;
#[cfg(all(any(target_os = "nto", target_os = "qnx"), feature = "cli"))]
#[doc(hidden)]
pub use qnx::cli;
#[cfg(all(windows, feature = "cli"))]
#[doc(hidden)]
pub use windows::cli;
