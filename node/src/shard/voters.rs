//! The controller quorum's members from the admin side: which nodes vote, which follow
//! the log, and one voter added or removed at a time (`sluice controller add-voter` and
//! `remove-voter`, the native AlterVoters). A node joins as a learner by itself (its
//! `Message::Join`, `cluster::agent`); an operator makes it a voter once it has caught up,
//! and takes a voter's vote away before the node is retired (`sluice node remove` then
//! removes it from the quorum with its record).
//!
//! Where it lives: shard 0 (the node's controller agent), of the controller for changes.

use std::rc::Rc;
use std::time::Instant;

use tracing::info;

use super::cluster::{QuorumMembers, ADMIN_TIMEOUT, STATE_POLL};
use super::Shard;
use crate::errors::{ErrorKind, NodeError};
use crate::replication::quorum::{MemberChange, QuorumError};
use crate::replication::NodeId;

/// The controller quorum as a node knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    pub leader: Option<NodeId>,
    pub members: QuorumMembers,
}

impl Shard {
    /// Shard 0: the quorum's leader and members as this node's member last applied them.
    pub(super) fn quorum_status(&self) -> Result<QuorumStatus, NodeError> {
        let agent = self.agent.get().ok_or_else(|| NodeError::new(ErrorKind::Unknown, "not shard 0"))?;
        let members = agent
            .members()
            .ok_or_else(|| NodeError::new(ErrorKind::Unknown, "this node's controller member left the quorum"))?;
        Ok(QuorumStatus { leader: agent.controller(), members })
    }

    /// Shard 0 of the controller: makes node `node` a voter (`add`; it must be a member
    /// that caught up with the log) or a learner (its vote taken away), then waits until
    /// the change is applied (at most `ADMIN_TIMEOUT`). Done already is success.
    pub(super) async fn change_voter(self: &Rc<Self>, node: u32, add: bool) -> Result<(), NodeError> {
        let agent = self.controller_agent("a controller quorum change")?;
        let id = NodeId(node);
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        let mut proposed = false;
        loop {
            let members = agent.members().unwrap_or_default();
            if members.voters.contains(&id) == add {
                if proposed {
                    info!(node, add, "controller voters are now {:?}", members.voters);
                }
                return Ok(());
            }
            if add && !members.contains(id) {
                return Err(NodeError::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "node {node} is not a member of the controller quorum: start it with --join (a running \
                         node's cluster address) first"
                    ),
                ));
            }
            let change = if add { MemberChange::Promote } else { MemberChange::Demote };
            match agent.change_members(change, id) {
                Ok(()) => proposed = true,
                Err(QuorumError::MembersBusy(_)) => {}
                Err(QuorumError::Members(why)) => {
                    return Err(NodeError::new(ErrorKind::InvalidRequest, format!("node {node}: {why}")))
                }
                Err(e @ (QuorumError::LeaderMoving { .. } | QuorumError::NotLeader { .. })) => {
                    return Err(NodeError::new(ErrorKind::NotController, e.to_string()))
                }
                Err(e) => return Err(NodeError::new(ErrorKind::Unknown, e.to_string())),
            }
            if Instant::now() >= deadline {
                return Err(NodeError::new(
                    ErrorKind::RequestTimedOut,
                    format!("the change of node {node}'s vote was not applied within {ADMIN_TIMEOUT:?}"),
                ));
            }
            crate::io::sleep(STATE_POLL * 10).await;
        }
    }

    /// Shard 0 of the controller: takes node `node`, a learner, out of the quorum (its
    /// record was removed: `remove_node`), waiting until applied.
    pub(super) async fn remove_learner(&self, node: NodeId) -> Result<(), NodeError> {
        let agent = self.controller_agent("a controller quorum change")?;
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        while agent.members().is_some_and(|m| m.learners.contains(&node)) {
            match agent.change_members(MemberChange::Remove, node) {
                Ok(()) | Err(QuorumError::MembersBusy(_)) => {}
                Err(e) => return Err(NodeError::new(ErrorKind::NotController, e.to_string())),
            }
            if Instant::now() >= deadline {
                return Err(NodeError::new(
                    ErrorKind::RequestTimedOut,
                    format!(
                        "node {node}'s removal from the controller quorum was not applied within {ADMIN_TIMEOUT:?}"
                    ),
                ));
            }
            crate::io::sleep(STATE_POLL * 10).await;
        }
        Ok(())
    }
}
