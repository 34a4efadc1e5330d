//! What a command-line tool needs from every POSIX system beyond the IPC API: unbuffered
//! standard I/O, the parent process, and Unix-domain stream sockets (for `shmipc bench`'s
//! uds rows), with the same names as on the systems that are not POSIX.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Unbuffered handles on this process's standard input and output (std's are buffered).
pub fn unbuffered_stdio() -> io::Result<(File, File)> {
    let r = io::stdin().as_fd().try_clone_to_owned()?;
    let w = io::stdout().as_fd().try_clone_to_owned()?;
    Ok((r.into(), w.into()))
}

/// The parent process's id, for noticing that the parent has gone (an orphan is
/// re-parented, so the id changes then).
pub fn parent_process_id() -> Option<u32> {
    Some(std::os::unix::process::parent_id())
}

/// A listening Unix-domain stream socket.
pub type UdsListener = UnixListener;

/// A connected Unix-domain stream socket.
pub type UdsStream = UnixStream;

/// Binds a listener at `path` and listens on it.
pub fn uds_listen(path: &Path) -> io::Result<UdsListener> {
    UnixListener::bind(path)
}

/// Accepts one connection (`WouldBlock` on a non-blocking listener with none pending).
pub fn uds_accept(listener: &UdsListener) -> io::Result<UdsStream> {
    listener.accept().map(|(stream, _)| stream)
}

/// Connects to the listener at `path`.
pub fn uds_connect(path: &Path) -> io::Result<UdsStream> {
    UnixStream::connect(path)
}
