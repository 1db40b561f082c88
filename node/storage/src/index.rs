//! The sparse offset index and time index of one segment.
//!
//! One entry pair is added every `index_interval_bytes` of batches (and for the first
//! batch), so a lookup lands at most one interval before the wanted batch and the read
//! walks batch headers from there. Entries are kept in memory; closed segments have
//! them on disk too (`.index`, `.timeindex`), written once when the segment rolls and
//! checked when loaded: a missing or damaged file is rebuilt from the segment.
//!
//! On-disk formats, big-endian as Kafka's: `.index` holds (relative offset u32,
//! position u32) entries; `.timeindex` holds (timestamp i64, relative offset u32)
//! entries, where the timestamp is the largest batch max-timestamp *before* that offset,
//! so every batch before the entry's offset is older than the entry's timestamp.

use sluice_schemas::Offset;

/// Bytes of one `.index` entry.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes of one `.timeindex` entry.
pub const TIME_ENTRY_BYTES: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the batch minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
    /// Largest max-timestamp of the batches before this one in the segment.
    pub timestamp_before: i64,
}

#[derive(Clone, Debug)]
pub struct SegmentIndex {
    base: Offset,
    interval_bytes: u64,
    entries: Vec<IndexEntry>,
    bytes_since_entry: u64,
    /// Largest batch max-timestamp in the segment (-1 when empty).
    max_timestamp: i64,
}

impl SegmentIndex {
    #[must_use]
    pub fn new(base: Offset, interval_bytes: u64) -> SegmentIndex {
        SegmentIndex { base, interval_bytes, entries: Vec::new(), bytes_since_entry: 0, max_timestamp: -1 }
    }

    #[must_use]
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    #[must_use]
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Records a batch appended at `position` with `bytes` bytes.
    pub fn on_batch(&mut self, base_offset: Offset, position: u64, bytes: u64, max_timestamp: i64) {
        assert!(base_offset >= self.base, "batch {base_offset} below segment base {}", self.base);
        let relative = base_offset.records_since(self.base);
        assert!(relative <= u64::from(u32::MAX) && position <= u64::from(u32::MAX));
        if self.entries.is_empty() || self.bytes_since_entry >= self.interval_bytes {
            if let Some(last) = self.entries.last() {
                assert!(u64::from(last.position) < position && u64::from(last.relative_offset) < relative);
            }
            self.entries.push(IndexEntry {
                relative_offset: relative as u32,
                position: position as u32,
                timestamp_before: self.max_timestamp,
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += bytes;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
    }

    /// The position to start walking from to find the batch holding `offset`: the last
    /// entry at or before it, or the segment's start.
    #[must_use]
    pub fn position_for_offset(&self, offset: Offset) -> u64 {
        if offset < self.base {
            return 0;
        }
        let relative = offset.records_since(self.base);
        let i = self.entries.partition_point(|e| u64::from(e.relative_offset) <= relative);
        if i == 0 {
            0
        } else {
            u64::from(self.entries[i - 1].position)
        }
    }

    /// The last indexed batch start after byte `after` and at or before byte `at_most`:
    /// its position and offset (a batch boundary known without reading the segment).
    #[must_use]
    pub fn batch_start_within(&self, after: u64, at_most: u64) -> Option<(u64, Offset)> {
        let i = self.entries.partition_point(|e| u64::from(e.position) <= at_most);
        let entry = self.entries[..i].last().filter(|e| u64::from(e.position) > after)?;
        Some((u64::from(entry.position), self.base.plus(u64::from(entry.relative_offset))))
    }

    /// The position to start walking from to find the first batch whose max-timestamp is
    /// at least `timestamp`: the last entry before which every batch is older.
    #[must_use]
    pub fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        let i = self.entries.partition_point(|e| e.timestamp_before < timestamp);
        if i == 0 {
            0
        } else {
            u64::from(self.entries[i - 1].position)
        }
    }

    /// Forgets entries at or after `position` (the segment was cut there), and the last
    /// entry before it (see `reset_tail`). Returns the position from which the caller
    /// feeds the remaining batches to `on_batch` again to make the state exact.
    pub fn truncate_at(&mut self, position: u64) -> u64 {
        let keep = self.entries.partition_point(|e| u64::from(e.position) < position);
        self.entries.truncate(keep);
        self.reset_tail()
    }

    /// Drops the state after the last entry, so the batches from the last entry on can
    /// be fed again with `on_batch`. Returns that entry's position (0 when empty).
    pub fn reset_tail(&mut self) -> u64 {
        match self.entries.pop() {
            Some(last) => {
                self.max_timestamp = last.timestamp_before;
                self.bytes_since_entry = self.interval_bytes; // the next batch re-adds it
                u64::from(last.position)
            }
            None => {
                self.max_timestamp = -1;
                self.bytes_since_entry = 0;
                0
            }
        }
    }

    /// The `.index` and `.timeindex` file contents.
    #[must_use]
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        let mut offsets = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        let mut times = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for e in &self.entries {
            offsets.extend_from_slice(&e.relative_offset.to_be_bytes());
            offsets.extend_from_slice(&e.position.to_be_bytes());
            times.extend_from_slice(&e.timestamp_before.to_be_bytes());
            times.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        (offsets, times)
    }

    /// Loads index files of a closed segment of `segment_bytes` bytes, checking that
    /// they agree with each other and with the segment. `Err` says what is damaged; the
    /// caller then rebuilds. The caller then walks the batches after the last entry (see
    /// `reset_tail`) to learn the segment's end and max timestamp.
    pub fn decode(
        base: Offset,
        interval_bytes: u64,
        offsets: &[u8],
        times: &[u8],
        segment_bytes: u64,
    ) -> Result<SegmentIndex, String> {
        if !offsets.len().is_multiple_of(OFFSET_ENTRY_BYTES) || !times.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return Err(format!("index sizes {} and {} are not whole entries", offsets.len(), times.len()));
        }
        let count = offsets.len() / OFFSET_ENTRY_BYTES;
        if count != times.len() / TIME_ENTRY_BYTES {
            return Err(format!("offset index has {count} entries, time index {}", times.len() / TIME_ENTRY_BYTES));
        }
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let o = &offsets[i * OFFSET_ENTRY_BYTES..(i + 1) * OFFSET_ENTRY_BYTES];
            let t = &times[i * TIME_ENTRY_BYTES..(i + 1) * TIME_ENTRY_BYTES];
            let relative_offset = u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
            let position = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
            let timestamp_before = i64::from_be_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]);
            let time_relative = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
            if time_relative != relative_offset {
                return Err(format!("entry {i}: offset index says {relative_offset}, time index {time_relative}"));
            }
            if u64::from(position) >= segment_bytes {
                return Err(format!("entry {i}: position {position} is past the segment's {segment_bytes} bytes"));
            }
            if let Some(prev) = entries.last() {
                let prev: &IndexEntry = prev;
                if prev.relative_offset >= relative_offset
                    || prev.position >= position
                    || prev.timestamp_before > timestamp_before
                {
                    return Err(format!("entry {i} does not follow entry {}", i - 1));
                }
            } else if position != 0 {
                return Err(format!("first entry at position {position}, not 0"));
            }
            entries.push(IndexEntry { relative_offset, position, timestamp_before });
        }
        let max_timestamp = entries.last().map_or(-1, |e| e.timestamp_before);
        Ok(SegmentIndex { base, interval_bytes, entries, bytes_since_entry: 0, max_timestamp })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn index_of(batches: &[(u64, u64, u64, i64)]) -> SegmentIndex {
        let mut index = SegmentIndex::new(Offset(100), 100);
        for &(offset, position, bytes, ts) in batches {
            index.on_batch(Offset(offset), position, bytes, ts);
        }
        index
    }

    #[test]
    fn an_entry_is_added_for_the_first_batch_and_then_every_interval() {
        let index = index_of(&[(100, 0, 60, 5), (101, 60, 60, 7), (102, 120, 60, 6), (103, 180, 60, 9)]);
        let positions: Vec<u32> = index.entries().iter().map(|e| e.position).collect();
        assert_eq!(positions, vec![0, 120]);
        assert_eq!(index.entries()[1].timestamp_before, 7);
        assert_eq!(index.max_timestamp(), 9);
        assert_eq!(index.position_for_offset(Offset(101)), 0);
        assert_eq!(index.position_for_offset(Offset(103)), 120);
        assert_eq!(index.position_for_timestamp(7), 0);
        assert_eq!(index.position_for_timestamp(8), 120);
    }

    #[test]
    fn a_batch_start_within_a_range_is_the_last_entry_in_it() {
        // Entries at 0 (offset 100), 150 (102) and 300 (104).
        let index = index_of(&[(100, 0, 150, 5), (102, 150, 150, 7), (104, 300, 150, 9)]);
        assert_eq!(index.batch_start_within(0, 449), Some((300, Offset(104))));
        assert_eq!(index.batch_start_within(0, 299), Some((150, Offset(102))));
        assert_eq!(index.batch_start_within(0, 150), Some((150, Offset(102))), "the end is in the range");
        assert_eq!(index.batch_start_within(150, 299), None, "the start is not");
        assert_eq!(index.batch_start_within(0, 149), None);
        assert_eq!(index.batch_start_within(300, 1000), None);
    }

    #[test]
    fn encode_decode_round_trips_and_damage_is_detected() {
        let index = index_of(&[(100, 0, 150, 5), (102, 150, 150, 7), (104, 300, 150, 9)]);
        let (o, t) = index.encode();
        let back = SegmentIndex::decode(Offset(100), 100, &o, &t, 450).unwrap();
        assert_eq!(back.entries(), index.entries());
        assert!(SegmentIndex::decode(Offset(100), 100, &o[..7], &t, 450).is_err());
        assert!(SegmentIndex::decode(Offset(100), 100, &o, &t, 200).is_err());
        let mut bad = o.clone();
        bad[8..12].copy_from_slice(&0u32.to_be_bytes());
        assert!(SegmentIndex::decode(Offset(100), 100, &bad, &t, 450).is_err());
    }

    #[test]
    fn truncation_drops_entries_at_or_after_the_cut() {
        let mut index = index_of(&[(100, 0, 150, 5), (102, 150, 150, 7), (104, 300, 150, 9)]);
        assert_eq!(index.truncate_at(300), 150);
        assert_eq!(index.entries().len(), 1);
        assert_eq!(index.max_timestamp(), 5);
        index.on_batch(Offset(102), 150, 150, 7);
        assert_eq!(index.entries().len(), 2);
        assert_eq!(index.max_timestamp(), 7);
    }
}
