//! `shmipc send NAME --tag N [FILE|-]`: connect, send one buffer holding the file (or
//! stdin), wait until the server has taken it, exit. On a full segment it waits for memory
//! (up to `--timeout`) instead of failing.

use std::io::Read;
use std::time::Duration;

use shm_host::{Backend, Client, ClientOptions, OnSystem, System};

/// Arguments of `send`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Segment name.
    pub name: String,
    /// The message tag.
    #[arg(long)]
    pub tag: u32,
    /// File to send; `-` or nothing reads stdin.
    pub file: Option<String>,
    /// How long to wait for memory on a full segment, and then for the server to take
    /// the message.
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    pub timeout: u64,
    /// The kind of segment: native, posix, sysv or file:PATH.
    #[arg(long, default_value = "native")]
    pub backend: Backend,
}

/// Sends one message.
pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let backend = args.backend.clone();
    backend.run(SendOne(args))?
}

struct SendOne(Args);

impl OnSystem for SendOne {
    type Output = Result<(), Box<dyn std::error::Error>>;
    fn on<S: System>(self, system: S) -> Self::Output {
        send(system, self.0)
    }
}

fn send<S: System>(system: S, args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect_on(system, &args.name, ClientOptions::default())?;
    let wait = Duration::from_secs(args.timeout);
    let buffer = match args.file.as_deref() {
        None | Some("-") => {
            let mut data = Vec::new();
            std::io::stdin().read_to_end(&mut data)?;
            let mut b = client.alloc_timeout(data.len(), wait)?;
            b.extend_from_slice(&data)?;
            b
        }
        Some(path) => {
            // Read the file straight into shared memory.
            let mut f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
            let len = usize::try_from(f.metadata()?.len())?;
            let mut b = client.alloc_timeout(len, wait)?;
            b.resize(len)?;
            f.read_exact(b.as_mut_slice()?)
                .map_err(|e| format!("{path}: {e}"))?;
            b
        }
    };
    let len = buffer.len();
    client.send_and_wait(buffer, args.tag, wait)?;
    println!("sent {len} bytes with tag {} to {}", args.tag, args.name);
    Ok(())
}
