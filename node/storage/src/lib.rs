//! The storage engine: durable partition logs on io_uring O_DIRECT files.
//!
//! - `log`: `PartitionLog`, the append-only log of one partition, with its guarantees.
//! - `segment`: one segment file and the walker that reads batches back.
//! - `index`: the sparse offset and time indexes of a segment.
//! - `cache`: the bounded cache of recently written batches.
//! - `config`: per-log settings and the fsync policy.
//! - `producers`: idempotent producers' last batches, derived from the log, and their
//!   snapshots.
//! - `segment_files`: closed segments' files, opened on demand from a bounded pool per
//!   shard.
//! - `device`: what a shard's logs share: sync rounds, the zero-fill reserve budget,
//!   counters.
//!
//! Storage touches files only through `sluice_io`.

pub mod cache;
pub mod compact;
pub mod config;
pub mod device;
pub mod error;
pub mod index;
pub mod log;
pub mod producers;
pub mod segment;
pub mod segment_files;

pub use config::{FsyncPolicy, LogConfig};
pub use device::{configure_shard, shard_stats, DeviceStats, ShardLimits};
pub use error::StorageError;
pub use log::{
    AppendInfo, Durability, FaultPoint, Fetched, LogStats, PartitionLog, RecoveryReport, SegmentInfo, Truncation,
};
