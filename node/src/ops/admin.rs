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

/// A producer id that no other producer of the cluster got or will get (from the node's
/// block, which shard 0 holds).
pub async fn producer_id(shard: &Rc<Shard>) -> Result<i64, NodeError> {
    match shard.call(ShardId(0), ShardRequest::ProducerId).await {
        ShardReply::ProducerId(result) => result,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected producer id reply {other:?}"))),
    }
}
