//! A replica's log as replication sees it: a sequence of entries (record batches: base
//! offset, offsets spanned, leader epoch) from offset 0, with the leader-epoch cache (each
//! epoch's first offset) and the OffsetsForLeaderEpoch answer computed from it.
//!
//! Two forms. A *tracked* log (`ReplicaLog::new`, the simulator and unit tests) keeps
//! every entry, with a payload id that checkers compare. A *stored* log
//! (`ReplicaLog::stored`, the node) keeps only the log end and the epoch cache: the
//! batches themselves live in the `PartitionLog`, which the node keeps in step through
//! `LogOp`s (and the leader's own appends), and `read` returns nothing, so the node fills
//! fetch replies from the `PartitionLog`.
//!
//! Guarantees (asserted, they are bugs otherwise): entries are contiguous; epochs never
//! decrease along the log; the epoch cache always equals what the entries say. A
//! truncation removes whole entries: the one holding the offset and everything after.
//! A tracked log starts at offset 0 (retention is not modelled). A stored log starts where
//! its `PartitionLog` does; a follower whose log ends before its leader's log start (the
//! leader's retention or DeleteRecords removed what it lacks) is reset to start empty at
//! the leader's log start (`LogOp::Reset`, Kafka's truncateFullyAndStartAt).

use sluice_schemas::ids::{LeaderEpoch, Offset};

use super::PayloadId;

/// One entry: a record batch, its base offset, how many offsets it spans and the epoch of
/// the leader that appended it (the batch's `partition_leader_epoch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub offset: Offset,
    /// At least 1.
    pub count: u64,
    pub epoch: LeaderEpoch,
    /// Stands for the batch's contents (0 in the node, where the bytes travel beside).
    pub payload: PayloadId,
}

impl LogEntry {
    /// The offset after the entry's last one.
    #[must_use]
    pub fn end(&self) -> Offset {
        self.offset.plus(self.count)
    }
}

/// A change to perform on the stored log, in order with the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOp {
    /// Append these entries at the log end (the first one's offset is the log end offset).
    Append(Vec<LogEntry>),
    /// Remove the entry holding this offset and every one after it.
    TruncateTo(Offset),
    /// Remove every entry and start the log empty at this offset.
    Reset(Offset),
    /// Move the log start up to this offset (at most the log end): the entries below it
    /// are no longer read (the leader's DeleteRecords or retention).
    AdvanceStart(Offset),
}

/// The OffsetsForLeaderEpoch answer: the largest epoch at or below the one asked for,
/// and its end offset (the first offset of the next larger epoch, or the log end offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

/// An epoch and its first offset in this log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EpochStart {
    epoch: LeaderEpoch,
    start: Offset,
}

/// A replica's log. Cloned as a whole to stand for what survives a crash (every appended
/// entry is durable in the model).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaLog {
    /// Every entry (a tracked log), or `None` (a stored log).
    entries: Option<Vec<LogEntry>>,
    /// The log start offset: 0, or where a stored log starts (or was reset to).
    start: Offset,
    end: Offset,
    /// The leader-epoch cache, strictly increasing in both fields.
    epochs: Vec<EpochStart>,
    /// How many truncations removed entries: lets checkers cache what they verified.
    truncations: u64,
}

impl ReplicaLog {
    /// An empty tracked log.
    #[must_use]
    pub fn new() -> ReplicaLog {
        ReplicaLog { entries: Some(Vec::new()), ..ReplicaLog::default() }
    }

    /// The view of a stored log from `start` to `end` with this epoch cache (from
    /// `PartitionLog::epoch_starts`); epochs at or after `end` are ignored.
    #[must_use]
    pub fn stored(start: Offset, end: Offset, epochs: &[(LeaderEpoch, Offset)]) -> ReplicaLog {
        let mut cache: Vec<EpochStart> = Vec::new();
        for (epoch, start) in epochs {
            if *start < end && cache.last().is_none_or(|last| last.epoch < *epoch && last.start <= *start) {
                cache.push(EpochStart { epoch: *epoch, start: *start });
            }
        }
        ReplicaLog { entries: None, start: start.min(end), end, epochs: cache, truncations: 0 }
    }

    /// The log start offset.
    #[must_use]
    pub fn start_offset(&self) -> Offset {
        self.start
    }

    /// Empties the log and starts it at `start`. With `epoch`, the cache names it as the
    /// epoch the log starts in (the leader's epoch at its log start), so the follower's
    /// next fetch proves where its empty log stands; the first entry appended replaces it.
    pub fn reset(&mut self, start: Offset, epoch: Option<LeaderEpoch>) {
        if let Some(entries) = &mut self.entries {
            entries.clear();
        }
        self.start = start;
        self.end = start;
        self.epochs = epoch.map(|epoch| EpochStart { epoch, start }).into_iter().collect();
        self.truncations += 1;
    }

    /// The log end offset (LEO): the offset the next entry gets.
    #[must_use]
    pub fn end_offset(&self) -> Offset {
        self.end
    }

    /// The epoch of the last entry; `None` when the log is empty.
    #[must_use]
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.last().map(|e| e.epoch)
    }

    /// The entry holding `offset` (tracked logs only).
    #[must_use]
    pub fn entry(&self, offset: Offset) -> Option<&LogEntry> {
        let entries = self.entries.as_ref()?;
        let i = entries.partition_point(|e| e.end() <= offset);
        entries.get(i).filter(|e| e.offset <= offset)
    }

    /// Entries that start from `offset` (inclusive) to `until` (exclusive), at most `max`;
    /// nothing for a stored log (its bytes are read from the `PartitionLog`).
    #[must_use]
    pub fn read(&self, offset: Offset, until: Offset, max: usize) -> Vec<LogEntry> {
        let Some(entries) = &self.entries else { return Vec::new() };
        let from = entries.partition_point(|e| e.offset < offset);
        entries[from..].iter().take_while(|e| e.offset < until).take(max).copied().collect()
    }

    /// Every entry, in offset order (none for a stored log).
    #[must_use]
    pub fn entries(&self) -> &[LogEntry] {
        self.entries.as_deref().unwrap_or_default()
    }

    /// The leader-epoch cache: each epoch with its first offset.
    #[must_use]
    pub fn epoch_starts(&self) -> Vec<(LeaderEpoch, Offset)> {
        self.epochs.iter().map(|e| (e.epoch, e.start)).collect()
    }

    #[must_use]
    pub fn truncations(&self) -> u64 {
        self.truncations
    }

    /// Appends one single-offset entry in `epoch` (on a leader); returns it.
    pub fn append(&mut self, epoch: LeaderEpoch, payload: PayloadId) -> LogEntry {
        let entry = LogEntry { offset: self.end_offset(), count: 1, epoch, payload };
        self.push(entry);
        entry
    }

    /// Appends an entry; it must land exactly at the log end, in an epoch no older than
    /// the last one.
    pub fn push(&mut self, entry: LogEntry) {
        assert_eq!(entry.offset, self.end_offset(), "entry {entry:?} is not at the log end");
        assert!(entry.count > 0, "entry {entry:?} spans no offset");
        match self.latest_epoch() {
            Some(latest) if latest == entry.epoch => {}
            Some(latest) => {
                assert!(latest < entry.epoch, "entry {entry:?} goes back from epoch {latest}");
                match self.epochs.last_mut() {
                    // The epoch a reset log starts in holds no entry: this one's replaces it.
                    Some(last) if last.start == entry.offset => last.epoch = entry.epoch,
                    _ => self.epochs.push(EpochStart { epoch: entry.epoch, start: entry.offset }),
                }
            }
            None => self.epochs.push(EpochStart { epoch: entry.epoch, start: entry.offset }),
        }
        self.end = entry.end();
        if let Some(entries) = &mut self.entries {
            entries.push(entry);
        }
    }

    /// Removes the entry holding `offset` and every one after it (nothing if the log ends
    /// at or before it). A stored log cannot see entry boundaries: there `offset` must be
    /// one, as replication's truncation points always are (both logs' batches in an
    /// epoch are that epoch's leader's batches).
    pub fn truncate_to(&mut self, offset: Offset) {
        if offset >= self.end {
            return;
        }
        self.end = offset.max(self.start);
        if let Some(entries) = &mut self.entries {
            let keep = entries.partition_point(|e| e.end() <= offset);
            entries.truncate(keep);
            self.end = entries.last().map_or(self.start, LogEntry::end);
        }
        let end = self.end;
        self.epochs.retain(|e| e.start < end);
        self.truncations += 1;
    }

    /// Performs a `LogOp` (what the storage does with it; the simulator's disk).
    pub fn apply(&mut self, op: &LogOp) {
        match op {
            LogOp::Append(entries) => entries.iter().for_each(|e| self.push(*e)),
            LogOp::TruncateTo(offset) => self.truncate_to(*offset),
            LogOp::Reset(start) => self.reset(*start, None),
            LogOp::AdvanceStart(offset) => self.start = self.start.max((*offset).min(self.end)),
        }
    }

    /// OffsetsForLeaderEpoch: the largest epoch at or below `epoch` that this log has,
    /// with its end offset (the first offset of the next larger epoch, or the log end
    /// offset when it is the last). `None` when every epoch here is larger (or the log is
    /// empty): nothing of `epoch` or before is shared, truncate to the log start.
    #[must_use]
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<EpochEnd> {
        let index = self.epochs.partition_point(|e| e.epoch <= epoch);
        if index == 0 {
            return None;
        }
        let found = self.epochs[index - 1].epoch;
        let end_offset = self.epochs.get(index).map_or(self.end_offset(), |next| next.start);
        Some(EpochEnd { epoch: found, end_offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(epochs: &[u32]) -> ReplicaLog {
        let mut log = ReplicaLog::new();
        for (i, e) in epochs.iter().enumerate() {
            log.append(LeaderEpoch(*e), PayloadId(i as u64));
        }
        log
    }

    #[test]
    fn epoch_cache_records_each_epochs_first_offset() {
        let log = log_with(&[1, 1, 3, 3, 3, 4]);
        assert_eq!(
            log.epoch_starts(),
            vec![(LeaderEpoch(1), Offset(0)), (LeaderEpoch(3), Offset(2)), (LeaderEpoch(4), Offset(5))]
        );
    }

    #[test]
    fn end_offset_for_epoch_is_next_epochs_start_or_log_end() {
        let log = log_with(&[1, 1, 3, 3, 3, 4]);
        let end = |e| log.end_offset_for_epoch(LeaderEpoch(e));
        assert_eq!(end(0), None, "no epoch at or below 0");
        assert_eq!(end(1), Some(EpochEnd { epoch: LeaderEpoch(1), end_offset: Offset(2) }));
        assert_eq!(end(2), Some(EpochEnd { epoch: LeaderEpoch(1), end_offset: Offset(2) }), "largest epoch <= 2 is 1");
        assert_eq!(end(3), Some(EpochEnd { epoch: LeaderEpoch(3), end_offset: Offset(5) }));
        assert_eq!(end(4), Some(EpochEnd { epoch: LeaderEpoch(4), end_offset: Offset(6) }), "last epoch ends at LEO");
        assert_eq!(end(9), Some(EpochEnd { epoch: LeaderEpoch(4), end_offset: Offset(6) }));
        assert_eq!(ReplicaLog::new().end_offset_for_epoch(LeaderEpoch(5)), None);
    }

    #[test]
    fn truncation_drops_entries_and_their_epochs() {
        let mut log = log_with(&[1, 1, 3, 3, 3, 4]);
        log.truncate_to(Offset(3));
        assert_eq!(log.end_offset(), Offset(3));
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(3)));
        log.truncate_to(Offset(2));
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(1)));
        assert_eq!(log.truncations(), 2);
        log.truncate_to(Offset(7));
        assert_eq!(log.truncations(), 2, "truncating past the end changes nothing");
        log.append(LeaderEpoch(5), PayloadId(9));
        assert_eq!(log.epoch_starts(), vec![(LeaderEpoch(1), Offset(0)), (LeaderEpoch(5), Offset(2))]);
    }

    #[test]
    fn batches_span_offsets_and_truncation_removes_the_whole_batch() {
        let mut log = ReplicaLog::new();
        for (offset, count, epoch) in [(0, 3, 1), (3, 2, 1), (5, 4, 2)] {
            log.push(LogEntry { offset: Offset(offset), count, epoch: LeaderEpoch(epoch), payload: PayloadId(offset) });
        }
        assert_eq!(log.end_offset(), Offset(9));
        assert_eq!(log.entry(Offset(4)).map(|e| e.offset), Some(Offset(3)), "offset 4 is in the batch from 3");
        assert_eq!(log.read(Offset(3), Offset(9), 10).len(), 2);
        assert_eq!(log.end_offset_for_epoch(LeaderEpoch(1)).map(|e| e.end_offset), Some(Offset(5)));
        log.truncate_to(Offset(6));
        assert_eq!(log.end_offset(), Offset(5), "the batch holding 6 went whole");
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(1)));
        log.truncate_to(Offset(4));
        assert_eq!(log.end_offset(), Offset(3));
    }

    #[test]
    fn a_stored_log_keeps_only_its_end_and_epoch_cache() {
        let mut log =
            ReplicaLog::stored(Offset(0), Offset(100), &[(LeaderEpoch(1), Offset(0)), (LeaderEpoch(4), Offset(60))]);
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(3)),
            Some(EpochEnd { epoch: LeaderEpoch(1), end_offset: Offset(60) })
        );
        assert!(log.read(Offset(0), Offset(100), 10).is_empty(), "the bytes are in the PartitionLog");
        log.push(LogEntry { offset: Offset(100), count: 20, epoch: LeaderEpoch(6), payload: PayloadId(0) });
        assert_eq!(log.end_offset(), Offset(120));
        log.truncate_to(Offset(60));
        assert_eq!(log.epoch_starts(), vec![(LeaderEpoch(1), Offset(0))]);
        assert_eq!(log.end_offset(), Offset(60));
        assert!(log.entries().is_empty());
        let ignored =
            ReplicaLog::stored(Offset(0), Offset(10), &[(LeaderEpoch(1), Offset(0)), (LeaderEpoch(2), Offset(10))]);
        assert_eq!(ignored.latest_epoch(), Some(LeaderEpoch(1)), "an epoch starting at the end is not in the log");
    }

    /// A reset log is empty from its new start, in the epoch it was given, until its first
    /// entry (whose epoch takes that place).
    #[test]
    fn a_reset_log_starts_empty_where_it_was_told() {
        let mut log = log_with(&[1, 1, 2]);
        log.reset(Offset(50), Some(LeaderEpoch(3)));
        assert_eq!((log.start_offset(), log.end_offset()), (Offset(50), Offset(50)));
        assert!(log.entries().is_empty());
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(3)));
        assert_eq!(log.end_offset_for_epoch(LeaderEpoch(3)).map(|e| e.end_offset), Some(Offset(50)));
        log.push(LogEntry { offset: Offset(50), count: 5, epoch: LeaderEpoch(4), payload: PayloadId(7) });
        assert_eq!(log.epoch_starts(), vec![(LeaderEpoch(4), Offset(50))]);
        log.apply(&LogOp::Reset(Offset(0)));
        assert_eq!((log.start_offset(), log.end_offset(), log.latest_epoch()), (Offset(0), Offset(0), None));
    }

    #[test]
    #[should_panic(expected = "goes back from epoch")]
    fn epochs_never_go_back_along_the_log() {
        let mut log = log_with(&[2]);
        log.append(LeaderEpoch(1), PayloadId(1));
    }
}
