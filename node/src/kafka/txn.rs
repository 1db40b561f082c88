//! Kafka's transaction APIs over the transaction coordinator (`crate::txn`), the group
//! coordinator (TxnOffsetCommit) and the markers (`ops::txn`): AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn, TxnOffsetCommit, WriteTxnMarkers, DescribeTransactions and
//! ListTransactions. Only decoding and encoding live here.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
    WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use sluice_schemas::TopicPartition;

use super::{code, code_of, index_of, partition_index, text, Request};
use crate::acl::op;
use crate::errors::{ErrorKind, NodeError};
use crate::groups::{by_topic, offsets_partition, GroupReply, GroupRequest, OFFSETS_TOPIC};
use crate::listener::Server;
use crate::ops::txn::{self as txn_ops, Join};
use crate::txn::{TxnMetadata, TxnRequest};

/// AddPartitionsToTxn v4+ (KIP-890) batches transactions, from brokers verifying them.
const BATCHED_FROM: i16 = 4;
/// The first EndTxn and TxnOffsetCommit versions of transactions v2 (KIP-890 part 2).
const TRANSACTIONS_V2_END_TXN: i16 = 5;
const TRANSACTIONS_V2_TXN_OFFSET_COMMIT: i16 = 5;

fn partitions_of(topics: &[AddPartitionsToTxnTopic]) -> Vec<TopicPartition> {
    topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| TopicPartition::new(t.name.0.to_string(), partition_index(*p))))
        .collect()
}

fn topic_results(partitions: &[TopicPartition], error: i16) -> Vec<AddPartitionsToTxnTopicResult> {
    let listed: Vec<(String, u32, ())> = partitions.iter().map(|tp| (tp.topic.clone(), tp.partition, ())).collect();
    by_topic(listed)
        .into_iter()
        .map(|(name, ps)| {
            AddPartitionsToTxnTopicResult::default().with_name(TopicName(text(&name))).with_results_by_partition(
                ps.into_iter()
                    .map(|(p, ())| {
                        AddPartitionsToTxnPartitionResult::default()
                            .with_partition_index(index_of(p))
                            .with_partition_error_code(error)
                    })
                    .collect(),
            )
        })
        .collect()
}

async fn add(server: &Rc<Server>, id: String, producer_id: i64, epoch: i16, partitions: Vec<TopicPartition>) -> i16 {
    let request = TxnRequest::AddPartitions { transactional_id: id, producer_id, epoch, partitions };
    code_of(&txn_ops::txn_done(&server.shard, request).await)
}

/// WRITE on the transactional id and on every topic added: the error for all the
/// partitions when not (`None`: allowed).
fn may_add(server: &Rc<Server>, r: &Request, id: &str, partitions: &[TopicPartition]) -> Option<i16> {
    if !r.caller.may(server, op::WRITE, crate::acl::resource::TRANSACTIONAL_ID, id) {
        return Some(code(&NodeError::txn_denied(id)));
    }
    let denied = partitions.iter().find(|tp| !r.caller.may_topic(server, op::WRITE, &tp.topic))?;
    Some(code(&NodeError::topic_denied(&denied.topic)))
}

pub async fn add_partitions(
    server: &Rc<Server>,
    r: &Request,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if r.version < BATCHED_FROM {
        let partitions = partitions_of(&request.v3_and_below_topics);
        let id = request.v3_and_below_transactional_id.0.to_string();
        let error = match may_add(server, r, &id, &partitions) {
            Some(error) => error,
            None => {
                let (pid, epoch) = (request.v3_and_below_producer_id.0, request.v3_and_below_producer_epoch);
                add(server, id, pid, epoch, partitions.clone()).await
            }
        };
        return AddPartitionsToTxnResponse::default()
            .with_results_by_topic_v3_and_below(topic_results(&partitions, error));
    }
    // v4+ batches come from brokers (transactions v2's produce path on another node).
    if !r.caller.may_cluster(server, op::CLUSTER_ACTION) {
        let e = code(&NodeError::cluster_denied());
        return AddPartitionsToTxnResponse::default().with_error_code(e);
    }
    let mut results = Vec::new();
    for t in request.transactions {
        let partitions = partitions_of(&t.topics);
        let id = t.transactional_id.0.to_string();
        let error = if t.verify_only {
            code_of(&txn_ops::verify_here(&server.shard, &id, t.producer_id.0, t.producer_epoch, &partitions).await)
        } else {
            add(server, id, t.producer_id.0, t.producer_epoch, partitions.clone()).await
        };
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id)
                .with_topic_results(topic_results(&partitions, error)),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

/// Transactions v2: the partitions that joined each transaction through a produce on
/// this shard, by producer id and epoch (with transactions v2 each transaction has an
/// epoch of its own, so an entry never goes stale: a later transaction has another key),
/// so only a transaction's first batch to a partition asks the coordinator.
#[derive(Default)]
pub struct Joined(RefCell<HashMap<(i64, i16), HashSet<TopicPartition>>>);

/// Transactions remembered in `Joined`; past this all are forgotten (and asked again).
const JOINED_TRANSACTIONS_MAX: usize = 10_000;

/// Produce v12+ (transactions v2, KIP-890 part 2): the producer does not add partitions
/// to its transaction itself; each transactional batch's partition joins it here, at the
/// coordinator, before the batch is appended. `batches` are the request's transactional
/// batches' partitions with their producer id and epoch; the answer names the
/// partitions that could not join, with a retriable NOT_ENOUGH_REPLICAS (as Kafka maps
/// them) while the coordinator is moving, loading or finishing the last transaction.
pub async fn join_for_produce(
    server: &Rc<Server>,
    joined: &Joined,
    transactional_id: &str,
    batches: Vec<(TopicPartition, i64, i16)>,
) -> HashMap<TopicPartition, NodeError> {
    let mut wanted: HashMap<(i64, i16), Vec<TopicPartition>> = HashMap::new();
    {
        let known = joined.0.borrow();
        for (tp, producer_id, epoch) in batches {
            if !known.get(&(producer_id, epoch)).is_some_and(|set| set.contains(&tp)) {
                wanted.entry((producer_id, epoch)).or_default().push(tp);
            }
        }
    }
    let mut failed = HashMap::new();
    for ((producer_id, epoch), partitions) in wanted {
        let result = txn_ops::join_transaction(
            &server.shard,
            transactional_id,
            producer_id,
            epoch,
            partitions.clone(),
            Join::Add,
        )
        .await;
        match result {
            Ok(()) => {
                let mut known = joined.0.borrow_mut();
                if known.len() >= JOINED_TRANSACTIONS_MAX && !known.contains_key(&(producer_id, epoch)) {
                    known.clear();
                }
                known.entry((producer_id, epoch)).or_default().extend(partitions);
            }
            Err(e) => {
                let e = txn_ops::as_produce_error(e);
                failed.extend(partitions.into_iter().map(|tp| (tp, e.clone())));
            }
        }
    }
    failed
}

/// AddOffsetsToTxn: the group's offsets partition joins the transaction (its marker
/// settles the transaction's offset commits).
pub async fn add_offsets(server: &Rc<Server>, r: &Request, request: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    if !r.caller.may(server, op::WRITE, crate::acl::resource::TRANSACTIONAL_ID, &request.transactional_id.0) {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(code(&NodeError::txn_denied(&request.transactional_id.0)));
    }
    if !r.caller.may_group(server, op::READ, &request.group_id.0) {
        return AddOffsetsToTxnResponse::default().with_error_code(code(&NodeError::group_denied(&request.group_id.0)));
    }
    let partition = offsets_partition(&request.group_id.0);
    let error = add(
        server,
        request.transactional_id.0.to_string(),
        request.producer_id.0,
        request.producer_epoch,
        vec![TopicPartition::new(OFFSETS_TOPIC, partition)],
    )
    .await;
    AddOffsetsToTxnResponse::default().with_error_code(error)
}

/// EndTxn; from v5 (transactions v2) the epoch goes up with every transaction and the
/// answer carries the producer id and epoch to go on with.
pub async fn end_txn(server: &Rc<Server>, r: &Request, request: EndTxnRequest) -> EndTxnResponse {
    if !r.caller.may(server, op::WRITE, crate::acl::resource::TRANSACTIONAL_ID, &request.transactional_id.0) {
        return EndTxnResponse::default()
            .with_error_code(code(&NodeError::txn_denied(&request.transactional_id.0)))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let ending = TxnRequest::EndTxn {
        transactional_id: request.transactional_id.0.to_string(),
        producer_id: request.producer_id.0,
        epoch: request.producer_epoch,
        commit: request.committed,
        bump: r.version >= TRANSACTIONS_V2_END_TXN,
    };
    let (error, (producer_id, epoch)) = match txn_ops::end_txn(&server.shard, ending).await {
        Ok(continuing) => (0, continuing),
        Err(e) => (code(&e), (-1, -1)),
    };
    EndTxnResponse::default()
        .with_error_code(error)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
}

/// TxnOffsetCommit: offsets committed in the producer's transaction, to the group's
/// coordinator; they count once the transaction commits.
///
/// From v5 (transactions v2) the producer does not send AddOffsetsToTxn: the group's
/// offsets partition joins its transaction here first.
pub async fn txn_offset_commit(
    server: &Rc<Server>,
    r: &Request,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    // Kafka's checks: WRITE on the transactional id, READ on the group and on each topic.
    let denied =
        if !r.caller.may(server, op::WRITE, crate::acl::resource::TRANSACTIONAL_ID, &request.transactional_id.0) {
            Some(NodeError::txn_denied(&request.transactional_id.0))
        } else if !r.caller.may_group(server, op::READ, &request.group_id.0) {
            Some(NodeError::group_denied(&request.group_id.0))
        } else {
            request
                .topics
                .iter()
                .find(|t| !r.caller.may_topic(server, op::READ, &t.name.0))
                .map(|t| NodeError::topic_denied(&t.name.0))
        };
    let joined = if let Some(e) = denied {
        Err(e)
    } else if r.version >= TRANSACTIONS_V2_TXN_OFFSET_COMMIT {
        let offsets = TopicPartition::new(OFFSETS_TOPIC, offsets_partition(&request.group_id.0));
        let id = request.transactional_id.0.to_string();
        txn_ops::join_transaction(
            &server.shard,
            &id,
            request.producer_id.0,
            request.producer_epoch,
            vec![offsets],
            Join::Add,
        )
        .await
        .map_err(|e| txn_ops::join_retriable_as(e, ErrorKind::CoordinatorLoadInProgress, "the group's offsets"))
    } else {
        Ok(())
    };
    let offsets: Vec<(String, u32, i64, String)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    partition_index(p.partition_index),
                    p.committed_offset,
                    p.committed_metadata.as_ref().map(ToString::to_string).unwrap_or_default(),
                )
            })
        })
        .collect();
    let asked: Vec<(String, u32)> = offsets.iter().map(|(t, p, _, _)| (t.clone(), *p)).collect();
    let commit = GroupRequest::TxnCommit {
        group: request.group_id.0.to_string(),
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
        member_id: request.member_id.to_string(),
        generation: request.generation_id,
        offsets,
    };
    let reply = match joined {
        Ok(()) => server.shard.group_call(commit).await,
        Err(e) => GroupReply::Done(Err(e)),
    };
    let outcomes: Vec<(String, u32, i16)> = match reply {
        GroupReply::Committed(Ok(results)) => results.into_iter().map(|(t, p, r)| (t, p, code_of(&r))).collect(),
        GroupReply::Committed(Err(e)) | GroupReply::Done(Err(e)) => {
            asked.into_iter().map(|(t, p)| (t, p, code(&e))).collect()
        }
        other => {
            let e = NodeError::new(ErrorKind::Unknown, format!("unexpected reply {other:?}"));
            asked.into_iter().map(|(t, p)| (t, p, code(&e))).collect()
        }
    };
    let topics = by_topic(outcomes)
        .into_iter()
        .map(|(name, ps)| {
            TxnOffsetCommitResponseTopic::default().with_name(TopicName(text(&name))).with_partitions(
                ps.into_iter()
                    .map(|(p, c)| {
                        TxnOffsetCommitResponsePartition::default().with_partition_index(index_of(p)).with_error_code(c)
                    })
                    .collect(),
            )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// WriteTxnMarkers: a transaction coordinator (on another node) asks this node to write
/// markers to partitions it leads.
pub async fn write_txn_markers(
    server: &Rc<Server>,
    r: &Request,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let allowed = r.caller.may_cluster(server, op::CLUSTER_ACTION);
    let mut markers = Vec::new();
    for m in request.markers {
        let mut topics = Vec::new();
        for t in &m.topics {
            let mut partitions = Vec::new();
            for p in &t.partition_indexes {
                let tp = TopicPartition::new(t.name.0.to_string(), partition_index(*p));
                let marker = txn_ops::Marker {
                    producer_id: m.producer_id.0,
                    epoch: m.producer_epoch,
                    commit: m.transaction_result,
                    coordinator_epoch: m.coordinator_epoch,
                };
                let written = if allowed {
                    txn_ops::write_marker_here(&server.shard, &tp, marker).await
                } else {
                    Err(NodeError::cluster_denied())
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(*p)
                        .with_error_code(code_of(&written)),
                );
            }
            topics.push(WritableTxnMarkerTopicResult::default().with_name(t.name.clone()).with_partitions(partitions));
        }
        markers.push(WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(topics));
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}

fn topic_data(meta: &TxnMetadata) -> Vec<kafka_protocol::messages::describe_transactions_response::TopicData> {
    use kafka_protocol::messages::describe_transactions_response::TopicData;
    let listed: Vec<(String, u32, ())> =
        meta.partitions.iter().map(|tp| (tp.topic.clone(), tp.partition, ())).collect();
    by_topic(listed)
        .into_iter()
        .map(|(name, ps)| {
            TopicData::default()
                .with_topic(TopicName(text(&name)))
                .with_partitions(ps.into_iter().map(|(p, ())| index_of(p)).collect())
        })
        .collect()
}

pub async fn describe_transactions(
    server: &Rc<Server>,
    r: &Request,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    use kafka_protocol::messages::describe_transactions_response::TransactionState;
    let mut states = Vec::new();
    for id in request.transactional_ids {
        let state = TransactionState::default().with_transactional_id(id.clone());
        let described = if r.caller.may(server, op::DESCRIBE, crate::acl::resource::TRANSACTIONAL_ID, &id.0) {
            txn_ops::describe(&server.shard, &id.0).await
        } else {
            Err(NodeError::txn_denied(&id.0))
        };
        states.push(match described {
            Ok(m) => state
                .with_transaction_state(text(m.status.name()))
                .with_transaction_timeout_ms(m.timeout_ms)
                .with_transaction_start_time_ms(m.start_ms)
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.producer_epoch)
                .with_topics(topic_data(&m)),
            Err(e) => state.with_error_code(code(&e)).with_producer_id(ProducerId(-1)).with_producer_epoch(-1),
        });
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub async fn list_transactions(
    server: &Rc<Server>,
    r: &Request,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    use kafka_protocol::messages::list_transactions_response::TransactionState;
    let mut listed = txn_ops::list(&server.shard).await;
    // Only the transactional ids the principal may describe (Kafka's filter).
    let txn = crate::acl::resource::TRANSACTIONAL_ID;
    listed.retain(|(id, _)| r.caller.sees(server, op::DESCRIBE, txn, id));
    let states: Vec<String> = request.state_filters.iter().map(ToString::to_string).collect();
    let known = ["Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort"];
    let unknown = states.iter().filter(|s| !known.contains(&s.as_str())).map(|s| text(s)).collect();
    let now = crate::io::Clock::system().now_ms();
    let transactions = listed
        .into_iter()
        .filter(|(_, m)| states.is_empty() || states.iter().any(|s| s == m.status.name()))
        .filter(|(_, m)| {
            request.producer_id_filters.is_empty() || request.producer_id_filters.contains(&ProducerId(m.producer_id))
        })
        // v1: only transactions running longer than the duration (ms); -1: all.
        .filter(|(_, m)| request.duration_filter < 0 || (m.start_ms >= 0 && now - m.start_ms > request.duration_filter))
        .map(|(id, m)| {
            TransactionState::default()
                .with_transactional_id(kafka_protocol::messages::TransactionalId(text(&id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(text(m.status.name()))
        })
        .collect();
    ListTransactionsResponse::default().with_unknown_state_filters(unknown).with_transaction_states(transactions)
}
