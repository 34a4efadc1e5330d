//! Making a [`Cache`]: its bounds ([`CacheConfig`]), and [`Heap::cache`] and
//! [`Heap::member_cache`].

use core::sync::atomic::Ordering::{Acquire, Relaxed};

use super::classes::{Classes, MAX_CLASSES};
use super::{Cache, CacheStats, Class};
use crate::error::Error;
use crate::heap::Heap;
use crate::ids::Member;
use crate::platform::Platform;

/// Bounds of a [`Cache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most bytes (block headers included) the cache holds; one size class holds at most
    /// a quarter of it. Never more than an eighth of the heap. Default 1 MiB.
    pub max_bytes: u32,
    /// Largest block (header included) the cache keeps; larger allocations and frees go
    /// to the heap each time. Default 32 KiB.
    pub max_block: u32,
    /// Bytes one refill fetches under one lock acquisition: at least one block, at most
    /// 64. Default 16 KiB.
    pub refill_bytes: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 1 << 20,
            max_block: 32 << 10,
            refill_bytes: 16 << 10,
        }
    }
}

impl<'m, P: Platform> Heap<'m, P> {
    /// A process cache over this heap, registered as a member of its own (see [`Cache`]).
    ///
    /// # Errors
    /// - [`Error::InvalidSize`]: `max_block` is smaller than the heap's smallest block,
    ///   or `max_bytes` is smaller than `max_block`.
    /// - As [`register`](Heap::register).
    pub fn cache(&self, config: CacheConfig) -> Result<Cache<'_, 'm, P>, Error> {
        self.check_cache_config(config)?;
        let me = self.register()?;
        self.cache_over(me, true, config).inspect_err(|_| {
            let _ = self.unregister(me);
        })
    }

    /// A process cache over registration `me`, which the caller goes on using for other
    /// operations (sending, receiving, service data), from any thread. Blocks it hands
    /// out are `me`'s ordinary blocks, and any block `me` owns alone with one reference -
    /// allocated here or elsewhere, or received - can be freed into it. Everything else
    /// is as for [`Heap::cache`], except that dropping it gives its cached blocks back
    /// to the heap instead of unregistering `me` (and `me` unregistering frees them too).
    ///
    /// # Safety
    /// The cache changes a block's count word without the lock, so nothing else may act
    /// on a block while the cache does. The caller must ensure that:
    /// - no operation of `me` on a block (free, release, give, share, keep, send, or
    ///   another cache's free) runs concurrently with this cache's `alloc` or `free`
    ///   returning or taking that block (a program that hands each block to one owner at a
    ///   time, such as a buffer type that frees on drop and is consumed by a send, does);
    /// - no block that other processes have co-owned is freed into it (their release may
    ///   still be in flight under the lock, and undone if they die): release those;
    /// - the cache is not used after `me` unregisters (it refuses, with `StaleMember`,
    ///   when it notices; dropping it then gives nothing back).
    ///
    /// Otherwise a block could be handed out twice.
    ///
    /// # Errors
    /// As [`Heap::cache`]; [`Error::StaleMember`] if `me` is not a current registration.
    pub unsafe fn member_cache(
        &self,
        me: Member,
        config: CacheConfig,
    ) -> Result<Cache<'_, 'm, P>, Error> {
        self.check_cache_config(config)?;
        self.cache_over(me, false, config)
    }

    /// Whether [`cache`](Heap::cache) and [`member_cache`](Heap::member_cache) take
    /// `config` for this heap (for a program that makes its cache later).
    ///
    /// # Errors
    /// [`Error::InvalidSize`]: `max_block` is smaller than the heap's smallest block, or
    /// `max_bytes` is smaller than `max_block`.
    pub fn check_cache_config(&self, config: CacheConfig) -> Result<(), Error> {
        if config.max_block < self.space.geo.min_block || config.max_bytes < config.max_block {
            return Err(Error::InvalidSize {
                requested: u64::from(config.max_block),
            });
        }
        Ok(())
    }

    fn cache_over(
        &self,
        me: Member,
        own_member: bool,
        config: CacheConfig,
    ) -> Result<Cache<'_, 'm, P>, Error> {
        let geo = self.space.geo;
        let heap_bytes = self.space.hdr.heap.heap_bytes.load(Relaxed);
        let max_bytes = config.max_bytes.min(heap_bytes / 8).max(geo.min_block);
        let classes = Classes::new(geo.align);
        let class_count = classes
            .down(config.max_block.min(max_bytes))
            .map_or(0, |c| c.saturating_add(1))
            .min(MAX_CLASSES);
        let rec = self.space.member_record(me)?;
        Ok(Cache {
            heap: self,
            me,
            own_member,
            rec,
            forks: self.platform.fork_generation(),
            drain_seen: self.space.hdr.cache_drain.load(Acquire),
            classes: core::array::from_fn(|c| Class {
                size: if c < class_count {
                    classes.size(c).unwrap_or(0)
                } else {
                    0
                },
                ..Class::default()
            }),
            class_count,
            max_block: config.max_block,
            scheme: classes,
            max_bytes,
            class_max_bytes: (max_bytes / 4).max(config.max_block.min(max_bytes)),
            refill_bytes: config.refill_bytes,
            stats: CacheStats::default(),
        })
    }
}
