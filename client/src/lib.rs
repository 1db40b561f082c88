//! The Sluice client crate.
//!
//! Not yet written: the producer, consumer and admin clients and the `sluice` CLI come
//! with the client issue, once the node speaks its protocol. Today this crate only
//! re-exports the record batch codec that the producer will build batches with.

pub use sluice_schemas as schemas;
