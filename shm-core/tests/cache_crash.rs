//! A process with a cache dies at every journaled step of a refill and of a drain, and
//! with a full cache: another process breaks its lock, `check()` holds, and reclaiming
//! the dead process gives back every block it had, cached or not, to the byte. Each loop
//! asserts that the crash fired at every step from the first to the last and that one
//! step more lets the operation complete, so it covers the whole batch however long it
//! grows.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

mod common;

use common::Trial;
use shm_core::testkit::{AlignedBuf, TestPlatform};
use shm_core::{Cache, CacheConfig, Error, Heap, HeapConfig, Offset, ProcessId, Region};

type H = Heap<'static, TestPlatform>;

/// Pid of the process with the cache (the one that dies).
const ACTOR: u32 = 1;
/// Pid of the process that recovers.
const RECOVERER: u32 = 2;
/// Journal steps after which an operation that still crashes counts as runaway.
const MAX_STEPS: u32 = 20_000;

const CONFIG: CacheConfig = CacheConfig {
    max_bytes: 16 << 10,
    max_block: 2 << 10,
    refill_bytes: 2 << 10,
};

/// A heap with another process (pid 100) holding blocks, as bytes, and those blocks.
struct World {
    image: Vec<u8>,
    theirs: Vec<Offset>,
}

fn world() -> World {
    let buf = AlignedBuf::new(256 * 1024);
    // SAFETY: `buf` outlives `heap`, dropped at the end of this function.
    let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
    let heap = Heap::init(region, HeapConfig::default(), TestPlatform::new(RECOVERER)).unwrap();
    let other = heap.register_as(ProcessId::from_pid(100)).unwrap();
    let theirs = (0..10)
        .map(|i| heap.try_alloc(other, 50 + i * 70).unwrap())
        .collect();
    heap.check().unwrap();
    drop(heap);
    World {
        image: buf.bytes().to_vec(),
        theirs,
    }
}

/// What the other process's world looks like: free bytes, used blocks, processes, and
/// its blocks' owners.
fn baseline(heap: &H, w: &World) -> (u64, u32, u32, Vec<Option<shm_core::ProcSlot>>) {
    let rep = heap.check().unwrap();
    let owners = w
        .theirs
        .iter()
        .map(|&b| heap.owner_of(b).unwrap())
        .collect();
    (rep.free_bytes, rep.used_blocks, rep.processes, owners)
}

/// An operation of the cache, after `setup` (run without a crash).
struct Scenario {
    name: &'static str,
    setup: fn(&mut Cache<'_, 'static, TestPlatform>),
    op: fn(&mut Cache<'_, 'static, TestPlatform>) -> Result<(), Error>,
}

/// Runs `s` on a fresh copy, crashing at step `arm`; after a crash the actor is declared
/// dead, another process checks the heap and reclaims it, and the other process's world
/// must be exactly as before the cache existed. Returns whether the crash fired and the
/// blocks that were cached when it did.
fn run(w: &World, s: &Scenario, arm: Option<u32>) -> (bool, u32) {
    let t = Trial::attach(&w.image, ACTOR);
    let heap = &t.heap;
    let before = baseline(heap, w);
    let mut cache = heap.cache(CONFIG).unwrap();
    (s.setup)(&mut cache);
    if let Some(k) = arm {
        heap.faults().arm(k);
    }
    let r = (s.op)(&mut cache);
    let fired = arm.is_some() && !heap.faults().armed();
    heap.faults().arm(0);
    assert_eq!(fired, r == Err(Error::InjectedCrash), "{}: {r:?}", s.name);
    if !fired {
        assert_eq!(r, Ok(()), "{}", s.name);
        drop(cache);
        assert_eq!(baseline(heap, w), before, "{}: plain run", s.name);
        return (false, 0);
    }
    // The process died: its cache object with it (nothing of it runs again).
    std::mem::forget(cache);
    t.platform.kill(ACTOR);
    t.platform.set_pid(RECOVERER);
    let mid = match heap.check() {
        Ok(rep) => rep,
        Err(e) => panic!("{} crashed at step {arm:?}: check: {e}", s.name),
    };
    assert_eq!(heap.reclaim_dead(), Ok(1), "{} at {arm:?}", s.name);
    assert_eq!(
        baseline(heap, w),
        before,
        "{} crashed at step {arm:?}: after reclaiming the dead process",
        s.name
    );
    (true, mid.cached_blocks)
}

/// Crashes at every step 1..=N fire, N+1 completes. Returns N and the most blocks a
/// crash left cached.
fn crash_every_step(w: &World, s: &Scenario) -> (u32, u32) {
    let mut most = 0;
    let mut k = 1;
    loop {
        let (fired, cached) = run(w, s, Some(k));
        if !fired {
            break;
        }
        most = most.max(cached);
        assert!(
            k < MAX_STEPS,
            "{}: still crashing after {MAX_STEPS}",
            s.name
        );
        k += 1;
    }
    assert!(k > 1, "{}: the crash never fired", s.name);
    (k - 1, most)
}

fn fill(cache: &mut Cache<'_, 'static, TestPlatform>) {
    let blocks: Vec<Offset> = (0..24).map(|_| cache.alloc(100).unwrap()).collect();
    for b in blocks {
        cache.free(b).unwrap();
    }
}

fn nothing(_: &mut Cache<'_, 'static, TestPlatform>) {}

/// A refill fetches a batch of blocks in one lock acquisition, carved in runs of up to 32
/// blocks, each run one journaled operation. A batch of one run (16 blocks of 100 B here)
/// commits all or nothing: a crash at any step leaves no block cached, and nothing lost.
#[test]
// Hundreds of attached copies: too slow for miri, which runs the killed-with-a-full-cache
// test below and, in crash_steps.rs, the same journal and lock-breaking code.
#[cfg_attr(miri, ignore)]
fn a_crash_at_every_step_of_a_refill_loses_nothing() {
    let w = world();
    let s = Scenario {
        name: "refill",
        setup: nothing,
        op: |c| c.alloc(100).map(drop),
    };
    let (steps, most) = crash_every_step(&w, &s);
    assert_eq!(most, 0, "one run: nothing committed before a crash");
    assert!(
        steps > 20,
        "{steps} steps: more than one allocation's worth"
    );
}

/// A batch of several runs (64 blocks of 16 B, carved 16, 16 and 32 at a time: the
/// member's 16 initial owner cells, then the array doubling when it has none free): a
/// crash in a later run leaves the earlier runs' blocks cached and owned by the dead
/// process, and reclaiming it gives them all back. A crash inside a growth is among the
/// steps.
#[test]
#[cfg_attr(miri, ignore)] // as above
fn a_crash_at_every_step_of_a_refill_in_several_runs_loses_nothing() {
    let w = world();
    let s = Scenario {
        name: "refill in several runs",
        setup: nothing,
        op: |c| c.alloc(16).map(drop),
    };
    let (steps, most) = crash_every_step(&w, &s);
    assert_eq!(most, 32, "two runs committed before the third crashed");
    assert!(
        steps > 64,
        "{steps} steps: more than one block's worth each"
    );
}

/// A drain returns the cached blocks in batches, each block its own journaled free: a
/// crash at any step leaves each block either cached or in the heap.
#[test]
// Hundreds of attached copies: too slow for miri, which runs the killed-with-a-full-cache
// test below and, in crash_steps.rs, the same journal and lock-breaking code.
#[cfg_attr(miri, ignore)]
fn a_crash_at_every_step_of_a_drain_loses_nothing() {
    let w = world();
    let s = Scenario {
        name: "drain",
        setup: fill,
        op: |c| c.drain(),
    };
    let (steps, most) = crash_every_step(&w, &s);
    assert!(most >= 2, "{most}");
    assert!(steps > 20, "{steps}");
}

/// Frees into a full class go to the heap (and allocations past the cached blocks
/// refill): forty allocations and frees through a cache that holds blocks already,
/// crashed at every step.
#[test]
// Hundreds of attached copies: too slow for miri, which runs the killed-with-a-full-cache
// test below and, in crash_steps.rs, the same journal and lock-breaking code.
#[cfg_attr(miri, ignore)]
fn a_crash_at_every_step_of_frees_into_a_full_class_loses_nothing() {
    let w = world();
    let s = Scenario {
        name: "allocations and frees past the class bound",
        setup: fill,
        op: |c| {
            let blocks = (0..40)
                .map(|_| c.alloc(100))
                .collect::<Result<Vec<_>, _>>()?;
            for b in blocks {
                c.free(b)?;
            }
            assert!(c.stats().passed > 0, "a free found its class full");
            Ok(())
        },
    };
    let (steps, most) = crash_every_step(&w, &s);
    assert!(most >= 2 && steps > 20, "{steps} steps, {most} cached");
}

/// A process killed while its cache is full (declared dead between operations): every
/// block comes back when it is reclaimed.
#[test]
fn a_process_killed_with_a_full_cache_loses_nothing() {
    let w = world();
    let t = Trial::attach(&w.image, ACTOR);
    let before = baseline(&t.heap, &w);
    let mut cache = t.heap.cache(CONFIG).unwrap();
    let mut live = Vec::new();
    for i in 0..200u32 {
        live.push(cache.alloc(16 + (i % 9) * 200).unwrap());
    }
    for (i, &b) in live.iter().enumerate() {
        if i % 4 != 0 {
            cache.free(b).unwrap();
        }
    }
    let cached = t.heap.check().unwrap().cached_bytes;
    assert!(cached > u64::from(CONFIG.max_bytes) / 2, "{cached}");
    std::mem::forget(cache);
    t.platform.kill(ACTOR);
    t.platform.set_pid(RECOVERER);
    assert_eq!(t.heap.reclaim_dead(), Ok(1));
    assert_eq!(baseline(&t.heap, &w), before);
}
