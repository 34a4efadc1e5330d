//! Linux: POSIX shared memory and semaphores, futex waits, liveness from open-file-
//! description locks on the segment (see `process.rs`).

mod bell;
#[cfg(feature = "cli")]
pub mod cli;
pub mod file;
pub mod foreign;
mod process;
mod segment;
pub mod signal;
pub mod sysv;
mod wait;

use shm_core::system::{CreateOptions, SegmentName, System, SystemResult};
use shm_posix::PosixMapping;

/// Runs `f` on the system of kind `b`: all of them exist on Linux.
pub fn run_on_backend<F: crate::OnSystem>(b: &crate::Backend, f: F) -> Option<F::Output> {
    Some(match b {
        crate::Backend::Native | crate::Backend::Posix => f.on(NativeSystem),
        crate::Backend::Sysv => f.on(sysv::SysvSystem),
        crate::Backend::File(path) => f.on(file::FileSystem::file(path)),
    })
}

/// The kinds `shmipc clean` scans: POSIX and System V segments.
pub fn listed_backends() -> Vec<crate::Backend> {
    vec![crate::Backend::Posix, crate::Backend::Sysv]
}

/// The Linux system: POSIX shared memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeSystem;

wait::futex_wait_notify!(NativeSystem);

// SAFETY: POSIX shared memory mapped whole by `PosixMapping` (unmapped only on drop);
// liveness is the kernel's lock on the object (process.rs), dead only when the kernel
// says no live description holds the mark; the fork hook changes the generation.
unsafe impl System for NativeSystem {
    type Mapping = PosixMapping;
    type Presence = process::Presence;

    fn enter(&self, m: &PosixMapping) -> SystemResult<process::Presence> {
        process::Presence::enter(m.fd())
    }

    fn fork_generation(&self) -> u32 {
        process::fork_generation()
    }

    fn check_takeover(
        &self,
        _name: &SegmentName,
        m: &PosixMapping,
        opts: &CreateOptions,
    ) -> SystemResult<()> {
        m.check_takeover(opts)
    }

    fn terminate(&self, m: &PosixMapping, id: shm_core::ProcessId) -> SystemResult<bool> {
        process::terminate(m.fd(), id)
    }

    fn object_size(&self, m: &PosixMapping) -> SystemResult<u64> {
        Ok(m.stat()?.size)
    }

    fn create(
        &self,
        name: &SegmentName,
        size: usize,
        opts: CreateOptions,
    ) -> SystemResult<PosixMapping> {
        PosixMapping::create(&name.prefixed(), size, opts)
    }

    fn open(&self, name: &SegmentName) -> SystemResult<PosixMapping> {
        PosixMapping::open(&name.prefixed())
    }

    fn unlink(&self, name: &SegmentName) -> SystemResult<()> {
        PosixMapping::unlink(&name.prefixed())
    }

    fn list(&self, each: &mut dyn FnMut(SegmentName)) -> SystemResult<()> {
        shm_posix::listing::list_dir(std::path::Path::new(segment::SHM_DIR), each)
    }

    bell::sem_doorbells!(PosixMapping);
}
