//! The cluster controller as one deterministic, linearizable actor. In the cluster it is
//! the state machine of the controller quorum's Raft log (every decision below is one
//! committed record); here it is a plain struct, so the simulator can drive it.
//!
//! It keeps, per partition, {leader, leader epoch, partition epoch, ISR, replicas} and,
//! per node, its session (incarnation, last heartbeat, fenced or not). Guarantees:
//! - leader epochs and partition epochs only increase; every leader change bumps the
//!   leader epoch, every change at all bumps the partition epoch;
//! - with unclean election off, a leader is always an ISR member, and the ISR only grows
//!   through a leader's AlterPartition made against the current epochs (stale proposals
//!   are refused and answered with the current state);
//! - a node that stops heartbeating for `session_timeout_ms`, that restarts (new
//!   incarnation), or that asks for a controlled shutdown is fenced: it loses its
//!   leaderships and leaves every ISR where it is not the last member; a fenced or
//!   shutting-down node is never elected and never added to an ISR;
//! - decisions reach nodes as `PartitionUpdate` messages (which may be lost) and again in
//!   every `HeartbeatReply`.

use std::collections::BTreeMap;

use sluice_schemas::ids::{LeaderEpoch, PartitionId};

use super::{Endpoint, Envelope, Incarnation, Message, NodeId, PartitionConfig, PartitionEpoch, PartitionState};

/// The controller's timers.
#[derive(Clone, Copy, Debug)]
pub struct ControllerConfig {
    /// A node whose last heartbeat is older than this is fenced.
    pub session_timeout_ms: u64,
    /// How often leadership goes back to preferred replicas that are in sync.
    pub preferred_election_interval_ms: u64,
}

/// What the controller reacts to.
#[derive(Clone, Debug)]
pub enum ControllerInput {
    Receive(Envelope),
    /// Time passed: check sessions, rebalance preferred leaders.
    Tick,
}

/// A node's session as the controller sees it.
#[derive(Clone, Debug, Default)]
struct Session {
    /// `None` until the node's first heartbeat.
    incarnation: Option<Incarnation>,
    last_heartbeat_ms: u64,
    fenced: bool,
    /// Asked for a controlled shutdown in this incarnation: stays fenced until it restarts.
    shutting_down: bool,
}

struct PartitionRecord {
    state: PartitionState,
    config: PartitionConfig,
    unclean_elections: u64,
    /// The last AlterPartition answered: (leader epoch, request id).
    last_alter: Option<(LeaderEpoch, u64)>,
}

/// The controller. Lives in the controller quorum's state machine; one per cluster.
pub struct Controller {
    config: ControllerConfig,
    sessions: BTreeMap<NodeId, Session>,
    partitions: BTreeMap<PartitionId, PartitionRecord>,
    last_preferred_ms: u64,
}

/// An AlterPartition request's fields.
struct Proposal {
    node: NodeId,
    incarnation: Incarnation,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    isr: Vec<NodeId>,
    request_id: u64,
}

/// A partition's assignment and settings, as created.
pub type PartitionSpec = (PartitionId, Vec<NodeId>, PartitionConfig);

impl Controller {
    /// A cluster of `nodes` (all fenced until they heartbeat) and partitions with their
    /// replicas (preferred first). Each partition starts leaderless with every replica in
    /// its ISR (all logs are empty, hence equal).
    #[must_use]
    pub fn new(config: ControllerConfig, nodes: &[NodeId], partitions: &[PartitionSpec]) -> Controller {
        let sessions = nodes.iter().map(|n| (*n, Session { fenced: true, ..Session::default() })).collect();
        let partitions = partitions
            .iter()
            .map(|(partition, replicas, config)| {
                assert!(!replicas.is_empty(), "partition {partition} has no replicas");
                let state = PartitionState {
                    partition: *partition,
                    leader: None,
                    leader_epoch: LeaderEpoch(0),
                    partition_epoch: PartitionEpoch(0),
                    isr: replicas.clone(),
                    replicas: replicas.clone(),
                };
                (*partition, PartitionRecord { state, config: *config, unclean_elections: 0, last_alter: None })
            })
            .collect();
        Controller { config, sessions, partitions, last_preferred_ms: 0 }
    }

    /// The partition's current state.
    #[must_use]
    pub fn partition(&self, partition: PartitionId) -> Option<&PartitionState> {
        self.partitions.get(&partition).map(|r| &r.state)
    }

    /// How many times the partition got a leader from outside its ISR.
    #[must_use]
    pub fn unclean_elections(&self, partition: PartitionId) -> u64 {
        self.partitions.get(&partition).map_or(0, |r| r.unclean_elections)
    }

    #[must_use]
    pub fn is_fenced(&self, node: NodeId) -> bool {
        self.sessions.get(&node).is_none_or(|s| s.fenced)
    }

    /// One step: a message or a tick in, messages out.
    pub fn step(&mut self, now_ms: u64, input: ControllerInput) -> Vec<Envelope> {
        let mut out = Vec::new();
        match input {
            ControllerInput::Tick => self.tick(now_ms, &mut out),
            ControllerInput::Receive(envelope) => match envelope.message {
                Message::Heartbeat { node, incarnation, want_shutdown } => {
                    self.heartbeat(now_ms, node, incarnation, want_shutdown, &mut out);
                }
                Message::AlterPartition {
                    node,
                    incarnation,
                    partition,
                    leader_epoch,
                    partition_epoch,
                    isr,
                    request_id,
                } => {
                    let proposal = Proposal { node, incarnation, leader_epoch, partition_epoch, isr, request_id };
                    self.alter_partition(partition, proposal, &mut out);
                }
                // Nothing else is addressed to the controller.
                _ => {}
            },
        }
        out
    }

    fn tick(&mut self, now_ms: u64, out: &mut Vec<Envelope>) {
        let expired: Vec<NodeId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.fenced && now_ms.saturating_sub(s.last_heartbeat_ms) > self.config.session_timeout_ms)
            .map(|(n, _)| *n)
            .collect();
        for node in expired {
            self.fence(node, out);
        }
        if now_ms.saturating_sub(self.last_preferred_ms) >= self.config.preferred_election_interval_ms {
            self.last_preferred_ms = now_ms;
            self.elect_preferred_leaders(out);
        }
    }

    fn heartbeat(
        &mut self,
        now_ms: u64,
        node: NodeId,
        incarnation: Incarnation,
        want_shutdown: bool,
        out: &mut Vec<Envelope>,
    ) {
        let Some(session) = self.sessions.get(&node) else { return };
        if session.incarnation.is_some_and(|known| known > incarnation) {
            return; // From an earlier life, delivered late.
        }
        if session.incarnation != Some(incarnation) {
            // A new life: whatever the old one led or was in sync for ends here. Its log
            // survived, so it may rejoin ISRs by catching up like any follower.
            if !session.fenced {
                self.fence(node, out);
            }
            let session = self.session_mut(node);
            session.incarnation = Some(incarnation);
            session.shutting_down = false;
        }
        self.session_mut(node).last_heartbeat_ms = now_ms;
        if want_shutdown {
            // Controlled shutdown: move leaderships and ISR memberships away now, while the
            // node still serves, instead of waiting for its session to expire.
            if !self.sessions.get(&node).is_some_and(|s| s.shutting_down) {
                self.session_mut(node).shutting_down = true;
                self.fence(node, out);
            }
        } else if self.sessions.get(&node).is_some_and(|s| s.fenced && !s.shutting_down) {
            self.session_mut(node).fenced = false;
            self.elect_leaderless(out);
        }
        let shutdown_ready = self.sessions.get(&node).is_some_and(|s| s.shutting_down);
        let states =
            self.partitions.values().filter(|r| r.state.replicas.contains(&node)).map(|r| r.state.clone()).collect();
        out.push(Envelope {
            from: Endpoint::Controller,
            to: Endpoint::Node(node),
            message: Message::HeartbeatReply { incarnation, states, shutdown_ready },
        });
    }

    fn alter_partition(&mut self, partition: PartitionId, proposal: Proposal, out: &mut Vec<Envelope>) {
        let Proposal { node, incarnation, leader_epoch, partition_epoch, isr, request_id } = proposal;
        let Some(session) = self.sessions.get(&node) else { return };
        let live = session.incarnation == Some(incarnation) && !session.fenced;
        let eligible: Vec<NodeId> =
            self.sessions.iter().filter(|(_, s)| !s.fenced && !s.shutting_down).map(|(n, _)| *n).collect();
        let Some(record) = self.partitions.get_mut(&partition) else { return };
        if record.last_alter.is_some_and(|(epoch, id)| epoch == leader_epoch && id >= request_id) {
            return; // An older copy of a request already answered.
        }
        if record.state.leader_epoch == leader_epoch {
            record.last_alter = Some((leader_epoch, request_id));
        }
        let state = &mut record.state;
        let accepted = live
            && state.leader == Some(node)
            && state.leader_epoch == leader_epoch
            && state.partition_epoch == partition_epoch
            && isr.contains(&node)
            && isr.iter().all(|m| state.replicas.contains(m))
            && isr.iter().all(|m| state.isr.contains(m) || eligible.contains(m));
        if accepted {
            let mut ordered: Vec<NodeId> = state.replicas.iter().filter(|r| isr.contains(r)).copied().collect();
            ordered.dedup();
            state.isr = ordered;
            state.partition_epoch = PartitionEpoch(state.partition_epoch.0 + 1);
        }
        let reply = state.clone();
        if accepted {
            self.broadcast(partition, out);
        }
        out.push(Envelope {
            from: Endpoint::Controller,
            to: Endpoint::Node(node),
            message: Message::AlterPartitionReply { incarnation, request_id, accepted, state: reply },
        });
    }

    fn session_mut(&mut self, node: NodeId) -> &mut Session {
        self.sessions.entry(node).or_default()
    }

    fn eligible(&self, node: NodeId) -> bool {
        self.sessions.get(&node).is_some_and(|s| !s.fenced && !s.shutting_down)
    }

    /// Fences `node`: it leaves every ISR where it is not the last member and loses its
    /// leaderships (to another ISR member, or to nobody).
    fn fence(&mut self, node: NodeId, out: &mut Vec<Envelope>) {
        self.session_mut(node).fenced = true;
        let ids: Vec<PartitionId> = self.partitions.keys().copied().collect();
        for id in ids {
            let Some(record) = self.partitions.get_mut(&id) else { continue };
            let state = &mut record.state;
            if !state.replicas.contains(&node) {
                continue;
            }
            let mut changed = false;
            if state.isr.len() > 1 && state.isr.contains(&node) {
                state.isr.retain(|m| *m != node);
                changed = true;
            }
            if state.leader == Some(node) {
                self.elect(id);
                changed = true;
            }
            if changed {
                self.bump_partition_epoch(id);
                self.broadcast(id, out);
            }
        }
    }

    /// Who would be elected for `id` now: the first eligible ISR member in replica order,
    /// or (unclean election on, no ISR member eligible) the first eligible replica. The
    /// flag says whether the choice is unclean.
    fn candidate(&self, id: PartitionId) -> Option<(NodeId, bool)> {
        let record = self.partitions.get(&id)?;
        let state = &record.state;
        if let Some(clean) = state.replicas.iter().find(|r| state.isr.contains(r) && self.eligible(**r)) {
            return Some((*clean, false));
        }
        if !record.config.unclean_leader_election {
            return None;
        }
        state.replicas.iter().find(|r| self.eligible(**r)).map(|r| (*r, true))
    }

    /// Gives `id` a new leader epoch with the current candidate as leader (or none).
    fn elect(&mut self, id: PartitionId) {
        let candidate = self.candidate(id);
        let Some(record) = self.partitions.get_mut(&id) else { return };
        let state = &mut record.state;
        state.leader_epoch = LeaderEpoch(state.leader_epoch.0 + 1);
        state.leader = candidate.map(|(node, _)| node);
        if let Some((node, true)) = candidate {
            // Kafka's unclean election: the new leader's log is the truth from now on.
            state.isr = vec![node];
            record.unclean_elections += 1;
        }
    }

    fn bump_partition_epoch(&mut self, id: PartitionId) {
        if let Some(record) = self.partitions.get_mut(&id) {
            record.state.partition_epoch = PartitionEpoch(record.state.partition_epoch.0 + 1);
        }
    }

    /// After a node comes back: leaderless partitions get a leader if one is now eligible.
    fn elect_leaderless(&mut self, out: &mut Vec<Envelope>) {
        let ids: Vec<PartitionId> = self
            .partitions
            .iter()
            .filter(|(id, r)| r.state.leader.is_none() && self.candidate(**id).is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.elect(id);
            self.bump_partition_epoch(id);
            self.broadcast(id, out);
        }
    }

    /// Moves leadership to the preferred replica (the first) where it is eligible and in
    /// sync but not leading (Kafka's preferred leader election after a node returns).
    fn elect_preferred_leaders(&mut self, out: &mut Vec<Envelope>) {
        let moves: Vec<(PartitionId, NodeId)> = self
            .partitions
            .iter()
            .filter_map(|(id, r)| {
                let preferred = *r.state.replicas.first()?;
                let wanted =
                    r.state.leader != Some(preferred) && r.state.isr.contains(&preferred) && self.eligible(preferred);
                wanted.then_some((*id, preferred))
            })
            .collect();
        for (id, preferred) in moves {
            if let Some(record) = self.partitions.get_mut(&id) {
                record.state.leader = Some(preferred);
                record.state.leader_epoch = LeaderEpoch(record.state.leader_epoch.0 + 1);
                record.state.partition_epoch = PartitionEpoch(record.state.partition_epoch.0 + 1);
            }
            self.broadcast(id, out);
        }
    }

    /// Sends the partition's state to each of its replicas' current incarnation.
    fn broadcast(&self, id: PartitionId, out: &mut Vec<Envelope>) {
        let Some(record) = self.partitions.get(&id) else { return };
        for replica in &record.state.replicas {
            let Some(incarnation) = self.sessions.get(replica).and_then(|s| s.incarnation) else { continue };
            out.push(Envelope {
                from: Endpoint::Controller,
                to: Endpoint::Node(*replica),
                message: Message::PartitionUpdate { incarnation, state: record.state.clone() },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const P: PartitionId = PartitionId(0);
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

    fn controller(unclean: bool) -> Controller {
        let config = ControllerConfig { session_timeout_ms: 100, preferred_election_interval_ms: 1_000 };
        let nodes = [NodeId(1), NodeId(2), NodeId(3)];
        let spec = (P, nodes.to_vec(), PartitionConfig { min_insync_replicas: 2, unclean_leader_election: unclean });
        Controller::new(config, &nodes, &[spec])
    }

    fn heartbeat(c: &mut Controller, now: u64, node: u32, incarnation: u64) -> Vec<Envelope> {
        let message =
            Message::Heartbeat { node: NodeId(node), incarnation: Incarnation(incarnation), want_shutdown: false };
        c.step(
            now,
            ControllerInput::Receive(Envelope {
                from: Endpoint::Node(NodeId(node)),
                to: Endpoint::Controller,
                message,
            }),
        )
    }

    fn alter(c: &mut Controller, node: u32, isr: &[u32]) -> bool {
        let state = c.partition(P).unwrap().clone();
        let request_id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let message = Message::AlterPartition {
            request_id,
            node: NodeId(node),
            incarnation: Incarnation(1),
            partition: P,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            isr: isr.iter().map(|n| NodeId(*n)).collect(),
        };
        let out = c.step(
            0,
            ControllerInput::Receive(Envelope {
                from: Endpoint::Node(NodeId(node)),
                to: Endpoint::Controller,
                message,
            }),
        );
        out.iter().any(|e| matches!(e.message, Message::AlterPartitionReply { accepted: true, .. }))
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
        let message = Message::AlterPartition {
            node: NodeId(1),
            incarnation: Incarnation(1),
            partition: P,
            leader_epoch: before.leader_epoch,
            partition_epoch: before.partition_epoch,
            isr: vec![NodeId(1)],
            request_id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let out = c.step(
            0,
            ControllerInput::Receive(Envelope { from: Endpoint::Node(NodeId(1)), to: Endpoint::Controller, message }),
        );
        assert!(out.iter().any(|e| matches!(e.message, Message::AlterPartitionReply { accepted: false, .. })));
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

    #[test]
    fn unclean_election_off_leaves_partition_leaderless() {
        let mut c = controller(false);
        for n in 1..=3 {
            heartbeat(&mut c, 0, n, 1);
        }
        assert!(alter(&mut c, 1, &[1]));
        heartbeat(&mut c, 90, 2, 1);
        heartbeat(&mut c, 90, 3, 1);
        c.step(150, ControllerInput::Tick);
        let state = c.partition(P).unwrap();
        assert_eq!(state.leader, None, "only n1 was in sync");
        assert_eq!(state.isr, vec![NodeId(1)], "the last ISR member stays");
        heartbeat(&mut c, 200, 1, 1);
        assert_eq!(c.partition(P).unwrap().leader, Some(NodeId(1)), "it leads again once back");
        assert_eq!(c.unclean_elections(P), 0);
    }

    #[test]
    fn unclean_election_on_elects_outside_the_isr() {
        let mut c = controller(true);
        for n in 1..=3 {
            heartbeat(&mut c, 0, n, 1);
        }
        assert!(alter(&mut c, 1, &[1]));
        heartbeat(&mut c, 90, 2, 1);
        heartbeat(&mut c, 90, 3, 1);
        c.step(150, ControllerInput::Tick);
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
        let message = Message::Heartbeat { node: NodeId(1), incarnation: Incarnation(1), want_shutdown: true };
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
