//! OS services the `shmipc` tool needs beyond the IPC API (built with the `cli` feature).
//! Every OS folder has this file with the same functions, so the tool names no OS.

use std::fs::File;
use std::io;
use std::os::windows::io::AsHandle;

/// Pinning is not offered on Windows (`shmipc bench --pin` says so).
pub fn pin_current_thread(_cpu: usize) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "pinning to a CPU is supported on Linux only",
    ))
}

/// Unbuffered handles on this process's standard input and output (std's are buffered).
pub fn unbuffered_stdio() -> io::Result<(File, File)> {
    let r = io::stdin().as_handle().try_clone_to_owned()?;
    let w = io::stdout().as_handle().try_clone_to_owned()?;
    Ok((r.into(), w.into()))
}

/// The parent process's id: not known here (Windows does not re-parent orphans, so the
/// id would not tell that the parent has gone).
pub fn parent_process_id() -> Option<u32> {
    None
}

/// A listening Unix-domain stream socket (Windows 10 and later have them; std has no type
/// for them there, socket2 does).
pub type UdsListener = socket2::Socket;

/// A connected Unix-domain stream socket.
pub type UdsStream = socket2::Socket;

/// Binds a listener at `path` and listens on it; fails where the system has no
/// Unix-domain sockets.
pub fn uds_listen(path: &std::path::Path) -> io::Result<UdsListener> {
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    s.bind(&socket2::SockAddr::unix(path)?)?;
    s.listen(128)?;
    Ok(s)
}

/// Accepts one connection (`WouldBlock` on a non-blocking listener with none pending).
pub fn uds_accept(listener: &UdsListener) -> io::Result<UdsStream> {
    listener.accept().map(|(stream, _)| stream)
}

/// Connects to the listener at `path`.
pub fn uds_connect(path: &std::path::Path) -> io::Result<UdsStream> {
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    s.connect(&socket2::SockAddr::unix(path)?)?;
    Ok(s)
}
