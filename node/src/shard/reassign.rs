//! Partition reassignment as clients ask for it (Kafka's AlterPartitionReassignments and
//! ListPartitionReassignments): shard 0 of the controller turns each move into a
//! `Command::Reassign`, checked against the committed state first so a refusal names its
//! reason, and answers once the move is recorded (started), not once it is done. The
//! move itself runs in the cluster: the new replicas open empty logs and fetch from the
//! leader like any follower, the leader brings them into the ISR, and the state machine
//! completes the move (`ClusterState::complete_reassignment`) so that the replicas leaving
//! close and delete their copies (`Shard::apply_metadata`).
//!
//! Lives on: shard 0 (its controller agent).

use std::rc::Rc;
use std::time::Instant;

use tracing::info;

use super::cluster::{ADMIN_TIMEOUT, STATE_POLL};
use super::Shard;
use crate::errors::{ErrorKind, NodeError};
use crate::replication::{ClusterPartitionId, ClusterState, Command, NodeId, ReassignError, RemoveNodeError};

/// A move a client asked for: the partition, and its new replicas (node ids, the first
/// preferred as leader) or `None` to cancel the move in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: u32,
    pub target: Option<Vec<u32>>,
}

/// A move in progress, as ListPartitionReassignments shows it: every replica the
/// partition has now (target first), and which of them are being added and removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveInProgress {
    pub topic: String,
    pub partition: u32,
    pub replicas: Vec<u32>,
    pub adding: Vec<u32>,
    pub removing: Vec<u32>,
}

fn numbers(nodes: &[NodeId]) -> Vec<u32> {
    nodes.iter().map(|n| n.0).collect()
}

/// `TOPIC-PARTITION` of a partition id.
fn name_of(state: &ClusterState, id: ClusterPartitionId) -> Option<String> {
    state.topics().find_map(|(name, t)| t.partitions.iter().position(|p| *p == id).map(|i| format!("{name}-{i}")))
}

/// The cluster id of `topic`'s partition `partition`.
fn partition_id(state: &ClusterState, topic: &str, partition: u32) -> Option<ClusterPartitionId> {
    state.topic(topic)?.partitions.get(partition as usize).copied()
}

/// The command for `m`, or why it is refused. `keep_factor`: Kafka's
/// `allowReplicationFactorChange = false` (v1): the target must have as many replicas as
/// the partition had before any move.
fn command_for(state: &ClusterState, m: &Move, keep_factor: bool) -> Result<Command, NodeError> {
    let name = format!("{}-{}", m.topic, m.partition);
    let Some(id) = partition_id(state, &m.topic, m.partition) else {
        return Err(NodeError::new(ErrorKind::UnknownTopicOrPartition, format!("{name} does not exist")));
    };
    let target: Option<Vec<NodeId>> = m.target.as_ref().map(|t| t.iter().map(|n| NodeId(*n)).collect());
    if let (Some(target), Some(record), true) = (&target, state.partition_record(id), keep_factor) {
        let before = record.reassignment.as_ref().map_or(record.state.replicas.len(), |r| r.original.len());
        if target.len() != before {
            return Err(NodeError::new(
                ErrorKind::InvalidReplicationFactor,
                format!(
                    "{name}: {} replicas asked for, {before} now, and the request does not allow the replication \
                     factor to change",
                    target.len()
                ),
            ));
        }
    }
    state.check_reassign(id, target.as_deref()).map_err(|e| {
        let kind = match e {
            ReassignError::UnknownPartition => ErrorKind::UnknownTopicOrPartition,
            ReassignError::NoReassignmentInProgress => ErrorKind::NoReassignmentInProgress,
            ReassignError::Invalid(_) => ErrorKind::InvalidReplicaAssignment,
        };
        NodeError::new(kind, format!("{name}: {e}"))
    })?;
    Ok(Command::Reassign { partition: id, target })
}

/// Whether the committed state shows `command` (a `Command::Reassign`) applied: the move
/// recorded, already completed, or (a cancel) no move left.
fn shows(state: &ClusterState, command: &Command) -> bool {
    let Command::Reassign { partition, target } = command else { return true };
    let Some(record) = state.partition_record(*partition) else { return true };
    match (target, &record.reassignment) {
        (None, moving) => moving.is_none(),
        (Some(target), Some(moving)) => moving.target == *target,
        (Some(target), None) => record.state.replicas == *target,
    }
}

impl Shard {
    /// Shard 0's controller agent, when this node is the controller (admin requests run
    /// there); else why not.
    pub(super) fn controller_agent(&self, what: &str) -> Result<&Rc<crate::cluster::agent::Agent>, NodeError> {
        let agent = self
            .agent
            .get()
            .ok_or_else(|| NodeError::new(ErrorKind::Unknown, format!("{what} on shard {}, not shard 0", self.id.0)))?;
        self.check_controller(agent)?;
        Ok(agent)
    }

    /// Shard 0 of the controller: forgets node `node` (Kafka's UnregisterBroker), once it
    /// is down and holds no replica, and is not a controller voter (take its vote away
    /// first: `change_voter`); waits until the committed state no longer has it and it
    /// left the controller quorum (at most `ADMIN_TIMEOUT` each).
    pub(super) async fn remove_node(self: &Rc<Self>, node: u32) -> Result<(), NodeError> {
        let agent = self.controller_agent("node removal")?;
        let id = NodeId(node);
        if agent.members().is_some_and(|m| m.voters.contains(&id)) {
            return Err(NodeError::new(
                ErrorKind::InvalidRequest,
                format!("node {node} is a controller voter: take its vote away first (sluice controller remove-voter {node})"),
            ));
        }
        let checked = agent.with_state(|state| {
            state.check_remove_node(id).map_err(|e| match e {
                RemoveNodeError::Unknown => {
                    NodeError::new(ErrorKind::BrokerIdNotRegistered, format!("the cluster has no node {node}"))
                }
                RemoveNodeError::Live => {
                    NodeError::new(ErrorKind::InvalidRequest, format!("node {node} is live: stop it first"))
                }
                RemoveNodeError::HoldsReplicas(ids) => {
                    let names: Vec<String> = ids
                        .iter()
                        .take(5)
                        .filter_map(|p| name_of(state, *p))
                        .collect();
                    NodeError::new(
                        ErrorKind::InvalidRequest,
                        format!(
                            "node {node} still holds replicas of {} partitions ({}{}): move them first (sluice node drain)",
                            ids.len(),
                            names.join(", "),
                            if ids.len() > 5 { ", ..." } else { "" }
                        ),
                    )
                }
            })
        });
        checked
            .unwrap_or_else(|| Err(NodeError::new(ErrorKind::NotController, "this node is not a controller voter")))?;
        agent.propose(&Command::RemoveNode { node: id }).map_err(|e| {
            NodeError::new(ErrorKind::NotController, format!("the controller could not propose it: {e}"))
        })?;
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        while agent.with_state(|state| state.node(id).is_some()) == Some(true) {
            if Instant::now() >= deadline {
                return Err(NodeError::new(
                    ErrorKind::RequestTimedOut,
                    format!("node {node}'s removal was not committed within {ADMIN_TIMEOUT:?}"),
                ));
            }
            crate::io::sleep(STATE_POLL).await;
        }
        self.remove_learner(id).await?;
        info!(node, "node removed from the cluster");
        Ok(())
    }

    /// Shard 0, once the node's first view of the cluster shows it registered: deletes the
    /// copies of partitions that moved off this node while it was down (a directory
    /// `TOPIC-PARTITION` of a partition that exists and that this node does not
    /// replicate). The view is the committed state, so a replica it does not list is not
    /// in any ISR and holds nothing the cluster needs. Other entries are left alone.
    pub(super) fn remove_stray_replicas(&self) {
        let view = self.cluster_view();
        let Ok(entries) = std::fs::read_dir(&self.config.data_dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((topic, partition)) = name.to_str().and_then(|n| n.rsplit_once('-')) else { continue };
            let Ok(partition) = partition.parse::<u32>() else { continue };
            let key = sluice_schemas::TopicPartition::new(topic, partition);
            let Some(state) = view.partitions.get(&key) else { continue };
            if !entry.path().is_dir() || state.replicas.iter().any(|r| *r == self.host().node()) {
                continue;
            }
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    info!(topic, partition, "this partition moved off this node while it was down: its copy is deleted")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(dir = %entry.path().display(), "removing a replica moved off this node: {e}"),
            }
        }
    }

    /// Shard 0: starts (or cancels) each move, one result per move in order; waits until
    /// the controller's committed state shows them (at most `ADMIN_TIMEOUT`).
    pub(super) async fn reassign(self: &Rc<Self>, moves: Vec<Move>, keep_factor: bool) -> Vec<Result<(), NodeError>> {
        let agent = match self.controller_agent("reassignment") {
            Ok(agent) => agent,
            Err(e) => return moves.iter().map(|_| Err(e.clone())).collect(),
        };
        let not_voter = || NodeError::new(ErrorKind::NotController, "this node is not a controller voter");
        let proposed: Vec<Result<Command, NodeError>> = moves
            .iter()
            .map(|m| {
                let c = agent.with_state(|s| command_for(s, m, keep_factor)).unwrap_or_else(|| Err(not_voter()))?;
                agent.propose(&c).map_err(|e| {
                    NodeError::new(ErrorKind::NotController, format!("the controller could not propose it: {e}"))
                })?;
                info!(topic = %m.topic, partition = m.partition, target = ?m.target, "reassignment proposed");
                Ok(c)
            })
            .collect();
        // Proposed, and not yet in the committed state.
        let pending =
            |r: &Result<Command, NodeError>| matches!(r, Ok(c) if agent.with_state(|s| shows(s, c)) != Some(true));
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        while proposed.iter().any(pending) && Instant::now() < deadline {
            crate::io::sleep(STATE_POLL).await;
        }
        proposed
            .into_iter()
            .zip(&moves)
            .map(|(r, m)| {
                if pending(&r) {
                    return Err(NodeError::new(
                        ErrorKind::RequestTimedOut,
                        format!(
                            "{}-{}: the move was not committed within {ADMIN_TIMEOUT:?} (is a quorum of voters up?)",
                            m.topic, m.partition
                        ),
                    ));
                }
                r.map(|_| ())
            })
            .collect()
    }

    /// Shard 0: the moves in progress, of the partitions asked for (`None`: all), in topic
    /// and partition order. Only the controller answers (it holds the latest state).
    pub(super) fn reassignments(&self, asked: Option<&[(String, Vec<u32>)]>) -> Result<Vec<MoveInProgress>, NodeError> {
        let agent = self.controller_agent("reassignments")?;
        let listed = agent.with_state(|state| {
            let mut out = Vec::new();
            for (topic, record) in state.topics() {
                let wanted: Option<&Vec<u32>> = match asked {
                    None => None,
                    Some(list) => match list.iter().find(|(t, _)| t == topic) {
                        Some((_, partitions)) => Some(partitions),
                        None => continue,
                    },
                };
                for (index, id) in record.partitions.iter().enumerate() {
                    let partition = index as u32;
                    if wanted.is_some_and(|w| !w.contains(&partition)) {
                        continue;
                    }
                    let Some(p) = state.partition_record(*id) else { continue };
                    let Some(moving) = &p.reassignment else { continue };
                    out.push(MoveInProgress {
                        topic: topic.clone(),
                        partition,
                        replicas: numbers(&p.state.replicas),
                        adding: numbers(&moving.adding()),
                        removing: numbers(&moving.removing()),
                    });
                }
            }
            out
        });
        listed.ok_or_else(|| NodeError::new(ErrorKind::NotController, "this node is not a controller voter"))
    }
}
