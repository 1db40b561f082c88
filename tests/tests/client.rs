//! Specifications of the client crate (`sluice-client`) against real node processes:
//! what an application using `Producer` and `Consumer` can rely on, end to end.
//!
//! Each test starts its own `sluice-node` (two shards) with its data in a temporary
//! directory, talks to it only through `sluice-client` (plus `protocol::fetch` and
//! `protocol::list_offsets` where a test looks at what the node stored), and stops it
//! by its pid: `NodeProcess` kills and reaps a node still running when a test ends, and
//! prints its log when the test failed. The fault tests stop the node with kill -9 and
//! restart it on the same port and data directory.
//!
//! Every wait is bounded: delivery reports, flushes and consume loops by `WAIT`, process
//! starts and stops by `NodeProcess`'s own deadlines. No test asserts how fast anything
//! is; the only elapsed-time check is that `send` blocked at least `max.block.ms` before
//! failing with `BufferFull`, which is what that setting promises.
//!
//! The test bodies run on the thread that `#[tokio::test]` blocks on, not on a runtime
//! worker, so the blocking calls of `NodeProcess` (start, kill, restart) stall only the
//! test itself while the producer's sender task goes on running on the two workers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::connection::Connection;
use sluice_client::consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, SeekTo};
use sluice_client::partitioner::partition_for_key;
use sluice_client::producer::{Acks, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
use sluice_client::protocol::{self, FetchLimits, FetchPartition};
use sluice_client::{Admin, ClientError, NewTopic};
use sluice_schemas::batch::{BatchWalker, Compression};
use sluice_tests::node_client::{free_loopback_addr, metric_value, scrape_metrics, NodeProcess};
use tempfile::TempDir;

/// The shards of every node here: the test machines have two cores.
const SHARDS: usize = 2;
/// The longest a test waits for one thing: a delivery report, a flush, records to come
/// back, a log end offset to reach a value.
const WAIT: Duration = Duration::from_secs(30);
/// How long one `poll` of the consume loops may wait.
const POLL: Duration = Duration::from_millis(200);
/// A fetch's per-partition byte budget when a test reads raw batches.
const FETCH_BYTES: u32 = 1 << 20;

/// Starts a node with its data in a new temporary directory (returned: it must outlive
/// the node).
fn start_node() -> (TempDir, NodeProcess) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let data: PathBuf = dir.path().join("data");
    let node = NodeProcess::start(&data, SHARDS, &[]);
    (dir, node)
}

fn bootstrap(node: &NodeProcess) -> Vec<String> {
    vec![node.addr().to_string()]
}

/// The producer settings of these tests: Kafka's defaults, pointed at `node`.
fn producer_config(node: &NodeProcess) -> ProducerConfig {
    ProducerConfig { bootstrap_servers: bootstrap(node), client_id: "client-tests".into(), ..ProducerConfig::default() }
}

/// The consumer settings of these tests: short fetch waits, so a poll with nothing to
/// return does not hold a test up.
fn consumer_config(node: &NodeProcess, reset: OffsetReset) -> ConsumerConfig {
    ConsumerConfig {
        bootstrap_servers: bootstrap(node),
        client_id: "client-tests".into(),
        auto_offset_reset: reset,
        fetch_max_wait_ms: 100,
        request_timeout_ms: 10_000,
        ..ConsumerConfig::default()
    }
}

async fn create_topic(node: &NodeProcess, name: &str, partitions: u32) {
    let admin = Admin::connect(&bootstrap(node)).await.expect("connecting the admin client");
    admin
        .create_topic(NewTopic { name: name.to_string(), partitions, replication_factor: 1, configs: Vec::new() })
        .await
        .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
}

/// Awaits a delivery report, bounded by `WAIT`.
async fn delivered<F>(delivery: F, what: &str) -> Result<RecordMetadata, ClientError>
where
    F: std::future::Future<Output = Result<RecordMetadata, ClientError>>,
{
    tokio::time::timeout(WAIT, delivery)
        .await
        .unwrap_or_else(|_| panic!("no delivery report for {what} within {WAIT:?}"))
}

/// Flushes, bounded by `WAIT`.
async fn flush(producer: &Producer) {
    tokio::time::timeout(WAIT, producer.flush())
        .await
        .unwrap_or_else(|_| panic!("flush did not finish within {WAIT:?}"));
}

async fn connect(node: &NodeProcess) -> Connection {
    Connection::connect(
        &node.addr().to_string(),
        "client-tests",
        4,
        Duration::from_secs(10),
        &sluice_client::Security::default(),
    )
    .await
    .expect("connecting")
}

/// The log end offset of each partition of `topic`.
async fn end_offsets(node: &NodeProcess, topic: &str, partitions: u32) -> Vec<u64> {
    let conn = connect(node).await;
    let query: Vec<(String, u32, i64)> = (0..partitions).map(|p| (topic.to_string(), p, protocol::LATEST)).collect();
    let answers = protocol::list_offsets(&conn, &query).await.expect("ListOffsets");
    (0..partitions)
        .map(|p| {
            let (_, _, result) =
                answers.iter().find(|(t, q, _)| t == topic && *q == p).expect("an answer per partition");
            result.clone().expect("the partition's end offset").expect("an end offset exists")
        })
        .collect()
}

/// Polls (bounded by `WAIT`) until the log end offsets of `topic` add up to `count`.
async fn wait_for_records_stored(node: &NodeProcess, topic: &str, partitions: u32, count: u64) -> Vec<u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let ends = end_offsets(node, topic, partitions).await;
        if ends.iter().sum::<u64>() >= count {
            return ends;
        }
        assert!(Instant::now() < deadline, "{topic} holds {ends:?} records after {WAIT:?}; {count} were produced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record of `topic` from offset 0 up to `ends` (a log end offset per
/// partition), through a consumer that assigns all partitions and seeks to the beginning.
/// Checks that each partition's records come in offset order without gaps.
async fn consume_to(node: &NodeProcess, topic: &str, ends: &[u64]) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(consumer_config(node, OffsetReset::None)).await.expect("starting the consumer");
    let partitions = ends.len() as u32;
    consumer.assign((0..partitions).map(|p| (topic.to_string(), p)).collect());
    for p in 0..partitions {
        assert_eq!(consumer.seek(topic, p, SeekTo::Beginning).await.unwrap(), 0, "{topic}-{p} starts at offset 0");
    }
    let mut records: Vec<ConsumerRecord> = Vec::new();
    let mut next = vec![0u64; ends.len()];
    let deadline = Instant::now() + WAIT;
    while next.iter().zip(ends).any(|(n, end)| n < end) {
        assert!(Instant::now() < deadline, "read {next:?} of {topic} after {WAIT:?}; the ends are {ends:?}");
        for r in consumer.poll(POLL).await.unwrap_or_else(|e| panic!("polling {topic}: {e}")) {
            let p = r.partition as usize;
            assert_eq!(r.topic, topic);
            assert_eq!(r.offset, next[p], "{topic}-{p}: records come in offset order, without gaps");
            next[p] += 1;
            records.push(r);
        }
    }
    assert_eq!(next, ends, "{topic}: nothing beyond the log end offsets");
    records
}

/// What a stored batch says about itself: its codec and size.
struct StoredBatch {
    compression: Option<Compression>,
    bytes: usize,
}

/// The batches of a partition as the node stores them, fetched raw (not decoded).
async fn stored_batches(node: &NodeProcess, topic: &str, partition: u32, end: u64) -> Vec<StoredBatch> {
    let conn = connect(node).await;
    let limits = FetchLimits { max_wait_ms: 0, min_bytes: 1, max_bytes: FETCH_BYTES };
    let mut offset = 0u64;
    let mut batches = Vec::new();
    let deadline = Instant::now() + WAIT;
    while offset < end {
        assert!(Instant::now() < deadline, "fetched {topic}-{partition} to {offset} of {end} in {WAIT:?}");
        let part = FetchPartition { topic: topic.to_string(), partition, offset, max_bytes: FETCH_BYTES };
        let fetched = protocol::fetch(&conn, limits, &[part]).await.expect("fetch");
        let data = fetched.into_iter().next().expect("one partition").result.expect("fetched data");
        for batch in BatchWalker::new(data.records()) {
            let (_, header, bytes) = batch.expect("whole, valid batches");
            batches.push(StoredBatch { compression: header.attributes().compression(), bytes: bytes.len() });
            offset = header.next_offset().0;
        }
    }
    batches
}

/// For each codec, ~500 keyed records with headers go through a 3-partition topic and
/// come back exactly: same partition, offset (as the delivery report said), key, value,
/// headers (a null-valued one included) and timestamp. The node stores the batches with
/// the codec in their attributes, and every codec's batches take fewer bytes than the
/// uncompressed ones of the same (repetitive) records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_keyed_records_with_headers_and_is_stored_compressed() {
    const RECORDS: usize = 500;
    const PARTITIONS: u32 = 3;
    let (_dir, node) = start_node();
    let mut stored_bytes: Vec<(Compression, usize)> = Vec::new();
    for codec in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        let topic = format!("codec-{codec:?}").to_lowercase();
        create_topic(&node, &topic, PARTITIONS).await;
        let producer = Producer::new(ProducerConfig { compression: codec, ..producer_config(&node) }).await.unwrap();
        let mut sent = Vec::new();
        for i in 0..RECORDS {
            let mut record = ProducerRecord::new(topic.clone(), format!("value {i} of {topic}; ").repeat(1 + i % 7))
                .key(format!("key-{i}"))
                .header("seq", i.to_string())
                .header("codec", format!("{codec:?}"))
                .timestamp(1_700_000_000_000 + i as i64);
            record.headers.push(("null-valued".to_string(), None));
            let delivery = producer.send(record.clone()).await.unwrap_or_else(|e| panic!("{topic}: send {i}: {e}"));
            sent.push((record, delivery));
        }
        flush(&producer).await;
        let mut expected: BTreeMap<(u32, u64), ProducerRecord> = BTreeMap::new();
        for (record, delivery) in sent {
            let report = delivered(delivery, &topic).await.unwrap_or_else(|e| panic!("{topic}: delivery failed: {e}"));
            let offset = report.offset.expect("acks=all reports an offset");
            assert!(
                expected.insert((report.partition, offset), record).is_none(),
                "{topic}: two records at one offset"
            );
        }
        producer.close().await;

        let ends = end_offsets(&node, &topic, PARTITIONS).await;
        let consumed = consume_to(&node, &topic, &ends).await;
        assert_eq!(consumed.len(), RECORDS, "{topic}: every record comes back once");
        for r in &consumed {
            let sent = expected
                .get(&(r.partition, r.offset))
                .unwrap_or_else(|| panic!("{topic}-{}@{}: no record was reported there", r.partition, r.offset));
            assert_eq!(r.key, sent.key, "{topic}-{}@{}: key", r.partition, r.offset);
            assert_eq!(r.value, sent.value, "{topic}-{}@{}: value", r.partition, r.offset);
            assert_eq!(r.headers, sent.headers, "{topic}-{}@{}: headers", r.partition, r.offset);
            assert_eq!(Some(r.timestamp_ms), sent.timestamp_ms, "{topic}-{}@{}: timestamp", r.partition, r.offset);
        }

        let mut total = 0;
        for (p, &end) in ends.iter().enumerate() {
            for batch in stored_batches(&node, &topic, p as u32, end).await {
                assert_eq!(batch.compression, Some(codec), "{topic}-{p}: a stored batch's codec");
                total += batch.bytes;
            }
        }
        stored_bytes.push((codec, total));
    }
    let (first, uncompressed) = stored_bytes[0];
    assert_eq!(first, Compression::None);
    for (codec, bytes) in &stored_bytes[1..] {
        assert!(*bytes < uncompressed, "{codec:?} stores {bytes} bytes, uncompressed {uncompressed}");
    }
}

/// Keyed records land where Kafka's Java client puts them: for 200 distinct keys (of
/// every length mod 4, so every murmur2 tail case) on a 7-partition topic, each record's
/// delivery report and its consumed copy name partition `partition_for_key(key, 7)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_in_the_partition_kafkas_java_client_picks() {
    const KEYS: usize = 200;
    const PARTITIONS: u32 = 7;
    let (_dir, node) = start_node();
    create_topic(&node, "keyed", PARTITIONS).await;
    let producer = Producer::new(producer_config(&node)).await.unwrap();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{}{i}", "k".repeat(i % 9))).collect();
    let mut deliveries = Vec::new();
    for key in &keys {
        deliveries.push(producer.send(ProducerRecord::new("keyed", "v").key(key.clone())).await.unwrap());
    }
    flush(&producer).await;
    for (key, delivery) in keys.iter().zip(deliveries) {
        let report = delivered(delivery, key).await.unwrap();
        assert_eq!(
            report.partition,
            partition_for_key(key.as_bytes(), PARTITIONS),
            "the delivery report of key {key:?}"
        );
    }
    let ends = end_offsets(&node, "keyed", PARTITIONS).await;
    let consumed = consume_to(&node, "keyed", &ends).await;
    assert_eq!(consumed.len(), KEYS);
    let mut seen = HashSet::new();
    for r in consumed {
        let key = String::from_utf8(r.key.expect("a keyed record")).unwrap();
        assert_eq!(r.partition, partition_for_key(key.as_bytes(), PARTITIONS), "the partition of key {key:?}");
        assert!(seen.insert(key.clone()), "key {key:?} came back twice");
    }
    assert!(ends.iter().all(|&n| n > 0), "200 keys reach all 7 partitions: {ends:?}");
}

/// The sender packs many partitions' batches into one produce request: 2,000 records
/// of 1 KiB (null keys, so the sticky partitioner fills one 16 KiB batch at a time, and
/// linger.ms = 5 closes the slow ones) go to a 64-partition topic with one request in
/// flight at a time. Every batch that becomes ready while that request is out goes in
/// the next one, so requests carry at least 4 batches on average (about 20 here); a
/// sender that binds batches to a request as they become ready, and lets the requests
/// wait for the connection's slot, sends fewer than 2. Every record is delivered
/// exactly once, each partition holds its records in send order, and each delivery
/// report's offset holds that very record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_carry_the_batches_of_many_partitions_and_every_record_arrives_once_in_order() {
    const RECORDS: u64 = 2_000;
    const PARTITIONS: u32 = 64;
    const VALUE_BYTES: usize = 1024;
    let (_dir, node) = start_node();
    create_topic(&node, "packed", PARTITIONS).await;
    let config = ProducerConfig {
        batch_size: 16_384,
        linger_ms: 5,
        max_in_flight_requests_per_connection: 1,
        ..producer_config(&node)
    };
    let producer = Producer::new(config).await.unwrap();
    let mut deliveries = Vec::new();
    for seq in 0..RECORDS {
        let mut value = format!("{seq:08}").into_bytes();
        value.resize(VALUE_BYTES, b'.');
        deliveries.push(producer.send(ProducerRecord::new("packed", value)).await.unwrap());
    }
    flush(&producer).await;
    let stats = producer.stats();
    let mut reported: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    for (seq, delivery) in deliveries.into_iter().enumerate() {
        let report = delivered(delivery, "a record").await.unwrap_or_else(|e| panic!("record {seq} failed: {e}"));
        let offset = report.offset.expect("acks=all reports an offset");
        assert!(reported.insert((report.partition, offset), seq as u64).is_none(), "two records at one offset");
    }
    assert!(
        stats.batches >= 4 * stats.requests,
        "{} batches in {} produce requests: fewer than 4 a request",
        stats.batches,
        stats.requests
    );

    let ends = end_offsets(&node, "packed", PARTITIONS).await;
    assert_eq!(ends.iter().sum::<u64>(), RECORDS, "each record stored once: {ends:?}");
    let consumed = consume_to(&node, "packed", &ends).await;
    let mut last: Vec<Option<u64>> = vec![None; PARTITIONS as usize];
    let mut seen = HashSet::new();
    for r in consumed {
        let value = r.value.expect("a value");
        assert_eq!(value.len(), VALUE_BYTES);
        let seq: u64 = String::from_utf8_lossy(&value[..8]).parse().unwrap();
        assert!(seen.insert(seq), "record {seq} stored twice");
        let p = r.partition as usize;
        assert!(last[p] < Some(seq), "packed-{p}: record {seq} after {:?}, not in send order", last[p]);
        last[p] = Some(seq);
        assert_eq!(reported.get(&(r.partition, r.offset)), Some(&seq), "the delivery report of record {seq}");
    }
    assert_eq!(seen.len() as u64, RECORDS, "every record came back");
    producer.close().await;
}

/// With acks 0, 1 and all, every record sent is stored; acks 1 and all report each
/// record's offset (per partition 0, 1, 2, ... in send order), acks 0 reports none (the
/// node does not answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_0_1_and_all_store_every_record_and_acks_0_reports_no_offset() {
    const RECORDS: usize = 300;
    const PARTITIONS: u32 = 2;
    let (_dir, node) = start_node();
    for (acks, name) in [(Acks::None, "0"), (Acks::Leader, "1"), (Acks::All, "all")] {
        let topic = format!("acks-{name}");
        create_topic(&node, &topic, PARTITIONS).await;
        let producer = Producer::new(ProducerConfig { acks, ..producer_config(&node) }).await.unwrap();
        let mut deliveries = Vec::new();
        for i in 0..RECORDS {
            let record = ProducerRecord::new(topic.clone(), format!("{i}")).partition((i % 2) as u32);
            deliveries.push(producer.send(record).await.unwrap());
        }
        flush(&producer).await;
        let mut next_offset = [0u64; PARTITIONS as usize];
        for (i, delivery) in deliveries.into_iter().enumerate() {
            let report = delivered(delivery, &topic).await.unwrap_or_else(|e| panic!("{topic}: record {i}: {e}"));
            assert_eq!(report.partition, (i % 2) as u32);
            if acks == Acks::None {
                assert_eq!(report.offset, None, "{topic}: acks=0 reports no offset");
            } else {
                let p = report.partition as usize;
                assert_eq!(report.offset, Some(next_offset[p]), "{topic}: record {i}'s offset");
                next_offset[p] += 1;
            }
        }
        producer.close().await;
        // With acks=0 the producer knows only that the request was written: wait for the
        // node to have stored it.
        let ends = wait_for_records_stored(&node, &topic, PARTITIONS, RECORDS as u64).await;
        assert_eq!(ends.iter().sum::<u64>(), RECORDS as u64, "{topic}: each record stored once: {ends:?}");
        let consumed = consume_to(&node, &topic, &ends).await;
        let mut values: Vec<usize> =
            consumed.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).parse().unwrap()).collect();
        values.sort_unstable();
        assert_eq!(values, (0..RECORDS).collect::<Vec<_>>(), "{topic}: every record stored");
    }
}

/// A record's sequence number and its delivery report.
type Report = (u64, Result<RecordMetadata, ClientError>);

/// The records sent to one partition are stored in send order even when the node is
/// killed (kill -9) and restarted mid-stream: the producer retries the failed requests
/// (connection errors are retriable). It is idempotent by default (acks=all): a batch the
/// node stored but could not acknowledge before the kill is recognised when it comes
/// again (producer state is part of the log), so the partition holds exactly the sequence
/// 0, 1, 2, ... that was sent, with several batches in flight. Every record is
/// acknowledged (the node is back well within delivery.timeout.ms), and each delivery
/// report's offset holds that very record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_partition_is_stored_once_in_send_order_across_a_kill_and_restart() {
    send_order_across_a_kill(true).await;
}

/// A batch an idempotent producer gives up on leaves a gap in its partition's sequence
/// numbers, which the node would refuse from then on: one record over the topic's
/// max.message.bytes (MESSAGE_TOO_LARGE, not retriable) in the middle of a stream. Its
/// send fails; the producer moves to its next epoch and numbers the batches it has not
/// stored again from 0, so every other record is stored, once, in send order (without the
/// new epoch the records after it were refused until their delivery timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_goes_on_after_a_batch_it_gave_up_on() {
    const RECORDS: u64 = 400;
    const TOO_LARGE: u64 = 150;
    let (_dir, node) = start_node();
    let admin = Admin::connect(&bootstrap(&node)).await.unwrap();
    let configs = vec![("max.message.bytes".to_string(), "2048".to_string())];
    admin
        .create_topic(NewTopic { name: "strict".into(), partitions: 1, replication_factor: 1, configs })
        .await
        .unwrap();
    let config = ProducerConfig {
        batch_size: 512,
        delivery_timeout_ms: 20_000,
        request_timeout_ms: 5_000,
        ..producer_config(&node)
    };
    let producer = Producer::new(config).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..RECORDS {
        let value = if i == TOO_LARGE { vec![b'x'; 4096] } else { format!("{i:08}").into_bytes() };
        deliveries.push((i, producer.send(ProducerRecord::new("strict", value).partition(0)).await.unwrap()));
    }
    let mut acked = BTreeMap::new();
    for (i, delivery) in deliveries {
        match delivered(delivery, &format!("record {i}")).await {
            Ok(meta) => {
                assert_ne!(i, TOO_LARGE, "the oversized record was stored");
                acked.insert(meta.offset.unwrap(), i);
            }
            Err(e) => assert_eq!(i, TOO_LARGE, "record {i} failed: {e}"),
        }
    }
    producer.close().await;
    let ends = end_offsets(&node, "strict", 1).await;
    let stored: Vec<u64> = consume_to(&node, "strict", &ends)
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).parse().unwrap())
        .collect();
    let expected: Vec<u64> = (0..RECORDS).filter(|i| *i != TOO_LARGE).collect();
    assert_eq!(stored, expected, "every other record, once, in send order");
    for (offset, i) in acked {
        assert_eq!(stored.get(offset as usize), Some(&i), "record {i} was acknowledged at offset {offset}");
    }
}

/// The same without idempotence and with max.in.flight 1 (as in Kafka's producer, more in
/// flight without idempotence may reorder a retried batch): a partition's next batch goes
/// only after the previous one is resolved, so retries keep the order, but a batch the node stored and could not
/// acknowledge is stored again; removing those resends, the partition holds 0, 1, 2, ...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_keeps_send_order_across_retries_when_the_node_is_killed_and_restarted() {
    send_order_across_a_kill(false).await;
}

async fn send_order_across_a_kill(idempotent: bool) {
    /// Records acknowledged before the kill.
    const ACKED_BEFORE_KILL: u64 = 300;
    /// Records sent while the node is down (the outage spans several retry backoffs).
    const SENT_WHILE_DOWN: u64 = 500;
    /// Records sent after the restart.
    const SENT_AFTER_RESTART: u64 = 500;
    /// A bound on the records sent in all (the sender is paced; see below).
    const SENT_MAX: u64 = 200_000;
    let (_dir, mut node) = start_node();
    create_topic(&node, "ordered", 1).await;
    let config = ProducerConfig {
        retry_backoff_ms: 50,
        delivery_timeout_ms: 20_000,
        request_timeout_ms: 2_000,
        batch_size: 1024,
        enable_idempotence: idempotent,
        max_in_flight_requests_per_connection: if idempotent { 5 } else { 1 },
        ..producer_config(&node)
    };
    let producer = Producer::new(config).await.unwrap();
    let (sent_count, acked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reports: Arc<Mutex<Vec<Report>>> = Arc::default();
    let restarted = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn({
        let (producer, sent_count, acked, reports, restarted) =
            (producer.clone(), sent_count.clone(), acked.clone(), reports.clone(), restarted.clone());
        async move {
            let mut seq = 0u64;
            let mut stop_at = None;
            while stop_at.is_none_or(|s| seq < s) {
                assert!(seq < SENT_MAX, "sent {SENT_MAX} records without the node coming back");
                if stop_at.is_none() && restarted.load(Ordering::SeqCst) {
                    stop_at = Some(seq + SENT_AFTER_RESTART);
                }
                let (acked, reports) = (acked.clone(), reports.clone());
                let record = ProducerRecord::new("ordered", format!("{seq:08}")).partition(0);
                producer
                    .send_with_callback(record, move |result| {
                        if result.is_ok() {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        reports.lock().unwrap().push((seq, result));
                    })
                    .await
                    .unwrap_or_else(|e| panic!("send {seq}: {e}"));
                seq += 1;
                sent_count.store(seq, Ordering::SeqCst);
                // Paced, so that records are sent before, during and after the outage
                // without piling up faster than the test can read them back.
                if seq.is_multiple_of(5) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            seq
        }
    });
    let deadline = Instant::now() + WAIT;
    while acked.load(Ordering::SeqCst) < ACKED_BEFORE_KILL {
        assert!(Instant::now() < deadline, "{ACKED_BEFORE_KILL} records not acknowledged within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kill9_and_wait();
    let sent_at_kill = sent_count.load(Ordering::SeqCst);
    while sent_count.load(Ordering::SeqCst) < sent_at_kill + SENT_WHILE_DOWN {
        assert!(Instant::now() < deadline, "{SENT_WHILE_DOWN} records not sent within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.restart();
    restarted.store(true, Ordering::SeqCst);
    let sent = tokio::time::timeout(WAIT, sending).await.expect("the sender finishes").expect("the sender task");
    flush(&producer).await;
    producer.close().await;

    let reports = std::mem::take(&mut *reports.lock().unwrap());
    assert_eq!(reports.len() as u64, sent, "every record sent got a delivery report");
    let mut acked_at: BTreeMap<u64, u64> = BTreeMap::new();
    for (seq, result) in &reports {
        let report = result.as_ref().unwrap_or_else(|e| panic!("record {seq} failed: {e}"));
        acked_at.insert(*seq, report.offset.expect("acks=all reports an offset"));
    }

    let ends = end_offsets(&node, "ordered", 1).await;
    let consumed = consume_to(&node, "ordered", &ends).await;
    let stored: Vec<u64> =
        consumed.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).parse().unwrap()).collect();
    let mut first_copies = Vec::new();
    let mut seen = HashSet::new();
    for &seq in &stored {
        if seen.insert(seq) {
            first_copies.push(seq);
        }
    }
    assert_eq!(
        first_copies,
        (0..sent).collect::<Vec<_>>(),
        "without resends the partition holds 0..{sent} in order ({} resent records)",
        stored.len() - first_copies.len()
    );
    if idempotent {
        assert_eq!(stored.len(), first_copies.len(), "an idempotent producer's records are stored once");
    }
    eprintln!("{sent} records sent, {} stored (idempotent: {idempotent})", stored.len());
    for (seq, offset) in acked_at {
        assert_eq!(stored.get(offset as usize), Some(&seq), "record {seq} was acknowledged at offset {offset}");
    }
}

/// buffer.memory bounds what a producer holds: while the node is down, sends succeed
/// until the unacknowledged records fill the buffer; then `send` blocks max.block.ms and
/// fails with `BufferFull`. When the node is back, the buffered records are delivered and
/// sending works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_blocks_send_for_max_block_ms_then_fails_with_buffer_full() {
    const BUFFER_MEMORY: usize = 8192;
    const MAX_BLOCK_MS: u64 = 500;
    const VALUE_BYTES: usize = 100;
    let (_dir, mut node) = start_node();
    create_topic(&node, "pressure", 1).await;
    let config = ProducerConfig {
        max_request_size: 4096,
        buffer_memory: BUFFER_MEMORY,
        batch_size: 1024,
        max_block_ms: MAX_BLOCK_MS,
        request_timeout_ms: 1_000,
        retry_backoff_ms: 50,
        delivery_timeout_ms: 60_000,
        ..producer_config(&node)
    };
    let producer = Producer::new(config).await.unwrap();
    assert_eq!(producer.partitions_for("pressure").await.unwrap(), 1, "metadata is fetched while the node is up");
    node.kill9_and_wait();

    let mut pending = Vec::new();
    let (error, blocked) = loop {
        // Each record holds at least its value's bytes of buffer: the loop ends.
        assert!(
            pending.len() <= BUFFER_MEMORY / VALUE_BYTES,
            "{} records buffered in {BUFFER_MEMORY} bytes",
            pending.len()
        );
        let started = Instant::now();
        let sent = tokio::time::timeout(WAIT, producer.send(ProducerRecord::new("pressure", vec![b'x'; VALUE_BYTES])))
            .await
            .expect("send returns within max.block.ms (bounded here by WAIT)");
        match sent {
            Ok(delivery) => pending.push(delivery),
            Err(e) => break (e, started.elapsed()),
        }
    };
    assert!(!pending.is_empty(), "records fit the buffer before it is full");
    let ClientError::BufferFull { waited_ms, .. } = error else { panic!("expected BufferFull, got {error}") };
    assert!(waited_ms >= MAX_BLOCK_MS, "BufferFull after waiting {waited_ms} ms, not max.block.ms = {MAX_BLOCK_MS}");
    assert!(blocked >= Duration::from_millis(MAX_BLOCK_MS), "send blocked only {blocked:?}");

    node.restart();
    let buffered = pending.len();
    for delivery in pending {
        delivered(delivery, "a buffered record").await.unwrap_or_else(|e| panic!("a buffered record failed: {e}"));
    }
    let delivery = producer.send(ProducerRecord::new("pressure", "after")).await.expect("the buffer has room again");
    let report = delivered(delivery, "the record after").await.unwrap();
    assert_eq!(report.offset, Some(buffered as u64), "stored after the {buffered} buffered records");
}

/// delivery.timeout.ms bounds the time from `send` to a delivery report: records sent
/// while the node is down (connections refused, retried every retry.backoff.ms) fail
/// with `DeliveryTimeout`, carrying the last error seen (the refused connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_while_the_node_is_down_fail_with_delivery_timeout() {
    const DELIVERY_TIMEOUT_MS: u64 = 3_000;
    let (_dir, mut node) = start_node();
    create_topic(&node, "expiring", 2).await;
    let config = ProducerConfig {
        delivery_timeout_ms: DELIVERY_TIMEOUT_MS,
        request_timeout_ms: 1_000,
        linger_ms: 5,
        retry_backoff_ms: 50,
        ..producer_config(&node)
    };
    let producer = Producer::new(config).await.unwrap();
    assert_eq!(producer.partitions_for("expiring").await.unwrap(), 2);
    node.kill9_and_wait();
    let mut deliveries = Vec::new();
    for i in 0..10u32 {
        deliveries.push(producer.send(ProducerRecord::new("expiring", format!("{i}")).partition(i % 2)).await.unwrap());
    }
    for delivery in deliveries {
        let error = delivered(delivery, "a record sent to a stopped node").await.expect_err("the node is down");
        let ClientError::DeliveryTimeout { timeout_ms, last_error } = &error else {
            panic!("expected DeliveryTimeout, got {error:?}")
        };
        assert_eq!(*timeout_ms, DELIVERY_TIMEOUT_MS);
        let last = last_error.as_deref().unwrap_or_else(|| panic!("{error}: the last error is kept"));
        assert!(last.is_retriable(), "the last error ({last}) was a retriable one");
    }
}

/// Produces records stamped 1000, 2000, ..., 10000 (values "at 1000", ...) to partition
/// 0 of a new topic, and waits for their delivery.
async fn produce_timed_records(node: &NodeProcess, topic: &str, compression: Compression) {
    create_topic(node, topic, 1).await;
    let producer = Producer::new(ProducerConfig { compression, ..producer_config(node) }).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 1..=10i64 {
        let record = ProducerRecord::new(topic, format!("at {}", i * 1000)).timestamp(i * 1000);
        deliveries.push(producer.send(record).await.unwrap());
    }
    flush(&producer).await;
    for delivery in deliveries {
        delivered(delivery, "a timed record").await.unwrap();
    }
}

/// `seek(Timestamp(t))` moves to the first record whose timestamp is at or after `t`:
/// with records stamped 1000, 2000, ..., 10000, seeking 2500 makes the next poll start
/// at the record of 3000; seeking an exact timestamp finds that record; seeking past the
/// last timestamp moves to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_by_timestamp_moves_to_the_first_record_at_or_after_it() {
    let (_dir, node) = start_node();
    produce_timed_records(&node, "timed", Compression::None).await;
    let mut consumer = Consumer::new(consumer_config(&node, OffsetReset::None)).await.unwrap();
    consumer.assign(vec![("timed".to_string(), 0)]);

    assert_eq!(consumer.seek("timed", 0, SeekTo::Timestamp(2500)).await.unwrap(), 2);
    let first = first_record(&mut consumer).await;
    assert_eq!((first.offset, first.timestamp_ms, first.value.as_deref()), (2, 3000, Some(&b"at 3000"[..])));

    assert_eq!(consumer.seek("timed", 0, SeekTo::Timestamp(7000)).await.unwrap(), 6);
    assert_eq!(first_record(&mut consumer).await.timestamp_ms, 7000);

    assert_eq!(consumer.seek("timed", 0, SeekTo::Timestamp(10_001)).await.unwrap(), 10, "past the last: the end");
    assert_eq!(consumer.position("timed", 0), Some(10));
}

/// Seeking by timestamp finds the exact record in a compressed batch too, as Kafka does.
///
/// Fails today: the node answers ListOffsets with the base offset of the first batch
/// whose max timestamp reaches `t` and reads records only from uncompressed batches
/// (ARCHITECTURE.md: exact answers need decompression on the node, which comes with
/// ListOffsets in the node issue), so here `seek` returns 0 and the first record polled
/// is the one of 1000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_by_timestamp_finds_the_exact_record_in_a_compressed_batch() {
    let (_dir, node) = start_node();
    produce_timed_records(&node, "timed-gzip", Compression::Gzip).await;
    let mut consumer = Consumer::new(consumer_config(&node, OffsetReset::None)).await.unwrap();
    consumer.assign(vec![("timed-gzip".to_string(), 0)]);
    let offset = consumer.seek("timed-gzip", 0, SeekTo::Timestamp(2500)).await.unwrap();
    let first = first_record(&mut consumer).await;
    assert_eq!(
        (offset, first.offset, first.timestamp_ms),
        (2, 2, 3000),
        "seek(2500) returned {offset}; first polled: {first:?}"
    );
}

/// The first record the next polls return (bounded by `WAIT`).
async fn first_record(consumer: &mut Consumer) -> ConsumerRecord {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(r) = consumer.poll(POLL).await.unwrap().into_iter().next() {
            return r;
        }
        assert!(Instant::now() < deadline, "no record within {WAIT:?}");
    }
}

/// auto.offset.reset decides where a partition without a position starts: `none` makes
/// `poll` fail with `NoOffset` (naming the partition), `earliest` starts at the first
/// record, `latest` at the log end, so only records produced afterwards come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_offset_reset_none_fails_earliest_starts_at_the_first_record_latest_at_the_end() {
    let (_dir, node) = start_node();
    create_topic(&node, "reset", 1).await;
    let producer = Producer::new(producer_config(&node)).await.unwrap();
    let produce = |tag: &'static str| {
        let producer = producer.clone();
        async move {
            let mut deliveries = Vec::new();
            for i in 0..3 {
                deliveries.push(producer.send(ProducerRecord::new("reset", format!("{tag}-{i}"))).await.unwrap());
            }
            flush(&producer).await;
            for delivery in deliveries {
                delivered(delivery, tag).await.unwrap();
            }
        }
    };
    produce("old").await;
    let tp = vec![("reset".to_string(), 0)];

    let mut none = Consumer::new(consumer_config(&node, OffsetReset::None)).await.unwrap();
    none.assign(tp.clone());
    match none.poll(POLL).await {
        Err(ClientError::NoOffset { topic, partition }) => assert_eq!((topic.as_str(), partition), ("reset", 0)),
        other => panic!("expected NoOffset, got {other:?}"),
    }
    assert_eq!(none.position("reset", 0), None);

    let mut earliest = Consumer::new(consumer_config(&node, OffsetReset::Earliest)).await.unwrap();
    earliest.assign(tp.clone());
    assert_eq!(values(&mut earliest, 3).await, ["old-0", "old-1", "old-2"]);

    let mut latest = Consumer::new(consumer_config(&node, OffsetReset::Latest)).await.unwrap();
    latest.assign(tp);
    assert!(latest.poll(POLL).await.unwrap().is_empty(), "latest skips the records already there");
    assert_eq!(latest.position("reset", 0), Some(3));
    produce("new").await;
    assert_eq!(values(&mut latest, 3).await, ["new-0", "new-1", "new-2"]);
}

/// A consumer writes its next fetch as soon as a fetch's answer arrives, before it decodes
/// the batches and before the application polls again (fetch pipelining), even on a
/// runtime with one thread, where a task spawned to send it would wait until the
/// application next yields: the node serves the next batches while the application
/// works. The answer is used: every record arrives once, in order.
#[test]
fn a_consumer_sends_its_next_fetch_before_the_application_polls_again() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = free_loopback_addr();
    let metrics_arg = metrics.to_string();
    let node = NodeProcess::start(&dir.path().join("data"), SHARDS, &["--metrics-listen", &metrics_arg]);
    let fetches = || metric_value(&scrape_metrics(metrics), "sluice_requests_total{api=\"fetch\"}").unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        create_topic(&node, "prefetch", 1).await;
        let producer = Producer::new(producer_config(&node)).await.unwrap();
        // One batch per record: each is delivered before the next is sent.
        for i in 0..10 {
            let delivery = producer.send(ProducerRecord::new("prefetch", format!("r{i}"))).await.unwrap();
            flush(&producer).await;
            delivered(delivery, "prefetch").await.unwrap();
        }
        // A fetch answers one batch (at least one whole batch, however small the limit).
        let config = ConsumerConfig { max_partition_fetch_bytes: 1, ..consumer_config(&node, OffsetReset::Earliest) };
        let mut consumer = Consumer::new(config).await.unwrap();
        consumer.assign(vec![("prefetch".to_string(), 0)]);
        let deadline = Instant::now() + WAIT;
        let mut records = Vec::new();
        while records.is_empty() {
            assert!(Instant::now() < deadline, "no records within {WAIT:?}");
            records = consumer.poll(POLL).await.unwrap();
        }
        assert_eq!(offsets_of(&records), [0]);
        // The application works without yielding to the runtime (this thread blocks): the
        // node still gets the next fetch, written before `poll` returned.
        while fetches() < 2 {
            assert!(Instant::now() < deadline, "the next fetch did not leave while the application worked");
            std::thread::sleep(Duration::from_millis(10));
        }
        while records.len() < 10 {
            assert!(Instant::now() < deadline, "{} of 10 records within {WAIT:?}", records.len());
            records.extend(consumer.poll(POLL).await.unwrap());
        }
        assert_eq!(offsets_of(&records), (0..10).collect::<Vec<u64>>(), "every record once, in order");
        let values: Vec<String> =
            records.iter().map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap()).collect();
        assert_eq!(values, (0..10).map(|i| format!("r{i}")).collect::<Vec<_>>());
    });
    drop(node);
}

fn offsets_of(records: &[ConsumerRecord]) -> Vec<u64> {
    records.iter().map(|r| r.offset).collect()
}

/// The values of the next `count` records (bounded by `WAIT`).
async fn values(consumer: &mut Consumer, count: usize) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < count {
        assert!(Instant::now() < deadline, "{} of {count} records within {WAIT:?}", out.len());
        for r in consumer.poll(POLL).await.unwrap() {
            out.push(String::from_utf8(r.value.unwrap()).unwrap());
        }
    }
    out
}

/// A record larger than max.request.size is refused by `send` itself with
/// `RecordTooLarge`, before any metadata lookup (here: for a topic that does not exist),
/// and the producer goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_larger_than_max_request_size_fails_at_send_with_record_too_large() {
    let (_dir, node) = start_node();
    create_topic(&node, "sized", 1).await;
    let config = ProducerConfig { max_request_size: 4096, batch_size: 1024, ..producer_config(&node) };
    let producer = Producer::new(config).await.unwrap();
    let too_large = ProducerRecord::new("no-such-topic", vec![0u8; 5000]);
    match tokio::time::timeout(WAIT, producer.send(too_large)).await.expect("send returns") {
        Err(ClientError::RecordTooLarge { bytes, limit, setting }) => {
            assert!(bytes > 4096, "the size it reports ({bytes}) is over the limit");
            assert_eq!((limit, setting), (4096, "max.request.size"));
        }
        Err(e) => panic!("expected RecordTooLarge, got {e}"),
        Ok(_) => panic!("a record over max.request.size was accepted"),
    }
    let delivery = producer.send(ProducerRecord::new("sized", vec![0u8; 1000])).await.unwrap();
    assert_eq!(delivered(delivery, "a record that fits").await.unwrap().offset, Some(0));
}

/// Typed keys and values go through Kafka's serializers: a string key and an i64 value
/// come back as the bytes Kafka's StringSerializer and LongSerializer write, and
/// deserialize to what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_producers_serialize_keys_and_values_as_kafkas_serializers() {
    use sluice_client::producer::TypedProducer;
    use sluice_client::serialize::{Deserializer, I64Serializer, StringSerializer};
    let (_dir, node) = start_node();
    create_topic(&node, "typed", 1).await;
    let producer = Producer::new(producer_config(&node)).await.unwrap();
    let typed: TypedProducer<str, i64> = TypedProducer::new(producer, StringSerializer, I64Serializer);
    for i in 0..10i64 {
        let d = typed.send("typed", Some(&*format!("k{i}")), &(i * 1_000_000_007)).await.unwrap();
        delivered(d, "typed record").await.unwrap();
    }
    let records = consume_to(&node, "typed", &[10]).await;
    assert_eq!(records.len(), 10);
    for (i, r) in records.iter().enumerate() {
        let i = i as i64;
        assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
        let value = r.value.as_deref().unwrap();
        assert_eq!(value, (i * 1_000_000_007).to_be_bytes());
        assert_eq!(I64Serializer.deserialize("typed", value).unwrap(), i * 1_000_000_007);
    }
    typed.inner().close().await;
}

/// Retention by time removes whole old segments: the log start moves past them, a fetch
/// below it is out of range, and a consumer at an expired position resets to the new
/// log start (auto.offset.reset = earliest) and reads what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_segments_are_deleted_and_consumers_reset_to_the_new_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), SHARDS, &["--retention-check-ms", "100"]);
    let admin = Admin::connect(&bootstrap(&node)).await.unwrap();
    let configs =
        vec![("segment.bytes".to_string(), "8192".to_string()), ("retention.ms".to_string(), "600000".to_string())];
    admin
        .create_topic(NewTopic { name: "expiring".into(), partitions: 1, replication_factor: 1, configs })
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig { linger_ms: 0, ..producer_config(&node) }).await.unwrap();
    // Old records (an hour ago), then fresh ones: only the old segments may go.
    let old = now_ms() - 3_600_000;
    for i in 0..40i64 {
        let d = producer.send(ProducerRecord::new("expiring", vec![b'o'; 1000]).timestamp(old + i)).await.unwrap();
        delivered(d, "old record").await.unwrap();
    }
    for _ in 0..5 {
        let d = producer.send(ProducerRecord::new("expiring", vec![b'n'; 1000])).await.unwrap();
        delivered(d, "new record").await.unwrap();
    }
    let conn = connect(&node).await;
    // Retention may have run while the old records were still arriving and run again
    // since: wait until the log start holds still over five retention checks.
    let deadline = Instant::now() + WAIT;
    let (mut start, mut still) = (0, 0);
    while start == 0 || still < 5 {
        assert!(Instant::now() < deadline, "retention did not settle within {WAIT:?}: log start {start}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = protocol::list_offsets(&conn, &[("expiring".into(), 0, protocol::EARLIEST)]).await.unwrap();
        let now = r[0].2.clone().unwrap().unwrap();
        still = if now == start { still + 1 } else { 0 };
        start = now;
    }
    assert!(start <= 40, "the fresh records stay: log start {start}");
    let limits = FetchLimits { max_wait_ms: 0, min_bytes: 1, max_bytes: FETCH_BYTES };
    let part = FetchPartition { topic: "expiring".into(), partition: 0, offset: 0, max_bytes: FETCH_BYTES };
    let fetched = protocol::fetch(&conn, limits, &[part]).await.unwrap();
    let error = fetched[0].result.clone().unwrap_err();
    assert_eq!(protocol::error_code(&error), Some(sluice_client::ErrorCode(1)), "{error}");
    let mut consumer = Consumer::new(consumer_config(&node, OffsetReset::Earliest)).await.unwrap();
    consumer.assign(vec![("expiring".into(), 0)]);
    consumer.seek("expiring", 0, SeekTo::Offset(0)).await.unwrap();
    let mut first = None;
    let deadline = Instant::now() + WAIT;
    while first.is_none() {
        assert!(Instant::now() < deadline, "no record after the reset within {WAIT:?}");
        first = consumer.poll(POLL).await.unwrap().first().map(|r| r.offset);
    }
    assert_eq!(first, Some(start), "the consumer reset to the log start");
    producer.close().await;
}

/// A LogAppendTime topic carries the node's clock: the delivery and the consumed record
/// show the append time, not the producer's timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_topics_replace_the_producers_timestamps() {
    let (_dir, node) = start_node();
    let admin = Admin::connect(&bootstrap(&node)).await.unwrap();
    let configs = vec![("message.timestamp.type".to_string(), "LogAppendTime".to_string())];
    admin
        .create_topic(NewTopic { name: "stamped".into(), partitions: 1, replication_factor: 1, configs })
        .await
        .unwrap();
    let before = now_ms();
    let producer = Producer::new(producer_config(&node)).await.unwrap();
    let d = producer.send(ProducerRecord::new("stamped", "v").timestamp(1_000)).await.unwrap();
    delivered(d, "stamped record").await.unwrap();
    let records = consume_to(&node, "stamped", &[1]).await;
    assert_eq!(records[0].timestamp_type, sluice_schemas::batch::TimestampType::LogAppendTime);
    assert!(records[0].timestamp_ms >= before && records[0].timestamp_ms <= now_ms(), "{}", records[0].timestamp_ms);
    producer.close().await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// DeleteRecords moves a partition's log start: records below it are out of range, the
/// new start survives a restart, an offset past the end is refused, and the internal
/// offsets topic cannot be cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_log_start_and_it_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = NodeProcess::start(&data, SHARDS, &[]);
    create_topic(&node, "trimmed", 1).await;
    let producer = Producer::new(producer_config(&node)).await.unwrap();
    for i in 0..20u32 {
        let d = producer.send(ProducerRecord::new("trimmed", i.to_string()).partition(0)).await.unwrap();
        delivered(d, "record").await.unwrap();
    }
    producer.close().await;
    let admin = Admin::connect(&bootstrap(&node)).await.unwrap();
    assert_eq!(admin.delete_records("trimmed", 0, 12).await.unwrap(), 12);
    let past_end = admin.delete_records("trimmed", 0, 99).await.unwrap_err();
    assert_eq!(protocol::error_code(&past_end), Some(sluice_client::ErrorCode(1)), "{past_end}");
    let internal = admin.delete_records("__consumer_offsets", 0, -1).await.unwrap_err();
    assert!(internal.to_string().contains("internal topic"), "{internal}");
    node.sigterm_and_wait();
    node.restart();
    let conn = connect(&node).await;
    let r = protocol::list_offsets(&conn, &[("trimmed".into(), 0, protocol::EARLIEST)]).await.unwrap();
    assert_eq!(r[0].2.clone().unwrap(), Some(12), "the new log start survives a restart");
    let records = {
        let mut consumer = Consumer::new(consumer_config(&node, OffsetReset::Earliest)).await.unwrap();
        consumer.assign(vec![("trimmed".into(), 0)]);
        consumer.seek("trimmed", 0, SeekTo::Beginning).await.unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        while got.len() < 8 {
            assert!(Instant::now() < deadline, "read {} of 8 records in {WAIT:?}", got.len());
            got.extend(consumer.poll(POLL).await.unwrap());
        }
        got
    };
    assert_eq!(records.first().map(|r| r.offset), Some(12));
    assert_eq!(records.first().and_then(|r| r.value.clone()), Some(b"12".to_vec()));
    let admin = Admin::connect(&bootstrap(&node)).await.unwrap();
    assert_eq!(admin.delete_records("trimmed", 0, -1).await.unwrap(), 20, "-1 means the log end");
}

/// A compacted topic keeps each key's latest value through node crashes in the middle of
/// compaction: the cleaner runs continuously while the node is killed with SIGKILL again
/// and again; after every restart each key's latest acknowledged record is readable at
/// its acknowledged offset, every batch decodes, and in the end compaction has removed
/// superseded records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_every_keys_latest_value_through_kill_9_during_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--compaction-check-ms", "20", "--compaction-bytes-per-s", "0"];
    let mut node = NodeProcess::start(&dir.path().join("data"), SHARDS, &args);
    let admin = Admin::connect(&bootstrap(&node)).await.unwrap();
    let configs =
        vec![("cleanup.policy".to_string(), "compact".to_string()), ("segment.bytes".to_string(), "4096".to_string())];
    admin.create_topic(NewTopic { name: "table".into(), partitions: 1, replication_factor: 1, configs }).await.unwrap();
    let mut latest: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut produced = 0u64;
    let mut seed = 0x5eed_u64;
    for round in 0..6u64 {
        let producer = Producer::new(ProducerConfig { linger_ms: 0, ..producer_config(&node) }).await.unwrap();
        for i in 0..200u64 {
            let key = format!("key-{}", (round * 7 + i) % 25);
            let value = format!("r{round}-i{i}");
            let d =
                producer.send(ProducerRecord::new("table", value.clone()).key(key.clone()).partition(0)).await.unwrap();
            let m = delivered(d, "keyed record").await.unwrap();
            latest.insert(key, (m.offset.unwrap(), value));
            produced += 1;
        }
        drop(producer);
        // Let the cleaner get going, then kill the node at a pseudo-random moment.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % 120)).await;
        node.kill9_and_wait();
        node.restart();
        let records = consume_all(&node, "table", produced).await;
        for (key, (offset, value)) in &latest {
            let found = records.iter().find(|r| r.offset == *offset);
            let found = found.unwrap_or_else(|| panic!("round {round}: {key}'s latest record at {offset} is missing"));
            assert_eq!(found.key.as_deref(), Some(key.as_bytes()));
            assert_eq!(found.value.as_deref(), Some(value.as_bytes()));
        }
    }
    // The cleaner had time on a healthy node: superseded records are gone.
    let deadline = Instant::now() + WAIT;
    loop {
        let records = consume_all(&node, "table", produced).await;
        if (records.len() as u64) < produced / 2 {
            break;
        }
        assert!(Instant::now() < deadline, "compaction removed too little: {} of {produced} left", records.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record of partition 0 of `topic` from its log start to its end (at most
/// `bound` records' worth of offsets), bounded by `WAIT`.
async fn consume_all(node: &NodeProcess, topic: &str, end: u64) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(consumer_config(node, OffsetReset::Earliest)).await.unwrap();
    consumer.assign(vec![(topic.to_string(), 0)]);
    consumer.seek(topic, 0, SeekTo::Beginning).await.unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + WAIT;
    while consumer.position(topic, 0).unwrap_or(0) < end {
        assert!(Instant::now() < deadline, "read to {:?} of {end} in {WAIT:?}", consumer.position(topic, 0));
        records.extend(consumer.poll(POLL).await.unwrap());
    }
    records
}

/// min.insync.replicas above the one replica a single node has refuses acks=all with
/// NOT_ENOUGH_REPLICAS (retriable, as in Kafka), while acks=1 still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_is_refused_when_fewer_replicas_are_in_sync_than_min_insync_replicas() {
    let (_dir, node) = start_node();
    let admin = Admin::connect(&bootstrap(&node)).await.unwrap();
    let configs = vec![("min.insync.replicas".to_string(), "2".to_string())];
    admin
        .create_topic(NewTopic { name: "strict".into(), partitions: 1, replication_factor: 1, configs })
        .await
        .unwrap();
    let conn = connect(&node).await;
    let batch = {
        let mut b =
            sluice_schemas::records::BatchBuilder::new(sluice_schemas::records::BatchConfig::default()).unwrap();
        b.push(None, Some(b"v"), &[], 1).unwrap();
        b.finish().unwrap()
    };
    let parts = [protocol::PartitionBatches { topic: "strict", partition: 0, batches: &batch }];
    let all = protocol::produce(&conn, -1, 5_000, &parts).await.unwrap();
    let e = all[0].base_offset.clone().unwrap_err();
    assert_eq!(protocol::error_code(&e), Some(sluice_client::ErrorCode(19)), "{e}");
    assert!(e.is_retriable());
    let one = protocol::produce(&conn, 1, 5_000, &parts).await.unwrap();
    assert_eq!(one[0].base_offset.clone().unwrap(), 0);
}

/// Transactions through `sluice-client` over the native protocol: a transactional
/// producer commits, aborts and commits again; a read-committed consumer gets exactly
/// the committed records (and stops below an open transaction), a read-uncommitted one
/// everything; records outside a transaction are refused; offsets sent in a transaction
/// count only once it commits; a second producer with the same transactional id fences
/// the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_abort_and_read_committed_consumers_see_only_committed_records() {
    use sluice_client::consumer::IsolationLevel;
    let (_dir, node) = start_node();
    create_topic(&node, "txn", 2).await;
    let config = ProducerConfig { transactional_id: Some("native-1".into()), ..producer_config(&node) };
    let producer = Producer::new(config.clone()).await.unwrap();
    let refused = producer.send(ProducerRecord::new("txn", "early").partition(0)).await;
    assert!(matches!(refused, Err(ClientError::Transaction(_))), "{:?}", refused.err());
    producer.init_transactions().await.unwrap();
    let refused = producer.send(ProducerRecord::new("txn", "unbegun").partition(0)).await;
    assert!(matches!(refused, Err(ClientError::Transaction(_))), "{:?}", refused.err());
    let mut committed = Vec::new();
    for (round, commit) in [(0, true), (1, false), (2, true)] {
        producer.begin_transaction().unwrap();
        for i in 0..4u32 {
            let value = format!("r{round}-{i}");
            producer.send(ProducerRecord::new("txn", value.clone()).partition(i % 2)).await.unwrap();
            if commit {
                committed.push(value);
            }
        }
        if commit {
            producer.commit_transaction().await.unwrap();
        } else {
            producer.abort_transaction().await.unwrap();
        }
    }
    // Offsets committed in a transaction: invisible until it commits.
    producer.begin_transaction().unwrap();
    producer.send(ProducerRecord::new("txn", "r3-0").partition(0)).await.unwrap();
    producer.send_offsets_to_transaction("txn-group", &[("txn".into(), 1, 42)], "", -1).await.unwrap();
    let conn = connect(&node).await;
    let before = protocol::fetch_offsets(&conn, "txn-group", Some(&[("txn".to_string(), 1)])).await.unwrap();
    assert_eq!(before[0].2, None, "not committed before the transaction is: {before:?}");

    let read = |isolation: IsolationLevel| {
        let config = ConsumerConfig { isolation_level: isolation, ..consumer_config(&node, OffsetReset::Earliest) };
        async move {
            let mut consumer = Consumer::new(config).await.unwrap();
            consumer.assign(vec![("txn".into(), 0), ("txn".into(), 1)]);
            consumer
        }
    };
    // The open transaction (r3-0 on partition 0) holds read-committed readers back.
    let mut committed_reader = read(IsolationLevel::ReadCommitted).await;
    let mut seen = values(&mut committed_reader, committed.len()).await;
    assert!(committed_reader.poll(POLL).await.unwrap().is_empty(), "nothing past the open transaction");
    seen.sort();
    let mut expected = committed.clone();
    expected.sort();
    assert_eq!(seen, expected);
    let mut everything = values(&mut read(IsolationLevel::ReadUncommitted).await, 13).await;
    everything.sort();
    assert_eq!(everything.len(), 13, "{everything:?}");
    // A group at the start of txn-0: read committed, its lag ends at the open
    // transaction (offset 9: three transactions of two records and a marker before it).
    let admin = Admin::connect(&bootstrap(&node)).await.unwrap();
    admin.reset_offsets("lag-group", "txn", protocol::EARLIEST).await.unwrap();
    let lag_of = |lags: Vec<sluice_client::admin::PartitionLag>| {
        lags.iter().find(|l| l.partition == 0).map(|l| (l.log_end, l.lag)).unwrap()
    };
    let stable = lag_of(admin.group_lag("lag-group", IsolationLevel::ReadCommitted).await.unwrap());
    let whole = lag_of(admin.group_lag("lag-group", IsolationLevel::ReadUncommitted).await.unwrap());
    assert_eq!((stable, whole), ((9, 9), (10, 10)), "lag at the last stable offset and at the log end");

    producer.commit_transaction().await.unwrap();
    assert_eq!(values(&mut committed_reader, 1).await, ["r3-0"]);
    let after = protocol::fetch_offsets(&conn, "txn-group", Some(&[("txn".to_string(), 1)])).await.unwrap();
    assert_eq!(after[0].2, Some(42), "committed with the transaction: {after:?}");

    // A second producer with the same transactional id fences the first.
    let second = Producer::new(config).await.unwrap();
    second.init_transactions().await.unwrap();
    producer.begin_transaction().unwrap();
    let sent = producer.send(ProducerRecord::new("txn", "fenced").partition(0)).await;
    let outcome = match sent {
        Ok(delivery) => delivery.await.map(|_| ()),
        Err(e) => Err(e),
    };
    let commit = producer.commit_transaction().await;
    assert!(outcome.is_err() || commit.is_err(), "the fenced producer could not commit: {outcome:?} {commit:?}");
    second.begin_transaction().unwrap();
    second.send(ProducerRecord::new("txn", "second").partition(1)).await.unwrap();
    second.commit_transaction().await.unwrap();
    assert_eq!(values(&mut committed_reader, 1).await, ["second"]);
}
