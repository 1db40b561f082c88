//! Transaction markers: the commit or abort control batch the transaction coordinator
//! writes to each partition of a transaction, through the partition's leader.
//!
//! A partition this node leads gets its marker from the shard that owns it
//! (`Shard::write_marker_local`: appended as the leader appends, acknowledged by the
//! in-sync replicas). A partition another node leads gets it with Kafka's own
//! inter-broker request, WriteTxnMarkers, sent over the cluster link
//! (`shard::kafka_calls`) and served there as the Kafka listener serves it
//! (`kafka::txn::write_txn_markers`) by coming back here on its node.

use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, RequestHeader, ResponseHeader,
    TopicName, TransactionalId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_schemas::TopicPartition;

use crate::errors::{ErrorKind, NodeError};
use crate::replication::NodeId;
use crate::shard::{Shard, ShardReply, ShardRequest};
use crate::storage::producers::TxnGuard;
use crate::storage::PartitionLog;
use crate::txn::{txn_partition, TxnMetadata, TxnReply, TxnRequest, TXN_TOPIC};
use sluice_schemas::batch::BatchHeader;

/// InitProducerId from either listener: with a transactional id, from the id's
/// coordinator (creating `__transaction_state` first if it does not exist yet, as
/// Kafka's first FindCoordinator for a transactional id does); else an idempotent
/// producer's id.
pub async fn init_producer(
    shard: &Rc<Shard>,
    transactional_id: Option<&str>,
    timeout_ms: i32,
    existing: Option<(i64, i16)>,
) -> Result<(i64, i16), NodeError> {
    let Some(id) = transactional_id.filter(|id| !id.is_empty()) else {
        return crate::ops::admin::init_producer(shard, existing).await;
    };
    ensure_txn_topic(shard).await;
    let init = TxnRequest::InitProducerId { transactional_id: id.to_string(), timeout_ms, existing };
    match shard.txn_call(init).await {
        TxnReply::ProducerId(r) => r,
        other => Err(unexpected(&other)),
    }
}

/// Creates the transactions' state topic if it does not exist (waiting, bounded, for
/// its partitions to have leaders).
pub async fn ensure_txn_topic(shard: &Rc<Shard>) {
    if shard.metadata().topic(TXN_TOPIC).is_none() {
        crate::ops::admin::auto_create(shard, vec![TXN_TOPIC.to_string()]).await;
    }
}

/// Runs a transaction request that answers done or failed (AddPartitions, EndTxn, Abort).
pub async fn txn_done(shard: &Rc<Shard>, request: TxnRequest) -> Result<(), NodeError> {
    match shard.txn_call(request).await {
        TxnReply::Done(r) => r,
        other => Err(unexpected(&other)),
    }
}

/// EndTxn: the producer id and epoch the producer goes on with.
pub async fn end_txn(shard: &Rc<Shard>, request: TxnRequest) -> Result<(i64, i16), NodeError> {
    match shard.txn_call(request).await {
        TxnReply::ProducerId(r) => r,
        TxnReply::Done(Err(e)) => Err(e),
        other => Err(unexpected(&other)),
    }
}

/// The transactional ids this node coordinates, with their state.
pub async fn list(shard: &Rc<Shard>) -> Vec<(String, TxnMetadata)> {
    match shard.txn_call(TxnRequest::List).await {
        TxnReply::Listed(list) => list,
        _ => Vec::new(),
    }
}

/// One transactional id's state, from its coordinator.
pub async fn describe(shard: &Rc<Shard>, transactional_id: &str) -> Result<TxnMetadata, NodeError> {
    match shard.txn_call(TxnRequest::Describe { transactional_id: transactional_id.to_string() }).await {
        TxnReply::Described(r) => r,
        other => Err(unexpected(&other)),
    }
}

fn unexpected(reply: &TxnReply) -> NodeError {
    NodeError::new(ErrorKind::Unknown, format!("unexpected transaction reply {reply:?}"))
}

/// Whether producer `producer_id` at `epoch` has an ongoing transaction at
/// `transactional_id` with every one of `partitions` in it, asked of the coordinator on
/// this node (a verify-only AddPartitionsToTxn, KIP-890 part 1).
pub async fn verify_here(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[TopicPartition],
) -> Result<(), NodeError> {
    let m = describe(shard, transactional_id).await?;
    if m.producer_id != producer_id || m.producer_epoch != epoch {
        return Err(NodeError::new(
            ErrorKind::InvalidProducerEpoch,
            format!(
                "transactional id {transactional_id:?} is at producer {} epoch {}, not {producer_id} epoch {epoch}",
                m.producer_id, m.producer_epoch
            ),
        ));
    }
    if m.status != crate::txn::TxnStatus::Ongoing {
        return Err(NodeError::new(
            ErrorKind::InvalidTxnState,
            format!("transactional id {transactional_id:?} has no ongoing transaction ({:?})", m.status),
        ));
    }
    match partitions.iter().find(|tp| !m.partitions.contains(tp)) {
        None => Ok(()),
        Some(tp) => Err(NodeError::new(
            ErrorKind::InvalidTxnState,
            format!("{tp} was not added to the ongoing transaction of {transactional_id:?}"),
        )),
    }
}

/// A coordinator's answer to a join that may succeed when retried (the coordinator
/// moving, loading or finishing the last transaction) as `kind`, saying that `what`
/// could not join yet; any other error as it is.
#[must_use]
pub fn join_retriable_as(e: NodeError, kind: ErrorKind, what: &str) -> NodeError {
    match e.kind {
        ErrorKind::CoordinatorLoadInProgress
        | ErrorKind::CoordinatorNotAvailable
        | ErrorKind::NotCoordinator
        | ErrorKind::ConcurrentTransactions
        | ErrorKind::LeaderNotAvailable => {
            NodeError::new(kind, format!("{what} could not join the transaction yet ({}); retry", e.message))
        }
        _ => e,
    }
}

/// A coordinator's answer to a produce's join or verification as the produce answers it:
/// the retriable ones become NOT_ENOUGH_REPLICAS, as Kafka maps them (a producer retries
/// that, where it would give up on the coordinator's own errors, which it never expects
/// from a produce).
#[must_use]
pub fn as_produce_error(e: NodeError) -> NodeError {
    join_retriable_as(e, ErrorKind::NotEnoughReplicas, "the partition")
}

/// KIP-890 part 1 for a Kafka transactional produce to a partition this shard leads:
/// when the request's transactional batch would open its producer's transaction here,
/// the coordinator of `transactional_id` must confirm the partition is in that
/// producer's ongoing transaction. The guard is taken before asking, and the log checks
/// it again as it appends (`TxnGuard`): a produce that arrives after its transaction
/// ended is refused with INVALID_TXN_STATE instead of opening a transaction no marker
/// will close. `None` when the batches are not transactional. Kafka's clients send one
/// batch per partition per request, so the first batch decides.
pub async fn guard(
    shard: &Rc<Shard>,
    log: &PartitionLog,
    transactional_id: &str,
    tp: &TopicPartition,
    batches: &[u8],
) -> Result<Option<TxnGuard>, NodeError> {
    let Ok(header) = BatchHeader::view(batches) else { return Ok(None) };
    let attributes = header.attributes();
    if !attributes.is_transactional() || attributes.is_control() {
        return Ok(None);
    }
    let (producer_id, epoch) = (header.producer_id.get(), header.producer_epoch.get());
    let guard = log.txn_guard(producer_id);
    if guard.open {
        return Ok(Some(guard));
    }
    join_transaction(shard, transactional_id, producer_id, epoch, vec![tp.clone()], Join::Verify)
        .await
        .map_err(as_produce_error)?;
    Ok(Some(TxnGuard { verified: true, ..guard }))
}

/// How a partition reaches a producer's transaction at its coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// It joins (transactions v2's implicit AddPartitionsToTxn, KIP-890 part 2).
    Add,
    /// The coordinator only confirms that it was added (KIP-890 part 1's verification of
    /// a transactions v1 producer's first batch to a partition).
    Verify,
}

/// `partitions` join producer `producer_id`'s transaction at `transactional_id`'s
/// coordinator, or are verified to be in it (`Join`), on this node or, with Kafka's
/// inter-broker AddPartitionsToTxn (v5), on the node that leads the id's state partition.
pub async fn join_transaction(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<TopicPartition>,
    join: Join,
) -> Result<(), NodeError> {
    let state = txn_partition(transactional_id);
    let Some(coordinator) = shard.placement(TXN_TOPIC, state).leader else {
        return Err(NodeError::new(
            ErrorKind::CoordinatorNotAvailable,
            format!("{TXN_TOPIC}-{state}, which coordinates transactional id {transactional_id:?}, has no leader now"),
        ));
    };
    if coordinator == shard.node_id() {
        if join == Join::Verify {
            return verify_here(shard, transactional_id, producer_id, epoch, &partitions).await;
        }
        let request = TxnRequest::AddPartitions {
            transactional_id: transactional_id.to_string(),
            producer_id,
            epoch,
            partitions,
        };
        return txn_done(shard, request).await;
    }
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for tp in &partitions {
        let index = i32::try_from(tp.partition).unwrap_or(-1);
        match topics.last_mut() {
            Some(t) if *t.name.0 == *tp.topic => t.partitions.push(index),
            _ => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![index]),
            ),
        }
    }
    let transaction = AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(transactional_id.to_string())))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_verify_only(join == Join::Verify)
        .with_topics(topics);
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![transaction]);
    let unreachable = |e: String| {
        NodeError::new(
            ErrorKind::CoordinatorNotAvailable,
            format!("the coordinator of {transactional_id:?}, node {}: {e}", coordinator.0),
        )
    };
    let response: AddPartitionsToTxnResponse =
        call(shard, coordinator, ApiKey::AddPartitionsToTxn, JOIN_VERSION, &request).await.map_err(unreachable)?;
    let codes = response
        .results_by_transaction
        .iter()
        .flat_map(|t| t.topic_results.iter())
        .flat_map(|t| t.results_by_partition.iter())
        .map(|p| p.partition_error_code);
    match codes.chain(std::iter::once(response.error_code)).find(|c| *c != 0) {
        None => Ok(()),
        Some(code) => Err(NodeError::new(
            crate::errors::kind_of_code(code),
            format!(
                "the coordinator of {transactional_id:?} (node {}) refused the partitions with error {code}",
                coordinator.0
            ),
        )),
    }
}

/// The AddPartitionsToTxn version a partition leader sends its coordinator (v5: the
/// batched, inter-broker form of KIP-890).
const JOIN_VERSION: i16 = 5;

/// How long a marker sent to another node may take, connection included.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);
/// The WriteTxnMarkers version sent (v1: flexible, Kafka 2.8+).
const MARKERS_VERSION: i16 = 1;

/// A transaction's marker: whose transaction (producer id and epoch), how it ended, and
/// the coordinator's epoch that decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Writes `marker` to `tp` through its leader.
pub async fn write_marker(shard: &Rc<Shard>, tp: &TopicPartition, marker: Marker) -> Result<(), NodeError> {
    shard.check_partition(&tp.topic, tp.partition)?;
    let leader = shard.placement(&tp.topic, tp.partition).leader;
    let Some(leader) = leader else {
        return Err(NodeError::new(ErrorKind::LeaderNotAvailable, format!("{tp} has no leader now")));
    };
    if leader == shard.node_id() {
        return write_marker_here(shard, tp, marker).await;
    }
    send_marker(shard, leader, tp, marker).await
}

/// Writes a marker to a partition this node leads, on the shard that owns it.
pub async fn write_marker_here(shard: &Rc<Shard>, tp: &TopicPartition, marker: Marker) -> Result<(), NodeError> {
    shard.check_partition(&tp.topic, tp.partition)?;
    let request = ShardRequest::WriteMarker { topic: tp.topic.clone(), partition: tp.partition, marker };
    match shard.call(shard.owner(&tp.topic, tp.partition), request).await {
        ShardReply::Done => Ok(()),
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected marker reply {other:?}"))),
    }
}

/// Sends one marker to node `leader` (WriteTxnMarkers, over the cluster link) and reads
/// its answer.
async fn send_marker(shard: &Rc<Shard>, leader: NodeId, tp: &TopicPartition, marker: Marker) -> Result<(), NodeError> {
    let topic = WritableTxnMarkerTopic::default()
        .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
        .with_partition_indexes(vec![i32::try_from(tp.partition).unwrap_or(-1)]);
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(marker.producer_id))
        .with_producer_epoch(marker.epoch)
        .with_transaction_result(marker.commit)
        .with_coordinator_epoch(marker.coordinator_epoch)
        .with_topics(vec![topic]);
    let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
    let unreachable =
        |e: String| NodeError::new(ErrorKind::LeaderNotAvailable, format!("{tp}: node {}: {e}", leader.0));
    let response: WriteTxnMarkersResponse =
        call(shard, leader, ApiKey::WriteTxnMarkers, MARKERS_VERSION, &request).await.map_err(unreachable)?;
    let code = response
        .markers
        .iter()
        .flat_map(|m| m.topics.iter())
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.error_code)
        .find(|c| *c != 0);
    match code {
        None => Ok(()),
        Some(code) => Err(NodeError::new(
            crate::errors::kind_of_code(code),
            format!("{tp}: node {} refused the transaction marker with error {code}", leader.0),
        )),
    }
}

/// One Kafka request to node `to`, over the cluster link (`shard::kafka_calls`: the Kafka
/// listener may need TLS and a login); the decoded response.
async fn call<R: Decodable>(
    shard: &Rc<Shard>,
    to: NodeId,
    key: ApiKey,
    version: i16,
    body: &impl Encodable,
) -> Result<R, String> {
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("sluice-txn-coordinator")))
        .encode(&mut frame, key.request_header_version(version))
        .map_err(|e| e.to_string())?;
    body.encode(&mut frame, version).map_err(|e| e.to_string())?;
    let answer = shard.kafka_call(to, &frame, REMOTE_TIMEOUT).await?;
    let mut body = Bytes::from(answer);
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version)).map_err(|e| e.to_string())?;
    if header.correlation_id != 1 {
        return Err(format!("response to correlation id {}", header.correlation_id));
    }
    let response = R::decode(&mut body, version).map_err(|e| e.to_string())?;
    if body.has_remaining() {
        return Err(format!("{} bytes after the {key:?} response", body.remaining()));
    }
    Ok(response)
}
