//! Compile-time layout assertions and the layout fingerprint: the top of the format layer,
//! since it names every structure below it.
//!
//! Every structure that lives in a region is `#[repr(C)]` and made of 32-bit words. Its
//! size and the offsets of its fields are asserted here at compile time, and folded into a
//! fingerprint that [`Heap::attach`](crate::Heap::attach) compares: a process built with a
//! different layout refuses to attach instead of misreading the bytes.

use core::mem::{offset_of, size_of};

use crate::format::block::{BlockHeader, KEPT_OWNER};
use crate::format::doorbell::Doorbell;
use crate::format::header::{HeapState, RangeDesc, RegionHeader, FORMAT_VERSION};
use crate::format::index::{FreeIndex, FL_COUNT, SL_COUNT};
use crate::format::journal::{
    DeferredWords, JournalEntries, JournalEntry, JournalHead, JOURNAL_CAPACITY,
};
use crate::format::lock::LockWord;
use crate::format::message::MessageHeader;
use crate::format::owners::{OwnerCell, ProcessRecord, MAX_CELLS};
use crate::format::participant::Participant;
use crate::format::queue::{QueueHeader, QueueSlot};
use crate::format::server::ServerInfo;
use crate::region::MAX_RANGES;

// Compile-time layout assertions: the numbers are part of the format.
// The sums below are evaluated at compile time, on small constants: an overflow would be a
// build error, never a panic at run time.
#[allow(clippy::arithmetic_side_effects)]
const _: () = {
    assert!(size_of::<BlockHeader>() == 16);
    assert!(offset_of!(BlockHeader, size_flags) == 0);
    assert!(offset_of!(BlockHeader, prev_phys) == 4);
    assert!(offset_of!(BlockHeader, link) == 8);
    assert!(offset_of!(BlockHeader, owner) == 12);

    assert!(size_of::<OwnerCell>() == 8);
    assert!(offset_of!(OwnerCell, block) == 0);
    assert!(offset_of!(OwnerCell, next) == 4);

    assert!(size_of::<ProcessRecord>() == 56);
    assert!(offset_of!(ProcessRecord, waiting) == 48);
    assert!(offset_of!(ProcessRecord, pid) == 0);
    assert!(offset_of!(ProcessRecord, tag) == 4);
    assert!(offset_of!(ProcessRecord, slot) == 8);
    assert!(offset_of!(ProcessRecord, serial) == 12);
    assert!(offset_of!(ProcessRecord, cell_capacity) == 16);
    assert!(offset_of!(ProcessRecord, cells_used) == 20);
    assert!(offset_of!(ProcessRecord, free_cell) == 24);
    assert!(offset_of!(ProcessRecord, reserve) == 28);
    assert!(offset_of!(ProcessRecord, owned_bytes) == 32);
    assert!(offset_of!(ProcessRecord, app) == 36);

    assert!(size_of::<RangeDesc>() == 8);
    assert!(size_of::<LockWord>() == 8);
    assert!(size_of::<JournalEntry>() == 8);
    assert!(size_of::<JournalHead>() == 8);
    assert!(size_of::<DeferredWords>() == 16);
    assert!(size_of::<JournalEntries>() == 8 * JOURNAL_CAPACITY);
    assert!(size_of::<HeapState>() == 64);

    assert!(offset_of!(RegionHeader, magic) == 0);
    assert!(offset_of!(RegionHeader, version) == 8);
    assert!(offset_of!(RegionHeader, fingerprint) == 12);
    assert!(offset_of!(RegionHeader, size) == 16);
    assert!(offset_of!(RegionHeader, align) == 20);
    assert!(offset_of!(RegionHeader, range_count) == 24);
    assert!(offset_of!(RegionHeader, ready) == 28);
    assert!(offset_of!(RegionHeader, ranges) == 32);
    // The hot line: every operation writes these, and nothing else lives on the line.
    assert!(offset_of!(RegionHeader, cache_drain) == 96);
    assert!(offset_of!(RegionHeader, lock) == 128);
    assert!(offset_of!(RegionHeader, journal) == 136);
    assert!(offset_of!(RegionHeader, deferred) == 144);
    assert!(offset_of!(DeferredWords, at) == 0);
    assert!(offset_of!(DeferredWords, expect) == 4);
    assert!(offset_of!(DeferredWords, value) == 8);
    assert!(offset_of!(DeferredWords, bell) == 12);
    assert!(offset_of!(RegionHeader, lock_breaks) == 160);
    assert!(offset_of!(RegionHeader, free_epoch) == 164);
    assert!(offset_of!(RegionHeader, waiters) == 168);
    assert!(offset_of!(RegionHeader, derived_dirty) == 172);
    assert!(offset_of!(RegionHeader, lock_contended) == 176);
    assert!(offset_of!(RegionHeader, lock_wake) == 180);
    assert!(offset_of!(RegionHeader, heap) == 192);
    assert!(offset_of!(RegionHeader, root) == 256);
    assert!(offset_of!(RegionHeader, kept_root) == 260);
    assert!(offset_of!(HeapState, kept_blocks) == 60);
    assert!(offset_of!(RegionHeader, journal_entries) == 320);
    assert!(offset_of!(RegionHeader, index) == 320 + size_of::<JournalEntries>());
    assert!(size_of::<RegionHeader>() == offset_of!(RegionHeader, index) + size_of::<FreeIndex>());
    assert!(offset_of!(RegionHeader, index) % 64 == 0);
    assert!(offset_of!(FreeIndex, fl_bitmap) == 0);
    assert!(offset_of!(FreeIndex, sl_bitmap) == 4);
    assert!(offset_of!(FreeIndex, heads) == 128);
    assert!(size_of::<FreeIndex>() == 128 + 4 * FL_COUNT * SL_COUNT);
    assert!(size_of::<RegionHeader>() % 16 == 0);
    assert!(size_of::<ServerInfo>() == 128);
    assert!(offset_of!(ServerInfo, state) == 0);
    assert!(offset_of!(ServerInfo, generation) == 4);
    assert!(offset_of!(ServerInfo, participant) == 20);
    assert!(offset_of!(ServerInfo, serial) == 36);

    assert!(size_of::<Participant>() == 64);
    assert!(offset_of!(Participant, kind) == 0);
    assert!(offset_of!(Participant, queue) == 24);
    assert!(offset_of!(Participant, bell) == 28);
    assert!(offset_of!(Participant, keepalive) == 32);
    assert!(offset_of!(Participant, serial) == 44);
    assert!(size_of::<Doorbell>() == 128);
    assert!(offset_of!(Doorbell, os) == 64);
    assert!(size_of::<QueueHeader>() == 192);
    assert!(offset_of!(QueueHeader, tail) == 0);
    assert!(offset_of!(QueueHeader, head) == 64);
    assert!(offset_of!(QueueHeader, capacity) == 128);
    assert!(size_of::<QueueSlot>() == 32);
    assert!(offset_of!(QueueSlot, from) == 12);
    assert!(offset_of!(QueueSlot, from_serial) == 16);
    assert!(size_of::<MessageHeader>() == 16);
};

/// FNV-1a over a list of numbers, usable in constant context.
const fn fnv1a(values: &[usize]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut rest = values;
    while let [value, tail @ ..] = rest {
        let mut bytes: &[u8] = &(*value as u32).to_le_bytes();
        while let [byte, more @ ..] = bytes {
            hash ^= *byte as u32;
            hash = hash.wrapping_mul(0x0100_0193);
            bytes = more;
        }
        rest = tail;
    }
    hash
}

/// Fingerprint of every structure's layout in this build. Two builds with the same
/// fingerprint read each other's regions; any change of a size, an offset or a format
/// constant changes it.
pub const LAYOUT_FINGERPRINT: u32 = fnv1a(&[
    FORMAT_VERSION as usize,
    MAX_RANGES,
    JOURNAL_CAPACITY,
    size_of::<RegionHeader>(),
    offset_of!(RegionHeader, cache_drain),
    offset_of!(RegionHeader, lock),
    offset_of!(RegionHeader, heap),
    offset_of!(RegionHeader, deferred),
    size_of::<DeferredWords>(),
    offset_of!(RegionHeader, derived_dirty),
    offset_of!(RegionHeader, lock_contended),
    offset_of!(RegionHeader, lock_wake),
    offset_of!(RegionHeader, root),
    offset_of!(RegionHeader, kept_root),
    offset_of!(HeapState, kept_blocks),
    KEPT_OWNER as usize,
    offset_of!(RegionHeader, journal_entries),
    offset_of!(RegionHeader, index),
    size_of::<FreeIndex>(),
    FL_COUNT,
    SL_COUNT,
    size_of::<ServerInfo>(),
    offset_of!(ServerInfo, state),
    size_of::<Participant>(),
    size_of::<Doorbell>(),
    size_of::<QueueHeader>(),
    size_of::<QueueSlot>(),
    offset_of!(QueueSlot, from_serial),
    offset_of!(ServerInfo, serial),
    offset_of!(Participant, serial),
    size_of::<MessageHeader>(),
    size_of::<HeapState>(),
    size_of::<BlockHeader>(),
    offset_of!(BlockHeader, link),
    offset_of!(BlockHeader, owner),
    size_of::<OwnerCell>(),
    size_of::<ProcessRecord>(),
    offset_of!(ProcessRecord, cell_capacity),
    offset_of!(ProcessRecord, app),
    MAX_CELLS as usize,
]);
