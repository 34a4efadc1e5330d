//! [`Runner`]'s interpreter: one decoded operation applied to the heap and to the reference
//! model side by side, with the results each may give. Kept apart from the runner's
//! bookkeeping and verification in [`model`](super::model) because it is one long match.

use alloc::format;

use crate::format::{record_bytes, INITIAL_CELLS};
use crate::testkit::model::{ProcModel, RunStats, Runner};
use crate::testkit::ops::Op;
use crate::{Error, Offset, ProcessId};

impl Runner {
    /// Applies `op`; returns true if an injected crash stopped it.
    pub(super) fn apply(&mut self, op: &Op) -> bool {
        macro_rules! crash_or {
            ($r:expr) => {
                match $r {
                    Err(Error::InjectedCrash) => return true,
                    r => r,
                }
            };
        }
        let counted_ok = |r: bool, s: &mut RunStats| {
            if r {
                s.ok += 1
            }
        };
        match *op {
            Op::Register => {
                let largest = self.largest_alloc();
                let Some(pid) = self.next_pid() else {
                    return false;
                };
                let r = crash_or!(self.heap().register_as(ProcessId::from_pid(pid)));
                counted_ok(r.is_ok(), &mut self.stats);
                let full = self.model.procs.len() >= usize::from(self.setup.max_processes);
                match r {
                    Ok(member) if !full && !self.model.procs.contains_key(&member.slot().0) => {
                        self.model.procs.insert(
                            member.slot().0,
                            ProcModel {
                                pid,
                                member,
                                reserve: None,
                            },
                        );
                    }
                    Err(Error::TooManyProcesses { .. }) if full => {}
                    Err(Error::OutOfMemory { .. }) if largest < record_bytes(INITIAL_CELLS) => {
                        self.stats.out_of_memory += 1
                    }
                    r => self.fail(&format!("register: {r:?} (full: {full})")),
                }
            }
            Op::Alloc { who, size } | Op::AllocService { who, size } => {
                let Some(me) = self.who(who) else {
                    return false;
                };
                let largest = self.largest_alloc();
                let cells_full = self.cells_full(me);
                let r = crash_or!(if matches!(op, Op::Alloc { .. }) {
                    self.heap().try_alloc(self.m(me), size)
                } else {
                    self.heap().try_alloc_service(self.m(me), size)
                });
                counted_ok(r.is_ok(), &mut self.stats);
                let made = self.expect_alloc("alloc", me, size, (largest, cells_full), r);
                if let (Some(p), Op::AllocService { .. }) = (made, op) {
                    self.mark_service(p);
                }
            }
            Op::AllocAt {
                who,
                pick,
                from_freed,
                size,
            } => {
                let Some(me) = self.who(who) else {
                    return false;
                };
                let target = if from_freed && !self.model.freed.is_empty() {
                    self.model.freed[usize::from(pick) % self.model.freed.len()]
                } else {
                    match self.pick(pick) {
                        Some(p) => p,
                        None => return false,
                    }
                };
                let live = self.model.blocks.contains_key(&target);
                let cells_full = self.cells_full(me);
                let r = crash_or!(self.heap().alloc_at(self.m(me), Offset::new(target), size));
                counted_ok(r.is_ok(), &mut self.stats);
                self.expect_size_errors(size, &r);
                match r {
                    Ok(p) if !live && p.get() == target => {
                        self.check_no_overlap(p.get());
                        self.new_block(p.get(), size, me);
                    }
                    Err(Error::Unavailable { .. }) => {}
                    Err(Error::OutOfMemory { .. }) if cells_full => {}
                    Err(e) if self.size_error(size, e) => {}
                    r => self.fail(&format!("alloc_at {target:#x} (live {live}): {r:?}")),
                }
            }
            Op::Free {
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
                let owners = self.model.blocks[&p].owners.clone();
                let r = crash_or!(self.heap().free(self.m(me), Offset::new(p)));
                counted_ok(r.is_ok(), &mut self.stats);
                let kept = owners.is_empty();
                let sole = owners.len() == 1 && owners.contains(&me.0);
                match r {
                    Ok(()) if sole => {
                        self.drop_owner(p, me);
                    }
                    Err(Error::Shared { .. }) if owners.contains(&me.0) && !sole => {}
                    Err(Error::NotOwner { .. }) if !owners.contains(&me.0) && !kept => {}
                    Err(Error::Kept { .. }) if kept => {}
                    r => self.fail(&format!("free {p:#x} by {me} (owners {owners:?}): {r:?}")),
                }
            }
            Op::FreeBad { who, pick, inside } => {
                let Some(me) = self.who(who) else {
                    return false;
                };
                let target = if inside == 0 && !self.model.freed.is_empty() {
                    self.model.freed[usize::from(pick) % self.model.freed.len()]
                } else {
                    match self.pick(pick) {
                        Some(p) => p + 16 * (1 + u32::from(inside % 4)),
                        None => return false,
                    }
                };
                if self.model.blocks.contains_key(&target) {
                    return false;
                }
                let r = crash_or!(self.heap().free(self.m(me), Offset::new(target)));
                match r {
                    Err(Error::BadOffset { .. }) | Err(Error::DoubleFree { .. }) => {}
                    r => self.fail(&format!("free of non-block {target:#x}: {r:?}")),
                }
            }
            Op::Reserve { who, size } => {
                let Some(me) = self.who(who) else {
                    return false;
                };
                let largest = self.largest_alloc();
                let old = self.model.procs[&me.0].reserve;
                let cells_full = self.cells_full(me);
                let r = crash_or!(self.heap().reserve(self.m(me), size));
                counted_ok(r.is_ok(), &mut self.stats);
                self.expect_size_errors(size, &r);
                match r {
                    Ok(p) => {
                        if let Some(o) = old {
                            self.drop_owner(o, me);
                        }
                        self.new_block(p.get(), size.min(4096), me);
                        self.mark_service(p.get());
                        if let Some(pm) = self.model.procs.get_mut(&me.0) {
                            pm.reserve = Some(p.get());
                        }
                    }
                    Err(Error::OutOfMemory { .. })
                        if largest < size || (old.is_none() && cells_full) =>
                    {
                        self.stats.out_of_memory += 1
                    }
                    Err(e) if self.size_error(size, e) => {}
                    r => self.fail(&format!("reserve {size} (largest {largest}): {r:?}")),
                }
            }
            Op::AllocFromReserve { who, size } => {
                let Some(me) = self.who(who) else {
                    return false;
                };
                let reserve = self.model.procs[&me.0].reserve;
                let r = crash_or!(self.heap().alloc_from_reserve(self.m(me), size));
                counted_ok(r.is_ok(), &mut self.stats);
                let size_ok = self.heap().block_size_for(size).is_ok();
                let Some(res) = reserve else {
                    match r {
                        Err(Error::ReserveTooSmall { available: 0, .. }) if size_ok => {}
                        Err(Error::InvalidSize { .. }) if !size_ok => {}
                        r => self.fail(&format!("alloc_from_reserve without reserve: {r:?}")),
                    }
                    return false;
                };
                match r {
                    Ok(p) if p.get() == res => {
                        let fill = self.fill_byte();
                        self.write_fill(res, size, fill);
                        if let Some(b) = self.model.blocks.get_mut(&res) {
                            b.len = size;
                            b.fill = fill;
                        }
                        let now = match self.heap().process(me) {
                            Ok(i) => i.reserve,
                            Err(e) => self.fail(&format!("process after reserve alloc: {e}")),
                        };
                        if let Some(pm) = self.model.procs.get_mut(&me.0) {
                            pm.reserve = None;
                        }
                        if now != 0 {
                            let len = match self.heap().block_len(Offset::new(now)) {
                                Ok(l) => l.min(4096),
                                Err(e) => self.fail(&format!("new reserve {now:#x}: {e}")),
                            };
                            self.new_block(now, len, me);
                            self.mark_service(now);
                            if let Some(pm) = self.model.procs.get_mut(&me.0) {
                                pm.reserve = Some(now);
                            }
                        }
                    }
                    Err(Error::ReserveTooSmall { .. }) => {
                        let fits = match (
                            self.heap().block_size_for(size),
                            self.heap().block_len(Offset::new(res)),
                        ) {
                            (Ok(need), Ok(len)) => need <= len + self.heap().block_header_size(),
                            _ => false,
                        };
                        if fits {
                            self.fail(&format!("reserve refused {size} bytes it holds"));
                        }
                    }
                    // Zero, or a size whose block length overflows: refused before the
                    // reserve is looked at, whatever it holds.
                    Err(Error::InvalidSize { .. }) if !size_ok => {}
                    r => self.fail(&format!("alloc_from_reserve {size}: {r:?}")),
                }
            }
            Op::Give {
                who,
                pick,
                to,
                by_owner,
            } => {
                let Some(p) = self.pick(pick) else {
                    return false;
                };
                let (Some(me), Some(to)) = (self.actor(who, p, by_owner), self.who(to)) else {
                    return false;
                };
                let owners = self.model.blocks[&p].owners.clone();
                let to_full = self.cells_full(to);
                let r = crash_or!(self.heap().give(self.m(me), Offset::new(p), self.m(to)));
                counted_ok(r.is_ok(), &mut self.stats);
                let mine = owners.contains(&me.0);
                match r {
                    Ok(()) if mine && to == me => {}
                    Ok(()) if mine && !owners.contains(&to.0) => {
                        if let Some(b) = self.model.blocks.get_mut(&p) {
                            b.owners.insert(to.0);
                        }
                        self.drop_owner(p, me);
                    }
                    Err(Error::NotOwner { .. }) if !mine && !owners.is_empty() => {}
                    Err(Error::Kept { .. }) if owners.is_empty() => {}
                    Err(Error::AlreadyOwner { .. }) if owners.contains(&to.0) && to != me => {}
                    Err(Error::OutOfMemory { .. }) if to_full => {}
                    r => self.fail(&format!(
                        "give {p:#x} {me}->{to} (owners {owners:?}): {r:?}"
                    )),
                }
            }
            Op::Share {
                who,
                pick,
                with,
                by_owner,
            } => {
                let Some(p) = self.pick(pick) else {
                    return false;
                };
                let (Some(me), Some(with)) = (self.actor(who, p, by_owner), self.who(with)) else {
                    return false;
                };
                let owners = self.model.blocks[&p].owners.clone();
                let with_full = self.cells_full(with);
                let r = crash_or!(self.heap().share(self.m(me), Offset::new(p), self.m(with)));
                counted_ok(r.is_ok(), &mut self.stats);
                let mine = owners.contains(&me.0);
                match r {
                    Ok(()) if mine && !owners.contains(&with.0) => {
                        if let Some(pm) = self.model.procs.get_mut(&me.0) {
                            if pm.reserve == Some(p) {
                                pm.reserve = None;
                            }
                        }
                        if let Some(b) = self.model.blocks.get_mut(&p) {
                            b.owners.insert(with.0);
                        }
                    }
                    Err(Error::AlreadyOwner { .. }) if with == me || owners.contains(&with.0) => {}
                    Err(Error::NotOwner { .. }) if !mine && !owners.is_empty() => {}
                    Err(Error::Kept { .. }) if owners.is_empty() => {}
                    Err(Error::OutOfMemory { .. }) if with_full => {}
                    r => self.fail(&format!(
                        "share {p:#x} {me}+{with} (owners {owners:?}): {r:?}"
                    )),
                }
            }
            Op::Release {
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
                let owners = self.model.blocks[&p].owners.clone();
                let r = crash_or!(self.heap().release(self.m(me), Offset::new(p)));
                counted_ok(r.is_ok(), &mut self.stats);
                match r {
                    Ok(freed) if owners.contains(&me.0) && freed == (owners.len() == 1) => {
                        self.drop_owner(p, me);
                    }
                    Err(Error::NotOwner { .. })
                        if !owners.contains(&me.0) && !owners.is_empty() => {}
                    Err(Error::Kept { .. }) if owners.is_empty() => {}
                    r => self.fail(&format!(
                        "release {p:#x} by {me} (owners {owners:?}): {r:?}"
                    )),
                }
            }
            Op::Reclaim { who } => {
                let Some(me) = self.who(who) else {
                    return false;
                };
                let r = crash_or!(self.heap().unregister(self.m(me)));
                counted_ok(r.is_ok(), &mut self.stats);
                match r {
                    Ok(rep) => {
                        let (refs, freed) = self.model_reclaim(me);
                        if rep.references != refs || rep.blocks_freed != freed {
                            self.fail(&format!(
                                "reclaim {me}: {rep:?}, model dropped {refs} refs, freed {freed}"
                            ));
                        }
                    }
                    Err(e) => self.fail(&format!("reclaim {me}: {e}")),
                }
            }
            Op::Kill { who } => {
                let Some(me) = self.who(who) else {
                    return false;
                };
                let pid = self.model.procs[&me.0].pid;
                self.platform.kill(pid);
                let r = crash_or!(self.heap().reclaim_dead());
                counted_ok(r.is_ok(), &mut self.stats);
                match r {
                    Ok(1) => {
                        self.model_reclaim(me);
                    }
                    r => self.fail(&format!("reclaim_dead after killing {me}: {r:?}")),
                }
            }
            Op::Write { pick } => {
                let Some(p) = self.pick(pick) else {
                    return false;
                };
                let fill = self.fill_byte();
                let len = self.model.blocks[&p].len;
                self.write_fill(p, len, fill);
                if let Some(b) = self.model.blocks.get_mut(&p) {
                    b.fill = fill;
                }
            }
            Op::Relocate => {
                if let Some(inst) = self.inst.take() {
                    self.inst = Some(inst.relocate(&self.setup, &self.platform));
                    self.stats.relocations += 1;
                }
            }
            Op::Crash { .. } => {}
            Op::CacheAlloc { .. } | Op::CacheFree { .. } | Op::CacheDrain { .. } => {
                return self.apply_cache(op);
            }
            Op::Keep {
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
                let owners = self.model.blocks[&p].owners.clone();
                let r = crash_or!(self.heap().keep(self.m(me), Offset::new(p)));
                counted_ok(r.is_ok(), &mut self.stats);
                let sole = owners.len() == 1 && owners.contains(&me.0);
                match r {
                    Ok(()) if sole => {
                        self.stats.keeps += 1;
                        if let Some(pm) = self.model.procs.get_mut(&me.0) {
                            if pm.reserve == Some(p) {
                                pm.reserve = None;
                            }
                        }
                        if let Some(b) = self.model.blocks.get_mut(&p) {
                            b.owners.clear();
                        }
                    }
                    Err(Error::Kept { .. }) if owners.is_empty() => {}
                    Err(Error::Shared { .. }) if owners.contains(&me.0) && !sole => {}
                    Err(Error::NotOwner { .. })
                        if !owners.is_empty() && !owners.contains(&me.0) => {}
                    r => self.fail(&format!("keep {p:#x} by {me} (owners {owners:?}): {r:?}")),
                }
            }
            Op::Take { who, pick } => {
                // Mostly a kept block (so kept blocks do not pile up), sometimes any.
                let kept_blocks: alloc::vec::Vec<u32> = self
                    .model
                    .blocks
                    .iter()
                    .filter(|(_, b)| b.owners.is_empty())
                    .map(|(&p, _)| p)
                    .collect();
                let p = match kept_blocks.len() {
                    n if n > 0 && pick % 4 != 0 => kept_blocks[usize::from(pick) % n],
                    _ => match self.pick(pick) {
                        Some(p) => p,
                        None => return false,
                    },
                };
                let Some(me) = self.who(who) else {
                    return false;
                };
                let kept = self.model.blocks[&p].owners.is_empty();
                let cells_full = self.cells_full(me);
                let r = crash_or!(self.heap().take(self.m(me), Offset::new(p)));
                counted_ok(r.is_ok(), &mut self.stats);
                match r {
                    Ok(()) if kept => {
                        self.stats.takes += 1;
                        if let Some(b) = self.model.blocks.get_mut(&p) {
                            b.owners.insert(me.0);
                        }
                        if self.model.kept_root == Some(p) {
                            self.model.kept_root = None;
                        }
                    }
                    Err(Error::NotKept { .. }) if !kept => {}
                    Err(Error::OutOfMemory { .. }) if kept && cells_full => {}
                    r => self.fail(&format!("take {p:#x} by {me} (kept {kept}): {r:?}")),
                }
            }
            Op::SetRoot { who, pick, clear } => {
                let Some(me) = self.who(who) else {
                    return false;
                };
                let target = if clear { None } else { self.pick(pick) };
                let kept = target.is_none_or(|p| self.model.blocks[&p].owners.is_empty());
                let r = crash_or!(self
                    .heap()
                    .set_kept_root(self.m(me), target.map(Offset::new)));
                counted_ok(r.is_ok(), &mut self.stats);
                match r {
                    Ok(()) if kept => self.model.kept_root = target,
                    Err(Error::NotKept { .. }) if !kept => {}
                    r => self.fail(&format!("set_kept_root {target:?} by {me}: {r:?}")),
                }
            }
        }
        false
    }
}
