// The raw heap of a segment (which names any offset and hands out payload pointers) is
// reached only through `unsafe`.
use shm_host::Server;

fn raw_heap(server: &Server) {
    let _heap = server.segment().heap();
}

fn main() {}
