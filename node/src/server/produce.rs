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

pub async fn produce(
    server: &Rc<Server>,
    correlation_id: u32,
    request: wire::ProduceRequest<'_>,
    payload: &[u8],
) -> Result<Option<ResponseFrame>, NodeError> {
    let acks = request.acks();
    let shard = &server.shard;
    let mut topics: Vec<(String, Vec<LocalFuture<'_, PartitionOutcome>>)> = Vec::new();
    for topic in request.topics().iter().flatten() {
        let name = topic.name_or_empty();
        let mut parts: Vec<LocalFuture<'_, PartitionOutcome>> = Vec::new();
        for part in topic.partitions().iter().flatten() {
            let partition = part.partition();
            let name = name.clone();
            let records = part
                .records()
                .ok_or_else(|| NodeError::new(ErrorKind::InvalidRequest, format!("{name}-{partition}: no records")))
                .and_then(|slice| {
                    wire::payload_slice(payload, slice)
                        .map_err(|e| NodeError::new(ErrorKind::InvalidRequest, format!("{name}-{partition}: {e}")))
                });
            parts.push(Box::pin(async move {
                if !matches!(acks, -1..=1) {
                    let e =
                        NodeError::new(ErrorKind::InvalidRequiredAcks, format!("acks {acks} is not 0, 1 or -1 (all)"));
                    return (partition, Err(e));
                }
                let records = match records {
                    Ok(r) => r,
                    Err(e) => return (partition, Err(e)),
                };
                if let Err(e) = shard.check_partition(&name, partition) {
                    return (partition, Err(e));
                }
                if acks == -1 {
                    let default = shard.config.topic_defaults.min_insync_replicas;
                    let min_isr = shard
                        .metadata()
                        .topic(&name)
                        .and_then(|t| t.configs.get("min.insync.replicas").and_then(|v| v.parse().ok()))
                        .unwrap_or(default);
                    if min_isr > 1 {
                        let e = NodeError::new(
                            ErrorKind::NotEnoughReplicas,
                            format!("{name}-{partition}: min.insync.replicas is {min_isr}, but 1 replica is in sync"),
                        );
                        return (partition, Err(e));
                    }
                }
                if name == crate::groups::OFFSETS_TOPIC {
                    let e = NodeError::new(
                        ErrorKind::InvalidTopic,
                        format!("{name} is an internal topic; only the group coordinator writes to it"),
                    );
                    return (partition, Err(e));
                }
                let owner = shard.owner(&name, partition);
                if owner == shard.id {
                    return (partition, shard.append_local(&name, partition, records).await);
                }
                let request = ShardRequest::Append { topic: name.clone(), partition, batches: records.to_vec() };
                let result = match shard.call(owner, request).await {
                    ShardReply::Appended(r) => r,
                    ShardReply::Failed(e) => Err(e),
                    other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reply {other:?}"))),
                };
                (partition, result)
            }));
        }
        topics.push((name, parts));
    }
    let mut results = Vec::with_capacity(topics.len());
    for (name, parts) in topics {
        results.push((name, crate::io::join_all(parts).await));
    }
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
