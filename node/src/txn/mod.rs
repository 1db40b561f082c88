//! The transaction coordinator (Kafka's KIP-98 transactions).
//!
//! A transactional id belongs to one partition of the internal, compacted
//! `__transaction_state` topic (by hash, as groups belong to `__consumer_offsets`
//! partitions); the leader of that partition coordinates it, on the shard that owns the
//! partition. Every change of an id's state (`records::TxnMetadata`: producer id and
//! epoch, status, partitions, timeout) is appended to that partition, acknowledged by its
//! in-sync replicas, before it counts, so a new leader loads it back and carries on:
//! a transaction that was deciding (PrepareCommit / PrepareAbort) gets its markers
//! written by the new coordinator.
//!
//! The protocol, as Kafka's coordinator runs it:
//! - InitProducerId with a transactional id gives the id a producer id (the first time)
//!   and a new epoch each time, which fences the older producer; an ongoing transaction
//!   of the id is aborted first (the client is told CONCURRENT_TRANSACTIONS and retries).
//! - AddPartitionsToTxn (and AddOffsetsToTxn, which adds the group's offsets partition)
//!   records the partitions the producer is about to write; the transaction is Ongoing.
//! - EndTxn stores PrepareCommit or PrepareAbort; the coordinator then writes a commit or
//!   abort marker (a control batch) to every partition of the transaction through its
//!   leader (`ops::txn::write_marker`) and stores CompleteCommit or CompleteAbort, and
//!   EndTxn answers then (or after `END_TXN_WAIT`: the decision is stored either way).
//!   Until it completes the id's requests get CONCURRENT_TRANSACTIONS.
//! - A transaction Ongoing for longer than its timeout is aborted with the producer's
//!   epoch bumped, so the producer that left it is fenced.
//!
//! One change of an id is in flight at a time (`Entry::busy`); a request that finds one
//! gets CONCURRENT_TRANSACTIONS (retriable), as Kafka answers an id with a pending
//! state transition.

pub mod records;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use sluice_schemas::records::{BatchBuilder, BatchConfig, RecordIter};
use sluice_schemas::TopicPartition;
use tracing::{debug, info, warn};

use crate::errors::{ErrorKind, NodeError};
use crate::io;
use crate::shard::Shard;
use crate::storage::PartitionLog;
pub use records::{TxnMetadata, TxnRecord, TxnStatus};

pub use sluice_schemas::groups::{txn_partition, TXN_PARTITIONS, TXN_TOPIC};
/// The longest transaction timeout a producer may ask for (Kafka's
/// transaction.max.timeout.ms default: 15 minutes).
pub const TXN_TIMEOUT_MS_MAX: i32 = 900_000;
/// How often the coordinator looks for transactions past their timeout.
pub const EXPIRY_CHECK: Duration = Duration::from_secs(1);
/// Transactional ids are at most this long (they are keys of the state topic).
pub const TRANSACTIONAL_ID_BYTES_MAX: usize = 1024;
/// The longest wait between tries of a marker or a state record that failed.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How long EndTxn waits for its markers before it answers (the decision is stored
/// before; past this the markers go on in the background).
const END_TXN_WAIT: Duration = Duration::from_secs(5);

/// Work for the coordinator of a transactional id (List: every shard).
#[derive(Debug)]
pub enum TxnRequest {
    InitProducerId {
        transactional_id: String,
        timeout_ms: i32,
        existing: Option<(i64, i16)>,
    },
    AddPartitions {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<TopicPartition>,
    },
    /// Answered with the producer id and epoch the producer goes on with: its own, or
    /// with `bump` (transactions v2, EndTxn v5+) the next epoch (or a new producer id
    /// once the epoch is spent).
    EndTxn {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        bump: bool,
    },
    Describe {
        transactional_id: String,
    },
    List,
    /// An operator's abort of the id's ongoing transaction, fencing its producer.
    Abort {
        transactional_id: String,
    },
}

impl TxnRequest {
    #[must_use]
    pub fn transactional_id(&self) -> Option<&str> {
        match self {
            TxnRequest::InitProducerId { transactional_id, .. }
            | TxnRequest::AddPartitions { transactional_id, .. }
            | TxnRequest::EndTxn { transactional_id, .. }
            | TxnRequest::Describe { transactional_id }
            | TxnRequest::Abort { transactional_id } => Some(transactional_id),
            TxnRequest::List => None,
        }
    }
}

#[derive(Debug)]
pub enum TxnReply {
    ProducerId(Result<(i64, i16), NodeError>),
    Done(Result<(), NodeError>),
    Described(Result<TxnMetadata, NodeError>),
    Listed(Vec<(String, TxnMetadata)>),
}

struct Entry {
    meta: TxnMetadata,
    /// A change of this id is being stored.
    busy: bool,
}

/// The ids of one state partition this shard coordinates.
struct Loaded {
    /// Which load of the partition this is: tasks of an earlier load (markers being
    /// written) stop once it changed.
    generation: u64,
    ids: HashMap<String, Entry>,
}

/// The transactions coordinated by one shard: those of the state partitions it owns and
/// its node leads.
#[derive(Default)]
pub struct TxnCoordinator {
    partitions: RefCell<HashMap<u32, Loaded>>,
    /// Partitions being loaded: their ids' requests are answered "not available".
    loading: RefCell<BTreeSet<u32>>,
    generations: Cell<u64>,
    /// Woken whenever a transaction completes (its markers are written).
    completed: io::WaitQueue,
}

fn error(kind: ErrorKind, message: impl Into<String>) -> NodeError {
    NodeError::new(kind, message)
}

fn concurrent(id: &str, what: &str) -> NodeError {
    error(ErrorKind::ConcurrentTransactions, format!("transactional id {id:?} {what}; retry"))
}

fn now_ms() -> i64 {
    io::Clock::system().now_ms()
}

/// An EndTxn: whose transaction, how it ends, and whether the epoch goes up with it
/// (transactions v2).
#[derive(Clone, Copy, Debug)]
struct Ending {
    producer_id: i64,
    epoch: i16,
    commit: bool,
    bump: bool,
}

/// Transactions v2: the deciding transaction's markers carry the next epoch, which fences
/// whatever the producer still had in flight at the old one. When the epoch would be the
/// last one, the markers take it and the producer goes on with a new producer id
/// (`next_producer_id`, taken at completion).
async fn bump_epoch(shard: &Rc<Shard>, meta: &mut TxnMetadata) -> Result<(), NodeError> {
    meta.client_version = 2;
    meta.producer_epoch = meta.producer_epoch.saturating_add(1);
    if meta.producer_epoch == i16::MAX {
        meta.next_producer_id = crate::ops::admin::new_producer_id(shard).await?;
    }
    Ok(())
}

impl TxnCoordinator {
    pub async fn handle(&self, shard: &Rc<Shard>, request: TxnRequest) -> TxnReply {
        match request {
            TxnRequest::InitProducerId { transactional_id, timeout_ms, existing } => {
                TxnReply::ProducerId(self.init_producer_id(shard, &transactional_id, timeout_ms, existing).await)
            }
            TxnRequest::AddPartitions { transactional_id, producer_id, epoch, partitions } => {
                TxnReply::Done(self.add_partitions(shard, &transactional_id, producer_id, epoch, partitions).await)
            }
            TxnRequest::EndTxn { transactional_id, producer_id, epoch, commit, bump } => {
                let ending = Ending { producer_id, epoch, commit, bump };
                TxnReply::ProducerId(self.end_txn(shard, &transactional_id, ending).await)
            }
            TxnRequest::Describe { transactional_id } => TxnReply::Described(self.describe(&transactional_id)),
            TxnRequest::List => TxnReply::Listed(self.list()),
            TxnRequest::Abort { transactional_id } => TxnReply::Done(self.abort(shard, &transactional_id).await),
        }
    }

    /// Whether this shard coordinates `id` now (its partition is loaded here).
    fn check_coordinator(&self, id: &str) -> Result<u32, NodeError> {
        if id.is_empty() || id.len() > TRANSACTIONAL_ID_BYTES_MAX {
            return Err(error(
                ErrorKind::InvalidRequest,
                format!("a transactional id has 1 to {TRANSACTIONAL_ID_BYTES_MAX} bytes, not {}", id.len()),
            ));
        }
        let partition = txn_partition(id);
        if self.loading.borrow().contains(&partition) {
            return Err(error(
                ErrorKind::CoordinatorLoadInProgress,
                format!("the transactions of {TXN_TOPIC}-{partition} are being loaded here; retry"),
            ));
        }
        if !self.partitions.borrow().contains_key(&partition) {
            return Err(error(
                ErrorKind::NotCoordinator,
                format!("this node does not coordinate transactional id {id:?} ({TXN_TOPIC}-{partition})"),
            ));
        }
        Ok(partition)
    }

    /// The id's state, and the generation of its partition's load; `None` for an id the
    /// coordinator does not know. Refuses one with a change in flight.
    fn current(&self, id: &str, partition: u32) -> Result<(Option<TxnMetadata>, u64), NodeError> {
        let partitions = self.partitions.borrow();
        let Some(loaded) = partitions.get(&partition) else {
            return Err(error(ErrorKind::NotCoordinator, format!("{TXN_TOPIC}-{partition} is no longer led here")));
        };
        match loaded.ids.get(id) {
            Some(e) if e.busy => Err(concurrent(id, "has a change in progress")),
            Some(e) => Ok((Some(e.meta.clone()), loaded.generation)),
            None => Ok((None, loaded.generation)),
        }
    }

    /// Stores `meta` as the id's new state: appended to its state partition (with the
    /// in-sync replicas), then taken. The id is busy meanwhile; the change is dropped if
    /// the partition was reloaded or let go of in between.
    async fn store(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        partition: u32,
        generation: u64,
        meta: TxnMetadata,
    ) -> Result<(), NodeError> {
        self.write(shard, id, partition, generation, Some(meta)).await
    }

    /// Forgets `id` if it is still idle (`idle`): a tombstone in its state partition,
    /// then out of memory.
    async fn forget(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        partition: u32,
        generation: u64,
        idle: impl Fn(&Entry) -> bool,
    ) -> Result<bool, NodeError> {
        let still_idle = self.partitions.borrow().get(&partition).and_then(|l| l.ids.get(id)).is_some_and(&idle);
        if !still_idle {
            return Ok(false);
        }
        // No await between the check and `write` marking the id busy.
        self.write(shard, id, partition, generation, None).await.map(|()| true)
    }

    /// `store` (`Some`) or `forget` (`None`).
    async fn write(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        partition: u32,
        generation: u64,
        value: Option<TxnMetadata>,
    ) -> Result<(), NodeError> {
        let gone = || error(ErrorKind::NotCoordinator, format!("{TXN_TOPIC}-{partition} is no longer led here"));
        let fresh = {
            let mut partitions = self.partitions.borrow_mut();
            let Some(loaded) = partitions.get_mut(&partition).filter(|l| l.generation == generation) else {
                return Err(gone());
            };
            let fresh = !loaded.ids.contains_key(id);
            let entry = match (loaded.ids.get_mut(id), &value) {
                (Some(entry), _) => entry,
                (None, Some(meta)) => {
                    loaded.ids.entry(id.to_string()).or_insert(Entry { meta: meta.clone(), busy: false })
                }
                (None, None) => return Ok(()),
            };
            if entry.busy {
                return Err(concurrent(id, "has a change in progress"));
            }
            entry.busy = true;
            fresh
        };
        let record = TxnRecord { transactional_id: id.to_string(), value: value.clone() };
        let result = append_record(shard, partition, &record).await;
        let mut partitions = self.partitions.borrow_mut();
        let Some(loaded) = partitions.get_mut(&partition).filter(|l| l.generation == generation) else {
            return Err(gone());
        };
        match (result, value) {
            (Ok(()), Some(meta)) => {
                loaded.ids.insert(id.to_string(), Entry { meta, busy: false });
                Ok(())
            }
            (Ok(()), None) => {
                loaded.ids.remove(id);
                Ok(())
            }
            (Err(e), _) => {
                // A new id whose first record failed is forgotten; a known one keeps its state.
                if fresh {
                    loaded.ids.remove(id);
                } else if let Some(entry) = loaded.ids.get_mut(id) {
                    entry.busy = false;
                }
                Err(e)
            }
        }
    }

    async fn init_producer_id(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        timeout_ms: i32,
        existing: Option<(i64, i16)>,
    ) -> Result<(i64, i16), NodeError> {
        if !(1..=TXN_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return Err(error(
                ErrorKind::InvalidTransactionTimeout,
                format!("transaction timeout {timeout_ms} ms is not between 1 and {TXN_TIMEOUT_MS_MAX} ms"),
            ));
        }
        let partition = self.check_coordinator(id)?;
        let (current, generation) = self.current(id, partition)?;
        let now = now_ms();
        let (producer_id, epoch) = match current {
            None => {
                let pid = crate::ops::admin::new_producer_id(shard).await?;
                (pid, 0)
            }
            Some(m) if m.status.preparing() => return Err(concurrent(id, "is completing its last transaction")),
            Some(m) if m.status == TxnStatus::Ongoing => {
                // Abort the transaction the older producer left, fencing it; the client
                // retries and then gets the next epoch.
                info!(transactional_id = %id, producer_id = m.producer_id, "aborting the ongoing transaction of a re-initialized transactional id");
                self.begin_abort(shard, id, partition, generation, m, true).await?;
                return Err(concurrent(id, "had an ongoing transaction, which is being aborted"));
            }
            Some(m) => {
                if let Some((pid, e)) = existing {
                    if pid != m.producer_id || e != m.producer_epoch {
                        return Err(error(
                            ErrorKind::ProducerFenced,
                            format!(
                                "producer {pid} epoch {e} is not transactional id {id:?}'s current producer \
                                 ({} epoch {})",
                                m.producer_id, m.producer_epoch
                            ),
                        ));
                    }
                }
                if m.producer_epoch >= i16::MAX - 1 {
                    (crate::ops::admin::new_producer_id(shard).await?, 0)
                } else {
                    (m.producer_id, m.producer_epoch + 1)
                }
            }
        };
        let meta = TxnMetadata::empty(producer_id, epoch, timeout_ms, now);
        self.store(shard, id, partition, generation, meta).await?;
        info!(transactional_id = %id, producer_id, epoch, "transactional producer initialized");
        Ok((producer_id, epoch))
    }

    /// The id's state for a request of producer `producer_id` at `epoch`, which must be
    /// its current producer.
    fn producer_state(&self, id: &str, producer_id: i64, epoch: i16) -> Result<(u32, u64, TxnMetadata), NodeError> {
        let partition = self.check_coordinator(id)?;
        let (current, generation) = self.current(id, partition)?;
        let Some(m) = current else {
            return Err(error(
                ErrorKind::InvalidProducerIdMapping,
                format!("transactional id {id:?} has no producer: call InitProducerId first"),
            ));
        };
        if m.producer_id != producer_id {
            return Err(error(
                ErrorKind::InvalidProducerIdMapping,
                format!("transactional id {id:?} belongs to producer {}, not {producer_id}", m.producer_id),
            ));
        }
        if epoch != m.producer_epoch {
            return Err(error(
                ErrorKind::ProducerFenced,
                format!(
                    "producer {producer_id} epoch {epoch} was fenced: transactional id {id:?} is at epoch {}",
                    m.producer_epoch
                ),
            ));
        }
        Ok((partition, generation, m))
    }

    async fn add_partitions(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<TopicPartition>,
    ) -> Result<(), NodeError> {
        let (partition, generation, m) = self.producer_state(id, producer_id, epoch)?;
        if m.status.preparing() {
            return Err(concurrent(id, "is completing its last transaction"));
        }
        for tp in &partitions {
            shard.check_partition(&tp.topic, tp.partition)?;
        }
        if m.status == TxnStatus::Ongoing && partitions.iter().all(|tp| m.partitions.contains(tp)) {
            return Ok(());
        }
        let now = now_ms();
        let mut meta = m.clone();
        if meta.status != TxnStatus::Ongoing {
            meta.start_ms = now;
            meta.partitions.clear();
        }
        meta.status = TxnStatus::Ongoing;
        meta.partitions.extend(partitions);
        meta.last_update_ms = now;
        self.store(shard, id, partition, generation, meta).await
    }

    async fn end_txn(&self, shard: &Rc<Shard>, id: &str, e: Ending) -> Result<(i64, i16), NodeError> {
        let ending = if e.commit { "commit" } else { "abort" };
        let partition = self.check_coordinator(id)?;
        if e.bump {
            if let Some(answer) = self.retried_end(id, partition, e).await? {
                return Ok(answer);
            }
        }
        let (partition, generation, m) = self.producer_state(id, e.producer_id, e.epoch)?;
        let continuing = |m: &TxnMetadata| (m.producer_id, m.producer_epoch);
        match (m.status, e.commit) {
            (TxnStatus::Ongoing, _) => {
                let mut meta = m;
                meta.status = if e.commit { TxnStatus::PrepareCommit } else { TxnStatus::PrepareAbort };
                meta.last_update_ms = now_ms();
                if e.bump {
                    bump_epoch(shard, &mut meta).await?;
                }
                let answer = meta.clone().completed();
                self.store(shard, id, partition, generation, meta).await?;
                self.spawn_completion(shard, id.to_string(), partition, generation);
                // Answer once the markers are written (bounded): the producer's next
                // transaction then starts at once instead of being told
                // CONCURRENT_TRANSACTIONS and backing off (Kafka answers at the decision;
                // the client's retry of its next AddPartitionsToTxn costs it 20-100 ms).
                let _ = io::timeout(END_TXN_WAIT, self.wait_completed(id, partition)).await;
                Ok(continuing(&answer))
            }
            // Transactions v2: an abort with nothing in the transaction (after an error
            // before any partition joined) still ends it, with the epoch bumped.
            (TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort, false) if e.bump => {
                let mut meta = m;
                meta.status = TxnStatus::PrepareAbort;
                meta.last_update_ms = now_ms();
                bump_epoch(shard, &mut meta).await?;
                meta = meta.completed();
                let answer = continuing(&meta);
                self.store(shard, id, partition, generation, meta).await?;
                Ok(answer)
            }
            // A retry of an EndTxn that completed.
            (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) if !e.bump => Ok(continuing(&m)),
            (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) if !e.bump => {
                // A retry of an EndTxn whose markers are being written (by a new
                // coordinator, after a failover): answered as the first would have been.
                let _ = io::timeout(END_TXN_WAIT, self.wait_completed(id, partition)).await;
                self.settled(id, partition, e)
            }
            (status, _) => Err(error(
                ErrorKind::InvalidTxnState,
                format!("cannot {ending} transactional id {id:?}'s transaction: it is {}", status.name()),
            )),
        }
    }

    /// Transactions v2: an EndTxn retried after its transaction was decided carries the
    /// epoch before the bump (or the producer id before an overflow). It is answered as
    /// the first one was, once the markers are written: `None` when it is not one.
    async fn retried_end(&self, id: &str, partition: u32, e: Ending) -> Result<Option<(i64, i16)>, NodeError> {
        let (Some(m), _) = self.current(id, partition)? else { return Ok(None) };
        let same_outcome = if e.commit {
            matches!(m.status, TxnStatus::PrepareCommit | TxnStatus::CompleteCommit)
        } else {
            matches!(m.status, TxnStatus::PrepareAbort | TxnStatus::CompleteAbort)
        };
        let before_bump = (m.producer_id == e.producer_id && m.producer_epoch == e.epoch.saturating_add(1))
            || (m.previous_producer_id == e.producer_id && m.producer_epoch == 0 && m.status.completed());
        if !(m.client_version == 2 && same_outcome && before_bump) {
            return Ok(None);
        }
        let _ = io::timeout(END_TXN_WAIT, self.wait_completed(id, partition)).await;
        self.settled(id, partition, Ending { producer_id: m.producer_id, epoch: m.producer_epoch, ..e }).map(Some)
    }

    /// The answer to an EndTxn whose transaction was decided: the producer id and epoch
    /// to go on with once it is complete, CONCURRENT_TRANSACTIONS while its markers are
    /// still being written.
    fn settled(&self, id: &str, partition: u32, e: Ending) -> Result<(i64, i16), NodeError> {
        let done = if e.commit { TxnStatus::CompleteCommit } else { TxnStatus::CompleteAbort };
        match self.current(id, partition) {
            Ok((Some(m), _)) if m.status == done => {
                let ours = (m.producer_id == e.producer_id && m.producer_epoch == e.epoch)
                    || (e.bump && m.previous_producer_id == e.producer_id);
                if ours {
                    Ok((m.producer_id, m.producer_epoch))
                } else {
                    Err(error(ErrorKind::ProducerFenced, format!("transactional id {id:?} has a newer producer")))
                }
            }
            _ => Err(concurrent(id, "is still writing its markers")),
        }
    }

    /// Resolves once `id`'s transaction is no longer deciding (or this shard stopped
    /// coordinating it).
    async fn wait_completed(&self, id: &str, partition: u32) {
        loop {
            let wait = self.completed.wait();
            let deciding = self
                .partitions
                .borrow()
                .get(&partition)
                .and_then(|l| l.ids.get(id))
                .is_some_and(|e| e.meta.status.preparing());
            if !deciding {
                return;
            }
            wait.await;
        }
    }

    /// Stores PrepareAbort for an ongoing transaction (with the producer's epoch bumped
    /// when `fence`: the producer that left it may not write again) and writes its abort
    /// markers in the background.
    async fn begin_abort(
        &self,
        shard: &Rc<Shard>,
        id: &str,
        partition: u32,
        generation: u64,
        m: TxnMetadata,
        fence: bool,
    ) -> Result<(), NodeError> {
        let mut meta = m;
        if fence && meta.producer_epoch < i16::MAX - 1 {
            meta.producer_epoch += 1;
        }
        meta.status = TxnStatus::PrepareAbort;
        meta.last_update_ms = now_ms();
        self.store(shard, id, partition, generation, meta).await?;
        self.spawn_completion(shard, id.to_string(), partition, generation);
        Ok(())
    }

    /// Writes the markers of a decided transaction to each of its partitions (retrying
    /// until each is written, a partition is gone, or this shard stops coordinating the
    /// id), then stores the transaction as complete.
    fn spawn_completion(&self, shard: &Rc<Shard>, id: String, partition: u32, generation: u64) {
        let shard = shard.clone();
        io::spawn_detached(async move {
            let coordinator = &shard.txns;
            let still =
                |c: &TxnCoordinator| c.partitions.borrow().get(&partition).is_some_and(|l| l.generation == generation);
            let meta = match coordinator.partitions.borrow().get(&partition).and_then(|l| l.ids.get(&id)) {
                Some(e) if e.meta.status.preparing() => e.meta.clone(),
                _ => return,
            };
            let commit = meta.status == TxnStatus::PrepareCommit;
            let marker = crate::ops::txn::Marker {
                producer_id: meta.producer_id,
                epoch: meta.producer_epoch,
                commit,
                coordinator_epoch: i32::try_from(generation).unwrap_or(i32::MAX),
            };
            let writes: Vec<io::LocalFuture<'_, ()>> = meta
                .partitions
                .iter()
                .map(|tp| {
                    let shard = &shard;
                    let f: io::LocalFuture<'_, ()> = Box::pin(async move {
                        let mut wait = Duration::from_millis(20);
                        loop {
                            if !still(&shard.txns) {
                                return;
                            }
                            let result = crate::ops::txn::write_marker(shard, tp, marker).await;
                            match result {
                                Ok(()) => return,
                                Err(e) if e.kind == ErrorKind::UnknownTopicOrPartition => {
                                    warn!(partition = %tp, "skipping the transaction marker of a deleted partition: {e}");
                                    return;
                                }
                                Err(e) => {
                                    debug!(partition = %tp, "writing a transaction marker: {e}; retrying");
                                    io::sleep(wait).await;
                                    wait = (wait * 2).min(RETRY_MAX);
                                }
                            }
                        }
                    });
                    f
                })
                .collect();
            io::join_all(writes).await;
            let mut done = meta.clone().completed();
            done.last_update_ms = now_ms();
            let mut wait = Duration::from_millis(20);
            while still(coordinator) {
                if let Some(entry) =
                    coordinator.partitions.borrow_mut().get_mut(&partition).and_then(|l| l.ids.get_mut(&id))
                {
                    // Nothing else changes a deciding id; let `store` take it.
                    entry.busy = false;
                }
                match coordinator.store(&shard, &id, partition, generation, done.clone()).await {
                    Ok(()) => {
                        debug!(transactional_id = %id, commit, "transaction complete");
                        coordinator.completed.notify_all();
                        return;
                    }
                    Err(e) => {
                        debug!(transactional_id = %id, "storing a completed transaction: {e}; retrying");
                        io::sleep(wait).await;
                        wait = (wait * 2).min(RETRY_MAX);
                    }
                }
            }
        });
    }

    /// Aborts the id's ongoing transaction (an operator's `sluice transaction abort`),
    /// fencing the producer that left it; a transaction already ending or ended is left.
    async fn abort(&self, shard: &Rc<Shard>, id: &str) -> Result<(), NodeError> {
        let partition = self.check_coordinator(id)?;
        let (current, generation) = self.current(id, partition)?;
        match current {
            None => Err(error(ErrorKind::TransactionalIdNotFound, format!("no transactional id {id:?}"))),
            Some(m) if m.status == TxnStatus::Ongoing => {
                info!(transactional_id = %id, producer_id = m.producer_id, "aborting a transaction on request");
                self.begin_abort(shard, id, partition, generation, m, true).await
            }
            Some(m) => Err(error(
                ErrorKind::InvalidTxnState,
                format!("transactional id {id:?} has no ongoing transaction to abort: it is {}", m.status.name()),
            )),
        }
    }

    fn describe(&self, id: &str) -> Result<TxnMetadata, NodeError> {
        let partition = self.check_coordinator(id)?;
        self.partitions
            .borrow()
            .get(&partition)
            .and_then(|l| l.ids.get(id))
            .map(|e| e.meta.clone())
            .ok_or_else(|| error(ErrorKind::TransactionalIdNotFound, format!("no transactional id {id:?}")))
    }

    fn list(&self) -> Vec<(String, TxnMetadata)> {
        let mut all: Vec<(String, TxnMetadata)> = self
            .partitions
            .borrow()
            .values()
            .flat_map(|l| l.ids.iter().map(|(id, e)| (id.clone(), e.meta.clone())))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Aborts the transactions that stayed Ongoing past their timeout, fencing their
    /// producers (Kafka's transaction expiry), and forgets the ids idle (no transaction
    /// open, no change) for longer than `--transactional-id-expiration-ms` (Kafka's
    /// transactional.id.expiration.ms) with a tombstone in their state partition.
    pub async fn expire(&self, shard: &Rc<Shard>) {
        let now = now_ms();
        let idle_ms = i64::try_from(shard.config.transactional_id_expiration_ms).unwrap_or(i64::MAX);
        let is_idle = |e: &Entry| {
            !e.busy
                && matches!(e.meta.status, TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort)
                && now.saturating_sub(e.meta.last_update_ms) > idle_ms
        };
        let idle: Vec<(String, u32, u64)> = self
            .partitions
            .borrow()
            .iter()
            .flat_map(|(p, l)| {
                l.ids
                    .iter()
                    .filter(|(_, e)| is_idle(e))
                    .map(|(id, _)| (id.clone(), *p, l.generation))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (id, partition, generation) in idle {
            match self.forget(shard, &id, partition, generation, is_idle).await {
                Ok(true) => info!(transactional_id = %id, "forgot a transactional id idle past its expiration"),
                Ok(false) => {}
                Err(e) => debug!(transactional_id = %id, "forgetting an idle transactional id: {e}"),
            }
        }
        let expired: Vec<(String, u32, u64, TxnMetadata)> = self
            .partitions
            .borrow()
            .iter()
            .flat_map(|(p, l)| {
                l.ids
                    .iter()
                    .filter(|(_, e)| {
                        !e.busy
                            && e.meta.status == TxnStatus::Ongoing
                            && now.saturating_sub(e.meta.start_ms) > i64::from(e.meta.timeout_ms)
                    })
                    .map(|(id, e)| (id.clone(), *p, l.generation, e.meta.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (id, partition, generation, meta) in expired {
            info!(
                transactional_id = %id,
                producer_id = meta.producer_id,
                timeout_ms = meta.timeout_ms,
                "aborting a transaction past its timeout"
            );
            if let Err(e) = self.begin_abort(shard, &id, partition, generation, meta, true).await {
                debug!(transactional_id = %id, "aborting an expired transaction: {e}");
            }
        }
    }

    /// Answers the ids of `partition` "loading" until `load` or `end_loading`.
    pub fn begin_loading(&self, partition: u32) {
        self.loading.borrow_mut().insert(partition);
    }

    pub fn end_loading(&self, partition: u32) {
        self.loading.borrow_mut().remove(&partition);
    }

    /// This shard no longer coordinates the ids of `partition`.
    pub fn forget_partition(&self, partition: u32) {
        self.partitions.borrow_mut().remove(&partition);
    }

    /// Reads the ids of state partition `partition` (which this node now leads) from its
    /// log, then resumes the transactions that were deciding.
    pub async fn load(&self, shard: &Rc<Shard>, partition: u32, log: &PartitionLog) {
        let mut ids: HashMap<String, Entry> = HashMap::new();
        crate::groups::read_log(log, "transactions", |bytes| {
            for batch in sluice_schemas::batch::BatchWalker::new(bytes) {
                let Ok((_, header, batch)) = batch else { break };
                if header.attributes().is_control() {
                    continue;
                }
                let Ok(iter) = RecordIter::from_bytes(batch) else { continue };
                for r in iter.flatten() {
                    let Some(record) = r.key.and_then(|key| TxnRecord::parse(key, r.value)) else { continue };
                    match record.value {
                        Some(meta) => {
                            ids.insert(record.transactional_id, Entry { meta, busy: false });
                        }
                        None => {
                            ids.remove(&record.transactional_id);
                        }
                    }
                }
            }
        })
        .await;
        let generation = self.generations.get() + 1;
        self.generations.set(generation);
        let deciding: Vec<String> =
            ids.iter().filter(|(_, e)| e.meta.status.preparing()).map(|(id, _)| id.clone()).collect();
        info!(
            partition,
            ids = ids.len(),
            deciding = deciding.len(),
            "coordinating the transactions of {TXN_TOPIC}-{partition}"
        );
        self.partitions.borrow_mut().insert(partition, Loaded { generation, ids });
        self.end_loading(partition);
        for id in deciding {
            self.spawn_completion(shard, id, partition, generation);
        }
    }
}

/// Appends one state record to a state partition this shard leads, acknowledged by its
/// in-sync replicas.
async fn append_record(shard: &Rc<Shard>, partition: u32, record: &TxnRecord) -> Result<(), NodeError> {
    let timestamp_ms = now_ms();
    let fail = |e: sluice_schemas::records::RecordError| {
        error(ErrorKind::Unknown, format!("a record of {TXN_TOPIC}-{partition}: {e}"))
    };
    let mut builder = BatchBuilder::new(BatchConfig::default()).map_err(fail)?;
    builder.push(Some(&record.key()), record.value().as_deref(), &[], timestamp_ms).map_err(fail)?;
    let batch = builder.finish().map_err(fail)?;
    shard
        .append_internal(TXN_TOPIC, partition, &batch)
        .await
        .map_err(|e| crate::errors::coordinator_append(TXN_TOPIC, partition, e))
}

/// Runs `expire` every `EXPIRY_CHECK` while the shard lives.
pub fn spawn_expiry(shard: std::rc::Weak<Shard>) {
    io::spawn_detached(async move {
        loop {
            io::sleep(EXPIRY_CHECK).await;
            let Some(s) = shard.upgrade() else { return };
            s.txns.expire(&s).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_ids_spread_over_the_state_partitions() {
        let used: BTreeSet<u32> = (0..100).map(|i| txn_partition(&format!("tx-{i}"))).collect();
        assert_eq!(used.len(), TXN_PARTITIONS as usize);
    }
}
