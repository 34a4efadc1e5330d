//! Named segments: page-file-backed file mappings (`CreateFileMappingW` with
//! `INVALID_HANDLE_VALUE`, then `MapViewOfFile`).
//!
//! - **Names**: segment `NAME` is the section `Local\shmipc.NAME` (the caller's session).
//!   Setting `SHMIPC_WIN_NAMESPACE=Global` uses `Global\` instead, which shares segments
//!   across sessions (services) and needs `SeCreateGlobalPrivilege` to create.
//! - **Access**: sections (and doorbell semaphores) get a security descriptor whose DACL
//!   grants `GENERIC_ALL` to the creating user's SID and nobody else (`D:P(A;;GA;;;SID)`),
//!   the counterpart of mode 0600 on POSIX; [`CreateOptions::mode`] is not used.
//! - **Lifetime**: Windows has no unlink. A page-file-backed section exists while any
//!   process holds a handle to it, and vanishes, name and contents, with the last one:
//!   `unlink` succeeds without doing anything, `list` is always empty (there is nothing for
//!   `shmipc clean` to remove: a crashed process's segments go when its handles do), and
//!   a client may still open a segment whose server has gone for as long as another client
//!   keeps it open (it then finds the server stopped, as on Linux when it had mapped the
//!   segment before the unlink).
//! - **Size on open**: Windows cannot tell the exact size of a section, only of a view,
//!   rounded up to whole pages. `open` maps the whole section, measures the view with
//!   `VirtualQuery`, and uses the region size recorded in the header (the `u32` at offset
//!   16, see `shm_core::format`) if it is non-zero and fits the view; otherwise the view's
//!   size, and `Heap::attach` then refuses the region cleanly (not formatted yet, or not
//!   ours).
//!
//! About 420 lines of code and 160 of tests: the security descriptor and handle helpers
//! stay here, beside the one call that creates a section with them, so that every
//! folder under `sys/` keeps the same file names.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, LocalFree, SetLastError, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS,
    ERROR_FILE_NOT_FOUND, ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenUser, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, TOKEN_QUERY,
    TOKEN_USER,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, VirtualQuery,
    FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS,
    PAGE_READWRITE, SEC_COMMIT,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use shm_core::system::{
    CreateOptions, Mapping, SegmentName, SystemError, SystemResult as Result, PREFIX,
};

/// Environment variable choosing the kernel object namespace: `Local` (default) or `Global`.
pub const NAMESPACE_VAR: &str = "SHMIPC_WIN_NAMESPACE";

/// Prefix of doorbell semaphore names. It differs from [`PREFIX`] (`shmipc.`) in its
/// seventh character, so no segment name can produce a semaphore's name: sections and
/// semaphores share one namespace.
pub const BELL_PREFIX: &str = "shmipc-bell.";

/// Offset of the region size in the header (asserted in `shm_core::format`).
const RECORDED_SIZE_AT: usize = 16;

/// A kernel handle, closed on drop.
#[derive(Debug)]
pub struct OwnedHandle(pub HANDLE);

// SAFETY: a kernel handle is a process-wide value; any thread may use or close it.
unsafe impl Send for OwnedHandle {}
// SAFETY: as above; the calls made with it (wait, release, query) are thread-safe.
unsafe impl Sync for OwnedHandle {}

impl Drop for OwnedHandle {
    fn drop(&mut self) {
        if !self.0.is_null() && self.0 != INVALID_HANDLE_VALUE {
            // SAFETY: we own the handle and nothing else closes it.
            unsafe { CloseHandle(self.0) };
        }
    }
}

/// An `Os` error for `call` with Win32 error `code`.
pub fn os_error(call: &'static str, code: u32) -> SystemError {
    SystemError::Os {
        call,
        code: code as i32,
    }
}

/// An `Os` error for `call` with the calling thread's last Win32 error.
pub fn last_error(call: &'static str) -> SystemError {
    // SAFETY: no preconditions.
    os_error(call, unsafe { GetLastError() })
}

/// `s` as a NUL-terminated UTF-16 string.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// The namespace prefix (`Local` or `Global`) from [`NAMESPACE_VAR`].
pub fn namespace() -> Result<&'static str> {
    match std::env::var(NAMESPACE_VAR) {
        Err(std::env::VarError::NotPresent) => Ok("Local"),
        Ok(v) if v.eq_ignore_ascii_case("local") || v.is_empty() => Ok("Local"),
        Ok(v) if v.eq_ignore_ascii_case("global") => Ok("Global"),
        // Neither: an invalid parameter, named by the variable and what it must be.
        Ok(_) | Err(std::env::VarError::NotUnicode(_)) => Err(SystemError::Os {
            call: "SHMIPC_WIN_NAMESPACE (must be Local or Global)",
            code: ERROR_INVALID_PARAMETER as i32,
        }),
    }
}

/// A security descriptor granting all access to the calling process's user only.
pub struct OwnerOnly {
    sd: PSECURITY_DESCRIPTOR,
}

impl OwnerOnly {
    /// Builds it from `D:P(A;;GA;;;<user SID>)`.
    pub fn new() -> Result<Self> {
        static SDDL: OnceLock<String> = OnceLock::new();
        let sddl = match SDDL.get() {
            Some(s) => s,
            None => {
                let s = format!("D:P(A;;GA;;;{})", user_sid()?);
                SDDL.get_or_init(|| s)
            }
        };
        let w = wide(sddl);
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `w` is a NUL-terminated SDDL string; `sd` is a valid out-pointer; the size
        // out-pointer may be null.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                w.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 || sd.is_null() {
            return Err(last_error(
                "ConvertStringSecurityDescriptorToSecurityDescriptorW",
            ));
        }
        Ok(OwnerOnly { sd })
    }

    /// Attributes referring to the descriptor (valid while `self` lives), not inherited.
    pub fn attributes(&self) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.sd,
            bInheritHandle: 0,
        }
    }
}

impl Drop for OwnerOnly {
    fn drop(&mut self) {
        // SAFETY: `sd` was allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW
        // with LocalAlloc and is freed once.
        unsafe { LocalFree(self.sd) };
    }
}

/// The calling process's user SID as a string (`S-1-5-21-...`).
fn user_sid() -> Result<String> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the current-process pseudo-handle; `token` is a valid out-pointer.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(last_error("OpenProcessToken"));
    }
    let token = OwnedHandle(token);
    let mut len = 0u32;
    // SAFETY: a size query: null buffer of length 0, `len` is a valid out-pointer. It fails
    // with ERROR_INSUFFICIENT_BUFFER and sets `len`.
    unsafe { GetTokenInformation(token.0, TokenUser, std::ptr::null_mut(), 0, &mut len) };
    if len == 0 {
        return Err(last_error("GetTokenInformation"));
    }
    // u64 elements: aligned for TOKEN_USER (pointer alignment).
    let mut buf = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buf` holds at least `len` writable bytes, suitably aligned.
    if unsafe { GetTokenInformation(token.0, TokenUser, buf.as_mut_ptr().cast(), len, &mut len) }
        == 0
    {
        return Err(last_error("GetTokenInformation"));
    }
    // SAFETY: GetTokenInformation(TokenUser) filled `buf` with a TOKEN_USER followed by the
    // SID it points to; `buf` is aligned for it and outlives the use below.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut s: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: `sid` points into `buf`, a valid SID; `s` is a valid out-pointer.
    if unsafe { ConvertSidToStringSidW(sid, &mut s) } == 0 || s.is_null() {
        return Err(last_error("ConvertSidToStringSidW"));
    }
    // SAFETY: `s` is a NUL-terminated UTF-16 string allocated by the call above.
    let len = (0..).take_while(|&i| unsafe { *s.add(i) } != 0).count();
    // SAFETY: `s..s+len` are initialised u16s (counted above).
    let text = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(s, len) });
    // SAFETY: `s` was allocated with LocalAlloc by ConvertSidToStringSidW; freed once.
    unsafe { LocalFree(s.cast()) };
    Ok(text)
}

/// Doorbell semaphores this mapping has created or opened: offset of the doorbell's platform
/// area → (nonce of the incarnation, handle). A re-initialised doorbell (new nonce) replaces
/// its entry, and once the cache is large a miss first drops the entries of doorbells that
/// are gone (see `bell.rs`).
pub type BellCache = HashMap<u32, (u64, Arc<OwnedHandle>)>;

/// A mapped view of a named section. Unmapping and closing happen on drop, together with
/// the doorbell semaphore handles cached for this mapping.
#[derive(Debug)]
pub struct WinMapping {
    view: NonNull<u8>,
    len: usize,
    /// Keeps the section, and so its name, alive while mapped (a view alone keeps the
    /// memory but not the name); closed after the view is unmapped (fields drop after
    /// `Drop::drop`).
    _section: OwnedHandle,
    namespace: &'static str,
    name: SegmentName,
    pub(super) bells: Mutex<BellCache>,
}

// SAFETY: the view is plain shared memory; the pointer is only an address, and all access
// to the memory goes through shm-core's atomics or the ownership protocol. Handles are
// process-wide and the bell cache is behind a mutex.
unsafe impl Send for WinMapping {}
// SAFETY: as above.
unsafe impl Sync for WinMapping {}

impl Mapping for WinMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.view.as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for WinMapping {
    fn drop(&mut self) {
        // Bell handles first (they do not depend on the view, but this keeps the order of
        // creation reversed); the section handle closes after the view is unmapped.
        self.bells
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let addr = MEMORY_MAPPED_VIEW_ADDRESS {
            Value: self.view.as_ptr().cast(),
        };
        // SAFETY: `view` is the base address MapViewOfFile returned; nothing else unmaps it
        // and no reference into it outlives the mapping (Segment drops the heap first).
        unsafe { UnmapViewOfFile(addr) };
    }
}

impl WinMapping {
    /// The kernel name of segment `name`'s section: `Local\shmipc.NAME`.
    fn object_name(namespace: &str, name: &SegmentName) -> String {
        format!("{namespace}\\{PREFIX}{}", name.as_str())
    }

    /// The kernel name of a doorbell semaphore:
    /// `Local\shmipc-bell.NAME.OFFSET.NONCE` (offset decimal, nonce 16 hex digits).
    pub fn bell_name(&self, offset: u32, nonce: u64) -> String {
        format!(
            "{}\\{BELL_PREFIX}{}.{offset}.{nonce:016x}",
            self.namespace,
            self.name.as_str()
        )
    }

    /// The segment name.
    pub fn name(&self) -> &SegmentName {
        &self.name
    }

    /// Creates section `name` of `size` bytes (failing if the name is taken) and maps it.
    pub fn create(name: &SegmentName, size: usize, opts: CreateOptions) -> Result<Self> {
        if size == 0 || size as u64 > u64::from(u32::MAX) {
            return Err(SystemError::BadSize { size: size as u64 });
        }
        let namespace = namespace()?;
        let w = wide(&Self::object_name(namespace, name));
        let security = OwnerOnly::new()?;
        let sa = security.attributes();
        let size64 = size as u64;
        // SAFETY: clearing the thread's last error has no preconditions.
        unsafe { SetLastError(0) };
        // SAFETY: INVALID_HANDLE_VALUE asks for a page-file-backed section; `sa` and the
        // descriptor it points to live until the call returns; `w` is NUL-terminated.
        let h = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                &sa,
                PAGE_READWRITE | SEC_COMMIT,
                (size64 >> 32) as u32,
                size64 as u32,
                w.as_ptr(),
            )
        };
        // SAFETY: no preconditions; read right after the call.
        let err = unsafe { GetLastError() };
        if h.is_null() {
            return Err(match err {
                // The name belongs to another kind of object (an event, a semaphore...).
                ERROR_INVALID_HANDLE => SystemError::Exists,
                // Either the section exists and its DACL shuts us out (another user's: on
                // POSIX, O_EXCL reports EEXIST there too), or we may not create in this
                // namespace (`Global\` without SeCreateGlobalPrivilege). Opening tells.
                ERROR_ACCESS_DENIED if exists_unreadable(&w) => SystemError::Exists,
                _ => os_error("CreateFileMappingW", err),
            });
        }
        let section = OwnedHandle(h);
        if err == ERROR_ALREADY_EXISTS {
            // We got a handle to someone else's section: give it back.
            drop(section);
            return Err(SystemError::Exists);
        }
        let (view, _) = map_view(&section, size)?;
        if opts.prefault {
            prefault(view, size);
        }
        Ok(WinMapping {
            view,
            len: size,
            _section: section,
            namespace,
            name: name.clone(),
            bells: Mutex::new(HashMap::new()),
        })
    }

    /// Opens section `name` and maps all of it; the length is the size recorded in the
    /// region header (see the module documentation).
    pub fn open(name: &SegmentName) -> Result<Self> {
        let namespace = namespace()?;
        let w = wide(&Self::object_name(namespace, name));
        // SAFETY: `w` is NUL-terminated; a null result is handled below.
        let h = unsafe { OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE, 0, w.as_ptr()) };
        if h.is_null() {
            // SAFETY: no preconditions; read right after the call.
            let err = unsafe { GetLastError() };
            return Err(match err {
                ERROR_FILE_NOT_FOUND => SystemError::NotFound,
                _ => os_error("OpenFileMappingW", err),
            });
        }
        let section = OwnedHandle(h);
        let (view, view_len) = map_view(&section, 0)?;
        // Build the mapping now so that the view is unmapped on every path below.
        let mut m = WinMapping {
            view,
            len: view_len,
            _section: section,
            namespace,
            name: name.clone(),
            bells: Mutex::new(HashMap::new()),
        };
        if view_len >= RECORDED_SIZE_AT + 4 {
            // SAFETY: offset 16 is inside the view and 4-aligned (the view is page-aligned);
            // other processes write this word atomically, so it is read as an atomic.
            let recorded = unsafe {
                (*view.as_ptr().add(RECORDED_SIZE_AT).cast::<AtomicU32>()).load(Ordering::Acquire)
            } as usize;
            if recorded != 0 && recorded <= view_len {
                m.len = recorded;
            }
        }
        Ok(m)
    }
}

/// Whether section `w` (a NUL-terminated kernel name) exists but refuses us access.
fn exists_unreadable(w: &[u16]) -> bool {
    // SAFETY: `w` is NUL-terminated; a handle we get is closed at once.
    let h = OwnedHandle(unsafe { OpenFileMappingW(FILE_MAP_READ, 0, w.as_ptr()) });
    // SAFETY: no preconditions; read right after the call.
    h.0.is_null() && unsafe { GetLastError() } == ERROR_ACCESS_DENIED
}

/// Maps `len` bytes of `section` (0: all of it) read-write; returns the view and its
/// length as `VirtualQuery` reports it (whole pages).
fn map_view(section: &OwnedHandle, len: usize) -> Result<(NonNull<u8>, usize)> {
    // SAFETY: `section` is an open section handle with read-write access; the system picks
    // the address.
    let addr = unsafe { MapViewOfFile(section.0, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, len) };
    let view = NonNull::new(addr.Value.cast::<u8>()).ok_or_else(|| last_error("MapViewOfFile"))?;
    // SAFETY: an all-zero MEMORY_BASIC_INFORMATION is a valid value to be overwritten.
    let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: `view` is a mapped address in this process; `info` is a valid out-buffer of
    // the size given.
    let got = unsafe {
        VirtualQuery(
            view.as_ptr().cast(),
            &mut info,
            std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    if got == 0 {
        let e = last_error("VirtualQuery");
        // SAFETY: `addr` is the view just mapped, unmapped once here on the error path.
        unsafe { UnmapViewOfFile(addr) };
        return Err(e);
    }
    Ok((view, info.RegionSize))
}

/// Touches every page of `view..view+len` so that later accesses do not fault.
fn prefault(view: NonNull<u8>, len: usize) {
    for at in (0..len).step_by(4096) {
        // SAFETY: `at < len`, inside the view; an atomic no-op write cannot race with other
        // processes' accesses and leaves the byte unchanged.
        unsafe { (*view.as_ptr().add(at).cast::<AtomicU8>()).fetch_or(0, Ordering::Relaxed) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(tag: &str) -> SegmentName {
        use std::sync::atomic::AtomicUsize;
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        SegmentName::new(&format!("wintest-{tag}-{}-{n}", std::process::id())).unwrap()
    }

    /// Two mappings of one name share memory; the creator's size comes back on open.
    #[test]
    fn create_then_open_share_memory() {
        let name = unique("share");
        let size = 10_000;
        let a = WinMapping::create(&name, size, CreateOptions::default()).unwrap();
        assert_eq!(a.len(), size);
        // Unformatted (recorded size 0): open falls back to the whole view, in pages.
        let b = WinMapping::open(&name).unwrap();
        assert!(b.len() >= size && b.len() % 4096 == 0, "{}", b.len());
        // SAFETY: (test) both views are mapped for at least `size` bytes.
        unsafe {
            (*a.as_ptr().add(RECORDED_SIZE_AT).cast::<AtomicU32>())
                .store(size as u32, Ordering::Release);
            *a.as_ptr().add(5000) = 0xA5;
            assert_eq!(*b.as_ptr().add(5000), 0xA5);
        }
        let c = WinMapping::open(&name).unwrap();
        assert_eq!(c.len(), size, "the recorded size wins");
        // A recorded size larger than the view is ignored.
        // SAFETY: (test) as above.
        unsafe {
            (*a.as_ptr().add(RECORDED_SIZE_AT).cast::<AtomicU32>())
                .store(1 << 30, Ordering::Release)
        };
        let d = WinMapping::open(&name).unwrap();
        assert_eq!(d.len(), b.len());
        drop((a, b, c, d));
        // Page-file-backed: gone with the last handle.
        assert!(matches!(
            WinMapping::open(&name),
            Err(SystemError::NotFound)
        ));
    }

    /// Creating a taken name fails with `Exists`; opening a missing one with `NotFound`;
    /// sizes 0 and over 4 GiB are refused; prefaulting works.
    #[test]
    fn errors_are_specific() {
        let name = unique("errors");
        assert!(matches!(
            WinMapping::open(&name),
            Err(SystemError::NotFound)
        ));
        let a = WinMapping::create(
            &name,
            64 * 1024,
            CreateOptions {
                prefault: true,
                ..CreateOptions::default()
            },
        )
        .unwrap();
        let e = WinMapping::create(&name, 4096, CreateOptions::default()).unwrap_err();
        assert!(matches!(e, SystemError::Exists), "{e}");
        assert!(e.to_string().contains("already exists"));
        // The failed create must not have disturbed the existing section.
        assert_eq!(WinMapping::open(&name).unwrap().len(), 64 * 1024);
        drop(a);
        for size in [0usize, (u32::MAX as usize) + 1] {
            assert!(matches!(
                WinMapping::create(&unique("size"), size, CreateOptions::default()),
                Err(SystemError::BadSize { .. })
            ));
        }
    }

    /// The namespace comes from the environment; bell names cannot collide with segments.
    #[test]
    fn names() {
        let name = SegmentName::new("demo").unwrap();
        assert_eq!(
            WinMapping::object_name("Local", &name),
            "Local\\shmipc.demo"
        );
        let m = WinMapping::create(&unique("names"), 4096, CreateOptions::default()).unwrap();
        let b = m.bell_name(4160, 0xABC);
        assert!(b.starts_with("Local\\shmipc-bell.wintest-names-"), "{b}");
        assert!(b.ends_with(".4160.0000000000000abc"), "{b}");
        assert!(b.len() < 260);
    }

    /// The security descriptor for the current user can be built.
    #[test]
    fn owner_only_descriptor() {
        let sd = OwnerOnly::new().unwrap();
        let sa = sd.attributes();
        assert!(!sa.lpSecurityDescriptor.is_null());
        assert!(user_sid().unwrap().starts_with("S-1-"));
    }

    /// A section whose DACL admits only someone else (here SYSTEM, as another user's
    /// would) is refused: opening fails with ERROR_ACCESS_DENIED, creating reports Exists.
    /// Wine enforces DACLs on sections, so this runs there too.
    #[test]
    fn foreign_sections_are_refused() {
        let name = unique("foreign");
        let w = wide(&WinMapping::object_name("Local", &name));
        let sddl = wide("D:P(A;;GA;;;S-1-5-18)");
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: (test) valid SDDL string and out-pointer.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        assert_ne!(ok, 0);
        let sa = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: sd,
            bInheritHandle: 0,
        };
        // SAFETY: (test) as in `WinMapping::create`.
        let h = OwnedHandle(unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                &sa,
                PAGE_READWRITE | SEC_COMMIT,
                0,
                4096,
                w.as_ptr(),
            )
        });
        assert!(!h.0.is_null());
        // SAFETY: (test) allocated by the conversion above, freed once.
        unsafe { LocalFree(sd) };
        match WinMapping::open(&name) {
            Err(SystemError::Os { call, code }) => {
                assert_eq!(
                    (call, code),
                    ("OpenFileMappingW", ERROR_ACCESS_DENIED as i32)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            WinMapping::create(&name, 4096, CreateOptions::default()),
            Err(SystemError::Exists)
        ));
        drop(h);
        // Gone with its handle: the name is free again.
        let m = WinMapping::create(&name, 4096, CreateOptions::default()).unwrap();
        assert_eq!(m.len(), 4096);
    }
}
