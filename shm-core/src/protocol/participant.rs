//! Participant blocks: validating one ([`participant`]), creating, retiring and destroying
//! one, and listing them through the process table.

use core::sync::atomic::Ordering::Relaxed;

use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{
    participant_bytes, participant_layout, queue_bytes, Participant, APP_KIND, APP_PARTICIPANT,
    KIND_CLIENT, KIND_SERVER, P_CONNECTED, P_CONNECTING, P_NEW,
};
use crate::heap::{Heap, HeapView, Txn};
use crate::ids::{Incarnation, Member, ProcSlot};
use crate::offset::Offset;
use crate::platform::Platform;
use crate::protocol::{ParticipantId, ParticipantRef, ProtocolOp};
use crate::queue::{OffsetQueue, QueueEntry};

/// The participant at `at`, validated: a used block owned (alone) by the slot it names,
/// whose incarnation still holds that slot, with its doorbell and queue where the layout
/// puts them.
pub(crate) fn participant<'m>(
    v: &HeapView<'_, 'm>,
    at: Offset,
) -> Result<ParticipantRef<'m>, Error> {
    participant_checking(v, at, None)
}

/// [`participant`], where `checked` is an incarnation the caller has already checked to
/// hold its slot in this operation: a participant of that incarnation is not checked again.
fn participant_checking<'m>(
    v: &HeapView<'_, 'm>,
    at: Offset,
    checked: Option<Incarnation>,
) -> Result<ParticipantRef<'m>, Error> {
    let bad = Error::BadOffset { offset: at };
    let block = v.used_block(at).map_err(|_| bad)?;
    let region = v.region();
    let rec: &'m Participant = region.get(at.get())?;
    let kind = rec.kind.load(Relaxed);
    let slot = rec.slot.load(Relaxed);
    if (kind != KIND_SERVER && kind != KIND_CLIENT) || slot > u32::from(u16::MAX) {
        return Err(bad);
    }
    let slot = ProcSlot(slot as u16);
    if block.first_owner != Some(slot) || block.refs != 1 {
        return Err(bad);
    }
    // The block is owned by that slot; the slot must still hold the incarnation that
    // made the participant (a stale record left by a reclaimed process is refused).
    let owner = Incarnation {
        slot,
        serial: rec.serial.load(Relaxed),
    };
    if checked != Some(owner) && !v.is_registered(owner) {
        return Err(Error::PeerGone);
    }
    let (bell_at, queue_at) = participant_layout(at.get())
        .ok_or_else(|| corrupt(at.get(), CorruptionKind::BadProtocol))?;
    if rec.bell.load(Relaxed) != bell_at || rec.queue.load(Relaxed) != queue_at {
        return Err(corrupt(at.get(), CorruptionKind::BadProtocol));
    }
    let queue = OffsetQueue::open(region, queue_at)?;
    // A sum of two u32 in a u64: it cannot saturate.
    if u64::from(queue_at).saturating_add(u64::from(queue_bytes(queue.capacity())))
        > u64::from(block.end)
    {
        return Err(corrupt(at.get(), CorruptionKind::BadProtocol));
    }
    Ok(ParticipantRef {
        at,
        rec,
        bell: region.get(bell_at)?,
        queue,
        slot,
        owner,
        kind,
    })
}

/// Whether the block at `at` holds a participant that validates. Most blocks are ruled
/// out by their first word (a participant's kind) without the full validation.
pub(crate) fn is_participant(v: &HeapView<'_, '_>, at: Offset) -> bool {
    let kind = v.region().word(at.get()).map(|w| w.load(Relaxed));
    matches!(kind, Ok(KIND_SERVER | KIND_CLIENT)) && participant(v, at).is_ok()
}

/// The participant `id` names, checked to still belong to that incarnation.
pub(crate) fn participant_of<'m>(
    v: &HeapView<'_, 'm>,
    id: ParticipantId,
) -> Result<ParticipantRef<'m>, Error> {
    match participant(v, id.at) {
        Ok(p) if p.owner == id.owner => Ok(p),
        Ok(_) | Err(Error::BadOffset { .. } | Error::PeerGone) => Err(Error::PeerGone),
        Err(e) => Err(e),
    }
}

/// Checks that member `me`'s own participant, if it has one, has not been disconnected: a
/// client that the server gave up on (for example after it stopped answering keepalives)
/// must not go on sending as if connected. Returns `me`'s slot, checked to hold its
/// incarnation (see [`Txn::member`]).
pub(crate) fn sender_connected(t: &Txn<'_, '_, '_>, me: Member) -> Result<ProcSlot, Error> {
    let (slot, word) = t.member_app_word(me, APP_PARTICIPANT)?;
    let mine = word.load(Relaxed);
    if mine == 0 {
        return Ok(slot);
    }
    let p = participant_checking(t, Offset::new(mine), Some(me.incarnation()))?;
    match p.rec.state.load(Relaxed) {
        P_CONNECTING | P_CONNECTED => Ok(slot),
        _ => Err(Error::Disconnected),
    }
}

impl<'m> ParticipantRef<'m> {
    /// Enqueues `entry` (see [`OffsetQueue::push`]); the deferred store that publishes it
    /// names this participant's doorbell, so whoever completes it also wakes the receiver.
    /// Returns the entry's position.
    pub(crate) fn push_ringing(
        &self,
        t: &mut Txn<'_, '_, 'm>,
        entry: QueueEntry,
    ) -> Result<u32, Error> {
        let region = t.region();
        let bell = region.offset_of(&self.bell.waiting)?;
        self.queue.push(t.tx(), region, entry, bell)
    }
}

impl<'m, P: Platform> Heap<'m, P> {
    /// The participant at `at`, validated (its owner's slot must still hold the
    /// incarnation that made it: [`Error::PeerGone`] otherwise).
    pub fn participant(&self, at: Offset) -> Result<ParticipantRef<'m>, Error> {
        participant(&self.view(), at)
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
        let at = self.transact(ProtocolOp::Participant as u32, |t| {
            let slot = t.member(me)?;
            let id = t.process_id(slot)?;
            let at = t.alloc(slot, participant_bytes(capacity), true)?;
            let region = t.region();
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
                t.set_fresh(w, v)?;
            }
            for w in &rec.reserved {
                t.set_fresh(w, 0)?;
            }
            for o in (bell_at..queue_at).step_by(4) {
                t.set_fresh(region.word(o)?, 0)?;
            }
            OffsetQueue::format(t.tx(), region, queue_at, capacity)?;
            Ok(at)
        })?;
        self.participant(at)
    }

    /// The participants registered in the process table (offset, kind, owner), read
    /// without the lock.
    pub fn participants(
        &self,
    ) -> Result<impl Iterator<Item = (Offset, u32, Incarnation)> + '_, Error> {
        Ok(self.processes()?.filter_map(|info| {
            let info = info.ok()?;
            let at = *info.app.get(APP_PARTICIPANT)?;
            let kind = *info.app.get(APP_KIND)?;
            (at != 0).then_some((Offset::new(at), kind, info.incarnation()))
        }))
    }
}
