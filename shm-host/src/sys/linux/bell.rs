//! Doorbells on Linux: a `sem_t` inside the doorbell, `sem_init(pshared = 1)`, shared with
//! every POSIX system through [`shm_posix::sem`] (placement, waits, errors);
//! timed waits use `CLOCK_MONOTONIC` on glibc.

pub use shm_posix::sem::{destroy, init, post as ring, wait};

/// The four doorbell methods of a Linux `System` whose mapping type is `$mapping`: a
/// `sem_t` in the doorbell, whatever kind of segment holds it (written once, used by
/// every Linux system).
macro_rules! sem_doorbells {
    ($mapping:ty) => {
        fn bell_init(
            &self,
            _m: &$mapping,
            region: &shm_core::Region<'_>,
            bell: &shm_core::Doorbell,
        ) -> shm_core::system::SystemResult<()> {
            $crate::sys::linux::bell::init(region, bell)
        }

        fn bell_ring(
            &self,
            _m: &$mapping,
            region: &shm_core::Region<'_>,
            bell: &shm_core::Doorbell,
        ) -> shm_core::system::SystemResult<()> {
            $crate::sys::linux::bell::ring(region, bell)
        }

        fn bell_wait(
            &self,
            _m: &$mapping,
            region: &shm_core::Region<'_>,
            bell: &shm_core::Doorbell,
            timeout: Option<std::time::Duration>,
        ) -> shm_core::system::SystemResult<shm_core::WaitOutcome> {
            $crate::sys::linux::bell::wait(region, bell, timeout)
        }

        fn bell_destroy(
            &self,
            _m: &$mapping,
            region: &shm_core::Region<'_>,
            bell: &shm_core::Doorbell,
        ) {
            $crate::sys::linux::bell::destroy(region, bell)
        }
    };
}
pub(crate) use sem_doorbells;
