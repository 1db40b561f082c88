//! The records inside a Kafka RecordBatch v2: building a batch, and reading its records.
//!
//! A batch is the 61-byte header of `batch.rs` followed by its records section. Uncompressed,
//! that section is the records one after another; compressed, it is one compressed blob of
//! the same bytes. Each record is (all varints zigzag, see `varint.rs`):
//!
//! ```text
//! length varint (bytes after this field)   attributes i8 (unused, 0)
//! timestampDelta varlong                   offsetDelta varint
//! keyLength varint (-1 = null)  key        valueLength varint (-1 = null)  value
//! headerCount varint, then per header: keyLength varint, key (UTF-8),
//!                                      valueLength varint (-1 = null), value
//! ```
//!
//! Guarantees:
//! - `BatchBuilder` writes exactly what Kafka's Java producer writes for the same input
//!   (base timestamp = first record's timestamp, offset delta = position in the batch,
//!   record attributes 0), with the CRC32C sealed, and never a batch larger than
//!   `BATCH_BYTES_MAX` or a field that does not fit its wire type: those are errors.
//! - `RecordIter` never panics and never reads outside the batch, whatever the bytes.
//!   Every record must fit inside its declared length and use all of it; the batch must
//!   hold exactly `record_count` records and nothing after them; offset deltas must
//!   increase and stay within `last_offset_delta` (compaction may leave gaps, never
//!   disorder); lengths below -1 (or -1 where null is not allowed) and header keys that
//!   are not UTF-8 are errors. After its first error the iterator ends.

use std::fmt;

use thiserror::Error;
use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::IntoBytes;

use crate::batch::{
    reseal_crc, Attributes, BatchError, BatchHeader, CheckedBatch, Compression, TimestampType, BATCH_BYTES_MAX,
    HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2,
};
use crate::ids::{LeaderEpoch, Offset, ProducerId};
use crate::varint::{read_varint, read_varlong, varint_len, varlong_len, write_varint, write_varlong, VarintError};

/// The fewest bytes a record can take: a one-byte length, then attributes, timestamp
/// delta, offset delta, key length, value length and header count, one byte each.
pub const RECORD_BYTES_MIN: usize = 7;

/// Kafka's "no value" for the producer epoch and base sequence fields.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Kafka's "no value" for the base sequence field.
pub const NO_SEQUENCE: i32 = -1;

/// Which field of a record an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The record's length prefix.
    Length,
    /// The record's attributes byte.
    Attributes,
    /// The timestamp delta varlong.
    TimestampDelta,
    /// The offset delta varint.
    OffsetDelta,
    /// The key's length varint.
    KeyLength,
    /// The key's bytes.
    Key,
    /// The value's length varint.
    ValueLength,
    /// The value's bytes.
    Value,
    /// The header count varint.
    HeaderCount,
    /// A header key's length varint.
    HeaderKeyLength,
    /// A header key's bytes.
    HeaderKey,
    /// A header value's length varint.
    HeaderValueLength,
    /// A header value's bytes.
    HeaderValue,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Length => "record length",
            Field::Attributes => "attributes",
            Field::TimestampDelta => "timestamp delta",
            Field::OffsetDelta => "offset delta",
            Field::KeyLength => "key length",
            Field::Key => "key",
            Field::ValueLength => "value length",
            Field::Value => "value",
            Field::HeaderCount => "header count",
            Field::HeaderKeyLength => "header key length",
            Field::HeaderKey => "header key",
            Field::HeaderValueLength => "header value length",
            Field::HeaderValue => "header value",
        })
    }
}

/// Why records could not be built or read. Reading errors say which record (its index in
/// the batch) and where its bytes start within the records section, so a corrupt batch
/// can be found with a hex dump.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The batch header itself is wrong.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A varint field is truncated, too long or overflows.
    #[error("record {index} (records byte {position}): {field}: {source}")]
    BadVarint {
        /// Index of the record in its batch.
        index: u32,
        /// Where the field starts in the records section.
        position: usize,
        /// The field being read.
        field: Field,
        /// What was wrong with the varint.
        source: VarintError,
    },
    /// A field needs more bytes than its record (or the batch) has left.
    #[error("record {index} (records byte {position}): {field} needs {needed} bytes, {available} are left")]
    Truncated {
        /// Index of the record in its batch.
        index: u32,
        /// Where the field starts in the records section.
        position: usize,
        /// The field being read.
        field: Field,
        /// Bytes the field declares.
        needed: u64,
        /// Bytes that remain.
        available: usize,
    },
    /// A length or count is negative where it may not be (only key, value and header
    /// value lengths may be -1, meaning null).
    #[error("record {index} (records byte {position}): {field} is {value}, which is not a valid length or count")]
    NegativeLength {
        /// Index of the record in its batch.
        index: u32,
        /// Where the field starts in the records section.
        position: usize,
        /// The field being read.
        field: Field,
        /// The value found.
        value: i32,
    },
    /// The record's fields do not use exactly the bytes its length declares.
    #[error("record {index} (records byte {position}): length says {declared} bytes but its fields end after {used}")]
    LengthMismatch {
        /// Index of the record in its batch.
        index: u32,
        /// Where the record starts in the records section.
        position: usize,
        /// Bytes declared by the length prefix.
        declared: usize,
        /// Bytes its fields used.
        used: usize,
    },
    /// A header key is not UTF-8 (Kafka header keys are strings).
    #[error("record {index} (records byte {position}): header {header} key is not UTF-8")]
    HeaderKeyNotUtf8 {
        /// Index of the record in its batch.
        index: u32,
        /// Where the key starts in the records section.
        position: usize,
        /// Index of the header in its record.
        header: u32,
    },
    /// An offset delta is negative, not above the previous record's, or beyond the
    /// batch's last offset delta.
    #[error("record {index}: offset delta {offset_delta} is out of order (previous {previous:?}, batch last offset delta {last_offset_delta})")]
    BadOffsetDelta {
        /// Index of the record in its batch.
        index: u32,
        /// The delta found.
        offset_delta: i32,
        /// The previous record's delta, if any.
        previous: Option<i32>,
        /// The header's last offset delta.
        last_offset_delta: i32,
    },
    /// base timestamp + delta does not fit an i64.
    #[error("record {index}: timestamp delta {delta} overflows base timestamp {base}")]
    TimestampOverflow {
        /// Index of the record in its batch.
        index: u32,
        /// The batch's base timestamp.
        base: i64,
        /// The record's delta.
        delta: i64,
    },
    /// The records section ended before `record_count` records.
    #[error("batch says it holds {expected} records, its bytes end after {found}")]
    MissingRecords {
        /// The header's record count.
        expected: u32,
        /// Records read before the bytes ran out.
        found: u32,
    },
    /// Bytes follow the last of `record_count` records.
    #[error("{bytes} bytes follow the batch's last record (record count {count})")]
    TrailingBytes {
        /// The header's record count.
        count: u32,
        /// Bytes left over.
        bytes: usize,
    },
    /// The header's record count is negative.
    #[error("batch record count {0} is negative")]
    NegativeRecordCount(i32),
    /// The records are compressed: decompress them, then use `RecordIter::over_records`.
    #[error("batch records are compressed with {0:?}; decompress them before reading records")]
    Compressed(Compression),
    /// `finish` was called on a builder holding no record. Producers never send empty
    /// batches, so we never build one.
    #[error("a batch must hold at least one record")]
    EmptyBatch,
    /// Something to build is larger than its wire field or the batch limit allows.
    #[error("{what} is {bytes} bytes (or items), more than the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A record's timestamp minus the batch's base timestamp does not fit an i64.
    #[error("record timestamp {timestamp} is too far from the batch's base timestamp {base}")]
    TimestampOutOfRange {
        /// The first record's timestamp.
        base: i64,
        /// The timestamp pushed.
        timestamp: i64,
    },
    /// A builder setting does not fit its wire field.
    #[error("batch {what} {value} does not fit its wire field")]
    BadConfig {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: u64,
    },
}

/// One header of a record, borrowed: used both to push records and to read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader<'a> {
    /// The header's name. Kafka header keys are strings, never null.
    pub key: &'a str,
    /// The header's value; `None` is a null value (length -1).
    pub value: Option<&'a [u8]>,
}

/// A record as a producer hands it over, owned: what `BatchBuilder::push_record` takes
/// and `RecordView::to_record` gives back. Offsets and deltas are not here: the builder
/// assigns them from the record's position in the batch.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    /// Absolute timestamp, milliseconds since the epoch (Kafka's -1 means none).
    pub timestamp: i64,
    /// `None` is a null key (length -1), distinct from an empty key.
    pub key: Option<Vec<u8>>,
    /// `None` is a null value: a tombstone for compacted topics.
    pub value: Option<Vec<u8>>,
    /// Headers in order; keys may repeat, as in Kafka.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// One record of a batch, borrowing its key, value and headers from the batch bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's offset: the batch's base offset plus its offset delta.
    pub offset: Offset,
    /// The record's timestamp: base timestamp plus delta, or for LogAppendTime batches
    /// the batch's max timestamp (the time the node appended it), as Kafka reports it.
    pub timestamp: i64,
    /// The record's attributes byte (unused by Kafka, normally 0).
    pub attributes: i8,
    /// The timestamp delta as written.
    pub timestamp_delta: i64,
    /// The offset delta as written.
    pub offset_delta: i32,
    /// `None` is a null key.
    pub key: Option<&'a [u8]>,
    /// `None` is a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// Headers in order.
    pub headers: Vec<RecordHeader<'a>>,
}

impl RecordView<'_> {
    /// Copies the record into an owned `Record` (absolute timestamp, key, value,
    /// headers).
    #[must_use]
    pub fn to_record(&self) -> Record {
        Record {
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self.headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Building.
// ---------------------------------------------------------------------------------------

/// The header fields of a batch to build. `Default` is a plain, non-idempotent batch:
/// base offset 0, no leader epoch, no producer, no sequence, CreateTime, uncompressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Offset of the first record. Producers send 0; the node rewrites it on append.
    pub base_offset: Offset,
    /// The partition leader epoch; `None` is written as -1.
    pub partition_leader_epoch: Option<LeaderEpoch>,
    /// The idempotent producer's id; `None` is written as -1.
    pub producer_id: Option<ProducerId>,
    /// The producer's epoch, -1 (`NO_PRODUCER_EPOCH`) when none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 (`NO_SEQUENCE`) when none.
    pub base_sequence: i32,
    /// Timestamp type, transactional, control and delete-horizon bits are written as
    /// given. The compression bits are ignored: `finish` writes `None`, and
    /// `finish_compressed` writes the codec it is given.
    pub attributes: Attributes,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            base_offset: Offset(0),
            partition_leader_epoch: None,
            producer_id: None,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            attributes: Attributes(0),
        }
    }
}

/// The config's fields as they go on the wire, checked once in `BatchBuilder::new`.
#[derive(Clone, Copy, Debug)]
struct WireConfig {
    base_offset: i64,
    partition_leader_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    /// Attributes without the compression bits.
    attributes: u16,
}

/// Builds one uncompressed RecordBatch v2, record by record, in a single buffer: the
/// header's 61 bytes are reserved up front so `finish` fills them in without copying
/// the records.
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    config: WireConfig,
    /// HEADER_BYTES placeholder bytes, then the encoded records.
    buf: Vec<u8>,
    count: u32,
    /// The offset delta the next record gets: the count, unless the caller skipped
    /// offsets (compaction keeps a record's offset when it drops the ones around it).
    next_offset_delta: i32,
    /// The first record's timestamp (the batch's base timestamp) once there is one.
    base_timestamp: Option<i64>,
    max_timestamp: i64,
}

/// Size of a record's fields after its length prefix, with every length checked against
/// its i32 wire field. u64 so that the sum cannot overflow on any platform.
fn record_body_bytes<'h>(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
) -> Result<u64, RecordError> {
    fn nullable(bytes: Option<&[u8]>, what: &'static str) -> Result<u64, RecordError> {
        match bytes {
            None => Ok(1),
            Some(b) => {
                let len = wire_len(b.len(), what)?;
                Ok(varint_len(len) as u64 + b.len() as u64)
            }
        }
    }
    let mut total = 1 // attributes
        + varlong_len(timestamp_delta) as u64
        + varint_len(offset_delta) as u64
        + nullable(key, "record key")?
        + nullable(value, "record value")?;
    let mut count: usize = 0;
    for (header_key, header_value) in headers {
        let key_len = wire_len(header_key.len(), "header key")?;
        total += varint_len(key_len) as u64 + header_key.len() as u64;
        total += nullable(header_value, "header value")?;
        count += 1;
    }
    total += varint_len(wire_len(count, "header count")?) as u64;
    Ok(total)
}

/// How `push` will write a record, worked out (and every limit checked) before any byte
/// is written, so that a refused record leaves the builder unchanged.
#[derive(Clone, Copy, Debug)]
struct Plan {
    timestamp_delta: i64,
    offset_delta: i32,
    /// The length prefix: bytes after it.
    body_len: i32,
    /// Bytes of the whole record, length prefix included.
    record_bytes: usize,
}

/// `len` as the i32 Kafka writes it, or a `TooLarge` error naming `what`.
fn wire_len(len: usize, what: &'static str) -> Result<i32, RecordError> {
    i32::try_from(len).map_err(|_| RecordError::TooLarge { what, bytes: len as u64, max: i32::MAX as u64 })
}

fn write_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => write_varint(out, -1),
        Some(b) => {
            // record_body_bytes checked every length fits an i32 before anything is written.
            write_varint(out, i32::try_from(b.len()).unwrap_or(i32::MAX));
            out.extend_from_slice(b);
        }
    }
}

impl BatchBuilder {
    /// Sets the idempotent producer's id, epoch and the batch's first sequence number
    /// (written by `finish`): a producer stamps a batch when it closes, in the order its
    /// sequence numbers go.
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.config.producer_id = producer_id;
        self.config.producer_epoch = producer_epoch;
        self.config.base_sequence = base_sequence;
    }

    /// Makes room for a batch of `bytes` in all (header included) at once, so a batch
    /// that grows to that size is not copied on the way by the buffer's doubling.
    pub fn reserve_total(&mut self, bytes: usize) {
        self.buf.reserve(bytes.saturating_sub(self.buf.len()));
    }

    /// A builder for a batch with the given header fields; an error if a field does not
    /// fit its wire type (an offset or producer id above i64::MAX, an epoch above
    /// i32::MAX) or the attributes name an unknown codec.
    pub fn new(config: BatchConfig) -> Result<Self, RecordError> {
        let base_offset = i64::try_from(config.base_offset.0)
            .map_err(|_| RecordError::BadConfig { what: "base offset", value: config.base_offset.0 })?;
        let partition_leader_epoch = match config.partition_leader_epoch {
            None => -1,
            Some(epoch) => i32::try_from(epoch.0)
                .map_err(|_| RecordError::BadConfig { what: "partition leader epoch", value: u64::from(epoch.0) })?,
        };
        let producer_id = match config.producer_id {
            None => -1,
            Some(id) => i64::try_from(id.0).map_err(|_| RecordError::BadConfig { what: "producer id", value: id.0 })?,
        };
        if config.attributes.compression().is_none() {
            return Err(BatchError::BadCompression(config.attributes.0).into());
        }
        let mut buf = Vec::with_capacity(HEADER_BYTES + 256);
        buf.resize(HEADER_BYTES, 0);
        Ok(BatchBuilder {
            config: WireConfig {
                base_offset,
                partition_leader_epoch,
                producer_id,
                producer_epoch: config.producer_epoch,
                base_sequence: config.base_sequence,
                attributes: config.attributes.0 & !0x07,
            },
            buf,
            count: 0,
            next_offset_delta: 0,
            base_timestamp: None,
            max_timestamp: i64::MIN,
        })
    }

    /// Records pushed so far.
    #[must_use]
    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// True when no record has been pushed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the batch `finish` would return now, header included.
    #[must_use]
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The uncompressed records section so far: what a client compresses before calling
    /// `finish_compressed`.
    #[must_use]
    pub fn records_bytes(&self) -> &[u8] {
        self.buf.get(HEADER_BYTES..).unwrap_or(&[])
    }

    /// What `size_bytes` would be after pushing this record, without pushing it: lets a
    /// producer close a batch before it passes its size limit. Errors as `push` would.
    pub fn size_bytes_with(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader<'_>],
        timestamp: i64,
    ) -> Result<usize, RecordError> {
        let plan = self.plan(key, value, headers.iter().map(|h| (h.key, h.value)), timestamp)?;
        Ok(self.buf.len() + plan.record_bytes)
    }

    /// Appends a record. Its offset delta is its position in the batch; its timestamp
    /// delta is relative to the first record's timestamp. On error the builder is
    /// unchanged.
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader<'_>],
        timestamp: i64,
    ) -> Result<(), RecordError> {
        self.push_iter(key, value, headers.iter().map(|h| (h.key, h.value)), timestamp)
    }

    /// Makes the next record's offset `base offset + delta`, leaving the offsets before
    /// it unused (as compaction does). `delta` must not go backwards.
    pub fn skip_to_offset_delta(&mut self, delta: i32) -> Result<(), RecordError> {
        if delta < self.next_offset_delta {
            return Err(RecordError::BadOffsetDelta {
                index: self.count,
                offset_delta: delta,
                previous: Some(self.next_offset_delta - 1),
                last_offset_delta: self.next_offset_delta - 1,
            });
        }
        self.next_offset_delta = delta;
        Ok(())
    }

    /// Appends an owned record, as `push`.
    pub fn push_record(&mut self, record: &Record) -> Result<(), RecordError> {
        self.push_iter(
            record.key.as_deref(),
            record.value.as_deref(),
            record.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
            record.timestamp,
        )
    }

    /// Checks a record against every limit and says how it will be written.
    fn plan<'h>(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
        timestamp: i64,
    ) -> Result<Plan, RecordError> {
        // The new record's offset delta is the next one (the count, unless offsets were
        // skipped), and the delta after it must still fit the header's i32.
        let offset_delta =
            Some(self.next_offset_delta).filter(|&delta| delta < i32::MAX).ok_or(RecordError::TooLarge {
                what: "record count",
                bytes: u64::from(self.count) + 1,
                max: i32::MAX as u64,
            })?;
        let timestamp_delta = match self.base_timestamp {
            None => 0,
            Some(base) => timestamp.checked_sub(base).ok_or(RecordError::TimestampOutOfRange { base, timestamp })?,
        };
        let body = record_body_bytes(timestamp_delta, offset_delta, key, value, headers)?;
        let body_len = i32::try_from(body).map_err(|_| RecordError::TooLarge {
            what: "record",
            bytes: body,
            max: i32::MAX as u64,
        })?;
        let record_bytes = varint_len(body_len) as u64 + body;
        let batch_bytes = self.buf.len() as u64 + record_bytes;
        if batch_bytes > BATCH_BYTES_MAX as u64 {
            return Err(RecordError::TooLarge { what: "batch", bytes: batch_bytes, max: BATCH_BYTES_MAX as u64 });
        }
        // Bounded by BATCH_BYTES_MAX just above, so it fits a usize.
        Ok(Plan { timestamp_delta, offset_delta, body_len, record_bytes: record_bytes as usize })
    }

    fn push_iter<'h, I>(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: I,
        timestamp: i64,
    ) -> Result<(), RecordError>
    where
        I: Iterator<Item = (&'h str, Option<&'h [u8]>)> + Clone,
    {
        let plan = self.plan(key, value, headers.clone(), timestamp)?;
        let start = self.buf.len();
        self.buf.reserve(plan.record_bytes);
        write_varint(&mut self.buf, plan.body_len);
        self.buf.push(0); // attributes: unused in v2, always 0 as Java writes them
        write_varlong(&mut self.buf, plan.timestamp_delta);
        write_varint(&mut self.buf, plan.offset_delta);
        write_nullable(&mut self.buf, key);
        write_nullable(&mut self.buf, value);
        let header_count = headers.clone().count();
        write_varint(&mut self.buf, i32::try_from(header_count).unwrap_or(i32::MAX));
        for (header_key, header_value) in headers {
            write_nullable(&mut self.buf, Some(header_key.as_bytes()));
            write_nullable(&mut self.buf, header_value);
        }
        // The size computation and the writer must agree, or the length prefix lies.
        assert_eq!(self.buf.len() - start, plan.record_bytes, "record size computed wrongly");
        self.count += 1;
        self.next_offset_delta += 1;
        self.base_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        Ok(())
    }

    /// Writes the header into the reserved bytes, for a records section of `count`
    /// records now in `buf[HEADER_BYTES..]`, and seals the CRC.
    fn seal(&self, buf: &mut [u8], compression: Compression) -> Result<(), RecordError> {
        // The base timestamp is set by the first push, so its absence means no record.
        let Some(base_timestamp) = self.base_timestamp else {
            return Err(RecordError::EmptyBatch);
        };
        if buf.len() > BATCH_BYTES_MAX {
            return Err(RecordError::TooLarge { what: "batch", bytes: buf.len() as u64, max: BATCH_BYTES_MAX as u64 });
        }
        // Both fit an i32: the batch is at most BATCH_BYTES_MAX (256 MiB) and plan()
        // kept the count below i32::MAX.
        let batch_length = i32::try_from(buf.len() - LOG_OVERHEAD_BYTES).unwrap_or(i32::MAX);
        let count = i32::try_from(self.count).unwrap_or(i32::MAX);
        let attributes = self.config.attributes | compression.bits();
        let header = BatchHeader {
            base_offset: I64::new(self.config.base_offset),
            batch_length: I32::new(batch_length),
            partition_leader_epoch: I32::new(self.config.partition_leader_epoch),
            magic: MAGIC_V2,
            crc: U32::new(0),
            // Bit-for-bit reinterpretation: the wire field is an i16 of flag bits.
            attributes: I16::new(attributes as i16),
            last_offset_delta: I32::new(self.next_offset_delta - 1),
            base_timestamp: I64::new(base_timestamp),
            max_timestamp: I64::new(self.max_timestamp),
            producer_id: I64::new(self.config.producer_id),
            producer_epoch: I16::new(self.config.producer_epoch),
            base_sequence: I32::new(self.config.base_sequence),
            record_count: I32::new(count),
        };
        if let Some(slot) = buf.get_mut(..HEADER_BYTES) {
            slot.copy_from_slice(header.as_bytes());
        }
        reseal_crc(buf);
        Ok(())
    }

    /// The finished, uncompressed batch: header, records, CRC. An error if no record
    /// was pushed.
    pub fn finish(mut self) -> Result<Vec<u8>, RecordError> {
        let mut buf = std::mem::take(&mut self.buf);
        self.seal(&mut buf, Compression::None)?;
        Ok(buf)
    }

    /// The finished batch with `records` as its records section: the pushed records
    /// after the caller compressed `records_bytes()` with `compression`. Count and
    /// timestamps come from the pushed records. An error if no record was pushed or the
    /// batch would pass `BATCH_BYTES_MAX`.
    pub fn finish_compressed(self, records: &[u8], compression: Compression) -> Result<Vec<u8>, RecordError> {
        let total = HEADER_BYTES as u64 + records.len() as u64;
        if total > BATCH_BYTES_MAX as u64 {
            return Err(RecordError::TooLarge { what: "batch", bytes: total, max: BATCH_BYTES_MAX as u64 });
        }
        let mut buf = Vec::with_capacity(HEADER_BYTES + records.len());
        buf.resize(HEADER_BYTES, 0);
        buf.extend_from_slice(records);
        self.seal(&mut buf, compression)?;
        Ok(buf)
    }
}

// ---------------------------------------------------------------------------------------
// Reading.
// ---------------------------------------------------------------------------------------

/// Reads fields of one record from its bytes (after the length prefix), keeping the
/// position for error messages.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Where `bytes` starts within the records section.
    origin: usize,
    index: u32,
}

/// A varint decoder: the value and the bytes it used.
type VarintReader<T> = fn(&[u8]) -> Result<(T, usize), VarintError>;

impl<'a> Cursor<'a> {
    fn position(&self) -> usize {
        self.origin + self.at
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.at..).unwrap_or(&[])
    }

    fn varint(&mut self, field: Field) -> Result<i32, RecordError> {
        self.decode(field, read_varint)
    }

    fn varlong(&mut self, field: Field) -> Result<i64, RecordError> {
        self.decode(field, read_varlong)
    }

    fn decode<T>(&mut self, field: Field, read: VarintReader<T>) -> Result<T, RecordError> {
        let (value, used) = read(self.rest()).map_err(|source| RecordError::BadVarint {
            index: self.index,
            position: self.position(),
            field,
            source,
        })?;
        self.at += used;
        Ok(value)
    }

    fn take(&mut self, len: usize, field: Field) -> Result<&'a [u8], RecordError> {
        let rest = self.rest();
        let Some(taken) = rest.get(..len) else {
            return Err(RecordError::Truncated {
                index: self.index,
                position: self.position(),
                field,
                needed: len as u64,
                available: rest.len(),
            });
        };
        self.at += len;
        Ok(taken)
    }

    /// A length varint: `None` for -1 when `nullable`, an error for anything else
    /// negative.
    fn length(&mut self, field: Field, nullable: bool) -> Result<Option<usize>, RecordError> {
        let position = self.position();
        let value = self.varint(field)?;
        match usize::try_from(value) {
            Ok(len) => Ok(Some(len)),
            Err(_) if value == -1 && nullable => Ok(None),
            Err(_) => Err(RecordError::NegativeLength { index: self.index, position, field, value }),
        }
    }

    fn nullable_bytes(&mut self, length: Field, field: Field) -> Result<Option<&'a [u8]>, RecordError> {
        match self.length(length, true)? {
            None => Ok(None),
            Some(len) => self.take(len, field).map(Some),
        }
    }
}

/// Iterates the records of one uncompressed batch (or of a decompressed records
/// section), yielding each with its absolute offset and timestamp. Ends after the first
/// error; a batch is good only if iteration ends without one.
#[derive(Clone, Debug)]
pub struct RecordIter<'a> {
    records: &'a [u8],
    /// Byte position of the next record within `records`.
    position: usize,
    index: u32,
    count: u32,
    base_offset: Offset,
    base_timestamp: i64,
    /// The batch's max timestamp when it is LogAppendTime: every record reports it.
    log_append_time: Option<i64>,
    last_offset_delta: i32,
    previous_offset_delta: Option<i32>,
    done: bool,
}

impl<'a> RecordIter<'a> {
    /// Iterates the records of a checked batch. An error if the batch's records are
    /// compressed (use `over_records` on the decompressed bytes) or its record count is
    /// negative.
    pub fn new(batch: CheckedBatch<'a>) -> Result<Self, RecordError> {
        // View rather than `batch.header()`: CheckedBatch's bytes field is public, so a
        // value built by hand might be short, and we refuse that instead of panicking.
        let header = BatchHeader::view(batch.bytes())?;
        let attributes = header.attributes();
        match attributes.compression() {
            None => return Err(BatchError::BadCompression(attributes.0).into()),
            Some(Compression::None) => {}
            Some(codec) => return Err(RecordError::Compressed(codec)),
        }
        Self::over_records(batch.bytes().get(HEADER_BYTES..).unwrap_or(&[]), header)
    }

    /// Checks the batch at the start of `bytes` (`batch::check_batch`) and iterates its
    /// records, as `new`.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, RecordError> {
        Self::new(crate::batch::check_batch(bytes)?)
    }

    /// Iterates a records section given apart from its header: the decompressed records
    /// of a compressed batch. The header's compression bits are not looked at.
    pub fn over_records(records: &'a [u8], header: &BatchHeader) -> Result<Self, RecordError> {
        let count = header.record_count();
        let count = u32::try_from(count).map_err(|_| RecordError::NegativeRecordCount(count))?;
        let log_append_time = match header.attributes().timestamp_type() {
            TimestampType::LogAppendTime => Some(header.max_timestamp()),
            TimestampType::CreateTime => None,
        };
        Ok(RecordIter {
            records,
            position: 0,
            index: 0,
            count,
            base_offset: header.base_offset(),
            base_timestamp: header.base_timestamp.get(),
            log_append_time,
            last_offset_delta: header.last_offset_delta.get(),
            previous_offset_delta: None,
            done: false,
        })
    }

    /// Records the header says the batch holds.
    #[must_use]
    pub fn record_count(&self) -> u32 {
        self.count
    }

    fn step(&mut self) -> Result<Option<RecordView<'a>>, RecordError> {
        let rest = self.records.get(self.position..).unwrap_or(&[]);
        if self.index == self.count {
            if !rest.is_empty() {
                return Err(RecordError::TrailingBytes { count: self.count, bytes: rest.len() });
            }
            return Ok(None);
        }
        if rest.is_empty() {
            return Err(RecordError::MissingRecords { expected: self.count, found: self.index });
        }
        let index = self.index;
        let mut prefix = Cursor { bytes: rest, at: 0, origin: self.position, index };
        let length = prefix.length(Field::Length, false)?.unwrap_or_default();
        let body_origin = prefix.position();
        let body = prefix.take(length, Field::Length)?;
        let mut cursor = Cursor { bytes: body, at: 0, origin: body_origin, index };

        let attributes = cursor.take(1, Field::Attributes)?.first().copied().unwrap_or(0);
        let timestamp_delta = cursor.varlong(Field::TimestampDelta)?;
        let offset_delta = cursor.varint(Field::OffsetDelta)?;
        let key = cursor.nullable_bytes(Field::KeyLength, Field::Key)?;
        let value = cursor.nullable_bytes(Field::ValueLength, Field::Value)?;
        let header_count = cursor.length(Field::HeaderCount, false)?.unwrap_or_default();
        // The count is untrusted: reserve no more than the bytes left could hold (a
        // header takes at least two bytes), so a corrupt count cannot exhaust memory.
        let mut headers = Vec::with_capacity(header_count.min(cursor.rest().len() / 2));
        for header in 0..header_count {
            let key_len = cursor.length(Field::HeaderKeyLength, false)?.unwrap_or_default();
            let key_position = cursor.position();
            let key_bytes = cursor.take(key_len, Field::HeaderKey)?;
            let key = std::str::from_utf8(key_bytes).map_err(|_| RecordError::HeaderKeyNotUtf8 {
                index,
                position: key_position,
                // header < header_count, which came from an i32.
                header: u32::try_from(header).unwrap_or(u32::MAX),
            })?;
            let value = cursor.nullable_bytes(Field::HeaderValueLength, Field::HeaderValue)?;
            headers.push(RecordHeader { key, value });
        }
        if cursor.at != body.len() {
            return Err(RecordError::LengthMismatch {
                index,
                position: self.position,
                declared: body.len(),
                used: cursor.at,
            });
        }

        let in_order = offset_delta >= 0
            && offset_delta <= self.last_offset_delta
            && self.previous_offset_delta.is_none_or(|previous| offset_delta > previous);
        if !in_order {
            return Err(RecordError::BadOffsetDelta {
                index,
                offset_delta,
                previous: self.previous_offset_delta,
                last_offset_delta: self.last_offset_delta,
            });
        }
        let timestamp = match self.log_append_time {
            Some(append_time) => append_time,
            None => self.base_timestamp.checked_add(timestamp_delta).ok_or(RecordError::TimestampOverflow {
                index,
                base: self.base_timestamp,
                delta: timestamp_delta,
            })?,
        };

        self.position += prefix.at;
        self.index += 1;
        self.previous_offset_delta = Some(offset_delta);
        Ok(Some(RecordView {
            // offset_delta >= 0 was checked above.
            offset: self.base_offset.plus(u64::try_from(offset_delta).unwrap_or_default()),
            timestamp,
            // Reinterpretation: the wire field is a signed byte.
            attributes: attributes as i8,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        }))
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                // One error per batch: the bytes after a malformed record cannot be
                // trusted to mean anything.
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for RecordIter<'_> {}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::batch::{check_batch, check_producer_batch, set_base_offset, CRC_START};
    use crate::varint::write_uvarint;

    fn header(key: &'static str, value: Option<&'static [u8]>) -> RecordHeader<'static> {
        RecordHeader { key, value }
    }

    /// A batch exercising the null/empty distinctions and repeated header keys.
    fn sample_records() -> Vec<Record> {
        vec![
            Record { timestamp: 1_000, key: Some(b"k1".to_vec()), value: Some(b"v1".to_vec()), headers: vec![] },
            Record { timestamp: 990, key: None, value: None, headers: vec![] },
            Record { timestamp: 1_500, key: Some(vec![]), value: Some(vec![]), headers: vec![] },
            Record {
                timestamp: 1_200,
                key: Some(vec![0xff; 300]),
                value: Some(vec![7; 70]),
                headers: vec![
                    ("trace".to_owned(), Some(b"abc".to_vec())),
                    ("trace".to_owned(), None),
                    ("".to_owned(), Some(vec![])),
                    ("ünïcode".to_owned(), Some(vec![1, 2, 3])),
                ],
            },
        ]
    }

    fn build(config: BatchConfig, records: &[Record]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(config).unwrap();
        for record in records {
            builder.push_record(record).unwrap();
        }
        builder.finish().unwrap()
    }

    fn read_all(batch: &[u8]) -> Vec<RecordView<'_>> {
        RecordIter::from_bytes(batch).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
    }

    /// Every error the iterator gives for `records` under a header of `count` records.
    fn errors_over(records: &[u8], count: i32, last_offset_delta: i32) -> Vec<RecordError> {
        let mut head = build(BatchConfig::default(), &[Record::default()]);
        head.truncate(HEADER_BYTES);
        let (h, _) = zerocopy::FromBytes::mut_from_prefix(&mut head[..]).unwrap();
        let h: &mut BatchHeader = h;
        h.record_count.set(count);
        h.last_offset_delta.set(last_offset_delta);
        let header = BatchHeader::view(&head).unwrap();
        RecordIter::over_records(records, header).unwrap().filter_map(Result::err).collect()
    }

    /// Encodes one record by hand, field by field, so tests can write malformed ones.
    #[derive(Clone)]
    struct Raw {
        attributes: u8,
        timestamp_delta: i64,
        offset_delta: i32,
        key: (i32, Vec<u8>),
        value: (i32, Vec<u8>),
        header_count: i32,
        headers: Vec<(i32, Vec<u8>, i32, Vec<u8>)>,
        /// Added to the true length in the prefix.
        length_adjust: i32,
    }

    impl Raw {
        fn new(offset_delta: i32) -> Raw {
            Raw {
                attributes: 0,
                timestamp_delta: 0,
                offset_delta,
                key: (1, b"k".to_vec()),
                value: (1, b"v".to_vec()),
                header_count: 0,
                headers: vec![],
                length_adjust: 0,
            }
        }

        fn encode(&self) -> Vec<u8> {
            let mut body = vec![self.attributes];
            write_varlong(&mut body, self.timestamp_delta);
            write_varint(&mut body, self.offset_delta);
            write_varint(&mut body, self.key.0);
            body.extend_from_slice(&self.key.1);
            write_varint(&mut body, self.value.0);
            body.extend_from_slice(&self.value.1);
            write_varint(&mut body, self.header_count);
            for (kl, k, vl, v) in &self.headers {
                write_varint(&mut body, *kl);
                body.extend_from_slice(k);
                write_varint(&mut body, *vl);
                body.extend_from_slice(v);
            }
            let mut out = Vec::new();
            write_varint(&mut out, body.len() as i32 + self.length_adjust);
            out.extend_from_slice(&body);
            out
        }
    }

    #[test]
    fn built_batches_read_back_with_offsets_timestamps_and_nulls_intact() {
        let records = sample_records();
        let batch = build(BatchConfig::default(), &records);
        let views = read_all(&batch);
        assert_eq!(views.len(), records.len());
        for (i, (view, record)) in views.iter().zip(&records).enumerate() {
            assert_eq!(view.offset, Offset(i as u64));
            assert_eq!(view.offset_delta, i as i32);
            assert_eq!(view.attributes, 0);
            assert_eq!(view.timestamp_delta, record.timestamp - 1_000, "delta from the first record");
            assert_eq!(&view.to_record(), record);
        }
        // Null and empty stay distinct.
        assert_eq!(views[1].key, None);
        assert_eq!(views[1].value, None);
        assert_eq!(views[2].key, Some(&[][..]));
        assert_eq!(views[2].value, Some(&[][..]));
        assert_eq!(views[3].headers[1], header("trace", None));
    }

    #[test]
    fn header_fields_are_written_as_kafka_expects() {
        let config = BatchConfig {
            base_offset: Offset(42),
            partition_leader_epoch: Some(LeaderEpoch(7)),
            producer_id: Some(ProducerId(9_000)),
            producer_epoch: 3,
            base_sequence: 100,
            // Compression bits set by mistake must not leak into an uncompressed batch.
            attributes: Attributes(Attributes::TRANSACTIONAL_BIT | Compression::Zstd.bits()),
        };
        let records = sample_records();
        let batch = build(config, &records);
        let checked = check_producer_batch(&batch).unwrap();
        let h = checked.header();
        assert_eq!(h.base_offset.get(), 42);
        assert_eq!(h.batch_length.get() as usize, batch.len() - LOG_OVERHEAD_BYTES);
        assert_eq!(h.partition_leader_epoch.get(), 7);
        assert_eq!(h.magic, MAGIC_V2);
        assert_eq!(h.attributes(), Attributes(Attributes::TRANSACTIONAL_BIT));
        assert_eq!(h.last_offset_delta.get(), 3);
        assert_eq!(h.base_timestamp.get(), 1_000, "first record's timestamp, not the minimum");
        assert_eq!(h.max_timestamp.get(), 1_500);
        assert_eq!(h.producer_id.get(), 9_000);
        assert_eq!(h.producer_epoch.get(), 3);
        assert_eq!(h.base_sequence.get(), 100);
        assert_eq!(h.record_count.get(), 4);
        assert_eq!(h.crc.get(), crc32c::crc32c(&batch[CRC_START..]));
        let offsets: Vec<_> = read_all(&batch).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [Offset(42), Offset(43), Offset(44), Offset(45)]);
    }

    #[test]
    fn defaults_write_kafkas_none_values() {
        let batch = build(BatchConfig::default(), &sample_records());
        let h = BatchHeader::view(&batch).unwrap();
        assert_eq!(h.partition_leader_epoch.get(), -1);
        assert_eq!(h.producer_id.get(), -1);
        assert_eq!(h.producer_epoch.get(), -1);
        assert_eq!(h.base_sequence.get(), -1);
        assert_eq!(h.attributes.get(), 0);
    }

    #[test]
    fn the_node_rewriting_the_base_offset_moves_every_record() {
        let mut batch = build(BatchConfig::default(), &sample_records());
        set_base_offset(&mut batch, Offset(1_000_000));
        check_producer_batch(&batch).unwrap();
        let offsets: Vec<u64> = read_all(&batch).iter().map(|r| r.offset.0).collect();
        assert_eq!(offsets, [1_000_000, 1_000_001, 1_000_002, 1_000_003]);
    }

    #[test]
    fn a_single_record_batch_has_last_offset_delta_zero() {
        let batch = build(BatchConfig::default(), &[Record::default()]);
        let h = check_producer_batch(&batch).unwrap().header();
        assert_eq!((h.record_count.get(), h.last_offset_delta.get()), (1, 0));
        assert_eq!(batch.len(), HEADER_BYTES + RECORD_BYTES_MIN, "smallest possible record");
    }

    #[test]
    fn an_empty_builder_refuses_to_finish() {
        let builder = BatchBuilder::new(BatchConfig::default()).unwrap();
        assert!(builder.is_empty());
        assert_eq!(builder.size_bytes(), HEADER_BYTES);
        assert_eq!(builder.clone().finish(), Err(RecordError::EmptyBatch));
        assert_eq!(builder.finish_compressed(&[], Compression::Gzip), Err(RecordError::EmptyBatch));
    }

    #[test]
    fn size_bytes_tracks_the_finished_length_and_size_bytes_with_predicts_it() {
        let mut builder = BatchBuilder::new(BatchConfig::default()).unwrap();
        for record in sample_records() {
            let headers: Vec<RecordHeader<'_>> =
                record.headers.iter().map(|(k, v)| RecordHeader { key: k, value: v.as_deref() }).collect();
            let predicted = builder
                .size_bytes_with(record.key.as_deref(), record.value.as_deref(), &headers, record.timestamp)
                .unwrap();
            builder.push(record.key.as_deref(), record.value.as_deref(), &headers, record.timestamp).unwrap();
            assert_eq!(builder.size_bytes(), predicted);
        }
        assert_eq!(builder.record_count(), 4);
        let size = builder.size_bytes();
        assert_eq!(builder.records_bytes().len(), size - HEADER_BYTES);
        assert_eq!(builder.finish().unwrap().len(), size);
    }

    #[test]
    fn log_append_time_batches_report_the_max_timestamp_for_every_record() {
        let config = BatchConfig { attributes: Attributes(Attributes::TIMESTAMP_TYPE_BIT), ..BatchConfig::default() };
        let batch = build(config, &sample_records());
        let timestamps: Vec<i64> = read_all(&batch).iter().map(|r| r.timestamp).collect();
        assert_eq!(timestamps, [1_500; 4]);
    }

    #[test]
    fn compressed_batches_are_refused_but_their_decompressed_records_read() {
        let mut builder = BatchBuilder::new(BatchConfig::default()).unwrap();
        for record in sample_records() {
            builder.push_record(&record).unwrap();
        }
        let plain = builder.records_bytes().to_vec();
        // Stand-in for compression: the codec is not this module's business.
        let batch = builder.finish_compressed(&plain, Compression::Gzip).unwrap();
        let checked = check_producer_batch(&batch).unwrap();
        assert_eq!(checked.header().attributes().compression(), Some(Compression::Gzip));
        assert_eq!(RecordIter::new(checked).err(), Some(RecordError::Compressed(Compression::Gzip)));
        let records: Vec<Record> =
            RecordIter::over_records(&plain, checked.header()).unwrap().map(|r| r.unwrap().to_record()).collect();
        assert_eq!(records, sample_records());
    }

    #[test]
    fn finishing_with_the_plain_records_equals_finish() {
        let mut builder = BatchBuilder::new(BatchConfig::default()).unwrap();
        for record in sample_records() {
            builder.push_record(&record).unwrap();
        }
        let plain = builder.records_bytes().to_vec();
        let a = builder.clone().finish().unwrap();
        let b = builder.finish_compressed(&plain, Compression::None).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn settings_that_do_not_fit_the_wire_are_refused() {
        let refuse = |config: BatchConfig| BatchBuilder::new(config).err();
        assert!(matches!(
            refuse(BatchConfig { base_offset: Offset(u64::MAX), ..BatchConfig::default() }),
            Some(RecordError::BadConfig { what: "base offset", .. })
        ));
        assert!(matches!(
            refuse(BatchConfig { producer_id: Some(ProducerId(1 << 63)), ..BatchConfig::default() }),
            Some(RecordError::BadConfig { what: "producer id", .. })
        ));
        assert!(matches!(
            refuse(BatchConfig { partition_leader_epoch: Some(LeaderEpoch(u32::MAX)), ..BatchConfig::default() }),
            Some(RecordError::BadConfig { what: "partition leader epoch", .. })
        ));
        assert_eq!(
            refuse(BatchConfig { attributes: Attributes(7), ..BatchConfig::default() }),
            Some(RecordError::Batch(BatchError::BadCompression(7)))
        );
    }

    #[test]
    fn extreme_timestamps_within_range_round_trip() {
        for (first, second) in [(i64::MIN, -1), (0, i64::MAX), (i64::MAX, 0), (-1, i64::MIN + 1)] {
            let records =
                [Record { timestamp: first, ..Record::default() }, Record { timestamp: second, ..Record::default() }];
            let batch = build(BatchConfig::default(), &records);
            let read: Vec<i64> = read_all(&batch).iter().map(|r| r.timestamp).collect();
            assert_eq!(read, [first, second]);
        }
    }

    #[test]
    fn a_timestamp_too_far_from_the_base_is_refused_and_leaves_the_builder_unchanged() {
        let mut builder = BatchBuilder::new(BatchConfig::default()).unwrap();
        builder.push(None, Some(b"x"), &[], i64::MIN).unwrap();
        let before = builder.records_bytes().to_vec();
        assert_eq!(
            builder.push(None, Some(b"y"), &[], i64::MAX),
            Err(RecordError::TimestampOutOfRange { base: i64::MIN, timestamp: i64::MAX })
        );
        assert_eq!(builder.records_bytes(), before);
        assert_eq!(builder.record_count(), 1);
    }

    #[test]
    fn a_record_that_would_pass_the_batch_limit_is_refused() {
        // calloc'd and never touched: the limit is checked before anything is copied.
        let huge = vec![0u8; BATCH_BYTES_MAX];
        let mut builder = BatchBuilder::new(BatchConfig::default()).unwrap();
        assert!(matches!(builder.push(None, Some(&huge), &[], 0), Err(RecordError::TooLarge { what: "batch", .. })));
        assert!(builder.is_empty());
        assert!(matches!(
            BatchBuilder::new(BatchConfig::default()).unwrap().finish_compressed(&huge, Compression::Zstd),
            Err(RecordError::TooLarge { what: "batch", .. })
        ));
    }

    #[test]
    fn every_truncation_of_the_records_is_an_error_never_a_panic() {
        let batch = build(BatchConfig::default(), &sample_records());
        let header = BatchHeader::view(&batch).unwrap();
        let records = &batch[HEADER_BYTES..];
        for cut in 0..records.len() {
            let results: Vec<_> = RecordIter::over_records(&records[..cut], header).unwrap().collect();
            let last = results.last().expect("a truncated batch yields at least its error");
            assert!(last.is_err(), "cut at {cut} went unnoticed");
            assert!(results[..results.len() - 1].iter().all(Result::is_ok));
        }
        // Whole batches cut short fail the batch check before any record is read.
        for cut in 0..batch.len() {
            assert!(RecordIter::from_bytes(&batch[..cut]).is_err(), "batch cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_is_caught_by_the_crc() {
        let batch = build(BatchConfig::default(), &sample_records());
        for at in CRC_START..batch.len() {
            let mut bad = batch.clone();
            bad[at] ^= 0x01;
            assert!(matches!(check_batch(&bad), Err(BatchError::BadCrc { .. })), "byte {at}");
        }
    }

    #[test]
    fn a_batch_of_zero_records_reads_as_empty_and_refuses_trailing_bytes() {
        assert_eq!(errors_over(&[], 0, -1), []);
        assert_eq!(errors_over(&Raw::new(0).encode(), 0, -1), [RecordError::TrailingBytes { count: 0, bytes: 9 }]);
    }

    #[test]
    fn record_counts_must_match_the_records_present() {
        let two = [Raw::new(0).encode(), Raw::new(1).encode()].concat();
        assert_eq!(errors_over(&two, 2, 1), []);
        assert_eq!(errors_over(&two, 3, 2), [RecordError::MissingRecords { expected: 3, found: 2 }]);
        assert_eq!(errors_over(&two, 1, 1), [RecordError::TrailingBytes { count: 1, bytes: 9 }]);
        let head = build(BatchConfig::default(), &[Record::default()]);
        let mut head = head[..HEADER_BYTES].to_vec();
        head[57..61].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            RecordIter::over_records(&two, BatchHeader::view(&head).unwrap()).err(),
            Some(RecordError::NegativeRecordCount(-5))
        );
    }

    #[test]
    fn bad_record_lengths_are_errors() {
        // Negative length.
        let mut bytes = Vec::new();
        write_varint(&mut bytes, -1);
        assert!(matches!(
            errors_over(&bytes, 1, 0)[..],
            [RecordError::NegativeLength { field: Field::Length, value: -1, .. }]
        ));
        // Length past the end of the batch.
        let mut long = Raw::new(0);
        long.length_adjust = 5;
        assert!(matches!(
            errors_over(&long.encode(), 1, 0)[..],
            [RecordError::Truncated { field: Field::Length, needed: 13, available: 8, .. }]
        ));
        // Length shorter than the fields: the last field is cut off.
        let mut short = Raw::new(0);
        short.length_adjust = -1;
        let mut bytes = short.encode();
        bytes.push(0); // keep the batch's byte total right; only the record lies
        assert!(matches!(errors_over(&bytes, 1, 0)[..], [RecordError::BadVarint { field: Field::HeaderCount, .. }]));
        // Length longer than the fields, with the spare bytes inside the record.
        let mut padded = Raw::new(0);
        padded.length_adjust = 2;
        let mut bytes = padded.encode();
        bytes.extend_from_slice(&[0, 0]);
        assert_eq!(
            errors_over(&bytes, 1, 0),
            [RecordError::LengthMismatch { index: 0, position: 0, declared: 10, used: 8 }]
        );
        // An over-long length varint.
        assert!(matches!(
            errors_over(&[0xff; 8], 1, 0)[..],
            [RecordError::BadVarint { field: Field::Length, source: VarintError::TooLong { .. }, .. }]
        ));
    }

    #[test]
    fn field_lengths_below_minus_one_and_null_header_keys_are_errors() {
        let mut raw = Raw::new(0);
        raw.key = (-2, vec![]);
        assert!(matches!(
            errors_over(&raw.encode(), 1, 0)[..],
            [RecordError::NegativeLength { field: Field::KeyLength, value: -2, .. }]
        ));
        let mut raw = Raw::new(0);
        raw.value = (i32::MIN, vec![]);
        assert!(matches!(
            errors_over(&raw.encode(), 1, 0)[..],
            [RecordError::NegativeLength { field: Field::ValueLength, value: i32::MIN, .. }]
        ));
        let mut raw = Raw::new(0);
        raw.value = (1_000, vec![1, 2]);
        assert!(matches!(
            errors_over(&raw.encode(), 1, 0)[..],
            [RecordError::Truncated { field: Field::Value, needed: 1_000, .. }]
        ));
        let mut raw = Raw::new(0);
        raw.header_count = -1;
        assert!(matches!(
            errors_over(&raw.encode(), 1, 0)[..],
            [RecordError::NegativeLength { field: Field::HeaderCount, value: -1, .. }]
        ));
        let mut raw = Raw::new(0);
        raw.header_count = 1;
        raw.headers = vec![(-1, vec![], 1, vec![b'x'])];
        assert!(matches!(
            errors_over(&raw.encode(), 1, 0)[..],
            [RecordError::NegativeLength { field: Field::HeaderKeyLength, value: -1, .. }]
        ));
        let mut raw = Raw::new(0);
        raw.header_count = 1;
        raw.headers = vec![(1, vec![b'h'], -3, vec![])];
        assert!(matches!(
            errors_over(&raw.encode(), 1, 0)[..],
            [RecordError::NegativeLength { field: Field::HeaderValueLength, value: -3, .. }]
        ));
        // A header count far beyond the bytes must not reserve memory for it.
        let mut raw = Raw::new(0);
        raw.header_count = i32::MAX;
        assert!(matches!(
            errors_over(&raw.encode(), 1, 0)[..],
            [RecordError::BadVarint { field: Field::HeaderKeyLength, .. }]
        ));
    }

    #[test]
    fn header_keys_must_be_utf8() {
        let mut raw = Raw::new(0);
        raw.header_count = 2;
        raw.headers = vec![(1, b"a".to_vec(), -1, vec![]), (2, vec![0xc3, 0x28], 0, vec![])];
        assert!(matches!(
            errors_over(&raw.encode(), 1, 0)[..],
            [RecordError::HeaderKeyNotUtf8 { index: 0, header: 1, .. }]
        ));
    }

    #[test]
    fn offset_deltas_must_increase_within_the_last_offset_delta() {
        let records = |deltas: &[i32]| deltas.iter().map(|&d| Raw::new(d).encode()).collect::<Vec<_>>().concat();
        // Gaps, as compaction leaves them, are fine.
        assert_eq!(errors_over(&records(&[0, 3, 9]), 3, 9), []);
        assert_eq!(errors_over(&records(&[2, 5]), 2, 7), []);
        for (deltas, last) in [(&[0, 0][..], 1), (&[1, 0][..], 1), (&[-1, 0][..], 1), (&[0, 2][..], 1)] {
            let errors = errors_over(&records(deltas), 2, last);
            assert!(matches!(errors[..], [RecordError::BadOffsetDelta { .. }]), "{deltas:?}: {errors:?}");
        }
    }

    #[test]
    fn a_timestamp_delta_that_overflows_is_an_error() {
        let mut raw = Raw::new(0);
        raw.timestamp_delta = i64::MAX;
        // errors_over's header has base timestamp 0: make it overflow with a second record.
        let mut head = build(BatchConfig::default(), &[Record { timestamp: 10, ..Record::default() }]);
        head.truncate(HEADER_BYTES);
        let header = BatchHeader::view(&head).unwrap();
        let bytes = raw.encode();
        let errors: Vec<_> = RecordIter::over_records(&bytes, header).unwrap().filter_map(Result::err).collect();
        assert_eq!(errors, [RecordError::TimestampOverflow { index: 0, base: 10, delta: i64::MAX }]);
    }

    #[test]
    fn the_iterator_ends_after_its_first_error() {
        let mut bytes = Vec::new();
        write_uvarint(&mut bytes, 0xffff_ffff);
        let head = build(BatchConfig::default(), &[Record::default()]);
        let header = BatchHeader::view(&head).unwrap();
        let mut iter = RecordIter::over_records(&bytes, header).unwrap();
        assert!(matches!(iter.next(), Some(Err(_))));
        assert!(iter.next().is_none());
        assert!(iter.next().is_none());
    }

    #[test]
    fn skipped_offsets_are_kept_as_gaps_and_read_back_at_their_offsets() {
        let mut b = BatchBuilder::new(BatchConfig { base_offset: Offset(100), ..BatchConfig::default() }).unwrap();
        b.push(Some(b"a"), Some(b"1"), &[], 10).unwrap();
        b.skip_to_offset_delta(5).unwrap();
        b.push(Some(b"b"), None, &[], 11).unwrap();
        assert!(b.skip_to_offset_delta(3).is_err(), "deltas never go backwards");
        let batch = b.finish().unwrap();
        let checked = check_batch(&batch).unwrap();
        assert_eq!(checked.header().last_offset_delta.get(), 5);
        assert_eq!(checked.header().record_count(), 2);
        let offsets: Vec<u64> = RecordIter::from_bytes(&batch).unwrap().map(|r| r.unwrap().offset.0).collect();
        assert_eq!(offsets, vec![100, 105]);
    }

    #[test]
    fn errors_name_the_record_and_field() {
        let mut raw = Raw::new(0);
        raw.key = (-2, vec![]);
        let message = errors_over(&raw.encode(), 1, 0)[0].to_string();
        assert_eq!(message, "record 0 (records byte 4): key length is -2, which is not a valid length or count");
    }
}
