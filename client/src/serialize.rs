//! Turning application values into record keys and values and back, with the byte
//! layouts of Kafka's standard serializers, so a Java consumer reads what a Sluice
//! producer wrote and the other way round.
//!
//! | Sluice            | Kafka (Java)                          | Bytes                          |
//! |-------------------|---------------------------------------|--------------------------------|
//! | `BytesSerializer` | `ByteArraySerializer`                 | as they are                    |
//! | `StringSerializer`| `StringSerializer` (UTF-8, default)   | UTF-8                          |
//! | `I64Serializer`   | `LongSerializer`                      | 8, big-endian two's complement |
//! | `F64Serializer`   | `DoubleSerializer`                    | 8, big-endian IEEE-754         |
//!
//! Guarantees: serializing then deserializing gives the value back (for `f64`, every
//! NaN comes back as the canonical NaN, as in Java); deserializers never panic on any
//! input: wrong lengths and invalid UTF-8 are `SerializeError`s naming the topic.
//!
//! Null keys and values are not the serializers' business here: the producer takes
//! `Option`s and writes `None` as Kafka's null (length -1) without calling a serializer,
//! which is what Kafka's serializers do with a Java `null`.

use thiserror::Error;

/// A serializer or deserializer that failed.
#[derive(Debug, Error)]
pub enum SerializeError {
    /// A string deserializer got bytes that are not UTF-8.
    #[error("topic {topic}: string is not valid UTF-8 (first bad byte at index {valid_up_to})")]
    InvalidUtf8 {
        /// The record's topic.
        topic: String,
        /// Bytes before the first invalid sequence.
        valid_up_to: usize,
    },
    /// A fixed-width deserializer got the wrong number of bytes.
    #[error("topic {topic}: {type_name} needs exactly {expected_bytes} bytes, got {actual_bytes}")]
    WrongLength {
        /// The record's topic.
        topic: String,
        /// The type being read, as the application knows it (`i64`, `f64`).
        type_name: &'static str,
        /// Its fixed width.
        expected_bytes: usize,
        /// What the record held.
        actual_bytes: usize,
    },
    /// An application's own serializer failed.
    #[error("topic {topic}: {source}")]
    Custom {
        /// The record's topic.
        topic: String,
        /// The application's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Turns a `T` into the bytes of a record's key or value. `topic` is the destination,
/// for serializers that vary by topic and for error messages.
pub trait Serializer<T: ?Sized>: Send + Sync {
    /// The bytes for `value`.
    fn serialize(&self, topic: &str, value: &T) -> Result<Vec<u8>, SerializeError>;
}

/// Turns the bytes of a record's key or value back into a `T`.
pub trait Deserializer<T>: Send + Sync {
    /// The value in `bytes`, or an error if they cannot be one.
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<T, SerializeError>;
}

/// Raw bytes, unchanged: Kafka's `ByteArraySerializer`/`ByteArrayDeserializer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BytesSerializer;

impl Serializer<[u8]> for BytesSerializer {
    fn serialize(&self, _topic: &str, value: &[u8]) -> Result<Vec<u8>, SerializeError> {
        Ok(value.to_vec())
    }
}

impl Serializer<Vec<u8>> for BytesSerializer {
    fn serialize(&self, _topic: &str, value: &Vec<u8>) -> Result<Vec<u8>, SerializeError> {
        Ok(value.clone())
    }
}

impl Deserializer<Vec<u8>> for BytesSerializer {
    fn deserialize(&self, _topic: &str, bytes: &[u8]) -> Result<Vec<u8>, SerializeError> {
        Ok(bytes.to_vec())
    }
}

/// UTF-8 strings: Kafka's `StringSerializer`/`StringDeserializer` with their default
/// encoding. Unlike Java, which replaces invalid sequences with U+FFFD, the
/// deserializer refuses invalid UTF-8: silently changing data is worse than saying so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StringSerializer;

impl Serializer<str> for StringSerializer {
    fn serialize(&self, _topic: &str, value: &str) -> Result<Vec<u8>, SerializeError> {
        Ok(value.as_bytes().to_vec())
    }
}

impl Serializer<String> for StringSerializer {
    fn serialize(&self, _topic: &str, value: &String) -> Result<Vec<u8>, SerializeError> {
        Ok(value.as_bytes().to_vec())
    }
}

impl Deserializer<String> for StringSerializer {
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<String, SerializeError> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(SerializeError::InvalidUtf8 { topic: topic.to_owned(), valid_up_to: e.valid_up_to() }),
        }
    }
}

/// The 8 bytes of a fixed-width value, or `WrongLength` naming the type.
fn eight_bytes(topic: &str, bytes: &[u8], type_name: &'static str) -> Result<[u8; 8], SerializeError> {
    <[u8; 8]>::try_from(bytes).map_err(|_| SerializeError::WrongLength {
        topic: topic.to_owned(),
        type_name,
        expected_bytes: 8,
        actual_bytes: bytes.len(),
    })
}

/// 64-bit signed integers, 8 bytes big-endian: Kafka's `LongSerializer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct I64Serializer;

impl Serializer<i64> for I64Serializer {
    fn serialize(&self, _topic: &str, value: &i64) -> Result<Vec<u8>, SerializeError> {
        Ok(value.to_be_bytes().to_vec())
    }
}

impl Deserializer<i64> for I64Serializer {
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<i64, SerializeError> {
        Ok(i64::from_be_bytes(eight_bytes(topic, bytes, "i64")?))
    }
}

/// The bits Java's `Double.doubleToLongBits` gives every NaN, which Kafka's
/// `DoubleSerializer` writes.
const JAVA_CANONICAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0000;

/// 64-bit floats, 8 bytes big-endian IEEE-754: Kafka's `DoubleSerializer`. Like Java's
/// `doubleToLongBits`, every NaN is written as the canonical NaN, so equal values give
/// equal bytes (which matters for keys: the same key must hash to the same partition).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct F64Serializer;

impl Serializer<f64> for F64Serializer {
    fn serialize(&self, _topic: &str, value: &f64) -> Result<Vec<u8>, SerializeError> {
        let bits = if value.is_nan() { JAVA_CANONICAL_NAN_BITS } else { value.to_bits() };
        Ok(bits.to_be_bytes().to_vec())
    }
}

impl Deserializer<f64> for F64Serializer {
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> Result<f64, SerializeError> {
        Ok(f64::from_bits(u64::from_be_bytes(eight_bytes(topic, bytes, "f64")?)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn bytes_pass_through_unchanged() {
        let data = vec![0u8, 0xff, 7];
        assert_eq!(BytesSerializer.serialize("t", &data[..]).unwrap(), data);
        assert_eq!(BytesSerializer.serialize("t", &data).unwrap(), data);
        let back: Vec<u8> = BytesSerializer.deserialize("t", &data).unwrap();
        assert_eq!(back, data);
        let empty: Vec<u8> = BytesSerializer.deserialize("t", b"").unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn strings_are_utf8_both_ways() {
        assert_eq!(StringSerializer.serialize("t", "héllo").unwrap(), "héllo".as_bytes());
        assert_eq!(StringSerializer.serialize("t", &"ключ".to_owned()).unwrap(), "ключ".as_bytes());
        let back: String = StringSerializer.deserialize("t", "日本".as_bytes()).unwrap();
        assert_eq!(back, "日本");
        let empty: String = StringSerializer.deserialize("t", b"").unwrap();
        assert_eq!(empty, "");
    }

    #[test]
    fn invalid_utf8_is_refused_naming_topic_and_position() {
        let err = Deserializer::<String>::deserialize(&StringSerializer, "orders", b"ok\xff\xfe").unwrap_err();
        assert!(matches!(&err, SerializeError::InvalidUtf8 { topic, valid_up_to: 2 } if topic == "orders"));
        assert_eq!(err.to_string(), "topic orders: string is not valid UTF-8 (first bad byte at index 2)");
    }

    #[test]
    fn i64_is_eight_bytes_big_endian_like_kafkas_long_serializer() {
        assert_eq!(I64Serializer.serialize("t", &1).unwrap(), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(I64Serializer.serialize("t", &-2).unwrap(), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(I64Serializer.serialize("t", &0x0102_0304_0506_0708).unwrap(), [1, 2, 3, 4, 5, 6, 7, 8]);
        for v in [0, 1, -1, i64::MIN, i64::MAX, 1_234_567_890_123] {
            let bytes = I64Serializer.serialize("t", &v).unwrap();
            assert_eq!(I64Serializer.deserialize("t", &bytes).unwrap(), v);
        }
    }

    #[test]
    fn f64_is_eight_bytes_big_endian_ieee754_like_kafkas_double_serializer() {
        // 1.0 is 0x3FF0000000000000.
        assert_eq!(F64Serializer.serialize("t", &1.0).unwrap(), [0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(F64Serializer.serialize("t", &-0.0).unwrap(), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        for v in [0.0, -0.0, 1.5, -2.25e300, f64::MIN_POSITIVE, f64::INFINITY, f64::NEG_INFINITY, f64::MAX] {
            let bytes = F64Serializer.serialize("t", &v).unwrap();
            assert_eq!(F64Serializer.deserialize("t", &bytes).unwrap().to_bits(), v.to_bits());
        }
    }

    #[test]
    fn every_nan_is_written_as_javas_canonical_nan() {
        let odd_nan = f64::from_bits(0xfff0_0000_0000_0001);
        assert!(odd_nan.is_nan());
        let bytes = F64Serializer.serialize("t", &odd_nan).unwrap();
        assert_eq!(bytes, [0x7f, 0xf8, 0, 0, 0, 0, 0, 0]);
        assert!(F64Serializer.deserialize("t", &bytes).unwrap().is_nan());
    }

    #[test]
    fn fixed_width_deserializers_check_the_length_and_name_it() {
        for len in [0, 7, 9] {
            let bytes = vec![0u8; len];
            let err = I64Serializer.deserialize("metrics", &bytes).unwrap_err();
            assert_eq!(err.to_string(), format!("topic metrics: i64 needs exactly 8 bytes, got {len}"));
            let err = F64Serializer.deserialize("metrics", &bytes).unwrap_err();
            assert!(
                matches!(err, SerializeError::WrongLength { type_name: "f64", expected_bytes: 8, actual_bytes, .. } if actual_bytes == len)
            );
        }
    }

    #[test]
    fn custom_errors_carry_the_applications_error() {
        struct Refuses;
        impl Serializer<u8> for Refuses {
            fn serialize(&self, topic: &str, _value: &u8) -> Result<Vec<u8>, SerializeError> {
                Err(SerializeError::Custom { topic: topic.to_owned(), source: "no bytes today".into() })
            }
        }
        let err = Refuses.serialize("t", &1).unwrap_err();
        assert_eq!(err.to_string(), "topic t: no bytes today");
    }

    #[test]
    fn serializers_are_usable_as_trait_objects() {
        let ser: Box<dyn Serializer<str>> = Box::new(StringSerializer);
        let de: Box<dyn Deserializer<String>> = Box::new(StringSerializer);
        assert_eq!(de.deserialize("t", &ser.serialize("t", "x").unwrap()).unwrap(), "x");
    }
}
