//! The Produce handler: appends each partition's batches on the shard that owns it.
//!
//! The batches are checked by the log (CRC, magic, sizes, record count) and refused per
//! partition with an error naming the partition and the reason; the other partitions of
//! the request are not affected. Appends to several partitions run concurrently. acks=0
//! gets no response; acks=1 and acks=all answer once the append completed, which on a
//! single node is the durability the topic's fsync policy promises.

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use sluice_schemas::wire::{self, ErrorCode, ResponseBody};

use super::{error_code, respond, ResponseFrame, Server};
use crate::errors::{ErrorKind, NodeError};
use crate::io::LocalFuture;
use crate::shard::{Appended, ShardReply, ShardRequest};

type PartitionOutcome = (u32, Result<Appended, NodeError>);

/// One partition's records of a produce request, from either protocol.
pub struct ProducePartition<'a> {
    pub partition: u32,
    /// The batches, or why the request's framing of them was refused.
    pub records: Result<&'a [u8], NodeError>,
}

/// Per topic, in request order: each partition's append.
pub type ProduceResults = Vec<(String, Vec<PartitionOutcome>)>;

/// Appends each partition's batches on the shard that owns it, concurrently, and returns
/// each partition's outcome. Both protocols' Produce handlers call this; they only
/// decode requests and encode responses.
pub async fn append_all(
    server: &Rc<Server>,
    acks: i16,
    request: Vec<(String, Vec<ProducePartition<'_>>)>,
) -> ProduceResults {
    let shard = &server.shard;
    let mut topics: Vec<(String, Vec<LocalFuture<'_, PartitionOutcome>>)> = Vec::new();
    for (name, partitions) in request {
        let mut parts: Vec<LocalFuture<'_, PartitionOutcome>> = Vec::new();
        for ProducePartition { partition, records } in partitions {
            let name = name.clone();
            parts.push(Box::pin(async move { (partition, append_one(shard, acks, &name, partition, records).await) }));
        }
        topics.push((name, parts));
    }
    let mut results = Vec::with_capacity(topics.len());
    for (name, parts) in topics {
        results.push((name, crate::io::join_all(parts).await));
    }
    results
}

async fn append_one(
    shard: &Rc<crate::shard::Shard>,
    acks: i16,
    name: &str,
    partition: u32,
    records: Result<&[u8], NodeError>,
) -> Result<Appended, NodeError> {
    if !matches!(acks, -1..=1) {
        return Err(NodeError::new(ErrorKind::InvalidRequiredAcks, format!("acks {acks} is not 0, 1 or -1 (all)")));
    }
    let records = records?;
    shard.check_partition(name, partition)?;
    if name == crate::groups::OFFSETS_TOPIC {
        return Err(NodeError::new(
            ErrorKind::InvalidTopic,
            format!("{name} is an internal topic; only the group coordinator writes to it"),
        ));
    }
    let owner = shard.owner(name, partition);
    if owner == shard.id {
        return shard.append_local(name, partition, records, acks).await;
    }
    let request = ShardRequest::Append { topic: name.to_string(), partition, batches: records.to_vec(), acks };
    match shard.call(owner, request).await {
        ShardReply::Appended(r) => r,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reply {other:?}"))),
    }
}

pub async fn produce(
    server: &Rc<Server>,
    correlation_id: u32,
    request: wire::ProduceRequest<'_>,
    payload: &[u8],
) -> Result<Option<ResponseFrame>, NodeError> {
    let acks = request.acks();
    let mut topics = Vec::new();
    for topic in request.topics().iter().flatten() {
        let name = topic.name_or_empty();
        let partitions = topic
            .partitions()
            .iter()
            .flatten()
            .map(|part| {
                let partition = part.partition();
                let records = part
                    .records()
                    .ok_or_else(|| NodeError::new(ErrorKind::InvalidRequest, format!("{name}-{partition}: no records")))
                    .and_then(|slice| {
                        wire::payload_slice(payload, slice)
                            .map_err(|e| NodeError::new(ErrorKind::InvalidRequest, format!("{name}-{partition}: {e}")))
                    });
                ProducePartition { partition, records }
            })
            .collect();
        topics.push((name, partitions));
    }
    let results = append_all(server, acks, topics).await;
    if acks == 0 {
        return Ok(None);
    }
    let mut b = FlatBufferBuilder::new();
    let topic_offsets: Vec<_> = results
        .iter()
        .map(|(name, parts)| {
            let partitions: Vec<_> = parts
                .iter()
                .map(|(partition, r)| {
                    let args = match r {
                        Ok(a) => wire::PartitionProduceResultArgs {
                            partition: *partition,
                            error: ErrorCode::None,
                            message: None,
                            base_offset: a.base_offset as i64,
                            log_append_time_ms: a.log_append_time_ms.unwrap_or(-1),
                            log_start_offset: a.log_start_offset as i64,
                        },
                        Err(e) => wire::PartitionProduceResultArgs {
                            partition: *partition,
                            error: error_code(e.kind),
                            message: Some(b.create_string(&e.message)),
                            base_offset: -1,
                            log_append_time_ms: -1,
                            log_start_offset: -1,
                        },
                    };
                    wire::PartitionProduceResult::create(&mut b, &args)
                })
                .collect();
            let partitions = b.create_vector(&partitions);
            let topic = b.create_string(name);
            wire::TopicProduceResult::create(
                &mut b,
                &wire::TopicProduceResultArgs { topic: Some(topic), partitions: Some(partitions) },
            )
        })
        .collect();
    let topics = b.create_vector(&topic_offsets);
    let body = wire::ProduceResponse::create(&mut b, &wire::ProduceResponseArgs { topics: Some(topics) });
    Ok(Some(respond(b, correlation_id, ResponseBody::ProduceResponse, body.as_union_value(), Vec::new())))
}

/// A small extension for optional names on the wire.
pub trait NameOrEmpty {
    fn name_or_empty(&self) -> String;
}

impl NameOrEmpty for wire::TopicProduce<'_> {
    fn name_or_empty(&self) -> String {
        self.topic().unwrap_or("").to_string()
    }
}
