//! The cluster transport: one-way frames between nodes over TCP, the carrier of the
//! controller quorum's Raft messages and the replication messages (`replication::wire`).
//!
//! Every message of those protocols may be lost (their senders retry on timers), so the
//! transport is best-effort and never blocks its caller: `send` queues a frame for the
//! peer's connection task and returns. A peer that is down or slow costs only its own
//! queue, which is capped (`OUTBOX_BYTES_MAX`, then frames are dropped) and emptied when a
//! connection attempt fails (what was queued is stale by the time a peer returns).
//!
//! On the wire a frame is `u32` length (big-endian, of what follows), a kind byte, then
//! the body: `KIND_ENVELOPE` (a `replication::wire` envelope with its data),
//! `KIND_BATCH` (several envelopes, each a `u32` length and its bytes) or `KIND_RAFT`
//! (`u64` sender voter id, then a raft-rs message). Frames over
//! `FRAME_BYTES_MAX` or of an unknown kind close the connection that sent them.
//!
//! With `--cluster-tls-ca` every connection is mutual TLS (`tls::ClusterTls`): a node
//! connects only to a peer whose certificate the cluster CA signed for the peer's IP,
//! and accepts only connections that present such a certificate; a handshake that fails
//! or takes longer than `TLS_HANDSHAKE_TIMEOUT` closes the connection, nothing read.
//!
//! Guarantees: frames to one peer arrive in the order sent, or not at all, over one
//! connection at a time; no input read from a socket can panic the node.
//!
//! Where it lives: one `Transport` per shard that talks to other nodes; its connection
//! tasks run on that shard.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use sluice_io::net::{Connection as TcpStream, Listener as TcpListener};
use tracing::{debug, warn};

use crate::io::{self, WaitQueue};
use crate::replication::NodeId;

/// An envelope in `replication::wire` bytes.
pub const KIND_ENVELOPE: u8 = 1;
/// A Raft message between controller voters.
pub const KIND_RAFT: u8 = 2;
/// Several envelopes for one node in one frame, each a `u32` length and its bytes (a
/// follower's fetches of many partitions, a leader's answers to them).
pub const KIND_BATCH: u8 = 3;
/// The largest frame a node sends or accepts (a fetch reply carries up to a few MiB).
pub const FRAME_BYTES_MAX: usize = 64 << 20;
/// Bytes queued for one peer before new frames are dropped.
pub const OUTBOX_BYTES_MAX: usize = 128 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// A frame received from another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    Envelope(Vec<u8>),
    /// Envelopes that travelled in one frame, in order.
    Batch(Vec<Vec<u8>>),
    Raft {
        from: u64,
        bytes: Vec<u8>,
    },
}

/// What receives inbound frames (the shard's cluster loop).
pub type Handler = Rc<dyn Fn(Inbound)>;

#[derive(Default)]
struct Outbox {
    frames: RefCell<VecDeque<Vec<u8>>>,
    bytes: Cell<usize>,
    wake: WaitQueue,
    dropped: Cell<u64>,
    /// The peer moved to another address (or is gone): the sender task ends.
    closed: Cell<bool>,
}

/// The nodes that have a cluster address, with it (a cluster of one has none: it sends
/// only to itself).
#[must_use]
pub fn addresses(peers: &BTreeMap<NodeId, Option<SocketAddr>>) -> BTreeMap<NodeId, SocketAddr> {
    peers.iter().filter_map(|(id, address)| address.map(|a| (*id, a))).collect()
}

/// This node's connections to its peers (see the module doc).
pub struct Transport {
    me: NodeId,
    tls: Option<std::sync::Arc<crate::tls::ClusterTls>>,
    outboxes: RefCell<BTreeMap<NodeId, (SocketAddr, Rc<Outbox>)>>,
    handler: Handler,
}

impl Transport {
    /// Starts a connection task per peer (connecting lazily, when there is something to
    /// send). Frames sent to `me` go straight to `handler`.
    /// With `tls`, over mutual TLS.
    pub fn start(
        me: NodeId,
        peers: &BTreeMap<NodeId, SocketAddr>,
        handler: Handler,
        tls: Option<std::sync::Arc<crate::tls::ClusterTls>>,
    ) -> Rc<Transport> {
        let transport = Rc::new(Transport { me, tls, outboxes: RefCell::default(), handler });
        transport.set_addresses(peers);
        transport
    }

    /// Learns where nodes are reached (nodes that joined, or moved): a node new to the
    /// transport gets a connection task; one whose address changed gets a new one (its old
    /// task ends, what was queued for it dropped). Nodes not named keep theirs.
    pub fn set_addresses(&self, peers: &BTreeMap<NodeId, SocketAddr>) {
        let mut outboxes = self.outboxes.borrow_mut();
        for (&node, &address) in peers {
            if node == self.me || outboxes.get(&node).is_some_and(|(known, _)| *known == address) {
                continue;
            }
            let outbox = Rc::new(Outbox::default());
            io::spawn_detached(sender(node, address, outbox.clone(), self.tls.clone()));
            if let Some((old, previous)) = outboxes.insert(node, (address, outbox)) {
                debug!("node {node} is now reached at {address} (was {old})");
                previous.closed.set(true);
                previous.wake.notify_all();
            }
        }
    }

    /// Learns where a node is reached when the transport has no address for it yet (a
    /// joining node and its controller, before the committed state names them).
    pub fn learn_address(&self, node: NodeId, address: SocketAddr) {
        if !self.outboxes.borrow().contains_key(&node) {
            self.set_addresses(&BTreeMap::from([(node, address)]));
        }
    }

    /// The cluster link's TLS, if it has one (its listener takes it too).
    #[must_use]
    pub fn tls(&self) -> Option<std::sync::Arc<crate::tls::ClusterTls>> {
        self.tls.clone()
    }

    /// Queues an envelope's bytes for `to`.
    pub fn send_envelope(&self, to: NodeId, bytes: Vec<u8>) {
        if to == self.me {
            (self.handler)(Inbound::Envelope(bytes));
        } else {
            self.queue(to, KIND_ENVELOPE, &[], &bytes);
        }
    }

    /// Queues several envelopes for `to` as one frame (one envelope: as itself).
    pub fn send_batch(&self, to: NodeId, mut envelopes: Vec<Vec<u8>>) {
        if envelopes.len() == 1 {
            if let Some(one) = envelopes.pop() {
                self.send_envelope(to, one);
            }
            return;
        }
        if envelopes.is_empty() {
            return;
        }
        if to == self.me {
            (self.handler)(Inbound::Batch(envelopes));
            return;
        }
        let mut body = Vec::with_capacity(envelopes.iter().map(|e| 4 + e.len()).sum());
        for envelope in &envelopes {
            body.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
            body.extend_from_slice(envelope);
        }
        self.queue(to, KIND_BATCH, &[], &body);
    }

    /// Queues a Raft message from voter `from` for node `to`.
    pub fn send_raft(&self, to: NodeId, from: u64, bytes: Vec<u8>) {
        if to == self.me {
            (self.handler)(Inbound::Raft { from, bytes });
        } else {
            self.queue(to, KIND_RAFT, &from.to_be_bytes(), &bytes);
        }
    }

    /// Frames dropped so far because a peer's queue was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.outboxes.borrow().values().map(|(_, o)| o.dropped.get()).sum()
    }

    fn queue(&self, to: NodeId, kind: u8, prefix: &[u8], body: &[u8]) {
        let Some(outbox) = self.outboxes.borrow().get(&to).map(|(_, o)| o.clone()) else {
            debug!("no address for node {to}: a frame to it is dropped");
            return;
        };
        let len = 1 + prefix.len() + body.len();
        if len > FRAME_BYTES_MAX || outbox.bytes.get() + len > OUTBOX_BYTES_MAX {
            outbox.dropped.set(outbox.dropped.get() + 1);
            return;
        }
        let mut frame = Vec::with_capacity(4 + len);
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        frame.push(kind);
        frame.extend_from_slice(prefix);
        frame.extend_from_slice(body);
        outbox.bytes.set(outbox.bytes.get() + frame.len());
        outbox.frames.borrow_mut().push_back(frame);
        outbox.wake.notify_all();
    }
}

/// The connection task to one peer: connects when there is something to send, writes
/// queued frames in order, and reconnects after a failure.
/// How long a TLS handshake between nodes may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a peer, plain or TLS; the sender only writes.
type Outgoing = Box<dyn futures_lite::AsyncWrite + Unpin>;

/// Connects to a peer (and, with `tls`, completes the handshake, checking its
/// certificate for its IP).
async fn connect(address: SocketAddr, tls: Option<&crate::tls::ClusterTls>) -> Result<Outgoing, String> {
    let s = match io::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("timed out".to_string()),
    };
    let _ = s.set_nodelay(true);
    let Some(tls) = tls else { return Ok(Box::new(s)) };
    let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
    match io::timeout(TLS_HANDSHAKE_TIMEOUT, tls.connector().connect(name, s)).await {
        Some(Ok(stream)) => Ok(Box::new(stream)),
        Some(Err(e)) => Err(format!("TLS handshake: {e}")),
        None => Err(format!("TLS handshake not done within {TLS_HANDSHAKE_TIMEOUT:?}")),
    }
}

async fn sender(
    node: NodeId,
    address: SocketAddr,
    outbox: Rc<Outbox>,
    tls: Option<std::sync::Arc<crate::tls::ClusterTls>>,
) {
    let mut stream: Option<Outgoing> = None;
    while !outbox.closed.get() {
        let wait = outbox.wake.wait();
        if outbox.frames.borrow().is_empty() {
            wait.await;
            continue;
        }
        if stream.is_none() {
            match connect(address, tls.as_deref()).await {
                Ok(s) => {
                    debug!("connected to node {node} at {address}");
                    stream = Some(s);
                }
                Err(why) => {
                    debug!("cannot reach node {node} at {address}: {why}");
                    outbox.frames.borrow_mut().clear();
                    outbox.bytes.set(0);
                    io::sleep(RECONNECT_BACKOFF).await;
                    continue;
                }
            }
        }
        let batch: Vec<Vec<u8>> = outbox.frames.borrow_mut().drain(..).collect();
        outbox.bytes.set(0);
        let Some(s) = stream.as_mut() else { continue };
        let mut failed = false;
        for frame in &batch {
            if s.write_all(frame).await.is_err() {
                failed = true;
                break;
            }
        }
        if failed || s.flush().await.is_err() {
            debug!("connection to node {node} at {address} broke");
            stream = None;
        }
    }
}

/// Accepts other nodes' connections and hands every frame they send to `handler`; with
/// `tls`, only connections that complete a mutual TLS handshake.
pub async fn serve(listener: TcpListener, handler: Handler, tls: Option<std::sync::Arc<crate::tls::ClusterTls>>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let handler = handler.clone();
                let tls = tls.clone();
                io::spawn_detached(async move {
                    let _ = stream.set_nodelay(true);
                    let result = match tls {
                        None => receive(stream, handler).await,
                        Some(tls) => match io::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
                            Some(Ok(stream)) => receive(stream, handler).await,
                            Some(Err(e)) => Err(format!("TLS handshake: {e}")),
                            None => Err(format!("TLS handshake not done within {TLS_HANDSHAKE_TIMEOUT:?}")),
                        },
                    };
                    if let Err(why) = result {
                        warn!("closing a cluster connection: {why}");
                    }
                });
            }
            Err(e) => {
                warn!("accepting a cluster connection failed: {e}");
                io::sleep(RECONNECT_BACKOFF).await;
            }
        }
    }
}

async fn receive<S: futures_lite::AsyncRead + Unpin>(mut stream: S, handler: Handler) -> Result<(), String> {
    let mut header = [0u8; 4];
    loop {
        if stream.read_exact(&mut header).await.is_err() {
            return Ok(()); // closed by the peer
        }
        let len = u32::from_be_bytes(header) as usize;
        if len == 0 || len > FRAME_BYTES_MAX {
            return Err(format!("frame of {len} bytes (at most {FRAME_BYTES_MAX})"));
        }
        let mut frame = vec![0u8; len];
        stream.read_exact(&mut frame).await.map_err(|e| format!("reading a {len}-byte frame: {e}"))?;
        let inbound = match frame[0] {
            KIND_ENVELOPE => {
                frame.remove(0);
                Inbound::Envelope(frame)
            }
            KIND_RAFT if len >= 9 => {
                let mut id = [0u8; 8];
                id.copy_from_slice(&frame[1..9]);
                Inbound::Raft { from: u64::from_be_bytes(id), bytes: frame[9..].to_vec() }
            }
            KIND_BATCH => Inbound::Batch(split_batch(&frame[1..])?),
            kind => return Err(format!("frame kind {kind} of {len} bytes")),
        };
        handler(inbound);
    }
}

/// The envelopes of a batch frame's body, or why it is not one.
fn split_batch(mut body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let Some((len, rest)) = body.split_first_chunk::<4>() else {
            return Err(format!("a batch ends with {} stray bytes", body.len()));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!("a batch's envelope of {len} bytes has {} left", rest.len()));
        }
        out.push(rest[..len].to_vec());
        body = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn run<T: 'static>(future: impl std::future::Future<Output = T> + 'static) -> T {
        io::rt::LocalExecutorBuilder::new(io::rt::Placement::Unbound).make().unwrap().run(future)
    }

    fn free_address() -> SocketAddr {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    }

    async fn wait_for(received: &Rc<RefCell<Vec<Inbound>>>, count: usize) -> bool {
        for _ in 0..500 {
            if received.borrow().len() >= count {
                return true;
            }
            io::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[test]
    fn frames_arrive_in_order_lost_while_the_peer_is_down_and_flow_again_once_it_is_up() {
        run(async {
            let (a, b) = (NodeId(1), NodeId(2));
            let b_address = free_address();
            let peers: BTreeMap<NodeId, SocketAddr> = [(a, free_address()), (b, b_address)].into();
            let received = Rc::new(RefCell::new(Vec::new()));
            let sink = received.clone();
            let handler: Handler = Rc::new(move |frame| sink.borrow_mut().push(frame));
            let noop: Handler = Rc::new(|_| {});
            let transport = Transport::start(a, &peers, noop, None);
            // B is not listening: the frame is dropped, never delivered late.
            transport.send_envelope(b, b"lost".to_vec());
            io::sleep(Duration::from_millis(300)).await;
            io::spawn_detached(serve(TcpListener::bind(b_address).unwrap(), handler.clone(), None));
            for i in 0..100u8 {
                transport.send_envelope(b, vec![i; 1 + usize::from(i) * 100]);
            }
            transport.send_raft(b, 3, b"raft".to_vec());
            assert!(wait_for(&received, 101).await, "only {} frames arrived", received.borrow().len());
            let got = received.borrow().clone();
            for (i, frame) in got.iter().take(100).enumerate() {
                assert_eq!(*frame, Inbound::Envelope(vec![i as u8; 1 + i * 100]), "frame {i} in order");
            }
            assert_eq!(got[100], Inbound::Raft { from: 3, bytes: b"raft".to_vec() });
            // Garbage on a connection closes that connection only.
            let mut rogue = TcpStream::connect(b_address).await.unwrap();
            rogue.write_all(&[0xff, 0xff, 0xff, 0xff, 1]).await.unwrap();
            rogue.flush().await.unwrap();
            transport.send_envelope(b, b"after".to_vec());
            assert!(wait_for(&received, 102).await);
            assert_eq!(received.borrow()[101], Inbound::Envelope(b"after".to_vec()));
            // Several envelopes in one frame arrive as one batch, in order.
            transport.send_batch(b, vec![b"one".to_vec(), b"two".to_vec(), Vec::new()]);
            assert!(wait_for(&received, 103).await);
            let batch = vec![b"one".to_vec(), b"two".to_vec(), Vec::new()];
            assert_eq!(received.borrow()[102], Inbound::Batch(batch));
            assert!(split_batch(&[0, 0, 0, 9, 1]).is_err() && split_batch(&[0, 0]).is_err());
            // To itself: straight to its own handler.
            let own = Transport::start(b, &peers, handler, None);
            own.send_envelope(b, b"self".to_vec());
            assert_eq!(received.borrow().last(), Some(&Inbound::Envelope(b"self".to_vec())));
        });
    }
}
