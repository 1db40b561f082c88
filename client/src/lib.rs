//! The Sluice client: the batching producer, the consumer and the admin client, for
//! tokio applications (plus blocking facades for plain threads), and the `sluice` CLI.
//!
//! - `producer`: the batching producer (`Producer`, `ProducerConfig`, `ProducerRecord`).
//! - `group`: `GroupConsumer`, subscribing as a member of a consumer group.
//! - `consumer`: assigned partitions, seek, poll (`Consumer`, `ConsumerConfig`).
//! - `blocking`: the same for plain threads.
//! - `admin`: topics, partitions, configs, users and ACLs.
//! - `acl`: access control entries and filters, with Kafka's numbers and names.
//! - `security`: `Security` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) and the client
//!   side of the SASL logins (SCRAM-SHA-256/512, PLAIN).
//! - `partitioner`: murmur2 as Kafka's Java client, sticky for null keys.
//! - `compression`: gzip, snappy (xerial framing), lz4 (frame), zstd, as Kafka clients.
//! - `serialize`: bytes, string, i64, f64 serializers and the traits for custom ones.
//! - `protocol`: typed requests and responses of the native protocol.
//! - `connection`: one pipelined connection to a node (TCP or TLS), logged in.
//! - `router`: each partition's leader and a connection per node (cluster routing).
//! - `error`: `ClientError`, with `is_retriable`.
//!
//! This crate never depends on the node; it shares only `sluice-schemas` with it.

pub mod acl;
pub mod admin;
pub mod blocking;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod partitioner;
pub mod producer;
pub mod protocol;
mod router;
pub mod security;
pub mod serialize;

pub use admin::Admin;
pub use error::{ClientError, ErrorCode, Result};
pub use protocol::NewTopic;
pub use security::{SaslSettings, Security, TlsSettings};
pub use sluice_schemas as schemas;
/// Kafka's batch codecs (they live in `sluice-schemas`, shared with the node).
pub use sluice_schemas::compression;
