//! Process identity and liveness that survive pid reuse.
//!
//! QNX has no `/proc/PID/stat`. Its process manager answers the `DCMD_PROC_INFO` `devctl()`
//! on `/proc/PID/ctl` (QNX 7.0 and later; `/proc/PID/as` on older systems) with a
//! `procfs_info` record that holds the process's start time in nanoseconds and its
//! `_NTO_PF_*` flags. The tag of a [`ProcessId`] is a hash of that start time, so a new
//! process that got a dead one's pid does not pass for it, and a zombie (flag
//! `_NTO_PF_ZOMBIE`) counts as dead.
//!
//! When the record cannot be read (another user's process whose `/proc` entry we may not
//! open, or a system that restricts `/proc`), liveness falls back to `kill(pid, 0)`: the
//! pid exists, the tag cannot be checked, and the process counts as alive, because
//! reporting a live process dead would break a lock it holds.
//!
//! Everything here but the system calls is plain computation, compiled and tested on every
//! OS: the record layout, the `devctl` command number, the tag and the verdict.

use shm_core::ProcessId;

/// `_NTO_PF_ZOMBIE` from `<sys/neutrino.h>`: the process has exited and waits to be reaped.
pub const PF_ZOMBIE: u32 = 0x0000_0008;

#[cfg(any(target_os = "nto", target_os = "qnx"))]
const _: () = assert!(PF_ZOMBIE == libc::_NTO_PF_ZOMBIE);

/// `procfs_info` (`debug_process_t` in `<sys/debug.h>`, QNX 7.0 and later, 64-bit): what
/// `DCMD_PROC_INFO` returns. The layout is the C one, field for field; only `flags` and
/// `start_time` are read. Its size is part of the command number (see [`DCMD_PROC_INFO`]),
/// and tests pin both the size and the offsets of the fields that are read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(dead_code)] // mirrors the C layout; most fields are never read
pub struct ProcfsInfo {
    pid: i32,
    parent: i32,
    flags: u32,
    umask: u32,
    child: i32,
    sibling: i32,
    pgrp: i32,
    sid: i32,
    base_address: u64,
    initial_stack: u64,
    uid: i32,
    gid: i32,
    euid: i32,
    egid: i32,
    suid: i32,
    sgid: i32,
    // sigset_t is two 32-bit words on QNX.
    sig_ignore: [u32; 2],
    sig_queue: [u32; 2],
    sig_pending: [u32; 2],
    num_chancons: u32,
    num_fdcons: u32,
    num_threads: u32,
    num_timers: u32,
    /// Nanoseconds; the field the tag is made from.
    start_time: u64,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
    priority: u8,
    reserved2: [u8; 7],
    extsched: [u8; 8],
    pls: u64,
    sigstub: u64,
    canstub: u64,
    private_mem: u64,
    appid: u32,
    type_id: u32,
    reserved: [u64; 8],
}

impl ProcfsInfo {
    /// The `_NTO_PF_*` flags.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// When the process started, in nanoseconds.
    pub fn start_time(&self) -> u64 {
        self.start_time
    }
}

/// `__DIOF(class, cmd, data)` from `<devctl.h>`: a `devctl` command that reads
/// `size_of(data)` bytes from the resource manager.
/// The size field has 14 bits, the class 8 and the command 8 (checked at compile time
/// when the result is a constant).
pub const fn diof(class: u32, cmd: u32, size: usize) -> i32 {
    /// `_POSIX_DEVDIR_FROM` from `<devctl.h>`.
    const POSIX_DEVDIR_FROM: u32 = 0x4000_0000;
    assert!(size < 1 << 14 && class < 1 << 8 && cmd < 1 << 8);
    (POSIX_DEVDIR_FROM | ((size as u32) << 16) | (class << 8) | cmd) as i32
}

/// `_DCMD_PROC` from `<sys/dcmd_all.h>`.
const DCMD_PROC: u32 = 0x08;
/// `__PROC_SUBCMD_PROCFS` from `<sys/procfs.h>`.
const PROC_SUBCMD_PROCFS: u32 = 0;

/// `DCMD_PROC_INFO` from `<sys/procfs.h>`:
/// `__DIOF(_DCMD_PROC, __PROC_SUBCMD_PROCFS + 1, procfs_info)`.
pub const DCMD_PROC_INFO: i32 = diof(
    DCMD_PROC,
    PROC_SUBCMD_PROCFS + 1,
    core::mem::size_of::<ProcfsInfo>(),
);

/// FNV-1a of the start time, never 0 (0 means "unknown tag").
pub fn tag_from_start_time(start_ns: u64) -> u32 {
    shm_core::system::start_time_tag(start_ns)
}

/// What asking the system about a pid gave.
#[derive(Clone, Copy, Debug)]
pub enum Probe {
    /// The process record was read: its `_NTO_PF_*` flags and start time.
    Info {
        /// `_NTO_PF_*` flags.
        flags: u32,
        /// Start time in nanoseconds.
        start_time: u64,
    },
    /// No process has that pid (`ENOENT` from `/proc`, `ESRCH` from `kill`).
    Gone,
    /// The record could not be read, but `kill(pid, 0)` says the pid exists.
    Exists,
}

/// Whether `id` is alive, given what the system said about `id.pid`.
///
/// A pid of 0, a pid beyond `pid_t` or a tag of 0 (never produced by `current`) is dead
/// without asking. A readable record decides by the zombie flag and the tag; an
/// unreadable one for an existing pid counts as alive (the tag cannot be checked, and a
/// live process must never be reported dead).
pub fn judge(id: ProcessId, probe: Probe) -> bool {
    if !plausible(id) {
        return false;
    }
    match probe {
        Probe::Info { flags, start_time } => {
            flags & PF_ZOMBIE == 0 && tag_from_start_time(start_time) == id.tag
        }
        Probe::Gone => false,
        Probe::Exists => true,
    }
}

/// Whether `id` could name a process at all (checked before any system call).
fn plausible(id: ProcessId) -> bool {
    id.pid != 0 && id.pid <= i32::MAX as u32 && id.tag != 0
}

/// The calling process. The tag is computed once per process; a forked child (new pid)
/// computes its own.
#[cfg(any(target_os = "nto", target_os = "qnx"))]
pub fn current() -> ProcessId {
    use std::sync::OnceLock;
    /// Our tag if our own record cannot be read. That does not happen in practice (the
    /// `/proc` entry belongs to the caller); should it, a non-zero tag keeps the identity
    /// usable for peers, which then cannot read the record either and fall back to `kill`.
    const FALLBACK_TAG: u32 = 1;
    static ME: OnceLock<ProcessId> = OnceLock::new();
    let pid = std::process::id();
    let make = || ProcessId {
        pid,
        tag: sys::info(pid)
            .map(|i| tag_from_start_time(i.start_time()))
            .unwrap_or(FALLBACK_TAG),
    };
    let cached = *ME.get_or_init(make);
    if cached.pid == pid {
        cached
    } else {
        make()
    }
}

/// Whether `id` names a running, non-zombie process with the same start time. A process
/// that is terminating (`_NTO_PF_TERMING`) still counts as alive until it is a zombie: its
/// threads may still be inside an operation on the region.
#[cfg(any(target_os = "nto", target_os = "qnx"))]
pub fn is_alive(id: ProcessId) -> bool {
    if !plausible(id) {
        return false;
    }
    judge(id, sys::probe(id.pid))
}

/// The QNX system calls.
#[cfg(any(target_os = "nto", target_os = "qnx"))]
mod sys {
    use std::ffi::CString;

    use super::{Probe, ProcfsInfo, DCMD_PROC_INFO};

    extern "C" {
        /// `int devctl(int filedes, int dcmd, void *dev_data_ptr, size_t n_bytes,
        /// int *dev_info_ptr);` from `<devctl.h>` (libc). Returns `EOK` (0) or an errno
        /// value; it does not set `errno`. Not bound by the `libc` crate.
        fn devctl(
            filedes: libc::c_int,
            dcmd: libc::c_int,
            dev_data_ptr: *mut libc::c_void,
            n_bytes: libc::size_t,
            dev_info_ptr: *mut libc::c_int,
        ) -> libc::c_int;
    }

    /// Closes a descriptor on drop.
    struct Fd(libc::c_int);

    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: we own the descriptor and close it once.
            unsafe { libc::close(self.0) };
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Opens `/proc/PID/ENTRY` read-only, or returns the errno.
    fn open_entry(pid: u32, entry: &str) -> Result<Fd, i32> {
        let path = CString::new(format!("/proc/{pid}/{entry}")).map_err(|_| libc::EINVAL)?;
        // SAFETY: `path` is a valid C string; the flags are plain integers.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            Ok(Fd(fd))
        } else {
            Err(errno())
        }
    }

    /// Opens the `/proc` entry that answers `devctl` for `pid`: `ctl` (QNX 7.0 and later,
    /// readable by other users by default), or `as` where there is no `ctl`. A pid that
    /// is gone has neither, and the result is `ENOENT`.
    fn open_proc(pid: u32) -> Result<Fd, i32> {
        match open_entry(pid, "ctl") {
            Err(libc::ENOENT) => open_entry(pid, "as"),
            done => done,
        }
    }

    /// The `procfs_info` record of `pid`, or the errno that prevented reading it.
    pub(super) fn info(pid: u32) -> Result<ProcfsInfo, i32> {
        let fd = open_proc(pid)?;
        let mut info = ProcfsInfo::default();
        // SAFETY: `fd` is open; `info` is a writable `procfs_info` of exactly the size
        // passed, and the command reads at most that many bytes into it.
        let r = unsafe {
            devctl(
                fd.0,
                DCMD_PROC_INFO,
                (&mut info as *mut ProcfsInfo).cast(),
                core::mem::size_of::<ProcfsInfo>(),
                core::ptr::null_mut(),
            )
        };
        if r == libc::EOK {
            Ok(info)
        } else {
            Err(r)
        }
    }

    /// Asks the system about `pid` (1 <= pid <= i32::MAX, checked by the caller).
    pub(super) fn probe(pid: u32) -> Probe {
        match info(pid) {
            Ok(info) => Probe::Info {
                flags: info.flags(),
                start_time: info.start_time(),
            },
            Err(libc::ENOENT) | Err(libc::ESRCH) => Probe::Gone,
            Err(_) => {
                // SAFETY: signal 0 only checks that the pid exists and may be signalled.
                let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
                if r == 0 || errno() != libc::ESRCH {
                    Probe::Exists
                } else {
                    Probe::Gone
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    /// The record has the C layout of QNX's 64-bit `debug_process_t`: 272 bytes, `flags`
    /// at 8, `start_time` at 112 (a wrong layout would read garbage as the start time).
    #[test]
    fn procfs_info_layout_matches_the_header() {
        assert_eq!(size_of::<ProcfsInfo>(), 272);
        assert_eq!(offset_of!(ProcfsInfo, flags), 8);
        assert_eq!(offset_of!(ProcfsInfo, base_address), 32);
        assert_eq!(offset_of!(ProcfsInfo, sig_ignore), 72);
        assert_eq!(offset_of!(ProcfsInfo, num_chancons), 96);
        assert_eq!(offset_of!(ProcfsInfo, start_time), 112);
        assert_eq!(offset_of!(ProcfsInfo, priority), 152);
        assert_eq!(offset_of!(ProcfsInfo, reserved), 208);
    }

    /// The command number is `__DIOF(_DCMD_PROC, 1, procfs_info)`: direction "from",
    /// the record size in bits 16.., class 8 in bits 8.., command 1.
    #[test]
    fn dcmd_proc_info_encodes_class_command_and_size() {
        assert_eq!(DCMD_PROC_INFO as u32, 0x4000_0000 | (272 << 16) | 0x0801);
        assert_eq!(DCMD_PROC_INFO as u32 & 0xffff, 0x0801);
    }

    /// Tags are never 0 and differ for different start times (the point of a tag).
    #[test]
    fn tags_are_non_zero_and_tell_start_times_apart() {
        let mut seen = std::collections::HashSet::new();
        for start in [
            0u64,
            1,
            2,
            1_000_000_000,
            u64::MAX,
            1_700_000_000_123_456_789,
        ] {
            let t = tag_from_start_time(start);
            assert_ne!(t, 0);
            assert!(seen.insert(t), "collision for {start}");
        }
        assert_eq!(tag_from_start_time(42), tag_from_start_time(42));
    }

    /// The verdict: a readable record decides by tag and zombie flag; a vanished pid is
    /// dead; an unreadable but existing pid is alive (never report a live process dead);
    /// pid 0 and tag 0 are dead without asking.
    #[test]
    fn verdicts() {
        let start = 123_456_789_000;
        let id = ProcessId {
            pid: 4105,
            tag: tag_from_start_time(start),
        };
        let info = |flags, start_time| Probe::Info { flags, start_time };
        assert!(judge(id, info(0, start)));
        assert!(judge(id, info(0x20, start)), "other flags do not matter");
        assert!(!judge(id, info(0, start + 1)), "pid reused");
        assert!(!judge(id, info(PF_ZOMBIE, start)), "zombie");
        assert!(!judge(id, Probe::Gone));
        assert!(judge(id, Probe::Exists));
        assert!(!judge(ProcessId { tag: 0, ..id }, Probe::Exists));
        assert!(!judge(ProcessId { pid: 0, ..id }, Probe::Exists));
        assert!(!judge(
            ProcessId {
                pid: u32::MAX,
                ..id
            },
            Probe::Exists
        ));
    }
}
