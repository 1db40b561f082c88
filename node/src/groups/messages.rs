//! The coordinator's requests and replies: what a protocol handler sends a group's
//! coordinator shard and what it gets back. Plain data, `Send` (requests and replies cross
//! shards), shared by the native and the Kafka handlers and by the coordinator's state
//! machine (`state`). Nothing here does I/O.

use crate::errors::NodeError;
use sluice_schemas::TopicPartition;

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
    /// Kafka's LeaveGroup v3+ naming a static member by its `group.instance.id`
    /// (`member_id` empty, or the id it must still have).
    LeaveStatic {
        group: String,
        instance_id: String,
        member_id: String,
    },
    Commit {
        group: String,
        member_id: String,
        generation: i32,
        offsets: Vec<(String, u32, i64, String)>,
    },
    /// Offsets committed in a transaction (Kafka's TxnOffsetCommit): they count once the
    /// transaction commits.
    TxnCommit {
        group: String,
        producer_id: i64,
        producer_epoch: i16,
        /// Empty with generation -1 before KIP-447 (the producer's commit, unchecked).
        member_id: String,
        generation: i32,
        offsets: Vec<(String, u32, i64, String)>,
    },
    Fetch {
        group: String,
        partitions: Option<Vec<TopicPartition>>,
        /// Refuse (UNSTABLE_OFFSET_COMMIT) while a transaction's commit of one is pending.
        require_stable: bool,
    },
    List,
    Describe {
        group: String,
    },
    Delete {
        group: String,
    },
    /// OffsetDelete: forget the group's commits of these partitions.
    DeleteOffsets {
        group: String,
        partitions: Vec<TopicPartition>,
    },
    /// Kafka's ConsumerGroupHeartbeat (KIP-848): join, stay, reconcile or leave.
    ConsumerHeartbeat {
        group: String,
        heartbeat: ConsumerHeartbeat,
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
            | GroupRequest::LeaveStatic { group, .. }
            | GroupRequest::Commit { group, .. }
            | GroupRequest::Fetch { group, .. }
            | GroupRequest::TxnCommit { group, .. }
            | GroupRequest::Describe { group }
            | GroupRequest::Delete { group }
            | GroupRequest::DeleteOffsets { group, .. }
            | GroupRequest::ConsumerHeartbeat { group, .. } => Some(group),
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
    pub assignment: Vec<TopicPartition>,
    /// Classic, for the leader only: every member's metadata for the chosen protocol.
    pub members: Vec<(String, Vec<u8>)>,
}

#[derive(Clone, Debug, Default)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// Native: the subscribed topics.
    pub topics: Vec<String>,
    /// The member's partitions (classic: decoded from its assignment when the group's
    /// protocol type is `consumer`).
    pub assignment: Vec<TopicPartition>,
    /// Classic: the member's metadata for the chosen protocol and its opaque assignment.
    pub metadata: Vec<u8>,
    pub assignment_bytes: Vec<u8>,
    /// KIP-848: the member's epoch, instance id and target assignment.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub target: Vec<TopicPartition>,
}

#[derive(Clone, Debug, Default)]
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
    /// A group of Kafka's consumer protocol (KIP-848), with the epoch of its target
    /// assignment.
    pub kip848: bool,
    pub assignment_epoch: i32,
}

/// One line of ListGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSummary {
    pub group: String,
    pub state: String,
    pub members: u32,
    pub protocol_type: String,
    /// Kafka's group type: `classic` (the classic protocol, and native groups) or
    /// `consumer` (KIP-848).
    pub group_type: &'static str,
}

/// One partition's result of a commit.
pub type PartitionOutcome = (String, u32, Result<(), NodeError>);

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
    ConsumerHeartbeat(Result<ConsumerHeartbeatResult, NodeError>),
}

/// A KIP-848 member's heartbeat. Fields that are `None` did not change since its last
/// heartbeat (the protocol sends them only on joining or when they change).
#[derive(Clone, Debug, Default)]
pub struct ConsumerHeartbeat {
    /// Empty on joining when the coordinator names the member (v0); v1 clients name
    /// themselves.
    pub member_id: String,
    /// 0: join; -1: leave; -2: a static member leaving for a while; else its epoch.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rebalance_timeout_ms: Option<u32>,
    pub topics: Option<Vec<String>>,
    /// The server-side assignor asked for (`uniform` or `range`).
    pub assignor: Option<String>,
    /// The partitions the member owns now.
    pub owned: Option<Vec<TopicPartition>>,
    pub client_id: String,
    pub client_host: String,
}

/// The coordinator's answer to a KIP-848 heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerHeartbeatResult {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u32,
    /// The partitions the member is to own, when they differ from what it was last told.
    pub assignment: Option<Vec<TopicPartition>>,
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
    /// Kafka's `group.instance.id` (static membership, KIP-345): a member that restarts
    /// with it takes its previous self's place, without a rebalance when nothing changed.
    pub instance_id: Option<String>,
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
