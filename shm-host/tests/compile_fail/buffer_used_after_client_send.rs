// `send` takes the buffer by value: once sent, its block belongs to the receiver and the
// sender cannot touch it.
use shm_host::Client;

fn send_then_read(client: &Client) -> shm_host::Result<usize> {
    let buffer = client.alloc(64)?;
    client.send(buffer, 1)?;
    Ok(buffer.len())
}

fn main() {}
