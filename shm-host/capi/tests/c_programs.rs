//! The C programs, compiled with `gcc -std=c11 -Wall -Wextra -Werror -pedantic` against
//! `libshm.a` and `include/shm.h`, run as real processes:
//!
//! - `tests/c/api.c`: every function's success and failure paths in one process;
//! - `tests/c/threads.c`: a server and a client each shared by several threads;
//! - `examples/hello.c` (the README's C example) against the Rust `shmipc serve`;
//! - `tests/c/echo_server.c` with three `tests/c/stream_client.c` processes streaming
//!   checksummed messages, and the same with one client SIGKILLed mid-stream.
//!
//! Linux only (gcc and the link line of Rust's static libraries on glibc). Each test uses
//! its own segment name and leaves nothing in `/dev/shm`.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // test code: failures panic with a message

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use shm_tests::{shm_path, unique_name, Peer, SegmentGuard};

/// What Rust's standard library needs when linked statically on glibc (`rustc --print
/// native-static-libs`); the README's link line.
const NATIVE_LIBS: &str = "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc";

/// How long a step may take before the test calls it a hang (not a timing check).
const HANG: Duration = Duration::from_secs(120);

/// The crate's directory.
fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>/`, where Cargo puts `libshm.a` and `libshm.so` (one rustc run
/// makes every crate type of this crate's library), next to `deps/` where this test runs.
fn profile_dir() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    me.parent()
        .and_then(Path::parent)
        .expect("test executable inside target/<profile>/deps")
        .to_path_buf()
}

/// How a program is linked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Link {
    /// With `libshm.a`: the program needs nothing at run time.
    Static,
    /// With `libshm.so`, found through the program's run path.
    Shared,
}

/// Compiles `source` (relative to the crate) once per test run and link; the
/// executable's path.
fn program_linked(source: &str, link: Link) -> PathBuf {
    type Built = HashMap<(String, Link), PathBuf>;
    static BUILT: Mutex<Option<Built>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(exe) = built.get(&(source.to_owned(), link)) {
        return exe.clone();
    }
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-programs");
    std::fs::create_dir_all(&out_dir).unwrap();
    let stem = Path::new(source).file_stem().unwrap().to_str().unwrap();
    let exe = out_dir.join(format!("{stem}-{link:?}").to_lowercase());
    let lib_dir = libraries();
    let mut gcc = Command::new("gcc");
    gcc.args(["-std=c11", "-D_POSIX_C_SOURCE=200809L"])
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-I")
        .arg(crate_dir().join("tests/c"))
        .arg("-o")
        .arg(&exe)
        .arg(crate_dir().join(source));
    match link {
        Link::Static => {
            let lib = lib_dir.join("libshm.a");
            assert!(lib.exists(), "{} is missing", lib.display());
            gcc.arg(lib).args(NATIVE_LIBS.split(' '));
        }
        Link::Shared => {
            assert!(lib_dir.join("libshm.so").exists(), "libshm.so is missing");
            gcc.arg("-L")
                .arg(&lib_dir)
                .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
                .arg("-lshm");
        }
    }
    let st = gcc.status().unwrap_or_else(|e| panic!("running gcc: {e}"));
    assert!(st.success(), "gcc failed on {source} ({link:?}): {st}");
    built.insert((source.to_owned(), link), exe.clone());
    exe
}

/// `source` compiled and linked with the static library.
fn program(source: &str) -> PathBuf {
    program_linked(source, Link::Static)
}

/// Runs `cargo build` with `args` into this test's target directory and profile, so that
/// what it builds is current (`cargo test` builds `libshm.a` and `libshm.so` only as
/// dependencies of the tests, in `deps/`, and leaves any older copy in the profile
/// directory as it was; an old `shmipc` may speak an older region format). Quick when
/// everything is current.
fn cargo_build(args: &[&str]) {
    let profile_dir = profile_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .args(args)
        .current_dir(crate_dir())
        .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?}: {st}");
}

/// The directory holding a current `libshm.a` and `libshm.so` (built once per test run).
fn libraries() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| cargo_build(&["-p", "shm-capi", "--lib"]));
    profile_dir()
}

/// The `shmipc` binary, built now (see [`cargo_build`]).
fn shmipc() -> PathBuf {
    cargo_build(&["-p", "shm-host", "--bin", "shmipc"]);
    profile_dir().join("shmipc")
}

/// Asserts that nothing of segment `name` is left.
fn assert_removed(name: &str) {
    assert!(
        !shm_path(name).exists(),
        "{} was left behind",
        shm_path(name).display()
    );
}

/// The value of `key=` in a line of `key=value` words.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// The C test suite of the interface, in one process.
#[test]
fn api_suite_in_c() {
    let name = unique_name("capi-api");
    let _guard = SegmentGuard(name.clone());
    let out = Command::new(program("tests/c/api.c"))
        .arg(&name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "api.c: {stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed"), "{stdout}");
    assert_removed(&name);
}

/// The same suite linked with the shared library, `libshm.so`.
#[test]
fn api_suite_in_c_with_the_shared_library() {
    let name = unique_name("capi-api-so");
    let _guard = SegmentGuard(name.clone());
    let out = Command::new(program_linked("tests/c/api.c", Link::Shared))
        .arg(&name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "api.c: {stdout}");
    assert!(stdout.trim_end().ends_with(" passed, 0 failed"), "{stdout}");
    assert_removed(&name);
}

/// One server and one client, each shared by several threads of a C program: the
/// thread-safety the header promises (every `const` handle function from any thread, at
/// the same time).
#[test]
fn handles_shared_by_c_threads() {
    let name = unique_name("capi-threads");
    let _guard = SegmentGuard(name.clone());
    let out = Command::new(program("tests/c/threads.c"))
        .arg(&name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "threads.c: {stdout}");
    assert!(stdout.trim_end().ends_with(" passed, 0 failed"), "{stdout}");
    assert_removed(&name);
}

/// (a) The README's C client talks to the Rust `shmipc serve`: every buffer arrives with
/// the size and checksum the client computed, in order.
#[test]
fn c_client_talks_to_shmipc_serve() {
    let name = unique_name("capi-serve");
    let _guard = SegmentGuard(name.clone());
    let exe = shmipc();
    let mut serve = Peer::spawn(exe.to_str().unwrap(), &["serve", &name, "--size", "4MiB"]);
    let lines = serve.lines();
    lines.expect(HANG, "serving", |l| l.starts_with("serving "), |_| {});

    const COUNT: usize = 20;
    let out = Command::new(program("examples/hello.c"))
        .args([&name, &COUNT.to_string()])
        .output()
        .unwrap();
    let sent = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hello.c failed: {sent}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Vec<&str> = sent.lines().collect();
    assert_eq!(sent.len(), COUNT);
    for line in sent {
        // "sent tag T bytes B checksum X" against "message from #S.N tag T bytes B checksum X"
        let what = line.strip_prefix("sent ").unwrap();
        let arrived = lines.expect(HANG, line, |l| l.starts_with("message from "), |_| {});
        let (_, rest) = arrived.split_once(" tag ").unwrap();
        assert_eq!(format!("tag {rest}"), what, "{arrived}");
    }
    // SAFETY: kill(2) on our own child's pid, which `serve` keeps until it is reaped.
    let r = unsafe { libc::kill(serve.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0);
    assert!(serve.wait(HANG).success());
    lines.expect(
        HANG,
        "removed",
        |l| l.starts_with("stopped; segment"),
        |_| {},
    );
    assert_removed(&name);
}

/// Starts the C echo server for `clients` clients; returns it with its line reader.
fn echo_server(name: &str, clients: u32) -> (Peer, shm_tests::Lines) {
    let exe = program("tests/c/echo_server.c");
    let mut server = Peer::spawn(exe.to_str().unwrap(), &[name, &clients.to_string()]);
    let lines = server.lines();
    lines.expect(HANG, "ready", |l| l.starts_with("ready "), |_| {});
    (server, lines)
}

/// A C stream client, number `number`, sending `count` messages (0: without end).
fn stream_client(name: &str, number: u32, count: u32) -> (Peer, shm_tests::Lines, String) {
    let exe = program("tests/c/stream_client.c");
    let mut client = Peer::spawn(
        exe.to_str().unwrap(),
        &[name, &number.to_string(), &count.to_string()],
    );
    let lines = client.lines();
    let hello = lines.expect(HANG, "hello", |l| l.starts_with("hello #"), |_| {});
    let id = hello.trim_start_matches("hello ").to_owned();
    (client, lines, id)
}

/// The server's last line, after it exited on its own.
fn finish(mut server: Peer, lines: &shm_tests::Lines, seen: &mut Vec<String>) -> String {
    let last = lines.expect(
        HANG,
        "final",
        |l| l.starts_with("final "),
        |l| seen.push(l.to_owned()),
    );
    let st = server.wait(HANG);
    assert!(st.success(), "echo server: {st}; {seen:?}; {last}");
    last
}

/// (b) A C server with three C client processes streaming checksummed messages at once:
/// every echo comes back intact, memory returns, the structures check.
#[test]
fn c_server_with_c_clients() {
    let name = unique_name("capi-echo");
    let _guard = SegmentGuard(name.clone());
    let (server, server_lines) = echo_server(&name, 3);
    let mut clients: Vec<_> = (1..=3).map(|i| stream_client(&name, i, 600)).collect();
    for (client, lines, id) in &mut clients {
        lines.expect(
            HANG,
            "done",
            |l| l == "done 600",
            |l| assert!(!l.starts_with("FAILED"), "client {id}: {l}"),
        );
        assert!(client.wait(HANG).success());
    }
    let mut seen = Vec::new();
    let last = finish(server, &server_lines, &mut seen);
    assert_eq!(field(&last, "bad"), "0", "{last}");
    assert_eq!(field(&last, "died"), "0", "{last}");
    assert_eq!(field(&last, "echoed"), "1800", "{last}");
    assert_eq!(
        field(&last, "available"),
        field(&last, "baseline"),
        "{last}"
    );
    assert_eq!(field(&last, "check"), "ok", "{last}");
    assert!(
        seen.iter()
            .any(|l| l == "broadcast go to 3 clients (0 failed)"),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|l| l.starts_with("disconnected "))
            .count(),
        3
    );
    assert_removed(&name);
}

/// (c) The checksummed stream with a client SIGKILLed mid-stream: the others finish
/// intact, the server reports the death with the bytes it reclaimed, keeps serving, and
/// all memory comes back.
#[test]
fn c_client_killed_mid_stream() {
    let name = unique_name("capi-kill");
    let _guard = SegmentGuard(name.clone());
    let (server, server_lines) = echo_server(&name, 3);
    let (mut victim, victim_lines, victim_id) = stream_client(&name, 3, 0);
    let mut clients: Vec<_> = (1..=2).map(|i| stream_client(&name, i, 3000)).collect();
    // Mid-stream: it has sent and had echoed at least 200 messages, and goes on.
    victim_lines.expect(
        HANG,
        "progress",
        |l| l == "progress 200",
        |l| assert!(!l.starts_with("FAILED"), "victim: {l}"),
    );
    victim.kill();
    for (client, lines, id) in &mut clients {
        lines.expect(
            HANG,
            "done",
            |l| l == "done 3000",
            |l| assert!(!l.starts_with("FAILED"), "client {id}: {l}"),
        );
        assert!(client.wait(HANG).success());
    }
    let mut seen = Vec::new();
    let last = finish(server, &server_lines, &mut seen);
    let died = seen
        .iter()
        .find(|l| l.starts_with(&format!("died {victim_id} ")))
        .unwrap_or_else(|| panic!("no death of {victim_id} reported: {seen:?}"));
    let freed: u64 = field(died, "bytes_freed").parse().unwrap();
    assert!(freed > 0, "{died}");
    assert_eq!(field(&last, "bad"), "0", "{last}");
    assert_eq!(field(&last, "died"), "1", "{last}");
    assert_eq!(
        field(&last, "available"),
        field(&last, "baseline"),
        "{last}"
    );
    assert_eq!(field(&last, "processes"), "1", "{last}");
    assert_eq!(field(&last, "check"), "ok", "{last}");
    assert_removed(&name);
}
