//! Writes the seed corpora for the fuzz targets (`fuzz/corpus/*/seed-*`).
//!
//! `cargo run -p shm-core --example fuzz_seeds --features testkit -- fuzz/corpus`
//!
//! heap_ops seeds are operation streams from a fixed generator, one per region shape;
//! attach_bytes seeds are formatted regions after some traffic (every other one with its
//! derived state flagged for a rebuild), followed by operations; protocol seeds are
//! operation streams for the well-formed scenario and protocol region images (intact or
//! with bytes flipped) for the hostile one (see `shm_core::testkit::protocol_ops`).
#![allow(clippy::unwrap_used)] // an example: failures end it with a message

use std::path::PathBuf;

use shm_core::testkit::{hostile, protocol_ops, AlignedBuf, TestPlatform};
use shm_core::{Heap, HeapConfig, ProcessId, Region};

fn stream(seed: u64, setup: u8, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = vec![setup];
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

fn image(len: usize, align: u32, ops: u32) -> Vec<u8> {
    let buf = AlignedBuf::new(len);
    {
        // SAFETY: `buf` outlives `heap`, dropped at the end of this block.
        let region = unsafe { Region::from_raw(buf.as_ptr(), buf.len()) }.unwrap();
        let config = HeapConfig {
            align,
            max_processes: 8,
        };
        let heap = Heap::init(region, config, TestPlatform::new(1)).unwrap();
        let a = heap.register_as(ProcessId::from_pid(100)).unwrap();
        let b = heap.register_as(ProcessId::from_pid(101)).unwrap();
        for i in 0..ops {
            let Ok(x) = heap.try_alloc(a, 8 + 24 * (i % 17)) else {
                break;
            };
            match i % 5 {
                0 => heap.share(a, x, b).unwrap(),
                1 => heap.give(a, x, b).unwrap(),
                2 => heap.free(a, x).unwrap(),
                // Kept blocks, the last one named as the kept root.
                3 if i % 2 == 1 => {
                    heap.keep(a, x).unwrap();
                    heap.set_kept_root(a, Some(x)).unwrap();
                }
                _ => {}
            }
        }
        heap.reserve(b, 256).unwrap();
    }
    buf.bytes().to_vec()
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let ops_dir = dir.join("heap_ops");
    let attach_dir = dir.join("attach_bytes");
    std::fs::create_dir_all(&ops_dir).unwrap();
    std::fs::create_dir_all(&attach_dir).unwrap();
    for (i, setup) in [0x00u8, 0x01, 0x23, 0x46, 0x8b, 0xc7]
        .into_iter()
        .enumerate()
    {
        let s = stream(0x9e37_79b9 + i as u64, setup, 600 + 300 * i);
        std::fs::write(ops_dir.join(format!("seed-{i}")), s).unwrap();
    }
    for (i, (len, align, ops)) in [
        (6144, 16, 4),
        (16384, 16, 40),
        (12288, 64, 20),
        (32768, 8, 120),
    ]
    .into_iter()
    .enumerate()
    {
        let mut img = image(len, align, ops);
        if i % 2 == 1 {
            // Derived state flagged stale: the first operation rebuilds it.
            img[core::mem::offset_of!(shm_core::format::RegionHeader, derived_dirty)] = 1;
        }
        let tail = stream(0x51_7cc1 + i as u64, 0, 200);
        std::fs::write(
            attach_dir.join(format!("seed-{i}")),
            hostile::encode(&img, &tail),
        )
        .unwrap();
    }
    let proto_dir = dir.join("protocol");
    std::fs::create_dir_all(&proto_dir).unwrap();
    let mut n = 0;
    let mut seed = |bytes: Vec<u8>| {
        std::fs::write(proto_dir.join(format!("seed-{n}")), bytes).unwrap();
        n += 1;
    };
    for (i, setup) in [0x00u8, 0x15, 0x2a, 0x31].into_iter().enumerate() {
        let ops = stream(0x9a07_0c01 + i as u64, 0, 500 + 200 * i);
        seed(protocol_ops::encode_formed(setup, &ops[1..]));
    }
    for (i, len) in [16384usize, 24576].into_iter().enumerate() {
        let mut img = protocol_ops::sample_image(len);
        let ops = stream(0x0b57_11e0 + i as u64, 0, 300);
        seed(protocol_ops::encode_hostile(&img, &ops[1..]));
        // A few flipped bytes in the server entry (in the root block the header's root
        // word names) and the participants.
        let root_word = core::mem::offset_of!(shm_core::format::RegionHeader, root);
        let root = u32::from_le_bytes(img[root_word..root_word + 4].try_into().unwrap()) as usize;
        if root != 0 {
            for k in 0..6 {
                let at = (root + 4 * k).min(img.len() - 1);
                img[at] ^= 0x5a;
            }
        }
        let last = img.len() - 1024;
        img[last] ^= 0xff;
        seed(protocol_ops::encode_hostile(&img, &ops[1..]));
    }
    println!("seeds written to {}", dir.display());
}
