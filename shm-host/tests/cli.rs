//! The `shmipc` tool driven as a user (or a shell script) would drive it.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_shmipc");

fn shmipc(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `shmipc serve` in the background, killed if the test fails.
struct Serve {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    /// The line it started with (`serving NAME (generation G, ...)`).
    #[allow(dead_code)] // read by the Linux-only tests
    first: String,
}

impl Serve {
    fn start(name: &str) -> Serve {
        Serve::start_with(name, &[])
    }

    /// `serve NAME --size 4MiB EXTRA...`.
    fn start_with(name: &str, extra: &[&str]) -> Serve {
        let mut child = Command::new(EXE)
            .args(["serve", name, "--size", "4MiB"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        assert!(first.starts_with(&format!("serving {name}")), "{first}");
        Serve {
            child,
            lines,
            first,
        }
    }

    /// Stops it with SIGTERM and waits for its last line containing `what`.
    #[cfg(unix)]
    fn stop_expecting(mut self, what: &str) -> String {
        // SAFETY: sending SIGTERM to our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let line = self.expect_line(what);
        assert!(self.child.wait().unwrap().success());
        line
    }

    /// The next line containing `what`, within a generous limit (a hang guard).
    fn expect_line(&mut self, what: &str) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            if line.contains(what) {
                return line;
            }
            assert!(Instant::now() < end, "no line with {what:?}");
        }
        panic!("serve ended before printing {what:?}");
    }
}

impl Drop for Serve {
    /// Stops `serve` the way a user would (SIGTERM: it removes its segment), killing it
    /// only if it does not stop.
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            // SAFETY: sending SIGTERM to our own child process.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` prints each message with its tag, size and checksum; `send` delivers a file
/// and returns once the server took it; `inspect --json` describes the live segment;
/// SIGTERM stops `serve`, which removes the segment.
#[test]
fn serve_send_inspect_and_stop() {
    let name = format!("cli-{}", std::process::id());
    let mut serve = Serve::start(&name);
    let file = std::env::temp_dir().join(format!("shmipc-cli-{}.bin", std::process::id()));
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let out = shmipc(&["send", &name, "--tag", "42", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("sent 10000 bytes with tag 42"));
    let line = serve.expect_line("message from");
    let want = format!(
        "tag 42 bytes 10000 checksum {:#010x}",
        shm_host::checksum(&data)
    );
    assert!(line.contains(&want), "{line} lacks {want}");
    std::fs::remove_file(&file).unwrap();

    let out = shmipc(&["inspect", &name, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json = String::from_utf8(out.stdout).unwrap();
    for needle in [
        format!("\"name\":\"{name}\""),
        "\"running\":true".into(),
        "\"role\":\"server\"".into(),
        "\"check\":{\"ok\":true".into(),
    ] {
        assert!(json.contains(&needle), "{needle} not in {json}");
    }
    let out = shmipc(&["inspect", &name]);
    assert!(text(&out).contains("check: ok"), "{}", text(&out));

    #[cfg(unix)]
    {
        // SAFETY: sending SIGTERM to our own child process.
        unsafe { libc::kill(serve.child.id() as libc::pid_t, libc::SIGTERM) };
        serve.expect_line("stopped");
        assert!(serve.child.wait().unwrap().success());
        let out = shmipc(&["inspect", &name]);
        assert!(!out.status.success());
        assert!(text(&out).contains("does not exist"), "{}", text(&out));
    }
}

/// The tests that run `clean` over every POSIX segment, one at a time: each would
/// otherwise remove the dead segment the other is about to look for.
#[cfg(unix)]
static CLEAN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `clean` removes a segment whose processes are all dead and keeps live ones. (On
/// Windows a segment disappears with its last handle: there is nothing to clean.)
#[cfg(unix)]
#[test]
fn clean_removes_dead_segments_only() {
    let _one_clean_at_a_time = CLEAN.lock();
    let dead = format!("cli-dead-{}", std::process::id());
    let live = format!("cli-live-{}", std::process::id());
    let mut victim = Serve::start(&dead);
    let _alive = Serve::start(&live);
    let _ = victim.child.kill();
    let _ = victim.child.wait();
    let out = shmipc(&["clean", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("would remove {dead}")),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains(&format!("kept {live}")),
        "{}",
        text(&out)
    );
    let out = shmipc(&["clean"]);
    assert!(
        text(&out).contains(&format!("removed {dead}")),
        "{}",
        text(&out)
    );
    let out = shmipc(&["inspect", &dead]);
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    let out = shmipc(&["inspect", &live]);
    assert!(out.status.success(), "{}", text(&out));
}

/// `clean` keeps a segment whose process table cannot be read (its processes cannot be
/// told dead) and goes on to the next segment, which it removes; `--force` removes the
/// damaged one too.
#[cfg(target_os = "linux")]
#[test]
fn clean_keeps_an_unreadable_process_table_and_goes_on() {
    let _one_clean_at_a_time = CLEAN.lock();
    use std::io::{Seek, SeekFrom, Write};
    let damaged = format!("cli-badtable-{}", std::process::id());
    let dead = format!("cli-dead2-{}", std::process::id());
    for name in [&damaged, &dead] {
        let mut s = Serve::start(name);
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
    // The table's offset now points past the end of the region.
    let at = core::mem::offset_of!(shm_core::format::RegionHeader, heap.proc_table);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/shmipc.{damaged}"))
        .unwrap();
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    f.write_all(&0xffff_fff0u32.to_le_bytes()).unwrap();
    drop(f);
    let out = shmipc(&["clean"]);
    let t = text(&out);
    assert!(
        t.contains(&format!("kept {damaged}: cannot read its process table")),
        "{t}"
    );
    assert!(t.contains(&format!("removed {dead}")), "{t}");
    // A dry run only: a real `--force` would also remove other tests' segments that are
    // being created right now.
    let out = shmipc(&["clean", "--force", "--dry-run"]);
    let t = text(&out);
    assert!(
        t.contains(&format!("would remove {damaged}: process table unreadable")),
        "{t}"
    );
    std::fs::remove_file(format!("/dev/shm/shmipc.{damaged}")).unwrap();
}

/// The demo runs its whole story and reports every byte back and `check()` passing.
#[test]
fn demo_runs_and_finds_nothing_lost() {
    let out = shmipc(&[
        "demo",
        "--clients",
        "3",
        "--messages",
        "400",
        "--max-size",
        "64KiB",
        "--size",
        "16MiB",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for needle in [
        "killed client 1",
        "server noticed: client",
        "(difference 0 bytes)",
        "check: ok",
        "removed",
    ] {
        assert!(t.contains(needle), "{needle:?} missing from:\n{t}");
    }
}

/// Bad input gets a clear message and a failing exit status, never a panic.
#[test]
fn bad_input_is_reported() {
    let out = shmipc(&["send", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--tag"));
    let out = shmipc(&["inspect", "no/such"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("invalid segment name"),
        "{}",
        text(&out)
    );
    let out = shmipc(&["serve", "x", "--size", "12Q"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unit"), "{}", text(&out));
    let out = shmipc(&["inspect", &format!("never-{}", std::process::id())]);
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
}

/// The row of `/proc/sysvipc/shm` (what `ipcs -m` shows) for System V key `key`.
#[cfg(target_os = "linux")]
fn sysv_row(key: i32) -> Option<String> {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap()
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&key.to_string()))
        .map(str::to_owned)
}

/// `--backend sysv`: `serve` makes a System V segment with mode 0600 at the name's key;
/// `send` and `inspect` find it by name; `clean` keeps it while its server lives and
/// removes it (and its lock file) once the server was killed.
#[cfg(target_os = "linux")]
#[test]
fn sysv_segments_from_the_command_line() {
    let name = format!("cli-sysv-{}", std::process::id());
    let seg = shm_host::SegmentName::new(&name).unwrap();
    let key = shm_host::SysvSystem::key(&seg);
    let mut serve = Serve::start_with(&name, &["--backend", "sysv"]);
    let row = sysv_row(key).expect("the segment is in the kernel's table");
    assert_eq!(row.split_whitespace().nth(2), Some("600"), "{row}");
    let out = shmipc(&["send", &name, "--tag", "9", "--backend", "sysv", "-"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(serve.expect_line("message from").contains("tag 9"));
    let out = shmipc(&["inspect", &name, "--backend", "sysv"]);
    assert!(text(&out).contains("check: ok"), "{}", text(&out));
    let out = shmipc(&["inspect", &name]);
    assert!(text(&out).contains("does not exist"), "not a POSIX segment");
    let out = shmipc(&["clean", "--dry-run", "--backend", "sysv"]);
    assert!(
        text(&out).contains(&format!("kept {name} (sysv)")),
        "{}",
        text(&out)
    );

    let _ = serve.child.kill();
    let _ = serve.child.wait();
    assert!(sysv_row(key).is_some(), "a killed server's segment stays");
    let out = shmipc(&["clean", "--backend", "sysv"]);
    assert!(
        text(&out).contains(&format!("removed {name} (sysv)")),
        "{}",
        text(&out)
    );
    assert!(sysv_row(key).is_none(), "clean removed it");
    assert!(!shm_host::SysvSystem::lock_path(&seg).exists());

    // A clean stop removes it too.
    let serve = Serve::start_with(&name, &["--backend", "sysv"]);
    assert!(sysv_row(key).is_some());
    serve.stop_expecting("removed");
    assert!(sysv_row(key).is_none());
}

/// `--backend file:PATH`: a clean stop keeps the file; the next `serve` on it continues
/// the same heap (generation 2); `inspect` reads it; `clean` leaves it alone.
#[cfg(target_os = "linux")]
#[test]
fn file_segments_from_the_command_line() {
    let name = format!("cli-file-{}", std::process::id());
    let path = std::env::temp_dir().join(format!("shmipc-{name}.heap"));
    let _ = std::fs::remove_file(&path);
    let backend = format!("file:{}", path.display());
    let mut serve = Serve::start_with(&name, &["--backend", &backend]);
    assert!(serve.first.contains("generation 1"), "{}", serve.first);
    let out = shmipc(&["send", &name, "--tag", "3", "--backend", &backend, "-"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(serve.expect_line("message from").contains("tag 3"));
    let last = serve.stop_expecting("stopped");
    assert!(last.contains("kept in"), "{last}");
    assert!(path.exists());

    let serve = Serve::start_with(&name, &["--backend", &backend]);
    assert!(serve.first.contains("generation 2"), "{}", serve.first);
    let out = shmipc(&["inspect", &name, "--backend", &backend]);
    assert!(
        text(&out).contains("server: generation 2"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("check: ok"), "{}", text(&out));
    let out = shmipc(&["clean", "--dry-run"]);
    assert!(!text(&out).contains(&name), "{}", text(&out));
    serve.stop_expecting("stopped");
    std::fs::remove_file(&path).unwrap();
}

/// `inspect` shows the kept blocks of a file-backed segment nobody runs on: their number,
/// bytes and the kept root, in text and JSON.
#[cfg(target_os = "linux")]
#[test]
fn inspect_shows_kept_blocks() {
    use shm_host::{Client, ClientOptions, FileSystem, Server, ServerOptions};
    let name = format!("cli-kept-{}", std::process::id());
    let path = std::env::temp_dir().join(format!("shmipc-{name}.heap"));
    let _ = std::fs::remove_file(&path);
    let files = FileSystem::file(&path);
    let opts = ServerOptions {
        size: 1 << 20,
        ..ServerOptions::default()
    };
    let server = Server::create_on(files.clone(), &name, opts).unwrap();
    let client = Client::connect_on(files, &name, ClientOptions::default()).unwrap();
    let root = client.keep(client.alloc(1000).unwrap()).unwrap();
    client.keep(client.alloc(10).unwrap()).unwrap();
    client.set_kept_root(Some(root)).unwrap();
    drop((client, server));

    let backend = format!("file:{}", path.display());
    let out = shmipc(&["inspect", &name, "--backend", &backend]);
    let want = "kept: 2 blocks, ";
    assert!(text(&out).contains(want), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("root {}", root.get())),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("check: ok"), "{}", text(&out));
    let out = shmipc(&["inspect", &name, "--backend", &backend, "--json"]);
    let json = String::from_utf8(out.stdout).unwrap();
    let want = "\"kept\":{\"blocks\":2,\"bytes\":";
    assert!(json.contains(want), "{json}");
    assert!(
        json.contains(&format!("\"root\":{}}}", root.get())),
        "{json}"
    );
    std::fs::remove_file(&path).unwrap();
}
