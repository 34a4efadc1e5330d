//! The comparison: iceoryx2's publish/subscribe between this process and a peer, two
//! services (`a2b` out, `b2a` back), busy polling, configured as iceoryx2's own
//! publish/subscribe benchmark is (no history, a subscriber buffer of one with safe
//! overflow, slices of `u8` with the maximum length set to the payload size). Each way:
//! loan a slice of the payload size, write the stamp into it, send, receive, check the
//! stamp, release the sample (drop it). One peer per payload size.

use std::mem::MaybeUninit;

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use shm_tests::Peer;

use crate::link::{self, PingPong, Res};
use crate::ours::ANSWER;
use crate::stamp::{self, Kind, Stamp};

type Pub = Publisher<ipc::Service, [u8], ()>;
type Sub = Subscriber<ipc::Service, [u8], ()>;

/// A node and its two ports: publishing on `prefix/out`, subscribed to `prefix/back`.
struct Ports {
    publisher: Pub,
    subscriber: Sub,
    // Dropped last: the ports belong to it.
    _node: Node<ipc::Service>,
}

/// An iceoryx2 error, saying what was being done.
fn err<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> String {
    move |e| format!("iceoryx2: {what}: {e:?}")
}

impl Ports {
    fn open(prefix: &str, out: &str, back: &str, max_len: usize) -> Res<Ports> {
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new()
            .signal_handling_mode(SignalHandlingMode::Disabled)
            .create::<ipc::Service>()
            .map_err(err("creating the node"))?;
        let service = |name: &str| {
            let name = format!("{prefix}/{name}");
            let name = ServiceName::new(&name).map_err(err("service name"))?;
            node.service_builder(&name)
                .publish_subscribe::<[u8]>()
                .history_size(0)
                .subscriber_max_buffer_size(1)
                .enable_safe_overflow(true)
                .open_or_create()
                .map_err(err("opening the service"))
        };
        let publisher = service(out)?
            .publisher_builder()
            .initial_max_slice_len(max_len)
            .create()
            .map_err(err("creating the publisher"))?;
        let subscriber = service(back)?
            .subscriber_builder()
            .create()
            .map_err(err("creating the subscriber"))?;
        Ok(Ports {
            publisher,
            subscriber,
            _node: node,
        })
    }

    /// Loans a slice of `len` bytes, writes `st` into its start and sends it.
    fn send(&self, len: usize, st: Stamp) -> Res<()> {
        let mut sample = self
            .publisher
            .loan_slice_uninit(len.max(stamp::LEN))
            .map_err(err("loaning"))?;
        for (to, b) in sample.payload_mut().iter_mut().zip(st.bytes()) {
            *to = MaybeUninit::new(b);
        }
        // SAFETY: the slice lies in a shared-memory mapping, whose bytes are always
        // initialised (the kernel's zeros, or an earlier sample's bytes); `MaybeUninit` only
        // says that iceoryx2 promises nothing about what they are. Nobody reads past the
        // stamp, which was just written. (iceoryx2's own benchmark sends such slices.)
        let sample = unsafe { sample.assume_init() };
        sample.send().map_err(err("sending"))?;
        Ok(())
    }

    /// A received sample, if one is there; its stamp checked and the sample released.
    fn receive(&self) -> Res<Option<(Stamp, usize)>> {
        let Some(sample) = self.subscriber.receive().map_err(err("receiving"))? else {
            return Ok(None);
        };
        let st = Stamp::read(sample.payload())?;
        Ok(Some((st, sample.payload().len())))
    }
}

/// This process's end of the iceoryx2 row for one payload size.
pub struct Iceoryx {
    ports: Ports,
    peer: Peer,
}

impl Iceoryx {
    /// Creates the services and ports for `len`-byte payloads and starts the peer.
    pub fn start(len: usize) -> Res<Iceoryx> {
        let prefix = format!("shm-ipc-bench/{}/{len}", std::process::id());
        let ports = Ports::open(&prefix, "a2b", "b2a", len.max(stamp::LEN))?;
        let mut peer = link::spawn_peer("iceoryx2", &[&prefix, &len.to_string()])?;
        let line = peer.read_line();
        if line != "ready" {
            return Err(format!(
                "the iceoryx2 peer said {line:?} instead of `ready`"
            ));
        }
        Ok(Iceoryx { ports, peer })
    }
}

impl PingPong for Iceoryx {
    fn round_trip(&mut self, len: usize, seq: u64) -> Res<()> {
        self.ports.send(len, Stamp::data(seq, len))?;
        let ports = &self.ports;
        let (st, got) = link::spin_until(&mut self.peer, || ports.receive())?;
        if st != Stamp::data(seq | ANSWER, len) || got < len {
            return Err(format!(
                "answer {st:?} of {got} bytes; expected seq {seq}, {len} bytes"
            ));
        }
        Ok(())
    }

    fn pause(&mut self) -> Res<()> {
        self.ports.send(stamp::LEN, Stamp::control(Kind::Pause))?;
        // The subscriber holds one sample and the next would overwrite it: wait for the
        // peer's echo of the pause, so that it cannot miss one (and a wait).
        let ports = &self.ports;
        let (st, _) = link::spin_until(&mut self.peer, || ports.receive())?;
        if st != Stamp::control(Kind::Pause) {
            return Err(format!("{st:?} instead of the pause's echo"));
        }
        Ok(())
    }

    fn stop(&mut self) -> Res<()> {
        self.ports.send(stamp::LEN, Stamp::control(Kind::Stop))
    }

    fn peer(&mut self) -> &mut Peer {
        &mut self.peer
    }
}

/// The peer: answers every data sample with a fresh sample of the same size until told
/// to stop; at its start and after a pause (which it echoes) it blocks until the bench
/// resumes it.
pub fn peer(prefix: &str, len: &str) -> Res<()> {
    let max_len: usize = len.parse().map_err(|_| format!("bad length {len:?}"))?;
    let ports = Ports::open(prefix, "b2a", "a2b", max_len.max(stamp::LEN))?;
    println!("ready");
    let mut received = 0u64;
    link::wait_resume()?;
    loop {
        let Some((st, got)) = ports.receive()? else {
            continue;
        };
        match st.kind {
            Kind::Pause => {
                ports.send(stamp::LEN, Stamp::control(Kind::Pause))?;
                link::wait_resume()?;
            }
            Kind::Stop => break,
            Kind::Data => {
                received += 1;
                let len = st.len as usize;
                if got < len {
                    return Err(format!("{st:?} came in {got} bytes"));
                }
                ports.send(len, Stamp::data(st.seq | ANSWER, len))?;
            }
        }
    }
    println!("done {received}");
    Ok(())
}
