//! [`Server`]: creates (or takes over) a segment, accepts clients, receives and sends
//! messages, watches clients with heartbeats.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use shm_core::protocol::{Beat, KIND_SERVER};
use shm_core::{Control, Error, HeapConfig, Offset, ProcSlot, ProcessId, Received, SendMode};

use crate::buffer::Buffer;
use crate::endpoint::{Endpoint, RecvMode};
use crate::error::{HostError, Result};
use crate::name::SegmentName;
use crate::peer::{Message, PeerId, SendError};
use crate::segment::{Attachment, Segment};
use crate::system::{CreateOptions, System};

/// Server settings.
#[derive(Clone, Copy, Debug)]
pub struct ServerOptions {
    /// Segment size in bytes (when it is created).
    pub size: usize,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Missed heartbeats after which a client is declared dead.
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
        }
    }
}

/// Why a client was declared dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathReason {
    /// Its process is gone.
    ProcessGone,
    /// It stopped taking keepalives.
    Unresponsive {
        /// Consecutive misses.
        missed: u32,
    },
}

/// Something that happened to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client connected.
    Connected(PeerId),
    /// A client disconnected cleanly.
    Disconnected(PeerId),
    /// A client was declared dead; its memory was reclaimed.
    Died {
        /// The client.
        client: PeerId,
        /// Why.
        reason: DeathReason,
        /// Bytes returned to the heap.
        bytes_freed: u64,
    },
}

/// Result of a broadcast.
#[derive(Debug, Default)]
pub struct BroadcastReport {
    /// Clients the buffer was sent to.
    pub sent: Vec<PeerId>,
    /// Clients it could not be sent to, and why.
    pub failed: Vec<(PeerId, HostError)>,
}

struct Inner<S: System> {
    ep: Endpoint<S>,
    opts: ServerOptions,
    clients: Mutex<HashMap<PeerId, Offset>>,
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
/// segment and removes the segment's name.
pub struct Server<S: System> {
    inner: Arc<Inner<S>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[cfg(any(target_os = "linux", windows))]
impl Server<crate::NativeSystem> {
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
        Self::create_on(crate::NativeSystem, name, opts)
    }
}

impl<S: System> Server<S> {
    /// Creates or takes over segment `name` on `system`.
    pub fn create_on(system: S, name: &str, opts: ServerOptions) -> Result<Self> {
        let name = SegmentName::new(name)?;
        let seg = match Segment::create(system.clone(), &name, opts.size, opts.create, opts.heap) {
            Ok(s) => s,
            Err(HostError::Exists { .. }) => {
                // A previous server's segment: take it over if that server is dead.
                let s = Segment::open(system.clone(), &name)?;
                let st = s.heap().server_status();
                if st.running && system.is_alive(st.id) {
                    return Err(Error::ServerRunning.into());
                }
                s.heap().reclaim_dead()?;
                s
            }
            Err(e) => return Err(e),
        };
        let att = Arc::new(Attachment::new(seg)?);
        let ep = Endpoint::create(
            Arc::clone(&att),
            KIND_SERVER,
            opts.queue_capacity,
            opts.recv_mode,
        )?;
        let heap = att.heap();
        let heartbeat_ms = u32::try_from(opts.heartbeat.as_millis()).unwrap_or(u32::MAX);
        let generation = match heap.start_server(att.me, ep.at(), heartbeat_ms, opts.max_missed) {
            Ok(g) => g,
            Err(e) => {
                let _ = ep.close();
                return Err(e.into());
            }
        };
        // Sized up front so holding messages never moves the owner array; keepalives come
        // from the reserve (without it they still work until the heap fills).
        let _ = heap.reserve_cells(att.me, opts.owner_cells);
        let _ = heap.reserve(att.me, opts.keepalive_reserve);
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            ep,
            opts,
            clients: Mutex::new(HashMap::new()),
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

    /// This server's process slot.
    pub fn slot(&self) -> ProcSlot {
        self.inner.ep.att.me
    }

    /// A buffer for at least `size` bytes of data (growth policy and default headroom).
    pub fn alloc(&self, size: usize) -> Result<Buffer<S>> {
        self.inner.ep.alloc(size)
    }

    /// Like [`alloc`](Self::alloc), but on a full segment waits up to `timeout` for
    /// other processes to free memory, as the original design's malloc blocks; fails with
    /// [`shm_core::Error::Timeout`] when none comes, and at once with
    /// [`shm_core::Error::TooLarge`] for a request that can never fit.
    pub fn alloc_timeout(&self, size: usize, timeout: Duration) -> Result<Buffer<S>> {
        self.inner.ep.alloc_timeout(size, timeout)
    }

    /// A buffer holding a copy of `data`.
    pub fn alloc_from(&self, data: &[u8]) -> Result<Buffer<S>> {
        self.inner.ep.alloc_from(data)
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
        let reserve = heap.process(self.slot())?.reserve;
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
    /// failure (full queue, client gone) the buffer comes back inside the error.
    pub fn send(&self, client: PeerId, buffer: Buffer<S>, tag: u32) -> Result<(), SendError<S>> {
        let Some(at) = self.inner.lock_clients().get(&client).copied() else {
            return Err(SendError {
                buffer,
                error: Error::NotConnected.into(),
            });
        };
        let ep = &self.inner.ep;
        match ep.att.heap().send(
            ep.att.me,
            at,
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
    /// keeps its own reference (writing to it afterwards copies it first).
    pub fn broadcast(&self, buffer: &Buffer<S>, tag: u32) -> BroadcastReport {
        let clients: Vec<(PeerId, Offset)> = self
            .inner
            .lock_clients()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        let ep = &self.inner.ep;
        let mut report = BroadcastReport::default();
        for (id, at) in clients {
            match ep.att.heap().send(
                ep.att.me,
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

    /// Runs the watchdog now: reclaims every dead process (a lock it held is broken
    /// on the way). Returns how many were reclaimed.
    pub fn watchdog(&self) -> Result<u32> {
        self.inner.tick();
        Ok(self.inner.ep.att.heap().reclaim_dead()?)
    }
}

impl<S: System> Inner<S> {
    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Offset>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
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
            let Some(r) = self.ep.next(timeout)? else {
                return Ok(None);
            };
            match r {
                Received::Message { block, tag, from } => {
                    return self.ep.message(block, tag, from).map(Some);
                }
                Received::Control {
                    control: Control::Connect,
                    participant,
                } => {
                    if let Ok(p) = heap.accept(self.ep.att.me, participant, self.ep.waker()) {
                        let id = self.ep.peer_of(p.slot);
                        self.lock_clients().insert(id, participant);
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
                            .find(|(_, at)| **at == participant)
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

    fn heartbeat_loop(&self, stopped: Receiver<()>) {
        loop {
            match stopped.recv_timeout(self.opts.heartbeat) {
                Err(RecvTimeoutError::Timeout) => self.tick(),
                _ => return,
            }
        }
    }

    /// One heartbeat: keepalives to every client, death for the dead and the silent,
    /// reclaim of any other dead process, reserve top-up.
    fn tick(&self) {
        let att = &self.ep.att;
        let heap = att.heap();
        let system = att.seg.system();
        let clients: Vec<(PeerId, Offset)> =
            self.lock_clients().iter().map(|(k, v)| (*k, *v)).collect();
        for (id, at) in clients {
            let (slot, pid) = match heap.participant(at) {
                Ok(p) => (
                    p.slot,
                    ProcessId {
                        pid: p.rec.pid.load(std::sync::atomic::Ordering::Relaxed),
                        tag: p.rec.tag.load(std::sync::atomic::Ordering::Relaxed),
                    },
                ),
                Err(_) => {
                    // Someone else's watchdog reclaimed it already.
                    self.lock_clients().remove(&id);
                    self.event(ServerEvent::Died {
                        client: id,
                        reason: DeathReason::ProcessGone,
                        bytes_freed: 0,
                    });
                    continue;
                }
            };
            let reason = if !system.is_alive(pid) {
                Some(DeathReason::ProcessGone)
            } else {
                match heap.heartbeat(att.me, at) {
                    Ok(Beat::Missed { missed }) if missed > self.opts.max_missed => {
                        let _ = heap.send_control(at, Control::Disconnected, at, self.ep.waker());
                        Some(DeathReason::Unresponsive { missed })
                    }
                    _ => None,
                }
            };
            if let Some(reason) = reason {
                self.lock_clients().remove(&id);
                let bytes_freed = heap.reclaim(slot).map_or(0, |r| r.bytes_freed);
                self.event(ServerEvent::Died {
                    client: id,
                    reason,
                    bytes_freed,
                });
            }
        }
        let _ = heap.reclaim_dead();
        let low = heap
            .process(att.me)
            .ok()
            .filter(|i| i.reserve != 0)
            .and_then(|i| heap.block_len(Offset::new(i.reserve)).ok())
            .is_none_or(|len| len < self.opts.keepalive_reserve / 2);
        if low {
            let _ = heap.reserve(att.me, self.opts.keepalive_reserve);
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
        let heap = att.heap();
        let _ = heap.stop_server(att.me);
        let clients: Vec<Offset> = inner.lock_clients().values().copied().collect();
        for at in clients {
            let _ = heap.send_control(at, Control::ServerStopping, at, inner.ep.waker());
        }
        let _ = inner.ep.close();
        let _ = att.seg.system().unlink(att.seg.name());
    }
}
