//! Idempotent producers' state, derived from the log itself: per producer id, its epoch
//! and the last batches it wrote (sequence numbers and offsets), so that a batch retried
//! after a lost response is answered with its first append's offsets instead of being
//! stored twice, and a batch that skips sequence numbers is refused.
//!
//! Every batch a producer writes carries (producer id, epoch, base sequence) in its
//! RecordBatch v2 header, so every replica derives the same state from the same batches:
//! a leader as it appends, a follower as it copies, any replica when it opens its log
//! (from the snapshot written at the active segment's roll plus a scan of that segment).
//! A new leader or a restarted node therefore deduplicates a retry exactly as the old
//! leader would have. Kafka's `ProducerStateManager` and its `.snapshot` files do the same.
//!
//! Kafka's rules (KIP-98): the partition keeps the last five batches of each producer. A
//! batch equal to one of them is a duplicate; otherwise its base sequence must follow the
//! last one; a newer epoch starts afresh; an older epoch is fenced. A producer id the
//! partition does not know (new, or forgotten past `PRODUCERS_MAX` producers) is accepted
//! at any sequence. Plain state, no I/O.

use std::collections::{HashMap, VecDeque};

use sluice_schemas::batch::BatchHeader;
use sluice_schemas::Offset;

use crate::error::StorageError;

/// Batches remembered per producer (Kafka's max.in.flight for idempotence).
pub const RECENT_BATCHES: usize = 5;
/// Producers remembered per partition; past it, the least recently seen is forgotten
/// (its next batch is accepted as from a new producer).
pub const PRODUCERS_MAX: usize = 10_000;
/// The suffix of a producer-state snapshot, `<segment base>.producers`: the state as of
/// that segment's base offset (every batch before it), written when the segment starts.
pub const SNAPSHOT_SUFFIX: &str = "producers";

const SNAPSHOT_MAGIC: &[u8; 4] = b"SLPS";
const SNAPSHOT_VERSION: u16 = 1;

/// Who wrote a batch and which sequence numbers it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchIdentity {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
}

impl BatchIdentity {
    /// The identity of an idempotent batch; `None` for batches without a producer id or
    /// sequence (plain producers, transaction markers).
    #[must_use]
    pub fn of(header: &BatchHeader) -> Option<BatchIdentity> {
        let producer_id = header.producer_id.get();
        let first_sequence = header.base_sequence.get();
        if producer_id < 0 || first_sequence < 0 {
            return None;
        }
        let last_sequence = first_sequence.wrapping_add(header.last_offset_delta.get()) & i32::MAX;
        Some(BatchIdentity { producer_id, epoch: header.producer_epoch.get(), first_sequence, last_sequence })
    }

    fn same_batch(&self, r: &Recent) -> bool {
        r.first_sequence == self.first_sequence && r.last_sequence == self.last_sequence
    }
}

/// An idempotent batch and where it lies in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub id: BatchIdentity,
    pub base: Offset,
    pub last: Offset,
}

/// A retried batch that is already in the log, at these offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duplicate {
    pub base: Offset,
    pub last: Offset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Recent {
    first_sequence: i32,
    last_sequence: i32,
    base: Offset,
    last: Offset,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    recent: VecDeque<Recent>,
    /// When it was last written, in batches recorded by this partition (for eviction).
    seen: u64,
}

/// A producer's state as an operator sees it (DescribeProducers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_offset: Offset,
}

/// The idempotent producers of one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
    clock: u64,
}

impl ProducerStates {
    /// Checks the idempotent batches of one append, in order, each against the state and
    /// the batches before it in the same append. `Ok(Some)` when the append is exactly
    /// one batch that the log already holds; `Ok(None)` when it may be appended.
    pub fn check(&self, ids: &[BatchIdentity], batches_in_append: usize) -> Result<Option<Duplicate>, StorageError> {
        for (i, id) in ids.iter().enumerate() {
            // The same producer earlier in this append decides, else the state.
            let earlier = ids[..i].iter().rev().find(|e| e.producer_id == id.producer_id);
            let (epoch, last_sequence, duplicate) = match (earlier, self.producers.get(&id.producer_id)) {
                (Some(e), _) => (e.epoch, Some(e.last_sequence), None),
                (None, Some(p)) => {
                    let same = p.recent.iter().find(|r| id.same_batch(r));
                    (p.epoch, p.recent.back().map(|r| r.last_sequence), same)
                }
                (None, None) if id.first_sequence == 0 => continue,
                (None, None) => {
                    return Err(StorageError::UnknownProducer {
                        producer_id: id.producer_id,
                        sequence: id.first_sequence,
                    })
                }
            };
            if id.epoch < epoch {
                return Err(StorageError::ProducerFenced {
                    producer_id: id.producer_id,
                    epoch: id.epoch,
                    current: epoch,
                });
            }
            if id.epoch > epoch {
                if id.first_sequence != 0 {
                    return Err(StorageError::OutOfOrderSequence {
                        producer_id: id.producer_id,
                        sequence: id.first_sequence,
                        reason: format!("epoch {} is new here and starts at sequence 0", id.epoch),
                    });
                }
                continue;
            }
            if let Some(d) = duplicate {
                if batches_in_append != 1 {
                    return Err(StorageError::OutOfOrderSequence {
                        producer_id: id.producer_id,
                        sequence: id.first_sequence,
                        reason: "repeats a stored batch inside an append of several batches".to_string(),
                    });
                }
                return Ok(Some(Duplicate { base: d.base, last: d.last }));
            }
            if let Some(last) = last_sequence {
                let expected = last.wrapping_add(1) & i32::MAX;
                if id.first_sequence != expected {
                    return Err(StorageError::OutOfOrderSequence {
                        producer_id: id.producer_id,
                        sequence: id.first_sequence,
                        reason: format!("the last stored sequence is {last}: expected {expected}"),
                    });
                }
            }
        }
        Ok(None)
    }

    /// Records a batch the log now holds (appended, copied from the leader, or found at
    /// recovery). A batch of an older epoch than the producer's changes nothing.
    pub fn record(&mut self, batch: ProducerBatch) {
        self.clock += 1;
        let pid = batch.id.producer_id;
        if self.producers.len() >= PRODUCERS_MAX && !self.producers.contains_key(&pid) {
            let oldest = self.producers.iter().min_by_key(|(_, p)| p.seen).map(|(pid, _)| *pid);
            if let Some(oldest) = oldest {
                self.producers.remove(&oldest);
            }
        }
        let producer = self.producers.entry(pid).or_insert_with(|| Producer {
            epoch: batch.id.epoch,
            recent: VecDeque::new(),
            seen: 0,
        });
        if batch.id.epoch < producer.epoch {
            return;
        }
        if batch.id.epoch > producer.epoch {
            producer.epoch = batch.id.epoch;
            producer.recent.clear();
        }
        producer.seen = self.clock;
        if producer.recent.len() == RECENT_BATCHES {
            producer.recent.pop_front();
        }
        producer.recent.push_back(Recent {
            first_sequence: batch.id.first_sequence,
            last_sequence: batch.id.last_sequence,
            base: batch.base,
            last: batch.last,
        });
    }

    /// Forgets batches at or after `end` (the log was cut there). A producer left with
    /// no batch is forgotten, so its next batch is accepted at any sequence.
    pub fn truncate(&mut self, end: Offset) {
        self.producers.retain(|_, p| {
            p.recent.retain(|r| r.base < end);
            !p.recent.is_empty()
        });
    }

    /// Whether the log still holds this duplicate at the same offsets.
    #[must_use]
    pub fn holds(&self, id: &BatchIdentity, at: Duplicate) -> bool {
        self.producers.get(&id.producer_id).is_some_and(|p| {
            p.epoch == id.epoch && p.recent.iter().any(|r| id.same_batch(r) && r.base == at.base && r.last == at.last)
        })
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Every producer with its latest batch, by producer id.
    #[must_use]
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut all: Vec<ProducerSummary> = self
            .producers
            .iter()
            .filter_map(|(pid, p)| {
                let last = p.recent.back()?;
                Some(ProducerSummary {
                    producer_id: *pid,
                    epoch: p.epoch,
                    last_sequence: last.last_sequence,
                    last_offset: last.last,
                })
            })
            .collect();
        all.sort_by_key(|s| s.producer_id);
        all
    }

    /// The snapshot file's bytes: magic, version, producers least recently seen first
    /// (id, epoch, batch count, then each batch's sequences and offsets), and a CRC-32C
    /// of everything before it. Little-endian.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut producers: Vec<(&i64, &Producer)> = self.producers.iter().collect();
        producers.sort_by_key(|(_, p)| p.seen);
        let mut out = Vec::with_capacity(16 + producers.len() * (11 + RECENT_BATCHES * 24));
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&(producers.len() as u32).to_le_bytes());
        for (pid, p) in producers {
            out.extend_from_slice(&pid.to_le_bytes());
            out.extend_from_slice(&p.epoch.to_le_bytes());
            out.push(p.recent.len() as u8);
            for r in &p.recent {
                out.extend_from_slice(&r.first_sequence.to_le_bytes());
                out.extend_from_slice(&r.last_sequence.to_le_bytes());
                out.extend_from_slice(&r.base.0.to_le_bytes());
                out.extend_from_slice(&r.last.0.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads `encode`'s bytes, or says what is wrong with them.
    pub fn decode(bytes: &[u8]) -> Result<ProducerStates, String> {
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else { return Err("shorter than its checksum".into()) };
        if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
            return Err("checksum mismatch".into());
        }
        let mut r = Reader { bytes: body, at: 0 };
        if r.take::<4>()? != *SNAPSHOT_MAGIC {
            return Err("not a producer snapshot".into());
        }
        let version = u16::from_le_bytes(r.take()?);
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown version {version}"));
        }
        let count = u32::from_le_bytes(r.take()?);
        let mut states = ProducerStates::default();
        for _ in 0..count {
            let pid = i64::from_le_bytes(r.take()?);
            let epoch = i16::from_le_bytes(r.take()?);
            let [n] = r.take::<1>()?;
            if usize::from(n) > RECENT_BATCHES {
                return Err(format!("producer {pid} has {n} batches, more than {RECENT_BATCHES}"));
            }
            for _ in 0..n {
                let first_sequence = i32::from_le_bytes(r.take()?);
                let last_sequence = i32::from_le_bytes(r.take()?);
                let base = Offset(u64::from_le_bytes(r.take()?));
                let last = Offset(u64::from_le_bytes(r.take()?));
                let id = BatchIdentity { producer_id: pid, epoch, first_sequence, last_sequence };
                states.record(ProducerBatch { id, base, last });
            }
        }
        if r.at != body.len() {
            return Err(format!("{} bytes after the last producer", body.len() - r.at));
        }
        Ok(states)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.at + N;
        let Some(slice) = self.bytes.get(self.at..end) else { return Err("truncated".into()) };
        self.at = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: i32, last: i32, epoch: i16) -> BatchIdentity {
        BatchIdentity { producer_id: 7, epoch, first_sequence: first, last_sequence: last }
    }

    fn stored(s: &mut ProducerStates, id: BatchIdentity, base: u64) {
        let span = (id.last_sequence - id.first_sequence) as u64;
        s.record(ProducerBatch { id, base: Offset(base), last: Offset(base + span) });
    }

    fn refused(r: Result<Option<Duplicate>, StorageError>) -> bool {
        matches!(r, Err(StorageError::OutOfOrderSequence { .. } | StorageError::ProducerFenced { .. }))
    }

    #[test]
    fn retries_are_answered_with_the_first_offsets_and_gaps_are_refused() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&[id(0, 9, 0)], 1).ok(), Some(None));
        stored(&mut s, id(0, 9, 0), 100);
        assert_eq!(s.check(&[id(0, 9, 0)], 1).ok(), Some(Some(Duplicate { base: Offset(100), last: Offset(109) })));
        assert!(refused(s.check(&[id(11, 12, 0)], 1)));
        // Inside one append, each batch follows the one before it.
        assert_eq!(s.check(&[id(10, 12, 0), id(13, 13, 0)], 2).ok(), Some(None));
        assert!(refused(s.check(&[id(10, 12, 0), id(14, 14, 0)], 2)));
        assert!(refused(s.check(&[id(0, 9, 0)], 2)), "a duplicate among several batches is refused");
        stored(&mut s, id(10, 12, 0), 110);
        // A new epoch starts afresh; the old one is fenced.
        assert_eq!(s.check(&[id(0, 0, 1)], 1).ok(), Some(None));
        stored(&mut s, id(0, 0, 1), 120);
        assert!(matches!(s.check(&[id(13, 13, 0)], 1), Err(StorageError::ProducerFenced { .. })));
        assert_eq!(s.check(&[id(0, 0, 1)], 1).ok(), Some(Some(Duplicate { base: Offset(120), last: Offset(120) })));
    }

    #[test]
    fn truncation_forgets_the_cut_batches_and_a_snapshot_round_trips() {
        let mut s = ProducerStates::default();
        for k in 0..8 {
            stored(&mut s, id(k * 2, k * 2 + 1, 3), 10 * k as u64);
        }
        let other = BatchIdentity { producer_id: 9, epoch: 0, first_sequence: 0, last_sequence: 0 };
        stored(&mut s, other, 75);
        let decoded = ProducerStates::decode(&s.encode());
        assert_eq!(decoded.as_ref().map(ProducerStates::summaries), Ok(s.summaries()));
        let mut bytes = s.encode();
        bytes[7] ^= 1;
        assert!(ProducerStates::decode(&bytes).is_err());
        s.truncate(Offset(60));
        assert_eq!(s.check(&[id(12, 13, 3)], 1).ok(), Some(None), "the cut batch is appended again");
        assert_eq!(s.check(&[id(10, 11, 3)], 1).ok(), Some(Some(Duplicate { base: Offset(50), last: Offset(51) })));
        assert_eq!(s.len(), 1, "producer 9 wrote only after the cut");
        s.truncate(Offset(0));
        assert!(s.is_empty());
        assert!(
            matches!(s.check(&[id(40, 41, 3)], 1), Err(StorageError::UnknownProducer { sequence: 40, .. })),
            "a forgotten producer is told so unless it starts again at 0"
        );
        assert_eq!(s.check(&[id(0, 1, 3)], 1).ok(), Some(None));
        let next_epoch = BatchIdentity { producer_id: 7, epoch: 4, first_sequence: 0, last_sequence: 0 };
        stored(&mut s, id(0, 1, 3), 0);
        assert_eq!(s.check(&[next_epoch], 1).ok(), Some(None), "a new epoch starts at 0");
        let skipping = BatchIdentity { first_sequence: 5, last_sequence: 5, ..next_epoch };
        assert!(matches!(s.check(&[skipping], 1), Err(StorageError::OutOfOrderSequence { .. })), "and only there");
    }

    #[test]
    fn the_least_recently_seen_producer_is_forgotten_past_the_limit() {
        let mut s = ProducerStates::default();
        for pid in 0..PRODUCERS_MAX as i64 + 1 {
            let id = BatchIdentity { producer_id: pid, epoch: 0, first_sequence: 0, last_sequence: 0 };
            s.record(ProducerBatch { id, base: Offset(pid as u64), last: Offset(pid as u64) });
        }
        assert_eq!(s.len(), PRODUCERS_MAX);
        assert!(!s.producers.contains_key(&0), "the first one seen is the one forgotten");
    }
}
