//! Per-log settings of the storage engine, each with its unit in its name and its
//! limits checked in one place (`LogConfig::validate`).

use std::fmt;
use std::str::FromStr;

use sluice_io::Clock;

/// When the log calls fdatasync, and so what an acknowledged append survives.
/// Every policy survives kill -9 of the node: an append completes only after its
/// O_DIRECT write completed. The policy decides what survives a power loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fdatasync before each write completes (several appends share one sync).
    Always,
    /// fdatasync at most this many milliseconds after a write.
    IntervalMs(u64),
    /// Never; the device and the OS decide.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::IntervalMs(ms) => write!(f, "interval:{ms}"),
            FsyncPolicy::Never => write!(f, "never"),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;

    /// Parses `always`, `never` or `interval:N` (N milliseconds, 1..=3600000; a trailing
    /// `ms` is accepted).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "always" => return Ok(FsyncPolicy::Always),
            "never" => return Ok(FsyncPolicy::Never),
            _ => {}
        }
        let Some(ms) = s.strip_prefix("interval:") else {
            return Err(format!(
                "fsync policy {s:?} is not one of `always`, `never`, `interval:N` (N in milliseconds)"
            ));
        };
        let ms = ms.trim_end_matches("ms").trim();
        match ms.parse::<u64>() {
            Ok(n) if (1..=3_600_000).contains(&n) => Ok(FsyncPolicy::IntervalMs(n)),
            _ => Err(format!("fsync interval {ms:?} must be a whole number of milliseconds from 1 to 3600000")),
        }
    }
}

/// The smallest segment size accepted: one I/O page.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// The largest: index entries hold positions as u32, and Kafka caps segments at 2 GiB.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// The largest batch the log accepts, whatever the topic says (matches
/// `sluice_schemas::batch::BATCH_BYTES_MAX`).
pub const BATCH_BYTES_LIMIT: u64 = sluice_schemas::batch::BATCH_BYTES_MAX as u64;

/// Settings of one partition log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Roll to a new segment before one grows past this (segment.bytes).
    pub segment_bytes: u64,
    /// Roll when the active segment is older than this (segment.ms).
    pub segment_ms: u64,
    /// Add a sparse index entry after at least this many bytes of batches.
    pub index_interval_bytes: u64,
    pub fsync: FsyncPolicy,
    /// The largest batch accepted (max.message.bytes).
    pub batch_bytes_max: u64,
    /// The cache of recently written batches (O_DIRECT bypasses the page cache).
    pub cache_bytes_max: u64,
    /// The capacity of each aligned write buffer; appends that arrive while a write is
    /// in flight share the next buffer, and so the next write.
    pub write_buffer_bytes: u64,
    /// Appends wait while this many bytes are accepted but not yet written.
    pub unflushed_bytes_max: u64,
    /// Bytes zero-filled ahead of small writes at a time; 0 = none. A write into
    /// zero-filled space overwrites written extents: no size change or extent conversion
    /// to sync, and io_uring need not hand it to a worker thread. (fallocate's unwritten
    /// extents measured slower than plain extending writes on ext4; see ARCHITECTURE.md.)
    pub preallocate_bytes: u64,
    /// Only writes up to this size zero-fill ahead of themselves: for larger ones the
    /// extra bandwidth costs more than the per-write overhead it saves.
    pub zero_fill_write_bytes_max: u64,
    /// After a clean close, an active segment of at least this size is opened from the
    /// clean-close record instead of scanned whole (a smaller one is cheaper to scan than
    /// the record's files are to read).
    pub clean_open_min_bytes: u64,
    /// The clock for segment age and LogAppendTime.
    pub clock: Clock,
    /// Delete closed segments whose newest record is older than this (retention.ms);
    /// `None`: keep forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest closed segments while the log is larger than this
    /// (retention.bytes); `None`: no size limit.
    pub retention_bytes: Option<u64>,
    /// Which timestamp batches carry (message.timestamp.type).
    pub timestamp_type: sluice_schemas::batch::TimestampType,
    /// cleanup.policy includes `delete`: retention applies.
    pub cleanup_delete: bool,
    /// cleanup.policy includes `compact`: the cleaner keeps the latest value per key.
    pub cleanup_compact: bool,
    /// Segments younger than this are not compacted (min.compaction.lag.ms).
    pub min_compaction_lag_ms: u64,
    /// Tombstones are kept this long after their batch, so consumers see them
    /// (delete.retention.ms).
    pub delete_retention_ms: u64,
    /// acks=all produce is refused with NOT_ENOUGH_REPLICAS while fewer replicas than
    /// this are in sync (min.insync.replicas); a single node has one.
    pub min_insync_replicas: u32,
    /// In a cluster: a replica outside the ISR may be elected leader when no ISR member
    /// is available (unclean.leader.election.enable; it may lose acknowledged records).
    pub unclean_leader_election: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            fsync: FsyncPolicy::Always,
            batch_bytes_max: 1_048_588,
            cache_bytes_max: 32 << 20,
            write_buffer_bytes: 1 << 20,
            unflushed_bytes_max: 32 << 20,
            preallocate_bytes: 8 << 20,
            zero_fill_write_bytes_max: 128 << 10,
            clean_open_min_bytes: 4 << 20,
            clock: Clock::system(),
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            timestamp_type: sluice_schemas::batch::TimestampType::CreateTime,
            cleanup_delete: true,
            cleanup_compact: false,
            min_compaction_lag_ms: 0,
            delete_retention_ms: 86_400_000,
            min_insync_replicas: 1,
            unclean_leader_election: false,
        }
    }
}

impl LogConfig {
    /// Checks every limit and the relationships between them; the message names the key,
    /// the value and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        fn range(key: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
            if value < min || value > max {
                return Err(format!("{key} = {value} is out of range ({min} to {max})"));
            }
            Ok(())
        }
        range("segment.bytes", self.segment_bytes, SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX)?;
        range("segment.ms", self.segment_ms, 1, i64::MAX as u64)?;
        range("index.interval.bytes", self.index_interval_bytes, 1, SEGMENT_BYTES_MAX)?;
        range("max.message.bytes", self.batch_bytes_max, 61, BATCH_BYTES_LIMIT)?;
        range("write.buffer.bytes", self.write_buffer_bytes, 4096, 1 << 30)?;
        range("unflushed.bytes.max", self.unflushed_bytes_max, 4096, 1 << 40)?;
        range("preallocate.bytes", self.preallocate_bytes, 0, 1 << 34)?;
        range("zero.fill.write.bytes.max", self.zero_fill_write_bytes_max, 0, 1 << 34)?;
        range("cache.bytes.max", self.cache_bytes_max, 0, 1 << 40)?;
        if self.unflushed_bytes_max < self.write_buffer_bytes {
            return Err(format!(
                "unflushed.bytes.max = {} must be at least write.buffer.bytes = {}",
                self.unflushed_bytes_max, self.write_buffer_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fsync_policies_parse_and_print_back() {
        for s in ["always", "never", "interval:100"] {
            assert_eq!(s.parse::<FsyncPolicy>().unwrap().to_string(), s);
        }
        assert_eq!("interval:5ms".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::IntervalMs(5));
        let e = "sometimes".parse::<FsyncPolicy>().unwrap_err();
        assert!(e.contains("sometimes"), "{e}");
        assert!("interval:0".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn validation_names_the_key_value_and_range() {
        let config = LogConfig { segment_bytes: 10, ..LogConfig::default() };
        let e = config.validate().unwrap_err();
        assert!(e.contains("segment.bytes = 10") && e.contains("4096"), "{e}");
        assert!(LogConfig::default().validate().is_ok());
    }
}
