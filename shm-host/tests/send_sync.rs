//! The thread-safety promises of shm-host's public types, checked at compile time (a
//! broken promise fails the build of this test), for every `System` and for the native
//! one. What must not compile is in `tests/compile_fail/`.

use shm_host::{
    Buffer, Client, HostError, Message, NativeSystem, PeerId, Segment, SendError, Server, System,
};

const fn send_sync<T: Send + Sync>() {}

const fn promises<S: System>() {
    // Documented: every method takes `&self`; receiving is serialised inside.
    send_sync::<Server<S>>();
    send_sync::<Client<S>>();
    // Documented: the block belongs to the process; `&Buffer` only reads (the
    // compile-fail case `shared_buffer_is_read_only` pins that half).
    send_sync::<Buffer<S>>();
    // What receiving returns and a failed send hands back: moved to worker threads.
    send_sync::<Message<S>>();
    send_sync::<SendError<S>>();
    // `Server::segment()`/`Client::segment()` are reachable from every thread that shares
    // a server or client.
    send_sync::<Segment<S>>();
}

const _: () = {
    promises::<NativeSystem>();
    send_sync::<PeerId>();
    // Errors travel between threads (`Box<dyn Error + Send + Sync>`, `anyhow`).
    send_sync::<HostError>();
};
