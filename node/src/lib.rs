//! The Sluice storage node.
//!
//! - `cluster`: a node in a cluster: the transport between nodes, the agent (controller
//!   quorum member and routing, shard 0) and each shard's replica host over its logs.
//! - `config`: the node's settings (flags, TOML file, defaults).
//! - `controller`: the controller quorum (raft-rs voters and learners, doing no I/O) and
//!   its log's bytes and files (write-ahead log segments, snapshots).
//! - `groups`: the consumer group coordinator (the state machine `groups::state` and its
//!   driver on the shard) and its assignment strategies.
//! - `errors`: how a request's parts fail, as the client is told.
//! - `listener`: the connection loop both protocols share (framing, pipelining, request
//!   memory, in-order responses).
//! - `ops`: the operations both protocols call (produce, fetch, list offsets, delete
//!   records, admin), over the shard.
//! - `native`: the native protocol's handlers over `ops`.
//! - `kafka`: the Kafka wire-protocol listener over the same operations.
//! - `replication`: the ISR, high-watermark, epoch and election state machines and their
//!   deterministic simulation; the node runs them through `cluster::host`.
//! - `metrics`: counters and latency histograms, rendered for Prometheus, and the
//!   `/metrics` HTTP endpoint.
//! - `shard`: the thread-per-core runtime (partition ownership, cross-shard calls) and
//!   its part in a cluster (`shard::cluster`).
//! - `io`: the I/O seam, the only module that touches glommio and io_uring.
//! - `storage`: the partition log (segments, indexes, cache, recovery).
//! - `access`: who asks (`Caller`), and the users' and ACLs' admin operations of both
//!   protocols; `acl`: the ACL model and its index; `login`: a connection's SASL login.
//! - `tls`: TLS for SSL listeners (certificates from PEM files, reloaded on SIGHUP).
//! - `topics`: topic metadata, its validation and its file.

pub mod access;
pub mod acl;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod errors;
pub mod groups;
pub mod kafka;
pub mod listener;
pub mod login;
pub mod metrics;
pub mod native;
pub mod ops;
/// SASL mechanisms (PLAIN, SCRAM) and SCRAM credentials, shared with the fuzz targets.
pub use sluice_schemas::sasl;
pub mod shard;
pub mod tls;
pub mod topics;
pub mod txn;

/// The I/O seam (crate `sluice-io`), under its old module path.
pub use sluice_io as io;
/// The replication and controller state machines (crate `sluice-replication`), under
/// their old module path.
pub use sluice_replication as replication;
/// The storage engine (crate `sluice-storage`), under its old module path.
pub use sluice_storage as storage;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// The sources of the node's four crates, each up to its `#[cfg(test)] mod`,
    /// without comment lines (test-only files left out).
    fn node_sources() -> Vec<(std::path::PathBuf, String)> {
        let node = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut dirs: Vec<_> =
            ["src", "io/src", "storage/src", "replication/src"].iter().map(|d| node.join(d)).collect();
        let mut out = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if path.is_dir() {
                    dirs.push(path);
                } else if name.ends_with(".rs") && name != "sim.rs" && !name.ends_with("_tests.rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let lines: Vec<&str> = text.lines().collect();
                    // Up to the test module: a `#[cfg(test)]` on an item of the file
                    // (a test-only method, say) does not end the scan.
                    let end = lines
                        .windows(2)
                        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
                        .unwrap_or(lines.len());
                    let code: Vec<&str> =
                        lines[..end].iter().copied().filter(|l| !l.trim_start().starts_with("//")).collect();
                    out.push((path, code.join("\n")));
                }
            }
        }
        out
    }

    /// "No lock on the data path": shards share nothing but the channel mesh, so no
    /// source of the node's crates takes a lock.
    #[test]
    fn no_locks_in_the_node() {
        let sources = node_sources();
        assert!(sources.len() > 40, "found {} sources", sources.len());
        for (path, code) in &sources {
            for word in ["Mutex", "RwLock"] {
                assert!(!code.contains(word), "{} names {word}", path.display());
            }
        }
    }

    /// "The state machines do no I/O and read no wall clock": `sluice-replication`
    /// depends on neither glommio nor `sluice-io` (its Cargo.toml), and its sources name
    /// no clock, file, socket, thread or sleep: time comes in as `now_ms`.
    #[test]
    fn the_replication_crate_reads_no_clock_and_does_no_io() {
        let replication = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("replication");
        let sources: Vec<_> = node_sources().into_iter().filter(|(path, _)| path.starts_with(&replication)).collect();
        assert!(sources.len() >= 8, "found {} sources", sources.len());
        let forbidden =
            ["Instant", "SystemTime", "std::fs", "std::net", "std::thread", "sleep(", "glommio", "sluice_io", "tokio"];
        for (path, code) in &sources {
            for word in forbidden {
                assert!(!code.contains(word), "{} names {word}", path.display());
            }
        }
    }
}
