//! The protocol runner's driver: the simulated processes, the blocks they hold and the
//! messages in flight, and what each [`POp`] does to them and must give back. The
//! scenarios that build a driver are in [`protocol_ops`](super::protocol_ops).
//!
//! Slightly over 500 lines: the operations, the driver's state and what each operation
//! must do to it are one thing, read together.

use alloc::vec::Vec;

use crate::format::{KIND_CLIENT, KIND_SERVER};
use crate::testkit::TestPlatform;
use crate::{
    Control, Error, Heap, Incarnation, Member, Offset, ParticipantId, ProcessId, Received, SendMode,
};

/// One protocol step. `who`, `to` choose a known process (modulo their number), `pick` a
/// known block (modulo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are described above, once for all variants
pub enum POp {
    /// Register a new process.
    Register,
    /// `create_participant` (server or client kind, queue of `2 << (cap % 4)` slots).
    Participant { who: u8, server: bool, cap: u8 },
    /// `start_server` with `who`'s participant.
    StartServer { who: u8 },
    /// `stop_server`.
    StopServer { who: u8 },
    /// `connect` `who`'s participant.
    Connect { who: u8 },
    /// The server takes one entry from its queue and accepts it if it is a `Connect`.
    Accept { who: u8 },
    /// `try_alloc`.
    Alloc { who: u8, size: u16 },
    /// `reserve`.
    Reserve { who: u8, size: u16 },
    /// `send` a known block from `who` to `to`'s participant.
    Send {
        who: u8,
        to: u8,
        pick: u8,
        share: bool,
        tag: u8,
    },
    /// `recv` one entry from `who`'s participant; a message's block is released unless
    /// `keep`.
    Recv { who: u8, keep: bool },
    /// `send_control` from `who` to `to`'s participant.
    Control { who: u8, to: u8, which: u8 },
    /// The server beats for `to`'s participant.
    Heartbeat { to: u8 },
    /// `take_keepalive`.
    TakeKeepalive { who: u8 },
    /// `destroy_participant` of `who`'s participant.
    Destroy { who: u8 },
    /// `release` a known block.
    Release { who: u8, pick: u8 },
    /// Declare `who` dead, then `reclaim_dead`.
    Kill { who: u8 },
    /// `unregister`.
    Unregister { who: u8 },
    /// The next operation crashes at this journal step (1-based).
    Crash { steps: u16 },
}

/// A process the driver knows.
#[derive(Clone, Copy, Debug)]
pub(super) struct Proc {
    pub(super) member: Member,
    pub(super) pid: u32,
    pub(super) participant: Option<Offset>,
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtoStats {
    /// Operations run.
    pub ops: u32,
    /// Operations that succeeded.
    pub ok: u32,
    /// Messages received (entries that were not control entries).
    pub messages: u32,
    /// Clients accepted.
    pub accepted: u32,
    /// Keepalives taken.
    pub keepalives: u32,
    /// Injected crashes that fired.
    pub crashes: u32,
    /// Processes reclaimed.
    pub reclaimed: u32,
}

/// Pids of the driving "process"; it becomes a new one after each injected crash.
pub(super) const ACTOR_PIDS: (u32, u32) = (1, 999);
/// Pids of registered processes.
pub(super) const MEMBER_PIDS: (u32, u32) = (1000, 4095);

pub(super) struct Driver<'h> {
    pub(super) heap: &'h Heap<'h, TestPlatform>,
    pub(super) platform: TestPlatform,
    /// Whether the region is well-formed (strict checks) or hostile (must only return).
    pub(super) strict: bool,
    pub(super) procs: Vec<Proc>,
    /// Blocks the processes got (allocated or received), each with the incarnation that
    /// got it. Well-formed runs act only on blocks the acting process still holds, as a
    /// program does; hostile runs pick any of them, stale or not.
    pub(super) blocks: Vec<(Incarnation, Offset)>,
    /// Messages sent and not yet taken, with their receivers: the receiver must own the
    /// block when it takes the entry, unless it dropped it meanwhile (then the pair is
    /// forgotten).
    pub(super) in_flight: Vec<(Incarnation, Offset)>,
    pub(super) next_pid: u32,
    pub(super) armed: bool,
    pub(super) stats: ProtoStats,
}

impl Driver<'_> {
    pub(super) fn proc(&self, w: u8) -> Option<Proc> {
        let n = self.procs.len();
        (n > 0).then(|| self.procs[usize::from(w) % n])
    }

    /// A block for `holder` to act on, chosen by `p`: well-formed, one it holds (`None`
    /// when it holds none: a program does not reuse an offset it let go of, which may name
    /// another of its blocks by now, such as its participant or a keepalive packet);
    /// hostile, any known block, now and then an arbitrary offset.
    pub(super) fn block(&self, p: u8, w: u8, holder: Incarnation) -> Option<Offset> {
        if self.strict {
            let held = || self.blocks.iter().filter(|(h, _)| *h == holder);
            let n = held().count();
            return held().nth(usize::from(p) % n.max(1)).map(|&(_, b)| b);
        }
        let n = self.blocks.len();
        if n == 0 || p & 7 == 7 {
            Some(Offset::new(u32::from(p) * 64 + u32::from(w) * 16))
        } else {
            Some(self.blocks[usize::from(p) % n].1)
        }
    }

    /// `holder` got block `b` (allocated or received).
    pub(super) fn keep_block(&mut self, holder: Member, b: Offset) {
        if self.blocks.len() >= 64 {
            self.blocks.remove(0);
        }
        self.blocks.push((holder.incarnation(), b));
    }

    /// `holder` no longer holds `b` (released it or gave it away): it is no longer one of
    /// its blocks, and (see [`Self::dropped`]) a message about `b` waiting in its queue no
    /// longer implies ownership.
    pub(super) fn let_go(&mut self, holder: Member, b: Offset) {
        self.dropped(holder, b);
        let inc = holder.incarnation();
        self.blocks.retain(|&(h, x)| !(h == inc && x == b));
    }

    /// Where a send to `to` goes: its participant, or (hostile) an offset from the bytes.
    pub(super) fn target(&self, to: u8, extra: u8) -> Option<ParticipantId> {
        let p = self.proc(to)?;
        let at = match p.participant {
            Some(at) => at,
            None if !self.strict => Offset::new(u32::from(extra) * 16),
            None => self
                .procs
                .iter()
                .find_map(|q| q.participant)
                .unwrap_or(Offset::new(0)),
        };
        Some(ParticipantId {
            at,
            owner: p.member.incarnation(),
        })
    }

    pub(super) fn server(&self) -> Option<Proc> {
        let st = self.heap.server_status();
        self.procs
            .iter()
            .copied()
            .find(|p| st.running && p.member.incarnation() == st.owner)
    }

    /// Judges one result: in the well-formed scenario corruption, a full journal or an
    /// unexpected injected crash fail the run.
    pub(super) fn judge<T>(&mut self, what: &POp, r: &Result<T, Error>) {
        match r {
            Ok(_) => self.stats.ok += 1,
            Err(e) if self.strict => match e {
                Error::Corrupted(_) | Error::JournalFull => {
                    panic!("{what:?} on a well-formed region: {e}")
                }
                Error::InjectedCrash if !self.armed => {
                    panic!("{what:?}: injected crash while none was armed")
                }
                _ => {}
            },
            Err(_) => {}
        }
    }

    pub(super) fn step(&mut self, op: POp) {
        self.stats.ops += 1;
        if let POp::Crash { steps } = op {
            if self.platform.pid() < ACTOR_PIDS.1 {
                self.heap.faults().arm(u32::from(steps));
                self.armed = true;
            }
            return;
        }
        let crashed = self.apply(op);
        let fired = self.armed && !self.heap.faults().armed();
        self.heap.faults().arm(0);
        if self.strict && crashed != fired {
            panic!("{op:?}: crash fired {fired}, InjectedCrash returned {crashed}");
        }
        self.armed = false;
        if fired {
            self.stats.crashes += 1;
            // The actor died holding the lock; the next process recovers.
            let dead = self.platform.pid();
            self.platform.kill(dead);
            self.platform.set_pid(dead + 1);
        }
        if self.strict {
            if let Err(e) = self.heap.check() {
                panic!("check after {op:?} (crashed: {fired}): {e}");
            }
        } else if self.stats.ops % 16 == 0 {
            // Hostile: the walk is the slow part; now and then is enough to exercise it.
            let _ = self.heap.check();
        }
        // Forget processes whose registration ended (reclaimed, unregistered). Hostile
        // runs keep acting as every forged member, stale or not.
        if self.strict {
            let heap = self.heap;
            self.procs.retain(|p| {
                heap.process(p.member.slot())
                    .is_ok_and(|i| i.incarnation() == p.member.incarnation())
            });
        }
    }

    /// Runs one operation; returns whether it reported an injected crash.
    pub(super) fn apply(&mut self, op: POp) -> bool {
        let heap = self.heap;
        macro_rules! judged {
            ($r:expr) => {{
                let r = $r;
                self.judge(&op, &r);
                if matches!(r, Err(Error::InjectedCrash)) {
                    return true;
                }
                r
            }};
        }
        match op {
            POp::Register => {
                if self.next_pid > MEMBER_PIDS.1 {
                    return false;
                }
                let pid = self.next_pid;
                self.next_pid += 1;
                if let Ok(member) = judged!(heap.register_as(ProcessId::from_pid(pid))) {
                    self.procs.push(Proc {
                        member,
                        pid,
                        participant: None,
                    });
                }
            }
            POp::Participant { who, server, cap } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                let kind = if server { KIND_SERVER } else { KIND_CLIENT };
                let r = judged!(heap.create_participant(p.member, kind, 2 << (cap % 4)));
                if let Ok(part) = r {
                    self.set_participant(p.member, Some(part.at));
                }
            }
            POp::StartServer { who } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                let at = p.participant.unwrap_or(Offset::new(u32::from(who) * 16));
                let _ = judged!(heap.start_server(p.member, at, 100, 3));
            }
            POp::StopServer { who } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                let _ = judged!(heap.stop_server(p.member));
            }
            POp::Connect { who } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                let at = match p.participant {
                    Some(at) => at,
                    None if self.strict || who & 1 == 0 => {
                        let r = judged!(heap.create_participant(p.member, KIND_CLIENT, 4));
                        match r {
                            Ok(part) => {
                                self.set_participant(p.member, Some(part.at));
                                part.at
                            }
                            Err(_) => return false,
                        }
                    }
                    None => Offset::new(u32::from(who) * 16),
                };
                let _ = judged!(heap.connect(p.member, at, |_| {}));
            }
            POp::Accept { who } => {
                let s = match self.server() {
                    Some(s) if self.strict || who & 1 == 0 => s,
                    _ => match self.proc(who) {
                        Some(p) => p,
                        None => return false,
                    },
                };
                let at = s.participant.unwrap_or(heap.server_status().participant);
                let Ok(sp) = heap.participant(at) else {
                    return false;
                };
                if sp.owner != s.member.incarnation() {
                    return false;
                }
                // Up to the first `Connect` waiting (messages before it are taken too).
                for _ in 0..sp.queue.capacity() {
                    match heap.recv(&sp) {
                        Ok(Some(Received::Control {
                            control: Control::Connect,
                            participant,
                        })) => {
                            if judged!(heap.accept(s.member, participant, |_| {})).is_ok() {
                                self.stats.accepted += 1;
                            }
                            break;
                        }
                        Ok(Some(Received::Message { block, .. })) => self.received(s, block),
                        Ok(Some(_)) => {}
                        r => {
                            self.judge(&op, &r);
                            break;
                        }
                    }
                }
            }
            POp::Alloc { who, size } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                if let Ok(b) = judged!(heap.try_alloc(p.member, u32::from(size))) {
                    self.keep_block(p.member, b);
                }
            }
            POp::Reserve { who, size } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                let _ = judged!(heap.reserve(p.member, u32::from(size)));
            }
            POp::Send {
                who,
                to,
                pick,
                share,
                tag,
            } => {
                let (Some(p), Some(to)) = (self.proc(who), self.target(to, pick)) else {
                    return false;
                };
                let b = if pick & 1 == 0 {
                    match judged!(heap.try_alloc(p.member, 16 + u32::from(tag))) {
                        Ok(b) => b,
                        Err(_) => return false,
                    }
                } else {
                    match self.block(pick >> 1, who, p.member.incarnation()) {
                        Some(b) => b,
                        None => return false,
                    }
                };
                let mode = if share {
                    SendMode::Share
                } else {
                    SendMode::Give
                };
                let r = judged!(heap.send(p.member, to, b, u32::from(tag), mode, |_| {}));
                if r.is_ok() {
                    // Shared, the block stays one of the sender's too.
                    if share {
                        self.dropped(p.member, b);
                    } else {
                        self.let_go(p.member, b);
                    }
                    if self.in_flight.len() < 256 {
                        self.in_flight.push((to.owner, b));
                    }
                }
            }
            POp::Recv { who, keep } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                let Some(at) = p.participant else {
                    return false;
                };
                let Ok(part) = heap.participant(at) else {
                    return false;
                };
                if part.owner != p.member.incarnation() {
                    return false;
                }
                match heap.recv(&part) {
                    Ok(Some(Received::Message { block, .. })) => {
                        self.received(p, block);
                        if !keep && judged!(heap.release(p.member, block)).is_ok() {
                            self.let_go(p.member, block);
                        }
                    }
                    r => self.judge(&op, &r),
                }
            }
            POp::Control { who, to, which } => {
                let (Some(p), Some(to)) = (self.proc(who), self.target(to, which)) else {
                    return false;
                };
                let control = match which % 5 {
                    0 => Control::Connect,
                    1 => Control::Connected,
                    2 => Control::Disconnect,
                    3 => Control::Disconnected,
                    _ => Control::ServerStopping,
                };
                let _ = judged!(heap.send_control(p.member, to, control, to.at, |_| {}));
            }
            POp::Heartbeat { to } => {
                let (Some(s), Some(to)) = (
                    self.server().or_else(|| self.proc(to.wrapping_add(1))),
                    self.target(to, to),
                ) else {
                    return false;
                };
                let _ = judged!(heap.heartbeat(s.member, to));
            }
            POp::TakeKeepalive { who } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                let Some(at) = p.participant else {
                    return false;
                };
                if let Ok(Some(_)) = judged!(heap.take_keepalive(p.member, at)) {
                    self.stats.keepalives += 1;
                }
            }
            POp::Destroy { who } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                let Some(at) = p.participant else {
                    return false;
                };
                // The owner drains its queue first (and drops what it received).
                if let Ok(part) = heap.participant(at) {
                    for _ in 0..part.queue.capacity() {
                        match heap.recv(&part) {
                            Ok(Some(Received::Message { block, .. })) => {
                                self.received(p, block);
                                if judged!(heap.release(p.member, block)).is_ok() {
                                    self.let_go(p.member, block);
                                }
                            }
                            Ok(Some(_)) => {}
                            _ => break,
                        }
                    }
                }
                if judged!(heap.destroy_participant(p.member, at)).is_ok() {
                    self.set_participant(p.member, None);
                }
            }
            POp::Release { who, pick } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                let Some(b) = self.block(pick, who, p.member.incarnation()) else {
                    return false;
                };
                if judged!(heap.release(p.member, b)).is_ok() {
                    self.let_go(p.member, b);
                }
            }
            POp::Kill { who } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                self.platform.kill(p.pid);
                if let Ok(n) = judged!(heap.reclaim_dead()) {
                    self.stats.reclaimed += n;
                }
                if !self.strict {
                    let _ = judged!(heap.reclaim(p.member.incarnation()));
                }
            }
            POp::Unregister { who } => {
                let Some(p) = self.proc(who) else {
                    return false;
                };
                let _ = judged!(heap.unregister(p.member));
            }
            POp::Crash { .. } => {}
        }
        false
    }

    pub(super) fn set_participant(&mut self, m: Member, at: Option<Offset>) {
        if let Some(q) = self.procs.iter_mut().find(|q| q.member == m) {
            q.participant = at;
        }
    }

    /// `m` dropped its reference to `b` (released or gave it away): a message about `b`
    /// still waiting in its queue no longer implies ownership.
    pub(super) fn dropped(&mut self, m: Member, b: Offset) {
        let inc = m.incarnation();
        self.in_flight.retain(|&(r, x)| !(r == inc && x == b));
    }

    /// A message `p` took: the block must be its own (well-formed) unless `p` dropped it
    /// meanwhile, and becomes a known block.
    pub(super) fn received(&mut self, p: Proc, block: Offset) {
        self.stats.messages += 1;
        let inc = p.member.incarnation();
        let Some(i) = self
            .in_flight
            .iter()
            .position(|&(r, x)| r == inc && x == block)
        else {
            self.keep_block(p.member, block);
            return;
        };
        self.in_flight.remove(i);
        if self.strict {
            let mut mine = false;
            let r = self.heap.owners(block, |s| mine |= s == p.member.slot());
            if r.is_err() || !mine {
                panic!("{} received {block:?} it does not own ({r:?})", p.member);
            }
        }
        self.keep_block(p.member, block);
    }
}
