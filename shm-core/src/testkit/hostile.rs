//! Attaching to arbitrary bytes: whatever the region holds, every call returns, with a
//! result or an error, without panicking, hanging or touching memory outside the region.
//!
//! Input layout: two bytes of region length (512..=65536, rounded to 16), the region image
//! (zero-padded when the input is short), then operations decoded as in [`ops`](super::ops).
//! A process cache runs beside the raw calls (the cache operations, and allocations and
//! frees of one member in eight, go through it; a crash op also drains it), and writes
//! scribble over words of the region as another process could, cached blocks' list links
//! included.

use crate::testkit::ops::{Decoder, Op};
use crate::testkit::{AlignedBuf, TestPlatform};
use crate::{CacheConfig, Heap, Offset, ProcSlot, Region};

/// Our pid while attached to hostile bytes. If the image's lock word happens to name it,
/// another is used: a lock held by "ourselves" is indistinguishable from a lock held by
/// another thread of this process, and waiting for it is correct behaviour, not a hang
/// of the library.
const PIDS: [u32; 2] = [7, 9];

/// Smallest and largest region the encoding can describe.
pub const REGION_LEN: (usize, usize) = (512, 65536);

/// Encodes a region image and operation bytes as input for [`run`]. `image.len()` must be
/// a multiple of 16 within [`REGION_LEN`].
pub fn encode(image: &[u8], ops: &[u8]) -> alloc::vec::Vec<u8> {
    let sel = (image.len().clamp(REGION_LEN.0, REGION_LEN.1 - 16) - REGION_LEN.0) as u16;
    let mut v = alloc::vec::Vec::with_capacity(2 + image.len() + ops.len());
    v.extend_from_slice(&sel.to_le_bytes());
    v.extend_from_slice(image);
    v.extend_from_slice(ops);
    v
}

/// Runs the hostile scenario on `data`. Returns how many operations succeeded (so a
/// caller can tell inputs that reached past `attach`).
pub fn run(data: &[u8]) -> u32 {
    let mut d = Decoder::new(data);
    let len_sel = u16::from_le_bytes([d.byte().unwrap_or(0), d.byte().unwrap_or(0)]);
    let len = (REGION_LEN.0 + usize::from(len_sel) % (REGION_LEN.1 - REGION_LEN.0)) & !15;
    let rest = d.rest();
    let image_len = len.min(rest.len());
    let buf = AlignedBuf::new(len);
    // SAFETY: `image_len <= len` bytes into a fresh buffer of `len` bytes; the source is a
    // different allocation.
    unsafe { core::ptr::copy_nonoverlapping(rest.as_ptr(), buf.as_ptr(), image_len) };
    let mut ops = Decoder::new(&rest[image_len..]);

    // SAFETY: `buf` outlives `heap` (declared before it, dropped after it) and nothing
    // else accesses it meanwhile.
    let region = match unsafe { Region::from_raw(buf.as_ptr(), len) } {
        Ok(r) => r,
        Err(_) => return 0,
    };
    let lock_at = core::mem::offset_of!(crate::format::RegionHeader, lock);
    let lock_holder = buf
        .bytes()
        .get(lock_at..lock_at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let me = if lock_holder == PIDS[0] {
        PIDS[1]
    } else {
        PIDS[0]
    };
    let platform = TestPlatform::only_me_alive(me);
    let heap = match Heap::attach(region, platform) {
        Ok(h) => h,
        Err(_) => return 0,
    };
    let mut cache = heap
        .cache(CacheConfig {
            max_bytes: 4096,
            max_block: 512,
            refill_bytes: 512,
        })
        .ok();
    let mut ok = 0u32;
    let mut count = |r: bool| ok += u32::from(r);
    count(heap.check().is_ok());
    count(heap.stats().is_ok());
    if let Ok(ps) = heap.processes() {
        for p in ps {
            count(p.is_ok());
        }
    }
    // Act as whatever record the image holds in the slot (its serial read back), or, for
    // an empty slot, as a made-up incarnation: both must give results, never harm.
    let inc = |w: u8| {
        let slot = ProcSlot(u16::from(w % 8));
        heap.process(slot).map_or(
            crate::Incarnation {
                slot,
                serial: u32::from(w),
            },
            |i| i.incarnation(),
        )
    };
    let slot = |w: u8| crate::Member::forged_for_tests(inc(w));
    let off = |p: u16| Offset::new(u32::from(p) * 16);
    for _ in 0..256 {
        let Some(op) = ops.op() else { break };
        let r = match op {
            Op::Register => heap.register().is_ok(),
            Op::Alloc { who, size } if who % 8 == 7 => {
                cache.as_mut().is_some_and(|c| c.alloc(size).is_ok())
            }
            Op::Free { who, pick, .. } if who % 8 == 7 => {
                cache.as_mut().is_some_and(|c| c.free(off(pick)).is_ok())
            }
            Op::Alloc { who, size } => heap.try_alloc(slot(who), size).is_ok(),
            Op::AllocService { who, size } => heap.try_alloc_service(slot(who), size).is_ok(),
            Op::AllocAt {
                who, pick, size, ..
            } => heap.alloc_at(slot(who), off(pick), size).is_ok(),
            Op::Free { who, pick, .. } | Op::FreeBad { who, pick, .. } => {
                heap.free(slot(who), off(pick)).is_ok()
            }
            Op::Reserve { who, size } => heap.reserve(slot(who), size).is_ok(),
            Op::AllocFromReserve { who, size } => heap.alloc_from_reserve(slot(who), size).is_ok(),
            Op::Give { who, pick, to, .. } => heap.give(slot(who), off(pick), slot(to)).is_ok(),
            Op::Share {
                who, pick, with, ..
            } => heap.share(slot(who), off(pick), slot(with)).is_ok(),
            Op::Release { who, pick, .. } => heap.release(slot(who), off(pick)).is_ok(),
            Op::Reclaim { who } => heap.reclaim(inc(who)).is_ok(),
            Op::Kill { .. } => heap.reclaim_dead().is_ok(),
            Op::Write { pick } => {
                // Another process writes a word: a list link, a header, anything.
                if let Ok(w) = heap
                    .region()
                    .get::<core::sync::atomic::AtomicU32>(off(pick).get())
                {
                    w.store(
                        u32::from(pick).wrapping_mul(0x9E37_79B9),
                        core::sync::atomic::Ordering::Relaxed,
                    );
                }
                heap.owners(off(pick), |_| {}).is_ok()
            }
            Op::Relocate => heap.check().is_ok(),
            Op::Crash { .. } => {
                let drained = cache.as_mut().is_some_and(|c| c.drain().is_ok());
                heap.stats().is_ok() | drained
            }
            Op::Keep { who, pick, .. } => heap.keep(slot(who), off(pick)).is_ok(),
            Op::Take { who, pick } => heap.take(slot(who), off(pick)).is_ok(),
            Op::CacheAlloc { size, .. } => cache.as_mut().is_some_and(|c| c.alloc(size).is_ok()),
            Op::CacheFree { pick, .. } => cache.as_mut().is_some_and(|c| c.free(off(pick)).is_ok()),
            Op::CacheDrain { .. } => cache.as_mut().is_some_and(|c| c.drain().is_ok()),
            Op::SetRoot { who, pick, clear } => {
                let root = (!clear).then(|| off(pick));
                let set = heap.set_kept_root(slot(who), root).is_ok();
                set | heap.kept_root().is_some()
            }
        };
        count(r);
    }
    drop(cache);
    drop(heap);
    drop(buf);
    ok
}
