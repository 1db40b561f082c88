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

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_schemas::batch::{
    check_batch, check_producer_batch, set_base_offset, set_leader_epoch, stamp_log_append_time, TimestampType,
};
use sluice_schemas::ids::LeaderEpoch;
use sluice_schemas::Offset;
use tracing::{debug, info, warn};

use crate::cache::BatchCache;
use crate::config::{FsyncPolicy, LogConfig};
use crate::error::StorageError;
use crate::index::SegmentIndex;
use crate::segment::{
    parse_segment_name, segment_path, walk_batches, Segment, Step, WalkEnd, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use sluice_io::{
    self as io, align_down, align_up, AlignedBuf, File, IoBytes, Oneshot, OneshotSender, SharedBuf, WaitQueue,
};

/// The file that remembers a log start offset inside the first segment (after
/// DeleteRecords or retention moved it past the segment's base).
const LOG_START_FILE: &str = "log-start-offset";

/// The leader-epoch cache (Kafka's `leader-epoch-checkpoint`): one "epoch first-offset"
/// line per epoch. Written before each roll and after each truncation, so it always
/// covers the closed segments; the active segment's epochs come from its scan at open.
const EPOCHS_FILE: &str = "leader-epochs";

/// Each leader epoch in the log and the offset of its first batch, both increasing.
pub type EpochStarts = Vec<(LeaderEpoch, Offset)>;

/// How an append places its batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// Producer batches on a single node: offsets assigned at the log end.
    Assign,
    /// Producer batches on a partition leader: offsets assigned, the epoch stamped.
    Lead(LeaderEpoch),
    /// Batches copied from the partition leader, kept as they are (offsets, epochs,
    /// timestamps); the first starts at the log end and the rest follow on.
    Copy,
}

/// One batch of an append, checked.
#[derive(Clone, Copy, Debug)]
struct Checked {
    position: usize,
    len: usize,
    /// Offsets the batch covers (its last offset delta plus one).
    span: u64,
    max_timestamp: i64,
    base: Offset,
    epoch: Option<LeaderEpoch>,
}

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
}

/// Named fault-injection points, for tests of the failure paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// The next segment write (a zero-fill's included) fails with EIO, writing nothing.
    Write,
    /// The next fdatasync fails with EIO.
    Fsync,
    /// The next segment write (a zero-fill's included) stores its first half, in whole
    /// pages, and then fails with ENOSPC, as a write that fills the disk does.
    NoSpace,
    /// The log stops dead between the next zero-fill and the data write it precedes: the
    /// zeros are on disk, the data write never happens, and the log is poisoned. That
    /// leaves the files as a process killed at that moment would; tests reopen the
    /// directory as the next process would (and `log-writer` kills itself there).
    DieAfterZeroFill,
}

/// Faults armed by a test; each fires once.
#[derive(Default)]
pub struct FaultInjector {
    armed: RefCell<Vec<FaultPoint>>,
}

impl FaultInjector {
    pub fn arm(&self, point: FaultPoint) {
        self.armed.borrow_mut().push(point);
    }

    /// Whether `point` was armed (it is disarmed now).
    fn take(&self, point: FaultPoint) -> bool {
        let mut armed = self.armed.borrow_mut();
        let i = armed.iter().position(|p| *p == point);
        i.map(|i| armed.remove(i)).is_some()
    }

    /// An error naming `point` if it was armed.
    fn fire(&self, point: FaultPoint) -> std::io::Result<()> {
        if self.take(point) {
            return Err(std::io::Error::other(format!("injected fault at {point:?}")));
        }
        Ok(())
    }
}

/// An append waiting for its write.
struct Waiter {
    base_offset: Offset,
    last_offset: Offset,
    log_append_time_ms: Option<i64>,
    reply: OneshotSender<Result<AppendInfo, StorageError>>,
}

/// The write buffer being filled for the active segment.
struct Pending {
    segment_base: Offset,
    buf: AlignedBuf,
    /// Aligned file position of `buf[0]`.
    file_position: u64,
    /// Bytes of data in `buf`, from its start.
    len: usize,
    /// Where the batches new to this buffer start (after the copied partial page).
    batches_start: usize,
    first_offset: Offset,
    next_offset: Offset,
    waiters: Vec<Waiter>,
}

/// The data in the active segment's last, partial page: as of the end of all sealed
/// buffers (the next buffer starts with it), or as of the last completed write (what no
/// later write may change).
#[derive(Clone, Debug, Default)]
struct TailPage {
    position: u64,
    bytes: Vec<u8>,
}

impl TailPage {
    /// Where the data ends.
    fn end(&self) -> u64 {
        self.position + self.bytes.len() as u64
    }
}

enum Job {
    Write(Pending),
    /// Start segment `base`, after writing the epoch cache (as of the roll).
    Roll {
        base: Offset,
        epochs: EpochStarts,
    },
    Truncate {
        to: Offset,
        reply: OneshotSender<Result<Offset, StorageError>>,
    },
    AdvanceStart {
        to: Offset,
        reply: OneshotSender<Result<usize, StorageError>>,
    },
    /// Put a compacted copy (`<base>.cleaned`) in place of segment `base`, if it still
    /// has `size` bytes (nothing truncated or deleted it meanwhile).
    SwapSegment {
        base: Offset,
        size: u64,
        reply: OneshotSender<Result<bool, StorageError>>,
    },
    Sync {
        reply: OneshotSender<Result<(), StorageError>>,
    },
    Close {
        reply: OneshotSender<Result<(), StorageError>>,
    },
}

impl Job {
    fn is_exclusive(&self) -> bool {
        matches!(self, Job::Truncate { .. } | Job::AdvanceStart { .. } | Job::SwapSegment { .. } | Job::Close { .. })
    }
}

struct State {
    segments: Vec<Segment>,
    log_start: Offset,
    /// The offset the next appended record gets.
    next_offset: Offset,
    /// Everything below is written; readers stop here.
    visible_end: Offset,
    pending: Option<Pending>,
    tail: TailPage,
    /// The active segment file's last written page, as of the last completed write: the
    /// bytes there are acknowledged (or about to be), and no write may change them.
    written: TailPage,
    jobs: VecDeque<Job>,
    unflushed_bytes: u64,
    /// Exclusive jobs queued or running: appends wait until they are done.
    exclusive_jobs: u32,
    /// Appends waiting for room, first come first served: one that fits never passes
    /// one that waits (a producer's pipelined batches keep their order).
    append_queue: VecDeque<u64>,
    next_append_ticket: u64,
    poisoned: Option<String>,
    closed: bool,
    dropped: bool,
    cache: BatchCache,
    last_sync: Instant,
    unsynced: bool,
    /// Size of the latest write, to size the next buffer near it.
    last_write_bytes: u64,
    /// The recent write size (an exponential moving average, 1/8 per write): whether
    /// this log's writes are small enough to zero-fill ahead of.
    write_bytes_average: u64,
    /// Closed segments below this offset were compacted (what came after is "dirty").
    clean_offset: Offset,
    /// The leader-epoch cache, including batches not yet written.
    epochs: EpochStarts,
    stats: LogStats,
}

struct Shared {
    dir: PathBuf,
    config: LogConfig,
    state: RefCell<State>,
    /// Wakes the flusher: there is data or a job.
    work: WaitQueue,
    /// Wakes appends waiting for buffer room or for an exclusive job to end.
    room: WaitQueue,
    /// Wakes readers waiting for new data (long-polling fetches).
    appended: WaitQueue,
    faults: FaultInjector,
}

/// A durable partition log. See the module documentation for its guarantees.
pub struct PartitionLog {
    shared: Rc<Shared>,
}

impl State {
    fn active(&self) -> &Segment {
        match self.segments.last() {
            Some(s) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    fn active_mut(&mut self) -> &mut Segment {
        match self.segments.last_mut() {
            Some(s) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    fn segment_mut(&mut self, base: Offset) -> Option<&mut Segment> {
        self.segments.iter_mut().find(|s| s.base == base)
    }

    fn check_writable(&self, dir: &Path) -> Result<(), StorageError> {
        if self.closed || self.dropped {
            return Err(StorageError::Closed { dir: dir.to_path_buf() });
        }
        if let Some(cause) = &self.poisoned {
            return Err(StorageError::Poisoned { dir: dir.to_path_buf(), cause: cause.clone() });
        }
        Ok(())
    }

    /// Hands the pending buffer to the job queue (if it holds new data) and remembers its
    /// partial last page for the next buffer.
    fn seal_pending(&mut self) {
        let Some(p) = self.pending.take() else { return };
        if p.len == p.batches_start {
            assert!(p.waiters.is_empty());
            return;
        }
        let end = p.file_position + p.len as u64;
        let page = align_down(end);
        let from = (page - p.file_position) as usize;
        self.tail = TailPage { position: page, bytes: p.buf.as_slice()[from..p.len].to_vec() };
        self.jobs.push_back(Job::Write(p));
    }

    fn roll(&mut self, config: &LogConfig, now_ms: i64) {
        self.seal_pending();
        let base = self.next_offset;
        self.jobs.push_back(Job::Roll { base, epochs: self.epochs.clone() });
        self.segments.push(Segment {
            base,
            next_offset: base,
            size_bytes: 0,
            written_bytes: 0,
            index: SegmentIndex::new(base, config.index_interval_bytes),
            file: None,
            created_ms: now_ms,
            preallocated_bytes: 0,
        });
        self.tail = TailPage { position: 0, bytes: Vec::new() };
        self.stats.rolls += 1;
    }

    /// Makes sure the pending buffer has room for `len` more bytes.
    fn ensure_room(&mut self, config: &LogConfig, len: usize) {
        if let Some(p) = &self.pending {
            if p.len + len <= p.buf.capacity() {
                return;
            }
            self.seal_pending();
        }
        let needed = self.tail.bytes.len() + len;
        // Size the buffer near the recent writes: big under load (fewer, larger writes),
        // small for a trickle (the cache keeps these buffers).
        let capacity = (self.last_write_bytes * 2).max(64 << 10).min(config.write_buffer_bytes) as usize;
        let mut buf = AlignedBuf::with_capacity(capacity.max(needed));
        buf.as_mut_slice()[..self.tail.bytes.len()].copy_from_slice(&self.tail.bytes);
        let segment_base = self.active().base;
        assert_eq!(self.tail.position, align_down(self.active().size_bytes));
        self.pending = Some(Pending {
            segment_base,
            buf,
            file_position: self.tail.position,
            len: self.tail.bytes.len(),
            batches_start: self.tail.bytes.len(),
            first_offset: self.next_offset,
            next_offset: self.next_offset,
            waiters: Vec::new(),
        });
    }

    fn next_job(&mut self) -> Option<Job> {
        if self.jobs.is_empty() {
            self.seal_pending();
        }
        self.jobs.pop_front()
    }

    /// Fails every waiting append and job: the log is poisoned or closed.
    fn fail_everything(&mut self, dir: &Path) {
        let cause = self.poisoned.clone();
        let error = || match &cause {
            Some(cause) => StorageError::Poisoned { dir: dir.to_path_buf(), cause: cause.clone() },
            None => StorageError::Closed { dir: dir.to_path_buf() },
        };
        self.seal_pending();
        for job in std::mem::take(&mut self.jobs) {
            match job {
                Job::Write(p) => {
                    for w in p.waiters {
                        w.reply.send(Err(error()));
                    }
                }
                Job::Roll { .. } => {}
                Job::Truncate { reply, .. } => reply.send(Err(error())),
                Job::AdvanceStart { reply, .. } => reply.send(Err(error())),
                Job::SwapSegment { reply, .. } => reply.send(Err(error())),
                Job::Sync { reply } => reply.send(Err(error())),
                Job::Close { reply } => reply.send(Err(error())),
            }
        }
    }
}

/// An append's place in the queue for room; leaving the queue (served, failed or
/// cancelled) lets the next one through.
struct AppendTicket<'a> {
    shared: &'a Shared,
    id: u64,
    queued: bool,
}

impl Drop for AppendTicket<'_> {
    fn drop(&mut self) {
        if self.queued {
            self.shared.state.borrow_mut().append_queue.retain(|id| *id != self.id);
            self.shared.room.notify_all();
        }
    }
}

impl PartitionLog {
    /// Opens the log in `dir` (created if missing), recovering it as described in the
    /// module documentation, and starts its flusher on the current shard.
    pub async fn open(dir: &Path, config: LogConfig) -> Result<(PartitionLog, RecoveryReport), StorageError> {
        config.validate().map_err(StorageError::Config)?;
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("creating log directory", dir, e))?;
        io::probe_device(dir).await.map_err(|e| StorageError::io("probing the device of", dir, e))?;
        let mut bases = Vec::new();
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
            });
        }
        for (i, &base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            let segment = recover_segment(dir, base, &config, is_active, now_ms, &mut report, &mut epochs).await?;
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
            write_bytes_average: 0,
            clean_offset: Offset(0),
            epochs,
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

    /// Resolves once records at or after `offset` are readable, or the log stops taking
    /// writes (closed or poisoned). Callers bound the wait with a timeout.
    pub async fn wait_for_data(&self, offset: Offset) {
        loop {
            let wait = self.shared.appended.wait();
            {
                let st = self.shared.state.borrow();
                if st.visible_end > offset || st.closed || st.dropped || st.poisoned.is_some() {
                    return;
                }
            }
            wait.await;
        }
    }

    /// The offset after the last acknowledged (written) record.
    #[must_use]
    pub fn log_end_offset(&self) -> Offset {
        self.shared.state.borrow().visible_end
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

    /// Appends one or more concatenated producer batches, assigning them consecutive
    /// offsets, and completes once they are written (and synced under `always`). A bad
    /// batch refuses the whole append, naming its byte position; nothing is stored then.
    pub async fn append(&self, batches: &[u8]) -> Result<AppendInfo, StorageError> {
        let checked = self.check_append(batches, true)?;
        self.wait_turn(batches.len() as u64).await?;
        let reply = self.enqueue(batches, &checked, Placement::Assign)?;
        self.finish(reply).await
    }

    /// `append` on a partition's leader. `decide` runs at the moment the batches get their
    /// offsets, with no other append or truncation in between: it is given the first
    /// offset and the number of offsets, and returns the leader epoch to stamp on every
    /// batch, or refuses the append (then nothing is stored). Replication uses it to keep
    /// its view of the log in step with the log.
    pub async fn append_as_leader<E>(
        &self,
        batches: &[u8],
        decide: impl FnOnce(Offset, u64) -> Result<LeaderEpoch, E>,
    ) -> Result<Result<AppendInfo, StorageError>, E> {
        let checked = match self.check_append(batches, true) {
            Ok(checked) => checked,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = self.wait_turn(batches.len() as u64).await {
            return Ok(Err(e));
        }
        let base = self.shared.state.borrow().next_offset;
        let epoch = decide(base, checked.iter().map(|c| c.span).sum())?;
        let reply = match self.enqueue(batches, &checked, Placement::Lead(epoch)) {
            Ok(reply) => reply,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.finish(reply).await)
    }

    /// Appends batches copied from the partition's leader as they are: offsets, leader
    /// epochs and timestamps kept. The first must start at the log end and each next one
    /// where the one before ends (`NotContiguous`), with epochs that never go back
    /// (`EpochGoesBack`); otherwise nothing is stored.
    pub async fn append_copied(&self, batches: &[u8]) -> Result<AppendInfo, StorageError> {
        let checked = self.check_append(batches, false)?;
        self.wait_turn(batches.len() as u64).await?;
        let reply = self.enqueue(batches, &checked, Placement::Copy)?;
        self.finish(reply).await
    }

    /// The leader-epoch cache: each epoch in the log (written or queued) with the offset
    /// of its first batch.
    #[must_use]
    pub fn epoch_starts(&self) -> EpochStarts {
        self.shared.state.borrow().epochs.clone()
    }

    fn check_append(&self, batches: &[u8], producer: bool) -> Result<Vec<Checked>, StorageError> {
        let limit = self.shared.config.batch_bytes_max;
        let mut checked = Vec::new();
        let mut position = 0;
        while position < batches.len() {
            let rest = &batches[position..];
            let batch = if producer { check_producer_batch(rest) } else { check_batch(rest) }
                .map_err(|source| StorageError::InvalidBatch { position, source })?;
            let len = batch.bytes().len();
            if len as u64 > limit {
                return Err(StorageError::BatchTooLarge { bytes: len as u64, limit });
            }
            let header = batch.header();
            checked.push(Checked {
                position,
                len,
                span: header.next_offset().records_since(header.base_offset()),
                max_timestamp: header.max_timestamp(),
                base: header.base_offset(),
                epoch: header.leader_epoch(),
            });
            position += len;
        }
        if checked.is_empty() {
            return Err(StorageError::EmptyAppend);
        }
        Ok(checked)
    }

    /// Waits until this append may take offsets: no exclusive job (truncation, ...) is
    /// queued, the unflushed bytes leave room, and every append that waited before it
    /// went first.
    async fn wait_turn(&self, total: u64) -> Result<(), StorageError> {
        let sh = &self.shared;
        let mut ticket: Option<AppendTicket<'_>> = None;
        loop {
            let wait = sh.room.wait();
            {
                let mut st = sh.state.borrow_mut();
                st.check_writable(&sh.dir)?;
                let room = st.unflushed_bytes == 0 || st.unflushed_bytes + total <= sh.config.unflushed_bytes_max;
                let first = match &ticket {
                    None => st.append_queue.is_empty(),
                    Some(t) => st.append_queue.front() == Some(&t.id),
                };
                if st.exclusive_jobs == 0 && room && first {
                    if let Some(t) = ticket.as_mut() {
                        st.append_queue.pop_front();
                        t.queued = false;
                    }
                    break;
                }
                if ticket.is_none() {
                    let id = st.next_append_ticket;
                    st.next_append_ticket += 1;
                    st.append_queue.push_back(id);
                    ticket = Some(AppendTicket { shared: sh, id, queued: true });
                }
            }
            wait.await;
        }
        if ticket.is_some() {
            // The next in line may fit too.
            sh.room.notify_all();
        }
        Ok(())
    }

    /// Gives the batches their offsets and copies them into the write buffer, all at once
    /// (no await): returns what their write will answer.
    fn enqueue(
        &self,
        batches: &[u8],
        checked: &[Checked],
        placement: Placement,
    ) -> Result<Oneshot<Result<AppendInfo, StorageError>>, StorageError> {
        let sh = &self.shared;
        let mut st = sh.state.borrow_mut();
        st.check_writable(&sh.dir)?;
        let mut expected = st.next_offset;
        let mut epoch_floor = st.epochs.last().map(|e| e.0);
        for c in checked {
            let epoch = match placement {
                Placement::Assign => None,
                Placement::Lead(epoch) => Some(epoch),
                Placement::Copy => {
                    if c.base != expected {
                        return Err(StorageError::NotContiguous { expected, got: c.base });
                    }
                    c.epoch
                }
            };
            if let (Some(epoch), Some(floor)) = (epoch, epoch_floor) {
                if epoch < floor {
                    return Err(StorageError::EpochGoesBack { offset: expected, epoch, latest: floor });
                }
            }
            epoch_floor = epoch.or(epoch_floor);
            expected = expected.plus(c.span);
        }
        let now_ms = sh.config.clock.now_ms();
        let log_append_time = sh.config.timestamp_type == TimestampType::LogAppendTime && placement != Placement::Copy;
        let base_offset = st.next_offset;
        for c in checked {
            let len = c.len;
            let active = st.active();
            let age_ms = now_ms.saturating_sub(active.created_ms);
            let relative_end = st.next_offset.plus(c.span).records_since(active.base);
            if !active.is_empty()
                && (active.size_bytes + len as u64 > sh.config.segment_bytes
                    || age_ms >= sh.config.segment_ms as i64
                    || relative_end > u64::from(u32::MAX))
            {
                st.roll(&sh.config, now_ms);
            }
            st.ensure_room(&sh.config, len);
            let offset = st.next_offset;
            let Some(p) = st.pending.as_mut() else { unreachable!("ensure_room made a buffer") };
            let dst = &mut p.buf.as_mut_slice()[p.len..p.len + len];
            dst.copy_from_slice(&batches[c.position..c.position + len]);
            set_base_offset(dst, offset);
            let epoch = match placement {
                Placement::Assign => None,
                Placement::Lead(epoch) => {
                    set_leader_epoch(dst, epoch);
                    Some(epoch)
                }
                Placement::Copy => c.epoch,
            };
            let max_timestamp = if log_append_time {
                stamp_log_append_time(dst, now_ms);
                now_ms
            } else {
                c.max_timestamp
            };
            p.len += len;
            p.next_offset = offset.plus(c.span);
            let segment = st.active_mut();
            let file_position = segment.size_bytes;
            segment.index.on_batch(offset, file_position, len as u64, max_timestamp);
            segment.size_bytes += len as u64;
            segment.next_offset = offset.plus(c.span);
            st.next_offset = offset.plus(c.span);
            st.unflushed_bytes += len as u64;
            st.stats.batches_appended += 1;
            st.stats.bytes_appended += len as u64;
            if let Some(epoch) = epoch {
                if st.epochs.last().is_none_or(|e| e.0 < epoch) {
                    st.epochs.push((epoch, offset));
                }
            }
        }
        st.stats.appends += 1;
        let (tx, rx) = Oneshot::channel();
        let last_offset = Offset(st.next_offset.0 - 1);
        let Some(p) = st.pending.as_mut() else { unreachable!("the append filled a buffer") };
        let log_append_time_ms = log_append_time.then_some(now_ms);
        p.waiters.push(Waiter { base_offset, last_offset, log_append_time_ms, reply: tx });
        drop(st);
        sh.work.notify_all();
        Ok(rx)
    }

    async fn finish(&self, reply: Oneshot<Result<AppendInfo, StorageError>>) -> Result<AppendInfo, StorageError> {
        match reply.await {
            Some(result) => result,
            None => Err(StorageError::Closed { dir: self.shared.dir.clone() }),
        }
    }

    /// Reads whole batches from the one holding `from`, up to `max_bytes` (but at least
    /// one batch, however large), all from one segment. At the log end the result is
    /// empty; below the log start or past the end it is `OffsetOutOfRange`. Batches read
    /// from disk have their CRC checked: a mismatch is `Corrupt`, naming the segment.
    pub async fn read(&self, from: Offset, max_bytes: u64) -> Result<Fetched, StorageError> {
        let (log_start, log_end, mut segment_index) = {
            let mut st = self.shared.state.borrow_mut();
            let (log_start, log_end) = (st.log_start, st.visible_end);
            if from < log_start || from > log_end {
                return Err(StorageError::OffsetOutOfRange { requested: from, log_start, log_end });
            }
            if from == log_end {
                return Ok(Fetched::empty(from, log_start, log_end));
            }
            if let Some(hit) = st.cache.read(from, max_bytes) {
                st.stats.reads_from_cache += 1;
                return Ok(Fetched {
                    chunks: hit.chunks,
                    first_offset: hit.first_offset,
                    next_offset: hit.next_offset,
                    log_start,
                    log_end,
                    from_cache: true,
                });
            }
            st.stats.reads_from_disk += 1;
            let i = st.segments.partition_point(|s| s.base <= from).saturating_sub(1);
            (log_start, log_end, i)
        };
        let start_offset = from;
        loop {
            let Some((file, base, start, end)) = self.read_window(segment_index, start_offset) else {
                break;
            };
            let mut chunks: Vec<IoBytes> = Vec::new();
            let mut taken = 0u64;
            let mut first = None;
            let mut next_offset = start_offset;
            let mut crc_error = None;
            let walked = walk_batches(&file, start, end, false, |position, header, batch| {
                if header.next_offset() <= start_offset {
                    return Step::Continue;
                }
                if first.is_some() && taken + batch.len() as u64 > max_bytes {
                    return Step::Stop;
                }
                if let Err(e) = check_batch(batch) {
                    crc_error = Some((position, header.base_offset(), e.to_string()));
                    return Step::Stop;
                }
                first.get_or_insert(header.base_offset());
                next_offset = header.next_offset();
                taken += batch.len() as u64;
                let extended = chunks.last_mut().is_some_and(|last| last.try_extend(batch));
                if !extended {
                    chunks.push(batch.clone());
                }
                Step::Continue
            })
            .await
            .map_err(|e| StorageError::io("reading", file.path(), e))?;
            let path = segment_path(&self.shared.dir, base, LOG_SUFFIX);
            if let Some((position, offset, reason)) = crc_error {
                return Err(StorageError::Corrupt { segment: path, offset, position, reason });
            }
            if let WalkEnd { position, invalid: Some(reason) } = walked {
                if first.is_none() {
                    return Err(StorageError::Corrupt { segment: path, offset: next_offset, position, reason });
                }
            }
            if let Some(first_offset) = first {
                return Ok(Fetched { chunks, first_offset, next_offset, log_start, log_end, from_cache: false });
            }
            // `from` lies in a gap after this segment's last batch: go on to the next one.
            segment_index += 1;
        }
        Ok(Fetched {
            chunks: Vec::new(),
            first_offset: from,
            next_offset: log_end,
            log_start,
            log_end,
            from_cache: false,
        })
    }

    /// The file and byte range to walk in segment `i` to find `from`, or `None` past the
    /// last segment.
    fn read_window(&self, i: usize, from: Offset) -> Option<(Rc<File>, Offset, u64, u64)> {
        let st = self.shared.state.borrow();
        let segment = st.segments.get(i)?;
        let file = segment.file.clone()?;
        let start = segment.index.position_for_offset(from);
        Some((file, segment.base, start, segment.written_bytes))
    }

    /// The base offset of the first written batch holding a record with a timestamp at
    /// or after `timestamp` (batch max-timestamps decide), or `None` if there is none.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<Offset>, StorageError> {
        let candidates: Vec<(Rc<File>, u64, u64)> = {
            let st = self.shared.state.borrow();
            st.segments
                .iter()
                .filter(|s| s.index.max_timestamp() >= timestamp)
                .filter_map(|s| Some((s.file.clone()?, s.index.position_for_timestamp(timestamp), s.written_bytes)))
                .collect()
        };
        let log_start = self.log_start_offset();
        for (file, start, end) in candidates {
            let mut found = None;
            walk_batches(&file, start, end, false, |_, header, _| {
                if header.max_timestamp() >= timestamp && header.next_offset() > log_start {
                    found = Some(header.base_offset().max(log_start));
                    return Step::Stop;
                }
                Step::Continue
            })
            .await
            .map_err(|e| StorageError::io("reading", file.path(), e))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    async fn exclusive<T>(
        &self,
        make: impl FnOnce(OneshotSender<Result<T, StorageError>>) -> Job,
    ) -> Result<T, StorageError> {
        let sh = &self.shared;
        let reply = {
            let mut st = sh.state.borrow_mut();
            st.check_writable(&sh.dir)?;
            st.exclusive_jobs += 1;
            st.seal_pending();
            let (tx, rx) = Oneshot::channel();
            st.jobs.push_back(make(tx));
            rx
        };
        sh.work.notify_all();
        match reply.await {
            Some(result) => result,
            None => Err(StorageError::Closed { dir: sh.dir.clone() }),
        }
    }

    /// Removes every batch from the one holding `offset` on (replication uses this to
    /// cut a divergent tail). Returns the new log end: `offset`, or the base of the batch
    /// that held it.
    pub async fn truncate_to(&self, offset: Offset) -> Result<Offset, StorageError> {
        self.exclusive(|reply| Job::Truncate { to: offset, reply }).await
    }

    /// Moves the log start offset forward to `offset` (retention, DeleteRecords) and
    /// deletes the closed segments wholly below it. Returns how many were deleted.
    pub async fn advance_log_start(&self, offset: Offset) -> Result<usize, StorageError> {
        self.exclusive(|reply| Job::AdvanceStart { to: offset, reply }).await
    }

    /// Deletes the oldest closed segments that retention allows: those whose newest
    /// record is older than `retention_ms`, and those that keep the log above
    /// `retention_bytes`. The active segment is never deleted, and appends go on while
    /// this runs. Returns how many segments were deleted.
    pub async fn apply_retention(&self) -> Result<usize, StorageError> {
        let config = &self.shared.config;
        if !config.cleanup_delete || (config.retention_ms.is_none() && config.retention_bytes.is_none()) {
            return Ok(0);
        }
        let segments = self.segments();
        let Some((_, closed)) = segments.split_last() else { return Ok(0) };
        let now_ms = config.clock.now_ms();
        let mut total: u64 = segments.iter().map(|s| s.size_bytes).sum();
        let mut new_start = None;
        for s in closed {
            let expired = config.retention_ms.is_some_and(|ms| s.max_timestamp < now_ms.saturating_sub(ms as i64));
            let oversize = config.retention_bytes.is_some_and(|limit| total > limit);
            if !(expired || oversize) {
                break;
            }
            total -= s.size_bytes;
            new_start = Some(s.next_offset);
        }
        match new_start {
            Some(offset) if offset > self.log_start_offset() => {
                let deleted = self.advance_log_start(offset).await?;
                info!(dir = %self.shared.dir.display(), log_start = %offset, deleted, "retention deleted segments");
                Ok(deleted)
            }
            _ => Ok(0),
        }
    }

    /// Compacts the closed segments (Kafka's log cleaner): within them only the latest
    /// record of each key stays (at its own offset: offsets never change, gaps appear),
    /// and tombstones (null values) go once their batch is older than
    /// `delete_retention_ms`. Segments newer than `min_lag_ms` and the active segment are
    /// left alone; control batches are kept whole. Each rewritten segment is written to
    /// `<base>.cleaned` and renamed over the original (atomic), so a crash at any point
    /// leaves either the old or the new segment, never a mix. `bytes_per_s` throttles
    /// the cleaner's reads so appends keep their throughput.
    pub async fn compact(
        &self,
        min_lag_ms: u64,
        delete_retention_ms: u64,
        bytes_per_s: u64,
    ) -> Result<CompactionReport, StorageError> {
        crate::compact::compact(self, min_lag_ms, delete_retention_ms, bytes_per_s).await
    }

    /// Closed segments below this offset were compacted.
    pub(crate) fn clean_offset(&self) -> Offset {
        self.shared.state.borrow().clean_offset
    }

    pub(crate) fn set_clean_offset(&self, offset: Offset) {
        self.shared.state.borrow_mut().clean_offset = offset;
    }

    pub(crate) async fn swap_segment(&self, base: Offset, size: u64) -> Result<bool, StorageError> {
        self.exclusive(|reply| Job::SwapSegment { base, size, reply }).await
    }

    /// The files of the closed segments and their sizes, oldest first.
    pub(crate) fn closed_segment_files(&self) -> Vec<(Offset, Rc<File>, u64, i64)> {
        let st = self.shared.state.borrow();
        let Some((_, closed)) = st.segments.split_last() else { return Vec::new() };
        closed.iter().filter_map(|s| Some((s.base, s.file.clone()?, s.size_bytes, s.index.max_timestamp()))).collect()
    }

    /// fdatasyncs everything written so far.
    pub async fn sync(&self) -> Result<(), StorageError> {
        let sh = &self.shared;
        let reply = {
            let mut st = sh.state.borrow_mut();
            st.check_writable(&sh.dir)?;
            st.seal_pending();
            let (tx, rx) = Oneshot::channel();
            st.jobs.push_back(Job::Sync { reply: tx });
            rx
        };
        sh.work.notify_all();
        match reply.await {
            Some(result) => result,
            None => Err(StorageError::Closed { dir: sh.dir.clone() }),
        }
    }

    /// Writes and syncs everything appended, trims the active segment's preallocated
    /// space and stops the flusher. A poisoned log closes without syncing.
    pub async fn close(self) -> Result<(), StorageError> {
        let poisoned = self.shared.state.borrow().poisoned.is_some();
        if poisoned {
            let mut st = self.shared.state.borrow_mut();
            st.closed = true;
            st.fail_everything(&self.shared.dir);
            drop(st);
            self.shared.work.notify_all();
            return Ok(());
        }
        self.exclusive(|reply| Job::Close { reply }).await
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // Without close(): the flusher finishes the queued writes, then exits.
        self.shared.state.borrow_mut().dropped = true;
        self.shared.work.notify_all();
        self.shared.room.notify_all();
    }
}

/// The flusher task: runs jobs in order until the log closes.
async fn flusher(sh: Rc<Shared>) {
    loop {
        let wait = sh.work.wait();
        let job = sh.state.borrow_mut().next_job();
        match job {
            Some(job) => {
                let exclusive = job.is_exclusive();
                let stop = run_job(&sh, job).await;
                if exclusive {
                    sh.state.borrow_mut().exclusive_jobs -= 1;
                }
                sh.room.notify_all();
                if stop {
                    break;
                }
            }
            None => {
                let (dropped, sync_in) = {
                    let st = sh.state.borrow();
                    let sync_in = match sh.config.fsync {
                        FsyncPolicy::IntervalMs(ms) if st.unsynced && st.poisoned.is_none() => {
                            Some(Duration::from_millis(ms).saturating_sub(st.last_sync.elapsed()))
                        }
                        _ => None,
                    };
                    (st.dropped || st.closed, sync_in)
                };
                if dropped {
                    break;
                }
                match sync_in {
                    Some(d) if d.is_zero() => {
                        let _ = sync_active(&sh).await;
                    }
                    Some(d) => {
                        let _ = io::timeout(d, wait).await;
                    }
                    None => wait.await,
                }
            }
        }
    }
    let mut st = sh.state.borrow_mut();
    st.closed = true;
    st.fail_everything(&sh.dir);
    drop(st);
    sh.room.notify_all();
    sh.appended.notify_all();
    debug!(dir = %sh.dir.display(), "flusher stopped");
}

fn poison(sh: &Shared, what: String) -> StorageError {
    warn!(dir = %sh.dir.display(), "{what}; the log refuses writes until it is reopened");
    let mut st = sh.state.borrow_mut();
    st.poisoned = Some(what.clone());
    st.fail_everything(&sh.dir);
    drop(st);
    sh.room.notify_all();
    sh.appended.notify_all();
    StorageError::Poisoned { dir: sh.dir.clone(), cause: what }
}

/// Runs one job; returns true when the flusher should stop.
async fn run_job(sh: &Rc<Shared>, job: Job) -> bool {
    match job {
        Job::Write(p) => write_pending(sh, p).await,
        Job::Roll { base, epochs } => match roll_files(sh, base, &epochs).await {
            Ok(()) => sh.state.borrow_mut().written = TailPage::default(),
            Err(e) => {
                poison(sh, e.to_string());
            }
        },
        Job::Truncate { to, reply } => reply.send(truncate(sh, to).await),
        Job::AdvanceStart { to, reply } => reply.send(advance_start(sh, to).await),
        Job::SwapSegment { base, size, reply } => reply.send(swap_segment(sh, base, size).await),
        Job::Sync { reply } => reply.send(sync_active(sh).await),
        Job::Close { reply } => {
            reply.send(close_files(sh).await);
            return true;
        }
    }
    false
}

async fn write_pending(sh: &Rc<Shared>, p: Pending) {
    let Pending { segment_base, mut buf, file_position, len, batches_start, first_offset, next_offset, waiters } = p;
    let write_len = align_up(len as u64) as usize;
    buf.as_mut_slice()[len..write_len].fill(0);
    let buf = buf.freeze(write_len);
    let (file, preallocated, written_bytes, written, write_bytes_average) = {
        let mut st = sh.state.borrow_mut();
        let average = st.write_bytes_average;
        let written = st.written.clone();
        let Some(segment) = st.segment_mut(segment_base) else {
            unreachable!("segment {segment_base} vanished with writes queued")
        };
        (segment.file.clone(), segment.preallocated_bytes, segment.written_bytes, written, average)
    };
    let Some(file) = file else { unreachable!("segment {segment_base} written before its file was created") };
    let always = sh.config.fsync == FsyncPolicy::Always;
    let path = file.path().display();
    let result: Result<u64, String> = async {
        if written.end() != written_bytes {
            return Err(format!(
                "refusing to write {path}: its written data ends at byte {written_bytes} but the last written page \
                 kept ends at {}",
                written.end()
            ));
        }
        let end = file_position + write_len as u64;
        let mut preallocated_now = preallocated;
        // A log whose writes are small zero-fills the space ahead of them first (in the
        // same task, so the zeros never land on data); one whose writes are large
        // extends the file as it goes. The zeros start past the written data's last page
        // (which holds acknowledged bytes) and past what was zero-filled before: after
        // large writes the zero-filled end lags behind the data.
        let small = write_bytes_average <= sh.config.zero_fill_write_bytes_max;
        if sh.config.preallocate_bytes > 0 && small && end > preallocated {
            let from = align_up(preallocated.max(written_bytes));
            let target = align_up((from + sh.config.preallocate_bytes).max(end));
            zero_fill(sh, &file, from, target, &written)
                .await
                .map_err(|e| format!("zero-filling {path} from byte {from} to {target} failed: {e}"))?;
            preallocated_now = target;
            sh.faults.fire(FaultPoint::DieAfterZeroFill).map_err(|e| e.to_string())?;
        }
        let written = async {
            write_segment(sh, &file, &buf, file_position, &written).await?;
            if always {
                sh.faults.fire(FaultPoint::Fsync)?;
                file.fdatasync().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        written.await.map_err(|e| format!("writing {path} at byte {file_position} failed: {e}"))?;
        // The file holds written bytes up to `end` now, zeros or data.
        Ok(preallocated_now.max(end))
    }
    .await;
    let preallocated_now = match result {
        Ok(p) => p,
        Err(what) => {
            poison(sh, what.clone());
            for w in waiters {
                w.reply.send(Err(StorageError::Poisoned { dir: sh.dir.clone(), cause: what.clone() }));
            }
            return;
        }
    };
    let mut durability = if always { Durability::Synced } else { Durability::Written };
    {
        let mut st = sh.state.borrow_mut();
        let Some(segment) = st.segment_mut(segment_base) else { unreachable!("segment vanished during a write") };
        segment.preallocated_bytes = preallocated_now;
        segment.written_bytes = file_position + len as u64;
        assert!(segment.written_bytes <= segment.size_bytes);
        let page = align_down(file_position + len as u64);
        let from = (page - file_position) as usize;
        st.written = TailPage { position: page, bytes: buf.as_slice()[from..len].to_vec() };
        assert!(next_offset > st.visible_end, "writes complete in offset order");
        st.visible_end = next_offset;
        st.unflushed_bytes -= (len - batches_start) as u64;
        st.last_write_bytes = write_len as u64;
        st.write_bytes_average = st.write_bytes_average - st.write_bytes_average / 8 + write_len as u64 / 8;
        st.cache.insert(segment_base, first_offset, next_offset, buf, batches_start..len);
        st.stats.writes += 1;
        st.stats.bytes_written += write_len as u64;
        if always {
            st.stats.fsyncs += 1;
            st.last_sync = Instant::now();
        } else {
            st.unsynced = true;
        }
    }
    if let FsyncPolicy::IntervalMs(ms) = sh.config.fsync {
        let due = sh.state.borrow().last_sync.elapsed() >= Duration::from_millis(ms);
        if due && sync_active(sh).await.is_ok() {
            durability = Durability::Synced;
        }
    }
    for w in waiters {
        w.reply.send(Ok(AppendInfo {
            base_offset: w.base_offset,
            last_offset: w.last_offset,
            durability,
            log_append_time_ms: w.log_append_time_ms,
        }));
    }
    sh.room.notify_all();
    sh.appended.notify_all();
}

/// Every write to a segment file goes through here, zero-fills included: it refuses a
/// write that would change a written byte (`keeps_written_bytes`) and meets the armed
/// write faults.
async fn write_segment(
    sh: &Shared,
    file: &File,
    buf: &SharedBuf,
    position: u64,
    written: &TailPage,
) -> std::io::Result<()> {
    keeps_written_bytes(written, position, buf.as_slice()).map_err(std::io::Error::other)?;
    sh.faults.fire(FaultPoint::Write)?;
    if sh.faults.take(FaultPoint::NoSpace) {
        let half = align_down(buf.len() as u64 / 2) as usize;
        if half > 0 {
            file.write_at(&buf.prefix(half), position).await?;
        }
        return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    file.write_at(buf, position).await
}

/// Writes zeros over `from..to` (aligned), so that later writes there overwrite written
/// extents: no extent conversion, no size change, no metadata to sync.
async fn zero_fill(sh: &Shared, file: &File, from: u64, to: u64, written: &TailPage) -> std::io::Result<()> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let mut position = from;
    while position < to {
        let zeros = SharedBuf::zeros((to - position).min(CHUNK_BYTES) as usize);
        write_segment(sh, file, &zeros, position, written).await?;
        position += zeros.len() as u64;
    }
    Ok(())
}

/// **No write ever changes an acknowledged byte.** A write whose bytes start with `first`
/// at `position` may start at or past the end of the written data (`written` is its last
/// page), or at that last page carrying the written bytes unchanged; nothing else. Pages
/// before the last one are never written again, and no zero-fill or retry starts inside
/// written data. A refusal names the bytes the write would have changed.
fn keeps_written_bytes(written: &TailPage, position: u64, first: &[u8]) -> Result<(), String> {
    let end = written.end();
    if position >= end {
        return Ok(());
    }
    let kept = written.bytes.len();
    if position == written.position && first.len() >= kept && first[..kept] == written.bytes[..] {
        return Ok(());
    }
    let changed = first.iter().zip(&written.bytes).position(|(a, b)| a != b);
    Err(format!(
        "refusing a write of {} bytes at byte {position}: written data ends at byte {end} and the write would \
         change it{}",
        first.len(),
        match (position == written.position, changed) {
            (true, Some(i)) => format!(" (first at byte {})", position + i as u64),
            _ => format!(" (its last page starts at byte {})", written.position),
        }
    ))
}

fn active_file(sh: &Shared) -> Option<Rc<File>> {
    sh.state.borrow().segments.iter().rev().find_map(|s| s.file.clone())
}

async fn sync_active(sh: &Shared) -> Result<(), StorageError> {
    let Some(file) = active_file(sh) else { return Ok(()) };
    let result = async {
        sh.faults.fire(FaultPoint::Fsync)?;
        file.fdatasync().await
    }
    .await;
    match result {
        Ok(()) => {
            let mut st = sh.state.borrow_mut();
            st.stats.fsyncs += 1;
            st.last_sync = Instant::now();
            st.unsynced = false;
            Ok(())
        }
        Err(e) => Err(poison(sh, format!("fdatasync of {} failed: {e}", file.path().display()))),
    }
}

/// Finishes the segment before `base` (trim, sync, index files) and creates `base`'s.
async fn roll_files(sh: &Shared, base: Offset, epochs: &[(LeaderEpoch, Offset)]) -> Result<(), StorageError> {
    if !epochs.is_empty() {
        write_epochs(&sh.dir, epochs).await?;
    }
    let previous = {
        let st = sh.state.borrow();
        let i = st.segments.iter().position(|s| s.base == base);
        let Some(i) = i else { unreachable!("rolled segment {base} missing") };
        i.checked_sub(1).map(|j| {
            let s = &st.segments[j];
            (s.base, s.file.clone(), s.size_bytes, s.preallocated_bytes, s.index.encode())
        })
    };
    if let Some((old_base, Some(file), size, preallocated, (offsets, times))) = previous {
        seal_segment_file(sh, &file, size, preallocated).await?;
        write_index_files(&sh.dir, old_base, &offsets, &times).await?;
        if let Some(s) = sh.state.borrow_mut().segment_mut(old_base) {
            s.preallocated_bytes = size;
        }
    }
    let path = segment_path(&sh.dir, base, LOG_SUFFIX);
    io::remove_file(&path).map_err(|e| StorageError::io("removing stale segment", &path, e))?;
    let file = File::create_new(&path).await.map_err(|e| StorageError::io("creating segment", &path, e))?;
    io::sync_dir(&sh.dir).await.map_err(|e| StorageError::io("syncing directory", &sh.dir, e))?;
    if let Some(s) = sh.state.borrow_mut().segment_mut(base) {
        s.file = Some(Rc::new(file));
    }
    Ok(())
}

/// Cuts a finished segment file to its data and syncs it (unless the policy is `never`):
/// once the next segment exists, this one must hold exactly its batches.
async fn seal_segment_file(sh: &Shared, file: &File, size: u64, preallocated: u64) -> Result<(), StorageError> {
    if preallocated != size {
        file.truncate(size).await.map_err(|e| StorageError::io("trimming segment", file.path(), e))?;
    }
    if sh.config.fsync != FsyncPolicy::Never {
        sh.faults.fire(FaultPoint::Fsync).map_err(|e| StorageError::io("syncing segment", file.path(), e))?;
        file.fdatasync().await.map_err(|e| StorageError::io("syncing segment", file.path(), e))?;
    }
    Ok(())
}

async fn write_index_files(dir: &Path, base: Offset, offsets: &[u8], times: &[u8]) -> Result<(), StorageError> {
    for (suffix, bytes) in [(INDEX_SUFFIX, offsets), (TIME_INDEX_SUFFIX, times)] {
        let path = segment_path(dir, base, suffix);
        io::write_file_atomically(&path, bytes).await.map_err(|e| StorageError::io("writing index", &path, e))?;
    }
    Ok(())
}

fn remove_segment_files(dir: &Path, base: Offset) -> Result<(), StorageError> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = segment_path(dir, base, suffix);
        io::remove_file(&path).map_err(|e| StorageError::io("removing", &path, e))?;
    }
    Ok(())
}

async fn truncate(sh: &Shared, to: Offset) -> Result<Offset, StorageError> {
    let (log_start, next_offset) = {
        let st = sh.state.borrow();
        st.check_writable(&sh.dir)?;
        (st.log_start, st.next_offset)
    };
    if to >= next_offset {
        return Ok(next_offset);
    }
    if to < log_start {
        return Err(StorageError::OffsetOutOfRange { requested: to, log_start, log_end: next_offset });
    }
    // Drop the segments wholly at or after `to` (keeping at least the first one).
    let removed: Vec<Offset> = {
        let mut st = sh.state.borrow_mut();
        let keep = st.segments.partition_point(|s| s.base <= to).max(1);
        let removed = st.segments.split_off(keep);
        st.cache.clear();
        removed.into_iter().map(|s| s.base).collect()
    };
    for base in &removed {
        remove_segment_files(&sh.dir, *base)?;
    }
    // Cut the last remaining segment at the batch holding `to`.
    let (file, base, start, end) = {
        let st = sh.state.borrow();
        let s = st.active();
        let Some(file) = s.file.clone() else { unreachable!("a kept segment has its file") };
        (file, s.base, s.index.position_for_offset(to), s.written_bytes)
    };
    let mut cut = None;
    walk_batches(&file, start, end, false, |position, header, _| {
        if header.next_offset() > to {
            cut = Some((position, header.base_offset()));
            return Step::Stop;
        }
        Step::Continue
    })
    .await
    .map_err(|e| StorageError::io("reading", file.path(), e))?;
    let (cut_position, new_end) = match cut {
        Some(c) => c,
        None => {
            let st = sh.state.borrow();
            (st.active().size_bytes, st.active().next_offset)
        }
    };
    file.truncate(cut_position).await.map_err(|e| StorageError::io("truncating", file.path(), e))?;
    // The segment is active again: its index lives in memory until it rolls.
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = segment_path(&sh.dir, base, suffix);
        io::remove_file(&path).map_err(|e| StorageError::io("removing", &path, e))?;
    }
    let rewalk_from = {
        let mut st = sh.state.borrow_mut();
        let s = st.active_mut();
        s.preallocated_bytes = cut_position;
        s.size_bytes = cut_position;
        s.written_bytes = cut_position;
        s.next_offset = new_end.max(s.base);
        s.index.truncate_at(cut_position)
    };
    let mut index = {
        let st = sh.state.borrow();
        st.active().index.clone()
    };
    walk_batches(&file, rewalk_from, cut_position, false, |position, header, batch| {
        index.on_batch(header.base_offset(), position, batch.len() as u64, header.max_timestamp());
        Step::Continue
    })
    .await
    .map_err(|e| StorageError::io("reading", file.path(), e))?;
    if sh.config.fsync == FsyncPolicy::Always {
        file.fdatasync().await.map_err(|e| StorageError::io("syncing", file.path(), e))?;
    }
    io::sync_dir(&sh.dir).await.map_err(|e| StorageError::io("syncing directory", &sh.dir, e))?;
    let tail = read_tail_page(Some(&file), cut_position)
        .await
        .map_err(|e| StorageError::io("reading the last page of", file.path(), e))?;
    let (end, start_fell_back) = {
        let mut st = sh.state.borrow_mut();
        st.active_mut().index = index;
        let end = st.active().next_offset;
        st.next_offset = end;
        st.visible_end = end;
        st.written = tail.clone();
        st.tail = tail;
        // A log start inside the batch that was cut falls back to the new end.
        let fell_back = st.log_start > end;
        st.log_start = st.log_start.min(end);
        st.epochs.retain(|(_, start)| *start < end);
        (end, fell_back)
    };
    let epochs = sh.state.borrow().epochs.clone();
    write_epochs(&sh.dir, &epochs).await?;
    if start_fell_back {
        // The checkpoint too, else a reopen would hide the next appends.
        write_log_start(&sh.dir, end).await?;
    }
    info!(dir = %sh.dir.display(), to = %to, log_end = %end, "log truncated");
    Ok(end)
}

async fn advance_start(sh: &Shared, to: Offset) -> Result<usize, StorageError> {
    let (log_start, log_end) = {
        let st = sh.state.borrow();
        st.check_writable(&sh.dir)?;
        (st.log_start, st.visible_end)
    };
    if to > log_end {
        return Err(StorageError::OffsetOutOfRange { requested: to, log_start, log_end });
    }
    if to <= log_start {
        return Ok(0);
    }
    write_log_start(&sh.dir, to).await?;
    let doomed: Vec<Offset> = {
        let mut st = sh.state.borrow_mut();
        st.log_start = to;
        let last = st.segments.len() - 1;
        let count = st.segments[..last].iter().take_while(|s| s.next_offset <= to).count();
        let doomed: Vec<Offset> = st.segments.drain(..count).map(|s| s.base).collect();
        let first_base = st.segments[0].base;
        st.cache.drop_segments_before(first_base);
        doomed
    };
    for base in &doomed {
        remove_segment_files(&sh.dir, *base)?;
    }
    if !doomed.is_empty() {
        io::sync_dir(&sh.dir).await.map_err(|e| StorageError::io("syncing directory", &sh.dir, e))?;
    }
    Ok(doomed.len())
}

/// Puts `<base>.cleaned` in place of segment `base` (see `PartitionLog::compact`).
/// Returns false (and removes the copy) when the segment changed since it was read.
async fn swap_segment(sh: &Shared, base: Offset, size: u64) -> Result<bool, StorageError> {
    let cleaned = segment_path(&sh.dir, base, "cleaned");
    let still_there = {
        let st = sh.state.borrow();
        let last = st.segments.len().saturating_sub(1);
        st.segments.iter().position(|s| s.base == base).is_some_and(|i| i < last && st.segments[i].size_bytes == size)
    };
    if !still_there {
        io::remove_file(&cleaned).map_err(|e| StorageError::io("removing", &cleaned, e))?;
        return Ok(false);
    }
    // Index files go first: a crash after the rename then finds none and rebuilds them,
    // rather than trusting positions of the old segment.
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = segment_path(&sh.dir, base, suffix);
        io::remove_file(&path).map_err(|e| StorageError::io("removing", &path, e))?;
    }
    let path = segment_path(&sh.dir, base, LOG_SUFFIX);
    std::fs::rename(&cleaned, &path).map_err(|e| StorageError::io("renaming a compacted segment to", &path, e))?;
    io::sync_dir(&sh.dir).await.map_err(|e| StorageError::io("syncing directory", &sh.dir, e))?;
    let file = File::open(&path, true).await.map_err(|e| StorageError::io("opening segment", &path, e))?;
    let new_size = file.size().await.map_err(|e| StorageError::io("sizing segment", &path, e))?;
    let scan = scan_segment(&file, base, SegmentIndex::new(base, sh.config.index_interval_bytes), 0, new_size, true)
        .await
        .map_err(|e| StorageError::io("scanning segment", &path, e))?;
    if let Some(reason) = scan.invalid {
        return Err(StorageError::Corrupt {
            segment: path,
            offset: scan.next_offset,
            position: scan.valid_end,
            reason,
        });
    }
    let (offsets, times) = scan.index.encode();
    write_index_files(&sh.dir, base, &offsets, &times).await?;
    let mut st = sh.state.borrow_mut();
    st.cache.drop_segment(base);
    if let Some(s) = st.segment_mut(base) {
        s.file = Some(Rc::new(file));
        s.size_bytes = new_size;
        s.written_bytes = new_size;
        s.preallocated_bytes = new_size;
        s.index = scan.index;
    }
    Ok(true)
}

async fn close_files(sh: &Shared) -> Result<(), StorageError> {
    let (file, size, preallocated) = {
        let st = sh.state.borrow();
        st.check_writable(&sh.dir)?;
        let s = st.active();
        (s.file.clone(), s.size_bytes, s.preallocated_bytes)
    };
    if let Some(file) = file {
        if preallocated != size {
            file.truncate(size).await.map_err(|e| StorageError::io("trimming segment", file.path(), e))?;
        }
        file.fdatasync().await.map_err(|e| StorageError::io("syncing segment", file.path(), e))?;
    }
    sh.state.borrow_mut().closed = true;
    info!(dir = %sh.dir.display(), "partition log closed");
    Ok(())
}

async fn read_tail_page(file: Option<&File>, size: u64) -> std::io::Result<TailPage> {
    let position = align_down(size);
    let len = (size - position) as usize;
    let bytes = match (file, len) {
        (Some(file), n) if n > 0 => file.read_at(position, n).await?.to_vec(),
        _ => Vec::new(),
    };
    if bytes.len() != len {
        return Err(std::io::Error::other(format!("last page read {} of {len} bytes", bytes.len())));
    }
    Ok(TailPage { position, bytes })
}

async fn read_log_start(dir: &Path) -> Result<Option<Offset>, StorageError> {
    let path = dir.join(LOG_START_FILE);
    let Some(bytes) = io::read_file(&path).await.map_err(|e| StorageError::io("reading", &path, e))? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    match text.trim().parse::<u64>() {
        Ok(v) => Ok(Some(Offset(v))),
        Err(_) => {
            warn!(path = %path.display(), content = %text.trim(), "ignoring an unreadable log start checkpoint");
            Ok(None)
        }
    }
}

async fn write_log_start(dir: &Path, offset: Offset) -> Result<(), StorageError> {
    let path = dir.join(LOG_START_FILE);
    io::write_file_atomically(&path, format!("{offset}\n").as_bytes())
        .await
        .map_err(|e| StorageError::io("writing", &path, e))
}

async fn read_epochs(dir: &Path) -> Result<EpochStarts, StorageError> {
    let path = dir.join(EPOCHS_FILE);
    let Some(bytes) = io::read_file(&path).await.map_err(|e| StorageError::io("reading", &path, e))? else {
        return Ok(Vec::new());
    };
    let mut epochs: EpochStarts = Vec::new();
    for line in String::from_utf8_lossy(&bytes).lines() {
        let mut fields = line.split_whitespace().map(str::parse::<u64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(epoch)), Some(Ok(start))) if epoch <= u64::from(u32::MAX) => {
                let entry = (LeaderEpoch(epoch as u32), Offset(start));
                if epochs.last().is_none_or(|last| last.0 < entry.0 && last.1 <= entry.1) {
                    epochs.push(entry);
                    continue;
                }
            }
            _ => {}
        }
        warn!(path = %path.display(), %line, "ignoring the rest of an unreadable leader-epoch file");
        break;
    }
    Ok(epochs)
}

async fn write_epochs(dir: &Path, epochs: &[(LeaderEpoch, Offset)]) -> Result<(), StorageError> {
    let path = dir.join(EPOCHS_FILE);
    let text: String = epochs.iter().map(|(epoch, start)| format!("{epoch} {start}\n")).collect();
    io::write_file_atomically(&path, text.as_bytes()).await.map_err(|e| StorageError::io("writing", &path, e))
}

/// Opens one segment at startup. The active (last) one is scanned whole with CRC checks;
/// a closed one loads its index files and walks only the batches from the last index
/// entry on; when the files are missing or disagree with the segment it is scanned
/// whole and the files rewritten. Bytes after the last good batch are cut (and reported
/// unless they are zeros: preallocated space never written).
async fn recover_segment(
    dir: &Path,
    base: Offset,
    config: &LogConfig,
    is_active: bool,
    now_ms: i64,
    report: &mut RecoveryReport,
    epochs: &mut EpochStarts,
) -> Result<Segment, StorageError> {
    let path = segment_path(dir, base, LOG_SUFFIX);
    let file = File::open(&path, true).await.map_err(|e| StorageError::io("opening segment", &path, e))?;
    let size = file.size().await.map_err(|e| StorageError::io("sizing segment", &path, e))?;
    let fresh = || SegmentIndex::new(base, config.index_interval_bytes);
    let mut rebuilt = false;
    let loaded = if is_active { None } else { load_index(dir, base, config, size).await };
    let mut scan = match loaded {
        Some(Ok(mut index)) => {
            let from = index.reset_tail();
            scan_segment(&file, base, index, from, size, false).await
        }
        Some(Err(reason)) => {
            warn!(segment = %path.display(), %reason, "rebuilding the segment's index");
            rebuilt = true;
            scan_segment(&file, base, fresh(), 0, size, true).await
        }
        None => scan_segment(&file, base, fresh(), 0, size, true).await,
    }
    .map_err(|e| StorageError::io("scanning segment", &path, e))?;
    if !is_active && !rebuilt && scan.invalid.is_some() {
        warn!(segment = %path.display(), "index disagrees with the segment; rebuilding it");
        rebuilt = true;
        scan = scan_segment(&file, base, fresh(), 0, size, true)
            .await
            .map_err(|e| StorageError::io("scanning segment", &path, e))?;
    }
    if let Some(reason) = scan.invalid.take() {
        if !is_zero_from(&file, scan.valid_end, size).await {
            warn!(segment = %path.display(), offset = %scan.next_offset, position = scan.valid_end,
                  bytes_cut = size - scan.valid_end, %reason, "cutting a torn or corrupt tail");
            report.truncations.push(Truncation {
                segment: path.clone(),
                offset: scan.next_offset,
                position: scan.valid_end,
                bytes_cut: size - scan.valid_end,
                reason,
            });
        }
    }
    for (epoch, start) in &scan.epochs {
        if epochs.last().is_none_or(|last| last.0 < *epoch) {
            epochs.push((*epoch, *start));
        }
    }
    if scan.valid_end < size {
        file.truncate(scan.valid_end).await.map_err(|e| StorageError::io("truncating segment", &path, e))?;
        file.fdatasync().await.map_err(|e| StorageError::io("syncing segment", &path, e))?;
    }
    if rebuilt {
        report.rebuilt_indexes.push(path.clone());
        let (o, t) = scan.index.encode();
        write_index_files(dir, base, &o, &t).await?;
    }
    // segment.ms counts from the first batch's time when it is believable.
    let created_ms = scan.first_timestamp.filter(|ts| *ts > 0 && *ts <= now_ms).unwrap_or(now_ms);
    Ok(Segment {
        base,
        next_offset: scan.next_offset,
        size_bytes: scan.valid_end,
        written_bytes: scan.valid_end,
        index: scan.index,
        file: Some(Rc::new(file)),
        created_ms,
        preallocated_bytes: scan.valid_end,
    })
}

/// A closed segment's index files, `None` for the active segment (it has none), or why
/// they cannot be used.
async fn load_index(dir: &Path, base: Offset, config: &LogConfig, size: u64) -> Option<Result<SegmentIndex, String>> {
    let offsets = io::read_file(&segment_path(dir, base, INDEX_SUFFIX)).await;
    let times = io::read_file(&segment_path(dir, base, TIME_INDEX_SUFFIX)).await;
    Some(match (offsets, times) {
        (Ok(Some(o)), Ok(Some(t))) => SegmentIndex::decode(base, config.index_interval_bytes, &o, &t, size.max(1)),
        (Ok(None), _) | (_, Ok(None)) => Err("index files missing".to_string()),
        (Err(e), _) | (_, Err(e)) => Err(format!("index files unreadable: {e}")),
    })
}

struct Scan {
    index: SegmentIndex,
    /// Each epoch change among the batches walked (valid ones only), with its offset.
    epochs: EpochStarts,
    next_offset: Offset,
    valid_end: u64,
    invalid: Option<String>,
    first_timestamp: Option<i64>,
}

/// Walks a segment from `from` (0, or the position of the index's last entry after
/// `reset_tail`), feeding each batch to the index and checking offsets only go up.
async fn scan_segment(
    file: &File,
    base: Offset,
    mut index: SegmentIndex,
    from: u64,
    size: u64,
    verify_crc: bool,
) -> std::io::Result<Scan> {
    let mut next_offset = base;
    let mut first_timestamp = None;
    let mut epochs: EpochStarts = Vec::new();
    let end = walk_batches(file, from, size, verify_crc, |position, header, batch| {
        let batch_base = header.base_offset();
        if batch_base < next_offset {
            return Step::Invalid(format!("batch offset {batch_base} is below the expected {next_offset}"));
        }
        if let Some(epoch) = header.leader_epoch() {
            if epochs.last().is_none_or(|last| last.0 < epoch) {
                epochs.push((epoch, batch_base));
            }
        }
        index.on_batch(batch_base, position, batch.len() as u64, header.max_timestamp());
        if position == 0 {
            first_timestamp = Some(header.max_timestamp());
        }
        next_offset = header.next_offset();
        Step::Continue
    })
    .await?;
    let invalid = match end.invalid {
        // Started at an index entry but found no batch there: the index is wrong.
        None if from > 0 && next_offset == base => Some(format!("no batch at indexed position {from}")),
        other => other,
    };
    // Walking stops at the first invalid batch, so every epoch seen is in a valid one.
    Ok(Scan { index, epochs, next_offset, valid_end: end.position, invalid, first_timestamp })
}

/// Whether the bytes from `from` to `end` (the first page of them) are all zero: space
/// that was preallocated or padded but never written, rather than a torn batch.
async fn is_zero_from(file: &File, from: u64, end: u64) -> bool {
    if from >= end {
        return true;
    }
    let len = (end - from).min(4096) as usize;
    match file.read_at(from, len).await {
        Ok(bytes) => bytes.iter().all(|b| *b == 0),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{keeps_written_bytes, TailPage};

    fn written(position: u64, bytes: &[u8]) -> TailPage {
        TailPage { position, bytes: bytes.to_vec() }
    }

    #[test]
    fn a_write_past_the_written_data_is_allowed() {
        let w = written(8192, &[1, 2, 3]);
        assert!(keeps_written_bytes(&w, 12288, &[0; 4096]).is_ok());
        assert!(keeps_written_bytes(&TailPage::default(), 0, &[9; 4096]).is_ok());
        // The data ends on a page boundary: the next page is free.
        assert!(keeps_written_bytes(&written(4096, &[]), 4096, &[0; 4096]).is_ok());
    }

    #[test]
    fn a_write_over_the_last_page_must_carry_its_bytes_unchanged() {
        let w = written(8192, &[1, 2, 3]);
        let mut page = vec![0u8; 4096];
        page[..3].copy_from_slice(&[1, 2, 3]);
        assert!(keeps_written_bytes(&w, 8192, &page).is_ok());
        // Zeros over it (the zero-fill that lost acknowledged records) are refused.
        let e = keeps_written_bytes(&w, 8192, &[0; 4096]).unwrap_err();
        assert!(e.contains("first at byte 8192"), "{e}");
        page[2] = 7;
        let e = keeps_written_bytes(&w, 8192, &page).unwrap_err();
        assert!(e.contains("first at byte 8194"), "{e}");
        // A write shorter than the written bytes cannot carry them.
        assert!(keeps_written_bytes(&w, 8192, &[1, 2]).is_err());
    }

    #[test]
    fn no_write_starts_before_the_last_written_page() {
        let w = written(8192, &[1, 2, 3]);
        let e = keeps_written_bytes(&w, 4096, &[0; 8192]).unwrap_err();
        assert!(e.contains("last page starts at byte 8192"), "{e}");
        assert!(keeps_written_bytes(&w, 0, &[0; 4096]).is_err());
    }
}
