//! A bounded cache of recently written batches: one per log, all of a shard's caches
//! within one shard-wide budget.
//!
//! O_DIRECT bypasses the page cache, so without this every fetch at the tail would read
//! the disk. The cache holds the log's own write buffers after their write completed
//! (no extra copy on the append path). An entry is charged for its buffer's whole
//! allocation (the log sizes buffers near its recent writes): charging only the pages
//! the data touched let the node's RSS pass the budget by a gigabyte, since the
//! allocator hands out pages that earlier buffers touched.
//! Every cached entry holds whole batches with consecutive offsets of one segment, and
//! only data that is visible (written); the log clears entries it truncates away.
//!
//! Memory is bounded per shard, not per partition: every entry of every log on the shard
//! is charged to the shard's pool (`ShardLimits::cache_bytes_max`), and when the pool is
//! over its budget the oldest entries of the whole shard go first, whichever log holds
//! them (a log's own limit, `cache.bytes.max`, still caps that log).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ops::Range;
use std::rc::{Rc, Weak};

use sluice_schemas::batch::BatchWalker;
use sluice_schemas::Offset;

use sluice_io::{align_up, IoBytes, SharedBuf};

struct Entry {
    /// Increasing over the whole shard: the pool's eviction order.
    id: u64,
    segment_base: Offset,
    first_offset: Offset,
    next_offset: Offset,
    buf: SharedBuf,
    range: Range<usize>,
    /// What the entry costs against the limit: the buffer's whole allocation.
    charge_bytes: u64,
}

#[derive(Default)]
struct Entries {
    entries: VecDeque<Entry>,
    bytes: u64,
}

/// The shard's pool: the bytes all its caches hold, its budget, and every entry in the
/// order it was cached (items of entries a log already dropped are skipped when met).
struct Pool {
    bytes: Cell<u64>,
    bytes_max: Cell<u64>,
    next_id: Cell<u64>,
    live: Cell<usize>,
    order: RefCell<VecDeque<(Weak<RefCell<Entries>>, u64)>>,
}

thread_local! {
    static POOL: Pool = Pool {
        bytes: Cell::new(0),
        bytes_max: Cell::new(crate::device::ShardLimits::default().cache_bytes_max),
        next_id: Cell::new(0),
        live: Cell::new(0),
        order: RefCell::new(VecDeque::new()),
    };
}

/// Sets this shard's cache budget (applied at the next insert).
pub(crate) fn set_pool_limit(bytes_max: u64) {
    POOL.with(|p| p.bytes_max.set(bytes_max));
}

/// Bytes all caches of this shard hold.
#[must_use]
pub fn pool_bytes() -> u64 {
    POOL.with(|p| p.bytes.get())
}

fn pool_released(bytes: u64, entries: usize) {
    POOL.with(|p| {
        p.bytes.set(p.bytes.get().saturating_sub(bytes));
        p.live.set(p.live.get().saturating_sub(entries));
    });
}

/// Evicts the shard's oldest entries while the pool is over its budget. Runs with no
/// cache borrowed.
fn trim_pool() {
    POOL.with(|p| loop {
        let over = p.bytes.get() > p.bytes_max.get();
        let mut order = p.order.borrow_mut();
        // Items of dropped entries pile up when nothing is evicted: shed them now and then.
        if !over && order.len() > 2 * p.live.get() + 1024 {
            order.retain(|(w, id)| {
                w.upgrade().is_some_and(|e| e.borrow().entries.binary_search_by_key(id, |e| e.id).is_ok())
            });
        }
        if !over {
            return;
        }
        let Some((weak, id)) = order.pop_front() else { return };
        drop(order);
        let Some(cache) = weak.upgrade() else { continue };
        let mut c = cache.borrow_mut();
        // The pool's oldest live entry is its log's oldest; otherwise this one is gone.
        if c.entries.front().is_some_and(|e| e.id == id) {
            if let Some(e) = c.entries.pop_front() {
                c.bytes -= e.charge_bytes;
                pool_released(e.charge_bytes, 1);
            }
        }
    });
}

pub struct BatchCache {
    inner: Rc<RefCell<Entries>>,
    bytes_max: u64,
}

/// Batches served from the cache.
pub struct CacheHit {
    pub chunks: Vec<IoBytes>,
    pub first_offset: Offset,
    pub next_offset: Offset,
}

impl Drop for BatchCache {
    fn drop(&mut self) {
        self.clear();
    }
}

impl BatchCache {
    #[must_use]
    pub fn new(bytes_max: u64) -> BatchCache {
        BatchCache { inner: Rc::new(RefCell::new(Entries::default())), bytes_max }
    }

    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.inner.borrow().bytes
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
        let charge_bytes = (buf.allocated_bytes() as u64).max(align_up(range.end as u64));
        if charge_bytes > self.bytes_max {
            return;
        }
        {
            let mut c = self.inner.borrow_mut();
            if let Some(last) = c.entries.back() {
                assert!(last.next_offset <= first_offset, "cache entries out of order");
            }
            let id = POOL.with(|p| {
                let id = p.next_id.get();
                p.next_id.set(id + 1);
                p.bytes.set(p.bytes.get() + charge_bytes);
                p.live.set(p.live.get() + 1);
                p.order.borrow_mut().push_back((Rc::downgrade(&self.inner), id));
                id
            });
            c.bytes += charge_bytes;
            c.entries.push_back(Entry { id, segment_base, first_offset, next_offset, buf, range, charge_bytes });
            while c.bytes > self.bytes_max {
                pop_oldest(&mut c);
            }
        }
        trim_pool();
    }

    /// Forgets everything (after a truncation).
    pub fn clear(&mut self) {
        let mut c = self.inner.borrow_mut();
        let (bytes, count) = (c.bytes, c.entries.len());
        c.entries.clear();
        c.bytes = 0;
        pool_released(bytes, count);
    }

    /// Forgets the entries of segments that were deleted (base below `segment_base`).
    pub fn drop_segments_before(&mut self, segment_base: Offset) {
        let mut c = self.inner.borrow_mut();
        while c.entries.front().is_some_and(|e| e.segment_base < segment_base) {
            pop_oldest(&mut c);
        }
    }

    /// Forgets the entries of one segment (compaction rewrote it).
    pub fn drop_segment(&mut self, segment_base: Offset) {
        let mut c = self.inner.borrow_mut();
        let (before, bytes_before) = (c.entries.len(), c.bytes);
        c.entries.retain(|e| e.segment_base != segment_base);
        if c.entries.len() != before {
            c.bytes = c.entries.iter().map(|e| e.charge_bytes).sum();
            pool_released(bytes_before - c.bytes, before - c.entries.len());
        }
    }

    /// Whole batches starting with the one that holds `from`, up to `max_bytes` (at
    /// least one batch), all from one segment; `None` when `from` is not cached.
    #[must_use]
    pub fn read(&self, from: Offset, max_bytes: u64) -> Option<CacheHit> {
        let c = self.inner.borrow();
        let i = c.entries.partition_point(|e| e.next_offset <= from);
        let first = c.entries.get(i)?;
        if first.first_offset > from {
            return None;
        }
        let mut chunks = Vec::new();
        let mut taken = 0u64;
        let mut first_offset = None;
        let mut next_offset = from;
        for e in c.entries.range(i..) {
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

fn pop_oldest(c: &mut Entries) {
    if let Some(e) = c.entries.pop_front() {
        c.bytes -= e.charge_bytes;
        pool_released(e.charge_bytes, 1);
    }
}
