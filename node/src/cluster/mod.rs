//! The node's side of the cluster: how replication and the controller quorum reach other
//! nodes.
//!
//! - `transport`: the best-effort framed TCP carrier between nodes.
//! - `agent`: runs a node's controller voter and `ReplicaNode` on timers over the
//!   transport (controller quorum, registration and fencing so far).
//!
//! Not yet started by the node's `main` (see ARCHITECTURE.md, "The cluster").

pub mod agent;
pub mod transport;
