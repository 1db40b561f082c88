//! The controller's replicated state: what every controller voter holds, changed only by
//! committed `Command`s applied in log order (`ClusterState::apply`, and through it
//! `controller::quorum::StateMachine`). It keeps, per node, its registration (current
//! incarnation, fenced, shutting down) and its advertised Kafka listeners, and, per
//! partition, {replicas, leader, leader epoch, partition epoch, ISR, config}.
//!
//! Guarantees:
//! - `apply` is deterministic: no clock, no randomness, ordered maps only, so every voter
//!   that applies the same commands in the same order holds the same state and returns
//!   the same results. Every command is validated against the state it is applied to,
//!   never against the state its proposer saw: a stale, duplicated or retried command is
//!   refused or changes nothing, so the decision side (`replication::controller`) may
//!   propose freely.
//! - leader epochs and partition epochs only increase; every leader change bumps the
//!   leader epoch, every change at all bumps the partition epoch;
//! - with unclean election off, a leader is always an ISR member; the ISR only grows
//!   through the leader's AlterPartition made against the current leader and partition
//!   epochs, adding only eligible (registered, unfenced, not shutting down) replicas;
//! - a fenced node (session expired, restarted, or shutting down) has lost its
//!   leaderships and left every ISR where it was not the last member; it is never elected.
//!
//! Encoding (commands in the Raft log, outcomes in `Applied::result`, the whole state in
//! the quorum's snapshots: `state::snapshot`): a version byte
//! (`ENCODING_VERSION`), a tag byte, then the fields in order, integers big-endian, a node
//! list as a u16 count and u32 ids (at most `NODES_PER_LIST_MAX`), an optional value as a
//! 0/1 byte and the value. Decoding checks every length and refuses trailing bytes.
//!
//! Where it lives: inside the controller quorum's `Quorum<ClusterState>` on every voter
//! (one thread each); tests also hold one directly.

use std::collections::BTreeMap;
use std::fmt;

use crate::ClusterPartitionId;
use sluice_schemas::ids::LeaderEpoch;

use super::{AdvertisedListener, AlterPartition, Incarnation, NodeId, PartitionConfig, PartitionEpoch, PartitionState};
use crate::quorum::StateMachine;

mod snapshot;

/// The version of the command, outcome and whole-state (snapshot) encodings; bumped on
/// any change.
pub const ENCODING_VERSION: u8 = 1;
/// Replicas (or ISR members) in one list: far above any replication factor, low enough
/// that a malformed length cannot make a decoder allocate much.
pub const NODES_PER_LIST_MAX: usize = 1_024;
/// Advertised listeners of one node (in a heartbeat, a command or a snapshot): far above
/// any node's listener count, low enough that a malformed count cannot make a decoder
/// allocate much. A node must not advertise more (its list would not encode).
pub const LISTENERS_MAX: usize = 64;

/// A change to the replicated state. Every one names what it is about precisely enough
/// (incarnations, epochs) that applying it twice, or after the state moved on, is
/// harmless.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    /// A node's life begins (first heartbeat of a new incarnation): the older life is
    /// fenced (it loses leaderships and ISR memberships), the new one is eligible. A
    /// command for an older incarnation than the registered one changes nothing. The
    /// node's advertised listeners stay what they were (only `SetListeners` replaces
    /// them): the new life's heartbeats set its own right after.
    RegisterNode { node: NodeId, incarnation: Incarnation },
    /// A registered life whose session expired: fenced. Ignored for another life.
    FenceNode { node: NodeId, incarnation: Incarnation },
    /// A life that was fenced (session expiry) heartbeats again: eligible again, and
    /// leaderless partitions elect where they now can.
    UnfenceNode { node: NodeId, incarnation: Incarnation },
    /// The life asked for a controlled shutdown: fenced now, and stays so until restart.
    ControlledShutdown { node: NodeId, incarnation: Incarnation },
    /// The leader's proposed ISR, as its `Message::AlterPartition` carried it.
    AlterPartition(AlterPartition),
    /// Move leadership to the preferred replica, if the partition is still at
    /// `partition_epoch` and the preferred replica is eligible and in sync.
    ElectPreferred { partition: ClusterPartitionId, partition_epoch: PartitionEpoch },
    /// A new partition with every replica in its ISR (its logs are empty), led by the
    /// first eligible replica if there is one. Ignored if the partition exists.
    CreatePartition { partition: ClusterPartitionId, replicas: Vec<NodeId>, config: PartitionConfig },
    /// Creates a topic or changes one: its configs become `configs`, `config` applies to
    /// all its partitions, and each assignment past its current partition count becomes a
    /// new partition (with the next free partition ids). A topic never loses partitions, so
    /// applying it again changes nothing.
    SetTopic {
        name: String,
        replication_factor: u16,
        configs: Vec<(String, String)>,
        /// One replica list per partition, the whole topic (existing ones are kept as they are).
        assignments: Vec<Vec<NodeId>>,
        config: PartitionConfig,
    },
    /// Deletes a topic and its partitions. Ignored when it does not exist.
    DeleteTopic { name: String },
    /// Gives life `incarnation` of `node` the next block of `PRODUCER_ID_BLOCK` producer
    /// ids, unless it already has a block newer than `after` (the first id of the block it
    /// is using; `None`: it has none in this life), so a request applied twice allocates
    /// once. Ignored for a life that is not the node's current one.
    AllocateProducerIds { node: NodeId, incarnation: Incarnation, after: Option<u64> },
    /// Creates or replaces `user`'s SCRAM credential for `mechanism` (SASL users, Kafka's
    /// AlterUserScramCredentials upsertion).
    SetScramCredential { user: String, mechanism: ScramMechanism, credential: ScramCredential },
    /// Deletes `user`'s SCRAM credential for `mechanism`. Ignored when it has none.
    DeleteScramCredential { user: String, mechanism: ScramMechanism },
    /// Adds access control entries (Kafka's CreateAcls); ones already there stay once.
    CreateAcls { acls: Vec<AclBinding> },
    /// Removes these access control entries (Kafka's DeleteAcls, its filters already
    /// resolved to the entries they match); missing ones are ignored.
    DeleteAcls { acls: Vec<AclBinding> },
    /// The node's current life advertises these Kafka listeners (from its heartbeats):
    /// they replace the node's recorded ones. Ignored for another life or when they are
    /// already these.
    SetListeners { node: NodeId, incarnation: Incarnation, listeners: Vec<AdvertisedListener> },
    /// Moves a partition to the replicas `target` (Kafka's AlterPartitionReassignments, KIP-455),
    /// or with `None` cancels the move in progress. A move first replicates to the union of the
    /// target and the current replicas (target first, so the preferred leader is the
    /// target's first); once every target replica is in the ISR the partition becomes
    /// `target`, and the others leave it (their nodes delete their copies). A new target for
    /// a partition already moving replaces the old one (from the same original replicas).
    /// Cancelling returns to the original replicas. Refused (changes nothing) for an unknown
    /// partition, an empty target, duplicates, a node the cluster never registered, a cancel
    /// with no move in progress, or a cancel whose original replicas hold no ISR member (it
    /// would lose acknowledged records).
    Reassign { partition: ClusterPartitionId, target: Option<Vec<NodeId>> },
    /// Forgets a node that is down for good (Kafka's UnregisterBroker): its record, its
    /// listeners and its producer id block. Refused (changes nothing) while it is live or
    /// any partition lists it as a replica (moves included). If the node starts again, its
    /// first heartbeat registers it again.
    RemoveNode { node: NodeId },
    /// A node says where it is reached and which rack it is in (each node at start, and a
    /// node joining a running cluster before anything else): the cluster learns of a node it
    /// did not know (unregistered, fenced until its first heartbeat) and its endpoints
    /// replace the recorded ones. Ignored when they are already these.
    AnnounceNode { node: NodeId, endpoints: NodeEndpoints },
}

/// Where a node is reached (`host:port` addresses) and its rack, as it announced them.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeEndpoints {
    /// Its native protocol listener.
    pub native: String,
    /// Its cluster listener (replication and the controller quorum).
    pub cluster: String,
    /// Its rack (Kafka's `broker.rack`), if it has one.
    pub rack: Option<String>,
}

/// Why a `Command::RemoveNode` is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoveNodeError {
    /// The cluster has no such node (Kafka's BROKER_ID_NOT_REGISTERED).
    Unknown,
    /// It is registered and not fenced: stop it first.
    Live,
    /// These partitions list it as a replica: move them first.
    HoldsReplicas(Vec<ClusterPartitionId>),
}

/// Why a `Command::Reassign` is refused (Kafka's error for each: UNKNOWN_TOPIC_OR_PARTITION,
/// NO_REASSIGNMENT_IN_PROGRESS, INVALID_REPLICA_ASSIGNMENT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReassignError {
    UnknownPartition,
    NoReassignmentInProgress,
    Invalid(String),
}

impl fmt::Display for ReassignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReassignError::UnknownPartition => f.write_str("no such partition"),
            ReassignError::NoReassignmentInProgress => f.write_str("no reassignment is in progress"),
            ReassignError::Invalid(why) => f.write_str(why),
        }
    }
}

/// A partition's move in progress: where it goes and where it came from. Its replicas are
/// `target` followed by the `original` ones not in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassignment {
    pub target: Vec<NodeId>,
    pub original: Vec<NodeId>,
}

impl Reassignment {
    /// The replicas being added: in the target, not in the original.
    #[must_use]
    pub fn adding(&self) -> Vec<NodeId> {
        self.target.iter().filter(|n| !self.original.contains(n)).copied().collect()
    }

    /// The replicas being removed: in the original, not in the target.
    #[must_use]
    pub fn removing(&self) -> Vec<NodeId> {
        self.original.iter().filter(|n| !self.target.contains(n)).copied().collect()
    }

    /// The replica list while moving: the target, then the original replicas leaving.
    #[must_use]
    pub fn replicas(&self) -> Vec<NodeId> {
        let mut all = self.target.clone();
        all.extend(self.removing());
        all
    }
}

/// One access control entry, in Kafka's model and with Kafka's numbers for its enums
/// (resource type, pattern type, operation, permission): who (`principal`, e.g.
/// `User:alice` or `User:*`, from `host` or `*`) may or may not (`permission`) do what
/// (`operation`) to which resources (`resource_type`, and `resource_name` taken
/// literally, `*` for all, or as a prefix).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub resource_type: u8,
    pub pattern_type: u8,
    pub resource_name: String,
    pub principal: String,
    pub host: String,
    pub operation: u8,
    pub permission: u8,
}

pub use sluice_schemas::sasl::{ScramCredential, ScramMechanism, SCRAM_FIELD_BYTES_MAX};

/// Producer ids the controller hands a node at a time (Kafka's block size too).
pub const PRODUCER_ID_BLOCK: u64 = 1_000;

/// A block of producer ids given to one life of a node: `first..first + count`. Ids are
/// never given twice: blocks come from one counter in the replicated state, and a node
/// uses only blocks given to its current life (a restarted node asks for a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub incarnation: Incarnation,
    pub first: u64,
    pub count: u64,
}

/// What applying a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The command changed the state (for AlterPartition: it was accepted).
    pub accepted: bool,
    /// Every partition the command changed, as it is right after the command.
    pub changed: Vec<PartitionState>,
    /// AlterPartition only: the partition's state to answer with; `None` when this is an
    /// old copy of a request already answered (it gets no answer) or the partition is unknown.
    pub answer: Option<PartitionState>,
}

/// A node as the replicated state knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRecord {
    /// `None` until the node's first registration.
    pub incarnation: Option<Incarnation>,
    pub fenced: bool,
    /// Asked for a controlled shutdown in this incarnation: fenced until it restarts.
    pub shutting_down: bool,
    /// Its Kafka listeners as clients reach them, as its heartbeats last advertised them
    /// (`Command::SetListeners`); kept across its lives until a new life's heartbeats
    /// replace them. Empty until then.
    pub listeners: Vec<AdvertisedListener>,
    /// Where it is reached and its rack (`Command::AnnounceNode`); `None` until it
    /// announced them.
    pub endpoints: Option<NodeEndpoints>,
}

impl NodeRecord {
    /// May lead or join an ISR.
    #[must_use]
    pub fn eligible(&self) -> bool {
        self.incarnation.is_some() && !self.fenced && !self.shutting_down
    }
}

/// A partition as the replicated state knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRecord {
    pub state: PartitionState,
    pub config: PartitionConfig,
    pub unclean_elections: u64,
    /// The last AlterPartition answered: (leader epoch, request id). Older copies of it
    /// (same leader epoch, request id not above) are ignored, so once the leader has the
    /// answer to its latest send no older copy can change the ISR.
    pub last_alter: Option<(LeaderEpoch, u64)>,
    /// The move in progress (`Command::Reassign`), if any.
    pub reassignment: Option<Reassignment>,
}

/// A topic as the cluster knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicRecord {
    /// Its partitions' ids, in partition order.
    pub partitions: Vec<ClusterPartitionId>,
    pub replication_factor: u16,
    /// The configs set on the topic (the rest are node defaults).
    pub configs: BTreeMap<String, String>,
}

/// A partition's assignment and settings, as created.
pub type PartitionSpec = (ClusterPartitionId, Vec<NodeId>, PartitionConfig);

/// The controller's replicated state (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    nodes: BTreeMap<NodeId, NodeRecord>,
    partitions: BTreeMap<ClusterPartitionId, PartitionRecord>,
    topics: BTreeMap<String, TopicRecord>,
    /// The id the next new partition of a topic gets (ids are never reused).
    next_partition: u32,
    /// The first producer id of the next block (ids are never reused).
    next_producer_id: u64,
    /// Each node's latest block of producer ids.
    producer_ids: BTreeMap<NodeId, ProducerIdBlock>,
    /// SASL users' SCRAM credentials, by user and mechanism.
    scram: BTreeMap<(String, ScramMechanism), ScramCredential>,
    /// Access control entries.
    acls: std::collections::BTreeSet<AclBinding>,
}

impl ClusterState {
    /// The bootstrap state every voter starts from: `nodes` known but unregistered
    /// (fenced), and `partitions` created (see `Command::CreatePartition`).
    #[must_use]
    pub fn new(nodes: &[NodeId], partitions: &[PartitionSpec]) -> ClusterState {
        let mut state = ClusterState::default();
        for node in nodes {
            state.nodes.insert(*node, NodeRecord { fenced: true, ..NodeRecord::default() });
        }
        for (partition, replicas, config) in partitions {
            state.create_partition(*partition, replicas, *config);
        }
        state.next_partition = partitions.iter().map(|(p, _, _)| p.0 + 1).max().unwrap_or(0);
        state
    }

    /// Replica lists for `count` new partitions of `replication_factor` replicas each: on
    /// distinct eligible nodes, the preferred leader (first) on the node with the fewest
    /// leaderships and the others on the nodes with the fewest replicas, counting every
    /// partition already placed. Refused when fewer nodes are live than the factor.
    pub fn place(&self, count: u32, replication_factor: u16) -> Result<Vec<Vec<NodeId>>, String> {
        let live: Vec<NodeId> = self.nodes().filter(|(_, r)| r.eligible()).map(|(id, _)| id).collect();
        let factor = usize::from(replication_factor);
        if factor == 0 || factor > live.len() {
            return Err(format!(
                "replication factor {factor} is {} the {} live node{}",
                if factor == 0 { "below 1; it must be 1 to" } else { "more than" },
                live.len(),
                if live.len() == 1 { "" } else { "s" }
            ));
        }
        let mut replicas: BTreeMap<NodeId, usize> = live.iter().map(|n| (*n, 0)).collect();
        let mut leaders = replicas.clone();
        for record in self.partitions.values() {
            for (i, node) in record.state.replicas.iter().enumerate() {
                if let Some(count) = replicas.get_mut(node) {
                    *count += 1;
                    if i == 0 {
                        *leaders.entry(*node).or_default() += 1;
                    }
                }
            }
        }
        // A node's rack (Kafka's broker.rack); a node without one is a rack of its own.
        let rack = |n: &NodeId| self.nodes.get(n).and_then(|r| r.endpoints.as_ref()).and_then(|e| e.rack.as_deref());
        let mut out = Vec::with_capacity(count as usize);
        for p in 0..count as usize {
            // Ties go round-robin from a start that moves with each partition.
            let turn = |i: usize| (i + live.len() - p % live.len()) % live.len();
            let mut chosen: Vec<NodeId> = Vec::with_capacity(factor);
            while chosen.len() < factor {
                let load = |n: &NodeId| if chosen.is_empty() { (leaders[n], replicas[n]) } else { (replicas[n], 0) };
                // Replicas spread over racks first: a rack holds a second replica of the
                // partition only once every rack holds one.
                let rack_taken = |n: &NodeId| rack(n).is_some_and(|r| chosen.iter().any(|c| rack(c) == Some(r)));
                let next = live
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| !chosen.contains(n))
                    .min_by_key(|(i, n)| (rack_taken(n), load(n), turn(*i)))
                    .map(|(_, n)| *n);
                let Some(next) = next else { break };
                chosen.push(next);
            }
            for (i, node) in chosen.iter().enumerate() {
                *replicas.entry(*node).or_default() += 1;
                if i == 0 {
                    *leaders.entry(*node).or_default() += 1;
                }
            }
            out.push(chosen);
        }
        Ok(out)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = (&String, &TopicRecord)> {
        self.topics.iter()
    }

    #[must_use]
    pub fn topic(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.get(name)
    }

    #[must_use]
    pub fn node(&self, node: NodeId) -> Option<&NodeRecord> {
        self.nodes.get(&node)
    }

    /// Every known node, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &NodeRecord)> {
        self.nodes.iter().map(|(id, record)| (*id, record))
    }

    #[must_use]
    pub fn partition(&self, partition: ClusterPartitionId) -> Option<&PartitionState> {
        self.partitions.get(&partition).map(|r| &r.state)
    }

    #[must_use]
    pub fn partition_record(&self, partition: ClusterPartitionId) -> Option<&PartitionRecord> {
        self.partitions.get(&partition)
    }

    /// Every partition, in id order.
    pub fn partitions(&self) -> impl Iterator<Item = &PartitionRecord> {
        self.partitions.values()
    }

    /// How many times the partition got a leader from outside its ISR.
    #[must_use]
    pub fn unclean_elections(&self, partition: ClusterPartitionId) -> u64 {
        self.partitions.get(&partition).map_or(0, |r| r.unclean_elections)
    }

    #[must_use]
    pub fn is_fenced(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_none_or(|n| n.fenced)
    }

    #[must_use]
    pub fn eligible(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(NodeRecord::eligible)
    }

    /// The states of every partition `node` replicates, in partition order.
    #[must_use]
    pub fn states_of(&self, node: NodeId) -> Vec<PartitionState> {
        self.partitions.values().filter(|r| r.state.replicas.contains(&node)).map(|r| r.state.clone()).collect()
    }

    /// `user`'s SCRAM credential for `mechanism`.
    #[must_use]
    pub fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<&ScramCredential> {
        self.scram.get(&(user.to_string(), mechanism))
    }

    /// Every SCRAM credential, by user then mechanism.
    #[must_use]
    pub fn scram_credentials(&self) -> &BTreeMap<(String, ScramMechanism), ScramCredential> {
        &self.scram
    }

    /// Every access control entry, in order.
    #[must_use]
    pub fn acls(&self) -> &std::collections::BTreeSet<AclBinding> {
        &self.acls
    }

    /// Applies one command (see `Command` for what each does).
    pub fn apply_command(&mut self, command: &Command) -> Outcome {
        let mut out = self.apply_changes(command);
        keep_last_changes(&mut out.changed);
        out
    }

    /// `apply_command`, with a partition changed more than once listed at each change.
    fn apply_changes(&mut self, command: &Command) -> Outcome {
        let mut out = Outcome::default();
        match command {
            Command::RegisterNode { node, incarnation } => {
                let record = self.nodes.entry(*node).or_insert(NodeRecord { fenced: true, ..NodeRecord::default() });
                if record.incarnation.is_some_and(|known| known >= *incarnation) {
                    return out; // The same life again, or an older one delivered late.
                }
                // Whatever the old life led or was in sync for ends here. Its log survived,
                // so the new one may rejoin ISRs by catching up like any follower.
                if !record.fenced {
                    self.fence(*node, &mut out);
                }
                let record = self.nodes.entry(*node).or_default();
                let listeners = std::mem::take(&mut record.listeners);
                let endpoints = record.endpoints.take();
                *record = NodeRecord {
                    incarnation: Some(*incarnation),
                    fenced: false,
                    shutting_down: false,
                    listeners,
                    endpoints,
                };
                out.accepted = true;
                self.elect_leaderless(&mut out);
            }
            Command::FenceNode { node, incarnation } => {
                if self.nodes.get(node).is_some_and(|n| n.incarnation == Some(*incarnation) && !n.fenced) {
                    out.accepted = true;
                    self.fence(*node, &mut out);
                }
            }
            Command::UnfenceNode { node, incarnation } => {
                let Some(record) = self.nodes.get_mut(node) else { return out };
                if record.incarnation == Some(*incarnation) && record.fenced && !record.shutting_down {
                    record.fenced = false;
                    out.accepted = true;
                    self.elect_leaderless(&mut out);
                }
            }
            Command::ControlledShutdown { node, incarnation } => {
                let Some(record) = self.nodes.get_mut(node) else { return out };
                if record.incarnation == Some(*incarnation) && !record.shutting_down {
                    record.shutting_down = true;
                    out.accepted = true;
                    self.fence(*node, &mut out);
                }
            }
            Command::AlterPartition(alter) => self.alter_partition(alter, &mut out),
            Command::ElectPreferred { partition, partition_epoch } => {
                let Some(record) = self.partitions.get(partition) else { return out };
                let state = &record.state;
                let Some(preferred) = state.replicas.first().copied() else { return out };
                if state.partition_epoch != *partition_epoch
                    || state.leader == Some(preferred)
                    || !state.isr.contains(&preferred)
                    || !self.eligible(preferred)
                {
                    return out;
                }
                if let Some(record) = self.partitions.get_mut(partition) {
                    record.state.leader = Some(preferred);
                    record.state.leader_epoch = LeaderEpoch(record.state.leader_epoch.0 + 1);
                    record.state.partition_epoch = PartitionEpoch(record.state.partition_epoch.0 + 1);
                    out.accepted = true;
                    out.changed.push(record.state.clone());
                }
            }
            Command::CreatePartition { partition, replicas, config } => {
                if !self.partitions.contains_key(partition) && !replicas.is_empty() {
                    self.create_partition(*partition, replicas, *config);
                    if self.candidate(*partition).is_some() {
                        self.elect(*partition);
                    }
                    out.accepted = true;
                    out.changed.extend(self.partition(*partition).cloned());
                }
            }
            Command::SetTopic { name, replication_factor, configs, assignments, config } => {
                let mut topic = self.topics.remove(name).unwrap_or_default();
                if topic.partitions.is_empty() {
                    topic.replication_factor = *replication_factor;
                }
                topic.configs = configs.iter().cloned().collect();
                for id in &topic.partitions {
                    if let Some(record) = self.partitions.get_mut(id) {
                        record.config = *config;
                    }
                }
                for replicas in assignments.iter().skip(topic.partitions.len()) {
                    if replicas.is_empty() {
                        break;
                    }
                    let id = ClusterPartitionId(self.next_partition);
                    self.next_partition += 1;
                    self.create_partition(id, replicas, *config);
                    if self.candidate(id).is_some() {
                        self.elect(id);
                    }
                    topic.partitions.push(id);
                    out.changed.extend(self.partition(id).cloned());
                }
                out.accepted = !topic.partitions.is_empty();
                if out.accepted {
                    self.topics.insert(name.clone(), topic);
                }
            }
            Command::DeleteTopic { name } => {
                if let Some(topic) = self.topics.remove(name) {
                    for id in topic.partitions {
                        self.partitions.remove(&id);
                    }
                    out.accepted = true;
                }
            }
            Command::SetScramCredential { user, mechanism, credential } => {
                let key = (user.clone(), *mechanism);
                out.accepted = self.scram.get(&key) != Some(credential);
                self.scram.insert(key, credential.clone());
            }
            Command::DeleteScramCredential { user, mechanism } => {
                out.accepted = self.scram.remove(&(user.clone(), *mechanism)).is_some();
            }
            Command::CreateAcls { acls } => {
                for acl in acls {
                    out.accepted |= self.acls.insert(acl.clone());
                }
            }
            Command::DeleteAcls { acls } => {
                for acl in acls {
                    out.accepted |= self.acls.remove(acl);
                }
            }
            Command::SetListeners { node, incarnation, listeners } => {
                let Some(record) = self.nodes.get_mut(node) else { return out };
                if record.incarnation == Some(*incarnation) && record.listeners != *listeners {
                    record.listeners.clone_from(listeners);
                    out.accepted = true;
                }
            }
            Command::Reassign { partition, target } => {
                if self.check_reassign(*partition, target.as_deref()).is_ok() {
                    self.reassign(*partition, target.as_deref(), &mut out);
                }
            }
            Command::RemoveNode { node } => {
                if self.check_remove_node(*node).is_ok() {
                    self.nodes.remove(node);
                    self.producer_ids.remove(node);
                    out.accepted = true;
                }
            }
            Command::AnnounceNode { node, endpoints } => {
                let record = self.nodes.entry(*node).or_insert(NodeRecord { fenced: true, ..NodeRecord::default() });
                if record.endpoints.as_ref() != Some(endpoints) {
                    record.endpoints = Some(endpoints.clone());
                    out.accepted = true;
                }
            }
            Command::AllocateProducerIds { node, incarnation, after } => {
                let current = self.nodes.get(node).is_some_and(|r| r.incarnation == Some(*incarnation));
                let has_newer = self
                    .producer_ids
                    .get(node)
                    .is_some_and(|b| b.incarnation == *incarnation && after.is_none_or(|a| b.first > a));
                if current && !has_newer {
                    let block = ProducerIdBlock {
                        incarnation: *incarnation,
                        first: self.next_producer_id,
                        count: PRODUCER_ID_BLOCK,
                    };
                    self.next_producer_id += PRODUCER_ID_BLOCK;
                    self.producer_ids.insert(*node, block);
                    out.accepted = true;
                }
            }
        }
        out
    }

    /// The latest block of producer ids given to `node` (to any of its lives).
    #[must_use]
    pub fn producer_id_block(&self, node: NodeId) -> Option<ProducerIdBlock> {
        self.producer_ids.get(&node).copied()
    }

    fn create_partition(&mut self, partition: ClusterPartitionId, replicas: &[NodeId], config: PartitionConfig) {
        assert!(!replicas.is_empty(), "partition {partition} has no replicas");
        let mut replicas = replicas.to_vec();
        let mut seen = Vec::new();
        replicas.retain(|r| {
            let new = !seen.contains(r);
            seen.push(*r);
            new
        });
        let state = PartitionState {
            partition,
            leader: None,
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
            isr: replicas.clone(),
            replicas,
        };
        self.partitions.insert(
            partition,
            PartitionRecord { state, config, unclean_elections: 0, last_alter: None, reassignment: None },
        );
    }

    fn alter_partition(&mut self, alter: &AlterPartition, out: &mut Outcome) {
        let AlterPartition { node, incarnation, partition, leader_epoch, partition_epoch, ref isr, request_id } =
            *alter;
        let live = self.nodes.get(&node).is_some_and(|n| n.incarnation == Some(incarnation) && !n.fenced);
        let eligible: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| n.eligible()).map(|(id, _)| *id).collect();
        let Some(record) = self.partitions.get_mut(&partition) else { return };
        if record.last_alter.is_some_and(|(epoch, id)| epoch == leader_epoch && id >= request_id) {
            return; // An older copy of a request already answered.
        }
        if record.state.leader_epoch == leader_epoch {
            record.last_alter = Some((leader_epoch, request_id));
        }
        let state = &mut record.state;
        let accepted = live
            && state.leader == Some(node)
            && state.leader_epoch == leader_epoch
            && state.partition_epoch == partition_epoch
            && isr.contains(&node)
            && isr.iter().all(|m| state.replicas.contains(m))
            && isr.iter().all(|m| state.isr.contains(m) || eligible.contains(m));
        if accepted {
            state.isr = state.replicas.iter().filter(|r| isr.contains(r)).copied().collect();
            state.partition_epoch = PartitionEpoch(state.partition_epoch.0 + 1);
            out.accepted = true;
            out.changed.push(state.clone());
        }
        out.answer = Some(state.clone());
        if accepted {
            // The leader's answer stays the ISR it asked for; a move this completes
            // reaches it as a partition update, like any other change.
            self.complete_reassignment(partition, out);
        }
    }

    /// Why `Command::Reassign { partition, target }` would be refused, if it would.
    pub fn check_reassign(
        &self,
        partition: ClusterPartitionId,
        target: Option<&[NodeId]>,
    ) -> Result<(), ReassignError> {
        let Some(record) = self.partitions.get(&partition) else { return Err(ReassignError::UnknownPartition) };
        let Some(target) = target else {
            let Some(moving) = &record.reassignment else { return Err(ReassignError::NoReassignmentInProgress) };
            if !record.state.isr.iter().any(|m| moving.original.contains(m)) {
                return Err(ReassignError::Invalid(format!(
                    "cancelling would return to replicas {:?}, none of which is in the ISR {:?}",
                    moving.original, record.state.isr
                )));
            }
            return Ok(());
        };
        if target.is_empty() {
            return Err(ReassignError::Invalid("the new replica list is empty".to_string()));
        }
        if target.len() > NODES_PER_LIST_MAX {
            return Err(ReassignError::Invalid(format!("{} replicas: at most {NODES_PER_LIST_MAX}", target.len())));
        }
        if let Some((i, n)) = target.iter().enumerate().find(|(i, n)| target[..*i].contains(n)) {
            return Err(ReassignError::Invalid(format!("node {} is listed twice (at {i})", n.0)));
        }
        if let Some(n) = target.iter().find(|n| self.nodes.get(n).is_none_or(|r| r.incarnation.is_none())) {
            return Err(ReassignError::Invalid(format!("node {} is not a registered node of the cluster", n.0)));
        }
        Ok(())
    }

    /// Applies a checked `Command::Reassign`.
    fn reassign(&mut self, id: ClusterPartitionId, target: Option<&[NodeId]>, out: &mut Outcome) {
        let Some(record) = self.partitions.get_mut(&id) else { return };
        let original =
            record.reassignment.as_ref().map_or_else(|| record.state.replicas.clone(), |m| m.original.clone());
        let moving = match target {
            Some(target) if target != original.as_slice() => {
                Some(Reassignment { target: target.to_vec(), original: original.clone() })
            }
            _ => None,
        };
        let replicas = moving.as_ref().map_or_else(|| original.clone(), Reassignment::replicas);
        if record.state.replicas == replicas && record.reassignment == moving {
            return; // Already where it was asked to be.
        }
        record.reassignment = moving;
        self.set_replicas(id, replicas, out);
        self.complete_reassignment(id, out);
    }

    /// Gives `id` these replicas: its ISR keeps the members still among them (in replica
    /// order), a leader no longer among them is replaced (a new leader epoch), and the
    /// partition epoch moves on.
    fn set_replicas(&mut self, id: ClusterPartitionId, replicas: Vec<NodeId>, out: &mut Outcome) {
        let Some(record) = self.partitions.get_mut(&id) else { return };
        let state = &mut record.state;
        state.isr = replicas.iter().filter(|r| state.isr.contains(r)).copied().collect();
        state.replicas = replicas;
        let leader_left = state.leader.is_some_and(|l| !state.replicas.contains(&l));
        out.accepted = true;
        if leader_left {
            self.elect(id);
        }
        self.bump_partition_epoch(id, out);
    }

    /// Ends `id`'s move once every target replica is in the ISR: the partition's replicas
    /// become the target, the others leave its ISR, and a leader that left is replaced by
    /// the first target replica in sync and eligible.
    fn complete_reassignment(&mut self, id: ClusterPartitionId, out: &mut Outcome) {
        let Some(record) = self.partitions.get_mut(&id) else { return };
        let Some(moving) = &record.reassignment else { return };
        if !moving.target.iter().all(|n| record.state.isr.contains(n)) {
            return;
        }
        let target = moving.target.clone();
        record.reassignment = None;
        self.set_replicas(id, target, out);
    }

    /// Why `Command::RemoveNode { node }` would be refused, if it would.
    pub fn check_remove_node(&self, node: NodeId) -> Result<(), RemoveNodeError> {
        let Some(record) = self.nodes.get(&node) else { return Err(RemoveNodeError::Unknown) };
        if record.eligible() {
            return Err(RemoveNodeError::Live);
        }
        let holds: Vec<ClusterPartitionId> =
            self.partitions.iter().filter(|(_, r)| r.state.replicas.contains(&node)).map(|(id, _)| *id).collect();
        if !holds.is_empty() {
            return Err(RemoveNodeError::HoldsReplicas(holds));
        }
        Ok(())
    }

    /// The moves in progress, by partition.
    pub fn reassignments(&self) -> impl Iterator<Item = (ClusterPartitionId, &Reassignment)> {
        self.partitions.iter().filter_map(|(id, r)| r.reassignment.as_ref().map(|m| (*id, m)))
    }

    /// Fences `node`: it leaves every ISR where it is not the last member and loses its
    /// leaderships (to another ISR member, or to nobody).
    fn fence(&mut self, node: NodeId, out: &mut Outcome) {
        if let Some(record) = self.nodes.get_mut(&node) {
            record.fenced = true;
        }
        let ids: Vec<ClusterPartitionId> = self.partitions.keys().copied().collect();
        for id in ids {
            let Some(record) = self.partitions.get_mut(&id) else { continue };
            let state = &mut record.state;
            if !state.replicas.contains(&node) {
                continue;
            }
            let mut changed = false;
            if state.isr.len() > 1 && state.isr.contains(&node) {
                state.isr.retain(|m| *m != node);
                changed = true;
            }
            if state.leader == Some(node) {
                self.elect(id);
                changed = true;
            }
            if changed {
                self.bump_partition_epoch(id, out);
            }
        }
    }

    /// Who would be elected for `id` now: the first eligible ISR member in replica order,
    /// or (unclean election on, no ISR member eligible) the first eligible replica. The
    /// flag says whether the choice is unclean.
    fn candidate(&self, id: ClusterPartitionId) -> Option<(NodeId, bool)> {
        let record = self.partitions.get(&id)?;
        let state = &record.state;
        if let Some(clean) = state.replicas.iter().find(|r| state.isr.contains(r) && self.eligible(**r)) {
            return Some((*clean, false));
        }
        if !record.config.unclean_leader_election {
            return None;
        }
        state.replicas.iter().find(|r| self.eligible(**r)).map(|r| (*r, true))
    }

    /// Gives `id` a new leader epoch with the current candidate as leader (or none).
    fn elect(&mut self, id: ClusterPartitionId) {
        let candidate = self.candidate(id);
        let Some(record) = self.partitions.get_mut(&id) else { return };
        let state = &mut record.state;
        state.leader_epoch = LeaderEpoch(state.leader_epoch.0 + 1);
        state.leader = candidate.map(|(node, _)| node);
        if let Some((node, true)) = candidate {
            // Kafka's unclean election: the new leader's log is the truth from now on.
            state.isr = vec![node];
            record.unclean_elections += 1;
        }
    }

    fn bump_partition_epoch(&mut self, id: ClusterPartitionId, out: &mut Outcome) {
        if let Some(record) = self.partitions.get_mut(&id) {
            record.state.partition_epoch = PartitionEpoch(record.state.partition_epoch.0 + 1);
            // An earlier change of it in this command goes at the end (`keep_last_changes`):
            // removing it here cost a pass over every change, and a command that changes
            // every partition of a node (its new life registering) was quadratic.
            out.changed.push(record.state.clone());
        }
    }

    /// After a node comes back: leaderless partitions get a leader if one is now eligible.
    fn elect_leaderless(&mut self, out: &mut Outcome) {
        let ids: Vec<ClusterPartitionId> = self
            .partitions
            .iter()
            .filter(|(id, r)| r.state.leader.is_none() && self.candidate(**id).is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.elect(id);
            self.bump_partition_epoch(id, out);
        }
    }
}

impl StateMachine for ClusterState {
    /// Decodes and applies one command; returns the encoded `Outcome`. A command that does
    /// not decode changes nothing (on every voter alike) and gets an empty outcome.
    fn apply(&mut self, command: &[u8]) -> Vec<u8> {
        let outcome = match Command::decode(command) {
            Ok(command) => self.apply_command(&command),
            Err(e) => {
                tracing::error!("controller log holds a command that does not decode: {e}");
                Outcome::default()
            }
        };
        outcome.encode()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.encode_snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        *self = ClusterState::decode_snapshot(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

// ---- Encoding ----

/// Why bytes do not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("controller record at byte {at}: {what}")]
pub struct DecodeError {
    pub at: usize,
    pub what: String,
}

const TAG_REGISTER: u8 = 1;
const TAG_FENCE: u8 = 2;
const TAG_UNFENCE: u8 = 3;
const TAG_SHUTDOWN: u8 = 4;
const TAG_ALTER: u8 = 5;
const TAG_PREFERRED: u8 = 6;
const TAG_CREATE: u8 = 7;
const TAG_SET_TOPIC: u8 = 8;
const TAG_DELETE_TOPIC: u8 = 9;
const TAG_ALLOCATE_PRODUCER_IDS: u8 = 10;
const TAG_SET_SCRAM: u8 = 11;
const TAG_DELETE_SCRAM: u8 = 12;
const TAG_CREATE_ACLS: u8 = 13;
const TAG_DELETE_ACLS: u8 = 14;
const TAG_SET_LISTENERS: u8 = 15;
const TAG_REASSIGN: u8 = 16;
const TAG_REMOVE_NODE: u8 = 17;
const TAG_ANNOUNCE_NODE: u8 = 18;
const TAG_OUTCOME: u8 = 100;

/// Writes the encoding's fields (also used by `replication::wire`).
#[derive(Default)]
pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn optional_u64(&mut self, v: Option<u64>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            self.u64(v);
        }
    }
    /// A u16 length and UTF-8 bytes (names and config values are far shorter).
    pub(super) fn string(&mut self, v: &str) {
        let bytes = &v.as_bytes()[..v.len().min(usize::from(u16::MAX))];
        self.u16(bytes.len() as u16);
        self.0.extend_from_slice(bytes);
    }
    pub(super) fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    pub(super) fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    /// A node's endpoints: native and cluster addresses, then its rack as a flag and a string.
    pub(super) fn endpoints(&mut self, e: &NodeEndpoints) {
        self.string(&e.native);
        self.string(&e.cluster);
        self.bool(e.rack.is_some());
        if let Some(rack) = &e.rack {
            self.string(rack);
        }
    }
    pub(super) fn nodes(&mut self, nodes: &[NodeId]) {
        assert!(nodes.len() <= NODES_PER_LIST_MAX, "{} nodes in one list", nodes.len());
        self.u16(nodes.len() as u16);
        nodes.iter().for_each(|n| self.u32(n.0));
    }
    pub(super) fn state(&mut self, s: &PartitionState) {
        self.u32(s.partition.0);
        match s.leader {
            Some(leader) => {
                self.bool(true);
                self.u32(leader.0);
            }
            None => self.bool(false),
        }
        self.u32(s.leader_epoch.0);
        self.u32(s.partition_epoch.0);
        self.nodes(&s.isr);
        self.nodes(&s.replicas);
    }
    /// A SCRAM credential: salt and keys as u16-length byte strings, iterations u32.
    pub(super) fn scram(&mut self, c: &ScramCredential) {
        self.bytes16(&c.salt);
        self.u32(c.iterations);
        self.bytes16(&c.stored_key);
        self.bytes16(&c.server_key);
    }
    /// An ACL: resource type, pattern type, then name, principal and host as strings,
    /// then operation and permission.
    pub(super) fn acl(&mut self, a: &AclBinding) {
        self.u8(a.resource_type);
        self.u8(a.pattern_type);
        self.string(&a.resource_name);
        self.string(&a.principal);
        self.string(&a.host);
        self.u8(a.operation);
        self.u8(a.permission);
    }
    /// Advertised listeners: a u32 count (at most `LISTENERS_MAX`), then each name and host
    /// as strings and the port u16.
    pub(super) fn listeners(&mut self, listeners: &[AdvertisedListener]) {
        assert!(listeners.len() <= LISTENERS_MAX, "{} advertised listeners", listeners.len());
        self.u32(listeners.len() as u32);
        for l in listeners {
            self.string(&l.name);
            self.string(&l.host);
            self.u16(l.port);
        }
    }
    fn bytes16(&mut self, bytes: &[u8]) {
        assert!(bytes.len() <= SCRAM_FIELD_BYTES_MAX, "a SCRAM field of {} bytes", bytes.len());
        self.u16(bytes.len() as u16);
        self.0.extend_from_slice(bytes);
    }
    /// The same bytes in a command and in an inter-node message.
    pub(super) fn alter_partition(&mut self, a: &AlterPartition) {
        self.u32(a.node.0);
        self.u64(a.incarnation.0);
        self.u32(a.partition.0);
        self.u32(a.leader_epoch.0);
        self.u32(a.partition_epoch.0);
        self.nodes(&a.isr);
        self.u64(a.request_id);
    }
}

/// Reads the encoding's fields, checking every length (also used by `replication::wire`).
pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn err<T>(&self, what: impl fmt::Display) -> Result<T, DecodeError> {
        Err(DecodeError { at: self.at, what: what.to_string() })
    }
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        match self.bytes.get(self.at..self.at + n) {
            Some(slice) => {
                self.at += n;
                Ok(slice)
            }
            None => self.err(format!("needs {n} more bytes, has {}", self.bytes.len() - self.at)),
        }
    }
    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    pub(super) fn optional_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        if self.bool()? {
            Ok(Some(self.u64()?))
        } else {
            Ok(None)
        }
    }
    pub(super) fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.err("a string that is not UTF-8"),
        }
    }
    pub(super) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => self.err(format!("flag byte {other} is neither 0 nor 1")),
        }
    }
    pub(super) fn endpoints(&mut self) -> Result<NodeEndpoints, DecodeError> {
        Ok(NodeEndpoints {
            native: self.string()?,
            cluster: self.string()?,
            rack: if self.bool()? { Some(self.string()?) } else { None },
        })
    }
    pub(super) fn nodes(&mut self) -> Result<Vec<NodeId>, DecodeError> {
        let count = self.u16()? as usize;
        if count > NODES_PER_LIST_MAX {
            return self.err(format!("{count} nodes in one list, above {NODES_PER_LIST_MAX}"));
        }
        (0..count).map(|_| self.u32().map(NodeId)).collect()
    }
    pub(super) fn state(&mut self) -> Result<PartitionState, DecodeError> {
        let partition = ClusterPartitionId(self.u32()?);
        let leader = if self.bool()? { Some(NodeId(self.u32()?)) } else { None };
        let leader_epoch = LeaderEpoch(self.u32()?);
        let partition_epoch = PartitionEpoch(self.u32()?);
        let isr = self.nodes()?;
        let replicas = self.nodes()?;
        Ok(PartitionState { partition, leader, leader_epoch, partition_epoch, isr, replicas })
    }
    pub(super) fn mechanism(&mut self) -> Result<ScramMechanism, DecodeError> {
        let n = self.u8()?;
        ScramMechanism::from_number(n).map_or_else(|| self.err(format!("unknown SCRAM mechanism {n}")), Ok)
    }
    pub(super) fn scram(&mut self) -> Result<ScramCredential, DecodeError> {
        Ok(ScramCredential {
            salt: self.bytes16()?,
            iterations: self.u32()?,
            stored_key: self.bytes16()?,
            server_key: self.bytes16()?,
        })
    }
    pub(super) fn acl(&mut self) -> Result<AclBinding, DecodeError> {
        Ok(AclBinding {
            resource_type: self.u8()?,
            pattern_type: self.u8()?,
            resource_name: self.string()?,
            principal: self.string()?,
            host: self.string()?,
            operation: self.u8()?,
            permission: self.u8()?,
        })
    }
    pub(super) fn listeners(&mut self) -> Result<Vec<AdvertisedListener>, DecodeError> {
        let count = self.u32()? as usize;
        // Each takes at least 6 bytes (two empty strings and the port).
        let left = self.bytes.len() - self.at;
        if count > LISTENERS_MAX || count > left / 6 {
            return self.err(format!("{count} advertised listeners in {left} bytes, at most {LISTENERS_MAX}"));
        }
        (0..count)
            .map(|_| Ok(AdvertisedListener { name: self.string()?, host: self.string()?, port: self.u16()? }))
            .collect()
    }
    fn bytes16(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = usize::from(self.u16()?);
        if len > SCRAM_FIELD_BYTES_MAX {
            return self.err(format!("a SCRAM field of {len} bytes, above {SCRAM_FIELD_BYTES_MAX}"));
        }
        Ok(self.take(len)?.to_vec())
    }
    pub(super) fn alter_partition(&mut self) -> Result<AlterPartition, DecodeError> {
        Ok(AlterPartition {
            node: NodeId(self.u32()?),
            incarnation: Incarnation(self.u64()?),
            partition: ClusterPartitionId(self.u32()?),
            leader_epoch: LeaderEpoch(self.u32()?),
            partition_epoch: PartitionEpoch(self.u32()?),
            isr: self.nodes()?,
            request_id: self.u64()?,
        })
    }
    pub(super) fn header(&mut self) -> Result<u8, DecodeError> {
        let version = self.u8()?;
        if version != ENCODING_VERSION {
            return self.err(format!("encoding version {version}, this node reads {ENCODING_VERSION}"));
        }
        self.u8()
    }
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        if self.at != self.bytes.len() {
            return self.err(format!("{} trailing bytes", self.bytes.len() - self.at));
        }
        Ok(())
    }
}

impl Command {
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(ENCODING_VERSION);
        match self {
            Command::RegisterNode { node, incarnation } => {
                w.u8(TAG_REGISTER);
                w.u32(node.0);
                w.u64(incarnation.0);
            }
            Command::FenceNode { node, incarnation } => {
                w.u8(TAG_FENCE);
                w.u32(node.0);
                w.u64(incarnation.0);
            }
            Command::UnfenceNode { node, incarnation } => {
                w.u8(TAG_UNFENCE);
                w.u32(node.0);
                w.u64(incarnation.0);
            }
            Command::ControlledShutdown { node, incarnation } => {
                w.u8(TAG_SHUTDOWN);
                w.u32(node.0);
                w.u64(incarnation.0);
            }
            Command::AlterPartition(alter) => {
                w.u8(TAG_ALTER);
                w.alter_partition(alter);
            }
            Command::ElectPreferred { partition, partition_epoch } => {
                w.u8(TAG_PREFERRED);
                w.u32(partition.0);
                w.u32(partition_epoch.0);
            }
            Command::CreatePartition { partition, replicas, config } => {
                w.u8(TAG_CREATE);
                w.u32(partition.0);
                w.nodes(replicas);
                w.u32(config.min_insync_replicas);
                w.bool(config.unclean_leader_election);
            }
            Command::SetTopic { name, replication_factor, configs, assignments, config } => {
                w.u8(TAG_SET_TOPIC);
                w.string(name);
                w.u16(*replication_factor);
                w.u32(configs.len() as u32);
                for (key, value) in configs {
                    w.string(key);
                    w.string(value);
                }
                w.u32(assignments.len() as u32);
                assignments.iter().for_each(|replicas| w.nodes(replicas));
                w.u32(config.min_insync_replicas);
                w.bool(config.unclean_leader_election);
            }
            Command::DeleteTopic { name } => {
                w.u8(TAG_DELETE_TOPIC);
                w.string(name);
            }
            Command::AllocateProducerIds { node, incarnation, after } => {
                w.u8(TAG_ALLOCATE_PRODUCER_IDS);
                w.u32(node.0);
                w.u64(incarnation.0);
                w.optional_u64(*after);
            }
            Command::SetScramCredential { user, mechanism, credential } => {
                w.u8(TAG_SET_SCRAM);
                w.string(user);
                w.u8(mechanism.number());
                w.scram(credential);
            }
            Command::DeleteScramCredential { user, mechanism } => {
                w.u8(TAG_DELETE_SCRAM);
                w.string(user);
                w.u8(mechanism.number());
            }
            Command::CreateAcls { acls } | Command::DeleteAcls { acls } => {
                w.u8(if matches!(self, Command::CreateAcls { .. }) { TAG_CREATE_ACLS } else { TAG_DELETE_ACLS });
                w.u32(acls.len() as u32);
                acls.iter().for_each(|acl| w.acl(acl));
            }
            Command::SetListeners { node, incarnation, listeners } => {
                w.u8(TAG_SET_LISTENERS);
                w.u32(node.0);
                w.u64(incarnation.0);
                w.listeners(listeners);
            }
            Command::Reassign { partition, target } => {
                w.u8(TAG_REASSIGN);
                w.u32(partition.0);
                match target {
                    Some(target) => {
                        w.bool(true);
                        w.nodes(target);
                    }
                    None => w.bool(false),
                }
            }
            Command::RemoveNode { node } => {
                w.u8(TAG_REMOVE_NODE);
                w.u32(node.0);
            }
            Command::AnnounceNode { node, endpoints } => {
                w.u8(TAG_ANNOUNCE_NODE);
                w.u32(node.0);
                w.endpoints(endpoints);
            }
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let command = match r.header()? {
            TAG_REGISTER => Command::RegisterNode { node: NodeId(r.u32()?), incarnation: Incarnation(r.u64()?) },
            TAG_FENCE => Command::FenceNode { node: NodeId(r.u32()?), incarnation: Incarnation(r.u64()?) },
            TAG_UNFENCE => Command::UnfenceNode { node: NodeId(r.u32()?), incarnation: Incarnation(r.u64()?) },
            TAG_SHUTDOWN => Command::ControlledShutdown { node: NodeId(r.u32()?), incarnation: Incarnation(r.u64()?) },
            TAG_ALTER => Command::AlterPartition(r.alter_partition()?),
            TAG_PREFERRED => Command::ElectPreferred {
                partition: ClusterPartitionId(r.u32()?),
                partition_epoch: PartitionEpoch(r.u32()?),
            },
            TAG_CREATE => Command::CreatePartition {
                partition: ClusterPartitionId(r.u32()?),
                replicas: r.nodes()?,
                config: PartitionConfig { min_insync_replicas: r.u32()?, unclean_leader_election: r.bool()? },
            },
            TAG_SET_TOPIC => {
                let name = r.string()?;
                let replication_factor = r.u16()?;
                // Each pair takes at least 4 bytes, each assignment 2: larger counts are malformed.
                let count = r.u32()? as usize;
                if count > bytes.len() / 4 {
                    return r.err(format!("{count} configs in {} bytes", bytes.len()));
                }
                let configs = (0..count).map(|_| Ok((r.string()?, r.string()?))).collect::<Result<Vec<_>, _>>()?;
                let count = r.u32()? as usize;
                if count > bytes.len() / 2 {
                    return r.err(format!("{count} assignments in {} bytes", bytes.len()));
                }
                let assignments = (0..count).map(|_| r.nodes()).collect::<Result<Vec<_>, _>>()?;
                let config = PartitionConfig { min_insync_replicas: r.u32()?, unclean_leader_election: r.bool()? };
                Command::SetTopic { name, replication_factor, configs, assignments, config }
            }
            TAG_DELETE_TOPIC => Command::DeleteTopic { name: r.string()? },
            TAG_ALLOCATE_PRODUCER_IDS => Command::AllocateProducerIds {
                node: NodeId(r.u32()?),
                incarnation: Incarnation(r.u64()?),
                after: r.optional_u64()?,
            },
            TAG_SET_SCRAM => {
                Command::SetScramCredential { user: r.string()?, mechanism: r.mechanism()?, credential: r.scram()? }
            }
            TAG_DELETE_SCRAM => Command::DeleteScramCredential { user: r.string()?, mechanism: r.mechanism()? },
            tag @ (TAG_CREATE_ACLS | TAG_DELETE_ACLS) => {
                // Each entry takes at least 10 bytes: a larger count is malformed.
                let count = r.u32()? as usize;
                if count > bytes.len() / 10 {
                    return r.err(format!("{count} ACLs in {} bytes", bytes.len()));
                }
                let acls = (0..count).map(|_| r.acl()).collect::<Result<Vec<_>, _>>()?;
                if tag == TAG_CREATE_ACLS {
                    Command::CreateAcls { acls }
                } else {
                    Command::DeleteAcls { acls }
                }
            }
            TAG_SET_LISTENERS => Command::SetListeners {
                node: NodeId(r.u32()?),
                incarnation: Incarnation(r.u64()?),
                listeners: r.listeners()?,
            },
            TAG_REASSIGN => Command::Reassign {
                partition: ClusterPartitionId(r.u32()?),
                target: if r.bool()? { Some(r.nodes()?) } else { None },
            },
            TAG_REMOVE_NODE => Command::RemoveNode { node: NodeId(r.u32()?) },
            TAG_ANNOUNCE_NODE => Command::AnnounceNode { node: NodeId(r.u32()?), endpoints: r.endpoints()? },
            tag => return r.err(format!("unknown command tag {tag}")),
        };
        r.finish()?;
        Ok(command)
    }
}

/// Keeps each partition's last state, in the order of those last states: as if every
/// change had removed the partition's earlier one from the list.
fn keep_last_changes(changed: &mut Vec<PartitionState>) {
    if changed.len() < 2 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(changed.len());
    let mut kept: Vec<PartitionState> = changed.drain(..).rev().filter(|s| seen.insert(s.partition)).collect();
    kept.reverse();
    *changed = kept;
}

impl Outcome {
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(ENCODING_VERSION);
        w.u8(TAG_OUTCOME);
        w.bool(self.accepted);
        w.u32(self.changed.len() as u32);
        self.changed.iter().for_each(|s| w.state(s));
        match &self.answer {
            Some(s) => {
                w.bool(true);
                w.state(s);
            }
            None => w.bool(false),
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Outcome, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let tag = r.header()?;
        if tag != TAG_OUTCOME {
            return r.err(format!("tag {tag} is not an outcome"));
        }
        let accepted = r.bool()?;
        let count = r.u32()? as usize;
        // Each state takes at least 17 bytes: a larger count is malformed, not a reason to allocate.
        if count > bytes.len() / 17 {
            return r.err(format!("{count} partition states in {} bytes", bytes.len()));
        }
        let changed = (0..count).map(|_| r.state()).collect::<Result<Vec<_>, _>>()?;
        let answer = if r.bool()? { Some(r.state()?) } else { None };
        r.finish()?;
        Ok(Outcome { accepted, changed, answer })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const P: ClusterPartitionId = ClusterPartitionId(0);
    const CONFIG: PartitionConfig = PartitionConfig { min_insync_replicas: 2, unclean_leader_election: false };

    fn ids(nodes: &[u32]) -> Vec<NodeId> {
        nodes.iter().map(|n| NodeId(*n)).collect()
    }

    fn cluster() -> ClusterState {
        let mut state = ClusterState::new(&ids(&[1, 2, 3]), &[(P, ids(&[1, 2, 3]), CONFIG)]);
        for n in 1..=3 {
            state.apply_command(&Command::RegisterNode { node: NodeId(n), incarnation: Incarnation(1) });
        }
        state
    }

    fn acl(name: &str, operation: u8) -> AclBinding {
        AclBinding {
            resource_type: 2,
            pattern_type: 3,
            resource_name: name.to_string(),
            principal: "User:alice".to_string(),
            host: "*".to_string(),
            operation,
            permission: 3,
        }
    }

    /// ACLs are a set: added once, removed once.
    #[test]
    fn acls_are_added_and_removed_once() {
        let mut state = cluster();
        assert!(state.apply_command(&Command::CreateAcls { acls: vec![acl("a", 3), acl("b", 4)] }).accepted);
        assert!(!state.apply_command(&Command::CreateAcls { acls: vec![acl("a", 3)] }).accepted, "already there");
        assert!(state.apply_command(&Command::DeleteAcls { acls: vec![acl("a", 3), acl("zzz", 3)] }).accepted);
        assert!(!state.apply_command(&Command::DeleteAcls { acls: vec![acl("a", 3)] }).accepted, "already gone");
        assert_eq!(state.acls().iter().cloned().collect::<Vec<_>>(), vec![acl("b", 4)]);
    }

    fn every_command() -> Vec<Command> {
        vec![
            Command::RegisterNode { node: NodeId(1), incarnation: Incarnation(u64::MAX) },
            Command::FenceNode { node: NodeId(2), incarnation: Incarnation(3) },
            Command::UnfenceNode { node: NodeId(3), incarnation: Incarnation(4) },
            Command::ControlledShutdown { node: NodeId(u32::MAX), incarnation: Incarnation(0) },
            Command::AlterPartition(AlterPartition {
                node: NodeId(1),
                incarnation: Incarnation(7),
                partition: ClusterPartitionId(9),
                leader_epoch: LeaderEpoch(10),
                partition_epoch: PartitionEpoch(11),
                isr: ids(&[1, 3]),
                request_id: 12,
            }),
            Command::ElectPreferred { partition: ClusterPartitionId(2), partition_epoch: PartitionEpoch(5) },
            Command::CreatePartition {
                partition: ClusterPartitionId(4),
                replicas: ids(&[3, 1, 2]),
                config: PartitionConfig { min_insync_replicas: 1, unclean_leader_election: true },
            },
            Command::SetTopic {
                name: "orders".to_string(),
                replication_factor: 3,
                configs: vec![("retention.ms".to_string(), "1000".to_string())],
                assignments: vec![ids(&[1, 2, 3]), ids(&[2, 3, 1])],
                config: CONFIG,
            },
            Command::DeleteTopic { name: "orders".to_string() },
            Command::AllocateProducerIds { node: NodeId(2), incarnation: Incarnation(5), after: None },
            Command::AllocateProducerIds { node: NodeId(2), incarnation: Incarnation(5), after: Some(u64::MAX) },
            Command::SetScramCredential {
                user: "alice".to_string(),
                mechanism: ScramMechanism::Sha512,
                credential: ScramCredential {
                    salt: vec![1; 16],
                    iterations: 4096,
                    stored_key: vec![2; 64],
                    server_key: vec![3; 64],
                },
            },
            Command::DeleteScramCredential { user: "alice".to_string(), mechanism: ScramMechanism::Sha256 },
            Command::CreateAcls { acls: vec![acl("orders", 3), acl("", 2)] },
            Command::DeleteAcls { acls: vec![acl("orders", 3)] },
            Command::SetListeners { node: NodeId(3), incarnation: Incarnation(9), listeners: listeners(9092) },
            Command::SetListeners { node: NodeId(3), incarnation: Incarnation(9), listeners: Vec::new() },
            Command::Reassign { partition: ClusterPartitionId(7), target: Some(ids(&[4, 2, 3])) },
            Command::Reassign { partition: ClusterPartitionId(u32::MAX), target: None },
            Command::RemoveNode { node: NodeId(4) },
            Command::AnnounceNode {
                node: NodeId(7),
                endpoints: NodeEndpoints {
                    native: "127.0.0.7:7000".to_string(),
                    cluster: "[::1]:7100".to_string(),
                    rack: Some("eu-west-1a".to_string()),
                },
            },
            Command::AnnounceNode { node: NodeId(7), endpoints: NodeEndpoints::default() },
        ]
    }

    fn listeners(port: u16) -> Vec<AdvertisedListener> {
        vec![
            AdvertisedListener { name: "PLAINTEXT".to_string(), host: "10.1.2.3".to_string(), port },
            AdvertisedListener { name: "EXTERNAL".to_string(), host: "broker-3.example.com".to_string(), port: 443 },
        ]
    }

    /// A node's current life sets its listeners (once: the same list again changes
    /// nothing); another life's list is ignored; a new life's registration keeps them.
    #[test]
    fn listeners_are_set_by_the_current_life_and_kept_across_registrations() {
        let mut state = cluster();
        let set = |life: u64, port| Command::SetListeners {
            node: NodeId(2),
            incarnation: Incarnation(life),
            listeners: listeners(port),
        };
        assert!(state.apply_command(&set(1, 9092)).accepted);
        assert!(!state.apply_command(&set(1, 9092)).accepted, "already these");
        assert!(state.apply_command(&set(1, 9093)).accepted, "replaced");
        assert_eq!(state.node(NodeId(2)).unwrap().listeners, listeners(9093));
        assert!(!state.apply_command(&set(2, 9094)).accepted, "a life not yet registered");
        assert!(
            !state
                .apply_command(&Command::SetListeners {
                    node: NodeId(7),
                    incarnation: Incarnation(1),
                    listeners: listeners(1),
                })
                .accepted
        );
        assert!(state.node(NodeId(7)).is_none(), "an unknown node stays unknown");
        assert!(state.apply_command(&Command::RegisterNode { node: NodeId(2), incarnation: Incarnation(2) }).accepted);
        assert_eq!(state.node(NodeId(2)).unwrap().listeners, listeners(9093), "kept by the new life");
        assert!(!state.apply_command(&set(1, 9095)).accepted, "the old life");
        assert!(state.apply_command(&set(2, 9094)).accepted);
        assert_eq!(state.node(NodeId(2)).unwrap().listeners, listeners(9094));
        assert!(state.node(NodeId(1)).unwrap().listeners.is_empty());
    }

    /// A credential is set, replaced and deleted per user and mechanism; setting the same
    /// one again or deleting a missing one changes nothing.
    #[test]
    fn scram_credentials_are_kept_per_user_and_mechanism() {
        let mut state = cluster();
        let credential = |n: u8| ScramCredential {
            salt: vec![n; 16],
            iterations: 4096,
            stored_key: vec![n; 32],
            server_key: vec![n; 32],
        };
        let set = |mechanism, n| Command::SetScramCredential {
            user: "alice".to_string(),
            mechanism,
            credential: credential(n),
        };
        assert!(state.apply_command(&set(ScramMechanism::Sha256, 1)).accepted);
        assert!(!state.apply_command(&set(ScramMechanism::Sha256, 1)).accepted, "the same credential again");
        assert!(state.apply_command(&set(ScramMechanism::Sha256, 2)).accepted);
        assert!(state.apply_command(&set(ScramMechanism::Sha512, 3)).accepted);
        assert_eq!(state.scram_credential("alice", ScramMechanism::Sha256), Some(&credential(2)));
        assert_eq!(state.scram_credential("bob", ScramMechanism::Sha256), None);
        let delete = Command::DeleteScramCredential { user: "alice".to_string(), mechanism: ScramMechanism::Sha256 };
        assert!(state.apply_command(&delete).accepted);
        assert!(!state.apply_command(&delete).accepted, "already gone");
        assert_eq!(
            state.scram_credentials().keys().cloned().collect::<Vec<_>>(),
            vec![("alice".to_string(), ScramMechanism::Sha512)]
        );
    }

    /// Every command and outcome decodes to itself; truncated, extended, re-versioned or
    /// re-tagged bytes are refused with an error, never a panic.
    #[test]
    fn encodings_round_trip_and_refuse_malformed_bytes() {
        for command in every_command() {
            let bytes = command.encode();
            assert_eq!(Command::decode(&bytes).unwrap(), command);
            for cut in 0..bytes.len() {
                assert!(Command::decode(&bytes[..cut]).is_err(), "{command:?} cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Command::decode(&longer).is_err());
            let mut version = bytes.clone();
            version[0] = ENCODING_VERSION + 1;
            assert!(Command::decode(&version).is_err());
        }
        let too_many = Command::SetListeners {
            node: NodeId(1),
            incarnation: Incarnation(1),
            listeners: vec![listeners(1)[0].clone(); LISTENERS_MAX],
        };
        let mut bytes = too_many.encode();
        assert_eq!(Command::decode(&bytes).unwrap(), too_many, "the most there may be");
        bytes[2 + 4 + 8 + 3] += 1; // The count's last byte: one more than there may be.
        assert!(Command::decode(&bytes).unwrap_err().what.contains("advertised listeners"));
        let mut bad_tag = every_command()[0].encode();
        bad_tag[1] = 0;
        assert!(Command::decode(&bad_tag).is_err());
        let state = cluster();
        let outcome = Outcome {
            accepted: true,
            changed: vec![state.partition(P).unwrap().clone()],
            answer: Some(state.partition(P).unwrap().clone()),
        };
        let bytes = outcome.encode();
        assert_eq!(Outcome::decode(&bytes).unwrap(), outcome);
        for cut in 0..bytes.len() {
            assert!(Outcome::decode(&bytes[..cut]).is_err());
        }
        assert_eq!(Outcome::decode(&Outcome::default().encode()).unwrap(), Outcome::default());
    }

    /// The state machine refuses nothing it cannot read: a malformed command changes no
    /// state and still gets an (empty) outcome, the same on every voter.
    #[test]
    fn a_malformed_command_changes_nothing() {
        let mut state = cluster();
        let before = state.clone();
        let result = StateMachine::apply(&mut state, &[ENCODING_VERSION, 77, 1, 2]);
        assert_eq!(Outcome::decode(&result).unwrap(), Outcome::default());
        assert_eq!(state, before);
    }

    /// Two states fed the same commands (encoded, through `StateMachine::apply`) end equal
    /// with equal results, and applying a command twice changes nothing the second time.
    #[test]
    fn apply_is_deterministic_and_repeats_are_harmless() {
        let commands = vec![
            Command::FenceNode { node: NodeId(1), incarnation: Incarnation(1) },
            Command::UnfenceNode { node: NodeId(1), incarnation: Incarnation(1) },
            Command::AlterPartition(AlterPartition {
                node: NodeId(2),
                incarnation: Incarnation(1),
                partition: P,
                leader_epoch: LeaderEpoch(2),
                partition_epoch: PartitionEpoch(2),
                isr: ids(&[1, 2, 3]),
                request_id: 1,
            }),
            Command::ElectPreferred { partition: P, partition_epoch: PartitionEpoch(3) },
            Command::ControlledShutdown { node: NodeId(2), incarnation: Incarnation(1) },
            Command::SetListeners { node: NodeId(2), incarnation: Incarnation(1), listeners: listeners(9092) },
            Command::RegisterNode { node: NodeId(2), incarnation: Incarnation(2) },
        ];
        let mut a = cluster();
        let mut b = cluster();
        for command in &commands {
            let bytes = command.encode();
            let ra = StateMachine::apply(&mut a, &bytes);
            let rb = StateMachine::apply(&mut b, &bytes);
            assert_eq!(ra, rb);
            assert!(Outcome::decode(&ra).unwrap().accepted, "{command:?}");
            let again = a.clone();
            let repeat = Outcome::decode(&StateMachine::apply(&mut a, &bytes)).unwrap();
            assert!(!repeat.accepted && repeat.changed.is_empty(), "{command:?} applied twice: {repeat:?}");
            assert_eq!(a, again);
            StateMachine::apply(&mut b, &bytes);
        }
        assert_eq!(a, b);
        assert_eq!(a.partition(P).unwrap().leader, Some(NodeId(1)), "the preferred replica leads again");
    }

    /// An AlterPartition made against an older partition epoch is refused even when the
    /// leader and its epoch are unchanged and every member it names is eligible: here the
    /// ISR changed (n3 fenced, then back) between the proposal and its arrival.
    #[test]
    fn alter_partition_against_an_older_partition_epoch_is_refused() {
        let mut state = cluster();
        let before = state.partition(P).unwrap().clone();
        state.apply_command(&Command::FenceNode { node: NodeId(3), incarnation: Incarnation(1) });
        state.apply_command(&Command::UnfenceNode { node: NodeId(3), incarnation: Incarnation(1) });
        let now = state.partition(P).unwrap().clone();
        assert_eq!((now.leader, now.leader_epoch), (before.leader, before.leader_epoch));
        assert_eq!(now.isr, ids(&[1, 2]));
        let stale = Command::AlterPartition(AlterPartition {
            node: NodeId(1),
            incarnation: Incarnation(1),
            partition: P,
            leader_epoch: before.leader_epoch,
            partition_epoch: before.partition_epoch,
            isr: ids(&[1, 3]),
            request_id: 1,
        });
        let outcome = state.apply_command(&stale);
        assert!(!outcome.accepted);
        assert_eq!(outcome.answer.as_ref(), Some(&now));
        assert_eq!(state.partition(P).unwrap().isr, ids(&[1, 2]));
    }

    /// The leader of `P` proposes `isr` against the partition's current epochs.
    fn alter_isr(state: &mut ClusterState, isr: &[u32], request_id: u64) -> Outcome {
        let now = state.partition(P).unwrap().clone();
        state.apply_command(&Command::AlterPartition(AlterPartition {
            node: now.leader.unwrap(),
            incarnation: Incarnation(1),
            partition: P,
            leader_epoch: now.leader_epoch,
            partition_epoch: now.partition_epoch,
            isr: ids(isr),
            request_id,
        }))
    }

    fn moving(state: &ClusterState) -> Option<Reassignment> {
        state.partition_record(P).unwrap().reassignment.clone()
    }

    /// A move replicates to the target and the original replicas together (target first),
    /// completes when the leader's AlterPartition brings the last target replica into the
    /// ISR, and only then drops the replicas leaving, with a new leader when the old one left.
    #[test]
    fn a_reassignment_adds_first_and_removes_once_the_target_is_in_sync() {
        let mut state = ClusterState::new(&ids(&[1, 2, 3, 4, 5]), &[(P, ids(&[1, 2, 3]), CONFIG)]);
        for n in 1..=5 {
            state.apply_command(&Command::RegisterNode { node: NodeId(n), incarnation: Incarnation(1) });
        }
        let start = state.partition(P).unwrap().clone();
        assert_eq!(start.leader, Some(NodeId(1)));
        let move_to = Command::Reassign { partition: P, target: Some(ids(&[4, 2, 5])) };
        let outcome = state.apply_command(&move_to);
        assert!(outcome.accepted);
        let during = state.partition(P).unwrap().clone();
        assert_eq!(during.replicas, ids(&[4, 2, 5, 1, 3]));
        assert_eq!(during.isr, ids(&[2, 1, 3]));
        assert_eq!((during.leader, during.leader_epoch), (start.leader, start.leader_epoch));
        assert!(during.partition_epoch > start.partition_epoch);
        assert_eq!(outcome.changed, vec![during.clone()]);
        let m = moving(&state).unwrap();
        assert_eq!((m.adding(), m.removing()), (ids(&[4, 5]), ids(&[1, 3])));
        // The same move again changes nothing.
        assert!(!state.apply_command(&move_to).accepted);
        // n4 catches up: still moving.
        assert!(alter_isr(&mut state, &[1, 2, 3, 4], 1).accepted);
        assert!(moving(&state).is_some());
        assert_eq!(state.partition(P).unwrap().replicas, ids(&[4, 2, 5, 1, 3]));
        // n5 catches up: the partition is the target; n1 led and left, so n4 leads.
        let outcome = alter_isr(&mut state, &[1, 2, 3, 4, 5], 2);
        assert!(outcome.accepted);
        let done = state.partition(P).unwrap().clone();
        assert_eq!(moving(&state), None);
        assert_eq!(done.replicas, ids(&[4, 2, 5]));
        assert_eq!(done.isr, ids(&[4, 2, 5]));
        assert_eq!(done.leader, Some(NodeId(4)));
        assert!(done.leader_epoch > start.leader_epoch);
        assert_eq!(outcome.changed.last(), Some(&done));
        assert_eq!(state.reassignments().count(), 0);
        // A snapshot taken mid-move keeps it.
        let mut again = ClusterState::new(&ids(&[1, 2, 3, 4]), &[(P, ids(&[1, 2, 3]), CONFIG)]);
        for n in 1..=4 {
            again.apply_command(&Command::RegisterNode { node: NodeId(n), incarnation: Incarnation(1) });
        }
        again.apply_command(&Command::Reassign { partition: P, target: Some(ids(&[2, 3, 4])) });
        let restored = ClusterState::decode_snapshot(&again.encode_snapshot()).unwrap();
        assert_eq!(restored, again);
        assert_eq!(moving(&restored).unwrap().target, ids(&[2, 3, 4]));
    }

    /// A leader that stays keeps its epoch; a move whose target is already in sync (a
    /// removal, a reorder) completes at once; a new target replaces the old one from the
    /// same original replicas; a cancel returns to them and elects away from an added leader.
    #[test]
    fn reassignments_complete_at_once_when_in_sync_and_can_be_replaced_or_cancelled() {
        let mut state = ClusterState::new(&ids(&[1, 2, 3, 4, 5]), &[(P, ids(&[1, 2, 3]), CONFIG)]);
        for n in 1..=5 {
            state.apply_command(&Command::RegisterNode { node: NodeId(n), incarnation: Incarnation(1) });
        }
        let start = state.partition(P).unwrap().clone();
        // Shrinking to (n2, n1): already in sync, done at once, n1 keeps leading in its epoch.
        assert!(state.apply_command(&Command::Reassign { partition: P, target: Some(ids(&[2, 1])) }).accepted);
        let shrunk = state.partition(P).unwrap().clone();
        assert_eq!((shrunk.replicas.clone(), shrunk.isr.clone()), (ids(&[2, 1]), ids(&[2, 1])));
        assert_eq!((shrunk.leader, shrunk.leader_epoch), (Some(NodeId(1)), start.leader_epoch));
        assert_eq!(moving(&state), None);
        // Towards (n4, n5), then replaced by (n3, n1) before n4 or n5 catch up.
        state.apply_command(&Command::Reassign { partition: P, target: Some(ids(&[4, 5])) });
        assert_eq!(state.partition(P).unwrap().replicas, ids(&[4, 5, 2, 1]));
        assert!(alter_isr(&mut state, &[2, 1, 4], 1).accepted);
        assert_eq!(state.partition(P).unwrap().isr, ids(&[4, 2, 1]));
        state.apply_command(&Command::Reassign { partition: P, target: Some(ids(&[3, 1])) });
        let replaced = state.partition(P).unwrap().clone();
        assert_eq!(replaced.replicas, ids(&[3, 1, 2]));
        assert_eq!(replaced.isr, ids(&[1, 2]), "n4 left with the old target");
        assert_eq!(moving(&state).unwrap().original, ids(&[2, 1]));
        // Cancelled: back to (n2, n1).
        assert!(state.apply_command(&Command::Reassign { partition: P, target: None }).accepted);
        let cancelled = state.partition(P).unwrap().clone();
        assert_eq!((cancelled.replicas, cancelled.isr), (ids(&[2, 1]), ids(&[2, 1])));
        assert_eq!(moving(&state), None);
        assert_eq!(state.check_reassign(P, None), Err(ReassignError::NoReassignmentInProgress));
        // A cancel that would drop an added leader elects among the original replicas.
        state.apply_command(&Command::Reassign { partition: P, target: Some(ids(&[4])) });
        let before = state.partition(P).unwrap().clone();
        assert!(alter_isr(&mut state, &[2, 1, 4], 2).accepted);
        assert_eq!(moving(&state), None, "n4 in sync: (n4) alone is done");
        assert_eq!(state.partition(P).unwrap().leader, Some(NodeId(4)));
        assert!(state.partition(P).unwrap().leader_epoch > before.leader_epoch);
        state.apply_command(&Command::Reassign { partition: P, target: Some(ids(&[4, 5])) });
        state.apply_command(&Command::Reassign { partition: P, target: None });
        let back = state.partition(P).unwrap().clone();
        assert_eq!((back.replicas.clone(), back.leader), (ids(&[4]), Some(NodeId(4))));
    }

    /// A node is forgotten only once it is down and holds no replica; it registers again
    /// if it comes back.
    #[test]
    fn a_node_is_removed_only_when_down_and_without_replicas() {
        let mut state = ClusterState::new(&ids(&[1, 2, 3, 4]), &[(P, ids(&[1, 2, 3]), CONFIG)]);
        for n in 1..=4 {
            state.apply_command(&Command::RegisterNode { node: NodeId(n), incarnation: Incarnation(1) });
        }
        let remove = |n| Command::RemoveNode { node: NodeId(n) };
        assert_eq!(state.check_remove_node(NodeId(4)), Err(RemoveNodeError::Live));
        assert_eq!(state.check_remove_node(NodeId(9)), Err(RemoveNodeError::Unknown));
        state.apply_command(&Command::FenceNode { node: NodeId(3), incarnation: Incarnation(1) });
        assert_eq!(state.check_remove_node(NodeId(3)), Err(RemoveNodeError::HoldsReplicas(vec![P])));
        assert!(!state.apply_command(&remove(3)).accepted);
        state.apply_command(&Command::FenceNode { node: NodeId(4), incarnation: Incarnation(1) });
        let before = state.nodes().count();
        assert!(state.apply_command(&remove(4)).accepted);
        assert_eq!(state.nodes().count(), before - 1);
        assert!(state.node(NodeId(4)).is_none());
        assert!(!state.apply_command(&remove(4)).accepted, "once");
        let restored = ClusterState::decode_snapshot(&state.encode_snapshot()).unwrap();
        assert_eq!(restored, state);
        state.apply_command(&Command::RegisterNode { node: NodeId(4), incarnation: Incarnation(2) });
        assert!(state.eligible(NodeId(4)), "a removed node that starts again registers again");
    }

    /// Refused moves change nothing: unknown partitions, empty or duplicated lists, nodes
    /// never registered, cancels with nothing moving or no original replica in sync.
    #[test]
    fn invalid_reassignments_are_refused_with_their_reason() {
        let mut state = cluster();
        let unknown = ClusterPartitionId(9);
        assert_eq!(state.check_reassign(unknown, Some(&ids(&[1]))), Err(ReassignError::UnknownPartition));
        for bad in [ids(&[]), ids(&[1, 2, 1]), ids(&[1, 7])] {
            assert!(matches!(state.check_reassign(P, Some(&bad)), Err(ReassignError::Invalid(_))), "{bad:?}");
            let before = state.clone();
            assert!(!state.apply_command(&Command::Reassign { partition: P, target: Some(bad) }).accepted);
            assert_eq!(state, before);
        }
        assert!(!state.apply_command(&Command::Reassign { partition: P, target: None }).accepted);
        // n4 joins and is added towards (n4, n2); n2 and n3 fall out, n4 catches up, n1 is
        // fenced: only n4 is in sync, and a cancel (to n1..n3) would lose records.
        state.apply_command(&Command::RegisterNode { node: NodeId(4), incarnation: Incarnation(1) });
        state.apply_command(&Command::Reassign { partition: P, target: Some(ids(&[4, 2])) });
        for n in [2, 3] {
            state.apply_command(&Command::FenceNode { node: NodeId(n), incarnation: Incarnation(1) });
        }
        assert!(alter_isr(&mut state, &[1, 4], 1).accepted);
        assert!(moving(&state).is_some());
        state.apply_command(&Command::FenceNode { node: NodeId(1), incarnation: Incarnation(1) });
        assert_eq!(state.partition(P).unwrap().isr, ids(&[4]));
        assert_eq!(state.partition(P).unwrap().leader, Some(NodeId(4)));
        assert!(matches!(state.check_reassign(P, None), Err(ReassignError::Invalid(_))));
        let before = state.clone();
        assert!(!state.apply_command(&Command::Reassign { partition: P, target: None }).accepted);
        assert_eq!(state, before);
    }

    /// A created partition gets a leader at once when a replica is eligible, or as soon as
    /// one becomes eligible; creating it again changes nothing.
    #[test]
    fn create_partition_elects_when_it_can_and_happens_once() {
        let mut state = cluster();
        let create =
            Command::CreatePartition { partition: ClusterPartitionId(5), replicas: ids(&[2, 3, 2]), config: CONFIG };
        let outcome = state.apply_command(&create);
        assert!(outcome.accepted);
        let created = state.partition(ClusterPartitionId(5)).unwrap().clone();
        assert_eq!(
            (created.leader, created.leader_epoch, created.isr.clone()),
            (Some(NodeId(2)), LeaderEpoch(1), ids(&[2, 3]))
        );
        assert!(!state.apply_command(&create).accepted);
        // Created while no replica is eligible, it stays leaderless until one is.
        for n in [2, 3] {
            state.apply_command(&Command::ControlledShutdown { node: NodeId(n), incarnation: Incarnation(1) });
        }
        let create =
            Command::CreatePartition { partition: ClusterPartitionId(6), replicas: ids(&[2, 3]), config: CONFIG };
        state.apply_command(&create);
        assert_eq!(state.partition(ClusterPartitionId(6)).unwrap().leader, None);
        state.apply_command(&Command::RegisterNode { node: NodeId(3), incarnation: Incarnation(2) });
        assert_eq!(state.partition(ClusterPartitionId(6)).unwrap().leader, Some(NodeId(3)));
    }

    /// Placement spreads replicas and preferred leaders evenly over live nodes only, and
    /// refuses a factor above the live node count.
    #[test]
    fn placement_spreads_over_live_nodes_and_refuses_too_large_a_factor() {
        let mut state = ClusterState::new(&ids(&[1, 2, 3, 4]), &[]);
        for n in 1..=3 {
            state.apply_command(&Command::RegisterNode { node: NodeId(n), incarnation: Incarnation(1) });
        }
        let placed = state.place(6, 2).unwrap();
        assert_eq!(placed.len(), 6);
        let mut leaders = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for list in &placed {
            assert_eq!(list.len(), 2);
            assert_ne!(list[0], list[1]);
            assert!(!list.contains(&NodeId(4)), "node 4 never registered: {placed:?}");
            *leaders.entry(list[0]).or_insert(0) += 1;
            for n in list {
                *replicas.entry(*n).or_insert(0) += 1;
            }
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{placed:?}");
        assert_eq!(replicas.values().copied().collect::<Vec<_>>(), vec![4, 4, 4], "{placed:?}");
        let e = state.place(1, 4).unwrap_err();
        assert!(e.contains("replication factor 4") && e.contains("3 live nodes"), "{e}");
        assert!(state.place(1, 0).is_err());
    }

    /// With racks (Kafka's broker.rack), a partition's replicas go to distinct racks while
    /// there are racks enough (a rack takes a second replica only once each holds one),
    /// and replicas and leaders still spread evenly over the nodes.
    #[test]
    fn placement_spreads_each_partition_over_racks() {
        let mut state = ClusterState::new(&ids(&[1, 2, 3, 4, 5, 6]), &[]);
        for (n, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
            state.apply_command(&Command::RegisterNode { node: NodeId(n), incarnation: Incarnation(1) });
            let endpoints = NodeEndpoints { rack: Some(rack.to_string()), ..NodeEndpoints::default() };
            state.apply_command(&Command::AnnounceNode { node: NodeId(n), endpoints });
        }
        let rack = |n: NodeId| ["a", "b", "c"][(n.0 as usize - 1) / 2];
        let placed = state.place(12, 3).unwrap();
        let mut replicas: BTreeMap<NodeId, usize> = BTreeMap::new();
        for list in &placed {
            let mut racks: Vec<&str> = list.iter().map(|n| rack(*n)).collect();
            racks.sort_unstable();
            assert_eq!(racks, vec!["a", "b", "c"], "one replica per rack: {placed:?}");
            list.iter().for_each(|n| *replicas.entry(*n).or_default() += 1);
        }
        assert!(replicas.values().all(|c| *c == 6), "{replicas:?}");
        let leaders: std::collections::BTreeSet<NodeId> = placed.iter().map(|l| l[0]).collect();
        assert_eq!(leaders.len(), 6, "every node leads some: {placed:?}");
        // Four replicas over three racks: one rack takes two, the others one each.
        for list in state.place(6, 4).unwrap() {
            let mut racks: Vec<&str> = list.iter().map(|n| rack(*n)).collect();
            racks.sort_unstable();
            racks.dedup();
            assert_eq!(racks.len(), 3, "{list:?}");
        }
    }

    /// A topic takes fresh partition ids, its partitions get leaders, applying the same
    /// command again changes nothing, a longer assignment adds partitions, configs are
    /// replaced, and deleting it removes its partitions (their ids are not reused).
    #[test]
    fn topics_allocate_partitions_idempotently_and_deletion_frees_them() {
        let mut state = cluster();
        let set = |assignments: Vec<Vec<NodeId>>, retention: &str| Command::SetTopic {
            name: "orders".to_string(),
            replication_factor: 2,
            configs: vec![("retention.ms".to_string(), retention.to_string())],
            assignments,
            config: CONFIG,
        };
        let created = state.apply_command(&set(vec![ids(&[2, 3]), ids(&[3, 1])], "10"));
        assert!(created.accepted);
        assert_eq!(created.changed.len(), 2);
        let topic = state.topic("orders").unwrap().clone();
        assert_eq!(topic.partitions, vec![ClusterPartitionId(1), ClusterPartitionId(2)]);
        assert_eq!(state.partition(ClusterPartitionId(1)).unwrap().leader, Some(NodeId(2)));
        assert_eq!(state.partition(ClusterPartitionId(2)).unwrap().leader, Some(NodeId(3)));
        let again = state.apply_command(&set(vec![ids(&[2, 3]), ids(&[3, 1])], "10"));
        assert!(again.changed.is_empty());
        assert_eq!(state.topic("orders").unwrap().partitions.len(), 2);
        let grown = state.apply_command(&set(vec![ids(&[2, 3]), ids(&[3, 1]), ids(&[1, 2])], "20"));
        assert_eq!(grown.changed.len(), 1);
        let topic = state.topic("orders").unwrap();
        assert_eq!(topic.partitions, vec![ClusterPartitionId(1), ClusterPartitionId(2), ClusterPartitionId(3)]);
        assert_eq!(topic.configs.get("retention.ms").map(String::as_str), Some("20"));
        assert_eq!(topic.replication_factor, 2);
        assert!(state.apply_command(&Command::DeleteTopic { name: "orders".to_string() }).accepted);
        assert!(state.topic("orders").is_none() && state.partition(ClusterPartitionId(2)).is_none());
        assert!(!state.apply_command(&Command::DeleteTopic { name: "orders".to_string() }).accepted);
        state.apply_command(&set(vec![ids(&[1, 2])], "10"));
        assert_eq!(state.topic("orders").unwrap().partitions, vec![ClusterPartitionId(4)]);
    }

    /// Producer id blocks come from one counter, so no id is given twice: a repeated
    /// request (same life, same `after`) allocates once, a request for an older life of
    /// the node allocates nothing, and a restarted node's new life gets a new block.
    #[test]
    fn producer_id_blocks_are_never_given_twice() {
        let mut state = cluster();
        let ask = |node: u32, life: u64, after: Option<u64>| Command::AllocateProducerIds {
            node: NodeId(node),
            incarnation: Incarnation(life),
            after,
        };
        let block = |state: &ClusterState, node: u32| state.producer_id_block(NodeId(node)).map(|b| b.first);
        assert!(state.apply_command(&ask(1, 1, None)).accepted);
        assert!(!state.apply_command(&ask(1, 1, None)).accepted, "the same request again");
        assert_eq!(block(&state, 1), Some(0));
        assert!(state.apply_command(&ask(2, 1, None)).accepted);
        assert_eq!(block(&state, 2), Some(PRODUCER_ID_BLOCK));
        assert!(state.apply_command(&ask(1, 1, Some(0))).accepted, "node 1 used up its block");
        assert!(!state.apply_command(&ask(1, 1, Some(0))).accepted);
        assert_eq!(block(&state, 1), Some(2 * PRODUCER_ID_BLOCK));
        assert!(!state.apply_command(&ask(3, 9, None)).accepted, "not node 3's current life");
        state.apply_command(&Command::RegisterNode { node: NodeId(1), incarnation: Incarnation(2) });
        assert!(!state.apply_command(&ask(1, 1, Some(2 * PRODUCER_ID_BLOCK))).accepted, "the old life");
        assert!(state.apply_command(&ask(1, 2, None)).accepted, "the new life gets its own block");
        let now = state.producer_id_block(NodeId(1)).unwrap();
        assert_eq!((now.incarnation, now.first, now.count), (Incarnation(2), 3 * PRODUCER_ID_BLOCK, PRODUCER_ID_BLOCK));
    }
}
