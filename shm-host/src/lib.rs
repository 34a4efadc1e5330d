//! Zero-copy shared-memory IPC between processes on Linux, Windows and QNX, on top of
//! [`shm_core`].
//!
//! A [`Server`] creates a named segment; [`Client`]s connect to it. A [`Buffer`] is a
//! block of the segment: filling it writes straight into shared memory, and sending it
//! moves ownership to the receiver - the bytes are never copied. Every process's memory
//! comes back when it dies, heartbeats find clients that stopped, and a lock held by a
//! dead process is broken.
//!
//! ```
//! use std::io::Write;
//! use std::time::Duration;
//! use shm_host::{Client, Server};
//!
//! let name = format!("doc-{}", std::process::id());
//! let server = Server::create(&name, 1 << 20)?;
//! // A client, normally in another process:
//! let client = Client::connect(&name)?;
//!
//! let mut buf = client.alloc(64)?;
//! buf.write_all(b"ping")?;
//! client.send(buf, 7)?;
//!
//! let msg = server.recv_timeout(Duration::from_secs(5))?.expect("a message");
//! assert_eq!((&msg.buffer[..], msg.tag), (&b"ping"[..], 7));
//! server.send(msg.from, msg.buffer, 8)?; // the same block goes back, uncopied
//!
//! let reply = client.recv_timeout(Duration::from_secs(5))?.expect("a reply");
//! assert_eq!(reply.tag, 8);
//! # drop(reply); drop(client); drop(server);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Layout of the crate: [`system`] is what an operating system provides (the trait is
//! shm-core's; implemented in `sys/linux` and `sys/windows`, and by the `shm-qnx` crate
//! for QNX, chosen at one `cfg` point in `sys/mod.rs` as [`NativeSystem`]); the POSIX
//! pieces Linux and QNX share are the `shm-posix` crate (re-exported as `posix` on POSIX
//! systems); the rest is OS-independent.
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod backend;
pub mod buffer;
pub mod client;
mod endpoint;
pub mod error;
pub mod foreign;
pub mod name;
pub mod peer;
pub mod segment;
pub mod server;
pub mod support;
mod sys;
pub mod system;

pub use backend::{Backend, OnSystem};
pub use buffer::Buffer;
pub use client::{Client, ClientOptions};
pub use endpoint::RecvMode;
pub use error::{HostError, NamedResult, Refusal, Result};
pub use name::SegmentName;
pub use peer::{Message, PeerId, SendError};
pub use segment::Segment;
pub use server::{BroadcastReport, DeathReason, Server, ServerEvent, ServerOptions};
pub use shm_core::{CacheConfig, SystemError};
// From the one `cfg` point in `sys/`: `NativeSystem`, the system of the target (Linux,
// Windows or QNX) and the default of `Server` and `Client`; `install_stop_handler`, which
// makes SIGINT/SIGTERM (Ctrl-C/close on Windows) set the returned flag instead of ending
// the process; and `posix` (the `shm-posix` crate) on POSIX systems.
pub use sys::*;
pub use system::{CreateOptions, Mapping, SegmentPlatform, System};

/// The workspace README's Rust examples, compiled and run as this crate's doctests so the
/// README cannot drift from the API: the host example, and shm-core's (its crate doc
/// example, which `shm-core/tests/readme.rs` keeps equal to the README's copy). The item
/// exists only when rustdoc collects doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// FNV-1a (32-bit) of `bytes`: the checksum `shmipc serve` prints and the tests use.
pub fn checksum(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}
