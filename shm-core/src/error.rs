//! Typed errors. Every fallible operation in this crate returns [`Error`]; nothing panics on
//! bad input or on corrupted region bytes.

use core::fmt;

use crate::ids::{Incarnation, ProcSlot};
use crate::offset::Offset;

/// Why an operation failed.
///
/// One enum for every operation, not one per family (allocation, ownership, protocol,
/// attach): the families' operations nest (a send is an ownership change plus a queue
/// publication; connecting allocates), so a per-family enum would either repeat the
/// other families' variants or wrap them, and every operation shares the failures below.
/// What each operation can return is listed in its `# Errors` section, and the model
/// tests (`testkit::model`) fail on any error an operation returns outside the cases they
/// expect for it.
///
/// Every operation that acts for a member can fail with:
/// - [`Error::StaleMember`] or [`Error::NotRegistered`]: the member is not (or no longer)
///   the process in its slot;
/// - [`Error::Corrupted`]: the region's bytes break an invariant;
/// - [`Error::JournalFull`]: a bug in this crate (the operation was undone);
/// - [`Error::InjectedCrash`]: only with the `fault-injection` feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No free block is large enough right now (a blocking allocation would wait).
    OutOfMemory {
        /// Bytes asked for.
        requested: u32,
    },
    /// The request can never be satisfied by this region, however much is freed.
    TooLarge {
        /// Bytes asked for.
        requested: u32,
        /// Largest request the region could ever serve.
        max: u32,
    },
    /// A zero-byte allocation or a size that overflows when rounded up.
    InvalidSize {
        /// Bytes asked for.
        requested: u64,
    },
    /// The offset does not name the payload of a block in this region.
    BadOffset {
        /// The offending offset.
        offset: Offset,
    },
    /// The block is free already.
    DoubleFree {
        /// Payload offset of the block.
        offset: Offset,
    },
    /// The process does not own (or co-own) the block.
    NotOwner {
        /// Payload offset of the block.
        offset: Offset,
        /// The process that tried to use it.
        process: ProcSlot,
    },
    /// The process already co-owns the block.
    AlreadyOwner {
        /// Payload offset of the block.
        offset: Offset,
        /// The process named as the new co-owner.
        process: ProcSlot,
    },
    /// The range asked for by `alloc_at` is not entirely free.
    Unavailable {
        /// Offset asked for.
        offset: Offset,
    },
    /// The slot does not hold a registered process.
    NotRegistered {
        /// The slot named.
        process: ProcSlot,
    },
    /// The member's slot no longer holds its incarnation: the process was reclaimed or
    /// unregistered (and the slot may belong to a newer process now). Nothing was done.
    StaleMember {
        /// The incarnation the caller named.
        process: Incarnation,
    },
    /// The peer named is gone: its participant was freed, or its slot or block belongs to
    /// a newer process now. Nothing was sent.
    PeerGone,
    /// The caller's own participant was disconnected (by the server, for example because it
    /// stopped answering keepalives). Reconnect to take part again.
    Disconnected,
    /// The process is not known to be dead, so its memory cannot be reclaimed.
    StillAlive {
        /// The process.
        process: Incarnation,
    },
    /// The process table is full.
    TooManyProcesses {
        /// Capacity of the table.
        capacity: u16,
    },
    /// The process owns as many blocks as an owner table can index (16,777,215).
    OwnerTableFull {
        /// The process.
        process: ProcSlot,
    },
    /// The block is shared; it cannot be given away or freed by one owner.
    Shared {
        /// Payload offset of the block.
        offset: Offset,
    },
    /// The block is kept (owned by the region, see [`Heap::keep`](crate::Heap::keep)): no
    /// process may free, give, share or release it until one takes it.
    Kept {
        /// Payload offset of the block.
        offset: Offset,
    },
    /// The block is not kept, so it cannot be taken or named as the kept root.
    NotKept {
        /// Payload offset of the block.
        offset: Offset,
    },
    /// The process has no reserve, or the reserve is smaller than the request.
    ReserveTooSmall {
        /// Bytes asked for.
        requested: u32,
        /// Bytes left in the reserve.
        available: u32,
    },
    /// A blocking call gave up.
    Timeout,
    /// The region's bytes break an invariant; see [`Corruption`].
    Corrupted(Corruption),
    /// The region was not formatted by a compatible build; see [`AttachError`].
    Attach(AttachError),
    /// A bounded queue has no room (the message stays with the sender).
    QueueFull,
    /// No live server is registered in the region.
    NoServer,
    /// A live server is registered already.
    ServerRunning,
    /// The server restarted since this participant connected: reconnect.
    ServerRestarted,
    /// The receiver is not connected (never was, disconnected, or declared dead).
    NotConnected,
    /// User tags must be below [`CONTROL_TAG_BASE`](crate::format::CONTROL_TAG_BASE).
    ReservedTag {
        /// The tag given.
        tag: u32,
    },
    /// A bounded queue has nothing to take.
    QueueEmpty,
    /// An operation needed more journaled words than the journal holds. This is a bug in
    /// this crate (every operation's need is tested); the operation was undone.
    JournalFull,
    /// Fault injection stopped the operation here, as if its process had died holding
    /// the lock. Only produced with the `fault-injection` feature.
    InjectedCrash,
}

/// What kind of broken invariant a walk over the region found, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// Offset of the structure being read when the problem showed.
    pub at: u32,
    /// What was wrong there.
    pub kind: CorruptionKind,
}

/// The broken invariant behind a [`Corruption`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// An offset points outside every range of the region.
    OutOfBounds,
    /// An offset is not aligned as the format requires.
    Misaligned,
    /// A block's size is zero, unaligned, or runs past its range.
    BadBlockSize,
    /// Blocks do not tile a range exactly up to its end marker.
    BadTiling,
    /// A block's recorded previous neighbour is not its previous neighbour.
    BadBoundaryTag,
    /// A free list of the size-class index loops, has a wrong link or bitmap, lists a
    /// block in the wrong class, or points at a used block.
    BadFreeList,
    /// Two free blocks are neighbours (they should have been merged).
    Uncoalesced,
    /// A free block is not listed in the size-class index.
    LostFreeBlock,
    /// The owner information of a block and the owner tables disagree.
    BadOwner,
    /// A reference count disagrees with the owner cells naming the block.
    BadRefCount,
    /// An owner table's free-cell list or counters are inconsistent.
    BadOwnerTable,
    /// The process table is inconsistent.
    BadProcessTable,
    /// The maintained statistics disagree with a walk.
    BadStatistics,
    /// The operation journal is malformed.
    BadJournal,
    /// A walk went on longer than the region could hold (a cycle).
    Cycle,
    /// A queue's indices or entries are inconsistent.
    BadQueue,
    /// Protocol records (server info, client blocks) are inconsistent.
    BadProtocol,
}

/// Why [`Heap::attach`](crate::Heap::attach) refused a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttachError {
    /// The first bytes are not this format's magic number: not a region, or not formatted.
    BadMagic,
    /// The region uses another format version.
    Version {
        /// Version found in the region.
        found: u32,
        /// Version this build speaks.
        expected: u32,
    },
    /// The region was formatted by a build whose struct layouts differ from this one's
    /// (different crate version, target or options).
    Layout {
        /// Fingerprint found in the region.
        found: u32,
        /// Fingerprint of this build.
        expected: u32,
    },
    /// The memory supplied does not match the ranges recorded in the header.
    SizeMismatch {
        /// Size recorded in the header.
        recorded: u64,
        /// Size of the memory supplied.
        supplied: u64,
    },
    /// The memory is too small to hold a header and one block.
    TooSmall {
        /// Bytes supplied.
        supplied: u64,
        /// Bytes needed at least.
        needed: u64,
    },
    /// The memory is too large for 32-bit offsets.
    TooLarge {
        /// Bytes supplied.
        supplied: u64,
    },
    /// The base address is not aligned for the header.
    Misaligned,
    /// The configuration (alignment, ranges, table sizes) is invalid.
    BadConfig,
}

impl core::error::Error for Error {}
impl core::error::Error for AttachError {}

impl From<Corruption> for Error {
    fn from(c: Corruption) -> Self {
        Error::Corrupted(c)
    }
}

impl From<AttachError> for Error {
    fn from(e: AttachError) -> Self {
        Error::Attach(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutOfMemory { requested } => {
                write!(f, "out of memory: no free block holds {requested} bytes")
            }
            Error::TooLarge { requested, max } => write!(
                f,
                "request of {requested} bytes can never fit (largest possible block holds {max})"
            ),
            Error::InvalidSize { requested } => write!(f, "invalid allocation size {requested}"),
            Error::BadOffset { offset } => {
                write!(f, "offset {offset} is not a block in this region")
            }
            Error::DoubleFree { offset } => write!(f, "block {offset} is already free"),
            Error::NotOwner { offset, process } => {
                write!(f, "process {process} does not own block {offset}")
            }
            Error::AlreadyOwner { offset, process } => {
                write!(f, "process {process} already co-owns block {offset}")
            }
            Error::Unavailable { offset } => {
                write!(f, "the range at {offset} is not entirely free")
            }
            Error::NotRegistered { process } => write!(f, "process {process} is not registered"),
            Error::StaleMember { process } => write!(
                f,
                "process {process} is no longer registered (its slot was reclaimed or reused)"
            ),
            Error::PeerGone => f.write_str(
                "the peer is gone (its participant was freed or belongs to a newer process)",
            ),
            Error::Disconnected => f.write_str("this participant was disconnected; reconnect"),
            Error::StillAlive { process } => write!(
                f,
                "process {process} is not known to be dead; its memory stays its own"
            ),
            Error::TooManyProcesses { capacity } => {
                write!(f, "process table is full ({capacity} processes)")
            }
            Error::OwnerTableFull { process } => {
                write!(f, "process {process} owns the maximum number of blocks")
            }
            Error::Shared { offset } => write!(f, "block {offset} is shared by several owners"),
            Error::Kept { offset } => {
                write!(f, "block {offset} is kept by the region; take it first")
            }
            Error::NotKept { offset } => write!(f, "block {offset} is not a kept block"),
            Error::ReserveTooSmall {
                requested,
                available,
            } => write!(
                f,
                "reserve too small: {requested} bytes asked, {available} available"
            ),
            Error::Timeout => f.write_str("timed out"),
            Error::Corrupted(c) => write!(f, "corrupted region: {c}"),
            Error::Attach(e) => write!(f, "cannot attach: {e}"),
            Error::QueueFull => f.write_str("queue is full"),
            Error::NoServer => f.write_str("no server is running in this region"),
            Error::ServerRunning => f.write_str("a live server is already registered"),
            Error::ServerRestarted => f.write_str("the server restarted; reconnect"),
            Error::NotConnected => f.write_str("receiver is not connected"),
            Error::ReservedTag { tag } => {
                write!(f, "tag {tag:#x} is reserved for protocol control entries")
            }
            Error::QueueEmpty => f.write_str("queue is empty"),
            Error::JournalFull => f.write_str("operation journal overflow (a bug: please report)"),
            Error::InjectedCrash => f.write_str("operation stopped by fault injection"),
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {:#x}", self.kind, self.at)
    }
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CorruptionKind::OutOfBounds => "offset out of bounds",
            CorruptionKind::Misaligned => "misaligned offset",
            CorruptionKind::BadBlockSize => "bad block size",
            CorruptionKind::BadTiling => "blocks do not tile the range",
            CorruptionKind::BadBoundaryTag => "bad previous-block tag",
            CorruptionKind::BadFreeList => {
                "size-class free list broken or pointing at a used block"
            }
            CorruptionKind::Uncoalesced => "two adjacent free blocks",
            CorruptionKind::LostFreeBlock => "free block missing from the size-class index",
            CorruptionKind::BadOwner => "block owner and owner tables disagree",
            CorruptionKind::BadRefCount => "reference count disagrees with owner cells",
            CorruptionKind::BadOwnerTable => "owner table inconsistent",
            CorruptionKind::BadProcessTable => "process table inconsistent",
            CorruptionKind::BadStatistics => "statistics disagree with the heap",
            CorruptionKind::BadJournal => "operation journal malformed",
            CorruptionKind::Cycle => "walk longer than the region allows (cycle)",
            CorruptionKind::BadQueue => "queue inconsistent",
            CorruptionKind::BadProtocol => "protocol records inconsistent",
        })
    }
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::BadMagic => f.write_str("no region header (bad magic number)"),
            AttachError::Version { found, expected } => write!(
                f,
                "region format version {found}, this build speaks version {expected}"
            ),
            AttachError::Layout { found, expected } => write!(
                f,
                "region layout fingerprint {found:#010x} differs from this build's {expected:#010x} \
                 (built with an incompatible version, target or options)"
            ),
            AttachError::SizeMismatch { recorded, supplied } => write!(
                f,
                "header records {recorded} bytes but {supplied} bytes were supplied"
            ),
            AttachError::TooSmall { supplied, needed } => {
                write!(f, "{supplied} bytes supplied, at least {needed} needed")
            }
            AttachError::TooLarge { supplied } => {
                write!(f, "{supplied} bytes supplied; offsets are 32-bit (at most 4 GiB)")
            }
            AttachError::Misaligned => f.write_str("base address is not aligned for the header"),
            AttachError::BadConfig => f.write_str("invalid configuration"),
        }
    }
}

/// Shorthand for building a [`Corruption`] error.
#[inline]
pub(crate) fn corrupt(at: u32, kind: CorruptionKind) -> Error {
    Error::Corrupted(Corruption { at, kind })
}
