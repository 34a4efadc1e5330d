//! Process identity and liveness that survive pid reuse: the tag is a hash of the process
//! creation time (`GetProcessTimes`), so a new process that got a dead one's pid does not
//! pass for it.
//!
//! A process counts as alive when `OpenProcess` finds it, it has not exited (its handle is
//! not signalled, or, where only limited rights are granted, `GetExitCodeProcess` still
//! reports `STILL_ACTIVE`), and its creation time hashes to the tag. A process that exists
//! but refuses even `PROCESS_QUERY_LIMITED_INFORMATION` (another user's protected process)
//! cannot be checked and counts as alive: the trait forbids reporting a live process dead,
//! and such a process cannot be a participant anyway (segments admit only their creator's
//! user), so this only delays recovery if a participant's pid got reused by one.

use std::sync::OnceLock;

use shm_core::ProcessId;
use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_ACCESS_DENIED, ERROR_INVALID_PARAMETER, FILETIME, HANDLE, STILL_ACTIVE,
    WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentProcessId, GetExitCodeProcess, GetProcessTimes, OpenProcess,
    WaitForSingleObject, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE,
};

use super::segment::OwnedHandle;
use shm_core::system::start_time_tag as tag_from;

/// The calling process (tag computed once; Windows has no fork, so it never changes).
pub fn current() -> ProcessId {
    static ME: OnceLock<ProcessId> = OnceLock::new();
    *ME.get_or_init(|| {
        // SAFETY: no preconditions.
        let pid = unsafe { GetCurrentProcessId() };
        // SAFETY: no preconditions; the pseudo-handle needs no closing.
        let me = unsafe { GetCurrentProcess() };
        ProcessId {
            pid,
            // 1 if the query failed: a tag we may produce, never 0 (which counts as dead).
            tag: creation_time(me).map_or(1, tag_from),
        }
    })
}

/// Whether `id` names a running process with the same creation time.
pub fn is_alive(id: ProcessId) -> bool {
    if id.pid == 0 || id.tag == 0 {
        // 0 is never a pid or a tag we produce: a word naming it is stale or corrupted.
        return false;
    }
    let me = current();
    if id.pid == me.pid {
        // This process: alive exactly under its own tag (saves four system calls).
        return id.tag == me.tag;
    }
    match query(id.pid) {
        Query::Running(created) => tag_from(created) == id.tag,
        Query::Exited | Query::NoSuchProcess => false,
        Query::Unknown => true,
    }
}

/// What `OpenProcess` and friends tell about a pid.
#[derive(Debug, PartialEq, Eq)]
enum Query {
    /// Running, created at this FILETIME (100 ns units since 1601).
    Running(u64),
    /// The process object still exists (someone holds a handle) but it has exited.
    Exited,
    /// No process has this pid.
    NoSuchProcess,
    /// It exists but cannot be inspected (access denied, or a query failed).
    Unknown,
}

fn query(pid: u32) -> Query {
    // Prefer a handle we can wait on: `GetExitCodeProcess` alone mistakes a process that
    // exited with code 259 (STILL_ACTIVE) for a running one.
    // SAFETY: plain call; a null result is handled below.
    let mut h = unsafe {
        OpenProcess(
            PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE,
            0,
            pid,
        )
    };
    let mut can_wait = true;
    if h.is_null() {
        // SAFETY: no preconditions.
        let err = unsafe { GetLastError() };
        if err == ERROR_INVALID_PARAMETER {
            // What OpenProcess reports for a pid no process has: the evidence of death.
            return Query::NoSuchProcess;
        }
        if err != ERROR_ACCESS_DENIED {
            // Anything else (out of resources, ...) says nothing about the process: a
            // failed query must not make a live process dead.
            return Query::Unknown;
        }
        // SAFETY: as above.
        h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if h.is_null() {
            return Query::Unknown;
        }
        can_wait = false;
    }
    let h = OwnedHandle(h);
    if can_wait {
        // SAFETY: `h` is a process handle with SYNCHRONIZE access; a zero timeout only polls.
        match unsafe { WaitForSingleObject(h.0, 0) } {
            WAIT_OBJECT_0 => return Query::Exited,
            WAIT_TIMEOUT => {}
            _ => return Query::Unknown,
        }
    } else {
        let mut code = 0u32;
        // SAFETY: `h` has PROCESS_QUERY_LIMITED_INFORMATION; `code` is a valid out-pointer.
        if unsafe { GetExitCodeProcess(h.0, &mut code) } == 0 {
            return Query::Unknown;
        }
        if code != STILL_ACTIVE as u32 {
            return Query::Exited;
        }
    }
    match creation_time(h.0) {
        Some(t) => Query::Running(t),
        None => Query::Unknown,
    }
}

/// The creation time of the process behind `h` (needs PROCESS_QUERY_LIMITED_INFORMATION).
fn creation_time(h: HANDLE) -> Option<u64> {
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: `h` is a process handle with query rights (or the current-process
    // pseudo-handle); the four out-pointers are valid FILETIMEs.
    let ok = unsafe { GetProcessTimes(h, &mut created, &mut exited, &mut kernel, &mut user) };
    if ok == 0 {
        return None;
    }
    Some(u64::from(created.dwHighDateTime) << 32 | u64::from(created.dwLowDateTime))
}

/// The identity of a running process (for tests and tools that know a child's pid).
#[cfg(test)]
fn id_of(pid: u32) -> Option<ProcessId> {
    match query(pid) {
        Query::Running(t) => Some(ProcessId {
            pid,
            tag: tag_from(t),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    /// This process is alive under its own identity and dead under a wrong tag.
    #[test]
    fn own_identity_is_alive_and_tags_matter() {
        let me = current();
        assert_eq!(me.pid, std::process::id());
        assert_ne!(me.tag, 0);
        assert_eq!(id_of(me.pid), Some(me), "creation time is stable");
        assert!(is_alive(me));
        assert!(!is_alive(ProcessId {
            tag: me.tag ^ 2,
            ..me
        }));
        assert!(!is_alive(ProcessId { tag: 0, ..me }));
        assert!(!is_alive(ProcessId { pid: 0, tag: 1 }));
        // Windows pids are multiples of 4: this one never names a process.
        assert!(!is_alive(ProcessId {
            pid: 0xFFFF_FFFF,
            tag: 1
        }));
    }

    /// A child that exited is dead, both while its handle is still open (the process object
    /// lingers) and after it is closed. A running child is alive until it is killed.
    #[test]
    fn exited_children_are_dead() {
        let mut child = Command::new("cmd")
            .args(["/C", "exit 3"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let id = id_of(pid).map_or(ProcessId { pid, tag: 1 }, |id| id);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(3));
        // `child` still holds the process handle: the object exists, exited.
        assert_eq!(query(pid), Query::Exited);
        assert!(!is_alive(id));
        drop(child);
        assert!(!is_alive(id));
    }

    /// Not a test: the long-running child of `killed_child_is_dead` (this test binary,
    /// started again to run only this function).
    #[test]
    #[ignore = "helper process for killed_child_is_dead"]
    fn sleeper() {
        if std::env::var_os(SLEEPER_ENV).is_some() {
            std::thread::sleep(Duration::from_secs(60));
        }
    }

    /// Set for the `sleeper` child only (so `--ignored` runs do not sleep).
    const SLEEPER_ENV: &str = "SHMIPC_WINTEST_SLEEPER";

    /// A running child is alive under its identity; killed, it is dead.
    #[test]
    fn killed_child_is_dead() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "sys::windows::process::tests::sleeper",
            ])
            .env(SLEEPER_ENV, "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let id = id_of(pid).expect("a running child has an identity");
        // Creation times are real per process (Wine too), so tags tell processes apart.
        assert_ne!(id.tag, current().tag);
        assert!(is_alive(id));
        assert!(!is_alive(ProcessId {
            tag: id.tag ^ 2,
            ..id
        }));
        child.kill().unwrap();
        child.wait().unwrap();
        for _ in 0..200 {
            if !is_alive(id) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!is_alive(id));
    }
}
