// `Buffer` is `Sync` because `&Buffer` only reads: writing needs `&mut Buffer`.
use std::io::Write;

use shm_host::Buffer;

fn write_through_shared(buffer: &Buffer) {
    buffer.as_mut_slice().expect("owned").fill(0);
    buffer.write_all(b"x").expect("room");
}

fn main() {}
