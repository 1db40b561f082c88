//! Fetch and ListOffsets.
//!
//! Fetch reads every asked partition on the shard that owns it. Partitions this shard
//! owns are served from the log's cache or disk buffers with no copy: the buffers
//! themselves go to the socket. Partitions of other shards come back copied once (across
//! threads), which the shard counts in `fetch_bytes_copied`. When the first pass has less
//! than `min_bytes`, it waits up to `max_wait_ms` for any asked partition to get new data
//! (long polling), then reads again.

use std::rc::Rc;
use std::time::Duration;

use sluice_schemas::Offset;

use crate::cluster::host::Replicas;
use crate::errors::{ErrorKind, NodeError};
use crate::io::LocalFuture;
use crate::listener::Payload;
use crate::shard::{OffsetAndTime, ReadResult, Shard, ShardReply, ShardRequest};

/// The longest a fetch may wait for data, whatever it asks.
pub const FETCH_WAIT_MS_MAX: u32 = 30_000;

/// One partition a fetch asks for, from either protocol.
pub struct Wanted {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub max_bytes: u32,
    /// Kafka's isolation level read_committed: only below the last stable offset.
    pub read_committed: bool,
    /// Where it may be read: the leader only, or any replica (a Kafka consumer fetching
    /// from a follower, KIP-392).
    pub on: Replicas,
}

/// What a fetch got from one partition: whole stored batches.
pub struct Got {
    pub payload: Vec<Payload>,
    pub bytes: u64,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub last_stable_offset: Offset,
    /// The aborted transactions (producer id, first offset) that may have records here
    /// (read_committed only).
    pub aborted: Vec<(i64, Offset)>,
}

/// A fetch's limits.
#[derive(Clone, Copy, Debug)]
pub struct FetchLimits {
    pub min_bytes: u64,
    pub max_wait_ms: u32,
    /// The whole response's record bytes (the first partition with data always fits).
    pub max_bytes: u64,
}

/// Reads every wanted partition, waits for `min_bytes` up to `max_wait_ms` (long
/// polling), and keeps the partitions' data within `max_bytes` in request order (a
/// partition that does not fit gets no data). Both protocols' Fetch handlers call this.
pub async fn fetch_all(shard: &Rc<Shard>, wanted: &[Wanted], limits: FetchLimits) -> Vec<Result<Got, NodeError>> {
    let max_wait = Duration::from_millis(u64::from(limits.max_wait_ms.min(FETCH_WAIT_MS_MAX)));
    let deadline = std::time::Instant::now() + max_wait;
    let mut results = read_all(shard, wanted).await;
    // Until min_bytes arrived or max_wait passed: wait for data past what the last read
    // saw (each partition's log end), then read again.
    loop {
        let total: u64 = results.iter().flatten().map(|g| g.bytes).sum();
        let now = std::time::Instant::now();
        if total >= limits.min_bytes || results.iter().any(Result::is_err) || now >= deadline {
            break;
        }
        let past: Vec<i64> = wanted
            .iter()
            .zip(&results)
            .map(|(w, r)| match r {
                Ok(got) => w.offset.max(got.high_watermark.as_i64()),
                Err(_) => w.offset,
            })
            .collect();
        if !wait_for_any(shard, wanted, &past, deadline - now).await {
            break;
        }
        results = read_all(shard, wanted).await;
    }
    let mut budget = limits.max_bytes;
    let mut first = true;
    for got in results.iter_mut().flatten() {
        if got.bytes == 0 {
            continue;
        }
        if first || got.bytes <= budget {
            first = false;
            budget = budget.saturating_sub(got.bytes);
        } else {
            got.payload.clear();
            got.bytes = 0;
        }
    }
    results
}

/// The offset of `timestamp` (-1 latest, -2 earliest, else the first record at or after
/// it, with its timestamp) in one partition, from the shard that owns it. The latest
/// offset is the last stable offset for `read_committed`.
pub async fn list_offset(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    timestamp: i64,
    read_committed: bool,
) -> Result<Option<OffsetAndTime>, NodeError> {
    shard.check_partition(topic, partition)?;
    let owner = shard.owner(topic, partition);
    if owner == shard.id {
        return shard.list_offset_local(topic, partition, timestamp, read_committed).await;
    }
    let request = ShardRequest::ListOffset { topic: topic.to_string(), partition, timestamp, read_committed };
    match shard.call(owner, request).await {
        ShardReply::Offset(r) => r,
        ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reply {other:?}"))),
    }
}

async fn read_one(shard: &Rc<Shard>, w: &Wanted) -> Result<Got, NodeError> {
    shard.check_partition(&w.topic, w.partition)?;
    let offset = u64::try_from(w.offset)
        .map(Offset)
        .map_err(|_| NodeError::new(ErrorKind::OffsetOutOfRange, format!("fetch offset {} is negative", w.offset)))?;
    let owner = shard.owner(&w.topic, w.partition);
    if owner == shard.id {
        let (chunks, summary) =
            shard.read_local(&w.topic, w.partition, offset, w.max_bytes, w.read_committed, w.on).await?;
        let bytes = chunks.iter().map(|c| c.len() as u64).sum();
        return Ok(Got {
            payload: chunks.into_iter().map(Payload::Shared).collect(),
            bytes,
            high_watermark: summary.high_watermark,
            log_start_offset: summary.log_start_offset,
            last_stable_offset: summary.last_stable_offset,
            aborted: summary.aborted,
        });
    }
    let request = ShardRequest::Read {
        topic: w.topic.clone(),
        partition: w.partition,
        offset,
        max_bytes: w.max_bytes,
        read_committed: w.read_committed,
        on: w.on,
    };
    match shard.call(owner, request).await {
        ShardReply::Read(Ok(ReadResult { bytes, high_watermark, log_start_offset, last_stable_offset, aborted })) => {
            Ok(Got {
                bytes: bytes.len() as u64,
                payload: if bytes.is_empty() { Vec::new() } else { vec![Payload::Owned(bytes)] },
                high_watermark,
                log_start_offset,
                last_stable_offset,
                aborted,
            })
        }
        ShardReply::Read(Err(e)) | ShardReply::Failed(e) => Err(e),
        other => Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reply {other:?}"))),
    }
}

async fn read_all(shard: &Rc<Shard>, wanted: &[Wanted]) -> Vec<Result<Got, NodeError>> {
    let reads: Vec<LocalFuture<'_, Result<Got, NodeError>>> =
        wanted.iter().map(|w| Box::pin(read_one(shard, w)) as LocalFuture<'_, _>).collect();
    crate::io::join_all(reads).await
}

/// Waits until any of the partitions has data at its offset in `past` (true), or for
/// `max_wait` (false).
async fn wait_for_any(shard: &Rc<Shard>, wanted: &[Wanted], past: &[i64], max_wait: Duration) -> bool {
    let max_wait_ms = u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX);
    let waits: Vec<LocalFuture<'_, ()>> = wanted
        .iter()
        .zip(past)
        .filter(|(w, at)| **at >= 0 && shard.check_partition(&w.topic, w.partition).is_ok())
        .map(|(w, at)| {
            let owner = shard.owner(&w.topic, w.partition);
            let offset = Offset(*at as u64);
            let fut: LocalFuture<'_, ()> = if owner == shard.id {
                Box::pin(async move { shard.wait_for_readable(&w.topic, w.partition, offset, w.on).await })
            } else {
                let (topic, partition, on) = (w.topic.clone(), w.partition, w.on);
                let request = ShardRequest::WaitForData { topic, partition, offset, max_wait_ms, on };
                Box::pin(async move {
                    let _ = shard.call(owner, request).await;
                })
            };
            fut
        })
        .collect();
    if waits.is_empty() {
        return false;
    }
    crate::io::timeout(max_wait, crate::io::first_of(waits)).await.is_some()
}
