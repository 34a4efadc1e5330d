//! [`HostError`]: everything the host layer can fail with. Operating-system errors keep
//! their errno (or Win32 error code) and name the call that failed.

use std::fmt;

use shm_core::system::{SegmentName, SystemError};

/// Why a host operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum HostError {
    /// An operating-system call failed.
    Os {
        /// The call (e.g. `shm_open`).
        call: &'static str,
        /// The errno (POSIX) or `GetLastError` code (Windows).
        code: i32,
    },
    /// The segment name is not valid (see [`SegmentName`]).
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A segment with that name exists already.
    Exists {
        /// Its name.
        name: String,
    },
    /// No segment has that name.
    NotFound {
        /// The name.
        name: String,
    },
    /// The segment is smaller than a region needs.
    TooSmall {
        /// Its size.
        size: u64,
        /// The least that works.
        needed: u64,
    },
    /// The size asked for is not usable (zero, or over 4 GiB: offsets are 32-bit).
    BadSize {
        /// The size.
        size: u64,
    },
    /// The core reported an error.
    Core(shm_core::Error),
    /// No answer in time.
    Timeout,
    /// The server refused the connection or disconnected this client.
    Disconnected,
    /// The message payload's header is inconsistent (a corrupted or foreign message).
    BadMessage,
    /// The buffer was allocated or received through another server or client (of this
    /// segment or another one): it can only be sent through its own.
    ForeignBuffer,
    /// An existing segment of that name may not be taken over; says which rule failed.
    TakeoverRefused {
        /// The segment's name.
        name: String,
        /// Why.
        why: Refusal,
    },
    /// The segment's object shrank under its mapping (someone with write access truncated
    /// it). Touching the lost pages would kill the process with SIGBUS, so the server
    /// stops using it.
    Truncated {
        /// Bytes mapped.
        mapped: u64,
        /// Bytes the object has now.
        now: u64,
    },
    /// The object where segment `name` would be is not that segment (another program's,
    /// another name's at the same System V key, a file that is not a segment, or one
    /// still being created); it was left alone.
    Foreign {
        /// The segment's name.
        name: String,
    },
    /// The segment kind asked for does not exist on this system (System V or file-backed
    /// segments off Linux).
    BackendUnavailable {
        /// The kind, as named (`sysv`, `file:PATH`, ...).
        backend: String,
    },
    /// A system error of a kind that has no variant of its own here.
    System(SystemError),
}

pub use shm_core::system::Refusal;

impl HostError {
    /// A system error that happened to segment `name`: the name goes into the variants
    /// that carry one.
    pub fn from_system(e: SystemError, name: &SegmentName) -> Self {
        let name = name.as_str().to_owned();
        match e {
            SystemError::Exists => HostError::Exists { name },
            SystemError::NotFound => HostError::NotFound { name },
            SystemError::TakeoverRefused(why) => HostError::TakeoverRefused { name, why },
            SystemError::InvalidName(e) => HostError::InvalidName {
                name,
                reason: e.reason(),
            },
            SystemError::Foreign => HostError::Foreign { name },
            e => HostError::from(e),
        }
    }

    /// The OS error code, if this is an OS error.
    pub fn os_code(&self) -> Option<i32> {
        match self {
            HostError::Os { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Os { call, code } => write!(
                f,
                "{call} failed: {} (os error {code})",
                std::io::Error::from_raw_os_error(*code)
            ),
            HostError::InvalidName { name, reason } => {
                write!(f, "invalid segment name {name:?}: {reason}")
            }
            HostError::Exists { name } => write!(f, "segment {name:?} already exists"),
            HostError::NotFound { name } => write!(f, "segment {name:?} does not exist"),
            HostError::TooSmall { size, needed } => write!(
                f,
                "segment holds {size} bytes, at least {needed} are needed"
            ),
            HostError::BadSize { size } => write!(
                f,
                "unusable segment size {size} (must be more than 0 and at most 4 GiB)"
            ),
            HostError::Core(e) => write!(f, "{e}"),
            HostError::Timeout => f.write_str("timed out"),
            HostError::Disconnected => f.write_str("disconnected by the server"),
            HostError::BadMessage => f.write_str("message header is inconsistent"),
            HostError::ForeignBuffer => f.write_str(
                "the buffer belongs to another server or client; send it through its own",
            ),
            HostError::TakeoverRefused { name, why } => match why {
                Refusal::OtherUser { owner, me } => write!(
                    f,
                    "segment {name:?} belongs to user {owner}, not to this user ({me}); not taking it over"
                ),
                Refusal::WiderMode { found, asked } => write!(
                    f,
                    "segment {name:?} has mode {found:04o}, wider than the {asked:04o} asked for; not taking it over"
                ),
                Refusal::ServerAlive => write!(
                    f,
                    "segment {name:?} has a server that is alive (or cannot be told dead)"
                ),
            },
            HostError::Foreign { name } => write!(
                f,
                "the object where segment {name:?} would be is not that segment (another program's, another name's, or one being created); left alone"
            ),
            HostError::BackendUnavailable { backend } => write!(
                f,
                "segment kind {backend:?} is not available on this system"
            ),
            HostError::System(e) => write!(f, "{e}"),
            HostError::Truncated { mapped, now } => write!(
                f,
                "segment was truncated to {now} bytes under a {mapped}-byte mapping; stopped using it"
            ),
        }
    }
}

impl std::error::Error for HostError {}

/// A system error where no segment name is at hand (doorbells, presence, sizes); an
/// operation on a named segment goes through [`HostError::from_system`] or
/// [`NamedResult::named`] instead, so that its error names the segment.
impl From<SystemError> for HostError {
    fn from(e: SystemError) -> Self {
        match e {
            SystemError::Os { call, code } => HostError::Os { call, code },
            SystemError::Exists => HostError::Exists {
                name: String::new(),
            },
            SystemError::NotFound => HostError::NotFound {
                name: String::new(),
            },
            SystemError::BadSize { size } => HostError::BadSize { size },
            SystemError::InvalidName(e) => HostError::InvalidName {
                name: String::new(),
                reason: e.reason(),
            },
            SystemError::TakeoverRefused(why) => HostError::TakeoverRefused {
                name: String::new(),
                why,
            },
            SystemError::Core(e) => HostError::from(e),
            e => HostError::System(e),
        }
    }
}

/// Attaches a segment's name to the error of a system operation on it.
pub trait NamedResult<T> {
    /// `self`, with an error turned into a [`HostError`] that names `name`.
    fn named(self, name: &SegmentName) -> Result<T>;
}

impl<T> NamedResult<T> for std::result::Result<T, SystemError> {
    fn named(self, name: &SegmentName) -> Result<T> {
        self.map_err(|e| HostError::from_system(e, name))
    }
}

impl From<shm_core::Error> for HostError {
    fn from(e: shm_core::Error) -> Self {
        match e {
            shm_core::Error::Disconnected => HostError::Disconnected,
            e => HostError::Core(e),
        }
    }
}

/// Shorthand for host results.
pub type Result<T, E = HostError> = std::result::Result<T, E>;
