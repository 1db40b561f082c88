//! The native protocol's transaction requests over the transaction coordinator
//! (`ops::txn`): AddPartitionsToTxn, EndTxn, ListTransactions and AbortTransaction
//! (TxnOffsetCommit is in `groups`, InitProducerId in `admin`).

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use sluice_schemas::wire::{self, ErrorCode, ResponseBody};
use sluice_schemas::TopicPartition;

use super::respond;
use crate::errors::{error_code, NodeError};
use crate::listener::{ResponseFrame, Server};
use crate::ops::txn as txn_ops;
use crate::txn::TxnRequest;

fn error_args<'b>(
    b: &mut FlatBufferBuilder<'b>,
    result: &Result<(), NodeError>,
) -> (ErrorCode, Option<flatbuffers::WIPOffset<&'b str>>) {
    match result {
        Ok(()) => (ErrorCode::None, None),
        Err(e) => (error_code(e.kind), Some(b.create_string(&e.message))),
    }
}

fn end_txn_response(cid: u32, result: &Result<(), NodeError>) -> ResponseFrame {
    let mut b = FlatBufferBuilder::new();
    let (error, message) = error_args(&mut b, result);
    let body = wire::EndTxnResponse::create(&mut b, &wire::EndTxnResponseArgs { error, message });
    respond(b, cid, ResponseBody::EndTxnResponse, body.as_union_value(), Vec::new())
}

pub async fn add_partitions(server: &Rc<Server>, cid: u32, r: wire::AddPartitionsToTxnRequest<'_>) -> ResponseFrame {
    let partitions: Vec<TopicPartition> = r
        .topics()
        .iter()
        .flatten()
        .flat_map(|t| {
            let topic = t.topic().unwrap_or("").to_string();
            t.partitions().into_iter().flatten().map(move |p| TopicPartition::new(topic.as_str(), p))
        })
        .collect();
    let request = TxnRequest::AddPartitions {
        transactional_id: r.transactional_id().unwrap_or("").to_string(),
        producer_id: r.producer_id(),
        epoch: r.producer_epoch(),
        partitions,
    };
    let result = txn_ops::txn_done(&server.shard, request).await;
    let mut b = FlatBufferBuilder::new();
    let (error, message) = error_args(&mut b, &result);
    let body =
        wire::AddPartitionsToTxnResponse::create(&mut b, &wire::AddPartitionsToTxnResponseArgs { error, message });
    respond(b, cid, ResponseBody::AddPartitionsToTxnResponse, body.as_union_value(), Vec::new())
}

pub async fn end_txn(server: &Rc<Server>, cid: u32, r: wire::EndTxnRequest<'_>) -> ResponseFrame {
    let request = TxnRequest::EndTxn {
        transactional_id: r.transactional_id().unwrap_or("").to_string(),
        producer_id: r.producer_id(),
        epoch: r.producer_epoch(),
        commit: r.commit(),
        bump: false,
    };
    end_txn_response(cid, &txn_ops::end_txn(&server.shard, request).await.map(|_| ()))
}

pub async fn abort_transaction(server: &Rc<Server>, cid: u32, r: wire::AbortTransactionRequest<'_>) -> ResponseFrame {
    let request = TxnRequest::Abort { transactional_id: r.transactional_id().unwrap_or("").to_string() };
    end_txn_response(cid, &txn_ops::txn_done(&server.shard, request).await)
}

/// The transactional ids this node coordinates.
/// The transactional ids this node coordinates that the caller may describe.
pub async fn list_transactions(server: &Rc<Server>, caller: &crate::access::Caller, cid: u32) -> ResponseFrame {
    let mut listed = txn_ops::list(&server.shard).await;
    let txn = crate::acl::resource::TRANSACTIONAL_ID;
    listed.retain(|(id, _)| caller.sees(server, crate::acl::op::DESCRIBE, txn, id));
    let mut b = FlatBufferBuilder::new();
    let items: Vec<_> = listed
        .iter()
        .map(|(id, m)| {
            let listed: Vec<(String, u32, ())> =
                m.partitions.iter().map(|tp| (tp.topic.clone(), tp.partition, ())).collect();
            let topics: Vec<_> = crate::groups::by_topic(listed)
                .into_iter()
                .map(|(topic, ps)| {
                    let partitions: Vec<u32> = ps.into_iter().map(|(p, ())| p).collect();
                    let partitions = b.create_vector(&partitions);
                    let topic = b.create_string(&topic);
                    wire::TopicPartitions::create(
                        &mut b,
                        &wire::TopicPartitionsArgs { topic: Some(topic), partitions: Some(partitions) },
                    )
                })
                .collect();
            let partitions = b.create_vector(&topics);
            let transactional_id = b.create_string(id);
            let state = b.create_string(m.status.name());
            wire::TransactionDescription::create(
                &mut b,
                &wire::TransactionDescriptionArgs {
                    transactional_id: Some(transactional_id),
                    producer_id: m.producer_id,
                    producer_epoch: m.producer_epoch,
                    state: Some(state),
                    timeout_ms: m.timeout_ms,
                    start_ms: m.start_ms,
                    partitions: Some(partitions),
                },
            )
        })
        .collect();
    let transactions = b.create_vector(&items);
    let body = wire::ListTransactionsResponse::create(
        &mut b,
        &wire::ListTransactionsResponseArgs { error: ErrorCode::None, message: None, transactions: Some(transactions) },
    );
    respond(b, cid, ResponseBody::ListTransactionsResponse, body.as_union_value(), Vec::new())
}
