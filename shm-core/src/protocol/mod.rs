//! The client/server protocol over the heap: participants, the server entry, connecting,
//! sending, heartbeats. It reaches the heap only through
//! [`Heap::transact`](crate::Heap::transact) and [`HeapView`](crate::heap::HeapView):
//! checked reads, journaled writes, member checks, allocation as a process.
//!
//! Every process taking part (the server and each client) has a **participant** block:
//! service memory it owns, holding a [`Participant`] record, a [`Doorbell`] and its
//! [`OffsetQueue`]. Because the process owns the block, its death returns the block, the
//! queue and every message waiting in it (each message's block is owned by the receiver
//! from the moment it was sent).
//!
//! The server announces itself in a [`ServerInfo`](crate::format::ServerInfo) in the root
//! block (see the `server` module), allocated the first time a server starts. A dead
//! server's entry is recognised by its incarnation no longer being registered. A client
//! creates its participant, then sends a `Connect` control entry (its participant's offset
//! under a reserved tag) to the server's queue; the server checks it and answers
//! `Connected`. Each server start increments the generation, so clients notice a restarted
//! server and reconnect. Participants are found through the process table (application
//! words 0 and 1 of each process record), never through a list that a dead process could
//! leave dangling: reclaiming a process clears those words first.
//!
//! Files, bottom up: `participant` (the participant blocks), `server` (the server entry,
//! heartbeats), `connection` (connecting, retiring), `message` (sending and receiving).
//!
//! Messages: [`Heap::send`](crate::Heap::send) moves the block to the receiver (or adds it
//! as co-owner) and enqueues `(block, tag)` in one journaled operation; the receiver takes
//! entries without the lock. Every message payload starts with a
//! [`MessageHeader`](crate::format::MessageHeader) saying where the data is.
//!
//! Heartbeat: the server puts a small keepalive packet, cut from its reserve, in each
//! client's mailbox every interval. A client (a background thread in the host layer) takes
//! and frees it. A mailbox still full at the next beat is a miss; too many misses and the
//! server declares the client dead.

mod connection;
mod message;
mod participant;
mod server;

use core::sync::atomic::Ordering::Relaxed;

use crate::format::{Control, Doorbell, Participant};
use crate::ids::{Incarnation, ProcSlot, ProcessId};
use crate::offset::Offset;
use crate::queue::OffsetQueue;

/// Operation codes of the protocol's journaled operations (diagnostics; they follow the
/// heap's own, see [`Heap::transact`](crate::Heap::transact)).
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
enum ProtocolOp {
    Participant = crate::heap::FIRST_CLIENT_OP,
    Server,
    Connect,
    Send,
    Heartbeat,
}

/// Where a participant is and whose it is: what a sender names a receiver by. The offset
/// alone is reused when its owner is reclaimed; the incarnation is not, so a send to a
/// participant whose owner is gone fails with [`Error::PeerGone`](crate::Error::PeerGone)
/// instead of reaching whoever holds the block now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParticipantId {
    /// Its offset.
    pub at: Offset,
    /// The incarnation that owns it.
    pub owner: Incarnation,
}

/// A validated participant.
#[derive(Clone, Copy, Debug)]
pub struct ParticipantRef<'m> {
    /// Its offset.
    pub at: Offset,
    /// Its record.
    pub rec: &'m Participant,
    /// Its doorbell.
    pub bell: &'m Doorbell,
    /// Its queue.
    pub queue: OffsetQueue<'m>,
    /// The owning process.
    pub slot: ProcSlot,
    /// The owning incarnation (slot and serial).
    pub owner: Incarnation,
    /// Its kind.
    pub kind: u32,
}

impl ParticipantRef<'_> {
    /// Its address and owner, for sending to it.
    pub fn id(&self) -> ParticipantId {
        ParticipantId {
            at: self.at,
            owner: self.owner,
        }
    }

    /// A snapshot of its state, as plain values.
    pub fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            id: self.id(),
            kind: self.kind,
            state: self.rec.state.load(Relaxed),
            generation: self.rec.generation.load(Relaxed),
            queue_len: self.queue.len(),
            queue_capacity: self.queue.capacity(),
            keepalive_missed: self.rec.keepalive_missed.load(Relaxed),
        }
    }
}

/// A participant's state at one moment (see [`ParticipantRef::info`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Where it is and whose it is.
    pub id: ParticipantId,
    /// [`KIND_SERVER`](crate::format::KIND_SERVER) or
    /// [`KIND_CLIENT`](crate::format::KIND_CLIENT).
    pub kind: u32,
    /// One of the `P_*` states.
    pub state: u32,
    /// The server generation it belongs to.
    pub generation: u32,
    /// Entries waiting in its queue.
    pub queue_len: u32,
    /// Slots in its queue.
    pub queue_capacity: u32,
    /// Consecutive keepalives it missed.
    pub keepalive_missed: u32,
}

/// A snapshot of the server entry ([`ServerInfo`](crate::format::ServerInfo)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerStatus {
    /// Whether a server is registered: its entry says running and its incarnation still
    /// holds its slot (it may have died since, unnoticed by the platform yet).
    pub running: bool,
    /// Current generation.
    pub generation: u32,
    /// Its process slot.
    pub slot: ProcSlot,
    /// Its incarnation.
    pub owner: Incarnation,
    /// Its process.
    pub id: ProcessId,
    /// Its participant.
    pub participant: Offset,
    /// Heartbeat interval in milliseconds.
    pub heartbeat_ms: u32,
    /// Misses after which a client is declared dead.
    pub max_missed: u32,
    /// Keepalive packets sent.
    pub keepalive_seq: u32,
}

/// How [`Heap::send`](crate::Heap::send) hands the block over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    /// Ownership moves to the receiver (the sender's reference goes).
    Give,
    /// The receiver becomes a co-owner (the sender keeps its reference): broadcast.
    Share,
}

/// What a receiver took from its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// A message: the receiver now owns `block`.
    Message {
        /// The block.
        block: Offset,
        /// The sender's tag.
        tag: u32,
        /// The sender (recorded by the core, not claimed by the sender).
        from: Incarnation,
        /// Sent with [`SendMode::Share`]: other processes may co-own the block (so it is
        /// released, never freed into a member cache; see
        /// [`Heap::member_cache`](crate::Heap::member_cache)).
        shared: bool,
    },
    /// A protocol control entry about `participant`.
    Control {
        /// Which.
        control: Control,
        /// The participant it concerns.
        participant: Offset,
    },
}

/// Result of one heartbeat for one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// A keepalive packet is in the client's mailbox.
    Sent {
        /// Its sequence number.
        seq: u32,
    },
    /// The previous packet was still there: a miss.
    Missed {
        /// Consecutive misses so far.
        missed: u32,
    },
}

/// Calls `wake` if the doorbell's owner sleeps.
fn ring(bell: &Doorbell, wake: impl FnOnce(&Doorbell)) {
    if bell.should_ring() {
        wake(bell);
    }
}
