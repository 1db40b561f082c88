//! Produce: appends each partition's batches on the shard that owns it.
//!
//! The batches are checked by the log (CRC, magic, sizes, record count) and refused per
//! partition with an error naming the partition and the reason; the other partitions of
//! the request are not affected. Appends to several partitions run concurrently; acks=1
//! and acks=all answer once the append completed (acks=all once the in-sync replicas have
//! it).

use std::rc::Rc;

use crate::errors::{ErrorKind, NodeError};
use crate::io::LocalFuture;
use crate::shard::{Appended, Shard, ShardReply, ShardRequest};

pub type PartitionOutcome = (u32, Result<Appended, NodeError>);

/// One partition's records of a produce request, from either protocol.
pub struct ProducePartition<'a> {
    pub partition: u32,
    /// The batches, or why the request's framing of them was refused.
    pub records: Result<&'a [u8], NodeError>,
}

/// Per topic, in request order: each partition's append.
pub type ProduceResults = Vec<(String, Vec<PartitionOutcome>)>;

/// Appends each partition's batches on the shard that owns it, concurrently, and returns
/// each partition's outcome. Both protocols' Produce handlers call this; they only
/// decode requests and encode responses. `verify`: the transactional id whose
/// coordinator confirms a transactional batch that opens its producer's transaction on a
/// partition (a Kafka transactions v1 produce, KIP-890 part 1: `ops::txn::guard`).
pub async fn append_all(
    shard: &Rc<Shard>,
    acks: i16,
    verify: Option<&str>,
    request: Vec<(String, Vec<ProducePartition<'_>>)>,
) -> ProduceResults {
    let mut topics: Vec<(String, Vec<LocalFuture<'_, PartitionOutcome>>)> = Vec::new();
    for (name, partitions) in request {
        let mut parts: Vec<LocalFuture<'_, PartitionOutcome>> = Vec::new();
        for ProducePartition { partition, records } in partitions {
            let name = name.clone();
            parts.push(Box::pin(async move {
                (partition, append_one(shard, acks, verify, &name, partition, records).await)
            }));
        }
        topics.push((name, parts));
    }
    let mut results = Vec::with_capacity(topics.len());
    for (name, parts) in topics {
        results.push((name, crate::io::join_all(parts).await));
    }
    results
}

async fn append_one(
    shard: &Rc<Shard>,
    acks: i16,
    verify: Option<&str>,
    name: &str,
    partition: u32,
    records: Result<&[u8], NodeError>,
) -> Result<Appended, NodeError> {
    if !matches!(acks, -1..=1) {
        return Err(NodeError::new(ErrorKind::InvalidRequiredAcks, format!("acks {acks} is not 0, 1 or -1 (all)")));
    }
    let records = records?;
    shard.check_partition(name, partition)?;
    if crate::topics::is_internal(name) {
        return Err(NodeError::new(
            ErrorKind::InvalidTopic,
            format!("{name} is an internal topic; only its coordinator writes to it"),
        ));
    }
    let owner = shard.owner(name, partition);
    if owner == shard.id {
        return shard.append_local(name, partition, records, acks, verify).await;
    }
    let request = ShardRequest::Append {
        topic: name.to_string(),
        partition,
        batches: records.to_vec(),
        acks,
        verify: verify.map(str::to_string),
    };
    match shard.call(owner, request).await {
        ShardReply::Appended(r) => r,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reply {other:?}"))),
    }
}
