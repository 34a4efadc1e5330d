//! [`System`]: what the host layer needs from an operating system beyond the core's
//! [`Platform`](shm_core::Platform): named segments and doorbells. Linux and Windows
//! implementations live in `sys/`; QNX's in the `shm-qnx` crate.

use std::time::Duration;

use shm_core::doorbell::Doorbell;
use shm_core::{Region, WaitOutcome};

use crate::error::Result;
use crate::name::SegmentName;

/// A mapped segment: memory shared with other processes, unmapped on drop.
pub trait Mapping: Send + Sync + 'static {
    /// Start of the mapping.
    fn as_ptr(&self) -> *mut u8;
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Whether the mapping is empty (never, for a usable segment).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Options for creating a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// Permission bits on POSIX systems (default 0600: only the creating user).
    pub mode: u32,
    /// Touch every page at creation so that no page fault happens later on the hot path.
    pub prefault: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            mode: 0o600,
            prefault: false,
        }
    }
}

/// An operating system, as the host layer uses it.
pub trait System: shm_core::Platform + Clone + Send + Sync + 'static {
    /// Its mapping type.
    type Mapping: Mapping;

    /// Creates a new segment of `size` bytes; fails with
    /// [`HostError::Exists`](crate::HostError::Exists) if the name is taken.
    fn create(&self, name: &SegmentName, size: usize, opts: CreateOptions)
        -> Result<Self::Mapping>;

    /// Maps an existing segment; fails with [`HostError::NotFound`](crate::HostError::NotFound).
    fn open(&self, name: &SegmentName) -> Result<Self::Mapping>;

    /// Removes a segment's name (mappings stay valid until unmapped).
    fn unlink(&self, name: &SegmentName) -> Result<()>;

    /// Names of the segments this library created that still exist (for `shmipc clean`).
    /// Systems whose segments cannot outlive their last user return an empty list.
    fn list(&self) -> Result<Vec<SegmentName>>;

    /// Prepares the wait object in `bell` (called by the bell's owner before anyone rings).
    fn bell_init(&self, m: &Self::Mapping, region: &Region<'_>, bell: &Doorbell) -> Result<()>;

    /// Wakes the owner of `bell`.
    fn bell_ring(&self, m: &Self::Mapping, region: &Region<'_>, bell: &Doorbell) -> Result<()>;

    /// Sleeps until `bell` rings or `timeout` passes (may wake spuriously).
    fn bell_wait(
        &self,
        m: &Self::Mapping,
        region: &Region<'_>,
        bell: &Doorbell,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome>;

    /// Releases the wait object in `bell` (its owner, when leaving).
    fn bell_destroy(&self, m: &Self::Mapping, region: &Region<'_>, bell: &Doorbell);
}
