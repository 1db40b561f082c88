//! DeleteRecords: moves a partition's log start forward on the shard that owns it
//! (Kafka's DeleteRecords; what `kafka-delete-records` does).

use std::rc::Rc;

use sluice_schemas::Offset;

use crate::errors::{ErrorKind, NodeError};
use crate::shard::{Shard, ShardReply, ShardRequest};

/// Moves one partition's log start to `offset` (-1: the log end) on the shard that owns
/// it and returns the new log start. Both protocols' DeleteRecords call this.
pub async fn delete_records(shard: &Rc<Shard>, topic: &str, partition: u32, offset: i64) -> Result<Offset, NodeError> {
    shard.check_partition(topic, partition)?;
    let request = ShardRequest::DeleteRecords { topic: topic.to_string(), partition, offset };
    match shard.call(shard.owner(topic, partition), request).await {
        ShardReply::LowWatermark(r) => r,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reply {other:?}"))),
    }
}
