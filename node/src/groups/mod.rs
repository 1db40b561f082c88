//! The consumer group coordinator.
//!
//! Each group is owned by one shard: the owner of the `__consumer_offsets` partition that
//! the group id hashes to. That shard keeps the group's members and generation, computes
//! assignments with the group's strategy (`assign`), removes members whose session timed
//! out, and stores committed offsets by appending them to its offsets partition, from
//! which it reloads them at start. Requests for a group arriving on another shard are
//! forwarded there (`ShardRequest::Group`).
//!
//! Protocol: a member joins (JoinGroup); a join starts a rebalance, which waits for every
//! current member to join again (they learn of it from a heartbeat answered
//! RebalanceInProgress) or for the rebalance timeout, then bumps the generation and
//! answers every join with the member's assignment. Commits and heartbeats from another
//! generation are refused (fencing). Lives on: the coordinator shard of each group.
//!
//! Two protocols share the coordinator and the committed offsets. Our native members
//! name their topics and a strategy, and the coordinator assigns (above). Kafka's classic
//! protocol (`JoinProtocol::Classic`) assigns on the client: members join with the
//! protocols they support and opaque metadata; on completion the coordinator picks the
//! protocol every member supports (by vote, as Kafka does), answers the leader with every
//! member's metadata and moves to CompletingRebalance; the leader's SyncGroup carries
//! every member's opaque assignment, which the coordinator hands to each member's
//! SyncGroup. One group is either native or classic while it has members.

pub mod assign;
pub mod consumer_protocol;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_schemas::records::{BatchBuilder, BatchConfig, RecordIter};
use tracing::{debug, info, warn};

use crate::errors::{ErrorKind, NodeError};
use crate::io::{self, LocalFuture, WaitQueue};
use crate::storage::PartitionLog;

pub use sluice_schemas::groups::{offsets_partition, OFFSETS_PARTITIONS, OFFSETS_TOPIC};
/// Session timeouts a member may ask for (Kafka's broker defaults).
pub const SESSION_TIMEOUT_MS_MIN: u32 = 100;
pub const SESSION_TIMEOUT_MS_MAX: u32 = 1_800_000;
/// How often the coordinator looks for members whose session expired.
pub const EXPIRY_CHECK_MS: u64 = 100;
/// Longest group id accepted.
pub const GROUP_ID_BYTES_MAX: usize = 255;
/// Kafka's protocol type of consumer groups, which native groups report too.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Groups (topic, partition, value) triples by topic, in first-seen order: how both
/// protocols' group responses nest partitions under topics.
#[must_use]
pub fn by_topic<T>(items: Vec<(String, u32, T)>) -> Vec<(String, Vec<(u32, T)>)> {
    let mut out: Vec<(String, Vec<(u32, T)>)> = Vec::new();
    for (t, p, v) in items {
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, list)) => list.push((p, v)),
            None => out.push((t, vec![(p, v)])),
        }
    }
    out
}

/// A group request, sent to the group's coordinator shard.
#[derive(Clone, Debug)]
pub enum GroupRequest {
    Join {
        group: String,
        join: JoinArgs,
    },
    /// Classic protocol: the leader sends every member's assignment; others send none.
    Sync {
        group: String,
        member_id: String,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
    },
    Heartbeat {
        group: String,
        member_id: String,
        generation: i32,
    },
    Leave {
        group: String,
        member_id: String,
    },
    Commit {
        group: String,
        member_id: String,
        generation: i32,
        offsets: Vec<(String, u32, i64, String)>,
    },
    Fetch {
        group: String,
        partitions: Option<Vec<(String, u32)>>,
    },
    List,
    Describe {
        group: String,
    },
    Delete {
        group: String,
    },
}

impl GroupRequest {
    /// The group this request is about (`None` for List, which asks every shard).
    #[must_use]
    pub fn group(&self) -> Option<&str> {
        match self {
            GroupRequest::Join { group, .. }
            | GroupRequest::Sync { group, .. }
            | GroupRequest::Heartbeat { group, .. }
            | GroupRequest::Leave { group, .. }
            | GroupRequest::Commit { group, .. }
            | GroupRequest::Fetch { group, .. }
            | GroupRequest::Describe { group }
            | GroupRequest::Delete { group } => Some(group),
            GroupRequest::List => None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct JoinResult {
    pub generation: i32,
    pub member_id: String,
    pub leader_id: String,
    /// The assignment strategy (native) or the chosen protocol (classic).
    pub strategy: String,
    /// Native: the member's partitions.
    pub assignment: Vec<(String, u32)>,
    /// Classic, for the leader only: every member's metadata for the chosen protocol.
    pub members: Vec<(String, Vec<u8>)>,
}

#[derive(Clone, Debug)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// Native: the subscribed topics.
    pub topics: Vec<String>,
    /// The member's partitions (classic: decoded from its assignment when the group's
    /// protocol type is `consumer`).
    pub assignment: Vec<(String, u32)>,
    /// Classic: the member's metadata for the chosen protocol and its opaque assignment.
    pub metadata: Vec<u8>,
    pub assignment_bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    /// Kafka's protocol type: `consumer` for native groups.
    pub protocol_type: String,
    /// Whether the members run Kafka's classic protocol (client-side assignment).
    pub classic: bool,
    pub strategy: String,
    pub generation: i32,
    pub members: Vec<MemberDescription>,
}

/// One line of ListGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSummary {
    pub group: String,
    pub state: String,
    pub members: u32,
    pub protocol_type: String,
}

/// One partition's result of a commit.
pub type PartitionOutcome = (String, u32, Result<(), NodeError>);

/// A group's committed offsets: (topic, partition) -> (offset, metadata).
type Committed = BTreeMap<(String, u32), (i64, String)>;

/// Replies, `Send` to cross shards.
#[derive(Clone, Debug)]
pub enum GroupReply {
    Joined(Result<JoinResult, NodeError>),
    Synced(Result<Vec<u8>, NodeError>),
    Done(Result<(), NodeError>),
    Committed(Result<Vec<PartitionOutcome>, NodeError>),
    Offsets(Result<Vec<(String, u32, i64, String)>, NodeError>),
    Listed(Vec<GroupSummary>),
    Described(Result<GroupDescription, NodeError>),
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
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    /// Joined in the rebalance under way.
    rejoined: bool,
    assignment: Vec<(String, u32)>,
    /// Classic protocol: (name, metadata) in the member's order of preference.
    protocols: Vec<(String, Vec<u8>)>,
    /// Classic protocol: the assignment its leader computed for it.
    assignment_bytes: Vec<u8>,
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
    /// Wakes joins waiting for the rebalance to complete.
    rebalanced: Rc<WaitQueue>,
    rebalance_deadline: Option<Instant>,
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
            rebalanced: Rc::new(WaitQueue::new()),
            rebalance_deadline: None,
        }
    }
}

/// What the coordinator needs from its shard: partition counts (for assignment) and the
/// offsets logs it owns.
pub trait GroupHost {
    fn partition_count(&self, topic: &str) -> Option<u32>;
    /// Appends a batch of offset records to an offsets partition this shard holds (in a
    /// cluster: leads, and the ISR has it once this resolves).
    fn append_offsets<'a>(&'a self, partition: u32, batch: &'a [u8]) -> LocalFuture<'a, Result<(), NodeError>>;
}

/// The groups owned by one shard, and their committed offsets.
#[derive(Default)]
pub struct Coordinator {
    groups: RefCell<HashMap<String, Group>>,
    /// group -> (topic, partition) -> (offset, metadata)
    offsets: RefCell<HashMap<String, Committed>>,
    next_member: std::cell::Cell<u64>,
}

fn error(kind: ErrorKind, message: impl Into<String>) -> NodeError {
    NodeError::new(kind, message)
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

/// An offset commit as a record: key (group, topic, partition), value (offset, metadata);
/// a null value (tombstone) deletes it.
fn offset_record_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut key = vec![1u8];
    for s in [group, topic] {
        key.extend_from_slice(&(s.len() as u16).to_be_bytes());
        key.extend_from_slice(s.as_bytes());
    }
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn parse_offset_key(key: &[u8]) -> Option<(String, String, u32)> {
    let mut at = 1usize;
    if key.first() != Some(&1) {
        return None;
    }
    let mut strings = Vec::new();
    for _ in 0..2 {
        let len = u16::from_be_bytes([*key.get(at)?, *key.get(at + 1)?]) as usize;
        at += 2;
        strings.push(String::from_utf8(key.get(at..at + len)?.to_vec()).ok()?);
        at += len;
    }
    let p = key.get(at..at + 4)?;
    let topic = strings.pop()?;
    let group = strings.pop()?;
    Some((group, topic, u32::from_be_bytes([p[0], p[1], p[2], p[3]])))
}

fn offset_record_value(offset: i64, metadata: &str) -> Vec<u8> {
    let mut value = vec![1u8];
    value.extend_from_slice(&offset.to_be_bytes());
    value.extend_from_slice(metadata.as_bytes());
    value
}

fn parse_offset_value(value: &[u8]) -> Option<(i64, String)> {
    if value.first() != Some(&1) || value.len() < 9 {
        return None;
    }
    let mut o = [0u8; 8];
    o.copy_from_slice(&value[1..9]);
    Some((i64::from_be_bytes(o), String::from_utf8_lossy(&value[9..]).into_owned()))
}

impl Coordinator {
    /// Reads the committed offsets of one offsets partition this shard now owns.
    pub async fn load(&self, log: &PartitionLog) {
        let mut offset = log.log_start_offset();
        let mut loaded = 0u64;
        while offset < log.log_end_offset() {
            let fetched = match log.read(offset, 1 << 20).await {
                Ok(f) if !f.chunks.is_empty() => f,
                Ok(_) => break,
                Err(e) => {
                    warn!("loading committed offsets from {}: {e}", log.dir().display());
                    break;
                }
            };
            let bytes = fetched.to_vec();
            for batch in sluice_schemas::batch::BatchWalker::new(&bytes) {
                let Ok((_, _, batch)) = batch else { break };
                let Ok(records) = RecordIter::from_bytes(batch) else { continue };
                for r in records.flatten() {
                    let Some((group, topic, partition)) = r.key.and_then(parse_offset_key) else { continue };
                    let mut offsets = self.offsets.borrow_mut();
                    let entry = offsets.entry(group.clone()).or_default();
                    match r.value.and_then(parse_offset_value) {
                        Some(v) => {
                            entry.insert((topic, partition), v);
                        }
                        None => {
                            entry.remove(&(topic, partition));
                            if entry.is_empty() {
                                offsets.remove(&group);
                            }
                        }
                    }
                    loaded += 1;
                }
            }
            offset = fetched.next_offset;
        }
        debug!(dir = %log.dir().display(), records = loaded, "committed offsets loaded");
    }

    /// Drops every group of one offsets partition, members and committed offsets (in a
    /// cluster: this node stopped leading it, or is about to reload it as its new leader).
    pub fn forget_partition(&self, partition: u32) {
        self.groups.borrow_mut().retain(|group, _| offsets_partition(group) != partition);
        self.offsets.borrow_mut().retain(|group, _| offsets_partition(group) != partition);
    }

    pub async fn handle(&self, host: &dyn GroupHost, request: GroupRequest) -> GroupReply {
        match request {
            GroupRequest::Join { group, join } => GroupReply::Joined(self.join(host, &group, join).await),
            GroupRequest::Sync { group, member_id, generation, assignments } => {
                GroupReply::Synced(self.sync(&group, &member_id, generation, assignments).await)
            }
            GroupRequest::Heartbeat { group, member_id, generation } => {
                GroupReply::Done(self.heartbeat(&group, &member_id, generation))
            }
            GroupRequest::Leave { group, member_id } => GroupReply::Done(self.leave(host, &group, &member_id)),
            GroupRequest::Commit { group, member_id, generation, offsets } => {
                GroupReply::Committed(self.commit(host, &group, &member_id, generation, offsets).await)
            }
            GroupRequest::Fetch { group, partitions } => GroupReply::Offsets(Ok(self.fetch(&group, partitions))),
            GroupRequest::List => GroupReply::Listed(self.list()),
            GroupRequest::Describe { group } => GroupReply::Described(self.describe(&group)),
            GroupRequest::Delete { group } => GroupReply::Done(self.delete(host, &group).await),
        }
    }

    async fn join(&self, host: &dyn GroupHost, group_id: &str, join: JoinArgs) -> Result<JoinResult, NodeError> {
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
        let (member_id, waiter, started_generation) = {
            let mut groups = self.groups.borrow_mut();
            let group = groups.entry(group_id.to_string()).or_insert_with(Group::new);
            let others: Vec<&Member> =
                group.members.iter().filter(|(id, _)| **id != join.member_id).map(|(_, m)| m).collect();
            check_protocol(group_id, group, &others, &join.protocol)?;
            let member_id = if join.member_id.is_empty() {
                let n = self.next_member.get();
                self.next_member.set(n + 1);
                format!("{}-{}-{n}", if join.client_id.is_empty() { "member" } else { &join.client_id }, instance_tag())
            } else if group.members.contains_key(&join.member_id) {
                join.member_id.clone()
            } else {
                return Err(error(
                    ErrorKind::UnknownMemberId,
                    format!("member {:?} is not in group {group_id:?} (its session may have expired)", join.member_id),
                ));
            };
            let previous = group.members.remove(&member_id);
            let (topics, protocols) = match join.protocol {
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
                    topics,
                    session_timeout: Duration::from_millis(u64::from(join.session_timeout_ms)),
                    rebalance_timeout: Duration::from_millis(u64::from(join.rebalance_timeout_ms)),
                    last_seen: Instant::now(),
                    rejoined: true,
                    assignment: previous.map(|m| m.assignment).unwrap_or_default(),
                    protocols,
                    assignment_bytes: Vec::new(),
                },
            );
            if group.state != State::PreparingRebalance {
                start_rebalance(group, group_id, Some(&member_id));
            }
            (member_id, group.rebalanced.clone(), group.generation)
        };
        self.maybe_complete(host, group_id, false);
        // Wait for the rebalance to complete (bounded by the rebalance deadline, which the
        // expiry task enforces).
        loop {
            let wait = waiter.wait();
            {
                let groups = self.groups.borrow();
                let Some(group) = groups.get(group_id) else {
                    return Err(error(ErrorKind::UnknownMemberId, format!("group {group_id:?} was deleted")));
                };
                let Some(member) = group.members.get(&member_id) else {
                    return Err(error(
                        ErrorKind::UnknownMemberId,
                        format!("member {member_id:?} was removed from group {group_id:?} during the rebalance"),
                    ));
                };
                // The rebalance this join took part in completed: answer with its
                // generation and assignment, whatever the group's state is now. Another
                // join may have started the next rebalance before this task was woken;
                // waiting for that one instead would wait for this member to rejoin, which
                // it cannot do before it has this answer (it would stall until the
                // rebalance deadline and then be dropped). The member learns of the next
                // rebalance from its next heartbeat.
                if group.generation > started_generation {
                    let members = if group.classic && group.leader == member_id {
                        group
                            .members
                            .iter()
                            .map(|(id, m)| {
                                let metadata = m.protocols.iter().find(|(name, _)| *name == group.strategy);
                                (id.clone(), metadata.map(|(_, bytes)| bytes.clone()).unwrap_or_default())
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    return Ok(JoinResult {
                        generation: group.generation,
                        member_id: member_id.clone(),
                        leader_id: group.leader.clone(),
                        strategy: group.strategy.clone(),
                        assignment: member.assignment.clone(),
                        members,
                    });
                }
            }
            wait.await;
        }
    }

    /// Completes the group's rebalance when every member has joined again, or when
    /// `deadline_passed` (members that did not are removed).
    fn maybe_complete(&self, host: &dyn GroupHost, group_id: &str, deadline_passed: bool) {
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else { return };
        if group.state != State::PreparingRebalance {
            return;
        }
        let all_in = group.members.values().all(|m| m.rejoined);
        if !all_in && !deadline_passed {
            return;
        }
        let gone: Vec<String> = group.members.iter().filter(|(_, m)| !m.rejoined).map(|(id, _)| id.clone()).collect();
        for id in &gone {
            info!(group = group_id, member = %id, "member did not rejoin in time; removed");
            group.members.remove(id);
        }
        if group.members.is_empty() {
            group.state = State::Empty;
            group.rebalance_deadline = None;
            group.rebalanced.notify_all();
            return;
        }
        if group.classic {
            // The leader assigns; members wait for it in SyncGroup, for at most the
            // rebalance timeout.
            group.strategy = choose_protocol(group.members.values()).unwrap_or_default();
            let mut longest = Duration::from_millis(0);
            for m in group.members.values_mut() {
                m.assignment_bytes.clear();
                longest = longest.max(m.rebalance_timeout);
            }
            group.state = State::CompletingRebalance;
            group.rebalance_deadline = Some(Instant::now() + longest);
        } else {
            let topics: BTreeSet<String> = group.members.values().flat_map(|m| m.topics.iter().cloned()).collect();
            let partitions: BTreeMap<String, u32> =
                topics.iter().filter_map(|t| host.partition_count(t).map(|c| (t.clone(), c))).collect();
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
            group.rebalance_deadline = None;
        }
        for m in group.members.values_mut() {
            m.rejoined = false;
            m.last_seen = Instant::now();
        }
        group.generation += 1;
        if !group.members.contains_key(&group.leader) {
            group.leader = group.members.keys().next().cloned().unwrap_or_default();
        }
        info!(group = group_id, generation = group.generation, members = group.members.len(), "rebalance complete");
        group.rebalanced.notify_all();
    }

    /// Classic protocol: the leader's SyncGroup stores every member's assignment; the
    /// others' wait for it (bounded by the rebalance deadline, after which the expiry
    /// task starts a new rebalance and they are answered RebalanceInProgress).
    async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<u8>, NodeError> {
        check_group_id(group_id)?;
        let mut assignments = Some(assignments);
        loop {
            let waiter = {
                let mut groups = self.groups.borrow_mut();
                let group = groups.get_mut(group_id).ok_or_else(|| {
                    error(ErrorKind::UnknownMemberId, format!("group {group_id:?} has no member {member_id:?}"))
                })?;
                let Some(member) = group.members.get_mut(member_id) else {
                    return Err(error(
                        ErrorKind::UnknownMemberId,
                        format!("member {member_id:?} is not in group {group_id:?}"),
                    ));
                };
                member.last_seen = Instant::now();
                if generation != group.generation {
                    return Err(error(
                        ErrorKind::IllegalGeneration,
                        format!(
                            "sync for generation {generation}, but group {group_id:?} is at generation {}",
                            group.generation
                        ),
                    ));
                }
                match group.state {
                    State::PreparingRebalance | State::Empty => {
                        return Err(error(
                            ErrorKind::RebalanceInProgress,
                            format!("group {group_id:?} is rebalancing: join again"),
                        ));
                    }
                    State::Stable => return Ok(member.assignment_bytes.clone()),
                    State::CompletingRebalance if group.leader == member_id => {
                        let given: HashMap<String, Vec<u8>> =
                            assignments.take().unwrap_or_default().into_iter().collect();
                        let decode = group.protocol_type == CONSUMER_PROTOCOL_TYPE;
                        for (id, m) in &mut group.members {
                            m.assignment_bytes = given.get(id).cloned().unwrap_or_default();
                            m.assignment = if decode {
                                consumer_protocol::decode_assignment(&m.assignment_bytes).unwrap_or_default()
                            } else {
                                Vec::new()
                            };
                        }
                        group.state = State::Stable;
                        group.rebalance_deadline = None;
                        group.rebalanced.notify_all();
                        info!(group = group_id, generation, "assignments received from the leader");
                        return Ok(group
                            .members
                            .get(member_id)
                            .map(|m| m.assignment_bytes.clone())
                            .unwrap_or_default());
                    }
                    State::CompletingRebalance => group.rebalanced.clone(),
                }
            };
            waiter.wait().await;
        }
    }

    fn heartbeat(&self, group_id: &str, member_id: &str, generation: i32) -> Result<(), NodeError> {
        let mut groups = self.groups.borrow_mut();
        let group = groups.get_mut(group_id).ok_or_else(|| {
            error(ErrorKind::UnknownMemberId, format!("group {group_id:?} has no member {member_id:?}"))
        })?;
        let state = group.state;
        let current = group.generation;
        let member = group.members.get_mut(member_id).ok_or_else(|| {
            error(ErrorKind::UnknownMemberId, format!("member {member_id:?} is not in group {group_id:?}"))
        })?;
        member.last_seen = Instant::now();
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

    fn leave(&self, host: &dyn GroupHost, group_id: &str, member_id: &str) -> Result<(), NodeError> {
        {
            let mut groups = self.groups.borrow_mut();
            let group = groups.get_mut(group_id).ok_or_else(|| {
                error(ErrorKind::UnknownMemberId, format!("group {group_id:?} has no member {member_id:?}"))
            })?;
            if group.members.remove(member_id).is_none() {
                return Err(error(
                    ErrorKind::UnknownMemberId,
                    format!("member {member_id:?} is not in group {group_id:?}"),
                ));
            }
            info!(group = group_id, member = member_id, "member left");
            rebalance_after_departure(group, group_id);
        }
        self.maybe_complete(host, group_id, false);
        Ok(())
    }

    /// Removes members whose session expired and enforces rebalance deadlines.
    pub fn expire(&self, host: &dyn GroupHost) {
        let now = Instant::now();
        let mut to_complete = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            for (id, group) in groups.iter_mut() {
                let expired: Vec<String> = group
                    .members
                    .iter()
                    .filter(|(_, m)| {
                        // Members that joined, or wait in SyncGroup for the leader's
                        // assignment, are kept (as Kafka does); the rebalance deadline
                        // bounds both.
                        let waiting = (group.state == State::PreparingRebalance && m.rejoined)
                            || group.state == State::CompletingRebalance;
                        !waiting && now.duration_since(m.last_seen) > m.session_timeout
                    })
                    .map(|(mid, _)| mid.clone())
                    .collect();
                for mid in &expired {
                    info!(group = %id, member = %mid, "session expired; member removed");
                    group.members.remove(mid);
                }
                if !expired.is_empty() {
                    rebalance_after_departure(group, id);
                }
                let passed = group.rebalance_deadline.is_some_and(|d| now >= d);
                if group.state == State::PreparingRebalance {
                    to_complete.push((id.clone(), passed));
                } else if group.state == State::CompletingRebalance && passed {
                    info!(group = %id, leader = %group.leader, "the leader sent no assignments in time; rebalancing");
                    start_rebalance(group, id, None);
                }
            }
        }
        for (id, passed) in to_complete {
            self.maybe_complete(host, &id, passed);
        }
    }

    async fn commit(
        &self,
        host: &dyn GroupHost,
        group_id: &str,
        member_id: &str,
        generation: i32,
        offsets: Vec<(String, u32, i64, String)>,
    ) -> Result<Vec<PartitionOutcome>, NodeError> {
        check_group_id(group_id)?;
        {
            let groups = self.groups.borrow();
            match groups.get(group_id) {
                Some(group) if member_id.is_empty() && generation < 0 => {
                    if !group.members.is_empty() {
                        return Err(error(
                            ErrorKind::NonEmptyGroup,
                            format!("group {group_id:?} has {} active members; stop them first", group.members.len()),
                        ));
                    }
                }
                None if member_id.is_empty() && generation < 0 => {}
                Some(group) => {
                    if !group.members.contains_key(member_id) {
                        return Err(error(
                            ErrorKind::UnknownMemberId,
                            format!("member {member_id:?} is not in group {group_id:?}"),
                        ));
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
        }
        let mut results = Vec::new();
        let mut builder =
            BatchBuilder::new(BatchConfig::default()).map_err(|e| error(ErrorKind::Unknown, e.to_string()))?;
        let mut accepted = Vec::new();
        let now = now_ms();
        for (topic, partition, offset, metadata) in offsets {
            match host.partition_count(&topic) {
                Some(c) if partition < c && offset >= 0 => {
                    let key = offset_record_key(group_id, &topic, partition);
                    let value = offset_record_value(offset, &metadata);
                    if let Err(e) = builder.push(Some(&key), Some(&value), &[], now) {
                        results.push((topic, partition, Err(error(ErrorKind::InvalidRequest, e.to_string()))));
                        continue;
                    }
                    accepted.push((topic, partition, offset, metadata));
                }
                Some(_) if offset < 0 => results.push((
                    topic,
                    partition,
                    Err(error(ErrorKind::OffsetOutOfRange, format!("offset {offset} is negative"))),
                )),
                _ => {
                    let e = NodeError::unknown_partition(&topic, partition);
                    results.push((topic, partition, Err(e)));
                }
            }
        }
        if accepted.is_empty() {
            return Ok(results);
        }
        self.persist(host, group_id, builder).await?;
        let mut all = self.offsets.borrow_mut();
        let entry = all.entry(group_id.to_string()).or_default();
        for (topic, partition, offset, metadata) in accepted {
            entry.insert((topic.clone(), partition), (offset, metadata));
            results.push((topic, partition, Ok(())));
        }
        Ok(results)
    }

    async fn persist(&self, host: &dyn GroupHost, group_id: &str, builder: BatchBuilder) -> Result<(), NodeError> {
        let batch = builder.finish().map_err(|e| error(ErrorKind::Unknown, e.to_string()))?;
        host.append_offsets(offsets_partition(group_id), &batch).await
    }

    fn fetch(&self, group_id: &str, partitions: Option<Vec<(String, u32)>>) -> Vec<(String, u32, i64, String)> {
        let all = self.offsets.borrow();
        let committed = all.get(group_id);
        match partitions {
            Some(list) => list
                .into_iter()
                .map(|(t, p)| {
                    let (o, m) = committed.and_then(|c| c.get(&(t.clone(), p))).cloned().unwrap_or((-1, String::new()));
                    (t, p, o, m)
                })
                .collect(),
            None => committed
                .map(|c| c.iter().map(|((t, p), (o, m))| (t.clone(), *p, *o, m.clone())).collect())
                .unwrap_or_default(),
        }
    }

    fn list(&self) -> Vec<GroupSummary> {
        let groups = self.groups.borrow();
        let offsets = self.offsets.borrow();
        let mut names: BTreeSet<&String> = groups.keys().collect();
        names.extend(offsets.keys());
        names
            .into_iter()
            .map(|g| match groups.get(g) {
                Some(group) => GroupSummary {
                    group: g.clone(),
                    state: group.state.name().to_string(),
                    members: group.members.len() as u32,
                    protocol_type: group.protocol_type.clone(),
                },
                None => GroupSummary {
                    group: g.clone(),
                    state: State::Empty.name().to_string(),
                    members: 0,
                    protocol_type: String::new(),
                },
            })
            .collect()
    }

    fn describe(&self, group_id: &str) -> Result<GroupDescription, NodeError> {
        let groups = self.groups.borrow();
        let known = groups.contains_key(group_id) || self.offsets.borrow().contains_key(group_id);
        if !known {
            return Err(error(ErrorKind::GroupIdNotFound, format!("group {group_id:?} does not exist")));
        }
        Ok(match groups.get(group_id) {
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
                    })
                    .collect(),
            },
            None => GroupDescription {
                group: group_id.to_string(),
                state: State::Empty.name().to_string(),
                protocol_type: String::new(),
                classic: false,
                strategy: String::new(),
                generation: 0,
                members: Vec::new(),
            },
        })
    }

    async fn delete(&self, host: &dyn GroupHost, group_id: &str) -> Result<(), NodeError> {
        if let Some(g) = self.groups.borrow().get(group_id) {
            if !g.members.is_empty() {
                return Err(error(
                    ErrorKind::NonEmptyGroup,
                    format!("group {group_id:?} has {} active members", g.members.len()),
                ));
            }
        }
        let committed: Vec<(String, u32)> =
            self.offsets.borrow().get(group_id).map(|c| c.keys().cloned().collect()).unwrap_or_default();
        let known = self.groups.borrow().contains_key(group_id) || !committed.is_empty();
        if !known {
            return Err(error(ErrorKind::GroupIdNotFound, format!("group {group_id:?} does not exist")));
        }
        if !committed.is_empty() {
            let mut builder =
                BatchBuilder::new(BatchConfig::default()).map_err(|e| error(ErrorKind::Unknown, e.to_string()))?;
            for (topic, partition) in &committed {
                let key = offset_record_key(group_id, topic, *partition);
                builder.push(Some(&key), None, &[], now_ms()).map_err(|e| error(ErrorKind::Unknown, e.to_string()))?;
            }
            self.persist(host, group_id, builder).await?;
        }
        self.offsets.borrow_mut().remove(group_id);
        if let Some(g) = self.groups.borrow_mut().remove(group_id) {
            g.rebalanced.notify_all();
        }
        info!(group = group_id, "group deleted");
        Ok(())
    }

    /// Forgets every group's committed offsets of a deleted topic (tombstones in the
    /// offsets partitions), as Kafka does: a topic created again under the name starts
    /// without them.
    pub async fn forget_topic(&self, host: &dyn GroupHost, topic: &str) {
        let groups: Vec<(String, Vec<u32>)> = self
            .offsets
            .borrow()
            .iter()
            .map(|(g, c)| (g.clone(), c.keys().filter(|(t, _)| t == topic).map(|(_, p)| *p).collect::<Vec<_>>()))
            .filter(|(_, partitions)| !partitions.is_empty())
            .collect();
        for (group, partitions) in groups {
            let Ok(mut builder) = BatchBuilder::new(BatchConfig::default()) else { return };
            for p in &partitions {
                let key = offset_record_key(&group, topic, *p);
                if builder.push(Some(&key), None, &[], now_ms()).is_err() {
                    return;
                }
            }
            if let Err(e) = self.persist(host, &group, builder).await {
                warn!(group = %group, topic, "forgetting the offsets of a deleted topic: {e}");
                continue;
            }
            let mut all = self.offsets.borrow_mut();
            if let Some(committed) = all.get_mut(&group) {
                committed.retain(|(t, _), _| t != topic);
                if committed.is_empty() {
                    all.remove(&group);
                }
            }
        }
    }

    /// Committed offsets of every group this shard owns (for lag metrics).
    #[must_use]
    pub fn all_committed(&self) -> Vec<(String, String, u32, i64)> {
        self.offsets
            .borrow()
            .iter()
            .flat_map(|(g, c)| c.iter().map(move |((t, p), (o, _))| (g.clone(), t.clone(), *p, *o)))
            .collect()
    }
}

/// A member's join: who it is and what it wants.
#[derive(Clone, Debug)]
pub struct JoinArgs {
    /// Empty on a member's first join.
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    pub protocol: JoinProtocol,
}

/// How a member's group assigns partitions.
#[derive(Clone, Debug)]
pub enum JoinProtocol {
    /// Ours: the coordinator assigns `topics`' partitions with `strategy`.
    Native { topics: Vec<String>, strategy: String },
    /// Kafka's classic protocol: the leader member assigns. `protocols` are (name,
    /// metadata) in the member's order of preference.
    Classic { protocol_type: String, protocols: Vec<(String, Vec<u8>)> },
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

fn start_rebalance(group: &mut Group, group_id: &str, joined: Option<&str>) {
    group.state = State::PreparingRebalance;
    let mut longest = Duration::from_millis(0);
    for (id, m) in &mut group.members {
        m.rejoined = joined == Some(id.as_str());
        longest = longest.max(m.rebalance_timeout);
    }
    group.rebalance_deadline = Some(Instant::now() + longest);
    // Members waiting in SyncGroup learn that their generation is over.
    group.rebalanced.notify_all();
    debug!(group = group_id, members = group.members.len(), "rebalance started");
}

/// After members left or expired: an empty group is Empty; a stable one rebalances.
fn rebalance_after_departure(group: &mut Group, group_id: &str) {
    if group.members.is_empty() {
        group.state = State::Empty;
        group.rebalance_deadline = None;
        group.rebalanced.notify_all();
    } else if group.state != State::PreparingRebalance {
        start_rebalance(group, group_id, None);
    }
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

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
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
            coordinator(&h).expire(&*h);
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn offset_records_round_trip() {
        let key = offset_record_key("g1", "orders", 7);
        assert_eq!(parse_offset_key(&key), Some(("g1".into(), "orders".into(), 7)));
        let value = offset_record_value(42, "meta");
        assert_eq!(parse_offset_value(&value), Some((42, "meta".into())));
        assert_eq!(parse_offset_key(&key[..key.len() - 1]), None);
        assert_eq!(parse_offset_value(&[1, 2]), None);
    }

    struct FakeHost;

    impl GroupHost for FakeHost {
        fn partition_count(&self, topic: &str) -> Option<u32> {
            (topic == "t").then_some(6)
        }
        fn append_offsets<'a>(&'a self, _: u32, _: &'a [u8]) -> LocalFuture<'a, Result<(), NodeError>> {
            Box::pin(async { Err(error(ErrorKind::CoordinatorNotAvailable, "no offsets partition here")) })
        }
    }

    fn join_request(member_id: &str) -> GroupRequest {
        GroupRequest::Join {
            group: "g".into(),
            join: JoinArgs {
                member_id: member_id.into(),
                client_id: "c".into(),
                client_host: "h".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 10_000,
                protocol: JoinProtocol::Native { topics: vec!["t".into()], strategy: "range".into() },
            },
        }
    }

    fn joined(reply: GroupReply) -> JoinResult {
        match reply {
            GroupReply::Joined(Ok(j)) => j,
            other => panic!("expected a join, got {other:?}"),
        }
    }

    /// A second member's join puts the group in a rebalance: the first member's heartbeat
    /// says so, its rejoin completes the rebalance for both with a new generation, and
    /// heartbeats or commits from the old generation are refused.
    #[test]
    fn a_join_rebalances_the_group_and_old_generations_are_fenced() {
        use futures_lite::future::block_on;
        let c = Coordinator::default();
        let first = joined(block_on(c.handle(&FakeHost, join_request(""))));
        assert_eq!(first.generation, 1);
        assert_eq!(first.assignment.len(), 6);
        let second_join = c.handle(&FakeHost, join_request(""));
        let first_again = async {
            // The heartbeat that tells the first member to rejoin.
            let beat = c.heartbeat("g", &first.member_id, first.generation);
            assert_eq!(beat.unwrap_err().kind, ErrorKind::RebalanceInProgress);
            c.handle(&FakeHost, join_request(&first.member_id)).await
        };
        let (second, first2) = block_on(futures_lite::future::zip(second_join, first_again));
        let (second, first2) = (joined(second), joined(first2));
        assert_eq!((second.generation, first2.generation), (2, 2));
        assert_eq!(second.assignment.len() + first2.assignment.len(), 6);
        assert_eq!(second.assignment.len(), 3);
        let stale = c.heartbeat("g", &first.member_id, 1).unwrap_err();
        assert_eq!(stale.kind, ErrorKind::IllegalGeneration);
        let commit = block_on(c.commit(&FakeHost, "g", &first.member_id, 1, vec![("t".into(), 0, 5, String::new())]));
        assert_eq!(commit.unwrap_err().kind, ErrorKind::IllegalGeneration);
        assert!(c.heartbeat("g", "nobody", 2).is_err());
        // Leaving rebalances the rest; the last one leaving empties the group.
        c.leave(&FakeHost, "g", &first.member_id).unwrap();
        let last = joined(block_on(c.handle(&FakeHost, join_request(&second.member_id))));
        assert_eq!(last.assignment.len(), 6);
        c.leave(&FakeHost, "g", &second.member_id).unwrap();
        let listed = c.list();
        assert_eq!((listed[0].group.as_str(), listed[0].state.as_str(), listed[0].members), ("g", "Empty", 0));
    }

    #[test]
    fn groups_spread_over_the_offsets_partitions() {
        let used: BTreeSet<u32> = (0..100).map(|i| offsets_partition(&format!("group-{i}"))).collect();
        assert_eq!(used.len(), OFFSETS_PARTITIONS as usize);
    }
}
