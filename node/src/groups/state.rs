//! The group coordinator's decisions as a state machine: `Groups::step(now_ms, input,
//! topics)` takes one event (a request, a timer tick, offsets loaded from the log, the
//! result of an append) and returns what to do (`GroupAction`: answer a request, append
//! offset records). It holds one shard's groups (members, generations, states,
//! protocols, assignments) and the committed offsets it has seen.
//!
//! What it guarantees:
//! - it reads no clock and does no I/O: time is the `now_ms` of each step (any monotonic
//!   milliseconds), and the only outside knowledge is `Topics` (partition counts), so
//!   tests drive rebalances with simulated time (`state_tests.rs`, which also checks
//!   that this file's imports stay pure);
//! - a request is answered exactly once, by a `Reply` with its `RequestId`, in the step
//!   that decides it: at once, or later when a rebalance completes (JoinGroup), the leader
//!   sends its assignments (SyncGroup), or the append it asked for completes (commits,
//!   deletions). Requests of a group whose offsets partition is forgotten are answered
//!   NOT_COORDINATOR;
//! - a commit or a deletion changes the committed offsets only once its records were
//!   appended (`GroupInput::Appended`), and is answered then with the append's result;
//! - commits and heartbeats from another generation are refused (fencing).
//!
//! Protocol: a member joins (JoinGroup); a join starts a rebalance, which waits for every
//! current member to join again (they learn of it from a heartbeat answered
//! RebalanceInProgress) or for the rebalance timeout (members that did not rejoin are
//! removed), then bumps the generation and answers every join. Native members get their
//! assignment in the answer (the coordinator assigns with `assign`). Kafka's classic
//! protocol assigns on the client: on completion the coordinator picks the protocol every
//! member supports (by vote, as Kafka does), answers the leader with every member's
//! metadata and moves to CompletingRebalance; the leader's SyncGroup carries every
//! member's opaque assignment, which the coordinator hands to each member's SyncGroup.
//! A member whose heartbeats stop for its session timeout is removed and the rest
//! rebalance. One group is either native or classic while it has members.

use sluice_schemas::TopicPartition;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use sluice_schemas::groups::offsets_partition;
use tracing::{debug, info, warn};

use super::assign;
use super::consumer::ConsumerGroup;
use super::consumer_protocol;
use super::messages::{
    ConsumerHeartbeat, ConsumerHeartbeatResult, GroupDescription, GroupReply, GroupRequest, GroupSummary, JoinArgs,
    JoinProtocol, JoinResult, MemberDescription, PartitionOutcome,
};
use super::records::{GroupMetadata, GroupMetadataRecord, GroupRecord, MemberMetadata, OffsetRecord};
use crate::errors::{ErrorKind, NodeError};

/// Session timeouts a member may ask for (Kafka's broker defaults).
pub const SESSION_TIMEOUT_MS_MIN: u32 = 100;
pub const SESSION_TIMEOUT_MS_MAX: u32 = 1_800_000;
/// Longest group id accepted.
pub const GROUP_ID_BYTES_MAX: usize = 255;
/// Kafka's protocol type of consumer groups, which native groups report too.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Names a request that waits for its `Reply`; chosen by the driver, unique among the
/// requests in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Names an append the state machine asked for; the driver reports its result with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppendId(pub u64);

/// What the coordinator needs to know of the topics: their partition counts (to assign
/// partitions and to check commits).
pub trait Topics {
    fn partition_count(&self, topic: &str) -> Option<u32>;
}

/// What the coordinator reacts to.
#[derive(Clone, Debug)]
pub enum GroupInput {
    /// A request, to be answered by a `Reply` with `id`.
    Request { id: RequestId, request: GroupRequest },
    /// Time passed: remove members whose session expired, enforce rebalance deadlines.
    Tick,
    /// Records read back from an offsets partition, in log order.
    Loaded(Vec<GroupRecord>),
    /// Transactional offset commits read back whose transaction has not ended yet.
    LoadedTxn { producer_id: i64, records: Vec<GroupRecord> },
    /// A transaction's marker was written to an offsets partition: its offset commits
    /// count now (commit) or never (abort).
    TransactionEnded { producer_id: i64, commit: bool },
    /// An `AppendOffsets` completed.
    Appended { append: AppendId, result: Result<(), NodeError> },
    /// This shard no longer coordinates the groups of this offsets partition (or is
    /// about to load it again): forget them and their committed offsets.
    ForgetPartition(u32),
    /// A topic was deleted: delete every group's commits of it (tombstones first).
    ForgetTopic(String),
}

/// What the coordinator asks its driver to do.
#[derive(Clone, Debug)]
pub enum GroupAction {
    /// Answer the request `id`.
    Reply { id: RequestId, reply: GroupReply },
    /// Append `records` as one batch to offsets partition `partition` and report the
    /// result as `GroupInput::Appended { append, .. }`. Appends the driver is given in
    /// one step are independent, and the driver performs them in the order given.
    /// `producer`: a transaction's (producer id, epoch), whose batch is transactional.
    AppendOffsets { append: AppendId, partition: u32, records: Vec<GroupRecord>, producer: Option<(i64, i16)> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Empty,
    PreparingRebalance,
    /// Classic protocol: joined, waiting for the leader's assignments.
    CompletingRebalance,
    Stable,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

struct Member {
    client_id: String,
    client_host: String,
    topics: BTreeSet<String>,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    last_seen_ms: u64,
    /// Joined in the rebalance under way.
    rejoined: bool,
    assignment: Vec<TopicPartition>,
    /// Classic protocol: (name, metadata) in the member's order of preference.
    protocols: Vec<(String, Vec<u8>)>,
    /// Classic protocol: the assignment its leader computed for it.
    assignment_bytes: Vec<u8>,
    /// Kafka's `group.instance.id`: a static member.
    instance_id: Option<String>,
}

impl Member {
    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }
}

struct Group {
    state: State,
    generation: i32,
    strategy: String,
    /// Kafka's classic protocol (client-side assignment) rather than ours.
    classic: bool,
    protocol_type: String,
    leader: String,
    members: BTreeMap<String, Member>,
    rebalance_deadline_ms: Option<u64>,
    /// A rebalance completed or the group emptied in this step: its metadata is written
    /// at the step's end (`store_changed_groups`).
    changed: bool,
    /// Static members: the member id each instance id held before its latest rejoin (one
    /// per instance, so bounded by the group's instances). A request from one of these is
    /// answered FENCED_INSTANCE_ID: two processes configured with one instance id must not
    /// take turns evicting each other.
    replaced: BTreeMap<String, String>,
    /// An empty classic group's first rebalance: (complete no earlier than, nor later
    /// than); `maybe_complete` waits for the first while the members keep joining.
    initial_delay: Option<(u64, u64)>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            strategy: String::new(),
            classic: false,
            protocol_type: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            rebalance_deadline_ms: None,
            changed: false,
            replaced: BTreeMap::new(),
            initial_delay: None,
        }
    }

    /// The error for a request from `member_id`, which is not a member: fenced when a static
    /// member's restart replaced it, unknown otherwise.
    fn not_a_member(&self, group_id: &str, member_id: &str) -> NodeError {
        match self.replaced.get(member_id) {
            Some(instance) => fenced(instance),
            None => error(ErrorKind::UnknownMemberId, format!("member {member_id:?} is not in group {group_id:?}")),
        }
    }

    /// The member id of the static member with `instance`.
    fn static_member(&self, instance: &str) -> Option<String> {
        self.members.iter().find(|(_, m)| m.instance_id.as_deref() == Some(instance)).map(|(id, _)| id.clone())
    }

    /// Classic protocol: every member's metadata for the chosen protocol, as the leader's
    /// JoinGroup answer carries it.
    fn member_metadata(&self) -> Vec<(String, Vec<u8>)> {
        self.members
            .iter()
            .map(|(id, m)| {
                let metadata = m.protocols.iter().find(|(name, _)| *name == self.strategy);
                (id.clone(), metadata.map(|(_, bytes)| bytes.clone()).unwrap_or_default())
            })
            .collect()
    }

    /// The topics its members subscribe to: native members' topics, classic members' from
    /// their consumer-protocol subscriptions in the chosen protocol.
    fn subscribed_topics(&self) -> BTreeSet<String> {
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            topics.extend(m.topics.iter().cloned());
            if self.classic && self.protocol_type == CONSUMER_PROTOCOL_TYPE {
                let chosen = m.protocols.iter().find(|(name, _)| *name == self.strategy).or(m.protocols.first());
                if let Some((_, bytes)) = chosen {
                    topics.extend(consumer_protocol::decode_subscription(bytes).map(|(t, _)| t).unwrap_or_default());
                }
            }
        }
        topics
    }

    /// The group as `GroupMetadataValue` holds it: what a new coordinator needs to carry
    /// on without a rebalance.
    fn metadata(&self) -> GroupMetadata {
        let members = self
            .members
            .iter()
            .map(|(id, m)| MemberMetadata {
                member_id: id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: i32::try_from(m.rebalance_timeout_ms).unwrap_or(i32::MAX),
                session_timeout_ms: i32::try_from(m.session_timeout_ms).unwrap_or(i32::MAX),
                subscription: if self.classic {
                    m.protocols
                        .iter()
                        .find(|(name, _)| *name == self.strategy)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default()
                } else {
                    let topics: Vec<String> = m.topics.iter().cloned().collect();
                    consumer_protocol::encode_subscription_with(&topics, Some(NATIVE_MARK))
                },
                assignment: if self.classic {
                    m.assignment_bytes.clone()
                } else {
                    consumer_protocol::encode_assignment(&m.assignment)
                },
            })
            .collect();
        let active = !self.members.is_empty();
        GroupMetadata {
            protocol_type: self.protocol_type.clone(),
            generation: self.generation,
            protocol: active.then(|| self.strategy.clone()),
            leader: active.then(|| self.leader.clone()),
            state_timestamp_ms: -1,
            members,
        }
    }

    /// A group as its metadata record left it: Stable with its members (sessions
    /// starting `now_ms`), or Empty.
    fn loaded(metadata: GroupMetadata, now_ms: u64) -> Group {
        // Native members' subscriptions carry `NATIVE_MARK` as user data.
        let native = !metadata.members.is_empty()
            && metadata.members.iter().all(|m| {
                consumer_protocol::decode_subscription(&m.subscription)
                    .is_some_and(|(_, data)| data.as_deref() == Some(NATIVE_MARK))
            });
        let strategy = metadata.protocol.unwrap_or_default();
        let decode = metadata.protocol_type == CONSUMER_PROTOCOL_TYPE;
        let members: BTreeMap<String, Member> = metadata
            .members
            .into_iter()
            .map(|m| {
                let (topics, protocols, assignment_bytes) = if native {
                    let topics = consumer_protocol::decode_subscription(&m.subscription).map(|(t, _)| t);
                    (topics.unwrap_or_default().into_iter().collect(), Vec::new(), Vec::new())
                } else {
                    (BTreeSet::new(), vec![(strategy.clone(), m.subscription)], m.assignment.clone())
                };
                let assignment = if decode || native {
                    consumer_protocol::decode_assignment(&m.assignment).unwrap_or_default()
                } else {
                    Vec::new()
                };
                let member = Member {
                    client_id: m.client_id,
                    client_host: m.client_host,
                    topics,
                    session_timeout_ms: u64::try_from(m.session_timeout_ms).unwrap_or(0),
                    rebalance_timeout_ms: u64::try_from(m.rebalance_timeout_ms).unwrap_or(0),
                    last_seen_ms: now_ms,
                    rejoined: false,
                    assignment,
                    protocols,
                    assignment_bytes,
                    instance_id: m.group_instance_id,
                };
                (m.member_id, member)
            })
            .collect();
        Group {
            state: if members.is_empty() { State::Empty } else { State::Stable },
            generation: metadata.generation,
            strategy,
            classic: !native,
            protocol_type: metadata.protocol_type,
            leader: metadata.leader.unwrap_or_default(),
            members,
            rebalance_deadline_ms: None,
            changed: false,
            replaced: BTreeMap::new(),
            initial_delay: None,
        }
    }
}

/// The user data in native members' subscriptions as group metadata records store them:
/// how a new coordinator tells a native group from a classic one.
const NATIVE_MARK: &[u8] = b"sluice-native";

/// A group's committed offsets: (topic, partition) -> (offset, metadata).
type Committed = BTreeMap<TopicPartition, (i64, String)>;

/// A request waiting for its group: a JoinGroup for the rebalance it took part in to
/// complete, or a classic member's SyncGroup for its leader's assignments.
struct Waiting {
    id: RequestId,
    group: String,
    member: String,
    /// The group's generation when it was sent: a join's answer comes with a later one,
    /// a sync is for this one.
    generation: i32,
}

/// What an append in flight was for.
enum PendingAppend {
    Commit {
        id: RequestId,
        group: String,
        accepted: Vec<(String, u32, i64, String)>,
        /// The refused partitions' outcomes, answered with the accepted ones.
        refused: Vec<PartitionOutcome>,
    },
    Delete {
        id: RequestId,
        group: String,
    },
    DeleteOffsets {
        id: RequestId,
        group: String,
        accepted: Vec<TopicPartition>,
        refused: Vec<PartitionOutcome>,
    },
    ForgetTopic {
        group: String,
        topic: String,
    },
    /// Offsets committed in a transaction (TxnOffsetCommit): pending until its marker.
    TxnCommit {
        id: RequestId,
        group: String,
        producer_id: i64,
        accepted: Vec<(String, u32, i64, String)>,
        refused: Vec<PartitionOutcome>,
    },
    /// A group's metadata after a rebalance or its last member left: nobody waits for it
    /// (a coordinator that fails before it is stored leaves the previous generation, and
    /// members rejoin).
    GroupMetadata {
        group: String,
    },
}

/// Who commits offsets in a transaction (TxnOffsetCommit).
struct TxnCommitArgs<'a> {
    group: &'a str,
    producer_id: i64,
    producer_epoch: i16,
    member_id: &'a str,
    generation: i32,
}

/// One shard's groups and committed offsets. Lives on: the shard owning the offsets
/// partitions of these groups (`Coordinator` drives it there).
///
/// Pending requests are bounded by the requests the server holds in flight (each one
/// a request whose memory the server reserved).
pub struct Groups {
    groups: BTreeMap<String, Group>,
    /// group -> (topic, partition) -> (offset, metadata)
    offsets: BTreeMap<String, Committed>,
    /// Member ids are `<client id>-<instance tag>-<counter>`.
    instance_tag: String,
    next_member: u64,
    joins: Vec<Waiting>,
    syncs: Vec<Waiting>,
    appends: BTreeMap<AppendId, PendingAppend>,
    next_append: u64,
    /// The latest step's time: time never goes back.
    now_ms: u64,
    /// Kafka's group.initial.rebalance.delay.ms (classic groups).
    initial_rebalance_delay_ms: u64,
    /// Groups of Kafka's consumer protocol (KIP-848); a group id is in `groups` or here.
    consumer_groups: BTreeMap<String, ConsumerGroup>,
    /// group.consumer.heartbeat.interval.ms and group.consumer.session.timeout.ms.
    consumer_heartbeat_interval_ms: u32,
    consumer_session_timeout_ms: u64,
    /// Offsets committed in transactions not ended yet, by producer id: (group,
    /// partition, (offset, metadata)), in commit order.
    pending_txn: BTreeMap<i64, Vec<PendingTxnCommit>>,
}

/// A transaction's offset commit waiting for its marker: group, partition, (offset,
/// metadata).
type PendingTxnCommit = (String, TopicPartition, (i64, String));

fn error(kind: ErrorKind, message: impl Into<String>) -> NodeError {
    NodeError::new(kind, message)
}

fn fenced(instance: &str) -> NodeError {
    error(
        ErrorKind::FencedInstanceId,
        format!("instance id {instance:?} belongs to a newer member now: this one was fenced"),
    )
}

fn check_group_id(group: &str) -> Result<(), NodeError> {
    if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
        return Err(error(
            ErrorKind::InvalidGroupId,
            format!("group id {group:?} must have 1 to {GROUP_ID_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

/// One partition's commit: topic, partition, offset, metadata.
type CommitOffset = (String, u32, i64, String);

/// A commit's offsets split into those of existing partitions (with an offset of 0 or
/// more) and the refused ones with why.
fn split_commit(topics: &dyn Topics, offsets: Vec<CommitOffset>) -> (Vec<CommitOffset>, Vec<PartitionOutcome>) {
    let mut refused = Vec::new();
    let mut accepted = Vec::new();
    for (topic, partition, offset, metadata) in offsets {
        match topics.partition_count(&topic) {
            Some(c) if partition < c && offset >= 0 => accepted.push((topic, partition, offset, metadata)),
            Some(_) if offset < 0 => refused.push((
                topic,
                partition,
                Err(error(ErrorKind::OffsetOutOfRange, format!("offset {offset} is negative"))),
            )),
            _ => {
                let e = NodeError::unknown_partition(&topic, partition);
                refused.push((topic, partition, Err(e)));
            }
        }
    }
    (accepted, refused)
}

/// The offset records of a group's accepted commits.
fn offset_records(group_id: &str, accepted: &[CommitOffset]) -> Vec<GroupRecord> {
    accepted
        .iter()
        .map(|(topic, partition, offset, metadata)| {
            GroupRecord::Offset(OffsetRecord {
                group: group_id.to_string(),
                topic: topic.clone(),
                partition: *partition,
                value: Some((*offset, metadata.clone())),
            })
        })
        .collect()
}

impl Groups {
    /// No groups. `instance_tag` makes member ids unique across the node's restarts (the
    /// member counter starts at 0 again, and clients reuse client ids).
    #[must_use]
    pub fn new(instance_tag: impl Into<String>) -> Groups {
        Groups {
            groups: BTreeMap::new(),
            offsets: BTreeMap::new(),
            instance_tag: instance_tag.into(),
            next_member: 0,
            joins: Vec::new(),
            syncs: Vec::new(),
            appends: BTreeMap::new(),
            next_append: 0,
            now_ms: 0,
            initial_rebalance_delay_ms: 0,
            consumer_groups: BTreeMap::new(),
            consumer_heartbeat_interval_ms: 5_000,
            consumer_session_timeout_ms: 45_000,
            pending_txn: BTreeMap::new(),
        }
    }

    /// KIP-848 groups: the heartbeat interval members are told, and the session timeout
    /// after which a silent member is removed (Kafka's defaults: 5 s and 45 s).
    pub fn with_consumer_timing(mut self, heartbeat_interval_ms: u32, session_timeout_ms: u64) -> Groups {
        self.consumer_heartbeat_interval_ms = heartbeat_interval_ms;
        self.consumer_session_timeout_ms = session_timeout_ms;
        self
    }

    /// An empty classic group's first rebalance waits `ms` for more members, each join
    /// extending the wait by `ms` up to the group's rebalance timeout (Kafka's
    /// group.initial.rebalance.delay.ms; 0, the default here, completes at once).
    pub fn with_initial_rebalance_delay(mut self, ms: u64) -> Groups {
        self.initial_rebalance_delay_ms = ms;
        self
    }

    /// Takes one event at `now_ms` and returns what to do, in order.
    pub fn step(&mut self, now_ms: u64, input: GroupInput, topics: &dyn Topics) -> Vec<GroupAction> {
        assert!(now_ms >= self.now_ms, "the group state machine's time went back from {} to {now_ms} ms", self.now_ms);
        self.now_ms = now_ms;
        let mut out = Vec::new();
        match input {
            GroupInput::Request { id, request } => self.request(now_ms, topics, id, request, &mut out),
            GroupInput::Tick => self.expire(now_ms, topics),
            GroupInput::Loaded(records) => self.load(records),
            GroupInput::LoadedTxn { producer_id, records } => self.load_pending(producer_id, records),
            GroupInput::TransactionEnded { producer_id, commit } => self.transaction_ended(producer_id, commit),
            GroupInput::Appended { append, result } => self.appended(append, result, &mut out),
            GroupInput::ForgetPartition(partition) => self.forget_partition(partition, &mut out),
            GroupInput::ForgetTopic(topic) => self.forget_topic(&topic, &mut out),
        }
        self.settle(now_ms, &mut out);
        self.store_changed_groups(&mut out);
        out
    }

    /// Appends the metadata of every group a rebalance or a departure changed in this step.
    fn store_changed_groups(&mut self, out: &mut Vec<GroupAction>) {
        let mut changed: Vec<(String, GroupMetadata)> = self
            .groups
            .iter_mut()
            .filter(|(_, g)| g.changed)
            .map(|(id, g)| {
                g.changed = false;
                (id.clone(), g.metadata())
            })
            .collect();
        changed.extend(self.consumer_groups.iter_mut().filter(|(_, g)| g.changed).map(|(id, g)| {
            g.changed = false;
            (id.clone(), g.metadata())
        }));
        for (group, metadata) in changed {
            let record = GroupRecord::Group(GroupMetadataRecord { group: group.clone(), value: Some(metadata) });
            out.push(self.append(&group.clone(), vec![record], PendingAppend::GroupMetadata { group }, None));
        }
    }

    /// Committed offsets of every group (for lag metrics): (group, topic, partition,
    /// offset).
    #[must_use]
    pub fn all_committed(&self) -> Vec<(String, String, u32, i64)> {
        self.offsets
            .iter()
            .flat_map(|(g, c)| c.iter().map(move |(tp, (o, _))| (g.clone(), tp.topic.clone(), tp.partition, *o)))
            .collect()
    }

    /// Requests waiting for a rebalance, a leader's assignments or an append.
    #[must_use]
    pub fn pending_requests(&self) -> usize {
        let appends = self
            .appends
            .values()
            .filter(|a| !matches!(a, PendingAppend::ForgetTopic { .. } | PendingAppend::GroupMetadata { .. }))
            .count();
        self.joins.len() + self.syncs.len() + appends
    }

    fn request(
        &mut self,
        now_ms: u64,
        topics: &dyn Topics,
        id: RequestId,
        request: GroupRequest,
        out: &mut Vec<GroupAction>,
    ) {
        let reply = match request {
            GroupRequest::Join { group, join } => match self.join(now_ms, topics, id, &group, join) {
                // A static member back in its place: answered at once.
                Ok(Some(result)) => GroupReply::Joined(Ok(result)),
                // Answered by `settle` once the rebalance completes (maybe in this step).
                Ok(None) => return,
                Err(e) => GroupReply::Joined(Err(e)),
            },
            GroupRequest::Sync { group, member_id, generation, assignments } => {
                if let Err(e) = check_group_id(&group) {
                    GroupReply::Synced(Err(e))
                } else {
                    match self.sync(now_ms, &group, &member_id, generation, &mut Some(assignments)) {
                        Some(result) => GroupReply::Synced(result),
                        None => {
                            self.syncs.push(Waiting { id, group, member: member_id, generation });
                            return;
                        }
                    }
                }
            }
            GroupRequest::Heartbeat { group, member_id, generation } => {
                GroupReply::Done(self.heartbeat(now_ms, &group, &member_id, generation))
            }
            GroupRequest::Leave { group, member_id } => {
                GroupReply::Done(self.leave(now_ms, topics, &group, &member_id))
            }
            GroupRequest::LeaveStatic { group, instance_id, member_id } => {
                let found = self.groups.get(&group).and_then(|g| g.static_member(&instance_id));
                GroupReply::Done(match found {
                    Some(current) if !member_id.is_empty() && member_id != current => Err(fenced(&instance_id)),
                    Some(current) => self.leave(now_ms, topics, &group, &current),
                    None => Err(error(
                        ErrorKind::UnknownMemberId,
                        format!("group {group:?} has no member with instance id {instance_id:?}"),
                    )),
                })
            }
            GroupRequest::Commit { group, member_id, generation, offsets } => {
                match self.commit(topics, id, &group, &member_id, generation, offsets, out) {
                    Some(result) => GroupReply::Committed(result),
                    None => return,
                }
            }
            GroupRequest::TxnCommit { group, producer_id, producer_epoch, member_id, generation, offsets } => {
                let args =
                    TxnCommitArgs { group: &group, producer_id, producer_epoch, member_id: &member_id, generation };
                match self.txn_commit(topics, id, &args, offsets, out) {
                    Some(result) => GroupReply::Committed(result),
                    None => return,
                }
            }
            GroupRequest::Fetch { group, partitions, require_stable } => {
                if require_stable {
                    if let Some(tp) = self.pending_of(&group, partitions.as_deref()) {
                        return out.push(GroupAction::Reply {
                            id,
                            reply: GroupReply::Offsets(Err(error(
                                ErrorKind::UnstableOffsetCommit,
                                format!("group {group:?} has a transaction's pending commit of {tp}; retry"),
                            ))),
                        });
                    }
                }
                GroupReply::Offsets(Ok(self.fetch(&group, partitions)))
            }
            GroupRequest::List => GroupReply::Listed(self.list()),
            GroupRequest::Describe { group } => GroupReply::Described(self.describe(&group)),
            GroupRequest::Delete { group } => match self.delete(id, &group, out) {
                Some(result) => GroupReply::Done(result),
                None => return,
            },
            GroupRequest::DeleteOffsets { group, partitions } => {
                match self.delete_offsets(id, &group, partitions, out) {
                    Some(result) => GroupReply::Committed(result),
                    None => return,
                }
            }
            GroupRequest::ConsumerHeartbeat { group, heartbeat } => {
                GroupReply::ConsumerHeartbeat(self.consumer_heartbeat(now_ms, topics, &group, heartbeat))
            }
        };
        out.push(GroupAction::Reply { id, reply });
    }

    /// A KIP-848 heartbeat (see `consumer`): refused for a group of the other protocols
    /// while it has members.
    fn consumer_heartbeat(
        &mut self,
        now_ms: u64,
        topics: &dyn Topics,
        group_id: &str,
        heartbeat: ConsumerHeartbeat,
    ) -> Result<ConsumerHeartbeatResult, NodeError> {
        check_group_id(group_id)?;
        if let Some(g) = self.groups.get(group_id) {
            if !g.members.is_empty() {
                return Err(error(
                    ErrorKind::GroupIdNotFound,
                    format!("group {group_id:?} is not a consumer group: its members use the classic protocol"),
                ));
            }
        }
        self.groups.remove(group_id);
        let client = if heartbeat.client_id.is_empty() { "member".to_string() } else { heartbeat.client_id.clone() };
        let (tag, next) = (&self.instance_tag, &mut self.next_member);
        let new_id = || {
            *next += 1;
            format!("{client}-{tag}-{}", *next - 1)
        };
        let group = self.consumer_groups.entry(group_id.to_string()).or_default();
        group.heartbeat(group_id, now_ms, topics, heartbeat, new_id, self.consumer_heartbeat_interval_ms)
    }

    /// Adds (or replaces) the member and starts a rebalance unless one is under way; the
    /// join waits in `joins` for it to complete. A static member (`instance_id`) that
    /// joins without a member id takes the place of the member with its instance id under
    /// a new member id (the old one is fenced); when the group is Stable and its protocols
    /// (or topics) did not change, it is answered at once with the current generation and
    /// its assignment, and nobody rebalances (KIP-345).
    fn join(
        &mut self,
        now_ms: u64,
        topics: &dyn Topics,
        id: RequestId,
        group_id: &str,
        mut join: JoinArgs,
    ) -> Result<Option<JoinResult>, NodeError> {
        check_group_id(group_id)?;
        if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(&join.session_timeout_ms) {
            return Err(error(
                ErrorKind::InvalidSessionTimeout,
                format!(
                    "session timeout {} ms is out of range ({SESSION_TIMEOUT_MS_MIN} to {SESSION_TIMEOUT_MS_MAX})",
                    join.session_timeout_ms
                ),
            ));
        }
        match &join.protocol {
            JoinProtocol::Native { strategy, .. } if !assign::STRATEGIES.contains(&strategy.as_str()) => {
                return Err(error(
                    ErrorKind::InvalidRequest,
                    format!("strategy {strategy:?} is not one of {}", assign::STRATEGIES.join(", ")),
                ));
            }
            JoinProtocol::Classic { protocol_type, protocols } if protocol_type.is_empty() || protocols.is_empty() => {
                return Err(error(
                    ErrorKind::InconsistentGroupProtocol,
                    "a join must name a protocol type and at least one protocol",
                ));
            }
            _ => {}
        }
        if self.consumer_groups.get(group_id).is_some_and(|g| !g.members.is_empty()) {
            return Err(error(
                ErrorKind::InconsistentGroupProtocol,
                format!("group {group_id:?} has members of Kafka's consumer protocol (KIP-848)"),
            ));
        }
        self.consumer_groups.remove(group_id);
        let group = self.groups.entry(group_id.to_string()).or_insert_with(Group::new);
        if let Some(instance) = join.instance_id.clone() {
            match group.static_member(&instance) {
                Some(current) if !join.member_id.is_empty() && join.member_id != current => {
                    return Err(fenced(&instance));
                }
                Some(current) if join.member_id.is_empty() => {
                    let n = self.next_member;
                    self.next_member += 1;
                    let client = if join.client_id.is_empty() { "member" } else { &join.client_id };
                    let new_id = format!("{client}-{}-{n}", self.instance_tag);
                    let Some(mut member) = group.members.remove(&current) else { unreachable!("found above") };
                    group.replaced.retain(|_, i| *i != instance);
                    group.replaced.insert(current.clone(), instance.clone());
                    if group.leader == current {
                        group.leader = new_id.clone();
                    }
                    info!(group = group_id, instance = %instance, old = %current, new = %new_id, "static member rejoined");
                    let unchanged = match &join.protocol {
                        JoinProtocol::Classic { protocols, .. } => group.classic && member.protocols == *protocols,
                        JoinProtocol::Native { topics, strategy } => {
                            !group.classic
                                && *strategy == group.strategy
                                && member.topics == topics.iter().cloned().collect::<BTreeSet<_>>()
                        }
                    };
                    if group.state == State::Stable && unchanged {
                        member.client_id = join.client_id;
                        member.client_host = join.client_host;
                        member.session_timeout_ms = u64::from(join.session_timeout_ms);
                        member.rebalance_timeout_ms = u64::from(join.rebalance_timeout_ms);
                        member.last_seen_ms = now_ms;
                        let assignment = member.assignment.clone();
                        group.members.insert(new_id.clone(), member);
                        group.changed = true;
                        return Ok(Some(JoinResult {
                            generation: group.generation,
                            member_id: new_id.clone(),
                            leader_id: group.leader.clone(),
                            strategy: group.strategy.clone(),
                            assignment,
                            members: if group.classic && group.leader == new_id {
                                group.member_metadata()
                            } else {
                                Vec::new()
                            },
                        }));
                    }
                    group.members.insert(new_id.clone(), member);
                    join.member_id = new_id;
                }
                _ => {}
            }
        }
        let others: Vec<&Member> =
            group.members.iter().filter(|(mid, _)| **mid != join.member_id).map(|(_, m)| m).collect();
        check_protocol(group_id, group, &others, &join.protocol)?;
        let member_id = if join.member_id.is_empty() {
            let n = self.next_member;
            self.next_member += 1;
            let client = if join.client_id.is_empty() { "member" } else { &join.client_id };
            format!("{client}-{}-{n}", self.instance_tag)
        } else if group.members.contains_key(&join.member_id) {
            join.member_id.clone()
        } else {
            return Err(group.not_a_member(group_id, &join.member_id));
        };
        let previous = group.members.remove(&member_id);
        let join_rebalance_timeout_ms = join.rebalance_timeout_ms;
        let (member_topics, protocols) = match join.protocol {
            JoinProtocol::Native { topics, strategy } => {
                group.strategy = strategy;
                group.classic = false;
                group.protocol_type = CONSUMER_PROTOCOL_TYPE.to_string();
                (topics.into_iter().collect(), Vec::new())
            }
            JoinProtocol::Classic { protocol_type, protocols } => {
                group.classic = true;
                group.protocol_type = protocol_type;
                (BTreeSet::new(), protocols)
            }
        };
        group.members.insert(
            member_id.clone(),
            Member {
                client_id: join.client_id,
                client_host: join.client_host,
                topics: member_topics,
                session_timeout_ms: u64::from(join.session_timeout_ms),
                rebalance_timeout_ms: u64::from(join.rebalance_timeout_ms),
                last_seen_ms: now_ms,
                rejoined: true,
                assignment: previous.map(|m| m.assignment).unwrap_or_default(),
                protocols,
                assignment_bytes: Vec::new(),
                instance_id: join.instance_id,
            },
        );
        let delay = self.initial_rebalance_delay_ms;
        if group.classic && delay > 0 {
            if group.state == State::Empty {
                group.initial_delay = Some((now_ms + delay, now_ms + u64::from(join_rebalance_timeout_ms)));
            } else if let Some((until, limit)) = &mut group.initial_delay {
                *until = (now_ms + delay).min(*limit).max(*until);
            }
        }
        if group.state != State::PreparingRebalance {
            start_rebalance(now_ms, group, group_id, Some(&member_id));
        }
        self.joins.push(Waiting { id, group: group_id.to_string(), member: member_id, generation: group.generation });
        maybe_complete(now_ms, topics, group, group_id, false);
        Ok(None)
    }

    /// Classic protocol: the leader's SyncGroup stores every member's assignment and is
    /// answered with its own; the others' wait (`None`) while the group is
    /// CompletingRebalance, which the rebalance deadline bounds (then a new rebalance
    /// starts and they are answered RebalanceInProgress). `assignments` is taken by the
    /// leader's.
    fn sync(
        &mut self,
        now_ms: u64,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: &mut Option<Vec<(String, Vec<u8>)>>,
    ) -> Option<Result<Vec<u8>, NodeError>> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return Some(Err(error(
                ErrorKind::UnknownMemberId,
                format!("group {group_id:?} has no member {member_id:?}"),
            )));
        };
        let member = match group.members.get_mut(member_id) {
            Some(member) => member,
            None => return Some(Err(group.not_a_member(group_id, member_id))),
        };
        member.last_seen_ms = now_ms;
        if generation != group.generation {
            return Some(Err(error(
                ErrorKind::IllegalGeneration,
                format!(
                    "sync for generation {generation}, but group {group_id:?} is at generation {}",
                    group.generation
                ),
            )));
        }
        match group.state {
            State::PreparingRebalance | State::Empty => Some(Err(error(
                ErrorKind::RebalanceInProgress,
                format!("group {group_id:?} is rebalancing: join again"),
            ))),
            State::Stable => Some(Ok(member.assignment_bytes.clone())),
            State::CompletingRebalance if group.leader == member_id => {
                let given: HashMap<String, Vec<u8>> = assignments.take().unwrap_or_default().into_iter().collect();
                let decode = group.protocol_type == CONSUMER_PROTOCOL_TYPE;
                for (mid, m) in &mut group.members {
                    m.assignment_bytes = given.get(mid).cloned().unwrap_or_default();
                    m.assignment = if decode {
                        consumer_protocol::decode_assignment(&m.assignment_bytes).unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                }
                group.state = State::Stable;
                group.rebalance_deadline_ms = None;
                group.changed = true;
                info!(group = group_id, generation, "assignments received from the leader");
                Some(Ok(group.members.get(member_id).map(|m| m.assignment_bytes.clone()).unwrap_or_default()))
            }
            State::CompletingRebalance => None,
        }
    }

    fn heartbeat(&mut self, now_ms: u64, group_id: &str, member_id: &str, generation: i32) -> Result<(), NodeError> {
        let group = self.groups.get_mut(group_id).ok_or_else(|| {
            error(ErrorKind::UnknownMemberId, format!("group {group_id:?} has no member {member_id:?}"))
        })?;
        let (state, current) = (group.state, group.generation);
        let member = match group.members.get_mut(member_id) {
            Some(member) => member,
            None => return Err(group.not_a_member(group_id, member_id)),
        };
        member.last_seen_ms = now_ms;
        if state == State::PreparingRebalance {
            return Err(error(
                ErrorKind::RebalanceInProgress,
                format!("group {group_id:?} is rebalancing: join again"),
            ));
        }
        if generation != current {
            return Err(error(
                ErrorKind::IllegalGeneration,
                format!("generation {generation} is not group {group_id:?}'s current generation {current}"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self, now_ms: u64, topics: &dyn Topics, group_id: &str, member_id: &str) -> Result<(), NodeError> {
        let group = self.groups.get_mut(group_id).ok_or_else(|| {
            error(ErrorKind::UnknownMemberId, format!("group {group_id:?} has no member {member_id:?}"))
        })?;
        if group.members.remove(member_id).is_none() {
            return Err(group.not_a_member(group_id, member_id));
        }
        info!(group = group_id, member = member_id, "member left");
        rebalance_after_departure(now_ms, group, group_id);
        maybe_complete(now_ms, topics, group, group_id, false);
        Ok(())
    }

    /// Removes members whose session expired and enforces rebalance deadlines.
    fn expire(&mut self, now_ms: u64, topics: &dyn Topics) {
        for (id, group) in &mut self.consumer_groups {
            group.expire(id, now_ms, self.consumer_session_timeout_ms);
        }
        for (id, group) in &mut self.groups {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    // Members that joined, or wait in SyncGroup for the leader's
                    // assignment, are kept (as Kafka does); the rebalance deadline
                    // bounds both.
                    let waiting = (group.state == State::PreparingRebalance && m.rejoined)
                        || group.state == State::CompletingRebalance;
                    !waiting && now_ms.saturating_sub(m.last_seen_ms) > m.session_timeout_ms
                })
                .map(|(mid, _)| mid.clone())
                .collect();
            for mid in &expired {
                info!(group = %id, member = %mid, "session expired; member removed");
                group.members.remove(mid);
            }
            if !expired.is_empty() {
                rebalance_after_departure(now_ms, group, id);
            }
            let passed = group.rebalance_deadline_ms.is_some_and(|d| now_ms >= d);
            if group.state == State::PreparingRebalance {
                maybe_complete(now_ms, topics, group, id, passed);
            } else if group.state == State::CompletingRebalance && passed {
                info!(group = %id, leader = %group.leader, "the leader sent no assignments in time; rebalancing");
                start_rebalance(now_ms, group, id, None);
            }
        }
    }

    /// Checks a commit and asks for the append of its accepted offsets; answers at once
    /// (`Some`) when it is refused or nothing in it is accepted.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        topics: &dyn Topics,
        id: RequestId,
        group_id: &str,
        member_id: &str,
        generation: i32,
        offsets: Vec<(String, u32, i64, String)>,
        out: &mut Vec<GroupAction>,
    ) -> Option<Result<Vec<PartitionOutcome>, NodeError>> {
        if let Err(e) = self.check_commit(group_id, member_id, generation) {
            return Some(Err(e));
        }
        let (accepted, refused) = split_commit(topics, offsets);
        if accepted.is_empty() {
            return Some(Ok(refused));
        }
        let records = offset_records(group_id, &accepted);
        let pending = PendingAppend::Commit { id, group: group_id.to_string(), accepted, refused };
        out.push(self.append(group_id, records, pending, None));
        None
    }

    /// Who may commit: a member of the group's current generation, or anyone (an admin
    /// resetting offsets: no member id, a negative generation) while it has no members.
    fn check_commit(&self, group_id: &str, member_id: &str, generation: i32) -> Result<(), NodeError> {
        check_group_id(group_id)?;
        let admin = member_id.is_empty() && generation < 0;
        if let Some(group) = self.consumer_groups.get(group_id) {
            return match group.members.get(member_id) {
                _ if admin && group.members.is_empty() => Ok(()),
                _ if admin => Err(error(
                    ErrorKind::NonEmptyGroup,
                    format!("group {group_id:?} has {} active members; stop them first", group.members.len()),
                )),
                None => {
                    Err(error(ErrorKind::UnknownMemberId, format!("member {member_id:?} is not in group {group_id:?}")))
                }
                Some(m) if m.epoch != generation => Err(error(
                    ErrorKind::StaleMemberEpoch,
                    format!("commit from member epoch {generation}; member {member_id:?}'s epoch is {}", m.epoch),
                )),
                Some(_) => Ok(()),
            };
        }
        match self.groups.get(group_id) {
            Some(group) if admin => {
                if !group.members.is_empty() {
                    return Err(error(
                        ErrorKind::NonEmptyGroup,
                        format!("group {group_id:?} has {} active members; stop them first", group.members.len()),
                    ));
                }
            }
            None if admin => {}
            Some(group) => {
                if !group.members.contains_key(member_id) {
                    return Err(group.not_a_member(group_id, member_id));
                }
                if generation != group.generation {
                    return Err(error(
                        ErrorKind::IllegalGeneration,
                        format!(
                            "commit from generation {generation}, but group {group_id:?} is at generation {}: \
                             the member was fenced by a rebalance",
                            group.generation
                        ),
                    ));
                }
            }
            None => {
                return Err(error(
                    ErrorKind::UnknownMemberId,
                    format!("group {group_id:?} has no member {member_id:?}"),
                ));
            }
        }
        Ok(())
    }

    /// Records what an append is for and returns the action that asks for it (a
    /// transaction's, `producer`, as its transactional batch).
    fn append(
        &mut self,
        group_id: &str,
        records: Vec<GroupRecord>,
        pending: PendingAppend,
        producer: Option<(i64, i16)>,
    ) -> GroupAction {
        let append = AppendId(self.next_append);
        self.next_append += 1;
        self.appends.insert(append, pending);
        GroupAction::AppendOffsets { append, partition: offsets_partition(group_id), records, producer }
    }

    fn appended(&mut self, append: AppendId, result: Result<(), NodeError>, out: &mut Vec<GroupAction>) {
        let Some(pending) = self.appends.remove(&append) else {
            panic!("append {append:?} completed twice, or was never asked for");
        };
        match pending {
            PendingAppend::Commit { id, group, accepted, mut refused } => {
                let reply = result.map(|()| {
                    // As it always has, a commit updates the view even if its group's
                    // partition was forgotten while it was appended.
                    let committed = self.offsets.entry(group).or_default();
                    for (topic, partition, offset, metadata) in accepted {
                        committed.insert(TopicPartition::new(topic.as_str(), partition), (offset, metadata));
                        refused.push((topic, partition, Ok(())));
                    }
                    refused
                });
                out.push(GroupAction::Reply { id, reply: GroupReply::Committed(reply) });
            }
            PendingAppend::TxnCommit { id, group, producer_id, accepted, mut refused } => {
                let reply = result.map(|()| {
                    let pending = self.pending_txn.entry(producer_id).or_default();
                    for (topic, partition, offset, metadata) in accepted {
                        pending.push((
                            group.clone(),
                            TopicPartition::new(topic.as_str(), partition),
                            (offset, metadata),
                        ));
                        refused.push((topic, partition, Ok(())));
                    }
                    refused
                });
                out.push(GroupAction::Reply { id, reply: GroupReply::Committed(reply) });
            }
            PendingAppend::Delete { id, group } => {
                if result.is_ok() {
                    self.remove_group(&group);
                }
                out.push(GroupAction::Reply { id, reply: GroupReply::Done(result) });
            }
            PendingAppend::DeleteOffsets { id, group, accepted, mut refused } => {
                let reply = result.map(|()| {
                    if let Some(committed) = self.offsets.get_mut(&group) {
                        for tp in &accepted {
                            committed.remove(tp);
                        }
                        if committed.is_empty() {
                            self.offsets.remove(&group);
                        }
                    }
                    refused.extend(accepted.into_iter().map(|tp| (tp.topic, tp.partition, Ok(()))));
                    refused
                });
                out.push(GroupAction::Reply { id, reply: GroupReply::Committed(reply) });
            }
            PendingAppend::ForgetTopic { group, topic } => match result {
                Ok(()) => {
                    if let Some(committed) = self.offsets.get_mut(&group) {
                        committed.retain(|tp, _| tp.topic != topic);
                        if committed.is_empty() {
                            self.offsets.remove(&group);
                        }
                    }
                }
                Err(e) => warn!(group = %group, topic = %topic, "forgetting the offsets of a deleted topic: {e}"),
            },
            PendingAppend::GroupMetadata { group } => {
                if let Err(e) = result {
                    warn!(group = %group, "storing the group's metadata: {e}");
                }
            }
        }
    }

    fn fetch(&self, group_id: &str, partitions: Option<Vec<TopicPartition>>) -> Vec<(String, u32, i64, String)> {
        let committed = self.offsets.get(group_id);
        match partitions {
            Some(list) => list
                .into_iter()
                .map(|tp| {
                    let (o, m) = committed.and_then(|c| c.get(&tp)).cloned().unwrap_or((-1, String::new()));
                    (tp.topic, tp.partition, o, m)
                })
                .collect(),
            None => committed
                .map(|c| c.iter().map(|(tp, (o, m))| (tp.topic.clone(), tp.partition, *o, m.clone())).collect())
                .unwrap_or_default(),
        }
    }

    /// Every group with members or committed offsets, by name.
    fn list(&self) -> Vec<GroupSummary> {
        let mut names: BTreeSet<&String> = self.groups.keys().collect();
        names.extend(self.offsets.keys());
        names.extend(self.consumer_groups.keys());
        names
            .into_iter()
            .map(|g| match self.groups.get(g) {
                None if self.consumer_groups.contains_key(g) => {
                    let group = &self.consumer_groups[g];
                    GroupSummary {
                        group: g.clone(),
                        state: group.state().to_string(),
                        members: group.members.len() as u32,
                        protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
                        group_type: "consumer",
                    }
                }
                Some(group) => GroupSummary {
                    group: g.clone(),
                    state: group.state.name().to_string(),
                    members: group.members.len() as u32,
                    protocol_type: group.protocol_type.clone(),
                    group_type: "classic",
                },
                None => GroupSummary {
                    group: g.clone(),
                    state: State::Empty.name().to_string(),
                    members: 0,
                    protocol_type: String::new(),
                    group_type: "classic",
                },
            })
            .collect()
    }

    fn describe(&self, group_id: &str) -> Result<GroupDescription, NodeError> {
        let known = self.groups.contains_key(group_id) || self.offsets.contains_key(group_id);
        if let Some(g) = self.consumer_groups.get(group_id) {
            return Ok(GroupDescription {
                group: group_id.to_string(),
                state: g.state().to_string(),
                protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
                classic: false,
                strategy: g.assignor.clone(),
                generation: g.epoch,
                members: g
                    .members
                    .iter()
                    .map(|(id, m)| MemberDescription {
                        member_id: id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        topics: m.topics.iter().cloned().collect(),
                        assignment: m.assigned.iter().cloned().collect(),
                        member_epoch: m.epoch,
                        instance_id: m.instance_id.clone(),
                        target: g.target_of(id),
                        ..MemberDescription::default()
                    })
                    .collect(),
                kip848: true,
                assignment_epoch: g.target_epoch,
            });
        }
        if !known {
            return Err(error(ErrorKind::GroupIdNotFound, format!("group {group_id:?} does not exist")));
        }
        Ok(match self.groups.get(group_id) {
            Some(g) => GroupDescription {
                group: group_id.to_string(),
                state: g.state.name().to_string(),
                protocol_type: g.protocol_type.clone(),
                classic: g.classic,
                strategy: g.strategy.clone(),
                generation: g.generation,
                members: g
                    .members
                    .iter()
                    .map(|(id, m)| MemberDescription {
                        member_id: id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        topics: m.topics.iter().cloned().collect(),
                        assignment: m.assignment.clone(),
                        metadata: m
                            .protocols
                            .iter()
                            .find(|(name, _)| *name == g.strategy)
                            .map(|(_, bytes)| bytes.clone())
                            .unwrap_or_default(),
                        assignment_bytes: m.assignment_bytes.clone(),
                        member_epoch: g.generation,
                        instance_id: m.instance_id.clone(),
                        target: m.assignment.clone(),
                    })
                    .collect(),
                ..GroupDescription::default()
            },
            None => GroupDescription {
                group: group_id.to_string(),
                state: State::Empty.name().to_string(),
                protocol_type: String::new(),
                classic: false,
                strategy: String::new(),
                ..GroupDescription::default()
            },
        })
    }

    /// Deletes a group without members: its committed offsets get tombstones first (the
    /// answer waits for their append), then the group is forgotten.
    fn delete(&mut self, id: RequestId, group_id: &str, out: &mut Vec<GroupAction>) -> Option<Result<(), NodeError>> {
        let members = self.groups.get(group_id).map_or(0, |g| g.members.len())
            + self.consumer_groups.get(group_id).map_or(0, |g| g.members.len());
        if members > 0 {
            return Some(Err(error(
                ErrorKind::NonEmptyGroup,
                format!("group {group_id:?} has {members} active members"),
            )));
        }
        let committed: Vec<TopicPartition> =
            self.offsets.get(group_id).map(|c| c.keys().cloned().collect()).unwrap_or_default();
        let exists = self.groups.contains_key(group_id) || self.consumer_groups.contains_key(group_id);
        if !exists && committed.is_empty() {
            return Some(Err(error(ErrorKind::GroupIdNotFound, format!("group {group_id:?} does not exist"))));
        }
        // The offsets' tombstones and the group metadata's, so a new coordinator loads
        // neither.
        let mut records = tombstones(group_id, committed);
        records.push(GroupRecord::Group(GroupMetadataRecord { group: group_id.to_string(), value: None }));
        out.push(self.append(group_id, records, PendingAppend::Delete { id, group: group_id.to_string() }, None));
        None
    }

    /// OffsetDelete, as Kafka's: a group's commits of partitions of topics its members do
    /// not subscribe to get tombstones (answered once appended); those of subscribed topics
    /// are refused GROUP_SUBSCRIBED_TO_TOPIC. Partitions without a commit succeed.
    fn delete_offsets(
        &mut self,
        id: RequestId,
        group_id: &str,
        partitions: Vec<TopicPartition>,
        out: &mut Vec<GroupAction>,
    ) -> Option<Result<Vec<PartitionOutcome>, NodeError>> {
        if let Err(e) = check_group_id(group_id) {
            return Some(Err(e));
        }
        let exists = self.groups.contains_key(group_id) || self.consumer_groups.contains_key(group_id);
        if !exists && !self.offsets.contains_key(group_id) {
            return Some(Err(error(ErrorKind::GroupIdNotFound, format!("group {group_id:?} does not exist"))));
        }
        let mut subscribed: BTreeSet<String> =
            self.groups.get(group_id).map(Group::subscribed_topics).unwrap_or_default();
        subscribed.extend(self.consumer_groups.get(group_id).map(ConsumerGroup::subscribed_topics).unwrap_or_default());
        let (mut accepted, mut refused) = (Vec::new(), Vec::new());
        for tp in partitions {
            if subscribed.contains(&tp.topic) {
                let e = error(
                    ErrorKind::GroupSubscribedToTopic,
                    format!("group {group_id:?} has members subscribed to {:?}", tp.topic),
                );
                refused.push((tp.topic, tp.partition, Err(e)));
            } else {
                accepted.push(tp);
            }
        }
        let committed: Vec<TopicPartition> = accepted
            .iter()
            .filter(|tp| self.offsets.get(group_id).is_some_and(|c| c.contains_key(*tp)))
            .cloned()
            .collect();
        if committed.is_empty() {
            refused.extend(accepted.into_iter().map(|tp| (tp.topic, tp.partition, Ok(()))));
            return Some(Ok(refused));
        }
        let records = tombstones(group_id, committed);
        let pending = PendingAppend::DeleteOffsets { id, group: group_id.to_string(), accepted, refused };
        out.push(self.append(group_id, records, pending, None));
        None
    }

    /// Forgets a group and its offsets; a join still waiting for it is answered that
    /// the group was deleted (by `settle`).
    fn remove_group(&mut self, group_id: &str) {
        self.offsets.remove(group_id);
        self.groups.remove(group_id);
        self.consumer_groups.remove(group_id);
        info!(group = group_id, "group deleted");
    }

    /// Forgets every group's committed offsets of a deleted topic, as Kafka does: a
    /// topic created again under the name starts without them. Each group's tombstones
    /// are one append; its view changes once that append succeeded.
    fn forget_topic(&mut self, topic: &str, out: &mut Vec<GroupAction>) {
        let groups: Vec<(String, Vec<TopicPartition>)> = self
            .offsets
            .iter()
            .map(|(g, c)| (g.clone(), c.keys().filter(|tp| tp.topic == *topic).cloned().collect::<Vec<_>>()))
            .filter(|(_, partitions)| !partitions.is_empty())
            .collect();
        for (group, partitions) in groups {
            let records = tombstones(&group, partitions);
            let pending = PendingAppend::ForgetTopic { group: group.clone(), topic: topic.to_string() };
            out.push(self.append(&group, records, pending, None));
        }
    }

    /// Forgets the groups of one offsets partition and their committed offsets; their
    /// waiting joins and syncs are answered NOT_COORDINATOR (the client finds the group's
    /// coordinator again). Appends in flight still answer their requests when they
    /// complete.
    fn forget_partition(&mut self, partition: u32, out: &mut Vec<GroupAction>) {
        self.groups.retain(|group, _| offsets_partition(group) != partition);
        self.consumer_groups.retain(|group, _| offsets_partition(group) != partition);
        self.offsets.retain(|group, _| offsets_partition(group) != partition);
        for pending in self.pending_txn.values_mut() {
            pending.retain(|(group, _, _)| offsets_partition(group) != partition);
        }
        self.pending_txn.retain(|_, pending| !pending.is_empty());
        let not_coordinator = |group: &str| {
            error(
                ErrorKind::NotCoordinator,
                format!("this node no longer coordinates group {group:?}: find its coordinator again"),
            )
        };
        let refuse_join: fn(NodeError) -> GroupReply = |e| GroupReply::Joined(Err(e));
        let refuse_sync: fn(NodeError) -> GroupReply = |e| GroupReply::Synced(Err(e));
        for (waiting, refuse) in [(&mut self.joins, refuse_join), (&mut self.syncs, refuse_sync)] {
            waiting.retain(|w| {
                let forgotten = offsets_partition(&w.group) == partition;
                if forgotten {
                    out.push(GroupAction::Reply { id: w.id, reply: refuse(not_coordinator(&w.group)) });
                }
                !forgotten
            });
        }
    }

    /// Checks a transactional offset commit (TxnOffsetCommit) and asks for the append of
    /// its accepted offsets as the transaction's batch; they count once its commit
    /// marker is written (`transaction_ended`). Answers at once (`Some`) when refused.
    fn txn_commit(
        &mut self,
        topics: &dyn Topics,
        id: RequestId,
        args: &TxnCommitArgs<'_>,
        offsets: Vec<(String, u32, i64, String)>,
        out: &mut Vec<GroupAction>,
    ) -> Option<Result<Vec<PartitionOutcome>, NodeError>> {
        let group_id = args.group;
        // Before KIP-447 (TxnOffsetCommit v0-2) the request names no member: it is the
        // producer's, whatever the group's generation.
        let checked = if args.member_id.is_empty() && args.generation < 0 {
            check_group_id(group_id)
        } else {
            self.check_commit(group_id, args.member_id, args.generation)
        };
        if let Err(e) = checked {
            return Some(Err(e));
        }
        let (accepted, refused) = split_commit(topics, offsets);
        if accepted.is_empty() {
            return Some(Ok(refused));
        }
        let records = offset_records(group_id, &accepted);
        let pending = PendingAppend::TxnCommit {
            id,
            group: group_id.to_string(),
            producer_id: args.producer_id,
            accepted,
            refused,
        };
        out.push(self.append(group_id, records, pending, Some((args.producer_id, args.producer_epoch))));
        None
    }

    /// A partition of `group` (of `partitions`, or any) with a transaction's commit pending.
    fn pending_of(&self, group: &str, partitions: Option<&[TopicPartition]>) -> Option<TopicPartition> {
        self.pending_txn.values().flatten().find_map(|(g, tp, _)| {
            (g == group && partitions.is_none_or(|asked| asked.contains(tp))).then(|| tp.clone())
        })
    }

    /// Settles a producer's transactional offset commits: committed ones count now,
    /// aborted ones are dropped.
    fn transaction_ended(&mut self, producer_id: i64, commit: bool) {
        let Some(pending) = self.pending_txn.remove(&producer_id) else { return };
        if !commit {
            return;
        }
        for (group, tp, value) in pending {
            self.offsets.entry(group).or_default().insert(tp, value);
        }
    }

    /// Transactional commits read back from an offsets partition whose marker is not
    /// there (yet).
    fn load_pending(&mut self, producer_id: i64, records: Vec<GroupRecord>) {
        let pending = self.pending_txn.entry(producer_id).or_default();
        for record in records {
            if let GroupRecord::Offset(OffsetRecord { group, topic, partition, value: Some(v) }) = record {
                pending.push((group, TopicPartition::new(topic, partition), v));
            }
        }
    }

    /// Applies records read back from an offsets partition, in log order: committed
    /// offsets, and groups as their last metadata left them (members keep their ids and
    /// generation, their sessions starting now).
    fn load(&mut self, records: Vec<GroupRecord>) {
        for record in records {
            let r = match record {
                GroupRecord::Offset(r) => r,
                GroupRecord::Group(GroupMetadataRecord { group, value: Some(metadata) }) => {
                    if ConsumerGroup::is_stored_as_one(&metadata) {
                        self.groups.remove(&group);
                        self.consumer_groups.insert(group, ConsumerGroup::loaded(metadata, self.now_ms));
                    } else {
                        self.consumer_groups.remove(&group);
                        self.groups.insert(group, Group::loaded(metadata, self.now_ms));
                    }
                    continue;
                }
                GroupRecord::Group(GroupMetadataRecord { group, value: None }) => {
                    self.groups.remove(&group);
                    self.consumer_groups.remove(&group);
                    continue;
                }
            };
            match r.value {
                Some(v) => {
                    self.offsets.entry(r.group).or_default().insert(TopicPartition::new(r.topic, r.partition), v);
                }
                None => {
                    if let Some(committed) = self.offsets.get_mut(&r.group) {
                        committed.remove(&TopicPartition::new(r.topic, r.partition));
                        if committed.is_empty() {
                            self.offsets.remove(&r.group);
                        }
                    }
                }
            }
        }
    }

    /// Answers the waiting joins and syncs whose outcome this step decided.
    fn settle(&mut self, now_ms: u64, out: &mut Vec<GroupAction>) {
        for join in std::mem::take(&mut self.joins) {
            match join_outcome(&self.groups, &join) {
                Some(result) => out.push(GroupAction::Reply { id: join.id, reply: GroupReply::Joined(result) }),
                None => self.joins.push(join),
            }
        }
        for sync in std::mem::take(&mut self.syncs) {
            match self.sync(now_ms, &sync.group, &sync.member, sync.generation, &mut None) {
                Some(result) => out.push(GroupAction::Reply { id: sync.id, reply: GroupReply::Synced(result) }),
                None => self.syncs.push(sync),
            }
        }
    }
}

/// A waiting join's answer, once there is one: the rebalance it took part in completed
/// (whatever the group's state is now), or it can no longer complete for this member.
fn join_outcome(groups: &BTreeMap<String, Group>, join: &Waiting) -> Option<Result<JoinResult, NodeError>> {
    let (group_id, member_id) = (&join.group, &join.member);
    let Some(group) = groups.get(group_id) else {
        return Some(Err(error(ErrorKind::UnknownMemberId, format!("group {group_id:?} was deleted"))));
    };
    let Some(member) = group.members.get(member_id) else {
        return Some(Err(error(
            ErrorKind::UnknownMemberId,
            format!("member {member_id:?} was removed from group {group_id:?} during the rebalance"),
        )));
    };
    // The answer comes with the generation the rebalance completed with, even when
    // another join started the next rebalance in the same step: waiting for that one
    // instead would wait for this member to rejoin, which it cannot do before it has this
    // answer. The member learns of the next rebalance from its next heartbeat.
    if group.generation <= join.generation {
        return None;
    }
    let members = if group.classic && group.leader == *member_id { group.member_metadata() } else { Vec::new() };
    Some(Ok(JoinResult {
        generation: group.generation,
        member_id: member_id.clone(),
        leader_id: group.leader.clone(),
        strategy: group.strategy.clone(),
        assignment: member.assignment.clone(),
        members,
    }))
}

fn tombstones(group_id: &str, partitions: Vec<TopicPartition>) -> Vec<GroupRecord> {
    partitions
        .into_iter()
        .map(|TopicPartition { topic, partition }| {
            GroupRecord::Offset(OffsetRecord { group: group_id.to_string(), topic, partition, value: None })
        })
        .collect()
}

/// Completes the group's rebalance when every member has joined again, or when
/// `deadline_passed` (members that did not are removed).
fn maybe_complete(now_ms: u64, topics: &dyn Topics, group: &mut Group, group_id: &str, deadline_passed: bool) {
    if group.state != State::PreparingRebalance {
        return;
    }
    let all_in = group.members.values().all(|m| m.rejoined);
    if !all_in && !deadline_passed {
        return;
    }
    // A new group's first rebalance waits for more members (the ticks complete it).
    if let Some((until, limit)) = group.initial_delay {
        if now_ms < until.min(limit) && !deadline_passed {
            return;
        }
        group.initial_delay = None;
    }
    let gone: Vec<String> = group.members.iter().filter(|(_, m)| !m.rejoined).map(|(id, _)| id.clone()).collect();
    for id in &gone {
        info!(group = group_id, member = %id, "member did not rejoin in time; removed");
        group.members.remove(id);
    }
    if group.members.is_empty() {
        group.state = State::Empty;
        group.rebalance_deadline_ms = None;
        group.changed = true;
        return;
    }
    if group.classic {
        // The leader assigns; members wait for it in SyncGroup, for at most the
        // rebalance timeout.
        group.strategy = choose_protocol(group.members.values()).unwrap_or_default();
        let mut longest = 0;
        for m in group.members.values_mut() {
            m.assignment_bytes.clear();
            longest = longest.max(m.rebalance_timeout_ms);
        }
        group.state = State::CompletingRebalance;
        group.rebalance_deadline_ms = Some(now_ms + longest);
    } else {
        let subscribed: BTreeSet<String> = group.members.values().flat_map(|m| m.topics.iter().cloned()).collect();
        let partitions: BTreeMap<String, u32> =
            subscribed.iter().filter_map(|t| topics.partition_count(t).map(|c| (t.clone(), c))).collect();
        let subscriptions: Vec<assign::MemberSubscription> = group
            .members
            .iter()
            .map(|(id, m)| assign::MemberSubscription {
                member_id: id.clone(),
                topics: m.topics.clone(),
                owned: m.assignment.clone(),
            })
            .collect();
        let assignment = assign::assign(&group.strategy, &subscriptions, &partitions);
        for (id, m) in &mut group.members {
            m.assignment = assignment.get(id).cloned().unwrap_or_default();
        }
        group.state = State::Stable;
        group.rebalance_deadline_ms = None;
        group.changed = true;
    }
    for m in group.members.values_mut() {
        m.rejoined = false;
        m.last_seen_ms = now_ms;
    }
    group.generation += 1;
    if !group.members.contains_key(&group.leader) {
        group.leader = group.members.keys().next().cloned().unwrap_or_default();
    }
    info!(group = group_id, generation = group.generation, members = group.members.len(), "rebalance complete");
}

/// Starts a rebalance: every member but `joined` must join again before the longest
/// rebalance timeout among them. Members waiting in SyncGroup learn that their
/// generation is over (`settle` answers them RebalanceInProgress).
fn start_rebalance(now_ms: u64, group: &mut Group, group_id: &str, joined: Option<&str>) {
    group.state = State::PreparingRebalance;
    let mut longest = 0;
    for (id, m) in &mut group.members {
        m.rejoined = joined == Some(id.as_str());
        longest = longest.max(m.rebalance_timeout_ms);
    }
    group.rebalance_deadline_ms = Some(now_ms + longest);
    debug!(group = group_id, members = group.members.len(), "rebalance started");
}

/// After members left or expired: an empty group is Empty; a stable one rebalances.
fn rebalance_after_departure(now_ms: u64, group: &mut Group, group_id: &str) {
    if group.members.is_empty() {
        group.state = State::Empty;
        group.rebalance_deadline_ms = None;
        group.changed = true;
    } else if group.state != State::PreparingRebalance {
        start_rebalance(now_ms, group, group_id, None);
    }
}

/// Refuses a join whose protocol does not fit the group's other members: native and
/// classic members never mix, and classic members share a protocol type and at least
/// one protocol.
fn check_protocol(group_id: &str, group: &Group, others: &[&Member], protocol: &JoinProtocol) -> Result<(), NodeError> {
    if others.is_empty() {
        return Ok(());
    }
    let inconsistent = |why: String| Err(error(ErrorKind::InconsistentGroupProtocol, why));
    match protocol {
        JoinProtocol::Native { .. } if group.classic => {
            inconsistent(format!("group {group_id:?} has members of Kafka's classic protocol"))
        }
        JoinProtocol::Native { strategy, .. } if *strategy != group.strategy => {
            inconsistent(format!("group {group_id:?} uses strategy {:?}, not {strategy:?}", group.strategy))
        }
        JoinProtocol::Native { .. } => Ok(()),
        JoinProtocol::Classic { .. } if !group.classic => {
            inconsistent(format!("group {group_id:?} has members of Sluice's native protocol"))
        }
        JoinProtocol::Classic { protocol_type, .. } if *protocol_type != group.protocol_type => inconsistent(format!(
            "group {group_id:?} has protocol type {:?}, not {protocol_type:?}",
            group.protocol_type
        )),
        JoinProtocol::Classic { protocols, .. } => {
            if protocols.iter().any(|(name, _)| others.iter().all(|m| m.supports(name))) {
                Ok(())
            } else {
                let names: Vec<&str> = protocols.iter().map(|(n, _)| n.as_str()).collect();
                inconsistent(format!("none of the protocols {names:?} is supported by every member of {group_id:?}"))
            }
        }
    }
}

/// The protocol every member supports that most members prefer (each votes for its
/// first supported one, as Kafka's coordinator does); ties go to the earlier vote.
fn choose_protocol<'a>(members: impl Iterator<Item = &'a Member> + Clone) -> Option<String> {
    let first = members.clone().next()?;
    let candidates: Vec<&str> = first
        .protocols
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| members.clone().all(|m| m.supports(name)))
        .collect();
    let mut votes: Vec<(&str, usize)> = Vec::new();
    for m in members {
        let Some(choice) = m.protocols.iter().map(|(n, _)| n.as_str()).find(|n| candidates.contains(n)) else {
            continue;
        };
        match votes.iter_mut().find(|(name, _)| *name == choice) {
            Some((_, count)) => *count += 1,
            None => votes.push((choice, 1)),
        }
    }
    let best = votes.iter().map(|(_, c)| *c).max()?;
    votes.into_iter().find(|(_, c)| *c == best).map(|(name, _)| name.to_string())
}
