//! Who acts: [`ProcessId`] (an operating-system process), [`ProcSlot`] (a place in the
//! process table, reused), [`Incarnation`] (one registration in that place, never reused
//! while the region lives) and [`Member`] (the right to act as one incarnation, handed out
//! only by registering).
//!
//! A slot is a number that comes back: when a process is reclaimed, the next process to
//! register gets the lowest free slot. So nothing that acts on another process's behalf, or
//! on its memory, names it by slot alone: it names the incarnation, and the core checks
//! under the region lock that the slot still holds that incarnation before it acts.

use core::fmt;

/// Index of a registered process in the process table. Reused once its process is
/// reclaimed: an address, not an identity (see [`Incarnation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcSlot(pub u16);

impl fmt::Display for ProcSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One registration: a slot and the registration serial it got. The serial counts
/// registrations in the region (32 bits, wrapping only after 2^32 registrations), so a
/// slot that was reclaimed and handed to a newcomer holds another incarnation.
///
/// An incarnation names a process; it gives no right to act as it (see [`Member`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Incarnation {
    /// The process-table slot.
    pub slot: ProcSlot,
    /// The registration serial.
    pub serial: u32,
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.slot.0, self.serial)
    }
}

/// The right to act as one registered incarnation: to allocate, free, give and send as it.
///
/// Only [`Heap::register`](crate::Heap::register) and
/// [`Heap::register_as`](crate::Heap::register_as) make one; safe code cannot build one
/// from numbers. Every operation that takes a `Member` checks, under the region lock, that
/// its slot still holds its incarnation, and fails with
/// [`Error::StaleMember`](crate::Error::StaleMember) otherwise: a process that was
/// reclaimed (or unregistered) cannot act as whoever registered in its slot next.
///
/// Firmware may register several members in one program (tasks, an interrupt handler),
/// each with its own `Member`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    inc: Incarnation,
}

impl Member {
    /// Made by registration only.
    pub(crate) const fn new(inc: Incarnation) -> Self {
        Member { inc }
    }

    /// A member for an incarnation found in the region, for the test kit's hostile-bytes
    /// runs and forgery tests only: it exists so that fuzzing can act as the records an
    /// arbitrary image holds. Not part of the API (the `testkit` feature is for tests).
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub const fn forged_for_tests(inc: Incarnation) -> Self {
        Member { inc }
    }

    /// A member that can no longer act: every operation refuses it with
    /// [`Error::StaleMember`](crate::Error::StaleMember). For a handle copied into a
    /// forked child, which is another process.
    pub const fn revoked(&self) -> Self {
        Member {
            inc: Incarnation {
                slot: ProcSlot(u16::MAX), // never a slot: tables hold at most 0xFFFE
                serial: self.inc.serial,
            },
        }
    }

    /// The incarnation this member acts as.
    pub const fn incarnation(&self) -> Incarnation {
        self.inc
    }

    /// Its process-table slot.
    pub const fn slot(&self) -> ProcSlot {
        self.inc.slot
    }

    /// Its registration serial.
    pub const fn serial(&self) -> u32 {
        self.inc.serial
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inc.fmt(f)
    }
}

/// Identifies a process for as long as it lives.
///
/// `pid` alone is not enough: operating systems reuse process ids, so a dead lock holder's
/// pid may belong to a new, live process. `tag` tells the two apart (on Linux a hash of the
/// process start time, on Windows of its creation time); 0 means "unknown", and then only
/// `pid` is compared. `pid` is never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// Operating-system process id (or task id on firmware); never 0.
    pub pid: u32,
    /// Distinguishes processes that had the same `pid` at different times; 0 if unknown.
    pub tag: u32,
}

impl ProcessId {
    /// A process id with an unknown tag.
    pub const fn from_pid(pid: u32) -> Self {
        ProcessId { pid, tag: 0 }
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.pid)
    }
}
