//! [`start_time_tag`]: the pid-reuse tag of a [`ProcessId`](crate::ProcessId) made from a
//! process's start (or creation) time, shared by every system that has one (Windows, QNX).

/// A process-identity tag from a start (or creation) time: FNV-1a of its bytes, never 0
/// (0 means "unknown" and counts as dead, see [`Processes::is_alive`](crate::Processes)).
pub fn start_time_tag(start: u64) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in start.to_le_bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags are never 0 and tell different start times apart.
    #[test]
    fn tags_are_non_zero_and_distinct() {
        assert_ne!(start_time_tag(0), 0);
        assert_ne!(start_time_tag(1), start_time_tag(2));
        assert_eq!(start_time_tag(7), start_time_tag(7));
    }
}
