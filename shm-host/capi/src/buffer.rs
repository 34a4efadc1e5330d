//! [`shm_buffer`]: a message buffer in the segment, owned by this process, as a C handle.
//!
//! A handle is created by an alloc or a receive and ends in exactly one of two ways:
//! `shm_buffer_free`, or a successful send, which consumes it (the block belongs to the
//! receiver now). Both take the caller's handle variable by address and set it to NULL,
//! so a later use of that variable fails with `SHM_ERR_NULL_POINTER` instead of touching
//! memory that is no longer this process's.

use std::ffi::c_void;
use std::ptr;

use shm_host::{Buffer, Mapping, SendError};

use crate::error::{call, value, Failure};
use crate::shm_error;

/// A message buffer: a block of the segment holding a small header, headroom, the data
/// and spare room. Opaque; only pointers to it exist in C.
///
/// Thread-safety: a handle may be used from any thread (the block belongs to the process,
/// not to a thread). Functions that take `const shm_buffer *` only read and may run at
/// the same time on one handle; functions that take `shm_buffer *` or `shm_buffer **`
/// need the handle to themselves (no other call on it meanwhile).
#[allow(non_camel_case_types)]
pub struct shm_buffer {
    /// Empty only after an internal error interrupted a send; such a handle can only be
    /// freed.
    inner: Option<Buffer>,
}

/// A new handle for `b`, owned by the caller.
pub(crate) fn new_handle(b: Buffer) -> *mut shm_buffer {
    Box::into_raw(Box::new(shm_buffer { inner: Some(b) }))
}

/// The buffer behind `p`.
///
/// # Safety
/// `p` is NULL or a live handle from this library that no other thread changes meanwhile.
unsafe fn get<'a>(p: *const shm_buffer) -> Result<&'a Buffer, Failure> {
    // SAFETY: by the contract, `p` is NULL (refused by `as_ref`) or a live handle.
    let handle = unsafe { p.as_ref() }.ok_or_else(|| Failure::null("buffer"))?;
    handle
        .inner
        .as_ref()
        .ok_or_else(|| Failure::invalid("buffer handle was emptied by an internal error"))
}

/// The buffer behind `p`, for changing it.
///
/// # Safety
/// `p` is NULL or a live handle from this library that the caller has to itself.
unsafe fn get_mut<'a>(p: *mut shm_buffer) -> Result<&'a mut Buffer, Failure> {
    // SAFETY: by the contract, `p` is NULL (refused by `as_mut`) or a live handle used by
    // nobody else during this call.
    let handle = unsafe { p.as_mut() }.ok_or_else(|| Failure::null("buffer"))?;
    handle
        .inner
        .as_mut()
        .ok_or_else(|| Failure::invalid("buffer handle was emptied by an internal error"))
}

/// Whether `b`'s bytes lie inside `mapping`: a buffer is sent only through the server or
/// client whose attachment it came from (a block offset means nothing in another one).
fn inside(b: &Buffer, mapping: &impl Mapping) -> bool {
    let start = mapping.as_ptr() as usize;
    let at = b.as_ptr() as usize;
    at >= start && at - start < mapping.len()
}

/// Sends the buffer `*buffer` with `send`; on success frees the handle and sets
/// `*buffer` to NULL, on failure leaves the buffer in the handle, unchanged.
///
/// # Safety
/// `buffer` is NULL or points to a variable holding NULL or a live handle that the
/// caller has to itself.
pub(crate) unsafe fn send_through(
    buffer: *mut *mut shm_buffer,
    mapping: &impl Mapping,
    send: impl FnOnce(Buffer) -> Result<(), SendError>,
) -> Result<(), Failure> {
    // SAFETY: by the contract, `buffer` is NULL (refused) or points to a handle variable.
    let slot = unsafe { buffer.as_mut() }.ok_or_else(|| Failure::null("buffer"))?;
    let handle_ptr = *slot;
    // SAFETY: by the contract, the variable holds NULL (refused) or a live handle that is
    // ours during this call.
    let handle = unsafe { handle_ptr.as_mut() }.ok_or_else(|| Failure::null("*buffer"))?;
    let b = handle
        .inner
        .take()
        .ok_or_else(|| Failure::invalid("buffer handle was emptied by an internal error"))?;
    if !inside(&b, mapping) {
        handle.inner = Some(b);
        return Err(Failure::invalid(
            "the buffer belongs to another server or client (of this or another segment)",
        ));
    }
    match send(b) {
        Ok(()) => {
            // SAFETY: `handle_ptr` came from `Box::into_raw` in `new_handle` and is
            // freed once, here; the caller's variable is cleared so it cannot be reused.
            drop(unsafe { Box::from_raw(handle_ptr) });
            *slot = ptr::null_mut();
            Ok(())
        }
        Err(e) => {
            handle.inner = Some(e.buffer);
            Err(e.error.into())
        }
    }
}

/// The buffer behind `p`, shared with the rest of the crate (broadcast reads it).
///
/// # Safety
/// As [`get`].
pub(crate) unsafe fn buffer_ref<'a>(p: *const shm_buffer) -> Result<&'a Buffer, Failure> {
    // SAFETY: the caller's contract is `get`'s.
    unsafe { get(p) }
}

/// Bytes of data in the buffer; 0 for NULL.
///
/// Thread-safety: any thread; may run concurrently with other read-only (`const`) calls
/// on the same buffer.
///
/// # Safety
/// `buffer` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shm_buffer_len(buffer: *const shm_buffer) -> usize {
    // SAFETY: the caller's contract is `get`'s.
    value(0, || unsafe { get(buffer) }.map_or(0, |b| b.len()))
}

/// Bytes the data can grow to without moving to another block; 0 for NULL.
///
/// Thread-safety: as `shm_buffer_len`.
///
/// # Safety
/// `buffer` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shm_buffer_capacity(buffer: *const shm_buffer) -> usize {
    // SAFETY: the caller's contract is `get`'s.
    value(0, || unsafe { get(buffer) }.map_or(0, |b| b.capacity()))
}

/// The data, for reading (`shm_buffer_len` bytes); NULL for NULL.
///
/// The pointer is valid until the next call that takes this buffer as `shm_buffer *` or
/// `shm_buffer **` (writing, resizing, clearing, broadcasting, sending, freeing). Do not
/// write through it: a received buffer may be co-owned by other processes (a
/// broadcast); `shm_buffer_data_mut` gives a writable pointer.
///
/// Thread-safety: as `shm_buffer_len`.
///
/// # Safety
/// `buffer` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shm_buffer_data(buffer: *const shm_buffer) -> *const u8 {
    value(ptr::null(), || {
        // SAFETY: the caller's contract is `get`'s.
        unsafe { get(buffer) }.map_or(ptr::null(), |b| b.as_ptr())
    })
}

/// The data, writable (`shm_buffer_len` bytes), in `*out`. If other processes co-own the
/// block (a broadcast), the data is first copied to a block of this process's own (copy
/// on write), so writing never changes what they see.
///
/// The pointer is valid until the next call that takes this buffer as `shm_buffer *` or
/// `shm_buffer **`; write at most `shm_buffer_len` bytes (grow the data first with
/// `shm_buffer_resize`).
///
/// Thread-safety: any thread, with the buffer to itself.
///
/// # Safety
/// `buffer` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_buffer_data_mut(
    buffer: *mut shm_buffer,
    out: *mut *mut u8,
) -> shm_error {
    call(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: the caller's contract is `get_mut`'s.
        let b = unsafe { get_mut(buffer) }?;
        let data = b.as_mut_slice()?.as_mut_ptr();
        // SAFETY: `out` is not NULL and writable by the contract.
        unsafe { out.write(data) };
        Ok(())
    })
}

/// Appends `len` bytes from `bytes` to the data, growing the buffer (to another block if
/// needed: earlier data pointers become invalid). `bytes` may point into this same
/// buffer; it may be NULL when `len` is 0.
///
/// Thread-safety: any thread, with the buffer to itself.
///
/// # Safety
/// `buffer` is NULL or a live handle; `bytes` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn shm_buffer_append(
    buffer: *mut shm_buffer,
    bytes: *const c_void,
    len: usize,
) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract is `get_mut`'s.
        let b = unsafe { get_mut(buffer) }?;
        if len == 0 {
            return Ok(());
        }
        if bytes.is_null() {
            return Err(Failure::null("bytes"));
        }
        if len > isize::MAX as usize {
            return Err(Failure::invalid("len is too large"));
        }
        // The payload (headroom, data and spare room): a source inside it would move or
        // be overwritten while it is copied, so it is copied out first.
        let payload_start = (b.as_ptr() as usize).saturating_sub(b.headroom());
        let payload_end = (b.as_ptr() as usize).saturating_add(b.capacity());
        let src = bytes as usize;
        let overlaps = src < payload_end && src.saturating_add(len) > payload_start;
        // SAFETY: `bytes` is not NULL and points to `len` readable bytes (the contract);
        // `len` is at most isize::MAX.
        let source = unsafe { std::slice::from_raw_parts(bytes.cast::<u8>(), len) };
        if overlaps {
            let copy = source.to_vec();
            b.extend_from_slice(&copy)?;
        } else {
            b.extend_from_slice(source)?;
        }
        Ok(())
    })
}

/// Sets the data length to `len`, growing the buffer if needed (new bytes are zero; the
/// data may move to another block: earlier data pointers become invalid).
///
/// Thread-safety: any thread, with the buffer to itself.
///
/// # Safety
/// `buffer` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shm_buffer_resize(buffer: *mut shm_buffer, len: usize) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract is `get_mut`'s.
        let b = unsafe { get_mut(buffer) }?;
        b.resize(len)?;
        Ok(())
    })
}

/// Removes all data (a co-owned buffer moves to a fresh block of its own, so the other
/// owners keep theirs).
///
/// Thread-safety: any thread, with the buffer to itself.
///
/// # Safety
/// `buffer` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shm_buffer_clear(buffer: *mut shm_buffer) -> shm_error {
    call(|| {
        // SAFETY: the caller's contract is `get_mut`'s.
        let b = unsafe { get_mut(buffer) }?;
        b.clear()?;
        Ok(())
    })
}

/// How many processes own the block, in `*out` (1 unless it was broadcast).
///
/// Thread-safety: as `shm_buffer_len`.
///
/// # Safety
/// `buffer` is NULL or a live handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shm_buffer_owners(buffer: *const shm_buffer, out: *mut u32) -> shm_error {
    call(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: the caller's contract is `get`'s.
        let owners = unsafe { get(buffer) }?.owners()?;
        // SAFETY: `out` is not NULL and writable by the contract.
        unsafe { out.write(owners) };
        Ok(())
    })
}

/// Releases the buffer (its block is freed when this process was its last owner), frees
/// the handle and sets `*buffer` to NULL. Does nothing if `buffer` or `*buffer` is NULL.
/// A buffer stays valid after the server or client it came from was closed; free it all
/// the same.
///
/// Thread-safety: any thread, with the buffer to itself; every pointer obtained from the
/// buffer is invalid afterwards.
///
/// # Safety
/// `buffer` is NULL or points to a variable holding NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shm_buffer_free(buffer: *mut *mut shm_buffer) {
    value((), || {
        // SAFETY: by the contract, `buffer` is NULL or points to a handle variable.
        let Some(slot) = (unsafe { buffer.as_mut() }) else {
            return;
        };
        let handle = std::mem::replace(slot, ptr::null_mut());
        if !handle.is_null() {
            // SAFETY: a live handle comes from `Box::into_raw` in `new_handle`; the
            // caller's variable no longer holds it, so it is freed once.
            drop(unsafe { Box::from_raw(handle) });
        }
    })
}
