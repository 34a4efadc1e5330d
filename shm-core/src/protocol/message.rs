//! Sending and receiving: [`Heap::send`] moves (or shares) a block to a participant and
//! enqueues it in one journaled operation, whose deferred store publishes the entry once
//! the operation has committed; [`Heap::recv`] takes entries without the lock.

use core::sync::atomic::Ordering::Relaxed;

use crate::error::Error;
use crate::format::{
    Control, Doorbell, CONTROL_TAG_BASE, FROM_SHARED, NO_SENDER, P_CONNECTED, P_DISCONNECTED,
};
use crate::heap::Heap;
use crate::ids::{Incarnation, Member, ProcSlot};
use crate::offset::Offset;
use crate::platform::Platform;
use crate::protocol::participant::{is_participant, participant_of, sender_connected};
use crate::protocol::{ring, ParticipantId, ParticipantRef, ProtocolOp, Received, SendMode};
use crate::queue::QueueEntry;

impl<'m, P: Platform> Heap<'m, P> {
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
        self.transact_then(
            ProtocolOp::Send as u32,
            |t| {
                t.member(me)?;
                let p = participant_of(t, to)?;
                if p.rec.state.load(Relaxed) == P_DISCONNECTED {
                    // Retired (its owner may be destroying its doorbell) or already told.
                    return Err(Error::NotConnected);
                }
                if control == Control::Disconnected {
                    t.set(&p.rec.state, P_DISCONNECTED)?;
                }
                p.push_ringing(
                    t,
                    QueueEntry {
                        offset: about,
                        tag: control as u32,
                        from: NO_SENDER,
                        from_serial: 0,
                    },
                )?;
                Ok(p.bell)
            },
            |bell| ring(bell, wake),
        )
        .map(|_| ())
    }

    /// Sends `block` with `tag` from `me` to participant `to`: in one operation the block
    /// moves to (or, with [`SendMode::Share`], is shared with) the receiver and the entry
    /// is enqueued; the entry becomes visible right after. A full queue fails with
    /// [`Error::QueueFull`] and the block stays the sender's; a receiver whose owner is
    /// gone fails with [`Error::PeerGone`], one not connected with [`Error::NotConnected`];
    /// a sender whose own participant was disconnected fails with [`Error::Disconnected`].
    /// A participant block is never sent ([`Error::BadOffset`]): its record, doorbell and
    /// queue would become the receiver's message bytes, and the record would validate
    /// again once the block was its owner's alone.
    /// `wake` as for [`connect`](Heap::connect). Returns the entry's position in the
    /// receiver's queue (see [`OffsetQueue::taken`](crate::OffsetQueue::taken)).
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
        self.transact_then(
            ProtocolOp::Send as u32,
            |t| {
                let slot = sender_connected(t, me)?;
                let p = participant_of(t, to)?;
                if p.rec.state.load(Relaxed) != P_CONNECTED {
                    return Err(Error::NotConnected);
                }
                if is_participant(t, block) {
                    return Err(Error::BadOffset { offset: block });
                }
                match mode {
                    SendMode::Give => t.give(slot, block, p.slot)?,
                    SendMode::Share => t.share(slot, block, p.slot)?,
                }
                let shared = match mode {
                    SendMode::Give => 0,
                    SendMode::Share => FROM_SHARED,
                };
                let entry = QueueEntry {
                    offset: block,
                    tag,
                    from: u32::from(slot.0) | shared,
                    from_serial: me.serial(),
                };
                let position = p.push_ringing(t, entry)?;
                Ok((p.bell, position))
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
                    slot: ProcSlot((e.from & 0xFFFF) as u16),
                    serial: e.from_serial,
                },
                shared: e.from & FROM_SHARED != 0,
            },
        }))
    }
}
