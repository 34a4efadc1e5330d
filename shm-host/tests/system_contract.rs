//! The contract of shm-core's `System` trait, written once as generic functions (module
//! [`contract`]) and instantiated for every implementation by [`system_contract!`]: here
//! for the native system of the target (and on Linux for `SysvSystem` and `FileSystem`
//! too), so Linux runs it with `cargo test`, Windows under
//! Wine (`cargo test --target x86_64-pc-windows-gnu -p shm-host --test system_contract`),
//! and QNX's `QnxSystem` is type-checked by `cargo check --tests` for the QNX targets (see
//! `.ci/run`). A new implementation adds one `system_contract!` line.
//!
//! Each function states the property it checks. Every test uses its own segment name (the
//! test, the process id and a counter) and removes it, even when it fails. Time only
//! bounds waits; no test asserts how long something took.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

/// The properties, generic over the system. Each takes the system under test (and, for
/// the process tests, the module path of the instantiation, to start its helper process).
mod contract {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use shm_core::Doorbell;
    use shm_core::{ProcessId, Processes, Region, WaitOutcome};
    use shm_host::{CreateOptions, Mapping, Refusal, SegmentName, System, SystemError};

    /// Size of the segments the tests create: not a multiple of the page size, so a
    /// system that rounds shows it.
    const SIZE: usize = 64 * 1024 + 100;
    /// Where the tests put their doorbell: 64-aligned, inside the first page.
    const BELL_AT: u32 = 1024;
    /// Offsets the byte tests write at (clear of the first 64 bytes, which a system may
    /// use for itself, e.g. Windows reads a size recorded at 16 when opening).
    const BYTES_AT: [usize; 2] = [256, SIZE - 8];
    /// Longest wait for something that must happen (a wake-up, a death to be seen).
    const PATIENCE: Duration = Duration::from_secs(30);

    /// Environment variables of the helper process.
    const CHILD_SEGMENT: &str = "SHM_CONTRACT_SEGMENT";
    const CHILD_MODE: &str = "SHM_CONTRACT_MODE";

    /// A unique segment name for `test`, removed (on systems that remove names) on drop.
    pub struct Name<S: System> {
        pub name: SegmentName,
        system: S,
    }

    impl<S: System> Name<S> {
        pub fn new(system: &S, test: &str) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name =
                SegmentName::new(&format!("contract-{test}-{}-{n}", std::process::id())).unwrap();
            let _ = system.unlink(&name); // a leftover from a crashed run
            Name {
                name,
                system: system.clone(),
            }
        }
    }

    impl<S: System> Drop for Name<S> {
        fn drop(&mut self) {
            let _ = self.system.unlink(&self.name);
        }
    }

    /// The region over a mapping.
    fn region<M: Mapping>(m: &M) -> Region<'_> {
        // SAFETY: the mapping is readable and writable for its whole length while it is
        // borrowed, and the region does not outlive the borrow.
        unsafe { Region::from_raw(m.as_ptr(), m.len()) }.unwrap()
    }

    fn write<M: Mapping>(m: &M, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= m.len());
        // SAFETY: in bounds (checked above); no other thread touches these bytes now.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), m.as_ptr().add(at), bytes.len()) };
    }

    fn read<M: Mapping>(m: &M, at: usize, len: usize) -> Vec<u8> {
        assert!(at + len <= m.len());
        // SAFETY: in bounds (checked above); no other thread writes these bytes now.
        unsafe { std::slice::from_raw_parts(m.as_ptr().add(at), len) }.to_vec()
    }

    /// Create, open, remove: a new segment has exactly the size asked for and is zeroed;
    /// opening it maps at least that much; bytes written through one mapping are seen
    /// through the other, both ways; a taken name is `Exists` and leaves the segment
    /// intact; a missing name is `NotFound` for open; mappings stay usable after the name
    /// is removed, and once they are gone the name opens as `NotFound`.
    pub fn create_open_remove<S: System>(system: S) {
        let n = Name::new(&system, "cor");
        assert_eq!(system.open(&n.name).err(), Some(SystemError::NotFound));
        let a = system
            .create(&n.name, SIZE, CreateOptions::default())
            .unwrap();
        assert_eq!(a.len(), SIZE);
        assert!(read(&a, 0, SIZE).iter().all(|&b| b == 0), "not zeroed");
        assert_eq!(
            system.create(&n.name, SIZE, CreateOptions::default()).err(),
            Some(SystemError::Exists)
        );
        let b = system.open(&n.name).unwrap();
        assert!(b.len() >= SIZE, "open mapped {} of {SIZE} bytes", b.len());
        for (i, at) in BYTES_AT.into_iter().enumerate() {
            write(&a, at, &[0xa0 + i as u8; 8]);
            assert_eq!(read(&b, at, 8), [0xa0 + i as u8; 8]);
            write(&b, at, &[0xb0 + i as u8; 8]);
            assert_eq!(read(&a, at, 8), [0xb0 + i as u8; 8]);
        }
        system.unlink(&n.name).unwrap();
        write(&a, BYTES_AT[0], b"after-ul");
        assert_eq!(read(&b, BYTES_AT[0], 8), b"after-ul");
        drop((a, b));
        assert_eq!(system.open(&n.name).err(), Some(SystemError::NotFound));
    }

    /// Sizes that cannot hold a region (0, or beyond 32-bit offsets) are `BadSize`.
    pub fn bad_sizes_are_refused<S: System>(system: S) {
        let n = Name::new(&system, "size");
        for size in [0, 1usize << 33] {
            if size > isize::MAX as usize {
                continue; // not even representable on a 32-bit target
            }
            assert_eq!(
                system.create(&n.name, size, CreateOptions::default()).err(),
                Some(SystemError::BadSize { size: size as u64 })
            );
        }
        assert_eq!(system.open(&n.name).err(), Some(SystemError::NotFound));
    }

    /// Listing reports a segment this library created while its name exists (on systems
    /// whose segments outlive their users) and not after it is removed.
    pub fn listing_follows_the_names<S: System>(system: S) {
        let n = Name::new(&system, "list");
        let listed = |system: &S| {
            let mut found = false;
            system.list(&mut |name| found |= name == n.name).unwrap();
            found
        };
        let m = system
            .create(&n.name, SIZE, CreateOptions::default())
            .unwrap();
        let outlives_users = listed(&system);
        system.unlink(&n.name).unwrap();
        drop(m);
        assert!(!listed(&system), "a removed segment is still listed");
        if !outlives_users {
            // Then no segment may ever be listed (nothing can be left behind).
            let mut any = false;
            system.list(&mut |_| any = true).unwrap();
            assert!(!any, "a system that lists none listed one");
        }
    }

    /// Permissions, where the system has them (`modes`): a segment made with the default
    /// options has mode 0600 exactly (taking it over asking 0600 passes, asking 0400 is
    /// refused as wider, naming 0600), and one made 0640 is refused to a takeover that
    /// asks 0600. Everywhere, a segment made with the default options may be taken over
    /// with the same options.
    pub fn permissions<S: System>(system: S, modes: bool) {
        assert_eq!(CreateOptions::default().mode, 0o600);
        let n = Name::new(&system, "mode");
        let opts = CreateOptions::default();
        let m = system.create(&n.name, SIZE, opts).unwrap();
        system.check_takeover(&n.name, &m, &opts).unwrap();
        if !modes {
            return;
        }
        let narrow = CreateOptions {
            mode: 0o400,
            ..opts
        };
        assert_eq!(
            system.check_takeover(&n.name, &m, &narrow),
            Err(SystemError::TakeoverRefused(Refusal::WiderMode {
                found: 0o600,
                asked: 0o400
            }))
        );
        drop(m);
        system.unlink(&n.name).unwrap();

        let wide = CreateOptions {
            mode: 0o640,
            ..opts
        };
        let m = system.create(&n.name, SIZE, wide).unwrap();
        assert_eq!(
            system.check_takeover(&n.name, &m, &opts),
            Err(SystemError::TakeoverRefused(Refusal::WiderMode {
                found: 0o640,
                asked: 0o600
            }))
        );
    }

    /// The doorbell at [`BELL_AT`] of a mapping.
    fn bell<'m>(region: &Region<'m>) -> &'m Doorbell {
        region.get::<Doorbell>(BELL_AT).unwrap()
    }

    /// Doorbells: after `bell_init`, a wait with a timeout and no ring returns `TimedOut`;
    /// a ring before the wait is not lost; a ring through another mapping wakes a waiter
    /// on another thread; `bell_destroy` releases it.
    pub fn doorbells<S: System>(system: S) {
        let n = Name::new(&system, "bell");
        let a = system
            .create(&n.name, SIZE, CreateOptions::default())
            .unwrap();
        let b = system.open(&n.name).unwrap();
        let (ra, rb) = (region(&a), region(&b));
        system.bell_init(&a, &ra, bell(&ra)).unwrap();

        let short = Some(Duration::from_millis(20));
        assert_eq!(
            system.bell_wait(&a, &ra, bell(&ra), short).unwrap(),
            WaitOutcome::TimedOut
        );

        system.bell_ring(&b, &rb, bell(&rb)).unwrap();
        assert_eq!(
            system
                .bell_wait(&a, &ra, bell(&ra), Some(PATIENCE))
                .unwrap(),
            WaitOutcome::Woken
        );

        std::thread::scope(|s| {
            let waiter = s.spawn(|| system.bell_wait(&a, &ra, bell(&ra), Some(PATIENCE)));
            std::thread::sleep(Duration::from_millis(20));
            system.bell_ring(&b, &rb, bell(&rb)).unwrap();
            assert_eq!(waiter.join().unwrap().unwrap(), WaitOutcome::Woken);
        });
        system.bell_destroy(&a, &ra, bell(&ra));
    }

    /// Polls `f` until it holds or [`PATIENCE`] passes (a death may take a moment to be
    /// visible, e.g. while the system closes the dead process's handles).
    fn eventually(mut f: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while !f() {
            if start.elapsed() > PATIENCE {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Liveness within one process: an attachment's presence shows it alive, to itself
    /// and to another attachment; the same pid under another tag (as after pid reuse) and
    /// tag 0 are dead; `fork_generation` does not change without a fork.
    pub fn presence_and_incarnation<S: System>(system: S) {
        let n = Name::new(&system, "presence");
        let a = system
            .create(&n.name, SIZE, CreateOptions::default())
            .unwrap();
        let b = system.open(&n.name).unwrap();
        let pa = system.enter(&a).unwrap();
        let pb = system.enter(&b).unwrap();
        let (me, other) = (pa.current_process(), pb.current_process());
        assert!(pa.is_alive(me) && pb.is_alive(me) && pa.is_alive(other));
        let reused = ProcessId {
            pid: me.pid,
            tag: (me.tag ^ 0x5a5a_0000).max(1),
        };
        if reused != other {
            assert!(!pb.is_alive(reused), "a pid under another tag is alive");
        }
        assert!(!pb.is_alive(ProcessId { tag: 0, ..me }), "tag 0 is alive");
        let generation = system.fork_generation();
        let system2 = system.clone();
        let elsewhere = std::thread::spawn(move || system2.fork_generation())
            .join()
            .unwrap();
        assert_eq!(
            (system.fork_generation(), elsewhere),
            (generation, generation)
        );
    }

    /// How the helper process ends.
    #[derive(Clone, Copy)]
    pub enum End {
        /// Killed by the parent (SIGKILL, TerminateProcess).
        Killed,
        /// Exits on its own, without dropping its presence or mapping.
        Exits,
    }

    /// Starts the helper process on segment `name`; returns it with its identity there.
    fn start_child(module: &str, name: &SegmentName, end: End) -> (Child, ChildStdin, ProcessId) {
        // The test harness names tests without the crate: `native::child`.
        let module = module.split_once("::").map_or(module, |(_, rest)| rest);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                &format!("{module}::child"),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_SEGMENT, name.as_str())
            .env(
                CHILD_MODE,
                match end {
                    End::Killed => "killed",
                    End::Exits => "exits",
                },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let id = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(|l| l.ok())
            .find_map(|l| {
                let (pid, tag) = l.strip_prefix("presence ")?.trim().split_once(' ')?;
                Some(ProcessId {
                    pid: pid.parse().ok()?,
                    tag: tag.parse().ok()?,
                })
            })
            .expect("the helper reports its presence");
        (child, stdin, id)
    }

    /// The helper process: enters the segment named by the environment, reports its
    /// identity, and then waits to be killed, or exits when told to (without dropping
    /// anything). Does nothing when not started by [`another_process`].
    pub fn child<S: System>(system: S) {
        let (Ok(name), Ok(mode)) = (std::env::var(CHILD_SEGMENT), std::env::var(CHILD_MODE)) else {
            return;
        };
        let m = system.open(&SegmentName::new(&name).unwrap()).unwrap();
        let presence = system.enter(&m).unwrap();
        let me = presence.current_process();
        println!("\npresence {} {}", me.pid, me.tag);
        std::io::stdout().flush().unwrap();
        if mode == "exits" {
            let _ = std::io::stdin().read_line(&mut String::new());
            std::process::exit(0);
        }
        std::thread::sleep(PATIENCE * 4);
    }

    /// Liveness across processes: another process that entered the segment is alive
    /// while it runs, and dead once it was killed or exited (without dropping its
    /// presence), as seen from this process's presence.
    pub fn another_process<S: System>(system: S, module: &str, end: End) {
        let n = Name::new(&system, "child");
        let m = system
            .create(&n.name, SIZE, CreateOptions::default())
            .unwrap();
        let me = system.enter(&m).unwrap();
        let (mut child, mut stdin, id) = start_child(module, &n.name, end);
        assert!(me.is_alive(id), "a running process is dead");
        assert_ne!(id, me.current_process());
        match end {
            End::Killed => child.kill().unwrap(),
            End::Exits => writeln!(stdin, "exit").unwrap(),
        }
        let status = child.wait().unwrap();
        if let End::Exits = end {
            assert!(status.success(), "the helper failed: {status}");
        }
        assert!(eventually(|| !me.is_alive(id)), "a dead process is alive");
    }
}

/// Instantiates every property of the contract for one system, in module `$module`:
/// `system_contract!(module, SYSTEM_EXPRESSION, modes = HAS_PERMISSION_BITS)`.
macro_rules! system_contract {
    ($module:ident, $system:expr, modes = $modes:expr) => {
        mod $module {
            use super::contract;

            #[test]
            fn create_open_remove() {
                contract::create_open_remove($system);
            }

            #[test]
            fn bad_sizes_are_refused() {
                contract::bad_sizes_are_refused($system);
            }

            #[test]
            fn listing_follows_the_names() {
                contract::listing_follows_the_names($system);
            }

            #[test]
            fn permissions() {
                contract::permissions($system, $modes);
            }

            #[test]
            fn doorbells() {
                contract::doorbells($system);
            }

            #[test]
            fn presence_and_incarnation() {
                contract::presence_and_incarnation($system);
            }

            #[test]
            fn a_killed_process_is_dead() {
                contract::another_process($system, module_path!(), contract::End::Killed);
            }

            #[test]
            fn an_exited_process_is_dead() {
                contract::another_process($system, module_path!(), contract::End::Exits);
            }

            /// Not a test: the helper process of the two above.
            #[test]
            #[ignore = "helper process of the liveness tests"]
            fn child() {
                contract::child($system);
            }
        }
    };
}

// The system this target runs on: Linux, Windows or QNX (`QnxSystem`). Permission bits
// exist on the POSIX ones.
system_contract!(native, shm_host::NativeSystem, modes = cfg!(unix));

// Linux's other systems: System V segments, and segment files in a directory of the
// build's scratch space (`FileSystem::dir`, so each test's name is its own file).
#[cfg(target_os = "linux")]
system_contract!(sysv, shm_host::SysvSystem, modes = true);
#[cfg(target_os = "linux")]
system_contract!(file, crate::segment_files(), modes = true);

/// The file system of the contract tests: segment files under the build's scratch
/// directory.
#[cfg(target_os = "linux")]
fn segment_files() -> shm_host::FileSystem {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("contract-files");
    std::fs::create_dir_all(&dir).unwrap();
    shm_host::FileSystem::dir(dir)
}
