//! The append path: checking batches, waiting for a turn (no exclusive job, room in the
//! unflushed budget, first come first served), assigning offsets and copying the batches
//! into the pending buffer, then waiting for their write.

use sluice_schemas::batch::BatchError;
use sluice_schemas::batch::{
    check_batch, check_producer_batch, set_base_offset, set_leader_epoch, stamp_log_append_time, TimestampType,
};
use sluice_schemas::control::control_type;
use sluice_schemas::ids::LeaderEpoch;
use sluice_schemas::Offset;

use crate::error::StorageError;
use crate::producers::{BatchIdentity, Duplicate, LoggedBatch, TxnGuard};
use sluice_io::Oneshot;

use super::state::{AppendTicket, Waiter};
use super::{AppendInfo, PartitionLog};

/// How an append places its batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// Producer batches on a single node: offsets assigned at the log end.
    Assign,
    /// Producer batches on a partition leader: offsets assigned, the epoch stamped.
    Lead(LeaderEpoch),
    /// Batches copied from the partition leader, kept as they are (offsets, epochs,
    /// timestamps); the first starts at the log end and the rest follow on.
    Copy,
}

/// Who wrote an append's batches, which decides how they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// A producer: `check_producer_batch` (no control batches).
    Producer,
    /// The node's transaction coordinator: transaction markers only.
    Coordinator,
    /// The partition leader: any valid batch.
    Leader,
}

/// One batch of an append, checked.
#[derive(Clone, Copy, Debug)]
struct Checked {
    position: usize,
    len: usize,
    /// Offsets the batch covers (its last offset delta plus one).
    span: u64,
    max_timestamp: i64,
    base: Offset,
    epoch: Option<LeaderEpoch>,
    /// An idempotent producer's batch: who wrote it, which sequence numbers.
    identity: Option<BatchIdentity>,
    /// What the producer state records of it (idempotent, transactional, markers).
    logged: Option<LoggedBatch>,
}

impl PartitionLog {
    /// Appends one or more concatenated producer batches, assigning them consecutive
    /// offsets, and completes once they are written (and synced under `always`). A bad
    /// batch refuses the whole append, naming its byte position; nothing is stored then.
    ///
    /// An idempotent producer's batch (producer id and sequence set) must follow that
    /// producer's last stored one; a retry of one of its last five batches appends
    /// nothing and answers with the stored batch's offsets (`AppendInfo::duplicate`)
    /// once that batch is written.
    pub async fn append(&self, batches: &[u8]) -> Result<AppendInfo, StorageError> {
        let checked = self.check_append(batches, Source::Producer)?;
        self.wait_turn(batches.len() as u64).await?;
        if let Some(duplicate) = self.check_producers(&checked, None)? {
            return self.answer_duplicate(&checked, duplicate).await;
        }
        let reply = self.enqueue(batches, &checked, Placement::Assign)?;
        self.finish(reply).await
    }

    /// `append` on a partition's leader. `decide` runs at the moment the batches get their
    /// offsets, with no other append or truncation in between: it is given the first
    /// offset and the number of offsets, and returns the leader epoch to stamp on every
    /// batch, or refuses the append (then nothing is stored). Replication uses it to keep
    /// its view of the log in step with the log.
    ///
    /// With a `guard` (a Kafka transactional produce, KIP-890 part 1), a transactional
    /// batch that would open its producer's transaction is refused
    /// (`TransactionNotVerified`) unless the guard allows it (`TxnGuard`).
    pub async fn append_as_leader<E>(
        &self,
        batches: &[u8],
        guard: Option<&TxnGuard>,
        decide: impl FnOnce(Offset, u64) -> Result<LeaderEpoch, E>,
    ) -> Result<Result<AppendInfo, StorageError>, E> {
        self.append_led(batches, Source::Producer, guard, decide).await
    }

    /// `append_as_leader` for transaction markers the node's coordinator built
    /// (`sluice_schemas::control::control_batch`): every batch must be a valid control
    /// batch with a marker key (else `InvalidBatch`), and a marker of an older epoch than
    /// its producer's is refused (`ProducerFenced`). A marker closes its producer's open
    /// transaction; an ABORT marker adds it to `aborted_transactions`; a marker of a newer
    /// epoch raises the producer's epoch, fencing the older one's next batch.
    pub async fn append_control_as_leader<E>(
        &self,
        batch: &[u8],
        decide: impl FnOnce(Offset, u64) -> Result<LeaderEpoch, E>,
    ) -> Result<Result<AppendInfo, StorageError>, E> {
        self.append_led(batch, Source::Coordinator, None, decide).await
    }

    async fn append_led<E>(
        &self,
        batches: &[u8],
        source: Source,
        guard: Option<&TxnGuard>,
        decide: impl FnOnce(Offset, u64) -> Result<LeaderEpoch, E>,
    ) -> Result<Result<AppendInfo, StorageError>, E> {
        let checked = match self.check_append(batches, source) {
            Ok(checked) => checked,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = self.wait_turn(batches.len() as u64).await {
            return Ok(Err(e));
        }
        match self.check_producers(&checked, guard) {
            Ok(None) => {}
            Ok(Some(duplicate)) => return Ok(self.answer_duplicate(&checked, duplicate).await),
            Err(e) => return Ok(Err(e)),
        }
        let base = self.shared.state.borrow().next_offset;
        let epoch = decide(base, checked.iter().map(|c| c.span).sum())?;
        let reply = match self.enqueue(batches, &checked, Placement::Lead(epoch)) {
            Ok(reply) => reply,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.finish(reply).await)
    }

    /// Appends batches copied from the partition's leader as they are: offsets, leader
    /// epochs and timestamps kept. The first must start at the log end and each next one
    /// where the one before ends (`NotContiguous`), with epochs that never go back
    /// (`EpochGoesBack`); otherwise nothing is stored. Transactional batches and markers
    /// update the transaction state as they did on the leader.
    pub async fn append_copied(&self, batches: &[u8]) -> Result<AppendInfo, StorageError> {
        let checked = self.check_append(batches, Source::Leader)?;
        self.wait_turn(batches.len() as u64).await?;
        let reply = self.enqueue(batches, &checked, Placement::Copy)?;
        self.finish(reply).await
    }

    fn check_append(&self, batches: &[u8], source: Source) -> Result<Vec<Checked>, StorageError> {
        let limit = self.shared.config.batch_bytes_max;
        let mut checked = Vec::new();
        let mut position = 0;
        while position < batches.len() {
            let rest = &batches[position..];
            let batch = if source == Source::Producer { check_producer_batch(rest) } else { check_batch(rest) }
                .map_err(|source| StorageError::InvalidBatch { position, source })?;
            let len = batch.bytes().len();
            if len as u64 > limit {
                return Err(StorageError::BatchTooLarge { bytes: len as u64, limit });
            }
            let header = batch.header();
            let control = if header.attributes().is_control() { control_type(batch.bytes()) } else { None };
            if source == Source::Coordinator && control.is_none() {
                return Err(StorageError::InvalidBatch { position, source: BatchError::NotAMarker });
            }
            checked.push(Checked {
                position,
                len,
                span: header.next_offset().records_since(header.base_offset()),
                max_timestamp: header.max_timestamp(),
                base: header.base_offset(),
                epoch: header.leader_epoch(),
                identity: BatchIdentity::of(header),
                logged: LoggedBatch::of(header, control),
            });
            position += len;
        }
        if checked.is_empty() {
            return Err(StorageError::EmptyAppend);
        }
        Ok(checked)
    }

    /// Checks an append's idempotent batches against the producers' stored ones (see
    /// `append`), and its markers and sequence-less transactional batches against their
    /// producers' epochs, and with a `guard` its transactional batches against it. Runs
    /// with no await before the offsets are given, so no other append comes in between.
    fn check_producers(
        &self,
        checked: &[Checked],
        guard: Option<&TxnGuard>,
    ) -> Result<Option<Duplicate>, StorageError> {
        let ids: Vec<BatchIdentity> = checked.iter().filter_map(|c| c.identity).collect();
        let unsequenced = checked.iter().filter_map(|c| c.logged).filter(|l| l.identity.is_none());
        let st = self.shared.state.borrow();
        for l in unsequenced {
            st.check_writable(&self.shared.dir)?;
            st.producers.check_epoch(l.producer_id, l.epoch)?;
        }
        let duplicate = if ids.is_empty() {
            None
        } else {
            st.check_writable(&self.shared.dir)?;
            st.producers.check(&ids, checked.len())?
        };
        // A retry of stored batches is answered as such (as Kafka checks duplicates
        // first); only what would be appended is checked against the guard.
        if let (None, Some(guard)) = (duplicate, guard) {
            // A producer's first transactional batch of the append decides: the ones after
            // it join the transaction it opens.
            let mut seen: Vec<i64> = Vec::new();
            for l in checked.iter().filter_map(|c| c.logged).filter(|l| l.transactional && l.control.is_none()) {
                if !seen.contains(&l.producer_id) {
                    st.producers.check_guard(l.producer_id, guard)?;
                    seen.push(l.producer_id);
                }
            }
        }
        Ok(duplicate)
    }

    /// Answers a retried batch with its first append's offsets once that append is
    /// written (as an acknowledgement of the first would have been), or fails if the log
    /// stops taking writes or the batch was cut from the log meanwhile.
    async fn answer_duplicate(&self, checked: &[Checked], at: Duplicate) -> Result<AppendInfo, StorageError> {
        let (Some(first), Some(last)) =
            (checked.first().and_then(|c| c.identity), checked.last().and_then(|c| c.identity))
        else {
            unreachable!("a duplicate is one producer's batches")
        };
        // The whole append's range of sequence numbers.
        let id = BatchIdentity { last_sequence: last.last_sequence, ..first };
        let sh = &self.shared;
        loop {
            let wait = sh.appended.wait();
            {
                let mut st = sh.state.borrow_mut();
                st.check_writable(&sh.dir)?;
                if !st.producers.holds(&id, at) {
                    return Err(StorageError::DuplicateLost {
                        producer_id: id.producer_id,
                        sequence: id.first_sequence,
                    });
                }
                if st.visible_end > at.last {
                    st.stats.duplicates += 1;
                    let durability = match sh.config.fsync {
                        crate::config::FsyncPolicy::Always => super::Durability::Synced,
                        _ => super::Durability::Written,
                    };
                    return Ok(AppendInfo {
                        base_offset: at.base,
                        last_offset: at.last,
                        durability,
                        log_append_time_ms: None,
                        duplicate: true,
                    });
                }
            }
            wait.await;
        }
    }

    /// Waits until this append may take offsets: no exclusive job (truncation, ...) is
    /// queued, the unflushed bytes leave room, and every append that waited before it
    /// went first.
    async fn wait_turn(&self, total: u64) -> Result<(), StorageError> {
        let sh = &self.shared;
        let mut ticket: Option<AppendTicket<'_>> = None;
        loop {
            let wait = sh.room.wait();
            {
                let mut st = sh.state.borrow_mut();
                st.check_writable(&sh.dir)?;
                let room = st.unflushed_bytes == 0 || st.unflushed_bytes + total <= sh.config.unflushed_bytes_max;
                let first = match &ticket {
                    None => st.append_queue.is_empty(),
                    Some(t) => st.append_queue.front() == Some(&t.id),
                };
                if st.exclusive_jobs == 0 && room && first {
                    if let Some(t) = ticket.as_mut() {
                        st.append_queue.pop_front();
                        t.queued = false;
                    }
                    break;
                }
                if ticket.is_none() {
                    let id = st.next_append_ticket;
                    st.next_append_ticket += 1;
                    st.append_queue.push_back(id);
                    ticket = Some(AppendTicket { shared: sh, id, queued: true });
                }
            }
            wait.await;
        }
        if ticket.is_some() {
            // The next in line may fit too.
            sh.room.notify_all();
        }
        Ok(())
    }

    /// Gives the batches their offsets and copies them into the write buffer, all at once
    /// (no await): returns what their write will answer.
    fn enqueue(
        &self,
        batches: &[u8],
        checked: &[Checked],
        placement: Placement,
    ) -> Result<Oneshot<Result<AppendInfo, StorageError>>, StorageError> {
        let sh = &self.shared;
        let mut st = sh.state.borrow_mut();
        st.check_writable(&sh.dir)?;
        let mut expected = st.next_offset;
        let mut epoch_floor = st.epochs.last().map(|e| e.0);
        for c in checked {
            let epoch = match placement {
                Placement::Assign => None,
                Placement::Lead(epoch) => Some(epoch),
                Placement::Copy => {
                    if c.base != expected {
                        return Err(StorageError::NotContiguous { expected, got: c.base });
                    }
                    c.epoch
                }
            };
            if let (Some(epoch), Some(floor)) = (epoch, epoch_floor) {
                if epoch < floor {
                    return Err(StorageError::EpochGoesBack { offset: expected, epoch, latest: floor });
                }
            }
            epoch_floor = epoch.or(epoch_floor);
            expected = expected.plus(c.span);
        }
        let now_ms = sh.config.clock.now_ms();
        let log_append_time = sh.config.timestamp_type == TimestampType::LogAppendTime && placement != Placement::Copy;
        let base_offset = st.next_offset;
        for c in checked {
            let len = c.len;
            let active = st.active();
            let age_ms = now_ms.saturating_sub(active.created_ms);
            let relative_end = st.next_offset.plus(c.span).records_since(active.base);
            if !active.is_empty()
                && (active.size_bytes + len as u64 > sh.config.segment_bytes
                    || age_ms >= sh.config.segment_ms as i64
                    || relative_end > u64::from(u32::MAX))
            {
                st.roll(&sh.config, now_ms);
            }
            st.ensure_room(&sh.config, len);
            let offset = st.next_offset;
            let Some(p) = st.pending.as_mut() else { unreachable!("ensure_room made a buffer") };
            let dst = &mut p.buf.as_mut_slice()[p.len..p.len + len];
            dst.copy_from_slice(&batches[c.position..c.position + len]);
            set_base_offset(dst, offset);
            let epoch = match placement {
                Placement::Assign => None,
                Placement::Lead(epoch) => {
                    set_leader_epoch(dst, epoch);
                    Some(epoch)
                }
                Placement::Copy => c.epoch,
            };
            let max_timestamp = if log_append_time {
                stamp_log_append_time(dst, now_ms);
                now_ms
            } else {
                c.max_timestamp
            };
            p.len += len;
            p.next_offset = offset.plus(c.span);
            let segment = st.active_mut();
            let file_position = segment.size_bytes;
            segment.index.on_batch(offset, file_position, len as u64, max_timestamp);
            segment.size_bytes += len as u64;
            segment.next_offset = offset.plus(c.span);
            st.next_offset = offset.plus(c.span);
            st.unflushed_bytes += len as u64;
            st.stats.batches_appended += 1;
            st.stats.bytes_appended += len as u64;
            if let Some(logged) = c.logged {
                let last = Offset(offset.plus(c.span).0 - 1);
                st.producers.record_logged(logged.at(offset, last));
            }
            if let Some(epoch) = epoch {
                if st.epochs.last().is_none_or(|e| e.0 < epoch) {
                    st.epochs.push((epoch, offset));
                }
            }
        }
        st.stats.appends += 1;
        let (tx, rx) = Oneshot::channel();
        let last_offset = Offset(st.next_offset.0 - 1);
        let Some(p) = st.pending.as_mut() else { unreachable!("the append filled a buffer") };
        let log_append_time_ms = log_append_time.then_some(now_ms);
        p.waiters.push(Waiter { base_offset, last_offset, log_append_time_ms, reply: tx });
        drop(st);
        sh.work.notify_all();
        Ok(rx)
    }

    async fn finish(&self, reply: Oneshot<Result<AppendInfo, StorageError>>) -> Result<AppendInfo, StorageError> {
        match reply.await {
            Some(result) => result,
            None => Err(StorageError::Closed { dir: self.shared.dir.clone() }),
        }
    }
}
