//! The Sluice storage node.
//!
//! - `io`: the I/O seam, the only module that touches glommio and io_uring.
//! - `storage`: the partition log (segments, indexes, cache, recovery).
//! - `topics`: topic metadata, its validation and its file.
//!
//! The shards, the protocol servers and replication build on these.

pub mod io;
pub mod storage;
pub mod topics;
