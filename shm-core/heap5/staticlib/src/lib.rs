//! `libshm_heap5.a`: [`shm_heap5`]'s FreeRTOS heap_5 functions as a static library for C
//! programs, declared by `shm-core/heap5/include/heap5.h` (or FreeRTOS's own
//! `portable.h`). Link it in place of `heap_5.c`.
//!
//! On a target with an operating system the library links `std`, which gives it a panic
//! handler and the critical section (a process-wide lock). On a target without one
//! (`target_os = "none"`) it brings a panic handler that stops the core in a loop, like a
//! failed `configASSERT`; the heap functions are written not to panic. The critical
//! section there comes from the feature `freertos-critical-section` or from a
//! `critical-section` implementation linked in by the program.
#![no_std]

#[cfg(not(target_os = "none"))]
extern crate std;

pub use shm_heap5::*;

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
