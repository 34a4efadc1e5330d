//! Listing this library's segments in the directory where a POSIX system shows its
//! shared-memory objects (`/dev/shm` on Linux, `/dev/shmem` on QNX).

use std::path::Path;

use shm_core::system::{SegmentName, SystemResult};
use shm_core::SystemError;

/// Calls `each` with the name of every `shmipc.*` entry of `dir` that is a valid
/// segment name, in directory order.
pub fn list_dir(dir: &Path, each: &mut dyn FnMut(SegmentName)) -> SystemResult<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| SystemError::Os {
        call: "opendir",
        code: e.raw_os_error().unwrap_or(0),
    })?;
    for entry in entries.filter_map(|e| e.ok()) {
        if let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(SegmentName::from_prefixed)
        {
            each(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Only `shmipc.` entries with valid names are listed.
    #[test]
    fn listing_filters() {
        let dir = std::env::temp_dir().join(format!("shm-posix-list-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["shmipc.b", "shmipc.a", "other", "shmipc.bad name"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        let mut names: Vec<String> = Vec::new();
        list_dir(&dir, &mut |n| names.push(n.as_str().to_owned())).unwrap();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        std::fs::remove_dir_all(&dir).unwrap();
        // A missing directory is an error that keeps the OS code.
        let e = list_dir(&dir, &mut |_| {}).unwrap_err();
        assert_eq!(e.os_code(), Some(libc::ENOENT));
    }
}
