//! Helpers for the shm-core integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use shm_core::testkit::{AlignedBuf, TestPlatform};
use shm_core::{Heap, HeapConfig, Region};

/// A heap over a fresh buffer, with the buffer kept alive alongside.
pub struct Fixture {
    pub heap: Heap<'static, TestPlatform>,
    pub platform: TestPlatform,
    pub buf: AlignedBuf,
}

impl Fixture {
    pub fn new(size: usize) -> Self {
        Self::with(size, HeapConfig::default())
    }

    pub fn with(size: usize, config: HeapConfig) -> Self {
        let buf = AlignedBuf::new(size);
        let platform = TestPlatform::new(1);
        // SAFETY: `buf` lives as long as the fixture and outlives `heap` (dropped first).
        let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
        let heap = Heap::init(region, config, platform.clone()).unwrap();
        Fixture {
            heap,
            platform,
            buf,
        }
    }

    /// Attaches a second handle to the same memory.
    pub fn attach_again(&self) -> Heap<'static, TestPlatform> {
        // SAFETY: as in `new`; the second handle is dropped before the fixture.
        let region = unsafe { Region::from_raw(self.buf.as_ptr(), self.buf.len()) }.unwrap();
        Heap::attach(region, self.platform.clone()).unwrap()
    }
}

/// A heap attached to a private copy of a region image, acting as process `pid`: one
/// trial of a crash-at-every-step test.
pub struct Trial {
    pub heap: Heap<'static, TestPlatform>,
    pub platform: TestPlatform,
    _buf: AlignedBuf,
}

impl Trial {
    pub fn attach(image: &[u8], pid: u32) -> Trial {
        let buf = AlignedBuf::copy_of(image);
        let platform = TestPlatform::new(pid);
        // SAFETY: `buf` is owned by the trial and dropped after `heap` (field order);
        // nothing else accesses it meanwhile.
        let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
        let heap = Heap::attach(region, platform.clone()).unwrap();
        Trial {
            heap,
            platform,
            _buf: buf,
        }
    }
}
