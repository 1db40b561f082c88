//! The node's side of the cluster: how replication and the controller quorum reach other
//! nodes. Built so far: `transport`, the best-effort framed TCP carrier between nodes.
//! Not yet wired into the node's startup (see ARCHITECTURE.md, "The cluster").

pub mod transport;
