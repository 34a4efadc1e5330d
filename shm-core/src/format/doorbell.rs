//! [`Doorbell`]: how a sender wakes a receiver that sleeps.
//!
//! A receiver that finds its queue empty sets `waiting`, checks the queue once more, and
//! then sleeps on the platform's object in `os` (a `sem_t` placed by `sem_init(pshared=1)`
//! on POSIX systems). A sender that has published a message swaps `waiting` to 0 and rings
//! only if it was set, so a receiver that polls costs senders nothing and the semaphore
//! count stays bounded (at most one post per sleep, plus one stale post that causes one
//! spurious wake-up).

use core::sync::atomic::{fence, AtomicU32, Ordering::SeqCst};

use crate::error::{corrupt, CorruptionKind, Error};
use crate::offset::Offset;
use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::region::{Region, ShmSafe};

/// Bytes reserved for the platform's wait object.
pub const OS_AREA_BYTES: usize = 64;

/// Alignment of the platform area relative to the region base. `sem_t` needs 8 on the
/// platforms we know (misalignment makes `sem_post`/`sem_wait` fail with `EINVAL` on
/// Linux); the host layers assert their own type's requirement against this.
pub const OS_AREA_ALIGN: usize = 64;

/// A doorbell in the region: 128 bytes at a 64-aligned offset.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct Doorbell {
    /// 1 while the receiver sleeps or is about to.
    pub waiting: AtomicU32,
    /// Times rung (wrapping; diagnostics).
    pub rings: AtomicU32,
    /// Non-zero once the platform object in `os` is initialised.
    pub os_ready: AtomicU32,
    /// Reserved, zero.
    pub reserved: [AtomicU32; 13],
    /// The platform's wait object (e.g. `sem_t`); 64 bytes, 64-aligned.
    pub os: [AtomicU32; 16],
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for Doorbell {}

impl Doorbell {
    /// Receiver side: announce the intention to sleep. Re-check the queue after this and
    /// before sleeping.
    pub fn prepare_wait(&self) {
        self.waiting.store(1, SeqCst);
        // Store `waiting`, then load the queue; the sender publishes, then reads `waiting`.
        // That is the store-buffering pattern: without a SeqCst fence between the store
        // and the (Acquire) queue load on this side, and one in `should_ring` on the
        // other, both sides may miss each other's write (the receiver sees an empty
        // queue, the sender sees no waiter) and the receiver sleeps on a published
        // message. With both fences, one of them precedes the other in the single total
        // order, so either the re-check sees the message or the sender sees `waiting`.
        fence(SeqCst);
    }

    /// Receiver side: no longer sleeping.
    pub fn cancel_wait(&self) {
        self.waiting.store(0, SeqCst);
    }

    /// Sender side, after publishing: whether the receiver must be woken (the platform
    /// then posts its object). At most one sender gets `true` per sleep. Must be called
    /// after the publication it rings for (the fence inside relies on that order).
    pub fn should_ring(&self) -> bool {
        // Pairs with the fence in `prepare_wait`: orders the caller's (Release) publish
        // before this read of `waiting`, so a receiver whose re-check missed the message
        // is seen waiting here. The SeqCst swap alone does not order the earlier Release
        // store of another location.
        fence(SeqCst);
        if self.waiting.swap(0, SeqCst) != 0 {
            self.rings.fetch_add(1, SeqCst);
            true
        } else {
            false
        }
    }

    /// A pointer to the platform area, checked to be aligned for `align` and large enough
    /// for `size` bytes. This is the one placement rule every platform uses.
    pub fn os_area(
        &self,
        region: &Region<'_>,
        size: usize,
        align: usize,
    ) -> Result<*mut u8, Error> {
        let at = region.offset_of(&self.os[0])?;
        let ptr = region.ptr(Offset::new(at), OS_AREA_BYTES as u32)?;
        // An `align` of 0 (the caller's) is refused like a misaligned area, not a panic.
        if size > OS_AREA_BYTES
            || align > OS_AREA_ALIGN
            || (ptr.as_ptr() as usize).checked_rem(align) != Some(0)
        {
            return Err(corrupt(at, CorruptionKind::Misaligned));
        }
        Ok(ptr.as_ptr())
    }
}
