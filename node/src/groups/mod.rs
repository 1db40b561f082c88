//! The consumer group coordinator.
//!
//! Each group is owned by one shard: the owner of the `__consumer_offsets` partition that
//! the group id hashes to. Requests for a group arriving on another shard are forwarded
//! there (`ShardRequest::Group`). Lives on: the coordinator shard of each group.
//!
//! The decisions (members, generations, rebalances, assignments, fencing, which offsets
//! to store) are the state machine `state::Groups`, which reads no clock and does no I/O;
//! `messages` has the requests and replies, `records` the offsets partitions' record
//! format, `assign` the assignors and `consumer_protocol` Kafka's consumer subscription
//! and assignment encoding (all free of I/O too). `Coordinator`, here, drives it on its
//! shard: it reads the clock once per event, feeds the event to the state machine and
//! performs what comes out: it appends offset records through `GroupHost::append_offsets`
//! (awaited in the task of the request that asked for them, then reported back), answers
//! requests through oneshots (a JoinGroup's task waits on its own until the rebalance
//! completes), reads offsets partitions back into it, and ticks it every
//! `EXPIRY_CHECK_MS`.

pub mod assign;
pub mod consumer;
pub mod consumer_protocol;
mod messages;
pub mod records;
pub mod state;
#[cfg(test)]
mod state_tests;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sluice_schemas::records::{BatchBuilder, BatchConfig, RecordIter};
use tracing::{debug, warn};

use crate::errors::{ErrorKind, NodeError};
use crate::io::{self, LocalFuture, Oneshot, OneshotSender};
use crate::storage::PartitionLog;

pub use messages::{
    by_topic, ConsumerHeartbeat, ConsumerHeartbeatResult, GroupDescription, GroupReply, GroupRequest, GroupSummary,
    JoinArgs, JoinProtocol, JoinResult, MemberDescription, PartitionOutcome,
};
pub use sluice_schemas::groups::{offsets_partition, OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use state::{GroupAction, GroupInput, Groups, RequestId, Topics};
pub use state::{CONSUMER_PROTOCOL_TYPE, GROUP_ID_BYTES_MAX, SESSION_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_MIN};

use records::GroupRecord;

/// How often the coordinator looks for members whose session expired (and rebalances
/// past their deadline): the resolution of both timeouts.
pub const EXPIRY_CHECK_MS: u64 = 100;
/// Bytes read from an offsets partition at a time while loading it.
const LOAD_READ_BYTES: u64 = 1 << 20;

/// What the coordinator needs from its shard: partition counts (for assignment) and the
/// offsets logs it owns.
pub trait GroupHost {
    fn partition_count(&self, topic: &str) -> Option<u32>;
    /// Appends a batch of offset records to an offsets partition this shard holds (in a
    /// cluster: leads, and the ISR has it once this resolves).
    fn append_offsets<'a>(&'a self, partition: u32, batch: &'a [u8]) -> LocalFuture<'a, Result<(), NodeError>>;
}

/// The host's topics, as the state machine sees them.
struct HostTopics<'a>(&'a dyn GroupHost);

impl Topics for HostTopics<'_> {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.0.partition_count(topic)
    }
}

/// For the events that never consult topics (loading, forgetting a partition): the
/// state machine asks only when it assigns partitions or checks a commit.
struct NoTopics;

impl Topics for NoTopics {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        panic!("the group state machine asked for topic {topic:?} while loading or forgetting offsets")
    }
}

/// The groups owned by one shard, and their committed offsets: `state::Groups` driven
/// on this shard.
pub struct Coordinator {
    groups: RefCell<Groups>,
    /// The state machine's time is milliseconds since this instant (monotonic: a wall
    /// clock step neither expires sessions nor extends them).
    started: Instant,
    /// Requests waiting for their reply, by the id the state machine answers.
    waiting: RefCell<HashMap<RequestId, OneshotSender<GroupReply>>>,
    next_request: Cell<u64>,
    /// Offsets partitions being loaded: their groups' requests are answered
    /// COORDINATOR_NOT_AVAILABLE (retriable) until their members and offsets are in, so
    /// a member that found this new coordinator early is not told it is unknown.
    loading: RefCell<std::collections::BTreeSet<u32>>,
}

impl Default for Coordinator {
    fn default() -> Coordinator {
        Coordinator::new(Groups::new(instance_tag()))
    }
}

impl Coordinator {
    /// The coordinator with the node's group settings (`--group-*`).
    pub fn for_node(config: &crate::config::NodeConfig) -> Coordinator {
        Coordinator::new(
            Groups::new(instance_tag())
                .with_initial_rebalance_delay(config.group_initial_rebalance_delay_ms)
                .with_consumer_timing(
                    config.group_consumer_heartbeat_interval_ms,
                    config.group_consumer_session_timeout_ms,
                ),
        )
    }

    fn new(groups: Groups) -> Coordinator {
        Coordinator {
            groups: RefCell::new(groups),
            started: Instant::now(),
            waiting: RefCell::new(HashMap::new()),
            next_request: Cell::new(0),
            loading: RefCell::new(std::collections::BTreeSet::new()),
        }
    }

    /// Runs one event through the state machine at the current time.
    fn step(&self, input: GroupInput, topics: &dyn Topics) -> Vec<GroupAction> {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.groups.borrow_mut().step(now_ms, input, topics)
    }

    /// Performs actions in order, and those that the appends' results lead to.
    async fn perform(&self, host: &dyn GroupHost, actions: Vec<GroupAction>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                GroupAction::Reply { id, reply } => self.answer(id, reply),
                GroupAction::AppendOffsets { append, partition, records, producer } => {
                    let result = append_records(host, partition, &records, producer).await;
                    queue.extend(self.step(GroupInput::Appended { append, result }, &HostTopics(host)));
                }
            }
        }
    }

    /// Performs the actions of an event that asks for no append (a tick, forgetting).
    fn answer_all(&self, actions: Vec<GroupAction>) {
        for action in actions {
            match action {
                GroupAction::Reply { id, reply } => self.answer(id, reply),
                GroupAction::AppendOffsets { append, .. } => {
                    panic!("the group state machine asked for append {append:?} outside a request")
                }
            }
        }
    }

    fn answer(&self, id: RequestId, reply: GroupReply) {
        // The receiver may be gone (its task was dropped); the reply then goes nowhere.
        if let Some(tx) = self.waiting.borrow_mut().remove(&id) {
            tx.send(reply);
        }
    }

    pub async fn handle(&self, host: &dyn GroupHost, request: GroupRequest) -> GroupReply {
        if let Some(partition) = request.group().map(offsets_partition) {
            if self.loading.borrow().contains(&partition) {
                return GroupReply::Done(Err(NodeError::new(
                    ErrorKind::CoordinatorNotAvailable,
                    format!("the groups of {OFFSETS_TOPIC}-{partition} are being loaded here; retry"),
                )));
            }
        }
        let id = RequestId(self.next_request.get());
        self.next_request.set(id.0 + 1);
        let (tx, rx) = Oneshot::channel();
        self.waiting.borrow_mut().insert(id, tx);
        let actions = self.step(GroupInput::Request { id, request }, &HostTopics(host));
        self.perform(host, actions).await;
        rx.await.unwrap_or_else(|| {
            GroupReply::Done(Err(NodeError::new(ErrorKind::CoordinatorNotAvailable, "the group coordinator stopped")))
        })
    }

    /// Removes members whose session expired and enforces rebalance deadlines (storing
    /// the metadata of the groups that changed).
    pub async fn expire(&self, host: &dyn GroupHost) {
        let actions = self.step(GroupInput::Tick, &HostTopics(host));
        self.perform(host, actions).await;
    }

    /// Reads the groups and committed offsets of offsets partition `partition`, which
    /// this shard now owns.
    pub async fn load(&self, partition: u32, log: &PartitionLog) {
        self.begin_loading(partition);
        self.load_records(log).await;
        self.end_loading(partition);
    }

    /// Answers the groups of `partition` "not available" until `end_loading`.
    pub fn begin_loading(&self, partition: u32) {
        self.loading.borrow_mut().insert(partition);
    }

    pub fn end_loading(&self, partition: u32) {
        self.loading.borrow_mut().remove(&partition);
    }

    async fn load_records(&self, log: &PartitionLog) {
        let mut loaded = 0u64;
        // Transactional commits, by producer, until their transaction's marker.
        let mut open: HashMap<i64, Vec<GroupRecord>> = HashMap::new();
        read_log(log, "committed offsets", |bytes| {
            let mut records = Vec::new();
            for batch in sluice_schemas::batch::BatchWalker::new(bytes) {
                let Ok((_, header, batch)) = batch else { break };
                let attributes = header.attributes();
                let producer_id = header.producer_id.get();
                if attributes.is_control() {
                    let ended = open.remove(&producer_id);
                    if let (Some(ended), Some(sluice_schemas::control::ControlType::Commit)) =
                        (ended, sluice_schemas::control::control_type(batch))
                    {
                        records.extend(ended);
                    }
                    continue;
                }
                let Ok(iter) = RecordIter::from_bytes(batch) else { continue };
                let into =
                    if attributes.is_transactional() { open.entry(producer_id).or_default() } else { &mut records };
                for r in iter.flatten() {
                    let Some(record) = r.key.and_then(|key| GroupRecord::parse(key, r.value)) else { continue };
                    into.push(record);
                }
            }
            loaded += records.len() as u64;
            let actions = self.step(GroupInput::Loaded(records), &NoTopics);
            self.answer_all(actions);
        })
        .await;
        for (producer_id, records) in open {
            let actions = self.step(GroupInput::LoadedTxn { producer_id, records }, &NoTopics);
            self.answer_all(actions);
        }
        debug!(dir = %log.dir().display(), records = loaded, "groups and committed offsets loaded");
    }

    /// A transaction's marker was written to one of this shard's offsets partitions: the
    /// producer's transactional offset commits count now, or are dropped.
    pub fn transaction_ended(&self, producer_id: i64, commit: bool) {
        let actions = self.step(GroupInput::TransactionEnded { producer_id, commit }, &NoTopics);
        self.answer_all(actions);
    }

    /// Drops every group of one offsets partition, members and committed offsets (in a
    /// cluster: this node stopped leading it, or is about to reload it as its new leader).
    pub fn forget_partition(&self, partition: u32) {
        let actions = self.step(GroupInput::ForgetPartition(partition), &NoTopics);
        self.answer_all(actions);
    }

    /// Forgets every group's committed offsets of a deleted topic (tombstones in the
    /// offsets partitions), as Kafka does: a topic created again under the name starts
    /// without them.
    pub async fn forget_topic(&self, host: &dyn GroupHost, topic: &str) {
        let actions = self.step(GroupInput::ForgetTopic(topic.to_string()), &HostTopics(host));
        self.perform(host, actions).await;
    }

    /// Committed offsets of every group this shard owns (for lag metrics).
    #[must_use]
    pub fn all_committed(&self) -> Vec<(String, String, u32, i64)> {
        self.groups.borrow().all_committed()
    }
}

/// Reads a coordinator's internal partition from its log start to its end, a chunk of
/// whole batches (up to `LOAD_READ_BYTES`) at a time; a read that fails ends it, logged
/// with `what` the partition holds.
pub(crate) async fn read_log(log: &PartitionLog, what: &str, mut visit: impl FnMut(&[u8])) {
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let fetched = match log.read(offset, LOAD_READ_BYTES).await {
            Ok(f) if !f.chunks.is_empty() => f,
            Ok(_) => break,
            Err(e) => {
                warn!("loading {what} from {}: {e}", log.dir().display());
                break;
            }
        };
        visit(&fetched.to_vec());
        offset = fetched.next_offset;
    }
}

/// Appends offset records as one batch, stamped with the wall clock (record timestamps
/// are wall-clock milliseconds).
/// A transaction's records (`producer`) go in a transactional batch of its producer id
/// and epoch, with no sequence number (as Kafka's group coordinator writes them).
async fn append_records(
    host: &dyn GroupHost,
    partition: u32,
    records: &[GroupRecord],
    producer: Option<(i64, i16)>,
) -> Result<(), NodeError> {
    let timestamp_ms = io::Clock::system().now_ms();
    let fail = |e: sluice_schemas::records::RecordError| {
        NodeError::new(ErrorKind::InvalidRequest, format!("offset records for {OFFSETS_TOPIC}-{partition}: {e}"))
    };
    let mut config = BatchConfig::default();
    if let Some((producer_id, epoch)) = producer {
        config.producer_id = u64::try_from(producer_id).ok().map(sluice_schemas::ProducerId);
        config.producer_epoch = epoch;
        config.attributes = sluice_schemas::batch::Attributes(sluice_schemas::batch::Attributes::TRANSACTIONAL_BIT);
    }
    let mut builder = BatchBuilder::new(config).map_err(fail)?;
    for record in records {
        builder.push(Some(&record.key()), record.value(timestamp_ms).as_deref(), &[], timestamp_ms).map_err(fail)?;
    }
    let batch = builder.finish().map_err(fail)?;
    host.append_offsets(partition, &batch).await
}

/// What makes member ids unique across the node's restarts (the counter restarts at 0,
/// and clients reuse client ids): the start time in nanoseconds, mixed with the pid.
fn instance_tag() -> String {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        format!("{:x}", nanos ^ (u64::from(std::process::id()) << 48))
    })
    .clone()
}

/// Runs `expire` every `EXPIRY_CHECK_MS` while `host` lives.
pub fn spawn_expiry<H: GroupHost + 'static>(
    host: std::rc::Weak<H>,
    coordinator: impl Fn(&H) -> &Coordinator + 'static,
) {
    io::spawn_detached(async move {
        loop {
            io::sleep(Duration::from_millis(EXPIRY_CHECK_MS)).await;
            let Some(h) = host.upgrade() else { return };
            coordinator(&h).expire(&*h).await;
        }
    });
}

#[cfg(test)]
mod tests {
    //! The driver over a fake host, without an executor: replies reach the requests'
    //! tasks, appends go to the host as batches the log can store, and their results
    //! come back to the state machine. The rules themselves are `state_tests.rs`'s.
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeSet;

    use futures_lite::future::{block_on, zip};

    use super::state_tests::{done, joined, native_join};
    use super::*;

    /// A host with topic `t` (6 partitions) that keeps the batches appended to it, or
    /// refuses them.
    #[derive(Default)]
    struct FakeHost {
        appended: RefCell<Vec<(u32, Vec<u8>)>>,
        refuse: Cell<bool>,
    }

    impl GroupHost for FakeHost {
        fn partition_count(&self, topic: &str) -> Option<u32> {
            (topic == "t").then_some(6)
        }
        fn append_offsets<'a>(&'a self, partition: u32, batch: &'a [u8]) -> LocalFuture<'a, Result<(), NodeError>> {
            Box::pin(async move {
                if self.refuse.get() {
                    return Err(NodeError::new(ErrorKind::CoordinatorNotAvailable, "no offsets partition here"));
                }
                self.appended.borrow_mut().push((partition, batch.to_vec()));
                Ok(())
            })
        }
    }

    fn join_request(member_id: &str) -> GroupRequest {
        native_join("g", member_id, "c", &["t"])
    }

    /// A second member's join waits in its task until the first member, told by its
    /// heartbeat, joins again; both tasks then get generation 2 and half the partitions.
    #[test]
    fn a_waiting_join_is_answered_in_its_own_task() {
        let (c, host) = (Coordinator::default(), FakeHost::default());
        let first = joined(block_on(c.handle(&host, join_request(""))));
        assert_eq!((first.generation, first.assignment.len()), (1, 6));
        let second_join = c.handle(&host, join_request(""));
        let first_again = async {
            let beat = GroupRequest::Heartbeat { group: "g".into(), member_id: first.member_id.clone(), generation: 1 };
            assert_eq!(done(c.handle(&host, beat).await).unwrap_err().kind, ErrorKind::RebalanceInProgress);
            c.handle(&host, join_request(&first.member_id)).await
        };
        let (second, first2) = block_on(zip(second_join, first_again));
        let (second, first2) = (joined(second), joined(first2));
        assert_eq!((second.generation, first2.generation), (2, 2));
        assert_eq!((second.assignment.len(), first2.assignment.len()), (3, 3));
        assert!(c.waiting.borrow().is_empty());
    }

    /// A commit's records reach the host as one stored batch on the group's offsets
    /// partition, and the committed offset is read back; a refused append fails the
    /// commit and changes nothing.
    #[test]
    fn commits_are_appended_as_batches_before_they_count() {
        let (c, host) = (Coordinator::default(), FakeHost::default());
        let member = joined(block_on(c.handle(&host, join_request(""))));
        let commit = |offset: i64| GroupRequest::Commit {
            group: "g".into(),
            member_id: member.member_id.clone(),
            generation: member.generation,
            offsets: vec![("t".into(), 2, offset, "m".into())],
        };
        match block_on(c.handle(&host, commit(5))) {
            GroupReply::Committed(Ok(results)) => assert_eq!(results, vec![("t".into(), 2, Ok(()))]),
            other => panic!("expected a commit, got {other:?}"),
        }
        // The join's rebalance stored the group's metadata; then the commit.
        let appended = host.appended.borrow().clone();
        assert_eq!(appended.len(), 2);
        assert!(appended.iter().all(|(p, _)| *p == offsets_partition("g")));
        let stored: Vec<GroupRecord> = appended
            .iter()
            .flat_map(|(_, batch)| RecordIter::from_bytes(batch).unwrap().map(|r| r.unwrap()))
            .map(|r| GroupRecord::parse(r.key.unwrap(), r.value).unwrap())
            .collect();
        assert!(matches!(&stored[0], GroupRecord::Group(g) if g.value.as_ref().is_some_and(|v| v.generation == 1)));
        let expected =
            records::OffsetRecord { group: "g".into(), topic: "t".into(), partition: 2, value: Some((5, "m".into())) };
        assert_eq!(stored[1], GroupRecord::Offset(expected));
        host.refuse.set(true);
        match block_on(c.handle(&host, commit(9))) {
            GroupReply::Committed(Err(e)) => assert_eq!(e.kind, ErrorKind::CoordinatorNotAvailable),
            other => panic!("expected a failed commit, got {other:?}"),
        }
        assert_eq!(c.all_committed(), vec![("g".into(), "t".into(), 2, 5)]);
    }

    #[test]
    fn groups_spread_over_the_offsets_partitions() {
        let used: BTreeSet<u32> = (0..100).map(|i| offsets_partition(&format!("group-{i}"))).collect();
        assert_eq!(used.len(), OFFSETS_PARTITIONS as usize);
    }
}
