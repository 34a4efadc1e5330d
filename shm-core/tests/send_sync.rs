//! The thread-safety promises of shm-core's public types that must hold, checked at
//! compile time (a broken promise fails the build of this test). The ones that must not
//! hold are compile-fail cases in `tests/compile_fail/`.

use shm_core::{
    CriticalSectionPlatform, Error, Heap, Incarnation, Member, Offset, Platform, ProcessId, Region,
    RegionAllocator, SpinPlatform,
};

const fn send_sync<T: Send + Sync>() {}

/// A heap is used by one process from several threads (shm-host's `Server` and `Client`
/// share one) whenever its platform allows it.
const fn heap_is_send_sync_when_its_platform_is<P: Platform + Send + Sync>() {
    send_sync::<Heap<'static, P>>();
}

const _: () = {
    heap_is_send_sync_when_its_platform_is::<SpinPlatform>();
    heap_is_send_sync_when_its_platform_is::<CriticalSectionPlatform>();
    // A region is a view of memory that is only accessed through atomics and ownership.
    send_sync::<Region<'static>>();
    // A member is the right to act as a registration: the process's, not a thread's.
    send_sync::<Member>();
    send_sync::<Incarnation>();
    send_sync::<ProcessId>();
    send_sync::<Offset>();
    // Errors travel between threads (`Box<dyn Error + Send + Sync>`, `anyhow`).
    send_sync::<Error>();
    // `#[global_allocator]` statics must be `Sync`.
    send_sync::<RegionAllocator<SpinPlatform>>();
    send_sync::<RegionAllocator<CriticalSectionPlatform>>();
};
