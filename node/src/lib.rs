//! The Sluice storage node.
//!
//! - `config`: the node's settings (flags, TOML file, defaults).
//! - `groups`: the consumer group coordinator and its assignment strategies.
//! - `errors`: how a request's parts fail, as the client is told.
//! - `server`: the native protocol server (framing, one handler file per API group).
//! - `metrics`: counters and latency histograms, rendered for Prometheus.
//! - `shard`: the thread-per-core runtime (partition ownership, cross-shard calls).
//! - `io`: the I/O seam, the only module that touches glommio and io_uring.
//! - `storage`: the partition log (segments, indexes, cache, recovery).
//! - `topics`: topic metadata, its validation and its file.
//!
//! The shards, the protocol servers and replication build on these.

pub mod config;
pub mod controller;
pub mod errors;
pub mod groups;
pub mod io;
pub mod kafka;
pub mod metrics;
pub mod producers;
pub mod server;
pub mod shard;
pub mod storage;
pub mod topics;
