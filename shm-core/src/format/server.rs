//! [`ServerInfo`]: where the server announces itself.

use core::sync::atomic::AtomicU32;

use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::region::ShmSafe;

/// Server state: none registered.
pub const SERVER_NONE: u32 = 0;
/// Server state: running.
pub const SERVER_RUNNING: u32 = 1;

/// The server, at its fixed place in the region header.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct ServerInfo {
    /// [`SERVER_NONE`] or [`SERVER_RUNNING`].
    pub state: AtomicU32,
    /// Incremented at every server start.
    pub generation: AtomicU32,
    /// The server's process slot.
    pub slot: AtomicU32,
    /// The server's pid.
    pub pid: AtomicU32,
    /// The server's pid-reuse tag.
    pub tag: AtomicU32,
    /// Offset of the server's participant.
    pub participant: AtomicU32,
    /// Heartbeat interval in milliseconds.
    pub heartbeat_ms: AtomicU32,
    /// Misses after which a client is declared dead.
    pub max_missed: AtomicU32,
    /// Keepalive packets sent (wrapping).
    pub keepalive_seq: AtomicU32,
    /// The server's registration serial (with `slot`, its incarnation).
    pub serial: AtomicU32,
    /// Reserved, zero.
    pub reserved: [AtomicU32; 22],
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for ServerInfo {}
