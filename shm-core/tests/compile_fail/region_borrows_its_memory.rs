// A region borrows its memory mutably: nothing else may read (or write) the bytes while the heap
// in them is alive.
use shm_core::{Heap, HeapConfig, Region, SpinPlatform};

#[repr(align(16))]
struct Memory([u8; 4096]);

fn main() {
    let mut memory = Memory([0; 4096]);
    let region = Region::from_slice(&mut memory.0).expect("aligned");
    let heap = Heap::init(region, HeapConfig::default(), SpinPlatform::new(1)).expect("heap");
    let first = memory.0[0];
    drop(heap);
    assert_eq!(first, 0);
}
