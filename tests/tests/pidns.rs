//! A server in another PID namespace: its pid means nothing out here, so liveness must not
//! be judged from `/proc/PID` alone (dead only on kernel evidence).
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shm_tests::{shm_path, shmipc_exe, unique_name, Lines, SegmentGuard};

/// Hang guard for one step.
const LIMIT: Duration = Duration::from_secs(60);

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Why `unshare --pid --fork --mount-proc` cannot be used here, if it cannot.
fn unshare_unavailable() -> Option<String> {
    match Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .output()
    {
        Err(e) => Some(format!("cannot run unshare: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "`unshare --pid --fork --mount-proc true` failed ({}): {}",
            o.status,
            text(&o).trim()
        )),
        Ok(_) => None,
    }
}

/// A process group started by the test (here: `unshare` and the namespace it makes),
/// SIGKILLed as a whole when dropped, so a failing test leaves nothing running.
struct Group {
    child: Child,
}

impl Group {
    fn pgid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a signal to the process group this test created (its leader is our
        // child, not yet reaped, so the group id is not reused).
        unsafe { libc::kill(-self.pgid(), sig) };
    }

    /// Waits for the leader to exit, up to `limit`.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether any process is left in the group.
    fn any_left(&self) -> bool {
        // SAFETY: signal 0 only checks whether the group has members.
        unsafe { libc::kill(-self.pgid(), 0) == 0 }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Only while the leader is not reaped is the group id surely still ours.
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
            // The namespace's processes die with its first process; wait until the group
            // is empty, then reap the leader.
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                // SAFETY: signal 0 to our own (unreaped) group only checks for members.
                let others = unsafe { libc::kill(-self.pgid(), 0) } == 0
                    && !matches!(self.child.try_wait(), Ok(Some(_)));
                if !others {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `EXE ARGS` in a new process group with stdout (and stderr) piped.
fn spawn_group(exe: &str, args: &[&str]) -> (Group, Lines, Lines) {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {exe} {args:?}: {e}"));
    let out = Lines::new(child.stdout.take().unwrap());
    let err = Lines::new(child.stderr.take().unwrap());
    (Group { child }, out, err)
}

/// A temporary file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `shmipc serve NAME` runs in a new PID namespace (`unshare --pid --fork --mount-proc`),
/// so its pid inside (1) names another process outside. From outside the namespace:
/// - `shmipc send NAME --tag 1 FILE` succeeds and `serve` prints the message (tag, length,
///   checksum);
/// - `shmipc inspect NAME` shows the server as alive;
/// - `shmipc clean` leaves the segment in `/dev/shm`;
/// - a second `shmipc serve NAME` refuses (an error, non-zero exit) instead of taking the
///   segment over;
/// - SIGINT stops the namespaced server, which removes its segment, and nothing is left
///   running.
///
/// Skipped (with the reason on stderr) where PID namespaces cannot be made (neither root
/// nor user namespaces).
#[test]
fn server_in_another_pid_namespace_is_alive_from_outside() {
    if let Some(why) = unshare_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let exe = shmipc_exe();
    let exe = exe.to_str().unwrap();
    let name = unique_name("pidns");
    let _guard = SegmentGuard(name.clone());
    let mut failures: Vec<String> = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            eprintln!("FAILED: {what}");
            failures.push(what);
        }
    };

    let (mut ns, serve_out, serve_err) = spawn_group(
        "unshare",
        &[
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            exe,
            "serve",
            &name,
        ],
    );
    let first = serve_out.next_within(LIMIT).unwrap_or_else(|| {
        let err: Vec<String> =
            std::iter::from_fn(|| serve_err.next_within(Duration::from_millis(100))).collect();
        panic!("namespaced serve printed nothing; stderr: {err:?}")
    });
    assert!(first.starts_with(&format!("serving {name} ")), "{first}");
    assert!(shm_path(&name).exists(), "segment created");

    // send
    let file = TempFile(std::env::temp_dir().join(format!("shm-pidns-{}.bin", std::process::id())));
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 + 5) as u8).collect();
    std::fs::write(&file.0, &data).unwrap();
    let out = Command::new(exe)
        .args(["send", &name, "--tag", "1", file.0.to_str().unwrap()])
        .output()
        .unwrap();
    expect(
        out.status.success() && text(&out).contains("sent 5000 bytes with tag 1"),
        format!("send from outside: {}: {}", out.status, text(&out).trim()),
    );
    if out.status.success() {
        let want = format!(
            "tag 1 bytes 5000 checksum {:#010x}",
            shm_host::checksum(&data)
        );
        let line = serve_out.expect(
            LIMIT,
            "serve prints the message",
            |l| l.starts_with("message from"),
            |l| eprintln!("serve: {l}"),
        );
        expect(
            line.contains(&want),
            format!("serve printed {line:?}, expected {want:?}"),
        );
    }

    // inspect
    let out = Command::new(exe).args(["inspect", &name]).output().unwrap();
    let report = text(&out);
    let server_line = report
        .lines()
        .find(|l| l.starts_with("server:"))
        .unwrap_or("")
        .to_owned();
    expect(
        out.status.success() && server_line.contains("alive?: yes"),
        format!(
            "inspect from outside: {}: server line {server_line:?}\n{report}",
            out.status
        ),
    );

    // clean
    let out = Command::new(exe).args(["clean"]).output().unwrap();
    expect(
        out.status.success() && shm_path(&name).exists(),
        format!(
            "clean from outside: {}, segment {}: {}",
            out.status,
            if shm_path(&name).exists() {
                "kept"
            } else {
                "REMOVED"
            },
            text(&out).trim()
        ),
    );

    // a second server outside the namespace
    let (mut second, second_out, second_err) = spawn_group(exe, &["serve", &name]);
    // It either exits (refusing) or announces that it serves (took the segment over).
    let end = Instant::now() + LIMIT;
    let outcome = loop {
        if let Some(st) = second.child.try_wait().unwrap() {
            break Ok(st);
        }
        if let Ok(line) = second_out.try_next() {
            break Err(line);
        }
        assert!(
            Instant::now() < end,
            "second serve neither exited nor served"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    match outcome {
        Ok(st) => {
            let err: Vec<String> =
                std::iter::from_fn(|| second_err.next_within(Duration::from_millis(200))).collect();
            expect(
                !st.success() && err.iter().any(|l| l.starts_with("shmipc:")),
                format!("second serve: exit {st}, stderr {err:?}"),
            );
        }
        Err(line) => {
            expect(
                false,
                format!("second serve did not refuse, it printed {line:?}"),
            );
            second.signal(libc::SIGINT);
            let _ = second.wait(Duration::from_secs(10));
        }
    }
    drop(second);

    // stop the namespaced server
    ns.signal(libc::SIGINT);
    let st = ns.wait(LIMIT);
    let rest: Vec<String> =
        std::iter::from_fn(|| serve_out.next_within(Duration::from_millis(200))).collect();
    expect(
        st.is_some_and(|s| s.success()) && rest.iter().any(|l| l.starts_with("stopped;")),
        format!("SIGINT to the namespace: exit {st:?}, output {rest:?}"),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while ns.any_left() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    expect(
        !ns.any_left(),
        "processes of the namespace left running".into(),
    );
    drop(ns);
    drop(_guard);
    expect(!shm_path(&name).exists(), "segment left in /dev/shm".into());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
