//! Committed offsets as records of the `__consumer_offsets` partitions: key (group,
//! topic, partition), value (offset, metadata); a record without a value (a tombstone)
//! deletes the commit, and compaction keeps only the latest record per key. The
//! coordinator's state machine speaks `OffsetRecord`; its driver encodes them into
//! batches and decodes them when it loads a partition. Nothing here does I/O.
//!
//! Both encodings start with a version byte (1). Strings are u16-length-prefixed: group
//! ids (at most 255 bytes) and topic names (at most 249) always fit.

/// One committed offset (or its deletion) of one group's partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetRecord {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    /// (offset, metadata); `None` deletes the commit (a tombstone).
    pub value: Option<(i64, String)>,
}

const VERSION: u8 = 1;

impl OffsetRecord {
    /// The record's key bytes.
    #[must_use]
    pub fn key(&self) -> Vec<u8> {
        let mut key = vec![VERSION];
        for s in [&self.group, &self.topic] {
            assert!(s.len() <= usize::from(u16::MAX), "an offsets key string of {} bytes", s.len());
            key.extend_from_slice(&(s.len() as u16).to_be_bytes());
            key.extend_from_slice(s.as_bytes());
        }
        key.extend_from_slice(&self.partition.to_be_bytes());
        key
    }

    /// The record's value bytes (`None` for a tombstone).
    #[must_use]
    pub fn value(&self) -> Option<Vec<u8>> {
        self.value.as_ref().map(|(offset, metadata)| {
            let mut value = vec![VERSION];
            value.extend_from_slice(&offset.to_be_bytes());
            value.extend_from_slice(metadata.as_bytes());
            value
        })
    }

    /// Decodes a stored record; `None` when the key is not an offset commit's. A value
    /// that does not decode reads as a tombstone (as it always has: such a record
    /// deletes the commit it names).
    #[must_use]
    pub fn parse(key: &[u8], value: Option<&[u8]>) -> Option<OffsetRecord> {
        let (group, topic, partition) = parse_key(key)?;
        Some(OffsetRecord { group, topic, partition, value: value.and_then(parse_value) })
    }
}

fn parse_key(key: &[u8]) -> Option<(String, String, u32)> {
    if key.first() != Some(&VERSION) {
        return None;
    }
    let mut at = 1usize;
    let mut strings = Vec::new();
    for _ in 0..2 {
        let len = u16::from_be_bytes([*key.get(at)?, *key.get(at + 1)?]) as usize;
        at += 2;
        strings.push(String::from_utf8(key.get(at..at + len)?.to_vec()).ok()?);
        at += len;
    }
    let p = key.get(at..at + 4)?;
    let topic = strings.pop()?;
    let group = strings.pop()?;
    Some((group, topic, u32::from_be_bytes([p[0], p[1], p[2], p[3]])))
}

fn parse_value(value: &[u8]) -> Option<(i64, String)> {
    if value.first() != Some(&VERSION) || value.len() < 9 {
        return None;
    }
    let mut o = [0u8; 8];
    o.copy_from_slice(&value[1..9]);
    Some((i64::from_be_bytes(o), String::from_utf8_lossy(&value[9..]).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys and values decode to what was encoded; truncated ones do not decode.
    #[test]
    fn offset_records_round_trip() {
        let commit =
            OffsetRecord { group: "g1".into(), topic: "orders".into(), partition: 7, value: Some((42, "meta".into())) };
        let (key, value) = (commit.key(), commit.value());
        assert_eq!(OffsetRecord::parse(&key, value.as_deref()), Some(commit.clone()));
        let tombstone = OffsetRecord { value: None, ..commit };
        assert_eq!(tombstone.value(), None);
        assert_eq!(OffsetRecord::parse(&key, None), Some(tombstone.clone()));
        assert_eq!(OffsetRecord::parse(&key[..key.len() - 1], value.as_deref()), None);
        assert_eq!(OffsetRecord::parse(&key, Some(&[1u8, 2][..])), Some(tombstone));
    }
}
