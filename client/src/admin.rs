//! The admin client: topics, partitions, configs, groups, transactions, users and ACLs.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use sluice_schemas::sasl::{self, ScramMechanism};

use crate::acl::{Acl, AclFilter};
use crate::connection::Connection;
use crate::error::{ClientError, Result};
pub use crate::protocol::UserCredential;
use crate::protocol::{self, ClusterMetadata, ConfigValue, GroupInfo, NewTopic, TopicInfo, UserChange};
use crate::router::{coordinator_moved, stale_metadata, with_retries, Router};
use crate::security::Security;

/// Kafka's codes for a change already made: what a retried create or removal is told.
const TOPIC_ALREADY_EXISTS: i16 = 36;
const BROKER_ID_NOT_REGISTERED: i16 = 102;

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

/// Connects to the first reachable of `servers` (HOST:PORT each), secured as `security`
/// says. A refused login or a bad setting ends the search: every node would refuse the
/// same credentials.
pub async fn connect_any(
    servers: &[String],
    client_id: &str,
    max_in_flight: usize,
    timeout: Duration,
    security: &Security,
) -> Result<Connection> {
    let mut last = ClientError::Config("bootstrap servers are empty".into());
    for server in servers {
        match Connection::connect(server, client_id, max_in_flight, timeout, security).await {
            Ok(c) => return Ok(c),
            Err(e @ (ClientError::Authentication(_) | ClientError::Config(_))) => return Err(e),
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

/// Bytes of the random salt of a user's SCRAM credential made here (a SHA-256 output's worth).
const USER_SALT_BYTES: usize = 32;

/// A SCRAM mechanism by name, in any case.
fn scram_mechanism(name: &str) -> Result<ScramMechanism> {
    ScramMechanism::from_name(name)
        .ok_or_else(|| ClientError::Config(format!("SCRAM mechanism {name:?}: must be SCRAM-SHA-256 or SCRAM-SHA-512")))
}

fn single(results: Vec<(String, Result<()>)>, name: &str) -> Result<()> {
    results
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or_else(|| Err(ClientError::Protocol(format!("no result for topic {name:?}"))), |(_, r)| r)
}

impl Admin {
    /// Connects to the first reachable bootstrap server (PLAINTEXT).
    pub async fn connect(bootstrap_servers: &[String]) -> Result<Admin> {
        Admin::connect_with_timeout(bootstrap_servers, Duration::from_secs(30)).await
    }

    /// As `connect`, with `timeout` for each request (Kafka's request.timeout.ms).
    pub async fn connect_with_timeout(bootstrap_servers: &[String], timeout: Duration) -> Result<Admin> {
        Admin::connect_secured(bootstrap_servers, Security::plaintext(), timeout).await
    }

    /// As `connect_with_timeout`, every connection secured as `security` says (TLS, a
    /// SASL login).
    pub async fn connect_secured(bootstrap_servers: &[String], security: Security, timeout: Duration) -> Result<Admin> {
        let router = Router::new(bootstrap_servers, "sluice-admin", 8, timeout, Duration::ZERO, Arc::new(security));
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

    /// `on_controller` for a change whose effect a repeat reports as an error (`done`: the
    /// topic exists, the node is not registered): when an earlier attempt may have been
    /// applied (its answer was lost: the connection broke or the wait timed out), that error
    /// on a later attempt means the change is made. An attempt refused before it was
    /// proposed (NOT_CONTROLLER, a refused connection) leaves nothing to find.
    async fn change_on_controller<F, Fut>(&self, done: i16, call: F) -> Result<()>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let uncertain = std::sync::atomic::AtomicBool::new(false);
        self.on_controller(|conn| {
            let attempt = call(conn);
            let uncertain = &uncertain;
            async move {
                let result = attempt.await;
                match result {
                    Err(e) if uncertain.load(Relaxed) && protocol::error_code(&e).is_some_and(|c| c.0 == done) => {
                        Ok(())
                    }
                    Err(e) => {
                        if matches!(e, ClientError::Io { .. } | ClientError::Timeout { .. }) {
                            uncertain.store(true, Relaxed);
                        }
                        Err(e)
                    }
                    ok => ok,
                }
            }
        })
        .await
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
        self.change_on_controller(TOPIC_ALREADY_EXISTS, |conn| {
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

    /// Runs `call` on any node, again on another while connections fail. Users and ACLs
    /// go to any node: the node forwards changes to the controller itself.
    async fn on_any<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        with_retries(RETRY_FOR, stale_metadata, || self.router.any(), || {}, call).await
    }

    /// The SCRAM credentials of `users` (empty: of every user), one per user and
    /// mechanism, without their secrets.
    pub async fn describe_users(&self, users: &[String]) -> Result<Vec<UserCredential>> {
        let mut credentials = self.on_any(|conn| async move { protocol::describe_users(&conn, users).await }).await?;
        credentials.sort();
        Ok(credentials)
    }

    /// Sets `user`'s SCRAM credential for `mechanism` (SCRAM-SHA-256 or SCRAM-SHA-512),
    /// creating the user if new. The password is salted here with a fresh random salt,
    /// as Kafka's AlterUserScramCredentials does: it never travels, but the salted
    /// password that does lets its holder log in as the user, so use TLS.
    pub async fn set_user_password(&self, user: &str, mechanism: &str, password: &str, iterations: u32) -> Result<()> {
        let scram = scram_mechanism(mechanism)?;
        if !(sasl::ITERATIONS_MIN..=sasl::ITERATIONS_MAX).contains(&iterations) {
            return Err(ClientError::Config(format!(
                "iterations {iterations}: must be {} to {}",
                sasl::ITERATIONS_MIN,
                sasl::ITERATIONS_MAX
            )));
        }
        if user.is_empty() || password.is_empty() {
            return Err(ClientError::Config("a user needs a name and a password".into()));
        }
        let mut salt = vec![0u8; USER_SALT_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| ClientError::Config("no randomness for a salt".into()))?;
        let salted_password = sasl::salted_password(scram, password.as_bytes(), &salt, iterations);
        let change = UserChange::Set {
            user: user.to_string(),
            mechanism: scram.name().to_string(),
            iterations,
            salt,
            salted_password,
        };
        self.alter_user(user, change).await
    }

    /// Deletes `user`'s credential for `mechanism` (the user goes with its last one).
    pub async fn delete_user(&self, user: &str, mechanism: &str) -> Result<()> {
        let scram = scram_mechanism(mechanism)?;
        self.alter_user(user, UserChange::Delete { user: user.to_string(), mechanism: scram.name().to_string() }).await
    }

    async fn alter_user(&self, user: &str, change: UserChange) -> Result<()> {
        let changes = std::slice::from_ref(&change);
        let results = self.on_any(|conn| async move { protocol::alter_users(&conn, changes).await }).await?;
        results
            .into_iter()
            .find(|(u, _)| u == user)
            .map_or_else(|| Err(ClientError::Protocol(format!("no result for user {user:?}"))), |(_, r)| r)
    }

    /// Creates access control entries; the first that failed is the error.
    pub async fn create_acls(&self, acls: Vec<Acl>) -> Result<()> {
        let acls = &acls;
        let results = self.on_any(|conn| async move { protocol::create_acls(&conn, acls).await }).await?;
        if results.len() != acls.len() {
            return Err(ClientError::Protocol(format!("{} results for {} ACL entries", results.len(), acls.len())));
        }
        results.into_iter().try_for_each(|r| r.map(|_| ()))
    }

    /// The access control entries `filter` matches, sorted.
    pub async fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<Acl>> {
        let mut acls = self.on_any(|conn| async move { protocol::describe_acls(&conn, filter).await }).await?;
        acls.sort();
        Ok(acls)
    }

    /// Deletes the entries any of `filters` matches; returns those deleted, sorted.
    pub async fn delete_acls(&self, filters: &[AclFilter]) -> Result<Vec<Acl>> {
        let results = self.on_any(|conn| async move { protocol::delete_acls(&conn, filters).await }).await?;
        let mut deleted = Vec::new();
        for result in results {
            deleted.extend(result?);
        }
        deleted.sort();
        deleted.dedup();
        Ok(deleted)
    }

    /// Starts moving partitions to new replicas (or cancels moves), as Kafka's
    /// AlterPartitionReassignments: answered once each move is recorded by the
    /// controller, not once it is done (`list_reassignments` shows what still moves).
    /// One result per move, in order.
    pub async fn alter_reassignments(&self, moves: &[protocol::PartitionMove]) -> Result<Vec<Result<()>>> {
        self.on_controller(|conn| async move { protocol::alter_reassignments(&conn, moves).await }).await
    }

    /// Forgets a node that is down for good (Kafka's UnregisterBroker): refused while it is
    /// live, holds replicas (drain it first) or is a controller voter.
    pub async fn remove_node(&self, node: u32) -> Result<()> {
        self.change_on_controller(BROKER_ID_NOT_REGISTERED, |conn| async move {
            protocol::unregister_node(&conn, node).await
        })
        .await
    }

    /// Makes node `node` (a member of the controller quorum that caught up: a node that
    /// joined) a controller voter.
    pub async fn add_voter(&self, node: u32) -> Result<()> {
        self.on_controller(|conn| async move { protocol::alter_voters(&conn, node, true).await }).await
    }

    /// Takes node `node`'s controller vote away (it keeps following the log); the
    /// controller itself hands its leadership over first.
    pub async fn remove_voter(&self, node: u32) -> Result<()> {
        self.on_controller(|conn| async move { protocol::alter_voters(&conn, node, false).await }).await
    }

    /// The controller quorum as the controller knows it.
    pub async fn describe_quorum(&self) -> Result<protocol::QuorumInfo> {
        self.on_controller(|conn| async move { protocol::describe_quorum(&conn).await }).await
    }

    /// The partition moves in progress, of these topics (`None`: all).
    pub async fn list_reassignments(&self, topics: Option<&[String]>) -> Result<Vec<protocol::MoveInProgress>> {
        self.on_controller(|conn| async move { protocol::list_reassignments(&conn, topics).await }).await
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
