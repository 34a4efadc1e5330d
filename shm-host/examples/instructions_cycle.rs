//! A fixed workload for counting instructions per message cycle, the noise-free
//! complement of `shmipc bench`'s timings: in one process, a client allocates 8 bytes,
//! writes them, sends the buffer to the server, and the server receives it (polling) and
//! frees it. Nothing crosses a core, so this counts the work, not the cache traffic.
//!
//! Run it under callgrind twice; the difference in instructions divided by the
//! difference in cycles is the cost of one cycle:
//!
//! ```text
//! cargo build --release -p shm-host --example instructions_cycle
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/instructions_cycle 100
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/instructions_cycle 5100
//! ```

use std::io::Write;

use shm_host::{Client, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cycles: usize = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 5_000,
    };
    let name = format!("instructions-cycle-{}", std::process::id());
    let server = Server::create(&name, 16 << 20)?;
    let client = Client::connect(&name)?;
    for _ in 0..cycles {
        let mut buf = client.alloc(8)?;
        buf.write_all(b"12345678")?;
        client.send(buf, 7)?;
        let msg = loop {
            if let Some(m) = server.try_recv()? {
                break m;
            }
        };
        drop(msg);
    }
    Ok(())
}
