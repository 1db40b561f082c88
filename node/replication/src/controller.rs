//! The controller's decision side, and the two ways to run it over the replicated state
//! (`replication::state::ClusterState`).
//!
//! `ControllerLeader` runs only on the controller quorum's leader. It takes the nodes'
//! messages (heartbeats, AlterPartition) and ticks with the current time, reads the
//! committed state, and decides: commands to propose (register, fence or unfence a node,
//! controlled shutdown, a node's advertised listeners, an ISR change, a preferred-leader
//! move) and the answers that need no command (a heartbeat's reply from the committed
//! state). Its soft state is the nodes' last-heartbeat times and the commands in flight;
//! a new leader starts every session clock afresh (as KRaft does), so a leadership change
//! never fences a node by itself.
//!
//! Guarantees:
//! - every answer carries committed state only: what a command changed reaches nodes
//!   (`replies`: `PartitionUpdate`s, the `AlterPartitionReply`, the `HeartbeatReply` of a
//!   registration, shutdown or listener change) only once the command was applied, never
//!   on proposal; a heartbeat that needs a command gets no reply until then (the node
//!   sends another);
//! - decisions are made on a leader's applied state only once it has applied everything
//!   committed before its term (`Quorum::leader_ready`); a decision made on a state that
//!   moved on since is harmless, since `ClusterState::apply` validates every command
//!   against the state it is applied to;
//! - a command is proposed again only after `proposal_retry_ms` without its `Applied`
//!   (a proposal can be lost when the quorum's leadership changes).
//!
//! `ControllerVoter` is one controller voter as the node will run it: a `Quorum` of
//! `ClusterState` plus, while it leads, a `ControllerLeader`; it turns applied proposals
//! into replies. `Controller` is the same decisions over a state that commits every
//! command at once (one in-process voter without a log), for unit tests and fast
//! simulation sweeps.
//!
//! Where it lives: one `ControllerVoter` per controller voter (one thread each); nodes
//! address `Endpoint::Controller`, which the transport routes to the quorum's leader.

use std::collections::BTreeMap;

use super::state::{ClusterState, Command, Outcome, PartitionSpec};
use super::{AdvertisedListener, Endpoint, Envelope, Incarnation, Message, NodeId};
use crate::format::LogContents;
use crate::quorum::{Applied, MemberChange, Persist, Quorum, QuorumConfig, QuorumError, StateMachine};

/// The controller's timers.
#[derive(Clone, Copy, Debug)]
pub struct ControllerConfig {
    /// A node whose last heartbeat is older than this is fenced.
    pub session_timeout_ms: u64,
    /// How often leadership goes back to preferred replicas that are in sync.
    pub preferred_election_interval_ms: u64,
    /// A proposed command without its `Applied` for this long may be proposed again.
    pub proposal_retry_ms: u64,
}

/// What the controller reacts to.
#[derive(Clone, Debug)]
pub enum ControllerInput {
    Receive(Envelope),
    /// Time passed: check sessions, rebalance preferred leaders.
    Tick,
}

/// What the leader decided in one step.
#[derive(Debug, Default)]
pub struct Decisions {
    /// Commands to propose, in order.
    pub propose: Vec<Command>,
    /// Messages to send now (they carry committed state only).
    pub send: Vec<Envelope>,
}

/// Proposals a voter remembers while waiting for their `Applied`; beyond this the oldest
/// is forgotten (its command may still commit; only its reply is lost, and nodes retry).
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 4_096;

/// The decision side: lives on the quorum leader only, for one term (see the module doc).
pub struct ControllerLeader {
    config: ControllerConfig,
    /// When this leadership started: the session clock of a node not heard from since.
    started_ms: u64,
    /// Per node, its last heartbeat in this leadership.
    heartbeats: BTreeMap<NodeId, u64>,
    last_preferred_ms: u64,
    /// Commands proposed and not yet applied, with when they were proposed.
    in_flight: BTreeMap<Command, u64>,
}

impl ControllerLeader {
    /// A leadership starting at `now_ms`: every node's session clock starts now.
    #[must_use]
    pub fn new(config: ControllerConfig, now_ms: u64) -> ControllerLeader {
        ControllerLeader {
            config,
            started_ms: now_ms,
            heartbeats: BTreeMap::new(),
            last_preferred_ms: now_ms,
            in_flight: BTreeMap::new(),
        }
    }

    /// One input against the committed `state`: commands to propose, messages to send.
    pub fn step(&mut self, now_ms: u64, state: &ClusterState, input: ControllerInput) -> Decisions {
        let mut out = Decisions::default();
        match input {
            ControllerInput::Tick => self.tick(now_ms, state, &mut out),
            ControllerInput::Receive(envelope) => match envelope.message {
                Message::Heartbeat { node, incarnation, want_shutdown, listeners } => {
                    self.heartbeat(now_ms, state, node, incarnation, want_shutdown, listeners, &mut out);
                }
                Message::AlterPartition(alter) => {
                    // Validated when applied, against the state of that moment.
                    self.propose(now_ms, Command::AlterPartition(alter), &mut out);
                }
                Message::AllocateProducerIds { node, incarnation, after } => {
                    // Applying it twice allocates once, so a repeated ask is harmless.
                    self.propose(now_ms, Command::AllocateProducerIds { node, incarnation, after }, &mut out);
                }
                // Nothing else is addressed to the controller.
                _ => {}
            },
        }
        out
    }

    /// `command`, proposed by this leader, was applied.
    pub fn applied(&mut self, command: &Command) {
        self.in_flight.remove(command);
    }

    fn propose(&mut self, now_ms: u64, command: Command, out: &mut Decisions) {
        if self.in_flight.get(&command).is_some_and(|at| now_ms < at + self.config.proposal_retry_ms) {
            return;
        }
        self.in_flight.insert(command.clone(), now_ms);
        out.propose.push(command);
    }

    fn tick(&mut self, now_ms: u64, state: &ClusterState, out: &mut Decisions) {
        let retry_ms = self.config.proposal_retry_ms;
        self.in_flight.retain(|_, at| now_ms < *at + retry_ms);
        let expired: Vec<Command> = state
            .nodes()
            .filter_map(|(node, record)| {
                let incarnation = record.incarnation?;
                let last = self.heartbeats.get(&node).copied().unwrap_or(self.started_ms);
                let expired = !record.fenced && now_ms.saturating_sub(last) > self.config.session_timeout_ms;
                expired.then_some(Command::FenceNode { node, incarnation })
            })
            .collect();
        for command in expired {
            self.propose(now_ms, command, out);
        }
        if now_ms.saturating_sub(self.last_preferred_ms) >= self.config.preferred_election_interval_ms {
            self.last_preferred_ms = now_ms;
            let moves: Vec<Command> = state
                .partitions()
                .filter_map(|r| {
                    let preferred = *r.state.replicas.first()?;
                    let wanted = r.state.leader != Some(preferred)
                        && r.state.isr.contains(&preferred)
                        && state.eligible(preferred);
                    let (partition, partition_epoch) = (r.state.partition, r.state.partition_epoch);
                    wanted.then_some(Command::ElectPreferred { partition, partition_epoch })
                })
                .collect();
            for command in moves {
                self.propose(now_ms, command, out);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn heartbeat(
        &mut self,
        now_ms: u64,
        state: &ClusterState,
        node: NodeId,
        incarnation: Incarnation,
        want_shutdown: bool,
        listeners: Vec<AdvertisedListener>,
        out: &mut Decisions,
    ) {
        let record = state.node(node).cloned().unwrap_or_default();
        if record.incarnation.is_some_and(|known| known > incarnation) {
            return; // From an earlier life, delivered late.
        }
        self.heartbeats.insert(node, now_ms);
        let command = if record.incarnation != Some(incarnation) {
            // A new life; a shutdown it asks for is decided on its next heartbeat.
            Some(Command::RegisterNode { node, incarnation })
        } else if want_shutdown && !record.shutting_down {
            // Controlled shutdown: move leaderships and ISR memberships away now, while
            // the node still serves, instead of waiting for its session to expire.
            Some(Command::ControlledShutdown { node, incarnation })
        } else if !want_shutdown && record.fenced && !record.shutting_down {
            Some(Command::UnfenceNode { node, incarnation })
        } else if listeners != record.listeners {
            // The registered life advertises other listeners (a new life right after its
            // registration, or one whose listeners changed): record them.
            Some(Command::SetListeners { node, incarnation, listeners })
        } else {
            None
        };
        match command {
            // Answered once applied (`replies`), with the state it made.
            Some(command) => self.propose(now_ms, command, out),
            None => out.send.push(heartbeat_reply(state, node, incarnation)),
        }
    }
}

fn heartbeat_reply(state: &ClusterState, node: NodeId, incarnation: Incarnation) -> Envelope {
    let shutdown_ready = state.node(node).is_some_and(|r| r.shutting_down);
    Envelope {
        from: Endpoint::Controller,
        to: Endpoint::Node(node),
        message: Message::HeartbeatReply { incarnation, states: state.states_of(node), shutdown_ready },
    }
}

/// The messages a committed command calls for, from its `Outcome` and the state after it:
/// the new state of every partition it changed to each replica's current life, the
/// answer to an AlterPartition, and the heartbeat reply a registration, unfencing,
/// shutdown or listener change was waiting for.
#[must_use]
pub fn replies(state: &ClusterState, command: &Command, outcome: &Outcome) -> Vec<Envelope> {
    let mut out = Vec::new();
    for changed in &outcome.changed {
        // The partition as it is now, addressed to each replica's life as it is now. The
        // state as this command left it may be stale: a voter applies several commands
        // before it answers, and a later one (a restarted node registering its new life,
        // which ends the old life's leaderships) must not be undone by an earlier
        // update reaching the new life. Found by the quorum simulation, seed 1748.
        let current = state.partition(changed.partition).unwrap_or(changed);
        for replica in &current.replicas {
            let Some(incarnation) = state.node(*replica).and_then(|r| r.incarnation) else { continue };
            out.push(Envelope {
                from: Endpoint::Controller,
                to: Endpoint::Node(*replica),
                message: Message::PartitionUpdate { incarnation, state: current.clone() },
            });
        }
    }
    match command {
        Command::AlterPartition(alter) => {
            if let Some(answer) = &outcome.answer {
                out.push(Envelope {
                    from: Endpoint::Controller,
                    to: Endpoint::Node(alter.node),
                    message: Message::AlterPartitionReply {
                        incarnation: alter.incarnation,
                        request_id: alter.request_id,
                        accepted: outcome.accepted,
                        state: answer.clone(),
                    },
                });
            }
        }
        Command::RegisterNode { node, incarnation }
        | Command::UnfenceNode { node, incarnation }
        | Command::ControlledShutdown { node, incarnation }
        | Command::SetListeners { node, incarnation, .. } => {
            if state.node(*node).is_some_and(|r| r.incarnation == Some(*incarnation)) {
                out.push(heartbeat_reply(state, *node, *incarnation));
            }
        }
        Command::FenceNode { .. }
        | Command::ElectPreferred { .. }
        | Command::CreatePartition { .. }
        | Command::SetTopic { .. }
        | Command::DeleteTopic { .. }
        // The replicas get their partition's new state above; a replica that left finds
        // out from the committed state it follows (and deletes its copy).
        | Command::Reassign { .. }
        // Nothing to tell: the node is down and holds nothing.
        | Command::RemoveNode { .. }
        // Every node reads the endpoints from the committed state it follows.
        | Command::AnnounceNode { .. }
        // The node finds its block in the committed state it follows.
        | Command::AllocateProducerIds { .. }
        // Every node reads its users and ACLs from the committed state.
        | Command::SetScramCredential { .. }
        | Command::DeleteScramCredential { .. }
        | Command::CreateAcls { .. }
        | Command::DeleteAcls { .. } => {}
    }
    out
}

/// Applies `command` to `state` through its encoding, as a voter would.
fn commit_at_once(state: &mut ClusterState, command: &Command) -> Outcome {
    let result = StateMachine::apply(state, &command.encode());
    match Outcome::decode(&result) {
        Ok(outcome) => outcome,
        Err(e) => panic!("the state machine's own outcome does not decode: {e}"),
    }
}

/// The controller as one in-process voter whose every proposal commits at once: the same
/// decisions and state as `ControllerVoter`, without the log (tests, fast simulation).
pub struct Controller {
    state: ClusterState,
    leader: ControllerLeader,
}

impl Controller {
    /// A cluster of `nodes` (all fenced until they register) and partitions with their
    /// replicas (preferred first), each leaderless with every replica in its ISR.
    #[must_use]
    pub fn new(config: ControllerConfig, nodes: &[NodeId], partitions: &[PartitionSpec]) -> Controller {
        Controller { state: ClusterState::new(nodes, partitions), leader: ControllerLeader::new(config, 0) }
    }

    #[must_use]
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The partition's current state.
    #[must_use]
    pub fn partition(&self, partition: crate::ClusterPartitionId) -> Option<&super::PartitionState> {
        self.state.partition(partition)
    }

    /// How many times the partition got a leader from outside its ISR.
    #[must_use]
    pub fn unclean_elections(&self, partition: crate::ClusterPartitionId) -> u64 {
        self.state.unclean_elections(partition)
    }

    #[must_use]
    pub fn is_fenced(&self, node: NodeId) -> bool {
        self.state.is_fenced(node)
    }

    /// Commits an operator's command at once (a partition move, say); returns the messages
    /// it calls for.
    pub fn propose(&mut self, command: &Command) -> Vec<Envelope> {
        let outcome = commit_at_once(&mut self.state, command);
        self.leader.applied(command);
        replies(&self.state, command, &outcome)
    }

    /// One step: a message or a tick in, messages out (each command committed at once).
    pub fn step(&mut self, now_ms: u64, input: ControllerInput) -> Vec<Envelope> {
        let decisions = self.leader.step(now_ms, &self.state, input);
        let mut out = decisions.send;
        for command in decisions.propose {
            let outcome = commit_at_once(&mut self.state, &command);
            self.leader.applied(&command);
            out.extend(replies(&self.state, &command, &outcome));
        }
        out
    }
}

/// What a `ControllerVoter` call produced.
#[derive(Debug, Default)]
pub struct VoterOutput {
    /// Raft messages to deliver: (voter id, encoded message).
    pub raft: Vec<(u64, Vec<u8>)>,
    /// Messages to nodes.
    pub send: Vec<Envelope>,
    /// Every command this voter applied, in log order (for checkers and metrics).
    pub applied: Vec<Applied>,
    /// The state was replaced by the leader's snapshot at this index (its commands are
    /// not in `applied`).
    pub restored: Option<u64>,
    /// What to make durable, in this order (after every earlier call's), acknowledging
    /// each with `ControllerVoter::persisted` (see `Quorum`).
    pub persist: Vec<Persist>,
    /// The quorum's members changed (`Quorum::members`).
    pub members_changed: bool,
}

/// One controller voter: the replicated `ClusterState` in a `Quorum`, and the decision
/// side while this voter leads (see the module doc). Call `tick` on a timer, `step_raft`
/// with other voters' messages, `receive` with nodes' messages, and `persisted` once an
/// output's `persist` is durable.
pub struct ControllerVoter {
    config: ControllerConfig,
    quorum: Quorum<ClusterState>,
    /// The decision side and the term it leads, while this voter is a ready leader.
    leader: Option<(u64, ControllerLeader)>,
    /// This voter's proposals waiting for their `Applied`, by proposal id.
    proposals: BTreeMap<u64, Command>,
}

impl ControllerVoter {
    /// Opens member `id` of the quorum of `voters` (plus `learners`, which follow the log
    /// and never lead) from what its log holds; every member starts from the same
    /// `bootstrap` state (or its snapshot's) and replays its log over it.
    pub fn open(
        id: u64,
        voters: &[u64],
        learners: &[u64],
        log: LogContents,
        bootstrap: ClusterState,
        config: ControllerConfig,
        quorum: QuorumConfig,
    ) -> Result<ControllerVoter, QuorumError> {
        let quorum = Quorum::open(id, voters, learners, log, bootstrap, quorum)?;
        Ok(ControllerVoter { config, quorum, leader: None, proposals: BTreeMap::new() })
    }

    /// Simulations only: see `Quorum::open_for_simulation`.
    #[cfg(test)]
    pub(crate) fn open_for_simulation(
        id: u64,
        voters: &[u64],
        log: LogContents,
        bootstrap: ClusterState,
        config: (ControllerConfig, QuorumConfig),
        election_ticks: usize,
    ) -> Result<ControllerVoter, QuorumError> {
        let quorum = Quorum::open_for_simulation(id, voters, log, bootstrap, config.1, election_ticks)?;
        Ok(ControllerVoter { config: config.0, quorum, leader: None, proposals: BTreeMap::new() })
    }

    /// The committed state as far as this voter applied it.
    #[must_use]
    pub fn state(&self) -> &ClusterState {
        self.quorum.state()
    }

    /// Leads the quorum and makes decisions.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.leader.is_some()
    }

    #[must_use]
    pub fn quorum(&self) -> &Quorum<ClusterState> {
        &self.quorum
    }

    /// Time passed: a Raft tick, then (leading) the decision side's tick.
    pub fn tick(&mut self, now_ms: u64) -> Result<VoterOutput, QuorumError> {
        let mut out = VoterOutput::default();
        self.quorum.tick();
        self.poll(now_ms, &mut out)?;
        self.decide(now_ms, ControllerInput::Tick, &mut out)?;
        Ok(out)
    }

    /// A message from another voter.
    pub fn step_raft(&mut self, now_ms: u64, bytes: &[u8]) -> Result<VoterOutput, QuorumError> {
        let mut out = VoterOutput::default();
        if let Err(e) = self.quorum.step(bytes) {
            // A stale or malformed message changes nothing; Raft recovers by itself.
            tracing::debug!("controller voter {} dropped a raft message: {e}", self.quorum.id());
        }
        self.poll(now_ms, &mut out)?;
        Ok(out)
    }

    /// The output's `persist` numbered `number` (and every one before it) is durable.
    pub fn persisted(&mut self, now_ms: u64, number: u64) -> Result<VoterOutput, QuorumError> {
        let mut out = VoterOutput::default();
        self.quorum.persisted(number);
        self.poll(now_ms, &mut out)?;
        Ok(out)
    }

    /// A message from a node. Dropped unless this voter leads: the node keeps sending
    /// heartbeats and retrying proposals, and the transport finds the leader.
    pub fn receive(&mut self, now_ms: u64, envelope: Envelope) -> Result<VoterOutput, QuorumError> {
        let mut out = VoterOutput::default();
        self.decide(now_ms, ControllerInput::Receive(envelope), &mut out)?;
        Ok(out)
    }

    /// Proposes an admin command (a topic change) on the quorum this voter leads; the
    /// messages it calls for go out once it is applied, as for the leader's own commands.
    pub fn propose(&mut self, now_ms: u64, command: &Command) -> Result<VoterOutput, QuorumError> {
        let mut out = VoterOutput::default();
        let id = self.quorum.propose(command.encode())?;
        if self.proposals.len() >= PROPOSALS_IN_FLIGHT_MAX {
            self.proposals.pop_first();
        }
        self.proposals.insert(id, command.clone());
        self.poll(now_ms, &mut out)?;
        Ok(out)
    }

    /// Proposes one change of the quorum's members (see `Quorum::change_members`).
    pub fn change_members(&mut self, now_ms: u64, change: MemberChange) -> Result<VoterOutput, QuorumError> {
        let mut out = VoterOutput::default();
        self.quorum.change_members(change)?;
        self.poll(now_ms, &mut out)?;
        Ok(out)
    }

    fn decide(&mut self, now_ms: u64, input: ControllerInput, out: &mut VoterOutput) -> Result<(), QuorumError> {
        let Some((_, leader)) = self.leader.as_mut() else { return Ok(()) };
        let decisions = leader.step(now_ms, self.quorum.state(), input);
        out.send.extend(decisions.send);
        for command in decisions.propose {
            match self.quorum.propose(command.encode()) {
                Ok(id) => {
                    if self.proposals.len() >= PROPOSALS_IN_FLIGHT_MAX {
                        self.proposals.pop_first();
                    }
                    self.proposals.insert(id, command);
                }
                // Leadership is moving: the command is dropped; the next leader decides again.
                Err(QuorumError::NotLeader { .. } | QuorumError::Raft(_)) => break,
                Err(e) => return Err(e),
            }
        }
        self.poll(now_ms, out)
    }

    fn poll(&mut self, now_ms: u64, out: &mut VoterOutput) -> Result<(), QuorumError> {
        let output = self.quorum.poll()?;
        out.raft.extend(output.messages);
        out.persist.extend(output.persist);
        out.restored = output.restored.or(out.restored);
        out.members_changed |= output.members_changed;
        for applied in output.applied {
            if let Some(command) = applied.proposal.and_then(|id| self.proposals.remove(&id)) {
                match Outcome::decode(&applied.result) {
                    Ok(outcome) => out.send.extend(replies(self.quorum.state(), &command, &outcome)),
                    Err(e) => tracing::error!("controller outcome at index {} does not decode: {e}", applied.index),
                }
                if let Some((_, leader)) = self.leader.as_mut() {
                    leader.applied(&command);
                }
            }
            out.applied.push(applied);
        }
        // Leadership follows the quorum: a new term (or a first leadership) starts a fresh
        // decision side with fresh session clocks; losing it drops the soft state.
        let term = self.quorum.term();
        if self.quorum.leader_ready() {
            if self.leader.as_ref().is_none_or(|(t, _)| *t != term) {
                self.leader = Some((term, ControllerLeader::new(self.config, now_ms)));
            }
        } else {
            self.leader = None;
            if !self.quorum.is_leader() {
                // Proposals of a lost leadership may still commit, but their answers
                // would come from a voter nodes no longer talk to: they retry instead.
                self.proposals.clear();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use crate::ClusterPartitionId;
    use sluice_schemas::ids::LeaderEpoch;

    use super::*;
    use crate::{AlterPartition, PartitionConfig, PartitionState};

    const P: ClusterPartitionId = ClusterPartitionId(0);
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

    fn controller(unclean: bool) -> Controller {
        let config =
            ControllerConfig { session_timeout_ms: 100, preferred_election_interval_ms: 1_000, proposal_retry_ms: 200 };
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        let spec = (P, nodes.to_vec(), PartitionConfig { min_insync_replicas: 2, unclean_leader_election: unclean });
        Controller::new(config, &nodes, &[spec])
    }

    fn heartbeat(c: &mut Controller, now: u64, node: u32, incarnation: u64) -> Vec<Envelope> {
        heartbeat_advertising(c, now, node, incarnation, &[])
    }

    /// A heartbeat that advertises `listeners`.
    fn heartbeat_advertising(
        c: &mut Controller,
        now: u64,
        node: u32,
        incarnation: u64,
        listeners: &[AdvertisedListener],
    ) -> Vec<Envelope> {
        let message = Message::Heartbeat {
            node: NodeId(node),
            incarnation: Incarnation(incarnation),
            want_shutdown: false,
            listeners: listeners.to_vec(),
        };
        c.step(
            now,
            ControllerInput::Receive(Envelope {
                from: Endpoint::Node(NodeId(node)),
                to: Endpoint::Controller,
                message,
            }),
        )
    }

    /// Node `node` (first life) proposes `isr` against the partition's current epochs;
    /// whether the controller accepted it.
    fn alter(c: &mut Controller, node: u32, isr: &[u32]) -> bool {
        let state = c.partition(P).unwrap().clone();
        alter_against(c, node, isr, &state)
    }

    /// `alter` against the epochs of `state`, which may be stale.
    fn alter_against(c: &mut Controller, node: u32, isr: &[u32], state: &PartitionState) -> bool {
        let message = Message::AlterPartition(AlterPartition {
            node: NodeId(node),
            incarnation: Incarnation(1),
            partition: P,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            isr: isr.iter().map(|n| NodeId(*n)).collect(),
            request_id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
        let out = c.step(
            0,
            ControllerInput::Receive(Envelope {
                from: Endpoint::Node(NodeId(node)),
                to: Endpoint::Controller,
                message,
            }),
        );
        let accepted = out.iter().find_map(|e| match e.message {
            Message::AlterPartitionReply { accepted, .. } => Some(accepted),
            _ => None,
        });
        accepted.expect("the controller answers every AlterPartition it applies")
    }

    /// A node's request for producer ids is proposed and applied (the node finds its
    /// block in the state); the same request again, before or after, allocates nothing
    /// more; one from a node's older life allocates nothing.
    #[test]
    fn a_request_for_producer_ids_gives_the_node_a_block_once() {
        let mut c = controller(false);
        heartbeat(&mut c, 0, 1, 1);
        heartbeat(&mut c, 0, 2, 1);
        let ask = |c: &mut Controller, now: u64, node: u32, life: u64, after: Option<u64>| {
            let message = Message::AllocateProducerIds { node: NodeId(node), incarnation: Incarnation(life), after };
            let from = Endpoint::Node(NodeId(node));
            c.step(now, ControllerInput::Receive(Envelope { from, to: Endpoint::Controller, message }))
        };
        assert!(ask(&mut c, 1, 1, 1, None).is_empty(), "no reply: the node reads the state");
        let first = c.state().producer_id_block(NodeId(1)).unwrap();
        assert_eq!((first.incarnation, first.first), (Incarnation(1), 0));
        ask(&mut c, 500, 1, 1, None);
        assert_eq!(c.state().producer_id_block(NodeId(1)), Some(first));
        ask(&mut c, 1_000, 2, 1, None);
        ask(&mut c, 1_500, 1, 1, Some(first.first));
        let next = c.state().producer_id_block(NodeId(1)).unwrap().first;
        assert_eq!(next, 2 * crate::state::PRODUCER_ID_BLOCK, "after node 2's block");
        heartbeat(&mut c, 2_000, 1, 2);
        ask(&mut c, 2_500, 1, 1, Some(next));
        assert_eq!(c.state().producer_id_block(NodeId(1)).unwrap().first, next, "the old life asks in vain");
    }

    fn listener(name: &str, host: &str, port: u16) -> AdvertisedListener {
        AdvertisedListener { name: name.to_string(), host: host.to_string(), port }
    }

    fn listeners_of(c: &Controller, node: u32) -> Vec<AdvertisedListener> {
        c.state().node(NodeId(node)).unwrap().listeners.clone()
    }

    fn replied(out: &[Envelope], node: u32) -> bool {
        out.iter().any(|e| e.to == Endpoint::Node(NodeId(node)) && matches!(e.message, Message::HeartbeatReply { .. }))
    }

    /// A registered life's heartbeat records its advertised listeners (answered once they
    /// are committed), a changed list replaces them, the same list proposes nothing, a late
    /// heartbeat of an older life changes nothing, and a new life keeps the old life's
    /// listeners from its registration until its own heartbeat replaces them. The state
    /// with them round-trips through its snapshot encoding.
    #[test]
    fn heartbeats_record_the_listeners_of_the_current_life() {
        let mut c = controller(false);
        let internal = vec![listener("INTERNAL", "10.0.0.1", 9092), listener("EXTERNAL", "n1.example.com", 9093)];
        let out = heartbeat_advertising(&mut c, 0, 1, 1, &internal);
        assert!(replied(&out, 1), "the registration is answered");
        assert!(listeners_of(&c, 1).is_empty(), "registered first, listeners at the next heartbeat");
        let out = heartbeat_advertising(&mut c, 10, 1, 1, &internal);
        assert!(replied(&out, 1), "answered once the listeners are committed");
        assert_eq!(listeners_of(&c, 1), internal);
        let before = c.state().clone();
        let decisions = c.leader.step(20, &c.state, {
            let message = Message::Heartbeat {
                node: NodeId(1),
                incarnation: Incarnation(1),
                want_shutdown: false,
                listeners: internal.clone(),
            };
            ControllerInput::Receive(Envelope { from: Endpoint::Node(NodeId(1)), to: Endpoint::Controller, message })
        });
        assert!(decisions.propose.is_empty(), "the same listeners again: {:?}", decisions.propose);
        assert!(replied(&decisions.send, 1), "answered at once");
        assert_eq!(c.state(), &before);

        let changed = vec![listener("INTERNAL", "10.0.0.1", 9192)];
        heartbeat_advertising(&mut c, 30, 1, 1, &changed);
        assert_eq!(listeners_of(&c, 1), changed, "a changed list replaces the old one");

        // A restart: the new life registers, keeping the old life's listeners until its
        // own heartbeat replaces them; the old life's late heartbeat changes nothing.
        heartbeat_advertising(&mut c, 40, 1, 2, &internal);
        assert_eq!(c.state().node(NodeId(1)).unwrap().incarnation, Some(Incarnation(2)));
        assert_eq!(listeners_of(&c, 1), changed, "kept across the registration");
        heartbeat_advertising(&mut c, 50, 1, 2, &internal);
        assert_eq!(listeners_of(&c, 1), internal);
        let out = heartbeat_advertising(&mut c, 60, 1, 1, &changed);
        assert!(out.is_empty(), "an older life gets no answer");
        assert_eq!(listeners_of(&c, 1), internal, "an older life's listeners are not recorded");
        let stale = Command::SetListeners { node: NodeId(1), incarnation: Incarnation(1), listeners: changed };
        assert!(!commit_at_once(&mut c.state, &stale).accepted, "nor applied");
        assert!(listeners_of(&c, 2).is_empty(), "other nodes advertise nothing");

        let bytes = c.state().encode_snapshot();
        assert_eq!(&ClusterState::decode_snapshot(&bytes).unwrap(), c.state());
    }

    #[test]
    fn first_heartbeat_elects_from_the_isr() {
        let mut c = controller(false);
        heartbeat(&mut c, 0, 2, 1);
        let state = c.partition(P).unwrap();
        assert_eq!(state.leader, Some(NodeId(2)));
        assert_eq!(state.leader_epoch, LeaderEpoch(1));
    }

    #[test]
    fn silent_node_is_fenced_and_loses_leadership_and_isr() {
        let mut c = controller(false);
        for n in 1..=3 {
            heartbeat(&mut c, 0, n, 1);
        }
        assert_eq!(c.partition(P).unwrap().leader, Some(NodeId(1)));
        heartbeat(&mut c, 90, 2, 1);
        heartbeat(&mut c, 90, 3, 1);
        c.step(150, ControllerInput::Tick);
        let state = c.partition(P).unwrap();
        assert!(c.is_fenced(NodeId(1)));
        assert_eq!(state.leader, Some(NodeId(2)));
        assert_eq!(state.isr, vec![NodeId(2), NodeId(3)]);
    }

    #[test]
    fn stale_alter_partition_is_refused() {
        let mut c = controller(false);
        for n in 1..=3 {
            heartbeat(&mut c, 0, n, 1);
        }
        let before = c.partition(P).unwrap().clone();
        assert!(alter(&mut c, 1, &[1, 2]), "current epochs: accepted");
        assert!(!alter_against(&mut c, 1, &[1], &before), "older epochs: refused");
        assert_eq!(c.partition(P).unwrap().isr, vec![NodeId(1), NodeId(2)]);
        assert!(!alter(&mut c, 2, &[2]), "only the leader may change the ISR");
    }

    #[test]
    fn fenced_node_is_never_added_to_the_isr() {
        let mut c = controller(false);
        for n in 1..=3 {
            heartbeat(&mut c, 0, n, 1);
        }
        assert!(alter(&mut c, 1, &[1, 2]));
        heartbeat(&mut c, 90, 1, 1);
        heartbeat(&mut c, 90, 2, 1);
        c.step(150, ControllerInput::Tick);
        assert!(c.is_fenced(NodeId(3)));
        assert!(!alter(&mut c, 1, &[1, 2, 3]));
    }

    /// Three nodes, the ISR shrunk to n1, and n1 fenced (it stopped heartbeating).
    fn only_the_in_sync_node_fenced(unclean: bool) -> Controller {
        let mut c = controller(unclean);
        for n in 1..=3 {
            heartbeat(&mut c, 0, n, 1);
        }
        assert!(alter(&mut c, 1, &[1]));
        heartbeat(&mut c, 90, 2, 1);
        heartbeat(&mut c, 90, 3, 1);
        c.step(150, ControllerInput::Tick);
        c
    }

    #[test]
    fn unclean_election_off_leaves_partition_leaderless() {
        let mut c = only_the_in_sync_node_fenced(false);
        let state = c.partition(P).unwrap();
        assert_eq!(state.leader, None, "only n1 was in sync");
        assert_eq!(state.isr, vec![NodeId(1)], "the last ISR member stays");
        heartbeat(&mut c, 200, 1, 1);
        assert_eq!(c.partition(P).unwrap().leader, Some(NodeId(1)), "it leads again once back");
        assert_eq!(c.unclean_elections(P), 0);
    }

    #[test]
    fn unclean_election_on_elects_outside_the_isr() {
        let c = only_the_in_sync_node_fenced(true);
        let state = c.partition(P).unwrap();
        assert_eq!(state.leader, Some(NodeId(2)));
        assert_eq!(state.isr, vec![NodeId(2)]);
        assert_eq!(c.unclean_elections(P), 1);
    }

    #[test]
    fn restart_fences_the_old_incarnation() {
        let mut c = controller(false);
        for n in 1..=3 {
            heartbeat(&mut c, 0, n, 1);
        }
        let epoch = c.partition(P).unwrap().leader_epoch;
        heartbeat(&mut c, 10, 1, 2);
        let state = c.partition(P).unwrap();
        assert!(state.leader_epoch > epoch);
        assert_eq!(state.leader, Some(NodeId(2)), "the new life starts as a follower");
        assert!(!c.is_fenced(NodeId(1)));
    }

    #[test]
    fn controlled_shutdown_moves_leadership_then_preferred_leader_returns() {
        let mut c = controller(false);
        for n in 1..=3 {
            heartbeat(&mut c, 0, n, 1);
        }
        let message = Message::Heartbeat {
            node: NodeId(1),
            incarnation: Incarnation(1),
            want_shutdown: true,
            listeners: Vec::new(),
        };
        let out = c.step(
            10,
            ControllerInput::Receive(Envelope { from: Endpoint::Node(NodeId(1)), to: Endpoint::Controller, message }),
        );
        assert!(out.iter().any(|e| matches!(e.message, Message::HeartbeatReply { shutdown_ready: true, .. })));
        assert_eq!(c.partition(P).unwrap().leader, Some(NodeId(2)));
        heartbeat(&mut c, 20, 1, 2);
        for n in 1..=3 {
            heartbeat(&mut c, 990, n, if n == 1 { 2 } else { 1 });
        }
        c.step(1_000, ControllerInput::Tick);
        assert_eq!(c.partition(P).unwrap().leader, Some(NodeId(2)), "n1 is not in sync yet");
        assert!(alter(&mut c, 2, &[1, 2, 3]));
        for n in 1..=3 {
            heartbeat(&mut c, 1_990, n, if n == 1 { 2 } else { 1 });
        }
        c.step(2_000, ControllerInput::Tick);
        assert_eq!(c.partition(P).unwrap().leader, Some(NodeId(1)), "preferred leader is back");
    }
}
