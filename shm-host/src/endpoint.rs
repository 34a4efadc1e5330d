//! What a server and a client share: a participant (queue + doorbell) and the receive
//! loop with its three modes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shm_core::{Incarnation, Offset, ParticipantRef, Received};

use crate::buffer::{Buffer, DEFAULT_HEADROOM};
use crate::peer::{Message, PeerId};

use crate::error::{HostError, Result};
use crate::segment::Attachment;
use crate::system::System;

/// How a receiver waits for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvMode {
    /// Spin on the queue: lowest latency, one core busy while waiting.
    BusyPoll,
    /// Sleep on the doorbell until a sender rings it.
    Blocking,
    /// Spin for `spin`, then sleep.
    Adaptive {
        /// How long to spin before sleeping.
        spin: Duration,
    },
}

impl Default for RecvMode {
    fn default() -> Self {
        RecvMode::Adaptive {
            spin: Duration::from_micros(50),
        }
    }
}

impl std::str::FromStr for RecvMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "busy" => Ok(RecvMode::BusyPoll),
            "blocking" => Ok(RecvMode::Blocking),
            "adaptive" => Ok(RecvMode::default()),
            _ => Err(format!("unknown mode {s:?} (busy, blocking, adaptive)")),
        }
    }
}

impl std::fmt::Display for RecvMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecvMode::BusyPoll => "busy",
            RecvMode::Blocking => "blocking",
            RecvMode::Adaptive { .. } => "adaptive",
        })
    }
}

/// A participant of this process and its receive loop.
pub(crate) struct Endpoint<S: System> {
    /// The participant; valid while `att` (which it borrows from) lives.
    pub p: ParticipantRef<'static>,
    pub att: Arc<Attachment<S>>,
    pub mode: RecvMode,
    /// One receiver at a time: the queue has a single consumer.
    consumer: Mutex<()>,
}

impl<S: System> Endpoint<S> {
    /// Creates a participant of `kind` with `capacity` slots and readies its doorbell.
    pub fn create(
        att: Arc<Attachment<S>>,
        kind: u32,
        capacity: u32,
        mode: RecvMode,
    ) -> Result<Self> {
        let p = att.heap().create_participant(att.me(), kind, capacity)?;
        if let Err(e) = att.seg.bell_init(p.bell) {
            let _ = att.heap().destroy_participant(att.me(), p.at);
            return Err(e);
        }
        Ok(Endpoint {
            p,
            att,
            mode,
            consumer: Mutex::new(()),
        })
    }

    pub fn at(&self) -> Offset {
        self.p.at
    }

    /// The next entry, waiting as the mode says, at most `timeout` (None: forever).
    pub fn next(&self, timeout: Option<Duration>) -> Result<Option<Received>> {
        let _consumer = self.consumer.lock().unwrap_or_else(|p| p.into_inner());
        let heap = self.att.heap();
        if let Some(r) = heap.recv(&self.p)? {
            return Ok(Some(r));
        }
        if timeout == Some(Duration::ZERO) {
            return Ok(None);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let spin_until = match self.mode {
            RecvMode::BusyPoll => deadline,
            RecvMode::Blocking => Some(Instant::now()),
            RecvMode::Adaptive { spin } => {
                let s = Instant::now() + spin;
                Some(deadline.map_or(s, |d| d.min(s)))
            }
        };
        // Spin phase: look at the queue after every pause (a look is one cache line), the
        // clock only now and then.
        let mut spins: u32 = 0;
        loop {
            if let Some(r) = heap.recv(&self.p)? {
                return Ok(Some(r));
            }
            spins = spins.wrapping_add(1);
            if spins % 128 == 0 && spin_until.is_some_and(|s| Instant::now() >= s) {
                break;
            }
            std::hint::spin_loop();
        }
        // Sleep phase.
        let bell = self.p.bell;
        loop {
            if let Some(r) = heap.recv(&self.p)? {
                return Ok(Some(r));
            }
            let remaining = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => return Ok(None),
                },
            };
            bell.prepare_wait();
            // A sender that published before it saw `waiting` did not ring: look again.
            if let Some(r) = heap.recv(&self.p)? {
                bell.cancel_wait();
                return Ok(Some(r));
            }
            let waited = self.att.seg.bell_wait(bell, remaining);
            bell.cancel_wait();
            waited?;
        }
    }

    /// A buffer for at least `size` bytes of data (growth policy, default headroom).
    pub fn alloc(&self, size: usize) -> Result<Buffer<S>> {
        Buffer::alloc(&self.att, size, DEFAULT_HEADROOM)
    }

    /// Like [`alloc`](Self::alloc), waiting up to `timeout` for memory on a full heap.
    pub fn alloc_timeout(&self, size: usize, timeout: Duration) -> Result<Buffer<S>> {
        Buffer::alloc_waiting(&self.att, size, DEFAULT_HEADROOM, Some(timeout))
    }

    /// A buffer holding a copy of `data`.
    pub fn alloc_from(&self, data: &[u8]) -> Result<Buffer<S>> {
        let mut b = self.alloc(data.len())?;
        b.extend_from_slice(data)?;
        Ok(b)
    }

    /// Turns a received block into a message (`shared`: sent shared, so other processes
    /// may co-own it). A block whose header does not describe data inside it is released
    /// (it is ours now) and reported.
    pub fn message(
        &self,
        block: Offset,
        tag: u32,
        from: Incarnation,
        shared: bool,
    ) -> Result<Message<S>> {
        match Buffer::received(&self.att, block, shared) {
            Ok(buffer) => Ok(Message {
                from: PeerId::from(from),
                tag,
                buffer,
            }),
            Err(e) => {
                let _ = self.att.heap().release(self.att.me(), block);
                Err(e)
            }
        }
    }

    /// Makes `buffer`'s block a kept block (see [`Server::keep`](crate::Server::keep)).
    /// A buffer of another server or client is refused ([`HostError::ForeignBuffer`]):
    /// the offset returned would name nothing in this one's segment.
    pub fn keep(&self, buffer: Buffer<S>) -> Result<Offset> {
        if !buffer.is_in(&self.att) {
            return Err(HostError::ForeignBuffer);
        }
        buffer.into_kept()
    }

    /// Takes kept block `block` as a buffer of this process (see
    /// [`Server::take`](crate::Server::take)). A block whose header does not describe data
    /// inside it is released (it is ours now) and reported, as for a received message.
    pub fn take(&self, block: Offset) -> Result<Buffer<S>> {
        self.att.heap().take(self.att.me(), block)?;
        // A kept block was this process's alone when kept, and the segment's since.
        Buffer::received(&self.att, block, false).inspect_err(|_| {
            let _ = self.att.heap().release(self.att.me(), block);
        })
    }

    /// Names kept block `root` (or nothing) as the kept root.
    pub fn set_kept_root(&self, root: Option<Offset>) -> Result<()> {
        Ok(self.att.heap().set_kept_root(self.att.me(), root)?)
    }

    /// The closure that wakes a receiver, for the core's sending operations.
    pub fn waker(&self) -> impl Fn(&shm_core::Doorbell) + '_ {
        move |bell| {
            // A failed post only costs the receiver a wait until its timeout.
            let _ = self.att.seg.system().bell_ring(
                self.att.seg.mapping(),
                self.att.heap().region(),
                bell,
            );
        }
    }

    /// Leaves: makes the participant unreachable (no sender rings it from then on),
    /// releases the doorbell's wait object, frees the participant.
    pub fn close(&self) -> Result<()> {
        let heap = self.att.heap();
        let me = self.att.me();
        let retired = heap.retire_participant(me, self.p.at);
        if retired.is_ok() {
            self.att.seg.bell_destroy(self.p.bell);
        }
        // If retiring failed (the process was reclaimed meanwhile), the doorbell's object
        // is left alone: someone may still ring it, and a leaked semaphore in shared
        // memory costs nothing once the block is reused.
        retired
            .and_then(|()| heap.destroy_participant(me, self.p.at))
            .map_err(HostError::from)
    }
}
