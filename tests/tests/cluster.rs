//! Process tests of a cluster: three `sluice-node` processes on loopback ports, each its
//! own controller voter, replicating topics with replication factor 3. The tests talk to
//! them through `sluice-client` only (the producer and admin client follow leaders as an
//! application's would), kill -9, restart, SIGSTOP and SIGCONT them by their process ids,
//! and at the end stop every node and open each replica's log files directly to compare
//! them.
//!
//! Every wait is bounded (`WAIT`, and `NodeProcess`'s own deadlines); every node is
//! stopped by its pid when a test ends (`NodeProcess` kills and reaps it, and prints its
//! log when the test failed). No test asserts how fast anything is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::connection::Connection;
use sluice_client::consumer::{ConsumerConfig, OffsetReset};
use sluice_client::group::{GroupConfig, GroupConsumer};
use sluice_client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use sluice_client::protocol::{self, PartitionInfo};
use sluice_client::{Admin, NewTopic};
use sluice_node::storage::{LogConfig, PartitionLog};
use sluice_schemas::batch::BatchWalker;
use sluice_tests::faults::{Link, LoopFs};
use sluice_tests::node_client::{free_loopback_addr, NodeProcess};
use sluice_tests::streaming::Streaming;
use sluice_tests::Rng;
use tempfile::TempDir;

const NODES: usize = 3;
const SHARDS: usize = 2;
/// The longest a test waits for one thing (a leader, a full ISR, a flush).
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
/// Fast failure detection, so ten failovers fit in a test.
const NODE_FLAGS: &[&str] = &["--session-timeout-ms", "1000", "--replica-lag-time-max-ms", "3000"];

/// A cluster of `NODES` node processes (each a voter), data under one temporary directory
/// (or, for the chaos test, each node's on its own small file system).
struct Cluster {
    // Fields drop in order: the nodes (printing their logs if the test failed) before
    // the links they dial through, the file systems they write and the directory
    // holding their logs.
    nodes: Vec<NodeProcess>,
    /// With `Faults`: `links[i][j]` carries node i+1's cluster traffic to node j+1.
    links: Vec<Vec<Option<Link>>>,
    /// With `Faults`: node i+1's data directory is `disks[i].mount`.
    disks: Vec<LoopFs>,
    /// Node i+1's cluster (replication) listener.
    cluster_addrs: Vec<SocketAddr>,
    dir: TempDir,
}

/// Whether a cluster is started so that the test can cut links and fill disks.
#[derive(Clone, Copy, PartialEq)]
enum Faults {
    Processes,
    /// Processes, and each node's cluster traffic to each other node through its own
    /// `Link`, and each node's data on its own `LoopFs`.
    ProcessesLinksAndDisks,
}

/// Each node's file system in the chaos test: room for what a long run writes.
const CHAOS_DISK_BYTES: u64 = 512 << 20;

impl Drop for Cluster {
    /// A failed test (or any, with `SLUICE_KEEP_LOGS` set) keeps every node's whole log
    /// (the nodes print only their last lines), before the temporary directories go.
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("SLUICE_KEEP_LOGS").is_none() {
            return;
        }
        // One directory per test (several run in one process).
        let test = std::thread::current().name().unwrap_or("cluster").replace("::", "-");
        let keep = std::env::temp_dir().join(format!("sluice-failed-cluster-{}-{test}", std::process::id()));
        if std::fs::create_dir_all(&keep).is_err() {
            return;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let _ = std::fs::write(keep.join(format!("node-{}.log", i + 1)), node.log());
        }
        eprintln!("the nodes' whole logs are kept in {}", keep.display());
    }
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(NODES, &[])
    }

    /// One node as a user starts it: no `--peer` (a cluster of one), with a Kafka listener.
    fn single() -> Cluster {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let args: Vec<&str> = ["--node-id", "1"].iter().chain(NODE_FLAGS).copied().collect();
        let node = NodeProcess::start_with_kafka(&Cluster::data_of(dir.path(), 1), SHARDS, &args);
        Cluster { nodes: vec![node], links: Vec::new(), disks: Vec::new(), cluster_addrs: Vec::new(), dir }
    }

    /// `count` nodes, each started with `extra` flags too.
    fn start_with(count: usize, extra: &[&str]) -> Cluster {
        Cluster::start_for(count, extra, Faults::Processes)
    }

    fn start_for(count: usize, extra: &[&str], faults: Faults) -> Cluster {
        Cluster::start_full(count, extra, faults, "PLAINTEXT", &[], &|_, _| Vec::new())
    }

    /// `count` nodes whose Kafka listeners use security `protocol` (SASL_PLAINTEXT, ...),
    /// each started with `extra` flags and `env` in its environment.
    /// `per_node(i)`: flags for node `i` (from 0) alone, after the others.
    fn start_full(
        count: usize,
        extra: &[&str],
        faults: Faults,
        protocol: &str,
        env: &[(&str, &str)],
        per_node: &dyn Fn(usize, SocketAddr) -> Vec<String>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let mut addresses: Vec<SocketAddr> = Vec::new();
        while addresses.len() < 3 * count {
            let a = free_loopback_addr();
            if !addresses.contains(&a) {
                addresses.push(a);
            }
        }
        let (native, rest) = addresses.split_at(count);
        let (cluster, kafka) = rest.split_at(count);
        let with_faults = faults == Faults::ProcessesLinksAndDisks;
        let links: Vec<Vec<Option<Link>>> = if with_faults {
            (0..count).map(|i| (0..count).map(|j| (i != j).then(|| Link::new(cluster[j]))).collect()).collect()
        } else {
            Vec::new()
        };
        let disks: Vec<LoopFs> =
            if with_faults { (0..count).map(|_| LoopFs::new(CHAOS_DISK_BYTES)).collect() } else { Vec::new() };
        let nodes = (0..count)
            .map(|i| {
                let id = (i + 1).to_string();
                let kafka_arg = format!("{protocol}://{}", kafka[i]);
                // A SASL protocol asks for logins on the native listener too.
                let native_arg = format!("--listen={protocol}://{}", native[i]);
                // Node i dials node j at j's cluster address, or through links[i][j].
                let peers: Vec<String> = (0..count)
                    .map(|j| {
                        let via = links.get(i).and_then(|l| l[j].as_ref()).map_or(cluster[j], Link::addr);
                        format!("--peer={}={},{},{}", j + 1, native[j], via, kafka[j])
                    })
                    .collect();
                let mut args: Vec<&str> = vec!["--node-id", &id, "--kafka-listen", &kafka_arg];
                args.extend(NODE_FLAGS);
                args.extend(extra);
                if protocol.starts_with("SASL") {
                    args.push(&native_arg);
                }
                let own = per_node(i, kafka[i]);
                args.extend(own.iter().map(String::as_str));
                args.extend(peers.iter().map(String::as_str));
                let data = disks.get(i).map_or_else(|| Cluster::data_of(dir.path(), i + 1), |d| d.mount.clone());
                NodeProcess::start_at_with_env(native[i], &data, SHARDS, &args, env)
            })
            .collect();
        Cluster { nodes, links, disks, cluster_addrs: cluster.to_vec(), dir }
    }

    /// Node `node`'s data directory.
    fn data_dir(&self, node: usize) -> PathBuf {
        self.disks.get(node - 1).map_or_else(|| Cluster::data_of(self.dir.path(), node), |d| d.mount.clone())
    }

    /// Cuts (or heals) node `node`'s cluster links: those it dials others through when
    /// `outbound`, and those others dial it through when `inbound`.
    fn set_links(&self, node: u32, outbound: bool, inbound: bool, cut: bool) {
        let n = node as usize - 1;
        for (i, from) in self.links.iter().enumerate() {
            for (j, link) in from.iter().enumerate() {
                let Some(link) = link else { continue };
                if (outbound && i == n) || (inbound && j == n) {
                    if cut {
                        link.cut();
                    } else {
                        link.heal();
                    }
                }
            }
        }
    }

    fn data_of(dir: &Path, node: usize) -> PathBuf {
        dir.join(format!("node-{node}"))
    }

    fn bootstrap(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr().to_string()).collect()
    }

    fn node(&mut self, id: u32) -> &mut NodeProcess {
        &mut self.nodes[id as usize - 1]
    }
}

/// Polls `check` until it returns `Some`, for at most `WAIT`.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
        tokio::time::sleep(POLL).await;
    }
}

async fn partitions(admin: &Admin, topic: &str) -> Option<Vec<PartitionInfo>> {
    admin.describe_topic(topic).await.ok()?.partitions.ok()
}

/// Creates `topic`, asking again until it exists: an attempt that timed out may have
/// created it, and the next one is then told TOPIC_ALREADY_EXISTS (36), which counts.
async fn create_topic(admin: &Admin, topic: &NewTopic) {
    wait_for(&format!("topic {} to be created", topic.name), || async {
        match admin.create_topic(topic.clone()).await {
            Ok(()) => Some(()),
            Err(e) if e.code() == Some(36) => Some(()),
            Err(_) => None,
        }
    })
    .await;
}

/// Waits until every partition of `topic` has a leader and all its replicas in sync.
async fn wait_for_full_isr(admin: &Admin, topic: &str) -> Vec<PartitionInfo> {
    wait_for(&format!("every partition of {topic} to have all its replicas in sync"), || async {
        let parts = partitions(admin, topic).await?;
        parts
            .iter()
            .all(|p| p.leader.is_some() && !p.isr.is_empty() && p.isr.len() == p.replicas.len())
            .then_some(parts)
    })
    .await
}

async fn leader_of(admin: &Admin, topic: &str, partition: u32) -> u32 {
    wait_for(&format!("a leader of {topic}-{partition}"), || async {
        partitions(admin, topic).await?.get(partition as usize)?.leader
    })
    .await
}

/// The high watermark of a partition, from its leader (ListOffsets latest); waits while
/// a leader just elected has not confirmed its high watermark yet (LEADER_NOT_AVAILABLE).
async fn high_watermark(cluster: &Cluster, admin: &Admin, topic: &str, partition: u32) -> u64 {
    // The last answer, named in the failure: which leader, and what it said.
    let last = std::cell::RefCell::new(String::from("no answer yet"));
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let leader = leader_of(admin, topic, partition).await;
            let address = cluster.nodes[leader as usize - 1].addr().to_string();
            let answer = match Connection::connect(
                &address,
                "cluster-test",
                1,
                Duration::from_secs(10),
                &sluice_client::Security::default(),
            )
            .await
            {
                Ok(conn) => protocol::list_offsets(&conn, &[(topic.to_string(), partition, protocol::LATEST)])
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|a| {
                        a.first()
                            .map(|o| o.2.clone().map_err(|e| e.to_string()))
                            .unwrap_or(Err("no partition in the answer".into()))
                    }),
                Err(e) => Err(format!("connecting: {e}")),
            };
            match answer {
                Ok(Some(offset)) => return offset,
                Ok(None) => *last.borrow_mut() = format!("leader node {leader} at {address}: no offset"),
                Err(e) => *last.borrow_mut() = format!("leader node {leader} at {address}: {e}"),
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!("waited {WAIT:?} for the high watermark of {topic}-{partition}; last: {}", last.borrow())
    })
}

/// Every batch of a stopped node's replica below `end`, from its log start: (base
/// offset, bytes).
fn stored_batches(dir: &Path, end: u64) -> Vec<(u64, Vec<u8>)> {
    let dir = dir.to_path_buf();
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(2 << 20)
        .make()
        .expect("glommio executor (is ulimit -l at least 512 KiB?)");
    executor.run(async move {
        let (log, _) = PartitionLog::open(&dir, LogConfig::default())
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()));
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset.0 < end {
            assert!(offset < log.log_end_offset(), "{} ends at {} below {end}", dir.display(), log.log_end_offset());
            let bytes = log.read(offset, 1 << 20).await.unwrap().to_vec();
            for item in BatchWalker::new(&bytes) {
                let (_, header, batch) = item.unwrap();
                if header.base_offset().0 >= end {
                    break;
                }
                out.push((header.base_offset().0, batch.to_vec()));
                offset = header.next_offset();
            }
        }
        log.close().await.unwrap();
        out
    })
}

/// (offset, value) of every record in `batches`.
fn records_of(batches: &[(u64, Vec<u8>)]) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (_, batch) in batches {
        sluice_schemas::compression::with_records(batch, 64 << 20, |records| {
            for r in records {
                let r = r.unwrap();
                out.insert(r.offset.0, r.value.map(<[u8]>::to_vec).unwrap_or_default());
            }
        })
        .unwrap();
    }
    out
}

/// What the producer task saw acknowledged: (partition, offset) -> value.
type Acked = Arc<Mutex<BTreeMap<(u32, u64), Vec<u8>>>>;

/// Produces numbered records with acks=all round-robin over `partitions` until `stop`,
/// in rounds of `ROUND` records, recording every acknowledged one.
async fn produce_until(producer: Producer, topic: String, partitions: u32, stop: Arc<AtomicBool>, acked: Acked) {
    const ROUND: u64 = 50;
    let mut next = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let mut deliveries = Vec::new();
        for _ in 0..ROUND {
            let value = format!("record-{next}").into_bytes();
            let record = ProducerRecord {
                topic: topic.clone(),
                partition: Some((next % u64::from(partitions)) as u32),
                value: Some(value.clone()),
                ..ProducerRecord::default()
            };
            next += 1;
            if let Ok(delivery) = producer.send(record).await {
                deliveries.push((value, delivery));
            }
        }
        for (value, delivery) in deliveries {
            if let Ok(Ok(meta)) = tokio::time::timeout(WAIT, delivery).await {
                let offset = meta.offset.expect("acks=all reports offsets");
                let previous = acked.lock().unwrap().insert((meta.partition, offset), value);
                assert!(previous.is_none(), "two records acknowledged at {}-{offset}", meta.partition);
            }
        }
    }
}

/// The acceptance test of replication: a 3-node cluster, a topic with replication factor 3
/// and min.insync.replicas=2, producers with acks=all while the leader of partition 0 is
/// killed with kill -9 ten times (restarted each time) and then a node is frozen with
/// SIGSTOP and let go with SIGCONT. Afterwards every acknowledged record is at its
/// acknowledged offset in every replica, the replicas are byte for byte identical below
/// the high watermark, and no record is stored twice (the producer is idempotent, as by
/// default with acks=all, and a new leader recognises a retried batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_leader_kills_and_a_frozen_node_on_every_replica() {
    const TOPIC: &str = "acked";
    const PARTITIONS: u32 = 2;
    let mut cluster = Cluster::start();
    let bootstrap = cluster.bootstrap();
    // Short request timeouts: a frozen node must not hold the test's metadata requests.
    let admin = Admin::connect_with_timeout(&bootstrap, Duration::from_secs(2)).await.unwrap();
    let configs = vec![("min.insync.replicas".to_string(), "2".to_string())];
    let topic = NewTopic { name: TOPIC.into(), partitions: PARTITIONS, replication_factor: 3, configs };
    create_topic(&admin, &topic).await;
    wait_for_full_isr(&admin, TOPIC).await;

    let config = ProducerConfig {
        bootstrap_servers: bootstrap.clone(),
        acks: Acks::All,
        linger_ms: 2,
        retries: u32::MAX,
        retry_backoff_ms: 50,
        delivery_timeout_ms: 30_000,
        request_timeout_ms: 5_000,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(config).await.unwrap();
    let (stop, acked): (Arc<AtomicBool>, Acked) = (Arc::default(), Arc::default());
    let task = tokio::spawn(produce_until(producer.clone(), TOPIC.into(), PARTITIONS, stop.clone(), acked.clone()));

    let mut kills = 0;
    while kills < 10 {
        let before = acked.lock().unwrap().len();
        wait_for("records acknowledged before the next kill", || async {
            (acked.lock().unwrap().len() >= before + 100).then_some(())
        })
        .await;
        let leader = leader_of(&admin, TOPIC, 0).await;
        let started = Instant::now();
        cluster.node(leader).kill9_and_wait();
        kills += 1;
        // The controller fences it after the session timeout and elects another leader.
        wait_for("a new leader of partition 0", || async {
            let now = partitions(&admin, TOPIC).await?.first()?.leader?;
            (now != leader).then_some(())
        })
        .await;
        let failover = started.elapsed();
        cluster.node(leader).restart();
        wait_for_full_isr(&admin, TOPIC).await;
        eprintln!(
            "kill {kills}: node {leader} killed; new leader after {failover:?}, back in sync after {:?}; {} records acknowledged",
            started.elapsed(),
            acked.lock().unwrap().len()
        );
    }
    // Freeze the leader of partition 1: it loses its session and leadership while it
    // still believes it leads; once thawed it must follow and match the new leader.
    let frozen = leader_of(&admin, TOPIC, 1).await;
    cluster.node(frozen).pause();
    wait_for("a new leader of partition 1 while the old one is frozen", || async {
        let now = partitions(&admin, TOPIC).await?.get(1)?.leader?;
        (now != frozen).then_some(())
    })
    .await;
    let before = acked.lock().unwrap().len();
    wait_for("records acknowledged while a node is frozen", || async {
        (acked.lock().unwrap().len() >= before + 100).then_some(())
    })
    .await;
    cluster.node(frozen).resume();
    wait_for_full_isr(&admin, TOPIC).await;

    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(WAIT, task).await.expect("the producer task stops").unwrap();
    producer.close().await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1_100, "only {} records were acknowledged", acked.len());

    // Every replica has everything below the high watermark once the ISR is full.
    wait_for_full_isr(&admin, TOPIC).await;
    let mut high_watermarks = Vec::new();
    for p in 0..PARTITIONS {
        high_watermarks.push(high_watermark(&cluster, &admin, TOPIC, p).await);
    }
    for node in &mut cluster.nodes {
        node.sigterm_and_wait();
    }
    let mut seen: BTreeMap<Vec<u8>, (u32, u64)> = BTreeMap::new();
    for p in 0..PARTITIONS {
        let hw = high_watermarks[p as usize];
        let replicas: Vec<Vec<(u64, Vec<u8>)>> = (1..=NODES)
            .map(|n| stored_batches(&Cluster::data_of(cluster.dir.path(), n).join(format!("{TOPIC}-{p}")), hw))
            .collect();
        for (n, replica) in replicas.iter().enumerate().skip(1) {
            assert!(
                replica == &replicas[0],
                "node {}'s {TOPIC}-{p} differs from node 1's below the high watermark {hw}",
                n + 1
            );
        }
        let stored = records_of(&replicas[0]);
        for ((partition, offset), value) in acked.iter().filter(|((partition, _), _)| *partition == p) {
            assert_eq!(
                stored.get(offset),
                Some(value),
                "the record acknowledged at {TOPIC}-{partition}@{offset} is not there (high watermark {hw})"
            );
        }
        assert_stored_once(&mut seen, p, &stored);
    }
    eprintln!("{} records stored, each once; {} acknowledged", seen.len(), acked.len());
}

/// A child process the test reads JSON lines from as it runs; killed by its pid if the
/// test ends before it does.
/// What an idempotent.py producer printed as acknowledged.
///
/// librdkafka acknowledges some records without an offset: when a request got no answer
/// (a node killed or cut off) and a later batch of the same partition is acknowledged,
/// the earlier batches must have been stored (a leader takes a producer's sequence
/// numbers only in order), and it reports them delivered with none, its "implicit ack".
/// Those are checked by value: stored in their partition, once.
struct Acknowledged {
    /// (partition, offset) -> value.
    at: BTreeMap<(u32, u64), String>,
    /// (partition, value) of the records acknowledged without an offset.
    without_offset: Vec<(u32, String)>,
}

impl Acknowledged {
    fn len(&self) -> usize {
        self.at.len() + self.without_offset.len()
    }

    fn values(&self) -> impl Iterator<Item = &String> {
        self.at.values().chain(self.without_offset.iter().map(|(_, value)| value))
    }

    /// Fails unless every record acknowledged in `topic`-`p` is in `stored`, the records
    /// of that partition: at its offset, or anywhere when it came without one.
    fn assert_stored(&self, topic: &str, p: u32, stored: &BTreeMap<u64, Vec<u8>>, context: &str) {
        for ((_, offset), value) in self.at.range((p, 0)..=(p, u64::MAX)) {
            assert_eq!(
                stored.get(offset).map(|v| String::from_utf8_lossy(v).into_owned()).as_deref(),
                Some(value.as_str()),
                "the record acknowledged at {topic}-{p}@{offset} is not there ({context})"
            );
        }
        let values: std::collections::BTreeSet<&[u8]> = stored.values().map(Vec::as_slice).collect();
        for (_, value) in self.without_offset.iter().filter(|(partition, _)| *partition == p) {
            assert!(
                values.contains(value.as_bytes()),
                "{value}, acknowledged without an offset in {topic}-{p}, is not there ({context})"
            );
        }
    }
}

/// The checker's reading of a producer's lines: a delivery librdkafka reported without
/// an offset (a long chaos run met one; its `null` offset failed the run's checker) is
/// checked by value, in its partition.
#[test]
fn records_acknowledged_without_an_offset_are_checked_by_value() {
    let lines: Vec<sluice_tests::json::Json> = [
        r#"{"partition": 0, "offset": 0, "value": "value-0"}"#,
        r#"{"partition": 1, "offset": null, "value": "value-1"}"#,
        r#"{"error": "timed out", "code": "_MSG_TIMED_OUT", "fatal": false, "delivery": false}"#,
    ]
    .iter()
    .map(|l| sluice_tests::json::Json::parse(l).unwrap())
    .collect();
    let acked = acknowledged(&lines);
    assert_eq!(acked.len(), 2);
    assert_eq!(acked.without_offset, [(1, "value-1".to_string())]);
    let stored = |value: &str| BTreeMap::from([(7, value.as_bytes().to_vec())]);
    acked.assert_stored("t", 1, &stored("value-1"), "anywhere in its partition");
    let missing = std::panic::catch_unwind(|| acked.assert_stored("t", 1, &stored("value-2"), "missing"));
    assert!(missing.is_err(), "a value acknowledged without an offset and not stored fails the check");
    let moved = std::panic::catch_unwind(|| acked.assert_stored("t", 0, &stored("value-0"), "at offset 7"));
    assert!(moved.is_err(), "a value acknowledged at offset 0 and stored at 7 fails the check");
}

fn acknowledged(lines: &[sluice_tests::json::Json]) -> Acknowledged {
    use sluice_tests::json::Json;
    let mut acked = Acknowledged { at: BTreeMap::new(), without_offset: Vec::new() };
    for l in lines.iter().filter(|l| l.get("offset").is_some()) {
        let partition = u32::try_from(l.get("partition").and_then(Json::as_i64).unwrap()).unwrap();
        let value = l.get("value").and_then(Json::as_str).unwrap().to_string();
        match l.get("offset").and_then(Json::as_i64) {
            Some(offset) => {
                let offset = u64::try_from(offset).unwrap();
                let first = acked.at.insert((partition, offset), value);
                assert!(first.is_none(), "two acknowledgements at {partition}-{offset}");
            }
            None => acked.without_offset.push((partition, value)),
        }
    }
    acked
}

/// Fails when a value of `records` (partition `p`) was already seen, here or in another
/// partition; records where each value is.
fn assert_stored_once(seen: &mut BTreeMap<Vec<u8>, (u32, u64)>, p: u32, records: &BTreeMap<u64, Vec<u8>>) {
    for (offset, value) in records {
        if let Some(first) = seen.insert(value.clone(), (p, *offset)) {
            panic!("{} is stored twice: at {}-{} and {p}-{offset}", String::from_utf8_lossy(value), first.0, first.1);
        }
    }
}

/// Exactly once for an idempotent Kafka producer through failovers: confluent-kafka
/// (librdkafka) with `enable.idempotence` and acks=all produces numbered values to a
/// topic with replication factor 3 while the leaders of its partitions are killed with
/// kill -9 ten times, each restarted (so leadership also comes back to it). Producer
/// state is part of the log, so whichever replica leads answers a retried batch with
/// its stored offsets: every acknowledged value is at its offset, no value is stored
/// twice, and the producer saw no error beyond refused connections to killed nodes.
#[test]
fn an_idempotent_kafka_producer_stores_every_record_once_through_leader_kills() {
    idempotent_producer_through_kills(Cluster::start(), true);
}

/// The same with a failing disk instead of kills (issue 19: storage faults through the
/// replication glue of `cluster/host.rs`): node 3 runs with `--storage-faults`, so its
/// partition logs fail about one write in 33 and one sync in 33 with EIO. Each failure
/// poisons that log; the node reopens it within a second (backing off while it keeps
/// failing) and rebuilds its replica from what it holds, whether it leads or follows. Every acknowledged value is stored once
/// at its offset, and the producer sees no error beyond refused connections.
#[test]
fn an_idempotent_kafka_producer_stores_every_record_once_while_a_nodes_disk_fails() {
    let faults = |i: usize, _| {
        if i == 2 {
            vec!["--storage-faults".to_string(), "seed=19,write-eio=30,sync-eio=30".to_string()]
        } else {
            Vec::new()
        }
    };
    let cluster = Cluster::start_full(NODES, &[], Faults::Processes, "PLAINTEXT", &[], &faults);
    let cluster = idempotent_producer_through_kills(cluster, false);
    let log = cluster.nodes[2].log();
    let reopened = log.matches("reopened a log that had failed").count();
    eprintln!("node 3 reopened {reopened} failed logs");
    assert!(reopened > 0, "no injected fault made node 3 reopen a log: the test tried nothing");
}

/// The same on one node (no `--peer`) killed with kill -9 and restarted ten times: a
/// batch stored before the kill and retried after the restart is recognised from the
/// producer state rebuilt at recovery.
#[test]
fn an_idempotent_kafka_producer_stores_every_record_once_through_kills_of_a_single_node() {
    idempotent_producer_through_kills(Cluster::single(), true);
}

/// Ten rounds of 300 acknowledged records, each ended by a kill -9 of a leader (and its
/// restart) when `kill_leaders`, then the checks. Returns the cluster, stopped.
fn idempotent_producer_through_kills(mut cluster: Cluster, kill_leaders: bool) -> Cluster {
    const TOPIC: &str = "exactly-once";
    const PARTITIONS: u32 = 2;
    assert!(
        std::process::Command::new("python3")
            .args(["-c", "import confluent_kafka"])
            .status()
            .is_ok_and(|s| s.success()),
        "python3 with confluent-kafka is not installed; .ci/run installs what these tests need"
    );
    let nodes = cluster.nodes.len();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let configs = vec![("min.insync.replicas".to_string(), nodes.min(2).to_string())];
    let topic = NewTopic { name: TOPIC.into(), partitions: PARTITIONS, replication_factor: nodes as u16, configs };
    runtime.block_on(async {
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, TOPIC).await;
    });
    let run = IdempotentRun::start(&cluster, TOPIC, PARTITIONS);
    for kill in 0..10u32 {
        run.wait_acked(&runtime, "records acknowledged before the next kill", 300);
        if !kill_leaders {
            continue;
        }
        let partition = kill % PARTITIONS;
        let leader = runtime.block_on(leader_of(&admin, TOPIC, partition));
        cluster.node(leader).kill9_and_wait();
        if nodes > 1 {
            runtime.block_on(wait_for("a new leader", || async {
                let now = partitions(&admin, TOPIC).await?.get(partition as usize)?.leader?;
                (now != leader).then_some(())
            }));
        }
        cluster.node(leader).restart();
        runtime.block_on(wait_for_full_isr(&admin, TOPIC));
        eprintln!(
            "kill {}: node {leader} (leader of {TOPIC}-{partition}); {} acknowledged",
            kill + 1,
            run.producer.count("offset")
        );
    }
    run.wait_acked(&runtime, "records acknowledged after the last kill", 300);
    let produced = run.finish_and_check(&mut cluster, &runtime, &admin, &|_| 1);
    eprintln!("{produced} records produced through 10 rounds (kills of a leader: {kill_leaders}) on {nodes} nodes, each stored once");
    cluster
}

/// An idempotent acks=all confluent-kafka producer (`tests/kafka/idempotent.py`) writing
/// numbered values to a topic's partitions through every node until told to stop.
struct IdempotentRun {
    producer: Streaming,
    stop_file: PathBuf,
    topic: String,
    partitions: u32,
}

impl IdempotentRun {
    fn start(cluster: &Cluster, topic: &str, partitions: u32) -> IdempotentRun {
        IdempotentRun::start_at_rate(cluster, topic, partitions, 2_000)
    }

    /// The same, producing `rate` records a second.
    fn start_at_rate(cluster: &Cluster, topic: &str, partitions: u32, rate: u32) -> IdempotentRun {
        let bootstrap: Vec<String> = cluster.nodes.iter().map(|n| n.kafka_addr().unwrap().to_string()).collect();
        let stop_file = cluster.dir.path().join(format!("stop-producing-{topic}"));
        let mut command = std::process::Command::new("python3");
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join("idempotent.py"))
            .args(["--bootstrap", &bootstrap.join(","), "--topic", topic, "--partitions", &partitions.to_string()])
            .args(["--rate", &rate.to_string()])
            .arg("--stop-file")
            .arg(&stop_file)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        IdempotentRun { producer: Streaming::start(command), stop_file, topic: topic.to_string(), partitions }
    }

    /// Waits until `more` records more than now are acknowledged.
    fn wait_acked(&self, runtime: &tokio::runtime::Runtime, what: &str, more: usize) {
        let before = self.producer.count("offset");
        runtime.block_on(wait_for(what, || async { (self.producer.count("offset") >= before + more).then_some(()) }));
    }

    /// Stops the producer and every node, then checks: the producer saw no error beyond
    /// refused connections to killed nodes and had everything acknowledged, and the
    /// replica of each partition `p` on node `replica_of(p)` holds every acknowledged value
    /// at its offset and no value twice. Returns how many records were produced.
    fn finish_and_check(
        self,
        cluster: &mut Cluster,
        runtime: &tokio::runtime::Runtime,
        admin: &Admin,
        replica_of: &dyn Fn(u32) -> usize,
    ) -> i64 {
        let IdempotentRun { producer, stop_file, topic, partitions } = self;
        let topic = topic.as_str();
        std::fs::write(&stop_file, b"").unwrap();
        let lines = producer.finish(WAIT * 2);

        // A killed broker refuses connections, which librdkafka reports as transport errors
        // and retries; any other error, a fatal one, or a failed delivery is a failure.
        let transient = |l: &sluice_tests::json::Json| {
            l.get("delivery").and_then(sluice_tests::json::Json::as_bool) == Some(false)
                && l.get("fatal").and_then(sluice_tests::json::Json::as_bool) == Some(false)
                && matches!(
                    l.get("code").and_then(sluice_tests::json::Json::as_str),
                    Some("_TRANSPORT" | "_ALL_BROKERS_DOWN")
                )
        };
        let errors: Vec<&sluice_tests::json::Json> =
            lines.iter().filter(|l| l.get("error").is_some() && !transient(l)).collect();
        assert!(errors.is_empty(), "the producer saw errors: {errors:?}");
        let done = lines.iter().find(|l| l.get("done").is_some()).expect("the producer finished");
        assert_eq!(done.get("unflushed").and_then(sluice_tests::json::Json::as_i64), Some(0), "{done:?}");
        let produced = done.get("produced").and_then(sluice_tests::json::Json::as_i64).unwrap();
        let acked = acknowledged(&lines);
        assert_eq!(acked.len() as i64, produced, "every produced record was acknowledged");

        runtime.block_on(wait_for_full_isr(admin, topic));
        let high_watermarks: Vec<u64> =
            (0..partitions).map(|p| runtime.block_on(high_watermark(cluster, admin, topic, p))).collect();
        for node in cluster.nodes.iter_mut().filter(|n| n.is_running()) {
            node.sigterm_and_wait();
        }
        let mut seen: BTreeMap<Vec<u8>, (u32, u64)> = BTreeMap::new();
        for p in 0..partitions {
            let node = replica_of(p);
            let dir = cluster.data_dir(node).join(format!("{topic}-{p}"));
            let stored = records_of(&stored_batches(&dir, high_watermarks[p as usize]));
            assert_stored_once(&mut seen, p, &stored);
            acked.assert_stored(topic, p, &stored, &format!("node {node}'s replica"));
        }
        produced
    }
}

/// Producer ids come from the controller in blocks, unique across the cluster and its
/// restarts: idempotent confluent-kafka producers, each bootstrapped from one node, take
/// turns on every node of a 3-node cluster; then every node is killed with kill -9 and
/// restarted (a new life gets a new block; its previous life may have used part of the
/// old one) and the producers run again, three rounds in all. Every stored batch carries
/// its producer's id: each producer has one, no two share one, and all come from the
/// controller's blocks (below the blocks it could have given).
/// A python3 script of `tests/kafka` as a streaming process.
fn kafka_script(name: &str, args: &[&str]) -> Streaming {
    let mut command = std::process::Command::new("python3");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join(name))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    Streaming::start(command)
}

/// Exactly-once through kill -9s: a consume-transform-produce loop (confluent-kafka's
/// transactional producer, offsets committed in each transaction, a fourth of them
/// aborted on purpose) runs while the transaction coordinator's node, the group
/// coordinator's node and partition leaders are killed and restarted; the output, read
/// with read_committed, holds each input record exactly once and nothing aborted.
#[test]
fn consume_transform_produce_is_exactly_once_through_coordinator_and_leader_kills() {
    const RECORDS: usize = 3000;
    const TXN_ID: &str = "ctp-1";
    const GROUP: &str = "ctp";
    let mut cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    for name in ["in", "out"] {
        let configs = vec![("min.insync.replicas".to_string(), "2".to_string())];
        let topic = NewTopic { name: name.into(), partitions: 2, replication_factor: 3, configs };
        runtime.block_on(async {
            create_topic(&admin, &topic).await;
            wait_for_full_isr(&admin, name).await;
        });
    }
    let bootstrap: Vec<String> = cluster.nodes.iter().map(|n| n.kafka_addr().unwrap().to_string()).collect();
    let bootstrap = bootstrap.join(",");
    let input = kafka_script(
        "idempotent.py",
        &[
            "--bootstrap",
            &bootstrap,
            "--topic",
            "in",
            "--partitions",
            "2",
            "--count",
            &RECORDS.to_string(),
            "--prefix",
            "v",
            "--rate",
            "5000",
        ],
    );
    let lines = input.finish(WAIT * 2);
    assert_eq!(acknowledged(&lines).len(), RECORDS, "the input was produced");
    let transform = kafka_script(
        "transactions.py",
        &[
            "--bootstrap",
            &bootstrap,
            "--timeout",
            "400",
            "transform",
            "in",
            "out",
            GROUP,
            TXN_ID,
            &RECORDS.to_string(),
            "40",
        ],
    );
    let txn_partition = sluice_node::txn::txn_partition(TXN_ID);
    let offsets_partition = sluice_schemas::groups::offsets_partition(GROUP);
    let victims: [(&str, u32); 4] =
        [("__transaction_state", txn_partition), ("out", 0), ("__consumer_offsets", offsets_partition), ("in", 1)];
    for (kill, (topic, partition)) in victims.into_iter().enumerate() {
        let before = transform.count("progress");
        runtime.block_on(wait_for("transactions committed before the next kill", || async {
            (transform.count("progress") >= before + 5).then_some(())
        }));
        let leader = runtime.block_on(leader_of(&admin, topic, partition));
        cluster.node(leader).kill9_and_wait();
        runtime.block_on(wait_for("a new leader", || async {
            let now = partitions(&admin, topic).await?.get(partition as usize)?.leader?;
            (now != leader).then_some(())
        }));
        cluster.node(leader).restart();
        runtime.block_on(wait_for_full_isr(&admin, topic));
        eprintln!(
            "kill {}: node {leader} (leader of {topic}-{partition}); {} transactions committed",
            kill + 1,
            transform.count("progress")
        );
    }
    let lines = transform.finish(Duration::from_secs(400));
    let done = lines.iter().find(|l| l.get("committed").is_some()).unwrap_or_else(|| {
        panic!(
            "the transform loop did not finish (its error is above); its last lines: {:?}",
            lines.iter().rev().take(8).collect::<Vec<_>>()
        )
    });
    assert_eq!(done.get("committed").and_then(sluice_tests::json::Json::as_i64), Some(RECORDS as i64));
    let read = kafka_script(
        "transactions.py",
        &["--bootstrap", &bootstrap, "consume", "out", "read_committed", &RECORDS.to_string()],
    )
    .finish(WAIT * 2);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for value in read.iter().filter_map(|l| l.get("value").and_then(sluice_tests::json::Json::as_str)) {
        *seen.entry(value.to_string()).or_default() += 1;
    }
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "records transformed more than once: {twice:?}");
    let expected: std::collections::BTreeSet<String> = (0..RECORDS).map(|i| format!("out-v-{i}")).collect();
    let got: std::collections::BTreeSet<String> = seen.into_keys().collect();
    let stalled: Vec<&sluice_tests::json::Json> = read.iter().filter(|l| l.get("stalled").is_some()).collect();
    assert_eq!(
        got.len(),
        RECORDS,
        "{} of {RECORDS} input records made it out; missing: {:?}; where the reader stopped: {stalled:?}",
        got.len(),
        expected.difference(&got).take(20).collect::<Vec<_>>()
    );
    assert_eq!(got, expected);
}

#[test]
fn producer_ids_are_unique_across_nodes_and_restarts() {
    const TOPIC: &str = "producer-ids";
    const ROUNDS: u32 = 3;
    const RECORDS: u32 = 5;
    let mut cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let topic = NewTopic { name: TOPIC.into(), partitions: 1, replication_factor: 3, configs: Vec::new() };
    runtime.block_on(async {
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, TOPIC).await;
    });
    let mut producers = Vec::new();
    for round in 0..ROUNDS {
        for n in 0..cluster.nodes.len() {
            let prefix = format!("round{round}-node{}", n + 1);
            let mut command = std::process::Command::new("python3");
            command
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join("idempotent.py"))
                .args(["--bootstrap", &cluster.nodes[n].kafka_addr().unwrap().to_string(), "--topic", TOPIC])
                .args(["--partitions", "1", "--count", &RECORDS.to_string(), "--prefix", &prefix])
                .env("PYTHONDONTWRITEBYTECODE", "1");
            let lines = Streaming::start(command).finish(WAIT * 2);
            let acked = lines.iter().filter(|l| l.get("offset").is_some()).count();
            assert_eq!(acked, RECORDS as usize, "{prefix}: {lines:?}");
            producers.push(prefix);
        }
        if round + 1 < ROUNDS {
            for n in 1..=cluster.nodes.len() as u32 {
                cluster.node(n).kill9_and_wait();
                cluster.node(n).restart();
                runtime.block_on(wait_for_full_isr(&admin, TOPIC));
            }
        }
    }
    let end = runtime.block_on(high_watermark(&cluster, &admin, TOPIC, 0));
    for node in &mut cluster.nodes {
        node.sigterm_and_wait();
    }
    let dir = Cluster::data_of(cluster.dir.path(), 1).join(format!("{TOPIC}-0"));
    let mut ids: BTreeMap<String, std::collections::BTreeSet<i64>> = BTreeMap::new();
    for (offset, batch) in stored_batches(&dir, end) {
        let id = sluice_schemas::batch::BatchHeader::view(&batch).unwrap().producer_id.get();
        let values = records_of(&[(offset, batch)]);
        for value in values.values() {
            let value = String::from_utf8_lossy(value);
            let producer = value.rsplit_once('-').map(|(p, _)| p.to_string()).unwrap_or_default();
            ids.entry(producer).or_default().insert(id);
        }
    }
    assert_eq!(
        ids.keys().cloned().collect::<Vec<_>>(),
        {
            producers.sort();
            producers
        },
        "{ids:?}"
    );
    let mut seen: BTreeMap<i64, &str> = BTreeMap::new();
    for (producer, set) in &ids {
        assert_eq!(set.len(), 1, "{producer} wrote with producer ids {set:?}");
        let id = *set.iter().next().unwrap();
        // Each node life takes one block of 1,000; 3 rounds of 3 lives.
        assert!((0..9_000).contains(&id), "{producer}: producer id {id} is not from the controller's blocks");
        if let Some(other) = seen.insert(id, producer) {
            panic!("{producer} and {other} both got producer id {id}");
        }
    }
    eprintln!("producer ids: {ids:?}");
}

/// Consumer groups through a coordinator failover: a member consumes a replicated topic
/// and commits; the node coordinating its group (the leader of the group's offsets
/// partition) is killed with kill -9. Another replica takes over the group with the
/// committed offsets it replicated; the member finds it, rejoins and goes on from its
/// commits, so every record is consumed and the commits made before the kill survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_keeps_consuming_and_its_commits_survive_a_coordinator_kill() {
    const TOPIC: &str = "events";
    const GROUP: &str = "readers";
    const RECORDS: u64 = 3_000;
    let mut cluster = Cluster::start();
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect_with_timeout(&bootstrap, Duration::from_secs(2)).await.unwrap();
    let topic = NewTopic { name: TOPIC.into(), partitions: 3, replication_factor: 3, configs: Vec::new() };
    create_topic(&admin, &topic).await;
    wait_for_full_isr(&admin, TOPIC).await;
    wait_for_full_isr(&admin, sluice_schemas::groups::OFFSETS_TOPIC).await;

    let config = ProducerConfig { bootstrap_servers: bootstrap.clone(), acks: Acks::All, ..ProducerConfig::default() };
    let producer = Producer::new(config).await.unwrap();
    let produce = |from: u64, to: u64| {
        let producer = producer.clone();
        async move {
            let mut deliveries = Vec::new();
            for i in from..to {
                let value = format!("event-{i}").into_bytes();
                let record = ProducerRecord { topic: TOPIC.into(), value: Some(value), ..ProducerRecord::default() };
                deliveries.push(producer.send(record).await.unwrap());
            }
            for d in deliveries {
                tokio::time::timeout(WAIT, d).await.unwrap().unwrap();
            }
        }
    };
    produce(0, RECORDS / 2).await;

    let consumer_config = ConsumerConfig {
        bootstrap_servers: bootstrap.clone(),
        auto_offset_reset: OffsetReset::Earliest,
        request_timeout_ms: 3_000,
        ..ConsumerConfig::default()
    };
    let group_config = GroupConfig {
        group_id: GROUP.into(),
        session_timeout_ms: 6_000,
        heartbeat_interval_ms: 500,
        enable_auto_commit: false,
        ..GroupConfig::default()
    };
    let mut member = GroupConsumer::new(consumer_config, group_config).await.unwrap();
    tokio::time::timeout(WAIT, member.subscribe(vec![TOPIC.into()])).await.unwrap().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < RECORDS as usize / 2 {
        assert!(Instant::now() < deadline, "consumed {} of {} before the kill", seen.len(), RECORDS / 2);
        for r in member.poll(POLL).await.unwrap() {
            seen.insert(r.value.unwrap_or_default());
        }
        member.commit_sync().await.unwrap();
    }
    let mut committed_before = BTreeMap::new();
    for p in 0..3 {
        committed_before.insert(p, member.committed(TOPIC, p).await.unwrap());
    }

    let partition = sluice_schemas::groups::offsets_partition(GROUP);
    let coordinator = leader_of(&admin, sluice_schemas::groups::OFFSETS_TOPIC, partition).await;
    cluster.node(coordinator).kill9_and_wait();
    produce(RECORDS / 2, RECORDS).await;
    let deadline = Instant::now() + WAIT;
    while seen.len() < RECORDS as usize {
        assert!(Instant::now() < deadline, "consumed {} of {RECORDS} after the coordinator's kill", seen.len());
        // Errors while the coordinator moves are retried by the next poll and commit.
        if let Ok(records) = member.poll(POLL).await {
            for r in records {
                seen.insert(r.value.unwrap_or_default());
            }
        }
        let _ = member.commit_sync().await;
    }
    let now = leader_of(&admin, sluice_schemas::groups::OFFSETS_TOPIC, partition).await;
    assert_ne!(now, coordinator, "another node coordinates the group");
    for p in 0..3 {
        let committed = member.committed(TOPIC, p).await.unwrap();
        assert!(
            committed >= committed_before[&p],
            "partition {p}: the commit {:?} made before the kill went back to {committed:?}",
            committed_before[&p]
        );
    }
    member.close().await.unwrap();
    cluster.node(coordinator).restart();
}

/// A Kafka consumer group survives its coordinator, as in Kafka: a confluent-kafka member
/// reads a replicated topic slowly, committing each record, while the node coordinating
/// its group (the leader of the group's offsets partition) is killed with kill -9, twice
/// (each restarted, so leadership moves and comes back). The new coordinator loads the
/// group's metadata (members, generation, assignments) from `__consumer_offsets`, so the
/// member's heartbeats and commits go on: one assignment for the whole run, no commit
/// refused as from an unknown member or an old generation, every record read exactly
/// once.
#[test]
fn a_kafka_group_keeps_its_members_and_generation_through_coordinator_kills() {
    group_through_coordinator_kills("classic");
}

/// The same for a group of Kafka's consumer protocol (KIP-848): the new coordinator
/// loads the member's epoch and partitions, so nothing is revoked or fenced.
#[test]
fn a_kip_848_group_keeps_its_members_and_epochs_through_coordinator_kills() {
    group_through_coordinator_kills("consumer");
}

fn group_through_coordinator_kills(protocol: &str) {
    const TOPIC: &str = "steady";
    let group = format!("steady-{protocol}");
    let group = group.as_str();
    const RECORDS: usize = 600;
    let mut cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let topic = NewTopic { name: TOPIC.into(), partitions: 3, replication_factor: 3, configs: Vec::new() };
    runtime.block_on(async {
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, TOPIC).await;
        wait_for_full_isr(&admin, sluice_schemas::groups::OFFSETS_TOPIC).await;
    });
    let kafka: Vec<String> = cluster.nodes.iter().map(|n| n.kafka_addr().unwrap().to_string()).collect();
    let lines: String = (0..RECORDS).map(|i| format!("value-{i}\n")).collect();
    let mut produce = std::process::Command::new("kcat");
    produce.args(["-b", &kafka[0], "-P", "-t", TOPIC, "-X", "acks=all"]);
    let run = sluice_tests::node_client::run_command(produce, lines.as_bytes(), WAIT);
    assert_eq!(run.code, Some(0), "kcat -P: {run:?}");

    let mut command = std::process::Command::new("python3");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join("group_member.py"))
        .args(["--bootstrap", &kafka.join(","), "--topic", TOPIC, "--group", group])
        .args(["--count", &RECORDS.to_string(), "--delay-ms", "50", "--timeout", "170", "--protocol", protocol])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let member = Streaming::start(command);
    let offsets_partition = sluice_schemas::groups::offsets_partition(group);
    let mut killed = Vec::new();
    for round in 0..2 {
        let read = 50 + round * 150;
        runtime.block_on(wait_for("the member to read on", || async { (member.count("value") >= read).then_some(()) }));
        let coordinator = runtime.block_on(leader_of(&admin, sluice_schemas::groups::OFFSETS_TOPIC, offsets_partition));
        cluster.node(coordinator).kill9_and_wait();
        killed.push(coordinator);
        std::thread::sleep(Duration::from_secs(3));
        cluster.node(coordinator).restart();
        runtime.block_on(wait_for_full_isr(&admin, sluice_schemas::groups::OFFSETS_TOPIC));
    }
    let lines = member.finish(Duration::from_secs(180));
    let events = |key: &str| lines.iter().filter(|l| l.get(key).is_some()).collect::<Vec<_>>();
    assert_eq!(
        events("assigned").len(),
        1,
        "one assignment for the whole run (coordinators killed: {killed:?}): {:?}",
        events("assigned")
    );
    // (Closing revokes the partitions, after "done".)
    let done = lines.iter().position(|l| l.get("done").is_some()).expect("the member finished");
    let revoked: Vec<_> = lines[..done].iter().filter(|l| l.get("revoked").is_some()).collect();
    assert!(revoked.is_empty(), "no rebalance: {revoked:?}");
    let refused: Vec<_> = events("commit_error")
        .into_iter()
        .filter(|l| {
            let e = l.get("commit_error").and_then(|e| e.as_str()).unwrap_or_default();
            ["UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION", "REBALANCE", "STALE_MEMBER_EPOCH", "FENCED_MEMBER_EPOCH"]
                .iter()
                .any(|refusal| e.contains(refusal))
        })
        .collect();
    assert!(refused.is_empty(), "commits refused as from a stranger: {refused:?}");
    let mut values: Vec<&str> = events("value").iter().filter_map(|l| l.get("value")?.as_str()).collect();
    let read = values.len();
    values.sort_unstable();
    values.dedup();
    assert_eq!((values.len(), read), (RECORDS, RECORDS), "every record read exactly once");
    eprintln!(
        "coordinators killed: {killed:?}; commit errors: {}; client errors: {}",
        events("commit_error").len(),
        events("error").len()
    );
}

/// ElectLeaders (preferred) through confluent-kafka's admin client: while a partition's
/// preferred replica is killed (kill -9) the answer is PREFERRED_LEADER_NOT_AVAILABLE and
/// the leadership stays where it moved; once it is back in sync the election is done (or
/// was already done by the controller's own preferred election: ELECTION_NOT_NEEDED) and
/// it leads again. An unclean election of a partition with a leader is not needed.
#[test]
fn kafka_elect_leaders_hands_leadership_back_to_a_preferred_replica_in_sync() {
    const TOPIC: &str = "elect";
    let mut cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let topic = NewTopic { name: TOPIC.into(), partitions: 1, replication_factor: 3, configs: Vec::new() };
    let preferred = runtime.block_on(async {
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, TOPIC).await[0].replicas[0]
    });
    let elect = |cluster: &Cluster, args: &[&str]| {
        let kafka: Vec<String> =
            cluster.nodes.iter().filter(|n| n.is_running()).map(|n| n.kafka_addr().unwrap().to_string()).collect();
        let mut command = std::process::Command::new("python3");
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join("admin.py"))
            .args(["--bootstrap", &kafka.join(","), "elect-leaders"])
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let run = sluice_tests::node_client::run_command(command, b"", WAIT * 2);
        assert_eq!(run.code, Some(0), "admin.py elect-leaders {args:?}: {run:?}");
        let line = run.stdout.lines().next().unwrap_or_default().to_string();
        let json = sluice_tests::json::Json::parse(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        json.get("error").and_then(|e| e.as_str().map(str::to_string))
    };
    assert_eq!(elect(&cluster, &["preferred", "elect:0"]).as_deref(), Some("ELECTION_NOT_NEEDED"));
    assert_eq!(elect(&cluster, &["unclean", "elect:0"]).as_deref(), Some("ELECTION_NOT_NEEDED"));

    cluster.node(preferred).kill9_and_wait();
    runtime.block_on(wait_for("another leader", || async {
        let leader = partitions(&admin, TOPIC).await?.first()?.leader?;
        (leader != preferred).then_some(())
    }));
    let error = elect(&cluster, &["preferred", "elect:0"]);
    assert_eq!(error.as_deref(), Some("PREFERRED_LEADER_NOT_AVAILABLE"));

    cluster.node(preferred).restart();
    runtime.block_on(wait_for_full_isr(&admin, TOPIC));
    let error = elect(&cluster, &["preferred", "elect:0"]);
    assert!(error.is_none() || error.as_deref() == Some("ELECTION_NOT_NEEDED"), "{error:?}");
    assert_eq!(runtime.block_on(leader_of(&admin, TOPIC, 0)), preferred, "the preferred replica leads again");
}

/// `Some` once each partition of `moves` has its target replicas, all in sync, and a leader.
async fn moved(admin: &Admin, topic: &str, moves: &[(u32, Vec<u32>)]) -> Option<()> {
    let now = partitions(admin, topic).await?;
    moves
        .iter()
        .all(|(p, target)| {
            now.get(*p as usize)
                .is_some_and(|s| s.replicas == *target && s.isr.len() == target.len() && s.leader.is_some())
        })
        .then_some(())
}

/// `tests/kafka/reassign.py` (kafka-python's KafkaAdminClient) against `bootstrap`.
fn reassign_script(bootstrap: &str, command: &[&str]) -> Vec<sluice_tests::json::Json> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join("reassign.py");
    let mut script = std::process::Command::new("python3");
    script.arg(&path).args(["--bootstrap", bootstrap]).args(command).env("PYTHONDONTWRITEBYTECODE", "1");
    let run = sluice_tests::node_client::run_command(script, b"", WAIT);
    assert_eq!(run.code, Some(0), "reassign.py {command:?}: {run:?}");
    run.stdout.lines().map(|l| sluice_tests::json::Json::parse(l).unwrap()).collect()
}

/// Reassignment under load (issue 21), driven by Kafka's AlterPartitionReassignments
/// through kafka-python (a client nobody here wrote): four nodes (voters 1-3), a topic of
/// four partitions with replication factor 3 and min.insync.replicas 2, and an
/// idempotent acks=all confluent-kafka producer running throughout. Node 1 is drained in
/// two rounds: its replica of each partition goes to the node that has none. In the
/// first, the controller is killed with kill -9 right after the moves are accepted (and
/// restarted); the moves complete, and node 1, up, deletes its copies. In the second,
/// node 1 is down while its partitions move; restarted, it finds them gone from its
/// replicas and deletes its copies. Then nothing is moving, node 1 holds nothing of the
/// topic, every acknowledged value is stored once at its offset on a replica of the final
/// assignment, and the producer saw no error beyond refused connections. Moved in the
/// first round too: a partition whose records below 100 were deleted (DeleteRecords):
/// its new replica starts at the leader's log start and holds everything from there.
#[test]
fn partitions_move_off_a_drained_node_under_an_idempotent_producer_through_a_controller_kill() {
    const TOPIC: &str = "moving";
    const PARTITIONS: u32 = 4;
    let mut cluster = Cluster::start_with(4, &["--voters", "1,2,3"]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let configs = vec![("min.insync.replicas".to_string(), "2".to_string())];
    let topic = NewTopic { name: TOPIC.into(), partitions: PARTITIONS, replication_factor: 3, configs };
    let parts = runtime.block_on(async {
        wait_for("four live nodes", || async {
            (admin.metadata(Some(&[])).await.ok()?.nodes.len() == 4).then_some(())
        })
        .await;
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, TOPIC).await
    });
    // kafka-python gives up on a bootstrap node that refuses connections: node 1 (down in
    // the second round) is not one.
    let kafka: Vec<String> = cluster.nodes[1..].iter().map(|n| n.kafka_addr().unwrap().to_string()).collect();
    let kafka = kafka.join(",");
    // The drain's plan: in each partition node 1 holds, the node that holds none takes its place.
    let plan: Vec<(u32, Vec<u32>)> = parts
        .iter()
        .filter(|p| p.replicas.contains(&1))
        .map(|p| {
            let missing = [4, 3, 2].into_iter().find(|n| !p.replicas.contains(n)).unwrap();
            (p.partition, p.replicas.iter().map(|r| if *r == 1 { missing } else { *r }).collect())
        })
        .collect();
    assert!(plan.len() >= 2, "node 1 holds at least two of the partitions: {parts:?}");
    let (first, second) = plan.split_at(plan.len() / 2);
    // A partition whose leader no longer has its first 100 records.
    let trimmed = NewTopic { name: "trimmed".into(), partitions: 1, replication_factor: 3, configs: Vec::new() };
    let (trimmed_move, added, trimmed_values) = runtime.block_on(async {
        create_topic(&admin, &trimmed).await;
        let now = wait_for_full_isr(&admin, "trimmed").await;
        let config =
            ProducerConfig { bootstrap_servers: cluster.bootstrap(), acks: Acks::All, ..ProducerConfig::default() };
        let producer = Producer::new(config).await.unwrap();
        let mut values = BTreeMap::new();
        for i in 0..200u64 {
            let value = format!("t-{i}").into_bytes();
            let record = ProducerRecord {
                topic: "trimmed".into(),
                partition: Some(0),
                value: Some(value.clone()),
                ..ProducerRecord::default()
            };
            let offset = tokio::time::timeout(WAIT, producer.send(record).await.unwrap()).await.unwrap().unwrap();
            values.insert(offset.offset.expect("acks=all names the offset"), value);
        }
        assert_eq!(admin.delete_records("trimmed", 0, 100).await.unwrap(), 100);
        let replicas = &now[0].replicas;
        let missing = (1..=4).find(|n| !replicas.contains(n)).unwrap();
        let leaving = if replicas.contains(&1) { 1 } else { replicas[2] };
        let target: Vec<u32> = replicas.iter().map(|r| if *r == leaving { missing } else { *r }).collect();
        (("trimmed", 0u32, target), missing as usize, values)
    });
    let run = IdempotentRun::start(&cluster, TOPIC, PARTITIONS);
    run.wait_acked(&runtime, "records acknowledged before the first moves", 300);
    let node_1_holds = |moves: &[(u32, Vec<u32>)], cluster: &Cluster| {
        moves.iter().filter(|(p, _)| cluster.data_dir(1).join(format!("{TOPIC}-{p}")).exists()).count()
    };
    let start_moves = |moves: &[(u32, Vec<u32>)], also: &[(&str, u32, Vec<u32>)]| {
        let mut args = vec!["move".to_string()];
        let named = moves.iter().map(|(p, target)| (TOPIC, *p, target)).chain(also.iter().map(|(t, p, r)| (*t, *p, r)));
        args.extend(named.map(|(topic, p, target)| {
            let ids: Vec<String> = target.iter().map(u32::to_string).collect();
            format!("{topic}:{p}={}", ids.join(","))
        }));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let answers = reassign_script(&kafka, &args);
        assert_eq!(answers.len(), moves.len() + also.len(), "{answers:?}");
        for a in &answers {
            assert!(a.get("error").is_some_and(sluice_tests::json::Json::is_null), "a move was refused: {a:?}");
        }
    };

    // Round 1: the moves, and at once a kill -9 of the controller.
    start_moves(first, std::slice::from_ref(&trimmed_move));
    let controller =
        runtime.block_on(wait_for("a controller", || async { admin.metadata(Some(&[])).await.ok()?.controller_id }));
    cluster.node(controller).kill9_and_wait();
    runtime.block_on(wait_for("another controller", || async {
        admin.metadata(Some(&[])).await.ok()?.controller_id.filter(|c| *c != controller)
    }));
    cluster.node(controller).restart();
    runtime.block_on(wait_for("the first moves to complete", || moved(&admin, TOPIC, first)));
    let trimmed_target = vec![(0, trimmed_move.2.clone())];
    runtime
        .block_on(wait_for("the trimmed partition's move to complete", || moved(&admin, "trimmed", &trimmed_target)));
    runtime.block_on(wait_for("node 1 to delete its copies of the moved partitions", || async {
        (node_1_holds(first, &cluster) == 0).then_some(())
    }));
    eprintln!(
        "round 1: moved {first:?}, controller node {controller} killed; {} acknowledged",
        run.producer.count("offset")
    );
    run.wait_acked(&runtime, "records acknowledged after the first moves", 300);

    // Round 2: node 1 down while its other partitions move.
    cluster.node(1).kill9_and_wait();
    // (kafka-python fails on a listed node that refuses connections: wait until node 1
    // is fenced and left out of the brokers.)
    runtime.block_on(wait_for("a controller other than node 1, and node 1 fenced", || async {
        let metadata = admin.metadata(Some(&[])).await.ok()?;
        (metadata.controller_id.is_some_and(|c| c != 1) && metadata.nodes.iter().all(|n| n.node_id != 1)).then_some(())
    }));
    start_moves(second, &[]);
    runtime.block_on(wait_for("the second moves to complete", || moved(&admin, TOPIC, second)));
    assert_eq!(node_1_holds(second, &cluster), second.len(), "node 1 was down: its copies are still there");
    cluster.node(1).restart();
    runtime.block_on(wait_for("node 1 to delete its copies once restarted", || async {
        (node_1_holds(&plan, &cluster) == 0).then_some(())
    }));
    let moving = reassign_script(&kafka, &["list"]);
    assert!(moving.is_empty(), "nothing is moving: {moving:?}");
    let held: Vec<String> = std::fs::read_dir(cluster.data_dir(1))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("{TOPIC}-")))
        .collect();
    assert!(held.is_empty(), "node 1 holds nothing of {TOPIC}: {held:?}");
    run.wait_acked(&runtime, "records acknowledged after the second moves", 300);

    let last = runtime.block_on(wait_for_full_isr(&admin, TOPIC));
    assert!(last.iter().all(|p| !p.replicas.contains(&1)), "node 1 is drained: {last:?}");
    let first_replica: BTreeMap<u32, usize> = last.iter().map(|p| (p.partition, p.replicas[0] as usize)).collect();
    let produced = run.finish_and_check(&mut cluster, &runtime, &admin, &|p| first_replica[&p]);
    eprintln!("{produced} records produced while {} partitions moved off node 1, each stored once", plan.len());
    // The trimmed partition's new replica (on a stopped node now) starts at 100 and holds
    // every record from there.
    let stored = records_of(&stored_batches(&cluster.data_dir(added).join("trimmed-0"), 200));
    let expected: BTreeMap<u64, Vec<u8>> = trimmed_values.into_iter().filter(|(offset, _)| *offset >= 100).collect();
    assert_eq!(stored, expected, "node {added}'s replica of trimmed-0, added after its first 100 records were deleted");
}

/// Issue 21's acceptance, under load: three nodes (voters 1-3), a topic of RF 3 with
/// min.insync.replicas 2, an idempotent acks=all producer (confluent-kafka) and a group
/// member reading it the whole time. A 4th node joins with `--join` (one running node's
/// cluster address, no `--peer` list) and becomes a broker; `cluster balance --wait` moves
/// replicas onto it until it holds a quarter of them (at most one off); it becomes a
/// controller voter and node 1 loses its vote (`controller add-voter 4`, `remove-voter
/// 1`, whichever node leads); node 1 is drained (`node drain 1 --wait`), stopped and
/// removed (`node remove 1`: gone from the nodes and the quorum). Then every acknowledged
/// record is stored once at its offset, the producer saw no error but refused
/// connections to the stopped node, and the group member read every acknowledged value.
#[test]
fn a_node_joins_takes_a_quarter_of_the_replicas_and_node_1_is_drained_and_removed_under_load() {
    const TOPIC: &str = "elastic";
    const PARTITIONS: u32 = 6;
    let mut cluster = Cluster::start_with(3, &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let configs = vec![("min.insync.replicas".to_string(), "2".to_string())];
    let topic = NewTopic { name: TOPIC.into(), partitions: PARTITIONS, replication_factor: 3, configs };
    runtime.block_on(async {
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, TOPIC).await;
    });
    let kafka: Vec<String> = cluster.nodes.iter().map(|n| n.kafka_addr().unwrap().to_string()).collect();
    // As fast as the member can follow: it commits every record, one at a time.
    let run = IdempotentRun::start_at_rate(&cluster, TOPIC, PARTITIONS, 100);
    let mut command = std::process::Command::new("python3");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join("group_member.py"))
        .args(["--bootstrap", &kafka[1..].join(","), "--topic", TOPIC, "--group", "elastic-readers"])
        .args(["--count", "1000000000", "--timeout", "400"])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let member = Streaming::start(command);
    run.wait_acked(&runtime, "records acknowledged before node 4 joins", 300);

    // Node 4 joins through node 2's cluster listener.
    let (native, kafka_4, cluster_4) = (free_loopback_addr(), free_loopback_addr(), free_loopback_addr());
    let (kafka_arg, cluster_arg, join) =
        (kafka_4.to_string(), cluster_4.to_string(), cluster.cluster_addrs[1].to_string());
    let mut args = vec!["--node-id", "4", "--kafka-listen", &kafka_arg];
    args.extend(NODE_FLAGS);
    args.extend(["--join", &join, "--cluster-listen", &cluster_arg, "--rack", "rack-4"]);
    let node_4 = NodeProcess::start_at(native, &Cluster::data_of(cluster.dir.path(), 4), SHARDS, &args);
    cluster.nodes.push(node_4);
    let bootstrap = cluster.bootstrap()[1..].join(",");
    let rack = runtime.block_on(wait_for("node 4 to be a live node", || async {
        admin.metadata(Some(&[])).await.ok()?.nodes.into_iter().find(|n| n.node_id == 4).map(|n| n.rack)
    }));
    assert_eq!(rack.as_deref(), Some("rack-4"), "node 4's rack, as Metadata reports it");
    let status = sluice_cli(&bootstrap, &["controller", "status"]);
    assert!(status.code == Some(0) && status.stdout.contains("learners: 4"), "{status:?}");

    let balance = sluice_cli(&bootstrap, &["cluster", "balance", "--wait"]);
    assert_eq!(balance.code, Some(0), "{balance:?}");
    let held = runtime.block_on(async {
        let metadata = admin.metadata(None).await.unwrap();
        let replicas: Vec<u32> = metadata
            .topics
            .iter()
            .filter_map(|t| t.partitions.as_ref().ok())
            .flatten()
            .flat_map(|p| p.replicas.clone())
            .collect();
        (replicas.iter().filter(|r| **r == 4).count(), replicas.len())
    });
    assert!(held.0 * 4 + 4 >= held.1 && held.0 * 4 <= held.1 + 4, "node 4 holds a quarter of the replicas: {held:?}");
    run.wait_acked(&runtime, "records acknowledged after the balance", 300);

    for args in [&["controller", "add-voter", "4"], &["controller", "remove-voter", "1"]] {
        let change = sluice_cli(&bootstrap, args);
        assert_eq!(change.code, Some(0), "{args:?}: {change:?}");
    }
    let status = sluice_cli(&bootstrap, &["controller", "status"]);
    assert!(status.stdout.contains("voters: 2,3,4") && status.stdout.contains("learners: 1"), "{status:?}");
    let drain = sluice_cli(&bootstrap, &["node", "drain", "1", "--wait"]);
    assert_eq!(drain.code, Some(0), "{drain:?}");
    let node_1 = cluster.data_dir(1);
    runtime.block_on(wait_for("node 1 to delete its copies", || async {
        (0..PARTITIONS).all(|p| !node_1.join(format!("{TOPIC}-{p}")).exists()).then_some(())
    }));
    run.wait_acked(&runtime, "records acknowledged after the drain", 300);
    cluster.node(1).sigterm_and_wait();
    runtime.block_on(wait_for("node 1 to be fenced", || async {
        (admin.metadata(Some(&[])).await.ok()?.nodes.iter().all(|n| n.node_id != 1)).then_some(())
    }));
    let remove = sluice_cli(&bootstrap, &["node", "remove", "1"]);
    assert_eq!(remove.code, Some(0), "{remove:?}");
    let status = sluice_cli(&bootstrap, &["controller", "status"]);
    assert!(status.stdout.contains("voters: 2,3,4") && status.stdout.contains("learners: \n"), "{status:?}");
    run.wait_acked(&runtime, "records acknowledged after node 1 left", 300);

    // The producer stops; the member reads everything it had acknowledged.
    std::fs::write(&run.stop_file, b"").unwrap();
    run.producer.wait_for("done", WAIT);
    let acked: std::collections::BTreeSet<String> = acknowledged(&run.producer.lines()).values().cloned().collect();
    let deadline = Instant::now() + WAIT;
    let missing = loop {
        let read: std::collections::BTreeSet<String> = member
            .lines()
            .iter()
            .filter_map(|l| l.get("value").and_then(sluice_tests::json::Json::as_str).map(str::to_string))
            .collect();
        let missing: Vec<&String> = acked.difference(&read).collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break missing.len();
        }
        std::thread::sleep(POLL);
    };
    let lines = member.kill();
    let events: Vec<&sluice_tests::json::Json> = lines.iter().filter(|l| l.get("value").is_none()).collect();
    assert_eq!(
        missing,
        0,
        "of {} acknowledged values the group member did not read {missing}: {events:?}",
        acked.len()
    );
    let assigned = lines.iter().filter(|l| l.get("assigned").is_some()).count();
    assert!(assigned >= 1, "the member was assigned the partitions: {lines:?}");
    let last = runtime.block_on(wait_for_full_isr(&admin, TOPIC));
    assert!(last.iter().all(|p| !p.replicas.contains(&1)), "node 1 is drained: {last:?}");
    let first_replica: BTreeMap<u32, usize> = last.iter().map(|p| (p.partition, p.replicas[0] as usize)).collect();
    let produced = run.finish_and_check(&mut cluster, &runtime, &admin, &|p| first_replica[&p]);
    eprintln!("{produced} records produced and read while node 4 joined and node 1 was drained and removed");
}

/// Fetch from the closest replica (KIP-392): three nodes in three racks run the
/// rack-aware replica selector; a confluent-kafka consumer in rack-1 (client.rack) reads
/// every record of a topic whose partitions nodes 1, 2 and 3 lead: the partitions led
/// by the others are read from node 1, their follower in its rack (its metric of bytes served
/// as a follower counts them; the other nodes, never asked as followers, count none), and
/// nothing is missed or read twice.
#[test]
fn a_consumer_reads_from_the_replica_in_its_own_rack() {
    const TOPIC: &str = "near";
    const RECORDS: usize = 600;
    let metrics: Vec<SocketAddr> = (0..3).map(|_| free_loopback_addr()).collect();
    let per_node = |i: usize, _| {
        let rack = format!("rack-{}", i + 1);
        vec!["--metrics-listen".to_string(), metrics[i].to_string(), "--rack".to_string(), rack]
    };
    let flags = ["--replica-selector-class", "rack"];
    let cluster = Cluster::start_full(3, &flags, Faults::Processes, "PLAINTEXT", &[], &per_node);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let topic = NewTopic { name: TOPIC.into(), partitions: 3, replication_factor: 3, configs: Vec::new() };
    let parts = runtime.block_on(async {
        wait_for("racks in Metadata", || async {
            let nodes = admin.metadata(Some(&[])).await.ok()?.nodes;
            (nodes.len() == 3 && nodes.iter().all(|n| n.rack.is_some())).then_some(())
        })
        .await;
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, TOPIC).await
    });
    assert!(parts.iter().any(|p| p.leader != Some(1)), "nodes 2 or 3 lead some partition: {parts:?}");
    let kafka: Vec<String> = cluster.nodes.iter().map(|n| n.kafka_addr().unwrap().to_string()).collect();
    let lines: String = (0..RECORDS).map(|i| format!("value-{i}\n")).collect();
    let mut produce = std::process::Command::new("kcat");
    produce.args(["-b", &kafka[0], "-P", "-t", TOPIC, "-X", "acks=all"]);
    let run = sluice_tests::node_client::run_command(produce, lines.as_bytes(), WAIT);
    assert_eq!(run.code, Some(0), "kcat -P: {run:?}");
    runtime.block_on(wait_for_full_isr(&admin, TOPIC));

    let follower_bytes = |node: usize| {
        let scrape = sluice_tests::node_client::scrape_metrics(metrics[node]);
        sluice_tests::node_client::metric_value(&scrape, "sluice_fetch_bytes_served_by_follower_total")
            .expect("the follower fetch metric")
    };
    let mut consume = std::process::Command::new("python3");
    consume
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join("consume.py"))
        .args(["--client", "confluent", "--bootstrap", &kafka.join(","), "--topic", TOPIC])
        .args(["--max", &RECORDS.to_string(), "--client-rack", "rack-1", "--timeout", "50"])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let run = sluice_tests::node_client::run_command(consume, b"", WAIT);
    assert_eq!(run.code, Some(0), "consume.py: {run:?}");
    let mut values: Vec<String> = run
        .stdout
        .lines()
        .filter_map(|l| sluice_tests::json::Json::parse(l).ok())
        .filter_map(|j| j.get("value").and_then(sluice_tests::json::Json::as_str).map(str::to_string))
        .collect();
    values.sort();
    // (consume.py prints values as hex.)
    let hex = |s: String| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let mut expected: Vec<String> = (0..RECORDS).map(|i| hex(format!("value-{i}"))).collect();
    expected.sort();
    assert!(values == expected, "every record once: {} read, {} expected", values.len(), expected.len());
    let served = [follower_bytes(0), follower_bytes(1), follower_bytes(2)];
    assert!(served[0] > 0, "node 1 served the partitions it follows to the rack-1 consumer: {served:?}");
    assert_eq!(&served[1..], &[0, 0], "nodes 2 and 3 were never asked as followers: {served:?}");
}

/// A node's shards are evened out (issue 21): node 1 follows all 8 partitions of a topic,
/// spread over its two shards; the ones on its shard 0 move off the node, which leaves
/// shard 1 far busier; node 1 then moves followers from shard 1 to shard 0 (its shard
/// map ends at most one apart), the moved followers catch up on their new shard (the ISR
/// is full again), and the 100 records produced to each moved partition after the move
/// are in node 1's copies as in their leaders'.
#[test]
fn a_nodes_followers_move_to_its_less_busy_shard_and_keep_replicating() {
    const TOPIC: &str = "shards";
    const PARTITIONS: u32 = 8;
    let cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let topic = NewTopic { name: TOPIC.into(), partitions: PARTITIONS, replication_factor: 2, configs: Vec::new() };
    runtime.block_on(async {
        // (The moves below name every node: each must be registered first.)
        wait_for("three live nodes", || async {
            (admin.metadata(Some(&[])).await.ok()?.nodes.len() == 3).then_some(())
        })
        .await;
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, TOPIC).await;
    });
    let kafka: Vec<String> = cluster.nodes[1..].iter().map(|n| n.kafka_addr().unwrap().to_string()).collect();
    let kafka = kafka.join(",");
    let bootstrap = cluster.bootstrap().join(",");
    let shard_map = |cluster: &Cluster| -> BTreeMap<(String, u32), u32> {
        let text = std::fs::read_to_string(cluster.data_dir(1).join("shard-map")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(' ');
                Some(((f.next()?.to_string(), f.next()?.parse().ok()?), f.next()?.parse().ok()?))
            })
            .collect()
    };
    let move_all = |targets: &[(u32, Vec<u32>)]| {
        let mut args = vec!["partition".to_string(), "move".to_string()];
        args.extend(
            targets
                .iter()
                .map(|(p, r)| format!("{TOPIC}:{p}={}", r.iter().map(u32::to_string).collect::<Vec<_>>().join(","))),
        );
        args.push("--wait".to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = sluice_cli(&bootstrap, &args);
        assert_eq!(run.code, Some(0), "{run:?}");
    };
    // Node 1 follows every partition (led by node 2 or 3).
    let follow: Vec<(u32, Vec<u32>)> = (0..PARTITIONS).map(|p| (p, vec![2 + p % 2, 1])).collect();
    move_all(&follow);
    runtime.block_on(wait_for("nodes 2 and 3 to lead every partition", || async {
        let parts = partitions(&admin, TOPIC).await?;
        parts.iter().all(|p| p.leader.is_some_and(|l| l != 1) && p.isr.len() == 2).then_some(())
    }));
    let before = shard_map(&cluster);
    let on_shard_0: Vec<u32> = (0..PARTITIONS).filter(|p| before.get(&(TOPIC.to_string(), *p)) == Some(&0)).collect();
    assert!(on_shard_0.len() >= 2, "node 1 put some of the topic on shard 0: {before:?}");
    // Those leave node 1: its shard 1 is now the busier by at least 4.
    let leave: Vec<(u32, Vec<u32>)> = on_shard_0.iter().map(|p| (*p, vec![2, 3])).collect();
    move_all(&leave);
    let balanced = runtime.block_on(wait_for("node 1's shards to be even again", || async {
        let map = shard_map(&cluster);
        let load = |s: u32| map.values().filter(|v| **v == s).count();
        let moved_back = map.keys().all(|(t, p)| t != TOPIC || !on_shard_0.contains(p));
        (moved_back && load(0).abs_diff(load(1)) <= 1).then_some(map)
    }));
    let moved: Vec<u32> = (0..PARTITIONS)
        .filter(|p| {
            before.get(&(TOPIC.to_string(), *p)) == Some(&1) && balanced.get(&(TOPIC.to_string(), *p)) == Some(&0)
        })
        .collect();
    assert!(!moved.is_empty(), "followers moved from shard 1 to shard 0: {before:?} -> {balanced:?}");
    // The moved followers replicate from their new shard.
    // (To each moved partition: kcat's sticky partitioner may put keyless records in few.)
    for p in &moved {
        let lines: String = (0..100).map(|i| format!("after-{p}-{i}\n")).collect();
        let mut produce = std::process::Command::new("kcat");
        produce.args(["-b", &kafka, "-P", "-t", TOPIC, "-p", &p.to_string(), "-X", "acks=all"]);
        let run = sluice_tests::node_client::run_command(produce, lines.as_bytes(), WAIT);
        assert_eq!(run.code, Some(0), "kcat -P: {run:?}");
    }
    let parts = runtime.block_on(wait_for_full_isr(&admin, TOPIC));
    let high_watermarks: BTreeMap<u32, u64> =
        moved.iter().map(|p| (*p, runtime.block_on(high_watermark(&cluster, &admin, TOPIC, *p)))).collect();
    let mut cluster = cluster;
    for node in &mut cluster.nodes {
        node.sigterm_and_wait();
    }
    for p in &moved {
        let leader = parts[*p as usize].leader.unwrap() as usize;
        let theirs =
            records_of(&stored_batches(&cluster.data_dir(leader).join(format!("{TOPIC}-{p}")), high_watermarks[p]));
        let ours = records_of(&stored_batches(&cluster.data_dir(1).join(format!("{TOPIC}-{p}")), high_watermarks[p]));
        let first_difference = ours.iter().zip(&theirs).find(|(a, b)| a != b).map(|(a, _)| *a.0);
        assert!(
            ours.len() >= 100 && ours == theirs,
            "{TOPIC}-{p}: node 1's copy, moved to shard 0, matches node {leader}'s below {}: {} records and {}, \
             first difference at {first_difference:?}; node 1's log: {}",
            high_watermarks[p],
            ours.len(),
            theirs.len(),
            cluster.nodes[0].log_tail()
        );
    }
    eprintln!("node 1 moved {moved:?} from shard 1 to shard 0: {before:?} -> {balanced:?}");
}

/// `sluice` (the CLI) against `bootstrap`, bounded by `WAIT`.
fn sluice_cli(bootstrap: &str, args: &[&str]) -> sluice_tests::node_client::CliRun {
    let mut command = std::process::Command::new(sluice_tests::node_client::cli_binary());
    command.args(["--bootstrap", bootstrap]).args(args).env_remove("SLUICE_BOOTSTRAP");
    sluice_tests::node_client::run_command(command, b"", WAIT)
}

/// The CLI's partition moves and drains (issue 21) on four nodes (voters 1-3): bad moves
/// and a cancel with nothing moving fail with the reason and exit 1; `node drain 4
/// --dry-run` prints a plan that takes every replica off node 4 and changes nothing;
/// `node drain 4 --wait` moves them (the internal offsets topic's too) and returns once
/// done: then no partition has a replica on node 4, node 4 deleted its copies, and every
/// record produced before is read back from the new replicas. `node remove` refuses an
/// unknown node, a voter and node 4 while it runs; once node 4 is stopped it is removed
/// (gone from the cluster's nodes), and started again it joins again, empty, until
/// `cluster balance --wait` evens the replicas out (at most one apart per node). The nodes run with
/// `--replication-throttled-rate` 1 MiB/s: the copies went through the throttle (its
/// metric counts them), and the moves completed with it.
#[test]
fn the_cli_drains_a_node_of_every_replica_it_holds() {
    let metrics: Vec<SocketAddr> = (0..4).map(|_| free_loopback_addr()).collect();
    let per_node = |i: usize, _| vec!["--metrics-listen".to_string(), metrics[i].to_string()];
    let flags = ["--voters", "1,2,3", "--replication-throttled-rate", "1048576"];
    let mut cluster = Cluster::start_full(4, &flags, Faults::Processes, "PLAINTEXT", &[], &per_node);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let topic = NewTopic { name: "drained".into(), partitions: 6, replication_factor: 2, configs: Vec::new() };
    let produced = runtime.block_on(async {
        wait_for("four live nodes", || async {
            (admin.metadata(Some(&[])).await.ok()?.nodes.len() == 4).then_some(())
        })
        .await;
        // The controller creates the offsets topic in the background: settled before the
        // drain, or one created during it may place replicas on node 4 (a CI run saw it).
        wait_for_full_isr(&admin, sluice_schemas::groups::OFFSETS_TOPIC).await;
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, "drained").await;
        let config =
            ProducerConfig { bootstrap_servers: cluster.bootstrap(), acks: Acks::All, ..ProducerConfig::default() };
        let producer = Producer::new(config).await.unwrap();
        let mut deliveries = Vec::new();
        // Every partition gets records, so every replica that moves copies some.
        for i in 0..600 {
            let value = Some(format!("d-{i}").into_bytes());
            let record =
                ProducerRecord { topic: "drained".into(), partition: Some(i % 6), value, ..ProducerRecord::default() };
            deliveries.push(producer.send(record).await.unwrap());
        }
        for d in deliveries {
            tokio::time::timeout(WAIT, d).await.unwrap().unwrap();
        }
        600
    });
    let bootstrap = cluster.nodes[0].addr().to_string();
    let run = sluice_cli(&bootstrap, &["partition", "moves"]);
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), ""), "{run:?}");
    let run = sluice_cli(&bootstrap, &["partition", "move", "drained:0=1,9"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.contains("node 9 is not a registered node"), "{run:?}");
    let run = sluice_cli(&bootstrap, &["partition", "cancel", "drained:0"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.contains("no reassignment is in progress"), "{run:?}");
    let run = sluice_cli(&bootstrap, &["partition", "move", "drained:0"]);
    assert_eq!(run.code, Some(2), "no replicas named: bad usage {run:?}");

    let holds_4 = |admin: &Admin| {
        runtime.block_on(async {
            let metadata = admin.metadata(None).await.unwrap();
            metadata
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .flatten()
                        .filter(|p| p.replicas.contains(&4))
                        .map(|p| format!("{}-{}", t.name, p.partition))
                })
                .collect::<Vec<String>>()
        })
    };
    let before = holds_4(&admin);
    assert!(before.iter().any(|p| p.starts_with("drained-")), "node 4 holds replicas of drained: {before:?}");
    let dry = sluice_cli(&bootstrap, &["node", "drain", "4", "--dry-run"]);
    assert_eq!(dry.code, Some(0), "{dry:?}");
    assert_eq!(dry.stdout.lines().count(), before.len(), "one move per replica on node 4: {dry:?}");
    assert_eq!(holds_4(&admin), before, "a dry run changes nothing");
    let run = sluice_cli(&bootstrap, &["node", "drain", "4", "--wait", "--timeout-ms", "50000"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout.lines().filter(|l| l.ends_with(": started")).count(), before.len(), "{run:?}");
    let left = holds_4(&admin);
    assert!(left.is_empty(), "node 4 still holds {left:?}");
    runtime.block_on(wait_for("node 4 to delete its copies", || async {
        let held = std::fs::read_dir(cluster.data_dir(4))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("drained-") || n.starts_with("__consumer_offsets-"))
            .count();
        (held == 0).then_some(())
    }));
    let consumer_config = ConsumerConfig {
        bootstrap_servers: cluster.bootstrap(),
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let seen = runtime.block_on(async {
        let mut consumer = sluice_client::consumer::Consumer::new(consumer_config).await.unwrap();
        consumer.assign((0..6).map(|p| ("drained".to_string(), p)).collect());
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + WAIT;
        while seen.len() < produced && Instant::now() < deadline {
            for r in consumer.poll(POLL).await.unwrap() {
                seen.insert(r.value.unwrap_or_default());
            }
        }
        seen
    });
    assert_eq!(seen.len(), produced, "every record is read back after the drain");
    let throttled: u64 = metrics
        .iter()
        .map(|m| {
            let scrape = sluice_tests::node_client::scrape_metrics(*m);
            sluice_tests::node_client::metric_value(&scrape, "sluice_replication_throttled_bytes_total").unwrap_or(0)
        })
        .sum();
    assert!(throttled > 0, "the new replicas' copies went through the throttle");
    eprintln!("{throttled} bytes copied through the replication throttle");

    for (node, why) in [("9", "the cluster has no node 9"), ("1", "controller voter"), ("4", "node 4 is live")] {
        let run = sluice_cli(&bootstrap, &["node", "remove", node]);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(run.stderr.contains(why), "node remove {node}: {run:?}");
    }
    cluster.node(4).sigterm_and_wait();
    let listed = |count: usize| {
        let admin = &admin;
        move || async move { (admin.metadata(Some(&[])).await.ok()?.nodes.len() == count).then_some(()) }
    };
    runtime.block_on(wait_for("node 4 to be fenced", listed(3)));
    // Kafka's Metadata still lists the down node until it is removed: librdkafka
    // decommissions a broker left out, which can hang its transactional producer.
    let kafka_brokers = || {
        use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
        let at = cluster.nodes[0].kafka_addr().expect("a Kafka listener");
        let r: MetadataResponse = sluice_tests::kafka_wire::Wire::connect(at).call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(Vec::new())),
        );
        r.brokers.iter().map(|b| b.node_id.0).collect::<Vec<i32>>()
    };
    assert_eq!(kafka_brokers(), vec![1, 2, 3, 4], "Kafka's Metadata lists node 4, down");
    let run = sluice_cli(&bootstrap, &["node", "remove", "4"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    runtime.block_on(wait_for("Kafka's Metadata to leave out node 4, removed", || async {
        (kafka_brokers() == vec![1, 2, 3]).then_some(())
    }));
    let run = sluice_cli(&bootstrap, &["node", "remove", "4"]);
    assert!(run.code == Some(1) && run.stderr.contains("no node 4"), "removed once: {run:?}");
    cluster.node(4).restart();
    runtime.block_on(wait_for("node 4 to join again", listed(4)));

    // Node 4 is back, empty: `cluster balance` gives it its share.
    let run = sluice_cli(&bootstrap, &["cluster", "balance", "--wait", "--timeout-ms", "50000"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let counts = runtime.block_on(async {
        let metadata = admin.metadata(None).await.unwrap();
        let mut counts = BTreeMap::new();
        for p in metadata.topics.iter().flat_map(|t| t.partitions.iter().flatten()) {
            for r in &p.replicas {
                *counts.entry(*r).or_insert(0usize) += 1;
            }
        }
        counts
    });
    let (min, max) = (counts.values().min().copied(), counts.values().max().copied());
    assert!(
        counts.len() == 4 && max.zip(min).is_some_and(|(a, b)| a - b <= 1),
        "replicas per node after the balance: {counts:?}"
    );
    let run = sluice_cli(&bootstrap, &["cluster", "balance", "--dry-run"]);
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), ""), "balanced: nothing to move {run:?}");
}

/// Topic auto-creation in a cluster: kcat produces to a missing topic through a node
/// that is not the controller; that node forwards the creation to the controller, which
/// creates it with its defaults (`--num-partitions 2 --default-replication-factor 3`),
/// and every record is stored.
#[test]
fn a_topic_auto_created_through_a_node_that_is_not_the_controller_gets_the_defaults() {
    const TOPIC: &str = "auto-cluster";
    let cluster = Cluster::start_with(NODES, &["--num-partitions", "2", "--default-replication-factor", "3"]);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let controller =
        runtime.block_on(wait_for("a controller", || async { admin.metadata(Some(&[])).await.ok()?.controller_id }));
    let other = cluster.nodes.iter().enumerate().find(|(i, _)| *i as u32 + 1 != controller).map(|(_, n)| n).unwrap();
    let lines: String = (0..100).map(|i| format!("auto-{i}\n")).collect();
    let mut produce = std::process::Command::new("kcat");
    produce.args(["-b", &other.kafka_addr().unwrap().to_string(), "-P", "-t", TOPIC, "-X", "acks=all"]);
    let run = sluice_tests::node_client::run_command(produce, lines.as_bytes(), WAIT);
    assert_eq!(run.code, Some(0), "kcat -P to a missing topic: {run:?}");
    let partitions = runtime.block_on(wait_for_full_isr(&admin, TOPIC));
    assert_eq!(partitions.len(), 2);
    assert!(partitions.iter().all(|p| p.replicas.len() == 3), "{partitions:?}");
    let stored: u64 = (0..2).map(|p| runtime.block_on(high_watermark(&cluster, &admin, TOPIC, p))).sum();
    assert_eq!(stored, 100);
}

/// A process a test started, killed (by its pid) when dropped.
struct Helper {
    name: &'static str,
    child: std::process::Child,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Helper {
    fn start(name: &'static str, mut command: std::process::Command, log: &Path) -> Helper {
        let out = std::fs::File::create(log).expect("creating a helper's log");
        command.stdout(out.try_clone().expect("a log handle")).stderr(out);
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Helper { name, child }
    }

    /// Fails the test if the process has exited, with its logs.
    fn check_running(&mut self, logs: &[&Path]) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let logs: String = logs.iter().map(|l| std::fs::read_to_string(l).unwrap_or_default()).collect();
            panic!("{} exited ({status}); its logs:\n{logs}", self.name);
        }
    }
}

/// Debian's ZooKeeper: its configuration directory (logging) and its jar.
const ZOOKEEPER_CLASSPATH: &str = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar";

/// ZooKeeper (Debian's), which Burrow needs for itself, on a free loopback port.
fn start_zookeeper(dir: &Path) -> (Helper, SocketAddr) {
    let addr = free_loopback_addr();
    let config = format!(
        "tickTime=2000\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
         4lw.commands.whitelist=srvr\n",
        dir.join("zk-data").display(),
        addr.port()
    );
    let config_file = dir.join("zoo.cfg");
    std::fs::write(&config_file, config).unwrap();
    // The server's main class on the classpath Debian's zkEnv.sh sets (the jar's manifest
    // names its dependencies), without the scripts' fixed log and config directories.
    let mut command = std::process::Command::new("java");
    command
        .args(["-Xmx128m", "-cp", ZOOKEEPER_CLASSPATH, "org.apache.zookeeper.server.quorum.QuorumPeerMain"])
        .arg(&config_file);
    let log = dir.join("zookeeper.log");
    let mut zk = Helper::start("ZooKeeper", command, &log);
    // Serving once `srvr` names its mode: it listens (and drops sessions) before that.
    let serving = || -> Option<()> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(b"srvr").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer.contains("Mode:").then_some(())
    };
    let deadline = Instant::now() + WAIT;
    while serving().is_none() {
        zk.check_running(&[&log]);
        assert!(Instant::now() < deadline, "ZooKeeper does not serve on {addr}");
        std::thread::sleep(POLL);
    }
    (zk, addr)
}

/// Burrow (Debian's 1.2.1) watching the cluster's Kafka listeners; its HTTP address.
fn start_burrow(dir: &Path, zookeeper: SocketAddr, kafka: &[String]) -> (Helper, SocketAddr) {
    let http = free_loopback_addr();
    let servers = kafka.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    let d = dir.display();
    let config = format!(
        r#"[general]
pidfile="{d}/burrow.pid"
[logging]
filename="{d}/burrow-app.log"
level="info"
[zookeeper]
servers=["{zookeeper}"]
timeout=6
root-path="/burrow"
[client-profile.sluice]
client-id="burrow-test"
kafka-version="2.0.0"
[cluster.sluice]
class-name="kafka"
servers=[{servers}]
client-profile="sluice"
topic-refresh=5
offset-refresh=2
[consumer.sluice]
class-name="kafka"
cluster="sluice"
servers=[{servers}]
client-profile="sluice"
start-latest=false
[httpserver.default]
address="{http}"
[storage.default]
class-name="inmemory"
workers=4
intervals=10
expire-group=604800
min-distance=1
"#
    );
    std::fs::write(dir.join("burrow.toml"), config).unwrap();
    let mut command = std::process::Command::new("/usr/bin/Burrow");
    command.arg("-config-dir").arg(dir);
    let log = dir.join("burrow.log");
    let mut burrow = Helper::start("Burrow", command, &log);
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect_timeout(&http, Duration::from_secs(1)).is_err() {
        burrow.check_running(&[&log, &dir.join("burrow-app.log")]);
        assert!(Instant::now() < deadline, "Burrow does not serve HTTP on {http}");
        std::thread::sleep(POLL);
    }
    (burrow, http)
}

/// What Burrow reports for each partition of `topic` in `group`: (last committed offset
/// it decoded, current lag), by partition; empty while it knows nothing of the group.
fn burrow_view(http: SocketAddr, group: &str, topic: &str) -> BTreeMap<u32, (i64, i64)> {
    let (status, body) = sluice_tests::node_client::http_get(http, &format!("/v3/kafka/sluice/consumer/{group}"));
    if status != 200 {
        return BTreeMap::new();
    }
    let Ok(json) = sluice_tests::json::Json::parse(&body) else { return BTreeMap::new() };
    let Some(partitions) = json.get("topics").and_then(|t| t.get(topic)).and_then(|p| p.as_array()) else {
        return BTreeMap::new();
    };
    let mut view = BTreeMap::new();
    for (p, partition) in partitions.iter().enumerate() {
        let last = partition
            .get("offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| o.iter().filter(|e| !e.is_null()).filter_map(|e| e.get("offset")?.as_i64()).max());
        let lag = partition.get("current-lag").and_then(|l| l.as_i64());
        if let (Some(last), Some(lag)) = (last, lag) {
            view.insert(p as u32, (last, lag));
        }
    }
    view
}

/// Burrow, a lag monitor nobody here wrote, reads the group's commits from
/// `__consumer_offsets` itself (so the records must be in Kafka's schemas) and the high
/// watermarks with ListOffsets, and reports each partition's committed offset and lag; it
/// goes on doing so after the group's coordinator is killed with kill -9 and the group
/// commits again through the new one.
#[test]
fn burrow_reports_a_groups_lag_and_keeps_reporting_it_after_a_coordinator_kill() {
    const TOPIC: &str = "lagged";
    const GROUP: &str = "watched-group";
    for program in ["/usr/bin/Burrow", "/usr/share/java/zookeeper.jar", "java", "kcat"] {
        let found = program.starts_with('/') && Path::new(program).exists()
            || std::process::Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .output()
                .is_ok_and(|o| o.status.success());
        assert!(found, "{program} is not installed; .ci/run installs what these tests need");
    }
    let mut cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let topic = NewTopic { name: TOPIC.into(), partitions: 3, replication_factor: 3, configs: Vec::new() };
    runtime.block_on(async {
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, TOPIC).await;
        wait_for_full_isr(&admin, sluice_schemas::groups::OFFSETS_TOPIC).await;
    });
    let kafka: Vec<String> = cluster.nodes.iter().map(|n| n.kafka_addr().unwrap().to_string()).collect();
    let lines: String = (0..300).map(|i| format!("value-{i}\n")).collect();
    let mut produce = std::process::Command::new("kcat");
    produce.args(["-b", &kafka[0], "-P", "-t", TOPIC, "-X", "acks=all"]);
    let run = sluice_tests::node_client::run_command(produce, lines.as_bytes(), WAIT);
    assert_eq!(run.code, Some(0), "kcat -P: {run:?}");
    // A member reads `count` records (from the group's commits on), committing each.
    let read = |bootstrap: &[String], count: usize| -> BTreeMap<u32, i64> {
        let mut command = std::process::Command::new("python3");
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join("group_member.py"))
            .args(["--bootstrap", &bootstrap.join(","), "--topic", TOPIC, "--group", GROUP])
            .args(["--count", &count.to_string(), "--timeout", "100"])
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let lines = Streaming::start(command).finish(WAIT * 2);
        let mut committed = BTreeMap::new();
        for l in &lines {
            if let (Some(p), Some(o)) =
                (l.get("partition").and_then(|p| p.as_i64()), l.get("offset").and_then(|o| o.as_i64()))
            {
                let c = committed.entry(p as u32).or_insert(0);
                *c = (*c).max(o + 1);
            }
        }
        committed
    };
    let mut committed = read(&kafka, 120);
    let hwm: BTreeMap<u32, i64> =
        (0..3).map(|p| (p, runtime.block_on(high_watermark(&cluster, &admin, TOPIC, p)) as i64)).collect();

    let (_zookeeper, zk_addr) = start_zookeeper(cluster.dir.path());
    let burrow_dir = cluster.dir.path().join("burrow");
    std::fs::create_dir_all(&burrow_dir).unwrap();
    let (_burrow, http) = start_burrow(&burrow_dir, zk_addr, &kafka);
    let expected = |committed: &BTreeMap<u32, i64>| -> BTreeMap<u32, (i64, i64)> {
        committed.iter().map(|(p, c)| (*p, (*c, hwm[p] - c))).collect()
    };
    let want = expected(&committed);
    let seen = runtime.block_on(wait_for("Burrow to report the group's lag", || async {
        let view = burrow_view(http, GROUP, TOPIC);
        want.iter().all(|(p, w)| view.get(p) == Some(w)).then_some(view)
    }));
    eprintln!("Burrow's view (partition: committed, lag): {seen:?}; high watermarks {hwm:?}");

    let coordinator = runtime.block_on(leader_of(
        &admin,
        sluice_schemas::groups::OFFSETS_TOPIC,
        sluice_schemas::groups::offsets_partition(GROUP),
    ));
    cluster.node(coordinator).kill9_and_wait();
    let alive: Vec<String> =
        kafka.iter().enumerate().filter(|(i, _)| *i as u32 + 1 != coordinator).map(|(_, a)| a.clone()).collect();
    for (p, c) in read(&alive, 100) {
        committed.insert(p, c);
    }
    let want = expected(&committed);
    let seen = runtime.block_on(wait_for("Burrow to report the commits made through the new coordinator", || async {
        let view = burrow_view(http, GROUP, TOPIC);
        want.iter().all(|(p, w)| view.get(p) == Some(w)).then_some(view)
    }));
    eprintln!("after killing node {coordinator}, the coordinator: Burrow's view {seen:?}");
    cluster.node(coordinator).restart();
}

/// Kafka's own clients against the cluster: kcat produces with acks=all through one node's
/// Kafka listener (librdkafka sends each partition to its leader from Metadata) and reads
/// everything back as a consumer group through another node's (FindCoordinator names
/// the group's coordinator).
#[test]
fn kcat_produces_to_leaders_and_consumes_as_a_group_across_the_cluster() {
    let cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let topic = NewTopic { name: "kafka-made".into(), partitions: 3, replication_factor: 3, configs: Vec::new() };
    runtime.block_on(async {
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, "kafka-made").await;
        wait_for_full_isr(&admin, sluice_schemas::groups::OFFSETS_TOPIC).await;
    });
    let kafka = |n: usize| cluster.nodes[n].kafka_addr().unwrap().to_string();
    let lines: String = (0..300).map(|i| format!("line-{i}\n")).collect();
    let mut produce = std::process::Command::new("kcat");
    produce.args(["-b", &kafka(0), "-P", "-t", "kafka-made", "-X", "acks=all"]);
    let run = sluice_tests::node_client::run_command(produce, lines.as_bytes(), WAIT);
    assert_eq!(run.code, Some(0), "kcat -P: {run:?}");
    let mut consume = std::process::Command::new("kcat");
    consume.args(["-b", &kafka(2), "-G", "kcat-group", "kafka-made", "-o", "beginning", "-e", "-q"]);
    let run = sluice_tests::node_client::run_command(consume, b"", WAIT);
    assert_eq!(run.code, Some(0), "kcat -G: {run:?}");
    let mut got: Vec<&str> = run.stdout.lines().collect();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 300, "every line once: {:?}", &got[..got.len().min(5)]);
}

/// A restarted node answers Metadata with the topic's partitions, never an error with
/// none: two of the three nodes are killed, so the controller has no quorum; one comes
/// back, and a Kafka client asks it for the topic as soon as it answers at all, while
/// the quorum it completes elects a leader and the node registers. (An error with no
/// partitions, "not available" or "unknown topic", makes librdkafka drop the topic's
/// partitions and fail the messages queued for them.) The node holds Metadata until it
/// has applied its own registration, as a Kafka broker serves only once caught up.
#[test]
fn a_restarted_node_answers_metadata_once_it_has_caught_up_with_the_topics() {
    const TOPIC: &str = "caught-up";
    let mut cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let topic = NewTopic { name: TOPIC.into(), partitions: 3, replication_factor: 3, configs: Vec::new() };
    runtime.block_on(async {
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, TOPIC).await;
    });
    cluster.node(2).kill9_and_wait();
    cluster.node(3).kill9_and_wait();
    cluster.node(3).restart();
    let mut list = std::process::Command::new("kcat");
    list.args(["-b", &cluster.nodes[2].kafka_addr().unwrap().to_string(), "-L", "-J", "-t", TOPIC]);
    let run = sluice_tests::node_client::run_command(list, b"", WAIT);
    assert_eq!(run.code, Some(0), "kcat -L: {run:?}");
    let metadata = sluice_tests::json::Json::parse(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    let topics = metadata.get("topics").and_then(|t| t.as_array()).expect("topics");
    assert_eq!(topics.len(), 1, "{}", run.stdout);
    assert!(topics[0].get("error").is_none(), "the restarted node answered an error: {}", run.stdout);
    let partitions = topics[0].get("partitions").and_then(|p| p.as_array()).map_or(0, <[_]>::len);
    assert_eq!(partitions, 3, "{}", run.stdout);
}

/// A node that is not a controller voter (`--voters 1,2,3` of four nodes) follows the
/// controller's log as a learner: it serves metadata, sends admin requests' clients to
/// the controller, hosts replicas like any node, and a client that knows only it
/// produces and consumes through the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_voters_follows_the_metadata_and_replicates() {
    let cluster = Cluster::start_with(4, &["--voters", "1,2,3"]);
    let only_node_4 = vec![cluster.nodes[3].addr().to_string()];
    let admin = Admin::connect_with_timeout(&only_node_4, Duration::from_secs(2)).await.unwrap();
    // Placement uses live nodes only: wait until all four registered.
    wait_for("four live nodes", || async { (admin.metadata(Some(&[])).await.ok()?.nodes.len() == 4).then_some(()) })
        .await;
    let topic = NewTopic { name: "wide".into(), partitions: 4, replication_factor: 3, configs: Vec::new() };
    create_topic(&admin, &topic).await;
    let parts = wait_for_full_isr(&admin, "wide").await;
    // Node 4 joined after the offsets topic was placed on the voters: it is the least
    // loaded, so it gets replicas and leaderships of the new topic.
    assert!(parts.iter().any(|p| p.leader == Some(4)), "node 4 leads a partition: {parts:?}");
    let metadata = admin.metadata(Some(&[])).await.unwrap();
    assert!(matches!(metadata.controller_id, Some(1..=3)), "a voter controls: {:?}", metadata.controller_id);

    let config =
        ProducerConfig { bootstrap_servers: only_node_4.clone(), acks: Acks::All, ..ProducerConfig::default() };
    let producer = Producer::new(config).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..200 {
        let record = ProducerRecord {
            topic: "wide".into(),
            value: Some(format!("w-{i}").into_bytes()),
            ..ProducerRecord::default()
        };
        deliveries.push(producer.send(record).await.unwrap());
    }
    for d in deliveries {
        tokio::time::timeout(WAIT, d).await.unwrap().unwrap();
    }
    let consumer_config = ConsumerConfig {
        bootstrap_servers: only_node_4,
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = sluice_client::consumer::Consumer::new(consumer_config).await.unwrap();
    consumer.assign((0..4).map(|p| ("wide".to_string(), p)).collect());
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < 200 {
        assert!(Instant::now() < deadline, "consumed {} of 200", seen.len());
        for r in consumer.poll(POLL).await.unwrap() {
            seen.insert(r.value.unwrap_or_default());
        }
    }
}

/// acks=all with the ISR below min.insync.replicas: a topic with replication factor 3 and
/// min.insync.replicas=3 loses a follower (kill -9); once the controller shrinks the ISR,
/// acks=all produce is refused with NOT_ENOUGH_REPLICAS (retried by the producer until
/// its delivery timeout), acks=1 still succeeds, and acks=all works again once the
/// follower is back in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_is_refused_while_the_isr_is_below_min_insync_replicas() {
    let mut cluster = Cluster::start();
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect_with_timeout(&bootstrap, Duration::from_secs(2)).await.unwrap();
    let configs = vec![("min.insync.replicas".to_string(), "3".to_string())];
    let topic = NewTopic { name: "strict".into(), partitions: 1, replication_factor: 3, configs };
    create_topic(&admin, &topic).await;
    let parts = wait_for_full_isr(&admin, "strict").await;
    let leader = parts[0].leader.unwrap();
    let follower = parts[0].replicas.iter().copied().find(|r| *r != leader).unwrap();
    let producer = |acks: Acks| {
        let config = ProducerConfig {
            bootstrap_servers: bootstrap.clone(),
            acks,
            delivery_timeout_ms: 3_000,
            request_timeout_ms: 1_000,
            retry_backoff_ms: 100,
            ..ProducerConfig::default()
        };
        Producer::new(config)
    };
    let record = || ProducerRecord { topic: "strict".into(), value: Some(b"v".to_vec()), ..ProducerRecord::default() };
    let all = producer(Acks::All).await.unwrap();
    tokio::time::timeout(WAIT, all.send(record()).await.unwrap()).await.unwrap().unwrap();

    cluster.node(follower).kill9_and_wait();
    wait_for("the ISR to shrink to 2", || async {
        (partitions(&admin, "strict").await?.first()?.isr.len() == 2).then_some(())
    })
    .await;
    let refused = tokio::time::timeout(WAIT, all.send(record()).await.unwrap()).await.unwrap();
    let error = refused.expect_err("acks=all with 2 of min.insync.replicas=3 in sync").to_string();
    assert!(error.contains("NOT_ENOUGH_REPLICAS"), "{error}");
    let one = producer(Acks::Leader).await.unwrap();
    tokio::time::timeout(WAIT, one.send(record()).await.unwrap()).await.unwrap().unwrap();

    cluster.node(follower).restart();
    wait_for_full_isr(&admin, "strict").await;
    tokio::time::timeout(WAIT, all.send(record()).await.unwrap()).await.unwrap().unwrap();
}

/// What the chaos test's consumer saw: each record it was given, in order, and the
/// position it committed per partition (the next offset to read) once a commit succeeded.
#[derive(Default)]
struct Consumed {
    records: Vec<(u32, u64, Vec<u8>)>,
    committed: BTreeMap<u32, u64>,
    /// Records given below a position the group had committed (a consumer going back).
    backwards: Vec<String>,
    commits: u64,
}

/// One member of a consumer group that polls `topic`, commits what it was given after
/// each poll, and records both, until `stop`.
async fn consume_until(bootstrap: Vec<String>, topic: &str, stop: Arc<AtomicBool>, seen: Arc<Mutex<Consumed>>) {
    let consumer_config = ConsumerConfig {
        bootstrap_servers: bootstrap,
        auto_offset_reset: OffsetReset::Earliest,
        request_timeout_ms: 3_000,
        ..ConsumerConfig::default()
    };
    let group_config = GroupConfig {
        group_id: "chaos-readers".into(),
        session_timeout_ms: 10_000,
        heartbeat_interval_ms: 500,
        enable_auto_commit: false,
        ..GroupConfig::default()
    };
    let mut member = loop {
        // The cluster may be down when it starts: try again until it is up.
        match GroupConsumer::new(consumer_config.clone(), group_config.clone()).await {
            Ok(member) => break member,
            Err(_) if !stop.load(Ordering::SeqCst) => tokio::time::sleep(POLL).await,
            Err(e) => panic!("the consumer never connected: {e}"),
        }
    };
    while member.subscribe(vec![topic.to_string()]).await.is_err() {
        assert!(!stop.load(Ordering::SeqCst), "the consumer never joined its group");
        tokio::time::sleep(POLL).await;
    }
    let mut positions: BTreeMap<u32, u64> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        // Errors while nodes die are retried by the next poll and commit.
        let Ok(records) = member.poll(POLL).await else { continue };
        {
            let mut seen = seen.lock().unwrap();
            for r in records {
                if let Some(committed) = seen.committed.get(&r.partition) {
                    if r.offset < *committed {
                        let note = format!(
                            "{topic}-{} offset {} given after {committed} was committed",
                            r.partition, r.offset
                        );
                        seen.backwards.push(note);
                    }
                }
                positions.insert(r.partition, r.offset + 1);
                seen.records.push((r.partition, r.offset, r.value.unwrap_or_default()));
            }
        }
        let offsets: Vec<(String, u32, u64)> = positions.iter().map(|(p, o)| (topic.to_string(), *p, *o)).collect();
        if member.commit_offsets(&offsets).await.is_ok() {
            let mut seen = seen.lock().unwrap();
            seen.commits += 1;
            for (p, o) in &positions {
                let c = seen.committed.entry(*p).or_insert(0);
                *c = (*c).max(*o);
            }
        }
    }
    let _ = member.close().await;
}

/// Chaos, as Jepsen's queue workload: a 3-node cluster (replication factor 3,
/// min.insync.replicas 2) under an idempotent acks=all confluent-kafka producer and a
/// consumer group, while a seeded nemesis, over and over: kills one node or two with
/// kill -9 (restarting them after a few seconds); freezes one with SIGSTOP for 3 to 15 s;
/// partitions one from the others for 3 to 15 s (its cluster links, which carry the
/// controller quorum and replication, cut both ways), or cuts only what it sends; or
/// fills one node's disk (each node's data is on its own loop-mounted 512 MiB file
/// system) to the last block for 3 to 10 s.
/// The checkers: no acknowledged record lost (each at its acknowledged offset), none
/// stored twice, offsets dense below the high watermark, no consumer given a record below
/// what its group had committed (going back), no consumer given a record that is not in
/// the log at that offset afterwards (a read of uncommitted data), and every acknowledged
/// record consumed. It prints its seed, the faults it injected and what it checked.
/// `SLUICE_CHAOS_SECONDS` (default 60) and `SLUICE_CHAOS_SEED` set the run, and
/// `SLUICE_CHAOS_FAULTS` (e.g. `3,5`) limits the faults to those kinds; the long run is
/// `SLUICE_CHAOS_SECONDS=1800 cargo test -p sluice-tests --test cluster chaos`.
#[test]
fn chaos_kills_pauses_partitions_and_full_disks_lose_no_acknowledged_record_and_store_none_twice() {
    const TOPIC: &str = "chaos";
    const PARTITIONS: u32 = 3;
    let seconds: u64 = std::env::var("SLUICE_CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = std::env::var("SLUICE_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    // SLUICE_CHAOS_FAULTS=3,5 injects only those kinds (see the match below).
    let only_faults: Option<Vec<u64>> = std::env::var("SLUICE_CHAOS_FAULTS")
        .ok()
        .map(|s| s.split(',').map(|k| k.trim().parse().expect("SLUICE_CHAOS_FAULTS: fault kinds 0 to 5")).collect());
    eprintln!("chaos: seed {seed}, {seconds} s (SLUICE_CHAOS_SEED={seed} repeats the nemesis' choices)");
    let mut rng = Rng::new(seed);
    let mut cluster = Cluster::start_for(NODES, &[], Faults::ProcessesLinksAndDisks);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let configs = vec![("min.insync.replicas".to_string(), "2".to_string())];
    let topic = NewTopic { name: TOPIC.into(), partitions: PARTITIONS, replication_factor: 3, configs };
    runtime.block_on(async {
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, TOPIC).await;
        wait_for_full_isr(&admin, sluice_schemas::groups::OFFSETS_TOPIC).await;
    });
    let bootstrap: Vec<String> = cluster.nodes.iter().map(|n| n.kafka_addr().unwrap().to_string()).collect();
    let stop_file = cluster.dir.path().join("stop-producing");
    let mut command = std::process::Command::new("python3");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join("idempotent.py"))
        .args(["--bootstrap", &bootstrap.join(","), "--topic", TOPIC, "--partitions", &PARTITIONS.to_string()])
        .args(["--rate", "1000", "--timeout", &(seconds + 300).to_string()])
        .arg("--stop-file")
        .arg(&stop_file)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let producer = Streaming::start(command);
    let stop_consuming = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(Mutex::new(Consumed::default()));
    let consumer = runtime.spawn(consume_until(cluster.bootstrap(), TOPIC, stop_consuming.clone(), consumed.clone()));

    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(rng.between(1_000, 3_000)));
        let first = rng.between(1, NODES as u64) as u32;
        let started = Instant::now();
        let mut kind = rng.between(0, 5);
        if let Some(only) = &only_faults {
            kind = only[kind as usize % only.len()];
        }
        eprintln!("chaos: fault {kind} on node {first} at {:?}", end.saturating_duration_since(started));
        match kind {
            0 => {
                cluster.node(first).kill9_and_wait();
                std::thread::sleep(Duration::from_millis(rng.between(2_000, 6_000)));
                cluster.node(first).restart();
                *faults.entry("kill one node").or_default() += 1;
            }
            1 => {
                let second = first % NODES as u32 + 1;
                cluster.node(first).kill9_and_wait();
                cluster.node(second).kill9_and_wait();
                std::thread::sleep(Duration::from_millis(rng.between(2_000, 5_000)));
                cluster.node(first).restart();
                cluster.node(second).restart();
                *faults.entry("kill two nodes").or_default() += 1;
            }
            2 => {
                cluster.node(first).pause();
                std::thread::sleep(Duration::from_millis(rng.between(3_000, 15_000)));
                cluster.node(first).resume();
                *faults.entry("pause one node (SIGSTOP)").or_default() += 1;
            }
            3 | 4 => {
                // Kind 3 cuts the node off both ways; kind 4 only what it sends, so it
                // hears the others (a controller's heartbeats, a leader's fetches' answers)
                // but cannot answer them.
                let both = kind == 3;
                cluster.set_links(first, true, both, true);
                std::thread::sleep(Duration::from_millis(rng.between(3_000, 15_000)));
                cluster.set_links(first, true, both, false);
                let what = if both { "partition one node from the others" } else { "cut one node's outbound links" };
                *faults.entry(what).or_default() += 1;
            }
            _ => {
                let disk = &cluster.disks[first as usize - 1];
                let taken = disk.fill(0);
                eprintln!("chaos: filled node {first}'s disk ({} MiB taken)", taken >> 20);
                std::thread::sleep(Duration::from_millis(rng.between(3_000, 10_000)));
                disk.unfill();
                *faults.entry("fill one node's disk").or_default() += 1;
            }
        }
        runtime.block_on(wait_for_full_isr(&admin, TOPIC));
        eprintln!("chaos: {faults:?}; {} acknowledged so far", producer.count("offset"));
    }
    std::fs::write(&stop_file, b"").unwrap();
    let lines = producer.finish(WAIT * 2);
    let done = lines.iter().find(|l| l.get("done").is_some()).expect("the producer finished");
    assert_eq!(done.get("unflushed").and_then(sluice_tests::json::Json::as_i64), Some(0), "{done:?}");
    let fatal: Vec<_> =
        lines.iter().filter(|l| l.get("fatal").and_then(sluice_tests::json::Json::as_bool) == Some(true)).collect();
    assert!(fatal.is_empty(), "the producer failed fatally: {fatal:?}");
    let acked = acknowledged(&lines);
    let failed_deliveries =
        lines.iter().filter(|l| l.get("delivery").and_then(sluice_tests::json::Json::as_bool) == Some(true)).count();

    runtime.block_on(wait_for_full_isr(&admin, TOPIC));
    let high_watermarks: Vec<u64> =
        (0..PARTITIONS).map(|p| runtime.block_on(high_watermark(&cluster, &admin, TOPIC, p))).collect();
    // The consumer catches up with everything committed, then stops.
    let deadline = Instant::now() + WAIT;
    loop {
        let caught_up = {
            let seen = consumed.lock().unwrap();
            (0..PARTITIONS).all(|p| seen.committed.get(&p).copied().unwrap_or(0) >= high_watermarks[p as usize])
        };
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "the consumer did not catch up with {high_watermarks:?} within {WAIT:?}");
        std::thread::sleep(POLL);
    }
    stop_consuming.store(true, Ordering::SeqCst);
    runtime.block_on(async { tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap() });
    for node in &mut cluster.nodes {
        node.sigterm_and_wait();
    }

    let errors: Vec<String> = lines
        .iter()
        .filter(|l| l.get("error").is_some())
        .filter(|l| {
            !matches!(
                l.get("code").and_then(sluice_tests::json::Json::as_str),
                Some("_TRANSPORT" | "_ALL_BROKERS_DOWN")
            )
        })
        .map(|l| format!("{l:?}"))
        .collect();
    eprintln!("chaos: producer errors other than refused connections: {errors:?}");
    let mut stored: BTreeMap<u32, BTreeMap<u64, Vec<u8>>> = BTreeMap::new();
    let mut seen_values: BTreeMap<Vec<u8>, (u32, u64)> = BTreeMap::new();
    for p in 0..PARTITIONS {
        let dir = cluster.data_dir(1).join(format!("{TOPIC}-{p}"));
        let batches = stored_batches(&dir, high_watermarks[p as usize]);
        let identity = |offset: u64| {
            batches.iter().rev().find(|(base, _)| *base <= offset).map(|(base, bytes)| {
                let h = sluice_schemas::batch::BatchHeader::view(bytes).unwrap();
                format!(
                    "batch at {base}: producer {} epoch {} base sequence {} records {}",
                    h.producer_id.get(),
                    h.producer_epoch.get(),
                    h.base_sequence.get(),
                    h.record_count.get()
                )
            })
        };
        let records = records_of(&batches);
        let mut here: BTreeMap<&Vec<u8>, u64> = BTreeMap::new();
        let mut shown = 0;
        for (offset, value) in &records {
            if let Some(first) = here.insert(value, *offset) {
                shown += 1;
                if shown > 3 {
                    continue;
                }
                let text = String::from_utf8_lossy(value).into_owned();
                let acked_at = acked.at.iter().find(|(_, v)| **v == text).map(|(k, _)| *k);
                eprintln!(
                    "chaos: duplicate {text} (acknowledged at {acked_at:?}): {:?} / {:?}",
                    identity(first),
                    identity(*offset)
                );
            }
        }
        let offsets: Vec<u64> = records.keys().copied().collect();
        let dense: Vec<u64> = (0..high_watermarks[p as usize]).collect();
        assert_eq!(offsets, dense, "{TOPIC}-{p}: offsets below the high watermark are dense");
        assert_stored_once(&mut seen_values, p, &records);
        stored.insert(p, records);
    }
    for (p, records) in &stored {
        acked.assert_stored(TOPIC, *p, records, "lost");
    }
    let seen = consumed.lock().unwrap();
    assert!(seen.backwards.is_empty(), "consumers went back: {:?}", seen.backwards);
    let mut consumed_values = std::collections::BTreeSet::new();
    for (p, offset, value) in &seen.records {
        assert_eq!(
            stored[p].get(offset),
            Some(value),
            "the consumer read {TOPIC}-{p}@{offset} = {}, which the log does not hold there",
            String::from_utf8_lossy(value)
        );
        consumed_values.insert(value.clone());
    }
    let unconsumed = acked.values().filter(|v| !consumed_values.contains(v.as_bytes())).count();
    assert_eq!(unconsumed, 0, "acknowledged records the consumer never got");
    let total: usize = stored.values().map(BTreeMap::len).sum();
    eprintln!(
        "chaos: seed {seed}; faults {faults:?}; {} acknowledged ({} without an offset; {failed_deliveries} \
         deliveries failed and were not acknowledged), {total} stored, none lost, none twice; {} consumed ({} \
         redelivered after a failure, none below a commit, none not in the log), {} commits",
        acked.len(),
        acked.without_offset.len(),
        seen.records.len(),
        seen.records.len() - consumed_values.len(),
        seen.commits
    );
}

/// A controller voter whose disk filled leaves the quorum (it may not acknowledge what it
/// could not store) and takes part again once its disk has room, without a restart: with
/// its disk freed and the quorum's leader then killed, it and the third voter elect a
/// new leader and commit a topic creation.
#[test]
fn a_controller_voter_whose_disk_filled_votes_again_once_it_has_room() {
    let mut cluster = Cluster::start_for(NODES, &[], Faults::ProcessesLinksAndDisks);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let topic = NewTopic { name: "configs".into(), partitions: 1, replication_factor: 3, configs: Vec::new() };
    runtime.block_on(create_topic(&admin, &topic));
    // A topic config change is one controller command, committed by a quorum.
    let change = |n: u32| {
        let set = [("retention.ms".to_string(), (86_400_000 + n).to_string())];
        runtime.block_on(wait_for(&format!("config change {n} to commit"), || async {
            admin.alter_configs("configs", &set, &[]).await.ok()
        }));
    };
    let leader = runtime.block_on(wait_for("a controller", || async { admin.describe_quorum().await.ok()?.leader }));
    let full = leader % NODES as u32 + 1;
    let taken = cluster.disks[full as usize - 1].fill(0);
    eprintln!("filled node {full}'s disk ({} MiB); node {leader} leads the quorum", taken >> 20);
    // The controller's log grows with each command: once it needs a new block, node
    // `full` cannot store it (a partial page is rewritten in place, so a few fit).
    let left = "cannot write its log, leaving the quorum";
    let deadline = Instant::now() + WAIT;
    for n in 0.. {
        if cluster.node(full).log().contains(left) {
            break;
        }
        assert!(Instant::now() < deadline, "node {full} wrote {n} config changes to its controller log on a full disk");
        change(n);
    }
    cluster.disks[full as usize - 1].unfill();
    let back = "opened its log again and takes part in the quorum";
    while !cluster.node(full).log().contains(back) {
        assert!(Instant::now() < deadline, "node {full}'s voter did not come back after its disk had room");
        std::thread::sleep(POLL);
    }
    // Two of three voters left: the one whose disk filled must vote and store.
    cluster.node(leader).kill9_and_wait();
    change(u32::MAX / 2);
    let quorum = runtime.block_on(wait_for("a new controller", || async {
        admin.describe_quorum().await.ok().filter(|q| q.leader.is_some_and(|l| l != leader))
    }));
    eprintln!("node {leader} killed; the quorum after: {quorum:?}");
    cluster.node(leader).restart();
}

/// On 3 nodes: a transaction its confluent-kafka producer left open holds the partition's
/// last stable offset, even through a kill -9 of the transaction coordinator's node; the
/// new coordinator aborts it at its timeout, and the last stable offset moves to the end.
#[test]
fn an_open_transaction_is_aborted_at_its_timeout_by_a_new_coordinator_after_a_kill() {
    const TXN_ID: &str = "left-open";
    let mut cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let configs = vec![("min.insync.replicas".to_string(), "2".to_string())];
    let topic = NewTopic { name: "open".into(), partitions: 1, replication_factor: 3, configs };
    runtime.block_on(async {
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, "open").await;
    });
    let bootstrap: Vec<String> = cluster.nodes.iter().map(|n| n.kafka_addr().unwrap().to_string()).collect();
    let bootstrap = bootstrap.join(",");
    let run = |args: &[&str]| {
        let mut all = vec!["--bootstrap", &bootstrap];
        all.extend_from_slice(args);
        kafka_script("transactions.py", &all).finish(WAIT * 2)
    };
    // The partition's high watermark for `isolation`; `None` while a kill moves its leader
    // (the script then fails and prints nothing).
    let try_high = |isolation: &str| -> Option<i64> {
        let lines = run(&["watermarks", "open", "0", isolation]);
        lines.last().and_then(|l| l.get("high")).and_then(sluice_tests::json::Json::as_i64)
    };
    let high = |isolation: &str| try_high(isolation).expect("watermarks");
    run(&["produce", "open", "1", "committed", "c"]);
    let opened = run(&["open", "open", TXN_ID, "15000"]);
    assert_eq!(opened.last().and_then(|l| l.get("written")).and_then(sluice_tests::json::Json::as_bool), Some(true));
    let (stable, end) = (high("read_committed"), high("read_uncommitted"));
    // Three committed records and their marker, then the open transaction's record.
    assert_eq!((stable, end), (4, 5), "the open transaction's record is not stable");
    let coordinator =
        runtime.block_on(leader_of(&admin, "__transaction_state", sluice_node::txn::txn_partition(TXN_ID)));
    cluster.node(coordinator).kill9_and_wait();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the open transaction was not aborted within 60 s");
        let (Some(now_stable), Some(now_end)) = (try_high("read_committed"), try_high("read_uncommitted")) else {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        if now_stable == now_end && now_end > end {
            break;
        }
        assert!(now_stable <= stable || now_stable == now_end, "the LSO passed the open record early");
        assert!(Instant::now() < deadline, "the open transaction was not aborted: LSO {now_stable}, end {now_end}");
        std::thread::sleep(Duration::from_millis(500));
    }
    cluster.node(coordinator).restart();
    let committed = run(&["consume", "open", "read_committed", "3"]);
    let values: Vec<&str> =
        committed.iter().filter_map(|l| l.get("value").and_then(sluice_tests::json::Json::as_str)).collect();
    assert_eq!(values, ["committed-0-0", "committed-0-1", "committed-0-2"]);
}

/// Transactions v2 (KIP-890 part 2) across nodes, as a Kafka 4 client speaks it: each
/// partition's leader joins the partition to the transaction at the coordinator (on
/// another node for most of them, with the inter-broker AddPartitionsToTxn) when a
/// Produce v12 brings its first transactional batch; EndTxn v5 bumps the epoch, and the
/// markers the coordinator writes through every leader carry it, so the old epoch is
/// fenced everywhere and every partition's last stable offset passes the marker.
/// Then transactions v1 (KIP-890 part 1): each leader verifies a transaction's first
/// batch at the coordinator (a verify-only AddPartitionsToTxn for the leaders on other
/// nodes), so a produce arriving after the transaction was aborted is refused
/// (INVALID_TXN_STATE) on every leader and leaves no transaction hanging.
#[test]
fn transactions_join_at_their_coordinator_through_leaders_on_other_nodes() {
    use kafka_protocol::messages::*;
    use sluice_tests::kafka_wire::{end_txn, init_transactional, txn_batch, Wire};
    const TXN_ID: &str = "v2-cluster";
    const PARTITIONS: u32 = 3;
    let cluster = Cluster::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let admin = runtime.block_on(Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2))).unwrap();
    let configs = vec![("min.insync.replicas".to_string(), "2".to_string())];
    let topic = NewTopic { name: "v2".into(), partitions: PARTITIONS, replication_factor: 3, configs };
    runtime.block_on(async {
        create_topic(&admin, &topic).await;
        wait_for_full_isr(&admin, "v2").await;
    });
    let kafka = |node: u32| cluster.nodes[node as usize - 1].kafka_addr().unwrap();
    let text = |s: &str| kafka_protocol::protocol::StrBytes::from_string(s.to_string());
    let id = TransactionalId(text(TXN_ID));
    // The coordinator: FindCoordinator creates the state topic; InitProducerId there
    // answers once its partition is loaded.
    let init_at_coordinator = |txn_id: &str, version: i16| {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no coordinator answered InitProducerId for {txn_id}");
            let find = FindCoordinatorRequest::default().with_key(text(txn_id)).with_key_type(1);
            let r: FindCoordinatorResponse = Wire::connect(kafka(1)).call(ApiKey::FindCoordinator, 3, &find);
            if r.error_code == 0 {
                let node = u32::try_from(r.node_id.0).unwrap();
                let init = init_transactional(txn_id, 60_000);
                let r: InitProducerIdResponse = Wire::connect(kafka(node)).call(ApiKey::InitProducerId, version, &init);
                if r.error_code == 0 {
                    assert_eq!(r.producer_epoch, 0);
                    break (node, r.producer_id);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let (coordinator, pid) = init_at_coordinator(TXN_ID, 5);
    let leaders: Vec<u32> = (0..PARTITIONS).map(|p| runtime.block_on(leader_of(&admin, "v2", p))).collect();
    assert!(leaders.iter().any(|l| *l != coordinator), "a partition led away from the coordinator: {leaders:?}");
    // One transactional batch per partition, each to its leader; a leader whose
    // partition cannot join yet answers NOT_ENOUGH_REPLICAS (19), and the batch is retried.
    // (transactional id, producer id, epoch, sequence, Produce version).
    let produce_as = |txn: &TransactionalId, pid: ProducerId, p: u32, epoch: i16, sequence: i32, version: i16| -> i16 {
        let request = ProduceRequest::default()
            .with_transactional_id(Some(txn.clone()))
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(text("v2")))
                .with_partition_data(vec![produce_request::PartitionProduceData::default()
                    .with_index(i32::try_from(p).unwrap())
                    .with_records(Some(txn_batch(pid.0, epoch, sequence, &[b"one", b"two"])))])]);
        let r: ProduceResponse = Wire::connect(kafka(leaders[p as usize])).call(ApiKey::Produce, version, &request);
        r.responses[0].partition_responses[0].error_code
    };
    let produce = |p: u32, epoch: i16| produce_as(&id, pid, p, epoch, 0, 12);
    // Retried while the coordinator cannot take the partition yet (NOT_ENOUGH_REPLICAS).
    let produce_until_taken = |produce: &dyn Fn(u32) -> i16| {
        for p in 0..PARTITIONS {
            let deadline = Instant::now() + WAIT;
            loop {
                match produce(p) {
                    0 => break,
                    19 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                    code => panic!("v2-{p}: the transactional produce answered error {code}"),
                }
            }
        }
    };
    produce_until_taken(&|p| produce(p, 0));
    let mut at_coordinator = Wire::connect(kafka(coordinator));
    let describe = DescribeTransactionsRequest::default().with_transactional_ids(vec![id.clone()]);
    let r: DescribeTransactionsResponse = at_coordinator.call(ApiKey::DescribeTransactions, 0, &describe);
    let state = &r.transaction_states[0];
    let joined: Vec<i32> = state.topics.iter().flat_map(|t| t.partitions.clone()).collect();
    assert_eq!((state.transaction_state.as_str(), joined), ("Ongoing", vec![0, 1, 2]), "{r:?}");
    let r: EndTxnResponse = at_coordinator.call(ApiKey::EndTxn, 5, &end_txn(&id, pid, 0, true));
    assert_eq!((r.error_code, r.producer_id, r.producer_epoch), (0, pid, 1), "{r:?}");
    // Waits until `p`'s log end and read_committed end (ListOffsets latest) are both `end`.
    let wait_stable_end = |p: u32, end: i64| {
        let list = |isolation: i8| {
            ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_isolation_level(isolation).with_topics(
                vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(TopicName(text("v2")))
                    .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(i32::try_from(p).unwrap())
                        .with_timestamp(-1)])],
            )
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let mut leader = Wire::connect(kafka(leaders[p as usize]));
            let ends: Vec<(i16, i64)> = [0, 1]
                .into_iter()
                .map(|isolation| {
                    let r: ListOffsetsResponse = leader.call(ApiKey::ListOffsets, 5, &list(isolation));
                    (r.topics[0].partitions[0].error_code, r.topics[0].partitions[0].offset)
                })
                .collect();
            if ends == [(0, end), (0, end)] {
                break;
            }
            assert!(Instant::now() < deadline, "v2-{p}: (log end, read_committed end) {ends:?}, waiting for {end}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for p in 0..PARTITIONS {
        let code = produce(p, 0);
        assert!(code == 47 || code == 90, "v2-{p}: the old epoch is fenced by the marker, not {code}");
        // Two records and the commit marker are stable.
        wait_stable_end(p, 3);
    }

    // Transactions v1: AddPartitionsToTxn v3, Produce v9, EndTxn v3 (librdkafka's).
    const V1_ID: &str = "v1-cluster";
    let v1 = TransactionalId(text(V1_ID));
    let (v1_coordinator, v1_pid) = init_at_coordinator(V1_ID, 4);
    assert!(leaders.iter().any(|l| *l != v1_coordinator), "a partition led away from {v1_coordinator}: {leaders:?}");
    let mut at_v1_coordinator = Wire::connect(kafka(v1_coordinator));
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(v1.clone())
        .with_v3_and_below_producer_id(v1_pid)
        .with_v3_and_below_producer_epoch(0)
        .with_v3_and_below_topics(vec![add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
            .with_name(TopicName(text("v2")))
            .with_partitions((0..PARTITIONS).map(|p| i32::try_from(p).unwrap()).collect())]);
    let r: AddPartitionsToTxnResponse = at_v1_coordinator.call(ApiKey::AddPartitionsToTxn, 3, &add);
    assert!(
        r.results_by_topic_v3_and_below[0].results_by_partition.iter().all(|p| p.partition_error_code == 0),
        "{r:?}"
    );
    produce_until_taken(&|p| produce_as(&v1, v1_pid, p, 0, 0, 9));
    let r: EndTxnResponse = at_v1_coordinator.call(ApiKey::EndTxn, 3, &end_txn(&v1, v1_pid, 0, false));
    assert_eq!(r.error_code, 0, "{r:?}");
    at_v1_coordinator.wait_for_transaction_state(&v1, "CompleteAbort", WAIT);
    for p in 0..PARTITIONS {
        // Two aborted records and the abort marker after the committed three.
        wait_stable_end(p, 6);
        // The late batch: the next sequence of the aborted transaction.
        let code = produce_as(&v1, v1_pid, p, 0, 2, 9);
        assert_eq!(code, 48, "v2-{p} (leader {}, coordinator {v1_coordinator}): a late produce", leaders[p as usize]);
        wait_stable_end(p, 6);
    }
}

/// kcat `-L` (Metadata) of `topic` at `bootstrap`, logged in as `user` (SCRAM-SHA-256 over
/// SASL_PLAINTEXT): what it printed, or why it failed.
fn kcat_as(bootstrap: &str, user: &str, password: &str, topic: &str) -> Result<String, String> {
    let mut kcat = std::process::Command::new("kcat");
    kcat.args(["-b", bootstrap, "-L", "-t", topic, "-m", "10"]);
    for setting in [
        "security.protocol=sasl_plaintext".to_string(),
        "sasl.mechanism=SCRAM-SHA-256".to_string(),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
    ] {
        kcat.args(["-X", &setting]);
    }
    let run = sluice_tests::node_client::run_command(kcat, b"", WAIT);
    if run.code == Some(0) {
        Ok(run.stdout)
    } else {
        Err(format!("{}{}", run.stdout, run.stderr))
    }
}

/// Creates `user` with AlterUserScramCredentials sent to the Kafka listener at `at`
/// itself, logged in there as `admin` (PLAIN), and gives it DESCRIBE on `shared`.
fn forwarded_user(at: &str, user: &str, password: &str) {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let mut w = sluice_tests::kafka_wire::Wire::connect(at.parse().unwrap());
    let text = |s: &str| StrBytes::from_string(s.to_string());
    let r: SaslHandshakeResponse =
        w.call(ApiKey::SaslHandshake, 1, &SaslHandshakeRequest::default().with_mechanism(text("PLAIN")));
    assert_eq!(r.error_code, 0);
    let token = bytes::Bytes::from_static(b"\0admin\0admin-secret");
    let r: SaslAuthenticateResponse =
        w.call(ApiKey::SaslAuthenticate, 2, &SaslAuthenticateRequest::default().with_auth_bytes(token));
    assert_eq!(r.error_code, 0);
    let mechanism = sluice_schemas::sasl::ScramMechanism::Sha256;
    let salted = sluice_schemas::sasl::salted_password(mechanism, password.as_bytes(), b"salt", 4096);
    let upsert = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
            .with_name(text(user))
            .with_mechanism(1)
            .with_iterations(4096)
            .with_salt(bytes::Bytes::from_static(b"salt"))
            .with_salted_password(bytes::Bytes::from(salted)),
    ]);
    let r: AlterUserScramCredentialsResponse = w.call(ApiKey::AlterUserScramCredentials, 0, &upsert);
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
    let acl = create_acls_request::AclCreation::default()
        .with_resource_type(2)
        .with_resource_name(text("shared"))
        .with_resource_pattern_type(3)
        .with_principal(text(&format!("User:{user}")))
        .with_host(text("*"))
        .with_operation(8)
        .with_permission_type(3);
    let r: CreateAclsResponse = w.call(ApiKey::CreateAcls, 3, &CreateAclsRequest::default().with_creations(vec![acl]));
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
}

/// tests/kafka/admin.py at `bootstrap` as the super user `admin`.
fn admin_script(bootstrap: &str, command: &[&str]) -> Vec<sluice_tests::json::Json> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka").join("admin.py");
    let mut script = std::process::Command::new("python3");
    script.arg(&path).args(["--timeout", "50", "--bootstrap", bootstrap]);
    script.args(["--sasl-mechanism", "SCRAM-SHA-256", "--sasl-user", "admin", "--sasl-password", "admin-secret"]);
    script.args(command).env("PYTHONDONTWRITEBYTECODE", "1");
    let run = sluice_tests::node_client::run_command(script, b"", WAIT);
    assert_eq!(run.code, Some(0), "admin.py {command:?}: {run:?}");
    run.stdout.lines().map(|l| sluice_tests::json::Json::parse(l).unwrap()).collect()
}

/// Users and ACLs are cluster metadata: made through a node that is not the controller
/// (it forwards them), every node lets the user in and applies the ACLs; transactions
/// whose partitions other nodes lead complete although every Kafka listener needs a
/// login (markers and partition joins go on the cluster link); after the controller is
/// killed, the rest of the cluster still has the users and ACLs, and a user and an ACL
/// made then through a surviving node work on every surviving node. The cluster link is
/// mutual TLS (`--cluster-tls-ca`), as a secured cluster's should be.
#[test]
fn users_and_acls_reach_every_node_and_survive_a_controller_kill() {
    let env = [("SLUICE_BOOTSTRAP_USER", "admin:admin-secret")];
    let pki_dir = tempfile::tempdir().expect("a temporary directory");
    let pki = sluice_tests::pki::Pki::new(pki_dir.path());
    let ca = pki.ca("cluster-ca");
    let (cert, key) = pki.leaf("node", "cluster-ca");
    let flags = [
        "--authorizer",
        "acl",
        "--super-users",
        "User:admin",
        "--cluster-tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    let mut cluster = Cluster::start_full(NODES, &flags, Faults::Processes, "SASL_PLAINTEXT", &env, &|_, _| Vec::new());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // The native admin client logs in too (its listeners are SASL_PLAINTEXT).
    let login = sluice_client::SaslSettings {
        mechanism: "SCRAM-SHA-256".into(),
        username: "admin".into(),
        password: "admin-secret".into(),
    };
    let security =
        sluice_client::Security::from_kafka("SASL_PLAINTEXT", sluice_client::TlsSettings::default(), Some(login))
            .unwrap();
    let admin = runtime.block_on(wait_for("the bootstrap user's first login", || async {
        Admin::connect_secured(&cluster.bootstrap(), security.clone(), Duration::from_secs(2)).await.ok()
    }));
    let controller =
        runtime.block_on(wait_for("a controller", || async { admin.metadata(Some(&[])).await.ok()?.controller_id }));
    let kafka = |cluster: &Cluster, n: u32| cluster.nodes[n as usize - 1].kafka_addr().unwrap().to_string();
    let others: Vec<u32> = (1..=NODES as u32).filter(|n| *n != controller).collect();
    let via = kafka(&cluster, others[0]);
    let deadline = Instant::now() + WAIT;
    while kcat_as(&via, "admin", "admin-secret", "none").is_err() {
        assert!(Instant::now() < deadline, "the bootstrap user never logged in at {via}");
        std::thread::sleep(POLL);
    }
    for name in ["shared", "private"] {
        let topic = NewTopic { name: name.into(), partitions: 1, replication_factor: 3, configs: Vec::new() };
        runtime.block_on(create_topic(&admin, &topic));
        runtime.block_on(wait_for_full_isr(&admin, name));
    }
    let ok = |lines: Vec<sluice_tests::json::Json>| {
        assert!(lines.iter().all(|l| l.get("error") == Some(&sluice_tests::json::Json::Null)), "{lines:?}");
    };
    ok(admin_script(&via, &["set-user", "reader", "SCRAM-SHA-256", "reader-pw"]));
    ok(admin_script(&via, &["acl-add", "TOPIC", "shared", "LITERAL", "User:reader", "DESCRIBE", "ALLOW"]));
    // Sent to a node that is not the controller itself (a client may pick any node).
    forwarded_user(&via, "direct", "direct-pw");
    let check = |cluster: &Cluster, nodes: &[u32], user: &str, password: &str| {
        for n in nodes {
            let at = kafka(cluster, *n);
            let shared = kcat_as(&at, user, password, "shared").unwrap_or_else(|e| panic!("{user} at node {n}: {e}"));
            assert!(shared.contains("topic \"shared\" with 1 partitions"), "node {n}: {shared}");
            let private = kcat_as(&at, user, password, "private").unwrap_or_else(|e| e);
            assert!(private.contains("Topic authorization failed"), "node {n}: {private}");
        }
    };
    let all: Vec<u32> = (1..=NODES as u32).collect();
    check(&cluster, &all, "reader", "reader-pw");
    check(&cluster, &all, "direct", "direct-pw");

    // Transactions across the nodes: markers and partition joins go between nodes on the
    // cluster link, which needs no login.
    let topic = NewTopic { name: "txn-out".into(), partitions: 3, replication_factor: 3, configs: Vec::new() };
    runtime.block_on(create_topic(&admin, &topic));
    runtime.block_on(wait_for_full_isr(&admin, "txn-out"));
    let login = ["--sasl-mechanism", "SCRAM-SHA-256", "--sasl-user", "admin", "--sasl-password", "admin-secret"];
    let transactions = |command: &[&str]| {
        let args: Vec<&str> = ["--bootstrap", via.as_str()].iter().chain(&login).chain(command).copied().collect();
        kafka_script("transactions.py", &args).finish(WAIT * 2)
    };
    let outcomes = transactions(&["produce", "txn-out", "3", "secured-txn", "cac"]);
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    let read = transactions(&["consume", "txn-out", "read_committed", "6"]);
    let values: Vec<&str> =
        read.iter().filter_map(|l| l.get("value").and_then(sluice_tests::json::Json::as_str)).collect();
    assert_eq!(values.len(), 6, "the two committed transactions' records, over SASL listeners: {read:?}");
    assert!(values.iter().all(|v| !v.contains("-1-")), "none of the aborted one: {values:?}");

    cluster.node(controller).kill9_and_wait();
    let via = kafka(&cluster, others[1]);
    check(&cluster, &others, "reader", "reader-pw");
    // Kafka clients send user changes to the controller their last Metadata named: wait
    // until the survivors name the new one (a client that asked in between would wait for
    // the dead node until its next metadata refresh, minutes later).
    runtime.block_on(wait_for("a new controller", || async {
        let c = admin.metadata(Some(&[])).await.ok()?.controller_id?;
        (c != controller).then_some(())
    }));
    ok(admin_script(&via, &["set-user", "late", "SCRAM-SHA-256", "late-pw"]));
    ok(admin_script(&via, &["acl-add", "TOPIC", "shared", "LITERAL", "User:late", "DESCRIBE", "ALLOW"]));
    check(&cluster, &others, "late", "late-pw");
    for node in &cluster.nodes {
        assert!(!node.log().contains("the cluster link is plaintext"), "the link is TLS: no warning");
    }
}

/// `--cluster-tls-ca`: the cluster link is mutual TLS. Three nodes replicate a topic with
/// replication factor 3 (acks=all) and elect a controller over it; a plaintext frame sent
/// to a node's cluster port, and a TLS client whose certificate another CA signed, are
/// closed at the handshake with a log line, and the cluster goes on replicating. Then the
/// cluster CA and the nodes' certificates are replaced and every node gets SIGHUP: the
/// old certificate is refused from then on, and a node killed and restarted rejoins over
/// the new ones.
#[test]
fn the_cluster_link_is_mutual_tls_and_refuses_strangers() {
    const TOPIC: &str = "over-tls";
    let pki_dir = tempfile::tempdir().expect("a temporary directory");
    let pki = sluice_tests::pki::Pki::new(pki_dir.path());
    let ca = pki.ca("cluster-ca");
    let (cert, key) = pki.leaf("node", "cluster-ca");
    let _other_ca = pki.ca("other-ca");
    let (stranger_cert, stranger_key) = pki.leaf("stranger", "other-ca");
    let flags = ["--cluster-tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key];
    let mut cluster = Cluster::start_full(NODES, &flags, Faults::Processes, "PLAINTEXT", &[], &|_, _| Vec::new());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let produce = |cluster: &Cluster, records: u64| {
        runtime.block_on(async {
            let admin = Admin::connect_with_timeout(&cluster.bootstrap(), Duration::from_secs(2)).await.unwrap();
            let topic = NewTopic { name: TOPIC.into(), partitions: 1, replication_factor: 3, configs: Vec::new() };
            if partitions(&admin, TOPIC).await.is_none() {
                create_topic(&admin, &topic).await;
            }
            wait_for_full_isr(&admin, TOPIC).await;
            let config =
                ProducerConfig { bootstrap_servers: cluster.bootstrap(), acks: Acks::All, ..ProducerConfig::default() };
            let producer = Producer::new(config).await.unwrap();
            for i in 0..records {
                let record = ProducerRecord {
                    topic: TOPIC.into(),
                    partition: Some(0),
                    value: Some(format!("v{i}").into_bytes()),
                    ..ProducerRecord::default()
                };
                let delivery = producer.send(record).await.unwrap();
                tokio::time::timeout(WAIT, delivery).await.unwrap().unwrap();
            }
            wait_for_full_isr(&admin, TOPIC).await;
            high_watermark(cluster, &admin, TOPIC, 0).await
        })
    };
    assert_eq!(produce(&cluster, 20), 20, "acks=all with three replicas over the TLS link");

    // A plaintext frame, and a TLS client with another CA's certificate.
    let target = cluster.cluster_addrs[0];
    let mut plain = std::net::TcpStream::connect(target).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut plain, &[0, 0, 0, 5, 1, 1, 2, 3, 4]).unwrap();
    // At most a TLS alert comes back, then the end of the stream.
    let mut buf = [0u8; 64];
    let mut answered = 0;
    while let Ok(n @ 1..) = std::io::Read::read(&mut plain, &mut buf) {
        answered += n;
        assert!(answered < 1024, "a plaintext peer is closed, not answered");
    }
    let mut s_client = std::process::Command::new("openssl");
    s_client.args(["s_client", "-connect", &target.to_string(), "-CAfile", &ca, "-cert", &stranger_cert]);
    s_client.args(["-key", &stranger_key, "-quiet"]);
    let _ = sluice_tests::node_client::run_command(s_client, b"garbage\n", Duration::from_secs(20));
    let refusals =
        |cluster: &Cluster| cluster.nodes[0].log().matches("closing a cluster connection: TLS handshake").count();
    let deadline = Instant::now() + WAIT;
    while refusals(&cluster) < 2 {
        assert!(Instant::now() < deadline, "both strangers' handshakes are refused and logged");
        std::thread::sleep(POLL);
    }
    assert_eq!(produce(&cluster, 10), 30, "the cluster goes on replicating");

    // Rotation: a new cluster CA and node certificate in the same files, and SIGHUP.
    let (old_cert, old_key) = (pki.path("old-node.pem"), pki.path("old-node.key"));
    std::fs::copy(&cert, &old_cert).unwrap();
    std::fs::copy(&key, &old_key).unwrap();
    let new_ca = pki.ca("new-ca");
    let (new_cert, new_key) = pki.leaf("rotated", "new-ca");
    for (from, to) in [(&new_ca, &ca), (&new_cert, &cert), (&new_key, &key)] {
        std::fs::copy(from, to).unwrap();
    }
    for node in &cluster.nodes {
        node.reload();
    }
    let deadline = Instant::now() + WAIT;
    while !cluster.nodes.iter().all(|n| n.log().contains("SIGHUP: TLS certificate and key read again")) {
        assert!(Instant::now() < deadline, "every node read its TLS files again: {}", cluster.nodes[0].log_tail());
        std::thread::sleep(POLL);
    }
    let before = refusals(&cluster);
    let mut s_client = std::process::Command::new("openssl");
    s_client.args(["s_client", "-connect", &target.to_string(), "-CAfile", &new_ca, "-cert", &old_cert]);
    s_client.args(["-key", &old_key, "-quiet"]);
    let _ = sluice_tests::node_client::run_command(s_client, b"garbage\n", Duration::from_secs(20));
    let deadline = Instant::now() + WAIT;
    while refusals(&cluster) <= before {
        assert!(Instant::now() < deadline, "the old certificate is refused after the reload");
        std::thread::sleep(POLL);
    }
    cluster.node(3).kill9_and_wait();
    cluster.node(3).restart();
    assert_eq!(produce(&cluster, 10), 40, "a restarted node rejoins over the new certificates");
    assert!(
        cluster.nodes[0].log().contains("the cluster link's TLS files were read again"),
        "node 1 made its new connections with the files read again"
    );
}

/// Named Kafka listeners (Kafka's `listeners` and `listener.security.protocol.map`): each
/// of three nodes serves INTERNAL (plaintext, the address its `--peer` entries give) and
/// EXTERNAL (SASL_PLAINTEXT, on another loopback address). Each node registers its
/// listeners with the controller, so Metadata through a node's EXTERNAL listener names
/// every node's EXTERNAL address, and through INTERNAL every INTERNAL one; a client
/// without a login is refused on EXTERNAL and served on INTERNAL; records produced
/// through one listener are read through the other.
#[test]
fn named_kafka_listeners_answer_with_every_nodes_listener_of_the_same_name() {
    let env = [("SLUICE_BOOTSTRAP_USER", "admin:admin-secret")];
    let external: Vec<SocketAddr> = (0..NODES)
        .map(|_| {
            let a = free_loopback_addr();
            SocketAddr::from(([127, 0, 0, 2], a.port()))
        })
        .collect();
    let per_node = |i: usize, internal: SocketAddr| {
        vec![
            format!("--kafka-listen=INTERNAL://{internal},EXTERNAL://{}", external[i]),
            "--listener-security-protocol-map=INTERNAL:PLAINTEXT,EXTERNAL:SASL_PLAINTEXT".to_string(),
        ]
    };
    let cluster = Cluster::start_full(NODES, &[], Faults::Processes, "PLAINTEXT", &env, &per_node);
    let internal: Vec<String> = cluster.nodes.iter().map(|n| n.kafka_addr().unwrap().to_string()).collect();
    let brokers = |listing: &str| {
        let mut at: Vec<String> = listing
            .lines()
            .filter_map(|l| l.trim().strip_prefix("broker "))
            .map(|b| b.split(" (").next().unwrap_or(b).to_string())
            .collect();
        at.sort();
        at
    };
    let expected = |addresses: &[String]| {
        let mut e: Vec<String> = addresses.iter().enumerate().map(|(i, a)| format!("{} at {a}", i + 1)).collect();
        e.sort();
        e
    };
    // Through EXTERNAL (a login): every node's EXTERNAL address, once each has registered.
    let external_at: Vec<String> = external.iter().map(ToString::to_string).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let listing = kcat_as(&external_at[1], "admin", "admin-secret", "none");
        if listing.as_ref().is_ok_and(|l| brokers(l) == expected(&external_at)) {
            break;
        }
        assert!(Instant::now() < deadline, "EXTERNAL metadata never named every EXTERNAL listener: {listing:?}");
        std::thread::sleep(POLL);
    }
    // Through INTERNAL (no login): every node's INTERNAL address.
    let mut list = std::process::Command::new("kcat");
    list.args(["-b", &internal[2], "-L", "-m", "10"]);
    let run = sluice_tests::node_client::run_command(list, b"", WAIT);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(brokers(&run.stdout), expected(&internal), "{}", run.stdout);
    // No login on EXTERNAL: refused.
    let mut anonymous = std::process::Command::new("kcat");
    anonymous.args(["-b", &external_at[0], "-L", "-m", "5"]);
    let run = sluice_tests::node_client::run_command(anonymous, b"", WAIT);
    assert_ne!(run.code, Some(0), "a client without a login on EXTERNAL: {run:?}");
    // Produced through EXTERNAL, read through INTERNAL.
    let mut produce = std::process::Command::new("kcat");
    produce.args(["-P", "-b", &external_at[0], "-t", "named", "-X", "security.protocol=sasl_plaintext"]);
    produce.args([
        "-X",
        "sasl.mechanism=SCRAM-SHA-256",
        "-X",
        "sasl.username=admin",
        "-X",
        "sasl.password=admin-secret",
    ]);
    let run = sluice_tests::node_client::run_command(produce, b"one\ntwo\nthree\n", WAIT);
    assert_eq!(run.code, Some(0), "{run:?}");
    let mut consume = std::process::Command::new("kcat");
    consume.args(["-C", "-b", &internal[1], "-t", "named", "-o", "beginning", "-c", "3", "-e", "-q"]);
    let run = sluice_tests::node_client::run_command(consume, b"", WAIT);
    let mut got: Vec<&str> = run.stdout.lines().collect();
    got.sort_unstable();
    assert_eq!(got, ["one", "three", "two"], "{run:?}");
}
