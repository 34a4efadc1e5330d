//! Linux: POSIX shared memory and semaphores, futex waits, liveness from `/proc`.

mod bell;
mod process;
mod segment;
pub mod signal;
mod wait;

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use shm_core::doorbell::Doorbell;
use shm_core::{Platform, ProcessId, Processes, Region, WaitNotify, WaitOutcome};

use crate::error::Result;
use crate::name::SegmentName;
use crate::posix::PosixMapping;
use crate::support;
use crate::system::{CreateOptions, System};

/// The Linux system.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeSystem;

impl Processes for NativeSystem {
    fn current_process(&self) -> ProcessId {
        process::current()
    }
    fn is_alive(&self, id: ProcessId) -> bool {
        process::is_alive(id)
    }
}

impl WaitNotify for NativeSystem {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        wait::futex_wait(word, expected, timeout)
    }
    fn notify_all(&self, word: &AtomicU32) {
        wait::futex_wake_all(word)
    }
    fn relax(&self, round: u32) {
        support::relax(round)
    }
    fn now(&self) -> Option<Duration> {
        Some(support::now())
    }
}

impl Platform for NativeSystem {}

impl System for NativeSystem {
    type Mapping = PosixMapping;

    fn create(&self, name: &SegmentName, size: usize, opts: CreateOptions) -> Result<PosixMapping> {
        PosixMapping::create(&name.prefixed(), size, opts)
    }

    fn open(&self, name: &SegmentName) -> Result<PosixMapping> {
        PosixMapping::open(&name.prefixed())
    }

    fn unlink(&self, name: &SegmentName) -> Result<()> {
        PosixMapping::unlink(&name.prefixed())
    }

    fn list(&self) -> Result<Vec<SegmentName>> {
        support::list_segments(std::path::Path::new(segment::SHM_DIR))
    }

    fn bell_init(&self, _m: &PosixMapping, region: &Region<'_>, bell: &Doorbell) -> Result<()> {
        bell::init(region, bell)
    }

    fn bell_ring(&self, _m: &PosixMapping, region: &Region<'_>, bell: &Doorbell) -> Result<()> {
        bell::ring(region, bell)
    }

    fn bell_wait(
        &self,
        _m: &PosixMapping,
        region: &Region<'_>,
        bell: &Doorbell,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome> {
        bell::wait(region, bell, timeout)
    }

    fn bell_destroy(&self, _m: &PosixMapping, region: &Region<'_>, bell: &Doorbell) {
        bell::destroy(region, bell)
    }
}
