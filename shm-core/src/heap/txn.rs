//! The narrow door through which a layer above the heap (the protocol) reads the heap and
//! runs journaled operations of its own: [`HeapView`] (checked reads) and [`Txn`] (an
//! operation in progress, from [`Heap::transact`]).
//!
//! The layer above never sees the allocator's internals (its free index, block headers,
//! owner chains): it allocates, frees and hands over blocks as a process, checks members,
//! writes words of structures it owns through the journal, and defers one store until
//! after its operation commits. Everything it writes is journaled, so its operations are
//! as atomic as the heap's own.

use core::ops::Deref;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crate::error::Error;
use crate::format::{OwnerRef, NO_OWNER};
use crate::heap::{Heap, Placement, Space, FIRST_CLIENT_OP};
use crate::ids::{Incarnation, Member, ProcSlot, ProcessId};
use crate::journal::Tx;
use crate::offset::Offset;
use crate::platform::Platform;
use crate::region::Region;

/// A used block as seen from outside the allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UsedBlock {
    /// Offset one past its last byte.
    pub end: u32,
    /// Its first owner, `None` for system blocks.
    pub first_owner: Option<ProcSlot>,
    /// Its reference count (owners).
    pub refs: u32,
}

/// Checked reads of the heap for the layer above: with the lock (inside a [`Txn`]) or
/// without (inspection, a receiver's validation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeapView<'s, 'm> {
    space: &'s Space<'m>,
}

impl<'s, 'm> HeapView<'s, 'm> {
    /// The region.
    pub(crate) fn region(&self) -> &'s Region<'m> {
        &self.space.region
    }

    /// The used block whose payload is at `at` ([`Error::BadOffset`] otherwise).
    pub(crate) fn used_block(&self, at: Offset) -> Result<UsedBlock, Error> {
        let (h, b) = self.space.used_block(at)?;
        let end = b
            .checked_add(h.size())
            .ok_or(Error::BadOffset { offset: at })?;
        let owner = h.owner.load(Relaxed);
        Ok(UsedBlock {
            end,
            first_owner: OwnerRef::unpack(owner).map(|o| ProcSlot(o.slot)),
            refs: h.refs(),
        })
    }

    /// Whether `inc`'s slot still holds that incarnation, and it is not leaving (see
    /// [`ProcessRecord::leaving`](crate::format::ProcessRecord)).
    pub(crate) fn is_registered(&self, inc: Incarnation) -> bool {
        self.space.incarnation(inc).is_ok()
    }

    /// The process `slot` was registered for.
    pub(crate) fn process_id(&self, slot: ProcSlot) -> Result<ProcessId, Error> {
        let r = self.space.record(slot)?;
        Ok(ProcessId {
            pid: r.rec.pid.load(Relaxed),
            tag: r.rec.tag.load(Relaxed),
        })
    }

    /// Application word `index` of `slot`'s record.
    pub(crate) fn app_word(&self, slot: ProcSlot, index: usize) -> Result<&'m AtomicU32, Error> {
        self.space.record(slot)?.app_word(index)
    }

    /// The root structure's payload offset and usable length, if the region has one: a
    /// used system block (a root word naming anything else is ignored, so a damaged word
    /// never lets the layer above write into someone's block).
    pub(crate) fn root(&self) -> Option<(Offset, u32)> {
        let at = Offset::from_link(self.space.root().load(Relaxed))?;
        // The process table is the other unowned block a forged root word could name.
        if at.get() == self.space.hdr.heap.proc_table.load(Relaxed) {
            return None;
        }
        let (h, _) = self.space.used_block(at).ok()?;
        if h.owner.load(Relaxed) != NO_OWNER {
            return None;
        }
        Some((at, h.size().checked_sub(self.space.geo.hsize)?))
    }
}

/// An operation of the layer above, in progress (see [`Heap::transact`]). Reads go
/// through [`HeapView`] (it derefs to one); every write is journaled.
pub(crate) struct Txn<'t, 'a, 'm> {
    view: HeapView<'t, 'm>,
    tx: &'t mut Tx<'a, 'm>,
}

impl<'t, 'm> Deref for Txn<'t, '_, 'm> {
    type Target = HeapView<'t, 'm>;
    fn deref(&self) -> &HeapView<'t, 'm> {
        &self.view
    }
}

impl<'a, 'm> Txn<'_, 'a, 'm> {
    /// The slot of member `m`, checked (under the lock) to still hold its incarnation
    /// ([`Error::StaleMember`] otherwise).
    pub(crate) fn member(&self, m: Member) -> Result<ProcSlot, Error> {
        self.view.space.member(m)
    }

    /// [`Self::member`] with application word `index` of the member's record, from one
    /// lookup of the record.
    pub(crate) fn member_app_word(
        &self,
        m: Member,
        index: usize,
    ) -> Result<(ProcSlot, &'m AtomicU32), Error> {
        let r = self.view.space.member_record(m)?;
        Ok((r.slot, r.app_word(index)?))
    }

    /// Changes a word of a live structure, journaled.
    pub(crate) fn set(&mut self, word: &AtomicU32, value: u32) -> Result<(), Error> {
        self.tx.set(word, value)
    }

    /// Writes a word of a block this operation allocated (not reachable by anyone else
    /// yet); see [`Tx::set_fresh`].
    pub(crate) fn set_fresh(&mut self, word: &AtomicU32, value: u32) -> Result<(), Error> {
        self.tx.set_fresh(word, value)
    }

    /// The journaled operation itself, for structures that write through it: a queue
    /// formats itself and defers its entries' publication ([`Tx::defer`]) through it.
    pub(crate) fn tx(&mut self) -> &mut Tx<'a, 'm> {
        self.tx
    }

    /// Allocates `bytes` for `owner`: service data from the high end with `service`,
    /// otherwise from the low end like [`Heap::try_alloc`].
    pub(crate) fn alloc(
        &mut self,
        owner: ProcSlot,
        bytes: u32,
        service: bool,
    ) -> Result<Offset, Error> {
        let placement = if service {
            Placement::High
        } else {
            Placement::Low
        };
        self.view.space.alloc(self.tx, owner, bytes, placement)
    }

    /// As [`Heap::alloc_from_reserve`].
    pub(crate) fn alloc_from_reserve(
        &mut self,
        owner: ProcSlot,
        bytes: u32,
    ) -> Result<Offset, Error> {
        self.view.space.alloc_from_reserve(self.tx, owner, bytes)
    }

    /// As [`Heap::free`].
    pub(crate) fn free(&mut self, owner: ProcSlot, block: Offset) -> Result<(), Error> {
        let me = self.view.space.record(owner)?;
        self.view.space.free(self.tx, me, block)
    }

    /// As [`Heap::release`].
    pub(crate) fn release(&mut self, owner: ProcSlot, block: Offset) -> Result<bool, Error> {
        self.view.space.release(self.tx, owner, block)
    }

    /// As [`Heap::give`].
    pub(crate) fn give(
        &mut self,
        from: ProcSlot,
        block: Offset,
        to: ProcSlot,
    ) -> Result<(), Error> {
        let s = self.view.space;
        s.give(self.tx, s.record(from)?, block, s.record(to)?)
    }

    /// As [`Heap::share`].
    pub(crate) fn share(
        &mut self,
        from: ProcSlot,
        block: Offset,
        with: ProcSlot,
    ) -> Result<(), Error> {
        self.view.space.share(self.tx, from, block, with)
    }

    /// Clears `slot`'s application words (the first step of a reclaim, done early).
    pub(crate) fn clear_app_words(&mut self, slot: ProcSlot) -> Result<(), Error> {
        self.view.space.detach(self.tx, slot).map(|_| ())
    }

    /// Allocates the root block (`bytes`, zeroed, owned by no process) and records it in
    /// the header's root word; see [`HeapView::root`]. Fails if there is one already.
    pub(crate) fn alloc_root(&mut self, bytes: u32) -> Result<Offset, Error> {
        self.view.space.alloc_root(self.tx, bytes)
    }
}

impl<'m, P: Platform> Heap<'m, P> {
    /// Checked reads for the layer above (see [`HeapView`]).
    pub(crate) fn view(&self) -> HeapView<'_, 'm> {
        HeapView { space: &self.space }
    }

    /// Runs `f` as one journaled operation of a layer above the heap, recorded under
    /// operation code `code` (at least [`FIRST_CLIENT_OP`]): under the region lock,
    /// committed on success, undone on error, recovered after a crash like the heap's own.
    pub(crate) fn transact<R>(
        &self,
        code: u32,
        f: impl FnOnce(&mut Txn<'_, '_, 'm>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.transact_then(code, f, |_| {})
    }

    /// Like [`transact`](Self::transact); `after` runs once the operation committed and
    /// its deferred store was made, still under the lock (see [`Heap::run`]).
    pub(crate) fn transact_then<R>(
        &self,
        code: u32,
        f: impl FnOnce(&mut Txn<'_, '_, 'm>) -> Result<R, Error>,
        after: impl FnOnce(&R),
    ) -> Result<R, Error> {
        debug_assert!(code >= FIRST_CLIENT_OP);
        self.run(
            code,
            |tx, space| {
                f(&mut Txn {
                    view: HeapView { space },
                    tx,
                })
            },
            after,
        )
    }
}
