//! The native Produce handler: decodes the request, appends through
//! `ops::produce::append_all`, encodes the response (none for acks=0).

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use sluice_schemas::wire::{self, ErrorCode, ResponseBody};

use super::respond;
use crate::errors::{error_code, ErrorKind, NodeError};
use crate::listener::{ResponseFrame, Server};
use crate::ops::produce::{append_all, ProducePartition};

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
    let results = append_all(&server.shard, acks, None, topics).await;
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
                            base_offset: a.base_offset.as_i64(),
                            log_append_time_ms: a.log_append_time_ms.unwrap_or(-1),
                            log_start_offset: a.log_start_offset.as_i64(),
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
