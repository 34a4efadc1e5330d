//! Creating a server over an existing segment, and a segment that shrinks under its server.
//! Each test states the invariant it checks.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shm_core::system::SystemResult;
use shm_core::Doorbell;
use shm_core::{Region, WaitNotify, WaitOutcome};
use shm_host::posix::PosixMapping;
use shm_host::{
    CreateOptions, HostError, NativeSystem, Refusal, SegmentName, Server, ServerOptions, System,
    SystemError,
};

fn name(test: &str) -> String {
    format!("takeover-{test}-{}", std::process::id())
}

fn small() -> ServerOptions {
    ServerOptions {
        size: 1 << 20,
        heartbeat: Duration::from_millis(10),
        ..ServerOptions::default()
    }
}

/// A segment that belongs to another user is not taken over, whatever its server's state:
/// the refusal names the owner. (Needs root to give the object away; skipped otherwise.)
#[test]
fn another_users_segment_is_not_taken_over() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: giving a segment to another user needs root");
        return;
    }
    let n = name("user");
    let first = Server::create_with(&n, small()).unwrap();
    let path = format!("/dev/shm/{}", SegmentName::new(&n).unwrap().prefixed());
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    let second = Server::create_with(&n, small());
    let refused = matches!(
        second.as_ref().err(),
        Some(HostError::TakeoverRefused {
            why: Refusal::OtherUser {
                owner: 65534,
                me: 0
            },
            ..
        })
    );
    std::os::unix::fs::chown(&path, Some(0), None).unwrap();
    drop(second);
    drop(first);
    assert!(refused, "taken over from another user");
}

/// The host system, with a switch that makes the segment's object look shorter than the
/// mapping: what a truncation by another process looks like to the server, without the
/// SIGBUS a real one would raise in this test process.
#[derive(Clone, Default)]
struct Shrinking {
    reported: Arc<AtomicU64>,
}

impl WaitNotify for Shrinking {
    fn wait(
        &self,
        word: &std::sync::atomic::AtomicU32,
        expected: u32,
        timeout: Option<Duration>,
    ) -> WaitOutcome {
        NativeSystem.wait(word, expected, timeout)
    }
    fn notify_all(&self, word: &std::sync::atomic::AtomicU32) {
        NativeSystem.notify_all(word)
    }
}

// SAFETY: the native system's mappings and liveness; only the reported object size
// differs, which the host layer treats as a truncation (it stops using the mapping).
unsafe impl System for Shrinking {
    type Mapping = PosixMapping;
    type Presence = <NativeSystem as System>::Presence;

    fn enter(&self, m: &PosixMapping) -> SystemResult<Self::Presence> {
        NativeSystem.enter(m)
    }
    fn create(
        &self,
        name: &SegmentName,
        size: usize,
        opts: CreateOptions,
    ) -> SystemResult<PosixMapping> {
        NativeSystem.create(name, size, opts)
    }
    fn open(&self, name: &SegmentName) -> SystemResult<PosixMapping> {
        NativeSystem.open(name)
    }
    fn unlink(&self, name: &SegmentName) -> SystemResult<()> {
        NativeSystem.unlink(name)
    }
    fn list(&self, each: &mut dyn FnMut(SegmentName)) -> SystemResult<()> {
        NativeSystem.list(each)
    }
    fn object_size(&self, m: &PosixMapping) -> SystemResult<u64> {
        match self.reported.load(Ordering::SeqCst) {
            0 => NativeSystem.object_size(m),
            n => Ok(n),
        }
    }
    fn bell_init(
        &self,
        m: &PosixMapping,
        region: &Region<'_>,
        bell: &Doorbell,
    ) -> SystemResult<()> {
        NativeSystem.bell_init(m, region, bell)
    }
    fn bell_ring(
        &self,
        m: &PosixMapping,
        region: &Region<'_>,
        bell: &Doorbell,
    ) -> SystemResult<()> {
        NativeSystem.bell_ring(m, region, bell)
    }
    fn bell_wait(
        &self,
        m: &PosixMapping,
        region: &Region<'_>,
        bell: &Doorbell,
        timeout: Option<Duration>,
    ) -> SystemResult<WaitOutcome> {
        NativeSystem.bell_wait(m, region, bell, timeout)
    }
    fn bell_destroy(&self, m: &PosixMapping, region: &Region<'_>, bell: &Doorbell) {
        NativeSystem.bell_destroy(m, region, bell)
    }
}

/// A segment found shorter than its mapping on a heartbeat is no longer used: receiving,
/// allocating and sending fail with `Truncated` (naming both sizes), and dropping the
/// server touches nothing in it but still removes its name.
#[test]
fn a_truncated_segment_stops_the_server_with_a_clear_error() {
    let n = name("trunc");
    let system = Shrinking::default();
    let server = Server::create_on(system.clone(), &n, small()).unwrap();
    let buf = server.alloc(16).unwrap();
    system.reported.store(8192, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        match server.recv_timeout(Duration::from_millis(10)) {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "truncation never noticed"),
        }
    };
    assert!(
        matches!(err, HostError::Truncated { now: 8192, mapped } if mapped == 1 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("truncated to 8192 bytes"));
    assert!(matches!(
        server.alloc(16).err(),
        Some(HostError::Truncated { .. })
    ));
    std::mem::forget(buf); // releasing it would touch the "lost" pages
    drop(server);
    assert!(matches!(
        NativeSystem.open(&SegmentName::new(&n).unwrap()),
        Err(SystemError::NotFound)
    ));
}
