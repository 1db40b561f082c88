//! Where a request goes: each partition's leader, and a connection per node.
//!
//! The router learns leaders from Metadata (through any bootstrap server) and keeps one
//! connection per node it talks to. A request that fails with NOT_LEADER_OR_FOLLOWER,
//! LEADER_NOT_AVAILABLE or UNKNOWN_TOPIC_OR_PARTITION, or on a broken connection, should
//! be followed by `refresh` and a retry, as Kafka clients do. With a single node, every
//! request uses the bootstrap connection (the node's advertised address may not be the
//! one the client was given).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::admin::connect_any;
use crate::connection::Connection;
use crate::error::{ClientError, Result};
use crate::protocol;
use crate::security::Security;

#[derive(Default)]
struct Known {
    /// Per topic: each partition's leader (`None` while it has none), and when learnt.
    topics: HashMap<String, (Vec<Option<u32>>, Instant)>,
    /// Node id -> HOST:PORT.
    nodes: HashMap<u32, String>,
    controller: Option<u32>,
}

pub(crate) struct Router {
    servers: Vec<String>,
    client_id: String,
    /// How every connection is secured (TLS, SASL login).
    security: Arc<Security>,
    max_in_flight: usize,
    timeout: Duration,
    max_age: Duration,
    bootstrap: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The bootstrap server to try first: moves on past one whose connection broke.
    first: std::sync::atomic::AtomicUsize,
    known: Mutex<Known>,
    conns: tokio::sync::Mutex<HashMap<u32, Arc<Connection>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Router {
    pub(crate) fn new(
        servers: &[String],
        client_id: &str,
        max_in_flight: usize,
        timeout: Duration,
        max_age: Duration,
        security: Arc<Security>,
    ) -> Router {
        Router {
            servers: servers.to_vec(),
            client_id: client_id.to_string(),
            security,
            max_in_flight,
            timeout,
            max_age,
            bootstrap: tokio::sync::Mutex::new(None),
            first: std::sync::atomic::AtomicUsize::new(0),
            known: Mutex::new(Known::default()),
            conns: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A connection to any bootstrap server (reconnecting when it broke).
    pub(crate) async fn any(&self) -> Result<Arc<Connection>> {
        use std::sync::atomic::Ordering;
        let mut guard = self.bootstrap.lock().await;
        match guard.as_ref() {
            Some(c) if !c.is_broken() => return Ok(c.clone()),
            Some(_) => {
                self.first.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        let start = self.first.load(Ordering::Relaxed) % self.servers.len().max(1);
        let mut servers = self.servers.clone();
        servers.rotate_left(start);
        let c =
            Arc::new(connect_any(&servers, &self.client_id, self.max_in_flight, self.timeout, &self.security).await?);
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Learns `topic`'s leaders (and the nodes) again; returns its partition count.
    pub(crate) async fn refresh(&self, topic: &str) -> Result<u32> {
        let conn = self.any().await?;
        let metadata = protocol::metadata(&conn, Some(&[topic.to_string()])).await?;
        let mut known = lock(&self.known);
        known.nodes = metadata.nodes.iter().map(|n| (n.node_id, format!("{}:{}", n.host, n.port))).collect();
        known.controller = metadata.controller_id;
        let info = metadata
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| ClientError::Protocol(format!("no metadata for topic {topic:?}")))?;
        let partitions = info.partitions?;
        let leaders: Vec<Option<u32>> = partitions.iter().map(|p| p.leader).collect();
        let count = leaders.len() as u32;
        known.topics.insert(topic.to_string(), (leaders, Instant::now()));
        Ok(count)
    }

    /// `topic`'s partition count if metadata no older than metadata.max.age.ms (as of
    /// `now`) has it: the producer's per-record path, with no clock read and no await.
    pub(crate) fn cached_partitions(&self, topic: &str, now: Instant) -> Option<u32> {
        let known = lock(&self.known);
        let (leaders, at) = known.topics.get(topic)?;
        (now.saturating_duration_since(*at) < self.max_age).then_some(leaders.len() as u32)
    }

    /// `topic`'s partition count, from metadata no older than metadata.max.age.ms.
    pub(crate) async fn partitions(&self, topic: &str) -> Result<u32> {
        if let Some((leaders, at)) = lock(&self.known).topics.get(topic) {
            if at.elapsed() < self.max_age {
                return Ok(leaders.len() as u32);
            }
        }
        self.refresh(topic).await
    }

    /// The partition's leader as last learnt.
    pub(crate) fn leader(&self, topic: &str, partition: u32) -> Option<u32> {
        lock(&self.known).topics.get(topic).and_then(|(l, _)| l.get(partition as usize).copied().flatten())
    }

    /// A connection to `node` (the bootstrap connection for a single node, or when the
    /// node is unknown).
    pub(crate) async fn to_node(&self, node: Option<u32>) -> Result<Arc<Connection>> {
        let address = {
            let known = lock(&self.known);
            match node {
                Some(n) if known.nodes.len() > 1 => known.nodes.get(&n).cloned(),
                _ => None,
            }
        };
        let (Some(node), Some(address)) = (node, address) else { return self.any().await };
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(&node).filter(|c| !c.is_broken()) {
            return Ok(c.clone());
        }
        let c = Arc::new(
            Connection::connect(&address, &self.client_id, self.max_in_flight, self.timeout, &self.security).await?,
        );
        conns.insert(node, c.clone());
        Ok(c)
    }

    /// Asks any node for the live nodes and the controller; returns the nodes' ids.
    pub(crate) async fn learn_nodes(&self) -> Result<Vec<u32>> {
        let conn = self.any().await?;
        let metadata = protocol::metadata(&conn, Some(&[])).await?;
        let mut known = lock(&self.known);
        known.nodes = metadata.nodes.iter().map(|n| (n.node_id, format!("{}:{}", n.host, n.port))).collect();
        known.controller = metadata.controller_id;
        Ok(metadata.nodes.iter().map(|n| n.node_id).collect())
    }

    /// A connection to the controller (admin requests), after asking any node which it is.
    pub(crate) async fn to_controller(&self) -> Result<Arc<Connection>> {
        self.learn_nodes().await?;
        let controller = lock(&self.known).controller;
        self.to_node(controller).await
    }

    /// A connection to `group`'s coordinator: the leader of its offsets partition (any
    /// node of a single-node cluster).
    pub(crate) async fn to_coordinator(&self, group: &str) -> Result<Arc<Connection>> {
        use sluice_schemas::groups::{offsets_partition, OFFSETS_TOPIC};
        self.refresh(OFFSETS_TOPIC).await?;
        self.to_node(self.leader(OFFSETS_TOPIC, offsets_partition(group))).await
    }

    /// A connection to a transactional id's coordinator: the leader of its transaction
    /// state partition; any node while that topic does not exist yet (its first
    /// InitProducerId creates it, then answers NOT_COORDINATOR if another node leads).
    pub(crate) async fn to_txn_coordinator(&self, transactional_id: &str) -> Result<Arc<Connection>> {
        use sluice_schemas::groups::{txn_partition, TXN_TOPIC};
        let _ = self.refresh(TXN_TOPIC).await;
        self.to_node(self.leader(TXN_TOPIC, txn_partition(transactional_id))).await
    }
}

/// Runs `call` on the connection `connect` gives, again (after `forget`) while `moved`
/// says the error means it went to the wrong node or a node that failed, for at most
/// `retry_for`.
pub(crate) async fn with_retries<T, C, CF, F, FF>(
    retry_for: Duration,
    moved: fn(&ClientError) -> bool,
    connect: C,
    forget: impl Fn(),
    call: F,
) -> Result<T>
where
    C: Fn() -> CF,
    CF: std::future::Future<Output = Result<Arc<Connection>>>,
    F: Fn(Arc<Connection>) -> FF,
    FF: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + retry_for;
    loop {
        let result = match connect().await {
            Ok(conn) => call(conn).await,
            Err(e) => Err(e),
        };
        match result {
            Err(e) if moved(&e) && Instant::now() < deadline => {
                forget();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Whether an error means the group's coordinator moved (or is not known yet): find it
/// again, then retry.
pub(crate) fn coordinator_moved(error: &ClientError) -> bool {
    stale_metadata(error) || matches!(protocol::error_code(error), Some(c) if matches!(c.0, 15 | 16))
}

/// Whether an error means the client's idea of leaders is stale: refresh, then retry.
pub(crate) fn stale_metadata(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. } | ClientError::Io { .. } | ClientError::Timeout { .. } => true,
        other => matches!(protocol::error_code(other), Some(c) if matches!(c.0, 3 | 5 | 6 | 41)),
    }
}
