//! Kafka's consumer protocol: the subscription and assignment that consumer group members
//! exchange through the coordinator as opaque bytes (protocol type `consumer`).
//!
//! The coordinator decodes classic members' assignments (for DescribeGroups and lag), and
//! the Kafka listener encodes native members' subscriptions and assignments so that Kafka
//! tools describe every group alike. Encodings come from the kafka-protocol crate.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_schemas::TopicPartition;

/// The version written: v0 is read by every client.
const VERSION: i16 = 0;

/// The (topic, partition) pairs of an encoded assignment; `None` when it is malformed.
#[must_use]
pub fn decode_assignment(bytes: &[u8]) -> Option<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut buf = Bytes::copy_from_slice(bytes);
    let version = buf.try_get_i16().ok()?;
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)).ok()?;
    let mut out = Vec::new();
    for t in assignment.assigned_partitions {
        for p in t.partitions {
            out.push(TopicPartition::new(t.topic.0.to_string(), u32::try_from(p).ok()?));
        }
    }
    Some(out)
}

/// Encodes an assignment as the consumer protocol's v0.
#[must_use]
pub fn encode_assignment(assignment: &[TopicPartition]) -> Vec<u8> {
    let mut topics: Vec<AssignedPartitions> = Vec::new();
    for TopicPartition { topic, partition } in assignment {
        let p = i32::try_from(*partition).unwrap_or(i32::MAX);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                AssignedPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let message = ConsumerProtocolAssignment::default().with_assigned_partitions(topics);
    encode(&message)
}

/// Encodes a subscription to `topics` as the consumer protocol's v0.
#[must_use]
pub fn encode_subscription(topics: &[String]) -> Vec<u8> {
    encode_subscription_with(topics, None)
}

/// Encodes a subscription to `topics` with `user_data` as the consumer protocol's v0.
#[must_use]
pub fn encode_subscription_with(topics: &[String], user_data: Option<&[u8]>) -> Vec<u8> {
    let topics = topics.iter().map(|t| StrBytes::from_string(t.clone())).collect();
    let user_data = user_data.map(Bytes::copy_from_slice);
    encode(&ConsumerProtocolSubscription::default().with_topics(topics).with_user_data(user_data))
}

/// The topics and user data of an encoded subscription; `None` when it is malformed.
#[must_use]
pub fn decode_subscription(bytes: &[u8]) -> Option<(Vec<String>, Option<Vec<u8>>)> {
    let mut buf = Bytes::copy_from_slice(bytes);
    let version = buf.try_get_i16().ok()?;
    let subscription = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)).ok()?;
    let topics = subscription.topics.iter().map(ToString::to_string).collect();
    Some((topics, subscription.user_data.map(|d| d.to_vec())))
}

fn encode(message: &impl Encodable) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&VERSION.to_be_bytes());
    // Encoding a v0 message into memory cannot fail; an empty result would be read as
    // "no assignment" by clients.
    if message.encode(&mut buf, VERSION).is_err() {
        return Vec::new();
    }
    buf.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_round_trip() {
        let assignment: Vec<TopicPartition> = vec![("a", 0).into(), ("a", 2).into(), ("b", 1).into()];
        assert_eq!(decode_assignment(&encode_assignment(&assignment)), Some(assignment));
        assert_eq!(decode_assignment(&[]), Some(Vec::new()));
        assert_eq!(decode_assignment(&[0, 0, 0, 0, 0, 9]), None);
        assert!(encode_subscription(&["a".to_string()]).len() > 2);
        let subscription = encode_subscription_with(&["a".to_string(), "b".to_string()], Some(b"x"));
        assert_eq!(decode_subscription(&subscription), Some((vec!["a".into(), "b".into()], Some(b"x".to_vec()))));
    }
}
