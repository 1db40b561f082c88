//! The client's errors: what failed, and whether trying again can help.

use std::fmt;

use thiserror::Error;

/// A wire error code (Kafka's numbers), with the name Kafka gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    pub const NONE: ErrorCode = ErrorCode(0);

    /// Kafka's name of the code.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self.0 {
            -1 => "UNKNOWN_SERVER_ERROR",
            0 => "NONE",
            1 => "OFFSET_OUT_OF_RANGE",
            2 => "CORRUPT_MESSAGE",
            3 => "UNKNOWN_TOPIC_OR_PARTITION",
            5 => "LEADER_NOT_AVAILABLE",
            6 => "NOT_LEADER_OR_FOLLOWER",
            7 => "REQUEST_TIMED_OUT",
            10 => "MESSAGE_TOO_LARGE",
            15 => "COORDINATOR_NOT_AVAILABLE",
            16 => "NOT_COORDINATOR",
            17 => "INVALID_TOPIC_EXCEPTION",
            18 => "RECORD_LIST_TOO_LARGE",
            19 => "NOT_ENOUGH_REPLICAS",
            20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            21 => "INVALID_REQUIRED_ACKS",
            22 => "ILLEGAL_GENERATION",
            24 => "INVALID_GROUP_ID",
            25 => "UNKNOWN_MEMBER_ID",
            26 => "INVALID_SESSION_TIMEOUT",
            27 => "REBALANCE_IN_PROGRESS",
            35 => "UNSUPPORTED_VERSION",
            36 => "TOPIC_ALREADY_EXISTS",
            37 => "INVALID_PARTITIONS",
            38 => "INVALID_REPLICATION_FACTOR",
            39 => "INVALID_REPLICA_ASSIGNMENT",
            40 => "INVALID_CONFIG",
            41 => "NOT_CONTROLLER",
            42 => "INVALID_REQUEST",
            44 => "POLICY_VIOLATION",
            45 => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            47 => "INVALID_PRODUCER_EPOCH",
            56 => "KAFKA_STORAGE_ERROR",
            59 => "UNKNOWN_PRODUCER_ID",
            68 => "NON_EMPTY_GROUP",
            69 => "GROUP_ID_NOT_FOUND",
            87 => "INVALID_RECORD",
            14 => "COORDINATOR_LOAD_IN_PROGRESS",
            48 => "INVALID_TXN_STATE",
            49 => "INVALID_PRODUCER_ID_MAPPING",
            50 => "INVALID_TRANSACTION_TIMEOUT",
            51 => "CONCURRENT_TRANSACTIONS",
            85 => "NO_REASSIGNMENT_IN_PROGRESS",
            88 => "UNSTABLE_OFFSET_COMMIT",
            90 => "PRODUCER_FENCED",
            102 => "BROKER_ID_NOT_REGISTERED",
            105 => "TRANSACTIONAL_ID_NOT_FOUND",
            29 => "TOPIC_AUTHORIZATION_FAILED",
            30 => "GROUP_AUTHORIZATION_FAILED",
            31 => "CLUSTER_AUTHORIZATION_FAILED",
            33 => "UNSUPPORTED_SASL_MECHANISM",
            34 => "ILLEGAL_SASL_STATE",
            53 => "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
            58 => "SASL_AUTHENTICATION_FAILED",
            91 => "RESOURCE_NOT_FOUND",
            92 => "DUPLICATE_RESOURCE",
            93 => "UNACCEPTABLE_CREDENTIAL",
            _ => "UNKNOWN_CODE",
        }
    }

    /// Whether this client retries a request that failed with this code: the condition
    /// is expected to pass (a leader moving, a timeout, stale metadata). Kafka clients
    /// also retry KAFKA_STORAGE_ERROR (56), which a Sluice node answers when its disk is
    /// full or failing: a condition that waits for an operator, so this client reports it
    /// at once (with the node's message naming the directory) instead of retrying it
    /// until `delivery_timeout_ms`.
    #[must_use]
    pub fn is_retriable(self) -> bool {
        matches!(self.0, 2 | 3 | 5 | 6 | 7 | 14 | 15 | 16 | 19 | 20 | 41 | 51 | 88)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

#[derive(Debug, Error, Clone)]
pub enum ClientError {
    #[error("cannot connect to {address}: {message}")]
    Connect { address: String, message: String },
    #[error("connection to {address} failed: {message}")]
    Io { address: String, message: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{code}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("request to {address} timed out after {timeout_ms} ms")]
    Timeout { address: String, timeout_ms: u64 },
    #[error("buffer.memory is full: waited {waited_ms} ms (max.block.ms) for {bytes} bytes")]
    BufferFull { bytes: usize, waited_ms: u64 },
    #[error("record of {bytes} bytes is larger than {limit} bytes ({setting})")]
    RecordTooLarge { bytes: usize, limit: usize, setting: &'static str },
    #[error("delivery timed out after {timeout_ms} ms (delivery.timeout.ms){}", last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default())]
    DeliveryTimeout { timeout_ms: u64, last_error: Option<Box<ClientError>> },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Codec(String),
    #[error("no committed or reset position for {topic}-{partition}: auto.offset.reset is none")]
    NoOffset { topic: String, partition: u32 },
    #[error("the producer is closed")]
    Closed,
    /// A transactional producer's call out of turn (send before begin_transaction, commit
    /// of a transaction whose records failed): the message says what to do.
    #[error("transaction: {0}")]
    Transaction(String),
    /// A login the node refused (wrong credentials, a mechanism it does not enable) or a
    /// TLS handshake that failed on a certificate: the message says which. Never retried:
    /// the same credentials fail again.
    #[error("authentication failed: {0}")]
    Authentication(String),
}

impl ClientError {
    /// Whether sending again (after a metadata refresh and a backoff) can succeed. Not
    /// after a refused login or an authorization failure (TOPIC_AUTHORIZATION_FAILED and
    /// the like): they wait for an operator, as in Kafka's clients.
    #[must_use]
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Io { .. } | ClientError::Timeout { .. } => true,
            ClientError::Server { code, .. } => code.is_retriable(),
            ClientError::Authentication(_) => false,
            _ => false,
        }
    }

    /// The node's error code, for an error the node answered.
    #[must_use]
    pub fn code(&self) -> Option<i16> {
        match self {
            ClientError::Server { code, .. } => Some(code.0),
            _ => None,
        }
    }

    pub(crate) fn server(code: i16, message: Option<&str>) -> ClientError {
        let code = ErrorCode(code);
        ClientError::Server { code, message: message.unwrap_or(code.name()).to_string() }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
