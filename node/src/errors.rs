//! How a partition's or topic's part of a request failed, as the client will be told.
//!
//! Shards and handlers speak `ErrorKind`; the protocol server maps it to the wire's
//! error code (Kafka's numbers) in one place. Storage errors map here, in one place too.

use std::fmt;

use crate::storage::StorageError;
use crate::topics::TopicError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    UnknownTopicOrPartition,
    OffsetOutOfRange,
    CorruptMessage,
    MessageTooLarge,
    InvalidRecord,
    InvalidTopic,
    TopicAlreadyExists,
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidConfig,
    InvalidRequest,
    InvalidRequiredAcks,
    RequestTimedOut,
    NotEnoughReplicas,
    /// Stored by the leader, but the ISR fell below min.insync.replicas before every
    /// member had it: not acknowledged (a retry may duplicate it, as in Kafka).
    NotEnoughReplicasAfterAppend,
    /// This node does not lead the partition (in a cluster): refresh metadata, retry.
    NotLeaderOrFollower,
    /// The partition has no leader now, or its new leader is not ready to serve yet.
    LeaderNotAvailable,
    /// Admin requests go to the controller (in a cluster); the message names it.
    NotController,
    CoordinatorNotAvailable,
    /// The group's coordinator is another node (in a cluster): find it again.
    NotCoordinator,
    InvalidGroupId,
    UnknownMemberId,
    InvalidSessionTimeout,
    RebalanceInProgress,
    IllegalGeneration,
    /// A member's group protocol does not match the group's (Kafka's classic protocol
    /// against ours, or no protocol in common).
    InconsistentGroupProtocol,
    /// An idempotent producer's batch does not follow its last sequence number.
    OutOfOrderSequenceNumber,
    /// An idempotent producer's batch starts past the next expected sequence number (a
    /// batch before it is missing): OUT_OF_ORDER_SEQUENCE_NUMBER on the native protocol;
    /// the Kafka listener answers it as retriable (see `kafka::code`).
    SequenceGap,
    /// An idempotent producer's batch carries an epoch older than its current one.
    InvalidProducerEpoch,
    /// A batch of an idempotent producer the partition has no state for, not at sequence 0.
    UnknownProducerId,
    NonEmptyGroup,
    GroupIdNotFound,
    /// OffsetDelete of a topic the group's members subscribe to (Kafka's code 86, which
    /// the native protocol's enum does not name).
    GroupSubscribedToTopic,
    /// A static member's `group.instance.id` now belongs to another member id (Kafka's
    /// FENCED_INSTANCE_ID, 82): a newer instance took its place.
    FencedInstanceId,
    /// KIP-848: a consumer group member's epoch is not its current one (Kafka's
    /// FENCED_MEMBER_EPOCH, 110): it must join again.
    FencedMemberEpoch,
    /// KIP-848: a server-side assignor the coordinator does not have (UNSUPPORTED_ASSIGNOR, 112).
    UnsupportedAssignor,
    /// KIP-848: a commit from a member epoch that is not the member's current one
    /// (STALE_MEMBER_EPOCH, 113).
    StaleMemberEpoch,
    /// The coordinator is loading its state from its internal partition (retriable).
    CoordinatorLoadInProgress,
    /// Transactions (KIP-98): the transactional id has a change in progress, or its
    /// last transaction is still being completed (retriable).
    ConcurrentTransactions,
    /// The request does not fit the transaction's state (EndTxn with no transaction).
    InvalidTxnState,
    /// The producer id is not the transactional id's.
    InvalidProducerIdMapping,
    InvalidTransactionTimeout,
    /// A newer producer with the same transactional id was initialized (or the
    /// transaction timed out): this one may not go on.
    ProducerFenced,
    TransactionalIdNotFound,
    /// OffsetFetch asked for stable offsets while a transaction's commit of them is pending.
    UnstableOffsetCommit,
    /// The ACLs do not let the request's principal do this (Kafka's
    /// TOPIC/GROUP/CLUSTER/TRANSACTIONAL_ID_AUTHORIZATION_FAILED: 29, 30, 31, 53).
    TopicAuthorizationFailed,
    GroupAuthorizationFailed,
    ClusterAuthorizationFailed,
    TransactionalIdAuthorizationFailed,
    /// SASL (logins) and users: a mechanism the listener does not enable, a login request
    /// out of order, a failed login, and users' admin errors (Kafka's 33, 34, 58, 91, 92
    /// and 93).
    UnsupportedSaslMechanism,
    IllegalSaslState,
    SaslAuthenticationFailed,
    ResourceNotFound,
    DuplicateResource,
    UnacceptableCredential,
    /// A reassignment's replica list is empty, repeats a node or names one the cluster
    /// does not know (Kafka's INVALID_REPLICA_ASSIGNMENT, 39).
    InvalidReplicaAssignment,
    /// A reassignment was cancelled where none is in progress (Kafka's
    /// NO_REASSIGNMENT_IN_PROGRESS, 85).
    NoReassignmentInProgress,
    /// No node of the cluster has this id (Kafka's BROKER_ID_NOT_REGISTERED, 102).
    BrokerIdNotRegistered,
    /// The partition's log failed (poisoned by an I/O error, or corrupt on disk).
    Storage,
    /// A bug or an unexpected state; the message says which.
    Unknown,
}

impl ErrorKind {
    /// Every kind, in declaration order (`kind_of_code` reads a code back through it:
    /// where two kinds share a code, the first listed is the one read back).
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::UnknownTopicOrPartition,
        ErrorKind::OffsetOutOfRange,
        ErrorKind::CorruptMessage,
        ErrorKind::MessageTooLarge,
        ErrorKind::InvalidRecord,
        ErrorKind::InvalidTopic,
        ErrorKind::TopicAlreadyExists,
        ErrorKind::InvalidPartitions,
        ErrorKind::InvalidReplicationFactor,
        ErrorKind::InvalidConfig,
        ErrorKind::InvalidRequest,
        ErrorKind::InvalidRequiredAcks,
        ErrorKind::RequestTimedOut,
        ErrorKind::NotEnoughReplicas,
        ErrorKind::NotEnoughReplicasAfterAppend,
        ErrorKind::NotLeaderOrFollower,
        ErrorKind::LeaderNotAvailable,
        ErrorKind::NotController,
        ErrorKind::CoordinatorNotAvailable,
        ErrorKind::NotCoordinator,
        ErrorKind::InvalidGroupId,
        ErrorKind::UnknownMemberId,
        ErrorKind::InvalidSessionTimeout,
        ErrorKind::RebalanceInProgress,
        ErrorKind::IllegalGeneration,
        ErrorKind::InconsistentGroupProtocol,
        ErrorKind::OutOfOrderSequenceNumber,
        ErrorKind::SequenceGap,
        ErrorKind::InvalidProducerEpoch,
        ErrorKind::UnknownProducerId,
        ErrorKind::NonEmptyGroup,
        ErrorKind::GroupIdNotFound,
        ErrorKind::GroupSubscribedToTopic,
        ErrorKind::FencedInstanceId,
        ErrorKind::FencedMemberEpoch,
        ErrorKind::UnsupportedAssignor,
        ErrorKind::StaleMemberEpoch,
        ErrorKind::CoordinatorLoadInProgress,
        ErrorKind::ConcurrentTransactions,
        ErrorKind::InvalidTxnState,
        ErrorKind::InvalidProducerIdMapping,
        ErrorKind::InvalidTransactionTimeout,
        ErrorKind::ProducerFenced,
        ErrorKind::TransactionalIdNotFound,
        ErrorKind::UnstableOffsetCommit,
        ErrorKind::TopicAuthorizationFailed,
        ErrorKind::GroupAuthorizationFailed,
        ErrorKind::ClusterAuthorizationFailed,
        ErrorKind::TransactionalIdAuthorizationFailed,
        ErrorKind::UnsupportedSaslMechanism,
        ErrorKind::IllegalSaslState,
        ErrorKind::SaslAuthenticationFailed,
        ErrorKind::ResourceNotFound,
        ErrorKind::DuplicateResource,
        ErrorKind::UnacceptableCredential,
        ErrorKind::InvalidReplicaAssignment,
        ErrorKind::NoReassignmentInProgress,
        ErrorKind::BrokerIdNotRegistered,
        ErrorKind::Storage,
        ErrorKind::Unknown,
    ];
}

/// An error with the message for the person who sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeError {
    pub kind: ErrorKind,
    pub message: String,
}

impl NodeError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> NodeError {
        NodeError { kind, message: message.into() }
    }

    /// The ACLs denied `operation` (`acl::op`) on a topic.
    #[must_use]
    pub fn topic_denied(topic: &str) -> NodeError {
        NodeError::new(ErrorKind::TopicAuthorizationFailed, format!("not authorized to access topic {topic:?}"))
    }

    #[must_use]
    pub fn group_denied(group: &str) -> NodeError {
        NodeError::new(ErrorKind::GroupAuthorizationFailed, format!("not authorized to access group {group:?}"))
    }

    #[must_use]
    pub fn cluster_denied() -> NodeError {
        NodeError::new(ErrorKind::ClusterAuthorizationFailed, "not authorized for this cluster operation")
    }

    #[must_use]
    pub fn txn_denied(id: &str) -> NodeError {
        NodeError::new(
            ErrorKind::TransactionalIdAuthorizationFailed,
            format!("not authorized to use transactional id {id:?}"),
        )
    }

    #[must_use]
    pub fn unknown_partition(topic: &str, partition: u32) -> NodeError {
        NodeError::new(ErrorKind::UnknownTopicOrPartition, format!("topic {topic:?} has no partition {partition}"))
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<TopicError> for NodeError {
    fn from(e: TopicError) -> Self {
        let kind = match e {
            TopicError::InvalidName(_) => ErrorKind::InvalidTopic,
            TopicError::AlreadyExists(_) => ErrorKind::TopicAlreadyExists,
            TopicError::Unknown(_) => ErrorKind::UnknownTopicOrPartition,
            TopicError::InvalidPartitions(_) => ErrorKind::InvalidPartitions,
            TopicError::InvalidReplicationFactor(_) => ErrorKind::InvalidReplicationFactor,
            TopicError::InvalidConfig(_) => ErrorKind::InvalidConfig,
        };
        NodeError::new(kind, e.to_string())
    }
}

/// Maps a storage failure of `topic`/`partition` to what the client is told.
#[must_use]
pub fn from_storage(topic: &str, partition: u32, e: &StorageError) -> NodeError {
    use sluice_schemas::batch::BatchError;
    let kind = match e {
        StorageError::InvalidBatch { source: BatchError::BadCrc { .. }, .. } => ErrorKind::CorruptMessage,
        StorageError::InvalidBatch { .. } | StorageError::EmptyAppend => ErrorKind::InvalidRecord,
        StorageError::BatchTooLarge { .. } => ErrorKind::MessageTooLarge,
        StorageError::OffsetOutOfRange { .. } => ErrorKind::OffsetOutOfRange,
        StorageError::Closed { .. } => ErrorKind::UnknownTopicOrPartition,
        StorageError::OutOfOrderSequence { .. } => ErrorKind::OutOfOrderSequenceNumber,
        StorageError::SequenceGap { .. } => ErrorKind::SequenceGap,
        StorageError::ProducerFenced { .. } => ErrorKind::InvalidProducerEpoch,
        StorageError::UnknownProducer { .. } => ErrorKind::UnknownProducerId,
        // Retriable: the retry is appended again.
        StorageError::DuplicateLost { .. } => ErrorKind::RequestTimedOut,
        StorageError::TransactionNotVerified { .. } => ErrorKind::InvalidTxnState,
        StorageError::Io { .. }
        | StorageError::Poisoned { .. }
        | StorageError::Corrupt { .. }
        | StorageError::Config(_)
        | StorageError::NotContiguous { .. }
        | StorageError::EpochGoesBack { .. } => ErrorKind::Storage,
    };
    NodeError::new(kind, format!("{topic}-{partition}: {e}"))
}

/// What a coordinator answers when an append to its internal partition failed, as
/// Kafka's coordinators map it (TransactionStateManager, GroupMetadataManager): the
/// partition moved (NOT_COORDINATOR: find the coordinator again) or cannot take the
/// record now (COORDINATOR_NOT_AVAILABLE: retry). Clients retry both, where
/// NOT_ENOUGH_REPLICAS would end librdkafka's EndTxn with an error it does not retry.
#[must_use]
pub fn coordinator_append(topic: &str, partition: u32, e: NodeError) -> NodeError {
    let kind = match e.kind {
        ErrorKind::NotLeaderOrFollower | ErrorKind::Storage => ErrorKind::NotCoordinator,
        ErrorKind::UnknownTopicOrPartition
        | ErrorKind::NotEnoughReplicas
        | ErrorKind::NotEnoughReplicasAfterAppend
        | ErrorKind::RequestTimedOut => ErrorKind::CoordinatorNotAvailable,
        _ => return e,
    };
    // Storage errors name the partition already; the others may not.
    let named = e.message.starts_with(&format!("{topic}-{partition}"));
    NodeError::new(kind, if named { e.message } else { format!("{topic}-{partition}: {}", e.message) })
}

/// Kafka's INVALID_REPLICA_ASSIGNMENT and NO_REASSIGNMENT_IN_PROGRESS.
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
const BROKER_ID_NOT_REGISTERED: i16 = 102;
/// Kafka's GROUP_SUBSCRIBED_TO_TOPIC.
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
/// Kafka's FENCED_INSTANCE_ID.
const FENCED_INSTANCE_ID: i16 = 82;
/// Kafka's FENCED_MEMBER_EPOCH, UNSUPPORTED_ASSIGNOR and STALE_MEMBER_EPOCH (KIP-848).
const FENCED_MEMBER_EPOCH: i16 = 110;
const UNSUPPORTED_ASSIGNOR: i16 = 112;
const STALE_MEMBER_EPOCH: i16 = 113;
/// Kafka's codes for transactions.
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const PRODUCER_FENCED: i16 = 90;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

/// The error kind of a Kafka error code another node answered (`Unknown` for a code no
/// kind has): the inverse of `error_code`.
#[must_use]
pub fn kind_of_code(code: i16) -> ErrorKind {
    ErrorKind::ALL.iter().copied().find(|k| error_code(*k).0 == code).unwrap_or(ErrorKind::Unknown)
}

/// The wire error code of an error kind (Kafka's numbers).
#[must_use]
pub fn error_code(kind: ErrorKind) -> sluice_schemas::wire::ErrorCode {
    use sluice_schemas::wire::ErrorCode;
    match kind {
        ErrorKind::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
        ErrorKind::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
        ErrorKind::CorruptMessage => ErrorCode::CorruptMessage,
        ErrorKind::MessageTooLarge => ErrorCode::MessageTooLarge,
        ErrorKind::InvalidRecord => ErrorCode::InvalidRecord,
        ErrorKind::InvalidTopic => ErrorCode::InvalidTopic,
        ErrorKind::TopicAlreadyExists => ErrorCode::TopicAlreadyExists,
        ErrorKind::InvalidPartitions => ErrorCode::InvalidPartitions,
        ErrorKind::InvalidReplicationFactor => ErrorCode::InvalidReplicationFactor,
        ErrorKind::InvalidConfig => ErrorCode::InvalidConfig,
        ErrorKind::InvalidRequest => ErrorCode::InvalidRequest,
        ErrorKind::InvalidRequiredAcks => ErrorCode::InvalidRequiredAcks,
        ErrorKind::RequestTimedOut => ErrorCode::RequestTimedOut,
        ErrorKind::NotEnoughReplicas => ErrorCode::NotEnoughReplicas,
        ErrorKind::NotEnoughReplicasAfterAppend => ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorKind::NotLeaderOrFollower => ErrorCode::NotLeaderOrFollower,
        ErrorKind::LeaderNotAvailable => ErrorCode::LeaderNotAvailable,
        ErrorKind::NotController => ErrorCode::NotController,
        ErrorKind::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable,
        ErrorKind::NotCoordinator => ErrorCode::NotCoordinator,
        ErrorKind::InvalidGroupId => ErrorCode::InvalidGroupId,
        ErrorKind::UnknownMemberId => ErrorCode::UnknownMemberId,
        ErrorKind::InvalidSessionTimeout => ErrorCode::InvalidSessionTimeout,
        ErrorKind::RebalanceInProgress => ErrorCode::RebalanceInProgress,
        ErrorKind::IllegalGeneration => ErrorCode::IllegalGeneration,
        ErrorKind::InconsistentGroupProtocol => ErrorCode::InconsistentGroupProtocol,
        ErrorKind::OutOfOrderSequenceNumber | ErrorKind::SequenceGap => ErrorCode::OutOfOrderSequenceNumber,
        ErrorKind::InvalidProducerEpoch => ErrorCode::InvalidProducerEpoch,
        ErrorKind::UnknownProducerId => ErrorCode::UnknownProducerId,
        ErrorKind::NonEmptyGroup => ErrorCode::NonEmptyGroup,
        ErrorKind::GroupIdNotFound => ErrorCode::GroupIdNotFound,
        ErrorKind::GroupSubscribedToTopic => ErrorCode(GROUP_SUBSCRIBED_TO_TOPIC),
        ErrorKind::FencedInstanceId => ErrorCode(FENCED_INSTANCE_ID),
        ErrorKind::FencedMemberEpoch => ErrorCode(FENCED_MEMBER_EPOCH),
        ErrorKind::UnsupportedAssignor => ErrorCode(UNSUPPORTED_ASSIGNOR),
        ErrorKind::StaleMemberEpoch => ErrorCode(STALE_MEMBER_EPOCH),
        ErrorKind::CoordinatorLoadInProgress => ErrorCode(COORDINATOR_LOAD_IN_PROGRESS),
        ErrorKind::ConcurrentTransactions => ErrorCode(CONCURRENT_TRANSACTIONS),
        ErrorKind::InvalidTxnState => ErrorCode(INVALID_TXN_STATE),
        ErrorKind::InvalidProducerIdMapping => ErrorCode(INVALID_PRODUCER_ID_MAPPING),
        ErrorKind::InvalidTransactionTimeout => ErrorCode(INVALID_TRANSACTION_TIMEOUT),
        ErrorKind::ProducerFenced => ErrorCode(PRODUCER_FENCED),
        ErrorKind::TransactionalIdNotFound => ErrorCode(TRANSACTIONAL_ID_NOT_FOUND),
        ErrorKind::UnstableOffsetCommit => ErrorCode(UNSTABLE_OFFSET_COMMIT),
        ErrorKind::TopicAuthorizationFailed => ErrorCode::TopicAuthorizationFailed,
        ErrorKind::GroupAuthorizationFailed => ErrorCode::GroupAuthorizationFailed,
        ErrorKind::ClusterAuthorizationFailed => ErrorCode::ClusterAuthorizationFailed,
        ErrorKind::TransactionalIdAuthorizationFailed => ErrorCode::TransactionalIdAuthorizationFailed,
        ErrorKind::UnsupportedSaslMechanism => ErrorCode::UnsupportedSaslMechanism,
        ErrorKind::IllegalSaslState => ErrorCode::IllegalSaslState,
        ErrorKind::SaslAuthenticationFailed => ErrorCode::SaslAuthenticationFailed,
        ErrorKind::ResourceNotFound => ErrorCode::ResourceNotFound,
        ErrorKind::DuplicateResource => ErrorCode::DuplicateResource,
        ErrorKind::UnacceptableCredential => ErrorCode::UnacceptableCredential,
        ErrorKind::InvalidReplicaAssignment => ErrorCode(INVALID_REPLICA_ASSIGNMENT),
        ErrorKind::NoReassignmentInProgress => ErrorCode(NO_REASSIGNMENT_IN_PROGRESS),
        ErrorKind::BrokerIdNotRegistered => ErrorCode(BROKER_ID_NOT_REGISTERED),
        ErrorKind::Storage => ErrorCode::KafkaStorageError,
        ErrorKind::Unknown => ErrorCode::UnknownServerError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A code another node answers reads back as the kind that sent it (the one kind
    /// that shares its code, `SequenceGap`, reads back as `OutOfOrderSequenceNumber`).
    #[test]
    fn every_kind_reads_back_from_its_code() {
        for kind in ErrorKind::ALL {
            let back = kind_of_code(error_code(*kind).0);
            let expected = if *kind == ErrorKind::SequenceGap { ErrorKind::OutOfOrderSequenceNumber } else { *kind };
            assert_eq!(back, expected, "{kind:?}");
        }
        assert_eq!(kind_of_code(9_999), ErrorKind::Unknown);
    }

    /// A coordinator's failed append is answered with what clients retry, naming the
    /// partition once.
    #[test]
    fn coordinator_appends_fail_with_what_clients_retry() {
        let cases = [
            (ErrorKind::NotLeaderOrFollower, ErrorKind::NotCoordinator),
            (ErrorKind::Storage, ErrorKind::NotCoordinator),
            (ErrorKind::NotEnoughReplicas, ErrorKind::CoordinatorNotAvailable),
            (ErrorKind::NotEnoughReplicasAfterAppend, ErrorKind::CoordinatorNotAvailable),
            (ErrorKind::RequestTimedOut, ErrorKind::CoordinatorNotAvailable),
            (ErrorKind::UnknownTopicOrPartition, ErrorKind::CoordinatorNotAvailable),
            (ErrorKind::MessageTooLarge, ErrorKind::MessageTooLarge),
        ];
        for (kind, answered) in cases {
            let e = coordinator_append("__transaction_state", 3, NodeError::new(kind, "too few in sync"));
            assert_eq!(e.kind, answered, "{kind:?}");
        }
        let e = NodeError::new(ErrorKind::NotLeaderOrFollower, "__consumer_offsets-6: led by node 2");
        assert_eq!(coordinator_append("__consumer_offsets", 6, e).message, "__consumer_offsets-6: led by node 2");
        let e = coordinator_append("__consumer_offsets", 6, NodeError::new(ErrorKind::NotEnoughReplicas, "isr 1 < 2"));
        assert_eq!(e.message, "__consumer_offsets-6: isr 1 < 2");
    }
}
