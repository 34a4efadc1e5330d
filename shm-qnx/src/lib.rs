//! QNX platform for shm-core.
