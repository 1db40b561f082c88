//! Specifications of the node's Kafka listener (`--kafka-listen`) against real Kafka
//! clients: what an application using kcat, confluent-kafka (librdkafka) or kafka-python
//! can rely on, and what it shares with the native protocol.
//!
//! - kcat produces and consumes keyed records with headers under every codec; the node
//!   stores the batches with that codec, and the native protocol reads the same records.
//!   A kcat consumer group reads every record once, and resumes from its commits.
//! - Records cross the protocols byte for byte: produced through Kafka, read natively, and
//!   produced natively (under every codec), read through Kafka, with the same partition,
//!   offset, timestamp, key, value and headers (null and empty ones, binary bytes,
//!   repeated header names).
//! - A Kafka consumer group (confluent-kafka, then kafka-python) that commits what it
//!   read resumes exactly there after a node restart: no record lost, none read twice.
//! - A group's committed offsets are one set, whichever protocol commits or reads them.
//! - The `sluice` CLI and kcat read each other's records alike.
//! - Kafka admin requests create, grow, describe and delete topics, and list and describe
//!   groups, and the native protocol sees the same topics and configs.
//! - A static group member (`group.instance.id`) restarted within its session gets its
//!   partitions back without a rebalance; a second process with its instance id fences it.
//!   A new group's first rebalance waits for members starting together.
//! - Kafka's consumer group protocol (KIP-848): the coordinator hands partitions from one
//!   member to another with no record read twice, and takes back a dead member's.
//! - TLS (`--kafka-listen SSL://`): kcat, confluent-kafka and kafka-python produce and
//!   consume over it with a CA the test makes with `openssl`; plaintext clients and
//!   clients trusting another CA are refused and counted; SIGHUP serves a renewed
//!   certificate (a broken one keeps the old); with `--tls-client-ca` only clients with
//!   a certificate that CA signed are served; a TLS listener without a usable
//!   certificate stops the node naming what is wrong.
//! - SASL (`--kafka-listen SASL_SSL://`): kcat and confluent-kafka log in with
//!   SCRAM-SHA-512 and SCRAM-SHA-256, kafka-python with PLAIN, over TLS; users are made
//!   and removed with Kafka's AlterUserScramCredentials through confluent-kafka's
//!   AdminClient and survive a restart; wrong passwords, unknown users and clients
//!   without SASL are refused and counted.
//!
//! Each test starts its own `sluice-node` (two shards) with a Kafka listener on a free
//! loopback port (`NodeProcess::start_with_kafka`), its data in a temporary directory;
//! `NodeProcess` stops it by its pid when the test ends. The Kafka clients run as
//! processes: `kcat`, and the Python scripts in tests/kafka (see the docstring of each),
//! which print JSON lines (read with `sluice_tests::json`). Every run is bounded by
//! `TOOL_TIMEOUT` through `run_command`, which kills a process that runs longer by its pid
//! and fails the test; the scripts also stop themselves after `SCRIPT_TIMEOUT_S`. The
//! native side is the client crate (`sluice_client`) in this process and the `sluice` CLI.
//!
//! What the machine needs: `kcat` (Debian package kcat), python3 with confluent-kafka
//! 2.16.1 and kafka-python 3.0.12, and the `openssl` CLI; .ci/run installs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_client::blocking::{BlockingAdmin, BlockingConsumer, BlockingProducer};
use sluice_client::connection::Connection;
use sluice_client::consumer::{ConsumerConfig, ConsumerRecord, OffsetReset, SeekTo};
use sluice_client::producer::{Acks, ProducerConfig, ProducerRecord};
use sluice_client::protocol;
use sluice_schemas::batch::{BatchWalker, Compression, TimestampType};
use sluice_schemas::wire::ErrorCode;
use sluice_tests::json::Json;
use sluice_tests::node_client::{cli_binary, run_command, CliRun, NodeProcess};
use sluice_tests::pki::Pki;
use sluice_tests::streaming::Streaming;
use tempfile::TempDir;

/// The shards of every node here: the test machines have two cores.
const SHARDS: usize = 2;
/// The longest one run of kcat, a script or the CLI may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(90);
/// The scripts' own deadline (their `--timeout`), inside `TOOL_TIMEOUT`.
const SCRIPT_TIMEOUT_S: u32 = 60;
/// The longest a test waits for one thing in this process (records, a native request).
const WAIT: Duration = Duration::from_secs(30);
/// The codecs, by their Kafka names.
const CODECS: [(&str, Compression); 5] = [
    ("none", Compression::None),
    ("gzip", Compression::Gzip),
    ("snappy", Compression::Snappy),
    ("lz4", Compression::Lz4),
    ("zstd", Compression::Zstd),
];
/// Timestamps of generated records are around this (ms since the epoch).
const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

// Node and native helpers -------------------------------------------------------------------

fn start_node() -> (TempDir, NodeProcess) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let data: PathBuf = dir.path().join("data");
    let node = NodeProcess::start_with_kafka(&data, SHARDS, &[]);
    (dir, node)
}

/// The node's Kafka bootstrap address.
fn kafka(node: &NodeProcess) -> String {
    node.kafka_addr().expect("the node has a Kafka listener").to_string()
}

fn bootstrap(node: &NodeProcess) -> Vec<String> {
    vec![node.addr().to_string()]
}

/// Creates a topic through the native protocol (the node creates none by itself).
fn create_topic(node: &NodeProcess, name: &str, partitions: u32) {
    let outcome = node.client().create_topic(name, partitions, &[]);
    assert_eq!(outcome.error, ErrorCode::None, "creating {name}: {}", outcome.message);
}

/// Runs `future` on a small runtime of its own, bounded by `WAIT`.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async { tokio::time::timeout(WAIT, future).await.expect("a native request took over WAIT") })
}

async fn connect(node: &NodeProcess) -> Connection {
    Connection::connect(
        &node.addr().to_string(),
        "kafka-tests",
        4,
        Duration::from_secs(10),
        &sluice_client::Security::default(),
    )
    .await
    .expect("connecting")
}

/// A group's committed offsets of partitions 0..`partitions` of `topic`, read through
/// the native protocol (`None`: nothing committed).
fn committed_natively(node: &NodeProcess, group: &str, topic: &str, partitions: u32) -> Vec<Option<u64>> {
    block_on(async {
        sluice_tests::node_client::committed_offsets(&connect(node).await, group, topic, partitions).await
    })
}

/// Commits `offsets` (partition, offset) of `topic` for `group` through the native
/// protocol, as an admin commit (no member; the group must be empty).
fn commit_natively(node: &NodeProcess, group: &str, topic: &str, offsets: &[(u32, u64)]) {
    let offsets: Vec<protocol::CommitOffset> =
        offsets.iter().map(|&(p, o)| (topic.to_string(), p, o, String::new())).collect();
    let results = block_on(async {
        let conn = connect(node).await;
        protocol::commit_offsets(&conn, group, "", -1, &offsets).await.expect("OffsetCommit")
    });
    assert_eq!(results.len(), offsets.len(), "one result per partition: {results:?}");
    for (t, p, result) in results {
        result.unwrap_or_else(|e| panic!("committing {t}-{p} for {group}: {e}"));
    }
}

/// Each partition's log end offset, through the native protocol.
fn log_ends(node: &NodeProcess, topic: &str, partitions: u32) -> Vec<u64> {
    let mut client = node.client();
    (0..partitions)
        .map(|p| {
            let (error, end) = client.list_offsets(topic, p, -1);
            assert_eq!(error, ErrorCode::None, "the log end of {topic}-{p}");
            u64::try_from(end).expect("a log end is not negative")
        })
        .collect()
}

/// The codecs of the batches stored in `topic`-`partition`, fetched raw from offset 0.
fn stored_codecs(node: &NodeProcess, topic: &str, partition: u32) -> Vec<Option<Compression>> {
    let fetched = node.client().fetch(topic, partition, 0, 16 << 20, 0, 1);
    assert_eq!(fetched.error, ErrorCode::None, "fetching {topic}-{partition}: {}", fetched.message);
    BatchWalker::new(&fetched.records)
        .map(|batch| batch.expect("whole, valid batches").1.attributes().compression())
        .collect()
}

// Records -------------------------------------------------------------------------------------

/// A record as a consumer sees it, on either protocol.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Record {
    partition: u32,
    offset: u64,
    timestamp_ms: i64,
    /// CreateTime (the producer's clock) in every test here.
    create_time: bool,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    fn from_native(r: ConsumerRecord) -> Record {
        Record {
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            create_time: r.timestamp_type == TimestampType::CreateTime,
            key: r.key,
            value: r.value,
            headers: r.headers,
        }
    }

    /// A record line of consume.py.
    fn from_json(line: &Json) -> Record {
        let int = |name: &str| line.get(name).and_then(Json::as_i64).unwrap_or_else(|| panic!("no {name} in {line:?}"));
        let headers = line.get("headers").and_then(Json::as_array).unwrap_or_else(|| panic!("no headers in {line:?}"));
        Record {
            partition: u32::try_from(int("partition")).unwrap(),
            offset: u64::try_from(int("offset")).unwrap(),
            timestamp_ms: int("timestamp"),
            create_time: line.get("timestamp_type").and_then(Json::as_str) == Some("CreateTime"),
            key: from_hex(line.get("key").unwrap_or(&Json::Null)),
            value: from_hex(line.get("value").unwrap_or(&Json::Null)),
            headers: headers
                .iter()
                .map(|h| match h.as_array() {
                    Some([name, value]) => (name.as_str().expect("a header name").to_string(), from_hex(value)),
                    _ => panic!("a header is [name, value]: {h:?}"),
                })
                .collect(),
        }
    }

    /// Partition and offset.
    fn at(&self) -> (u32, u64) {
        (self.partition, self.offset)
    }
}

/// A record to produce; `partition` and `timestamp_ms` `None`: the client chooses.
#[derive(Clone, Debug)]
struct Spec {
    partition: Option<u32>,
    timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Spec {
    /// A line of produce.py's input.
    fn to_json(&self) -> String {
        let headers: Vec<String> =
            self.headers.iter().map(|(name, value)| format!("[{},{}]", json_string(name), hex_json(value))).collect();
        format!(
            "{{\"partition\":{},\"timestamp\":{},\"key\":{},\"value\":{},\"headers\":[{}]}}\n",
            self.partition.map_or_else(|| "null".to_string(), |p| p.to_string()),
            self.timestamp_ms.map_or_else(|| "null".to_string(), |t| t.to_string()),
            hex_json(&self.key),
            hex_json(&self.value),
            headers.join(",")
        )
    }

    /// The record a consumer should see, stored at `at`.
    fn stored_at(&self, (partition, offset): (u32, u64)) -> Record {
        Record {
            partition,
            offset,
            timestamp_ms: self.timestamp_ms.expect("specs compared byte for byte have a timestamp"),
            create_time: true,
            key: self.key.clone(),
            value: self.value.clone(),
            headers: self.headers.clone(),
        }
    }

    fn to_native(&self, topic: &str) -> ProducerRecord {
        ProducerRecord {
            topic: topic.to_string(),
            partition: self.partition,
            key: self.key.clone(),
            value: self.value.clone(),
            headers: self.headers.clone(),
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// `varied` as every client here can produce it (kafka-python refuses null header values
/// and records with neither key nor value).
fn varied_for_every_client(i: usize, partition: u32) -> Spec {
    let mut spec = varied(i, partition);
    spec.headers.retain(|(_, value)| value.is_some());
    spec.value.get_or_insert_with(Vec::new);
    spec
}

/// `len` bytes from `seed`, covering 0x00, 0xff and bytes that are not UTF-8.
fn bytes(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (seed.wrapping_mul(131).wrapping_add(j.wrapping_mul(17)) % 256) as u8).collect()
}

/// The `i`-th record of a varied set for `partition`: null and empty keys and values,
/// binary bytes, a 10 KB value, no headers, a null header value, a repeated header name,
/// a non-ASCII header name, and timestamps that go back and forth.
fn varied(i: usize, partition: u32) -> Spec {
    let key = match i % 5 {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some(bytes(i, 4 + i % 13)),
    };
    let value = match i % 7 {
        0 => None,
        1 => Some(Vec::new()),
        2 => Some(bytes(i * 7, 10_000)),
        _ => Some(bytes(i * 31, 20 + i % 200)),
    };
    let headers = match i % 4 {
        0 => Vec::new(),
        1 => vec![("trace".to_string(), Some(bytes(i, 16)))],
        2 => vec![
            ("dup".to_string(), Some(b"first".to_vec())),
            ("dup".to_string(), Some(b"second".to_vec())),
            ("null".to_string(), None),
        ],
        _ => vec![("\u{e9}t\u{e9}".to_string(), Some(vec![0, 0xff])), ("empty".to_string(), Some(Vec::new()))],
    };
    let timestamp_ms = BASE_TIMESTAMP_MS + ((i * 7919) % 5000) as i64 - 2500;
    Spec { partition: Some(partition), timestamp_ms: Some(timestamp_ms), key, value, headers }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_json(bytes: &Option<Vec<u8>>) -> String {
    bytes.as_ref().map_or_else(|| "null".to_string(), |b| format!("\"{}\"", hex(b)))
}

fn from_hex(value: &Json) -> Option<Vec<u8>> {
    let text = match value {
        Json::Null => return None,
        Json::String(s) => s,
        other => panic!("not hex or null: {other:?}"),
    };
    assert!(text.len() % 2 == 0, "odd hex {text:?}");
    Some((0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect())
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Produces `specs` through the native client (acks=all, `compression`) and returns
/// where each was stored, in order.
fn produce_natively(node: &NodeProcess, topic: &str, specs: &[Spec], compression: Compression) -> Vec<(u32, u64)> {
    let producer = BlockingProducer::new(ProducerConfig {
        bootstrap_servers: bootstrap(node),
        client_id: "kafka-tests".into(),
        acks: Acks::All,
        compression,
        delivery_timeout_ms: 30_000,
        request_timeout_ms: 10_000,
        ..ProducerConfig::default()
    })
    .expect("starting the native producer");
    let deliveries: Vec<_> = specs.iter().map(|s| producer.send(s.to_native(topic)).expect("send")).collect();
    producer.flush();
    let stored = deliveries
        .into_iter()
        .map(|d| {
            let report = d.wait().unwrap_or_else(|e| panic!("a native delivery to {topic}: {e}"));
            (report.partition, report.offset.expect("acks=all reports an offset"))
        })
        .collect();
    producer.close();
    stored
}

/// Reads `count` records of every partition of `topic` from the beginning through the
/// native client (bounded by `WAIT`), sorted by partition and offset; then checks that
/// no further record comes.
fn read_natively(node: &NodeProcess, topic: &str, count: usize) -> Vec<Record> {
    let admin = BlockingAdmin::connect(&bootstrap(node)).expect("connecting the native admin client");
    let partitions = admin.partitions(topic).unwrap_or_else(|e| panic!("the partitions of {topic}: {e}"));
    let mut consumer = BlockingConsumer::new(ConsumerConfig {
        bootstrap_servers: bootstrap(node),
        client_id: "kafka-tests".into(),
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        request_timeout_ms: 10_000,
        ..ConsumerConfig::default()
    })
    .expect("starting the native consumer");
    consumer.assign(partitions.iter().map(|&p| (topic.to_string(), p)).collect());
    for &p in &partitions {
        consumer.seek(topic, p, SeekTo::Beginning).expect("seek");
    }
    let deadline = Instant::now() + WAIT;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(Instant::now() < deadline, "read {} of {count} records of {topic} natively in {WAIT:?}", records.len());
        records.extend(consumer.poll(Duration::from_millis(100)).expect("poll").into_iter().map(Record::from_native));
    }
    records.extend(consumer.poll(Duration::from_millis(300)).expect("poll").into_iter().map(Record::from_native));
    assert_eq!(records.len(), count, "{topic} has exactly {count} records");
    records.sort();
    records
}

// Kafka clients ---------------------------------------------------------------------------------

/// True when `program` is an executable file in a directory of $PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn require(program: &str) {
    assert!(on_path(program), "{program} is not installed; .ci/run installs what these tests need");
}

/// Runs `kcat ARGS` with `stdin`, bounded by `TOOL_TIMEOUT`, and checks that it succeeded.
fn kcat(args: &[&str], stdin: &[u8]) -> CliRun {
    require("kcat");
    let mut command = Command::new("kcat");
    command.args(args);
    let run = run_command(command, stdin, TOOL_TIMEOUT);
    assert_eq!(run.code, Some(0), "kcat {args:?} failed: {run:?}");
    run
}

/// Runs tests/kafka/SCRIPT with `args` (and `--timeout`) and `stdin`, bounded by
/// `TOOL_TIMEOUT`; checks that it succeeded and returns its JSON lines.
fn script(name: &str, args: &[&str], stdin: &[u8]) -> Vec<Json> {
    require("python3");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join(name);
    let mut command = Command::new("python3");
    command
        .arg(&path)
        .args(["--timeout", &SCRIPT_TIMEOUT_S.to_string()])
        .args(args)
        // No __pycache__ next to the scripts.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let run = run_command(command, stdin, TOOL_TIMEOUT);
    assert_eq!(run.code, Some(0), "{name} {args:?} failed:\n{}\nstdout:\n{}", run.stderr, run.stdout);
    run.stdout
        .lines()
        .map(|line| Json::parse(line).unwrap_or_else(|e| panic!("{name} printed {line:?}, not JSON: {e}")))
        .collect()
}

/// Produces `specs` through produce.py with `client` and returns where each was stored.
fn produce_through_kafka(node: &NodeProcess, client: &str, topic: &str, specs: &[Spec]) -> Vec<(u32, u64)> {
    produce_through(&kafka(node), &[], client, topic, specs)
}

/// `produce_through_kafka` to the listener at `bootstrap`, with produce.py's `extra`
/// arguments (its TLS settings).
fn produce_through(bootstrap: &str, extra: &[&str], client: &str, topic: &str, specs: &[Spec]) -> Vec<(u32, u64)> {
    let input: String = specs.iter().map(Spec::to_json).collect();
    let mut args = vec!["--client", client, "--bootstrap", bootstrap, "--topic", topic];
    args.extend_from_slice(extra);
    let lines = script("produce.py", &args, input.as_bytes());
    assert_eq!(lines.len(), specs.len(), "one delivery report per record");
    lines
        .iter()
        .map(|l| {
            let partition = l.get("partition").and_then(Json::as_i64).expect("a partition");
            let offset = l.get("offset").and_then(Json::as_i64).expect("an offset");
            (u32::try_from(partition).unwrap(), u64::try_from(offset).unwrap())
        })
        .collect()
}

/// Consumes `count` records through consume.py with `client` (in `group` if given).
fn consume_through_kafka(
    node: &NodeProcess,
    client: &str,
    topic: &str,
    count: usize,
    group: Option<&str>,
) -> Vec<Record> {
    let mut extra = Vec::new();
    if let Some(group) = group {
        extra.extend(["--group", group]);
    }
    consume_through(&kafka(node), &extra, client, topic, count)
}

/// `count` records of `topic` through consume.py at `bootstrap`, with its `extra` arguments.
fn consume_through(bootstrap: &str, extra: &[&str], client: &str, topic: &str, count: usize) -> Vec<Record> {
    let count = count.to_string();
    let mut args = vec!["--client", client, "--bootstrap", bootstrap, "--topic", topic, "--max", &count];
    args.extend_from_slice(extra);
    script("consume.py", &args, b"").iter().map(Record::from_json).collect()
}

/// Runs admin.py COMMAND ARGS against the node.
fn admin(node: &NodeProcess, command: &[&str]) -> Vec<Json> {
    let kafka = kafka(node);
    let mut args = vec!["--bootstrap", kafka.as_str()];
    args.extend_from_slice(command);
    script("admin.py", &args, b"")
}

/// The `error` of admin.py's one-line outcome for `topic`: `None` for success.
fn admin_error(lines: &[Json], topic: &str) -> Option<String> {
    let line = lines
        .iter()
        .find(|l| l.get("topic").and_then(Json::as_str) == Some(topic))
        .unwrap_or_else(|| panic!("no outcome for {topic} in {lines:?}"));
    line.get("error").and_then(Json::as_str).map(str::to_string)
}

/// A record as kcat prints it with `KCAT_FORMAT`: partition, offset, timestamp, key,
/// value, headers.
type KcatRecord = (u32, u64, i64, String, String, Vec<(String, String)>);
const KCAT_FORMAT: &str = "%p\\t%o\\t%T\\t%k\\t%s\\t%h\\n";

/// Parses kcat's output with `KCAT_FORMAT` (headers as `name=value,...`).
fn parse_kcat(stdout: &str) -> Vec<KcatRecord> {
    stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [p, o, t, k, v, h] = fields[..] else { panic!("kcat printed {line:?}") };
            let headers = h
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|kv| {
                    let (name, value) = kv.split_once('=').unwrap_or_else(|| panic!("a header {kv:?} in {line:?}"));
                    (name.to_string(), value.to_string())
                })
                .collect();
            (p.parse().unwrap(), o.parse().unwrap(), t.parse().unwrap(), k.to_string(), v.to_string(), headers)
        })
        .collect()
}

/// Checks that `at` holds each (partition, offset) once and that each partition's offsets
/// run from `from[p]` without a gap.
fn assert_contiguous(what: &str, at: &[(u32, u64)], from: &BTreeMap<u32, u64>) {
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for &(p, o) in at {
        by_partition.entry(p).or_default().push(o);
    }
    for (p, mut offsets) in by_partition {
        offsets.sort_unstable();
        let start = from.get(&p).copied().unwrap_or(0);
        let expected: Vec<u64> = (start..start + offsets.len() as u64).collect();
        assert_eq!(offsets, expected, "{what}: the offsets of partition {p}");
    }
}

// kcat ------------------------------------------------------------------------------------------

/// For each codec, kcat produces 200 keyed lines (`-K:`) with two headers (`-H`) to a
/// 3-partition topic, compressed with `-z CODEC`, and consumes them back from the
/// beginning to the end (`-o beginning -e`): every key comes back once with its value and
/// both headers, each partition's offsets run from 0 without a gap, and the node stored
/// the batches with that codec. The native client then reads the same records at the
/// same offsets with the same key, value, headers and timestamp.
#[test]
fn kcat_produces_and_consumes_keyed_records_with_headers_under_every_codec() {
    const LINES: usize = 200;
    let (_dir, node) = start_node();
    let addr = kafka(&node);
    for (codec, compression) in CODECS {
        let topic = format!("kcat-{codec}");
        create_topic(&node, &topic, 3);
        let input: String = (0..LINES).map(|i| format!("key-{i}:{codec} value {i}\n")).collect();
        let codec_header = format!("codec={codec}");
        let mut args = vec!["-P", "-b", &addr, "-t", &topic, "-K:", "-z", codec, "-X", "message.timeout.ms=20000"];
        args.extend(["-H", "origin=kcat", "-H", &codec_header]);
        kcat(&args, input.as_bytes());
        let consumed = kcat(&["-C", "-b", &addr, "-t", &topic, "-o", "beginning", "-e", "-q", "-f", KCAT_FORMAT], b"");
        let records = parse_kcat(&consumed.stdout);

        let got: BTreeSet<(String, String)> = records.iter().map(|r| (r.3.clone(), r.4.clone())).collect();
        let expected: BTreeSet<(String, String)> =
            (0..LINES).map(|i| (format!("key-{i}"), format!("{codec} value {i}"))).collect();
        assert_eq!(records.len(), LINES, "{codec}: one line per record: {}", consumed.stdout);
        assert_eq!(got, expected, "{codec}: every key comes back once with its value");
        let headers = vec![("origin".to_string(), "kcat".to_string()), ("codec".to_string(), codec.to_string())];
        for r in &records {
            assert_eq!(r.5, headers, "{codec}: the headers of {r:?}");
        }
        let at: Vec<(u32, u64)> = records.iter().map(|r| (r.0, r.1)).collect();
        assert_contiguous(codec, &at, &BTreeMap::new());

        let codecs: Vec<Option<Compression>> = (0..3).flat_map(|p| stored_codecs(&node, &topic, p)).collect();
        assert!(codecs.contains(&Some(compression)), "{codec}: the node stored {codecs:?}");
        assert!(
            codecs.iter().all(|c| *c == Some(compression) || *c == Some(Compression::None)),
            "{codec}: librdkafka sends a batch uncompressed only when compressing does not pay: {codecs:?}"
        );

        let native = read_natively(&node, &topic, LINES);
        let mut kcat_view: Vec<KcatRecord> = records;
        kcat_view.sort();
        for (n, k) in native.iter().zip(&kcat_view) {
            assert_eq!((n.partition, n.offset, n.timestamp_ms), (k.0, k.1, k.2), "{codec}: where and when");
            assert_eq!(n.key.as_deref(), Some(k.3.as_bytes()), "{codec}: the key at {:?}", n.at());
            assert_eq!(n.value.as_deref(), Some(k.4.as_bytes()), "{codec}: the value at {:?}", n.at());
            let native_headers: Vec<(String, String)> = n
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), String::from_utf8(value.clone().unwrap()).unwrap()))
                .collect();
            assert_eq!(native_headers, k.5, "{codec}: the headers at {:?}", n.at());
        }
    }
}

/// A kcat balanced consumer (`-G`) reads all 300 records of a 4-partition topic once each
/// (`-c 300 -e`); when it exits it has committed the log end of every partition (as the
/// native protocol reads the group's offsets). 40 records later, a second kcat in the
/// same group reads exactly those 40.
#[test]
fn a_kcat_consumer_group_reads_every_record_once_and_resumes_from_its_commits() {
    const TOPIC: &str = "kcat-group";
    const GROUP: &str = "kcat-readers";
    let (_dir, node) = start_node();
    let addr = kafka(&node);
    create_topic(&node, TOPIC, 4);
    let lines = |range: std::ops::Range<usize>| -> String { range.map(|i| format!("key-{i}:value-{i}\n")).collect() };
    let produce = |input: String| {
        kcat(&["-P", "-b", &addr, "-t", TOPIC, "-K:", "-X", "message.timeout.ms=20000"], input.as_bytes());
    };
    let group_read = |count: usize| -> Vec<KcatRecord> {
        let count = count.to_string();
        let mut args = vec!["-b", &addr, "-G", GROUP, "-c", &count, "-e", "-q", "-f", KCAT_FORMAT];
        args.extend(["-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000"]);
        args.extend(["-X", "heartbeat.interval.ms=500", TOPIC]);
        parse_kcat(&kcat(&args, b"").stdout)
    };

    produce(lines(0..300));
    let first = group_read(300);
    let keys: BTreeSet<&str> = first.iter().map(|r| r.3.as_str()).collect();
    assert_eq!((first.len(), keys.len()), (300, 300), "every record once");
    for r in &first {
        assert_eq!(r.4, format!("value-{}", &r.3["key-".len()..]), "the value of {}", r.3);
    }
    assert_contiguous(
        "the group's first read",
        &first.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        &BTreeMap::new(),
    );
    let ends = log_ends(&node, TOPIC, 4);
    assert_eq!(ends.iter().sum::<u64>(), 300);
    let committed = committed_natively(&node, GROUP, TOPIC, 4);
    let expected: Vec<Option<u64>> = ends.iter().map(|&e| (e > 0).then_some(e)).collect();
    assert_eq!(committed, expected, "kcat committed the log end of each partition it read");

    produce(lines(300..340));
    let second = group_read(40);
    let keys: BTreeSet<String> = second.iter().map(|r| r.3.clone()).collect();
    let expected: BTreeSet<String> = (300..340).map(|i| format!("key-{i}")).collect();
    assert_eq!(keys, expected, "the second member starts at the committed offsets");
    let from: BTreeMap<u32, u64> = ends.iter().enumerate().map(|(p, &e)| (p as u32, e)).collect();
    assert_contiguous("the group's second read", &second.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), &from);
}

// Across the protocols ------------------------------------------------------------------------

/// 150 varied records (null and empty keys and values, binary bytes, 10 KB values,
/// null-valued and repeated headers, timestamps out of order) produced through
/// confluent-kafka with explicit partitions and timestamps are read natively exactly: at
/// the partition and offset of their delivery reports, with the same timestamp
/// (CreateTime), key, value and headers.
#[test]
fn records_produced_through_kafka_are_read_natively_byte_for_byte() {
    const TOPIC: &str = "from-kafka";
    let (_dir, node) = start_node();
    create_topic(&node, TOPIC, 3);
    let specs: Vec<Spec> = (0..150).map(|i| varied(i, (i % 3) as u32)).collect();
    let stored = produce_through_kafka(&node, "confluent", TOPIC, &specs);
    let mut expected: Vec<Record> = specs.iter().zip(&stored).map(|(s, &at)| s.stored_at(at)).collect();
    expected.sort();
    assert_contiguous("the delivery reports", &stored, &BTreeMap::new());

    let native = read_natively(&node, TOPIC, specs.len());
    for (n, e) in native.iter().zip(&expected) {
        assert_eq!(n, e, "the record at {:?}", e.at());
    }
}

/// Records produced through the native client, one codec per partition of a 5-partition
/// topic (40 varied records each, as above), are read through confluent-kafka exactly:
/// partition, offset, timestamp (CreateTime), key, value and headers, so librdkafka
/// decodes each codec as the native producer framed it.
#[test]
fn records_produced_natively_are_read_through_kafka_byte_for_byte() {
    const TOPIC: &str = "from-native";
    let (_dir, node) = start_node();
    create_topic(&node, TOPIC, CODECS.len() as u32);
    let mut expected = Vec::new();
    for (partition, (codec, compression)) in CODECS.iter().enumerate() {
        let specs: Vec<Spec> = (0..40).map(|i| varied(i + 40 * partition, partition as u32)).collect();
        let stored = produce_natively(&node, TOPIC, &specs, *compression);
        expected.extend(specs.iter().zip(stored).map(|(s, at)| s.stored_at(at)));
        let codecs = stored_codecs(&node, TOPIC, partition as u32);
        assert!(codecs.iter().all(|c| *c == Some(*compression)), "{codec}: the node stored {codecs:?}");
    }
    expected.sort();

    let mut consumed = consume_through_kafka(&node, "confluent", TOPIC, expected.len(), None);
    consumed.sort();
    assert_eq!(consumed.len(), expected.len());
    for (k, e) in consumed.iter().zip(&expected) {
        assert_eq!(k, e, "the record at {:?}", e.at());
    }
}

// Consumer groups across a restart --------------------------------------------------------------

/// The group test below for one Kafka client: 600 keyed records through `client`
/// (acks=all; the client's partitioner spreads them over 3 partitions); a member of a
/// group reads 250, committing each; the node restarts (SIGTERM, then the same data,
/// ports and flags); a new member of the group starts at the committed offsets and reads
/// the other 350. Together they read every record exactly once, and the group ends with
/// the log ends committed.
fn group_resumes_across_a_restart(client: &str) {
    const TOPIC: &str = "orders";
    const PARTITIONS: u32 = 3;
    let group = format!("{client}-group");
    let (_dir, mut node) = start_node();
    create_topic(&node, TOPIC, PARTITIONS);
    let specs: Vec<Spec> = (0..600)
        .map(|i| Spec {
            partition: None,
            timestamp_ms: None,
            key: Some(format!("k-{i}").into_bytes()),
            value: Some(format!("v-{i}").into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    let stored = produce_through_kafka(&node, client, TOPIC, &specs);
    assert_contiguous("the delivery reports", &stored, &BTreeMap::new());
    let value_at: BTreeMap<(u32, u64), Vec<u8>> =
        stored.iter().zip(&specs).map(|(&at, s)| (at, s.value.clone().unwrap())).collect();
    assert_eq!(value_at.len(), 600, "600 distinct offsets");

    let first = consume_through_kafka(&node, client, TOPIC, 250, Some(&group));
    let committed = committed_natively(&node, &group, TOPIC, PARTITIONS);
    let mut read_to: BTreeMap<u32, u64> = BTreeMap::new();
    for r in &first {
        let end = read_to.entry(r.partition).or_insert(0);
        *end = (*end).max(r.offset + 1);
    }
    let expected: Vec<Option<u64>> = (0..PARTITIONS).map(|p| read_to.get(&p).copied()).collect();
    assert_eq!(committed, expected, "the group committed what its first member read");

    node.sigterm_and_wait();
    node.restart();
    assert_eq!(committed_natively(&node, &group, TOPIC, PARTITIONS), expected, "the commits survive the restart");

    let second = consume_through_kafka(&node, client, TOPIC, 350, Some(&group));
    assert_contiguous("the second member", &second.iter().map(Record::at).collect::<Vec<_>>(), &read_to);
    let mut seen = BTreeSet::new();
    for r in first.iter().chain(&second) {
        assert!(seen.insert(r.at()), "{:?} was read twice", r.at());
        assert_eq!(r.value.as_ref(), value_at.get(&r.at()), "the value at {:?}", r.at());
    }
    assert_eq!(seen.len(), 600, "no record was lost");
    let ends: Vec<Option<u64>> = log_ends(&node, TOPIC, PARTITIONS).into_iter().map(Some).collect();
    assert_eq!(committed_natively(&node, &group, TOPIC, PARTITIONS), ends, "the group committed everything");
}

/// See `group_resumes_across_a_restart`: confluent-kafka (librdkafka) producer with
/// acks=all, and consumers with `enable.auto.commit` false committing synchronously.
#[test]
fn a_confluent_kafka_group_resumes_from_its_commits_after_a_node_restart() {
    group_resumes_across_a_restart("confluent");
}

/// See `group_resumes_across_a_restart`: kafka-python `KafkaProducer(acks='all')`
/// (idempotent by default, so through InitProducerId), and `KafkaConsumer` with
/// `commit()`.
#[test]
fn a_kafka_python_group_resumes_from_its_commits_after_a_node_restart() {
    group_resumes_across_a_restart("kafka-python");
}

// Committed offsets shared between the protocols -------------------------------------------------

/// One group id, one set of committed offsets: offsets committed through Kafka by a
/// kafka-python member (3 and 7) are what both Kafka clients read back, what the native
/// OffsetFetch returns, and what `sluice group describe` shows (with the lag); offsets
/// committed natively (12 and 5) are what kafka-python's `list_group_offsets` and
/// confluent-kafka's `committed()` return, and where a confluent-kafka member of the group
/// starts reading; its commits are then read natively.
#[test]
fn committed_offsets_are_shared_between_kafka_and_native_groups() {
    const TOPIC: &str = "shared";
    const GROUP: &str = "shared-group";
    let (_dir, node) = start_node();
    create_topic(&node, TOPIC, 2);
    let specs: Vec<Spec> = (0..40).map(|i| varied(i, (i % 2) as u32)).collect();
    produce_natively(&node, TOPIC, &specs, Compression::None);
    assert_eq!(log_ends(&node, TOPIC, 2), vec![20, 20]);

    let read_through_kafka = |commit: Option<&str>| -> BTreeMap<(String, u32), Option<i64>> {
        let kafka = kafka(&node);
        let mut args = vec!["--bootstrap", &kafka, "--group", GROUP, "--topic", TOPIC, "--partitions", "2"];
        if let Some(commit) = commit {
            args.extend(["--commit", commit]);
        }
        script("offsets.py", &args, b"")
            .iter()
            .map(|l| {
                let client = l.get("client").and_then(Json::as_str).expect("a client").to_string();
                let partition = u32::try_from(l.get("partition").and_then(Json::as_i64).expect("a partition")).unwrap();
                ((client, partition), l.get("offset").and_then(Json::as_i64))
            })
            .collect()
    };
    let both = |p0: i64, p1: i64| -> BTreeMap<(String, u32), Option<i64>> {
        ["confluent", "kafka-python"]
            .iter()
            .flat_map(|c| [((c.to_string(), 0), Some(p0)), ((c.to_string(), 1), Some(p1))])
            .collect()
    };

    // Kafka commits, both sides read.
    assert_eq!(read_through_kafka(Some("0=3,1=7")), both(3, 7), "committed through Kafka, read through Kafka");
    assert_eq!(committed_natively(&node, GROUP, TOPIC, 2), vec![Some(3), Some(7)], "read natively");
    let described = sluice_cli(&node, &["group", "describe", GROUP], b"");
    let rows: Vec<Vec<&str>> = described
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.first() == Some(&TOPIC))
        .collect();
    let rows: Vec<[&str; 4]> = rows.iter().map(|c| [c[1], c[2], c[3], c[4]]).collect();
    assert_eq!(
        rows,
        vec![["0", "3", "20", "17"], ["1", "7", "20", "13"]],
        "partition, committed, log end, lag: {}",
        described.stdout
    );

    // Native commits, both sides read, and a Kafka member starts there.
    commit_natively(&node, GROUP, TOPIC, &[(0, 12), (1, 5)]);
    assert_eq!(read_through_kafka(None), both(12, 5), "committed natively, read through Kafka");
    let consumed = consume_through_kafka(&node, "confluent", TOPIC, 8 + 15, Some(GROUP));
    let from = BTreeMap::from([(0, 12), (1, 5)]);
    assert_contiguous(
        "a Kafka member after the native commit",
        &consumed.iter().map(Record::at).collect::<Vec<_>>(),
        &from,
    );
    assert_eq!(committed_natively(&node, GROUP, TOPIC, 2), vec![Some(20), Some(20)], "its commits, read natively");
}

// Admin ------------------------------------------------------------------------------------------

/// Through confluent-kafka's AdminClient: CreateTopics creates topics (with a config) that
/// the native protocol then lists, and refuses an existing name (TOPIC_ALREADY_EXISTS);
/// CreatePartitions grows a topic and refuses to shrink it (INVALID_PARTITIONS);
/// DescribeConfigs shows the native configs, set and default; ListGroups and
/// DescribeGroups show a live member of a classic group (state, client id, assignment),
/// and the group empty once it left; DeleteTopics deletes (and an unknown topic is
/// UNKNOWN_TOPIC_OR_PART).
#[test]
fn kafka_admin_creates_grows_describes_and_deletes_topics_and_describes_groups() {
    let (_dir, node) = start_node();
    let mut client = node.client();

    // CreateTopics.
    assert_eq!(admin_error(&admin(&node, &["create", "admin-a", "3"]), "admin-a"), None);
    let created = admin(&node, &["create", "admin-b", "1", "retention.ms=3600000"]);
    assert_eq!(admin_error(&created, "admin-b"), None);
    let native = client.metadata(Some(&["admin-a", "admin-b"]));
    let mut partitions: Vec<(&str, ErrorCode, usize)> =
        native.iter().map(|t| (t.name.as_str(), t.error, t.partitions.len())).collect();
    partitions.sort_by_key(|t| t.0);
    assert_eq!(partitions, vec![("admin-a", ErrorCode::None, 3), ("admin-b", ErrorCode::None, 1)]);
    let again = admin(&node, &["create", "admin-a", "3"]);
    assert_eq!(admin_error(&again, "admin-a").as_deref(), Some("TOPIC_ALREADY_EXISTS"));

    // CreatePartitions.
    assert_eq!(admin_error(&admin(&node, &["add-partitions", "admin-a", "5"]), "admin-a"), None);
    assert_eq!(client.metadata(Some(&["admin-a"]))[0].partitions.len(), 5, "grown, as the native side sees it");
    let listed = admin(&node, &["topics"]);
    let a = listed.iter().find(|l| l.get("topic").and_then(Json::as_str) == Some("admin-a")).expect("admin-a listed");
    let a_partitions: Vec<i64> =
        a.get("partitions").and_then(Json::as_array).unwrap().iter().filter_map(Json::as_i64).collect();
    assert_eq!(a_partitions, vec![0, 1, 2, 3, 4], "grown, as Kafka's Metadata sees it");
    let shrink = admin(&node, &["add-partitions", "admin-a", "2"]);
    assert_eq!(admin_error(&shrink, "admin-a").as_deref(), Some("INVALID_PARTITIONS"));

    // DescribeConfigs: every config the native side describes, with its value and
    // whether it is the default.
    let configs = admin(&node, &["configs", "admin-b"]);
    let through_kafka: BTreeMap<String, (Option<String>, Option<bool>)> = configs
        .iter()
        .map(|c| {
            let name = c.get("name").and_then(Json::as_str).expect("a name").to_string();
            let value = c.get("value").and_then(Json::as_str).map(str::to_string);
            (name, (value, c.get("is_default").and_then(Json::as_bool)))
        })
        .collect();
    let natively = client.describe_configs(&["admin-b"]).remove(0);
    assert_eq!(natively.error, ErrorCode::None, "{}", natively.message);
    assert_eq!(natively.get("retention.ms"), Some(("3600000", false)), "the config set at creation");
    for (key, value, is_default) in &natively.configs {
        assert_eq!(
            through_kafka.get(key),
            Some(&(Some(value.clone()), Some(*is_default))),
            "{key} through Kafka, against the native {value:?} (default: {is_default})"
        );
    }

    // ListGroups and DescribeGroups, with a member and after it left.
    let groups = admin(&node, &["groups", "admin-group", "admin-a"]);
    let step = |name: &str| {
        groups
            .iter()
            .find(|l| l.get("step").and_then(Json::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no {name} step in {groups:?}"))
    };
    let listed: Vec<&str> =
        step("listed").get("groups").and_then(Json::as_array).unwrap().iter().filter_map(Json::as_str).collect();
    assert!(listed.contains(&"admin-group"), "ListGroups lists the group: {listed:?}");
    let joined = step("joined");
    assert_eq!(joined.get("state").and_then(Json::as_str), Some("STABLE"), "{joined:?}");
    assert_eq!(
        joined.get("simple").and_then(Json::as_bool),
        Some(false),
        "a group with a consumer protocol: {joined:?}"
    );
    let members = joined.get("members").and_then(Json::as_array).unwrap();
    assert_eq!(members.len(), 1, "{joined:?}");
    assert_eq!(members[0].get("client_id").and_then(Json::as_str), Some("admin-py-member"));
    let assignment: Vec<(String, i64)> = members[0]
        .get("assignment")
        .and_then(Json::as_array)
        .unwrap()
        .iter()
        .map(|tp| match tp.as_array() {
            Some([t, p]) => (t.as_str().unwrap().to_string(), p.as_i64().unwrap()),
            _ => panic!("an assigned partition is [topic, partition]: {tp:?}"),
        })
        .collect();
    let all: Vec<(String, i64)> = (0..5).map(|p| ("admin-a".to_string(), p)).collect();
    assert_eq!(assignment, all, "the only member has every partition");
    let left = step("left");
    assert_eq!(left.get("state").and_then(Json::as_str), Some("EMPTY"), "{left:?}");
    assert_eq!(left.get("members").and_then(Json::as_array).map(<[Json]>::len), Some(0), "{left:?}");

    // DeleteTopics.
    let deleted = admin(&node, &["delete", "admin-a", "admin-b"]);
    assert_eq!((admin_error(&deleted, "admin-a"), admin_error(&deleted, "admin-b")), (None, None));
    let names: Vec<String> = client.metadata(None).into_iter().map(|t| t.name).collect();
    assert!(!names.iter().any(|n| n == "admin-a" || n == "admin-b"), "deleted, as the native side sees it: {names:?}");
    let unknown = admin(&node, &["delete", "no-such-topic"]);
    assert_eq!(admin_error(&unknown, "no-such-topic").as_deref(), Some("UNKNOWN_TOPIC_OR_PART"));
}

/// Runs the `sluice` CLI against the node's native listener.
fn sluice_cli(node: &NodeProcess, args: &[&str], stdin: &[u8]) -> CliRun {
    let mut command = Command::new(cli_binary());
    command.args(["--bootstrap", &node.addr().to_string()]).args(args);
    let run = run_command(command, stdin, TOOL_TIMEOUT);
    assert_eq!(run.code, Some(0), "sluice {args:?}: {run:?}");
    run
}

/// The `sluice` CLI and kcat read each other's records with the same format string:
/// kcat's output of what `sluice produce` wrote equals `sluice consume`'s, and the
/// reverse (partition, offset, timestamp, key, value, headers).
#[test]
fn the_sluice_cli_and_kcat_read_each_others_records() {
    const N: usize = 100;
    let (_dir, node) = start_node();
    let addr = kafka(&node);
    let read_both = |topic: &str| -> (Vec<KcatRecord>, Vec<KcatRecord>) {
        let through_kafka =
            kcat(&["-C", "-b", &addr, "-t", topic, "-o", "beginning", "-e", "-q", "-f", KCAT_FORMAT], b"");
        let max = N.to_string();
        let args = ["consume", topic, "--offset", "beginning", "--max-messages", &max, "--format", KCAT_FORMAT];
        let native = sluice_cli(&node, &args, b"");
        let (mut kafka_view, mut native_view) = (parse_kcat(&through_kafka.stdout), parse_kcat(&native.stdout));
        kafka_view.sort();
        native_view.sort();
        (kafka_view, native_view)
    };
    let input: String = (0..N).map(|i| format!("key-{i}:value {i}\n")).collect();

    create_topic(&node, "from-cli", 3);
    let args = ["produce", "from-cli", "--key-separator", ":", "--compression", "lz4", "--header", "origin=cli"];
    sluice_cli(&node, &args, input.as_bytes());
    let (kafka_view, native_view) = read_both("from-cli");
    assert_eq!(kafka_view.len(), N, "kcat read every record the CLI produced");
    assert_eq!(kafka_view, native_view, "kcat and sluice consume agree on the CLI's records");
    assert!(kafka_view.iter().all(|r| r.5 == [("origin".to_string(), "cli".to_string())]));

    create_topic(&node, "from-kcat", 3);
    let args = ["-P", "-b", &addr, "-t", "from-kcat", "-K:", "-z", "snappy", "-H", "origin=kcat"];
    kcat(&args, input.as_bytes());
    let (kafka_view, native_view) = read_both("from-kcat");
    assert_eq!(native_view.len(), N, "sluice consume read every record kcat produced");
    assert_eq!(kafka_view, native_view, "kcat and sluice consume agree on kcat's records");
    let keys: BTreeSet<&str> = native_view.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(keys.len(), N);
}

/// Kafka's IncrementalAlterConfigs (set, append and subtract list elements, an unknown
/// key refused) and DeleteRecords through confluent-kafka's AdminClient, checked
/// natively; and a deleted topic takes its groups' committed offsets with it.
#[test]
fn kafka_admin_alters_configs_deletes_records_and_deleted_topics_lose_their_offsets() {
    const TOPIC: &str = "alter-me";
    let (_dir, node) = start_node();
    create_topic(&node, TOPIC, 2);
    let config = |key: &str| -> (String, bool) {
        let configs = node.client().describe_configs(&[TOPIC]);
        let (value, is_default) = configs[0].get(key).unwrap_or_else(|| panic!("{key} in {configs:?}"));
        (value.to_string(), is_default)
    };
    let alter = |args: &[&str]| -> Option<String> {
        let mut command = vec!["alter-config", TOPIC];
        command.extend_from_slice(args);
        admin_error(&admin(&node, &command), TOPIC)
    };

    assert_eq!(alter(&["set", "retention.ms", "60000"]), None);
    assert_eq!(config("retention.ms"), ("60000".to_string(), false));
    assert_eq!(alter(&["append", "cleanup.policy", "compact"]), None);
    assert_eq!(config("cleanup.policy").0, "delete,compact");
    assert_eq!(alter(&["subtract", "cleanup.policy", "delete"]), None);
    assert_eq!(config("cleanup.policy").0, "compact");
    assert_eq!(alter(&["delete", "retention.ms"]), None);
    assert!(config("retention.ms").1, "back to the default");
    assert_eq!(alter(&["set", "no.such.key", "1"]).as_deref(), Some("INVALID_CONFIG"));

    // DeleteRecords: partition 0's log start moves to 4; kcat then reads from there.
    let addr = kafka(&node);
    let input: String = (0..10).map(|i| format!("k{i}:v{i}\n")).collect();
    kcat(&["-P", "-b", &addr, "-t", TOPIC, "-p", "0", "-K:"], input.as_bytes());
    let deleted = admin(&node, &["delete-records", TOPIC, "0", "4"]);
    assert_eq!(deleted[0].get("error"), Some(&Json::Null), "{deleted:?}");
    assert_eq!(deleted[0].get("low_watermark").and_then(Json::as_i64), Some(4));
    let left =
        kcat(&["-C", "-b", &addr, "-t", TOPIC, "-p", "0", "-o", "beginning", "-e", "-q", "-f", KCAT_FORMAT], b"");
    let offsets: Vec<u64> = parse_kcat(&left.stdout).iter().map(|r| r.1).collect();
    assert_eq!(offsets, (4..10).collect::<Vec<u64>>());

    // Deleting the topic forgets the offsets committed for it, also after a restart.
    commit_natively(&node, "forgetful", TOPIC, &[(0, 7), (1, 0)]);
    assert_eq!(committed_natively(&node, "forgetful", TOPIC, 2), vec![Some(7), Some(0)]);
    assert_eq!(admin_error(&admin(&node, &["delete", TOPIC]), TOPIC), None);
    create_topic(&node, TOPIC, 2);
    assert_eq!(committed_natively(&node, "forgetful", TOPIC, 2), vec![None, None], "gone with the topic");
    let mut node = node;
    node.sigterm_and_wait();
    node.restart();
    assert_eq!(committed_natively(&node, "forgetful", TOPIC, 2), vec![None, None], "and stay gone");
}

/// Kafka's topic auto-creation: kcat producing to a topic that does not exist creates it
/// (its Metadata request allows it) with `--num-partitions` partitions, and reads the
/// records back; a node started with `--auto-create-topics false` refuses the same
/// produce with an unknown topic and creates nothing.
#[test]
fn a_kafka_producer_auto_creates_a_missing_topic_unless_turned_off() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let node = NodeProcess::start_with_kafka(&dir.path().join("data"), SHARDS, &["--num-partitions", "3"]);
    let lines: String = (0..30).map(|i| format!("auto-{i}\n")).collect();
    kcat(&["-b", &kafka(&node), "-P", "-t", "auto-made", "-X", "acks=all"], lines.as_bytes());
    let metadata = kcat(&["-b", &kafka(&node), "-L", "-J", "-t", "auto-made"], b"");
    let json = Json::parse(&metadata.stdout).unwrap_or_else(|e| panic!("{e}: {}", metadata.stdout));
    let topics = json.get("topics").and_then(Json::as_array).expect("topics");
    assert_eq!(topics[0].get("partitions").and_then(Json::as_array).map(<[Json]>::len), Some(3), "{}", metadata.stdout);
    let read = kcat(&["-b", &kafka(&node), "-C", "-t", "auto-made", "-o", "beginning", "-e", "-q"], b"");
    let mut got: Vec<&str> = read.stdout.lines().collect();
    got.sort_unstable();
    assert_eq!(got.len(), 30, "{}", read.stdout);

    let off_dir = tempfile::tempdir().expect("creating a temporary directory");
    let off = NodeProcess::start_with_kafka(&off_dir.path().join("data"), SHARDS, &["--auto-create-topics", "false"]);
    require("kcat");
    let mut command = std::process::Command::new("kcat");
    command.args(["-b", &kafka(&off), "-P", "-t", "not-made", "-X", "message.timeout.ms=3000"]);
    let run = run_command(command, b"x\n", TOOL_TIMEOUT);
    // (librdkafka gives a missing topic up to 30 s to appear; the message times out
    // first.)
    assert!(run.code != Some(0) && run.stderr.contains("Delivery failed"), "the produce fails: {run:?}");
    let listed = kcat(&["-b", &kafka(&off), "-L", "-J"], b"");
    assert!(!listed.stdout.contains("not-made"), "{}", listed.stdout);
}

/// kafka-python's admin client describes the cluster (DescribeCluster: the cluster id,
/// this node as the controller and only broker) and its log directories
/// (DescribeLogDirs: the data directory, with each partition's size on disk).
#[test]
fn kafka_python_describes_the_cluster_and_its_log_directories() {
    let (_dir, node) = start_node();
    create_topic(&node, "sized", 2);
    let lines: String = (0..50).map(|i| format!("record-{i}\n")).collect();
    kcat(&["-b", &kafka(&node), "-P", "-t", "sized", "-p", "1"], lines.as_bytes());
    let out = script("cluster_info.py", &["--bootstrap", &kafka(&node)], b"");
    let cluster = out.iter().find_map(|l| l.get("cluster")).expect("a cluster line");
    assert_eq!(cluster.get("cluster_id").and_then(Json::as_str), Some("sluice"), "{cluster:?}");
    let brokers = cluster.get("brokers").and_then(Json::as_array).expect("brokers");
    assert_eq!(brokers.len(), 1, "{cluster:?}");
    let text = format!("{out:?}");
    assert!(text.contains("sized"), "the log directory lists the topic: {text}");
    // Partition 1 holds the records; partition 0 is empty.
    let log_dirs = out.iter().find_map(|l| l.get("log_dirs")).expect("a log_dirs line");
    let sizes: Vec<i64> = find_all(log_dirs, "partition_size");
    assert!(sizes.iter().any(|s| *s > 0), "a partition with records has a size: {log_dirs:?}");
}

/// Every integer under `key` anywhere in `json`.
fn find_all(json: &Json, key: &str) -> Vec<i64> {
    let mut out = Vec::new();
    if let Some(v) = json.get(key).and_then(Json::as_i64) {
        out.push(v);
    }
    if let Some(items) = json.as_array() {
        for item in items {
            out.extend(find_all(item, key));
        }
    }
    if let Json::Object(fields) = json {
        for v in fields.values() {
            out.extend(find_all(v, key));
        }
    }
    out
}

/// A confluent-kafka group member (tests/kafka/group_member.py) reading `topic` in
/// `group` in the background, static with `instance`; it runs until the test stops it.
fn group_member(node: &NodeProcess, topic: &str, group: &str, instance: Option<&str>) -> Streaming {
    group_member_with(node, topic, group, instance.map_or(Vec::new(), |i| vec!["--instance-id", i]))
}

/// The same with more of group_member.py's arguments.
fn group_member_with(node: &NodeProcess, topic: &str, group: &str, args: Vec<&str>) -> Streaming {
    require("python3");
    let mut command = Command::new("python3");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join("group_member.py"))
        .args(["--bootstrap", &kafka(node), "--topic", topic, "--group", group])
        .args(["--count", "1000000", "--timeout", &SCRIPT_TIMEOUT_S.to_string()])
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    Streaming::start(command)
}

/// The partitions of each `assigned` line of a group member, in order.
fn assignments(lines: &[Json]) -> Vec<BTreeSet<i64>> {
    lines
        .iter()
        .filter_map(|l| l.get("assigned")?.as_array().map(|ps| ps.iter().filter_map(Json::as_i64).collect()))
        .collect()
}

/// group.initial.rebalance.delay.ms (default 3 s): two confluent-kafka members started a
/// second apart join a new group in its first rebalance together, so each is assigned
/// once, its share; without the delay the first would take every partition and give half
/// back a moment later.
#[test]
fn members_starting_together_share_a_new_groups_first_rebalance() {
    let (_dir, node) = start_node();
    create_topic(&node, "together", 4);
    let a = group_member(&node, "together", "together-group", None);
    std::thread::sleep(Duration::from_secs(1));
    let b = group_member(&node, "together", "together-group", None);
    a.wait_for("assigned", WAIT);
    b.wait_for("assigned", WAIT);
    // Some heartbeats later: still one assignment each.
    std::thread::sleep(Duration::from_secs(2));
    let (of_a, of_b) = (assignments(&a.lines()), assignments(&b.lines()));
    assert_eq!((of_a.len(), of_b.len()), (1, 1), "one assignment each: a {of_a:?}, b {of_b:?}");
    assert!(of_a[0].is_disjoint(&of_b[0]) && of_a[0].len() + of_b[0].len() == 4, "a {of_a:?}, b {of_b:?}");
    for member in [a, b] {
        member.kill();
    }
}

/// What a member owns after its lines so far: under KIP-848 librdkafka's callbacks
/// are incremental (partitions added, partitions taken away).
fn owned_now(lines: &[Json]) -> BTreeSet<i64> {
    let mut owned = BTreeSet::new();
    let list =
        |v: &Json| v.as_array().map(|ps| ps.iter().filter_map(Json::as_i64).collect::<Vec<_>>()).unwrap_or_default();
    for l in lines {
        if let Some(added) = l.get("assigned") {
            owned.extend(list(added));
        }
        if let Some(taken) = l.get("revoked") {
            for p in list(taken) {
                owned.remove(&p);
            }
        }
    }
    owned
}

/// Kafka's consumer group protocol (KIP-848, `group.protocol=consumer` in
/// confluent-kafka): the coordinator assigns. A first member takes all four partitions
/// and reads slowly, committing each record; a second joins and the first hands it half
/// (revoked first, then assigned), so the two read every record exactly once between
/// them. The second is killed with SIGKILL; after the session timeout the first gets
/// its partitions back and reads what is produced next. ListGroups shows a `consumer`
/// group.
#[test]
fn a_kip_848_consumer_group_shares_partitions_and_takes_back_a_dead_members() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let flags = ["--group-consumer-heartbeat-interval-ms", "500", "--group-consumer-session-timeout-ms", "5000"];
    let node = NodeProcess::start_with_kafka(&dir.path().join("data"), SHARDS, &flags);
    create_topic(&node, "kip848", 4);
    let lines: String = (0..400).map(|i| format!("{i}:v-{i}\n")).collect();
    let run = kcat(&["-b", &kafka(&node), "-P", "-t", "kip848", "-K", ":"], lines.as_bytes());
    assert_eq!(run.code, Some(0), "kcat -P: {run:?}");
    let member =
        || group_member_with(&node, "kip848", "kip848-group", vec!["--protocol", "consumer", "--delay-ms", "20"]);
    let a = member();
    a.wait_for("value", WAIT);
    let b = member();
    let deadline = Instant::now() + WAIT;
    loop {
        let (of_a, of_b) = (owned_now(&a.lines()), owned_now(&b.lines()));
        if of_a.len() == 2 && of_b.len() == 2 && of_a.is_disjoint(&of_b) {
            break;
        }
        assert!(Instant::now() < deadline, "no even split: a {of_a:?}, b {of_b:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let values = |lines: &[Json]| -> Vec<String> {
        lines.iter().filter_map(|l| l.get("value")?.as_str().map(str::to_string)).collect()
    };
    let deadline = Instant::now() + WAIT;
    while values(&a.lines()).len() + values(&b.lines()).len() < 400 {
        assert!(Instant::now() < deadline, "the two did not read all 400 records");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut read = values(&a.lines());
    read.extend(values(&b.lines()));
    let distinct: BTreeSet<&String> = read.iter().collect();
    assert_eq!((read.len(), distinct.len()), (400, 400), "every record read exactly once");
    assert!(!values(&b.lines()).is_empty(), "the second member read its share");

    let listed = admin(&node, &["list-groups"]);
    let group = listed.iter().find(|l| l.get("group").and_then(Json::as_str) == Some("kip848-group"));
    let field = |key: &str| group.and_then(|g| g.get(key)?.as_str());
    assert_eq!((field("type"), field("state")), (Some("CONSUMER"), Some("STABLE")), "{listed:?}");
    // Described with ConsumerGroupDescribe: both members, each with its two partitions
    // as its assignment and its target.
    let described = admin(&node, &["describe-group", "kip848-group"]);
    let d = &described[0];
    assert_eq!(d.get("type").and_then(Json::as_str), Some("CONSUMER"), "{described:?}");
    let members = d.get("members").and_then(Json::as_array).unwrap_or_default();
    assert_eq!(members.len(), 2, "{described:?}");
    for m in members {
        let count = |key: &str| m.get(key).and_then(Json::as_array).map_or(0, <[Json]>::len);
        assert_eq!((count("assignment"), count("target")), (2, 2), "{described:?}");
    }

    b.kill();
    let deadline = Instant::now() + WAIT;
    while owned_now(&a.lines()).len() < 4 {
        assert!(Instant::now() < deadline, "the dead member's partitions never came back: {:?}", owned_now(&a.lines()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines: String = (400..440).map(|i| format!("{i}:v-{i}\n")).collect();
    let run = kcat(&["-b", &kafka(&node), "-P", "-t", "kip848", "-K", ":"], lines.as_bytes());
    assert_eq!(run.code, Some(0), "kcat -P: {run:?}");
    let deadline = Instant::now() + WAIT;
    loop {
        let got: BTreeSet<String> = values(&a.lines()).into_iter().collect();
        if (400..440).all(|i| got.contains(&format!("v-{i}"))) {
            break;
        }
        assert!(Instant::now() < deadline, "a did not read the new records");
        std::thread::sleep(Duration::from_millis(100));
    }
    a.kill();
}

/// Static membership (KIP-345) with confluent-kafka: two members with `group.instance.id`
/// share a topic's partitions; one is killed with SIGKILL (a static member does not leave)
/// and restarted with its instance id within its session timeout. It gets back the
/// partitions it had and the other member sees no rebalance (no revocation, no new
/// assignment). A third process started with the same instance id takes the place, and
/// the one it replaced is told it was fenced (FENCED_INSTANCE_ID, fatal to librdkafka).
#[test]
fn a_restarted_static_kafka_member_gets_its_partitions_back_without_a_rebalance() {
    let (_dir, node) = start_node();
    create_topic(&node, "static", 4);
    let member = |instance: &str| group_member(&node, "static", "static-group", Some(instance));
    let a = member("i-a");
    a.wait_for("assigned", WAIT);
    let b = member("i-b");
    // Settled: each has a share and the shares cover the partitions once.
    let deadline = Instant::now() + WAIT;
    let shares = loop {
        let (of_a, of_b) = (assignments(&a.lines()), assignments(&b.lines()));
        if let (Some(x), Some(y)) = (of_a.last(), of_b.last()) {
            if !x.is_empty() && !y.is_empty() && x.is_disjoint(y) && x.len() + y.len() == 4 {
                break (x.clone(), y.clone());
            }
        }
        assert!(Instant::now() < deadline, "no settled assignment: a {of_a:?}, b {of_b:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Heartbeats go on for a while: nothing changes.
    std::thread::sleep(Duration::from_secs(2));
    let b_before = b.lines().len();
    a.kill();
    let a2 = member("i-a");
    a2.wait_for("assigned", WAIT);
    assert_eq!(assignments(&a2.lines()), vec![shares.0.clone()], "the restarted member gets its partitions back");
    // Several heartbeat intervals (500 ms): a rebalance would reach b by now.
    std::thread::sleep(Duration::from_secs(3));
    let b_lines = b.lines();
    let changes: Vec<_> =
        b_lines[b_before..].iter().filter(|l| l.get("assigned").is_some() || l.get("revoked").is_some()).collect();
    assert!(changes.is_empty(), "the other member saw a rebalance: {changes:?}");
    assert_eq!(assignments(&b_lines).last(), Some(&shares.1));

    let a3 = member("i-a");
    a3.wait_for("assigned", WAIT);
    let deadline = Instant::now() + WAIT;
    let fenced = |lines: &[Json]| {
        lines.iter().any(|l| l.get("error").and_then(Json::as_str).is_some_and(|e| e.to_lowercase().contains("fenced")))
    };
    while !fenced(&a2.lines()) {
        assert!(Instant::now() < deadline, "the replaced member was not fenced: {:?}", a2.lines());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(assignments(&a3.lines()), vec![shares.0]);
    for process in [a2, a3, b] {
        process.kill();
    }
}

/// OffsetDelete through kafka-python's admin client (`delete_group_offsets`): the commit of
/// the partition asked goes, the group's others stay.
#[test]
fn kafka_python_deletes_one_partitions_committed_offset() {
    let (_dir, node) = start_node();
    create_topic(&node, "committed", 2);
    commit_natively(&node, "offsets-group", "committed", &[(0, 5), (1, 7)]);
    let out = script(
        "group_offsets.py",
        &["--bootstrap", &kafka(&node), "--group", "offsets-group", "--delete", "committed:0"],
        b"",
    );
    let line = |key: &str| out.iter().find_map(|l| l.get(key)).unwrap_or_else(|| panic!("no {key} in {out:?}"));
    let offset = |map: &Json, key: &str| map.get(key).and_then(Json::as_i64);
    assert_eq!((offset(line("before"), "committed-0"), offset(line("before"), "committed-1")), (Some(5), Some(7)));
    assert!(line("deleted").get("committed-0").is_some_and(Json::is_null), "{out:?}");
    assert_eq!((offset(line("after"), "committed-0"), offset(line("after"), "committed-1")), (None, Some(7)));
}

/// A broker's configs (DescribeConfigs of resource BROKER through confluent-kafka): the
/// node's settings under Kafka's names, static and read only.
#[test]
fn confluent_kafka_describes_the_nodes_broker_configs() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let data = dir.path().join("data");
    let flags = ["--num-partitions", "4", "--segment-bytes", "8388608", "--group-initial-rebalance-delay-ms", "1500"];
    let node = NodeProcess::start_with_kafka(&data, SHARDS, &flags);
    let lines = admin(&node, &["broker-configs", "0"]);
    let value = |name: &str| {
        lines.iter().find(|l| l.get("name").and_then(Json::as_str) == Some(name)).and_then(|l| l.get("value")?.as_str())
    };
    assert_eq!(value("num.partitions"), Some("4"), "{lines:?}");
    assert_eq!(value("log.segment.bytes"), Some("8388608"));
    assert_eq!(value("auto.create.topics.enable"), Some("true"));
    assert_eq!(value("broker.id"), Some("0"));
    assert_eq!(value("group.initial.rebalance.delay.ms"), Some("1500"));
    assert!(value("log.dirs").is_some_and(|d| d.ends_with("data")), "{:?}", value("log.dirs"));
}

// Transactions ---------------------------------------------------------------------------

fn transactions(node: &NodeProcess, args: &[&str]) -> Vec<Json> {
    let bootstrap = kafka(node);
    let mut full: Vec<&str> = vec!["--bootstrap", &bootstrap];
    full.extend_from_slice(args);
    script("transactions.py", &full, b"")
}

/// The values a consume of transactions.py printed.
fn values_read(lines: &[Json]) -> Vec<String> {
    lines.iter().filter_map(|l| l.get("value").and_then(Json::as_str).map(str::to_string)).collect()
}

/// (low, high) of one partition as a consumer with `isolation` sees it (high: the last
/// stable offset for read_committed).
fn watermarks(node: &NodeProcess, topic: &str, partition: u32, isolation: &str) -> (i64, i64) {
    let lines = transactions(node, &["watermarks", topic, &partition.to_string(), isolation]);
    let get = |k: &str| lines.last().and_then(|l| l.get(k)).and_then(Json::as_i64).expect("watermarks");
    (get("low"), get("high"))
}

/// Transactions through confluent-kafka's transactional producer: read_committed
/// consumers see the committed transactions' records and none of the aborted ones (which
/// read_uncommitted consumers do see); a transaction left open holds the last stable
/// offset back until the coordinator aborts it at its timeout, even across a kill -9 of
/// the node in between (its state, the open transaction and the aborted ones are stored).
#[test]
fn read_committed_consumers_see_committed_transactions_only_and_an_open_one_times_out_across_kill_9() {
    let (_dir, mut node) = start_node();
    create_topic(&node, "tx", 3);
    let lines = transactions(&node, &["produce", "tx", "3", "p1", "cacca"]);
    let outcome = |o: &str| -> BTreeSet<String> {
        lines
            .iter()
            .filter(|l| l.get("outcome").and_then(Json::as_str) == Some(o))
            .flat_map(|l| l.get("values").and_then(Json::as_array).unwrap_or(&[]).iter())
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let (committed, aborted) = (outcome("committed"), outcome("aborted"));
    assert_eq!((committed.len(), aborted.len()), (9, 6), "{lines:?}");
    let read = |node: &NodeProcess, isolation: &str, expect: usize| -> Vec<String> {
        values_read(&transactions(node, &["consume", "tx", isolation, &expect.to_string()]))
    };
    let seen = read(&node, "read_committed", 9);
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), committed, "read_committed: {seen:?}");
    let all = read(&node, "read_uncommitted", 15);
    assert_eq!(all.iter().cloned().collect::<BTreeSet<_>>(), &committed | &aborted);
    assert_eq!(watermarks(&node, "tx", 0, "read_committed"), watermarks(&node, "tx", 0, "read_uncommitted"));

    // A transaction left open (its producer exits) holds partition 0's last stable offset.
    let open = transactions(&node, &["open", "tx", "p2", "6000"]);
    assert_eq!(open.last().and_then(|l| l.get("written")).and_then(Json::as_bool), Some(true));
    let (_, stable) = watermarks(&node, "tx", 0, "read_committed");
    let (_, end) = watermarks(&node, "tx", 0, "read_uncommitted");
    assert_eq!(stable + 1, end, "the open transaction's record is not stable");
    node.kill9_and_wait();
    node.restart();
    assert_eq!(watermarks(&node, "tx", 0, "read_committed").1, stable, "still open after the restart");
    // The coordinator (loaded back from __transaction_state) aborts it at its timeout.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, now_stable) = watermarks(&node, "tx", 0, "read_committed");
        let (_, now_end) = watermarks(&node, "tx", 0, "read_uncommitted");
        if now_stable == now_end {
            assert!(now_end > end, "the abort marker follows the open record");
            break;
        }
        assert!(Instant::now() < deadline, "the open transaction was not aborted: stable {now_stable}, end {now_end}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let seen = read(&node, "read_committed", 9);
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), committed, "after the restart: {seen:?}");
    // A new producer with the fenced transactional id carries on.
    let lines = transactions(&node, &["produce", "tx", "3", "p2", "c"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(read(&node, "read_committed", 12).len(), 12);
}

/// Consume-transform-produce with confluent-kafka: records read in a group are written
/// to another topic and their offsets committed in the same transaction, every fourth
/// transaction aborted and redone; the output, read with read_committed, holds each input
/// record exactly once.
#[test]
fn consume_transform_produce_writes_each_input_record_exactly_once() {
    let (_dir, node) = start_node();
    create_topic(&node, "in", 2);
    create_topic(&node, "out", 2);
    let specs: Vec<Spec> = (0..200)
        .map(|i| Spec {
            partition: Some(i % 2),
            timestamp_ms: None,
            key: None,
            value: Some(format!("v{i}").into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    produce_through_kafka(&node, "confluent", "in", &specs);
    let lines = transactions(&node, &["transform", "in", "out", "ctp", "ctp-1", "200"]);
    let done = lines.last().expect("a summary");
    assert_eq!(done.get("committed").and_then(Json::as_i64), Some(200), "{lines:?}");
    assert!(done.get("aborted").and_then(Json::as_i64).unwrap_or(0) > 0, "some transactions were aborted: {lines:?}");
    let out = values_read(&transactions(&node, &["consume", "out", "read_committed", "200"]));
    let expected: BTreeSet<String> = (0..200).map(|i| format!("out-v{i}")).collect();
    assert_eq!(out.len(), 200, "{out:?}");
    assert_eq!(out.into_iter().collect::<BTreeSet<_>>(), expected);
    // The group's committed offsets are the transactions' (the input's end).
    let committed = committed_natively(&node, "ctp", "in", 2);
    assert_eq!(committed, vec![Some(100), Some(100)]);
}

/// The `sluice` CLI with transactions a Kafka client wrote: `transaction list` and
/// `describe` show a hanging transaction (left open by a confluent-kafka producer that
/// exited, with a 10-minute timeout), `consume --isolation-level read_committed` prints
/// only committed records and stops below it, and `transaction abort` ends it so
/// read_committed readers move past it; aborting it again fails with exit code 1.
#[test]
fn the_sluice_cli_lists_describes_and_aborts_a_hanging_transaction() {
    let (_dir, node) = start_node();
    create_topic(&node, "hang", 1);
    transactions(&node, &["produce", "hang", "1", "done-1", "c"]);
    transactions(&node, &["open", "hang", "stuck-1", "600000"]);
    let list = sluice_cli(&node, &["transaction", "list"], b"").stdout;
    let line = list.lines().find(|l| l.starts_with("stuck-1")).unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains("Ongoing"), "{line}");
    assert!(list.lines().any(|l| l.starts_with("done-1") && l.contains("CompleteCommit")), "{list}");
    let described = sluice_cli(&node, &["transaction", "describe", "stuck-1"], b"").stdout;
    assert!(described.contains("Ongoing") && described.contains("hang-0"), "{described}");
    let consume = |isolation: &str| -> Vec<String> {
        let args = ["consume", "hang", "--isolation-level", isolation, "--timeout-ms", "1500"];
        sluice_cli(&node, &args, b"").stdout.lines().map(str::to_string).collect()
    };
    assert_eq!(consume("read_committed"), ["done-1-0-0", "done-1-0-1", "done-1-0-2"]);
    assert_eq!(consume("read_uncommitted").len(), 4);
    let (_, stable) = watermarks(&node, "hang", 0, "read_committed");
    let (_, end) = watermarks(&node, "hang", 0, "read_uncommitted");
    assert_eq!(stable + 1, end, "the hanging transaction holds the last stable offset");

    sluice_cli(&node, &["transaction", "abort", "stuck-1"], b"");
    let deadline = Instant::now() + WAIT;
    while !sluice_cli(&node, &["transaction", "describe", "stuck-1"], b"").stdout.contains("CompleteAbort") {
        assert!(Instant::now() < deadline, "the abort did not complete");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(watermarks(&node, "hang", 0, "read_committed").1, watermarks(&node, "hang", 0, "read_uncommitted").1);
    assert_eq!(consume("read_committed"), ["done-1-0-0", "done-1-0-1", "done-1-0-2"]);
    let mut command = Command::new(cli_binary());
    command.args(["--bootstrap", &node.addr().to_string(), "transaction", "abort", "stuck-1"]);
    let again = run_command(command, b"", TOOL_TIMEOUT);
    assert_eq!(again.code, Some(1), "nothing left to abort: {again:?}");
    assert!(again.stderr.contains("INVALID_TXN_STATE"), "{again:?}");
}

// TLS ---------------------------------------------------------------------------------------

/// A node whose Kafka listener serves TLS (`SSL://`) with `tls_args`, and that listener's
/// address.
fn start_tls_node(dir: &Path, tls_args: &[&str]) -> (NodeProcess, String) {
    let kafka = sluice_tests::node_client::free_loopback_addr().to_string();
    let listen = format!("SSL://{kafka}");
    let mut args = vec!["--kafka-listen", listen.as_str()];
    args.extend_from_slice(tls_args);
    let node = NodeProcess::start(&dir.join("data"), SHARDS, &args);
    (node, kafka)
}

/// kcat's TLS settings: trust `ca`, and present `client` (certificate, key) if given.
fn kcat_tls<'a>(ca: &'a str, client: Option<&'a (String, String)>) -> Vec<String> {
    let mut args =
        vec!["-X".to_string(), "security.protocol=ssl".to_string(), "-X".to_string(), format!("ssl.ca.location={ca}")];
    if let Some((cert, key)) = client {
        args.extend(["-X".to_string(), format!("ssl.certificate.location={cert}")]);
        args.extend(["-X".to_string(), format!("ssl.key.location={key}")]);
    }
    args
}

/// `kcat(args)` with TLS `settings` (from `kcat_tls`) after them.
fn kcat_over_tls(args: &[&str], settings: &[String], stdin: &[u8]) -> CliRun {
    let mut all = args.to_vec();
    all.extend(settings.iter().map(String::as_str));
    kcat(&all, stdin)
}

/// Whether kcat gets the cluster's metadata from `bootstrap` with `settings` within 10 s.
fn kcat_reaches(bootstrap: &str, settings: &[String]) -> bool {
    require("kcat");
    let mut command = Command::new("kcat");
    command.args(["-b", bootstrap, "-L", "-m", "10"]).args(settings);
    let run = run_command(command, b"", TOOL_TIMEOUT);
    run.code == Some(0) && run.stdout.contains("broker")
}

/// A Kafka listener that serves TLS (`--kafka-listen SSL://`, `--tls-cert`, `--tls-key`):
/// kcat, confluent-kafka and kafka-python, each trusting the test's CA and checking the
/// node's name (IP 127.0.0.1) against its certificate, produce and consume keyed records
/// with headers byte for byte; a plaintext client and a client trusting another CA get
/// nothing, and the node counts their failed handshakes.
#[test]
fn kafka_clients_produce_and_consume_over_tls_and_others_are_refused() {
    const TOPIC: &str = "over-tls";
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pki = Pki::new(&dir.path().join("pki"));
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("node", "ca");
    let other_ca = pki.ca("other-ca");
    let metrics = sluice_tests::node_client::free_loopback_addr().to_string();
    let (node, kafka) =
        start_tls_node(dir.path(), &["--tls-cert", &cert, "--tls-key", &key, "--metrics-listen", &metrics]);
    create_topic(&node, TOPIC, 3);
    let tls = kcat_tls(&ca, None);
    let input: String = (0..100).map(|i| format!("key-{i}:value-{i}\n")).collect();
    kcat_over_tls(&["-b", &kafka, "-P", "-t", TOPIC, "-K", ":", "-H", "via=kcat"], &tls, input.as_bytes());
    let consume = ["-b", &kafka, "-C", "-t", TOPIC, "-o", "beginning", "-e", "-f", "%k:%s:%h\n"];
    let read = kcat_over_tls(&consume, &tls, b"");
    let mut got: Vec<&str> = read.stdout.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = (0..100).map(|i| format!("key-{i}:value-{i}:via=kcat")).collect();
    want.sort();
    assert_eq!(got, want, "kcat reads back over TLS what it produced over TLS");

    let tls_ca = ["--tls-ca", ca.as_str()];
    for client in ["confluent", "kafka-python"] {
        let topic = format!("{TOPIC}-{client}");
        create_topic(&node, &topic, 2);
        let specs: Vec<Spec> = (0..40).map(|i| varied_for_every_client(i, (i % 2) as u32)).collect();
        let stored = produce_through(&kafka, &tls_ca, client, &topic, &specs);
        let mut expected: Vec<Record> = specs.iter().zip(&stored).map(|(s, &at)| s.stored_at(at)).collect();
        expected.sort();
        let mut consumed = consume_through(&kafka, &tls_ca, client, &topic, specs.len());
        consumed.sort();
        assert_eq!(consumed, expected, "{client} over TLS reads what it produced, byte for byte");
    }

    let before = sluice_tests::node_client::metric_value(
        &sluice_tests::node_client::scrape_metrics(metrics.parse().unwrap()),
        "sluice_tls_handshakes_failed_total",
    )
    .expect("the handshake failure counter");
    assert!(!kcat_reaches(&kafka, &[]), "a plaintext client gets no metadata from a TLS listener");
    assert!(!kcat_reaches(&kafka, &kcat_tls(&other_ca, None)), "a client trusting another CA refuses the node");
    let after = sluice_tests::node_client::metric_value(
        &sluice_tests::node_client::scrape_metrics(metrics.parse().unwrap()),
        "sluice_tls_handshakes_failed_total",
    )
    .expect("the handshake failure counter");
    assert!(after >= before + 2, "both refused clients' handshakes are counted ({before} -> {after})");
    assert!(kcat_reaches(&kafka, &tls), "the listener still serves TLS clients after refusing others");
}

/// SIGHUP makes the node read its TLS files again: a renewed certificate from another CA
/// is served to new connections without a restart, and files that cannot be read keep the
/// previous certificate in use, with an error in the log naming the file.
#[test]
fn sighup_serves_a_renewed_certificate_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pki = Pki::new(&dir.path().join("pki"));
    let (first_ca, second_ca) = (pki.ca("first-ca"), pki.ca("second-ca"));
    let (first_cert, first_key) = pki.leaf("first", "first-ca");
    let (second_cert, second_key) = pki.leaf("second", "second-ca");
    let served = (dir.path().join("node.pem"), dir.path().join("node.key"));
    let install = |cert: &str, key: &str| {
        std::fs::copy(cert, &served.0).expect("copying the certificate");
        std::fs::copy(key, &served.1).expect("copying the key");
    };
    install(&first_cert, &first_key);
    let (cert_arg, key_arg) = (served.0.display().to_string(), served.1.display().to_string());
    let (node, kafka) = start_tls_node(dir.path(), &["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    assert!(kcat_reaches(&kafka, &kcat_tls(&first_ca, None)), "the first certificate is served");

    let wait_for_log = |what: &str, count: usize| {
        let deadline = Instant::now() + WAIT;
        while node.log().matches(what).count() < count {
            assert!(Instant::now() < deadline, "no {what:?} in the node's log after SIGHUP:\n{}", node.log_tail());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    std::fs::write(&served.0, "not a certificate\n").expect("breaking the certificate file");
    node.reload();
    wait_for_log("the previous ones stay in use", 1);
    assert!(node.log().contains(&cert_arg), "the error names the file:\n{}", node.log_tail());
    assert!(kcat_reaches(&kafka, &kcat_tls(&first_ca, None)), "a failed reload keeps the first certificate");

    install(&second_cert, &second_key);
    node.reload();
    wait_for_log("TLS certificate and key read again", 1);
    assert!(kcat_reaches(&kafka, &kcat_tls(&second_ca, None)), "the renewed certificate is served");
    assert!(!kcat_reaches(&kafka, &kcat_tls(&first_ca, None)), "the first certificate is no longer served");
}

/// With `--tls-client-ca`, the listener asks clients for a certificate (Kafka's
/// ssl.client.auth=required): a client without one, or with one another CA signed, is
/// refused; one with a certificate the client CA signed produces and consumes.
#[test]
fn with_a_client_ca_only_clients_with_its_certificates_are_served() {
    const TOPIC: &str = "mutual-tls";
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pki = Pki::new(&dir.path().join("pki"));
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("node", "ca");
    let client_ca = pki.ca("client-ca");
    let client = pki.leaf("client", "client-ca");
    let stranger = pki.leaf("stranger", "ca");
    let (node, kafka) =
        start_tls_node(dir.path(), &["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &client_ca]);
    create_topic(&node, TOPIC, 1);
    assert!(!kcat_reaches(&kafka, &kcat_tls(&ca, None)), "a client without a certificate is refused");
    assert!(!kcat_reaches(&kafka, &kcat_tls(&ca, Some(&stranger))), "a certificate of another CA is refused");
    let tls = kcat_tls(&ca, Some(&client));
    kcat_over_tls(&["-b", &kafka, "-P", "-t", TOPIC, "-K", ":"], &tls, b"a:1\nb:2\n");
    let consume = ["-b", &kafka, "-C", "-t", TOPIC, "-o", "beginning", "-e", "-f", "%k:%s\n"];
    let read = kcat_over_tls(&consume, &tls, b"");
    assert_eq!(read.stdout, "a:1\nb:2\n", "a client with the client CA's certificate is served");
}

/// A TLS listener without its certificate, or with a file that holds none, stops the node
/// at start with an error naming what is missing or which file is wrong.
#[test]
fn a_tls_listener_without_a_usable_certificate_stops_the_node_naming_it() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let kafka = format!("SSL://{}", sluice_tests::node_client::free_loopback_addr());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").expect("writing a file that is not PEM");
    let garbage = garbage.display().to_string();
    let cases: [(&[&str], &str); 3] = [
        (&["--kafka-listen", &kafka], "needs tls-cert"),
        (&["--kafka-listen", &kafka, "--tls-cert", &garbage, "--tls-key", &garbage], garbage.as_str()),
        (&["--tls-cert", &garbage, "--tls-key", &garbage], "no listener uses TLS"),
    ];
    // The nodes' CA may not be the Kafka clients' CA (a client certificate would admit
    // its holder to the cluster link as a node).
    let pki = Pki::new(&dir.path().join("pki"));
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("node", "ca");
    let native = sluice_tests::node_client::free_loopback_addr();
    let (cluster, kafka_addr) =
        (sluice_tests::node_client::free_loopback_addr(), sluice_tests::node_client::free_loopback_addr());
    let peer = format!("1={native},{cluster},{kafka_addr}");
    let ssl = format!("SSL://{kafka_addr}");
    let same_ca: [&str; 14] = [
        "--node-id",
        "1",
        "--kafka-listen",
        &ssl,
        "--peer",
        &peer,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
        "--cluster-tls-ca",
        &ca,
    ];
    match NodeProcess::try_start_at(native, &dir.path().join("data-same-ca"), SHARDS, &same_ca) {
        sluice_tests::node_client::StartAttempt::Exited(status, log) => {
            assert_eq!(status.code(), Some(2), "{log}");
            assert!(log.contains("give the nodes a CA of their own"), "{log}");
        }
        sluice_tests::node_client::StartAttempt::Started(log) => {
            panic!("the node started with one CA for both:\n{log}")
        }
    }
    for (i, (args, named)) in cases.iter().enumerate() {
        let data = dir.path().join(format!("data-{i}"));
        let addr = sluice_tests::node_client::free_loopback_addr();
        match NodeProcess::try_start_at(addr, &data, SHARDS, args) {
            sluice_tests::node_client::StartAttempt::Exited(status, log) => {
                assert_eq!(status.code(), Some(2), "{args:?}: exit status 2 for a bad configuration:\n{log}");
                assert!(log.contains(named), "{args:?}: the error names {named:?}:\n{log}");
            }
            sluice_tests::node_client::StartAttempt::Started(log) => panic!("{args:?}: the node started:\n{log}"),
        }
    }
}

// SASL --------------------------------------------------------------------------------------

/// kcat's settings for SASL_SSL as `user` with `mechanism`, trusting `ca`.
fn kcat_sasl(ca: &str, mechanism: &str, user: &str, password: &str) -> Vec<String> {
    [
        "security.protocol=sasl_ssl".to_string(),
        format!("ssl.ca.location={ca}"),
        format!("sasl.mechanism={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
    ]
    .into_iter()
    .flat_map(|setting| ["-X".to_string(), setting])
    .collect()
}

/// The scripts' arguments for SASL_SSL as `user` with `mechanism`, trusting `ca`.
fn script_sasl<'a>(ca: &'a str, mechanism: &'a str, user: &'a str, password: &'a str) -> [&'a str; 8] {
    ["--tls-ca", ca, "--sasl-mechanism", mechanism, "--sasl-user", user, "--sasl-password", password]
}

/// admin.py at `bootstrap` with `security` arguments, then `command`.
fn admin_as(bootstrap: &str, security: &[&str], command: &[&str]) -> Vec<Json> {
    let mut args = vec!["--bootstrap", bootstrap];
    args.extend_from_slice(security);
    args.extend_from_slice(command);
    script("admin.py", &args, b"")
}

/// Waits (at most 20 s) until kcat logs in at `bootstrap` with `settings`.
fn wait_for_login(bootstrap: &str, settings: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kcat_reaches(bootstrap, settings) {
        assert!(Instant::now() < deadline, "no login at {bootstrap} with {settings:?} within 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The failed SASL logins a node counted.
fn failed_logins(metrics: &str) -> u64 {
    let scrape = sluice_tests::node_client::scrape_metrics(metrics.parse().unwrap());
    sluice_tests::node_client::metric_value(&scrape, "sluice_sasl_authentications_total{result=\"failed\"}")
        .expect("the SASL failure counter")
}

/// A SASL_SSL listener with real clients: the bootstrap user (SLUICE_BOOTSTRAP_USER,
/// SCRAM-SHA-512) logs in with kcat and creates a SCRAM-SHA-256 user through
/// confluent-kafka's AdminClient (AlterUserScramCredentials, which refuses too few
/// iterations and deleting a credential that does not exist with Kafka's errors, and
/// DescribeUserScramCredentials lists both). That user produces and consumes with kcat and
/// confluent-kafka (SCRAM-SHA-256) and kafka-python (PLAIN); a wrong password, an unknown
/// user, a mechanism the user has no credential for and a client without SASL are
/// refused, and the failures counted. After a restart the users still log in; a deleted
/// user no longer does.
#[test]
fn kafka_clients_log_in_with_scram_or_plain_over_sasl_ssl_and_users_survive_a_restart() {
    const TOPIC: &str = "over-sasl";
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pki = Pki::new(&dir.path().join("pki"));
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("node", "ca");
    let kafka = sluice_tests::node_client::free_loopback_addr().to_string();
    let metrics = sluice_tests::node_client::free_loopback_addr().to_string();
    let listen = format!("SASL_SSL://{kafka}");
    let args = ["--kafka-listen", &listen, "--tls-cert", &cert, "--tls-key", &key, "--metrics-listen", &metrics];
    let bootstrap_user = [("SLUICE_BOOTSTRAP_USER", "admin:admin-secret:SCRAM-SHA-512")];
    let mut node = NodeProcess::start_with_env(&dir.path().join("data"), SHARDS, &args, &bootstrap_user);
    wait_for_login(&kafka, &kcat_sasl(&ca, "SCRAM-SHA-512", "admin", "admin-secret"));

    let as_admin = script_sasl(&ca, "SCRAM-SHA-512", "admin", "admin-secret");
    let set = admin_as(&kafka, &as_admin, &["set-user", "reader", "SCRAM-SHA-256", "reader-secret"]);
    assert_eq!(set[0].get("error"), Some(&Json::Null), "{set:?}");
    let weak = admin_as(&kafka, &as_admin, &["set-user", "weak", "SCRAM-SHA-256", "pw", "100"]);
    assert_eq!(weak[0].get("error").and_then(Json::as_str), Some("UNACCEPTABLE_CREDENTIAL"), "{weak:?}");
    let missing = admin_as(&kafka, &as_admin, &["delete-user", "nobody", "SCRAM-SHA-256"]);
    assert_eq!(missing[0].get("error").and_then(Json::as_str), Some("RESOURCE_NOT_FOUND"), "{missing:?}");
    let users: Vec<(String, Vec<(String, i64)>)> = admin_as(&kafka, &as_admin, &["users"])
        .iter()
        .map(|u| {
            let credentials = u.get("credentials").and_then(Json::as_array).expect("credentials");
            let credentials = credentials
                .iter()
                .map(|c| match c.as_array() {
                    Some([m, i]) => (m.as_str().expect("a mechanism").to_string(), i.as_i64().expect("iterations")),
                    _ => panic!("a credential is [mechanism, iterations]: {c:?}"),
                })
                .collect();
            (u.get("user").and_then(Json::as_str).expect("a user").to_string(), credentials)
        })
        .collect();
    let want = [("admin", "SCRAM-SHA-512"), ("reader", "SCRAM-SHA-256")]
        .map(|(user, mechanism)| (user.to_string(), vec![(mechanism.to_string(), 4096)]));
    assert_eq!(users, want, "DescribeUserScramCredentials lists both users");

    create_topic(&node, TOPIC, 2);
    let reader = kcat_sasl(&ca, "SCRAM-SHA-256", "reader", "reader-secret");
    kcat_over_tls(&["-b", &kafka, "-P", "-t", TOPIC, "-K", ":"], &reader, b"a:1\nb:2\n");
    let consume = ["-b", &kafka, "-C", "-t", TOPIC, "-o", "beginning", "-e", "-f", "%k:%s\n"];
    let mut read: Vec<String> = kcat_over_tls(&consume, &reader, b"").stdout.lines().map(String::from).collect();
    read.sort();
    assert_eq!(read, ["a:1", "b:2"], "kcat logged in with SCRAM-SHA-256 reads what it produced");
    for (client, mechanism) in [("confluent", "SCRAM-SHA-256"), ("kafka-python", "PLAIN")] {
        let topic = format!("{TOPIC}-{client}");
        create_topic(&node, &topic, 2);
        let security = script_sasl(&ca, mechanism, "reader", "reader-secret");
        let specs: Vec<Spec> = (0..20).map(|i| varied_for_every_client(i, (i % 2) as u32)).collect();
        let stored = produce_through(&kafka, &security, client, &topic, &specs);
        let mut expected: Vec<Record> = specs.iter().zip(&stored).map(|(s, &at)| s.stored_at(at)).collect();
        expected.sort();
        let mut consumed = consume_through(&kafka, &security, client, &topic, specs.len());
        consumed.sort();
        assert_eq!(consumed, expected, "{client} logged in with {mechanism} reads what it produced");
    }

    let before = failed_logins(&metrics);
    let refused = [
        kcat_sasl(&ca, "SCRAM-SHA-256", "reader", "wrong"),
        kcat_sasl(&ca, "SCRAM-SHA-256", "nobody", "reader-secret"),
        kcat_sasl(&ca, "SCRAM-SHA-512", "reader", "reader-secret"),
        kcat_sasl(&ca, "PLAIN", "reader", "wrong"),
    ];
    for settings in &refused {
        assert!(!kcat_reaches(&kafka, settings), "refused: {settings:?}");
    }
    assert!(!kcat_reaches(&kafka, &kcat_tls(&ca, None)), "TLS without a login is refused");
    let after = failed_logins(&metrics);
    assert!(after >= before + 4, "the refused logins are counted ({before} -> {after})");

    node.sigterm_and_wait();
    node.restart();
    wait_for_login(&kafka, &reader);
    let gone = admin_as(&kafka, &as_admin, &["delete-user", "reader", "SCRAM-SHA-256"]);
    assert_eq!(gone[0].get("error"), Some(&Json::Null), "{gone:?}");
    assert!(!kcat_reaches(&kafka, &reader), "a deleted user no longer logs in");
    assert!(kcat_reaches(&kafka, &kcat_sasl(&ca, "SCRAM-SHA-512", "admin", "admin-secret")));
}

// ACLs ---------------------------------------------------------------------------------------

/// kcat's settings for SASL_PLAINTEXT as `user` with SCRAM-SHA-256.
fn kcat_login(user: &str, password: &str) -> Vec<String> {
    [
        "security.protocol=sasl_plaintext".to_string(),
        "sasl.mechanism=SCRAM-SHA-256".to_string(),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
    ]
    .into_iter()
    .flat_map(|setting| ["-X".to_string(), setting])
    .collect()
}

/// What kcat prints consuming `topic` from the beginning as `settings`' user: its records
/// (`key:value` lines), or its error.
fn kcat_read(kafka: &str, topic: &str, settings: &[String]) -> Result<Vec<String>, String> {
    require("kcat");
    let mut command = Command::new("kcat");
    command.args(["-b", kafka, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k:%s\n"]).args(settings);
    let run = run_command(command, b"", TOOL_TIMEOUT);
    if run.code == Some(0) && !run.stderr.contains("ERROR") {
        Ok(run.stdout.lines().map(String::from).collect())
    } else {
        Err(run.stderr)
    }
}

/// Whether kcat could produce `line` to `topic` as `settings`' user.
fn kcat_write(kafka: &str, topic: &str, settings: &[String], line: &str) -> Result<(), String> {
    require("kcat");
    let mut command = Command::new("kcat");
    command.args(["-b", kafka, "-P", "-t", topic, "-K", ":"]).args(settings);
    let run = run_command(command, format!("{line}\n").as_bytes(), TOOL_TIMEOUT);
    if run.code == Some(0) && !run.stderr.contains("failed") {
        Ok(())
    } else {
        Err(run.stderr)
    }
}

/// `--authorizer acl` with real clients: a super user (from `--super-users`) creates users,
/// topics and ACLs through confluent-kafka's AdminClient (CreateAcls, DescribeAcls,
/// DeleteAcls). A writer with WRITE on the prefix `public-` produces there and is refused
/// elsewhere; a reader with READ on `public-` and on its group consumes `public-a` with
/// kcat and in a confluent-kafka group, is refused `secret` (no ACL) and `public-b` (a
/// DENY beats the prefixed ALLOW), does not see either in its topic listing, and may not
/// create users or topics. Denials are counted. After a restart the ACLs hold as before;
/// deleting the DENY lets the reader read `public-b`.
#[test]
fn acls_decide_what_each_principal_may_do_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let kafka = sluice_tests::node_client::free_loopback_addr().to_string();
    let metrics = sluice_tests::node_client::free_loopback_addr().to_string();
    let listen = format!("SASL_PLAINTEXT://{kafka}");
    let args =
        ["--kafka-listen", &listen, "--authorizer", "acl", "--super-users", "User:admin", "--metrics-listen", &metrics];
    let bootstrap_user = [("SLUICE_BOOTSTRAP_USER", "admin:admin-secret")];
    let mut node = NodeProcess::start_with_env(&dir.path().join("data"), SHARDS, &args, &bootstrap_user);
    let admin = kcat_login("admin", "admin-secret");
    wait_for_login(&kafka, &admin);
    let as_admin = ["--sasl-mechanism", "SCRAM-SHA-256", "--sasl-user", "admin", "--sasl-password", "admin-secret"];
    let as_reader = ["--sasl-mechanism", "SCRAM-SHA-256", "--sasl-user", "reader", "--sasl-password", "reader-pw"];
    let ok = |lines: Vec<Json>| {
        assert!(lines.iter().all(|l| l.get("error") == Some(&Json::Null)), "{lines:?}");
    };
    for (user, password) in [("reader", "reader-pw"), ("writer", "writer-pw")] {
        ok(admin_as(&kafka, &as_admin, &["set-user", user, "SCRAM-SHA-256", password]));
    }
    for topic in ["public-a", "public-b", "secret"] {
        ok(admin_as(&kafka, &as_admin, &["create", topic, "1"]));
    }
    for acl in [
        ["TOPIC", "public-", "PREFIXED", "User:writer", "WRITE", "ALLOW"],
        ["TOPIC", "public-", "PREFIXED", "User:reader", "READ", "ALLOW"],
        ["TOPIC", "public-b", "LITERAL", "User:reader", "ALL", "DENY"],
        ["GROUP", "readers", "LITERAL", "User:reader", "READ", "ALLOW"],
    ] {
        let mut command = vec!["acl-add"];
        command.extend(acl);
        ok(admin_as(&kafka, &as_admin, &command));
    }
    let listed = admin_as(&kafka, &as_admin, &["acls"]);
    assert_eq!(listed.len(), 4, "DescribeAcls lists the four: {listed:?}");

    let writer = kcat_login("writer", "writer-pw");
    let reader = kcat_login("reader", "reader-pw");
    kcat_write(&kafka, "public-a", &writer, "a:1").expect("WRITE by prefix");
    kcat_write(&kafka, "public-b", &writer, "b:1").expect("WRITE by prefix");
    let refused = kcat_write(&kafka, "secret", &writer, "s:1").expect_err("no ACL for secret");
    assert!(refused.contains("Topic authorization failed"), "{refused}");
    kcat_write(&kafka, "secret", &admin, "s:1").expect("a super user");
    kcat_write(&kafka, "public-a", &reader, "r:1").expect_err("READ is not WRITE");

    let check_reader = |node: &NodeProcess| {
        assert_eq!(kcat_read(&kafka, "public-a", &reader), Ok(vec!["a:1".to_string()]), "READ by prefix");
        for denied in ["public-b", "secret"] {
            let e = kcat_read(&kafka, denied, &reader).expect_err(denied);
            assert!(e.contains("Topic authorization failed"), "{denied}: {e}");
        }
        let topics: Vec<String> = admin_as(&kafka, &as_reader, &["topics"])
            .iter()
            .filter_map(|t| t.get("topic").and_then(Json::as_str).map(String::from))
            .filter(|t| !t.starts_with("__"))
            .collect();
        assert_eq!(topics, ["public-a"], "the reader's Metadata shows only what it may describe\n{}", node.log_tail());
    };
    check_reader(&node);
    let group =
        consume_through(&kafka, &[&as_reader[..], &["--group", "readers"]].concat(), "confluent", "public-a", 1);
    assert_eq!(group.len(), 1, "the reader's group consumer reads public-a");
    let denied_user = admin_as(&kafka, &as_reader, &["set-user", "mallory", "SCRAM-SHA-256", "pw"]);
    assert_eq!(denied_user[0].get("error").and_then(Json::as_str), Some("CLUSTER_AUTHORIZATION_FAILED"));
    let denied_topic = admin_as(&kafka, &as_reader, &["create", "public-new", "1"]);
    assert_eq!(denied_topic[0].get("error").and_then(Json::as_str), Some("TOPIC_AUTHORIZATION_FAILED"));
    let scrape = sluice_tests::node_client::scrape_metrics(metrics.parse().unwrap());
    let denials = sluice_tests::node_client::metric_value(&scrape, "sluice_authorization_denied_total").unwrap();
    assert!(denials >= 5, "denials are counted: {denials}");
    assert!(node.log().contains("denied by the ACLs"), "denials are logged");

    node.sigterm_and_wait();
    node.restart();
    wait_for_login(&kafka, &reader);
    check_reader(&node);
    let deleted =
        admin_as(&kafka, &as_admin, &["acl-delete", "TOPIC", "public-b", "LITERAL", "User:reader", "ALL", "DENY"]);
    assert_eq!(deleted[0].get("deleted").and_then(Json::as_i64), Some(1), "{deleted:?}");
    assert_eq!(kcat_read(&kafka, "public-b", &reader), Ok(vec!["b:1".to_string()]), "the DENY is gone");
}

/// Mutual TLS names the principal: a client certificate's subject is its principal as
/// Kafka's default principal builder makes it (`User:CN=reader`), so ACLs apply to it: a
/// super user by certificate creates a topic and an ACL through confluent-kafka's
/// AdminClient, the certificate the ACL names reads the topic with kcat, and another
/// certificate from the same CA gets TOPIC_AUTHORIZATION_FAILED. Then a node with Kafka's
/// `ssl.principal.mapping.rules` (the common name, upper-cased) does the same for the
/// principals the rule makes (`User:ADMIN`, `User:READER`).
#[test]
fn a_client_certificates_subject_is_its_principal_for_the_acls() {
    const TOPIC: &str = "by-certificate";
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pki = Pki::new(&dir.path().join("pki"));
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("node", "ca");
    let client_ca = pki.ca("client-ca");
    let admin = pki.leaf("admin", "client-ca");
    let reader = pki.leaf("reader", "client-ca");
    let stranger = pki.leaf("stranger", "client-ca");
    let tls_args = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &client_ca,
        "--authorizer",
        "acl",
        "--super-users",
        "User:CN=admin",
    ];
    let (_node, kafka) = start_tls_node(dir.path(), &tls_args);
    let as_admin = ["--tls-ca", ca.as_str(), "--tls-cert", admin.0.as_str(), "--tls-key", admin.1.as_str()];
    let created = admin_as(&kafka, &as_admin, &["create", TOPIC, "1"]);
    assert_eq!(created[0].get("error"), Some(&Json::Null), "{created:?}");
    let acl = admin_as(&kafka, &as_admin, &["acl-add", "TOPIC", TOPIC, "LITERAL", "User:CN=reader", "READ", "ALLOW"]);
    assert_eq!(acl[0].get("error"), Some(&Json::Null), "{acl:?}");
    kcat_over_tls(&["-b", &kafka, "-P", "-t", TOPIC, "-K", ":"], &kcat_tls(&ca, Some(&admin)), b"k:v\n");
    assert_eq!(kcat_read(&kafka, TOPIC, &kcat_tls(&ca, Some(&reader))), Ok(vec!["k:v".to_string()]));
    let refused = kcat_read(&kafka, TOPIC, &kcat_tls(&ca, Some(&stranger))).expect_err("no ACL for CN=stranger");
    assert!(refused.contains("Topic authorization failed"), "{refused}");

    let mapped_dir = dir.path().join("mapped");
    std::fs::create_dir_all(&mapped_dir).unwrap();
    let mut mapped_args = tls_args.to_vec();
    let last = mapped_args.len() - 1;
    mapped_args[last] = "User:ADMIN";
    mapped_args.extend(["--ssl-principal-mapping-rules", "RULE:^CN=([^,]*)$/$1/U,DEFAULT"]);
    let (_mapped, kafka) = start_tls_node(&mapped_dir, &mapped_args);
    let created = admin_as(&kafka, &as_admin, &["create", TOPIC, "1"]);
    assert_eq!(created[0].get("error"), Some(&Json::Null), "User:ADMIN is the super user: {created:?}");
    let acl = admin_as(&kafka, &as_admin, &["acl-add", "TOPIC", TOPIC, "LITERAL", "User:READER", "READ", "ALLOW"]);
    assert_eq!(acl[0].get("error"), Some(&Json::Null), "{acl:?}");
    kcat_over_tls(&["-b", &kafka, "-P", "-t", TOPIC, "-K", ":"], &kcat_tls(&ca, Some(&admin)), b"k:v\n");
    assert_eq!(kcat_read(&kafka, TOPIC, &kcat_tls(&ca, Some(&reader))), Ok(vec!["k:v".to_string()]));
    let refused = kcat_read(&kafka, TOPIC, &kcat_tls(&ca, Some(&stranger))).expect_err("no ACL for STRANGER");
    assert!(refused.contains("Topic authorization failed"), "{refused}");
}

/// `--metrics-listen https://`: the Prometheus endpoint over TLS with the node's
/// certificate; a scraper trusting the test's CA reads the metrics, a plain-HTTP scrape
/// gets none.
#[test]
fn the_metrics_endpoint_serves_over_tls() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let pki = Pki::new(&dir.path().join("pki"));
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("node", "ca");
    let metrics = sluice_tests::node_client::free_loopback_addr();
    let listen = format!("https://{metrics}");
    let _node = NodeProcess::start(
        &dir.path().join("data"),
        SHARDS,
        &["--metrics-listen", &listen, "--tls-cert", &cert, "--tls-key", &key],
    );
    let scrape = |url: &str| {
        let mut python = Command::new("python3");
        python.args([
            "-c",
            "import ssl, sys, urllib.request\n\
             context = ssl.create_default_context(cafile=sys.argv[2])\n\
             print(urllib.request.urlopen(sys.argv[1], context=context, timeout=10).read().decode())",
            url,
            &ca,
        ]);
        run_command(python, b"", TOOL_TIMEOUT)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let served = loop {
        let run = scrape(&format!("https://{metrics}/metrics"));
        if run.code == Some(0) || Instant::now() > deadline {
            break run;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(served.stdout.contains("sluice_connections"), "metrics over TLS: {served:?}");
    let plain = scrape(&format!("http://{metrics}/metrics"));
    assert!(plain.code != Some(0) && !plain.stdout.contains("sluice_connections"), "plain HTTP: {plain:?}");
}
