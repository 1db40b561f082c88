//! The Kafka listener against bad and edge-case input, byte by byte: requests built with
//! the kafka-protocol crate (the client side of the same message definitions) on a plain
//! socket, against a real node process. Real Kafka clients are driven in `kafka.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_schemas::records::{BatchBuilder, BatchConfig};
use sluice_tests::node_client::NodeProcess;

const TIMEOUT: Duration = Duration::from_secs(10);

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

fn send_raw(stream: &mut TcpStream, bytes: &[u8]) {
    let mut frame = (bytes.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).unwrap();
}

/// Encodes a request (header and body) of `key` at `version`.
fn request(key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("kafka-wire-test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

/// Reads one response; `None` when the node closed the connection.
fn receive(stream: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

fn response<T: Decodable>(key: ApiKey, version: i16, correlation_id: i32, mut bytes: Bytes) -> T {
    let header = ResponseHeader::decode(&mut bytes, key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    let body = T::decode(&mut bytes, version).unwrap();
    assert_eq!(bytes.remaining(), 0, "{key:?} v{version}: trailing bytes");
    body
}

fn closed_by_node(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

fn produce(stream: &mut TcpStream, correlation_id: i32, topic: &str, records: Bytes) -> ProduceResponse {
    send_produce(stream, -1, correlation_id, topic, records);
    response(ApiKey::Produce, 9, correlation_id, receive(stream).unwrap())
}

fn send_produce(stream: &mut TcpStream, acks: i16, correlation_id: i32, topic: &str, records: Bytes) {
    let partition = PartitionProduceData::default().with_index(0).with_records(Some(records));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![partition]);
    let body = ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![topic]);
    send_raw(stream, &request(ApiKey::Produce, 9, correlation_id, &body));
}

fn batch(values: &[&[u8]]) -> Bytes {
    let mut builder = BatchBuilder::new(BatchConfig::default()).unwrap();
    for v in values {
        builder.push(Some(b"k"), Some(v), &[], 1_700_000_000_000).unwrap();
    }
    Bytes::from(builder.finish().unwrap())
}

/// An ApiVersions version the node does not serve gets Kafka's v0 fallback
/// (UNSUPPORTED_VERSION with the ranges) and the connection stays usable; every range
/// decodes at the flexible v3.
#[test]
fn api_versions_answers_every_version_and_falls_back_to_v0() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_kafka(dir.path(), 1, &[]);
    let mut s = connect(node.kafka_addr().unwrap());
    // A v3 request relabelled v9, as a newer client would send it.
    let mut newer = request(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default());
    newer[2..4].copy_from_slice(&9i16.to_be_bytes());
    send_raw(&mut s, &newer);
    let fallback: ApiVersionsResponse = response(ApiKey::ApiVersions, 0, 1, receive(&mut s).unwrap());
    assert_eq!(fallback.error_code, 35, "UNSUPPORTED_VERSION");
    let produce = fallback.api_keys.iter().find(|k| k.api_key == ApiKey::Produce as i16).unwrap();
    assert_eq!((produce.min_version, produce.max_version), (0, 9));
    for version in 0..=3 {
        send_raw(&mut s, &request(ApiKey::ApiVersions, version, 2, &ApiVersionsRequest::default()));
        let r: ApiVersionsResponse = response(ApiKey::ApiVersions, version, 2, receive(&mut s).unwrap());
        assert_eq!(r.error_code, 0);
        let fetch = r.api_keys.iter().find(|k| k.api_key == ApiKey::Fetch as i16).unwrap();
        assert_eq!((fetch.min_version, fetch.max_version), (4, 12));
    }
}

/// Bad input closes only its own connection: an oversized size prefix, a body of
/// garbage, an API the node does not serve and a produce version it does not store.
/// A corrupt batch is refused for its partition with CORRUPT_MESSAGE, and what was
/// stored before is intact. acks=0 gets no response and stores the record.
#[test]
fn bad_kafka_input_is_refused_and_stored_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_kafka(dir.path(), 2, &[]);
    node.client().create_topic("wire", 1, &[]);
    let addr = node.kafka_addr().unwrap();
    let mut good = connect(addr);
    let stored = produce(&mut good, 1, "wire", batch(&[b"one", b"two"]));
    let p = &stored.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));

    // A size prefix over --max-frame-bytes: closed before anything is read.
    let mut s = connect(addr);
    s.write_all(&i32::MAX.to_be_bytes()).unwrap();
    assert!(closed_by_node(&mut s));
    // A negative size.
    let mut s = connect(addr);
    s.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(closed_by_node(&mut s));
    // Garbage after a valid Produce header.
    let mut s = connect(addr);
    let mut bytes = request(ApiKey::Produce, 9, 7, &ProduceRequest::default());
    bytes.truncate(20);
    bytes.extend_from_slice(&[0xff; 64]);
    send_raw(&mut s, &bytes);
    assert!(closed_by_node(&mut s));
    // A Metadata v0 request announcing 2^31-1 topics in 14 bytes: refused, the node
    // neither aborts nor reserves memory for them.
    let mut s = connect(addr);
    let mut bytes = request(ApiKey::Metadata, 0, 8, &kafka_protocol::messages::MetadataRequest::default());
    let at = bytes.len() - 4;
    bytes[at..].copy_from_slice(&i32::MAX.to_be_bytes());
    send_raw(&mut s, &bytes);
    assert!(closed_by_node(&mut s));
    // An API key that does not exist, and one the node does not serve (SaslHandshake).
    for key in [999i16, 17] {
        let mut s = connect(addr);
        let mut bytes = key.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 9, 0, 0]);
        send_raw(&mut s, &bytes);
        assert!(closed_by_node(&mut s), "api key {key}");
    }
    // Produce v2 carries message format v1, which the log does not store.
    let mut s = connect(addr);
    let mut bytes = 0i16.to_be_bytes().to_vec();
    bytes.extend_from_slice(&2i16.to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 8, 0, 0]);
    send_raw(&mut s, &bytes);
    assert!(closed_by_node(&mut s));

    // A batch whose CRC does not match: refused for its partition, connection kept.
    let mut corrupt = batch(&[b"three"]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    let refused = produce(&mut good, 2, "wire", Bytes::from(corrupt));
    let p = &refused.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 2, "CORRUPT_MESSAGE");
    // An unknown topic.
    let unknown = produce(&mut good, 3, "nope", batch(&[b"x"]));
    assert_eq!(unknown.responses[0].partition_responses[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");

    // acks=0: no response at all; the next response on the connection is the next
    // request's, and the record is stored.
    send_produce(&mut good, 0, 5, "wire", batch(&[b"fire-and-forget"]));
    let after = produce(&mut good, 6, "wire", batch(&[b"acked"]));
    assert_eq!(after.responses[0].partition_responses[0].base_offset, 3);

    // Everything stored before is there, byte for byte, on the same connection.
    let fetch = FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![
        kafka_protocol::messages::fetch_request::FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("wire")))
            .with_partitions(vec![kafka_protocol::messages::fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)]),
    ]);
    send_raw(&mut good, &request(ApiKey::Fetch, 12, 4, &fetch));
    let fetched: FetchResponse = response(ApiKey::Fetch, 12, 4, receive(&mut good).unwrap());
    let p = &fetched.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 4));
    let records = p.records.clone().unwrap();
    let expected = batch(&[b"one", b"two"]).to_vec();
    // The first stored batch is the produced one (the leader wrote only the base offset and
    // its leader epoch).
    assert!(records.len() > expected.len());
    assert_eq!(&records[..8], &0i64.to_be_bytes());
    assert!(sluice_tests::stored_as_produced(&records[..expected.len()], &expected));
}

/// ListOffsets by timestamp answers the first record at or after it with that record's
/// own timestamp (Java's offsetsForTimes refuses a negative one); the log ends carry -1.
#[test]
fn list_offsets_by_timestamp_answers_the_records_timestamp() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_kafka(dir.path(), 1, &[]);
    node.client().create_topic("times", 1, &[]);
    let mut s = connect(node.kafka_addr().unwrap());
    // Timestamps 1_700_000_000_000 + 0, 1, 2 at offsets 0, 1, 2.
    let mut builder = BatchBuilder::new(BatchConfig::default()).unwrap();
    for (i, v) in [b"a", b"b", b"c"].into_iter().enumerate() {
        builder.push(Some(b"k"), Some(v), &[], 1_700_000_000_000 + i as i64).unwrap();
    }
    let stored = produce(&mut s, 1, "times", Bytes::from(builder.finish().unwrap()));
    assert_eq!(stored.responses[0].partition_responses[0].error_code, 0);
    for (asked, expected) in
        [(1_700_000_000_001, (1, 1_700_000_000_001)), (-2, (0, -1)), (-1, (3, -1)), (1_800_000_000_000, (-1, -1))]
    {
        let body =
            ListOffsetsRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(-1)).with_topics(vec![
                ListOffsetsTopic::default().with_name(TopicName(StrBytes::from_static_str("times"))).with_partitions(
                    vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(asked)],
                ),
            ]);
        send_raw(&mut s, &request(ApiKey::ListOffsets, 4, 2, &body));
        let r: ListOffsetsResponse = response(ApiKey::ListOffsets, 4, 2, receive(&mut s).unwrap());
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset, p.timestamp), (0, expected.0, expected.1), "timestamp {asked}");
    }
}

/// Fetch waits until `min_bytes` arrived (or `max_wait_ms` passed), not merely until any
/// data is there: with one small batch stored and min_bytes above it, the answer comes
/// once a second batch arrives, and holds both.
#[test]
fn fetch_waits_for_min_bytes() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_kafka(dir.path(), 2, &[]);
    node.client().create_topic("slow", 1, &[]);
    let addr = node.kafka_addr().unwrap();
    let first = batch(&[b"first"]);
    let mut s = connect(addr);
    produce(&mut s, 1, "slow", first.clone());
    let later = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut other = connect(addr);
        produce(&mut other, 1, "slow", batch(&[b"second"]));
    });
    let started = std::time::Instant::now();
    let fetch = FetchRequest::default()
        .with_max_wait_ms(5000)
        .with_min_bytes(first.len() as i32 + 1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("slow")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    send_raw(&mut s, &request(ApiKey::Fetch, 12, 2, &fetch));
    let fetched: FetchResponse = response(ApiKey::Fetch, 12, 2, receive(&mut s).unwrap());
    later.join().unwrap();
    let p = &fetched.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 2));
    assert!(p.records.as_ref().unwrap().len() > first.len(), "both batches in one answer");
    assert!(started.elapsed() >= Duration::from_millis(250), "it waited for the second batch");
    assert!(started.elapsed() < Duration::from_secs(4), "and no longer than that");
}

/// DescribeProducers (v0, as Kafka 3.9) lists the idempotent producers a partition knows,
/// from its leader: two batches of producer 4242 at epoch 3 (sequences 0-2, then 3-4) show
/// as that producer with last sequence 4; another topic's partition lists none; a
/// partition that does not exist answers UNKNOWN_TOPIC_OR_PARTITION.
#[test]
fn describe_producers_lists_a_partitions_idempotent_producers() {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_kafka(dir.path(), 2, &[]);
    node.client().create_topic("idempotent", 1, &[]);
    node.client().create_topic("plain", 1, &[]);
    let mut s = connect(node.kafka_addr().unwrap());
    let idempotent = |first: i32, values: &[&[u8]]| {
        let config = BatchConfig {
            producer_id: Some(sluice_schemas::ids::ProducerId(4242)),
            producer_epoch: 3,
            base_sequence: first,
            ..BatchConfig::default()
        };
        let mut builder = BatchBuilder::new(config).unwrap();
        for v in values {
            builder.push(Some(b"k"), Some(v), &[], 1_700_000_000_000).unwrap();
        }
        Bytes::from(builder.finish().unwrap())
    };
    let runs: [(i32, &[&[u8]]); 2] = [(0, &[b"a", b"b", b"c"]), (3, &[b"d", b"e"])];
    for (cid, (first, values)) in runs.into_iter().enumerate() {
        let stored = produce(&mut s, cid as i32 + 1, "idempotent", idempotent(first, values));
        assert_eq!(stored.responses[0].partition_responses[0].error_code, 0);
    }
    assert_eq!(produce(&mut s, 3, "plain", batch(&[b"x"])).responses[0].partition_responses[0].error_code, 0);
    let topic = |name: &'static str, partitions: Vec<i32>| {
        TopicRequest::default().with_name(TopicName(StrBytes::from_static_str(name))).with_partition_indexes(partitions)
    };
    let body = DescribeProducersRequest::default().with_topics(vec![
        topic("idempotent", vec![0]),
        topic("plain", vec![0]),
        topic("idempotent", vec![7]),
    ]);
    send_raw(&mut s, &request(ApiKey::DescribeProducers, 0, 4, &body));
    let r: DescribeProducersResponse = response(ApiKey::DescribeProducers, 0, 4, receive(&mut s).unwrap());
    let found = &r.topics[0].partitions[0];
    assert_eq!(found.error_code, 0, "{:?}", found.error_message);
    assert_eq!(found.active_producers.len(), 1, "{found:?}");
    let p = &found.active_producers[0];
    assert_eq!((p.producer_id, p.producer_epoch, p.last_sequence), (ProducerId(4242), 3, 4));
    let plain = &r.topics[1].partitions[0];
    assert_eq!((plain.error_code, plain.active_producers.len()), (0, 0));
    assert_eq!(r.topics[2].partitions[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
}

/// One connection's requests run in order, as Kafka runs them: 100 OffsetCommits, each
/// followed by an OffsetFetch, all sent before any answer is read; every fetch sees the
/// commit sent just before it (run concurrently, a fetch answered from the coordinator's
/// memory while the commit before it was still being written saw the older offset).
#[test]
fn pipelined_requests_of_one_connection_run_in_order_so_an_offset_fetch_sees_the_commit_before_it() {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{
        GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    };
    const ROUNDS: i64 = 100;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_kafka(dir.path(), 2, &[]);
    assert_eq!(node.client().create_topic("ordered", 1, &[]).error, sluice_schemas::wire::ErrorCode::None);
    let mut s = connect(node.kafka_addr().unwrap());
    let values: Vec<Vec<u8>> = (0..ROUNDS).map(|i| format!("v{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    assert_eq!(produce(&mut s, 1, "ordered", batch(&refs)).responses[0].partition_responses[0].error_code, 0);
    let group = GroupId(StrBytes::from_static_str("ordered-group"));
    let topic = || TopicName(StrBytes::from_static_str("ordered"));
    let frame = |bytes: Vec<u8>| [(bytes.len() as i32).to_be_bytes().to_vec(), bytes].concat();
    let mut pipelined = Vec::new();
    for i in 1..=ROUNDS {
        let commit = OffsetCommitRequest::default()
            .with_group_id(group.clone())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default().with_name(topic()).with_partitions(vec![
                OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(i),
            ])]);
        pipelined.extend(frame(request(ApiKey::OffsetCommit, 8, (i * 2) as i32, &commit)));
        let fetch = OffsetFetchRequest::default().with_group_id(group.clone()).with_topics(Some(vec![
            OffsetFetchRequestTopic::default().with_name(topic()).with_partition_indexes(vec![0]),
        ]));
        pipelined.extend(frame(request(ApiKey::OffsetFetch, 7, (i * 2 + 1) as i32, &fetch)));
    }
    s.write_all(&pipelined).unwrap();
    let mut stale = Vec::new();
    for i in 1..=ROUNDS {
        let committed: OffsetCommitResponse =
            response(ApiKey::OffsetCommit, 8, (i * 2) as i32, receive(&mut s).expect("a commit answer"));
        assert_eq!(committed.topics[0].partitions[0].error_code, 0, "commit {i}");
        let fetched: OffsetFetchResponse =
            response(ApiKey::OffsetFetch, 7, (i * 2 + 1) as i32, receive(&mut s).expect("a fetch answer"));
        let offset = fetched.topics[0].partitions[0].committed_offset;
        if offset != i {
            stale.push(format!("fetch {i} saw {offset}"));
        }
    }
    assert!(stale.is_empty(), "offset fetches that missed the commit before them: {}", stale.join(", "));
}
