//! The messages shards send each other, and the admin operations on topic metadata.
//!
//! Everything here is `Send`: it crosses executor threads through the channel mesh.
//! Record bytes cross as owned vectors (one copy), which `ShardStats` counts.

use std::collections::BTreeMap;

use sluice_schemas::{Offset, TopicPartition};

use crate::errors::NodeError;
use crate::topics::Metadata;

/// What travels on the mesh.
#[derive(Debug)]
pub enum ShardMsg {
    Request { id: u64, from: super::ShardId, request: ShardRequest },
    Reply { id: u64, reply: ShardReply },
}

/// Work for the shard that owns what it names.
#[derive(Debug)]
pub enum ShardRequest {
    Append {
        topic: String,
        partition: u32,
        batches: Vec<u8>,
        /// 0, 1 or -1 (all).
        acks: i16,
        /// The transactional id whose coordinator confirms a transactional batch that
        /// opens its producer's transaction here (KIP-890 part 1; `ops::txn::guard`).
        verify: Option<String>,
    },
    Read {
        topic: String,
        partition: u32,
        offset: Offset,
        max_bytes: u32,
        /// Stop at the last stable offset and name the aborted transactions.
        read_committed: bool,
        /// On the leader only, or on any replica (a fetch from a follower).
        on: crate::cluster::host::Replicas,
    },
    /// Resolves when the partition has data at `offset`, or after `max_wait_ms`.
    WaitForData {
        topic: String,
        partition: u32,
        offset: Offset,
        max_wait_ms: u64,
        on: crate::cluster::host::Replicas,
    },
    ListOffset {
        topic: String,
        partition: u32,
        timestamp: i64,
        read_committed: bool,
    },
    /// To shard 0 only.
    Admin(AdminRequest),
    /// To shard 0: changes of SASL users or ACLs (`Command::SetScramCredential`,
    /// `DeleteScramCredential`, `CreateAcls`, `DeleteAcls`), run by the controller.
    Security(Vec<sluice_replication::state::Command>),
    /// To shard 0: a producer id from the node's block (InitProducerId).
    ProducerId,
    /// To shard 0, which counts client connections per IP address node-wide: a place for
    /// one more connection from `ip` unless `limit` are open (`limit: Some`), or give one
    /// back (`limit: None`).
    ConnectionSlot {
        ip: std::net::IpAddr,
        limit: Option<u32>,
    },
    /// To shard 0: start or cancel partition moves (AlterPartitionReassignments); with
    /// `keep_factor` a move may not change the partition's replica count.
    Reassign {
        moves: Vec<super::reassign::Move>,
        keep_factor: bool,
    },
    /// To shard 0: the moves in progress, of these topics' partitions (`None`: all).
    ListReassignments(Option<Vec<(String, Vec<u32>)>>),
    /// To shard 0: forget a node that is down for good (UnregisterBroker).
    RemoveNode(u32),
    /// To the shard that owns a follower: let go of it for another shard of the node
    /// (`Shard::release_log`).
    ReleaseLog(sluice_schemas::TopicPartition),
    /// To shard 0: make a node a controller voter (`add`) or take its vote away.
    ChangeVoter {
        node: u32,
        add: bool,
    },
    /// To shard 0: the controller quorum's leader and members.
    DescribeQuorum,
    /// To shard 0: Kafka's topic auto-creation of these topics (`Shard::auto_create`).
    AutoCreate(Vec<String>),
    /// Close every log (shutdown).
    Close,
    /// From shard 0: the cluster's committed state changed.
    ApplyCluster(Box<super::cluster::ClusterUpdate>),
    /// To the shard that owns their partitions: replication envelopes (wire bytes) that
    /// arrived together.
    Replication(Vec<Vec<u8>>),
    /// To shard 0: a frame another shard sent to this node (its controller voter).
    ClusterFrame(crate::cluster::transport::Inbound),
    /// This shard's metrics, for a scrape.
    Metrics,
    /// To the group's coordinator shard (List: to every shard).
    Group(crate::groups::GroupRequest),
    /// To the transactional id's coordinator shard (List: to every shard).
    Txn(crate::txn::TxnRequest),
    /// To the shard owning a partition its node leads: write a transaction marker.
    WriteMarker {
        topic: String,
        partition: u32,
        marker: crate::ops::txn::Marker,
    },
    /// The committed offsets of every group this shard coordinates (lag metrics).
    GroupOffsets,
    /// The idempotent producers a partition this shard leads knows (DescribeProducers).
    Producers {
        topic: String,
        partition: u32,
    },
    /// The partitions of `topic` this shard should have opened and could not, with why.
    OpenFailures {
        topic: String,
    },
    /// The bytes of every partition log this shard holds (DescribeLogDirs).
    LogSizes,
    /// Move a partition's log start to `offset` (-1: its log end).
    DeleteRecords {
        topic: String,
        partition: u32,
        offset: i64,
    },
}

#[derive(Debug)]
pub enum ShardReply {
    Appended(Result<Appended, NodeError>),
    Read(Result<ReadResult, NodeError>),
    Offset(Result<Option<OffsetAndTime>, NodeError>),
    Admin(AdminResult),
    /// One result per change of `Security`.
    SecurityChanged(Vec<Result<(), NodeError>>),
    ProducerId(Result<i64, NodeError>),
    /// Whether a `ConnectionSlot` was granted.
    SlotGranted(bool),
    Metrics(Box<crate::metrics::Metrics>),
    Group(crate::groups::GroupReply),
    Txn(crate::txn::TxnReply),
    GroupOffsets(Vec<(String, String, u32, i64)>),
    /// The log start offset after DeleteRecords.
    LowWatermark(Result<Offset, NodeError>),
    Producers(Result<Vec<crate::storage::producers::ProducerSummary>, NodeError>),
    OpenFailures(Vec<(u32, String)>),
    LogSizes(Vec<(TopicPartition, u64)>),
    /// One result per move of `Reassign`, in order.
    Reassigned(Vec<Result<(), NodeError>>),
    Reassignments(Result<Vec<super::reassign::MoveInProgress>, NodeError>),
    Removed(Result<(), NodeError>),
    VoterChanged(Result<(), NodeError>),
    /// Whether a shard let go of a log (`ReleaseLog`).
    Released(bool),
    Quorum(Result<super::voters::QuorumStatus, NodeError>),
    Done,
    Failed(NodeError),
}

/// An offset and the timestamp of the record there (-1 when it names no record).
pub type OffsetAndTime = (Offset, i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub log_start_offset: Offset,
    pub log_append_time_ms: Option<i64>,
}

#[derive(Clone, Debug, Default)]
pub struct ReadResult {
    /// Whole stored batches (empty at the log end).
    pub bytes: Vec<u8>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    /// The offset below which no transaction is open (at most the high watermark).
    pub last_stable_offset: Offset,
    /// read_committed: the aborted transactions (producer id, first offset) that may have
    /// records in what was read.
    pub aborted: Vec<(i64, Offset)>,
}

/// A change of topic metadata, run on shard 0.
#[derive(Clone, Debug)]
pub enum AdminRequest {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    /// Grow topics to a new partition count.
    CreatePartitions {
        topics: Vec<(String, u32)>,
        validate_only: bool,
    },
    AlterConfigs {
        topics: Vec<ConfigChange>,
        validate_only: bool,
    },
}

/// An incremental change of one topic's configs.
#[derive(Clone, Debug)]
pub struct ConfigChange {
    pub topic: String,
    pub set: Vec<(String, String)>,
    /// Keys to return to the node's default.
    pub delete: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub configs: BTreeMap<String, String>,
}

impl AdminRequest {
    /// The topics the request names, in order (each gets a result).
    #[must_use]
    pub fn topic_names(&self) -> Vec<String> {
        match self {
            AdminRequest::CreateTopics { topics, .. } => topics.iter().map(|t| t.name.clone()).collect(),
            AdminRequest::DeleteTopics { names } => names.clone(),
            AdminRequest::CreatePartitions { topics, .. } => topics.iter().map(|(n, _)| n.clone()).collect(),
            AdminRequest::AlterConfigs { topics, .. } => topics.iter().map(|c| c.topic.clone()).collect(),
        }
    }

    #[must_use]
    pub fn validate_only(&self) -> bool {
        match self {
            AdminRequest::CreateTopics { validate_only, .. }
            | AdminRequest::CreatePartitions { validate_only, .. }
            | AdminRequest::AlterConfigs { validate_only, .. } => *validate_only,
            AdminRequest::DeleteTopics { .. } => false,
        }
    }
}

/// Per topic, in request order.
#[derive(Clone, Debug, Default)]
pub struct AdminResult {
    pub results: Vec<(String, Result<(), NodeError>)>,
}

/// Applies (or, with validate_only, checks) an admin request to `metadata`.
pub fn apply_admin(metadata: &mut Metadata, request: &AdminRequest) -> Vec<(String, Result<(), NodeError>)> {
    let check = request.validate_only();
    match request {
        AdminRequest::CreateTopics { topics, .. } => topics
            .iter()
            .map(|t| {
                let r = if check {
                    metadata.check_create(&t.name, t.partitions, t.replication_factor, &t.configs)
                } else {
                    metadata.create(&t.name, t.partitions, t.replication_factor, t.configs.clone()).map(|_| ())
                };
                (t.name.clone(), r.map_err(NodeError::from))
            })
            .collect(),
        AdminRequest::DeleteTopics { names } => names
            .iter()
            .map(|n| {
                let r = if crate::topics::is_internal(n) {
                    Err(internal(n, "deleted"))
                } else {
                    metadata.delete(n).map(|_| ()).map_err(NodeError::from)
                };
                (n.clone(), r)
            })
            .collect(),
        AdminRequest::CreatePartitions { topics, .. } => topics
            .iter()
            .map(|(name, count)| {
                if crate::topics::is_internal(name) {
                    return (name.clone(), Err(internal(name, "given partitions")));
                }
                let r = if check {
                    metadata.check_partitions(name, *count)
                } else {
                    metadata.set_partitions(name, *count).map(|_| ())
                };
                (name.clone(), r.map_err(NodeError::from))
            })
            .collect(),
        AdminRequest::AlterConfigs { topics, .. } => topics
            .iter()
            .map(|c| {
                let r = if check {
                    metadata.check_alter(&c.topic, &c.set, &c.delete)
                } else {
                    metadata.alter(&c.topic, &c.set, &c.delete).map(|_| ())
                };
                (c.topic.clone(), r.map_err(NodeError::from))
            })
            .collect(),
    }
}

/// Refuses a change to an internal topic: the groups' offsets live there, and a group
/// finds its offsets partition by hashing over its partition count.
fn internal(name: &str, what: &str) -> NodeError {
    NodeError::new(
        crate::errors::ErrorKind::InvalidTopic,
        format!("{name} is an internal topic (group offsets or transaction states) and cannot be {what}"),
    )
}
