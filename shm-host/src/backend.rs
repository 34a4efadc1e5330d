//! [`Backend`]: a kind of segment chosen at run time (`shmipc --backend`), and
//! [`OnSystem`], code run on the system that kind stands for. The API itself is generic
//! over [`System`]: a program that knows its kind at compile time names the system
//! (`Server::create_on(SysvSystem, ...)`) and needs neither.

use std::fmt;
use std::path::PathBuf;

use crate::error::{HostError, Result};
use crate::system::System;

/// A kind of segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The system's own named segments ([`NativeSystem`](crate::NativeSystem)): POSIX
    /// `shm_open` on Linux and QNX, named sections on Windows.
    Native,
    /// POSIX shared memory by name (`posix`): the native system on Linux and QNX.
    Posix,
    /// System V shared memory (`sysv`; Linux: `SysvSystem`).
    Sysv,
    /// A file on a real filesystem (`file:PATH`; Linux: `FileSystem::file(PATH)`).
    File(PathBuf),
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "native" => Ok(Backend::Native),
            "posix" => Ok(Backend::Posix),
            "sysv" => Ok(Backend::Sysv),
            _ => match s.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Backend::File(PathBuf::from(path))),
                _ => Err(format!(
                    "unknown segment kind {s:?}: use native, posix, sysv or file:PATH"
                )),
            },
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Native => f.write_str("native"),
            Backend::Posix => f.write_str("posix"),
            Backend::Sysv => f.write_str("sysv"),
            Backend::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// Code generic over the system, run by [`Backend::run`] on the system a kind stands for
/// (a closure cannot be generic, so this is a trait).
pub trait OnSystem {
    /// What it returns.
    type Output;
    /// Runs on `system`.
    fn on<S: System>(self, system: S) -> Self::Output;
}

impl Backend {
    /// Runs `f` on this kind's system; [`HostError::BackendUnavailable`] where this system
    /// has no such kind.
    pub fn run<F: OnSystem>(&self, f: F) -> Result<F::Output> {
        crate::sys::run_on_backend(self, f).ok_or_else(|| HostError::BackendUnavailable {
            backend: self.to_string(),
        })
    }

    /// The kinds whose segments outlive their processes until removed and can be listed
    /// (what `shmipc clean` scans): on Linux `posix` and `sysv`; elsewhere the native
    /// kind. File-backed segments are never among them: their heaps are meant to outlive
    /// their processes.
    pub fn listed() -> Vec<Backend> {
        crate::sys::listed_backends()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings `--backend` takes, and their display, round-trip.
    #[test]
    fn kinds_parse_and_display() {
        for s in ["native", "posix", "sysv", "file:/tmp/x"] {
            let b: Backend = s.parse().unwrap();
            assert_eq!(b.to_string(), s);
        }
        assert_eq!(
            "file:a/b".parse::<Backend>(),
            Ok(Backend::File("a/b".into()))
        );
        for bad in ["", "file:", "mmap", "SYSV"] {
            assert!(bad.parse::<Backend>().is_err(), "{bad:?}");
        }
    }

    struct Name;
    impl OnSystem for Name {
        type Output = &'static str;
        fn on<S: System>(self, _system: S) -> &'static str {
            std::any::type_name::<S>()
        }
    }

    /// Each kind runs on its system where this system has it, and is refused as
    /// unavailable elsewhere (System V and files exist on Linux only).
    #[test]
    fn kinds_run_on_their_systems() {
        assert!(Backend::Native.run(Name).is_ok());
        for kind in [Backend::Sysv, Backend::File("x".into())] {
            let r = kind.run(Name);
            if cfg!(target_os = "linux") {
                assert!(r.is_ok());
            } else {
                assert!(
                    matches!(r, Err(HostError::BackendUnavailable { .. })),
                    "{kind}"
                );
            }
        }
        if cfg!(target_os = "linux") {
            assert!(Backend::Sysv.run(Name).unwrap().ends_with("SysvSystem"));
            assert_eq!(Backend::listed(), [Backend::Posix, Backend::Sysv]);
        }
    }
}
