//! The Sluice storage node.
//!
//! - `cluster`: a node in a cluster: the transport between nodes, the agent (controller
//!   quorum member and routing, shard 0) and each shard's replica host over its logs.
//! - `config`: the node's settings (flags, TOML file, defaults).
//! - `controller`: the controller quorum (raft-rs voters and learners, doing no I/O) and
//!   its log's bytes and files (write-ahead log segments, snapshots).
//! - `groups`: the consumer group coordinator (the state machine `groups::state` and its
//!   driver on the shard) and its assignment strategies.
//! - `errors`: how a request's parts fail, as the client is told.
//! - `listener`: the connection loop both protocols share (framing, pipelining, request
//!   memory, in-order responses).
//! - `ops`: the operations both protocols call (produce, fetch, list offsets, delete
//!   records, admin), over the shard.
//! - `native`: the native protocol's handlers over `ops`.
//! - `kafka`: the Kafka wire-protocol listener over the same operations.
//! - `producers`: idempotent producers' recent batches per partition.
//! - `replication`: the ISR, high-watermark, epoch and election state machines and their
//!   deterministic simulation; the node runs them through `cluster::host`.
//! - `metrics`: counters and latency histograms, rendered for Prometheus, and the
//!   `/metrics` HTTP endpoint.
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
pub mod kafka;
pub mod listener;
pub mod metrics;
pub mod native;
pub mod ops;
pub mod producers;
pub mod shard;
pub mod topics;

/// The I/O seam (crate `sluice-io`), under its old module path.
pub use sluice_io as io;
/// The storage engine (crate `sluice-storage`), under its old module path.
pub use sluice_storage as storage;
/// The replication and controller state machines (crate `sluice-replication`), under
/// their old module path.
pub use sluice_replication as replication;
