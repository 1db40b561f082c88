//! A controller voter's log in its directory: the node side of `quorum::Persist`, through
//! the I/O seam (O_DIRECT files on io_uring). The bytes are `sluice_replication::format`'s.
//!
//! Files: `snapshot` (the latest snapshot, replaced atomically) and one write-ahead log
//! segment `wal-<index>`, which holds what follows the snapshot at `<index>` (0: none).
//! An old `raft.wal` (the log before snapshots existed, the same records) is taken as
//! segment 0.
//!
//! Guarantees:
//! - `write` returns only when its records are written (they survive kill -9) and, when a
//!   persist asked for it, fdatasynced (they survive power loss).
//! - **No write changes a byte already written**, except with the same bytes: appends are
//!   whole pages (O_DIRECT), so the last partial page stays in memory and each append
//!   rewrites it, carrying its written bytes unchanged (asserted), as partition logs do.
//! - A snapshot is installed only after its segment is written and synced, so a crash
//!   leaves either the old snapshot with the old segment (which still holds everything
//!   after it) or the new pair; `open` removes the segment that is not the snapshot's.
//! - `open` cuts a torn tail (a write whose fsync never completed, so never acknowledged)
//!   and syncs the cut before anything new is written.
//!
//! Where it lives: the shard that runs the voter (shard 0), inside `cluster::agent`'s
//! writer task; nothing here is `Send`.

use std::path::{Path, PathBuf};

use crate::io::{self, align_down, align_up, AlignedBuf, File};
use crate::replication::format::{decode_snapshot, scan_records, LogContents};
use crate::replication::quorum::{Persist, SnapshotWrite};

const SNAPSHOT_FILE: &str = "snapshot";
const SEGMENT_PREFIX: &str = "wal-";
/// The log's file before snapshots: its records are a segment 0.
const LEGACY_LOG_FILE: &str = "raft.wal";

/// Why the log cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("controller log: {what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("controller log: {} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Io { what, path: path.to_path_buf(), source }
}

fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{index:020}"))
}

/// The segment being appended to, and its unwritten-to end.
struct Segment {
    file: File,
    /// The snapshot index it follows.
    index: u64,
    /// Bytes of records in it.
    end: u64,
    /// Its last partial page's bytes (from `align_down(end)` to `end`).
    tail: Vec<u8>,
}

impl Segment {
    /// Appends `bytes`, rewriting the partial last page with them, then syncs if asked.
    async fn append(&mut self, bytes: &[u8], sync: bool) -> Result<(), WalError> {
        let path = self.file.path().to_path_buf();
        if !bytes.is_empty() {
            let start = align_down(self.end);
            let total = self.tail.len() + bytes.len();
            let padded = align_up(total as u64) as usize;
            let mut buf = AlignedBuf::with_capacity(padded);
            let slice = buf.as_mut_slice();
            slice[..self.tail.len()].copy_from_slice(&self.tail);
            slice[self.tail.len()..total].copy_from_slice(bytes);
            slice[total..padded].fill(0);
            let buf = buf.freeze(padded);
            // The page holding the end of the written records is written again with them,
            // byte for byte; no page before it is written again.
            assert_eq!(start + self.tail.len() as u64, self.end, "the tail is the end of the written records");
            assert!(buf.as_slice()[..self.tail.len()] == self.tail[..], "an append would change written bytes");
            self.file.write_at(&buf, start).await.map_err(io_error("writing", &path))?;
            self.end += bytes.len() as u64;
            let from = (align_down(self.end) - start) as usize;
            self.tail = buf.as_slice()[from..(self.end - start) as usize].to_vec();
        }
        if sync {
            self.file.fdatasync().await.map_err(io_error("syncing", &path))?;
        }
        Ok(())
    }
}

/// One voter's log (see the module doc).
pub struct ControllerLog {
    dir: PathBuf,
    segment: Segment,
}

impl ControllerLog {
    /// Opens (creating) the log in `dir` and returns it with what it holds: the snapshot
    /// and the records after it, a torn tail cut.
    pub async fn open(dir: &Path) -> Result<(ControllerLog, LogContents), WalError> {
        std::fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        io::probe_device(dir).await.map_err(io_error("probing the device of", dir))?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot = match io::read_file(&snapshot_path).await.map_err(io_error("reading", &snapshot_path))? {
            Some(bytes) => Some(
                decode_snapshot(&bytes).map_err(|reason| WalError::Damaged { path: snapshot_path.clone(), reason })?,
            ),
            None => None,
        };
        let index = snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        let path = segment_path(dir, index);
        let legacy = dir.join(LEGACY_LOG_FILE);
        if index == 0 && !path.exists() && legacy.exists() {
            std::fs::rename(&legacy, &path).map_err(io_error("renaming", &legacy))?;
            io::sync_dir(dir).await.map_err(io_error("syncing", dir))?;
        }
        remove_other_segments(dir, &path).await?;
        let (file, bytes) = if path.exists() {
            let file = File::open(&path, true).await.map_err(io_error("opening", &path))?;
            let size = file.size().await.map_err(io_error("sizing", &path))?;
            let bytes = file.read_at(0, size as usize).await.map_err(io_error("reading", &path))?.to_vec();
            (file, bytes)
        } else if snapshot.is_none() {
            let file = File::create_new(&path).await.map_err(io_error("creating", &path))?;
            io::sync_dir(dir).await.map_err(io_error("syncing", dir))?;
            (file, Vec::new())
        } else {
            // Its hard state (the vote) is gone with it: going on could vote twice.
            return Err(WalError::Damaged {
                path,
                reason: format!("the snapshot at index {index} has no log segment after it"),
            });
        };
        let scan = scan_records(&bytes);
        let end = scan.valid_bytes as u64;
        if bytes.len() as u64 != end {
            if scan.torn {
                tracing::warn!(path = %path.display(), valid = end, found = bytes.len(), "cutting a torn controller log tail");
            }
            // Cut (and synced) before anything is appended, so no later page can be read
            // as following the new records.
            file.truncate(end).await.map_err(io_error("truncating", &path))?;
            file.fdatasync().await.map_err(io_error("syncing", &path))?;
        }
        let tail = bytes[align_down(end) as usize..end as usize].to_vec();
        let log = ControllerLog { dir: dir.to_path_buf(), segment: Segment { file, index, end, tail } };
        Ok((log, LogContents { snapshot, records: scan.records }))
    }

    /// Performs `persists` in order: appends in a run share one write and one fdatasync;
    /// a snapshot starts its new segment.
    pub async fn write(&mut self, persists: &[Persist]) -> Result<(), WalError> {
        let mut run = Vec::new();
        let mut sync = false;
        for persist in persists {
            match &persist.snapshot {
                None => {
                    run.extend_from_slice(&persist.records);
                    sync |= persist.sync;
                }
                Some(snapshot) => {
                    self.segment.append(&run, sync).await?;
                    run.clear();
                    sync = false;
                    self.install(snapshot, &persist.records).await?;
                }
            }
        }
        self.segment.append(&run, sync).await
    }

    /// Starts the segment after `snapshot` with `records`, then installs the snapshot,
    /// then removes the old segment.
    async fn install(&mut self, snapshot: &SnapshotWrite, records: &[u8]) -> Result<(), WalError> {
        assert!(snapshot.index > self.segment.index, "snapshot {} after {}", snapshot.index, self.segment.index);
        let path = segment_path(&self.dir, snapshot.index);
        // A leftover of an install that failed part-way.
        io::remove_file(&path).map_err(io_error("removing", &path))?;
        let file = File::create_new(&path).await.map_err(io_error("creating", &path))?;
        let mut segment = Segment { file, index: snapshot.index, end: 0, tail: Vec::new() };
        segment.append(records, true).await?;
        io::sync_dir(&self.dir).await.map_err(io_error("syncing", &self.dir))?;
        let snapshot_path = self.dir.join(SNAPSHOT_FILE);
        io::write_file_atomically(&snapshot_path, &snapshot.file).await.map_err(io_error("writing", &snapshot_path))?;
        let old = std::mem::replace(&mut self.segment, segment);
        let old_path = old.file.path().to_path_buf();
        old.file.close().await.map_err(io_error("closing", &old_path))?;
        io::remove_file(&old_path).map_err(io_error("removing", &old_path))
    }
}

/// Removes every segment but `keep` (leftovers of an install a crash interrupted).
async fn remove_other_segments(dir: &Path, keep: &Path) -> Result<(), WalError> {
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(io_error("listing", dir))? {
        let path = entry.map_err(io_error("listing", dir))?.path();
        let is_segment = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(SEGMENT_PREFIX));
        if is_segment && path != keep {
            io::remove_file(&path).map_err(io_error("removing", &path))?;
            removed = true;
        }
    }
    if removed {
        io::sync_dir(dir).await.map_err(io_error("syncing", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use raft::eraftpb::Snapshot;

    use super::*;
    use crate::replication::format::{encode_snapshot, push_record, KIND_ENTRY, KIND_HARD_STATE};
    use crate::replication::quorum::{Quorum, QuorumConfig};
    use crate::replication::{ClusterState, Command, Incarnation, NodeId};

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        sluice_io::rt::LocalExecutorBuilder::new(sluice_io::rt::Placement::Unbound).make().unwrap().run(f)
    }

    fn append(number: u64, payloads: &[&[u8]], sync: bool) -> Persist {
        let mut records = Vec::new();
        for p in payloads {
            push_record(&mut records, KIND_ENTRY, p);
        }
        Persist { number, snapshot: None, records, sync }
    }

    fn payloads(contents: &LogContents) -> Vec<Vec<u8>> {
        contents.records.iter().map(|(_, p)| p.clone()).collect()
    }

    fn snapshot_at(index: u64) -> SnapshotWrite {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = 2;
        snapshot.data = b"state".to_vec().into();
        SnapshotWrite { index, file: encode_snapshot(&snapshot) }
    }

    /// Appends of every size (across page boundaries, one group write of several
    /// persists) read back in order after a reopen; the file holds exactly the records,
    /// its partial last page rewritten each time with the same leading bytes.
    #[test]
    fn appends_rewrite_the_partial_page_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 0);
        let big = vec![7u8; 5000];
        let expected: Vec<Vec<u8>> =
            vec![b"a".to_vec(), big.clone(), b"c".to_vec(), vec![9u8; 4087], b"e".to_vec(), b"f".to_vec()];
        run(async {
            let (mut log, contents) = ControllerLog::open(dir.path()).await.unwrap();
            assert!(contents.snapshot.is_none() && contents.records.is_empty());
            log.write(&[append(1, &[b"a"], true)]).await.unwrap();
            log.write(&[append(2, &[&big, b"c"], false)]).await.unwrap();
            let before = std::fs::read(&path).unwrap();
            log.write(&[append(3, &[&[9u8; 4087]], true), append(4, &[b"e", b"f"], false)]).await.unwrap();
            let after = std::fs::read(&path).unwrap();
            assert_eq!(after.len() % 4096, 0, "O_DIRECT writes whole pages");
            let written = log.segment.end as usize;
            let mut records = Vec::new();
            for p in &expected {
                push_record(&mut records, KIND_ENTRY, p);
            }
            assert_eq!(&after[..written], &records[..], "the file holds the records back to back");
            assert!(after[written..].iter().all(|b| *b == 0), "then zero padding");
            let kept = scan_records(&before).valid_bytes;
            assert_eq!(before[..kept], after[..kept], "no written byte changed");
        });
        run(async {
            let (_, contents) = ControllerLog::open(dir.path()).await.unwrap();
            assert_eq!(payloads(&contents), expected);
        });
    }

    /// A torn last write (half a record, then garbage) is cut at open, the cut reaches the
    /// file, and records appended afterwards read back with nothing of the torn one.
    #[test]
    fn a_torn_tail_is_cut_at_open_and_never_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 0);
        run(async {
            let (mut log, _) = ControllerLog::open(dir.path()).await.unwrap();
            log.write(&[append(1, &[b"kept"], true)]).await.unwrap();
        });
        let whole = scan_records(&std::fs::read(&path).unwrap()).valid_bytes;
        let mut torn = std::fs::read(&path).unwrap();
        torn.truncate(whole);
        let mut record = Vec::new();
        push_record(&mut record, KIND_HARD_STATE, &[5u8; 6000]);
        torn.extend_from_slice(&record[..3000]);
        torn.extend_from_slice(&[0xAB; 9000]);
        std::fs::write(&path, &torn).unwrap();
        run(async {
            let (mut log, contents) = ControllerLog::open(dir.path()).await.unwrap();
            assert_eq!(payloads(&contents), vec![b"kept".to_vec()]);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64, "the torn tail is cut in the file");
            log.write(&[append(2, &[b"after"], true)]).await.unwrap();
        });
        run(async {
            let (_, contents) = ControllerLog::open(dir.path()).await.unwrap();
            assert_eq!(payloads(&contents), vec![b"kept".to_vec(), b"after".to_vec()]);
        });
    }

    /// A snapshot starts a new segment holding what follows it, appends go there, the old
    /// segment is gone; a segment left by an install that a crash interrupted (before its
    /// snapshot was renamed into place) is removed at open; a damaged snapshot file is
    /// refused, naming it.
    #[test]
    fn a_snapshot_starts_a_new_segment_and_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let (mut log, _) = ControllerLog::open(dir.path()).await.unwrap();
            log.write(&[append(1, &[b"old-1", b"old-2"], true)]).await.unwrap();
            let mut segment = Vec::new();
            push_record(&mut segment, KIND_HARD_STATE, b"hs");
            push_record(&mut segment, KIND_ENTRY, b"new-1");
            let install = Persist { number: 2, snapshot: Some(snapshot_at(5)), records: segment, sync: true };
            log.write(&[append(2, &[b"lost in the snapshot"], false), install, append(3, &[b"new-2"], true)])
                .await
                .unwrap();
        });
        assert!(!segment_path(dir.path(), 0).exists(), "the old segment is removed");
        std::fs::write(segment_path(dir.path(), 9), b"an interrupted install").unwrap();
        run(async {
            let (_, contents) = ControllerLog::open(dir.path()).await.unwrap();
            assert_eq!(contents.snapshot.as_ref().unwrap().get_metadata().index, 5);
            assert_eq!(payloads(&contents), vec![b"hs".to_vec(), b"new-1".to_vec(), b"new-2".to_vec()]);
        });
        assert!(!segment_path(dir.path(), 9).exists(), "the leftover segment is removed");
        let snapshot = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&snapshot).unwrap();
        bytes[12] ^= 1;
        std::fs::write(&snapshot, bytes).unwrap();
        run(async {
            let error = ControllerLog::open(dir.path()).await.err().unwrap().to_string();
            assert!(error.contains("snapshot") && error.contains("damaged"), "{error}");
        });
    }

    /// Drives a quorum's persists through the log until it has nothing more to write.
    async fn drive(quorum: &mut Quorum<ClusterState>, log: &mut ControllerLog) {
        while let Some(persist) = quorum.poll().unwrap().persist {
            log.write(std::slice::from_ref(&persist)).await.unwrap();
            quorum.persisted(persist.number);
        }
    }

    /// A voter that compacts its log on disk many times (a snapshot every few commands)
    /// reopens from its files to the same state, with one snapshot and one segment left.
    #[test]
    fn a_voter_compacting_on_disk_reopens_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let config = QuorumConfig { log_bytes_max: 600, log_entries_max: 8 };
        let bootstrap = || ClusterState::new(&[NodeId(1), NodeId(2)], &[]);
        let expected = run(async {
            let (mut log, contents) = ControllerLog::open(dir.path()).await.unwrap();
            let mut quorum = Quorum::open(1, &[1], &[2], contents, bootstrap(), config).unwrap();
            for i in 0..30 {
                let command = Command::RegisterNode { node: NodeId(i % 2 + 1), incarnation: Incarnation(u64::from(i)) };
                quorum.propose(command.encode()).unwrap();
                drive(&mut quorum, &mut log).await;
            }
            assert!(quorum.snapshot_index() > 20, "compacted: snapshot at {}", quorum.snapshot_index());
            assert_eq!(quorum.state().node(NodeId(2)).unwrap().incarnation, Some(Incarnation(29)));
            quorum.state().clone()
        });
        let files: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(files.len(), 2, "a snapshot and its segment: {files:?}");
        let reopened = run(async {
            let (mut log, contents) = ControllerLog::open(dir.path()).await.unwrap();
            assert!(contents.snapshot.is_some());
            let mut quorum = Quorum::open(1, &[1], &[2], contents, bootstrap(), config).unwrap();
            drive(&mut quorum, &mut log).await;
            quorum.state().clone()
        });
        assert_eq!(reopened, expected);
    }

    /// The log written before snapshots (`raft.wal`, same records) opens as segment 0.
    #[test]
    fn the_log_before_snapshots_opens_as_segment_zero() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = Vec::new();
        push_record(&mut old, KIND_ENTRY, b"from before");
        std::fs::write(dir.path().join(LEGACY_LOG_FILE), &old).unwrap();
        run(async {
            let (_, contents) = ControllerLog::open(dir.path()).await.unwrap();
            assert_eq!(payloads(&contents), vec![b"from before".to_vec()]);
        });
        assert!(!dir.path().join(LEGACY_LOG_FILE).exists() && segment_path(dir.path(), 0).exists());
    }

    /// Power losses at the I/O seam (`sluice_io::faults`): each life opens the log, appends
    /// persists of random sizes (some synced) and now and then installs a snapshot, then the
    /// power goes out and every write no sync covered is kept, lost or torn at a sector.
    /// After each, the log opens to the last snapshot installed and a prefix of the
    /// payloads written after it that holds at least every synced one, never anything
    /// else (a torn record is cut), over 40 seeds of 6 lives.
    #[test]
    fn synced_records_and_snapshots_survive_power_losses() {
        use sluice_io::faults::{self, Survival, Verdict};
        let mut lost = 0;
        for seed in 1..=40u64 {
            let dir = tempfile::tempdir().unwrap();
            // A linear congruential generator is enough to vary sizes and choices.
            let state = std::rc::Rc::new(std::cell::Cell::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
            let next = {
                let state = state.clone();
                move |n: u64| {
                    state.set(
                        state.get().wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407),
                    );
                    (state.get() >> 33) % n.max(1)
                }
            };
            faults::install(|_| Verdict::Proceed);
            // What the log must hold after the snapshot: payloads in order, and how many
            // of them were synced.
            let (mut snapshot, mut written, mut durable) = (0u64, Vec::<Vec<u8>>::new(), 0usize);
            for life in 0..6 {
                let context = format!("seed {seed}, life {life}");
                run(async {
                    let (mut log, _) = ControllerLog::open(dir.path()).await.unwrap();
                    for i in 0..next(12) {
                        if next(8) == 0 {
                            let index = snapshot + 1 + i;
                            log.write(&[Persist {
                                snapshot: Some(snapshot_at(index)),
                                ..append(i, &[b"after"], true)
                            }])
                            .await
                            .unwrap();
                            snapshot = index;
                            written = vec![b"after".to_vec()];
                            durable = 1;
                            continue;
                        }
                        let payload = vec![(i + 1) as u8; 1 + next(6000) as usize];
                        let sync = next(3) == 0;
                        log.write(&[append(i, &[&payload], sync)]).await.unwrap();
                        written.push(payload);
                        if sync {
                            durable = written.len();
                        }
                    }
                });
                let pick = next.clone();
                faults::power_loss(
                    |_, _, len| match pick(4) {
                        0 => Survival::Kept,
                        1 => Survival::Torn { sectors: pick((len / faults::SECTOR_BYTES) as u64) as usize },
                        _ => Survival::Lost,
                    },
                    |_| false,
                )
                .unwrap();
                let (opened_snapshot, opened) = run(async {
                    let (_, contents) = ControllerLog::open(dir.path()).await.unwrap();
                    (contents.snapshot.as_ref().map_or(0, |s| s.get_metadata().index), payloads(&contents))
                });
                assert_eq!(opened_snapshot, snapshot, "{context}: the snapshot installed last");
                assert!(opened.len() >= durable, "{context}: {} records survived, {durable} were synced", opened.len());
                assert!(written.starts_with(&opened), "{context}: the log holds a prefix of what was written");
                lost += written.len() - opened.len();
                written = opened;
                durable = written.len();
            }
            faults::uninstall();
        }
        assert!(lost > 0, "no power loss took an unsynced record: the test tried nothing");
    }
}
