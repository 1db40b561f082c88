//! The native protocol (flatbuffers envelopes, `schemas/fbs/sluice.fbs`) on the shared
//! connection loop (`listener`): parses each request, checks it against the connection's
//! login and the ACLs (`security`), dispatches it to its handler over the operations in
//! `ops`, and encodes the answer. A malformed request gets an `ErrorResponse` and its
//! connection is closed; so does a request other than ApiVersions before a SASL login on a
//! SASL listener (`--listen SASL_SSL://...`).

mod admin;
mod delete_records;
mod fetch;
mod groups;
mod produce;
mod reassign;
mod security;
mod txn;

use std::rc::Rc;

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use sluice_io::net::Listener;
use sluice_schemas::wire::{self, ErrorCode, FrameHeader, RequestBody, ResponseBody, FRAME_HEADER_BYTES};
use tracing::warn;

use crate::access::Caller;
use crate::errors::{error_code, ErrorKind, NodeError};
use crate::listener::{serve, Outcome, Payload, Protocol, ResponseFrame, Server, Turn};
use crate::login::Session;
use crate::metrics::Api;

/// Serves the native protocol on `listener`, forever, with TLS when its security
/// protocol (`--listen PROTOCOL://...`) says so.
pub async fn serve_native(server: Rc<Server>, listener: Listener) {
    let config = &server.shard.config;
    let tls = config.listen_security.tls().then(|| crate::tls::ShardTls::new(config.tls.clone()));
    serve(server, listener, tls).await;
}

/// Finishes a response envelope with its body and wraps it in a frame.
pub fn respond(
    mut builder: FlatBufferBuilder<'_>,
    correlation_id: u32,
    body_type: ResponseBody,
    body: WIPOffset<UnionWIPOffset>,
    payload: Vec<Payload>,
) -> ResponseFrame {
    let envelope = wire::finish_response(&mut builder, correlation_id, body_type, body);
    let payload_bytes: usize = payload.iter().map(|p| p.bytes().len()).sum();
    let mut head = Vec::with_capacity(FRAME_HEADER_BYTES + envelope.len());
    head.extend_from_slice(&FrameHeader::encode(envelope.len(), payload_bytes));
    head.extend_from_slice(envelope);
    ResponseFrame::new(head, payload)
}

/// An `ErrorResponse` for a frame that could not be handled.
#[must_use]
pub fn error_frame(correlation_id: u32, code: ErrorCode, message: &str) -> ResponseFrame {
    let mut b = FlatBufferBuilder::new();
    let message = b.create_string(message);
    let body = wire::ErrorResponse::create(&mut b, &wire::ErrorResponseArgs { error: code, message: Some(message) });
    respond(b, correlation_id, ResponseBody::ErrorResponse, body.as_union_value(), Vec::new())
}

impl Protocol for Server {
    const HEADER_BYTES: usize = FRAME_HEADER_BYTES;
    /// The envelope's length.
    type Frame = usize;
    type Session = Session;

    fn set_tls_principal(session: &Session, principal: Rc<str>) {
        session.set_tls_principal(principal);
    }

    fn server(self: &Rc<Self>) -> Rc<Server> {
        self.clone()
    }

    /// Before a SASL login a frame is at most `kafka::PRE_LOGIN_FRAME_BYTES`, as on the
    /// Kafka listener.
    fn parse_header(&self, session: &Session, header: &[u8]) -> Result<(usize, usize), Option<ResponseFrame>> {
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        bytes.copy_from_slice(header);
        let mut max = self.shard.config.frame_bytes_max;
        if self.shard.config.listen_security.sasl() && session.user().is_none() {
            max = max.min(crate::kafka::PRE_LOGIN_FRAME_BYTES);
        }
        match FrameHeader::parse(&bytes, max) {
            Ok(h) => Ok((h.body_bytes() as usize, h.envelope_bytes as usize)),
            Err(e) => {
                warn!("refusing a frame: {e}");
                Err(Some(error_frame(0, ErrorCode::InvalidRequest, &e.to_string())))
            }
        }
    }

    async fn handle(
        self: Rc<Self>,
        session: Rc<Session>,
        envelope_bytes: usize,
        body: Vec<u8>,
        peer: Rc<str>,
        turn: Turn,
    ) -> Outcome {
        // Native requests run concurrently: the client orders what needs an order (an
        // idempotent producer's batches go out one leader turn at a time).
        drop(turn);
        self.handle_native(&session, &body, envelope_bytes, peer).await
    }
}

impl Server {
    /// Parses and runs one request (`body` is the frame after its header).
    async fn handle_native(
        self: &Rc<Self>,
        session: &Session,
        body: &[u8],
        envelope_bytes: usize,
        peer: Rc<str>,
    ) -> Outcome {
        let (envelope, payload) = body.split_at(envelope_bytes.min(body.len()));
        let request = match wire::parse_request(envelope) {
            Ok(r) => r,
            Err(e) => {
                warn!("malformed request: {e}");
                let correlation_id = match &e {
                    wire::FrameError::UnknownBody { correlation_id, .. } => *correlation_id,
                    _ => 0,
                };
                let frame = error_frame(correlation_id, ErrorCode::InvalidRequest, &format!("malformed request: {e}"));
                return Outcome { response: Some(frame), close: true };
            }
        };
        let correlation_id = request.correlation_id();
        let body_type = request.body_type();
        if let Err(why) = session.check(self.shard.config.listen_security.sasl(), security::is_login_body(body_type)) {
            warn!(%peer, "native request {} refused: {why}; closing the connection", body_type.0);
            let frame = error_frame(correlation_id, ErrorCode::IllegalSaslState, &format!("refused: {why}"));
            return Outcome { response: Some(frame), close: true };
        }
        match body_type {
            RequestBody::SaslHandshakeRequest => {
                if let Some(body) = request.body_as_sasl_handshake_request() {
                    return security::sasl_handshake(self, session, correlation_id, body);
                }
            }
            RequestBody::SaslAuthenticateRequest => {
                if let Some(body) = request.body_as_sasl_authenticate_request() {
                    return security::sasl_authenticate(self, session, correlation_id, body, &peer).await;
                }
            }
            _ => {}
        }
        let caller = Caller { principal: session.principal(), host: peer.clone() };
        if let Err(e) = security::authorize(self, &caller, &request, payload) {
            // A produce with acks=0 gets no answer, so the client would read this one as
            // another request's: the connection is closed instead, as Kafka does.
            if request.body_as_produce_request().is_some_and(|p| p.acks() == 0) {
                warn!(%peer, "an acks=0 produce refused: {e}; closing the connection");
                return Outcome { response: None, close: true };
            }
            return Outcome {
                response: Some(error_frame(correlation_id, error_code(e.kind), &e.message)),
                close: false,
            };
        }
        let started = std::time::Instant::now();
        let api = Api::of(body_type);
        let outcome = self.dispatch(&request, payload, &caller).await;
        self.shard.metrics.borrow_mut().record(api, started.elapsed());
        match outcome {
            Ok(outcome) => outcome,
            Err(e) => Outcome {
                response: Some(error_frame(correlation_id, error_code(e.kind), &e.message)),
                close: e.kind == ErrorKind::InvalidRequest,
            },
        }
    }

    async fn dispatch(
        self: &Rc<Self>,
        request: &wire::Request<'_>,
        payload: &[u8],
        caller: &Caller,
    ) -> Result<Outcome, NodeError> {
        let peer = &*caller.host;
        let cid = request.correlation_id();
        let some = |frame| Ok(Outcome { response: Some(frame), close: false });
        let missing = || NodeError::new(ErrorKind::InvalidRequest, "request body is missing");
        match request.body_type() {
            RequestBody::ApiVersionsRequest => some(admin::api_versions(cid)),
            RequestBody::MetadataRequest => {
                let body = request.body_as_metadata_request().ok_or_else(missing)?;
                self.shard.wait_for_metadata(crate::shard::METADATA_CATCH_UP_WAIT).await;
                some(admin::metadata(self, caller, cid, body))
            }
            RequestBody::CreateTopicsRequest => some(
                admin::create_topics(self, cid, request.body_as_create_topics_request().ok_or_else(missing)?).await,
            ),
            RequestBody::DeleteTopicsRequest => some(
                admin::delete_topics(self, cid, request.body_as_delete_topics_request().ok_or_else(missing)?).await,
            ),
            RequestBody::CreatePartitionsRequest => some(
                admin::create_partitions(self, cid, request.body_as_create_partitions_request().ok_or_else(missing)?)
                    .await,
            ),
            RequestBody::DescribeConfigsRequest => some(admin::describe_configs(
                self,
                caller,
                cid,
                request.body_as_describe_configs_request().ok_or_else(missing)?,
            )),
            RequestBody::AlterConfigsRequest => some(
                admin::alter_configs(self, cid, request.body_as_alter_configs_request().ok_or_else(missing)?).await,
            ),
            RequestBody::ProduceRequest => {
                let body = request.body_as_produce_request().ok_or_else(missing)?;
                let response = produce::produce(self, cid, body, payload).await?;
                Ok(Outcome { response, close: false })
            }
            RequestBody::FetchRequest => {
                some(fetch::fetch(self, cid, request.body_as_fetch_request().ok_or_else(missing)?).await)
            }
            RequestBody::ListOffsetsRequest => {
                some(fetch::list_offsets(self, cid, request.body_as_list_offsets_request().ok_or_else(missing)?).await)
            }
            RequestBody::JoinGroupRequest => {
                let body = request.body_as_join_group_request().ok_or_else(missing)?;
                some(groups::join(self, cid, body, request.client_id().unwrap_or(""), peer).await)
            }
            RequestBody::HeartbeatRequest => {
                some(groups::heartbeat(self, cid, request.body_as_heartbeat_request().ok_or_else(missing)?).await)
            }
            RequestBody::LeaveGroupRequest => {
                some(groups::leave(self, cid, request.body_as_leave_group_request().ok_or_else(missing)?).await)
            }
            RequestBody::OffsetCommitRequest => {
                some(groups::commit(self, cid, request.body_as_offset_commit_request().ok_or_else(missing)?).await)
            }
            RequestBody::OffsetFetchRequest => some(
                groups::fetch(self, caller, cid, request.body_as_offset_fetch_request().ok_or_else(missing)?).await,
            ),
            RequestBody::ListGroupsRequest => some(groups::list(self, caller, cid).await),
            RequestBody::DeleteRecordsRequest => some(
                delete_records::delete_records(
                    self,
                    cid,
                    request.body_as_delete_records_request().ok_or_else(missing)?,
                )
                .await,
            ),
            RequestBody::DescribeGroupsRequest => {
                some(groups::describe(self, cid, request.body_as_describe_groups_request().ok_or_else(missing)?).await)
            }
            RequestBody::DeleteGroupsRequest => {
                some(groups::delete(self, cid, request.body_as_delete_groups_request().ok_or_else(missing)?).await)
            }
            RequestBody::InitProducerIdRequest => {
                let body = request.body_as_init_producer_id_request().ok_or_else(missing)?;
                some(admin::init_producer_id(self, cid, body).await)
            }
            RequestBody::AddPartitionsToTxnRequest => {
                let body = request.body_as_add_partitions_to_txn_request().ok_or_else(missing)?;
                some(txn::add_partitions(self, cid, body).await)
            }
            RequestBody::EndTxnRequest => {
                some(txn::end_txn(self, cid, request.body_as_end_txn_request().ok_or_else(missing)?).await)
            }
            RequestBody::TxnOffsetCommitRequest => {
                let body = request.body_as_txn_offset_commit_request().ok_or_else(missing)?;
                some(groups::txn_commit(self, cid, body).await)
            }
            RequestBody::ListTransactionsRequest => some(txn::list_transactions(self, caller, cid).await),
            RequestBody::AbortTransactionRequest => {
                let body = request.body_as_abort_transaction_request().ok_or_else(missing)?;
                some(txn::abort_transaction(self, cid, body).await)
            }
            RequestBody::DescribeUsersRequest => {
                let body = request.body_as_describe_users_request().ok_or_else(missing)?;
                some(security::describe_users(self, caller, cid, body))
            }
            RequestBody::AlterUsersRequest => {
                let body = request.body_as_alter_users_request().ok_or_else(missing)?;
                some(security::alter_users(self, caller, cid, body).await)
            }
            RequestBody::CreateAclsRequest => {
                let body = request.body_as_create_acls_request().ok_or_else(missing)?;
                some(security::create_acls(self, caller, cid, body).await)
            }
            RequestBody::DescribeAclsRequest => {
                let body = request.body_as_describe_acls_request().ok_or_else(missing)?;
                some(security::describe_acls(self, caller, cid, body))
            }
            RequestBody::DeleteAclsRequest => {
                let body = request.body_as_delete_acls_request().ok_or_else(missing)?;
                some(security::delete_acls(self, caller, cid, body).await)
            }
            RequestBody::AlterReassignmentsRequest => {
                let body = request.body_as_alter_reassignments_request().ok_or_else(missing)?;
                some(reassign::alter(self, cid, body).await)
            }
            RequestBody::ListReassignmentsRequest => {
                let body = request.body_as_list_reassignments_request().ok_or_else(missing)?;
                some(reassign::list(self, cid, body).await)
            }
            RequestBody::UnregisterNodeRequest => {
                let body = request.body_as_unregister_node_request().ok_or_else(missing)?;
                some(reassign::unregister_node(self, cid, body).await)
            }
            RequestBody::AlterVotersRequest => {
                let body = request.body_as_alter_voters_request().ok_or_else(missing)?;
                some(reassign::alter_voters(self, cid, body).await)
            }
            RequestBody::DescribeQuorumRequest => some(reassign::describe_quorum(self, cid).await),
            other => Err(NodeError::new(ErrorKind::InvalidRequest, format!("unknown request type {}", other.0))),
        }
    }
}

/// Builds the vector of per-topic results of the admin APIs.
pub fn topic_results<'b>(
    b: &mut FlatBufferBuilder<'b>,
    results: &[(String, Result<(), NodeError>)],
) -> WIPOffset<flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<wire::TopicResult<'b>>>> {
    let items: Vec<_> = results
        .iter()
        .map(|(name, r)| {
            let name = b.create_string(name);
            let (error, message) = match r {
                Ok(()) => (ErrorCode::None, None),
                Err(e) => (error_code(e.kind), Some(b.create_string(&e.message))),
            };
            wire::TopicResult::create(b, &wire::TopicResultArgs { name: Some(name), error, message })
        })
        .collect();
    b.create_vector(&items)
}
