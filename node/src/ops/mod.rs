//! The operations both protocol listeners call (the native protocol in `native`, Kafka's
//! in `kafka`): each takes the shard that received the request, runs the work on the
//! shards that own the partitions, and returns plain results; the listeners only decode
//! requests and encode responses.

pub mod admin;
pub mod delete_records;
pub mod fetch;
pub mod produce;
pub mod txn;
