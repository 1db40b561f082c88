//! A node's cluster agent: its controller voter on timers, the voter's log writes, and the
//! routing of every frame that reaches the node's cluster listener. Inbound frames are
//! queued and handled by one task in arrival order, so the voter is never re-entered.
//!
//! The voter's log: the voter does no I/O; each of its steps may hand out a `Persist`,
//! which the writer task performs with `controller::wal`, in the order handed out (the
//! persists that queued during one write share the next write and its fdatasync), then
//! acknowledges with `ControllerVoter::persisted`. The voter goes on taking frames and
//! ticks meanwhile (raft-rs's asynchronous ready protocol): what it may send at once goes at
//! once (a leader's appends), and the messages that depend on a write (votes, append
//! acknowledgements) come out of the acknowledgement, after the write and its fdatasync.
//! A write that fails takes the voter out of the quorum, as a crash would; then, as the
//! shards repair their partition logs (`shard::space`), the writer opens the log again
//! once the file system has room, which recovers what the disk holds exactly as a restart
//! would, and the voter opened from it takes part again (a voter whose disk filled
//! rejoins once space is freed, without a restart).
//!
//! Routing: Raft messages go to the voter; envelopes addressed to `Endpoint::Controller` go
//! to the voter (only the quorum's leader acts on them, the others drop them); envelopes to
//! this node go to `route` (the shard that replicates their partition). Messages this node
//! sends to the controller go to every voter.
//!
//! Where it lives: shard 0 of every node of a cluster.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::transport::{self, Handler, Inbound, Transport};
use crate::controller::wal::ControllerLog;
use crate::io::{self, WaitQueue};
use crate::replication::quorum::{MemberChange, Persist, QuorumConfig, QuorumError, SNAPSHOT_BYTES_MAX};
use crate::replication::{
    wire, ClusterState, Command, ControllerConfig, ControllerVoter, Endpoint, Envelope, Incarnation, Message,
    NodeEndpoints, NodeId, VoterOutput, JOIN_HOPS_MAX,
};

/// How often the voter ticks (raft-rs counts its election timeout in ticks).
pub const CONTROLLER_TICK: Duration = Duration::from_millis(20);

/// How often a node announces itself (`Message::Join`) until the committed state has its
/// endpoints and the quorum has it as a member.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(500);

/// The transport's name for the node a joining node joins through (`--join`), whose id it
/// does not know: past every node id (they are at most `i32::MAX`).
const JOIN_SEED: NodeId = NodeId(u32::MAX);

/// The raft id of a node's quorum member: its node id, but for node 0 (raft-rs reserves
/// id 0), whose member is `NODE_0_RAFT_ID`, past every node id.
const NODE_0_RAFT_ID: u64 = 1 << 32;

fn raft_id(node: NodeId) -> u64 {
    if node.0 == 0 {
        NODE_0_RAFT_ID
    } else {
        u64::from(node.0)
    }
}

/// The node whose quorum member has raft id `id` (see `raft_id`).
fn node_of(id: u64) -> Option<NodeId> {
    if id == NODE_0_RAFT_ID {
        return Some(NodeId(0));
    }
    u32::try_from(id).ok().filter(|n| *n != 0).map(NodeId)
}

/// Log writes waiting for the writer task. One is added per voter step that changed what
/// must be durable, and each write takes all of them, so the queue holds what arrived
/// during one write; this many means the disk is far behind, and raft frames are dropped
/// (the peers resend) until it catches up.
pub const PERSISTS_QUEUED_MAX: usize = 1_024;

// A snapshot travels to a lagging voter in one raft message: the state's encoding plus a
// few dozen bytes of metadata must fit in one transport frame.
const _: () = assert!(2 * SNAPSHOT_BYTES_MAX <= transport::FRAME_BYTES_MAX);

/// A cluster agent's settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node: NodeId,
    /// Every node and its cluster address (a cluster of one has none).
    pub peers: BTreeMap<NodeId, Option<SocketAddr>>,
    /// The controller voters (a subset of `peers`).
    pub voters: Vec<NodeId>,
    pub controller: ControllerConfig,
    /// The cluster link's mutual TLS (`--cluster-tls-ca`), if any.
    pub tls: Option<std::sync::Arc<crate::tls::ClusterTls>>,
    /// Where this node is reached and its rack, which it announces to the controller
    /// (`None`: a cluster of one without a cluster listener, nothing to announce).
    pub endpoints: Option<NodeEndpoints>,
    /// The cluster listener of a running node this node joins through (`--join`); its
    /// quorum member then opens with no members and waits for the controller's snapshot.
    pub join: Option<SocketAddr>,
    /// This life of the node (its announcements carry it).
    pub incarnation: Incarnation,
}

/// Opens the quorum log in `dir` and the node's quorum member from it (as a voter or a
/// learner: every node holds the committed state; voters vote, the other nodes follow the
/// log as learners).
async fn open_voter(config: &AgentConfig, dir: &Path) -> Result<(ControllerLog, ControllerVoter), String> {
    let (log, contents) = ControllerLog::open(dir).await.map_err(|e| e.to_string())?;
    // A joining node starts with no members (the controller's snapshot brings them).
    let ids: Vec<u64> = config.voters.iter().map(|n| raft_id(*n)).collect();
    let learners: Vec<u64> = match config.join {
        Some(_) => Vec::new(),
        None => config.peers.keys().filter(|n| !config.voters.contains(n)).map(|n| raft_id(*n)).collect(),
    };
    let nodes: Vec<NodeId> = config.peers.keys().copied().collect();
    let bootstrap = ClusterState::new(&nodes, &[]);
    let me = raft_id(config.node);
    let quorum = QuorumConfig::default();
    let voter = ControllerVoter::open(me, &ids, &learners, contents, bootstrap, config.controller, quorum)
        .map_err(|e| e.to_string())?;
    Ok((log, voter))
}

/// The controller quorum's members, as node ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuorumMembers {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl QuorumMembers {
    #[must_use]
    pub fn contains(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }
}

/// Where the agent hands what is not the voter's.
pub struct AgentHooks {
    /// Envelopes for this node (wire bytes) that arrived together.
    pub route: Box<dyn Fn(Vec<Vec<u8>>)>,
    /// The voter applied committed commands: the cluster state changed.
    pub changed: Box<dyn Fn()>,
    /// Another node asked the controller to create topics (`Message::CreateTopics`).
    pub create_topics: Box<dyn Fn(Vec<String>)>,
}

/// One node's agent (see the module doc).
pub struct Agent {
    config: AgentConfig,
    /// The quorum log's directory.
    dir: PathBuf,
    started: Instant,
    voter: RefCell<Option<ControllerVoter>>,
    transport: Rc<Transport>,
    inbox: Rc<Inbox>,
    hooks: AgentHooks,
    /// The quorum leader last reported through `hooks.changed`.
    last_controller: std::cell::Cell<Option<NodeId>>,
    /// The voter's log writes, for the writer task (see the module doc).
    writes: Writes,
    /// The controller that said this node is not a member of its quorum (its log may be
    /// stale: it was removed while down): the next announcement goes to it.
    rejoin: std::cell::Cell<Option<NodeId>>,
}

/// Log writes waiting for the writer task, oldest first.
#[derive(Default)]
struct Writes {
    queue: RefCell<VecDeque<Persist>>,
    wake: WaitQueue,
}

/// Inbound frames waiting for the agent's one handling task.
#[derive(Default)]
struct Inbox {
    frames: RefCell<VecDeque<Inbound>>,
    wake: WaitQueue,
}

impl Agent {
    /// Opens the node's quorum log in `dir` (as a voter or a learner), starts the transport
    /// and the agent's tasks on this shard, and serves `listener` (the node's cluster
    /// address; a cluster of one has none).
    pub async fn start(
        config: AgentConfig,
        dir: &Path,
        listener: Option<sluice_io::net::Listener>,
        hooks: AgentHooks,
    ) -> Result<Rc<Agent>, String> {
        let (log, voter) = open_voter(&config, dir).await?;
        let inbox = Rc::new(Inbox::default());
        let queue = inbox.clone();
        let handler: Handler = Rc::new(move |frame| {
            queue.frames.borrow_mut().push_back(frame);
            queue.wake.notify_all();
        });
        let mut addresses = transport::addresses(&config.peers);
        if let Some(seed) = config.join {
            addresses.insert(JOIN_SEED, seed);
        }
        let transport = Transport::start(config.node, &addresses, handler.clone(), config.tls.clone());
        let agent = Rc::new(Agent {
            config,
            dir: dir.to_path_buf(),
            started: Instant::now(),
            voter: RefCell::new(Some(voter)),
            transport,
            inbox,
            hooks,
            last_controller: std::cell::Cell::new(None),
            writes: Writes::default(),
            rejoin: std::cell::Cell::new(None),
        });
        if let Some(listener) = listener {
            io::spawn_detached(transport::serve(listener, handler, agent.transport.tls()));
        }
        io::spawn_detached(agent.clone().pump());
        io::spawn_detached(agent.clone().tick_voter());
        io::spawn_detached(agent.clone().write_log(log));
        io::spawn_detached(agent.clone().announce());
        Ok(agent)
    }

    /// The controller quorum's members, as this node's member last applied them (`None`
    /// once it left the quorum).
    #[must_use]
    pub fn members(&self) -> Option<QuorumMembers> {
        let members = self.voter.borrow().as_ref()?.quorum().members();
        let nodes = |ids: Vec<u64>| ids.into_iter().filter_map(node_of).collect();
        Some(QuorumMembers { voters: nodes(members.voters), learners: nodes(members.learners) })
    }

    /// Proposes one change of the quorum's members (this voter must lead); see
    /// `Quorum::change_members` for what is refused. The change is in effect once
    /// `members` shows it.
    pub fn change_members(&self, change: impl FnOnce(u64) -> MemberChange, node: NodeId) -> Result<(), QuorumError> {
        let out = {
            let mut voter = self.voter.borrow_mut();
            let Some(voter) = voter.as_mut() else { return Err(QuorumError::NotLeader { leader: None }) };
            voter.change_members(self.now_ms(), change(raft_id(node)))?
        };
        self.voter_output(Some(Ok(out)));
        Ok(())
    }

    /// Says where this node is reached (`Message::Join`) until the committed state has it
    /// and the quorum has it as a member: to the controller, or, while this node knows no
    /// voter yet (it is joining), to the node it joins through.
    async fn announce(self: Rc<Self>) {
        let Some(endpoints) = self.config.endpoints.clone() else { return };
        let me = self.config.node;
        loop {
            if self.voter.borrow().is_none() {
                // Out of the quorum (a failed log write) until the writer opens it again.
                io::sleep(ANNOUNCE_INTERVAL).await;
                continue;
            }
            let recorded = self.with_state(|s| s.node(me).and_then(|r| r.endpoints.clone())).flatten();
            let members = self.members().unwrap_or_default();
            let told = self.rejoin.take();
            if recorded.as_ref() != Some(&endpoints) || !members.contains(me) || told.is_some() {
                let incarnation = self.config.incarnation;
                let message = Message::Join { node: me, incarnation, endpoints: endpoints.clone(), hops: 0 };
                let envelope = Envelope { from: Endpoint::Node(me), to: Endpoint::Controller, message };
                match (told, members.voters.is_empty(), wire::encode(&envelope, &[])) {
                    (Some(controller), _, Some(bytes)) => self.transport.send_envelope(controller, bytes),
                    (None, true, Some(bytes)) => self.transport.send_envelope(JOIN_SEED, bytes),
                    _ => self.send(&envelope),
                }
            }
            io::sleep(ANNOUNCE_INTERVAL).await;
        }
    }

    /// The controller's side of `Message::Join`: records the node's endpoints, then makes
    /// it a learner of the quorum; a voter that does not lead passes a joining node's
    /// message on to the leader it knows. Other endpoints for a node id that a newer life
    /// has registered are refused (an older process, or a second one with the same id).
    fn join(&self, node: NodeId, incarnation: Incarnation, endpoints: NodeEndpoints, hops: u8) {
        let members = self.members().unwrap_or_default();
        if !self.is_controller() {
            let leader = self.controller().filter(|l| *l != self.config.node);
            if let Some(leader) = leader.filter(|_| !members.contains(node) && hops < JOIN_HOPS_MAX) {
                let message = Message::Join { node, incarnation, endpoints, hops: hops + 1 };
                let envelope = Envelope { from: Endpoint::Node(node), to: Endpoint::Controller, message };
                if let Some(bytes) = wire::encode(&envelope, &[]) {
                    self.transport.send_envelope(leader, bytes);
                }
            }
            return;
        }
        let Some((registered, recorded)) =
            self.with_state(|s| s.node(node).map_or((None, None), |r| (r.incarnation, r.endpoints.clone())))
        else {
            return;
        };
        if !members.contains(node) {
            if let Ok(address) = endpoints.cluster.parse() {
                self.transport.learn_address(node, address);
            }
            self.tell_not_member(node);
        }
        if recorded.as_ref() == Some(&endpoints) {
            if !members.contains(node) {
                match self.change_members(MemberChange::AddLearner, node) {
                    Ok(()) => info!("node {node} joins the cluster from {}", endpoints.cluster),
                    Err(e) => debug!("adding node {node} to the controller quorum: {e}"),
                }
            }
            return;
        }
        if recorded.is_some() && registered.is_some_and(|r| r > incarnation) {
            warn!(
                "a node announced itself as node {node} at {}, but a newer life of node {node} is registered at {}: \
                 refused (node ids are unique)",
                endpoints.cluster,
                recorded.map(|e| e.cluster).unwrap_or_default()
            );
            return;
        }
        if let Err(e) = self.propose(&Command::AnnounceNode { node, endpoints }) {
            debug!("recording node {node}'s endpoints: {e}");
        }
    }

    /// The transport to other nodes (shard 0's replicas send through it too).
    #[must_use]
    pub fn transport(&self) -> Rc<Transport> {
        self.transport.clone()
    }

    /// A frame for this node that reached another shard (to itself, through its own
    /// transport): handled as if it came from the network.
    pub fn deliver(&self, frame: Inbound) {
        self.inbox.frames.borrow_mut().push_back(frame);
        self.inbox.wake.notify_all();
    }

    /// The committed cluster state as this node applied it (`None` once its quorum member
    /// left the quorum).
    #[must_use]
    pub fn controller_state(&self) -> Option<ClusterState> {
        self.voter.borrow().as_ref().map(|v| v.state().clone())
    }

    /// Runs `f` on the committed state without copying it (`None` off voters).
    pub fn with_state<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> Option<T> {
        self.voter.borrow().as_ref().map(|v| f(v.state()))
    }

    /// Whether this node's voter leads the controller quorum.
    #[must_use]
    pub fn is_controller(&self) -> bool {
        self.voter.borrow().as_ref().is_some_and(ControllerVoter::is_leader)
    }

    /// The voter the quorum follows as leader, as this voter knows it.
    #[must_use]
    pub fn controller(&self) -> Option<NodeId> {
        let leader = self.voter.borrow().as_ref().and_then(|v| v.quorum().leader())?;
        node_of(leader)
    }

    /// Proposes an admin command (this voter must lead); it is applied once committed.
    pub fn propose(&self, command: &Command) -> Result<(), String> {
        let out = {
            let mut voter = self.voter.borrow_mut();
            let Some(voter) = voter.as_mut() else { return Err("this node is not a controller voter".into()) };
            voter.propose(self.now_ms(), command).map_err(|e| e.to_string())?
        };
        self.voter_output(Some(Ok(out)));
        Ok(())
    }

    /// Controller: proposes the user and ACL changes another node forwarded (anything
    /// else is dropped: nodes forward only these). Off the controller they are dropped;
    /// the sender sends them again.
    fn propose_forwarded(&self, commands: Vec<Command>) {
        if !self.is_controller() {
            return;
        }
        for command in commands {
            let security = matches!(
                command,
                Command::SetScramCredential { .. }
                    | Command::DeleteScramCredential { .. }
                    | Command::CreateAcls { .. }
                    | Command::DeleteAcls { .. }
            );
            if !security {
                warn!("dropping a forwarded command that is not a user or ACL change: {command:?}");
                continue;
            }
            if let Err(e) = self.propose(&command) {
                warn!("proposing a forwarded user or ACL change: {e}");
            }
        }
    }

    /// Sends `message` from this node to the controller (whichever voter leads).
    pub fn ask_controller(&self, message: Message) {
        self.send(&Envelope { from: Endpoint::Node(self.config.node), to: Endpoint::Controller, message });
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn pump(self: Rc<Self>) {
        loop {
            let wait = self.inbox.wake.wait();
            let next = self.inbox.frames.borrow_mut().pop_front();
            match next {
                Some(frame) => self.handle(frame),
                None => wait.await,
            }
        }
    }

    async fn tick_voter(self: Rc<Self>) {
        if self.voter.borrow().is_none() {
            return;
        }
        loop {
            io::sleep(CONTROLLER_TICK).await;
            let now = self.now_ms();
            let out = self.voter.borrow_mut().as_mut().map(|v| v.tick(now));
            self.voter_output(out);
        }
    }

    /// Performs the voter's log writes in order (see the module doc).
    async fn write_log(self: Rc<Self>, mut log: ControllerLog) {
        let mut backoff = crate::shard::space::REPAIR_CHECK;
        loop {
            let wait = self.writes.wake.wait();
            let batch: Vec<Persist> = self.writes.queue.borrow_mut().drain(..).collect();
            let Some(last) = batch.last().map(|p| p.number) else {
                if self.voter.borrow().is_none() {
                    return;
                }
                wait.await;
                continue;
            };
            if let Err(e) = log.write(&batch).await {
                // Nothing it did not store may be acknowledged: it stops taking part (as a
                // crashed voter would) until its log is open again.
                error!(
                    "controller voter on node {} cannot write its log, leaving the quorum until it can: {e}",
                    self.config.node
                );
                *self.voter.borrow_mut() = None;
                self.writes.queue.borrow_mut().clear();
                drop(log);
                log = self.reopen(backoff).await;
                backoff = (backoff * 2).min(crate::shard::space::REPAIR_BACKOFF_MAX);
                continue;
            }
            backoff = crate::shard::space::REPAIR_CHECK;
            let now = self.now_ms();
            let out = self.voter.borrow_mut().as_mut().map(|v| v.persisted(now, last));
            self.voter_output(out);
        }
    }

    /// After a failed write: waits `backoff` and until the file system has room for a
    /// write, then opens the log and the voter again as a restart would (what the disk
    /// holds, a torn tail cut); the voter takes part again. Retried until it opens.
    async fn reopen(&self, backoff: Duration) -> ControllerLog {
        /// What a few controller log writes need (they are small: commands, votes).
        const ROOM: u64 = 1 << 20;
        let node = self.config.node;
        loop {
            io::sleep(backoff).await;
            match crate::shard::space::file_system_space(&self.dir) {
                Ok((_, free)) if free < ROOM => continue,
                _ => {}
            }
            match open_voter(&self.config, &self.dir).await {
                Ok((log, voter)) => {
                    self.writes.queue.borrow_mut().clear();
                    *self.voter.borrow_mut() = Some(voter);
                    info!("controller voter on node {node} opened its log again and takes part in the quorum");
                    return log;
                }
                Err(e) => warn!("controller voter on node {node}: opening its log again: {e}; retrying"),
            }
        }
    }

    fn handle(&self, frame: Inbound) {
        let now = self.now_ms();
        match frame {
            Inbound::Raft { .. } if self.writes.queue.borrow().len() >= PERSISTS_QUEUED_MAX => {
                debug!("dropping a raft message: {PERSISTS_QUEUED_MAX} controller log writes are queued");
            }
            Inbound::Raft { bytes, .. } => {
                // raft-rs panics on messages its log cannot follow (a peer that remembers
                // entries this voter's wiped log lacks): that voter leaves the quorum, the
                // node goes on.
                let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.voter.borrow_mut().as_mut().map(|v| v.step_raft(now, &bytes))
                }));
                match stepped {
                    Ok(out) => self.voter_output(out),
                    Err(_) => {
                        error!(
                            "controller voter on node {} cannot follow the quorum's log (was its data directory \
                             replaced?); it leaves the quorum",
                            self.config.node
                        );
                        *self.voter.borrow_mut() = None;
                    }
                }
            }
            Inbound::Envelope(bytes) => self.envelopes(now, vec![bytes]),
            Inbound::Batch(list) => self.envelopes(now, list),
        }
    }

    /// Envelopes that arrived together: the controller's to the voter, the node's to
    /// `route` (together, so a batch stays a batch).
    fn envelopes(&self, now: u64, list: Vec<Vec<u8>>) {
        let mut mine = Vec::with_capacity(list.len());
        for bytes in list {
            let to = match wire::decode(&bytes) {
                Ok((Envelope { to: Endpoint::Controller, message: Message::CreateTopics { names }, .. }, _)) => {
                    (self.hooks.create_topics)(names);
                    continue;
                }
                Ok((Envelope { to: Endpoint::Controller, message: Message::ForwardSecurity { commands }, .. }, _)) => {
                    self.propose_forwarded(commands);
                    continue;
                }
                Ok((
                    Envelope {
                        to: Endpoint::Controller,
                        message: Message::Join { node, incarnation, endpoints, hops },
                        ..
                    },
                    _,
                )) => {
                    self.join(node, incarnation, endpoints, hops);
                    continue;
                }
                // The controller tells this node it is not a member (`tell_not_member`).
                Ok((Envelope { message: Message::Join { node, endpoints, .. }, .. }, _)) => {
                    if let Ok(address) = endpoints.cluster.parse() {
                        self.transport.learn_address(node, address);
                    }
                    self.rejoin.set(Some(node));
                    continue;
                }
                Ok((envelope, _)) if envelope.to == Endpoint::Controller => {
                    if let (Message::Heartbeat { node, .. }, true) = (&envelope.message, self.is_controller()) {
                        if !self.members().is_some_and(|m| m.contains(*node)) {
                            self.tell_not_member(*node);
                        }
                    }
                    let out = self.voter.borrow_mut().as_mut().map(|v| v.receive(now, envelope));
                    self.voter_output(out);
                    continue;
                }
                Ok((envelope, _)) => envelope.to,
                Err(e) => {
                    warn!("dropping a replication message that does not decode: {e}");
                    continue;
                }
            };
            match to {
                Endpoint::Node(node) if node == self.config.node => mine.push(bytes),
                to => debug!("dropping a message addressed to {to:?}"),
            }
        }
        if !mine.is_empty() {
            (self.hooks.route)(mine);
        }
    }

    /// Controller: tells node `node`, which is not a member of the quorum, where this
    /// controller is (a `Message::Join` addressed to it): a joining node knows no other
    /// node's address until the log reaches it, and a node removed while it was down (whose
    /// log still says it is a member) announces itself again when told.
    fn tell_not_member(&self, node: NodeId) {
        if let Some(mine) = &self.config.endpoints {
            let incarnation = self.config.incarnation;
            let message = Message::Join { node: self.config.node, incarnation, endpoints: mine.clone(), hops: 0 };
            self.send(&Envelope { from: Endpoint::Controller, to: Endpoint::Node(node), message });
        }
    }

    fn voter_output(&self, out: Option<Result<VoterOutput, QuorumError>>) {
        let out = match out {
            None => return,
            Some(Ok(out)) => out,
            Some(Err(e)) => {
                // The voter's log could not be written: it stops taking part (as a crashed
                // voter would) rather than acknowledge what it did not store.
                error!("controller voter on node {} failed, leaving the quorum: {e}", self.config.node);
                *self.voter.borrow_mut() = None;
                return;
            }
        };
        if !out.persist.is_empty() {
            self.writes.queue.borrow_mut().extend(out.persist);
            self.writes.wake.notify_all();
        }
        let me = raft_id(self.config.node);
        for (to, bytes) in out.raft {
            match node_of(to) {
                Some(to) => self.transport.send_raft(to, me, bytes),
                None => warn!("raft message to voter {to}, which is not a node id"),
            }
        }
        for envelope in out.send {
            self.send(&envelope);
        }
        let controller = self.controller();
        let changed = !out.applied.is_empty() || out.restored.is_some() || out.members_changed;
        if changed || self.last_controller.replace(controller) != controller {
            (self.hooks.changed)();
        }
    }

    fn send(&self, envelope: &Envelope) {
        let Some(bytes) = wire::encode(envelope, &[]) else { return };
        match envelope.to {
            Endpoint::Controller => {
                for voter in self.members().unwrap_or_default().voters {
                    self.transport.send_envelope(voter, bytes.clone());
                }
            }
            Endpoint::Node(node) => self.transport.send_envelope(node, bytes),
            Endpoint::Client(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::mpsc;

    use super::*;
    use crate::cluster::host::{HostLogs, ReplicaHost};
    use crate::replication::{Incarnation, ReplicaConfig};

    struct NoLogs;

    impl HostLogs for NoLogs {
        fn hosted_log(&self, _: &str, _: u32) -> Option<Rc<crate::storage::PartitionLog>> {
            None
        }

        fn reset_log(
            &self,
            _: &str,
            _: u32,
            _: sluice_schemas::ids::Offset,
        ) -> crate::io::LocalFuture<'_, Result<(), String>> {
            Box::pin(async { Err("no logs here".to_string()) })
        }
    }

    /// Three nodes, each on its own executor thread with its own cluster port and voter
    /// log, over real loopback sockets: the quorum elects a controller and registers every
    /// node through its heartbeats.
    #[test]
    fn node_0_has_a_raft_id_of_its_own() {
        for node in [0, 1, 7, u32::MAX >> 1] {
            assert_eq!(node_of(raft_id(NodeId(node))), Some(NodeId(node)));
        }
        assert_ne!(raft_id(NodeId(0)), 0, "raft-rs reserves 0");
        assert_eq!(node_of(0), None);
    }

    #[test]
    fn three_nodes_elect_a_controller_over_tcp_and_register_through_heartbeats() {
        let dir = tempfile::tempdir().unwrap();
        let listeners: Vec<std::net::TcpListener> =
            (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let peers: BTreeMap<NodeId, Option<SocketAddr>> =
            listeners.iter().enumerate().map(|(i, l)| (NodeId(i as u32 + 1), Some(l.local_addr().unwrap()))).collect();
        drop(listeners);
        let (done_tx, done_rx) = mpsc::channel::<(u32, bool, usize)>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let stop_rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
        let mut threads = Vec::new();
        for node in 1..=3u32 {
            let voters = vec![NodeId(1), NodeId(2), NodeId(3)];
            let config = AgentConfig {
                node: NodeId(node),
                peers: peers.clone(),
                voters: voters.clone(),
                controller: ControllerConfig {
                    session_timeout_ms: 2_000,
                    preferred_election_interval_ms: 1_000,
                    proposal_retry_ms: 200,
                },
                tls: None,
                endpoints: None,
                join: None,
                incarnation: Incarnation(1),
            };
            let replica = ReplicaConfig {
                heartbeat_interval_ms: 100,
                replica_lag_time_max_ms: 1_000,
                fetch_timeout_ms: 500,
                fetch_backoff_ms: 20,
                fetch_entries_max: 100,
                alter_partition_retry_ms: 500,
                listeners: Vec::new(),
            };
            let voter_dir = dir.path().join(format!("n{node}"));
            let done = done_tx.clone();
            let stop = stop_rx.clone();
            threads.push(std::thread::spawn(move || {
                let executor = io::rt::LocalExecutorBuilder::new(io::rt::Placement::Unbound).make().unwrap();
                executor.run(async move {
                    let listener = sluice_io::net::Listener::bind(config.peers[&config.node].unwrap()).unwrap();
                    // The node's replicas (none hosted) send its heartbeats; the agent
                    // hands them what is addressed to the node.
                    let host: Rc<std::cell::OnceCell<Rc<ReplicaHost>>> = Rc::default();
                    let route = host.clone();
                    let hooks = AgentHooks {
                        route: Box::new(move |list| {
                            if let Some(host) = route.get() {
                                host.receive_batch(list);
                            }
                        }),
                        changed: Box::new(|| {}),
                        create_topics: Box::new(|_| {}),
                    };
                    let me = config.node;
                    let agent = Agent::start(config, &voter_dir, Some(listener), hooks).await.unwrap();
                    let logs: std::rc::Weak<dyn HostLogs> = std::rc::Weak::<NoLogs>::new();
                    let started = ReplicaHost::start(
                        me,
                        Incarnation(u64::from(node)),
                        0,
                        voters,
                        replica,
                        agent.transport(),
                        logs,
                        None,
                    );
                    let _ = host.set(started);
                    // Report until every node is registered in this voter's state (bounded).
                    for _ in 0..1_000 {
                        io::sleep(Duration::from_millis(20)).await;
                        let registered = agent
                            .controller_state()
                            .map_or(0, |s| s.nodes().filter(|(_, record)| record.eligible()).count());
                        let _ = done.send((node, agent.is_controller(), registered));
                        if registered == 3 && stop.lock().unwrap().try_recv().is_ok() {
                            break;
                        }
                    }
                });
            }));
        }
        drop(done_tx);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut leaders = std::collections::BTreeSet::new();
        let mut registered_on = std::collections::BTreeSet::new();
        while (registered_on.len() != 3 || leaders.is_empty()) && Instant::now() < deadline {
            if let Ok((node, leads, registered)) = done_rx.recv_timeout(Duration::from_millis(100)) {
                if leads {
                    leaders.insert(node);
                }
                if registered == 3 {
                    registered_on.insert(node);
                }
            }
        }
        for _ in 0..3 {
            let _ = stop_tx.send(());
        }
        for t in threads {
            t.join().unwrap();
        }
        assert!(!leaders.is_empty(), "no voter became the controller");
        assert_eq!(registered_on.len(), 3, "every voter applied all three registrations: {registered_on:?}");
    }
}
