//! The C interface of shm-host: `libshm.a`/`libshm.so` and the header `include/shm.h`
//! (generated from this crate by cbindgen; CI fails when the committed copy is stale).
//!
//! It wraps the safe API - [`shm_host::Server`], [`shm_host::Client`],
//! [`shm_host::Buffer`] - in opaque handles:
//!
//! - `shm_server`, `shm_client`: `Send + Sync` in Rust, so a handle may be used from any
//!   thread, concurrently, except that closing it needs it to itself.
//! - `shm_buffer`: a block of the segment owned by this process. A successful send
//!   consumes the handle and sets the caller's variable to NULL (the block is the
//!   receiver's now); so does `shm_buffer_free`. A failed send leaves the buffer with the
//!   caller. Read-only calls take `const shm_buffer *`; calls that change it take
//!   `shm_buffer *` and need it to themselves. Writable data is copied first when other
//!   processes co-own the block (a broadcast), so a write never reaches them.
//!
//! Every fallible function returns an [`shm_error`] code; [`error::shm_strerror`] gives
//! its static text and [`error::shm_last_error`] the calling thread's last detailed
//! message. No Rust panic crosses into C: each function catches them
//! (`SHM_ERR_INTERNAL`). Every pointer argument is checked for NULL
//! (`SHM_ERR_NULL_POINTER`); whatever else a pointer must be (live, writable,
//! NUL-terminated) is written in each function's `# Safety` section and its C comment.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod buffer;
pub mod client;
pub mod error;
pub mod server;
pub mod types;

pub use buffer::shm_buffer;
pub use client::{shm_client, shm_client_options};
pub use error::shm_error;
pub use server::{shm_server, shm_server_options};
pub use types::{shm_event, shm_message, shm_peer, shm_stats};

// What the thread-safety sentences of the C documentation rest on: the wrapped types are
// shared between threads (`const` handles) and moved between them.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<shm_host::Server>();
    send_sync::<shm_host::Client>();
    send_sync::<shm_host::Buffer>();
};
