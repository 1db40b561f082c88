//! The native protocol's partition moves: AlterReassignments and ListReassignments, the
//! same work as Kafka's AlterPartitionReassignments and ListPartitionReassignments
//! (`shard::reassign`, through `ops::admin`). The caller's authorization (ALTER or
//! DESCRIBE on the cluster) is checked before (`native::security`).

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use sluice_schemas::wire::{self, ErrorCode, ResponseBody};

use super::respond;
use crate::errors::{error_code, ErrorKind, NodeError};
use crate::listener::{ResponseFrame, Server};
use crate::ops::admin::{list_reassignments, run_reassign};
use crate::shard::reassign::Move;

/// AlterReassignments: one result per move, in order; a refusal every move shares (this
/// node is not the controller) is also the response's own error.
pub async fn alter(server: &Rc<Server>, cid: u32, request: wire::AlterReassignmentsRequest<'_>) -> ResponseFrame {
    let moves: Vec<Move> = request
        .moves()
        .iter()
        .flatten()
        .map(|m| Move {
            topic: m.topic().unwrap_or("").to_string(),
            partition: m.partition(),
            target: m.replicas().map(|r| r.iter().collect()),
        })
        .collect();
    let results = run_reassign(&server.shard, moves.clone(), false).await;
    let shared = results
        .first()
        .and_then(|r| r.as_ref().err())
        .filter(|e| e.kind == ErrorKind::NotController && results.iter().all(Result::is_err))
        .cloned();
    let mut b = FlatBufferBuilder::new();
    let items: Vec<_> = moves
        .iter()
        .zip(&results)
        .map(|(m, r)| {
            let topic = b.create_string(&m.topic);
            let (error, message) = match r {
                Ok(()) => (ErrorCode::None, None),
                Err(e) => (error_code(e.kind), Some(b.create_string(&e.message))),
            };
            wire::PartitionMoveResult::create(
                &mut b,
                &wire::PartitionMoveResultArgs { topic: Some(topic), partition: m.partition, error, message },
            )
        })
        .collect();
    let results = b.create_vector(&items);
    let (error, message) = match &shared {
        Some(e) => (error_code(e.kind), Some(b.create_string(&e.message))),
        None => (ErrorCode::None, None),
    };
    let body = wire::AlterReassignmentsResponse::create(
        &mut b,
        &wire::AlterReassignmentsResponseArgs { error, message, results: Some(results) },
    );
    respond(b, cid, ResponseBody::AlterReassignmentsResponse, body.as_union_value(), Vec::new())
}

/// UnregisterNode: forgets a node that is down for good (`ops::admin::remove_node`).
pub async fn unregister_node(server: &Rc<Server>, cid: u32, request: wire::UnregisterNodeRequest<'_>) -> ResponseFrame {
    let result = crate::ops::admin::remove_node(&server.shard, request.node()).await;
    let mut b = FlatBufferBuilder::new();
    let (error, message) = match &result {
        Ok(()) => (ErrorCode::None, None),
        Err(e) => (error_code(e.kind), Some(b.create_string(&e.message))),
    };
    let body = wire::UnregisterNodeResponse::create(&mut b, &wire::UnregisterNodeResponseArgs { error, message });
    respond(b, cid, ResponseBody::UnregisterNodeResponse, body.as_union_value(), Vec::new())
}

/// AlterVoters: adds or removes one controller voter (`ops::admin::change_voter`).
pub async fn alter_voters(server: &Rc<Server>, cid: u32, request: wire::AlterVotersRequest<'_>) -> ResponseFrame {
    let result = crate::ops::admin::change_voter(&server.shard, request.node(), request.add()).await;
    let mut b = FlatBufferBuilder::new();
    let (error, message) = match &result {
        Ok(()) => (ErrorCode::None, None),
        Err(e) => (error_code(e.kind), Some(b.create_string(&e.message))),
    };
    let body = wire::AlterVotersResponse::create(&mut b, &wire::AlterVotersResponseArgs { error, message });
    respond(b, cid, ResponseBody::AlterVotersResponse, body.as_union_value(), Vec::new())
}

/// DescribeQuorum: the controller quorum's leader, voters and learners.
pub async fn describe_quorum(server: &Rc<Server>, cid: u32) -> ResponseFrame {
    let result = crate::ops::admin::describe_quorum(&server.shard).await;
    let mut b = FlatBufferBuilder::new();
    let args = match &result {
        Ok(status) => {
            let ids = |nodes: &[crate::replication::NodeId]| nodes.iter().map(|n| n.0).collect::<Vec<u32>>();
            wire::DescribeQuorumResponseArgs {
                error: ErrorCode::None,
                message: None,
                leader: status.leader.map_or(-1, |l| l.0 as i32),
                voters: Some(b.create_vector(&ids(&status.members.voters))),
                learners: Some(b.create_vector(&ids(&status.members.learners))),
            }
        }
        Err(e) => wire::DescribeQuorumResponseArgs {
            error: error_code(e.kind),
            message: Some(b.create_string(&e.message)),
            ..wire::DescribeQuorumResponseArgs::default()
        },
    };
    let body = wire::DescribeQuorumResponse::create(&mut b, &args);
    respond(b, cid, ResponseBody::DescribeQuorumResponse, body.as_union_value(), Vec::new())
}

/// ListReassignments: the moves in progress of the topics named (none: all).
pub async fn list(server: &Rc<Server>, cid: u32, request: wire::ListReassignmentsRequest<'_>) -> ResponseFrame {
    let asked: Option<Vec<(String, Vec<u32>)>> = request.topics().map(|topics| {
        topics
            .iter()
            .map(|topic| {
                let count = server.shard.metadata().topic(topic).map_or(0, |t| t.partitions);
                (topic.to_string(), (0..count).collect())
            })
            .collect()
    });
    let found = list_reassignments(&server.shard, asked).await;
    let mut b = FlatBufferBuilder::new();
    let (error, message, moves): (ErrorCode, Option<&NodeError>, Vec<_>) = match &found {
        Ok(found) => {
            let moves = found
                .iter()
                .map(|m| {
                    let topic = b.create_string(&m.topic);
                    let replicas = b.create_vector(&m.replicas);
                    let adding = b.create_vector(&m.adding);
                    let removing = b.create_vector(&m.removing);
                    wire::PartitionMoveInProgress::create(
                        &mut b,
                        &wire::PartitionMoveInProgressArgs {
                            topic: Some(topic),
                            partition: m.partition,
                            replicas: Some(replicas),
                            adding: Some(adding),
                            removing: Some(removing),
                        },
                    )
                })
                .collect();
            (ErrorCode::None, None, moves)
        }
        Err(e) => (error_code(e.kind), Some(e), Vec::new()),
    };
    let message = message.map(|e| b.create_string(&e.message));
    let moves = b.create_vector(&moves);
    let body = wire::ListReassignmentsResponse::create(
        &mut b,
        &wire::ListReassignmentsResponseArgs { error, message, moves: Some(moves) },
    );
    respond(b, cid, ResponseBody::ListReassignmentsResponse, body.as_union_value(), Vec::new())
}
