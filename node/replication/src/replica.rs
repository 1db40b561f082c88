//! One node's replicas: for each partition it replicates, its log, its high watermark
//! (HW) and its role (leader, follower, or idle while leaderless), driven by messages and
//! ticks. Lives on the shard that owns the partitions (one `ReplicaNode` per shard in the
//! node; one per simulated node in `sim`).
//!
//! Leader guarantees:
//! - the HW is the minimum log end offset (LEO) over the "maximal ISR" (the ISR the
//!   controller confirmed plus any member a pending AlterPartition adds, KIP-497), so every
//!   member of the controller's ISR holds everything below it; it never decreases while
//!   the node leads in the same epoch; followers' LEOs count only from fetches made in
//!   this epoch whose log was checked against this leader's (`last_fetched_epoch`);
//! - acks=all is refused (NOT_ENOUGH_REPLICAS) while the ISR is below
//!   min.insync.replicas, and acknowledged only once the HW passed the record;
//! - consumers are refused (OFFSET_NOT_AVAILABLE) until the HW reached the start of this
//!   leader's epoch, so the HW they see never goes below one an earlier leader showed
//!   (Kafka lets a new leader's HW lag; we hide the lag instead);
//! - a follower leaves the ISR after `replica_lag_time_max_ms` without catching up to the
//!   LEO, and is proposed back once its LEO reaches both the HW and the epoch start;
//!   every ISR change goes through the controller, one proposal at a time.
//!
//! Follower guarantees: it appends only entries that continue its log at its LEO from the
//! leader of the epoch it knows, after the leader checked its last epoch; a divergent tail
//! is truncated with the leader's OffsetsForLeaderEpoch answer (`FetchResult::Diverging`),
//! possibly over several rounds, never below the HW unless unclean election is on.

use std::collections::BTreeMap;

use crate::ClusterPartitionId;
use sluice_schemas::ids::{LeaderEpoch, Offset};

use super::log::{LogEntry, LogOp, ReplicaLog};
use super::{
    Acks, AdvertisedListener, AlterPartition, ConsumerRecords, Endpoint, Envelope, FetchResult, Incarnation, Message,
    NodeId, PartitionConfig, PartitionEpoch, PartitionState, ReplicaError,
};

/// A node's replication timers and limits, and what its heartbeats advertise.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub heartbeat_interval_ms: u64,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
    /// A fetch without a reply for this long is sent again.
    pub fetch_timeout_ms: u64,
    /// Pause after an empty or failed fetch (stands for long polling).
    pub fetch_backoff_ms: u64,
    /// Entries per fetch reply, for followers and consumers.
    pub fetch_entries_max: usize,
    /// An AlterPartition without a reply for this long is sent again.
    pub alter_partition_retry_ms: u64,
    /// The node's Kafka listeners as clients reach them, sent with every heartbeat and
    /// recorded by the controller (`NodeRecord::listeners`); at most
    /// `state::LISTENERS_MAX` (a longer list does not encode). Empty: none advertised.
    pub listeners: Vec<AdvertisedListener>,
}

/// What a node reacts to.
#[derive(Clone, Debug)]
pub enum NodeInput {
    Receive(Envelope),
    /// Time passed: heartbeat, fetch, shrink the ISR, retry proposals.
    Tick,
    /// Start a controlled shutdown: ask the controller to move leaderships away first.
    BeginShutdown,
}

/// What a node asks its driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeAction {
    Send(Envelope),
    /// Perform this on the partition's stored log (before sending anything that follows).
    Log {
        partition: ClusterPartitionId,
        op: LogOp,
    },
    /// The controller moved leaderships away: the node may stop now.
    ShutdownReady,
}

/// What the leader knows of one follower.
#[derive(Clone, Debug)]
struct FollowerProgress {
    /// Its LEO, from its last valid fetch in this epoch; `None` before the first.
    leo: Option<Offset>,
    last_fetch_ms: u64,
    /// The leader's LEO when that fetch was answered.
    last_fetch_leader_leo: Offset,
    /// When it last had everything the leader had (Kafka's lastCaughtUpTimeMs).
    last_caught_up_ms: u64,
}

impl FollowerProgress {
    /// A follower not heard from yet in this epoch.
    fn new(now_ms: u64) -> FollowerProgress {
        FollowerProgress {
            leo: None,
            last_fetch_ms: now_ms,
            last_fetch_leader_leo: Offset(0),
            last_caught_up_ms: now_ms,
        }
    }
}

/// A proposed ISR waiting for the controller's answer.
#[derive(Clone, Debug)]
struct PendingIsr {
    isr: Vec<NodeId>,
    request_id: u64,
    sent_ms: u64,
}

/// An acks=all produce waiting for the HW.
#[derive(Clone, Debug)]
struct WaitingAck {
    client: Endpoint,
    request_id: u64,
    offset: Offset,
}

#[derive(Clone, Debug)]
struct LeaderState {
    epoch: LeaderEpoch,
    /// The LEO when this node became leader in `epoch`.
    epoch_start: Offset,
    partition_epoch: PartitionEpoch,
    /// The ISR as the controller confirmed it.
    isr: Vec<NodeId>,
    pending: Option<PendingIsr>,
    followers: BTreeMap<NodeId, FollowerProgress>,
    waiting: Vec<WaitingAck>,
}

impl LeaderState {
    /// The committed ISR plus any member a pending proposal adds: the HW is computed over
    /// this, so it covers the controller's ISR whichever way the proposal goes.
    fn maximal_isr(&self) -> Vec<NodeId> {
        let mut members = self.isr.clone();
        if let Some(pending) = &self.pending {
            members.extend(pending.isr.iter().filter(|m| !self.isr.contains(m)));
        }
        members
    }
}

#[derive(Clone, Debug)]
struct FollowerState {
    leader: NodeId,
    epoch: LeaderEpoch,
    /// The fetch in flight: (request id, sent at).
    in_flight: Option<(u64, u64)>,
    next_fetch_ms: u64,
}

#[derive(Clone, Debug)]
enum Role {
    /// No state from the controller yet, or no leader.
    Idle,
    Leader(LeaderState),
    Follower(FollowerState),
}

/// One partition's replica on this node.
struct Replica {
    partition: ClusterPartitionId,
    config: PartitionConfig,
    log: ReplicaLog,
    high_watermark: Offset,
    state: Option<PartitionState>,
    role: Role,
}

/// What every handler needs besides the replica.
struct Ctx<'a> {
    node: NodeId,
    incarnation: Incarnation,
    config: &'a ReplicaConfig,
    now_ms: u64,
    next_request_id: &'a mut u64,
    out: &'a mut Vec<NodeAction>,
}

impl Ctx<'_> {
    fn send(&mut self, to: Endpoint, message: Message) {
        self.out.push(NodeAction::Send(Envelope { from: Endpoint::Node(self.node), to, message }));
    }

    fn request_id(&mut self) -> u64 {
        *self.next_request_id += 1;
        *self.next_request_id
    }
}

/// A partition to replicate, as a node starts: its settings and its stored log.
pub type ReplicaSpec = (ClusterPartitionId, PartitionConfig, ReplicaLog);

/// One node's replicas of every partition it hosts. Everything but the logs is volatile:
/// a restarted node is a new `ReplicaNode` over the stored logs, with a larger
/// incarnation.
pub struct ReplicaNode {
    me: Me,
    replicas: BTreeMap<ClusterPartitionId, Replica>,
    /// The replicas a tick may have work for (`Replica::needs_ticks`): followers, and
    /// leaders with other ISR members or an ISR change in flight. A tick visits only
    /// these, so its cost grows with them, not with every partition hosted (a node's
    /// 10,000 partitions led alone cost no tick). Kept up to date after every input that
    /// touches a replica, and rebuilt from all of them every `TICKING_RESCAN_MS`.
    pub(crate) ticking: std::collections::BTreeSet<ClusterPartitionId>,
    last_rescan_ms: u64,
    last_heartbeat_ms: Option<u64>,
    shutting_down: bool,
}

/// How often a tick looks at every replica again to rebuild `ReplicaNode::ticking` (a
/// safety net: the set is updated after each input that touches a replica).
pub(crate) const TICKING_RESCAN_MS: u64 = 1_000;

/// Who the node is and what every handler reads or counts: kept apart from the replicas
/// so a handler can hold both.
struct Me {
    id: NodeId,
    incarnation: Incarnation,
    config: ReplicaConfig,
    next_request_id: u64,
}

impl Me {
    fn ctx<'a>(&'a mut self, now_ms: u64, out: &'a mut Vec<NodeAction>) -> Ctx<'a> {
        Ctx {
            node: self.id,
            incarnation: self.incarnation,
            config: &self.config,
            now_ms,
            next_request_id: &mut self.next_request_id,
            out,
        }
    }
}

impl ReplicaNode {
    #[must_use]
    pub fn new(id: NodeId, incarnation: Incarnation, config: ReplicaConfig, partitions: Vec<ReplicaSpec>) -> Self {
        let mut node = ReplicaNode {
            me: Me { id, incarnation, config, next_request_id: 0 },
            replicas: BTreeMap::new(),
            ticking: std::collections::BTreeSet::new(),
            last_rescan_ms: 0,
            last_heartbeat_ms: None,
            shutting_down: false,
        };
        for (partition, config, log) in partitions {
            node.add_partition(partition, config, log);
        }
        node
    }

    #[must_use]
    pub fn id(&self) -> NodeId {
        self.me.id
    }

    #[must_use]
    pub fn log(&self, partition: ClusterPartitionId) -> Option<&ReplicaLog> {
        self.replicas.get(&partition).map(|r| &r.log)
    }

    #[must_use]
    pub fn high_watermark(&self, partition: ClusterPartitionId) -> Option<Offset> {
        self.replicas.get(&partition).map(|r| r.high_watermark)
    }

    /// The epoch this node leads the partition in, if it believes it leads it.
    #[must_use]
    pub fn leader_epoch_if_leader(&self, partition: ClusterPartitionId) -> Option<LeaderEpoch> {
        match self.replicas.get(&partition).map(|r| &r.role) {
            Some(Role::Leader(leader)) => Some(leader.epoch),
            _ => None,
        }
    }

    /// The latest partition state this node has from the controller.
    #[must_use]
    pub fn known_state(&self, partition: ClusterPartitionId) -> Option<&PartitionState> {
        self.replicas.get(&partition).and_then(|r| r.state.as_ref())
    }

    /// The partitions this node hosts.
    #[must_use]
    pub fn partitions(&self) -> Vec<ClusterPartitionId> {
        self.replicas.keys().copied().collect()
    }

    /// Starts replicating a partition (a node learns of new partitions as topics are
    /// created). No role until the controller's state for it arrives. Ignored if hosted.
    pub fn add_partition(&mut self, partition: ClusterPartitionId, config: PartitionConfig, log: ReplicaLog) {
        self.replicas.entry(partition).or_insert(Replica {
            partition,
            config,
            log,
            high_watermark: Offset(0),
            state: None,
            role: Role::Idle,
        });
    }

    /// A hosted partition's settings.
    #[must_use]
    pub fn partition_config(&self, partition: ClusterPartitionId) -> Option<PartitionConfig> {
        self.replicas.get(&partition).map(|r| r.config)
    }

    /// Changes a hosted partition's settings (its topic's configs changed).
    pub fn set_partition_config(&mut self, partition: ClusterPartitionId, config: PartitionConfig) {
        if let Some(replica) = self.replicas.get_mut(&partition) {
            replica.config = config;
        }
    }

    /// Stops replicating a partition (its topic was deleted, or its stored log failed and
    /// it is added back from what the log holds). acks=all produces waiting on it get
    /// NOT_LEADER.
    pub fn remove_partition(&mut self, now_ms: u64, partition: ClusterPartitionId) -> Vec<NodeAction> {
        let mut out = Vec::new();
        let mut ctx = self.me.ctx(now_ms, &mut out);
        if let Some(mut replica) = self.replicas.remove(&partition) {
            replica.fail_waiting(&mut ctx);
        }
        self.ticking.remove(&partition);
        out
    }

    /// Puts `partition` in `ticking` or takes it out, as its replica now needs.
    fn retick(&mut self, partition: ClusterPartitionId) {
        match self.replicas.get(&partition) {
            Some(replica) if replica.needs_ticks(self.me.id) => self.ticking.insert(partition),
            _ => self.ticking.remove(&partition),
        };
    }

    /// The node's produce path, where the `PartitionLog` gives offsets: called at the
    /// moment it gives `count` offsets from `base` to a producer's batches (with nothing
    /// in between), this checks the leadership (and for acks=all the ISR's size), records
    /// the entry and returns the epoch to stamp on the batches. The acks=all answer comes
    /// later, as a `ProduceReply` sent to `client` once the high watermark passes it.
    #[allow(clippy::too_many_arguments)]
    pub fn lead_append(
        &mut self,
        now_ms: u64,
        partition: ClusterPartitionId,
        client: Endpoint,
        acks: Acks,
        base: Offset,
        count: u64,
        request_id: u64,
    ) -> (Result<LeaderEpoch, ReplicaError>, Vec<NodeAction>) {
        let mut out = Vec::new();
        let mut ctx = self.me.ctx(now_ms, &mut out);
        let Some(replica) = self.replicas.get_mut(&partition) else { return (Err(ReplicaError::NotLeader), out) };
        let Role::Leader(leader) = &replica.role else { return (Err(ReplicaError::NotLeader), out) };
        let epoch = leader.epoch;
        if replica.log.end_offset() != base {
            tracing::error!(
                "partition {partition}: the stored log gives offset {base}, replication expects {}",
                replica.log.end_offset()
            );
            return (Err(ReplicaError::NotLeader), out);
        }
        let result = match replica.produce(&mut ctx, client, acks, super::PayloadId(0), count.max(1), true, request_id)
        {
            Some(Err(e)) => Err(e),
            Some(Ok(_)) | None => Ok(epoch),
        };
        (result, out)
    }

    /// What a consumer may read of `partition` here: below the high watermark, on the
    /// leader, once its HW reached its epoch start. Returns (HW, leader epoch).
    pub fn consumer_view(&self, partition: ClusterPartitionId) -> Result<(Offset, LeaderEpoch), ReplicaError> {
        let replica = self.replicas.get(&partition).ok_or(ReplicaError::NotLeader)?;
        let Role::Leader(leader) = &replica.role else { return Err(ReplicaError::NotLeader) };
        if replica.high_watermark < leader.epoch_start {
            return Err(ReplicaError::OffsetNotAvailable);
        }
        Ok((replica.high_watermark, leader.epoch))
    }

    /// What a consumer may read of `partition` on any replica (Kafka's fetch from a
    /// follower, KIP-392): on the leader as `consumer_view`; on a follower below the high
    /// watermark its leader last sent it (and its own log end). Returns the high watermark.
    pub fn replica_view(&self, partition: ClusterPartitionId) -> Result<Offset, ReplicaError> {
        let replica = self.replicas.get(&partition).ok_or(ReplicaError::NotLeader)?;
        match &replica.role {
            Role::Leader(_) => self.consumer_view(partition).map(|(hw, _)| hw),
            Role::Follower(_) => Ok(replica.high_watermark.min(replica.log.end_offset())),
            Role::Idle => Err(ReplicaError::NotLeader),
        }
    }

    /// One step: an input at `now_ms` in, actions out (in the order to perform them).
    pub fn step(&mut self, now_ms: u64, input: NodeInput) -> Vec<NodeAction> {
        let touched: Vec<ClusterPartitionId> = match &input {
            NodeInput::Receive(envelope) => match &envelope.message {
                Message::HeartbeatReply { states, .. } => states.iter().map(|s| s.partition).collect(),
                Message::PartitionUpdate { state, .. } | Message::AlterPartitionReply { state, .. } => {
                    vec![state.partition]
                }
                Message::Fetch { partition, .. } | Message::FetchReply { partition, .. } => vec![*partition],
                _ => Vec::new(),
            },
            NodeInput::Tick | NodeInput::BeginShutdown => Vec::new(),
        };
        let out = self.step_replicas(now_ms, input);
        for partition in touched {
            self.retick(partition);
        }
        out
    }

    fn step_replicas(&mut self, now_ms: u64, input: NodeInput) -> Vec<NodeAction> {
        let mut out = Vec::new();
        let mut ctx = self.me.ctx(now_ms, &mut out);
        match input {
            NodeInput::Tick => {
                if self.last_heartbeat_ms.is_none_or(|last| now_ms >= last + ctx.config.heartbeat_interval_ms) {
                    self.last_heartbeat_ms = Some(now_ms);
                    send_heartbeat(&mut ctx, self.shutting_down);
                }
                if now_ms >= self.last_rescan_ms + TICKING_RESCAN_MS {
                    self.last_rescan_ms = now_ms;
                    let me = ctx.node;
                    self.ticking = self.replicas.iter().filter(|(_, r)| r.needs_ticks(me)).map(|(id, _)| *id).collect();
                }
                let mut idle = Vec::new();
                for id in &self.ticking {
                    if let Some(replica) = self.replicas.get_mut(id) {
                        replica.tick(&mut ctx);
                        if !replica.needs_ticks(ctx.node) {
                            idle.push(*id);
                        }
                    }
                }
                for id in idle {
                    self.ticking.remove(&id);
                }
            }
            NodeInput::BeginShutdown => {
                self.shutting_down = true;
                self.last_heartbeat_ms = Some(now_ms);
                send_heartbeat(&mut ctx, true);
            }
            NodeInput::Receive(envelope) => {
                let from = envelope.from;
                match envelope.message {
                    Message::HeartbeatReply { incarnation, states, shutdown_ready } => {
                        if incarnation != ctx.incarnation {
                            return out;
                        }
                        for state in states {
                            if let Some(replica) = self.replicas.get_mut(&state.partition) {
                                replica.apply_state(&mut ctx, state);
                            }
                        }
                        if shutdown_ready && self.shutting_down {
                            ctx.out.push(NodeAction::ShutdownReady);
                        }
                    }
                    Message::PartitionUpdate { incarnation, state } => {
                        if incarnation == ctx.incarnation {
                            if let Some(replica) = self.replicas.get_mut(&state.partition) {
                                replica.apply_state(&mut ctx, state);
                            }
                        }
                    }
                    Message::AlterPartitionReply { incarnation, request_id, accepted, state } => {
                        if incarnation == ctx.incarnation {
                            if let Some(replica) = self.replicas.get_mut(&state.partition) {
                                replica.alter_partition_reply(&mut ctx, request_id, accepted, state);
                            }
                        }
                    }
                    Message::Fetch {
                        partition,
                        replica,
                        leader_epoch,
                        fetch_offset,
                        last_fetched_epoch,
                        request_id,
                    } => {
                        let result = match self.replicas.get_mut(&partition) {
                            Some(r) => r.fetch(&mut ctx, replica, leader_epoch, fetch_offset, last_fetched_epoch),
                            None => FetchResult::Error(ReplicaError::NotLeader),
                        };
                        ctx.send(from, Message::FetchReply { partition, leader_epoch, request_id, result });
                    }
                    Message::FetchReply { partition, leader_epoch, request_id, result } => {
                        if let Some(replica) = self.replicas.get_mut(&partition) {
                            replica.fetch_reply(&mut ctx, leader_epoch, request_id, result);
                        }
                    }
                    Message::Produce { partition, acks, payload, request_id } => {
                        let result = match self.replicas.get_mut(&partition) {
                            Some(replica) => replica.produce(&mut ctx, from, acks, payload, 1, false, request_id),
                            None => Some(Err(ReplicaError::NotLeader)),
                        };
                        if let (Some(result), false) = (result, acks == Acks::None) {
                            ctx.send(from, Message::ProduceReply { partition, request_id, result });
                        }
                    }
                    Message::ConsumerFetch { partition, leader_epoch, offset, request_id } => {
                        let result = match self.replicas.get(&partition) {
                            Some(replica) => replica.consumer_fetch(ctx.config, leader_epoch, offset),
                            None => Err(ReplicaError::NotLeader),
                        };
                        ctx.send(from, Message::ConsumerFetchReply { partition, request_id, result });
                    }
                    // Addressed to the controller or to clients.
                    Message::Heartbeat { .. }
                    | Message::AlterPartition(_)
                    | Message::AllocateProducerIds { .. }
                    | Message::CreateTopics { .. }
                    | Message::ForwardSecurity { .. }
                    | Message::Join { .. }
                    | Message::KafkaRequest { .. }
                    | Message::KafkaResponse { .. }
                    | Message::ProduceReply { .. }
                    | Message::ConsumerFetchReply { .. } => {}
                }
            }
        }
        out
    }
}

fn send_heartbeat(ctx: &mut Ctx<'_>, want_shutdown: bool) {
    let message = Message::Heartbeat {
        node: ctx.node,
        incarnation: ctx.incarnation,
        want_shutdown,
        listeners: ctx.config.listeners.clone(),
    };
    ctx.send(Endpoint::Controller, message);
}

impl Replica {
    fn log_op(&mut self, ctx: &mut Ctx<'_>, op: LogOp) {
        self.log.apply(&op);
        ctx.out.push(NodeAction::Log { partition: self.partition, op });
    }

    /// Whether a tick may have work for this replica: a follower (its fetch timers), or a
    /// leader with other ISR members (their lag) or an ISR change in flight (its retry).
    fn needs_ticks(&self, me: NodeId) -> bool {
        match &self.role {
            Role::Idle => false,
            Role::Follower(_) => true,
            Role::Leader(leader) => leader.pending.is_some() || leader.isr.iter().any(|m| *m != me),
        }
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) {
        match &self.role {
            Role::Idle => {}
            Role::Follower(follower) => {
                let due = match follower.in_flight {
                    Some((_, sent_ms)) => ctx.now_ms >= sent_ms + ctx.config.fetch_timeout_ms,
                    None => ctx.now_ms >= follower.next_fetch_ms,
                };
                if due {
                    self.send_fetch(ctx);
                }
            }
            Role::Leader(leader) => {
                if let Some(pending) = &leader.pending {
                    if ctx.now_ms >= pending.sent_ms + ctx.config.alter_partition_retry_ms {
                        let isr = pending.isr.clone();
                        self.propose_isr(ctx, isr);
                    }
                    return;
                }
                let lag_max = ctx.config.replica_lag_time_max_ms;
                let lagging: Vec<NodeId> = leader
                    .isr
                    .iter()
                    .filter(|m| **m != ctx.node)
                    .filter(|m| {
                        leader.followers.get(m).is_none_or(|p| ctx.now_ms.saturating_sub(p.last_caught_up_ms) > lag_max)
                    })
                    .copied()
                    .collect();
                if !lagging.is_empty() {
                    let isr = leader.isr.iter().filter(|m| !lagging.contains(m)).copied().collect();
                    self.propose_isr(ctx, isr);
                }
            }
        }
    }

    /// Sends (or sends again, with a new request id) an AlterPartition for `isr`.
    fn propose_isr(&mut self, ctx: &mut Ctx<'_>, isr: Vec<NodeId>) {
        let Role::Leader(leader) = &mut self.role else { return };
        let request_id = ctx.request_id();
        leader.pending = Some(PendingIsr { isr: isr.clone(), request_id, sent_ms: ctx.now_ms });
        let message = Message::AlterPartition(AlterPartition {
            node: ctx.node,
            incarnation: ctx.incarnation,
            partition: self.partition,
            leader_epoch: leader.epoch,
            partition_epoch: leader.partition_epoch,
            isr,
            request_id,
        });
        ctx.send(Endpoint::Controller, message);
    }

    fn alter_partition_reply(&mut self, ctx: &mut Ctx<'_>, request_id: u64, accepted: bool, state: PartitionState) {
        let newer = self.state.as_ref().is_none_or(|s| state.partition_epoch > s.partition_epoch);
        if newer {
            self.apply_state(ctx, state);
        } else if let Role::Leader(leader) = &mut self.role {
            // Refused against the epoch we have (e.g. the new member is fenced): only the
            // answer to the latest send ends the proposal, since the controller ignores
            // every older copy from now on.
            if !accepted && leader.pending.as_ref().is_some_and(|p| p.request_id == request_id) {
                leader.pending = None;
            }
        }
    }

    /// Adopts the controller's state if it is newer than what this replica has.
    fn apply_state(&mut self, ctx: &mut Ctx<'_>, state: PartitionState) {
        if self.state.as_ref().is_some_and(|s| state.partition_epoch <= s.partition_epoch) {
            return;
        }
        let me = ctx.node;
        match (&mut self.role, state.leader) {
            (Role::Leader(leader), Some(new)) if new == me && leader.epoch == state.leader_epoch => {
                // Same leadership, new ISR: the controller's answer supersedes any
                // proposal made against an older partition epoch. A reassignment may have
                // added replicas (they start fetching) or removed some (forgotten).
                leader.isr = state.isr.clone();
                leader.partition_epoch = state.partition_epoch;
                leader.pending = None;
                leader.followers.retain(|r, _| state.replicas.contains(r));
                for r in state.replicas.iter().filter(|r| **r != me) {
                    leader.followers.entry(*r).or_insert_with(|| FollowerProgress::new(ctx.now_ms));
                }
                self.state = Some(state);
                self.advance_high_watermark(ctx);
            }
            (_, Some(new)) if new == me => {
                self.fail_waiting(ctx);
                let followers = state
                    .replicas
                    .iter()
                    .filter(|r| **r != me)
                    .map(|r| (*r, FollowerProgress::new(ctx.now_ms)))
                    .collect();
                self.role = Role::Leader(LeaderState {
                    epoch: state.leader_epoch,
                    epoch_start: self.log.end_offset(),
                    partition_epoch: state.partition_epoch,
                    isr: state.isr.clone(),
                    pending: None,
                    followers,
                    waiting: Vec::new(),
                });
                self.state = Some(state);
                self.advance_high_watermark(ctx);
            }
            (role, Some(leader)) => {
                let same = matches!(role, Role::Follower(f) if f.leader == leader && f.epoch == state.leader_epoch);
                if !same {
                    self.fail_waiting(ctx);
                    let follower =
                        FollowerState { leader, epoch: state.leader_epoch, in_flight: None, next_fetch_ms: ctx.now_ms };
                    self.role = Role::Follower(follower);
                }
                self.state = Some(state);
            }
            (_, None) => {
                self.fail_waiting(ctx);
                self.role = Role::Idle;
                self.state = Some(state);
            }
        }
    }

    /// Leadership ended: acks=all produces still waiting get NOT_LEADER (their records
    /// may or may not survive, as in Kafka).
    fn fail_waiting(&mut self, ctx: &mut Ctx<'_>) {
        if let Role::Leader(leader) = &mut self.role {
            for waiting in std::mem::take(&mut leader.waiting) {
                let message = Message::ProduceReply {
                    partition: self.partition,
                    request_id: waiting.request_id,
                    result: Err(ReplicaError::NotLeader),
                };
                ctx.send(waiting.client, message);
            }
        }
    }

    /// Leader: raises the HW to the minimum LEO over the maximal ISR, then answers the
    /// acks=all produces it passed.
    fn advance_high_watermark(&mut self, ctx: &mut Ctx<'_>) {
        let Role::Leader(leader) = &mut self.role else { return };
        let mut candidate = self.log.end_offset();
        for member in leader.maximal_isr() {
            if member == ctx.node {
                continue;
            }
            match leader.followers.get(&member).and_then(|p| p.leo) {
                Some(leo) => candidate = candidate.min(leo),
                None => return,
            }
        }
        if candidate <= self.high_watermark {
            return;
        }
        self.high_watermark = candidate;
        let enough = leader.isr.len() >= self.config.min_insync_replicas as usize;
        let (done, waiting): (Vec<WaitingAck>, Vec<WaitingAck>) =
            std::mem::take(&mut leader.waiting).into_iter().partition(|w| w.offset < candidate);
        leader.waiting = waiting;
        for ack in done {
            let result = if enough { Ok(ack.offset) } else { Err(ReplicaError::NotEnoughReplicasAfterAppend) };
            ctx.send(
                ack.client,
                Message::ProduceReply { partition: self.partition, request_id: ack.request_id, result },
            );
        }
    }

    /// Appends an entry of `count` offsets as the leader. `stored`: the caller's log
    /// already took it (the node's `PartitionLog::append_as_leader`), so no `LogOp`.
    #[allow(clippy::too_many_arguments)]
    fn produce(
        &mut self,
        ctx: &mut Ctx<'_>,
        client: Endpoint,
        acks: Acks,
        payload: super::PayloadId,
        count: u64,
        stored: bool,
        request_id: u64,
    ) -> Option<Result<Offset, ReplicaError>> {
        let Role::Leader(leader) = &self.role else { return Some(Err(ReplicaError::NotLeader)) };
        if acks == Acks::All && leader.isr.len() < self.config.min_insync_replicas as usize {
            return Some(Err(ReplicaError::NotEnoughReplicas));
        }
        let epoch = leader.epoch;
        let entry = LogEntry { offset: self.log.end_offset(), count, epoch, payload };
        if stored {
            self.log.push(entry);
        } else {
            self.log_op(ctx, LogOp::Append(vec![entry]));
        }
        if acks == Acks::All {
            if let Role::Leader(leader) = &mut self.role {
                leader.waiting.push(WaitingAck { client, request_id, offset: entry.offset });
            }
        }
        // Alone in the ISR, the HW moves with the leader's own append.
        self.advance_high_watermark(ctx);
        match acks {
            Acks::All => None,
            Acks::Leader | Acks::None => Some(Ok(entry.offset)),
        }
    }

    /// Leader: a follower's fetch. Checks the follower's log against this one, records its
    /// LEO, moves the HW and the ISR, and answers with entries from its LEO.
    fn fetch(
        &mut self,
        ctx: &mut Ctx<'_>,
        replica: NodeId,
        epoch: LeaderEpoch,
        fetch_offset: Offset,
        last_fetched_epoch: Option<LeaderEpoch>,
    ) -> FetchResult {
        let Role::Leader(leader) = &mut self.role else { return FetchResult::Error(ReplicaError::NotLeader) };
        if epoch < leader.epoch {
            return FetchResult::Error(ReplicaError::FencedLeaderEpoch);
        }
        if epoch > leader.epoch {
            return FetchResult::Error(ReplicaError::UnknownLeaderEpoch);
        }
        let Some(progress) = leader.followers.get_mut(&replica) else {
            return FetchResult::Error(ReplicaError::NotLeader);
        };
        let leo = self.log.end_offset();
        match last_fetched_epoch {
            Some(last) => match self.log.end_offset_for_epoch(last) {
                Some(end) if end.epoch == last && end.end_offset >= fetch_offset => {}
                end => return FetchResult::Diverging { end },
            },
            None if fetch_offset > Offset(0) => return FetchResult::Diverging { end: None },
            None => {}
        }
        if fetch_offset >= leo {
            progress.last_caught_up_ms = ctx.now_ms;
        } else if fetch_offset >= progress.last_fetch_leader_leo {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.leo = Some(fetch_offset);
        progress.last_fetch_ms = ctx.now_ms;
        progress.last_fetch_leader_leo = leo;
        self.advance_high_watermark(ctx);
        self.maybe_expand_isr(ctx, replica, fetch_offset);
        let entries = self.log.read(fetch_offset, leo, ctx.config.fetch_entries_max);
        FetchResult::Entries { entries, high_watermark: self.high_watermark, log_start: self.log.start_offset() }
    }

    /// Proposes `replica` back into the ISR once it holds everything below the HW and
    /// everything from before this leader's epoch.
    fn maybe_expand_isr(&mut self, ctx: &mut Ctx<'_>, replica: NodeId, leo: Offset) {
        let Role::Leader(leader) = &self.role else { return };
        if leader.pending.is_some() || leader.isr.contains(&replica) {
            return;
        }
        if leo >= self.high_watermark && leo >= leader.epoch_start {
            let mut isr = leader.isr.clone();
            isr.push(replica);
            self.propose_isr(ctx, isr);
        }
    }

    fn send_fetch(&mut self, ctx: &mut Ctx<'_>) {
        let Role::Follower(follower) = &mut self.role else { return };
        let request_id = ctx.request_id();
        follower.in_flight = Some((request_id, ctx.now_ms));
        let message = Message::Fetch {
            partition: self.partition,
            replica: ctx.node,
            leader_epoch: follower.epoch,
            fetch_offset: self.log.end_offset(),
            last_fetched_epoch: self.log.latest_epoch(),
            request_id,
        };
        let to = Endpoint::Node(follower.leader);
        ctx.send(to, message);
    }

    /// Follower: the leader's answer to our fetch.
    fn fetch_reply(&mut self, ctx: &mut Ctx<'_>, epoch: LeaderEpoch, request_id: u64, result: FetchResult) {
        let Role::Follower(follower) = &mut self.role else { return };
        if follower.epoch != epoch || follower.in_flight.map(|(id, _)| id) != Some(request_id) {
            return; // A reply to an older fetch, or from an older leadership.
        }
        follower.in_flight = None;
        match result {
            FetchResult::Entries { entries, high_watermark, log_start } => {
                if entries.first().is_some_and(|e| e.offset != self.log.end_offset()) {
                    follower.next_fetch_ms = ctx.now_ms + ctx.config.fetch_backoff_ms;
                    return;
                }
                let got = !entries.is_empty();
                if !got {
                    follower.next_fetch_ms = ctx.now_ms + ctx.config.fetch_backoff_ms;
                }
                if got {
                    self.log_op(ctx, LogOp::Append(entries));
                }
                let hw = high_watermark.min(self.log.end_offset());
                self.high_watermark = self.high_watermark.max(hw);
                let start = log_start.min(self.log.end_offset());
                if start > self.log.start_offset() {
                    self.log_op(ctx, LogOp::AdvanceStart(start));
                }
                if got {
                    self.send_fetch(ctx);
                }
            }
            FetchResult::Reset { log_start, epoch } => {
                // Only a log that ends before the leader's log start lacks what the leader
                // no longer has; an answer to an older fetch is otherwise ignored.
                if self.log.end_offset() < log_start {
                    tracing::info!(
                        "partition {} on {}: its log ends at {} before the leader's log start {log_start}: \
                         it starts again, empty, from there",
                        self.partition,
                        ctx.node,
                        self.log.end_offset()
                    );
                    self.log.reset(log_start, Some(epoch));
                    self.high_watermark = self.high_watermark.max(log_start);
                    ctx.out.push(NodeAction::Log { partition: self.partition, op: LogOp::Reset(log_start) });
                }
                self.send_fetch(ctx);
            }
            FetchResult::Diverging { end: None } if self.log.start_offset() > Offset(0) => {
                // Nothing of this log is shared with the leader's and it does not start at
                // 0: it starts again empty at 0, and the leader tells it where to start.
                self.high_watermark = Offset(0);
                self.log_op(ctx, LogOp::Reset(Offset(0)));
                self.send_fetch(ctx);
            }
            FetchResult::Diverging { end } => {
                let target = end
                    .and_then(|end| {
                        let mine = self.log.end_offset_for_epoch(end.epoch)?;
                        Some(end.end_offset.min(mine.end_offset))
                    })
                    .unwrap_or(Offset(0));
                if target < self.high_watermark && !self.config.unclean_leader_election {
                    // Committed records are gone from the leader: a broken invariant (a
                    // replica elected without them), caught in tests and the simulator. A
                    // release node does as Kafka's follower does, and says so: it follows
                    // the leader, dropping its copies of them.
                    tracing::error!(
                        "partition {} on {}: leader in epoch {epoch} asks to truncate to {target}, below the high \
                         watermark {}: committed records {target}..{} are not on the leader and are dropped here",
                        self.partition,
                        ctx.node,
                        self.high_watermark,
                        self.high_watermark
                    );
                    debug_assert!(false, "partition {}: truncation below the high watermark", self.partition);
                }
                self.high_watermark = self.high_watermark.min(target);
                self.log_op(ctx, LogOp::TruncateTo(target));
                self.send_fetch(ctx);
            }
            FetchResult::Error(_) => follower.next_fetch_ms = ctx.now_ms + ctx.config.fetch_backoff_ms,
        }
    }

    /// Leader: a consumer's fetch, served only below the HW and only once the HW reached
    /// this leader's epoch start.
    fn consumer_fetch(
        &self,
        config: &ReplicaConfig,
        epoch: LeaderEpoch,
        offset: Offset,
    ) -> Result<ConsumerRecords, ReplicaError> {
        let Role::Leader(leader) = &self.role else { return Err(ReplicaError::NotLeader) };
        if epoch < leader.epoch {
            return Err(ReplicaError::FencedLeaderEpoch);
        }
        if epoch > leader.epoch {
            return Err(ReplicaError::UnknownLeaderEpoch);
        }
        if self.high_watermark < leader.epoch_start {
            return Err(ReplicaError::OffsetNotAvailable);
        }
        if offset > self.high_watermark {
            return Err(ReplicaError::OffsetOutOfRange);
        }
        let entries = self.log.read(offset, self.high_watermark, config.fetch_entries_max);
        Ok(ConsumerRecords { entries, high_watermark: self.high_watermark, leader_epoch: leader.epoch })
    }
}
