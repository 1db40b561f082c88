//! The in-memory state of one partition log, shared by its handle and its flusher task:
//! the segments, the pending write buffer and its partial last page, the job queue, the
//! append queue, and the `State` methods that fill buffers, roll and fail what waits.
//! Lives on the shard that owns the partition; nothing here is `Send`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sluice_schemas::Offset;

use crate::cache::BatchCache;
use crate::config::LogConfig;
use crate::error::StorageError;
use crate::index::SegmentIndex;
use crate::producers::ProducerStates;
use crate::segment::Segment;
use sluice_io::{align_down, AlignedBuf, OneshotSender, WaitQueue};

use super::{AppendInfo, EpochStarts, FaultInjector, LogStats};

/// The smallest write buffer: one for a trickle of small appends stays small, so the
/// cache (which keeps these buffers) is not filled with mostly empty ones, and a shard
/// with thousands of partitions does not allocate (and fault in) 64 KiB per small write.
const WRITE_BUFFER_BYTES_MIN: u64 = 16 << 10;

/// An append waiting for its write.
pub(super) struct Waiter {
    pub(super) base_offset: Offset,
    pub(super) last_offset: Offset,
    pub(super) log_append_time_ms: Option<i64>,
    pub(super) reply: OneshotSender<Result<AppendInfo, StorageError>>,
}

/// The write buffer being filled for the active segment.
pub(super) struct Pending {
    pub(super) segment_base: Offset,
    pub(super) buf: AlignedBuf,
    /// Aligned file position of `buf[0]`.
    pub(super) file_position: u64,
    /// Bytes of data in `buf`, from its start.
    pub(super) len: usize,
    /// Where the batches new to this buffer start (after the copied partial page).
    pub(super) batches_start: usize,
    pub(super) first_offset: Offset,
    pub(super) next_offset: Offset,
    pub(super) waiters: Vec<Waiter>,
}

/// The data in the active segment's last, partial page: as of the end of all sealed
/// buffers (the next buffer starts with it), or as of the last completed write (what no
/// later write may change).
#[derive(Clone, Debug, Default)]
pub(super) struct TailPage {
    pub(super) position: u64,
    pub(super) bytes: Vec<u8>,
}

impl TailPage {
    /// Where the data ends.
    pub(super) fn end(&self) -> u64 {
        self.position + self.bytes.len() as u64
    }
}

pub(super) enum Job {
    Write(Pending),
    /// Start segment `base`, after writing the epoch cache and the producers' snapshot
    /// (both as of the roll).
    Roll {
        base: Offset,
        epochs: EpochStarts,
        producers: Vec<u8>,
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
    pub(super) fn is_exclusive(&self) -> bool {
        matches!(self, Job::Truncate { .. } | Job::AdvanceStart { .. } | Job::SwapSegment { .. } | Job::Close { .. })
    }
}

pub(super) struct State {
    pub(super) segments: Vec<Segment>,
    pub(super) log_start: Offset,
    /// The offset the next appended record gets.
    pub(super) next_offset: Offset,
    /// Everything below is written; readers stop here.
    pub(super) visible_end: Offset,
    pub(super) pending: Option<Pending>,
    pub(super) tail: TailPage,
    /// The active segment file's last written page, as of the last completed write: the
    /// bytes there are acknowledged (or about to be), and no write may change them.
    pub(super) written: TailPage,
    pub(super) jobs: VecDeque<Job>,
    pub(super) unflushed_bytes: u64,
    /// Exclusive jobs queued or running: appends wait until they are done.
    pub(super) exclusive_jobs: u32,
    /// Appends waiting for room, first come first served: one that fits never passes
    /// one that waits (a producer's pipelined batches keep their order).
    pub(super) append_queue: VecDeque<u64>,
    pub(super) next_append_ticket: u64,
    pub(super) poisoned: Option<String>,
    pub(super) closed: bool,
    pub(super) dropped: bool,
    pub(super) cache: BatchCache,
    pub(super) last_sync: Instant,
    pub(super) unsynced: bool,
    /// Size of the latest write, to size the next buffer near it.
    pub(super) last_write_bytes: u64,
    /// The shard's reserve this log holds: zero-filled bytes past its data.
    pub(super) reserve_held: u64,
    /// Where the last read from disk (or from a read-ahead) ended, as the offset a
    /// sequential reader asks for next.
    pub(super) read_next: Option<Offset>,
    /// The segment bytes after that, being read or read, for a sequential reader: the
    /// windows in segment order, each starting where the one before it ends.
    pub(super) read_ahead: std::collections::VecDeque<std::rc::Rc<super::read::ReadAhead>>,
    /// The recent write size (an exponential moving average, 1/8 per write): whether
    /// this log's writes are small enough to zero-fill ahead of.
    pub(super) write_bytes_average: u64,
    /// Closed segments below this offset were compacted (what came after is "dirty").
    pub(super) clean_offset: Offset,
    /// The last clean close's record is on the disk: the flusher removes it before
    /// anything changes the log (`flusher::forget_clean_close`).
    pub(super) clean_close_on_disk: bool,
    /// The leader-epoch cache, including batches not yet written.
    pub(super) epochs: EpochStarts,
    /// Idempotent producers' last batches, including batches not yet written.
    pub(super) producers: ProducerStates,
    pub(super) stats: LogStats,
}

pub(super) struct Shared {
    pub(super) dir: PathBuf,
    pub(super) config: LogConfig,
    pub(super) state: RefCell<State>,
    /// Wakes the flusher: there is data or a job.
    pub(super) work: WaitQueue,
    /// Wakes appends waiting for buffer room or for an exclusive job to end.
    pub(super) room: WaitQueue,
    /// Wakes readers waiting for new data (long-polling fetches).
    pub(super) appended: WaitQueue,
    pub(super) faults: FaultInjector,
}

impl State {
    pub(super) fn active(&self) -> &Segment {
        match self.segments.last() {
            Some(s) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    pub(super) fn active_mut(&mut self) -> &mut Segment {
        match self.segments.last_mut() {
            Some(s) => s,
            None => unreachable!("a log always has an active segment"),
        }
    }

    pub(super) fn segment_mut(&mut self, base: Offset) -> Option<&mut Segment> {
        self.segments.iter_mut().find(|s| s.base == base)
    }

    /// Drops the read ahead: the segments are about to change shape under it.
    pub(super) fn forget_read_ahead(&mut self) {
        self.read_ahead.clear();
        self.read_next = None;
    }

    pub(super) fn check_writable(&self, dir: &Path) -> Result<(), StorageError> {
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
    pub(super) fn seal_pending(&mut self) {
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

    pub(super) fn roll(&mut self, config: &LogConfig, now_ms: i64) {
        self.seal_pending();
        let base = self.next_offset;
        self.jobs.push_back(Job::Roll { base, epochs: self.epochs.clone(), producers: self.producers.encode() });
        self.segments.push(Segment {
            base,
            next_offset: base,
            size_bytes: 0,
            written_bytes: 0,
            index: SegmentIndex::new(base, config.index_interval_bytes),
            file: None,
            created_ms: now_ms,
            preallocated_bytes: 0,
            synced_bytes: 0,
        });
        self.tail = TailPage { position: 0, bytes: Vec::new() };
        self.stats.rolls += 1;
    }

    /// Makes sure the pending buffer has room for `len` more bytes.
    pub(super) fn ensure_room(&mut self, config: &LogConfig, len: usize) {
        if let Some(p) = &self.pending {
            if p.len + len <= p.buf.capacity() {
                return;
            }
            self.seal_pending();
        }
        let needed = self.tail.bytes.len() + len;
        // Size the buffer near the recent writes: big under load (fewer, larger writes),
        // small for a trickle (the cache keeps these buffers).
        let capacity = (self.last_write_bytes * 2).max(WRITE_BUFFER_BYTES_MIN).min(config.write_buffer_bytes) as usize;
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

    pub(super) fn next_job(&mut self) -> Option<Job> {
        if self.jobs.is_empty() {
            self.seal_pending();
        }
        self.jobs.pop_front()
    }

    /// Fails every waiting append and job: the log is poisoned or closed.
    pub(super) fn fail_everything(&mut self, dir: &Path) {
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
pub(super) struct AppendTicket<'a> {
    pub(super) shared: &'a Shared,
    pub(super) id: u64,
    pub(super) queued: bool,
}

impl Drop for AppendTicket<'_> {
    fn drop(&mut self) {
        if self.queued {
            self.shared.state.borrow_mut().append_queue.retain(|id| *id != self.id);
            self.shared.room.notify_all();
        }
    }
}
