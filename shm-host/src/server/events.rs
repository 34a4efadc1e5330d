//! What a server reports: events about its clients, and the result of a broadcast.

use crate::error::HostError;
use crate::peer::PeerId;

/// Why a client was declared dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathReason {
    /// Its process is gone (the operating system says so).
    ProcessGone,
    /// Its participant disappeared without a `Disconnect`: another process's watchdog
    /// reclaimed it first.
    Reclaimed,
}

/// Something that happened to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client connected.
    Connected(PeerId),
    /// A client disconnected cleanly.
    Disconnected(PeerId),
    /// A client stopped taking keepalives: the server disconnected it and delivers nothing
    /// more to it. Its memory stays its own until its process is gone (then a `Died`
    /// event follows... or, if another process's watchdog gets there first, nothing).
    Unresponsive {
        /// The client.
        client: PeerId,
        /// Consecutive keepalives it missed.
        missed: u32,
        /// Whether the server killed it ([`ServerOptions::kill_unresponsive`](crate::ServerOptions::kill_unresponsive)).
        killed: bool,
    },
    /// A client was declared dead; its memory was reclaimed.
    Died {
        /// The client.
        client: PeerId,
        /// Why.
        reason: DeathReason,
        /// Bytes returned to the heap.
        bytes_freed: u64,
    },
}

/// Result of a broadcast.
#[derive(Debug, Default)]
pub struct BroadcastReport {
    /// Clients the buffer was sent to.
    pub sent: Vec<PeerId>,
    /// Clients it could not be sent to, and why.
    pub failed: Vec<(PeerId, HostError)>,
}
