//! Unit tests of `ReplicaNode`: each drives one or two nodes by hand through the protocol
//! and pins down one rule of the leader or follower side.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::ClusterPartitionId;
use sluice_schemas::ids::{LeaderEpoch, Offset};

use super::*;

const P: ClusterPartitionId = ClusterPartitionId(0);
const CONFIG: ReplicaConfig = ReplicaConfig {
    heartbeat_interval_ms: 50,
    replica_lag_time_max_ms: 250,
    fetch_timeout_ms: 150,
    fetch_backoff_ms: 20,
    fetch_entries_max: 100,
    alter_partition_retry_ms: 150,
    listeners: Vec::new(),
};
const PARTITION: PartitionConfig = PartitionConfig { min_insync_replicas: 2, unclean_leader_election: false };

fn node_with(id: u32, log: ReplicaLog) -> ReplicaNode {
    ReplicaNode::new(NodeId(id), Incarnation(1), CONFIG, vec![(P, PARTITION, log)])
}

fn log_of(epochs: &[u32], first_payload: u64) -> ReplicaLog {
    let mut log = ReplicaLog::new();
    for (i, e) in epochs.iter().enumerate() {
        log.append(LeaderEpoch(*e), PayloadId(first_payload + i as u64));
    }
    log
}

fn state(leader: u32, epoch: u32, partition_epoch: u32, isr: &[u32]) -> PartitionState {
    PartitionState {
        partition: P,
        leader: Some(NodeId(leader)),
        leader_epoch: LeaderEpoch(epoch),
        partition_epoch: PartitionEpoch(partition_epoch),
        isr: isr.iter().map(|n| NodeId(*n)).collect(),
        replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
    }
}

fn deliver(node: &mut ReplicaNode, now: u64, from: Endpoint, message: Message) -> Vec<Message> {
    let envelope = Envelope { from, to: Endpoint::Node(node.id()), message };
    sent(node.step(now, NodeInput::Receive(envelope)))
}

fn sent(actions: Vec<NodeAction>) -> Vec<Message> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            NodeAction::Send(envelope) => Some(envelope.message),
            _ => None,
        })
        .collect()
}

fn update(node: &mut ReplicaNode, now: u64, state: PartitionState) -> Vec<Message> {
    deliver(node, now, Endpoint::Controller, Message::PartitionUpdate { incarnation: Incarnation(1), state })
}

fn produce(node: &mut ReplicaNode, now: u64, acks: Acks, payload: u64) -> Vec<Message> {
    let message = Message::Produce { partition: P, acks, payload: PayloadId(payload), request_id: payload };
    deliver(node, now, Endpoint::Client(ClientId(9)), message)
}

/// A follower's fetch to `leader`; returns the reply's result and everything else sent.
fn fetch(
    leader: &mut ReplicaNode,
    now: u64,
    replica: u32,
    epoch: u32,
    offset: u64,
    last_epoch: Option<u32>,
) -> (FetchResult, Vec<Message>) {
    let message = Message::Fetch {
        partition: P,
        replica: NodeId(replica),
        leader_epoch: LeaderEpoch(epoch),
        fetch_offset: Offset(offset),
        last_fetched_epoch: last_epoch.map(LeaderEpoch),
        request_id: 1,
    };
    let mut out = deliver(leader, now, Endpoint::Node(NodeId(replica)), message);
    let index = out.iter().position(|m| matches!(m, Message::FetchReply { .. })).unwrap();
    let Message::FetchReply { result, .. } = out.remove(index) else { unreachable!() };
    (result, out)
}

fn acks(messages: &[Message]) -> Vec<Result<Offset, ReplicaError>> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::ProduceReply { result, .. } => Some(*result),
            _ => None,
        })
        .collect()
}

fn proposals(messages: &[Message]) -> Vec<Vec<NodeId>> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::AlterPartition(alter) => Some(alter.isr.clone()),
            _ => None,
        })
        .collect()
}

fn ids(nodes: &[u32]) -> Vec<NodeId> {
    nodes.iter().map(|n| NodeId(*n)).collect()
}

#[test]
fn leader_hw_is_the_minimum_isr_leo_and_acks_all_waits_for_it() {
    let mut leader = node_with(1, ReplicaLog::new());
    update(&mut leader, 0, state(1, 1, 1, &[1, 2, 3]));
    assert!(acks(&produce(&mut leader, 0, Acks::All, 100)).is_empty(), "acks=all waits");
    assert!(acks(&produce(&mut leader, 0, Acks::All, 101)).is_empty());
    let (_, out) = fetch(&mut leader, 1, 2, 1, 2, Some(1));
    assert_eq!(leader.high_watermark(P), Some(Offset(0)), "n3's LEO is unknown yet");
    assert!(acks(&out).is_empty());
    let (result, out) = fetch(&mut leader, 2, 3, 1, 1, Some(1));
    assert_eq!(leader.high_watermark(P), Some(Offset(1)), "min(2, 2, 1)");
    assert_eq!(acks(&out), vec![Ok(Offset(0))]);
    assert!(
        matches!(result, FetchResult::Entries { high_watermark: Offset(1), ref entries, .. } if entries.len() == 1)
    );
    let (_, out) = fetch(&mut leader, 3, 3, 1, 2, Some(1));
    assert_eq!(acks(&out), vec![Ok(Offset(1))]);
    let (_, out) = fetch(&mut leader, 4, 3, 1, 1, Some(1));
    assert_eq!(leader.high_watermark(P), Some(Offset(2)), "a late, reordered fetch never lowers the HW");
    assert!(acks(&out).is_empty());
}

#[test]
fn acks_all_is_refused_while_the_isr_is_below_min_insync() {
    let mut leader = node_with(1, ReplicaLog::new());
    update(&mut leader, 0, state(1, 1, 1, &[1]));
    assert_eq!(acks(&produce(&mut leader, 0, Acks::All, 100)), vec![Err(ReplicaError::NotEnoughReplicas)]);
    assert_eq!(acks(&produce(&mut leader, 0, Acks::Leader, 101)), vec![Ok(Offset(0))]);
    assert!(produce(&mut leader, 0, Acks::None, 102).is_empty(), "acks=0 gets no answer");
    assert_eq!(leader.log(P).unwrap().end_offset(), Offset(2), "the refused record was not appended");
}

#[test]
fn acks_all_reached_after_the_isr_shrank_below_min_insync_is_not_acknowledged() {
    let mut leader = node_with(1, ReplicaLog::new());
    update(&mut leader, 0, state(1, 1, 1, &[1, 2]));
    produce(&mut leader, 0, Acks::All, 100);
    let out = update(&mut leader, 10, state(1, 1, 2, &[1]));
    assert_eq!(acks(&out), vec![Err(ReplicaError::NotEnoughReplicasAfterAppend)]);
}

#[test]
fn follower_leaves_the_isr_after_the_lag_time() {
    let mut leader = node_with(1, ReplicaLog::new());
    update(&mut leader, 0, state(1, 1, 1, &[1, 2, 3]));
    produce(&mut leader, 0, Acks::Leader, 100);
    fetch(&mut leader, 100, 2, 1, 1, Some(1));
    assert!(proposals(&sent(leader.step(200, NodeInput::Tick))).is_empty(), "within the lag time");
    let out = sent(leader.step(300, NodeInput::Tick));
    assert_eq!(proposals(&out), vec![ids(&[1, 2])], "n3 never fetched; n2 caught up at 100");
    let out = sent(leader.step(320, NodeInput::Tick));
    assert!(proposals(&out).is_empty(), "one proposal at a time");
    let out = sent(leader.step(460, NodeInput::Tick));
    assert_eq!(proposals(&out), vec![ids(&[1, 2])], "sent again without an answer");
}

#[test]
fn follower_rejoins_the_isr_once_caught_up_and_counts_for_the_hw_at_once() {
    let mut leader = node_with(1, ReplicaLog::new());
    update(&mut leader, 0, state(1, 1, 1, &[1, 2]));
    produce(&mut leader, 0, Acks::Leader, 100);
    produce(&mut leader, 0, Acks::Leader, 101);
    fetch(&mut leader, 1, 2, 1, 2, Some(1));
    assert_eq!(leader.high_watermark(P), Some(Offset(2)));
    let (_, out) = fetch(&mut leader, 2, 3, 1, 0, None);
    assert!(proposals(&out).is_empty(), "n3 is below the HW");
    let (_, out) = fetch(&mut leader, 3, 3, 1, 2, Some(1));
    assert_eq!(proposals(&out), vec![ids(&[1, 2, 3])]);
    // Pending: n3 already counts (the controller may have accepted it).
    produce(&mut leader, 4, Acks::Leader, 102);
    fetch(&mut leader, 5, 2, 1, 3, Some(1));
    assert_eq!(leader.high_watermark(P), Some(Offset(2)), "held back by pending member n3");
    fetch(&mut leader, 6, 3, 1, 3, Some(1));
    assert_eq!(leader.high_watermark(P), Some(Offset(3)));
}

/// A follower is proposed back into the ISR only once it also holds everything from
/// before this leader's epoch, not merely everything below the HW: a new leader's HW may
/// lag behind what an earlier leader committed (here it is 0, as n2 has not fetched yet),
/// and an ISR member must hold all of that.
#[test]
fn follower_rejoins_only_past_the_epoch_start_even_above_a_lagging_hw() {
    let mut leader = node_with(1, log_of(&[1, 1, 1], 0));
    update(&mut leader, 0, state(1, 2, 5, &[1, 2]));
    assert_eq!(leader.high_watermark(P), Some(Offset(0)));
    let (_, out) = fetch(&mut leader, 1, 3, 2, 1, Some(1));
    assert!(proposals(&out).is_empty(), "n3 is at the HW but lacks offsets 1..3 from before epoch 2");
    let (_, out) = fetch(&mut leader, 2, 3, 2, 3, Some(1));
    assert_eq!(proposals(&out), vec![ids(&[1, 2, 3])]);
}

#[test]
fn follower_truncates_a_divergent_tail_over_several_rounds() {
    // n2 has entries from a deposed epoch-3 leader; n1 leads epoch 4.
    let leader_log = log_of(&[1, 2, 2, 4], 0);
    let mut follower_log = log_of(&[1], 0);
    follower_log.push(LogEntry { offset: Offset(1), count: 1, epoch: LeaderEpoch(1), payload: PayloadId(50) });
    follower_log.push(LogEntry { offset: Offset(2), count: 1, epoch: LeaderEpoch(3), payload: PayloadId(51) });
    follower_log.push(LogEntry { offset: Offset(3), count: 1, epoch: LeaderEpoch(3), payload: PayloadId(52) });
    let mut leader = node_with(1, leader_log.clone());
    let mut follower = node_with(2, follower_log);
    update(&mut leader, 0, state(1, 4, 9, &[1, 2, 3]));
    update(&mut follower, 0, state(1, 4, 9, &[1, 2, 3]));
    let mut request =
        sent(follower.step(1, NodeInput::Tick)).into_iter().find(|m| matches!(m, Message::Fetch { .. })).unwrap();
    let mut truncations = Vec::new();
    for round in 0..5 {
        let reply = deliver(&mut leader, 2 + round, Endpoint::Node(NodeId(2)), request.clone()).remove(0);
        if let Message::FetchReply { result: FetchResult::Diverging { end }, .. } = &reply {
            truncations.push(*end);
        }
        let envelope = Envelope { from: Endpoint::Node(NodeId(1)), to: Endpoint::Node(NodeId(2)), message: reply };
        let actions = follower.step(2 + round, NodeInput::Receive(envelope));
        match sent(actions).into_iter().find(|m| matches!(m, Message::Fetch { .. })) {
            Some(next) => request = next,
            None => break,
        }
        if follower.log(P).unwrap().entries() == leader_log.entries() {
            break;
        }
    }
    assert_eq!(
        truncations,
        vec![
            Some(EpochEnd { epoch: LeaderEpoch(2), end_offset: Offset(3) }),
            Some(EpochEnd { epoch: LeaderEpoch(1), end_offset: Offset(1) }),
        ],
        "first the leader's end of epoch 2 (the largest <= 3), then of epoch 1"
    );
    let follower_log = follower.log(P).unwrap();
    assert_eq!(follower_log.entries(), leader_log.entries(), "the tail from epoch 3 is gone, the leader's copied");
    assert_eq!(follower_log.epoch_starts(), leader_log.epoch_starts());
}

#[test]
fn leader_refuses_fetches_from_other_epochs() {
    let mut leader = node_with(1, ReplicaLog::new());
    update(&mut leader, 0, state(1, 4, 1, &[1, 2, 3]));
    assert_eq!(fetch(&mut leader, 1, 2, 3, 0, None).0, FetchResult::Error(ReplicaError::FencedLeaderEpoch));
    assert_eq!(fetch(&mut leader, 1, 2, 5, 0, None).0, FetchResult::Error(ReplicaError::UnknownLeaderEpoch));
    let mut follower = node_with(2, ReplicaLog::new());
    update(&mut follower, 0, state(1, 4, 1, &[1, 2, 3]));
    assert_eq!(fetch(&mut follower, 1, 3, 4, 0, None).0, FetchResult::Error(ReplicaError::NotLeader));
}

#[test]
fn new_leader_refuses_consumers_until_its_hw_reaches_its_epoch_start() {
    let mut leader = node_with(1, log_of(&[1, 1, 1], 0));
    update(&mut leader, 0, state(1, 2, 5, &[1, 2]));
    let consume = |leader: &mut ReplicaNode| {
        let message =
            Message::ConsumerFetch { partition: P, leader_epoch: LeaderEpoch(2), offset: Offset(0), request_id: 1 };
        match deliver(leader, 1, Endpoint::Client(ClientId(9)), message).remove(0) {
            Message::ConsumerFetchReply { result, .. } => result,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(consume(&mut leader), Err(ReplicaError::OffsetNotAvailable));
    fetch(&mut leader, 1, 2, 2, 2, Some(1));
    assert_eq!(leader.high_watermark(P), Some(Offset(2)));
    assert_eq!(consume(&mut leader), Err(ReplicaError::OffsetNotAvailable), "HW 2 is below the epoch start 3");
    fetch(&mut leader, 1, 2, 2, 3, Some(1));
    let records = consume(&mut leader).unwrap();
    assert_eq!(records.high_watermark, Offset(3));
    assert_eq!(records.entries.len(), 3);
}

#[test]
fn controller_messages_for_another_life_are_ignored() {
    let mut node = node_with(1, ReplicaLog::new());
    let message = Message::PartitionUpdate { incarnation: Incarnation(0), state: state(1, 1, 1, &[1, 2, 3]) };
    deliver(&mut node, 0, Endpoint::Controller, message);
    assert_eq!(node.leader_epoch_if_leader(P), None, "addressed to the previous life");
    update(&mut node, 0, state(1, 1, 1, &[1, 2, 3]));
    assert_eq!(node.leader_epoch_if_leader(P), Some(LeaderEpoch(1)));
    update(&mut node, 0, state(2, 1, 0, &[1, 2, 3]));
    assert_eq!(node.leader_epoch_if_leader(P), Some(LeaderEpoch(1)), "an older partition epoch changes nothing");
}

#[test]
fn the_nodes_produce_path_records_batches_the_stored_log_placed() {
    let stored = ReplicaLog::stored(Offset(0), Offset(10), &[(LeaderEpoch(1), Offset(0))]);
    let mut leader = ReplicaNode::new(NodeId(1), Incarnation(1), CONFIG, vec![(P, PARTITION, stored)]);
    let client = Endpoint::Client(ClientId(7));
    let (refused, _) = leader.lead_append(0, P, client, Acks::All, Offset(10), 5, 1);
    assert_eq!(refused, Err(ReplicaError::NotLeader), "no state from the controller yet");
    update(&mut leader, 0, state(1, 2, 1, &[1, 2]));
    let (wrong, _) = leader.lead_append(0, P, client, Acks::Leader, Offset(11), 5, 2);
    assert_eq!(wrong, Err(ReplicaError::NotLeader), "an offset the log does not agree on is refused");
    let (epoch, out) = leader.lead_append(0, P, client, Acks::All, Offset(10), 5, 3);
    assert_eq!(epoch, Ok(LeaderEpoch(2)), "the batch is stamped with the leader's epoch");
    assert!(acks(&sent(out)).is_empty(), "acks=all waits for the follower");
    assert!(leader.log(P).unwrap().entries().is_empty(), "a stored log keeps no entries");
    assert_eq!(leader.log(P).unwrap().end_offset(), Offset(15));
    assert_eq!(leader.consumer_view(P), Err(ReplicaError::OffsetNotAvailable), "HW below the epoch start (10)");
    let (result, out) = fetch(&mut leader, 1, 2, 2, 15, Some(2));
    assert!(
        matches!(result, FetchResult::Entries { high_watermark: Offset(15), ref entries, .. } if entries.is_empty())
    );
    assert_eq!(acks(&out), vec![Ok(Offset(10))]);
    assert_eq!(leader.consumer_view(P), Ok((Offset(15), LeaderEpoch(2))));
    update(&mut leader, 2, state(2, 3, 2, &[2]));
    assert_eq!(leader.consumer_view(P), Err(ReplicaError::NotLeader));
}

/// Every heartbeat, the first and the one asking for a controlled shutdown alike, carries
/// the node's advertised listeners.
#[test]
fn heartbeats_carry_the_configured_listeners() {
    let listeners = vec![
        AdvertisedListener { name: "INTERNAL".to_string(), host: "127.0.0.1".to_string(), port: 9092 },
        AdvertisedListener { name: "EXTERNAL".to_string(), host: "n1.example.com".to_string(), port: 9093 },
    ];
    let config = ReplicaConfig { listeners: listeners.clone(), ..CONFIG };
    let mut node = ReplicaNode::new(NodeId(1), Incarnation(3), config, vec![(P, PARTITION, ReplicaLog::new())]);
    let mut heartbeats = sent(node.step(0, NodeInput::Tick));
    heartbeats.extend(sent(node.step(1, NodeInput::BeginShutdown)));
    let heartbeats: Vec<(bool, Vec<AdvertisedListener>)> = heartbeats
        .into_iter()
        .filter_map(|m| match m {
            Message::Heartbeat { node: NodeId(1), incarnation: Incarnation(3), want_shutdown, listeners } => {
                Some((want_shutdown, listeners))
            }
            _ => None,
        })
        .collect();
    assert_eq!(heartbeats, vec![(false, listeners.clone()), (true, listeners)]);
}

/// The follower's fetch after a reply, with the log operations before it.
fn follower_reply(
    follower: &mut ReplicaNode,
    now: u64,
    result: FetchResult,
) -> (Vec<LogOp>, Option<(Offset, Option<LeaderEpoch>)>) {
    let request_id = match sent(follower.step(now, NodeInput::Tick)).into_iter().find_map(|m| match m {
        Message::Fetch { request_id, .. } => Some(request_id),
        _ => None,
    }) {
        Some(id) => id,
        None => panic!("the follower sends a fetch on its tick"),
    };
    let reply = Message::FetchReply { partition: P, leader_epoch: LeaderEpoch(5), request_id, result };
    let envelope = Envelope { from: Endpoint::Node(NodeId(1)), to: Endpoint::Node(follower.id()), message: reply };
    let actions = follower.step(now, NodeInput::Receive(envelope));
    let ops = actions
        .iter()
        .filter_map(|a| match a {
            NodeAction::Log { op, .. } => Some(op.clone()),
            _ => None,
        })
        .collect();
    let next = sent(actions).into_iter().find_map(|m| match m {
        Message::Fetch { fetch_offset, last_fetched_epoch, .. } => Some((fetch_offset, last_fetched_epoch)),
        _ => None,
    });
    (ops, next)
}

/// A follower whose log ends before the leader's log start (retention, DeleteRecords) is
/// told to start there: it resets its log, empty, and its next fetch starts at the
/// leader's log start in the leader's epoch there, which the leader accepts. A stored log
/// that does not start at 0 and shares nothing with the leader starts again at 0 (the
/// leader then says where to start), rather than truncating below its own start.
#[test]
fn a_follower_behind_the_leaders_log_start_starts_again_there() {
    let stored = ReplicaLog::stored(Offset(0), Offset(3), &[(LeaderEpoch(1), Offset(0))]);
    let mut follower = node_with(2, stored);
    update(&mut follower, 0, state(1, 5, 1, &[1]));
    let (ops, next) =
        follower_reply(&mut follower, 1, FetchResult::Reset { log_start: Offset(40), epoch: LeaderEpoch(4) });
    assert_eq!(ops, vec![LogOp::Reset(Offset(40))]);
    assert_eq!(next, Some((Offset(40), Some(LeaderEpoch(4)))));
    let log = follower.log(P).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (Offset(40), Offset(40)));
    // The same answer again (to the fetch sent again after its timeout) changes nothing:
    // the log no longer ends before 40.
    let (ops, _) =
        follower_reply(&mut follower, 500, FetchResult::Reset { log_start: Offset(40), epoch: LeaderEpoch(4) });
    assert!(ops.is_empty(), "{ops:?}");

    // The leader (log 0..60, epoch 4 from 10, retention moved its start to 40) accepts it.
    let stored =
        ReplicaLog::stored(Offset(40), Offset(60), &[(LeaderEpoch(2), Offset(0)), (LeaderEpoch(4), Offset(10))]);
    let mut leader = node_with(1, stored);
    update(&mut leader, 0, state(1, 5, 1, &[1]));
    let (result, _) = fetch(&mut leader, 1, 2, 5, 40, Some(4));
    assert!(matches!(result, FetchResult::Entries { .. }), "{result:?}");

    // Restarted before it stored anything (its log starts at 40, no epoch known), the
    // leader finds nothing in common: it starts again at 0 and asks the leader where to start.
    let mut restarted = node_with(2, ReplicaLog::stored(Offset(40), Offset(40), &[]));
    update(&mut restarted, 0, state(1, 5, 1, &[1]));
    let (ops, next) = follower_reply(&mut restarted, 1, FetchResult::Diverging { end: None });
    assert_eq!(ops, vec![LogOp::Reset(Offset(0))]);
    assert_eq!(next, Some((Offset(0), None)));
}

/// The leader's log start (DeleteRecords, retention) reaches its followers: each moves its
/// own up to it, as far as its log goes.
#[test]
fn a_follower_moves_its_log_start_up_to_the_leaders() {
    let mut follower = node_with(2, log_of(&[1, 1, 1], 0));
    update(&mut follower, 0, state(1, 5, 1, &[1, 2]));
    let entries = |log_start| FetchResult::Entries {
        entries: Vec::new(),
        high_watermark: Offset(3),
        log_start: Offset(log_start),
    };
    assert_eq!(follower_reply(&mut follower, 1, entries(0)).0, Vec::new());
    assert_eq!(follower_reply(&mut follower, 500, entries(2)).0, vec![LogOp::AdvanceStart(Offset(2))]);
    assert_eq!(follower_reply(&mut follower, 1000, entries(9)).0, vec![LogOp::AdvanceStart(Offset(3))]);
    assert_eq!(follower.log(P).unwrap().start_offset(), Offset(3));
    assert_eq!(follower_reply(&mut follower, 1500, entries(9)).0, Vec::new(), "already there");
}

/// A reassignment changes the replicas under a leader in the same epoch: an added replica
/// is served at once (it is a follower now) and joins the ISR once caught up; a removed
/// one is no longer served.
#[test]
fn a_leader_serves_replicas_added_in_its_epoch_and_forgets_removed_ones() {
    let mut leader = node_with(1, log_of(&[1, 1], 0));
    update(&mut leader, 0, state(1, 1, 1, &[1, 2, 3]));
    let (result, _) = fetch(&mut leader, 1, 4, 1, 0, None);
    assert_eq!(result, FetchResult::Error(ReplicaError::NotLeader), "node 4 is no replica yet");
    let moving = PartitionState { replicas: ids(&[4, 2, 3, 1]), ..state(1, 1, 2, &[1, 2, 3]) };
    update(&mut leader, 2, moving);
    let (result, out) = fetch(&mut leader, 3, 4, 1, 2, Some(1));
    assert!(matches!(result, FetchResult::Entries { .. }), "{result:?}");
    assert_eq!(proposals(&out), vec![ids(&[1, 2, 3, 4])], "caught up: proposed into the ISR");
    let done = PartitionState { replicas: ids(&[4, 2, 1]), ..state(1, 1, 3, &[1, 2, 4]) };
    update(&mut leader, 4, done);
    let (result, _) = fetch(&mut leader, 5, 3, 1, 2, Some(1));
    assert_eq!(result, FetchResult::Error(ReplicaError::NotLeader), "node 3 left the replicas");
}

/// A tick visits only the replicas it may have work for: of 1,000 partitions this node
/// leads alone and one it follows, only the follower; a led partition whose ISR gains a
/// member joins them (its lag is watched), and leaves again once the ISR is this node alone.
#[test]
fn a_tick_visits_followers_and_leaders_with_company_only() {
    let partitions: Vec<ReplicaSpec> =
        (0..1_001).map(|p| (ClusterPartitionId(p), PARTITION, ReplicaLog::new())).collect();
    let mut node = ReplicaNode::new(NodeId(1), Incarnation(1), CONFIG, partitions);
    let at = |p: u32, leader: u32, isr: &[u32]| PartitionState {
        partition: ClusterPartitionId(p),
        ..state(leader, 1, 1, isr)
    };
    let mut states: Vec<PartitionState> = (0..1_000).map(|p| at(p, 1, &[1])).collect();
    states.push(at(1_000, 2, &[2, 1]));
    let reply = Message::HeartbeatReply { incarnation: Incarnation(1), states, shutdown_ready: false };
    deliver(&mut node, 0, Endpoint::Controller, reply);
    node.step(10, NodeInput::Tick);
    assert_eq!(node.ticking.iter().copied().collect::<Vec<_>>(), vec![ClusterPartitionId(1_000)]);
    let update = |state| Message::PartitionUpdate { incarnation: Incarnation(1), state };
    deliver(
        &mut node,
        20,
        Endpoint::Controller,
        update(PartitionState { partition_epoch: PartitionEpoch(2), ..at(7, 1, &[1, 2]) }),
    );
    assert!(node.ticking.contains(&ClusterPartitionId(7)), "a leader with an ISR member to watch");
    deliver(
        &mut node,
        30,
        Endpoint::Controller,
        update(PartitionState { partition_epoch: PartitionEpoch(3), ..at(7, 1, &[1]) }),
    );
    node.step(40, NodeInput::Tick);
    assert!(!node.ticking.contains(&ClusterPartitionId(7)), "alone in its ISR again");
    // The rescan finds the same set.
    node.step(40 + crate::replica::TICKING_RESCAN_MS, NodeInput::Tick);
    assert_eq!(node.ticking.len(), 1);
}
