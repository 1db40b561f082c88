//! A replica's log as replication sees it: a sequence of entries (offset, leader epoch,
//! payload id) from offset 0, with the leader-epoch cache (each epoch's first offset) and
//! the OffsetsForLeaderEpoch answer computed from it.
//!
//! Guarantees (asserted, they are bugs otherwise): offsets are contiguous; epochs never
//! decrease along the log; the epoch cache always equals what the entries say. The real
//! `PartitionLog` maps onto this through `LogOp`: a replica's state machine changes its
//! `ReplicaLog` and emits the same change as a `LogOp` for the storage to perform; the
//! epoch cache is what Kafka keeps in `leader-epoch-checkpoint`. Log start is always 0
//! here (retention is not modelled).

use sluice_schemas::ids::{LeaderEpoch, Offset};

use super::PayloadId;

/// One entry (a record batch in the real log: its base offset and partition leader epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub offset: Offset,
    pub epoch: LeaderEpoch,
    pub payload: PayloadId,
}

/// A change to perform on the stored log, in order with the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOp {
    /// Append these entries at the log end (the first one's offset is the log end offset).
    Append(Vec<LogEntry>),
    /// Remove every entry at or above this offset.
    TruncateTo(Offset),
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
    entries: Vec<LogEntry>,
    /// The leader-epoch cache, strictly increasing in both fields.
    epochs: Vec<EpochStart>,
    /// How many truncations removed entries: lets checkers cache what they verified.
    truncations: u64,
}

impl ReplicaLog {
    #[must_use]
    pub fn new() -> ReplicaLog {
        ReplicaLog::default()
    }

    /// The log end offset (LEO): the offset the next entry gets.
    #[must_use]
    pub fn end_offset(&self) -> Offset {
        Offset(self.entries.len() as u64)
    }

    /// The epoch of the last entry; `None` when the log is empty.
    #[must_use]
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.last().map(|e| e.epoch)
    }

    #[must_use]
    pub fn entry(&self, offset: Offset) -> Option<&LogEntry> {
        usize::try_from(offset.0).ok().and_then(|i| self.entries.get(i))
    }

    /// Entries from `offset` (inclusive) to `until` (exclusive), at most `max`.
    #[must_use]
    pub fn read(&self, offset: Offset, until: Offset, max: usize) -> Vec<LogEntry> {
        let end = until.min(self.end_offset());
        if offset >= end {
            return Vec::new();
        }
        let from = offset.0 as usize;
        let to = (end.0 as usize).min(from + max);
        self.entries[from..to].to_vec()
    }

    /// Every entry, in offset order.
    #[must_use]
    pub fn entries(&self) -> &[LogEntry] {
        &self.entries
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

    /// Appends one entry in `epoch` (on a leader); returns its offset.
    pub fn append(&mut self, epoch: LeaderEpoch, payload: PayloadId) -> LogEntry {
        let entry = LogEntry { offset: self.end_offset(), epoch, payload };
        self.push(entry);
        entry
    }

    /// Appends an entry copied from the leader; it must land exactly at the log end, in an
    /// epoch no older than the last one.
    pub fn push(&mut self, entry: LogEntry) {
        assert_eq!(entry.offset, self.end_offset(), "entry {entry:?} is not at the log end");
        match self.latest_epoch() {
            Some(latest) if latest == entry.epoch => {}
            Some(latest) => {
                assert!(latest < entry.epoch, "entry {entry:?} goes back from epoch {latest}");
                self.epochs.push(EpochStart { epoch: entry.epoch, start: entry.offset });
            }
            None => self.epochs.push(EpochStart { epoch: entry.epoch, start: entry.offset }),
        }
        self.entries.push(entry);
    }

    /// Removes every entry at or above `offset` (nothing if the log ends before it).
    pub fn truncate_to(&mut self, offset: Offset) {
        if offset >= self.end_offset() {
            return;
        }
        self.entries.truncate(offset.0 as usize);
        self.epochs.retain(|e| e.start < offset);
        self.truncations += 1;
    }

    /// Performs a `LogOp` (what the storage does with it; the simulator's disk).
    pub fn apply(&mut self, op: &LogOp) {
        match op {
            LogOp::Append(entries) => entries.iter().for_each(|e| self.push(*e)),
            LogOp::TruncateTo(offset) => self.truncate_to(*offset),
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
    #[should_panic(expected = "goes back from epoch")]
    fn epochs_never_go_back_along_the_log() {
        let mut log = log_with(&[2]);
        log.append(LeaderEpoch(1), PayloadId(1));
    }
}
