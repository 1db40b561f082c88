//! The DeleteRecords handler: moves partitions' log start offsets forward on the shards
//! that own them (Kafka's DeleteRecords; what `kafka-delete-records` does).

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use sluice_schemas::wire::{self, ErrorCode, ResponseBody};

use super::{error_code, respond, ResponseFrame, Server};
use crate::errors::{ErrorKind, NodeError};
use crate::shard::{ShardReply, ShardRequest};

/// Each partition's new log start, or why it did not move.
type LowWatermarks = Vec<(u32, Result<u64, NodeError>)>;

/// Moves one partition's log start to `offset` (-1: the log end) on the shard that owns
/// it and returns the new log start. Both protocols' DeleteRecords call this.
pub async fn delete_records_one(
    server: &Rc<Server>,
    topic: &str,
    partition: u32,
    offset: i64,
) -> Result<u64, NodeError> {
    let shard = &server.shard;
    shard.check_partition(topic, partition)?;
    let request = ShardRequest::DeleteRecords { topic: topic.to_string(), partition, offset };
    match shard.call(shard.owner(topic, partition), request).await {
        ShardReply::LowWatermark(r) => r,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reply {other:?}"))),
    }
}

pub async fn delete_records(server: &Rc<Server>, cid: u32, request: wire::DeleteRecordsRequest<'_>) -> ResponseFrame {
    let mut results: Vec<(String, LowWatermarks)> = Vec::new();
    for t in request.topics().iter().flatten() {
        let topic = t.topic().unwrap_or("").to_string();
        let mut parts = Vec::new();
        for p in t.partitions().iter().flatten() {
            let partition = p.partition();
            parts.push((partition, delete_records_one(server, &topic, partition, p.offset()).await));
        }
        results.push((topic, parts));
    }
    let mut b = FlatBufferBuilder::new();
    let topics: Vec<_> = results
        .iter()
        .map(|(topic, parts)| {
            let items: Vec<_> = parts
                .iter()
                .map(|(partition, r)| {
                    let args = match r {
                        Ok(low) => wire::PartitionLowWatermarkArgs {
                            partition: *partition,
                            error: ErrorCode::None,
                            message: None,
                            low_watermark: *low as i64,
                        },
                        Err(e) => wire::PartitionLowWatermarkArgs {
                            partition: *partition,
                            error: error_code(e.kind),
                            message: Some(b.create_string(&e.message)),
                            low_watermark: -1,
                        },
                    };
                    wire::PartitionLowWatermark::create(&mut b, &args)
                })
                .collect();
            let partitions = b.create_vector(&items);
            let topic = b.create_string(topic);
            wire::TopicDeleteRecordsResult::create(
                &mut b,
                &wire::TopicDeleteRecordsResultArgs { topic: Some(topic), partitions: Some(partitions) },
            )
        })
        .collect();
    let topics = b.create_vector(&topics);
    let body = wire::DeleteRecordsResponse::create(&mut b, &wire::DeleteRecordsResponseArgs { topics: Some(topics) });
    respond(b, cid, ResponseBody::DeleteRecordsResponse, body.as_union_value(), Vec::new())
}
