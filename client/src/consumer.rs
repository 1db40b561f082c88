//! The consumer: assigned partitions, positions, seek, and `poll` returning records.
//!
//! `poll` fetches every assigned partition from its position, decodes the batches
//! (decompressing them), skips records before the position (a batch can start earlier),
//! and moves the positions past what it returns. As soon as a fetch's answer arrives, the
//! next fetch's requests are written (from the positions past its batches), before the
//! batches are checked and decoded, so the node reads and sends the next ones while this
//! consumer and the application work (fetch pipelining; Kafka's consumer and librdkafka
//! prefetch too). A partition with no position gets one from
//! `auto.offset.reset`; `none` makes `poll` fail with `NoOffset`, as in Kafka.
//! Group subscription comes with consumer groups.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use sluice_schemas::batch::{check_batch, BatchWalker, TimestampType};

use crate::error::{ClientError, ErrorCode, Result};
pub use crate::protocol::IsolationLevel;
use crate::protocol::{self, FetchLimits, FetchPartition, FetchedData, FetchedPartition};
use crate::router::{stale_metadata, Router};
use crate::security::Security;

/// What to do when a partition has no valid position (auto.offset.reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// `poll` fails with `NoOffset`.
    None,
}

impl OffsetReset {
    pub fn parse(s: &str) -> Result<OffsetReset> {
        match s {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            "none" => Ok(OffsetReset::None),
            _ => Err(ClientError::Config(format!("auto.offset.reset = {s:?}: must be earliest, latest or none"))),
        }
    }
}

/// Consumer settings, named and defaulted as Kafka's Java consumer.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    pub auto_offset_reset: OffsetReset,
    pub fetch_min_bytes: u32,
    pub fetch_max_wait_ms: u32,
    pub fetch_max_bytes: u32,
    pub max_partition_fetch_bytes: u32,
    pub request_timeout_ms: u64,
    /// Check each batch's CRC before decoding it (check.crcs).
    pub check_crcs: bool,
    /// Largest decompressed records section accepted from one batch.
    pub decompressed_batch_bytes_max: usize,
    /// isolation.level: read_committed reads only below the last stable offset and skips
    /// aborted transactions' records (Kafka's default, as here, is read_uncommitted).
    pub isolation_level: IsolationLevel,
    /// security.protocol and its TLS and SASL settings, for every connection (a group
    /// consumer's coordinator connections too).
    pub security: Security,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            bootstrap_servers: vec!["127.0.0.1:9292".to_string()],
            client_id: "sluice-consumer".to_string(),
            auto_offset_reset: OffsetReset::Latest,
            fetch_min_bytes: 1,
            fetch_max_wait_ms: 500,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            request_timeout_ms: 30_000,
            check_crcs: true,
            decompressed_batch_bytes_max: 64 << 20,
            isolation_level: IsolationLevel::ReadUncommitted,
            security: Security::default(),
        }
    }
}

/// A consumed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Where `seek` moves a partition's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekTo {
    Offset(u64),
    Beginning,
    End,
    /// The first record with a timestamp at or after this (ms since the epoch); the end
    /// when there is none.
    Timestamp(i64),
}

type Tp = (String, u32);

type FetchFuture = Pin<Box<dyn Future<Output = Result<Vec<FetchedPartition>>> + Send>>;

struct Prefetch {
    /// The positions the fetch was sent with: its result is used only if they still hold.
    positions: HashMap<Tp, u64>,
    /// Its requests are already written (`start_fetch_from`); this waits for the answers.
    /// (In a mutex only so that a `Consumer` is `Sync`; reached through `get_mut`.)
    task: tokio::sync::Mutex<FetchFuture>,
}

/// A consumer of assigned partitions.
pub struct Consumer {
    config: ConsumerConfig,
    router: Arc<Router>,
    assignment: Vec<Tp>,
    positions: HashMap<Tp, u64>,
    prefetch: Option<Prefetch>,
    buffered: VecDeque<ConsumerRecord>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Consumer({:?})", self.assignment)
    }
}

impl Consumer {
    pub async fn new(config: ConsumerConfig) -> Result<Consumer> {
        let router = Router::new(
            &config.bootstrap_servers,
            &config.client_id,
            4,
            Duration::from_millis(config.request_timeout_ms),
            Duration::ZERO,
            Arc::new(config.security.clone()),
        );
        router.any().await?;
        Ok(Consumer {
            config,
            router: Arc::new(router),
            assignment: Vec::new(),
            positions: HashMap::new(),
            prefetch: None,
            buffered: VecDeque::new(),
        })
    }

    /// Consumes exactly these partitions from now on (positions of partitions kept in the
    /// assignment are kept).
    pub fn assign(&mut self, partitions: Vec<(String, u32)>) {
        self.positions.retain(|tp, _| partitions.contains(tp));
        self.buffered.retain(|r| partitions.contains(&(r.topic.clone(), r.partition)));
        self.assignment = partitions;
        self.prefetch = None;
    }

    #[must_use]
    pub fn assignment(&self) -> &[(String, u32)] {
        &self.assignment
    }

    /// The offset of the next record `poll` returns for a partition.
    #[must_use]
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        let tp = (topic.to_string(), partition);
        self.buffered
            .iter()
            .find(|r| r.topic == topic && r.partition == partition)
            .map(|r| r.offset)
            .or_else(|| self.positions.get(&tp).copied())
    }

    /// Moves a partition's position.
    pub async fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<u64> {
        let query = match to {
            SeekTo::Offset(o) => {
                self.set_position(topic, partition, o);
                return Ok(o);
            }
            SeekTo::Beginning => protocol::EARLIEST,
            SeekTo::End => protocol::LATEST,
            SeekTo::Timestamp(t) => t,
        };
        let offset = match self.list_offset(topic, partition, query).await? {
            Some(o) => o,
            None => self.list_offset(topic, partition, protocol::LATEST).await?.unwrap_or(0),
        };
        self.set_position(topic, partition, offset);
        Ok(offset)
    }

    fn set_position(&mut self, topic: &str, partition: u32, offset: u64) {
        self.positions.insert((topic.to_string(), partition), offset);
        self.buffered.retain(|r| !(r.topic == topic && r.partition == partition));
        self.prefetch = None;
    }

    async fn list_offset(&self, topic: &str, partition: u32, query: i64) -> Result<Option<u64>> {
        if self.router.leader(topic, partition).is_none() {
            self.router.refresh(topic).await?;
        }
        let conn = self.router.to_node(self.router.leader(topic, partition)).await?;
        let results = match protocol::list_offsets(&conn, &[(topic.to_string(), partition, query)]).await {
            Err(e) if stale_metadata(&e) => {
                self.router.refresh(topic).await?;
                let conn = self.router.to_node(self.router.leader(topic, partition)).await?;
                protocol::list_offsets(&conn, &[(topic.to_string(), partition, query)]).await?
            }
            other => other?,
        };
        results
            .into_iter()
            .next()
            .map_or_else(|| Err(ClientError::Protocol("empty ListOffsets response".into())), |r| r.2)
    }

    async fn reset(&mut self, topic: &str, partition: u32) -> Result<()> {
        let query = match self.config.auto_offset_reset {
            OffsetReset::Earliest => protocol::EARLIEST,
            OffsetReset::Latest => protocol::LATEST,
            OffsetReset::None => return Err(ClientError::NoOffset { topic: topic.to_string(), partition }),
        };
        let offset = self.list_offset(topic, partition, query).await?.unwrap_or(0);
        self.positions.insert((topic.to_string(), partition), offset);
        Ok(())
    }

    /// Sends the next fetch from the current positions, unless one from them is in flight.
    async fn start_fetch(&mut self) {
        if self.prefetch.as_ref().is_some_and(|p| p.positions == self.positions) {
            return;
        }
        self.start_fetch_from(self.positions.clone()).await;
    }

    /// Sends a fetch from `positions` (those of assigned partitions); its result is used
    /// if the consumer's positions are these when it arrives.
    async fn start_fetch_from(&mut self, positions: HashMap<Tp, u64>) {
        let parts: Vec<FetchPartition> = self
            .assignment
            .iter()
            .filter_map(|tp| {
                positions.get(tp).map(|&offset| FetchPartition {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset,
                    max_bytes: self.config.max_partition_fetch_bytes,
                })
            })
            .collect();
        if parts.is_empty() {
            return;
        }
        let limits = FetchLimits {
            max_wait_ms: self.config.fetch_max_wait_ms,
            min_bytes: self.config.fetch_min_bytes,
            max_bytes: self.config.fetch_max_bytes,
        };
        let router = self.router.clone();
        let isolation = self.config.isolation_level;
        let mut task: FetchFuture =
            Box::pin(async move { fetch_from_leaders(&router, limits, isolation, parts).await });
        // Polled once here, the requests are written now, not when this consumer next
        // waits (a spawned task would not run before then on a runtime with one worker).
        if let Poll::Ready(done) = std::future::poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx))).await {
            task = Box::pin(std::future::ready(done));
        }
        self.prefetch = Some(Prefetch { positions, task: tokio::sync::Mutex::new(task) });
    }

    /// Returns records from the assigned partitions, waiting up to `timeout` for some.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.buffered.is_empty() {
                let records = Vec::from(std::mem::take(&mut self.buffered));
                self.start_fetch().await;
                return Ok(records);
            }
            let missing: Vec<Tp> =
                self.assignment.iter().filter(|tp| !self.positions.contains_key(*tp)).cloned().collect();
            for (topic, partition) in missing {
                self.reset(&topic, partition).await?;
            }
            if self.assignment.is_empty() {
                tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
                return Ok(Vec::new());
            }
            let prefetch = match self.prefetch.take() {
                Some(p) if p.positions == self.positions => p,
                _ => {
                    self.start_fetch_from(self.positions.clone()).await;
                    match self.prefetch.take() {
                        Some(p) => p,
                        None => return Ok(Vec::new()),
                    }
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut task = prefetch.task;
            let fetched = match tokio::time::timeout(remaining, task.get_mut()).await {
                Ok(fetched) => fetched?,
                Err(_) => {
                    // Keep the fetch for the next poll.
                    self.prefetch = Some(Prefetch { positions: prefetch.positions, task });
                    return Ok(Vec::new());
                }
            };
            // The next fetch leaves before these batches are checked and decoded, so the
            // node reads and sends while this consumer works (Kafka's consumer and
            // librdkafka prefetch too). It is used only if the positions it assumed hold.
            if let Some(next) = self.positions_after(&fetched) {
                self.start_fetch_from(next).await;
            }
            self.absorb(fetched).await?;
            if self.buffered.is_empty() && Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// The positions once `fetched` is absorbed without an error; `None` if a partition
    /// failed (its position depends on what handling the error finds).
    fn positions_after(&self, fetched: &[FetchedPartition]) -> Option<HashMap<Tp, u64>> {
        let mut positions = self.positions.clone();
        for part in fetched {
            let data = part.result.as_ref().ok()?;
            if let Some(position) = positions.get_mut(&(part.topic.clone(), part.partition)) {
                *position = position_after(*position, data);
            }
        }
        Some(positions)
    }

    /// Decodes a fetch's batches into the buffer and advances positions.
    async fn absorb(&mut self, fetched: Vec<FetchedPartition>) -> Result<()> {
        for part in fetched {
            let tp = (part.topic.clone(), part.partition);
            let Some(&position) = self.positions.get(&tp) else { continue };
            let data = match part.result {
                Ok(d) => d,
                Err(e) if crate::protocol::error_code(&e) == Some(ErrorCode(1)) => {
                    // Offset out of range: reset by policy (none is an error).
                    self.positions.remove(&tp);
                    self.reset(&part.topic, part.partition).await?;
                    continue;
                }
                Err(e) if e.is_retriable() => {
                    if stale_metadata(&e) {
                        let _ = self.router.refresh(&part.topic).await;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A partition's records are kept only if all of its batches decode: its
            // position stays put on an error, so keeping some would deliver them twice.
            let kept = self.buffered.len();
            if let Err(e) = self.decode_partition(&part.topic, part.partition, position, &data) {
                self.buffered.truncate(kept);
                return Err(ClientError::Codec(format!("{}-{}: {e}", part.topic, part.partition)));
            }
            self.positions.insert(tp, position_after(position, &data));
        }
        Ok(())
    }

    /// Appends the records of a partition's fetched batches at or after `position` to the
    /// buffer, skipping aborted transactions' batches.
    fn decode_partition(
        &mut self,
        topic: &str,
        partition: u32,
        position: u64,
        data: &FetchedData,
    ) -> std::result::Result<(), String> {
        let mut aborted = AbortedFilter::new(self.config.isolation_level, &data.aborted);
        for batch in BatchWalker::new(data.records()) {
            let Ok((_, header, bytes)) = batch else { break };
            if self.config.check_crcs {
                check_batch(bytes).map_err(|e| e.to_string())?;
            }
            if aborted.skips(header, bytes) {
                continue;
            }
            let limit = self.config.decompressed_batch_bytes_max;
            decode_batch(bytes, limit, (topic, partition), position, &mut self.buffered)?;
        }
        Ok(())
    }
}

/// A partition's position after its fetched batches: past the last whole batch (control
/// batches, aborted transactions' batches and compaction gaps included), never back.
fn position_after(position: u64, data: &FetchedData) -> u64 {
    BatchWalker::new(data.records())
        .map_while(std::result::Result::ok)
        .fold(position, |next, (_, header, _)| next.max(header.next_offset().0))
}

/// A read-committed reader's skipping of aborted transactions (Kafka's consumer does
/// the same): a producer's transactional batches are skipped from the first offset of
/// one of its aborted transactions that the fetch named, up to that transaction's abort
/// marker.
struct AbortedFilter {
    /// Aborted transactions not reached yet, by first offset (the last one first).
    pending: Vec<(u64, i64)>,
    /// Producers whose aborted transaction the reader is inside.
    aborting: std::collections::HashSet<i64>,
}

impl AbortedFilter {
    fn new(isolation: IsolationLevel, aborted: &[(i64, u64)]) -> AbortedFilter {
        let mut pending: Vec<(u64, i64)> = match isolation {
            IsolationLevel::ReadCommitted => aborted.iter().map(|(pid, first)| (*first, *pid)).collect(),
            IsolationLevel::ReadUncommitted => Vec::new(),
        };
        pending.sort_unstable_by(|a, b| b.cmp(a));
        AbortedFilter { pending, aborting: std::collections::HashSet::new() }
    }

    /// Whether the batch's records are to be skipped (control batches have none anyway).
    fn skips(&mut self, header: &sluice_schemas::batch::BatchHeader, bytes: &[u8]) -> bool {
        while self.pending.last().is_some_and(|(first, _)| *first <= header.last_offset().0) {
            if let Some((_, pid)) = self.pending.pop() {
                self.aborting.insert(pid);
            }
        }
        let attributes = header.attributes();
        if !attributes.is_transactional() {
            return false;
        }
        let pid = header.producer_id.get();
        if attributes.is_control() {
            if sluice_schemas::control::control_type(bytes) == Some(sluice_schemas::control::ControlType::Abort) {
                self.aborting.remove(&pid);
            }
            return true;
        }
        self.aborting.contains(&pid)
    }
}

/// Fetches each partition from its leader, one request per leader, concurrently: every
/// request is written before any answer is awaited. A leader that cannot be reached
/// fails only its own partitions.
async fn fetch_from_leaders(
    router: &Arc<Router>,
    limits: FetchLimits,
    isolation: IsolationLevel,
    parts: Vec<FetchPartition>,
) -> Result<Vec<FetchedPartition>> {
    let mut by_leader: HashMap<Option<u32>, Vec<FetchPartition>> = HashMap::new();
    for part in parts {
        if router.leader(&part.topic, part.partition).is_none() {
            let _ = router.refresh(&part.topic).await;
        }
        by_leader.entry(router.leader(&part.topic, part.partition)).or_default().push(part);
    }
    let mut conns = Vec::with_capacity(by_leader.len());
    for (leader, parts) in by_leader {
        conns.push((router.to_node(leader).await, parts));
    }
    let mut sent = Vec::with_capacity(conns.len());
    for (conn, parts) in &conns {
        let request = match conn {
            Ok(conn) => protocol::start_fetch_isolated(conn, limits, parts, isolation).await,
            Err(e) => Err(e.clone()),
        };
        sent.push((request, parts));
    }
    let mut out = Vec::new();
    for (request, parts) in sent {
        let result = match request {
            Ok(pending) => pending.response().await.and_then(|frame| protocol::decode_fetch(Arc::new(frame))),
            Err(e) => Err(e),
        };
        match result {
            Ok(fetched) => out.extend(fetched),
            Err(e) if e.is_retriable() => out.extend(parts.iter().map(|p| FetchedPartition {
                topic: p.topic.clone(),
                partition: p.partition,
                result: Err(e.clone()),
            })),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Appends the records of one batch (decompressed if needed) at or after offset `from`
/// to `out`, as they are decoded. Control batches have none. The batch's CRC is the
/// caller's (checked once, when `check_crcs` says so).
fn decode_batch(
    bytes: &[u8],
    limit: usize,
    (topic, partition): (&str, u32),
    from: u64,
    out: &mut VecDeque<ConsumerRecord>,
) -> std::result::Result<(), String> {
    let header = sluice_schemas::batch::BatchHeader::view(bytes).map_err(|e| e.to_string())?;
    if header.attributes().is_control() {
        return Ok(());
    }
    let timestamp_type = header.attributes().timestamp_type();
    crate::compression::with_records_crc_unchecked(bytes, limit, |records| {
        for r in records {
            let r = r.map_err(|e| e.to_string())?;
            if r.offset.0 < from {
                continue;
            }
            out.push_back(ConsumerRecord {
                topic: topic.to_string(),
                partition,
                offset: r.offset.0,
                timestamp_ms: r.timestamp,
                timestamp_type,
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.map(<[u8]>::to_vec),
                headers: r.headers.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect(),
            });
        }
        Ok(())
    })?
}
