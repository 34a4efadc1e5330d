//! [`Server`]: creates (or takes over) a segment, accepts clients, receives and sends
//! messages; its watch over clients (heartbeats) is in the `watch` module.

mod events;
mod watch;

pub use events::{BroadcastReport, DeathReason, ServerEvent};

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use shm_core::format::KIND_SERVER;
use shm_core::ParticipantId;
use shm_core::{CacheConfig, Control, Error, HeapConfig, Incarnation, Offset, Received, SendMode};

use crate::buffer::Buffer;
use crate::endpoint::{Endpoint, RecvMode};
use crate::error::{HostError, NamedResult, Result};
use crate::peer::{Message, PeerId, SendError};
use crate::segment::{Attachment, Segment};
use crate::system::{CreateOptions, System};
use crate::NativeSystem;

/// Server settings.
#[derive(Clone, Copy, Debug)]
pub struct ServerOptions {
    /// Segment size in bytes (when it is created).
    pub size: usize,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Missed heartbeats after which a client is declared unresponsive and disconnected
    /// (its memory stays its own until its process is gone).
    pub max_missed: u32,
    /// Slots in the server's queue (a power of two).
    pub queue_capacity: u32,
    /// How `recv` waits.
    pub recv_mode: RecvMode,
    /// Segment creation options.
    pub create: CreateOptions,
    /// Heap options.
    pub heap: HeapConfig,
    /// Bytes reserved for keepalive packets, so a full heap cannot stop heartbeats.
    pub keepalive_reserve: u32,
    /// Owner cells allocated for the server at start: how many blocks it can hold (messages
    /// received and not yet dropped, buffers it allocated) before its owner array has to
    /// move to a larger block.
    pub owner_cells: u32,
    /// Kill a client that stopped answering keepalives, where the system can confirm which
    /// process it is (Linux: the process with its pid in this PID namespace holds its
    /// liveness mark). Its memory comes back once it is dead. Off by default: an
    /// unresponsive client is only disconnected.
    pub kill_unresponsive: bool,
    /// A process cache for the server's buffers, as [`ClientOptions::cache`](crate::ClientOptions::cache).
    /// `None` by default.
    pub cache: Option<CacheConfig>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            size: 16 << 20,
            heartbeat: Duration::from_millis(100),
            max_missed: 20,
            queue_capacity: 1024,
            recv_mode: RecvMode::default(),
            create: CreateOptions::default(),
            heap: HeapConfig::default(),
            keepalive_reserve: 16 * 1024,
            owner_cells: 4096,
            kill_unresponsive: false,
            cache: None,
        }
    }
}

/// A connected client, as the server tracks it.
#[derive(Clone, Copy, Debug)]
struct ClientEntry {
    /// Its participant and owner.
    participant: ParticipantId,
    /// Heartbeats that found its participant gone; the first one waits for the
    /// `Disconnect` that a clean exit leaves in our queue.
    gone_beats: u32,
}

struct Inner<S: System> {
    ep: Endpoint<S>,
    opts: ServerOptions,
    clients: Mutex<HashMap<PeerId, ClientEntry>>,
    /// Held by a receiving thread from taking an entry off the queue until it has handled
    /// it if it is a control (a `Connect` is accepted and its client registered), so that
    /// another receiver cannot handle the client's next message first and find it
    /// unknown.
    receiving: Mutex<()>,
    /// Clients disconnected for missing keepalives whose processes still live: watched
    /// until they die, to report it.
    unresponsive: Mutex<HashMap<PeerId, Incarnation>>,
    /// Set when the segment can no longer be used (truncated under the mapping).
    broken: std::sync::OnceLock<(u64, u64)>,
    events_tx: Mutex<Sender<ServerEvent>>,
    events_rx: Mutex<Receiver<ServerEvent>>,
    generation: u32,
}

/// The server of a segment.
///
/// `Server` is `Send` and `Sync`: every method takes `&self`. Receiving is serialised
/// internally (a queue has one consumer); sending and allocating may happen from any
/// number of threads at once.
///
/// Connections complete while the server receives: `recv` handles clients' connect and
/// disconnect requests itself (they show up as [`ServerEvent`]s) and returns only
/// messages. A background thread sends heartbeats and reclaims dead clients.
///
/// Dropping the server tells connected clients it is stopping, withdraws it from the
/// segment and removes the segment's name ([`System::withdraw`]: a file-backed segment
/// stays, for the next server).
pub struct Server<S: System = NativeSystem> {
    inner: Arc<Inner<S>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server<NativeSystem> {
    /// Creates segment `name` of `size` bytes (or takes over one whose server died) and
    /// starts serving.
    ///
    /// ```no_run
    /// let server = shm_host::Server::create("example", 1 << 20)?;
    /// let msg = server.recv()?;
    /// println!("{} sent {} bytes", msg.from, msg.buffer.len());
    /// # Ok::<(), shm_host::HostError>(())
    /// ```
    pub fn create(name: &str, size: usize) -> Result<Self> {
        Self::create_with(
            name,
            ServerOptions {
                size,
                ..ServerOptions::default()
            },
        )
    }

    /// Like [`create`](Server::create) with all options.
    pub fn create_with(name: &str, opts: ServerOptions) -> Result<Self> {
        Self::create_on(NativeSystem, name, opts)
    }
}

impl<S: System> Server<S> {
    /// Creates or takes over segment `name` on `system`.
    ///
    /// An existing segment of that name is taken over only when it belongs to the same
    /// user, its permissions are no wider than `opts.create.mode`, and its server is known
    /// to be dead; otherwise [`HostError::TakeoverRefused`] says which rule failed.
    pub fn create_on(system: S, name: &str, opts: ServerOptions) -> Result<Self> {
        let name = crate::name::parse(name)?;
        let seg = match Segment::create(system.clone(), &name, opts.size, opts.create, opts.heap) {
            Ok(s) => s,
            Err(HostError::Exists { .. }) => {
                // A previous server's segment: take it over if that server is dead.
                let s = Segment::open(system.clone(), &name)?;
                system
                    .check_takeover(&name, s.mapping(), &opts.create)
                    .named(&name)?;
                let st = s.server_status();
                if st.running && s.is_alive(st.id) {
                    return Err(HostError::TakeoverRefused {
                        name: name.as_str().to_owned(),
                        why: crate::Refusal::ServerAlive,
                    });
                }
                s.heap_static().reclaim_dead()?;
                s
            }
            Err(e) => return Err(e),
        };
        let att = Arc::new(Attachment::new(seg, opts.cache)?);
        let ep = Endpoint::create(
            Arc::clone(&att),
            KIND_SERVER,
            opts.queue_capacity,
            opts.recv_mode,
        )?;
        let heap = att.heap();
        let heartbeat_ms = u32::try_from(opts.heartbeat.as_millis()).unwrap_or(u32::MAX);
        let generation = match heap.start_server(att.me(), ep.at(), heartbeat_ms, opts.max_missed) {
            Ok(g) => g,
            Err(e) => {
                let _ = ep.close();
                return Err(e.into());
            }
        };
        // Sized up front so holding messages never moves the owner array; keepalives come
        // from the reserve (without it they still work until the heap fills).
        let _ = heap.reserve_cells(att.me(), opts.owner_cells);
        let _ = heap.reserve(att.me(), opts.keepalive_reserve);
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            ep,
            opts,
            clients: Mutex::new(HashMap::new()),
            receiving: Mutex::new(()),
            unresponsive: Mutex::new(HashMap::new()),
            broken: std::sync::OnceLock::new(),
            events_tx: Mutex::new(tx),
            events_rx: Mutex::new(rx),
            generation,
        });
        let (stop, stopped) = mpsc::channel();
        let worker = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("shm-server-heartbeat".into())
            .spawn(move || worker.heartbeat_loop(stopped))
            .map_err(|e| HostError::Os {
                call: "spawn",
                code: e.raw_os_error().unwrap_or(0),
            })?;
        Ok(Server {
            inner,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The segment.
    pub fn segment(&self) -> &Segment<S> {
        &self.inner.ep.att.seg
    }

    /// This server's generation (incremented at every server start in the segment).
    pub fn generation(&self) -> u32 {
        self.inner.generation
    }

    /// This server's identity in the segment.
    pub fn id(&self) -> PeerId {
        self.inner.ep.att.incarnation().into()
    }

    /// A buffer for at least `size` bytes of data (growth policy and default headroom).
    pub fn alloc(&self, size: usize) -> Result<Buffer<S>> {
        self.inner.usable()?;
        self.inner.ep.alloc(size)
    }

    /// Like [`alloc`](Self::alloc), but on a full segment waits up to `timeout` for
    /// other processes to free memory, as the original design's malloc blocks; fails with
    /// [`shm_core::Error::Timeout`] when none comes, and at once with
    /// [`shm_core::Error::TooLarge`] for a request that can never fit.
    pub fn alloc_timeout(&self, size: usize, timeout: Duration) -> Result<Buffer<S>> {
        self.inner.usable()?;
        self.inner.ep.alloc_timeout(size, timeout)
    }

    /// A buffer holding a copy of `data`.
    pub fn alloc_from(&self, data: &[u8]) -> Result<Buffer<S>> {
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

    /// Free bytes of the segment plus the server's unused keepalive reserve (whole blocks,
    /// headers included).
    ///
    /// Keepalive packets are cut from the reserve and return to the general heap when
    /// clients free them, and the reserve is topped up now and then, so plain free bytes
    /// drift with heartbeats; this sum does not. Once every client is gone it is back to
    /// its value from before they came: nothing a client held is lost (unless the server
    /// held more than [`ServerOptions::owner_cells`] blocks at once, which moves its owner
    /// array to a larger block).
    pub fn available_bytes(&self) -> Result<u64> {
        let heap = self.inner.ep.att.heap();
        let free = u64::from(heap.stats()?.free_bytes);
        let reserve = heap.process(self.inner.ep.att.incarnation().slot)?.reserve;
        let reserve_block = if reserve == 0 {
            0
        } else {
            u64::from(heap.block_len(Offset::new(reserve))? + heap.block_header_size())
        };
        Ok(free + reserve_block)
    }

    /// The connected clients.
    pub fn clients(&self) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self.inner.lock_clients().keys().copied().collect();
        v.sort();
        v
    }

    /// Waits for the next message.
    pub fn recv(&self) -> Result<Message<S>> {
        loop {
            if let Some(m) = self.recv_timeout(Duration::from_secs(3600))? {
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

    /// Sends `buffer` to `client` with `tag`: ownership moves, nothing is copied. On
    /// failure the buffer comes back inside the error: `QueueFull` when the client is
    /// behind, `PeerGone` when that client (that incarnation: a newer process in the same
    /// slot is another client) is no longer connected, [`HostError::ForeignBuffer`] for
    /// a buffer of another server or client.
    pub fn send(&self, client: PeerId, buffer: Buffer<S>, tag: u32) -> Result<(), SendError<S>> {
        if let Err(error) = self.inner.usable() {
            return Err(SendError { buffer, error });
        }
        if !buffer.is_in(&self.inner.ep.att) {
            return Err(SendError {
                buffer,
                error: HostError::ForeignBuffer,
            });
        }
        let Some(entry) = self.inner.lock_clients().get(&client).copied() else {
            // Ids come from connections and messages: one not connected now has left, was
            // reclaimed or was disconnected. Its slot may hold someone else already.
            return Err(SendError {
                buffer,
                error: Error::PeerGone.into(),
            });
        };
        let ep = &self.inner.ep;
        match ep.att.heap().send(
            ep.att.me(),
            entry.participant,
            buffer.offset(),
            tag,
            SendMode::Give,
            ep.waker(),
        ) {
            Ok(_) => {
                buffer.into_sent();
                Ok(())
            }
            Err(e) => Err(SendError {
                buffer,
                error: e.into(),
            }),
        }
    }

    /// Sends the same bytes to every connected client without copying: each becomes a
    /// co-owner of the block, which is freed when the last owner drops it. The server
    /// keeps its own reference (writing to it afterwards copies it first). A buffer of
    /// another server or client reaches nobody ([`HostError::ForeignBuffer`]).
    pub fn broadcast(&self, buffer: &Buffer<S>, tag: u32) -> BroadcastReport {
        let clients: Vec<(PeerId, ParticipantId)> = self
            .inner
            .lock_clients()
            .iter()
            .map(|(k, v)| (*k, v.participant))
            .collect();
        let ep = &self.inner.ep;
        let mut report = BroadcastReport::default();
        if let Some(&(mapped, now)) = self.inner.broken.get() {
            for (id, _) in clients {
                report
                    .failed
                    .push((id, HostError::Truncated { mapped, now }));
            }
            return report;
        }
        if !buffer.is_in(&ep.att) {
            for (id, _) in clients {
                report.failed.push((id, HostError::ForeignBuffer));
            }
            return report;
        }
        // Co-owned from now on: when dropped, it goes back through the locked release.
        buffer.mark_shared();
        for (id, at) in clients {
            match ep.att.heap().send(
                ep.att.me(),
                at,
                buffer.offset(),
                tag,
                SendMode::Share,
                ep.waker(),
            ) {
                Ok(_) => report.sent.push(id),
                Err(e) => report.failed.push((id, e.into())),
            }
        }
        report
    }

    /// The next event, if any.
    pub fn try_event(&self) -> Option<ServerEvent> {
        self.inner
            .events_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_recv()
            .ok()
    }

    /// The next event, waiting at most `timeout`.
    pub fn event_timeout(&self, timeout: Duration) -> Option<ServerEvent> {
        self.inner
            .events_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recv_timeout(timeout)
            .ok()
    }

    /// Writes the segment through to its backing store (see [`Segment::flush`]).
    pub fn flush(&self) -> Result<()> {
        self.segment().flush()
    }

    /// Runs the watchdog now: reclaims every dead process (a lock it held is broken
    /// on the way). Returns how many were reclaimed.
    pub fn watchdog(&self) -> Result<u32> {
        self.inner.tick();
        Ok(self.inner.ep.att.heap().reclaim_dead()?)
    }
}

impl<S: System> Inner<S> {
    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, ClientEntry>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_unresponsive(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Incarnation>> {
        self.unresponsive.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails once the segment was found truncated.
    fn usable(&self) -> Result<()> {
        match self.broken.get() {
            Some(&(mapped, now)) => Err(HostError::Truncated { mapped, now }),
            None => Ok(()),
        }
    }

    fn event(&self, e: ServerEvent) {
        let _ = self
            .events_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(e);
    }

    fn recv(&self, timeout: Option<Duration>) -> Result<Option<Message<S>>> {
        let heap = self.ep.att.heap();
        loop {
            self.usable()?;
            let receiving = self.receiving.lock().unwrap_or_else(|p| p.into_inner());
            let Some(r) = self.ep.next(timeout)? else {
                return Ok(None);
            };
            match r {
                Received::Message {
                    block,
                    tag,
                    from,
                    shared,
                } => {
                    drop(receiving);
                    return self.ep.message(block, tag, from, shared).map(Some);
                }
                Received::Control {
                    control: Control::Connect,
                    participant,
                } => {
                    if let Ok(p) = heap.accept(self.ep.att.me(), participant, self.ep.waker()) {
                        let id = PeerId::from(p.owner);
                        self.lock_clients().insert(
                            id,
                            ClientEntry {
                                participant: p.id(),
                                gone_beats: 0,
                            },
                        );
                        self.event(ServerEvent::Connected(id));
                    }
                }
                Received::Control {
                    control: Control::Disconnect,
                    participant,
                } => {
                    let gone = {
                        let mut clients = self.lock_clients();
                        let id = clients
                            .iter()
                            .find(|(_, c)| c.participant.at == participant)
                            .map(|(id, _)| *id);
                        if let Some(id) = id {
                            clients.remove(&id);
                        }
                        id
                    };
                    if let Some(id) = gone {
                        self.event(ServerEvent::Disconnected(id));
                    }
                }
                Received::Control { .. } => {}
            }
        }
    }
}

impl<S: System> Drop for Server<S> {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let inner = &self.inner;
        let att = &inner.ep.att;
        if inner.broken.get().is_some() {
            // The mapping is shorter than it looks: touch nothing; just withdraw the name.
            let _ = att.seg.system().withdraw(att.seg.name(), att.seg.mapping());
            return;
        }
        let heap = att.heap();
        let _ = heap.stop_server(att.me());
        let clients: Vec<ParticipantId> = inner
            .lock_clients()
            .values()
            .map(|c| c.participant)
            .collect();
        for at in clients {
            let _ = heap.send_control(
                att.me(),
                at,
                Control::ServerStopping,
                at.at,
                inner.ep.waker(),
            );
        }
        let _ = inner.ep.close();
        // Removes the segment's name (System V: marks exactly this segment `IPC_RMID`),
        // or keeps a file-backed segment for the next server.
        let _ = att.seg.system().withdraw(att.seg.name(), att.seg.mapping());
    }
}
