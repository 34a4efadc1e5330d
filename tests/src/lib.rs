//! Helpers shared by the integration tests: unique segment names, child processes that
//! are killed if a test fails, the message format the traffic tests check.
#![allow(clippy::unwrap_used)] // test support: failures panic with a message

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A segment name unique to this test process and `test`.
pub fn unique_name(test: &str) -> String {
    format!("t-{test}-{}", std::process::id())
}

/// Path of the helper binary (`src/bin/shm-test-peer.rs`). A macro because Cargo tells
/// only integration tests where it is.
#[macro_export]
macro_rules! peer_exe {
    () => {
        env!("CARGO_BIN_EXE_shm-test-peer")
    };
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct Peer {
    /// The process.
    pub child: Child,
    out: Option<BufReader<ChildStdout>>,
}

impl Peer {
    /// Starts `EXE ARGS...` (the helper binary, see [`peer_exe!`]) with stdin and stdout
    /// piped.
    pub fn spawn(exe: &str, args: &[&str]) -> Peer {
        Peer::start(exe, args, &[], Stdio::inherit)
    }

    /// Like [`spawn`](Peer::spawn), with the peer's segment roles on the kind of segment
    /// `backend` names (`sysv`, `file:PATH`, ...; the peer's `SHM_TEST_BACKEND`).
    pub fn spawn_on(exe: &str, backend: &str, args: &[&str]) -> Peer {
        Peer::start(exe, args, &[("SHM_TEST_BACKEND", backend)], Stdio::inherit)
    }

    /// Starts the peer with stdin and stdout piped and stderr as `stderr` makes it.
    ///
    /// A start that fails is tried again a few times before the test gives up: under Wine
    /// `CreateProcess` fails now and then while many processes come and go ("Internal
    /// error", os error 1359). A process that failed to start did nothing, so trying again
    /// changes nothing the test observes.
    fn start(exe: &str, args: &[&str], env: &[(&str, &str)], stderr: fn() -> Stdio) -> Peer {
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        let mut child = loop {
            match Command::new(exe)
                .args(args)
                .envs(env.iter().copied())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(stderr())
                .spawn()
            {
                Ok(child) => break child,
                Err(e) if attempt < ATTEMPTS => {
                    eprintln!("spawning {exe} {args:?} (attempt {attempt}): {e}; trying again");
                    std::thread::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)));
                    attempt += 1;
                }
                Err(e) => panic!("spawning {exe} {args:?} ({ATTEMPTS} attempts): {e}"),
            }
        };
        let out = child.stdout.take().map(BufReader::new);
        Peer { child, out }
    }

    /// The next line the peer prints (peers announce their progress this way); empty at
    /// the end of its output.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        if let Some(out) = self.out.as_mut() {
            out.read_line(&mut line).unwrap();
        }
        line.trim().to_owned()
    }

    /// Writes a line to the peer's stdin.
    pub fn write_line(&mut self, line: &str) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
        }
    }

    /// Waits for the peer to exit, failing after `limit` (a hang, not a timing check).
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < end,
                "peer {} did not exit",
                self.child.id()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL (TerminateProcess on Windows), then reap it so it is not a zombie.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// How the shm-core in this build was built, for the benchmarks' headers: with or without
/// the test-only `fault-injection` feature (see `shm_core::FAULT_INJECTION`).
pub fn shm_core_build() -> &'static str {
    if shm_core::FAULT_INJECTION {
        "built WITH fault-injection (test-only checks in every operation)"
    } else {
        "as users build it (no fault-injection)"
    }
}

/// Polls `f` until it returns `Some`, failing after `limit` (guards against hangs only).
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The traffic tests' message: a 16-byte header (client, sequence number, checksum of the
/// body, body length) and a body of pseudo-random bytes derived from (client, seq).
pub mod wire {
    /// Header bytes.
    pub const HEADER: usize = 16;

    /// Body length of message `seq` of `client`: 0..4080 bytes, varied.
    pub fn body_len(client: u32, seq: u32) -> usize {
        let x = mix(client, seq);
        match x % 8 {
            0 => 0,
            1..=5 => (x >> 8) as usize % 256,
            _ => (x >> 8) as usize % 4080,
        }
    }

    fn mix(client: u32, seq: u32) -> u32 {
        let mut x = (u64::from(client) << 32 | u64::from(seq)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        (x as u32) ^ (x >> 32) as u32
    }

    /// Writes message (`client`, `seq`) into `out` (which must be `HEADER + body_len` long).
    pub fn encode(out: &mut [u8], client: u32, seq: u32) {
        let body_len = out.len() - HEADER;
        let mut x = u64::from(mix(client, seq)) | 1;
        for b in &mut out[HEADER..] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let sum = shm_host::checksum(&out[HEADER..]);
        out[0..4].copy_from_slice(&client.to_le_bytes());
        out[4..8].copy_from_slice(&seq.to_le_bytes());
        out[8..12].copy_from_slice(&sum.to_le_bytes());
        out[12..16].copy_from_slice(&(body_len as u32).to_le_bytes());
    }

    /// Reads and verifies a message: `(client, seq)` if header and checksum agree.
    pub fn decode(msg: &[u8]) -> Result<(u32, u32), String> {
        if msg.len() < HEADER {
            return Err(format!("message of {} bytes", msg.len()));
        }
        let word = |i: usize| u32::from_le_bytes(msg[i..i + 4].try_into().unwrap_or([0; 4]));
        let (client, seq, sum, len) = (word(0), word(4), word(8), word(12) as usize);
        if len != msg.len() - HEADER || len != body_len(client, seq) {
            return Err(format!("client {client} seq {seq}: length {len}"));
        }
        if shm_host::checksum(&msg[HEADER..]) != sum {
            return Err(format!("client {client} seq {seq}: checksum mismatch"));
        }
        Ok((client, seq))
    }
}

/// Lines a child process prints, read on a background thread so a test can wait for one
/// with a limit (and keep reading while it does other things).
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    /// Reads `out` line by line on a new thread until it ends.
    pub fn new(out: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line.trim_end().to_owned()).is_err() {
                    return;
                }
            }
        });
        Lines { rx }
    }

    /// The next line if one is waiting; `Err(Disconnected)` once the output ended.
    pub fn try_next(&self) -> Result<String, std::sync::mpsc::TryRecvError> {
        self.rx.try_recv()
    }

    /// The next line, waiting at most `limit`; `None` on timeout or at the end.
    pub fn next_within(&self, limit: Duration) -> Option<String> {
        self.rx.recv_timeout(limit).ok()
    }

    /// Skips lines until one satisfies `want`, failing after `limit` (a hang guard) or
    /// at the end of the output. Skipped lines are passed to `skipped`.
    pub fn expect(
        &self,
        limit: Duration,
        what: &str,
        mut want: impl FnMut(&str) -> bool,
        mut skipped: impl FnMut(&str),
    ) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(line) => skipped(&line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("gave up waiting for a line: {what}")
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("output ended before a line: {what}")
                }
            }
        }
    }
}

impl Peer {
    /// Like [`spawn`](Peer::spawn), with stderr piped too (see
    /// [`finish_output`](Peer::finish_output)), for peers whose error output is checked.
    pub fn spawn_captured(exe: &str, args: &[&str]) -> Peer {
        Peer::start(exe, args, &[], Stdio::piped)
    }

    /// Moves the peer's stdout to a background reader (for peers that print a lot or
    /// whose lines are waited for with a limit).
    pub fn lines(&mut self) -> Lines {
        let out = self.out.take().expect("stdout already taken");
        Lines::new(out)
    }

    /// After the peer exited: the lines it printed that were not read yet, and everything
    /// it wrote to stderr (empty unless spawned with [`spawn_captured`]).
    ///
    /// [`spawn_captured`]: Peer::spawn_captured
    pub fn finish_output(&mut self) -> (Vec<String>, String) {
        use std::io::Read;
        let mut lines = Vec::new();
        if let Some(out) = self.out.as_mut() {
            for line in out.lines() {
                match line {
                    Ok(l) => lines.push(l.trim_end().to_owned()),
                    Err(_) => break,
                }
            }
        }
        let mut err = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        (lines, err)
    }
}

/// Removes segment `name` when dropped (whether or not the test passed), so a failing test
/// leaves nothing in `/dev/shm`. Removing a name that is gone already is not an error.
pub struct SegmentGuard(pub String);

impl Drop for SegmentGuard {
    fn drop(&mut self) {
        if let Ok(name) = shm_host::SegmentName::new(&self.0) {
            let _ = shm_host::System::unlink(&shm_host::NativeSystem, &name);
        }
    }
}

/// Where Linux shows segment `name`: `/dev/shm/` + the library's prefixed name
/// (`shm-host/src/name.rs`).
#[cfg(target_os = "linux")]
pub fn shm_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/dev/shm").join(format!("{}{name}", shm_host::name::PREFIX))
}

#[cfg(target_os = "linux")]
pub mod memfd;

/// A small deterministic PRNG (xorshift64*), so a test's random choices are the same at
/// every run.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The churn test's message: a 16-byte header (client, sequence number, total length, a
/// magic word) and pseudo-random bytes derived from (client, seq), 1 KiB to 256 KiB in all.
/// Test and peers derive the expected length and content independently.
pub mod churn {
    /// Header bytes.
    pub const HEADER: usize = 16;
    /// Fourth header word.
    pub const MAGIC: u32 = 0xc4_0e_5e_ed;
    /// Smallest message.
    pub const MIN_LEN: usize = 1024;
    /// Largest message.
    pub const MAX_LEN: usize = 256 * 1024;

    fn seed(client: u32, seq: u32) -> u64 {
        let mut x = (u64::from(client) << 32 | u64::from(seq)) ^ 0x5851_f42d_4c95_7f2d;
        x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 31;
        x | 1
    }

    /// Total length (header included) of message `seq` of `client`.
    pub fn len(client: u32, seq: u32) -> usize {
        let x = seed(client, seq) >> 8;
        MIN_LEN + (x % (MAX_LEN - MIN_LEN + 1) as u64) as usize
    }

    /// Writes message (`client`, `seq`) into `out`, which must be [`len`] bytes long.
    pub fn fill(out: &mut [u8], client: u32, seq: u32) {
        out[0..4].copy_from_slice(&client.to_le_bytes());
        out[4..8].copy_from_slice(&seq.to_le_bytes());
        let total = out.len() as u32;
        out[8..12].copy_from_slice(&total.to_le_bytes());
        out[12..16].copy_from_slice(&MAGIC.to_le_bytes());
        let mut x = seed(client, seq);
        let mut chunks = out[HEADER..].chunks_exact_mut(8);
        for c in &mut chunks {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let n = rest.len();
        rest.copy_from_slice(&x.rotate_left(7).to_le_bytes()[..n]);
    }

    /// The message's bytes, built afresh.
    pub fn message(client: u32, seq: u32) -> Vec<u8> {
        let mut v = vec![0; len(client, seq)];
        fill(&mut v, client, seq);
        v
    }

    /// The (client, seq, length) a message's header claims, if it has one.
    pub fn header(msg: &[u8]) -> Option<(u32, u32, u32)> {
        if msg.len() < HEADER {
            return None;
        }
        let word = |i: usize| u32::from_le_bytes(msg[i..i + 4].try_into().unwrap_or([0; 4]));
        (word(12) == MAGIC).then(|| (word(0), word(4), word(8)))
    }
}

/// Path of the `shmipc` tool (a binary of `shm-host`, so Cargo does not tell this crate
/// where it is): `$SHMIPC_EXE` if set, else next to this test's build directory
/// (`target/<profile>/shmipc`). If it is not built yet (`cargo test -p shm-tests` builds
/// only this crate's targets) it is built with the same Cargo, target directory and profile.
pub fn shmipc_exe() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("SHMIPC_EXE") {
        return p.into();
    }
    let me = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = me
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable inside target/<profile>/deps")
        .to_path_buf();
    let exe = profile_dir.join(format!("shmipc{}", std::env::consts::EXE_SUFFIX));
    if exe.exists() {
        return exe;
    }
    let target_dir = profile_dir.parent().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "shm-host", "--bin", "shmipc"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd
        .status()
        .unwrap_or_else(|e| panic!("building shmipc ({cmd:?}): {e}"));
    assert!(st.success(), "building shmipc ({cmd:?}) failed: {st}");
    assert!(exe.exists(), "{} missing after building it", exe.display());
    exe
}
