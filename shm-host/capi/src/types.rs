//! The plain structures and enums C sees: peer ids, received messages, events,
//! statistics, receive modes. Enums appear only in what the library writes; what C writes
//! (options) holds plain integers, so that no out-of-range value reaches Rust as an enum.

use std::time::Duration;

use shm_host::{DeathReason, PeerId, RecvMode, ServerEvent};

use crate::buffer::shm_buffer;
use crate::error::Failure;

/// A process taking part in a segment: its slot plus its registration serial, so a slot
/// reused by a later process is a different peer. Compare both fields.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct shm_peer {
    /// Process slot in the segment.
    pub slot: u16,
    /// Registration serial.
    pub serial: u32,
}

impl From<PeerId> for shm_peer {
    fn from(p: PeerId) -> Self {
        shm_peer {
            slot: p.slot,
            serial: p.serial,
        }
    }
}

impl From<shm_peer> for PeerId {
    fn from(p: shm_peer) -> Self {
        PeerId {
            slot: p.slot,
            serial: p.serial,
        }
    }
}

/// A received message. `buffer` is a new handle owned by the caller: free it with
/// `shm_buffer_free` or pass it on with a send.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct shm_message {
    /// The sender.
    pub from: shm_peer,
    /// The sender's tag.
    pub tag: u32,
    /// The data; NULL when the receive failed.
    pub buffer: *mut shm_buffer,
}

/// How a receiver waits for messages (the `recv_mode` option).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum shm_recv_mode {
    /// Spin on the queue: lowest latency, one core busy while waiting.
    SHM_RECV_BUSY = 0,
    /// Sleep on the doorbell until a sender rings it.
    SHM_RECV_BLOCKING = 1,
    /// Spin for `spin_us` microseconds, then sleep (the default, 50 us).
    SHM_RECV_ADAPTIVE = 2,
}

/// The receive mode that `recv_mode` and `spin_us` (from C, any values) describe.
pub(crate) fn recv_mode(mode: u32, spin_us: u32) -> Result<RecvMode, Failure> {
    match mode {
        0 => Ok(RecvMode::BusyPoll),
        1 => Ok(RecvMode::Blocking),
        2 => Ok(RecvMode::Adaptive {
            spin: Duration::from_micros(u64::from(spin_us)),
        }),
        m => Err(Failure::invalid(format!(
            "recv_mode {m} is not an shm_recv_mode (0 busy, 1 blocking, 2 adaptive)"
        ))),
    }
}

/// `(recv_mode, spin_us)` for `mode`.
pub(crate) fn recv_mode_fields(mode: RecvMode) -> (u32, u32) {
    match mode {
        RecvMode::BusyPoll => (shm_recv_mode::SHM_RECV_BUSY as u32, 0),
        RecvMode::Blocking => (shm_recv_mode::SHM_RECV_BLOCKING as u32, 0),
        RecvMode::Adaptive { spin } => (
            shm_recv_mode::SHM_RECV_ADAPTIVE as u32,
            u32::try_from(spin.as_micros()).unwrap_or(u32::MAX),
        ),
    }
}

/// What happened to a client (`shm_event.kind`).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum shm_event_kind {
    /// A client connected.
    SHM_EVENT_CONNECTED = 0,
    /// A client disconnected cleanly.
    SHM_EVENT_DISCONNECTED = 1,
    /// A client stopped taking keepalives: the server disconnected it (`missed`,
    /// `killed`). Its memory stays its own until its process is gone.
    SHM_EVENT_UNRESPONSIVE = 2,
    /// A client was declared dead and its memory reclaimed (`reason`, `bytes_freed`).
    SHM_EVENT_DIED = 3,
}

/// Why a client was declared dead (`shm_event.reason`).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum shm_death_reason {
    /// Not a `SHM_EVENT_DIED` event.
    SHM_DEATH_NONE = 0,
    /// Its process is gone (the operating system says so).
    SHM_DEATH_PROCESS_GONE = 1,
    /// Another process's watchdog reclaimed it first.
    SHM_DEATH_RECLAIMED = 2,
}

/// An event about a client, from `shm_server_try_event`/`shm_server_event_timeout`.
/// Fields that do not apply to `kind` are 0.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub struct shm_event {
    /// Bytes returned to the segment (`SHM_EVENT_DIED`).
    pub bytes_freed: u64,
    /// What happened.
    pub kind: shm_event_kind,
    /// The client.
    pub client: shm_peer,
    /// Keepalives it missed (`SHM_EVENT_UNRESPONSIVE`).
    pub missed: u32,
    /// Whether the server killed it (`SHM_EVENT_UNRESPONSIVE`).
    pub killed: bool,
    /// Why it was declared dead (`SHM_EVENT_DIED`).
    pub reason: shm_death_reason,
}

impl From<ServerEvent> for shm_event {
    fn from(e: ServerEvent) -> Self {
        let plain = |kind, client: PeerId| shm_event {
            bytes_freed: 0,
            kind,
            client: client.into(),
            missed: 0,
            killed: false,
            reason: shm_death_reason::SHM_DEATH_NONE,
        };
        match e {
            ServerEvent::Connected(c) => plain(shm_event_kind::SHM_EVENT_CONNECTED, c),
            ServerEvent::Disconnected(c) => plain(shm_event_kind::SHM_EVENT_DISCONNECTED, c),
            ServerEvent::Unresponsive {
                client,
                missed,
                killed,
            } => shm_event {
                missed,
                killed,
                ..plain(shm_event_kind::SHM_EVENT_UNRESPONSIVE, client)
            },
            ServerEvent::Died {
                client,
                reason,
                bytes_freed,
            } => shm_event {
                bytes_freed,
                reason: match reason {
                    DeathReason::ProcessGone => shm_death_reason::SHM_DEATH_PROCESS_GONE,
                    DeathReason::Reclaimed => shm_death_reason::SHM_DEATH_RECLAIMED,
                },
                ..plain(shm_event_kind::SHM_EVENT_DIED, client)
            },
        }
    }
}

/// The segment's heap statistics (FreeRTOS heap_5's `HeapStats_t` and more), taken under
/// the segment's lock, so consistent.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct shm_stats {
    /// Successful allocations since the segment was created.
    pub allocs: u64,
    /// Successful frees since the segment was created.
    pub frees: u64,
    /// Bytes in all blocks (fixed when the segment is created).
    pub heap_bytes: u32,
    /// Bytes in free blocks.
    pub free_bytes: u32,
    /// Largest free block.
    pub largest_free_block: u32,
    /// Smallest free block; 0 when none is free.
    pub smallest_free_block: u32,
    /// Number of free blocks.
    pub free_blocks: u32,
    /// Lowest `free_bytes` since the segment was created.
    pub min_ever_free_bytes: u32,
    /// Used blocks, the library's own data included.
    pub used_blocks: u32,
    /// Registered processes (the server, clients, and any not yet reclaimed).
    pub processes: u32,
    /// Times a dead process's lock was broken.
    pub lock_breaks: u32,
    /// Largest allocation that would succeed now (payload bytes).
    pub largest_alloc: u32,
}

impl From<shm_core::HeapStats> for shm_stats {
    fn from(s: shm_core::HeapStats) -> Self {
        shm_stats {
            allocs: s.allocs,
            frees: s.frees,
            heap_bytes: s.heap_bytes,
            free_bytes: s.free_bytes,
            largest_free_block: s.largest_free_block,
            smallest_free_block: s.smallest_free_block,
            free_blocks: s.free_blocks,
            min_ever_free_bytes: s.min_ever_free_bytes,
            used_blocks: s.used_blocks,
            processes: s.processes,
            lock_breaks: s.lock_breaks,
            largest_alloc: s.largest_alloc,
        }
    }
}

/// A timeout in milliseconds from C.
pub(crate) fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

// The C layouts, fixed: a change here is a change of the ABI (and of shm.h).
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<shm_peer>() == 8 && offset_of!(shm_peer, serial) == 4);
    assert!(size_of::<shm_event_kind>() == 4 && size_of::<shm_death_reason>() == 4);
    assert!(offset_of!(shm_message, tag) == 8);
    // The pointer after the tag: aligned to its own size.
    assert!(offset_of!(shm_message, buffer) == if size_of::<usize>() == 8 { 16 } else { 12 });
    assert!(size_of::<shm_event>() == 32);
    assert!(offset_of!(shm_event, kind) == 8 && offset_of!(shm_event, client) == 12);
    assert!(offset_of!(shm_event, missed) == 20 && offset_of!(shm_event, killed) == 24);
    assert!(offset_of!(shm_event, reason) == 28);
    assert!(size_of::<shm_stats>() == 56 && offset_of!(shm_stats, largest_alloc) == 52);
};
