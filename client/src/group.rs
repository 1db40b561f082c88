//! The group consumer: `subscribe` to topics as a member of a consumer group, and the
//! coordinator shares the topics' partitions among the group's members.
//!
//! A background task heartbeats every `heartbeat_interval_ms`; when the coordinator
//! answers that the group is rebalancing, the next `poll` commits (with auto commit),
//! joins again, tells the rebalance listener which partitions were revoked and which
//! assigned (only those that moved), and starts each new partition at its committed
//! offset, or where `auto.offset.reset` says when there is none. Offsets are committed
//! automatically every `auto_commit_interval_ms` (and before a rebalance and at close),
//! or by the application with `commit_sync`, `commit_async` or explicit offsets.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::connection::Connection;
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, SeekTo};
use crate::error::{ClientError, ErrorCode, Result};
use crate::protocol;
use crate::router::{coordinator_moved, with_retries, Router};

/// Group settings, named and defaulted as Kafka's consumer.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub group_id: String,
    pub session_timeout_ms: u32,
    pub heartbeat_interval_ms: u64,
    /// How long the coordinator waits for members to join again (max.poll.interval.ms).
    pub rebalance_timeout_ms: u32,
    pub enable_auto_commit: bool,
    pub auto_commit_interval_ms: u64,
    /// range, roundrobin or cooperative-sticky.
    pub strategy: String,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            group_id: String::new(),
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            rebalance_timeout_ms: 300_000,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            strategy: "cooperative-sticky".into(),
        }
    }
}

/// Told about assignment changes, on the thread calling `poll`.
pub trait RebalanceListener: Send {
    /// These partitions are no longer this member's (their offsets were committed first
    /// when auto commit is on).
    fn on_revoked(&mut self, _partitions: &[(String, u32)]) {}
    /// These partitions are now this member's.
    fn on_assigned(&mut self, _partitions: &[(String, u32)]) {}
}

#[derive(Default)]
struct Membership {
    member_id: String,
    generation: i32,
    /// The generation a heartbeat found stale (rejoin if it is still ours).
    stale_generation: Option<i32>,
}

/// A consumer in a group.
/// The connection to the group's coordinator: found from metadata (the leader of the
/// group's offsets partition), found again when it moves or fails.
struct CoordinatorLink {
    router: Router,
    group: String,
    current: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// Set when a request found the coordinator moved: the next one looks it up again.
    moved: std::sync::atomic::AtomicBool,
}

impl CoordinatorLink {
    async fn conn(&self) -> Result<Arc<Connection>> {
        let mut current = self.current.lock().await;
        let moved = self.moved.swap(false, std::sync::atomic::Ordering::SeqCst);
        match current.as_ref() {
            Some(c) if !moved && !c.is_broken() => Ok(c.clone()),
            _ => {
                let c = self.router.to_coordinator(&self.group).await?;
                *current = Some(c.clone());
                Ok(c)
            }
        }
    }

    fn forget(&self) {
        self.moved.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Runs `call` on the coordinator, again while it moves (at most `COORDINATOR_RETRY`).
    async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        with_retries(COORDINATOR_RETRY, coordinator_moved, || self.conn(), || self.forget(), call).await
    }
}

/// How long a group request keeps looking for a coordinator that moved.
const COORDINATOR_RETRY: Duration = Duration::from_secs(30);

pub struct GroupConsumer {
    consumer: Consumer,
    link: Arc<CoordinatorLink>,
    config: GroupConfig,
    topics: Vec<String>,
    membership: Arc<Mutex<Membership>>,
    heartbeat: Option<JoinHandle<()>>,
    listener: Option<Box<dyn RebalanceListener>>,
    last_commit: Instant,
    assignment: Vec<(String, u32)>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupConsumer({}, {:?})", self.config.group_id, self.assignment)
    }
}

fn lock(m: &Mutex<Membership>) -> std::sync::MutexGuard<'_, Membership> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GroupConsumer {
    pub async fn new(consumer_config: ConsumerConfig, config: GroupConfig) -> Result<GroupConsumer> {
        if config.group_id.is_empty() {
            return Err(ClientError::Config("group.id is empty".into()));
        }
        if config.heartbeat_interval_ms == 0 || config.heartbeat_interval_ms >= u64::from(config.session_timeout_ms) {
            return Err(ClientError::Config(format!(
                "heartbeat.interval.ms = {} must be above 0 and below session.timeout.ms = {}",
                config.heartbeat_interval_ms, config.session_timeout_ms
            )));
        }
        let router = Router::new(
            &consumer_config.bootstrap_servers,
            &consumer_config.client_id,
            4,
            // A join waits for the whole rebalance.
            Duration::from_millis(u64::from(config.rebalance_timeout_ms) + consumer_config.request_timeout_ms),
            Duration::ZERO,
            Arc::new(consumer_config.security.clone()),
        );
        router.any().await?;
        let link = CoordinatorLink {
            router,
            group: config.group_id.clone(),
            current: tokio::sync::Mutex::new(None),
            moved: std::sync::atomic::AtomicBool::new(false),
        };
        let consumer = Consumer::new(consumer_config).await?;
        Ok(GroupConsumer {
            consumer,
            link: Arc::new(link),
            config,
            topics: Vec::new(),
            membership: Arc::new(Mutex::new(Membership::default())),
            heartbeat: None,
            listener: None,
            last_commit: Instant::now(),
            assignment: Vec::new(),
        })
    }

    /// Called on every assignment change.
    pub fn set_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Some(Box::new(listener));
    }

    /// Joins the group for `topics`; resolves once this member has its assignment.
    pub async fn subscribe(&mut self, topics: Vec<String>) -> Result<()> {
        self.topics = topics;
        self.rejoin().await?;
        if self.heartbeat.is_none() {
            self.heartbeat = Some(tokio::spawn(heartbeats(
                self.link.clone(),
                self.config.group_id.clone(),
                self.membership.clone(),
                Duration::from_millis(self.config.heartbeat_interval_ms),
            )));
        }
        Ok(())
    }

    /// This member's partitions.
    #[must_use]
    pub fn assignment(&self) -> &[(String, u32)] {
        &self.assignment
    }

    #[must_use]
    pub fn member_id(&self) -> String {
        lock(&self.membership).member_id.clone()
    }

    #[must_use]
    pub fn generation(&self) -> i32 {
        lock(&self.membership).generation
    }

    /// The next offset `poll` returns for a partition.
    #[must_use]
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.consumer.position(topic, partition)
    }

    /// Records from this member's partitions; takes part in rebalances and auto commits.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let stale = {
            let m = lock(&self.membership);
            m.stale_generation.is_some_and(|g| g == m.generation)
        };
        if stale {
            self.rejoin().await?;
        }
        if self.config.enable_auto_commit
            && self.last_commit.elapsed() >= Duration::from_millis(self.config.auto_commit_interval_ms)
        {
            // A failed auto commit is retried at the next interval, as Kafka's.
            let _ = self.commit_sync().await;
        }
        self.consumer.poll(timeout).await
    }

    /// Commits the positions of every assigned partition and waits for the result.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets: Vec<(String, u32, u64)> = self
            .assignment
            .iter()
            .filter_map(|(t, p)| self.consumer.position(t, *p).map(|o| (t.clone(), *p, o)))
            .collect();
        self.last_commit = Instant::now();
        self.commit_offsets(&offsets).await
    }

    /// Commits the positions in the background; `callback` gets the result.
    pub fn commit_async(&mut self, callback: impl FnOnce(Result<()>) + Send + 'static) {
        let offsets: Vec<protocol::CommitOffset> = self
            .assignment
            .iter()
            .filter_map(|(t, p)| self.consumer.position(t, *p).map(|o| (t.clone(), *p, o, String::new())))
            .collect();
        let (member_id, generation) = {
            let m = lock(&self.membership);
            (m.member_id.clone(), m.generation)
        };
        let (link, group) = (self.link.clone(), self.config.group_id.clone());
        self.last_commit = Instant::now();
        tokio::spawn(async move {
            let (group, member_id, offsets) = (&group, &member_id, &offsets);
            let result = link
                .call(
                    |conn| async move { protocol::commit_offsets(&conn, group, member_id, generation, offsets).await },
                )
                .await
                .and_then(first_error);
            callback(result);
        });
    }

    /// Commits explicit offsets (the next offset to consume, as Kafka).
    pub async fn commit_offsets(&mut self, offsets: &[(String, u32, u64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let (member_id, generation) = {
            let m = lock(&self.membership);
            (m.member_id.clone(), m.generation)
        };
        let offsets: Vec<protocol::CommitOffset> =
            offsets.iter().map(|(t, p, o)| (t.clone(), *p, *o, String::new())).collect();
        let (group, member, offsets) = (&self.config.group_id, &member_id, &offsets);
        let result = self
            .link
            .call(|conn| async move { protocol::commit_offsets(&conn, group, member, generation, offsets).await })
            .await;
        if let Err(e) = &result {
            if matches!(protocol::error_code(e), Some(ErrorCode(22 | 25 | 27))) {
                // Fenced by a rebalance: rejoin at the next poll.
                let mut m = lock(&self.membership);
                m.stale_generation = Some(m.generation);
            }
        }
        result.and_then(first_error)
    }

    /// The group's committed offset of a partition.
    pub async fn committed(&self, topic: &str, partition: u32) -> Result<Option<u64>> {
        let (group, wanted) = (&self.config.group_id, &[(topic.to_string(), partition)]);
        let list =
            self.link.call(|conn| async move { protocol::fetch_offsets(&conn, group, Some(wanted)).await }).await?;
        Ok(list.into_iter().next().and_then(|(_, _, o, _)| o))
    }

    /// Commits (with auto commit) and leaves the group, so its partitions move at once.
    pub async fn close(mut self) -> Result<()> {
        if self.config.enable_auto_commit {
            let _ = self.commit_sync().await;
        }
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let member_id = self.member_id();
        if member_id.is_empty() {
            return Ok(());
        }
        let (group, member) = (&self.config.group_id, &member_id);
        match self.link.call(|conn| async move { protocol::leave_group(&conn, group, member).await }).await {
            // Already gone (its session expired): leaving is done.
            Err(e) if protocol::error_code(&e) == Some(ErrorCode(25)) => Ok(()),
            other => other,
        }
    }

    async fn rejoin(&mut self) -> Result<()> {
        if self.config.enable_auto_commit && !self.assignment.is_empty() {
            let _ = self.commit_sync().await;
        }
        let member_id = self.member_id();
        let join = |member_id: String| {
            let (link, config, topics) = (self.link.clone(), self.config.clone(), self.topics.clone());
            async move {
                let (config, topics, member_id) = (&config, &topics, &member_id);
                link.call(|conn| async move {
                    protocol::join_group(
                        &conn,
                        &config.group_id,
                        member_id,
                        config.session_timeout_ms,
                        config.rebalance_timeout_ms,
                        topics,
                        &config.strategy,
                    )
                    .await
                })
                .await
            }
        };
        let joined = match join(member_id).await {
            Err(e) if protocol::error_code(&e) == Some(ErrorCode(25)) => join(String::new()).await?,
            other => other?,
        };
        let old: BTreeSet<(String, u32)> = self.assignment.iter().cloned().collect();
        let new: BTreeSet<(String, u32)> = joined.assignment.iter().cloned().collect();
        let revoked: Vec<(String, u32)> = old.difference(&new).cloned().collect();
        let assigned: Vec<(String, u32)> = new.difference(&old).cloned().collect();
        if let Some(l) = self.listener.as_mut() {
            if !revoked.is_empty() {
                l.on_revoked(&revoked);
            }
        }
        self.consumer.assign(joined.assignment.clone());
        if !assigned.is_empty() {
            let (group, wanted) = (&self.config.group_id, &assigned);
            let committed =
                self.link.call(|conn| async move { protocol::fetch_offsets(&conn, group, Some(wanted)).await }).await?;
            for (t, p, offset, _) in committed {
                if let Some(o) = offset {
                    self.consumer.seek(&t, p, SeekTo::Offset(o)).await?;
                }
            }
        }
        self.assignment = joined.assignment;
        {
            let mut m = lock(&self.membership);
            m.member_id = joined.member_id;
            m.generation = joined.generation;
            m.stale_generation = None;
        }
        if let Some(l) = self.listener.as_mut() {
            if !assigned.is_empty() {
                l.on_assigned(&assigned);
            }
        }
        Ok(())
    }
}

/// A consumer dropped without `close` stops heartbeating: the coordinator then removes
/// it when its session times out and its partitions go to the other members. (Without
/// this, the detached heartbeat task would keep a member that no longer polls in the
/// group for as long as the runtime lives, holding its partitions, and every rebalance
/// would wait for it until the rebalance timeout.)
impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

fn first_error(results: Vec<(String, u32, Result<()>)>) -> Result<()> {
    results.into_iter().find_map(|(_, _, r)| r.err()).map_or(Ok(()), Err)
}

/// Heartbeats until aborted; marks the generation stale when the coordinator says the
/// group is rebalancing or this member is fenced or unknown.
async fn heartbeats(link: Arc<CoordinatorLink>, group: String, membership: Arc<Mutex<Membership>>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let (member_id, generation) = {
            let m = lock(&membership);
            (m.member_id.clone(), m.generation)
        };
        if member_id.is_empty() {
            continue;
        }
        let result = match link.conn().await {
            Ok(conn) => protocol::heartbeat(&conn, &group, &member_id, generation).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            if coordinator_moved(&e) {
                // The next beat finds the coordinator again; a new one does not know this
                // member and answers UNKNOWN_MEMBER_ID, which makes it rejoin.
                link.forget();
            }
            if matches!(protocol::error_code(&e), Some(ErrorCode(22 | 25 | 27))) {
                let mut m = lock(&membership);
                if m.generation == generation {
                    m.stale_generation = Some(generation);
                }
            }
        }
    }
}
