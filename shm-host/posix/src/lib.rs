//! Plain POSIX pieces shared by every POSIX system of shm-core (Linux in `shm-host`, QNX in
//! `shm-qnx`): shared-memory objects ([`mapping`]), `sem_t` doorbells ([`sem`]), the
//! listing of a system's shared-memory directory ([`listing`]) and stop signals
//! ([`signal`]). Tested on Linux.
//!
//! A crate of its own, below `shm-host`, so that `shm-qnx` can use it without depending
//! on `shm-host` (which depends on `shm-qnx` for its native system on QNX). Errors are
//! shm-core's [`SystemError`], the error of the `System` trait.
//! On a system that is not POSIX the crate is empty.
#![cfg(unix)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod cli;
pub mod listing;
pub mod mapping;
pub mod sem;
pub mod signal;

pub use mapping::{ObjectStat, PosixMapping};

use shm_core::SystemError;

/// An [`SystemError::Os`] error from the calling thread's last errno.
pub fn last_os(call: &'static str) -> SystemError {
    SystemError::Os {
        call,
        code: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
    }
}
