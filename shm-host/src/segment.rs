//! [`Segment`]: a named mapping with a heap in it, and this process's registration.

use std::time::Duration;

use shm_core::doorbell::Doorbell;
use shm_core::{Heap, HeapConfig, ProcSlot, Region, WaitOutcome};

use crate::error::{HostError, Result};
use crate::name::SegmentName;
use crate::system::{CreateOptions, Mapping, System};

/// A mapped segment holding a region, attached as a heap.
///
/// The heap refers to the mapping's memory, so it is declared first and dropped first;
/// the `'static` lifetime it carries never leaves this type except shortened to `&self`.
pub struct Segment<S: System> {
    heap: Heap<'static, S>,
    mapping: S::Mapping,
    name: SegmentName,
    system: S,
}

impl<S: System> std::fmt::Debug for Segment<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.mapping.len())
            .finish()
    }
}

impl<S: System> Segment<S> {
    /// Creates segment `name` of `size` bytes and formats a heap in it.
    pub fn create(
        system: S,
        name: &SegmentName,
        size: usize,
        opts: CreateOptions,
        config: HeapConfig,
    ) -> Result<Self> {
        let mapping = system.create(name, size, opts)?;
        let made = Self::with_heap(system.clone(), name, mapping, |region, sys| {
            Heap::init(region, config, sys)
        });
        if made.is_err() {
            // Do not leave a half-made segment behind.
            let _ = system.unlink(name);
        }
        made
    }

    /// Opens segment `name` and attaches to the heap in it.
    pub fn open(system: S, name: &SegmentName) -> Result<Self> {
        let mapping = system.open(name)?;
        Self::attach(system, name, mapping)
    }

    /// Formats a heap in an existing mapping (a file, a memfd, ...). Everything in it is
    /// overwritten.
    pub fn format(
        system: S,
        name: &SegmentName,
        mapping: S::Mapping,
        config: HeapConfig,
    ) -> Result<Self> {
        Self::with_heap(system, name, mapping, |region, sys| {
            Heap::init(region, config, sys)
        })
    }

    /// Attaches to the heap in an existing mapping (a file, a memfd, ...).
    pub fn attach(system: S, name: &SegmentName, mapping: S::Mapping) -> Result<Self> {
        Self::with_heap(system, name, mapping, |region, sys| {
            Heap::attach(region, sys)
        })
    }

    fn with_heap(
        system: S,
        name: &SegmentName,
        mapping: S::Mapping,
        make: impl FnOnce(Region<'static>, S) -> Result<Heap<'static, S>, shm_core::Error>,
    ) -> Result<Self> {
        let min = 4096u64;
        if (mapping.len() as u64) < min {
            return Err(HostError::TooSmall {
                size: mapping.len() as u64,
                needed: min,
            });
        }
        // SAFETY: the mapping is valid for reads and writes for as long as it is mapped;
        // the heap made from this region is stored next to the mapping and dropped first
        // (field order), and its 'static lifetime is never exposed beyond `&self`.
        let region = unsafe { Region::from_raw(mapping.as_ptr(), mapping.len()) }?;
        let heap = make(region, system.clone())?;
        Ok(Segment {
            heap,
            mapping,
            name: name.clone(),
            system,
        })
    }

    /// The heap.
    pub fn heap(&self) -> &Heap<'_, S> {
        &self.heap
    }

    /// The heap with the mapping's lifetime, for types that keep the segment alive.
    pub(crate) fn heap_static(&self) -> &Heap<'static, S> {
        &self.heap
    }

    /// The segment's name.
    pub fn name(&self) -> &SegmentName {
        &self.name
    }

    /// The mapping.
    pub fn mapping(&self) -> &S::Mapping {
        &self.mapping
    }

    /// The system.
    pub fn system(&self) -> &S {
        &self.system
    }

    /// Prepares a doorbell's wait object.
    pub fn bell_init(&self, bell: &Doorbell) -> Result<()> {
        self.system
            .bell_init(&self.mapping, self.heap.region(), bell)
    }

    /// Rings `bell` if its owner sleeps (or is about to).
    pub fn ring_if_waiting(&self, bell: &Doorbell) -> Result<()> {
        if bell.should_ring() {
            self.system
                .bell_ring(&self.mapping, self.heap.region(), bell)?;
        }
        Ok(())
    }

    /// Sleeps on `bell`.
    pub fn bell_wait(&self, bell: &Doorbell, timeout: Option<Duration>) -> Result<WaitOutcome> {
        self.system
            .bell_wait(&self.mapping, self.heap.region(), bell, timeout)
    }

    /// Releases `bell`'s wait object.
    pub fn bell_destroy(&self, bell: &Doorbell) {
        self.system
            .bell_destroy(&self.mapping, self.heap.region(), bell)
    }
}

/// A segment plus this process's slot in it. Dropping the last handle unregisters the
/// process, which returns everything it still owns.
pub(crate) struct Attachment<S: System> {
    pub seg: Segment<S>,
    pub me: ProcSlot,
}

impl<S: System> Attachment<S> {
    pub fn new(seg: Segment<S>) -> Result<Self> {
        let me = seg.heap().register()?;
        Ok(Attachment { seg, me })
    }

    pub fn heap(&self) -> &Heap<'static, S> {
        self.seg.heap_static()
    }
}

impl<S: System> Drop for Attachment<S> {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; a failure leaves the slot to the watchdog of
        // another process once this one has exited.
        let _ = self.seg.heap().unregister(self.me);
    }
}
