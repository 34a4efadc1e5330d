//! Operations and their decoding from bytes.
//!
//! Hand-written rather than `#[derive(arbitrary::Arbitrary)]`, measured: the derive picks
//! variants uniformly from a 4-byte little-endian tag (only its last byte matters), while
//! this decoder weights them (allocations 13/32, so heaps fill up; kills 1/32) with a
//! one-byte kind whose top bit doubles as the `by_owner`/`from_freed` flag. With the
//! derive and the same field bounds, a 200 KB stream decoded 28k operations instead of
//! 45k, reached at most 20 live blocks instead of 49 and 1 out-of-memory instead of 80,
//! and the protocol streams delivered 4 messages instead of 47; 30-second fuzz runs ended
//! with less coverage for both targets. Weights on top of the derive would be a
//! hand-written table again. `keep`, `take` and `set_kept_root` share the kinds of
//! `FreeBad`, `Relocate` and `Write` (the top bit picks), 1/64 each, so allocations keep
//! their weight. The process cache's operations share kinds the same way (bit 6 picks):
//! its allocations take 5/64 from the allocations' 13/32, its frees 3/64 from the frees'
//! 3/32, its drains 1/64 from the reserves' 1/32.

use alloc::vec::Vec;

/// Which process performs an operation: an index into the registered processes (modulo
/// their number).
pub type Who = u8;

/// Which live block an operation targets: an index into the live blocks (modulo).
pub type Pick = u16;

/// One step of a test run.
///
/// Fields: `who`, `to` and `with` choose processes ([`Who`]), `pick` a block ([`Pick`]),
/// `size` is in bytes, `by_owner` makes the block's own owner act instead of `who`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are described above, once for all variants
pub enum Op {
    /// Register a new process.
    Register,
    /// `try_alloc` (low end).
    Alloc { who: Who, size: u32 },
    /// `try_alloc_service` (high end).
    AllocService { who: Who, size: u32 },
    /// `alloc_at` at a chosen offset: a recently freed block's (`from_freed`) or a live one's.
    AllocAt {
        who: Who,
        pick: Pick,
        from_freed: bool,
        size: u32,
    },
    /// `free` of a live block, by one of its owners (`by_owner`) or by `who`.
    Free {
        who: Who,
        pick: Pick,
        by_owner: bool,
    },
    /// `free` of an offset that is not a live block: freed before, or inside a live block.
    FreeBad { who: Who, pick: Pick, inside: u8 },
    /// `reserve`.
    Reserve { who: Who, size: u32 },
    /// `alloc_from_reserve`.
    AllocFromReserve { who: Who, size: u32 },
    /// `give` from one of the block's owners (`by_owner`) or from `who`, to `to`.
    Give {
        who: Who,
        pick: Pick,
        to: Who,
        by_owner: bool,
    },
    /// `share`.
    Share {
        who: Who,
        pick: Pick,
        with: Who,
        by_owner: bool,
    },
    /// `release`.
    Release {
        who: Who,
        pick: Pick,
        by_owner: bool,
    },
    /// `reclaim` (unregister).
    Reclaim { who: Who },
    /// Declare a process dead and run `reclaim_dead`.
    Kill { who: Who },
    /// Rewrite a live block's contents.
    Write { pick: Pick },
    /// Copy the region to another address and attach there.
    Relocate,
    /// Arm fault injection: the next operation "dies" at its `steps`-th journal step.
    Crash { steps: u16 },
    /// `keep` of a live block, by one of its owners (`by_owner`) or by `who`.
    Keep {
        who: Who,
        pick: Pick,
        by_owner: bool,
    },
    /// `take` by `who` of a kept block (three times in four, when there is one) or of any
    /// live block.
    Take { who: Who, pick: Pick },
    /// `set_kept_root` to a live block (kept or not), or to nothing (`clear`).
    SetRoot { who: Who, pick: Pick, clear: bool },
    /// `alloc` through `who`'s process cache (made on first use).
    CacheAlloc { who: Who, size: u32 },
    /// `free` of a live block through the process cache of one of its owners
    /// (`by_owner`) or of `who`.
    CacheFree {
        who: Who,
        pick: Pick,
        by_owner: bool,
    },
    /// `drain` of `who`'s process cache (if it has one), then dropping it if `and_drop`.
    CacheDrain { who: Who, and_drop: bool },
}

/// Region shape for a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Total bytes of the buffer.
    pub size: usize,
    /// Block alignment.
    pub align: u32,
    /// Process-table capacity.
    pub max_processes: u16,
    /// Number of disjoint ranges (1..=3).
    pub ranges: usize,
}

/// Reads operations out of bytes. Running out of bytes ends the run.
#[derive(Debug)]
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Decodes from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data, pos: 0 }
    }

    /// The next byte, or `None` at the end.
    pub fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }

    /// The rest of the bytes.
    pub fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }

    /// The region shape (defaults when the bytes run out).
    pub fn setup(&mut self) -> Setup {
        let b = self.byte().unwrap_or(0);
        Setup {
            // At least 12 KiB: range 0 of a split region must hold the 4.5 KiB header.
            size: 12288 << (b % 4),
            align: [16, 16, 8, 64][usize::from((b >> 2) % 4)],
            max_processes: 2 + u16::from((b >> 4) % 6),
            ranges: 1 + usize::from((b >> 6) % 3),
        }
    }

    /// A request size: log-uniform over 1..=8191 mostly, sometimes up to 65535, with 0
    /// and huge values now and then to exercise the error paths.
    fn size(&mut self) -> Option<u32> {
        let sel = self.byte()?;
        let raw = self.u16()?;
        Some(match sel {
            0 => 0,
            1 => u32::MAX - u32::from(raw),
            2 => 1 << 20,
            3..=15 => u32::from(raw),
            _ => (u32::from(raw) >> (3 + sel % 13)).max(1),
        })
    }

    /// The next operation, or `None` at the end.
    pub fn op(&mut self) -> Option<Op> {
        let kind = self.byte()?;
        let who = self.byte()?;
        // Weighted so that blocks accumulate until the heap fills up now and then.
        Some(match kind % 32 {
            0 => Op::Register,
            27..=31 if kind & 0x40 != 0 => Op::CacheAlloc {
                who,
                size: self.size()?,
            },
            1..=8 | 27..=31 => Op::Alloc {
                who,
                size: self.size()?,
            },
            9 => Op::AllocService {
                who,
                size: self.size()?,
            },
            10 => Op::AllocAt {
                who,
                pick: self.u16()?,
                from_freed: kind & 0x80 == 0,
                size: self.size()?,
            },
            11..=13 if kind & 0x40 != 0 => Op::CacheFree {
                who,
                pick: self.u16()?,
                by_owner: kind & 0x80 == 0,
            },
            11..=13 => Op::Free {
                who,
                pick: self.u16()?,
                by_owner: kind & 0x80 == 0,
            },
            14 if kind & 0x80 != 0 => Op::Keep {
                who,
                pick: self.u16()?,
                by_owner: kind & 0x40 == 0,
            },
            14 => Op::FreeBad {
                who,
                pick: self.u16()?,
                inside: self.byte()?,
            },
            15 if kind & 0x40 != 0 => Op::CacheDrain {
                who,
                and_drop: kind & 0x80 != 0,
            },
            15 => Op::Reserve {
                who,
                size: self.size()?,
            },
            16 => Op::AllocFromReserve {
                who,
                size: self.size()?,
            },
            17 | 18 => Op::Give {
                who,
                pick: self.u16()?,
                to: self.byte()?,
                by_owner: kind & 0x80 == 0,
            },
            19 => Op::Share {
                who,
                pick: self.u16()?,
                with: self.byte()?,
                by_owner: kind & 0x80 == 0,
            },
            20 | 21 => Op::Release {
                who,
                pick: self.u16()?,
                by_owner: kind & 0x80 == 0,
            },
            22 => Op::Reclaim { who },
            23 => Op::Kill { who },
            24 if kind & 0x80 != 0 => {
                let pick = self.u16()?;
                Op::SetRoot {
                    who,
                    pick,
                    clear: pick % 4 == 0,
                }
            }
            24 => Op::Write { pick: self.u16()? },
            25 if kind & 0x80 != 0 => Op::Take {
                who,
                pick: self.u16()?,
            },
            25 => Op::Relocate,
            _ => Op::Crash {
                steps: 1 + self.u16()? % 64,
            },
        })
    }

    /// All remaining operations.
    pub fn ops(&mut self) -> Vec<Op> {
        let mut v = Vec::new();
        while let Some(op) = self.op() {
            v.push(op);
        }
        v
    }
}
