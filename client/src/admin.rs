//! The admin client: topics, partitions and configs.

use std::sync::Arc;
use std::time::Duration;

use crate::connection::Connection;
use crate::error::{ClientError, Result};
use crate::protocol::{self, ClusterMetadata, ConfigValue, GroupInfo, NewTopic, TopicInfo};
use crate::router::{coordinator_moved, stale_metadata, with_retries, Router};

/// A partition's lag in a group: log end offset minus committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    pub committed: Option<u64>,
    /// The end a consumer at the asked isolation level reads to: the log end (high
    /// watermark), or read committed the last stable offset.
    pub log_end: u64,
    /// `log_end - committed` (the whole log when nothing is committed).
    pub lag: u64,
    /// The member the partition is assigned to, if any.
    pub member_id: Option<String>,
}

/// Connects to the first reachable of `servers` (HOST:PORT each).
pub async fn connect_any(
    servers: &[String],
    client_id: &str,
    max_in_flight: usize,
    timeout: Duration,
) -> Result<Connection> {
    let mut last = ClientError::Config("bootstrap servers are empty".into());
    for server in servers {
        match Connection::connect(server, client_id, max_in_flight, timeout).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Administers topics: reads through any node, changes through the controller (found
/// from Metadata, as Kafka's admin client does), retried while leadership moves.
pub struct Admin {
    servers: Vec<String>,
    router: Router,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Admin({:?})", self.servers)
    }
}

/// How long an admin change keeps retrying while the controller or a leader moves.
const RETRY_FOR: Duration = Duration::from_secs(15);

fn single(results: Vec<(String, Result<()>)>, name: &str) -> Result<()> {
    results
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or_else(|| Err(ClientError::Protocol(format!("no result for topic {name:?}"))), |(_, r)| r)
}

impl Admin {
    /// Connects to the first reachable bootstrap server.
    pub async fn connect(bootstrap_servers: &[String]) -> Result<Admin> {
        Admin::connect_with_timeout(bootstrap_servers, Duration::from_secs(30)).await
    }

    /// As `connect`, with `timeout` for each request (Kafka's request.timeout.ms).
    pub async fn connect_with_timeout(bootstrap_servers: &[String], timeout: Duration) -> Result<Admin> {
        let router = Router::new(bootstrap_servers, "sluice-admin", 8, timeout, Duration::ZERO);
        router.any().await?;
        Ok(Admin { servers: bootstrap_servers.to_vec(), router })
    }

    /// A connection to any node (another one once it broke).
    async fn conn(&self) -> Result<Arc<Connection>> {
        self.router.any().await
    }

    /// Runs `call` on the controller's connection, again while the controller moves.
    async fn on_controller<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        with_retries(RETRY_FOR, stale_metadata, || self.router.to_controller(), || {}, call).await
    }

    /// Runs `call` on `group`'s coordinator, again while the coordinator moves.
    async fn on_coordinator<T, F, Fut>(&self, group: &str, call: F) -> Result<T>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        with_retries(RETRY_FOR, coordinator_moved, || self.router.to_coordinator(group), || {}, call).await
    }

    /// A connection to the partition's leader (for requests only it answers).
    async fn to_leader(&self, topic: &str, partition: u32) -> Result<Arc<Connection>> {
        self.router.refresh(topic).await?;
        self.router.to_node(self.router.leader(topic, partition)).await
    }

    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        self.on_controller(|conn| {
            let topic = topic.clone();
            async move {
                let name = topic.name.clone();
                single(protocol::create_topics(&conn, &[topic], false).await?, &name)
            }
        })
        .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.on_controller(
            |conn| async move { single(protocol::delete_topics(&conn, &[name.to_string()]).await?, name) },
        )
        .await
    }

    /// Grows a topic to `count` partitions (partitions are never removed).
    pub async fn add_partitions(&self, name: &str, count: u32) -> Result<()> {
        self.on_controller(|conn| async move {
            single(protocol::create_partitions(&conn, &[(name.to_string(), count)]).await?, name)
        })
        .await
    }

    /// Every topic's name, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.metadata(None).await?.topics.into_iter().map(|t| t.name).collect();
        names.sort();
        Ok(names)
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        let metadata = self.metadata(Some(&[name.to_string()])).await?;
        metadata
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol(format!("no metadata for topic {name:?}")))
    }

    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<ClusterMetadata> {
        protocol::metadata(&*self.conn().await?, topics).await
    }

    /// Every config of a topic with its effective value.
    pub async fn describe_configs(&self, name: &str) -> Result<Vec<ConfigValue>> {
        protocol::describe_configs(&*self.conn().await?, &[name.to_string()])
            .await?
            .into_iter()
            .next()
            .map_or_else(|| Err(ClientError::Protocol(format!("no configs for topic {name:?}"))), |(_, r)| r)
    }

    /// Sets `set` and returns `delete` to the node's defaults.
    pub async fn alter_configs(&self, name: &str, set: &[(String, String)], delete: &[String]) -> Result<()> {
        self.on_controller(|conn| async move { protocol::alter_configs(&conn, name, set, delete).await? }).await
    }

    /// (group id, state, members) of every group.
    pub async fn list_groups(&self) -> Result<Vec<(String, String, u32)>> {
        // Each node lists the groups it coordinates.
        let mut all = Vec::new();
        for node in self.router.learn_nodes().await? {
            let conn = self.router.to_node(Some(node)).await?;
            all.extend(protocol::list_groups(&conn).await?);
        }
        all.sort();
        all.dedup_by(|a, b| a.0 == b.0);
        Ok(all)
    }

    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo> {
        self.on_coordinator(group, |conn| async move { protocol::describe_group(&conn, group).await }).await
    }

    /// Per partition with a committed offset or an owner: committed, log end and lag, for
    /// consumers reading at `isolation` (read committed: to the last stable offset, so a
    /// transaction left open does not count as lag they could consume).
    pub async fn group_lag(&self, group: &str, isolation: protocol::IsolationLevel) -> Result<Vec<PartitionLag>> {
        let info = self.describe_group(group).await?;
        let committed =
            self.on_coordinator(group, |conn| async move { protocol::fetch_offsets(&conn, group, None).await }).await?;
        let mut parts: std::collections::BTreeMap<(String, u32), (Option<u64>, Option<String>)> =
            committed.into_iter().map(|(t, p, o, _)| ((t, p), (o, None))).collect();
        for m in &info.members {
            for tp in &m.assignment {
                parts.entry(tp.clone()).or_insert((None, None)).1 = Some(m.member_id.clone());
            }
        }
        let queries: Vec<(String, u32, i64)> = parts.keys().map(|(t, p)| (t.clone(), *p, protocol::LATEST)).collect();
        let mut ends = Vec::with_capacity(queries.len());
        for query in queries {
            let conn = self.to_leader(&query.0, query.1).await?;
            ends.extend(protocol::list_offsets_isolated(&conn, &[query], isolation).await?);
        }
        let mut out = Vec::new();
        for ((topic, partition), (committed, member_id)) in parts {
            let log_end = ends
                .iter()
                .find(|(t, p, _)| *t == topic && *p == partition)
                .and_then(|(_, _, r)| r.as_ref().ok().copied().flatten())
                .unwrap_or(0);
            let lag = log_end.saturating_sub(committed.unwrap_or(0));
            out.push(PartitionLag { topic, partition, committed, log_end, lag, member_id });
        }
        Ok(out)
    }

    /// Sets a group's committed offsets of every partition of `topic` to `to`
    /// (`protocol::EARLIEST`, `protocol::LATEST` or an offset). The group must be empty.
    pub async fn reset_offsets(&self, group: &str, topic: &str, to: i64) -> Result<Vec<(u32, u64)>> {
        let info = self.describe_topic(topic).await?;
        let partitions: Vec<u32> = info.partitions?.iter().map(|p| p.partition).collect();
        let mut offsets = Vec::new();
        for p in &partitions {
            let target = if to >= 0 {
                to as u64
            } else {
                let conn = self.to_leader(topic, *p).await?;
                let r = protocol::list_offsets(&conn, &[(topic.to_string(), *p, to)]).await?;
                r.into_iter().next().and_then(|(_, _, o)| o.ok().flatten()).unwrap_or(0)
            };
            offsets.push((topic.to_string(), *p, target, String::new()));
        }
        let offsets = &offsets;
        let results = self
            .on_coordinator(group, |conn| async move { protocol::commit_offsets(&conn, group, "", -1, offsets).await })
            .await?;
        for (_, _, r) in results {
            r?;
        }
        Ok(offsets.iter().map(|(_, p, o, _)| (*p, *o)).collect())
    }

    /// Deletes an empty group and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        self.on_coordinator(group, |conn| async move { protocol::delete_group(&conn, group).await }).await
    }

    /// Every transactional id of the cluster with its state (each node lists those it
    /// coordinates), by id.
    pub async fn list_transactions(&self) -> Result<Vec<protocol::TransactionInfo>> {
        let mut all = Vec::new();
        for node in self.router.learn_nodes().await? {
            let conn = self.router.to_node(Some(node)).await?;
            all.extend(protocol::list_transactions(&conn).await?);
        }
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all.dedup_by(|a, b| a.transactional_id == b.transactional_id);
        Ok(all)
    }

    /// One transactional id's state (`TRANSACTIONAL_ID_NOT_FOUND` when none).
    pub async fn describe_transaction(&self, transactional_id: &str) -> Result<protocol::TransactionInfo> {
        self.list_transactions()
            .await?
            .into_iter()
            .find(|t| t.transactional_id == transactional_id)
            .ok_or_else(|| ClientError::server(105, Some(&format!("no transactional id {transactional_id:?}"))))
    }

    /// Aborts a transactional id's ongoing transaction (a hanging one): read-committed
    /// consumers move past it, and its producer is fenced.
    pub async fn abort_transaction(&self, transactional_id: &str) -> Result<()> {
        with_retries(
            RETRY_FOR,
            coordinator_moved,
            || self.router.to_txn_coordinator(transactional_id),
            || {},
            |conn| async move { protocol::abort_transaction(&conn, transactional_id).await },
        )
        .await
    }

    /// Deletes the records of a partition below `offset` (-1: all written so far), as
    /// Kafka's DeleteRecords. Returns the partition's new log start.
    pub async fn delete_records(&self, topic: &str, partition: u32, offset: i64) -> Result<u64> {
        let conn = self.to_leader(topic, partition).await?;
        protocol::delete_records(&conn, &[(topic.to_string(), partition, offset)])
            .await?
            .into_iter()
            .next()
            .map_or_else(|| Err(ClientError::Protocol("empty DeleteRecords response".into())), |(_, _, r)| r)
    }
}
