// A region over raw memory is `unsafe` to build: the caller vouches for the mapping.
use shm_core::Region;

fn main() {
    let mut memory = [0u64; 512];
    let _region = Region::from_raw(memory.as_mut_ptr().cast(), 4096);
}
