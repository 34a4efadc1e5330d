//! `shmipc serve NAME`: a server in the foreground, one line per event and message.

use std::sync::atomic::Ordering;
use std::time::Duration;

use shm_host::{
    checksum, Backend, Mapping, OnSystem, RecvMode, Server, ServerEvent, ServerOptions, System,
};

use crate::util::parse_size;

/// Arguments of `serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Segment name.
    pub name: String,
    /// Segment size (e.g. 16MiB), used when the segment is created.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub size: usize,
    /// How to wait for messages: busy, blocking, adaptive.
    #[arg(long, default_value = "adaptive")]
    pub mode: RecvMode,
    /// The kind of segment: native (posix on Linux), posix, sysv, or file:PATH (a file
    /// whose heap outlives the server: a clean stop keeps it).
    #[arg(long, default_value = "native")]
    pub backend: Backend,
}

/// Serves until SIGINT/SIGTERM, then removes the segment (keeps a file-backed one).
pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let backend = args.backend.clone();
    backend.run(Serve(args))?
}

struct Serve(Args);

impl OnSystem for Serve {
    type Output = Result<(), Box<dyn std::error::Error>>;
    fn on<S: System>(self, system: S) -> Self::Output {
        serve(system, self.0)
    }
}

fn serve<S: System>(system: S, args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let stop = shm_host::install_stop_handler()?;
    let server = Server::create_on(
        system.clone(),
        &args.name,
        ServerOptions {
            size: args.size,
            recv_mode: args.mode,
            ..ServerOptions::default()
        },
    )?;
    println!(
        "serving {} (generation {}, {} bytes); Ctrl-C stops",
        args.name,
        server.generation(),
        server.segment().mapping().len()
    );
    while !stop.load(Ordering::SeqCst) {
        while let Some(ev) = server.try_event() {
            print_event(ev);
        }
        if let Some(msg) = server.recv_timeout(Duration::from_millis(100))? {
            println!(
                "message from {} tag {} bytes {} checksum {:#010x}",
                msg.from,
                msg.tag,
                msg.buffer.len(),
                checksum(&msg.buffer)
            );
        }
    }
    while let Some(ev) = server.try_event() {
        print_event(ev);
    }
    let segment = server.segment().name().clone();
    if let Backend::File(path) = &args.backend {
        // The heap stays in the file for the next server; written through first.
        let flushed = server.flush();
        drop(server);
        flushed.map_err(|e| format!("stopped, but flushing {} failed: {e}", path.display()))?;
        println!("stopped; segment {} kept in {}", args.name, path.display());
        return Ok(());
    }
    // Dropping the server unlinks the segment but cannot report a failure, so look for the
    // name afterwards. (Where a segment vanishes with its last handle, `list` is empty:
    // nothing can be left behind.)
    drop(server);
    match shm_host::support::list_segments(&system) {
        Ok(names) if names.contains(&segment) => Err(format!(
            "stopped, but segment {} was not removed (`shmipc clean` removes it once unused)",
            args.name
        )
        .into()),
        Ok(_) => {
            println!("stopped; segment {} removed", args.name);
            Ok(())
        }
        Err(e) => Err(format!(
            "stopped, but could not check that segment {} was removed: {e}",
            args.name
        )
        .into()),
    }
}

fn print_event(ev: ServerEvent) {
    match ev {
        ServerEvent::Connected(c) => println!("connected {c}"),
        ServerEvent::Disconnected(c) => println!("disconnected {c}"),
        ServerEvent::Died {
            client,
            reason,
            bytes_freed,
        } => println!("died {client} ({reason:?}), {bytes_freed} bytes reclaimed"),
        ServerEvent::Unresponsive {
            client,
            missed,
            killed,
        } => println!(
            "unresponsive {client}: missed {missed} keepalives; disconnected{}, memory kept until it exits",
            if killed { " and killed" } else { "" }
        ),
    }
}
