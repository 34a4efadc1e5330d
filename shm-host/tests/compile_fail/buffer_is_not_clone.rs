// A buffer is the one handle to its block: it cannot be duplicated (sharing a block with
// other processes is `Server::broadcast`, which counts its owners).
use shm_host::Buffer;

fn is_clone<T: Clone>() {}

fn main() {
    is_clone::<Buffer>();
}
