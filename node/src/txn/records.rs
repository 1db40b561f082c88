//! What the `__transaction_state` partitions hold, in Kafka's own schemas
//! (`TransactionLogKey` v0 and `TransactionLogValue` v0 in Kafka's transaction
//! coordinator), so tools that read the topic decode it: one record per change of a
//! transactional id's state, the latest one per key being its state (the topic is
//! compacted). A record without a value deletes the id. Nothing here does I/O.

use std::collections::BTreeSet;

use sluice_schemas::TopicPartition;

use crate::groups::records::{Reader, Writer};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// A transaction's state, with Kafka's numbers (`TransactionState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnStatus {
    /// No transaction since the producer id was given.
    Empty,
    /// Partitions were added; the producer may write to them.
    Ongoing,
    /// EndTxn(commit) was stored; markers are being written.
    PrepareCommit,
    PrepareAbort,
    /// Every marker is written.
    CompleteCommit,
    CompleteAbort,
}

impl TxnStatus {
    #[must_use]
    pub fn id(self) -> i8 {
        match self {
            TxnStatus::Empty => 0,
            TxnStatus::Ongoing => 1,
            TxnStatus::PrepareCommit => 2,
            TxnStatus::PrepareAbort => 3,
            TxnStatus::CompleteCommit => 4,
            TxnStatus::CompleteAbort => 5,
        }
    }

    fn from_id(id: i8) -> Option<TxnStatus> {
        Some(match id {
            0 => TxnStatus::Empty,
            1 => TxnStatus::Ongoing,
            2 => TxnStatus::PrepareCommit,
            3 => TxnStatus::PrepareAbort,
            4 => TxnStatus::CompleteCommit,
            5 => TxnStatus::CompleteAbort,
            _ => return None,
        })
    }

    /// The name Kafka's tools show (DescribeTransactions, ListTransactions).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
        }
    }

    /// Markers are being written: the transaction is decided but not finished.
    #[must_use]
    pub fn preparing(self) -> bool {
        matches!(self, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
    }
}

/// A transactional id's state (`TransactionLogValue`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    /// The partitions written in the transaction (empty once it is complete).
    pub partitions: BTreeSet<TopicPartition>,
    pub last_update_ms: i64,
    /// When the transaction began (its first partition was added); -1 when none.
    pub start_ms: i64,
}

/// One record of a transaction state partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRecord {
    pub transactional_id: String,
    /// `None` deletes the id (a tombstone).
    pub value: Option<TxnMetadata>,
}

impl TxnRecord {
    #[must_use]
    pub fn key(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.i16(KEY_VERSION);
        w.string(&self.transactional_id);
        w.0
    }

    #[must_use]
    pub fn value(&self) -> Option<Vec<u8>> {
        let m = self.value.as_ref()?;
        let mut w = Writer::default();
        w.i16(VALUE_VERSION);
        w.i64(m.producer_id);
        w.i16(m.producer_epoch);
        w.i32(m.timeout_ms);
        w.0.push(m.status.id() as u8);
        // Partitions by topic, as Kafka groups them.
        let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
        for tp in &m.partitions {
            let p = i32::try_from(tp.partition).unwrap_or(i32::MAX);
            match topics.last_mut() {
                Some((t, ps)) if *t == tp.topic.as_str() => ps.push(p),
                _ => topics.push((tp.topic.as_str(), vec![p])),
            }
        }
        w.i32(i32::try_from(topics.len()).unwrap_or(i32::MAX));
        for (topic, partitions) in topics {
            w.string(topic);
            w.i32(i32::try_from(partitions.len()).unwrap_or(i32::MAX));
            for p in partitions {
                w.i32(p);
            }
        }
        w.i64(m.last_update_ms);
        w.i64(m.start_ms);
        Some(w.0)
    }

    /// A record of a transaction state partition; `None` for a key that is not one (or a
    /// version this node does not read). A value that does not decode is a tombstone.
    #[must_use]
    pub fn parse(key: &[u8], value: Option<&[u8]>) -> Option<TxnRecord> {
        let mut k = Reader(key);
        if k.i16()? != KEY_VERSION {
            return None;
        }
        let transactional_id = k.string()?;
        let value = value.and_then(parse_value);
        Some(TxnRecord { transactional_id, value })
    }
}

/// `TransactionLogValue` v0, and v1's leading fields (a flexible version: compact
/// strings and arrays, which this node does not write; read as far as v0's layout goes
/// for v0 only).
fn parse_value(value: &[u8]) -> Option<TxnMetadata> {
    let mut r = Reader(value);
    if r.i16()? != VALUE_VERSION {
        return None;
    }
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let status = TxnStatus::from_id(r.take(1)?[0] as i8)?;
    let mut partitions = BTreeSet::new();
    let topics = r.i32()?;
    for _ in 0..topics.max(0) {
        let topic = r.string()?;
        let count = r.i32()?;
        for _ in 0..count.max(0) {
            let p = u32::try_from(r.i32()?).ok()?;
            partitions.insert(TopicPartition::new(&topic, p));
        }
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    Some(TxnMetadata { producer_id, producer_epoch, timeout_ms, status, partitions, last_update_ms, start_ms })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn transaction_records_are_kafkas_and_round_trip() {
        let record = TxnRecord {
            transactional_id: "tx-1".into(),
            value: Some(TxnMetadata {
                producer_id: 4001,
                producer_epoch: 3,
                timeout_ms: 60_000,
                status: TxnStatus::Ongoing,
                partitions: [TopicPartition::new("a", 0), TopicPartition::new("a", 2), TopicPartition::new("b", 1)]
                    .into_iter()
                    .collect(),
                last_update_ms: 1_700_000_000_123,
                start_ms: 1_700_000_000_000,
            }),
        };
        assert_eq!(record.key(), [0, 0, 0, 4, b't', b'x', b'-', b'1']);
        let value = record.value().unwrap();
        // version, producer id, epoch, timeout, status, then 2 topics.
        assert_eq!(&value[..2], &[0, 0]);
        assert_eq!(&value[2..10], &4001i64.to_be_bytes());
        assert_eq!(value[16], 1, "status Ongoing");
        assert_eq!(&value[17..21], &2i32.to_be_bytes());
        assert_eq!(TxnRecord::parse(&record.key(), Some(&value)), Some(record.clone()));
        let tombstone = TxnRecord { transactional_id: "tx-1".into(), value: None };
        assert_eq!(TxnRecord::parse(&record.key(), None), Some(tombstone.clone()));
        assert_eq!(TxnRecord::parse(&record.key(), Some(&value[..20])), Some(tombstone), "truncated value");
        assert_eq!(TxnRecord::parse(&record.key()[..5], Some(&value)), None, "truncated key");
    }
}
