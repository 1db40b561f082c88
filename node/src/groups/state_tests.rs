//! Unit tests of `Groups`, the coordinator's state machine: each drives it by hand with
//! simulated time (no executor, no files) and pins down one rule of the protocol as the
//! node has always applied it.

#![allow(clippy::unwrap_used)]

use sluice_schemas::TopicPartition;
use std::collections::{BTreeMap, BTreeSet};

use super::consumer_protocol;
use super::messages::{
    ConsumerHeartbeat, ConsumerHeartbeatResult, GroupReply, GroupRequest, JoinArgs, JoinProtocol, JoinResult,
};
use super::records::{GroupMetadataRecord, GroupRecord, OffsetRecord};
use super::state::{AppendId, GroupAction, GroupInput, Groups, RequestId, Topics};
use crate::errors::{ErrorKind, NodeError};
use sluice_schemas::groups::offsets_partition;

const SESSION_MS: u32 = 1_000;
const REBALANCE_MS: u32 = 5_000;

/// Topic "t" has 6 partitions, "u" has 2.
struct TwoTopics;

impl Topics for TwoTopics {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        match topic {
            "t" => Some(6),
            "u" => Some(2),
            _ => None,
        }
    }
}

/// The state machine and what it answered: every request is answered at most once, and
/// the appends it asked for wait in `appends` until the test completes them.
struct Sim {
    groups: Groups,
    now_ms: u64,
    next_request: u64,
    answered: BTreeMap<RequestId, GroupReply>,
    /// Appends of offset records or deletions (their group metadata records left out).
    appends: Vec<(AppendId, u32, Vec<OffsetRecord>)>,
    /// Group metadata records stored (an append of metadata alone needs no completing:
    /// nobody waits for it).
    stored_groups: Vec<GroupMetadataRecord>,
    /// Every action, for replay comparisons.
    log: Vec<String>,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            groups: Groups::new("tag"),
            now_ms: 1_000,
            next_request: 0,
            answered: BTreeMap::new(),
            appends: Vec::new(),
            stored_groups: Vec::new(),
            log: Vec::new(),
        }
    }

    fn step(&mut self, input: GroupInput) {
        for action in self.groups.step(self.now_ms, input, &TwoTopics) {
            self.log.push(format!("{} {action:?}", self.now_ms));
            match action {
                GroupAction::Reply { id, reply } => {
                    assert!(id.0 < self.next_request, "a reply to {id:?}, which was never sent");
                    let previous = self.answered.insert(id, reply);
                    assert!(previous.is_none(), "{id:?} answered twice");
                }
                GroupAction::AppendOffsets { append, partition, records, .. } => {
                    // Appends of group metadata alone answer nobody; a deletion's does.
                    let mut offsets = Vec::new();
                    let mut deletes = false;
                    for record in records {
                        match record {
                            GroupRecord::Offset(r) => offsets.push(r),
                            GroupRecord::Group(g) => {
                                deletes |= g.value.is_none();
                                self.stored_groups.push(g);
                            }
                        }
                    }
                    if !offsets.is_empty() || deletes {
                        self.appends.push((append, partition, offsets));
                    }
                }
            }
        }
    }

    /// Sends a request; its answer, if any yet, is in `answered`.
    fn send(&mut self, request: GroupRequest) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.step(GroupInput::Request { id, request });
        id
    }

    /// Sends a request that is answered at once.
    fn call(&mut self, request: GroupRequest) -> GroupReply {
        let id = self.send(request);
        self.take(id).unwrap_or_else(|| panic!("{id:?} was not answered at once"))
    }

    fn take(&mut self, id: RequestId) -> Option<GroupReply> {
        self.answered.remove(&id)
    }

    fn waiting(&self, id: RequestId) -> bool {
        !self.answered.contains_key(&id)
    }

    fn tick_at(&mut self, now_ms: u64) {
        assert!(now_ms >= self.now_ms, "time goes forward");
        self.now_ms = now_ms;
        self.step(GroupInput::Tick);
    }

    fn complete_appends(&mut self, result: Result<(), NodeError>) {
        for (append, _, _) in std::mem::take(&mut self.appends) {
            self.step(GroupInput::Appended { append, result: result.clone() });
        }
    }

    fn join(&mut self, group: &str, member_id: &str, client: &str) -> RequestId {
        self.send(native_join(group, member_id, client, &["t"]))
    }

    /// A join that completes the rebalance it starts (or rejoins) at once.
    fn join_now(&mut self, group: &str, member_id: &str, client: &str) -> JoinResult {
        let id = self.join(group, member_id, client);
        joined(self.take(id).unwrap_or_else(|| panic!("{client}'s join waits")))
    }

    fn heartbeat(&mut self, group: &str, member: &JoinResult) -> Result<(), NodeError> {
        let request = GroupRequest::Heartbeat {
            group: group.into(),
            member_id: member.member_id.clone(),
            generation: member.generation,
        };
        done(self.call(request))
    }

    fn commit(&mut self, group: &str, member_id: &str, generation: i32, offsets: &[(&str, u32, i64)]) -> RequestId {
        let offsets = offsets.iter().map(|(t, p, o)| (t.to_string(), *p, *o, String::new())).collect();
        self.send(GroupRequest::Commit { group: group.into(), member_id: member_id.into(), generation, offsets })
    }

    fn fetch(&mut self, group: &str) -> Vec<(String, u32, i64)> {
        match self.call(GroupRequest::Fetch { group: group.into(), partitions: None, require_stable: false }) {
            GroupReply::Offsets(Ok(list)) => list.into_iter().map(|(t, p, o, _)| (t, p, o)).collect(),
            other => panic!("expected offsets, got {other:?}"),
        }
    }

    fn state(&mut self, group: &str) -> (String, i32, usize) {
        match self.call(GroupRequest::Describe { group: group.into() }) {
            GroupReply::Described(Ok(d)) => (d.state, d.generation, d.members.len()),
            other => panic!("expected a description, got {other:?}"),
        }
    }
}

fn join_with(group: &str, member_id: &str, client: &str, protocol: JoinProtocol) -> GroupRequest {
    GroupRequest::Join {
        group: group.into(),
        join: JoinArgs {
            member_id: member_id.into(),
            client_id: client.into(),
            client_host: "host".into(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol,
            instance_id: None,
        },
    }
}

pub(super) fn native_join(group: &str, member_id: &str, client: &str, topics: &[&str]) -> GroupRequest {
    let topics = topics.iter().map(|t| t.to_string()).collect();
    join_with(group, member_id, client, JoinProtocol::Native { topics, strategy: "range".into() })
}

/// A classic member of group "k"; its metadata for protocol p is "client:p".
fn classic_join(member_id: &str, client: &str, protocols: &[&str]) -> GroupRequest {
    let protocols = protocols.iter().map(|p| (p.to_string(), format!("{client}:{p}").into_bytes())).collect();
    join_with("k", member_id, client, JoinProtocol::Classic { protocol_type: "consumer".into(), protocols })
}

pub(super) fn joined(reply: GroupReply) -> JoinResult {
    match reply {
        GroupReply::Joined(Ok(j)) => j,
        other => panic!("expected a join, got {other:?}"),
    }
}

fn join_error(reply: GroupReply) -> ErrorKind {
    match reply {
        GroupReply::Joined(Err(e)) => e.kind,
        other => panic!("expected a refused join, got {other:?}"),
    }
}

pub(super) fn done(reply: GroupReply) -> Result<(), NodeError> {
    match reply {
        GroupReply::Done(r) => r,
        other => panic!("expected Done, got {other:?}"),
    }
}

fn synced(reply: GroupReply) -> Result<Vec<u8>, NodeError> {
    match reply {
        GroupReply::Synced(r) => r,
        other => panic!("expected a sync, got {other:?}"),
    }
}

fn committed(reply: GroupReply) -> Result<Vec<(String, u32, Option<ErrorKind>)>, NodeError> {
    match reply {
        GroupReply::Committed(r) => {
            r.map(|list| list.into_iter().map(|(t, p, r)| (t, p, r.err().map(|e| e.kind))).collect())
        }
        other => panic!("expected a commit, got {other:?}"),
    }
}

/// Every partition of "t" once, across the answers.
fn assert_partitions_of_t_shared(answers: &[&JoinResult]) {
    let mut seen = BTreeSet::new();
    for a in answers {
        for TopicPartition { topic, partition: p } in &a.assignment {
            assert_eq!(topic, "t");
            assert!(seen.insert(*p), "partition {p} assigned twice");
        }
    }
    assert_eq!(seen, (0..6).collect());
}

/// Two members in group "g" at generation 2, three partitions each.
fn two_members(sim: &mut Sim) -> (JoinResult, JoinResult) {
    let a = sim.join_now("g", "", "a");
    let b_join = sim.join("g", "", "b");
    let a = sim.join_now("g", &a.member_id, "a");
    let b = joined(sim.take(b_join).unwrap());
    (a, b)
}

/// The first member's join completes a rebalance at once (generation 1, every
/// partition); a second member's join waits until the first, told by its heartbeat,
/// joins again; both are then answered with generation 2 and half the partitions each.
#[test]
fn a_second_member_joins_when_the_first_rejoins_and_they_share_the_partitions() {
    let mut sim = Sim::new();
    let a = sim.join_now("g", "", "a");
    assert_eq!((a.generation, a.member_id.as_str(), a.leader_id.as_str()), (1, "a-tag-0", "a-tag-0"));
    assert_partitions_of_t_shared(&[&a]);
    assert_eq!(sim.heartbeat("g", &a), Ok(()));

    let b_join = sim.join("g", "", "b");
    assert!(sim.waiting(b_join));
    assert_eq!(sim.state("g"), ("PreparingRebalance".into(), 1, 2));
    assert_eq!(sim.heartbeat("g", &a).unwrap_err().kind, ErrorKind::RebalanceInProgress);
    sim.now_ms += 10;
    let a_join = sim.join("g", &a.member_id, "a");
    let (a2, b) = (joined(sim.take(a_join).unwrap()), joined(sim.take(b_join).unwrap()));
    assert_eq!((a2.generation, b.generation), (2, 2));
    assert_eq!((a2.assignment.len(), b.assignment.len()), (3, 3));
    assert_partitions_of_t_shared(&[&a2, &b]);
    assert_eq!((a2.leader_id.as_str(), b.leader_id.as_str()), ("a-tag-0", "a-tag-0"));
    assert_eq!(sim.state("g"), ("Stable".into(), 2, 2));
    assert_eq!(sim.groups.pending_requests(), 0);
}

/// A third member's join completes only when both others have joined again, not after
/// the first of them.
#[test]
fn a_third_members_join_waits_for_every_other_member() {
    let mut sim = Sim::new();
    let (a, b) = two_members(&mut sim);
    let c_join = sim.join("g", "", "c");
    let a_join = sim.join("g", &a.member_id, "a");
    assert!(sim.waiting(c_join) && sim.waiting(a_join));
    let b_join = sim.join("g", &b.member_id, "b");
    let answers: Vec<JoinResult> = [a_join, b_join, c_join].iter().map(|id| joined(sim.take(*id).unwrap())).collect();
    assert!(answers.iter().all(|j| j.generation == 3 && j.assignment.len() == 2));
    assert_partitions_of_t_shared(&answers.iter().collect::<Vec<_>>());
}

/// Members that do not join again within the rebalance timeout (though they heartbeat)
/// are removed when it passes, and the rebalance completes without them; they are then
/// unknown.
#[test]
fn a_rebalance_completes_at_its_timeout_without_the_members_that_did_not_rejoin() {
    let mut sim = Sim::new();
    let (a, b) = two_members(&mut sim);
    let started = sim.now_ms;
    let c_join = sim.join("g", "", "c");
    for t in (500..u64::from(REBALANCE_MS)).step_by(500) {
        sim.tick_at(started + t);
        assert_eq!(sim.heartbeat("g", &a).unwrap_err().kind, ErrorKind::RebalanceInProgress);
        assert_eq!(sim.heartbeat("g", &b).unwrap_err().kind, ErrorKind::RebalanceInProgress);
    }
    sim.tick_at(started + u64::from(REBALANCE_MS) - 1);
    assert!(sim.waiting(c_join));
    assert_eq!(sim.state("g"), ("PreparingRebalance".into(), 2, 3));
    sim.tick_at(started + u64::from(REBALANCE_MS));
    let c = joined(sim.take(c_join).unwrap());
    assert_eq!((c.generation, c.assignment.len(), c.leader_id.as_str()), (3, 6, c.member_id.as_str()));
    assert_eq!(sim.state("g"), ("Stable".into(), 3, 1));
    for gone in [&a, &b] {
        assert_eq!(sim.heartbeat("g", gone).unwrap_err().kind, ErrorKind::UnknownMemberId);
        let late = sim.join("g", &gone.member_id, "late");
        assert_eq!(join_error(sim.take(late).unwrap()), ErrorKind::UnknownMemberId);
    }
}

/// A member whose heartbeats stop is removed once its session timeout has passed (not
/// before), and the remaining member rebalances: its heartbeat says so, and its rejoin
/// gets every partition in the next generation.
#[test]
fn a_member_whose_heartbeats_stop_is_expired_and_the_rest_rebalance() {
    let mut sim = Sim::new();
    let (a, b) = two_members(&mut sim);
    let last_seen = sim.now_ms;
    for t in [300, 600, 900] {
        sim.tick_at(last_seen + t);
        assert_eq!(sim.heartbeat("g", &b), Ok(()));
    }
    sim.tick_at(last_seen + u64::from(SESSION_MS));
    assert_eq!(sim.state("g"), ("Stable".into(), 2, 2));
    sim.tick_at(last_seen + u64::from(SESSION_MS) + 1);
    assert_eq!(sim.state("g"), ("PreparingRebalance".into(), 2, 1));
    assert_eq!(sim.heartbeat("g", &a).unwrap_err().kind, ErrorKind::UnknownMemberId);
    assert_eq!(sim.heartbeat("g", &b).unwrap_err().kind, ErrorKind::RebalanceInProgress);
    let b2 = sim.join_now("g", &b.member_id, "b");
    assert_eq!((b2.generation, b2.assignment.len()), (3, 6));
}

/// While a rebalance waits for members to rejoin, their heartbeats are answered
/// RebalanceInProgress and keep them alive, however long it takes up to its timeout;
/// a member that rejoined is not expired while it waits for the others.
#[test]
fn heartbeats_during_a_rebalance_answer_rebalance_in_progress_and_keep_the_member() {
    let mut sim = Sim::new();
    let (a, b) = two_members(&mut sim);
    let start = sim.now_ms;
    let b_join = sim.join("g", &b.member_id, "b");
    for t in (500..u64::from(REBALANCE_MS)).step_by(500) {
        sim.tick_at(start + t);
        assert_eq!(sim.heartbeat("g", &a).unwrap_err().kind, ErrorKind::RebalanceInProgress);
    }
    assert!(sim.waiting(b_join));
    assert_eq!(sim.state("g"), ("PreparingRebalance".into(), 2, 2));
    let a_join = sim.join("g", &a.member_id, "a");
    assert_eq!(joined(sim.take(a_join).unwrap()).generation, 3);
    assert_eq!(joined(sim.take(b_join).unwrap()).generation, 3);
}

/// A commit is appended before it counts: it is answered only when its append
/// completes, and then fetched back. Commits (and heartbeats) from an older generation
/// are refused without an append, as are commits from unknown members.
#[test]
fn commits_are_answered_after_their_append_and_old_generations_are_fenced() {
    let mut sim = Sim::new();
    let a = sim.join_now("g", "", "a");
    let commit = sim.commit("g", &a.member_id, 1, &[("t", 0, 10), ("t", 9, 1), ("t", 1, -1), ("x", 0, 3)]);
    assert!(sim.waiting(commit));
    assert_eq!(sim.appends.len(), 1);
    let expected =
        vec![OffsetRecord { group: "g".into(), topic: "t".into(), partition: 0, value: Some((10, String::new())) }];
    assert_eq!((sim.appends[0].1, &sim.appends[0].2), (offsets_partition("g"), &expected));
    assert_eq!(sim.fetch("g"), vec![]);
    sim.complete_appends(Ok(()));
    assert_eq!(
        committed(sim.take(commit).unwrap()).unwrap(),
        vec![
            ("t".into(), 9, Some(ErrorKind::UnknownTopicOrPartition)),
            ("t".into(), 1, Some(ErrorKind::OffsetOutOfRange)),
            ("x".into(), 0, Some(ErrorKind::UnknownTopicOrPartition)),
            ("t".into(), 0, None),
        ]
    );
    assert_eq!(sim.fetch("g"), vec![("t".into(), 0, 10)]);

    let b_join = sim.join("g", "", "b");
    sim.join_now("g", &a.member_id, "a");
    assert!(!sim.waiting(b_join));
    let stale = sim.commit("g", &a.member_id, 1, &[("t", 0, 20)]);
    assert_eq!(committed(sim.take(stale).unwrap()).unwrap_err().kind, ErrorKind::IllegalGeneration);
    assert_eq!(sim.heartbeat("g", &a).unwrap_err().kind, ErrorKind::IllegalGeneration);
    let stranger = sim.commit("g", "nobody", 2, &[("t", 0, 20)]);
    assert_eq!(committed(sim.take(stranger).unwrap()).unwrap_err().kind, ErrorKind::UnknownMemberId);
    assert!(sim.appends.is_empty());
    assert_eq!(sim.fetch("g"), vec![("t".into(), 0, 10)]);
}

/// A failed append fails the commit and leaves the committed offsets as they were.
#[test]
fn a_commit_whose_append_fails_changes_nothing() {
    let mut sim = Sim::new();
    let a = sim.join_now("g", "", "a");
    let commit = sim.commit("g", &a.member_id, 1, &[("t", 0, 10)]);
    sim.complete_appends(Err(NodeError::new(ErrorKind::NotEnoughReplicas, "ISR too small")));
    assert_eq!(committed(sim.take(commit).unwrap()).unwrap_err().kind, ErrorKind::NotEnoughReplicas);
    assert_eq!(sim.fetch("g"), vec![]);
    assert_eq!(sim.groups.pending_requests(), 0);
}

/// Classic protocol: the protocol is chosen by vote among those every member supports;
/// the leader's join carries every member's metadata for it; the others' SyncGroup waits
/// for the leader's, which hands each member the assignment the leader computed.
#[test]
fn the_classic_leaders_sync_hands_each_member_its_assignment() {
    let mut sim = Sim::new();
    let a = joined(sim.call(classic_join("", "a", &["range", "roundrobin"])));
    let b_join = sim.send(classic_join("", "b", &["roundrobin", "range"]));
    let c_join = sim.send(classic_join("", "c", &["roundrobin", "range"]));
    let a_join = sim.send(classic_join(&a.member_id, "a", &["range", "roundrobin"]));
    let (a, b, c) =
        (joined(sim.take(a_join).unwrap()), joined(sim.take(b_join).unwrap()), joined(sim.take(c_join).unwrap()));
    assert_eq!((a.generation, a.strategy.as_str(), b.strategy.as_str()), (2, "roundrobin", "roundrobin"));
    assert_eq!(a.leader_id, a.member_id);
    let metadata: Vec<(String, Vec<u8>)> = [(&a, "a"), (&b, "b"), (&c, "c")]
        .iter()
        .map(|(j, client)| (j.member_id.clone(), format!("{client}:roundrobin").into_bytes()))
        .collect();
    assert_eq!(a.members, metadata);
    assert!(b.members.is_empty() && c.members.is_empty());
    assert_eq!(sim.state("k"), ("CompletingRebalance".into(), 2, 3));
    // Heartbeats of the generation are fine while the leader assigns.
    assert_eq!(sim.heartbeat("k", &b), Ok(()));

    let sync = |member: &JoinResult, assignments: Vec<(String, Vec<u8>)>| GroupRequest::Sync {
        group: "k".into(),
        member_id: member.member_id.clone(),
        generation: member.generation,
        assignments,
    };
    let b_sync = sim.send(sync(&b, vec![]));
    assert!(sim.waiting(b_sync));
    let given: Vec<(String, Vec<u8>)> = [(&a, 0), (&b, 1), (&c, 2)]
        .iter()
        .map(|(j, p)| (j.member_id.clone(), consumer_protocol::encode_assignment(&[TopicPartition::new("t", *p)])))
        .collect();
    let a_bytes = synced(sim.call(sync(&a, given.clone()))).unwrap();
    assert_eq!(a_bytes, given[0].1);
    assert_eq!(synced(sim.take(b_sync).unwrap()).unwrap(), given[1].1);
    assert_eq!(synced(sim.call(sync(&c, vec![]))).unwrap(), given[2].1);
    match sim.call(GroupRequest::Describe { group: "k".into() }) {
        GroupReply::Described(Ok(d)) => {
            assert_eq!((d.state.as_str(), d.classic, d.protocol_type.as_str()), ("Stable", true, "consumer"));
            let decoded: Vec<Vec<TopicPartition>> = d.members.iter().map(|m| m.assignment.clone()).collect();
            assert_eq!(decoded, vec![vec![("t", 0).into()], vec![("t", 1).into()], vec![("t", 2).into()]]);
        }
        other => panic!("expected a description, got {other:?}"),
    }
}

/// A new coordinator (another node, after a failover) loads each group as its last
/// metadata record left it: a classic group's members keep their ids, generation,
/// protocol and assignments, and a native group's its members, topics and assignment, so
/// their heartbeats and commits go on without a rebalance. Every record passes through
/// its stored bytes. An emptied group loads Empty with its generation; a deleted one
/// (tombstone) not at all.
#[test]
fn a_new_coordinator_loads_groups_from_their_metadata_and_members_carry_on() {
    let mut old = Sim::new();
    let a = joined(old.call(classic_join("", "a", &["range"])));
    let sync = GroupRequest::Sync {
        group: "k".into(),
        member_id: a.member_id.clone(),
        generation: a.generation,
        assignments: vec![(a.member_id.clone(), consumer_protocol::encode_assignment(&[("t", 1).into()]))],
    };
    let a_bytes = synced(old.call(sync)).unwrap();
    let n = old.join_now("g", "", "n");
    let gone = old.join_now("e", "", "e");
    assert_eq!(done(old.call(GroupRequest::Leave { group: "e".into(), member_id: gone.member_id })), Ok(()));
    let stored: Vec<GroupRecord> = old
        .stored_groups
        .iter()
        .map(|g| {
            let record = GroupRecord::Group(g.clone());
            GroupRecord::parse(&record.key(), record.value(0).as_deref()).unwrap()
        })
        .collect();

    let mut new = Sim::new();
    new.now_ms = old.now_ms + 5_000;
    new.step(GroupInput::Loaded(stored));
    assert_eq!(new.state("k"), ("Stable".into(), 1, 1));
    assert_eq!(new.heartbeat("k", &a), Ok(()));
    let again =
        GroupRequest::Sync { group: "k".into(), member_id: a.member_id.clone(), generation: 1, assignments: vec![] };
    assert_eq!(synced(new.call(again)).unwrap(), a_bytes, "the leader's assignment survives");
    match new.call(GroupRequest::Describe { group: "k".into() }) {
        GroupReply::Described(Ok(d)) => {
            assert!(d.classic);
            assert_eq!((d.strategy.as_str(), d.members[0].assignment.clone()), ("range", vec![("t", 1).into()]));
        }
        other => panic!("expected a description, got {other:?}"),
    }
    assert_eq!(new.heartbeat("g", &n), Ok(()));
    match new.call(GroupRequest::Describe { group: "g".into() }) {
        GroupReply::Described(Ok(d)) => {
            assert!(!d.classic);
            assert_eq!(d.members[0].topics, vec!["t".to_string()]);
            assert_eq!(d.members[0].assignment, n.assignment, "the native member's assignment survives");
        }
        other => panic!("expected a description, got {other:?}"),
    }
    let commit = new.commit("g", &n.member_id, n.generation, &[("t", 0, 7)]);
    new.complete_appends(Ok(()));
    assert!(committed(new.take(commit).unwrap()).is_ok(), "a member's commit after the move is accepted");
    assert_eq!(new.state("e"), ("Empty".into(), 1, 0));
    // A member that stays silent past its session is expired by the new coordinator.
    new.tick_at(new.now_ms + u64::from(SESSION_MS) + 1);
    assert_eq!(new.state("k"), ("Empty".into(), 1, 0));

    // Deleting a group stores its metadata's tombstone with the offsets': loading them
    // forgets it.
    let delete = new.send(GroupRequest::Delete { group: "e".into() });
    assert!(new.stored_groups.iter().any(|g| g.group == "e" && g.value.is_none()));
    assert!(new.waiting(delete));
    new.complete_appends(Ok(()));
    assert_eq!(done(new.take(delete).unwrap()), Ok(()));
    let mut third = Sim::new();
    third.step(GroupInput::Loaded(new.stored_groups.iter().cloned().map(GroupRecord::Group).collect()));
    match third.call(GroupRequest::Describe { group: "e".into() }) {
        GroupReply::Described(Err(e)) => assert_eq!(e.kind, ErrorKind::GroupIdNotFound),
        other => panic!("expected no group e, got {other:?}"),
    }
}

/// OffsetDelete: the commits of a topic the group's members subscribe to are refused
/// (GROUP_SUBSCRIBED_TO_TOPIC); others get tombstones and are forgotten once appended;
/// a partition without a commit succeeds; an unknown group is refused.
#[test]
fn offset_delete_forgets_commits_of_topics_the_members_do_not_subscribe_to() {
    let mut sim = Sim::new();
    let a = sim.join_now("g", "", "a");
    let commit = sim.commit("g", &a.member_id, a.generation, &[("t", 0, 3), ("u", 1, 4)]);
    sim.complete_appends(Ok(()));
    assert!(committed(sim.take(commit).unwrap()).is_ok());
    let delete = |partitions: &[(&str, u32)]| GroupRequest::DeleteOffsets {
        group: "g".into(),
        partitions: partitions.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect(),
    };
    let asked = sim.send(delete(&[("t", 0), ("u", 1), ("u", 0)]));
    assert_eq!(sim.appends.len(), 1, "one append: u-1's tombstone");
    assert_eq!(
        sim.appends[0].2,
        vec![OffsetRecord { group: "g".into(), topic: "u".into(), partition: 1, value: None }]
    );
    sim.complete_appends(Ok(()));
    let outcome = committed(sim.take(asked).unwrap()).unwrap();
    assert_eq!(
        outcome,
        vec![("t".into(), 0, Some(ErrorKind::GroupSubscribedToTopic)), ("u".into(), 1, None), ("u".into(), 0, None),]
    );
    assert_eq!(sim.fetch("g"), vec![("t".into(), 0, 3)]);
    let unknown = GroupRequest::DeleteOffsets { group: "nope".into(), partitions: vec![("t", 0).into()] };
    assert_eq!(committed(sim.call(unknown)).unwrap_err().kind, ErrorKind::GroupIdNotFound);
}

/// group.initial.rebalance.delay.ms: a new classic group's first rebalance waits the
/// delay for more members, each join extending it (never past the rebalance timeout), so
/// members starting together get one generation instead of one each. Later rebalances
/// and native groups do not wait.
#[test]
fn a_new_classic_group_waits_the_initial_delay_for_more_members() {
    const DELAY: u64 = 3_000;
    let mut sim = Sim::new();
    sim.groups = Groups::new("tag").with_initial_rebalance_delay(DELAY);
    let start = sim.now_ms;
    let a = sim.send(classic_join("", "a", &["range"]));
    sim.tick_at(start + 2_000);
    assert!(sim.waiting(a), "the first member waits out the delay");
    let b = sim.send(classic_join("", "b", &["range"]));
    sim.tick_at(start + DELAY + 100);
    assert!(sim.waiting(a) && sim.waiting(b), "b's join extended the delay");
    sim.tick_at(start + 2_000 + DELAY);
    let (a, b) = (joined(sim.take(a).unwrap()), joined(sim.take(b).unwrap()));
    assert_eq!((a.generation, b.generation), (1, 1), "one generation for both");

    // A later rebalance does not wait: once a and b join again with c, it completes.
    let c = sim.send(classic_join("", "c", &["range"]));
    let a2 = sim.send(classic_join(&a.member_id, "a", &["range"]));
    let b2 = sim.send(classic_join(&b.member_id, "b", &["range"]));
    for id in [c, a2, b2] {
        assert_eq!(joined(sim.take(id).unwrap()).generation, 2);
    }

    // The wait never passes the rebalance timeout, however the joins keep coming.
    let t = sim.now_ms;
    let in_k2 = |client: &str| {
        let protocols = vec![("range".to_string(), Vec::new())];
        join_with("k2", "", client, JoinProtocol::Classic { protocol_type: "consumer".into(), protocols })
    };
    let first = sim.send(in_k2("x"));
    sim.tick_at(t + 2_000);
    let _ = sim.send(in_k2("y"));
    sim.tick_at(t + 4_000);
    let _ = sim.send(in_k2("z"));
    sim.tick_at(t + u64::from(REBALANCE_MS) - 1);
    assert!(sim.waiting(first));
    sim.tick_at(t + u64::from(REBALANCE_MS));
    assert_eq!(sim.state("k2"), ("CompletingRebalance".into(), 1, 3));

    // The native protocol does not wait.
    let native = sim.join("n", "", "x");
    assert!(!sim.waiting(native), "native groups complete at once");
}

/// Static membership (KIP-345): a classic member that restarts with its
/// `group.instance.id` and no member id takes its previous self's place under a new
/// member id, answered at once with the same generation; the other member's heartbeats
/// go on (no rebalance), and the old member id is fenced (its heartbeats and a join
/// naming it with the instance id). Leaving by instance id removes it and the rest rebalance.
#[test]
fn a_static_member_that_restarts_takes_its_place_without_a_rebalance() {
    let mut sim = Sim::new();
    let with_instance = |member_id: &str, client: &str, instance: &str| {
        let mut join = classic_join(member_id, client, &["range"]);
        if let GroupRequest::Join { join, .. } = &mut join {
            join.instance_id = Some(instance.to_string());
        }
        join
    };
    let a = joined(sim.call(with_instance("", "a", "i-a")));
    let b_join = sim.send(with_instance("", "b", "i-b"));
    let a_join = sim.send(with_instance(&a.member_id, "a", "i-a"));
    let (a, b) = (joined(sim.take(a_join).unwrap()), joined(sim.take(b_join).unwrap()));
    assert_eq!(a.generation, 2);
    let sync = |m: &JoinResult, assignments: Vec<(String, Vec<u8>)>| GroupRequest::Sync {
        group: "k".into(),
        member_id: m.member_id.clone(),
        generation: m.generation,
        assignments,
    };
    let given = vec![(a.member_id.clone(), b"for-a".to_vec()), (b.member_id.clone(), b"for-b".to_vec())];
    let leader = if a.leader_id == a.member_id { &a } else { &b };
    let other = if leader.member_id == a.member_id { &b } else { &a };
    let other_sync = sim.send(sync(other, vec![]));
    synced(sim.call(sync(leader, given))).unwrap();
    synced(sim.take(other_sync).unwrap()).unwrap();
    assert_eq!(sim.state("k"), ("Stable".into(), 2, 2));

    // a restarts: same instance id, no member id.
    let again = joined(sim.call(with_instance("", "a", "i-a")));
    assert_eq!(again.generation, 2, "no rebalance");
    assert_ne!(again.member_id, a.member_id);
    assert_eq!(sim.heartbeat("k", &b), Ok(()), "the other member carries on");
    let stale = sim.heartbeat("k", &a).unwrap_err();
    assert_eq!(stale.kind, ErrorKind::FencedInstanceId, "the replaced member id is fenced: {stale}");
    let zombie = with_instance(&a.member_id, "a", "i-a");
    assert_eq!(join_error(sim.call(zombie)), ErrorKind::FencedInstanceId);
    let a_bytes = synced(sim.call(sync(&again, vec![]))).unwrap();
    assert_eq!(a_bytes, b"for-a".to_vec(), "its assignment is kept");
    assert_eq!(sim.state("k"), ("Stable".into(), 2, 2));
    assert!(sim
        .stored_groups
        .last()
        .unwrap()
        .value
        .as_ref()
        .unwrap()
        .members
        .iter()
        .any(|m| { m.member_id == again.member_id && m.group_instance_id.as_deref() == Some("i-a") }));

    let leave = GroupRequest::LeaveStatic { group: "k".into(), instance_id: "i-a".into(), member_id: String::new() };
    assert_eq!(done(sim.call(leave)), Ok(()));
    assert_eq!(sim.state("k").2, 1);
    let unknown = GroupRequest::LeaveStatic { group: "k".into(), instance_id: "i-a".into(), member_id: String::new() };
    assert_eq!(done(sim.call(unknown)).unwrap_err().kind, ErrorKind::UnknownMemberId);
}

/// Classic protocol: a leader that sends no assignments within the rebalance timeout
/// starts a new rebalance; members waiting in SyncGroup are told RebalanceInProgress.
#[test]
fn a_classic_leader_that_does_not_sync_in_time_starts_a_new_rebalance() {
    let mut sim = Sim::new();
    let a = joined(sim.call(classic_join("", "a", &["range"])));
    let b_join = sim.send(classic_join("", "b", &["range"]));
    let a_join = sim.send(classic_join(&a.member_id, "a", &["range"]));
    let (a, b) = (joined(sim.take(a_join).unwrap()), joined(sim.take(b_join).unwrap()));
    let completed = sim.now_ms;
    let b_sync = sim.send(GroupRequest::Sync {
        group: "k".into(),
        member_id: b.member_id.clone(),
        generation: b.generation,
        assignments: vec![],
    });
    // Members waiting for the leader are not expired, whatever their session timeout.
    sim.tick_at(completed + u64::from(REBALANCE_MS) - 1);
    assert!(sim.waiting(b_sync));
    assert_eq!(sim.state("k"), ("CompletingRebalance".into(), 2, 2));
    sim.tick_at(completed + u64::from(REBALANCE_MS));
    assert_eq!(synced(sim.take(b_sync).unwrap()).unwrap_err().kind, ErrorKind::RebalanceInProgress);
    assert_eq!(sim.heartbeat("k", &a).unwrap_err().kind, ErrorKind::RebalanceInProgress);
}

/// LeaveGroup rebalances the members that stay (their heartbeat says so, their rejoin
/// takes the partitions of the one that left); the last one leaving empties the group,
/// which keeps its generation.
#[test]
fn leaving_rebalances_the_rest_and_the_last_leaving_empties_the_group() {
    let mut sim = Sim::new();
    let (a, b) = two_members(&mut sim);
    let leave = |m: &JoinResult| GroupRequest::Leave { group: "g".into(), member_id: m.member_id.clone() };
    assert_eq!(done(sim.call(leave(&b))), Ok(()));
    assert_eq!(done(sim.call(leave(&b))).unwrap_err().kind, ErrorKind::UnknownMemberId);
    assert_eq!(sim.heartbeat("g", &a).unwrap_err().kind, ErrorKind::RebalanceInProgress);
    let a2 = sim.join_now("g", &a.member_id, "a");
    assert_eq!((a2.generation, a2.assignment.len()), (3, 6));
    assert_eq!(done(sim.call(leave(&a2))), Ok(()));
    assert_eq!(sim.state("g"), ("Empty".into(), 3, 0));
    match sim.call(GroupRequest::List) {
        GroupReply::Listed(list) => {
            assert_eq!(list.len(), 1);
            assert_eq!((list[0].group.as_str(), list[0].state.as_str(), list[0].members), ("g", "Empty", 0));
        }
        other => panic!("expected a list, got {other:?}"),
    }
}

/// A member that leaves while its own join waits for others gets that join refused.
#[test]
fn a_waiting_join_of_a_member_that_left_is_refused() {
    let mut sim = Sim::new();
    let (a, b) = two_members(&mut sim);
    let c_join = sim.join("g", "", "c");
    let b_join = sim.join("g", &b.member_id, "b");
    assert_eq!(done(sim.call(GroupRequest::Leave { group: "g".into(), member_id: b.member_id.clone() })), Ok(()));
    assert_eq!(join_error(sim.take(b_join).unwrap()), ErrorKind::UnknownMemberId);
    let a_join = sim.join("g", &a.member_id, "a");
    assert_eq!(joined(sim.take(a_join).unwrap()).assignment.len(), 3);
    assert_eq!(joined(sim.take(c_join).unwrap()).assignment.len(), 3);
}

/// Offsets of a group without members may be reset by an admin (no member id, a
/// negative generation), never while it has members; deleting a group is refused while
/// it has members, tombstones its offsets and answers after their append, and then the
/// group is unknown.
#[test]
fn an_empty_groups_offsets_may_be_reset_and_it_may_be_deleted() {
    let mut sim = Sim::new();
    let admin_reset = sim.commit("fresh", "", -1, &[("t", 3, 7)]);
    sim.complete_appends(Ok(()));
    assert_eq!(committed(sim.take(admin_reset).unwrap()).unwrap(), vec![("t".into(), 3, None)]);
    assert_eq!(sim.state("fresh"), ("Empty".into(), 0, 0));

    let a = sim.join_now("g", "", "a");
    let refused = sim.commit("g", "", -1, &[("t", 0, 1)]);
    assert_eq!(committed(sim.take(refused).unwrap()).unwrap_err().kind, ErrorKind::NonEmptyGroup);
    assert_eq!(done(sim.call(GroupRequest::Delete { group: "g".into() })).unwrap_err().kind, ErrorKind::NonEmptyGroup);
    let commit = sim.commit("g", &a.member_id, 1, &[("t", 0, 4), ("u", 1, 5)]);
    sim.complete_appends(Ok(()));
    assert!(committed(sim.take(commit).unwrap()).is_ok());
    assert_eq!(done(sim.call(GroupRequest::Leave { group: "g".into(), member_id: a.member_id.clone() })), Ok(()));

    let reset = sim.commit("g", "", -1, &[("t", 0, 0)]);
    sim.complete_appends(Ok(()));
    assert!(committed(sim.take(reset).unwrap()).is_ok());
    assert_eq!(sim.fetch("g"), vec![("t".into(), 0, 0), ("u".into(), 1, 5)]);

    let delete = sim.send(GroupRequest::Delete { group: "g".into() });
    assert!(sim.waiting(delete));
    let tombstones: Vec<OffsetRecord> = [("t", 0), ("u", 1)]
        .iter()
        .map(|(t, p)| OffsetRecord { group: "g".into(), topic: t.to_string(), partition: *p, value: None })
        .collect();
    assert_eq!(sim.appends[0].2, tombstones);
    sim.complete_appends(Ok(()));
    assert_eq!(done(sim.take(delete).unwrap()), Ok(()));
    assert_eq!(sim.fetch("g"), vec![]);
    let again = done(sim.call(GroupRequest::Delete { group: "g".into() }));
    assert_eq!(again.unwrap_err().kind, ErrorKind::GroupIdNotFound);
    match sim.call(GroupRequest::Describe { group: "g".into() }) {
        GroupReply::Described(Err(e)) => assert_eq!(e.kind, ErrorKind::GroupIdNotFound),
        other => panic!("expected an unknown group, got {other:?}"),
    }
}

/// Offsets read back from the log are what OffsetFetch answers, later records replacing
/// earlier ones and tombstones deleting them; a group known only by its offsets is
/// listed and described as Empty.
#[test]
fn loaded_offsets_are_fetched_and_tombstones_delete_them() {
    let mut sim = Sim::new();
    let record = |group: &str, partition: u32, value: Option<i64>| {
        GroupRecord::Offset(OffsetRecord {
            group: group.into(),
            topic: "t".into(),
            partition,
            value: value.map(|o| (o, "m".to_string())),
        })
    };
    sim.step(GroupInput::Loaded(vec![
        record("g", 0, Some(1)),
        record("g", 1, Some(2)),
        record("g", 0, Some(3)),
        record("h", 0, Some(4)),
    ]));
    sim.step(GroupInput::Loaded(vec![record("g", 1, None), record("h", 0, None), record("never", 0, None)]));
    assert_eq!(sim.fetch("g"), vec![("t".into(), 0, 3)]);
    let asked = GroupRequest::Fetch {
        group: "g".into(),
        partitions: Some(vec![("t", 0).into(), ("t", 5).into()]),
        require_stable: false,
    };
    match sim.call(asked) {
        GroupReply::Offsets(Ok(list)) => {
            assert_eq!(list, vec![("t".into(), 0, 3, "m".into()), ("t".into(), 5, -1, String::new())]);
        }
        other => panic!("expected offsets, got {other:?}"),
    }
    assert_eq!(sim.state("g"), ("Empty".into(), 0, 0));
    match sim.call(GroupRequest::List) {
        GroupReply::Listed(list) => assert_eq!(list.iter().map(|s| s.group.as_str()).collect::<Vec<_>>(), vec!["g"]),
        other => panic!("expected a list, got {other:?}"),
    }
    assert_eq!(sim.groups.all_committed(), vec![("g".into(), "t".into(), 0, 3)]);
}

/// Deleting a topic tombstones its commits in every group (one append per group) and
/// forgets them once appended; a group whose append failed keeps them.
#[test]
fn a_deleted_topics_commits_are_tombstoned_in_every_group() {
    let mut sim = Sim::new();
    let record = |group: &str, topic: &str| OffsetRecord {
        group: group.into(),
        topic: topic.into(),
        partition: 0,
        value: Some((1, String::new())),
    };
    sim.step(GroupInput::Loaded(
        [record("g", "t"), record("g", "u"), record("h", "t"), record("i", "u")].map(GroupRecord::Offset).to_vec(),
    ));
    sim.step(GroupInput::ForgetTopic("t".into()));
    assert_eq!(sim.appends.len(), 2);
    let (g_append, h_append) = (sim.appends[0].clone(), sim.appends[1].clone());
    assert_eq!(g_append.2, vec![OffsetRecord { value: None, ..record("g", "t") }]);
    assert_eq!(h_append.2, vec![OffsetRecord { value: None, ..record("h", "t") }]);
    assert_eq!(sim.fetch("g").len(), 2);
    sim.appends.clear();
    sim.step(GroupInput::Appended { append: g_append.0, result: Ok(()) });
    sim.step(GroupInput::Appended { append: h_append.0, result: Err(NodeError::new(ErrorKind::Storage, "disk")) });
    assert_eq!(sim.fetch("g"), vec![("u".into(), 0, 1)]);
    assert_eq!(sim.fetch("h"), vec![("t".into(), 0, 1)]);
    assert_eq!(sim.fetch("i"), vec![("u".into(), 0, 1)]);
}

/// When the shard stops coordinating an offsets partition, its groups and offsets are
/// forgotten and their waiting joins and syncs are answered NOT_COORDINATOR; other
/// partitions' groups are untouched.
#[test]
fn forgetting_a_partition_answers_its_waiting_requests_not_coordinator() {
    let mut sim = Sim::new();
    let (a, _) = two_members(&mut sim);
    let other =
        (0..100).map(|i| format!("other-{i}")).find(|g| offsets_partition(g) != offsets_partition("g")).unwrap();
    let o = sim.join_now(&other, "", "o");
    let c_join = sim.join("g", "", "c");
    let commit = sim.commit("g", &a.member_id, 2, &[("t", 0, 8)]);
    sim.step(GroupInput::ForgetPartition(offsets_partition("g")));
    assert_eq!(join_error(sim.take(c_join).unwrap()), ErrorKind::NotCoordinator);
    assert_eq!(sim.heartbeat("g", &a).unwrap_err().kind, ErrorKind::UnknownMemberId);
    assert_eq!(sim.heartbeat(&other, &o), Ok(()));
    // The commit's append was under way: it is answered with the append's result.
    sim.complete_appends(Ok(()));
    assert!(committed(sim.take(commit).unwrap()).is_ok());
    assert_eq!(sim.groups.pending_requests(), 0);
}

/// Joins that do not fit the group are refused at once: a session timeout out of
/// range, an unknown strategy, a classic member in a native group.
#[test]
fn joins_that_do_not_fit_are_refused() {
    let mut sim = Sim::new();
    sim.join_now("g", "", "a");
    let mut short = native_join("g", "", "b", &["t"]);
    if let GroupRequest::Join { join, .. } = &mut short {
        join.session_timeout_ms = 99;
    }
    assert_eq!(join_error(sim.call(short)), ErrorKind::InvalidSessionTimeout);
    let mut unknown = native_join("g", "", "b", &["t"]);
    if let GroupRequest::Join { join, .. } = &mut unknown {
        join.protocol = JoinProtocol::Native { topics: vec!["t".into()], strategy: "fastest".into() };
    }
    assert_eq!(join_error(sim.call(unknown)), ErrorKind::InvalidRequest);
    let mut classic = classic_join("", "b", &["range"]);
    if let GroupRequest::Join { group, .. } = &mut classic {
        *group = "g".into();
    }
    assert_eq!(join_error(sim.call(classic)), ErrorKind::InconsistentGroupProtocol);
    assert_eq!(join_error(sim.call(native_join("", "", "b", &["t"]))), ErrorKind::InvalidGroupId);
    assert_eq!(sim.state("g"), ("Stable".into(), 1, 1));
}

/// The same inputs at the same times give the same actions: nothing but the inputs
/// (no clock, no randomness, no hash order) decides.
#[test]
fn the_same_inputs_replay_the_same_actions() {
    let run = || {
        let mut sim = Sim::new();
        for g in ["g", "h", "i"] {
            sim.join_now(g, "", "a");
            sim.join(g, "", "b");
        }
        sim.tick_at(sim.now_ms + u64::from(REBALANCE_MS));
        sim.tick_at(sim.now_ms + u64::from(SESSION_MS) + 1);
        for g in ["g", "h", "i"] {
            sim.commit(g, "", -1, &[("t", 1, 2)]);
        }
        sim.complete_appends(Ok(()));
        sim.log
    };
    let first = run();
    // Three joins answered at once, three at the deadline, three appends, three commits;
    // and each group's metadata stored after its two rebalances and when it emptied.
    let metadata = first.iter().filter(|l| l.contains("GroupMetadataRecord")).count();
    assert_eq!((first.len() - metadata, metadata), (12, 9), "{first:#?}");
    assert_eq!(first, run());
}

/// The state machine and the types it speaks import nothing that reads a clock or does
/// I/O: only std's collections, the schemas crate, tracing, the node's error type and
/// each other. (What a file names outside its `use` lines is checked too.)
#[test]
fn the_core_reads_no_clock_and_does_no_io() {
    let files = [
        ("state.rs", include_str!("state.rs")),
        ("messages.rs", include_str!("messages.rs")),
        ("records.rs", include_str!("records.rs")),
        ("assign.rs", include_str!("assign.rs")),
        ("consumer_protocol.rs", include_str!("consumer_protocol.rs")),
    ];
    let allowed =
        ["std::collections", "sluice_schemas", "tracing", "crate::errors", "super::", "bytes", "kafka_protocol"];
    let forbidden =
        ["Instant", "SystemTime", "io::", "glommio", "PartitionLog", "crate::storage", "crate::shard", "sleep"];
    for (name, source) in files {
        for line in source.lines().map(str::trim) {
            if line.starts_with("//") {
                continue;
            }
            if let Some(path) = line.strip_prefix("use ") {
                assert!(allowed.iter().any(|a| path.starts_with(a)), "{name} imports {path}");
            }
            for word in forbidden {
                assert!(!line.contains(word), "{name} names {word}: {line}");
            }
        }
    }
}

/// KIP-848 heartbeats for group "c" (subscribed to "t", six partitions).
fn consumer_hb(member_id: &str, epoch: i32, owned: Option<&BTreeSet<TopicPartition>>) -> GroupRequest {
    GroupRequest::ConsumerHeartbeat {
        group: "c".into(),
        heartbeat: ConsumerHeartbeat {
            member_id: member_id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: (epoch == 0).then_some(REBALANCE_MS),
            topics: (epoch == 0).then(|| vec!["t".to_string()]),
            owned: owned.map(|o| o.iter().cloned().collect()),
            client_id: "c".into(),
            ..ConsumerHeartbeat::default()
        },
    }
}

fn beat(reply: GroupReply) -> Result<ConsumerHeartbeatResult, NodeError> {
    match reply {
        GroupReply::ConsumerHeartbeat(r) => r,
        other => panic!("expected a heartbeat answer, got {other:?}"),
    }
}

/// A KIP-848 member as a client keeps it: its id, epoch and owned partitions, updated
/// from each answer (a client takes up what it is assigned and gives up the rest).
struct Kip848 {
    id: String,
    epoch: i32,
    owned: BTreeSet<TopicPartition>,
}

impl Kip848 {
    fn join(sim: &mut Sim) -> Kip848 {
        let r = beat(sim.call(consumer_hb("", 0, None))).unwrap();
        let mut m = Kip848 { id: r.member_id.clone(), epoch: 0, owned: BTreeSet::new() };
        m.take(r);
        m
    }

    fn take(&mut self, r: ConsumerHeartbeatResult) {
        self.epoch = r.member_epoch;
        if let Some(list) = r.assignment {
            self.owned = list.into_iter().collect();
        }
    }

    fn beat(&mut self, sim: &mut Sim) {
        let r = beat(sim.call(consumer_hb(&self.id, self.epoch, Some(&self.owned)))).unwrap();
        self.take(r);
    }
}

/// KIP-848 on the coordinator: the first member gets every partition; a second one
/// joins and gets only what the first has given up, heartbeat by heartbeat, so no
/// partition ever has two owners, until both are at the group's epoch with three each.
/// A stale epoch is fenced, a commit must carry the member's epoch, a classic join is
/// refused while the group has members, and a member that goes silent is removed and
/// its partitions go to the other.
#[test]
fn a_kip_848_group_hands_partitions_over_without_two_owners() {
    let mut sim = Sim::new();
    let mut a = Kip848::join(&mut sim);
    assert_eq!(a.owned.len(), 6);
    let first_epoch = a.epoch;
    let mut b = Kip848::join(&mut sim);
    assert!(b.owned.is_empty(), "a still owns everything: {:?}", b.owned);
    let mut rounds = 0;
    while !(a.owned.len() == 3 && b.owned.len() == 3 && a.epoch == b.epoch) {
        assert!(a.owned.is_disjoint(&b.owned), "two owners: a {:?}, b {:?}", a.owned, b.owned);
        a.beat(&mut sim);
        assert!(a.owned.is_disjoint(&b.owned), "two owners: a {:?}, b {:?}", a.owned, b.owned);
        b.beat(&mut sim);
        rounds += 1;
        assert!(rounds < 5, "no convergence: a {:?} at {}, b {:?} at {}", a.owned, a.epoch, b.owned, b.epoch);
    }
    assert!(a.epoch > first_epoch);
    assert_eq!(sim.state("c"), ("Stable".into(), a.epoch, 2));

    // A new coordinator loads the group from its stored metadata: both members carry on
    // at their epochs with their partitions, and nothing moves.
    let stored = sim.stored_groups.iter().rev().find(|g| g.group == "c").unwrap().clone();
    let mut next = Sim::new();
    next.step(GroupInput::Loaded(vec![GroupRecord::Group(stored)]));
    for m in [&a, &b] {
        let r = beat(next.call(consumer_hb(&m.id, m.epoch, None))).unwrap();
        assert_eq!((r.member_epoch, r.assignment), (m.epoch, None), "after the failover");
    }
    assert_eq!(next.state("c"), ("Stable".into(), a.epoch, 2));

    let stale = beat(sim.call(consumer_hb(&a.id, first_epoch, None))).unwrap_err();
    assert_eq!(stale.kind, ErrorKind::FencedMemberEpoch, "{stale}");
    let old = committed(sim.call(GroupRequest::Commit {
        group: "c".into(),
        member_id: a.id.clone(),
        generation: first_epoch,
        offsets: vec![("t".into(), 0, 5, String::new())],
    }));
    assert_eq!(old.unwrap_err().kind, ErrorKind::StaleMemberEpoch);
    let commit = sim.commit("c", &a.id, a.epoch, &[("t", 0, 5)]);
    sim.complete_appends(Ok(()));
    assert!(committed(sim.take(commit).unwrap()).is_ok());
    let classic =
        join_with("c", "", "k", JoinProtocol::Classic { protocol_type: "consumer".into(), protocols: vec![] });
    assert_eq!(join_error(sim.call(classic)), ErrorKind::InconsistentGroupProtocol);

    // b goes silent: after the session timeout a gets everything back.
    let silent_from = sim.now_ms;
    let mut now = silent_from;
    while now < silent_from + 45_000 + 1_000 {
        now += 5_000;
        sim.tick_at(now);
        a.beat(&mut sim);
    }
    assert_eq!(a.owned.len(), 6, "{:?}", a.owned);
    assert_eq!(sim.state("c").2, 1);
    let gone = beat(sim.call(consumer_hb(&b.id, b.epoch, None))).unwrap_err();
    assert_eq!(gone.kind, ErrorKind::UnknownMemberId);
    // Leaving (epoch -1) empties the group.
    let left = beat(sim.call(consumer_hb(&a.id, -1, None))).unwrap();
    assert_eq!(left.member_epoch, -1);
    assert_eq!(sim.state("c").0, "Empty");
}
