//! [`SystemError`]: what a [`System`](super::System) operation fails with. Small and
//! `Copy`, with no allocation: the host layer adds the segment's name and turns it into
//! its own error type.

use core::fmt;

use super::name::NameError;

/// Why a system operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SystemError {
    /// An operating-system call failed.
    Os {
        /// The call (e.g. `shm_open`).
        call: &'static str,
        /// The errno (POSIX) or `GetLastError` code (Windows).
        code: i32,
    },
    /// A segment with that name exists already.
    Exists,
    /// No segment has that name.
    NotFound,
    /// The size asked for is not usable (zero, or over 4 GiB: offsets are 32-bit), or an
    /// object's size does not fit this process's address space.
    BadSize {
        /// The size.
        size: u64,
    },
    /// An object name the system cannot use.
    InvalidName(NameError),
    /// An existing segment may not be taken over; says which rule failed.
    TakeoverRefused(Refusal),
    /// The core refused something in the region (a doorbell's platform area, ...).
    Core(crate::error::Error),
    /// The object where this segment would be is not this segment: another program's,
    /// another segment's that shares its key (System V), a file that is not a segment, or
    /// one still being created. It is left alone.
    Foreign,
}

/// Why an existing segment may not be taken over by a new server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It belongs to another user.
    OtherUser {
        /// Its owner's user id.
        owner: u32,
        /// Ours.
        me: u32,
    },
    /// Its permissions admit more than the new server asked for.
    WiderMode {
        /// Its permission bits.
        found: u32,
        /// The bits asked for.
        asked: u32,
    },
    /// Its server is alive, or cannot be told dead.
    ServerAlive,
}

impl SystemError {
    /// The OS error code, if this is an OS error.
    pub fn os_code(&self) -> Option<i32> {
        match self {
            SystemError::Os { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::OtherUser { owner, me } => {
                write!(f, "it belongs to user {owner}, not to this user ({me})")
            }
            Refusal::WiderMode { found, asked } => write!(
                f,
                "it has mode {found:04o}, wider than the {asked:04o} asked for"
            ),
            Refusal::ServerAlive => f.write_str("its server is alive (or cannot be told dead)"),
        }
    }
}

impl fmt::Display for SystemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SystemError::Os { call, code } => write!(f, "{call} failed (os error {code})"),
            SystemError::Exists => f.write_str("segment already exists"),
            SystemError::NotFound => f.write_str("segment does not exist"),
            SystemError::BadSize { size } => write!(
                f,
                "unusable segment size {size} (must be more than 0 and at most 4 GiB)"
            ),
            SystemError::InvalidName(e) => write!(f, "{e}"),
            SystemError::TakeoverRefused(why) => write!(f, "not taking the segment over: {why}"),
            SystemError::Core(e) => write!(f, "{e}"),
            SystemError::Foreign => f.write_str(
                "the object there is not this segment (another program's, another name's, or one being created); left alone",
            ),
        }
    }
}

impl core::error::Error for SystemError {}

impl From<crate::error::Error> for SystemError {
    fn from(e: crate::error::Error) -> Self {
        SystemError::Core(e)
    }
}

impl From<NameError> for SystemError {
    fn from(e: NameError) -> Self {
        SystemError::InvalidName(e)
    }
}

/// Shorthand for system results.
pub type SystemResult<T> = Result<T, SystemError>;
