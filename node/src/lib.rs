//! The Sluice storage node.
//!
//! - `cluster`: the transport between nodes (framed TCP for Raft and replication
//!   messages); not yet started by the node.
//! - `config`: the node's settings (flags, TOML file, defaults).
//! - `controller`: the controller quorum (raft-rs voters with a write-ahead log); not yet
//!   wired to the node's network.
//! - `groups`: the consumer group coordinator and its assignment strategies.
//! - `errors`: how a request's parts fail, as the client is told.
//! - `server`: the connection loop shared by both protocols, the native protocol's
//!   handlers, and the operations both protocols call.
//! - `kafka`: the Kafka wire-protocol listener over the same operations.
//! - `producers`: idempotent producers' recent batches per partition.
//! - `replication`: the ISR, high-watermark, epoch and election state machines and their
//!   deterministic simulation; not yet wired to the node.
//! - `metrics`: counters and latency histograms, rendered for Prometheus.
//! - `shard`: the thread-per-core runtime (partition ownership, cross-shard calls).
//! - `io`: the I/O seam, the only module that touches glommio and io_uring.
//! - `storage`: the partition log (segments, indexes, cache, recovery).
//! - `topics`: topic metadata, its validation and its file.

pub mod cluster;
pub mod config;
pub mod controller;
pub mod errors;
pub mod groups;
pub mod io;
pub mod kafka;
pub mod metrics;
pub mod producers;
pub mod replication;
pub mod server;
pub mod shard;
pub mod storage;
pub mod topics;
