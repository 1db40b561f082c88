//! Kafka's partition reassignment APIs (KIP-455): AlterPartitionReassignments (v0, and v1
//! with `allowReplicationFactorChange`, KIP-860) and ListPartitionReassignments (v0), as
//! `kafka-reassign-partitions.sh` and admin clients use them. Both run on the controller
//! (`shard::reassign`); another node answers NOT_CONTROLLER, naming it, and clients
//! retry there. Altering needs ALTER on the cluster, listing DESCRIBE.

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::{code, text, Request};
use crate::acl::op;
use crate::errors::{ErrorKind, NodeError};
use crate::listener::Server;
use crate::ops::admin::{list_reassignments, run_reassign};
use crate::shard::reassign::{Move, MoveInProgress};

fn brokers(nodes: &[u32]) -> Vec<BrokerId> {
    nodes.iter().map(|n| BrokerId(*n as i32)).collect()
}

/// AlterPartitionReassignments: each partition's new replicas (or a null list: cancel its
/// move), answered per partition once the move is recorded. A request-wide refusal
/// (not authorized, not the controller) is the top-level error and every partition's.
pub async fn alter(
    server: &Rc<Server>,
    request: &Request,
    r: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let keep_factor = request.version >= 1 && !r.allow_replication_factor_change;
    let mut moves = Vec::new();
    // (topic, partition, a refusal found here; `None`: the move's result comes from shard 0).
    let mut asked: Vec<(String, i32, Option<NodeError>)> = Vec::new();
    for topic in &r.topics {
        for p in &topic.partitions {
            let name = topic.name.0.to_string();
            let target: Option<Result<Vec<u32>, i32>> =
                p.replicas.as_ref().map(|list| list.iter().map(|b| u32::try_from(b.0).map_err(|_| b.0)).collect());
            let refusal = match (u32::try_from(p.partition_index), target) {
                (Err(_), _) => Some(NodeError::new(
                    ErrorKind::UnknownTopicOrPartition,
                    format!("{name}-{} does not exist", p.partition_index),
                )),
                (_, Some(Err(id))) => Some(NodeError::new(
                    ErrorKind::InvalidReplicaAssignment,
                    format!("{name}-{}: node id {id} is negative", p.partition_index),
                )),
                (Ok(partition), target) => {
                    moves.push(Move { topic: name.clone(), partition, target: target.and_then(Result::ok) });
                    None
                }
            };
            asked.push((name, p.partition_index, refusal));
        }
    }
    let top = if !request.caller.may_cluster(server, op::ALTER) { Some(NodeError::cluster_denied()) } else { None };
    let mut results = match &top {
        Some(e) => vec![Err(e.clone()); moves.len()],
        None => run_reassign(&server.shard, moves, keep_factor).await,
    }
    .into_iter();
    // A refusal every move shares (NOT_CONTROLLER, an authorization) is also the top-level one.
    let mut first_error: Option<NodeError> = top.clone();
    let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
    for (topic, partition, refusal) in asked {
        let result = match refusal {
            Some(e) => Err(e),
            None => results.next().unwrap_or_else(|| Err(NodeError::new(ErrorKind::Unknown, "no result"))),
        };
        let mut answer =
            ReassignablePartitionResponse::default().with_partition_index(partition).with_error_message(None);
        if let Err(e) = result {
            if first_error.is_none() && matches!(e.kind, ErrorKind::NotController) {
                first_error = Some(e.clone());
            }
            answer = answer.with_error_code(code(&e)).with_error_message(Some(text(&e.message)));
        }
        match responses.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(answer),
            None => responses.push(
                ReassignableTopicResponse::default().with_name(TopicName(text(&topic))).with_partitions(vec![answer]),
            ),
        }
    }
    let mut response = AlterPartitionReassignmentsResponse::default()
        .with_error_message(None)
        .with_allow_replication_factor_change(!keep_factor)
        .with_responses(responses);
    if let Some(e) = first_error {
        response = response.with_error_code(code(&e)).with_error_message(Some(text(&e.message)));
    }
    response
}

/// UnregisterBroker (v0): forgets a node that is down for good and holds no replica, on
/// the controller (NOT_CONTROLLER elsewhere); BROKER_ID_NOT_REGISTERED for an unknown
/// id, INVALID_REQUEST (with why) for a live node, one holding replicas, or a voter.
/// Needs ALTER on the cluster.
pub async fn unregister_broker(
    server: &Rc<Server>,
    request: &Request,
    r: kafka_protocol::messages::UnregisterBrokerRequest,
) -> kafka_protocol::messages::UnregisterBrokerResponse {
    let result = if !request.caller.may_cluster(server, op::ALTER) {
        Err(NodeError::cluster_denied())
    } else {
        match u32::try_from(r.broker_id.0) {
            Ok(node) => crate::ops::admin::remove_node(&server.shard, node).await,
            Err(_) => Err(NodeError::new(ErrorKind::BrokerIdNotRegistered, format!("no node {}", r.broker_id.0))),
        }
    };
    let response = kafka_protocol::messages::UnregisterBrokerResponse::default().with_error_message(None);
    match result {
        Ok(()) => response,
        Err(e) => response.with_error_code(code(&e)).with_error_message(Some(text(&e.message))),
    }
}

/// ListPartitionReassignments: the moves in progress, of the partitions named (null: all).
pub async fn list(
    server: &Rc<Server>,
    request: &Request,
    r: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let refuse = |e: NodeError| {
        ListPartitionReassignmentsResponse::default()
            .with_error_code(code(&e))
            .with_error_message(Some(text(&e.message)))
    };
    if !request.caller.may_cluster(server, op::DESCRIBE) {
        return refuse(NodeError::cluster_denied());
    }
    let asked: Option<Vec<(String, Vec<u32>)>> = r.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| {
                let partitions = t.partition_indexes.iter().filter_map(|p| u32::try_from(*p).ok()).collect();
                (t.name.0.to_string(), partitions)
            })
            .collect()
    });
    let found: Vec<MoveInProgress> = match list_reassignments(&server.shard, asked).await {
        Ok(found) => found,
        Err(e) => return refuse(e),
    };
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for m in found {
        let partition = OngoingPartitionReassignment::default()
            .with_partition_index(m.partition as i32)
            .with_replicas(brokers(&m.replicas))
            .with_adding_replicas(brokers(&m.adding))
            .with_removing_replicas(brokers(&m.removing));
        match topics.iter_mut().find(|t| t.name.0.as_str() == m.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(text(&m.topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default().with_error_message(None).with_topics(topics)
}
