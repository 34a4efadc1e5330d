//! [`shm_error`]: what every fallible function returns, its static messages
//! ([`shm_strerror`]), the calling thread's last detailed message ([`shm_last_error`]),
//! and `call`, which runs a function body with panics caught.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use shm_host::HostError;

/// The result of a fallible function: `SHM_OK` (0) or why it failed.
///
/// The static text for a code is `shm_strerror(code)`; `shm_last_error()` has the
/// details of the last failure on the calling thread (which call, which name, the OS
/// error number).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum shm_error {
    /// Success.
    SHM_OK = 0,
    /// A pointer that must not be NULL was NULL.
    SHM_ERR_NULL_POINTER = 1,
    /// An argument is out of range: an unknown option value, a name that is not UTF-8,
    /// a buffer of another server or client, a handle emptied by an internal error.
    SHM_ERR_INVALID_ARGUMENT = 2,
    /// The segment name is not valid.
    SHM_ERR_INVALID_NAME = 3,
    /// A segment of that name exists already.
    SHM_ERR_EXISTS = 4,
    /// No segment has that name.
    SHM_ERR_NOT_FOUND = 5,
    /// A size is unusable (zero, over 4 GiB, or too small for a segment).
    SHM_ERR_BAD_SIZE = 6,
    /// The segment has no free block large enough now.
    SHM_ERR_OUT_OF_MEMORY = 7,
    /// The request can never fit in this segment.
    SHM_ERR_TOO_LARGE = 8,
    /// The receiver's queue is full; the buffer stays the caller's.
    SHM_ERR_QUEUE_FULL = 9,
    /// The receiver is no longer connected; the buffer stays the caller's.
    SHM_ERR_PEER_GONE = 10,
    /// No live server runs in the segment.
    SHM_ERR_NO_SERVER = 11,
    /// The server restarted: `shm_client_reconnect` joins the new one.
    SHM_ERR_SERVER_RESTARTED = 12,
    /// The server refused the connection, stopped, or disconnected this client.
    SHM_ERR_DISCONNECTED = 13,
    /// Nothing was waiting (the `try_` functions).
    SHM_ERR_EMPTY = 14,
    /// Nothing came in the time given.
    SHM_ERR_TIMEOUT = 15,
    /// An existing segment of that name may not be taken over (another user's, wider
    /// permissions, or its server is alive).
    SHM_ERR_TAKEOVER_REFUSED = 16,
    /// The segment was truncated under its mapping; the server stopped using it.
    SHM_ERR_TRUNCATED = 17,
    /// A received message's header is inconsistent.
    SHM_ERR_BAD_MESSAGE = 18,
    /// The segment's structures are damaged (`shm_server_check` names the first broken
    /// invariant in `shm_last_error()`).
    SHM_ERR_CORRUPTED = 19,
    /// This process's registration in the segment is gone (reclaimed, or the handle was
    /// inherited through `fork`).
    SHM_ERR_STALE = 20,
    /// An operating-system call failed (`shm_last_error()` names it and the errno).
    SHM_ERR_OS = 21,
    /// An internal error in the library (a Rust panic, caught at the boundary).
    SHM_ERR_INTERNAL = 22,
    /// Another failure; `shm_last_error()` says which.
    SHM_ERR_OTHER = 23,
}

use shm_error::*;

/// Every code, in order (for the tests and `shm_strerror`).
#[cfg(test)]
pub(crate) const ALL: [shm_error; 24] = [
    SHM_OK,
    SHM_ERR_NULL_POINTER,
    SHM_ERR_INVALID_ARGUMENT,
    SHM_ERR_INVALID_NAME,
    SHM_ERR_EXISTS,
    SHM_ERR_NOT_FOUND,
    SHM_ERR_BAD_SIZE,
    SHM_ERR_OUT_OF_MEMORY,
    SHM_ERR_TOO_LARGE,
    SHM_ERR_QUEUE_FULL,
    SHM_ERR_PEER_GONE,
    SHM_ERR_NO_SERVER,
    SHM_ERR_SERVER_RESTARTED,
    SHM_ERR_DISCONNECTED,
    SHM_ERR_EMPTY,
    SHM_ERR_TIMEOUT,
    SHM_ERR_TAKEOVER_REFUSED,
    SHM_ERR_TRUNCATED,
    SHM_ERR_BAD_MESSAGE,
    SHM_ERR_CORRUPTED,
    SHM_ERR_STALE,
    SHM_ERR_OS,
    SHM_ERR_INTERNAL,
    SHM_ERR_OTHER,
];

impl shm_error {
    /// The static, NUL-terminated message.
    fn message(self) -> &'static CStr {
        match self {
            SHM_OK => c"success",
            SHM_ERR_NULL_POINTER => c"a required pointer was NULL",
            SHM_ERR_INVALID_ARGUMENT => c"invalid argument",
            SHM_ERR_INVALID_NAME => c"invalid segment name",
            SHM_ERR_EXISTS => c"segment already exists",
            SHM_ERR_NOT_FOUND => c"segment does not exist",
            SHM_ERR_BAD_SIZE => c"unusable size",
            SHM_ERR_OUT_OF_MEMORY => c"segment out of memory",
            SHM_ERR_TOO_LARGE => c"request can never fit in the segment",
            SHM_ERR_QUEUE_FULL => c"receiver's queue is full",
            SHM_ERR_PEER_GONE => c"receiver is no longer connected",
            SHM_ERR_NO_SERVER => c"no live server in the segment",
            SHM_ERR_SERVER_RESTARTED => c"server restarted; reconnect",
            SHM_ERR_DISCONNECTED => c"disconnected by the server",
            SHM_ERR_EMPTY => c"nothing waiting",
            SHM_ERR_TIMEOUT => c"timed out",
            SHM_ERR_TAKEOVER_REFUSED => c"segment may not be taken over",
            SHM_ERR_TRUNCATED => c"segment was truncated under its mapping",
            SHM_ERR_BAD_MESSAGE => c"message header is inconsistent",
            SHM_ERR_CORRUPTED => c"segment structures are damaged",
            SHM_ERR_STALE => c"this process's registration in the segment is gone",
            SHM_ERR_OS => c"operating-system call failed",
            SHM_ERR_INTERNAL => c"internal error in the library",
            SHM_ERR_OTHER => c"operation failed",
        }
    }

    /// The code with this number, if there is one.
    fn from_i32(code: i32) -> Option<shm_error> {
        use shm_error::*;
        Some(match code {
            0 => SHM_OK,
            1 => SHM_ERR_NULL_POINTER,
            2 => SHM_ERR_INVALID_ARGUMENT,
            3 => SHM_ERR_INVALID_NAME,
            4 => SHM_ERR_EXISTS,
            5 => SHM_ERR_NOT_FOUND,
            6 => SHM_ERR_BAD_SIZE,
            7 => SHM_ERR_OUT_OF_MEMORY,
            8 => SHM_ERR_TOO_LARGE,
            9 => SHM_ERR_QUEUE_FULL,
            10 => SHM_ERR_PEER_GONE,
            11 => SHM_ERR_NO_SERVER,
            12 => SHM_ERR_SERVER_RESTARTED,
            13 => SHM_ERR_DISCONNECTED,
            14 => SHM_ERR_EMPTY,
            15 => SHM_ERR_TIMEOUT,
            16 => SHM_ERR_TAKEOVER_REFUSED,
            17 => SHM_ERR_TRUNCATED,
            18 => SHM_ERR_BAD_MESSAGE,
            19 => SHM_ERR_CORRUPTED,
            20 => SHM_ERR_STALE,
            21 => SHM_ERR_OS,
            22 => SHM_ERR_INTERNAL,
            23 => SHM_ERR_OTHER,
            _ => return None,
        })
    }
}

/// A failure on its way to C: the code and the detailed message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: shm_error,
    pub detail: String,
}

impl Failure {
    pub fn new(code: shm_error, detail: impl Into<String>) -> Self {
        Failure {
            code,
            detail: detail.into(),
        }
    }

    /// A NULL where a pointer is required; `what` names the parameter.
    pub fn null(what: &str) -> Self {
        Failure::new(SHM_ERR_NULL_POINTER, format!("{what} is NULL"))
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Failure::new(SHM_ERR_INVALID_ARGUMENT, detail)
    }
}

/// The code of a core error.
fn core_code(e: &shm_core::Error) -> shm_error {
    use shm_core::Error as E;
    match e {
        E::OutOfMemory { .. } => SHM_ERR_OUT_OF_MEMORY,
        E::TooLarge { .. } => SHM_ERR_TOO_LARGE,
        E::InvalidSize { .. } => SHM_ERR_BAD_SIZE,
        E::QueueFull => SHM_ERR_QUEUE_FULL,
        E::PeerGone => SHM_ERR_PEER_GONE,
        E::NoServer => SHM_ERR_NO_SERVER,
        E::ServerRestarted => SHM_ERR_SERVER_RESTARTED,
        E::Disconnected | E::NotConnected => SHM_ERR_DISCONNECTED,
        E::Timeout => SHM_ERR_TIMEOUT,
        E::QueueEmpty => SHM_ERR_EMPTY,
        E::Corrupted(_) | E::Attach(_) | E::BadOffset { .. } => SHM_ERR_CORRUPTED,
        E::StaleMember { .. } | E::NotRegistered { .. } => SHM_ERR_STALE,
        _ => SHM_ERR_OTHER,
    }
}

impl From<HostError> for Failure {
    fn from(e: HostError) -> Self {
        let code = match &e {
            HostError::Os { .. } => SHM_ERR_OS,
            HostError::InvalidName { .. } => SHM_ERR_INVALID_NAME,
            HostError::Exists { .. } => SHM_ERR_EXISTS,
            HostError::NotFound { .. } => SHM_ERR_NOT_FOUND,
            HostError::TooSmall { .. } | HostError::BadSize { .. } => SHM_ERR_BAD_SIZE,
            HostError::Core(c) => core_code(c),
            HostError::Timeout => SHM_ERR_TIMEOUT,
            HostError::Disconnected => SHM_ERR_DISCONNECTED,
            HostError::BadMessage => SHM_ERR_BAD_MESSAGE,
            HostError::ForeignBuffer => SHM_ERR_INVALID_ARGUMENT,
            HostError::TakeoverRefused { .. } => SHM_ERR_TAKEOVER_REFUSED,
            HostError::Truncated { .. } => SHM_ERR_TRUNCATED,
            _ => SHM_ERR_OTHER,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<shm_core::Error> for Failure {
    fn from(e: shm_core::Error) -> Self {
        Failure::from(HostError::from(e))
    }
}

thread_local! {
    /// The calling thread's last failure, for `shm_last_error`.
    static LAST: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Records `detail` as this thread's last failure.
fn set_last(detail: &str) {
    // An interior NUL cannot be in a C string: cut the message there.
    let bytes: Vec<u8> = detail.bytes().take_while(|&b| b != 0).collect();
    let text = CString::new(bytes).unwrap_or_default();
    let _ = LAST.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            *l = Some(text);
        }
    });
}

/// Runs `body`, turning its failure or panic into a code (and the thread's last message).
pub(crate) fn call(body: impl FnOnce() -> Result<(), Failure>) -> shm_error {
    // AssertUnwindSafe: after a caught panic nothing of `body`'s state is used again; a
    // handle it was changing is left valid (at worst empty, which every function refuses
    // with SHM_ERR_INVALID_ARGUMENT).
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SHM_OK,
        Ok(Err(f)) => {
            set_last(&f.detail);
            f.code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last(&format!("internal error: {what}"));
            SHM_ERR_INTERNAL
        }
    }
}

/// Runs `body` for a function that returns a plain value, with `fallback` on a panic.
pub(crate) fn value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The static message of error code `code`, e.g. "receiver's queue is full".
///
/// `code` is an `shm_error` value, taken as a plain integer so that any number is safe
/// to pass: one that is not a code gives "unknown error code".
///
/// Ownership: the string is static; do not free or modify it. Thread-safety: any thread,
/// at any time.
#[no_mangle]
pub extern "C" fn shm_strerror(code: i32) -> *const c_char {
    match shm_error::from_i32(code) {
        Some(e) => e.message().as_ptr(),
        None => c"unknown error code".as_ptr(),
    }
}

/// The detailed message of the last failure on the calling thread (which call failed,
/// which segment, the OS error number), or "" if none failed yet. Successful calls leave
/// it unchanged, like `errno`.
///
/// Ownership: the string belongs to the library; it stays valid until the next failing
/// call on the same thread or the thread's exit. Do not free it; copy it to keep it.
/// Thread-safety: each thread has its own.
#[no_mangle]
pub extern "C" fn shm_last_error() -> *const c_char {
    value(c"".as_ptr(), || {
        // The pointer stays valid after the borrow ends: the CString's heap buffer moves
        // only when the next failure replaces it.
        LAST.try_with(|l| {
            l.try_borrow()
                .ok()
                .and_then(|s| s.as_ref().map(|s| s.as_ptr()))
        })
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code has its own non-empty message, and numbers round-trip.
    #[test]
    fn every_code_has_a_message() {
        let mut seen = std::collections::HashSet::new();
        for (i, code) in ALL.iter().enumerate() {
            assert_eq!(*code as i32, i as i32);
            assert_eq!(shm_error::from_i32(i as i32), Some(*code));
            // SAFETY: shm_strerror returns a static NUL-terminated string.
            let text = unsafe { CStr::from_ptr(shm_strerror(i as i32)) };
            assert!(!text.is_empty());
            assert!(seen.insert(text.to_owned()), "{text:?} twice");
        }
        assert_eq!(shm_error::from_i32(ALL.len() as i32), None);
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(shm_strerror(-1)) };
        assert_eq!(unknown, c"unknown error code");
    }

    /// A panic becomes SHM_ERR_INTERNAL with its message; a failure sets the last error.
    #[test]
    fn panics_and_failures_become_codes() {
        let code = call(|| panic!("boom"));
        assert_eq!(code, SHM_ERR_INTERNAL);
        // SAFETY: shm_last_error returns a NUL-terminated string valid until the next
        // failure on this thread.
        let last = unsafe { CStr::from_ptr(shm_last_error()) };
        assert!(last.to_str().unwrap().contains("boom"));
        let code = call(|| Err(Failure::new(SHM_ERR_TIMEOUT, "a\0b")));
        assert_eq!(code, SHM_ERR_TIMEOUT);
        // SAFETY: as above.
        let last = unsafe { CStr::from_ptr(shm_last_error()) };
        assert_eq!(last, c"a");
        assert_eq!(call(|| Ok(())), SHM_OK);
        // SAFETY: as above.
        let last = unsafe { CStr::from_ptr(shm_last_error()) };
        assert_eq!(last, c"a");
    }
}
