//! Process plumbing a command-line tool needs on every POSIX system.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

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
