//! Specifications of consumer groups against real node processes: what consumers sharing
//! a topic through a group, and the operators administering groups, can rely on.
//!
//! - Partitions are shared among a group's members, and a member that dies (kill -9)
//!   loses its partitions to the others once its session times out; no record is lost
//!   (at-least-once), and the only records delivered twice are those the dead member
//!   had printed but not yet committed.
//! - Groups are independent: each receives every record of a topic.
//! - A member fenced by a rebalance cannot commit (generation fencing).
//! - Committed offsets are where a group resumes, across members, a clean node restart
//!   and a node kill -9 (a commit is acknowledged only once it is in the offsets log).
//! - Lag is log end minus committed, in `Admin::group_lag` and `sluice group describe`.
//! - Resetting offsets and deleting a group need a group without members.
//! - With cooperative-sticky, a member is told only of the partitions that moved.
//! - A completed rebalance answers all its members, even when the next one starts at
//!   once; a consumer dropped without `close` leaves when its session expires.
//!
//! Each test starts its own `sluice-node` (two shards) with its data in a temporary
//! directory; `NodeProcess` stops it by its pid when the test ends. The consumer
//! processes of the first test are `sluice consume --group` runs (the CLI binary found,
//! and built if needed, by `node_client::cli_binary`); `ConsumerProcess` kills and reaps
//! each by its pid when the test ends, even when it fails. The other tests use
//! `GroupConsumer` in the test process.
//!
//! Every wait is bounded (`WAIT` for a group to settle, records to arrive or lag to
//! drain; `CLI_TIMEOUT` for one CLI run; `PROCESS_EXIT_TIMEOUT` for a process to go).
//! Session timeouts are short (`SESSION_TIMEOUT_MS`, heartbeats every
//! `HEARTBEAT_INTERVAL_MS`) so that a dead member is noticed within seconds; no test
//! asserts how fast anything happens.
//!
//! The test bodies run on the thread that `#[tokio::test]` blocks on, not on a runtime
//! worker, so the blocking calls (node restarts, process kills) stall only the test while
//! the group consumers' heartbeat tasks go on running on the two workers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::connection::Connection;
use sluice_client::consumer::{ConsumerConfig, ConsumerRecord, OffsetReset};
use sluice_client::group::{GroupConfig, GroupConsumer, RebalanceListener};
use sluice_client::producer::{Producer, ProducerConfig, ProducerRecord};
use sluice_client::protocol::{self, GroupInfo};
use sluice_client::{Admin, ClientError, ErrorCode, NewTopic};
use sluice_schemas::wire::{self, RequestBody};
use sluice_tests::node_client::{cli_binary, run_command, CliRun, Client, NodeProcess};
use tempfile::TempDir;

/// The shards of every node here: the test machines have two cores.
const SHARDS: usize = 2;
/// The longest a test waits for one thing: a group to settle, records to arrive, lag to
/// drain, a delivery report.
const WAIT: Duration = Duration::from_secs(30);
/// How long one `poll` of the consume loops may wait.
const POLL: Duration = Duration::from_millis(100);
/// How often a wait on the node's view of a group asks again.
const RETRY: Duration = Duration::from_millis(50);
/// Session timeout of every member here: short, so a killed member is noticed soon.
const SESSION_TIMEOUT_MS: u32 = 2_000;
/// Heartbeat interval of every member: several heartbeats fit in a session.
const HEARTBEAT_INTERVAL_MS: u64 = 300;
/// The longest a killed member may stay in its group: its session timeout, plus the
/// coordinator's expiry check and the survivors' rejoin, with a wide margin.
const DEAD_MEMBER_GONE_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest one run of the CLI may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a signalled process may take to exit.
const PROCESS_EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The error codes of the group APIs (Kafka's numbers).
const ILLEGAL_GENERATION: ErrorCode = ErrorCode(22);
const UNKNOWN_MEMBER_ID: ErrorCode = ErrorCode(25);
const REBALANCE_IN_PROGRESS: ErrorCode = ErrorCode(27);
const NON_EMPTY_GROUP: ErrorCode = ErrorCode(68);
const GROUP_ID_NOT_FOUND: ErrorCode = ErrorCode(69);

/// A partition and offset.
type At = (u32, u64);
/// A partition's lag as `Admin::group_lag` tells it: partition, committed, log end,
/// lag, owning member.
type LagRow = (u32, Option<u64>, u64, u64, Option<String>);

// Node, topics and records ----------------------------------------------------------------

fn start_node() -> (TempDir, NodeProcess) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let data: PathBuf = dir.path().join("data");
    let node = NodeProcess::start(&data, SHARDS, &[]);
    (dir, node)
}

fn bootstrap(node: &NodeProcess) -> Vec<String> {
    vec![node.addr().to_string()]
}

async fn admin(node: &NodeProcess) -> Admin {
    Admin::connect(&bootstrap(node)).await.expect("connecting the admin client")
}

async fn create_topic(node: &NodeProcess, name: &str, partitions: u32) {
    admin(node)
        .await
        .create_topic(NewTopic { name: name.to_string(), partitions, replication_factor: 1, configs: Vec::new() })
        .await
        .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
}

async fn connect(node: &NodeProcess) -> Connection {
    Connection::connect(
        &node.addr().to_string(),
        "group-tests",
        4,
        Duration::from_secs(10),
        &sluice_client::Security::default(),
    )
    .await
    .expect("connecting")
}

async fn producer(node: &NodeProcess) -> Producer {
    let config = ProducerConfig {
        bootstrap_servers: bootstrap(node),
        client_id: "group-tests".into(),
        ..ProducerConfig::default()
    };
    Producer::new(config).await.expect("starting the producer")
}

/// Sends `records` and waits (bounded) for every delivery report: where each was
/// stored, with its key (`""` for an unkeyed record).
async fn produce(producer: &Producer, records: Vec<ProducerRecord>) -> BTreeMap<At, String> {
    let mut deliveries = Vec::new();
    for record in records {
        let key = String::from_utf8(record.key.clone().unwrap_or_default()).expect("UTF-8 keys");
        deliveries.push((key, producer.send(record).await.expect("send")));
    }
    let mut stored = BTreeMap::new();
    for (key, delivery) in deliveries {
        let report = tokio::time::timeout(WAIT, delivery)
            .await
            .unwrap_or_else(|_| panic!("no delivery report for {key:?} within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("delivering {key:?}: {e}"));
        let offset = report.offset.expect("acks=all reports an offset");
        assert!(stored.insert((report.partition, offset), key).is_none(), "two records at one offset");
    }
    stored
}

/// Records with keys `k-FROM` .. `k-TO` (distinct keys, spread by the partitioner).
fn keyed(topic: &str, keys: std::ops::Range<usize>) -> Vec<ProducerRecord> {
    keys.map(|i| ProducerRecord::new(topic, format!("v-{i}")).key(format!("k-{i}"))).collect()
}

/// `count` unkeyed records to partition `partition`.
fn to_partition(topic: &str, partition: u32, count: usize) -> Vec<ProducerRecord> {
    (0..count).map(|i| ProducerRecord::new(topic, format!("p{partition}-{i}")).partition(partition)).collect()
}

/// The log end offset of each partition, from what was produced (offsets start at 0).
fn log_ends(produced: &BTreeMap<At, String>) -> BTreeMap<u32, u64> {
    let mut ends = BTreeMap::new();
    for &(p, o) in produced.keys() {
        let end = ends.entry(p).or_insert(0);
        *end = (*end).max(o + 1);
    }
    ends
}

// Group consumers in this process -----------------------------------------------------------

fn consumer_config(node: &NodeProcess) -> ConsumerConfig {
    ConsumerConfig {
        bootstrap_servers: bootstrap(node),
        client_id: "group-tests".into(),
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        request_timeout_ms: 10_000,
        ..ConsumerConfig::default()
    }
}

/// Short sessions, cooperative-sticky, and no auto commit: every commit in these tests
/// is one the test makes, so it knows exactly what is committed.
fn group_config(group: &str) -> GroupConfig {
    GroupConfig {
        group_id: group.to_string(),
        session_timeout_ms: SESSION_TIMEOUT_MS,
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        rebalance_timeout_ms: 10_000,
        enable_auto_commit: false,
        strategy: "cooperative-sticky".into(),
        auto_commit_interval_ms: 5_000,
    }
}

/// A member of `group` subscribed to `topic`, with its assignment.
async fn member(node: &NodeProcess, group: &str, topic: &str) -> GroupConsumer {
    let mut consumer =
        GroupConsumer::new(consumer_config(node), group_config(group)).await.expect("starting the group consumer");
    tokio::time::timeout(WAIT, consumer.subscribe(vec![topic.to_string()]))
        .await
        .unwrap_or_else(|_| panic!("joining {group} took more than {WAIT:?}"))
        .unwrap_or_else(|e| panic!("joining {group}: {e}"));
    consumer
}

/// Polls until `count` records have come (bounded by `WAIT`); returns them in order.
async fn poll_records(consumer: &mut GroupConsumer, count: usize) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + WAIT;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(Instant::now() < deadline, "{} of {count} records after {WAIT:?}", records.len());
        records.extend(consumer.poll(POLL).await.unwrap_or_else(|e| panic!("polling: {e}")));
    }
    records
}

/// The first offset polled of each partition.
fn first_offsets(records: &[ConsumerRecord]) -> BTreeMap<u32, u64> {
    let mut first = BTreeMap::new();
    for r in records {
        first.entry(r.partition).or_insert(r.offset);
    }
    first
}

/// The group's committed offset of each partition of `topic` (`None`: nothing committed).
async fn committed(node: &NodeProcess, group: &str, topic: &str, partitions: u32) -> Vec<Option<u64>> {
    sluice_tests::node_client::committed_offsets(&connect(node).await, group, topic, partitions).await
}

fn server_code(result: &Result<impl std::fmt::Debug, ClientError>) -> Option<ErrorCode> {
    match result {
        Err(e) => protocol::error_code(e),
        Ok(_) => None,
    }
}

// Group consumer processes (the CLI) ----------------------------------------------------------

/// A `sluice consume TOPIC --group G` process printing `PARTITION OFFSET KEY` lines to
/// a file; killed by its pid and reaped when dropped.
struct ConsumerProcess {
    child: Option<Child>,
    name: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ConsumerProcess {
    fn start(node: &NodeProcess, dir: &Path, name: &str, topic: &str, group: &str) -> ConsumerProcess {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let session = SESSION_TIMEOUT_MS.to_string();
        let heartbeat = HEARTBEAT_INTERVAL_MS.to_string();
        let mut command = Command::new(cli_binary());
        command
            .args(["--bootstrap", &node.addr().to_string(), "consume", topic, "--group", group])
            .args(["--format", "%p %o %k\\n", "--session-timeout-ms", &session, "--heartbeat-interval-ms", &heartbeat])
            .env_remove("SLUICE_BOOTSTRAP")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("creating the output file"))
            .stderr(File::create(&stderr).expect("creating the error file"));
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        ConsumerProcess { child: Some(child), name: name.to_string(), stdout, stderr }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or_else(|| panic!("{} is not running", self.name), Child::id)
    }

    /// Fails the test if the process exited by itself (it should follow the topic).
    fn assert_running(&mut self) {
        let child = self.child.as_mut().unwrap_or_else(|| panic!("{} was stopped", self.name));
        if let Some(status) = child.try_wait().expect("waiting for a consumer") {
            let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            self.child = None;
            panic!("consumer {} exited by itself ({status}); its stderr:\n{stderr}", self.name);
        }
    }

    /// Sends `signal` to the process's pid and reaps it (bounded); SIGKILL if it
    /// outlives `PROCESS_EXIT_TIMEOUT`.
    fn stop(&mut self, signal: libc::c_int) {
        let Some(mut child) = self.child.take() else { return };
        let pid = libc::pid_t::try_from(child.id()).expect("pids fit pid_t");
        // SAFETY: kill(2) only sends a signal; the pid is our own child, not yet reaped
        // (reaping happens only through `child`), so it cannot name another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        if wait_for_exit(&mut child, PROCESS_EXIT_TIMEOUT).is_none() {
            let _ = child.kill(); // SIGKILL to this child's pid
            let _ = wait_for_exit(&mut child, PROCESS_EXIT_TIMEOUT);
            panic!("consumer {} did not exit within {PROCESS_EXIT_TIMEOUT:?} of signal {signal}", self.name);
        }
    }

    /// How many bytes it has printed so far.
    fn printed_bytes(&self) -> u64 {
        std::fs::metadata(&self.stdout).map_or(0, |m| m.len())
    }

    /// The records it printed, in order: complete lines only (a line cut by a kill was
    /// not printed).
    fn printed(&self) -> Vec<(At, String)> {
        let mut text = String::new();
        File::open(&self.stdout).and_then(|mut f| f.read_to_string(&mut text)).expect("reading a consumer's output");
        let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
        complete
            .lines()
            .map(|line| {
                let mut words = line.split(' ');
                let (Some(p), Some(o), Some(k), None) = (words.next(), words.next(), words.next(), words.next()) else {
                    panic!("{}: {line:?} is not 'PARTITION OFFSET KEY'", self.name)
                };
                ((p.parse().unwrap(), o.parse().unwrap()), k.to_string())
            })
            .collect()
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            eprintln!("--- stderr of consumer {} ---\n{stderr}", self.name);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL to this child's pid
            let _ = wait_for_exit(&mut child, PROCESS_EXIT_TIMEOUT);
        }
    }
}

/// Polls `child` until it exits or `timeout` passes; `None` on timeout.
fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `sluice --bootstrap NODE ARGS...` and waits (bounded by `CLI_TIMEOUT`) for it to
/// exit; one that runs longer is killed by its pid and the test fails.
fn sluice(node: &NodeProcess, args: &[&str]) -> CliRun {
    let mut command = Command::new(cli_binary());
    command.args(["--bootstrap", &node.addr().to_string()]).args(args).env_remove("SLUICE_BOOTSTRAP");
    run_command(command, b"", CLI_TIMEOUT)
}

// Waiting on the group ----------------------------------------------------------------------

/// Polls (bounded by `timeout`) until `group` is Stable with `members` members holding
/// `each` partitions apiece, every partition of `topic` exactly once; returns the
/// description. `processes` are checked to be still running meanwhile.
async fn wait_for_balance(
    admin: &Admin,
    group: &str,
    topic: &str,
    members: usize,
    each: usize,
    processes: &mut [ConsumerProcess],
    timeout: Duration,
) -> GroupInfo {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        for p in processes.iter_mut() {
            p.assert_running();
        }
        if let Ok(info) = admin.describe_group(group).await {
            let assigned: Vec<(String, u32)> = info.members.iter().flat_map(|m| m.assignment.clone()).collect();
            let distinct: BTreeSet<&(String, u32)> = assigned.iter().collect();
            if info.state == "Stable"
                && info.members.len() == members
                && info.members.iter().all(|m| m.assignment.len() == each)
                && distinct.len() == assigned.len()
                && assigned.iter().all(|(t, _)| t == topic)
            {
                return info;
            }
            last = Some(info);
        }
        assert!(
            Instant::now() < deadline,
            "{group} did not settle on {members} members with {each} partitions each within {timeout:?}; last seen: {last:?}"
        );
        tokio::time::sleep(RETRY).await;
    }
}

/// Polls (bounded by `WAIT`) until the group's lag is 0 on every partition in `ends`,
/// with the committed offset and log end both at the expected end.
async fn wait_for_no_lag(admin: &Admin, group: &str, topic: &str, ends: &BTreeMap<u32, u64>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let lag =
            admin.group_lag(group, sluice_client::protocol::IsolationLevel::ReadUncommitted).await.expect("group lag");
        let caught_up = ends.iter().all(|(&p, &end)| {
            lag.iter().any(|l| {
                l.topic == topic && l.partition == p && l.committed == Some(end) && l.log_end == end && l.lag == 0
            })
        });
        if caught_up {
            return;
        }
        assert!(Instant::now() < deadline, "{group} still lags after {WAIT:?} (expected ends {ends:?}): {lag:?}");
        tokio::time::sleep(RETRY).await;
    }
}

// The specifications --------------------------------------------------------------------------

/// Three `sluice consume --group` processes share a 6-partition topic two partitions
/// each; when one is killed with kill -9, within `DEAD_MEMBER_GONE_TIMEOUT` (its session
/// timeout is 2 s) the group is two members with three partitions each, and the records
/// produced meanwhile and after are all consumed (the group's lag drains to 0 on every
/// partition). Then, from what the three printed:
///
/// - every produced record was printed, with the key it was produced with, and nothing
///   else was printed (at-least-once, no phantom records);
/// - a record printed more than once was printed exactly twice, one of them by the
///   killed consumer: in each partition the twice-printed offsets are one contiguous
///   range ending at the last offset the killed consumer printed in that partition.
///   These are the records it printed but had not committed when it died (the CLI
///   commits after printing each batch), which the partition's next owner reads again
///   from the committed offset. The survivors never print a record twice between
///   themselves: a hand-over between live members happens only at a rebalance, after
///   the old owner committed what it printed.
///
/// The second half of the records is produced while the consumer is killed, and it is
/// killed the moment its output grows, so that it may die with printed but uncommitted
/// records (it often does); the checks hold however the timing falls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_consumers_share_six_partitions_and_a_killed_ones_move_to_the_others() {
    const RECORDS: usize = 3_000;
    const PARTITIONS: u32 = 6;
    const TOPIC: &str = "shared";
    const GROUP: &str = "sharers";
    let (dir, node) = start_node();
    create_topic(&node, TOPIC, PARTITIONS).await;
    let admin = admin(&node).await;
    let producer = producer(&node).await;
    let mut produced = produce(&producer, keyed(TOPIC, 0..RECORDS)).await;
    assert_eq!(log_ends(&produced).len(), PARTITIONS as usize, "the keys reach every partition");

    let mut consumers: Vec<ConsumerProcess> =
        (0..3).map(|i| ConsumerProcess::start(&node, dir.path(), &format!("consumer-{i}"), TOPIC, GROUP)).collect();
    wait_for_balance(&admin, GROUP, TOPIC, 3, 2, &mut consumers, WAIT).await;

    // The second half goes out in small steps while one consumer is killed.
    let sent = Arc::new(AtomicUsize::new(0));
    let second_half = {
        let (producer, sent) = (producer.clone(), sent.clone());
        tokio::spawn(async move {
            let mut stored = BTreeMap::new();
            for start in (RECORDS..2 * RECORDS).step_by(100) {
                stored.extend(produce(&producer, keyed(TOPIC, start..start + 100)).await);
                sent.fetch_add(100, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stored
        })
    };
    let deadline = Instant::now() + WAIT;
    while sent.load(Ordering::SeqCst) < RECORDS / 3 {
        assert!(Instant::now() < deadline, "a third of the second half was not produced within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Kill it the moment it has printed more: the likeliest moment for it to have
    // printed records it has not committed yet (the CLI commits right after printing).
    let mut killed = consumers.remove(0);
    let printed_before = killed.printed_bytes();
    let deadline = Instant::now() + WAIT;
    while killed.printed_bytes() == printed_before {
        assert!(Instant::now() < deadline, "the consumer to kill printed nothing more within {WAIT:?}");
        std::thread::sleep(Duration::from_micros(200));
    }
    let killed_pid = killed.pid();
    killed.stop(libc::SIGKILL);
    let after = wait_for_balance(&admin, GROUP, TOPIC, 2, 3, &mut consumers, DEAD_MEMBER_GONE_TIMEOUT).await;
    assert_eq!(after.members.len(), 2, "the killed consumer (pid {killed_pid}) left the group");

    produced.extend(tokio::time::timeout(WAIT, second_half).await.expect("the second half is produced").unwrap());
    assert_eq!(produced.len(), 2 * RECORDS);
    let ends = log_ends(&produced);
    wait_for_no_lag(&admin, GROUP, TOPIC, &ends).await;
    for c in &mut consumers {
        c.stop(libc::SIGTERM);
    }

    // At-least-once, from the printed lines.
    let killed_printed = killed.printed();
    let mut printed = killed_printed.clone();
    for c in &consumers {
        printed.extend(c.printed());
    }
    let mut times: BTreeMap<At, usize> = BTreeMap::new();
    for (at, key) in &printed {
        let expected = produced.get(at).unwrap_or_else(|| panic!("{at:?} ({key}) was printed but never produced"));
        assert_eq!(key, expected, "the key printed at {at:?}");
        *times.entry(*at).or_default() += 1;
    }
    let missing: Vec<&At> = produced.keys().filter(|at| !times.contains_key(at)).collect();
    assert!(
        missing.is_empty(),
        "{} produced records were never printed, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for p in 0..PARTITIONS {
        let twice: Vec<u64> = times.iter().filter(|((q, _), &n)| *q == p && n > 1).map(|((_, o), _)| *o).collect();
        for ((_, o), n) in times.iter().filter(|((q, _), &n)| *q == p && n > 1) {
            assert_eq!(*n, 2, "{TOPIC}-{p} offset {o} was printed {n} times");
        }
        let Some((&first, &last)) = twice.first().zip(twice.last()) else { continue };
        assert_eq!(
            twice.len() as u64,
            last - first + 1,
            "{TOPIC}-{p}: the re-delivered offsets are contiguous: {twice:?}"
        );
        let killed_in_p: Vec<u64> = killed_printed.iter().filter(|((q, _), _)| *q == p).map(|((_, o), _)| *o).collect();
        assert!(
            twice.iter().all(|o| killed_in_p.contains(o)),
            "{TOPIC}-{p}: only records the killed consumer printed are re-delivered ({first}..={last})"
        );
        assert_eq!(
            killed_in_p.iter().max(),
            Some(&last),
            "{TOPIC}-{p}: the re-delivered records end at the killed consumer's last printed one"
        );
    }
}

/// Two groups consuming one topic are independent: a member of each receives every
/// record of the topic exactly once (each is its group's only member, so nothing is
/// re-delivered), and each group's committed offsets are its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_on_one_topic_each_receive_every_record() {
    const RECORDS: usize = 1_000;
    const TOPIC: &str = "fanout";
    let (_dir, node) = start_node();
    create_topic(&node, TOPIC, 4).await;
    let producer = producer(&node).await;
    let produced = produce(&producer, keyed(TOPIC, 0..RECORDS)).await;
    let ends = log_ends(&produced);

    let mut a = member(&node, "readers-a", TOPIC).await;
    let mut b = member(&node, "readers-b", TOPIC).await;
    for (name, consumer) in [("readers-a", &a), ("readers-b", &b)] {
        assert_eq!(consumer.assignment().len(), 4, "{name}, alone in its group, has every partition");
    }
    for (name, consumer) in [("readers-a", &mut a), ("readers-b", &mut b)] {
        let records = poll_records(consumer, RECORDS).await;
        let mut received = BTreeMap::new();
        for r in records {
            let key = String::from_utf8(r.key.expect("keyed records")).unwrap();
            assert!(
                received.insert((r.partition, r.offset), key).is_none(),
                "{name} received {}-{} twice",
                r.topic,
                r.partition
            );
        }
        assert_eq!(received, produced, "{name} received every record");
    }
    a.commit_sync().await.expect("group a commits");
    let a_committed = committed(&node, "readers-a", TOPIC, 4).await;
    let expected: Vec<Option<u64>> = (0..4).map(|p| ends.get(&p).copied()).collect();
    assert_eq!(a_committed, expected, "readers-a committed its whole log");
    assert_eq!(committed(&node, "readers-b", TOPIC, 4).await, vec![None; 4], "readers-a's commit is not readers-b's");
    a.close().await.expect("closing a");
    b.close().await.expect("closing b");
}

/// Generation fencing of commits (and heartbeats): member A joins (generation g), then B
/// joins and A is told to rejoin (its heartbeat is answered RebalanceInProgress); once A
/// and B have joined generation g+1, a commit (and a heartbeat) from A with generation g
/// is refused with ILLEGAL_GENERATION and the committed offset stays what it was; the
/// same commit with generation g+1 is accepted. A member that left the group is refused
/// with UNKNOWN_MEMBER_ID, and its commit changes nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_members_commit_is_refused() {
    const TOPIC: &str = "fenced";
    const GROUP: &str = "fencing";
    let (_dir, node) = start_node();
    create_topic(&node, TOPIC, 2).await;
    let topics = vec![TOPIC.to_string()];
    let conn_a = connect(&node).await;
    let join = |member_id: String| {
        let (conn, topics) = (&conn_a, &topics);
        async move { protocol::join_group(conn, GROUP, &member_id, 30_000, 30_000, topics, "range").await }
    };
    async fn commit(
        conn: &Connection,
        member_id: &str,
        generation: i32,
        partition: u32,
        offset: u64,
    ) -> Result<Vec<(String, u32, Result<(), ClientError>)>, ClientError> {
        let offsets = [(TOPIC.to_string(), partition, offset, String::new())];
        protocol::commit_offsets(conn, GROUP, member_id, generation, &offsets).await
    }

    let a = join(String::new()).await.expect("A joins");
    assert_eq!(a.assignment.len(), 2, "A, alone, has both partitions: {a:?}");
    let outcome = commit(&conn_a, &a.member_id, a.generation, 0, 5).await.expect("A commits at its generation");
    assert!(outcome.iter().all(|(_, _, r)| r.is_ok()), "{outcome:?}");

    let b_join = {
        let (node_addr, topics) = (node.addr().to_string(), topics.clone());
        tokio::spawn(async move {
            let conn_b = Connection::connect(
                &node_addr,
                "group-tests",
                4,
                Duration::from_secs(40),
                &sluice_client::Security::default(),
            )
            .await
            .expect("connecting B");
            let joined = protocol::join_group(&conn_b, GROUP, "", 30_000, 30_000, &topics, "range").await;
            (conn_b, joined)
        })
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let beat = protocol::heartbeat(&conn_a, GROUP, &a.member_id, a.generation).await;
        if server_code(&beat) == Some(REBALANCE_IN_PROGRESS) {
            break;
        }
        assert!(beat.is_ok(), "A's heartbeat before B joins is accepted: {beat:?}");
        assert!(Instant::now() < deadline, "B's join did not start a rebalance within {WAIT:?}");
        tokio::time::sleep(RETRY).await;
    }
    let a2 = join(a.member_id.clone()).await.expect("A rejoins");
    let (conn_b, b) = tokio::time::timeout(WAIT, b_join).await.expect("B's join completes").unwrap();
    let b = b.expect("B joins");
    assert_eq!(a2.member_id, a.member_id, "A keeps its member id");
    assert!(
        a2.generation > a.generation,
        "the rebalance made a new generation: {} then {}",
        a.generation,
        a2.generation
    );
    assert_eq!(b.generation, a2.generation);

    let stale = commit(&conn_a, &a.member_id, a.generation, 0, 9).await;
    assert_eq!(server_code(&stale), Some(ILLEGAL_GENERATION), "a commit from generation {}: {stale:?}", a.generation);
    let stale_beat = protocol::heartbeat(&conn_a, GROUP, &a.member_id, a.generation).await;
    assert_eq!(server_code(&stale_beat), Some(ILLEGAL_GENERATION), "{stale_beat:?}");
    assert_eq!(committed(&node, GROUP, TOPIC, 2).await, vec![Some(5), None], "the refused commit changed nothing");

    let current = commit(&conn_a, &a.member_id, a2.generation, 0, 9).await.expect("A commits at the new generation");
    assert!(current.iter().all(|(_, _, r)| r.is_ok()), "{current:?}");
    let by_b = commit(&conn_b, &b.member_id, b.generation, 1, 7).await.expect("B commits");
    assert!(by_b.iter().all(|(_, _, r)| r.is_ok()), "{by_b:?}");
    assert_eq!(committed(&node, GROUP, TOPIC, 2).await, vec![Some(9), Some(7)]);

    protocol::leave_group(&conn_b, GROUP, &b.member_id).await.expect("B leaves");
    let gone = commit(&conn_b, &b.member_id, b.generation, 1, 11).await;
    assert_eq!(server_code(&gone), Some(UNKNOWN_MEMBER_ID), "a commit from a member that left: {gone:?}");
    assert_eq!(committed(&node, GROUP, TOPIC, 2).await, vec![Some(9), Some(7)], "the refused commit changed nothing");
}

/// A group resumes where it committed: a member polls a 2-partition topic, commits
/// offsets 30 and 70 (as if it had processed that far) and closes; the next member of
/// the group gets, as its first record of each partition, the one at the committed
/// offset. The same holds across a clean node restart (SIGTERM) and across a node
/// kill -9: committed offsets are acknowledged only once they are in the offsets log,
/// and are reloaded from it at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_consumer_resumes_from_its_committed_offsets() {
    const TOPIC: &str = "resumable";
    const GROUP: &str = "resumers";
    const PER_PARTITION: usize = 100;
    let (_dir, mut node) = start_node();
    create_topic(&node, TOPIC, 2).await;
    let producer = producer(&node).await;
    let mut records = to_partition(TOPIC, 0, PER_PARTITION);
    records.extend(to_partition(TOPIC, 1, PER_PARTITION));
    produce(&producer, records).await;
    producer.close().await;

    // Each round: a new member starts at the last commit, reads everything, commits the
    // next offsets, closes; then the node is (or is not) restarted.
    let rounds: [(&str, [u64; 2]); 3] =
        [("a first member", [30, 70]), ("after a clean restart", [60, 90]), ("after kill -9", [80, 95])];
    let mut expected_first = BTreeMap::from([(0, 0), (1, 0)]);
    for (i, (when, commit_at)) in rounds.iter().enumerate() {
        let mut consumer = member(&node, GROUP, TOPIC).await;
        let remaining: usize = expected_first.values().map(|&o| PER_PARTITION - o as usize).sum();
        let polled = poll_records(&mut consumer, remaining).await;
        assert_eq!(first_offsets(&polled), expected_first, "{when}: the first record of each partition");
        let offsets: Vec<(String, u32, u64)> = (0..2).map(|p| (TOPIC.to_string(), p, commit_at[p as usize])).collect();
        consumer.commit_offsets(&offsets).await.expect("committing");
        consumer.close().await.expect("closing");
        assert_eq!(committed(&node, GROUP, TOPIC, 2).await, vec![Some(commit_at[0]), Some(commit_at[1])]);
        expected_first = BTreeMap::from([(0, commit_at[0]), (1, commit_at[1])]);
        match i {
            0 => {
                node.sigterm_and_wait();
                node.restart();
            }
            1 => {
                node.kill9_and_wait();
                node.restart();
            }
            _ => {}
        }
        if i < 2 {
            assert_eq!(
                committed(&node, GROUP, TOPIC, 2).await,
                vec![Some(commit_at[0]), Some(commit_at[1])],
                "the committed offsets survive the restart"
            );
        }
    }
    let mut last = member(&node, GROUP, TOPIC).await;
    let polled = poll_records(&mut last, 2 * PER_PARTITION - 80 - 95).await;
    assert_eq!(
        first_offsets(&polled),
        expected_first,
        "a member after the last commit: the first record of each partition"
    );
    last.close().await.expect("closing");
}

/// Lag is log end minus committed offset, per partition: a member reads a 3-partition
/// topic (10, 20 and 30 records) and commits 4, 20 and 0; 5 more records go to each
/// partition; then `Admin::group_lag` and `sluice group describe` both show committed
/// 4/20/0, log end 15/25/35 and lag 11/5/35, with the member owning each partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_describe_shows_lag_as_produced_minus_committed() {
    const TOPIC: &str = "lagging";
    const GROUP: &str = "laggards";
    let (_dir, node) = start_node();
    create_topic(&node, TOPIC, 3).await;
    let producer = producer(&node).await;
    let mut records = Vec::new();
    for (p, count) in [(0, 10), (1, 20), (2, 30)] {
        records.extend(to_partition(TOPIC, p, count));
    }
    produce(&producer, records).await;
    let mut consumer = member(&node, GROUP, TOPIC).await;
    poll_records(&mut consumer, 60).await;
    let commits = [(0, 4), (1, 20), (2, 0)];
    let offsets: Vec<(String, u32, u64)> = commits.iter().map(|&(p, o)| (TOPIC.to_string(), p, o)).collect();
    consumer.commit_offsets(&offsets).await.expect("committing");
    let mut more = Vec::new();
    for p in 0..3 {
        more.extend(to_partition(TOPIC, p, 5));
    }
    produce(&producer, more).await;

    let expected = [(0u32, 4u64, 15u64, 11u64), (1, 20, 25, 5), (2, 0, 35, 35)];
    let member_id = consumer.member_id();
    let lag = admin(&node)
        .await
        .group_lag(GROUP, sluice_client::protocol::IsolationLevel::ReadUncommitted)
        .await
        .expect("group lag");
    let got: Vec<LagRow> =
        lag.iter().map(|l| (l.partition, l.committed, l.log_end, l.lag, l.member_id.clone())).collect();
    let want: Vec<LagRow> = expected.iter().map(|&(p, c, e, l)| (p, Some(c), e, l, Some(member_id.clone()))).collect();
    assert_eq!(got, want, "Admin::group_lag: {lag:?}");
    assert!(lag.iter().all(|l| l.topic == TOPIC));

    let described = sluice(&node, &["group", "describe", GROUP]);
    assert_eq!(described.code, Some(0), "{described:?}");
    let first = described.stdout.lines().next().unwrap_or("");
    assert!(first.starts_with(&format!("group {GROUP}: Stable")) && first.ends_with("1 members"), "{described:?}");
    let rows: Vec<Vec<&str>> = described
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first() == Some(&TOPIC))
        .collect();
    let want_rows: Vec<Vec<String>> = expected
        .iter()
        .map(|&(p, c, e, l)| {
            vec![TOPIC.to_string(), p.to_string(), c.to_string(), e.to_string(), l.to_string(), member_id.clone()]
        })
        .collect();
    assert_eq!(rows, want_rows, "the lag table of `sluice group describe`:\n{}", described.stdout);
    consumer.close().await.expect("closing");
}

/// Resetting a group's offsets and deleting a group are refused while the group has a
/// member: NON_EMPTY_GROUP from `Admin`, exit code 1 naming NON_EMPTY_GROUP from the
/// CLI, and the committed offsets stay. `sluice group list` shows the group with its
/// member. Once the member has left, both succeed: `reset-offsets --to 3` and then
/// `--to latest` set every partition's committed offset, `group delete` removes the
/// group, which `group list` then no longer shows and `describe` does not find
/// (GROUP_ID_NOT_FOUND).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_offsets_and_delete_need_an_empty_group() {
    const TOPIC: &str = "resettable";
    const GROUP: &str = "resetters";
    let (_dir, node) = start_node();
    create_topic(&node, TOPIC, 2).await;
    let producer = producer(&node).await;
    let mut records = to_partition(TOPIC, 0, 10);
    records.extend(to_partition(TOPIC, 1, 10));
    produce(&producer, records).await;
    let admin = admin(&node).await;

    let mut consumer = member(&node, GROUP, TOPIC).await;
    poll_records(&mut consumer, 20).await;
    consumer.commit_sync().await.expect("committing");
    assert_eq!(committed(&node, GROUP, TOPIC, 2).await, vec![Some(10), Some(10)]);

    let listed = sluice(&node, &["group", "list"]);
    assert_eq!(listed.code, Some(0), "{listed:?}");
    assert!(listed.stdout.lines().any(|l| l == format!("{GROUP}\tStable\t1 members")), "{listed:?}");

    let reset = admin.reset_offsets(GROUP, TOPIC, protocol::EARLIEST).await;
    assert_eq!(server_code(&reset), Some(NON_EMPTY_GROUP), "{reset:?}");
    let deleted = admin.delete_group(GROUP).await;
    assert_eq!(server_code(&deleted), Some(NON_EMPTY_GROUP), "{deleted:?}");
    for args in
        [&["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to", "earliest"][..], &["group", "delete", GROUP]]
    {
        let refused = sluice(&node, args);
        assert_eq!(refused.code, Some(1), "sluice {args:?} with a member: {refused:?}");
        assert!(refused.stderr.contains("NON_EMPTY_GROUP"), "sluice {args:?}: {refused:?}");
    }
    assert_eq!(committed(&node, GROUP, TOPIC, 2).await, vec![Some(10), Some(10)], "the refused reset changed nothing");

    consumer.close().await.expect("leaving the group");
    let listed = sluice(&node, &["group", "list"]);
    assert!(listed.stdout.lines().any(|l| l == format!("{GROUP}\tEmpty\t0 members")), "{listed:?}");

    let reset = admin.reset_offsets(GROUP, TOPIC, 3).await.expect("resetting an empty group");
    assert_eq!(reset, vec![(0, 3), (1, 3)]);
    assert_eq!(committed(&node, GROUP, TOPIC, 2).await, vec![Some(3), Some(3)]);
    produce(&producer, to_partition(TOPIC, 1, 5)).await;
    let latest = sluice(&node, &["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to", "latest"]);
    assert_eq!(latest.code, Some(0), "{latest:?}");
    assert_eq!(latest.stdout, format!("{TOPIC}\t0\t10\n{TOPIC}\t1\t15\n"), "{latest:?}");
    assert_eq!(committed(&node, GROUP, TOPIC, 2).await, vec![Some(10), Some(15)]);

    let deleted = sluice(&node, &["group", "delete", GROUP]);
    assert_eq!(deleted.code, Some(0), "{deleted:?}");
    let listed = sluice(&node, &["group", "list"]);
    assert!(!listed.stdout.contains(GROUP), "a deleted group is not listed: {listed:?}");
    assert_eq!(server_code(&admin.describe_group(GROUP).await), Some(GROUP_ID_NOT_FOUND));
    assert_eq!(committed(&node, GROUP, TOPIC, 2).await, vec![None, None], "its offsets went with it");
    let described = sluice(&node, &["group", "describe", GROUP]);
    assert_eq!(described.code, Some(1), "{described:?}");
}

/// A group consumer dropped without `close` (say, its task panicked) stops
/// heartbeating: its session expires and the coordinator removes it, so its partitions
/// go to the other members. Here the group has it alone, and is left Empty within
/// `DEAD_MEMBER_GONE_TIMEOUT` (the session timeout is 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_consumer_leaves_its_group_when_its_session_expires() {
    const TOPIC: &str = "abandoned";
    const GROUP: &str = "abandoners";
    let (_dir, node) = start_node();
    create_topic(&node, TOPIC, 2).await;
    let consumer = member(&node, GROUP, TOPIC).await;
    let admin = admin(&node).await;
    let info = admin.describe_group(GROUP).await.expect("describing");
    assert_eq!(info.members.len(), 1, "{info:?}");
    drop(consumer);
    let deadline = Instant::now() + DEAD_MEMBER_GONE_TIMEOUT;
    loop {
        let info = admin.describe_group(GROUP).await.expect("describing");
        if info.members.is_empty() {
            assert_eq!(info.state, "Empty", "{info:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped member is still in the group {DEAD_MEMBER_GONE_TIMEOUT:?} later: {info:?}"
        );
        tokio::time::sleep(RETRY).await;
    }
}

/// What a rebalance listener is told.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Assigned(Vec<u32>),
    Revoked(Vec<u32>),
}

/// Records the listener's calls (partition numbers; the tests use one topic).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

impl RebalanceListener for Recorder {
    fn on_revoked(&mut self, partitions: &[(String, u32)]) {
        self.0.lock().unwrap().push(Event::Revoked(partitions.iter().map(|(_, p)| *p).collect()));
    }
    fn on_assigned(&mut self, partitions: &[(String, u32)]) {
        self.0.lock().unwrap().push(Event::Assigned(partitions.iter().map(|(_, p)| *p).collect()));
    }
}

/// With cooperative-sticky, the listener hears only of partitions that move: A, alone,
/// is assigned all six partitions of a topic; when B joins, A is told of exactly the
/// three it gives up (revoked) and of nothing assigned, keeps the other three, and B is
/// assigned exactly the three A gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_revokes_only_the_partitions_that_move() {
    const TOPIC: &str = "sticky";
    const GROUP: &str = "stickers";
    let (_dir, node) = start_node();
    create_topic(&node, TOPIC, 6).await;
    let heard_a = Recorder::default();
    let mut a = GroupConsumer::new(consumer_config(&node), group_config(GROUP)).await.expect("starting A");
    a.set_listener(heard_a.clone());
    a.subscribe(vec![TOPIC.to_string()]).await.expect("A joins");
    assert_eq!(heard_a.events(), vec![Event::Assigned((0..6).collect())], "A, alone, gets every partition");

    let heard_b = Recorder::default();
    let b_joins = {
        let (config, heard_b) = (consumer_config(&node), heard_b.clone());
        tokio::spawn(async move {
            let mut b = GroupConsumer::new(config, group_config(GROUP)).await.expect("starting B");
            b.set_listener(heard_b);
            b.subscribe(vec![TOPIC.to_string()]).await.expect("B joins");
            b
        })
    };
    // A takes part in the rebalance from its poll loop.
    let deadline = Instant::now() + WAIT;
    while !b_joins.is_finished() {
        assert!(Instant::now() < deadline, "B did not join within {WAIT:?}");
        a.poll(POLL).await.expect("A polls");
    }
    let b = b_joins.await.unwrap();

    let kept: BTreeSet<u32> = a.assignment().iter().map(|(_, p)| *p).collect();
    let moved: BTreeSet<u32> = b.assignment().iter().map(|(_, p)| *p).collect();
    assert_eq!((kept.len(), moved.len()), (3, 3), "three each: A {kept:?}, B {moved:?}");
    assert!(kept.is_disjoint(&moved));
    let events = heard_a.events();
    assert_eq!(
        events,
        vec![Event::Assigned((0..6).collect()), Event::Revoked(moved.iter().copied().collect())],
        "A hears only of the partitions that moved to B"
    );
    assert_eq!(heard_b.events(), vec![Event::Assigned(moved.iter().copied().collect())]);
    b.close().await.expect("closing B");
    a.close().await.expect("closing A");
}

/// A JoinGroup request frame for `GROUP` (session 30 s, rebalance `rebalance_timeout_ms`,
/// range), for tests that pipeline joins byte for byte.
fn join_frame(correlation_id: u32, group: &str, member_id: &str, topic: &str, rebalance_timeout_ms: u32) -> Vec<u8> {
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let body = protocol::encode_join_group(&mut b, group, member_id, 30_000, rebalance_timeout_ms, &[topic], "range");
    let envelope =
        wire::finish_request(&mut b, correlation_id, 0, Some("group-tests"), RequestBody::JoinGroupRequest, body);
    wire::frame(envelope, &[])
}

/// The JoinGroup response to request `correlation_id`, read from `client`.
fn read_join(client: &mut Client, correlation_id: u32) -> sluice_client::Result<protocol::Joined> {
    let response = client.receive_for(correlation_id);
    protocol::decode_join_group(response.frame())
}

/// A rebalance that completes answers every member that joined it, even when another
/// member's join starts the next rebalance before those answers go out. A (alone, then
/// told to rejoin because B joined) sends its rejoin and a new member C's join
/// pipelined in one write, so the node completes B's rebalance and starts C's back to
/// back. B's join is answered at once with the generation it joined (it must not be
/// held for the next rebalance, which waits for B itself to rejoin: that would stall B
/// until the rebalance timeout and then drop it from the group). Then A and B rejoin and
/// the next generation has all three members, one partition each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_rebalance_answers_its_members_even_when_the_next_one_starts_at_once() {
    const TOPIC: &str = "churn";
    const GROUP: &str = "churners";
    /// Far beyond the waits below: a join held until the rebalance deadline fails them.
    const REBALANCE_TIMEOUT_MS: u32 = 60_000;
    /// How long a join of a rebalance that every member has joined may take to answer.
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
    let (_dir, node) = start_node();
    create_topic(&node, TOPIC, 3).await;
    let topics = vec![TOPIC.to_string()];
    let addr = node.addr().to_string();
    let spawn_join = |member_id: String| {
        let (addr, topics) = (addr.clone(), topics.clone());
        tokio::spawn(async move {
            let timeout = Duration::from_millis(u64::from(REBALANCE_TIMEOUT_MS) + 10_000);
            let conn = Connection::connect(&addr, "group-tests", 4, timeout, &sluice_client::Security::default())
                .await
                .expect("connecting");
            protocol::join_group(&conn, GROUP, &member_id, 30_000, REBALANCE_TIMEOUT_MS, &topics, "range").await
        })
    };
    let conn_a = connect(&node).await;
    let a = protocol::join_group(&conn_a, GROUP, "", 30_000, REBALANCE_TIMEOUT_MS, &topics, "range")
        .await
        .expect("A joins");
    let b_join = spawn_join(String::new());
    let deadline = Instant::now() + WAIT;
    while server_code(&protocol::heartbeat(&conn_a, GROUP, &a.member_id, a.generation).await)
        != Some(REBALANCE_IN_PROGRESS)
    {
        assert!(Instant::now() < deadline, "B's join did not start a rebalance within {WAIT:?}");
        tokio::time::sleep(RETRY).await;
    }

    // A's rejoin and C's join, pipelined in one write on one connection.
    let mut raw = node.client();
    let mut frames = join_frame(1, GROUP, &a.member_id, TOPIC, REBALANCE_TIMEOUT_MS);
    frames.extend(join_frame(2, GROUP, "", TOPIC, REBALANCE_TIMEOUT_MS));
    raw.send_raw(&frames).expect("sending the two joins");
    let a_rejoined = read_join(&mut raw, 1).expect("A rejoins");
    assert_eq!(a_rejoined.member_id, a.member_id, "A rejoins as itself");
    let a_generation = a_rejoined.generation;
    assert!(a_generation > a.generation);
    let b = tokio::time::timeout(ANSWER_TIMEOUT, b_join)
        .await
        .expect("B's join is answered when its rebalance completes, not held for the next one")
        .unwrap()
        .expect("B joins");
    assert_eq!(b.generation, a_generation, "A and B joined the same generation");

    // The next rebalance, started by C, completes once A and B rejoin.
    let a_again = spawn_join(a.member_id.clone());
    let b_again = spawn_join(b.member_id.clone());
    let c_generation = read_join(&mut raw, 2).expect("C joins").generation;
    for rejoin in [a_again, b_again] {
        let joined = tokio::time::timeout(ANSWER_TIMEOUT, rejoin).await.expect("a rejoin is answered").unwrap();
        assert_eq!(joined.expect("rejoining").generation, c_generation);
    }
    let info = admin(&node).await.describe_group(GROUP).await.expect("describing");
    assert_eq!(info.generation, c_generation);
    assert_eq!(info.members.len(), 3, "{info:?}");
    assert!(info.members.iter().all(|m| m.assignment.len() == 1), "{info:?}");
}
