// The server's `send` moves the received buffer too: passing a block on leaves no handle
// to it behind.
use shm_host::Server;

fn echo_then_read(server: &Server) -> shm_host::Result<usize> {
    let msg = server.recv()?;
    server.send(msg.from, msg.buffer, 2)?;
    Ok(msg.buffer.len())
}

fn main() {}
