//! The storage engine's expected failures, each naming what it concerns (which file,
//! which offset, which limit). Bugs are assertions, not variants here.

use std::io;
use std::path::PathBuf;

use sluice_schemas::batch::BatchError;
use sluice_schemas::ids::LeaderEpoch;
use sluice_schemas::Offset;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An earlier write or fsync failed; the log takes no more writes until reopened,
    /// because it can no longer say what is on the disk.
    #[error("log {dir} is poisoned and refuses writes: {cause}")]
    Poisoned { dir: PathBuf, cause: String },
    #[error("invalid batch at byte {position} of the append: {source}")]
    InvalidBatch {
        position: usize,
        #[source]
        source: BatchError,
    },
    #[error("batch of {bytes} bytes exceeds the limit of {limit} bytes (max.message.bytes)")]
    BatchTooLarge { bytes: u64, limit: u64 },
    #[error("append holds no batch")]
    EmptyAppend,
    #[error("offset {requested} is out of range: the log holds {log_start} to {log_end}")]
    OffsetOutOfRange { requested: Offset, log_start: Offset, log_end: Offset },
    #[error("corrupt data in segment {segment} at offset {offset}, byte position {position}: {reason}")]
    Corrupt { segment: PathBuf, offset: Offset, position: u64, reason: String },
    /// A copied batch does not continue the log where it ends (replication).
    #[error("copied batch starts at offset {got}, but the log ends at {expected}")]
    NotContiguous { expected: Offset, got: Offset },
    /// A batch's leader epoch is older than the log's latest (replication).
    #[error("batch at offset {offset} has leader epoch {epoch}, older than the log's latest epoch {latest}")]
    EpochGoesBack { offset: Offset, epoch: LeaderEpoch, latest: LeaderEpoch },
    /// An idempotent producer's batch does not follow its last stored one.
    #[error("producer {producer_id} sent sequence {sequence} out of order: {reason}")]
    OutOfOrderSequence { producer_id: i64, sequence: i32, reason: String },
    /// An idempotent producer's batch whose sequence numbers start past the next one
    /// expected: a batch before it is missing here (still in flight, refused and being
    /// retried, or lost by the producer). Unlike `OutOfOrderSequence` this says "send the
    /// earlier batch first", which a client retrying in order resolves.
    #[error("producer {producer_id} sent sequence {sequence}, but sequence {expected} is the next expected here: an earlier batch is missing; send it first")]
    SequenceGap { producer_id: i64, sequence: i32, expected: i32 },
    /// A batch of a producer the log has no state for (never seen, or forgotten with its
    /// old segments) that does not start at sequence 0: Kafka's UNKNOWN_PRODUCER_ID. The
    /// producer moves to a new epoch and starts again at 0.
    #[error("producer {producer_id} is not known here and sent sequence {sequence}: a new producer or epoch starts at sequence 0")]
    UnknownProducer { producer_id: i64, sequence: i32 },
    /// An idempotent producer's batch carries an older epoch than one already stored.
    #[error("producer {producer_id} epoch {epoch} is fenced: epoch {current} is current")]
    ProducerFenced { producer_id: i64, epoch: i16, current: i16 },
    /// A transactional batch that would open its producer's transaction here without the
    /// coordinator's confirmation (`producers::TxnGuard`): Kafka's INVALID_TXN_STATE.
    #[error("producer {producer_id}'s transactional batch is refused: {reason}")]
    TransactionNotVerified { producer_id: i64, reason: &'static str },
    /// A retried batch whose first append is no longer in the log (cut meanwhile).
    #[error("producer {producer_id} sequence {sequence} was stored and then cut from the log; retry")]
    DuplicateLost { producer_id: i64, sequence: i32 },
    #[error("invalid log configuration: {0}")]
    Config(String),
    #[error("log {dir} is closed")]
    Closed { dir: PathBuf },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io { op, path: path.into(), source }
    }
}
