//! One connection to a node (TCP, or TLS over TCP), with pipelined requests.
//!
//! `connect` secures the connection as its `Security` says before returning it: the TLS
//! handshake, then the SASL login (see `security`). A login with a lifetime makes the
//! connection count as broken shortly before the login ends, so its owner opens a new
//! one (which logs in again) instead of logging in again on this one.
//!
//! Requests are written in order under a lock and their reply slots queued in the same
//! order; a reader task hands each response to the next slot (the node answers in
//! request order) after checking its correlation id. At most `max_in_flight` requests
//! wait for replies at once. When the connection fails, every waiting request gets the
//! error and the connection refuses new ones (the caller reconnects).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use sluice_schemas::wire::{self, FrameHeader, RequestBody, FRAME_HEADER_BYTES};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};

use crate::error::{ClientError, Result};
use crate::security::{self, Security};

/// The halves of a connection's stream: a TCP socket's, or a TLS stream's. Boxing keeps
/// vectored writes: `Box` forwards `poll_write_vectored`, so a TCP socket's half still
/// writes a frame's head and its payload's pieces in one writev (no copy), and a TLS
/// stream's takes them into one TLS record where they fit.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// The largest response frame the client reads (a fetch asks for at most its
/// fetch.max.bytes plus envelopes).
pub const RESPONSE_FRAME_BYTES_MAX: u32 = 256 << 20;

/// A response frame: its envelope and payload.
#[derive(Debug)]
pub struct Frame {
    body: Vec<u8>,
    envelope_bytes: usize,
}

impl Frame {
    /// The frame whose header is `header` and whose body (envelope, then payload) was read
    /// after it; refused when the body is not the size the header gives. The envelope is
    /// verified by `response`.
    pub fn new(header: &FrameHeader, body: Vec<u8>) -> Result<Frame> {
        header.split(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Frame { body, envelope_bytes: header.envelope_bytes as usize })
    }

    /// The verified response envelope.
    pub fn response(&self) -> Result<wire::Response<'_>> {
        wire::parse_response(&self.body[..self.envelope_bytes]).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// The bytes after the envelope (record batches of a fetch).
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.body[self.envelope_bytes..]
    }
}

struct Pending {
    slots: VecDeque<(u32, oneshot::Sender<Result<Frame>>)>,
    failed: Option<ClientError>,
}

struct Writer {
    half: WriteHalf,
    next_correlation_id: u32,
}

pub struct Connection {
    address: String,
    client_id: String,
    writer: tokio::sync::Mutex<Writer>,
    pending: Arc<Mutex<Pending>>,
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
    /// The task reading responses, stopped when the connection is dropped (a TLS stream's
    /// halves share the socket: dropping the writer alone would not close it).
    reader: tokio::task::AbortHandle,
    /// When the SASL login's lifetime is nearly over: from then on the connection counts
    /// as broken.
    renew_at: Option<Instant>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({})", self.address)
    }
}

impl Connection {
    /// Connects to `address` (HOST:PORT), secured as `security` says: TLS, then the SASL
    /// login, before the connection is returned. A login the node refuses is
    /// `ClientError::Authentication`.
    pub async fn connect(
        address: &str,
        client_id: &str,
        max_in_flight: usize,
        request_timeout: Duration,
        security: &Security,
    ) -> Result<Connection> {
        let connect = tokio::time::timeout(request_timeout, TcpStream::connect(address)).await;
        let stream = match connect {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ClientError::Connect { address: address.to_string(), message: e.to_string() }),
            Err(_) => {
                return Err(ClientError::Connect { address: address.to_string(), message: "timed out".into() });
            }
        };
        let _ = stream.set_nodelay(true);
        let (read, write): (ReadHalf, WriteHalf) = match &security.tls {
            None => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            Some(tls) => {
                let stream = security::tls_handshake(tls, address, stream, request_timeout).await?;
                let (read, write) = tokio::io::split(stream);
                (Box::new(read), Box::new(write))
            }
        };
        let pending = Arc::new(Mutex::new(Pending { slots: VecDeque::new(), failed: None }));
        let reader = tokio::spawn(read_responses(read, pending.clone(), address.to_string())).abort_handle();
        let mut connection = Connection {
            address: address.to_string(),
            client_id: client_id.to_string(),
            writer: tokio::sync::Mutex::new(Writer { half: write, next_correlation_id: 1 }),
            pending,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            request_timeout,
            reader,
            renew_at: None,
        };
        if let Some(sasl) = &security.sasl {
            let started = Instant::now();
            let lifetime = security::login(&connection, sasl).await?;
            connection.renew_at = lifetime.map(|l| security::renew_at(started, l));
        }
        Ok(connection)
    }

    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the connection has failed, or its login is about to end (the caller
    /// should reconnect).
    #[must_use]
    pub fn is_broken(&self) -> bool {
        self.renew_at.is_some_and(|at| Instant::now() >= at)
            || self.pending.lock().map(|p| p.failed.is_some()).unwrap_or(true)
    }

    /// Sends a request whose body `build` writes, followed by `payload`, and waits for
    /// its response (or `request.timeout.ms`).
    pub async fn request(
        &self,
        body_type: RequestBody,
        build: impl FnOnce(&mut FlatBufferBuilder<'static>) -> WIPOffset<UnionWIPOffset>,
        payload: &[&[u8]],
    ) -> Result<Frame> {
        self.start_request(body_type, build, payload).await?.response().await
    }

    /// `request` in two steps: writes the request (once one of max.in.flight slots is
    /// free) and returns the wait for its response. A caller that must keep the order of
    /// its requests on the wire writes them one after the other and waits for the
    /// responses together.
    pub async fn start_request(
        &self,
        body_type: RequestBody,
        build: impl FnOnce(&mut FlatBufferBuilder<'static>) -> WIPOffset<UnionWIPOffset>,
        payload: &[&[u8]],
    ) -> Result<PendingResponse<'_>> {
        let permit = self.in_flight.acquire().await.map_err(|_| ClientError::Protocol("connection closed".into()))?;
        let receiver = self.send(body_type, build, payload, true).await?;
        let Some(receiver) = receiver else { unreachable!("a reply slot was asked for") };
        Ok(PendingResponse { connection: self, _permit: permit, receiver })
    }

    /// Sends a request that gets no response (produce with acks=0).
    pub async fn send_only(
        &self,
        body_type: RequestBody,
        build: impl FnOnce(&mut FlatBufferBuilder<'static>) -> WIPOffset<UnionWIPOffset>,
        payload: &[&[u8]],
    ) -> Result<()> {
        self.send(body_type, build, payload, false).await.map(|_| ())
    }

    fn broken_error(&self) -> ClientError {
        self.pending
            .lock()
            .ok()
            .and_then(|p| p.failed.clone())
            .unwrap_or_else(|| ClientError::Io { address: self.address.clone(), message: "connection closed".into() })
    }

    async fn send(
        &self,
        body_type: RequestBody,
        build: impl FnOnce(&mut FlatBufferBuilder<'static>) -> WIPOffset<UnionWIPOffset>,
        payload: &[&[u8]],
        expect_reply: bool,
    ) -> Result<Option<oneshot::Receiver<Result<Frame>>>> {
        let mut writer = self.writer.lock().await;
        let correlation_id = writer.next_correlation_id;
        writer.next_correlation_id = writer.next_correlation_id.wrapping_add(1);
        let mut builder = FlatBufferBuilder::new();
        let body = build(&mut builder);
        let envelope = wire::finish_request(&mut builder, correlation_id, 0, Some(&self.client_id), body_type, body);
        let header = FrameHeader::try_encode(envelope.len(), payload.iter().map(|c| c.len()).sum())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let receiver = {
            let mut pending = self.pending.lock().map_err(|_| ClientError::Protocol("poisoned lock".into()))?;
            if let Some(e) = &pending.failed {
                return Err(e.clone());
            }
            if expect_reply {
                let (tx, rx) = oneshot::channel();
                pending.slots.push_back((correlation_id, tx));
                Some(rx)
            } else {
                None
            }
        };
        let io_error = |e: std::io::Error| ClientError::Io { address: self.address.clone(), message: e.to_string() };
        let mut head = Vec::with_capacity(FRAME_HEADER_BYTES + envelope.len());
        head.extend_from_slice(&header);
        head.extend_from_slice(envelope);
        let written = async {
            let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(1 + payload.len());
            slices.push(std::io::IoSlice::new(&head));
            slices.extend(payload.iter().filter(|c| !c.is_empty()).map(|c| std::io::IoSlice::new(c)));
            write_all_vectored(&mut writer.half, &mut slices).await?;
            writer.half.flush().await
        }
        .await;
        if let Err(e) = written {
            let error = io_error(e);
            fail_all(&self.pending, error.clone());
            return Err(error);
        }
        Ok(receiver)
    }
}

/// Reads a frame body of `len` bytes into a buffer that is not zeroed first: a fetch
/// answer is megabytes, and zero-filling it before the socket overwrites it cost the
/// consumer a pass over every byte.
async fn read_body(read: &mut ReadHalf, len: usize) -> std::io::Result<Vec<u8>> {
    use bytes::BufMut;
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        let room = len - body.len();
        if read.read_buf(&mut (&mut body).limit(room)).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(body)
}

fn fail_all(pending: &Mutex<Pending>, error: ClientError) {
    if let Ok(mut p) = pending.lock() {
        if p.failed.is_none() {
            p.failed = Some(error.clone());
        }
        for (_, slot) in p.slots.drain(..) {
            let _ = slot.send(Err(error.clone()));
        }
    }
}

async fn read_responses(mut read: ReadHalf, pending: Arc<Mutex<Pending>>, address: String) {
    let error = loop {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        if let Err(e) = read.read_exact(&mut header).await {
            break ClientError::Io { address: address.clone(), message: format!("connection closed: {e}") };
        }
        let header = match FrameHeader::parse(&header, RESPONSE_FRAME_BYTES_MAX) {
            Ok(h) => h,
            Err(e) => break ClientError::Protocol(format!("bad response frame from {address}: {e}")),
        };
        let body = match read_body(&mut read, header.body_bytes() as usize).await {
            Ok(body) => body,
            Err(e) => break ClientError::Io { address: address.clone(), message: format!("connection closed: {e}") },
        };
        let frame = match Frame::new(&header, body) {
            Ok(frame) => frame,
            Err(e) => break e,
        };
        let correlation_id = match frame.response() {
            Ok(r) => r.correlation_id(),
            Err(e) => break e,
        };
        let slot = pending.lock().ok().and_then(|mut p| p.slots.pop_front());
        match slot {
            Some((expected, tx)) if expected == correlation_id => {
                let _ = tx.send(Ok(frame));
            }
            Some((expected, tx)) => {
                // The node closes a connection after an error frame for a request it could
                // not parse (correlation id 0): give that error to the waiting request.
                let error = match frame.response().ok().and_then(|r| r.body_as_error_response()) {
                    Some(e) => ClientError::server(e.error().0, e.message()),
                    None => ClientError::Protocol(format!(
                        "response for correlation id {correlation_id} where {expected} was expected"
                    )),
                };
                let _ = tx.send(Err(error.clone()));
                break error;
            }
            None => break ClientError::Protocol(format!("unrequested response {correlation_id} from {address}")),
        }
    };
    fail_all(&pending, error);
}

/// A request written on a connection whose response has not come yet (it holds one of
/// the connection's in-flight slots).
pub struct PendingResponse<'c> {
    connection: &'c Connection,
    _permit: tokio::sync::SemaphorePermit<'c>,
    receiver: oneshot::Receiver<Result<Frame>>,
}

impl PendingResponse<'_> {
    /// Waits for the response (or `request.timeout.ms`: then the connection is given up
    /// on, as Kafka clients do, and callers reconnect, possibly elsewhere, rather than
    /// queue behind a node that does not answer).
    pub async fn response(self) -> Result<Frame> {
        let conn = self.connection;
        match tokio::time::timeout(conn.request_timeout, self.receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(conn.broken_error()),
            Err(_) => {
                let error = ClientError::Timeout {
                    address: conn.address.clone(),
                    timeout_ms: conn.request_timeout.as_millis() as u64,
                };
                if let Ok(mut pending) = conn.pending.lock() {
                    pending.failed.get_or_insert_with(|| error.clone());
                }
                Err(error)
            }
        }
    }
}

/// Writes every slice (the frame's head and its payload's pieces) with as few writev
/// calls as the socket takes.
async fn write_all_vectored(half: &mut WriteHalf, mut slices: &mut [std::io::IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        let n = half.write_vectored(slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}
