//! A server over memory the library did not map: this test process creates a memfd, maps
//! it with plain `mmap`, builds a `Server` over the mapping (`shm_host::foreign`) and
//! passes the descriptor over a Unix socket (`SCM_RIGHTS`) to client processes
//! (`shm-foreign-peer`), which map it themselves and connect. Checksummed traffic, clients
//! SIGKILLed mid-stream, a killed server taken over, and what the evidence-free liveness
//! provider does with a killed client. Nothing of these tests has a name in `/dev/shm`.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shm_host::foreign::{Liveness, SemDoorbells};
use shm_host::{
    Client, ClientOptions, HostError, Refusal, Server, ServerEvent, ServerOptions, System,
};
use shm_tests::{eventually, memfd, unique_name, wire, Peer};

type ForeignServer<L> = Server<shm_host::foreign::ForeignSystem<SemDoorbells, L>>;

const PEER: &str = env!("CARGO_BIN_EXE_shm-foreign-peer");

/// The memfd, its server, and the socket that hands the descriptor to clients.
struct Host<L: Liveness> {
    label: String,
    fd: OwnedFd,
    server: ForeignServer<L>,
    listener: UnixListener,
    socket: PathBuf,
    /// `fd` (FdLiveness) or `assume` (AssumeAlive), for the peers.
    liveness: &'static str,
}

fn options() -> ServerOptions {
    ServerOptions {
        heartbeat: Duration::from_millis(20),
        ..ServerOptions::default()
    }
}

impl<L: Liveness> Host<L> {
    fn new(
        test: &str,
        liveness: &'static str,
        opts: ServerOptions,
        system: impl Fn(&OwnedFd) -> shm_host::foreign::ForeignSystem<SemDoorbells, L>,
    ) -> Self {
        let label = unique_name(test);
        assert!(no_shm_entry(&label));
        let fd = memfd::create(16 << 20).unwrap();
        let server = Server::create_on(system(&fd), &label, opts).unwrap();
        let socket = std::env::temp_dir().join(format!("{label}.sock"));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        Host {
            label,
            fd,
            server,
            listener,
            socket,
            liveness,
        }
    }

    /// Starts `shm-foreign-peer ROLE ...` and hands it the memfd.
    fn client(&self, role: &str, id: u32, count: u32) -> Peer {
        let socket = self.socket.to_str().unwrap();
        let (id, count) = (id.to_string(), count.to_string());
        let peer = Peer::spawn(PEER, &[role, socket, self.liveness, &id, &count]);
        let (stream, _) = eventually(Duration::from_secs(30), "the peer connects", || {
            self.listener.accept().ok()
        });
        stream.set_nonblocking(false).unwrap();
        memfd::send_fd(&stream, self.fd.as_fd()).unwrap();
        peer
    }

    /// Echoes every message until `stop`; returns how many it echoed.
    fn echo(&self, stop: &AtomicBool) -> u64 {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(msg) = self.server.recv_timeout(Duration::from_millis(10)).unwrap() {
                wire::decode(&msg.buffer).unwrap();
                n += 1;
                // A killed client's buffer comes back and is dropped.
                let _ = self.server.send(msg.from, msg.buffer, msg.tag);
            }
        }
        n
    }

    /// Everything is as it should be at the end: `check()` holds, the system lists no
    /// segment, and `/dev/shm` has nothing of this test.
    fn finish(self) {
        self.server.segment().check().unwrap();
        let mut listed = 0;
        System::list(self.server.segment().system(), &mut |_| listed += 1).unwrap();
        assert_eq!(listed, 0);
        let label = self.label.clone();
        let _ = std::fs::remove_file(&self.socket);
        drop(self.server);
        assert!(no_shm_entry(&label));
    }
}

/// Sets its flag when dropped: stops the echo thread also when the test body panics
/// (otherwise the scope would wait for it forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Whether `/dev/shm` has no entry whose name contains `label`.
fn no_shm_entry(label: &str) -> bool {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().contains(label))
}

/// Two client processes that got the memfd over the socket send 3,000 checksummed
/// messages each; every one arrives once, intact, and is echoed back intact (the peers
/// verify the echoes); afterwards the clients' memory is back and `check()` holds.
#[test]
fn memfd_passed_over_a_socket_carries_checksummed_traffic() {
    const CLIENTS: u32 = 2;
    const PER_CLIENT: u32 = 3_000;
    let host = Host::new("foreign-traffic", "fd", options(), |fd| {
        memfd::system(fd.as_fd()).unwrap()
    });
    let baseline = host.server.available_bytes().unwrap();
    let mut peers: Vec<Peer> = (0..CLIENTS)
        .map(|id| host.client("client", id, PER_CLIENT))
        .collect();
    let mut seen: HashSet<(u32, u32)> = HashSet::new();
    while seen.len() < (CLIENTS * PER_CLIENT) as usize {
        let msg = host
            .server
            .recv_timeout(Duration::from_secs(30))
            .unwrap()
            .unwrap_or_else(|| panic!("stalled after {} messages", seen.len()));
        let (client, seq) = wire::decode(&msg.buffer).unwrap();
        assert_eq!(msg.tag, seq, "tag travels with the message");
        assert!(seen.insert((client, seq)), "duplicate {client}/{seq}");
        host.server.send(msg.from, msg.buffer, msg.tag).unwrap();
    }
    for (id, p) in peers.iter_mut().enumerate() {
        assert_eq!(p.read_line(), format!("done {id} {PER_CLIENT}"));
        assert!(p.wait(Duration::from_secs(30)).success());
    }
    eventually(Duration::from_secs(30), "client memory returned", || {
        let _ = host.server.try_recv().unwrap();
        host.server.watchdog().unwrap();
        (host.server.segment().processes().unwrap().len() == 1).then_some(())
    });
    assert_eq!(host.server.available_bytes().unwrap(), baseline);
    host.finish();
}

/// Clients killed with SIGKILL mid-stream (three, at whatever point each kill lands,
/// while another client keeps streaming) are seen dead by the kernel evidence on the
/// memfd (`FdLiveness`): each is reported `Died` once, everything they held comes back -
/// free memory returns to its value from before any client came - and `check()` holds.
#[test]
fn killed_memfd_clients_give_back_all_memory() {
    let host = Host::new("foreign-kill", "fd", options(), |fd| {
        memfd::system(fd.as_fd()).unwrap()
    });
    let baseline = host.server.available_bytes().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let echoer = s.spawn(|| host.echo(&stop));
        let stopper = StopOnDrop(&stop);
        let mut survivor = host.client("stream", 99, 0);
        assert_eq!(survivor.read_line(), "ready");
        for round in 0..3u32 {
            let mut victim = host.client("stream", round, 0);
            assert_eq!(victim.read_line(), "ready");
            // Let it get into the middle of its traffic.
            std::thread::sleep(Duration::from_millis(30 + 17 * u64::from(round)));
            victim.kill();
        }
        let mut died = 0;
        eventually(Duration::from_secs(30), "three deaths noticed", || {
            for ev in std::iter::from_fn(|| host.server.try_event()) {
                if matches!(ev, ServerEvent::Died { .. }) {
                    died += 1;
                }
            }
            (died >= 3).then_some(())
        });
        assert_eq!(died, 3, "each killed client is declared dead once");
        survivor.kill();
        eventually(Duration::from_secs(30), "all clients reclaimed", || {
            (host.server.segment().processes().unwrap().len() == 1).then_some(())
        });
        drop(stopper);
        assert!(echoer.join().unwrap() > 0, "traffic flowed");
    });
    eventually(
        Duration::from_secs(10),
        "memory back to the baseline",
        || {
            let _ = host.server.try_recv().unwrap();
            (host.server.available_bytes().unwrap() == baseline).then_some(())
        },
    );
    host.finish();
}

/// Without evidence (`AssumeAlive` in every participant) a killed client is never
/// declared dead: the server reports it unresponsive once it misses its keepalives, the
/// watchdog reclaims nothing, and what it held stays held (the documented limit). A
/// client that leaves normally still gives everything back.
#[test]
fn without_evidence_a_killed_client_keeps_its_memory() {
    let host = Host::new(
        "foreign-assume",
        "assume",
        ServerOptions {
            max_missed: 5,
            ..options()
        },
        |fd| memfd::system_assuming_alive(fd.as_fd()).unwrap(),
    );
    let baseline = host.server.available_bytes().unwrap();
    let stop = AtomicBool::new(false);
    let mut victim_pid = 0;
    std::thread::scope(|s| {
        let echoer = s.spawn(|| host.echo(&stop));
        let stopper = StopOnDrop(&stop);
        // A client that leaves normally.
        let mut leaver = host.client("client", 1, 100);
        assert_eq!(leaver.read_line(), "done 1 100");
        assert!(leaver.wait(Duration::from_secs(30)).success());
        eventually(
            Duration::from_secs(30),
            "the leaver's memory returned",
            || (host.server.segment().processes().unwrap().len() == 1).then_some(()),
        );
        // A client killed while idle; stopped first, so that it is not holding the region
        // lock when it dies (a participant that dies holding it, with no evidence of its
        // death, blocks everyone for good).
        let mut victim = host.client("idle", 2, 100);
        assert_eq!(victim.read_line(), "done 2 100");
        let pid = victim.child.id();
        victim_pid = pid;
        eventually(Duration::from_secs(30), "stopped outside the lock", || {
            // SAFETY: signals our own child process.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
            let holder = host.server.segment().lock_holder();
            if holder.is_some_and(|h| h.pid == pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
                return None;
            }
            Some(())
        });
        victim.kill();
        eventually(
            Duration::from_secs(30),
            "the victim reported unresponsive",
            || {
                std::iter::from_fn(|| host.server.try_event())
                    .any(|ev| {
                        assert!(
                            !matches!(ev, ServerEvent::Died { .. }),
                            "declared dead without evidence"
                        );
                        matches!(ev, ServerEvent::Unresponsive { killed: false, .. })
                    })
                    .then_some(())
            },
        );
        drop(stopper);
        echoer.join().unwrap();
    });
    assert_eq!(
        host.server.watchdog().unwrap(),
        0,
        "nothing reclaimed on a guess"
    );
    let procs = host.server.segment().processes().unwrap();
    assert_eq!(procs.len(), 2, "the killed client stays registered");
    assert!(procs.iter().any(|p| p.id.pid == victim_pid));
    assert!(host.server.available_bytes().unwrap() < baseline);
    host.finish();
}

/// A server in the memfd whose process was killed is known dead by the kernel evidence
/// (`FdLiveness`): a second server is refused while the first lives, takes the memory
/// over once it is killed (generation 2, the dead server reclaimed), and a client of the
/// old server reconnects to the new one.
#[test]
fn a_killed_memfd_server_is_taken_over() {
    let label = unique_name("foreign-takeover");
    let fd = memfd::create(8 << 20).unwrap();
    let socket = std::env::temp_dir().join(format!("{label}.sock"));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut old = Peer::spawn(PEER, &["serve", socket.to_str().unwrap(), "fd", "0"]);
    let (stream, _) = eventually(Duration::from_secs(30), "the peer connects", || {
        listener.accept().ok()
    });
    stream.set_nonblocking(false).unwrap();
    memfd::send_fd(&stream, fd.as_fd()).unwrap();
    assert_eq!(old.read_line(), "serving 1");

    let client = Client::connect_on(
        memfd::system(fd.as_fd()).unwrap(),
        &label,
        ClientOptions::default(),
    )
    .unwrap();
    client.wait_connected(Duration::from_secs(10)).unwrap();
    client
        .send(client.alloc_from(b"first").unwrap(), 1)
        .unwrap();
    let echo = client
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(&echo.buffer[..], b"first");
    drop(echo);

    match Server::create_on(memfd::system(fd.as_fd()).unwrap(), &label, options()) {
        Err(HostError::TakeoverRefused {
            why: Refusal::ServerAlive,
            ..
        }) => {}
        other => panic!("expected ServerAlive, got {:?}", other.err()),
    }
    old.kill();
    let server = Server::create_on(memfd::system(fd.as_fd()).unwrap(), &label, options()).unwrap();
    assert_eq!(server.generation(), 2);

    let err = client
        .send(client.alloc_from(b"lost").unwrap(), 2)
        .unwrap_err();
    assert!(
        matches!(err.error, HostError::Core(shm_core::Error::ServerRestarted)),
        "{}",
        err.error
    );
    client.reconnect().unwrap();
    client.send(err.buffer, 3).unwrap();
    let msg = server
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!((&msg.buffer[..], msg.tag), (&b"lost"[..], 3));
    server.send(msg.from, msg.buffer, 4).unwrap();
    let echo = client
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(echo.tag, 4);
    drop(echo);
    // Registered now: the new server and the client; the killed server was reclaimed.
    assert_eq!(server.segment().processes().unwrap().len(), 2);
    server.segment().check().unwrap();
    drop(client);
    drop(server);
    let _ = std::fs::remove_file(&socket);
    assert!(no_shm_entry(&label));
}
