//! [`SysvSystem`]: System V shared memory (`shmget`/`shmat`/`shmctl`), the second Linux
//! system. Doorbells, waits and liveness are the native system's; only where the segment
//! lives differs.
//!
//! **Name to key.** Segment `NAME` lives at the key [`key_of`]: `0x53000000` (`'S'` in the
//! top byte, so `shmipc clean` can tell which keys may be ours without touching others)
//! plus the low 24 bits of the FNV-1a hash of `shmipc.NAME`. Two names can share a key; so
//! the segment's first page is a [`SysvHeader`] naming its segment, and a segment whose
//! header does not name `NAME` exactly is [`SystemError::Foreign`]: never mapped as `NAME`,
//! never removed as `NAME`. The heap's region starts after that page.
//!
//! **Liveness.** A System V segment has no file descriptor to hold a lock on, so every
//! segment has a companion lock file, `/dev/shm/.shmipc-sysv.NAME` (a tmpfs, gone at
//! reboot like the segment), and each attachment holds its open-file-description lock
//! there, exactly as the native system does on its object (see `process.rs`). The header
//! records the file's device and inode, and an attachment enters only through that very
//! file: a lock file that was removed and made again (another inode) is refused
//! ([`SystemError::Foreign`]), so two attachments can never judge each other through
//! different files, where "unlocked" would be a false "dead". An inode number is not
//! reused while any attachment still holds the file open, which is exactly while a mark
//! on it can matter. The kernel drops the lock when the process exits, however it exits;
//! only a probe the kernel answers "free" is death.
//!
//! **Ids.** A `shmid` is a reused number; this code acts on one only while it holds an
//! attachment of it (which keeps the id from being freed) after checking the header
//! there: removal (`IPC_RMID`) by a server at its clean shutdown, and by `shmipc clean`,
//! names the id of the remover's own mapping (`System::remove`), and `unlink` attaches,
//! checks the name, then removes.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use shm_core::system::polling;
use shm_core::system::{
    CreateOptions, Mapping, Refusal, SegmentName, System, SystemError, SystemResult as Result,
    MAX_NAME_LEN, PREFIX,
};
use shm_core::{Doorbell, ProcessId, Region, WaitNotify, WaitOutcome};
use shm_posix::last_os;

use super::{bell, process, wait};

/// Bytes in front of the region: the [`SysvHeader`], padded to a page so the region is
/// page-aligned.
pub const HEADER: usize = 4096;

/// The top byte of every key this system uses (`'S'`).
pub const KEY_TAG: u32 = 0x5300_0000;

/// "shmipcV1", the header's magic, written last by the creator.
const MAGIC: u64 = u64::from_le_bytes(*b"shmipcV1");

/// Where the companion lock files live.
const LOCK_DIR: &str = "/dev/shm";

/// The first page of a System V segment: which segment this is, and which lock file
/// carries its attachments' liveness marks. Read as atomics: any process that may attach
/// may write it.
#[repr(C)]
pub struct SysvHeader {
    /// [`MAGIC`] once the creator filled in the rest.
    magic: AtomicU64,
    /// Device of the lock file (`st_dev`).
    lock_dev: AtomicU64,
    /// Inode of the lock file (`st_ino`).
    lock_ino: AtomicU64,
    /// Length of the name in bytes.
    name_len: AtomicU32,
    /// Bytes of the region that follows the header.
    region_len: AtomicU32,
    /// The segment's name (without the prefix), zero-padded.
    name: [AtomicU8; MAX_NAME_LEN],
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
    fn names(&self, name: &SegmentName) -> bool {
        self.magic.load(Ordering::Acquire) == MAGIC && self.name() == Some(name.clone())
    }

    /// The name it holds, if it is complete and holds a valid one.
    fn name(&self) -> Option<SegmentName> {
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

    fn lock_file(&self) -> (u64, u64) {
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
    base: NonNull<u8>,
    total: usize,
    id: libc::c_int,
    lock: OwnedFd,
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
struct Attached {
    base: NonNull<u8>,
}

impl Attached {
    fn new(id: libc::c_int, flags: libc::c_int) -> Result<Attached> {
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

    fn header(&self) -> &SysvHeader {
        // SAFETY: callers attach only segments of more than HEADER bytes (checked with
        // IPC_STAT first); the header holds only atomics, valid for any bytes.
        unsafe { &*self.base.as_ptr().cast::<SysvHeader>() }
    }

    fn keep(self) -> NonNull<u8> {
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
fn stat(id: libc::c_int) -> Result<libc::shmid_ds> {
    // SAFETY: all-zero is a valid `shmid_ds` to be overwritten.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a valid out-pointer for IPC_STAT.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } != 0 {
        return Err(last_os("shmctl(IPC_STAT)"));
    }
    Ok(ds)
}

/// The id of the segment at `name`'s key, if there is one.
fn id_of(name: &SegmentName) -> Result<libc::c_int> {
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
fn attach_named(id: libc::c_int, name: &SegmentName, flags: libc::c_int) -> Result<Attached> {
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
fn file_id(fd: BorrowedFd<'_>) -> Result<(u64, u64)> {
    // SAFETY: all-zero is a valid `stat` to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_os("fstat"));
    }
    Ok((st.st_dev, st.st_ino))
}

/// Device and inode of the file at `path` (not following a symbolic link).
fn path_id(path: &CString) -> Option<(u64, u64)> {
    // SAFETY: all-zero is a valid `stat` to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a valid out-pointer.
    (unsafe { libc::lstat(path.as_ptr(), &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

fn c_path(name: &SegmentName) -> Result<CString> {
    CString::new(lock_path(name).into_os_string().into_encoded_bytes())
        .map_err(|_| SystemError::InvalidName(shm_core::system::NameError::BadCharacter))
}

/// Removes the lock file at `path` if it is the one with identity `id`.
fn remove_lock_file(path: &CString, id: (u64, u64)) {
    if path_id(path) == Some(id) {
        // SAFETY: `path` is a valid C string.
        unsafe { libc::unlink(path.as_ptr()) };
    }
}

/// Opens `path` read-write (close-on-exec).
fn open_file(path: &CString, flags: libc::c_int, mode: u32) -> Result<OwnedFd> {
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

/// System V shared memory on Linux (see the module documentation). Segments are visible
/// in `ipcs -m`, outlive their processes until removed (a server removes its segment at a
/// clean shutdown, `shmipc clean` one whose processes are all dead) and vanish at reboot.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// use std::time::Duration;
/// use shm_host::{Client, ClientOptions, Server, ServerOptions, SysvSystem};
///
/// let name = format!("doc-sysv-{}", std::process::id());
/// let server = Server::create_on(SysvSystem, &name, ServerOptions::default())?;
/// let client = Client::connect_on(SysvSystem, &name, ClientOptions::default())?;
/// client.send(client.alloc_from(b"over System V")?, 1)?;
/// let msg = server.recv_timeout(Duration::from_secs(5))?.expect("a message");
/// assert_eq!(&msg.buffer[..], b"over System V");
/// # drop(msg); drop(client); drop(server); }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SysvSystem;

impl SysvSystem {
    /// The key of segment `name` (see the module documentation; `ipcs -m` shows it).
    pub fn key(name: &SegmentName) -> i32 {
        key_of(name)
    }

    /// The lock file of segment `name`, where its attachments hold their liveness marks.
    pub fn lock_path(name: &SegmentName) -> std::path::PathBuf {
        lock_path(name)
    }
}

impl WaitNotify for SysvSystem {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        wait::futex_wait(word, expected, timeout)
    }
    fn notify_all(&self, word: &AtomicU32) {
        wait::futex_wake_all(word)
    }
    fn relax(&self, round: u32) {
        polling::relax(round)
    }
    fn now(&self) -> Option<Duration> {
        Some(polling::now())
    }
}

impl System for SysvSystem {
    type Mapping = SysvMapping;
    type Presence = process::Presence;

    fn enter(&self, m: &SysvMapping) -> Result<process::Presence> {
        process::Presence::enter(m.lock.as_fd())
    }

    fn fork_generation(&self) -> u32 {
        process::fork_generation()
    }

    fn check_takeover(
        &self,
        _name: &SegmentName,
        m: &SysvMapping,
        opts: &CreateOptions,
    ) -> Result<()> {
        let ds = stat(m.id)?;
        let mode = u32::from(ds.shm_perm.mode) & 0o777;
        // SAFETY: no preconditions.
        let me = unsafe { libc::geteuid() };
        if ds.shm_perm.uid != me {
            return Err(SystemError::TakeoverRefused(Refusal::OtherUser {
                owner: ds.shm_perm.uid,
                me,
            }));
        }
        if mode & !opts.mode != 0 {
            return Err(SystemError::TakeoverRefused(Refusal::WiderMode {
                found: mode,
                asked: opts.mode,
            }));
        }
        Ok(())
    }

    fn terminate(&self, m: &SysvMapping, id: ProcessId) -> Result<bool> {
        process::terminate(m.lock.as_fd(), id)
    }

    fn create(&self, name: &SegmentName, size: usize, opts: CreateOptions) -> Result<SysvMapping> {
        if size == 0 || size as u64 > u64::from(u32::MAX) {
            return Err(SystemError::BadSize { size: size as u64 });
        }
        let total = size
            .checked_add(HEADER)
            .ok_or(SystemError::BadSize { size: size as u64 })?;
        let mode = (opts.mode & 0o777) as libc::c_int;
        // SAFETY: plain system call.
        let id =
            unsafe { libc::shmget(key_of(name), total, libc::IPC_CREAT | libc::IPC_EXCL | mode) };
        if id < 0 {
            let e = last_os("shmget");
            return Err(match e.os_code() {
                Some(libc::EEXIST) => SystemError::Exists,
                _ => e,
            });
        }
        let remove = || {
            // SAFETY: removes the segment we just created (no one else can have it yet
            // as a segment of ours: its header is not complete).
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        };
        let made = (|| {
            let a = Attached::new(id, 0)?;
            let path = c_path(name)?;
            // A lock file left by a segment removed without its server (`ipcrm`): its
            // segment's key is free (we just took it), so it belongs to no segment
            // anyone can find; attachments of that old segment keep their own open file.
            // SAFETY: `path` is a valid C string.
            unsafe { libc::unlink(path.as_ptr()) };
            let lock = open_file(&path, libc::O_CREAT | libc::O_EXCL, opts.mode)?;
            // Exactly the mode asked for, whatever the umask.
            // SAFETY: `lock` is open.
            if unsafe { libc::fchmod(lock.as_raw_fd(), opts.mode as libc::mode_t) } != 0 {
                let e = last_os("fchmod");
                // SAFETY: as above.
                unsafe { libc::unlink(path.as_ptr()) };
                return Err(e);
            }
            let (dev, ino) = file_id(lock.as_fd())?;
            let h = a.header();
            h.lock_dev.store(dev, Ordering::Relaxed);
            h.lock_ino.store(ino, Ordering::Relaxed);
            h.region_len.store(size as u32, Ordering::Relaxed);
            let bytes = name.as_str().as_bytes();
            h.name_len.store(bytes.len() as u32, Ordering::Relaxed);
            for (cell, &b) in h.name.iter().zip(bytes) {
                cell.store(b, Ordering::Relaxed);
            }
            h.magic.store(MAGIC, Ordering::Release);
            let base = a.keep();
            if opts.prefault {
                // Touch every page so that no fault happens later (the memory is zero
                // already; writing zero keeps it so).
                for at in (HEADER..total).step_by(4096) {
                    // SAFETY: in bounds of the attachment; nothing else uses it yet.
                    unsafe { base.as_ptr().add(at).write_volatile(0) };
                }
            }
            Ok(SysvMapping {
                base,
                total,
                id,
                lock,
            })
        })();
        if made.is_err() {
            remove();
        }
        made
    }

    fn open(&self, name: &SegmentName) -> Result<SysvMapping> {
        let id = id_of(name)?;
        let a = attach_named(id, name, 0)?;
        let total = stat(id)?.shm_segsz;
        if total.saturating_sub(HEADER) as u64 > u64::from(u32::MAX) {
            return Err(SystemError::Foreign);
        }
        let path = c_path(name)?;
        let lock = open_file(&path, 0, 0).map_err(|e| match e.os_code() {
            Some(libc::ENOENT) => SystemError::Foreign,
            _ => e,
        })?;
        if file_id(lock.as_fd())? != a.header().lock_file() {
            // Not the lock file the segment's attachments use: judging them through it
            // would see them dead.
            return Err(SystemError::Foreign);
        }
        Ok(SysvMapping {
            base: a.keep(),
            total,
            id,
            lock,
        })
    }

    fn unlink(&self, name: &SegmentName) -> Result<()> {
        let id = id_of(name)?;
        // Held attached until after IPC_RMID, so the id cannot be freed and given to
        // another segment in between.
        let a = attach_named(id, name, libc::SHM_RDONLY)?;
        remove_lock_file(&c_path(name)?, a.header().lock_file());
        // SAFETY: removes the segment we checked and hold attached.
        if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } != 0 {
            return Err(last_os("shmctl(IPC_RMID)"));
        }
        drop(a);
        Ok(())
    }

    fn remove(&self, name: &SegmentName, m: &SysvMapping) -> Result<()> {
        // The lock file first: while the segment still holds its key, no new segment of
        // this name can have made a lock file of its own.
        remove_lock_file(&c_path(name)?, file_id(m.lock.as_fd())?);
        // SAFETY: `m.id` is attached by `m`, so it names this segment.
        if unsafe { libc::shmctl(m.id, libc::IPC_RMID, std::ptr::null_mut()) } != 0 {
            return Err(last_os("shmctl(IPC_RMID)"));
        }
        Ok(())
    }

    fn list(&self, each: &mut dyn FnMut(SegmentName)) -> Result<()> {
        let table = std::fs::read_to_string("/proc/sysvipc/shm").map_err(|e| SystemError::Os {
            call: "read(/proc/sysvipc/shm)",
            code: e.raw_os_error().unwrap_or(0),
        })?;
        for line in table.lines().skip(1) {
            let mut cols = line.split_whitespace();
            let (Some(Ok(key)), Some(Ok(id))) = (
                cols.next().map(str::parse::<i64>),
                cols.next().map(str::parse::<libc::c_int>),
            ) else {
                continue;
            };
            // Only keys of our form; a removed segment shows key 0.
            if key <= 0 || (key as u32) & 0xff00_0000 != KEY_TAG {
                continue;
            }
            if stat(id).map_or(true, |ds| ds.shm_segsz <= HEADER) {
                continue;
            }
            let Ok(a) = Attached::new(id, libc::SHM_RDONLY) else {
                continue; // not readable by us: not one we could clean either
            };
            if let Some(name) = a.header().name() {
                if i64::from(key_of(&name)) == key {
                    each(name);
                }
            }
        }
        Ok(())
    }

    fn bell_init(&self, _m: &SysvMapping, region: &Region<'_>, bell: &Doorbell) -> Result<()> {
        bell::init(region, bell)
    }

    fn bell_ring(&self, _m: &SysvMapping, region: &Region<'_>, bell: &Doorbell) -> Result<()> {
        bell::ring(region, bell)
    }

    fn bell_wait(
        &self,
        _m: &SysvMapping,
        region: &Region<'_>,
        bell: &Doorbell,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome> {
        bell::wait(region, bell, timeout)
    }

    fn bell_destroy(&self, _m: &SysvMapping, region: &Region<'_>, bell: &Doorbell) {
        bell::destroy(region, bell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> SegmentName {
        SegmentName::new(&format!("{s}-{}", std::process::id())).unwrap()
    }

    /// The key rule: tagged, positive, the same for the same name.
    #[test]
    fn keys_follow_the_written_rule() {
        let n = SegmentName::new("abc").unwrap();
        let want = KEY_TAG | (crate::checksum(b"shmipc.abc") & 0x00ff_ffff);
        assert_eq!(key_of(&n) as u32, want);
        assert!(key_of(&n) > 0);
    }

    /// A segment at a name's key that names another segment (a key collision) is
    /// foreign: not opened, not removed.
    #[test]
    fn a_segment_naming_another_is_foreign() {
        let n = name("sysv-foreign");
        let _ = SysvSystem.unlink(&n);
        // Someone else's segment at our key: no header of ours.
        // SAFETY: plain system call.
        let id = unsafe { libc::shmget(key_of(&n), 2 * HEADER, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0);
        assert_eq!(SysvSystem.open(&n).err(), Some(SystemError::Foreign));
        assert_eq!(SysvSystem.unlink(&n).err(), Some(SystemError::Foreign));
        assert_eq!(
            SysvSystem.create(&n, 8192, CreateOptions::default()).err(),
            Some(SystemError::Exists)
        );
        let mut listed = false;
        SysvSystem.list(&mut |x| listed |= x == n).unwrap();
        assert!(!listed);
        // SAFETY: removes the segment this test made.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    }

    /// A lock file made again (another inode) after the segment was made is refused:
    /// marks on it would say nothing about the segment's attachments.
    #[test]
    fn a_replaced_lock_file_is_refused() {
        let n = name("sysv-lockfile");
        let _ = SysvSystem.unlink(&n);
        let m = SysvSystem
            .create(&n, 8192, CreateOptions::default())
            .unwrap();
        let path = lock_path(&n);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(SysvSystem.open(&n).err(), Some(SystemError::Foreign));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(SysvSystem.open(&n).err(), Some(SystemError::Foreign));
        // Removing the mapped segment removes it, and leaves a file that is not its lock
        // file alone.
        SysvSystem.remove(&n, &m).unwrap();
        assert!(path.exists());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(SysvSystem.open(&n).err(), Some(SystemError::NotFound));
    }
}
