//! The connection loop both protocols share, on every shard: accepts connections, reads
//! frames, runs each request's handler and writes the responses in request order.
//!
//! Every shard runs one per protocol (the listener has SO_REUSEPORT, so the kernel
//! spreads connections). Per connection, a reader task reads frames and starts a handler
//! task per request; a writer task writes the responses in the order the requests came,
//! so requests are pipelined up to `max-in-flight` per connection.
//!
//! Guarantees: a frame larger than `max-frame-bytes` is refused from its header, before
//! its body is read; the bodies held by one shard never exceed `request-memory-bytes`,
//! reserved as the body arrives (a peer dribbling a large body holds 16 KiB of it, see
//! `read_body`), and a body that does not arrive within `BODY_READ_TIMEOUT` of its
//! header closes its connection (releasing its reservation); a frame the protocol refuses gets its answer and its
//! connection is closed, and nothing else (other connections, stored data) is affected.
//! A connection whose peer hung up closes at once, without waiting for the handlers of
//! its requests (as Kafka brokers do): a waiting request never holds a descriptor.
//! Record bytes in fetch responses go to the socket from the log's buffers as they are.
//!
//! Order: each request's handler gets a `Turn`, its place in its connection's order. A
//! protocol that processes one connection's requests in order (Kafka's: a commit followed
//! by an offset fetch must see the commit) waits for the previous request's turn before
//! it starts, and releases its own once what follows may start; one that does not
//! (the native protocol, whose client orders what it needs) releases it at once.

use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use sluice_io::net::{Connection, Listener};
use sluice_io::rt::{self, Semaphore, StaticPermit, TaskHandle};
use tracing::{debug, info, warn};

use crate::io::{IoBytes, Oneshot, OneshotSender};
use crate::shard::{Shard, ShardId, ShardReply, ShardRequest};

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

    /// The whole frame in one buffer.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        let mut out = self.head;
        for piece in &self.payload {
            out.extend_from_slice(piece.bytes());
        }
        out
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

/// Shared by the connections of one shard, of both protocols.
pub struct Server {
    pub shard: Rc<Shard>,
    memory: Rc<Semaphore>,
    /// This shard's share of max-connections (the open ones are `sluice_connections`).
    connections_max: u64,
}

impl Server {
    /// The max-connections-per-ip limit for connections from `ip` (its override, or the
    /// node's), `None` for none.
    fn per_ip_limit(&self, ip: std::net::IpAddr) -> Option<u32> {
        let config = &self.shard.config;
        let ip = ip.to_canonical();
        let exception = config.connections_per_ip_overrides.iter().find(|(address, _)| address.to_canonical() == ip);
        exception.map(|&(_, limit)| limit).or(config.connections_per_ip_max)
    }
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
    /// What one connection keeps between its requests (the Kafka protocol's SASL login).
    type Session: Default + 'static;
    /// A TLS connection's client presented a certificate: its principal (`User:` and the
    /// subject's distinguished name), for the session.
    fn set_tls_principal(_session: &Self::Session, _principal: Rc<str>) {}
    fn server(self: &Rc<Self>) -> Rc<Server>;
    /// The body's length and what the handler needs from the header; `Err` refuses the
    /// frame: its response, if any, is written and the connection closed.
    /// `session` is the connection's (a frame's limit may depend on it).
    fn parse_header(
        &self,
        session: &Self::Session,
        header: &[u8],
    ) -> Result<(usize, Self::Frame), Option<ResponseFrame>>;
    /// Runs one request; `turn` is its place in the connection's order.
    async fn handle(
        self: Rc<Self>,
        session: Rc<Self::Session>,
        frame: Self::Frame,
        body: Vec<u8>,
        peer: Rc<str>,
        turn: Turn,
    ) -> Outcome;
}

/// A request's place in its connection's order: `wait` returns once the request before
/// it released its turn (or ended); `release` (or dropping it) lets the next one start.
pub struct Turn {
    previous: Option<Oneshot<()>>,
    done: Option<OneshotSender<()>>,
}

impl Turn {
    /// The turn after `previous` (`None`: the connection's first request), and the
    /// receiver the request after it waits on.
    fn after(previous: Option<Oneshot<()>>) -> (Turn, Oneshot<()>) {
        let (tx, rx) = Oneshot::channel();
        (Turn { previous, done: Some(tx) }, rx)
    }

    /// Waits until every earlier request of the connection released its turn.
    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // `None`: the previous request's handler ended without releasing; it is done.
            let _ = previous.await;
        }
    }

    /// Lets the next request of the connection start.
    pub fn release(&mut self) {
        if let Some(done) = self.done.take() {
            done.send(());
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.release();
    }
}

/// How long a request's body may take to arrive once its header announced it.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The part of a request body whose memory is reserved before any of it arrives (see
/// `read_body`).
pub const BODY_PREFIX_BYTES: usize = 16 << 10;

/// A connection counted against its address's max-connections-per-ip limit by shard 0,
/// which keeps the node-wide counts (shards share no lock); dropping it gives the place
/// back there.
struct IpSlot {
    shard: Rc<Shard>,
    ip: std::net::IpAddr,
}

impl IpSlot {
    /// A place for one more connection from `ip`, unless `limit` are open node-wide.
    async fn take(shard: &Rc<Shard>, ip: std::net::IpAddr, limit: u32) -> Option<IpSlot> {
        let request = ShardRequest::ConnectionSlot { ip, limit: Some(limit) };
        match shard.call(ShardId(0), request).await {
            ShardReply::SlotGranted(true) => Some(IpSlot { shard: shard.clone(), ip }),
            _ => None,
        }
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let (shard, ip) = (self.shard.clone(), self.ip);
        crate::io::spawn_detached(async move {
            let _ = shard.call(ShardId(0), ShardRequest::ConnectionSlot { ip, limit: None }).await;
        });
    }
}

/// Counts a refused connection in `counter`; returns the count when it is a power of two
/// (when the refusal is worth a log line).
fn count_refusal(server: &Server, counter: impl FnOnce(&mut crate::metrics::Metrics) -> &mut u64) -> Option<u64> {
    let mut metrics = server.shard.metrics.borrow_mut();
    let count = counter(&mut metrics);
    *count += 1;
    count.is_power_of_two().then_some(*count)
}

/// Accepts connections of one protocol, forever. Past the shard's share of
/// max-connections, or past max-connections-per-ip for the connection's address (node-
/// wide), a new connection is closed at once (counted, and logged now and then), so that
/// hostile or runaway clients cannot take the descriptors the logs need, nor one address
/// every connection the node takes.
///
/// With `tls`, each connection first completes a TLS handshake with the node's current
/// configuration (`crate::tls`) within `TLS_HANDSHAKE_TIMEOUT`; one that fails or takes
/// longer is closed and counted (`sluice_tls_handshakes_failed_total`), nothing of it read.
pub(crate) async fn serve<P: Protocol>(protocol: Rc<P>, listener: Listener, tls: Option<crate::tls::ShardTls>) {
    let server = protocol.server();
    let tls = tls.map(Rc::new);
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                warn!("accept failed: {e}");
                crate::io::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if server.shard.metrics.borrow().connections >= server.connections_max {
            if let Some(refused) = count_refusal(&server, |m| &mut m.connections_refused) {
                let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                warn!(%peer, refused, "max-connections reached on this shard: closing a new connection");
            }
            continue;
        }
        let protocol = protocol.clone();
        let server = server.clone();
        let tls = tls.clone();
        server.shard.metrics.borrow_mut().connections += 1;
        crate::io::spawn_detached(async move {
            // Counted by shard 0 (a round trip, here rather than in the accept loop).
            let ip = stream.peer_addr().ok().map(|a| a.ip());
            let mut slot = None;
            if let Some((ip, limit)) = ip.and_then(|ip| server.per_ip_limit(ip).map(|limit| (ip, limit))) {
                slot = IpSlot::take(&server.shard, ip, limit).await;
                if slot.is_none() {
                    if let Some(refused) = count_refusal(&server, |m| &mut m.connections_refused_per_ip) {
                        warn!(%ip, limit, refused, "max-connections-per-ip reached for this address: closing a new connection");
                    }
                    server.shard.metrics.borrow_mut().connections -= 1;
                    return;
                }
            }
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            debug!(%peer, shard = server.shard.id.0, "connection opened");
            let _ = stream.set_nodelay(true);
            let peer_address: Rc<str> = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default().into();
            if let Some(tls) = tls {
                if let Some(stream) = tls_handshake(&server, &tls, stream, &peer).await {
                    let principal = certificate_principal(&stream, &peer, &server.shard.config.principal_rules);
                    connection(protocol, stream, peer_address, principal).await;
                }
            } else {
                connection(protocol, stream, peer_address, None).await;
            }
            server.shard.metrics.borrow_mut().connections -= 1;
            drop(slot);
            debug!(%peer, "connection closed");
        });
    }
}

/// How long a TLS client has to complete its handshake.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The TLS side of a new connection, once its handshake completed; `None` (counted and
/// logged at debug level: a port scan or a plaintext client is not news) when it failed
/// or timed out.
async fn tls_handshake(
    server: &Server,
    tls: &crate::tls::ShardTls,
    mut stream: Connection,
    peer: &str,
) -> Option<futures_rustls::server::TlsStream<Connection>> {
    // TLS clients write a request as several records; with Nagle on (librdkafka's
    // default) each later one waits for an ACK of the first (see `set_quick_ack`).
    stream.set_quick_ack();
    let failed = |why: String| {
        server.shard.metrics.borrow_mut().tls_handshakes_failed += 1;
        debug!(%peer, "TLS handshake failed: {why}");
    };
    let (acceptor, error) = tls.acceptor();
    if let Some(error) = error {
        warn!(shard = server.shard.id.0, "reading the TLS files again failed, the previous ones stay in use: {error}");
    }
    let Some(acceptor) = acceptor else {
        failed("no TLS configuration could be read".to_string());
        return None;
    };
    match crate::io::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Some(Ok(stream)) => Some(stream),
        Some(Err(e)) => {
            failed(e.to_string());
            None
        }
        None => {
            failed(format!("not completed within {TLS_HANDSHAKE_TIMEOUT:?}"));
            None
        }
    }
}

/// The principal of a TLS client's certificate, as Kafka's default principal builder
/// makes it: `User:` and the subject as RFC 2253 writes it (`User:CN=client,O=Acme`).
fn certificate_principal(
    stream: &futures_rustls::server::TlsStream<Connection>,
    peer: &str,
    rules: &crate::login::PrincipalRules,
) -> Option<Rc<str>> {
    let certificate = stream.get_ref().1.peer_certificates()?.first()?;
    match sluice_schemas::x509::subject(certificate) {
        Ok(subject) => match rules.apply(&subject) {
            Some(name) => Some(format!("User:{name}").into()),
            None => {
                warn!(%peer, %subject, "no ssl-principal-mapping-rules rule matches the client certificate's subject; the connection is anonymous");
                None
            }
        },
        Err(e) => {
            warn!(%peer, "the client certificate's subject could not be read ({e}); the connection is anonymous");
            None
        }
    }
}

async fn connection<P: Protocol, S>(protocol: Rc<P>, stream: S, peer_address: Rc<str>, principal: Option<Rc<str>>)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let server = protocol.server();
    let in_flight = server.shard.config.in_flight_per_connection_max;
    let (tx, rx) = rt::local_channel::<TaskHandle<Outcome>>(in_flight);
    let shard = server.shard.clone();
    let writer_task = rt::spawn(async move {
        while let Some(handle) = rx.recv().await {
            let Some(outcome) = handle.await else { break };
            if outcome.close {
                // A request the protocol refused (malformed, unknown, not served).
                shard.metrics.borrow_mut().requests_refused_malformed += 1;
            }
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
    // Whether the peer is gone (hung up, or stopped sending): nobody reads the responses
    // still to come, so the connection closes now rather than when the last handler
    // ends (a long poll, or a JoinGroup waiting out a rebalance, would otherwise hold the
    // socket as long as they wait; hostile traffic ran the node out of descriptors).
    let mut peer_gone = true;
    // What the next request's turn waits on.
    let mut previous_turn = None;
    let session = Rc::new(P::Session::default());
    if let Some(principal) = principal {
        P::set_tls_principal(&session, principal);
    }
    loop {
        if reader.read_exact(&mut header).await.is_err() {
            break; // closed by the peer
        }
        let (body_bytes, frame) = match protocol.parse_header(&session, &header) {
            Ok(parsed) => parsed,
            Err(refusal) => {
                server.shard.metrics.borrow_mut().requests_refused_frame += 1;
                let task = rt::spawn(async move { Outcome { response: refusal, close: true } }).detach();
                peer_gone = tx.send(task).await.is_err();
                break;
            }
        };
        let Some((body, permits)) = read_body(&server, &mut reader, body_bytes, &peer_address).await else {
            break;
        };
        let protocol = protocol.clone();
        let peer = peer_address.clone();
        let session = session.clone();
        let (turn, next) = Turn::after(previous_turn.take());
        previous_turn = Some(next);
        let task = rt::spawn(async move {
            let outcome = protocol.handle(session, frame, body, peer, turn).await;
            drop(permits);
            outcome
        })
        .detach();
        if tx.send(task).await.is_err() {
            break;
        }
    }
    drop(tx);
    if peer_gone {
        // Dropping the writer task cancels it; the handlers run on (a produce already
        // started is stored) and their responses are dropped.
        debug!(peer = %peer_address, "the peer is gone; closing without waiting for its requests");
        drop(writer_task);
    } else {
        writer_task.await;
    }
}

/// Reads a request body of `bytes` (its header just arrived) with its memory reserved:
/// `None` when the peer hung up, sent too slowly or the shard is shutting down.
///
/// A shard never holds more than request-memory-bytes of request bodies (every body fits:
/// the config keeps request-memory-bytes at least max-frame-bytes). The memory is reserved
/// in two steps so that it follows what the peer really sends: the first
/// `BODY_PREFIX_BYTES` (or the whole body, if smaller) before they are read, the rest
/// once they arrived. A peer that announces a large body and dribbles it holds one prefix,
/// not the body (2,000 such peers each announcing 1 MB held 2 GB of reservations and
/// stalled every other request). A body with its whole reservation always completes; one
/// waiting for the rest holds only its prefix, so waits for memory could only hold each
/// other up with request-memory-bytes / 16 KiB bodies waiting at once (16,384 per shard
/// by default), and then only until their deadline. The body must arrive within
/// `BODY_READ_TIMEOUT` of its header, however it trickles (waits for memory do not count).
async fn read_body<R: futures_lite::AsyncRead + Unpin>(
    server: &Server,
    reader: &mut R,
    bytes: usize,
    peer: &str,
) -> Option<(Vec<u8>, (StaticPermit, Option<StaticPermit>))> {
    let mut left = BODY_READ_TIMEOUT;
    let prefix = bytes.min(BODY_PREFIX_BYTES);
    let first = server.memory.clone().acquire_static_permit(prefix as u64).await.ok()?;
    let mut body = vec![0u8; prefix];
    read_within(server, reader, &mut body, &mut left, peer, bytes).await?;
    let mut rest = None;
    if bytes > prefix {
        rest = Some(server.memory.clone().acquire_static_permit((bytes - prefix) as u64).await.ok()?);
        body.resize(bytes, 0);
        read_within(server, reader, &mut body[prefix..], &mut left, peer, bytes).await?;
    }
    Some((body, (first, rest)))
}

/// Reads exactly `into` within `left`, which it reduces by the time taken.
async fn read_within<R: futures_lite::AsyncRead + Unpin>(
    server: &Server,
    reader: &mut R,
    into: &mut [u8],
    left: &mut std::time::Duration,
    peer: &str,
    body_bytes: usize,
) -> Option<()> {
    let started = std::time::Instant::now();
    let read = crate::io::timeout(*left, reader.read_exact(into)).await;
    *left = left.saturating_sub(started.elapsed());
    match read {
        Some(Ok(())) => Some(()),
        Some(Err(_)) => None,
        None => {
            server.shard.metrics.borrow_mut().requests_refused_body_timeout += 1;
            warn!(%peer, bytes = body_bytes, "a request body did not arrive in time; closing the connection");
            None
        }
    }
}

impl Server {
    #[must_use]
    pub fn new(shard: Rc<Shard>) -> Rc<Server> {
        let memory = Rc::new(Semaphore::new(shard.config.request_memory_bytes_max));
        let node_wide =
            shard.config.connections_max.unwrap_or_else(|| crate::shard::descriptors::open_files_limit() / 2);
        let connections_max = (node_wide / usize::from(shard.shards.max(1))).max(1) as u64;
        Rc::new(Server { shard, memory, connections_max })
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
