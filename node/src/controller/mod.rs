//! The controller: the cluster's metadata, agreed by a quorum of controller nodes.
//!
//! `quorum` is the replicated log underneath: commands proposed on the leader are
//! committed by Raft (raft-rs, a Raft state machine without I/O, the library TiKV runs on)
//! once a majority of voters has them durable, and every voter applies the committed
//! commands in the same order to its `StateMachine`, or takes the leader's snapshot of it.
//! What the commands are (node registrations and fencing, partitions' leaders, leader
//! epochs and ISRs, topics) is the cluster state machine's business:
//! `crate::replication::state::ClusterState`, with the leader-only decision side in
//! `crate::replication::controller` (`ControllerVoter` runs both over a `Quorum`); the
//! quorum only orders and keeps bytes.
//!
//! - `quorum`: `Quorum`, one voter or learner over raft-rs. No I/O: its output says what to
//!   make durable (`Persist`: write-ahead log records, a sync, a snapshot) and which
//!   messages may leave now; the rest leave once the caller acknowledged the persist.
//!   Compacts its log by snapshots of the state machine past `CONTROLLER_LOG_BYTES_MAX`.
//! - `format`: the bytes of the write-ahead log and of the snapshot file, and the
//!   in-memory log the simulator crashes (tests). No I/O.
//! - `wal`: the node's persistence of a voter's log in its directory, through the I/O
//!   seam (O_DIRECT appends, fdatasync, the snapshot written atomically); the only part
//!   that touches files.
//!
//! The quorum and format do no I/O and touch neither glommio nor files, so they can move
//! into a crate of their own with `ClusterState`. In the node, shard 0's `cluster::agent`
//! drives a voter on timers and performs its persists in order with `wal`.

pub mod format;
pub mod quorum;
#[cfg(test)]
mod quorum_tests;
pub mod wal;
