//! The DeleteRecords handler: moves partitions' log start offsets forward on the shards
//! that own them (Kafka's DeleteRecords; what `kafka-delete-records` does).

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use sluice_schemas::wire::{self, ErrorCode, ResponseBody};

use super::respond;
use crate::errors::{error_code, NodeError};
use crate::listener::{ResponseFrame, Server};

/// Each partition's new log start, or why it did not move.
type LowWatermarks = Vec<(u32, Result<sluice_schemas::Offset, NodeError>)>;

pub async fn delete_records(server: &Rc<Server>, cid: u32, request: wire::DeleteRecordsRequest<'_>) -> ResponseFrame {
    let mut results: Vec<(String, LowWatermarks)> = Vec::new();
    for t in request.topics().iter().flatten() {
        let topic = t.topic().unwrap_or("").to_string();
        let mut parts = Vec::new();
        for p in t.partitions().iter().flatten() {
            let partition = p.partition();
            parts.push((
                partition,
                crate::ops::delete_records::delete_records(&server.shard, &topic, partition, p.offset()).await,
            ));
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
                            low_watermark: low.as_i64(),
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
