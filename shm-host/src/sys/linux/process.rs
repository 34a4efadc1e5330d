//! Identity and liveness on Linux: a lock the kernel holds for each attachment.
//!
//! Every attachment of a segment takes an open-file-description lock (`F_OFD_SETLK`) on
//! one byte of the segment's object, at [`MARK_BASE`] plus a random 32-bit mark it picks
//! (far beyond the object's end; POSIX locks may lie past end of file). The mark is its
//! identity's tag; the pid is kept for display only. The kernel drops the lock when the
//! last descriptor of that open file description closes - when the process exits, however
//! it exits - and nothing else drops it. So whether a mark is held is evidence that holds:
//! - across PID namespaces (containers share `/dev/shm` without sharing pids), since the
//!   lock lives on the object, not on a pid;
//! - across users that share the object;
//! - through pid reuse, since a new process with an old pid holds no old mark;
//! - for stopped processes (SIGSTOP keeps the lock): stopped is not dead.
//!
//! A probe (`F_OFD_GETLK`) that finds the byte unlocked is the kernel saying no live
//! description holds that mark: dead. A probe that fails is "cannot tell": alive.
//!
//! A forked child shares its parent's open file descriptions, so it keeps the parent's
//! marks alive as long as it lives: a conservative answer (alive), never a wrong "dead".
//!
//! A probe cannot see a lock held through the probing description itself, so two
//! attachments that map the same open file description (a memfd passed to `map_fd`
//! twice) would look dead to each other; the marks this process holds are therefore also
//! kept in a process-local set and count as alive.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use shm_core::{ProcessId, Processes};

use shm_core::system::{SystemError, SystemResult as Result};
use shm_posix::last_os;

/// Offset of mark 0: above every segment (segments are at most 4 GiB), below `off_t`'s
/// limit for every 32-bit mark.
pub const MARK_BASE: i64 = 1 << 40;

/// How many random marks to try before giving up (each collision means another live
/// attachment holds that mark; 2^32 marks make a second collision all but impossible).
const MARK_TRIES: u32 = 16;

/// This process's pid, cached (every lock acquisition asks for the identity, and a
/// `getpid` system call each time costs about a quarter of a send); 0 until first asked
/// and again in a forked child.
static PID: AtomicU32 = AtomicU32::new(0);

/// Incremented in every forked child: lets handles made before a fork tell that they are
/// now used by another process.
static FORKS: AtomicU32 = AtomicU32::new(0);

fn install_fork_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: registers a plain function with no preparation or parent handler; the
        // child handler only performs atomic operations (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// A forked child is another process: it must not inherit the parent's identity.
extern "C" fn in_child() {
    PID.store(0, Ordering::Relaxed);
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The calling process's pid (cached, reset in forked children).
pub fn pid() -> u32 {
    let p = PID.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    install_fork_hook();
    let p = std::process::id();
    PID.store(p, Ordering::Relaxed);
    p
}

/// How many forks separate this process from the one that first asked (see
/// [`crate::System::fork_generation`]).
pub fn fork_generation() -> u32 {
    install_fork_hook();
    FORKS.load(Ordering::Relaxed)
}

/// The marks this process holds (see the module documentation).
static HELD: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

fn held(f: impl FnOnce(&mut HashSet<u32>) -> bool) -> bool {
    let mut g = HELD.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(HashSet::new))
}

/// Kills process `id` with SIGKILL, but only if the process that now has pid `id.pid` in
/// this PID namespace is the one holding mark `id.tag` on the object behind `object`: the
/// pid alone could name another process (reused, or the pid is from another namespace).
/// The kernel lists each description's locks in `/proc/PID/fdinfo/FD`; the check is made
/// after `pidfd_open` pinned the process, so it cannot be replaced between the check and
/// the signal. Returns whether the signal was sent; `Ok(false)` when the holder cannot be
/// confirmed (then nothing is done).
pub fn terminate(object: BorrowedFd<'_>, id: ProcessId) -> Result<bool> {
    let Ok(pid) = libc::pid_t::try_from(id.pid) else {
        return Ok(false);
    };
    if pid <= 0 || id.tag == 0 {
        return Ok(false);
    }
    // SAFETY: an all-zero `stat` is a valid value to be overwritten by `fstat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open and `st` is a valid out-pointer.
    if unsafe { libc::fstat(object.as_raw_fd(), &mut st) } != 0 {
        return Err(last_os("fstat"));
    }
    let start = MARK_BASE + i64::from(id.tag);
    let wanted = format!(
        "{:02x}:{:02x}:{} {start} {start}",
        libc::major(st.st_dev),
        libc::minor(st.st_dev),
        st.st_ino
    );
    // SAFETY: plain system call with integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Ok(false); // gone already, or not visible from here
    }
    let Ok(raw) = libc::c_int::try_from(pidfd) else {
        return Ok(false);
    };
    // SAFETY: `pidfd_open` returned a new descriptor that we own.
    let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    if !holds_lock(pid, &wanted) {
        return Ok(false);
    }
    // SAFETY: plain system call on our pidfd; a null siginfo is allowed.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Ok(sent == 0)
}

/// Whether one of `pid`'s descriptors holds an OFD lock described by `wanted` ("dev:ino
/// start end", as `/proc/PID/fdinfo` prints it).
fn holds_lock(pid: libc::pid_t, wanted: &str) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path()).is_ok_and(|text| {
            text.lines()
                .any(|l| l.contains("OFDLCK") && l.trim_end().ends_with(wanted))
        })
    })
}

/// One attachment's presence in a segment: its mark, held on a descriptor of the same open
/// file description as the mapping's.
#[derive(Debug)]
pub struct Presence {
    fd: OwnedFd,
    me: ProcessId,
}

fn flock_at(kind: libc::c_int, mark: u32) -> libc::flock {
    // SAFETY: `flock` is plain data; all-zero is a valid value (and l_pid must be 0 for
    // OFD requests).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = (MARK_BASE + i64::from(mark)) as libc::off_t;
    fl.l_len = 1;
    fl
}

fn random_mark() -> Result<u32> {
    let mut bytes = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `bytes`.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != 4 {
        return Err(last_os("getrandom"));
    }
    Ok(u32::from_ne_bytes(bytes))
}

impl Presence {
    /// Takes a fresh mark on the object behind `fd`.
    pub fn enter(fd: BorrowedFd<'_>) -> Result<Self> {
        let fd = fd.try_clone_to_owned().map_err(|e| SystemError::Os {
            call: "fcntl(F_DUPFD_CLOEXEC)",
            code: e.raw_os_error().unwrap_or(0),
        })?;
        for _ in 0..MARK_TRIES {
            let mark = random_mark()?;
            if mark == 0 {
                continue; // 0 is never a mark: a zeroed word must not name a live process
            }
            let fl = flock_at(libc::F_WRLCK, mark);
            // SAFETY: `fd` is open; `fl` is a valid flock for the duration of the call.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
                if !held(|h| h.insert(mark)) {
                    // Held by another attachment of this process through the same
                    // description (where the lock request cannot see it): pick another.
                    continue;
                }
                return Ok(Presence {
                    fd,
                    me: ProcessId {
                        pid: pid(),
                        tag: mark,
                    },
                });
            }
            let e = last_os("fcntl(F_OFD_SETLK)");
            match e.os_code() {
                // Another live attachment holds this mark: pick another.
                Some(libc::EAGAIN) | Some(libc::EACCES) => continue,
                _ => return Err(e),
            }
        }
        Err(SystemError::Os {
            call: "fcntl(F_OFD_SETLK)",
            code: libc::EAGAIN,
        })
    }

    /// What the kernel says about mark `mark`: `Some(true)` held, `Some(false)` free,
    /// `None` when the probe failed.
    fn probe(&self, mark: u32) -> Option<bool> {
        let mut fl = flock_at(libc::F_WRLCK, mark);
        // SAFETY: the descriptor is open; `fl` is a valid flock the call may overwrite.
        if unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
            return None;
        }
        Some(fl.l_type != libc::F_UNLCK as libc::c_short)
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let tag = self.me.tag;
        held(|h| h.remove(&tag));
    }
}

impl Processes for Presence {
    fn current_process(&self) -> ProcessId {
        // The pid is for display; a forked child reports its own.
        ProcessId {
            pid: pid(),
            tag: self.me.tag,
        }
    }

    fn is_alive(&self, id: ProcessId) -> bool {
        if id.tag == self.me.tag || held(|h| h.contains(&id.tag)) {
            // A mark of this process: possibly held through the probing description, which
            // a probe cannot see. (A forked child shares it: alive either way.)
            return true;
        }
        // Held, or cannot tell: alive. Only a probe the kernel answered "free" is death.
        self.probe(id.tag) != Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_core::system::CreateOptions;
    use shm_posix::PosixMapping;

    struct Unlink(String);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = PosixMapping::unlink(&self.0);
        }
    }

    fn segment(tag: &str) -> (PosixMapping, Unlink) {
        let name = format!("shm-presence-{tag}-{}", std::process::id());
        let _ = PosixMapping::unlink(&name);
        let m = PosixMapping::create(&name, 4096, CreateOptions::default()).unwrap();
        (m, Unlink(name))
    }

    /// Two attachments see each other alive; when one closes, the other sees it dead; a
    /// mark nobody took is dead; its own mark is alive.
    #[test]
    fn marks_live_exactly_as_long_as_their_attachment() {
        let (m, _u) = segment("marks");
        let a = Presence::enter(m.fd()).unwrap();
        let other = PosixMapping::open(&_u.0).unwrap();
        let b = Presence::enter(other.fd()).unwrap();
        let (ida, idb) = (a.current_process(), b.current_process());
        assert_ne!(ida.tag, idb.tag);
        assert!(a.is_alive(ida));
        assert!(a.is_alive(idb) && b.is_alive(ida));
        let never = ProcessId {
            pid: ida.pid,
            tag: ida.tag.wrapping_add(1).max(1),
        };
        if never.tag != idb.tag {
            assert!(!a.is_alive(never), "a mark nobody holds is dead");
        }
        drop(b);
        drop(other);
        assert!(!a.is_alive(idb), "a closed attachment's mark is released");
    }

    /// Another process's mark is alive while it runs and dead once it exited, whatever
    /// its pid. The child (forked) uses only async-signal-safe calls.
    #[test]
    fn an_exited_process_is_dead() {
        let (m, u) = segment("exit");
        let a = Presence::enter(m.fd()).unwrap();
        let mark = loop {
            let mark = random_mark().unwrap();
            if mark != 0 && mark != a.me.tag && a.probe(mark) == Some(false) {
                break mark;
            }
        };
        let name = std::ffi::CString::new(format!("/{}", u.0)).unwrap();
        let fl = flock_at(libc::F_WRLCK, mark);
        let mut up = [0; 2];
        let mut down = [0; 2];
        // SAFETY: valid out-arrays of two ints.
        assert_eq!(unsafe { libc::pipe(up.as_mut_ptr()) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::pipe(down.as_mut_ptr()) }, 0);
        // SAFETY: the child makes only async-signal-safe calls (open, fcntl, write, read,
        // _exit) and never returns into the test harness.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            // SAFETY: plain system calls on a valid C string, flock and buffers.
            unsafe {
                let fd = libc::shm_open(name.as_ptr(), libc::O_RDWR, 0);
                let ok = fd >= 0 && libc::fcntl(fd, libc::F_OFD_SETLK, &fl) == 0;
                let byte = [u8::from(ok)];
                libc::write(up[1], byte.as_ptr().cast(), 1);
                // Our copy of the write end would keep the read below from seeing EOF.
                libc::close(down[1]);
                let mut wait = [0u8; 1];
                libc::read(down[0], wait.as_mut_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        let id = ProcessId {
            pid: child as u32,
            tag: mark,
        };
        let mut byte = [0u8; 1];
        // SAFETY: reads one byte into a live buffer.
        assert_eq!(unsafe { libc::read(up[0], byte.as_mut_ptr().cast(), 1) }, 1);
        assert_eq!(byte[0], 1, "child could not take its mark");
        assert!(a.is_alive(id), "a running process is alive");
        // SAFETY: closing our end of the pipe lets the child exit.
        unsafe { libc::close(down[1]) };
        let mut status = 0;
        // SAFETY: waits for the child we forked.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(!a.is_alive(id), "an exited process is dead");
        // SAFETY: closing the remaining pipe ends we opened.
        unsafe {
            libc::close(up[0]);
            libc::close(up[1]);
            libc::close(down[0]);
        }
    }

    /// A forked child gets its own pid, not its parent's cached one, and a new fork
    /// generation.
    #[test]
    fn forked_child_has_its_own_pid() {
        let parent = pid();
        let gen = fork_generation();
        // SAFETY: the child only reads atomics and leaves with _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let ok = pid() != parent && pid() == std::process::id() && fork_generation() != gen;
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child we forked.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(pid(), parent);
    }
}
