//! Sluice's wire and disk formats.
//!
//! - `batch`: the fixed header of Kafka's RecordBatch v2, viewed in place, checked and
//!   patched without copying the batch.
//! - `control`: transaction markers (control batches), built and read.
//! - `ids`: strong identifier types (offsets, epochs, partition and producer ids).
//! - `compression`: Kafka's batch codecs (gzip, snappy in xerial framing, lz4 frame,
//!   zstd), byte-compatible with Kafka clients, and `with_records` over any batch.
//! - `records`: building and reading the varint-encoded records inside a batch.
//! - `sasl`: SASL's PLAIN and SCRAM-SHA-256/512 exchanges on the server side, and the
//!   SCRAM credentials users are kept as.
//! - `varint`: the zigzag varints the records are written with.
//! - `x509`: a certificate's subject as RFC 2253 writes it (TLS clients' principals).
//! - `wire`: the native protocol: flatbuffers envelopes generated from schemas/fbs/sluice.fbs
//!   and the frames that carry them, verified before use.
//!
//! This crate depends on no crate of ours: the node and the client both build on it.

pub mod batch;
pub mod compression;
pub mod control;
pub mod groups;
pub mod ids;

pub use ids::{LeaderEpoch, Offset, ProducerId, TopicPartition};
pub mod records;
pub mod sasl;
pub mod varint;
pub mod wire;
pub mod x509;
