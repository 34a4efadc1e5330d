//! [`FreeIndex`]: the size-class index's words in the region header, and the classes
//! themselves ([`class_of`], [`search_class`]): which list a free block of a given size is
//! on. How the lists are kept is in the heap's `index` module.
//!
//! Two-level segregated lists with bitmaps, as in TLSF: a free block's size picks a
//! first-level class (its power of two) and one of [`SL_COUNT`] second-level classes
//! (equal slices of that power of two); sizes below 256 are classed linearly in steps of
//! 8.

use core::sync::atomic::AtomicU32;

use zerocopy::{FromBytes, IntoBytes, KnownLayout};

use crate::region::ShmSafe;

/// log2 of the number of second-level classes per first-level class.
pub const SL_LOG: u32 = 5;
/// Second-level classes per first-level class.
pub const SL_COUNT: usize = 1 << SL_LOG;
/// Sizes below `1 << LINEAR_LOG` (256) are classed linearly, 8 bytes per class.
const LINEAR_LOG: u32 = SL_LOG + 3;
/// First-level classes: the linear one, then one per power of two from 256 to 2^31.
pub const FL_COUNT: usize = (32 - LINEAR_LOG + 1) as usize;

/// The index's words in the region header.
#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout)]
pub struct FreeIndex {
    /// Bit `fl` set: some list of first-level class `fl` is non-empty.
    pub fl_bitmap: AtomicU32,
    /// Bit `sl` of entry `fl` set: list `(fl, sl)` is non-empty.
    pub sl_bitmap: [AtomicU32; FL_COUNT],
    /// Reserved, zero (pads the bitmaps to two cache lines).
    pub reserved: [AtomicU32; 6],
    /// Offset of the first block of each list, 0 when empty.
    pub heads: [[AtomicU32; SL_COUNT]; FL_COUNT],
}

// SAFETY: every field is an atomic (the derives prove the rest of the contract).
unsafe impl ShmSafe for FreeIndex {}

/// The class a free block of `size` bytes is listed in.
#[inline]
pub const fn class_of(size: u32) -> (usize, usize) {
    if size < (1 << LINEAR_LOG) {
        (0, (size >> 3) as usize)
    } else {
        // `size >= 256`: `msb` is 8..=31, so none of these subtractions saturates.
        let msb = 31u32.saturating_sub(size.leading_zeros());
        let fl = msb.saturating_sub(LINEAR_LOG - 1) as usize;
        let sl = ((size >> msb.saturating_sub(SL_LOG)) as usize) & (SL_COUNT - 1);
        (fl, sl)
    }
}

/// The lowest class whose every block holds `size` bytes (`size` a multiple of 8), or
/// `None` when the rounding passes the last class.
#[inline]
pub const fn search_class(size: u32) -> Option<(usize, usize)> {
    if size < (1 << LINEAR_LOG) {
        return Some(class_of(size));
    }
    // `size >= 256`: `msb` is 8..=31 and `step` at least 8, so nothing below saturates.
    let msb = 31u32.saturating_sub(size.leading_zeros());
    let step = 1u32 << msb.saturating_sub(SL_LOG);
    match size.checked_add(step.saturating_sub(1)) {
        Some(up) => Some(class_of(up & !step.saturating_sub(1))),
        None => None,
    }
}

#[cfg(test)]
// Test code: a panic on overflow is a test failure, which is what a test should do.
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// The smallest size class `c` holds.
    fn class_min((fl, sl): (usize, usize)) -> u32 {
        if fl == 0 {
            sl as u32 * 8
        } else {
            let base = 1u32 << (fl as u32 + LINEAR_LOG - 1);
            base + sl as u32 * (base >> SL_LOG)
        }
    }

    /// Every size maps to a class whose range contains it, classes are monotonic in the
    /// size, and the search class of a size holds only sizes at least as large.
    #[test]
    fn classes_are_ordered_and_search_rounds_up() {
        let mut prev = (0, 0);
        let mut size = 8u32;
        while size < (1 << 30) {
            let c = class_of(size);
            assert!(c >= prev, "class of {size} went down");
            assert!(c.0 < FL_COUNT && c.1 < SL_COUNT);
            prev = c;
            if let Some(s) = search_class(size) {
                assert!(s >= c);
                assert!(
                    class_min(s) >= size,
                    "search class of {size} holds smaller blocks"
                );
            }
            size += if size < 4096 { 8 } else { (size / 61) & !7 };
        }
        assert_eq!(class_of(!7).0, FL_COUNT - 1);
        assert_eq!(search_class(!7), None);
    }

    /// The boundaries: 248 is the last linear class, 256 the first logarithmic one, and a
    /// size just above a class's start searches the next class.
    #[test]
    fn class_boundaries() {
        for fl in 0..FL_COUNT {
            for sl in 0..SL_COUNT {
                if fl > 0 || sl > 0 {
                    assert_eq!(class_of(class_min((fl, sl))), (fl, sl));
                }
            }
        }
        assert_eq!(class_of(248), (0, 31));
        assert_eq!(class_of(256), (1, 0));
        assert_eq!(class_of(264), (1, 1));
        assert_eq!(class_of(511), (1, 31));
        assert_eq!(class_of(512), (2, 0));
        assert_eq!(search_class(256), Some((1, 0)));
        assert_eq!(search_class(264), Some((1, 1)));
        assert_eq!(search_class(520), Some((2, 1)));
        assert_eq!(search_class(512 + 16), Some((2, 1)));
        assert_eq!(search_class(512 + 24), Some((2, 2)));
    }
}
