//! The jobs that change the log's shape, each run alone in the flusher queue (appends wait
//! for them): truncating the tail, advancing the log start (DeleteRecords, retention) and
//! swapping in a compacted segment; with retention and the compaction hooks on top.

use std::rc::Rc;

use sluice_schemas::Offset;
use tracing::info;

use crate::config::FsyncPolicy;
use crate::error::StorageError;
use crate::index::SegmentIndex;
use crate::segment::{segment_path, walk_batches, Step, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use sluice_io::{self as io, File, Oneshot, OneshotSender};

use super::files::{remove_segment_files, write_epochs, write_index_files, write_log_start};
use super::flusher::release_reserve;
use super::recovery::{read_tail_page, scan_segment};
use super::state::{Job, Shared};
use super::{CompactionReport, PartitionLog};

impl PartitionLog {
    /// Queues a job that runs alone (appends wait until it is done) and waits for its answer.
    pub(super) async fn exclusive<T>(
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
    pub(crate) fn closed_segments(&self) -> Vec<(Offset, u64, i64)> {
        let st = self.shared.state.borrow();
        let Some((_, closed)) = st.segments.split_last() else { return Vec::new() };
        closed.iter().map(|s| (s.base, s.size_bytes, s.index.max_timestamp())).collect()
    }

    /// A closed segment's file, from the shard's pool.
    pub(crate) async fn closed_segment_file(&self, base: Offset) -> Result<Rc<File>, StorageError> {
        super::file_of(&self.shared.dir, base, None).await
    }
}

pub(super) async fn truncate(sh: &Shared, to: Offset) -> Result<Offset, StorageError> {
    sh.state.borrow_mut().forget_read_ahead();
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
    let (open, base, start, end) = {
        let st = sh.state.borrow();
        let s = st.active();
        (s.file.clone(), s.base, s.index.position_for_offset(to), s.written_bytes)
    };
    let file = match open {
        Some(file) => file,
        None => {
            // A closed segment becomes the active one again: it is written, so it is
            // opened for writing and held, not taken from the pool.
            let path = segment_path(&sh.dir, base, LOG_SUFFIX);
            crate::segment_files::forget(&path);
            let file =
                Rc::new(File::open(&path, true).await.map_err(|e| StorageError::io("opening segment", &path, e))?);
            sh.state.borrow_mut().active_mut().file = Some(file.clone());
            file
        }
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
    release_reserve(sh);
    // The segment is active again: its index lives in memory until it rolls.
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = segment_path(&sh.dir, base, suffix);
        io::remove_file(&path).map_err(|e| StorageError::io("removing", &path, e))?;
    }
    let rewalk_from = {
        let mut st = sh.state.borrow_mut();
        let s = st.active_mut();
        s.preallocated_bytes = cut_position;
        s.synced_bytes = 0;
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
        st.producers.truncate(end);
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

pub(super) async fn advance_start(sh: &Shared, to: Offset) -> Result<usize, StorageError> {
    sh.state.borrow_mut().forget_read_ahead();
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
        st.producers.advance_start(to);
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
pub(super) async fn swap_segment(sh: &Shared, base: Offset, size: u64) -> Result<bool, StorageError> {
    sh.state.borrow_mut().forget_read_ahead();
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
    crate::segment_files::forget(&path);
    io::rename(&cleaned, &path).map_err(|e| StorageError::io("renaming a compacted segment to", &path, e))?;
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
    drop(file);
    if let Some(s) = st.segment_mut(base) {
        s.size_bytes = new_size;
        s.written_bytes = new_size;
        s.preallocated_bytes = new_size;
        s.synced_bytes = 0;
        s.index = scan.index;
    }
    Ok(true)
}
