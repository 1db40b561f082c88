//! Transaction markers (KIP-98): the control batches a transaction coordinator writes
//! into every partition of a transaction to commit or abort it.
//!
//! A marker is a RecordBatch v2 with the transactional and control attribute bits set,
//! the transaction's producer id and epoch, base sequence -1 and exactly one record:
//! key `[version: i16 = 0][type: i16]` (0 = ABORT, 1 = COMMIT) and value
//! `[version: i16 = 0][coordinator_epoch: i32]`, all big-endian, as Kafka writes them.
//! Readers (read_committed consumers, the log's transaction state) tell the two kinds
//! apart by the key alone, so `control_type` reads only the key.

use crate::batch::{check_batch, Attributes};
use crate::records::{BatchBuilder, BatchConfig, RecordIter, NO_SEQUENCE};

/// The version of the marker's key and value layout; the only one Kafka defines.
const MARKER_VERSION: i16 = 0;
/// Key bytes: version and type, two i16s.
const KEY_BYTES: usize = 4;

/// What a transaction marker does to the records of its transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    /// The transaction's records are to be skipped by read_committed readers.
    Abort,
    /// The transaction's records are to be delivered.
    Commit,
}

impl ControlType {
    /// The type's code in the marker key.
    #[must_use]
    pub fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        }
    }

    /// The type with this code, `None` for codes Kafka does not define.
    #[must_use]
    pub fn from_code(code: i16) -> Option<ControlType> {
        match code {
            0 => Some(ControlType::Abort),
            1 => Some(ControlType::Commit),
            _ => None,
        }
    }
}

/// A transaction marker: a v2 control batch (attributes transactional|control, base
/// offset 0, base sequence -1, one record as above), CRC sealed. The node sets its base
/// offset and leader epoch when it appends it, as for any batch.
#[must_use]
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    control: ControlType,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    let mut key = [0u8; KEY_BYTES];
    key[..2].copy_from_slice(&MARKER_VERSION.to_be_bytes());
    key[2..].copy_from_slice(&control.code().to_be_bytes());
    let mut value = [0u8; 6];
    value[..2].copy_from_slice(&MARKER_VERSION.to_be_bytes());
    value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
    let config = BatchConfig {
        attributes: Attributes(Attributes::TRANSACTIONAL_BIT | Attributes::CONTROL_BIT),
        ..BatchConfig::default()
    };
    let built = BatchBuilder::new(config).and_then(|mut builder| {
        builder.set_producer(producer_id, producer_epoch, NO_SEQUENCE);
        builder.push(Some(&key[..]), Some(&value[..]), &[], timestamp_ms)?;
        builder.finish()
    });
    match built {
        Ok(batch) => batch,
        Err(e) => unreachable!("a marker's fixed layout always builds: {e}"),
    }
}

/// The marker type of a control batch (reads its first record's key); `None` when the
/// batch is not a valid control batch or its key is not a marker's (wrong length,
/// version or type).
#[must_use]
pub fn control_type(batch: &[u8]) -> Option<ControlType> {
    let checked = check_batch(batch).ok()?;
    if !checked.header().attributes().is_control() {
        return None;
    }
    // Markers are never compressed; RecordIter refuses a compressed batch.
    let record = RecordIter::new(checked).ok()?.next()?.ok()?;
    let key = record.key?;
    if key.len() != KEY_BYTES {
        return None;
    }
    let version = i16::from_be_bytes([key[0], key[1]]);
    if version != MARKER_VERSION {
        return None;
    }
    ControlType::from_code(i16::from_be_bytes([key[2], key[3]]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::batch::{check_producer_batch, BatchError, BatchHeader};
    use crate::records::BatchBuilder;

    #[test]
    fn a_marker_is_a_sealed_control_batch_of_one_record_and_reads_back_its_type() {
        for control in [ControlType::Abort, ControlType::Commit] {
            let batch = control_batch(42, 7, control, 3, 1_700_000_000_000);
            let checked = check_batch(&batch).expect("a marker passes the batch checks");
            assert_eq!(checked.bytes().len(), batch.len());
            let header = checked.header();
            assert!(header.attributes().is_control() && header.attributes().is_transactional());
            assert_eq!(header.producer_id.get(), 42);
            assert_eq!(header.producer_epoch.get(), 7);
            assert_eq!(header.base_sequence.get(), -1);
            assert_eq!(header.base_offset.get(), 0);
            assert_eq!(header.record_count(), 1);
            assert_eq!(control_type(&batch), Some(control));
            let record = RecordIter::from_bytes(&batch).expect("records").next().expect("one").expect("valid");
            assert_eq!(record.key, Some(&[0, 0, 0, control.code() as u8][..]));
            assert_eq!(record.value, Some(&[0, 0, 0, 0, 0, 3][..]));
            assert_eq!(record.timestamp, 1_700_000_000_000);
            assert!(matches!(check_producer_batch(&batch), Err(BatchError::ControlBatchFromProducer)));
        }
    }

    #[test]
    fn only_control_batches_with_a_marker_key_have_a_type() {
        let plain = |attributes: u16, key: &[u8]| {
            let mut b = BatchBuilder::new(BatchConfig { attributes: Attributes(attributes), ..BatchConfig::default() })
                .expect("config");
            b.push(Some(key), Some(b"v"), &[], 0).expect("push");
            b.finish().expect("finish")
        };
        assert_eq!(control_type(&plain(0, &[0, 0, 0, 1])), None, "not a control batch");
        assert_eq!(control_type(&plain(Attributes::TRANSACTIONAL_BIT, &[0, 0, 0, 1])), None, "transactional data");
        let control = Attributes::TRANSACTIONAL_BIT | Attributes::CONTROL_BIT;
        assert_eq!(control_type(&plain(control, &[0, 0, 0, 1])), Some(ControlType::Commit));
        assert_eq!(control_type(&plain(control, &[0, 0, 0, 2])), None, "unknown type");
        assert_eq!(control_type(&plain(control, &[0, 1, 0, 0])), None, "unknown version");
        assert_eq!(control_type(&plain(control, &[0, 0, 0])), None, "short key");
        let mut corrupt = control_batch(1, 0, ControlType::Abort, 0, 0);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert_eq!(control_type(&corrupt), None, "a bad CRC");
        assert_eq!(control_type(&corrupt[..20]), None, "truncated");
        assert!(BatchHeader::view(&corrupt).is_ok());
    }

    /// Kafka's own decoder (kafka-protocol) reads a marker as a control record with the
    /// transaction's producer, no sequence, and the marker key and value.
    #[test]
    fn kafka_protocol_decodes_a_marker() {
        use kafka_protocol::records::RecordBatchDecoder;
        let batch = control_batch(9_000_000_000, 2, ControlType::Commit, 17, 1234);
        let mut buf = bytes::Bytes::copy_from_slice(&batch);
        let set = RecordBatchDecoder::decode(&mut buf).expect("kafka-protocol decodes the marker");
        assert!(buf.is_empty());
        assert_eq!(set.records.len(), 1);
        let r = &set.records[0];
        assert!(r.control && r.transactional);
        assert_eq!((r.producer_id, r.producer_epoch, r.sequence), (9_000_000_000, 2, -1));
        assert_eq!(r.key.as_deref(), Some(&[0u8, 0, 0, 1][..]));
        assert_eq!(r.value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 17][..]));
        assert_eq!(r.timestamp, 1234);
    }
}
