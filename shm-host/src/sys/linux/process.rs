//! Process identity and liveness that survive pid reuse: the tag is a hash of the process
//! start time (`/proc/PID/stat`, field 22), so a new process that got a dead one's pid does
//! not pass for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use shm_core::ProcessId;

/// This process's identity, packed (pid low, tag high); 0 until first asked, and again in
/// a forked child (see `forget_in_child`).
static ME: AtomicU64 = AtomicU64::new(0);

/// The calling process. Computed once and cached: every lock acquisition asks, and a
/// `getpid` system call each time costs about a quarter of a send.
pub fn current() -> ProcessId {
    let packed = ME.load(Ordering::Relaxed);
    if packed != 0 {
        return ProcessId {
            pid: packed as u32,
            tag: (packed >> 32) as u32,
        };
    }
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: registers a plain function with no preparation or parent handler; the
        // child handler only performs an atomic store (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
    });
    let pid = std::process::id();
    let me = ProcessId {
        pid,
        tag: tag_of(pid).unwrap_or(1),
    };
    ME.store(
        u64::from(me.pid) | (u64::from(me.tag) << 32),
        Ordering::Relaxed,
    );
    me
}

/// A forked child is another process: it must not inherit the parent's identity.
extern "C" fn forget_in_child() {
    ME.store(0, Ordering::Relaxed);
}

/// Whether `id` names a running (not zombie) process with the same start time.
pub fn is_alive(id: ProcessId) -> bool {
    if id.pid == 0 || id.pid > i32::MAX as u32 || id.tag == 0 {
        // 0 is never a tag we produce: a word naming it is stale or corrupted.
        return false;
    }
    match stat(id.pid) {
        Some((state, start)) => state != 'Z' && state != 'X' && tag_from(start) == id.tag,
        None => false,
    }
}

/// The tag of `pid`, if it runs.
fn tag_of(pid: u32) -> Option<u32> {
    stat(pid).map(|(_, start)| tag_from(start))
}

use crate::support::start_time_tag as tag_from;

/// (state, start time in clock ticks) from `/proc/PID/stat`. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=22 follow the state (field 3); the start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process is alive under its own identity and dead under a wrong tag.
    #[test]
    fn own_identity_is_alive_and_tags_matter() {
        let me = current();
        assert_eq!(me.pid, std::process::id());
        assert!(is_alive(me));
        assert!(!is_alive(ProcessId {
            tag: me.tag ^ 2,
            ..me
        }));
        assert!(!is_alive(ProcessId { tag: 0, ..me }));
        assert!(!is_alive(ProcessId { pid: 0, tag: 1 }));
    }

    /// A forked child gets its own identity, not its parent's cached one.
    #[test]
    fn forked_child_has_its_own_identity() {
        let parent = current();
        // SAFETY: the child only calls async-signal-safe-enough code (our atomic cache, a
        // /proc read) and leaves with _exit, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let me = current();
            let ok = me.pid != parent.pid && me.pid == std::process::id();
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child we forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(current(), parent);
    }

    /// A child that exited (and was reaped) is dead; a zombie is dead too.
    #[test]
    fn exited_children_are_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let id = ProcessId {
            pid,
            tag: tag_of(pid).unwrap_or(1),
        };
        // Give it time to exit, without reaping: it becomes a zombie.
        for _ in 0..200 {
            if !is_alive(id) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!is_alive(id), "zombie counted as alive");
        child.wait().unwrap();
        assert!(!is_alive(id));
    }
}
