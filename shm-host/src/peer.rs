//! [`PeerId`], [`Message`], [`SendError`]: what the server and client APIs exchange.

use std::fmt;

use crate::buffer::Buffer;
use crate::error::HostError;
use crate::system::System;
use crate::NativeSystem;

/// Identifies a process taking part: its slot in the segment plus the registration
/// serial, so a slot reused by a later process is a different peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    /// Process slot.
    pub slot: u16,
    /// Registration serial.
    pub serial: u32,
}

impl From<shm_core::Incarnation> for PeerId {
    fn from(i: shm_core::Incarnation) -> Self {
        PeerId {
            slot: i.slot.0,
            serial: i.serial,
        }
    }
}

impl From<PeerId> for shm_core::Incarnation {
    fn from(p: PeerId) -> Self {
        shm_core::Incarnation {
            slot: shm_core::ProcSlot(p.slot),
            serial: p.serial,
        }
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.slot, self.serial)
    }
}

/// A received message: who sent it, its tag, and the buffer (now owned by the receiver).
#[derive(Debug)]
pub struct Message<S: System = NativeSystem> {
    /// The sender.
    pub from: PeerId,
    /// The sender's tag.
    pub tag: u32,
    /// The data.
    pub buffer: Buffer<S>,
}

/// A send that failed: the buffer comes back to the caller with the reason.
pub struct SendError<S: System = NativeSystem> {
    /// The buffer, still owned by the caller.
    pub buffer: Buffer<S>,
    /// Why the send failed ([`shm_core::Error::QueueFull`] when the receiver is behind).
    pub error: HostError,
}

impl<S: System> fmt::Debug for SendError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<S: System> fmt::Display for SendError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send failed: {}", self.error)
    }
}

impl<S: System> std::error::Error for SendError<S> {}

impl<S: System> From<SendError<S>> for HostError {
    fn from(e: SendError<S>) -> Self {
        e.error
    }
}
