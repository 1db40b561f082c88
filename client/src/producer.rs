//! The batching producer.
//!
//! `send` picks the record's partition (explicit, murmur2 of the key as Kafka's Java
//! client, or sticky for null keys), reserves its bytes from `buffer.memory` (waiting up
//! to `max.block.ms`), and appends it to that partition's open RecordBatch v2. A batch
//! closes at `batch.size` or after `linger.ms`, is compressed, and waits in its
//! partition's queue. The sender task packs ready batches of many partitions into one
//! produce request (up to `max.request.size`), keeps up to
//! `max.in.flight.requests.per.connection` requests in flight, resolves each record's
//! delivery with its offset, and retries retriable errors after `retry.backoff.ms` until
//! `delivery.timeout.ms`.
//!
//! Guarantee: a partition has at most one batch in flight, so retries never reorder a
//! partition's records.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_schemas::batch::Compression;
use sluice_schemas::records::{BatchBuilder, BatchConfig, RecordHeader};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::error::{ClientError, Result};
use crate::partitioner::{DefaultPartitioner, Partitioner};
use crate::protocol::{self, PartitionBatches};
use crate::router::{stale_metadata, Router};

/// Bytes a batch's header and a record's framing add, for the size estimates that
/// decide when a batch is full (the exact size is the builder's).
const RECORD_OVERHEAD_BYTES: usize = 32;

/// How many replicas must have a record before the node answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// No response: the fastest, and records can be lost without an error.
    None,
    /// After the leader's append.
    Leader,
    /// After every in-sync replica has it (Kafka's default).
    All,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    /// Parses `0`, `1`, `all` or `-1`.
    pub fn parse(s: &str) -> Result<Acks> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            _ => Err(ClientError::Config(format!("acks = {s:?}: must be 0, 1 or all"))),
        }
    }
}

/// Producer settings, named and defaulted as Kafka's Java producer (4.x).
#[derive(Clone)]
pub struct ProducerConfig {
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    pub acks: Acks,
    /// Close a partition's batch at this many bytes (batch.size).
    pub batch_size: usize,
    /// Wait this long for a batch to fill (linger.ms).
    pub linger_ms: u64,
    /// Bytes of records buffered and not yet acknowledged (buffer.memory).
    pub buffer_memory: usize,
    /// How long `send` waits for buffer memory or metadata (max.block.ms).
    pub max_block_ms: u64,
    pub max_in_flight_requests_per_connection: usize,
    pub retries: u32,
    pub retry_backoff_ms: u64,
    /// The time from `send` to success or failure, retries included (delivery.timeout.ms).
    pub delivery_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub compression: Compression,
    /// The largest produce request, and so the largest record (max.request.size).
    pub max_request_size: usize,
    pub metadata_max_age_ms: u64,
    pub partitioner: Arc<dyn Partitioner>,
}

impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("acks", &self.acks)
            .field("batch_size", &self.batch_size)
            .field("linger_ms", &self.linger_ms)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            bootstrap_servers: vec!["127.0.0.1:9292".to_string()],
            client_id: "sluice-producer".to_string(),
            acks: Acks::All,
            batch_size: 16_384,
            linger_ms: 5,
            buffer_memory: 32 << 20,
            max_block_ms: 60_000,
            max_in_flight_requests_per_connection: 5,
            retries: i32::MAX as u32,
            retry_backoff_ms: 100,
            delivery_timeout_ms: 120_000,
            request_timeout_ms: 30_000,
            compression: Compression::None,
            max_request_size: 1_048_576,
            metadata_max_age_ms: 300_000,
            partitioner: Arc::new(DefaultPartitioner::default()),
        }
    }
}

impl ProducerConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ClientError::Config(m));
        if self.bootstrap_servers.is_empty() {
            return bad("bootstrap.servers is empty".into());
        }
        if self.batch_size == 0 || self.batch_size > self.max_request_size {
            return bad(format!(
                "batch.size = {} must be from 1 to max.request.size = {}",
                self.batch_size, self.max_request_size
            ));
        }
        if self.buffer_memory < self.max_request_size {
            return bad(format!(
                "buffer.memory = {} must be at least max.request.size = {}",
                self.buffer_memory, self.max_request_size
            ));
        }
        if self.max_in_flight_requests_per_connection == 0 {
            return bad("max.in.flight.requests.per.connection must be at least 1".into());
        }
        if self.delivery_timeout_ms < self.linger_ms + self.request_timeout_ms {
            return bad(format!(
                "delivery.timeout.ms = {} must be at least linger.ms + request.timeout.ms = {}",
                self.delivery_timeout_ms,
                self.linger_ms + self.request_timeout_ms
            ));
        }
        Ok(())
    }
}

/// A record to send.
#[derive(Clone, Debug, Default)]
pub struct ProducerRecord {
    pub topic: String,
    /// `None`: the partitioner chooses.
    pub partition: Option<u32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// CreateTime in ms since the epoch; `None`: now.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value only.
    pub fn new(topic: impl Into<String>, value: impl Into<Vec<u8>>) -> ProducerRecord {
        ProducerRecord { topic: topic.into(), value: Some(value.into()), ..ProducerRecord::default() }
    }

    #[must_use]
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> ProducerRecord {
        self.key = Some(key.into());
        self
    }

    #[must_use]
    pub fn partition(mut self, partition: u32) -> ProducerRecord {
        self.partition = Some(partition);
        self
    }

    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> ProducerRecord {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    #[must_use]
    pub fn timestamp(mut self, timestamp_ms: i64) -> ProducerRecord {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    fn size_estimate(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 8).sum();
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + headers
            + RECORD_OVERHEAD_BYTES
    }
}

/// Where a record was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: u32,
    /// `None` with acks=0 (the node does not answer).
    pub offset: Option<u64>,
    pub timestamp_ms: i64,
}

/// Resolves to the record's delivery report.
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl std::future::Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

impl DeliveryFuture {
    /// Blocks the calling (non-async) thread until the delivery report arrives.
    pub fn wait(self) -> Result<RecordMetadata> {
        self.rx.blocking_recv().unwrap_or(Err(ClientError::Closed))
    }
}

type Callback = Box<dyn FnOnce(Result<RecordMetadata>) + Send + Sync>;

enum Reply {
    Future(oneshot::Sender<Result<RecordMetadata>>),
    Callback(Callback),
}

struct Slot {
    reply: Reply,
    timestamp_ms: i64,
}

impl Slot {
    fn resolve(self, result: Result<RecordMetadata>) {
        match self.reply {
            Reply::Future(tx) => {
                let _ = tx.send(result);
            }
            Reply::Callback(cb) => cb(result),
        }
    }
}

struct OpenBatch {
    builder: BatchBuilder,
    opened: Instant,
    slots: Vec<Slot>,
    permits: Vec<OwnedSemaphorePermit>,
}

struct ReadyBatch {
    bytes: Vec<u8>,
    slots: Vec<Slot>,
    permits: Vec<OwnedSemaphorePermit>,
    created: Instant,
    attempts: u32,
    not_before: Instant,
    last_error: Option<ClientError>,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
    in_flight: bool,
}

#[derive(Default)]
struct State {
    queues: HashMap<(String, u32), PartitionQueue>,
    /// Records sent and not yet resolved.
    outstanding: usize,
    closed: bool,
}

/// How long a send waits for a topic's metadata that a node does not have yet.
const METADATA_GRACE: Duration = Duration::from_secs(1);

struct Inner {
    config: ProducerConfig,
    router: Router,
    state: Mutex<State>,
    memory: Arc<Semaphore>,
    wake: Notify,
    idle: Notify,
}

/// The batching producer; cheap to clone, usable from many tasks.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Producer({:?})", self.inner.config.bootstrap_servers)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Producer {
    /// Starts a producer (and its sender task on the current tokio runtime).
    pub async fn new(config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let router = Router::new(
            &config.bootstrap_servers,
            &config.client_id,
            config.max_in_flight_requests_per_connection,
            Duration::from_millis(config.request_timeout_ms),
            Duration::from_millis(config.metadata_max_age_ms),
        );
        let inner = Arc::new(Inner {
            memory: Arc::new(Semaphore::new(config.buffer_memory)),
            config,
            router,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            idle: Notify::new(),
        });
        inner.router.any().await?;
        tokio::spawn(sender(inner.clone()));
        Ok(Producer { inner })
    }

    /// Queues a record; resolves once it is buffered (after waiting up to max.block.ms
    /// for buffer memory) to a future of its delivery report.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(record, Reply::Future(tx)).await?;
        Ok(DeliveryFuture { rx })
    }

    /// Queues a record; `callback` gets its delivery report (on the sender task).
    pub async fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordMetadata>) + Send + Sync + 'static,
    ) -> Result<()> {
        self.enqueue(record, Reply::Callback(Box::new(callback))).await
    }

    /// The number of partitions of `topic` (from metadata, refreshed when stale).
    pub async fn partitions_for(&self, topic: &str) -> Result<u32> {
        self.inner.partitions_for(topic).await
    }

    /// Sends every buffered record now and waits for all their delivery reports.
    pub async fn flush(&self) {
        loop {
            let notified = self.inner.idle.notified();
            {
                let mut st = lock(&self.inner.state);
                if st.outstanding == 0 {
                    return;
                }
                close_all_open(&mut st, self.inner.config.compression);
            }
            self.inner.wake.notify_one();
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Flushes, then stops the sender; later sends fail with `Closed`.
    pub async fn close(&self) {
        self.flush().await;
        lock(&self.inner.state).closed = true;
        self.inner.wake.notify_one();
    }

    async fn enqueue(&self, record: ProducerRecord, reply: Reply) -> Result<()> {
        let inner = &self.inner;
        let config = &inner.config;
        if lock(&inner.state).closed {
            return Err(ClientError::Closed);
        }
        let size = record.size_estimate();
        if size > config.max_request_size {
            return Err(ClientError::RecordTooLarge {
                bytes: size,
                limit: config.max_request_size,
                setting: "max.request.size",
            });
        }
        let partitions =
            tokio::time::timeout(Duration::from_millis(config.max_block_ms), inner.partitions_for(&record.topic))
                .await
                .unwrap_or(Err(ClientError::Timeout { address: "metadata".into(), timeout_ms: config.max_block_ms }))?;
        let partition = match record.partition {
            Some(p) if p < partitions => p,
            Some(p) => {
                return Err(ClientError::Server {
                    code: crate::error::ErrorCode(3),
                    message: format!("topic {:?} has {partitions} partitions, not partition {p}", record.topic),
                });
            }
            None => {
                config.partitioner.partition(&record.topic, record.key.as_deref(), record.value.as_deref(), partitions)
            }
        };
        let waited = Instant::now();
        let permit = tokio::time::timeout(
            Duration::from_millis(config.max_block_ms),
            inner.memory.clone().acquire_many_owned(size as u32),
        )
        .await
        .map_err(|_| ClientError::BufferFull { bytes: size, waited_ms: waited.elapsed().as_millis() as u64 })?
        .map_err(|_| ClientError::Closed)?;
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let mut wake = false;
        {
            let mut st = lock(&inner.state);
            if st.closed {
                return Err(ClientError::Closed);
            }
            let queue = st.queues.entry((record.topic.clone(), partition)).or_default();
            let full = queue
                .open
                .as_ref()
                .is_some_and(|b| b.builder.size_bytes() + size > config.batch_size && !b.slots.is_empty());
            if full {
                close_open(queue, config.compression);
                config.partitioner.on_new_batch(&record.topic, partition);
                wake = true;
            }
            let batch = queue.open.get_or_insert_with(|| OpenBatch {
                builder: new_builder(),
                opened: Instant::now(),
                slots: Vec::new(),
                permits: Vec::new(),
            });
            let headers: Vec<RecordHeader<'_>> =
                record.headers.iter().map(|(k, v)| RecordHeader { key: k, value: v.as_deref() }).collect();
            batch
                .builder
                .push(record.key.as_deref(), record.value.as_deref(), &headers, timestamp_ms)
                .map_err(|e| ClientError::Codec(e.to_string()))?;
            batch.slots.push(Slot { reply, timestamp_ms });
            batch.permits.push(permit);
            if batch.builder.size_bytes() >= config.batch_size {
                close_open(queue, config.compression);
                config.partitioner.on_new_batch(&record.topic, partition);
                wake = true;
            }
            st.outstanding += 1;
            if config.linger_ms == 0 {
                wake = true;
            }
        }
        // Even without a full batch: the sender may be sleeping past this batch's linger.
        let _ = wake;
        inner.wake.notify_one();
        Ok(())
    }
}

fn new_builder() -> BatchBuilder {
    match BatchBuilder::new(BatchConfig::default()) {
        Ok(b) => b,
        Err(e) => unreachable!("the default batch config is valid: {e}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Closes a partition's open batch: encodes (and compresses) it into the ready queue.
fn close_open(queue: &mut PartitionQueue, compression: Compression) {
    let Some(open) = queue.open.take() else { return };
    let OpenBatch { builder, opened, slots, permits } = open;
    let encoded = if compression == Compression::None {
        builder.finish()
    } else {
        match crate::compression::compress(compression, builder.records_bytes()) {
            Ok(compressed) => builder.finish_compressed(&compressed, compression),
            Err(e) => {
                warn!("compression failed ({e}); sending the batch uncompressed");
                builder.finish()
            }
        }
    };
    match encoded {
        Ok(bytes) => queue.ready.push_back(ReadyBatch {
            bytes,
            slots,
            permits,
            created: opened,
            attempts: 0,
            not_before: Instant::now(),
            last_error: None,
        }),
        Err(e) => {
            let error = ClientError::Codec(e.to_string());
            for slot in slots {
                slot.resolve(Err(error.clone()));
            }
        }
    }
}

fn close_all_open(st: &mut State, compression: Compression) {
    for queue in st.queues.values_mut() {
        close_open(queue, compression);
    }
}

impl Inner {
    /// The topic's partition count. A node may not know a topic created a moment ago
    /// (in a cluster, metadata reaches nodes as they apply the controller's log): stale
    /// answers are retried for up to `METADATA_GRACE` (or max.block.ms, if shorter).
    async fn partitions_for(&self, topic: &str) -> Result<u32> {
        let grace = METADATA_GRACE.min(Duration::from_millis(self.config.max_block_ms));
        let deadline = Instant::now() + grace;
        loop {
            match self.router.partitions(topic).await {
                Err(e) if stale_metadata(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// Resolves `slots` with offsets from `base_offset` (or fails them).
    fn finish(&self, topic: &str, partition: u32, batch: ReadyBatch, result: Result<Option<u64>>) {
        let count = batch.slots.len();
        for (i, slot) in batch.slots.into_iter().enumerate() {
            let timestamp_ms = slot.timestamp_ms;
            let r = result.clone().map(|base| RecordMetadata {
                topic: topic.to_string(),
                partition,
                offset: base.map(|b| b + i as u64),
                timestamp_ms,
            });
            slot.resolve(r);
        }
        drop(batch.permits);
        let mut st = lock(&self.state);
        st.outstanding = st.outstanding.saturating_sub(count);
        if st.outstanding == 0 {
            self.idle.notify_waiters();
        }
    }
}

/// The sender task.
async fn sender(inner: Arc<Inner>) {
    let linger = Duration::from_millis(inner.config.linger_ms);
    loop {
        let now = Instant::now();
        let mut next_wake = now + Duration::from_millis(200);
        let mut to_send: Vec<(String, u32, ReadyBatch)> = Vec::new();
        let mut expired: Vec<(String, u32, ReadyBatch)> = Vec::new();
        let closed;
        {
            let mut st = lock(&inner.state);
            closed = st.closed;
            let mut bytes = 0usize;
            for ((topic, partition), queue) in &mut st.queues {
                if let Some(open) = &queue.open {
                    let due = open.opened + linger;
                    if due <= now || closed {
                        close_open(queue, inner.config.compression);
                    } else {
                        next_wake = next_wake.min(due);
                    }
                }
                if queue.in_flight {
                    continue;
                }
                let Some(front) = queue.ready.front() else { continue };
                if front.created.elapsed() > Duration::from_millis(inner.config.delivery_timeout_ms) {
                    if let Some(b) = queue.ready.pop_front() {
                        expired.push((topic.clone(), *partition, b));
                    }
                    continue;
                }
                if front.not_before > now {
                    next_wake = next_wake.min(front.not_before);
                    continue;
                }
                if bytes > 0 && bytes + front.bytes.len() > inner.config.max_request_size {
                    continue;
                }
                if let Some(b) = queue.ready.pop_front() {
                    bytes += b.bytes.len();
                    queue.in_flight = true;
                    to_send.push((topic.clone(), *partition, b));
                }
            }
        }
        for (topic, partition, batch) in expired {
            let error = ClientError::DeliveryTimeout {
                timeout_ms: inner.config.delivery_timeout_ms,
                last_error: batch.last_error.clone().map(Box::new),
            };
            inner.finish(&topic, partition, batch, Err(error));
        }
        if !to_send.is_empty() {
            // One request per partition leader; each connection's in-flight limit bounds
            // how many run at once.
            let mut by_leader: HashMap<Option<u32>, Vec<(String, u32, ReadyBatch)>> = HashMap::new();
            for (topic, partition, batch) in to_send {
                let leader = inner.router.leader(&topic, partition);
                by_leader.entry(leader).or_default().push((topic, partition, batch));
            }
            for (leader, batches) in by_leader {
                let inner = inner.clone();
                tokio::spawn(async move { send_request(&inner, leader, batches).await });
            }
            continue;
        }
        if closed && lock(&inner.state).outstanding == 0 {
            return;
        }
        let wait = next_wake.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(wait, inner.wake.notified()).await;
    }
}

async fn send_request(inner: &Arc<Inner>, leader: Option<u32>, batches: Vec<(String, u32, ReadyBatch)>) {
    let acks = inner.config.acks.wire();
    let result = async {
        let conn = inner.router.to_node(leader).await?;
        let parts: Vec<PartitionBatches<'_>> =
            batches.iter().map(|(t, p, b)| PartitionBatches { topic: t, partition: *p, batches: &b.bytes }).collect();
        protocol::produce(&conn, acks, inner.config.request_timeout_ms as u32, &parts).await
    }
    .await;
    let mut retry = Vec::new();
    match result {
        Ok(outcomes) => {
            for (topic, partition, batch) in batches {
                if acks == 0 {
                    inner.finish(&topic, partition, batch, Ok(None));
                    release(inner, &topic, partition);
                    continue;
                }
                let outcome = outcomes
                    .iter()
                    .find(|o| o.topic == topic && o.partition == partition)
                    .map(|o| o.base_offset.clone())
                    .unwrap_or_else(|| Err(ClientError::Protocol(format!("no result for {topic}-{partition}"))));
                match outcome {
                    Ok(base) => {
                        inner.finish(&topic, partition, batch, Ok(Some(base)));
                        release(inner, &topic, partition);
                    }
                    Err(e) => retry.push((topic, partition, batch, e)),
                }
            }
        }
        Err(e) => retry.extend(batches.into_iter().map(|(t, p, b)| (t, p, b, e.clone()))),
    }
    for (topic, partition, mut batch, error) in retry {
        let retriable = error.is_retriable() && batch.attempts < inner.config.retries;
        let in_time = batch.created.elapsed() + Duration::from_millis(inner.config.retry_backoff_ms)
            < Duration::from_millis(inner.config.delivery_timeout_ms);
        if !(retriable && in_time) {
            debug!(%topic, partition, %error, "batch failed");
            // A retriable error that ran out of delivery.timeout.ms is a delivery timeout
            // (as Kafka's TimeoutException), the same error as a batch that expired in its
            // queue, with the error that kept it from being delivered.
            let error = if retriable {
                ClientError::DeliveryTimeout {
                    timeout_ms: inner.config.delivery_timeout_ms,
                    last_error: Some(Box::new(error)),
                }
            } else {
                error
            };
            inner.finish(&topic, partition, batch, Err(error));
            release(inner, &topic, partition);
            continue;
        }
        debug!(%topic, partition, %error, attempt = batch.attempts + 1, "retrying batch");
        if stale_metadata(&error) {
            let _ = inner.router.refresh(&topic).await;
        }
        batch.attempts += 1;
        batch.not_before = Instant::now() + Duration::from_millis(inner.config.retry_backoff_ms);
        batch.last_error = Some(error);
        let mut st = lock(&inner.state);
        if let Some(queue) = st.queues.get_mut(&(topic.clone(), partition)) {
            // Back at the front: the partition's order is kept.
            queue.ready.push_front(batch);
            queue.in_flight = false;
        }
    }
    // The partitions of this request may send their next batches.
    inner.wake.notify_one();
}

fn release(inner: &Arc<Inner>, topic: &str, partition: u32) {
    if let Some(queue) = lock(&inner.state).queues.get_mut(&(topic.to_string(), partition)) {
        queue.in_flight = false;
    }
}

/// A producer of typed keys and values: serializes them (as Kafka's `key.serializer`
/// and `value.serializer`) and sends the bytes through a `Producer`.
pub struct TypedProducer<K: ?Sized, V: ?Sized> {
    producer: Producer,
    key_serializer: Box<dyn crate::serialize::Serializer<K>>,
    value_serializer: Box<dyn crate::serialize::Serializer<V>>,
}

impl<K: ?Sized, V: ?Sized> std::fmt::Debug for TypedProducer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TypedProducer({:?})", self.producer)
    }
}

impl<K: ?Sized, V: ?Sized> TypedProducer<K, V> {
    pub fn new(
        producer: Producer,
        key_serializer: impl crate::serialize::Serializer<K> + 'static,
        value_serializer: impl crate::serialize::Serializer<V> + 'static,
    ) -> TypedProducer<K, V> {
        TypedProducer {
            producer,
            key_serializer: Box::new(key_serializer),
            value_serializer: Box::new(value_serializer),
        }
    }

    /// Serializes and queues a record (`key` `None`: the sticky partitioner chooses).
    pub async fn send(&self, topic: &str, key: Option<&K>, value: &V) -> Result<DeliveryFuture> {
        let serialize_error = |e: crate::serialize::SerializeError| ClientError::Codec(e.to_string());
        let key = key.map(|k| self.key_serializer.serialize(topic, k)).transpose().map_err(serialize_error)?;
        let value = self.value_serializer.serialize(topic, value).map_err(serialize_error)?;
        self.producer
            .send(ProducerRecord { topic: topic.to_string(), key, value: Some(value), ..ProducerRecord::default() })
            .await
    }

    /// The untyped producer underneath (flush, close, records with headers).
    #[must_use]
    pub fn inner(&self) -> &Producer {
        &self.producer
    }
}
