//! OS-independent pieces the system implementations share, kept at their old paths: the
//! polled wait, backoff and clock ([`shm_polling`]) and the start-time tag
//! ([`shm_core::system::start_time_tag`]) now live in shm-core, so that `shm-qnx` uses
//! them without depending on this crate. [`list_segments`] collects a system's listing.

use crate::error::Result;
use crate::name::SegmentName;
use crate::system::System;

pub use shm_core::system::start_time_tag;
pub use shm_polling::{backoff, now, poll_wait, relax, MAX_SLEEP};

/// Names of the segments this library created that still exist on `system` (for
/// `shmipc clean`), sorted.
pub fn list_segments<S: System>(system: &S) -> Result<Vec<SegmentName>> {
    let mut names = Vec::new();
    system.list(&mut |name| names.push(name))?;
    names.sort();
    Ok(names)
}
