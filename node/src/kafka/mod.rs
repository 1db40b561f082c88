//! The Kafka wire-protocol listener: existing Kafka clients and tools (librdkafka and
//! everything built on it, the Java client, kafka-python, kcat) work against the node.
//!
//! It is a second `Protocol` on the same connection loop as the native one
//! (`crate::listener::serve`), and its handlers call the same operations: `append_all` for
//! Produce, `fetch_all` for Fetch, `run_admin` for topic changes, and the group
//! coordinator for groups and offsets. Only decoding requests and encoding responses
//! live here. Message encodings come from the kafka-protocol crate (generated from
//! Kafka's own message definitions), except the Fetch response, which is written by
//! `fetch_response` so that record bytes go to the socket from the log's buffers as
//! they are; a test checks it against the crate's decoder for every version.
//!
//! Versions: the ranges of Kafka 2.8 (`APIS`) for the APIs served, the last release
//! before topic ids in Fetch; Produce is advertised from v0 because librdkafka derives
//! features from it, but v0-v2 (message formats v0 and v1, which Sluice does not store)
//! close the connection with a log line, as Kafka does for a version it does not serve.

mod acls;
mod admin;
pub mod auth;
mod data;
mod fetch_response;
mod fetch_sessions;
mod groups;
mod legacy;
mod reassign;
mod txn;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_io::net::Listener;
use tracing::warn;

use sluice_schemas::wire::ErrorCode;

use crate::errors::{ErrorKind, NodeError};
use crate::listener::{Outcome, Protocol, ResponseFrame, Server, Turn};
use crate::metrics::Api;

/// The APIs served and their versions: Kafka 3.9's ranges, except Produce v0 to v2 and
/// Fetch v0 to v3, which carry message formats v0 and v1 (Sluice stores RecordBatch v2
/// only and does not convert), and with Kafka 4.0's transactions v2 versions (Produce
/// v12, EndTxn v5, TxnOffsetCommit v5; `admin::TRANSACTION_VERSION`). Versions the
/// kafka-protocol crate no longer has (Kafka 4.0 removed them) go through `legacy`.
pub const APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 0, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeLogDirs, 0, 4),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::WriteTxnMarkers, 0, 1),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // Kafka 4.0's ranges: v0 (before prefixed patterns) is gone from it and the crate.
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// Kafka's UNKNOWN_TOPIC_ID: a request named a topic by an id no topic has (the
/// native protocol names topics by name only, so its error codes stop short of it).
pub const UNKNOWN_TOPIC_ID: i16 = 100;

/// The largest frame a SASL listener reads before the connection logged in (Kafka's
/// `sasl.server.max.receive.size` default).
pub const PRE_LOGIN_FRAME_BYTES: u32 = 512 << 10;

/// The oldest Produce version decoded: v3 carries RecordBatch v2, what the log stores.
pub const PRODUCE_VERSION_MIN: i16 = 3;

/// ApiVersions and the login requests: the only ones a SASL listener serves before a login.
fn is_login_api(api: ApiKey) -> bool {
    matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
}

/// The version range served for `key`.
#[must_use]
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    APIS.iter().find(|(k, _, _)| *k == key).map(|(_, min, max)| (*min, *max))
}

/// Kafka's error code for an error.
///
/// One departure: a produce whose idempotent batch starts past the next expected
/// sequence (an earlier batch is missing here) gets NOT_LEADER_OR_FOLLOWER, retriable
/// and "not stored", rather than OUT_OF_ORDER_SEQUENCE_NUMBER. librdkafka answers that
/// code, for a batch behind a failed one, by bumping the producer's epoch and
/// renumbering every unacknowledged message of every partition, including ones it was
/// told were not stored (NOT_LEADER_OR_FOLLOWER after a leader change) that a new leader
/// had in fact replicated: those are then stored twice (librdkafka issue 4953; the chaos
/// test in `tests/tests/cluster.rs` found it). Retried in order, the missing batch goes
/// first and the gap closes without an epoch bump.
#[must_use]
pub fn code(e: &NodeError) -> i16 {
    if e.kind == ErrorKind::SequenceGap {
        return ErrorCode::NotLeaderOrFollower.0;
    }
    crate::errors::error_code(e.kind).0
}

/// Kafka's error code of a result.
pub fn code_of<T>(r: &Result<T, NodeError>) -> i16 {
    r.as_ref().err().map_or(ErrorCode::None.0, code)
}

pub(crate) fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Partition indexes are i32 on Kafka's wire; a negative one names no partition.
pub(crate) fn partition_index(p: i32) -> u32 {
    u32::try_from(p).unwrap_or(u32::MAX)
}

/// A partition index for Kafka's wire; one that named no partition goes back as -1.
pub(crate) fn index_of(p: u32) -> i32 {
    i32::try_from(p).unwrap_or(-1)
}

/// One request's header fields the handlers need, and who sent it.
pub struct Request {
    pub key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
    /// Who sent it, which the ACLs are checked for.
    pub caller: crate::access::Caller,
    /// The name of the listener it came through (Metadata answers with every node's
    /// listener of that name).
    pub listener: Rc<str>,
}

impl Request {
    /// Encodes `body` as this request's response.
    pub fn respond(&self, body: &impl Encodable) -> Result<ResponseFrame, NodeError> {
        self.respond_as(self.version, body)
    }

    /// Encodes `body` as this request's response in the layout of `version` (an old
    /// version whose layout a later one kept).
    pub fn respond_as(&self, version: i16, body: &impl Encodable) -> Result<ResponseFrame, NodeError> {
        let header_version = self.key.response_header_version(self.version);
        encode_response(self.correlation_id, header_version, |out| body.encode(out, version).map_err(|e| e.to_string()))
    }

    /// Sends a body `legacy` encoded.
    pub fn respond_encoded(&self, body: &legacy::Encoded) -> Result<ResponseFrame, NodeError> {
        let header_version = self.key.response_header_version(self.version);
        encode_response(self.correlation_id, header_version, |out| {
            out.extend_from_slice(&body.0);
            Ok(())
        })
    }
}

fn encode_response(
    correlation_id: i32,
    header_version: i16,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<ResponseFrame, NodeError> {
    let mut out: Vec<u8> = vec![0; 4];
    let failed = |e: String| NodeError::new(ErrorKind::Unknown, format!("encoding a response: {e}"));
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, header_version)
        .map_err(|e| failed(e.to_string()))?;
    body(&mut out).map_err(failed)?;
    let size = u32::try_from(out.len() - 4).map_err(|_| NodeError::new(ErrorKind::Unknown, "response too large"))?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(ResponseFrame::new(out, Vec::new()))
}

/// Decodes a request body of the request's version.
pub(crate) fn decode<T: Decodable>(request: &Request, body: &mut Bytes) -> Result<T, NodeError> {
    T::decode(body, request.version).map_err(|e| {
        NodeError::new(
            ErrorKind::InvalidRequest,
            format!("malformed {:?} v{} request: {e}", request.key, request.version),
        )
    })
}

/// The Kafka protocol on one shard, over the shard's `Server`.
pub struct KafkaServer {
    server: Rc<Server>,
    /// This shard's fetch sessions (KIP-227).
    sessions: fetch_sessions::FetchSessions,
    /// The partitions that joined transactions v2 transactions through this shard.
    joined: txn::Joined,
    /// How the listener's connections are secured.
    security: crate::config::SecurityProtocol,
    /// The listener's name: Metadata answers with every node's listener of this name.
    name: Rc<str>,
}

/// A Kafka request another node made of this one over the cluster link
/// (`shard::kafka_calls`: `frame` is its header and body), run as the Kafka listener
/// would run it, as `acl::INTER_NODE`; its answer (response header and body). Only the
/// requests nodes make of each other are served: WriteTxnMarkers and AddPartitionsToTxn.
pub async fn serve_inter_node(
    shard: &Rc<crate::shard::Shard>,
    from: crate::replication::NodeId,
    frame: Vec<u8>,
) -> Option<Vec<u8>> {
    let mut body = Bytes::from(frame);
    let (key, version) =
        (body.first_chunk::<4>().map(|b| (i16::from_be_bytes([b[0], b[1]]), i16::from_be_bytes([b[2], b[3]]))))?;
    let api =
        ApiKey::try_from(key).ok().filter(|k| matches!(k, ApiKey::WriteTxnMarkers | ApiKey::AddPartitionsToTxn))?;
    let header = RequestHeader::decode(&mut body, api.request_header_version(version)).ok()?;
    let request = Request {
        key: api,
        version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
        caller: crate::access::Caller {
            principal: crate::acl::INTER_NODE.into(),
            host: format!("node {}", from.0).into(),
        },
        listener: shard.config.kafka_listeners.first().map_or_else(|| "".into(), |l| l.name.as_str().into()),
    };
    let server = Server::new(shard.clone());
    let response = match api {
        ApiKey::WriteTxnMarkers => {
            request.respond(&txn::write_txn_markers(&server, &request, decode(&request, &mut body).ok()?).await)
        }
        _ => request.respond(&txn::add_partitions(&server, &request, decode(&request, &mut body).ok()?).await),
    };
    let frame = response.ok()?;
    // The frame's first 4 bytes are its size on a Kafka connection.
    Some(frame.into_bytes().split_off(4))
}

/// Serves the Kafka protocol on `listener`, the Kafka listener `config`, forever; over
/// TLS when its security protocol says SSL or SASL_SSL, with SASL logins first when it
/// says SASL_PLAINTEXT or SASL_SSL (`auth`).
pub async fn serve(server: Rc<Server>, listener: Listener, config: crate::config::KafkaListener) {
    let security = config.security;
    let kafka = KafkaServer {
        server,
        sessions: fetch_sessions::FetchSessions::default(),
        joined: txn::Joined::default(),
        security,
        name: config.name.into(),
    };
    let tls = security.tls().then(|| crate::tls::ShardTls::new(kafka.server.shard.config.tls.clone()));
    crate::listener::serve(Rc::new(kafka), listener, tls).await;
}

impl Protocol for KafkaServer {
    const HEADER_BYTES: usize = 4;
    type Frame = ();
    type Session = auth::Session;

    fn set_tls_principal(session: &auth::Session, principal: Rc<str>) {
        session.set_tls_principal(principal);
    }

    fn server(self: &Rc<Self>) -> Rc<Server> {
        self.server.clone()
    }

    /// Before a SASL login a frame is at most `PRE_LOGIN_FRAME_BYTES` (Kafka's
    /// `sasl.server.max.receive.size`): a client that has not logged in cannot make the
    /// node read (and reserve memory for) a large body.
    fn parse_header(&self, session: &auth::Session, header: &[u8]) -> Result<(usize, ()), Option<ResponseFrame>> {
        let mut size = [0u8; 4];
        size.copy_from_slice(header);
        let size = i32::from_be_bytes(size);
        let mut max = self.server.shard.config.frame_bytes_max;
        if self.security.sasl() && session.user().is_none() {
            max = max.min(PRE_LOGIN_FRAME_BYTES);
        }
        // Raw SASL tokens (after a v0 handshake) may be shorter than a request header;
        // `handle` checks the size of everything else.
        match u32::try_from(size) {
            Ok(s) if s <= max => Ok((s as usize, ())),
            _ => {
                warn!("refusing a Kafka request of {size} bytes (at most {max}); closing the connection");
                Err(None)
            }
        }
    }

    /// One connection's requests run in order, as Kafka runs them (it reads a
    /// connection's next request only once the last one is answered): each starts once
    /// the one before it is done, so a fetch of committed offsets sees a commit sent
    /// before it, and a group request sees the one before. Produce and Fetch let the next
    /// request start as soon as they start: a produce's appends are queued on their logs
    /// in request order before anything after it runs (so an idempotent producer's
    /// pipelined batches are stored in order), and neither its wait for the in-sync
    /// replicas nor a fetch's long poll holds the connection up.
    async fn handle(
        self: Rc<Self>,
        session: Rc<auth::Session>,
        _frame: (),
        body: Vec<u8>,
        peer: Rc<str>,
        mut turn: Turn,
    ) -> Outcome {
        turn.wait().await;
        let close = Outcome { response: None, close: true };
        if self.security.sasl() && session.expects_raw() {
            return self.sasl_raw_token(&session, &body, &peer).await;
        }
        if body.len() < 8 {
            warn!(%peer, "a Kafka request of {} bytes, shorter than a request header; closing the connection", body.len());
            return close;
        }
        let mut body = Bytes::from(body);
        let key = i16::from_be_bytes([body[0], body[1]]);
        let version = i16::from_be_bytes([body[2], body[3]]);
        let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        let Ok(api) = ApiKey::try_from(key) else {
            warn!(%peer, "Kafka request with unknown API key {key}; closing the connection");
            return close;
        };
        let Some((min, max)) = supported(api) else {
            warn!(%peer, "Kafka API {api:?} is not served; closing the connection");
            return close;
        };
        if !(min..=max).contains(&version) {
            if api == ApiKey::ApiVersions {
                // Kafka's answer to an ApiVersions it cannot parse: v0, with the ranges.
                let response = admin::api_versions(ErrorCode::UnsupportedVersion.0);
                let body = |out: &mut Vec<u8>| response.encode(out, 0).map_err(|e| e.to_string());
                return match encode_response(correlation_id, 0, body) {
                    Ok(frame) => Outcome { response: Some(frame), close: false },
                    Err(_) => close,
                };
            }
            warn!(%peer, "Kafka {api:?} v{version} is not served (v{min} to v{max}); closing the connection");
            return close;
        }
        if let Err(why) = session.check(self.security.sasl(), is_login_api(api)) {
            warn!(%peer, "Kafka {api:?} refused: {why}; closing the connection");
            return close;
        }
        if api == ApiKey::Produce && version < PRODUCE_VERSION_MIN {
            warn!(
                %peer,
                "Kafka Produce v{version} carries message format v0/v1, which Sluice does not store \
                 (Produce v3+ with RecordBatch v2 is needed); closing the connection"
            );
            return close;
        }
        let header = match RequestHeader::decode(&mut body, api.request_header_version(version)) {
            Ok(h) => h,
            Err(e) => {
                warn!(%peer, "malformed Kafka request header: {e}; closing the connection");
                return close;
            }
        };
        let principal = session.principal();
        let request = Request {
            key: api,
            version,
            correlation_id,
            client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
            caller: crate::access::Caller { principal, host: peer.clone() },
            listener: self.name.clone(),
        };
        if matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
            return self.sasl_request(&session, &request, body, &peer).await;
        }
        if matches!(api, ApiKey::Produce | ApiKey::Fetch) {
            turn.release();
        }
        let started = std::time::Instant::now();
        let outcome = self.dispatch(&request, &mut body, &peer).await;
        drop(turn);
        self.server.shard.metrics.borrow_mut().record(metrics_api(api), started.elapsed());
        match outcome {
            Ok(response) => Outcome { response, close: false },
            Err(e) => {
                warn!(%peer, "Kafka {api:?} v{version}: {e}; closing the connection");
                close
            }
        }
    }
}

impl KafkaServer {
    /// Runs one request. `Ok(None)`: no response (Produce with acks=0). `Err`: the
    /// request could not be decoded; the connection is closed, as Kafka does.
    async fn dispatch(&self, r: &Request, body: &mut Bytes, peer: &str) -> Result<Option<ResponseFrame>, NodeError> {
        let server = &self.server;
        let frame = match r.key {
            ApiKey::ApiVersions => r.respond(&admin::api_versions(ErrorCode::None.0))?,
            _ if legacy::is_legacy(r.key, r.version) => return self.dispatch_legacy(r, body).await.map(Some),
            ApiKey::Metadata => {
                let request = decode(r, body)?;
                server.shard.wait_for_metadata(crate::shard::METADATA_CATCH_UP_WAIT).await;
                let missing = admin::to_auto_create(server, r, &request);
                crate::ops::admin::auto_create(&server.shard, missing).await;
                r.respond(&admin::metadata(server, r, request))?
            }
            ApiKey::CreateTopics => r.respond(&admin::create_topics(server, r, decode(r, body)?).await)?,
            ApiKey::DeleteTopics => r.respond(&admin::delete_topics(server, r, decode(r, body)?).await)?,
            ApiKey::CreatePartitions => r.respond(&admin::create_partitions(server, r, decode(r, body)?).await)?,
            ApiKey::DescribeConfigs => r.respond(&admin::describe_configs(server, r, decode(r, body)?))?,
            ApiKey::AlterConfigs => r.respond(&admin::alter_configs(server, r, decode(r, body)?).await)?,
            ApiKey::IncrementalAlterConfigs => {
                r.respond(&admin::incremental_alter_configs(server, r, decode(r, body)?).await)?
            }
            ApiKey::DeleteRecords => r.respond(&data::delete_records(server, r, decode(r, body)?).await)?,
            ApiKey::DescribeProducers => r.respond(&data::describe_producers(server, r, decode(r, body)?).await)?,
            ApiKey::DescribeCluster => r.respond(&admin::describe_cluster(server, r, decode(r, body)?))?,
            // v0 has v1's layout (the crate starts at v1).
            ApiKey::DescribeLogDirs if r.version == 0 => {
                let request = kafka_protocol::messages::DescribeLogDirsRequest::decode(body, 1).map_err(|e| {
                    NodeError::new(ErrorKind::InvalidRequest, format!("malformed DescribeLogDirs v0 request: {e}"))
                })?;
                r.respond_as(1, &admin::describe_log_dirs(server, r, request).await)?
            }
            ApiKey::DescribeLogDirs => r.respond(&admin::describe_log_dirs(server, r, decode(r, body)?).await)?,
            ApiKey::InitProducerId => r.respond(&admin::init_producer_id(server, r, decode(r, body)?).await)?,
            ApiKey::FindCoordinator => {
                let request = decode(r, body)?;
                admin::create_txn_topic_for(server, r, &request).await;
                r.respond(&admin::find_coordinator(server, r, request))?
            }
            ApiKey::Produce => return data::produce(server, &self.joined, r, decode(r, body)?).await,
            ApiKey::Fetch => data::fetch(server, &self.sessions, r, decode(r, body)?).await,
            ApiKey::ListOffsets => r.respond(&data::list_offsets(server, r, decode(r, body)?).await)?,
            ApiKey::JoinGroup => r.respond(&groups::join(server, r, decode(r, body)?, peer).await)?,
            ApiKey::SyncGroup => r.respond(&groups::sync(server, r, decode(r, body)?).await)?,
            ApiKey::Heartbeat => r.respond(&groups::heartbeat(server, r, decode(r, body)?).await)?,
            ApiKey::LeaveGroup => r.respond(&groups::leave(server, r, decode(r, body)?).await)?,
            ApiKey::OffsetCommit => r.respond(&groups::commit(server, r, decode(r, body)?).await)?,
            // v0 has v1's layout (the crate starts at v1).
            ApiKey::OffsetFetch if r.version == 0 => {
                let request = kafka_protocol::messages::OffsetFetchRequest::decode(body, 1).map_err(|e| {
                    NodeError::new(ErrorKind::InvalidRequest, format!("malformed OffsetFetch v0 request: {e}"))
                })?;
                r.respond_as(1, &groups::fetch_offsets(server, r, request).await)?
            }
            ApiKey::OffsetFetch => r.respond(&groups::fetch_offsets(server, r, decode(r, body)?).await)?,
            ApiKey::DescribeGroups => r.respond(&groups::describe(server, r, decode(r, body)?).await)?,
            ApiKey::ListGroups => r.respond(&groups::list(server, r, decode(r, body)?).await)?,
            ApiKey::DeleteGroups => r.respond(&groups::delete(server, r, decode(r, body)?).await)?,
            ApiKey::OffsetDelete => r.respond(&groups::delete_offsets(server, r, decode(r, body)?).await)?,
            ApiKey::ElectLeaders => r.respond(&admin::elect_leaders(server, r, decode(r, body)?).await)?,
            ApiKey::AlterPartitionReassignments => r.respond(&reassign::alter(server, r, decode(r, body)?).await)?,
            ApiKey::ListPartitionReassignments => r.respond(&reassign::list(server, r, decode(r, body)?).await)?,
            ApiKey::UnregisterBroker => r.respond(&reassign::unregister_broker(server, r, decode(r, body)?).await)?,
            ApiKey::AddPartitionsToTxn => r.respond(&txn::add_partitions(server, r, decode(r, body)?).await)?,
            ApiKey::AddOffsetsToTxn => r.respond(&txn::add_offsets(server, r, decode(r, body)?).await)?,
            ApiKey::EndTxn => r.respond(&txn::end_txn(server, r, decode(r, body)?).await)?,
            ApiKey::WriteTxnMarkers => r.respond(&txn::write_txn_markers(server, r, decode(r, body)?).await)?,
            ApiKey::TxnOffsetCommit => r.respond(&txn::txn_offset_commit(server, r, decode(r, body)?).await)?,
            ApiKey::DescribeTransactions => {
                r.respond(&txn::describe_transactions(server, r, decode(r, body)?).await)?
            }
            ApiKey::ListTransactions => r.respond(&txn::list_transactions(server, r, decode(r, body)?).await)?,
            ApiKey::DescribeUserScramCredentials => r.respond(&auth::describe_users(server, r, decode(r, body)?))?,
            ApiKey::AlterUserScramCredentials => r.respond(&auth::alter_users(server, r, decode(r, body)?).await)?,
            ApiKey::CreateAcls => r.respond(&acls::create_acls(server, r, decode(r, body)?).await)?,
            ApiKey::DescribeAcls => r.respond(&acls::describe_acls(server, r, decode(r, body)?))?,
            ApiKey::DeleteAcls => r.respond(&acls::delete_acls(server, r, decode(r, body)?).await)?,
            ApiKey::ConsumerGroupDescribe => {
                r.respond(&groups::consumer_group_describe(server, r, decode(r, body)?).await)?
            }
            ApiKey::ConsumerGroupHeartbeat => {
                r.respond(&groups::consumer_heartbeat(server, r, decode(r, body)?, peer).await)?
            }
            other => {
                return Err(NodeError::new(ErrorKind::InvalidRequest, format!("API {other:?} is not served")));
            }
        };
        Ok(Some(frame))
    }
}

impl KafkaServer {
    /// The versions `legacy` decodes and encodes, through the same handlers.
    async fn dispatch_legacy(&self, r: &Request, body: &mut Bytes) -> Result<ResponseFrame, NodeError> {
        let server = &self.server;
        match r.key {
            ApiKey::ListOffsets => {
                let (request, max_offsets) = legacy::list_offsets_v0(body)?;
                let response = data::list_offsets(server, r, request).await;
                r.respond_encoded(&legacy::list_offsets_v0_response(&response, &max_offsets))
            }
            ApiKey::OffsetCommit => {
                let response = groups::commit(server, r, legacy::offset_commit_v0_v1(body, r.version)?).await;
                // v0 to v2 answer alike, and the crate has v2.
                r.respond_as(2, &response)
            }
            ApiKey::CreateTopics => {
                let response = admin::create_topics(server, r, legacy::create_topics_v0_v1(body, r.version)?).await;
                r.respond_encoded(&legacy::create_topics_v0_v1_response(&response, r.version))
            }
            ApiKey::DeleteTopics => {
                let response = admin::delete_topics(server, r, legacy::delete_topics_v0(body)?).await;
                r.respond_encoded(&legacy::delete_topics_v0_response(&response))
            }
            ApiKey::DescribeConfigs => {
                let response = admin::describe_configs(server, r, legacy::describe_configs_v0(body)?);
                r.respond_encoded(&legacy::describe_configs_v0_response(&response))
            }
            other => Err(NodeError::new(ErrorKind::Unknown, format!("no legacy codec for {other:?} v{}", r.version))),
        }
    }
}

fn metrics_api(key: ApiKey) -> Api {
    match key {
        ApiKey::ApiVersions => Api::ApiVersions,
        ApiKey::Metadata => Api::Metadata,
        ApiKey::CreateTopics => Api::CreateTopics,
        ApiKey::DeleteTopics => Api::DeleteTopics,
        ApiKey::CreatePartitions => Api::CreatePartitions,
        ApiKey::DescribeConfigs => Api::DescribeConfigs,
        ApiKey::Produce => Api::Produce,
        ApiKey::Fetch => Api::Fetch,
        ApiKey::ListOffsets => Api::ListOffsets,
        _ => Api::Other,
    }
}
