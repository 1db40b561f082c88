//! Idempotent producers: per partition, the last batches of each producer id, so that a
//! batch retried after a lost response is answered with its first append's offset
//! instead of being stored twice, and a batch that skips sequence numbers is refused.
//!
//! Kafka's rules (KIP-98): a batch carries (producer id, epoch, base sequence); the
//! partition keeps the last five batches of each producer. A batch equal to one of them
//! is a duplicate; otherwise its base sequence must follow the last one; a new epoch
//! starts afresh; an older epoch is fenced. A producer id the partition does not know
//! (new, known only before the node restarted since this state lives in memory, or
//! forgotten past `PRODUCERS_MAX` producers) is accepted at any sequence. Plain state, no I/O: the shard checks a batch before
//! appending it and completes the entry when the append finished.

use std::collections::{HashMap, VecDeque};

use sluice_schemas::batch::BatchHeader;

use crate::errors::{ErrorKind, NodeError};

/// Batches remembered per producer (Kafka's max.in.flight for idempotence).
pub const RECENT_BATCHES: usize = 5;
/// Producers remembered per partition; past it, the least recently seen is forgotten
/// (its next batch is accepted as from a new producer).
pub const PRODUCERS_MAX: usize = 10_000;

/// Who wrote a batch and which sequence numbers it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchIdentity {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
}

impl BatchIdentity {
    /// The identity of an idempotent batch; `None` for batches without a producer id.
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
}

/// What to do with a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Append it, then call `complete`.
    Append,
    /// Already stored at this base offset: answer with it, append nothing.
    Duplicate(u64),
    Refused(NodeError),
}

struct Recent {
    first_sequence: i32,
    last_sequence: i32,
    /// `None` while its append is under way.
    base_offset: Option<u64>,
}

struct Producer {
    epoch: i16,
    recent: VecDeque<Recent>,
    /// When it was last seen, in checks of this partition (for eviction).
    seen: u64,
}

/// The producers of one partition.
#[derive(Default)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
    checks: u64,
}

impl ProducerStates {
    pub fn check(&mut self, id: BatchIdentity) -> Check {
        self.checks += 1;
        if self.producers.len() >= PRODUCERS_MAX && !self.producers.contains_key(&id.producer_id) {
            let oldest = self.producers.iter().min_by_key(|(_, p)| p.seen).map(|(pid, _)| *pid);
            if let Some(pid) = oldest {
                self.producers.remove(&pid);
            }
        }
        let producer = self.producers.entry(id.producer_id).or_insert_with(|| Producer {
            epoch: id.epoch,
            recent: VecDeque::new(),
            seen: 0,
        });
        producer.seen = self.checks;
        if id.epoch < producer.epoch {
            return Check::Refused(NodeError::new(
                ErrorKind::OutOfOrderSequenceNumber,
                format!(
                    "producer {} epoch {} is fenced: epoch {} is current",
                    id.producer_id, id.epoch, producer.epoch
                ),
            ));
        }
        if id.epoch > producer.epoch {
            producer.epoch = id.epoch;
            producer.recent.clear();
        }
        let same = producer
            .recent
            .iter()
            .find(|r| r.first_sequence == id.first_sequence && r.last_sequence == id.last_sequence);
        if let Some(same) = same {
            return match same.base_offset {
                Some(base) => Check::Duplicate(base),
                None => Check::Refused(NodeError::new(
                    ErrorKind::RequestTimedOut,
                    format!(
                        "producer {} sequence {} is still being appended; retry",
                        id.producer_id, id.first_sequence
                    ),
                )),
            };
        }
        if let Some(last) = producer.recent.back() {
            let expected = last.last_sequence.wrapping_add(1) & i32::MAX;
            if id.first_sequence != expected {
                return Check::Refused(NodeError::new(
                    ErrorKind::OutOfOrderSequenceNumber,
                    format!(
                        "producer {} sent sequence {} after {}: expected {expected}",
                        id.producer_id, id.first_sequence, last.last_sequence
                    ),
                ));
            }
        }
        if producer.recent.len() == RECENT_BATCHES {
            producer.recent.pop_front();
        }
        producer.recent.push_back(Recent {
            first_sequence: id.first_sequence,
            last_sequence: id.last_sequence,
            base_offset: None,
        });
        Check::Append
    }

    /// Records where an appended batch went, or forgets it when its append failed (so
    /// that the producer's retry is appended). A batch of an epoch since replaced
    /// changes nothing.
    pub fn complete(&mut self, id: BatchIdentity, appended: Option<u64>) {
        let Some(producer) = self.producers.get_mut(&id.producer_id) else { return };
        if producer.epoch != id.epoch {
            return;
        }
        let position = producer.recent.iter().position(|r| {
            r.first_sequence == id.first_sequence && r.last_sequence == id.last_sequence && r.base_offset.is_none()
        });
        match (position, appended) {
            (Some(i), Some(base)) => {
                if let Some(r) = producer.recent.get_mut(i) {
                    r.base_offset = Some(base);
                }
            }
            (Some(i), None) => {
                producer.recent.remove(i);
            }
            (None, _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: i32, last: i32, epoch: i16) -> BatchIdentity {
        BatchIdentity { producer_id: 7, epoch, first_sequence: first, last_sequence: last }
    }

    #[test]
    fn retries_are_answered_with_the_first_offset_and_gaps_are_refused() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(batch(0, 9, 0)), Check::Append);
        s.complete(batch(0, 9, 0), Some(100));
        assert_eq!(s.check(batch(0, 9, 0)), Check::Duplicate(100));
        assert!(
            matches!(s.check(batch(11, 12, 0)), Check::Refused(e) if e.kind == ErrorKind::OutOfOrderSequenceNumber)
        );
        assert_eq!(s.check(batch(10, 12, 0)), Check::Append);
        // A failed append is forgotten, so its retry is appended.
        s.complete(batch(10, 12, 0), None);
        assert_eq!(s.check(batch(10, 12, 0)), Check::Append);
        s.complete(batch(10, 12, 0), Some(110));
        // A new epoch starts afresh; the old one is fenced, and an old-epoch append that
        // completes late does not touch the new epoch's batches.
        assert_eq!(s.check(batch(0, 0, 1)), Check::Append);
        assert!(matches!(s.check(batch(13, 13, 0)), Check::Refused(_)));
        s.complete(batch(0, 0, 0), None);
        s.complete(batch(0, 0, 1), Some(120));
        assert_eq!(s.check(batch(0, 0, 1)), Check::Duplicate(120));
    }

    #[test]
    fn the_least_recently_seen_producer_is_forgotten_past_the_limit() {
        let mut s = ProducerStates::default();
        for pid in 0..PRODUCERS_MAX as i64 + 1 {
            let id = BatchIdentity { producer_id: pid, epoch: 0, first_sequence: 0, last_sequence: 0 };
            assert_eq!(s.check(id), Check::Append);
            s.complete(id, Some(pid as u64));
        }
        assert_eq!(s.producers.len(), PRODUCERS_MAX);
        assert!(!s.producers.contains_key(&0), "the first one seen is the one forgotten");
    }
}
