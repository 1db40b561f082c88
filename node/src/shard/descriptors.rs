//! File descriptors as a budget: the node's open-files limit is shared by partitions
//! (each holds its active segment open), connections and the files being written. A
//! create or a partition increase that would need more descriptors on this node than the
//! limit leaves is refused up front, naming the numbers; a partition that fails to open
//! anyway fails the create that made it (see `cluster::commit_topic`), never a success.

use crate::errors::{ErrorKind, NodeError};

/// Descriptors kept free when partitions are added: for connections beyond those open
/// now, replication, and the files a log writes beside its segment (index files, the
/// producers' snapshot, checkpoints).
pub const DESCRIPTOR_HEADROOM: usize = 256;

/// The process's soft limit on open files (what the node raised it to at start).
#[must_use]
pub fn open_files_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass; no other memory.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return 1 << 20;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(1 << 20)
}

/// Closed segments' files the node keeps open at most (`--segment-files-max`).
#[must_use]
pub fn segment_files_max(config: &crate::config::NodeConfig) -> usize {
    config.segment_files_max.unwrap_or_else(|| (open_files_limit() / 8).min(1024))
}

/// Descriptors the process holds now.
#[must_use]
pub fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count())
}

/// Whether this node has descriptors for `new` more partitions of `topic`: refused
/// (INVALID_PARTITIONS) when they would leave less than `DESCRIPTOR_HEADROOM` free
/// beside the closed segments' pool (`pool`, which may not be full yet).
pub fn check_room_for(topic: &str, new: usize, pool: usize) -> Result<(), NodeError> {
    if new == 0 {
        return Ok(());
    }
    let (limit, open) = (open_files_limit(), open_descriptors());
    if open + new + DESCRIPTOR_HEADROOM + pool <= limit {
        return Ok(());
    }
    Err(NodeError::new(
        ErrorKind::InvalidPartitions,
        format!(
            "topic {topic:?}: {new} new partitions on this node need {new} file descriptors (one open segment each), \
             but {open} of its open files limit {limit} are open and {DESCRIPTOR_HEADROOM} are kept free beside the \
             {pool} of closed segments' files (--segment-files-max); raise the node's limit (its hard limit, ulimit -Hn: the node raises its soft limit to it) or create fewer partitions"
        ),
    ))
}

/// `e` (why a partition did not open), with the limit when it ran out of descriptors.
#[must_use]
pub fn describe_open_failure(e: String) -> String {
    if e.contains("os error 24") || e.contains("Too many open files") {
        return format!("{e} (the node's open files limit is {}, {} open)", open_files_limit(), open_descriptors());
    }
    e
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn partitions_past_the_open_files_limit_are_refused_with_the_numbers() {
        assert!(check_room_for("t", 0, 0).is_ok());
        assert!(check_room_for("t", 1, 0).is_ok(), "one more fits under any real limit");
        let e = check_room_for("t", open_files_limit(), 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidPartitions);
        assert!(e.message.contains(&format!("open files limit {}", open_files_limit())), "{}", e.message);
        let described = describe_open_failure("creating segment x: Too many open files (os error 24)".into());
        assert!(described.contains("open files limit is"), "{described}");
        assert_eq!(describe_open_failure("other".into()), "other");
    }
}
