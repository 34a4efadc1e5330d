//! [`shm_client`]: connecting to a segment's server, allocating, sending, receiving,
//! statistics.

use std::ffi::c_char;
use std::ptr;

use shm_host::{Client, ClientOptions};

use crate::buffer::{new_handle, send_through, shm_buffer};
use crate::error::{call, value, Failure};
use crate::server::{name_str, put, receive};
use crate::shm_error;
use crate::types::{millis, recv_mode, recv_mode_fields, shm_message, shm_peer, shm_stats};

/// A client of a segment's server. Opaque; only pointers to it exist in C.
///
/// Thread-safety: every function that takes `const shm_client *` may be called from any
/// thread, also at the same time from several (receiving is serialised inside; sending
/// and allocating run in parallel). Only `shm_client_close` needs the client to itself.
/// A background thread of the library takes the server's keepalives, so the server sees
/// a live client even while the application does not receive. A child made by `fork`
/// cannot act with its parent's client; it connects anew.
#[allow(non_camel_case_types)]
pub struct shm_client {
    inner: Client,
}

/// Client settings. Start from `shm_client_options_default()` and change fields.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub struct shm_client_options {
    /// Slots in the client's queue (a power of two).
    pub queue_capacity: u32,
    /// How receiving waits: an `shm_recv_mode` value.
    pub recv_mode: u32,
    /// With `SHM_RECV_ADAPTIVE`: microseconds to spin before sleeping.
    pub spin_us: u32,
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<shm_client_options>() == 12);
    assert!(offset_of!(shm_client_options, spin_us) == 8);
};

/// The default settings: 256 queue slots, adaptive receiving (50 us of spinning).
///
/// Thread-safety: any thread.
#[no_mangle]
pub extern "C" fn shm_client_options_default() -> shm_client_options {
    let o = ClientOptions::default();
    let (recv_mode, spin_us) = recv_mode_fields(o.recv_mode);
    shm_client_options {
        queue_capacity: o.queue_capacity,
        recv_mode,
        spin_us,
    }
}

/// The client behind `p`.
///
/// # Safety
/// `p` is NULL or a live client handle.
unsafe fn get<'a>(p: *const shm_client) -> Result<&'a Client, Failure> {
    // SAFETY: by the contract, `p` is NULL (refused by `as_ref`) or a live handle; a
    // client is `Sync`, so shared use from several threads is sound.
    unsafe { p.as_ref() }
        .map(|c| &c.inner)
        .ok_or_else(|| Failure::null("client"))
}

/// Connects to the server of segment `name`; the client is in `*out`. `options` may be
/// NULL for the defaults. Fails with `SHM_ERR_NOT_FOUND` if the segment does not exist
/// and `SHM_ERR_NO_SERVER` if no live server runs in it.
///
/// Returns once the connection request is in the server's queue: messages sent from now
/// on reach the server after it. `shm_client_wait_connected` waits for the answer.
///
/// Ownership: the caller owns the client and closes it with `shm_client_close`. The
/// name and options are only read during the call. Thread-safety: any thread.
///
/// # Safety
/// `name` is a NUL-terminated string; `options` is NULL or readable; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn shm_client_connect(
    name: *const c_char,
    options: *const shm_client_options,
    out: *mut *mut shm_client,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract; NULL until a client exists.
        unsafe { put(out, ptr::null_mut()) }?;
        // SAFETY: the caller's contract.
        let name = unsafe { name_str(name) }?;
        // SAFETY: NULL or readable by the contract.
        let opts = match unsafe { options.as_ref() } {
            None => ClientOptions::default(),
            Some(o) => ClientOptions {
                queue_capacity: o.queue_capacity,
                recv_mode: recv_mode(o.recv_mode, o.spin_us)?,
                ..ClientOptions::default()
            },
        };
        let client = Client::connect_with(name, opts)?;
        let handle = Box::into_raw(Box::new(shm_client { inner: client }));
        // SAFETY: `out` is writable (checked above).
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Disconnects from the server, frees the handle and sets `*client` to NULL. Does
/// nothing if `client` or `*client` is NULL. What the client still owns in the segment
/// (its queue) is freed; buffers obtained from it stay valid and must still be freed.
///
/// Thread-safety: any thread, with the client to itself: no other call on it may run or
/// start meanwhile.
///
/// # Safety
/// `client` is NULL or points to a variable holding NULL or a live client handle.
#[no_mangle]
pub unsafe extern "C" fn shm_client_close(client: *mut *mut shm_client) {
    value((), || {
        // SAFETY: by the contract, NULL or a handle variable.
        let Some(slot) = (unsafe { client.as_mut() }) else {
            return;
        };
        let handle = std::mem::replace(slot, ptr::null_mut());
        if !handle.is_null() {
            // SAFETY: from `Box::into_raw` in `shm_client_connect`; the variable no
            // longer holds it, so it is freed once.
            drop(unsafe { Box::from_raw(handle) });
        }
    })
}

/// Waits up to `timeout_ms` until the server has accepted the connection
/// (`SHM_ERR_DISCONNECTED` if it refused, `SHM_ERR_TIMEOUT` if it did not answer).
/// Messages that arrive meanwhile are dropped: call this before expecting any.
///
/// Thread-safety: any thread; it receives, so it is serialised with receives.
///
/// # Safety
/// `client` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shm_client_wait_connected(
    client: *const shm_client,
    timeout_ms: u32,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        unsafe { get(client) }?.wait_connected(millis(timeout_ms))?;
        Ok(())
    })
}

/// Connects again, to the server now registered in the segment (after
/// `SHM_ERR_SERVER_RESTARTED`: a new server took over the segment of one that died).
///
/// Thread-safety: any thread, concurrently with other calls.
///
/// # Safety
/// `client` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shm_client_reconnect(client: *const shm_client) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        unsafe { get(client) }?.reconnect()?;
        Ok(())
    })
}

/// This client's identity in the segment (as the server sees it in `shm_message.from`),
/// in `*out`.
///
/// Thread-safety: any thread, concurrently with other calls.
///
/// # Safety
/// `client` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_client_id(client: *const shm_client, out: *mut shm_peer) -> shm_error {
    // SAFETY: the caller's contract.
    call(|| unsafe { put(out, get(client)?.id().into()) })
}

/// A buffer for at least `size` bytes of data (empty, length 0), in `*out`. On a full
/// segment, fails at once with `SHM_ERR_OUT_OF_MEMORY` (after reclaiming dead processes);
/// `SHM_ERR_DISCONNECTED` once the server disconnected this client.
///
/// Ownership: the caller owns the buffer: free it or send it. Thread-safety: any thread,
/// concurrently with other calls.
///
/// # Safety
/// `client` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_client_alloc(
    client: *const shm_client,
    size: usize,
    out: *mut *mut shm_buffer,
) -> shm_error {
    call(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: the caller's contract.
        let b = unsafe { get(client) }?.alloc(size)?;
        // SAFETY: `out` is not NULL and writable.
        unsafe { put(out, new_handle(b)) }
    })
}

/// Like `shm_client_alloc`, but on a full segment waits up to `timeout_ms` for other
/// processes to free memory (`SHM_ERR_TIMEOUT` when none comes; `SHM_ERR_TOO_LARGE` at
/// once for a request that can never fit).
///
/// Ownership and thread-safety: as `shm_client_alloc`.
///
/// # Safety
/// As `shm_client_alloc`.
#[no_mangle]
pub unsafe extern "C" fn shm_client_alloc_timeout(
    client: *const shm_client,
    size: usize,
    timeout_ms: u32,
    out: *mut *mut shm_buffer,
) -> shm_error {
    call(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: the caller's contract.
        let b = unsafe { get(client) }?.alloc_timeout(size, millis(timeout_ms))?;
        // SAFETY: `out` is not NULL and writable.
        unsafe { put(out, new_handle(b)) }
    })
}

/// Sends the buffer `*buffer` to the server with `tag`: the block moves to the server,
/// nothing is copied.
///
/// Ownership: on `SHM_OK` the buffer is consumed: its handle is freed and `*buffer` is
/// set to NULL; every pointer obtained from it is invalid (the server owns the block
/// now). On any error the buffer stays the caller's, unchanged (`SHM_ERR_QUEUE_FULL`:
/// the server is behind, try again; `SHM_ERR_NO_SERVER`, `SHM_ERR_SERVER_RESTARTED`,
/// `SHM_ERR_DISCONNECTED`: the server went away). A buffer from another server or client
/// is refused with `SHM_ERR_INVALID_ARGUMENT`.
///
/// Thread-safety: any thread, concurrently with other calls on the client; the buffer
/// must be the caller's alone.
///
/// # Safety
/// `client` is NULL or a live handle; `buffer` is NULL or points to a variable holding
/// NULL or a live buffer handle.
#[no_mangle]
pub unsafe extern "C" fn shm_client_send(
    client: *const shm_client,
    buffer: *mut *mut shm_buffer,
    tag: u32,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let c = unsafe { get(client) }?;
        let mapping = c.segment().mapping();
        // SAFETY: the caller's contract.
        unsafe { send_through(buffer, mapping, |b| c.send(b, tag)) }
    })
}

/// Waits for the next message from the server and puts it in `*out` (the buffer is the
/// caller's: free it or send it back). Fails (`SHM_ERR_DISCONNECTED`, `SHM_ERR_NO_SERVER`,
/// ...) once the server is gone instead of waiting forever.
///
/// Thread-safety: any thread; receives from several threads are serialised (one queue,
/// one consumer), other calls run in parallel.
///
/// # Safety
/// `client` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_client_recv(
    client: *const shm_client,
    out: *mut shm_message,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let c = unsafe { get(client) }?;
        // SAFETY: the caller's contract.
        unsafe { receive(out, || c.recv().map(Some), shm_error::SHM_ERR_TIMEOUT) }
    })
}

/// The next message if one is waiting, in `*out`; `SHM_ERR_EMPTY` (and a NULL
/// `out->buffer`) if none is. Never waits (with `SHM_RECV_BUSY`, poll this in a loop).
///
/// Ownership and thread-safety: as `shm_client_recv`.
///
/// # Safety
/// As `shm_client_recv`.
#[no_mangle]
pub unsafe extern "C" fn shm_client_try_recv(
    client: *const shm_client,
    out: *mut shm_message,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let c = unsafe { get(client) }?;
        // SAFETY: the caller's contract.
        unsafe { receive(out, || c.try_recv(), shm_error::SHM_ERR_EMPTY) }
    })
}

/// The next message, waiting at most `timeout_ms`, in `*out`; `SHM_ERR_TIMEOUT` (and a
/// NULL `out->buffer`) if none came.
///
/// Ownership and thread-safety: as `shm_client_recv`.
///
/// # Safety
/// As `shm_client_recv`.
#[no_mangle]
pub unsafe extern "C" fn shm_client_recv_timeout(
    client: *const shm_client,
    timeout_ms: u32,
    out: *mut shm_message,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let c = unsafe { get(client) }?;
        // SAFETY: the caller's contract.
        unsafe {
            receive(
                out,
                || c.recv_timeout(millis(timeout_ms)),
                shm_error::SHM_ERR_TIMEOUT,
            )
        }
    })
}

/// The segment's heap statistics, in `*out`.
///
/// Thread-safety: any thread, concurrently with other calls.
///
/// # Safety
/// `client` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_client_stats(
    client: *const shm_client,
    out: *mut shm_stats,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let stats = unsafe { get(client) }?.segment().stats()?;
        // SAFETY: the caller's contract.
        unsafe { put(out, stats.into()) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults the documentation of `shm_client_options_default` lists.
    #[test]
    fn documented_defaults() {
        let o = shm_client_options_default();
        assert_eq!((o.queue_capacity, o.recv_mode, o.spin_us), (256, 2, 50));
    }
}
