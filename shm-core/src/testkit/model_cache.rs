//! [`Runner`]'s process caches: a model process that runs a cache operation gets a
//! [`Cache`](crate::Cache) over its own registration (`Heap::member_cache`, as a host
//! process's buffers use one), kept until the process ends or drops it.
//!
//! A cached block stays owned by its process (one reference, count word 0) but is not a
//! live block of the model: `verify` counts the heap's cached blocks against the caches'
//! own statistics, per process.
//!
//! A crash injected into a cache operation (a refill, a drain, a free that goes to the
//! heap) is the death of its process: the cache's memory dies with it, so the runner
//! forgets the cache and, once the lock is broken, reclaims the process, as the host
//! would a process killed there. A process that ends otherwise loses its cache first,
//! outside the operation: a clean exit (`Reclaim`) and a relocation drain it; a kill
//! (`Kill`) does not (the reclaim frees the cached blocks).

use alloc::collections::BTreeMap;
use alloc::format;

use crate::testkit::instance::{Instance, RunnerCache};
use crate::testkit::model::Runner;
use crate::testkit::ops::Op;
use crate::{CacheConfig, Error, Offset, ProcSlot};

/// The caches' bounds: small, so that classes fill up, frees go past them to the heap
/// and refills carve several runs (the cache also caps its bytes at an eighth of the
/// heap).
const CONFIG: CacheConfig = CacheConfig {
    max_bytes: 4096,
    max_block: 512,
    refill_bytes: 512,
};

impl Runner {
    /// Applies a cache operation; returns true if an injected crash stopped it (its
    /// process then died: see the module documentation).
    pub(super) fn apply_cache(&mut self, op: &Op) -> bool {
        match *op {
            Op::CacheAlloc { who, size } => {
                let Some(me) = self.who(who) else {
                    return false;
                };
                let largest = self.largest_alloc();
                let cells_full = self.cells_full(me);
                let r = self.cache(me).alloc(size);
                if matches!(r, Err(Error::InjectedCrash)) {
                    return self.cache_died(me);
                }
                if r.is_ok() {
                    self.stats.ok += 1;
                    self.stats.cache_allocs += 1;
                }
                // The call only gives memory back (a drain) before it tries the heap for
                // the exact size: what was free before bounds it as for a plain one.
                self.expect_alloc("cache alloc", me, size, (largest, cells_full), r);
            }
            Op::CacheFree {
                who,
                pick,
                by_owner,
            } => {
                let Some(p) = self.pick(pick) else {
                    return false;
                };
                let Some(me) = self.actor(who, p, by_owner) else {
                    return false;
                };
                let (owners, service) = {
                    let b = &self.model.blocks[&p];
                    (b.owners.clone(), b.service)
                };
                // The owner chain's head (`verify` checks the set of owners, not its order).
                let head = match self.heap().owner_of(Offset::new(p)) {
                    Ok(h) => h,
                    Err(e) => self.fail(&format!("owner of {p:#x}: {e}")),
                };
                let cached_before = self.cache(me).stats().blocks;
                let r = self.cache(me).free(Offset::new(p));
                if matches!(r, Err(Error::InjectedCrash)) {
                    return self.cache_died(me);
                }
                let sole = owners.len() == 1 && owners.contains(&me.0);
                let heads = head == Some(me);
                match r {
                    Ok(()) if sole && !service => {
                        self.stats.ok += 1;
                        self.stats.cache_frees += 1;
                        if self.cache(me).stats().blocks > cached_before {
                            self.stats.cached_frees += 1;
                        }
                        self.drop_owner(p, me);
                    }
                    Err(Error::BadOffset { .. }) if heads && service => {}
                    Err(Error::Shared { .. }) if heads && !sole && !service => {}
                    Err(Error::NotOwner { .. }) if !heads => {}
                    r => self.fail(&format!(
                        "cache free {p:#x} by {me} (owners {owners:?}, head {head:?}, \
                         service {service}): {r:?}"
                    )),
                }
            }
            Op::CacheDrain { who, and_drop } => {
                let Some(me) = self.who(who) else {
                    return false;
                };
                let Some(cache) = self.inst_mut().existing_cache(me.0) else {
                    return false;
                };
                match cache.drain() {
                    Ok(()) => {
                        self.stats.ok += 1;
                        self.stats.cache_drains += 1;
                        if and_drop {
                            // Empty now: removing it gives nothing back.
                            self.inst_mut().forget_cache(me.0);
                        }
                    }
                    Err(Error::InjectedCrash) => return self.cache_died(me),
                    Err(e) => self.fail(&format!("cache drain by {me}: {e}")),
                }
            }
            _ => self.fail(&format!("not a cache operation: {op:?}")),
        }
        false
    }

    /// Before `op` (and before its armed crash): ends the caches it ends (see the module
    /// documentation).
    pub(super) fn end_caches_for(&mut self, op: &Op) {
        match *op {
            Op::Reclaim { who } => {
                if let Some(slot) = self.who(who) {
                    self.drain_cache(slot);
                }
            }
            Op::Kill { who } => {
                if let Some(slot) = self.who(who) {
                    self.inst_mut().forget_cache(slot.0);
                }
            }
            Op::Relocate => {
                for s in self.inst_mut().cache_slots() {
                    self.drain_cache(ProcSlot(s));
                }
            }
            _ => {}
        }
    }

    /// Blocks cached now, per process (from the caches' own statistics).
    pub(super) fn cached_blocks(&self) -> BTreeMap<u16, u32> {
        match &self.inst {
            Some(i) => i.cached_blocks(),
            None => BTreeMap::new(),
        }
    }

    /// After a crash in a cache operation and the lock broken: `slot`'s process is dead;
    /// reclaims it (with its cached blocks), as `Kill` does.
    pub(super) fn reclaim_dead_process(&mut self, slot: ProcSlot) {
        let pid = match self.model.procs.get(&slot.0) {
            Some(p) => p.pid,
            None => self.fail(&format!("no process {slot} to reclaim")),
        };
        self.platform.kill(pid);
        match self.heap().reclaim_dead() {
            Ok(1) => {
                self.model_reclaim(slot);
                self.stats.cache_deaths += 1;
            }
            r => self.fail(&format!(
                "reclaim_dead after a crash in {slot}'s cache: {r:?}"
            )),
        }
    }

    /// Marks the live block `p` as service data.
    pub(super) fn mark_service(&mut self, p: u32) {
        if let Some(b) = self.model.blocks.get_mut(&p) {
            b.service = true;
        }
    }

    /// `slot`'s cache, made now if it has none.
    fn cache(&mut self, slot: ProcSlot) -> &mut RunnerCache {
        let member = self.m(slot);
        // SAFETY: `member_cache`'s contract holds for the runner:
        // - one thread acts on one block at a time, so no operation of `member` runs
        //   while the cache acts;
        // - a co-owner's release or give of a block commits within its own step, or its
        //   crash is undone (the lock broken) before the next step, and a killed
        //   co-owner's reclaim is finished in its step: so a block freed into the cache
        //   is never one a co-owner may still give back, though it may have had other
        //   owners before;
        // - the cache is removed before `member` unregisters (`end_caches_for`), and
        //   forgotten when the process is killed or dies in a cache operation.
        let made = unsafe { self.inst_mut().cache(slot.0, member, CONFIG) };
        match made {
            Ok(c) => c,
            // The configuration fits every heap shape the decoder makes.
            Err(e) => panic!("cache for {slot}: {e}"),
        }
    }

    fn inst_mut(&mut self) -> &mut Instance {
        match self.inst.as_mut() {
            Some(i) => i,
            None => panic!("runner has no heap"),
        }
    }

    /// Drains and removes `slot`'s cache, if it has one.
    fn drain_cache(&mut self, slot: ProcSlot) {
        if let Err(e) = self.inst_mut().drain_cache(slot.0) {
            self.fail(&format!("draining {slot}'s cache: {e}"));
        }
    }

    /// An injected crash stopped a cache operation of `slot`'s process: the process is
    /// dead, its cache forgotten; `recover_crash` reclaims it once the lock is broken.
    fn cache_died(&mut self, slot: ProcSlot) -> bool {
        self.inst_mut().forget_cache(slot.0);
        self.died_in_cache = Some(slot);
        true
    }
}
