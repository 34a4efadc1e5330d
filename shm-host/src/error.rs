//! [`HostError`]: everything the host layer can fail with. Operating-system errors keep
//! their errno (or Win32 error code) and name the call that failed.

use std::fmt;

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
    /// The segment name is not valid (see [`SegmentName`](crate::SegmentName)).
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
}

impl HostError {
    /// An `Os` error from the calling thread's last errno.
    #[cfg(unix)]
    pub fn last_os(call: &'static str) -> Self {
        HostError::Os {
            call,
            code: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
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
        }
    }
}

impl std::error::Error for HostError {}

impl From<shm_core::Error> for HostError {
    fn from(e: shm_core::Error) -> Self {
        HostError::Core(e)
    }
}

/// Shorthand for host results.
pub type Result<T, E = HostError> = std::result::Result<T, E>;
