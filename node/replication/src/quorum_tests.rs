//! The quorum's tests: voters over a simulated network whose messages are lost, delayed
//! and reordered, whose log writes complete late, which crash (keeping what their log
//! synced, and maybe a torn piece of the rest) and restart; with and without frequent
//! compaction.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::format::MemoryLog;
use super::quorum::{MemberChange, Output, Persist, Quorum, QuorumConfig, QuorumError, StateMachine, ELECTION_TICKS};
use crate::sim::Rng;
use crate::{ClusterState, Command, Incarnation, NodeId, PartitionConfig};

/// Records every command it applies, and answers with the command.
#[derive(Default)]
struct Recorder {
    applied: Vec<Vec<u8>>,
}

impl StateMachine for Recorder {
    fn apply(&mut self, command: &[u8]) -> Vec<u8> {
        self.applied.push(command.to_vec());
        command.to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for command in &self.applied {
            out.extend_from_slice(&(command.len() as u32).to_be_bytes());
            out.extend_from_slice(command);
        }
        out
    }

    fn restore(&mut self, mut snapshot: &[u8]) -> Result<(), String> {
        let mut applied = Vec::new();
        while !snapshot.is_empty() {
            let len = snapshot.get(..4).ok_or("cut length")?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            applied.push(snapshot.get(4..4 + len).ok_or("cut command")?.to_vec());
            snapshot = &snapshot[4 + len..];
        }
        self.applied = applied;
        Ok(())
    }
}

/// A member: its quorum while up, its log (which survives crashes) and the persists
/// handed out and not yet performed.
struct Member<S> {
    quorum: Option<Quorum<S>>,
    disk: MemoryLog,
    pending: VecDeque<Persist>,
    restored: u64,
}

/// Voters over a simulated network: messages are delayed, reordered and lost; writes
/// complete later, in order; voters crash (losing everything but what their log
/// synced, and a torn prefix of the rest) and come back.
struct Net<S> {
    voters: Vec<u64>,
    members: BTreeMap<u64, Member<S>>,
    in_flight: Vec<(u64, u64, Vec<u8>)>,
    rng: Rng,
    config: QuorumConfig,
    new_state: fn() -> S,
    /// Commands acknowledged to a proposer: (result, the index it committed at).
    acknowledged: Vec<(Vec<u8>, u64)>,
    /// Every result any voter applied at each index (must be one).
    by_index: BTreeMap<u64, BTreeSet<Vec<u8>>>,
    /// Members that joined later: they open with no members and wait for the leader.
    joined: BTreeSet<u64>,
}

impl<S: StateMachine> Net<S> {
    fn new(size: u64, seed: u64, config: QuorumConfig, new_state: fn() -> S) -> Net<S> {
        let voters: Vec<u64> = (1..=size).collect();
        let mut net = Net {
            voters: voters.clone(),
            members: BTreeMap::new(),
            in_flight: Vec::new(),
            rng: Rng(seed),
            config,
            new_state,
            acknowledged: Vec::new(),
            by_index: BTreeMap::new(),
            joined: BTreeSet::new(),
        };
        for id in voters {
            net.members
                .insert(id, Member { quorum: None, disk: MemoryLog::default(), pending: VecDeque::new(), restored: 0 });
            net.start(id);
        }
        net
    }

    fn start(&mut self, id: u64) {
        // Seeded election timeouts (raft-rs's own draw is not): a seed replays exactly.
        let ticks = ELECTION_TICKS + self.rng.range(0, ELECTION_TICKS as u64 - 1) as usize;
        let member = self.members.get_mut(&id).unwrap();
        let log = member.disk.open().unwrap();
        let voters = if self.joined.contains(&id) { Vec::new() } else { self.voters.clone() };
        let quorum = Quorum::open_for_simulation(id, &voters, log, (self.new_state)(), self.config, ticks);
        member.quorum = Some(quorum.unwrap());
        self.call(id, |_| {});
    }

    /// A new member, started with no members (a node joining the cluster).
    fn join(&mut self, id: u64) {
        self.joined.insert(id);
        self.members
            .insert(id, Member { quorum: None, disk: MemoryLog::default(), pending: VecDeque::new(), restored: 0 });
        self.start(id);
    }

    /// Every member, the joined ones too.
    fn ids(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    fn quorum(&self, id: u64) -> &Quorum<S> {
        self.members[&id].quorum.as_ref().unwrap()
    }

    fn is_up(&self, id: u64) -> bool {
        self.members[&id].quorum.is_some()
    }

    /// Runs `f` on a member that is up, then polls it.
    fn call(&mut self, id: u64, f: impl FnOnce(&mut Quorum<S>)) {
        let member = self.members.get_mut(&id).unwrap();
        let Some(q) = member.quorum.as_mut() else { return };
        f(q);
        let out = q.poll().unwrap();
        self.collect(id, out);
    }

    fn collect(&mut self, from: u64, out: Output) {
        for (to, bytes) in out.messages {
            self.in_flight.push((from, to, bytes));
        }
        for a in out.applied {
            self.by_index.entry(a.index).or_default().insert(a.result.clone());
            if a.proposal.is_some() {
                self.acknowledged.push((a.result, a.index));
            }
        }
        let member = self.members.get_mut(&from).unwrap();
        if out.restored.is_some() {
            member.restored += 1;
        }
        member.pending.extend(out.persist);
    }

    /// Performs every outstanding persist of a member.
    fn persist_all(&mut self, id: u64) {
        while !self.members[&id].pending.is_empty() {
            self.persist_one(id);
        }
    }

    /// Performs a member's oldest outstanding persist.
    fn persist_one(&mut self, id: u64) {
        let member = self.members.get_mut(&id).unwrap();
        let Some(persist) = member.pending.pop_front() else { return };
        member.disk.write(&persist);
        self.call(id, |q| q.persisted(persist.number));
    }

    /// A crash: the quorum and its unperformed persists are gone; of its log's unsynced
    /// bytes, a random prefix survives.
    fn crash(&mut self, id: u64) {
        let member = self.members.get_mut(&id).unwrap();
        member.quorum = None;
        member.pending.clear();
        let kept = self.rng.range(0, member.disk.unsynced_bytes() as u64) as usize;
        self.members.get_mut(&id).unwrap().disk.crash(kept);
    }

    fn deliver(&mut self, to: u64, bytes: &[u8]) {
        self.call(to, |q| {
            let _ = q.step(bytes);
        });
    }

    fn leader(&self) -> Option<u64> {
        self.ids().into_iter().find(|id| self.is_up(*id) && self.quorum(*id).leader_ready())
    }

    /// Rounds without loss or crashes: every member up ticks, every message arrives,
    /// every persist completes.
    fn settle(&mut self, rounds: usize) {
        for _ in 0..rounds {
            for id in self.ids() {
                self.call(id, Quorum::tick);
                self.persist_all(id);
            }
            while let Some((_, to, bytes)) = self.in_flight.pop() {
                self.deliver(to, &bytes);
                self.persist_all(to);
            }
        }
    }

    /// One random step: a tick, a delivery, a write completing, a proposal, a crash or
    /// a restart.
    fn step(&mut self, step: u64, command: impl FnOnce(u64) -> Vec<u8>) {
        let id = self.voters[self.rng.range(0, self.voters.len() as u64 - 1) as usize];
        match self.rng.range(0, 99) {
            0..=29 => self.call(id, Quorum::tick),
            30..=69 if !self.in_flight.is_empty() => {
                // Any message in flight may arrive next (reordering); some are lost.
                let i = self.rng.range(0, self.in_flight.len() as u64 - 1) as usize;
                let (_, to, bytes) = self.in_flight.swap_remove(i);
                if !self.rng.percent(10) {
                    self.deliver(to, &bytes);
                }
            }
            70..=79 => {
                // The oldest write of a voter that has some completes.
                let writing: Vec<u64> =
                    self.voters.iter().copied().filter(|v| !self.members[v].pending.is_empty()).collect();
                if !writing.is_empty() {
                    let id = writing[self.rng.range(0, writing.len() as u64 - 1) as usize];
                    self.persist_one(id);
                }
            }
            80..=93 => {
                if self.is_up(id) && self.quorum(id).is_leader() {
                    let command = command(step);
                    self.call(id, |q| {
                        q.propose(command).unwrap();
                    });
                }
            }
            94..=96 => {
                // A crash: all but a minority stay up.
                let down = self.voters.iter().filter(|v| !self.is_up(**v)).count();
                if down < (self.voters.len() - 1) / 2 && self.is_up(id) {
                    self.crash(id);
                }
            }
            _ => {
                if !self.is_up(id) {
                    self.start(id);
                }
            }
        }
    }

    /// Every applied index has one result, and every acknowledged command is applied
    /// at its index by every voter that got that far.
    fn check(&self, seed: u64, step: u64) {
        for (index, results) in &self.by_index {
            assert_eq!(results.len(), 1, "seed {seed} step {step}: voters applied different commands at {index}");
        }
        for (result, index) in &self.acknowledged {
            let at = self.by_index.get(index).and_then(|c| c.iter().next());
            assert_eq!(at, Some(result), "seed {seed} step {step}: acknowledged command lost at {index}");
        }
    }
}

const TINY_LOG: QuorumConfig = QuorumConfig { log_bytes_max: 600, log_entries_max: 8 };

/// A quorum of 3 (and of 5) commits commands through message loss, reordering, slow
/// writes, crashes of a minority (losing unsynced bytes) and restarts from the log,
/// with and without frequent compaction: every voter applies the same command at each
/// index, no acknowledged command is lost, and after healing every voter holds the
/// same state (some by snapshot).
#[test]
fn voters_agree_on_every_index_through_loss_crashes_and_restarts() {
    let seeds: u64 = std::env::var("QUORUM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let steps: u64 = std::env::var("QUORUM_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(4000);
    let (mut restored, mut acknowledged) = (0, 0);
    for seed in 0..seeds {
        for size in [3, 5] {
            let config = if seed % 2 == 1 { TINY_LOG } else { QuorumConfig::default() };
            let mut net = Net::new(size, seed * 7919 + size, config, Recorder::default);
            for step in 0..steps {
                net.step(step, |step| format!("command-{step}").into_bytes());
                net.check(seed, step);
            }
            acknowledged += net.acknowledged.len();
            // Heal: everyone up, no loss; a few more commands; then every voter holds
            // the same log.
            for id in net.voters.clone() {
                if !net.is_up(id) {
                    net.start(id);
                }
            }
            net.settle(100);
            for i in 0..20 {
                let leader = net.leader().unwrap_or_else(|| panic!("seed {seed}: no leader after healing"));
                net.call(leader, |q| {
                    q.propose(format!("healed-{i}").into_bytes()).unwrap();
                });
                net.settle(3);
            }
            net.settle(100);
            net.check(seed, steps);
            let logs: BTreeSet<Vec<Vec<u8>>> =
                net.voters.iter().map(|id| net.quorum(*id).state().applied.clone()).collect();
            assert_eq!(logs.len(), 1, "seed {seed}: voters' applied commands differ after healing");
            assert!(logs.iter().all(|log| log.len() >= 20), "seed {seed}: the commands after healing are applied");
            if config == TINY_LOG {
                let snapshots: Vec<(u64, u64)> = net
                    .voters
                    .iter()
                    .map(|id| (net.quorum(*id).snapshot_index(), net.quorum(*id).applied_index()))
                    .collect();
                assert!(snapshots.iter().all(|(s, _)| *s > 0), "seed {seed}: no compaction: {snapshots:?}");
            }
            restored += net.members.values().map(|m| m.restored).sum::<u64>();
        }
    }
    assert!(acknowledged > 0, "nothing was committed under faults");
    assert!(seeds < 10 || restored > 0, "no voter ever caught up by snapshot");
}

/// A quorum of one elects itself as it opens (no election timeout to wait out), and
/// commits once its own write is durable.
#[test]
fn a_single_voter_leads_at_once_and_commits_after_its_write() {
    let mut net = Net::new(1, 1, QuorumConfig::default(), Recorder::default);
    assert!(net.quorum(1).is_leader(), "a lone voter leads before its first tick");
    net.persist_all(1);
    net.call(1, |q| {
        q.propose(b"alone".to_vec()).unwrap();
    });
    assert!(net.acknowledged.is_empty(), "not applied before its entry is durable");
    net.persist_all(1);
    assert_eq!(net.acknowledged.len(), 1);
    assert_eq!(net.quorum(1).state().applied, vec![b"alone".to_vec()]);
}

/// A follower's answer to an append leaves only once the entries are durable: the poll
/// that takes them hands out their persist and holds the answer; `persisted` lets it go.
#[test]
fn a_follower_answers_an_append_only_after_its_persist() {
    let mut net = Net::new(3, 5, QuorumConfig::default(), Recorder::default);
    net.settle(60);
    let leader = net.leader().expect("a leader");
    let follower = net.voters.iter().copied().find(|id| *id != leader).unwrap();
    net.call(leader, |q| {
        q.propose(b"held".to_vec()).unwrap();
    });
    let appends: Vec<(u64, u64, Vec<u8>)> = net.in_flight.drain(..).filter(|(_, to, _)| *to == follower).collect();
    assert!(!appends.is_empty(), "the leader sends its entry before its own write completes");
    for (_, to, bytes) in appends {
        net.deliver(to, &bytes);
    }
    let pending = &net.members[&follower].pending;
    assert!(pending.iter().any(|p| p.sync && !p.records.is_empty()), "the follower must write the entry");
    assert!(
        net.in_flight.iter().all(|(from, _, _)| *from != follower),
        "the follower answered before its write completed"
    );
    net.persist_one(follower);
    assert!(net.in_flight.iter().any(|(from, to, _)| *from == follower && *to == leader));
}

fn cluster_state() -> ClusterState {
    ClusterState::new(&[NodeId(1), NodeId(2), NodeId(3)], &[])
}

/// Leaders compact the log, a voter that was down through it catches up by the
/// leader's snapshot and holds the same `ClusterState`, and every voter restarted from
/// its snapshot and log (after kill -9: unsynced bytes kept) recovers that state.
#[test]
fn a_voter_behind_the_compacted_log_catches_up_by_snapshot_and_restarts_recover_the_state() {
    let mut net = Net::new(3, 11, TINY_LOG, cluster_state);
    net.settle(60);
    let leader = net.leader().expect("a leader");
    let behind = net.voters.iter().copied().find(|id| *id != leader).unwrap();
    net.crash(behind);
    let config = PartitionConfig { min_insync_replicas: 1, unclean_leader_election: false };
    for i in 0..40u32 {
        let command = match i % 3 {
            2 if i % 6 == 5 => Command::DeleteTopic { name: format!("topic-{}", i - 4) },
            0 | 2 => Command::RegisterNode { node: NodeId(i % 3 + 1), incarnation: Incarnation(u64::from(i) + 1) },
            _ => Command::SetTopic {
                name: format!("topic-{i}"),
                replication_factor: 1,
                configs: vec![("retention.ms".to_string(), i.to_string())],
                assignments: vec![vec![NodeId(1)], vec![NodeId(2)]],
                config,
            },
        };
        net.call(leader, |q| {
            q.propose(command.encode()).unwrap();
        });
        net.settle(2);
    }
    assert!(net.quorum(leader).snapshot_index() > 20, "the leader compacted its log");
    let expected = net.quorum(leader).state().clone();
    assert!(expected.topics().count() > 3, "the commands changed the state");
    net.start(behind);
    net.settle(60);
    assert!(net.members[&behind].restored > 0, "voter {behind} caught up by snapshot");
    for id in net.voters.clone() {
        assert_eq!(net.quorum(id).state(), &expected, "voter {id}'s state");
    }
    for id in net.voters.clone() {
        let member = net.members.get_mut(&id).unwrap();
        member.quorum = None;
        let unsynced = member.disk.unsynced_bytes();
        member.disk.crash(unsynced);
        net.start(id);
        assert!(net.quorum(id).snapshot_index() > 0, "voter {id} opened from a snapshot");
    }
    net.settle(60);
    for id in net.voters.clone() {
        assert_eq!(net.quorum(id).state(), &expected, "voter {id}'s state after a restart");
    }
}

/// Members change one at a time: a node that joins with no members gets the leader's
/// snapshot once added as a learner and holds the same state, is promoted once caught up;
/// the leader asked to demote itself hands leadership over first; a demoted voter is then
/// removed; the quorum goes on committing; and every member restarted from its log comes
/// back with the members as changed, not as it was opened with.
#[test]
fn members_join_are_promoted_demoted_and_removed_one_at_a_time() {
    let mut net = Net::new(3, 21, QuorumConfig::default(), cluster_state);
    net.settle(60);
    let propose = |net: &mut Net<ClusterState>, i: u64| {
        let leader = net.leader().expect("a leader");
        let command = Command::RegisterNode { node: NodeId(1), incarnation: Incarnation(i) };
        net.call(leader, |q| {
            q.propose(command.encode()).unwrap();
        });
        net.settle(3);
    };
    for i in 1..=5 {
        propose(&mut net, i);
    }
    net.join(4);
    net.settle(20);
    assert_eq!(net.quorum(4).applied_index(), 0, "nobody talks to a node the quorum does not know");
    let leader = net.leader().unwrap();
    let change = |net: &mut Net<ClusterState>, at: u64, change: MemberChange| {
        let mut result = Ok(());
        net.call(at, |q| result = q.change_members(change));
        result
    };
    assert!(matches!(change(&mut net, leader, MemberChange::Promote(4)), Err(QuorumError::Members(_))));
    change(&mut net, leader, MemberChange::AddLearner(4)).unwrap();
    net.settle(60);
    assert!(net.members[&4].restored > 0, "the new member starts from the leader's snapshot");
    assert_eq!(net.quorum(4).state(), net.quorum(leader).state());
    assert_eq!(net.quorum(4).members().learners, vec![4]);
    assert!(net.quorum(4).snapshot_index() > 0);
    change(&mut net, leader, MemberChange::Promote(4)).unwrap();
    net.settle(20);
    for id in net.ids() {
        assert_eq!(net.quorum(id).members().voters, vec![1, 2, 3, 4], "member {id}");
    }
    propose(&mut net, 6);
    // The leader does not demote itself: leadership moves first.
    let old = net.leader().unwrap();
    let moving = change(&mut net, old, MemberChange::Demote(old));
    assert!(matches!(moving, Err(QuorumError::LeaderMoving { .. })), "{moving:?}");
    net.settle(40);
    let leader = net.leader().unwrap();
    assert_ne!(leader, old, "leadership moved");
    assert!(matches!(change(&mut net, leader, MemberChange::Remove(old)), Err(QuorumError::Members(_))));
    change(&mut net, leader, MemberChange::Demote(old)).unwrap();
    net.settle(20);
    assert!(!net.quorum(leader).members().voters.contains(&old));
    assert!(net.quorum(leader).members().learners.contains(&old));
    change(&mut net, leader, MemberChange::Remove(old)).unwrap();
    net.settle(20);
    let members = net.quorum(leader).members();
    assert!(!members.contains(old) && members.voters.len() == 3, "{members:?}");
    for i in 7..=9 {
        propose(&mut net, i);
    }
    net.members.get_mut(&old).unwrap().quorum = None;
    net.members.remove(&old);
    let expected = net.quorum(leader).state().clone();
    for id in net.ids() {
        assert_eq!(net.quorum(id).state(), &expected, "member {id}");
        let member = net.members.get_mut(&id).unwrap();
        member.quorum = None;
        member.pending.clear();
        net.start(id);
        assert_eq!(net.quorum(id).members(), members, "member {id} after a restart");
    }
    net.settle(60);
    propose(&mut net, 10);
    for id in net.ids() {
        assert_eq!(net.quorum(id).state(), net.quorum(net.leader().unwrap()).state(), "member {id}");
    }
}
