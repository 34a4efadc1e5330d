//! A [`Cache`]'s class lists, linked through the first payload word of their blocks, and
//! the lock-free checks that a block on them is one this member cached.

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::{Cache, Class};
use crate::error::{corrupt, CorruptionKind, Error};
use crate::format::{BlockHeader, OwnerRef};
use crate::offset::Offset;
use crate::platform::Platform;

impl<'m, P: Platform> Cache<'_, 'm, P> {
    /// Takes the first block of class `c`'s list, checked to be a block cached by this
    /// member, and makes it an ordinary owned block; `None` when the list is empty.
    #[inline(always)]
    pub(super) fn pop(&mut self, c: usize) -> Result<Option<Offset>, Error> {
        let Some((p, h)) = self.take(c)? else {
            return Ok(None);
        };
        h.link.store(1, Relaxed);
        Ok(Some(p))
    }

    /// The header in front of payload offset `p`, read from the region (in bounds and
    /// aligned, its contents unchecked): the lock-free paths check the fields they need.
    #[inline]
    pub(super) fn header(&self, p: u32) -> Option<&'m BlockHeader> {
        header_of(&self.heap.space, p)
    }

    /// Unlinks the first block of class `c`'s list (still cached; `None` when the list is
    /// empty), or drops the list when what it finds is not a block this member cached (the
    /// list lives in the blocks' payloads, which a hostile writer could overwrite).
    #[inline(always)]
    pub(super) fn take(&mut self, c: usize) -> Result<Option<(Offset, &'m BlockHeader)>, Error> {
        let Some(class) = self.classes.get(c).copied() else {
            return Ok(None);
        };
        if class.head == 0 && class.blocks == 0 {
            return Ok(None);
        }
        let mut found = self.cached_head(class);
        if found.is_none() && self.follow_record()? {
            // Read from an owner array that moved meanwhile (a shared member): look again.
            found = self.cached_head(class);
        }
        let Some(class) = self.classes.get_mut(c) else {
            return Ok(None);
        };
        let head = class.head;
        let Some((h, size, next)) = found else {
            let dropped = core::mem::replace(
                class,
                Class {
                    size: class.size,
                    ..Class::default()
                },
            );
            self.stats.blocks = self.stats.blocks.saturating_sub(dropped.blocks);
            self.stats.bytes = self.stats.bytes.saturating_sub(dropped.bytes);
            return Err(corrupt(head, CorruptionKind::BadOwner));
        };
        class.head = if class.blocks > 1 { next } else { 0 };
        class.blocks = class.blocks.saturating_sub(1); // > 0: the list was not empty
        class.bytes = class.bytes.saturating_sub(size);
        self.stats.blocks = self.stats.blocks.saturating_sub(1);
        self.stats.bytes = self.stats.bytes.saturating_sub(size);
        Ok(Some((Offset::new(head), h)))
    }

    /// The header, size and list link of the first block of `class`'s list, if it is a
    /// block this member cached.
    #[inline(always)]
    fn cached_head(&self, class: Class) -> Option<(&'m BlockHeader, u32, u32)> {
        let space = &self.heap.space;
        let head = class.head;
        let h = header_of(space, head)?;
        let size = h.size();
        let owner =
            OwnerRef::unpack(h.owner.load(Relaxed)).filter(|o| o.slot == self.me.slot().0)?;
        let mine =
            h.is_used() && h.link.load(Relaxed) == 0 && size >= class.size && size <= class.bytes;
        // The owner cell names it: a header forged inside some payload does not pass.
        let cell = space.cell(&self.rec, owner.cell).ok()?;
        let link: &AtomicU32 = space.region.get(head).ok()?;
        (mine && cell.block.load(Relaxed) == head).then(|| (h, size, link.load(Relaxed)))
    }

    /// Puts cached-or-to-be-cached block `p` (header `h`, `size` bytes) on class `c`'s list
    /// and marks it cached.
    #[inline(always)]
    pub(super) fn push(
        &mut self,
        c: usize,
        p: Offset,
        h: &BlockHeader,
        size: u32,
    ) -> Result<(), Error> {
        let link: &AtomicU32 = self.heap.space.region.get(p.get())?;
        let class = self.class_mut(c)?;
        link.store(class.head, Relaxed);
        h.link.store(0, Relaxed);
        class.head = p.get();
        class.blocks = class.blocks.saturating_add(1);
        class.bytes = class.bytes.saturating_add(size);
        self.stats.blocks = self.stats.blocks.saturating_add(1);
        self.stats.bytes = self.stats.bytes.saturating_add(size);
        Ok(())
    }
}

/// The header in front of payload offset `p` (in bounds and aligned, its contents
/// unchecked).
#[inline]
fn header_of<'m>(space: &crate::heap::Space<'m>, p: u32) -> Option<&'m BlockHeader> {
    let b = p.checked_sub(space.geo.hsize)?;
    if !space.geo.is_aligned(b) {
        return None;
    }
    space.region.get(b).ok()
}
