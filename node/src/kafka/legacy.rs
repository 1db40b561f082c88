//! Old request and response layouts that Kafka 3.9 still serves and the kafka-protocol
//! crate (which follows Kafka 4.0, where KIP-896 removed them) does not know: ListOffsets
//! v0, OffsetCommit v0 and v1, CreateTopics v0 and v1, DeleteTopics v0 and DescribeConfigs
//! v0. Burrow asks ListOffsets v0, and Go clients commit with OffsetCommit v1 by default
//! and describe configs with v0.
//!
//! Each request is decoded here into the crate's type (as its oldest version there would
//! carry it), so one handler serves every version; each response is encoded here from the
//! crate's type. Decoding is as strict as the crate's: every length is checked against the
//! bytes left, and trailing bytes are ignored as Kafka ignores them. The layouts are those
//! of Kafka 3.9's message definitions (`clients/src/main/resources/common/message`).

use bytes::{Buf, BufMut, Bytes};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, GroupId, ListOffsetsRequest, ListOffsetsResponse,
    OffsetCommitRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::errors::{ErrorKind, NodeError};

/// Which versions of `key` this module encodes and decodes (below the crate's range).
#[must_use]
pub fn is_legacy(key: kafka_protocol::messages::ApiKey, version: i16) -> bool {
    use kafka_protocol::messages::ApiKey;
    match key {
        ApiKey::ListOffsets | ApiKey::DeleteTopics | ApiKey::DescribeConfigs => version == 0,
        ApiKey::OffsetCommit | ApiKey::CreateTopics => version <= 1,
        _ => false,
    }
}

/// Reads the fields of a non-flexible message (Kafka's classic encoding: big-endian
/// integers, i16-length strings, i32-length arrays).
struct Reader<'a> {
    buf: &'a mut Bytes,
    what: &'static str,
}

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), NodeError> {
        if self.buf.remaining() < n {
            return Err(NodeError::new(
                ErrorKind::InvalidRequest,
                format!("malformed {}: {n} more bytes expected, {} left", self.what, self.buf.remaining()),
            ));
        }
        Ok(())
    }
    fn i8(&mut self) -> Result<i8, NodeError> {
        self.need(1)?;
        Ok(self.buf.get_i8())
    }
    fn bool(&mut self) -> Result<bool, NodeError> {
        Ok(self.i8()? != 0)
    }
    fn i16(&mut self) -> Result<i16, NodeError> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }
    fn i32(&mut self) -> Result<i32, NodeError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }
    fn i64(&mut self) -> Result<i64, NodeError> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }
    fn nullable_string(&mut self) -> Result<Option<StrBytes>, NodeError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        self.need(len)?;
        let bytes = self.buf.split_to(len);
        StrBytes::from_utf8(bytes).map(Some).map_err(|_| {
            NodeError::new(ErrorKind::InvalidRequest, format!("malformed {}: a string is not UTF-8", self.what))
        })
    }
    fn string(&mut self) -> Result<StrBytes, NodeError> {
        self.nullable_string()?.ok_or_else(|| {
            NodeError::new(ErrorKind::InvalidRequest, format!("malformed {}: a required string is null", self.what))
        })
    }
    /// An array of `item`s; null reads as `None`. The count is checked against the bytes
    /// left (each item takes at least one), so a lying count allocates nothing.
    fn nullable_array<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, NodeError>,
    ) -> Result<Option<Vec<T>>, NodeError> {
        let count = self.i32()?;
        if count < 0 {
            return Ok(None);
        }
        self.need(count as usize)?;
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(Some(out))
    }
    fn array<T>(&mut self, item: impl FnMut(&mut Self) -> Result<T, NodeError>) -> Result<Vec<T>, NodeError> {
        Ok(self.nullable_array(item)?.unwrap_or_default())
    }
}

/// Writes the fields of a non-flexible message.
#[derive(Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    fn i8(&mut self, v: i8) {
        self.0.put_i8(v);
    }
    fn bool(&mut self, v: bool) {
        self.0.put_i8(i8::from(v));
    }
    fn i16(&mut self, v: i16) {
        self.0.put_i16(v);
    }
    fn i32(&mut self, v: i32) {
        self.0.put_i32(v);
    }
    fn i64(&mut self, v: i64) {
        self.0.put_i64(v);
    }
    fn nullable_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.i16(i16::try_from(s.len()).unwrap_or(i16::MAX));
                self.0.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
            }
            None => self.i16(-1),
        }
    }
    fn string(&mut self, s: &str) {
        self.nullable_string(Some(s));
    }
    fn array<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        self.i32(i32::try_from(items.len()).unwrap_or(i32::MAX));
        for i in items {
            item(self, i);
        }
    }
}

/// A legacy response body, encoded already (`Request::respond_encoded` sends it).
pub struct Encoded(pub Vec<u8>);

/// ListOffsets v0: each partition asks for up to `max_num_offsets` offsets before a
/// timestamp (-1 latest, -2 earliest). Decoded as v1 asks (one offset per partition);
/// `max_num_offsets` is kept per partition, in order, for the response.
pub fn list_offsets_v0(body: &mut Bytes) -> Result<(ListOffsetsRequest, Vec<i32>), NodeError> {
    let mut r = Reader { buf: body, what: "ListOffsets v0 request" };
    let replica_id = r.i32()?;
    let mut max_offsets = Vec::new();
    let topics = r.array(|r| {
        let name = r.string()?;
        let partitions = r.array(|r| {
            let partition = r.i32()?;
            let timestamp = r.i64()?;
            let max = r.i32()?;
            Ok((partition, timestamp, max))
        })?;
        Ok((name, partitions))
    })?;
    let topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            ListOffsetsTopic::default().with_name(TopicName(name)).with_partitions(
                partitions
                    .into_iter()
                    .map(|(partition, timestamp, max)| {
                        max_offsets.push(max);
                        ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(timestamp)
                    })
                    .collect(),
            )
        })
        .collect();
    Ok((ListOffsetsRequest::default().with_replica_id(BrokerId(replica_id)).with_topics(topics), max_offsets))
}

/// ListOffsets v0's response: each partition's offsets as a list (`old_style_offsets`):
/// the one found, or none when none was found or the request asked for zero.
#[must_use]
pub fn list_offsets_v0_response(response: &ListOffsetsResponse, max_offsets: &[i32]) -> Encoded {
    let mut w = Writer::default();
    let mut max = max_offsets.iter();
    w.array(&response.topics, |w, t| {
        w.string(&t.name.0);
        w.array(&t.partitions, |w, p| {
            w.i32(p.partition_index);
            w.i16(p.error_code);
            let wanted = max.next().copied().unwrap_or(1);
            if p.error_code == 0 && p.offset >= 0 && wanted > 0 {
                w.i32(1);
                w.i64(p.offset);
            } else {
                w.i32(0);
            }
        });
    });
    Encoded(w.0)
}

/// OffsetCommit v0 (no group membership: a simple commit) and v1 (with the generation,
/// the member and a commit timestamp per partition, which Kafka ignores since 2.1 too).
pub fn offset_commit_v0_v1(body: &mut Bytes, version: i16) -> Result<OffsetCommitRequest, NodeError> {
    let mut r = Reader { buf: body, what: "OffsetCommit v0/v1 request" };
    let group_id = r.string()?;
    let (generation, member) = if version >= 1 { (r.i32()?, r.string()?) } else { (-1, StrBytes::default()) };
    let topics = r.array(|r| {
        let name = r.string()?;
        let partitions = r.array(|r| {
            let index = r.i32()?;
            let offset = r.i64()?;
            if version >= 1 {
                let _commit_timestamp = r.i64()?;
            }
            let metadata = r.nullable_string()?;
            Ok(OffsetCommitRequestPartition::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
                .with_committed_metadata(metadata))
        })?;
        Ok(OffsetCommitRequestTopic::default().with_name(TopicName(name)).with_partitions(partitions))
    })?;
    Ok(OffsetCommitRequest::default()
        .with_group_id(GroupId(group_id))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member)
        .with_topics(topics))
}

/// CreateTopics v0 and v1 (v1 adds `validate_only`).
pub fn create_topics_v0_v1(body: &mut Bytes, version: i16) -> Result<CreateTopicsRequest, NodeError> {
    let mut r = Reader { buf: body, what: "CreateTopics v0/v1 request" };
    let topics = r.array(|r| {
        let name = r.string()?;
        let partitions = r.i32()?;
        let replication_factor = r.i16()?;
        let assignments = r.array(|r| {
            let index = r.i32()?;
            let brokers = r.array(|r| r.i32().map(BrokerId))?;
            Ok(CreatableReplicaAssignment::default().with_partition_index(index).with_broker_ids(brokers))
        })?;
        let configs = r.array(|r| {
            let name = r.string()?;
            let value = r.nullable_string()?;
            Ok(CreatableTopicConfig::default().with_name(name).with_value(value))
        })?;
        Ok(CreatableTopic::default()
            .with_name(TopicName(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_assignments(assignments)
            .with_configs(configs))
    })?;
    let timeout = r.i32()?;
    let validate_only = if version >= 1 { r.bool()? } else { false };
    Ok(CreateTopicsRequest::default().with_topics(topics).with_timeout_ms(timeout).with_validate_only(validate_only))
}

/// CreateTopics v0's response (name, error) and v1's (with the message); no throttle
/// time before v2.
#[must_use]
pub fn create_topics_v0_v1_response(response: &CreateTopicsResponse, version: i16) -> Encoded {
    let mut w = Writer::default();
    w.array(&response.topics, |w, t| {
        w.string(&t.name.0);
        w.i16(t.error_code);
        if version >= 1 {
            w.nullable_string(t.error_message.as_deref());
        }
    });
    Encoded(w.0)
}

/// DeleteTopics v0's request has v1's layout; its response has no throttle time.
#[must_use]
pub fn delete_topics_v0_response(response: &DeleteTopicsResponse) -> Encoded {
    let mut w = Writer::default();
    w.array(&response.responses, |w, t| {
        w.string(t.name.as_ref().map_or("", |n| &n.0));
        w.i16(t.error_code);
    });
    Encoded(w.0)
}

/// The crate reads DeleteTopics v0 as v1 (the same layout).
pub fn delete_topics_v0(body: &mut Bytes) -> Result<DeleteTopicsRequest, NodeError> {
    use kafka_protocol::protocol::Decodable;
    DeleteTopicsRequest::decode(body, 1)
        .map_err(|e| NodeError::new(ErrorKind::InvalidRequest, format!("malformed DeleteTopics v0 request: {e}")))
}

/// DescribeConfigs v0: v1's request without `include_synonyms`.
pub fn describe_configs_v0(body: &mut Bytes) -> Result<DescribeConfigsRequest, NodeError> {
    let mut r = Reader { buf: body, what: "DescribeConfigs v0 request" };
    let resources = r.array(|r| {
        let resource_type = r.i8()?;
        let name = r.string()?;
        let keys = r.nullable_array(Reader::string)?;
        Ok(DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(name)
            .with_configuration_keys(keys))
    })?;
    Ok(DescribeConfigsRequest::default().with_resources(resources))
}

/// DescribeConfigs v0's response: `is_default` where v1 has `config_source`, and no
/// synonyms.
#[must_use]
pub fn describe_configs_v0_response(response: &DescribeConfigsResponse) -> Encoded {
    /// DescribeConfigs config source: the default.
    const SOURCE_DEFAULT: i8 = 5;
    let mut w = Writer::default();
    w.i32(response.throttle_time_ms);
    w.array(&response.results, |w, result| {
        w.i16(result.error_code);
        w.nullable_string(result.error_message.as_deref());
        w.i8(result.resource_type);
        w.string(&result.resource_name);
        w.array(&result.configs, |w, c| {
            w.string(&c.name);
            w.nullable_string(c.value.as_deref());
            w.bool(c.read_only);
            w.bool(c.config_source == SOURCE_DEFAULT);
            w.bool(c.is_sensitive);
        });
    });
    Encoded(w.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_lying_array_count_is_refused_without_allocating() {
        // replica_id, then a topic count of 2^31-1 with two bytes behind it.
        let mut body = Bytes::from(vec![0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0, 1]);
        let e = list_offsets_v0(&mut body).unwrap_err();
        assert!(e.message.contains("ListOffsets v0"), "{}", e.message);
    }

    #[test]
    fn offset_commit_v1_carries_the_generation_and_member() {
        let mut w = Writer::default();
        w.string("g");
        w.i32(7);
        w.string("m-1");
        w.array(&[()], |w, ()| {
            w.string("t");
            w.array(&[()], |w, ()| {
                w.i32(2);
                w.i64(42);
                w.i64(-1);
                w.nullable_string(Some("meta"));
            });
        });
        let request = offset_commit_v0_v1(&mut Bytes::from(w.0), 1).unwrap();
        assert_eq!((request.group_id.0.as_str(), request.generation_id_or_member_epoch), ("g", 7));
        assert_eq!(request.member_id.as_str(), "m-1");
        let p = &request.topics[0].partitions[0];
        assert_eq!((p.partition_index, p.committed_offset), (2, 42));
        assert_eq!(p.committed_metadata.as_deref(), Some("meta"));
    }
}
