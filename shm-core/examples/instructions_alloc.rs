//! A fixed workload for counting instructions per allocator operation, the noise-free
//! complement of the allocator benchmark's timings: W1-like churn (10,000 live blocks of
//! 16..4096 B; each step frees a random block and allocates a new one) on one heap over a
//! 64 MiB buffer, uncontended, on `SpinPlatform`.
//!
//! Run it under callgrind twice, with 0 and with N steps; the difference in
//! instructions divided by 2N is the cost of one operation:
//!
//! ```text
//! cargo build --release -p shm-core --example instructions_alloc
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/instructions_alloc 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/instructions_alloc 20000
//! ```
//!
//! With `cache` after the step count, every allocation and free goes through a process
//! [`Cache`](shm_core::Cache) with the default bounds instead (hits, and the refills and
//! drains they cause); `plain` names the default.
//!
//! With `bursts` after the mode, the workload is W4-like instead: no setup, N blocks of
//! 16..4096 B allocated, then all freed in random order (2N operations again). A cache
//! made for the run is dropped before the count ends either way, and what it still holds
//! goes back to the heap then, so its give-back is counted too:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/instructions_alloc 0 cache bursts
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/instructions_alloc 8000 cache bursts
//! ```
//!
//! With `lifo`, it is W3-like: rounds of up to 1,000 blocks of 64 B allocated, then freed
//! in reverse, N allocations in all. Through a cache nearly every operation is a hit, so
//! `instructions_alloc 20000 cache lifo` against `0 cache lifo` prices the hit path (plus
//! the refills of the first round and the give-back of what stays cached).
//!
//! With a cache, its [`CacheStats`](shm_core::CacheStats) go to stderr at the end.

use shm_core::{CacheConfig, Heap, HeapConfig, Offset, Region, SpinPlatform};

const LEN: usize = 64 << 20;
const LIVE: usize = 10_000;
/// Blocks allocated, then freed in reverse, in one round of the W3-like workload.
const LIFO_ROUND: usize = 1_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// W1-like: random frees and allocations over 10,000 live blocks.
    Churn,
    /// W4-like: N blocks allocated, then all freed in random order.
    Bursts,
    /// W3-like: rounds of 1,000 x 64 B allocated, then freed in reverse.
    Lifo,
}

fn main() {
    let steps: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().expect("the number of churn steps"),
        None => 20_000,
    };
    // u128 elements: the region must be 16-aligned, and u128 is.
    let mut arena = vec![0u128; LEN / 16];
    // SAFETY: `arena` is LEN bytes, valid for reads and writes, outlives `heap` (declared
    // before it) and nothing else touches it meanwhile.
    let region = unsafe { Region::from_raw(arena.as_mut_ptr().cast(), LEN) }.expect("a region");
    let heap = Heap::init(
        region,
        HeapConfig::default(),
        SpinPlatform::new(std::process::id()),
    )
    .expect("the region is formatted");
    let me = heap.register().expect("this process registers");
    let mut cache = match std::env::args().nth(2).as_deref() {
        Some("cache") => Some(heap.cache(CacheConfig::default()).expect("a cache")),
        None | Some("plain") => None,
        Some(other) => panic!("unknown mode {other:?} (expected `plain` or `cache`)"),
    };
    let workload = match std::env::args().nth(3).as_deref() {
        None | Some("churn") => Workload::Churn,
        Some("bursts") => Workload::Bursts,
        Some("lifo") => Workload::Lifo,
        Some(other) => {
            panic!("unknown workload {other:?} (expected `churn`, `bursts` or `lifo`)")
        }
    };
    let mut alloc = |size: u32| match cache.as_mut() {
        Some(c) => c.alloc(size),
        None => heap.try_alloc(me, size),
    };
    // A fixed-seed LCG: the same sequence on every run and every build.
    let mut seed: u64 = 0x5348_4d2d;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as u32
    };
    match workload {
        Workload::Lifo => {
            let mut live = Vec::with_capacity(LIFO_ROUND);
            let mut left = steps;
            while left > 0 {
                let round = left.min(LIFO_ROUND);
                left -= round;
                for _ in 0..round {
                    live.push(
                        match cache.as_mut() {
                            Some(c) => c.alloc(64),
                            None => heap.try_alloc(me, 64),
                        }
                        .expect("a round fits"),
                    );
                }
                while let Some(p) = live.pop() {
                    match cache.as_mut() {
                        Some(c) => c.free(p),
                        None => heap.free(me, p),
                    }
                    .expect("a live block is freed");
                }
            }
        }
        Workload::Bursts => {
            let mut live: Vec<Offset> = (0..steps)
                .map(|_| alloc(16 + next() % 4081).expect("the burst fits"))
                .collect();
            // Fisher-Yates with the same generator: a fixed random order.
            for i in (1..live.len()).rev() {
                live.swap(i, next() as usize % (i + 1));
            }
            for p in live {
                match cache.as_mut() {
                    Some(c) => c.free(p),
                    None => heap.free(me, p),
                }
                .expect("a live block is freed");
            }
        }
        Workload::Churn => {
            let mut live: Vec<Offset> = (0..LIVE)
                .map(|_| alloc(16 + next() % 4081).expect("setup fits"))
                .collect();
            for _ in 0..steps {
                let i = next() as usize % LIVE;
                match cache.as_mut() {
                    Some(c) => {
                        c.free(live[i]).expect("a live block is freed");
                        live[i] = c.alloc(16 + next() % 4081).expect("churn fits");
                    }
                    None => {
                        heap.free(me, live[i]).expect("a live block is freed");
                        live[i] = heap.try_alloc(me, 16 + next() % 4081).expect("churn fits");
                    }
                }
            }
            std::hint::black_box(&live);
        }
    }
    // What the cache served itself and what went to the heap, to read beside the count.
    if let Some(c) = cache.as_ref() {
        eprintln!("{:?}", c.stats());
    }
}
