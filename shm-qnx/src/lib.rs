//! QNX Neutrino platform for shm-core.
//!
//! `QnxSystem` implements shm-core's [`System`](shm_core::System) (and
//! [`Platform`](shm_core::Platform)). This crate depends on shm-core and `shm-posix`
//! only; `shm-host` depends on it and makes `QnxSystem` its `NativeSystem` on QNX, so the
//! safe API is the same as on Linux and Windows, `Server::create` and `Client::connect`
//! included:
//!
//! ```text
//! // shm-host/examples/qnx_server.rs, type-checked for QNX 7.1 and 8.0 in CI.
//! let server = shm_host::Server::create("demo", 1 << 20)?;
//! let client = shm_host::Client::connect("demo")?;
//! ```
//!
//! # What is shared with Linux
//!
//! The plain POSIX code lives once, in the `shm-posix` crate, and is tested on Linux:
//! `shm_open` + `mmap` + `shm_unlink` ([`PosixMapping`](shm_posix::PosixMapping)),
//! and doorbells as `sem_t` initialised with `sem_init(pshared = 1)` inside the region,
//! at the address [`Doorbell::os_area`](shm_core::Doorbell::os_area) checks
//! for `sem_t`'s alignment - the one placement rule every platform uses
//! ([`shm_posix::sem`]). On QNX a `sem_t` is an 8-byte kernel sync object, which
//! works across processes in shared memory.
//!
//! # QNX-specific calls, and why
//!
//! * **`shm_ctl()` instead of `ftruncate()`** to give a new object its memory
//!   ([`segment`]): `SHMCTL_ANON | SHMCTL_SEAL`, plus `SHMCTL_LAZY` unless
//!   [`CreateOptions::prefault`](shm_core::CreateOptions::prefault) is set. Sealing stops
//!   any process from resizing the segment afterwards (a shrunk segment would make every
//!   peer fault); without `SHMCTL_LAZY` the memory is allocated and locked at creation,
//!   QNX's equivalent of Linux's `MAP_POPULATE`. A kernel that rejects `SHMCTL_SEAL`
//!   gets the same call without it.
//! * **`devctl(DCMD_PROC_INFO)` on `/proc/PID/ctl`** for liveness ([`process`]): its
//!   record gives the process start time (the tag that tells a reused pid from the
//!   original) and the zombie flag. When the record cannot be read (another user's
//!   process on a system that restricts `/proc`), `kill(pid, 0)` decides whether the pid
//!   exists, and an existing pid counts as alive.
//! * **`/dev/shmem`** is where QNX lists named shared-memory objects (`shmipc clean`).
//!
//! # QNX features deliberately not used
//!
//! * **Death notifications.** `procmgr_event_notify(PROCMGR_EVENT_PROCESS_DEATH)` needs
//!   the `PROCMGR_AID_EVENT` ability (root by default) and does not say which process
//!   died; `_NTO_CHF_COID_DISCONNECT` only reports clients connected to a channel, which
//!   would need a second, message-passing connection beside the segment. The
//!   [`System`](shm_core::System) trait has no hook for either, and the server's
//!   heartbeat thread already checks every client's liveness each heartbeat (100 ms by
//!   default) and reclaims what the dead held: the watchdog polls.
//! * **A futex.** QNX has none for an arbitrary word in shared memory; its kernel sync
//!   objects would need a mutex and condition variable beside the word, which the
//!   region layout has no room for. The only user of `WaitNotify::wait` is the heap's
//!   blocking allocation, so [`poll_wait`](shm_polling::poll_wait) polls
//!   the word with a short backoff (spin, yield, then sleeps of at most 1 ms; QNX rounds
//!   sleeps up to its clock tick). Messages do
//!   not take this path: they use the `sem_t` doorbells.
//!
//! # On other operating systems
//!
//! `QnxSystem` exists only when compiling for QNX (`target_os = "nto"`, and `"qnx"` for QNX 8 on newer compilers). Elsewhere the
//! crate builds the OS-independent parts only, so that they are tested on Linux: the
//! `procfs_info` layout and the `DCMD_PROC_INFO` command number, the start-time tag and
//! the liveness verdict ([`process`]), the polled wait (`shm-polling`), and the `shm_ctl`
//! flags and the listing ([`segment`]). The QNX-only parts are type-checked with
//! `cargo +nightly-2026-10-29 check -Zbuild-std --target x86_64-pc-nto-qnx710 -p shm-qnx
//! -p shm-host` (QNX 7.1) and `--target aarch64-unknown-qnx` (QNX 8.0; called
//! `aarch64-unknown-nto-qnx800` by older nightlies), together with shm-host's
//! `qnx_server` example and the `System` contract tests instantiated for `QnxSystem`.
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod process;
pub mod segment;

#[cfg(any(target_os = "nto", target_os = "qnx"))]
mod system;

#[cfg(any(target_os = "nto", target_os = "qnx"))]
pub use system::QnxSystem;
