//! The bytes of replication messages between nodes: an `Envelope` (sender, addressee,
//! message) in the controller's versioned binary encoding (`state::Writer`/`Reader`:
//! a version byte, a tag byte, big-endian fields, checked lengths), and for a fetch reply
//! the batches' bytes after it. A heartbeat carries no data; its advertised listeners
//! (u32 count, at most `state::LISTENERS_MAX`; each name and host strings, port u16) come
//! last, after its envelope, so that a heartbeat from a node that predates listeners,
//! whose bytes end with the envelope, decodes with none. What travels between nodes is
//! the inter-node protocol only: heartbeats and their replies, partition updates,
//! AlterPartition and its reply, requests for producer ids and for topic creations,
//! replica fetches and their replies. Client messages (`Produce`, `ConsumerFetch` and
//! their replies) stay inside the simulator: clients use the native and Kafka protocols.
//!
//! Guarantees: `decode(encode(e)) == e` for every inter-node envelope; decoding never
//! panics and never allocates more than the input's size allows, and names what is wrong
//! (with its byte position) when the bytes are not an envelope.
//!
//! Where it lives: the node's cluster transport (`cluster::transport`) and its tests.

use crate::ClusterPartitionId;
use sluice_schemas::batch::BatchWalker;
use sluice_schemas::ids::{LeaderEpoch, Offset};

use super::log::{EpochEnd, LogEntry};
use super::state::{DecodeError, Reader, Writer, ENCODING_VERSION};
use super::{ClientId, Endpoint, Envelope, FetchResult, Incarnation, Message, NodeId, PayloadId, ReplicaError};

const TAG_HEARTBEAT: u8 = 20;
const TAG_HEARTBEAT_REPLY: u8 = 21;
const TAG_PARTITION_UPDATE: u8 = 22;
const TAG_ALTER: u8 = 23;
const TAG_ALTER_REPLY: u8 = 24;
const TAG_FETCH: u8 = 25;
const TAG_FETCH_REPLY: u8 = 26;
const TAG_ALLOCATE_PRODUCER_IDS: u8 = 27;
const TAG_CREATE_TOPICS: u8 = 28;
const TAG_FORWARD_SECURITY: u8 = 29;
const TAG_KAFKA_REQUEST: u8 = 30;
const TAG_KAFKA_RESPONSE: u8 = 31;
const TAG_JOIN: u8 = 32;
/// Commands in one `ForwardSecurity`: a count above it is malformed.
const FORWARD_COMMANDS_MAX: usize = 10_000;
/// Topic names in one `CreateTopics`: a count above it is malformed.
const CREATE_TOPICS_MAX: usize = 10_000;

/// Bytes each encoded item takes at least: a count above `bytes / this` is malformed.
const STATE_BYTES_MIN: usize = 17;
const ENTRY_BYTES: usize = 28;

/// Encodes an inter-node envelope, with `data` (a fetch reply's batches) after it.
/// `None` for a client message, which never travels between nodes, and for a heartbeat
/// with data (a heartbeat carries none).
#[must_use]
pub fn encode(envelope: &Envelope, data: &[u8]) -> Option<Vec<u8>> {
    encode_parts(envelope, &[data])
}

/// `encode` with the data in several pieces (a log read's chunks), copied once, into
/// the envelope's buffer.
#[must_use]
pub fn encode_parts(envelope: &Envelope, parts: &[&[u8]]) -> Option<Vec<u8>> {
    let data_len: usize = parts.iter().map(|p| p.len()).sum();
    let mut w = Writer(Vec::with_capacity(64 + data_len));
    w.u8(ENCODING_VERSION);
    match &envelope.message {
        Message::Heartbeat { node, incarnation, want_shutdown, listeners: _ } => {
            if data_len != 0 {
                return None; // A heartbeat carries none: its listeners take that place.
            }
            w.u8(TAG_HEARTBEAT);
            w.u32(node.0);
            w.u64(incarnation.0);
            w.bool(*want_shutdown);
        }
        Message::HeartbeatReply { incarnation, states, shutdown_ready } => {
            w.u8(TAG_HEARTBEAT_REPLY);
            w.u64(incarnation.0);
            w.u32(states.len() as u32);
            states.iter().for_each(|s| w.state(s));
            w.bool(*shutdown_ready);
        }
        Message::PartitionUpdate { incarnation, state } => {
            w.u8(TAG_PARTITION_UPDATE);
            w.u64(incarnation.0);
            w.state(state);
        }
        Message::AlterPartition(alter) => {
            w.u8(TAG_ALTER);
            w.alter_partition(alter);
        }
        Message::AllocateProducerIds { node, incarnation, after } => {
            w.u8(TAG_ALLOCATE_PRODUCER_IDS);
            w.u32(node.0);
            w.u64(incarnation.0);
            w.optional_u64(*after);
        }
        Message::CreateTopics { names } => {
            w.u8(TAG_CREATE_TOPICS);
            w.u32(names.len() as u32);
            names.iter().for_each(|n| w.string(n));
        }
        Message::ForwardSecurity { commands } => {
            w.u8(TAG_FORWARD_SECURITY);
            w.u32(commands.len() as u32);
            for command in commands {
                let bytes = command.encode();
                w.u32(bytes.len() as u32);
                w.raw(&bytes);
            }
        }
        Message::Join { node, incarnation, endpoints, hops } => {
            w.u8(TAG_JOIN);
            w.u32(node.0);
            w.u64(incarnation.0);
            w.endpoints(endpoints);
            w.u8(*hops);
        }
        Message::AlterPartitionReply { incarnation, request_id, accepted, state } => {
            w.u8(TAG_ALTER_REPLY);
            w.u64(incarnation.0);
            w.u64(*request_id);
            w.bool(*accepted);
            w.state(state);
        }
        Message::Fetch { partition, replica, leader_epoch, fetch_offset, last_fetched_epoch, request_id } => {
            w.u8(TAG_FETCH);
            w.u32(partition.0);
            w.u32(replica.0);
            w.u32(leader_epoch.0);
            w.u64(fetch_offset.0);
            optional_epoch(&mut w, *last_fetched_epoch);
            w.u64(*request_id);
        }
        Message::FetchReply { partition, leader_epoch, request_id, result } => {
            w.u8(TAG_FETCH_REPLY);
            w.u32(partition.0);
            w.u32(leader_epoch.0);
            w.u64(*request_id);
            match result {
                FetchResult::Entries { entries, high_watermark, log_start } => {
                    w.u8(0);
                    w.u64(high_watermark.0);
                    w.u64(log_start.0);
                    w.u32(entries.len() as u32);
                    for e in entries {
                        w.u64(e.offset.0);
                        w.u64(e.count);
                        w.u32(e.epoch.0);
                        w.u64(e.payload.0);
                    }
                }
                FetchResult::Diverging { end } => {
                    w.u8(1);
                    match end {
                        Some(end) => {
                            w.bool(true);
                            w.u32(end.epoch.0);
                            w.u64(end.end_offset.0);
                        }
                        None => w.bool(false),
                    }
                }
                FetchResult::Error(e) => {
                    w.u8(2);
                    w.u8(error_code(*e));
                }
                FetchResult::Reset { log_start, epoch } => {
                    w.u8(3);
                    w.u64(log_start.0);
                    w.u32(epoch.0);
                }
            }
        }
        Message::KafkaRequest { request_id, reply_shard } | Message::KafkaResponse { request_id, reply_shard } => {
            let request = matches!(envelope.message, Message::KafkaRequest { .. });
            w.u8(if request { TAG_KAFKA_REQUEST } else { TAG_KAFKA_RESPONSE });
            w.u64(*request_id);
            w.u16(*reply_shard);
        }
        Message::Produce { .. }
        | Message::ProduceReply { .. }
        | Message::ConsumerFetch { .. }
        | Message::ConsumerFetchReply { .. } => return None,
    }
    endpoint(&mut w, envelope.from);
    endpoint(&mut w, envelope.to);
    w.u32(u32::try_from(data_len).ok()?);
    for part in parts {
        w.0.extend_from_slice(part);
    }
    if let Message::Heartbeat { listeners, .. } = &envelope.message {
        w.listeners(listeners);
    }
    Some(w.0)
}

/// Whether encoded envelope bytes carry a `KafkaRequest` or `KafkaResponse` (which the
/// node handles itself), without decoding the rest.
#[must_use]
pub fn is_kafka(bytes: &[u8]) -> bool {
    bytes.get(1).is_some_and(|tag| matches!(*tag, TAG_KAFKA_REQUEST | TAG_KAFKA_RESPONSE))
}

/// Where the data of an encoded envelope lies in its bytes, given its length from
/// `decode`: it is their last part (a heartbeat's listeners come after its envelope, but
/// a heartbeat has no data).
#[must_use]
pub fn data_range(bytes: &[u8], data_len: usize) -> std::ops::Range<usize> {
    bytes.len().saturating_sub(data_len)..bytes.len()
}

/// Decodes an envelope and the data after it (see `encode`).
pub fn decode(bytes: &[u8]) -> Result<(Envelope, &[u8]), DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let mut message = match r.header()? {
        TAG_HEARTBEAT => Message::Heartbeat {
            node: NodeId(r.u32()?),
            incarnation: Incarnation(r.u64()?),
            want_shutdown: r.bool()?,
            listeners: Vec::new(), // After the envelope.
        },
        TAG_HEARTBEAT_REPLY => {
            let incarnation = Incarnation(r.u64()?);
            let count = r.u32()? as usize;
            if count > bytes.len() / STATE_BYTES_MIN {
                return r.err(format!("{count} partition states in {} bytes", bytes.len()));
            }
            let states = (0..count).map(|_| r.state()).collect::<Result<Vec<_>, _>>()?;
            Message::HeartbeatReply { incarnation, states, shutdown_ready: r.bool()? }
        }
        TAG_PARTITION_UPDATE => Message::PartitionUpdate { incarnation: Incarnation(r.u64()?), state: r.state()? },
        TAG_ALTER => Message::AlterPartition(r.alter_partition()?),
        TAG_ALLOCATE_PRODUCER_IDS => Message::AllocateProducerIds {
            node: NodeId(r.u32()?),
            incarnation: Incarnation(r.u64()?),
            after: r.optional_u64()?,
        },
        TAG_CREATE_TOPICS => {
            let count = r.u32()? as usize;
            if count > CREATE_TOPICS_MAX || count > bytes.len() {
                return r.err(format!("{count} topic names in {} bytes", bytes.len()));
            }
            Message::CreateTopics { names: (0..count).map(|_| r.string()).collect::<Result<Vec<_>, _>>()? }
        }
        TAG_FORWARD_SECURITY => {
            let count = r.u32()? as usize;
            if count > FORWARD_COMMANDS_MAX || count > bytes.len() {
                return r.err(format!("{count} commands in {} bytes", bytes.len()));
            }
            let mut commands = Vec::with_capacity(count);
            for _ in 0..count {
                let len = r.u32()? as usize;
                let command = r.take(len)?;
                commands
                    .push(super::state::Command::decode(command).map_err(|e| DecodeError { at: r.at, what: e.what })?);
            }
            Message::ForwardSecurity { commands }
        }
        TAG_JOIN => Message::Join {
            node: NodeId(r.u32()?),
            incarnation: Incarnation(r.u64()?),
            endpoints: r.endpoints()?,
            hops: r.u8()?,
        },
        TAG_ALTER_REPLY => Message::AlterPartitionReply {
            incarnation: Incarnation(r.u64()?),
            request_id: r.u64()?,
            accepted: r.bool()?,
            state: r.state()?,
        },
        TAG_FETCH => Message::Fetch {
            partition: ClusterPartitionId(r.u32()?),
            replica: NodeId(r.u32()?),
            leader_epoch: LeaderEpoch(r.u32()?),
            fetch_offset: Offset(r.u64()?),
            last_fetched_epoch: read_optional_epoch(&mut r)?,
            request_id: r.u64()?,
        },
        TAG_FETCH_REPLY => {
            let partition = ClusterPartitionId(r.u32()?);
            let leader_epoch = LeaderEpoch(r.u32()?);
            let request_id = r.u64()?;
            let result = match r.u8()? {
                0 => {
                    let high_watermark = Offset(r.u64()?);
                    let log_start = Offset(r.u64()?);
                    let count = r.u32()? as usize;
                    if count > bytes.len() / ENTRY_BYTES {
                        return r.err(format!("{count} entries in {} bytes", bytes.len()));
                    }
                    let mut entries = Vec::with_capacity(count);
                    for _ in 0..count {
                        let entry = LogEntry {
                            offset: Offset(r.u64()?),
                            count: r.u64()?,
                            epoch: LeaderEpoch(r.u32()?),
                            payload: PayloadId(r.u64()?),
                        };
                        let follows = entries.last().is_none_or(|last: &LogEntry| last.end() == entry.offset);
                        if entry.count == 0 || entry.offset.0.checked_add(entry.count).is_none() || !follows {
                            return r.err(format!("entry {entry:?} does not continue the ones before it"));
                        }
                        entries.push(entry);
                    }
                    FetchResult::Entries { entries, high_watermark, log_start }
                }
                1 => {
                    let end = if r.bool()? {
                        Some(EpochEnd { epoch: LeaderEpoch(r.u32()?), end_offset: Offset(r.u64()?) })
                    } else {
                        None
                    };
                    FetchResult::Diverging { end }
                }
                2 => {
                    let code = r.u8()?;
                    match error_of(code) {
                        Some(e) => FetchResult::Error(e),
                        None => return r.err(format!("unknown replication error code {code}")),
                    }
                }
                3 => FetchResult::Reset { log_start: Offset(r.u64()?), epoch: LeaderEpoch(r.u32()?) },
                other => return r.err(format!("unknown fetch result kind {other}")),
            };
            Message::FetchReply { partition, leader_epoch, request_id, result }
        }
        TAG_KAFKA_REQUEST => Message::KafkaRequest { request_id: r.u64()?, reply_shard: r.u16()? },
        TAG_KAFKA_RESPONSE => Message::KafkaResponse { request_id: r.u64()?, reply_shard: r.u16()? },
        tag => return r.err(format!("unknown replication message tag {tag}")),
    };
    let from = read_endpoint(&mut r)?;
    let to = read_endpoint(&mut r)?;
    let len = r.u32()? as usize;
    let data = r.take(len)?;
    if let Message::Heartbeat { listeners, .. } = &mut message {
        if len != 0 {
            return r.err(format!("a heartbeat with {len} bytes of data"));
        }
        // A heartbeat from before listeners ends with its envelope: it advertises none.
        if r.at < bytes.len() {
            *listeners = r.listeners()?;
        }
    }
    r.finish()?;
    Ok((Envelope { from, to, message }, data))
}

/// The entries a fetch reply's batches make (base offset, offsets spanned, epoch), or
/// why the bytes are not whole batches each carrying a leader epoch.
pub fn entries_of(batches: &[u8]) -> Result<Vec<LogEntry>, String> {
    let mut entries = Vec::new();
    for batch in BatchWalker::new(batches) {
        let (position, header, _) = batch.map_err(|e| e.to_string())?;
        let Some(epoch) = header.leader_epoch() else {
            return Err(format!("the batch at byte {position} carries no leader epoch"));
        };
        let offset = header.base_offset();
        entries.push(LogEntry {
            offset,
            count: header.next_offset().records_since(offset),
            epoch,
            payload: PayloadId(0),
        });
    }
    Ok(entries)
}

fn optional_epoch(w: &mut Writer, epoch: Option<LeaderEpoch>) {
    match epoch {
        Some(e) => {
            w.bool(true);
            w.u32(e.0);
        }
        None => w.bool(false),
    }
}

fn read_optional_epoch(r: &mut Reader<'_>) -> Result<Option<LeaderEpoch>, DecodeError> {
    Ok(if r.bool()? { Some(LeaderEpoch(r.u32()?)) } else { None })
}

fn endpoint(w: &mut Writer, endpoint: Endpoint) {
    match endpoint {
        Endpoint::Controller => w.u8(0),
        Endpoint::Node(n) => {
            w.u8(1);
            w.u32(n.0);
        }
        Endpoint::Client(c) => {
            w.u8(2);
            w.u32(c.0);
        }
    }
}

fn read_endpoint(r: &mut Reader<'_>) -> Result<Endpoint, DecodeError> {
    match r.u8()? {
        0 => Ok(Endpoint::Controller),
        1 => Ok(Endpoint::Node(NodeId(r.u32()?))),
        2 => Ok(Endpoint::Client(ClientId(r.u32()?))),
        other => r.err(format!("unknown endpoint kind {other}")),
    }
}

const ERRORS: [ReplicaError; 7] = [
    ReplicaError::NotLeader,
    ReplicaError::FencedLeaderEpoch,
    ReplicaError::UnknownLeaderEpoch,
    ReplicaError::NotEnoughReplicas,
    ReplicaError::NotEnoughReplicasAfterAppend,
    ReplicaError::OffsetNotAvailable,
    ReplicaError::OffsetOutOfRange,
];

fn error_code(e: ReplicaError) -> u8 {
    ERRORS.iter().position(|x| *x == e).map_or(0, |i| i as u8)
}

fn error_of(code: u8) -> Option<ReplicaError> {
    ERRORS.get(usize::from(code)).copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::state::LISTENERS_MAX;
    use crate::{AdvertisedListener, AlterPartition, PartitionEpoch, PartitionState};

    fn state() -> PartitionState {
        PartitionState {
            partition: ClusterPartitionId(7),
            leader: Some(NodeId(2)),
            leader_epoch: LeaderEpoch(5),
            partition_epoch: PartitionEpoch(9),
            isr: vec![NodeId(2), NodeId(3)],
            replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
        }
    }

    fn listeners() -> Vec<AdvertisedListener> {
        vec![
            AdvertisedListener { name: "INTERNAL".into(), host: "127.0.0.1".into(), port: 9092 },
            AdvertisedListener { name: "EXTERNAL".into(), host: "é.example.com".into(), port: u16::MAX },
            AdvertisedListener { name: String::new(), host: String::new(), port: 0 },
        ]
    }

    fn every_message() -> Vec<Message> {
        let entries = vec![
            LogEntry { offset: Offset(10), count: 4, epoch: LeaderEpoch(5), payload: PayloadId(0) },
            LogEntry { offset: Offset(14), count: 1, epoch: LeaderEpoch(5), payload: PayloadId(3) },
        ];
        let reply = |result| Message::FetchReply {
            partition: ClusterPartitionId(7),
            leader_epoch: LeaderEpoch(5),
            request_id: 11,
            result,
        };
        let mut messages = vec![
            Message::Heartbeat {
                node: NodeId(3),
                incarnation: Incarnation(1 << 40),
                want_shutdown: true,
                listeners: listeners(),
            },
            Message::Heartbeat {
                node: NodeId(3),
                incarnation: Incarnation(2),
                want_shutdown: false,
                listeners: Vec::new(),
            },
            Message::AllocateProducerIds { node: NodeId(2), incarnation: Incarnation(6), after: Some(3_000) },
            Message::AllocateProducerIds { node: NodeId(2), incarnation: Incarnation(6), after: None },
            Message::CreateTopics { names: vec!["orders".into(), "é-topic".into()] },
            Message::CreateTopics { names: Vec::new() },
            Message::KafkaRequest { request_id: u64::MAX, reply_shard: 3 },
            Message::KafkaResponse { request_id: 7, reply_shard: 0 },
            Message::Join {
                node: NodeId(9),
                incarnation: Incarnation(1 << 41),
                endpoints: crate::state::NodeEndpoints {
                    native: "10.0.0.9:7000".into(),
                    cluster: "10.0.0.9:7100".into(),
                    rack: Some("r1".into()),
                },
                hops: 1,
            },
            Message::Join {
                node: NodeId(0),
                incarnation: Incarnation(0),
                endpoints: crate::state::NodeEndpoints::default(),
                hops: 0,
            },
            Message::ForwardSecurity {
                commands: vec![
                    crate::state::Command::DeleteScramCredential {
                        user: "alice".into(),
                        mechanism: crate::state::ScramMechanism::Sha512,
                    },
                    crate::state::Command::CreateAcls { acls: Vec::new() },
                ],
            },
            Message::HeartbeatReply {
                incarnation: Incarnation(4),
                states: vec![state(), state()],
                shutdown_ready: false,
            },
            Message::PartitionUpdate { incarnation: Incarnation(4), state: state() },
            Message::AlterPartition(AlterPartition {
                node: NodeId(2),
                incarnation: Incarnation(4),
                partition: ClusterPartitionId(7),
                leader_epoch: LeaderEpoch(5),
                partition_epoch: PartitionEpoch(9),
                isr: vec![NodeId(2)],
                request_id: 77,
            }),
            Message::AlterPartitionReply {
                incarnation: Incarnation(4),
                request_id: 77,
                accepted: true,
                state: state(),
            },
            Message::Fetch {
                partition: ClusterPartitionId(7),
                replica: NodeId(3),
                leader_epoch: LeaderEpoch(5),
                fetch_offset: Offset(10),
                last_fetched_epoch: None,
                request_id: 11,
            },
            reply(FetchResult::Entries { entries, high_watermark: Offset(12), log_start: Offset(3) }),
            reply(FetchResult::Diverging { end: Some(EpochEnd { epoch: LeaderEpoch(3), end_offset: Offset(8) }) }),
            reply(FetchResult::Diverging { end: None }),
            reply(FetchResult::Reset { log_start: Offset(u64::MAX), epoch: LeaderEpoch(7) }),
        ];
        messages.extend(ERRORS.iter().map(|e| reply(FetchResult::Error(*e))));
        messages
    }

    #[test]
    fn every_inter_node_message_round_trips_and_client_messages_stay_home() {
        for (i, message) in every_message().into_iter().enumerate() {
            // A heartbeat carries no data.
            let heartbeat = matches!(message, Message::Heartbeat { .. });
            let data = if heartbeat { Vec::new() } else { vec![i as u8; i] };
            let envelope = Envelope { from: Endpoint::Node(NodeId(3)), to: Endpoint::Controller, message };
            let bytes = encode(&envelope, &data).unwrap();
            let (decoded, rest) = decode(&bytes).unwrap();
            assert_eq!(decoded, envelope);
            assert_eq!(rest, &data[..]);
            assert_eq!(&bytes[data_range(&bytes, rest.len())], &data[..]);
            // Every strict prefix is refused with a reason, never a panic, but for a
            // heartbeat without its listeners: that is one from before listeners.
            let listener_bytes = match &envelope.message {
                Message::Heartbeat { listeners, .. } => {
                    4 + listeners.iter().map(|l| 2 + l.name.len() + 2 + l.host.len() + 2).sum::<usize>()
                }
                _ => 0,
            };
            for cut in 0..bytes.len() {
                if heartbeat && cut == bytes.len() - listener_bytes {
                    continue;
                }
                assert!(decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes of {envelope:?}");
            }
        }
        let produce = Message::Produce {
            partition: ClusterPartitionId(0),
            acks: super::super::Acks::All,
            payload: PayloadId(1),
            request_id: 1,
        };
        let envelope =
            Envelope { from: Endpoint::Client(ClientId(1)), to: Endpoint::Node(NodeId(1)), message: produce };
        assert_eq!(encode(&envelope, &[]), None);
    }

    /// A heartbeat from a node that predates listeners (its bytes end with the envelope)
    /// decodes with none; a heartbeat with data, or with more listeners than
    /// `LISTENERS_MAX`, is refused.
    #[test]
    fn heartbeats_without_listeners_decode_and_malformed_ones_are_refused() {
        let message = Message::Heartbeat {
            node: NodeId(4),
            incarnation: Incarnation(9),
            want_shutdown: false,
            listeners: listeners(),
        };
        let envelope = Envelope { from: Endpoint::Node(NodeId(4)), to: Endpoint::Controller, message };
        // The encoding before listeners, written out.
        let mut old = vec![ENCODING_VERSION, TAG_HEARTBEAT, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 9, 0];
        old.extend_from_slice(&[1, 0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let (decoded, data) = decode(&old).unwrap();
        assert!(data.is_empty());
        let Message::Heartbeat { node, incarnation, want_shutdown, listeners } = decoded.message else {
            panic!("{decoded:?}")
        };
        assert_eq!((node, incarnation, want_shutdown, listeners), (NodeId(4), Incarnation(9), false, Vec::new()));
        let bytes = encode(&envelope, &[]).unwrap();
        assert_eq!(&bytes[..old.len()], &old[..], "the listeners follow the old encoding");

        assert_eq!(encode(&envelope, b"data"), None, "a heartbeat carries no data");
        let mut with_data = old.clone();
        with_data[old.len() - 1] = 1;
        with_data.push(7);
        assert!(decode(&with_data).unwrap_err().what.contains("data"));

        let mut too_many = old.clone();
        too_many.extend_from_slice(&(LISTENERS_MAX as u32 + 1).to_be_bytes());
        too_many.extend(std::iter::repeat_n(0, 6 * (LISTENERS_MAX + 1)));
        assert!(decode(&too_many).unwrap_err().what.contains("advertised listeners"));
        let mut huge = old;
        huge.extend_from_slice(&[0xff; 4]);
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn entries_of_batches_are_their_offsets_spans_and_epochs() {
        use sluice_schemas::records::{BatchBuilder, BatchConfig};
        let batch = |base: u64, records: usize, epoch: Option<u32>| {
            let config = BatchConfig {
                base_offset: Offset(base),
                partition_leader_epoch: epoch.map(LeaderEpoch),
                ..BatchConfig::default()
            };
            let mut b = BatchBuilder::new(config).unwrap();
            for i in 0..records {
                b.push(Some(b"k"), Some(&[i as u8; 10]), &[], 1_000).unwrap();
            }
            b.finish().unwrap()
        };
        let mut bytes = batch(10, 3, Some(4));
        bytes.extend(batch(13, 1, Some(6)));
        assert_eq!(
            entries_of(&bytes).unwrap(),
            vec![
                LogEntry { offset: Offset(10), count: 3, epoch: LeaderEpoch(4), payload: PayloadId(0) },
                LogEntry { offset: Offset(13), count: 1, epoch: LeaderEpoch(6), payload: PayloadId(0) },
            ]
        );
        assert!(entries_of(&batch(0, 1, None)).unwrap_err().contains("no leader epoch"));
        assert!(entries_of(&bytes[..bytes.len() - 1]).is_err(), "a torn batch");
    }

    #[test]
    fn malformed_bytes_are_refused_with_their_position() {
        let huge_count = [ENCODING_VERSION, TAG_HEARTBEAT_REPLY, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
        let e = decode(&huge_count).unwrap_err();
        assert!(e.what.contains("partition states"), "{e}");
        assert!(decode(&[ENCODING_VERSION + 1, TAG_FETCH]).unwrap_err().what.contains("version"));
        assert!(decode(&[ENCODING_VERSION, 99]).unwrap_err().what.contains("tag 99"));
        // Random bytes: refused or decoded, never a panic.
        let mut rng = crate::sim::Rng(5);
        for _ in 0..20_000 {
            let len = rng.range(0, 63) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.range(0, 255) as u8).collect();
            if len >= 2 {
                bytes[0] = ENCODING_VERSION;
                bytes[1] = TAG_HEARTBEAT + (bytes[1] % 8);
            }
            let _ = decode(&bytes);
        }
    }
}
