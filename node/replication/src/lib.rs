//! `sluice-replication`: partition replication and the controller as plain state
//! machines: Kafka's ISR model (leader, followers, in-sync replica set, high watermark,
//! leader epochs, elections) and the controller quorum, with no I/O and no wall clock. This
//! crate depends on neither glommio nor the node's I/O seam (`sluice-io`), so that holds by
//! construction. Every actor has one `step(now_ms, input) -> actions`: messages and the
//! current time come in, messages to send, log operations and what to make durable go out.
//! The same code runs in the node (`sluice-node`'s `cluster` module performs the actions)
//! and in the deterministic simulator (`sim`, tests only), which replays a whole run from
//! one seed.
//!
//! - `quorum`: `Quorum`, one controller voter or learner over raft-rs (a Raft state machine
//!   without I/O): its output says what to make durable (`Persist`) and which messages may
//!   leave; it compacts its log by snapshots of its state machine. `format`: the bytes of
//!   the quorum's write-ahead log and snapshot file, and the in-memory log the simulator
//!   crashes.
//! - `log`: `ReplicaLog`, a replica's log as replication sees it (offset, leader epoch,
//!   payload id per entry), its leader-epoch cache and the OffsetsForLeaderEpoch answer.
//! - `replica`: `ReplicaNode`, one node's replicas of every partition: the leader side
//!   (follower progress, high watermark, ISR changes, acks) and the follower side
//!   (fetching, truncating a divergent tail).
//! - `state`: `ClusterState`, the controller's replicated state (node registrations,
//!   fencing and advertised listeners, partitions' leaders, epochs and ISRs), changed only by `Command`s applied in
//!   the controller quorum's log order; it is the quorum's `StateMachine` (commands and
//!   outcomes in a small versioned binary encoding).
//! - `wire`: the bytes of the inter-node messages (heartbeats, partition updates,
//!   AlterPartition, replica fetches and their replies) for the node's transport.
//! - `controller`: the decision side, `ControllerLeader`, which runs on the quorum leader:
//!   node sessions (soft state), and the commands to propose for fencing, elections, ISR
//!   changes, controlled shutdown and preferred leaders; answers go out only once their
//!   command committed. `ControllerVoter` runs it over a `Quorum<ClusterState>`;
//!   `Controller` over a state that commits at once (tests, fast simulation).
//!
//! What the whole guarantees (and `sim` checks after every step, see its module doc):
//! a leader's high watermark never decreases within its epoch; consumers are never shown
//! a high watermark that some current ISR member does not hold; every record acknowledged
//! with acks=all is at its offset in every ISR member and every later leader; the logs of
//! ISR members are identical below the high watermark; leader epochs only increase and
//! each has at most one leader. These hold with message loss, delay, reordering, network
//! partitions, crashes and restarts, as long as every appended entry is durable and
//! unclean leader election is off (an unclean election may lose acknowledged records, as
//! in Kafka).
//!
//! Where it lives: each `ReplicaNode`'s partition state belongs to the shard that owns the
//! partition; the `ClusterState` is the state machine of every controller voter, and the
//! `ControllerLeader` runs on whichever voter leads the quorum (`ControllerVoter`).

pub mod controller;
pub mod format;
pub mod log;
pub mod quorum;
#[cfg(test)]
mod quorum_tests;
pub mod replica;
#[cfg(test)]
mod replica_tests;
#[cfg(test)]
pub(crate) mod sim;
pub mod state;
pub mod wire;

use std::fmt;

use sluice_schemas::ids::{LeaderEpoch, Offset};

pub use controller::{
    replies, Controller, ControllerConfig, ControllerInput, ControllerLeader, ControllerVoter, Decisions, VoterOutput,
};
pub use log::{EpochEnd, LogEntry, LogOp, ReplicaLog};
pub use replica::{NodeAction, NodeInput, ReplicaConfig, ReplicaNode, ReplicaSpec};
pub use state::{
    ClusterState, Command, NodeEndpoints, NodeRecord, Outcome, PartitionRecord, PartitionSpec, ProducerIdBlock,
    ReassignError, Reassignment, RemoveNodeError,
};

/// A partition's cluster-wide id: the controller numbers every partition of every topic
/// once (`ClusterState`), and replication names partitions by it on the wire and in its
/// state. It is not the index of a partition within its topic
/// (`sluice_schemas::TopicPartition::partition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClusterPartitionId(pub u32);

impl fmt::Display for ClusterPartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A node of the cluster (Kafka's broker id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A client (producer or consumer) as the network addresses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u32);

/// Bumped by the controller on every change of a partition's leader or ISR (KIP-497's
/// partition epoch): an ISR change proposed against an older one is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PartitionEpoch(pub u32);

impl fmt::Display for PartitionEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One life of a node process, from start to crash or shutdown (Kafka's broker epoch).
/// A restarted node comes back with a larger one; the controller fences the older life
/// and nodes ignore controller messages addressed to another life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Incarnation(pub u64);

/// Stands for a record batch's contents: replication never looks inside a batch, so the
/// model carries an id that tests can compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PayloadId(pub u64);

/// A node's Kafka listener as clients reach it: Kafka's listener name (e.g. `PLAINTEXT`
/// or `EXTERNAL`) and its advertised address. Every heartbeat carries the node's list
/// (`Message::Heartbeat`), the controller records it in the replicated state
/// (`Command::SetListeners`, `NodeRecord::listeners`), and every node answers Metadata
/// with each node's listener of the name the request came in on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdvertisedListener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// Who sends or receives a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    Controller,
    Node(NodeId),
    Client(ClientId),
}

/// A partition's settings that replication reads (topic configs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionConfig {
    /// `min.insync.replicas`: acks=all is refused while the ISR is smaller.
    pub min_insync_replicas: u32,
    /// `unclean.leader.election.enable`: elect a replica outside the ISR when no ISR member
    /// is available (it may lose acknowledged records).
    pub unclean_leader_election: bool,
}

/// What the controller decided for one partition. The partition epoch orders these:
/// a node applies one only if its partition epoch is newer than what it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: ClusterPartitionId,
    /// `None` while no eligible replica is available.
    pub leader: Option<NodeId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    /// In replica order; never empty (when the last member is fenced it stays, leaderless).
    pub isr: Vec<NodeId>,
    /// The assignment, preferred leader first.
    pub replicas: Vec<NodeId>,
}

/// A leader's proposed ISR (Kafka's AlterPartition), valid only against the leader and
/// partition epochs the controller has when it applies it. One type from the leader's
/// `Message` through the controller's `Command` to the quorum's log, in one encoding
/// (`state::Writer::alter_partition`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlterPartition {
    /// The leader that proposes it, in its life `incarnation`.
    pub node: NodeId,
    pub incarnation: Incarnation,
    pub partition: ClusterPartitionId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub isr: Vec<NodeId>,
    /// Increases with every send, retries included: the controller ignores a request at or
    /// below one it already answered in the same leader epoch, so once the leader has the
    /// answer to its latest send, no older copy can still change the ISR.
    pub request_id: u64,
}

/// Producer acknowledgement modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// No response at all.
    None,
    /// After the leader's append.
    Leader,
    /// After every ISR member has the record (the high watermark passed it).
    All,
}

/// Expected failures, as Kafka's error codes name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaError {
    /// NOT_LEADER_OR_FOLLOWER: this node does not lead the partition (as far as it knows).
    NotLeader,
    /// FENCED_LEADER_EPOCH: the request carries an older leader epoch than this leader's.
    FencedLeaderEpoch,
    /// UNKNOWN_LEADER_EPOCH: the request carries a newer leader epoch than this leader's.
    UnknownLeaderEpoch,
    /// NOT_ENOUGH_REPLICAS: acks=all while the ISR is below min.insync.replicas.
    NotEnoughReplicas,
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND: the record reached the high watermark after the
    /// ISR fell below min.insync.replicas; it is stored but not acknowledged.
    NotEnoughReplicasAfterAppend,
    /// OFFSET_NOT_AVAILABLE: a new leader whose high watermark has not yet reached the
    /// start of its epoch (it could be below what an earlier leader showed).
    OffsetNotAvailable,
    /// OFFSET_OUT_OF_RANGE: the fetch offset is above the high watermark.
    OffsetOutOfRange,
}

/// What a leader answers a follower's fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchResult {
    /// The follower's log ends before the leader's log start (retention or DeleteRecords
    /// removed what it lacks): it starts its log empty at `log_start`, in `epoch` (the
    /// leader's epoch at its log start), and fetches from there. Only a node's leader
    /// answers it (the simulator's logs all start at 0).
    Reset {
        log_start: Offset,
        epoch: LeaderEpoch,
    },
    /// Entries from the fetch offset (possibly none), the leader's high watermark and its
    /// log start (the follower's moves up to it, as far as the follower's log goes:
    /// DeleteRecords and retention reach every replica, as in Kafka).
    Entries {
        entries: Vec<LogEntry>,
        high_watermark: Offset,
        log_start: Offset,
    },
    /// The follower's log diverges from the leader's: the leader's answer to
    /// OffsetsForLeaderEpoch for the follower's last epoch. The follower truncates to
    /// `min(end_offset, its own end offset for epoch)` and fetches again.
    Diverging {
        end: Option<EpochEnd>,
    },
    Error(ReplicaError),
}

/// A consumer fetch's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecords {
    /// Entries below the high watermark from the fetch offset.
    pub entries: Vec<LogEntry>,
    pub high_watermark: Offset,
    pub leader_epoch: LeaderEpoch,
}

/// How many times a `Message::Join` is passed on towards the controller before it is dropped.
pub const JOIN_HOPS_MAX: u8 = 2;

/// Every message of the protocol. Requests carry a `request_id` that their reply echoes;
/// the sender keeps one request in flight per purpose and ignores replies to older ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Node -> controller, every `heartbeat_interval_ms`; `want_shutdown` asks for a
    /// controlled shutdown; `listeners` are the node's advertised Kafka listeners
    /// (`ReplicaConfig::listeners`, at most `state::LISTENERS_MAX`), which the controller
    /// records for this life when they differ from the committed ones.
    Heartbeat {
        node: NodeId,
        incarnation: Incarnation,
        want_shutdown: bool,
        listeners: Vec<AdvertisedListener>,
    },
    /// Controller -> node: the state of every partition the node replicates;
    /// `shutdown_ready` once leaderships have moved away after `want_shutdown`.
    HeartbeatReply {
        incarnation: Incarnation,
        states: Vec<PartitionState>,
        shutdown_ready: bool,
    },
    /// Controller -> node: one partition changed.
    PartitionUpdate {
        incarnation: Incarnation,
        state: PartitionState,
    },
    /// Leader -> controller: replace the ISR. The controller proposes it unchanged, as
    /// `Command::AlterPartition`.
    AlterPartition(AlterPartition),
    /// Node -> controller: a new block of producer ids for this life of the node, past
    /// the block starting at `after` (see `Command::AllocateProducerIds`). The node finds
    /// the block in the committed state; there is no reply.
    AllocateProducerIds {
        node: NodeId,
        incarnation: Incarnation,
        after: Option<u64>,
    },
    /// Node -> controller: create these topics with the controller node's defaults (Kafka's
    /// topic auto-creation, forwarded from a node that is not the controller). The node
    /// waits for them in the committed state; there is no reply. Handed to the node's
    /// admin path, not to the state machines.
    CreateTopics {
        names: Vec<String>,
    },
    /// Node -> controller: changes of SASL users or ACLs (only `SetScramCredential`,
    /// `DeleteScramCredential`, `CreateAcls` and `DeleteAcls`; others are dropped) made on
    /// a node that is not the controller, which proposes them (Kafka's forwarding of admin
    /// requests, KIP-590). Each applies idempotently, so a node may send them again; it
    /// waits for them in the committed state; there is no reply.
    ForwardSecurity {
        commands: Vec<state::Command>,
    },
    /// Node -> controller: where the node is reached and its rack; a node joining a
    /// running cluster sends it to the one node it knows (`--join`), which passes it on to
    /// the controller (`hops` counts the passes, at most `JOIN_HOPS_MAX`). The controller
    /// records the endpoints (`Command::AnnounceNode`) and makes the node a member of the
    /// controller quorum (a learner) if it is not one; the node sends it again until its
    /// own state shows both. While the node is not a member the controller answers with its
    /// own `Join` (addressed to the node): where the node reaches it, before the log says.
    Join {
        node: NodeId,
        /// The announcing life (a controller's answer carries its own).
        incarnation: Incarnation,
        endpoints: state::NodeEndpoints,
        hops: u8,
    },
    /// Controller -> leader: the partition's state after the proposal (accepted or not).
    AlterPartitionReply {
        incarnation: Incarnation,
        request_id: u64,
        accepted: bool,
        state: PartitionState,
    },
    /// Follower -> leader: entries from `fetch_offset` (the follower's log end offset);
    /// `last_fetched_epoch` is the epoch of its last entry, checked by the leader.
    Fetch {
        partition: ClusterPartitionId,
        replica: NodeId,
        leader_epoch: LeaderEpoch,
        fetch_offset: Offset,
        last_fetched_epoch: Option<LeaderEpoch>,
        request_id: u64,
    },
    FetchReply {
        partition: ClusterPartitionId,
        leader_epoch: LeaderEpoch,
        request_id: u64,
        result: FetchResult,
    },
    /// Client -> leader.
    Produce {
        partition: ClusterPartitionId,
        acks: Acks,
        payload: PayloadId,
        request_id: u64,
    },
    ProduceReply {
        partition: ClusterPartitionId,
        request_id: u64,
        result: Result<Offset, ReplicaError>,
    },
    /// Consumer -> leader: entries from `offset`, below the high watermark;
    /// `leader_epoch` is the consumer's view (fencing stale leaders and stale consumers).
    ConsumerFetch {
        partition: ClusterPartitionId,
        leader_epoch: LeaderEpoch,
        offset: Offset,
        request_id: u64,
    },
    ConsumerFetchReply {
        partition: ClusterPartitionId,
        request_id: u64,
        result: Result<ConsumerRecords, ReplicaError>,
    },
    /// Node -> node: a Kafka request (its header and body, in the envelope's data) that a
    /// node makes of another for its clients: WriteTxnMarkers to a partition's leader,
    /// AddPartitionsToTxn v5 to a transactional id's coordinator. It travels on the
    /// cluster link, not to the Kafka listener, which may ask for TLS and a login.
    /// `reply_shard` is the sender's shard that waits for the answer, `request_id` its
    /// request there. Handled by the node, not by the state machines.
    KafkaRequest {
        request_id: u64,
        reply_shard: u16,
    },
    /// The answer to a `KafkaRequest` (its response header and body, in the data).
    KafkaResponse {
        request_id: u64,
        reply_shard: u16,
    },
}

/// A message on its way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub from: Endpoint,
    pub to: Endpoint,
    pub message: Message,
}
