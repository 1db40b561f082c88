//! The log's small files besides segments: the log-start checkpoint, the leader-epoch
//! cache and a segment's index files, each written atomically, and removing a segment's
//! files.

use std::path::Path;

use sluice_schemas::ids::LeaderEpoch;
use sluice_schemas::Offset;
use tracing::warn;

use crate::error::StorageError;
use crate::producers::{ProducerStates, SNAPSHOT_SUFFIX};
use crate::segment::{segment_path, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use sluice_io as io;

use super::EpochStarts;

/// The file that remembers a log start offset inside the first segment (after
/// DeleteRecords or retention moved it past the segment's base).
const LOG_START_FILE: &str = "log-start-offset";

/// The leader-epoch cache (Kafka's `leader-epoch-checkpoint`): one "epoch first-offset"
/// line per epoch. Written before each roll and after each truncation, so it always
/// covers the closed segments; the active segment's epochs come from its scan at open.
const EPOCHS_FILE: &str = "leader-epochs";

/// Written when the log closes cleanly (`CleanClose`); removed before the log first
/// changes after an open.
pub(super) const CLEAN_CLOSE_FILE: &str = "clean-close";
const CLEAN_CLOSE_MAGIC: &[u8; 4] = b"SLCC";
const CLEAN_CLOSE_VERSION: u16 = 1;

/// What a clean close leaves for the next open, so that it need not scan the active
/// segment whole (Kafka's clean-shutdown marker): the active segment as it was closed
/// (base, size, next offset, creation time) and the producers' state at the log end.
/// Its index files and the leader-epoch cache are written beside it at the close.
#[derive(Debug)]
pub struct CleanClose {
    pub base: Offset,
    pub size: u64,
    pub next_offset: Offset,
    pub created_ms: i64,
    pub producers: ProducerStates,
}

impl CleanClose {
    /// The record's bytes: magic, version, the four numbers (little-endian), the
    /// producers' snapshot (`ProducerStates::encode`), then a CRC-32C of all of it.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        encode_clean_close(self.base, self.size, self.next_offset, self.created_ms, &self.producers)
    }

    /// Reads `encode`'s bytes, or says what is wrong with them.
    pub fn decode(bytes: &[u8]) -> Result<CleanClose, String> {
        const FIXED: usize = 4 + 2 + 8 * 4;
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else { return Err("shorter than its checksum".into()) };
        if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
            return Err("checksum mismatch".into());
        }
        if body.len() < FIXED || &body[..4] != CLEAN_CLOSE_MAGIC {
            return Err("not a clean-close record".into());
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let version = u16::from_le_bytes([body[4], body[5]]);
        if version != CLEAN_CLOSE_VERSION {
            return Err(format!("unknown version {version}"));
        }
        Ok(CleanClose {
            base: Offset(u64_at(6)),
            size: u64_at(14),
            next_offset: Offset(u64_at(22)),
            created_ms: u64_at(30) as i64,
            producers: ProducerStates::decode(&body[FIXED..])?,
        })
    }
}

/// `CleanClose::encode` of a log's active segment and producers, without copying them.
pub(super) fn encode_clean_close(
    base: Offset,
    size: u64,
    next_offset: Offset,
    created_ms: i64,
    producers: &ProducerStates,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(CLEAN_CLOSE_MAGIC);
    out.extend_from_slice(&CLEAN_CLOSE_VERSION.to_le_bytes());
    out.extend_from_slice(&base.0.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&next_offset.0.to_le_bytes());
    out.extend_from_slice(&created_ms.to_le_bytes());
    out.extend_from_slice(&producers.encode());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Writes a clean-close record (`encode_clean_close`'s bytes) atomically.
pub(super) async fn write_clean_close(dir: &Path, record: &[u8]) -> Result<(), StorageError> {
    let path = dir.join(CLEAN_CLOSE_FILE);
    io::write_file_atomically(&path, record).await.map_err(|e| StorageError::io("writing", &path, e))
}

/// The clean-close record a clean close left, if any and readable.
pub(super) async fn read_clean_close(dir: &Path) -> Result<Option<CleanClose>, StorageError> {
    let path = dir.join(CLEAN_CLOSE_FILE);
    let Some(bytes) = io::read_file(&path).await.map_err(|e| StorageError::io("reading", &path, e))? else {
        return Ok(None);
    };
    match CleanClose::decode(&bytes) {
        Ok(clean) => Ok(Some(clean)),
        Err(reason) => {
            warn!(path = %path.display(), %reason, "ignoring an unreadable clean-close record; scanning the log");
            Ok(None)
        }
    }
}

/// Removes the clean-close record, durably: done before anything changes the log after
/// an open, so a record on the disk always describes the log as it is.
pub(super) async fn remove_clean_close(dir: &Path) -> Result<(), StorageError> {
    let path = dir.join(CLEAN_CLOSE_FILE);
    io::remove_file(&path).map_err(|e| StorageError::io("removing", &path, e))?;
    io::sync_dir(dir).await.map_err(|e| StorageError::io("syncing directory", dir, e))
}

pub(super) async fn write_index_files(
    dir: &Path,
    base: Offset,
    offsets: &[u8],
    times: &[u8],
) -> Result<(), StorageError> {
    for (suffix, bytes) in [(INDEX_SUFFIX, offsets), (TIME_INDEX_SUFFIX, times)] {
        let path = segment_path(dir, base, suffix);
        io::write_file_atomically(&path, bytes).await.map_err(|e| StorageError::io("writing index", &path, e))?;
    }
    Ok(())
}

pub(super) fn remove_segment_files(dir: &Path, base: Offset) -> Result<(), StorageError> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, SNAPSHOT_SUFFIX] {
        let path = segment_path(dir, base, suffix);
        // An open file would keep the deleted file's space.
        crate::segment_files::forget(&path);
        io::remove_file(&path).map_err(|e| StorageError::io("removing", &path, e))?;
    }
    Ok(())
}

pub(super) async fn write_producer_snapshot(dir: &Path, base: Offset, bytes: &[u8]) -> Result<(), StorageError> {
    let path = segment_path(dir, base, SNAPSHOT_SUFFIX);
    io::write_file_atomically(&path, bytes).await.map_err(|e| StorageError::io("writing producer snapshot", &path, e))
}

/// Segment `base`'s producer snapshot; `None` when it is missing or unreadable (said in
/// the log: recovery then scans more of the log instead).
pub(super) async fn read_producer_snapshot(dir: &Path, base: Offset) -> Option<ProducerStates> {
    let path = segment_path(dir, base, SNAPSHOT_SUFFIX);
    match io::read_file(&path).await {
        Ok(Some(bytes)) => match ProducerStates::decode(&bytes) {
            Ok(states) => Some(states),
            Err(reason) => {
                warn!(path = %path.display(), %reason, "ignoring an unreadable producer snapshot");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "ignoring an unreadable producer snapshot");
            None
        }
    }
}

pub(super) async fn read_log_start(dir: &Path) -> Result<Option<Offset>, StorageError> {
    let path = dir.join(LOG_START_FILE);
    let Some(bytes) = io::read_file(&path).await.map_err(|e| StorageError::io("reading", &path, e))? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    match text.trim().parse::<u64>() {
        Ok(v) => Ok(Some(Offset(v))),
        Err(_) => {
            warn!(path = %path.display(), content = %text.trim(), "ignoring an unreadable log start checkpoint");
            Ok(None)
        }
    }
}

pub(super) async fn write_log_start(dir: &Path, offset: Offset) -> Result<(), StorageError> {
    let path = dir.join(LOG_START_FILE);
    io::write_file_atomically(&path, format!("{offset}\n").as_bytes())
        .await
        .map_err(|e| StorageError::io("writing", &path, e))
}

pub(super) async fn read_epochs(dir: &Path) -> Result<EpochStarts, StorageError> {
    let path = dir.join(EPOCHS_FILE);
    let Some(bytes) = io::read_file(&path).await.map_err(|e| StorageError::io("reading", &path, e))? else {
        return Ok(Vec::new());
    };
    let mut epochs: EpochStarts = Vec::new();
    for line in String::from_utf8_lossy(&bytes).lines() {
        let mut fields = line.split_whitespace().map(str::parse::<u64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(epoch)), Some(Ok(start))) if epoch <= u64::from(u32::MAX) => {
                let entry = (LeaderEpoch(epoch as u32), Offset(start));
                if epochs.last().is_none_or(|last| last.0 < entry.0 && last.1 <= entry.1) {
                    epochs.push(entry);
                    continue;
                }
            }
            _ => {}
        }
        warn!(path = %path.display(), %line, "ignoring the rest of an unreadable leader-epoch file");
        break;
    }
    Ok(epochs)
}

pub(super) async fn write_epochs(dir: &Path, epochs: &[(LeaderEpoch, Offset)]) -> Result<(), StorageError> {
    let path = dir.join(EPOCHS_FILE);
    let text: String = epochs.iter().map(|(epoch, start)| format!("{epoch} {start}\n")).collect();
    io::write_file_atomically(&path, text.as_bytes()).await.map_err(|e| StorageError::io("writing", &path, e))
}
