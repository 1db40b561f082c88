//! A shard's replicas: the `ReplicaNode` of the partitions this shard owns and replicates,
//! driven over the shard's real logs and the cluster transport.
//!
//! The state machine decides; this file performs. Its `NodeAction`s run here:
//! - log operations (a follower's copied batches, a truncation) run on the partition's
//!   `PartitionLog` in order, one at a time per partition, and whatever the state machine
//!   sent after them (the next fetch) leaves only once they completed, so a follower never
//!   reports a log end it has not stored;
//! - fetches are batched across partitions per pair of nodes: a follower's fetches to one
//!   leader made in the same executor turn leave in one frame, and the leader answers
//!   the fetches of a frame together, in one frame, once any of their partitions has
//!   batches past the follower's log end or after `FETCH_WAIT` (the long poll). Each
//!   answer is filled from the leader's `PartitionLog` (the batches as stored, from the
//!   follower's log end);
//! - answers to producers (acks=all) resolve the produce request waiting for them.
//!
//! The leader's own appends do not pass through here as actions: `append` runs the
//! state machine's `lead_append` inside `PartitionLog::append_as_leader`, so both agree on
//! every batch's offset and epoch.
//!
//! When a log operation fails (a full or failing disk), the partition's replica is rebuilt
//! from what its log holds, as a restarted node would be, and follows the controller's
//! state again; nothing is acknowledged that was not stored.
//!
//! Where it lives: one per shard of a node in a cluster (`Shard::cluster`). Shard 0's
//! sends the node's heartbeats; the others drop theirs (one node, one session).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use crate::replication::ClusterPartitionId;
use sluice_schemas::ids::Offset;
use sluice_schemas::TopicPartition;
use tracing::{debug, warn};

use super::throttle::Throttle;
use super::transport::Transport;
use crate::errors::{from_storage, ErrorKind, NodeError};
use crate::io::{self, Oneshot, OneshotSender, WaitQueue};
use crate::replication::{
    wire, Acks, ClientId, Endpoint, Envelope, FetchResult, Incarnation, LogOp, Message, NodeAction, NodeId, NodeInput,
    PartitionConfig, PartitionState, ReplicaConfig, ReplicaError, ReplicaLog, ReplicaNode,
};
use crate::storage::producers::TxnGuard;
use crate::storage::{AppendInfo, PartitionLog};

/// How often the replicas tick (heartbeats, fetch timers, ISR checks).
pub const NODE_TICK: Duration = Duration::from_millis(10);
/// How long a leader holds a follower's fetch that finds nothing new.
pub const FETCH_WAIT: Duration = Duration::from_millis(200);
/// Batch bytes in one fetch answer (at least one whole batch is always sent).
pub const FETCH_BYTES_MAX: u64 = 4 << 20;
/// The longest a follower's fetch waits for the log to store what the fetch says it holds.
const STORED_WAIT: Duration = Duration::from_secs(5);
/// How long an acks=all produce waits for the ISR before it times out.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a host finds the logs of the partitions it replicates (the shard).
pub trait HostLogs {
    fn hosted_log(&self, topic: &str, partition: u32) -> Option<Rc<PartitionLog>>;
    /// Replaces the partition's log with an empty one that starts at `start` (its files
    /// deleted): the log's new state is what a crash at any point leaves, or an empty log.
    fn reset_log(&self, topic: &str, partition: u32, start: Offset) -> io::LocalFuture<'_, Result<(), String>>;
}

/// What a leader appends: producer batches (with KIP-890's guard for a Kafka
/// transactional produce) or the coordinator's transaction marker.
#[derive(Clone, Copy)]
enum Led {
    Producer(Option<TxnGuard>),
    Marker,
}

/// A fetch answer's batches as they arrived: the whole frame, and where they lie in it
/// (kept as received, not copied out).
struct Copied {
    frame: Vec<u8>,
    range: std::ops::Range<usize>,
}

/// A log operation or a send that must wait for the ones before it.
enum Job {
    Log {
        op: LogOp,
        data: Option<Copied>,
    },
    /// A send; `fetch_from` when it is a leader's fetch answer to fill from the log.
    Send {
        envelope: Envelope,
        fetch_from: Option<Offset>,
    },
}

#[derive(Default)]
struct Queue {
    jobs: RefCell<VecDeque<Job>>,
    running: Cell<bool>,
}

/// One shard's replicas (see the module doc).
pub struct ReplicaHost {
    me: NodeId,
    incarnation: Incarnation,
    shard: u16,
    /// The controller quorum's voters: where messages to the controller go.
    voters: RefCell<Vec<NodeId>>,
    started: Instant,
    replicas: RefCell<ReplicaNode>,
    names: RefCell<BTreeMap<ClusterPartitionId, TopicPartition>>,
    ids: RefCell<HashMap<TopicPartition, ClusterPartitionId>>,
    transport: Rc<Transport>,
    logs: Weak<dyn HostLogs>,
    acks: RefCell<HashMap<u64, OneshotSender<Result<Offset, ReplicaError>>>>,
    next_ack: Cell<u64>,
    queues: RefCell<HashMap<ClusterPartitionId, Rc<Queue>>>,
    /// Woken whenever a high watermark may have moved (consumers' long polls).
    moved: WaitQueue,
    shutdown_ready: Cell<bool>,
    /// Fetches and fetch answers to send per node at the end of this executor turn.
    outgoing: RefCell<BTreeMap<NodeId, Vec<Vec<u8>>>>,
    flush_scheduled: Cell<bool>,
    /// What this shard's leaders send replicas outside the ISR goes through it (`None`:
    /// no throttle).
    throttle: Option<Throttle>,
}

impl ReplicaHost {
    /// A host for shard `shard` of node `me`, sending through `transport`; its tick task
    /// runs on this shard while the host lives.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        me: NodeId,
        incarnation: Incarnation,
        shard: u16,
        voters: Vec<NodeId>,
        config: ReplicaConfig,
        transport: Rc<Transport>,
        logs: Weak<dyn HostLogs>,
        throttled_rate: Option<u64>,
    ) -> Rc<ReplicaHost> {
        let host = Rc::new(ReplicaHost {
            me,
            incarnation,
            shard,
            voters: RefCell::new(voters),
            started: Instant::now(),
            replicas: RefCell::new(ReplicaNode::new(me, incarnation, config, Vec::new())),
            names: RefCell::new(BTreeMap::new()),
            ids: RefCell::new(HashMap::new()),
            transport,
            logs,
            acks: RefCell::new(HashMap::new()),
            next_ack: Cell::new(0),
            queues: RefCell::new(HashMap::new()),
            moved: WaitQueue::default(),
            shutdown_ready: Cell::new(false),
            outgoing: RefCell::new(BTreeMap::new()),
            flush_scheduled: Cell::new(false),
            throttle: throttled_rate.map(Throttle::new),
        });
        let weak = Rc::downgrade(&host);
        io::spawn_detached(async move {
            loop {
                io::sleep(NODE_TICK).await;
                let Some(host) = weak.upgrade() else { return };
                let actions = host.replicas.borrow_mut().step(host.now_ms(), NodeInput::Tick);
                host.perform(actions, None, None);
            }
        });
        host
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    #[must_use]
    pub fn node(&self) -> NodeId {
        self.me
    }

    /// Sends `message` with `data` from this node to node `to` (for messages the node
    /// itself handles, such as `Message::KafkaRequest`).
    pub fn send_to(&self, to: NodeId, message: Message, data: &[u8]) {
        let envelope = Envelope { from: Endpoint::Node(self.me), to: Endpoint::Node(to), message };
        self.send_now(&envelope, data);
    }

    #[must_use]
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The replication id of a partition this shard replicates.
    #[must_use]
    pub fn partition_id(&self, topic: &str, partition: u32) -> Option<ClusterPartitionId> {
        self.ids.borrow().get(&TopicPartition::new(topic, partition)).copied()
    }

    #[must_use]
    pub fn is_hosted(&self, id: ClusterPartitionId) -> bool {
        self.names.borrow().contains_key(&id)
    }

    /// Starts replicating a partition whose log is open: replication's view of it is what
    /// the log holds (its end and its leader-epoch cache).
    pub fn host(
        &self,
        id: ClusterPartitionId,
        topic: &str,
        partition: u32,
        config: PartitionConfig,
        log: &PartitionLog,
    ) {
        let stored = ReplicaLog::stored(log.log_start_offset(), log.log_end_offset(), &log.epoch_starts());
        self.replicas.borrow_mut().add_partition(id, config, stored);
        self.names.borrow_mut().insert(id, TopicPartition::new(topic, partition));
        self.ids.borrow_mut().insert(TopicPartition::new(topic, partition), id);
    }

    /// A hosted partition's settings changed (its topic's configs).
    pub fn set_config(&self, id: ClusterPartitionId, config: PartitionConfig) {
        self.replicas.borrow_mut().set_partition_config(id, config);
    }

    /// Stops replicating a partition (its topic was deleted).
    pub fn unhost(self: &Rc<Self>, id: ClusterPartitionId) {
        let actions = self.replicas.borrow_mut().remove_partition(self.now_ms(), id);
        if let Some(name) = self.names.borrow_mut().remove(&id) {
            self.ids.borrow_mut().remove(&name);
        }
        self.queues.borrow_mut().remove(&id);
        self.perform(actions, None, None);
    }

    /// Every partition this shard replicates.
    #[must_use]
    pub fn hosted(&self) -> Vec<ClusterPartitionId> {
        self.names.borrow().keys().copied().collect()
    }

    /// Committed controller states for hosted partitions, addressed to this node's life
    /// (the node's own controller voter applied them after this life registered): the
    /// same as the controller's updates, only sooner.
    pub fn apply_states(self: &Rc<Self>, states: Vec<PartitionState>) {
        for state in states {
            if !self.is_hosted(state.partition) {
                continue;
            }
            let message = Message::PartitionUpdate { incarnation: self.incarnation, state };
            let envelope = Envelope { from: Endpoint::Controller, to: Endpoint::Node(self.me), message };
            let actions = self.replicas.borrow_mut().step(self.now_ms(), NodeInput::Receive(envelope));
            self.perform(actions, None, None);
        }
        self.moved.notify_all();
    }

    /// Envelopes that arrived together (one frame from one node), in order.
    pub fn receive_batch(self: &Rc<Self>, list: Vec<Vec<u8>>) {
        for bytes in list {
            self.receive(bytes);
        }
    }

    /// An envelope from another node (or this node's controller), in wire bytes.
    pub fn receive(self: &Rc<Self>, bytes: Vec<u8>) {
        let (envelope, data_len) = match wire::decode(&bytes) {
            Ok((envelope, data)) => (envelope, data.len()),
            Err(e) => {
                warn!("dropping a replication message that does not decode: {e}");
                return;
            }
        };
        let range = wire::data_range(&bytes, data_len);
        self.receive_envelope(envelope, Copied { frame: bytes, range });
    }

    fn receive_envelope(self: &Rc<Self>, envelope: Envelope, data: Copied) {
        let mut fetch_from = None;
        let mut copied = None;
        match &envelope.message {
            Message::Fetch { fetch_offset, .. } => fetch_from = Some(*fetch_offset),
            Message::FetchReply { result: FetchResult::Entries { entries, .. }, .. } if !entries.is_empty() => {
                // The entries must be what the batches say, or the follower's view of its
                // log would part from the log.
                match wire::entries_of(&data.frame[data.range.clone()]) {
                    Ok(found) if &found == entries => copied = Some(data),
                    Ok(_) => {
                        warn!("dropping a fetch answer whose entries do not match its batches");
                        return;
                    }
                    Err(e) => {
                        warn!("dropping a fetch answer whose batches do not parse: {e}");
                        return;
                    }
                }
            }
            _ => {}
        }
        let actions = self.replicas.borrow_mut().step(self.now_ms(), NodeInput::Receive(envelope));
        self.perform(actions, copied, fetch_from);
        self.moved.notify_all();
    }

    /// Appends producer batches as the partition's leader. With acks=all it resolves once
    /// every ISR member has them (the high watermark passed them), or fails. A `guard`
    /// (KIP-890 part 1) decides whether a transactional batch may open its producer's
    /// transaction (`TxnGuard`).
    pub async fn append(
        self: &Rc<Self>,
        log: &PartitionLog,
        id: ClusterPartitionId,
        acks: Acks,
        batches: &[u8],
        name: (&str, u32),
        guard: Option<TxnGuard>,
    ) -> Result<AppendInfo, NodeError> {
        self.append_as(log, id, acks, batches, name, Led::Producer(guard)).await
    }

    /// Appends a transaction marker (a control batch the coordinator built) as the
    /// partition's leader, acknowledged as acks=all.
    pub async fn append_marker(
        self: &Rc<Self>,
        log: &PartitionLog,
        id: ClusterPartitionId,
        marker: &[u8],
        name: (&str, u32),
    ) -> Result<AppendInfo, NodeError> {
        self.append_as(log, id, Acks::All, marker, name, Led::Marker).await
    }

    async fn append_as(
        self: &Rc<Self>,
        log: &PartitionLog,
        id: ClusterPartitionId,
        acks: Acks,
        batches: &[u8],
        name: (&str, u32),
        led: Led,
    ) -> Result<AppendInfo, NodeError> {
        let ack = self.next_ack.get() + 1;
        self.next_ack.set(ack);
        let waiter = (acks == Acks::All).then(|| {
            let (tx, rx) = Oneshot::channel();
            self.acks.borrow_mut().insert(ack, tx);
            rx
        });
        let mut actions = Vec::new();
        let mut decided = false;
        let decide = |base, span| {
            decided = true;
            let client = Endpoint::Client(ClientId(0));
            let (result, out) =
                self.replicas.borrow_mut().lead_append(self.now_ms(), id, client, acks, base, span, ack);
            actions = out;
            result
        };
        let appended = match led {
            Led::Marker => log.append_control_as_leader(batches, decide).await,
            Led::Producer(guard) => log.append_as_leader(batches, guard.as_ref(), decide).await,
        };
        self.perform(actions, None, None);
        self.moved.notify_all();
        let info = match appended {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                self.acks.borrow_mut().remove(&ack);
                // The state machine may have counted the batches the log failed to store.
                // Not when the log refused them before asking it (a producer's sequence
                // out of order): rebuilding then would forget other appends in flight,
                // which the state machine counted and the log has not stored yet.
                if decided {
                    self.rebuild(id);
                }
                return Err(from_storage(name.0, name.1, &e));
            }
            Err(e) => {
                self.acks.borrow_mut().remove(&ack);
                return Err(replica_error(e, name));
            }
        };
        if info.duplicate {
            // A retry the log answered from the stored batch: nothing was replicated for
            // it, so it is acknowledged as the first append would have been, once the
            // stored batch is committed.
            self.acks.borrow_mut().remove(&ack);
            if acks == Acks::All {
                let waited = self.wait_for_high_watermark(id, info.last_offset, Replicas::Leader);
                let _ = io::timeout(ACK_TIMEOUT, waited).await;
                if self.readable(id, name, Replicas::Leader)? <= info.last_offset {
                    return Err(NodeError::new(
                        ErrorKind::RequestTimedOut,
                        format!(
                            "{}-{}: the retried batch at offset {} was not committed within {ACK_TIMEOUT:?}",
                            name.0, name.1, info.base_offset
                        ),
                    ));
                }
            }
            return Ok(info);
        }
        let Some(waiter) = waiter else { return Ok(info) };
        match io::timeout(ACK_TIMEOUT, waiter).await {
            Some(Some(Ok(_))) => Ok(info),
            Some(Some(Err(e))) => Err(replica_error(e, name)),
            Some(None) | None => {
                self.acks.borrow_mut().remove(&ack);
                Err(NodeError::new(
                    ErrorKind::RequestTimedOut,
                    format!("{}-{}: the in-sync replicas did not confirm within {ACK_TIMEOUT:?}", name.0, name.1),
                ))
            }
        }
    }

    /// What consumers may read here: below the returned high watermark, on the leader
    /// (`Replicas::Leader`) or, for a fetch from a follower (KIP-392), on any replica.
    pub fn readable(&self, id: ClusterPartitionId, name: (&str, u32), on: Replicas) -> Result<Offset, NodeError> {
        self.high_watermark_on(id, on).map_err(|e| replica_error(e, name))
    }

    /// The high watermark consumers read below here, on the leader or on any replica.
    fn high_watermark_on(&self, id: ClusterPartitionId, on: Replicas) -> Result<Offset, ReplicaError> {
        let replicas = self.replicas.borrow();
        match on {
            Replicas::Leader => replicas.consumer_view(id).map(|(hw, _)| hw),
            Replicas::Any => replicas.replica_view(id),
        }
    }

    /// Resolves once the partition's high watermark here is past `offset` or this node
    /// stops serving it (`on`: as the leader, or as any replica; callers bound the wait).
    pub async fn wait_for_high_watermark(&self, id: ClusterPartitionId, offset: Offset, on: Replicas) {
        loop {
            let wait = self.moved.wait();
            match self.high_watermark_on(id, on) {
                Ok(hw) if hw <= offset => {}
                Err(ReplicaError::OffsetNotAvailable) => {}
                _ => return,
            }
            wait.await;
        }
    }

    /// Asks the controller to move this node's leaderships away (controlled shutdown).
    pub fn begin_shutdown(self: &Rc<Self>) {
        let actions = self.replicas.borrow_mut().step(self.now_ms(), NodeInput::BeginShutdown);
        self.perform(actions, None, None);
    }

    /// The controller confirmed a controlled shutdown.
    #[must_use]
    pub fn shutdown_ready(&self) -> bool {
        self.shutdown_ready.get()
    }

    fn perform(self: &Rc<Self>, actions: Vec<NodeAction>, mut data: Option<Copied>, fetch_from: Option<Offset>) {
        for action in actions {
            match action {
                NodeAction::Send(envelope) => {
                    if let (Endpoint::Client(_), Message::ProduceReply { request_id, result, .. }) =
                        (&envelope.to, &envelope.message)
                    {
                        if let Some(tx) = self.acks.borrow_mut().remove(request_id) {
                            tx.send(*result);
                        }
                        continue;
                    }
                    if self.shard != 0 && matches!(envelope.message, Message::Heartbeat { .. }) {
                        continue;
                    }
                    let serve = envelope.from == Endpoint::Node(self.me)
                        && matches!(envelope.message, Message::FetchReply { result: FetchResult::Entries { .. }, .. });
                    let partition = partition_of(&envelope.message);
                    let busy = partition.is_some_and(|p| self.queue_busy(p));
                    match partition {
                        Some(p) if busy => {
                            self.enqueue(p, Job::Send { envelope, fetch_from: fetch_from.filter(|_| serve) })
                        }
                        _ if serve => {
                            let host = self.clone();
                            let from = fetch_from.unwrap_or(Offset(0));
                            io::spawn_detached(async move { host.serve_fetch(envelope, from).await });
                        }
                        _ => self.send(envelope),
                    }
                }
                NodeAction::Log { partition, op } => {
                    let data = if matches!(op, LogOp::Append(_)) { data.take() } else { None };
                    self.enqueue(partition, Job::Log { op, data });
                }
                NodeAction::ShutdownReady => self.shutdown_ready.set(true),
            }
        }
    }

    fn queue_busy(&self, id: ClusterPartitionId) -> bool {
        self.queues.borrow().get(&id).is_some_and(|q| q.running.get())
    }

    fn enqueue(self: &Rc<Self>, id: ClusterPartitionId, job: Job) {
        let queue = self.queues.borrow_mut().entry(id).or_default().clone();
        queue.jobs.borrow_mut().push_back(job);
        if !queue.running.get() {
            queue.running.set(true);
            let host = self.clone();
            io::spawn_detached(async move { host.drain(id, queue).await });
        }
    }

    async fn drain(self: Rc<Self>, id: ClusterPartitionId, queue: Rc<Queue>) {
        loop {
            let job = queue.jobs.borrow_mut().pop_front();
            let Some(job) = job else {
                queue.running.set(false);
                return;
            };
            match job {
                Job::Send { envelope, fetch_from: Some(from) } => self.serve_fetch(envelope, from).await,
                Job::Send { envelope, fetch_from: None } => self.send(envelope),
                Job::Log { op, data } => {
                    let data = data.as_ref().map(|c| &c.frame[c.range.clone()]);
                    if let Err(e) = self.log_op(id, &op, data).await {
                        warn!("partition {id}: {e}; rebuilding its replica from its log");
                        queue.jobs.borrow_mut().clear();
                        self.rebuild(id);
                    }
                }
            }
        }
    }

    async fn log_op(&self, id: ClusterPartitionId, op: &LogOp, data: Option<&[u8]>) -> Result<(), String> {
        let log = self.log_of(id).ok_or("its log is not open")?;
        match op {
            LogOp::Append(_) => {
                let data = data.ok_or("copied entries came without their batches")?;
                log.append_copied(data).await.map(|_| ()).map_err(|e| format!("storing copied batches: {e}"))
            }
            LogOp::TruncateTo(offset) => {
                let end = log.truncate_to(*offset).await.map_err(|e| format!("truncating to {offset}: {e}"))?;
                debug!("partition {id}: truncated to {end} (asked {offset})");
                Ok(())
            }
            LogOp::AdvanceStart(offset) => {
                let offset = (*offset).min(log.log_end_offset());
                if offset > log.log_start_offset() {
                    log.advance_log_start(offset)
                        .await
                        .map_err(|e| format!("moving the log start to {offset}: {e}"))?;
                    debug!("partition {id}: log start moved to {offset}, as the leader's");
                }
                Ok(())
            }
            LogOp::Reset(start) => {
                drop(log);
                let tp = self.names.borrow().get(&id).cloned().ok_or("it is not hosted")?;
                let logs = self.logs.upgrade().ok_or("the shard is gone")?;
                logs.reset_log(&tp.topic, tp.partition, *start).await.map_err(|e| format!("resetting to {start}: {e}"))
            }
        }
    }

    fn log_of(&self, id: ClusterPartitionId) -> Option<Rc<PartitionLog>> {
        let tp = self.names.borrow().get(&id).cloned()?;
        self.logs.upgrade()?.hosted_log(&tp.topic, tp.partition)
    }

    /// The replica's view of its log could differ from the log after a failed operation:
    /// start it again from the log, with the controller's latest state for it.
    pub(crate) fn rebuild(self: &Rc<Self>, id: ClusterPartitionId) {
        let Some(log) = self.log_of(id) else { return };
        let Some(TopicPartition { topic, partition }) = self.names.borrow().get(&id).cloned() else { return };
        let known = self.replicas.borrow().known_state(id).cloned();
        let config = self.replicas.borrow().partition_config(id);
        let actions = self.replicas.borrow_mut().remove_partition(self.now_ms(), id);
        self.perform(actions, None, None);
        if let Some(config) = config {
            self.host(id, &topic, partition, config, &log);
        }
        if let Some(state) = known {
            self.apply_states(vec![state]);
        }
    }

    /// A leader's answer to a follower's fetch: once the partition has batches past the
    /// follower's log end, or after `FETCH_WAIT` (the follower's long poll). It leaves with
    /// the other answers for that node that are ready in the same executor turn.
    /// An answer to a replica outside the ISR goes through the throttle, if any.
    async fn serve_fetch(self: &Rc<Self>, envelope: Envelope, from: Offset) {
        let Endpoint::Node(to) = envelope.to else { return };
        let partition = partition_of(&envelope.message);
        if let Some(log) = partition.and_then(|p| self.log_of(p)) {
            if log.log_end_offset() <= from {
                let _ = io::timeout(FETCH_WAIT, log.wait_for_data(from)).await;
            }
        }
        let in_sync = || {
            let replicas = self.replicas.borrow();
            partition.and_then(|p| replicas.known_state(p)).is_some_and(|s| s.isr.contains(&to))
        };
        let throttle = self.throttle.as_ref().filter(|_| !in_sync());

        let max_bytes = match throttle {
            Some(t) => t.allowance().await.min(FETCH_BYTES_MAX),
            None => FETCH_BYTES_MAX,
        };
        if let Some((bytes, batches)) = self.fetch_answer(envelope, from, max_bytes).await {
            if let Some(t) = throttle {
                t.take(batches);
            }
            self.queue_out(to, bytes);
        }
    }

    /// (bytes the throttle let through, milliseconds answers waited on it).
    #[must_use]
    pub fn throttle_counters(&self) -> (u64, u64) {
        self.throttle.as_ref().map_or((0, 0), Throttle::counters)
    }

    /// A leader's answer to a follower's fetch, in wire bytes, with the batches from the
    /// follower's log end as the log holds them (about `max_bytes` of them, at least one
    /// whole batch; none when `max_bytes` is 0), and the batches' bytes.
    async fn fetch_answer(&self, envelope: Envelope, from: Offset, max_bytes: u64) -> Option<(Vec<u8>, u64)> {
        let Message::FetchReply { partition, leader_epoch, request_id, result } = envelope.message else { return None };
        let FetchResult::Entries { high_watermark, .. } = result else { return None };
        let reply = |result| Envelope {
            from: envelope.from,
            to: envelope.to,
            message: Message::FetchReply { partition, leader_epoch, request_id, result },
        };
        let without_batches = |result| wire::encode(&reply(result), &[]).map(|bytes| (bytes, 0));
        let Some(log) = self.log_of(partition) else {
            return without_batches(FetchResult::Error(ReplicaError::NotLeader));
        };
        let log_start = log.log_start_offset();
        if from < log_start {
            // The follower lacks what this log no longer has: it starts again at this log's
            // start, in the epoch this log has there (none known: it keeps asking).
            let epoch = log.epoch_starts().iter().rev().find(|(_, start)| *start <= log_start).map(|(e, _)| *e);
            let result = match epoch {
                Some(epoch) => FetchResult::Reset { log_start, epoch },
                None => FetchResult::Error(ReplicaError::OffsetOutOfRange),
            };
            return without_batches(result);
        }
        if max_bytes == 0 {
            // The throttle has nothing for it now: the follower asks again.
            return without_batches(FetchResult::Entries { entries: Vec::new(), high_watermark, log_start });
        }
        let fetched = match log.read(from, max_bytes).await {
            Ok(fetched) => fetched,
            Err(e) => {
                debug!("partition {partition}: reading for a follower from {from}: {e}");
                return without_batches(FetchResult::Error(ReplicaError::OffsetOutOfRange));
            }
        };
        // Whole batches from `from` (a read starts at the batch holding it; a follower's
        // log end is a batch end), sent as the log's buffers hold them: one copy, into
        // the frame.
        let mut entries = Vec::new();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(fetched.chunks.len());
        for chunk in &fetched.chunks {
            // (A walker repeats its error forever: stop at the first.)
            let start = sluice_schemas::batch::BatchWalker::new(chunk)
                .map_while(Result::ok)
                .find(|(_, header, _)| header.base_offset() >= from)
                .map(|(position, _, _)| position);
            let Some(start) = start else { continue };
            match wire::entries_of(&chunk[start..]) {
                Ok(found) => entries.extend(found),
                Err(e) => {
                    warn!("partition {partition}: its stored batches from {from} do not parse: {e}");
                    return None;
                }
            }
            parts.push(&chunk[start..]);
        }
        let bytes: u64 = parts.iter().map(|p| p.len() as u64).sum();
        wire::encode_parts(&reply(FetchResult::Entries { entries, high_watermark, log_start }), &parts)
            .map(|frame| (frame, bytes))
    }

    /// A follower's fetch tells its leader that everything below `fetch_offset` is stored
    /// here, and the leader counts it toward the high watermark and the ISR. The replica's
    /// view can run ahead of the log: a leader's appends are counted when the log gives
    /// them offsets, before they are written, and this node may become a follower with
    /// some still in flight. Such a fetch waits until the log holds everything below its
    /// offset; if the log fails first (a full disk) or the writes do not complete within
    /// `STORED_WAIT`, it is not sent, and the replica starts again from what the log holds.
    fn fetch_once_stored(
        self: &Rc<Self>,
        envelope: Envelope,
        id: ClusterPartitionId,
        offset: Offset,
        log: Rc<PartitionLog>,
    ) {
        let host = self.clone();
        io::spawn_detached(async move {
            let _ = io::timeout(STORED_WAIT, log.wait_for_data(Offset(offset.0 - 1))).await;
            let current = host.log_of(id).is_some_and(|now| Rc::ptr_eq(&now, &log));
            if !current {
                return; // The log was reopened, and the replica rebuilt with it.
            }
            if log.log_end_offset() >= offset && log.failure().is_none() {
                host.send(envelope);
                return;
            }
            warn!(
                "partition {id}: not fetching from {offset}: the log holds up to {} ({}); rebuilding its replica \
                 from its log",
                log.log_end_offset(),
                log.failure().unwrap_or_else(|| format!("writes not done within {STORED_WAIT:?}"))
            );
            host.rebuild(id);
        });
    }

    /// Sends an envelope; a follower's fetches go through `queue_out`.
    fn send(self: &Rc<Self>, envelope: Envelope) {
        if let Message::Fetch { partition, fetch_offset, .. } = envelope.message {
            if let Some(log) = self.log_of(partition) {
                if fetch_offset > log.log_end_offset() {
                    self.fetch_once_stored(envelope, partition, fetch_offset, log);
                    return;
                }
            }
        }
        let (Message::Fetch { .. }, Endpoint::Node(leader)) = (&envelope.message, envelope.to) else {
            self.send_now(&envelope, &[]);
            return;
        };
        if let Some(bytes) = wire::encode(&envelope, &[]) {
            self.queue_out(leader, bytes);
        }
    }

    /// Fetches and fetch answers for a node wait for the others this shard sends it in
    /// this turn of the executor, and leave with them in one frame (batched across
    /// partitions per pair of nodes).
    fn queue_out(self: &Rc<Self>, to: NodeId, bytes: Vec<u8>) {
        self.outgoing.borrow_mut().entry(to).or_default().push(bytes);
        if !self.flush_scheduled.replace(true) {
            let host = self.clone();
            io::spawn_detached(async move {
                futures_lite::future::yield_now().await;
                host.flush_scheduled.set(false);
                let outgoing = std::mem::take(&mut *host.outgoing.borrow_mut());
                for (leader, list) in outgoing {
                    host.transport.send_batch(leader, list);
                }
            });
        }
    }

    /// The controller quorum's voters changed (members joined or left it).
    pub fn set_voters(&self, voters: Vec<NodeId>) {
        *self.voters.borrow_mut() = voters;
    }

    /// The transport this host sends through.
    #[must_use]
    pub fn transport(&self) -> Rc<Transport> {
        self.transport.clone()
    }

    fn send_now(&self, envelope: &Envelope, data: &[u8]) {
        if let Some(bytes) = wire::encode(envelope, data) {
            self.transmit(envelope, bytes);
        }
    }

    fn transmit(&self, envelope: &Envelope, bytes: Vec<u8>) {
        match envelope.to {
            Endpoint::Controller => {
                for voter in self.voters.borrow().iter() {
                    self.transport.send_envelope(*voter, bytes.clone());
                }
            }
            Endpoint::Node(node) => self.transport.send_envelope(node, bytes),
            Endpoint::Client(_) => {}
        }
    }
}

/// Which replicas of a partition serve consumers' reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replicas {
    /// Its leader only.
    Leader,
    /// Any replica, each below its high watermark: a Kafka consumer that names its rack
    /// (Fetch v11+, KIP-392) may read from a follower.
    Any,
}

/// The partition a message is about, if it is about one.
pub(crate) fn partition_of(message: &Message) -> Option<ClusterPartitionId> {
    match message {
        Message::Fetch { partition, .. } | Message::FetchReply { partition, .. } => Some(*partition),
        Message::AlterPartition(alter) => Some(alter.partition),
        Message::PartitionUpdate { state, .. } | Message::AlterPartitionReply { state, .. } => Some(state.partition),
        _ => None,
    }
}

/// The node error a replication refusal is, as clients are told.
fn replica_error(e: ReplicaError, (topic, partition): (&str, u32)) -> NodeError {
    let (kind, why) = match e {
        ReplicaError::NotLeader | ReplicaError::FencedLeaderEpoch | ReplicaError::UnknownLeaderEpoch => {
            (ErrorKind::NotLeaderOrFollower, "this node does not lead it; refresh metadata and retry")
        }
        ReplicaError::NotEnoughReplicas => {
            (ErrorKind::NotEnoughReplicas, "fewer replicas are in sync than min.insync.replicas")
        }
        ReplicaError::NotEnoughReplicasAfterAppend => (
            ErrorKind::NotEnoughReplicasAfterAppend,
            "stored, but the in-sync replicas fell below min.insync.replicas before all had it",
        ),
        ReplicaError::OffsetNotAvailable => {
            (ErrorKind::LeaderNotAvailable, "its new leader has not yet confirmed what earlier leaders served")
        }
        ReplicaError::OffsetOutOfRange => (ErrorKind::OffsetOutOfRange, "the offset is past the high watermark"),
    };
    NodeError::new(kind, format!("{topic}-{partition}: {why}"))
}
