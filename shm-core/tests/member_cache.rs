//! Caches over a member the caller also uses (`Heap::member_cache`): the blocks it hands
//! out are the member's ordinary blocks; any block the member owns alone (allocated
//! elsewhere, or received) can be freed into it; it follows the member's record when
//! another process's gives move it; dropping it gives the cached blocks back and leaves
//! the member registered.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

mod common;

use common::Fixture;
use shm_core::format::{KIND_CLIENT, KIND_SERVER};
use shm_core::{CacheConfig, Error, Offset, ProcessId, Received, SendMode};

/// A block from a member cache is the member's own (raw operations work on it once it is
/// handed out); a block the member allocated directly, or was given, goes into the cache
/// and comes back from it; a block co-owned with another member is refused with
/// `Shared` and stays as it was.
#[test]
fn a_member_cache_takes_blocks_the_member_owns_alone() {
    let f = Fixture::new(1 << 20);
    let me = f.heap.register().unwrap();
    let other = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    // SAFETY: this test acts on each block from one place at a time.
    let mut cache = unsafe { f.heap.member_cache(me, CacheConfig::default()) }.unwrap();

    let a = cache.alloc(100).unwrap();
    assert_eq!(f.heap.owner_of(a).unwrap(), Some(me.slot()));
    f.heap.free(me, a).unwrap(); // an ordinary block of `me`

    let direct = f.heap.try_alloc(me, 100).unwrap();
    cache.free(direct).unwrap();
    let received = f.heap.try_alloc(other, 100).unwrap();
    f.heap.give(other, received, me).unwrap();
    cache.free(received).unwrap();
    assert_eq!(f.heap.check().unwrap().cached_blocks, cache.stats().blocks);
    assert!(
        f.heap.free(me, direct).is_err(),
        "a cached block refuses raw frees"
    );

    let mut back = [cache.alloc(100).unwrap(), cache.alloc(100).unwrap()];
    back.sort();
    let mut want = [direct, received];
    want.sort();
    assert_eq!(
        back, want,
        "the blocks freed into the cache come back from it"
    );

    let shared = f.heap.try_alloc(other, 64).unwrap();
    f.heap.share(other, shared, me).unwrap();
    assert!(matches!(cache.free(shared), Err(Error::Shared { .. })));
    assert_eq!(f.heap.ref_count(shared).unwrap(), 2);
    f.heap.release(me, shared).unwrap();
    f.heap.free(other, shared).unwrap();
    for b in back {
        cache.free(b).unwrap();
    }
    f.heap.check().unwrap();
}

/// Another process's gives grow the member's owner array, which moves its record (and the
/// old record's block is reused and overwritten); the cache notices through the process
/// table and goes on freeing and handing out blocks correctly.
#[test]
fn a_member_cache_follows_its_record_when_gives_move_it() {
    let f = Fixture::new(4 << 20);
    let me = f.heap.register().unwrap();
    let other = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    // SAFETY: this test acts on each block from one place at a time.
    let mut cache = unsafe { f.heap.member_cache(me, CacheConfig::default()) }.unwrap();
    let first = cache.alloc(48).unwrap();
    cache.free(first).unwrap();

    let cap = f.heap.process(me.slot()).unwrap().cell_capacity;
    let gifts = if cfg!(miri) { cap + 4 } else { cap * 4 + 4 };
    let mut given = Vec::new();
    for _ in 0..gifts {
        let b = f.heap.try_alloc(other, 48).unwrap();
        f.heap.give(other, b, me).unwrap();
        given.push(b);
    }
    assert!(
        f.heap.process(me.slot()).unwrap().cell_capacity > cap,
        "the gives grew (so moved) the owner array"
    );
    // Whatever the old record's memory holds now is some other block's bytes.
    let filler: Vec<Offset> = (0..8)
        .map(|_| f.heap.try_alloc(other, 256).unwrap())
        .collect();
    for &b in &filler {
        let (p, len) = f.heap.payload(b).unwrap();
        // SAFETY: `other` owns `b`; `p` points at its `len` payload bytes.
        unsafe { core::ptr::write_bytes(p.as_ptr(), 0xA5, len as usize) };
    }

    for &b in &given {
        cache.free(b).unwrap();
    }
    assert_eq!(
        cache.alloc(48).unwrap(),
        *given.last().unwrap(),
        "LIFO within a class"
    );
    let rep = f.heap.check().unwrap();
    assert_eq!(rep.cached_blocks, cache.stats().blocks);
    drop(cache);
    assert_eq!(f.heap.check().unwrap().cached_blocks, 0, "dropping drains");
    // `me` is still registered and owns what it holds.
    let later = f.heap.try_alloc(me, 48).unwrap();
    f.heap.free(me, later).unwrap();
}

/// A message sent to a participant whose owner frees through a member cache: the block
/// lands in the cache and is handed out again, with no heap allocation.
#[test]
fn received_messages_are_freed_into_the_receivers_cache() {
    let f = Fixture::new(1 << 20);
    let server = f.heap.register().unwrap();
    let client = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    let sp = f.heap.create_participant(server, KIND_SERVER, 4).unwrap();
    f.heap.start_server(server, sp.at, 100, 3).unwrap();
    let cp = f.heap.create_participant(client, KIND_CLIENT, 4).unwrap();
    f.heap.connect(client, cp.at, |_| {}).unwrap();
    // SAFETY: this test acts on each block from one place at a time.
    let mut cache = unsafe { f.heap.member_cache(server, CacheConfig::default()) }.unwrap();
    let m = f.heap.try_alloc(client, 200).unwrap();
    f.heap
        .send(client, sp.id(), m, 7, SendMode::Give, |_| {})
        .unwrap();
    let got = loop {
        match f.heap.recv(&sp).unwrap() {
            Some(Received::Message { block, .. }) => break block,
            Some(_) => continue,
            None => panic!("the message is in the queue"),
        }
    };
    assert_eq!(got, m);
    cache.free(got).unwrap();
    let allocs = f.heap.stats().unwrap().allocs;
    assert_eq!(cache.alloc(200).unwrap(), m);
    assert_eq!(f.heap.stats().unwrap().allocs, allocs, "no heap allocation");
}

/// Service data the member owns alone - its reserve, a block from the reserve, a service
/// block, a participant block - is refused (`BadOffset`) and stays as it was: only the
/// member's own operations free it (a cached reserve could later be handed out by both the
/// reserve and the cache).
#[test]
fn a_member_cache_refuses_service_data() {
    let f = Fixture::new(1 << 20);
    let me = f.heap.register().unwrap();
    // SAFETY: this test acts on each block from one place at a time.
    let mut cache = unsafe { f.heap.member_cache(me, CacheConfig::default()) }.unwrap();
    let reserve = f.heap.reserve(me, 256).unwrap();
    assert!(matches!(cache.free(reserve), Err(Error::BadOffset { .. })));
    let p = f.heap.create_participant(me, KIND_CLIENT, 4).unwrap();
    assert!(matches!(cache.free(p.at), Err(Error::BadOffset { .. })));
    assert_eq!(f.heap.ref_count(reserve).unwrap(), 1);
    assert_eq!(f.heap.check().unwrap().cached_blocks, 0);
    let from_reserve = f.heap.alloc_from_reserve(me, 64).unwrap();
    assert_eq!(f.heap.ref_count(from_reserve).unwrap(), 1);
    assert!(matches!(
        cache.free(from_reserve),
        Err(Error::BadOffset { .. })
    ));
    let service = f.heap.try_alloc_service(me, 64).unwrap();
    assert!(matches!(cache.free(service), Err(Error::BadOffset { .. })));
    assert_eq!(f.heap.check().unwrap().cached_blocks, 0);
}

/// A member cache whose member unregistered, and whose slot (and likely record place) a
/// newcomer took, refuses to act (`StaleMember`) instead of taking the newcomer's blocks.
#[test]
fn a_member_cache_refuses_to_act_for_a_new_registration_in_its_slot() {
    let f = Fixture::new(1 << 20);
    let me = f.heap.register().unwrap();
    // SAFETY: each block is acted on from one place at a time; the cache is not used
    // for blocks after `me` unregisters (it is asked to, and must refuse).
    let mut cache = unsafe { f.heap.member_cache(me, CacheConfig::default()) }.unwrap();
    let b = cache.alloc(64).unwrap();
    cache.free(b).unwrap();
    f.heap.unregister(me).unwrap();
    let newcomer = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
    assert_eq!(newcomer.slot(), me.slot(), "the slot is reused");
    let theirs = f.heap.try_alloc(newcomer, 64).unwrap();
    assert!(matches!(cache.alloc(64), Err(Error::StaleMember { .. })));
    assert!(matches!(cache.free(theirs), Err(Error::StaleMember { .. })));
    assert_eq!(f.heap.owner_of(theirs).unwrap(), Some(newcomer.slot()));
    drop(cache);
    assert_eq!(f.heap.owner_of(theirs).unwrap(), Some(newcomer.slot()));
    f.heap.check().unwrap();
}
