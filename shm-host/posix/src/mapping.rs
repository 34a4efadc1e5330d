//! [`PosixMapping`]: `shm_open` + `ftruncate` + `mmap`, or `mmap` of an existing file
//! descriptor (a file or a memfd).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use shm_core::system::{
    CreateOptions, Mapping, NameError, Refusal, SystemError, SystemResult as Result,
};

use crate::last_os;

/// A shared mapping, unmapped on drop. It keeps its own descriptor of the object (the
/// same open file description it was mapped from): liveness marks are locks on it, and
/// the server checks its size through it.
#[derive(Debug)]
pub struct PosixMapping {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

/// Owner, permission bits and size of a segment's object (`fstat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectStat {
    /// Owning user id (`uid_t`: `u32` on Linux, `i32` on QNX).
    pub uid: libc::uid_t,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
}

// SAFETY: the mapping is plain shared memory; the pointer is only an address, and all
// access to the memory goes through shm-core's atomics or the ownership protocol.
unsafe impl Send for PosixMapping {}
// SAFETY: as above.
unsafe impl Sync for PosixMapping {}

impl Mapping for PosixMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for PosixMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is exactly what `mmap` returned and nothing else unmaps it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Closes a file descriptor on drop.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn os_name(name: &str) -> Result<CString> {
    CString::new(format!("/{name}")).map_err(|_| SystemError::InvalidName(NameError::BadCharacter))
}

/// Extra `mmap` flags for pre-faulting, where the system has them.
#[cfg(target_os = "linux")]
const POPULATE: libc::c_int = libc::MAP_POPULATE;
#[cfg(not(target_os = "linux"))]
const POPULATE: libc::c_int = 0;

impl PosixMapping {
    /// Maps `len` bytes of `fd` shared, read-write. The mapping keeps a duplicate of
    /// `fd` (close-on-exec; the same open file description). A regular file (a file,
    /// a POSIX shared-memory object or a memfd on Linux) shorter than `len` is refused
    /// ([`SystemError::BadSize`]): its pages past the end would raise SIGBUS when touched.
    pub fn map_fd(fd: BorrowedFd<'_>, len: usize, prefault: bool) -> Result<Self> {
        if len == 0 {
            return Err(SystemError::BadSize { size: 0 });
        }
        // SAFETY: an all-zero `stat` is a valid value to be overwritten by `fstat`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is open and `st` is a valid out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(last_os("fstat"));
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFREG
            && u64::try_from(st.st_size).unwrap_or(0) < len as u64
        {
            return Err(SystemError::BadSize { size: len as u64 });
        }
        let own = fd.try_clone_to_owned().map_err(|e| SystemError::Os {
            call: "fcntl(F_DUPFD_CLOEXEC)",
            code: e.raw_os_error().unwrap_or(0),
        })?;
        let flags = libc::MAP_SHARED | if prefault { POPULATE } else { 0 };
        // SAFETY: a fresh mapping of an open descriptor; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_os("mmap"));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or(SystemError::Os {
            call: "mmap",
            code: 0,
        })?;
        Ok(PosixMapping { ptr, len, fd: own })
    }

    /// The descriptor of the mapped object.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Owner, permissions and current size of the mapped object.
    pub fn stat(&self) -> Result<ObjectStat> {
        // SAFETY: an all-zero `stat` is a valid value to be overwritten by `fstat`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is open and `st` is a valid out-pointer.
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) } != 0 {
            return Err(last_os("fstat"));
        }
        Ok(ObjectStat {
            uid: st.st_uid,
            mode: st.st_mode as u32 & 0o7777,
            size: u64::try_from(st.st_size).unwrap_or(0),
        })
    }

    /// The takeover rule of a POSIX system: refuses ([`SystemError::TakeoverRefused`]) an
    /// object that belongs to another user than this process's effective one, or whose
    /// permission bits admit anything `opts.mode` does not.
    // uid_t is u32 on Linux (where the casts below change nothing) and i32 on QNX.
    #[allow(clippy::unnecessary_cast)]
    pub fn check_takeover(&self, opts: &CreateOptions) -> Result<()> {
        let st = self.stat()?;
        // SAFETY: no preconditions.
        let me = unsafe { libc::geteuid() };
        if st.uid != me {
            return Err(SystemError::TakeoverRefused(Refusal::OtherUser {
                owner: st.uid as u32,
                me: me as u32,
            }));
        }
        if st.mode & !opts.mode != 0 {
            return Err(SystemError::TakeoverRefused(Refusal::WiderMode {
                found: st.mode,
                asked: opts.mode,
            }));
        }
        Ok(())
    }

    /// Creates the shared-memory object `/NAME` (`O_EXCL`) of `size` bytes with
    /// `ftruncate` and maps it.
    pub fn create(name: &str, size: usize, opts: CreateOptions) -> Result<Self> {
        Self::create_sized(name, size, opts, |fd, size, _| {
            // SAFETY: `fd` is open; `size` fits off_t (checked by create_sized).
            if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
                return Err(last_os("ftruncate"));
            }
            Ok(())
        })
    }

    /// Creates the shared-memory object `/NAME` (`O_EXCL`), gives it `size` bytes with
    /// `size_object` (a system may have a better call than `ftruncate`, e.g. QNX's
    /// `shm_ctl`), and maps it. The object is removed again if a step fails; a taken name
    /// is [`SystemError::Exists`].
    pub fn create_sized(
        name: &str,
        size: usize,
        opts: CreateOptions,
        size_object: impl FnOnce(BorrowedFd<'_>, u64, &CreateOptions) -> Result<()>,
    ) -> Result<Self> {
        if size == 0 || size as u64 > u64::from(u32::MAX) {
            return Err(SystemError::BadSize { size: size as u64 });
        }
        let c = os_name(name)?;
        // SAFETY: `c` is a valid C string; flags and mode are plain integers.
        let fd = unsafe {
            libc::shm_open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                opts.mode as libc::mode_t,
            )
        };
        if fd < 0 {
            let e = last_os("shm_open");
            return Err(match e.os_code() {
                Some(libc::EEXIST) => SystemError::Exists,
                _ => e,
            });
        }
        let fd = Fd(fd);
        let undo = || {
            // SAFETY: `c` is a valid C string naming the object we just created.
            unsafe { libc::shm_unlink(c.as_ptr()) };
        };
        // SAFETY: `fd.0` stays open for the duration of the borrow.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd.0) };
        if let Err(e) = size_object(borrowed, size as u64, &opts) {
            undo();
            return Err(e);
        }
        Self::map_fd(borrowed, size, opts.prefault).inspect_err(|_| undo())
    }

    /// Maps the existing shared-memory object `/NAME` with its current size.
    pub fn open(name: &str) -> Result<Self> {
        let c = os_name(name)?;
        // SAFETY: `c` is a valid C string.
        let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDWR, 0) };
        if fd < 0 {
            let e = last_os("shm_open");
            return Err(match e.os_code() {
                Some(libc::ENOENT) => SystemError::NotFound,
                _ => e,
            });
        }
        let fd = Fd(fd);
        // SAFETY: `fd.0` stays open for the duration of the borrow.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd.0) };
        let len = fd_len(borrowed)?;
        Self::map_fd(borrowed, len, false)
    }

    /// Maps an existing file (or memfd) with its current size.
    pub fn open_fd(fd: BorrowedFd<'_>) -> Result<Self> {
        let len = fd_len(fd)?;
        Self::map_fd(fd, len, false)
    }

    /// Removes the name `/NAME`.
    pub fn unlink(name: &str) -> Result<()> {
        let c = os_name(name)?;
        // SAFETY: `c` is a valid C string.
        if unsafe { libc::shm_unlink(c.as_ptr()) } != 0 {
            let e = last_os("shm_unlink");
            return Err(match e.os_code() {
                Some(libc::ENOENT) => SystemError::NotFound,
                _ => e,
            });
        }
        Ok(())
    }
}

/// Size of the object behind a descriptor.
fn fd_len(fd: BorrowedFd<'_>) -> Result<usize> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten by `fstat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_os("fstat"));
    }
    usize::try_from(st.st_size).map_err(|_| SystemError::BadSize {
        size: st.st_size as u64,
    })
}
