//! Client process for the externally mapped memfd tests (`tests/foreign_memfd.rs`), Linux
//! only: `shm-foreign-peer ROLE SOCKET LIVENESS ID [COUNT]`.
//!
//! Connects to the Unix socket at SOCKET, receives the memfd over it (`SCM_RIGHTS`), maps
//! it with plain `mmap`, builds a client over the mapping (`shm_host::foreign`, with
//! `SemDoorbells` and, as LIVENESS says, `fd` for `FdLiveness` on the received
//! descriptor or `assume` for `AssumeAlive`), connects, then:
//! - `client`: sends COUNT checksummed messages (`shm_tests::wire`, at most 8 unanswered),
//!   verifies every echo, prints `done ID COUNT`, exits 0 (1 on any error);
//! - `stream`: prints `ready` and sends and verifies messages until killed;
//! - `idle`: like `client`, then stays connected, sending nothing, until killed;
//! - `serve`: instead of a client, a server over the memfd (heartbeat 20 ms) that prints
//!   `serving GEN` and echoes every message until killed.
#![allow(clippy::unwrap_used)] // a test helper: any failure ends it with a message

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or("") };
    let count = match arg(0) {
        "client" | "idle" => arg(4).parse().unwrap(),
        "stream" | "serve" => u32::MAX,
        other => {
            eprintln!("shm-foreign-peer: unknown role {other:?}");
            std::process::exit(1);
        }
    };
    let id: u32 = arg(3).parse().unwrap();
    let result = if arg(0) == "serve" {
        linux::serve(arg(1))
    } else {
        linux::run(arg(1), arg(2), id, count, arg(0) == "idle")
    };
    if let Err(e) = result {
        eprintln!("shm-foreign-peer {args:?}: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("shm-foreign-peer: the memfd tests run on Linux only");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::VecDeque;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use shm_host::{Client, ClientOptions, HostError, Server, ServerOptions, System};
    use shm_tests::{memfd, wire};

    pub fn run(
        socket: &str,
        liveness: &str,
        id: u32,
        count: u32,
        idle: bool,
    ) -> Result<(), String> {
        let sock = UnixStream::connect(socket).map_err(|e| format!("connect {socket}: {e}"))?;
        let fd = memfd::recv_fd(&sock).map_err(|e| format!("receiving the memfd: {e}"))?;
        drop(sock);
        match liveness {
            "fd" => talk(memfd::system(fd.as_fd()), id, count, idle),
            "assume" => talk(memfd::system_assuming_alive(fd.as_fd()), id, count, idle),
            other => Err(format!("unknown liveness {other:?}")),
        }
    }

    pub fn serve(socket: &str) -> Result<(), String> {
        let sock = UnixStream::connect(socket).map_err(|e| format!("connect {socket}: {e}"))?;
        let fd = memfd::recv_fd(&sock).map_err(|e| format!("receiving the memfd: {e}"))?;
        drop(sock);
        let system = memfd::system(fd.as_fd()).map_err(|e| format!("mapping: {e}"))?;
        let opts = ServerOptions {
            heartbeat: Duration::from_millis(20),
            ..ServerOptions::default()
        };
        let s =
            Server::create_on(system, "foreign-memfd", opts).map_err(|e| format!("server: {e}"))?;
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

    fn talk<S: System>(
        system: std::io::Result<S>,
        id: u32,
        count: u32,
        idle: bool,
    ) -> Result<(), String> {
        let system = system.map_err(|e| format!("mapping the memfd: {e}"))?;
        let c = Client::connect_on(system, "foreign-memfd", ClientOptions::default())
            .map_err(|e| format!("connect: {e}"))?;
        c.wait_connected(Duration::from_secs(20))
            .map_err(|e| format!("wait_connected: {e}"))?;
        if count == u32::MAX {
            println!("ready");
        }
        let mut outstanding: VecDeque<u32> = VecDeque::new();
        let (mut next, mut done) = (0u32, 0u32);
        while done < count {
            while next < count && outstanding.len() < 8 {
                let size = wire::HEADER + wire::body_len(id, next);
                let mut buf = c.alloc(size).map_err(|e| format!("alloc: {e}"))?;
                buf.resize(size).map_err(|e| format!("resize: {e}"))?;
                wire::encode(buf.as_mut_slice().map_err(|e| e.to_string())?, id, next);
                let mut pending = buf;
                loop {
                    match c.send(pending, next) {
                        Ok(()) => break,
                        Err(e)
                            if matches!(e.error, HostError::Core(shm_core::Error::QueueFull)) =>
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
        if idle {
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        drop(c);
        Ok(())
    }
}
