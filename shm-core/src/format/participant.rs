//! [`Participant`]: the record at the start of every participant block (the server's and
//! each client's), followed by its doorbell and its queue.

use core::mem::size_of;
use core::sync::atomic::AtomicU32;

use crate::format::doorbell::Doorbell;
use crate::format::queue::queue_bytes;
use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::region::ShmSafe;

/// Participant kind: the server.
pub const KIND_SERVER: u32 = 1;
/// Participant kind: a client.
pub const KIND_CLIENT: u32 = 2;

/// Index of the application word holding a process's participant offset.
pub const APP_PARTICIPANT: usize = 0;
/// Index of the application word holding a process's participant kind.
pub const APP_KIND: usize = 1;

/// Participant state: created, not connected.
pub const P_NEW: u32 = 0;
/// Participant state: `Connect` sent, no answer yet.
pub const P_CONNECTING: u32 = 1;
/// Participant state: connected (or, for the server, running).
pub const P_CONNECTED: u32 = 2;
/// Participant state: disconnected or declared dead.
pub const P_DISCONNECTED: u32 = 3;

/// A participant record, at the start of its block.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct Participant {
    /// [`KIND_SERVER`] or [`KIND_CLIENT`].
    pub kind: AtomicU32,
    /// The owner's process slot.
    pub slot: AtomicU32,
    /// The owner's pid.
    pub pid: AtomicU32,
    /// The owner's pid-reuse tag.
    pub tag: AtomicU32,
    /// Server generation this participant belongs to.
    pub generation: AtomicU32,
    /// One of the `P_*` states.
    pub state: AtomicU32,
    /// Offset of its queue.
    pub queue: AtomicU32,
    /// Offset of its doorbell.
    pub bell: AtomicU32,
    /// Keepalive mailbox: offset of a packet not yet taken, 0 when empty.
    pub keepalive: AtomicU32,
    /// Sequence number of the last keepalive taken.
    pub keepalive_seen: AtomicU32,
    /// Consecutive heartbeats that found the mailbox still full.
    pub keepalive_missed: AtomicU32,
    /// The owner's registration serial (with `slot`, its incarnation). A participant whose
    /// owner's slot holds another serial is stale and is never sent to.
    pub serial: AtomicU32,
    /// Reserved, zero. (Messages received are counted by the queue itself.)
    pub reserved: [AtomicU32; 4],
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for Participant {}

/// Bytes of a participant block payload for a queue of `capacity` slots (at most
/// 2^20): the record, up to 63 bytes to align the doorbell to 64, the doorbell, the queue.
/// Saturates at `u32::MAX` (no block is that large) for a capacity too large to fit.
pub const fn participant_bytes(capacity: u32) -> u32 {
    queue_bytes(capacity)
        .saturating_add(size_of::<Participant>() as u32)
        .saturating_add(63)
        .saturating_add(size_of::<Doorbell>() as u32)
}

/// Where the doorbell and the queue of the participant at `at` are; `None` when they
/// would not fit below 4 GiB (only a hostile offset near the top of the region does that).
pub(crate) fn participant_layout(at: u32) -> Option<(u32, u32)> {
    let bell = at
        .checked_add(size_of::<Participant>() as u32)?
        .checked_add(63)?
        & !63;
    Some((bell, bell.checked_add(size_of::<Doorbell>() as u32)?))
}
