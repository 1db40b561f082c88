//! What the logs of one shard share: sync rounds that make all their writes durable with
//! as few device flushes as possible, one budget for the zero-filled reserve ahead of
//! their writes, the limits (the cache's budget is applied in `cache`), and counters of
//! what reached the device.
//!
//! One per shard (a thread-local: a shard is a thread, and its logs live on it), so the
//! cost of durability grows with the bytes and the rounds, not with the partition count.
//!
//! **Sync rounds.** A log whose write must be synced (fsync `always`) joins the shard's
//! next round and waits for it; a round starts as soon as fewer than `ROUNDS_IN_FLIGHT`
//! run (after letting the logs whose writes completed in the same executor turn join),
//! and takes every log that joined while it gathered (group commit across partitions).
//! Two at once: a write that completes while a round runs waits for one round, not for
//! the rest of that one and then a whole next one. A round makes durable:
//! - writes that changed no metadata (they overwrote zero-filled space whose size and
//!   extents an earlier sync made durable), with one fdatasync of any one of their files:
//!   ext4 and XFS flush the whole device's write cache on every fdatasync, and an
//!   O_DIRECT write that completed is in that cache;
//! - writes that changed a file's metadata (extended it, or zero-filled ahead), with that
//!   file's own fdatasync when a few did, or one syncfs(2) (one journal commit for all,
//!   and the device flush) when more did.
//!
//! A failed round fails every write in it: each of their logs is poisoned.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use sluice_io::{self as io, File, LocalFuture, WaitQueue};

/// Rounds that run at once: a write that completes while one runs joins the next, which
/// starts at once if fewer run, so it waits for one round, not for the rest of one and
/// then another.
const ROUNDS_IN_FLIGHT: usize = 2;

/// At most this many files changed metadata in a round: fdatasync each; more: one syncfs.
const METADATA_FDATASYNCS_MAX: usize = 4;

/// Node-wide limits, divided among the shards; each shard applies its share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLimits {
    /// Zero-filled bytes ahead of the writes of all this shard's logs together.
    pub reserve_bytes_max: u64,
    /// Recently written batches all this shard's logs cache together (`cache`).
    pub cache_bytes_max: u64,
    /// Segment bytes read ahead of sequential readers, all this shard's logs together.
    pub read_ahead_bytes_max: u64,
    /// Closed segments' files open at once, all this shard's logs together
    /// (`segment_files`).
    pub segment_files_max: usize,
}

impl Default for ShardLimits {
    fn default() -> Self {
        ShardLimits {
            reserve_bytes_max: 64 << 20,
            cache_bytes_max: 256 << 20,
            read_ahead_bytes_max: 64 << 20,
            segment_files_max: crate::segment_files::SEGMENT_FILES_MAX_DEFAULT,
        }
    }
}

/// Counters of one shard's storage, for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Segment writes (data and zero-fills) and their bytes.
    pub writes: u64,
    pub bytes_written: u64,
    /// Of those, zero-fills ahead of writes.
    pub zero_fill_bytes: u64,
    /// Sync rounds run, the log syncs they served, and the calls they made.
    pub sync_rounds: u64,
    pub syncs_served: u64,
    pub fdatasyncs: u64,
    pub syncfs_calls: u64,
    /// Microseconds the rounds took, all together.
    pub sync_round_us: u64,
    /// Zero-filled bytes held ahead of writes now, and the limit.
    pub reserved_bytes: u64,
    pub reserve_bytes_max: u64,
    /// Bytes the shard's caches hold now, and the limit.
    pub cache_bytes: u64,
    pub cache_bytes_max: u64,
    /// Reads ahead started, reads served from them, and the bytes they hold now.
    pub read_aheads: u64,
    pub reads_from_read_ahead: u64,
    pub read_ahead_bytes: u64,
    /// Closed segments' files open now, the pool's limit, files opened into it and
    /// closed to make room (`segment_files`).
    pub segment_files_open: u64,
    pub segment_files_max: u64,
    pub segment_file_opens: u64,
    pub segment_file_evictions: u64,
}

impl DeviceStats {
    /// Adds another shard's counters into these.
    pub fn merge(&mut self, o: &DeviceStats) {
        self.writes += o.writes;
        self.bytes_written += o.bytes_written;
        self.zero_fill_bytes += o.zero_fill_bytes;
        self.sync_rounds += o.sync_rounds;
        self.syncs_served += o.syncs_served;
        self.fdatasyncs += o.fdatasyncs;
        self.syncfs_calls += o.syncfs_calls;
        self.sync_round_us += o.sync_round_us;
        self.reserved_bytes += o.reserved_bytes;
        self.reserve_bytes_max += o.reserve_bytes_max;
        self.cache_bytes += o.cache_bytes;
        self.cache_bytes_max += o.cache_bytes_max;
        self.read_aheads += o.read_aheads;
        self.reads_from_read_ahead += o.reads_from_read_ahead;
        self.read_ahead_bytes += o.read_ahead_bytes;
        self.segment_files_open += o.segment_files_open;
        self.segment_files_max += o.segment_files_max;
        self.segment_file_opens += o.segment_file_opens;
        self.segment_file_evictions += o.segment_file_evictions;
    }
}

/// A sync round being gathered or running: the files joined and, once done, its outcome.
#[derive(Default)]
struct Round {
    /// Each joined file and whether its write changed the file's metadata.
    files: RefCell<Vec<(Rc<File>, bool)>>,
    outcome: RefCell<Option<Result<(), String>>>,
    /// A task runs it (it is no longer the one gathering).
    started: Cell<bool>,
}

pub(crate) struct Device {
    limits: Cell<ShardLimits>,
    stats: RefCell<DeviceStats>,
    gathering: RefCell<Rc<Round>>,
    /// Rounds running now (at most `ROUNDS_IN_FLIGHT`).
    running: Cell<usize>,
    round_done: WaitQueue,
    /// Logs that hold some of the reserve now.
    holders: Cell<u64>,
}

impl Device {
    fn new(limits: ShardLimits) -> Device {
        Device {
            limits: Cell::new(limits),
            stats: RefCell::new(DeviceStats::default()),
            gathering: RefCell::new(Rc::new(Round::default())),
            running: Cell::new(0),
            round_done: WaitQueue::new(),
            holders: Cell::new(0),
        }
    }
}

thread_local! {
    static DEVICE: Rc<Device> = Rc::new(Device::new(ShardLimits::default()));
}

/// This shard's device.
pub(crate) fn device() -> Rc<Device> {
    DEVICE.with(Rc::clone)
}

/// Sets this shard's limits (a node calls it on each shard before opening logs).
pub fn configure_shard(limits: ShardLimits) {
    DEVICE.with(|d| d.limits.set(limits));
    crate::cache::set_pool_limit(limits.cache_bytes_max);
    crate::segment_files::set_max(limits.segment_files_max);
}

/// This shard's storage counters.
#[must_use]
pub fn shard_stats() -> DeviceStats {
    DEVICE.with(|d| {
        let mut s = *d.stats.borrow();
        s.reserve_bytes_max = d.limits.get().reserve_bytes_max;
        s.cache_bytes_max = d.limits.get().cache_bytes_max;
        s.cache_bytes = crate::cache::pool_bytes();
        let files = crate::segment_files::stats();
        s.segment_files_open = files.open;
        s.segment_files_max = files.max;
        s.segment_file_opens = files.opens;
        s.segment_file_evictions = files.evictions;
        s
    })
}

impl Device {
    pub(crate) fn count_write(&self, bytes: u64, zero_fill: bool) {
        let mut s = self.stats.borrow_mut();
        s.writes += 1;
        s.bytes_written += bytes;
        if zero_fill {
            s.zero_fill_bytes += bytes;
        }
    }

    /// Up to `want` bytes of reserve (whole pages), as much as the shard's budget has left
    /// and at most a fair share of it: the budget divided among the logs that hold some
    /// (counting the asking one, `holding` or not). Without the share the first logs to ask
    /// would hold all of it and the others extend their files with every write (a
    /// metadata change each, synced by a journal commit) when thousands of partitions
    /// write at once.
    pub(crate) fn take_reserve(&self, want: u64, holding: bool) -> u64 {
        let max = self.limits.get().reserve_bytes_max;
        let share = max / (self.holders.get() + u64::from(!holding)).max(1);
        let mut s = self.stats.borrow_mut();
        let granted = io::align_down(want.min(share).min(max.saturating_sub(s.reserved_bytes)));
        s.reserved_bytes += granted;
        granted
    }

    /// A log's reserve went from `before` to `after` bytes (it counts among the holders
    /// the fair share divides by while it holds any).
    pub(crate) fn note_held(&self, before: u64, after: u64) {
        match (before > 0, after > 0) {
            (false, true) => self.holders.set(self.holders.get() + 1),
            (true, false) => self.holders.set(self.holders.get().saturating_sub(1)),
            _ => {}
        }
    }

    /// Gives back reserve that writes used up or a trim released.
    pub(crate) fn return_reserve(&self, bytes: u64) {
        let mut s = self.stats.borrow_mut();
        s.reserved_bytes = s.reserved_bytes.saturating_sub(bytes);
    }

    /// Takes `bytes` of the shard's read-ahead budget, all or nothing: up to all of the
    /// budget for a reader's `first` window, up to half of it for windows further ahead.
    pub(crate) fn take_read_ahead(&self, bytes: u64, first: bool) -> bool {
        let all = self.limits.get().read_ahead_bytes_max;
        let max = if first { all } else { all / 2 };
        let mut s = self.stats.borrow_mut();
        if s.read_ahead_bytes + bytes > max {
            return false;
        }
        s.read_ahead_bytes += bytes;
        s.read_aheads += 1;
        true
    }

    pub(crate) fn return_read_ahead(&self, bytes: u64) {
        let mut s = self.stats.borrow_mut();
        s.read_ahead_bytes = s.read_ahead_bytes.saturating_sub(bytes);
    }

    pub(crate) fn count_read_from_read_ahead(&self) {
        self.stats.borrow_mut().reads_from_read_ahead += 1;
    }

    /// Makes `file`'s completed writes durable in the shard's next round; `metadata`: a
    /// write changed the file's size or extents since its last sync.
    pub(crate) async fn sync(&self, file: Rc<File>, metadata: bool) -> Result<(), String> {
        let round = self.gathering.borrow().clone();
        round.files.borrow_mut().push((file, metadata));
        loop {
            if let Some(outcome) = round.outcome.borrow().clone() {
                return outcome;
            }
            if !round.started.get() && self.running.get() < ROUNDS_IN_FLIGHT {
                // Ours is the gathering round (it has not run): run it, once the logs
                // whose writes completed in the same turn of the executor have joined it.
                round.started.set(true);
                self.running.set(self.running.get() + 1);
                io::rt::yield_now().await;
                *self.gathering.borrow_mut() = Rc::new(Round::default());
                let started = std::time::Instant::now();
                let outcome = self.run_round(&round).await;
                self.stats.borrow_mut().sync_round_us += started.elapsed().as_micros() as u64;
                *round.outcome.borrow_mut() = Some(outcome.clone());
                self.running.set(self.running.get() - 1);
                self.round_done.notify_all();
                return outcome;
            }
            self.round_done.wait().await;
        }
    }

    async fn run_round(&self, round: &Round) -> Result<(), String> {
        let files = std::mem::take(&mut *round.files.borrow_mut());
        let changed: Vec<&Rc<File>> = files.iter().filter(|(_, metadata)| *metadata).map(|(f, _)| f).collect();
        {
            let mut s = self.stats.borrow_mut();
            s.sync_rounds += 1;
            s.syncs_served += files.len() as u64;
        }
        let named = |f: &File, e: std::io::Error| format!("syncing {} failed: {e}", f.path().display());
        if changed.len() > METADATA_FDATASYNCS_MAX {
            self.stats.borrow_mut().syncfs_calls += 1;
            return changed[0]
                .syncfs()
                .await
                .map_err(|e| format!("syncfs for {} failed: {e}", changed[0].path().display()));
        }
        // The files that changed metadata, or else one file: its fdatasync flushes the device.
        let to_sync: Vec<&Rc<File>> =
            if changed.is_empty() { files.iter().take(1).map(|(f, _)| f).collect() } else { changed };
        self.stats.borrow_mut().fdatasyncs += to_sync.len() as u64;
        let syncs: Vec<LocalFuture<'_, Result<(), String>>> = to_sync
            .into_iter()
            .map(|f| -> LocalFuture<'_, Result<(), String>> {
                Box::pin(async move { f.fdatasync().await.map_err(|e| named(f, e)) })
            })
            .collect();
        io::join_all(syncs).await.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reserve goes to the logs that ask, a fair share each: the budget divided among
    /// the logs holding some (with the asking one), so with many logs writing each keeps
    /// some zero-filled space ahead instead of the first few holding all of it.
    #[test]
    fn the_reserve_is_shared_fairly_among_the_logs_that_hold_it() {
        const MIB: u64 = 1 << 20;
        let d = Device::new(ShardLimits { reserve_bytes_max: MIB, ..ShardLimits::default() });
        let take = |want: u64, held: u64| {
            let granted = d.take_reserve(want, held > 0);
            d.note_held(held, held + granted);
            granted
        };
        // Alone, a log gets what it wants, up to the whole budget.
        assert_eq!(take(256 << 10, 0), 256 << 10);
        // A second log: at most half.
        assert_eq!(take(MIB, 0), MIB / 2);
        // A third: a third of the budget, whole pages, and never more than is left.
        assert_eq!(take(MIB, 0), 256 << 10, "what is left");
        assert_eq!(take(MIB, 0), 0, "nothing left");
        d.return_reserve(MIB);
        assert_eq!(take(MIB, 0), io::align_down(MIB / 4), "four holders' share");
        // A holder that gives its reserve back no longer counts.
        d.note_held(256 << 10, 0);
        d.return_reserve(MIB);
        assert_eq!(take(MIB, 4096), io::align_down(MIB / 3), "three holders, the asking one among them");
    }
}
