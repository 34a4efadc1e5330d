//! Joining and leaving: the connection handshake (a client's `Connect`, the server's
//! `Connected`) and retiring and destroying a participant, which withdraws it from the
//! process table and, for the server, from the server entry.

use core::sync::atomic::Ordering::Relaxed;

use crate::error::Error;
use crate::format::{
    Control, Doorbell, APP_KIND, APP_PARTICIPANT, KIND_CLIENT, NO_SENDER, P_CONNECTED,
    P_CONNECTING, P_DISCONNECTED, SERVER_NONE,
};
use crate::heap::{Heap, Txn};
use crate::ids::{Member, ProcSlot};
use crate::offset::Offset;
use crate::platform::Platform;
use crate::protocol::participant::participant;
use crate::protocol::server::{as_server, server_info, server_participant, server_status};
use crate::protocol::{ring, ParticipantRef, ProtocolOp};
use crate::queue::QueueEntry;

/// `me`'s participant at `at`, checked to be `me`'s.
fn own_participant<'m>(
    t: &Txn<'_, '_, 'm>,
    me: Member,
    at: Offset,
) -> Result<(ProcSlot, ParticipantRef<'m>), Error> {
    let slot = t.member(me)?;
    let p = participant(t, at)?;
    if p.owner != me.incarnation() {
        return Err(Error::NotOwner {
            offset: at,
            process: slot,
        });
    }
    Ok((slot, p))
}

/// See [`Heap::retire_participant`]: unreachable through the process table (and, for
/// the registered server, through the server entry), marked disconnected.
fn retire(t: &mut Txn<'_, '_, '_>, slot: ProcSlot, p: &ParticipantRef<'_>) -> Result<(), Error> {
    if t.app_word(slot, APP_PARTICIPANT)?.load(Relaxed) == p.at.get() {
        t.clear_app_words(slot)?;
        if let Some(si) = server_info(t) {
            let st = server_status(t);
            if st.running && st.owner == p.owner {
                t.set(&si.state, SERVER_NONE)?;
            }
        }
    }
    if p.rec.state.load(Relaxed) != P_DISCONNECTED {
        t.set(&p.rec.state, P_DISCONNECTED)?;
    }
    Ok(())
}

impl<'m, P: Platform> Heap<'m, P> {
    /// Client side: announces participant `client` to the running server (a `Connect`
    /// entry in its queue). Returns the server generation. Fails with
    /// [`Error::NoServer`] when no server is registered, or the registered one is known
    /// to be dead.
    ///
    /// `wake` is called, under the region lock, with the receiver's doorbell when the
    /// receiver sleeps; the platform posts its wait object there. The same holds for every
    /// sending operation.
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
        self.transact_then(
            ProtocolOp::Connect as u32,
            |t| {
                let slot = t.member(me)?;
                let server = server_participant(t)?;
                let p = participant(t, client)?;
                if p.owner != me.incarnation() || p.kind != KIND_CLIENT {
                    return Err(Error::BadOffset { offset: client });
                }
                let gen = server_status(t).generation;
                t.set(t.app_word(slot, APP_PARTICIPANT)?, client.get())?;
                t.set(t.app_word(slot, APP_KIND)?, KIND_CLIENT)?;
                t.set(&p.rec.generation, gen)?;
                t.set(&p.rec.state, P_CONNECTING)?;
                t.set(&p.rec.keepalive_missed, 0)?;
                server.push_ringing(
                    t,
                    QueueEntry {
                        offset: client,
                        tag: Control::Connect as u32,
                        from: NO_SENDER,
                        from_serial: 0,
                    },
                )?;
                Ok((gen, server.bell))
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
        self.transact_then(
            ProtocolOp::Connect as u32,
            |t| {
                t.member(me)?;
                let (_, st) = as_server(t, me)?;
                let p = participant(t, client)?;
                if p.kind != KIND_CLIENT
                    || t.app_word(p.slot, APP_PARTICIPANT)?.load(Relaxed) != client.get()
                {
                    return Err(Error::BadOffset { offset: client });
                }
                if p.rec.generation.load(Relaxed) != st.generation {
                    return Err(Error::ServerRestarted);
                }
                if p.rec.state.load(Relaxed) != P_CONNECTING {
                    return Err(Error::NotConnected);
                }
                t.set(&p.rec.state, P_CONNECTED)?;
                p.push_ringing(
                    t,
                    QueueEntry {
                        offset: client,
                        tag: Control::Connected as u32,
                        from: NO_SENDER,
                        from_serial: 0,
                    },
                )?;
                Ok(p)
            },
            |p| ring(p.bell, wake),
        )
    }

    /// Makes `me`'s participant unreachable without freeing it: clears the application
    /// words that point at it (and the server entry, for a server) and marks it
    /// disconnected, so no operation that starts afterwards sends to it or rings its
    /// doorbell. Its owner then releases the doorbell's platform object and calls
    /// [`destroy_participant`](Self::destroy_participant): in that order, nobody can ring
    /// a destroyed semaphore.
    pub fn retire_participant(&self, me: Member, at: Offset) -> Result<(), Error> {
        self.transact(ProtocolOp::Participant as u32, |t| {
            let (slot, p) = own_participant(t, me, at)?;
            retire(t, slot, &p)
        })
    }

    /// Frees `me`'s participant (after the caller drained its queue), retiring it first
    /// if it was not.
    pub fn destroy_participant(&self, me: Member, at: Offset) -> Result<(), Error> {
        self.transact(ProtocolOp::Participant as u32, |t| {
            let (slot, p) = own_participant(t, me, at)?;
            retire(t, slot, &p)?;
            // The freed bytes must not read as a participant if their owner allocates the
            // same block again: a stale id would then pass validation and be written to.
            t.set(&p.rec.kind, 0)?;
            t.set(&p.rec.serial, 0)?;
            t.free(slot, at)
        })
    }
}
