//! [`Offset`]: the only kind of link stored inside a region.

use core::fmt;

/// A byte offset from the base of a region.
///
/// Everything stored in a region refers to other things in the same region by `Offset`,
/// never by pointer, so the bytes mean the same in every process that maps the region,
/// whatever address it is mapped at. An `Offset` becomes a pointer only at the edge, in
/// [`Region`](crate::Region), after a bounds check.
///
/// Offset 0 is always the region header, so no block or queue ever lives there; the raw
/// value 0 therefore doubles as "none" inside the region.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Offset(u32);

impl Offset {
    /// Wraps a raw offset.
    #[inline]
    pub const fn new(raw: u32) -> Self {
        Offset(raw)
    }

    /// The raw value as stored in the region.
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// `None` for the raw value 0 (the "no link" marker), `Some` otherwise.
    #[inline]
    pub const fn from_link(raw: u32) -> Option<Self> {
        if raw == 0 {
            None
        } else {
            Some(Offset(raw))
        }
    }

    /// The offset `bytes` further on, or `None` on overflow.
    #[inline]
    pub const fn checked_add(self, bytes: u32) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(Offset(v)),
            None => None,
        }
    }
}

impl fmt::Debug for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Offset({:#x})", self.0)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl From<Offset> for u32 {
    fn from(o: Offset) -> u32 {
        o.0
    }
}
