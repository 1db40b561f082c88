//! Idempotent producers' state, derived from the log itself: per producer id, its epoch
//! and the last batches it wrote (sequence numbers and offsets), so that a batch retried
//! after a lost response is answered with its first append's offsets instead of being
//! stored twice, and a batch that skips sequence numbers is refused.
//!
//! Every batch a producer writes carries (producer id, epoch, base sequence) in its
//! RecordBatch v2 header, so every replica derives the same state from the same batches:
//! a leader as it appends, a follower as it copies, any replica when it opens its log
//! (from the snapshot written at the active segment's roll plus a scan of that segment).
//! A new leader or a restarted node therefore deduplicates a retry exactly as the old
//! leader would have. Kafka's `ProducerStateManager` and its `.snapshot` files do the same.
//!
//! Kafka's rules (KIP-98), with runs where Kafka keeps batches: the partition keeps each
//! producer's last five runs, a run being batches with consecutive sequence numbers at
//! contiguous offsets (one append of several batches is one run; so are a producer's
//! appends that nothing else came between). Within a run a sequence number gives its
//! offset, so an append whose sequence numbers lie in a run is a duplicate, answered with
//! those offsets, whether it is one batch (Kafka's clients) or several (the native client
//! sends a partition's ready batches in one append); otherwise its first sequence must
//! follow the last one; a newer epoch starts afresh at sequence 0; an older epoch is
//! fenced; a producer the partition does not know (new, or forgotten past `PRODUCERS_MAX`
//! producers or with old segments) must start at 0. Every replica derives the same runs
//! from the same batches. Plain state, no I/O.
//!
//! Transactions (KIP-98) are derived the same way. A producer's batch with the
//! transactional attribute opens its transaction when none is open (its offset is the
//! transaction's first offset); the coordinator's marker (a control batch,
//! `sluice_schemas::control`) closes it. An ABORT marker adds an `AbortedTxn` (the
//! transaction's first offset and the marker's offset) to the partition's aborted list,
//! which read_committed fetches are given. The smallest first offset of the open
//! transactions is the first unstable offset: the last stable offset (LSO) stops there.
//! Guarantees:
//! - The open transactions and the aborted list are a function of the batches in the
//!   log: leader, followers and a reopened log (snapshot plus replay of the batches after
//!   it) agree on them.
//! - Truncation forgets transactions opened at or after the cut and aborted entries whose
//!   marker was cut; a producer's last completed transaction whose marker was cut (and
//!   whose first batch was not) is open again. Only the last completed one is remembered
//!   per producer, so a second cut further back into an older transaction of the same
//!   producer does not reopen that one (a reopen of the log derives it exactly).
//! - A producer with an open transaction is not forgotten past `PRODUCERS_MAX` while
//!   another can be: forgetting it would move the LSO past uncommitted records. When
//!   every producer has one open, the partition keeps more than `PRODUCERS_MAX` (their
//!   coordinators close them within the transaction timeout).
//! - The aborted list is kept whole in memory (and in each snapshot) from the log start
//!   on: one entry per aborted transaction still in the log.

use std::collections::{BTreeMap, HashMap, VecDeque};

use sluice_schemas::batch::BatchHeader;
use sluice_schemas::control::ControlType;
use sluice_schemas::Offset;

use crate::error::StorageError;

/// Runs remembered per producer (Kafka's max.in.flight for idempotence: each append in
/// flight is at most one run).
pub const RECENT_BATCHES: usize = 5;
/// Sequence numbers wrap from i32::MAX to 0.
const SEQUENCES: i64 = i32::MAX as i64 + 1;
/// Producers remembered per partition; past it, the least recently seen is forgotten
/// (its next batch is accepted as from a new producer).
pub const PRODUCERS_MAX: usize = 10_000;
/// The suffix of a producer-state snapshot, `<segment base>.producers`: the state as of
/// that segment's base offset (every batch before it), written when the segment starts.
pub const SNAPSHOT_SUFFIX: &str = "producers";

const SNAPSHOT_MAGIC: &[u8; 4] = b"SLPS";
/// Version 2 adds the transactions (each producer's open and last completed one, and the
/// aborted list); version 1 files are still read.
const SNAPSHOT_VERSION: u16 = 2;
/// Aborted transactions a snapshot may hold: a bound on what a corrupt count may make
/// the decoder allocate, far above any real partition's.
const SNAPSHOT_ABORTED_MAX: u32 = 1 << 28;

/// Who wrote a batch and which sequence numbers it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchIdentity {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
}

impl BatchIdentity {
    /// The identity of an idempotent batch; `None` for batches without a producer id or
    /// sequence (plain producers, transaction markers).
    #[must_use]
    pub fn of(header: &BatchHeader) -> Option<BatchIdentity> {
        let producer_id = header.producer_id.get();
        let first_sequence = header.base_sequence.get();
        if producer_id < 0 || first_sequence < 0 {
            return None;
        }
        let last_sequence = first_sequence.wrapping_add(header.last_offset_delta.get()) & i32::MAX;
        Some(BatchIdentity { producer_id, epoch: header.producer_epoch.get(), first_sequence, last_sequence })
    }

    /// Where this batch's records lie if the run `r` holds all of its sequence numbers.
    fn within(&self, r: &Recent) -> Option<Duplicate> {
        let length = r.span();
        let first = distance(r.first_sequence, self.first_sequence);
        let last = distance(r.first_sequence, self.last_sequence);
        (first <= last && last <= length)
            .then(|| Duplicate { base: Offset(r.base.0 + first), last: Offset(r.base.0 + last) })
    }
}

/// How far sequence `to` is after `from` (they wrap from i32::MAX to 0).
fn distance(from: i32, to: i32) -> u64 {
    (i64::from(to) - i64::from(from)).rem_euclid(SEQUENCES) as u64
}

/// An idempotent batch and where it lies in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub id: BatchIdentity,
    pub base: Offset,
    pub last: Offset,
}

/// A retried batch that is already in the log, at these offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duplicate {
    pub base: Offset,
    pub last: Offset,
}

/// A run: batches of one producer with consecutive sequence numbers at contiguous
/// offsets (`last - base == last_sequence - first_sequence`, modulo the wrap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Recent {
    first_sequence: i32,
    last_sequence: i32,
    base: Offset,
    last: Offset,
}

impl Recent {
    /// Sequence numbers after the first one.
    fn span(&self) -> u64 {
        distance(self.first_sequence, self.last_sequence)
    }

    /// Whether `batch` continues the run: the next sequence number at the next offset.
    fn continued_by(&self, batch: &ProducerBatch) -> bool {
        distance(self.last_sequence, batch.id.first_sequence) == 1
            && batch.base.0 == self.last.0 + 1
            && self.span() + 1 + distance(batch.id.first_sequence, batch.id.last_sequence) < SEQUENCES as u64 / 2
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    recent: VecDeque<Recent>,
    /// When it was last written, in batches recorded by this partition (for eviction).
    seen: u64,
    /// The first offset of its open transaction.
    txn_first: Option<Offset>,
    /// Its last completed transaction: first offset and the marker's offset (so that a
    /// cut through the marker opens it again).
    last_txn: Option<(Offset, Offset)>,
}

impl Producer {
    fn new(epoch: i16) -> Producer {
        Producer { epoch, recent: VecDeque::new(), seen: 0, txn_first: None, last_txn: None }
    }

    /// Whether the producer still holds anything the log holds.
    fn holds_anything(&self) -> bool {
        !self.recent.is_empty() || self.txn_first.is_some() || self.last_txn.is_some()
    }
}

/// An aborted transaction: its producer, the offset of its first batch and of its ABORT
/// marker. A read_committed reader skips that producer's transactional records from
/// `first_offset` until the marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    /// The ABORT marker's offset.
    pub last_offset: Offset,
}

/// What the producer state needs of any batch in the log: who wrote it, where it lies,
/// whether it is transactional, and a marker's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedBatch {
    pub producer_id: i64,
    pub epoch: i16,
    /// Its sequence numbers, for an idempotent batch.
    pub identity: Option<BatchIdentity>,
    pub base: Offset,
    pub last: Offset,
    pub transactional: bool,
    /// The marker's type, for a transaction marker.
    pub control: Option<ControlType>,
}

impl LoggedBatch {
    /// The batch as the producer state sees it, at the offsets its header says; `None`
    /// for batches that change no producer's state (no producer id, or neither
    /// idempotent, transactional nor a marker).
    #[must_use]
    pub fn of(header: &BatchHeader, control: Option<ControlType>) -> Option<LoggedBatch> {
        let producer_id = header.producer_id.get();
        let identity = BatchIdentity::of(header);
        let transactional = header.attributes().is_transactional();
        if producer_id < 0 || (identity.is_none() && !transactional && control.is_none()) {
            return None;
        }
        Some(LoggedBatch {
            producer_id,
            epoch: header.producer_epoch.get(),
            identity,
            base: header.base_offset(),
            last: header.last_offset(),
            transactional,
            control,
        })
    }

    /// The same batch at offsets `base..=last` (an append gives it its offsets).
    #[must_use]
    pub fn at(self, base: Offset, last: Offset) -> LoggedBatch {
        LoggedBatch { base, last, ..self }
    }
}

/// What a partition knew of one producer's transaction when its leader took the guard,
/// for KIP-890 part 1's verification: a transactional batch that would open its
/// producer's transaction here is appended only if the coordinator confirmed, after the
/// guard was taken, that the partition is in the producer's ongoing transaction
/// (`verified`), and no marker of that producer was written here since (`last_marker`
/// unchanged). Without it a produce that arrived late, after its transaction was aborted
/// and the marker written, would open a transaction that no marker ever closes (a
/// hanging transaction: the last stable offset stops there for good).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnGuard {
    pub producer_id: i64,
    /// The producer's transaction was open here: nothing to verify.
    pub open: bool,
    /// The offset of the producer's last marker here (`None`: none remembered).
    pub last_marker: Option<Offset>,
    /// The coordinator confirmed the partition is in the producer's ongoing transaction.
    pub verified: bool,
}

/// A producer's state as an operator sees it (DescribeProducers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    /// -1 when the producer wrote no idempotent batch the partition remembers.
    pub last_sequence: i32,
    /// Its latest batch or marker the partition remembers.
    pub last_offset: Offset,
    /// The first offset of its open transaction.
    pub current_txn_start_offset: Option<Offset>,
}

/// The idempotent and transactional producers of one partition, and its aborted
/// transactions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
    clock: u64,
    /// The open transactions by first offset: the first is the first unstable offset.
    open: BTreeMap<Offset, i64>,
    /// Aborted transactions in marker order (by `last_offset`).
    aborted: VecDeque<AbortedTxn>,
}

impl ProducerStates {
    /// Checks the idempotent batches of one append. When they are the whole append and one
    /// producer's, with consecutive sequence numbers, they are checked as one range:
    /// `Ok(Some)` when a run holds it (a retry, answered with those offsets), `Ok(None)`
    /// when it may be appended. Batches of several producers are checked each after the
    /// one before it; none of them may repeat a stored one.
    pub fn check(&self, ids: &[BatchIdentity], batches_in_append: usize) -> Result<Option<Duplicate>, StorageError> {
        if let Some(range) = one_range(ids, batches_in_append)? {
            return self.check_range(&range);
        }
        for (i, id) in ids.iter().enumerate() {
            // The same producer earlier in this append decides, else the state.
            if let Some(e) = ids[..i].iter().rev().find(|e| e.producer_id == id.producer_id) {
                if id.epoch != e.epoch || distance(e.last_sequence, id.first_sequence) != 1 {
                    return Err(StorageError::OutOfOrderSequence {
                        producer_id: id.producer_id,
                        sequence: id.first_sequence,
                        reason: format!("the batch before it in this append ends at {}", e.last_sequence),
                    });
                }
                continue;
            }
            if self.check_range(id)?.is_some() {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id: id.producer_id,
                    sequence: id.first_sequence,
                    reason: "repeats stored records inside an append of several producers' batches".to_string(),
                });
            }
        }
        Ok(None)
    }

    /// Checks one producer's range of sequence numbers against its state.
    fn check_range(&self, id: &BatchIdentity) -> Result<Option<Duplicate>, StorageError> {
        let Some(p) = self.producers.get(&id.producer_id) else {
            if id.first_sequence == 0 {
                return Ok(None);
            }
            return Err(StorageError::UnknownProducer { producer_id: id.producer_id, sequence: id.first_sequence });
        };
        if id.epoch < p.epoch {
            return Err(StorageError::ProducerFenced {
                producer_id: id.producer_id,
                epoch: id.epoch,
                current: p.epoch,
            });
        }
        if id.epoch > p.epoch {
            if id.first_sequence != 0 {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id: id.producer_id,
                    sequence: id.first_sequence,
                    reason: format!("epoch {} is new here and starts at sequence 0", id.epoch),
                });
            }
            return Ok(None);
        }
        if let Some(duplicate) = p.recent.iter().find_map(|r| id.within(r)) {
            return Ok(Some(duplicate));
        }
        if let Some(last) = p.recent.back().map(|r| r.last_sequence) {
            let ahead = distance(last, id.first_sequence);
            let expected = last.wrapping_add(1) & i32::MAX;
            if ahead > 1 && ahead < SEQUENCES as u64 / 2 {
                return Err(StorageError::SequenceGap {
                    producer_id: id.producer_id,
                    sequence: id.first_sequence,
                    expected,
                });
            }
            if ahead != 1 {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id: id.producer_id,
                    sequence: id.first_sequence,
                    reason: format!("the last stored sequence is {last}: expected {expected}"),
                });
            }
        }
        Ok(None)
    }

    /// The guard of `producer_id`'s transaction here as it stands (not verified).
    #[must_use]
    pub fn txn_guard(&self, producer_id: i64) -> TxnGuard {
        let p = self.producers.get(&producer_id);
        TxnGuard {
            producer_id,
            open: p.is_some_and(|p| p.txn_first.is_some()),
            last_marker: p.and_then(|p| p.last_txn.map(|(_, marker)| marker)),
            verified: false,
        }
    }

    /// Refuses a transactional batch of `producer_id` that would open its transaction
    /// here unless `guard` was verified and no marker of the producer came since it was
    /// taken (`TxnGuard`). A batch joining an open transaction needs nothing.
    pub fn check_guard(&self, producer_id: i64, guard: &TxnGuard) -> Result<(), StorageError> {
        let now = self.txn_guard(producer_id);
        if now.open {
            return Ok(());
        }
        let reason = if guard.producer_id != producer_id || !guard.verified {
            "the coordinator did not confirm that this partition is in the producer's transaction"
        } else if guard.last_marker != now.last_marker {
            "the producer's transaction ended here while its coordinator was asked"
        } else {
            return Ok(());
        };
        Err(StorageError::TransactionNotVerified { producer_id, reason })
    }

    /// Refuses a marker or a sequence-less transactional batch of an older epoch than
    /// its producer's (the coordinator raised the epoch to fence that producer).
    pub fn check_epoch(&self, producer_id: i64, epoch: i16) -> Result<(), StorageError> {
        match self.producers.get(&producer_id) {
            Some(p) if epoch < p.epoch => Err(StorageError::ProducerFenced { producer_id, epoch, current: p.epoch }),
            _ => Ok(()),
        }
    }

    /// Records an idempotent batch the log now holds (see `record_logged`).
    pub fn record(&mut self, batch: ProducerBatch) {
        let id = batch.id;
        self.record_logged(LoggedBatch {
            producer_id: id.producer_id,
            epoch: id.epoch,
            identity: Some(id),
            base: batch.base,
            last: batch.last,
            transactional: false,
            control: None,
        });
    }

    /// Records any batch the log now holds, from its header (where it lies) and, for a
    /// control batch, its marker type (`sluice_schemas::control::control_type`). Returns
    /// the aborted transaction an ABORT marker completes.
    pub fn record_header(&mut self, header: &BatchHeader, control: Option<ControlType>) -> Option<AbortedTxn> {
        LoggedBatch::of(header, control).and_then(|b| self.record_logged(b))
    }

    /// Records a batch the log now holds (appended, copied from the leader, or found at
    /// recovery). A batch of an older epoch than the producer's changes nothing; a newer
    /// epoch (a batch's or a marker's) starts the producer's runs afresh. A transactional
    /// batch opens the producer's transaction if none is open; a marker closes it, and an
    /// ABORT marker adds it to the aborted list (and returns it).
    pub fn record_logged(&mut self, batch: LoggedBatch) -> Option<AbortedTxn> {
        self.clock += 1;
        let pid = batch.producer_id;
        if self.producers.len() >= PRODUCERS_MAX && !self.producers.contains_key(&pid) {
            self.evict_one();
        }
        let producer = self.producers.entry(pid).or_insert_with(|| Producer::new(batch.epoch));
        if batch.epoch < producer.epoch {
            return None;
        }
        if batch.epoch > producer.epoch {
            producer.epoch = batch.epoch;
            producer.recent.clear();
        }
        producer.seen = self.clock;
        if let Some(control) = batch.control {
            let first = match producer.txn_first.take() {
                Some(first) => {
                    self.open.remove(&first);
                    first
                }
                None => batch.base,
            };
            producer.last_txn = Some((first, batch.base));
            if control == ControlType::Commit {
                return None;
            }
            let aborted = AbortedTxn { producer_id: pid, first_offset: first, last_offset: batch.base };
            debug_assert!(self.aborted.back().is_none_or(|a| a.last_offset < aborted.last_offset));
            self.aborted.push_back(aborted);
            return Some(aborted);
        }
        if batch.transactional && producer.txn_first.is_none() {
            producer.txn_first = Some(batch.base);
            self.open.insert(batch.base, pid);
        }
        let id = batch.identity?;
        let run = ProducerBatch { id, base: batch.base, last: batch.last };
        if let Some(last) = producer.recent.back_mut().filter(|r| r.continued_by(&run)) {
            last.last_sequence = id.last_sequence;
            last.last = batch.last;
            return None;
        }
        if producer.recent.len() == RECENT_BATCHES {
            producer.recent.pop_front();
        }
        producer.recent.push_back(Recent {
            first_sequence: id.first_sequence,
            last_sequence: id.last_sequence,
            base: batch.base,
            last: batch.last,
        });
        None
    }

    /// Forgets the least recently seen producer without an open transaction (see the
    /// module documentation); none when every producer has one.
    fn evict_one(&mut self) {
        let oldest = self.producers.iter().filter(|(_, p)| p.txn_first.is_none()).min_by_key(|(_, p)| p.seen);
        if let Some(pid) = oldest.map(|(pid, _)| *pid) {
            self.producers.remove(&pid);
        }
    }

    /// Forgets records at or after `end` (the log was cut there): runs after it go, a run
    /// across it is cut short; transactions opened at or after it go, a completed one
    /// whose marker was cut is open again; aborted entries whose marker was cut go. A
    /// producer left with nothing is forgotten.
    pub fn truncate(&mut self, end: Offset) {
        let open = &mut self.open;
        open.retain(|first, _| *first < end);
        self.producers.retain(|pid, p| {
            p.recent.retain(|r| r.base < end);
            if let Some(run) = p.recent.back_mut().filter(|r| r.last >= end) {
                let kept = end.0 - 1 - run.base.0;
                run.last = Offset(end.0 - 1);
                run.last_sequence = ((i64::from(run.first_sequence) + kept as i64) % SEQUENCES) as i32;
            }
            if p.txn_first.is_some_and(|first| first >= end) {
                p.txn_first = None;
            }
            if let Some((first, marker)) = p.last_txn {
                if marker >= end {
                    p.last_txn = None;
                    if first < end {
                        // The marker was cut: the transaction is open again.
                        assert!(p.txn_first.is_none(), "producer {pid}: a transaction opened before its last marker");
                        p.txn_first = Some(first);
                        open.insert(first, *pid);
                    }
                }
            }
            p.holds_anything()
        });
        while self.aborted.back().is_some_and(|a| a.last_offset >= end) {
            self.aborted.pop_back();
        }
    }

    /// Forgets the aborted transactions wholly below `log_start` (retention or
    /// DeleteRecords removed them): no reader can fetch their records any more.
    pub fn advance_start(&mut self, log_start: Offset) {
        while self.aborted.front().is_some_and(|a| a.last_offset < log_start) {
            self.aborted.pop_front();
        }
    }

    /// The first offset of the earliest open transaction: read_committed readers stop
    /// there. Cheap (the open transactions are kept ordered).
    #[must_use]
    pub fn first_unstable_offset(&self) -> Option<Offset> {
        self.open.keys().next().copied()
    }

    /// The aborted transactions that may hold records in `[from, to)`: those with
    /// `last_offset >= from && first_offset < to`, by first offset.
    #[must_use]
    pub fn aborted_between(&self, from: Offset, to: Offset) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        let mut found: Vec<AbortedTxn> =
            self.aborted.iter().skip(start).filter(|a| a.first_offset < to).copied().collect();
        found.sort_by_key(|a| (a.first_offset, a.producer_id));
        found
    }

    /// Every aborted transaction still remembered, in marker order.
    #[must_use]
    pub fn aborted_len(&self) -> usize {
        self.aborted.len()
    }

    /// Whether the log still holds the records of `id` (a producer's range of sequence
    /// numbers) at the offsets of `at`.
    #[must_use]
    pub fn holds(&self, id: &BatchIdentity, at: Duplicate) -> bool {
        self.producers
            .get(&id.producer_id)
            .is_some_and(|p| p.epoch == id.epoch && p.recent.iter().any(|r| id.within(r) == Some(at)))
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Every producer with its latest batch, by producer id.
    #[must_use]
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut all: Vec<ProducerSummary> = self
            .producers
            .iter()
            .filter_map(|(pid, p)| {
                let last_offset = [p.recent.back().map(|r| r.last), p.txn_first, p.last_txn.map(|t| t.1)]
                    .into_iter()
                    .flatten()
                    .max()?;
                Some(ProducerSummary {
                    producer_id: *pid,
                    epoch: p.epoch,
                    last_sequence: p.recent.back().map_or(-1, |r| r.last_sequence),
                    last_offset,
                    current_txn_start_offset: p.txn_first,
                })
            })
            .collect();
        all.sort_by_key(|s| s.producer_id);
        all
    }

    /// The snapshot file's bytes: magic, version, producers least recently seen first
    /// (id, epoch, batch count, then each batch's sequences and offsets, then the open
    /// transaction's first offset and the last completed transaction's first and marker
    /// offsets, each behind a presence byte), the aborted transactions (count, then
    /// producer id, first and last offset each), and a CRC-32C of everything before it.
    /// Little-endian.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut producers: Vec<(&i64, &Producer)> = self.producers.iter().collect();
        producers.sort_by_key(|(_, p)| p.seen);
        let mut out = Vec::with_capacity(20 + producers.len() * (29 + RECENT_BATCHES * 24) + self.aborted.len() * 24);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&(producers.len() as u32).to_le_bytes());
        for (pid, p) in producers {
            out.extend_from_slice(&pid.to_le_bytes());
            out.extend_from_slice(&p.epoch.to_le_bytes());
            out.push(p.recent.len() as u8);
            for r in &p.recent {
                out.extend_from_slice(&r.first_sequence.to_le_bytes());
                out.extend_from_slice(&r.last_sequence.to_le_bytes());
                out.extend_from_slice(&r.base.0.to_le_bytes());
                out.extend_from_slice(&r.last.0.to_le_bytes());
            }
            out.push(u8::from(p.txn_first.is_some()));
            out.extend_from_slice(&p.txn_first.unwrap_or_default().0.to_le_bytes());
            out.push(u8::from(p.last_txn.is_some()));
            let (first, marker) = p.last_txn.unwrap_or_default();
            out.extend_from_slice(&first.0.to_le_bytes());
            out.extend_from_slice(&marker.0.to_le_bytes());
        }
        out.extend_from_slice(&(self.aborted.len() as u32).to_le_bytes());
        for a in &self.aborted {
            out.extend_from_slice(&a.producer_id.to_le_bytes());
            out.extend_from_slice(&a.first_offset.0.to_le_bytes());
            out.extend_from_slice(&a.last_offset.0.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads `encode`'s bytes, or says what is wrong with them.
    pub fn decode(bytes: &[u8]) -> Result<ProducerStates, String> {
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else { return Err("shorter than its checksum".into()) };
        if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
            return Err("checksum mismatch".into());
        }
        let mut r = Reader { bytes: body, at: 0 };
        if r.take::<4>()? != *SNAPSHOT_MAGIC {
            return Err("not a producer snapshot".into());
        }
        let version = u16::from_le_bytes(r.take()?);
        if version != 1 && version != SNAPSHOT_VERSION {
            return Err(format!("unknown version {version}"));
        }
        let count = u32::from_le_bytes(r.take()?);
        let mut states = ProducerStates::default();
        for _ in 0..count {
            let pid = i64::from_le_bytes(r.take()?);
            let epoch = i16::from_le_bytes(r.take()?);
            let [n] = r.take::<1>()?;
            if usize::from(n) > RECENT_BATCHES {
                return Err(format!("producer {pid} has {n} batches, more than {RECENT_BATCHES}"));
            }
            let mut p = Producer::new(epoch);
            for _ in 0..n {
                let first_sequence = i32::from_le_bytes(r.take()?);
                let last_sequence = i32::from_le_bytes(r.take()?);
                let base = Offset(u64::from_le_bytes(r.take()?));
                let last = Offset(u64::from_le_bytes(r.take()?));
                if last < base || p.recent.back().is_some_and(|b| b.last >= base) {
                    return Err(format!("producer {pid}: batch at {base}..={last} out of order"));
                }
                p.recent.push_back(Recent { first_sequence, last_sequence, base, last });
            }
            if version >= 2 {
                let [open] = r.take::<1>()?;
                let first = Offset(u64::from_le_bytes(r.take()?));
                p.txn_first = (open != 0).then_some(first);
                let [done] = r.take::<1>()?;
                let first = Offset(u64::from_le_bytes(r.take()?));
                let marker = Offset(u64::from_le_bytes(r.take()?));
                p.last_txn = (done != 0).then_some((first, marker));
            }
            states.clock += 1;
            p.seen = states.clock;
            if let Some(first) = p.txn_first {
                if states.open.insert(first, pid).is_some() {
                    return Err(format!("two open transactions start at {first}"));
                }
            }
            if states.producers.insert(pid, p).is_some() {
                return Err(format!("producer {pid} twice"));
            }
        }
        if version >= 2 {
            let count = u32::from_le_bytes(r.take()?);
            if count > SNAPSHOT_ABORTED_MAX {
                return Err(format!("{count} aborted transactions, more than {SNAPSHOT_ABORTED_MAX}"));
            }
            for _ in 0..count {
                let producer_id = i64::from_le_bytes(r.take()?);
                let first_offset = Offset(u64::from_le_bytes(r.take()?));
                let last_offset = Offset(u64::from_le_bytes(r.take()?));
                if first_offset > last_offset || states.aborted.back().is_some_and(|a| a.last_offset >= last_offset) {
                    return Err(format!("aborted transaction {first_offset}..={last_offset} out of order"));
                }
                states.aborted.push_back(AbortedTxn { producer_id, first_offset, last_offset });
            }
        }
        if r.at != body.len() {
            return Err(format!("{} bytes after the last producer", body.len() - r.at));
        }
        Ok(states)
    }
}

/// The range of sequence numbers of an append that is all one producer's batches, in
/// order; `None` when the append has other batches too; an error when one producer's
/// batches in it skip or repeat sequence numbers.
fn one_range(ids: &[BatchIdentity], batches_in_append: usize) -> Result<Option<BatchIdentity>, StorageError> {
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else { return Ok(None) };
    if ids.len() != batches_in_append || ids.iter().any(|i| i.producer_id != first.producer_id) {
        return Ok(None);
    }
    for pair in ids.windows(2) {
        if pair[1].epoch != pair[0].epoch || distance(pair[0].last_sequence, pair[1].first_sequence) != 1 {
            return Err(StorageError::OutOfOrderSequence {
                producer_id: pair[1].producer_id,
                sequence: pair[1].first_sequence,
                reason: format!("the batch before it in this append ends at {}", pair[0].last_sequence),
            });
        }
    }
    Ok(Some(BatchIdentity { last_sequence: last.last_sequence, ..*first }))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.at + N;
        let Some(slice) = self.bytes.get(self.at..end) else { return Err("truncated".into()) };
        self.at = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn id(first: i32, last: i32, epoch: i16) -> BatchIdentity {
        BatchIdentity { producer_id: 7, epoch, first_sequence: first, last_sequence: last }
    }

    fn stored(s: &mut ProducerStates, id: BatchIdentity, base: u64) {
        let span = (id.last_sequence - id.first_sequence) as u64;
        s.record(ProducerBatch { id, base: Offset(base), last: Offset(base + span) });
    }

    fn refused(r: Result<Option<Duplicate>, StorageError>) -> bool {
        matches!(
            r,
            Err(StorageError::OutOfOrderSequence { .. }
                | StorageError::SequenceGap { .. }
                | StorageError::ProducerFenced { .. })
        )
    }

    #[test]
    fn retries_are_answered_with_the_first_offsets_and_gaps_are_refused() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&[id(0, 9, 0)], 1).ok(), Some(None));
        stored(&mut s, id(0, 9, 0), 100);
        assert_eq!(s.check(&[id(0, 9, 0)], 1).ok(), Some(Some(Duplicate { base: Offset(100), last: Offset(109) })));
        assert!(matches!(
            s.check(&[id(11, 12, 0)], 1),
            Err(StorageError::SequenceGap { sequence: 11, expected: 10, .. })
        ));
        assert!(matches!(s.check(&[id(5, 12, 0)], 1), Err(StorageError::OutOfOrderSequence { .. })), "behind");
        // Inside one append, each batch follows the one before it.
        assert_eq!(s.check(&[id(10, 12, 0), id(13, 13, 0)], 2).ok(), Some(None));
        assert!(refused(s.check(&[id(10, 12, 0), id(14, 14, 0)], 2)));
        assert!(refused(s.check(&[id(0, 9, 0)], 2)), "a duplicate among several batches is refused");
        stored(&mut s, id(10, 12, 0), 110);
        // A new epoch starts afresh; the old one is fenced.
        assert_eq!(s.check(&[id(0, 0, 1)], 1).ok(), Some(None));
        stored(&mut s, id(0, 0, 1), 120);
        assert!(matches!(s.check(&[id(13, 13, 0)], 1), Err(StorageError::ProducerFenced { .. })));
        assert_eq!(s.check(&[id(0, 0, 1)], 1).ok(), Some(Some(Duplicate { base: Offset(120), last: Offset(120) })));
    }

    #[test]
    fn truncation_forgets_the_cut_batches_and_a_snapshot_round_trips() {
        let mut s = ProducerStates::default();
        for k in 0..8 {
            stored(&mut s, id(k * 2, k * 2 + 1, 3), 10 * k as u64);
        }
        let other = BatchIdentity { producer_id: 9, epoch: 0, first_sequence: 0, last_sequence: 0 };
        stored(&mut s, other, 75);
        let decoded = ProducerStates::decode(&s.encode());
        assert_eq!(decoded.as_ref().map(ProducerStates::summaries), Ok(s.summaries()));
        let mut bytes = s.encode();
        bytes[7] ^= 1;
        assert!(ProducerStates::decode(&bytes).is_err());
        s.truncate(Offset(60));
        assert_eq!(s.check(&[id(12, 13, 3)], 1).ok(), Some(None), "the cut batch is appended again");
        assert_eq!(s.check(&[id(10, 11, 3)], 1).ok(), Some(Some(Duplicate { base: Offset(50), last: Offset(51) })));
        assert_eq!(s.len(), 1, "producer 9 wrote only after the cut");
        s.truncate(Offset(0));
        assert!(s.is_empty());
        assert!(
            matches!(s.check(&[id(40, 41, 3)], 1), Err(StorageError::UnknownProducer { sequence: 40, .. })),
            "a forgotten producer is told so unless it starts again at 0"
        );
        assert_eq!(s.check(&[id(0, 1, 3)], 1).ok(), Some(None));
        let next_epoch = BatchIdentity { producer_id: 7, epoch: 4, first_sequence: 0, last_sequence: 0 };
        stored(&mut s, id(0, 1, 3), 0);
        assert_eq!(s.check(&[next_epoch], 1).ok(), Some(None), "a new epoch starts at 0");
        let skipping = BatchIdentity { first_sequence: 5, last_sequence: 5, ..next_epoch };
        assert!(matches!(s.check(&[skipping], 1), Err(StorageError::OutOfOrderSequence { .. })), "and only there");
    }

    #[test]
    fn the_least_recently_seen_producer_is_forgotten_past_the_limit() {
        let mut s = ProducerStates::default();
        for pid in 0..PRODUCERS_MAX as i64 + 1 {
            let id = BatchIdentity { producer_id: pid, epoch: 0, first_sequence: 0, last_sequence: 0 };
            s.record(ProducerBatch { id, base: Offset(pid as u64), last: Offset(pid as u64) });
        }
        assert_eq!(s.len(), PRODUCERS_MAX);
        assert!(!s.producers.contains_key(&0), "the first one seen is the one forgotten");
    }

    /// An append of several batches is one run: a retry of the whole append, or of any
    /// batch in it, is answered with its offsets; appends nothing came between join the
    /// run; another producer's batch in between starts a new run; past five runs the
    /// oldest is forgotten (a retry of it is out of order); a cut shortens a run.
    #[test]
    fn runs_answer_retries_of_several_batches_and_any_batch_in_them() {
        let mut s = ProducerStates::default();
        // One append of three batches (sequences 0-9, 10-19, 20-29) at offsets 100-129.
        let batches = [id(0, 9, 0), id(10, 19, 0), id(20, 29, 0)];
        assert_eq!(s.check(&batches, 3).ok(), Some(None));
        for (i, b) in batches.iter().enumerate() {
            stored(&mut s, *b, 100 + 10 * i as u64);
        }
        let whole = Duplicate { base: Offset(100), last: Offset(129) };
        assert_eq!(s.check(&batches, 3).ok(), Some(Some(whole)), "the whole append again");
        assert_eq!(s.check(&[id(10, 19, 0)], 1).ok(), Some(Some(Duplicate { base: Offset(110), last: Offset(119) })));
        let range = BatchIdentity { last_sequence: 29, ..batches[0] };
        assert!(s.holds(&range, whole));
        // The next append right after joins the run.
        assert_eq!(s.check(&[id(30, 39, 0)], 1).ok(), Some(None));
        stored(&mut s, id(30, 39, 0), 130);
        assert_eq!(s.check(&[id(25, 34, 0)], 1).ok(), Some(Some(Duplicate { base: Offset(125), last: Offset(134) })));
        // A gap inside an append is refused.
        assert!(matches!(s.check(&[id(40, 49, 0), id(51, 60, 0)], 2), Err(StorageError::OutOfOrderSequence { .. })));
        // Five more runs, each after another producer's batch: the first run is forgotten.
        for k in 0..5u64 {
            let other = BatchIdentity { producer_id: 8, epoch: 0, first_sequence: k as i32, last_sequence: k as i32 };
            stored(&mut s, other, 140 + 20 * k);
            let seq = 40 + 10 * k as i32;
            stored(&mut s, id(seq, seq + 9, 0), 141 + 20 * k);
        }
        assert!(matches!(s.check(&[id(0, 9, 0)], 1), Err(StorageError::OutOfOrderSequence { .. })), "forgotten");
        assert_eq!(s.check(&[id(40, 49, 0)], 1).ok(), Some(Some(Duplicate { base: Offset(141), last: Offset(150) })));
        // A cut through the last run (sequences 80-89 at 221-230) keeps 80-84.
        s.truncate(Offset(226));
        assert_eq!(s.check(&[id(80, 84, 0)], 1).ok(), Some(Some(Duplicate { base: Offset(221), last: Offset(225) })));
        assert_eq!(s.check(&[id(85, 89, 0)], 1).ok(), Some(None), "the cut records are appended again");
    }

    fn logged(pid: i64, epoch: i16, base: u64, transactional: bool, control: Option<ControlType>) -> LoggedBatch {
        let last = if control.is_some() { base } else { base + 3 };
        LoggedBatch {
            producer_id: pid,
            epoch,
            identity: None,
            base: Offset(base),
            last: Offset(last),
            transactional,
            control,
        }
    }

    /// The open transactions, the last completed ones and the aborted list survive a
    /// snapshot round trip; a version 1 snapshot (no transactions) is still read.
    #[test]
    fn transactions_round_trip_through_a_snapshot_and_version_1_is_read() {
        let mut s = ProducerStates::default();
        stored(&mut s, id(0, 3, 0), 0);
        assert_eq!(s.record_logged(logged(7, 0, 4, true, None)), None);
        assert_eq!(s.record_logged(logged(8, 0, 8, true, None)), None);
        let abort = s.record_logged(logged(8, 0, 12, false, Some(ControlType::Abort)));
        assert_eq!(abort, Some(AbortedTxn { producer_id: 8, first_offset: Offset(8), last_offset: Offset(12) }));
        assert_eq!(s.first_unstable_offset(), Some(Offset(4)));
        let decoded = ProducerStates::decode(&s.encode()).expect("decodes");
        assert_eq!(decoded.first_unstable_offset(), Some(Offset(4)));
        assert_eq!(decoded.aborted_between(Offset(0), Offset(100)), s.aborted_between(Offset(0), Offset(100)));
        assert_eq!(decoded.summaries(), s.summaries());
        // The last completed transaction came along: a cut through its marker reopens it.
        let mut cut = decoded.clone();
        cut.truncate(Offset(12));
        assert_eq!(cut.first_unstable_offset(), Some(Offset(4)));
        assert_eq!(cut.summaries()[1].current_txn_start_offset, Some(Offset(8)));
        assert_eq!(cut.aborted_len(), 0);

        // Version 1: the same layout up to each producer's runs, nothing after them.
        let mut v1 = Vec::new();
        v1.extend_from_slice(SNAPSHOT_MAGIC);
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&7i64.to_le_bytes());
        v1.extend_from_slice(&0i16.to_le_bytes());
        v1.push(1);
        for v in [0i32, 3] {
            v1.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0u64, 3] {
            v1.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let old = ProducerStates::decode(&v1).expect("version 1 decodes");
        assert_eq!(old.check(&[id(0, 3, 0)], 1).ok(), Some(Some(Duplicate { base: Offset(0), last: Offset(3) })));
        assert_eq!(old.first_unstable_offset(), None);
    }

    /// Past `PRODUCERS_MAX`, a producer with an open transaction is kept while one
    /// without can go; when none can, the partition keeps them all.
    #[test]
    fn eviction_spares_producers_with_open_transactions() {
        let mut s = ProducerStates::default();
        s.record_logged(logged(0, 0, 0, true, None));
        for pid in 1..PRODUCERS_MAX as i64 + 1 {
            let id = BatchIdentity { producer_id: pid, epoch: 0, first_sequence: 0, last_sequence: 0 };
            s.record(ProducerBatch { id, base: Offset(pid as u64 * 4), last: Offset(pid as u64 * 4) });
        }
        assert_eq!(s.len(), PRODUCERS_MAX);
        assert!(s.producers.contains_key(&0), "the oldest, but in a transaction");
        assert!(!s.producers.contains_key(&1), "the oldest without one went instead");
        assert_eq!(s.first_unstable_offset(), Some(Offset(0)));
        let mut all_open = ProducerStates::default();
        for pid in 0..PRODUCERS_MAX as i64 + 1 {
            all_open.record_logged(logged(pid, 0, pid as u64 * 4, true, None));
        }
        assert_eq!(all_open.len(), PRODUCERS_MAX + 1, "no open transaction is forgotten");
        assert_eq!(all_open.first_unstable_offset(), Some(Offset(0)));
    }

    /// Markers: a commit closes without listing, an abort without an open transaction
    /// lists the marker alone, a newer epoch clears the runs (fencing the old epoch),
    /// and an older one changes nothing.
    #[test]
    fn markers_close_transactions_and_raise_epochs() {
        let mut s = ProducerStates::default();
        stored(&mut s, id(0, 3, 0), 0);
        assert_eq!(s.record_logged(logged(7, 0, 4, false, Some(ControlType::Commit))), None);
        assert_eq!(
            s.record_logged(logged(7, 0, 5, false, Some(ControlType::Abort))),
            Some(AbortedTxn { producer_id: 7, first_offset: Offset(5), last_offset: Offset(5) })
        );
        assert_eq!(
            s.record_logged(logged(7, 1, 6, false, Some(ControlType::Abort))).map(|a| a.first_offset),
            Some(Offset(6))
        );
        assert!(matches!(s.check(&[id(4, 4, 0)], 1), Err(StorageError::ProducerFenced { .. })));
        assert!(matches!(s.check_epoch(7, 0), Err(StorageError::ProducerFenced { current: 1, .. })));
        assert_eq!(s.record_logged(logged(7, 0, 7, false, Some(ControlType::Abort))), None, "an older epoch's marker");
        assert_eq!(s.aborted_len(), 2);
        s.advance_start(Offset(6));
        assert_eq!(s.aborted_between(Offset(0), Offset(10)).len(), 1);
    }
}
