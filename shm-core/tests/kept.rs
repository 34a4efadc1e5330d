//! Kept blocks: owned by the region, not by a process, so they outlive every process.
//! Each test states the rule it checks.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

mod common;

use core::sync::atomic::Ordering::Relaxed;

use common::Fixture;
use shm_core::format::KEPT_OWNER;
use shm_core::{Error, Member, Offset, ProcessId};

fn two_processes(f: &Fixture) -> (Member, Member) {
    let a = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let b = f.heap.register_as(ProcessId::from_pid(101)).unwrap();
    (a, b)
}

/// A kept block survives the death and reclaim of every process, with its bytes; a later
/// process finds it through the kept root, takes it (which clears the root) and frees it.
#[test]
fn kept_block_outlives_every_process() {
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let x = f.heap.try_alloc(a, 100).unwrap();
    let (ptr, _) = f.heap.payload(x).unwrap();
    // SAFETY: `a` owns the block's 100 payload bytes alone.
    unsafe { ptr.as_ptr().write_bytes(0x5a, 100) };
    f.heap.keep(a, x).unwrap();
    f.heap.set_kept_root(a, Some(x)).unwrap();
    assert_eq!(f.heap.process(a.slot()).unwrap().blocks, 0);
    assert_eq!(f.heap.ref_count(x), Ok(0));
    assert_eq!(f.heap.owner_of(x), Ok(None));
    let rep = f.heap.check().unwrap();
    assert_eq!(rep.kept_blocks, 1);
    assert_eq!(f.heap.stats().unwrap().kept_blocks, 1);

    f.platform.kill(100);
    f.platform.kill(101);
    assert_eq!(f.heap.reclaim_dead(), Ok(2));
    assert_eq!(f.heap.stats().unwrap().processes, 0);
    assert_eq!(f.heap.kept_root(), Some(x));
    assert_eq!(f.heap.ref_count(x), Ok(0), "still a used block, kept");
    assert_eq!(f.heap.check().unwrap().kept_blocks, 1);

    let c = f.heap.register_as(ProcessId::from_pid(102)).unwrap();
    let root = f.heap.kept_root().unwrap();
    f.heap.take(c, root).unwrap();
    assert_eq!(f.heap.kept_root(), None);
    assert_eq!(f.heap.owner_of(root), Ok(Some(c.slot())));
    let (ptr, _) = f.heap.payload(root).unwrap();
    // SAFETY: `c` owns the block alone now.
    let bytes = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), 100) };
    assert!(bytes.iter().all(|&v| v == 0x5a));
    assert_eq!(f.heap.check().unwrap().kept_blocks, 0);
    f.heap.free(c, root).unwrap();
    f.heap.check().unwrap();
}

/// `keep` has `free`'s rules (sole owner only); a kept block refuses every operation of an
/// owner (`Kept`) until taken; `take` and the root accept only kept blocks (`NotKept`);
/// taking twice fails.
#[test]
fn keep_and_take_refuse_what_they_must() {
    let f = Fixture::new(64 * 1024);
    let (a, b) = two_processes(&f);
    let x = f.heap.try_alloc(a, 64).unwrap();
    let y = f.heap.try_alloc(a, 64).unwrap();
    f.heap.share(a, y, b).unwrap();
    assert!(matches!(f.heap.keep(b, x), Err(Error::NotOwner { .. })));
    assert_eq!(f.heap.keep(a, y), Err(Error::Shared { offset: y }));
    assert_eq!(f.heap.take(a, x), Err(Error::NotKept { offset: x }));
    assert_eq!(
        f.heap.set_kept_root(a, Some(x)),
        Err(Error::NotKept { offset: x })
    );
    assert!(matches!(
        f.heap.keep(a, Offset::new(x.get() + 16)),
        Err(Error::BadOffset { .. })
    ));

    f.heap.keep(a, x).unwrap();
    let kept = Err(Error::Kept { offset: x });
    assert_eq!(f.heap.keep(a, x), kept);
    assert_eq!(f.heap.free(a, x), kept);
    assert_eq!(f.heap.release(a, x).map(drop), kept);
    assert_eq!(f.heap.give(a, x, b), kept);
    assert_eq!(f.heap.share(a, x, b), kept);
    let mut owners = 0;
    f.heap.owners(x, |_| owners += 1).unwrap();
    assert_eq!(owners, 0);

    f.heap.take(b, x).unwrap();
    assert_eq!(f.heap.take(a, x), Err(Error::NotKept { offset: x }));
    f.heap.free(b, x).unwrap();
    assert!(matches!(f.heap.take(a, x), Err(Error::DoubleFree { .. })));
    f.heap.set_kept_root(a, None).unwrap();
    assert_eq!(f.heap.check().unwrap().kept_blocks, 0);
}

/// Keeping a process's reserve ends the reserve; a kept root cleared by `None` stays
/// cleared while the block stays kept.
#[test]
fn keeping_the_reserve_ends_it() {
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let r = f.heap.reserve(a, 512).unwrap();
    f.heap.keep(a, r).unwrap();
    assert_eq!(f.heap.process(a.slot()).unwrap().reserve, 0);
    assert!(matches!(
        f.heap.alloc_from_reserve(a, 16),
        Err(Error::ReserveTooSmall { available: 0, .. })
    ));
    f.heap.set_kept_root(a, Some(r)).unwrap();
    f.heap.set_kept_root(a, None).unwrap();
    assert_eq!(f.heap.kept_root(), None);
    assert_eq!(f.heap.check().unwrap().kept_blocks, 1);
}

/// `check` finds a kept-block counter that disagrees with the blocks, a kept root naming a
/// block that is not kept, and a kept block with a reference count; `kept_root` ignores a
/// root word that names anything but a kept block.
#[test]
fn check_finds_broken_kept_state() {
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let x = f.heap.try_alloc(a, 64).unwrap();
    let y = f.heap.try_alloc(a, 64).unwrap();
    f.heap.keep(a, x).unwrap();
    let hdr = f.heap.raw_header_for_tests();

    hdr.heap.kept_blocks.store(2, Relaxed);
    assert!(matches!(f.heap.check(), Err(Error::Corrupted(_))));
    hdr.heap.kept_blocks.store(1, Relaxed);
    f.heap.check().unwrap();

    hdr.kept_root.store(y.get(), Relaxed);
    assert!(matches!(f.heap.check(), Err(Error::Corrupted(_))));
    assert_eq!(f.heap.kept_root(), None);
    hdr.kept_root.store(x.get() + 4, Relaxed);
    assert!(matches!(f.heap.check(), Err(Error::Corrupted(_))));
    assert_eq!(f.heap.kept_root(), None);
    hdr.kept_root.store(0, Relaxed);
    f.heap.check().unwrap();

    // A kept block with a reference count.
    let hsize = f.heap.block_header_size();
    let h: &shm_core::format::BlockHeader = f.heap.region().get(x.get() - hsize).unwrap();
    assert_eq!(h.owner.load(Relaxed), KEPT_OWNER);
    h.link.store(1, Relaxed);
    assert!(matches!(f.heap.check(), Err(Error::Corrupted(_))));
    assert!(matches!(f.heap.take(a, x), Err(Error::Corrupted(_))));
    h.link.store(0, Relaxed);
    f.heap.check().unwrap();
}

/// Keep and take are undone as a whole when they fail part-way (here: the kept counter
/// cannot move), and the heap stays consistent.
#[test]
fn a_failed_take_changes_nothing() {
    let f = Fixture::new(64 * 1024);
    let (a, _) = two_processes(&f);
    let x = f.heap.try_alloc(a, 64).unwrap();
    f.heap.keep(a, x).unwrap();
    let hdr = f.heap.raw_header_for_tests();
    hdr.heap.kept_blocks.store(0, Relaxed);
    assert!(matches!(f.heap.take(a, x), Err(Error::Corrupted(_))));
    hdr.heap.kept_blocks.store(1, Relaxed);
    assert_eq!(f.heap.process(a.slot()).unwrap().blocks, 0);
    f.heap.check().unwrap();
    f.heap.take(a, x).unwrap();
    f.heap.check().unwrap();
}
