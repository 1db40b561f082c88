//! Typed requests and responses of the native protocol, over a `Connection`.
//!
//! Each API has three functions: `encode_x` writes the request's body into a flatbuffers
//! builder, `decode_x` turns the verified response frame into plain Rust values, and the
//! async `x` sends the one and reads the other over a `Connection`. The encoders and
//! decoders do no I/O and are public, so a client with other I/O (the integration tests'
//! blocking one, which also sends malformed frames) speaks the protocol through the same
//! code. Record batches travel in the frame payload: produce copies the batches into one
//! payload (`ProduceLayout`); fetch returns ranges of the response frame, which
//! `FetchedData` keeps alive (no copy).

use std::ops::Range;
use std::sync::Arc;

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use sluice_schemas::wire::{self, RequestBody};

use crate::acl::{Acl, AclFilter};
use crate::connection::{Connection, Frame, PendingResponse};
use crate::error::{ClientError, ErrorCode, Result};

/// A request body written into a builder, ready for its envelope (`wire::finish_request`).
pub type EncodedBody = WIPOffset<UnionWIPOffset>;

/// A vector of tables or strings in a builder.
type Offsets<'b, T> = WIPOffset<flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<T>>>;

/// `names` as a vector of strings.
fn strings<'b>(b: &mut FlatBufferBuilder<'b>, names: &[impl AsRef<str>]) -> Offsets<'b, &'b str> {
    let items: Vec<_> = names.iter().map(|n| b.create_string(n.as_ref())).collect();
    b.create_vector(&items)
}

/// A string a request may carry.
type Name<'b> = Option<WIPOffset<&'b str>>;

/// A group member's names as a request carries them: (group id, member id).
fn member_names<'b>(b: &mut FlatBufferBuilder<'b>, group: &str, member_id: &str) -> (Name<'b>, Name<'b>) {
    (Some(b.create_string(group)), Some(b.create_string(member_id)))
}

/// `items` grouped by topic: topics in order of first appearance, each one's items in the
/// order given.
fn by_topic<'a, T>(items: &'a [T], topic_of: impl Fn(&'a T) -> &'a str) -> Vec<(&'a str, Vec<&'a T>)> {
    let mut topics: Vec<(&str, Vec<&T>)> = Vec::new();
    for item in items {
        let topic = topic_of(item);
        match topics.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, list)) => list.push(item),
            None => topics.push((topic, vec![item])),
        }
    }
    topics
}

/// The vector of a request's per-topic tables: for each topic, its partitions' tables
/// (`partition` writes one), then the topic's table (`topic`, from its name and that
/// vector).
fn topic_tables<'b, T, P: 'b, Q: 'b>(
    b: &mut FlatBufferBuilder<'b>,
    topics: &[(impl AsRef<str>, Vec<T>)],
    mut partition: impl FnMut(&mut FlatBufferBuilder<'b>, &T) -> WIPOffset<P>,
    mut topic: impl FnMut(&mut FlatBufferBuilder<'b>, WIPOffset<&'b str>, Offsets<'b, P>) -> WIPOffset<Q>,
) -> Offsets<'b, Q> {
    let tables: Vec<_> = topics
        .iter()
        .map(|(name, items)| {
            let partitions: Vec<_> = items.iter().map(|item| partition(b, item)).collect();
            let partitions = b.create_vector(&partitions);
            let name = b.create_string(name.as_ref());
            topic(b, name, partitions)
        })
        .collect();
    b.create_vector(&tables)
}

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
    /// Its rack, if it has one.
    pub rack: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ClusterMetadata {
    pub nodes: Vec<NodeInfo>,
    pub controller_id: Option<u32>,
    pub topics: Vec<TopicInfo>,
}

pub fn encode_metadata(b: &mut FlatBufferBuilder<'_>, topics: Option<&[impl AsRef<str>]>) -> EncodedBody {
    let topics = topics.map(|t| strings(b, t));
    wire::MetadataRequest::create(b, &wire::MetadataRequestArgs { topics }).as_union_value()
}

pub fn decode_metadata(frame: &Frame) -> Result<ClusterMetadata> {
    let response = frame.response()?;
    let m = response.body_as_metadata_response().ok_or_else(|| unexpected(frame, "Metadata"))?;
    let nodes = m
        .nodes()
        .iter()
        .flatten()
        .map(|n| NodeInfo {
            node_id: n.node_id(),
            host: n.host().unwrap_or("").to_string(),
            port: n.port(),
            rack: n.rack().map(str::to_string),
        })
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

/// Metadata of `topics`, or of every topic when `None`.
pub async fn metadata(conn: &Connection, topics: Option<&[String]>) -> Result<ClusterMetadata> {
    let frame = conn.request(RequestBody::MetadataRequest, |b| encode_metadata(b, topics), &[]).await?;
    decode_metadata(&frame)
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
    configs: &[(impl AsRef<str>, impl AsRef<str>)],
) -> Offsets<'b, wire::ConfigEntry<'b>> {
    let entries: Vec<_> = configs
        .iter()
        .map(|(k, v)| {
            let key = b.create_string(k.as_ref());
            let value = b.create_string(v.as_ref());
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

pub fn encode_create_topics(b: &mut FlatBufferBuilder<'_>, topics: &[NewTopic], validate_only: bool) -> EncodedBody {
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
}

pub fn decode_create_topics(frame: &Frame) -> Result<Vec<(String, Result<()>)>> {
    let response = frame.response()?;
    let r = response.body_as_create_topics_response().ok_or_else(|| unexpected(frame, "CreateTopics"))?;
    Ok(topic_results(r.results()))
}

/// Creates topics; one result per topic.
pub async fn create_topics(
    conn: &Connection,
    topics: &[NewTopic],
    validate_only: bool,
) -> Result<Vec<(String, Result<()>)>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_create_topics(b, topics, validate_only);
    decode_create_topics(&conn.request(RequestBody::CreateTopicsRequest, build, &[]).await?)
}

pub fn encode_delete_topics(b: &mut FlatBufferBuilder<'_>, names: &[impl AsRef<str>]) -> EncodedBody {
    let names = strings(b, names);
    wire::DeleteTopicsRequest::create(b, &wire::DeleteTopicsRequestArgs { names: Some(names), timeout_ms: 30_000 })
        .as_union_value()
}

pub fn decode_delete_topics(frame: &Frame) -> Result<Vec<(String, Result<()>)>> {
    let response = frame.response()?;
    let r = response.body_as_delete_topics_response().ok_or_else(|| unexpected(frame, "DeleteTopics"))?;
    Ok(topic_results(r.results()))
}

pub async fn delete_topics(conn: &Connection, names: &[String]) -> Result<Vec<(String, Result<()>)>> {
    decode_delete_topics(
        &conn.request(RequestBody::DeleteTopicsRequest, |b| encode_delete_topics(b, names), &[]).await?,
    )
}

pub fn encode_create_partitions(b: &mut FlatBufferBuilder<'_>, topics: &[(impl AsRef<str>, u32)]) -> EncodedBody {
    let items: Vec<_> = topics
        .iter()
        .map(|(name, count)| {
            let topic = b.create_string(name.as_ref());
            wire::PartitionsIncrease::create(b, &wire::PartitionsIncreaseArgs { topic: Some(topic), count: *count })
        })
        .collect();
    let topics = b.create_vector(&items);
    wire::CreatePartitionsRequest::create(
        b,
        &wire::CreatePartitionsRequestArgs { topics: Some(topics), timeout_ms: 30_000, validate_only: false },
    )
    .as_union_value()
}

pub fn decode_create_partitions(frame: &Frame) -> Result<Vec<(String, Result<()>)>> {
    let response = frame.response()?;
    let r = response.body_as_create_partitions_response().ok_or_else(|| unexpected(frame, "CreatePartitions"))?;
    Ok(topic_results(r.results()))
}

/// Grows topics to new partition counts.
pub async fn create_partitions(conn: &Connection, topics: &[(String, u32)]) -> Result<Vec<(String, Result<()>)>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_create_partitions(b, topics);
    decode_create_partitions(&conn.request(RequestBody::CreatePartitionsRequest, build, &[]).await?)
}

/// One config of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigValue {
    pub key: String,
    pub value: String,
    pub is_default: bool,
}

/// The configs of each topic.
pub type TopicConfigs = Vec<(String, Result<Vec<ConfigValue>>)>;

pub fn encode_describe_configs(b: &mut FlatBufferBuilder<'_>, topics: &[impl AsRef<str>]) -> EncodedBody {
    let topics = strings(b, topics);
    wire::DescribeConfigsRequest::create(b, &wire::DescribeConfigsRequestArgs { topics: Some(topics) }).as_union_value()
}

pub fn decode_describe_configs(frame: &Frame) -> Result<TopicConfigs> {
    let response = frame.response()?;
    let r = response.body_as_describe_configs_response().ok_or_else(|| unexpected(frame, "DescribeConfigs"))?;
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

pub async fn describe_configs(conn: &Connection, topics: &[String]) -> Result<TopicConfigs> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_describe_configs(b, topics);
    decode_describe_configs(&conn.request(RequestBody::DescribeConfigsRequest, build, &[]).await?)
}

pub fn encode_alter_configs(
    b: &mut FlatBufferBuilder<'_>,
    topic: &str,
    set: &[(impl AsRef<str>, impl AsRef<str>)],
    delete: &[impl AsRef<str>],
) -> EncodedBody {
    let name = b.create_string(topic);
    let set = config_entries(b, set);
    let delete = strings(b, delete);
    let change = wire::TopicConfigChange::create(
        b,
        &wire::TopicConfigChangeArgs { name: Some(name), set: Some(set), delete: Some(delete) },
    );
    let topics = b.create_vector(&[change]);
    wire::AlterConfigsRequest::create(b, &wire::AlterConfigsRequestArgs { topics: Some(topics), validate_only: false })
        .as_union_value()
}

/// Every topic's result (`alter_configs` asks for one).
pub fn decode_alter_configs(frame: &Frame) -> Result<Vec<(String, Result<()>)>> {
    let response = frame.response()?;
    let r = response.body_as_alter_configs_response().ok_or_else(|| unexpected(frame, "AlterConfigs"))?;
    Ok(topic_results(r.results()))
}

/// Sets and deletes (returns to the default) configs of one topic.
pub async fn alter_configs(
    conn: &Connection,
    topic: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<Result<()>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_alter_configs(b, topic, set, delete);
    let results = decode_alter_configs(&conn.request(RequestBody::AlterConfigsRequest, build, &[]).await?)?;
    Ok(results.into_iter().next().map_or(Ok(()), |(_, r)| r))
}

/// Batches for one partition in a produce request.
#[derive(Clone, Debug)]
pub struct PartitionBatches<'a> {
    pub topic: &'a str,
    pub partition: u32,
    /// One or more whole record batches (a partition's parts given one after another
    /// make one slice of the request).
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

/// A produce request's parts laid out: every partition's batches one after another in
/// the payload (in the order given; consecutive parts of the same partition make one
/// slice), and per topic, in order of first appearance, each partition's slice of it. The payload is the callers' batches themselves, written to
/// the socket in one vectored write: no byte of a batch is copied to lay it out.
#[derive(Clone, Debug)]
pub struct ProduceLayout<'a> {
    chunks: Vec<&'a [u8]>,
    /// Per topic, its partitions' slices of the payload.
    topics: Vec<(String, Vec<PayloadSlice>)>,
}

/// A partition's batches in a produce payload: (partition, offset, length).
type PayloadSlice = (u32, u32, u32);

impl<'a> ProduceLayout<'a> {
    /// Refused when the payload would pass what a slice can address (4 GiB).
    pub fn new(parts: &[PartitionBatches<'a>]) -> Result<ProduceLayout<'a>> {
        let mut chunks = Vec::with_capacity(parts.len());
        let mut len = 0usize;
        // (topic, (partition, offset, length)) in the order given.
        let mut slices = Vec::with_capacity(parts.len());
        for p in parts {
            let offset = u32::try_from(len).map_err(|_| ClientError::Protocol("request too large".into()))?;
            chunks.push(p.batches);
            len += p.batches.len();
            u32::try_from(len).map_err(|_| ClientError::Protocol("request too large".into()))?;
            match slices.last_mut() {
                // The partition's next batches, right after its previous ones: one slice.
                Some((topic, (partition, _, length))) if *topic == p.topic && *partition == p.partition => {
                    *length += p.batches.len() as u32;
                }
                _ => slices.push((p.topic, (p.partition, offset, p.batches.len() as u32))),
            }
        }
        let topics = by_topic(&slices, |s| s.0)
            .into_iter()
            .map(|(topic, list)| (topic.to_string(), list.into_iter().map(|s| s.1).collect()))
            .collect();
        Ok(ProduceLayout { chunks, topics })
    }

    /// The frame payload that goes with the request, in pieces.
    #[must_use]
    pub fn chunks(&self) -> &[&'a [u8]] {
        &self.chunks
    }

    /// The payload in one piece (a copy).
    #[must_use]
    pub fn payload(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

/// The request for `layout`, whose payload goes with it; `transactional_id`: a
/// transactional producer's (its batches are transactional).
pub fn encode_produce(
    b: &mut FlatBufferBuilder<'_>,
    acks: i16,
    timeout_ms: u32,
    transactional_id: Option<&str>,
    layout: &ProduceLayout<'_>,
) -> EncodedBody {
    let topics = topic_tables(
        b,
        &layout.topics,
        |b, &(partition, offset, length)| {
            let records = Some(&wire::Slice::new(offset, length));
            wire::PartitionProduce::create(b, &wire::PartitionProduceArgs { partition, records })
        },
        |b, topic, partitions| {
            wire::TopicProduce::create(b, &wire::TopicProduceArgs { topic: Some(topic), partitions: Some(partitions) })
        },
    );
    let transactional_id = transactional_id.map(|id| b.create_string(id));
    wire::ProduceRequest::create(
        b,
        &wire::ProduceRequestArgs { acks, timeout_ms, topics: Some(topics), transactional_id },
    )
    .as_union_value()
}

pub fn decode_produce(frame: &Frame) -> Result<Vec<ProduceOutcome>> {
    let response = frame.response()?;
    let r = response.body_as_produce_response().ok_or_else(|| unexpected(frame, "Produce"))?;
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

/// Produces batches to partitions; with `acks` 0 returns no outcomes (no response).
pub async fn produce(
    conn: &Connection,
    acks: i16,
    timeout_ms: u32,
    parts: &[PartitionBatches<'_>],
) -> Result<Vec<ProduceOutcome>> {
    match start_produce(conn, acks, timeout_ms, None, parts).await? {
        None => Ok(Vec::new()),
        Some(pending) => decode_produce(&pending.response().await?),
    }
}

/// `produce` in two steps: writes the request and returns the wait for its response
/// (`None` with acks=0, which gets none); `decode_produce` reads the response.
pub async fn start_produce<'c>(
    conn: &'c Connection,
    acks: i16,
    timeout_ms: u32,
    transactional_id: Option<&str>,
    parts: &[PartitionBatches<'_>],
) -> Result<Option<crate::connection::PendingResponse<'c>>> {
    let layout = ProduceLayout::new(parts)?;
    let build = |b: &mut FlatBufferBuilder<'static>| encode_produce(b, acks, timeout_ms, transactional_id, &layout);
    if acks == 0 {
        conn.send_only(RequestBody::ProduceRequest, build, layout.chunks()).await?;
        return Ok(None);
    }
    Ok(Some(conn.start_request(RequestBody::ProduceRequest, build, layout.chunks()).await?))
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
    /// Below it no transaction is open.
    pub last_stable_offset: u64,
    /// Read committed: the aborted transactions (producer id, first offset) that may have
    /// batches in the records, to skip.
    pub aborted: Vec<(i64, u64)>,
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

/// Kafka's isolation levels: what a fetch may read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Everything below the high watermark, aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Below the last stable offset, with the aborted transactions to skip.
    ReadCommitted,
}

impl IsolationLevel {
    /// `read_uncommitted` or `read_committed`, Kafka's names.
    pub fn parse(s: &str) -> Result<IsolationLevel> {
        match s {
            "read_uncommitted" => Ok(IsolationLevel::ReadUncommitted),
            "read_committed" => Ok(IsolationLevel::ReadCommitted),
            _ => {
                Err(ClientError::Config(format!("isolation.level = {s:?}: must be read_uncommitted or read_committed")))
            }
        }
    }

    fn wire(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}

/// The partitions grouped by topic, in order of first appearance.
pub fn encode_fetch(b: &mut FlatBufferBuilder<'_>, limits: FetchLimits, parts: &[FetchPartition]) -> EncodedBody {
    encode_fetch_isolated(b, limits, parts, IsolationLevel::ReadUncommitted)
}

/// `encode_fetch` at an isolation level.
pub fn encode_fetch_isolated(
    b: &mut FlatBufferBuilder<'_>,
    limits: FetchLimits,
    parts: &[FetchPartition],
    isolation: IsolationLevel,
) -> EncodedBody {
    let topics = topic_tables(
        b,
        &by_topic(parts, |p| &p.topic),
        |b, p| {
            let (partition, fetch_offset, max_bytes) = (p.partition, p.offset as i64, p.max_bytes);
            wire::PartitionFetch::create(b, &wire::PartitionFetchArgs { partition, fetch_offset, max_bytes })
        },
        |b, topic, partitions| {
            wire::TopicFetch::create(b, &wire::TopicFetchArgs { topic: Some(topic), partitions: Some(partitions) })
        },
    );
    let FetchLimits { max_wait_ms, min_bytes, max_bytes } = limits;
    let isolation_level = isolation.wire();
    let args = wire::FetchRequestArgs { max_wait_ms, min_bytes, max_bytes, topics: Some(topics), isolation_level };
    wire::FetchRequest::create(b, &args).as_union_value()
}

/// Each partition's records are a range of `frame`, which they keep alive.
pub fn decode_fetch(frame: Arc<Frame>) -> Result<Vec<FetchedPartition>> {
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
                let aborted = p
                    .aborted_transactions()
                    .iter()
                    .flatten()
                    .map(|a| (a.producer_id(), u64::try_from(a.first_offset()).unwrap_or(0)))
                    .collect();
                Ok(FetchedData {
                    high_watermark: u64::try_from(p.high_watermark()).unwrap_or(0),
                    log_start_offset: u64::try_from(p.log_start_offset()).unwrap_or(0),
                    last_stable_offset: u64::try_from(p.last_stable_offset()).unwrap_or(0),
                    aborted,
                    frame: frame.clone(),
                    records: start..end,
                })
            });
            out.push(FetchedPartition { topic: topic.clone(), partition: p.partition(), result });
        }
    }
    Ok(out)
}

pub async fn fetch(conn: &Connection, limits: FetchLimits, parts: &[FetchPartition]) -> Result<Vec<FetchedPartition>> {
    fetch_isolated(conn, limits, parts, IsolationLevel::ReadUncommitted).await
}

/// `fetch` at an isolation level.
pub async fn fetch_isolated(
    conn: &Connection,
    limits: FetchLimits,
    parts: &[FetchPartition],
    isolation: IsolationLevel,
) -> Result<Vec<FetchedPartition>> {
    decode_fetch(Arc::new(start_fetch_isolated(conn, limits, parts, isolation).await?.response().await?))
}

/// `fetch_isolated` in two steps: writes the request, and returns the wait for its
/// answer (for `decode_fetch`).
pub async fn start_fetch_isolated<'c>(
    conn: &'c Connection,
    limits: FetchLimits,
    parts: &[FetchPartition],
    isolation: IsolationLevel,
) -> Result<PendingResponse<'c>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_fetch_isolated(b, limits, parts, isolation);
    conn.start_request(RequestBody::FetchRequest, build, &[]).await
}

/// ListOffsets query: the log end.
pub const LATEST: i64 = -1;
/// ListOffsets query: the log start.
pub const EARLIEST: i64 = -2;

/// The offset for `timestamp` (`LATEST`, `EARLIEST` or ms since the epoch) of each
/// partition; `None` when no record is that recent.
/// A partition's answer to ListOffsets: (topic, partition, offset).
pub type ListedOffset = (String, u32, Result<Option<u64>>);

/// One topic entry per (topic, partition, timestamp).
pub fn encode_list_offsets(
    b: &mut FlatBufferBuilder<'_>,
    parts: &[(impl AsRef<str>, u32, i64)],
    isolation: IsolationLevel,
) -> EncodedBody {
    let each: Vec<_> = parts.iter().map(|p| (p.0.as_ref(), vec![(p.1, p.2)])).collect();
    let topics = topic_tables(
        b,
        &each,
        |b, &(partition, timestamp)| {
            wire::PartitionListOffsets::create(b, &wire::PartitionListOffsetsArgs { partition, timestamp })
        },
        |b, topic, partitions| {
            let args = wire::TopicListOffsetsArgs { topic: Some(topic), partitions: Some(partitions) };
            wire::TopicListOffsets::create(b, &args)
        },
    );
    let args = wire::ListOffsetsRequestArgs { topics: Some(topics), isolation_level: isolation.wire() };
    wire::ListOffsetsRequest::create(b, &args).as_union_value()
}

pub fn decode_list_offsets(frame: &Frame) -> Result<Vec<ListedOffset>> {
    let response = frame.response()?;
    let r = response.body_as_list_offsets_response().ok_or_else(|| unexpected(frame, "ListOffsets"))?;
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

pub async fn list_offsets(conn: &Connection, parts: &[(String, u32, i64)]) -> Result<Vec<ListedOffset>> {
    list_offsets_isolated(conn, parts, IsolationLevel::ReadUncommitted).await
}

/// `list_offsets` for a reader at `isolation`: read committed, the latest offset is the
/// last stable offset (a read-committed consumer's end).
pub async fn list_offsets_isolated(
    conn: &Connection,
    parts: &[(String, u32, i64)],
    isolation: IsolationLevel,
) -> Result<Vec<ListedOffset>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_list_offsets(b, parts, isolation);
    decode_list_offsets(&conn.request(RequestBody::ListOffsetsRequest, build, &[]).await?)
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

pub fn encode_join_group(
    b: &mut FlatBufferBuilder<'_>,
    group: &str,
    member_id: &str,
    session_timeout_ms: u32,
    rebalance_timeout_ms: u32,
    topics: &[impl AsRef<str>],
    strategy: &str,
) -> EncodedBody {
    let (group_id, member_id) = member_names(b, group, member_id);
    let topics = Some(strings(b, topics));
    let strategy = Some(b.create_string(strategy));
    let args =
        wire::JoinGroupRequestArgs { group_id, member_id, session_timeout_ms, rebalance_timeout_ms, topics, strategy };
    wire::JoinGroupRequest::create(b, &args).as_union_value()
}

pub fn decode_join_group(frame: &Frame) -> Result<Joined> {
    let response = frame.response()?;
    let r = response.body_as_join_group_response().ok_or_else(|| unexpected(frame, "JoinGroup"))?;
    code_result(r.error(), r.message())?;
    Ok(Joined {
        generation: r.generation(),
        member_id: r.member_id().unwrap_or("").to_string(),
        leader_id: r.leader_id().unwrap_or("").to_string(),
        assignment: pairs_of(r.assignment()),
    })
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
    let build = |b: &mut FlatBufferBuilder<'static>| {
        encode_join_group(b, group, member_id, session_timeout_ms, rebalance_timeout_ms, topics, strategy)
    };
    decode_join_group(&conn.request(RequestBody::JoinGroupRequest, build, &[]).await?)
}

pub fn encode_heartbeat(b: &mut FlatBufferBuilder<'_>, group: &str, member_id: &str, generation: i32) -> EncodedBody {
    let (group_id, member_id) = member_names(b, group, member_id);
    wire::HeartbeatRequest::create(b, &wire::HeartbeatRequestArgs { group_id, member_id, generation }).as_union_value()
}

pub fn decode_heartbeat(frame: &Frame) -> Result<()> {
    let response = frame.response()?;
    let r = response.body_as_heartbeat_response().ok_or_else(|| unexpected(frame, "Heartbeat"))?;
    code_result(r.error(), r.message())
}

pub async fn heartbeat(conn: &Connection, group: &str, member_id: &str, generation: i32) -> Result<()> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_heartbeat(b, group, member_id, generation);
    decode_heartbeat(&conn.request(RequestBody::HeartbeatRequest, build, &[]).await?)
}

pub fn encode_leave_group(b: &mut FlatBufferBuilder<'_>, group: &str, member_id: &str) -> EncodedBody {
    let (group_id, member_id) = member_names(b, group, member_id);
    wire::LeaveGroupRequest::create(b, &wire::LeaveGroupRequestArgs { group_id, member_id }).as_union_value()
}

pub fn decode_leave_group(frame: &Frame) -> Result<()> {
    let response = frame.response()?;
    let r = response.body_as_leave_group_response().ok_or_else(|| unexpected(frame, "LeaveGroup"))?;
    code_result(r.error(), r.message())
}

pub async fn leave_group(conn: &Connection, group: &str, member_id: &str) -> Result<()> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_leave_group(b, group, member_id);
    decode_leave_group(&conn.request(RequestBody::LeaveGroupRequest, build, &[]).await?)
}

/// One offset to commit: (topic, partition, offset, metadata).
pub type CommitOffset = (String, u32, u64, String);

/// The offsets grouped by topic, in order of first appearance.
pub fn encode_commit_offsets(
    b: &mut FlatBufferBuilder<'_>,
    group: &str,
    member_id: &str,
    generation: i32,
    offsets: &[CommitOffset],
) -> EncodedBody {
    let topics = commit_topics(b, offsets);
    let (group_id, member_id) = member_names(b, group, member_id);
    let args = wire::OffsetCommitRequestArgs { group_id, member_id, generation, topics: Some(topics) };
    wire::OffsetCommitRequest::create(b, &args).as_union_value()
}

type CommitTopics<'b> = WIPOffset<flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<wire::OffsetCommitTopic<'b>>>>;

fn commit_topics<'b>(b: &mut FlatBufferBuilder<'b>, offsets: &[CommitOffset]) -> CommitTopics<'b> {
    topic_tables(
        b,
        &by_topic(offsets, |o| &o.0),
        |b, (_, partition, offset, metadata)| {
            let metadata = Some(b.create_string(metadata));
            let (partition, offset) = (*partition, *offset as i64);
            wire::OffsetCommitPartition::create(b, &wire::OffsetCommitPartitionArgs { partition, offset, metadata })
        },
        |b, topic, partitions| {
            let args = wire::OffsetCommitTopicArgs { topic: Some(topic), partitions: Some(partitions) };
            wire::OffsetCommitTopic::create(b, &args)
        },
    )
}

pub fn decode_commit_offsets(frame: &Frame) -> Result<Vec<(String, u32, Result<()>)>> {
    let response = frame.response()?;
    let r = response.body_as_offset_commit_response().ok_or_else(|| unexpected(frame, "OffsetCommit"))?;
    code_result(r.error(), r.message())?;
    let mut out = Vec::new();
    for t in r.topics().iter().flatten() {
        for p in t.partitions().iter().flatten() {
            out.push((t.topic().unwrap_or("").to_string(), p.partition(), code_result(p.error(), p.message())));
        }
    }
    Ok(out)
}

/// Commits offsets for a group member (`member_id` empty and `generation` -1: an admin
/// commit, accepted only while the group has no members). Per-partition results.
pub async fn commit_offsets(
    conn: &Connection,
    group: &str,
    member_id: &str,
    generation: i32,
    offsets: &[CommitOffset],
) -> Result<Vec<(String, u32, Result<()>)>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_commit_offsets(b, group, member_id, generation, offsets);
    decode_commit_offsets(&conn.request(RequestBody::OffsetCommitRequest, build, &[]).await?)
}

/// A group's committed offset of a partition: (topic, partition, offset, metadata); a
/// `None` offset: nothing committed.
pub type CommittedOffset = (String, u32, Option<u64>, String);

/// The partitions grouped by topic, in order of first appearance.
pub fn encode_fetch_offsets(
    b: &mut FlatBufferBuilder<'_>,
    group: &str,
    partitions: Option<&[(String, u32)]>,
) -> EncodedBody {
    let topics = partitions.map(|list| {
        let items: Vec<_> = by_topic(list, |(t, _)| t)
            .iter()
            .map(|(t, ps)| {
                let topic = b.create_string(t);
                let ps: Vec<u32> = ps.iter().map(|(_, p)| *p).collect();
                let partitions = b.create_vector(&ps);
                wire::TopicPartitions::create(
                    b,
                    &wire::TopicPartitionsArgs { topic: Some(topic), partitions: Some(partitions) },
                )
            })
            .collect();
        b.create_vector(&items)
    });
    let group_id = b.create_string(group);
    wire::OffsetFetchRequest::create(b, &wire::OffsetFetchRequestArgs { group_id: Some(group_id), topics })
        .as_union_value()
}

pub fn decode_fetch_offsets(frame: &Frame) -> Result<Vec<CommittedOffset>> {
    let response = frame.response()?;
    let r = response.body_as_offset_fetch_response().ok_or_else(|| unexpected(frame, "OffsetFetch"))?;
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

/// Committed offsets of a group: of `partitions`, or all when `None`.
pub async fn fetch_offsets(
    conn: &Connection,
    group: &str,
    partitions: Option<&[(String, u32)]>,
) -> Result<Vec<CommittedOffset>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_fetch_offsets(b, group, partitions);
    decode_fetch_offsets(&conn.request(RequestBody::OffsetFetchRequest, build, &[]).await?)
}

pub fn encode_list_groups(b: &mut FlatBufferBuilder<'_>) -> EncodedBody {
    wire::ListGroupsRequest::create(b, &wire::ListGroupsRequestArgs {}).as_union_value()
}

pub fn decode_list_groups(frame: &Frame) -> Result<Vec<(String, String, u32)>> {
    let response = frame.response()?;
    let r = response.body_as_list_groups_response().ok_or_else(|| unexpected(frame, "ListGroups"))?;
    Ok(r.groups()
        .iter()
        .flatten()
        .map(|g| (g.group_id().unwrap_or("").to_string(), g.state().unwrap_or("").to_string(), g.members()))
        .collect())
}

/// (group id, state, members) of every group.
pub async fn list_groups(conn: &Connection) -> Result<Vec<(String, String, u32)>> {
    decode_list_groups(&conn.request(RequestBody::ListGroupsRequest, encode_list_groups, &[]).await?)
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

pub fn encode_describe_group(b: &mut FlatBufferBuilder<'_>, group: &str) -> EncodedBody {
    let ids = strings(b, &[group]);
    wire::DescribeGroupsRequest::create(b, &wire::DescribeGroupsRequestArgs { group_ids: Some(ids) }).as_union_value()
}

pub fn decode_describe_group(frame: &Frame) -> Result<GroupInfo> {
    let response = frame.response()?;
    let r = response.body_as_describe_groups_response().ok_or_else(|| unexpected(frame, "DescribeGroups"))?;
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

pub async fn describe_group(conn: &Connection, group: &str) -> Result<GroupInfo> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_describe_group(b, group);
    decode_describe_group(&conn.request(RequestBody::DescribeGroupsRequest, build, &[]).await?)
}

pub fn encode_delete_group(b: &mut FlatBufferBuilder<'_>, group: &str) -> EncodedBody {
    let ids = strings(b, &[group]);
    wire::DeleteGroupsRequest::create(b, &wire::DeleteGroupsRequestArgs { group_ids: Some(ids) }).as_union_value()
}

pub fn decode_delete_group(frame: &Frame) -> Result<()> {
    let response = frame.response()?;
    let r = response.body_as_delete_groups_response().ok_or_else(|| unexpected(frame, "DeleteGroups"))?;
    topic_results(r.results()).into_iter().next().map_or(Ok(()), |(_, r)| r)
}

pub async fn delete_group(conn: &Connection, group: &str) -> Result<()> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_delete_group(b, group);
    decode_delete_group(&conn.request(RequestBody::DeleteGroupsRequest, build, &[]).await?)
}

/// One topic entry per (topic, partition, offset).
pub fn encode_delete_records(b: &mut FlatBufferBuilder<'_>, parts: &[(String, u32, i64)]) -> EncodedBody {
    let each: Vec<_> = parts.iter().map(|p| (p.0.as_str(), vec![(p.1, p.2)])).collect();
    let topics = topic_tables(
        b,
        &each,
        |b, &(partition, offset)| wire::PartitionOffset::create(b, &wire::PartitionOffsetArgs { partition, offset }),
        |b, topic, partitions| {
            let args = wire::TopicDeleteRecordsArgs { topic: Some(topic), partitions: Some(partitions) };
            wire::TopicDeleteRecords::create(b, &args)
        },
    );
    wire::DeleteRecordsRequest::create(b, &wire::DeleteRecordsRequestArgs { topics: Some(topics), timeout_ms: 30_000 })
        .as_union_value()
}

pub fn decode_delete_records(frame: &Frame) -> Result<Vec<(String, u32, Result<u64>)>> {
    let response = frame.response()?;
    let r = response.body_as_delete_records_response().ok_or_else(|| unexpected(frame, "DeleteRecords"))?;
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

/// Moves partitions' log starts forward: (topic, partition, new start or -1 for the log
/// end). Returns each partition's log start afterwards.
pub async fn delete_records(
    conn: &Connection,
    parts: &[(String, u32, i64)],
) -> Result<Vec<(String, u32, Result<u64>)>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_delete_records(b, parts);
    decode_delete_records(&conn.request(RequestBody::DeleteRecordsRequest, build, &[]).await?)
}

/// An idempotent producer's identity: its id and epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub epoch: i16,
}

/// `existing`: `None` for a new producer; a producer's identity to get its next epoch.
pub fn encode_init_producer_id(b: &mut FlatBufferBuilder<'_>, existing: Option<ProducerIdentity>) -> EncodedBody {
    encode_init_transactional(b, existing, None)
}

/// `encode_init_producer_id` for a transactional producer: (transactional id, timeout ms).
pub fn encode_init_transactional(
    b: &mut FlatBufferBuilder<'_>,
    existing: Option<ProducerIdentity>,
    transactional: Option<(&str, i32)>,
) -> EncodedBody {
    let (producer_id, producer_epoch) = existing.map_or((-1, -1), |p| (p.producer_id, p.epoch));
    let transactional_id = transactional.map(|(id, _)| b.create_string(id));
    let transaction_timeout_ms = transactional.map_or(60_000, |(_, t)| t);
    let args =
        wire::InitProducerIdRequestArgs { producer_id, producer_epoch, transactional_id, transaction_timeout_ms };
    wire::InitProducerIdRequest::create(b, &args).as_union_value()
}

pub fn decode_init_producer_id(frame: &Frame) -> Result<ProducerIdentity> {
    let response = frame.response()?;
    let r = response.body_as_init_producer_id_response().ok_or_else(|| unexpected(frame, "InitProducerId"))?;
    code_result(r.error(), r.message())?;
    Ok(ProducerIdentity { producer_id: r.producer_id(), epoch: r.producer_epoch() })
}

/// A producer id for a new idempotent producer (`existing` `None`), or the next epoch of
/// an existing one.
pub async fn init_producer_id(conn: &Connection, existing: Option<ProducerIdentity>) -> Result<ProducerIdentity> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_init_producer_id(b, existing);
    decode_init_producer_id(&conn.request(RequestBody::InitProducerIdRequest, build, &[]).await?)
}

// Transactions -------------------------------------------------------------------------

/// A transactional producer's identity, as its transactional id's coordinator knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnProducer {
    pub transactional_id: String,
    pub identity: ProducerIdentity,
}

/// A producer id (or the next epoch) for `transactional_id`, from its coordinator.
pub async fn init_transactional_producer(
    conn: &Connection,
    transactional_id: &str,
    timeout_ms: i32,
    existing: Option<ProducerIdentity>,
) -> Result<ProducerIdentity> {
    let build = |b: &mut FlatBufferBuilder<'static>| {
        encode_init_transactional(b, existing, Some((transactional_id, timeout_ms)))
    };
    decode_init_producer_id(&conn.request(RequestBody::InitProducerIdRequest, build, &[]).await?)
}

fn txn_header<'b>(b: &mut FlatBufferBuilder<'b>, txn: &TxnProducer) -> (Option<WIPOffset<&'b str>>, i64, i16) {
    (Some(b.create_string(&txn.transactional_id)), txn.identity.producer_id, txn.identity.epoch)
}

/// Adds partitions to the producer's ongoing transaction (before it writes to them).
pub async fn add_partitions_to_txn(conn: &Connection, txn: &TxnProducer, partitions: &[(String, u32)]) -> Result<()> {
    let build = |b: &mut FlatBufferBuilder<'static>| {
        let items: Vec<_> = by_topic(partitions, |(t, _)| t)
            .iter()
            .map(|(topic, list)| {
                let numbers: Vec<u32> = list.iter().map(|(_, p)| *p).collect();
                let partitions = b.create_vector(&numbers);
                let topic = b.create_string(topic);
                wire::TopicPartitions::create(
                    b,
                    &wire::TopicPartitionsArgs { topic: Some(topic), partitions: Some(partitions) },
                )
            })
            .collect();
        let topics = b.create_vector(&items);
        let (transactional_id, producer_id, producer_epoch) = txn_header(b, txn);
        let args =
            wire::AddPartitionsToTxnRequestArgs { transactional_id, producer_id, producer_epoch, topics: Some(topics) };
        wire::AddPartitionsToTxnRequest::create(b, &args).as_union_value()
    };
    let frame = conn.request(RequestBody::AddPartitionsToTxnRequest, build, &[]).await?;
    let response = frame.response()?;
    let r =
        response.body_as_add_partitions_to_txn_response().ok_or_else(|| unexpected(&frame, "AddPartitionsToTxn"))?;
    code_result(r.error(), r.message())
}

fn decode_end_txn(frame: &Frame) -> Result<()> {
    let response = frame.response()?;
    let r = response.body_as_end_txn_response().ok_or_else(|| unexpected(frame, "EndTxn"))?;
    code_result(r.error(), r.message())
}

/// Commits (`commit`) or aborts the producer's ongoing transaction.
pub async fn end_txn(conn: &Connection, txn: &TxnProducer, commit: bool) -> Result<()> {
    let build = |b: &mut FlatBufferBuilder<'static>| {
        let (transactional_id, producer_id, producer_epoch) = txn_header(b, txn);
        let args = wire::EndTxnRequestArgs { transactional_id, producer_id, producer_epoch, commit };
        wire::EndTxnRequest::create(b, &args).as_union_value()
    };
    decode_end_txn(&conn.request(RequestBody::EndTxnRequest, build, &[]).await?)
}

/// Commits a group's offsets in the producer's transaction (to the group's coordinator;
/// the group's offsets partition must be in the transaction). Per-partition results.
pub async fn txn_offset_commit(
    conn: &Connection,
    txn: &TxnProducer,
    group: &str,
    member_id: &str,
    generation: i32,
    offsets: &[CommitOffset],
) -> Result<Vec<(String, u32, Result<()>)>> {
    let build = |b: &mut FlatBufferBuilder<'static>| {
        let topics = commit_topics(b, offsets);
        let (group_id, member_id) = member_names(b, group, member_id);
        let (transactional_id, producer_id, producer_epoch) = txn_header(b, txn);
        let args = wire::TxnOffsetCommitRequestArgs {
            transactional_id,
            producer_id,
            producer_epoch,
            group_id,
            member_id,
            generation,
            topics: Some(topics),
        };
        wire::TxnOffsetCommitRequest::create(b, &args).as_union_value()
    };
    decode_commit_offsets(&conn.request(RequestBody::TxnOffsetCommitRequest, build, &[]).await?)
}

/// A transactional id's state, as its coordinator lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionInfo {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Kafka's names: Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort.
    pub state: String,
    pub timeout_ms: i32,
    /// When the ongoing transaction began (ms since the epoch); -1: none.
    pub start_ms: i64,
    pub partitions: Vec<(String, u32)>,
}

/// The transactional ids the node coordinates.
pub async fn list_transactions(conn: &Connection) -> Result<Vec<TransactionInfo>> {
    let build = |b: &mut FlatBufferBuilder<'static>| {
        wire::ListTransactionsRequest::create(b, &wire::ListTransactionsRequestArgs {}).as_union_value()
    };
    let frame = conn.request(RequestBody::ListTransactionsRequest, build, &[]).await?;
    let response = frame.response()?;
    let r = response.body_as_list_transactions_response().ok_or_else(|| unexpected(&frame, "ListTransactions"))?;
    code_result(r.error(), r.message())?;
    Ok(r.transactions()
        .iter()
        .flatten()
        .map(|t| TransactionInfo {
            transactional_id: t.transactional_id().unwrap_or("").to_string(),
            producer_id: t.producer_id(),
            producer_epoch: t.producer_epoch(),
            state: t.state().unwrap_or("").to_string(),
            timeout_ms: t.timeout_ms(),
            start_ms: t.start_ms(),
            partitions: t
                .partitions()
                .iter()
                .flatten()
                .flat_map(|tp| {
                    let topic = tp.topic().unwrap_or("").to_string();
                    tp.partitions().into_iter().flatten().map(move |p| (topic.clone(), p))
                })
                .collect(),
        })
        .collect())
}

/// Aborts a transactional id's ongoing transaction (an operator's abort of a hanging
/// transaction; its producer is fenced). To the id's coordinator.
pub async fn abort_transaction(conn: &Connection, transactional_id: &str) -> Result<()> {
    let build = |b: &mut FlatBufferBuilder<'static>| {
        let transactional_id = Some(b.create_string(transactional_id));
        wire::AbortTransactionRequest::create(b, &wire::AbortTransactionRequestArgs { transactional_id })
            .as_union_value()
    };
    decode_end_txn(&conn.request(RequestBody::AbortTransactionRequest, build, &[]).await?)
}

// Security: SASL logins, users and ACLs --------------------------------------------------

/// A SaslHandshake's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslHandshakeAnswer {
    pub error: ErrorCode,
    pub message: Option<String>,
    /// The mechanisms the listener enables.
    pub mechanisms: Vec<String>,
}

pub fn encode_sasl_handshake(b: &mut FlatBufferBuilder<'_>, mechanism: &str) -> EncodedBody {
    let mechanism = Some(b.create_string(mechanism));
    wire::SaslHandshakeRequest::create(b, &wire::SaslHandshakeRequestArgs { mechanism }).as_union_value()
}

pub fn decode_sasl_handshake(frame: &Frame) -> Result<SaslHandshakeAnswer> {
    let response = frame.response()?;
    let r = response.body_as_sasl_handshake_response().ok_or_else(|| unexpected(frame, "SaslHandshake"))?;
    Ok(SaslHandshakeAnswer {
        error: ErrorCode(r.error().0),
        message: r.message().map(str::to_string),
        mechanisms: r.mechanisms().iter().flatten().map(str::to_string).collect(),
    })
}

/// Picks the SASL mechanism of a connection's login (the first request on a SASL
/// listener).
pub async fn sasl_handshake(conn: &Connection, mechanism: &str) -> Result<SaslHandshakeAnswer> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_sasl_handshake(b, mechanism);
    decode_sasl_handshake(&conn.request(RequestBody::SaslHandshakeRequest, build, &[]).await?)
}

/// A SaslAuthenticate's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslAuthenticateAnswer {
    pub error: ErrorCode,
    pub message: Option<String>,
    /// The mechanism's next server message.
    pub token: Vec<u8>,
    /// How long the login lasts (0: as long as the connection).
    pub session_lifetime_ms: i64,
}

pub fn encode_sasl_authenticate(b: &mut FlatBufferBuilder<'_>, token: &[u8]) -> EncodedBody {
    let token = Some(b.create_vector(token));
    wire::SaslAuthenticateRequest::create(b, &wire::SaslAuthenticateRequestArgs { token }).as_union_value()
}

pub fn decode_sasl_authenticate(frame: &Frame) -> Result<SaslAuthenticateAnswer> {
    let response = frame.response()?;
    let r = response.body_as_sasl_authenticate_response().ok_or_else(|| unexpected(frame, "SaslAuthenticate"))?;
    Ok(SaslAuthenticateAnswer {
        error: ErrorCode(r.error().0),
        message: r.message().map(str::to_string),
        token: r.token().map(|t| t.bytes().to_vec()).unwrap_or_default(),
        session_lifetime_ms: r.session_lifetime_ms(),
    })
}

/// Sends one token of the login's mechanism.
pub async fn sasl_authenticate(conn: &Connection, token: &[u8]) -> Result<SaslAuthenticateAnswer> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_sasl_authenticate(b, token);
    decode_sasl_authenticate(&conn.request(RequestBody::SaslAuthenticateRequest, build, &[]).await?)
}

/// A user's SCRAM credential, without its secrets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UserCredential {
    pub user: String,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    pub mechanism: String,
    pub iterations: u32,
}

/// `users` empty: every user.
pub fn encode_describe_users(b: &mut FlatBufferBuilder<'_>, users: &[impl AsRef<str>]) -> EncodedBody {
    let users = (!users.is_empty()).then(|| strings(b, users));
    wire::DescribeUsersRequest::create(b, &wire::DescribeUsersRequestArgs { users }).as_union_value()
}

pub fn decode_describe_users(frame: &Frame) -> Result<Vec<UserCredential>> {
    let response = frame.response()?;
    let r = response.body_as_describe_users_response().ok_or_else(|| unexpected(frame, "DescribeUsers"))?;
    code_result(r.error(), r.message())?;
    Ok(r.credentials()
        .iter()
        .flatten()
        .map(|c| UserCredential {
            user: c.user().unwrap_or("").to_string(),
            mechanism: c.mechanism().unwrap_or("").to_string(),
            iterations: c.iterations(),
        })
        .collect())
}

/// The credentials of `users` (empty: of every user).
pub async fn describe_users(conn: &Connection, users: &[String]) -> Result<Vec<UserCredential>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_describe_users(b, users);
    decode_describe_users(&conn.request(RequestBody::DescribeUsersRequest, build, &[]).await?)
}

/// A change of one user's credential for one mechanism.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserChange {
    /// Set the credential: the password salted by the client (`sasl::salted_password`),
    /// never the password itself.
    Set {
        user: String,
        mechanism: String,
        iterations: u32,
        salt: Vec<u8>,
        salted_password: Vec<u8>,
    },
    Delete {
        user: String,
        mechanism: String,
    },
}

pub fn encode_alter_users(b: &mut FlatBufferBuilder<'_>, changes: &[UserChange]) -> EncodedBody {
    let items: Vec<_> = changes
        .iter()
        .map(|change| {
            let args = match change {
                UserChange::Set { user, mechanism, iterations, salt, salted_password } => wire::UserChangeArgs {
                    user: Some(b.create_string(user)),
                    mechanism: Some(b.create_string(mechanism)),
                    delete: false,
                    iterations: *iterations,
                    salt: Some(b.create_vector(salt)),
                    salted_password: Some(b.create_vector(salted_password)),
                },
                UserChange::Delete { user, mechanism } => wire::UserChangeArgs {
                    user: Some(b.create_string(user)),
                    mechanism: Some(b.create_string(mechanism)),
                    delete: true,
                    ..wire::UserChangeArgs::default()
                },
            };
            wire::UserChange::create(b, &args)
        })
        .collect();
    let changes = Some(b.create_vector(&items));
    wire::AlterUsersRequest::create(b, &wire::AlterUsersRequestArgs { changes }).as_union_value()
}

/// One result per user.
pub fn decode_alter_users(frame: &Frame) -> Result<Vec<(String, Result<()>)>> {
    let response = frame.response()?;
    let r = response.body_as_alter_users_response().ok_or_else(|| unexpected(frame, "AlterUsers"))?;
    Ok(r.results()
        .iter()
        .flatten()
        .map(|u| (u.user().unwrap_or("").to_string(), code_result(u.error(), u.message())))
        .collect())
}

/// Sets or deletes users' credentials; one result per user.
pub async fn alter_users(conn: &Connection, changes: &[UserChange]) -> Result<Vec<(String, Result<()>)>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_alter_users(b, changes);
    decode_alter_users(&conn.request(RequestBody::AlterUsersRequest, build, &[]).await?)
}

fn acl_table<'b>(b: &mut FlatBufferBuilder<'b>, acl: &Acl) -> WIPOffset<wire::Acl<'b>> {
    let args = wire::AclArgs {
        resource_type: acl.resource_type,
        resource_name: Some(b.create_string(&acl.resource_name)),
        pattern_type: acl.pattern_type,
        principal: Some(b.create_string(&acl.principal)),
        host: Some(b.create_string(&acl.host)),
        operation: acl.operation,
        permission: acl.permission,
    };
    wire::Acl::create(b, &args)
}

/// A filter as an `Acl` table: absent strings match every value.
fn acl_filter_table<'b>(b: &mut FlatBufferBuilder<'b>, filter: &AclFilter) -> WIPOffset<wire::Acl<'b>> {
    let args = wire::AclArgs {
        resource_type: filter.resource_type,
        resource_name: filter.resource_name.as_deref().map(|s| b.create_string(s)),
        pattern_type: filter.pattern_type,
        principal: filter.principal.as_deref().map(|s| b.create_string(s)),
        host: filter.host.as_deref().map(|s| b.create_string(s)),
        operation: filter.operation,
        permission: filter.permission,
    };
    wire::Acl::create(b, &args)
}

fn acl_of(a: &wire::Acl<'_>) -> Acl {
    Acl {
        resource_type: a.resource_type(),
        resource_name: a.resource_name().unwrap_or("").to_string(),
        pattern_type: a.pattern_type(),
        principal: a.principal().unwrap_or("").to_string(),
        host: a.host().unwrap_or("").to_string(),
        operation: a.operation(),
        permission: a.permission(),
    }
}

/// AclsResponse's results: per entry (CreateAcls) or per filter (DescribeAcls,
/// DeleteAcls), the error or the entries matched.
pub fn decode_acls(frame: &Frame) -> Result<Vec<Result<Vec<Acl>>>> {
    let response = frame.response()?;
    let r = response.body_as_acls_response().ok_or_else(|| unexpected(frame, "Acls"))?;
    Ok(r.results()
        .iter()
        .flatten()
        .map(|result| {
            code_result(result.error(), result.message())
                .map(|()| result.acls().iter().flatten().map(|a| acl_of(&a)).collect())
        })
        .collect())
}

pub fn encode_create_acls(b: &mut FlatBufferBuilder<'_>, acls: &[Acl]) -> EncodedBody {
    let items: Vec<_> = acls.iter().map(|a| acl_table(b, a)).collect();
    let acls = Some(b.create_vector(&items));
    wire::CreateAclsRequest::create(b, &wire::CreateAclsRequestArgs { acls }).as_union_value()
}

/// Creates entries; one result per entry.
pub async fn create_acls(conn: &Connection, acls: &[Acl]) -> Result<Vec<Result<Vec<Acl>>>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_create_acls(b, acls);
    decode_acls(&conn.request(RequestBody::CreateAclsRequest, build, &[]).await?)
}

pub fn encode_describe_acls(b: &mut FlatBufferBuilder<'_>, filter: &AclFilter) -> EncodedBody {
    let filter = Some(acl_filter_table(b, filter));
    wire::DescribeAclsRequest::create(b, &wire::DescribeAclsRequestArgs { filter }).as_union_value()
}

/// The entries `filter` matches.
pub async fn describe_acls(conn: &Connection, filter: &AclFilter) -> Result<Vec<Acl>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_describe_acls(b, filter);
    let results = decode_acls(&conn.request(RequestBody::DescribeAclsRequest, build, &[]).await?)?;
    results.into_iter().next().unwrap_or_else(|| Err(ClientError::Protocol("empty DescribeAcls response".into())))
}

pub fn encode_delete_acls(b: &mut FlatBufferBuilder<'_>, filters: &[AclFilter]) -> EncodedBody {
    let items: Vec<_> = filters.iter().map(|f| acl_filter_table(b, f)).collect();
    let filters = Some(b.create_vector(&items));
    wire::DeleteAclsRequest::create(b, &wire::DeleteAclsRequestArgs { filters }).as_union_value()
}

/// Deletes the entries each filter matches; per filter, the entries deleted.
pub async fn delete_acls(conn: &Connection, filters: &[AclFilter]) -> Result<Vec<Result<Vec<Acl>>>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_delete_acls(b, filters);
    decode_acls(&conn.request(RequestBody::DeleteAclsRequest, build, &[]).await?)
}

/// A partition move: the partition, and its new replicas (the first preferred as leader)
/// or `None` to cancel its move in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMove {
    pub topic: String,
    pub partition: u32,
    pub replicas: Option<Vec<u32>>,
}

/// A move in progress: every replica the partition has while it moves (the target's
/// first), and which are being added and removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveInProgress {
    pub topic: String,
    pub partition: u32,
    pub replicas: Vec<u32>,
    pub adding: Vec<u32>,
    pub removing: Vec<u32>,
}

pub fn encode_alter_reassignments(b: &mut FlatBufferBuilder<'_>, moves: &[PartitionMove]) -> EncodedBody {
    let items: Vec<_> = moves
        .iter()
        .map(|m| {
            let topic = Some(b.create_string(&m.topic));
            let replicas = m.replicas.as_ref().map(|r| b.create_vector(r));
            wire::PartitionMove::create(b, &wire::PartitionMoveArgs { topic, partition: m.partition, replicas })
        })
        .collect();
    let moves = Some(b.create_vector(&items));
    wire::AlterReassignmentsRequest::create(b, &wire::AlterReassignmentsRequestArgs { moves }).as_union_value()
}

/// Starts (or cancels) each move on the controller; one result per move, in order. A
/// refusal of the whole request (not the controller, not authorized) is the error.
pub async fn alter_reassignments(conn: &Connection, moves: &[PartitionMove]) -> Result<Vec<Result<()>>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_alter_reassignments(b, moves);
    let frame = conn.request(RequestBody::AlterReassignmentsRequest, build, &[]).await?;
    let response = frame.response()?;
    let r = response.body_as_alter_reassignments_response().ok_or_else(|| unexpected(&frame, "AlterReassignments"))?;
    code_result(r.error(), r.message())?;
    let results: Vec<Result<()>> = r.results().iter().flatten().map(|p| code_result(p.error(), p.message())).collect();
    if results.len() != moves.len() {
        return Err(ClientError::Protocol(format!("{} results for {} moves", results.len(), moves.len())));
    }
    Ok(results)
}

/// Forgets node `node`, down for good and holding no replica (on the controller).
pub async fn unregister_node(conn: &Connection, node: u32) -> Result<()> {
    let build = |b: &mut FlatBufferBuilder<'static>| {
        wire::UnregisterNodeRequest::create(b, &wire::UnregisterNodeRequestArgs { node }).as_union_value()
    };
    let frame = conn.request(RequestBody::UnregisterNodeRequest, build, &[]).await?;
    let response = frame.response()?;
    let r = response.body_as_unregister_node_response().ok_or_else(|| unexpected(&frame, "UnregisterNode"))?;
    code_result(r.error(), r.message())
}

/// Makes node `node` a controller voter (`add`) or takes its vote away (on the controller).
pub async fn alter_voters(conn: &Connection, node: u32, add: bool) -> Result<()> {
    let build = |b: &mut FlatBufferBuilder<'static>| {
        wire::AlterVotersRequest::create(b, &wire::AlterVotersRequestArgs { node, add }).as_union_value()
    };
    let frame = conn.request(RequestBody::AlterVotersRequest, build, &[]).await?;
    let response = frame.response()?;
    let r = response.body_as_alter_voters_response().ok_or_else(|| unexpected(&frame, "AlterVoters"))?;
    code_result(r.error(), r.message())
}

/// The controller quorum: its leader, voters and learners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuorumInfo {
    pub leader: Option<u32>,
    pub voters: Vec<u32>,
    pub learners: Vec<u32>,
}

pub async fn describe_quorum(conn: &Connection) -> Result<QuorumInfo> {
    let build = |b: &mut FlatBufferBuilder<'static>| {
        wire::DescribeQuorumRequest::create(b, &wire::DescribeQuorumRequestArgs {}).as_union_value()
    };
    let frame = conn.request(RequestBody::DescribeQuorumRequest, build, &[]).await?;
    let response = frame.response()?;
    let r = response.body_as_describe_quorum_response().ok_or_else(|| unexpected(&frame, "DescribeQuorum"))?;
    code_result(r.error(), r.message())?;
    Ok(QuorumInfo {
        leader: u32::try_from(r.leader()).ok(),
        voters: r.voters().map(|v| v.iter().collect()).unwrap_or_default(),
        learners: r.learners().map(|v| v.iter().collect()).unwrap_or_default(),
    })
}

pub fn encode_list_reassignments(b: &mut FlatBufferBuilder<'_>, topics: Option<&[String]>) -> EncodedBody {
    let topics = topics.map(|list| {
        let names: Vec<_> = list.iter().map(|t| b.create_string(t)).collect();
        b.create_vector(&names)
    });
    wire::ListReassignmentsRequest::create(b, &wire::ListReassignmentsRequestArgs { topics }).as_union_value()
}

/// The moves in progress, of these topics (`None`: all), from the controller.
pub async fn list_reassignments(conn: &Connection, topics: Option<&[String]>) -> Result<Vec<MoveInProgress>> {
    let build = |b: &mut FlatBufferBuilder<'static>| encode_list_reassignments(b, topics);
    let frame = conn.request(RequestBody::ListReassignmentsRequest, build, &[]).await?;
    let response = frame.response()?;
    let r = response.body_as_list_reassignments_response().ok_or_else(|| unexpected(&frame, "ListReassignments"))?;
    code_result(r.error(), r.message())?;
    let ids = |v: Option<flatbuffers::Vector<'_, u32>>| v.map(|v| v.iter().collect()).unwrap_or_default();
    Ok(r.moves()
        .iter()
        .flatten()
        .map(|m| MoveInProgress {
            topic: m.topic().unwrap_or("").to_string(),
            partition: m.partition(),
            replicas: ids(m.replicas()),
            adding: ids(m.adding()),
            removing: ids(m.removing()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::{PartitionBatches, ProduceLayout};

    /// A partition's batches given one after another make one slice of the payload; the
    /// payload is every part in order.
    #[test]
    fn consecutive_parts_of_a_partition_make_one_slice() {
        let part = |topic, partition, batches| PartitionBatches { topic, partition, batches };
        let (a, b, c, d) = (&[1u8; 3][..], &[2u8; 4][..], &[3u8; 5][..], &[4u8; 6][..]);
        let layout =
            ProduceLayout::new(&[part("t", 0, a), part("t", 0, b), part("u", 0, c), part("t", 1, d)]).expect("layout");
        assert_eq!(layout.topics, [("t".to_string(), vec![(0, 0, 7), (1, 12, 6)]), ("u".to_string(), vec![(0, 7, 5)])]);
        assert_eq!(layout.payload(), [a, b, c, d].concat());
    }
}
