//! The membership half of the [`Heap`] facade: registering processes, reclaiming dead
//! ones (and unregistering live ones) step by step, owner-array reserves and application
//! words.

use core::sync::atomic::Ordering::Relaxed;

use crate::error::Error;
use crate::heap::{Heap, OpCode};
use crate::ids::{Incarnation, Member, ProcessId};
use crate::platform::Platform;

impl<'m, P: Platform> Heap<'m, P> {
    /// Registers the calling process (as the platform identifies it) and returns the
    /// member handle to act as it.
    pub fn register(&self) -> Result<Member, Error> {
        self.register_as(self.platform.current_process())
    }

    /// Registers a member whose liveness the platform answers under `id` (firmware tasks,
    /// simulated processes in tests). The member is reclaimed by others once the platform
    /// reports `id` dead.
    pub fn register_as(&self, id: ProcessId) -> Result<Member, Error> {
        if id.pid == 0 {
            return Err(Error::InvalidSize { requested: 0 });
        }
        self.op(OpCode::Register, |tx, s| s.register(tx, id))
    }

    /// Unregisters `process`: everything it owns is released (shared blocks stay alive for
    /// their other owners) and its slot is freed.
    pub fn unregister(&self, me: Member) -> Result<ReclaimReport, Error> {
        self.reclaim_incarnation(me.incarnation(), false)
    }

    /// Returns everything the dead process `process` owned and frees its slot. First its
    /// application words (and, if it is the registered server, the server entry) are
    /// cleared, so nobody finds its participant any more; then blocks it owned alone are
    /// freed, its references to shared blocks are dropped (a block still held by someone
    /// else stays alive), its reserve is freed. Works in steps of one block, each its own
    /// journaled operation, so a crash midway leaves a consistent heap and a later
    /// `reclaim` finishes the job.
    ///
    /// Every step checks under the lock that the slot still holds `process` (a slot that
    /// moved on to a newer process fails with [`Error::StaleMember`] and is not touched),
    /// and the first step that the platform reports the process dead
    /// ([`Error::StillAlive`] otherwise): "cannot tell" is alive.
    pub fn reclaim(&self, process: Incarnation) -> Result<ReclaimReport, Error> {
        self.reclaim_incarnation(process, true)
    }

    /// `reclaim` and `unregister`: the latter acts for the caller itself, alive.
    fn reclaim_incarnation(
        &self,
        process: Incarnation,
        must_be_dead: bool,
    ) -> Result<ReclaimReport, Error> {
        let mut report = ReclaimReport::default();
        let mut cursor = 0u32;
        let mut first = true;
        loop {
            let step = self.op(OpCode::Reclaim, |tx, s| {
                let r = s.leaving_incarnation(process)?;
                if first && must_be_dead {
                    let id = ProcessId {
                        pid: r.rec.pid.load(Relaxed),
                        tag: r.rec.tag.load(Relaxed),
                    };
                    if id.pid != 0 && self.platform.is_alive(id) {
                        return Err(Error::StillAlive { process });
                    }
                }
                s.reclaim_step(tx, process.slot, &mut cursor)
            });
            let step = match step {
                Ok(step) => step,
                // Someone else finished reclaiming it between two of our steps.
                Err(Error::StaleMember { .. }) if !first => break,
                Err(e) => return Err(e),
            };
            first = false;
            match step {
                // Counts for the caller's information: saturating is harmless.
                ReclaimStep::Released { bytes, freed } => {
                    report.references = report.references.saturating_add(1);
                    if freed {
                        report.blocks_freed = report.blocks_freed.saturating_add(1);
                        report.bytes_freed = report.bytes_freed.saturating_add(u64::from(bytes));
                    }
                }
                ReclaimStep::Detached => {}
                ReclaimStep::Done => break,
            }
        }
        self.freed();
        Ok(report)
    }

    /// Reclaims every registered process the platform reports dead (except the caller).
    /// Returns how many were reclaimed. The table is read without the lock; each
    /// reclaim re-checks its incarnation and liveness under it, so a slot that changed
    /// hands meanwhile is left alone.
    pub fn reclaim_dead(&self) -> Result<u32, Error> {
        let me = self.platform.current_process();
        let mut count = 0u32;
        for info in self.processes()? {
            let info = info?;
            if info.id != me && !self.platform.is_alive(info.id) {
                match self.reclaim(info.incarnation()) {
                    Ok(_) => count = count.saturating_add(1), // at most the slots
                    Err(Error::StaleMember { .. } | Error::StillAlive { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(count)
    }

    /// Makes `me`'s owner array hold at least `cells` cells now, so that owning up to that
    /// many blocks never moves it (a move allocates service memory while the lock is held,
    /// and a full heap makes it fail). Returns the capacity.
    pub fn reserve_cells(&self, me: Member, cells: u32) -> Result<u32, Error> {
        self.op(OpCode::Reserve, |tx, s| {
            s.reserve_cells(tx, s.member(me)?, cells)
        })
    }

    /// Stores `value` in application word `index` (0..3) of `process`'s record, a place
    /// for the layer above to find per-process data.
    pub fn set_app_word(&self, me: Member, index: usize, value: u32) -> Result<(), Error> {
        self.op(OpCode::SetApp, |tx, s| {
            let r = s.incarnation(me.incarnation())?;
            let w = r.rec.app.get(index).ok_or(Error::InvalidSize {
                requested: index as u64,
            })?;
            tx.set(w, value)
        })
    }
}

/// What [`Heap::reclaim`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// References dropped (owned blocks, shared references and the reserve).
    pub references: u32,
    /// Blocks freed because the reclaimed process was their last owner.
    pub blocks_freed: u32,
    /// Bytes in those blocks, headers included.
    pub bytes_freed: u64,
}

/// One step of reclaiming a process.
pub(crate) enum ReclaimStep {
    /// Its application words (and server entry) were cleared.
    Detached,
    Released {
        bytes: u32,
        freed: bool,
    },
    Done,
}
