//! A position-independent heap_5 allocator with owner tables and offset queues, over any
//! byte region: a firmware RAM bank, or a shared-memory segment mapped by several processes
//! at different addresses.
//!
//! Everything lives in the region and every link in it is an [`Offset`], so the same bytes
//! work in every process. The crate is `no_std`, allocates nothing itself and never names
//! an operating system: what it needs from one (who am I, is that process alive, how to
//! wait) comes in through the small traits in [`platform`].
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
//! let me = heap.register()?; // a process slot: owner of what it allocates
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
//! The modules, one concept each:
//! - [`region`]: this process's view of the memory; the only place offsets become pointers.
//! - [`header`], [`block`], [`owners`], [`journal`], [`lock`]: the `#[repr(C)]` structures
//!   stored in a region, with their layouts asserted in [`layout`].
//! - [`heap`]: the allocator and its operations.
//! - [`platform`]: the traits a platform implements.
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
#[cfg(feature = "std")]
extern crate std;

pub mod block;
pub mod doorbell;
pub mod error;
#[cfg(feature = "global-alloc")]
pub mod global_alloc;
pub mod header;
pub mod heap;
mod ids;
pub mod journal;
pub mod layout;
pub mod lock;
mod offset;
pub mod owners;
pub mod platform;
pub mod protocol;
pub mod queue;
pub mod region;
pub mod system;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{AttachError, Corruption, CorruptionKind, Error};
pub use heap::{CheckReport, Heap, HeapConfig, HeapStats, ProcessInfo, ReclaimReport};
pub use ids::{Incarnation, Member, ProcSlot};
pub use offset::Offset;
#[cfg(feature = "critical-section")]
pub use platform::CriticalSectionPlatform;
pub use platform::{Platform, ProcessId, Processes, SpinPlatform, WaitNotify, WaitOutcome};
pub use protocol::{Control, ParticipantRef, Received, SendMode, ServerStatus};
pub use queue::OffsetQueue;
pub use region::{RawRange, Region};
pub use system::{CreateOptions, Mapping, SegmentName, System, SystemError};
