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
        _ => Ok((producer_id(shard).await?, 0)),
    }
}

/// A producer id that no other producer of the cluster got or will get (from the node's
/// block, which shard 0 holds).
async fn producer_id(shard: &Rc<Shard>) -> Result<i64, NodeError> {
    match shard.call(ShardId(0), ShardRequest::ProducerId).await {
        ShardReply::ProducerId(result) => result,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected producer id reply {other:?}"))),
    }
}
