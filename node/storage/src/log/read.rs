//! The read path: whole batches from the cache or a segment file (CRC-checked when read
//! from disk), the offset for a timestamp, and waiting for new data. Readers see only
//! written batches.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use sluice_schemas::batch::{check_batch, BatchWalker};
use sluice_schemas::Offset;

use crate::device::device;
use crate::error::StorageError;
use crate::segment::{segment_path, walk_batches, Step, WalkEnd, LOG_SUFFIX};
use sluice_io::{File, IoBytes, WaitQueue};

use super::state::Shared;
use super::{Fetched, PartitionLog};

/// The most a read ahead reads at once, and the least.
const READ_AHEAD_BYTES_MAX: u64 = 8 << 20;
const READ_AHEAD_BYTES_MIN: u64 = 64 << 10;
/// Windows a sequential reader may have read ahead of it: the next starts as soon as
/// where it starts is known (at once for a window that ends at an indexed batch start,
/// else once the one before it is read), so the disk keeps reading, several reads at
/// once, while the reader is served, sends and asks again (one window at a time left the
/// disk idle for each round trip: cold consume at half the disk's read bandwidth).
const READ_AHEAD_WINDOWS: usize = 4;

/// Segment bytes read ahead of a sequential reader: the bytes after where its last read
/// ended (or after the window before this one), read while it works on what it got,
/// from the shard's read-ahead budget (given back when this is dropped). A read for
/// `offset` is served from here.
pub(super) struct ReadAhead {
    file: Rc<File>,
    segment_base: Offset,
    position: u64,
    offset: Offset,
    /// The bytes a read asked for when the chain began: each window's size.
    len_wanted: u64,
    /// `None` while the read runs.
    window: RefCell<Option<Result<IoBytes, String>>>,
    /// The segment byte and offset after its last whole batch, where the next window
    /// starts: known from the start for a window that ends at an indexed batch start,
    /// else once read (`None` until then, or when it holds no whole batch).
    end: Cell<Option<(u64, Offset)>>,
    done: WaitQueue,
    charge: u64,
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        device().return_read_ahead(self.charge);
    }
}

impl PartitionLog {
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

    /// Reads whole batches from the one holding `from`, up to `max_bytes` (but at least
    /// one batch, however large), all from one segment. At the log end the result is
    /// empty; below the log start or past the end it is `OffsetOutOfRange`. Batches read
    /// from disk have their CRC checked: a mismatch is `Corrupt`, naming the segment.
    pub async fn read(&self, from: Offset, max_bytes: u64) -> Result<Fetched, StorageError> {
        let (log_start, log_end, mut segment_index, ahead, sequential) = {
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
            // A read ahead serves exactly the offset it was read for; any other read
            // drops the windows (a reader that jumped, or another reader).
            let ahead = st.read_ahead.pop_front().filter(|ahead| ahead.offset == from);
            if ahead.is_none() {
                st.read_ahead.clear();
            }
            let sequential = st.read_next == Some(from);
            let i = st.segments.partition_point(|s| s.base <= from).saturating_sub(1);
            (log_start, log_end, i, ahead, sequential)
        };
        if let Some(ahead) = ahead {
            if let Some(fetched) = self.serve_read_ahead(&ahead, from, max_bytes, log_start, log_end).await {
                return Ok(fetched);
            }
        }
        self.shared.state.borrow_mut().stats.reads_from_disk += 1;
        let start_offset = from;
        loop {
            let Some((file, base, start, end)) = self.read_window(segment_index, start_offset).await? else {
                break;
            };
            let mut chunks: Vec<IoBytes> = Vec::new();
            let mut taken = 0u64;
            let mut first = None;
            let mut next_offset = start_offset;
            let mut crc_error = None;
            let mut end_position = start;
            let walked = walk_batches(&file, start, end, false, |position, header, batch| {
                if header.next_offset() <= start_offset {
                    return Step::Continue;
                }
                // Written but not yet visible (its sync is running): not yet.
                if header.base_offset() >= log_end {
                    return Step::Stop;
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
                end_position = position + batch.len() as u64;
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
                self.after_read(&file, base, end_position, next_offset, max_bytes, log_end, sequential);
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

    /// Serves a read from its read ahead: whole, CRC-checked batches from the window, up
    /// to `max_bytes`, below `log_end`. `None` when the window cannot (its read failed, a
    /// batch is bad or larger than the window): the read goes to disk and says why.
    async fn serve_read_ahead(
        &self,
        ahead: &ReadAhead,
        from: Offset,
        max_bytes: u64,
        log_start: Offset,
        log_end: Offset,
    ) -> Option<Fetched> {
        let window = loop {
            let wait = ahead.done.wait();
            if let Some(result) = ahead.window.borrow().as_ref() {
                break result.as_ref().ok()?.clone();
            }
            wait.await;
        };
        let (mut start, mut end, mut taken, mut first) = (None, 0usize, 0u64, from);
        let mut next_offset = from;
        for item in BatchWalker::new(&window) {
            // A batch cut by the window's end: the window ends before it.
            let Ok((position, header, batch)) = item else { break };
            if header.base_offset() >= log_end || header.next_offset() <= from {
                break;
            }
            if start.is_some() && taken + batch.len() as u64 > max_bytes {
                break;
            }
            check_batch(batch).ok()?;
            if start.is_none() {
                start = Some(position);
                first = header.base_offset();
            }
            end = position + batch.len();
            taken += batch.len() as u64;
            next_offset = header.next_offset();
        }
        let start = start?;
        device().count_read_from_read_ahead();
        self.after_read(
            &ahead.file,
            ahead.segment_base,
            ahead.position + end as u64,
            next_offset,
            max_bytes,
            log_end,
            true,
        );
        Some(Fetched {
            chunks: vec![window.slice(start..end)],
            first_offset: first,
            next_offset,
            log_start,
            log_end,
            from_cache: false,
        })
    }

    /// After a read from disk or a read ahead that ended at byte `position` of segment
    /// `base` (offset `next`): for a sequential reader (this read began where the last
    /// one ended) with more to read in this segment, keeps windows read ahead of it: the
    /// ones already read on from here, or a first one starting here.
    #[allow(clippy::too_many_arguments)]
    fn after_read(
        &self,
        file: &Rc<File>,
        base: Offset,
        position: u64,
        next: Offset,
        max_bytes: u64,
        log_end: Offset,
        sequential: bool,
    ) {
        let mut st = self.shared.state.borrow_mut();
        st.read_next = Some(next);
        if !sequential || next >= log_end {
            st.read_ahead.clear();
            return;
        }
        if st.read_ahead.front().is_some_and(|ahead| ahead.offset != next) {
            // The windows went on from where an earlier read would have ended.
            st.read_ahead.clear();
        }
        match st.read_ahead.back().cloned() {
            Some(last) => {
                drop(st);
                read_on(&self.shared, &last);
            }
            None => start_window(&self.shared, &mut st, file.clone(), base, position, next, max_bytes),
        }
    }

    /// The file and byte range to walk in segment `i` to find `from`, or `None` past the
    /// last segment.
    async fn read_window(&self, i: usize, from: Offset) -> Result<Option<(Rc<File>, Offset, u64, u64)>, StorageError> {
        let (base, open, start, end) = {
            let st = self.shared.state.borrow();
            let Some(segment) = st.segments.get(i) else { return Ok(None) };
            (segment.base, segment.file.clone(), segment.index.position_for_offset(from), segment.written_bytes)
        };
        let file = super::file_of(&self.shared.dir, base, open).await?;
        Ok(Some((file, base, start, end)))
    }

    /// The base offset of the first written batch holding a record with a timestamp at
    /// or after `timestamp` (batch max-timestamps decide), or `None` if there is none.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<Offset>, StorageError> {
        let candidates: Vec<(Offset, Option<Rc<File>>, u64, u64)> = {
            let st = self.shared.state.borrow();
            st.segments
                .iter()
                .filter(|s| s.index.max_timestamp() >= timestamp)
                .map(|s| (s.base, s.file.clone(), s.index.position_for_timestamp(timestamp), s.written_bytes))
                .collect()
        };
        let log_start = self.log_start_offset();
        for (base, open, start, end) in candidates {
            let file = super::file_of(&self.shared.dir, base, open).await?;
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
}

/// Starts reading the window at byte `position` (offset `offset`) of segment `base`,
/// `len_wanted` bytes (within the read-ahead bounds and the segment's written bytes;
/// ending at the last indexed batch start in that range, if there is one), as the last
/// of the log's windows, if the shard's budget grants it: all of it for a reader's first
/// window, only its first half for windows further ahead, so that one reader's windows
/// leave room for other readers' first. A window whose end is known so starts the next
/// one at once.
fn start_window(
    shared: &Rc<Shared>,
    st: &mut super::state::State,
    file: Rc<File>,
    base: Offset,
    position: u64,
    offset: Offset,
    len_wanted: u64,
) {
    if st.closed || st.dropped {
        return;
    }
    let Some(segment) = st.segments.iter().find(|s| s.base == base) else { return };
    let mut len = len_wanted
        .clamp(READ_AHEAD_BYTES_MIN, READ_AHEAD_BYTES_MAX)
        .min(segment.written_bytes.saturating_sub(position));
    // Index entries at or before the written end are starts of written batches.
    let known_end = segment.index.batch_start_within(position, position + len);
    if let Some((end, _)) = known_end {
        len = end - position;
    }
    if len == 0 || !device().take_read_ahead(len, st.read_ahead.is_empty()) {
        return;
    }
    let ahead = Rc::new(ReadAhead {
        file,
        segment_base: base,
        position,
        offset,
        len_wanted,
        window: RefCell::new(None),
        end: Cell::new(known_end),
        done: WaitQueue::new(),
        charge: len,
    });
    st.read_ahead.push_back(ahead.clone());
    let file = ahead.file.clone();
    let chain = shared.clone();
    sluice_io::spawn_detached(async move {
        let read = ahead.file.read_at(ahead.position, len as usize).await.map_err(|e| e.to_string());
        if let Some(window) = read.as_ref().ok().filter(|_| ahead.end.get().is_none()) {
            let mut end = None;
            for item in BatchWalker::new(window) {
                let Ok((at, header, batch)) = item else { break };
                end = Some((ahead.position + (at + batch.len()) as u64, header.next_offset()));
            }
            ahead.end.set(end);
        }
        *ahead.window.borrow_mut() = Some(read);
        ahead.done.notify_all();
        read_on(&chain, &ahead);
    });
    if let Some((next_position, next_offset)) = known_end.filter(|_| st.read_ahead.len() < READ_AHEAD_WINDOWS) {
        start_window(shared, st, file, base, next_position, next_offset, len_wanted);
    }
}

/// Starts the window after `last` once `last` is read, if it is still the log's last
/// window (no jump, truncation or reshaping dropped it) and fewer than
/// `READ_AHEAD_WINDOWS` are ahead of the reader.
fn read_on(shared: &Rc<Shared>, last: &Rc<ReadAhead>) {
    let Some((position, offset)) = last.end.get() else { return };
    let mut st = shared.state.borrow_mut();
    let is_last = st.read_ahead.back().is_some_and(|back| Rc::ptr_eq(back, last));
    if is_last && st.read_ahead.len() < READ_AHEAD_WINDOWS {
        start_window(shared, &mut st, last.file.clone(), last.segment_base, position, offset, last.len_wanted);
    }
}
