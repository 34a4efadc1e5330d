//! Windows: page-file-backed named sections, named semaphores as doorbells, liveness from
//! `OpenProcess` and the process creation time.
//!
//! Where Windows differs from Linux (details in each file):
//! - [`segment`]: no unlink (a section vanishes with its last handle), so `unlink` does
//!   nothing and `list` is empty; the size of an opened segment comes from the region
//!   header, since Windows only knows a view's size in whole pages; access is limited to
//!   the creating user by a security descriptor, not by `CreateOptions::mode`.
//! - [`bell`]: doorbells are named semaphores, one per doorbell incarnation, found through
//!   a nonce stored in the doorbell.
//! - [`wait`]: there is no cross-process futex, so waiting for a word polls it with a
//!   backoff of at most 1 ms.
//! - [`process`]: the pid-reuse tag hashes the creation time.
//! - [`signal`]: Ctrl-C, Ctrl-Break and console close stand for SIGINT and SIGTERM.

mod bell;
#[cfg(feature = "cli")]
pub mod cli;
pub mod foreign;
mod process;
mod segment;
pub mod signal;
mod wait;

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use shm_core::Doorbell;
use shm_core::{Platform, ProcessId, Processes, Region, WaitNotify, WaitOutcome};

use shm_core::system::{CreateOptions, SegmentName, System, SystemResult as Result};
use shm_polling as polling;

pub use segment::WinMapping;

/// Runs `f` on the system of kind `b`: only the native one exists on Windows.
pub fn run_on_backend<F: crate::OnSystem>(b: &crate::Backend, f: F) -> Option<F::Output> {
    match b {
        crate::Backend::Native => Some(f.on(NativeSystem)),
        _ => None,
    }
}

/// The kinds `shmipc clean` scans (Windows sections vanish with their last handle, so
/// its listing is empty).
pub fn listed_backends() -> Vec<crate::Backend> {
    vec![crate::Backend::Native]
}

/// The Windows system.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeSystem;

impl Processes for NativeSystem {
    fn current_process(&self) -> ProcessId {
        process::current()
    }
    fn is_alive(&self, id: ProcessId) -> bool {
        process::is_alive(id)
    }
}

impl WaitNotify for NativeSystem {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
        wait::wait(word, expected, timeout)
    }
    fn notify_all(&self, word: &AtomicU32) {
        wait::notify_all(word)
    }
    fn relax(&self, round: u32) {
        polling::relax(round)
    }
    fn now(&self) -> Option<Duration> {
        Some(polling::now())
    }
}

impl Platform for NativeSystem {}

// SAFETY: a `WinMapping` is a view of a section mapped whole, unmapped only on drop;
// liveness is a process handle checked against the creation time, access denied
// counting as alive (process.rs).
unsafe impl System for NativeSystem {
    type Mapping = WinMapping;
    // Windows has no PID namespaces: a process handle checked against the creation time
    // (process.rs) is the evidence; access denied counts as alive.
    type Presence = NativeSystem;

    fn enter(&self, _m: &WinMapping) -> Result<NativeSystem> {
        Ok(*self)
    }

    fn create(&self, name: &SegmentName, size: usize, opts: CreateOptions) -> Result<WinMapping> {
        WinMapping::create(name, size, opts)
    }

    fn open(&self, name: &SegmentName) -> Result<WinMapping> {
        WinMapping::open(name)
    }

    /// Nothing to do: a page-file-backed section disappears with its last handle.
    fn unlink(&self, _name: &SegmentName) -> Result<()> {
        Ok(())
    }

    /// Lists none: segments cannot outlive their last user.
    fn list(&self, _each: &mut dyn FnMut(SegmentName)) -> Result<()> {
        Ok(())
    }

    fn bell_init(&self, m: &WinMapping, region: &Region<'_>, bell: &Doorbell) -> Result<()> {
        bell::init(m, region, bell)
    }

    fn bell_ring(&self, m: &WinMapping, region: &Region<'_>, bell: &Doorbell) -> Result<()> {
        bell::ring(m, region, bell)
    }

    fn bell_wait(
        &self,
        m: &WinMapping,
        region: &Region<'_>,
        bell: &Doorbell,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome> {
        bell::wait(m, region, bell, timeout)
    }

    fn bell_destroy(&self, m: &WinMapping, region: &Region<'_>, bell: &Doorbell) {
        bell::destroy(m, region, bell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Segment;
    use shm_core::HeapConfig;

    /// A heap formatted through `NativeSystem` can be opened by name, with the exact size,
    /// and the segment is gone once both are dropped.
    #[test]
    fn segment_round_trip() {
        let name = SegmentName::new(&format!("wintest-sys-{}", std::process::id())).unwrap();
        let sys = NativeSystem;
        let size = 256 * 1024 + 100;
        let a = Segment::create(
            sys,
            &name,
            size,
            CreateOptions::default(),
            HeapConfig::default(),
        )
        .unwrap();
        let b = Segment::open(sys, &name).unwrap();
        // SAFETY: only reads the region's bounds; no member, no payload.
        assert_eq!(unsafe { b.heap() }.region().end() as usize, size);
        assert!(crate::support::list_segments(&sys).unwrap().is_empty());
        sys.unlink(&name).unwrap();
        drop((a, b));
        assert!(matches!(
            Segment::open(sys, &name),
            Err(crate::HostError::NotFound { .. })
        ));
    }

    /// Environment variable naming the segment for `crash_child`.
    const CHILD_ENV: &str = "SHMIPC_WINTEST_SEGMENT";

    /// Not a test: the child process of `crashed_participant_is_reclaimed` (this test
    /// binary, started again to run only this function). Registers in the segment, takes
    /// memory, readies a doorbell, reports, and waits to be killed.
    #[test]
    #[ignore = "helper process for crashed_participant_is_reclaimed"]
    fn crash_child() {
        use std::io::Write;
        let Ok(name) = std::env::var(CHILD_ENV) else {
            return;
        };
        let seg = Segment::open(NativeSystem, &SegmentName::new(&name).unwrap()).unwrap();
        // SAFETY: acts only as the member it registers here and touches no payload.
        let heap = unsafe { seg.heap() };
        let me = heap.register().unwrap();
        for _ in 0..10 {
            heap.try_alloc(me, 1000).unwrap();
        }
        let p = heap
            .create_participant(me, shm_core::format::KIND_CLIENT, 16)
            .unwrap();
        seg.bell_init(p.bell).unwrap();
        println!("\nready {}", p.at.get());
        std::io::stdout().flush().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    /// Another process registers, allocates and readies a doorbell, then is killed
    /// (TerminateProcess): it counts as alive until then and dead after, its memory comes
    /// back, and its doorbell semaphore is gone with it.
    #[test]
    fn crashed_participant_is_reclaimed() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};

        let name = SegmentName::new(&format!("wintest-crash-{}", std::process::id())).unwrap();
        let sys = NativeSystem;
        let seg = Segment::create(
            sys,
            &name,
            1 << 20,
            CreateOptions::default(),
            HeapConfig::default(),
        )
        .unwrap();
        // SAFETY: acts only as the member it registers here and touches no payload.
        let heap = unsafe { seg.heap() };
        let me = heap.register().unwrap();
        let free0 = heap.stats().unwrap().free_bytes;

        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "sys::windows::tests::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, name.as_str())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let at = BufReader::new(out)
            .lines()
            .map_while(|l| l.ok())
            .find_map(|l| l.strip_prefix("ready ")?.trim().parse::<u32>().ok())
            .expect("child reports its participant");
        let bell = heap.participant(shm_core::Offset::new(at)).unwrap().bell;
        assert!(heap.stats().unwrap().free_bytes < free0);
        assert_eq!(
            heap.reclaim_dead().unwrap(),
            0,
            "a live child was reclaimed"
        );

        // Ring the child's doorbell from another mapping (as another process would).
        {
            let other = Segment::open(sys, &name).unwrap();
            // SAFETY: only reads the child's participant record; no member, no payload.
            let h = unsafe { other.heap() };
            let bell = h.participant(shm_core::Offset::new(at)).unwrap().bell;
            sys.bell_ring(other.mapping(), h.region(), bell).unwrap();
        } // `other` closes its semaphore handle

        child.kill().unwrap();
        child.wait().unwrap();
        // The semaphore died with its only handle: nothing is left to open by name, so
        // nothing a later owner of this doorbell could trip over.
        let t0 = Instant::now();
        let code = loop {
            match sys.bell_ring(seg.mapping(), heap.region(), bell) {
                Err(shm_core::SystemError::Os { call, code }) => {
                    assert_eq!(call, "OpenSemaphoreW");
                    break code;
                }
                // Handle closing may lag the process's end a little; forget the handle
                // that ring just opened, or it would keep the semaphore alive.
                Ok(()) if t0.elapsed() < Duration::from_secs(10) => {
                    seg.mapping().bells.lock().unwrap().clear();
                    std::thread::sleep(Duration::from_millis(5))
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(code, 2, "ERROR_FILE_NOT_FOUND");
        let t0 = Instant::now();
        let mut reclaimed = 0;
        while reclaimed == 0 && t0.elapsed() < Duration::from_secs(10) {
            reclaimed = heap.reclaim_dead().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(reclaimed, 1);
        assert_eq!(heap.stats().unwrap().free_bytes, free0);
        heap.check().unwrap();
        heap.unregister(me).unwrap();
    }
}
