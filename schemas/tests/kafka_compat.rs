//! Cross-checks our RecordBatch v2 codec against an independent implementation, the
//! `kafka-protocol` crate, on generated batches.
//!
//! What these properties pin down:
//! - batches our `BatchBuilder` writes decode with kafka-protocol to the same records and
//!   batch fields (so real Kafka clients can read what our client produces);
//! - batches kafka-protocol writes pass our `check_producer_batch` and decode with our
//!   `RecordIter` to the same records (so our node accepts what other clients produce);
//! - when both encoders are given the same input and agree on the header conventions, the
//!   bytes, and so the CRC, are identical;
//! - varlongs over the whole i64 range (as timestamp deltas) are byte-for-byte theirs;
//! - random corruption never panics our reader, and whatever our reader accepts,
//!   kafka-protocol reads the same way (we are never more lenient than them).
//!
//! Known differences between the two encoders, and how the properties deal with them:
//! - kafka-protocol takes the *smallest* timestamp as the base timestamp; Kafka's Java
//!   producer and we take the *first* record's. Byte equality is asserted only when the
//!   first record has the smallest timestamp.
//! - kafka-protocol never sets the LogAppendTime bit when encoding, and when decoding it
//!   reports base + delta even for LogAppendTime batches, where Kafka (and we) report the
//!   batch's max timestamp.
//! - kafka-protocol keeps headers in an `IndexMap`, so repeated header keys collapse;
//!   generated header keys are made unique before comparing with it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KCompression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as KTimestampType,
};
use proptest::prelude::*;
use sluice_schemas::batch::{
    check_batch, check_producer_batch, reseal_crc, Attributes, BatchError, BatchHeader, CRC_START, HEADER_BYTES,
};
use sluice_schemas::records::{BatchBuilder, BatchConfig, Record, RecordIter};
use sluice_schemas::{LeaderEpoch, Offset, ProducerId};

const CASES: u32 = 128;

/// Everything that goes into one batch, in a form both encoders can be fed.
#[derive(Clone, Debug)]
struct Input {
    base_offset: u64,
    leader_epoch: Option<u32>,
    producer: Option<(u64, i16)>,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    delete_horizon: bool,
    log_append_time: bool,
    records: Vec<Record>,
}

impl Input {
    fn config(&self) -> BatchConfig {
        let mut attributes = 0;
        for (on, bit) in [
            (self.transactional, Attributes::TRANSACTIONAL_BIT),
            (self.control, Attributes::CONTROL_BIT),
            (self.delete_horizon, Attributes::DELETE_HORIZON_BIT),
            (self.log_append_time, Attributes::TIMESTAMP_TYPE_BIT),
        ] {
            if on {
                attributes |= bit;
            }
        }
        BatchConfig {
            base_offset: Offset(self.base_offset),
            partition_leader_epoch: self.leader_epoch.map(LeaderEpoch),
            producer_id: self.producer.map(|(id, _)| ProducerId(id)),
            producer_epoch: self.producer.map_or(-1, |(_, epoch)| epoch),
            base_sequence: self.base_sequence,
            attributes: Attributes(attributes),
        }
    }

    fn producer_id_wire(&self) -> i64 {
        self.producer.map_or(-1, |(id, _)| i64::try_from(id).unwrap())
    }

    fn producer_epoch_wire(&self) -> i16 {
        self.producer.map_or(-1, |(_, epoch)| epoch)
    }

    fn leader_epoch_wire(&self) -> i32 {
        self.leader_epoch.map_or(-1, |e| i32::try_from(e).unwrap())
    }

    fn ours(&self) -> Vec<u8> {
        let mut builder = BatchBuilder::new(self.config()).unwrap();
        for record in &self.records {
            builder.push_record(record).unwrap();
        }
        builder.finish().unwrap()
    }

    /// The same records as kafka-protocol wants them: one `Record` per record, carrying
    /// the batch fields, with offsets and sequences laid out so they form one batch.
    fn theirs(&self) -> Vec<KRecord> {
        self.records
            .iter()
            .enumerate()
            .map(|(i, r)| KRecord {
                transactional: self.transactional,
                control: self.control,
                delete_horizon: self.delete_horizon,
                partition_leader_epoch: self.leader_epoch_wire(),
                producer_id: self.producer_id_wire(),
                producer_epoch: self.producer_epoch_wire(),
                timestamp_type: KTimestampType::Creation,
                offset: i64::try_from(self.base_offset).unwrap() + i as i64,
                sequence: self.base_sequence.wrapping_add(i as i32),
                timestamp: r.timestamp,
                key: r.key.clone().map(Bytes::from),
                value: r.value.clone().map(Bytes::from),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                    .collect::<IndexMap<_, _>>(),
            })
            .collect()
    }
}

fn encode_theirs(records: &[KRecord]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records, &RecordEncodeOptions { version: 2, compression: KCompression::None })
        .unwrap();
    buf.to_vec()
}

/// kafka-protocol's decoding, its `anyhow` error reduced to text.
fn decode_theirs(batch: &[u8]) -> Result<Vec<KRecord>, String> {
    let mut buf = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| e.to_string())?;
    if !buf.is_empty() {
        return Err(format!("{} bytes left after the batch", buf.len()));
    }
    Ok(set.records)
}

fn header_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_.-]{0,10}",
        1 => "\\PC{0,4}", // any printable Unicode, to exercise multi-byte UTF-8
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Records with unique header keys (see the module comment), timestamps within a window
/// wide enough for multi-byte deltas of both signs yet far from i64 overflow.
fn record(base_timestamp: i64) -> impl Strategy<Value = Record> {
    (
        prop_oneof![Just(0i64), -1_000i64..1_000, -(1i64 << 40)..(1i64 << 40)],
        proptest::option::of(bytes(40)),
        proptest::option::of(bytes(300)),
        proptest::collection::vec((header_key(), proptest::option::of(bytes(20))), 0..4),
    )
        .prop_map(move |(delta, key, value, headers)| {
            let mut seen = HashSet::new();
            let headers = headers.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
            Record { timestamp: base_timestamp + delta, key, value, headers }
        })
}

fn input() -> impl Strategy<Value = Input> {
    let timestamps =
        prop_oneof![Just(-1i64), Just(0i64), 1_600_000_000_000i64..1_800_000_000_000, -(1i64 << 60)..(1i64 << 60)];
    let batch_fields = (
        prop_oneof![Just(0u64), 0u64..1 << 40, Just(i64::MAX as u64 - 1_000)],
        proptest::option::of(0u32..=i32::MAX as u32),
        proptest::option::of((0u64..=i64::MAX as u64, any::<i16>())),
        prop_oneof![Just(-1i32), any::<i32>(), Just(i32::MAX)],
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    );
    (batch_fields, timestamps).prop_flat_map(|(fields, base_timestamp)| {
        let (base_offset, leader_epoch, producer, base_sequence, flags) = fields;
        proptest::collection::vec(record(base_timestamp), 1..8).prop_map(move |records| {
            let (transactional, control, delete_horizon, log_append_time) = flags;
            Input {
                base_offset,
                leader_epoch,
                producer,
                base_sequence,
                transactional,
                control,
                delete_horizon,
                log_append_time,
                records,
            }
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// (a) What we build, kafka-protocol reads as we meant it.
    #[test]
    fn kafka_protocol_decodes_our_batches(input in input()) {
        let batch = input.ours();
        let decoded = decode_theirs(&batch).map_err(TestCaseError::fail)?;
        prop_assert_eq!(decoded.len(), input.records.len());
        for (i, (theirs, ours)) in decoded.iter().zip(&input.records).enumerate() {
            prop_assert_eq!(theirs.offset, input.base_offset as i64 + i as i64);
            // kafka-protocol reports base + delta whatever the timestamp type: that is the
            // timestamp the producer gave.
            prop_assert_eq!(theirs.timestamp, ours.timestamp);
            let expected_type = if input.log_append_time {
                KTimestampType::LogAppend
            } else {
                KTimestampType::Creation
            };
            prop_assert_eq!(theirs.timestamp_type, expected_type);
            prop_assert_eq!(theirs.key.as_deref(), ours.key.as_deref());
            prop_assert_eq!(theirs.value.as_deref(), ours.value.as_deref());
            let headers: Vec<(String, Option<Vec<u8>>)> = theirs
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_ref().map(|b| b.to_vec())))
                .collect();
            prop_assert_eq!(&headers, &ours.headers);
            prop_assert_eq!(theirs.producer_id, input.producer_id_wire());
            prop_assert_eq!(theirs.producer_epoch, input.producer_epoch_wire());
            prop_assert_eq!(theirs.partition_leader_epoch, input.leader_epoch_wire());
            prop_assert_eq!(theirs.sequence, input.base_sequence.wrapping_add(i as i32));
            prop_assert_eq!(theirs.transactional, input.transactional);
            prop_assert_eq!(theirs.control, input.control);
            prop_assert_eq!(theirs.delete_horizon, input.delete_horizon);
        }
    }

    /// (b) What kafka-protocol builds, our node accepts and reads back the same.
    #[test]
    fn we_decode_kafka_protocol_batches(mut input in input()) {
        // kafka-protocol cannot write LogAppendTime batches.
        input.log_append_time = false;
        let batch = encode_theirs(&input.theirs());
        // Control batches are valid batches, but only the node may write them.
        let checked = if input.control {
            prop_assert!(check_producer_batch(&batch).is_err());
            check_batch(&batch)
        } else {
            check_producer_batch(&batch)
        }
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(checked.bytes().len(), batch.len(), "exactly one batch");
        let header = checked.header();
        prop_assert_eq!(header.base_offset(), Offset(input.base_offset));
        prop_assert_eq!(header.record_count(), input.records.len() as i32);
        prop_assert_eq!(header.producer_id.get(), input.producer_id_wire());
        prop_assert_eq!(header.producer_epoch.get(), input.producer_epoch_wire());
        prop_assert_eq!(header.base_sequence.get(), input.base_sequence);
        prop_assert_eq!(header.partition_leader_epoch.get(), input.leader_epoch_wire());
        prop_assert_eq!(header.attributes(), input.config().attributes);
        let max_timestamp = input.records.iter().map(|r| r.timestamp).max().unwrap();
        prop_assert_eq!(header.max_timestamp(), max_timestamp);

        let mut count = 0;
        for (i, (view, ours)) in RecordIter::new(checked).unwrap().zip(&input.records).enumerate() {
            let view = view.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(view.offset, Offset(input.base_offset + i as u64));
            prop_assert_eq!(&view.to_record(), ours);
            count += 1;
        }
        prop_assert_eq!(count, input.records.len());
        // And the iterator has nothing more to say: no error after the last record.
        let all: Result<Vec<_>, _> = RecordIter::new(checked).unwrap().collect();
        prop_assert!(all.is_ok());
    }

    /// (c) Given the same input and the same base timestamp convention, both encoders
    /// write the same bytes, CRC included.
    #[test]
    fn both_encoders_write_identical_bytes(mut input in input()) {
        input.log_append_time = false;
        // kafka-protocol's base timestamp is the minimum; Kafka's and ours the first.
        let min = input.records.iter().map(|r| r.timestamp).min().unwrap();
        input.records[0].timestamp = min;
        let ours = input.ours();
        let theirs = encode_theirs(&input.theirs());
        let our_header = BatchHeader::view(&ours).unwrap();
        let their_header = BatchHeader::view(&theirs).unwrap();
        prop_assert_eq!(our_header.crc.get(), their_header.crc.get());
        prop_assert_eq!(ours, theirs);
    }

    /// Even when base timestamps differ (first vs smallest), each side reads the other's
    /// timestamps correctly: the convention changes the bytes, not the meaning.
    #[test]
    fn base_timestamp_conventions_agree_on_meaning(input in input()) {
        let ours = input.ours();
        let our_header = BatchHeader::view(&ours).unwrap();
        prop_assert_eq!(our_header.base_timestamp.get(), input.records[0].timestamp);
        let mut plain = input.clone();
        plain.log_append_time = false;
        let theirs = encode_theirs(&plain.theirs());
        let read: Vec<i64> =
            RecordIter::from_bytes(&theirs).unwrap().map(|r| r.unwrap().timestamp).collect();
        let expected: Vec<i64> = input.records.iter().map(|r| r.timestamp).collect();
        prop_assert_eq!(read, expected);
    }

    /// Varlongs across the whole i64 range, through the one field that carries them (the
    /// timestamp delta): kafka-protocol reads ours, and where both encoders pick the same
    /// base (first timestamp is the smaller) the bytes are identical. kafka-protocol keeps
    /// its varint functions private, so this is how far we can compare them directly.
    #[test]
    fn wide_timestamp_deltas_agree(a in any::<i64>(), b in any::<i64>()) {
        prop_assume!(b.checked_sub(a).is_some());
        let input = Input {
            base_offset: 0,
            leader_epoch: None,
            producer: None,
            base_sequence: -1,
            transactional: false,
            control: false,
            delete_horizon: false,
            log_append_time: false,
            records: vec![
                Record { timestamp: a, ..Record::default() },
                Record { timestamp: b, ..Record::default() },
            ],
        };
        let ours = input.ours();
        let decoded = decode_theirs(&ours).map_err(TestCaseError::fail)?;
        let read: Vec<i64> = decoded.iter().map(|r| r.timestamp).collect();
        prop_assert_eq!(read, vec![a, b]);
        if a <= b {
            prop_assert_eq!(ours, encode_theirs(&input.theirs()));
        }
    }

    /// Flipping any bits of any byte the CRC covers is caught by `check_batch`.
    #[test]
    fn any_flipped_byte_in_the_crc_region_is_caught(
        input in input(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let mut batch = input.ours();
        let position = CRC_START + at.index(batch.len() - CRC_START);
        batch[position] ^= mask;
        let result = check_batch(&batch);
        prop_assert!(
            matches!(result, Err(BatchError::BadCrc { .. })),
            "byte {} gave {:?}",
            position,
            result
        );
    }

    /// Corrupt records behind a valid CRC (a buggy producer, not a bad disk) never panic
    /// our reader; and whatever our reader accepts, kafka-protocol reads identically.
    #[test]
    fn corrupt_records_never_panic_and_we_are_never_more_lenient(
        input in input(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut plain = input.clone();
        plain.log_append_time = false;
        let mut batch = plain.ours();
        let records_len = batch.len() - HEADER_BYTES;
        for (at, byte) in &edits {
            batch[HEADER_BYTES + at.index(records_len)] = *byte;
        }
        reseal_crc(&mut batch);
        let ours: Result<Vec<(Offset, Record)>, _> =
            RecordIter::from_bytes(&batch)
                .unwrap()
                .map(|r| r.map(|v| (v.offset, v.to_record())))
                .collect();
        if let Ok(ours) = ours {
            // Only now is kafka-protocol safe to call: it reserves memory for whatever
            // header count it reads, and a corrupt one could abort the test process.
            let theirs = decode_theirs(&batch).map_err(TestCaseError::fail)?;
            prop_assert_eq!(theirs.len(), ours.len());
            for (t, (offset, o)) in theirs.iter().zip(&ours) {
                prop_assert_eq!(t.offset, offset.0 as i64);
                prop_assert_eq!(t.timestamp, o.timestamp);
                prop_assert_eq!(t.key.as_deref(), o.key.as_deref());
                prop_assert_eq!(t.value.as_deref(), o.value.as_deref());
                // A corrupted header key may now repeat; IndexMap keeps the first position
                // and the last value.
                let mut expected: IndexMap<String, Option<Vec<u8>>> = IndexMap::new();
                for (k, v) in &o.headers {
                    expected.insert(k.clone(), v.clone());
                }
                let got: IndexMap<String, Option<Vec<u8>>> = t
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.as_ref().map(|b| b.to_vec())))
                    .collect();
                prop_assert_eq!(got, expected);
            }
        }
    }
}
