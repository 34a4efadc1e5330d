//! `shmipc` reporting failures it used to hide: each test states its invariant.
#![allow(clippy::unwrap_used)] // tests report failures by panicking
#![cfg(target_os = "linux")]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shm_host::{Server, ServerOptions};

const EXE: &str = env!("CARGO_BIN_EXE_shmipc");

/// `serve` claims `segment NAME removed` only when the segment is gone. Here its name is
/// taken over by a directory while it runs (unlink cannot remove a directory, so the
/// unlink when it stops fails and the name stays listed): `serve` must say it was not
/// removed, on stderr, and exit non-zero.
#[test]
fn serve_reports_a_segment_it_could_not_remove() {
    let name = format!("cli-keep-{}", std::process::id());
    let path = format!("/dev/shm/shmipc.{name}");
    let mut child = Command::new(EXE)
        .args(["serve", &name, "--size", "1MiB"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with(&format!("serving {name}")), "{first}");
    // The mapping stays valid after the name is gone; the directory takes the name.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = std::fs::remove_dir(&path);
            panic!("serve did not stop");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    std::fs::remove_dir(&path).unwrap();
    assert!(!status.success(), "exit status {status}");
    assert!(
        !stdout.iter().any(|l| l.contains("removed")),
        "claimed removal: {stdout:?}"
    );
    assert!(stderr.contains("not removed"), "{stderr}");
}

/// `inspect` on a healthy segment that is busy allocating and freeing reports `check: ok`
/// every time: the check runs under the region lock, so it never sees an operation
/// half-done. (Read without the lock, such a segment was reported corrupted in about
/// half the runs.) `--no-lock` labels its result as possibly inconsistent.
#[test]
fn inspect_checks_a_busy_segment_under_the_lock() {
    let name = format!("cli-busy-{}", std::process::id());
    let stop = AtomicBool::new(false);
    let (ready, started) = mpsc::channel();
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let server = Server::create_with(
                &name,
                ServerOptions {
                    size: 1 << 20,
                    ..ServerOptions::default()
                },
            )
            .unwrap();
            ready.send(()).unwrap();
            let mut held = VecDeque::new();
            let mut i: u32 = 0;
            while !stop.load(Ordering::Relaxed) {
                let size = 16 + (i.wrapping_mul(2_654_435_761) >> 20) as usize % 4000;
                if let Ok(b) = server.alloc(size) {
                    held.push_back(b);
                }
                if held.len() > 32 {
                    held.pop_front();
                }
                i = i.wrapping_add(1);
            }
            drop(held);
            server.segment().check().unwrap();
        });
        // Stops the worker however this thread leaves the scope (a panic included), so a
        // failure cannot hang the test on the scope's join.
        let _stop = StopOnDrop(&stop);
        started.recv().unwrap();
        let mut failures = Vec::new();
        for _ in 0..8 {
            let out = Command::new(EXE).args(["inspect", &name]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if !out.status.success() || !text.contains("check: ok") {
                failures.push(text);
            }
        }
        let out = Command::new(EXE)
            .args(["inspect", &name, "--no-lock"])
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("possibly inconsistent"), "{text}");
        assert!(failures.is_empty(), "{failures:#?}");
    });
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
