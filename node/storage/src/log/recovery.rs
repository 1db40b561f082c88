//! Recovery at open: each segment is opened and scanned (the active one whole with CRC
//! checks, closed ones from their last index entry), a torn or corrupt tail is cut and
//! reported, and missing or wrong index files are rebuilt.

use std::path::Path;
use std::rc::Rc;

use sluice_schemas::Offset;
use tracing::warn;

use crate::config::LogConfig;
use crate::error::StorageError;
use crate::index::SegmentIndex;
use crate::producers::{LoggedBatch, ProducerStates};
use crate::segment::{segment_path, walk_batches, Segment, Step, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use sluice_io::{self as io, align_down, File};
use sluice_schemas::control::control_type;

use super::files::{read_clean_close, read_producer_snapshot, remove_clean_close, write_index_files};
use super::state::TailPage;
use super::{EpochStarts, RecoveryReport, Truncation};

pub(super) async fn read_tail_page(file: Option<&File>, size: u64) -> std::io::Result<TailPage> {
    let position = align_down(size);
    let len = (size - position) as usize;
    let bytes = match (file, len) {
        (Some(file), n) if n > 0 => file.read_at(position, n).await?.to_vec(),
        _ => Vec::new(),
    };
    if bytes.len() != len {
        return Err(std::io::Error::other(format!("last page read {} of {len} bytes", bytes.len())));
    }
    Ok(TailPage { position, bytes })
}

/// Opens one segment at startup. The active (last) one is scanned whole with CRC checks,
/// unless the log closed cleanly and the segment is large (the clean-close record names
/// it at its present size): then, as a closed one, it loads its index files and walks
/// only the batches from the last index entry on (with CRC checks), and must end where
/// the record says; a record that does not match is removed. A closed
/// one loads its index files the same way; when the files are missing or disagree with
/// the segment it is scanned whole and the files rewritten. Bytes after the last good
/// batch are cut (and reported unless they are zeros: preallocated space never written).
/// Also returns the batches the scan walked that change producer state (idempotent,
/// transactional, markers; all of them for the active segment), or, when the clean-close
/// record was used, the producers' state it holds.
pub(super) async fn recover_segment(
    dir: &Path,
    base: Offset,
    config: &LogConfig,
    role: Role,
    now_ms: i64,
    report: &mut RecoveryReport,
    epochs: &mut EpochStarts,
) -> Result<(Segment, Vec<LoggedBatch>, Option<ProducerStates>), StorageError> {
    let path = segment_path(dir, base, LOG_SUFFIX);
    let file = File::open(&path, true).await.map_err(|e| StorageError::io("opening segment", &path, e))?;
    let size = file.size().await.map_err(|e| StorageError::io("sizing segment", &path, e))?;
    let fresh = || SegmentIndex::new(base, config.index_interval_bytes);
    let is_active = matches!(role, Role::Active { .. });
    // A small active segment is scanned: cheaper than reading the record's files.
    if matches!(role, Role::Active { clean_close: true }) && size >= config.clean_open_min_bytes {
        if let Some(c) = read_clean_close(dir).await? {
            let quick = match load_index(dir, base, config, size).await {
                Some(Ok(mut index)) if c.base == base && c.size == size => {
                    let from = index.reset_tail();
                    let scan = scan_segment(&file, base, index, from, size, true)
                        .await
                        .map_err(|e| StorageError::io("scanning segment", &path, e))?;
                    let whole = scan.invalid.is_none() && scan.valid_end == size && scan.next_offset == c.next_offset;
                    whole.then_some(scan)
                }
                _ => None,
            };
            if let Some(scan) = quick {
                add_epochs(epochs, &scan.epochs);
                let segment = Segment { created_ms: c.created_ms, ..segment_of(base, scan, Some(file), now_ms) };
                return Ok((segment, Vec::new(), Some(c.producers)));
            }
            // Changed behind the log's back: the record is no use, now or later.
            warn!(segment = %path.display(), "the clean-close record does not match the segment; scanning it");
            remove_clean_close(dir).await?;
        }
    }
    let mut rebuilt = false;
    let loaded = if is_active { None } else { load_index(dir, base, config, size).await };
    let mut scan = match loaded {
        Some(Ok(mut index)) => {
            let from = index.reset_tail();
            scan_segment(&file, base, index, from, size, false).await
        }
        Some(Err(reason)) => {
            warn!(segment = %path.display(), %reason, "rebuilding the segment's index");
            rebuilt = true;
            scan_segment(&file, base, fresh(), 0, size, true).await
        }
        None => scan_segment(&file, base, fresh(), 0, size, true).await,
    }
    .map_err(|e| StorageError::io("scanning segment", &path, e))?;
    if !is_active && !rebuilt && scan.invalid.is_some() {
        warn!(segment = %path.display(), "index disagrees with the segment; rebuilding it");
        rebuilt = true;
        scan = scan_segment(&file, base, fresh(), 0, size, true)
            .await
            .map_err(|e| StorageError::io("scanning segment", &path, e))?;
    }
    if let Some(reason) = scan.invalid.take() {
        if !is_zero_from(&file, scan.valid_end, size).await {
            warn!(segment = %path.display(), offset = %scan.next_offset, position = scan.valid_end,
                  bytes_cut = size - scan.valid_end, %reason, "cutting a torn or corrupt tail");
            report.truncations.push(Truncation {
                segment: path.clone(),
                offset: scan.next_offset,
                position: scan.valid_end,
                bytes_cut: size - scan.valid_end,
                reason,
            });
        }
    }
    add_epochs(epochs, &scan.epochs);
    if scan.valid_end < size {
        file.truncate(scan.valid_end).await.map_err(|e| StorageError::io("truncating segment", &path, e))?;
        file.fdatasync().await.map_err(|e| StorageError::io("syncing segment", &path, e))?;
    }
    if rebuilt {
        report.rebuilt_indexes.push(path.clone());
        let (o, t) = scan.index.encode();
        write_index_files(dir, base, &o, &t).await?;
    }
    let producer_batches = std::mem::take(&mut scan.producer_batches);
    // A closed segment's file closes here; reads open it again from the pool.
    Ok((segment_of(base, scan, is_active.then_some(file), now_ms), producer_batches, None))
}

/// Which segment `recover_segment` opens: a closed one, or the active (last) one, and
/// whether the log's directory holds a clean-close record.
#[derive(Clone, Copy)]
pub(super) enum Role {
    Closed,
    Active { clean_close: bool },
}

/// The epochs a scan saw after the ones known.
fn add_epochs(epochs: &mut EpochStarts, seen: &EpochStarts) {
    for (epoch, start) in seen {
        if epochs.last().is_none_or(|last| last.0 < *epoch) {
            epochs.push((*epoch, *start));
        }
    }
}

/// The segment a scan found, holding `file` open if given (the active segment).
fn segment_of(base: Offset, scan: Scan, file: Option<File>, now_ms: i64) -> Segment {
    // segment.ms counts from the first batch's time when it is believable.
    let created_ms = scan.first_timestamp.filter(|ts| *ts > 0 && *ts <= now_ms).unwrap_or(now_ms);
    Segment {
        base,
        next_offset: scan.next_offset,
        size_bytes: scan.valid_end,
        written_bytes: scan.valid_end,
        index: scan.index,
        file: file.map(Rc::new),
        created_ms,
        preallocated_bytes: scan.valid_end,
        synced_bytes: 0,
    }
}

/// Closed segments scanned for producer state when the snapshots are missing (a data
/// directory from before snapshots, or unreadable snapshot files): the state then covers
/// the producers that wrote in the last segments, as Kafka's upgrade path does.
const SNAPSHOT_LOOKBACK_SEGMENTS: usize = 2;

/// Rebuilds the producers' state (idempotent runs, open transactions, aborted list) at
/// open: the snapshot written when the active segment started, plus the active segment's
/// batches (`active`, from its scan), markers included. Without
/// that snapshot, the latest one among the previous `SNAPSHOT_LOOKBACK_SEGMENTS` closed
/// segments (or none) and a walk of the closed segments after it.
pub(super) async fn recover_producers(
    dir: &Path,
    segments: &[Segment],
    active: Vec<LoggedBatch>,
) -> Result<ProducerStates, StorageError> {
    let last = segments.len() - 1;
    let mut from = last;
    let mut loaded = None;
    for i in (last.saturating_sub(SNAPSHOT_LOOKBACK_SEGMENTS)..=last).rev() {
        from = i;
        if let Some(states) = read_producer_snapshot(dir, segments[i].base).await {
            loaded = Some(states);
            break;
        }
    }
    let mut states = loaded.unwrap_or_default();
    if from > 0 {
        // A snapshot holds batches up to its segment's base; the segment before may have
        // lost its tail since (a power loss under a lazy fsync policy).
        states.truncate(segments[from - 1].next_offset);
    }
    for segment in &segments[from..last] {
        let file = super::file_of(dir, segment.base, segment.file.clone()).await?;
        walk_batches(&file, 0, segment.size_bytes, false, |_, header, batch| {
            let control = if header.attributes().is_control() { control_type(batch) } else { None };
            states.record_header(header, control);
            Step::Continue
        })
        .await
        .map_err(|e| StorageError::io("scanning for producer state", file.path(), e))?;
    }
    for batch in active {
        states.record_logged(batch);
    }
    Ok(states)
}

/// A closed segment's index files, `None` for the active segment (it has none), or why
/// they cannot be used.
async fn load_index(dir: &Path, base: Offset, config: &LogConfig, size: u64) -> Option<Result<SegmentIndex, String>> {
    let offsets = io::read_file(&segment_path(dir, base, INDEX_SUFFIX)).await;
    let times = io::read_file(&segment_path(dir, base, TIME_INDEX_SUFFIX)).await;
    Some(match (offsets, times) {
        (Ok(Some(o)), Ok(Some(t))) => SegmentIndex::decode(base, config.index_interval_bytes, &o, &t, size.max(1)),
        (Ok(None), _) | (_, Ok(None)) => Err("index files missing".to_string()),
        (Err(e), _) | (_, Err(e)) => Err(format!("index files unreadable: {e}")),
    })
}

pub(super) struct Scan {
    pub(super) index: SegmentIndex,
    /// Each epoch change among the batches walked (valid ones only), with its offset.
    epochs: EpochStarts,
    pub(super) next_offset: Offset,
    pub(super) valid_end: u64,
    pub(super) invalid: Option<String>,
    first_timestamp: Option<i64>,
    /// The batches walked that change producer state.
    producer_batches: Vec<LoggedBatch>,
}

/// Walks a segment from `from` (0, or the position of the index's last entry after
/// `reset_tail`), feeding each batch to the index and checking offsets only go up.
pub(super) async fn scan_segment(
    file: &File,
    base: Offset,
    mut index: SegmentIndex,
    from: u64,
    size: u64,
    verify_crc: bool,
) -> std::io::Result<Scan> {
    let mut next_offset = base;
    let mut first_timestamp = None;
    let mut epochs: EpochStarts = Vec::new();
    let mut producer_batches = Vec::new();
    let end = walk_batches(file, from, size, verify_crc, |position, header, batch| {
        let batch_base = header.base_offset();
        if batch_base < next_offset {
            return Step::Invalid(format!("batch offset {batch_base} is below the expected {next_offset}"));
        }
        // The log rolls before a segment's offsets pass base + u32::MAX (the index keeps
        // them relative, in 32 bits): a batch past that is not this segment's.
        let relative_last = header.last_offset().0.saturating_sub(base.0).max(batch_base.records_since(base));
        if relative_last > u64::from(u32::MAX) {
            return Step::Invalid(format!(
                "batch offsets {batch_base}..={} are too far past the segment's base {base}",
                header.last_offset()
            ));
        }
        if let Some(epoch) = header.leader_epoch() {
            if epochs.last().is_none_or(|last| last.0 < epoch) {
                epochs.push((epoch, batch_base));
            }
        }
        index.on_batch(batch_base, position, batch.len() as u64, header.max_timestamp());
        let control = if header.attributes().is_control() { control_type(batch) } else { None };
        if let Some(logged) = LoggedBatch::of(header, control) {
            producer_batches.push(logged);
        }
        if position == 0 {
            first_timestamp = Some(header.max_timestamp());
        }
        next_offset = header.next_offset();
        Step::Continue
    })
    .await?;
    let invalid = match end.invalid {
        // Started at an index entry but found no batch there: the index is wrong.
        None if from > 0 && next_offset == base => Some(format!("no batch at indexed position {from}")),
        other => other,
    };
    // Walking stops at the first invalid batch, so every epoch seen is in a valid one.
    Ok(Scan { index, epochs, next_offset, valid_end: end.position, invalid, first_timestamp, producer_batches })
}

/// Whether the bytes from `from` to `end` (the first page of them) are all zero: space
/// that was preallocated or padded but never written, rather than a torn batch.
async fn is_zero_from(file: &File, from: u64, end: u64) -> bool {
    if from >= end {
        return true;
    }
    let len = (end - from).min(4096) as usize;
    match file.read_at(from, len).await {
        Ok(bytes) => bytes.iter().all(|b| *b == 0),
        Err(_) => false,
    }
}
