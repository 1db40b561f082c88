//! The partition log: an append-only sequence of segments on O_DIRECT files.
//!
//! Lives on the one shard that owns the partition; nothing here is `Send`.
//!
//! Write path. `append` checks every batch (length, magic, CRC, record count), assigns
//! offsets by rewriting each batch's base offset (the CRC does not cover it), copies the
//! batches into an aligned write buffer and waits. One flusher task per log writes the
//! buffers in order with io_uring, each write starting at the aligned page that holds the
//! end of the previous data (the partial last page is kept in memory and written again
//! with the next data). Appends that arrive while a write is in flight share the next
//! buffer, so they share the next write and the next fdatasync (group commit).
//!
//! Guarantees:
//! - **An append completes only after its O_DIRECT write completed**, so an
//!   acknowledged batch survives kill -9 whatever the fsync policy; with `always` it
//!   completes only after fdatasync, and `AppendInfo::durability` says which it got.
//! - Readers see only written batches; the cache holds only written batches.
//! - A failed write or fsync poisons the log: every later append fails with that cause.
//! - At open, the last segment is scanned and its CRCs checked; a torn or corrupt tail is
//!   cut off and reported. Closed segments were cut to their exact size before the next
//!   segment was created, so only the last segment can have a torn tail after kill -9.
//! - Idempotent producers' last batches (`crate::producers`) are derived from the
//!   batches in the log, on every path that adds or removes them: appends (which check
//!   them first and answer a retry with the stored batch's offsets), copies from a
//!   leader, truncation, and recovery (the snapshot written at each roll plus the scan of
//!   the active segment). Leader, followers and a restarted node agree on them.
//! - Transactions (KIP-98) are derived the same way, on the same paths: transactional
//!   batches open their producer's transaction, the coordinator's markers
//!   (`append_control_as_leader`, or copied from the leader) close it. The last stable
//!   offset (`last_stable_offset`: the first offset of the earliest open transaction, else
//!   the log end) never passes a transactional batch that is appended but not committed
//!   or aborted, written or not. `aborted_transactions` lists the aborted transactions
//!   still in the log (from the log start on), in marker order. Both survive kill -9 and
//!   reopen exactly (the roll snapshot holds them, the active segment's scan replays the
//!   markers after it), truncation (a cut marker reopens its transaction, a cut first
//!   batch removes it) and moving the log start (aborted entries wholly below it go).
//!   Producers may not append control batches; only `append_control_as_leader` and
//!   `append_copied` take them.
//!
//! The log is split by what each part does:
//! - `state`: the in-memory state shared by the handle and the flusher, and the job queue.
//! - `append`: checking batches, assigning offsets, filling the write buffer.
//! - `read`: reads from the cache or the segments, offsets for timestamps, long polls.
//! - `flusher`: the flusher task: writes, zero-fills, syncs, rolls, close.
//! - `shape`: truncation, moving the log start, swapping in compacted segments.
//! - `recovery`: opening and scanning segments, cutting torn tails.
//! - `files`: the log-start checkpoint, the leader-epoch cache and index files.
//! - `faults`: named fault-injection points for tests.

mod append;
mod faults;
mod files;
mod flusher;
mod read;
mod recovery;
mod shape;
mod state;

pub use faults::{FaultInjector, FaultPoint};
pub use files::CleanClose;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use sluice_schemas::ids::LeaderEpoch;
use sluice_schemas::Offset;
use tracing::info;

use crate::cache::BatchCache;
use crate::config::LogConfig;
use crate::error::StorageError;
use crate::index::SegmentIndex;
use crate::segment::{parse_segment_name, segment_path, Segment, LOG_SUFFIX};
use sluice_io::{self as io, File, IoBytes, WaitQueue};

use files::{read_epochs, read_log_start, CLEAN_CLOSE_FILE};
use flusher::flusher;
use recovery::{read_tail_page, recover_producers, recover_segment, Role};
use state::{Shared, State};

/// Each leader epoch in the log and the offset of its first batch, both increasing.
pub type EpochStarts = Vec<(LeaderEpoch, Offset)>;

/// What an acknowledged append survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The O_DIRECT write completed: survives the node's process dying, not a power loss
    /// (until the next fdatasync under the `interval` policy).
    Written,
    /// Written and fdatasync'd: survives a power loss.
    Synced,
}

/// The outcome of a successful append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub durability: Durability,
    /// The append time stamped on the batches (LogAppendTime topics only).
    pub log_append_time_ms: Option<i64>,
    /// The batch was an idempotent producer's retry of one the log already held: these
    /// are the stored batch's offsets and nothing was appended.
    pub duplicate: bool,
}

/// Whole stored batches returned by `read`, as the bytes that lie on disk or in the
/// cache (never decoded or re-encoded).
#[derive(Debug)]
pub struct Fetched {
    /// Consecutive batches; empty when the reader is at the log end.
    pub chunks: Vec<IoBytes>,
    /// Base offset of the first batch (it may be below the offset asked for).
    pub first_offset: Offset,
    /// The offset after the last batch returned: where the next read starts.
    pub next_offset: Offset,
    pub log_start: Offset,
    pub log_end: Offset,
    pub from_cache: bool,
}

impl Fetched {
    /// Nothing, read at `at`.
    #[must_use]
    pub fn empty(at: Offset, log_start: Offset, log_end: Offset) -> Fetched {
        Fetched { chunks: Vec::new(), first_offset: at, next_offset: at, log_start, log_end, from_cache: true }
    }

    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }

    /// The returned batches as one vector (copies; for tests and tools).
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.bytes() as usize);
        for chunk in &self.chunks {
            all.extend_from_slice(chunk);
        }
        all
    }
}

/// One cut made by recovery.
#[derive(Clone, Debug)]
pub struct Truncation {
    pub segment: PathBuf,
    /// The offset the cut data would have started at.
    pub offset: Offset,
    pub position: u64,
    pub bytes_cut: u64,
    pub reason: String,
}

/// What `open` found and repaired.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    /// The log had closed cleanly and its active segment was not scanned whole.
    pub clean: bool,
    pub truncations: Vec<Truncation>,
    pub rebuilt_indexes: Vec<PathBuf>,
    pub log_start: Offset,
    pub log_end: Offset,
}

/// A segment's summary, for retention and tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base: Offset,
    pub next_offset: Offset,
    pub size_bytes: u64,
    pub max_timestamp: i64,
}

/// What one compaction pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Counters of what the log did, for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogStats {
    pub appends: u64,
    pub batches_appended: u64,
    pub bytes_appended: u64,
    pub writes: u64,
    pub bytes_written: u64,
    pub fsyncs: u64,
    pub reads_from_cache: u64,
    pub reads_from_disk: u64,
    pub rolls: u64,
    /// Idempotent producers' retries answered from the stored batch.
    pub duplicates: u64,
}

/// A durable partition log. See the module documentation for its guarantees.
pub struct PartitionLog {
    shared: Rc<Shared>,
}

impl PartitionLog {
    /// Makes `dir`, which must hold no log, the directory of an empty log that starts at
    /// `start` (its log start checkpoint, written durably): opened, its first segment
    /// begins there. A follower whose leader no longer has what it lacks starts so.
    pub async fn prepare_empty(dir: &Path, start: Offset) -> Result<(), StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("creating log directory", dir, e))?;
        files::write_log_start(dir, start).await
    }

    /// Opens the log in `dir` (created if missing), recovering it as described in the
    /// module documentation, and starts its flusher on the current shard.
    pub async fn open(dir: &Path, config: LogConfig) -> Result<(PartitionLog, RecoveryReport), StorageError> {
        config.validate().map_err(StorageError::Config)?;
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("creating log directory", dir, e))?;
        io::probe_device(dir).await.map_err(|e| StorageError::io("probing the device of", dir, e))?;
        let mut bases = Vec::new();
        let mut clean_close = false;
        let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("listing log directory", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("listing log directory", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") || name.ends_with(".cleaned") {
                // A metadata file whose atomic write did not finish, or a compacted copy
                // of a segment that was never swapped in: the original is intact.
                io::remove_file(&entry.path()).map_err(|e| StorageError::io("removing", entry.path(), e))?;
                continue;
            }
            if let Some((base, LOG_SUFFIX)) = parse_segment_name(name) {
                bases.push(base);
            }
            clean_close |= name == CLEAN_CLOSE_FILE;
        }
        bases.sort();
        let checkpoint = read_log_start(dir).await?;
        let mut epochs = read_epochs(dir).await?;
        let mut report = RecoveryReport::default();
        let now_ms = config.clock.now_ms();
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        if bases.is_empty() {
            let base = checkpoint.unwrap_or_default();
            let path = segment_path(dir, base, LOG_SUFFIX);
            let file = File::create_new(&path).await.map_err(|e| StorageError::io("creating segment", &path, e))?;
            io::sync_dir(dir).await.map_err(|e| StorageError::io("syncing directory", dir, e))?;
            segments.push(Segment {
                base,
                next_offset: base,
                size_bytes: 0,
                written_bytes: 0,
                index: SegmentIndex::new(base, config.index_interval_bytes),
                file: Some(Rc::new(file)),
                created_ms: now_ms,
                preallocated_bytes: 0,
                synced_bytes: 0,
            });
        }
        let mut active_producer_batches = Vec::new();
        let mut clean_producers = None;
        for (i, &base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            let role = if is_active { Role::Active { clean_close } } else { Role::Closed };
            let (segment, producer_batches, producers) =
                recover_segment(dir, base, &config, role, now_ms, &mut report, &mut epochs).await?;
            if is_active {
                active_producer_batches = producer_batches;
                report.clean = producers.is_some();
                clean_producers = producers;
            }
            if let Some(previous) = segments.last() {
                if previous.next_offset > segment.base {
                    return Err(StorageError::Corrupt {
                        segment: segment_path(dir, segment.base, LOG_SUFFIX),
                        offset: segment.base,
                        position: 0,
                        reason: format!("segment overlaps the one before it, which ends at {}", previous.next_offset),
                    });
                }
            }
            segments.push(segment);
        }
        let first_base = segments.first().map(|s| s.base).unwrap_or_default();
        let active = match segments.last() {
            Some(s) => s,
            None => unreachable!("at least one segment"),
        };
        let log_end = active.next_offset;
        let log_start = checkpoint.unwrap_or(first_base).max(first_base).min(log_end);
        epochs.retain(|(_, start)| *start < log_end);
        let mut producers = match clean_producers {
            Some(producers) => producers,
            None => recover_producers(dir, &segments, active_producer_batches).await?,
        };
        producers.advance_start(log_start);
        let tail = read_tail_page(active.file.as_deref(), active.size_bytes)
            .await
            .map_err(|e| StorageError::io("reading the last page of", segment_path(dir, active.base, LOG_SUFFIX), e))?;
        report.segments = segments.len();
        report.log_start = log_start;
        report.log_end = log_end;
        info!(dir = %dir.display(), segments = report.segments, log_start = %log_start, log_end = %log_end,
              truncations = report.truncations.len(), "partition log opened");
        let state = State {
            segments,
            log_start,
            next_offset: log_end,
            visible_end: log_end,
            pending: None,
            written: tail.clone(),
            tail,
            jobs: VecDeque::new(),
            unflushed_bytes: 0,
            exclusive_jobs: 0,
            append_queue: VecDeque::new(),
            next_append_ticket: 0,
            poisoned: None,
            closed: false,
            dropped: false,
            cache: BatchCache::new(config.cache_bytes_max),
            last_sync: Instant::now(),
            unsynced: false,
            last_write_bytes: 0,
            reserve_held: 0,
            read_next: None,
            read_ahead: std::collections::VecDeque::new(),
            write_bytes_average: 0,
            clean_offset: Offset(0),
            clean_close_on_disk: clean_close && dir.join(CLEAN_CLOSE_FILE).exists(),
            epochs,
            producers,
            stats: LogStats::default(),
        };
        let shared = Rc::new(Shared {
            dir: dir.to_path_buf(),
            config,
            state: RefCell::new(state),
            work: WaitQueue::new(),
            room: WaitQueue::new(),
            appended: WaitQueue::new(),
            faults: FaultInjector::default(),
        });
        io::spawn_detached(flusher(shared.clone()));
        Ok((PartitionLog { shared }, report))
    }

    /// The idempotent producers whose batches the log holds, with their latest batch.
    #[must_use]
    pub fn producers(&self) -> Vec<crate::producers::ProducerSummary> {
        self.shared.state.borrow().producers.summaries()
    }

    /// `producer_id`'s transaction here as it stands, for KIP-890 part 1's verification
    /// (`producers::TxnGuard`; `append_as_leader` checks it again).
    #[must_use]
    pub fn txn_guard(&self, producer_id: i64) -> crate::producers::TxnGuard {
        self.shared.state.borrow().producers.txn_guard(producer_id)
    }

    /// The last stable offset: the first offset of the earliest open transaction, or the
    /// log end (`log_end_offset`) when none is open or it starts at or past the log end
    /// (appended, not yet written). read_committed readers stop here; the node takes the
    /// smaller of it and the high watermark.
    #[must_use]
    pub fn last_stable_offset(&self) -> Offset {
        let st = self.shared.state.borrow();
        st.producers.first_unstable_offset().map_or(st.visible_end, |first| first.min(st.visible_end))
    }

    /// The aborted transactions that may hold records in `[from, to)`
    /// (`last_offset >= from && first_offset < to`), by first offset: what a
    /// read_committed Fetch returns beside the records it read from `from` to `to`.
    #[must_use]
    pub fn aborted_transactions(&self, from: Offset, to: Offset) -> Vec<crate::producers::AbortedTxn> {
        self.shared.state.borrow().producers.aborted_between(from, to)
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    #[must_use]
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// The first offset still in the log.
    #[must_use]
    pub fn log_start_offset(&self) -> Offset {
        self.shared.state.borrow().log_start
    }

    /// The offset after the last acknowledged (written) record.
    #[must_use]
    pub fn log_end_offset(&self) -> Offset {
        self.shared.state.borrow().visible_end
    }

    /// Why the log refuses writes, when a write or fsync failed (a full or failing
    /// disk): the log can no longer say what its last bytes on disk are, so it takes no
    /// more writes until it is opened again, which recovers what the disk holds.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.shared.state.borrow().poisoned.clone()
    }

    #[must_use]
    pub fn stats(&self) -> LogStats {
        self.shared.state.borrow().stats
    }

    /// Bytes held by the cache of recent batches.
    #[must_use]
    pub fn cache_bytes(&self) -> u64 {
        self.shared.state.borrow().cache.bytes()
    }

    /// Fault points for tests of the failure paths.
    #[must_use]
    pub fn faults(&self) -> &FaultInjector {
        &self.shared.faults
    }

    #[must_use]
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let st = self.shared.state.borrow();
        st.segments
            .iter()
            .map(|s| SegmentInfo {
                base: s.base,
                next_offset: s.next_offset,
                size_bytes: s.size_bytes,
                max_timestamp: s.index.max_timestamp(),
            })
            .collect()
    }

    /// The leader-epoch cache: each epoch in the log (written or queued) with the offset
    /// of its first batch.
    #[must_use]
    pub fn epoch_starts(&self) -> EpochStarts {
        self.shared.state.borrow().epochs.clone()
    }
}

/// A segment's file: the one it holds (the active segment), else the closed segment's
/// from the shard's pool (`segment_files`).
pub(super) async fn file_of(dir: &Path, base: Offset, open: Option<Rc<File>>) -> Result<Rc<File>, StorageError> {
    if let Some(file) = open {
        return Ok(file);
    }
    let path = segment_path(dir, base, LOG_SUFFIX);
    crate::segment_files::get(&path).await.map_err(|e| StorageError::io("opening segment", &path, e))
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        crate::segment_files::forget_dir(&self.shared.dir);
        // Without close(): the flusher finishes the queued writes, then exits.
        self.shared.state.borrow_mut().dropped = true;
        self.shared.work.notify_all();
        self.shared.room.notify_all();
    }
}
