//! What every measured message carries: a 16-byte stamp at the start of its payload
//! (sequence number, payload length, kind, checksum), written by the sender and checked by
//! the receiver. Writing it is the "write" of each cycle: a fixed cost, whatever the size,
//! so a zero-copy transport stays flat over sizes (filling the whole payload would be the
//! application's copy, not the transport's).

/// Bytes of a stamp.
pub const LEN: usize = 16;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A timed message: the receiver answers it.
    Data = 1,
    /// The end of a measurement: the receiver does not answer and waits without spinning.
    Pause = 2,
    /// The end of the run: the receiver reports its counts and exits.
    Stop = 3,
}

/// A decoded stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number (the answer carries the question's).
    pub seq: u64,
    /// Payload bytes the sender meant to send.
    pub len: u32,
    /// What the message is.
    pub kind: Kind,
}

/// A checksum of the stamp's fields (24 bits of it are kept), so that a torn or stale stamp is told from a good one.
fn check(seq: u64, len: u32, kind: u8) -> u32 {
    let mut x = seq ^ (u64::from(len) << 8) ^ u64::from(kind) ^ 0x5348_4d2d_4950_4321;
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    (x as u32) ^ (x >> 32) as u32
}

impl Stamp {
    /// A data stamp.
    pub fn data(seq: u64, len: usize) -> Stamp {
        Stamp {
            seq,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            kind: Kind::Data,
        }
    }

    /// A control stamp (pause or stop).
    pub fn control(kind: Kind) -> Stamp {
        Stamp {
            seq: 0,
            len: 0,
            kind,
        }
    }

    /// The stamp's bytes.
    pub fn bytes(self) -> [u8; LEN] {
        let kind = self.kind as u8;
        let mut b = [0u8; LEN];
        b[0..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12] = kind;
        b[13..16].copy_from_slice(&check(self.seq, self.len, kind).to_le_bytes()[..3]);
        b
    }

    /// Decodes the first [`LEN`] bytes of `payload`, if they hold a valid stamp.
    pub fn read(payload: &[u8]) -> Result<Stamp, String> {
        let b: &[u8; LEN] = payload
            .get(..LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("payload of {} bytes holds no stamp", payload.len()))?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[0..8]);
        let seq = u64::from_le_bytes(seq);
        let len = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        let sum = u32::from_le_bytes([b[13], b[14], b[15], 0]);
        if sum != check(seq, len, b[12]) & 0x00ff_ffff {
            return Err(format!("bad stamp checksum (seq {seq}, len {len})"));
        }
        let kind = match b[12] {
            1 => Kind::Data,
            2 => Kind::Pause,
            3 => Kind::Stop,
            k => return Err(format!("unknown stamp kind {k}")),
        };
        Ok(Stamp { seq, len, kind })
    }
}
