//! What the `__consumer_offsets` partitions hold, in Kafka's own key and value schemas
//! (`OffsetCommitKey`/`OffsetCommitValue`, `GroupMetadataKey`/`GroupMetadataValue` in
//! Kafka's `group-coordinator` message definitions), so tools that read the topic
//! themselves (Burrow) decode it: a group's committed offset of one partition, and a
//! group's metadata (protocol, generation, leader, members and their assignments), which
//! a new coordinator loads so members carry on without a rebalance. A record without a
//! value (a tombstone) deletes what its key names; compaction keeps the latest per key.
//!
//! Written: offset commit key v1 with value v3, group metadata key v2 with value v3 (the
//! versions Kafka 3.x writes). Read: those, the older value versions, and the format
//! Sluice wrote before (a u8 version 1 then u16-length strings: its keys start with byte
//! 1, Kafka's with byte 0), so existing data directories keep their commits. The
//! coordinator's state machine speaks `GroupRecord`; its driver encodes them into batches
//! and decodes them when it loads a partition. Nothing here does I/O.

/// One record of an offsets partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupRecord {
    Offset(OffsetRecord),
    Group(GroupMetadataRecord),
}

/// One committed offset (or its deletion) of one group's partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetRecord {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    /// (offset, metadata); `None` deletes the commit (a tombstone).
    pub value: Option<(i64, String)>,
}

/// A group's metadata (or its deletion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadataRecord {
    pub group: String,
    /// `None` deletes the group's metadata (a tombstone).
    pub value: Option<GroupMetadata>,
}

/// `GroupMetadataValue`: what a group was at its last rebalance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupMetadata {
    pub protocol_type: String,
    pub generation: i32,
    /// The protocol (assignor) chosen; `None` while the group has no members.
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberMetadata>,
}

/// `MemberMetadata` of `GroupMetadataValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's subscription in the chosen protocol (opaque to the coordinator for
    /// Kafka's classic protocol; the consumer protocol's encoding for native members).
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}

const OFFSET_KEY_VERSION: i16 = 1;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;
/// The first byte of the keys Sluice wrote before it wrote Kafka's schemas.
const OLD_VERSION: u8 = 1;

impl GroupRecord {
    /// The group the record belongs to (which offsets partition holds it).
    #[must_use]
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset(r) => &r.group,
            GroupRecord::Group(r) => &r.group,
        }
    }

    /// The record's key bytes.
    #[must_use]
    pub fn key(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            GroupRecord::Offset(r) => {
                w.i16(OFFSET_KEY_VERSION);
                w.string(&r.group);
                w.string(&r.topic);
                w.i32(i32::try_from(r.partition).unwrap_or(i32::MAX));
            }
            GroupRecord::Group(r) => {
                w.i16(GROUP_KEY_VERSION);
                w.string(&r.group);
            }
        }
        w.0
    }

    /// The record's value bytes (`None` for a tombstone). `timestamp_ms` is the commit
    /// time written with an offset.
    #[must_use]
    pub fn value(&self, timestamp_ms: i64) -> Option<Vec<u8>> {
        let mut w = Writer::default();
        match self {
            GroupRecord::Offset(r) => {
                let (offset, metadata) = r.value.as_ref()?;
                w.i16(OFFSET_VALUE_VERSION);
                w.i64(*offset);
                w.i32(-1); // leader epoch: not tracked
                w.string(metadata);
                w.i64(timestamp_ms);
            }
            GroupRecord::Group(r) => {
                let g = r.value.as_ref()?;
                w.i16(GROUP_VALUE_VERSION);
                w.string(&g.protocol_type);
                w.i32(g.generation);
                w.nullable_string(g.protocol.as_deref());
                w.nullable_string(g.leader.as_deref());
                w.i64(g.state_timestamp_ms);
                w.i32(i32::try_from(g.members.len()).unwrap_or(i32::MAX));
                for m in &g.members {
                    w.string(&m.member_id);
                    w.nullable_string(m.group_instance_id.as_deref());
                    w.string(&m.client_id);
                    w.string(&m.client_host);
                    w.i32(m.rebalance_timeout_ms);
                    w.i32(m.session_timeout_ms);
                    w.bytes(&m.subscription);
                    w.bytes(&m.assignment);
                }
            }
        }
        Some(w.0)
    }

    /// Decodes a stored record; `None` when the key is none of the known kinds. A value
    /// that does not decode reads as a tombstone (as it always has for offsets: such a
    /// record deletes what it names).
    #[must_use]
    pub fn parse(key: &[u8], value: Option<&[u8]>) -> Option<GroupRecord> {
        if key.first() == Some(&OLD_VERSION) {
            let (group, topic, partition) = parse_old_key(key)?;
            let value = value.and_then(parse_old_value);
            return Some(GroupRecord::Offset(OffsetRecord { group, topic, partition, value }));
        }
        let mut r = Reader(key);
        match r.i16()? {
            0 | 1 => {
                let group = r.string()?;
                let topic = r.string()?;
                let partition = u32::try_from(r.i32()?).ok()?;
                let value = value.and_then(parse_offset_value);
                Some(GroupRecord::Offset(OffsetRecord { group, topic, partition, value }))
            }
            2 => {
                let group = r.string()?;
                let value = value.and_then(parse_group_value);
                Some(GroupRecord::Group(GroupMetadataRecord { group, value }))
            }
            _ => None,
        }
    }
}

/// `OffsetCommitValue` v0 to v3: (offset, metadata).
fn parse_offset_value(value: &[u8]) -> Option<(i64, String)> {
    let mut r = Reader(value);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return None;
    }
    let offset = r.i64()?;
    if version >= 3 {
        r.i32()?; // leader epoch
    }
    let metadata = r.string()?;
    Some((offset, metadata))
}

/// `GroupMetadataValue` v0 to v3.
fn parse_group_value(value: &[u8]) -> Option<GroupMetadata> {
    let mut r = Reader(value);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return None;
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 { r.nullable_string()? } else { None };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let session_first = version == 0;
        let session = if session_first { r.i32()? } else { 0 };
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { session };
        let session_timeout_ms = if session_first { session } else { r.i32()? };
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(GroupMetadata { protocol_type, generation, protocol, leader, state_timestamp_ms, members })
}

fn parse_old_key(key: &[u8]) -> Option<(String, String, u32)> {
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

fn parse_old_value(value: &[u8]) -> Option<(i64, String)> {
    if value.first() != Some(&OLD_VERSION) || value.len() < 9 {
        return None;
    }
    let mut o = [0u8; 8];
    o.copy_from_slice(&value[1..9]);
    Some((i64::from_be_bytes(o), String::from_utf8_lossy(&value[9..]).into_owned()))
}

/// Kafka's classic encoding: big-endian integers, i16-length strings (-1: null),
/// i32-length bytes.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Strings here are group ids, topic names, member and client ids, hosts, protocol
    /// names and commit metadata, all bounded far below i16::MAX by the requests that
    /// carry them; a longer one is cut rather than written with a wrong length.
    pub(crate) fn string(&mut self, s: &str) {
        let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
        self.i16(bytes.len() as i16);
        self.0.extend_from_slice(bytes);
    }
    pub(crate) fn nullable_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.i16(-1),
        }
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
        self.0.extend_from_slice(b);
    }
    /// An unsigned varint (flexible versions' lengths and tags).
    pub(crate) fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    /// A flexible version's compact string (length + 1, as a varint).
    pub(crate) fn compact_string(&mut self, s: &str) {
        let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
        self.uvarint(bytes.len() as u32 + 1);
        self.0.extend_from_slice(bytes);
    }
}

pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl Reader<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub(crate) fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Some(i64::from_be_bytes(a))
    }
    pub(crate) fn nullable_string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        String::from_utf8(self.take(len as usize)?.to_vec()).ok().map(Some)
    }
    pub(crate) fn string(&mut self) -> Option<String> {
        self.nullable_string()?
    }
    pub(crate) fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = self.i32()?;
        if len < 0 {
            return Some(Vec::new());
        }
        self.take(len as usize).map(<[u8]>::to_vec)
    }
    pub(crate) fn uvarint(&mut self) -> Option<u32> {
        let mut v = 0u32;
        for shift in (0..35).step_by(7) {
            let b = self.take(1)?[0];
            v |= u32::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// A compact string; `None` for a null one or one that does not decode.
    pub(crate) fn compact_string(&mut self) -> Option<String> {
        let len = self.uvarint()?.checked_sub(1)?;
        String::from_utf8(self.take(len as usize)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Offset commits: Kafka's key v1 and value v3, byte for byte; they decode to what
    /// was encoded, truncated keys do not, and a value that does not decode is a
    /// tombstone.
    #[test]
    fn offset_records_are_kafkas_and_round_trip() {
        let commit = GroupRecord::Offset(OffsetRecord {
            group: "g1".into(),
            topic: "orders".into(),
            partition: 7,
            value: Some((42, "meta".into())),
        });
        let key = commit.key();
        assert_eq!(key, [&[0u8, 1, 0, 2][..], b"g1", &[0, 6], b"orders", &[0, 0, 0, 7]].concat());
        let value = commit.value(1_700_000_000_000).unwrap();
        let mut expected = vec![0u8, 3];
        expected.extend_from_slice(&42i64.to_be_bytes());
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        expected.extend_from_slice(&[0, 4]);
        expected.extend_from_slice(b"meta");
        expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        assert_eq!(value, expected);
        assert_eq!(GroupRecord::parse(&key, Some(&value)), Some(commit.clone()));
        let GroupRecord::Offset(c) = &commit else { unreachable!() };
        let tombstone = GroupRecord::Offset(OffsetRecord { value: None, ..c.clone() });
        assert_eq!(tombstone.value(0), None);
        assert_eq!(GroupRecord::parse(&key, None), Some(tombstone.clone()));
        assert_eq!(GroupRecord::parse(&key[..key.len() - 1], Some(&value)), None);
        assert_eq!(GroupRecord::parse(&key, Some(&[0u8, 3, 1][..])), Some(tombstone));
    }

    /// The format Sluice wrote before still reads.
    #[test]
    fn offsets_in_the_earlier_format_still_load() {
        let mut key = vec![1u8];
        for s in ["g1", "orders"] {
            key.extend_from_slice(&(s.len() as u16).to_be_bytes());
            key.extend_from_slice(s.as_bytes());
        }
        key.extend_from_slice(&7u32.to_be_bytes());
        let mut value = vec![1u8];
        value.extend_from_slice(&42i64.to_be_bytes());
        value.extend_from_slice(b"meta");
        let expected =
            OffsetRecord { group: "g1".into(), topic: "orders".into(), partition: 7, value: Some((42, "meta".into())) };
        assert_eq!(GroupRecord::parse(&key, Some(&value)), Some(GroupRecord::Offset(expected)));
    }

    #[test]
    fn group_metadata_round_trips() {
        let record = GroupRecord::Group(GroupMetadataRecord {
            group: "g".into(),
            value: Some(GroupMetadata {
                protocol_type: "consumer".into(),
                generation: 5,
                protocol: Some("range".into()),
                leader: Some("m-1".into()),
                state_timestamp_ms: 99,
                members: vec![MemberMetadata {
                    member_id: "m-1".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 10_000,
                    subscription: vec![0, 1, 2],
                    assignment: vec![3, 4],
                }],
            }),
        });
        let key = record.key();
        assert_eq!(key, [&[0u8, 2, 0, 1][..], b"g"].concat());
        let value = record.value(0).unwrap();
        assert_eq!(&value[..2], &[0, 3]);
        assert_eq!(GroupRecord::parse(&key, Some(&value)), Some(record));
        assert_eq!(
            GroupRecord::parse(&key, None),
            Some(GroupRecord::Group(GroupMetadataRecord { group: "g".into(), value: None }))
        );
    }
}
