//! `shmipc` reporting failures it used to hide: each test states its invariant.
#![allow(clippy::unwrap_used)] // tests report failures by panicking
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
