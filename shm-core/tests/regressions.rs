//! Defects found by attacking the protocol layer, each pinned by the test that found it.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

mod common;

use common::Fixture;
use shm_core::format::INITIAL_CELLS;
use shm_core::format::KIND_CLIENT;
use shm_core::ProcessId;

/// A participant can be created when its owner's owner array is exactly full: the array
/// grows before the operation that carves the participant, so that operation does not
/// journal a whole array of fresh cells (it used to fail with `JournalFull`).
#[test]
fn participant_creation_with_a_full_owner_array() {
    for capacity in [2, 64, 1024] {
        let f = Fixture::new(1 << 20);
        let me = f.heap.register_as(ProcessId::from_pid(100)).unwrap();
        for _ in 0..INITIAL_CELLS {
            f.heap.try_alloc(me, 32).unwrap();
        }
        let info = f.heap.process(me.slot()).unwrap();
        assert_eq!(info.blocks, info.cell_capacity, "the owner array is full");
        f.heap
            .create_participant(me, KIND_CLIENT, capacity)
            .unwrap();
        f.heap.check().unwrap();
    }
}
