//! The storage engine: durable partition logs on io_uring O_DIRECT files.
//!
//! - `log`: `PartitionLog`, the append-only log of one partition, with its guarantees.
//! - `segment`: one segment file and the walker that reads batches back.
//! - `index`: the sparse offset and time indexes of a segment.
//! - `cache`: the bounded cache of recently written batches.
//! - `config`: per-log settings and the fsync policy.
//!
//! Storage touches files only through `sluice_io`.

pub mod cache;
pub mod compact;
pub mod config;
pub mod error;
pub mod index;
pub mod log;
pub mod segment;

pub use config::{FsyncPolicy, LogConfig};
pub use error::StorageError;
pub use log::{
    AppendInfo, Durability, FaultPoint, Fetched, LogStats, PartitionLog, RecoveryReport, SegmentInfo, Truncation,
};
