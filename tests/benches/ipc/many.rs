//! Many-to-one throughput: N client processes each allocate, stamp and send `count`
//! messages as fast as they can to one server (this process), which receives, checks
//! and frees them. A client whose send finds the server's queue full (or whose
//! allocation finds the segment full) tries again, yielding its CPU every 64 tries.
//!
//! Timed: from the server sending the last client its go-ahead (every client connected
//! and waiting on its doorbell) to the server freeing the last message. Checked: every
//! client's messages arrive in order, each stamp intact, as many as it says it sent.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shm_core::Error as CoreError;
use shm_host::{HostError, Server};
use shm_tests::Peer;

use crate::link::{self, Res, PATIENCE};
use crate::ours::{self, send_control};
use crate::stamp::{Kind, Stamp};

/// Payload of every message.
pub const MSG_LEN: usize = 64;

/// One round for `clients` processes of `count` messages each: aggregate messages per
/// second.
pub fn round(clients: usize, count: u64, tag: &str) -> Res<f64> {
    let name = link::unique(&format!("many{clients}-{tag}"));
    let server = Server::create_with(&name, ours::server_options(1 << 20, 2))
        .map_err(|e| format!("creating segment {name}: {e}"))?;
    let count_arg = count.to_string();
    let mut peers = (0..clients)
        .map(|_| link::spawn_peer("many", &[&name, &count_arg]))
        .collect::<Res<Vec<Peer>>>()?;
    let ids = ours::wait_for_clients(&server, clients, &mut peers)?;
    let mut next: HashMap<_, u64> = ids.iter().map(|&id| (id, 0)).collect();
    let total = count * clients as u64;
    for &id in &ids {
        send_control(&server, id, Kind::Pause)?; // the go-ahead
    }
    let start = Instant::now();
    let mut received = 0u64;
    let mut spins = 0u32;
    while received < total {
        let Some(m) = server.try_recv().map_err(|e| format!("receiving: {e}"))? else {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                for p in &mut peers {
                    link::check_alive(p)?;
                }
                if start.elapsed() > PATIENCE * 4 {
                    return Err(format!("{received} of {total} messages arrived"));
                }
            }
            continue;
        };
        let st = Stamp::read(&m.buffer)?;
        let want = next
            .get_mut(&m.from)
            .ok_or_else(|| format!("a message from unknown client {}", m.from))?;
        if st != Stamp::data(*want, MSG_LEN) {
            return Err(format!("from {}: {st:?}, expected seq {want}", m.from));
        }
        *want += 1;
        received += 1;
    }
    let elapsed = start.elapsed();
    for &id in &ids {
        send_control(&server, id, Kind::Stop)?;
    }
    for p in &mut peers {
        link::finish_peer(p, count)?;
    }
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// A client: connects, waits for the go-ahead, sends `count` stamped messages, then waits
/// for the stop and prints `done SENT`.
pub fn peer(name: &str, count: &str) -> Res<()> {
    let count: u64 = count.parse().map_err(|_| format!("bad count {count:?}"))?;
    let client = ours::connect(name)?;
    let wait = |want: Kind| -> Res<()> {
        loop {
            let m = client.recv_timeout(Duration::from_millis(100));
            if let Some(m) = m.map_err(|e| e.to_string())? {
                let st = Stamp::read(&m.buffer)?;
                return if st.kind == want {
                    Ok(())
                } else {
                    Err(format!("{st:?} instead of {want:?}"))
                };
            }
        }
    };
    let full = |e: &HostError| {
        matches!(
            e,
            HostError::Core(CoreError::QueueFull | CoreError::OutOfMemory { .. })
        )
    };
    wait(Kind::Pause)?;
    let mut tries = 0u32;
    let mut retry = || {
        tries = tries.wrapping_add(1);
        if tries.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    };
    for seq in 0..count {
        let mut b = loop {
            match client.alloc(MSG_LEN) {
                Ok(b) => break b,
                Err(e) if full(&e) => retry(),
                Err(e) => return Err(format!("allocating: {e}")),
            }
        };
        b.extend_from_slice(&Stamp::data(seq, MSG_LEN).bytes())
            .map_err(|e| e.to_string())?;
        while let Err(e) = client.send(b, 1) {
            if !full(&e.error) {
                return Err(format!("sending: {}", e.error));
            }
            b = e.buffer;
            retry();
        }
    }
    wait(Kind::Stop)?;
    println!("done {count}");
    Ok(())
}
