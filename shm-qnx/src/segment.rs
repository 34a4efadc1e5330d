//! Segments: POSIX shared-memory objects, sized with QNX's `shm_ctl()`, and their listing
//! under `/dev/shmem`.
//!
//! Opening, mapping and unlinking are [`shm_posix::PosixMapping`]'s, shared with
//! Linux. Only the step that gives a new object its memory differs: where Linux calls
//! `ftruncate`, QNX calls `shm_ctl(fd, SHMCTL_ANON | SHMCTL_SEAL [| SHMCTL_LAZY], 0, size)`
//! (see [`shmctl_flags`]), because that call adds two things `ftruncate` cannot:
//!
//! * `SHMCTL_SEAL` (QNX 7.1 and later): no process, the creator included, can change the
//!   object's size or backing afterwards. Every peer maps the whole segment and trusts its
//!   length; a peer that shrank the object with `ftruncate` would make everybody else's
//!   accesses past the new end fault. Sealing closes that hole.
//! * Pre-faulting ([`CreateOptions::prefault`]): without `SHMCTL_LAZY`, `shm_ctl` allocates
//!   the memory at once and locks it, so no page fault happens later on the hot path. This
//!   is QNX's equivalent of Linux's `MAP_POPULATE`, which QNX's `mmap` does not have. With
//!   `prefault` off, `SHMCTL_LAZY` allocates on first touch, like `ftruncate`.
//!
//! A kernel that rejects `SHMCTL_SEAL` with `EINVAL` gets the same call without it.
//!
//! [`CreateOptions::prefault`]: shm_core::CreateOptions::prefault

/// `SHMCTL_ANON` from `<sys/mman.h>`: back the object with anonymous, zeroed memory.
pub const SHMCTL_ANON: i32 = 0x0000_0001;
/// `SHMCTL_SEAL` from `<sys/mman.h>` (QNX 7.1+): freeze the object's layout (size,
/// backing) for every process, the creator included; later attempts fail with `EPERM`.
pub const SHMCTL_SEAL: i32 = 0x0000_0004;
/// `SHMCTL_LAZY` from `<sys/mman.h>`: allocate the memory on first reference instead of
/// at once (objects sized by `shm_ctl` without it are allocated and locked immediately).
pub const SHMCTL_LAZY: i32 = 0x0000_0400;

/// The `shm_ctl` flags for a new segment: anonymous memory, sealed, allocated at once if
/// `prefault` (then also locked) and on first touch otherwise.
pub fn shmctl_flags(prefault: bool, seal: bool) -> i32 {
    let mut flags = SHMCTL_ANON;
    if seal {
        flags |= SHMCTL_SEAL;
    }
    if !prefault {
        flags |= SHMCTL_LAZY;
    }
    flags
}

/// Where QNX shows its named shared-memory objects.
pub const SHM_DIR: &str = "/dev/shmem";

/// Creating a segment: `shm_open(O_CREAT | O_EXCL)`, `shm_ctl`, then `mmap`, through
/// [`PosixMapping::create_sized`](shm_posix::PosixMapping::create_sized).
#[cfg(any(target_os = "nto", target_os = "qnx"))]
pub(crate) mod sys {
    use std::os::fd::{AsRawFd, BorrowedFd};

    use shm_core::system::{CreateOptions, SystemResult as Result};
    use shm_posix::{last_os, PosixMapping};

    use super::shmctl_flags;

    extern "C" {
        /// `int shm_ctl(int fd, int flags, uint64_t paddr, uint64_t size);` from
        /// `<sys/mman.h>` (libc). Not bound by the `libc` crate.
        fn shm_ctl(fd: libc::c_int, flags: libc::c_int, paddr: u64, size: u64) -> libc::c_int;
    }

    /// Creates the shared-memory object `/NAME` of `size` bytes with `shm_ctl` and maps it
    /// (the shared [`PosixMapping::create_sized`] with QNX's sizing step).
    pub(crate) fn create(name: &str, size: usize, opts: CreateOptions) -> Result<PosixMapping> {
        PosixMapping::create_sized(name, size, opts, |fd, size, opts| {
            size_object(fd, size, opts.prefault)
        })
    }

    /// Gives the new object `size` bytes: sealed if the kernel knows `SHMCTL_SEAL`.
    fn size_object(fd: BorrowedFd<'_>, size: u64, prefault: bool) -> Result<()> {
        let ctl = |seal: bool| {
            // SAFETY: `fd` is an open shared-memory object of size 0 that we created;
            // `paddr` is ignored without SHMCTL_PHYS.
            if unsafe { shm_ctl(fd.as_raw_fd(), shmctl_flags(prefault, seal), 0, size) } == 0 {
                Ok(())
            } else {
                Err(last_os("shm_ctl"))
            }
        };
        match ctl(true) {
            // A kernel without SHMCTL_SEAL: the same call, unsealed.
            Err(e) if e.os_code() == Some(libc::EINVAL) => ctl(false),
            done => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags: always anonymous memory; sealed when asked; lazy exactly when not
    /// pre-faulting (so a pre-faulted segment is allocated and locked at creation).
    #[test]
    fn shmctl_flags_follow_the_options() {
        assert_eq!(
            shmctl_flags(false, true),
            SHMCTL_ANON | SHMCTL_SEAL | SHMCTL_LAZY
        );
        assert_eq!(shmctl_flags(true, true), SHMCTL_ANON | SHMCTL_SEAL);
        assert_eq!(shmctl_flags(false, false), SHMCTL_ANON | SHMCTL_LAZY);
        assert_eq!(shmctl_flags(true, false), SHMCTL_ANON);
        // Distinct bits: no flag hides another.
        assert_eq!(SHMCTL_ANON & SHMCTL_SEAL, 0);
        assert_eq!((SHMCTL_ANON | SHMCTL_SEAL) & SHMCTL_LAZY, 0);
    }
}
