//! The queue's words: a 192-byte [`QueueHeader`] (sender line, receiver line, constants),
//! then `capacity` 32-byte [`QueueSlot`]s. How they are used is in the `queue` module.

use core::mem::size_of;
use core::sync::atomic::AtomicU32;

use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::region::ShmSafe;

/// Queue header: the senders' line, the receiver's line, then constants.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct QueueHeader {
    /// Next position a sender fills (changed under the region lock).
    pub tail: AtomicU32,
    /// Messages ever enqueued (wrapping).
    pub enqueued: AtomicU32,
    /// Reserved; keeps `head` on another cache line.
    pub pad0: [AtomicU32; 14],
    /// Next position the receiver takes (changed by the receiver only).
    pub head: AtomicU32,
    /// Reserved; keeps the constants on another cache line.
    pub pad1: [AtomicU32; 15],
    /// Number of slots, a power of two.
    pub capacity: AtomicU32,
    /// Offset of slot 0.
    pub slots: AtomicU32,
    /// Reserved, zero.
    pub reserved: [AtomicU32; 14],
}

/// One entry.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct QueueSlot {
    /// Sequence number (see the module documentation).
    pub seq: AtomicU32,
    /// Payload offset of the block, or a participant offset for control entries.
    pub offset: AtomicU32,
    /// The sender's tag.
    pub tag: AtomicU32,
    /// The sender's process slot, written by the core (not by the sender's code), so the
    /// receiver can trust it, with [`FROM_SHARED`] set when the block was shared rather
    /// than given; [`NO_SENDER`] for control entries.
    pub from: AtomicU32,
    /// The sender's registration serial (with `from`, its incarnation), so a reply never
    /// reaches a newer process that took the sender's slot.
    pub from_serial: AtomicU32,
    /// Reserved, zero (keeps slots a power of two in size: 2 per cache line).
    pub reserved: [AtomicU32; 3],
}

/// Bytes of one [`QueueSlot`].
pub(crate) const SLOT_BYTES: u32 = size_of::<QueueSlot>() as u32;

/// `from` of entries no process slot sent (control entries).
pub const NO_SENDER: u32 = u32::MAX;

/// Bit of a message entry's `from`: the block was shared with the receiver (other
/// processes may co-own it), not given. The slot is in the low 16 bits.
pub const FROM_SHARED: u32 = 1 << 31;

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for QueueHeader {}
// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for QueueSlot {}

/// Bytes a queue of `capacity` slots needs. Saturates at `u32::MAX` for a capacity too
/// large to fit (no block is that large, so allocating it fails).
pub const fn queue_bytes(capacity: u32) -> u32 {
    capacity
        .saturating_mul(SLOT_BYTES)
        .saturating_add(size_of::<QueueHeader>() as u32)
}
