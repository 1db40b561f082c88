//! Kafka's consumer group protocol (KIP-848, ConsumerGroupHeartbeat): the coordinator
//! assigns, members reconcile one heartbeat at a time. Part of the coordinator's state
//! machine (`state::Groups` keeps these groups beside the classic and native ones, with
//! the same committed offsets); no clock, no I/O.
//!
//! The rules, as Kafka's coordinator keeps them:
//! - The **group epoch** rises whenever what the assignment depends on changes: a member
//!   joins or leaves, a subscription or the assignor changes, a subscribed topic's
//!   partition count changes. The **target assignment** is computed for it with the
//!   node's assignors (`uniform`: sticky and balanced, our cooperative-sticky; `range`).
//! - Each member has its own **member epoch** and the partitions it was told to own.
//!   A heartbeat moves it toward the target: first it is told to give up what the
//!   target takes away (its epoch stays), and once a later heartbeat reports them gone
//!   it moves to the target epoch and gets the target's partitions, except those another
//!   member still has to give up; those come with a later heartbeat once released. So
//!   no partition ever has two owners.
//! - A heartbeat with an epoch that is not the member's is fenced (FENCED_MEMBER_EPOCH),
//!   except one from the epoch before whose partitions are all still its own (an answer
//!   it missed: it is told again); a commit must carry the member's current epoch
//!   (STALE_MEMBER_EPOCH otherwise).
//! - A member not heard from within the session timeout, or that keeps partitions it was
//!   told to give up past its rebalance timeout, is removed.
//!
//! - The group is written to its offsets partition whenever it changes, as a group
//!   metadata record (`metadata`): protocol type `consumer`, the group epoch as the
//!   generation, the assignor as the protocol, and per member its subscription (whose
//!   user data carries `KIP848_MARK` and the member's epoch) and its partitions (those
//!   it is giving up included). A new coordinator loads it (`loaded`): members keep
//!   their ids, epochs and partitions, and the target is computed again at the next
//!   heartbeat, so a coordinator failover moves no partition.
//!
//! Not here (yet): regex subscriptions and client-side assignors.

use std::collections::{BTreeMap, BTreeSet};

use tracing::info;

use super::assign;
use super::consumer_protocol;
use super::messages::{ConsumerHeartbeat, ConsumerHeartbeatResult};
use super::records::{GroupMetadata, MemberMetadata};
use super::state::{Topics, CONSUMER_PROTOCOL_TYPE};
use crate::errors::{ErrorKind, NodeError};
use sluice_schemas::TopicPartition;

/// The server-side assignors, by their KIP-848 names, and ours that computes each.
pub const ASSIGNORS: &[(&str, &str)] = &[("uniform", "cooperative-sticky"), ("range", "range")];

/// What a member joining without naming an assignor gets (Kafka's default).
const DEFAULT_ASSIGNOR: &str = "uniform";

/// The user data of KIP-848 members' subscriptions in stored group metadata, followed by
/// the member's epoch (decimal): how a new coordinator tells these groups from others.
const KIP848_MARK: &str = "sluice-kip848:";

#[derive(Debug)]
pub struct ConsumerMember {
    pub epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub instance_id: Option<String>,
    pub topics: BTreeSet<String>,
    pub rebalance_timeout_ms: u32,
    pub last_seen_ms: u64,
    /// What it was told to own (without `revoking`).
    pub assigned: BTreeSet<TopicPartition>,
    /// What it was told to give up and has not yet reported given up.
    pub revoking: BTreeSet<TopicPartition>,
    /// When it was told to give up `revoking`.
    pub revoking_since_ms: u64,
    /// What it last reported owning.
    pub owned: BTreeSet<TopicPartition>,
    /// The assignment it was last sent (`None`: send it on the next heartbeat).
    told: Option<BTreeSet<TopicPartition>>,
}

#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub epoch: i32,
    /// The KIP-848 name of the group's assignor.
    pub assignor: String,
    /// The epoch `target` was computed for.
    pub target_epoch: i32,
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    /// Partition counts of the subscribed topics as of the target (`None` for a group
    /// just loaded: its next target is computed at its stored epoch).
    partitions: Option<BTreeMap<String, u32>>,
    pub members: BTreeMap<String, ConsumerMember>,
    /// Something stored changed in this step: the group's metadata is written at its end.
    pub changed: bool,
}

fn error(kind: ErrorKind, message: impl Into<String>) -> NodeError {
    NodeError::new(kind, message)
}

impl ConsumerGroup {
    /// Whether stored group metadata is a KIP-848 group's (see `metadata`).
    pub fn is_stored_as_one(metadata: &GroupMetadata) -> bool {
        metadata.protocol_type == CONSUMER_PROTOCOL_TYPE
            && !metadata.members.is_empty()
            && metadata.members.iter().all(|m| member_epoch(&m.subscription).is_some())
    }

    /// The group as its group metadata record holds it.
    pub fn metadata(&self) -> GroupMetadata {
        let members = self
            .members
            .iter()
            .map(|(id, m)| {
                let topics: Vec<String> = m.topics.iter().cloned().collect();
                let mark = format!("{KIP848_MARK}{}", m.epoch);
                let held: Vec<TopicPartition> = m.assigned.union(&m.revoking).cloned().collect();
                MemberMetadata {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: i32::try_from(m.rebalance_timeout_ms).unwrap_or(i32::MAX),
                    session_timeout_ms: -1,
                    subscription: consumer_protocol::encode_subscription_with(&topics, Some(mark.as_bytes())),
                    assignment: consumer_protocol::encode_assignment(&held),
                }
            })
            .collect();
        GroupMetadata {
            protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
            generation: self.epoch,
            protocol: Some(self.assignor.clone()),
            leader: None,
            state_timestamp_ms: -1,
            members,
        }
    }

    /// A group as its metadata record left it; sessions start `now_ms`.
    pub fn loaded(metadata: GroupMetadata, now_ms: u64) -> ConsumerGroup {
        let members = metadata
            .members
            .into_iter()
            .map(|m| {
                let topics =
                    consumer_protocol::decode_subscription(&m.subscription).map(|(t, _)| t).unwrap_or_default();
                let held: BTreeSet<TopicPartition> =
                    consumer_protocol::decode_assignment(&m.assignment).unwrap_or_default().into_iter().collect();
                let member = ConsumerMember {
                    epoch: member_epoch(&m.subscription).unwrap_or(0),
                    client_id: m.client_id,
                    client_host: m.client_host,
                    instance_id: m.group_instance_id,
                    topics: topics.into_iter().collect(),
                    rebalance_timeout_ms: u32::try_from(m.rebalance_timeout_ms).unwrap_or(300_000),
                    last_seen_ms: now_ms,
                    assigned: held.clone(),
                    revoking: BTreeSet::new(),
                    revoking_since_ms: now_ms,
                    owned: held.clone(),
                    told: Some(held),
                };
                (m.member_id, member)
            })
            .collect();
        ConsumerGroup {
            epoch: metadata.generation,
            assignor: metadata.protocol.unwrap_or_else(|| DEFAULT_ASSIGNOR.to_string()),
            // Computed again at the next heartbeat (from what the members hold).
            target_epoch: 0,
            target: BTreeMap::new(),
            partitions: None,
            members,
            changed: false,
        }
    }

    /// Kafka's consumer group states.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.target_epoch < self.epoch {
            "Assigning"
        } else if self.members.values().any(|m| m.epoch < self.target_epoch || !m.revoking.is_empty()) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// A member's partitions in the target assignment.
    pub fn target_of(&self, member_id: &str) -> Vec<TopicPartition> {
        self.target.get(member_id).map(|t| t.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.topics.iter().cloned()).collect()
    }

    /// Takes one heartbeat; `new_id` names a member joining without an id.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        now_ms: u64,
        topics: &dyn Topics,
        hb: ConsumerHeartbeat,
        new_id: impl FnOnce() -> String,
        heartbeat_interval_ms: u32,
    ) -> Result<ConsumerHeartbeatResult, NodeError> {
        if let Some(name) = &hb.assignor {
            if !ASSIGNORS.iter().any(|(n, _)| n == name) {
                let known: Vec<&str> = ASSIGNORS.iter().map(|(n, _)| *n).collect();
                return Err(error(
                    ErrorKind::UnsupportedAssignor,
                    format!("assignor {name:?} is not one of the coordinator's: {known:?}"),
                ));
            }
        }
        let member_id = match hb.member_epoch {
            -1 | -2 => return self.leave(group_id, &hb),
            0 => self.join(group_id, now_ms, hb.clone(), new_id)?,
            epoch => {
                let member = self.members.get_mut(&hb.member_id).ok_or_else(|| {
                    error(ErrorKind::UnknownMemberId, format!("member {:?} is not in group {group_id:?}", hb.member_id))
                })?;
                if epoch != member.epoch {
                    // An answer it missed: the epoch before, and it owns nothing it was
                    // not told to. Told again.
                    let missed = epoch < member.epoch
                        && hb.owned.as_ref().is_some_and(|o| o.iter().all(|tp| member.assigned.contains(tp)));
                    if !missed {
                        return Err(error(
                            ErrorKind::FencedMemberEpoch,
                            format!(
                                "member {:?} of group {group_id:?} sent epoch {epoch}; its epoch is {}: join again",
                                hb.member_id, member.epoch
                            ),
                        ));
                    }
                    member.told = None;
                }
                hb.member_id.clone()
            }
        };
        let Some(member) = self.members.get_mut(&member_id) else {
            return Err(error(ErrorKind::UnknownMemberId, format!("member {member_id:?} is gone")));
        };
        member.last_seen_ms = now_ms;
        let mut changed = false;
        if let Some(list) = hb.topics {
            let list: BTreeSet<String> = list.into_iter().collect();
            changed |= list != member.topics;
            member.topics = list;
        }
        if let Some(ms) = hb.rebalance_timeout_ms {
            member.rebalance_timeout_ms = ms;
        }
        if let Some(owned) = hb.owned {
            member.owned = owned.into_iter().collect();
        }
        if let Some(name) = hb.assignor {
            changed |= name != self.assignor;
            self.assignor = name;
        }
        if changed {
            self.epoch += 1;
            self.changed = true;
        }
        self.refresh_target(group_id, topics);
        if self.reconcile(&member_id, now_ms) {
            self.changed = true;
        }
        let Some(member) = self.members.get_mut(&member_id) else {
            return Err(error(ErrorKind::UnknownMemberId, format!("member {member_id:?} is gone")));
        };
        let assignment = if member.told.as_ref() == Some(&member.assigned) {
            None
        } else {
            member.told = Some(member.assigned.clone());
            Some(member.assigned.iter().cloned().collect())
        };
        Ok(ConsumerHeartbeatResult { member_id, member_epoch: member.epoch, heartbeat_interval_ms, assignment })
    }

    fn join(
        &mut self,
        group_id: &str,
        now_ms: u64,
        hb: ConsumerHeartbeat,
        new_id: impl FnOnce() -> String,
    ) -> Result<String, NodeError> {
        let Some(topics) = hb.topics else {
            return Err(error(ErrorKind::InvalidRequest, "a joining member must name its subscribed topics"));
        };
        let id = if hb.member_id.is_empty() { new_id() } else { hb.member_id.clone() };
        // A static member coming back takes its previous self's place and partitions.
        let previous = hb
            .instance_id
            .as_ref()
            .and_then(|i| {
                self.members.iter().find(|(_, m)| m.instance_id.as_ref() == Some(i)).map(|(mid, _)| mid.clone())
            })
            .and_then(|mid| self.members.remove(&mid));
        // A member that joins again under its id starts over.
        let restarted = self.members.remove(&id);
        let assigned = previous.as_ref().map(|m| m.assigned.clone()).unwrap_or_default();
        info!(group = group_id, member = %id, instance = ?hb.instance_id, "consumer group member joined");
        self.members.insert(
            id.clone(),
            ConsumerMember {
                epoch: 0,
                client_id: hb.client_id,
                client_host: hb.client_host,
                instance_id: hb.instance_id,
                topics: topics.into_iter().collect(),
                rebalance_timeout_ms: hb.rebalance_timeout_ms.unwrap_or(300_000),
                last_seen_ms: now_ms,
                assigned: assigned.clone(),
                revoking: BTreeSet::new(),
                revoking_since_ms: now_ms,
                owned: assigned,
                told: None,
            },
        );
        if self.assignor.is_empty() {
            self.assignor = DEFAULT_ASSIGNOR.to_string();
        }
        if previous.is_none() || restarted.is_some() {
            self.epoch += 1;
            self.changed = true;
        }
        if previous.is_some() {
            // Its place in the target goes with it.
            self.target_epoch = self.target_epoch.min(self.epoch - 1);
        }
        self.changed = true;
        Ok(id)
    }

    fn leave(&mut self, group_id: &str, hb: &ConsumerHeartbeat) -> Result<ConsumerHeartbeatResult, NodeError> {
        if self.members.remove(&hb.member_id).is_none() {
            return Err(error(
                ErrorKind::UnknownMemberId,
                format!("member {:?} is not in group {group_id:?}", hb.member_id),
            ));
        }
        info!(group = group_id, member = %hb.member_id, "consumer group member left");
        self.epoch += 1;
        self.changed = true;
        Ok(ConsumerHeartbeatResult {
            member_id: hb.member_id.clone(),
            member_epoch: hb.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        })
    }

    /// Removes members whose session expired or who kept partitions they were told to
    /// give up past their rebalance timeout; whether any went.
    pub fn expire(&mut self, group_id: &str, now_ms: u64, session_timeout_ms: u64) -> bool {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                now_ms.saturating_sub(m.last_seen_ms) > session_timeout_ms
                    || (!m.revoking.is_empty()
                        && now_ms.saturating_sub(m.revoking_since_ms) > u64::from(m.rebalance_timeout_ms))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            info!(group = group_id, member = %id, "consumer group member expired (session or revocation timeout)");
            self.members.remove(id);
        }
        if !gone.is_empty() {
            self.epoch += 1;
            self.changed = true;
        }
        !gone.is_empty()
    }

    /// Computes the target assignment again when the group epoch moved past it or a
    /// subscribed topic's partition count changed.
    fn refresh_target(&mut self, group_id: &str, topics: &dyn Topics) {
        let partitions: BTreeMap<String, u32> =
            self.subscribed_topics().into_iter().filter_map(|t| topics.partition_count(&t).map(|c| (t, c))).collect();
        if self.partitions.as_ref() != Some(&partitions) {
            if self.partitions.is_some() || self.target_epoch > 0 {
                self.epoch += 1;
                self.changed = true;
            }
            self.partitions = Some(partitions);
        }
        if self.target_epoch >= self.epoch {
            return;
        }
        let strategy = ASSIGNORS.iter().find(|(n, _)| *n == self.assignor).map_or("range", |(_, s)| *s);
        let subscriptions: Vec<assign::MemberSubscription> = self
            .members
            .iter()
            .map(|(id, m)| assign::MemberSubscription {
                member_id: id.clone(),
                topics: m.topics.clone(),
                owned: m.assigned.iter().chain(&m.revoking).cloned().collect(),
            })
            .collect();
        let partitions = self.partitions.clone().unwrap_or_default();
        self.target = assign::assign(strategy, &subscriptions, &partitions)
            .into_iter()
            .map(|(id, list)| (id, list.into_iter().collect()))
            .collect();
        self.target_epoch = self.epoch;
        info!(group = group_id, epoch = self.epoch, members = self.members.len(), "consumer group target assignment");
    }

    /// Moves one member toward the target (see the module's rules); whether its epoch or
    /// partitions changed.
    fn reconcile(&mut self, member_id: &str, now_ms: u64) -> bool {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_by_others: BTreeSet<TopicPartition> = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != member_id)
            .flat_map(|(_, m)| m.assigned.iter().chain(&m.revoking).cloned())
            .collect();
        let target_epoch = self.target_epoch;
        let Some(member) = self.members.get_mut(member_id) else { return false };
        let before = (member.epoch, member.assigned.len(), member.revoking.len());
        if !member.revoking.is_empty() && member.owned.is_disjoint(&member.revoking) {
            member.revoking.clear();
        }
        if !member.revoking.is_empty() {
            return before != (member.epoch, member.assigned.len(), member.revoking.len());
        }
        let drop: BTreeSet<TopicPartition> = member.assigned.difference(&target).cloned().collect();
        if !drop.is_empty() {
            member.assigned.retain(|tp| !drop.contains(tp));
            member.revoking = drop;
            member.revoking_since_ms = now_ms;
            if member.owned.is_disjoint(&member.revoking) {
                // It never took them up: nothing to wait for.
                member.revoking.clear();
            } else {
                return true;
            }
        }
        member.assigned.extend(target.difference(&held_by_others).cloned());
        member.epoch = target_epoch;
        before != (member.epoch, member.assigned.len(), member.revoking.len())
    }
}

/// A stored KIP-848 member's epoch, from its subscription's user data.
fn member_epoch(subscription: &[u8]) -> Option<i32> {
    let (_, data) = consumer_protocol::decode_subscription(subscription)?;
    std::str::from_utf8(&data?).ok()?.strip_prefix(KIP848_MARK)?.parse().ok()
}
