//! The controller: the cluster's metadata, agreed by a quorum of controller nodes.
//!
//! `quorum` is the replicated, durable log underneath: commands proposed on the leader
//! are committed by Raft (raft-rs, a Raft state machine without I/O, the library TiKV
//! runs on) once a majority of voters has them on disk, and every voter applies the
//! committed commands in the same order to its `StateMachine`. What the commands are
//! (node registrations and fencing, partitions' leaders, leader epochs and ISRs) is the
//! cluster state machine's business: `crate::replication::state::ClusterState`, with the
//! leader-only decision side in `crate::replication::controller` (`ControllerVoter` runs
//! both over a `Quorum`); the quorum only orders and keeps bytes.
//!
//! Status: the quorum is built and tested in-process (several voters over a simulated
//! network with loss, reordering, crashes and restarts from their write-ahead logs), and
//! the replication simulator runs the cluster controller as 3 such voters. It is not yet
//! wired to the node's network or metadata: a node today is a single node.

pub mod quorum;
