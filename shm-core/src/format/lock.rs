//! [`LockWord`]: the region lock's word, which records who holds it, and its primitive
//! transitions (take when free, take over from a holder, release). How a waiter decides
//! that a holder is dead is in the `lock` module.
//!
//! The holder is recorded as pid and tag in one 64-bit word, so a waiter never pairs one
//! holder's pid with another's tag. Targets without 64-bit atomics (Cortex-M) record the
//! pid only; there the lock is taken inside a critical section and never contended by
//! another process.

#[cfg(not(target_has_atomic = "64"))]
use core::sync::atomic::AtomicU32;
use core::sync::atomic::Ordering::Relaxed;

use crate::ids::ProcessId;
use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::region::ShmSafe;

/// The lock word in the region header: 0 when free, otherwise the holder.
#[repr(C, align(8))]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct LockWord {
    #[cfg(target_has_atomic = "64")]
    word: core::sync::atomic::AtomicU64,
    #[cfg(not(target_has_atomic = "64"))]
    word: [AtomicU32; 2],
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for LockWord {}

impl LockWord {
    #[cfg(target_has_atomic = "64")]
    fn pack(id: ProcessId) -> u64 {
        u64::from(id.pid) | (u64::from(id.tag) << 32)
    }

    #[cfg(target_has_atomic = "64")]
    fn cas(&self, from: ProcessId, to: ProcessId) -> bool {
        use core::sync::atomic::Ordering::Acquire;
        let from = Self::pack(from);
        self.word
            .compare_exchange(from, Self::pack(to), Acquire, Relaxed)
            .is_ok()
    }

    #[cfg(not(target_has_atomic = "64"))]
    fn cas(&self, from: ProcessId, to: ProcessId) -> bool {
        use core::sync::atomic::Ordering::Acquire;
        self.word[0]
            .compare_exchange(from.pid, to.pid, Acquire, Relaxed)
            .is_ok()
    }

    /// The current holder, if any: `None` exactly when the word is 0 (free). A non-zero
    /// word with pid 0 (only corrupted bytes make one) is a holder that cannot be alive.
    pub fn holder(&self) -> Option<ProcessId> {
        #[cfg(target_has_atomic = "64")]
        {
            let v = self.word.load(Relaxed);
            (v != 0).then_some(ProcessId {
                pid: v as u32,
                tag: (v >> 32) as u32,
            })
        }
        #[cfg(not(target_has_atomic = "64"))]
        {
            let pid = self.word[0].load(Relaxed);
            (pid != 0).then_some(ProcessId::from_pid(pid))
        }
    }

    /// Takes the lock if it is free.
    pub(crate) fn try_acquire(&self, me: ProcessId) -> bool {
        self.cas(ProcessId { pid: 0, tag: 0 }, me)
    }

    /// Takes the lock over from `dead`, if `dead` still holds it.
    pub(crate) fn try_break(&self, dead: ProcessId, me: ProcessId) -> bool {
        self.cas(dead, me)
    }

    /// Releases the lock (Release ordering publishes the operation's writes).
    pub(crate) fn release(&self) {
        use core::sync::atomic::Ordering::Release;
        #[cfg(target_has_atomic = "64")]
        self.word.store(0, Release);
        #[cfg(not(target_has_atomic = "64"))]
        self.word[0].store(0, Release);
    }
}
