//! A bounded cache of recently written batches, per log.
//!
//! O_DIRECT bypasses the page cache, so without this every fetch at the tail would read
//! the disk. The cache holds the log's own write buffers after their write completed
//! (no extra copy on the append path). An entry is charged for the pages its data
//! touches: the log sizes buffers to recent writes, and untouched pages of a buffer's
//! allocation are never made resident.
//! Every cached entry holds whole batches with consecutive offsets of one segment, and
//! only data that is visible (written); the log clears entries it truncates away.

use std::collections::VecDeque;
use std::ops::Range;

use sluice_schemas::batch::BatchWalker;
use sluice_schemas::Offset;

use sluice_io::{align_up, IoBytes, SharedBuf};

struct Entry {
    segment_base: Offset,
    first_offset: Offset,
    next_offset: Offset,
    buf: SharedBuf,
    range: Range<usize>,
    /// What the entry costs against the limit: the buffer's whole allocation.
    charge_bytes: u64,
}

pub struct BatchCache {
    entries: VecDeque<Entry>,
    bytes: u64,
    bytes_max: u64,
}

/// Batches served from the cache.
pub struct CacheHit {
    pub chunks: Vec<IoBytes>,
    pub first_offset: Offset,
    pub next_offset: Offset,
}

impl BatchCache {
    #[must_use]
    pub fn new(bytes_max: u64) -> BatchCache {
        BatchCache { entries: VecDeque::new(), bytes: 0, bytes_max }
    }

    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds the batches at `range` of `buf` (offsets `first..next` of `segment_base`).
    pub fn insert(
        &mut self,
        segment_base: Offset,
        first_offset: Offset,
        next_offset: Offset,
        buf: SharedBuf,
        range: Range<usize>,
    ) {
        if self.bytes_max == 0 || range.is_empty() {
            return;
        }
        if let Some(last) = self.entries.back() {
            assert!(last.next_offset <= first_offset, "cache entries out of order");
        }
        let charge_bytes = align_up(range.end as u64);
        if charge_bytes > self.bytes_max {
            return;
        }
        self.bytes += charge_bytes;
        self.entries.push_back(Entry { segment_base, first_offset, next_offset, buf, range, charge_bytes });
        while self.bytes > self.bytes_max {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.charge_bytes;
        }
    }

    /// Forgets everything (after a truncation).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Forgets the entries of segments that were deleted (base below `segment_base`).
    pub fn drop_segments_before(&mut self, segment_base: Offset) {
        while self.entries.front().is_some_and(|e| e.segment_base < segment_base) {
            self.pop_oldest();
        }
    }

    /// Forgets the entries of one segment (compaction rewrote it).
    pub fn drop_segment(&mut self, segment_base: Offset) {
        let before = self.entries.len();
        self.entries.retain(|e| e.segment_base != segment_base);
        if self.entries.len() != before {
            self.bytes = self.entries.iter().map(|e| e.charge_bytes).sum();
        }
    }

    /// Whole batches starting with the one that holds `from`, up to `max_bytes` (at
    /// least one batch), all from one segment; `None` when `from` is not cached.
    #[must_use]
    pub fn read(&self, from: Offset, max_bytes: u64) -> Option<CacheHit> {
        let i = self.entries.partition_point(|e| e.next_offset <= from);
        let first = self.entries.get(i)?;
        if first.first_offset > from {
            return None;
        }
        let mut chunks = Vec::new();
        let mut taken = 0u64;
        let mut first_offset = None;
        let mut next_offset = from;
        for e in self.entries.range(i..) {
            if e.segment_base != first.segment_base || e.first_offset != next_offset && first_offset.is_some() {
                break;
            }
            let bytes = &e.buf.as_slice()[e.range.clone()];
            let mut start = None;
            let mut end = 0;
            for batch in BatchWalker::new(bytes) {
                // The cache holds only batches the log wrote itself.
                let Ok((position, header, batch)) = batch else { break };
                if header.next_offset() <= from {
                    continue;
                }
                let size = batch.len() as u64;
                if first_offset.is_some() && taken + size > max_bytes {
                    break;
                }
                if start.is_none() {
                    start = Some(position);
                }
                first_offset.get_or_insert(header.base_offset());
                taken += size;
                end = position + batch.len();
                next_offset = header.next_offset();
            }
            if let Some(start) = start {
                let range = e.range.start + start..e.range.start + end;
                chunks.push(IoBytes::cached(e.buf.clone(), range));
            }
            if taken >= max_bytes || end < bytes.len() {
                break;
            }
        }
        Some(CacheHit { chunks, first_offset: first_offset?, next_offset })
    }
}
