//! The operating-system layer: the one place that picks an implementation by target.
//! Every OS folder has the same files (`bell.rs`, `process.rs`, `segment.rs`, `signal.rs`,
//! `wait.rs`) and exports the same [`NativeSystem`] and `install_stop_handler`; nothing
//! outside this module names an OS.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{signal::install_stop_handler, NativeSystem};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::{signal::install_stop_handler, NativeSystem};

// The `cli` feature's OS services (`cli.rs` in each OS folder).
#[cfg(all(target_os = "linux", feature = "cli"))]
pub use linux::cli;
#[cfg(all(windows, feature = "cli"))]
pub use windows::cli;
