//! A position-independent heap_5 allocator with owner tables and offset queues, over any
//! byte region: a firmware RAM bank, or a shared-memory segment mapped by several processes
//! at different addresses.
//!
//! Everything lives in the region and every link in it is an [`Offset`], so the same bytes
//! work in every process. The crate is `no_std`, allocates nothing itself and never names
//! an operating system: what it needs from one (who am I, is that process alive, how to
//! wait) comes in through the small traits [`Processes`], [`WaitNotify`] and [`Platform`].
//!
//! ```
//! use shm_core::{Heap, HeapConfig, Region, SpinPlatform};
//!
//! // Any 16-byte-aligned memory will do; here, a buffer on the stack.
//! #[repr(align(16))]
//! struct Memory([u8; 64 * 1024]);
//! let mut memory = Memory([0; 64 * 1024]);
//!
//! let region = Region::from_slice(&mut memory.0)?;
//! let heap = Heap::init(region, HeapConfig::default(), SpinPlatform::new(1))?;
//! let me = heap.register()?; // a Member: the right to act as this registration
//! let other = heap.register_as(shm_core::ProcessId::from_pid(2))?;
//!
//! let block = heap.try_alloc(me, 100)?; // an offset, valid in every process
//! heap.give(me, block, other)?; // ownership moves: this is what a send does
//! heap.free(other, block)?;
//!
//! heap.check()?; // every invariant holds
//! assert_eq!(heap.stats()?.allocs, 1);
//! # Ok::<(), shm_core::Error>(())
//! ```
//!
//! The crate is built in layers, each using only the ones below it (see the README's
//! architecture section):
//! 1. [`Offset`], the identities ([`ProcessId`], [`ProcSlot`], [`Incarnation`],
//!    [`Member`]), [`Error`], and what the core asks of an operating system
//!    ([`Processes`], [`WaitNotify`]);
//! 2. [`Region`]: the only place an offset becomes a pointer;
//! 3. [`format`]: every structure stored in a region, the header, the layout fingerprint;
//! 4. the journal, the lock, the [`OffsetQueue`] and the [`Platform`] trait;
//! 5. the [`Heap`]: allocator, owner tables, recovery, checks;
//! 6. the client/server protocol over the heap;
//! 7. the `GlobalAlloc` adapter and the test kit.
#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]
// Offsets, lengths and counts in a region are untrusted (another process, or hostile
// bytes, may have written anything): arithmetic on them is checked (an `Err`, never a
// panic, which would leave the region lock held for good), wrapping where wrapping is
// meant, and every index is bounds-checked.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
#![warn(missing_docs)]

#[cfg(feature = "testkit")]
extern crate alloc;

mod error;
pub mod format;
#[cfg(feature = "global-alloc")]
mod global_alloc;
mod heap;
mod ids;
mod journal;
mod lock;
mod offset;
mod os;
mod platform;
mod protocol;
mod queue;
mod region;
pub mod system;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{AttachError, Corruption, CorruptionKind, Error};
pub use format::{Control, Doorbell, MessageHeader};
#[cfg(feature = "global-alloc")]
pub use global_alloc::RegionAllocator;
pub use heap::{
    BlockInfo, Cache, CacheConfig, CacheStats, CheckReport, Heap, HeapConfig, HeapStats,
    ProcessInfo, ProcessIter, ReclaimReport,
};
pub use ids::{Incarnation, Member, ProcSlot, ProcessId};
#[cfg(feature = "fault-injection")]
pub use journal::FaultInjector;

/// Whether this build has the `fault-injection` feature (for tests): every journaled write
/// then also checks whether an injected crash is due, about 40 checks per operation. The
/// benchmarks print it, since cargo turns the feature on for everything a build shares with
/// a crate whose tests need it (a workspace-wide `cargo bench`, for one).
pub const FAULT_INJECTION: bool = cfg!(feature = "fault-injection");
pub use offset::Offset;
pub use os::{Processes, WaitNotify, WaitOutcome};
#[cfg(feature = "critical-section")]
pub use platform::CriticalSectionPlatform;
pub use platform::{Platform, SpinPlatform};
pub use protocol::{
    Beat, ParticipantId, ParticipantInfo, ParticipantRef, Received, SendMode, ServerStatus,
};
pub use queue::{OffsetQueue, QueueEntry};
pub use region::{RawRange, Region, ShmSafe};
pub use system::{CreateOptions, Mapping, SegmentName, System, SystemError};
