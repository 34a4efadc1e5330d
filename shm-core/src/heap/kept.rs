//! The kept-block half of the [`Heap`] facade: data that outlives every process.
//!
//! A used block normally belongs to processes, and reclaiming the last of them frees it;
//! system data belongs to the heap's own structures. A kept block belongs to the region
//! itself: [`Heap::keep`] turns a block its process owns alone into one, no reclaim frees
//! it, and [`Heap::take`] makes it a process's own again. On a region that outlives its
//! processes (a file-backed segment) this is how data survives a restart: the kept root
//! ([`Heap::set_kept_root`]) tells a later process where to start.

use crate::error::Error;
use crate::heap::{Heap, OpCode};
use crate::ids::Member;
use crate::offset::Offset;
use crate::platform::Platform;

impl<'m, P: Platform> Heap<'m, P> {
    /// Makes `block`, which `me` owns alone, a kept block: owned by the region rather than
    /// by any process, never freed by a reclaim, untouched by every operation but
    /// [`take`](Heap::take). `me` loses its reference (and its reserve, if `block` was it).
    ///
    /// # Errors
    /// - [`Error::BadOffset`], [`Error::DoubleFree`], [`Error::NotOwner`],
    ///   [`Error::Shared`]: as for [`free`](Heap::free).
    /// - [`Error::Kept`]: the block is kept already.
    ///
    /// Besides these, the failures every operation shares (see [`Error`]).
    ///
    /// ```
    /// use shm_core::{Heap, HeapConfig, Region, SpinPlatform};
    ///
    /// #[repr(align(16))]
    /// struct Memory([u8; 16 * 1024]);
    /// let mut memory = Memory([0; 16 * 1024]);
    /// let heap = Heap::init(Region::from_slice(&mut memory.0)?, HeapConfig::default(), SpinPlatform::new(1))?;
    ///
    /// let me = heap.register()?;
    /// let block = heap.try_alloc(me, 64)?;
    /// heap.keep(me, block)?; // the region owns it now
    /// heap.set_kept_root(me, Some(block))?;
    /// heap.unregister(me)?; // reclaiming `me` leaves the block alone
    ///
    /// let later = heap.register()?;
    /// let root = heap.kept_root().expect("kept root");
    /// heap.take(later, root)?; // `later`'s alone; the root is cleared
    /// assert_eq!(heap.kept_root(), None);
    /// heap.free(later, root)?;
    /// heap.check()?;
    /// # Ok::<(), shm_core::Error>(())
    /// ```
    pub fn keep(&self, me: Member, block: Offset) -> Result<(), Error> {
        self.op(OpCode::Keep, |tx, s| s.keep(tx, s.member(me)?, block))
    }

    /// Makes kept `block` the sole property of `me` (one owner cell, as an allocation
    /// gives). If the kept root named it, the kept root is cleared in the same operation.
    ///
    /// # Errors
    /// - [`Error::BadOffset`], [`Error::DoubleFree`]: as for [`free`](Heap::free).
    /// - [`Error::NotKept`]: the block is not kept.
    /// - [`Error::OutOfMemory`], [`Error::OwnerTableFull`]: `me`'s owner array has no
    ///   room.
    ///
    /// Besides these, the failures every operation shares (see [`Error`]).
    pub fn take(&self, me: Member, block: Offset) -> Result<(), Error> {
        self.op(OpCode::Take, |tx, s| s.take(tx, s.member(me)?, block))
    }

    /// Names kept block `root` as the kept root (where a later process finds the kept
    /// data), or clears it with `None`. `me` only proves that a registered process acts.
    ///
    /// # Errors
    /// - [`Error::BadOffset`], [`Error::DoubleFree`]: as for [`free`](Heap::free).
    /// - [`Error::NotKept`]: the block is not kept.
    ///
    /// Besides these, the failures every operation shares (see [`Error`]).
    pub fn set_kept_root(&self, me: Member, root: Option<Offset>) -> Result<(), Error> {
        self.op(OpCode::SetKeptRoot, |tx, s| {
            s.member(me)?;
            s.set_kept_root(tx, root)
        })
    }

    /// The kept root, if one is set (read without the lock; a header word that does not
    /// name a kept block reads as `None`).
    pub fn kept_root(&self) -> Option<Offset> {
        self.space.kept_root()
    }
}
