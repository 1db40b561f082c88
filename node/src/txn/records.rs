//! What the `__transaction_state` partitions hold, in Kafka's own schemas
//! (`TransactionLogKey` v0 and `TransactionLogValue` v0 and v1 in Kafka's transaction
//! coordinator), so tools that read the topic decode it: one record per change of a
//! transactional id's state, the latest one per key being its state (the topic is
//! compacted). A record without a value deletes the id. Values are written as v0 unless
//! they carry something only v1 has (transactions v2's client version, or the producer
//! ids of an epoch overflow, in v1's tagged fields). Nothing here does I/O.

use std::collections::BTreeSet;

use sluice_schemas::TopicPartition;

use crate::groups::records::{Reader, Writer};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;
/// `TransactionLogValue` v1: flexible, with the tagged fields below.
const VALUE_VERSION_FLEXIBLE: i16 = 1;
const TAG_PREVIOUS_PRODUCER_ID: u32 = 0;
const TAG_NEXT_PRODUCER_ID: u32 = 1;
const TAG_CLIENT_TRANSACTION_VERSION: u32 = 2;

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

    /// Every marker of the last transaction is written.
    #[must_use]
    pub fn completed(self) -> bool {
        matches!(self, TxnStatus::CompleteCommit | TxnStatus::CompleteAbort)
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
    /// The transaction protocol the producer speaks: 2 for Kafka 4's transactions v2
    /// (KIP-890: the epoch goes up at the end of every transaction), else 0.
    pub client_version: i16,
    /// The producer id before an epoch overflow gave the id a new one (a retried EndTxn
    /// of the old one is answered), else -1.
    pub previous_producer_id: i64,
    /// The producer id the producer gets when its deciding transaction completes, when
    /// its epoch overflowed; else -1.
    pub next_producer_id: i64,
}

impl TxnMetadata {
    /// A fresh state of `producer_id` at `producer_epoch`: Empty, nothing in it.
    #[must_use]
    pub fn empty(producer_id: i64, producer_epoch: i16, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            producer_epoch,
            timeout_ms,
            status: TxnStatus::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: now_ms,
            start_ms: -1,
            client_version: 0,
            previous_producer_id: -1,
            next_producer_id: -1,
        }
    }

    /// The state once the deciding transaction's markers are all written: complete,
    /// with no partitions, and on the new producer id if the epoch was spent.
    #[must_use]
    pub fn completed(mut self) -> TxnMetadata {
        self.status = match self.status {
            TxnStatus::PrepareCommit => TxnStatus::CompleteCommit,
            TxnStatus::PrepareAbort => TxnStatus::CompleteAbort,
            other => other,
        };
        self.partitions.clear();
        if self.next_producer_id != -1 {
            self.previous_producer_id = self.producer_id;
            self.producer_id = self.next_producer_id;
            self.producer_epoch = 0;
            self.next_producer_id = -1;
        }
        self
    }

    /// The tagged fields v1 carries, in tag order, for the values that are not defaults.
    fn tagged(&self) -> Vec<(u32, Vec<u8>)> {
        let mut tags = Vec::new();
        if self.previous_producer_id != -1 {
            tags.push((TAG_PREVIOUS_PRODUCER_ID, self.previous_producer_id.to_be_bytes().to_vec()));
        }
        if self.next_producer_id != -1 {
            tags.push((TAG_NEXT_PRODUCER_ID, self.next_producer_id.to_be_bytes().to_vec()));
        }
        if self.client_version != 0 {
            tags.push((TAG_CLIENT_TRANSACTION_VERSION, self.client_version.to_be_bytes().to_vec()));
        }
        tags
    }
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
        let tagged = m.tagged();
        let flexible = !tagged.is_empty();
        let mut w = Writer::default();
        w.i16(if flexible { VALUE_VERSION_FLEXIBLE } else { VALUE_VERSION });
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
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX - 1);
        if flexible {
            w.uvarint(count(topics.len()) + 1);
        } else {
            w.i32(i32::try_from(topics.len()).unwrap_or(i32::MAX));
        }
        for (topic, partitions) in topics {
            if flexible {
                w.compact_string(topic);
                w.uvarint(count(partitions.len()) + 1);
            } else {
                w.string(topic);
                w.i32(i32::try_from(partitions.len()).unwrap_or(i32::MAX));
            }
            for p in partitions {
                w.i32(p);
            }
            if flexible {
                w.uvarint(0); // the topic's tagged fields: none
            }
        }
        w.i64(m.last_update_ms);
        w.i64(m.start_ms);
        if flexible {
            w.uvarint(count(tagged.len()));
            for (tag, data) in tagged {
                w.uvarint(tag);
                w.uvarint(count(data.len()));
                w.0.extend_from_slice(&data);
            }
        }
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

/// `TransactionLogValue` v0 or v1 (flexible: compact strings and arrays, tagged fields,
/// of which the three this node knows are read and others skipped).
fn parse_value(value: &[u8]) -> Option<TxnMetadata> {
    let mut r = Reader(value);
    let flexible = match r.i16()? {
        VALUE_VERSION => false,
        VALUE_VERSION_FLEXIBLE => true,
        _ => return None,
    };
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let status = TxnStatus::from_id(r.take(1)?[0] as i8)?;
    let mut m = TxnMetadata::empty(producer_id, producer_epoch, timeout_ms, -1);
    m.status = status;
    // A null array (-1, or 0 in compact form) is no partitions.
    let topics = if flexible { i64::from(r.uvarint()?) - 1 } else { i64::from(r.i32()?) };
    for _ in 0..topics.max(0) {
        let topic = if flexible { r.compact_string()? } else { r.string()? };
        let count = if flexible { i64::from(r.uvarint()?) - 1 } else { i64::from(r.i32()?) };
        for _ in 0..count.max(0) {
            let p = u32::try_from(r.i32()?).ok()?;
            m.partitions.insert(TopicPartition::new(&topic, p));
        }
        if flexible {
            skip_tagged(&mut r, |_, _| Some(()))?;
        }
    }
    m.last_update_ms = r.i64()?;
    m.start_ms = r.i64()?;
    if flexible {
        skip_tagged(&mut r, |tag, mut data| {
            match tag {
                TAG_PREVIOUS_PRODUCER_ID => m.previous_producer_id = data.i64()?,
                TAG_NEXT_PRODUCER_ID => m.next_producer_id = data.i64()?,
                TAG_CLIENT_TRANSACTION_VERSION => m.client_version = data.i16()?,
                _ => {}
            }
            Some(())
        })?;
    }
    Some(m)
}

/// Reads a flexible structure's tagged fields, handing each to `field`.
fn skip_tagged(r: &mut Reader<'_>, mut field: impl FnMut(u32, Reader<'_>) -> Option<()>) -> Option<()> {
    for _ in 0..r.uvarint()? {
        let tag = r.uvarint()?;
        let size = r.uvarint()? as usize;
        field(tag, Reader(r.take(size)?))?;
    }
    Some(())
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
                status: TxnStatus::Ongoing,
                partitions: [TopicPartition::new("a", 0), TopicPartition::new("a", 2), TopicPartition::new("b", 1)]
                    .into_iter()
                    .collect(),
                start_ms: 1_700_000_000_000,
                ..TxnMetadata::empty(4001, 3, 60_000, 1_700_000_000_123)
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

    /// Transactions v2's state is Kafka's `TransactionLogValue` v1: compact arrays and
    /// strings, and the client version and producer ids in tagged fields 0 to 2.
    #[test]
    fn transactions_v2_state_is_kafkas_flexible_value_and_round_trips() {
        let mut meta = TxnMetadata {
            status: TxnStatus::PrepareCommit,
            partitions: [TopicPartition::new("a", 1)].into_iter().collect(),
            start_ms: 7,
            client_version: 2,
            next_producer_id: 9000,
            ..TxnMetadata::empty(4001, i16::MAX, 60_000, 8)
        };
        let record = TxnRecord { transactional_id: "tx-2".into(), value: Some(meta.clone()) };
        let value = record.value().unwrap();
        let mut expected = vec![0, 1];
        expected.extend_from_slice(&4001i64.to_be_bytes());
        expected.extend_from_slice(&i16::MAX.to_be_bytes());
        expected.extend_from_slice(&60_000i32.to_be_bytes());
        expected.push(2); // PrepareCommit
        expected.extend_from_slice(&[2, 2, b'a', 2, 0, 0, 0, 1, 0]); // [{"a", [1]}]
        expected.extend_from_slice(&8i64.to_be_bytes());
        expected.extend_from_slice(&7i64.to_be_bytes());
        expected.extend_from_slice(&[2, 1, 8]); // two tags; NextProducerId, 8 bytes
        expected.extend_from_slice(&9000i64.to_be_bytes());
        expected.extend_from_slice(&[2, 2, 0, 2]); // ClientTransactionVersion 2
        assert_eq!(value, expected);
        assert_eq!(TxnRecord::parse(&record.key(), Some(&value)), Some(record));
        meta.previous_producer_id = 4000;
        meta.next_producer_id = -1;
        meta.partitions.clear();
        let record = TxnRecord { transactional_id: "tx-2".into(), value: Some(meta) };
        assert_eq!(TxnRecord::parse(&record.key(), record.value().as_deref()), Some(record));
    }
}
