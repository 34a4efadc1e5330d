//! The uds and pipe rows: the payload copied through the kernel in full each way.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use shm_host::cli::{uds_accept, uds_connect, uds_listen};

use super::measure::{run_sizes, Link, Peer};
use super::plan::Plan;
use super::report::Output;
use super::{Mechanism, Res, CONNECT_TIMEOUT, MAX_PAYLOAD, REPLY_TIMEOUT};

/// A byte stream to the peer. Each phase starts with a 16-byte header (payload size,
/// round trips; 0 round trips: exit), then the payloads go back and forth in full.
pub(super) struct StreamLink<R: Read, W: Write> {
    r: R,
    w: W,
    tx: Vec<u8>,
    rx: Vec<u8>,
    n: usize,
}

impl<R: Read, W: Write> StreamLink<R, W> {
    pub(super) fn new(r: R, w: W) -> Self {
        StreamLink {
            r,
            w,
            tx: Vec::new(),
            rx: Vec::new(),
            n: 0,
        }
    }

    pub(super) fn header(&mut self, n: usize, rounds: u64) -> Res<()> {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&(n as u64).to_le_bytes());
        h[8..].copy_from_slice(&rounds.to_le_bytes());
        self.w.write_all(&h).context("writing to the peer")?;
        Ok(())
    }
}

impl<R: Read, W: Write> Link for StreamLink<R, W> {
    fn prepare(&mut self, n: usize, rounds: u64) -> Res<()> {
        if self.tx.len() < n {
            // Written now, so that the pages exist before anything is timed.
            self.tx = vec![0xa5; n];
            self.rx = vec![0x5a; n];
        }
        self.n = n;
        self.header(n, rounds)
    }

    fn round(&mut self) -> Res<()> {
        let n = self.n;
        self.w
            .write_all(&self.tx[..n])
            .context("writing to the peer")?;
        self.r.read_exact(&mut self.rx[..n]).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                anyhow!("reading the echo: the peer closed its end (did it exit?)")
            } else {
                anyhow!("reading the echo: {e}")
            }
        })?;
        Ok(())
    }

    fn finish(&mut self) -> Res<()> {
        self.header(0, 0)
    }
}

/// The peer of the stream rows: echoes each phase's payloads until told to stop.
pub(super) fn echo_stream(mut r: impl Read, mut w: impl Write) -> Res<()> {
    let mut buf = Vec::new();
    loop {
        let mut h = [0u8; 16];
        match r.read_exact(&mut h) {
            Ok(()) => {}
            // The bench process went away between phases.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(anyhow!("reading: {e}")),
        }
        let n = usize::try_from(le_u64(&h[..8])?)?;
        let rounds = le_u64(&h[8..])?;
        if rounds == 0 {
            return Ok(());
        }
        if n > MAX_PAYLOAD {
            bail!("payload of {n} bytes announced (corrupt stream?)");
        }
        if buf.len() < n {
            buf = vec![0u8; n];
        }
        for _ in 0..rounds {
            r.read_exact(&mut buf[..n]).context("reading")?;
            w.write_all(&buf[..n]).context("writing")?;
        }
    }
}

/// Deletes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The uds rows: a listener at a temporary path, the peer connects to it. Whether the
/// system has Unix-domain sockets (Linux, Windows 10 and later) is asked at run time: where
/// one cannot be made, the rows are skipped with a note.
pub(super) fn run_uds(plan: &Plan, out: &mut Output) -> Res<()> {
    out.progress("uds", "blocking", None);
    let path = std::env::temp_dir().join(format!("shmipc-bench-{}.sock", std::process::id()));
    // A leftover of an earlier process with our pid.
    let _ = std::fs::remove_file(&path);
    let listener = match uds_listen(&path) {
        Ok(s) => s,
        Err(e) => {
            let note = format!(
                "Unix-domain sockets are not measured on this system (only shm and pipe): \
                 listening at {}: {e}",
                path.display()
            );
            out.skip(plan.sizes.len(), note);
            return Ok(());
        }
    };
    let remove = RemoveOnDrop(path.clone());
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    let mut cmd = plan.peer_command(Mechanism::Uds);
    cmd.arg("--socket").arg(&path);
    let mut process = Peer::spawn(cmd, "uds".into())?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let stream = loop {
        match uds_accept(&listener) {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                process.check()?;
                plan.check_stop()?;
                if Instant::now() >= deadline {
                    bail!("the uds peer did not connect within 10 s");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(anyhow!("accepting on {}: {e}", path.display())),
        }
    };
    drop(remove);
    drop(listener);
    stream
        .set_nonblocking(false)
        .context("making the socket blocking")?;
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .context("setting a read timeout")?;
    stream
        .set_write_timeout(Some(REPLY_TIMEOUT))
        .context("setting a write timeout")?;
    let r = stream.try_clone().context("cloning the socket")?;
    let mut link = StreamLink::new(r, stream);
    run_sizes(&mut link, Mechanism::Uds, "blocking", plan, out)?;
    link.finish()?;
    drop(link);
    process.finish()
}

/// The peer of the uds rows: connects to the bench's listener and echoes.
pub(super) fn peer_uds(path: &Path) -> Res<()> {
    let s = uds_connect(path).with_context(|| format!("connecting to {}", path.display()))?;
    let r = s.try_clone().context("cloning the socket")?;
    echo_stream(r, s)
}

/// The pipe rows: the peer's stdin and stdout.
pub(super) fn run_pipe(plan: &Plan, out: &mut Output) -> Res<()> {
    out.progress("pipe", "blocking", None);
    let mut cmd = plan.peer_command(Mechanism::Pipe);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut process = Peer::spawn(cmd, "pipe".into())?;
    let w = process
        .child
        .stdin
        .take()
        .context("the pipe peer has no stdin")?;
    let r = process
        .child
        .stdout
        .take()
        .context("the pipe peer has no stdout")?;
    let mut link = StreamLink::new(r, w);
    run_sizes(&mut link, Mechanism::Pipe, "blocking", plan, out)?;
    link.finish()?;
    drop(link);
    process.finish()
}

/// The peer of the pipe rows: echoes on its standard input and output, unbuffered.
pub(super) fn peer_pipe() -> Res<()> {
    let (r, w) = shm_host::cli::unbuffered_stdio().context("opening stdin and stdout")?;
    echo_stream(r, w)
}

/// Little-endian u64 from 8 bytes.
pub(super) fn le_u64(b: &[u8]) -> Res<u64> {
    Ok(u64::from_le_bytes(b.try_into()?))
}
