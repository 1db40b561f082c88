//! Kafka's record-batch compression: the four codecs a v2 batch's attributes can name,
//! byte-compatible with what Kafka's Java client and librdkafka write and read.
//!
//! A producer compresses a batch's records section (everything after the 61-byte
//! header) with `compress`; a consumer undoes it with `decompress`. Guarantees:
//!
//! - What `compress` writes, Kafka's Java client and librdkafka can read, because it is
//!   the framing they write themselves: a gzip stream; snappy in xerial framing
//!   (`\x82SNAPPY\0`, version 1, compatible 1, then 32 KiB blocks each as a big-endian
//!   u32 length and a raw snappy block); the LZ4 frame format with independent 64 KiB
//!   blocks and no checksums (what Kafka's `KafkaLZ4BlockOutputStream` writes); a
//!   standard zstd frame.
//! - `decompress` reads anything those clients write, and a little more that they read
//!   too: raw snappy without xerial framing, concatenated gzip members, xerial streams,
//!   LZ4 frames and zstd frames, and skippable LZ4 and zstd frames.
//! - Bad input never panics: a corrupt or truncated stream, or trailing bytes after the
//!   last frame, is a `CodecError::Corrupt` naming the codec.
//! - Output is bounded: `decompress` never returns more than `size_limit_bytes`, and
//!   holds at most about that much memory while it works, so a small "decompression
//!   bomb" cannot exhaust memory. zstd is the one codec whose decoder must keep a whole
//!   window of output before it hands any over; there the bound is the larger of the
//!   limit and 8 MiB, the window the zstd format asks every decoder to support.
//!
//! Everything here is pure Rust (flate2 with miniz_oxide, snap, lz4_flex, ruzstd), so
//! the client builds without a C compiler. Compression ratios can differ from Kafka's
//! for lz4 (lz4_flex has only the fast mode; Kafka 3.8+ defaults to an HC level) and
//! zstd (ruzstd's fastest level is close to zstd level 1; Kafka defaults to 3); the
//! bytes are still valid streams for every reader.

use std::io::{Read, Write};

use crate::batch::{BatchHeader, Compression, HEADER_BYTES};
use crate::records::RecordIter;
use thiserror::Error;

/// The first 8 bytes of a xerial snappy stream, as snappy-java writes them.
pub const XERIAL_MAGIC: [u8; 8] = *b"\x82SNAPPY\x00";

/// The xerial stream header: magic, then version 1 and minimum compatible version 1,
/// both big-endian i32, exactly as snappy-java and librdkafka write it.
const XERIAL_HEADER: [u8; 16] = *b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// The xerial format version this reader understands. A stream whose "minimum
/// compatible version" is newer cannot be read safely.
const XERIAL_READER_VERSION: u32 = 1;

/// Uncompressed bytes per xerial block. snappy-java's default block size, which is
/// what Kafka's `SnappyOutputStream` uses.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

/// LZ4 frame magic number (little-endian on the wire).
const LZ4_FRAME_MAGIC: u32 = 0x184D_2204;

/// Skippable frames, shared by the LZ4 and zstd frame formats: magic 0x184D2A50 to
/// 0x184D2A5F, then a little-endian u32 length, then that many bytes to ignore.
const SKIPPABLE_MAGIC_BASE: u32 = 0x184D_2A50;
const SKIPPABLE_MAGIC_MASK: u32 = 0xFFFF_FFF0;

/// gzip level: Java's `Deflater.DEFAULT_COMPRESSION`, which Kafka uses by default.
const GZIP_LEVEL: u32 = 6;

/// The smallest zstd window every reader accepts, whatever its output limit. The zstd
/// format recommends decoders support windows up to 8 MiB; zstd at level 19 or below
/// (Kafka's default is 3) never asks for more on data of unknown size.
pub const ZSTD_WINDOW_BYTES_FLOOR: usize = 8 * 1024 * 1024;

/// A compression or decompression that failed.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The input is not a stream this reader accepts: corrupt, truncated, followed by
    /// bytes that are not another frame, or asking for more than the reader supports
    /// (a newer xerial version, a zstd window over the bound).
    #[error("{codec} data cannot be read: {detail}")]
    Corrupt {
        /// The codec the batch's attributes named.
        codec: Compression,
        /// What was wrong, for the person reading the log.
        detail: String,
    },
    /// The data decompresses to more than the caller allowed.
    #[error("{codec} data decompresses to more than the limit of {limit_bytes} bytes")]
    TooLarge {
        /// The codec the batch's attributes named.
        codec: Compression,
        /// The limit the caller passed.
        limit_bytes: usize,
    },
    /// The encoder failed. Not expected with in-memory buffers; kept as an error rather
    /// than a panic because the encoders' APIs can report failure.
    #[error("{codec} compression failed: {detail}")]
    Compress {
        /// The codec asked for.
        codec: Compression,
        /// The encoder's message.
        detail: String,
    },
}

fn corrupt(codec: Compression, detail: impl std::fmt::Display) -> CodecError {
    CodecError::Corrupt { codec, detail: detail.to_string() }
}

fn compress_failed(codec: Compression, detail: impl std::fmt::Display) -> CodecError {
    CodecError::Compress { codec, detail: detail.to_string() }
}

/// Compresses a batch's records section with `codec`. `Compression::None` returns the
/// bytes as they are.
pub fn compress(codec: Compression, records: &[u8]) -> Result<Vec<u8>, CodecError> {
    match codec {
        Compression::None => Ok(records.to_vec()),
        Compression::Gzip => gzip_compress(records),
        Compression::Snappy => xerial_compress(records),
        Compression::Lz4 => lz4_compress(records),
        Compression::Zstd => {
            Ok(ruzstd::encoding::compress_to_vec(records, ruzstd::encoding::CompressionLevel::Fastest))
        }
    }
}

/// Decompresses a batch's records section written with `codec`, refusing to produce
/// more than `size_limit_bytes`. `Compression::None` returns the bytes as they are,
/// under the same limit. Empty input is an error for every real codec: each one
/// writes at least a header, even for no records.
pub fn decompress(codec: Compression, data: &[u8], size_limit_bytes: usize) -> Result<Vec<u8>, CodecError> {
    if codec != Compression::None && data.is_empty() {
        return Err(corrupt(codec, "no bytes (every stream has at least a header)"));
    }
    match codec {
        Compression::None => {
            if data.len() > size_limit_bytes {
                return Err(CodecError::TooLarge { codec, limit_bytes: size_limit_bytes });
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => gzip_decompress(data, size_limit_bytes),
        Compression::Snappy => snappy_decompress(data, size_limit_bytes),
        Compression::Lz4 => lz4_decompress(data, size_limit_bytes),
        Compression::Zstd => zstd_decompress(data, size_limit_bytes),
    }
}

/// Reads `reader` to its end, appending to `out`, and fails once `out` would pass
/// `limit`. Reading one byte past the limit tells "exactly the limit" from "more".
fn read_limited(codec: Compression, reader: impl Read, out: &mut Vec<u8>, limit: usize) -> Result<(), CodecError> {
    let room = limit.saturating_sub(out.len());
    let room = u64::try_from(room).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(room).read_to_end(out).map_err(|e| corrupt(codec, e))?;
    if out.len() > limit {
        return Err(CodecError::TooLarge { codec, limit_bytes: limit });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// gzip.
// ---------------------------------------------------------------------------------------

fn gzip_compress(records: &[u8]) -> Result<Vec<u8>, CodecError> {
    let codec = Compression::Gzip;
    let out = Vec::with_capacity(records.len() / 2 + 64);
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
    encoder.write_all(records).map_err(|e| compress_failed(codec, e))?;
    encoder.finish().map_err(|e| compress_failed(codec, e))
}

/// Java's `GZIPInputStream` reads concatenated gzip members as one stream, so we do
/// too. A truncated member or bytes after the last one that are not a gzip header are
/// errors.
fn gzip_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    read_limited(Compression::Gzip, flate2::read::MultiGzDecoder::new(data), &mut out, limit)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// snappy.
// ---------------------------------------------------------------------------------------

/// Xerial framing, as snappy-java's `SnappyOutputStream` writes it with its default
/// 32 KiB block: the header, then per block a big-endian u32 length and the raw snappy
/// block. Empty input is the header alone, as in snappy-java.
fn xerial_compress(records: &[u8]) -> Result<Vec<u8>, CodecError> {
    let codec = Compression::Snappy;
    let mut out = Vec::with_capacity(XERIAL_HEADER.len() + records.len() / 2 + 64);
    out.extend_from_slice(&XERIAL_HEADER);
    let mut encoder = snap::raw::Encoder::new();
    for block in records.chunks(XERIAL_BLOCK_BYTES) {
        let compressed = encoder.compress_vec(block).map_err(|e| compress_failed(codec, e))?;
        // A compressed 32 KiB block is at most a few bytes over 32 KiB.
        let len = u32::try_from(compressed.len()).map_err(|_| compress_failed(codec, "block length overflows u32"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    Ok(out)
}

/// Xerial-framed when the stream starts with the xerial magic, raw snappy otherwise:
/// snappy-java's `SnappyInputStream` makes the same choice, so data from old producers
/// that wrote raw snappy still reads.
fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    match data.strip_prefix(&XERIAL_MAGIC) {
        Some(rest) => xerial_decompress(rest, &mut out, limit)?,
        None => raw_snappy_into(data, &mut out, limit)?,
    }
    Ok(out)
}

/// The rest of a xerial stream after its magic: versions, then blocks. A block length
/// that starts with the magic's first bytes is another concatenated stream (what
/// snappy-java's reader accepts); as a length it would be over 2 GiB, so the two cannot
/// be confused.
fn xerial_decompress(mut rest: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), CodecError> {
    let codec = Compression::Snappy;
    loop {
        let Some((versions, after)) = rest.split_first_chunk::<8>() else {
            return Err(corrupt(codec, "xerial header truncated before its version fields"));
        };
        let compatible = u32::from_be_bytes([versions[4], versions[5], versions[6], versions[7]]);
        if compatible > XERIAL_READER_VERSION {
            return Err(corrupt(
                codec,
                format!(
                    "xerial stream needs a reader of version {compatible}; this reader is version {XERIAL_READER_VERSION}"
                ),
            ));
        }
        rest = after;
        loop {
            if rest.is_empty() {
                return Ok(());
            }
            if let Some(next) = rest.strip_prefix(&XERIAL_MAGIC) {
                rest = next;
                break; // another stream: read its versions
            }
            let Some((len, after)) = rest.split_first_chunk::<4>() else {
                return Err(corrupt(codec, format!("xerial block length truncated ({} of 4 bytes)", rest.len())));
            };
            let len = u32::from_be_bytes(*len);
            let Some((block, after)) = usize::try_from(len).ok().and_then(|len| after.split_at_checked(len)) else {
                return Err(corrupt(codec, format!("xerial block says {len} bytes but only {} remain", after.len())));
            };
            raw_snappy_into(block, out, limit)?;
            rest = after;
        }
    }
}

/// Appends one raw snappy block to `out`. The block states its uncompressed length
/// up front, so the limit is checked before anything is allocated.
fn raw_snappy_into(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), CodecError> {
    let codec = Compression::Snappy;
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt(codec, e))?;
    if len > limit.saturating_sub(out.len()) {
        return Err(CodecError::TooLarge { codec, limit_bytes: limit });
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = match out.get_mut(start..) {
        Some(slot) => snap::raw::Decoder::new().decompress(block, slot).map_err(|e| corrupt(codec, e)),
        None => Ok(0), // cannot happen: `start` is the length before the resize
    };
    match written {
        Ok(written) => {
            out.truncate(start + written);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// The length of the skippable frame `data` starts with, or `None` when it starts with
/// something else; an error when the frame runs past the end of `data`.
fn skippable_frame_bytes(codec: Compression, data: &[u8]) -> Result<Option<usize>, CodecError> {
    let Some(magic) = data.first_chunk::<4>().map(|m| u32::from_le_bytes(*m)) else {
        return Ok(None);
    };
    if magic & SKIPPABLE_MAGIC_MASK != SKIPPABLE_MAGIC_BASE {
        return Ok(None);
    }
    let len = data.get(4..).and_then(|b| b.first_chunk::<4>()).map(|b| u32::from_le_bytes(*b));
    match len.and_then(|len| usize::try_from(len).ok()).and_then(|len| len.checked_add(8)) {
        Some(end) if end <= data.len() => Ok(Some(end)),
        _ => Err(corrupt(codec, format!("skippable frame truncated ({} bytes left)", data.len()))),
    }
}

// ---------------------------------------------------------------------------------------
// LZ4.
// ---------------------------------------------------------------------------------------

/// One LZ4 frame as Kafka's `KafkaLZ4BlockOutputStream` writes it: 64 KiB blocks,
/// independent (Kafka's reader decompresses each block on its own and cannot follow
/// linked blocks), no block or content checksums, no content size.
fn lz4_compress(records: &[u8]) -> Result<Vec<u8>, CodecError> {
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    let codec = Compression::Lz4;
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent)
        .block_checksums(false)
        .content_checksum(false)
        .content_size(None);
    let mut encoder = FrameEncoder::with_frame_info(info, Vec::with_capacity(records.len() / 2 + 64));
    encoder.write_all(records).map_err(|e| compress_failed(codec, e))?;
    encoder.finish().map_err(|e| compress_failed(codec, e))
}

/// Where one LZ4 frame (or skippable frame) at the start of `data` ends, and whether
/// it is skippable: found by walking the block lengths, without decompressing.
///
/// lz4_flex's streaming decoder treats input that ends between blocks, or right after
/// a magic number, as a clean end of stream; walking the frame first is what lets a
/// truncated batch be an error here instead of silently losing its last records.
fn lz4_frame_bytes(data: &[u8]) -> Result<(usize, bool), CodecError> {
    let codec = Compression::Lz4;
    let truncated = || corrupt(codec, format!("LZ4 frame truncated ({} bytes left)", data.len()));
    if let Some(bytes) = skippable_frame_bytes(codec, data)? {
        return Ok((bytes, true));
    }
    let Some(magic) = data.first_chunk::<4>().map(|m| u32::from_le_bytes(*m)) else {
        return Err(truncated());
    };
    if magic != LZ4_FRAME_MAGIC {
        return Err(corrupt(codec, format!("not an LZ4 frame: magic {magic:#010x}, expected {LZ4_FRAME_MAGIC:#010x}")));
    }
    // Frame descriptor: FLG, BD, optional 8-byte content size, optional 4-byte
    // dictionary id, header checksum (which the decoder verifies).
    let flg = *data.get(4).ok_or_else(truncated)?;
    let block_checksums = flg & 0x10 != 0;
    let content_size = flg & 0x08 != 0;
    let content_checksum = flg & 0x04 != 0;
    let dict_id = flg & 0x01 != 0;
    let mut at: usize = 4 + 2 + if content_size { 8 } else { 0 } + if dict_id { 4 } else { 0 } + 1;
    loop {
        let word = data.get(at..).and_then(|b| b.first_chunk::<4>()).map(|b| u32::from_le_bytes(*b));
        let word = word.ok_or_else(truncated)?;
        at += 4;
        if word == 0 {
            break; // the end mark
        }
        // The high bit flags an uncompressed block; the rest is the block's length.
        let len = usize::try_from(word & 0x7FFF_FFFF).map_err(|_| truncated())?;
        let checksum = if block_checksums { 4 } else { 0 };
        at = at.checked_add(len).and_then(|at| at.checked_add(checksum)).ok_or_else(truncated)?;
    }
    if content_checksum {
        at = at.checked_add(4).ok_or_else(truncated)?;
    }
    if at > data.len() {
        return Err(truncated());
    }
    Ok((at, false))
}

fn lz4_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let codec = Compression::Lz4;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (frame_bytes, skippable) = lz4_frame_bytes(rest)?;
        let Some((frame, after)) = rest.split_at_checked(frame_bytes) else {
            return Err(corrupt(codec, "LZ4 frame runs past the end of the data"));
        };
        if !skippable {
            read_limited(codec, lz4_flex::frame::FrameDecoder::new(frame), &mut out, limit)?;
        }
        rest = after;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// zstd.
// ---------------------------------------------------------------------------------------

/// Decodes every frame in `data` (zstd readers accept concatenated frames), skipping
/// skippable frames. Block by block, so that output is checked against the limit as it
/// appears; the window the frame declares is refused before allocation when it is
/// larger than the limit (or `ZSTD_WINDOW_BYTES_FLOOR`), since the decoder must hold a
/// whole window. ruzstd reads but does not check the content checksum, so it is
/// compared here.
fn zstd_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
    let codec = Compression::Zstd;
    let mut decoder = FrameDecoder::new();
    let window_max = limit.max(ZSTD_WINDOW_BYTES_FLOOR);
    decoder.set_max_window_size(u64::try_from(window_max).unwrap_or(u64::MAX));
    let mut out = Vec::new();
    let mut rest: &[u8] = data;
    while !rest.is_empty() {
        if let Some(bytes) = skippable_frame_bytes(codec, rest)? {
            rest = rest.get(bytes..).unwrap_or_default();
            continue;
        }
        decoder.reset(&mut rest).map_err(|e| corrupt(codec, e))?;
        // The frame content size is 0 when the frame does not declare one.
        let room = limit.saturating_sub(out.len());
        if decoder.content_size() > u64::try_from(room).unwrap_or(u64::MAX) {
            return Err(CodecError::TooLarge { codec, limit_bytes: limit });
        }
        loop {
            let finished = decoder.is_finished();
            if !finished {
                decoder
                    .decode_blocks(&mut rest, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|e| corrupt(codec, e))?;
            }
            if decoder.can_collect() > limit.saturating_sub(out.len()) {
                return Err(CodecError::TooLarge { codec, limit_bytes: limit });
            }
            decoder.collect_to_writer(&mut out).map_err(|e| corrupt(codec, e))?;
            if finished {
                break;
            }
        }
        if let (Some(stored), Some(computed)) = (decoder.get_checksum_from_data(), decoder.get_calculated_checksum()) {
            if stored != computed {
                return Err(corrupt(
                    codec,
                    format!("content checksum {stored:#010x} does not match the data's {computed:#010x}"),
                ));
            }
        }
    }
    Ok(out)
}

/// Runs `f` over the records of one whole batch, decompressing them first when the batch
/// is compressed (at most `size_limit_bytes` of records). Control batches have records
/// too (the markers); callers skip them by the header's attributes.
pub fn with_records<T>(
    batch: &[u8],
    size_limit_bytes: usize,
    f: impl FnOnce(RecordIter<'_>) -> T,
) -> Result<T, String> {
    records_of(batch, size_limit_bytes, true, f)
}

/// As [`with_records`], without computing an uncompressed batch's CRC: for a caller that
/// has checked the batch already (`check_batch`) or was told not to (a consumer with
/// `check.crcs` off). A consumer computed each batch's CRC twice before.
pub fn with_records_crc_unchecked<T>(
    batch: &[u8],
    size_limit_bytes: usize,
    f: impl FnOnce(RecordIter<'_>) -> T,
) -> Result<T, String> {
    records_of(batch, size_limit_bytes, false, f)
}

fn records_of<T>(
    batch: &[u8],
    size_limit_bytes: usize,
    check_crc: bool,
    f: impl FnOnce(RecordIter<'_>) -> T,
) -> Result<T, String> {
    let header = BatchHeader::view(batch).map_err(|e| e.to_string())?;
    let total = header.total_bytes().map_err(|e| e.to_string())?;
    let codec = header.attributes().compression().ok_or("unknown compression codec")?;
    if codec == Compression::None && check_crc {
        return RecordIter::from_bytes(&batch[..total.min(batch.len())]).map(f).map_err(|e| e.to_string());
    }
    let records = batch.get(HEADER_BYTES..total).ok_or("batch shorter than its length field")?;
    if codec == Compression::None {
        return RecordIter::over_records(records, header).map(f).map_err(|e| e.to_string());
    }
    let decompressed = decompress(codec, records, size_limit_bytes).map_err(|e| e.to_string())?;
    RecordIter::over_records(&decompressed, header).map(f).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const CODECS: [Compression; 4] = [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ (i / 7) as u8).collect()
    }

    #[test]
    fn every_codec_round_trips_small_and_multi_block_inputs() {
        for codec in CODECS {
            for len in [1, 100, XERIAL_BLOCK_BYTES - 1, XERIAL_BLOCK_BYTES, 3 * XERIAL_BLOCK_BYTES + 5, 200_000] {
                let data = sample(len);
                let packed = compress(codec, &data).unwrap();
                assert_eq!(decompress(codec, &packed, len).unwrap(), data, "{codec:?} at {len} bytes");
            }
        }
    }

    #[test]
    fn only_with_records_computes_an_uncompressed_batchs_crc() {
        let mut builder = crate::records::BatchBuilder::new(crate::records::BatchConfig::default()).unwrap();
        for value in [&b"one"[..], b"two"] {
            builder.push(None, Some(value), &[], 7).unwrap();
        }
        let mut batch = builder.finish().unwrap();
        let values =
            |records: RecordIter<'_>| -> Vec<Vec<u8>> { records.map(|r| r.unwrap().value.unwrap().to_vec()).collect() };
        assert_eq!(with_records(&batch, 1 << 20, values).unwrap(), [b"one", b"two"]);
        batch[crate::batch::CRC_START - 1] ^= 0xff; // the stored CRC no longer matches
        assert!(with_records(&batch, 1 << 20, values).unwrap_err().contains("CRC"), "with_records checks it");
        assert_eq!(with_records_crc_unchecked(&batch, 1 << 20, values).unwrap(), [b"one", b"two"]);
    }

    #[test]
    fn none_is_identity_under_the_limit() {
        assert_eq!(compress(Compression::None, b"abc").unwrap(), b"abc");
        assert_eq!(decompress(Compression::None, b"abc", 3).unwrap(), b"abc");
        assert!(matches!(
            decompress(Compression::None, b"abc", 2),
            Err(CodecError::TooLarge { codec: Compression::None, limit_bytes: 2 })
        ));
    }

    #[test]
    fn snappy_writes_the_xerial_header_then_length_prefixed_blocks() {
        let packed = compress(Compression::Snappy, &sample(XERIAL_BLOCK_BYTES + 1)).unwrap();
        assert_eq!(packed[..16], XERIAL_HEADER);
        let first = u32::from_be_bytes(packed[16..20].try_into().unwrap()) as usize;
        let block = &packed[20..20 + first];
        assert_eq!(snap::raw::decompress_len(block).unwrap(), XERIAL_BLOCK_BYTES);
        let second = u32::from_be_bytes(packed[20 + first..24 + first].try_into().unwrap()) as usize;
        assert_eq!(packed.len(), 24 + first + second);
    }

    #[test]
    fn snappy_empty_input_is_the_header_alone() {
        let packed = compress(Compression::Snappy, b"").unwrap();
        assert_eq!(packed, XERIAL_HEADER);
        assert_eq!(decompress(Compression::Snappy, &packed, 0).unwrap(), b"");
    }

    #[test]
    fn snappy_refuses_a_stream_that_needs_a_newer_reader() {
        let mut packed = compress(Compression::Snappy, b"hello").unwrap();
        packed[15] = 2; // minimum compatible version 2
        let err = decompress(Compression::Snappy, &packed, 100).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn lz4_writes_kafkas_frame_descriptor() {
        let packed = compress(Compression::Lz4, b"hello hello hello").unwrap();
        assert_eq!(packed[..4], LZ4_FRAME_MAGIC.to_le_bytes());
        // FLG: version 01, independent blocks, no checksums, no content size.
        assert_eq!(packed[4], 0x60);
        // BD: 64 KiB maximum block size.
        assert_eq!(packed[5], 0x40);
        assert_eq!(packed[packed.len() - 4..], [0, 0, 0, 0], "ends with the end mark");
    }

    #[test]
    fn lz4_frame_walk_finds_the_end_of_each_frame() {
        let packed = compress(Compression::Lz4, &sample(150_000)).unwrap();
        assert_eq!(lz4_frame_bytes(&packed).unwrap(), (packed.len(), false));
        for cut in [1, 4, 6, 7, 10, packed.len() - 4, packed.len() - 1] {
            assert!(lz4_frame_bytes(&packed[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn skippable_frames_are_skipped_by_lz4_and_zstd() {
        let mut skippable = (SKIPPABLE_MAGIC_BASE + 3).to_le_bytes().to_vec();
        skippable.extend_from_slice(&3u32.to_le_bytes());
        skippable.extend_from_slice(b"xyz");
        for codec in [Compression::Lz4, Compression::Zstd] {
            let mut data = skippable.clone();
            data.extend_from_slice(&compress(codec, b"payload").unwrap());
            data.extend_from_slice(&skippable);
            assert_eq!(decompress(codec, &data, 100).unwrap(), b"payload", "{codec:?}");
            assert!(decompress(codec, &skippable[..9], 100).is_err(), "{codec:?}: truncated skippable frame");
        }
    }

    #[test]
    fn zstd_refuses_a_declared_content_size_over_the_limit_before_decoding() {
        // A zstd frame header with a 1 KiB window and a 4-byte content size of 1 GiB,
        // and no blocks: the declared size alone must be refused.
        let mut frame = 0xFD2F_B528u32.to_le_bytes().to_vec();
        frame.push(0b1000_0000); // FCS field 4 bytes, not single segment
        frame.push(0); // window descriptor: 1 KiB
        frame.extend_from_slice(&(1u32 << 30).to_le_bytes());
        let err = decompress(Compression::Zstd, &frame, 1 << 20).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { codec: Compression::Zstd, limit_bytes: 1_048_576 }), "{err}");
    }

    #[test]
    fn zstd_refuses_a_window_over_the_limit_and_floor_before_allocating() {
        // Window descriptor 0xF8: window log 10 + 31, 2 TiB.
        let mut frame = 0xFD2F_B528u32.to_le_bytes().to_vec();
        frame.push(0);
        frame.push(0xF8);
        let err = decompress(Compression::Zstd, &frame, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("window"), "{err}");
        // Single-segment frames use their content size as the window: 1 GiB here.
        let mut frame = 0xFD2F_B528u32.to_le_bytes().to_vec();
        frame.push(0b1010_0000); // FCS field 4 bytes, single segment
        frame.extend_from_slice(&(1u32 << 30).to_le_bytes());
        let err = decompress(Compression::Zstd, &frame, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("window"), "{err}");
    }

    #[test]
    fn zstd_checks_the_content_checksum() {
        let mut packed = compress(Compression::Zstd, &sample(1000)).unwrap();
        let last = packed.len() - 1;
        packed[last] ^= 0xFF;
        let err = decompress(Compression::Zstd, &packed, 1000).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn errors_name_the_codec_and_the_limit() {
        let packed = compress(Compression::Gzip, &[0u8; 1000]).unwrap();
        let err = decompress(Compression::Gzip, &packed, 999).unwrap_err();
        assert_eq!(err.to_string(), "gzip data decompresses to more than the limit of 999 bytes");
        let err = decompress(Compression::Lz4, b"nonsense", 999).unwrap_err();
        assert!(err.to_string().starts_with("lz4 data cannot be read: not an LZ4 frame"), "{err}");
    }

    #[test]
    fn empty_input_is_corrupt_for_every_real_codec() {
        for codec in CODECS {
            assert!(matches!(decompress(codec, b"", 100), Err(CodecError::Corrupt { .. })), "{codec:?}");
        }
        assert_eq!(decompress(Compression::None, b"", 0).unwrap(), b"");
    }
}
