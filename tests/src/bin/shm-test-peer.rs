//! Helper process for the integration tests. Roles:
//!
//! - `client NAME ID COUNT WINDOW`: connects, sends COUNT checked messages (at most WINDOW
//!   unanswered), verifies every echo, prints `done ID COUNT`, exits 0 (1 on any error).
//! - `stream NAME ID`: like `client` but never stops (for kill tests); prints `ready`.
//! - `hold-lock NAME`: attaches, starts an allocation that stops half-way with the region
//!   lock held (fault injection), prints `holding`, then sleeps until killed.
//! - `server NAME`: a server that echoes every message; prints `serving GEN`.
//! - `send-one NAME TAG`: connects, sends one message with TAG, prints `sent`, waits for the
//!   echo and prints `echo TAG`, then waits for a line on stdin before exiting.
#![allow(clippy::unwrap_used)] // a test helper: any failure ends it with a message

use std::collections::VecDeque;
use std::time::Duration;

use shm_host::{Client, Segment, SegmentName, Server, ServerOptions};
use shm_tests::wire;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or("") };
    let result = match arg(0) {
        "client" => client(
            arg(1),
            arg(2).parse().unwrap(),
            arg(3).parse().unwrap(),
            arg(4).parse().unwrap(),
            false,
        ),
        "stream" => client(arg(1), arg(2).parse().unwrap(), u32::MAX, 8, true),
        "hold-lock" => hold_lock(arg(1)),
        "server" => server(arg(1)),
        "send-one" => send_one(arg(1), arg(2).parse().unwrap()),
        other => Err(format!("unknown role {other:?}")),
    };
    if let Err(e) = result {
        eprintln!("shm-test-peer {args:?}: {e}");
        std::process::exit(1);
    }
}

fn client(name: &str, id: u32, count: u32, window: usize, announce: bool) -> Result<(), String> {
    let c = Client::connect(name).map_err(|e| format!("connect: {e}"))?;
    c.wait_connected(Duration::from_secs(20))
        .map_err(|e| format!("wait_connected: {e}"))?;
    if announce {
        println!("ready");
    }
    let mut outstanding: VecDeque<u32> = VecDeque::new();
    let mut next = 0u32;
    let mut done = 0u32;
    while done < count {
        while next < count && outstanding.len() < window {
            let size = wire::HEADER + wire::body_len(id, next);
            let mut buf = c.alloc(size).map_err(|e| format!("alloc: {e}"))?;
            buf.resize(size).map_err(|e| format!("resize: {e}"))?;
            wire::encode(buf.as_mut_slice().map_err(|e| e.to_string())?, id, next);
            let mut pending = buf;
            loop {
                match c.send(pending, next) {
                    Ok(()) => break,
                    Err(e)
                        if matches!(
                            e.error,
                            shm_host::HostError::Core(shm_core::Error::QueueFull)
                        ) =>
                    {
                        pending = e.buffer;
                        std::thread::yield_now();
                    }
                    Err(e) => return Err(format!("send {next}: {e}")),
                }
            }
            outstanding.push_back(next);
            next += 1;
        }
        let msg = c
            .recv_timeout(Duration::from_secs(20))
            .map_err(|e| format!("recv: {e}"))?
            .ok_or("no echo within 20 s")?;
        let (cid, seq) = wire::decode(&msg.buffer)?;
        let expected = outstanding.pop_front().ok_or("echo nobody asked for")?;
        if cid != id || seq != expected || msg.tag != expected {
            return Err(format!(
                "echo {cid}/{seq} tag {}, expected {id}/{expected}",
                msg.tag
            ));
        }
        done += 1;
    }
    println!("done {id} {count}");
    Ok(())
}

fn hold_lock(name: &str) -> Result<(), String> {
    let seg = Segment::open(
        shm_host::NativeSystem,
        &SegmentName::new(name).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    // SAFETY: acts only as the member it registers here and touches no payload.
    let heap = unsafe { seg.heap() };
    let me = heap.register().map_err(|e| e.to_string())?;
    // Stop at the third journaled write: lock held, journal half written.
    heap.faults().arm(3);
    match heap.try_alloc(me, 1000) {
        Err(shm_core::Error::InjectedCrash) => {}
        other => {
            return Err(format!(
                "expected to stop inside the operation, got {other:?}"
            ))
        }
    }
    println!("holding");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn server(name: &str) -> Result<(), String> {
    let s = Server::create_with(
        name,
        ServerOptions {
            size: 8 << 20,
            heartbeat: Duration::from_millis(50),
            ..ServerOptions::default()
        },
    )
    .map_err(|e| format!("server: {e}"))?;
    println!("serving {}", s.generation());
    loop {
        if let Some(msg) = s
            .recv_timeout(Duration::from_millis(100))
            .map_err(|e| e.to_string())?
        {
            let _ = s.send(msg.from, msg.buffer, msg.tag);
        }
    }
}

fn send_one(name: &str, tag: u32) -> Result<(), String> {
    let c = Client::connect(name).map_err(|e| format!("connect: {e}"))?;
    c.send(c.alloc_from(b"one").map_err(|e| e.to_string())?, tag)
        .map_err(|e| e.to_string())?;
    println!("sent");
    let msg = c
        .recv_timeout(Duration::from_secs(20))
        .map_err(|e| e.to_string())?
        .ok_or("no echo")?;
    println!("echo {}", msg.tag);
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}
