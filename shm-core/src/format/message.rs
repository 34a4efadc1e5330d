//! What travels through a queue: the [`MessageHeader`] at the start of every message
//! payload, the [`KeepAlive`] packet, and the tags at or above [`CONTROL_TAG_BASE`] that
//! mark protocol [`Control`] entries.

use core::sync::atomic::AtomicU32;

use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::region::ShmSafe;

/// Tags at or above this value are protocol control entries; user tags must be below.
pub const CONTROL_TAG_BASE: u32 = 0xFFFF_FF00;

/// Protocol control entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Control {
    /// Client to server: please connect this participant.
    Connect = CONTROL_TAG_BASE + 1,
    /// Server to client: connected.
    Connected = CONTROL_TAG_BASE + 2,
    /// Client to server: disconnecting.
    Disconnect = CONTROL_TAG_BASE + 3,
    /// Server to client: you are disconnected (refused, evicted, or answer to Disconnect).
    Disconnected = CONTROL_TAG_BASE + 4,
    /// Server to client: the server is shutting down.
    ServerStopping = CONTROL_TAG_BASE + 5,
}

impl Control {
    /// The control entry a tag stands for, if it is one.
    pub fn from_tag(tag: u32) -> Option<Self> {
        Some(match tag.checked_sub(CONTROL_TAG_BASE)? {
            1 => Control::Connect,
            2 => Control::Connected,
            3 => Control::Disconnect,
            4 => Control::Disconnected,
            5 => Control::ServerStopping,
            _ => return None,
        })
    }
}

/// The first 16 bytes of every message payload: where the data is.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct MessageHeader {
    /// Offset of the first data byte from the start of the payload (after this header and
    /// the headroom).
    pub data_start: AtomicU32,
    /// Number of data bytes.
    pub data_len: AtomicU32,
    /// Reserved, zero.
    pub reserved: [AtomicU32; 2],
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for MessageHeader {}

/// Payload of a keepalive packet.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct KeepAlive {
    /// Server generation.
    pub generation: AtomicU32,
    /// Sequence number.
    pub seq: AtomicU32,
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for KeepAlive {}
