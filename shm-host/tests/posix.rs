//! The plain POSIX pieces shared by Linux and QNX (crate `shm-posix`, re-exported as
//! `shm_host::posix`), exercised on the
//! system the tests run on: shared-memory objects (create, open, unlink, errors, mapping a
//! descriptor) and `sem_t` doorbells placed inside a region. Each test states the
//! invariant it checks; each named object carries the process id and is removed even if
//! the test fails.
#![cfg(unix)]
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::mem::align_of;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shm_core::format::KIND_CLIENT;
use shm_core::format::{Doorbell, OS_AREA_ALIGN};
use shm_core::testkit::{AlignedBuf, TestPlatform};
use shm_core::{Heap, HeapConfig, Offset, ProcessId, Region, WaitOutcome};
use shm_host::name::NameError;
use shm_host::posix::{sem, PosixMapping};
use shm_host::{
    CreateOptions, HostError, Mapping, NativeSystem, Segment, SegmentName, SystemError,
};

/// A shared-memory object name for one test, unlinked on drop.
struct Name(String);

impl Name {
    fn new(case: &str) -> Self {
        let name = format!("shmipc.posix-test-{}-{case}", std::process::id());
        let _ = PosixMapping::unlink(&name); // a leftover from a crashed run
        Name(name)
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = PosixMapping::unlink(&self.0);
    }
}

/// The bytes of a mapping.
fn bytes(m: &PosixMapping) -> &[u8] {
    // SAFETY: the mapping is `len` readable bytes and outlives the slice; the tests do not
    // write through another mapping while the slice is in use.
    unsafe { std::slice::from_raw_parts(m.as_ptr(), m.len()) }
}

/// Writes `data` at `at` in a mapping.
fn write(m: &PosixMapping, at: usize, data: &[u8]) {
    assert!(at + data.len() <= m.len());
    // SAFETY: in bounds (checked); no slice of this memory is alive during the copy.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), m.as_ptr().add(at), data.len()) };
}

/// A new object is zeroed, has the size asked for, and is the same memory when opened
/// again (writes through either mapping show in the other); unlinking removes the name
/// but not the memory of mappings that exist.
#[test]
fn create_open_unlink_share_the_same_memory() {
    let name = Name::new("share");
    let a = PosixMapping::create(&name.0, 8192, CreateOptions::default()).unwrap();
    assert_eq!(a.len(), 8192);
    assert!(bytes(&a).iter().all(|&b| b == 0));
    write(&a, 100, b"hello");

    let b = PosixMapping::open(&name.0).unwrap();
    assert_eq!(b.len(), 8192, "open maps the object's whole size");
    assert_ne!(a.as_ptr(), b.as_ptr());
    assert_eq!(&bytes(&b)[100..105], b"hello");
    write(&b, 8000, b"back");
    assert_eq!(&bytes(&a)[8000..8004], b"back");

    PosixMapping::unlink(&name.0).unwrap();
    assert!(matches!(
        PosixMapping::open(&name.0),
        Err(SystemError::NotFound)
    ));
    write(&a, 0, b"still mapped");
    assert_eq!(&bytes(&b)[..12], b"still mapped");
}

/// A new object gets exactly the permission bits asked for (0600 by default: only the
/// creating user), and pre-faulting creates the same zeroed memory.
#[cfg(target_os = "linux")]
#[test]
fn create_honours_mode_and_prefault() {
    use std::os::unix::fs::PermissionsExt;
    let name = Name::new("mode");
    let opts = CreateOptions {
        prefault: true,
        ..CreateOptions::default()
    };
    let m = PosixMapping::create(&name.0, 1 << 16, opts).unwrap();
    let meta = std::fs::metadata(format!("/dev/shm/{}", name.0)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 1 << 16);
    assert!(bytes(&m).iter().all(|&b| b == 0));
}

/// Creating a name that exists fails with `Exists` (O_EXCL: never two owners) and leaves
/// the existing object intact; opening or unlinking a missing name fails with `NotFound`;
/// any other failure keeps the call and its errno. (The host's error adds the segment's
/// name: `segment_errors_name_the_segment`.)
#[test]
fn errors_are_exists_not_found_or_keep_the_errno() {
    let name = Name::new("errors");
    let a = PosixMapping::create(&name.0, 4096, CreateOptions::default()).unwrap();
    write(&a, 0, b"mine");
    match PosixMapping::create(&name.0, 4096, CreateOptions::default()) {
        Err(SystemError::Exists) => {}
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(&bytes(&PosixMapping::open(&name.0).unwrap())[..4], b"mine");

    let missing = Name::new("missing");
    match PosixMapping::open(&missing.0) {
        Err(SystemError::NotFound) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        PosixMapping::unlink(&missing.0),
        Err(SystemError::NotFound)
    ));

    // A slash inside the name is not a valid POSIX shared-memory name.
    match PosixMapping::open(&format!("{}/x", name.0)) {
        Err(
            e @ SystemError::Os {
                call: "shm_open", ..
            },
        ) => {
            assert_eq!(e.os_code(), Some(libc::EINVAL), "{e}")
        }
        other => panic!("expected an Os error, got {other:?}"),
    }
    assert!(matches!(
        PosixMapping::create("nul\0byte", 4096, CreateOptions::default()),
        Err(SystemError::InvalidName(NameError::BadCharacter))
    ));
}

/// The host's errors for a segment name it: creating a taken name is `Exists` and opening
/// a missing one `NotFound`, each naming the segment as the caller gave it.
#[test]
fn segment_errors_name_the_segment() {
    let given = format!("posix-test-{}-named", std::process::id());
    let seg_name = SegmentName::new(&given).unwrap();
    let _cleanup = Name(seg_name.prefixed().to_string());
    let small = 64 * 1024;
    let config = HeapConfig::default();
    let _a = Segment::create(
        NativeSystem,
        &seg_name,
        small,
        CreateOptions::default(),
        config,
    )
    .unwrap();
    match Segment::create(
        NativeSystem,
        &seg_name,
        small,
        CreateOptions::default(),
        config,
    ) {
        Err(HostError::Exists { name }) => assert_eq!(name, given),
        other => panic!("expected Exists, got {other:?}"),
    }
    let missing = SegmentName::new(&format!("{given}-missing")).unwrap();
    match Segment::open(NativeSystem, &missing) {
        Err(e @ HostError::NotFound { .. }) => {
            assert!(e.to_string().contains(missing.as_str()), "{e}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// Sizes of 0 and above 4 GiB (offsets are 32-bit) are refused with `BadSize` before any
/// object is created, and an empty descriptor cannot be mapped.
#[test]
fn bad_sizes_are_refused_without_creating_anything() {
    let name = Name::new("badsize");
    let mut sizes = vec![0usize];
    if let Some(over_4g) = (u32::MAX as usize).checked_add(1) {
        sizes.push(over_4g); // only where usize can say it
    }
    for size in sizes {
        match PosixMapping::create(&name.0, size, CreateOptions::default()) {
            Err(SystemError::BadSize { size: s }) => assert_eq!(s, size as u64),
            other => panic!("size {size}: expected BadSize, got {other:?}"),
        }
        assert!(matches!(
            PosixMapping::open(&name.0),
            Err(SystemError::NotFound)
        ));
    }
    let empty = tempfile("empty");
    assert!(matches!(
        PosixMapping::open_fd(empty.as_fd()),
        Err(SystemError::BadSize { size: 0 })
    ));
    assert!(matches!(
        PosixMapping::map_fd(empty.as_fd(), 0, false),
        Err(SystemError::BadSize { size: 0 })
    ));
}

/// A new, empty, already-unlinked file in the temporary directory.
fn tempfile(case: &str) -> std::fs::File {
    let path =
        std::env::temp_dir().join(format!("shmipc-posix-test-{}-{case}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

/// `open_fd` maps a file with its current size, shared: bytes written to the file show in
/// the mapping and bytes written to the mapping reach the file.
#[test]
fn open_fd_maps_a_file_shared() {
    use std::os::unix::fs::FileExt;
    let f = tempfile("file");
    f.set_len(3 * 4096).unwrap();
    f.write_all_at(b"from the file", 4096).unwrap();
    let m = PosixMapping::open_fd(f.as_fd()).unwrap();
    assert_eq!(m.len(), 3 * 4096);
    assert_eq!(&bytes(&m)[4096..4096 + 13], b"from the file");
    write(&m, 10, b"from the map");
    let mut back = [0u8; 12];
    f.read_exact_at(&mut back, 10).unwrap();
    assert_eq!(&back, b"from the map");
}

/// `open_fd` maps a memfd (an anonymous shared-memory descriptor, the way to share a
/// segment without a name) with its size.
#[cfg(target_os = "linux")]
#[test]
fn open_fd_maps_a_memfd() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let name = std::ffi::CString::new(format!("shmipc-posix-test-{}", std::process::id())).unwrap();
    // SAFETY: `name` is a valid C string; flags are plain integers.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(
        raw >= 0,
        "memfd_create: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `raw` is a descriptor we just opened and own alone.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let file = std::fs::File::from(fd);
    file.set_len(64 * 1024).unwrap();
    let a = PosixMapping::open_fd(file.as_fd()).unwrap();
    let b = PosixMapping::open_fd(file.as_fd()).unwrap();
    assert_eq!((a.len(), b.len()), (64 * 1024, 64 * 1024));
    write(&a, 60_000, b"memfd");
    assert_eq!(&bytes(&b)[60_000..60_005], b"memfd");
}

/// `map_fd` refuses a length the file does not have: touching the pages past its end
/// would raise SIGBUS, so a segment attached over such a mapping (safe code) would crash.
#[cfg(target_os = "linux")]
#[test]
fn map_fd_refuses_more_than_the_file_holds() {
    use shm_host::{NativeSystem, Segment, SegmentName};
    use std::os::fd::{FromRawFd, OwnedFd};
    let cname = std::ffi::CString::new("shmipc-memfd-short").unwrap();
    // SAFETY: `cname` is a valid C string; flags are plain integers.
    let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: `raw` is a descriptor we just opened and own alone.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    file.set_len(4096).unwrap();
    let long = PosixMapping::map_fd(file.as_fd(), 1 << 20, false);
    assert!(matches!(long, Err(SystemError::BadSize { .. })), "{long:?}");
    // What a long mapping would have let safe code do: attach, and fault past the end.
    if let Ok(m) = long {
        let _ = Segment::attach(NativeSystem, &SegmentName::new("short").unwrap(), m);
    }
    assert!(PosixMapping::map_fd(file.as_fd(), 4096, false).is_ok());
}

/// A heap formatted in a memfd mapping is seen, block for block, through a second mapping
/// of the same descriptor (as another process would map it after receiving the fd).
#[cfg(target_os = "linux")]
#[test]
fn a_segment_can_live_in_a_memfd() {
    use shm_host::{NativeSystem, Segment, SegmentName};
    use std::os::fd::{FromRawFd, OwnedFd};
    let cname = std::ffi::CString::new("shmipc-memfd-segment").unwrap();
    // SAFETY: `cname` is a valid C string; flags are plain integers.
    let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(
        raw >= 0,
        "memfd_create: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `raw` is a descriptor we just opened and own alone.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    file.set_len(256 * 1024).unwrap();
    let name = SegmentName::new("memfd").unwrap();
    // SAFETY: the memfd was made just now; nothing else uses its memory.
    let first = unsafe {
        Segment::format(
            NativeSystem,
            &name,
            PosixMapping::open_fd(file.as_fd()).unwrap(),
            HeapConfig::default(),
        )
    }
    .unwrap();
    // SAFETY: this test acts only as the member it registers, and touches no payload.
    let h1 = unsafe { first.heap() };
    let me = h1.register().unwrap();
    let block = h1.try_alloc(me, 1000).unwrap();
    let second = Segment::attach(
        NativeSystem,
        &name,
        PosixMapping::open_fd(file.as_fd()).unwrap(),
    )
    .unwrap();
    // SAFETY: as above.
    let h2 = unsafe { second.heap() };
    assert_eq!(h2.owner_of(block).unwrap(), Some(me.slot()));
    h2.free(me, block).unwrap();
    first.check().unwrap();
}

// ---- doorbells ------------------------------------------------------------------------

/// A heap over `len` bytes at `ptr` with `n` client participants; returns the heap and
/// the participants' offsets.
///
/// # Safety
/// `ptr..ptr+len` must be zeroed (or a heap), readable and writable, and outlive the heap.
unsafe fn heap_with_bells(
    ptr: *mut u8,
    len: usize,
    n: usize,
) -> (Heap<'static, TestPlatform>, Vec<Offset>) {
    // SAFETY: forwarded from the caller.
    let region = unsafe { Region::from_raw(ptr, len) }.unwrap();
    let heap = Heap::init(region, HeapConfig::default(), TestPlatform::new(1)).unwrap();
    let slot = heap.register_as(ProcessId::from_pid(100)).unwrap();
    let ats = (0..n)
        .map(|_| heap.create_participant(slot, KIND_CLIENT, 8).unwrap().at)
        .collect();
    (heap, ats)
}

/// The doorbell of the participant at `at`.
fn bell<'h>(heap: &'h Heap<'static, TestPlatform>, at: Offset) -> &'h Doorbell {
    heap.participant(at).unwrap().bell
}

/// The `sem_t` sits in the doorbell's platform area, at an address aligned for `sem_t`
/// (the alignment taken from the type, not assumed), for every participant.
#[test]
fn sem_ptr_is_aligned_for_sem_t_inside_the_bell() {
    let buf = AlignedBuf::new(256 * 1024);
    // SAFETY: `buf` is zeroed and outlives `heap`.
    let (heap, ats) = unsafe { heap_with_bells(buf.as_ptr(), buf.len(), 4) };
    for at in ats {
        let b = bell(&heap, at);
        let p = sem::sem_ptr(heap.region(), b).unwrap();
        assert_eq!(p as usize % align_of::<libc::sem_t>(), 0);
        assert_eq!(p as usize % OS_AREA_ALIGN, 0);
        assert_eq!(p.cast::<u8>(), b.os.as_ptr().cast::<u8>().cast_mut());
    }
}

/// An initialised bell: a post before the wait is not lost (the wait returns at once),
/// and a post from another thread wakes a waiter that is blocked.
#[test]
fn a_post_wakes_a_blocked_waiter() {
    let buf = AlignedBuf::new(256 * 1024);
    // SAFETY: `buf` is zeroed and outlives `heap`.
    let (heap, ats) = unsafe { heap_with_bells(buf.as_ptr(), buf.len(), 1) };
    let (region, b) = (heap.region(), bell(&heap, ats[0]));
    sem::init(region, b).unwrap();

    sem::post(region, b).unwrap();
    assert_eq!(
        sem::wait(region, b, Some(Duration::ZERO)).unwrap(),
        WaitOutcome::Woken
    );

    let returned = AtomicBool::new(false);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let r = sem::wait(region, b, Some(Duration::from_secs(10)));
            returned.store(true, Ordering::SeqCst);
            r
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !returned.load(Ordering::SeqCst),
            "wait returned without a post"
        );
        sem::post(region, b).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), WaitOutcome::Woken);
    });
    sem::destroy(region, b);
}

/// With the heap in a named shared-memory object mapped twice (as two processes would),
/// a post through one mapping wakes a waiter on the other: `sem_init(pshared = 1)` makes
/// the semaphore work at different addresses of the same memory.
#[test]
fn a_post_through_another_mapping_wakes_the_waiter() {
    let name = Name::new("bell");
    let a = PosixMapping::create(&name.0, 256 * 1024, CreateOptions::default()).unwrap();
    let b = PosixMapping::open(&name.0).unwrap();
    // SAFETY: `a` is a fresh (zeroed) mapping that outlives `heap_a`.
    let (heap_a, ats) = unsafe { heap_with_bells(a.as_ptr(), a.len(), 1) };
    // SAFETY: `b` maps the same memory and outlives `heap_b`.
    let region_b = unsafe { Region::from_raw(b.as_ptr(), b.len()) }.unwrap();
    let heap_b = Heap::attach(region_b, TestPlatform::new(2)).unwrap();
    let (bell_a, bell_b) = (bell(&heap_a, ats[0]), bell(&heap_b, ats[0]));
    assert_ne!(bell_a.os.as_ptr(), bell_b.os.as_ptr());
    sem::init(heap_a.region(), bell_a).unwrap();

    std::thread::scope(|s| {
        let waiter = s.spawn(|| sem::wait(heap_a.region(), bell_a, Some(Duration::from_secs(10))));
        std::thread::sleep(Duration::from_millis(20));
        sem::post(heap_b.region(), bell_b).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), WaitOutcome::Woken);
    });
    sem::destroy(heap_a.region(), bell_a);
}

/// A wait with a timeout and no post returns `TimedOut`, not an error, and not early.
#[test]
fn a_wait_without_post_times_out() {
    let buf = AlignedBuf::new(256 * 1024);
    // SAFETY: `buf` is zeroed and outlives `heap`.
    let (heap, ats) = unsafe { heap_with_bells(buf.as_ptr(), buf.len(), 1) };
    let (region, b) = (heap.region(), bell(&heap, ats[0]));
    sem::init(region, b).unwrap();
    let t = Duration::from_millis(100);
    let start = Instant::now();
    assert_eq!(
        sem::wait(region, b, Some(t)).unwrap(),
        WaitOutcome::TimedOut
    );
    // sem_timedwait measures on CLOCK_REALTIME; allow a little for the clocks' difference.
    assert!(
        start.elapsed() >= t - Duration::from_millis(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        sem::wait(region, b, Some(Duration::ZERO)).unwrap(),
        WaitOutcome::TimedOut
    );
    sem::destroy(region, b);
}

/// A bell that was never initialised (or was destroyed) is refused with `EINVAL` instead
/// of handing an uninitialised `sem_t` to the C library (undefined behaviour); destroying
/// it is a no-op.
#[test]
fn an_uninitialised_bell_is_refused() {
    let buf = AlignedBuf::new(256 * 1024);
    // SAFETY: `buf` is zeroed and outlives `heap`.
    let (heap, ats) = unsafe { heap_with_bells(buf.as_ptr(), buf.len(), 1) };
    let (region, b) = (heap.region(), bell(&heap, ats[0]));
    let einval = |r: Result<_, SystemError>| matches!(r, Err(SystemError::Os { code, .. }) if code == libc::EINVAL);

    assert!(einval(sem::post(region, b).map(|_| ())));
    assert!(einval(
        sem::wait(region, b, Some(Duration::ZERO)).map(|_| ())
    ));
    sem::destroy(region, b); // nothing to destroy

    sem::init(region, b).unwrap();
    sem::post(region, b).unwrap();
    sem::destroy(region, b);
    assert!(
        einval(sem::post(region, b).map(|_| ())),
        "a destroyed bell is refused too"
    );
    sem::destroy(region, b); // twice is harmless
}
