//! A server and a client in one process, through `Server::create` and `Client::connect`:
//! the same code on Linux, Windows and QNX, where the native system is shm-qnx's
//! `QnxSystem`. CI type-checks it for QNX 7.1 and 8.0 (`.ci/run`) and runs it here.
//!
//! `cargo run -p shm-host --example ping`

use std::io::Write;
use std::time::Duration;

use shm_host::{Client, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("ping-{}", std::process::id());
    let server = Server::create(&name, 1 << 20)?;
    let client = Client::connect(&name)?;

    let mut buf = client.alloc(64)?;
    buf.write_all(b"ping")?;
    client.send(buf, 1)?;

    let msg = server
        .recv_timeout(Duration::from_secs(5))?
        .ok_or("no message within 5 s")?;
    println!("server got {:?} from {}", &msg.buffer[..], msg.from);
    // The same block goes back, uncopied.
    server.send(msg.from, msg.buffer, 2)?;

    let reply = client
        .recv_timeout(Duration::from_secs(5))?
        .ok_or("no reply within 5 s")?;
    println!("client got its block back with tag {}", reply.tag);
    Ok(())
}
