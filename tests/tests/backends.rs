//! Linux's other kinds of segment with real processes: System V segments (`SysvSystem`)
//! and file-backed segments (`FileSystem`).
//!
//! For each: client processes stream checksummed messages through a server on that kind
//! while one of them is SIGKILLed mid-stream; the survivor's every echo checks out, the
//! killed client's memory comes back to the last byte, `check()` holds, and after the
//! server's clean stop nothing is left (`ipcs -m` and `/dev/shm` for System V; the file,
//! which outlives its server by design, is removed by the test). And a file-backed
//! segment survives server restarts with its blocks intact: blocks written under one
//! server process are read, unchanged, by the next one, after a clean stop and after a
//! SIGKILL. Kept blocks outlive every process: written and kept by one client, read back
//! by another client of the next server, after all processes stopped or were killed. A
//! System V segment is taken over only once the kernel says its server died.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shm_host::{
    Client, ClientOptions, FileSystem, HostError, Segment, SegmentName, Server, ServerEvent,
    ServerOptions, System, SysvSystem,
};
use shm_tests::{eventually, peer_exe, unique_name, wire, Peer};

const PATIENCE: Duration = Duration::from_secs(60);

/// Echoes every message until `stop`; returns how many it echoed.
fn echo<S: System>(server: &Server<S>, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(msg) = server.recv_timeout(Duration::from_millis(10)).unwrap() {
            n += 1;
            // The sender may have been killed: then the buffer comes back and is dropped.
            let _ = server.send(msg.from, msg.buffer, msg.tag);
        }
    }
    n
}

/// The traffic test on `system` (named `backend` for the peers): a survivor client sends
/// 3,000 checksummed messages while a streaming client is SIGKILLed mid-stream; the
/// survivor finishes with every echo verified, the victim is declared dead once, the
/// server's available bytes return to their value from before any client came, and
/// `check()` passes. Returns with the server stopped (dropped).
fn killed_client_mid_stream<S: System>(system: S, backend: &str, name: &str) {
    let server = Server::create_on(
        system,
        name,
        ServerOptions {
            size: 8 << 20,
            heartbeat: Duration::from_millis(20),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let baseline = server.available_bytes().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let echoer = s.spawn(|| echo(&server, &stop));
        let mut survivor =
            Peer::spawn_on(peer_exe!(), backend, &["client", name, "7", "3000", "8"]);
        let mut victim = Peer::spawn_on(peer_exe!(), backend, &["stream", name, "1"]);
        assert_eq!(victim.read_line(), "ready");
        // Let it get into the middle of its traffic.
        std::thread::sleep(Duration::from_millis(50));
        victim.kill();
        assert_eq!(survivor.read_line(), "done 7 3000");
        assert!(survivor.wait(PATIENCE).success());
        let mut died = 0;
        eventually(PATIENCE, "the killed client declared dead", || {
            for ev in std::iter::from_fn(|| server.try_event()) {
                if matches!(ev, ServerEvent::Died { .. }) {
                    died += 1;
                }
            }
            (died >= 1).then_some(())
        });
        assert_eq!(died, 1, "only the killed client died, once");
        eventually(PATIENCE, "every client gone", || {
            (server.segment().processes().unwrap().len() == 1).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        assert!(echoer.join().unwrap() >= 3000, "traffic flowed");
    });
    eventually(PATIENCE, "memory back to the baseline", || {
        let _ = server.try_recv().unwrap();
        (server.available_bytes().unwrap() == baseline).then_some(())
    });
    server.segment().check().unwrap();
}

/// Whether `/proc/sysvipc/shm` lists a segment at `key`.
fn sysv_key_present(key: i32) -> bool {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().next() == Some(&key.to_string()))
}

/// System V: the traffic test, then nothing left: no segment at the name's key in the
/// kernel's table (what `ipcs -m` shows), no lock file in `/dev/shm`.
#[test]
fn sysv_segments_carry_traffic_through_a_kill_and_leave_nothing() {
    let name = unique_name("sysv-traffic");
    let seg_name = SegmentName::new(&name).unwrap();
    let key = SysvSystem::key(&seg_name);
    let _ = SysvSystem.unlink(&seg_name); // a leftover of a crashed run
    killed_client_mid_stream(SysvSystem, "sysv", &name);
    assert!(!sysv_key_present(key), "segment left in ipcs -m");
    assert!(
        !SysvSystem::lock_path(&seg_name).exists(),
        "lock file left in /dev/shm"
    );
    assert!(!shm_tests::shm_path(&name).exists());
}

/// System V takeover follows the identity rules: a second server is refused while the
/// first one's process lives (the kernel holds its mark on the lock file), and takes the
/// segment over once that process was SIGKILLed (a new generation in the same segment,
/// the dead server reclaimed); its clean stop then removes the segment and lock file.
#[test]
fn sysv_takeover_waits_for_the_kernel_to_say_dead() {
    let name = unique_name("sysv-takeover");
    let seg_name = SegmentName::new(&name).unwrap();
    let _ = SysvSystem.unlink(&seg_name);
    let mut first = Peer::spawn_on(peer_exe!(), "sysv", &["server", &name]);
    assert_eq!(first.read_line(), "serving 1");
    let refused = Server::create_on(SysvSystem, &name, ServerOptions::default()).err();
    assert!(
        matches!(
            refused,
            Some(HostError::TakeoverRefused {
                why: shm_host::Refusal::ServerAlive,
                ..
            })
        ),
        "{refused:?}"
    );
    first.kill();
    let second = Server::create_on(SysvSystem, &name, ServerOptions::default()).unwrap();
    assert_eq!(second.generation(), 2);
    assert_eq!(second.segment().processes().unwrap().len(), 1);
    second.segment().check().unwrap();
    drop(second);
    assert!(!sysv_key_present(SysvSystem::key(&seg_name)));
    assert!(!SysvSystem::lock_path(&seg_name).exists());
}

/// A file path for `test` in the build's scratch directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(test: &str) -> TempFile {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{}.heap", unique_name(test)));
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Files: the traffic test; the server's clean stop keeps the file (its heap outlives its
/// processes) holding a heap that passes `check()` with no process registered; the test
/// removes it.
#[test]
fn file_segments_carry_traffic_through_a_kill() {
    let file = TempFile::new("file-traffic");
    let name = unique_name("file-traffic");
    let backend = format!("file:{}", file.0.display());
    killed_client_mid_stream(FileSystem::file(&file.0), &backend, &name);
    assert!(file.0.exists(), "a clean stop keeps the file");
    let seg = Segment::open(FileSystem::file(&file.0), &SegmentName::new(&name).unwrap()).unwrap();
    seg.check().unwrap();
    assert!(seg.processes().unwrap().is_empty());
    drop(seg);
    std::fs::remove_file(&file.0).unwrap();
    assert!(!shm_tests::shm_path(&name).exists());
}

/// The blocks the client holds: written once, each checked against its checksum.
const BLOCKS: u32 = 40;

/// Sends every held buffer to the server (which echoes it) and checks each echo: the
/// bytes are the ones written before the restart.
fn round_trip(
    client: &Client<FileSystem>,
    held: Vec<shm_host::Buffer<FileSystem>>,
) -> Vec<shm_host::Buffer<FileSystem>> {
    let mut back = Vec::new();
    for (seq, buf) in (0..).zip(held) {
        assert_eq!(
            wire::decode(&buf).unwrap(),
            (5, seq),
            "written bytes changed"
        );
        client.send(buf, seq).map_err(|e| e.error).unwrap();
        let msg = client.recv_timeout(PATIENCE).unwrap().expect("an echo");
        assert_eq!(msg.tag, seq);
        assert_eq!(wire::decode(&msg.buffer).unwrap(), (5, seq));
        back.push(msg.buffer);
    }
    back
}

/// A file-backed segment survives server restarts with its blocks intact. A client
/// process (this one) writes checksummed blocks and has them echoed by server process 1;
/// that server stops cleanly (flushes, keeps the file); server process 2 attaches to the
/// same heap (generation 2, not a new heap) and reads every block back unchanged; it is
/// SIGKILLed, and server process 3 recovers the heap (reclaims the dead server) and reads
/// them again. At the end, the heap is whole: `check()` passes and nothing is leaked.
#[test]
fn a_file_segment_survives_server_restarts_with_its_blocks() {
    let file = TempFile::new("file-restart");
    let name = unique_name("file-restart");
    let backend = format!("file:{}", file.0.display());
    let system = FileSystem::file(&file.0);

    let mut s1 = Peer::spawn_on(peer_exe!(), &backend, &["server", &name]);
    assert_eq!(s1.read_line(), "serving 1");
    let client = Client::connect_on(system.clone(), &name, ClientOptions::default()).unwrap();
    client.wait_connected(PATIENCE).unwrap();
    let free_before = client.segment().stats().unwrap().free_bytes;
    let mut held = Vec::new();
    for seq in 0..BLOCKS {
        let size = wire::HEADER + wire::body_len(5, seq);
        let mut buf = client.alloc(size).unwrap();
        buf.resize(size).unwrap();
        wire::encode(buf.as_mut_slice().unwrap(), 5, seq);
        held.push(buf);
    }
    let held = round_trip(&client, held);

    // A clean stop: flushed, the file stays.
    s1.write_line("quit");
    assert_eq!(s1.read_line(), "bye");
    assert!(s1.wait(PATIENCE).success());
    assert!(file.0.exists());

    let mut s2 = Peer::spawn_on(peer_exe!(), &backend, &["server", &name]);
    assert_eq!(
        s2.read_line(),
        "serving 2",
        "the same heap, a new server generation"
    );
    let err = client
        .send(client.alloc_from(b"x").unwrap(), 0)
        .unwrap_err()
        .error;
    assert!(
        matches!(err, HostError::Core(shm_core::Error::ServerRestarted)),
        "{err}"
    );
    client.reconnect().unwrap();
    client.wait_connected(PATIENCE).unwrap();
    let held = round_trip(&client, held);

    // A crash: the next server recovers the heap and reclaims the dead one.
    s2.kill();
    let mut s3 = Peer::spawn_on(peer_exe!(), &backend, &["server", &name]);
    assert_eq!(s3.read_line(), "serving 3");
    eventually(PATIENCE, "the client rejoins", || {
        client.reconnect().ok()?;
        client.wait_connected(Duration::from_secs(1)).ok()
    });
    let held = round_trip(&client, held);
    client.segment().check().unwrap();

    drop(held);
    drop(client);
    s3.write_line("quit");
    assert_eq!(s3.read_line(), "bye");
    assert!(s3.wait(PATIENCE).success());
    // Nobody left: the heap in the file is whole, every block the processes held is free
    // again, and it has at least the free bytes it had with a server and a client in it.
    let seg = Segment::open(system, &SegmentName::new(&name).unwrap()).unwrap();
    seg.check().unwrap();
    assert!(seg.processes().unwrap().is_empty());
    assert!(seg.stats().unwrap().free_bytes >= free_before);
    assert_eq!(seg.server_status().generation, 3);
}

/// A sequence number whose wire message has a body of at least 1 KiB.
fn long_message_seq() -> u32 {
    (0..)
        .find(|&seq| wire::body_len(KEPT_CLIENT, seq) >= 1024)
        .unwrap()
}

/// The client number the peer's `keep` role writes into its message.
const KEPT_CLIENT: u32 = 77;

/// Kept data outlives every process. Server process 1 serves a file-backed segment;
/// client process 1 writes a checksummed message, keeps it, names it the kept root and
/// flushes; then every process ends (`kill`: both SIGKILLed; otherwise the server stops
/// cleanly and the client exits). With nobody running, the file holds one kept block.
/// Server process 2 starts on the file (recovering the heap, reclaiming the dead), and
/// client process 2 takes the kept root, verifies the checksum, fails to take it twice
/// and frees it. Then `check()` holds, no kept block is left, and the test removes the
/// file.
fn kept_data_outlives_every_process(kill: bool) {
    let test = if kill { "kept-kill" } else { "kept-stop" };
    let file = TempFile::new(test);
    let name = unique_name(test);
    let backend = format!("file:{}", file.0.display());
    let system = FileSystem::file(&file.0);
    let seg_name = SegmentName::new(&name).unwrap();
    let seq = long_message_seq();

    let mut s1 = Peer::spawn_on(peer_exe!(), &backend, &["server", &name]);
    assert_eq!(s1.read_line(), "serving 1");
    let mut keeper = Peer::spawn_on(peer_exe!(), &backend, &["keep", &name, &seq.to_string()]);
    let line = keeper.read_line();
    let at: u32 = line
        .strip_prefix("kept ")
        .unwrap_or_else(|| panic!("keeper said {line:?}"))
        .parse()
        .unwrap();
    if kill {
        keeper.kill();
        s1.kill();
    } else {
        keeper.write_line("exit");
        assert!(keeper.wait(PATIENCE).success());
        s1.write_line("quit");
        assert_eq!(s1.read_line(), "bye");
        assert!(s1.wait(PATIENCE).success());
    }

    // Nobody runs: the file alone holds the heap, and the kept block in it.
    let seg = Segment::open(system.clone(), &seg_name).unwrap();
    assert_eq!(seg.stats().unwrap().kept_blocks, 1);
    drop(seg);

    let mut s2 = Peer::spawn_on(peer_exe!(), &backend, &["server", &name]);
    assert_eq!(s2.read_line(), "serving 2", "the same heap, recovered");
    let mut taker = Peer::spawn_on(peer_exe!(), &backend, &["take", &name]);
    assert_eq!(taker.read_line(), format!("took {KEPT_CLIENT} {seq} {at}"));
    assert!(taker.wait(PATIENCE).success());
    s2.write_line("quit");
    assert_eq!(s2.read_line(), "bye");
    assert!(s2.wait(PATIENCE).success());

    let seg = Segment::open(system, &seg_name).unwrap();
    let rep = seg.check().unwrap();
    assert_eq!(rep.kept_blocks, 0, "the taker freed the kept block");
    assert!(seg.processes().unwrap().is_empty());
    drop(seg);
    std::fs::remove_file(&file.0).unwrap();
    assert!(!file.0.exists());
}

/// See [`kept_data_outlives_every_process`]: every process ends cleanly.
#[test]
fn kept_data_outlives_every_process_after_clean_exits() {
    kept_data_outlives_every_process(false);
}

/// See [`kept_data_outlives_every_process`]: every process is SIGKILLed.
#[test]
fn kept_data_outlives_every_process_after_sigkill() {
    kept_data_outlives_every_process(true);
}

/// A segment file is a file anyone with write access can edit: attaching to a damaged
/// one (bytes of the region flipped, among them the kept root, the kept blocks and the
/// header; the region zeroed; the file cut short) gives a server, a client and the kept
/// data, or an error, never a panic, a crash or a hang.
#[test]
fn damaged_segment_files_give_errors() {
    let file = TempFile::new("file-damaged");
    let name = unique_name("file-damaged");
    let files = FileSystem::file(&file.0);
    let opts = ServerOptions {
        size: 256 << 10,
        ..ServerOptions::default()
    };
    {
        let server = Server::create_on(files.clone(), &name, opts).unwrap();
        let client = Client::connect_on(files.clone(), &name, ClientOptions::default()).unwrap();
        for i in 0..8u8 {
            let at = client.keep(client.alloc_from(&[i; 300]).unwrap()).unwrap();
            client.set_kept_root(Some(at)).unwrap();
        }
        server.flush().unwrap();
    }
    let intact = std::fs::read(&file.0).unwrap();
    let root = {
        let seg = Segment::open(files.clone(), &SegmentName::new(&name).unwrap()).unwrap();
        seg.kept_root().unwrap().get() as usize
    };
    const HEADER: usize = 4096;
    // Where to damage: the file header, the region header, the root block, then spread.
    let mut spots: Vec<usize> = (0..24).chain(HEADER..HEADER + 320).step_by(3).collect();
    spots.extend((HEADER + root - 48..HEADER + root + 48).step_by(2));
    spots.extend((HEADER..intact.len()).step_by(4093));
    // How far each attempt got: 1 a server, 2 a client too, 3 the kept root taken.
    let attempt = |bytes: &[u8]| -> u32 {
        std::fs::write(&file.0, bytes).unwrap();
        let server = match Server::create_on(files.clone(), &name, opts) {
            Ok(s) => s,
            Err(_) => return 0,
        };
        let _ = server.segment().check();
        if let Ok(client) = Client::connect_on(
            files.clone(),
            &name,
            ClientOptions {
                connect_timeout: Duration::from_millis(200),
                ..ClientOptions::default()
            },
        ) {
            if let Some(root) = client.kept_root() {
                if let Ok(b) = client.take(root) {
                    let _ = b.len();
                    let _ = client.keep(b);
                    return 3;
                }
            }
            return 2;
        }
        1
    };
    let mut taken = 0;
    for (n, &at) in spots.iter().enumerate() {
        let mut damaged = intact.clone();
        damaged[at] ^= [0x01, 0x80, 0xff][n % 3];
        taken += u32::from(attempt(&damaged) == 3);
    }
    // Most damage misses what a server and a client use: the damage did reach the paths.
    assert!(
        taken as usize > spots.len() / 2,
        "{taken} of {}",
        spots.len()
    );
    let mut zeroed = intact.clone();
    zeroed[HEADER..].fill(0);
    assert_eq!(attempt(&zeroed), 0);
    assert_eq!(attempt(&intact[..intact.len() / 2]), 0);
    assert_eq!(attempt(&intact[..HEADER + 100]), 0);
    assert_eq!(attempt(&intact), 3);
}

/// A segment file whose creator died after writing the file's header page but before
/// formatting the region (here: `System::create`, then nothing) is refused, with the
/// reason, and left as it is: it could be a live creator's file a moment before it
/// formats. Once it is deleted, a server makes it anew.
#[test]
fn an_unformatted_segment_file_is_refused_until_deleted() {
    let file = TempFile::new("file-unformatted");
    let name = unique_name("file-unformatted");
    let files = FileSystem::file(&file.0);
    let opts = ServerOptions {
        size: 256 << 10,
        ..ServerOptions::default()
    };
    let creator = files
        .create(
            &SegmentName::new(&name).unwrap(),
            opts.size,
            Default::default(),
        )
        .unwrap();
    drop(creator);
    let refused = Server::create_on(files.clone(), &name, opts).err();
    let why = refused.map(|e| e.to_string()).unwrap_or_default();
    println!("refused: {why}");
    assert!(why.contains("no region header"), "{why}");
    assert!(file.0.exists(), "a refused file is left alone");
    std::fs::remove_file(&file.0).unwrap();
    let server = Server::create_on(files, &name, opts).unwrap();
    server.segment().check().unwrap();
}
