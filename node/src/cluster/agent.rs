//! A node's cluster agent: runs its controller voter (when the node is one) and its
//! `ReplicaNode` on one shard, on timers, over the `transport`. Inbound frames are queued
//! and handled by one task in arrival order, so no state machine is ever re-entered.
//!
//! Routing: Raft messages go to the voter they name (voter ids are node ids); envelopes
//! addressed to `Endpoint::Controller` go to every voter (only the quorum's leader acts on
//! them, the others drop them), and envelopes to a node go to that node.
//!
//! What is wired so far: the controller quorum between nodes, and node registration and
//! fencing through heartbeats. The `ReplicaNode` hosts no partitions yet: placing
//! partitions and driving their logs is the next step (ARCHITECTURE.md, "The cluster").
//!
//! Where it lives: shard 0 of every node of a cluster.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

use super::transport::{self, Handler, Inbound, Transport};
use crate::controller::quorum::QuorumError;
use crate::io::{self, WaitQueue};
use crate::replication::{
    wire, ClusterState, ControllerConfig, ControllerVoter, Endpoint, Envelope, Incarnation, NodeAction, NodeId,
    NodeInput, ReplicaConfig, ReplicaNode, VoterOutput,
};

/// How often the voter ticks (raft-rs counts its election timeout in ticks).
pub const CONTROLLER_TICK: Duration = Duration::from_millis(20);
/// How often the `ReplicaNode` ticks (heartbeats, fetch timers, ISR checks).
pub const NODE_TICK: Duration = Duration::from_millis(10);

/// A cluster agent's settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node: NodeId,
    /// This life of the node: larger than every earlier life's (the start time in ms).
    pub incarnation: Incarnation,
    /// Every node's cluster address.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The controller voters (a subset of `peers`).
    pub voters: Vec<NodeId>,
    pub controller: ControllerConfig,
    pub replica: ReplicaConfig,
}

/// One node's agent (see the module doc).
pub struct Agent {
    config: AgentConfig,
    started: Instant,
    voter: RefCell<Option<ControllerVoter>>,
    replicas: RefCell<ReplicaNode>,
    transport: Rc<Transport>,
    inbox: Rc<Inbox>,
}

/// Inbound frames waiting for the agent's one handling task.
#[derive(Default)]
struct Inbox {
    frames: RefCell<VecDeque<Inbound>>,
    wake: WaitQueue,
}

impl Agent {
    /// Opens the voter's log in `dir` (when this node is a voter), starts the transport
    /// and the agent's tasks on this shard, and serves `listener` (the node's cluster
    /// address).
    pub fn start(
        config: AgentConfig,
        dir: &Path,
        listener: glommio::net::TcpListener,
    ) -> Result<Rc<Agent>, QuorumError> {
        let voter = if config.voters.contains(&config.node) {
            let ids: Vec<u64> = config.voters.iter().map(|n| u64::from(n.0)).collect();
            let nodes: Vec<NodeId> = config.peers.keys().copied().collect();
            let bootstrap = ClusterState::new(&nodes, &[]);
            Some(ControllerVoter::open(u64::from(config.node.0), &ids, dir, bootstrap, config.controller)?)
        } else {
            None
        };
        let replicas = ReplicaNode::new(config.node, config.incarnation, config.replica, Vec::new());
        let inbox = Rc::new(Inbox::default());
        let queue = inbox.clone();
        let handler: Handler = Rc::new(move |frame| {
            queue.frames.borrow_mut().push_back(frame);
            queue.wake.notify_all();
        });
        let transport = Transport::start(config.node, &config.peers, handler.clone());
        let agent = Rc::new(Agent {
            config,
            started: Instant::now(),
            voter: RefCell::new(voter),
            replicas: RefCell::new(replicas),
            transport,
            inbox,
        });
        io::spawn_detached(transport::serve(listener, handler));
        io::spawn_detached(agent.clone().pump());
        io::spawn_detached(agent.clone().tick_voter());
        io::spawn_detached(agent.clone().tick_node());
        Ok(agent)
    }

    /// The committed cluster state as this node's voter applied it (`None` off voters).
    #[must_use]
    pub fn controller_state(&self) -> Option<ClusterState> {
        self.voter.borrow().as_ref().map(|v| v.state().clone())
    }

    /// Whether this node's voter leads the controller quorum.
    #[must_use]
    pub fn is_controller(&self) -> bool {
        self.voter.borrow().as_ref().is_some_and(ControllerVoter::is_leader)
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

    async fn tick_node(self: Rc<Self>) {
        loop {
            io::sleep(NODE_TICK).await;
            let now = self.now_ms();
            let actions = self.replicas.borrow_mut().step(now, NodeInput::Tick);
            self.node_actions(actions);
        }
    }

    fn handle(&self, frame: Inbound) {
        let now = self.now_ms();
        match frame {
            Inbound::Raft { bytes, .. } => {
                let out = self.voter.borrow_mut().as_mut().map(|v| v.step_raft(now, &bytes));
                self.voter_output(out);
            }
            Inbound::Envelope(bytes) => {
                let envelope = match wire::decode(&bytes) {
                    Ok((envelope, _data)) => envelope,
                    Err(e) => {
                        warn!("dropping a replication message that does not decode: {e}");
                        return;
                    }
                };
                match envelope.to {
                    Endpoint::Controller => {
                        let out = self.voter.borrow_mut().as_mut().map(|v| v.receive(now, envelope));
                        self.voter_output(out);
                    }
                    Endpoint::Node(node) if node == self.config.node => {
                        let actions = self.replicas.borrow_mut().step(now, NodeInput::Receive(envelope));
                        self.node_actions(actions);
                    }
                    to => debug!("dropping a message addressed to {to:?}"),
                }
            }
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
        let me = u64::from(self.config.node.0);
        for (to, bytes) in out.raft {
            match u32::try_from(to) {
                Ok(to) => self.transport.send_raft(NodeId(to), me, bytes),
                Err(_) => warn!("raft message to voter {to}, which is not a node id"),
            }
        }
        for envelope in out.send {
            self.send(&envelope);
        }
    }

    fn node_actions(&self, actions: Vec<NodeAction>) {
        for action in actions {
            match action {
                NodeAction::Send(envelope) => self.send(&envelope),
                // No partitions are hosted yet, so there is no log to change.
                NodeAction::Log { partition, .. } => warn!("log operation for unhosted partition {partition}"),
                NodeAction::ShutdownReady => {}
            }
        }
    }

    fn send(&self, envelope: &Envelope) {
        let Some(bytes) = wire::encode(envelope, &[]) else { return };
        match envelope.to {
            Endpoint::Controller => {
                for voter in &self.config.voters {
                    self.transport.send_envelope(*voter, bytes.clone());
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

    /// Three nodes, each on its own executor thread with its own cluster port and voter
    /// log, over real loopback sockets: the quorum elects a controller and registers every
    /// node through its heartbeats.
    #[test]
    fn three_nodes_elect_a_controller_over_tcp_and_register_through_heartbeats() {
        let dir = tempfile::tempdir().unwrap();
        let listeners: Vec<std::net::TcpListener> =
            (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let peers: BTreeMap<NodeId, SocketAddr> =
            listeners.iter().enumerate().map(|(i, l)| (NodeId(i as u32 + 1), l.local_addr().unwrap())).collect();
        drop(listeners);
        let (done_tx, done_rx) = mpsc::channel::<(u32, bool, usize)>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let stop_rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
        let mut threads = Vec::new();
        for node in 1..=3u32 {
            let config = AgentConfig {
                node: NodeId(node),
                incarnation: Incarnation(u64::from(node)),
                peers: peers.clone(),
                voters: vec![NodeId(1), NodeId(2), NodeId(3)],
                controller: ControllerConfig {
                    session_timeout_ms: 2_000,
                    preferred_election_interval_ms: 1_000,
                    proposal_retry_ms: 200,
                },
                replica: ReplicaConfig {
                    heartbeat_interval_ms: 100,
                    replica_lag_time_max_ms: 1_000,
                    fetch_timeout_ms: 500,
                    fetch_backoff_ms: 20,
                    fetch_entries_max: 100,
                    alter_partition_retry_ms: 500,
                },
            };
            let voter_dir = dir.path().join(format!("n{node}"));
            let done = done_tx.clone();
            let stop = stop_rx.clone();
            threads.push(std::thread::spawn(move || {
                let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().unwrap();
                executor.run(async move {
                    let listener = glommio::net::TcpListener::bind(config.peers[&config.node]).unwrap();
                    let agent = Agent::start(config, &voter_dir, listener).unwrap();
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
