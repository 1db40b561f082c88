//! The Sluice storage node.
//!
//! - `cluster`: a node in a cluster: the transport between nodes, the agent (controller
//!   quorum member and routing, shard 0) and each shard's replica host over its logs.
//! - `config`: the node's settings (flags, TOML file, defaults).
//! - `controller`: the controller quorum (raft-rs voters and learners, doing no I/O) and
//!   its log's bytes and files (write-ahead log segments, snapshots).
//! - `groups`: the consumer group coordinator and its assignment strategies.
//! - `errors`: how a request's parts fail, as the client is told.
//! - `server`: the connection loop shared by both protocols, the native protocol's
//!   handlers, and the operations both protocols call.
//! - `kafka`: the Kafka wire-protocol listener over the same operations.
//! - `producers`: idempotent producers' recent batches per partition.
//! - `replication`: the ISR, high-watermark, epoch and election state machines and their
//!   deterministic simulation; the node runs them through `cluster::host`.
//! - `metrics`: counters and latency histograms, rendered for Prometheus.
//! - `shard`: the thread-per-core runtime (partition ownership, cross-shard calls) and
//!   its part in a cluster (`shard::cluster`).
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
