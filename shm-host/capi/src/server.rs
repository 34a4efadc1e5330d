//! [`shm_server`]: creating and closing a server, allocating, sending, broadcasting,
//! receiving, events and statistics.

use std::ffi::{c_char, CStr};
use std::ptr;

use shm_host::{CreateOptions, Mapping, Server, ServerOptions};

use crate::buffer::{buffer_ref, new_handle, send_through, shm_buffer};
use crate::error::{call, Failure};
use crate::shm_error;
use crate::types::{
    millis, recv_mode, recv_mode_fields, shm_event, shm_message, shm_peer, shm_stats,
};

/// The server of a segment. Opaque; only pointers to it exist in C.
///
/// Thread-safety: every function that takes `const shm_server *` may be called from any
/// thread, also at the same time from several (receiving is serialised inside: a queue
/// has one consumer; sending and allocating run in parallel). Only `shm_server_close`
/// needs the server to itself. A background thread of the library sends heartbeats and
/// reclaims dead clients. A child made by `fork` cannot act with its parent's server.
#[allow(non_camel_case_types)]
pub struct shm_server {
    inner: Server,
}

/// `shm_server_options.flags`: touch every page at creation, so no page fault happens
/// later on the hot path.
pub const SHM_SERVER_PREFAULT: u32 = 1;
/// `shm_server_options.flags`: kill a client that stopped answering keepalives, where the
/// system can confirm which process it is (Linux).
pub const SHM_SERVER_KILL_UNRESPONSIVE: u32 = 2;

/// Server settings. Start from `shm_server_options_default()` and change fields.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub struct shm_server_options {
    /// Segment size in bytes, used when the segment is created (at most 4 GiB).
    pub size: u64,
    /// Heartbeat interval in milliseconds (not 0).
    pub heartbeat_ms: u32,
    /// Missed heartbeats after which a client is declared unresponsive and disconnected.
    pub max_missed: u32,
    /// Slots in the server's queue (a power of two).
    pub queue_capacity: u32,
    /// How receiving waits: an `shm_recv_mode` value.
    pub recv_mode: u32,
    /// With `SHM_RECV_ADAPTIVE`: microseconds to spin before sleeping.
    pub spin_us: u32,
    /// Permission bits of a created segment on POSIX systems (default 0600).
    pub permissions: u32,
    /// `SHM_SERVER_PREFAULT`, `SHM_SERVER_KILL_UNRESPONSIVE`, or 0.
    pub flags: u32,
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<shm_server_options>() == 40);
    assert!(offset_of!(shm_server_options, heartbeat_ms) == 8);
    assert!(offset_of!(shm_server_options, flags) == 32);
};

impl From<ServerOptions> for shm_server_options {
    fn from(o: ServerOptions) -> Self {
        let (recv_mode, spin_us) = recv_mode_fields(o.recv_mode);
        let mut flags = 0;
        if o.create.prefault {
            flags |= SHM_SERVER_PREFAULT;
        }
        if o.kill_unresponsive {
            flags |= SHM_SERVER_KILL_UNRESPONSIVE;
        }
        shm_server_options {
            size: o.size as u64,
            heartbeat_ms: u32::try_from(o.heartbeat.as_millis()).unwrap_or(u32::MAX),
            max_missed: o.max_missed,
            queue_capacity: o.queue_capacity,
            recv_mode,
            spin_us,
            permissions: o.create.mode,
            flags,
        }
    }
}

/// The Rust options `o` (from C, any values) describe.
fn server_options(o: shm_server_options) -> Result<ServerOptions, Failure> {
    if o.heartbeat_ms == 0 {
        return Err(Failure::invalid("heartbeat_ms is 0"));
    }
    if o.flags & !(SHM_SERVER_PREFAULT | SHM_SERVER_KILL_UNRESPONSIVE) != 0 {
        return Err(Failure::invalid(format!("unknown flags {:#x}", o.flags)));
    }
    let size = usize::try_from(o.size)
        .map_err(|_| Failure::invalid(format!("size {} is too large", o.size)))?;
    Ok(ServerOptions {
        size,
        heartbeat: millis(o.heartbeat_ms),
        max_missed: o.max_missed,
        queue_capacity: o.queue_capacity,
        recv_mode: recv_mode(o.recv_mode, o.spin_us)?,
        create: CreateOptions {
            mode: o.permissions,
            prefault: o.flags & SHM_SERVER_PREFAULT != 0,
        },
        kill_unresponsive: o.flags & SHM_SERVER_KILL_UNRESPONSIVE != 0,
        ..ServerOptions::default()
    })
}

/// The default settings: 16 MiB, heartbeat 100 ms, 20 missed heartbeats, 1024 queue
/// slots, adaptive receiving (50 us of spinning), permissions 0600, no flags.
///
/// Thread-safety: any thread.
#[no_mangle]
pub extern "C" fn shm_server_options_default() -> shm_server_options {
    ServerOptions::default().into()
}

/// The server behind `p`.
///
/// # Safety
/// `p` is NULL or a live server handle.
unsafe fn get<'a>(p: *const shm_server) -> Result<&'a Server, Failure> {
    // SAFETY: by the contract, `p` is NULL (refused by `as_ref`) or a live handle; a
    // server is `Sync`, so shared use from several threads is sound.
    unsafe { p.as_ref() }
        .map(|s| &s.inner)
        .ok_or_else(|| Failure::null("server"))
}

/// The segment name behind `name`.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
pub(crate) unsafe fn name_str<'a>(name: *const c_char) -> Result<&'a str, Failure> {
    if name.is_null() {
        return Err(Failure::null("name"));
    }
    // SAFETY: not NULL, and NUL-terminated by the contract.
    let name = unsafe { CStr::from_ptr(name) };
    name.to_str()
        .map_err(|_| Failure::invalid("the segment name is not UTF-8"))
}

/// Writes `value` to the out-parameter `out`, refusing NULL.
///
/// # Safety
/// `out` is NULL or writable.
pub(crate) unsafe fn put<T>(out: *mut T, value: T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null("out"));
    }
    // SAFETY: not NULL and writable by the contract; `write` does not read or drop what
    // was there (C may pass uninitialised memory).
    unsafe { out.write(value) };
    Ok(())
}

/// Creates segment `name` (or takes over one whose server died) and starts serving it;
/// the new server is in `*out`. `options` may be NULL for the defaults.
///
/// An existing segment is taken over only when it belongs to the same user, its
/// permissions are no wider than asked for and its server is known to be dead; otherwise
/// `SHM_ERR_TAKEOVER_REFUSED`.
///
/// Ownership: the caller owns the server and closes it with `shm_server_close`. The name
/// and options are only read during the call. Thread-safety: any thread.
///
/// # Safety
/// `name` is a NUL-terminated string; `options` is NULL or readable; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn shm_server_create(
    name: *const c_char,
    options: *const shm_server_options,
    out: *mut *mut shm_server,
) -> shm_error {
    call(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: `out` is writable by the contract; NULL until a server exists.
        unsafe { out.write(ptr::null_mut()) };
        // SAFETY: the caller's contract.
        let name = unsafe { name_str(name) }?;
        // SAFETY: NULL or readable by the contract.
        let opts = match unsafe { options.as_ref() } {
            None => ServerOptions::default(),
            Some(o) => server_options(*o)?,
        };
        let server = Server::create_with(name, opts)?;
        let handle = Box::into_raw(Box::new(shm_server { inner: server }));
        // SAFETY: as above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Stops the server: tells connected clients it is stopping, withdraws it from the
/// segment, removes the segment's name, frees the handle and sets `*server` to NULL.
/// Does nothing if `server` or `*server` is NULL.
///
/// Buffers obtained from the server stay valid (they keep the segment mapped) and must
/// still be freed.
///
/// Thread-safety: any thread, with the server to itself: no other call on it may run or
/// start meanwhile.
///
/// # Safety
/// `server` is NULL or points to a variable holding NULL or a live server handle.
#[no_mangle]
pub unsafe extern "C" fn shm_server_close(server: *mut *mut shm_server) {
    crate::error::value((), || {
        // SAFETY: by the contract, NULL or a handle variable.
        let Some(slot) = (unsafe { server.as_mut() }) else {
            return;
        };
        let handle = std::mem::replace(slot, ptr::null_mut());
        if !handle.is_null() {
            // SAFETY: from `Box::into_raw` in `shm_server_create`; the variable no longer
            // holds it, so it is freed once.
            drop(unsafe { Box::from_raw(handle) });
        }
    })
}

/// This server's identity in the segment, in `*out`.
///
/// Thread-safety: any thread, concurrently with other calls.
///
/// # Safety
/// `server` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_server_id(server: *const shm_server, out: *mut shm_peer) -> shm_error {
    // SAFETY: the caller's contract.
    call(|| unsafe { put(out, get(server)?.id().into()) })
}

/// A buffer for at least `size` bytes of data (empty, length 0), in `*out`. On a full
/// segment, fails at once with `SHM_ERR_OUT_OF_MEMORY` (after reclaiming dead processes).
///
/// Ownership: the caller owns the buffer: free it or send it. Thread-safety: any thread,
/// concurrently with other calls.
///
/// # Safety
/// `server` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_server_alloc(
    server: *const shm_server,
    size: usize,
    out: *mut *mut shm_buffer,
) -> shm_error {
    call(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: the caller's contract.
        let s = unsafe { get(server) }?;
        let b = s.alloc(size)?;
        // SAFETY: `out` is not NULL and writable.
        unsafe { put(out, new_handle(b)) }
    })
}

/// Like `shm_server_alloc`, but on a full segment waits up to `timeout_ms` for other
/// processes to free memory (`SHM_ERR_TIMEOUT` when none comes; `SHM_ERR_TOO_LARGE` at
/// once for a request that can never fit).
///
/// Ownership and thread-safety: as `shm_server_alloc`.
///
/// # Safety
/// As `shm_server_alloc`.
#[no_mangle]
pub unsafe extern "C" fn shm_server_alloc_timeout(
    server: *const shm_server,
    size: usize,
    timeout_ms: u32,
    out: *mut *mut shm_buffer,
) -> shm_error {
    call(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: the caller's contract.
        let s = unsafe { get(server) }?;
        let b = s.alloc_timeout(size, millis(timeout_ms))?;
        // SAFETY: `out` is not NULL and writable.
        unsafe { put(out, new_handle(b)) }
    })
}

/// Sends the buffer `*buffer` to client `to` with `tag`: the block moves to the client,
/// nothing is copied.
///
/// Ownership: on `SHM_OK` the buffer is consumed: its handle is freed and `*buffer` is
/// set to NULL; every pointer obtained from it is invalid (the client owns the block
/// now). On any error the buffer stays the caller's, unchanged (`SHM_ERR_QUEUE_FULL`:
/// the client is behind, try again; `SHM_ERR_PEER_GONE`: that client - that process, not
/// a later one in its slot - is no longer connected). A buffer from another server or
/// client is refused with `SHM_ERR_INVALID_ARGUMENT`.
///
/// Thread-safety: any thread, concurrently with other calls on the server; the buffer
/// must be the caller's alone.
///
/// # Safety
/// `server` is NULL or a live handle; `buffer` is NULL or points to a variable holding
/// NULL or a live buffer handle.
#[no_mangle]
pub unsafe extern "C" fn shm_server_send(
    server: *const shm_server,
    to: shm_peer,
    buffer: *mut *mut shm_buffer,
    tag: u32,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let s = unsafe { get(server) }?;
        let mapping = s.segment().mapping();
        // SAFETY: the caller's contract.
        unsafe { send_through(buffer, mapping, |b| s.send(to.into(), b, tag)) }
    })
}

/// Sends the same bytes to every connected client without copying: each becomes a
/// co-owner of the block, freed when the last owner releases it. The server keeps its
/// buffer (still to be freed); writing to it afterwards through `shm_buffer_data_mut`
/// copies it first, so clients never see a change.
///
/// `*sent` and `*failed` (either may be NULL) receive how many clients it reached and
/// how many it could not (their queue was full or they left); the call succeeds either
/// way.
///
/// Thread-safety: any thread, concurrently with other calls on the server; the buffer
/// must be the caller's alone. Earlier `shm_buffer_data_mut` pointers to it are invalid
/// afterwards (the block is shared now).
///
/// # Safety
/// `server` and `buffer` are NULL or live handles; `sent` and `failed` are NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn shm_server_broadcast(
    server: *const shm_server,
    buffer: *mut shm_buffer,
    tag: u32,
    sent: *mut usize,
    failed: *mut usize,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let s = unsafe { get(server) }?;
        // SAFETY: the caller's contract.
        let b = unsafe { buffer_ref(buffer) }?;
        let start = s.segment().mapping().as_ptr() as usize;
        let at = b.as_ptr() as usize;
        if at < start || at - start >= s.segment().mapping().len() {
            return Err(Failure::invalid(
                "the buffer belongs to another server or client",
            ));
        }
        let report = s.broadcast(b, tag);
        if !sent.is_null() {
            // SAFETY: not NULL, writable by the contract.
            unsafe { sent.write(report.sent.len()) };
        }
        if !failed.is_null() {
            // SAFETY: not NULL, writable by the contract.
            unsafe { failed.write(report.failed.len()) };
        }
        Ok(())
    })
}

/// Writes a received message to `out` (with a new buffer handle), or NULL fields and
/// `empty` when nothing came.
fn deliver(
    out: *mut shm_message,
    got: Result<Option<shm_host::Message>, shm_host::HostError>,
    empty: shm_error,
) -> Result<(), Failure> {
    let msg = got?;
    let (value, result) = match msg {
        Some(m) => (
            shm_message {
                from: m.from.into(),
                tag: m.tag,
                buffer: new_handle(m.buffer),
            },
            Ok(()),
        ),
        None => (
            shm_message {
                from: shm_peer { slot: 0, serial: 0 },
                tag: 0,
                buffer: ptr::null_mut(),
            },
            Err(Failure::new(empty, "no message")),
        ),
    };
    // SAFETY: `out` was checked not NULL by the caller of `deliver` and is writable by
    // its contract.
    unsafe { out.write(value) };
    result
}

/// Clears `*out` so that a failed receive leaves a NULL buffer in it.
///
/// # Safety
/// `out` is NULL or writable.
pub(crate) unsafe fn clear_message(out: *mut shm_message) -> Result<(), Failure> {
    // SAFETY: the caller's contract.
    unsafe {
        put(
            out,
            shm_message {
                from: shm_peer { slot: 0, serial: 0 },
                tag: 0,
                buffer: ptr::null_mut(),
            },
        )
    }
}

/// Writes a receive's result into `out`.
///
/// # Safety
/// `out` is NULL or writable.
pub(crate) unsafe fn receive(
    out: *mut shm_message,
    got: impl FnOnce() -> Result<Option<shm_host::Message>, shm_host::HostError>,
    empty: shm_error,
) -> Result<(), Failure> {
    // SAFETY: the caller's contract.
    unsafe { clear_message(out) }?;
    deliver(out, got(), empty)
}

/// Waits for the next message from any client and puts it in `*out` (the buffer is the
/// caller's: free it or send it on). Connections and disconnections are handled inside
/// and reported as events.
///
/// Thread-safety: any thread; receives from several threads are serialised (one queue,
/// one consumer), other calls run in parallel.
///
/// # Safety
/// `server` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_server_recv(
    server: *const shm_server,
    out: *mut shm_message,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let s = unsafe { get(server) }?;
        // SAFETY: the caller's contract.
        unsafe { receive(out, || s.recv().map(Some), shm_error::SHM_ERR_TIMEOUT) }
    })
}

/// The next message if one is waiting, in `*out`; `SHM_ERR_EMPTY` (and a NULL
/// `out->buffer`) if none is. Never waits (with `SHM_RECV_BUSY`, poll this in a loop).
///
/// Ownership and thread-safety: as `shm_server_recv`.
///
/// # Safety
/// As `shm_server_recv`.
#[no_mangle]
pub unsafe extern "C" fn shm_server_try_recv(
    server: *const shm_server,
    out: *mut shm_message,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let s = unsafe { get(server) }?;
        // SAFETY: the caller's contract.
        unsafe { receive(out, || s.try_recv(), shm_error::SHM_ERR_EMPTY) }
    })
}

/// The next message, waiting at most `timeout_ms`, in `*out`; `SHM_ERR_TIMEOUT` (and a
/// NULL `out->buffer`) if none came.
///
/// Ownership and thread-safety: as `shm_server_recv`.
///
/// # Safety
/// As `shm_server_recv`.
#[no_mangle]
pub unsafe extern "C" fn shm_server_recv_timeout(
    server: *const shm_server,
    timeout_ms: u32,
    out: *mut shm_message,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let s = unsafe { get(server) }?;
        // SAFETY: the caller's contract.
        unsafe {
            receive(
                out,
                || s.recv_timeout(millis(timeout_ms)),
                shm_error::SHM_ERR_TIMEOUT,
            )
        }
    })
}

/// The next event about a client (connected, disconnected, unresponsive, died), in
/// `*out`; `SHM_ERR_EMPTY` if none is waiting.
///
/// Thread-safety: any thread, concurrently with other calls (each event goes to one
/// caller).
///
/// # Safety
/// `server` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_server_try_event(
    server: *const shm_server,
    out: *mut shm_event,
) -> shm_error {
    call(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: the caller's contract.
        let s = unsafe { get(server) }?;
        match s.try_event() {
            // SAFETY: not NULL, writable by the contract.
            Some(e) => unsafe { put(out, e.into()) },
            None => Err(Failure::new(shm_error::SHM_ERR_EMPTY, "no event")),
        }
    })
}

/// The next event, waiting at most `timeout_ms`, in `*out`; `SHM_ERR_TIMEOUT` if none
/// came.
///
/// Thread-safety: as `shm_server_try_event`.
///
/// # Safety
/// As `shm_server_try_event`.
#[no_mangle]
pub unsafe extern "C" fn shm_server_event_timeout(
    server: *const shm_server,
    timeout_ms: u32,
    out: *mut shm_event,
) -> shm_error {
    call(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: the caller's contract.
        let s = unsafe { get(server) }?;
        match s.event_timeout(millis(timeout_ms)) {
            // SAFETY: not NULL, writable by the contract.
            Some(e) => unsafe { put(out, e.into()) },
            None => Err(Failure::new(shm_error::SHM_ERR_TIMEOUT, "no event")),
        }
    })
}

/// How many clients are connected, in `*out`.
///
/// Thread-safety: any thread, concurrently with other calls.
///
/// # Safety
/// `server` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_server_client_count(
    server: *const shm_server,
    out: *mut usize,
) -> shm_error {
    // SAFETY: the caller's contract.
    call(|| unsafe { put(out, get(server)?.clients().len()) })
}

/// The segment's heap statistics, in `*out`.
///
/// Thread-safety: any thread, concurrently with other calls.
///
/// # Safety
/// `server` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_server_stats(
    server: *const shm_server,
    out: *mut shm_stats,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let stats = unsafe { get(server) }?.segment().stats()?;
        // SAFETY: the caller's contract.
        unsafe { put(out, stats.into()) }
    })
}

/// Free bytes of the segment plus the server's unused keepalive reserve, in `*out`.
/// Unlike `shm_stats.free_bytes` it does not drift with heartbeats: once every client is
/// gone (cleanly or reclaimed after a crash) it is back to its value from before they
/// came.
///
/// Thread-safety: any thread, concurrently with other calls.
///
/// # Safety
/// `server` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_server_available_bytes(
    server: *const shm_server,
    out: *mut u64,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let bytes = unsafe { get(server) }?.available_bytes()?;
        // SAFETY: the caller's contract.
        unsafe { put(out, bytes) }
    })
}

/// Checks every invariant of the segment's structures: `SHM_OK`, or `SHM_ERR_CORRUPTED`
/// with the first broken invariant in `shm_last_error()`.
///
/// Thread-safety: any thread, concurrently with other calls (it holds the segment's
/// lock while it walks, so other processes wait meanwhile).
///
/// # Safety
/// `server` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shm_server_check(server: *const shm_server) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        unsafe { get(server) }?.segment().check()?;
        Ok(())
    })
}

/// Runs the watchdog now: reclaims every process known to be dead; how many, in `*out`
/// (which may be NULL). The library's heartbeat thread does this on its own.
///
/// Thread-safety: any thread, concurrently with other calls.
///
/// # Safety
/// `server` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_server_watchdog(
    server: *const shm_server,
    out: *mut u32,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract.
        let n = unsafe { get(server) }?.watchdog()?;
        if !out.is_null() {
            // SAFETY: not NULL, writable by the contract.
            unsafe { out.write(n) };
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults the documentation of `shm_server_options_default` lists, and that
    /// they convert back unchanged.
    #[test]
    fn documented_defaults() {
        let o = shm_server_options_default();
        assert_eq!(o.size, 16 << 20);
        assert_eq!(
            (o.heartbeat_ms, o.max_missed, o.queue_capacity),
            (100, 20, 1024)
        );
        assert_eq!(
            (o.recv_mode, o.spin_us, o.permissions, o.flags),
            (2, 50, 0o600, 0)
        );
        let back = server_options(o).unwrap();
        let d = ServerOptions::default();
        assert_eq!(
            (back.size, back.heartbeat, back.recv_mode),
            (d.size, d.heartbeat, d.recv_mode)
        );
        assert_eq!(back.create, d.create);
    }

    /// Out-of-range option values from C are refused, not trusted.
    #[test]
    fn bad_options_are_refused() {
        let mut o = shm_server_options_default();
        o.heartbeat_ms = 0;
        assert!(server_options(o).is_err());
        let mut o = shm_server_options_default();
        o.recv_mode = 3;
        assert!(server_options(o).is_err());
        let mut o = shm_server_options_default();
        o.flags = 4;
        assert!(server_options(o).is_err());
        let mut o = shm_server_options_default();
        o.flags = SHM_SERVER_PREFAULT | SHM_SERVER_KILL_UNRESPONSIVE;
        let back = server_options(o).unwrap();
        assert!(back.create.prefault && back.kill_unresponsive);
    }
}
