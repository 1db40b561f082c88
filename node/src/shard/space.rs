//! A full disk, handled without a restart.
//!
//! Two parts, both per shard:
//! - **The free-space guard.** Produce is refused while the data directory's file system
//!   has less than `storage-min-free-bytes` free (as Redpanda's `storage_min_free_bytes`),
//!   with an error naming the directory and the numbers. The margin keeps room for what
//!   must still be written while producers are refused: followers' copies, committed
//!   offsets, checkpoints, index files at rolls. Free space is read with statvfs at most
//!   every `SPACE_CHECK`, and between reads this shard's appends are subtracted.
//! - **Repair of failed logs.** A log whose write or fsync failed (the disk filled past
//!   the margin, or failed) refuses writes, because it can no longer say what its last
//!   bytes on disk are. Each second the shard opens such a log again, which recovers what
//!   the disk holds exactly as a restart would (torn tails cut, nothing acknowledged
//!   lost), swaps it in and rebuilds its replica from it. A log that fails again is
//!   retried after a doubling backoff. Reopening writes nothing, so it works on a full
//!   disk, and DeleteRecords and retention work on the reopened log to free space.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::errors::{ErrorKind, NodeError};
use crate::io;

use super::{Shard, TopicPartition};

/// How stale the free-space figure may be before a produce reads it again.
pub const SPACE_CHECK: Duration = Duration::from_millis(100);
/// How often failed logs are looked for and reopened.
pub const REPAIR_CHECK: Duration = Duration::from_secs(1);
/// The longest wait before a log that failed again is reopened again.
pub const REPAIR_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The default `storage-min-free-bytes`: the smaller of this and `MIN_FREE_PERCENT` of the
/// file system.
pub const MIN_FREE_BYTES_DEFAULT: u64 = 1 << 30;
pub const MIN_FREE_PERCENT: u64 = 5;

/// The default `reserve-bytes` (the zero-filled space ahead of small writes, node-wide):
/// `RESERVE_PERCENT` of the data directory's file system, between the two bounds.
/// 64 MiB (the earlier fixed default) left 64 KiB per partition at 1,024 partitions,
/// less than their writes ran ahead, so most writes extended their files (metadata to
/// sync, and io_uring hands extending O_DIRECT writes to worker threads): a 256 MiB
/// reserve took 1,024 partitions from 170-177 to 229-240 MB/s on one shard, 1 GiB
/// 10,000 partitions from 88 to 111 MB/s.
pub const RESERVE_BYTES_DEFAULT_MIN: u64 = 64 << 20;
pub const RESERVE_BYTES_DEFAULT_MAX: u64 = 1 << 30;
pub const RESERVE_PERCENT: u64 = 1;

#[must_use]
pub fn default_reserve(dir: &Path) -> u64 {
    default_reserve_of(file_system_space(dir).map_or(0, |(total, _)| total))
}

/// The default reserve on a file system of `total` bytes.
#[must_use]
pub fn default_reserve_of(total: u64) -> u64 {
    (total / 100 * RESERVE_PERCENT).clamp(RESERVE_BYTES_DEFAULT_MIN, RESERVE_BYTES_DEFAULT_MAX)
}

/// The size and free space of the file system holding `dir`, in bytes.
pub fn file_system_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string and `st` a buffer of the right type,
    // which statvfs fills when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 or u64).
    #[allow(clippy::unnecessary_cast)]
    let (unit, blocks, available) = (st.f_frsize as u64, st.f_blocks as u64, st.f_bavail as u64);
    Ok((blocks.saturating_mul(unit.max(1)), available.saturating_mul(unit.max(1))))
}

/// The default free-space margin of a file system of `total` bytes.
#[must_use]
pub fn default_min_free(total: u64) -> u64 {
    MIN_FREE_BYTES_DEFAULT.min(total / 100 * MIN_FREE_PERCENT)
}

/// One shard's view of the data directory's free space, and its guard.
pub struct DataDirSpace {
    dir: PathBuf,
    min_free: u64,
    free: Cell<u64>,
    total: Cell<u64>,
    checked: Cell<Option<Instant>>,
    /// Below the margin at the last check (logged once per crossing).
    low: Cell<bool>,
    /// Produce requests refused for space.
    pub refused: Cell<u64>,
}

impl DataDirSpace {
    /// `min_free`: `None` for the default (`default_min_free` of the file system).
    pub fn new(dir: &Path, min_free: Option<u64>) -> DataDirSpace {
        let (total, free) = file_system_space(dir).unwrap_or_else(|e| {
            warn!(dir = %dir.display(), "reading the data directory's free space: {e}");
            (0, u64::MAX)
        });
        DataDirSpace {
            dir: dir.to_path_buf(),
            min_free: min_free.unwrap_or_else(|| default_min_free(total)),
            free: Cell::new(free),
            total: Cell::new(total),
            checked: Cell::new(Some(Instant::now())),
            low: Cell::new(false),
            refused: Cell::new(0),
        }
    }

    #[must_use]
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Free bytes as last read (less this shard's appends since), and the total.
    #[must_use]
    pub fn free_and_total(&self) -> (u64, u64) {
        (self.free.get(), self.total.get())
    }

    /// Reads the free space again, unless it was read within `SPACE_CHECK`.
    pub fn refresh(&self, now: Instant) {
        if self.checked.get().is_some_and(|t| now.duration_since(t) < SPACE_CHECK) {
            return;
        }
        self.checked.set(Some(now));
        match file_system_space(&self.dir) {
            Ok((total, free)) => {
                self.total.set(total);
                self.free.set(free);
            }
            Err(e) => warn!(dir = %self.dir.display(), "reading the data directory's free space: {e}"),
        }
        self.note_low();
    }

    /// Sets `low` from the free figure, logging each crossing of the margin.
    fn note_low(&self) {
        let low = self.free.get() < self.min_free;
        if low != self.low.replace(low) {
            let (free, min) = (self.free.get(), self.min_free);
            if low {
                warn!(dir = %self.dir.display(), free, min_free = min,
                      "data directory is full: {free} bytes free, below storage-min-free-bytes {min}; \
                       produce is refused until retention, DeleteRecords or the operator frees space");
            } else {
                info!(dir = %self.dir.display(), free, min_free = min, "data directory has space again: produce resumes");
            }
        }
    }

    /// Whether `bytes` more may be produced: refused (KAFKA_STORAGE_ERROR, retriable as in
    /// Kafka, with the numbers) while the file system is below the margin.
    pub fn check(&self, topic: &str, partition: u32, bytes: u64) -> Result<(), NodeError> {
        if self.min_free == 0 {
            return Ok(());
        }
        self.refresh(Instant::now());
        let free = self.free.get();
        // A request admitted above the margin may write into it: the margin is there to
        // absorb what is in flight.
        if free >= self.min_free {
            self.free.set(free.saturating_sub(bytes));
            self.note_low();
            return Ok(());
        }
        self.refused.set(self.refused.get() + 1);
        Err(NodeError::new(
            ErrorKind::Storage,
            format!(
                "{topic}-{partition}: data directory {} is full: {free} bytes free, below storage-min-free-bytes {}; \
                 free space with DeleteRecords, retention or a bigger disk",
                self.dir.display(),
                self.min_free
            ),
        ))
    }

    /// Whether the file system is below the margin (as of the last read).
    #[must_use]
    pub fn is_low(&self) -> bool {
        self.low.get()
    }
}

/// When each failed log may be reopened next.
#[derive(Default)]
pub struct Repairs {
    /// Per partition: reopens so far in a row, and when the next may run.
    attempts: RefCell<HashMap<TopicPartition, (u32, Instant)>>,
    /// Logs reopened after a failure (a counter).
    pub reopened: Cell<u64>,
}

impl Repairs {
    /// Whether a failed log may be reopened now.
    pub fn due(&self, key: &TopicPartition, now: Instant) -> bool {
        self.attempts.borrow().get(key).is_none_or(|(_, at)| now >= *at)
    }

    /// Counts a reopen and sets when the next may run: 1 s, 2 s, 4 s ... `REPAIR_BACKOFF_MAX`
    /// while the log keeps failing.
    pub fn reopened_at(&self, key: &TopicPartition, now: Instant) {
        self.reopened.set(self.reopened.get() + 1);
        let mut attempts = self.attempts.borrow_mut();
        let entry = attempts.entry(key.clone()).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        let wait = REPAIR_CHECK.saturating_mul(1 << entry.0.min(5).saturating_sub(1)).min(REPAIR_BACKOFF_MAX);
        entry.1 = now + wait;
    }

    /// Forgets the backoff of logs that took writes again (or are gone).
    pub fn settle(&self, healthy: impl Fn(&TopicPartition) -> bool) {
        self.attempts.borrow_mut().retain(|key, _| !healthy(key));
    }
}

impl Shard {
    /// Opens again each failed log that is due (see the module documentation), swaps it
    /// in and rebuilds its replica from it.
    pub(super) async fn repair_failed_logs(&self) {
        let now = Instant::now();
        let failed: Vec<(TopicPartition, String)> = self
            .logs
            .borrow()
            .iter()
            .filter_map(|(key, log)| log.failure().map(|cause| (key.clone(), cause)))
            .collect();
        {
            let logs = self.logs.borrow();
            self.repairs.settle(|key| logs.get(key).is_none_or(|log| log.failure().is_none()));
        }
        for (key, cause) in failed {
            if !self.repairs.due(&key, now) {
                continue;
            }
            self.repairs.reopened_at(&key, now);
            let metadata = self.metadata();
            let Some(topic) = metadata.topic(&key.topic) else { continue };
            let opened = self.open_log(topic, key.partition).await;
            let log = match opened {
                Ok(log) => std::rc::Rc::new(log),
                Err(e) => {
                    warn!(topic = %key.topic, partition = key.partition, "reopening a failed log: {e}");
                    continue;
                }
            };
            let end = log.log_end_offset();
            let old = self.logs.borrow_mut().insert(key.clone(), log);
            if let Some(old) = old {
                super::close_log(old).await;
            }
            if let Some(id) = self.host().partition_id(&key.topic, key.partition) {
                self.host().rebuild(id);
            }
            info!(topic = %key.topic, partition = key.partition, log_end = %end,
                  "reopened a log that had failed ({cause}): it takes writes again");
        }
    }
}

/// Repairs this shard's failed logs every `REPAIR_CHECK`, while the shard lives.
pub(super) fn spawn_repair(shard: std::rc::Weak<Shard>) {
    io::spawn_detached(async move {
        loop {
            io::sleep(REPAIR_CHECK).await;
            let Some(s) = shard.upgrade() else { return };
            s.space.refresh(Instant::now());
            s.repair_failed_logs().await;
        }
    });
}

/// `--storage-faults`: this shard's partition logs fail the given shares of writes and
/// syncs with EIO (`sluice_io::faults`), as a failing disk would; the controller's log is
/// spared, so the quorum stays whole. For the fault-injection tests only.
pub(super) fn inject_storage_faults(faults: crate::config::StorageFaults, shard: u16) {
    use crate::io::faults::{Op, Verdict};
    warn!(shard, ?faults, "storage faults are injected into this node's partition logs (--storage-faults, tests only)");
    let mut state = (faults.seed ^ (u64::from(shard) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
    crate::io::faults::inject(move |op: Op<'_>| {
        let (path, per_mille) = match op {
            Op::Write { path, .. } => (Some(path), faults.write_eio),
            Op::Sync { path } => (path, faults.sync_eio),
            Op::Read { .. } => return Verdict::Proceed,
        };
        if path.is_some_and(|p| p.components().any(|c| c.as_os_str() == "controller")) {
            return Verdict::Proceed;
        }
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if state % 1000 < u64::from(per_mille) {
            Verdict::Fail(libc::EIO)
        } else {
            Verdict::Proceed
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_default_margin_is_five_percent_up_to_a_gibibyte() {
        assert_eq!(default_min_free(64 << 20), (64 << 20) / 100 * 5);
        assert_eq!(default_min_free(1 << 40), 1 << 30);
    }

    #[test]
    fn the_default_reserve_is_one_percent_from_64_mib_to_a_gibibyte() {
        assert_eq!(default_reserve_of(0), 64 << 20, "an unknown file system");
        assert_eq!(default_reserve_of(1 << 30), 64 << 20);
        assert_eq!(default_reserve_of(50 << 30), (50 << 30) / 100);
        assert_eq!(default_reserve_of(1 << 40), 1 << 30);
    }

    #[test]
    fn produce_is_refused_below_the_margin_with_the_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let (_, free) = file_system_space(dir.path()).unwrap();
        let space = DataDirSpace::new(dir.path(), Some(free.saturating_add(1 << 40)));
        let e = space.check("t", 3, 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Storage);
        assert!(e.message.contains("t-3: data directory") && e.message.contains("is full"), "{}", e.message);
        assert_eq!(space.refused.get(), 1);
        let open = DataDirSpace::new(dir.path(), Some(0));
        assert!(open.check("t", 3, u64::MAX).is_ok(), "0 turns the guard off");
    }

    #[test]
    fn a_log_that_keeps_failing_is_reopened_less_and_less_often() {
        let repairs = Repairs::default();
        let key = TopicPartition::new("t", 0);
        let now = Instant::now();
        assert!(repairs.due(&key, now));
        repairs.reopened_at(&key, now);
        assert!(!repairs.due(&key, now + Duration::from_millis(900)));
        assert!(repairs.due(&key, now + Duration::from_secs(1)));
        for _ in 0..10 {
            repairs.reopened_at(&key, now);
        }
        assert!(!repairs.due(&key, now + Duration::from_secs(15)));
        assert!(repairs.due(&key, now + REPAIR_BACKOFF_MAX));
        repairs.settle(|_| true);
        assert!(repairs.due(&key, now));
        assert_eq!(repairs.reopened.get(), 11);
    }
}
