//! QNX Neutrino platform for shm-core and the shm-host API.
//!
//! `QnxSystem` implements [`shm_core::Platform`] and [`shm_host::System`], so the safe
//! [`Server`](shm_host::Server) / [`Client`](shm_host::Client) /
//! [`Buffer`](shm_host::Buffer) API runs on QNX 7.1 and 8.0 through the `*_on`
//! constructors:
//!
//! ```no_run
//! use std::io::Write;
//! use std::time::Duration;
//! use shm_host::{Client, ClientOptions, Server, ServerOptions};
//! # // Off QNX, the same code type-checks against the host's own system.
//! # #[cfg(not(any(target_os = "nto", target_os = "qnx")))]
//! # use shm_host::NativeSystem as QnxSystem;
//! # #[cfg(any(target_os = "nto", target_os = "qnx"))]
//! use shm_qnx::QnxSystem;
//!
//! let opts = ServerOptions { size: 1 << 20, ..ServerOptions::default() };
//! let server = Server::create_on(QnxSystem::default(), "demo", opts)?;
//! // A client, normally in another process:
//! let client = Client::connect_on(QnxSystem::default(), "demo", ClientOptions::default())?;
//!
//! let mut buf = client.alloc(64)?;
//! buf.write_all(b"ping")?;
//! client.send(buf, 7)?;
//! let msg = server.recv_timeout(Duration::from_secs(5))?.expect("a message");
//! assert_eq!(&msg.buffer[..], b"ping");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is shared with Linux
//!
//! The plain POSIX code lives once, in [`shm_host::posix`], and is tested on Linux:
//! `shm_open` + `mmap` + `shm_unlink` ([`PosixMapping`](shm_host::posix::PosixMapping)),
//! and doorbells as `sem_t` initialised with `sem_init(pshared = 1)` inside the region,
//! at the address [`Doorbell::os_area`](shm_core::Doorbell::os_area) checks
//! for `sem_t`'s alignment - the one placement rule every platform uses
//! ([`shm_host::posix::sem`]). On QNX a `sem_t` is an 8-byte kernel sync object, which
//! works across processes in shared memory.
//!
//! # QNX-specific calls, and why
//!
//! * **`shm_ctl()` instead of `ftruncate()`** to give a new object its memory
//!   ([`segment`]): `SHMCTL_ANON | SHMCTL_SEAL`, plus `SHMCTL_LAZY` unless
//!   [`CreateOptions::prefault`](shm_host::CreateOptions::prefault) is set. Sealing stops
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
//!   [`System`](shm_host::System) trait has no hook for either, and the server's
//!   heartbeat thread already checks every client's liveness each heartbeat (100 ms by
//!   default) and reclaims what the dead held: the watchdog polls.
//! * **A futex.** QNX has none for an arbitrary word in shared memory; its kernel sync
//!   objects would need a mutex and condition variable beside the word, which the
//!   region layout has no room for. The only user of `WaitNotify::wait` is the heap's
//!   blocking allocation, so [`shm_host::support::poll_wait`] polls the word with a short backoff (spin, yield,
//!   then sleeps of at most 1 ms; QNX rounds sleeps up to its clock tick). Messages do
//!   not take this path: they use the `sem_t` doorbells.
//!
//! # On other operating systems
//!
//! `QnxSystem` exists only when compiling for QNX (`target_os = "nto"`, and `"qnx"` for QNX 8 on newer compilers). Elsewhere the
//! crate builds the OS-independent parts only, so that they are tested on Linux: the
//! `procfs_info` layout and the `DCMD_PROC_INFO` command number, the start-time tag and
//! the liveness verdict ([`process`]), the polled wait (`shm_host::support`), and the `shm_ctl`
//! flags and the listing ([`segment`]). The QNX-only parts are type-checked with
//! `cargo +nightly-2026-10-29 check -Zbuild-std --target x86_64-pc-nto-qnx710 -p shm-qnx`
//! (QNX 7.1) and `--target aarch64-unknown-qnx` (QNX 8.0; called
//! `aarch64-unknown-nto-qnx800` by older nightlies).
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod process;
pub mod segment;

#[cfg(any(target_os = "nto", target_os = "qnx"))]
mod system;

#[cfg(any(target_os = "nto", target_os = "qnx"))]
pub use system::QnxSystem;
