//! [`Client`]: connects to a segment's server, sends to it and receives from it, takes
//! its keepalives in a background thread, and reconnects after a server restart.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shm_core::format::{KIND_CLIENT, P_DISCONNECTED};
use shm_core::ParticipantId;
use shm_core::{CacheConfig, Control, Error, Offset, Received, SendMode};

use crate::buffer::Buffer;
use crate::endpoint::{Endpoint, RecvMode};
use crate::error::{HostError, Result};
use crate::peer::{Message, PeerId, SendError};
use crate::segment::{Attachment, Segment};
use crate::system::System;
use crate::NativeSystem;

/// Client settings.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// Slots in the client's queue (a power of two).
    pub queue_capacity: u32,
    /// How `recv` waits.
    pub recv_mode: RecvMode,
    /// How long to wait for the server to answer a connection request.
    pub connect_timeout: Duration,
    /// A process cache for this client's buffers (see "Process caches" in the README):
    /// allocations and frees of buffers, the ones received included, mostly take no
    /// lock. `None` (the default): every buffer comes from and goes back to the heap.
    pub cache: Option<CacheConfig>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            queue_capacity: 256,
            recv_mode: RecvMode::default(),
            connect_timeout: Duration::from_secs(5),
            cache: None,
        }
    }
}

const CONNECTING: u32 = 0;
const CONNECTED: u32 = 1;
const DISCONNECTED: u32 = 2;

struct Inner<S: System> {
    ep: Endpoint<S>,
    /// Server generation we are connected to.
    generation: AtomicU32,
    /// CONNECTED or DISCONNECTED.
    state: AtomicU32,
}

/// A client of a segment's server.
///
/// `Client` is `Send` and `Sync`; receiving is serialised internally (one consumer per
/// queue). A background thread takes the server's keepalives, so the server sees a live
/// client even when the application does not call `recv` for a while, and runs the
/// watchdog when the server dies.
///
/// When the server restarts (a new generation in the same segment), sends fail with
/// [`shm_core::Error::ServerRestarted`]; [`reconnect`](Client::reconnect) joins the new one.
/// After a clean server shutdown the segment's name is gone: connect a new `Client`.
pub struct Client<S: System = NativeSystem> {
    inner: Arc<Inner<S>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Client<NativeSystem> {
    /// Connects to the server of segment `name`.
    ///
    /// ```no_run
    /// use std::io::Write;
    /// let client = shm_host::Client::connect("example")?;
    /// let mut buf = client.alloc(5)?;
    /// buf.write_all(b"hello")?;
    /// client.send(buf, 1)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(name: &str) -> Result<Self> {
        Self::connect_with(name, ClientOptions::default())
    }

    /// Like [`connect`](Client::connect) with all options.
    pub fn connect_with(name: &str, opts: ClientOptions) -> Result<Self> {
        Self::connect_on(NativeSystem, name, opts)
    }
}

impl<S: System> Client<S> {
    /// Connects to the server of segment `name` on `system`. Fails with
    /// [`HostError::NotFound`] if the segment does not exist and with
    /// [`shm_core::Error::NoServer`] if no live server runs in it.
    ///
    /// Returns once the connection request is in the server's queue: messages sent from
    /// now on reach the server after it (the queue is FIFO), so there is no need to wait
    /// for the answer. [`wait_connected`](Client::wait_connected) waits for it.
    pub fn connect_on(system: S, name: &str, opts: ClientOptions) -> Result<Self> {
        let name = crate::name::parse(name)?;
        let seg = Segment::open(system, &name)?;
        let st = seg.server_status();
        if !st.running || !seg.is_alive(st.id) {
            return Err(Error::NoServer.into());
        }
        let att = Arc::new(Attachment::new(seg, opts.cache)?);
        let ep = Endpoint::create(att, KIND_CLIENT, opts.queue_capacity, opts.recv_mode)?;
        let inner = Arc::new(Inner {
            ep,
            generation: AtomicU32::new(0),
            state: AtomicU32::new(DISCONNECTED),
        });
        if let Err(e) = inner.announce() {
            let _ = inner.ep.close();
            return Err(e);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let worker = Arc::clone(&inner);
        let period = Duration::from_millis(u64::from(st.heartbeat_ms / 2).clamp(5, 1000));
        let thread = std::thread::Builder::new()
            .name("shm-client-keepalive".into())
            .spawn(move || loop {
                match stopped.recv_timeout(period) {
                    Err(RecvTimeoutError::Timeout) => worker.keepalive(),
                    _ => return,
                }
            })
            .map_err(|e| HostError::Os {
                call: "spawn",
                code: e.raw_os_error().unwrap_or(0),
            })?;
        Ok(Client {
            inner,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The segment.
    pub fn segment(&self) -> &Segment<S> {
        &self.inner.ep.att.seg
    }

    /// This client's identity.
    pub fn id(&self) -> PeerId {
        self.inner.ep.att.incarnation().into()
    }

    /// Server generation this client is connected to.
    pub fn generation(&self) -> u32 {
        self.inner.generation.load(Relaxed)
    }

    /// Whether the client is connected (or connecting) to the current server.
    pub fn is_connected(&self) -> bool {
        self.inner.server().is_ok()
    }

    /// A buffer for at least `size` bytes of data (growth policy and default headroom).
    pub fn alloc(&self, size: usize) -> Result<Buffer<S>> {
        self.inner.still_connected()?;
        self.inner.ep.alloc(size)
    }

    /// Like [`alloc`](Self::alloc), but on a full segment waits up to `timeout` for
    /// other processes to free memory, as the original design's malloc blocks; fails with
    /// [`shm_core::Error::Timeout`] when none comes, and at once with
    /// [`shm_core::Error::TooLarge`] for a request that can never fit.
    pub fn alloc_timeout(&self, size: usize, timeout: Duration) -> Result<Buffer<S>> {
        self.inner.still_connected()?;
        self.inner.ep.alloc_timeout(size, timeout)
    }

    /// A buffer holding a copy of `data`.
    pub fn alloc_from(&self, data: &[u8]) -> Result<Buffer<S>> {
        self.inner.still_connected()?;
        self.inner.ep.alloc_from(data)
    }

    /// Keeps `buffer` in the segment after every process has exited: its block becomes
    /// a kept block, owned by the segment instead of by this process, which no reclaim
    /// frees. Returns its offset, valid in every process and, on a file-backed segment,
    /// across restarts (see the README, "File-backed segments"). Name it with
    /// [`set_kept_root`](Self::set_kept_root) so that a later process finds it; get it
    /// back with [`take`](Self::take).
    ///
    /// A buffer other processes co-own (a broadcast) is copied first. The buffer is
    /// consumed, so nothing can write the block until it is taken; on error its block is
    /// released as when a buffer is dropped.
    pub fn keep(&self, buffer: Buffer<S>) -> Result<Offset> {
        self.inner.ep.keep(buffer)
    }

    /// Takes kept block `block` back as a buffer of this process (its data as kept). If it
    /// was the kept root, the kept root is cleared in the same step. Taking a block that
    /// is not kept, or was taken already, fails with [`shm_core::Error::NotKept`]. A kept
    /// block whose message header does not describe data inside it (not kept from a
    /// buffer) is freed and reported ([`HostError::BadMessage`]), as a received one is.
    pub fn take(&self, block: Offset) -> Result<Buffer<S>> {
        self.inner.ep.take(block)
    }

    /// Names kept block `root` as the kept root, where a later process finds the kept
    /// data ([`kept_root`](Self::kept_root)); `None` clears it. A block that is not kept
    /// is refused with [`shm_core::Error::NotKept`].
    pub fn set_kept_root(&self, root: Option<Offset>) -> Result<()> {
        self.inner.ep.set_kept_root(root)
    }

    /// The kept root, if one is set.
    pub fn kept_root(&self) -> Option<Offset> {
        self.inner.ep.att.heap().kept_root()
    }

    /// Sends `buffer` to the server with `tag`: ownership moves, nothing is copied. On
    /// failure (full queue, server gone or restarted, [`HostError::ForeignBuffer`] for a
    /// buffer of another server or client) the buffer comes back in the error.
    pub fn send(&self, buffer: Buffer<S>, tag: u32) -> Result<(), SendError<S>> {
        self.send_at(buffer, tag).map(|_| ())
    }

    /// Like [`send`](Client::send), then waits until the server has taken the message
    /// from its queue (or `timeout` passes: [`HostError::Timeout`]).
    pub fn send_and_wait(&self, buffer: Buffer<S>, tag: u32, timeout: Duration) -> Result<()> {
        let (server, position) = self.send_at(buffer, tag)?;
        let queue = self.inner.ep.att.heap().participant(server.at)?.queue;
        let deadline = Instant::now() + timeout;
        while !queue.taken(position) {
            if Instant::now() >= deadline {
                return Err(HostError::Timeout);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    fn send_at(&self, buffer: Buffer<S>, tag: u32) -> Result<(ParticipantId, u32), SendError<S>> {
        let server = match self.inner.server() {
            Ok(s) => s,
            Err(error) => return Err(SendError { buffer, error }),
        };
        if !buffer.is_in(&self.inner.ep.att) {
            return Err(SendError {
                buffer,
                error: HostError::ForeignBuffer,
            });
        }
        let ep = &self.inner.ep;
        match ep.att.heap().send(
            ep.att.me(),
            server,
            buffer.offset(),
            tag,
            SendMode::Give,
            ep.waker(),
        ) {
            Ok(position) => {
                buffer.into_sent();
                Ok((server, position))
            }
            Err(e) => Err(SendError {
                buffer,
                error: e.into(),
            }),
        }
    }

    /// Waits for the next message from the server. Returns an error once the server is
    /// gone (stopped, restarted, or dead and reclaimed by the keepalive thread) or this
    /// client was disconnected.
    pub fn recv(&self) -> Result<Message<S>> {
        loop {
            if let Some(m) = self.inner.recv(None)? {
                return Ok(m);
            }
        }
    }

    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Result<Option<Message<S>>> {
        self.inner.recv(Some(Duration::ZERO))
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message<S>>> {
        self.inner.recv(Some(timeout))
    }

    /// Waits until the server has accepted the connection (or refused it: then
    /// [`HostError::Disconnected`]). Messages that arrive meanwhile are dropped; call this
    /// before expecting any.
    pub fn wait_connected(&self, timeout: Duration) -> Result<()> {
        self.inner.wait_connected(timeout)
    }

    /// Connects again, to the server now registered in the segment (after a restart).
    pub fn reconnect(&self) -> Result<()> {
        self.inner.announce()
    }
}

impl<S: System> Inner<S> {
    /// Fails with [`HostError::Disconnected`] once the server disconnected this client
    /// (for example after it stopped answering keepalives).
    fn still_connected(&self) -> Result<()> {
        let heap = self.ep.att.heap();
        match heap.participant(self.ep.at()) {
            Ok(p) if p.info().state != P_DISCONNECTED => Ok(()),
            Ok(_) => Err(HostError::Disconnected),
            Err(e) => Err(e.into()),
        }
    }

    /// The server's participant, if the server we connected to still runs.
    fn server(&self) -> Result<ParticipantId> {
        let heap = self.ep.att.heap();
        let st = heap.server_status();
        if !st.running {
            return Err(Error::NoServer.into());
        }
        if st.generation != self.generation.load(Relaxed) {
            return Err(Error::ServerRestarted.into());
        }
        if self.state.load(Relaxed) == DISCONNECTED {
            return Err(HostError::Disconnected);
        }
        Ok(ParticipantId {
            at: st.participant,
            owner: st.owner,
        })
    }

    /// Puts a `Connect` request in the current server's queue.
    fn announce(&self) -> Result<()> {
        let heap = self.ep.att.heap();
        let st = heap.server_status();
        if !st.running || !self.ep.att.seg.is_alive(st.id) {
            return Err(Error::NoServer.into());
        }
        let gen = heap.connect(self.ep.att.me(), self.ep.at(), self.ep.waker())?;
        self.generation.store(gen, Relaxed);
        self.state.store(CONNECTING, Relaxed);
        Ok(())
    }

    /// Waits for the server's `Connected` answer.
    fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let heap = self.ep.att.heap();
        if self.state.load(Relaxed) == CONNECTED {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ep.next(Some(left))? {
                None => return Err(HostError::Timeout),
                Some(Received::Control {
                    control: Control::Connected,
                    ..
                }) => {
                    self.state.store(CONNECTED, Relaxed);
                    return Ok(());
                }
                Some(Received::Control {
                    control: Control::Disconnected,
                    ..
                }) => return Err(HostError::Disconnected),
                Some(Received::Message { block, .. }) => {
                    // Left over from a previous connection: ours now, not wanted.
                    let _ = heap.release(self.ep.att.me(), block);
                }
                Some(Received::Control { .. }) => {}
            }
        }
    }

    /// Receives, waiting at most `timeout` (`None`: until a message or an error). The wait
    /// is cut into slices so that a server that went away is noticed: then the call fails
    /// instead of waiting forever.
    fn recv(&self, timeout: Option<Duration>) -> Result<Option<Message<S>>> {
        const SLICE: Duration = Duration::from_millis(100);
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let slice = match deadline {
                None => SLICE,
                Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            };
            match self.recv_once(slice)? {
                Some(m) => return Ok(Some(m)),
                None => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                    // Nothing came: is there still a server to wait for?
                    self.server()?;
                    self.still_connected()?;
                }
            }
        }
    }

    fn recv_once(&self, timeout: Duration) -> Result<Option<Message<S>>> {
        loop {
            let Some(r) = self.ep.next(Some(timeout))? else {
                return Ok(None);
            };
            match r {
                Received::Message {
                    block,
                    tag,
                    from,
                    shared,
                } => {
                    return self.ep.message(block, tag, from, shared).map(Some);
                }
                Received::Control {
                    control: Control::Disconnected | Control::ServerStopping,
                    ..
                } => {
                    self.state.store(DISCONNECTED, Relaxed);
                    return Err(HostError::Disconnected);
                }
                Received::Control {
                    control: Control::Connected,
                    ..
                } => self.state.store(CONNECTED, Relaxed),
                Received::Control { .. } => {}
            }
        }
    }

    /// Background work: take the keepalive; if the server died, reclaim it.
    fn keepalive(&self) {
        let att = &self.ep.att;
        let heap = att.heap();
        let _ = heap.take_keepalive(att.me(), self.ep.at());
        // An idle client gives its cached buffers back when the heap runs low.
        att.cache_drain_if_asked();
        let st = heap.server_status();
        if st.running && !att.seg.is_alive(st.id) {
            let _ = heap.reclaim_dead();
        }
    }
}

impl<S: System> Drop for Client<S> {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let inner = &self.inner;
        if let Ok(server) = inner.server() {
            let _ = inner.ep.att.heap().send_control(
                inner.ep.att.me(),
                server,
                Control::Disconnect,
                inner.ep.at(),
                inner.ep.waker(),
            );
        }
        let _ = inner.ep.close();
    }
}
