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
