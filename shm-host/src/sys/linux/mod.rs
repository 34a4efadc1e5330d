//! Linux: POSIX shared memory and semaphores, futex waits, liveness from open-file-
//! description locks on the segment (see `process.rs`).

mod bell;
#[cfg(feature = "cli")]
pub mod cli;
mod process;
mod segment;
pub mod signal;
mod wait;

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use shm_core::doorbell::Doorbell;
use shm_core::{Region, WaitNotify, WaitOutcome};

use crate::error::Result;
use crate::name::SegmentName;
use crate::posix::PosixMapping;
use crate::support;
use crate::system::{CreateOptions, System};

/// The Linux system.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeSystem;

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

impl System for NativeSystem {
    type Mapping = PosixMapping;
    type Presence = process::Presence;

    fn enter(&self, m: &PosixMapping) -> Result<process::Presence> {
        process::Presence::enter(m.fd())
    }

    fn fork_generation(&self) -> u32 {
        process::fork_generation()
    }

    fn check_takeover(
        &self,
        name: &SegmentName,
        m: &PosixMapping,
        opts: &CreateOptions,
    ) -> Result<()> {
        let st = m.stat()?;
        // SAFETY: no preconditions.
        let me = unsafe { libc::geteuid() };
        let refuse = |why| crate::HostError::TakeoverRefused {
            name: name.as_str().to_owned(),
            why,
        };
        if st.uid != me {
            return Err(refuse(crate::Refusal::OtherUser { owner: st.uid, me }));
        }
        if st.mode & !opts.mode != 0 {
            return Err(refuse(crate::Refusal::WiderMode {
                found: st.mode,
                asked: opts.mode,
            }));
        }
        Ok(())
    }

    fn terminate(&self, m: &PosixMapping, id: shm_core::ProcessId) -> Result<bool> {
        process::terminate(m.fd(), id)
    }

    fn object_size(&self, m: &PosixMapping) -> Result<u64> {
        Ok(m.stat()?.size)
    }

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
