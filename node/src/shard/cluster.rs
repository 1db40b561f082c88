//! A shard's part in the cluster: the cluster view it serves metadata from, the partitions
//! it replicates, how shard 0 routes replication messages to the shard that owns their
//! partition, and how admin requests become controller commands.
//!
//! Every node is in a cluster: one started without `--peer` is a cluster of one, its own
//! controller (a quorum of one voter) and every partition's only replica, through the
//! same code. Shard 0 of every node runs the cluster agent (controller voter or learner,
//! and the transport; a cluster of one has no cluster listener). Each time the quorum
//! applies commands, shard 0 derives a `ClusterUpdate` (topics, partition states, live
//! nodes) from the committed state and gives it to every shard, which opens the logs of
//! the partitions it owns and this node replicates, hosts them in its `ReplicaHost` and
//! feeds it their committed states. Every node holds the committed state and answers
//! metadata from it.
//!
//! A data directory of a single node from before (topics in `metadata.toml`) is migrated
//! at the first start: its topics become controller commands, their logs are kept, and the
//! file is renamed `metadata.toml.migrated`.
//!
//! Lives on: every shard's executor (the view and host are per shard).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_schemas::ids::LeaderEpoch;
use sluice_schemas::TopicPartition;
use tracing::{info, warn};

use crate::replication::ClusterPartitionId;

use super::{messages, AdminRequest, AdminResult, Shard, ShardId, ShardReply, ShardRequest};
pub use crate::cluster::agent::QuorumMembers;
use crate::cluster::agent::{Agent, AgentConfig, AgentHooks};
use crate::cluster::host::{partition_of, HostLogs, ReplicaHost};
use crate::cluster::transport::{Handler, Inbound, Transport};
use crate::errors::{ErrorKind, NodeError};
use crate::groups::{OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::replication::{
    wire, ClusterState, Command, ControllerConfig, Envelope, Incarnation, Message, NodeEndpoints, NodeId,
    PartitionConfig, PartitionState, ProducerIdBlock, ReplicaConfig,
};
use crate::storage::PartitionLog;
use crate::topics::{Metadata, Topic, TopicId};
use sluice_replication::state::{ScramCredential, ScramMechanism};

/// Which shard of this node holds each partition it replicates: lines of `TOPIC PARTITION
/// SHARD` (topic names have no spaces).
pub const SHARD_MAP_FILE: &str = "shard-map";

/// Reads `SHARD_MAP_FILE`; lines that do not parse are skipped (their partitions are
/// placed again).
fn parse_shard_map(text: &str) -> HashMap<TopicPartition, ShardId> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            let (topic, partition, shard) = (words.next()?, words.next()?, words.next()?);
            Some((TopicPartition::new(topic, partition.parse().ok()?), ShardId(shard.parse().ok()?)))
        })
        .collect()
}

/// `SHARD_MAP_FILE`'s text for `placed`, one sorted line per partition.
fn shard_map_text(placed: &HashMap<TopicPartition, ShardId>) -> String {
    let mut lines: Vec<String> =
        placed.iter().map(|(tp, s)| format!("{} {} {}\n", tp.topic, tp.partition, s.0)).collect();
    lines.sort();
    lines.concat()
}

/// Keeps the partitions of `mine` that `placed` has (on a shard that exists), drops the
/// others, and puts each new one on the shard with the fewest partitions.
fn assign_shards(placed: &mut HashMap<TopicPartition, ShardId>, mine: &[TopicPartition], shards: u16) {
    let wanted: std::collections::HashSet<&TopicPartition> = mine.iter().collect();
    placed.retain(|k, shard| wanted.contains(k) && shard.0 < shards);
    let mut load = vec![0usize; usize::from(shards)];
    for shard in placed.values() {
        load[usize::from(shard.0)] += 1;
    }
    let mut new: Vec<&TopicPartition> = mine.iter().filter(|k| !placed.contains_key(*k)).collect();
    new.sort();
    for key in new {
        let least = (0..shards).min_by_key(|s| (load[usize::from(*s)], *s)).unwrap_or(0);
        load[usize::from(least)] += 1;
        placed.insert(key.clone(), ShardId(least));
    }
}

/// Moves that even out the partitions per shard (counts at most one apart), of
/// partitions `movable` says may move: each from the busiest shard to the idlest, the
/// first movable one in order. (key, from, to) per move.
fn shard_moves(
    placed: &HashMap<TopicPartition, ShardId>,
    shards: u16,
    movable: impl Fn(&TopicPartition) -> bool,
) -> Vec<(TopicPartition, ShardId, ShardId)> {
    let mut load = vec![0usize; usize::from(shards)];
    for shard in placed.values() {
        load[usize::from(shard.0)] += 1;
    }
    let mut candidates: Vec<(&TopicPartition, ShardId)> =
        placed.iter().filter(|(k, _)| movable(k)).map(|(k, s)| (k, *s)).collect();
    candidates.sort();
    let mut moves = Vec::new();
    loop {
        let busiest = (0..shards).max_by_key(|s| (load[usize::from(*s)], std::cmp::Reverse(*s))).unwrap_or(0);
        let idlest = (0..shards).min_by_key(|s| (load[usize::from(*s)], *s)).unwrap_or(0);
        if load[usize::from(busiest)] <= load[usize::from(idlest)] + 1 {
            return moves;
        }
        let Some(i) = candidates.iter().position(|(_, s)| s.0 == busiest) else { return moves };
        let (key, _) = candidates.remove(i);
        load[usize::from(busiest)] -= 1;
        load[usize::from(idlest)] += 1;
        moves.push((key.clone(), ShardId(busiest), ShardId(idlest)));
    }
}

/// How long a shard waits for the last reader or writer of a log it lets go of.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an admin request waits for its command to be applied.
pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a waiting admin request or start looks at the committed state again.
pub(super) const STATE_POLL: Duration = Duration::from_millis(2);

/// How long InitProducerId waits for the controller to give the node a block of ids.
const PRODUCER_IDS_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a node that waits for a block of producer ids asks again.
const PRODUCER_IDS_ASK_EVERY: Duration = Duration::from_millis(500);

/// Shard 0: the block of producer ids this life of the node is handing out (given by the
/// controller; see `Command::AllocateProducerIds`). Empty at start: a restarted node never
/// reuses a block, since it cannot know how much of it its previous life gave out.
#[derive(Debug, Default)]
pub(crate) struct ProducerIds {
    /// The first id of the block in use, the next id to give and the block's end.
    block: Option<(u64, u64, u64)>,
}

impl ProducerIds {
    /// The next id, from the block in use or from `given` (the node's block in the
    /// committed state) when that is newer and given to `incarnation`, this life; else
    /// `Err(after)`: the controller must give a block past the one starting at `after`.
    fn take(&mut self, incarnation: Incarnation, given: Option<ProducerIdBlock>) -> Result<u64, Option<u64>> {
        let after = self.block.map(|(first, _, _)| first);
        if let Some(b) = given.filter(|b| b.incarnation == incarnation && after.is_none_or(|a| b.first > a)) {
            if self.block.is_none_or(|(_, next, end)| next == end) {
                self.block = Some((b.first, b.first, b.first + b.count));
                info!(first = b.first, count = b.count, "this node got a block of producer ids");
            }
        }
        match self.block.as_mut() {
            Some((_, next, end)) if *next < *end => {
                *next += 1;
                Ok(*next - 1)
            }
            _ => Err(self.block.map(|(first, _, _)| first)),
        }
    }
}

/// The cluster as a shard serves it (derived from the committed controller state).
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// The voter the quorum follows, as shard 0's voter knows it.
    pub controller: Option<NodeId>,
    pub partitions: HashMap<TopicPartition, PartitionState>,
    pub ids: HashMap<ClusterPartitionId, TopicPartition>,
    pub configs: HashMap<ClusterPartitionId, PartitionConfig>,
    /// Nodes registered, unfenced and not shutting down.
    pub live: Vec<NodeId>,
    /// Every known node and whether it is fenced.
    pub nodes: Vec<(NodeId, bool)>,
    /// Nodes that registered in some life and were not removed since, fenced or not.
    pub registered_nodes: Vec<NodeId>,
    /// The Kafka listeners each node registered (its advertised ones, by name).
    pub listeners: HashMap<NodeId, Vec<crate::replication::AdvertisedListener>>,
    /// This life of the node is registered: the states are addressed to it.
    pub registered: bool,
    /// The shard of each partition this node replicates (`SHARD_MAP_FILE`).
    pub shards: HashMap<TopicPartition, ShardId>,
    /// SASL users' SCRAM credentials (`shard::users`).
    pub users: std::sync::Arc<BTreeMap<(String, ScramMechanism), ScramCredential>>,
    /// The access control entries, indexed (`crate::acl`).
    pub acls: std::sync::Arc<crate::acl::Acls>,
    /// The controller quorum's members (empty until this node's member knows them).
    pub quorum: QuorumMembers,
    /// Where each node that announced itself is reached, and its rack.
    pub endpoints: BTreeMap<NodeId, NodeEndpoints>,
}

impl ClusterView {
    /// A partition's replication settings (min.insync.replicas 1, clean elections, for
    /// one the view does not know).
    #[must_use]
    pub fn config_of(&self, id: ClusterPartitionId) -> PartitionConfig {
        let default = PartitionConfig { min_insync_replicas: 1, unclean_leader_election: false };
        self.configs.get(&id).copied().unwrap_or(default)
    }

    /// The cluster address of every node: its `--peer` entry (the operator's routing,
    /// which may go through a proxy), else what it announced (a node that joined).
    #[must_use]
    pub fn cluster_addresses(&self, peers: &BTreeMap<NodeId, Option<SocketAddr>>) -> BTreeMap<NodeId, SocketAddr> {
        let mut addresses = crate::cluster::transport::addresses(peers);
        for (node, e) in &self.endpoints {
            if let Ok(address) = e.cluster.parse() {
                addresses.entry(*node).or_insert(address);
            }
        }
        addresses
    }
}

/// What shard 0 gives every shard when the committed state changes.
#[derive(Clone, Debug)]
pub struct ClusterUpdate {
    pub metadata: Metadata,
    pub view: ClusterView,
}

/// How a node replicates in its cluster (settings every shard needs).
#[derive(Clone, Debug)]
pub struct ClusterSetup {
    pub node: NodeId,
    pub incarnation: Incarnation,
    /// Every node and its cluster address (a cluster of one has none).
    pub peers: BTreeMap<NodeId, Option<std::net::SocketAddr>>,
    pub voters: Vec<NodeId>,
    pub controller: ControllerConfig,
    pub replica: ReplicaConfig,
    /// Bytes per second a node's leaders send replicas outside the ISR, all shards
    /// together (`--replication-throttled-rate`; `None`: unthrottled).
    pub throttled_rate: Option<u64>,
    /// This node's endpoints, announced to the controller (`None`: a cluster of one).
    pub endpoints: Option<NodeEndpoints>,
    /// A running node's cluster listener this node joins through (`--join`).
    pub join: Option<SocketAddr>,
}

/// Where a partition lives, as Metadata answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub leader: Option<NodeId>,
    pub leader_epoch: LeaderEpoch,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
}

/// A node as Metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    pub id: NodeId,
    pub listen: std::net::SocketAddr,
    /// Where Kafka clients reach it, per listener name.
    pub kafka: Vec<crate::replication::AdvertisedListener>,
    /// Its rack (`--rack`), as it announced it.
    pub rack: Option<String>,
}

impl NodeAddress {
    /// Its Kafka listener named `name` (Kafka answers a request with the brokers'
    /// endpoints of the listener it came through; a broker without one is left out).
    #[must_use]
    pub fn kafka_endpoint(&self, name: &str) -> Option<(String, u16)> {
        self.kafka.iter().find(|l| l.name == name).map(|l| (l.host.clone(), l.port))
    }
}

impl HostLogs for Shard {
    fn hosted_log(&self, topic: &str, partition: u32) -> Option<Rc<PartitionLog>> {
        self.log(topic, partition)
    }

    /// Closes the log, deletes its directory, and opens an empty one that starts at
    /// `start`. A crash in between leaves no directory (an empty log at 0 is opened at
    /// start, and the leader tells it again where to start) or the empty one.
    fn reset_log(
        &self,
        topic: &str,
        partition: u32,
        start: sluice_schemas::ids::Offset,
    ) -> crate::io::LocalFuture<'_, Result<(), String>> {
        let key = TopicPartition::new(topic, partition);
        Box::pin(async move {
            let old = self.logs.borrow_mut().remove(&key).ok_or("its log is not open")?;
            self.resetting.borrow_mut().insert(key.clone());
            let reset = self.reset_closed_log(&key, old, start).await;
            self.resetting.borrow_mut().remove(&key);
            if reset.is_err() && !self.logs.borrow().contains_key(&key) {
                // Whatever the directory holds now is opened again (an empty log at 0 if
                // nothing): the leader tells the replica again where to start.
                if let Some(topic) = self.metadata().topic(&key.topic).cloned() {
                    match self.open_log(&topic, key.partition).await {
                        Ok(log) => {
                            self.logs.borrow_mut().insert(key.clone(), Rc::new(log));
                        }
                        Err(e) => warn!(topic = %key.topic, partition = key.partition, "partition not opened: {e}"),
                    }
                }
            }
            reset
        })
    }
}

impl Shard {
    /// `reset_log`'s work, while the partition is marked resetting.
    async fn reset_closed_log(
        &self,
        key: &TopicPartition,
        old: Rc<PartitionLog>,
        start: sluice_schemas::ids::Offset,
    ) -> Result<(), String> {
        self.close_and_delete(key, old).await?;
        let dir = super::partition_dir(&self.config.data_dir, &key.topic, key.partition);
        PartitionLog::prepare_empty(&dir, start).await.map_err(|e| e.to_string())?;
        let topic = self.metadata().topic(&key.topic).cloned().ok_or("its topic is gone")?;
        let log = self.open_log(&topic, key.partition).await?;
        info!(topic = %key.topic, partition = key.partition, %start, "log reset: it starts empty at the leader's log start");
        self.logs.borrow_mut().insert(key.clone(), Rc::new(log));
        Ok(())
    }
}

/// Clears a flag when its task ends, however it ends.
struct RunningFlag<'a>(&'a std::cell::Cell<bool>);

impl Drop for RunningFlag<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// The update the committed `state` makes, as node `me` in life `incarnation` sees it.
#[must_use]
pub fn update_of(
    state: &ClusterState,
    me: NodeId,
    incarnation: Incarnation,
    controller: Option<NodeId>,
    quorum: QuorumMembers,
) -> ClusterUpdate {
    let mut view = ClusterView {
        controller,
        quorum,
        endpoints: state.nodes().filter_map(|(id, r)| r.endpoints.clone().map(|e| (id, e))).collect(),
        registered: state.node(me).and_then(|r| r.incarnation) == Some(incarnation),
        live: state.nodes().filter(|(_, r)| r.eligible()).map(|(id, _)| id).collect(),
        nodes: state.nodes().map(|(id, r)| (id, r.fenced)).collect(),
        registered_nodes: state.nodes().filter(|(_, r)| r.incarnation.is_some()).map(|(id, _)| id).collect(),
        listeners: state
            .nodes()
            .filter(|(_, r)| !r.listeners.is_empty())
            .map(|(id, r)| (id, r.listeners.clone()))
            .collect(),
        users: std::sync::Arc::new(state.scram_credentials().clone()),
        acls: std::sync::Arc::new(crate::acl::Acls::new(state.acls())),
        ..ClusterView::default()
    };
    let mut topics = Vec::new();
    for (name, topic) in state.topics() {
        topics.push(Topic {
            name: name.clone(),
            id: topic.partitions.first().map_or(TopicId::NONE, |first| TopicId::derive(name, first.0)),
            partitions: topic.partitions.len() as u32,
            configs: topic.configs.clone(),
        });
        for (p, id) in topic.partitions.iter().enumerate() {
            if let Some(record) = state.partition_record(*id) {
                view.partitions.insert(TopicPartition::new(name.as_str(), p as u32), record.state.clone());
                view.ids.insert(*id, TopicPartition::new(name.as_str(), p as u32));
                view.configs.insert(*id, record.config);
            }
        }
    }
    let metadata = Metadata::of_cluster(topics, view.live.len() as u32);
    ClusterUpdate { metadata, view }
}

impl Shard {
    /// Where a partition lives: its leader, epoch, replicas and ISR.
    #[must_use]
    pub fn placement(&self, topic: &str, partition: u32) -> Placement {
        match self.view.borrow().partitions.get(&TopicPartition::new(topic, partition)) {
            Some(s) => Placement {
                leader: s.leader,
                leader_epoch: s.leader_epoch,
                replicas: s.replicas.clone(),
                isr: s.isr.clone(),
            },
            None => Placement { leader: None, leader_epoch: LeaderEpoch(0), replicas: Vec::new(), isr: Vec::new() },
        }
    }

    /// The cluster's live nodes (every node until this node has a committed state): the
    /// nodes native Metadata and DescribeCluster list, and that coordinators are found on.
    #[must_use]
    pub fn node_addresses(&self) -> Vec<NodeAddress> {
        self.addresses_of(|view, id| view.live.contains(&id))
    }

    /// The nodes Kafka's Metadata lists: every registered node, the fenced ones (a node
    /// that is down) too, until it is removed, as Redpanda lists its members. librdkafka
    /// (2.10 on) decommissions a broker that a Metadata response leaves out, and its
    /// `send_offsets_to_transaction` then waits forever on a group coordinator it had
    /// cached on that broker (librdkafka issue 5511): a transactional producer hung after
    /// a kill -9 of its group's coordinator. A down node's partitions name other leaders,
    /// so clients only try to connect to it.
    #[must_use]
    pub fn registered_node_addresses(&self) -> Vec<NodeAddress> {
        self.addresses_of(|view, id| view.live.contains(&id) || view.registered_nodes.contains(&id))
    }

    fn addresses_of(&self, listed: impl Fn(&ClusterView, NodeId) -> bool) -> Vec<NodeAddress> {
        let view = self.view.borrow().clone();
        // The `--peer` entries, and the nodes that joined since with the native address
        // they announced.
        let mut nodes = self.config.nodes();
        for (id, e) in &view.endpoints {
            let Ok(listen) = e.native.parse() else { continue };
            match nodes.iter_mut().find(|p| p.id == id.0) {
                Some(p) => p.listen = listen,
                None => nodes.push(crate::config::Peer { id: id.0, listen, cluster: None, kafka: None }),
            }
        }
        nodes.sort_by_key(|p| p.id);
        // Before the first committed state (no nodes known yet), every node.
        nodes
            .iter()
            .filter(|p| view.nodes.is_empty() || listed(&view, NodeId(p.id)))
            .map(|p| NodeAddress {
                id: NodeId(p.id),
                listen: p.listen,
                rack: view.endpoints.get(&NodeId(p.id)).and_then(|e| e.rack.clone()),
                kafka: if p.id == self.config.node_id {
                    self.config.advertised_listeners()
                } else {
                    // What the node registered, else its `--peer` entry's address as the
                    // first listener (the one `--peer` entries give) of this node's.
                    view.listeners.get(&NodeId(p.id)).cloned().unwrap_or_else(|| {
                        let first = self.config.kafka_listeners.first().map(|l| l.name.clone());
                        first
                            .zip(p.kafka)
                            .map(|(name, a)| crate::replication::AdvertisedListener {
                                name,
                                host: a.ip().to_string(),
                                port: a.port(),
                            })
                            .into_iter()
                            .collect()
                    })
                },
            })
            .collect()
    }

    /// The controller's node id.
    #[must_use]
    pub fn controller_id(&self) -> Option<NodeId> {
        self.view.borrow().controller
    }

    /// The cluster view.
    #[must_use]
    pub fn cluster_view(&self) -> Rc<ClusterView> {
        self.view.borrow().clone()
    }

    /// Starts this shard's part of the cluster (from `Shard::start`): on shard 0 the agent
    /// (serving the node's cluster listener, if it has one) and on every shard its replica
    /// host.
    pub(super) async fn start_cluster(self: &Rc<Self>, setup: &ClusterSetup) -> Result<(), String> {
        let logs: std::rc::Weak<dyn HostLogs> = Rc::downgrade(self) as std::rc::Weak<dyn HostLogs>;
        // The cluster link's mutual TLS: each shard reads the files (checked at start).
        let tls = match &self.config.cluster_tls_ca {
            Some(ca) => Some(std::sync::Arc::new(crate::tls::cluster(&self.config.tls, ca)?)),
            None => None,
        };
        let transport = if self.id == ShardId(0) {
            let listener = match setup.peers.get(&setup.node).copied().flatten() {
                Some(address) => Some(
                    sluice_io::net::Listener::bind(address)
                        .map_err(|e| format!("cluster listener on {address}: {e}"))?,
                ),
                None => None,
            };
            let (route, changed, create) = (Rc::downgrade(self), Rc::downgrade(self), Rc::downgrade(self));
            let hooks = AgentHooks {
                route: Box::new(move |list| {
                    if let Some(shard) = route.upgrade() {
                        shard.route(list);
                    }
                }),
                changed: Box::new(move || {
                    if let Some(shard) = changed.upgrade() {
                        shard.refresh_cluster();
                    }
                }),
                // Sent to every voter: the controller creates, the others ignore it (the
                // asking node asks again if the controller changed meanwhile).
                create_topics: Box::new(move |names| {
                    let Some(shard) = create.upgrade() else { return };
                    if shard.agent.get().is_some_and(|a| a.is_controller()) {
                        crate::io::spawn_detached(async move {
                            shard.auto_create(names).await;
                        });
                    }
                }),
            };
            let config = AgentConfig {
                node: setup.node,
                peers: setup.peers.clone(),
                voters: setup.voters.clone(),
                controller: setup.controller,
                tls,
                endpoints: setup.endpoints.clone(),
                join: setup.join,
                incarnation: setup.incarnation,
            };
            let dir = self.config.data_dir.join("controller");
            let agent =
                Agent::start(config, &dir, listener, hooks).await.map_err(|e| format!("controller voter: {e}"))?;
            let transport = agent.transport();
            let _ = self.agent.set(agent);
            transport
        } else {
            // Frames this shard sends to its own node (to the controller voter) go to shard 0.
            let weak = Rc::downgrade(self);
            let handler: Handler = Rc::new(move |frame: Inbound| {
                if let Some(shard) = weak.upgrade() {
                    crate::io::spawn_detached(async move {
                        let _ = shard.call(ShardId(0), ShardRequest::ClusterFrame(frame)).await;
                    });
                }
            });
            Transport::start(setup.node, &crate::cluster::transport::addresses(&setup.peers), handler, tls)
        };
        let host = ReplicaHost::start(
            setup.node,
            setup.incarnation,
            self.id.0,
            setup.voters.clone(),
            setup.replica.clone(),
            transport,
            logs,
            setup.throttled_rate.map(|rate| rate.div_ceil(u64::from(self.shards.max(1)))),
        );
        let _ = self.host.set(host);
        if self.id == ShardId(0) {
            self.refresh_cluster();
            self.spawn_offsets_topic_creation(setup.peers.len());
            self.spawn_bootstrap_user();
        }
        self.sync_host(&ClusterView::default());
        Ok(())
    }

    /// Shard 0: whichever node is the controller creates the offsets topic, replicated
    /// like any topic (factor 3, or fewer nodes), once that many nodes are live.
    fn spawn_offsets_topic_creation(self: &Rc<Self>, nodes: usize) {
        let factor = nodes.min(3) as u16;
        let weak = Rc::downgrade(self);
        crate::io::spawn_detached(async move {
            loop {
                crate::io::sleep(Duration::from_millis(200)).await;
                let Some(shard) = weak.upgrade() else { return };
                if shard.metadata().topic(OFFSETS_TOPIC).is_some() {
                    return;
                }
                shard.create_offsets_topic(factor).await;
            }
        });
    }

    /// Shard 0: creates the offsets topic if this node is the controller and `factor`
    /// nodes are live.
    async fn create_offsets_topic(self: &Rc<Self>, factor: u16) {
        let Some(agent) = self.agent.get().cloned() else { return };
        if agent.is_controller() && self.view.borrow().live.len() >= usize::from(factor) {
            let result = self.cluster_admin(&agent, super::offsets_topic_request(factor)).await;
            if let Some((_, Err(e))) = result.results.first() {
                if e.kind != ErrorKind::TopicAlreadyExists {
                    warn!("creating {OFFSETS_TOPIC}: {e}");
                }
            }
        }
    }

    /// Shard 0 of a node that is its quorum's only voter (a cluster of one), at start:
    /// waits until it is the controller and its life is registered, migrates a data
    /// directory from before (`metadata.toml`), creates the offsets topic, and waits
    /// until it leads every partition it replicates and every shard applied that, so
    /// that the node serves its first request as a single node always did. Gives up
    /// (with a warning) after `timeout`; the node then serves what it can.
    pub async fn await_sole_controller(self: &Rc<Self>, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let Some(agent) = self.agent.get().cloned() else { return Ok(()) };
        while !(agent.is_controller() && self.view.borrow().registered) {
            if Instant::now() >= deadline {
                warn!("this node did not become its own controller within {timeout:?}");
                return Ok(());
            }
            crate::io::sleep(STATE_POLL).await;
        }
        self.migrate_legacy_metadata(&agent).await?;
        self.create_offsets_topic(1).await;
        let me = self.host().node();
        loop {
            self.await_local_view(deadline).await;
            let view = self.view.borrow().clone();
            if !view.partitions.values().any(|s| s.replicas.contains(&me) && s.leader != Some(me)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                warn!("this node does not lead all its partitions {timeout:?} after it started");
                return Ok(());
            }
            crate::io::sleep(STATE_POLL).await;
        }
    }

    /// Shard 0: the topics of a single node's data directory from before it was a cluster
    /// of one (`LEGACY_METADATA_FILE`) become topics of the controller's state (their logs
    /// stay where they are), then the file is renamed so it is read only once.
    async fn migrate_legacy_metadata(self: &Rc<Self>, agent: &Rc<Agent>) -> Result<(), String> {
        let path = self.config.data_dir.join(super::LEGACY_METADATA_FILE);
        let bytes = match crate::io::read_file(&path).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", path.display()))?;
        let legacy = Metadata::decode(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut migrated = 0;
        for topic in legacy.topics() {
            if self.metadata().topic(&topic.name).is_some() {
                continue;
            }
            let request = AdminRequest::CreateTopics {
                topics: vec![messages::NewTopic {
                    name: topic.name.clone(),
                    partitions: topic.partitions,
                    replication_factor: 1,
                    configs: topic.configs.clone(),
                }],
                validate_only: false,
            };
            if let Some((_, Err(e))) = self.cluster_admin(agent, request).await.results.into_iter().next() {
                return Err(format!("migrating topic {:?} from {}: {e}", topic.name, path.display()));
            }
            migrated += 1;
        }
        let done = path.with_extension("toml.migrated");
        std::fs::rename(&path, &done).map_err(|e| format!("renaming {} to {}: {e}", path.display(), done.display()))?;
        crate::io::sync_dir(&self.config.data_dir)
            .await
            .map_err(|e| format!("syncing {}: {e}", self.config.data_dir.display()))?;
        info!(
            topics = migrated,
            from = %path.display(),
            "migrated a single node's topics into the controller's state; their logs are kept as they were, and \
             the old file is now {}",
            done.display()
        );
        Ok(())
    }

    /// Shard 0: waits (until `deadline`) until every shard applied a view taken after this
    /// call: what the committed state holds now is what every shard serves.
    pub(super) async fn await_local_view(self: &Rc<Self>, deadline: Instant) {
        let target = self.refreshes_started.get() + 1;
        self.refresh_cluster();
        while self.refreshes_done.get() < target && Instant::now() < deadline {
            crate::io::sleep(STATE_POLL).await;
        }
    }

    /// Shard 0, on SIGTERM: asks the controller to move this node's leaderships away
    /// (Kafka's controlled shutdown) and waits until it did, at most `timeout`, while
    /// every shard goes on serving. Returns whether the controller confirmed. A node that
    /// is the only live one has nowhere to move them, so it skips this (as Kafka keeps a
    /// partition's leader when no other replica is in sync).
    pub async fn controlled_shutdown(&self, timeout: Duration) -> bool {
        let host = self.host();
        if self.view.borrow().live.iter().all(|n| *n == host.node()) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut next_ask = Instant::now();
        while Instant::now() < deadline {
            if host.shutdown_ready() {
                info!("the controller moved this node's leaderships away");
                return true;
            }
            // Asked again now and then: the controller may have changed meanwhile.
            if Instant::now() >= next_ask {
                host.begin_shutdown();
                next_ask = Instant::now() + Duration::from_millis(500);
            }
            crate::io::sleep(Duration::from_millis(10)).await;
        }
        warn!("the controller did not confirm the controlled shutdown within {timeout:?}; stopping anyway");
        false
    }

    /// Whether this node keeps a replica of the partition.
    pub(super) fn replicates(&self, topic: &str, partition: u32) -> bool {
        let me = self.host().node();
        self.view
            .borrow()
            .partitions
            .get(&TopicPartition::new(topic, partition))
            .is_some_and(|s| s.replicas.contains(&me))
    }

    /// Shard 0: the voter applied commands; give every shard the new view (once per
    /// burst of changes, from a task of its own, so the voter is not re-entered).
    fn refresh_cluster(self: &Rc<Self>) {
        self.refresh_pending.set(true);
        if self.refresh_running.replace(true) {
            return; // The running task sees the flag and refreshes again.
        }
        let shard = self.clone();
        crate::io::spawn_detached(async move {
            let _running = RunningFlag(&shard.refresh_running);
            while shard.refresh_pending.get() {
                shard.refresh_pending.set(false);
                let number = shard.refreshes_started.get() + 1;
                shard.refreshes_started.set(number);
                let Some(agent) = shard.agent.get() else { return };
                let host = shard.host();
                let members = agent.members().unwrap_or_default();
                let Some(mut update) = agent
                    .with_state(|state| update_of(state, host.node(), host.incarnation(), agent.controller(), members))
                else {
                    return;
                };
                update.view.shards = shard.place_on_shards(&update.view, host.node()).await;
                for s in 0..shard.shards {
                    let update = Box::new(update.clone());
                    let _ = shard.call(ShardId(s), ShardRequest::ApplyCluster(update)).await;
                }
                shard.refreshes_done.set(number);
            }
        });
    }

    /// Shard 0: the shard of each partition this node replicates. A partition keeps the
    /// shard it was given (from `SHARD_MAP_FILE`, so its log opens there after a restart);
    /// a new one goes to the shard with the fewest partitions. The file is written
    /// before any shard uses the map.
    async fn place_on_shards(self: &Rc<Self>, view: &ClusterView, me: NodeId) -> HashMap<TopicPartition, ShardId> {
        let path = self.config.data_dir.join(SHARD_MAP_FILE);
        // The last view has the map; the file is read only until there is one.
        let mut known = self.view.borrow().shards.clone();
        if known.is_empty() {
            known = match crate::io::read_file(&path).await {
                Ok(Some(bytes)) => parse_shard_map(&String::from_utf8_lossy(&bytes)),
                Ok(None) => HashMap::new(),
                Err(e) => {
                    warn!("reading {}: {e}", path.display());
                    HashMap::new()
                }
            };
        }
        let mine: Vec<TopicPartition> =
            view.partitions.iter().filter(|(_, s)| s.replicas.contains(&me)).map(|(k, _)| k.clone()).collect();
        let before = known.clone();
        assign_shards(&mut known, &mine, self.shards);
        // Shards drift apart as partitions leave the node (deleted, moved off): followers
        // move from the busiest shard to the idlest, each once its old shard let go of it.
        let movable = |key: &TopicPartition| {
            key.topic != OFFSETS_TOPIC
                && key.topic != crate::txn::TXN_TOPIC
                && view.partitions.get(key).is_some_and(|s| s.leader != Some(me))
        };
        for (key, from, to) in shard_moves(&known, self.shards, movable) {
            if let ShardReply::Released(true) = self.call(from, ShardRequest::ReleaseLog(key.clone())).await {
                info!(topic = %key.topic, partition = key.partition, from = from.0, to = to.0, "a follower moves to a less busy shard");
                known.insert(key, to);
            }
        }
        if known != before {
            if let Err(e) = crate::io::write_file_atomically(&path, shard_map_text(&known).as_bytes()).await {
                warn!("writing {}: {e}", path.display());
            }
        }
        known
    }

    /// Every shard: adopt a new cluster view: open the partitions it now replicates,
    /// then host them (`sync_host`).
    pub(super) async fn apply_cluster(self: &Rc<Self>, update: ClusterUpdate) {
        let registered = update.view.registered;
        let previous = self.view.replace(Rc::new(update.view));
        // Before anything awaits: requests for the groups of an offsets partition this
        // shard now leads must wait for them to be loaded, not find them missing.
        let to_load = self.follow_leadership(&previous, OFFSETS_TOPIC, OFFSETS_PARTITIONS);
        for &partition in &to_load {
            self.groups.begin_loading(partition);
        }
        let txn_to_load = self.follow_leadership(&previous, crate::txn::TXN_TOPIC, crate::txn::TXN_PARTITIONS);
        for &partition in &txn_to_load {
            self.txns.begin_loading(partition);
        }
        self.apply_metadata(update.metadata).await;
        if registered && !self.metadata_applied.replace(true) {
            self.caught_up.notify_all();
            if self.id == ShardId(0) {
                self.remove_stray_replicas();
            }
        }
        self.sync_host(&previous);
        for partition in to_load {
            match self.log(OFFSETS_TOPIC, partition) {
                Some(log) => {
                    self.groups.load(partition, &log).await;
                    info!(partition, "coordinating the groups of {OFFSETS_TOPIC}-{partition}");
                }
                None => self.groups.end_loading(partition),
            }
        }
        for partition in txn_to_load {
            match self.log(crate::txn::TXN_TOPIC, partition) {
                Some(log) => self.txns.load(self, partition, &log).await,
                None => self.txns.end_loading(partition),
            }
        }
    }

    /// This node coordinates the groups (transactional ids) of the offsets (transaction
    /// state) partitions it leads: a former leader forgets them (clients go to the new
    /// one), and a new leader loads their state from its replica (which has everything
    /// acknowledged), so members carry on with their generation and transactions with
    /// their epochs. Returns the partitions of `topic` this shard must load now (the
    /// caller marks them loading before anything awaits).
    fn follow_leadership(&self, previous: &ClusterView, topic: &str, partitions: u32) -> Vec<u32> {
        let me = self.host().node();
        let view = self.view.borrow().clone();
        let mut to_load = Vec::new();
        for partition in 0..partitions {
            if self.owner(topic, partition) != self.id {
                continue;
            }
            let key = TopicPartition::new(topic, partition);
            let leads = |v: &ClusterView| v.registered && v.partitions.get(&key).is_some_and(|s| s.leader == Some(me));
            let (before, now) = (leads(previous), leads(&view));
            if before == now {
                continue;
            }
            if topic == OFFSETS_TOPIC {
                self.groups.forget_partition(partition);
            } else {
                self.txns.forget_partition(partition);
            }
            if now {
                to_load.push(partition);
            }
        }
        to_load
    }

    /// Makes the host replicate what the view says this shard replicates (whose logs are
    /// open), let go of deleted partitions, and feeds it their committed states. Runs on
    /// every view change, and once when the host starts (a view may have come first).
    fn sync_host(&self, previous: &ClusterView) {
        let host = self.host();
        let view = self.view.borrow().clone();
        let me = host.node();
        // Nodes that joined (or moved) are reached where they announced; the controller is
        // wherever the quorum's voters are now.
        if view.endpoints != previous.endpoints || view.quorum != previous.quorum {
            let peers = self.config.nodes().iter().map(|p| (NodeId(p.id), p.cluster)).collect();
            host.transport().set_addresses(&view.cluster_addresses(&peers));
            if !view.quorum.voters.is_empty() {
                host.set_voters(view.quorum.voters.clone());
            }
        }
        let mut states = Vec::new();
        for (id, tp) in &view.ids {
            let (topic, partition) = (&tp.topic, tp.partition);
            if self.owner(topic, partition) != self.id {
                continue;
            }
            let Some(state) = view.partitions.get(tp) else { continue };
            if !state.replicas.contains(&me) {
                continue;
            }
            let before = previous.partitions.get(tp);
            if before.is_none_or(|b| (b.leader, &b.isr) != (state.leader, &state.isr)) {
                let leader = state.leader.map_or("none".to_string(), |l| l.to_string());
                info!(%topic, partition, %leader, epoch = %state.leader_epoch, isr = ?state.isr, "partition state");
            }
            let config = view.config_of(*id);
            if host.is_hosted(*id) {
                host.set_config(*id, config);
            } else if let Some(log) = self.log(topic, partition) {
                host.host(*id, topic, partition, config, &log);
            }
            states.push(state.clone());
        }
        for id in host.hosted() {
            let here = view.ids.get(&id).is_some_and(|tp| {
                self.owner(&tp.topic, tp.partition) == self.id
                    && view.partitions.get(tp).is_some_and(|s| s.replicas.contains(&me))
            });
            if !here {
                host.unhost(id);
            }
        }
        if view.registered {
            host.apply_states(states);
        }
    }

    /// The shard that owns a follower lets go of it for another shard of this node: it
    /// stops replicating it and closes its log once nothing else holds it (at most
    /// `RELEASE_TIMEOUT`; then it keeps it). Whether it let go; a partition it leads, or is
    /// resetting, stays.
    pub(super) async fn release_log(&self, key: &TopicPartition) -> bool {
        let host = self.host();
        let Some(id) = host.partition_id(&key.topic, key.partition) else { return false };
        let view = self.cluster_view();
        let Some(state) = view.partitions.get(key).cloned() else { return false };
        if state.leader == Some(host.node()) || self.resetting.borrow().contains(key) {
            return false;
        }
        host.unhost(id);
        let Some(log) = self.logs.borrow_mut().remove(key) else { return true };
        let deadline = std::time::Instant::now() + RELEASE_TIMEOUT;
        while Rc::strong_count(&log) > 1 {
            if std::time::Instant::now() >= deadline {
                warn!(topic = %key.topic, partition = key.partition, "a log still in use is not moved to another shard");
                host.host(id, &key.topic, key.partition, view.config_of(id), &log);
                self.logs.borrow_mut().insert(key.clone(), log);
                if view.registered {
                    host.apply_states(vec![state]);
                }
                return false;
            }
            crate::io::sleep(Duration::from_millis(1)).await;
        }
        super::close_log(log).await;
        true
    }

    /// Shard 0: an envelope for this node goes to the shard that owns its partition; a
    /// heartbeat reply is split among the shards by partition.
    fn route(self: &Rc<Self>, list: Vec<Vec<u8>>) {
        let view = self.view.borrow().clone();
        let owner = |id: &ClusterPartitionId| view.ids.get(id).map(|tp| self.owner(&tp.topic, tp.partition));
        // What arrived together goes on together, per shard.
        let mut per_shard: BTreeMap<ShardId, Vec<Vec<u8>>> = BTreeMap::new();
        for bytes in list {
            let envelope = match wire::decode(&bytes) {
                Ok((envelope, _)) => envelope,
                Err(e) => {
                    warn!("dropping a replication message that does not decode: {e}");
                    continue;
                }
            };
            if let Message::HeartbeatReply { incarnation, states, shutdown_ready } = envelope.message {
                let mut split: BTreeMap<ShardId, Vec<PartitionState>> =
                    (0..self.shards).map(|s| (ShardId(s), Vec::new())).collect();
                for state in states {
                    if let Some(list) = owner(&state.partition).and_then(|s| split.get_mut(&s)) {
                        list.push(state);
                    }
                }
                for (to, states) in split {
                    let message = Message::HeartbeatReply { incarnation, states, shutdown_ready };
                    let part = Envelope { from: envelope.from, to: envelope.to, message };
                    if let Some(bytes) = wire::encode(&part, &[]) {
                        per_shard.entry(to).or_default().push(bytes);
                    }
                }
                continue;
            }
            if let Message::KafkaResponse { reply_shard, .. } = envelope.message {
                if reply_shard < self.shards {
                    per_shard.entry(ShardId(reply_shard)).or_default().push(bytes);
                }
                continue;
            }
            match partition_of(&envelope.message).map(|id| owner(&id)) {
                Some(Some(to)) => per_shard.entry(to).or_default().push(bytes),
                Some(None) => {} // A partition this node does not know yet: its sender retries.
                None => per_shard.entry(ShardId(0)).or_default().push(bytes),
            }
        }
        for (to, list) in per_shard {
            self.deliver(to, list);
        }
    }

    fn deliver(self: &Rc<Self>, to: ShardId, list: Vec<Vec<u8>>) {
        if to == self.id {
            self.receive_envelopes(list);
            return;
        }
        let shard = self.clone();
        crate::io::spawn_detached(async move {
            let _ = shard.call(to, ShardRequest::Replication(list)).await;
        });
    }

    /// Shard 0: the next producer id of this node's block; when the block is used up (or
    /// this life has none yet), asks the controller for the next one and waits until the
    /// committed state shows it. Ids are unique across the cluster and its restarts.
    pub(super) async fn next_producer_id(self: &Rc<Self>) -> Result<i64, NodeError> {
        let Some(agent) = self.agent.get() else {
            return Err(NodeError::new(ErrorKind::CoordinatorNotAvailable, "producer ids are handed out by shard 0"));
        };
        let (me, incarnation) = (self.host().node(), self.host().incarnation());
        let deadline = Instant::now() + PRODUCER_IDS_TIMEOUT;
        let mut asked: Option<Instant> = None;
        loop {
            let given = agent.with_state(|s| s.producer_id_block(me)).flatten();
            let after = match self.producer_ids.borrow_mut().take(incarnation, given) {
                Ok(id) => {
                    return i64::try_from(id).map_err(|_| {
                        NodeError::new(ErrorKind::Unknown, "the cluster has handed out every producer id")
                    })
                }
                Err(after) => after,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(NodeError::new(
                    ErrorKind::CoordinatorNotAvailable,
                    format!(
                        "node {me} got no producer ids from the controller within {PRODUCER_IDS_TIMEOUT:?} (is a quorum of voters up?)"
                    ),
                ));
            }
            if asked.is_none_or(|at| now >= at + PRODUCER_IDS_ASK_EVERY) {
                agent.ask_controller(Message::AllocateProducerIds { node: me, incarnation, after });
                asked = Some(now);
            }
            crate::io::sleep(STATE_POLL).await;
        }
    }

    /// Shard 0: Kafka's topic auto-creation. The controller creates the topics with its
    /// node's defaults (`--num-partitions`, `--default-replication-factor`); another
    /// node forwards the names to it (`Message::CreateTopics`, answered by the topics
    /// appearing in the committed state). A topic already being created here is not
    /// asked for again.
    pub(super) async fn auto_create(self: &Rc<Self>, names: Vec<String>) {
        let Some(agent) = self.agent.get() else { return };
        let names: Vec<String> =
            names.into_iter().filter(|n| self.auto_creating.borrow_mut().insert(n.clone())).collect();
        if names.is_empty() {
            return;
        }
        if agent.is_controller() {
            let live = self.view.borrow().live.len();
            let topics = names
                .iter()
                .map(|name| {
                    if name == crate::txn::TXN_TOPIC {
                        return super::txn_topic(live);
                    }
                    messages::NewTopic {
                        name: name.clone(),
                        partitions: self.config.num_partitions,
                        replication_factor: self.config.default_replication_factor,
                        configs: std::collections::BTreeMap::new(),
                    }
                })
                .collect();
            let request = AdminRequest::CreateTopics { topics, validate_only: false };
            for (name, result) in self.cluster_admin(agent, request).await.results {
                match result {
                    Ok(()) => info!(topic = %name, "topic auto-created"),
                    Err(e) if e.kind == ErrorKind::TopicAlreadyExists => {}
                    Err(e) => warn!(topic = %name, "auto-creating the topic: {}", e.message),
                }
            }
        } else {
            agent.ask_controller(Message::CreateTopics { names: names.clone() });
        }
        let mut creating = self.auto_creating.borrow_mut();
        for name in &names {
            creating.remove(name);
        }
    }

    /// Shard 0: NOT_CONTROLLER, naming the controller, unless this node is it (admin
    /// requests run on the controller only).
    pub(super) fn check_controller(&self, agent: &Agent) -> Result<(), NodeError> {
        if agent.is_controller() {
            return Ok(());
        }
        let me = self.host().node().0;
        let who = agent.controller().map_or("no controller is elected yet".to_string(), |c| {
            let address =
                self.node_addresses().iter().find(|n| n.id == c).map_or(String::new(), |n| format!(" at {}", n.listen));
            format!("the controller is node {}{address}", c.0)
        });
        Err(NodeError::new(
            ErrorKind::NotController,
            format!("node {me} is not the cluster's controller, which runs admin requests; {who}"),
        ))
    }

    /// Shard 0: admin requests become controller commands, run by the controller only.
    pub(super) async fn cluster_admin(self: &Rc<Self>, agent: &Rc<Agent>, request: AdminRequest) -> AdminResult {
        let refuse = |e: NodeError| AdminResult {
            results: request.topic_names().into_iter().map(|n| (n, Err(e.clone()))).collect(),
        };
        if let Err(e) = self.check_controller(agent) {
            return refuse(e);
        }
        let Some(mut metadata) =
            agent.with_state(|s| update_of(s, NodeId(0), Incarnation(0), None, QuorumMembers::default()).metadata)
        else {
            return refuse(NodeError::new(ErrorKind::NotController, "this node is not a controller voter"));
        };
        let results = messages::apply_admin(&mut metadata, &request);
        if request.validate_only() {
            return AdminResult { results };
        }
        let mut out = Vec::with_capacity(results.len());
        for (name, result) in results {
            let result = match result {
                Ok(()) => self.commit_topic(agent, &request, &name, metadata.topic(&name)).await,
                Err(e) => Err(e),
            };
            out.push((name, result));
        }
        AdminResult { results: out }
    }

    /// Proposes the command that makes topic `name` what `topic` says (deleted when
    /// `None`) and waits until it is applied, and until this node's shards serve it.
    async fn commit_topic(
        self: &Rc<Self>,
        agent: &Rc<Agent>,
        request: &AdminRequest,
        name: &str,
        topic: Option<&Topic>,
    ) -> Result<(), NodeError> {
        let defaults = &self.config.topic_defaults;
        let command = agent
            .with_state(|state| topic_command(state, request, name, topic, defaults))
            .unwrap_or_else(|| Err(NodeError::new(ErrorKind::NotController, "this node is not a controller voter")))?;
        let existing = agent.with_state(|state| state.topic(name).map_or(0, |t| t.partitions.len())).unwrap_or(0);
        if let Command::SetTopic { assignments, .. } = &command {
            let me = self.host().node();
            let new_here = assignments.iter().skip(existing).filter(|replicas| replicas.contains(&me)).count();
            super::descriptors::check_room_for(name, new_here, super::descriptors::segment_files_max(&self.config))?;
        }
        agent.propose(&command).map_err(|e| {
            NodeError::new(
                ErrorKind::NotController,
                format!("topic {name:?}: the controller could not propose it: {e}"),
            )
        })?;
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        while Instant::now() < deadline {
            if agent.with_state(|state| applied(state, &command)) == Some(true) {
                info!(topic = name, "topic metadata changed in the cluster");
                self.await_local_view(deadline).await;
                return self.check_opened(agent, request, name, existing, topic.is_some()).await;
            }
            crate::io::sleep(STATE_POLL).await;
        }
        Err(NodeError::new(
            ErrorKind::RequestTimedOut,
            format!(
                "topic {name:?}: the change was not committed within {ADMIN_TIMEOUT:?} (is a quorum of voters up?)"
            ),
        ))
    }
}

impl Shard {
    /// After a topic change: fails it when a partition this node should have opened did
    /// not open (a full disk, the open files limit), naming each; a topic it created is
    /// deleted again, so a create that failed leaves nothing behind.
    async fn check_opened(
        self: &Rc<Self>,
        agent: &Rc<Agent>,
        request: &AdminRequest,
        name: &str,
        existed: usize,
        kept: bool,
    ) -> Result<(), NodeError> {
        if !kept {
            return Ok(());
        }
        let mut failures = Vec::new();
        for shard in 0..self.shards {
            let ask = ShardRequest::OpenFailures { topic: name.to_string() };
            // Boxed: an admin request reaches here from `call` itself (a cycle of futures).
            let reply: crate::io::LocalFuture<'_, super::ShardReply> = Box::pin(self.call(ShardId(shard), ask));
            if let super::ShardReply::OpenFailures(found) = reply.await {
                failures.extend(found);
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        failures.sort();
        let listed: Vec<String> = failures.iter().map(|(p, why)| format!("{name}-{p}: {why}")).collect();
        let created = existed == 0 && matches!(request, AdminRequest::CreateTopics { .. });
        let undone = if created {
            let delete = AdminRequest::DeleteTopics { names: vec![name.to_string()] };
            match Box::pin(self.commit_topic(agent, &delete, name, None)).await {
                Ok(()) => "; the topic was not created".to_string(),
                Err(e) => format!("; deleting the topic again failed: {e}"),
            }
        } else {
            String::new()
        };
        Err(NodeError::new(
            ErrorKind::Storage,
            format!(
                "topic {name:?}: {} of its partitions could not be opened on node {}{undone}: {}",
                failures.len(),
                self.host().node(),
                listed.join("; ")
            ),
        ))
    }
}

/// The controller command that makes topic `name` what `topic` says.
fn topic_command(
    state: &ClusterState,
    request: &AdminRequest,
    name: &str,
    topic: Option<&Topic>,
    defaults: &crate::storage::LogConfig,
) -> Result<Command, NodeError> {
    let Some(topic) = topic else { return Ok(Command::DeleteTopic { name: name.to_string() }) };
    let existing = state.topic(name);
    let replication_factor = match (existing, request) {
        (Some(t), _) => t.replication_factor,
        (None, AdminRequest::CreateTopics { topics, .. }) => {
            topics.iter().find(|t| t.name == name).map_or(1, |t| t.replication_factor)
        }
        (None, _) => 1,
    };
    let mut assignments: Vec<Vec<NodeId>> = existing
        .map(|t| {
            t.partitions.iter().map(|id| state.partition(*id).map(|s| s.replicas.clone()).unwrap_or_default()).collect()
        })
        .unwrap_or_default();
    let new = topic.partitions.saturating_sub(assignments.len() as u32);
    if new > 0 {
        let placed = state
            .place(new, replication_factor)
            .map_err(|e| NodeError::new(ErrorKind::InvalidReplicationFactor, format!("topic {name:?}: {e}")))?;
        assignments.extend(placed);
    }
    let log = topic.log_config(defaults);
    Ok(Command::SetTopic {
        name: name.to_string(),
        replication_factor,
        configs: topic.configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        assignments,
        config: PartitionConfig {
            min_insync_replicas: log.min_insync_replicas,
            unclean_leader_election: log.unclean_leader_election,
        },
    })
}

/// Whether `command` (a topic change) shows in the committed state.
fn applied(state: &ClusterState, command: &Command) -> bool {
    match command {
        Command::DeleteTopic { name } => state.topic(name).is_none(),
        Command::SetTopic { name, configs, assignments, .. } => state.topic(name).is_some_and(|t| {
            t.partitions.len() == assignments.len()
                && t.configs.iter().map(|(k, v)| (k.clone(), v.clone())).eq(configs.iter().cloned())
        }),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node uses only blocks given to its current life, each id once, and asks past the
    /// block it used up.
    #[test]
    fn producer_ids_come_from_this_lifes_newest_block_once_each() {
        let block =
            |life: u64, first: u64, count: u64| ProducerIdBlock { incarnation: Incarnation(life), first, count };
        let mut ids = ProducerIds::default();
        assert_eq!(ids.take(Incarnation(2), None), Err(None));
        assert_eq!(ids.take(Incarnation(2), Some(block(1, 0, 2))), Err(None), "a block of the previous life");
        assert_eq!(ids.take(Incarnation(2), Some(block(2, 10, 2))), Ok(10));
        assert_eq!(ids.take(Incarnation(2), Some(block(2, 10, 2))), Ok(11));
        assert_eq!(ids.take(Incarnation(2), Some(block(2, 10, 2))), Err(Some(10)), "used up");
        assert_eq!(ids.take(Incarnation(2), Some(block(2, 30, 1))), Ok(30));
        assert_eq!(ids.take(Incarnation(2), Some(block(2, 30, 1))), Err(Some(30)));
    }

    fn key(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    /// Placed partitions stay on their shard (their logs are there); new ones fill the
    /// least-loaded shards; gone ones and shards that no longer exist are dropped; the
    /// file form reads back.
    #[test]
    fn replicas_go_to_the_least_loaded_shard_and_stay_there() {
        let mut placed = HashMap::from([
            (key("a", 0), ShardId(1)),
            (key("a", 1), ShardId(1)),
            (key("gone", 0), ShardId(0)),
            (key("b", 0), ShardId(7)),
        ]);
        let mine = vec![key("a", 0), key("a", 1), key("b", 0), key("c", 0), key("c", 1), key("c", 2)];
        assign_shards(&mut placed, &mine, 2);
        assert_eq!(placed[&key("a", 0)], ShardId(1));
        assert_eq!(placed[&key("a", 1)], ShardId(1));
        assert!(!placed.contains_key(&key("gone", 0)));
        let mut load = [0, 0];
        for shard in placed.values() {
            load[usize::from(shard.0)] += 1;
        }
        assert_eq!(load, [3, 3], "{placed:?}");
        let text = shard_map_text(&placed);
        assert_eq!(parse_shard_map(&format!("{text}not a line\n")), placed);
    }

    /// Shards that drifted apart get even again (at most one apart), by moving only the
    /// partitions that may move, from the busiest shard to the idlest; shards already even,
    /// or with nothing movable left, get no move.
    #[test]
    fn followers_move_from_the_busiest_shard_to_the_idlest() {
        let placed: HashMap<TopicPartition, ShardId> =
            (0..7).map(|p| (key("t", p), ShardId(if p < 6 { 1 } else { 0 }))).collect();
        let moves = shard_moves(&placed, 3, |k| k.partition != 0);
        let mut load = [1usize, 6, 0];
        for (k, from, to) in &moves {
            assert_eq!(placed[k], *from);
            assert_ne!(k.partition, 0, "partition 0 may not move");
            load[usize::from(from.0)] -= 1;
            load[usize::from(to.0)] += 1;
        }
        let (most, least) = (load.iter().max().copied().unwrap_or(0), load.iter().min().copied().unwrap_or(0));
        assert!(most - least <= 1, "{load:?}: {moves:?}");
        assert_eq!(moves.len(), 3, "{moves:?}");
        assert!(shard_moves(&placed, 2, |_| false).is_empty(), "nothing movable");
        let even: HashMap<TopicPartition, ShardId> = (0..4).map(|p| (key("t", p), ShardId((p % 2) as u16))).collect();
        assert!(shard_moves(&even, 2, |_| true).is_empty());
    }
}
