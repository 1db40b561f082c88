//! Typed requests and responses of the native protocol, over a `Connection`.
//!
//! Each function builds one request's flatbuffers envelope, sends it and turns the
//! verified response into plain Rust values. Record batches travel in the frame
//! payload: produce copies the batches into one payload; fetch returns ranges of the
//! response frame, which `Fetched` keeps alive (no copy).

use std::ops::Range;
use std::sync::Arc;

use flatbuffers::FlatBufferBuilder;
use sluice_schemas::wire::{self, RequestBody};

use crate::connection::{Connection, Frame};
use crate::error::{ClientError, ErrorCode, Result};

fn code_result(code: wire::ErrorCode, message: Option<&str>) -> Result<()> {
    if code == wire::ErrorCode::None {
        Ok(())
    } else {
        Err(ClientError::server(code.0, message))
    }
}

fn unexpected(frame: &Frame, wanted: &str) -> ClientError {
    match frame.response().ok().and_then(|r| r.body_as_error_response()) {
        Some(e) => ClientError::server(e.error().0, e.message()),
        None => ClientError::Protocol(format!("expected a {wanted} response")),
    }
}

/// A partition as the node describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub leader: Option<u32>,
    pub replicas: Vec<u32>,
    pub isr: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct TopicInfo {
    pub name: String,
    /// `Err` when the topic does not exist (or failed).
    pub partitions: Result<Vec<PartitionInfo>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: u32,
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug)]
pub struct ClusterMetadata {
    pub nodes: Vec<NodeInfo>,
    pub controller_id: Option<u32>,
    pub topics: Vec<TopicInfo>,
}

/// Metadata of `topics`, or of every topic when `None`.
pub async fn metadata(conn: &Connection, topics: Option<&[String]>) -> Result<ClusterMetadata> {
    let topics_owned: Option<Vec<String>> = topics.map(<[String]>::to_vec);
    let frame = conn
        .request(
            RequestBody::MetadataRequest,
            move |b| {
                let topics = topics_owned.map(|t| {
                    let names: Vec<_> = t.iter().map(|n| b.create_string(n)).collect();
                    b.create_vector(&names)
                });
                wire::MetadataRequest::create(b, &wire::MetadataRequestArgs { topics }).as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let m = response.body_as_metadata_response().ok_or_else(|| unexpected(&frame, "Metadata"))?;
    let nodes = m
        .nodes()
        .iter()
        .flatten()
        .map(|n| NodeInfo { node_id: n.node_id(), host: n.host().unwrap_or("").to_string(), port: n.port() })
        .collect();
    let topics = m
        .topics()
        .iter()
        .flatten()
        .map(|t| TopicInfo {
            name: t.name().unwrap_or("").to_string(),
            partitions: code_result(t.error(), t.message()).map(|()| {
                t.partitions()
                    .iter()
                    .flatten()
                    .map(|p| PartitionInfo {
                        partition: p.partition(),
                        leader: u32::try_from(p.leader()).ok(),
                        replicas: p.replicas().map(|r| r.iter().collect()).unwrap_or_default(),
                        isr: p.isr().map(|r| r.iter().collect()).unwrap_or_default(),
                    })
                    .collect()
            }),
        })
        .collect();
    Ok(ClusterMetadata { nodes, controller_id: u32::try_from(m.controller_id()).ok(), topics })
}

/// A topic to create.
#[derive(Clone, Debug, Default)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub configs: Vec<(String, String)>,
}

fn config_entries<'b>(
    b: &mut FlatBufferBuilder<'b>,
    configs: &[(String, String)],
) -> flatbuffers::WIPOffset<flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<wire::ConfigEntry<'b>>>> {
    let entries: Vec<_> = configs
        .iter()
        .map(|(k, v)| {
            let key = b.create_string(k);
            let value = b.create_string(v);
            wire::ConfigEntry::create(
                b,
                &wire::ConfigEntryArgs { key: Some(key), value: Some(value), is_default: false },
            )
        })
        .collect();
    b.create_vector(&entries)
}

fn topic_results(
    results: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<wire::TopicResult<'_>>>>,
) -> Vec<(String, Result<()>)> {
    results
        .iter()
        .flatten()
        .map(|r| (r.name().unwrap_or("").to_string(), code_result(r.error(), r.message())))
        .collect()
}

/// Creates topics; one result per topic.
pub async fn create_topics(
    conn: &Connection,
    topics: &[NewTopic],
    validate_only: bool,
) -> Result<Vec<(String, Result<()>)>> {
    let topics = topics.to_vec();
    let frame = conn
        .request(
            RequestBody::CreateTopicsRequest,
            move |b| {
                let items: Vec<_> = topics
                    .iter()
                    .map(|t| {
                        let name = b.create_string(&t.name);
                        let configs = config_entries(b, &t.configs);
                        wire::CreatableTopic::create(
                            b,
                            &wire::CreatableTopicArgs {
                                name: Some(name),
                                partitions: t.partitions,
                                replication_factor: t.replication_factor.max(1),
                                configs: Some(configs),
                            },
                        )
                    })
                    .collect();
                let topics = b.create_vector(&items);
                wire::CreateTopicsRequest::create(
                    b,
                    &wire::CreateTopicsRequestArgs { topics: Some(topics), timeout_ms: 30_000, validate_only },
                )
                .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_create_topics_response().ok_or_else(|| unexpected(&frame, "CreateTopics"))?;
    Ok(topic_results(r.results()))
}

pub async fn delete_topics(conn: &Connection, names: &[String]) -> Result<Vec<(String, Result<()>)>> {
    let names = names.to_vec();
    let frame = conn
        .request(
            RequestBody::DeleteTopicsRequest,
            move |b| {
                let items: Vec<_> = names.iter().map(|n| b.create_string(n)).collect();
                let names = b.create_vector(&items);
                wire::DeleteTopicsRequest::create(
                    b,
                    &wire::DeleteTopicsRequestArgs { names: Some(names), timeout_ms: 30_000 },
                )
                .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_delete_topics_response().ok_or_else(|| unexpected(&frame, "DeleteTopics"))?;
    Ok(topic_results(r.results()))
}

/// Grows topics to new partition counts.
pub async fn create_partitions(conn: &Connection, topics: &[(String, u32)]) -> Result<Vec<(String, Result<()>)>> {
    let topics = topics.to_vec();
    let frame = conn
        .request(
            RequestBody::CreatePartitionsRequest,
            move |b| {
                let items: Vec<_> = topics
                    .iter()
                    .map(|(name, count)| {
                        let topic = b.create_string(name);
                        wire::PartitionsIncrease::create(
                            b,
                            &wire::PartitionsIncreaseArgs { topic: Some(topic), count: *count },
                        )
                    })
                    .collect();
                let topics = b.create_vector(&items);
                wire::CreatePartitionsRequest::create(
                    b,
                    &wire::CreatePartitionsRequestArgs {
                        topics: Some(topics),
                        timeout_ms: 30_000,
                        validate_only: false,
                    },
                )
                .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_create_partitions_response().ok_or_else(|| unexpected(&frame, "CreatePartitions"))?;
    Ok(topic_results(r.results()))
}

/// One config of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigValue {
    pub key: String,
    pub value: String,
    pub is_default: bool,
}

pub async fn describe_configs(conn: &Connection, topics: &[String]) -> Result<Vec<(String, Result<Vec<ConfigValue>>)>> {
    let topics = topics.to_vec();
    let frame = conn
        .request(
            RequestBody::DescribeConfigsRequest,
            move |b| {
                let items: Vec<_> = topics.iter().map(|n| b.create_string(n)).collect();
                let topics = b.create_vector(&items);
                wire::DescribeConfigsRequest::create(b, &wire::DescribeConfigsRequestArgs { topics: Some(topics) })
                    .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_describe_configs_response().ok_or_else(|| unexpected(&frame, "DescribeConfigs"))?;
    Ok(r.results()
        .iter()
        .flatten()
        .map(|t| {
            let configs = code_result(t.error(), t.message()).map(|()| {
                t.configs()
                    .iter()
                    .flatten()
                    .map(|c| ConfigValue {
                        key: c.key().unwrap_or("").to_string(),
                        value: c.value().unwrap_or("").to_string(),
                        is_default: c.is_default(),
                    })
                    .collect()
            });
            (t.name().unwrap_or("").to_string(), configs)
        })
        .collect())
}

/// Sets and deletes (returns to the default) configs of one topic.
pub async fn alter_configs(
    conn: &Connection,
    topic: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<Result<()>> {
    let (topic, set, delete) = (topic.to_string(), set.to_vec(), delete.to_vec());
    let frame = conn
        .request(
            RequestBody::AlterConfigsRequest,
            move |b| {
                let name = b.create_string(&topic);
                let set = config_entries(b, &set);
                let items: Vec<_> = delete.iter().map(|k| b.create_string(k)).collect();
                let delete = b.create_vector(&items);
                let change = wire::TopicConfigChange::create(
                    b,
                    &wire::TopicConfigChangeArgs { name: Some(name), set: Some(set), delete: Some(delete) },
                );
                let topics = b.create_vector(&[change]);
                wire::AlterConfigsRequest::create(
                    b,
                    &wire::AlterConfigsRequestArgs { topics: Some(topics), validate_only: false },
                )
                .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_alter_configs_response().ok_or_else(|| unexpected(&frame, "AlterConfigs"))?;
    Ok(topic_results(r.results()).into_iter().next().map_or(Ok(()), |(_, r)| r))
}

/// Batches for one partition in a produce request.
#[derive(Clone, Debug)]
pub struct PartitionBatches<'a> {
    pub topic: &'a str,
    pub partition: u32,
    /// One or more whole record batches.
    pub batches: &'a [u8],
}

/// The outcome of one partition of a produce request.
#[derive(Clone, Debug)]
pub struct ProduceOutcome {
    pub topic: String,
    pub partition: u32,
    /// The offset of the first record of the partition's batches.
    pub base_offset: Result<u64>,
}

/// Produces batches to partitions; with `acks` 0 returns no outcomes (no response).
pub async fn produce(
    conn: &Connection,
    acks: i16,
    timeout_ms: u32,
    parts: &[PartitionBatches<'_>],
) -> Result<Vec<ProduceOutcome>> {
    // Topics in order of first appearance, each with its partitions and payload slices
    // (partition, offset, length).
    type Slices = Vec<(u32, u32, u32)>;
    let mut payload = Vec::with_capacity(parts.iter().map(|p| p.batches.len()).sum());
    let mut layout: Vec<(String, Slices)> = Vec::new();
    for p in parts {
        let offset = u32::try_from(payload.len()).map_err(|_| ClientError::Protocol("request too large".into()))?;
        payload.extend_from_slice(p.batches);
        let entry = (p.partition, offset, p.batches.len() as u32);
        match layout.iter_mut().find(|(t, _)| t == p.topic) {
            Some((_, list)) => list.push(entry),
            None => layout.push((p.topic.to_string(), vec![entry])),
        }
    }
    let build = move |b: &mut FlatBufferBuilder<'static>| {
        let topics: Vec<_> = layout
            .iter()
            .map(|(topic, partitions)| {
                let items: Vec<_> = partitions
                    .iter()
                    .map(|&(partition, offset, length)| {
                        wire::PartitionProduce::create(
                            b,
                            &wire::PartitionProduceArgs { partition, records: Some(&wire::Slice::new(offset, length)) },
                        )
                    })
                    .collect();
                let partitions = b.create_vector(&items);
                let topic = b.create_string(topic);
                wire::TopicProduce::create(
                    b,
                    &wire::TopicProduceArgs { topic: Some(topic), partitions: Some(partitions) },
                )
            })
            .collect();
        let topics = b.create_vector(&topics);
        wire::ProduceRequest::create(b, &wire::ProduceRequestArgs { acks, timeout_ms, topics: Some(topics) })
            .as_union_value()
    };
    if acks == 0 {
        conn.send_only(RequestBody::ProduceRequest, build, &payload).await?;
        return Ok(Vec::new());
    }
    let frame = conn.request(RequestBody::ProduceRequest, build, &payload).await?;
    let response = frame.response()?;
    let r = response.body_as_produce_response().ok_or_else(|| unexpected(&frame, "Produce"))?;
    let mut outcomes = Vec::new();
    for t in r.topics().iter().flatten() {
        let topic = t.topic().unwrap_or("").to_string();
        for p in t.partitions().iter().flatten() {
            let base_offset = code_result(p.error(), p.message()).and_then(|()| {
                u64::try_from(p.base_offset()).map_err(|_| ClientError::Protocol("negative base offset".into()))
            });
            outcomes.push(ProduceOutcome { topic: topic.clone(), partition: p.partition(), base_offset });
        }
    }
    Ok(outcomes)
}

/// One partition to fetch.
#[derive(Clone, Debug)]
pub struct FetchPartition {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: u32,
}

/// The outcome of one partition of a fetch: its record batches (a range of the shared
/// response frame) and watermarks.
#[derive(Clone, Debug)]
pub struct FetchedPartition {
    pub topic: String,
    pub partition: u32,
    pub result: Result<FetchedData>,
}

#[derive(Clone, Debug)]
pub struct FetchedData {
    pub high_watermark: u64,
    pub log_start_offset: u64,
    frame: Arc<Frame>,
    records: Range<usize>,
}

impl FetchedData {
    /// Whole record batches, as stored.
    #[must_use]
    pub fn records(&self) -> &[u8] {
        &self.frame.payload()[self.records.clone()]
    }
}

/// Fetch settings of a request.
#[derive(Clone, Copy, Debug)]
pub struct FetchLimits {
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    pub max_bytes: u32,
}

pub async fn fetch(conn: &Connection, limits: FetchLimits, parts: &[FetchPartition]) -> Result<Vec<FetchedPartition>> {
    let parts_owned = parts.to_vec();
    let frame = conn
        .request(
            RequestBody::FetchRequest,
            move |b| {
                let mut topics: Vec<(String, Vec<&FetchPartition>)> = Vec::new();
                for p in &parts_owned {
                    match topics.iter_mut().find(|(t, _)| *t == p.topic) {
                        Some((_, list)) => list.push(p),
                        None => topics.push((p.topic.clone(), vec![p])),
                    }
                }
                let topics: Vec<_> = topics
                    .iter()
                    .map(|(topic, list)| {
                        let items: Vec<_> = list
                            .iter()
                            .map(|p| {
                                wire::PartitionFetch::create(
                                    b,
                                    &wire::PartitionFetchArgs {
                                        partition: p.partition,
                                        fetch_offset: p.offset as i64,
                                        max_bytes: p.max_bytes,
                                    },
                                )
                            })
                            .collect();
                        let partitions = b.create_vector(&items);
                        let topic = b.create_string(topic);
                        wire::TopicFetch::create(
                            b,
                            &wire::TopicFetchArgs { topic: Some(topic), partitions: Some(partitions) },
                        )
                    })
                    .collect();
                let topics = b.create_vector(&topics);
                wire::FetchRequest::create(
                    b,
                    &wire::FetchRequestArgs {
                        max_wait_ms: limits.max_wait_ms,
                        min_bytes: limits.min_bytes,
                        max_bytes: limits.max_bytes,
                        topics: Some(topics),
                    },
                )
                .as_union_value()
            },
            &[],
        )
        .await?;
    let frame = Arc::new(frame);
    let response = frame.response()?;
    let r = response.body_as_fetch_response().ok_or_else(|| unexpected(&frame, "Fetch"))?;
    let payload_bytes = frame.payload().len();
    let mut out = Vec::new();
    for t in r.topics().iter().flatten() {
        let topic = t.topic().unwrap_or("").to_string();
        for p in t.partitions().iter().flatten() {
            let result = code_result(p.error(), p.message()).and_then(|()| {
                let slice = p.records().copied().unwrap_or_else(|| wire::Slice::new(0, 0));
                let start = slice.offset() as usize;
                let end = start + slice.length() as usize;
                if end > payload_bytes {
                    return Err(ClientError::Protocol(format!(
                        "fetch slice {start}..{end} beyond {payload_bytes} bytes"
                    )));
                }
                Ok(FetchedData {
                    high_watermark: u64::try_from(p.high_watermark()).unwrap_or(0),
                    log_start_offset: u64::try_from(p.log_start_offset()).unwrap_or(0),
                    frame: frame.clone(),
                    records: start..end,
                })
            });
            out.push(FetchedPartition { topic: topic.clone(), partition: p.partition(), result });
        }
    }
    Ok(out)
}

/// ListOffsets query: the log end.
pub const LATEST: i64 = -1;
/// ListOffsets query: the log start.
pub const EARLIEST: i64 = -2;

/// The offset for `timestamp` (`LATEST`, `EARLIEST` or ms since the epoch) of each
/// partition; `None` when no record is that recent.
pub async fn list_offsets(
    conn: &Connection,
    parts: &[(String, u32, i64)],
) -> Result<Vec<(String, u32, Result<Option<u64>>)>> {
    let parts_owned = parts.to_vec();
    let frame = conn
        .request(
            RequestBody::ListOffsetsRequest,
            move |b| {
                let topics: Vec<_> = parts_owned
                    .iter()
                    .map(|(topic, partition, timestamp)| {
                        let p = wire::PartitionListOffsets::create(
                            b,
                            &wire::PartitionListOffsetsArgs { partition: *partition, timestamp: *timestamp },
                        );
                        let partitions = b.create_vector(&[p]);
                        let topic = b.create_string(topic);
                        wire::TopicListOffsets::create(
                            b,
                            &wire::TopicListOffsetsArgs { topic: Some(topic), partitions: Some(partitions) },
                        )
                    })
                    .collect();
                let topics = b.create_vector(&topics);
                wire::ListOffsetsRequest::create(b, &wire::ListOffsetsRequestArgs { topics: Some(topics) })
                    .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_list_offsets_response().ok_or_else(|| unexpected(&frame, "ListOffsets"))?;
    let mut out = Vec::new();
    for t in r.topics().iter().flatten() {
        let topic = t.topic().unwrap_or("").to_string();
        for p in t.partitions().iter().flatten() {
            let result = code_result(p.error(), p.message()).map(|()| u64::try_from(p.offset()).ok());
            out.push((topic.clone(), p.partition(), result));
        }
    }
    Ok(out)
}

/// The server's error code of a failed result, for callers that branch on it.
#[must_use]
pub fn error_code(e: &ClientError) -> Option<ErrorCode> {
    match e {
        ClientError::Server { code, .. } => Some(*code),
        _ => None,
    }
}

// Consumer groups -----------------------------------------------------------------------

/// A member's place in its group after a join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    pub generation: i32,
    pub member_id: String,
    pub leader_id: String,
    pub assignment: Vec<(String, u32)>,
}

fn pairs_of(
    list: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<wire::TopicPartitions<'_>>>>,
) -> Vec<(String, u32)> {
    list.iter()
        .flatten()
        .flat_map(|t| {
            let topic = t.topic().unwrap_or("").to_string();
            t.partitions()
                .map(|p| p.iter().collect::<Vec<u32>>())
                .unwrap_or_default()
                .into_iter()
                .map(move |p| (topic.clone(), p))
        })
        .collect()
}

/// Joins (or rejoins) a group; resolves when the rebalance completes.
#[allow(clippy::too_many_arguments)]
pub async fn join_group(
    conn: &Connection,
    group: &str,
    member_id: &str,
    session_timeout_ms: u32,
    rebalance_timeout_ms: u32,
    topics: &[String],
    strategy: &str,
) -> Result<Joined> {
    let (group, member_id, topics, strategy) =
        (group.to_string(), member_id.to_string(), topics.to_vec(), strategy.to_string());
    let frame = conn
        .request(
            RequestBody::JoinGroupRequest,
            move |b| {
                let group_id = b.create_string(&group);
                let member_id = b.create_string(&member_id);
                let names: Vec<_> = topics.iter().map(|t| b.create_string(t)).collect();
                let topics = b.create_vector(&names);
                let strategy = b.create_string(&strategy);
                wire::JoinGroupRequest::create(
                    b,
                    &wire::JoinGroupRequestArgs {
                        group_id: Some(group_id),
                        member_id: Some(member_id),
                        session_timeout_ms,
                        rebalance_timeout_ms,
                        topics: Some(topics),
                        strategy: Some(strategy),
                    },
                )
                .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_join_group_response().ok_or_else(|| unexpected(&frame, "JoinGroup"))?;
    code_result(r.error(), r.message())?;
    Ok(Joined {
        generation: r.generation(),
        member_id: r.member_id().unwrap_or("").to_string(),
        leader_id: r.leader_id().unwrap_or("").to_string(),
        assignment: pairs_of(r.assignment()),
    })
}

pub async fn heartbeat(conn: &Connection, group: &str, member_id: &str, generation: i32) -> Result<()> {
    let (group, member_id) = (group.to_string(), member_id.to_string());
    let frame = conn
        .request(
            RequestBody::HeartbeatRequest,
            move |b| {
                let group_id = b.create_string(&group);
                let member_id = b.create_string(&member_id);
                wire::HeartbeatRequest::create(
                    b,
                    &wire::HeartbeatRequestArgs { group_id: Some(group_id), member_id: Some(member_id), generation },
                )
                .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_heartbeat_response().ok_or_else(|| unexpected(&frame, "Heartbeat"))?;
    code_result(r.error(), r.message())
}

pub async fn leave_group(conn: &Connection, group: &str, member_id: &str) -> Result<()> {
    let (group, member_id) = (group.to_string(), member_id.to_string());
    let frame = conn
        .request(
            RequestBody::LeaveGroupRequest,
            move |b| {
                let group_id = b.create_string(&group);
                let member_id = b.create_string(&member_id);
                wire::LeaveGroupRequest::create(
                    b,
                    &wire::LeaveGroupRequestArgs { group_id: Some(group_id), member_id: Some(member_id) },
                )
                .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_leave_group_response().ok_or_else(|| unexpected(&frame, "LeaveGroup"))?;
    code_result(r.error(), r.message())
}

/// One offset to commit: (topic, partition, offset, metadata).
pub type CommitOffset = (String, u32, u64, String);

/// Commits offsets for a group member (`member_id` empty and `generation` -1: an admin
/// commit, accepted only while the group has no members). Per-partition results.
pub async fn commit_offsets(
    conn: &Connection,
    group: &str,
    member_id: &str,
    generation: i32,
    offsets: &[CommitOffset],
) -> Result<Vec<(String, u32, Result<()>)>> {
    let (group, member_id, offsets) = (group.to_string(), member_id.to_string(), offsets.to_vec());
    let frame = conn
        .request(
            RequestBody::OffsetCommitRequest,
            move |b| {
                let mut topics: Vec<(String, Vec<&CommitOffset>)> = Vec::new();
                for o in &offsets {
                    match topics.iter_mut().find(|(t, _)| *t == o.0) {
                        Some((_, list)) => list.push(o),
                        None => topics.push((o.0.clone(), vec![o])),
                    }
                }
                let topics: Vec<_> = topics
                    .iter()
                    .map(|(topic, list)| {
                        let items: Vec<_> = list
                            .iter()
                            .map(|(_, p, offset, metadata)| {
                                let metadata = b.create_string(metadata);
                                wire::OffsetCommitPartition::create(
                                    b,
                                    &wire::OffsetCommitPartitionArgs {
                                        partition: *p,
                                        offset: *offset as i64,
                                        metadata: Some(metadata),
                                    },
                                )
                            })
                            .collect();
                        let partitions = b.create_vector(&items);
                        let topic = b.create_string(topic);
                        wire::OffsetCommitTopic::create(
                            b,
                            &wire::OffsetCommitTopicArgs { topic: Some(topic), partitions: Some(partitions) },
                        )
                    })
                    .collect();
                let topics = b.create_vector(&topics);
                let group_id = b.create_string(&group);
                let member_id = b.create_string(&member_id);
                wire::OffsetCommitRequest::create(
                    b,
                    &wire::OffsetCommitRequestArgs {
                        group_id: Some(group_id),
                        member_id: Some(member_id),
                        generation,
                        topics: Some(topics),
                    },
                )
                .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_offset_commit_response().ok_or_else(|| unexpected(&frame, "OffsetCommit"))?;
    code_result(r.error(), r.message())?;
    let mut out = Vec::new();
    for t in r.topics().iter().flatten() {
        for p in t.partitions().iter().flatten() {
            out.push((t.topic().unwrap_or("").to_string(), p.partition(), code_result(p.error(), p.message())));
        }
    }
    Ok(out)
}

/// Committed offsets of a group: of `partitions`, or all when `None`. `None` offset:
/// nothing committed.
pub async fn fetch_offsets(
    conn: &Connection,
    group: &str,
    partitions: Option<&[(String, u32)]>,
) -> Result<Vec<(String, u32, Option<u64>, String)>> {
    let (group, partitions) = (group.to_string(), partitions.map(<[(String, u32)]>::to_vec));
    let frame = conn
        .request(
            RequestBody::OffsetFetchRequest,
            move |b| {
                let topics = partitions.map(|list| {
                    let mut topics: Vec<(String, Vec<u32>)> = Vec::new();
                    for (t, p) in &list {
                        match topics.iter_mut().find(|(name, _)| name == t) {
                            Some((_, ps)) => ps.push(*p),
                            None => topics.push((t.clone(), vec![*p])),
                        }
                    }
                    let items: Vec<_> = topics
                        .iter()
                        .map(|(t, ps)| {
                            let topic = b.create_string(t);
                            let partitions = b.create_vector(ps);
                            wire::TopicPartitions::create(
                                b,
                                &wire::TopicPartitionsArgs { topic: Some(topic), partitions: Some(partitions) },
                            )
                        })
                        .collect();
                    b.create_vector(&items)
                });
                let group_id = b.create_string(&group);
                wire::OffsetFetchRequest::create(b, &wire::OffsetFetchRequestArgs { group_id: Some(group_id), topics })
                    .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_offset_fetch_response().ok_or_else(|| unexpected(&frame, "OffsetFetch"))?;
    code_result(r.error(), r.message())?;
    let mut out = Vec::new();
    for t in r.topics().iter().flatten() {
        for p in t.partitions().iter().flatten() {
            out.push((
                t.topic().unwrap_or("").to_string(),
                p.partition(),
                u64::try_from(p.offset()).ok(),
                p.metadata().unwrap_or("").to_string(),
            ));
        }
    }
    Ok(out)
}

/// (group id, state, members) of every group.
pub async fn list_groups(conn: &Connection) -> Result<Vec<(String, String, u32)>> {
    let frame = conn
        .request(
            RequestBody::ListGroupsRequest,
            |b| wire::ListGroupsRequest::create(b, &wire::ListGroupsRequestArgs {}).as_union_value(),
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_list_groups_response().ok_or_else(|| unexpected(&frame, "ListGroups"))?;
    Ok(r.groups()
        .iter()
        .flatten()
        .map(|g| (g.group_id().unwrap_or("").to_string(), g.state().unwrap_or("").to_string(), g.members()))
        .collect())
}

/// A group's members and their assignments.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    pub group: String,
    pub state: String,
    pub strategy: String,
    pub generation: i32,
    pub members: Vec<MemberInfo>,
}

/// A member of a group as the coordinator describes it.
#[derive(Clone, Debug)]
pub struct MemberInfo {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Vec<(String, u32)>,
}

pub async fn describe_group(conn: &Connection, group: &str) -> Result<GroupInfo> {
    let group_owned = group.to_string();
    let frame = conn
        .request(
            RequestBody::DescribeGroupsRequest,
            move |b| {
                let id = b.create_string(&group_owned);
                let ids = b.create_vector(&[id]);
                wire::DescribeGroupsRequest::create(b, &wire::DescribeGroupsRequestArgs { group_ids: Some(ids) })
                    .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_describe_groups_response().ok_or_else(|| unexpected(&frame, "DescribeGroups"))?;
    let g = r
        .groups()
        .and_then(|g| g.iter().next())
        .ok_or_else(|| ClientError::Protocol("empty DescribeGroups response".into()))?;
    code_result(g.error(), g.message())?;
    Ok(GroupInfo {
        group: g.group_id().unwrap_or("").to_string(),
        state: g.state().unwrap_or("").to_string(),
        strategy: g.strategy().unwrap_or("").to_string(),
        generation: g.generation(),
        members: g
            .members()
            .iter()
            .flatten()
            .map(|m| MemberInfo {
                member_id: m.member_id().unwrap_or("").to_string(),
                client_id: m.client_id().unwrap_or("").to_string(),
                client_host: m.client_host().unwrap_or("").to_string(),
                assignment: pairs_of(m.assignment()),
            })
            .collect(),
    })
}

pub async fn delete_group(conn: &Connection, group: &str) -> Result<()> {
    let group_owned = group.to_string();
    let frame = conn
        .request(
            RequestBody::DeleteGroupsRequest,
            move |b| {
                let id = b.create_string(&group_owned);
                let ids = b.create_vector(&[id]);
                wire::DeleteGroupsRequest::create(b, &wire::DeleteGroupsRequestArgs { group_ids: Some(ids) })
                    .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_delete_groups_response().ok_or_else(|| unexpected(&frame, "DeleteGroups"))?;
    topic_results(r.results()).into_iter().next().map_or(Ok(()), |(_, r)| r)
}

/// Moves partitions' log starts forward: (topic, partition, new start or -1 for the log
/// end). Returns each partition's log start afterwards.
pub async fn delete_records(
    conn: &Connection,
    parts: &[(String, u32, i64)],
) -> Result<Vec<(String, u32, Result<u64>)>> {
    let parts_owned = parts.to_vec();
    let frame = conn
        .request(
            RequestBody::DeleteRecordsRequest,
            move |b| {
                let topics: Vec<_> = parts_owned
                    .iter()
                    .map(|(topic, partition, offset)| {
                        let p = wire::PartitionOffset::create(
                            b,
                            &wire::PartitionOffsetArgs { partition: *partition, offset: *offset },
                        );
                        let partitions = b.create_vector(&[p]);
                        let topic = b.create_string(topic);
                        wire::TopicDeleteRecords::create(
                            b,
                            &wire::TopicDeleteRecordsArgs { topic: Some(topic), partitions: Some(partitions) },
                        )
                    })
                    .collect();
                let topics = b.create_vector(&topics);
                wire::DeleteRecordsRequest::create(
                    b,
                    &wire::DeleteRecordsRequestArgs { topics: Some(topics), timeout_ms: 30_000 },
                )
                .as_union_value()
            },
            &[],
        )
        .await?;
    let response = frame.response()?;
    let r = response.body_as_delete_records_response().ok_or_else(|| unexpected(&frame, "DeleteRecords"))?;
    let mut out = Vec::new();
    for t in r.topics().iter().flatten() {
        let topic = t.topic().unwrap_or("").to_string();
        for p in t.partitions().iter().flatten() {
            let result = code_result(p.error(), p.message()).map(|()| u64::try_from(p.low_watermark()).unwrap_or(0));
            out.push((topic.clone(), p.partition(), result));
        }
    }
    Ok(out)
}
