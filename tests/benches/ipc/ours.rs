//! This library's rows: this process is the server of a segment, the peer process a
//! client. Both sides busy-poll `try_recv` while a measurement runs.
//!
//! - `cycle`: the full life of a message, each way: allocate a block of the payload size,
//!   write the stamp into it, send it, receive it, free it (the peer frees the block it got
//!   and allocates a fresh one for its answer).
//! - `cached`: `cycle` with a buffer cache on both sides (`ServerOptions::cache`,
//!   `ClientOptions::cache`, default bounds): the allocations and frees mostly take no lock.
//! - `same`: one block of the payload size goes back and forth; each side checks the stamp
//!   and writes its own into it. No allocation, no free.

use std::time::{Duration, Instant};

use shm_host::{
    Buffer, CacheConfig, Client, ClientOptions, CreateOptions, Message, PeerId, RecvMode, Server,
    ServerEvent, ServerOptions,
};
use shm_tests::Peer;

use crate::link::{self, PingPong, Res, PATIENCE};
use crate::stamp::{self, Kind, Stamp};

/// Tag of every message (the stamp says what it is).
const TAG: u32 = 1;
/// Bit of the sequence number set in answers.
pub const ANSWER: u64 = 1 << 63;

/// Server options for a segment holding messages of up to `max_len` bytes, `live` of
/// them at once. Keepalives are locked operations: they are kept rare while measuring.
pub fn server_options(max_len: usize, live: usize) -> ServerOptions {
    server_options_cached(max_len, live, false)
}

/// [`server_options`], with a buffer cache if `cached`.
pub fn server_options_cached(max_len: usize, live: usize, cached: bool) -> ServerOptions {
    let size = (max_len + 4096) * live + (8 << 20);
    ServerOptions {
        size,
        heartbeat: Duration::from_secs(1),
        max_missed: 60,
        recv_mode: RecvMode::Blocking,
        create: CreateOptions {
            prefault: true,
            ..CreateOptions::default()
        },
        cache: cached.then(CacheConfig::default),
        ..ServerOptions::default()
    }
}

/// Waits until `want` clients have connected; their identities, in connection order.
pub fn wait_for_clients(server: &Server, want: usize, peers: &mut [Peer]) -> Res<Vec<PeerId>> {
    let deadline = Instant::now() + PATIENCE;
    let mut ids = Vec::new();
    while ids.len() < want {
        // Receiving handles the connection requests; no message comes before them.
        if let Some(m) = server
            .recv_timeout(Duration::from_millis(5))
            .map_err(|e| format!("waiting for clients: {e}"))?
        {
            return Err(format!(
                "unexpected message (tag {}) from {}",
                m.tag, m.from
            ));
        }
        while let Some(ev) = server.try_event() {
            if let ServerEvent::Connected(id) = ev {
                ids.push(id);
            }
        }
        for p in peers.iter_mut() {
            link::check_alive(p)?;
        }
        if Instant::now() > deadline {
            return Err(format!("{} of {want} clients connected", ids.len()));
        }
    }
    Ok(ids)
}

/// Sends a control message (pause or stop) of `kind` to `to`.
pub fn send_control(server: &Server, to: PeerId, kind: Kind) -> Res<()> {
    let b = server
        .alloc_from(&Stamp::control(kind).bytes())
        .map_err(|e| format!("allocating a control message: {e}"))?;
    server
        .send(to, b, TAG)
        .map_err(|e| format!("sending a control message: {}", e.error))
}

/// The server end of the `cycle` or `same` row.
pub struct Ours {
    server: Server,
    client: PeerId,
    peer: Peer,
    cycle: bool,
    /// `same`: the block going back and forth, of `held_len` bytes.
    held: Option<Buffer>,
    held_len: usize,
}

impl Ours {
    /// Creates the segment (payloads up to `max_len`) and starts the peer; `mode` is the
    /// row's name (`cycle`, `cached` or `same`).
    pub fn start(mode: &str, max_len: usize) -> Res<Ours> {
        let cycle = mode != "same";
        let name = link::unique(mode);
        let opts = server_options_cached(max_len, 3, mode == "cached");
        let server = Server::create_with(&name, opts)
            .map_err(|e| format!("creating segment {name}: {e}"))?;
        let mut peers = [link::spawn_peer("ours", &[&name, mode])?];
        let client = wait_for_clients(&server, 1, &mut peers)?[0];
        let [peer] = peers;
        Ok(Ours {
            server,
            client,
            peer,
            cycle,
            held: None,
            held_len: 0,
        })
    }

    /// The block to send: a fresh one (`cycle`), or the held one, of at least `len` bytes.
    fn block(&mut self, len: usize) -> Res<Buffer> {
        let fresh = |server: &Server| {
            server
                .alloc(len)
                .map_err(|e| format!("allocating {len} bytes: {e}"))
        };
        if self.cycle {
            return fresh(&self.server);
        }
        match self.held.take() {
            Some(b) if self.held_len == len => Ok(b),
            old => {
                drop(old); // the previous size's block, freed before the next is taken
                let mut b = fresh(&self.server)?;
                b.resize(stamp::LEN).map_err(|e| e.to_string())?;
                self.held_len = len;
                Ok(b)
            }
        }
    }
}

/// Writes `st` into the first bytes of `b` (appending them to an empty block).
fn put_stamp(b: &mut Buffer, st: Stamp) -> Res<()> {
    if b.len() < stamp::LEN {
        b.extend_from_slice(&st.bytes())
    } else {
        b.as_mut_slice()
            .map(|s| s[..stamp::LEN].copy_from_slice(&st.bytes()))
    }
    .map_err(|e| format!("writing the stamp: {e}"))
}

/// Checks that `m` is the answer to message `seq` of `len` bytes.
fn check_answer(m: &Message, len: usize, seq: u64) -> Res<()> {
    let st = Stamp::read(&m.buffer)?;
    if st != Stamp::data(seq | ANSWER, len) || m.buffer.capacity() < len {
        return Err(format!(
            "answer {st:?} in a block of {} bytes; expected seq {seq}, {len} bytes",
            m.buffer.capacity()
        ));
    }
    Ok(())
}

impl PingPong for Ours {
    fn round_trip(&mut self, len: usize, seq: u64) -> Res<()> {
        let mut b = self.block(len)?;
        put_stamp(&mut b, Stamp::data(seq, len))?;
        self.server
            .send(self.client, b, TAG)
            .map_err(|e| format!("sending: {}", e.error))?;
        let server = &self.server;
        let m = link::spin_until(&mut self.peer, || {
            server.try_recv().map_err(|e| format!("receiving: {e}"))
        })?;
        check_answer(&m, len, seq)?;
        if !self.cycle {
            self.held = Some(m.buffer);
        } // else: dropping the message frees its block
        Ok(())
    }

    fn pause(&mut self) -> Res<()> {
        send_control(&self.server, self.client, Kind::Pause)
    }

    fn stop(&mut self) -> Res<()> {
        self.held = None;
        send_control(&self.server, self.client, Kind::Stop)
    }

    fn peer(&mut self) -> &mut Peer {
        &mut self.peer
    }
}

/// A peer's client of segment `name` (its `recv_timeout` waits block), once the
/// server has accepted it.
pub fn connect(name: &str) -> Res<Client> {
    connect_cached(name, false)
}

/// [`connect`], with a buffer cache if `cached`.
fn connect_cached(name: &str, cached: bool) -> Res<Client> {
    let client = Client::connect_with(
        name,
        ClientOptions {
            recv_mode: RecvMode::Blocking,
            cache: cached.then(CacheConfig::default),
            ..ClientOptions::default()
        },
    )
    .map_err(|e| format!("connecting to {name}: {e}"))?;
    client
        .wait_connected(PATIENCE)
        .map_err(|e| format!("waiting for the server: {e}"))?;
    Ok(client)
}

/// The peer of the `cycle`, `cached` and `same` rows: a client answering every data
/// message, with a fresh block (`cycle`, `cached`) or the same one (`same`), until told
/// to stop. At its start and after a pause it blocks until the bench resumes it.
pub fn peer(name: &str, mode: &str) -> Res<()> {
    let cycle = mode != "same";
    let client = connect_cached(name, mode == "cached")?;
    let mut received = 0u64;
    link::wait_resume()?;
    loop {
        let m = loop {
            if let Some(m) = client.try_recv().map_err(|e| e.to_string())? {
                break m;
            }
        };
        let st = Stamp::read(&m.buffer)?;
        match st.kind {
            Kind::Pause => {
                // Messages queue in order: no later one can overtake the pause.
                drop(m);
                link::wait_resume()?;
            }
            Kind::Stop => break,
            Kind::Data => {
                received += 1;
                let len = st.len as usize;
                if m.buffer.capacity() < len {
                    return Err(format!("{st:?} came in a block of {}", m.buffer.capacity()));
                }
                let answer = Stamp::data(st.seq | ANSWER, len);
                let mut b = if cycle {
                    drop(m); // frees the block
                    client
                        .alloc(len)
                        .map_err(|e| format!("allocating {len} bytes: {e}"))?
                } else {
                    m.buffer
                };
                put_stamp(&mut b, answer)?;
                client
                    .send(b, TAG)
                    .map_err(|e| format!("answering: {}", e.error))?;
            }
        }
    }
    println!("done {received}");
    Ok(())
}
