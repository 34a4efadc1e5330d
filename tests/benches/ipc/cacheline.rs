//! The floor: two processes hand one cache line back and forth through a shared mapping
//! (a file in `/dev/shm` both map), each spinning on it until the other writes it. Any
//! handoff through shared memory between these two CPUs costs at least this.
//!
//! The line holds a counter: this process writes an odd value, the peer answers with the
//! next even one. A value with [`PAUSE`] set ends a measurement: the peer answers it
//! with [`ACK`] set too and blocks until the bench resumes it (`link::wait_resume`);
//! [`STOP`] ends the peer.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Release};

use shm_tests::Peer;

use crate::link::{self, PingPong, Res};

/// Set in a value that pauses the peer.
const PAUSE: u64 = 1 << 62;
/// Set, with [`PAUSE`], by the peer that has seen the pause.
const ACK: u64 = 1 << 61;
/// The value that stops the peer.
const STOP: u64 = 1 << 63;
/// Bytes mapped: one page.
const LEN: usize = 4096;

/// A shared mapping of a file's first page.
struct Mapping {
    ptr: *mut u8,
    _file: File,
}

impl Mapping {
    /// Maps `path`, creating it (one page of zeros) if `create`.
    fn open(path: &Path, create: bool) -> Res<Mapping> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        if create {
            file.set_len(LEN as u64)
                .map_err(|e| format!("sizing {}: {e}", path.display()))?;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: a new shared mapping of `LEN` bytes of an open file at least that long;
        // no existing memory is affected. The result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "mapping {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            _file: file,
        })
    }

    /// The counter at the start of the page.
    fn line(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, at least 8 bytes long and lives as long as
        // `self`; every process touches this word through atomics only.
        unsafe { AtomicU64::from_ptr(self.ptr.cast()) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, not used after this (references into it
        // borrow `self`).
        unsafe { libc::munmap(self.ptr.cast(), LEN) };
    }
}

/// This process's end of the cache-line ping-pong.
pub struct CacheLine {
    map: Mapping,
    path: PathBuf,
    peer: Peer,
    /// The last value written by the peer (even).
    last: u64,
}

impl CacheLine {
    /// Creates the mapping and starts the peer.
    pub fn start() -> Res<CacheLine> {
        let path = Path::new("/dev/shm").join(link::unique("line"));
        let map = Mapping::open(&path, true)?;
        let arg = path.to_str().ok_or("mapping path is not UTF-8")?.to_owned();
        let peer = link::spawn_peer("cacheline", &[&arg])?;
        Ok(CacheLine {
            map,
            path,
            peer,
            last: 0,
        })
    }
}

impl Drop for CacheLine {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl PingPong for CacheLine {
    fn round_trip(&mut self, _len: usize, _seq: u64) -> Res<()> {
        let line = self.map.line();
        let (ask, answer) = (self.last + 1, self.last + 2);
        line.store(ask, Release);
        link::spin_until(&mut self.peer, || {
            std::hint::spin_loop();
            Ok((line.load(Acquire) == answer).then_some(()))
        })?;
        self.last = answer;
        Ok(())
    }

    fn pause(&mut self) -> Res<()> {
        let line = self.map.line();
        let (pause, ack) = (self.last | PAUSE, self.last | PAUSE | ACK);
        line.store(pause, Release);
        // The line holds one value: the next question must not overwrite the pause
        // before the peer has seen it (it would then miss a wait, and spin through the
        // other rows' measurements).
        link::spin_until(&mut self.peer, || {
            std::hint::spin_loop();
            Ok((line.load(Acquire) == ack).then_some(()))
        })
    }

    fn stop(&mut self) -> Res<()> {
        self.map.line().store(STOP, Release);
        Ok(())
    }

    fn peer(&mut self) -> &mut Peer {
        &mut self.peer
    }

    fn batch(&self) -> u32 {
        100
    }
}

/// The peer: answers each odd value with the next one until stopped; prints
/// `done ANSWERS`. Fails on a value that is not the next one expected.
pub fn peer(path: &str) -> Res<()> {
    let map = Mapping::open(Path::new(path), false)?;
    let line = map.line();
    let (mut last, mut answered) = (0u64, 0u64);
    link::wait_resume()?;
    loop {
        let v = line.load(Acquire);
        if v == last + 1 {
            last = v + 1;
            line.store(last, Release);
            answered += 1;
        } else if v == last || v == (last | PAUSE | ACK) {
            // Waiting for the next value (after a pause: its ack, already resumed).
            std::hint::spin_loop();
        } else if v == (last | PAUSE) {
            line.store(last | PAUSE | ACK, Release);
            link::wait_resume()?;
        } else if v == STOP {
            break;
        } else {
            return Err(format!("read {v:#x} after {last:#x}"));
        }
    }
    println!("done {answered}");
    Ok(())
}
