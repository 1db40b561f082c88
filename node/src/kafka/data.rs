//! Kafka's Produce, Fetch, ListOffsets and DeleteRecords, over the same operations as the
//! native ones (`append_all`, `fetch_all`, `list_offset`, `delete_records_one`).
//! Produce's record batches are slices of the request as read (no copy before the log);
//! Fetch's go to the socket from the log's buffers (`fetch_response`).

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, DescribeProducersRequest, DescribeProducersResponse, FetchRequest,
    ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, ProducerId, TopicName,
};

use super::fetch_response::{FetchedPartition, FetchedTopic};
use super::fetch_sessions::{FetchSessions, Plan};
use super::{code, index_of, partition_index, text, Request};
use crate::acl::op;
use crate::cluster::host::Replicas;
use crate::errors::{ErrorKind, NodeError};
use crate::listener::{ResponseFrame, Server};
use crate::ops::fetch::{fetch_all, list_offset, FetchLimits, Wanted};
use crate::ops::produce::{append_all, ProducePartition};
use sluice_schemas::batch::BatchHeader;
use sluice_schemas::TopicPartition;

pub async fn produce(
    server: &Rc<Server>,
    joined: &super::txn::Joined,
    request: &Request,
    produce: ProduceRequest,
) -> Result<Option<ResponseFrame>, NodeError> {
    let acks = produce.acks;
    let v = request.version;
    // Authorization first (WRITE on the transactional id, if any, and on each topic).
    let txn_id = produce.transactional_id.as_ref().map(|id| id.0.to_string()).filter(|id| !id.is_empty());
    // Transactional batches need WRITE on a transactional id, also when none is named
    // (Kafka's check: then no principal has it).
    let transactional = produce.topic_data.iter().flat_map(|t| t.partition_data.iter()).any(|p| {
        p.records.as_deref().and_then(|r| BatchHeader::view(r).ok()).is_some_and(|h| h.attributes().is_transactional())
    });
    let txn_denied = match &txn_id {
        Some(id) if !request.caller.may(server, op::WRITE, crate::acl::resource::TRANSACTIONAL_ID, id) => {
            Some(NodeError::txn_denied(id))
        }
        None if transactional && !request.caller.may(server, op::WRITE, crate::acl::resource::TRANSACTIONAL_ID, "") => {
            Some(NodeError::txn_denied("(none: transactional batches without a transactional id)"))
        }
        _ => None,
    };
    let mut denied: HashMap<String, NodeError> = HashMap::new();
    for t in &produce.topic_data {
        let name = t.name.0.to_string();
        if let Some(e) = &txn_denied {
            denied.insert(name, e.clone());
        } else if !denied.contains_key(&name) && !request.caller.may_topic(server, op::WRITE, &name) {
            denied.insert(name.clone(), NodeError::topic_denied(&name));
        }
    }
    let mut not_joined = join_transaction(server, joined, request, &produce, &denied).await;
    let topics = produce
        .topic_data
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partition_data
                .iter()
                .map(|p| {
                    let partition = partition_index(p.index);
                    let refused = if let Some(e) = denied.get(&name) {
                        Some(e.clone())
                    } else if not_joined.is_empty() {
                        None
                    } else {
                        not_joined.remove(&TopicPartition::new(&name, partition))
                    };
                    let records = match (refused, &p.records) {
                        (Some(e), _) => Err(e),
                        (None, Some(records)) => Ok(&records[..]),
                        (None, None) => {
                            Err(NodeError::new(ErrorKind::InvalidRequest, format!("{name}-{partition}: no records")))
                        }
                    };
                    ProducePartition { partition, records }
                })
                .collect();
            (name, partitions)
        })
        .collect();
    // Transactions v1 (before Produce v12, which joins the partitions above): a
    // partition's first transactional batch is verified at the coordinator (KIP-890
    // part 1).
    let verify = txn_id.as_deref().filter(|_| v < TRANSACTIONS_V2_PRODUCE);
    let results = append_all(&server.shard, acks, verify, topics).await;
    if acks == 0 {
        // No response to carry an error: Kafka closes the connection so the client notices.
        let failed = results.iter().flat_map(|(_, parts)| parts).find_map(|(_, r)| r.as_ref().err());
        return match failed {
            Some(e) => Err(NodeError::new(e.kind, format!("acks=0 produce failed: {}", e.message))),
            None => Ok(None),
        };
    }
    let responses = results
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(partition, result)| {
                    let response = PartitionProduceResponse::default().with_index(index_of(partition));
                    match result {
                        Ok(a) => response
                            .with_base_offset(a.base_offset.as_i64())
                            .with_log_append_time_ms(a.log_append_time_ms.unwrap_or(-1))
                            .with_log_start_offset(if v >= 5 { a.log_start_offset.as_i64() } else { -1 }),
                        Err(e) => response
                            .with_error_code(code(&e))
                            .with_error_message((v >= 8).then(|| text(&e.message)))
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1),
                    }
                })
                .collect();
            TopicProduceResponse::default().with_name(TopicName(text(&name))).with_partition_responses(partitions)
        })
        .collect();
    request.respond(&ProduceResponse::default().with_responses(responses)).map(Some)
}

/// The first Produce version of transactions v2: its transactional batches' partitions
/// join the transaction implicitly (KIP-890 part 2).
const TRANSACTIONS_V2_PRODUCE: i16 = 12;

/// Produce v12+ with a transactional id: the partitions its transactional batches write
/// (but not those of `denied` topics) join the transaction first
/// (`txn::join_for_produce`); the ones that could not, with why.
async fn join_transaction(
    server: &Rc<Server>,
    joined: &super::txn::Joined,
    request: &Request,
    produce: &ProduceRequest,
    denied: &HashMap<String, NodeError>,
) -> HashMap<TopicPartition, NodeError> {
    let id = produce.transactional_id.as_ref().map(|id| id.0.to_string()).unwrap_or_default();
    if request.version < TRANSACTIONS_V2_PRODUCE || id.is_empty() {
        return HashMap::new();
    }
    let batches = produce
        .topic_data
        .iter()
        .filter(|t| !denied.contains_key(t.name.0.as_str()))
        .flat_map(|t| t.partition_data.iter().map(move |p| (t, p)))
        .filter_map(|(t, p)| {
            let header = BatchHeader::view(p.records.as_deref()?).ok()?;
            let transactional = header.attributes().is_transactional() && !header.attributes().is_control();
            transactional.then(|| {
                let tp = TopicPartition::new(t.name.0.to_string(), partition_index(p.index));
                (tp, header.producer_id.get(), header.producer_epoch.get())
            })
        })
        .collect::<Vec<_>>();
    if batches.is_empty() {
        return HashMap::new();
    }
    super::txn::join_for_produce(server, joined, &id, batches).await
}

/// Fetch, with fetch sessions (`fetch_sessions`): a full fetch answers every partition
/// asked in the request's order; an incremental one reads every partition of its session
/// and answers those with news.
pub async fn fetch(
    server: &Rc<Server>,
    sessions: &FetchSessions,
    request: &Request,
    fetch: FetchRequest,
) -> ResponseFrame {
    let metadata = server.shard.metadata();
    let (session, parts, incremental) = match sessions.plan(request.version, &fetch, &metadata) {
        Plan::Refused(error) => {
            return super::fetch_response::encode(request.correlation_id, request.version, error, 0, Vec::new());
        }
        Plan::Full { session, parts } => (session, parts, false),
        Plan::Incremental { session, parts } => (session, parts, true),
    };
    // READ on each topic, decided once per topic.
    let mut readable: HashMap<String, bool> = HashMap::new();
    for name in parts.iter().filter_map(|p| p.name.as_ref()) {
        if !readable.contains_key(name) {
            readable.insert(name.clone(), request.caller.may_topic(server, op::READ, name));
        }
    }
    let may_read = |name: &Option<String>| name.as_ref().is_some_and(|n| readable.get(n) == Some(&true));
    // KIP-392: a leader with the rack-aware replica selector sends a consumer that names
    // its rack (v11+) to an in-sync replica in that rack, which then serves it. Consumers
    // that name no rack read from leaders only, as before.
    let selecting = server.shard.config.rack_aware_replica_selector && !fetch.rack_id.is_empty();
    let on = if request.version >= 11 && selecting { Replicas::Any } else { Replicas::Leader };
    let read_committed = fetch.isolation_level == 1;
    let elsewhere: HashMap<(String, u32), u32> = parts
        .iter()
        .filter(|p| may_read(&p.name))
        .filter_map(|p| {
            let (topic, partition) = (p.name.clone()?, partition_index(p.partition));
            let to = preferred_read_replica(server, request.version, &fetch.rack_id, &topic, partition)?;
            Some(((topic, partition), to))
        })
        .collect();
    let wanted: Vec<Wanted> = parts
        .iter()
        .filter(|p| may_read(&p.name))
        .filter_map(|p| {
            let (topic, partition) = (p.name.clone()?, partition_index(p.partition));
            if elsewhere.contains_key(&(topic.clone(), partition)) {
                return None;
            }
            Some(Wanted { topic, partition, offset: p.offset, max_bytes: p.max_bytes, read_committed, on })
        })
        .collect();
    let limits = FetchLimits {
        min_bytes: u64::try_from(fetch.min_bytes).unwrap_or(0),
        max_wait_ms: u32::try_from(fetch.max_wait_ms).unwrap_or(0),
        max_bytes: u64::try_from(fetch.max_bytes).unwrap_or(0),
    };
    let mut results = fetch_all(&server.shard, &wanted, limits).await.into_iter();
    let mut topics: Vec<FetchedTopic> = Vec::new();
    for part in parts {
        let denied = part.name.is_some() && !may_read(&part.name);
        let redirect = part.name.clone().and_then(|t| elsewhere.get(&(t, partition_index(part.partition))).copied());
        let fetched = if let (Some(to), Some(topic)) = (redirect, part.name.as_ref()) {
            redirected(server, topic, part.partition, to, read_committed).await
        } else {
            match part.name.as_ref().filter(|_| !denied).and_then(|_| results.next()) {
                Some(Ok(got)) => FetchedPartition {
                    partition: part.partition,
                    error_code: 0,
                    high_watermark: got.high_watermark.as_i64(),
                    last_stable_offset: got.last_stable_offset.as_i64(),
                    log_start_offset: got.log_start_offset.as_i64(),
                    aborted: got.aborted.iter().map(|(pid, first)| (*pid, first.as_i64())).collect(),
                    records: got.payload,
                    records_bytes: got.bytes,
                    preferred_read_replica: -1,
                },
                failure => FetchedPartition {
                    partition: part.partition,
                    error_code: match failure {
                        Some(Err(e)) => code(&e),
                        _ if denied => crate::errors::error_code(ErrorKind::TopicAuthorizationFailed).0,
                        _ => super::UNKNOWN_TOPIC_ID,
                    },
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    aborted: Vec::new(),
                    records: Vec::new(),
                    records_bytes: 0,
                    preferred_read_replica: -1,
                },
            }
        };
        if session != 0 {
            let news = sessions.has_news(request.version, session, &part, &fetched);
            if incremental && !news {
                continue;
            }
        }
        let name = part.name.unwrap_or_default();
        match topics.last_mut() {
            Some(t) if t.name == name && t.id == part.id => t.partitions.push(fetched),
            _ => topics.push(FetchedTopic { name, id: part.id, partitions: vec![fetched] }),
        }
    }
    super::fetch_response::encode(request.correlation_id, request.version, 0, session, topics)
}

/// KIP-392 on the partition's leader: the in-sync replica a consumer in rack `rack`
/// should read from instead, when the node runs the rack-aware replica selector
/// (`--replica-selector-class`), the request is v11+ and names a rack, and the leader is
/// in another rack while a live in-sync follower is in that one (the first such in the
/// ISR's order). `None`: read here.
fn preferred_read_replica(server: &Server, version: i16, rack: &str, topic: &str, partition: u32) -> Option<u32> {
    let shard = &server.shard;
    if version < 11 || rack.is_empty() || !shard.config.rack_aware_replica_selector {
        return None;
    }
    let placement = shard.placement(topic, partition);
    let me = crate::replication::NodeId(shard.config.node_id);
    if placement.leader != Some(me) {
        return None;
    }
    let view = shard.cluster_view();
    let rack_of = |n: &crate::replication::NodeId| view.endpoints.get(n).and_then(|e| e.rack.as_deref());
    if rack_of(&me) == Some(rack) {
        return None;
    }
    placement.isr.iter().find(|n| **n != me && rack_of(n) == Some(rack) && view.live.contains(n)).map(|n| n.0)
}

/// The answer for a partition a consumer should read from replica `to` (KIP-392): no
/// records, the leader's offsets, and `to` as its preferred read replica.
async fn redirected(
    server: &Rc<Server>,
    topic: &str,
    partition: i32,
    to: u32,
    read_committed: bool,
) -> FetchedPartition {
    let index = partition_index(partition);
    let offset = |timestamp| list_offset(&server.shard, topic, index, timestamp, read_committed);
    let (end, start) = (offset(-1).await, offset(-2).await);
    let at =
        |r: Result<Option<(sluice_schemas::Offset, i64)>, NodeError>| r.ok().flatten().map_or(-1, |(o, _)| o.as_i64());
    let high_watermark = at(end);
    FetchedPartition {
        partition,
        error_code: 0,
        high_watermark,
        last_stable_offset: high_watermark,
        log_start_offset: at(start),
        aborted: Vec::new(),
        records: Vec::new(),
        records_bytes: 0,
        preferred_read_replica: i32::try_from(to).unwrap_or(-1),
    }
}

pub async fn list_offsets(server: &Rc<Server>, r: &Request, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let epoch = |e: i32| if r.version >= 4 { e } else { -1 };
    let mut topics = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        let allowed = r.caller.may_topic(server, op::DESCRIBE, &name);
        let mut partitions = Vec::new();
        for p in t.partitions {
            let read_committed = r.version >= 2 && request.isolation_level == 1;
            let result = if allowed {
                list_offset(&server.shard, &name, partition_index(p.partition_index), p.timestamp, read_committed).await
            } else {
                Err(NodeError::topic_denied(&name))
            };
            let response =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index).with_timestamp(-1);
            partitions.push(match result {
                Ok(found) => response
                    .with_offset(found.map_or(-1, |(o, _)| o.as_i64()))
                    .with_timestamp(found.map_or(-1, |(_, t)| t))
                    .with_leader_epoch(epoch(0)),
                Err(e) => response.with_error_code(code(&e)).with_offset(-1),
            });
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(TopicName(text(&name))).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// Each asked partition's idempotent producers, from its leader, with the first offset
/// of each one's open transaction (-1: none). Sluice keeps no producer timestamps:
/// last_timestamp and coordinator_epoch are -1.
pub async fn describe_producers(
    server: &Rc<Server>,
    r: &Request,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
    let mut topics = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        let allowed = r.caller.may_topic(server, op::READ, &name);
        let mut partitions = Vec::new();
        for index in t.partition_indexes {
            let result = if allowed {
                crate::ops::admin::describe_producers(&server.shard, &name, partition_index(index)).await
            } else {
                Err(NodeError::topic_denied(&name))
            };
            let response = PartitionResponse::default().with_partition_index(index);
            partitions.push(match result {
                Ok(producers) => response.with_active_producers(
                    producers
                        .iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.epoch))
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(-1)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(p.current_txn_start_offset.map_or(-1, |o| o.as_i64()))
                        })
                        .collect(),
                ),
                Err(e) => response.with_error_code(code(&e)).with_error_message(Some(text(&e.message))),
            });
        }
        topics.push(TopicResponse::default().with_name(TopicName(text(&name))).with_partitions(partitions));
    }
    DescribeProducersResponse::default().with_topics(topics)
}

pub async fn delete_records(server: &Rc<Server>, r: &Request, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        let allowed = r.caller.may_topic(server, op::DELETE, &name);
        let mut partitions = Vec::new();
        for p in t.partitions {
            let result = if allowed {
                let partition = partition_index(p.partition_index);
                crate::ops::delete_records::delete_records(&server.shard, &name, partition, p.offset).await
            } else {
                Err(NodeError::topic_denied(&name))
            };
            let response = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            partitions.push(match result {
                Ok(low) => response.with_low_watermark(low.as_i64()),
                Err(e) => response.with_error_code(code(&e)).with_low_watermark(-1),
            });
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(TopicName(text(&name))).with_partitions(partitions));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
