//! The native Fetch and ListOffsets handlers over `ops::fetch`: the record bytes each
//! partition got go into the response as they are (no copy for this shard's partitions).

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use sluice_schemas::wire::{self, ErrorCode, ResponseBody};

use super::respond;
use crate::errors::error_code;
use crate::listener::{Payload, ResponseFrame, Server};
use crate::ops::fetch::{fetch_all, list_offset, FetchLimits, Wanted};

/// FetchRequest.isolation_level of a read-committed reader (Kafka's value).
const READ_COMMITTED: i8 = 1;

pub async fn fetch(server: &Rc<Server>, correlation_id: u32, request: wire::FetchRequest<'_>) -> ResponseFrame {
    let mut wanted = Vec::new();
    let mut layout: Vec<(String, usize)> = Vec::new();
    for topic in request.topics().iter().flatten() {
        let name = topic.topic().unwrap_or("").to_string();
        let before = wanted.len();
        for p in topic.partitions().iter().flatten() {
            wanted.push(Wanted {
                topic: name.clone(),
                partition: p.partition(),
                offset: p.fetch_offset(),
                max_bytes: p.max_bytes(),
                read_committed: request.isolation_level() == READ_COMMITTED,
                on: crate::cluster::host::Replicas::Leader,
            });
        }
        layout.push((name, wanted.len() - before));
    }
    let limits = FetchLimits {
        min_bytes: u64::from(request.min_bytes()),
        max_wait_ms: request.max_wait_ms(),
        max_bytes: u64::from(request.max_bytes()),
    };
    let results = fetch_all(&server.shard, &wanted, limits).await;
    let mut payload: Vec<Payload> = Vec::new();
    let mut position: u64 = 0;
    let mut b = FlatBufferBuilder::new();
    let mut results = results.into_iter();
    let mut wanted_iter = wanted.iter();
    let mut topic_offsets = Vec::new();
    for (name, count) in &layout {
        let mut partitions = Vec::with_capacity(*count);
        for _ in 0..*count {
            let (Some(w), Some(result)) = (wanted_iter.next(), results.next()) else { break };
            let args = match result {
                Ok(got) => {
                    let start = position;
                    position += got.bytes;
                    payload.extend(got.payload);
                    let length = got.bytes;
                    let aborted = (!got.aborted.is_empty()).then(|| {
                        let items: Vec<_> = got
                            .aborted
                            .iter()
                            .map(|(producer_id, first)| {
                                let args = wire::AbortedTransactionArgs {
                                    producer_id: *producer_id,
                                    first_offset: first.as_i64(),
                                };
                                wire::AbortedTransaction::create(&mut b, &args)
                            })
                            .collect();
                        b.create_vector(&items)
                    });
                    wire::PartitionFetchResultArgs {
                        partition: w.partition,
                        error: ErrorCode::None,
                        message: None,
                        high_watermark: got.high_watermark.as_i64(),
                        log_start_offset: got.log_start_offset.as_i64(),
                        records: Some(&wire::Slice::new(start as u32, length as u32)),
                        last_stable_offset: got.last_stable_offset.as_i64(),
                        aborted_transactions: aborted,
                    }
                }
                Err(e) => wire::PartitionFetchResultArgs {
                    partition: w.partition,
                    error: error_code(e.kind),
                    message: Some(b.create_string(&e.message)),
                    high_watermark: -1,
                    log_start_offset: -1,
                    records: None,
                    last_stable_offset: -1,
                    aborted_transactions: None,
                },
            };
            partitions.push(wire::PartitionFetchResult::create(&mut b, &args));
        }
        let partitions = b.create_vector(&partitions);
        let topic = b.create_string(name);
        topic_offsets.push(wire::TopicFetchResult::create(
            &mut b,
            &wire::TopicFetchResultArgs { topic: Some(topic), partitions: Some(partitions) },
        ));
    }
    let topics = b.create_vector(&topic_offsets);
    let body = wire::FetchResponse::create(&mut b, &wire::FetchResponseArgs { topics: Some(topics) });
    respond(b, correlation_id, ResponseBody::FetchResponse, body.as_union_value(), payload)
}

pub async fn list_offsets(
    server: &Rc<Server>,
    correlation_id: u32,
    request: wire::ListOffsetsRequest<'_>,
) -> ResponseFrame {
    let mut b = FlatBufferBuilder::new();
    let mut topic_offsets = Vec::new();
    let read_committed = request.isolation_level() == 1;
    for topic in request.topics().iter().flatten() {
        let name = topic.topic().unwrap_or("").to_string();
        let mut partitions = Vec::new();
        for p in topic.partitions().iter().flatten() {
            let (partition, timestamp) = (p.partition(), p.timestamp());
            let result = list_offset(&server.shard, &name, partition, timestamp, read_committed).await;
            let args = match result {
                Ok(found) => wire::PartitionOffsetResultArgs {
                    partition,
                    error: ErrorCode::None,
                    message: None,
                    timestamp: found.map_or(-1, |(_, t)| t),
                    offset: found.map_or(-1, |(o, _)| o.as_i64()),
                },
                Err(e) => wire::PartitionOffsetResultArgs {
                    partition,
                    error: error_code(e.kind),
                    message: Some(b.create_string(&e.message)),
                    timestamp: -1,
                    offset: -1,
                },
            };
            partitions.push(wire::PartitionOffsetResult::create(&mut b, &args));
        }
        let partitions = b.create_vector(&partitions);
        let topic_name = b.create_string(&name);
        topic_offsets.push(wire::TopicListOffsetsResult::create(
            &mut b,
            &wire::TopicListOffsetsResultArgs { topic: Some(topic_name), partitions: Some(partitions) },
        ));
    }
    let topics = b.create_vector(&topic_offsets);
    let body = wire::ListOffsetsResponse::create(&mut b, &wire::ListOffsetsResponseArgs { topics: Some(topics) });
    respond(b, correlation_id, ResponseBody::ListOffsetsResponse, body.as_union_value(), Vec::new())
}
