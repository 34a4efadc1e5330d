//! Windows providers for memory mapped by others ([`crate::foreign`]): liveness from the
//! process itself (its pid and creation time, see `process.rs`), which needs no object
//! behind the memory, so it serves a section handle received with `DuplicateHandle` as well
//! as any other memory shared between processes of this machine. Doorbells are the portable
//! [`PolledDoorbells`](crate::foreign::PolledDoorbells): Windows has no process-shared wait
//! object that can live inside the memory.

use shm_core::system::SystemResult;

use super::NativeSystem;
use crate::foreign::{ForeignMapping, Liveness};

/// The evidence of named Windows segments: a participant is alive while a process with its
/// pid and creation time runs (a process that cannot be queried counts as alive).
#[derive(Clone, Copy, Debug)]
pub struct ProcessLiveness {
    _every_participant_uses_it: (),
}

impl ProcessLiveness {
    /// Liveness from processes.
    ///
    /// # Safety
    ///
    /// Every participant of the memory uses `ProcessLiveness` (and runs on this machine):
    /// another provider's identities carry tags that are not creation times, so they would
    /// look dead.
    pub unsafe fn new() -> Self {
        ProcessLiveness {
            _every_participant_uses_it: (),
        }
    }
}

// SAFETY: presences are `NativeSystem`, whose `is_alive` answers `false` only when no
// running process has the pid, the process has exited, or its creation time does not hash
// to the tag (the pid was reused); a query that fails otherwise counts as alive. `new`'s
// contract makes every participant's tag such a hash.
unsafe impl Liveness for ProcessLiveness {
    type Presence = NativeSystem;

    fn enter(&self, _memory: &ForeignMapping) -> SystemResult<NativeSystem> {
        Ok(NativeSystem)
    }
}
