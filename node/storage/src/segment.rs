//! One segment of a partition log: a file of concatenated batches named by its base
//! offset, its in-memory index, and the walker that reads batches back from the file.
//!
//! File names are the base offset in 20 digits (`00000000000000001234.log`), so a
//! directory listing sorts in offset order, as Kafka's do.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use sluice_schemas::batch::{check_batch, BatchError, BatchHeader};
use sluice_schemas::Offset;

use crate::index::SegmentIndex;
use sluice_io::{File, IoBytes};

pub const LOG_SUFFIX: &str = "log";
pub const INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";

/// How much the walker reads at a time.
const WALK_WINDOW_BYTES: u64 = 1 << 20;

#[must_use]
pub fn segment_path(dir: &Path, base: Offset, suffix: &str) -> PathBuf {
    dir.join(format!("{:020}.{suffix}", base.0))
}

/// The base offset named by a segment file name, if it is one.
#[must_use]
pub fn parse_segment_name(name: &str) -> Option<(Offset, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((Offset(stem.parse().ok()?), suffix))
}

/// A segment's state. Lives on the shard that owns the log.
pub struct Segment {
    pub base: Offset,
    /// The offset after the last batch appended (written or not yet).
    pub next_offset: Offset,
    /// Bytes of batches appended (written or not yet).
    pub size_bytes: u64,
    /// Bytes of batches whose write completed: readers never look past this.
    pub written_bytes: u64,
    pub index: SegmentIndex,
    /// The active segment's file (`None` only between a roll and the flusher creating
    /// it). Closed segments hold none: their files come from the shard's pool
    /// (`segment_files`) when read.
    pub file: Option<Rc<File>>,
    /// When the segment started, for segment.ms.
    pub created_ms: i64,
    /// The file size reserved so far (never below `size_bytes` once data is written).
    pub preallocated_bytes: u64,
    /// The file size whose metadata (size, extents) a sync made durable: a write that ends
    /// within it changes no metadata, so flushing the device's cache makes it durable.
    /// 0 until the log's first sync of the file.
    pub synced_bytes: u64,
}

impl Segment {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }
}

/// What the walk visitor wants next.
pub enum Step {
    Continue,
    Stop,
    /// The batch is not acceptable here (e.g. offsets going backwards): stop and report.
    Invalid(String),
}

/// Where and why a walk stopped.
#[derive(Debug)]
pub struct WalkEnd {
    /// The position after the last batch visited with `Continue`, or of the batch that
    /// stopped the walk.
    pub position: u64,
    /// Why the bytes at `position` are not a batch; `None` when the walk reached its
    /// end or the visitor stopped it.
    pub invalid: Option<String>,
}

/// Reads the batches of `file` from `start` until `end`, calling `visit` with each
/// batch's position, header and bytes (shared with the read buffer, not copied). With
/// `verify_crc`, a batch whose CRC does not match stops the walk as invalid.
pub async fn walk_batches(
    file: &File,
    start: u64,
    mut end: u64,
    verify_crc: bool,
    mut visit: impl FnMut(u64, &BatchHeader, &IoBytes) -> Step,
) -> std::io::Result<WalkEnd> {
    let mut position = start;
    let mut want = WALK_WINDOW_BYTES;
    while position < end {
        let len = want.min(end - position);
        let window = file
            .read_at(position, len as usize)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("reading {len} bytes at byte {position}: {e}")))?;
        if window.is_empty() {
            return Ok(WalkEnd { position, invalid: Some("unexpected end of file".into()) });
        }
        if (window.len() as u64) < len {
            // The file ends before `end`: what is there is all there is.
            end = position + window.len() as u64;
        }
        let mut at = 0usize;
        while at < window.len() {
            let rest = &window[at..];
            let header = match BatchHeader::view(rest) {
                Ok(h) => h,
                Err(_) if (position + window.len() as u64) < end => break, // read more
                Err(e) => return Ok(WalkEnd { position: position + at as u64, invalid: Some(e.to_string()) }),
            };
            let total = match header.total_bytes() {
                Ok(t) => t,
                Err(e) => return Ok(WalkEnd { position: position + at as u64, invalid: Some(e.to_string()) }),
            };
            if rest.len() < total {
                if position + (at + total) as u64 <= end {
                    want = want.max(total as u64);
                    break; // the batch continues past this window: read from it
                }
                let e = BatchError::Truncated { needed: total, available: (end - position) as usize - at };
                return Ok(WalkEnd { position: position + at as u64, invalid: Some(e.to_string()) });
            }
            let batch = window.slice(at..at + total);
            let checked = if verify_crc { check_batch(&batch).map(|_| ()) } else { Ok(()) };
            if let Err(e) = checked {
                return Ok(WalkEnd { position: position + at as u64, invalid: Some(e.to_string()) });
            }
            let header = match BatchHeader::view(&batch) {
                Ok(h) => h,
                Err(e) => return Ok(WalkEnd { position: position + at as u64, invalid: Some(e.to_string()) }),
            };
            match visit(position + at as u64, header, &batch) {
                Step::Continue => at += total,
                Step::Stop => return Ok(WalkEnd { position: position + at as u64, invalid: None }),
                Step::Invalid(reason) => return Ok(WalkEnd { position: position + at as u64, invalid: Some(reason) }),
            }
        }
        position += at as u64;
    }
    Ok(WalkEnd { position, invalid: None })
}
