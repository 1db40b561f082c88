//! The fixed 61-byte header of a Kafka RecordBatch v2, read in place with zerocopy.
//!
//! The same bytes travel from the producer's buffer to the disk to the consumer's socket,
//! so this module never copies a batch: it views the header where it lies, checks it,
//! and patches the one field the node owns (the base offset, which the CRC does not
//! cover). Byte layout, all big-endian, as Kafka's `DefaultRecordBatch`:
//!
//! ```text
//! 0  base_offset i64        8  batch_length i32 (bytes after this field)
//! 12 leader_epoch i32       16 magic i8 (= 2)        17 crc u32 (CRC32C of 21..end)
//! 21 attributes i16         23 last_offset_delta i32 27 base_timestamp i64
//! 35 max_timestamp i64      43 producer_id i64       51 producer_epoch i16
//! 53 base_sequence i32      57 record_count i32      61 records...
//! ```

use std::fmt;
use std::str::FromStr;

use thiserror::Error;
use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::ids::{LeaderEpoch, Offset};

/// Bytes in the fixed header of a v2 batch.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batch_length`'s count starts: base offset (8) and the length itself (4).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only magic value we store.
pub const MAGIC_V2: i8 = 2;
/// Where the CRC-covered part of a batch starts (the attributes field).
pub const CRC_START: usize = 21;
/// The largest batch any code path accepts. Topic limits (max.message.bytes) are lower;
/// this bound only protects parsers from absurd lengths read off a corrupt disk or wire.
pub const BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Compression codec, attribute bits 0-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Records stored as they are.
    None,
    /// gzip (codec 1).
    Gzip,
    /// snappy in Kafka's xerial framing (codec 2).
    Snappy,
    /// LZ4 frame format (codec 3).
    Lz4,
    /// zstd (codec 4).
    Zstd,
}

impl Compression {
    /// Every codec, in attribute-bit order.
    pub const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    /// The codec named by attribute bits 0-2, or `None` for an undefined value.
    #[must_use]
    pub fn from_bits(bits: u16) -> Option<Compression> {
        match bits & 0x07 {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The attribute bits of this codec.
    #[must_use]
    pub fn bits(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec's name as Kafka's `compression.type` config spells it (what `Display`
    /// writes and `FromStr` reads).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compression name that is none of Kafka's `compression.type` values.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{name:?} is not a compression codec ({accepted})", accepted = accepted_names())]
pub struct UnknownCompression {
    /// The name as it was given.
    pub name: String,
}

/// "none, gzip, snappy, lz4 or zstd": the names `FromStr` accepts, for error messages.
fn accepted_names() -> String {
    let names: Vec<&str> = Compression::ALL.iter().map(|c| c.name()).collect();
    match names.split_last() {
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl FromStr for Compression {
    type Err = UnknownCompression;

    /// Exactly the names `name` gives (lower case, as Kafka's configs take them).
    fn from_str(s: &str) -> Result<Compression, UnknownCompression> {
        Compression::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| UnknownCompression { name: s.to_string() })
    }
}

/// Which clock a batch's timestamps come from (attribute bit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the node when it appended the batch.
    LogAppendTime,
}

/// The attributes field of a v2 batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Attributes(pub u16);

impl Attributes {
    /// Set when timestamps are LogAppendTime.
    pub const TIMESTAMP_TYPE_BIT: u16 = 1 << 3;
    /// Set on batches written inside a transaction.
    pub const TRANSACTIONAL_BIT: u16 = 1 << 4;
    /// Set on control batches (transaction commit/abort markers).
    pub const CONTROL_BIT: u16 = 1 << 5;
    /// Set when the base timestamp holds a compaction delete horizon.
    pub const DELETE_HORIZON_BIT: u16 = 1 << 6;

    /// The codec, or `None` when bits 0-2 hold an undefined value.
    #[must_use]
    pub fn compression(self) -> Option<Compression> {
        Compression::from_bits(self.0)
    }

    /// Which clock the timestamps come from.
    #[must_use]
    pub fn timestamp_type(self) -> TimestampType {
        if self.0 & Self::TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch was written inside a transaction.
    #[must_use]
    pub fn is_transactional(self) -> bool {
        self.0 & Self::TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds control records (transaction markers).
    #[must_use]
    pub fn is_control(self) -> bool {
        self.0 & Self::CONTROL_BIT != 0
    }

    /// Whether the base timestamp is a compaction delete horizon.
    #[must_use]
    pub fn has_delete_horizon(self) -> bool {
        self.0 & Self::DELETE_HORIZON_BIT != 0
    }
}

/// The fixed header, viewed in place. Every field is big-endian and unaligned, so a
/// header can be read from any byte position of a buffer.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug)]
#[repr(C)]
#[allow(missing_docs)] // The fields are the wire layout in the module documentation.
pub struct BatchHeader {
    pub base_offset: I64,
    pub batch_length: I32,
    pub partition_leader_epoch: I32,
    pub magic: i8,
    pub crc: U32,
    pub attributes: I16,
    pub last_offset_delta: I32,
    pub base_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub producer_epoch: I16,
    pub base_sequence: I32,
    pub record_count: I32,
}

const _: () = assert!(std::mem::size_of::<BatchHeader>() == HEADER_BYTES);

/// Why a batch was refused. Each message names the field and the value found, so the
/// person reading a log line or an error reply knows what the producer sent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header or the length field needs.
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    /// The length field is below a header's size or above `BATCH_BYTES_MAX`.
    #[error("batch length {0} is out of range (at least {min} and at most {max})", min = HEADER_BYTES - LOG_OVERHEAD_BYTES, max = BATCH_BYTES_MAX)]
    BadLength(i64),
    /// Not a v2 batch.
    #[error("batch magic is {0}, only magic 2 (RecordBatch v2) is supported")]
    BadMagic(i8),
    /// The bytes are not what the producer sealed.
    #[error("batch CRC mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    /// The record count disagrees with the offset delta (or is negative).
    #[error("batch record count {count} does not match last offset delta {last_offset_delta}")]
    BadRecordCount { count: i32, last_offset_delta: i32 },
    /// Compression bits 0-2 are not a codec.
    #[error("batch attributes {0:#06x} name an unknown compression codec")]
    BadCompression(u16),
    /// Offsets are never negative.
    #[error("batch base offset {0} is negative")]
    NegativeBaseOffset(i64),
    /// Only the node writes transaction markers.
    #[error("control batches (transaction markers) cannot be produced by clients")]
    ControlBatchFromProducer,
    /// Where only a transaction marker may go (the coordinator's append), something else.
    #[error("not a transaction marker: a control batch whose first record's key is a marker's")]
    NotAMarker,
}

impl BatchHeader {
    /// Views the header at the start of `bytes` without checking anything but its size.
    pub fn view(bytes: &[u8]) -> Result<&BatchHeader, BatchError> {
        BatchHeader::ref_from_prefix(bytes)
            .map(|(header, _)| header)
            .map_err(|_| BatchError::Truncated { needed: HEADER_BYTES, available: bytes.len() })
    }

    /// Total bytes of the batch, header included, as its length field says; an error
    /// when the field is out of range (it could not be a batch we wrote or accept).
    pub fn total_bytes(&self) -> Result<usize, BatchError> {
        let length = i64::from(self.batch_length.get());
        let min = (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i64;
        if length < min || length as usize > BATCH_BYTES_MAX - LOG_OVERHEAD_BYTES {
            return Err(BatchError::BadLength(length));
        }
        Ok(length as usize + LOG_OVERHEAD_BYTES)
    }

    /// The offset of the batch's first record.
    #[must_use]
    pub fn base_offset(&self) -> Offset {
        Offset(self.base_offset.get().max(0) as u64)
    }

    /// The offset of the last record of the batch.
    #[must_use]
    pub fn last_offset(&self) -> Offset {
        self.base_offset().plus(self.last_offset_delta.get().max(0) as u64)
    }

    /// The offset after the batch's last record: where the next batch starts.
    #[must_use]
    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }

    /// The attributes field.
    #[must_use]
    pub fn attributes(&self) -> Attributes {
        Attributes(self.attributes.get() as u16)
    }

    /// The largest record timestamp (or the append time under LogAppendTime).
    #[must_use]
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.get()
    }

    /// How many records the batch holds.
    #[must_use]
    pub fn record_count(&self) -> i32 {
        self.record_count.get()
    }

    /// The epoch of the partition leader that appended the batch; `None` for -1 (a
    /// single node's log, or a producer's batch not yet appended).
    #[must_use]
    pub fn leader_epoch(&self) -> Option<LeaderEpoch> {
        u32::try_from(self.partition_leader_epoch.get()).ok().map(LeaderEpoch)
    }
}

/// A whole batch whose length, magic and CRC have been checked. Only `check_batch` makes
/// one, so holding one proves the checks ran.
#[derive(Clone, Copy, Debug)]
pub struct CheckedBatch<'a> {
    bytes: &'a [u8],
}

impl<'a> CheckedBatch<'a> {
    /// Exactly the batch's bytes.
    #[must_use]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The batch's header.
    #[must_use]
    pub fn header(&self) -> &'a BatchHeader {
        // The bytes were checked to hold a whole header when this value was made.
        match BatchHeader::view(self.bytes) {
            Ok(header) => header,
            Err(e) => unreachable!("checked batch lost its header: {e}"),
        }
    }
}

/// Checks the batch at the start of `bytes`: length in range and present, magic 2,
/// CRC32C over attributes..end. Returns the batch (its exact bytes) and leaves the rest.
pub fn check_batch(bytes: &[u8]) -> Result<CheckedBatch<'_>, BatchError> {
    let header = BatchHeader::view(bytes)?;
    let total = header.total_bytes()?;
    if bytes.len() < total {
        return Err(BatchError::Truncated { needed: total, available: bytes.len() });
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::BadMagic(header.magic));
    }
    let stored = header.crc.get();
    let computed = crc32c::crc32c(&bytes[CRC_START..total]);
    if stored != computed {
        return Err(BatchError::BadCrc { stored, computed });
    }
    let count = header.record_count.get();
    let last_offset_delta = header.last_offset_delta.get();
    if header.base_offset.get() < 0 {
        return Err(BatchError::NegativeBaseOffset(header.base_offset.get()));
    }
    if count < 0 || last_offset_delta < 0 || count > last_offset_delta.saturating_add(1) {
        return Err(BatchError::BadRecordCount { count, last_offset_delta });
    }
    Ok(CheckedBatch { bytes: &bytes[..total] })
}

/// Checks what a producer may send beyond `check_batch`: a known codec, and a record
/// count that matches the offset delta (producers never leave gaps inside a batch).
pub fn check_producer_batch(bytes: &[u8]) -> Result<CheckedBatch<'_>, BatchError> {
    let batch = check_batch(bytes)?;
    let header = batch.header();
    let attributes = header.attributes();
    if attributes.compression().is_none() {
        return Err(BatchError::BadCompression(attributes.0));
    }
    if attributes.is_control() {
        return Err(BatchError::ControlBatchFromProducer);
    }
    let count = header.record_count();
    let last_offset_delta = header.last_offset_delta.get();
    if count < 1 || last_offset_delta != count - 1 {
        return Err(BatchError::BadRecordCount { count, last_offset_delta });
    }
    Ok(batch)
}

/// Rewrites the base offset of the batch at the start of `bytes`. The CRC does not
/// cover this field, so the batch stays valid. Panics if `bytes` holds no header: the
/// caller checked the batch before.
pub fn set_base_offset(bytes: &mut [u8], base: Offset) {
    let (header, _) = match BatchHeader::mut_from_prefix(bytes) {
        Ok(parts) => parts,
        Err(_) => panic!("set_base_offset on {} bytes, less than a header", bytes.len()),
    };
    header.base_offset.set(base.0 as i64);
}

/// Stamps the partition leader epoch into the batch at the start of `bytes`. The CRC does
/// not cover this field either. Panics if `bytes` holds no header.
pub fn set_leader_epoch(bytes: &mut [u8], epoch: LeaderEpoch) {
    let (header, _) = match BatchHeader::mut_from_prefix(bytes) {
        Ok(parts) => parts,
        Err(_) => panic!("set_leader_epoch on {} bytes, less than a header", bytes.len()),
    };
    header.partition_leader_epoch.set(epoch.0.min(i32::MAX as u32) as i32);
}

/// Stamps the batch at the start of `bytes` with the node's append time, as Kafka does for
/// topics with LogAppendTime: the timestamp-type bit is set, the max timestamp becomes
/// `now_ms` (readers take every record's timestamp from it), and the CRC is resealed.
/// Panics if `bytes` holds no whole batch (callers pass checked batches).
pub fn stamp_log_append_time(bytes: &mut [u8], now_ms: i64) {
    {
        let (header, _) = match BatchHeader::mut_from_prefix(bytes) {
            Ok(parts) => parts,
            Err(_) => panic!("stamp_log_append_time on {} bytes, less than a header", bytes.len()),
        };
        let attributes = header.attributes.get() as u16 | Attributes::TIMESTAMP_TYPE_BIT;
        header.attributes.set(attributes as i16);
        header.max_timestamp.set(now_ms);
    }
    reseal_crc(bytes);
}

/// Gives the batch at the start of `bytes` another producer id, epoch and first sequence
/// number (an idempotent producer renumbering batches it has not sent after it moved to
/// a new epoch), and reseals the CRC. Panics if `bytes` holds no whole batch.
pub fn stamp_producer(bytes: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    {
        let (header, _) = match BatchHeader::mut_from_prefix(bytes) {
            Ok(parts) => parts,
            Err(_) => panic!("stamp_producer on {} bytes, less than a header", bytes.len()),
        };
        header.producer_id.set(producer_id);
        header.producer_epoch.set(producer_epoch);
        header.base_sequence.set(base_sequence);
    }
    reseal_crc(bytes);
}

/// Recomputes and stores the CRC of the batch at the start of `bytes` (after the node
/// changed a covered field, e.g. LogAppendTime stamping), over exactly the bytes its
/// length field names. Panics if `bytes` holds no whole batch: callers pass batches
/// they built or checked, so anything else is a bug.
pub fn reseal_crc(bytes: &mut [u8]) {
    let total = match BatchHeader::view(bytes).and_then(BatchHeader::total_bytes) {
        Ok(t) if t <= bytes.len() => t,
        _ => panic!("reseal_crc on {} bytes that hold no whole batch", bytes.len()),
    };
    let crc = crc32c::crc32c(&bytes[CRC_START..total]);
    let (header, _) = match BatchHeader::mut_from_prefix(bytes) {
        Ok(parts) => parts,
        Err(_) => panic!("reseal_crc on {} bytes, less than a header", bytes.len()),
    };
    header.crc.set(crc);
}

/// Walks a run of concatenated batches, checking only what is needed to step from one
/// to the next (header present, length in range). Yields one error for the first batch
/// that is not whole, then ends; `position()` then says where that batch starts.
#[derive(Debug)]
pub struct BatchWalker<'a> {
    bytes: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> BatchWalker<'a> {
    /// A walker over `bytes`, starting at its first byte.
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Self {
        BatchWalker { bytes, position: 0, failed: false }
    }

    /// Byte position of the next batch within the walked bytes.
    #[must_use]
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<'a> Iterator for BatchWalker<'a> {
    /// (byte position, header, the batch's bytes)
    type Item = Result<(usize, &'a BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.bytes[self.position..];
        if rest.is_empty() || self.failed {
            return None;
        }
        let total = match BatchHeader::view(rest).and_then(BatchHeader::total_bytes) {
            Ok(t) if t <= rest.len() => t,
            Ok(t) => {
                self.failed = true;
                return Some(Err(BatchError::Truncated { needed: t, available: rest.len() }));
            }
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let Ok(header) = BatchHeader::view(rest) else { unreachable!("viewed above") };
        let at = self.position;
        self.position += total;
        Some(Ok((at, header, &rest[..total])))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn compression_names_are_kafkas_config_values_and_parse_back() {
        let names: Vec<String> = Compression::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["none", "gzip", "snappy", "lz4", "zstd"]);
        for codec in Compression::ALL {
            assert_eq!(codec.name().parse::<Compression>(), Ok(codec));
            assert_eq!(Compression::from_bits(codec.bits()), Some(codec));
        }
        let e = "LZ4".parse::<Compression>().unwrap_err();
        assert_eq!(e.to_string(), r#""LZ4" is not a compression codec (none, gzip, snappy, lz4 or zstd)"#);
        assert!("".parse::<Compression>().is_err());
    }

    fn header_only(record_count: i32, last_offset_delta: i32, base_offset: i64) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_BYTES];
        let (h, _) = BatchHeader::mut_from_prefix(&mut bytes).unwrap();
        h.base_offset.set(base_offset);
        h.batch_length.set((HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32);
        h.magic = MAGIC_V2;
        h.record_count.set(record_count);
        h.last_offset_delta.set(last_offset_delta);
        reseal_crc(&mut bytes);
        bytes
    }

    #[test]
    fn negative_offsets_and_counts_are_refused() {
        assert!(check_batch(&header_only(1, 0, 0)).is_ok());
        assert_eq!(check_batch(&header_only(1, 0, -5)).unwrap_err(), BatchError::NegativeBaseOffset(-5));
        assert!(matches!(check_batch(&header_only(-1, 0, 0)), Err(BatchError::BadRecordCount { .. })));
        assert!(matches!(check_batch(&header_only(1, -1, 0)), Err(BatchError::BadRecordCount { .. })));
        assert!(matches!(check_batch(&header_only(3, 1, 0)), Err(BatchError::BadRecordCount { .. })));
    }

    #[test]
    fn producers_may_not_send_control_batches() {
        let mut bytes = header_only(1, 0, 0);
        let (h, _) = BatchHeader::mut_from_prefix(&mut bytes).unwrap();
        h.attributes.set(Attributes::CONTROL_BIT as i16);
        reseal_crc(&mut bytes);
        assert!(check_batch(&bytes).is_ok());
        assert_eq!(check_producer_batch(&bytes).unwrap_err(), BatchError::ControlBatchFromProducer);
    }

    #[test]
    fn the_walker_yields_one_error_then_ends() {
        let mut bytes = header_only(1, 0, 0);
        bytes.extend(header_only(1, 0, 1));
        bytes.extend([1, 2, 3]);
        let mut walker = BatchWalker::new(&bytes);
        assert!(walker.next().unwrap().is_ok());
        assert!(walker.next().unwrap().is_ok());
        assert!(walker.next().unwrap().is_err());
        assert!(walker.next().is_none());
        assert_eq!(walker.position(), 2 * HEADER_BYTES);
    }
}
