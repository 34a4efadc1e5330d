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
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {exe} {args:?}: {e}"));
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
