//! The reference model and the runner that checks a heap against it.
//!
//! The model is what an allocator with owners means, with none of the mechanics: a map
//! from live block offset to its owners and contents, and the registered processes with
//! their reserves. The runner applies each operation to both, predicts from the model
//! which results are allowed (an out-of-memory result must be justified by the heap's
//! statistics taken just before), and after every operation asserts:
//! - `check()` passes (all of the heap's own invariants);
//! - every live block has exactly the model's owners and reference count, and its bytes
//!   are intact (so no two blocks ever overlap and nothing moved);
//! - every process owns the model's blocks and reserve;
//! - no operation journaled more words than the journal holds.
//!
//! A crash (fault injection) must leave the heap exactly as before the operation, after
//! another "process" breaks the lock.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::format::{record_bytes, INITIAL_CELLS, JOURNAL_CAPACITY};
use crate::testkit::ops::{Decoder, Op, Pick, Setup, Who};
use crate::testkit::{AlignedBuf, TestPlatform};
use crate::{Error, Heap, HeapConfig, Member, Offset, ProcSlot, ProcessId, RawRange, Region};

/// A live block in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockModel {
    /// Bytes written with the fill pattern (and checked).
    pub len: u32,
    /// The processes that own it.
    pub owners: BTreeSet<u16>,
    /// Seed of its fill pattern.
    pub fill: u8,
}

/// A registered process in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcModel {
    /// Its pid.
    pub pid: u32,
    /// The handle registration gave it.
    pub member: Member,
    /// Its reserve, if any.
    pub reserve: Option<u32>,
}

/// The reference model.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Live blocks by payload offset.
    pub blocks: BTreeMap<u32, BlockModel>,
    /// Registered processes by slot.
    pub procs: BTreeMap<u16, ProcModel>,
    /// Payload offsets freed recently (targets for double frees and `alloc_at`).
    pub freed: Vec<u32>,
}

/// What a run did, so tests can assert that it exercised what it claims to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Operations run.
    pub ops: u32,
    /// Operations that succeeded.
    pub ok: u32,
    /// Most live blocks at once.
    pub max_blocks: u32,
    /// Injected crashes that fired and were recovered from.
    pub crashes: u32,
    /// Relocations.
    pub relocations: u32,
    /// Owner-array growths seen (capacity increases).
    pub growths: u32,
    /// Allocations that failed for lack of memory (justified).
    pub out_of_memory: u32,
    /// Most words one operation journaled.
    pub journal_high_water: u32,
}

/// A heap and the buffer it lives in; the heap is dropped first.
struct Instance {
    heap: Heap<'static, TestPlatform>,
    buf: AlignedBuf,
}

/// The ranges of a run's region inside its buffer: range 0 at the start, others after
/// gaps that are not multiples of the alignment.
fn ranges(setup: &Setup, buf: &AlignedBuf) -> Vec<RawRange> {
    let s = setup.size;
    let base = buf.as_ptr();
    let cuts: &[(usize, usize)] = match setup.ranges {
        1 => &[(0, s)],
        2 => &[(0, s / 2), (s / 2 + 72, s)],
        _ => &[(0, s / 2), (s / 2 + 72, 3 * s / 4), (3 * s / 4 + 200, s)],
    };
    cuts.iter()
        .map(|&(a, b)| RawRange {
            // SAFETY: `a < s = buf.len()`, so the pointer stays inside the buffer.
            ptr: unsafe { base.add(a) },
            len: b - a,
        })
        .collect()
}

impl Instance {
    fn region(setup: &Setup, buf: &AlignedBuf) -> Region<'static> {
        let rs = ranges(setup, buf);
        // SAFETY: the ranges lie inside `buf`, which the `Instance` owns and drops only
        // after the heap (field order), so they stay valid while any `Region` made here is
        // used; nothing else accesses the buffer while the heap exists.
        match unsafe { Region::from_raw_ranges(&rs) } {
            Ok(r) => r,
            Err(e) => panic!("region over test buffer: {e}"),
        }
    }

    fn init(setup: &Setup, platform: &TestPlatform) -> Self {
        let buf = AlignedBuf::new(setup.size);
        let config = HeapConfig {
            align: setup.align,
            max_processes: setup.max_processes,
        };
        let heap = match Heap::init(Self::region(setup, &buf), config, platform.clone()) {
            Ok(h) => h,
            Err(e) => panic!("init {setup:?}: {e}"),
        };
        Instance { heap, buf }
    }

    fn relocate(self, setup: &Setup, platform: &TestPlatform) -> Self {
        let Instance { heap, buf } = self;
        drop(heap);
        let copy = AlignedBuf::copy_of(buf.bytes());
        drop(buf);
        let heap = match Heap::attach(Self::region(setup, &copy), platform.clone()) {
            Ok(h) => h,
            Err(e) => panic!("attach after relocation: {e}"),
        };
        Instance { heap, buf: copy }
    }
}

/// Runs decoded operations against a heap and the model; panics on any disagreement.
pub struct Runner {
    setup: Setup,
    platform: TestPlatform,
    inst: Option<Instance>,
    model: Model,
    stats: RunStats,
    next_identity: u32,
    fill_seq: u8,
    armed: Option<u16>,
    trace: Vec<String>,
}

/// First pid used for registered processes' identities; pids below are the runner's own
/// (one more after each injected crash).
const IDENTITY_PIDS: u32 = 1000;
/// Highest pid the test platform tracks.
const MAX_PID: u32 = 4095;

impl Runner {
    /// A runner over a fresh region of the given shape.
    pub fn new(setup: Setup) -> Self {
        let platform = TestPlatform::new(1);
        let inst = Instance::init(&setup, &platform);
        Runner {
            setup,
            platform,
            inst: Some(inst),
            model: Model::default(),
            stats: RunStats::default(),
            next_identity: IDENTITY_PIDS,
            fill_seq: 0,
            armed: None,
            trace: Vec::new(),
        }
    }

    fn heap(&self) -> &Heap<'static, TestPlatform> {
        match &self.inst {
            Some(i) => &i.heap,
            None => panic!("runner has no heap"),
        }
    }

    /// Fails the run with the trace of operations so far.
    fn fail(&self, what: &str) -> ! {
        let start = self.trace.len().saturating_sub(12);
        panic!(
            "model check failed: {what}\nsetup: {:?}\nlast operations:\n  {}",
            self.setup,
            self.trace[start..].join("\n  ")
        );
    }

    fn who(&self, w: Who) -> Option<ProcSlot> {
        let n = self.model.procs.len();
        if n == 0 {
            return None;
        }
        self.model
            .procs
            .keys()
            .nth(usize::from(w) % n)
            .map(|&s| ProcSlot(s))
    }

    /// The member handle of a registered slot in the model.
    fn m(&self, slot: ProcSlot) -> Member {
        match self.model.procs.get(&slot.0) {
            Some(p) => p.member,
            None => self.fail(&format!("no member for {slot}")),
        }
    }

    fn pick(&self, p: Pick) -> Option<u32> {
        let n = self.model.blocks.len();
        if n == 0 {
            return None;
        }
        self.model.blocks.keys().nth(usize::from(p) % n).copied()
    }

    /// The acting process: the block's first owner in the model when `by_owner`.
    fn actor(&self, w: Who, block: u32, by_owner: bool) -> Option<ProcSlot> {
        if by_owner {
            let b = self.model.blocks.get(&block)?;
            let n = b.owners.len();
            b.owners
                .iter()
                .nth(usize::from(w) % n.max(1))
                .map(|&s| ProcSlot(s))
        } else {
            self.who(w)
        }
    }

    /// Largest request that fits now. Read without the lock, so it does not take a step
    /// of an armed fault injector.
    fn largest_alloc(&self) -> u32 {
        match self.heap().stats_unlocked() {
            Ok(s) => s.largest_alloc,
            Err(e) => self.fail(&format!("stats: {e}")),
        }
    }

    /// Whether `slot`'s owner array is full (a new cell needs a growth).
    fn cells_full(&self, slot: ProcSlot) -> bool {
        match self.heap().process(slot) {
            Ok(i) => i.blocks == i.cell_capacity,
            Err(e) => self.fail(&format!("process {slot}: {e}")),
        }
    }

    fn fill_byte(&mut self) -> u8 {
        self.fill_seq = self.fill_seq.wrapping_add(37);
        self.fill_seq
    }

    /// Writes the fill pattern of block `p`.
    fn write_fill(&self, p: u32, len: u32, fill: u8) {
        let (ptr, cap) = match self.heap().payload(Offset::new(p)) {
            Ok(x) => x,
            Err(e) => self.fail(&format!("payload of {p:#x}: {e}")),
        };
        if cap < len {
            self.fail(&format!("block {p:#x} holds {cap} bytes, {len} asked"));
        }
        for i in 0..len {
            // SAFETY: `ptr` points at `cap >= len` payload bytes of a block the model says
            // is live, so no other block or metadata overlaps them.
            unsafe {
                ptr.as_ptr()
                    .add(i as usize)
                    .write(fill.wrapping_add(i as u8))
            };
        }
    }

    fn verify_fill(&self, p: u32, b: &BlockModel) {
        let (ptr, cap) = match self.heap().payload(Offset::new(p)) {
            Ok(x) => x,
            Err(e) => self.fail(&format!("payload of live block {p:#x}: {e}")),
        };
        if cap < b.len {
            self.fail(&format!("block {p:#x} shrank to {cap} bytes"));
        }
        for i in 0..b.len {
            // SAFETY: as in `write_fill`.
            let v = unsafe { ptr.as_ptr().add(i as usize).read() };
            if v != b.fill.wrapping_add(i as u8) {
                self.fail(&format!("block {p:#x} byte {i} overwritten"));
            }
        }
    }

    fn new_block(&mut self, p: u32, len: u32, owner: ProcSlot) {
        if self.model.blocks.contains_key(&p) {
            self.fail(&format!("allocation returned live block {p:#x}"));
        }
        if p % self.setup.align != 0 {
            self.fail(&format!("block {p:#x} not aligned to {}", self.setup.align));
        }
        let fill = self.fill_byte();
        self.write_fill(p, len, fill);
        let mut owners = BTreeSet::new();
        owners.insert(owner.0);
        self.model
            .blocks
            .insert(p, BlockModel { len, owners, fill });
        self.model.freed.retain(|&f| f != p);
    }

    fn drop_block(&mut self, p: u32) {
        self.model.blocks.remove(&p);
        self.model.freed.push(p);
        if self.model.freed.len() > 64 {
            self.model.freed.remove(0);
        }
    }

    /// Removes `slot` from `p`'s owners (and `p` from the model if it was the last).
    /// Returns whether the block was freed.
    fn drop_owner(&mut self, p: u32, slot: ProcSlot) -> bool {
        if let Some(pm) = self.model.procs.get_mut(&slot.0) {
            if pm.reserve == Some(p) {
                pm.reserve = None;
            }
        }
        let empty = match self.model.blocks.get_mut(&p) {
            Some(b) => {
                b.owners.remove(&slot.0);
                b.owners.is_empty()
            }
            None => false,
        };
        if empty {
            self.drop_block(p);
        }
        empty
    }

    /// The model's effect of reclaiming `slot`: (references dropped, blocks freed).
    fn model_reclaim(&mut self, slot: ProcSlot) -> (u32, u32) {
        let owned: Vec<u32> = self
            .model
            .blocks
            .iter()
            .filter(|(_, b)| b.owners.contains(&slot.0))
            .map(|(&p, _)| p)
            .collect();
        let mut freed = 0;
        for &p in &owned {
            freed += u32::from(self.drop_owner(p, slot));
        }
        self.model.procs.remove(&slot.0);
        (owned.len() as u32, freed)
    }

    /// Checks a size-only error (`InvalidSize`, `TooLarge`) against the heap's rules.
    fn size_error(&self, size: u32, e: Error) -> bool {
        match e {
            Error::InvalidSize { .. } => self.heap().block_size_for(size).is_err(),
            Error::TooLarge { .. } => {
                self.heap().block_size_for(size).is_ok() && size > self.heap().max_alloc()
            }
            _ => false,
        }
    }

    fn expect_size_errors(&self, size: u32, r: &Result<Offset, Error>) {
        let bs = self.heap().block_size_for(size);
        match (bs, r) {
            (Err(_), Ok(_)) => self.fail(&format!("size {size} should be invalid")),
            (Ok(_), Ok(_)) if size > self.heap().max_alloc() => {
                self.fail(&format!("size {size} should be too large"))
            }
            _ => {}
        }
    }

    /// Runs one operation and checks it.
    pub fn step(&mut self, op: &Op) {
        self.trace.push(format!("{op:?}"));
        self.stats.ops += 1;
        if let Op::Crash { steps } = op {
            // Only a limited number of runner pids are available.
            if self.platform.pid() < IDENTITY_PIDS - 1 {
                self.armed = Some(*steps);
            }
            return;
        }
        let armed = self.armed.take();
        if let Some(steps) = armed {
            self.heap().faults().arm(u32::from(steps));
        }
        let before = self.model.clone();
        let crashed = self.apply(op);
        self.heap().faults().arm(0);
        if crashed {
            self.recover_crash(op, before);
        }
        self.verify();
    }

    /// After an injected crash: the "process" is dead; continue as a new one, which
    /// breaks the lock and undoes the unfinished operation. The model must equal the state
    /// before the operation, except that multi-step operations are finished.
    fn recover_crash(&mut self, op: &Op, before: Model) {
        self.stats.crashes += 1;
        let dead = self.platform.pid();
        self.platform.kill(dead);
        self.platform.set_pid(dead + 1);
        self.model = before;
        if let Err(e) = self.heap().check() {
            self.fail(&format!("check after crash recovery: {e}"));
        }
        // Reclaiming works in committed steps: what was done stays done; finish it.
        match op {
            Op::Reclaim { who } | Op::Kill { who } => {
                if let Some(slot) = self.who(*who) {
                    let m = self.m(slot);
                    let r = if matches!(op, Op::Kill { .. }) {
                        self.heap().reclaim(m.incarnation())
                    } else {
                        self.heap().unregister(m)
                    };
                    match r {
                        Ok(_) => {
                            self.model_reclaim(slot);
                        }
                        Err(e) => self.fail(&format!("finishing reclaim after crash: {e}")),
                    }
                }
            }
            _ => {}
        }
    }

    /// Applies `op`; returns true if an injected crash stopped it.
    fn apply(&mut self, op: &Op) -> bool {
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
                self.expect_size_errors(size, &r);
                match r {
                    Ok(p) => self.new_block(p.get(), size, me),
                    Err(Error::OutOfMemory { .. }) if largest < size || cells_full => {
                        self.stats.out_of_memory += 1
                    }
                    Err(e) if self.size_error(size, e) => {}
                    r => self.fail(&format!("alloc {size} (largest {largest}): {r:?}")),
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
                let sole = owners.len() == 1 && owners.contains(&me.0);
                match r {
                    Ok(()) if sole => {
                        self.drop_owner(p, me);
                    }
                    Err(Error::Shared { .. }) if owners.contains(&me.0) && !sole => {}
                    Err(Error::NotOwner { .. }) if !owners.contains(&me.0) => {}
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
                let Some(res) = reserve else {
                    match r {
                        Err(Error::ReserveTooSmall { available: 0, .. }) => {}
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
                    Err(Error::InvalidSize { .. }) if size == 0 => {}
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
                    Err(Error::NotOwner { .. }) if !mine => {}
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
                    Err(Error::NotOwner { .. }) if !mine => {}
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
                    Err(Error::NotOwner { .. }) if !owners.contains(&me.0) => {}
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
        }
        false
    }

    /// A fresh identity. Identities are never reused, so a killed pid never names a live
    /// process; when they run out, registrations stop.
    fn next_pid(&mut self) -> Option<u32> {
        let pid = self.next_identity;
        (pid <= MAX_PID).then(|| {
            self.next_identity += 1;
            pid
        })
    }

    /// A new block at `p` must not overlap any live block, headers included.
    fn check_no_overlap(&self, p: u32) {
        let h = self.heap().block_header_size();
        let len = self.heap().block_len(Offset::new(p)).unwrap_or(0);
        for &q in self.model.blocks.keys() {
            let qlen = self.heap().block_len(Offset::new(q)).unwrap_or(0);
            if p - h < q + qlen && q - h < p + len {
                self.fail(&format!("block {p:#x} overlaps live block {q:#x}"));
            }
        }
    }

    /// Compares the heap with the model.
    fn verify(&mut self) {
        let heap = self.heap();
        let rep = match heap.check() {
            Ok(r) => r,
            Err(e) => self.fail(&format!("check: {e}")),
        };
        let m = &self.model;
        let refs: u64 = m.blocks.values().map(|b| b.owners.len() as u64).sum();
        if rep.processes as usize != m.procs.len()
            || rep.owner_cells != refs
            || rep.used_blocks as usize != m.blocks.len() + 1 + m.procs.len()
        {
            self.fail(&format!(
                "check report {rep:?} vs model: {} blocks, {} processes, {refs} references",
                m.blocks.len(),
                m.procs.len()
            ));
        }
        for (&p, b) in &m.blocks {
            let mut owners = BTreeSet::new();
            if let Err(e) = heap.owners(Offset::new(p), |s| {
                owners.insert(s.0);
            }) {
                self.fail(&format!("owners of {p:#x}: {e}"));
            }
            if owners != b.owners
                || heap.ref_count(Offset::new(p)).ok() != Some(owners.len() as u32)
            {
                self.fail(&format!(
                    "block {p:#x}: owners {owners:?}, model {:?}",
                    b.owners
                ));
            }
            self.verify_fill(p, b);
        }
        let mut growths = 0;
        for (&slot, pm) in &m.procs {
            let info = match heap.process(ProcSlot(slot)) {
                Ok(i) => i,
                Err(e) => self.fail(&format!("process {slot}: {e}")),
            };
            let owned = m
                .blocks
                .values()
                .filter(|b| b.owners.contains(&slot))
                .count();
            if info.blocks as usize != owned
                || info.reserve != pm.reserve.unwrap_or(0)
                || info.id.pid != pm.pid
            {
                self.fail(&format!(
                    "process {slot}: {info:?}, model {pm:?}, owns {owned}"
                ));
            }
            if info.cell_capacity > INITIAL_CELLS {
                growths += 1;
            }
        }
        let hw = heap.journal_high_water();
        if hw as usize > JOURNAL_CAPACITY {
            self.fail(&format!("journal high water {hw}"));
        }
        self.stats.journal_high_water = hw;
        self.stats.growths = self.stats.growths.max(growths);
        self.stats.max_blocks = self.stats.max_blocks.max(m.blocks.len() as u32);
    }

    /// What the run did so far.
    pub fn stats(&self) -> RunStats {
        self.stats
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }
}

/// Decodes `data` (setup byte, then operations) and runs it; panics on any disagreement
/// between heap and model. The entry point for proptest and the fuzz target.
pub fn run(data: &[u8]) -> RunStats {
    let mut d = Decoder::new(data);
    let setup = d.setup();
    let mut runner = Runner::new(setup);
    // Start with two processes so short inputs do something.
    runner.step(&Op::Register);
    runner.step(&Op::Register);
    while let Some(op) = d.op() {
        runner.step(&op);
    }
    runner.stats()
}
