//! The Kafka listener against bad and edge-case input, byte by byte: requests built with
//! the kafka-protocol crate (the client side of the same message definitions) on a plain
//! socket, against a real node process. Real Kafka clients are driven in `kafka.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_schemas::records::{BatchBuilder, BatchConfig};
use sluice_tests::kafka_wire::{
    connect, end_txn, init_transactional, receive, request, response, send_raw, txn_batch, Wire, TIMEOUT,
};
use sluice_tests::node_client::NodeProcess;

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
/// decodes at every version.
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
    assert_eq!((produce.min_version, produce.max_version), (0, 12));
    for version in 0..=4 {
        send_raw(&mut s, &request(ApiKey::ApiVersions, version, 2, &ApiVersionsRequest::default()));
        let r: ApiVersionsResponse = response(ApiKey::ApiVersions, version, 2, receive(&mut s).unwrap());
        assert_eq!(r.error_code, 0);
        let fetch = r.api_keys.iter().find(|k| k.api_key == ApiKey::Fetch as i16).unwrap();
        assert_eq!((fetch.min_version, fetch.max_version), (4, 17));
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

/// Kafka 3.9's version range of every API the node serves, as its ApiVersions answers
/// (Produce v0 to v2 are advertised, as Kafka does, but refused: they carry message
/// formats Sluice does not store; Fetch starts at v4, the first to carry RecordBatch v2),
/// with ConsumerGroupHeartbeat as Kafka 4.0 serves it (KIP-848 became GA there) and
/// transactions v2's versions as Kafka 4.0 serves them (Produce v12, EndTxn v5,
/// TxnOffsetCommit v5; KIP-890 part 2).
const KAFKA_3_9: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 0, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeLogDirs, 0, 4),
    (ApiKey::ElectLeaders, 0, 2),
    // Kafka 4.1's range (3.9: 0-0; v1 adds allowReplicationFactorChange, KIP-860).
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::WriteTxnMarkers, 0, 1),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // Kafka 4.0's ranges (3.9: 0-3; v0 has no pattern type).
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// Fetch sessions (KIP-227), as the Java client uses them: a full fetch with session 0
/// and epoch 0 opens one; the next requests (epochs 1, 2, ...) name only partitions whose
/// position changed, and are answered only with partitions that have news (records, a
/// moved high watermark). Out-of-turn epochs and unknown sessions are refused with
/// Kafka's codes; a forgotten partition is no longer read; epoch -1 closes the session.
#[test]
fn fetch_sessions_answer_only_partitions_with_news() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_kafka(dir.path(), 1, &[]);
    node.client().create_topic("sess", 3, &[]);
    let mut s = connect(node.kafka_addr().unwrap());
    let mut correlation = 0;
    let produced = produce(&mut s, correlation, "sess", batch(&[b"one", b"two"]));
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    let mut call = |s: &mut TcpStream, session: i32, epoch: i32, partitions: &[(i32, i64)], forget: &[i32]| {
        correlation += 1;
        let topic = FetchTopic::default().with_topic(name("sess")).with_partitions(
            partitions
                .iter()
                .map(|(p, o)| {
                    FetchPartition::default().with_partition(*p).with_fetch_offset(*o).with_partition_max_bytes(1 << 20)
                })
                .collect(),
        );
        let forgotten = ForgottenTopic::default().with_topic(name("sess")).with_partitions(forget.to_vec());
        let fetch = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_session_id(session)
            .with_session_epoch(epoch)
            .with_topics(if partitions.is_empty() { Vec::new() } else { vec![topic] })
            .with_forgotten_topics_data(if forget.is_empty() { Vec::new() } else { vec![forgotten] });
        send_raw(s, &request(ApiKey::Fetch, 12, correlation, &fetch));
        let r: FetchResponse = response(ApiKey::Fetch, 12, correlation, receive(s).unwrap());
        let answered: Vec<(i32, bool)> = r
            .responses
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| (p.partition_index, p.records.as_ref().is_some_and(|r| !r.is_empty())))
            })
            .collect();
        (r.error_code, r.session_id, answered)
    };
    let (error, session, answered) = call(&mut s, 0, 0, &[(0, 0), (1, 0), (2, 0)], &[]);
    assert_eq!(error, 0);
    assert_ne!(session, 0, "epoch 0 opens a session");
    assert_eq!(answered, vec![(0, true), (1, false), (2, false)], "a full fetch answers every partition");
    // Partition 0's position moved past the records: nothing new anywhere.
    assert_eq!(call(&mut s, session, 1, &[(0, 2)], &[]), (0, session, vec![]));
    produce(&mut s, 100, "sess", batch(&[b"three"]));
    assert_eq!(call(&mut s, session, 2, &[], &[]), (0, session, vec![(0, true)]), "only the partition with news");
    assert_eq!(call(&mut s, session, 2, &[], &[]).0, 71, "an epoch out of turn: INVALID_FETCH_SESSION_EPOCH");
    assert_eq!(call(&mut s, session + 1, 1, &[], &[]).0, 70, "FETCH_SESSION_ID_NOT_FOUND");
    // (The refusals do not move the session's epoch.) Forget partition 0: its records
    // are no longer read.
    assert_eq!(call(&mut s, session, 3, &[], &[0]), (0, session, vec![]));
    produce(&mut s, 101, "sess", batch(&[b"four"]));
    assert_eq!(call(&mut s, session, 4, &[], &[]), (0, session, vec![]), "partition 0 was forgotten");
    let (error, closed, answered) = call(&mut s, session, -1, &[(0, 0)], &[]);
    assert_eq!((error, closed, answered), (0, 0, vec![(0, true)]), "epoch -1: closed, a full fetch without session");
    assert_eq!(call(&mut s, session, 5, &[], &[]).0, 70, "the closed session is gone");
}

/// Kafka's classic encoding, for the old versions the kafka-protocol crate no longer has.
fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}
fn get_str(b: &mut Bytes) -> String {
    let len = b.get_i16();
    if len < 0 {
        return String::new();
    }
    String::from_utf8(b.split_to(len as usize).to_vec()).unwrap()
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}
fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Every API at the oldest and the newest version the node serves (Kafka 3.9's ranges),
/// on one connection to a real node, with requests that do something: topics created,
/// described, altered, grown and deleted (the newest DeleteTopics by topic id), records
/// produced and fetched (the newest Fetch by topic id, from Metadata v12), offsets
/// listed, committed and fetched back across versions, a group joined, synced, described,
/// listed, left and deleted. The old versions the kafka-protocol crate dropped (ListOffsets
/// v0, OffsetCommit v0/v1, CreateTopics v0, DeleteTopics v0, DescribeConfigs v0) are
/// written and read here by hand from Kafka's message definitions.
#[test]
fn every_served_api_answers_at_its_oldest_and_newest_version() {
    use kafka_protocol::messages::*;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_kafka(dir.path(), 1, &[]);
    let mut w = Wire { stream: connect(node.kafka_addr().unwrap()), correlation_id: 0 };

    // ApiVersions: the ranges are Kafka 3.9's.
    for version in [0, 4] {
        let r: ApiVersionsResponse = w.call(ApiKey::ApiVersions, version, &ApiVersionsRequest::default());
        let mut got: Vec<(i16, i16, i16)> =
            r.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        let mut want: Vec<(i16, i16, i16)> = KAFKA_3_9.iter().map(|(k, lo, hi)| (*k as i16, *lo, *hi)).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "ApiVersions v{version}");
    }

    // CreateTopics v0 (by hand) and v7.
    let mut body = Vec::new();
    body.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut body, "old");
    body.extend_from_slice(&2i32.to_be_bytes()); // partitions
    body.extend_from_slice(&1i16.to_be_bytes()); // replication factor
    body.extend_from_slice(&0i32.to_be_bytes()); // assignments
    body.extend_from_slice(&0i32.to_be_bytes()); // configs
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    let mut r = w.call_raw(ApiKey::CreateTopics, 0, &body);
    assert_eq!(r.get_i32(), 1);
    assert_eq!((get_str(&mut r), r.get_i16()), ("old".to_string(), 0), "CreateTopics v0");
    assert_eq!(r.remaining(), 0);
    let create = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(name("wire"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let r: CreateTopicsResponse = w.call(ApiKey::CreateTopics, 7, &create);
    let created = &r.topics[0];
    assert_eq!((created.error_code, created.num_partitions), (0, 1), "CreateTopics v7: {r:?}");
    assert!(!created.topic_id.is_nil(), "CreateTopics v7 names the topic's id");

    // Metadata v0, and v12 by id alone.
    let r: MetadataResponse = w.call(
        ApiKey::Metadata,
        0,
        &MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name("wire")))])),
    );
    assert_eq!((r.topics[0].error_code, r.topics[0].partitions.len()), (0, 1), "Metadata v0");
    let r: MetadataResponse = w.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None));
    let me = r.brokers[0].node_id;
    let id = r.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "wire")).unwrap().topic_id;
    assert_eq!(id, created.topic_id, "Metadata v12 and CreateTopics v7 name the same id");
    let r: MetadataResponse = w.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![metadata_request::MetadataRequestTopic::default()
            .with_name(None)
            .with_topic_id(id)])),
    );
    assert_eq!(r.topics[0].name.as_ref().map(|n| n.0.as_str()), Some("wire"), "Metadata v12 by id");

    // Produce v3 and v12.
    for (version, value) in [(3, &b"first"[..]), (12, &b"second"[..])] {
        let p = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
            produce_request::TopicProduceData::default().with_name(name("wire")).with_partition_data(vec![
                produce_request::PartitionProduceData::default().with_index(0).with_records(Some(batch(&[value]))),
            ]),
        ]);
        let r: ProduceResponse = w.call(ApiKey::Produce, version, &p);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0, "Produce v{version}");
    }

    // Fetch v4 by name and v17 by id: both records.
    for version in [4, 17] {
        let topic = fetch_request::FetchTopic::default()
            .with_topic(name(if version < 13 { "wire" } else { "" }))
            .with_topic_id(if version >= 13 { id } else { Default::default() })
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)]);
        let f = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![topic]);
        let r: FetchResponse = w.call(ApiKey::Fetch, version, &f);
        let t = &r.responses[0];
        if version >= 13 {
            assert_eq!(t.topic_id, id, "Fetch v{version} answers by id");
        }
        let p = &t.partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 2), "Fetch v{version}");
        assert!(p.records.as_ref().is_some_and(|r| r.len() > 61), "Fetch v{version}: records");
    }
    // An id no topic has.
    let f = FetchRequest::default().with_max_bytes(1 << 20).with_topics(vec![fetch_request::FetchTopic::default()
        .with_topic_id(uuid::Uuid::from_u128(7))
        .with_partitions(vec![fetch_request::FetchPartition::default().with_partition(0)])]);
    let r: FetchResponse = w.call(ApiKey::Fetch, 17, &f);
    assert_eq!(r.responses[0].partitions[0].error_code, 100, "UNKNOWN_TOPIC_ID");

    // ListOffsets v0 (by hand): latest and earliest, one offset each.
    for (timestamp, expected) in [(-1i64, 2i64), (-2, 0)] {
        let mut body = Vec::new();
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        put_str(&mut body, "wire");
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&timestamp.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        let mut r = w.call_raw(ApiKey::ListOffsets, 0, &body);
        assert_eq!((r.get_i32(), get_str(&mut r), r.get_i32()), (1, "wire".to_string(), 1));
        assert_eq!((r.get_i32(), r.get_i16()), (0, 0), "ListOffsets v0 partition and error");
        assert_eq!((r.get_i32(), r.get_i64()), (1, expected), "ListOffsets v0 at {timestamp}");
        assert_eq!(r.remaining(), 0);
    }
    // ListOffsets v9: latest, max timestamp (the records share one), earliest local,
    // latest tiered (nothing is tiered).
    for (timestamp, expected) in [(-1, 2), (-3, 0), (-4, 0), (-5, -1)] {
        let l = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default().with_name(name("wire")).with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp),
            ]),
        ]);
        let r: ListOffsetsResponse = w.call(ApiKey::ListOffsets, 9, &l);
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset), (0, expected), "ListOffsets v9 at {timestamp}");
    }

    // OffsetCommit v0 and v1 (by hand; both answered in v2's layout), v9; OffsetFetch v0
    // (v1's layout) and v9 (groups in a list) read them back.
    for (version, group, offset) in [(0i16, "g0", 1i64), (1, "g1", 2)] {
        let mut body = Vec::new();
        put_str(&mut body, group);
        if version == 1 {
            body.extend_from_slice(&(-1i32).to_be_bytes());
            put_str(&mut body, "");
        }
        body.extend_from_slice(&1i32.to_be_bytes());
        put_str(&mut body, "wire");
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&offset.to_be_bytes());
        if version == 1 {
            body.extend_from_slice(&(-1i64).to_be_bytes());
        }
        put_str(&mut body, "meta");
        let mut r = w.call_raw(ApiKey::OffsetCommit, version, &body);
        let r = OffsetCommitResponse::decode(&mut r, 2).unwrap();
        assert_eq!(r.topics[0].partitions[0].error_code, 0, "OffsetCommit v{version}");
    }
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(text("g9")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(name("wire"))
            .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(2)])]);
    let r: OffsetCommitResponse = w.call(ApiKey::OffsetCommit, 9, &commit);
    assert_eq!(r.topics[0].partitions[0].error_code, 0, "OffsetCommit v9");
    let fetch0 = OffsetFetchRequest::default().with_group_id(GroupId(text("g0"))).with_topics(Some(vec![
        offset_fetch_request::OffsetFetchRequestTopic::default()
            .with_name(name("wire"))
            .with_partition_indexes(vec![0]),
    ]));
    let r: OffsetFetchResponse = w.call_as(ApiKey::OffsetFetch, 0, 1, &fetch0);
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.committed_offset), (0, 1), "OffsetFetch v0 reads OffsetCommit v0's commit");
    assert_eq!(p.metadata.as_deref(), Some("meta"));
    let groups = ["g1", "g9"].map(|g| {
        offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(GroupId(text(g))).with_topics(None)
    });
    let r: OffsetFetchResponse =
        w.call(ApiKey::OffsetFetch, 9, &OffsetFetchRequest::default().with_groups(groups.to_vec()));
    let got: Vec<(String, i64)> =
        r.groups.iter().map(|g| (g.group_id.0.to_string(), g.topics[0].partitions[0].committed_offset)).collect();
    assert_eq!(got, vec![("g1".to_string(), 2), ("g9".to_string(), 2)], "OffsetFetch v9");

    // FindCoordinator v0 and v5 (keys in a list).
    let r: FindCoordinatorResponse =
        w.call(ApiKey::FindCoordinator, 0, &FindCoordinatorRequest::default().with_key(text("g0")));
    assert_eq!((r.error_code, r.node_id), (0, me), "FindCoordinator v0");
    let r: FindCoordinatorResponse = w.call(
        ApiKey::FindCoordinator,
        5,
        &FindCoordinatorRequest::default().with_coordinator_keys(vec![text("g0"), text("g1")]),
    );
    let got: Vec<(String, i16, BrokerId)> =
        r.coordinators.iter().map(|c| (c.key.to_string(), c.error_code, c.node_id)).collect();
    assert_eq!(got, vec![("g0".to_string(), 0, me), ("g1".to_string(), 0, me)], "FindCoordinator v5");

    // A group: JoinGroup v0 (one member: it leads), SyncGroup v0, Heartbeat v0, then the
    // newest versions: JoinGroup v9 of another group, Heartbeat v4
    // and SyncGroup v5 of a stranger are refused, LeaveGroup v5 and v0.
    let protocol = join_group_request::JoinGroupRequestProtocol::default()
        .with_name(text("range"))
        .with_metadata(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0]));
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(text("j")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![protocol]);
    let r: JoinGroupResponse = w.call(ApiKey::JoinGroup, 0, &join);
    assert_eq!(r.error_code, 0, "JoinGroup v0: {r:?}");
    assert_eq!(r.leader, r.member_id);
    let (member, generation) = (r.member_id.clone(), r.generation_id);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(text("j")))
        .with_generation_id(generation)
        .with_member_id(member.clone())
        .with_assignments(vec![sync_group_request::SyncGroupRequestAssignment::default()
            .with_member_id(member.clone())
            .with_assignment(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0]))]);
    let r: SyncGroupResponse = w.call(ApiKey::SyncGroup, 0, &sync);
    assert_eq!(r.error_code, 0, "SyncGroup v0");
    let beat = HeartbeatRequest::default()
        .with_group_id(GroupId(text("j")))
        .with_generation_id(generation)
        .with_member_id(member.clone());
    let r: HeartbeatResponse = w.call(ApiKey::Heartbeat, 0, &beat);
    assert_eq!(r.error_code, 0, "Heartbeat v0");
    let r: JoinGroupResponse = w.call(ApiKey::JoinGroup, 9, &join.clone().with_group_id(GroupId(text("j9"))));
    // (Kafka asks a new member of v4+ to rejoin with its id first, MEMBER_ID_REQUIRED;
    // Sluice lets it in at once, which clients take as well.)
    assert_eq!(r.error_code, 0, "JoinGroup v9: {r:?}");
    assert!(!r.member_id.is_empty() && r.leader == r.member_id);
    let stranger = beat.clone().with_member_id(text("stranger"));
    let r: HeartbeatResponse = w.call(ApiKey::Heartbeat, 4, &stranger);
    assert_eq!(r.error_code, 25, "Heartbeat v4: UNKNOWN_MEMBER_ID");
    let r: SyncGroupResponse = w.call(
        ApiKey::SyncGroup,
        5,
        &sync.clone().with_member_id(text("stranger")).with_protocol_type(Some(text("consumer"))),
    );
    assert_eq!(r.error_code, 25, "SyncGroup v5: UNKNOWN_MEMBER_ID");
    for version in [0, 5] {
        let r: DescribeGroupsResponse = w.call(
            ApiKey::DescribeGroups,
            version,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(text("j"))]),
        );
        let g = &r.groups[0];
        assert_eq!((g.error_code, g.members.len()), (0, 1), "DescribeGroups v{version}");
        let r: ListGroupsResponse = w.call(ApiKey::ListGroups, version, &ListGroupsRequest::default());
        assert!(r.groups.iter().any(|g| g.group_id.0.as_str() == "j"), "ListGroups v{version}");
    }
    let leave = LeaveGroupRequest::default().with_group_id(GroupId(text("j"))).with_members(vec![
        leave_group_request::MemberIdentity::default().with_member_id(member.clone()).with_reason(Some(text("done"))),
    ]);
    let r: LeaveGroupResponse = w.call(ApiKey::LeaveGroup, 5, &leave);
    assert_eq!((r.error_code, r.members[0].error_code), (0, 0), "LeaveGroup v5");
    let r: LeaveGroupResponse = w.call(
        ApiKey::LeaveGroup,
        0,
        &LeaveGroupRequest::default().with_group_id(GroupId(text("j"))).with_member_id(member),
    );
    assert_eq!(r.error_code, 25, "LeaveGroup v0 of a member that left: UNKNOWN_MEMBER_ID");
    // ElectLeaders: one node leads every partition it has, its preferred replica.
    let elect = ElectLeadersRequest::default().with_timeout_ms(1_000).with_topic_partitions(Some(vec![
        elect_leaders_request::TopicPartitions::default().with_topic(name("wire")).with_partitions(vec![0]),
    ]));
    let r: ElectLeadersResponse = w.call(ApiKey::ElectLeaders, 0, &elect);
    let result = &r.replica_election_results[0].partition_result[0];
    assert_eq!((result.partition_id, result.error_code), (0, 84), "ElectLeaders v0: ELECTION_NOT_NEEDED");
    let r: ElectLeadersResponse =
        w.call(ApiKey::ElectLeaders, 2, &elect.clone().with_election_type(1).with_topic_partitions(None));
    assert!(r.replica_election_results.is_empty(), "ElectLeaders v2, every partition: none needed {r:?}");
    // AlterPartitionReassignments (the node is node 0, the only one): a move to where the
    // partition is succeeds and leaves nothing moving; an unknown node, a repeated one, an
    // unknown partition, a cancel with nothing moving and (v1) a factor change not allowed
    // are refused with Kafka's codes, each with a message.
    let reassign = |moves: Vec<(&str, i32, Option<Vec<i32>>)>| {
        let mut topics: Vec<alter_partition_reassignments_request::ReassignableTopic> = Vec::new();
        for (topic, partition, replicas) in moves {
            let p = alter_partition_reassignments_request::ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect()));
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(
                    alter_partition_reassignments_request::ReassignableTopic::default()
                        .with_name(name(topic))
                        .with_partitions(vec![p]),
                ),
            }
        }
        AlterPartitionReassignmentsRequest::default().with_timeout_ms(10_000).with_topics(topics)
    };
    let moves = reassign(vec![
        ("wire", 0, Some(vec![0])),
        ("wire", 0, Some(vec![7])),
        ("wire", 0, Some(vec![0, 0])),
        ("wire", 99, Some(vec![0])),
        ("nowhere", 0, Some(vec![0])),
        ("wire", 0, None),
    ]);
    for version in [0, 1] {
        let r: AlterPartitionReassignmentsResponse = w.call(ApiKey::AlterPartitionReassignments, version, &moves);
        assert_eq!(r.error_code, 0, "AlterPartitionReassignments v{version}: {r:?}");
        let codes: Vec<i16> = r.responses.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
        // Answered per topic, in the order the topics came.
        assert_eq!(codes, vec![0, 39, 39, 3, 85, 3], "AlterPartitionReassignments v{version}: {r:?}");
        for p in r.responses.iter().flat_map(|t| t.partitions.iter()) {
            assert_eq!(p.error_message.is_some(), p.error_code != 0, "a message with each error only: {r:?}");
        }
        assert_eq!(r.error_message, None);
    }
    let keep = reassign(vec![("wire", 0, Some(vec![0, 7]))]).with_allow_replication_factor_change(false);
    let r: AlterPartitionReassignmentsResponse = w.call(ApiKey::AlterPartitionReassignments, 1, &keep);
    assert_eq!(r.responses[0].partitions[0].error_code, 38, "v1, factor kept: INVALID_REPLICATION_FACTOR {r:?}");
    assert!(!r.allow_replication_factor_change);
    let r: ListPartitionReassignmentsResponse = w.call(
        ApiKey::ListPartitionReassignments,
        0,
        &ListPartitionReassignmentsRequest::default().with_timeout_ms(1_000),
    );
    assert_eq!((r.error_code, r.topics.len()), (0, 0), "ListPartitionReassignments v0: nothing moving {r:?}");
    // UnregisterBroker: an unknown node, and the only (live) one, which is also a voter.
    for (id, code) in [(9, 102), (0, 42)] {
        let r: UnregisterBrokerResponse =
            w.call(ApiKey::UnregisterBroker, 0, &UnregisterBrokerRequest::default().with_broker_id(BrokerId(id)));
        assert_eq!(r.error_code, code, "UnregisterBroker v0 of node {id}: {r:?}");
        assert!(r.error_message.is_some_and(|m| !m.is_empty()), "with why");
    }
    // ConsumerGroupHeartbeat (KIP-848): v0 joins with no member id and is named by the
    // coordinator; v1 names itself. Each is assigned "wire"'s partitions (by topic id) in
    // turn, a second member's share once the first gives it up; both leave (epoch -1).
    let heartbeat = |member: &str, epoch: i32| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(text("kip848")))
            .with_member_id(text(member))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(if epoch == 0 { 30_000 } else { -1 })
            .with_subscribed_topic_names((epoch == 0).then(|| vec![name("wire")]))
    };
    let r: ConsumerGroupHeartbeatResponse = w.call(ApiKey::ConsumerGroupHeartbeat, 0, &heartbeat("", 0));
    assert_eq!(r.error_code, 0, "ConsumerGroupHeartbeat v0: {r:?}");
    let first = r.member_id.clone().expect("the coordinator names a v0 member");
    let assigned = r.assignment.expect("a joining member is told its assignment").topic_partitions;
    assert_eq!((assigned.len(), assigned[0].topic_id), (1, id), "assigned by topic id");
    let all = assigned[0].partitions.len();
    let epoch = r.member_epoch;
    assert!(epoch > 0);
    let r: ConsumerGroupHeartbeatResponse =
        w.call(ApiKey::ConsumerGroupHeartbeat, 1, &heartbeat("b2Yb6HkqRjeUsRczPLaLmg", 0));
    assert_eq!((r.error_code, r.member_id.as_deref()), (0, Some("b2Yb6HkqRjeUsRczPLaLmg")), "v1: {r:?}");
    // ("wire" has one partition: the first member keeps it, the second gets none.)
    let second = r.assignment.expect("a joining member is told its assignment").topic_partitions;
    assert_eq!((all, second.iter().map(|t| t.partitions.len()).sum::<usize>()), (1, 0), "{second:?}");
    let r: ConsumerGroupHeartbeatResponse = w.call(ApiKey::ConsumerGroupHeartbeat, 1, &heartbeat(&first, epoch));
    assert_eq!((r.error_code, r.assignment), (0, None), "nothing changed for the first member");
    assert!(r.member_epoch > epoch, "the first member moves to the group's new epoch");
    let r: ConsumerGroupHeartbeatResponse = w.call(ApiKey::ConsumerGroupHeartbeat, 1, &heartbeat(&first, epoch));
    assert_eq!(r.error_code, 110, "a stale epoch: FENCED_MEMBER_EPOCH");
    for version in [0, 1] {
        let describe = ConsumerGroupDescribeRequest::default().with_group_ids(vec![
            GroupId(text("kip848")),
            GroupId(text("j9")),
            GroupId(text("nobody")),
        ]);
        let r: ConsumerGroupDescribeResponse = w.call(ApiKey::ConsumerGroupDescribe, version, &describe);
        let codes: Vec<i16> = r.groups.iter().map(|g| g.error_code).collect();
        assert_eq!(codes, vec![0, 69, 69], "ConsumerGroupDescribe v{version}: a classic group and none are not found");
        let g = &r.groups[0];
        assert_eq!((g.members.len(), g.assignor_name.as_str()), (2, "uniform"), "{g:?}");
    }
    for member in [first.as_str(), "b2Yb6HkqRjeUsRczPLaLmg"] {
        let r: ConsumerGroupHeartbeatResponse = w.call(ApiKey::ConsumerGroupHeartbeat, 1, &heartbeat(member, -1));
        assert_eq!((r.error_code, r.member_epoch), (0, -1), "leaving: {r:?}");
    }
    // OffsetDelete v0 of g9's commit (nobody subscribes): fetched back, it is gone.
    let d = OffsetDeleteRequest::default().with_group_id(GroupId(text("g9"))).with_topics(vec![
        offset_delete_request::OffsetDeleteRequestTopic::default().with_name(name("wire")).with_partitions(vec![
            offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(0),
        ]),
    ]);
    let r: OffsetDeleteResponse = w.call(ApiKey::OffsetDelete, 0, &d);
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0), "OffsetDelete v0");
    let g9 =
        [offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(GroupId(text("g9"))).with_topics(None)];
    let r: OffsetFetchResponse =
        w.call(ApiKey::OffsetFetch, 9, &OffsetFetchRequest::default().with_groups(g9.to_vec()));
    assert!(r.groups[0].topics.is_empty(), "g9's commit was deleted: {r:?}");
    for (version, group) in [(0, "g0"), (2, "j")] {
        let r: DeleteGroupsResponse = w.call(
            ApiKey::DeleteGroups,
            version,
            &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text(group))]),
        );
        assert_eq!(r.results[0].error_code, 0, "DeleteGroups v{version}");
    }

    // InitProducerId v0 and v5.
    for version in [0, 5] {
        let r: InitProducerIdResponse = w.call(
            ApiKey::InitProducerId,
            version,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
        assert!(r.error_code == 0 && r.producer_id.0 >= 0, "InitProducerId v{version}: {r:?}");
    }

    // AlterConfigs v0 and v2, IncrementalAlterConfigs v0 and v1; DescribeConfigs v0 (by
    // hand: is_default where later versions have the source) and v4 see them.
    for version in [0, 2] {
        let a =
            AlterConfigsRequest::default().with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text("wire"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(text("retention.ms"))
                    .with_value(Some(text("86400000")))])]);
        let r: AlterConfigsResponse = w.call(ApiKey::AlterConfigs, version, &a);
        assert_eq!(r.responses[0].error_code, 0, "AlterConfigs v{version}");
    }
    for version in [0, 1] {
        let a = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text("wire"))
                .with_configs(vec![incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(text("retention.ms"))
                    .with_config_operation(0)
                    .with_value(Some(text("3600000")))]),
        ]);
        let r: IncrementalAlterConfigsResponse = w.call(ApiKey::IncrementalAlterConfigs, version, &a);
        assert_eq!(r.responses[0].error_code, 0, "IncrementalAlterConfigs v{version}");
    }
    let mut body = Vec::new();
    body.extend_from_slice(&1i32.to_be_bytes());
    body.push(2);
    put_str(&mut body, "wire");
    body.extend_from_slice(&(-1i32).to_be_bytes()); // every key
    let mut r = w.call_raw(ApiKey::DescribeConfigs, 0, &body);
    let _throttle = r.get_i32();
    assert_eq!(r.get_i32(), 1);
    assert_eq!(r.get_i16(), 0, "DescribeConfigs v0 error");
    assert_eq!(get_str(&mut r), "", "no error message");
    assert_eq!((r.get_i8(), get_str(&mut r)), (2, "wire".to_string()));
    let mut configs = std::collections::BTreeMap::new();
    for _ in 0..r.get_i32() {
        let (key, value) = (get_str(&mut r), get_str(&mut r));
        let (_read_only, is_default, _sensitive) = (r.get_i8(), r.get_i8(), r.get_i8());
        configs.insert(key, (value, is_default == 1));
    }
    assert_eq!(r.remaining(), 0);
    assert_eq!(configs.get("retention.ms"), Some(&("3600000".to_string(), false)), "DescribeConfigs v0");
    assert!(configs.get("cleanup.policy").is_some_and(|(_, default)| *default), "{configs:?}");
    let d = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("wire"))
            .with_configuration_keys(Some(vec![text("retention.ms")])),
    ]);
    let r: DescribeConfigsResponse = w.call(ApiKey::DescribeConfigs, 4, &d);
    let c = &r.results[0].configs[0];
    assert_eq!((c.value.as_deref(), c.config_source), (Some("3600000"), 1), "DescribeConfigs v4 (topic config)");

    // CreatePartitions v0 and v3; DeleteRecords v0 and v2; DescribeProducers v0.
    for (version, count) in [(0, 3), (3, 4)] {
        let c = CreatePartitionsRequest::default().with_timeout_ms(10_000).with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default().with_name(name("old")).with_count(count),
        ]);
        let r: CreatePartitionsResponse = w.call(ApiKey::CreatePartitions, version, &c);
        assert_eq!(r.results[0].error_code, 0, "CreatePartitions v{version}: {r:?}");
    }
    for (version, offset) in [(0, 1), (2, 2)] {
        let d = DeleteRecordsRequest::default().with_timeout_ms(10_000).with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default().with_name(name("wire")).with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default().with_partition_index(0).with_offset(offset),
            ]),
        ]);
        let r: DeleteRecordsResponse = w.call(ApiKey::DeleteRecords, version, &d);
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.low_watermark), (0, offset), "DeleteRecords v{version}");
    }
    let r: DescribeProducersResponse = w.call(
        ApiKey::DescribeProducers,
        0,
        &DescribeProducersRequest::default().with_topics(vec![describe_producers_request::TopicRequest::default()
            .with_name(name("wire"))
            .with_partition_indexes(vec![0])]),
    );
    assert_eq!(r.topics[0].partitions[0].error_code, 0, "DescribeProducers v0");
    for version in [0, 1] {
        let r: DescribeClusterResponse =
            w.call(ApiKey::DescribeCluster, version, &DescribeClusterRequest::default().with_endpoint_type(1));
        assert_eq!(
            (r.error_code, r.cluster_id.as_str(), r.controller_id),
            (0, "sluice", me),
            "DescribeCluster v{version}"
        );
        assert_eq!(r.brokers.len(), 1);
    }
    for (version, layout) in [(0, 1), (4, 4)] {
        let d = DescribeLogDirsRequest::default().with_topics(Some(vec![
            describe_log_dirs_request::DescribableLogDirTopic::default()
                .with_topic(name("wire"))
                .with_partitions(vec![0]),
        ]));
        let r: DescribeLogDirsResponse = w.call_as(ApiKey::DescribeLogDirs, version, layout, &d);
        let dir = &r.results[0];
        let p = &dir.topics[0].partitions[0];
        assert_eq!((dir.topics.len(), p.partition_index), (1, 0), "DescribeLogDirs v{version}: {r:?}");
        assert!(p.partition_size > 0, "DescribeLogDirs v{version}: the partition's bytes");
        if version >= 4 {
            assert!(dir.total_bytes > 0 && dir.usable_bytes > 0, "{r:?}");
        }
    }

    // SASL users (KIP-554): a user created with a salted password, described, deleted. A
    // SaslHandshake on a listener without SASL is ILLEGAL_SASL_STATE (as Kafka answers).
    let upsert = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
            .with_name(text("wire-user"))
            .with_mechanism(2)
            .with_iterations(8192)
            .with_salt(Bytes::from_static(b"0123456789abcdef"))
            .with_salted_password(Bytes::from(vec![7u8; 64])),
    ]);
    let r: AlterUserScramCredentialsResponse = w.call(ApiKey::AlterUserScramCredentials, 0, &upsert);
    assert_eq!((r.results[0].user.as_str(), r.results[0].error_code), ("wire-user", 0), "{r:?}");
    let r: DescribeUserScramCredentialsResponse =
        w.call(ApiKey::DescribeUserScramCredentials, 0, &DescribeUserScramCredentialsRequest::default());
    let described: Vec<_> = r
        .results
        .iter()
        .map(|u| {
            (u.user.to_string(), u.credential_infos.iter().map(|c| (c.mechanism, c.iterations)).collect::<Vec<_>>())
        })
        .collect();
    assert_eq!(described, vec![("wire-user".to_string(), vec![(2, 8192)])]);
    let delete = AlterUserScramCredentialsRequest::default().with_deletions(vec![
        alter_user_scram_credentials_request::ScramCredentialDeletion::default()
            .with_name(text("wire-user"))
            .with_mechanism(2),
    ]);
    let r: AlterUserScramCredentialsResponse = w.call(ApiKey::AlterUserScramCredentials, 0, &delete);
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
    let r: DescribeUserScramCredentialsResponse =
        w.call(ApiKey::DescribeUserScramCredentials, 0, &DescribeUserScramCredentialsRequest::default());
    assert!(r.results.is_empty(), "{r:?}");
    for version in [0, 1] {
        let handshake = SaslHandshakeRequest::default().with_mechanism(text("PLAIN"));
        let r: SaslHandshakeResponse = w.call(ApiKey::SaslHandshake, version, &handshake);
        assert_eq!(r.error_code, 34, "SaslHandshake v{version} without SASL: ILLEGAL_SASL_STATE");
    }

    // DeleteTopics v0 (by name; answered by hand) and v6 (by id).
    let d = DeleteTopicsRequest::default().with_timeout_ms(10_000).with_topic_names(vec![name("old")]);
    let mut buf = BytesMut::new();
    d.encode(&mut buf, 1).unwrap();
    let mut r = w.call_raw(ApiKey::DeleteTopics, 0, &buf);
    assert_eq!(r.get_i32(), 1);
    assert_eq!((get_str(&mut r), r.get_i16()), ("old".to_string(), 0), "DeleteTopics v0");
    assert_eq!(r.remaining(), 0);
    let d = DeleteTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![delete_topics_request::DeleteTopicState::default().with_topic_id(id)]);
    let r: DeleteTopicsResponse = w.call(ApiKey::DeleteTopics, 6, &d);
    let deleted = &r.responses[0];
    assert_eq!((deleted.error_code, deleted.name.as_ref().map(|n| n.0.as_str())), (0, Some("wire")), "DeleteTopics v6");
    let r: MetadataResponse = w.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None));
    let left: Vec<_> = r.topics.iter().filter(|t| !t.is_internal).map(|t| t.name.clone()).collect();
    assert!(left.is_empty(), "both topics deleted: {left:?}");
}

/// The transaction APIs by raw requests: FindCoordinator for a transactional id (which
/// creates `__transaction_state`), InitProducerId with it, EndTxn with no transaction
/// (INVALID_TXN_STATE), AddPartitionsToTxn v3 and v4's verify-only batch,
/// DescribeTransactions and ListTransactions (filters by state and running time), a
/// stale epoch fenced, an abort completed, and the next InitProducerId bumping the epoch.
#[test]
fn transaction_apis_answer_with_kafkas_states_and_errors() {
    use kafka_protocol::messages::*;
    const INVALID_TXN_STATE: i16 = 48;
    const PRODUCER_FENCED: i16 = 90;
    const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_kafka(dir.path(), 2, &[]);
    node.client().create_topic("t", 2, &[]);
    let mut w = Wire { stream: connect(node.kafka_addr().unwrap()), correlation_id: 0 };
    let id = TransactionalId(text("w-1"));
    let r: FindCoordinatorResponse =
        w.call(ApiKey::FindCoordinator, 3, &FindCoordinatorRequest::default().with_key(text("w-1")).with_key_type(1));
    assert_eq!((r.error_code, r.node_id.0), (0, 0), "FindCoordinator: {r:?}");
    let init = init_transactional(&id.0, 60_000);
    let r: InitProducerIdResponse = w.call(ApiKey::InitProducerId, 4, &init);
    assert_eq!((r.error_code, r.producer_epoch), (0, 0), "{r:?}");
    let pid = r.producer_id;
    let end = |epoch: i16, committed: bool| end_txn(&id, pid, epoch, committed);
    let r: EndTxnResponse = w.call(ApiKey::EndTxn, 3, &end(0, true));
    assert_eq!(r.error_code, INVALID_TXN_STATE, "no transaction to commit");
    let topic = add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
        .with_name(TopicName(text("t")))
        .with_partitions(vec![0, 1]);
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(id.clone())
        .with_v3_and_below_producer_id(pid)
        .with_v3_and_below_producer_epoch(0)
        .with_v3_and_below_topics(vec![topic.clone()]);
    let r: AddPartitionsToTxnResponse = w.call(ApiKey::AddPartitionsToTxn, 3, &add);
    let codes: Vec<i16> =
        r.results_by_topic_v3_and_below[0].results_by_partition.iter().map(|p| p.partition_error_code).collect();
    assert_eq!(codes, vec![0, 0], "{r:?}");
    let verify = AddPartitionsToTxnRequest::default().with_transactions(vec![
        add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
            .with_transactional_id(id.clone())
            .with_producer_id(pid)
            .with_producer_epoch(0)
            .with_verify_only(true)
            .with_topics(vec![topic]),
    ]);
    let r: AddPartitionsToTxnResponse = w.call(ApiKey::AddPartitionsToTxn, 4, &verify);
    assert!(
        r.results_by_transaction[0].topic_results[0].results_by_partition.iter().all(|p| p.partition_error_code == 0),
        "{r:?}"
    );
    let describe = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![id.clone(), TransactionalId(text("nobody"))]);
    let r: DescribeTransactionsResponse = w.call(ApiKey::DescribeTransactions, 0, &describe);
    let state = &r.transaction_states[0];
    assert_eq!((state.error_code, state.transaction_state.as_str(), state.producer_id), (0, "Ongoing", pid));
    assert_eq!(state.topics[0].partitions, vec![0, 1]);
    assert_eq!(r.transaction_states[1].error_code, TRANSACTIONAL_ID_NOT_FOUND);
    let list = |states: &[&str], duration: i64| {
        ListTransactionsRequest::default()
            .with_state_filters(states.iter().map(|s| text(s)).collect())
            .with_duration_filter(duration)
    };
    let r: ListTransactionsResponse = w.call(ApiKey::ListTransactions, 1, &list(&["Ongoing"], -1));
    assert_eq!(r.transaction_states.len(), 1, "{r:?}");
    let r: ListTransactionsResponse = w.call(ApiKey::ListTransactions, 1, &list(&[], 3_600_000));
    assert!(r.transaction_states.is_empty(), "no transaction has run for an hour: {r:?}");
    let r: ListTransactionsResponse = w.call(ApiKey::ListTransactions, 0, &list(&["Bogus"], -1));
    assert_eq!(r.unknown_state_filters, vec![text("Bogus")]);
    let r: EndTxnResponse = w.call(ApiKey::EndTxn, 3, &end(1, true));
    assert_eq!(r.error_code, PRODUCER_FENCED, "another epoch");
    let r: EndTxnResponse = w.call(ApiKey::EndTxn, 3, &end(0, false));
    assert_eq!(r.error_code, 0, "abort");
    assert!(w.wait_for_transaction_state(&id, "CompleteAbort", TIMEOUT).topics.is_empty());
    let r: InitProducerIdResponse = w.call(ApiKey::InitProducerId, 4, &init);
    assert_eq!((r.error_code, r.producer_id, r.producer_epoch), (0, pid, 1), "{r:?}");
}

/// KIP-890 part 1 for transactions v1 clients (librdkafka and kafka-python send
/// AddPartitionsToTxn v0-v3 and Produce below v12): a partition's first transactional
/// batch is confirmed at the coordinator before it is appended. A partition not added
/// to the transaction, and a produce that arrives after its transaction was aborted (a
/// request held up in the network while the producer gave up on it), get
/// INVALID_TXN_STATE; before, the late batch opened a transaction that no marker would
/// ever close, and the partition's last stable offset stopped there for good.
#[test]
fn transactions_v1_produce_is_verified_so_a_late_batch_cannot_leave_a_transaction_hanging() {
    use kafka_protocol::messages::*;
    const INVALID_TXN_STATE: i16 = 48;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_kafka(dir.path(), 2, &[]);
    node.client().create_topic("v1", 2, &[]);
    let mut w = Wire { stream: connect(node.kafka_addr().unwrap()), correlation_id: 0 };
    let id = TransactionalId(text("v1-late"));
    let r: FindCoordinatorResponse = w.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(text("v1-late")).with_key_type(1),
    );
    assert_eq!(r.error_code, 0, "{r:?}");
    let init = init_transactional(&id.0, 60_000);
    let r: InitProducerIdResponse = w.call(ApiKey::InitProducerId, 4, &init);
    assert_eq!((r.error_code, r.producer_epoch), (0, 0), "{r:?}");
    let pid = r.producer_id;
    let add = |w: &mut Wire, partition: i32| {
        let add = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(id.clone())
            .with_v3_and_below_producer_id(pid)
            .with_v3_and_below_producer_epoch(0)
            .with_v3_and_below_topics(vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(name("v1"))
                .with_partitions(vec![partition])]);
        let r: AddPartitionsToTxnResponse = w.call(ApiKey::AddPartitionsToTxn, 3, &add);
        assert_eq!(r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0, "{r:?}");
    };
    let produce = |w: &mut Wire, partition: i32, sequence: i32| -> i16 {
        let data = produce_request::PartitionProduceData::default()
            .with_index(partition)
            .with_records(Some(txn_batch(pid.0, 0, sequence, &[b"a", b"b"])));
        let request = ProduceRequest::default()
            .with_transactional_id(Some(id.clone()))
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(name("v1"))
                .with_partition_data(vec![data])]);
        let r: ProduceResponse = w.call(ApiKey::Produce, 9, &request);
        r.responses[0].partition_responses[0].error_code
    };
    let end = |w: &mut Wire, committed: bool, state: &str| {
        let r: EndTxnResponse = w.call(ApiKey::EndTxn, 3, &end_txn(&id, pid, 0, committed));
        assert_eq!(r.error_code, 0, "{r:?}");
        w.wait_for_transaction_state(&id, state, TIMEOUT);
    };
    // (high watermark, last stable offset) of v1-0, read_committed.
    let ends = |w: &mut Wire| {
        let fetch =
            FetchRequest::default().with_max_wait_ms(0).with_isolation_level(1).with_max_bytes(1 << 20).with_topics(
                vec![fetch_request::FetchTopic::default().with_topic(name("v1")).with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ])],
            );
        let r: FetchResponse = w.call(ApiKey::Fetch, 11, &fetch);
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "{p:?}");
        (p.high_watermark, p.last_stable_offset)
    };

    add(&mut w, 0);
    assert_eq!(produce(&mut w, 0, 0), 0, "v1-0 was added");
    assert_eq!(produce(&mut w, 1, 0), INVALID_TXN_STATE, "v1-1 was not added to the transaction");
    end(&mut w, false, "CompleteAbort");
    assert_eq!(ends(&mut w), (3, 3), "two aborted records and the marker");
    // The late produce: the next batch of the aborted transaction.
    assert_eq!(produce(&mut w, 0, 2), INVALID_TXN_STATE, "its transaction was aborted");
    assert_eq!(ends(&mut w), (3, 3), "nothing appended, no transaction left open");
    // The next transaction adds v1-0 again and goes on from the next sequence number.
    add(&mut w, 0);
    assert_eq!(produce(&mut w, 0, 2), 0);
    assert_eq!(produce(&mut w, 0, 4), 0, "the transaction is open here: nothing to verify");
    assert_eq!(ends(&mut w), (7, 3), "open from offset 3");
    end(&mut w, true, "CompleteCommit");
    assert_eq!(ends(&mut w), (8, 8));
}

/// Transactions v2 (KIP-890 part 2) as a Kafka 4 client speaks it once ApiVersions
/// finalizes `transaction.version` 2: a Produce v12 joins its partitions to the
/// transaction (no AddPartitionsToTxn), TxnOffsetCommit v5 joins the group's offsets
/// (no AddOffsetsToTxn), and EndTxn v5 answers the next epoch, which the markers carry:
/// the old epoch is fenced, a retried EndTxn gets the same answer, an empty abort bumps
/// the epoch too and an empty commit is INVALID_TXN_STATE. A read_committed fetch
/// names the aborted transaction and stops at the last stable offset.
#[test]
fn transactions_v2_join_partitions_by_produce_and_bump_the_epoch_with_every_transaction() {
    use kafka_protocol::messages::*;
    const INVALID_TXN_STATE: i16 = 48;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_with_kafka(dir.path(), 2, &[]);
    node.client().create_topic("t2", 2, &[]);
    let mut w = Wire { stream: connect(node.kafka_addr().unwrap()), correlation_id: 0 };
    let r: ApiVersionsResponse = w.call(ApiKey::ApiVersions, 4, &ApiVersionsRequest::default());
    let feature = r.finalized_features.iter().find(|f| f.name.as_str() == "transaction.version");
    assert_eq!(feature.map(|f| f.max_version_level), Some(2), "{r:?}");
    assert!(r.finalized_features_epoch >= 0);
    let id = TransactionalId(text("v2-1"));
    let r: FindCoordinatorResponse =
        w.call(ApiKey::FindCoordinator, 3, &FindCoordinatorRequest::default().with_key(text("v2-1")).with_key_type(1));
    assert_eq!(r.error_code, 0, "{r:?}");
    let init = init_transactional(&id.0, 60_000);
    let r: InitProducerIdResponse = w.call(ApiKey::InitProducerId, 5, &init);
    assert_eq!((r.error_code, r.producer_epoch), (0, 0), "{r:?}");
    let pid = r.producer_id;
    let produce = |w: &mut Wire, epoch: i16, sequence: i32, partitions: &[i32]| -> Vec<i16> {
        let data = partitions
            .iter()
            .map(|p| {
                produce_request::PartitionProduceData::default().with_index(*p).with_records(Some(txn_batch(
                    pid.0,
                    epoch,
                    sequence,
                    &[b"a", b"b"],
                )))
            })
            .collect();
        let request = ProduceRequest::default()
            .with_transactional_id(Some(id.clone()))
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(name("t2"))
                .with_partition_data(data)]);
        let r: ProduceResponse = w.call(ApiKey::Produce, 12, &request);
        r.responses[0].partition_responses.iter().map(|p| p.error_code).collect()
    };
    let end = |epoch: i16, committed: bool| end_txn(&id, pid, epoch, committed);
    let describe = DescribeTransactionsRequest::default().with_transactional_ids(vec![id.clone()]);
    let joined = |w: &mut Wire| {
        let r: DescribeTransactionsResponse = w.call(ApiKey::DescribeTransactions, 0, &describe);
        let state = &r.transaction_states[0];
        let topics: Vec<(String, Vec<i32>)> =
            state.topics.iter().map(|t| (t.topic.0.to_string(), t.partitions.clone())).collect();
        (state.transaction_state.to_string(), state.producer_epoch, topics)
    };

    // Transaction 1, epoch 0: two partitions joined by the produce, then the offsets.
    assert_eq!(produce(&mut w, 0, 0, &[0, 1]), [0, 0]);
    let (state, _, topics) = joined(&mut w);
    assert_eq!((state.as_str(), topics), ("Ongoing", vec![("t2".to_string(), vec![0, 1])]));
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(id.clone())
        .with_group_id(GroupId(text("g-v2")))
        .with_producer_id(pid)
        .with_producer_epoch(0)
        .with_generation_id(-1)
        .with_member_id(text(""))
        .with_topics(vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
            .with_name(name("t2"))
            .with_partitions(vec![txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(2)])]);
    let r: TxnOffsetCommitResponse = w.call(ApiKey::TxnOffsetCommit, 5, &commit);
    assert_eq!(r.topics[0].partitions[0].error_code, 0, "{r:?}");
    let (_, _, topics) = joined(&mut w);
    assert!(topics.iter().any(|(t, _)| t == "__consumer_offsets"), "the group's offsets joined: {topics:?}");
    let r: EndTxnResponse = w.call(ApiKey::EndTxn, 5, &end(0, true));
    assert_eq!((r.error_code, r.producer_id, r.producer_epoch), (0, pid, 1), "commit: {r:?}");
    let r: EndTxnResponse = w.call(ApiKey::EndTxn, 5, &end(0, true));
    assert_eq!((r.error_code, r.producer_id, r.producer_epoch), (0, pid, 1), "a retried commit: {r:?}");
    assert_eq!(joined(&mut w).0, "CompleteCommit");
    let fenced = produce(&mut w, 0, 2, &[0]);
    assert!(fenced[0] == 47 || fenced[0] == 90, "the old epoch is fenced by the markers: {fenced:?}");

    // Transaction 2, epoch 1, from sequence 0 again: aborted.
    assert_eq!(produce(&mut w, 1, 0, &[0]), [0]);
    let r: EndTxnResponse = w.call(ApiKey::EndTxn, 5, &end(1, false));
    assert_eq!((r.error_code, r.producer_epoch), (0, 2), "abort: {r:?}");
    // Empty transactions at epoch 2: a commit is refused, an abort bumps.
    let r: EndTxnResponse = w.call(ApiKey::EndTxn, 5, &end(2, true));
    assert_eq!(r.error_code, INVALID_TXN_STATE, "nothing to commit: {r:?}");
    let r: EndTxnResponse = w.call(ApiKey::EndTxn, 5, &end(2, false));
    assert_eq!((r.error_code, r.producer_epoch), (0, 3), "an empty abort: {r:?}");
    let (state, epoch, _) = joined(&mut w);
    assert_eq!((state.as_str(), epoch), ("CompleteAbort", 3));

    // t2-0 holds 2 committed records, the commit marker, 2 aborted records and the
    // abort marker; read_committed reads it all, naming the aborted transaction.
    let fetch =
        FetchRequest::default().with_max_wait_ms(0).with_isolation_level(1).with_max_bytes(1 << 20).with_topics(vec![
            fetch_request::FetchTopic::default().with_topic(name("t2")).with_partitions(vec![
                fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20),
            ]),
        ]);
    let r: FetchResponse = w.call(ApiKey::Fetch, 11, &fetch);
    let p = &r.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark, p.last_stable_offset), (0, 6, 6), "{p:?}");
    let aborted: Vec<(i64, i64)> =
        p.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset)).collect();
    assert_eq!(aborted, [(pid.0, 3)], "the aborted transaction, from its first offset");
}

/// A transactional id with no transaction open and no change for longer than
/// `--transactional-id-expiration-ms` is forgotten (Kafka's
/// transactional.id.expiration.ms), and stays forgotten after a kill -9 and restart; an
/// id with a transaction open is not.
#[test]
fn idle_transactional_ids_expire_and_stay_forgotten_across_a_restart() {
    use kafka_protocol::messages::*;
    const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start_with_kafka(dir.path(), 1, &["--transactional-id-expiration-ms", "2000"]);
    node.client().create_topic("exp", 1, &[]);
    let mut w = Wire::connect(node.kafka_addr().unwrap());
    let init = |id: &str| init_transactional(id, 600_000);
    let r: FindCoordinatorResponse =
        w.call(ApiKey::FindCoordinator, 3, &FindCoordinatorRequest::default().with_key(text("idle")).with_key_type(1));
    assert_eq!(r.error_code, 0);
    let r: InitProducerIdResponse = w.call(ApiKey::InitProducerId, 4, &init("idle"));
    assert_eq!(r.error_code, 0, "{r:?}");
    let r: InitProducerIdResponse = w.call(ApiKey::InitProducerId, 4, &init("busy"));
    assert_eq!(r.error_code, 0, "{r:?}");
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(text("busy")))
        .with_v3_and_below_producer_id(r.producer_id)
        .with_v3_and_below_producer_epoch(r.producer_epoch)
        .with_v3_and_below_topics(vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
            .with_name(name("exp"))
            .with_partitions(vec![0])]);
    let r: AddPartitionsToTxnResponse = w.call(ApiKey::AddPartitionsToTxn, 3, &add);
    assert_eq!(r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0);
    let describe = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(text("idle")), TransactionalId(text("busy"))]);
    let codes = |w: &mut Wire| -> Vec<i16> {
        let r: DescribeTransactionsResponse = w.call(ApiKey::DescribeTransactions, 0, &describe);
        r.transaction_states.iter().map(|s| s.error_code).collect()
    };
    assert_eq!(codes(&mut w), [0, 0]);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while codes(&mut w) != [TRANSACTIONAL_ID_NOT_FOUND, 0] {
        assert!(std::time::Instant::now() < deadline, "the idle id was not forgotten: {:?}", codes(&mut w));
        std::thread::sleep(Duration::from_millis(200));
    }
    node.kill9_and_wait();
    node.restart();
    let mut w = Wire::connect(node.kafka_addr().unwrap());
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let now = codes(&mut w);
        if now == [TRANSACTIONAL_ID_NOT_FOUND, 0] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "after the restart: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

// SASL ---------------------------------------------------------------------------------------

/// SaslHandshake v1 for `mechanism` then one SaslAuthenticate v2 with `token` on `w`.
fn sasl_login(w: &mut Wire, mechanism: &str, token: &[u8]) -> kafka_protocol::messages::SaslAuthenticateResponse {
    use kafka_protocol::messages::*;
    let handshake = SaslHandshakeRequest::default().with_mechanism(text(mechanism));
    let r: SaslHandshakeResponse = w.call(ApiKey::SaslHandshake, 1, &handshake);
    assert_eq!(r.error_code, 0, "SaslHandshake for {mechanism}: {r:?}");
    let authenticate = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::copy_from_slice(token));
    w.call(ApiKey::SaslAuthenticate, 2, &authenticate)
}

/// A PLAIN token for `user` and `password`.
fn plain(user: &str, password: &str) -> Vec<u8> {
    format!("\0{user}\0{password}").into_bytes()
}

/// A request on `stream` that the node must answer by closing the connection.
fn refused_by_closing(stream: &mut TcpStream, key: ApiKey, version: i16, body: &impl Encodable) -> bool {
    send_raw(stream, &request(key, version, 99, body));
    receive(stream).is_none()
}

/// A SASL_PLAINTEXT listener, byte by byte: before a login only ApiVersions and the SASL
/// requests are served (anything else closes the connection); an unknown mechanism, a
/// SaslAuthenticate without a handshake and a wrong password get Kafka's errors and the
/// connection closed; a login lasts --connections-max-reauth-ms (said in the answer), a
/// re-authentication as the same user extends it and one as another user is refused, and
/// an expired login's next request closes the connection; Kafka's original framing (raw
/// tokens after a v0 handshake) works; hundreds of garbage tokens leave the node serving.
#[test]
fn a_sasl_listener_serves_only_logged_in_connections() {
    use kafka_protocol::messages::*;
    let dir = tempfile::tempdir().unwrap();
    let kafka = sluice_tests::node_client::free_loopback_addr();
    let listen = format!("SASL_PLAINTEXT://{kafka}");
    let args =
        ["--kafka-listen", &listen, "--connections-max-reauth-ms", "2000", "--sasl-mechanisms", "PLAIN,SCRAM-SHA-256"];
    let node = NodeProcess::start_with_env(
        &dir.path().join("data"),
        1,
        &args,
        &[("SLUICE_BOOTSTRAP_USER", "alice:wonderland")],
    );
    let metadata = MetadataRequest::default().with_topics(Some(Vec::new()));

    // The bootstrap user appears once the node is its own controller.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut w = loop {
        let mut w = Wire::connect(kafka);
        if sasl_login(&mut w, "PLAIN", &plain("alice", "wonderland")).error_code == 0 {
            break w;
        }
        assert!(std::time::Instant::now() < deadline, "the bootstrap user never worked:\n{}", node.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    };
    let r: MetadataResponse = w.call(ApiKey::Metadata, 12, &metadata);
    assert_eq!(r.brokers.len(), 1, "a logged-in connection is served");

    // Before a login: ApiVersions yes (with the SASL APIs), Metadata no.
    let mut fresh = Wire::connect(kafka);
    let r: ApiVersionsResponse = fresh.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert!(r.api_keys.iter().any(|k| k.api_key == ApiKey::SaslAuthenticate as i16 && k.max_version == 2));
    assert!(refused_by_closing(&mut fresh.stream, ApiKey::Metadata, 12, &metadata), "Metadata before a login");

    // An unknown mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled ones, then closed.
    let mut s = connect(kafka);
    send_raw(
        &mut s,
        &request(ApiKey::SaslHandshake, 1, 1, &SaslHandshakeRequest::default().with_mechanism(text("GSSAPI"))),
    );
    let r: SaslHandshakeResponse = response(ApiKey::SaslHandshake, 1, 1, receive(&mut s).unwrap());
    let enabled: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!((r.error_code, enabled), (33, vec!["PLAIN", "SCRAM-SHA-256"]));
    assert!(closed_by_node(&mut s));

    // SaslAuthenticate with no handshake: ILLEGAL_SASL_STATE, closed.
    let mut s = connect(kafka);
    let token = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(plain("alice", "wonderland")));
    send_raw(&mut s, &request(ApiKey::SaslAuthenticate, 2, 1, &token));
    let r: SaslAuthenticateResponse = response(ApiKey::SaslAuthenticate, 2, 1, receive(&mut s).unwrap());
    assert_eq!(r.error_code, 34);
    assert!(closed_by_node(&mut s));

    // A wrong password: SASL_AUTHENTICATION_FAILED, closed.
    let mut wrong = Wire::connect(kafka);
    let r = sasl_login(&mut wrong, "PLAIN", &plain("alice", "looking-glass"));
    assert_eq!(r.error_code, 58, "{r:?}");
    assert!(r.error_message.as_ref().is_some_and(|m| m.contains("invalid credentials")), "{r:?}");
    assert!(closed_by_node(&mut wrong.stream));

    // A second user, made with a salted password as Kafka's AlterUserScramCredentials carries it.
    let salt = b"bob's salt";
    let salted =
        sluice_schemas::sasl::salted_password(sluice_schemas::sasl::ScramMechanism::Sha256, b"builder", salt, 4096);
    let upsert = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
            .with_name(text("bob"))
            .with_mechanism(1)
            .with_iterations(4096)
            .with_salt(Bytes::from_static(salt))
            .with_salted_password(Bytes::from(salted)),
    ]);
    let r: AlterUserScramCredentialsResponse = w.call(ApiKey::AlterUserScramCredentials, 0, &upsert);
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
    let mut as_bob = Wire::connect(kafka);
    assert_eq!(
        sasl_login(&mut as_bob, "PLAIN", &plain("bob", "builder")).error_code,
        0,
        "PLAIN checks the SCRAM credential"
    );

    // The login lasts 2 s; re-authenticating as alice extends it, as bob is refused.
    let mut timed = Wire::connect(kafka);
    let r = sasl_login(&mut timed, "PLAIN", &plain("alice", "wonderland"));
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 2000));
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(sasl_login(&mut timed, "PLAIN", &plain("alice", "wonderland")).error_code, 0, "re-authentication");
    std::thread::sleep(Duration::from_millis(1200));
    let r: MetadataResponse = timed.call(ApiKey::Metadata, 12, &metadata);
    assert_eq!(r.brokers.len(), 1, "served 2.4 s after the first login: the re-authentication extended it");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(refused_by_closing(&mut timed.stream, ApiKey::Metadata, 12, &metadata), "an expired login");
    let mut switch = Wire::connect(kafka);
    assert_eq!(sasl_login(&mut switch, "PLAIN", &plain("alice", "wonderland")).error_code, 0);
    assert_eq!(
        sasl_login(&mut switch, "PLAIN", &plain("bob", "builder")).error_code,
        58,
        "another user on the connection"
    );
    assert!(closed_by_node(&mut switch.stream));

    // Kafka's original framing: after a v0 handshake, raw size-prefixed tokens both ways.
    for (password, works) in [("wonderland", true), ("looking-glass", false)] {
        let mut s = connect(kafka);
        send_raw(
            &mut s,
            &request(ApiKey::SaslHandshake, 0, 1, &SaslHandshakeRequest::default().with_mechanism(text("PLAIN"))),
        );
        let r: SaslHandshakeResponse = response(ApiKey::SaslHandshake, 0, 1, receive(&mut s).unwrap());
        assert_eq!(r.error_code, 0);
        send_raw(&mut s, &plain("alice", password));
        if works {
            assert_eq!(receive(&mut s).map(|b| b.len()), Some(0), "an empty raw token answers a PLAIN login");
            send_raw(&mut s, &request(ApiKey::Metadata, 12, 2, &metadata));
            let r: MetadataResponse = response(ApiKey::Metadata, 12, 2, receive(&mut s).unwrap());
            assert_eq!(r.brokers.len(), 1);
        } else {
            assert!(receive(&mut s).is_none(), "a failed raw login closes the connection");
        }
    }

    // Re-authenticating with another mechanism is refused (KIP-368 keeps the mechanism).
    let mut other = Wire::connect(kafka);
    assert_eq!(sasl_login(&mut other, "PLAIN", &plain("alice", "wonderland")).error_code, 0);
    let r: SaslHandshakeResponse =
        other.call(ApiKey::SaslHandshake, 1, &SaslHandshakeRequest::default().with_mechanism(text("SCRAM-SHA-256")));
    assert_eq!(r.error_code, 34, "another mechanism on re-authentication");
    assert!(closed_by_node(&mut other.stream));
    // Before a login a frame is at most 512 KiB (Kafka's sasl.server.max.receive.size).
    let mut big = connect(kafka);
    std::io::Write::write_all(&mut big, &(1u32 << 20).to_be_bytes()).unwrap();
    assert!(closed_by_node(&mut big), "a 1 MiB frame before a login");

    // Garbage tokens (random, and mutated good ones) for each mechanism: refused, never a crash.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let good: [&[u8]; 2] = [b"\0alice\0wonderland", b"n,,n=alice,r=abcdefgh"];
    for i in 0..300 {
        let mechanism = if i % 2 == 0 { "PLAIN" } else { "SCRAM-SHA-256" };
        let mut token = good[i % 2].to_vec();
        if i % 3 == 0 {
            token = (0..next() % 64).map(|_| next() as u8).collect();
        } else {
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % token.len();
                token[at] = next() as u8;
            }
        }
        let mut w = Wire::connect(kafka);
        let handshake = SaslHandshakeRequest::default().with_mechanism(text(mechanism));
        let _: SaslHandshakeResponse = w.call(ApiKey::SaslHandshake, 1, &handshake);
        send_raw(
            &mut w.stream,
            &request(
                ApiKey::SaslAuthenticate,
                2,
                9,
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
            ),
        );
        let _ = receive(&mut w.stream);
    }
    let mut after = Wire::connect(kafka);
    assert_eq!(sasl_login(&mut after, "PLAIN", &plain("alice", "wonderland")).error_code, 0, "still serving logins");
    let r: MetadataResponse = after.call(ApiKey::Metadata, 12, &metadata);
    assert_eq!(r.brokers.len(), 1);
    assert!(!node.log().contains("panicked"), "{}", node.log_tail());
}

/// A logged-in connection at `kafka` as `user` (PLAIN), retried until the user exists.
fn logged_in(kafka: std::net::SocketAddr, user: &str, password: &str, node: &NodeProcess) -> Wire {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut w = Wire::connect(kafka);
        if sasl_login(&mut w, "PLAIN", &plain(user, password)).error_code == 0 {
            return w;
        }
        assert!(std::time::Instant::now() < deadline, "{user} never logged in:\n{}", node.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--authorizer acl`, byte by byte: a principal with no ACLs gets Kafka's authorization
/// error from every API that names a resource (TOPIC_, GROUP_, CLUSTER_ and
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED in each response's own place), sees no topics
/// and no groups in listings; CreateAcls (v1 literal, v3 prefixed; a malformed entry is
/// INVALID_REQUEST), DescribeAcls with a MATCH filter and DeleteAcls by filter work for
/// a super user, and an ACL takes effect for the next request.
#[test]
fn acls_answer_kafkas_authorization_errors_api_by_api() {
    use kafka_protocol::messages::*;
    let dir = tempfile::tempdir().unwrap();
    let kafka = sluice_tests::node_client::free_loopback_addr();
    let listen = format!("SASL_PLAINTEXT://{kafka}");
    let args = ["--kafka-listen", &listen, "--authorizer", "acl", "--super-users", "User:admin"];
    let node =
        NodeProcess::start_with_env(&dir.path().join("data"), 1, &args, &[("SLUICE_BOOTSTRAP_USER", "admin:pw")]);
    let mut admin = logged_in(kafka, "admin", "pw", &node);
    let salted =
        sluice_schemas::sasl::salted_password(sluice_schemas::sasl::ScramMechanism::Sha256, b"bob-pw", b"salt", 4096);
    let bob_user = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
            .with_name(text("bob"))
            .with_mechanism(1)
            .with_iterations(4096)
            .with_salt(Bytes::from_static(b"salt"))
            .with_salted_password(Bytes::from(salted)),
    ]);
    let r: AlterUserScramCredentialsResponse = admin.call(ApiKey::AlterUserScramCredentials, 0, &bob_user);
    assert_eq!(r.results[0].error_code, 0);
    let create = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(name("t"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let r: CreateTopicsResponse = admin.call(ApiKey::CreateTopics, 7, &create);
    assert_eq!(r.topics[0].error_code, 0, "a super user creates topics");
    let mut bob = logged_in(kafka, "bob", "bob-pw", &node);

    // No ACL for bob: each API's authorization error in its place.
    let r: CreateTopicsResponse = bob.call(ApiKey::CreateTopics, 7, &create);
    assert_eq!(r.topics[0].error_code, 29, "CreateTopics");
    let all: MetadataResponse = bob.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None));
    assert!(all.topics.is_empty(), "a listing hides what bob may not describe: {:?}", all.topics);
    let named = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name("t")))]));
    let r: MetadataResponse = bob.call(ApiKey::Metadata, 12, &named);
    assert_eq!(r.topics[0].error_code, 29, "Metadata by name");
    let r: ProduceResponse = bob.call(
        ApiKey::Produce,
        9,
        &ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
            TopicProduceData::default().with_name(name("t")).with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(&[b"x"])))]),
        ]),
    );
    assert_eq!(r.responses[0].partition_responses[0].error_code, 29, "Produce");
    let fetch = FetchRequest::default().with_max_wait_ms(0).with_topics(vec![fetch_request::FetchTopic::default()
        .with_topic(name("t"))
        .with_partitions(vec![fetch_request::FetchPartition::default().with_partition(0)])]);
    let r: FetchResponse = bob.call(ApiKey::Fetch, 12, &fetch);
    assert_eq!(r.responses[0].partitions[0].error_code, 29, "Fetch");
    let list = ListOffsetsRequest::default().with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
        .with_name(name("t"))
        .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1)])]);
    let r: ListOffsetsResponse = bob.call(ApiKey::ListOffsets, 7, &list);
    assert_eq!(r.topics[0].partitions[0].error_code, 29, "ListOffsets");
    let r: FindCoordinatorResponse =
        bob.call(ApiKey::FindCoordinator, 3, &FindCoordinatorRequest::default().with_key(text("g")));
    assert_eq!(r.error_code, 30, "FindCoordinator");
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(text("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(text("consumer"));
    let r: JoinGroupResponse = bob.call(ApiKey::JoinGroup, 7, &join);
    assert_eq!(r.error_code, 30, "JoinGroup");
    let r: OffsetFetchResponse =
        bob.call(ApiKey::OffsetFetch, 7, &OffsetFetchRequest::default().with_group_id(GroupId(text("g"))));
    assert_eq!(r.error_code, 30, "OffsetFetch");
    let r: DescribeGroupsResponse =
        bob.call(ApiKey::DescribeGroups, 5, &DescribeGroupsRequest::default().with_groups(vec![GroupId(text("g"))]));
    assert_eq!(r.groups[0].error_code, 30, "DescribeGroups");
    let r: InitProducerIdResponse =
        bob.call(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default().with_producer_id(ProducerId(-1)));
    assert_eq!(r.error_code, 31, "an idempotent InitProducerId");
    let txn = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(text("tx"))))
        .with_transaction_timeout_ms(10_000)
        .with_producer_id(ProducerId(-1));
    let r: InitProducerIdResponse = bob.call(ApiKey::InitProducerId, 4, &txn);
    assert_eq!(r.error_code, 53, "a transactional InitProducerId");
    let r: DescribeClusterResponse = bob.call(ApiKey::DescribeCluster, 0, &DescribeClusterRequest::default());
    assert_eq!(r.error_code, 0, "DescribeCluster is answered to every principal, as Kafka does");
    // By id, an unauthorized topic's name is not told.
    let id = {
        let r: MetadataResponse = admin.call(ApiKey::Metadata, 12, &named);
        r.topics[0].topic_id
    };
    let by_id = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(None).with_topic_id(id)]));
    let r: MetadataResponse = bob.call(ApiKey::Metadata, 12, &by_id);
    assert_eq!((r.topics[0].error_code, r.topics[0].name.is_none()), (29, true), "Metadata by id: {r:?}");
    // Transactional batches need WRITE on a transactional id, also when none is named.
    let transactional =
        ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default(
        )
        .with_name(name("t"))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(txn_batch(
            7,
            0,
            0,
            &[b"x"],
        )))])]);
    let r: ProduceResponse = bob.call(ApiKey::Produce, 9, &transactional);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 53, "transactional batches without an id");
    let broker = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(text("0")),
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("t")),
    ]);
    let r: DescribeConfigsResponse = bob.call(ApiKey::DescribeConfigs, 4, &broker);
    assert_eq!((r.results[0].error_code, r.results[1].error_code), (31, 29), "DescribeConfigs");
    let r: DescribeUserScramCredentialsResponse =
        bob.call(ApiKey::DescribeUserScramCredentials, 0, &DescribeUserScramCredentialsRequest::default());
    assert_eq!(r.error_code, 31, "DescribeUserScramCredentials");
    let r: DescribeAclsResponse = bob.call(ApiKey::DescribeAcls, 3, &DescribeAclsRequest::default());
    assert_eq!(r.error_code, 31, "DescribeAcls");
    let r: ListGroupsResponse = bob.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert_eq!((r.error_code, r.groups.len()), (0, 0), "ListGroups shows nothing");
    let entry = |name: &str, pattern: i8, operation: i8| {
        create_acls_request::AclCreation::default()
            .with_resource_type(2)
            .with_resource_name(text(name))
            .with_resource_pattern_type(pattern)
            .with_principal(text("User:bob"))
            .with_host(text("*"))
            .with_operation(operation)
            .with_permission_type(3)
    };
    let r: CreateAclsResponse =
        bob.call(ApiKey::CreateAcls, 3, &CreateAclsRequest::default().with_creations(vec![entry("t", 3, 3)]));
    assert_eq!(r.results[0].error_code, 31, "bob may not give himself access");

    // The super user's ACLs: v1 literal, v3 prefixed, and a malformed one refused.
    let r: CreateAclsResponse =
        admin.call(ApiKey::CreateAcls, 1, &CreateAclsRequest::default().with_creations(vec![entry("t", 3, 8)]));
    assert_eq!(r.results[0].error_code, 0, "CreateAcls v1: DESCRIBE on t");
    let creations = vec![entry("t", 4, 3), entry("t", 4, 1)];
    let r: CreateAclsResponse =
        admin.call(ApiKey::CreateAcls, 3, &CreateAclsRequest::default().with_creations(creations));
    assert_eq!((r.results[0].error_code, r.results[1].error_code), (0, 42), "{r:?}");
    let r: MetadataResponse = bob.call(ApiKey::Metadata, 12, &named);
    assert_eq!(r.topics[0].error_code, 0, "DESCRIBE took effect");
    let r: FetchResponse = bob.call(ApiKey::Fetch, 12, &fetch);
    assert_eq!(r.responses[0].partitions[0].error_code, 0, "READ by prefix took effect");
    let matching = DescribeAclsRequest::default()
        .with_resource_type_filter(2)
        .with_resource_name_filter(Some(text("t")))
        .with_pattern_type_filter(2)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1);
    let r: DescribeAclsResponse = admin.call(ApiKey::DescribeAcls, 3, &matching);
    let found: Vec<(String, i8, i8)> = r
        .resources
        .iter()
        .flat_map(|res| res.acls.iter().map(move |a| (res.resource_name.to_string(), res.pattern_type, a.operation)))
        .collect();
    assert_eq!(found, vec![("t".to_string(), 3, 8), ("t".to_string(), 4, 3)], "MATCH finds the literal and the prefix");
    let delete = DeleteAclsRequest::default().with_filters(vec![delete_acls_request::DeleteAclsFilter::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(1)
        .with_host_filter(None)
        .with_principal_filter(Some(text("User:bob")))
        .with_operation(1)
        .with_permission_type(1)]);
    let r: DeleteAclsResponse = admin.call(ApiKey::DeleteAcls, 3, &delete);
    assert_eq!(r.filter_results[0].matching_acls.len(), 2, "{r:?}");
    let r: FetchResponse = bob.call(ApiKey::Fetch, 12, &fetch);
    assert_eq!(r.responses[0].partitions[0].error_code, 29, "deleted: denied again");
}
