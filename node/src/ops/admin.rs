//! Admin requests (topics: create, delete, add partitions, alter configs): each runs on
//! shard 0, which makes them controller commands (`shard::cluster`).

use std::rc::Rc;

use crate::errors::{ErrorKind, NodeError};
use crate::shard::{AdminRequest, Shard, ShardId, ShardReply, ShardRequest};

/// Runs an admin request on shard 0 and returns its per-topic results.
pub async fn run_admin(shard: &Rc<Shard>, request: AdminRequest) -> Vec<(String, Result<(), NodeError>)> {
    let names = request.topic_names();
    match shard.call(ShardId(0), ShardRequest::Admin(request)).await {
        ShardReply::Admin(result) => result.results,
        ShardReply::Failed(e) => names.into_iter().map(|n| (n, Err(e.clone()))).collect(),
        other => {
            let e = NodeError::new(ErrorKind::Unknown, format!("unexpected admin reply {other:?}"));
            names.into_iter().map(|n| (n, Err(e.clone()))).collect()
        }
    }
}

/// Starts or cancels partition moves on shard 0 (the controller's); one result per move.
pub async fn run_reassign(
    shard: &Rc<Shard>,
    moves: Vec<crate::shard::reassign::Move>,
    keep_factor: bool,
) -> Vec<Result<(), NodeError>> {
    let count = moves.len();
    if count == 0 {
        return Vec::new();
    }
    match shard.call(ShardId(0), ShardRequest::Reassign { moves, keep_factor }).await {
        ShardReply::Reassigned(results) if results.len() == count => results,
        ShardReply::Failed(e) => vec![Err(e); count],
        other => {
            vec![Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reassignment reply {other:?}"))); count]
        }
    }
}

/// The moves in progress (of these topics' partitions; `None`: all), from shard 0.
pub async fn list_reassignments(
    shard: &Rc<Shard>,
    asked: Option<Vec<(String, Vec<u32>)>>,
) -> Result<Vec<crate::shard::reassign::MoveInProgress>, NodeError> {
    match shard.call(ShardId(0), ShardRequest::ListReassignments(asked)).await {
        ShardReply::Reassignments(found) => found,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reassignments reply {other:?}"))),
    }
}

/// Forgets a node that is down for good, on shard 0 (the controller's).
pub async fn remove_node(shard: &Rc<Shard>, node: u32) -> Result<(), NodeError> {
    match shard.call(ShardId(0), ShardRequest::RemoveNode(node)).await {
        ShardReply::Removed(result) => result,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected node removal reply {other:?}"))),
    }
}

/// Makes node `node` a controller voter (`add`) or takes its vote away, on shard 0 (the
/// controller's).
pub async fn change_voter(shard: &Rc<Shard>, node: u32, add: bool) -> Result<(), NodeError> {
    match shard.call(ShardId(0), ShardRequest::ChangeVoter { node, add }).await {
        ShardReply::VoterChanged(result) => result,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected voter change reply {other:?}"))),
    }
}

/// The controller quorum as this node knows it.
pub async fn describe_quorum(shard: &Rc<Shard>) -> Result<crate::shard::voters::QuorumStatus, NodeError> {
    match shard.call(ShardId(0), ShardRequest::DescribeQuorum).await {
        ShardReply::Quorum(result) => result,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected quorum reply {other:?}"))),
    }
}

/// How long a Metadata request waits for the topics it auto-creates to be served.
const AUTO_CREATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Kafka's topic auto-creation (`--auto-create-topics`): creates the topics (through the
/// controller, on shard 0) and waits, at most `AUTO_CREATE_WAIT`, until this shard's
/// metadata has them with a leader for every partition, so the Metadata answer names
/// their partitions and leaders. A name the controller refuses (an invalid one) stays
/// unknown.
pub async fn auto_create(shard: &Rc<Shard>, names: Vec<String>) {
    if names.is_empty() {
        return;
    }
    let _ = shard.call(ShardId(0), ShardRequest::AutoCreate(names.clone())).await;
    let served = || {
        let metadata = shard.metadata();
        names.iter().all(|n| {
            metadata.topic(n).is_some_and(|t| (0..t.partitions).all(|p| shard.placement(n, p).leader.is_some()))
        })
    };
    let deadline = std::time::Instant::now() + AUTO_CREATE_WAIT;
    while !served() && std::time::Instant::now() < deadline {
        crate::io::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// DescribeProducers: the idempotent producers one partition knows, from its leader
/// (producer id, epoch, last sequence number, last offset).
pub async fn describe_producers(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
) -> Result<Vec<crate::storage::producers::ProducerSummary>, NodeError> {
    shard.check_partition(topic, partition)?;
    let request = ShardRequest::Producers { topic: topic.to_string(), partition };
    match shard.call(shard.owner(topic, partition), request).await {
        ShardReply::Producers(r) => r,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected producers reply {other:?}"))),
    }
}

/// InitProducerId, for both protocols: a new producer (`existing` `None`) gets a producer
/// id no other producer of the cluster got or will get, at epoch 0; a producer that asks
/// again with its id and epoch (KIP-360: after a batch it could not deliver) gets the next
/// epoch, or a new id once its epoch is at the largest.
pub async fn init_producer(shard: &Rc<Shard>, existing: Option<(i64, i16)>) -> Result<(i64, i16), NodeError> {
    match existing {
        Some((id, epoch)) if epoch < i16::MAX => Ok((id, epoch + 1)),
        _ => Ok((new_producer_id(shard).await?, 0)),
    }
}

/// A producer id that no other producer of the cluster got or will get (from the node's
/// block, which shard 0 holds).
pub async fn new_producer_id(shard: &Rc<Shard>) -> Result<i64, NodeError> {
    match shard.call(ShardId(0), ShardRequest::ProducerId).await {
        ShardReply::ProducerId(result) => result,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected producer id reply {other:?}"))),
    }
}
