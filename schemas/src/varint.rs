//! The variable-length integers that Kafka's records (RecordBatch v2) are written with.
//!
//! Kafka uses protobuf's encoding: seven bits per byte, least significant group first,
//! the high bit set on every byte but the last. Signed values are zigzag-mapped first
//! (0, -1, 1, -2, ... become 0, 1, 2, 3, ...) so that small negative numbers such as the
//! -1 of a null key stay one byte long.
//!
//! Guarantees:
//! - Every `i32` / `i64` / `u32` / `u64` round-trips, and the encoding is the one Kafka's
//!   Java `ByteUtils` writes (the shortest one), byte for byte.
//! - Decoding never panics and never reads past the slice it is given. It refuses, with
//!   a `VarintError`, input that ends mid-varint, a varint longer than 5 bytes (32-bit)
//!   or 10 bytes (64-bit), and a last byte whose bits do not fit the integer. Java
//!   silently drops such excess bits; we refuse them, because no correct encoder writes
//!   them and a value that silently wrapped would be a wrong length or offset.
//! - Non-minimal encodings that do fit (e.g. `0x80 0x00` for 0) are accepted, as Java
//!   accepts them: refusing them would protect nothing and could refuse a real client.

use thiserror::Error;

/// The most bytes a 32-bit varint takes: ceil(32 / 7).
pub const VARINT_BYTES_MAX: usize = 5;
/// The most bytes a 64-bit varint (a "varlong") takes: ceil(64 / 7).
pub const VARLONG_BYTES_MAX: usize = 10;

/// Why a varint could not be read.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended before a byte without the continuation bit.
    #[error("varint truncated: input ends after {available} bytes, mid-varint")]
    Truncated {
        /// How many bytes were there (all with the continuation bit set).
        available: usize,
    },
    /// Every one of the allowed bytes had the continuation bit set.
    #[error("varint is longer than the {max_bytes} bytes a {bits}-bit integer may take")]
    TooLong {
        /// 5 for 32-bit varints, 10 for 64-bit ones.
        max_bytes: usize,
        /// Width of the integer being read.
        bits: u32,
    },
    /// The last allowed byte carries bits above the integer's width.
    #[error("varint overflows a {bits}-bit integer (last byte {last_byte:#04x})")]
    Overflow {
        /// Width of the integer being read.
        bits: u32,
        /// The offending byte.
        last_byte: u8,
    },
}

/// Maps a signed 32-bit value onto an unsigned one so that small magnitudes stay small.
#[must_use]
pub fn zigzag32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

/// Inverse of [`zigzag32`].
#[must_use]
pub fn unzigzag32(value: u32) -> i32 {
    ((value >> 1) as i32) ^ -((value & 1) as i32)
}

/// Maps a signed 64-bit value onto an unsigned one so that small magnitudes stay small.
#[must_use]
pub fn zigzag64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Inverse of [`zigzag64`].
#[must_use]
pub fn unzigzag64(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Appends `value` as an unsigned varint (no zigzag).
pub fn write_uvarint(out: &mut Vec<u8>, value: u32) {
    write_uvarlong(out, u64::from(value));
}

/// Appends `value` as an unsigned 64-bit varint (no zigzag).
pub fn write_uvarlong(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // Truncation to the low seven bits is the point: the rest goes in later bytes.
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `value` as a zigzag varint, as Kafka writes record lengths and deltas.
pub fn write_varint(out: &mut Vec<u8>, value: i32) {
    write_uvarint(out, zigzag32(value));
}

/// Appends `value` as a zigzag varlong, as Kafka writes timestamp deltas.
pub fn write_varlong(out: &mut Vec<u8>, value: i64) {
    write_uvarlong(out, zigzag64(value));
}

/// Bytes [`write_uvarint`] writes for `value`.
#[must_use]
pub fn uvarint_len(value: u32) -> usize {
    uvarlong_len(u64::from(value))
}

/// Bytes [`write_uvarlong`] writes for `value`.
#[must_use]
pub fn uvarlong_len(value: u64) -> usize {
    // Significant bits, at least one, in groups of seven.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Bytes [`write_varint`] writes for `value`.
#[must_use]
pub fn varint_len(value: i32) -> usize {
    uvarint_len(zigzag32(value))
}

/// Bytes [`write_varlong`] writes for `value`.
#[must_use]
pub fn varlong_len(value: i64) -> usize {
    uvarlong_len(zigzag64(value))
}

/// Reads an unsigned varint of at most `max_bytes` bytes holding at most `bits` bits.
fn read_unsigned(bytes: &[u8], max_bytes: usize, bits: u32) -> Result<(u64, usize), VarintError> {
    // Bits the last allowed byte may carry: 32 - 4 * 7 = 4 for varints, 64 - 9 * 7 = 1
    // for varlongs.
    let last_byte_bits = bits - 7 * (max_bytes as u32 - 1);
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let Some(&byte) = bytes.get(i) else {
            return Err(VarintError::Truncated { available: bytes.len() });
        };
        let group = u64::from(byte & 0x7f);
        if i == max_bytes - 1 {
            if byte & 0x80 != 0 {
                return Err(VarintError::TooLong { max_bytes, bits });
            }
            if group >> last_byte_bits != 0 {
                return Err(VarintError::Overflow { bits, last_byte: byte });
            }
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    // The loop returns at the latest on its last turn; this keeps the compiler content
    // without a panic path.
    Err(VarintError::TooLong { max_bytes, bits })
}

/// Reads an unsigned varint from the start of `bytes`: the value and the bytes it used.
pub fn read_uvarint(bytes: &[u8]) -> Result<(u32, usize), VarintError> {
    let (value, used) = read_unsigned(bytes, VARINT_BYTES_MAX, 32)?;
    // read_unsigned refused every bit above 32, so this conversion cannot fail.
    let value = u32::try_from(value).map_err(|_| VarintError::Overflow { bits: 32, last_byte: 0 })?;
    Ok((value, used))
}

/// Reads an unsigned 64-bit varint from the start of `bytes`: the value and the bytes
/// it used.
pub fn read_uvarlong(bytes: &[u8]) -> Result<(u64, usize), VarintError> {
    read_unsigned(bytes, VARLONG_BYTES_MAX, 64)
}

/// Reads a zigzag varint from the start of `bytes`: the value and the bytes it used.
pub fn read_varint(bytes: &[u8]) -> Result<(i32, usize), VarintError> {
    let (value, used) = read_uvarint(bytes)?;
    Ok((unzigzag32(value), used))
}

/// Reads a zigzag varlong from the start of `bytes`: the value and the bytes it used.
pub fn read_varlong(bytes: &[u8]) -> Result<(i64, usize), VarintError> {
    let (value, used) = read_uvarlong(bytes)?;
    Ok((unzigzag64(value), used))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn varint_bytes(value: i32) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, value);
        out
    }

    fn varlong_bytes(value: i64) -> Vec<u8> {
        let mut out = Vec::new();
        write_varlong(&mut out, value);
        out
    }

    /// Values at every length boundary, both signs, and the extremes.
    fn interesting_i64() -> Vec<i64> {
        let mut values = vec![0, 1, -1, 2, -2, i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1];
        for shift in 0..63 {
            let v = 1i64 << shift;
            values.extend([v, v - 1, v + 1, -v, -v - 1, -v + 1]);
        }
        values
    }

    #[test]
    fn zigzag_maps_small_magnitudes_to_small_codes() {
        assert_eq!(zigzag32(0), 0);
        assert_eq!(zigzag32(-1), 1);
        assert_eq!(zigzag32(1), 2);
        assert_eq!(zigzag32(-2), 3);
        assert_eq!(zigzag32(i32::MAX), u32::MAX - 1);
        assert_eq!(zigzag32(i32::MIN), u32::MAX);
        assert_eq!(zigzag64(i64::MIN), u64::MAX);
        assert_eq!(zigzag64(i64::MAX), u64::MAX - 1);
    }

    #[test]
    fn known_encodings_match_kafka() {
        // Worked by hand from zigzag + base-128, the rule Kafka's ByteUtils follows:
        // -1 (a null length) is the single byte 0x01.
        assert_eq!(varint_bytes(-1), [0x01]);
        assert_eq!(varint_bytes(0), [0x00]);
        assert_eq!(varint_bytes(1), [0x02]);
        assert_eq!(varint_bytes(63), [0x7e]);
        assert_eq!(varint_bytes(64), [0x80, 0x01]);
        assert_eq!(varint_bytes(-65), [0x81, 0x01]);
        assert_eq!(varint_bytes(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(varint_bytes(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(varlong_bytes(i64::MIN), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn every_boundary_value_round_trips_with_the_predicted_length() {
        for value in interesting_i64() {
            let bytes = varlong_bytes(value);
            assert_eq!(bytes.len(), varlong_len(value), "length of {value}");
            assert_eq!(read_varlong(&bytes).unwrap(), (value, bytes.len()), "varlong {value}");
            if let Ok(small) = i32::try_from(value) {
                let bytes = varint_bytes(small);
                assert_eq!(bytes.len(), varint_len(small), "length of {small}");
                assert_eq!(read_varint(&bytes).unwrap(), (small, bytes.len()), "varint {small}");
            }
        }
        assert_eq!(varint_len(i32::MIN), VARINT_BYTES_MAX);
        assert_eq!(varlong_len(i64::MIN), VARLONG_BYTES_MAX);
        assert_eq!(uvarint_len(u32::MAX), VARINT_BYTES_MAX);
        assert_eq!(uvarlong_len(u64::MAX), VARLONG_BYTES_MAX);
        assert_eq!(uvarlong_len(0), 1);
    }

    #[test]
    fn unsigned_varints_round_trip() {
        for value in [0u32, 1, 127, 128, 16_383, 16_384, u32::MAX] {
            let mut out = Vec::new();
            write_uvarint(&mut out, value);
            assert_eq!(read_uvarint(&out).unwrap(), (value, out.len()));
        }
        for value in [0u64, 127, 128, u64::from(u32::MAX) + 1, u64::MAX] {
            let mut out = Vec::new();
            write_uvarlong(&mut out, value);
            assert_eq!(read_uvarlong(&out).unwrap(), (value, out.len()));
        }
    }

    #[test]
    fn reading_stops_at_the_varint_and_reports_bytes_used() {
        let mut bytes = varint_bytes(300);
        bytes.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(read_varint(&bytes).unwrap(), (300, 2));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for value in interesting_i64() {
            let bytes = varlong_bytes(value);
            for cut in 0..bytes.len() {
                assert_eq!(
                    read_varlong(&bytes[..cut]),
                    Err(VarintError::Truncated { available: cut }),
                    "{value} cut at {cut}"
                );
            }
        }
        assert_eq!(read_varint(&[]), Err(VarintError::Truncated { available: 0 }));
    }

    #[test]
    fn too_long_encodings_are_refused() {
        assert_eq!(read_varint(&[0x80; 6]), Err(VarintError::TooLong { max_bytes: 5, bits: 32 }));
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x80, 0x00]),
            Err(VarintError::TooLong { max_bytes: 5, bits: 32 })
        );
        assert_eq!(read_varlong(&[0x80; 11]), Err(VarintError::TooLong { max_bytes: 10, bits: 64 }));
    }

    #[test]
    fn bits_beyond_the_width_are_refused() {
        // Fifth byte of a 32-bit varint may carry 4 bits only.
        assert_eq!(
            read_uvarint(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(VarintError::Overflow { bits: 32, last_byte: 0x1f })
        );
        assert_eq!(read_uvarint(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Ok((u32::MAX, 5)));
        // Tenth byte of a 64-bit varint may carry 1 bit only.
        let mut bytes = vec![0xff; 9];
        bytes.push(0x02);
        assert_eq!(read_uvarlong(&bytes), Err(VarintError::Overflow { bits: 64, last_byte: 0x02 }));
        bytes[9] = 0x01;
        assert_eq!(read_uvarlong(&bytes), Ok((u64::MAX, 10)));
    }

    #[test]
    fn non_minimal_encodings_that_fit_are_accepted_like_java_does() {
        assert_eq!(read_varint(&[0x80, 0x00]), Ok((0, 2)));
        assert_eq!(read_varint(&[0x81, 0x80, 0x80, 0x80, 0x00]), Ok((-1, 5)));
    }
}
