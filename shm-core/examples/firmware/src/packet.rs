//! The bytes of one buffer, as the main loop and the SysTick handler read and write them.
//!
//! A buffer starts with four little-endian words, followed by `len` data bytes:
//!
//! | bytes | word                                                            |
//! |-------|-----------------------------------------------------------------|
//! | 0..4  | `seq`: sequence number, also sent as the message tag            |
//! | 4..8  | tick at which the main loop sent it                             |
//! | 8..12 | checksum of the data, 0 until the SysTick handler fills it in   |
//! | 12..16| `len`: number of data bytes                                     |
//!
//! The data bytes follow a pattern derived from `seq`, so either side can verify them.

use crate::Failure;

/// Bytes in front of the data.
pub(crate) const HEADER: u32 = 16;

const SEQ: usize = 0;
const SENT_AT: usize = 1;
const CHECKSUM: usize = 2;
const LEN: usize = 3;

/// Data byte `i` of buffer `seq`.
fn pattern(seq: u32, i: usize) -> u8 {
    (seq as u8).wrapping_mul(31) ^ (i as u8)
}

/// FNV-1a over the data bytes: what the SysTick handler writes in the checksum word.
fn checksum(data: &[u8]) -> u32 {
    data.iter().fold(0x811C_9DC5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn read(bytes: &[u8], word: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&bytes[4 * word..4 * word + 4]);
    u32::from_le_bytes(w)
}

fn write(bytes: &mut [u8], word: usize, value: u32) {
    bytes[4 * word..4 * word + 4].copy_from_slice(&value.to_le_bytes());
}

/// Checks the header against the tag the buffer travelled with and returns the data.
fn data(bytes: &[u8], tag: u32) -> Result<&[u8], Failure> {
    let corrupted = |what| Failure::Corrupted { seq: tag, what };
    if bytes.len() < HEADER as usize {
        return Err(corrupted("buffer shorter than its header"));
    }
    if read(bytes, SEQ) != tag {
        return Err(corrupted("sequence number differs from the tag"));
    }
    let len = read(bytes, LEN) as usize;
    let data = bytes
        .get(HEADER as usize..HEADER as usize + len)
        .ok_or(corrupted("length runs past the buffer"))?;
    if data.iter().enumerate().any(|(i, &b)| b != pattern(tag, i)) {
        return Err(corrupted("data pattern damaged"));
    }
    Ok(data)
}

/// Main loop: fills a fresh buffer (at least `HEADER + len` bytes) for sequence number
/// `seq`, sent at tick `now`.
pub(crate) fn fill(bytes: &mut [u8], seq: u32, len: u32, now: u32) -> Result<(), Failure> {
    let end = (HEADER + len) as usize;
    let Some(data) = bytes.get_mut(HEADER as usize..end) else {
        return Err(Failure::Corrupted {
            seq,
            what: "buffer smaller than requested",
        });
    };
    for (i, b) in data.iter_mut().enumerate() {
        *b = pattern(seq, i);
    }
    write(bytes, SEQ, seq);
    write(bytes, SENT_AT, now);
    write(bytes, CHECKSUM, 0);
    write(bytes, LEN, len);
    Ok(())
}

/// SysTick handler: verifies a buffer that arrived with `tag` and fills in its checksum.
pub(crate) fn answer(bytes: &mut [u8], tag: u32) -> Result<(), Failure> {
    let sum = checksum(data(bytes, tag)?);
    if read(bytes, CHECKSUM) != 0 {
        return Err(Failure::Corrupted {
            seq: tag,
            what: "arrived already answered",
        });
    }
    write(bytes, CHECKSUM, sum);
    Ok(())
}

/// Main loop: verifies an answered buffer that came back with `tag` at tick `now`.
/// Returns its round-trip time in ticks.
pub(crate) fn check_answer(bytes: &[u8], tag: u32, now: u32) -> Result<u32, Failure> {
    let sum = checksum(data(bytes, tag)?);
    if read(bytes, CHECKSUM) != sum {
        return Err(Failure::Corrupted {
            seq: tag,
            what: "checksum missing or wrong",
        });
    }
    Ok(now.wrapping_sub(read(bytes, SENT_AT)))
}
