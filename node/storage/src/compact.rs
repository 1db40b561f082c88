//! Log compaction: keep the latest record of each key in the closed segments.
//!
//! One pass: read the whole log once to learn each key's latest offset, then rewrite
//! each closed segment old enough (`min_lag_ms`) without the superseded records and the
//! expired tombstones, keeping every kept record at its own offset (batches get offset
//! gaps, as Kafka's). A rewritten segment is written to `<base>.cleaned` and swapped in
//! by the log's flusher with an atomic rename (`PartitionLog::swap_segment`). Batches
//! whose records all stay are copied as they are; control batches always stay.
//!
//! Transactions: only stable records (below the last stable offset) that were not
//! aborted can supersede a key, so a record read_committed readers skip never removes
//! one they read. Aborted transactions' batches are removed whole (as Kafka's cleaner
//! does: no reader may see them); batches at or past the LSO are kept whole. A marker
//! stays while any record of its transaction stays (it tells a reader where the
//! transaction ended); once the transaction's data is all gone, the marker goes too when
//! it is older than delete.retention.ms, as a tombstone does (Kafka's rule, KIP-534, with
//! the marker's own timestamp as the start of the horizon). A marker is removed only when
//! the pass saw the whole transaction: after a segment the pass skips (too young for
//! `min_lag_ms`), a producer's markers stay until the pass has seen its next one.

use std::collections::HashMap;
use std::time::Duration;

use sluice_schemas::batch::{BatchHeader, BatchWalker, Compression};
use sluice_schemas::records::{BatchBuilder, BatchConfig, RecordHeader};
use sluice_schemas::{LeaderEpoch, Offset, ProducerId};
use tracing::info;

use crate::error::StorageError;
use crate::log::{CompactionReport, PartitionLog};
use crate::producers::AbortedTxn;
use crate::segment::{segment_path, walk_batches, Step};
use sluice_io as io;

/// Largest decompressed records section the cleaner accepts from one batch.
const DECOMPRESSED_BYTES_MAX: usize = 256 << 20;
/// A pass runs only when at least this share of the closed segments' bytes was written
/// since the last pass (Kafka's min.cleanable.dirty.ratio): re-reading a log that is
/// already clean would cost appends their throughput for nothing.
const DIRTY_RATIO_MIN: f64 = 0.5;

fn corrupt(log: &PartitionLog, base: Offset, offset: Offset, reason: String) -> StorageError {
    StorageError::Corrupt { segment: segment_path(log.dir(), base, "log"), offset, position: 0, reason }
}

pub async fn compact(
    log: &PartitionLog,
    min_lag_ms: u64,
    delete_retention_ms: u64,
    bytes_per_s: u64,
) -> Result<CompactionReport, StorageError> {
    let now_ms = log.config().clock.now_ms();
    let closed = log.closed_segments();
    let old_enough = |max_ts: i64| max_ts <= now_ms.saturating_sub(min_lag_ms as i64);
    let eligible: Vec<_> = closed.iter().copied().filter(|(_, _, max_ts)| old_enough(*max_ts)).collect();
    let mut report = CompactionReport::default();
    let clean_offset = log.clean_offset();
    let total: u64 = eligible.iter().map(|(_, size, _)| size).sum();
    let dirty: u64 = eligible.iter().filter(|(base, _, _)| *base >= clean_offset).map(|(_, size, _)| size).sum();
    if eligible.is_empty() || dirty == 0 || (dirty as f64) < DIRTY_RATIO_MIN * total as f64 && clean_offset > Offset(0)
    {
        return Ok(report);
    }
    let dirty_end = log.segments().iter().rev().nth(1).map_or(clean_offset, |s| s.next_offset);
    let keep = Untouchable::of(log);
    let latest = latest_offsets(log, &keep).await?;
    let mut txns = TxnData::default();
    for (base, size, max_ts) in closed {
        if !old_enough(max_ts) {
            txns.skipped_segment();
            continue;
        }
        let file = log.closed_segment_file(base).await?;
        let mut batches: Vec<Vec<u8>> = Vec::new();
        walk_batches(&file, 0, size, true, |_, _, batch| {
            batches.push(batch.to_vec());
            Step::Continue
        })
        .await
        .map_err(|e| StorageError::io("reading", file.path(), e))?;
        let mut rewritten = Vec::with_capacity(size as usize);
        let mut removed = 0u64;
        for batch in &batches {
            let (kept, dropped) = clean_batch(batch, &latest, &keep, &mut txns, now_ms, delete_retention_ms)
                .map_err(|reason| corrupt(log, base, base, reason))?;
            removed += dropped;
            rewritten.extend_from_slice(&kept);
        }
        // Throttle by what was read, so appends on this shard keep their throughput.
        if bytes_per_s > 0 {
            io::sleep(Duration::from_secs_f64(size as f64 / bytes_per_s as f64)).await;
        }
        if removed == 0 {
            continue;
        }
        let cleaned = segment_path(log.dir(), base, "cleaned");
        io::write_file_atomically(&cleaned, &rewritten)
            .await
            .map_err(|e| StorageError::io("writing a compacted segment", &cleaned, e))?;
        if log.swap_segment(base, size).await? {
            report.segments_rewritten += 1;
            report.records_removed += removed;
            report.bytes_before += size;
            report.bytes_after += rewritten.len() as u64;
        }
    }
    log.set_clean_offset(dirty_end);
    if report.segments_rewritten > 0 {
        info!(dir = %log.dir().display(), ?report, "compacted");
    }
    Ok(report)
}

/// The batches compaction leaves whole and whose keys supersede nothing: markers,
/// aborted transactional batches, and everything at or past the last stable offset.
struct Untouchable {
    stable_end: Offset,
    aborted: HashMap<i64, Vec<AbortedTxn>>,
}

impl Untouchable {
    fn of(log: &PartitionLog) -> Untouchable {
        let stable_end = log.last_stable_offset();
        let mut aborted: HashMap<i64, Vec<AbortedTxn>> = HashMap::new();
        for a in log.aborted_transactions(log.log_start_offset(), stable_end) {
            aborted.entry(a.producer_id).or_default().push(a);
        }
        Untouchable { stable_end, aborted }
    }

    fn covers(&self, header: &BatchHeader) -> bool {
        header.attributes().is_control() || header.base_offset() >= self.stable_end || self.aborted(header)
    }

    /// A stable batch of an aborted transaction (its records are never read committed).
    fn aborted(&self, header: &BatchHeader) -> bool {
        let base = header.base_offset();
        header.attributes().is_transactional()
            && !header.attributes().is_control()
            && base < self.stable_end
            && self
                .aborted
                .get(&header.producer_id.get())
                .is_some_and(|list| list.iter().any(|a| a.first_offset <= base && base < a.last_offset))
    }
}

/// Which producers' current transactions still have records after this pass, for the
/// markers that close them: a marker is removable only when the pass saw every batch of
/// its transaction and kept none.
#[derive(Default)]
struct TxnData {
    /// Producers whose whole current transaction the pass has seen, and whether it kept
    /// any of its records.
    seen: HashMap<i64, bool>,
    /// The pass skipped a segment: producers not in `seen` may have records in it.
    skipped: bool,
}

impl TxnData {
    fn skipped_segment(&mut self) {
        self.skipped = true;
        self.seen.clear();
    }

    /// A transactional data batch of `producer` leaves `kept` records.
    fn data(&mut self, producer: i64, kept: bool) {
        if let Some(has_data) = self.seen.get_mut(&producer) {
            *has_data |= kept;
        } else if !self.skipped {
            self.seen.insert(producer, kept);
        }
    }

    /// `producer`'s marker: whether its transaction kept no records. The producer's next
    /// transaction starts after it, so it is seen whole from here.
    fn marker_closes_empty(&mut self, producer: i64) -> bool {
        let empty = match self.seen.get(&producer) {
            Some(has_data) => !has_data,
            None => !self.skipped,
        };
        self.seen.insert(producer, false);
        empty
    }
}

/// The latest offset of every key in the stable, not aborted part of the log.
async fn latest_offsets(log: &PartitionLog, keep: &Untouchable) -> Result<HashMap<Vec<u8>, u64>, StorageError> {
    let mut latest = HashMap::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset().min(keep.stable_end) {
        let fetched = log.read(offset, 1 << 20).await?;
        if fetched.chunks.is_empty() {
            break;
        }
        let bytes = fetched.to_vec();
        for batch in BatchWalker::new(&bytes) {
            let Ok((_, header, batch)) = batch else { break };
            if keep.covers(header) {
                continue;
            }
            sluice_schemas::compression::with_records(batch, DECOMPRESSED_BYTES_MAX, |records| {
                for r in records.flatten() {
                    if let Some(key) = r.key {
                        latest.insert(key.to_vec(), r.offset.0);
                    }
                }
            })
            .map_err(|reason| StorageError::Corrupt {
                segment: log.dir().to_path_buf(),
                offset: header.base_offset(),
                position: 0,
                reason,
            })?;
        }
        offset = fetched.next_offset.max(offset.plus(1));
    }
    Ok(latest)
}

/// One batch without its superseded records and expired tombstones: the batch itself
/// when nothing goes, a rebuilt batch when some do, nothing when all do (a marker goes
/// when its transaction kept no records and it is past delete.retention.ms).
fn clean_batch(
    batch: &[u8],
    latest: &HashMap<Vec<u8>, u64>,
    keep: &Untouchable,
    txns: &mut TxnData,
    now_ms: i64,
    delete_retention_ms: u64,
) -> Result<(Vec<u8>, u64), String> {
    let header = BatchHeader::view(batch).map_err(|e| e.to_string())?;
    let attributes = header.attributes();
    let producer = header.producer_id.get();
    let records = u64::try_from(header.record_count()).unwrap_or(0);
    let expired = header.max_timestamp() < now_ms.saturating_sub(delete_retention_ms as i64);
    if attributes.is_control() {
        let stable = header.base_offset() < keep.stable_end;
        if txns.marker_closes_empty(producer) && stable && expired {
            return Ok((Vec::new(), records));
        }
        return Ok((batch.to_vec(), 0));
    }
    let transactional = attributes.is_transactional();
    if keep.aborted(header) {
        txns.data(producer, false);
        return Ok((Vec::new(), records));
    }
    if keep.covers(header) {
        if transactional {
            txns.data(producer, true);
        }
        return Ok((batch.to_vec(), 0));
    }
    let (kept, removed) = clean_records(batch, header, latest, expired)?;
    if transactional {
        txns.data(producer, !kept.is_empty());
    }
    Ok((kept, removed))
}

/// A data batch without its superseded records and (when `tombstones_expire`) its
/// tombstones.
fn clean_records(
    batch: &[u8],
    header: &BatchHeader,
    latest: &HashMap<Vec<u8>, u64>,
    tombstones_expire: bool,
) -> Result<(Vec<u8>, u64), String> {
    let attributes = header.attributes();
    let codec = attributes.compression().ok_or("unknown compression codec")?;
    type Kept = (u64, i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>);
    let (kept, total) = sluice_schemas::compression::with_records(batch, DECOMPRESSED_BYTES_MAX, |records| {
        let mut kept: Vec<Kept> = Vec::new();
        let mut total = 0u64;
        for r in records {
            let r = r.map_err(|e| e.to_string())?;
            total += 1;
            let latest_for_key = r.key.is_none_or(|k| latest.get(k).is_some_and(|&o| o == r.offset.0));
            let expired_tombstone = r.value.is_none() && tombstones_expire;
            if latest_for_key && !expired_tombstone {
                let headers = r.headers.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect();
                kept.push((r.offset.0, r.timestamp, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec), headers));
            }
        }
        Ok::<_, String>((kept, total))
    })??;
    let removed = total - kept.len() as u64;
    if removed == 0 {
        return Ok((batch.to_vec(), 0));
    }
    let Some(first) = kept.first() else { return Ok((Vec::new(), removed)) };
    let config = BatchConfig {
        base_offset: Offset(first.0),
        partition_leader_epoch: u32::try_from(header.partition_leader_epoch.get()).ok().map(LeaderEpoch),
        producer_id: u64::try_from(header.producer_id.get()).ok().map(ProducerId),
        producer_epoch: header.producer_epoch.get(),
        base_sequence: header.base_sequence.get(),
        attributes,
    };
    let mut builder = BatchBuilder::new(config).map_err(|e| e.to_string())?;
    for (offset, timestamp, key, value, headers) in &kept {
        let delta = i32::try_from(offset - first.0).map_err(|_| "offset delta overflows".to_string())?;
        builder.skip_to_offset_delta(delta).map_err(|e| e.to_string())?;
        let headers: Vec<RecordHeader<'_>> =
            headers.iter().map(|(k, v)| RecordHeader { key: k, value: v.as_deref() }).collect();
        builder.push(key.as_deref(), value.as_deref(), &headers, *timestamp).map_err(|e| e.to_string())?;
    }
    let rebuilt = if codec == Compression::None {
        builder.finish()
    } else {
        let compressed =
            sluice_schemas::compression::compress(codec, builder.records_bytes()).map_err(|e| e.to_string())?;
        builder.finish_compressed(&compressed, codec)
    }
    .map_err(|e| e.to_string())?;
    Ok((rebuilt, removed))
}
