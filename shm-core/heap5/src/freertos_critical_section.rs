//! The `critical-section` implementation of a C FreeRTOS project (feature
//! `freertos-critical-section`, targets without an operating system): the scheduler is
//! suspended, as heap_5 does around its free list. Interrupts stay enabled, so, as with
//! heap_5, interrupt handlers must not call the heap functions.

use core::ffi::c_long;

unsafe extern "C" {
    /// FreeRTOS: suspends the scheduler; calls nest.
    fn vTaskSuspendAll();
    /// FreeRTOS: resumes it after as many calls as `vTaskSuspendAll` had; returns
    /// `BaseType_t` (`long` in FreeRTOS's ports), whether a context switch happened.
    fn xTaskResumeAll() -> c_long;
}

struct SuspendScheduler;
critical_section::set_impl!(SuspendScheduler);

// SAFETY: while the scheduler is suspended no other task runs, and interrupt handlers do
// not use the heap (the documented contract of this feature), so nothing else enters a
// critical section until `release`. Nesting is counted by FreeRTOS.
unsafe impl critical_section::Impl for SuspendScheduler {
    unsafe fn acquire() -> critical_section::RawRestoreState {
        // SAFETY: FreeRTOS functions without preconditions (callable before the
        // scheduler starts, too).
        unsafe { vTaskSuspendAll() }
    }

    unsafe fn release(_: critical_section::RawRestoreState) {
        // SAFETY: paired with the `vTaskSuspendAll` of `acquire`.
        let _ = unsafe { xTaskResumeAll() };
    }
}
