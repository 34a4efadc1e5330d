//! Where Linux shows POSIX shared-memory objects (listed by
//! [`support::list_segments`](crate::support::list_segments)).

/// The directory of POSIX shared-memory objects.
pub const SHM_DIR: &str = "/dev/shm";
