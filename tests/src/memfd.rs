//! A memfd shared the way a host would share memory this library did not map: one process
//! creates and maps it, passes the descriptor over a Unix socket (`SCM_RIGHTS`), the
//! other maps what it received; both build a server or client over the mapping with
//! `shm_host::foreign`. Used by `tests/foreign_memfd.rs` and `shm-foreign-peer`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use shm_host::foreign::{AssumeAlive, FdLiveness, ForeignMapping, ForeignSystem, SemDoorbells};

/// A new memfd of `len` bytes (close-on-exec).
pub fn create(len: usize) -> io::Result<OwnedFd> {
    let name = c"shm-foreign-test";
    // SAFETY: `name` is a valid C string; flags are plain integers.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and own alone.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    std::fs::File::from(fd.try_clone()?).set_len(len as u64)?;
    Ok(fd)
}

/// Unmaps on drop: the keeper of a [`ForeignMapping`] made by [`map`].
struct Unmap(*mut libc::c_void, usize);

// SAFETY: the pointer is only unmapped, once, by whichever thread drops the value.
unsafe impl Send for Unmap {}
// SAFETY: `&Unmap` gives no access to the memory.
unsafe impl Sync for Unmap {}

impl Drop for Unmap {
    fn drop(&mut self) {
        // SAFETY: exactly the range `mmap` returned, unmapped only here.
        unsafe { libc::munmap(self.0, self.1) };
    }
}

/// Maps all of the memfd `fd` shared, read-write, with plain `mmap` (not through the
/// library), as a [`ForeignMapping`] that unmaps it when its last clone is dropped.
pub fn map(fd: BorrowedFd<'_>) -> io::Result<ForeignMapping> {
    let len = usize::try_from(
        std::fs::File::from(fd.try_clone_to_owned()?)
            .metadata()?
            .len(),
    )
    .map_err(|_| io::Error::other("memfd too large"))?;
    // SAFETY: a fresh shared mapping of an open descriptor; the kernel picks the address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let keeper = Unmap(p, len);
    // SAFETY: the mapping is valid until `keeper` unmaps it; it is MAP_SHARED, so every
    // process mapping this memfd sees the same bytes (ordinary shared memory); the tests
    // touch it only through the library and never truncate the memfd; the server formats
    // it before its descriptor is passed to any client.
    unsafe { ForeignMapping::new(p.cast(), len, keeper) }
        .map_err(|e| io::Error::other(e.to_string()))
}

/// The system over a mapping of memfd `fd` with kernel evidence of liveness.
pub fn system(fd: BorrowedFd<'_>) -> io::Result<ForeignSystem<SemDoorbells, FdLiveness>> {
    // SAFETY: every participant in these tests uses FdLiveness on the memfd it maps
    // (processes built with `system`), and never `AssumeAlive` on the same memfd.
    let live = unsafe { FdLiveness::new(fd) }.map_err(|e| io::Error::other(e.to_string()))?;
    Ok(ForeignSystem::new(map(fd)?, SemDoorbells, live))
}

/// The system over a mapping of memfd `fd` without evidence of liveness (everyone alive).
pub fn system_assuming_alive(
    fd: BorrowedFd<'_>,
) -> io::Result<ForeignSystem<SemDoorbells, AssumeAlive>> {
    Ok(ForeignSystem::new(map(fd)?, SemDoorbells, AssumeAlive))
}

/// Sends `fd` (and one byte) over `sock` as `SCM_RIGHTS`.
pub fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    let byte = [b'F'];
    let mut iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    // u64 words: aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: all-zero is a valid `msghdr`; the fields used are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` describes a control buffer of `space` bytes, room for one header.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cmsg.is_null() {
        return Err(io::Error::other("no room for the control message"));
    }
    // SAFETY: `cmsg` points at the start of `control`, aligned and large enough for a
    // header and one descriptor (CMSG_SPACE above).
    unsafe {
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd.as_raw_fd());
    }
    // SAFETY: the socket is open; `msg` and everything it points at live across the call.
    if unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) } != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`] (close-on-exec).
pub fn recv_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: all-zero is a valid `msghdr`; the fields used are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the socket is open; `msg` describes live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR checks the length it reported.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: a non-null `cmsg` points at a header inside `control`.
    if n != 1 || cmsg.is_null() || unsafe { (*cmsg).cmsg_type } != libc::SCM_RIGHTS {
        return Err(io::Error::other("no descriptor received"));
    }
    // SAFETY: an SCM_RIGHTS message carries at least one descriptor after its header,
    // which the kernel installed in this process for us to own.
    let raw = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
    // SAFETY: as above: a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
