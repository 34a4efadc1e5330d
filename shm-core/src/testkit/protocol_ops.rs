//! The client/server protocol driven by decoded operations, for the `protocol` fuzz target
//! and its integration test: participants, `start_server`, connect/accept, sends (give
//! and share) and receives, control entries, heartbeats and keepalives, destroying
//! participants, killing and reclaiming processes, and injected crashes.
//!
//! Two scenarios, chosen by bit 0 of the first byte:
//! - **well-formed**: a freshly formatted region, driven as programs drive it (a process
//!   frees or sends only blocks it still holds); after every operation (and after every
//!   crash, once another process broke the lock) `check()` must pass, no operation may
//!   report corruption or a full journal, an injected crash must surface as
//!   `InjectedCrash` and nothing else, and every message a receiver takes must be a block
//!   it owns;
//! - **hostile**: an arbitrary region image (as in [`hostile`](super::hostile)) attached and
//!   driven with members forged from the records it holds and offsets from the bytes:
//!   every call must return, with a result or an error, without panicking or hanging.
//!
//! Input after the first byte: well-formed, one setup byte then operations; hostile, two
//! bytes of region length, the image, then operations.

use alloc::vec::Vec;

use crate::format::{KIND_CLIENT, KIND_SERVER};
use crate::testkit::hostile::REGION_LEN;
use crate::testkit::ops::Decoder;
use crate::testkit::protocol_driver::{Driver, Proc, ACTOR_PIDS, MEMBER_PIDS};
pub use crate::testkit::protocol_driver::{POp, ProtoStats};
use crate::testkit::{AlignedBuf, TestPlatform};
use crate::{
    Error, Heap, HeapConfig, Incarnation, Member, Offset, ProcSlot, ProcessId, Region, SendMode,
};

/// Decodes the next operation, or `None` at the end of the bytes.
pub fn decode(d: &mut Decoder<'_>) -> Option<POp> {
    let kind = d.byte()?;
    let who = d.byte()?;
    // Weighted towards the protocol: sends, receives, connecting.
    Some(match kind % 32 {
        0 | 1 => POp::Register,
        2 | 3 => POp::Participant {
            who,
            server: kind & 0x80 != 0,
            cap: d.byte()?,
        },
        4 => POp::StartServer { who },
        5 => POp::StopServer { who },
        6..=8 => POp::Connect { who },
        9..=11 => POp::Accept { who },
        12 | 13 => POp::Alloc {
            who,
            size: u16::from_le_bytes([d.byte()?, d.byte()?]) >> (kind >> 5),
        },
        14 => POp::Reserve {
            who,
            size: u16::from(d.byte()?) * 4,
        },
        15..=20 => POp::Send {
            who,
            to: d.byte()?,
            pick: d.byte()?,
            share: kind & 0x80 != 0,
            tag: d.byte()?,
        },
        21..=24 => POp::Recv {
            who,
            keep: kind & 0x80 != 0,
        },
        25 => POp::Control {
            who,
            to: d.byte()?,
            which: d.byte()?,
        },
        26 | 27 => POp::Heartbeat { to: who },
        28 => POp::TakeKeepalive { who },
        29 if kind & 0x80 != 0 => POp::Destroy { who },
        29 => POp::Release {
            who,
            pick: d.byte()?,
        },
        30 if kind & 0x80 != 0 => POp::Kill { who },
        30 => POp::Unregister { who },
        _ => POp::Crash {
            // Mostly within the common operations' length, now and then up to a whole
            // reclaim.
            steps: 1 + u16::from_le_bytes([who, d.byte()?])
                % if who & 0x80 != 0 { 320 } else { 40 },
        },
    })
}

/// Encodes operation bytes for the well-formed scenario with setup byte `setup`.
pub fn encode_formed(setup: u8, ops: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + ops.len());
    v.push(0);
    v.push(setup);
    v.extend_from_slice(ops);
    v
}

/// Encodes a region image (a multiple of 16 bytes within [`REGION_LEN`]) and operation
/// bytes for the hostile scenario.
pub fn encode_hostile(image: &[u8], ops: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + image.len() + ops.len());
    v.push(1);
    v.extend_from_slice(&super::hostile::encode(image, ops));
    v
}

/// Runs the scenario bit 0 of the first byte selects (see the module documentation).
pub fn run(data: &[u8]) -> ProtoStats {
    let mut d = Decoder::new(data);
    match d.byte() {
        Some(b) if b & 1 == 1 => run_hostile(d.rest()),
        _ => run_formed(d.rest()),
    }
}

/// The well-formed scenario: a setup byte, then operations.
pub fn run_formed(data: &[u8]) -> ProtoStats {
    let mut d = Decoder::new(data);
    let setup = d.byte().unwrap_or(0);
    let size = 16384usize << (setup % 3);
    let config = HeapConfig {
        align: [16, 8, 64, 16][usize::from((setup >> 2) % 4)],
        max_processes: 3 + u16::from((setup >> 4) % 6),
    };
    let buf = AlignedBuf::new(size);
    let platform = TestPlatform::new(ACTOR_PIDS.0);
    // SAFETY: `buf` outlives `heap` (declared before it, dropped after it) and nothing else
    // accesses it meanwhile.
    let region = match unsafe { Region::from_raw(buf.as_ptr(), size) } {
        Ok(r) => r,
        Err(e) => panic!("region over test buffer: {e}"),
    };
    let heap = match Heap::init(region, config, platform.clone()) {
        Ok(h) => h,
        Err(e) => panic!("init: {e}"),
    };
    let mut drv = Driver {
        heap: &heap,
        platform,
        strict: true,
        procs: Vec::new(),
        blocks: Vec::new(),
        in_flight: Vec::new(),
        next_pid: MEMBER_PIDS.0,
        armed: false,
        stats: ProtoStats::default(),
    };
    // A server and a client to start with, so short inputs reach the protocol.
    for op in [
        POp::Register,
        POp::Register,
        POp::Participant {
            who: 0,
            server: true,
            cap: 1,
        },
        POp::StartServer { who: 0 },
        POp::Connect { who: 1 },
        POp::Accept { who: 0 },
    ] {
        drv.step(op);
    }
    for _ in 0..400 {
        let Some(op) = decode(&mut d) else { break };
        drv.step(op);
    }
    let stats = drv.stats;
    drop(drv);
    drop(heap);
    drop(buf);
    stats
}

/// The hostile scenario: region length, image, operations (as [`hostile`](super::hostile)).
pub fn run_hostile(data: &[u8]) -> ProtoStats {
    let mut d = Decoder::new(data);
    let len_sel = u16::from_le_bytes([d.byte().unwrap_or(0), d.byte().unwrap_or(0)]);
    let len = (REGION_LEN.0 + usize::from(len_sel) % (REGION_LEN.1 - REGION_LEN.0)) & !15;
    let rest = d.rest();
    let image_len = len.min(rest.len());
    let buf = AlignedBuf::new(len);
    // SAFETY: `image_len <= len` bytes into a fresh buffer of `len` bytes; the source is a
    // different allocation.
    unsafe { core::ptr::copy_nonoverlapping(rest.as_ptr(), buf.as_ptr(), image_len) };
    let mut ops = Decoder::new(rest.get(image_len..).unwrap_or(&[]));
    // SAFETY: `buf` outlives `heap` (declared before it, dropped after it) and nothing else
    // accesses it meanwhile.
    let Ok(region) = (unsafe { Region::from_raw(buf.as_ptr(), len) }) else {
        return ProtoStats::default();
    };
    // Our pid must not be the one the image's lock names (see `hostile`).
    let lock_at = core::mem::offset_of!(crate::format::RegionHeader, lock);
    let holder = buf
        .bytes()
        .get(lock_at..lock_at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let me = if holder == 7 { 9 } else { 7 };
    let platform = TestPlatform::only_me_alive(me);
    let Ok(heap) = Heap::attach(region, platform.clone()) else {
        return ProtoStats::default();
    };
    // The processes the image holds, acting as their records say (forged members), with
    // their participants; and made-up incarnations for a few empty slots.
    let mut procs = Vec::new();
    if let Ok(ps) = heap.processes() {
        for info in ps.take(16).flatten() {
            procs.push(Proc {
                member: Member::forged_for_tests(info.incarnation()),
                pid: info.id.pid,
                participant: (info.app[0] != 0).then(|| Offset::new(info.app[0])),
            });
        }
    }
    for slot in 0..3u16 {
        procs.push(Proc {
            member: Member::forged_for_tests(Incarnation {
                slot: ProcSlot(slot),
                serial: u32::from(slot),
            }),
            pid: 4000 + u32::from(slot),
            participant: None,
        });
    }
    let mut drv = Driver {
        heap: &heap,
        platform,
        strict: false,
        procs,
        blocks: Vec::new(),
        in_flight: Vec::new(),
        next_pid: MEMBER_PIDS.0,
        armed: false,
        stats: ProtoStats::default(),
    };
    for _ in 0..256 {
        let Some(op) = decode(&mut ops) else { break };
        drv.step(op);
    }
    let stats = drv.stats;
    drop(drv);
    drop(heap);
    drop(buf);
    stats
}

/// A formatted region of `len` bytes (a multiple of 16, at least 16 KiB) with a running
/// server, a connected client with messages waiting, a connecting client, shared blocks
/// and reserves, as bytes: seed images for the hostile scenario.
pub fn sample_image(len: usize) -> Vec<u8> {
    let buf = AlignedBuf::new(len);
    {
        // SAFETY: `buf` outlives `heap`, dropped at the end of this block.
        let Ok(region) = (unsafe { Region::from_raw(buf.as_ptr(), len) }) else {
            panic!("region of {len} bytes");
        };
        let Ok(heap) = Heap::init(region, HeapConfig::default(), TestPlatform::new(1)) else {
            panic!("init {len} bytes");
        };
        let r = (|| -> Result<(), Error> {
            let s = heap.register_as(ProcessId::from_pid(100))?;
            let c = heap.register_as(ProcessId::from_pid(101))?;
            let d = heap.register_as(ProcessId::from_pid(102))?;
            heap.reserve(s, 200)?;
            let sp = heap.create_participant(s, KIND_SERVER, 4)?;
            heap.start_server(s, sp.at, 100, 3)?;
            let cp = heap.create_participant(c, KIND_CLIENT, 4)?;
            heap.connect(c, cp.at, |_| {})?;
            heap.recv(&sp)?;
            heap.accept(s, cp.at, |_| {})?;
            heap.recv(&cp)?;
            let dp = heap.create_participant(d, KIND_CLIENT, 2)?;
            heap.connect(d, dp.at, |_| {})?;
            heap.heartbeat(s, cp.id())?;
            for i in 0..3 {
                let b = heap.try_alloc(s, 40 + 16 * i)?;
                let mode = if i == 1 {
                    SendMode::Share
                } else {
                    SendMode::Give
                };
                heap.send(s, cp.id(), b, i, mode, |_| {})?;
            }
            let x = heap.try_alloc(c, 64)?;
            heap.send(c, sp.id(), x, 9, SendMode::Give, |_| {})?;
            let y = heap.try_alloc(c, 80)?;
            heap.share(c, y, d)?;
            Ok(())
        })();
        if let Err(e) = r {
            panic!("sample image: {e}");
        }
    }
    buf.bytes().to_vec()
}
