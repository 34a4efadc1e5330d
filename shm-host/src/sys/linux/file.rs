//! [`FileSystem`]: segments that are files on a real filesystem, mapped shared. The heap
//! outlives its processes: a server started on an existing file attaches to the heap in
//! it (after recovery: a half-done operation of a dead process is undone, dead processes
//! are reclaimed), and a clean shutdown keeps the file.
//!
//! A file starts with a page holding a [`FileHeader`] (magic, header size, region size);
//! the region follows. A file without that header (any other file) is
//! [`SystemError::Foreign`]: never mapped, formatted or removed. The file gets all its
//! blocks at creation (`posix_fallocate`), so a full disk cannot turn a later write to
//! the mapping into SIGBUS.
//!
//! Liveness is the native system's: each attachment holds an open-file-description lock
//! on the file itself (see `process.rs`), which the kernel drops when the process exits.
//! That is evidence only on a local filesystem; over NFS the locks live on a server, which
//! drops them when a live client's lease lapses, so a file on a network filesystem is
//! refused when an attachment enters it.
//!
//! Doorbells and waits are the native system's (`sem_t` and futexes in the mapping work
//! on any shared file mapping).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shm_core::system::{
    CreateOptions, Mapping, NameError, SegmentName, System, SystemError, SystemResult as Result,
};
use shm_core::ProcessId;
use shm_posix::{last_os, PosixMapping};

use super::{bell, process, wait};

/// Bytes in front of the region: the [`FileHeader`], padded to a page.
pub const HEADER: usize = 4096;

/// "shmipcF1": the header's magic, written last by the creator.
const MAGIC: u64 = u64::from_le_bytes(*b"shmipcF1");

/// The first page of a segment file.
#[repr(C)]
pub struct FileHeader {
    /// [`MAGIC`] once the creator filled in the rest.
    magic: AtomicU64,
    /// Bytes of the region that follows the header.
    region_len: AtomicU64,
    /// Bytes of the header ([`HEADER`]).
    header_len: AtomicU32,
    /// Zero.
    reserved: AtomicU32,
}

const _: () = {
    assert!(core::mem::size_of::<FileHeader>() == 24);
    assert!(core::mem::offset_of!(FileHeader, magic) == 0);
    assert!(core::mem::offset_of!(FileHeader, region_len) == 8);
    assert!(core::mem::offset_of!(FileHeader, header_len) == 16);
    assert!(core::mem::offset_of!(FileHeader, reserved) == 20);
    assert!(core::mem::size_of::<FileHeader>() <= HEADER);
};

/// A segment file, mapped whole (header and region); unmapped on drop.
#[derive(Debug)]
pub struct FileMapping {
    whole: PosixMapping,
}

impl Mapping for FileMapping {
    fn as_ptr(&self) -> *mut u8 {
        // In bounds: the mapping is longer than HEADER (checked when mapping).
        self.whole.as_ptr().wrapping_add(HEADER)
    }
    fn len(&self) -> usize {
        self.whole.len().saturating_sub(HEADER)
    }
}

impl FileMapping {
    fn header(&self) -> &FileHeader {
        // SAFETY: the first HEADER bytes are mapped and page-aligned, and the header
        // holds only atomics, valid for any bytes.
        unsafe { &*self.whole.as_ptr().cast::<FileHeader>() }
    }
}

/// Where a [`FileSystem`] keeps its segments.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    /// One file, whatever the segment's name.
    File(PathBuf),
    /// `DIR/shmipc.NAME` for segment `NAME`.
    Dir(PathBuf),
}

/// File-backed segments on a real (local) filesystem: the heap outlives its processes,
/// and what [`Segment::flush`](crate::Segment::flush) wrote survives a power loss (see
/// the README's "File-backed segments" for what does not). The size a server asks for
/// applies only when it makes the file; on an existing one it takes the heap as it is.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// use shm_host::{Client, ClientOptions, FileSystem, Server, ServerOptions};
///
/// let path = std::env::temp_dir().join(format!("doc-heap-{}", std::process::id()));
/// let system = FileSystem::file(&path);
/// let options = ServerOptions { size: 1 << 20, ..ServerOptions::default() };
/// let server = Server::create_on(system.clone(), "heap", options)?;
/// let client = Client::connect_on(system.clone(), "heap", ClientOptions::default())?;
/// let kept = client.alloc_from(b"still here")?;   // the client's block
/// server.flush()?;                                // msync: on disk now
/// drop(server);                                   // a clean stop keeps the file
/// let again = Server::create_on(system, "heap", options)?; // attaches, does not format
/// assert_eq!(again.generation(), 2);
/// assert_eq!(&kept[..], b"still here");
/// # drop(kept); drop(client); drop(again);
/// std::fs::remove_file(&path)?;
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSystem {
    place: Place,
}

impl FileSystem {
    /// Every segment is the file at `path` (the segment's name is only a label).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        FileSystem {
            place: Place::File(path.into()),
        }
    }

    /// Segment `NAME` is the file `dir/shmipc.NAME`; `list` reports the directory's.
    pub fn dir(dir: impl Into<PathBuf>) -> Self {
        FileSystem {
            place: Place::Dir(dir.into()),
        }
    }

    /// The file of segment `name`.
    pub fn path(&self, name: &SegmentName) -> PathBuf {
        match &self.place {
            Place::File(p) => p.clone(),
            Place::Dir(d) => d.join(name.prefixed().as_str()),
        }
    }

    fn c_path(&self, name: &SegmentName) -> Result<CString> {
        CString::new(self.path(name).as_os_str().as_bytes())
            .map_err(|_| SystemError::InvalidName(NameError::BadCharacter))
    }
}

fn open_file(path: &CString, flags: libc::c_int, mode: u32) -> Result<OwnedFd> {
    // SAFETY: `path` is a valid C string; flags and mode are plain integers.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            flags | libc::O_RDWR | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        let e = last_os("open");
        return Err(match e.os_code() {
            Some(libc::EEXIST) => SystemError::Exists,
            Some(libc::ENOENT) => SystemError::NotFound,
            _ => e,
        });
    }
    // SAFETY: `open` returned a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The region length a segment file's header records, if the file is a complete segment
/// file (read with `pread`, before anything is mapped).
fn read_header(fd: &OwnedFd) -> Result<usize> {
    // SAFETY: all-zero is a valid `stat` to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_os("fstat"));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(SystemError::Foreign);
    }
    let mut bytes = [0u8; 24];
    // SAFETY: reads at most 24 bytes into `bytes`.
    let n = unsafe { libc::pread(fd.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(SystemError::Foreign);
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let (magic, region, header) = (word(0), word(8), word(16) & 0xffff_ffff);
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if magic != MAGIC
        || header != HEADER as u64
        || region == 0
        || region > u64::from(u32::MAX)
        || size < region + HEADER as u64
    {
        return Err(SystemError::Foreign);
    }
    usize::try_from(region).map_err(|_| SystemError::BadSize { size: region })
}

/// Whether `f_type` (from `fstatfs`) names a network or cluster filesystem. There a lock
/// is held by a server, and is dropped when the client's lease lapses (a network outage,
/// a server restart) while the process that took it still lives: a liveness mark there
/// could say "dead" of a live process, so such files are refused, not trusted.
fn network_filesystem(f_type: i64) -> bool {
    const NFS: i64 = 0x6969;
    const SMB: i64 = 0x517b;
    const CIFS: i64 = 0xff53_4d42;
    const SMB2: i64 = 0xfe53_4d42;
    const CEPH: i64 = 0x00c3_6400;
    const V9FS: i64 = 0x0102_1997;
    const AFS: i64 = 0x5346_414f;
    const CODA: i64 = 0x7375_7245;
    const NCP: i64 = 0x564c;
    const LUSTRE: i64 = 0x0bd0_0bd0;
    const GFS2: i64 = 0x0116_1970;
    const OCFS2: i64 = 0x7461_636f;
    // `f_type` is a C long: the 32-bit magics may come back sign-extended.
    let t = f_type & 0xffff_ffff;
    [
        NFS, SMB, CIFS, SMB2, CEPH, V9FS, AFS, CODA, NCP, LUSTRE, GFS2, OCFS2,
    ]
    .contains(&t)
}

/// [`SystemError::Os`] (`EREMOTE`) for a file on a network filesystem.
fn refuse_network_filesystem(fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    // SAFETY: all-zero is a valid `statfs` to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` a valid out-pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_os("fstatfs"));
    }
    #[allow(clippy::unnecessary_cast)] // `f_type`'s width differs between targets
    if network_filesystem(st.f_type as i64) {
        return Err(SystemError::Os {
            call: "fstatfs: a network filesystem (locks there are not the kernel's evidence)",
            code: libc::EREMOTE,
        });
    }
    Ok(())
}

wait::futex_wait_notify!(FileSystem);

// SAFETY: a `FileMapping` maps the whole file, whose blocks were allocated, unmapped
// only on drop (a truncation by another process is the documented SIGBUS limit);
// liveness is the kernel's lock on the file (process.rs); the fork hook changes the
// generation.
unsafe impl System for FileSystem {
    type Mapping = FileMapping;
    type Presence = process::Presence;

    /// Refuses a file on a network filesystem (a lock there is not the kernel's evidence)
    /// before taking a mark there.
    fn enter(&self, m: &FileMapping) -> Result<process::Presence> {
        refuse_network_filesystem(m.whole.fd())?;
        process::Presence::enter(m.whole.fd())
    }

    fn fork_generation(&self) -> u32 {
        process::fork_generation()
    }

    fn check_takeover(
        &self,
        _name: &SegmentName,
        m: &FileMapping,
        opts: &CreateOptions,
    ) -> Result<()> {
        m.whole.check_takeover(opts)
    }

    fn terminate(&self, m: &FileMapping, id: ProcessId) -> Result<bool> {
        process::terminate(m.whole.fd(), id)
    }

    fn object_size(&self, m: &FileMapping) -> Result<u64> {
        Ok(m.whole.stat()?.size.saturating_sub(HEADER as u64))
    }

    fn create(&self, name: &SegmentName, size: usize, opts: CreateOptions) -> Result<FileMapping> {
        if size == 0 || size as u64 > u64::from(u32::MAX) {
            return Err(SystemError::BadSize { size: size as u64 });
        }
        let total = size + HEADER;
        let path = self.c_path(name)?;
        let fd = open_file(&path, libc::O_CREAT | libc::O_EXCL, opts.mode)?;
        let made = (|| {
            // Exactly the mode asked for, whatever the umask.
            // SAFETY: `fd` is open.
            if unsafe { libc::fchmod(fd.as_raw_fd(), opts.mode as libc::mode_t) } != 0 {
                return Err(last_os("fchmod"));
            }
            // Every block now: a full disk fails here, not as SIGBUS on a later write.
            // SAFETY: `fd` is open; the length fits off_t (at most 4 GiB + a page).
            let r = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, total as libc::off_t) };
            if r != 0 {
                return Err(SystemError::Os {
                    call: "posix_fallocate",
                    code: r,
                });
            }
            let whole = PosixMapping::map_fd(fd.as_fd(), total, opts.prefault)?;
            let m = FileMapping { whole };
            let h = m.header();
            h.region_len.store(size as u64, Ordering::Relaxed);
            h.header_len.store(HEADER as u32, Ordering::Relaxed);
            h.magic.store(MAGIC, Ordering::Release);
            Ok(m)
        })();
        if made.is_err() {
            // SAFETY: `path` is a valid C string naming the file we just created.
            unsafe { libc::unlink(path.as_ptr()) };
        }
        made
    }

    fn open(&self, name: &SegmentName) -> Result<FileMapping> {
        let fd = open_file(&self.c_path(name)?, 0, 0)?;
        let region = read_header(&fd)?;
        let whole = PosixMapping::map_fd(fd.as_fd(), region + HEADER, false)?;
        Ok(FileMapping { whole })
    }

    /// Removes the file, if it is a segment file (any other file is
    /// [`SystemError::Foreign`] and stays).
    fn unlink(&self, name: &SegmentName) -> Result<()> {
        let path = self.c_path(name)?;
        let fd = open_file(&path, 0, 0)?;
        read_header(&fd)?;
        // SAFETY: `path` is a valid C string.
        if unsafe { libc::unlink(path.as_ptr()) } != 0 {
            return Err(last_os("unlink"));
        }
        Ok(())
    }

    /// Removes the file if the path still leads to the mapped one (else
    /// [`SystemError::Foreign`]: another file took its place, and stays).
    fn remove(&self, name: &SegmentName, m: &FileMapping) -> Result<()> {
        let path = self.c_path(name)?;
        // SAFETY: all-zero is a valid `stat` to be overwritten.
        let mut at_path: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a valid C string and `at_path` a valid out-pointer.
        if unsafe { libc::stat(path.as_ptr(), &mut at_path) } != 0 {
            let e = last_os("stat");
            return Err(match e.os_code() {
                Some(libc::ENOENT) => SystemError::NotFound,
                _ => e,
            });
        }
        // SAFETY: as above.
        let mut mapped: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the mapping's descriptor is open; `mapped` is a valid out-pointer.
        if unsafe { libc::fstat(m.whole.fd().as_raw_fd(), &mut mapped) } != 0 {
            return Err(last_os("fstat"));
        }
        if (at_path.st_dev, at_path.st_ino) != (mapped.st_dev, mapped.st_ino) {
            return Err(SystemError::Foreign);
        }
        // SAFETY: `path` is a valid C string.
        if unsafe { libc::unlink(path.as_ptr()) } != 0 {
            return Err(last_os("unlink"));
        }
        Ok(())
    }

    /// Keeps the file: its heap is there for the next server.
    fn withdraw(&self, _name: &SegmentName, _m: &FileMapping) -> Result<()> {
        Ok(())
    }

    /// `msync(MS_SYNC)` of the whole file (header and region).
    fn flush(&self, m: &FileMapping) -> Result<()> {
        // SAFETY: the range is exactly the mapping `whole` holds.
        let r = unsafe { libc::msync(m.whole.as_ptr().cast(), m.whole.len(), libc::MS_SYNC) };
        if r != 0 {
            return Err(last_os("msync"));
        }
        Ok(())
    }

    /// The directory's segment files ([`FileSystem::dir`]); none for a single file, whose
    /// heap is meant to outlive its processes (`shmipc clean` leaves it).
    fn list(&self, each: &mut dyn FnMut(SegmentName)) -> Result<()> {
        match &self.place {
            Place::File(_) => Ok(()),
            Place::Dir(d) => shm_posix::listing::list_dir(Path::new(d), each),
        }
    }

    bell::sem_doorbells!(FileMapping);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("shm-file-{tag}-{}", std::process::id()))
    }

    /// A file that is not a segment file is neither opened, nor taken for an existing
    /// segment to format, nor removed.
    #[test]
    fn other_files_are_foreign() {
        let path = temp("foreign");
        std::fs::write(&path, vec![7u8; 3 * HEADER]).unwrap();
        let fs = FileSystem::file(&path);
        let n = SegmentName::new("x").unwrap();
        assert_eq!(fs.open(&n).err(), Some(SystemError::Foreign));
        assert_eq!(fs.unlink(&n).err(), Some(SystemError::Foreign));
        assert_eq!(
            fs.create(&n, 8192, CreateOptions::default()).err(),
            Some(SystemError::Exists)
        );
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 3 * HEADER]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(fs.open(&n).err(), Some(SystemError::NotFound));
    }

    /// Network filesystems are told from local ones (a failing probe of a live process's
    /// mark there would call it dead), also when `f_type` comes back sign-extended; the
    /// local file a test makes is accepted.
    #[test]
    fn network_filesystems_are_refused() {
        for t in [
            0x6969i64,
            0xff53_4d42,
            0xff53_4d42u32 as i32 as i64,
            0x0102_1997,
        ] {
            assert!(network_filesystem(t), "{t:#x}");
        }
        // tmpfs, ext4, xfs, btrfs, overlayfs
        for t in [
            0x0102_1994i64,
            0xef53,
            0x5846_5342,
            0x9123_683e,
            0x794c_7630,
        ] {
            assert!(!network_filesystem(t), "{t:#x}");
        }
        let path = temp("local");
        let fs = FileSystem::file(&path);
        let n = SegmentName::new("x").unwrap();
        let m = fs.create(&n, 8192, CreateOptions::default()).unwrap();
        fs.enter(&m).unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    /// Bytes written and flushed are in the file, at the header's offset.
    #[test]
    fn flushed_bytes_are_in_the_file() {
        let path = temp("flush");
        let fs = FileSystem::file(&path);
        let n = SegmentName::new("x").unwrap();
        let m = fs.create(&n, 8192, CreateOptions::default()).unwrap();
        // SAFETY: in bounds of the region; nothing else uses it.
        unsafe { std::ptr::copy_nonoverlapping(b"durable".as_ptr(), m.as_ptr().add(100), 7) };
        fs.flush(&m).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), HEADER + 8192);
        assert_eq!(&bytes[HEADER + 100..HEADER + 107], b"durable");
        // A server's clean stop keeps it; removing the mapped segment removes it, but
        // not a file that took its place.
        fs.withdraw(&n, &m).unwrap();
        assert!(path.exists());
        std::fs::rename(&path, temp("moved")).unwrap();
        std::fs::write(&path, b"another file").unwrap();
        assert_eq!(fs.remove(&n, &m).err(), Some(SystemError::Foreign));
        std::fs::rename(temp("moved"), &path).unwrap();
        fs.remove(&n, &m).unwrap();
        assert!(!path.exists());
        drop(m);
    }
}
