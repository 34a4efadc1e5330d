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
//! - every process owns the model's blocks and reserve, and the blocks its process
//!   cache holds (`model_cache`), which are not the model's;
//! - the kept blocks (the model's blocks without owners) and the kept root are the model's;
//! - no operation journaled more words than the journal holds.
//!
//! A crash (fault injection) must leave the heap exactly as before the operation, after
//! another "process" breaks the lock.
//!
//! Somewhat over 500 lines: the model, its bookkeeping and the verification are one
//! thing (each half is meaningless without the other); the interpreter of operations is
//! apart, in `model_apply`, the process caches' part of it in `model_cache`, and the heap
//! with its caches in `instance`.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::format::{INITIAL_CELLS, JOURNAL_CAPACITY};
use crate::testkit::instance::Instance;
use crate::testkit::ops::{Decoder, Op, Pick, Setup, Who};
use crate::testkit::TestPlatform;
use crate::{Error, Heap, Member, Offset, ProcSlot};

/// A live block in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockModel {
    /// Bytes written with the fill pattern (and checked).
    pub len: u32,
    /// The processes that own it.
    pub owners: BTreeSet<u16>,
    /// Seed of its fill pattern.
    pub fill: u8,
    /// Service data (a reserve, a block from one or from `try_alloc_service`): a cache
    /// refuses it.
    pub service: bool,
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
    /// The kept root (a block of `blocks` with no owners: a kept block).
    pub kept_root: Option<u32>,
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
    /// Blocks made kept.
    pub keeps: u32,
    /// Kept blocks taken.
    pub takes: u32,
    /// Allocations through a process cache.
    pub cache_allocs: u32,
    /// Frees through a process cache (into it, or past a full class to the heap).
    pub cache_frees: u32,
    /// Of which into the cache.
    pub cached_frees: u32,
    /// Drains of a process cache.
    pub cache_drains: u32,
    /// Most blocks cached at once, over all caches.
    pub max_cached: u32,
    /// Processes that died (an injected crash) inside a cache operation and were reclaimed.
    pub cache_deaths: u32,
}

/// Runs decoded operations against a heap and the model; panics on any disagreement.
pub struct Runner {
    pub(super) setup: Setup,
    pub(super) platform: TestPlatform,
    pub(super) inst: Option<Instance>,
    pub(super) model: Model,
    pub(super) stats: RunStats,
    pub(super) next_identity: u32,
    pub(super) fill_seq: u8,
    pub(super) armed: Option<u16>,
    /// The process whose cache operation an injected crash just stopped.
    pub(super) died_in_cache: Option<ProcSlot>,
    pub(super) trace: Vec<String>,
}

/// First pid used for registered processes' identities; pids below are the runner's own
/// (one more after each injected crash).
pub(super) const IDENTITY_PIDS: u32 = 1000;
/// Highest pid the test platform tracks.
pub(super) const MAX_PID: u32 = 4095;

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
            died_in_cache: None,
            trace: Vec::new(),
        }
    }

    pub(super) fn heap(&self) -> &Heap<'static, TestPlatform> {
        match &self.inst {
            Some(i) => i.heap(),
            None => panic!("runner has no heap"),
        }
    }

    /// Fails the run with the trace of operations so far.
    pub(super) fn fail(&self, what: &str) -> ! {
        let start = self.trace.len().saturating_sub(12);
        panic!(
            "model check failed: {what}\nsetup: {:?}\nlast operations:\n  {}",
            self.setup,
            self.trace[start..].join("\n  ")
        );
    }

    pub(super) fn who(&self, w: Who) -> Option<ProcSlot> {
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
    pub(super) fn m(&self, slot: ProcSlot) -> Member {
        match self.model.procs.get(&slot.0) {
            Some(p) => p.member,
            None => self.fail(&format!("no member for {slot}")),
        }
    }

    pub(super) fn pick(&self, p: Pick) -> Option<u32> {
        let n = self.model.blocks.len();
        if n == 0 {
            return None;
        }
        self.model.blocks.keys().nth(usize::from(p) % n).copied()
    }

    /// The acting process: the block's first owner in the model when `by_owner`.
    pub(super) fn actor(&self, w: Who, block: u32, by_owner: bool) -> Option<ProcSlot> {
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
    pub(super) fn largest_alloc(&self) -> u32 {
        match self.heap().stats_unlocked() {
            Ok(s) => s.largest_alloc,
            Err(e) => self.fail(&format!("stats: {e}")),
        }
    }

    /// Whether `slot`'s owner array is full (a new cell needs a growth).
    pub(super) fn cells_full(&self, slot: ProcSlot) -> bool {
        match self.heap().process(slot) {
            Ok(i) => i.blocks == i.cell_capacity,
            Err(e) => self.fail(&format!("process {slot}: {e}")),
        }
    }

    pub(super) fn fill_byte(&mut self) -> u8 {
        self.fill_seq = self.fill_seq.wrapping_add(37);
        self.fill_seq
    }

    /// Writes the fill pattern of block `p`.
    pub(super) fn write_fill(&self, p: u32, len: u32, fill: u8) {
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

    pub(super) fn verify_fill(&self, p: u32, b: &BlockModel) {
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

    pub(super) fn new_block(&mut self, p: u32, len: u32, owner: ProcSlot) {
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
        self.model.blocks.insert(
            p,
            BlockModel {
                len,
                owners,
                fill,
                service: false,
            },
        );
        self.model.freed.retain(|&f| f != p);
    }

    pub(super) fn drop_block(&mut self, p: u32) {
        self.model.blocks.remove(&p);
        self.model.freed.push(p);
        if self.model.freed.len() > 64 {
            self.model.freed.remove(0);
        }
    }

    /// Removes `slot` from `p`'s owners (and `p` from the model if it was the last).
    /// Returns whether the block was freed.
    pub(super) fn drop_owner(&mut self, p: u32, slot: ProcSlot) -> bool {
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
    pub(super) fn model_reclaim(&mut self, slot: ProcSlot) -> (u32, u32) {
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
    pub(super) fn size_error(&self, size: u32, e: Error) -> bool {
        match e {
            Error::InvalidSize { .. } => self.heap().block_size_for(size).is_err(),
            Error::TooLarge { .. } => {
                self.heap().block_size_for(size).is_ok() && size > self.heap().max_alloc()
            }
            _ => false,
        }
    }

    pub(super) fn expect_size_errors(&self, size: u32, r: &Result<Offset, Error>) {
        let bs = self.heap().block_size_for(size);
        match (bs, r) {
            (Err(_), Ok(_)) => self.fail(&format!("size {size} should be invalid")),
            (Ok(_), Ok(_)) if size > self.heap().max_alloc() => {
                self.fail(&format!("size {size} should be too large"))
            }
            _ => {}
        }
    }

    /// Checks an allocation's result by `slot` of `size` bytes against the model, given
    /// the largest free block and whether its owner array was full just before (an
    /// out-of-memory result must be justified by one of them), and records the new block.
    /// Returns its offset. `what` names the call in a failure.
    pub(super) fn expect_alloc(
        &mut self,
        what: &str,
        slot: ProcSlot,
        size: u32,
        (largest, cells_full): (u32, bool),
        r: Result<Offset, Error>,
    ) -> Option<u32> {
        self.expect_size_errors(size, &r);
        match r {
            Ok(p) => {
                self.new_block(p.get(), size, slot);
                return Some(p.get());
            }
            Err(Error::OutOfMemory { .. }) if largest < size || cells_full => {
                self.stats.out_of_memory += 1
            }
            Err(e) if self.size_error(size, e) => {}
            r => self.fail(&format!("{what} {size} (largest {largest}): {r:?}")),
        }
        None
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
        // Process ends and relocation drop caches first, outside the operation (and
        // its armed crash).
        self.end_caches_for(op);
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
    /// before the operation, except that multi-step operations are finished, and that a
    /// crash in a cache operation is its process's death: it is reclaimed (see
    /// `model_cache`).
    pub(super) fn recover_crash(&mut self, op: &Op, before: Model) {
        self.stats.crashes += 1;
        let dead = self.platform.pid();
        self.platform.kill(dead);
        self.platform.set_pid(dead + 1);
        self.model = before;
        if let Err(e) = self.heap().check() {
            self.fail(&format!("check after crash recovery: {e}"));
        }
        // A crash inside a cache operation is its process's death (see `model_cache`).
        if let Some(slot) = self.died_in_cache.take() {
            self.reclaim_dead_process(slot);
            return;
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

    /// A fresh identity. Identities are never reused, so a killed pid never names a live
    /// process; when they run out, registrations stop.
    pub(super) fn next_pid(&mut self) -> Option<u32> {
        let pid = self.next_identity;
        (pid <= MAX_PID).then(|| {
            self.next_identity += 1;
            pid
        })
    }

    /// A new block at `p` must not overlap any live block, headers included.
    pub(super) fn check_no_overlap(&self, p: u32) {
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
    pub(super) fn verify(&mut self) {
        let heap = self.heap();
        let rep = match heap.check() {
            Ok(r) => r,
            Err(e) => self.fail(&format!("check: {e}")),
        };
        let m = &self.model;
        // Cached blocks: owned (one reference each) but not live in the model.
        let cached = self.cached_blocks();
        let all_cached: u32 = cached.values().sum();
        let refs: u64 = m.blocks.values().map(|b| b.owners.len() as u64).sum();
        if rep.processes as usize != m.procs.len()
            || rep.owner_cells != refs + u64::from(all_cached)
            || rep.cached_blocks != all_cached
            || rep.used_blocks as usize != m.blocks.len() + 1 + m.procs.len() + all_cached as usize
        {
            self.fail(&format!(
                "check report {rep:?} vs model: {} blocks, {} processes, {refs} references, \
                 {all_cached} cached",
                m.blocks.len(),
                m.procs.len()
            ));
        }
        if let Some(slot) = cached.keys().find(|s| !m.procs.contains_key(s)) {
            self.fail(&format!("a cache outlived process {slot}"));
        }
        let kept = m.blocks.values().filter(|b| b.owners.is_empty()).count();
        if rep.kept_blocks as usize != kept || heap.kept_root().map(|o| o.get()) != m.kept_root {
            self.fail(&format!(
                "kept: {} blocks, root {:?}; model {kept} blocks, root {:?}",
                rep.kept_blocks,
                heap.kept_root(),
                m.kept_root
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
                .count()
                + cached.get(&slot).copied().unwrap_or(0) as usize;
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
        self.stats.max_cached = self.stats.max_cached.max(all_cached);
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
