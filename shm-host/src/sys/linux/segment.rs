//! Where Linux shows POSIX shared-memory objects (listed by
//! [`shm_posix::listing::list_dir`]).

/// The directory of POSIX shared-memory objects.
pub const SHM_DIR: &str = "/dev/shm";
