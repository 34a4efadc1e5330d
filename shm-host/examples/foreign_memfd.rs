//! A server and a client over memory the library did not map (Linux): this program
//! creates a memfd, maps it itself with `mmap`, serves over the mapping
//! (`shm_host::foreign`), and starts a copy of itself as the client, handing it the memfd
//! (inherited here; a descriptor received over a Unix socket with `SCM_RIGHTS` works the
//! same, see `tests/tests/foreign_memfd.rs`). The client maps the memfd itself and talks.
//!
//! `cargo run -p shm-host --example foreign_memfd`

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("client") => linux::client(args.get(2).ok_or("client needs a descriptor")?),
        _ => linux::server(),
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("this example uses memfd_create, which only Linux has");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::error::Error;
    use std::io::Write;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    use shm_host::foreign::{FdLiveness, ForeignMapping, ForeignSystem, SemDoorbells};
    use shm_host::{Client, ClientOptions, Server, ServerOptions};

    type Result<T> = std::result::Result<T, Box<dyn Error>>;

    /// Unmaps the memory when the last user of the `ForeignMapping` is gone.
    struct Unmap(*mut libc::c_void, usize);
    // SAFETY: only unmapped, once, by whichever thread drops it.
    unsafe impl Send for Unmap {}
    // SAFETY: `&Unmap` gives no access to the memory.
    unsafe impl Sync for Unmap {}
    impl Drop for Unmap {
        fn drop(&mut self) {
            // SAFETY: exactly the range mmap returned, unmapped only here.
            unsafe { libc::munmap(self.0, self.1) };
        }
    }

    /// Maps all of the memfd shared, and builds the system over that mapping: sem_t
    /// doorbells and futexes, and liveness from locks on the memfd.
    fn system(fd: BorrowedFd<'_>) -> Result<ForeignSystem<SemDoorbells, FdLiveness>> {
        let len = usize::try_from(
            std::fs::File::from(fd.try_clone_to_owned()?)
                .metadata()?
                .len(),
        )?;
        // SAFETY: a new shared mapping of an open descriptor; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: the memory is valid until `Unmap` runs; it is a MAP_SHARED mapping of
        // the memfd in every process (the same bytes, ordinary RAM); only this library
        // touches it; nobody truncates the memfd; the server formats it before the client
        // is started.
        let memory = unsafe { ForeignMapping::new(p.cast(), len, Unmap(p, len)) }?;
        // SAFETY: both processes of this example use FdLiveness on this memfd.
        let liveness = unsafe { FdLiveness::new(fd) }?;
        Ok(ForeignSystem::new(memory, SemDoorbells, liveness))
    }

    pub fn server() -> Result<()> {
        // SAFETY: a valid C string and plain flags.
        let raw = unsafe { libc::memfd_create(c"shm-example".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: a descriptor we just opened and own alone.
        let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
        std::fs::File::from(memfd.try_clone()?).set_len(4 << 20)?;

        let server = Server::create_on(
            system(memfd.as_fd())?,
            "example-memfd", // a label: foreign memory has no name
            ServerOptions::default(),
        )?;
        let before = server.available_bytes()?;

        // The client inherits a copy of the descriptor without close-on-exec.
        // SAFETY: duplicates an open descriptor; the copy is closed below.
        let inherited = unsafe { libc::dup(memfd.as_raw_fd()) };
        if inherited < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: the new descriptor is ours alone.
        let inherited = unsafe { OwnedFd::from_raw_fd(inherited) };
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("client")
            .arg(inherited.as_raw_fd().to_string())
            .spawn()?;
        drop(inherited);

        for _ in 0..3 {
            let msg = server
                .recv_timeout(Duration::from_secs(10))?
                .ok_or("no message from the client")?;
            println!(
                "server: {:?} from {} (tag {})",
                String::from_utf8_lossy(&msg.buffer),
                msg.from,
                msg.tag
            );
            server.send(msg.from, msg.buffer, msg.tag)?; // the same block goes back
        }
        if !child.wait()?.success() {
            return Err("the client failed".into());
        }
        // The client left: its memory is back (a client killed instead would come back
        // through the kernel's evidence on the memfd).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while server.segment().processes()?.len() > 1 {
            if std::time::Instant::now() > deadline {
                return Err("the client's registration is still there".into());
            }
            let _ = server.recv_timeout(Duration::from_millis(10))?;
        }
        println!(
            "server: free bytes before {before}, after {}; check: {:?}",
            server.available_bytes()?,
            server.segment().check()?
        );
        Ok(())
    }

    pub fn client(fd: &str) -> Result<()> {
        // SAFETY: the parent passed this descriptor to us, open, for us to own.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd.parse()?) };
        let client = Client::connect_on(
            system(memfd.as_fd())?,
            "example-memfd",
            ClientOptions::default(),
        )?;
        for i in 0..3 {
            let mut buf = client.alloc(32)?;
            write!(buf, "hello {i}")?;
            client.send(buf, i)?;
            let echo = client
                .recv_timeout(Duration::from_secs(10))?
                .ok_or("no echo")?;
            println!("client: echo {:?}", String::from_utf8_lossy(&echo.buffer));
        }
        Ok(())
    }
}
