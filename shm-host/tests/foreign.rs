//! Servers and clients over memory the library did not map (`shm_host::foreign`), in one
//! process: over plain heap memory with the portable providers, and on Linux over a memfd
//! with `SemDoorbells` and `FdLiveness`. The multi-process memfd tests (a descriptor passed
//! over a Unix socket, a client SIGKILLed mid-stream) are in `tests/tests/foreign_memfd.rs`.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::time::Duration;

use shm_host::foreign::{AssumeAlive, Doorbells, ForeignMapping, ForeignSystem, PolledDoorbells};
use shm_host::{
    Client, ClientOptions, HostError, Mapping, RecvMode, Refusal, Server, ServerOptions, System,
    SystemError,
};

/// 16-aligned, zeroed memory owned by the test (kept alive by the mapping's keeper).
fn heap_memory(len: usize) -> ForeignMapping {
    let words = vec![0u128; len.div_ceil(16)].into_boxed_slice();
    let words = Box::leak(words);
    let ptr = words.as_mut_ptr().cast::<u8>();
    // The keeper frees the memory once the last clone of the mapping is gone.
    struct Keeper(*mut [u128]);
    // SAFETY: the pointer is only freed, once, by whichever thread drops the keeper.
    unsafe impl Send for Keeper {}
    // SAFETY: `&Keeper` gives no access to the memory.
    unsafe impl Sync for Keeper {}
    impl Drop for Keeper {
        fn drop(&mut self) {
            // SAFETY: made by `Box::leak` above and freed only here.
            drop(unsafe { Box::from_raw(self.0) });
        }
    }
    let keeper = Keeper(words as *mut [u128]);
    // SAFETY: `len` bytes at `ptr` are ours, valid until the keeper drops them, used by
    // this process only (one process sees the same bytes), and formatted by the first
    // server before any client attaches.
    unsafe { ForeignMapping::new(ptr, len, keeper) }.unwrap()
}

fn options() -> ServerOptions {
    ServerOptions {
        heartbeat: Duration::from_millis(20),
        ..ServerOptions::default()
    }
}

fn exchange<S: System>(server: &Server<S>, client: &Client<S>, tag: u32) {
    let mut buf = client.alloc(64).unwrap();
    buf.extend_from_slice(b"over foreign memory").unwrap();
    client.send(buf, tag).unwrap();
    let msg = server
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(
        (&msg.buffer[..], msg.tag),
        (&b"over foreign memory"[..], tag)
    );
    server.send(msg.from, msg.buffer, tag + 1).unwrap();
    let reply = client
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(reply.tag, tag + 1);
}

/// Over memory with no OS object behind it, with the portable providers: a server
/// formats it, a client (blocking receives: the polled doorbells wake it) talks to it,
/// a second server is refused while the first lives, and after a clean stop a new server
/// takes the memory over and the memory's heap is intact.
#[test]
fn portable_providers_over_plain_memory() {
    let memory = heap_memory(1 << 20);
    let system = ForeignSystem::new(memory.clone(), PolledDoorbells, AssumeAlive);
    assert!(!memory.holds_heap());
    let server = Server::create_on(system.clone(), "plain", options()).unwrap();
    assert!(memory.holds_heap());
    assert_eq!(
        server.segment().mapping().len(),
        1 << 20,
        "the size is the memory's"
    );
    let client = Client::connect_on(
        system.clone(),
        "plain",
        ClientOptions {
            recv_mode: RecvMode::Blocking,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    for tag in 0..20 {
        exchange(&server, &client, tag * 2);
    }
    match Server::create_on(system.clone(), "plain", options()) {
        Err(HostError::TakeoverRefused {
            why: Refusal::ServerAlive,
            ..
        }) => {}
        other => panic!("expected ServerAlive, got {:?}", other.err()),
    }
    drop(client);
    let before = server.segment().stats().unwrap();
    drop(server);
    let again = Server::create_on(system, "plain", options()).unwrap();
    assert_eq!(again.generation(), 2);
    again.segment().check().unwrap();
    assert_eq!(
        again.segment().stats().unwrap().heap_bytes,
        before.heap_bytes
    );
}

/// Polled doorbells: a waiter that prepared to sleep is woken by a ring, and one that
/// nobody rings times out.
#[test]
fn polled_doorbells_wake_and_time_out() {
    use shm_core::{Doorbell, Region, WaitOutcome};
    #[repr(C, align(64))]
    struct Memory([u8; 4096]);
    let mut m = Memory([0; 4096]);
    let region = Region::from_slice(&mut m.0).unwrap();
    let bell: &Doorbell = region.get(1024).unwrap();
    let bells = PolledDoorbells;
    bells.bell_init(&region, bell).unwrap();
    bell.prepare_wait();
    assert_eq!(
        bells
            .bell_wait(&region, bell, Some(Duration::from_millis(5)))
            .unwrap(),
        WaitOutcome::TimedOut
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            assert!(bell.should_ring());
            bells.bell_ring(&region, bell).unwrap();
        });
        assert_eq!(
            bells.bell_wait(&region, bell, None).unwrap(),
            WaitOutcome::Woken
        );
    });
    bell.cancel_wait();
    bells.bell_destroy(&region, bell);
}

/// Memory the core cannot use is refused when the mapping is made.
#[test]
fn unusable_memory_is_refused() {
    #[repr(C, align(16))]
    struct Memory([u8; 64]);
    let mut m = Memory([0; 64]);
    let p = m.0.as_mut_ptr();
    // SAFETY: every call below is refused before the memory is used.
    unsafe {
        assert!(matches!(
            ForeignMapping::new(p, 0, ()),
            Err(SystemError::BadSize { size: 0 })
        ));
        assert!(matches!(
            ForeignMapping::new(p.add(1), 32, ()),
            Err(SystemError::Core(_))
        ));
        assert!(matches!(
            ForeignMapping::new(std::ptr::null_mut(), 32, ()),
            Err(SystemError::Core(_))
        ));
    }
    // Too small for a heap: mapped, but a server refuses it.
    // SAFETY: 64 bytes of `m`, used by this thread only, outliving the server attempt.
    let small = unsafe { ForeignMapping::new(p, 64, ()) }.unwrap();
    let system = ForeignSystem::new(small, PolledDoorbells, AssumeAlive);
    assert!(matches!(
        Server::create_on(system, "small", options()),
        Err(HostError::TooSmall { .. })
    ));
}

#[cfg(target_os = "linux")]
mod memfd {
    use super::*;
    use shm_host::foreign::{FdLiveness, SemDoorbells};
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

    /// A memfd of `len` bytes, mapped shared by this test (not by the library).
    fn memfd(len: usize) -> (OwnedFd, ForeignMapping) {
        let name = std::ffi::CString::new("shm-foreign-test").unwrap();
        // SAFETY: `name` is a valid C string; flags are plain integers.
        let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(
            raw >= 0,
            "memfd_create: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a descriptor we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the descriptor is open.
        let sized = unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) };
        assert_eq!(sized, 0);
        (
            // Tests map it a second time through `map`, as another process would.
            fd.try_clone().unwrap(),
            map(fd.as_fd(), len),
        )
    }

    struct Unmap(*mut libc::c_void, usize);
    // SAFETY: only unmapped, once, by whichever thread drops it.
    unsafe impl Send for Unmap {}
    // SAFETY: `&Unmap` gives no access to the memory.
    unsafe impl Sync for Unmap {}
    impl Drop for Unmap {
        fn drop(&mut self) {
            // SAFETY: exactly the range mmap returned, unmapped only here.
            unsafe { libc::munmap(self.0, self.1) };
        }
    }

    pub(super) fn map(fd: std::os::fd::BorrowedFd<'_>, len: usize) -> ForeignMapping {
        // SAFETY: a fresh shared mapping of an open descriptor; the kernel picks the place.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: the mapping is ours until `Unmap` drops it, shared (every mapping of
        // the memfd sees the same bytes), touched only through the library, and the memfd
        // is `len` bytes long and never truncated by these tests.
        unsafe { ForeignMapping::new(p.cast(), len, Unmap(p, len)) }.unwrap()
    }

    /// A memfd mapped twice in this process, with `FdLiveness` on its descriptor and
    /// `SemDoorbells`: a server over one mapping and a client over the other talk; the
    /// server reads the object's size through the descriptor.
    #[test]
    fn memfd_with_kernel_liveness() {
        let (fd, memory) = memfd(1 << 20);
        // SAFETY: every participant (this test's) uses FdLiveness on this memfd.
        let live = unsafe { FdLiveness::new(&fd) }.unwrap();
        let system = ForeignSystem::new(memory, SemDoorbells, live.clone());
        let server = Server::create_on(system.clone(), "memfd", options()).unwrap();
        assert_eq!(
            System::object_size(&system, server.segment().mapping()).unwrap(),
            1 << 20
        );
        let other = ForeignSystem::new(map(fd.as_fd(), 1 << 20), SemDoorbells, live);
        let client = Client::connect_on(other, "memfd", ClientOptions::default()).unwrap();
        exchange(&server, &client, 7);
        assert!(server.segment().is_alive(client.segment().me()));
        drop(client);
        server.segment().check().unwrap();
    }

    /// `FdLiveness` refuses memory that is not a mapping of its descriptor's object: its
    /// locks would say nothing about the memory's participants.
    #[test]
    fn fd_liveness_refuses_memory_of_another_object() {
        let (fd, _memory) = memfd(1 << 16);
        let (_other_fd, other_memory) = memfd(1 << 16);
        // SAFETY: the system is refused before anyone could rely on it.
        let live = unsafe { FdLiveness::new(&fd) }.unwrap();
        let system = ForeignSystem::new(other_memory, SemDoorbells, live.clone());
        match Server::create_on(system, "mismatch", options()) {
            Err(HostError::Os { code, .. }) => assert_eq!(code, libc::EINVAL),
            other => panic!("expected a refusal, got {:?}", other.err()),
        }
        let plain = ForeignSystem::new(super::heap_memory(1 << 16), SemDoorbells, live);
        assert!(Server::create_on(plain, "mismatch", options()).is_err());
    }
}

/// On Windows, `ProcessLiveness` over plain memory: the server and the client see each
/// other alive (their pid and creation time), a tag that is no creation time is dead, and
/// the two talk over polled doorbells.
#[cfg(windows)]
#[test]
fn process_liveness_over_plain_memory() {
    use shm_core::ProcessId;
    use shm_host::foreign::ProcessLiveness;
    // SAFETY: every participant (this test's) uses ProcessLiveness.
    let live = unsafe { ProcessLiveness::new() };
    let system = ForeignSystem::new(heap_memory(1 << 20), PolledDoorbells, live);
    let server = Server::create_on(system.clone(), "process", options()).unwrap();
    let client = Client::connect_on(system, "process", ClientOptions::default()).unwrap();
    exchange(&server, &client, 3);
    let me = client.segment().me();
    assert_eq!(me.pid, std::process::id());
    assert!(server.segment().is_alive(me));
    let forged = ProcessId {
        pid: me.pid,
        tag: me.tag.wrapping_add(1).max(1),
    };
    assert!(
        !server.segment().is_alive(forged),
        "not this process's creation time"
    );
    drop(client);
    server.segment().check().unwrap();
}
