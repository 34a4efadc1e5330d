//! Doorbells on Linux: a `sem_t` inside the doorbell, `sem_init(pshared = 1)`, shared with
//! every POSIX system through [`shm_posix::sem`] (placement, waits, errors);
//! timed waits use `CLOCK_MONOTONIC` on glibc.

pub use shm_posix::sem::{destroy, init, post as ring, wait};
