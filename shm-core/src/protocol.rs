//! The client/server protocol: participants, the server at its fixed place, connecting,
//! sending, heartbeats.
//!
//! Every process taking part (the server and each client) has a **participant** block:
//! service memory it owns, holding a [`Participant`] record, a [`Doorbell`] and its
//! [`OffsetQueue`]. Because the process owns the block, its death returns the block, the
//! queue and every message waiting in it (each message's block is owned by the receiver
//! from the moment it was sent).
//!
//! The server announces itself in [`ServerInfo`], inside the region header. A client
//! creates its participant, then sends a `Connect` control entry (its participant's offset
//! under a reserved tag) to the server's queue; the server checks it and answers
//! `Connected`. Each server start increments the generation, so clients notice a restarted
//! server and reconnect. Participants are found through the process table (application
//! words 0 and 1 of each process record), never through a list that a dead process could
//! leave dangling: reclaiming a process clears those words first.
//!
//! Messages: [`Heap::send`] moves the block to the receiver (or adds it as co-owner) and
//! enqueues `(block, tag)` in one journaled operation; the receiver takes entries without
//! the lock. Every message payload starts with a [`MessageHeader`] saying where the data is.
//!
//! Heartbeat: the server puts a small keepalive packet, cut from its reserve, in each
//! client's mailbox every interval. A client (a background thread in the host layer) takes
//! and frees it. A mailbox still full at the next beat is a miss; too many misses and the
//! server declares the client dead.

use core::mem::size_of;
use core::sync::atomic::Ordering::Relaxed;

use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{
    participant_bytes, participant_layout, queue_bytes, Control, Doorbell, KeepAlive, Participant,
    APP_KIND, APP_PARTICIPANT, CONTROL_TAG_BASE, KIND_CLIENT, KIND_SERVER, NO_SENDER, P_CONNECTED,
    P_CONNECTING, P_DISCONNECTED, P_NEW, SERVER_NONE, SERVER_RUNNING,
};
use crate::heap::{Heap, OpCode, Placement, Space};
use crate::ids::{Incarnation, Member, ProcSlot, ProcessId};
use crate::journal::Tx;
use crate::offset::Offset;
use crate::platform::Platform;
use crate::queue::{OffsetQueue, QueueEntry};

/// Where a participant is and whose it is: what a sender names a receiver by. The
/// offset alone is reused when its owner is reclaimed; the incarnation is not, so a send
/// to a participant whose owner is gone fails with [`Error::PeerGone`] instead of reaching
/// whoever holds the block now.
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
    /// [`KIND_SERVER`] or [`KIND_CLIENT`].
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

/// A snapshot of [`ServerInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerStatus {
    /// Whether a server is registered (it may have died since).
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

/// How [`Heap::send`] hands the block over.
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

impl<'m> Space<'m> {
    /// The participant at `at`, validated: a used block owned (alone) by the slot it
    /// names, with its doorbell and queue where the layout puts them.
    pub(crate) fn participant(&self, at: Offset) -> Result<ParticipantRef<'m>, Error> {
        let bad = Error::BadOffset { offset: at };
        let (h, b) = self.used_block(at).map_err(|_| bad)?;
        let rec: &'m Participant = self.region.get(at.get())?;
        let kind = rec.kind.load(Relaxed);
        let slot = rec.slot.load(Relaxed);
        if (kind != KIND_SERVER && kind != KIND_CLIENT) || slot > u32::from(u16::MAX) {
            return Err(bad);
        }
        let slot = ProcSlot(slot as u16);
        let owner = crate::format::OwnerRef::unpack(h.owner.load(Relaxed));
        if owner.map(|o| o.slot) != Some(slot.0) || h.link.load(Relaxed) != 1 {
            return Err(bad);
        }
        // The block is owned by that slot; the slot must still hold the incarnation that
        // made the participant (a stale record left by a reclaimed process is refused).
        let owner = Incarnation {
            slot,
            serial: rec.serial.load(Relaxed),
        };
        if self.record(slot).map(|r| r.rec.serial.load(Relaxed)) != Ok(owner.serial) {
            return Err(Error::PeerGone);
        }
        let (bell_at, queue_at) = participant_layout(at.get())
            .ok_or_else(|| corrupt(at.get(), CorruptionKind::BadProtocol))?;
        if rec.bell.load(Relaxed) != bell_at || rec.queue.load(Relaxed) != queue_at {
            return Err(corrupt(at.get(), CorruptionKind::BadProtocol));
        }
        let queue = OffsetQueue::open(&self.region, queue_at)?;
        // Sums of two u32 in a u64: they cannot saturate.
        if u64::from(queue_at).saturating_add(u64::from(queue_bytes(queue.capacity())))
            > u64::from(b).saturating_add(u64::from(h.size()))
        {
            return Err(corrupt(at.get(), CorruptionKind::BadProtocol));
        }
        Ok(ParticipantRef {
            at,
            rec,
            bell: self.region.get(bell_at)?,
            queue,
            slot,
            owner,
            kind,
        })
    }

    /// The participant `id` names, checked to still belong to that incarnation.
    pub(crate) fn participant_of(&self, id: ParticipantId) -> Result<ParticipantRef<'m>, Error> {
        match self.participant(id.at) {
            Ok(p) if p.owner == id.owner => Ok(p),
            Ok(_) | Err(Error::BadOffset { .. } | Error::PeerGone) => Err(Error::PeerGone),
            Err(e) => Err(e),
        }
    }

    /// `me`'s participant at `at`, checked to be `me`'s.
    fn own_participant(
        &self,
        me: Member,
        at: Offset,
    ) -> Result<(ProcSlot, ParticipantRef<'m>), Error> {
        let slot = self.member(me)?;
        let p = self.participant(at)?;
        if p.owner != me.incarnation() {
            return Err(Error::NotOwner {
                offset: at,
                process: slot,
            });
        }
        Ok((slot, p))
    }

    /// See [`Heap::retire_participant`].
    fn retire(
        &self,
        tx: &mut Tx<'_, 'm>,
        slot: ProcSlot,
        p: &ParticipantRef<'m>,
    ) -> Result<(), Error> {
        let r = self.record(slot)?;
        if r.rec.app[APP_PARTICIPANT].load(Relaxed) == p.at.get() {
            self.detach(tx, slot)?;
        }
        if p.rec.state.load(Relaxed) != P_DISCONNECTED {
            tx.set(&p.rec.state, P_DISCONNECTED)?;
        }
        Ok(())
    }

    /// Checks that `me`'s own participant, if it has one, has not been disconnected: a
    /// client that the server gave up on (for example after it stopped answering
    /// keepalives) must not go on sending as if connected.
    fn sender_connected(&self, me: ProcSlot) -> Result<(), Error> {
        let mine = self.record(me)?.rec.app[APP_PARTICIPANT].load(Relaxed);
        if mine == 0 {
            return Ok(());
        }
        let p = self.participant(Offset::new(mine))?;
        match p.rec.state.load(Relaxed) {
            P_CONNECTING | P_CONNECTED => Ok(()),
            _ => Err(Error::Disconnected),
        }
    }

    fn server_status(&self) -> ServerStatus {
        let s = &self.hdr.server;
        ServerStatus {
            running: s.state.load(Relaxed) == SERVER_RUNNING,
            generation: s.generation.load(Relaxed),
            slot: ProcSlot(s.slot.load(Relaxed) as u16),
            owner: Incarnation {
                slot: ProcSlot(s.slot.load(Relaxed) as u16),
                serial: s.serial.load(Relaxed),
            },
            id: ProcessId {
                pid: s.pid.load(Relaxed),
                tag: s.tag.load(Relaxed),
            },
            participant: Offset::new(s.participant.load(Relaxed)),
            heartbeat_ms: s.heartbeat_ms.load(Relaxed),
            max_missed: s.max_missed.load(Relaxed),
            keepalive_seq: s.keepalive_seq.load(Relaxed),
        }
    }

    /// Marks `slot`'s process as no longer taking part: clears its application words and,
    /// if it is the registered server, the server entry. The first step of reclaiming.
    pub(crate) fn detach(&self, tx: &mut Tx<'_, 'm>, slot: ProcSlot) -> Result<bool, Error> {
        let r = self.record(slot)?;
        let mut changed = false;
        for w in &r.rec.app {
            if w.load(Relaxed) != 0 {
                tx.set(w, 0)?;
                changed = true;
            }
        }
        let s = &self.hdr.server;
        if s.state.load(Relaxed) == SERVER_RUNNING && s.slot.load(Relaxed) == u32::from(slot.0) {
            tx.set(&s.state, SERVER_NONE)?;
            changed = true;
        }
        Ok(changed)
    }

    /// The running server's participant, if a server is registered.
    fn server_participant(&self) -> Result<ParticipantRef<'m>, Error> {
        let st = self.server_status();
        if !st.running {
            return Err(Error::NoServer);
        }
        self.participant(st.participant)
            .map_err(|_| Error::NoServer)
    }
}

impl<'m> ParticipantRef<'m> {
    /// Enqueues `entry` (see [`OffsetQueue::push`]); the publication it returns names this
    /// participant's doorbell, so whoever completes it also wakes the receiver.
    fn push_ringing(
        &self,
        tx: &mut Tx<'_, 'm>,
        region: &crate::region::Region<'m>,
        entry: QueueEntry,
    ) -> Result<crate::queue::Publish, Error> {
        let publish = self.queue.push(tx, region, entry)?;
        Ok(crate::queue::Publish {
            bell: region.offset_of(&self.bell.waiting)?,
            ..publish
        })
    }
}

/// Calls `wake` if the doorbell's owner sleeps.
fn ring(bell: &Doorbell, wake: impl FnOnce(&Doorbell)) {
    if bell.should_ring() {
        wake(bell);
    }
}

impl<'m, P: Platform> Heap<'m, P> {
    /// The participant at `at`, validated (its owner's slot must still hold the
    /// incarnation that made it: [`Error::PeerGone`] otherwise).
    pub fn participant(&self, at: Offset) -> Result<ParticipantRef<'m>, Error> {
        self.space().participant(at)
    }

    /// A snapshot of the server entry.
    pub fn server_status(&self) -> ServerStatus {
        self.space().server_status()
    }

    /// Creates a participant block for `me`: record, doorbell (zeroed; the platform
    /// initialises its object afterwards) and a queue of `capacity` slots (a power of
    /// two, 2 to 2^20). Service memory from the high end, owned by `me`.
    pub fn create_participant(
        &self,
        me: Member,
        kind: u32,
        capacity: u32,
    ) -> Result<ParticipantRef<'m>, Error> {
        if kind != KIND_SERVER && kind != KIND_CLIENT {
            return Err(Error::InvalidSize {
                requested: u64::from(kind),
            });
        }
        if !capacity.is_power_of_two() || !(2..=1 << 20).contains(&capacity) {
            return Err(Error::InvalidSize {
                requested: u64::from(capacity),
            });
        }
        // One cell for the block, taken now: growing a full owner array inside the
        // operation below would journal its fresh cells (and could overflow the journal).
        let cells = self.process(me.slot())?.blocks;
        self.reserve_cells(me, cells.saturating_add(1))?;
        let at = self.op(OpCode::Participant, |tx, s| {
            let slot = s.member(me)?;
            let r = s.record(slot)?;
            let id = ProcessId {
                pid: r.rec.pid.load(Relaxed),
                tag: r.rec.tag.load(Relaxed),
            };
            let at = s.alloc(tx, slot, participant_bytes(capacity), Placement::High)?;
            let region = &s.region;
            let rec: &Participant = region.get(at.get())?;
            let (bell_at, queue_at) = participant_layout(at.get())
                .ok_or_else(|| corrupt(at.get(), CorruptionKind::BadProtocol))?;
            // The block was carved in this operation: nobody else can reach it yet.
            let words = [
                (&rec.kind, kind),
                (&rec.slot, u32::from(slot.0)),
                (&rec.pid, id.pid),
                (&rec.tag, id.tag),
                (&rec.generation, 0),
                (&rec.state, P_NEW),
                (&rec.queue, queue_at),
                (&rec.bell, bell_at),
                (&rec.keepalive, 0),
                (&rec.keepalive_seen, 0),
                (&rec.keepalive_missed, 0),
                (&rec.serial, me.serial()),
            ];
            for (w, v) in words {
                tx.set_fresh(w, v)?;
            }
            for w in &rec.reserved {
                tx.set_fresh(w, 0)?;
            }
            for o in (bell_at..queue_at).step_by(4) {
                tx.set_fresh(region.word(o)?, 0)?;
            }
            OffsetQueue::format(tx, region, queue_at, capacity)?;
            Ok(at)
        })?;
        self.participant(at)
    }

    /// Makes `me`'s participant unreachable without freeing it: clears the application
    /// words that point at it (and the server entry, for a server) and marks it
    /// disconnected, so no operation that starts afterwards sends to it or rings its
    /// doorbell. Its owner then releases the doorbell's platform object and calls
    /// [`destroy_participant`](Self::destroy_participant): in that order, nobody can ring
    /// a destroyed semaphore.
    pub fn retire_participant(&self, me: Member, at: Offset) -> Result<(), Error> {
        self.op(OpCode::Participant, |tx, s| {
            let (slot, p) = s.own_participant(me, at)?;
            s.retire(tx, slot, &p)
        })
    }

    /// Frees `me`'s participant (after the caller drained its queue), retiring it first
    /// if it was not.
    pub fn destroy_participant(&self, me: Member, at: Offset) -> Result<(), Error> {
        self.op(OpCode::Participant, |tx, s| {
            let (slot, p) = s.own_participant(me, at)?;
            s.retire(tx, slot, &p)?;
            // The freed bytes must not read as a participant if their owner allocates the
            // same block again: a stale id would then pass validation and be written to.
            tx.set(&p.rec.kind, 0)?;
            tx.set(&p.rec.serial, 0)?;
            s.free(tx, slot, at)
        })
    }

    /// Registers `me`, with participant `server`, as the server: a new generation. Fails
    /// with [`Error::ServerRunning`] unless the registered server (if any) is known to be
    /// dead: "cannot tell" counts as alive.
    pub fn start_server(
        &self,
        me: Member,
        server: Offset,
        heartbeat_ms: u32,
        max_missed: u32,
    ) -> Result<u32, Error> {
        let current = self.server_status();
        let old_alive = current.running && self.platform().is_alive(current.id);
        self.op(OpCode::Server, |tx, s| {
            let slot = s.member(me)?;
            let st = s.server_status();
            if st.running && st != current {
                return Err(Error::ServerRunning); // someone else got there first
            }
            if st.running && old_alive {
                return Err(Error::ServerRunning);
            }
            let p = s.participant(server)?;
            if p.owner != me.incarnation() || p.kind != KIND_SERVER {
                return Err(Error::BadOffset { offset: server });
            }
            let gen = st.generation.wrapping_add(1);
            let r = s.record(slot)?;
            let id = ProcessId {
                pid: r.rec.pid.load(Relaxed),
                tag: r.rec.tag.load(Relaxed),
            };
            tx.set(&r.rec.app[APP_PARTICIPANT], server.get())?;
            tx.set(&r.rec.app[APP_KIND], KIND_SERVER)?;
            tx.set(&p.rec.generation, gen)?;
            tx.set(&p.rec.state, P_CONNECTED)?;
            let si = &s.hdr.server;
            tx.set(&si.generation, gen)?;
            tx.set(&si.slot, u32::from(slot.0))?;
            tx.set(&si.serial, me.serial())?;
            tx.set(&si.pid, id.pid)?;
            tx.set(&si.tag, id.tag)?;
            tx.set(&si.participant, server.get())?;
            tx.set(&si.heartbeat_ms, heartbeat_ms)?;
            tx.set(&si.max_missed, max_missed)?;
            tx.set(&si.state, SERVER_RUNNING)?;
            Ok(gen)
        })
    }

    /// Withdraws the server entry, if `me` is the registered server.
    pub fn stop_server(&self, me: Member) -> Result<(), Error> {
        self.op(OpCode::Server, |tx, s| {
            s.member(me)?;
            let st = s.server_status();
            if st.running && st.owner == me.incarnation() {
                tx.set(&s.hdr.server.state, SERVER_NONE)?;
            }
            Ok(())
        })
    }

    /// Client side: announces participant `client` to the running server (a `Connect`
    /// entry in its queue). Returns the server generation. Fails with
    /// [`Error::NoServer`] when no server is registered, or the registered one is known
    /// to be dead.
    ///
    /// `wake` is called, under the region lock, with the receiver's doorbell when the
    /// receiver sleeps; the platform posts its wait object there. The same holds for every
    /// sending operation below.
    pub fn connect(
        &self,
        me: Member,
        client: Offset,
        wake: impl FnOnce(&Doorbell),
    ) -> Result<u32, Error> {
        let st = self.server_status();
        if !st.running || !self.platform().is_alive(st.id) {
            return Err(Error::NoServer);
        }
        self.op_publish(
            OpCode::Connect,
            |tx, s| {
                let slot = s.member(me)?;
                let server = s.server_participant()?;
                let p = s.participant(client)?;
                if p.owner != me.incarnation() || p.kind != KIND_CLIENT {
                    return Err(Error::BadOffset { offset: client });
                }
                let gen = s.hdr.server.generation.load(Relaxed);
                let r = s.record(slot)?;
                tx.set(&r.rec.app[APP_PARTICIPANT], client.get())?;
                tx.set(&r.rec.app[APP_KIND], KIND_CLIENT)?;
                tx.set(&p.rec.generation, gen)?;
                tx.set(&p.rec.state, P_CONNECTING)?;
                tx.set(&p.rec.keepalive_missed, 0)?;
                let publish = server.push_ringing(
                    tx,
                    &s.region,
                    QueueEntry {
                        offset: client,
                        tag: Control::Connect as u32,
                        from: NO_SENDER,
                        from_serial: 0,
                    },
                )?;
                Ok(((gen, server.bell), Some(publish)))
            },
            |&(_, bell)| ring(bell, wake),
        )
        .map(|(gen, _)| gen)
    }

    /// Server side: accepts the client whose `Connect` entry named `client`, answering
    /// `Connected` in its queue. Returns the client.
    pub fn accept(
        &self,
        me: Member,
        client: Offset,
        wake: impl FnOnce(&Doorbell),
    ) -> Result<ParticipantRef<'m>, Error> {
        self.op_publish(
            OpCode::Connect,
            |tx, s| {
                s.member(me)?;
                let st = s.server_status();
                if !st.running || st.owner != me.incarnation() {
                    return Err(Error::NoServer);
                }
                let p = s.participant(client)?;
                let r = s.record(p.slot)?;
                if p.kind != KIND_CLIENT || r.rec.app[APP_PARTICIPANT].load(Relaxed) != client.get()
                {
                    return Err(Error::BadOffset { offset: client });
                }
                if p.rec.generation.load(Relaxed) != st.generation {
                    return Err(Error::ServerRestarted);
                }
                if p.rec.state.load(Relaxed) != P_CONNECTING {
                    return Err(Error::NotConnected);
                }
                tx.set(&p.rec.state, P_CONNECTED)?;
                let publish = p.push_ringing(
                    tx,
                    &s.region,
                    QueueEntry {
                        offset: client,
                        tag: Control::Connected as u32,
                        from: NO_SENDER,
                        from_serial: 0,
                    },
                )?;
                Ok((p, Some(publish)))
            },
            |p| ring(p.bell, wake),
        )
    }

    /// Sends a control entry about `about` from `me` to participant `to`; marks `to`
    /// disconnected first for [`Control::Disconnected`]. A participant whose owner is gone
    /// gives [`Error::PeerGone`].
    pub fn send_control(
        &self,
        me: Member,
        to: ParticipantId,
        control: Control,
        about: Offset,
        wake: impl FnOnce(&Doorbell),
    ) -> Result<(), Error> {
        self.op_publish(
            OpCode::Send,
            |tx, s| {
                s.member(me)?;
                let p = s.participant_of(to)?;
                if p.rec.state.load(Relaxed) == P_DISCONNECTED {
                    // Retired (its owner may be destroying its doorbell) or already told.
                    return Err(Error::NotConnected);
                }
                if control == Control::Disconnected {
                    tx.set(&p.rec.state, P_DISCONNECTED)?;
                }
                let publish = p.push_ringing(
                    tx,
                    &s.region,
                    QueueEntry {
                        offset: about,
                        tag: control as u32,
                        from: NO_SENDER,
                        from_serial: 0,
                    },
                )?;
                Ok((p.bell, Some(publish)))
            },
            |bell| ring(bell, wake),
        )
        .map(|_| ())
    }

    /// Sends `block` with `tag` from `me` to participant `to`: in one operation the block
    /// moves to (or, with [`SendMode::Share`], is shared with) the receiver and the entry
    /// is enqueued; the entry becomes visible right after. A full queue fails with
    /// [`Error::QueueFull`] and the block stays the sender's; a receiver whose owner is
    /// gone fails with [`Error::PeerGone`], one not connected with
    /// [`Error::NotConnected`]; a sender whose own participant was disconnected fails with
    /// [`Error::Disconnected`]. `wake` as for [`connect`](Heap::connect). Returns the
    /// entry's position in the receiver's queue (see [`OffsetQueue::taken`]).
    pub fn send(
        &self,
        me: Member,
        to: ParticipantId,
        block: Offset,
        tag: u32,
        mode: SendMode,
        wake: impl FnOnce(&Doorbell),
    ) -> Result<u32, Error> {
        if tag >= CONTROL_TAG_BASE {
            return Err(Error::ReservedTag { tag });
        }
        self.op_publish(
            OpCode::Send,
            |tx, s| {
                let slot = s.member(me)?;
                s.sender_connected(slot)?;
                let p = s.participant_of(to)?;
                if p.rec.state.load(Relaxed) != P_CONNECTED {
                    return Err(Error::NotConnected);
                }
                match mode {
                    SendMode::Give => s.give(tx, slot, block, p.slot)?,
                    SendMode::Share => s.share(tx, slot, block, p.slot)?,
                }
                let entry = QueueEntry {
                    offset: block,
                    tag,
                    from: u32::from(slot.0),
                    from_serial: me.serial(),
                };
                let publish = p.push_ringing(tx, &s.region, entry)?;
                Ok(((p.bell, publish.value.wrapping_sub(1)), Some(publish)))
            },
            |&(bell, _)| ring(bell, wake),
        )
        .map(|(_, position)| position)
    }

    /// Takes the next entry from participant `p`'s queue, without the lock. Only `p`'s
    /// owner may call this, one thread at a time.
    pub fn recv(&self, p: &ParticipantRef<'m>) -> Result<Option<Received>, Error> {
        let Some(e) = p.queue.pop(self.region())? else {
            return Ok(None);
        };
        Ok(Some(match Control::from_tag(e.tag) {
            Some(control) => Received::Control {
                control,
                participant: e.offset,
            },
            None => Received::Message {
                block: e.offset,
                tag: e.tag,
                from: Incarnation {
                    slot: ProcSlot(e.from as u16),
                    serial: e.from_serial,
                },
            },
        }))
    }

    /// Server side: one heartbeat for `client`. If its mailbox is empty, puts a keepalive
    /// packet there (cut from the server's reserve, or allocated when the reserve is used
    /// up); otherwise counts a miss.
    pub fn heartbeat(&self, me: Member, client: ParticipantId) -> Result<Beat, Error> {
        self.op(OpCode::Heartbeat, |tx, s| {
            let slot = s.member(me)?;
            let st = s.server_status();
            if !st.running || st.owner != me.incarnation() {
                return Err(Error::NoServer);
            }
            let p = s.participant_of(client)?;
            if p.rec.keepalive.load(Relaxed) != 0 {
                let missed = p.rec.keepalive_missed.load(Relaxed).wrapping_add(1);
                tx.set(&p.rec.keepalive_missed, missed)?;
                return Ok(Beat::Missed { missed });
            }
            let size = size_of::<KeepAlive>() as u32;
            let packet = match s.alloc_from_reserve(tx, slot, size) {
                Ok(b) => b,
                Err(Error::ReserveTooSmall { .. }) => s.alloc(tx, slot, size, Placement::Low)?,
                Err(e) => return Err(e),
            };
            let seq = st.keepalive_seq.wrapping_add(1);
            let ka: &KeepAlive = s.region.get(packet.get())?;
            tx.set(&ka.generation, st.generation)?;
            tx.set(&ka.seq, seq)?;
            s.give(tx, slot, packet, p.slot)?;
            tx.set(&p.rec.keepalive, packet.get())?;
            tx.set(&p.rec.keepalive_missed, 0)?;
            tx.set(&s.hdr.server.keepalive_seq, seq)?;
            Ok(Beat::Sent { seq })
        })
    }

    /// Client side: takes and frees the keepalive packet in `me`'s mailbox, if any.
    /// Returns its sequence number.
    pub fn take_keepalive(&self, me: Member, mine: Offset) -> Result<Option<u32>, Error> {
        self.op(OpCode::Heartbeat, |tx, s| {
            let slot = s.member(me)?;
            let p = s.participant(mine)?;
            if p.owner != me.incarnation() {
                return Err(Error::NotOwner {
                    offset: mine,
                    process: slot,
                });
            }
            let packet = p.rec.keepalive.load(Relaxed);
            if packet == 0 {
                return Ok(None);
            }
            tx.set(&p.rec.keepalive, 0)?;
            let ka: &KeepAlive = s
                .region
                .get(packet)
                .map_err(|_| corrupt(mine.get(), CorruptionKind::BadProtocol))?;
            let seq = ka.seq.load(Relaxed);
            tx.set(&p.rec.keepalive_seen, seq)?;
            tx.set(&p.rec.keepalive_missed, 0)?;
            s.release(tx, slot, Offset::new(packet))?;
            Ok(Some(seq))
        })
    }

    /// The participants registered in the process table (offset, kind, owner), read
    /// without the lock.
    pub fn participants(
        &self,
    ) -> Result<impl Iterator<Item = (Offset, u32, Incarnation)> + '_, Error> {
        Ok(self.processes()?.filter_map(|info| {
            let info = info.ok()?;
            let at = info.app[APP_PARTICIPANT];
            let kind = info.app[APP_KIND];
            (at != 0).then_some((Offset::new(at), kind, info.incarnation()))
        }))
    }
}
