//! The allocation half of the [`Heap`] facade: allocating (at once, blocking, at an
//! offset, from a reserve), freeing, handing blocks over. Each method is one journaled
//! operation on the space (see the `ops` module); blocking allocators wait on the
//! header's free epoch.

use core::sync::atomic::Ordering::SeqCst;
use core::time::Duration;

use crate::error::Error;
use crate::heap::{Heap, OpCode, Placement, Space};
use crate::ids::{Member, ProcSlot};
use crate::offset::Offset;
use crate::os::WaitOutcome;
use crate::platform::Platform;

impl<'m, P: Platform> Heap<'m, P> {
    /// Allocates `size` bytes for `me`: from the front of the smallest free block whose
    /// size class fits (see the `index` module). Fails at once with [`Error::OutOfMemory`] when no
    /// free block is large enough.
    ///
    /// # Errors
    /// - [`Error::OutOfMemory`]: no free block fits now, or `me`'s owner array is full
    ///   and cannot grow.
    /// - [`Error::TooLarge`]: no free block could ever fit `size` in this region.
    /// - [`Error::InvalidSize`]: `size` is 0 or overflows when rounded up.
    /// - [`Error::OwnerTableFull`]: `me` owns [`MAX_CELLS`](crate::format::MAX_CELLS) (16,777,215) blocks.
    ///
    /// Besides these, the failures every operation shares (see [`Error`]).
    pub fn try_alloc(&self, me: Member, size: u32) -> Result<Offset, Error> {
        let r = self.op(OpCode::Alloc, |tx, s| {
            s.alloc_in(tx, s.member_record(me)?, size, Placement::Low)
        });
        self.on_out_of_memory(&r);
        r
    }

    /// Allocates `size` bytes of long-lived service data for `me`, from the high end, so
    /// that it fragments the heap only when the heap is nearly full.
    pub fn try_alloc_service(&self, me: Member, size: u32) -> Result<Offset, Error> {
        let r = self.op(OpCode::Alloc, |tx, s| {
            s.alloc_in(tx, s.member_record(me)?, size, Placement::High)
        });
        self.on_out_of_memory(&r);
        r
    }

    /// After an allocation that found too little memory: asks every process cache to
    /// give its blocks back on its next operation (see [`Cache`](crate::Cache)).
    pub(crate) fn on_out_of_memory<T>(&self, r: &Result<T, Error>) {
        if let Err(Error::OutOfMemory { .. }) = r {
            self.space.hdr.cache_drain.fetch_add(1, SeqCst);
        }
    }

    /// Allocates `size` bytes for `me`, waiting for other processes to free memory when
    /// none fits. Fails with [`Error::TooLarge`] at once if the request can never fit.
    ///
    /// # Errors
    /// As [`try_alloc`](Heap::try_alloc), except that [`Error::OutOfMemory`] makes it
    /// wait instead; [`Error::Timeout`] only when the platform's bounded wait gives up.
    ///
    /// Besides these, the failures every operation shares (see [`Error`]).
    pub fn alloc(&self, me: Member, size: u32) -> Result<Offset, Error> {
        self.alloc_timeout(me, size, None)
    }

    /// Like [`alloc`](Heap::alloc), giving up with [`Error::Timeout`] after `timeout`
    /// (measured with the platform's clock; without one, after the platform's bounded wait).
    pub fn alloc_timeout(
        &self,
        me: Member,
        size: u32,
        timeout: Option<Duration>,
    ) -> Result<Offset, Error> {
        let hdr = self.space.hdr;
        let deadline = timeout.and_then(|t| self.platform.now().and_then(|n| n.checked_add(t)));
        // Whether this call is registered as a waiter (in the header's `waiters` and in its
        // own record's `waiting`, so that a reclaim gives the count back if it dies here).
        // Registration and deregistration both happen under the lock.
        let mut registered = false;
        // Whether this call has asked the process caches to drain (once: every retry
        // asking again would make them give back and refill over and over).
        let mut asked = false;
        loop {
            // On failure the allocator registers as a waiter and reads the epoch inside
            // the failed operation, under the lock: a free that runs after it sees the
            // registration (so frees need no atomic read-modify-write when nobody waits),
            // and one that ran before it left memory this attempt would have found.
            let mut epoch = None;
            let r = self.op(OpCode::Alloc, |tx, s| {
                let mine = s.member_record(me)?;
                let slot = mine.slot;
                if registered {
                    // Moves no record: `mine` stays valid.
                    unregister_waiter(s, slot);
                    registered = false;
                }
                let r = s.alloc_in(tx, mine, size, Placement::Low);
                if let Err(Error::OutOfMemory { .. }) = r {
                    // Process caches give their blocks back on their next operation;
                    // their frees then wake this waiter. Asked before registering, so
                    // whoever sees the registration sees the request too.
                    if !asked {
                        hdr.cache_drain.fetch_add(1, SeqCst);
                        asked = true;
                    }
                    // Not journaled: the registration outlives the operation's undo.
                    hdr.waiters.fetch_add(1, SeqCst);
                    if let Ok(rec) = s.record(slot) {
                        rec.rec.waiting.fetch_add(1, SeqCst);
                    }
                    registered = true;
                    epoch = Some(hdr.free_epoch.load(SeqCst));
                }
                r
            });
            let Some(epoch) = epoch else { return r };
            let remaining = match (timeout, deadline, self.platform.now()) {
                (Some(_), Some(d), Some(now)) => match d.checked_sub(now) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => {
                        // `now >= d`: the deadline has passed.
                        self.stop_waiting(me);
                        return Err(Error::Timeout);
                    }
                },
                (t, _, _) => t,
            };
            let outcome = self.platform.wait(&hdr.free_epoch, epoch, remaining);
            if outcome == WaitOutcome::TimedOut && deadline.is_none() {
                self.stop_waiting(me);
                return Err(Error::Timeout);
            }
        }
    }

    /// Deregisters a waiter of `me` that gives up (under the lock, as it registered).
    fn stop_waiting(&self, me: Member) {
        let _ = self.op(OpCode::Alloc, |_, s| {
            unregister_waiter(s, s.member(me)?);
            Ok(())
        });
    }

    /// Allocates a block for `me` whose payload starts exactly at `offset`, holding at
    /// least `size` bytes. Fails with [`Error::Unavailable`] unless that range lies in one
    /// free block with room for a block header in front of it.
    pub fn alloc_at(&self, me: Member, offset: Offset, size: u32) -> Result<Offset, Error> {
        self.op(OpCode::AllocAt, |tx, s| {
            s.alloc_at(tx, s.member(me)?, offset, size)
        })
    }

    /// Frees a block `me` owns alone.
    ///
    /// # Errors
    /// - [`Error::BadOffset`]: `block` is not the payload offset of a block.
    /// - [`Error::DoubleFree`]: the block is free already.
    /// - [`Error::NotOwner`]: `me` does not own the block.
    /// - [`Error::Shared`]: others co-own it (use [`release`](Heap::release)).
    ///
    /// Besides these, the failures every operation shares (see [`Error`]).
    pub fn free(&self, me: Member, block: Offset) -> Result<(), Error> {
        self.op(OpCode::Free, |tx, s| {
            s.free(tx, s.member_record(me)?, block)
        })?;
        self.freed();
        Ok(())
    }

    /// Sets aside a reserve of `size` bytes for `me`, from the high end, replacing any
    /// reserve `me` had. Returns the reserve's payload offset.
    pub fn reserve(&self, me: Member, size: u32) -> Result<Offset, Error> {
        let r = self.op(OpCode::Reserve, |tx, s| s.reserve(tx, s.member(me)?, size));
        self.freed();
        r
    }

    /// Allocates `size` bytes for `me` out of its reserve. Succeeds whenever the reserve
    /// is large enough, however full the heap is: the block is cut from the front of the
    /// reserve and the rest stays reserved.
    pub fn alloc_from_reserve(&self, me: Member, size: u32) -> Result<Offset, Error> {
        self.op(OpCode::AllocFromReserve, |tx, s| {
            s.alloc_from_reserve(tx, s.member(me)?, size)
        })
    }

    /// Hands `me`'s reference to `block` over to process `to` (how a buffer changes hands
    /// on send). If `block` is shared, only `me`'s reference moves.
    ///
    /// # Errors
    /// - [`Error::BadOffset`], [`Error::DoubleFree`], [`Error::NotOwner`]: as for
    ///   [`free`](Heap::free).
    /// - [`Error::AlreadyOwner`]: `to` co-owns the block already.
    /// - [`Error::OutOfMemory`], [`Error::OwnerTableFull`]: `to`'s owner array has no room.
    /// - [`Error::StaleMember`], [`Error::NotRegistered`]: for `to` as for `me`.
    ///
    /// Besides these, the failures every operation shares (see [`Error`]).
    pub fn give(&self, me: Member, block: Offset, to: Member) -> Result<(), Error> {
        self.op(OpCode::Give, |tx, s| {
            s.give(tx, s.member_record(me)?, block, s.member_record(to)?)
        })
    }

    /// Makes process `with` a co-owner of `block`, which `me` owns or co-owns. The block
    /// is freed when its last owner releases it.
    ///
    /// # Errors
    /// - [`Error::BadOffset`], [`Error::DoubleFree`], [`Error::NotOwner`]: as for
    ///   [`free`](Heap::free).
    /// - [`Error::AlreadyOwner`]: `with` is `me` or co-owns the block already.
    /// - [`Error::OutOfMemory`], [`Error::OwnerTableFull`]: `with`'s owner array has no
    ///   room.
    /// - [`Error::StaleMember`], [`Error::NotRegistered`]: for `with` as for `me`.
    ///
    /// Besides these, the failures every operation shares (see [`Error`]).
    pub fn share(&self, me: Member, block: Offset, with: Member) -> Result<(), Error> {
        self.op(OpCode::Share, |tx, s| {
            s.share(tx, s.member(me)?, block, s.member(with)?)
        })
    }

    /// Drops `me`'s reference to `block`; frees the block if it was the last. Returns
    /// whether the block was freed.
    ///
    /// # Errors
    /// - [`Error::BadOffset`], [`Error::DoubleFree`], [`Error::NotOwner`]: as for
    ///   [`free`](Heap::free).
    ///
    /// Besides these, the failures every operation shares (see [`Error`]).
    pub fn release(&self, me: Member, block: Offset) -> Result<bool, Error> {
        let freed = self.op(OpCode::Release, |tx, s| s.release(tx, s.member(me)?, block))?;
        if freed {
            self.freed();
        }
        Ok(freed)
    }
}

/// Takes one blocked allocation of `slot` off the waiter counts (under the lock). Both
/// counts saturate: a registration lost to an undone owner-array move (the record it was
/// counted in was rolled back) must not wrap them.
fn unregister_waiter(s: &Space<'_>, slot: ProcSlot) {
    let all = &s.hdr.waiters;
    all.store(all.load(SeqCst).saturating_sub(1), SeqCst);
    if let Ok(r) = s.record(slot) {
        let mine = &r.rec.waiting;
        mine.store(mine.load(SeqCst).saturating_sub(1), SeqCst);
    }
}
