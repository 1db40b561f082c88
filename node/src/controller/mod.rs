//! The controller's log on disk. The quorum itself (`sluice_replication::quorum`, over
//! raft-rs) and the bytes of its log (`sluice_replication::format`) do no I/O; `wal` is
//! the node's persistence of a voter's log in its directory, through the I/O seam
//! (O_DIRECT appends, fdatasync, the snapshot written atomically): the only part that
//! touches files. In the node, shard 0's `cluster::agent` drives a voter on timers and
//! performs its persists in order with `wal`.

pub mod wal;
