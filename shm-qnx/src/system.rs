//! [`QnxSystem`]: shm-core's [`System`] on QNX Neutrino, assembled from the shared POSIX
//! pieces (`shm-posix`) and this crate's QNX parts.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use shm_core::system::{CreateOptions, SegmentName, System, SystemResult as Result};
use shm_core::Doorbell;
use shm_core::{Platform, ProcessId, Processes, Region, WaitNotify, WaitOutcome};
use shm_polling as polling;
use shm_posix::{sem, PosixMapping};

use crate::{process, segment};

/// QNX Neutrino (7.1 and 8.0): POSIX shared memory sized with `shm_ctl`, `sem_t`
/// doorbells, liveness from `DCMD_PROC_INFO`, polled waits. See the crate documentation
/// for what each part uses and why.
#[derive(Clone, Copy, Debug, Default)]
pub struct QnxSystem;

impl Processes for QnxSystem {
    fn current_process(&self) -> ProcessId {
        process::current()
    }
    fn is_alive(&self, id: ProcessId) -> bool {
        process::is_alive(id)
    }
    fn fork_generation(&self) -> u32 {
        fork_generation()
    }
}

/// QNX forks: the pid stands for the fork generation, as it changes in a forked child, so
/// a handle or cache made before a fork refuses to act in the child.
fn fork_generation() -> u32 {
    std::process::id()
}

impl WaitNotify for QnxSystem {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        polling::poll_wait(word, expected, timeout)
    }
    /// Nothing to do: waiters poll the word (QNX has no futex; see the crate docs).
    fn notify_all(&self, _word: &AtomicU32) {}
    fn relax(&self, round: u32) {
        polling::relax(round)
    }
    fn now(&self) -> Option<Duration> {
        Some(polling::now())
    }
}

impl Platform for QnxSystem {}

// SAFETY: POSIX shared memory mapped whole by `PosixMapping` (sealed against resizing),
// unmapped only on drop; liveness is the pid with its start-time tag, a failed query
// counting as alive (process.rs).
unsafe impl System for QnxSystem {
    type Mapping = PosixMapping;
    // QNX has no PID namespaces: the pid with its start-time tag, checked with
    // `DCMD_PROC_INFO`, is the evidence (process.rs); a failed query counts as alive.
    type Presence = QnxSystem;

    fn fork_generation(&self) -> u32 {
        fork_generation()
    }

    fn enter(&self, _m: &PosixMapping) -> Result<QnxSystem> {
        Ok(*self)
    }

    fn check_takeover(
        &self,
        _name: &SegmentName,
        m: &PosixMapping,
        opts: &CreateOptions,
    ) -> Result<()> {
        m.check_takeover(opts)
    }

    fn create(&self, name: &SegmentName, size: usize, opts: CreateOptions) -> Result<PosixMapping> {
        segment::sys::create(&name.prefixed(), size, opts)
    }

    fn open(&self, name: &SegmentName) -> Result<PosixMapping> {
        PosixMapping::open(&name.prefixed())
    }

    fn unlink(&self, name: &SegmentName) -> Result<()> {
        PosixMapping::unlink(&name.prefixed())
    }

    fn list(&self, each: &mut dyn FnMut(SegmentName)) -> Result<()> {
        shm_posix::listing::list_dir(std::path::Path::new(segment::SHM_DIR), each)
    }

    fn bell_init(&self, _m: &PosixMapping, region: &Region<'_>, bell: &Doorbell) -> Result<()> {
        sem::init(region, bell)
    }

    fn bell_ring(&self, _m: &PosixMapping, region: &Region<'_>, bell: &Doorbell) -> Result<()> {
        sem::post(region, bell)
    }

    fn bell_wait(
        &self,
        _m: &PosixMapping,
        region: &Region<'_>,
        bell: &Doorbell,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome> {
        sem::wait(region, bell, timeout)
    }

    fn bell_destroy(&self, _m: &PosixMapping, region: &Region<'_>, bell: &Doorbell) {
        sem::destroy(region, bell)
    }
}
