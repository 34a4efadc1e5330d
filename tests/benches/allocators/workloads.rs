//! The op sequences: a fixed-seed generator turns each workload into one list of allocs
//! and frees, replayed identically for every allocator.

use crate::{REGION_BYTES, SEED, W1_STEPS, W2_STEPS, W3_ROUNDS, W4_BURSTS};

/// One step of a workload. `id` names a slot in the replay's table of live blocks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Alloc { id: u32, size: u32 },
    Free { id: u32 },
}

/// splitmix64: small, fast, and the same sequence on every machine.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Log-uniform in `lo..=hi`.
    pub(crate) fn log_uniform(&mut self, lo: u32, hi: u32) -> u32 {
        let (l, h) = (f64::from(lo).ln(), f64::from(hi).ln());
        let v = (l + (h - l) * self.unit()).exp().round() as u32;
        v.clamp(lo, hi)
    }
}

/// One workload: an untimed prefix and the timed ops, both replayed on a fresh allocator.
pub(crate) struct Workload {
    /// Criterion group name and table label.
    pub(crate) name: &'static str,
    /// One-line description for the table.
    pub(crate) about: String,
    /// Ops run before the clock starts (W1/W2's fill).
    pub(crate) setup: Vec<Op>,
    /// Timed ops.
    pub(crate) ops: Vec<Op>,
    /// Size of the live-block table (largest id + 1).
    pub(crate) slots: usize,
    /// Whether the fragmentation table probes the heap this workload leaves behind.
    pub(crate) probe_fragmentation: bool,
}

/// Sizes of the workloads: full for `cargo bench`, tiny for `cargo test --benches`.
#[derive(Clone, Copy)]
pub(crate) struct Params {
    w1_live: u32,
    w1_steps: u32,
    w2_live: u32,
    w2_steps: u32,
    w3_blocks: u32,
    w3_rounds: u32,
    w4_target: u64,
    w4_bursts: u32,
}

impl Params {
    pub(crate) const FULL: Params = Params {
        w1_live: 10_000,
        w1_steps: W1_STEPS,
        w2_live: 2_000,
        w2_steps: W2_STEPS,
        w3_blocks: 1_000,
        w3_rounds: W3_ROUNDS,
        w4_target: REGION_BYTES as u64 / 2,
        w4_bursts: W4_BURSTS,
    };
    pub(crate) const SMOKE: Params = Params {
        w1_live: 500,
        w1_steps: 500,
        w2_live: 100,
        w2_steps: 500,
        w3_blocks: 1_000,
        w3_rounds: 2,
        w4_target: REGION_BYTES as u64 / 64,
        w4_bursts: 1,
    };
}

/// Fill to `live` blocks, then `steps` x (free a random live block, allocate a new one in
/// its slot).
pub(crate) fn churn(
    name: &'static str,
    seed: u64,
    live: u32,
    lo: u32,
    hi: u32,
    steps: u32,
) -> Workload {
    let mut rng = SplitMix(seed);
    let setup = (0..live)
        .map(|id| Op::Alloc {
            id,
            size: rng.log_uniform(lo, hi),
        })
        .collect();
    let mut ops = Vec::with_capacity(2 * steps as usize);
    for _ in 0..steps {
        let id = rng.below(live as usize) as u32;
        ops.push(Op::Free { id });
        ops.push(Op::Alloc {
            id,
            size: rng.log_uniform(lo, hi),
        });
    }
    Workload {
        name,
        about: format!("{live} live, {lo}..{hi} B, {steps} steps"),
        setup,
        ops,
        slots: live as usize,
        probe_fragmentation: true,
    }
}

/// `rounds` x (`blocks` x 64 B allocated, then freed in reverse).
pub(crate) fn lifo(blocks: u32, rounds: u32) -> Workload {
    let mut ops = Vec::with_capacity(2 * (blocks * rounds) as usize);
    for _ in 0..rounds {
        ops.extend((0..blocks).map(|id| Op::Alloc { id, size: 64 }));
        ops.extend((0..blocks).rev().map(|id| Op::Free { id }));
    }
    Workload {
        name: "W3-lifo",
        about: format!("{blocks} x 64 B, free in reverse, {rounds} rounds"),
        setup: Vec::new(),
        ops,
        slots: blocks as usize,
        probe_fragmentation: false,
    }
}

/// `bursts` x (allocate 16..4096 B until `target` bytes are live, free all in random order).
pub(crate) fn bursts(seed: u64, target: u64, bursts: u32) -> Workload {
    let mut rng = SplitMix(seed);
    let mut ops = Vec::new();
    let mut slots = 0usize;
    for _ in 0..bursts {
        let mut bytes = 0u64;
        let mut ids = Vec::new();
        while bytes < target {
            let id = ids.len() as u32;
            let size = rng.log_uniform(16, 4096);
            ops.push(Op::Alloc { id, size });
            ids.push(id);
            bytes += u64::from(size);
        }
        slots = slots.max(ids.len());
        // Fisher-Yates.
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.below(i + 1));
        }
        ops.extend(ids.into_iter().map(|id| Op::Free { id }));
    }
    Workload {
        name: "W4-bursts",
        about: format!(
            "16..4096 B to {} MiB live ({slots} blocks), free in random order, {bursts} burst(s)",
            target >> 20
        ),
        setup: Vec::new(),
        ops,
        slots,
        probe_fragmentation: false,
    }
}

pub(crate) fn workloads(p: Params) -> Vec<Workload> {
    vec![
        churn("W1-churn", SEED ^ 1, p.w1_live, 16, 4096, p.w1_steps),
        churn(
            "W2-churn-large",
            SEED ^ 2,
            p.w2_live,
            16,
            65_536,
            p.w2_steps,
        ),
        lifo(p.w3_blocks, p.w3_rounds),
        bursts(SEED ^ 4, p.w4_target, p.w4_bursts),
    ]
}
