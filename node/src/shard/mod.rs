//! The thread-per-core runtime: one `Shard` per executor (one per core).
//!
//! Each partition is owned by exactly one shard (`shard_for`), which alone opens and
//! touches its log. Every shard accepts connections; work for a partition owned by
//! another shard crosses over the bounded channel mesh (`sluice_io::mesh`) as a `ShardRequest`, and
//! the answer comes back as a `ShardReply` (`Shard::call`).
//!
//! A node is always part of a cluster, if only a cluster of one: topics, partitions,
//! leaders and ISRs live in the controller quorum's committed state (`shard::cluster`),
//! every partition is replicated through the same `ReplicaHost` path (with replication
//! factor 1 on a node of its own), and admin requests become controller commands on
//! shard 0. Each shard opens, hosts and removes the partitions it owns as the committed
//! state changes.
//!
//! Lives on: each `Shard` on its own executor thread; nothing here is `Send` except the
//! messages.

pub mod cluster;
pub mod descriptors;
mod kafka_calls;
mod messages;
pub mod reassign;
mod security;
pub mod space;
pub mod voters;

pub use messages::{
    AdminRequest, AdminResult, Appended, ConfigChange, NewTopic, OffsetAndTime, ReadResult, ShardMsg, ShardReply,
    ShardRequest,
};

use crate::cluster::host::Replicas;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use sluice_io::mesh::{Mesh, MeshReceiver, MeshSender};
use sluice_schemas::{Offset, TopicPartition};
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::errors::{from_storage, ErrorKind, NodeError};
use crate::groups::{offsets_partition, Coordinator, GroupHost, GroupRequest, OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::io::{self, Oneshot, OneshotSender};
use crate::metrics::Metrics;
use crate::storage::PartitionLog;
use crate::topics::{Metadata, Topic};

/// Messages waiting in each direction between two shards; a sender past it waits.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Where a single node kept its topics before it became a cluster of one: migrated into
/// the controller's state at the first start (`shard::cluster`), then renamed.
pub const LEGACY_METADATA_FILE: &str = "metadata.toml";

/// The index of a shard, from 0 to the shard count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// Which shard owns `topic`'s `partition`: a topic's partitions go round-robin over the
/// shards from a start that depends on the topic's name (FNV-1a), so many small topics
/// do not all start on shard 0.
#[must_use]
pub fn shard_for(topic: &str, partition: u32, shards: u16) -> ShardId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    ShardId(((hash.wrapping_add(u64::from(partition))) % u64::from(shards.max(1))) as u16)
}

/// The directory of a partition's log.
#[must_use]
pub fn partition_dir(data_dir: &std::path::Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// Per-shard state.
pub struct Shard {
    pub id: ShardId,
    pub shards: u16,
    pub config: Rc<NodeConfig>,
    metadata: RefCell<Rc<Metadata>>,
    logs: RefCell<HashMap<TopicPartition, Rc<PartitionLog>>>,
    senders: MeshSender<messages::ShardMsg>,
    pending: RefCell<HashMap<u64, OneshotSender<ShardReply>>>,
    next_call: Cell<u64>,
    pub metrics: RefCell<Metrics>,
    /// The consumer groups this shard coordinates.
    pub groups: Coordinator,
    /// The transactions this shard coordinates.
    pub txns: crate::txn::TxnCoordinator,
    /// This shard's replicas (set by `start`, before the shard serves anything).
    host: OnceCell<Rc<crate::cluster::host::ReplicaHost>>,
    /// On shard 0: the controller voter and the node's transport.
    pub(crate) agent: OnceCell<Rc<crate::cluster::agent::Agent>>,
    /// Leaders, replicas and ISRs as the committed state has them.
    view: RefCell<Rc<cluster::ClusterView>>,
    /// Shard 0: a view refresh is wanted, and one is running.
    refresh_pending: Cell<bool>,
    refresh_running: Cell<bool>,
    /// Shard 0: views taken from the committed state, and views every shard applied
    /// (numbered in order; see `cluster::await_local_view`).
    refreshes_started: Cell<u64>,
    refreshes_done: Cell<u64>,
    /// Shard 0: the node's block of producer ids, as far as it is used.
    producer_ids: RefCell<cluster::ProducerIds>,
    /// The data directory's free space, and the guard that refuses produce when it is low.
    pub space: space::DataDirSpace,
    /// When failed logs are opened again.
    repairs: space::Repairs,
    /// Partitions this shard should have open and could not open, with why (a create
    /// that made them fails with it; see `cluster::commit_topic`).
    open_failures: RefCell<HashMap<TopicPartition, String>>,
    /// Partitions whose log is being replaced by an empty one (`HostLogs::reset_log`):
    /// out of `logs` meanwhile, and not opened by a view change.
    resetting: RefCell<std::collections::HashSet<TopicPartition>>,
    /// This shard applied a view of the cluster's committed state in which this life of
    /// the node is registered: everything committed before the registration (every
    /// topic created before the node started) is in it. Before that its metadata may be
    /// empty or old, not "no topics" (as a Kafka broker serves only once it has caught
    /// up with the metadata log to its own registration).
    metadata_applied: Cell<bool>,
    /// Woken when `metadata_applied` becomes true.
    caught_up: io::WaitQueue,
    /// Shard 0: topics being auto-created (`cluster::auto_create`).
    auto_creating: RefCell<std::collections::BTreeSet<String>>,
    /// Kafka requests this shard made of other nodes over the cluster link, waiting for
    /// their answers (`shard::kafka_calls`), and the next request id.
    kafka_calls: RefCell<HashMap<u64, KafkaCall>>,
    next_kafka_call: Cell<u64>,
    /// Shard 0: client connections open per IP address, node-wide, for the addresses
    /// that have a max-connections-per-ip limit (`ShardRequest::ConnectionSlot`).
    connections_per_ip: RefCell<HashMap<std::net::IpAddr, u32>>,
}

/// ListOffsets' special timestamps (Kafka's `ListOffsetsRequest` constants).
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// How long a Metadata request waits for a node that has just started to catch up with
/// the cluster's topics (`Shard::wait_for_metadata`) before it answers with what it has.
pub const METADATA_CATCH_UP_WAIT: Duration = Duration::from_secs(5);

impl GroupHost for Shard {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.metadata().topic(topic).map(|t| t.partitions)
    }

    /// Appends to the offsets partition; a failure is answered as Kafka's group
    /// coordinator answers it (`errors::coordinator_append`).
    fn append_offsets<'a>(&'a self, partition: u32, batch: &'a [u8]) -> io::LocalFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            let appended = self.append_internal(OFFSETS_TOPIC, partition, batch).await;
            appended.map_err(|e| crate::errors::coordinator_append(OFFSETS_TOPIC, partition, e))
        })
    }
}

impl Shard {
    /// Joins the mesh and starts this shard's part of the cluster (its replicas; on shard
    /// 0 the controller voter too). The partitions open as the committed state arrives.
    pub async fn start(
        config: Rc<NodeConfig>,
        setup: &cluster::ClusterSetup,
        mesh: Mesh<messages::ShardMsg>,
    ) -> Result<Rc<Shard>, String> {
        let (senders, receivers) = mesh.join().await.map_err(|e| format!("joining the shard mesh failed: {e}"))?;
        let id = ShardId(senders.me() as u16);
        let shards = senders.members() as u16;
        // Node-wide storage limits, this shard's share, before any log opens here.
        let reserve = config.reserve_bytes_max.unwrap_or_else(|| space::default_reserve(&config.data_dir));
        if id.0 == 0 {
            tracing::info!(
                cache_bytes = config.cache_bytes_max,
                reserve_bytes = reserve,
                read_ahead_bytes = config.read_ahead_bytes_max,
                "storage budgets (node-wide)"
            );
        }
        crate::storage::configure_shard(crate::storage::ShardLimits {
            reserve_bytes_max: reserve / u64::from(shards.max(1)),
            cache_bytes_max: config.cache_bytes_max / u64::from(shards.max(1)),
            read_ahead_bytes_max: config.read_ahead_bytes_max / u64::from(shards.max(1)),
            segment_files_max: (descriptors::segment_files_max(&config) / usize::from(shards.max(1))).max(1),
        });
        if let Some(faults) = config.storage_faults {
            space::inject_storage_faults(faults, id.0);
        }
        let (config_data_dir, config_min_free) = (config.data_dir.clone(), config.storage_min_free_bytes);
        let coordinator = Coordinator::for_node(&config);
        let shard = Rc::new(Shard {
            id,
            shards,
            config,
            metadata: RefCell::new(Rc::new(Metadata::default())),
            logs: RefCell::new(HashMap::new()),
            senders,
            pending: RefCell::new(HashMap::new()),
            next_call: Cell::new(0),
            metrics: RefCell::new(Metrics::default()),
            groups: coordinator,
            txns: crate::txn::TxnCoordinator::default(),
            host: OnceCell::new(),
            agent: OnceCell::new(),
            view: RefCell::new(Rc::new(cluster::ClusterView::default())),
            refresh_pending: Cell::new(false),
            refresh_running: Cell::new(false),
            refreshes_started: Cell::new(0),
            refreshes_done: Cell::new(0),
            producer_ids: RefCell::new(cluster::ProducerIds::default()),
            space: space::DataDirSpace::new(&config_data_dir, config_min_free),
            repairs: space::Repairs::default(),
            open_failures: RefCell::new(HashMap::new()),
            resetting: RefCell::new(std::collections::HashSet::new()),
            metadata_applied: Cell::new(false),
            caught_up: io::WaitQueue::new(),
            auto_creating: RefCell::new(std::collections::BTreeSet::new()),
            kafka_calls: RefCell::new(HashMap::new()),
            // Ids differ across the node's lives (an answer meant for the last life must
            // not match a request of this one): they start from the clock.
            next_kafka_call: Cell::new(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
            ),
            connections_per_ip: RefCell::new(HashMap::new()),
        });
        spawn_receivers(&shard, receivers);
        shard.start_cluster(setup).await?;
        crate::groups::spawn_expiry(Rc::downgrade(&shard), |s: &Shard| &s.groups);
        crate::txn::spawn_expiry(Rc::downgrade(&shard));
        if shard.id == ShardId(0) {
            spawn_memory_trim(Rc::downgrade(&shard));
        }
        spawn_retention(Rc::downgrade(&shard));
        spawn_cleaner(Rc::downgrade(&shard));
        space::spawn_repair(Rc::downgrade(&shard));
        Ok(shard)
    }

    /// Whether this shard has the cluster's topics yet (see `metadata_applied`). A node
    /// serves as soon as it starts; until it has caught up, a topic it does not know may
    /// well exist, so it must not say otherwise.
    #[must_use]
    pub fn has_metadata(&self) -> bool {
        self.metadata_applied.get()
    }

    /// Waits until this shard has caught up with the cluster's topics, for at most
    /// `limit`; returns whether it has. A Metadata request waits for it: an answer from
    /// a node that has not (a topic missing, or "not available" with no partitions)
    /// makes librdkafka drop the topic's partitions and fail the messages queued for them.
    pub async fn wait_for_metadata(&self, limit: Duration) -> bool {
        if self.has_metadata() {
            return true;
        }
        let _ = io::timeout(limit, async {
            while !self.has_metadata() {
                self.caught_up.wait().await;
            }
        })
        .await;
        self.has_metadata()
    }

    #[must_use]
    pub fn metadata(&self) -> Rc<Metadata> {
        self.metadata.borrow().clone()
    }

    /// The shard that owns a partition: the shard this node placed its replica on (the
    /// least loaded when it arrived; see `shard::cluster`), or `shard_for` for a partition
    /// it does not replicate.
    #[must_use]
    pub fn owner(&self, topic: &str, partition: u32) -> ShardId {
        match self.view.borrow().shards.get(&TopicPartition::new(topic, partition)) {
            Some(shard) => *shard,
            None => shard_for(topic, partition, self.shards),
        }
    }

    /// This shard's replicas.
    pub(crate) fn host(&self) -> &Rc<crate::cluster::host::ReplicaHost> {
        match self.host.get() {
            Some(host) => host,
            None => unreachable!("Shard::start sets the replica host before the shard serves"),
        }
    }

    /// The shard coordinating `group`: the owner of its offsets partition.
    #[must_use]
    pub fn coordinator_of(&self, group: &str) -> ShardId {
        self.owner(OFFSETS_TOPIC, offsets_partition(group))
    }

    /// Runs a group request on its coordinator shard (List: on every shard, merged).
    pub async fn group_call(self: &Rc<Self>, request: GroupRequest) -> crate::groups::GroupReply {
        use crate::groups::GroupReply;
        let Some(group) = request.group().map(str::to_string) else {
            let mut all = Vec::new();
            for s in 0..self.shards {
                if let ShardReply::Group(GroupReply::Listed(list)) =
                    self.call(ShardId(s), ShardRequest::Group(GroupRequest::List)).await
                {
                    all.extend(list);
                }
            }
            all.sort_by(|a, b| a.group.cmp(&b.group));
            return GroupReply::Listed(all);
        };
        match self.call(self.coordinator_of(&group), ShardRequest::Group(request)).await {
            ShardReply::Group(reply) => reply,
            ShardReply::Failed(e) => GroupReply::Done(Err(e)),
            other => GroupReply::Done(Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reply {other:?}")))),
        }
    }

    /// The log of a partition this shard owns.
    #[must_use]
    pub fn log(&self, topic: &str, partition: u32) -> Option<Rc<PartitionLog>> {
        self.logs.borrow().get(&TopicPartition::new(topic, partition)).cloned()
    }

    /// Checks that the topic and partition exist in the metadata.
    pub fn check_partition(&self, topic: &str, partition: u32) -> Result<(), NodeError> {
        match self.metadata().topic(topic) {
            Some(t) if partition < t.partitions => Ok(()),
            Some(_) => Err(NodeError::unknown_partition(topic, partition)),
            // Retriable: the client refreshes its metadata (from a node that has caught up).
            None if !self.has_metadata() => Err(NodeError::new(
                ErrorKind::NotLeaderOrFollower,
                format!("this node has not caught up with the cluster's topics yet (topic {topic:?})"),
            )),
            None => Err(NodeError::new(ErrorKind::UnknownTopicOrPartition, format!("topic {topic:?} does not exist"))),
        }
    }

    /// Runs `request` on shard `to`: directly when it is this shard, else over the mesh.
    pub async fn call(self: &Rc<Self>, to: ShardId, request: ShardRequest) -> ShardReply {
        if to == self.id {
            return self.handle(request).await;
        }
        let id = self.next_call.get();
        self.next_call.set(id + 1);
        let (tx, rx) = Oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        self.metrics.borrow_mut().cross_shard_calls += 1;
        let message = messages::ShardMsg::Request { id, from: self.id, request };
        if self.senders.send_to(usize::from(to.0), message).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return ShardReply::Failed(NodeError::new(ErrorKind::Unknown, format!("shard {} is gone", to.0)));
        }
        rx.await.unwrap_or_else(|| ShardReply::Failed(NodeError::new(ErrorKind::Unknown, "shard reply lost")))
    }

    /// Handles a request on the shard that owns what it concerns.
    pub async fn handle(self: &Rc<Self>, request: ShardRequest) -> ShardReply {
        match request {
            ShardRequest::Append { topic, partition, batches, acks, verify } => {
                ShardReply::Appended(self.append_local(&topic, partition, &batches, acks, verify.as_deref()).await)
            }
            ShardRequest::Read { topic, partition, offset, max_bytes, read_committed, on } => {
                let read = self.read_local(&topic, partition, offset, max_bytes, read_committed, on).await;
                let result = read.map(|(chunks, r)| {
                    // Crossing to another thread means one copy of the record bytes.
                    let mut bytes = Vec::with_capacity(chunks.iter().map(|c| c.len()).sum());
                    for c in &chunks {
                        bytes.extend_from_slice(c);
                    }
                    self.metrics.borrow_mut().fetch_bytes_copied += bytes.len() as u64;
                    ReadResult { bytes, ..r }
                });
                ShardReply::Read(result)
            }
            ShardRequest::WaitForData { topic, partition, offset, max_wait_ms, on } => {
                let wait = self.wait_for_readable(&topic, partition, offset, on);
                let _ = io::timeout(Duration::from_millis(max_wait_ms), wait).await;
                ShardReply::Done
            }
            ShardRequest::ListOffset { topic, partition, timestamp, read_committed } => {
                ShardReply::Offset(self.list_offset_local(&topic, partition, timestamp, read_committed).await)
            }
            ShardRequest::Admin(request) => ShardReply::Admin(self.admin(request).await),
            ShardRequest::Reassign { moves, keep_factor } => {
                ShardReply::Reassigned(self.reassign(moves, keep_factor).await)
            }
            ShardRequest::ListReassignments(asked) => ShardReply::Reassignments(self.reassignments(asked.as_deref())),
            ShardRequest::RemoveNode(node) => ShardReply::Removed(self.remove_node(node).await),
            ShardRequest::ChangeVoter { node, add } => ShardReply::VoterChanged(self.change_voter(node, add).await),
            ShardRequest::DescribeQuorum => ShardReply::Quorum(self.quorum_status()),
            ShardRequest::ReleaseLog(key) => ShardReply::Released(self.release_log(&key).await),
            ShardRequest::Security(changes) => ShardReply::SecurityChanged(self.change_security_here(changes).await),
            ShardRequest::ProducerId => ShardReply::ProducerId(self.next_producer_id().await),
            ShardRequest::ConnectionSlot { ip, limit: Some(limit) } => {
                let mut open = self.connections_per_ip.borrow_mut();
                let count = open.entry(ip).or_insert(0);
                let granted = *count < limit;
                if granted {
                    *count += 1;
                } else if *count == 0 {
                    open.remove(&ip);
                }
                ShardReply::SlotGranted(granted)
            }
            ShardRequest::ConnectionSlot { ip, limit: None } => {
                let mut open = self.connections_per_ip.borrow_mut();
                if let Some(count) = open.get_mut(&ip) {
                    *count -= 1;
                    if *count == 0 {
                        open.remove(&ip);
                    }
                }
                ShardReply::Done
            }
            ShardRequest::AutoCreate(names) => {
                self.auto_create(names).await;
                ShardReply::Done
            }
            ShardRequest::Close => {
                self.close_logs().await;
                ShardReply::Done
            }
            ShardRequest::ApplyCluster(update) => {
                self.apply_cluster(*update).await;
                ShardReply::Done
            }
            ShardRequest::Replication(list) => {
                self.receive_envelopes(list);
                ShardReply::Done
            }
            ShardRequest::ClusterFrame(frame) => {
                if let Some(agent) = self.agent.get() {
                    agent.deliver(frame);
                }
                ShardReply::Done
            }
            ShardRequest::Metrics => {
                let mut metrics = self.metrics.borrow().clone();
                metrics.storage = crate::storage::shard_stats();
                metrics.failed_logs = self.logs.borrow().values().filter(|l| l.failure().is_some()).count() as u64;
                metrics.logs_reopened = self.repairs.reopened.get();
                metrics.produce_refused_no_space = self.space.refused.get();
                if let Some(host) = self.host.get() {
                    (metrics.replication_throttled_bytes, metrics.replication_throttle_wait_ms) =
                        host.throttle_counters();
                }
                self.space.refresh(std::time::Instant::now());
                let (free, total) = self.space.free_and_total();
                metrics.data_dir = Some(crate::metrics::DataDirGauges {
                    free_bytes: free,
                    total_bytes: total,
                    min_free_bytes: self.space.min_free(),
                    full: self.space.is_low(),
                });
                ShardReply::Metrics(Box::new(metrics))
            }
            ShardRequest::Group(request) => {
                if let Err(e) = self.check_coordinator(&request) {
                    return ShardReply::Group(crate::groups::GroupReply::Done(Err(e)));
                }
                ShardReply::Group(self.groups.handle(&**self, request).await)
            }
            ShardRequest::GroupOffsets => ShardReply::GroupOffsets(self.groups.all_committed()),
            ShardRequest::Txn(request) => {
                // Boxed: a coordinator's request calls other shards (`call` again).
                let handled: io::LocalFuture<'_, crate::txn::TxnReply> = Box::pin(self.txns.handle(self, request));
                ShardReply::Txn(handled.await)
            }
            ShardRequest::WriteMarker { topic, partition, marker } => {
                match self.write_marker_local(&topic, partition, marker).await {
                    Ok(()) => ShardReply::Done,
                    Err(e) => ShardReply::Failed(e),
                }
            }
            ShardRequest::Producers { topic, partition } => {
                ShardReply::Producers(self.producers_local(&topic, partition))
            }
            ShardRequest::LogSizes => ShardReply::LogSizes(
                self.logs
                    .borrow()
                    .iter()
                    .map(|(key, log)| (key.clone(), log.segments().iter().map(|s| s.size_bytes).sum()))
                    .collect(),
            ),
            ShardRequest::OpenFailures { topic } => ShardReply::OpenFailures(
                self.open_failures
                    .borrow()
                    .iter()
                    .filter(|(key, _)| key.topic == topic)
                    .map(|(key, why)| (key.partition, why.clone()))
                    .collect(),
            ),
            ShardRequest::DeleteRecords { topic, partition, offset } => {
                ShardReply::LowWatermark(self.delete_records_local(&topic, partition, offset).await)
            }
        }
    }

    fn local_log(&self, topic: &str, partition: u32) -> Result<Rc<PartitionLog>, NodeError> {
        self.check_partition(topic, partition)?;
        self.log(topic, partition).ok_or_else(|| not_replicated(topic, partition))
    }

    /// The partition's replication id, if this shard replicates it.
    fn replica_id(&self, topic: &str, partition: u32) -> Result<crate::replication::ClusterPartitionId, NodeError> {
        self.host().partition_id(topic, partition).ok_or_else(|| not_replicated(topic, partition))
    }

    /// The offset consumers may read up to, on the leader only: the high watermark, or the
    /// log's written end if that is lower (a leader alone in its ISR moves the high
    /// watermark when the log gives its append offsets, before the write completes).
    fn readable_end(&self, topic: &str, partition: u32) -> Result<Offset, NodeError> {
        self.readable_end_on(topic, partition, Replicas::Leader)
    }

    /// `readable_end`, on the leader or (a fetch from a follower) on any replica.
    fn readable_end_on(&self, topic: &str, partition: u32, on: Replicas) -> Result<Offset, NodeError> {
        let hw = self.host().readable(self.replica_id(topic, partition)?, (topic, partition), on)?;
        Ok(self.log(topic, partition).map_or(hw, |log| hw.min(log.log_end_offset())))
    }

    /// A group's coordinator is the leader of its offsets partition: any other node
    /// answers NOT_COORDINATOR (the client finds the leader and retries).
    fn check_coordinator(&self, request: &GroupRequest) -> Result<(), NodeError> {
        let Some(group) = request.group() else { return Ok(()) };
        let partition = offsets_partition(group);
        // A node that restarted serves its replicas from its last view until its new life
        // is registered; meanwhile it may think it still leads a partition it lost, and a
        // group it took then would be a second one (the client then waits out a rebalance
        // at the real coordinator): groups wait for the registered view. The view and the
        // replica must both say this node leads: groups are loaded and forgotten as the view
        // changes (`follow_leadership`), so a group taken while only the replica still led
        // would outlive its leadership here.
        let registered = self.view.borrow().registered;
        let leader = self.placement(OFFSETS_TOPIC, partition).leader;
        let in_view = leader == Some(self.host().node());
        match self.readable_end(OFFSETS_TOPIC, partition) {
            Ok(_) if registered && in_view && self.log(OFFSETS_TOPIC, partition).is_some() => Ok(()),
            Ok(_) | Err(_) => {
                let leader = leader.map_or("no node yet".to_string(), |l| format!("node {}", l.0));
                Err(NodeError::new(
                    ErrorKind::NotCoordinator,
                    format!(
                        "this node does not coordinate group {group:?}: its offsets partition \
                         {OFFSETS_TOPIC}-{partition} is led by {leader}"
                    ),
                ))
            }
        }
    }

    /// Resolves once consumers can read at `offset` of a partition this shard owns (its
    /// high watermark passed it and the log has written it, see `readable_end`) or this
    /// node stops leading it. Callers bound it.
    pub async fn wait_for_readable(&self, topic: &str, partition: u32, offset: Offset, on: Replicas) {
        if let Ok(id) = self.replica_id(topic, partition) {
            self.host().wait_for_high_watermark(id, offset, on).await;
            if let Some(log) = self.log(topic, partition) {
                log.wait_for_data(offset).await;
            }
        }
    }

    /// Appends batches to a partition this shard owns and leads with `acks` (0, 1 or -1:
    /// all). With `verify` (a Kafka transactional produce), a transactional batch that
    /// opens its producer's transaction here is confirmed at that transactional id's
    /// coordinator first (`ops::txn::guard`).
    pub async fn append_local(
        self: &Rc<Self>,
        topic: &str,
        partition: u32,
        batches: &[u8],
        acks: i16,
        verify: Option<&str>,
    ) -> Result<Appended, NodeError> {
        let log = self.local_log(topic, partition)?;
        let replica = self.replica_id(topic, partition)?;
        self.space.check(topic, partition, batches.len() as u64)?;
        let guard = match verify {
            Some(id) => {
                // Boxed: asking the coordinator may come back through `handle`.
                let tp = TopicPartition::new(topic, partition);
                let asked: io::LocalFuture<'_, _> = Box::pin(crate::ops::txn::guard(self, &log, id, &tp, batches));
                asked.await?
            }
            None => None,
        };
        // As Kafka: an idempotent producer sends one batch per partition per request, so
        // that a retry is one unit (the log answers it from the stored batch).
        let acks = match acks {
            0 => crate::replication::Acks::None,
            1 => crate::replication::Acks::Leader,
            _ => crate::replication::Acks::All,
        };
        let info = self.host().append(&log, replica, acks, batches, (topic, partition), guard).await?;
        {
            let mut metrics = self.metrics.borrow_mut();
            let counters = metrics.topic(topic);
            if info.duplicate {
                counters.duplicate_batches_in += 1;
            } else {
                counters.bytes_in += batches.len() as u64;
                counters.records_in += info.last_offset.0 + 1 - info.base_offset.0;
            }
        }
        Ok(Appended {
            base_offset: info.base_offset,
            log_start_offset: log.log_start_offset(),
            log_append_time_ms: info.log_append_time_ms,
        })
    }

    /// Appends a coordinator's records (group offsets and metadata, transaction states)
    /// to a partition of an internal topic this shard holds, acknowledged by its in-sync
    /// replicas.
    pub async fn append_internal(&self, topic: &str, partition: u32, batch: &[u8]) -> Result<(), NodeError> {
        let log = self.log(topic, partition).ok_or_else(|| {
            NodeError::new(
                ErrorKind::CoordinatorNotAvailable,
                format!("the internal partition {topic}-{partition} is not open here"),
            )
        })?;
        let id = self.replica_id(topic, partition)?;
        self.host().append(&log, id, crate::replication::Acks::All, batch, (topic, partition), None).await.map(|_| ())
    }

    /// Writes a transaction's commit or abort marker to a partition this shard owns and
    /// leads (acknowledged by its in-sync replicas). A marker on an offsets partition
    /// also settles the producer's transactional offset commits there.
    pub async fn write_marker_local(
        &self,
        topic: &str,
        partition: u32,
        marker: crate::ops::txn::Marker,
    ) -> Result<(), NodeError> {
        use sluice_schemas::control::{control_batch, ControlType};
        let log = self.local_log(topic, partition)?;
        let replica = self.replica_id(topic, partition)?;
        let control = if marker.commit { ControlType::Commit } else { ControlType::Abort };
        let now = io::Clock::system().now_ms();
        let batch = control_batch(marker.producer_id, marker.epoch, control, marker.coordinator_epoch, now);
        self.host().append_marker(&log, replica, &batch, (topic, partition)).await?;
        if topic == OFFSETS_TOPIC {
            self.groups.transaction_ended(marker.producer_id, marker.commit);
        }
        Ok(())
    }

    /// This node's id in the cluster.
    #[must_use]
    pub fn node_id(&self) -> crate::replication::NodeId {
        self.host().node()
    }

    /// Runs a transaction request on the shard coordinating its transactional id (List:
    /// on every shard, merged).
    pub async fn txn_call(self: &Rc<Self>, request: crate::txn::TxnRequest) -> crate::txn::TxnReply {
        use crate::txn::{txn_partition, TxnReply, TXN_TOPIC};
        let Some(id) = request.transactional_id() else {
            let mut all = Vec::new();
            for s in 0..self.shards {
                if let ShardReply::Txn(TxnReply::Listed(list)) =
                    self.call(ShardId(s), ShardRequest::Txn(crate::txn::TxnRequest::List)).await
                {
                    all.extend(list);
                }
            }
            all.sort_by(|a, b| a.0.cmp(&b.0));
            return TxnReply::Listed(all);
        };
        let owner = self.owner(TXN_TOPIC, txn_partition(id));
        match self.call(owner, ShardRequest::Txn(request)).await {
            ShardReply::Txn(reply) => reply,
            ShardReply::Failed(e) => TxnReply::Done(Err(e)),
            other => TxnReply::Done(Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reply {other:?}")))),
        }
    }

    /// Reads from a partition this shard owns, without copying the record bytes. With
    /// `read_committed` (Kafka's isolation level) it reads only below the last stable
    /// offset and names the aborted transactions that may have records in the read.
    pub async fn read_local(
        &self,
        topic: &str,
        partition: u32,
        offset: Offset,
        max_bytes: u32,
        read_committed: bool,
        on: Replicas,
    ) -> Result<(Vec<io::IoBytes>, ReadResult), NodeError> {
        let log = self.local_log(topic, partition)?;
        let hw = self.readable_end_on(topic, partition, on)?;
        let lso = hw.min(log.last_stable_offset());
        let end = if read_committed { lso } else { hw };
        // A follower may be behind the offset its consumer got from the leader: nothing to
        // serve yet rather than out of range (it catches up).
        let past_hw = offset >= end && (offset <= log.log_end_offset() || on == Replicas::Any);
        let mut fetched = if past_hw {
            // At or past the high watermark: nothing to serve yet (as at a log end).
            crate::storage::Fetched::empty(offset, log.log_start_offset(), log.log_end_offset())
        } else {
            log.read(offset, u64::from(max_bytes)).await.map_err(|e| from_storage(topic, partition, &e))?
        };
        fetched.chunks = below(std::mem::take(&mut fetched.chunks), end);
        let aborted = if read_committed && !fetched.chunks.is_empty() {
            log.aborted_transactions(offset, end).into_iter().map(|a| (a.producer_id, a.first_offset)).collect()
        } else {
            Vec::new()
        };
        let summary = ReadResult {
            bytes: Vec::new(),
            high_watermark: hw,
            log_start_offset: fetched.log_start,
            last_stable_offset: lso,
            aborted,
        };
        let by_follower = on == Replicas::Any && self.placement(topic, partition).leader != Some(self.host().node());
        let mut metrics = self.metrics.borrow_mut();
        metrics.fetch_bytes_served += fetched.bytes();
        if by_follower {
            metrics.fetch_bytes_served_by_follower += fetched.bytes();
        }
        let counters = metrics.topic(topic);
        counters.bytes_out += fetched.bytes();
        counters.records_out += fetched.chunks.iter().map(|c| crate::metrics::records_in(c)).sum::<u64>();
        drop(metrics);
        Ok((fetched.chunks, summary))
    }

    /// -1: the log end; -2 and -4: the log start; -3: the record with the largest
    /// timestamp; -5 (the latest tiered offset): none; else the first offset whose record
    /// timestamp is at or after `timestamp`, with that record's timestamp (`None` when
    /// there is none). The log end and start come with timestamp -1, as in Kafka.
    pub async fn list_offset_local(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
        read_committed: bool,
    ) -> Result<Option<OffsetAndTime>, NodeError> {
        let log = self.local_log(topic, partition)?;
        match timestamp {
            LATEST if read_committed => {
                Ok(Some((self.readable_end(topic, partition)?.min(log.last_stable_offset()), -1)))
            }
            LATEST => Ok(Some((self.readable_end(topic, partition)?, -1))),
            // No tiered storage: the local log start is the earliest there is.
            EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
            MAX_TIMESTAMP => {
                let newest = log.segments().iter().filter(|s| s.next_offset > s.base).map(|s| s.max_timestamp).max();
                match newest {
                    Some(t) if t >= 0 => self.offset_for_time(&log, topic, partition, t).await,
                    _ => Ok(None),
                }
            }
            // Nothing is tiered: Kafka answers no offset.
            LATEST_TIERED => Ok(None),
            t if t < 0 => Err(NodeError::new(
                ErrorKind::InvalidRequest,
                format!("timestamp {t} is not a time, nor -1 (latest), -2 (earliest), -3 (max timestamp), -4 (earliest local) or -5 (latest tiered)"),
            )),
            t => self.offset_for_time(&log, topic, partition, t).await,
        }
    }

    /// The first record whose timestamp reaches `t`, with its timestamp.
    async fn offset_for_time(
        &self,
        log: &PartitionLog,
        topic: &str,
        partition: u32,
        t: i64,
    ) -> Result<Option<OffsetAndTime>, NodeError> {
        let batch = log.offset_for_timestamp(t).await.map_err(|e| from_storage(topic, partition, &e))?;
        let Some(batch) = batch else { return Ok(None) };
        // The log finds the first batch whose max timestamp reaches `t`; the protocol
        // (as Kafka) answers the first record in it that does, decompressing the
        // batch when it must (as Kafka's broker does for this lookup).
        let read = log.read(batch, 1).await.map_err(|e| from_storage(topic, partition, &e))?;
        let bytes = read.to_vec();
        let limit = self.config.topic_defaults.batch_bytes_max as usize * 64;
        let record = sluice_schemas::compression::with_records(&bytes, limit, |mut records| {
            records
                .find_map(|r| r.ok().filter(|r| r.offset >= batch && r.timestamp >= t).map(|r| (r.offset, r.timestamp)))
        })
        .map_err(|e| NodeError::new(ErrorKind::Storage, format!("{topic}-{partition}: reading batch {batch}: {e}")))?;
        Ok(Some(record.map_or((batch, -1), |(offset, timestamp)| (offset, timestamp))))
    }

    /// Moves a partition's log start to `offset` (-1: the log end), deleting the whole
    /// segments below it. Returns the new log start.
    /// The idempotent producers the partition knows, on its leader only (a follower's
    /// state may be behind).
    pub fn producers_local(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<crate::storage::producers::ProducerSummary>, NodeError> {
        let log = self.local_log(topic, partition)?;
        let id = self.replica_id(topic, partition)?;
        self.host().readable(id, (topic, partition), Replicas::Leader)?;
        Ok(log.producers())
    }

    pub async fn delete_records_local(&self, topic: &str, partition: u32, offset: i64) -> Result<Offset, NodeError> {
        if topic == OFFSETS_TOPIC {
            return Err(NodeError::new(
                ErrorKind::InvalidTopic,
                format!("{topic} is an internal topic; its records are the groups' committed offsets"),
            ));
        }
        let log = self.local_log(topic, partition)?;
        let target = match offset {
            -1 => log.log_end_offset(),
            o if o < 0 => {
                return Err(NodeError::new(ErrorKind::OffsetOutOfRange, format!("offset {o} is not -1 or an offset")));
            }
            o => Offset(o as u64),
        };
        log.advance_log_start(target).await.map_err(|e| from_storage(topic, partition, &e))?;
        Ok(log.log_start_offset())
    }

    /// Makes this shard's partitions match `metadata`: opens the ones it now owns,
    /// closes and removes the ones whose topic is gone, reopens those whose configs
    /// changed.
    async fn apply_metadata(&self, metadata: Metadata) {
        let previous = self.metadata.replace(Rc::new(metadata));
        let current = self.metadata();
        // Topics removed: close and delete their partitions, and forget groups' offsets.
        for topic in previous.topics() {
            if current.topic(&topic.name).is_none() {
                self.open_failures.borrow_mut().retain(|key, _| key.topic != topic.name);
                self.groups.forget_topic(self, &topic.name).await;
                for p in 0..topic.partitions {
                    let key = TopicPartition::new(topic.name.as_str(), p);
                    let log = self.logs.borrow_mut().remove(&key);
                    if let Some(log) = log {
                        if let Err(e) = self.close_and_delete(&key, log).await {
                            warn!(topic = %key.topic, partition = p, "removing a deleted partition: {e}");
                        }
                    }
                }
            }
        }
        // Partitions moved off this node (a completed reassignment): the replicas that
        // stay hold everything acknowledged, so this copy is closed and deleted.
        let moved: Vec<TopicPartition> = self
            .logs
            .borrow()
            .keys()
            .filter(|k| current.topic(&k.topic).is_some() && !self.replicates(&k.topic, k.partition))
            .cloned()
            .collect();
        for key in moved {
            self.open_failures.borrow_mut().remove(&key);
            let log = self.logs.borrow_mut().remove(&key);
            if let Some(log) = log {
                match self.close_and_delete(&key, log).await {
                    Ok(()) => {
                        info!(topic = %key.topic, partition = key.partition, "replica moved off this node: its copy is deleted")
                    }
                    Err(e) => warn!(topic = %key.topic, partition = key.partition, "removing a moved replica: {e}"),
                }
            }
        }
        // Partitions to open, opened many at a time: a node with thousands of partitions
        // starts in seconds (each open waits on the disk: a directory sync, a tail scan).
        let mut to_open = Vec::new();
        for topic in current.topics() {
            let changed = previous.topic(&topic.name).is_some_and(|old| old.configs != topic.configs);
            for p in 0..topic.partitions {
                if self.owner(&topic.name, p) != self.id || !self.replicates(&topic.name, p) {
                    continue;
                }
                let key = TopicPartition::new(topic.name.as_str(), p);
                if changed {
                    let old = self.logs.borrow_mut().remove(&key);
                    if let Some(old) = old {
                        close_log(old).await;
                    }
                }
                if !self.logs.borrow().contains_key(&key) && !self.resetting.borrow().contains(&key) {
                    to_open.push((topic, p, key));
                }
            }
        }
        for chunk in to_open.chunks(OPENS_AT_ONCE) {
            let opens: Vec<io::LocalFuture<'_, _>> = chunk
                .iter()
                .map(|(topic, p, _)| -> io::LocalFuture<'_, _> { Box::pin(self.open_log(topic, *p)) })
                .collect();
            for ((topic, p, key), opened) in chunk.iter().zip(io::join_all(opens).await) {
                match opened {
                    Ok(log) => {
                        if topic.name == OFFSETS_TOPIC {
                            self.groups.load(*p, &log).await;
                        }
                        self.open_failures.borrow_mut().remove(key);
                        self.logs.borrow_mut().insert(key.clone(), Rc::new(log));
                    }
                    Err(e) => {
                        let e = descriptors::describe_open_failure(e);
                        warn!(topic = %topic.name, partition = p, "partition not opened: {e}");
                        self.open_failures.borrow_mut().insert(key.clone(), e);
                    }
                }
            }
        }
    }

    /// Closes a partition's log (taken out of `logs`) and deletes its directory (already
    /// gone is fine); the error names the directory.
    pub(super) async fn close_and_delete(&self, key: &TopicPartition, log: Rc<PartitionLog>) -> Result<(), String> {
        close_log(log).await;
        let dir = partition_dir(&self.config.data_dir, &key.topic, key.partition);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("removing {}: {e}", dir.display())),
            _ => Ok(()),
        }
    }

    async fn open_log(&self, topic: &Topic, partition: u32) -> Result<PartitionLog, String> {
        let dir = partition_dir(&self.config.data_dir, &topic.name, partition);
        let config = topic.log_config(&self.config.topic_defaults);
        let (log, report) = PartitionLog::open(&dir, config).await.map_err(|e| e.to_string())?;
        for cut in &report.truncations {
            warn!(segment = %cut.segment.display(), offset = %cut.offset, position = cut.position,
                  bytes_cut = cut.bytes_cut, reason = %cut.reason, "recovery cut a torn tail");
        }
        Ok(log)
    }

    /// Closes every log of this shard (shutdown).
    pub async fn close_logs(&self) {
        let mut logs = self.logs.borrow_mut().drain().map(|(_, log)| log).collect::<Vec<_>>().into_iter();
        loop {
            let closes: Vec<io::LocalFuture<'static, ()>> = logs
                .by_ref()
                .take(OPENS_AT_ONCE)
                .map(|log| -> io::LocalFuture<'static, ()> { Box::pin(close_log(log)) })
                .collect();
            if closes.is_empty() {
                break;
            }
            io::join_all(closes).await;
        }
    }

    /// Runs an admin request as controller commands; only on shard 0 (others forward it
    /// there).
    async fn admin(self: &Rc<Self>, request: AdminRequest) -> AdminResult {
        match self.agent.get() {
            Some(agent) => self.cluster_admin(agent, request).await,
            None => {
                let e =
                    NodeError::new(ErrorKind::Unknown, format!("admin request on shard {}, not shard 0", self.id.0));
                AdminResult { results: request.topic_names().into_iter().map(|n| (n, Err(e.clone()))).collect() }
            }
        }
    }
}

/// An inter-node Kafka request waiting for its answer: the node asked, and where the
/// answer goes.
type KafkaCall = (crate::replication::NodeId, crate::io::OneshotSender<Vec<u8>>);

/// Logs opened (or closed) at once by one shard.
const OPENS_AT_ONCE: usize = 64;

/// Creates the internal offsets topic with `replication_factor`.
/// The transactions' state topic, as Kafka makes it when the first transactional
/// producer looks for its coordinator: replicated to 3 nodes (or all there are), with
/// min.insync.replicas 2 (or 1 on fewer nodes), compacted.
fn txn_topic(live_nodes: usize) -> NewTopic {
    let factor = live_nodes.clamp(1, 3) as u16;
    NewTopic {
        name: crate::txn::TXN_TOPIC.to_string(),
        partitions: crate::txn::TXN_PARTITIONS,
        replication_factor: factor,
        configs: std::collections::BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("min.insync.replicas".to_string(), factor.min(2).to_string()),
        ]),
    }
}

fn offsets_topic_request(replication_factor: u16) -> AdminRequest {
    AdminRequest::CreateTopics {
        topics: vec![NewTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: OFFSETS_PARTITIONS,
            replication_factor,
            // Committed offsets outlive any retention; compaction keeps the latest
            // commit of each (group, topic, partition) and drops deleted groups.
            configs: std::collections::BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
        }],
        validate_only: false,
    }
}

/// A partition this node does not lead or replicate, in a cluster.
fn not_replicated(topic: &str, partition: u32) -> NodeError {
    NodeError::new(
        ErrorKind::NotLeaderOrFollower,
        format!("{topic}-{partition}: this node does not lead it; refresh metadata and retry"),
    )
}

/// The whole batches of `chunks` that lie below `end` (batches never span chunks).
fn below(chunks: Vec<io::IoBytes>, end: Offset) -> Vec<io::IoBytes> {
    let mut out = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let mut keep = 0;
        for batch in sluice_schemas::batch::BatchWalker::new(&chunk) {
            match batch {
                Ok((position, header, _)) if header.base_offset() < end => {
                    keep = position + header.total_bytes().unwrap_or(0);
                }
                _ => break,
            }
        }
        if keep == chunk.len() {
            out.push(chunk);
            continue;
        }
        if keep > 0 {
            out.push(chunk.slice(0..keep));
        }
        break;
    }
    out
}

async fn close_log(log: Rc<PartitionLog>) {
    // Other tasks may still hold the log for a moment (a read in flight); the last
    // holder's drop lets the flusher finish. Close now when we are the only holder.
    match Rc::try_unwrap(log) {
        Ok(log) => {
            let dir = log.dir().to_path_buf();
            if let Err(e) = log.close().await {
                warn!(dir = %dir.display(), "closing a partition log: {e}");
            }
        }
        Err(shared) => {
            let _ = shared.sync().await;
        }
    }
}

fn spawn_receivers(shard: &Rc<Shard>, receivers: Vec<MeshReceiver<messages::ShardMsg>>) {
    for stream in receivers {
        let shard = shard.clone();
        io::spawn_detached(async move {
            while let Some(message) = stream.recv().await {
                match message {
                    messages::ShardMsg::Request { id, from, request } => {
                        let shard = shard.clone();
                        io::spawn_detached(async move {
                            let reply = shard.handle(request).await;
                            let _ = shard
                                .senders
                                .send_to(usize::from(from.0), messages::ShardMsg::Reply { id, reply })
                                .await;
                        });
                    }
                    messages::ShardMsg::Reply { id, reply } => {
                        if let Some(tx) = shard.pending.borrow_mut().remove(&id) {
                            tx.send(reply);
                        }
                    }
                }
            }
        });
    }
}

/// Applies every owned log's retention each `retention_check_ms`, while the shard lives.
fn spawn_retention(shard: std::rc::Weak<Shard>) {
    io::spawn_detached(async move {
        loop {
            let interval = match shard.upgrade() {
                Some(s) => s.config.retention_check_ms,
                None => return,
            };
            io::sleep(Duration::from_millis(interval)).await;
            let Some(s) = shard.upgrade() else { return };
            let logs: Vec<(String, u32, Rc<PartitionLog>)> =
                s.logs.borrow().iter().map(|(tp, l)| (tp.topic.clone(), tp.partition, l.clone())).collect();
            drop(s);
            for (topic, partition, log) in logs {
                if let Err(e) = log.apply_retention().await {
                    warn!(%topic, partition, "retention failed: {e}");
                }
            }
        }
    });
}

/// How often shard 0 hands the memory the allocator holds free back to the system.
const MEMORY_TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Shard 0, every `MEMORY_TRIM_INTERVAL`: glibc's allocator keeps what a thread frees in
/// that thread's arena (64 MiB heaps), so buffers of fetches and writes across a thousand
/// partitions leave the resident size far above what is live; `malloc_trim` returns the
/// free pages of every arena (the 1,000-partition test in `tests/cli.rs`: 273 MiB
/// resident after reading 192 MB back without it, 139 MiB with it). It walks the
/// arenas' free lists: milliseconds, every few seconds.
fn spawn_memory_trim(shard: std::rc::Weak<Shard>) {
    io::spawn_detached(async move {
        loop {
            io::sleep(MEMORY_TRIM_INTERVAL).await;
            if shard.upgrade().is_none() {
                return;
            }
            // SAFETY: malloc_trim only releases free memory of the allocator's arenas; it
            // touches no memory the program holds.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
}

/// Compacts every owned partition of a compacted topic each `compaction_check_ms`.
fn spawn_cleaner(shard: std::rc::Weak<Shard>) {
    io::spawn_detached(async move {
        loop {
            let interval = match shard.upgrade() {
                Some(s) => s.config.compaction_check_ms,
                None => return,
            };
            io::sleep(Duration::from_millis(interval)).await;
            let Some(s) = shard.upgrade() else { return };
            let rate = s.config.compaction_bytes_per_s;
            let logs: Vec<(String, u32, Rc<PartitionLog>)> = s
                .logs
                .borrow()
                .iter()
                .filter(|(_, l)| l.config().cleanup_compact)
                .map(|(tp, l)| (tp.topic.clone(), tp.partition, l.clone()))
                .collect();
            drop(s);
            for (topic, partition, log) in logs {
                let (lag, tombstones) = (log.config().min_compaction_lag_ms, log.config().delete_retention_ms);
                if let Err(e) = log.compact(lag, tombstones, rate).await {
                    warn!(%topic, partition, "compaction failed: {e}");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topics_partitions_spread_round_robin_over_the_shards() {
        let owners: Vec<u16> = (0..8).map(|p| shard_for("orders", p, 4).0).collect();
        for pair in owners.windows(2) {
            assert_eq!((pair[0] + 1) % 4, pair[1]);
        }
        assert!((0..100).all(|p| shard_for("x", p, 1) == ShardId(0)));
    }
}
