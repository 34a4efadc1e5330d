//! Size classes of a [`Cache`](super::Cache).

/// Most size classes (classes past the configured largest block are not used).
pub(super) const MAX_CLASSES: usize = 64;

/// Size classes of blocks, in units of the heap alignment: 1 to 8 units one by one, then
/// four classes per doubling (10, 12, 14, 16, 20, 24, 28, 32, 40, ... units), so a block
/// is at most a quarter larger than asked for.
#[derive(Clone, Copy, Debug)]
pub(super) struct Classes {
    align: u32,
    /// log2 of `align` (a power of two).
    shift: u32,
}

impl Classes {
    pub(super) fn new(align: u32) -> Self {
        Classes {
            align,
            shift: align.trailing_zeros(),
        }
    }

    /// Block size of class `c`, `None` past `u32`.
    pub(super) fn size(self, c: usize) -> Option<u32> {
        let units = if c < 8 {
            u32::try_from(c).ok()?.checked_add(1)?
        } else {
            let k = u32::try_from(c.checked_sub(8)?).ok()?;
            let base = 8u32.checked_shl(k / 4)?;
            base.checked_add((k % 4).checked_add(1)?.checked_mul(base / 4)?)?
        };
        units.checked_mul(self.align)
    }

    /// The smallest class whose blocks hold `need` bytes.
    #[inline]
    pub(super) fn up(self, need: u32) -> Option<usize> {
        // Units minus one: ceil(need / align) - 1, and 0 for a need of 0.
        let m = need.saturating_sub(1) >> self.shift;
        if m < 8 {
            return Some(m as usize);
        }
        // 8 <= m < 2^32, so 3 <= e <= 31 and none of the operations below wraps.
        let e = m.ilog2();
        let quarter = (m >> e.wrapping_sub(2)) & 3; // which quarter of [2^e, 2^(e+1))
        let c = e
            .wrapping_sub(3)
            .wrapping_mul(4)
            .wrapping_add(quarter)
            .wrapping_add(8) as usize;
        (c < MAX_CLASSES).then_some(c)
    }

    /// The largest class whose block size is at most `size`.
    pub(super) fn down(self, size: u32) -> Option<usize> {
        if size < self.align {
            return None;
        }
        let c = self.up(size).unwrap_or(MAX_CLASSES);
        match self.size(c.min(MAX_CLASSES - 1)) {
            Some(s) if c < MAX_CLASSES && s == size => Some(c),
            _ => c.checked_sub(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Classes, MAX_CLASSES};

    /// Class sizes rise strictly; `up` gives the smallest class holding a size and `down`
    /// the largest one held by it, for every size up to past the last class.
    #[test]
    fn classes_round_up_and_down_consistently() {
        for align in [8u32, 16, 64, 4096] {
            let k = Classes::new(align);
            let mut prev = 0;
            for c in 0..MAX_CLASSES {
                let Some(s) = k.size(c) else { break };
                assert!(s > prev, "align {align} class {c}");
                prev = s;
            }
            // Every size up to 4 MiB for small alignments; a sample under miri.
            let (step, limit) = match (cfg!(miri), align >= 64) {
                (true, _) => (97, 1 << 16),
                (false, true) => (97, 1 << 22),
                (false, false) => (1, 1 << 22),
            };
            let mut need = align;
            while need <= prev.min(limit) {
                let up = k.up(need).unwrap();
                let s = k.size(up).unwrap();
                assert!(s >= need, "align {align} need {need}: class {up} holds {s}");
                assert!(up == 0 || k.size(up - 1).unwrap() < need);
                // At most a quarter larger (past the exact small classes).
                assert!(u64::from(s) * 4 <= u64::from(need) * 5 + u64::from(align) * 4);
                let down = k.down(need).unwrap();
                let ds = k.size(down).unwrap();
                assert!(ds <= need && k.size(down + 1).is_none_or(|n| n > need));
                need += step * align;
            }
        }
    }
}
