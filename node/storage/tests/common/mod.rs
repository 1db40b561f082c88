//! Helpers shared by the storage engine's tests: an executor to run them on and a
//! batch maker.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;

use sluice_schemas::records::{BatchBuilder, BatchConfig};

/// Runs `future` on a fresh glommio executor on this thread.
pub fn run<T>(future: impl Future<Output = T> + 'static) -> T {
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(2 << 20)
        .make()
        .expect("glommio executor (is ulimit -l at least 512 KiB?)");
    ex.run(future)
}

/// The newest file of the log in `dir` whose name ends in `.extension` (the names sort
/// by base offset).
pub fn newest_file(dir: &std::path::Path, extension: &str) -> std::path::PathBuf {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    all.sort();
    all.pop().unwrap_or_else(|| panic!("no .{extension} file in {}", dir.display()))
}

/// A producer batch of `count` records whose values are `value_bytes` bytes derived from
/// `seed`, with timestamps starting at `timestamp`.
pub fn batch(seed: u64, count: usize, value_bytes: usize, timestamp: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(BatchConfig::default()).unwrap();
    for i in 0..count {
        let key = format!("key-{seed}-{i}");
        let value: Vec<u8> = (0..value_bytes).map(|j| (seed as usize * 31 + i * 7 + j) as u8).collect();
        builder.push(Some(key.as_bytes()), Some(&value), &[], timestamp + i as i64).unwrap();
    }
    builder.finish().unwrap()
}
