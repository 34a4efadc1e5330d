//! The server's watch over its clients: a background thread that sends keepalives,
//! disconnects clients that stop taking them, reclaims the ones whose process is gone, and
//! tops up the server's keepalive reserve.

use std::sync::mpsc::{Receiver, RecvTimeoutError};

use shm_core::{Beat, Control, Error, Incarnation, Offset};

use super::{ClientEntry, DeathReason, Inner, ServerEvent};
use crate::peer::PeerId;
use crate::system::{Mapping, System};

impl<S: System> Inner<S> {
    pub(super) fn heartbeat_loop(&self, stopped: Receiver<()>) {
        loop {
            match stopped.recv_timeout(self.opts.heartbeat) {
                Err(RecvTimeoutError::Timeout) => self.tick(),
                _ => return,
            }
        }
    }

    /// One heartbeat: the segment's size, keepalives to every client, disconnection of the
    /// silent, reclaim of the dead, reserve top-up.
    ///
    /// A client is reclaimed only when the operating system says its process is gone. One
    /// that stops taking keepalives (stopped, or stuck) is only disconnected: it gets no
    /// more messages, its own operations fail with `Disconnected`, and its memory stays
    /// its own until it is dead.
    pub(super) fn tick(&self) {
        let att = &self.ep.att;
        let heap = att.heap();
        if self.broken.get().is_none() {
            let mapped = att.seg.mapping().len() as u64;
            match att.seg.system().object_size(att.seg.mapping()) {
                Ok(now) if now < mapped => {
                    let _ = self.broken.set((mapped, now));
                }
                _ => {}
            }
        }
        if self.broken.get().is_some() {
            return;
        }
        // An idle server gives its cached buffers back when the heap runs low.
        att.cache_drain_if_asked();
        let clients: Vec<(PeerId, ClientEntry)> =
            self.lock_clients().iter().map(|(k, v)| (*k, *v)).collect();
        for (id, entry) in clients {
            let p = match heap.participant(entry.participant.at) {
                Ok(p) if p.owner == entry.participant.owner => p,
                _ => {
                    // Gone without our noticing its death: a clean exit whose `Disconnect`
                    // is still in our queue (wait one beat for `recv` to take it), or
                    // another process's watchdog reclaimed it.
                    let mut clients = self.lock_clients();
                    let Some(c) = clients.get_mut(&id) else {
                        continue;
                    };
                    if c.gone_beats == 0 {
                        c.gone_beats = 1;
                        continue;
                    }
                    clients.remove(&id);
                    drop(clients);
                    self.event(ServerEvent::Died {
                        client: id,
                        reason: DeathReason::Reclaimed,
                        bytes_freed: 0,
                    });
                    continue;
                }
            };
            let pid = p.info().id.owner;
            let process = heap
                .process(pid.slot)
                .ok()
                .filter(|i| i.incarnation() == pid);
            let alive = process.is_none_or(|i| att.seg.is_alive(i.id));
            if !alive {
                self.lock_clients().remove(&id);
                let bytes_freed = heap.reclaim(pid).map_or(0, |r| r.bytes_freed);
                self.event(ServerEvent::Died {
                    client: id,
                    reason: DeathReason::ProcessGone,
                    bytes_freed,
                });
                continue;
            }
            if let Ok(Beat::Missed { missed }) = heap.heartbeat(att.me(), entry.participant) {
                if missed > self.opts.max_missed {
                    // Unresponsive is not dead: disconnect, keep watching, reclaim nothing.
                    let _ = heap.send_control(
                        att.me(),
                        entry.participant,
                        Control::Disconnected,
                        entry.participant.at,
                        self.ep.waker(),
                    );
                    self.lock_clients().remove(&id);
                    self.lock_unresponsive().insert(id, pid);
                    let killed = self.opts.kill_unresponsive
                        && process.is_some_and(|p| {
                            matches!(
                                att.seg.system().terminate(att.seg.mapping(), p.id),
                                Ok(true)
                            )
                        });
                    self.event(ServerEvent::Unresponsive {
                        client: id,
                        missed,
                        killed,
                    });
                }
            }
        }
        // Unresponsive clients whose processes have since died.
        let watched: Vec<(PeerId, Incarnation)> = self
            .lock_unresponsive()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        for (id, inc) in watched {
            match heap.reclaim(inc) {
                Ok(r) => {
                    self.lock_unresponsive().remove(&id);
                    self.event(ServerEvent::Died {
                        client: id,
                        reason: DeathReason::ProcessGone,
                        bytes_freed: r.bytes_freed,
                    });
                }
                Err(Error::StillAlive { .. }) => {}
                Err(_) => {
                    // Reclaimed by someone else, or gone some other way.
                    self.lock_unresponsive().remove(&id);
                }
            }
        }
        let _ = heap.reclaim_dead();
        let low = heap
            .process(att.incarnation().slot)
            .ok()
            .filter(|i| i.reserve != 0)
            .and_then(|i| heap.block_len(Offset::new(i.reserve)).ok())
            .is_none_or(|len| len < self.opts.keepalive_reserve / 2);
        if low {
            let _ = heap.reserve(att.me(), self.opts.keepalive_reserve);
        }
    }
}
