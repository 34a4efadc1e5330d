//! The client/server protocol driven by decoded operations, for the `protocol` fuzz target
//! and its integration test: participants, `start_server`, connect/accept, sends (give
//! and share) and receives, control entries, heartbeats and keepalives, destroying
//! participants, killing and reclaiming processes, and injected crashes.
//!
//! Two scenarios, chosen by bit 0 of the first byte:
//! - **well-formed**: a freshly formatted region; after every operation (and after every
//!   crash, once another process broke the lock) `check()` must pass, no operation may
//!   report corruption or a full journal, an injected crash must surface as
//!   `InjectedCrash` and nothing else, and every message a receiver takes must be a block
//!   it owns;
//! - **hostile**: an arbitrary region image (as in [`hostile`](super::hostile)) attached and
//!   driven with members forged from the records it holds and offsets from the bytes:
//!   every call must return, with a result or an error, without panicking or hanging.
//!
//! Input after the first byte: well-formed, one setup byte then operations; hostile, two
//! bytes of region length, the image, then operations.

use alloc::vec::Vec;

use crate::format::{KIND_CLIENT, KIND_SERVER};
use crate::testkit::hostile::REGION_LEN;
use crate::testkit::ops::Decoder;
use crate::testkit::{AlignedBuf, TestPlatform};
use crate::{
    Control, Error, Heap, HeapConfig, Incarnation, Member, Offset, ParticipantId, ProcSlot,
    ProcessId, Received, Region, SendMode,
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

/// Decodes the next operation, or `None` at the end of the bytes.
pub fn decode(d: &mut Decoder<'_>) -> Option<POp> {
    let kind = d.byte()?;
    let who = d.byte()?;
    // Weighted towards the protocol: sends, receives, connecting.
    Some(match kind % 32 {
        0 | 1 => POp::Register,
        2 | 3 => POp::Participant {
            who,
            server: kind & 0x80 != 0,
            cap: d.byte()?,
        },
        4 => POp::StartServer { who },
        5 => POp::StopServer { who },
        6..=8 => POp::Connect { who },
        9..=11 => POp::Accept { who },
        12 | 13 => POp::Alloc {
            who,
            size: u16::from_le_bytes([d.byte()?, d.byte()?]) >> (kind >> 5),
        },
        14 => POp::Reserve {
            who,
            size: u16::from(d.byte()?) * 4,
        },
        15..=20 => POp::Send {
            who,
            to: d.byte()?,
            pick: d.byte()?,
            share: kind & 0x80 != 0,
            tag: d.byte()?,
        },
        21..=24 => POp::Recv {
            who,
            keep: kind & 0x80 != 0,
        },
        25 => POp::Control {
            who,
            to: d.byte()?,
            which: d.byte()?,
        },
        26 | 27 => POp::Heartbeat { to: who },
        28 => POp::TakeKeepalive { who },
        29 if kind & 0x80 != 0 => POp::Destroy { who },
        29 => POp::Release {
            who,
            pick: d.byte()?,
        },
        30 if kind & 0x80 != 0 => POp::Kill { who },
        30 => POp::Unregister { who },
        _ => POp::Crash {
            // Mostly within the common operations' length, now and then up to a whole
            // reclaim.
            steps: 1 + u16::from_le_bytes([who, d.byte()?])
                % if who & 0x80 != 0 { 320 } else { 40 },
        },
    })
}

/// Encodes operation bytes for the well-formed scenario with setup byte `setup`.
pub fn encode_formed(setup: u8, ops: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + ops.len());
    v.push(0);
    v.push(setup);
    v.extend_from_slice(ops);
    v
}

/// Encodes a region image (a multiple of 16 bytes within [`REGION_LEN`]) and operation
/// bytes for the hostile scenario.
pub fn encode_hostile(image: &[u8], ops: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + image.len() + ops.len());
    v.push(1);
    v.extend_from_slice(&super::hostile::encode(image, ops));
    v
}

/// A process the driver knows.
#[derive(Clone, Copy, Debug)]
struct Proc {
    member: Member,
    pid: u32,
    participant: Option<Offset>,
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
const ACTOR_PIDS: (u32, u32) = (1, 999);
/// Pids of registered processes.
const MEMBER_PIDS: (u32, u32) = (1000, 4095);

struct Driver<'h> {
    heap: &'h Heap<'h, TestPlatform>,
    platform: TestPlatform,
    /// Whether the region is well-formed (strict checks) or hostile (must only return).
    strict: bool,
    procs: Vec<Proc>,
    blocks: Vec<Offset>,
    /// Messages sent and not yet taken, with their receivers: the receiver must own the
    /// block when it takes the entry, unless it dropped it meanwhile (then the pair is
    /// forgotten).
    in_flight: Vec<(Incarnation, Offset)>,
    next_pid: u32,
    armed: bool,
    stats: ProtoStats,
}

impl Driver<'_> {
    fn proc(&self, w: u8) -> Option<Proc> {
        let n = self.procs.len();
        (n > 0).then(|| self.procs[usize::from(w) % n])
    }

    fn block(&self, p: u8, w: u8) -> Offset {
        let n = self.blocks.len();
        if n == 0 || (!self.strict && p & 7 == 7) {
            // Hostile: now and then an arbitrary offset.
            Offset::new(u32::from(p) * 64 + u32::from(w) * 16)
        } else {
            self.blocks[usize::from(p) % n]
        }
    }

    fn keep_block(&mut self, b: Offset) {
        if self.blocks.len() >= 64 {
            self.blocks.remove(0);
        }
        self.blocks.push(b);
    }

    /// Where a send to `to` goes: its participant, or (hostile) an offset from the bytes.
    fn target(&self, to: u8, extra: u8) -> Option<ParticipantId> {
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

    fn server(&self) -> Option<Proc> {
        let st = self.heap.server_status();
        self.procs
            .iter()
            .copied()
            .find(|p| st.running && p.member.incarnation() == st.owner)
    }

    /// Judges one result: in the well-formed scenario corruption, a full journal or an
    /// unexpected injected crash fail the run.
    fn judge<T>(&mut self, what: &POp, r: &Result<T, Error>) {
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

    fn step(&mut self, op: POp) {
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
    fn apply(&mut self, op: POp) -> bool {
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
                    self.keep_block(b);
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
                    self.block(pick >> 1, who)
                };
                let mode = if share {
                    SendMode::Share
                } else {
                    SendMode::Give
                };
                let r = judged!(heap.send(p.member, to, b, u32::from(tag), mode, |_| {}));
                if r.is_ok() {
                    self.dropped(p.member, b);
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
                            self.dropped(p.member, block);
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
                                let _ = judged!(heap.release(p.member, block));
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
                let b = self.block(pick, who);
                if judged!(heap.release(p.member, b)).is_ok() {
                    self.dropped(p.member, b);
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

    fn set_participant(&mut self, m: Member, at: Option<Offset>) {
        if let Some(q) = self.procs.iter_mut().find(|q| q.member == m) {
            q.participant = at;
        }
    }

    /// `m` dropped its reference to `b` (released or gave it away): a message about `b`
    /// still waiting in its queue no longer implies ownership.
    fn dropped(&mut self, m: Member, b: Offset) {
        let inc = m.incarnation();
        self.in_flight.retain(|&(r, x)| !(r == inc && x == b));
    }

    /// A message `p` took: the block must be its own (well-formed) unless `p` dropped it
    /// meanwhile, and becomes a known block.
    fn received(&mut self, p: Proc, block: Offset) {
        self.stats.messages += 1;
        let inc = p.member.incarnation();
        let Some(i) = self
            .in_flight
            .iter()
            .position(|&(r, x)| r == inc && x == block)
        else {
            self.keep_block(block);
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
        self.keep_block(block);
    }
}

/// Runs the scenario bit 0 of the first byte selects (see the module documentation).
pub fn run(data: &[u8]) -> ProtoStats {
    let mut d = Decoder::new(data);
    match d.byte() {
        Some(b) if b & 1 == 1 => run_hostile(d.rest()),
        _ => run_formed(d.rest()),
    }
}

/// The well-formed scenario: a setup byte, then operations.
pub fn run_formed(data: &[u8]) -> ProtoStats {
    let mut d = Decoder::new(data);
    let setup = d.byte().unwrap_or(0);
    let size = 16384usize << (setup % 3);
    let config = HeapConfig {
        align: [16, 8, 64, 16][usize::from((setup >> 2) % 4)],
        max_processes: 3 + u16::from((setup >> 4) % 6),
    };
    let buf = AlignedBuf::new(size);
    let platform = TestPlatform::new(ACTOR_PIDS.0);
    // SAFETY: `buf` outlives `heap` (declared before it, dropped after it) and nothing else
    // accesses it meanwhile.
    let region = match unsafe { Region::from_raw(buf.as_ptr(), size) } {
        Ok(r) => r,
        Err(e) => panic!("region over test buffer: {e}"),
    };
    let heap = match Heap::init(region, config, platform.clone()) {
        Ok(h) => h,
        Err(e) => panic!("init: {e}"),
    };
    let mut drv = Driver {
        heap: &heap,
        platform,
        strict: true,
        procs: Vec::new(),
        blocks: Vec::new(),
        in_flight: Vec::new(),
        next_pid: MEMBER_PIDS.0,
        armed: false,
        stats: ProtoStats::default(),
    };
    // A server and a client to start with, so short inputs reach the protocol.
    for op in [
        POp::Register,
        POp::Register,
        POp::Participant {
            who: 0,
            server: true,
            cap: 1,
        },
        POp::StartServer { who: 0 },
        POp::Connect { who: 1 },
        POp::Accept { who: 0 },
    ] {
        drv.step(op);
    }
    for _ in 0..400 {
        let Some(op) = decode(&mut d) else { break };
        drv.step(op);
    }
    let stats = drv.stats;
    drop(drv);
    drop(heap);
    drop(buf);
    stats
}

/// The hostile scenario: region length, image, operations (as [`hostile`](super::hostile)).
pub fn run_hostile(data: &[u8]) -> ProtoStats {
    let mut d = Decoder::new(data);
    let len_sel = u16::from_le_bytes([d.byte().unwrap_or(0), d.byte().unwrap_or(0)]);
    let len = (REGION_LEN.0 + usize::from(len_sel) % (REGION_LEN.1 - REGION_LEN.0)) & !15;
    let rest = d.rest();
    let image_len = len.min(rest.len());
    let buf = AlignedBuf::new(len);
    // SAFETY: `image_len <= len` bytes into a fresh buffer of `len` bytes; the source is a
    // different allocation.
    unsafe { core::ptr::copy_nonoverlapping(rest.as_ptr(), buf.as_ptr(), image_len) };
    let mut ops = Decoder::new(rest.get(image_len..).unwrap_or(&[]));
    // SAFETY: `buf` outlives `heap` (declared before it, dropped after it) and nothing else
    // accesses it meanwhile.
    let Ok(region) = (unsafe { Region::from_raw(buf.as_ptr(), len) }) else {
        return ProtoStats::default();
    };
    // Our pid must not be the one the image's lock names (see `hostile`).
    let lock_at = core::mem::offset_of!(crate::format::RegionHeader, lock);
    let holder = buf
        .bytes()
        .get(lock_at..lock_at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let me = if holder == 7 { 9 } else { 7 };
    let platform = TestPlatform::only_me_alive(me);
    let Ok(heap) = Heap::attach(region, platform.clone()) else {
        return ProtoStats::default();
    };
    // The processes the image holds, acting as their records say (forged members), with
    // their participants; and made-up incarnations for a few empty slots.
    let mut procs = Vec::new();
    if let Ok(ps) = heap.processes() {
        for info in ps.take(16).flatten() {
            procs.push(Proc {
                member: Member::forged_for_tests(info.incarnation()),
                pid: info.id.pid,
                participant: (info.app[0] != 0).then(|| Offset::new(info.app[0])),
            });
        }
    }
    for slot in 0..3u16 {
        procs.push(Proc {
            member: Member::forged_for_tests(Incarnation {
                slot: ProcSlot(slot),
                serial: u32::from(slot),
            }),
            pid: 4000 + u32::from(slot),
            participant: None,
        });
    }
    let mut drv = Driver {
        heap: &heap,
        platform,
        strict: false,
        procs,
        blocks: Vec::new(),
        in_flight: Vec::new(),
        next_pid: MEMBER_PIDS.0,
        armed: false,
        stats: ProtoStats::default(),
    };
    for _ in 0..256 {
        let Some(op) = decode(&mut ops) else { break };
        drv.step(op);
    }
    let stats = drv.stats;
    drop(drv);
    drop(heap);
    drop(buf);
    stats
}

/// A formatted region of `len` bytes (a multiple of 16, at least 16 KiB) with a running
/// server, a connected client with messages waiting, a connecting client, shared blocks
/// and reserves, as bytes: seed images for the hostile scenario.
pub fn sample_image(len: usize) -> Vec<u8> {
    let buf = AlignedBuf::new(len);
    {
        // SAFETY: `buf` outlives `heap`, dropped at the end of this block.
        let Ok(region) = (unsafe { Region::from_raw(buf.as_ptr(), len) }) else {
            panic!("region of {len} bytes");
        };
        let Ok(heap) = Heap::init(region, HeapConfig::default(), TestPlatform::new(1)) else {
            panic!("init {len} bytes");
        };
        let r = (|| -> Result<(), Error> {
            let s = heap.register_as(ProcessId::from_pid(100))?;
            let c = heap.register_as(ProcessId::from_pid(101))?;
            let d = heap.register_as(ProcessId::from_pid(102))?;
            heap.reserve(s, 200)?;
            let sp = heap.create_participant(s, KIND_SERVER, 4)?;
            heap.start_server(s, sp.at, 100, 3)?;
            let cp = heap.create_participant(c, KIND_CLIENT, 4)?;
            heap.connect(c, cp.at, |_| {})?;
            heap.recv(&sp)?;
            heap.accept(s, cp.at, |_| {})?;
            heap.recv(&cp)?;
            let dp = heap.create_participant(d, KIND_CLIENT, 2)?;
            heap.connect(d, dp.at, |_| {})?;
            heap.heartbeat(s, cp.id())?;
            for i in 0..3 {
                let b = heap.try_alloc(s, 40 + 16 * i)?;
                let mode = if i == 1 {
                    SendMode::Share
                } else {
                    SendMode::Give
                };
                heap.send(s, cp.id(), b, i, mode, |_| {})?;
            }
            let x = heap.try_alloc(c, 64)?;
            heap.send(c, sp.id(), x, 9, SendMode::Give, |_| {})?;
            let y = heap.try_alloc(c, 80)?;
            heap.share(c, y, d)?;
            Ok(())
        })();
        if let Err(e) = r {
            panic!("sample image: {e}");
        }
    }
    buf.bytes().to_vec()
}
