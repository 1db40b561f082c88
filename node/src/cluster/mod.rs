//! The node's side of the cluster: how replication and the controller quorum reach other
//! nodes.
//!
//! - `transport`: the best-effort framed TCP carrier between nodes.
//! - `agent`: runs a node's controller voter on timers over the transport and routes
//!   what reaches the node's cluster listener (shard 0).
//! - `host`: a shard's `ReplicaNode` over its real logs: performs its log operations,
//!   fills its fetch answers, and runs the leader's produce path.
//! - `throttle`: the token bucket for what leaders send replicas outside the ISR.

pub mod agent;
pub mod host;
pub mod throttle;
pub mod transport;
