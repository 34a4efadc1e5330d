//! [`Buffer`]: a block of the segment holding one message, owned by this process.
//!
//! Payload layout: a 16-byte [`MessageHeader`] (where the data starts and how long it
//! is), then the headroom, then the data, then spare room. The headroom lets a protocol
//! header be prepended without moving the data; the spare room lets the data grow in
//! place. When a buffer has to grow, its new capacity follows the original design: under
//! 128 bytes of data reserve 256; under 64 KiB, data + 256; otherwise data + 512.

use std::io;
use std::mem::size_of;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use shm_core::format::MessageHeader;
use shm_core::{Error, Offset};

use crate::error::{HostError, Result};
use crate::segment::Attachment;
use crate::system::System;
use crate::NativeSystem;

/// Bytes of the message header at the start of every payload.
pub const HEADER: u32 = size_of::<MessageHeader>() as u32;

/// Default headroom in front of the data.
pub const DEFAULT_HEADROOM: u32 = 32;

/// Capacity for `data` bytes of data under the growth policy.
pub fn policy_capacity(data: usize) -> usize {
    if data < 128 {
        256
    } else if data < 65_536 {
        data + 256
    } else {
        data + 512
    }
}

/// A message buffer in shared memory, owned (or co-owned) by this process.
///
/// Dereferences to its data (`&[u8]`); [`io::Write`] appends. Dropping it releases the
/// block: freed if this process was the last owner. A buffer sent with
/// `send` changes hands without a copy.
///
/// `Buffer` is `Send` and `Sync`: the block belongs to the process, not to a thread, and
/// shared (`&Buffer`) access only reads. Writing needs `&mut Buffer`, and a buffer shared
/// with other processes is copied before it is written (copy-on-write).
pub struct Buffer<S: System = NativeSystem> {
    att: Arc<Attachment<S>>,
    block: Offset,
    base: NonNull<u8>,
    cap: u32,
    /// False once the block was sent: dropping must not release it then.
    owned: bool,
    /// Set once the block was co-owned with other processes (received from a broadcast,
    /// or broadcast from here): dropping it releases it under the lock rather than into a
    /// buffer cache, since another owner's release of it may still be in flight.
    shared: AtomicBool,
}

// SAFETY: the block is owned by the process through the region's owner tables, which any
// thread may use; `base` is an address in a mapping that `att` keeps alive.
unsafe impl<S: System> Send for Buffer<S> {}
// SAFETY: `&Buffer` only reads the payload; all writes need `&mut Buffer`.
unsafe impl<S: System> Sync for Buffer<S> {}

impl<S: System> std::fmt::Debug for Buffer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("block", &self.block)
            .field("len", &self.len())
            .field("headroom", &self.headroom())
            .field("capacity", &self.cap)
            .finish()
    }
}

impl<S: System> Buffer<S> {
    /// Allocates a buffer able to hold `data` bytes after `headroom` bytes, with the growth
    /// policy's spare room. Runs the watchdog and retries once when memory is short.
    pub(crate) fn alloc(att: &Arc<Attachment<S>>, data: usize, headroom: u32) -> Result<Self> {
        Self::alloc_waiting(att, data, headroom, None)
    }

    /// Like [`alloc`](Self::alloc); with `wait`, a full heap makes it wait up to that long
    /// for other processes to free memory (then [`shm_core::Error::Timeout`]).
    pub(crate) fn alloc_waiting(
        att: &Arc<Attachment<S>>,
        data: usize,
        headroom: u32,
        wait: Option<std::time::Duration>,
    ) -> Result<Self> {
        let want = HEADER as usize + headroom as usize + policy_capacity(data);
        let size = u32::try_from(want).map_err(|_| HostError::BadSize { size: want as u64 })?;
        let heap = att.heap();
        let first = match att.cache_alloc(size) {
            Some(Ok(block)) => Ok(block),
            // A forked child: the plain path refuses the same way.
            Some(Err(e @ Error::StaleMember { .. })) => Err(e),
            // Out of memory (the cache gave back what it held and asked others to), or a
            // class list the cache dropped as damaged: go the usual way (reclaim the dead,
            // perhaps wait).
            Some(Err(_)) | None => heap.try_alloc(att.me(), size),
        };
        let block = match first {
            Err(Error::OutOfMemory { .. }) => {
                // Memory may be held by dead processes: reclaim and try again.
                heap.reclaim_dead()?;
                match wait {
                    None => heap.try_alloc(att.me(), size)?,
                    Some(t) => heap.alloc_timeout(att.me(), size, Some(t))?,
                }
            }
            r => r?,
        };
        let mut b = Self::adopt(att, block)?;
        b.header().data_start.store(HEADER + headroom, Relaxed);
        b.header().data_len.store(0, Relaxed);
        b.cap = b.cap.max(HEADER + headroom);
        Ok(b)
    }

    /// Takes over a block this process owns (just received), checking its header.
    pub(crate) fn adopt(att: &Arc<Attachment<S>>, block: Offset) -> Result<Self> {
        let (base, cap) = att.heap().payload(block)?;
        if cap < HEADER {
            return Err(HostError::BadMessage);
        }
        Ok(Buffer {
            att: Arc::clone(att),
            block,
            base,
            cap,
            owned: true,
            shared: AtomicBool::new(false),
        })
    }

    /// Adopts a received block whose header must describe data inside it.
    /// `shared`: it was sent shared (a broadcast), so other processes may co-own it. On an
    /// error the block stays this process's and the caller releases it (the buffer made
    /// here gives it up without releasing it).
    pub(crate) fn received(att: &Arc<Attachment<S>>, block: Offset, shared: bool) -> Result<Self> {
        let b = Self::adopt(att, block)?;
        if shared {
            // Marked from the queue entry, not from the count: another owner's release
            // may be changing the count right now.
            b.mark_shared();
        }
        let (start, len) = b.bounds();
        if start < HEADER || u64::from(start) + u64::from(len) > u64::from(b.cap) {
            b.into_sent();
            return Err(HostError::BadMessage);
        }
        Ok(b)
    }

    fn header(&self) -> &MessageHeader {
        // SAFETY: the payload starts with HEADER bytes (checked in `adopt`), 16-aligned
        // (payloads are aligned to the heap alignment), and MessageHeader is all atomics,
        // valid for any bits and for shared access.
        unsafe { self.base.cast::<MessageHeader>().as_ref() }
    }

    /// (data start, data length), clamped to the payload so a co-owner that scribbles on
    /// the header cannot make us read outside the block.
    fn bounds(&self) -> (u32, u32) {
        let start = self
            .header()
            .data_start
            .load(Relaxed)
            .clamp(HEADER, self.cap);
        let len = self.header().data_len.load(Relaxed).min(self.cap - start);
        (start, len)
    }

    /// The block's offset in the segment.
    pub fn offset(&self) -> Offset {
        self.block
    }

    /// Bytes of data.
    pub fn len(&self) -> usize {
        self.bounds().1 as usize
    }

    /// Whether there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Free bytes in front of the data.
    pub fn headroom(&self) -> usize {
        (self.bounds().0 - HEADER) as usize
    }

    /// Bytes the data can grow to without moving.
    pub fn capacity(&self) -> usize {
        (self.cap - self.bounds().0) as usize
    }

    /// How many processes own this block (1 unless it was broadcast).
    pub fn owners(&self) -> Result<u32> {
        Ok(self.att.heap().ref_count(self.block)?)
    }

    /// Removes all data (headroom stays). Copy-on-write like the other mutators: the
    /// length lives in the shared block's header, so clearing a block other processes
    /// co-own (a broadcast) would empty their copies too; such a buffer moves to a fresh
    /// empty block of the same size instead (no copy: the data is being dropped).
    pub fn clear(&mut self) -> Result<()> {
        if self.owners()? > 1 {
            let (start, len) = self.bounds();
            let mut fresh = Self::alloc(&self.att, len as usize, start - HEADER)?;
            std::mem::swap(self, &mut fresh);
            drop(fresh); // releases this process's share of the old block
            return Ok(());
        }
        self.header().data_len.store(0, Relaxed);
        Ok(())
    }

    /// Makes the buffer this process's alone, copying it if it is shared.
    fn make_unique(&mut self) -> Result<()> {
        if self.owners()? <= 1 {
            return Ok(());
        }
        let (start, len) = self.bounds();
        let fresh = Self::alloc(&self.att, len as usize, start - HEADER)?;
        self.copy_into(fresh, start, len)
    }

    /// Moves the data into `fresh` (already sized) and releases the old block.
    fn copy_into(&mut self, mut fresh: Self, start: u32, len: u32) -> Result<()> {
        let (fstart, _) = fresh.bounds();
        // SAFETY: source and destination are payloads of two different blocks, each with
        // `len` bytes in bounds at the given starts (bounds() clamps, alloc sized fresh).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(start as usize),
                fresh.base.as_ptr().add(fstart as usize),
                len as usize,
            );
        }
        fresh.header().data_len.store(len, Relaxed);
        std::mem::swap(self, &mut fresh);
        drop(fresh); // releases the old block
        Ok(())
    }

    /// The data, writable. Copies the buffer first if other processes co-own it.
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        self.make_unique()?;
        let (start, len) = self.bounds();
        // SAFETY: in bounds (bounds()), and the block is ours alone (make_unique), so no
        // one else writes it; `&mut self` excludes other references from this process.
        Ok(unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(start as usize), len as usize)
        })
    }

    /// Sets the data length to `len`, growing the buffer if needed; new bytes are zero.
    pub fn resize(&mut self, len: usize) -> Result<()> {
        let old = self.len();
        if len > old {
            self.reserve(len - old)?;
            let (start, _) = self.bounds();
            // SAFETY: `reserve` made room for `len` bytes from `start`; the block is ours.
            unsafe {
                std::ptr::write_bytes(self.base.as_ptr().add(start as usize + old), 0, len - old)
            };
        } else {
            self.make_unique()?;
        }
        self.header().data_len.store(len as u32, Relaxed);
        Ok(())
    }

    /// Ensures room for `more` bytes after the data (and that the buffer is unshared).
    pub fn reserve(&mut self, more: usize) -> Result<()> {
        self.make_unique()?;
        let (start, len) = self.bounds();
        let need = len as usize + more;
        if start as usize + need <= self.cap as usize {
            return Ok(());
        }
        let fresh = Self::alloc(&self.att, need, start - HEADER)?;
        self.copy_into(fresh, start, len)
    }

    /// Appends `bytes` (growing by the policy if needed).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<()> {
        self.reserve(bytes.len())?;
        let (start, len) = self.bounds();
        // SAFETY: `reserve` made room; the block is ours alone.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().add((start + len) as usize),
                bytes.len(),
            )
        };
        self.header()
            .data_len
            .store(len + bytes.len() as u32, Relaxed);
        Ok(())
    }

    /// Puts `bytes` in front of the data, in the headroom when it fits (no copy of the
    /// data), otherwise by moving into a larger block with fresh headroom.
    pub fn prepend(&mut self, bytes: &[u8]) -> Result<()> {
        self.make_unique()?;
        let (start, len) = self.bounds();
        let n = bytes.len();
        if (start - HEADER) as usize >= n {
            let new_start = start - n as u32;
            // SAFETY: `new_start..start` is headroom inside the payload; the block is ours.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.base.as_ptr().add(new_start as usize),
                    n,
                )
            };
            self.header().data_start.store(new_start, Relaxed);
            self.header().data_len.store(len + n as u32, Relaxed);
            return Ok(());
        }
        let fresh = Self::alloc(&self.att, len as usize + n, DEFAULT_HEADROOM + n as u32)?;
        self.copy_into(fresh, start, len)?;
        self.prepend(bytes)
    }

    /// Makes the block a kept block (owned by the segment, not by this process), copying it
    /// first if other processes co-own it; returns its offset. The buffer is gone either
    /// way, so no one holds a handle that writes a kept block.
    pub(crate) fn into_kept(mut self) -> Result<Offset> {
        self.make_unique()?;
        self.att.heap().keep(self.att.me(), self.block)?;
        Ok(self.into_sent())
    }

    /// Whether this buffer's block is in `att`, the attachment a send goes through (an
    /// offset means nothing in another attachment, of this segment or another one).
    pub(crate) fn is_in(&self, att: &Arc<Attachment<S>>) -> bool {
        Arc::ptr_eq(&self.att, att)
    }

    /// Records that the block is (or was) co-owned with other processes.
    pub(crate) fn mark_shared(&self) {
        self.shared.store(true, Relaxed);
    }

    /// Gives up the buffer without releasing the block (it was sent).
    pub(crate) fn into_sent(mut self) -> Offset {
        self.owned = false;
        self.block
    }
}

impl<S: System> std::ops::Deref for Buffer<S> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let (start, len) = self.bounds();
        // SAFETY: in bounds (bounds() clamps to the payload); the block stays allocated
        // while we own a reference to it.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start as usize), len as usize) }
    }
}

impl<S: System> AsRef<[u8]> for Buffer<S> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl<S: System> io::Write for Buffer<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.extend_from_slice(buf)
            .map(|()| buf.len())
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: System> Drop for Buffer<S> {
    fn drop(&mut self) {
        if !self.owned {
            return; // sent or kept: no longer this process's
        }
        if self.shared.load(Relaxed) || !self.att.cache_free(self.block) {
            // NotOwner here means the process was reclaimed meanwhile; nothing to do.
            let _ = self.att.heap().release(self.att.me(), self.block);
        }
    }
}
