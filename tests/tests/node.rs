//! Specifications of `sluice-node` as its clients see it: real node processes, real
//! loopback sockets, the native protocol, and restarts by SIGTERM and kill -9.
//!
//! Each test starts its own node (two shards unless it says otherwise) with its data in a
//! temporary directory, talks to it through `sluice_tests::node_client`, and stops it by
//! its pid; a node still running when a test ends, passes or fails, is killed and reaped
//! by `NodeProcess`'s Drop, which also prints the node's log when the test failed. Every
//! wait is bounded: sockets have read and write timeouts, process starts and exits have
//! deadlines. No test asserts how fast the node is, only what it answers; the only
//! elapsed-time checks are the long-poll fetch's own `max_wait_ms`, which the node must
//! not sleep out when data arrives, nor cut short when none does.
//!
//! The two `a_second_node_...` tests pin what the node does not do yet (refuse a data
//! directory or a port another node holds); they fail until it does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_schemas::batch::BatchWalker;
use sluice_schemas::records::{BatchBuilder, BatchConfig};
use sluice_schemas::wire::{self, ErrorCode, FrameHeader, RequestBody};
use sluice_tests::node_client::{
    free_loopback_addr, metric_value, resident_bytes, scrape_metrics, Client, NodeProcess, StartAttempt,
};
use sluice_tests::Rng;
use tempfile::TempDir;

/// The shards of every node here: the test machines have two cores.
const SHARDS: usize = 2;
/// A fetch's per-partition byte budget when a test wants everything.
const FETCH_BYTES: u32 = 1 << 20;
/// The most fetch round trips `fetch_all` makes before it gives up.
const FETCH_ROUNDS_MAX: usize = 10_000;

/// A temporary directory with the node's data in `data/` and its log next to it.
fn node_dir() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("creating a temporary directory");
    let data = tmp.path().join("data");
    (tmp, data)
}

/// A batch of `records` records with keys `{tag}-{i}`, values of `value_bytes` bytes
/// derived from the tag, and timestamps `timestamp_ms + i`.
fn batch(tag: &str, records: u32, value_bytes: usize, timestamp_ms: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(BatchConfig::default()).unwrap();
    for i in 0..records {
        let key = format!("{tag}-{i}");
        let value: Vec<u8> = key.bytes().cycle().take(value_bytes).collect();
        builder.push(Some(key.as_bytes()), Some(&value), &[], timestamp_ms + i64::from(i)).unwrap();
    }
    builder.finish().unwrap()
}

/// Checks that `stored` is exactly the batches `produced`, in order, each byte for byte
/// but for its base offset (bytes 0..8), which must be `first_offset`, then each batch's
/// base offset plus its record count, and its partition leader epoch (the leader's).
fn assert_stored_as_produced(stored: &[u8], produced: &[&[u8]], first_offset: i64, what: &str) {
    let batches: Vec<_> = BatchWalker::new(stored).map(|b| b.unwrap_or_else(|e| panic!("{what}: {e}"))).collect();
    assert_eq!(batches.len(), produced.len(), "{what}: the number of stored batches");
    let mut expected_base = first_offset;
    for (i, ((_, header, bytes), sent)) in batches.iter().zip(produced).enumerate() {
        assert_eq!(header.base_offset().0 as i64, expected_base, "{what}: base offset of batch {i}");
        assert_eq!(bytes.len(), sent.len(), "{what}: length of batch {i}");
        assert!(
            sluice_tests::stored_as_produced(bytes, sent),
            "{what}: batch {i} differs from what was produced (but for its base offset and leader epoch)"
        );
        expected_base += i64::from(header.record_count());
    }
}

/// The records in one batch.
fn record_count(batch: &[u8]) -> i64 {
    let (_, header, _) = BatchWalker::new(batch).next().expect("a batch").expect("a whole batch");
    i64::from(header.record_count())
}

/// Every batch of a partition, from offset 0 to its high watermark, over as many
/// fetches as it takes.
fn fetch_all(client: &mut Client, topic: &str, partition: u32) -> Vec<u8> {
    let mut all = Vec::new();
    let mut offset = 0i64;
    for _ in 0..FETCH_ROUNDS_MAX {
        let fetched = client.fetch(topic, partition, offset, FETCH_BYTES, 0, 0);
        assert_eq!(fetched.error, ErrorCode::None, "fetching {topic}-{partition} at {offset}: {}", fetched.message);
        if fetched.records.is_empty() {
            assert_eq!(offset, fetched.high_watermark, "{topic}-{partition}: an empty fetch below the high watermark");
            return all;
        }
        for b in BatchWalker::new(&fetched.records) {
            let (_, header, _) = b.unwrap_or_else(|e| panic!("{topic}-{partition} at {offset}: {e}"));
            offset = header.next_offset().0 as i64;
        }
        all.extend_from_slice(&fetched.records);
    }
    panic!("{topic}-{partition}: not read to its end in {FETCH_ROUNDS_MAX} fetches");
}

/// A topic created with its partitions and configs, or the test fails.
fn create(client: &mut Client, name: &str, partitions: u32, configs: &[(&str, &str)]) {
    let outcome = client.create_topic(name, partitions, configs);
    assert_eq!(outcome.error, ErrorCode::None, "creating {name}: {}", outcome.message);
}

/// The basic contract: a created topic is listed with its partitions; produced batches,
/// with acks=1 and acks=all, get consecutive offsets per partition and are fetched back
/// byte for byte but for the base offset the node assigns; ListOffsets answers the log
/// start (-2), the log end (-1) and the first offset whose record timestamp is at or
/// after a given one (even inside a batch, as Kafka and schemas/fbs/sluice.fbs say).
#[test]
fn a_topic_is_created_produced_to_and_fetched_back_byte_for_byte() {
    let (_tmp, data) = node_dir();
    let node = NodeProcess::start(&data, SHARDS, &[]);
    let mut client = node.client();
    create(&mut client, "orders", 3, &[]);

    let topics = client.metadata(Some(&["orders"]));
    assert_eq!(topics.len(), 1);
    assert_eq!((topics[0].name.as_str(), topics[0].error), ("orders", ErrorCode::None));
    assert_eq!(topics[0].partitions, vec![0, 1, 2]);
    assert!(client.metadata(None).iter().any(|t| t.name == "orders"), "listing every topic includes it");

    for p in 0..3u32 {
        let tag = format!("orders-{p}");
        // Offsets 0..3 at ts 10_000.., then two batches in one request: 3..7 at ts 20_000..
        // and 7..9 at ts 30_000...
        let first = batch(&format!("{tag}-a"), 3, 100, 10_000);
        let second = batch(&format!("{tag}-b"), 4, 300, 20_000);
        let third = batch(&format!("{tag}-c"), 2, 50, 30_000);
        let produced = client.produce("orders", p, &first, 1);
        assert_eq!((produced.error, produced.base_offset), (ErrorCode::None, 0), "{tag}: {}", produced.message);
        let both = [second.clone(), third.clone()].concat();
        let produced = client.produce("orders", p, &both, -1);
        assert_eq!((produced.error, produced.base_offset), (ErrorCode::None, 3), "{tag}: {}", produced.message);

        let fetched = client.fetch("orders", p, 0, FETCH_BYTES, 0, 0);
        assert_eq!(fetched.error, ErrorCode::None, "{tag}: {}", fetched.message);
        assert_eq!(fetched.high_watermark, 9, "{tag}: the high watermark is the log end");
        assert_stored_as_produced(&fetched.records, &[&first, &second, &third], 0, &tag);
        // An offset inside a batch returns that whole batch.
        let fetched = client.fetch("orders", p, 5, FETCH_BYTES, 0, 0);
        assert_stored_as_produced(&fetched.records, &[&second, &third], 3, &format!("{tag} from offset 5"));
        // At the log end: nothing, no error. Past it: out of range.
        let at_end = client.fetch("orders", p, 9, FETCH_BYTES, 0, 0);
        assert_eq!((at_end.error, at_end.records.len()), (ErrorCode::None, 0), "{tag}: {}", at_end.message);
        assert_eq!(client.fetch("orders", p, 10, FETCH_BYTES, 0, 0).error, ErrorCode::OffsetOutOfRange, "{tag}");

        assert_eq!(client.list_offsets("orders", p, -2), (ErrorCode::None, 0), "{tag}: the log start");
        assert_eq!(client.list_offsets("orders", p, -1), (ErrorCode::None, 9), "{tag}: the log end");
        assert_eq!(client.list_offsets("orders", p, 0), (ErrorCode::None, 0), "{tag}: before every record");
        assert_eq!(client.list_offsets("orders", p, 15_000), (ErrorCode::None, 3), "{tag}: between batches");
        assert_eq!(client.list_offsets("orders", p, 20_002), (ErrorCode::None, 5), "{tag}: a record inside a batch");
        assert_eq!(client.list_offsets("orders", p, 30_000), (ErrorCode::None, 7), "{tag}: a batch's first record");
        assert_eq!(client.list_offsets("orders", p, 40_000), (ErrorCode::None, -1), "{tag}: after every record");
    }
}

/// A produce with acks=0 gets no response at all, yet its records are stored: the next
/// response on the same connection is the one to the request sent after it.
#[test]
fn acks_zero_gets_no_response_but_the_records_are_stored() {
    let (_tmp, data) = node_dir();
    let node = NodeProcess::start(&data, SHARDS, &[]);
    let mut client = node.client();
    create(&mut client, "fire-and-forget", 2, &[]);
    let sent = [batch("zero-0", 5, 64, 1_000), batch("zero-1", 2, 64, 2_000)];

    client.send_produce(0, &[("fire-and-forget", 0, &sent[0]), ("fire-and-forget", 1, &sent[1])]);
    // Responses come in request order, so had the produce been answered, its response
    // would be read here instead of the metadata response (receive_for checks the id).
    let topics = client.metadata(Some(&["fire-and-forget"]));
    assert_eq!(topics[0].partitions, vec![0, 1]);

    for p in 0..2u32 {
        let fetched = client.fetch("fire-and-forget", p, 0, FETCH_BYTES, 0, 0);
        assert_eq!(fetched.error, ErrorCode::None, "{}", fetched.message);
        assert_stored_as_produced(&fetched.records, &[&sent[p as usize]], 0, &format!("partition {p}"));
    }
}

/// Every batch acknowledged with acks=1 is there after a clean stop (SIGTERM) and after a
/// crash (kill -9), at the offsets it was acknowledged with, and appends go on from the
/// end of the log after each restart. SIGTERM stops the node cleanly even with
/// connections open and a long-polling fetch in flight.
#[test]
fn records_survive_sigterm_and_kill_9_restarts() {
    const BATCHES_PER_ROUND: usize = 20;
    let (_tmp, data) = node_dir();
    // Small segments, so the restarts recover logs of several segments.
    let mut node = NodeProcess::start(&data, SHARDS, &["--segment-bytes", "16384"]);
    let mut client = node.client();
    create(&mut client, "durable", 2, &[]);

    let mut produced: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
    let produce_round = |client: &mut Client, round: usize, produced: &mut Vec<Vec<Vec<u8>>>| {
        for k in 0..BATCHES_PER_ROUND {
            for p in 0..2u32 {
                let sent = batch(&format!("r{round}-p{p}-k{k}"), 1 + (k as u32 % 5), 200 + 97 * k, 1_000 * k as i64);
                let expected_base: i64 = produced[p as usize].iter().map(|b| record_count(b)).sum();
                let outcome = client.produce("durable", p, &sent, 1);
                assert_eq!(outcome.error, ErrorCode::None, "round {round}: {}", outcome.message);
                assert_eq!(outcome.base_offset, expected_base, "round {round}: batch {k} of partition {p}");
                produced[p as usize].push(sent);
            }
        }
    };
    let check_all = |client: &mut Client, produced: &Vec<Vec<Vec<u8>>>, what: &str| {
        for p in 0..2u32 {
            let stored = fetch_all(client, "durable", p);
            let sent: Vec<&[u8]> = produced[p as usize].iter().map(Vec::as_slice).collect();
            assert_stored_as_produced(&stored, &sent, 0, &format!("{what}, partition {p}"));
        }
    };

    produce_round(&mut client, 0, &mut produced);
    // The stop is clean even with connections open and a long poll waiting at the log end.
    let end: i64 = produced[0].iter().map(|b| record_count(b)).sum();
    let poll_id = client.send_fetch(&[("durable", 0, end, FETCH_BYTES)], 10_000, 1);
    let _idle = node.client();
    let status = node.sigterm_and_wait();
    assert!(status.success(), "a SIGTERM stop is clean: {status}");
    // The long poll is answered (empty) or its connection closed; it is not left hanging.
    match client.receive() {
        Ok(Some(response)) => assert_eq!(response.response().correlation_id(), poll_id),
        Ok(None) => {}
        Err(e) => panic!("the long poll neither got an answer nor a close: {e}"),
    }
    node.restart();
    let mut client = node.client();
    check_all(&mut client, &produced, "after SIGTERM");

    produce_round(&mut client, 1, &mut produced);
    let status = node.kill9_and_wait();
    assert!(!status.success(), "kill -9 kills: {status}");
    node.restart();
    let mut client = node.client();
    check_all(&mut client, &produced, "after kill -9");
    // And the log takes appends again where it ended.
    produce_round(&mut client, 2, &mut produced);
    check_all(&mut client, &produced, "after appending past the recovered end");
}

/// Partitions live on different shards, but one connection reaches them all: a single
/// connection produces to and fetches from the 8 partitions of a topic on a 2-shard node,
/// in one request each and one partition at a time, pipelined requests are answered in
/// order, and the node counts the hops.
#[test]
fn one_connection_reaches_partitions_on_every_shard() {
    const PARTITIONS: u32 = 8;
    let (_tmp, data) = node_dir();
    let metrics_addr: SocketAddr = free_loopback_addr();
    let node = NodeProcess::start(&data, SHARDS, &["--metrics-listen", &metrics_addr.to_string()]);
    let mut client = node.client();
    create(&mut client, "spread", PARTITIONS, &[]);

    // One request for all partitions...
    let first: Vec<Vec<u8>> = (0..PARTITIONS).map(|p| batch(&format!("spread-{p}-a"), 3, 80, 1_000)).collect();
    let parts: Vec<(&str, u32, &[u8])> = (0..PARTITIONS).map(|p| ("spread", p, first[p as usize].as_slice())).collect();
    let outcomes = client.produce_many(1, &parts);
    assert_eq!(outcomes.len(), PARTITIONS as usize);
    for o in &outcomes {
        assert_eq!((o.error, o.base_offset), (ErrorCode::None, 0), "spread-{}: {}", o.partition, o.message);
    }
    // ...then one request per partition.
    let second: Vec<Vec<u8>> = (0..PARTITIONS).map(|p| batch(&format!("spread-{p}-b"), 2, 80, 2_000)).collect();
    for p in 0..PARTITIONS {
        let o = client.produce("spread", p, &second[p as usize], -1);
        assert_eq!((o.error, o.base_offset), (ErrorCode::None, 3), "spread-{p}: {}", o.message);
    }

    let targets: Vec<(&str, u32, i64, u32)> = (0..PARTITIONS).map(|p| ("spread", p, 0, FETCH_BYTES)).collect();
    let fetched = client.fetch_many(&targets, 0, 0);
    assert_eq!(fetched.len(), PARTITIONS as usize);
    for f in &fetched {
        assert_eq!((f.error, f.high_watermark), (ErrorCode::None, 5), "spread-{}: {}", f.partition, f.message);
        let p = f.partition as usize;
        assert_stored_as_produced(&f.records, &[&first[p], &second[p]], 0, &format!("spread-{p}, fetched together"));
    }
    for p in 0..PARTITIONS {
        let f = client.fetch("spread", p, 3, FETCH_BYTES, 0, 0);
        assert_stored_as_produced(&f.records, &[&second[p as usize]], 3, &format!("spread-{p}, fetched alone"));
        assert_eq!(client.list_offsets("spread", p, -1), (ErrorCode::None, 5), "spread-{p}");
    }

    // Pipelined requests to partitions of both shards are answered in request order, each
    // produce at the offset that follows the previous one to its partition.
    let third: Vec<Vec<u8>> = (0..PARTITIONS).map(|p| batch(&format!("spread-{p}-c"), 1, 20, 3_000)).collect();
    let mut sent = Vec::new();
    for round in 0..4i64 {
        for p in 0..PARTITIONS {
            sent.push((p, 5 + round, client.send_produce(1, &[("spread", p, &third[p as usize])])));
        }
    }
    for (p, expected_offset, correlation_id) in sent {
        let response = client.receive_for(correlation_id);
        let body = response.response().body_as_produce_response().expect("a ProduceResponse");
        let result = body.topics().unwrap().get(0).partitions().unwrap().get(0);
        assert_eq!((result.partition(), result.error()), (p, ErrorCode::None), "{:?}", result.message());
        assert_eq!(result.base_offset(), expected_offset, "spread-{p}");
    }

    let scrape = scrape_metrics(metrics_addr);
    assert_eq!(metric_value(&scrape, "sluice_shards"), Some(SHARDS as u64), "{scrape}");
    let hops = metric_value(&scrape, "sluice_cross_shard_calls_total").unwrap_or_else(|| panic!("{scrape}"));
    assert!(hops > 0, "half the partitions are on the other shard, so some calls crossed: {scrape}");
}

/// Creates `topic` with 2 partitions and stores in each one batch of `records` records
/// of `value_bytes` bytes (tagged `{topic}-{partition}`); returns the two batches.
fn two_partitions_holding_a_batch(client: &mut Client, topic: &str, records: u32, value_bytes: usize) -> [Vec<u8>; 2] {
    create(client, topic, 2, &[]);
    let stored = [0, 1].map(|p| batch(&format!("{topic}-{p}"), records, value_bytes, 1_000));
    for p in 0..2u32 {
        assert_eq!(client.produce(topic, p, &stored[p as usize], 1).error, ErrorCode::None, "{topic}-{p}");
    }
    stored
}

/// A frame with a well-formed header around `envelope` (any bytes) and no payload.
fn framed(envelope: &[u8]) -> Vec<u8> {
    wire::frame(envelope, &[])
}

/// Bad frames never crash the node or touch stored data: a frame it cannot parse gets an
/// `ErrorResponse` and its connection is closed; a frame larger than `--max-frame-bytes`
/// is refused from its header alone, without the node waiting for its body; a frame cut
/// short just ends its connection. Other connections, open before or after, keep working
/// and every stored record stays as it was.
#[test]
fn malformed_frames_get_an_error_and_only_that_connection_closes() {
    let (_tmp, data) = node_dir();
    let node = NodeProcess::start(&data, SHARDS, &["--max-frame-bytes", "65536"]);
    let mut bystander = node.client();
    let stored = two_partitions_holding_a_batch(&mut bystander, "safe", 4, 100);
    let everything_still_works = |what: &str, bystander: &mut Client| {
        for client in [&mut node.client(), bystander] {
            assert_eq!(client.metadata(Some(&["safe"]))[0].partitions, vec![0, 1], "after {what}");
            for p in 0..2u32 {
                let f = client.fetch("safe", p, 0, FETCH_BYTES, 0, 0);
                assert_eq!((f.error, f.high_watermark), (ErrorCode::None, 4), "after {what}: {}", f.message);
                assert_stored_as_produced(&f.records, &[&stored[p as usize]], 0, &format!("after {what}"));
            }
        }
    };
    let expect_error_then_close = |client: &mut Client, what: &str| -> String {
        let response = client
            .receive()
            .unwrap_or_else(|e| panic!("{what}: reading the error response: {e}"))
            .unwrap_or_else(|| panic!("{what}: the node closed the connection without an ErrorResponse"));
        let (code, message) = response.error_response().unwrap_or_else(|| panic!("{what}: not an ErrorResponse"));
        assert_eq!(code, ErrorCode::InvalidRequest, "{what}: {message}");
        assert!(client.is_closed_by_node(), "{what}: the connection is closed after the error");
        message
    };

    // Not our protocol at all (an HTTP request read as a frame header is a 1.2 GB frame).
    let mut client = node.client();
    client.send_raw(b"GET /metrics HTTP/1.1\r\nHost: sluice\r\n\r\n").unwrap();
    let message = expect_error_then_close(&mut client, "an HTTP request");
    assert!(message.contains("exceeds the limit of 65536"), "{message}");
    everything_still_works("an HTTP request", &mut bystander);

    // A header whose two sizes contradict each other.
    let mut client = node.client();
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&10u32.to_be_bytes());
    header[4..].copy_from_slice(&100u32.to_be_bytes());
    client.send_raw(&header).unwrap();
    let message = expect_error_then_close(&mut client, "inconsistent sizes");
    assert!(message.contains("inconsistent"), "{message}");
    everything_still_works("inconsistent sizes", &mut bystander);

    // A header announcing 1 MiB against a 64 KiB limit, and no body: the node answers from
    // the header alone (if it waited for the body, this read would time out).
    let mut client = node.client();
    client.send_raw(&FrameHeader::encode(16, (1 << 20) - 20)).unwrap();
    let message = expect_error_then_close(&mut client, "an oversized frame");
    assert!(message.contains("1048576") && message.contains("65536"), "{message}");
    everything_still_works("an oversized frame", &mut bystander);

    // A frame cut short: the header promises 1000 bytes, 10 arrive, then the client hangs up.
    let mut client = node.client();
    client.send_raw(&FrameHeader::encode(100, 896)).unwrap();
    client.send_raw(&[7u8; 10]).unwrap();
    client.shutdown_write();
    assert!(client.is_closed_by_node(), "a truncated frame ends its connection without a response");
    everything_still_works("a truncated frame", &mut bystander);

    // Envelopes that fail flatbuffers verification: garbage, and a real request cut short.
    let mut builder = flatbuffers::FlatBufferBuilder::new();
    let body = wire::MetadataRequest::create(&mut builder, &wire::MetadataRequestArgs::default());
    let good = wire::finish_request(&mut builder, 9, 0, Some("t"), RequestBody::MetadataRequest, body.as_union_value())
        .to_vec();
    for (what, envelope) in
        [("a garbage envelope", vec![0xffu8; 64]), ("a truncated envelope", good[..good.len() / 2].to_vec())]
    {
        let mut client = node.client();
        client.send_raw(&framed(&envelope)).unwrap();
        let message = expect_error_then_close(&mut client, what);
        assert!(message.contains("malformed request"), "{what}: {message}");
        everything_still_works(what, &mut bystander);
    }

    // A verified envelope with a body type this version does not know.
    let mut builder = flatbuffers::FlatBufferBuilder::new();
    let body = wire::MetadataRequest::create(&mut builder, &wire::MetadataRequestArgs::default());
    let unknown = wire::finish_request(&mut builder, 10, 0, None, RequestBody(200), body.as_union_value()).to_vec();
    let mut client = node.client();
    client.send_raw(&framed(&unknown)).unwrap();
    let message = expect_error_then_close(&mut client, "an unknown body type");
    assert!(message.contains("200"), "{message}");
    everything_still_works("an unknown body type", &mut bystander);

    // The same, crafted: the vtable entry of the unknown body points past the envelope
    // (the verifier does not follow unknown union variants; this panicked a shard).
    let mut crafted = unknown.clone();
    let table = u32::from_le_bytes(crafted[..4].try_into().unwrap()) as usize;
    let back = i32::from_le_bytes(crafted[table..table + 4].try_into().unwrap());
    let entry = table.checked_add_signed(-(back as isize)).unwrap() + usize::from(wire::Request::VT_BODY);
    crafted[entry..entry + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
    for _ in 0..SHARDS * 2 {
        // SO_REUSEPORT spreads connections over the shards, so several reach each.
        let mut client = node.client();
        client.send_raw(&framed(&crafted)).unwrap();
        let message = expect_error_then_close(&mut client, "a crafted unknown body");
        assert!(message.contains("200"), "{message}");
    }
    everything_still_works("a crafted unknown body", &mut bystander);

    // A good request after the bad ones on a fresh connection, pipelined behind another.
    let mut client = node.client();
    let a = client.send(
        RequestBody::MetadataRequest,
        |b| wire::MetadataRequest::create(b, &wire::MetadataRequestArgs::default()).as_union_value(),
        &[],
    );
    let b = client.send(
        RequestBody::ApiVersionsRequest,
        |b| wire::ApiVersionsRequest::create(b, &wire::ApiVersionsRequestArgs {}).as_union_value(),
        &[],
    );
    assert!(client.receive_for(a).response().body_as_metadata_response().is_some());
    assert!(client.receive_for(b).response().body_as_api_versions_response().is_some());
}

/// A batch refused before it gets offsets (a CRC mismatch) while other appends of the same
/// partition are in flight leaves the partition working: 40 good and 40 corrupt batches
/// go to one partition pipelined on one connection, each corrupt one is refused, every
/// good one is stored, and a later produce and fetch see exactly the good ones. (Before,
/// a refusal reset the replication state to the log's visible end, forgetting the
/// appends in flight, and the partition refused every later produce: "the stored log
/// gives offset 715, replication expects 695".)
#[test]
fn a_refused_batch_among_appends_in_flight_leaves_the_partition_working() {
    const ROUNDS: usize = 40;
    let (_tmp, data) = node_dir();
    let node = NodeProcess::start(&data, SHARDS, &[]);
    let mut client = node.client();
    create(&mut client, "interleaved", 1, &[]);
    let mut good = Vec::new();
    let mut sent = Vec::new();
    for i in 0..ROUNDS {
        let batch = batch(&format!("good-{i}"), 5, 100, 1_000 + i as i64);
        sent.push((true, client.send_produce(1, &[("interleaved", 0, &batch)])));
        good.push(batch);
        let mut corrupt = self::batch(&format!("bad-{i}"), 5, 100, 5_000 + i as i64);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x01;
        sent.push((false, client.send_produce(1, &[("interleaved", 0, &corrupt)])));
    }
    for (is_good, id) in sent {
        let outcome = &Client::produced(&client.receive_for(id))[0];
        let expected = if is_good { ErrorCode::None } else { ErrorCode::CorruptMessage };
        assert_eq!(outcome.error, expected, "request {id}: {}", outcome.message);
    }
    let last = batch("after", 5, 100, 9_000);
    assert_eq!(client.produce("interleaved", 0, &last, 1).error, ErrorCode::None);
    good.push(last);
    let fetched = client.fetch("interleaved", 0, 0, FETCH_BYTES, 0, 0);
    assert_eq!(
        (fetched.error, fetched.high_watermark),
        (ErrorCode::None, 5 * (ROUNDS as i64 + 1)),
        "{}",
        fetched.message
    );
    let refs: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
    assert_stored_as_produced(&fetched.records, &refs, 0, "after the refusals");
}

/// A connection whose client hung up closes at once, even while its request waits: 20
/// clients each send a long poll (30 s at the log end) and hang up; the node's open
/// descriptors are back where they were within 10 s, long before the polls would have
/// ended. (Before, each socket stayed open until its handler finished: hostile traffic
/// with long waits ran the node out of descriptors.) The node serves on.
#[test]
fn a_hung_up_connection_is_closed_without_waiting_for_its_long_poll() {
    const CLIENTS: usize = 20;
    let (_tmp, data) = node_dir();
    let node = NodeProcess::start(&data, SHARDS, &[]);
    let mut client = node.client();
    create(&mut client, "quiet", 1, &[]);
    let descriptors = || std::fs::read_dir(format!("/proc/{}/fd", node.pid())).map(Iterator::count).unwrap_or(0);
    let wait_until = |what: &str, limit: Duration, done: &dyn Fn(usize) -> bool| {
        let deadline = Instant::now() + limit;
        loop {
            let now = descriptors();
            if done(now) {
                return now;
            }
            assert!(Instant::now() < deadline, "{what}: the node has {now} descriptors open after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let before = descriptors();
    let mut pollers: Vec<Client> = (0..CLIENTS).map(|_| node.client()).collect();
    for poller in &mut pollers {
        poller.send_fetch(&[("quiet", 0, 0, 1 << 20)], 30_000, 1);
    }
    wait_until("the connections open", Duration::from_secs(10), &|n| n >= before + CLIENTS);
    std::thread::sleep(Duration::from_millis(200)); // the polls are waiting now
    drop(pollers);
    let started = Instant::now();
    let after = wait_until("the hung-up connections close", Duration::from_secs(10), &|n| n <= before);
    eprintln!("{before} descriptors before, {after} {:?} after {CLIENTS} clients hung up", started.elapsed());
    assert_eq!(client.metadata(Some(&["quiet"]))[0].partitions, vec![0]);
}

/// max-connections holds against a crowd: with a cap of 6 on 2 shards (3 each), of 20
/// connections that each send ApiVersions at most 6 are answered; the others are closed
/// at once and counted (`sluice_connections_refused_total`). When the served ones close,
/// `sluice_connections` is back to 0 and a new connection is served. Refused requests are
/// counted by reason: an oversized frame header, a malformed envelope.
#[test]
fn connections_past_max_connections_are_closed_at_once_and_counted() {
    use std::io::{Read, Write};
    const CAP: usize = 6;
    let (_tmp, data) = node_dir();
    let metrics = free_loopback_addr();
    let metrics_arg = metrics.to_string();
    let args = ["--max-connections", "6", "--max-frame-bytes", "65536", "--metrics-listen", metrics_arg.as_str()];
    let node = NodeProcess::start(&data, SHARDS, &args);
    let mut builder = flatbuffers::FlatBufferBuilder::new();
    let body = wire::ApiVersionsRequest::create(&mut builder, &wire::ApiVersionsRequestArgs {});
    let request = wire::frame(
        wire::finish_request(&mut builder, 1, 0, None, RequestBody::ApiVersionsRequest, body.as_union_value()),
        &[],
    );
    // Whether the node answers a request on a new connection (kept open when it does).
    let try_connection = || -> Option<std::net::TcpStream> {
        let mut stream = std::net::TcpStream::connect(node.addr()).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(&request).ok()?;
        let mut first = [0u8; 1];
        matches!(stream.read(&mut first), Ok(1)).then_some(stream)
    };
    let outcomes: Vec<Option<std::net::TcpStream>> = (0..20).map(|_| try_connection()).collect();
    let served = outcomes.iter().filter(|o| o.is_some()).count();
    assert!((CAP / 2..=CAP).contains(&served), "{served} of 20 connections were served under a cap of {CAP}");
    let scrape = scrape_metrics(metrics);
    assert_eq!(metric_value(&scrape, "sluice_connections"), Some(served as u64), "{scrape}");
    let refused = metric_value(&scrape, "sluice_connections_refused_total").unwrap_or(0);
    assert!(refused >= (20 - served) as u64, "{refused} refusals counted: {scrape}");
    drop(outcomes);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_value(&scrape_metrics(metrics), "sluice_connections") != Some(0) {
        assert!(Instant::now() < deadline, "connections still counted open 10 s after they closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(try_connection().is_some(), "a new connection is served once the others closed");

    // Refusals by reason.
    let mut oversized = node.client();
    oversized.send_raw(&FrameHeader::encode(16, (1 << 20) - 20)).unwrap();
    assert!(oversized.receive().is_ok());
    let mut garbage = node.client();
    garbage.send_raw(&wire::frame(&[0xff; 64], &[])).unwrap();
    assert!(garbage.receive().is_ok());
    drop((oversized, garbage));
    let scrape = scrape_metrics(metrics);
    for reason in ["frame_header", "malformed"] {
        let name = format!("sluice_requests_refused_total{{reason=\"{reason}\"}}");
        assert!(metric_value(&scrape, &name).is_some_and(|n| n >= 1), "{name}: {scrape}");
    }
}

/// max-connections-per-ip (Kafka's max.connections.per.ip) counts node-wide, across both
/// shards' listeners: with a limit of 3 and an override of 5 for 127.0.0.3, of 8
/// connections from each of 127.0.0.2, 127.0.0.3 and 127.0.0.4 exactly 3, 5 and 3 are
/// answered; the others are closed at once and counted
/// (`sluice_connections_refused_per_ip_total`). Once 127.0.0.2's close, it is served again.
#[test]
fn connections_past_max_connections_per_ip_are_closed_at_once_per_address() {
    use std::io::{Read, Write};
    let (_tmp, data) = node_dir();
    let metrics = free_loopback_addr();
    let metrics_arg = metrics.to_string();
    let args = [
        "--max-connections-per-ip",
        "3",
        "--max-connections-per-ip-overrides",
        "127.0.0.3:5",
        "--metrics-listen",
        metrics_arg.as_str(),
    ];
    let node = NodeProcess::start(&data, SHARDS, &args);
    let mut builder = flatbuffers::FlatBufferBuilder::new();
    let body = wire::ApiVersionsRequest::create(&mut builder, &wire::ApiVersionsRequestArgs {});
    let request = wire::frame(
        wire::finish_request(&mut builder, 1, 0, None, RequestBody::ApiVersionsRequest, body.as_union_value()),
        &[],
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Whether the node answers a request on a new connection from `source` (kept open
    // when it does).
    let try_from = |source: [u8; 4]| -> Option<std::net::TcpStream> {
        let stream = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind(SocketAddr::from((source, 0))).ok()?;
            let connect = socket.connect(node.addr());
            tokio::time::timeout(Duration::from_secs(5), connect).await.ok()?.ok()?.into_std().ok()
        })?;
        stream.set_nonblocking(false).ok()?;
        let mut stream = stream;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(&request).ok()?;
        let mut first = [0u8; 1];
        matches!(stream.read(&mut first), Ok(1)).then_some(stream)
    };
    let mut open = Vec::new();
    for (source, limit) in [([127, 0, 0, 2], 3), ([127, 0, 0, 3], 5), ([127, 0, 0, 4], 3)] {
        let outcomes: Vec<Option<std::net::TcpStream>> = (0..8).map(|_| try_from(source)).collect();
        let served: Vec<std::net::TcpStream> = outcomes.into_iter().flatten().collect();
        assert_eq!(served.len(), limit, "connections served from {source:?} with a limit of {limit}");
        open.push(served);
    }
    let scrape = scrape_metrics(metrics);
    assert_eq!(metric_value(&scrape, "sluice_connections"), Some(11), "{scrape}");
    assert_eq!(metric_value(&scrape, "sluice_connections_refused_per_ip_total"), Some(13), "{scrape}");
    assert_eq!(metric_value(&scrape, "sluice_connections_refused_total"), Some(0), "{scrape}");
    drop(open.remove(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_value(&scrape_metrics(metrics), "sluice_connections") != Some(8) {
        assert!(Instant::now() < deadline, "127.0.0.2's connections still counted open 10 s after they closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(try_from([127, 0, 0, 2]).is_some(), "127.0.0.2 is served again once its connections closed");
    assert!(try_from([127, 0, 0, 4]).is_none(), "127.0.0.4 is still at its limit");
}

/// The node raises its soft limit on open files to the hard limit at start (it needs a
/// descriptor per segment and index file and per connection) and says so in its log:
/// started at a soft limit of 256, it runs at the hard limit.
#[test]
fn the_node_raises_its_open_files_limit_to_the_hard_limit() {
    let (_tmp, data) = node_dir();
    let node = NodeProcess::start_with_open_files_soft_limit(&data, SHARDS, 256);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or_else(|| panic!("{limits}"));
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_eq!(numbers[0], numbers[1], "the soft limit is the hard limit: {line}");
    assert_ne!(numbers[0], "256", "{line}");
    assert!(node.log().contains(&format!("open files limit: {} (raised from 256)", numbers[1])), "{}", node.log_tail());
}

/// Descriptors are a budget: on a node whose open files limit is 1,024, a create of
/// 2,000 partitions is refused up front with an error naming the limit (not reported as
/// created while its partitions fail to open), and nothing of it is left; one that fits
/// is created and served. A partition that fails to open anyway (here: a file where its
/// directory must go) fails its create with the reason, and the topic is deleted again.
#[test]
fn creates_past_the_open_files_limit_or_with_partitions_that_cannot_open_fail_by_name() {
    let (_tmp, data) = node_dir();
    let node = NodeProcess::start_with_open_files_limits(&data, 1, 1024, Some(1024));
    let mut client = node.client();
    let refused = client.create_topic("too-many", 2000, &[]);
    assert_eq!(refused.error, ErrorCode::InvalidPartitions, "{}", refused.message);
    assert!(refused.message.contains("open files limit 1024"), "{}", refused.message);
    assert!(client.metadata(Some(&["too-many"])).iter().all(|t| t.partitions.is_empty()), "nothing of it is left");

    create(&mut client, "fits", 100, &[]);
    let stored = batch("fits", 3, 10, 1_000);
    assert_eq!(client.produce("fits", 99, &stored, 1).error, ErrorCode::None);

    std::fs::write(data.join("blocked-2"), b"not a directory").unwrap();
    let failed = client.create_topic("blocked", 4, &[]);
    assert_eq!(failed.error, ErrorCode::KafkaStorageError, "{}", failed.message);
    assert!(
        failed.message.contains("blocked-2") && failed.message.contains("the topic was not created"),
        "{}",
        failed.message
    );
    assert!(client.metadata(Some(&["blocked"])).iter().all(|t| t.partitions.is_empty()), "the topic was deleted");
    std::fs::remove_file(data.join("blocked-2")).unwrap();
    create(&mut client, "blocked", 4, &[]);
    assert_eq!(client.produce("blocked", 2, &batch("blocked", 1, 10, 1_000), 1).error, ErrorCode::None);
}

/// Slow clients cannot starve request memory: 400 connections each announce a 1 MiB
/// request (the largest the node takes) and send one byte of it, against 16 MiB of
/// request memory per shard (so their announced bodies are 25 times what it may hold). The node reserves memory as
/// bodies arrive (16 KiB before the first byte, the rest once that came), so a produce
/// and a fetch from another client still go through at once; with the whole body reserved
/// at its header they waited for the slow bodies' 30 s deadline and the client timed out.
#[test]
fn slow_clients_announcing_large_requests_do_not_stall_others() {
    const SLOW: usize = 400;
    let (_tmp, data) = node_dir();
    let node =
        NodeProcess::start(&data, SHARDS, &["--max-frame-bytes", "1048576", "--request-memory-bytes", "16777216"]);
    let mut client = node.client();
    create(&mut client, "busy", 1, &[]);
    let mut slow: Vec<Client> = (0..SLOW).map(|_| node.client()).collect();
    for s in &mut slow {
        // The largest frame the node takes: 16 of them fill a shard's request memory.
        s.send_raw(&FrameHeader::encode(100, (1 << 20) - 4 - 100)).unwrap();
        s.send_raw(&[0]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300)); // the node has read their headers
    let started = Instant::now();
    let stored = batch("busy", 10, 100, 1_000);
    assert_eq!(client.produce("busy", 0, &stored, 1).error, ErrorCode::None);
    let fetched = client.fetch("busy", 0, 0, FETCH_BYTES, 0, 0);
    assert_eq!((fetched.error, fetched.high_watermark), (ErrorCode::None, 10), "{}", fetched.message);
    eprintln!("produce and fetch took {:?} with {SLOW} slow 1 MiB requests open", started.elapsed());
    drop(slow);
}

/// Produce checks every partition's batches on their own: a corrupt batch (CRC mismatch),
/// a batch over the topic's `max.message.bytes`, an unknown topic and an unknown partition
/// each fail only their partition, with the right error code and a message naming the
/// partition; the other partitions of the same request are stored. A partition's batches
/// are all-or-nothing: a good batch sent with a corrupt one is not stored either.
#[test]
fn corrupted_batches_are_refused_per_partition_and_nothing_else_is_lost() {
    let (_tmp, data) = node_dir();
    let node = NodeProcess::start(&data, SHARDS, &[]);
    let mut client = node.client();
    create(&mut client, "mixed", 2, &[]);
    create(&mut client, "small", 1, &[("max.message.bytes", "1024")]);

    let good_before = batch("mixed-0-good", 3, 100, 1_000);
    let mut corrupt = batch("mixed-0-bad", 3, 100, 2_000);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01; // a flipped bit in the last record: the CRC no longer matches
    let good = batch("mixed-1-good", 3, 100, 3_000);
    let too_large = batch("small-big", 2, 1_500, 4_000);
    let fits = batch("small-fits", 2, 100, 5_000);
    let good_and_corrupt = [good_before.clone(), corrupt].concat();
    let correlation_id = client.send_produce(
        1,
        &[
            ("mixed", 0, &good_and_corrupt),
            ("mixed", 1, &good),
            ("mixed", 7, &good),
            ("small", 0, &too_large),
            ("no-such-topic", 0, &good),
        ],
    );
    let response = client.receive_for(correlation_id);
    let outcomes = Client::produced(&response);
    let outcome = |topic: &str, partition: u32| {
        outcomes
            .iter()
            .find(|o| o.topic == topic && o.partition == partition)
            .unwrap_or_else(|| panic!("no result for {topic}-{partition}: {outcomes:?}"))
    };
    let bad = outcome("mixed", 0);
    assert_eq!(bad.error, ErrorCode::CorruptMessage, "{}", bad.message);
    assert!(bad.message.contains("mixed-0") && bad.message.contains("CRC"), "{}", bad.message);
    // On the wire, a refused partition's base offset is -1 (as in Kafka).
    let body = response.response().body_as_produce_response().expect("a ProduceResponse");
    let mut raw_base_offsets = Vec::new();
    for topic in body.topics().iter().flatten().filter(|t| t.topic() == Some("mixed")) {
        raw_base_offsets.extend(topic.partitions().iter().flatten().map(|p| (p.partition(), p.base_offset())));
    }
    assert!(raw_base_offsets.contains(&(0, -1)), "{raw_base_offsets:?}");
    let stored = outcome("mixed", 1);
    assert_eq!((stored.error, stored.base_offset), (ErrorCode::None, 0), "{}", stored.message);
    let unknown_partition = outcome("mixed", 7);
    assert_eq!(unknown_partition.error, ErrorCode::UnknownTopicOrPartition, "{}", unknown_partition.message);
    assert!(unknown_partition.message.contains('7'), "{}", unknown_partition.message);
    let large = outcome("small", 0);
    assert_eq!(large.error, ErrorCode::MessageTooLarge, "{}", large.message);
    assert!(large.message.contains("small-0") && large.message.contains("1024"), "{}", large.message);
    let unknown_topic = outcome("no-such-topic", 0);
    assert_eq!(unknown_topic.error, ErrorCode::UnknownTopicOrPartition, "{}", unknown_topic.message);
    assert!(unknown_topic.message.contains("no-such-topic"), "{}", unknown_topic.message);

    // What was refused left no trace; what was accepted is whole.
    let f = client.fetch("mixed", 0, 0, FETCH_BYTES, 0, 0);
    assert_eq!((f.error, f.high_watermark, f.records.len()), (ErrorCode::None, 0, 0), "{}", f.message);
    let f = client.fetch("mixed", 1, 0, FETCH_BYTES, 0, 0);
    assert_stored_as_produced(&f.records, &[&good], 0, "mixed-1");
    assert_eq!(client.list_offsets("small", 0, -1), (ErrorCode::None, 0));
    // The refused partitions take good batches afterwards, from offset 0.
    assert_eq!(client.produce("mixed", 0, &good_before, 1).base_offset, 0);
    assert_eq!(client.produce("small", 0, &fits, 1).base_offset, 0);
    // Fetching what does not exist is refused the same way.
    assert_eq!(client.fetch("mixed", 7, 0, FETCH_BYTES, 0, 0).error, ErrorCode::UnknownTopicOrPartition);
    assert_eq!(client.fetch("no-such-topic", 0, 0, FETCH_BYTES, 0, 0).error, ErrorCode::UnknownTopicOrPartition);
    assert_eq!(client.list_offsets("no-such-topic", 0, -1).0, ErrorCode::UnknownTopicOrPartition);
    // An empty record set, a negative fetch offset and a negative timestamp other than
    // Kafka's -1 to -5 are refused too.
    let empty = client.produce("mixed", 1, &[], 1);
    assert_eq!(empty.error, ErrorCode::InvalidRecord, "{}", empty.message);
    assert_eq!(client.fetch("mixed", 1, -1, FETCH_BYTES, 0, 0).error, ErrorCode::OffsetOutOfRange);
    assert_eq!(client.list_offsets("mixed", 1, -6).0, ErrorCode::InvalidRequest);
    // An acks value that is not 0, 1 or -1 is refused, and stores nothing.
    let refused = client.produce("mixed", 1, &good, 2);
    assert_eq!(refused.error, ErrorCode::InvalidRequiredAcks, "{}", refused.message);
    assert_eq!(client.list_offsets("mixed", 1, -1), (ErrorCode::None, 3));
}

/// A topic's partition count only grows: growing it adds usable partitions, and asking
/// for fewer (or as many) is refused with InvalidPartitions and a message that says
/// partitions can only be added. The count stays as it was after a refusal.
#[test]
fn partitions_can_only_be_added() {
    let (_tmp, data) = node_dir();
    let node = NodeProcess::start(&data, SHARDS, &[]);
    let mut client = node.client();
    create(&mut client, "grow", 2, &[]);
    let before = batch("grow-0", 2, 10, 1_000);
    assert_eq!(client.produce("grow", 0, &before, 1).error, ErrorCode::None);

    let grown = client.create_partitions("grow", 5);
    assert_eq!(grown.error, ErrorCode::None, "{}", grown.message);
    assert_eq!(client.metadata(Some(&["grow"]))[0].partitions, vec![0, 1, 2, 3, 4]);
    for p in 2..5u32 {
        let sent = batch(&format!("grow-{p}"), 3, 10, 2_000);
        let o = client.produce("grow", p, &sent, 1);
        assert_eq!((o.error, o.base_offset), (ErrorCode::None, 0), "grow-{p}: {}", o.message);
        let f = client.fetch("grow", p, 0, FETCH_BYTES, 0, 0);
        assert_stored_as_produced(&f.records, &[&sent], 0, &format!("grow-{p}"));
    }
    let f = client.fetch("grow", 0, 0, FETCH_BYTES, 0, 0);
    assert_stored_as_produced(&f.records, &[&before], 0, "grow-0, untouched by the growth");

    let shrink = client.create_partitions("grow", 3);
    assert_eq!(shrink.error, ErrorCode::InvalidPartitions, "{}", shrink.message);
    assert!(shrink.message.contains("partitions can only be added"), "{}", shrink.message);
    let same = client.create_partitions("grow", 5);
    assert_eq!(same.error, ErrorCode::InvalidPartitions, "{}", same.message);
    assert_eq!(client.create_partitions("no-such-topic", 5).error, ErrorCode::UnknownTopicOrPartition);
    // A topic needs at least one partition, and a valid name.
    assert_eq!(client.create_topic("empty", 0, &[]).error, ErrorCode::InvalidPartitions);
    assert_eq!(client.create_topic("bad/name", 1, &[]).error, ErrorCode::InvalidTopic);
    assert_eq!(client.metadata(Some(&["grow"]))[0].partitions, vec![0, 1, 2, 3, 4]);
}

/// Topic configs are described with their effective values (the topic's own, or the
/// node's default, marked as such), altered incrementally (set, or delete back to the
/// default) and validated (unknown keys and out-of-range values are refused, naming the
/// key); an altered config takes effect at once; and configs and partition counts persist
/// across a crash (kill -9) and restart.
#[test]
fn topic_configs_are_described_altered_and_validated() {
    let (_tmp, data) = node_dir();
    let mut node = NodeProcess::start(&data, SHARDS, &["--fsync", "never"]);
    let mut client = node.client();
    create(&mut client, "tuned", 2, &[("segment.bytes", "65536")]);

    let described = client.describe_configs(&["tuned"]);
    assert_eq!(described.len(), 1);
    assert_eq!(described[0].error, ErrorCode::None, "{}", described[0].message);
    assert_eq!(described[0].get("segment.bytes"), Some(("65536", false)));
    assert_eq!(described[0].get("fsync.policy"), Some(("never", true)), "the node's --fsync is the default");
    assert!(matches!(described[0].get("max.message.bytes"), Some((_, true))), "{:?}", described[0]);

    let altered = client.alter_configs("tuned", &[("max.message.bytes", "2048")], &["segment.bytes"]);
    assert_eq!(altered.error, ErrorCode::None, "{}", altered.message);
    let described = client.describe_configs(&["tuned"]);
    assert_eq!(described[0].get("max.message.bytes"), Some(("2048", false)));
    assert!(matches!(described[0].get("segment.bytes"), Some((v, true)) if v != "65536"), "{:?}", described[0]);
    // The new limit applies to the next produce, on both shards' partitions.
    for p in 0..2u32 {
        let o = client.produce("tuned", p, &batch("tuned-big", 2, 1_500, 1_000), 1);
        assert_eq!(o.error, ErrorCode::MessageTooLarge, "tuned-{p}: {}", o.message);
        assert_eq!(client.produce("tuned", p, &batch("tuned-ok", 2, 100, 1_000), 1).error, ErrorCode::None);
    }

    // Refusals name what was wrong and change nothing.
    let unknown_key = client.alter_configs("tuned", &[("no.such.config", "1000")], &[]);
    assert_eq!(unknown_key.error, ErrorCode::InvalidConfig, "{}", unknown_key.message);
    assert!(unknown_key.message.contains("no.such.config"), "{}", unknown_key.message);
    let out_of_range = client.alter_configs("tuned", &[("segment.bytes", "12")], &[]);
    assert_eq!(out_of_range.error, ErrorCode::InvalidConfig, "{}", out_of_range.message);
    assert!(out_of_range.message.contains("segment.bytes") && out_of_range.message.contains("12"));
    assert_eq!(
        client.alter_configs("no-such-topic", &[("segment.ms", "1000")], &[]).error,
        ErrorCode::UnknownTopicOrPartition
    );
    let bad_create = client.create_topic("never-made", 1, &[("fsync.policy", "sometimes")]);
    assert_eq!(bad_create.error, ErrorCode::InvalidConfig, "{}", bad_create.message);
    assert!(bad_create.message.contains("sometimes"), "{}", bad_create.message);
    assert_eq!(client.metadata(Some(&["never-made"]))[0].error, ErrorCode::UnknownTopicOrPartition);
    assert_eq!(client.describe_configs(&["never-made"])[0].error, ErrorCode::UnknownTopicOrPartition);
    assert_eq!(client.create_topic("tuned", 1, &[]).error, ErrorCode::TopicAlreadyExists);
    assert_eq!(client.describe_configs(&["tuned"])[0].get("max.message.bytes"), Some(("2048", false)));

    // Acknowledged metadata changes survive a crash.
    assert_eq!(client.create_partitions("tuned", 3).error, ErrorCode::None);
    let before_crash = client.describe_configs(&["tuned"]);
    drop(client);
    node.kill9_and_wait();
    node.restart();
    let mut client = node.client();
    assert_eq!(client.metadata(Some(&["tuned"]))[0].partitions, vec![0, 1, 2]);
    assert_eq!(client.describe_configs(&["tuned"]), before_crash);
    let o = client.produce("tuned", 2, &batch("tuned-big", 2, 1_500, 1_000), 1);
    assert_eq!(o.error, ErrorCode::MessageTooLarge, "the limit still applies: {}", o.message);
    for p in 0..2u32 {
        assert_eq!(client.list_offsets("tuned", p, -1), (ErrorCode::None, 2), "tuned-{p} kept its records");
    }
}

/// A deleted topic is gone, with its records: it is no longer listed, produce and fetch
/// refuse it, a restart does not bring it back, and its name can be used again for a new,
/// empty topic.
#[test]
fn a_deleted_topic_is_gone_and_its_name_can_be_reused() {
    let (_tmp, data) = node_dir();
    let mut node = NodeProcess::start(&data, SHARDS, &[]);
    let mut client = node.client();
    create(&mut client, "doomed", 2, &[]);
    create(&mut client, "kept", 1, &[]);
    let kept = batch("kept", 2, 10, 1_000);
    assert_eq!(client.produce("kept", 0, &kept, 1).error, ErrorCode::None);
    for p in 0..2u32 {
        assert_eq!(client.produce("doomed", p, &batch("doomed", 4, 10, 1_000), 1).error, ErrorCode::None);
    }

    let deleted = client.delete_topic("doomed");
    assert_eq!(deleted.error, ErrorCode::None, "{}", deleted.message);
    assert_eq!(client.delete_topic("doomed").error, ErrorCode::UnknownTopicOrPartition);
    assert_eq!(client.metadata(Some(&["doomed"]))[0].error, ErrorCode::UnknownTopicOrPartition);
    assert!(!client.metadata(None).iter().any(|t| t.name == "doomed"));
    assert_eq!(client.produce("doomed", 0, &kept, 1).error, ErrorCode::UnknownTopicOrPartition);
    assert_eq!(client.fetch("doomed", 1, 0, FETCH_BYTES, 0, 0).error, ErrorCode::UnknownTopicOrPartition);

    drop(client);
    assert!(node.sigterm_and_wait().success());
    node.restart();
    let mut client = node.client();
    assert_eq!(client.metadata(Some(&["doomed"]))[0].error, ErrorCode::UnknownTopicOrPartition);
    create(&mut client, "doomed", 2, &[]);
    for p in 0..2u32 {
        assert_eq!(client.list_offsets("doomed", p, -1), (ErrorCode::None, 0), "a new topic starts empty");
    }
    let f = client.fetch("kept", 0, 0, FETCH_BYTES, 0, 0);
    assert_stored_as_produced(&f.records, &[&kept], 0, "the other topic");
}

/// A fetch at the log end with `min_bytes` 1 waits for data: it returns as soon as
/// another connection's produce lands (well before its `max_wait_ms`), with that data,
/// whichever shard the partition is on; with no data it returns empty once
/// `max_wait_ms` has passed.
#[test]
fn fetch_long_polls_until_data_arrives() {
    const LONG_WAIT_MS: u32 = 5_000;
    const SHORT_WAIT_MS: u32 = 200;
    let (_tmp, data) = node_dir();
    let node = NodeProcess::start(&data, SHARDS, &[]);
    let addr = node.addr();
    let mut producer = node.client();
    // Two partitions land on the two shards, so one of them is remote to the fetching
    // connection whichever shard accepted it.
    create(&mut producer, "poll", 2, &[]);

    for p in 0..2u32 {
        let fetcher = std::thread::spawn(move || {
            let mut client = Client::connect(addr);
            let started = Instant::now();
            let fetched = client.fetch("poll", p, 0, FETCH_BYTES, LONG_WAIT_MS, 1);
            (fetched, started.elapsed())
        });
        // Give the fetch time to start waiting; if the produce still comes first, the fetch
        // finds the data at once, which the assertions below accept as well.
        std::thread::sleep(Duration::from_millis(300));
        let sent = batch(&format!("poll-{p}"), 2, 50, 1_000);
        assert_eq!(producer.produce("poll", p, &sent, 1).error, ErrorCode::None);
        let (fetched, elapsed) = fetcher.join().expect("the fetching thread");
        assert_eq!(fetched.error, ErrorCode::None, "poll-{p}: {}", fetched.message);
        assert_stored_as_produced(&fetched.records, &[&sent], 0, &format!("poll-{p}, long-polled"));
        assert!(
            elapsed < Duration::from_millis(u64::from(LONG_WAIT_MS) * 9 / 10),
            "poll-{p}: the fetch slept out its max_wait ({elapsed:?}) instead of waking on the produce"
        );

        let started = Instant::now();
        let empty = producer.fetch("poll", p, 2, FETCH_BYTES, SHORT_WAIT_MS, 1);
        let elapsed = started.elapsed();
        assert_eq!((empty.error, empty.records.len()), (ErrorCode::None, 0), "poll-{p}: {}", empty.message);
        assert!(
            elapsed >= Duration::from_millis(u64::from(SHORT_WAIT_MS) * 3 / 4),
            "poll-{p}: an empty fetch returned after {elapsed:?}, before its max_wait of {SHORT_WAIT_MS} ms"
        );
    }
}

/// Starts a node on `data` and stores a batch in topic `held`, partition 0.
fn node_holding_a_batch(data: &std::path::Path) -> (NodeProcess, Vec<u8>) {
    let node = NodeProcess::start(data, SHARDS, &[]);
    let mut client = node.client();
    create(&mut client, "held", 1, &[]);
    let sent = batch("held", 3, 100, 1_000);
    assert_eq!(client.produce("held", 0, &sent, 1).error, ErrorCode::None);
    (node, sent)
}

/// Checks that `node` still serves `held` as it was.
fn assert_still_holds(node: &NodeProcess, sent: &[u8]) {
    let mut client = node.client();
    let f = client.fetch("held", 0, 0, FETCH_BYTES, 0, 0);
    assert_eq!(f.error, ErrorCode::None, "{}", f.message);
    assert_stored_as_produced(&f.records, &[sent], 0, "the first node's data");
}

/// A data directory belongs to one node at a time: a second node started on it (on
/// another port) must refuse to start, not open the same partition logs and write to
/// them beside the first.
#[test]
fn a_second_node_on_the_same_data_dir_refuses_to_start() {
    let (_tmp, data) = node_dir();
    let (node, sent) = node_holding_a_batch(&data);
    let attempt = NodeProcess::try_start_at(free_loopback_addr(), &data, SHARDS, &[]);
    assert_still_holds(&node, &sent);
    match attempt {
        StartAttempt::Exited(status, _log) => assert!(!status.success(), "it exits with a failure: {status}"),
        StartAttempt::Started(log) => panic!("a second node started on the data directory of a running node:\n{log}"),
    }
}

/// A port belongs to one node at a time: a second node started on it (with its own data)
/// must refuse to start, not share the port, which would hand some of the first node's
/// clients to a node that does not have their topics.
#[test]
fn a_second_node_on_the_same_port_refuses_to_start() {
    let (_tmp, data) = node_dir();
    let (node, sent) = node_holding_a_batch(&data);
    let (_other_tmp, other_data) = node_dir();
    match NodeProcess::try_start_at(node.addr(), &other_data, SHARDS, &[]) {
        StartAttempt::Exited(status, _log) => assert!(!status.success(), "it exits with a failure: {status}"),
        // (Checked before the first node's data: the killed second node's socket can take
        // connections on the shared port for a few milliseconds after it is reaped.)
        StartAttempt::Started(log) => panic!("a second node started on the port of a running node:\n{log}"),
    }
    assert_still_holds(&node, &sent);
}

/// A data directory a single node wrote before it was a cluster of one: topics in
/// `metadata.toml`, logs appended without leader epochs (made here with the storage
/// engine, as that node wrote them). The first start migrates the topics into the
/// controller's state with their configs, says so in its log, renames the file, and
/// serves the records as they were; appends go on from the old log ends; a second start
/// does not migrate again.
#[test]
fn a_single_node_data_directory_from_before_is_migrated_at_the_first_start() {
    let (tmp, data) = node_dir();
    let old = [batch("old-0", 3, 40, 1_000), batch("old-1", 2, 40, 1_000)];
    let logs: Vec<(PathBuf, Vec<u8>)> =
        old.iter().enumerate().map(|(p, b)| (data.join(format!("legacy-{p}")), b.clone())).collect();
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(2 << 20)
        .make()
        .expect("glommio executor (is ulimit -l at least 512 KiB?)");
    executor.run(async move {
        for (dir, bytes) in logs {
            let config = sluice_node::storage::LogConfig::default();
            let (log, _) = sluice_node::storage::PartitionLog::open(&dir, config).await.unwrap();
            log.append(&bytes).await.unwrap();
            log.close().await.unwrap();
        }
    });
    std::fs::write(
        data.join("metadata.toml"),
        "# Sluice topic metadata. Written by the node; do not edit while it runs.\n\
         [topics.legacy]\npartitions = 2\n[topics.legacy.configs]\n\"retention.ms\" = \"86400000\"\n",
    )
    .unwrap();

    let mut node = NodeProcess::start(&data, SHARDS, &[]);
    assert!(node.log_tail().contains("migrated a single node's topics"), "{}", node.log_tail());
    assert!(!data.join("metadata.toml").exists() && data.join("metadata.toml.migrated").exists());
    let mut client = node.client();
    let listed = client.metadata(Some(&["legacy"]));
    assert_eq!((listed[0].error, listed[0].partitions.clone()), (ErrorCode::None, vec![0, 1]));
    let configs = client.describe_configs(&["legacy"]);
    assert_eq!(configs[0].get("retention.ms"), Some(("86400000", false)));
    for (p, b) in old.iter().enumerate() {
        assert_stored_as_produced(&fetch_all(&mut client, "legacy", p as u32), &[b], 0, "a migrated partition");
    }
    let next = batch("new-0", 1, 40, 2_000);
    let produced = client.produce("legacy", 0, &next, 1);
    assert_eq!((produced.error, produced.base_offset), (ErrorCode::None, 3), "{}", produced.message);

    drop(client);
    assert!(node.sigterm_and_wait().success());
    node.restart();
    let mut client = node.client();
    assert_stored_as_produced(&fetch_all(&mut client, "legacy", 0), &[&old[0], &next], 0, "after a second start");
    let log = std::fs::read_to_string(tmp.path().join(format!("node-{}.log", node.addr().port()))).unwrap();
    assert_eq!(log.matches("migrated a single node's topics").count(), 1, "migrated once");
}

/// A thousand partitions written at once, kill -9 in the middle: a writer keeps several
/// requests in flight, each with a batch for every one of 1,000 partitions (fsync
/// `always`: each partition's writes join its shard's sync rounds), until the node is
/// killed. After the restart every acknowledged batch is there, at the offset it was
/// acknowledged with, byte for byte; and before the kill the rounds served several
/// partitions' writes each (one device flush for many partitions).
#[test]
fn a_thousand_partitions_written_at_once_keep_every_acknowledged_batch_through_kill_9() {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const PARTITIONS: u32 = 1000;
    const IN_FLIGHT: usize = 4;
    const ROUNDS_BEFORE_KILL: usize = 6;
    const DEADLINE: Duration = Duration::from_secs(60);
    let (_tmp, data) = node_dir();
    let metrics_addr: SocketAddr = free_loopback_addr();
    let mut node = NodeProcess::start(&data, SHARDS, &["--metrics-listen", &metrics_addr.to_string()]);
    let mut client = node.client();
    create(&mut client, "wide", PARTITIONS, &[]);

    // Per partition: each acknowledged batch with its base offset.
    type Acked = Vec<Vec<(i64, Vec<u8>)>>;
    let acked: Arc<Mutex<Acked>> = Arc::new(Mutex::new(vec![Vec::new(); PARTITIONS as usize]));
    let rounds_acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, rounds_acked, stop, addr) = (acked.clone(), rounds_acked.clone(), stop.clone(), node.addr());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut c = Client::connect(addr);
            let mut in_flight: VecDeque<(u32, Vec<Vec<u8>>)> = VecDeque::new();
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < DEADLINE {
                while in_flight.len() < IN_FLIGHT {
                    let batches: Vec<Vec<u8>> = (0..PARTITIONS)
                        .map(|p| {
                            batch(&format!("r{round}-p{p}"), 1 + (round as u32 + p) % 3, 100 + p as usize % 200, 1_000)
                        })
                        .collect();
                    let parts: Vec<(&str, u32, &[u8])> =
                        batches.iter().enumerate().map(|(p, b)| ("wide", p as u32, b.as_slice())).collect();
                    // The node may die under it: then the writer is done.
                    let Ok(id) = c.try_send_produce(1, &parts) else { return };
                    in_flight.push_back((id, batches));
                    round += 1;
                }
                let Ok(Some(response)) = c.receive() else { return };
                let Some((id, batches)) = in_flight.pop_front() else { return };
                assert_eq!(response.response().correlation_id(), id, "responses come in request order");
                let mut acked = acked.lock().unwrap();
                for outcome in Client::produced(&response) {
                    if outcome.error == ErrorCode::None {
                        let p = outcome.partition as usize;
                        acked[p].push((outcome.base_offset, batches[p].clone()));
                    }
                }
                rounds_acked.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let waited = Instant::now();
    while rounds_acked.load(Ordering::Relaxed) < ROUNDS_BEFORE_KILL {
        assert!(waited.elapsed() < DEADLINE, "the writer got {ROUNDS_BEFORE_KILL} rounds acknowledged in time");
        assert!(!writer.is_finished(), "the writer stopped early:\n{}", node.log_tail());
        std::thread::sleep(Duration::from_millis(10));
    }
    let scrape = scrape_metrics(metrics_addr);
    let rounds = metric_value(&scrape, "sluice_storage_sync_rounds_total").expect("sync rounds counted");
    let served = metric_value(&scrape, "sluice_storage_syncs_served_total").expect("syncs served counted");
    assert!(served > rounds, "sync rounds serve several partitions' writes each: {served} syncs in {rounds} rounds");

    let status = node.kill9_and_wait();
    assert!(!status.success(), "kill -9 kills: {status}");
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer thread ends once its connection is gone");
    node.restart();
    let mut client = node.client();
    let acked = acked.lock().unwrap();
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(total >= ROUNDS_BEFORE_KILL * PARTITIONS as usize, "{total} batches acknowledged");
    for (p, batches) in acked.iter().enumerate() {
        let stored = fetch_all(&mut client, "wide", p as u32);
        let by_base: std::collections::HashMap<i64, &[u8]> = BatchWalker::new(&stored)
            .map(|b| {
                let (_, header, bytes) = b.unwrap_or_else(|e| panic!("wide-{p}: {e}"));
                (header.base_offset().0 as i64, bytes)
            })
            .collect();
        for (base, sent) in batches {
            let stored =
                by_base.get(base).unwrap_or_else(|| panic!("wide-{p}: the batch acknowledged at {base} is gone"));
            assert!(sluice_tests::stored_as_produced(stored, sent), "wide-{p}: the batch at {base} changed");
        }
    }
}

/// Kafka APIs a fuzzed frame is not sent as (it is sent as ApiVersions instead): those
/// that create, delete or reshape topics, whose files and memory would stay by design.
const KAFKA_APIS_NOT_FUZZED: [i16; 8] = [19, 20, 21, 33, 37, 44, 45, 60];

/// The inputs of a committed fuzzing corpus (`fuzz/corpus/NAME`), up to 64 KiB each.
fn fuzz_corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz").join("corpus").join(name);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .filter(|(_, bytes)| !bytes.is_empty() && bytes.len() <= 64 << 10)
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 100, "{}: {} inputs", dir.display(), inputs.len());
    inputs.into_iter().map(|(_, bytes)| bytes).collect()
}

/// A corpus input changed as libFuzzer would: bytes overwritten, cut short, random bytes
/// inserted, or left as it is.
fn mutated(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    match rng.below(4) {
        0 => {
            for _ in 0..=rng.below(8) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next_u64() as u8;
            }
        }
        1 => bytes.truncate(rng.below(bytes.len() + 1)),
        2 => {
            let at = rng.below(bytes.len() + 1);
            let extra: Vec<u8> = (0..=rng.below(64)).map(|_| rng.next_u64() as u8).collect();
            bytes.splice(at..at, extra);
        }
        _ => {}
    }
    bytes
}

/// The node's open descriptors: (sockets, all).
fn open_descriptors(pid: u32) -> (usize, usize) {
    let mut sockets = 0;
    let mut all = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the node's /proc fd directory").flatten() {
        all += 1;
        if std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    (sockets, all)
}

/// One fuzzing client: connects, sends 1 to 16 mutated corpus inputs (Kafka ones framed
/// with their length, or now and then a false one; native ones are whole frames), reads
/// whatever comes back, then goes away: abruptly, after a clean half-close, or in the
/// middle of a frame. Returns the frames it sent.
fn fuzzing_client(rng: &mut Rng, addr: SocketAddr, seeds: &[Vec<u8>], kafka: bool) -> usize {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return 0 };
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_read_timeout(Some(Duration::from_millis(5)));
    let mut sent = 0;
    let mut answers = vec![0u8; 64 << 10];
    for _ in 0..=rng.below(16) {
        let pick = rng.below(seeds.len());
        let mut body = mutated(rng, &seeds[pick]);
        let frame = if kafka {
            if body.len() >= 2 && KAFKA_APIS_NOT_FUZZED.contains(&i16::from_be_bytes([body[0], body[1]])) {
                body[..2].copy_from_slice(&18i16.to_be_bytes());
            }
            let len = if rng.below(8) == 0 { rng.next_u64() as u32 } else { body.len() as u32 };
            [len.to_be_bytes().as_slice(), &body].concat()
        } else {
            body
        };
        if s.write_all(&frame).is_err() {
            break;
        }
        sent += 1;
        while matches!(s.read(&mut answers), Ok(n) if n > 0) {}
    }
    match rng.below(3) {
        0 => {}
        1 => {
            let _ = s.shutdown(std::net::Shutdown::Write);
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            while matches!(s.read(&mut answers), Ok(n) if n > 0) {}
        }
        _ => {
            let _ = s.write_all(&[0, 0, 0x40, 0, 0, 1, 2]);
        }
    }
    sent
}

/// Creates the transactions' state topic through the Kafka listener at `kafka`: a
/// FindCoordinator for a transactional id, asked until it names a coordinator (bounded).
fn transaction_state_topic(kafka: SocketAddr) {
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut w = sluice_tests::kafka_wire::Wire::connect(kafka);
    loop {
        let find = FindCoordinatorRequest::default()
            .with_key(kafka_protocol::protocol::StrBytes::from_static_str("fuzz-baseline"))
            .with_key_type(1);
        let r: FindCoordinatorResponse = w.call(ApiKey::FindCoordinator, 3, &find);
        if r.error_code == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no transaction coordinator within 30 s: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fuzzed traffic from thousands of clients leaves nothing behind (issue 19): mutated
/// inputs of the committed fuzzing corpora (Kafka requests, native frames, JoinGroups
/// among them) from 6,000 connections on both listeners, each ending abruptly, cleanly or
/// mid-frame. Once they are gone, the node's sockets and descriptors return to what they
/// were before (read from /proc), its resident memory to within 32 MiB of it, the stored
/// records are byte for byte as produced, and the node takes new writes.
#[test]
fn fuzzed_traffic_from_many_clients_leaves_no_descriptor_or_memory_behind() {
    const CONNECTIONS: usize = 6_000;
    const THREADS: usize = 8;
    const RESIDENT_SLACK: u64 = 32 << 20;
    const SETTLE: Duration = Duration::from_secs(60);
    let (_tmp, data) = node_dir();
    let node = NodeProcess::start_with_kafka(&data, SHARDS, &["--auto-create-topics", "false"]);
    let mut client = node.client();
    let stored = two_partitions_holding_a_batch(&mut client, "kept-exact", 8, 200);
    let kafka_seeds = fuzz_corpus("kafka_request");
    let native_seeds = fuzz_corpus("native_frame");
    let pid = node.pid();
    // The corpora hold transactional requests, which create `__transaction_state` (8
    // partitions, each an open segment file): it exists before the count, as the offsets
    // topic does.
    transaction_state_topic(node.kafka_addr().expect("a Kafka listener"));
    std::thread::sleep(Duration::from_secs(1));
    let (sockets_before, descriptors_before) = open_descriptors(pid);
    let resident_before = resident_bytes(pid);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("fuzzing clients: seed {seed}");
    let (native, kafka) = (node.addr(), node.kafka_addr().expect("a Kafka listener"));
    let started = Instant::now();
    let frames: Vec<(usize, usize)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (kafka_seeds, native_seeds) = (&kafka_seeds, &native_seeds);
                scope.spawn(move || {
                    let mut rng = Rng::new(seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let (mut to_kafka, mut to_native) = (0, 0);
                    for c in 0..CONNECTIONS / THREADS {
                        if c % 2 == 0 {
                            to_kafka += fuzzing_client(&mut rng, kafka, kafka_seeds, true);
                        } else {
                            to_native += fuzzing_client(&mut rng, native, native_seeds, false);
                        }
                    }
                    (to_kafka, to_native)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let (to_kafka, to_native) = frames.iter().fold((0, 0), |(a, b), (k, n)| (a + k, b + n));
    let peak = resident_bytes(pid);
    eprintln!(
        "fuzzing clients: {to_kafka} Kafka and {to_native} native frames over {CONNECTIONS} connections in {:?}; \
         resident {} MiB before, {} MiB after",
        started.elapsed(),
        resident_before >> 20,
        peak >> 20
    );
    // Topics a native frame created (unlikely, but its bytes may say so) go, with their files.
    let mut client = node.client();
    for topic in client.metadata(None) {
        if topic.name != "kept-exact" && !topic.name.starts_with("__") {
            assert_eq!(client.delete_topic(&topic.name).error, ErrorCode::None, "deleting {}", topic.name);
        }
    }
    drop(client);
    let deadline = Instant::now() + SETTLE;
    let settled = loop {
        let ((sockets, descriptors), resident) = (open_descriptors(pid), resident_bytes(pid));
        let done = sockets <= sockets_before
            && descriptors <= descriptors_before
            && resident <= resident_before + RESIDENT_SLACK;
        if done || Instant::now() >= deadline {
            break (sockets, descriptors, resident, done);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (sockets, descriptors, resident, done) = settled;
    eprintln!(
        "fuzzing clients gone: sockets {sockets_before} -> {sockets}, descriptors {descriptors_before} -> \
         {descriptors}, resident {} -> {} MiB, {:?} after the traffic",
        resident_before >> 20,
        resident >> 20,
        started.elapsed()
    );
    assert!(done, "the node did not return to its starting level within {SETTLE:?} of the clients leaving");
    let mut client = node.client();
    for p in 0..2u32 {
        let what = format!("kept-exact-{p} after the fuzzing");
        assert_stored_as_produced(&fetch_all(&mut client, "kept-exact", p), &[&stored[p as usize]], 0, &what);
    }
    let more = batch("kept-more", 4, 100, 2_000);
    assert_eq!(client.produce("kept-exact", 0, &more, 1).error, ErrorCode::None);
}

/// The first bytes `openssl s_client` sends to `127.0.0.1`: a real TLS ClientHello,
/// caught by a listener of this test.
fn client_hello() -> Vec<u8> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let addr = listener.local_addr().expect("a bound listener has an address");
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting openssl s_client");
    let (mut stream, _) = listener.accept().expect("openssl s_client connects");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("setting a read timeout");
    let mut hello = vec![0u8; 64 << 10];
    let n = stream.read(&mut hello).expect("openssl s_client sends its ClientHello");
    hello.truncate(n);
    let _ = client.kill(); // SIGKILL to this child's pid
    let _ = client.wait();
    assert!(n > 5 && hello[0] == 0x16, "a TLS handshake record: {:?}", &hello[..n.min(16)]);
    hello
}

/// Fuzzed TLS handshakes leave nothing behind (issue 20): 3,000 connections to a TLS
/// listener send a real ClientHello mutated (bytes overwritten, cut short, bytes
/// inserted), or whole, or nothing, and go away at once, after a half-close, or after
/// waiting for the answer; 20 more send half a ClientHello and stay. The node counts every
/// failed handshake, closes the stalled ones at its handshake deadline (10 s) while this
/// test still holds them, its sockets and descriptors return to their starting level
/// (read from /proc), and a TLS client that trusts its CA is served afterwards.
#[test]
fn fuzzed_tls_handshakes_leave_no_descriptor_behind_and_tls_clients_are_served() {
    use std::io::{Read, Write};
    const CONNECTIONS: usize = 3_000;
    const THREADS: usize = 6;
    const STALLED: usize = 20;
    const SETTLE: Duration = Duration::from_secs(30);
    let (tmp, data) = node_dir();
    let pki = sluice_tests::pki::Pki::new(&tmp.path().join("pki"));
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("node", "ca");
    let (kafka, metrics) = (free_loopback_addr(), free_loopback_addr());
    let (listen, metrics_arg) = (format!("SSL://{kafka}"), metrics.to_string());
    let node = NodeProcess::start(
        &data,
        SHARDS,
        &["--kafka-listen", &listen, "--tls-cert", &cert, "--tls-key", &key, "--metrics-listen", &metrics_arg],
    );
    let hello = client_hello();
    let pid = node.pid();
    std::thread::sleep(Duration::from_secs(1));
    let (sockets_before, descriptors_before) = open_descriptors(pid);
    let failed_before = metric_value(&scrape_metrics(metrics), "sluice_tls_handshakes_failed_total").unwrap_or(0);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("fuzzed TLS handshakes: seed {seed}");
    let started = Instant::now();
    let connected: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let hello = &hello;
                scope.spawn(move || {
                    let mut rng = Rng::new(seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let mut connected = 0;
                    for _ in 0..CONNECTIONS / THREADS {
                        let Ok(mut s) = std::net::TcpStream::connect_timeout(&kafka, Duration::from_secs(2)) else {
                            continue;
                        };
                        connected += 1;
                        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                        let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
                        let bytes = match rng.below(8) {
                            0 => Vec::new(),
                            1 => hello.clone(),
                            _ => mutated(&mut rng, hello),
                        };
                        let _ = s.write_all(&bytes);
                        match rng.below(3) {
                            0 => {}
                            1 => {
                                let _ = s.shutdown(std::net::Shutdown::Write);
                            }
                            _ => {
                                let mut answer = [0u8; 4096];
                                let _ = s.read(&mut answer);
                            }
                        }
                    }
                    connected
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    // And handshakes that stall: half a ClientHello, then nothing, the sockets kept open
    // here. The node closes them at its handshake deadline.
    let stalled: Vec<std::net::TcpStream> = (0..STALLED)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect_timeout(&kafka, Duration::from_secs(2)).ok()?;
            s.write_all(&hello[..hello.len() / 2]).ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(stalled.len(), STALLED, "every stalled handshake connected");
    // Settled once every handshake is counted as failed (the stalled ones at the node's
    // deadline) and the node's sockets are back: a connection still in the listen backlog
    // holds no descriptor of the node yet, so the descriptors alone can look settled early.
    let connected = connected + STALLED;
    let deadline = Instant::now() + SETTLE;
    let (sockets, descriptors, failed) = loop {
        let (sockets, descriptors) = open_descriptors(pid);
        let failed = metric_value(&scrape_metrics(metrics), "sluice_tls_handshakes_failed_total").unwrap_or(0);
        let settled = failed - failed_before >= connected as u64
            && sockets <= sockets_before
            && descriptors <= descriptors_before;
        if settled || Instant::now() >= deadline {
            break (sockets, descriptors, failed);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(stalled);
    eprintln!(
        "fuzzed TLS handshakes: {connected} connections in {:?}; sockets {sockets_before} -> {sockets}, \
         descriptors {descriptors_before} -> {descriptors}; failed handshakes counted {}",
        started.elapsed(),
        failed - failed_before
    );
    assert!(sockets <= sockets_before && descriptors <= descriptors_before, "descriptors left behind");
    assert!(failed - failed_before >= connected as u64, "every connection's handshake failed and was counted");
    let mut check = std::process::Command::new("openssl");
    check.args(["s_client", "-connect", &kafka.to_string(), "-CAfile", &ca, "-verify_return_error", "-brief"]);
    let run = sluice_tests::node_client::run_command(check, b"", Duration::from_secs(30));
    assert!(
        run.code == Some(0) && run.stderr.contains("Verification: OK"),
        "a TLS client trusting the CA is served after the fuzzing: {run:?}"
    );
}

/// The SASL gate of a native `SASL_PLAINTEXT` listener, byte by byte: before a login only
/// ApiVersions is served (anything else gets ILLEGAL_SASL_STATE and a closed
/// connection) and a frame is at most 512 KiB; an unknown mechanism and a wrong password
/// get their errors and a closed connection; after a PLAIN login the connection is the
/// user's, and with `--authorizer acl` a request the ACLs deny gets
/// TOPIC_AUTHORIZATION_FAILED while the connection stays open for the next.
#[test]
fn a_sasl_native_listener_serves_nothing_before_a_login_and_checks_the_acls_after() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let listen = format!("SASL_PLAINTEXT://{addr}");
    let args = ["--listen", &listen, "--authorizer", "acl", "--super-users", "User:admin"];
    let env = [("SLUICE_BOOTSTRAP_USER", "admin:admin-secret:SCRAM-SHA-256")];
    let node = NodeProcess::start_at_with_env(addr, &dir.path().join("data"), SHARDS, &args, &env);
    let handshake = |client: &mut Client, mechanism: &str| {
        client.request(
            RequestBody::SaslHandshakeRequest,
            |b| {
                let mechanism = b.create_string(mechanism);
                wire::SaslHandshakeRequest::create(b, &wire::SaslHandshakeRequestArgs { mechanism: Some(mechanism) })
                    .as_union_value()
            },
            &[],
        )
    };
    let authenticate = |client: &mut Client, token: &[u8]| {
        client.request(
            RequestBody::SaslAuthenticateRequest,
            |b| {
                let token = b.create_vector(token);
                wire::SaslAuthenticateRequest::create(b, &wire::SaslAuthenticateRequestArgs { token: Some(token) })
                    .as_union_value()
            },
            &[],
        )
    };
    let metadata = |client: &mut Client| {
        client.request(
            RequestBody::MetadataRequest,
            |b| wire::MetadataRequest::create(b, &wire::MetadataRequestArgs { topics: None }).as_union_value(),
            &[],
        )
    };

    // Before a login: ApiVersions yes, anything else closes the connection.
    let mut client = Client::connect(addr);
    let versions = client.request(
        RequestBody::ApiVersionsRequest,
        |b| wire::ApiVersionsRequest::create(b, &wire::ApiVersionsRequestArgs {}).as_union_value(),
        &[],
    );
    assert!(versions.response().body_as_api_versions_response().is_some());
    let refused = metadata(&mut client);
    let (code, message) = refused.error_response().expect("an ErrorResponse");
    assert_eq!(code, ErrorCode::IllegalSaslState, "{message}");
    assert!(message.contains("not authenticated"), "{message}");
    assert!(client.is_closed_by_node());

    // A frame header announcing more than 512 KiB before a login is refused from its header.
    let mut client = Client::connect(addr);
    client.send_raw(&FrameHeader::encode(64, 600 << 10)).unwrap();
    let refused = client.receive().unwrap().expect("an answer");
    assert_eq!(refused.error_response().map(|e| e.0), Some(ErrorCode::InvalidRequest));
    assert!(client.is_closed_by_node());

    // An unknown mechanism, then a wrong password.
    let mut client = Client::connect(addr);
    let answer = handshake(&mut client, "GSSAPI");
    let r = answer.response().body_as_sasl_handshake_response().unwrap();
    assert_eq!(r.error(), ErrorCode::UnsupportedSaslMechanism);
    let offered: Vec<&str> = r.mechanisms().unwrap().iter().collect();
    assert_eq!(offered, ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]);
    assert!(client.is_closed_by_node());
    let mut client = Client::connect(addr);
    let answer = handshake(&mut client, "PLAIN");
    assert_eq!(answer.response().body_as_sasl_handshake_response().unwrap().error(), ErrorCode::None);
    let answer = authenticate(&mut client, b"\0admin\0wrong");
    let r = answer.response().body_as_sasl_authenticate_response().unwrap();
    assert_eq!(r.error(), ErrorCode::SaslAuthenticationFailed);
    assert!(r.message().unwrap().contains("invalid credentials"), "{:?}", r.message());
    assert!(client.is_closed_by_node());

    // The bootstrap user logs in with PLAIN (its SCRAM credential checks the password).
    let mut admin = Client::connect(addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        handshake(&mut admin, "PLAIN");
        let answer = authenticate(&mut admin, b"\0admin\0admin-secret");
        if answer.response().body_as_sasl_authenticate_response().unwrap().error() == ErrorCode::None {
            break;
        }
        assert!(Instant::now() < deadline, "the bootstrap user never logged in: {}", node.log_tail());
        std::thread::sleep(Duration::from_millis(100));
        admin = Client::connect(addr);
    }
    let created = admin.create_topic("guarded", 1, &[]);
    assert_eq!(created.error, ErrorCode::None, "a super user creates topics: {created:?}");
    // A user with no ACLs: listed nothing, denied a produce, and still connected.
    let made = admin.request(
        RequestBody::AlterUsersRequest,
        |b| {
            let salt = b.create_vector(b"0123456789abcdef");
            let salted = sluice_schemas::sasl::salted_password(
                sluice_schemas::sasl::ScramMechanism::Sha256,
                b"bob-pw",
                b"0123456789abcdef",
                sluice_schemas::sasl::ITERATIONS_MIN,
            );
            let salted = b.create_vector(&salted);
            let (user, mechanism) = (b.create_string("bob"), b.create_string("SCRAM-SHA-256"));
            let change = wire::UserChange::create(
                b,
                &wire::UserChangeArgs {
                    user: Some(user),
                    mechanism: Some(mechanism),
                    delete: false,
                    iterations: sluice_schemas::sasl::ITERATIONS_MIN,
                    salt: Some(salt),
                    salted_password: Some(salted),
                },
            );
            let changes = b.create_vector(&[change]);
            wire::AlterUsersRequest::create(b, &wire::AlterUsersRequestArgs { changes: Some(changes) }).as_union_value()
        },
        &[],
    );
    let results = made.response().body_as_alter_users_response().unwrap().results().unwrap();
    assert_eq!((results.get(0).user(), results.get(0).error()), (Some("bob"), ErrorCode::None));
    let mut bob = Client::connect(addr);
    handshake(&mut bob, "PLAIN");
    let answer = authenticate(&mut bob, b"\0bob\0bob-pw");
    assert_eq!(answer.response().body_as_sasl_authenticate_response().unwrap().error(), ErrorCode::None);
    let listed = metadata(&mut bob);
    assert_eq!(listed.response().body_as_metadata_response().unwrap().topics().map_or(0, |t| t.len()), 0);
    let correlation_id = bob.send_produce(1, &[("guarded", 0, b"denied")]);
    let (code, message) = bob.receive_for(correlation_id).error_response().expect("an ErrorResponse");
    assert_eq!(code, ErrorCode::TopicAuthorizationFailed, "{message}");
    assert!(message.contains("guarded"), "{message}");
    let again = metadata(&mut bob);
    assert!(again.response().body_as_metadata_response().is_some(), "the connection stays open");
    assert!(node.log().contains("denied by the ACLs"), "the denial is an audit line");
}
