//! Zero-copy shared-memory IPC between processes on Linux and Windows, on top of
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
//! Layout of the crate: [`system`] is what an operating system provides (implemented in
//! `sys/linux` and `sys/windows`, chosen at one `cfg` point, and by `shm-qnx` for QNX);
//! [`posix`] holds the POSIX pieces Linux and QNX share; the rest is OS-independent.
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod buffer;
pub mod client;
mod endpoint;
pub mod error;
pub mod name;
pub mod peer;
#[cfg(unix)]
pub mod posix;
pub mod segment;
pub mod server;
pub mod support;
mod sys;
pub mod system;

pub use buffer::Buffer;
pub use client::{Client, ClientOptions};
pub use endpoint::RecvMode;
pub use error::{HostError, Refusal, Result};
pub use name::SegmentName;
pub use peer::{Message, PeerId, SendError};
pub use segment::Segment;
pub use server::{BroadcastReport, DeathReason, Server, ServerEvent, ServerOptions};

/// FNV-1a (32-bit) of `bytes`: the checksum `shmipc serve` prints and the tests use.
pub fn checksum(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}
/// OS services the `shmipc` tool needs beyond the IPC API (CPU pinning, unbuffered
/// standard I/O, the parent process), the same functions on every system.
#[cfg(all(feature = "cli", any(target_os = "linux", windows)))]
#[doc(hidden)]
pub use sys::cli as cli_os;
/// Makes SIGINT/SIGTERM (Ctrl-C/close on Windows) set the returned flag instead of
/// ending the process, so a foreground program can shut down cleanly.
#[cfg(any(target_os = "linux", windows))]
pub use sys::install_stop_handler;
#[cfg(any(target_os = "linux", windows))]
pub use sys::NativeSystem;
pub use system::{CreateOptions, Mapping, SegmentPlatform, System};
