//! The native protocol server of one shard: accepts connections, reads frames, runs each
//! request's handler and writes the responses in request order.
//!
//! Every shard runs one (the listener has SO_REUSEPORT, so the kernel spreads
//! connections). Per connection, a reader task reads frames and starts a handler task per
//! request; a writer task writes the responses in the order the requests came, so
//! requests are pipelined up to `max-in-flight` per connection.
//!
//! Guarantees: a frame larger than `max-frame-bytes` is refused from its 8-byte header,
//! before its body is read; the bodies held by one shard never exceed
//! `request-memory-bytes`, and a body that does not arrive within `BODY_READ_TIMEOUT`
//! closes its connection (releasing its reservation); a malformed frame gets an `ErrorResponse` and its connection
//! is closed, and nothing else (other connections, stored data) is affected. Record bytes
//! in fetch responses go to the socket from the log's buffers as they are.

pub(crate) mod admin;
pub(crate) mod delete_records;
pub(crate) mod fetch;
mod groups;
mod metrics_http;
pub(crate) mod produce;

pub use metrics_http::serve_metrics;

use std::rc::Rc;

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use sluice_io::net::{Connection, Listener};
use sluice_io::rt::{self, Semaphore, TaskHandle};
use sluice_schemas::wire::{self, ErrorCode, FrameHeader, RequestBody, ResponseBody, FRAME_HEADER_BYTES};
use tracing::{debug, info, warn};

use crate::errors::{ErrorKind, NodeError};
use crate::io::IoBytes;
use crate::metrics::Api;
use crate::shard::Shard;

/// The wire error code of an error kind (Kafka's numbers).
#[must_use]
pub fn error_code(kind: ErrorKind) -> ErrorCode {
    match kind {
        ErrorKind::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
        ErrorKind::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
        ErrorKind::CorruptMessage => ErrorCode::CorruptMessage,
        ErrorKind::MessageTooLarge => ErrorCode::MessageTooLarge,
        ErrorKind::InvalidRecord => ErrorCode::InvalidRecord,
        ErrorKind::InvalidTopic => ErrorCode::InvalidTopic,
        ErrorKind::TopicAlreadyExists => ErrorCode::TopicAlreadyExists,
        ErrorKind::InvalidPartitions => ErrorCode::InvalidPartitions,
        ErrorKind::InvalidReplicationFactor => ErrorCode::InvalidReplicationFactor,
        ErrorKind::InvalidConfig => ErrorCode::InvalidConfig,
        ErrorKind::InvalidRequest => ErrorCode::InvalidRequest,
        ErrorKind::InvalidRequiredAcks => ErrorCode::InvalidRequiredAcks,
        ErrorKind::RequestTimedOut => ErrorCode::RequestTimedOut,
        ErrorKind::NotEnoughReplicas => ErrorCode::NotEnoughReplicas,
        ErrorKind::NotEnoughReplicasAfterAppend => ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorKind::NotLeaderOrFollower => ErrorCode::NotLeaderOrFollower,
        ErrorKind::LeaderNotAvailable => ErrorCode::LeaderNotAvailable,
        ErrorKind::NotController => ErrorCode::NotController,
        ErrorKind::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable,
        ErrorKind::NotCoordinator => ErrorCode::NotCoordinator,
        ErrorKind::InvalidGroupId => ErrorCode::InvalidGroupId,
        ErrorKind::UnknownMemberId => ErrorCode::UnknownMemberId,
        ErrorKind::InvalidSessionTimeout => ErrorCode::InvalidSessionTimeout,
        ErrorKind::RebalanceInProgress => ErrorCode::RebalanceInProgress,
        ErrorKind::IllegalGeneration => ErrorCode::IllegalGeneration,
        ErrorKind::InconsistentGroupProtocol => ErrorCode::InconsistentGroupProtocol,
        ErrorKind::OutOfOrderSequenceNumber => ErrorCode::OutOfOrderSequenceNumber,
        ErrorKind::NonEmptyGroup => ErrorCode::NonEmptyGroup,
        ErrorKind::GroupIdNotFound => ErrorCode::GroupIdNotFound,
        ErrorKind::Storage => ErrorCode::KafkaStorageError,
        ErrorKind::Unknown => ErrorCode::UnknownServerError,
    }
}

/// Bytes that follow a response's envelope on the wire.
pub enum Payload {
    /// Straight from the log's cache or disk buffers (no copy).
    Shared(IoBytes),
    /// Copied once, when a partition of another shard served it.
    Owned(Vec<u8>),
}

impl Payload {
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        match self {
            Payload::Shared(b) => b,
            Payload::Owned(v) => v,
        }
    }
}

/// A response ready to write: frame header and envelope, then the payload pieces.
pub struct ResponseFrame {
    head: Vec<u8>,
    payload: Vec<Payload>,
}

impl ResponseFrame {
    /// A response written as `head` then each piece of `payload`, in order.
    #[must_use]
    pub fn new(head: Vec<u8>, payload: Vec<Payload>) -> ResponseFrame {
        ResponseFrame { head, payload }
    }

    #[cfg(test)]
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    #[cfg(test)]
    pub fn payload(&self) -> &[Payload] {
        &self.payload
    }
}

/// What the handler of one request decided.
pub struct Outcome {
    /// `None` for acks=0 produce requests, which get no response.
    pub response: Option<ResponseFrame>,
    /// Close the connection after writing the response (malformed request).
    pub close: bool,
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
    ResponseFrame { head, payload }
}

/// An `ErrorResponse` for a frame that could not be handled.
#[must_use]
pub fn error_frame(correlation_id: u32, code: ErrorCode, message: &str) -> ResponseFrame {
    let mut b = FlatBufferBuilder::new();
    let message = b.create_string(message);
    let body = wire::ErrorResponse::create(&mut b, &wire::ErrorResponseArgs { error: code, message: Some(message) });
    respond(b, correlation_id, ResponseBody::ErrorResponse, body.as_union_value(), Vec::new())
}

/// Shared by the connections of one shard, of both protocols.
pub struct Server {
    pub shard: Rc<Shard>,
    memory: Rc<Semaphore>,
}

/// A wire protocol served on a listener: how its frames are delimited, and how one
/// request is handled. The connection loop (`serve`) is the same for every protocol:
/// pipelined requests up to `max-in-flight`, answered in order, bodies within the
/// shard's request memory.
pub(crate) trait Protocol: 'static {
    /// Bytes of the frame header, which gives the body's length.
    const HEADER_BYTES: usize;
    /// What the handler needs from the header.
    type Frame: 'static;
    fn server(self: &Rc<Self>) -> Rc<Server>;
    /// The body's length and what the handler needs from the header; `Err` refuses the
    /// frame: its response, if any, is written and the connection closed.
    fn parse_header(&self, header: &[u8]) -> Result<(usize, Self::Frame), Option<ResponseFrame>>;
    /// Runs one request.
    async fn handle(self: Rc<Self>, frame: Self::Frame, body: Vec<u8>, peer: Rc<str>) -> Outcome;
}

/// Serves the native protocol on `listener`, forever.
pub async fn serve_native(server: Rc<Server>, listener: Listener) {
    serve(server, listener).await;
}

/// How long a request's body may take to arrive once its header announced it.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Accepts connections of one protocol, forever.
pub(crate) async fn serve<P: Protocol>(protocol: Rc<P>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let protocol = protocol.clone();
                crate::io::spawn_detached(async move {
                    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                    debug!(%peer, shard = protocol.server().shard.id.0, "connection opened");
                    connection(protocol, stream).await;
                    debug!(%peer, "connection closed");
                });
            }
            Err(e) => {
                warn!("accept failed: {e}");
                crate::io::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection<P: Protocol>(protocol: Rc<P>, stream: Connection) {
    let _ = stream.set_nodelay(true);
    let peer_address: Rc<str> = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default().into();
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let server = protocol.server();
    let in_flight = server.shard.config.in_flight_per_connection_max;
    let (tx, rx) = rt::local_channel::<TaskHandle<Outcome>>(in_flight);
    let writer_task = rt::spawn(async move {
        while let Some(handle) = rx.recv().await {
            let Some(outcome) = handle.await else { break };
            if let Some(response) = outcome.response {
                if write_response(&mut writer, &response).await.is_err() {
                    break;
                }
            }
            if outcome.close {
                break;
            }
        }
        let _ = writer.close().await;
    });
    let mut header = vec![0u8; P::HEADER_BYTES];
    loop {
        if reader.read_exact(&mut header).await.is_err() {
            break; // closed by the peer
        }
        let (body_bytes, frame) = match protocol.parse_header(&header) {
            Ok(parsed) => parsed,
            Err(refusal) => {
                let task = rt::spawn(async move { Outcome { response: refusal, close: true } }).detach();
                let _ = tx.send(task).await;
                break;
            }
        };
        // The body's memory is reserved before it is read: a shard never holds more
        // than request-memory-bytes of request bodies (and every body fits, since the
        // config keeps request-memory-bytes at least max-frame-bytes).
        let Ok(permit) = server.memory.clone().acquire_static_permit(body_bytes as u64).await else {
            break;
        };
        // A peer that announces a body and does not send it would hold its reservation:
        // it gets BODY_READ_TIMEOUT, then the connection is closed.
        let mut body = vec![0u8; body_bytes];
        match crate::io::timeout(BODY_READ_TIMEOUT, reader.read_exact(&mut body)).await {
            Some(Ok(())) => {}
            Some(Err(_)) => break,
            None => {
                warn!(peer = %peer_address, bytes = body_bytes, "a request body did not arrive in time; closing the connection");
                break;
            }
        }
        let protocol = protocol.clone();
        let peer = peer_address.clone();
        let task = rt::spawn(async move {
            let outcome = protocol.handle(frame, body, peer).await;
            drop(permit);
            outcome
        })
        .detach();
        if tx.send(task).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer_task.await;
}

impl Protocol for Server {
    const HEADER_BYTES: usize = FRAME_HEADER_BYTES;
    /// The envelope's length.
    type Frame = usize;

    fn server(self: &Rc<Self>) -> Rc<Server> {
        self.clone()
    }

    fn parse_header(&self, header: &[u8]) -> Result<(usize, usize), Option<ResponseFrame>> {
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        bytes.copy_from_slice(header);
        match FrameHeader::parse(&bytes, self.shard.config.frame_bytes_max) {
            Ok(h) => Ok((h.body_bytes() as usize, h.envelope_bytes as usize)),
            Err(e) => {
                warn!("refusing a frame: {e}");
                Err(Some(error_frame(0, ErrorCode::InvalidRequest, &e.to_string())))
            }
        }
    }

    async fn handle(self: Rc<Self>, envelope_bytes: usize, body: Vec<u8>, peer: Rc<str>) -> Outcome {
        self.handle_native(&body, envelope_bytes, &peer).await
    }
}

impl Server {
    #[must_use]
    pub fn new(shard: Rc<Shard>) -> Rc<Server> {
        let memory = Rc::new(Semaphore::new(shard.config.request_memory_bytes_max));
        Rc::new(Server { shard, memory })
    }

    /// Parses and runs one request (`body` is the frame after its header).
    async fn handle_native(self: &Rc<Self>, body: &[u8], envelope_bytes: usize, peer: &str) -> Outcome {
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
        let started = std::time::Instant::now();
        let api = Api::of(request.body_type());
        let outcome = self.dispatch(&request, payload, peer).await;
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
        peer: &str,
    ) -> Result<Outcome, NodeError> {
        let cid = request.correlation_id();
        let some = |frame| Ok(Outcome { response: Some(frame), close: false });
        let missing = || NodeError::new(ErrorKind::InvalidRequest, "request body is missing");
        match request.body_type() {
            RequestBody::ApiVersionsRequest => some(admin::api_versions(cid)),
            RequestBody::MetadataRequest => {
                some(admin::metadata(self, cid, request.body_as_metadata_request().ok_or_else(missing)?))
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
            RequestBody::OffsetFetchRequest => {
                some(groups::fetch(self, cid, request.body_as_offset_fetch_request().ok_or_else(missing)?).await)
            }
            RequestBody::ListGroupsRequest => some(groups::list(self, cid).await),
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
            other => Err(NodeError::new(ErrorKind::InvalidRequest, format!("unknown request type {}", other.0))),
        }
    }
}

async fn write_response<W: futures_lite::AsyncWrite + Unpin>(
    writer: &mut W,
    response: &ResponseFrame,
) -> std::io::Result<()> {
    writer.write_all(&response.head).await?;
    for piece in &response.payload {
        writer.write_all(piece.bytes()).await?;
    }
    writer.flush().await
}

/// Binds the shard's listener (SO_REUSEPORT: every shard binds the same address).
pub fn bind(address: std::net::SocketAddr) -> std::io::Result<Listener> {
    let listener = Listener::bind(address)?;
    info!(address = %address, "listening");
    Ok(listener)
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
