//! Plain POSIX pieces shared by every POSIX system (Linux here, QNX in `shm-qnx`):
//! shared-memory objects and `sem_t` doorbells. Tested on Linux.

pub mod mapping;
pub mod sem;

pub use mapping::PosixMapping;
