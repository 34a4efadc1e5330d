//! Test support shared by the proptest suite and the fuzz targets (feature `testkit`).
//!
//! One pipeline serves both: bytes are decoded into operations ([`ops`]), the operations
//! run against a real heap and a simple reference model side by side ([`model`]), and
//! after every operation the heap's own `check()` and a comparison with the model must
//! pass. Proptest generates the bytes and shrinks failures; libFuzzer mutates them. A
//! second runner ([`hostile`]) attaches to arbitrary bytes and checks that nothing panics
//! or hangs.
//!
//! Failures are reported by panicking with a description: that is how both proptest and
//! libFuzzer learn of them.

// Test support only (feature `testkit`, never in a product build): its arithmetic and
// indexing are on values it made itself, and a panic here is how a test reports a failure,
// so the crate's deny of unchecked arithmetic and indexing does not apply.
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

pub mod hostile;
mod instance;
pub mod model;
mod model_apply;
mod model_cache;
pub mod ops;
mod protocol_driver;
pub mod protocol_ops;
pub mod snapshot;

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::sync::Arc;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
use core::time::Duration;

use crate::format::RegionHeader;
use crate::lock::{self, Acquired};
use crate::{Platform, ProcessId, Processes, WaitNotify, WaitOutcome};

/// Takes the region lock in `hdr` as `me`, exactly as every heap operation does: retrying,
/// sleeping on the platform's wait, breaking a dead holder's lock. Returns the dead holder
/// whose lock was broken, if any. For tests that drive the lock's wait protocol with a
/// platform of their own.
pub fn lock_acquire<P: Processes + WaitNotify>(
    hdr: &RegionHeader,
    platform: &P,
    me: ProcessId,
) -> Option<ProcessId> {
    match lock::acquire(hdr, platform, me) {
        Acquired::Free => None,
        Acquired::FromDead(dead) => Some(dead),
    }
}

/// Releases the region lock in `hdr` as every heap operation does, waking one sleeping
/// waiter if any may sleep (see [`lock_acquire`]).
pub fn lock_release<P: WaitNotify>(hdr: &RegionHeader, platform: &P) {
    lock::release(hdr, platform)
}

/// Heap memory aligned to 4096 bytes (a page, like a mapping), zeroed, freed on drop.
#[derive(Debug)]
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeroed bytes (`len` > 0).
    pub fn new(len: usize) -> Self {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (`layout` rounds 0 up to 64 bytes).
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }

    /// A copy of `bytes` at a new address.
    pub fn copy_of(bytes: &[u8]) -> Self {
        let b = Self::new(bytes.len());
        // SAFETY: `b` was just allocated with `bytes.len()` bytes and cannot overlap it.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), b.ptr.as_ptr(), bytes.len()) };
        b
    }

    fn layout(len: usize) -> Layout {
        match Layout::from_size_align(len.max(64), 4096) {
            Ok(l) => l,
            Err(_) => panic!("AlignedBuf: size {len} too large"),
        }
    }

    /// Start of the buffer.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes (only while no heap operation runs on them).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised (zeroed or copied) bytes owned by self.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.len)) };
    }
}

#[derive(Debug)]
struct PlatformState {
    /// The pid this "process" currently runs as (the lock records it).
    me: AtomicU32,
    /// Pids declared dead, as a bit set over pids 1..=4095.
    dead: [AtomicU32; 128],
    /// When set, every pid but `me` counts as dead (for attaching to arbitrary bytes).
    only_me_alive: AtomicU32,
}

/// A platform for simulated processes in one address space: the current pid can be
/// changed, and pids can be declared dead, so tests can "kill" the lock holder.
#[derive(Clone, Debug)]
pub struct TestPlatform(Arc<PlatformState>);

impl TestPlatform {
    /// A platform running as pid `me` (1..=4095), with everyone alive.
    pub fn new(me: u32) -> Self {
        TestPlatform(Arc::new(PlatformState {
            me: AtomicU32::new(me),
            dead: [const { AtomicU32::new(0) }; 128],
            only_me_alive: AtomicU32::new(0),
        }))
    }

    /// A platform for which only its own pid is alive.
    pub fn only_me_alive(me: u32) -> Self {
        let p = Self::new(me);
        p.0.only_me_alive.store(1, Relaxed);
        p
    }

    /// The pid operations currently run as.
    pub fn pid(&self) -> u32 {
        self.0.me.load(Relaxed)
    }

    /// Switches the current pid.
    pub fn set_pid(&self, pid: u32) {
        self.0.me.store(pid, Relaxed);
    }

    /// Declares `pid` (1..=4095) dead.
    pub fn kill(&self, pid: u32) {
        if let Some(w) = self.0.dead.get((pid / 32) as usize) {
            w.fetch_or(1 << (pid % 32), Relaxed);
        }
    }

    /// Whether `pid` was declared dead.
    pub fn is_dead(&self, pid: u32) -> bool {
        self.0
            .dead
            .get((pid / 32) as usize)
            .is_some_and(|w| w.load(Relaxed) & (1 << (pid % 32)) != 0)
    }
}

impl Processes for TestPlatform {
    fn current_process(&self) -> ProcessId {
        ProcessId::from_pid(self.pid())
    }
    fn is_alive(&self, id: ProcessId) -> bool {
        if self.0.only_me_alive.load(Relaxed) != 0 {
            return id.pid == self.pid();
        }
        !self.is_dead(id.pid)
    }
}

impl WaitNotify for TestPlatform {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        // Single-threaded tests: nobody else can change the word.
        if word.load(Relaxed) != expected {
            WaitOutcome::Woken
        } else if timeout.is_some() {
            WaitOutcome::TimedOut
        } else {
            WaitOutcome::Woken
        }
    }
    fn notify_all(&self, _word: &AtomicU32) {}
}

impl Platform for TestPlatform {}
