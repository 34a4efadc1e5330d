//! The object behind a System V segment: the key rule, the header page that names the
//! segment and its lock file, attaching and checking, and the lock-file helpers.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use shm_core::system::{
    Mapping, SegmentName, SystemError, SystemResult as Result, MAX_NAME_LEN, PREFIX,
};
use shm_posix::last_os;

/// Bytes in front of the region: the [`SysvHeader`], padded to a page so the region is
/// page-aligned.
pub const HEADER: usize = 4096;

/// The top byte of every key this system uses (`'S'`).
pub const KEY_TAG: u32 = 0x5300_0000;

/// "shmipcV1", the header's magic, written last by the creator.
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"shmipcV1");

/// Where the companion lock files live.
const LOCK_DIR: &str = "/dev/shm";

/// The first page of a System V segment: which segment this is, and which lock file
/// carries its attachments' liveness marks. Read as atomics: any process that may attach
/// may write it.
#[repr(C)]
pub struct SysvHeader {
    /// [`MAGIC`] once the creator filled in the rest.
    pub(super) magic: AtomicU64,
    /// Device of the lock file (`st_dev`).
    pub(super) lock_dev: AtomicU64,
    /// Inode of the lock file (`st_ino`).
    pub(super) lock_ino: AtomicU64,
    /// Length of the name in bytes.
    pub(super) name_len: AtomicU32,
    /// Bytes of the region that follows the header.
    pub(super) region_len: AtomicU32,
    /// The segment's name (without the prefix), zero-padded.
    pub(super) name: [AtomicU8; MAX_NAME_LEN],
}

const _: () = {
    assert!(core::mem::size_of::<SysvHeader>() == 32 + MAX_NAME_LEN);
    assert!(core::mem::offset_of!(SysvHeader, magic) == 0);
    assert!(core::mem::offset_of!(SysvHeader, lock_dev) == 8);
    assert!(core::mem::offset_of!(SysvHeader, lock_ino) == 16);
    assert!(core::mem::offset_of!(SysvHeader, name_len) == 24);
    assert!(core::mem::offset_of!(SysvHeader, region_len) == 28);
    assert!(core::mem::offset_of!(SysvHeader, name) == 32);
    assert!(core::mem::size_of::<SysvHeader>() <= HEADER);
    assert!(core::mem::align_of::<SysvHeader>() <= 8);
};

impl SysvHeader {
    /// Whether the header is complete and names `name`.
    pub(super) fn names(&self, name: &SegmentName) -> bool {
        self.magic.load(Ordering::Acquire) == MAGIC && self.name() == Some(name.clone())
    }

    /// The name it holds, if it is complete and holds a valid one.
    pub(super) fn name(&self) -> Option<SegmentName> {
        if self.magic.load(Ordering::Acquire) != MAGIC {
            return None;
        }
        let len = usize::try_from(self.name_len.load(Ordering::Relaxed)).ok()?;
        let bytes: Vec<u8> = self
            .name
            .get(..len)?
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        SegmentName::new(std::str::from_utf8(&bytes).ok()?).ok()
    }

    pub(super) fn lock_file(&self) -> (u64, u64) {
        (
            self.lock_dev.load(Ordering::Relaxed),
            self.lock_ino.load(Ordering::Relaxed),
        )
    }
}

/// The System V key of segment `name`: [`KEY_TAG`] | (FNV-1a(`shmipc.NAME`) & 0xFFFFFF).
pub fn key_of(name: &SegmentName) -> libc::key_t {
    let hash = crate::checksum(name.prefixed().as_bytes());
    // Below 2^31: always a positive key, never IPC_PRIVATE (0).
    (KEY_TAG | (hash & 0x00ff_ffff)) as libc::key_t
}

/// The companion lock file of segment `name`.
pub fn lock_path(name: &SegmentName) -> std::path::PathBuf {
    std::path::Path::new(LOCK_DIR).join(format!(".{}sysv.{}", PREFIX, name.as_str()))
}

/// A System V segment, attached; detached on drop. Holds the lock file its attachments'
/// liveness marks are taken on.
#[derive(Debug)]
pub struct SysvMapping {
    pub(super) base: NonNull<u8>,
    pub(super) total: usize,
    pub(super) id: libc::c_int,
    pub(super) lock: OwnedFd,
}

// SAFETY: the mapping is plain shared memory; the pointer is only an address, and all
// access to the memory goes through shm-core's atomics or the ownership protocol.
unsafe impl Send for SysvMapping {}
// SAFETY: as above.
unsafe impl Sync for SysvMapping {}

impl Mapping for SysvMapping {
    fn as_ptr(&self) -> *mut u8 {
        // In bounds: `total` > HEADER (checked when attaching).
        self.base.as_ptr().wrapping_add(HEADER)
    }
    fn len(&self) -> usize {
        self.total.saturating_sub(HEADER)
    }
}

impl Drop for SysvMapping {
    fn drop(&mut self) {
        // SAFETY: `base` is the address `shmat` returned and nothing else detaches it.
        unsafe { libc::shmdt(self.base.as_ptr().cast()) };
    }
}

impl SysvMapping {
    /// The segment's id (`shmid`), as `ipcs -m` shows it.
    pub fn id(&self) -> i32 {
        self.id
    }
}

/// An attachment that is detached on drop unless kept.
pub(super) struct Attached {
    base: NonNull<u8>,
}

impl Attached {
    pub(super) fn new(id: libc::c_int, flags: libc::c_int) -> Result<Attached> {
        // SAFETY: attaches segment `id` where the kernel chooses; no memory is touched.
        let p = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        if p as isize == -1 {
            return Err(last_os("shmat"));
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(SystemError::Os {
            call: "shmat",
            code: 0,
        })?;
        Ok(Attached { base })
    }

    pub(super) fn header(&self) -> &SysvHeader {
        // SAFETY: callers attach only segments of more than HEADER bytes (checked with
        // IPC_STAT first); the header holds only atomics, valid for any bytes.
        unsafe { &*self.base.as_ptr().cast::<SysvHeader>() }
    }

    pub(super) fn keep(self) -> NonNull<u8> {
        let base = self.base;
        std::mem::forget(self);
        base
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: `base` came from `shmat` and is detached once.
        unsafe { libc::shmdt(self.base.as_ptr().cast()) };
    }
}

/// `IPC_STAT` of segment `id`.
pub(super) fn stat(id: libc::c_int) -> Result<libc::shmid_ds> {
    // SAFETY: all-zero is a valid `shmid_ds` to be overwritten.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a valid out-pointer for IPC_STAT.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } != 0 {
        return Err(last_os("shmctl(IPC_STAT)"));
    }
    Ok(ds)
}

/// The id of the segment at `name`'s key, if there is one.
pub(super) fn id_of(name: &SegmentName) -> Result<libc::c_int> {
    // SAFETY: plain system call.
    let id = unsafe { libc::shmget(key_of(name), 0, 0) };
    if id < 0 {
        let e = last_os("shmget");
        return Err(match e.os_code() {
            Some(libc::ENOENT) => SystemError::NotFound,
            _ => e,
        });
    }
    Ok(id)
}

/// Attaches segment `id` if it is big enough to hold a header and names `name`.
pub(super) fn attach_named(
    id: libc::c_int,
    name: &SegmentName,
    flags: libc::c_int,
) -> Result<Attached> {
    let ds = stat(id)?;
    if ds.shm_segsz <= HEADER {
        return Err(SystemError::Foreign);
    }
    let a = Attached::new(id, flags)?;
    if !a.header().names(name) {
        return Err(SystemError::Foreign);
    }
    Ok(a)
}

/// Device and inode of the file behind `fd`.
pub(super) fn file_id(fd: BorrowedFd<'_>) -> Result<(u64, u64)> {
    // SAFETY: all-zero is a valid `stat` to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_os("fstat"));
    }
    Ok((st.st_dev, st.st_ino))
}

/// Device and inode of the file at `path` (not following a symbolic link).
pub(super) fn path_id(path: &CString) -> Option<(u64, u64)> {
    // SAFETY: all-zero is a valid `stat` to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a valid out-pointer.
    (unsafe { libc::lstat(path.as_ptr(), &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

pub(super) fn c_path(name: &SegmentName) -> Result<CString> {
    CString::new(lock_path(name).into_os_string().into_encoded_bytes())
        .map_err(|_| SystemError::InvalidName(shm_core::system::NameError::BadCharacter))
}

/// Removes the lock file at `path` if it is the one with identity `id`.
pub(super) fn remove_lock_file(path: &CString, id: (u64, u64)) {
    if path_id(path) == Some(id) {
        // SAFETY: `path` is a valid C string.
        unsafe { libc::unlink(path.as_ptr()) };
    }
}

/// Opens `path` read-write (close-on-exec).
pub(super) fn open_file(path: &CString, flags: libc::c_int, mode: u32) -> Result<OwnedFd> {
    // SAFETY: `path` is a valid C string; flags and mode are plain integers.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            flags | libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(last_os("open"));
    }
    // SAFETY: `open` returned a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
