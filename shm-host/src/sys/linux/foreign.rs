//! Linux providers for memory mapped by others ([`crate::foreign`]): `sem_t` doorbells and
//! futex word waits that work in any shared mapping of ordinary memory, and liveness from
//! open-file-description locks on a descriptor of the object behind the memory.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use shm_core::system::{SystemError, SystemResult};
use shm_core::{Doorbell, ProcessId, Region, WaitOutcome};
use shm_posix::last_os;

use super::{bell, process, wait};
use crate::foreign::{Doorbells, ForeignMapping, Liveness};
use crate::system::Mapping;

/// Doorbells as on named Linux segments: a `sem_t` in the doorbell
/// (`sem_init(pshared = 1)`), and futex waits on words (shared futexes, keyed by the
/// object and offset, so processes that map the memory at different addresses meet).
///
/// Both need memory the kernel can key a futex on: a shared mapping of a file, a memfd,
/// POSIX or System V shared memory, or `MAP_SHARED | MAP_ANONYMOUS` memory shared over
/// `fork`. On an I/O mapping (`VM_IO`/`VM_PFNMAP`, as many device windows are) the futex
/// calls fail at once, so sleeps turn into spins; use [`PolledDoorbells`] there.
///
/// [`PolledDoorbells`]: crate::foreign::PolledDoorbells
#[derive(Clone, Copy, Debug, Default)]
pub struct SemDoorbells;

wait::futex_wait_notify!(SemDoorbells);

impl Doorbells for SemDoorbells {
    fn bell_init(&self, region: &Region<'_>, b: &Doorbell) -> SystemResult<()> {
        bell::init(region, b)
    }
    fn bell_ring(&self, region: &Region<'_>, b: &Doorbell) -> SystemResult<()> {
        bell::ring(region, b)
    }
    fn bell_wait(
        &self,
        region: &Region<'_>,
        b: &Doorbell,
        timeout: Option<Duration>,
    ) -> SystemResult<WaitOutcome> {
        bell::wait(region, b, timeout)
    }
    fn bell_destroy(&self, region: &Region<'_>, b: &Doorbell) {
        bell::destroy(region, b)
    }
}

/// Kernel evidence of liveness for memory that is a shared mapping of an object the
/// caller has a descriptor of (a memfd received over a Unix socket, a file): each
/// attachment holds an open-file-description lock on one byte of the object, at 2^40 plus
/// its random 32-bit mark, exactly as on named Linux segments (see `process.rs`). The
/// kernel drops the lock when the process exits, however it exits, so a probe answered
/// "free" is death and a failed probe is "alive"; this holds across PID namespaces, users
/// and pid reuse, and a stopped process stays alive.
///
/// Also tells the server the object's size (it stops using an object found truncated),
/// and lets it kill an unresponsive client it can confirm (`kill_unresponsive`).
#[derive(Clone, Debug)]
pub struct FdLiveness {
    fd: Arc<OwnedFd>,
}

impl FdLiveness {
    /// Liveness from locks on the object behind `fd`.
    ///
    /// The locks are taken through a new open file description of that object, opened
    /// through `/proc/self/fd` (read-write, close-on-exec), not through `fd`'s: a
    /// descriptor received over a socket shares its open file description with the
    /// sender's, and a lock probe cannot see locks held through the probing description,
    /// so the sender would look dead. Fails if the object cannot be opened that way, or
    /// the new description is not of the same object.
    ///
    /// Entering memory with it checks, in `/proc/self/maps`, that the memory's first byte
    /// is a mapping of this object, and refuses memory it cannot confirm.
    ///
    /// # Safety
    ///
    /// Every participant of the memory uses `FdLiveness` on a descriptor of the same
    /// object (the one whose shared mapping the memory is): a participant that does not
    /// holds no lock there, so the others would see it dead and reclaim its memory while
    /// it still uses it.
    pub unsafe fn new(fd: impl AsFd) -> SystemResult<Self> {
        let given = fd.as_fd();
        let path = format!("/proc/self/fd/{}", given.as_raw_fd());
        let own = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| SystemError::Os {
                call: "open(/proc/self/fd/N)",
                code: e.raw_os_error().unwrap_or(0),
            })?;
        let live = FdLiveness {
            fd: Arc::new(OwnedFd::from(own)),
        };
        let (a, b) = (stat(given)?, live.stat()?);
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
            return Err(SystemError::Os {
                call: "open(/proc/self/fd/N) (reopened another object)",
                code: libc::EINVAL,
            });
        }
        Ok(live)
    }

    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn stat(&self) -> SystemResult<libc::stat> {
        stat(self.fd.as_fd())
    }

    /// Refuses memory whose first byte is not a mapping of this descriptor's object.
    fn check_maps(&self, memory: &ForeignMapping) -> SystemResult<()> {
        const WHAT: &str =
            "/proc/self/maps (FdLiveness: the memory is not a mapping of the descriptor's object)";
        let st = self.stat()?;
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| SystemError::Os {
            call: "/proc/self/maps",
            code: e.raw_os_error().unwrap_or(0),
        })?;
        let addr = memory.as_ptr() as usize;
        let wanted_dev = (libc::major(st.st_dev), libc::minor(st.st_dev));
        let confirmed = maps
            .lines()
            .filter_map(MapsLine::parse)
            .find(|l| l.start <= addr && addr < l.end)
            .is_some_and(|l| l.dev == wanted_dev && l.inode == st.st_ino && l.shared);
        if confirmed {
            Ok(())
        } else {
            Err(SystemError::Os {
                call: WHAT,
                code: libc::EINVAL,
            })
        }
    }
}

/// `fstat` of `fd`.
fn stat(fd: BorrowedFd<'_>) -> SystemResult<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten by `fstat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open and `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_os("fstat"));
    }
    Ok(st)
}

/// One line of `/proc/self/maps`: `start-end perms offset major:minor inode [path]`.
struct MapsLine {
    start: usize,
    end: usize,
    shared: bool,
    dev: (u32, u32),
    inode: u64,
}

impl MapsLine {
    fn parse(line: &str) -> Option<MapsLine> {
        let mut f = line.split_whitespace();
        let (start, end) = f.next()?.split_once('-')?;
        let perms = f.next()?;
        let _offset = f.next()?;
        let (major, minor) = f.next()?.split_once(':')?;
        let inode = f.next()?.parse().ok()?;
        Some(MapsLine {
            start: usize::from_str_radix(start, 16).ok()?,
            end: usize::from_str_radix(end, 16).ok()?,
            shared: perms.as_bytes().get(3) == Some(&b's'),
            dev: (
                u32::from_str_radix(major, 16).ok()?,
                u32::from_str_radix(minor, 16).ok()?,
            ),
            inode,
        })
    }
}

// SAFETY: presences are `process::Presence`, whose `is_alive` answers `false` only when
// the kernel answered a probe of the mark's byte "unlocked" (no open file description
// holds it: its attachment's process is gone) or for mark 0, which no attachment takes;
// `FdLiveness::new`'s contract makes every participant hold its mark on the same object.
unsafe impl Liveness for FdLiveness {
    type Presence = process::Presence;

    fn enter(&self, memory: &ForeignMapping) -> SystemResult<process::Presence> {
        self.check_maps(memory)?;
        process::Presence::enter(self.fd.as_fd())
    }

    fn terminate(&self, _memory: &ForeignMapping, id: ProcessId) -> SystemResult<bool> {
        process::terminate(self.fd.as_fd(), id)
    }

    fn object_size(&self, _memory: &ForeignMapping) -> SystemResult<u64> {
        Ok(u64::try_from(self.stat()?.st_size).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::MapsLine;

    /// A maps line is read field by field; a private mapping is not shared.
    #[test]
    fn maps_lines_parse() {
        let l = MapsLine::parse(
            "7f12a0000000-7f12a0800000 rw-s 00000000 00:01 4242      /memfd:x (deleted)",
        )
        .unwrap();
        assert_eq!(
            (l.start, l.end, l.shared, l.dev, l.inode),
            (0x7f12a0000000, 0x7f12a0800000, true, (0, 1), 4242)
        );
        let p = MapsLine::parse("00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/x").unwrap();
        assert!(!p.shared);
        assert_eq!(p.dev, (8, 2));
        assert!(MapsLine::parse("garbage").is_none());
    }
}
