//! The heap_5 functions from several threads at once (the critical section is
//! `critical-section`'s `std` implementation here): every block is exclusive to its
//! thread while it lives, and afterwards the statistics add up and the free bytes are
//! back. One test: the heap is global.
#![allow(clippy::unwrap_used)] // tests report failures by panicking

use shm_heap5::{
    pvPortMalloc, vPortDefineHeapRegions, vPortFree, vPortGetHeapStats, xPortGetFreeHeapSize,
    HeapRegion_t, HeapStats_t, PORT_BYTE_ALIGNMENT,
};

const THREADS: usize = 4;
const ROUNDS: usize = 2000;
const LIVE: usize = 8;

#[test]
fn threads_share_the_heap() {
    // Two regions of one leaked allocation, with a gap between them.
    let ram: &'static mut [u8] = Box::leak(vec![0u8; 256 * 1024].into_boxed_slice());
    let base = ram.as_mut_ptr();
    let regions = [
        HeapRegion_t {
            pucStartAddress: base,
            xSizeInBytes: 96 * 1024,
        },
        HeapRegion_t {
            // SAFETY: inside the leaked allocation.
            pucStartAddress: unsafe { base.add(128 * 1024) },
            xSizeInBytes: 96 * 1024,
        },
        HeapRegion_t {
            pucStartAddress: std::ptr::null_mut(),
            xSizeInBytes: 0,
        },
    ];
    // SAFETY: the regions are leaked memory that nothing else uses; the list ends with
    // a size-0 entry.
    unsafe { vPortDefineHeapRegions(regions.as_ptr()) };

    // Grow the owner table to the most blocks live at once first (it never shrinks), so
    // that the free bytes can be compared exactly afterwards.
    let warm: Vec<usize> = (0..THREADS * LIVE)
        .map(|_| pvPortMalloc(16) as usize)
        .collect();
    for p in warm {
        // SAFETY: from pvPortMalloc, freed once.
        unsafe { vPortFree(p as *mut _) };
    }
    let free_before = xPortGetFreeHeapSize();

    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                let mut live: Vec<(usize, usize, u8)> = Vec::new();
                for i in 0..ROUNDS {
                    let len = 1 + (i * 37 + t * 101) % 700;
                    let p = pvPortMalloc(len) as *mut u8;
                    assert!(!p.is_null());
                    assert_eq!(p as usize % PORT_BYTE_ALIGNMENT, 0);
                    let mark = (t * 64 + i % 64) as u8;
                    // SAFETY: a fresh block of `len` bytes, this thread's alone.
                    unsafe { p.write_bytes(mark, len) };
                    live.push((p as usize, len, mark));
                    if live.len() == LIVE {
                        let (q, n, mark) = live.remove(i % LIVE);
                        // SAFETY: still this thread's block of `n` bytes.
                        let bytes = unsafe { std::slice::from_raw_parts(q as *const u8, n) };
                        assert!(bytes.iter().all(|b| *b == mark));
                        // SAFETY: from pvPortMalloc, freed once.
                        unsafe { vPortFree(q as *mut _) };
                    }
                }
                for (q, _, _) in live {
                    // SAFETY: from pvPortMalloc, freed once.
                    unsafe { vPortFree(q as *mut _) };
                }
            });
        }
    });

    let mut stats = HeapStats_t::default();
    // SAFETY: a valid, writable HeapStats_t.
    unsafe { vPortGetHeapStats(&mut stats) };
    assert_eq!(stats.xAvailableHeapSpaceInBytes, free_before);
    let expected = THREADS * ROUNDS + THREADS * LIVE;
    assert_eq!(stats.xNumberOfSuccessfulAllocations, expected);
    assert_eq!(stats.xNumberOfSuccessfulFrees, expected);
}
