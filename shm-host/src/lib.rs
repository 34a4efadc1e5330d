//! Host platform for shm-core (filled in by the IPC work).
