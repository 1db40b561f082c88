//! The batching producer.
//!
//! `send` picks the record's partition (explicit, murmur2 of the key as Kafka's Java
//! client, or sticky for null keys), reserves its bytes from `buffer.memory` (waiting up
//! to `max.block.ms`), and appends it to that partition's open RecordBatch v2. A batch
//! closes at `batch.size` or after `linger.ms`, is compressed, and waits in its
//! partition's queue. As Kafka's Java producer, the sender task sends to a partition
//! leader only when fewer than `max.in.flight.requests.per.connection` requests are out
//! to it, and then packs the ready batch of every partition it leads (oldest first, up
//! to `max.request.size`) into one produce request: batches wait in their queues, not
//! bound to small requests that wait for a slot of the connection. It resolves each
//! record's delivery with its offset, and retries retriable errors after
//! `retry.backoff.ms` until `delivery.timeout.ms`. Its work per wake-up follows what is
//! ready or due, not the number of partitions.
//!
//! Idempotence (enable.idempotence, on by default with acks=all, as in Kafka): the
//! producer gets a producer id from the cluster at start, and each batch carries it with
//! its epoch and the sequence number of its first record, numbered per partition as the
//! batches close. The node stores a retried batch once (it answers with the offsets the
//! first copy got, through failovers and restarts: producer state is part of its log), so
//! a partition may have up to max.in.flight.requests.per.connection (at most 5) entries in
//! flight, each in its own request and written to the connection in the order they were
//! built, and retries keep the order: an entry that comes back for a retry is put back in
//! sequence order and goes again as it was, and a partition resends retried entries one
//! at a time once nothing of it is in flight. A batch the producer gives up on (a
//! delivery timeout, or an error that is not retriable) leaves a gap in its partition's
//! sequence numbers: the producer then waits for its requests in flight, asks for the
//! next epoch, and numbers the batches not yet sent again from 0 (KIP-360).
//!
//! Guarantee: a partition's records are stored in the order they were sent. A fresh entry
//! takes the partition's following ready batches along (one append on the node, up to
//! the partition's share of max.request.size). Without idempotence a partition has at
//! most one entry in flight, so retries never reorder it; with it, sequence numbers keep
//! the order and each retried entry is stored once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_schemas::batch::{stamp_producer, BatchHeader, Compression};
use sluice_schemas::records::{BatchBuilder, BatchConfig, RecordHeader};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::error::{ClientError, Result};
use crate::partitioner::{DefaultPartitioner, Partitioner};
use crate::protocol::{self, PartitionBatches};
use crate::router::{stale_metadata, Router};
use crate::security::Security;

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
    /// Requests in flight to one broker (max.in.flight.requests.per.connection), and
    /// batches of one partition in flight. As in Kafka's producer: with idempotence the
    /// sequence numbers keep a partition's order through retries; without it, a retried
    /// batch can land after batches sent behind it (set 1 to rule that out).
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
    /// enable.idempotence: applies with acks = all (ignored otherwise); needs
    /// max.in.flight.requests.per.connection of at most 5.
    pub enable_idempotence: bool,
    /// transactional.id: makes the producer transactional (`init_transactions`, then
    /// `begin_transaction` ... `commit_transaction`); needs idempotence and acks = all.
    pub transactional_id: Option<String>,
    /// transaction.timeout.ms: the coordinator aborts a transaction open longer.
    pub transaction_timeout_ms: u64,
    /// security.protocol and its TLS and SASL settings, for every connection.
    pub security: Security,
}

impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("acks", &self.acks)
            .field("batch_size", &self.batch_size)
            .field("linger_ms", &self.linger_ms)
            .field("compression", &self.compression)
            .field("security", &self.security)
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
            enable_idempotence: true,
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            security: Security::default(),
        }
    }
}

/// The most batches of a partition an idempotent producer has in flight (the node
/// recognises a retry of any of a producer's last five batches).
const IDEMPOTENT_IN_FLIGHT_MAX: usize = 5;

impl ProducerConfig {
    /// Whether the producer numbers its batches: enable.idempotence with acks = all.
    fn idempotent(&self) -> bool {
        self.enable_idempotence && self.acks == Acks::All
    }

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
        if self.transactional_id.is_some() && !self.idempotent() {
            return bad("transactional.id needs enable.idempotence and acks = all".into());
        }
        if self.transactional_id.is_some() && !(1..=900_000).contains(&self.transaction_timeout_ms) {
            return bad(format!(
                "transaction.timeout.ms = {} must be from 1 to 900000 (the node's maximum)",
                self.transaction_timeout_ms
            ));
        }
        if self.max_in_flight_requests_per_connection == 0 {
            return bad("max.in.flight.requests.per.connection must be at least 1".into());
        }
        if self.idempotent() && self.max_in_flight_requests_per_connection > IDEMPOTENT_IN_FLIGHT_MAX {
            return bad(format!(
                "max.in.flight.requests.per.connection = {} must be at most {IDEMPOTENT_IN_FLIGHT_MAX} with \
                 enable.idempotence (the node remembers a producer's last 5 batches per partition)",
                self.max_in_flight_requests_per_connection
            ));
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

/// A partition's batch being filled.
struct OpenBatch {
    /// Names the batch in `State::lingering`: an entry whose id is not that of its
    /// partition's open batch is stale (the batch it named was closed full or by a flush).
    id: u64,
    builder: BatchBuilder,
    opened: Instant,
    slots: Vec<Slot>,
    permits: Vec<OwnedSemaphorePermit>,
}

struct ReadyBatch {
    /// One encoded batch, or several of the partition's that ride together as one entry
    /// (each its own buffer: riding along copies no byte, the request writes them all).
    batches: Vec<Vec<u8>>,
    /// The sequence number of its first record (an idempotent producer's batches).
    sequence: Option<i32>,
    /// When last sent, it was the lowest sequence of its partition not yet acknowledged,
    /// with nothing else of the partition in flight: a refusal of its sequence then is
    /// not a matter of order (no earlier batch could still arrive).
    sent_alone: bool,
    slots: Vec<Slot>,
    permits: Vec<OwnedSemaphorePermit>,
    created: Instant,
    attempts: u32,
    not_before: Instant,
    last_error: Option<ClientError>,
}

impl ReadyBatch {
    /// Splits an entry of several batches into its batches, in order, each with its own
    /// records' slots and memory (the entry itself back when it is one batch). The
    /// batches keep the entry's attempts and times; an idempotent producer's keep their
    /// sequence numbers.
    fn split(self) -> Result<Vec<ReadyBatch>, Box<ReadyBatch>> {
        let mut counts = Vec::with_capacity(self.batches.len());
        for batch in &self.batches {
            let Ok(header) = BatchHeader::view(batch) else { return Err(Box::new(self)) };
            let Ok(records) = usize::try_from(header.record_count.get()) else { return Err(Box::new(self)) };
            counts.push((records, (header.base_sequence.get() >= 0).then(|| header.base_sequence.get())));
        }
        if counts.len() < 2 || counts.iter().map(|c| c.0).sum::<usize>() != self.slots.len() {
            return Err(Box::new(self));
        }
        let (mut slots, mut permits) = (self.slots.into_iter(), self.permits.into_iter());
        Ok(self
            .batches
            .into_iter()
            .zip(counts)
            .map(|(batch, (records, sequence))| ReadyBatch {
                batches: vec![batch],
                sequence,
                sent_alone: false,
                slots: slots.by_ref().take(records).collect(),
                permits: permits.by_ref().take(records).collect(),
                created: self.created,
                attempts: self.attempts,
                not_before: self.not_before,
                last_error: self.last_error.clone(),
            })
            .collect())
    }

    /// The entry's bytes: all its batches.
    fn len(&self) -> usize {
        self.batches.iter().map(Vec::len).sum()
    }

    /// Puts `next`, the partition's following batch, after this one: they go as one
    /// entry, and their records get consecutive offsets (slot i at base + i).
    fn append(&mut self, next: ReadyBatch) {
        self.batches.extend(next.batches);
        self.slots.extend(next.slots);
        self.permits.extend(next.permits);
        self.created = self.created.min(next.created);
    }
}

/// A batch taken out of its partition's queue: into a request, or expired.
struct Sent {
    /// The partition's index in `State::parts`.
    part: usize,
    topic: Arc<str>,
    partition: u32,
    batch: ReadyBatch,
}

/// A produce request to send: the leader, its place among the requests to that leader
/// (they are written in that order), and one batch per partition.
type Request = (Option<u32>, u64, Vec<Sent>);

/// One partition's batches.
struct PartitionQueue {
    topic: Arc<str>,
    partition: u32,
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
    /// Batches of the partition in requests: up to max.in.flight (see `may_send`).
    in_flight: usize,
    /// The sequence number the partition's next closed batch starts at (idempotence).
    next_sequence: i32,
    /// The last sequence number the node acknowledged (idempotence; `None`: none in this
    /// epoch).
    acked_through: Option<i32>,
    /// The partition is queued (once) in a leader's `sendable` or in `backoff`.
    waiting: bool,
}

/// The produce requests to one leader (`None`: not known; sent through a bootstrap
/// server).
#[derive(Default)]
struct LeaderQueue {
    /// Partitions whose front batch may go now, in the order they became sendable (so
    /// the oldest batches go first).
    sendable: VecDeque<usize>,
    /// Requests out to the leader: at most max.in.flight.requests.per.connection. Batches
    /// wait in their queues while none is free, rather than be bound to a small request
    /// that waits for a slot of the connection; the next request takes them all.
    in_flight: usize,
    /// Requests built for the leader, and requests written to it: each is written when
    /// all built before it were (the send tasks race; a partition's batches must reach
    /// the node in sequence order).
    built: u64,
    written: u64,
}

/// The producer's buffers. The sender's work per wake-up follows what is ready or due
/// (the front of `lingering`, of `backoff`, of each leader's `sendable`), never the
/// number of partitions: only `flush` and `close` look at every partition.
#[derive(Default)]
struct State {
    /// Topic, partition -> index in `parts`.
    index: HashMap<String, HashMap<u32, usize>>,
    /// Every partition sent to (never removed, so an index stays valid).
    parts: Vec<PartitionQueue>,
    /// Open batches, (partition, batch id), in the order they opened. linger.ms is the
    /// same for all, so this is the order their lingers end: the sender closes due
    /// batches from the front and skips stale entries.
    lingering: VecDeque<(usize, u64)>,
    next_batch_id: u64,
    leaders: HashMap<Option<u32>, LeaderQueue>,
    /// Partitions whose front batch waits out retry.backoff.ms, in the order the waits
    /// end (the backoff is the same for all).
    backoff: VecDeque<usize>,
    /// No waiting partition's front batch passes delivery.timeout.ms before this (a
    /// lower bound): then the sender looks at the waiting partitions and sets it again.
    next_expiry: Option<Instant>,
    /// Records sent and not yet resolved.
    outstanding: usize,
    closed: bool,
    stats: ProducerStats,
    /// The idempotent producer's id and epoch (`None`: not idempotent).
    identity: Option<protocol::ProducerIdentity>,
    /// A batch was given up on with a sequence number: nothing more is sent until the
    /// requests in flight are done and the producer is at its next epoch.
    bump_epoch: bool,
    /// Records' default timestamps.
    wall_clock: WallClock,
    /// A transactional producer: a transaction is begun and not ended.
    txn_in_progress: bool,
    /// The partitions added to the ongoing transaction.
    txn_partitions: std::collections::HashSet<(String, u32)>,
    /// A record of the ongoing transaction failed: it can only be aborted.
    txn_failed: Option<String>,
}

/// Wall-clock milliseconds from a monotonic instant: the wall clock read once a second,
/// the time since taken from the instant the caller already has, so a record costs no
/// second clock read. (Within the second the two clocks drift apart by far less than a
/// millisecond, unless the wall clock is stepped, which the next second corrects.)
#[derive(Debug)]
struct WallClock {
    base: Instant,
    base_ms: i64,
}

impl Default for WallClock {
    fn default() -> WallClock {
        WallClock { base: Instant::now(), base_ms: now_ms() }
    }
}

impl WallClock {
    /// Re-read the wall clock after this long.
    const REBASE: Duration = Duration::from_secs(1);

    fn ms_at(&mut self, now: Instant) -> i64 {
        let since = now.saturating_duration_since(self.base);
        if since >= Self::REBASE {
            *self = WallClock { base: now, base_ms: now_ms() };
            return self.base_ms;
        }
        self.base_ms + since.as_millis() as i64
    }
}

impl State {
    /// The index of a partition's queue (a new, empty one for a partition not seen).
    fn part(&mut self, topic: &str, partition: u32) -> usize {
        if let Some(&part) = self.index.get(topic).and_then(|p| p.get(&partition)) {
            return part;
        }
        let part = self.parts.len();
        self.parts.push(PartitionQueue {
            topic: topic.into(),
            partition,
            open: None,
            ready: VecDeque::new(),
            in_flight: 0,
            next_sequence: 0,
            acked_through: None,
            waiting: false,
        });
        self.index.entry(topic.to_string()).or_default().insert(partition, part);
        part
    }
}

/// What a producer has sent since it started. `batches / requests` is how many
/// partitions' batches a produce request carried on average.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Produce requests sent (each attempt counts).
    pub requests: u64,
    /// Record batches in those requests (a retried batch counts again).
    pub batches: u64,
}

/// How long a send waits for a topic's metadata that a node does not have yet.
const METADATA_GRACE: Duration = Duration::from_secs(1);

/// The longest the sender sleeps when nothing is due; sends, flushes and finished
/// requests wake it sooner.
const SENDER_IDLE: Duration = Duration::from_millis(200);

/// A request's turn to be written to its leader (see `Inner::write_turn`).
struct WriteTurn<'a> {
    inner: &'a Inner,
    leader: Option<u32>,
}

impl Drop for WriteTurn<'_> {
    fn drop(&mut self) {
        if let Some(queue) = lock(&self.inner.state).leaders.get_mut(&self.leader) {
            queue.written += 1;
        }
        self.inner.turns.notify_waiters();
    }
}

struct Inner {
    config: ProducerConfig,
    router: Router,
    state: Mutex<State>,
    memory: Arc<Semaphore>,
    wake: Notify,
    idle: Notify,
    /// A request was written: the next to its leader may go.
    turns: Notify,
    /// Transactional producers: one AddPartitionsToTxn at a time (each adds every
    /// partition its request needs that is not in the transaction yet).
    txn_adds: tokio::sync::Mutex<()>,
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
            Arc::new(config.security.clone()),
        );
        let inner = Arc::new(Inner {
            memory: Arc::new(Semaphore::new(config.buffer_memory)),
            config,
            router,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            idle: Notify::new(),
            turns: Notify::new(),
            txn_adds: tokio::sync::Mutex::new(()),
        });
        inner.router.any().await?;
        // A transactional producer gets its identity from `init_transactions`.
        if inner.config.idempotent() && inner.config.transactional_id.is_none() {
            let identity = inner.init_producer_id(None).await?;
            debug!(producer_id = identity.producer_id, epoch = identity.epoch, "idempotent producer");
            lock(&inner.state).identity = Some(identity);
        }
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

    /// How many produce requests and batches the producer has sent.
    #[must_use]
    pub fn stats(&self) -> ProducerStats {
        lock(&self.inner.state).stats
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
                self.inner.close_all_open(&mut st);
            }
            self.inner.wake.notify_one();
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Transactions (Kafka's KIP-98; needs `transactional_id`): gets the producer id
    /// and a new epoch from the transactional id's coordinator, which fences any earlier
    /// producer with the same id and aborts a transaction it left open.
    pub async fn init_transactions(&self) -> Result<()> {
        let identity = self.inner.init_producer_id(None).await?;
        debug!(producer_id = identity.producer_id, epoch = identity.epoch, "transactional producer");
        let mut st = lock(&self.inner.state);
        st.identity = Some(identity);
        for pq in &mut st.parts {
            pq.next_sequence = 0;
            pq.acked_through = None;
        }
        Ok(())
    }

    /// Begins a transaction: the records sent until `commit_transaction` or
    /// `abort_transaction` are read by read-committed consumers all or none.
    pub fn begin_transaction(&self) -> Result<()> {
        let mut st = lock(&self.inner.state);
        if self.inner.config.transactional_id.is_none() || st.identity.is_none() {
            return Err(ClientError::Transaction("call init_transactions first (with transactional.id set)".into()));
        }
        if st.txn_in_progress {
            return Err(ClientError::Transaction("a transaction is already begun".into()));
        }
        st.txn_in_progress = true;
        st.txn_partitions.clear();
        st.txn_failed = None;
        Ok(())
    }

    /// Commits a consumer group's offsets (topic, partition, next offset to read) in the
    /// ongoing transaction: they count only if it commits. `member_id` and `generation`
    /// are the group member's (empty and -1: not checked against the group).
    pub async fn send_offsets_to_transaction(
        &self,
        group: &str,
        offsets: &[(String, u32, u64)],
        member_id: &str,
        generation: i32,
    ) -> Result<()> {
        use sluice_schemas::groups::{offsets_partition, OFFSETS_TOPIC};
        let inner = &self.inner;
        inner.add_to_transaction(&[(OFFSETS_TOPIC.to_string(), offsets_partition(group))]).await?;
        let txn = inner.txn_producer()?;
        let offsets: Vec<protocol::CommitOffset> =
            offsets.iter().map(|(t, p, o)| (t.clone(), *p, *o, String::new())).collect();
        let results = crate::router::with_retries(
            Duration::from_millis(inner.config.max_block_ms),
            txn_retriable,
            || inner.router.to_coordinator(group),
            || {},
            |conn| {
                let (txn, offsets) = (&txn, &offsets);
                async move { protocol::txn_offset_commit(&conn, txn, group, member_id, generation, offsets).await }
            },
        )
        .await?;
        match results.into_iter().find_map(|(_, _, r)| r.err()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends every record of the transaction and waits for them, then commits it. A
    /// transaction whose records failed cannot commit (abort it).
    pub async fn commit_transaction(&self) -> Result<()> {
        self.inner.txn_producer()?;
        self.flush().await;
        self.inner.end_transaction(true).await
    }

    /// Aborts the ongoing transaction: read-committed consumers never see its records.
    pub async fn abort_transaction(&self) -> Result<()> {
        self.inner.txn_producer()?;
        self.flush().await;
        self.inner.end_transaction(false).await
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
        // One clock read per record: the metadata's age, the wait for buffer memory, the
        // batch's opening and the record's timestamp all use `now` (each slow path reads
        // the clock again for its own timeout).
        let now = Instant::now();
        // The fast paths below never wait, so a task sending in a loop would keep the
        // sender (and the delivery callbacks) off its thread until the whole buffer
        // memory is full; the task budget makes it yield now and then, as an await that
        // waits would.
        tokio::task::consume_budget().await;
        let partitions =
            match inner.router.cached_partitions(&record.topic, now) {
                Some(count) => count,
                None => tokio::time::timeout(
                    Duration::from_millis(config.max_block_ms),
                    inner.partitions_for(&record.topic),
                )
                .await
                .unwrap_or(Err(ClientError::Timeout { address: "metadata".into(), timeout_ms: config.max_block_ms }))?,
            };
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
        if config.transactional_id.is_some() {
            // The partition joins the transaction when its first request goes out.
            inner.txn_producer()?;
        }
        let permit = match inner.memory.clone().try_acquire_many_owned(size as u32) {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(ClientError::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => tokio::time::timeout(
                Duration::from_millis(config.max_block_ms),
                inner.memory.clone().acquire_many_owned(size as u32),
            )
            .await
            .map_err(|_| ClientError::BufferFull { bytes: size, waited_ms: now.elapsed().as_millis() as u64 })?
            .map_err(|_| ClientError::Closed)?,
        };
        // The sender is woken when a batch opens (it may be sleeping past its linger) or
        // closes (it may go now), not for every record.
        let mut wake = config.linger_ms == 0;
        {
            let mut guard = lock(&inner.state);
            let st = &mut *guard;
            if st.closed {
                return Err(ClientError::Closed);
            }
            let timestamp_ms = record.timestamp_ms.unwrap_or_else(|| st.wall_clock.ms_at(now));
            let part = st.part(&record.topic, partition);
            let full = st.parts[part]
                .open
                .as_ref()
                .is_some_and(|b| b.builder.size_bytes() + size > config.batch_size && !b.slots.is_empty());
            if full {
                inner.close_open(st, part);
                config.partitioner.on_new_batch(&record.topic, partition);
                wake = true;
            }
            if st.parts[part].open.is_none() {
                st.next_batch_id += 1;
                st.lingering.push_back((part, st.next_batch_id));
                wake = true;
            }
            let id = st.next_batch_id;
            let transactional = config.transactional_id.is_some();
            // Room for a batch of records like this one: no regrowth while it fills.
            let records = (config.batch_size / size.max(1)).clamp(1, 1024);
            let batch = st.parts[part].open.get_or_insert_with(|| OpenBatch {
                id,
                builder: new_builder(transactional, config.batch_size),
                opened: now,
                slots: Vec::with_capacity(records),
                permits: Vec::with_capacity(records),
            });
            let headers: Vec<RecordHeader<'_>> =
                record.headers.iter().map(|(k, v)| RecordHeader { key: k, value: v.as_deref() }).collect();
            batch
                .builder
                .push(record.key.as_deref(), record.value.as_deref(), &headers, timestamp_ms)
                .map_err(|e| ClientError::Codec(e.to_string()))?;
            batch.slots.push(Slot { reply, timestamp_ms });
            batch.permits.push(permit);
            st.outstanding += 1;
            if batch.builder.size_bytes() >= config.batch_size {
                inner.close_open(st, part);
                config.partitioner.on_new_batch(&record.topic, partition);
                wake = true;
            }
        }
        if wake {
            inner.wake.notify_one();
        }
        Ok(())
    }
}

/// A batch builder with room for `batch_size` bytes (a batch closes once it has them, as
/// Kafka's producer allocates `batch.size` for each); a transactional producer's batches
/// carry the transactional attribute.
fn new_builder(transactional: bool, batch_size: usize) -> BatchBuilder {
    let mut config = BatchConfig::default();
    if transactional {
        config.attributes = sluice_schemas::batch::Attributes(sluice_schemas::batch::Attributes::TRANSACTIONAL_BIT);
    }
    let mut builder = match BatchBuilder::new(config) {
        Ok(b) => b,
        Err(e) => unreachable!("the default batch config is valid: {e}"),
    };
    builder.reserve_total(batch_size);
    builder
}

/// The sequence number after a batch of `records` starting at `first`: they wrap from
/// i32::MAX to 0, as Kafka's do.
fn next_sequence(first: i32, records: usize) -> i32 {
    let records = i64::try_from(records).unwrap_or(i64::MAX);
    ((i64::from(first) + records) % (i64::from(i32::MAX) + 1)) as i32
}

/// Stamps each batch of an entry (one batch, or several that rode together) with
/// `identity` and consecutive sequence numbers from `sequence`; returns the next one.
fn restamp(batches: &mut [Vec<u8>], identity: protocol::ProducerIdentity, mut sequence: i32) -> i32 {
    for batch in batches {
        let Ok(header) = BatchHeader::view(batch) else { break };
        let records = header.record_count.get();
        stamp_producer(batch, identity.producer_id, identity.epoch, sequence);
        sequence = next_sequence(sequence, usize::try_from(records).unwrap_or(0));
    }
    sequence
}

/// Whether a partition may send its front batch now: with nothing of it in flight, yes;
/// otherwise below `limit` (max.in.flight) and only once its ready batches make a
/// request's worth (`full` bytes: no batch more could ride along), so a partition that
/// fills requests alone keeps several in flight, and one that does not lets its batches
/// gather into one entry (one append on the node) behind the one in flight. A retried
/// batch goes only when nothing of the partition is in flight (retries go one at a time,
/// in sequence order).
fn may_send(queue: &PartitionQueue, limit: usize, full: usize) -> bool {
    let Some(front) = queue.ready.front() else { return false };
    if queue.in_flight == 0 {
        return true;
    }
    if queue.in_flight >= limit || front.attempts > 0 {
        return false;
    }
    let mut ready = 0;
    queue.ready.iter().any(|b| {
        ready += b.len();
        ready >= full
    })
}

/// Errors a transaction request waits out: the coordinator moved or is loading, or the
/// id's last transaction is still completing.
fn txn_retriable(error: &ClientError) -> bool {
    crate::router::coordinator_moved(error) || matches!(error.code(), Some(14 | 51))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Resolves a batch's records with offsets from the base offset (or fails them);
/// returns how many. Their buffer memory is freed after.
fn resolve(topic: &str, partition: u32, batch: ReadyBatch, result: &Result<Option<u64>>) -> usize {
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
    count
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

    fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.config.delivery_timeout_ms)
    }

    /// Counts `count` records as resolved; wakes `flush` when none is left.
    fn settle(&self, st: &mut State, count: usize) {
        st.outstanding = st.outstanding.saturating_sub(count);
        if st.outstanding == 0 {
            self.idle.notify_waiters();
        }
    }

    /// Closes a partition's open batch: encodes (and compresses) it into the ready
    /// queue, where it waits to be sent.
    fn close_open(&self, st: &mut State, part: usize) {
        let compression = self.config.compression;
        let identity = st.identity;
        let queue = &mut st.parts[part];
        let Some(open) = queue.open.take() else { return };
        let OpenBatch { mut builder, opened, slots, permits, .. } = open;
        let sequence = identity.map(|id| {
            let first = queue.next_sequence;
            builder.set_producer(id.producer_id, id.epoch, first);
            queue.next_sequence = next_sequence(first, slots.len());
            first
        });
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
            Ok(bytes) => {
                queue.ready.push_back(ReadyBatch {
                    batches: vec![bytes],
                    sequence,
                    sent_alone: false,
                    slots,
                    permits,
                    created: opened,
                    attempts: 0,
                    not_before: Instant::now(),
                    last_error: None,
                });
                self.mark_sendable(st, part);
            }
            Err(e) => {
                let error = ClientError::Codec(e.to_string());
                let count = slots.len();
                for slot in slots {
                    slot.resolve(Err(error.clone()));
                }
                drop(permits);
                self.settle(st, count);
            }
        }
    }

    /// The ready bytes that make a request's worth for one partition: past them no
    /// further batch is sure to fit in max.request.size (see `may_send`).
    fn request_worth(&self) -> usize {
        self.config.max_request_size.saturating_sub(self.config.batch_size)
    }

    /// Asks for a producer id (`existing` `None`) or the next epoch, retrying retriable
    /// errors (a cluster electing its controller) for up to max.block.ms.
    async fn init_producer_id(
        &self,
        existing: Option<protocol::ProducerIdentity>,
    ) -> Result<protocol::ProducerIdentity> {
        if let Some(id) = &self.config.transactional_id {
            let timeout_ms = i32::try_from(self.config.transaction_timeout_ms).unwrap_or(i32::MAX);
            return self
                .txn_call(
                    |conn| async move { protocol::init_transactional_producer(&conn, id, timeout_ms, existing).await },
                )
                .await;
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.max_block_ms);
        loop {
            let result = async { protocol::init_producer_id(&*self.router.any().await?, existing).await }.await;
            match result {
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    debug!(%e, "InitProducerId failed; retrying");
                    tokio::time::sleep(Duration::from_millis(self.config.retry_backoff_ms)).await;
                }
                other => return other,
            }
        }
    }

    /// Runs `call` on the transactional id's coordinator, again while it moves, loads or
    /// completes the last transaction (for up to max.block.ms).
    async fn txn_call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Arc<crate::connection::Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let Some(id) = self.config.transactional_id.as_deref() else {
            return Err(ClientError::Transaction("the producer has no transactional.id".into()));
        };
        crate::router::with_retries(
            Duration::from_millis(self.config.max_block_ms),
            txn_retriable,
            || self.router.to_txn_coordinator(id),
            || {},
            call,
        )
        .await
    }

    /// The ongoing transaction's producer, or why there is none.
    fn txn_producer(&self) -> Result<protocol::TxnProducer> {
        let st = lock(&self.state);
        match (&self.config.transactional_id, st.identity, st.txn_in_progress) {
            (Some(id), Some(identity), true) => Ok(protocol::TxnProducer { transactional_id: id.clone(), identity }),
            (None, _, _) => Err(ClientError::Transaction("the producer has no transactional.id".into())),
            (_, None, _) => Err(ClientError::Transaction("call init_transactions first".into())),
            (_, _, false) => Err(ClientError::Transaction("no transaction is begun: call begin_transaction".into())),
        }
    }

    /// Adds to the ongoing transaction those of `partitions` it does not have yet, in one
    /// AddPartitionsToTxn (Kafka's producer does the same before it sends a partition's
    /// first batch of a transaction): a request's new partitions cost one round trip.
    async fn add_to_transaction(&self, partitions: &[(String, u32)]) -> Result<()> {
        let _one_at_a_time = self.txn_adds.lock().await;
        let mut missing: Vec<(String, u32)> = {
            let st = lock(&self.state);
            partitions.iter().filter(|p| !st.txn_partitions.contains(*p)).cloned().collect()
        };
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let txn = self.txn_producer()?;
        self.txn_call(|conn| {
            let (txn, missing) = (&txn, &missing);
            async move { protocol::add_partitions_to_txn(&conn, txn, missing).await }
        })
        .await?;
        lock(&self.state).txn_partitions.extend(missing);
        Ok(())
    }

    /// Ends the ongoing transaction: every record sent and acknowledged first, then the
    /// coordinator writes the markers.
    async fn end_transaction(&self, commit: bool) -> Result<()> {
        let txn = self.txn_producer()?;
        if commit {
            if let Some(failed) = lock(&self.state).txn_failed.clone() {
                return Err(ClientError::Transaction(format!(
                    "a record of the transaction failed ({failed}): abort the transaction"
                )));
            }
        }
        let ending = self
            .txn_call(|conn| {
                let txn = &txn;
                async move { protocol::end_txn(&conn, txn, commit).await }
            })
            .await;
        // Retrying an EndTxn that was done answers done; a fenced producer stays fenced.
        let mut st = lock(&self.state);
        st.txn_in_progress = false;
        st.txn_partitions.clear();
        st.txn_failed = None;
        ending
    }

    /// After a batch with a sequence number was given up on (its partition's numbers now
    /// have a gap the node would refuse): the producer's next epoch, and every batch not
    /// sent yet numbered again from 0. Runs when nothing is in flight.
    async fn bump_epoch(&self, current: protocol::ProducerIdentity) {
        match self.init_producer_id(Some(current)).await {
            Ok(next) => {
                let mut st = lock(&self.state);
                st.identity = Some(next);
                st.bump_epoch = false;
                for pq in &mut st.parts {
                    let mut sequence = 0;
                    for batch in &mut pq.ready {
                        batch.sequence = Some(sequence);
                        sequence = restamp(&mut batch.batches, next, sequence);
                    }
                    pq.next_sequence = sequence;
                    pq.acked_through = None;
                }
                warn!(
                    producer_id = next.producer_id,
                    epoch = next.epoch,
                    "a batch was given up on: the producer moved to its next epoch and numbers its batches again"
                );
            }
            Err(e) => {
                warn!(%e, "could not move the producer to its next epoch; trying again");
                tokio::time::sleep(Duration::from_millis(self.config.retry_backoff_ms)).await;
            }
        }
    }

    /// Waits until every request built for `leader` before `ticket` was written; the
    /// returned turn lets the next one go when dropped (written or failed).
    async fn write_turn(&self, leader: Option<u32>, ticket: u64) -> WriteTurn<'_> {
        loop {
            let notified = self.turns.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.state).leaders.get(&leader).is_none_or(|q| q.written >= ticket) {
                return WriteTurn { inner: self, leader };
            }
            notified.await;
        }
    }

    fn close_all_open(&self, st: &mut State) {
        for part in 0..st.parts.len() {
            self.close_open(st, part);
        }
        // Every entry is stale now.
        st.lingering.clear();
    }

    /// Queues a partition whose front batch may be sent: in its leader's `sendable`, or
    /// in `backoff` while a retry waits. Not one with a batch in flight (its outcome
    /// queues it again) or queued already.
    fn mark_sendable(&self, st: &mut State, part: usize) {
        let (limit, full) = (self.config.max_in_flight_requests_per_connection, self.request_worth());
        let queue = &mut st.parts[part];
        if queue.waiting || !may_send(queue, limit, full) {
            return;
        }
        let Some(front) = queue.ready.front() else { return };
        let expiry = front.created + self.delivery_timeout();
        let leader = (front.not_before <= Instant::now()).then(|| self.router.leader(&queue.topic, queue.partition));
        queue.waiting = true;
        st.next_expiry = Some(st.next_expiry.map_or(expiry, |e| e.min(expiry)));
        match leader {
            Some(leader) => st.leaders.entry(leader).or_default().sendable.push_back(part),
            None => st.backoff.push_back(part),
        }
    }

    /// Closes the open batches whose linger has passed, oldest first; returns when the
    /// next one's ends.
    fn close_lingered(&self, st: &mut State, now: Instant) -> Option<Instant> {
        let linger = Duration::from_millis(self.config.linger_ms);
        while let Some(&(part, id)) = st.lingering.front() {
            let due = st.parts[part].open.as_ref().filter(|b| b.id == id).map(|b| b.opened + linger);
            if let Some(due) = due.filter(|&due| due > now) {
                return Some(due);
            }
            st.lingering.pop_front();
            if due.is_some() {
                self.close_open(st, part);
            }
        }
        None
    }

    /// Queues the partitions whose retry backoff has passed with their leaders (learnt
    /// again: the failure may have moved them); returns when the next backoff ends.
    fn end_backoffs(&self, st: &mut State, now: Instant) -> Option<Instant> {
        while let Some(&part) = st.backoff.front() {
            if let Some(front) = st.parts[part].ready.front().filter(|b| b.not_before > now) {
                return Some(front.not_before);
            }
            st.backoff.pop_front();
            st.parts[part].waiting = false;
            self.mark_sendable(st, part);
        }
        None
    }

    /// Takes out every waiting partition's front batches that are past
    /// delivery.timeout.ms (batches behind one in flight are looked at once it is
    /// done), and sets `next_expiry` from the batches left.
    fn expire(&self, st: &mut State, now: Instant, expired: &mut Vec<Sent>) {
        let timeout = self.delivery_timeout();
        let State { parts, leaders, backoff, next_expiry, .. } = st;
        let mut next: Option<Instant> = None;
        let mut keep = |part: &usize| {
            let queue = &mut parts[*part];
            while let Some(front) = queue.ready.front() {
                let expiry = front.created + timeout;
                if expiry >= now {
                    next = Some(next.map_or(expiry, |n| n.min(expiry)));
                    return true;
                }
                if let Some(batch) = queue.ready.pop_front() {
                    expired.push(Sent { part: *part, topic: queue.topic.clone(), partition: queue.partition, batch });
                }
            }
            queue.waiting = false;
            false
        };
        for leader in leaders.values_mut() {
            leader.sendable.retain(&mut keep);
        }
        backoff.retain(&mut keep);
        *next_expiry = next;
    }

    /// The requests that may go now. For each leader with a free in-flight slot: one
    /// request of the front batch of every sendable partition, oldest first, up to
    /// max.request.size; more while slots and batches last. Returns whether a partition
    /// moved to another leader's queue (its leader changed since it was queued), which
    /// may have a free slot.
    fn drain(&self, st: &mut State, now: Instant, expired: &mut Vec<Sent>) -> (Vec<Request>, bool) {
        if st.bump_epoch {
            return (Vec::new(), false);
        }
        let timeout = self.delivery_timeout();
        let max_in_flight = self.config.max_in_flight_requests_per_connection;
        let max_bytes = self.config.max_request_size;
        let full = self.request_worth();
        let idempotent = st.identity.is_some();
        let State { parts, leaders, stats, .. } = st;
        let mut requests = Vec::new();
        let mut moved = Vec::new();
        for (&leader, queue) in leaders.iter_mut() {
            while queue.in_flight < max_in_flight && !queue.sendable.is_empty() {
                let mut batches = Vec::new();
                let mut bytes = 0usize;
                // Partitions that may send their next batch in the next request.
                let mut again = Vec::new();
                while let Some(&part) = queue.sendable.front() {
                    let pq = &mut parts[part];
                    while pq.ready.front().is_some_and(|b| now.saturating_duration_since(b.created) > timeout) {
                        if let Some(batch) = pq.ready.pop_front() {
                            expired.push(Sent { part, topic: pq.topic.clone(), partition: pq.partition, batch });
                        }
                    }
                    let Some(len) = pq.ready.front().filter(|_| may_send(pq, max_in_flight, full)).map(ReadyBatch::len)
                    else {
                        queue.sendable.pop_front();
                        pq.waiting = false;
                        continue;
                    };
                    let current = self.router.leader(&pq.topic, pq.partition);
                    if current != leader {
                        queue.sendable.pop_front();
                        moved.push((current, part));
                        continue;
                    }
                    if !batches.is_empty() && bytes + len > max_bytes {
                        break;
                    }
                    queue.sendable.pop_front();
                    pq.waiting = false;
                    if let Some(mut batch) = pq.ready.pop_front() {
                        bytes += len;
                        let expected = pq.acked_through.map_or(0, |a| next_sequence(a, 1));
                        batch.sent_alone = pq.in_flight == 0 && batch.sequence == Some(expected);
                        // The partition's next ready batches ride along in the same entry
                        // (one append on the node: all or none, in order), up to its share of
                        // the request: more bytes in flight per partition, order kept.
                        // An idempotent producer's retried entry goes again as it was (the node
                        // finds its sequence numbers in the run it was stored as), so only a
                        // fresh one takes followers.
                        let share = (max_bytes / (queue.sendable.len() + 1)).max(self.config.batch_size);
                        let mut entry = len;
                        let rides = !idempotent || batch.attempts == 0;
                        while let Some(next) = pq.ready.front().filter(|_| rides) {
                            let n = next.len();
                            if next.attempts > 0 || next.not_before > now || entry + n > share || bytes + n > max_bytes
                            {
                                break;
                            }
                            let Some(next) = pq.ready.pop_front() else { break };
                            batch.append(next);
                            entry += n;
                            bytes += n;
                            stats.batches += 1;
                        }
                        pq.in_flight += 1;
                        if may_send(pq, max_in_flight, full) && pq.ready.front().is_some_and(|b| b.not_before <= now) {
                            again.push(part);
                        }
                        batches.push(Sent { part, topic: pq.topic.clone(), partition: pq.partition, batch });
                    }
                }
                for part in again {
                    parts[part].waiting = true;
                    queue.sendable.push_back(part);
                }
                if batches.is_empty() {
                    break;
                }
                queue.in_flight += 1;
                stats.requests += 1;
                stats.batches += batches.len() as u64;
                requests.push((leader, queue.built, batches));
                queue.built += 1;
            }
        }
        let any_moved = !moved.is_empty();
        for (leader, part) in moved {
            leaders.entry(leader).or_default().sendable.push_back(part);
        }
        (requests, any_moved)
    }
}

/// The sender task: closes lingered batches, ends retry backoffs, expires batches past
/// delivery.timeout.ms, and sends to each leader while it has a free in-flight slot.
async fn sender(inner: Arc<Inner>) {
    loop {
        let now = Instant::now();
        let mut wake_at = now + SENDER_IDLE;
        let mut expired = Vec::new();
        let (requests, closed) = {
            let mut guard = lock(&inner.state);
            let st = &mut *guard;
            if st.closed {
                inner.close_all_open(st);
            }
            for due in [inner.close_lingered(st, now), inner.end_backoffs(st, now)].into_iter().flatten() {
                wake_at = wake_at.min(due);
            }
            if st.next_expiry.is_some_and(|e| e <= now) {
                inner.expire(st, now, &mut expired);
            }
            let (requests, moved) = inner.drain(st, now, &mut expired);
            if moved {
                wake_at = now;
            }
            if let Some(expiry) = st.next_expiry {
                wake_at = wake_at.min(expiry);
            }
            (requests, st.closed)
        };
        if !expired.is_empty() {
            let mut count = 0;
            let sequenced = expired.iter().any(|s| s.batch.sequence.is_some());
            for s in expired {
                let error = ClientError::DeliveryTimeout {
                    timeout_ms: inner.config.delivery_timeout_ms,
                    last_error: s.batch.last_error.clone().map(Box::new),
                };
                count += resolve(&s.topic, s.partition, s.batch, &Err(error));
            }
            let mut st = lock(&inner.state);
            st.bump_epoch |= sequenced;
            if st.txn_in_progress {
                st.txn_failed.get_or_insert_with(|| "a batch expired".to_string());
            }
            inner.settle(&mut st, count);
        }
        let bump = {
            let st = lock(&inner.state);
            st.identity.filter(|_| st.bump_epoch && st.parts.iter().all(|p| p.in_flight == 0))
        };
        if let Some(identity) = bump {
            inner.bump_epoch(identity).await;
            continue;
        }
        for (leader, ticket, batches) in requests {
            let inner = inner.clone();
            tokio::spawn(async move { send_request(inner, leader, ticket, batches).await });
        }
        if closed && lock(&inner.state).outstanding == 0 {
            return;
        }
        let wait = wake_at.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(wait, inner.wake.notified()).await;
    }
}

/// Sends one produce request (one batch per partition) to `leader`, resolves the
/// records, frees the leader's in-flight slot, and queues retriable failures again
/// behind their backoff.
async fn send_request(inner: Arc<Inner>, leader: Option<u32>, ticket: u64, sent: Vec<Sent>) {
    let config = &inner.config;
    let acks = config.acks.wire();
    let result = async {
        if config.transactional_id.is_some() {
            let partitions: Vec<(String, u32)> = sent.iter().map(|s| (s.topic.to_string(), s.partition)).collect();
            inner.add_to_transaction(&partitions).await?;
        }
        let turn = inner.write_turn(leader, ticket).await;
        let conn = inner.router.to_node(leader).await?;
        // An entry's batches follow each other: the request carries them as one slice.
        let parts: Vec<PartitionBatches<'_>> = sent
            .iter()
            .flat_map(|s| {
                s.batch.batches.iter().map(|b| PartitionBatches { topic: &s.topic, partition: s.partition, batches: b })
            })
            .collect();
        let txn_id = config.transactional_id.as_deref();
        let pending = protocol::start_produce(&conn, acks, config.request_timeout_ms as u32, txn_id, &parts).await?;
        drop(turn);
        match pending {
            None => Ok(Vec::new()),
            Some(pending) => protocol::decode_produce(&pending.response().await?),
        }
    }
    .await;
    let outcomes: Vec<Result<Option<u64>>> = match result {
        Ok(_) if acks == 0 => sent.iter().map(|_| Ok(None)).collect(),
        Ok(outcomes) => {
            // A request may carry hundreds of partitions: look each one's outcome up.
            let by_partition: HashMap<(&str, u32), &Result<u64>> =
                outcomes.iter().map(|o| ((o.topic.as_str(), o.partition), &o.base_offset)).collect();
            sent.iter()
                .map(|s| match by_partition.get(&(&*s.topic, s.partition)) {
                    Some(&r) => r.clone().map(Some),
                    None => Err(ClientError::Protocol(format!("no result for {}-{}", s.topic, s.partition))),
                })
                .collect()
        }
        Err(e) => sent.iter().map(|_| Err(e.clone())).collect(),
    };
    let mut settled = 0;
    let mut released = Vec::with_capacity(sent.len());
    let mut acked = Vec::new();
    let mut retry = Vec::new();
    let mut bump = false;
    let mut splits = Vec::new();
    for (mut s, outcome) in sent.into_iter().zip(outcomes) {
        let error = match outcome {
            Ok(base) => {
                if let Some(first) = s.batch.sequence {
                    let last = next_sequence(first, s.batch.slots.len().saturating_sub(1));
                    acked.push((s.part, last));
                }
                settled += resolve(&s.topic, s.partition, s.batch, &Ok(base));
                released.push(s.part);
                continue;
            }
            Err(e) => e,
        };
        // An entry of several batches refused for what one of them holds: each batch goes
        // again alone, so only the one at fault fails (as Kafka's producer splits a batch
        // that is too large).
        if matches!(error.code(), Some(CORRUPT_MESSAGE | MESSAGE_TOO_LARGE | RECORD_LIST_TOO_LARGE | INVALID_RECORD)) {
            match s.batch.split() {
                Ok(batches) => {
                    splits.push((s.part, batches, error));
                    continue;
                }
                Err(whole) => s.batch = *whole,
            }
        }
        // An idempotent batch whose sequence was refused: after a batch before it that was
        // late or failed, it waits for that one. The lowest one: the node lost the
        // producer's state (UNKNOWN_PRODUCER_ID; the batch goes again in the next epoch),
        // or its sequence numbers have a gap (given up on; the next epoch starts again).
        let code = error.code();
        let refused =
            s.batch.sequence.is_some() && matches!(code, Some(OUT_OF_ORDER_SEQUENCE_NUMBER | UNKNOWN_PRODUCER_ID));
        let lowest = s.batch.sent_alone;
        let state_lost = refused && lowest && code == Some(UNKNOWN_PRODUCER_ID);
        bump |= state_lost;
        let retriable =
            (error.is_retriable() || (refused && (!lowest || state_lost))) && s.batch.attempts < config.retries;
        let in_time = s.batch.created.elapsed() + Duration::from_millis(config.retry_backoff_ms)
            < Duration::from_millis(config.delivery_timeout_ms);
        if retriable && in_time {
            debug!(topic = %s.topic, partition = s.partition, %error, attempt = s.batch.attempts + 1, "retrying batch");
            retry.push((s, error));
            continue;
        }
        debug!(topic = %s.topic, partition = s.partition, %error, "batch failed");
        bump |= s.batch.sequence.is_some();
        // A retriable error that ran out of delivery.timeout.ms is a delivery timeout (as
        // Kafka's TimeoutException), the same error as a batch that expired in its queue,
        // with the error that kept it from being delivered.
        let error = if retriable {
            ClientError::DeliveryTimeout { timeout_ms: config.delivery_timeout_ms, last_error: Some(Box::new(error)) }
        } else {
            error
        };
        if inner.config.transactional_id.is_some() {
            lock(&inner.state).txn_failed.get_or_insert_with(|| error.to_string());
        }
        settled += resolve(&s.topic, s.partition, s.batch, &Err(error));
        released.push(s.part);
    }
    {
        let mut guard = lock(&inner.state);
        let st = &mut *guard;
        for (part, last) in acked {
            let pq = &mut st.parts[part];
            if pq.acked_through.is_none_or(|a| sequence_after(last, a)) {
                pq.acked_through = Some(last);
            }
        }
        if bump {
            st.bump_epoch = true;
        }
        for part in released {
            st.parts[part].in_flight = st.parts[part].in_flight.saturating_sub(1);
            inner.mark_sendable(st, part);
        }
        if let Some(queue) = st.leaders.get_mut(&leader) {
            queue.in_flight = queue.in_flight.saturating_sub(1);
        }
        inner.settle(st, settled);
    }
    // The leader has a free slot, and the partitions done may send their next batches.
    inner.wake.notify_one();
    if !splits.is_empty() {
        let mut guard = lock(&inner.state);
        let st = &mut *guard;
        for (part, batches, error) in splits {
            debug!(batches = batches.len(), %error, "an entry was refused: its batches go again one by one");
            let queue = &mut st.parts[part];
            for (i, mut batch) in batches.into_iter().enumerate() {
                batch.attempts += 1;
                batch.last_error = Some(error.clone());
                let at = batch.sequence.map_or(i, |q| {
                    queue
                        .ready
                        .iter()
                        .position(|b| b.sequence.is_some_and(|b| sequence_after(b, q)))
                        .unwrap_or(queue.ready.len())
                });
                queue.ready.insert(at, batch);
            }
            queue.in_flight = queue.in_flight.saturating_sub(1);
            inner.mark_sendable(st, part);
        }
        drop(guard);
        inner.wake.notify_one();
    }
    if retry.is_empty() {
        return;
    }
    // Each topic's leaders are learnt again once, not once per batch. The slot is free
    // meanwhile; the retried partitions stay in flight, so nothing overtakes them.
    let mut stale: Vec<Arc<str>> =
        retry.iter().filter(|(_, e)| stale_metadata(e)).map(|(s, _)| s.topic.clone()).collect();
    stale.sort_unstable();
    stale.dedup();
    for topic in stale {
        let _ = inner.router.refresh(&topic).await;
    }
    {
        let mut guard = lock(&inner.state);
        let st = &mut *guard;
        let not_before = Instant::now() + Duration::from_millis(config.retry_backoff_ms);
        for (mut s, error) in retry {
            s.batch.attempts += 1;
            s.batch.not_before = not_before;
            s.batch.last_error = Some(error);
            let queue = &mut st.parts[s.part];
            // Back in the partition's order: at the front, or (several in flight) before
            // the first batch with a later sequence number.
            let at = s.batch.sequence.map_or(0, |q| {
                queue
                    .ready
                    .iter()
                    .position(|b| b.sequence.is_some_and(|b| sequence_after(b, q)))
                    .unwrap_or(queue.ready.len())
            });
            queue.ready.insert(at, s.batch);
            queue.in_flight = queue.in_flight.saturating_sub(1);
            inner.mark_sendable(st, s.part);
        }
    }
    inner.wake.notify_one();
}

/// Kafka's error codes the producer acts on.
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const RECORD_LIST_TOO_LARGE: i16 = 18;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const UNKNOWN_PRODUCER_ID: i16 = 59;
const INVALID_RECORD: i16 = 87;

/// Whether sequence number `a` comes after `b` (they wrap from i32::MAX to 0: `a` is after
/// `b` when it is less than half the range ahead).
fn sequence_after(a: i32, b: i32) -> bool {
    let ahead = (i64::from(a) - i64::from(b)).rem_euclid(i64::from(i32::MAX) + 1);
    ahead > 0 && ahead < (1 << 30)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::{may_send, new_builder, now_ms, restamp, PartitionQueue, ReadyBatch, Reply, Slot, WallClock};
    use crate::protocol::ProducerIdentity;
    use sluice_schemas::batch::BatchHeader;
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    fn queue(in_flight: usize, ready: &[(usize, u32)]) -> PartitionQueue {
        let batch = |&(bytes, attempts): &(usize, u32)| ReadyBatch {
            batches: vec![vec![0; bytes]],
            sequence: None,
            sent_alone: false,
            slots: Vec::new(),
            permits: Vec::new(),
            created: Instant::now(),
            attempts,
            not_before: Instant::now(),
            last_error: None,
        };
        PartitionQueue {
            topic: "t".into(),
            partition: 0,
            open: None,
            ready: ready.iter().map(batch).collect::<VecDeque<_>>(),
            in_flight,
            next_sequence: 0,
            acked_through: None,
            waiting: false,
        }
    }

    /// A partition with nothing in flight sends; with some in flight, it sends more only
    /// once its ready batches make a request's worth (up to max.in.flight), and a retry
    /// only alone.
    #[test]
    fn a_partition_pipelines_only_what_fills_requests_and_retries_alone() {
        const FULL: usize = 1000;
        assert!(!may_send(&queue(0, &[]), 5, FULL), "nothing ready");
        assert!(may_send(&queue(0, &[(10, 0)]), 5, FULL), "nothing in flight");
        assert!(may_send(&queue(0, &[(10, 3)]), 5, FULL), "a retry with nothing in flight");
        assert!(!may_send(&queue(1, &[(10, 0), (10, 0)]), 5, FULL), "small batches gather behind one in flight");
        assert!(may_send(&queue(1, &[(600, 0), (400, 0)]), 5, FULL), "a request's worth ready");
        assert!(may_send(&queue(4, &[(FULL, 0)]), 5, FULL), "below max.in.flight");
        assert!(!may_send(&queue(5, &[(FULL, 0)]), 5, FULL), "at max.in.flight");
        assert!(!may_send(&queue(1, &[(FULL, 1)]), 5, FULL), "a retry waits for the partition's batches in flight");
        assert!(may_send(&queue(1, &[(1, 0)]), 5, 0), "batches of max.request.size are each a request's worth");
    }

    /// An entry of batches that rode together is stamped with consecutive sequence
    /// numbers, and, refused, splits into its batches, each with its own records' slots
    /// and its first sequence number.
    #[test]
    fn an_entry_of_several_batches_is_stamped_in_sequence_and_splits_into_its_batches() {
        let encode = |records: usize| {
            let mut builder = new_builder(false, 1 << 10);
            for i in 0..records {
                builder.push(None, Some(&[i as u8; 10]), &[], 0).expect("push");
            }
            builder.finish().expect("finish")
        };
        let (first, second) = (encode(2), encode(3));
        let mut entry = ReadyBatch {
            batches: vec![first.clone(), second.clone()],
            sequence: Some(7),
            sent_alone: false,
            slots: (0..5).map(|_| Slot { reply: Reply::Callback(Box::new(|_| {})), timestamp_ms: 0 }).collect(),
            permits: Vec::new(),
            created: Instant::now(),
            attempts: 2,
            not_before: Instant::now(),
            last_error: None,
        };
        assert_eq!(entry.len(), first.len() + second.len());
        assert_eq!(restamp(&mut entry.batches, ProducerIdentity { producer_id: 42, epoch: 3 }, 7), 12);
        let Ok(parts) = entry.split() else { panic!("an entry of two batches splits") };
        let got: Vec<(Option<i32>, usize, usize, u32)> =
            parts.iter().map(|b| (b.sequence, b.slots.len(), b.len(), b.attempts)).collect();
        assert_eq!(got, [(Some(7), 2, first.len(), 2), (Some(9), 3, second.len(), 2)]);
        for part in &parts {
            let header = BatchHeader::view(&part.batches[0]).expect("a batch");
            assert_eq!((header.producer_id.get(), header.producer_epoch.get()), (42, 3));
        }
        assert!(parts.into_iter().next().expect("a batch").split().is_err(), "one batch does not split");
    }

    /// A record's default timestamp from the wall clock kept per producer: within a few
    /// ms of the real wall clock, also across a rebase.
    #[test]
    fn the_wall_clock_follows_the_real_one_from_one_instant_per_record() {
        let mut clock = WallClock::default();
        let until = Instant::now() + WallClock::REBASE + Duration::from_millis(300);
        while Instant::now() < until {
            let ms = clock.ms_at(Instant::now());
            let real = now_ms();
            assert!((ms - real).abs() <= 2, "{ms} against the real {real}");
            std::thread::sleep(Duration::from_millis(7));
        }
    }
}
