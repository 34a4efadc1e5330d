//! The server entry: starting and stopping a server, its status, heartbeats.
//!
//! The entry is a [`ServerInfo`] in the region's root block, a system block (owned by no
//! process) the first server start allocates and records in the header's root word. Since
//! reclaiming a process does not touch it, a dead server's entry stays behind, saying
//! "running": it is recognised by its incarnation (slot and serial) no longer being
//! registered - under the lock for every decision, and against the process table for an
//! unlocked snapshot ([`server_status`]).

use core::mem::size_of;
use core::sync::atomic::Ordering::Relaxed;

use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{
    KeepAlive, ServerInfo, APP_KIND, APP_PARTICIPANT, KIND_SERVER, P_CONNECTED, SERVER_NONE,
    SERVER_RUNNING,
};
use crate::heap::{Heap, HeapView};
use crate::ids::{Incarnation, Member, ProcSlot, ProcessId};
use crate::offset::Offset;
use crate::platform::Platform;
use crate::protocol::participant::{participant, participant_of};
use crate::protocol::{Beat, ParticipantId, ParticipantRef, ProtocolOp, ServerStatus};

/// The server entry, if the region has a root block large enough for one.
pub(crate) fn server_info<'m>(v: &HeapView<'_, 'm>) -> Option<&'m ServerInfo> {
    let (at, len) = v.root()?;
    if (len as usize) < size_of::<ServerInfo>() {
        return None;
    }
    v.region().get(at.get()).ok()
}

/// A snapshot of the server entry. `running` only while its incarnation is registered.
pub(crate) fn server_status(v: &HeapView<'_, '_>) -> ServerStatus {
    let Some(s) = server_info(v) else {
        let nobody = Incarnation {
            slot: ProcSlot(0),
            serial: 0,
        };
        return ServerStatus {
            running: false,
            generation: 0,
            slot: nobody.slot,
            owner: nobody,
            id: ProcessId { pid: 0, tag: 0 },
            participant: Offset::new(0),
            heartbeat_ms: 0,
            max_missed: 0,
            keepalive_seq: 0,
        };
    };
    let owner = Incarnation {
        slot: ProcSlot(s.slot.load(Relaxed) as u16),
        serial: s.serial.load(Relaxed),
    };
    ServerStatus {
        running: s.state.load(Relaxed) == SERVER_RUNNING && v.is_registered(owner),
        generation: s.generation.load(Relaxed),
        slot: owner.slot,
        owner,
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

/// The running server's participant, if a server is registered.
pub(crate) fn server_participant<'m>(v: &HeapView<'_, 'm>) -> Result<ParticipantRef<'m>, Error> {
    let st = server_status(v);
    if !st.running {
        return Err(Error::NoServer);
    }
    participant(v, st.participant).map_err(|_| Error::NoServer)
}

/// The server entry and its status, for `me` acting as the running server
/// ([`Error::NoServer`] otherwise).
pub(crate) fn as_server<'m>(
    v: &HeapView<'_, 'm>,
    me: Member,
) -> Result<(&'m ServerInfo, ServerStatus), Error> {
    let st = server_status(v);
    match server_info(v) {
        Some(si) if st.running && st.owner == me.incarnation() => Ok((si, st)),
        _ => Err(Error::NoServer),
    }
}

impl<'m, P: Platform> Heap<'m, P> {
    /// A snapshot of the server entry (read without the lock).
    pub fn server_status(&self) -> ServerStatus {
        server_status(&self.view())
    }

    /// Registers `me`, with participant `server`, as the server: a new generation. Fails
    /// with [`Error::ServerRunning`] unless the registered server (if any) is known to be
    /// dead: "cannot tell" counts as alive. The first start allocates the root block that
    /// holds the server entry.
    pub fn start_server(
        &self,
        me: Member,
        server: Offset,
        heartbeat_ms: u32,
        max_missed: u32,
    ) -> Result<u32, Error> {
        let current = self.server_status();
        let old_alive = current.running && self.platform().is_alive(current.id);
        self.transact(ProtocolOp::Server as u32, |t| {
            let slot = t.member(me)?;
            let st = server_status(t);
            if st.running && st != current {
                return Err(Error::ServerRunning); // someone else got there first
            }
            if st.running && old_alive {
                return Err(Error::ServerRunning);
            }
            let p = participant(t, server)?;
            if p.owner != me.incarnation() || p.kind != KIND_SERVER {
                return Err(Error::BadOffset { offset: server });
            }
            let si = match server_info(t) {
                Some(si) => si,
                None => {
                    let at = t.alloc_root(size_of::<ServerInfo>() as u32)?;
                    t.region().get::<ServerInfo>(at.get())?
                }
            };
            let gen = st.generation.wrapping_add(1);
            let id = t.process_id(slot)?;
            t.set(t.app_word(slot, APP_PARTICIPANT)?, server.get())?;
            t.set(t.app_word(slot, APP_KIND)?, KIND_SERVER)?;
            t.set(&p.rec.generation, gen)?;
            t.set(&p.rec.state, P_CONNECTED)?;
            t.set(&si.generation, gen)?;
            t.set(&si.slot, u32::from(slot.0))?;
            t.set(&si.serial, me.serial())?;
            t.set(&si.pid, id.pid)?;
            t.set(&si.tag, id.tag)?;
            t.set(&si.participant, server.get())?;
            t.set(&si.heartbeat_ms, heartbeat_ms)?;
            t.set(&si.max_missed, max_missed)?;
            t.set(&si.state, SERVER_RUNNING)?;
            Ok(gen)
        })
    }

    /// Withdraws the server entry, if `me` is the registered server.
    pub fn stop_server(&self, me: Member) -> Result<(), Error> {
        self.transact(ProtocolOp::Server as u32, |t| {
            t.member(me)?;
            if let Ok((si, _)) = as_server(t, me) {
                t.set(&si.state, SERVER_NONE)?;
            }
            Ok(())
        })
    }

    /// Server side: one heartbeat for `client`. If its mailbox is empty, puts a keepalive
    /// packet there (cut from the server's reserve, or allocated when the reserve is used
    /// up); otherwise counts a miss.
    pub fn heartbeat(&self, me: Member, client: ParticipantId) -> Result<Beat, Error> {
        self.transact(ProtocolOp::Heartbeat as u32, |t| {
            let slot = t.member(me)?;
            let (si, st) = as_server(t, me)?;
            let p = participant_of(t, client)?;
            if p.rec.keepalive.load(Relaxed) != 0 {
                let missed = p.rec.keepalive_missed.load(Relaxed).wrapping_add(1);
                t.set(&p.rec.keepalive_missed, missed)?;
                return Ok(Beat::Missed { missed });
            }
            let size = size_of::<KeepAlive>() as u32;
            let packet = match t.alloc_from_reserve(slot, size) {
                Ok(b) => b,
                Err(Error::ReserveTooSmall { .. }) => t.alloc(slot, size, false)?,
                Err(e) => return Err(e),
            };
            let seq = st.keepalive_seq.wrapping_add(1);
            let ka: &KeepAlive = t.region().get(packet.get())?;
            t.set(&ka.generation, st.generation)?;
            t.set(&ka.seq, seq)?;
            t.give(slot, packet, p.slot)?;
            t.set(&p.rec.keepalive, packet.get())?;
            t.set(&p.rec.keepalive_missed, 0)?;
            t.set(&si.keepalive_seq, seq)?;
            Ok(Beat::Sent { seq })
        })
    }

    /// Client side: takes and frees the keepalive packet in `me`'s mailbox, if any.
    /// Returns its sequence number.
    pub fn take_keepalive(&self, me: Member, mine: Offset) -> Result<Option<u32>, Error> {
        self.transact(ProtocolOp::Heartbeat as u32, |t| {
            let slot = t.member(me)?;
            let p = participant(t, mine)?;
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
            t.set(&p.rec.keepalive, 0)?;
            let ka: &KeepAlive = t
                .region()
                .get(packet)
                .map_err(|_| corrupt(mine.get(), CorruptionKind::BadProtocol))?;
            let seq = ka.seq.load(Relaxed);
            t.set(&p.rec.keepalive_seen, seq)?;
            t.set(&p.rec.keepalive_missed, 0)?;
            t.release(slot, Offset::new(packet))?;
            Ok(Some(seq))
        })
    }
}
