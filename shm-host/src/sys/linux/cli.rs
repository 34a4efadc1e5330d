//! OS services the `shmipc` tool needs beyond the IPC API (built with the `cli` feature).
//! Every OS folder has this file with the same functions, so the tool names no OS.

use std::io;

/// Pins the calling thread (and the threads it starts later) to CPU `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let limit = libc::CPU_SETSIZE as usize;
    if cpu >= limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is out of range (at most {})", limit - 1),
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so the bit lies inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size given.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub use shm_posix::cli::{
    parent_process_id, uds_accept, uds_connect, uds_listen, unbuffered_stdio, UdsListener,
    UdsStream,
};
