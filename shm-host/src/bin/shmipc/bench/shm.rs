//! The shm rows: this process as the server, the peer a client that echoes each buffer
//! (`shm`) or frees it and allocates a fresh one (`shm-cycle`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use shm_host::{
    Buffer, Client, ClientOptions, CreateOptions, Message, NativeSystem, PeerId, Server,
    ServerEvent, ServerOptions,
};

use super::measure::{run_sizes, Link, Peer};
use super::plan::Plan;
use super::report::{size_label, Output};
use super::{Mechanism, Mode, Res, CONNECT_TIMEOUT, PEER_IDLE, POLL, REPLY_TIMEOUT, TAG_STOP};

pub(super) type Srv = Server<NativeSystem>;

/// This process as the server; the peer a client that echoes (or frees and allocates).
pub(super) struct ShmLink<'a> {
    server: &'a Srv,
    peer: PeerId,
    process: &'a mut Peer,
    plan: &'a Plan,
    cycle: bool,
    /// Spin on `try_recv` instead of waiting in the receive mode.
    poll: bool,
    /// Echo mode: the buffer going back and forth.
    buf: Option<Buffer<NativeSystem>>,
    n: usize,
    /// The tag of every message: the payload size (the cycle peer allocates that much).
    tag: u32,
}

impl ShmLink<'_> {
    /// The peer's answer; checks on the peer and on Ctrl-C while waiting.
    pub(super) fn reply(&mut self) -> Res<Message<NativeSystem>> {
        let (server, process, plan) = (self.server, &mut *self.process, self.plan);
        wait_msg(
            self.poll,
            |t| server.recv_timeout(t),
            |waited| {
                process.check()?;
                plan.check_stop()?;
                if waited >= REPLY_TIMEOUT {
                    bail!("no answer from the peer in {} s", waited.as_secs());
                }
                Ok(())
            },
        )
    }
}

/// The next message from `recv` (a `recv_timeout`). With `poll`, spins on it with a zero
/// timeout (what `try_recv` does); otherwise waits in the receive mode, `POLL` at a time.
/// Between waits (every 2^16 polls) `tick` gets the time waited so far and may give up.
pub(super) fn wait_msg<M>(
    poll: bool,
    mut recv: impl FnMut(Duration) -> shm_host::Result<Option<M>>,
    mut tick: impl FnMut(Duration) -> Res<()>,
) -> Res<M> {
    if poll {
        let mut since: Option<Instant> = None;
        let mut spins = 0u32;
        loop {
            if let Some(m) = recv(Duration::ZERO).context("receiving")? {
                return Ok(m);
            }
            // One PAUSE per check (what the library's loop does 32 times per check).
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % (1 << 16) == 0 {
                let t0 = *since.get_or_insert_with(Instant::now);
                tick(t0.elapsed())?;
            }
        }
    }
    let mut waited = Duration::ZERO;
    loop {
        if let Some(m) = recv(POLL).context("receiving")? {
            return Ok(m);
        }
        waited += POLL;
        tick(waited)?;
    }
}

impl Link for ShmLink<'_> {
    fn prepare(&mut self, n: usize, _rounds: u64) -> Res<()> {
        self.tag = u32::try_from(n).context("payload size")?;
        if self.cycle || (self.n == n && self.buf.is_some()) {
            self.n = n;
            return Ok(());
        }
        self.buf = None; // free the previous size's buffer first
        let mut b = self
            .server
            .alloc(n)
            .with_context(|| format!("allocating {}", size_label(n)))?;
        b.resize(n)
            .with_context(|| format!("resizing to {}", size_label(n)))?;
        self.buf = Some(b);
        self.n = n;
        Ok(())
    }

    fn round(&mut self) -> Res<()> {
        if self.cycle {
            let b = self
                .server
                .alloc(self.n)
                .with_context(|| format!("allocating {}", size_label(self.n)))?;
            self.server
                .send(self.peer, b, self.tag)
                .map_err(|e| e.error)
                .context("sending")?;
            let m = self.reply()?;
            if m.tag != self.tag {
                bail!("answer has tag {}, expected {}", m.tag, self.tag);
            }
            drop(m); // frees the peer's buffer
        } else {
            let b = self.buf.take().context("no buffer (prepare first)")?;
            self.server
                .send(self.peer, b, self.tag)
                .map_err(|e| e.error)
                .context("sending")?;
            let m = self.reply()?;
            if m.buffer.len() != self.n {
                bail!("echo holds {} bytes, expected {}", m.buffer.len(), self.n);
            }
            self.buf = Some(m.buffer);
        }
        Ok(())
    }

    fn finish(&mut self) -> Res<()> {
        self.buf = None;
        let b = self.server.alloc(8).context("allocating")?;
        self.server
            .send(self.peer, b, TAG_STOP)
            .map_err(|e| e.error)
            .context("telling the peer to stop")?;
        Ok(())
    }
}

/// Accepts the peer's connection; returns its identity.
pub(super) fn wait_for_client(server: &Srv, process: &mut Peer, plan: &Plan) -> Res<PeerId> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        // Receiving handles the connection request; no message can come before it.
        if let Some(m) = server
            .recv_timeout(Duration::from_millis(5))
            .context("waiting for the peer to connect")?
        {
            bail!("unexpected message (tag {}) from {}", m.tag, m.from);
        }
        while let Some(ev) = server.try_event() {
            if let ServerEvent::Connected(id) = ev {
                return Ok(id);
            }
        }
        process.check()?;
        plan.check_stop()?;
        if Instant::now() >= deadline {
            bail!(
                "the peer did not connect within {} s",
                CONNECT_TIMEOUT.as_secs()
            );
        }
    }
}

/// The shm rows of one mode (`cycle`: the alloc -> send -> recv -> free rows).
pub(super) fn run_shm(plan: &Plan, mode: Mode, cycle: bool, out: &mut Output) -> Res<()> {
    let mech = if cycle {
        Mechanism::ShmCycle
    } else {
        Mechanism::Shm
    };
    out.progress(mech.name(), &mode.to_string(), None);
    let name = format!("bench-{}-{}-{mode}", std::process::id(), mech.name());
    let server = Server::create_with(
        &name,
        ServerOptions {
            size: plan.segment,
            // Keepalives are locked operations: keep them rare while measuring.
            heartbeat: Duration::from_secs(1),
            max_missed: 60,
            recv_mode: mode.recv_mode(),
            create: CreateOptions {
                prefault: true,
                ..CreateOptions::default()
            },
            ..ServerOptions::default()
        },
    )
    .with_context(|| format!("creating segment {name} of {}", size_label(plan.segment)))?;
    let mut cmd = plan.peer_command(mech);
    cmd.args(["--name", &name, "--mode", &mode.to_string()]);
    let mut process = Peer::spawn(cmd, format!("{} {mode}", mech.name()))?;
    let peer = wait_for_client(&server, &mut process, plan)?;
    let mut link = ShmLink {
        server: &server,
        peer,
        process: &mut process,
        plan,
        cycle,
        poll: mode == Mode::Poll,
        buf: None,
        n: 0,
        tag: 0,
    };
    run_sizes(&mut link, mech, &mode.to_string(), plan, out)?;
    link.finish()?;
    drop(link);
    process.finish()?;
    drop(server); // removes the segment
    Ok(())
}

/// The peer of the shm rows: a client echoing each buffer (or freeing it and sending a
/// fresh one of the size in its tag) until told to stop.
pub(super) fn peer_shm(name: &str, mode: Mode, cycle: bool) -> Res<()> {
    let client = Client::connect_with(
        name,
        ClientOptions {
            recv_mode: mode.recv_mode(),
            ..ClientOptions::default()
        },
    )
    .with_context(|| format!("connecting to segment {name}"))?;
    client
        .wait_connected(CONNECT_TIMEOUT)
        .context("waiting for the server to accept")?;
    // Where the system tells, the parent's id changes when the bench process is gone.
    let parent = shm_host::cli::parent_process_id();
    loop {
        let msg = wait_msg(
            mode == Mode::Poll,
            |t| client.recv_timeout(t),
            |idle| {
                if parent.is_some() && shm_host::cli::parent_process_id() != parent {
                    bail!("the bench process is gone");
                }
                if idle >= PEER_IDLE {
                    bail!("no message for {} s", idle.as_secs());
                }
                Ok(())
            },
        )?;
        let tag = msg.tag;
        if tag == TAG_STOP {
            return Ok(());
        }
        let buffer = if cycle {
            drop(msg); // free
            client
                .alloc(tag as usize)
                .with_context(|| format!("allocating {tag} bytes"))?
        } else {
            msg.buffer
        };
        client
            .send(buffer, tag)
            .map_err(|e| e.error)
            .context("sending back")?;
    }
}
