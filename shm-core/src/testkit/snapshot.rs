//! A comparable picture of a heap's meaning: statistics, used blocks with their owners and
//! payload bytes, processes, the server entry, every participant with its queued entries,
//! and the kept root. Crash tests take one before an operation, one after a run without a crash, and
//! one after a crash and its recovery, and require the last to equal one of the first two
//! (or, for multi-step operations such as reclaiming, to be made of their parts).
//!
//! Read without the lock: take snapshots only while no operation runs (after recovery).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;

use crate::format::{Participant, KIND_CLIENT, KIND_SERVER};
use crate::{
    BlockInfo, Error, Heap, HeapStats, Offset, OffsetQueue, ParticipantInfo, Platform, ProcessInfo,
    QueueEntry, ServerStatus,
};

/// A used block: what `for_each_block` says, its owners in chain order and a hash of its
/// payload bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSnap {
    /// As reported by [`Heap::for_each_block`].
    pub info: BlockInfo,
    /// Its owners' slots, in chain order (empty for system blocks).
    pub owners: Vec<u16>,
    /// FNV-1a over its payload words.
    pub payload: u64,
}

/// A participant: its state, keepalive words and the entries waiting in its queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantSnap {
    /// Its state.
    pub info: ParticipantInfo,
    /// Keepalive mailbox word.
    pub keepalive: u32,
    /// Last keepalive sequence taken.
    pub keepalive_seen: u32,
    /// Entries queued, oldest first.
    pub pending: Vec<QueueEntry>,
    /// Messages ever enqueued.
    pub enqueued: u32,
}

/// See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Statistics, `lock_breaks` zeroed (recovering from a crash counts a break).
    pub stats: HeapStats,
    /// Used blocks by header offset.
    pub blocks: BTreeMap<u32, BlockSnap>,
    /// Registered processes by slot.
    pub procs: BTreeMap<u16, ProcessInfo>,
    /// The server entry.
    pub server: ServerStatus,
    /// Valid participants by payload offset.
    pub participants: BTreeMap<u32, ParticipantSnap>,
    /// The kept root.
    pub kept_root: Option<Offset>,
}

fn fnv(hash: u64, word: u32) -> u64 {
    word.to_le_bytes().iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Snapshot {
    /// Takes a snapshot of `heap`. Fails if the heap cannot be walked (a broken heap).
    pub fn take<P: Platform>(heap: &Heap<'_, P>) -> Result<Self, Error> {
        let mut stats = heap.stats_unlocked()?;
        stats.lock_breaks = 0;
        let mut infos = Vec::new();
        heap.for_each_block(|b| {
            if b.used {
                infos.push(b)
            }
        })?;
        let hsize = heap.block_header_size();
        let region = heap.region();
        let mut blocks = BTreeMap::new();
        let mut participants = BTreeMap::new();
        for info in infos {
            let payload_at = info.offset.wrapping_add(hsize);
            let mut owners = Vec::new();
            if !info.system {
                heap.owners(Offset::new(payload_at), |s| owners.push(s.0))?;
            }
            let participant = if info.system {
                None
            } else {
                heap.participant(Offset::new(payload_at)).ok()
            };
            // A queue slot's entry words mean something only while it is published (the
            // published entries are compared as `pending`): an undone send leaves them
            // written. Told by the block's layout, not by whether the participant still
            // validates (a reclaim stops it validating before it frees it).
            let queue = (!info.system)
                .then(|| region.get::<Participant>(payload_at).ok())
                .flatten()
                .filter(|r| matches!(r.kind.load(Relaxed), KIND_SERVER | KIND_CLIENT))
                .and_then(|r| OffsetQueue::open(region, r.queue.load(Relaxed)).ok());
            let meaningful = |o: u32| queue.is_none_or(|q| !q.is_entry_word(o));
            let mut payload = 0xcbf2_9ce4_8422_2325u64;
            let mut o = payload_at;
            while o < info.offset.wrapping_add(info.size) {
                if meaningful(o) {
                    payload = fnv(payload, region.word(o)?.load(Relaxed));
                }
                o = o.wrapping_add(4);
            }
            if !info.system {
                if let Some(p) = participant {
                    let mut pending = Vec::new();
                    p.queue.for_each_pending(region, |e| pending.push(e))?;
                    participants.insert(
                        payload_at,
                        ParticipantSnap {
                            info: p.info(),
                            keepalive: p.rec.keepalive.load(Relaxed),
                            keepalive_seen: p.rec.keepalive_seen.load(Relaxed),
                            pending,
                            enqueued: p.queue.enqueued(),
                        },
                    );
                }
            }
            blocks.insert(
                info.offset,
                BlockSnap {
                    info,
                    owners,
                    payload,
                },
            );
        }
        let mut procs = BTreeMap::new();
        for p in heap.processes()? {
            let p = p?;
            procs.insert(p.slot.0, p);
        }
        Ok(Snapshot {
            stats,
            blocks,
            procs,
            server: heap.server_status(),
            participants,
            kept_root: heap.kept_root(),
        })
    }

    /// The first difference between `self` and `other`, described; `None` when equal.
    pub fn diff(&self, other: &Self) -> Option<String> {
        fn first<K: Ord + Copy + core::fmt::Debug, V: PartialEq + core::fmt::Debug>(
            what: &str,
            a: &BTreeMap<K, V>,
            b: &BTreeMap<K, V>,
        ) -> Option<String> {
            a.keys().chain(b.keys()).find_map(|k| {
                let (x, y) = (a.get(k), b.get(k));
                (x != y).then(|| format!("{what} {k:?}: {x:?} vs {y:?}"))
            })
        }
        if self.stats != other.stats {
            return Some(format!("stats: {:?} vs {:?}", self.stats, other.stats));
        }
        if self.server != other.server {
            return Some(format!("server: {:?} vs {:?}", self.server, other.server));
        }
        if self.kept_root != other.kept_root {
            return Some(format!(
                "kept root: {:?} vs {:?}",
                self.kept_root, other.kept_root
            ));
        }
        first("block", &self.blocks, &other.blocks)
            .or_else(|| first("process", &self.procs, &other.procs))
            .or_else(|| first("participant", &self.participants, &other.participants))
    }

    /// Checks that `self` is made of parts of `before` and `after`: every used block,
    /// process and participant (present or absent) is as in one of them, and so is the
    /// server entry (system blocks are compared by place and size only). Process `except`
    /// is left out of the process comparison (a process being reclaimed changes step by
    /// step); its owned-block count may only have fallen. Returns a description of the
    /// first part that is in neither.
    pub fn is_between(
        &self,
        before: &Self,
        after: &Self,
        except: Option<u16>,
    ) -> Result<(), String> {
        fn parts<K: Ord + Copy + core::fmt::Debug, V: PartialEq + core::fmt::Debug>(
            what: &str,
            mid: &BTreeMap<K, V>,
            before: &BTreeMap<K, V>,
            after: &BTreeMap<K, V>,
            skip: impl Fn(K) -> bool,
        ) -> Result<(), String> {
            let keys = mid.keys().chain(before.keys()).chain(after.keys());
            for &k in keys {
                if skip(k) {
                    continue;
                }
                let (m, b, a) = (mid.get(&k), before.get(&k), after.get(&k));
                if m != b && m != a {
                    return Err(format!(
                        "{what} {k:?}: now {m:?}, before {b:?}, after {a:?}"
                    ));
                }
            }
            Ok(())
        }
        // System blocks (process records with their owner cells, the process table)
        // change word by word as references are dropped; their meaning is compared
        // through the processes and the owner chains instead.
        let meaning = |m: &BTreeMap<u32, BlockSnap>| -> BTreeMap<u32, BlockSnap> {
            m.iter()
                .map(|(&k, b)| {
                    let mut b = b.clone();
                    if b.info.system {
                        b.payload = 0;
                    }
                    (k, b)
                })
                .collect()
        };
        parts(
            "block",
            &meaning(&self.blocks),
            &meaning(&before.blocks),
            &meaning(&after.blocks),
            |_| false,
        )?;
        parts(
            "participant",
            &self.participants,
            &before.participants,
            &after.participants,
            |_| false,
        )?;
        parts("process", &self.procs, &before.procs, &after.procs, |k| {
            Some(k) == except
        })?;
        if let Some(x) = except {
            if let (Some(m), Some(b)) = (self.procs.get(&x), before.procs.get(&x)) {
                if m.blocks > b.blocks || m.serial != b.serial {
                    return Err(format!("reclaimed process {x}: now {m:?}, before {b:?}"));
                }
            }
        }
        if self.kept_root != before.kept_root && self.kept_root != after.kept_root {
            return Err(format!(
                "kept root: now {:?}, before {:?}, after {:?}",
                self.kept_root, before.kept_root, after.kept_root
            ));
        }
        if self.server != before.server && self.server != after.server {
            return Err(format!(
                "server: now {:?}, before {:?}, after {:?}",
                self.server, before.server, after.server
            ));
        }
        Ok(())
    }
}
