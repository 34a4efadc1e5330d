//! [`SysvSystem`]: System V shared memory (`shmget`/`shmat`/`shmctl`), the second Linux
//! system. Doorbells, waits and liveness are the native system's; only where the segment
//! lives differs.
//!
//! The segment's object (key rule, header, attaching, lock file) is in [`object`]; the
//! [`System`] implementation here.
//!
//! **Name to key.** Segment `NAME` lives at the key [`key_of`]: `0x53000000` (`'S'` in the
//! top byte, so `shmipc clean` can tell which keys may be ours without touching others)
//! plus the low 24 bits of the FNV-1a hash of `shmipc.NAME`. Two names can share a key; so
//! the segment's first page is a [`object::SysvHeader`] naming its segment, and a segment whose
//! header does not name `NAME` exactly is [`SystemError::Foreign`]: never mapped as `NAME`,
//! never removed as `NAME`. The heap's region starts after that page.
//!
//! **Liveness.** A System V segment has no file descriptor to hold a lock on, so every
//! segment has a companion lock file, `/dev/shm/.shmipc.sysv.NAME` (a tmpfs, gone at
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

mod object;

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;

use shm_core::system::{
    CreateOptions, Refusal, SegmentName, System, SystemError, SystemResult as Result,
};
use shm_core::ProcessId;
use shm_posix::last_os;

use super::{bell, process, wait};
use object::{
    attach_named, c_path, file_id, id_of, open_file, remove_lock_file, stat, Attached, HEADER,
    KEY_TAG, MAGIC,
};
pub use object::{key_of, lock_path, SysvMapping};

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

wait::futex_wait_notify!(SysvSystem);

// SAFETY: a `SysvMapping` is an attachment (`shmat`) of more than HEADER bytes, detached
// only on drop, and the region after the header page; liveness is the kernel's lock on
// the very lock file the header names (process.rs); the fork hook changes the generation.
unsafe impl System for SysvSystem {
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

    bell::sem_doorbells!(SysvMapping);
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
