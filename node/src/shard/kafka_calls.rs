//! Kafka requests between nodes over the cluster link. A node asks another for what Kafka
//! brokers ask each other through their listeners (WriteTxnMarkers to a partition's
//! leader, AddPartitionsToTxn v5 to a transactional id's coordinator), but the Kafka
//! listener may require TLS and a SASL login that a node has no credentials for, so the
//! request (Kafka's own bytes: header and body) travels in a `Message::KafkaRequest` on
//! the cluster link instead, and its answer in a `Message::KafkaResponse` to the shard
//! that waits for it. The receiving node runs it as its Kafka listener would
//! (`kafka::serve_inter_node`), as the cluster's own principal (`acl::INTER_NODE`).
//!
//! The cluster link is best effort: a request whose answer does not come within the
//! caller's timeout fails (the callers retry, as they did on a broken connection).

use std::rc::Rc;
use std::time::Duration;

use sluice_replication::wire;
use sluice_replication::{Endpoint, Message, NodeId};
use tracing::warn;

use super::Shard;
use crate::io::Oneshot;

impl Shard {
    /// Replication envelopes for this shard: Kafka requests and answers are handled here,
    /// everything else goes to the replica host.
    pub(super) fn receive_envelopes(self: &Rc<Self>, list: Vec<Vec<u8>>) {
        if !list.iter().any(|bytes| wire::is_kafka(bytes)) {
            self.host().receive_batch(list);
            return;
        }
        let (kafka, others): (Vec<Vec<u8>>, Vec<Vec<u8>>) = list.into_iter().partition(|b| wire::is_kafka(b));
        if !others.is_empty() {
            self.host().receive_batch(others);
        }
        for bytes in kafka {
            let (envelope, data) = match wire::decode(&bytes) {
                Ok(decoded) => decoded,
                Err(e) => {
                    warn!("dropping an inter-node Kafka message that does not decode: {e}");
                    continue;
                }
            };
            match (envelope.message, envelope.from) {
                (Message::KafkaRequest { request_id, reply_shard }, Endpoint::Node(from)) => {
                    let frame = data.to_vec();
                    let shard = self.clone();
                    crate::io::spawn_detached(async move {
                        if let Some(answer) = crate::kafka::serve_inter_node(&shard, from, frame).await {
                            let reply = Message::KafkaResponse { request_id, reply_shard };
                            shard.host().send_to(from, reply, &answer);
                        }
                    });
                }
                (Message::KafkaResponse { request_id, .. }, Endpoint::Node(from)) => {
                    // Only the node asked answers (an id is unique to this life of this shard).
                    let mut calls = self.kafka_calls.borrow_mut();
                    if calls.get(&request_id).is_some_and(|(to, _)| *to == from) {
                        if let Some((_, waiting)) = calls.remove(&request_id) {
                            waiting.send(data.to_vec());
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends a Kafka request (`frame`: header and body, no size) to node `to` over the
    /// cluster link and returns its answer (response header and body), or why there is
    /// none within `timeout`.
    pub async fn kafka_call(self: &Rc<Self>, to: NodeId, frame: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        let request_id = self.next_kafka_call.get();
        self.next_kafka_call.set(request_id.wrapping_add(1));
        let (tx, rx): (_, Oneshot<Vec<u8>>) = Oneshot::channel();
        self.kafka_calls.borrow_mut().insert(request_id, (to, tx));
        self.host().send_to(to, Message::KafkaRequest { request_id, reply_shard: self.id.0 }, frame);
        let answer = crate::io::timeout(timeout, rx).await;
        self.kafka_calls.borrow_mut().remove(&request_id);
        match answer {
            Some(Some(bytes)) => Ok(bytes),
            Some(None) => Err("the request was dropped".to_string()),
            None => Err(format!("no answer within {timeout:?}")),
        }
    }
}
