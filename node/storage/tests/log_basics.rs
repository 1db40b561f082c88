//! Specifications of the partition log's behaviour, each on real files in a temporary
//! directory, driven through glommio and io_uring as in the node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{batch, run};
use sluice_schemas::batch::{BatchWalker, HEADER_BYTES};
use sluice_schemas::ids::LeaderEpoch;
use sluice_schemas::Offset;
use sluice_storage::{FaultPoint, FsyncPolicy, LogConfig, PartitionLog, StorageError};

fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 8 * 1024, index_interval_bytes: 1024, ..LogConfig::default() }
}

/// A log in `path` with small segments holding `count` batches of 4 records (offsets
/// 4i..4i+3, timestamps 1000i..1000i+3).
async fn filled_log(path: &std::path::Path, count: u64) -> PartitionLog {
    let (log, _) = PartitionLog::open(path, small_config()).await.unwrap();
    for i in 0..count {
        log.append(&batch(i, 4, 200, 1000 * i as i64)).await.unwrap();
    }
    log
}

/// The base offsets of the batches in `bytes`.
fn bases(bytes: &[u8]) -> Vec<u64> {
    BatchWalker::new(bytes).map(|b| b.unwrap().1.base_offset().0).collect()
}

#[test]
fn appends_get_consecutive_offsets_and_read_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, report) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        assert_eq!(report.log_end, Offset(0));
        let a = batch(1, 3, 10, 1000);
        let b = batch(2, 2, 10, 2000);
        let info = log.append(&a).await.unwrap();
        assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(2)));
        let info = log.append(&b).await.unwrap();
        assert_eq!((info.base_offset, info.last_offset), (Offset(3), Offset(4)));
        assert_eq!(log.log_end_offset(), Offset(5));
        let read = log.read(Offset(0), 1 << 20).await.unwrap();
        let bytes = read.to_vec();
        assert_eq!(bases(&bytes), vec![0, 3]);
        // Everything but the base offset is what the producer sent.
        assert_eq!(bytes[8..a.len()], a[8..]);
        assert_eq!(bytes[a.len() + 8..], b[8..]);
        // An offset inside a batch returns that whole batch.
        let read = log.read(Offset(4), 1 << 20).await.unwrap();
        assert_eq!(bases(&read.to_vec()), vec![3]);
        assert_eq!(read.next_offset, Offset(5));
        // At the end: empty. Past it: out of range.
        assert!(log.read(Offset(5), 1 << 20).await.unwrap().chunks.is_empty());
        assert!(matches!(log.read(Offset(6), 1).await, Err(StorageError::OffsetOutOfRange { .. })));
        log.close().await.unwrap();
    });
}

#[test]
fn several_batches_in_one_append_and_max_bytes_returns_at_least_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        let mut many = Vec::new();
        for i in 0..5 {
            many.extend(batch(i, 2, 100, 0));
        }
        let info = log.append(&many).await.unwrap();
        assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(9)));
        let one = log.read(Offset(0), 1).await.unwrap();
        assert_eq!(bases(&one.to_vec()), vec![0]);
        let batch_bytes = one.bytes();
        let two = log.read(Offset(2), 2 * batch_bytes).await.unwrap();
        assert_eq!(bases(&two.to_vec()), vec![2, 4]);
        log.close().await.unwrap();
    });
}

#[test]
fn bad_batches_are_refused_with_their_position_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        let good = batch(1, 1, 10, 0);
        let mut corrupt = batch(2, 1, 10, 0);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let mut both = good.clone();
        both.extend(&corrupt);
        match log.append(&both).await {
            Err(StorageError::InvalidBatch { position, source }) => {
                assert_eq!(position, good.len());
                assert!(source.to_string().contains("CRC"), "{source}");
            }
            other => panic!("expected InvalidBatch, got {other:?}"),
        }
        assert!(matches!(log.append(&good[..HEADER_BYTES - 1]).await, Err(StorageError::InvalidBatch { .. })));
        assert!(matches!(log.append(&[]).await, Err(StorageError::EmptyAppend)));
        assert_eq!(log.log_end_offset(), Offset(0));
        let config = LogConfig { batch_bytes_max: 100, ..LogConfig::default() };
        drop(log);
        let (log, _) = PartitionLog::open(&path, config).await.unwrap();
        let e = log.append(&batch(3, 1, 200, 0)).await.unwrap_err();
        assert!(e.to_string().contains("exceeds the limit of 100 bytes"), "{e}");
        log.close().await.unwrap();
    });
}

#[test]
fn segments_roll_by_size_and_survive_reopen_with_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        let mut expected = Vec::new();
        for i in 0..40u64 {
            let b = batch(i, 4, 200, i as i64 * 10);
            log.append(&b).await.unwrap();
            expected.push(b);
        }
        let segments = log.segments();
        assert!(segments.len() >= 4, "{segments:?}");
        assert!(segments.iter().all(|s| s.size_bytes <= 8 * 1024));
        log.close().await.unwrap();
        for suffix in ["index", "timeindex"] {
            let name = format!("{:020}.{suffix}", segments[0].base.0);
            assert!(path.join(&name).exists(), "{name} written at roll");
        }
        let (log, report) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert!(report.truncations.is_empty() && report.rebuilt_indexes.is_empty(), "{report:?}");
        assert_eq!(report.log_end, Offset(160));
        assert_eq!(log.segments(), segments);
        let mut offset = Offset(0);
        let mut all = Vec::new();
        while offset < log.log_end_offset() {
            let read = log.read(offset, 3000).await.unwrap();
            assert!(!read.from_cache);
            all.extend(read.to_vec());
            offset = read.next_offset;
        }
        let walked: Vec<_> = BatchWalker::new(&all).map(|b| b.unwrap().2.to_vec()).collect();
        assert_eq!(walked.len(), expected.len());
        for (i, (got, want)) in walked.iter().zip(&expected).enumerate() {
            assert_eq!(got[8..], want[8..], "batch {i}");
        }
        log.close().await.unwrap();
    });
}

#[test]
fn a_missing_or_damaged_index_is_rebuilt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = filled_log(&path, 30).await;
        let segments = log.segments();
        log.close().await.unwrap();
        std::fs::remove_file(path.join(format!("{:020}.index", segments[0].base.0))).unwrap();
        std::fs::write(path.join(format!("{:020}.timeindex", segments[1].base.0)), b"garbage").unwrap();
        let (log, report) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert_eq!(report.rebuilt_indexes.len(), 2, "{report:?}");
        assert_eq!(log.segments(), segments);
        let read = log.read(segments[1].base.plus(1), 1).await.unwrap();
        assert_eq!(bases(&read.to_vec()), vec![segments[1].base.0]);
        log.close().await.unwrap();
        let (_log, report) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert!(report.rebuilt_indexes.is_empty(), "rebuilt indexes were written back");
    });
}

#[test]
fn flipped_bytes_in_a_closed_segment_give_a_corruption_error_naming_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = filled_log(&path, 30).await;
        let first = log.segments()[0];
        log.close().await.unwrap();
        let seg = path.join(format!("{:020}.log", first.base.0));
        let mut bytes = std::fs::read(&seg).unwrap();
        // Inside the records of the third batch.
        let (position, header, _) = BatchWalker::new(&bytes).nth(2).unwrap().unwrap();
        let target = header.base_offset();
        bytes[position + HEADER_BYTES + 20] ^= 0x5a;
        std::fs::write(&seg, &bytes).unwrap();
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        // Earlier batches still read.
        assert!(log.read(Offset(0), 1).await.is_ok());
        match log.read(target, 1).await {
            Err(StorageError::Corrupt { segment, offset, position: p, reason }) => {
                assert_eq!(segment, seg);
                assert_eq!(offset, target);
                assert_eq!(p, position as u64);
                assert!(reason.contains("CRC"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        log.close().await.unwrap();
    });
}

#[test]
fn a_torn_tail_is_cut_at_open_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        for i in 0..5u64 {
            log.append(&batch(i, 2, 50, 0)).await.unwrap();
        }
        log.close().await.unwrap();
        let seg = path.join(format!("{:020}.log", 0));
        let good_len = std::fs::metadata(&seg).unwrap().len();
        // Half a batch, as a write cut short by a crash would leave.
        let extra = batch(9, 2, 50, 0);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes.extend(&extra[..extra.len() / 2]);
        std::fs::write(&seg, &bytes).unwrap();
        let (log, report) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        assert_eq!(report.truncations.len(), 1, "{report:?}");
        let cut = &report.truncations[0];
        assert_eq!((cut.offset, cut.position, cut.bytes_cut), (Offset(10), good_len, extra.len() as u64 / 2));
        assert_eq!(log.log_end_offset(), Offset(10));
        let info = log.append(&batch(10, 1, 50, 0)).await.unwrap();
        assert_eq!(info.base_offset, Offset(10));
        log.close().await.unwrap();
    });
}

#[test]
fn truncate_to_cuts_whole_batches_and_appends_continue_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = filled_log(&path, 30).await;
        // Offset 41 is inside the batch 40..43: that whole batch goes.
        assert_eq!(log.truncate_to(Offset(41)).await.unwrap(), Offset(40));
        assert_eq!(log.log_end_offset(), Offset(40));
        assert!(log.segments().last().unwrap().next_offset == Offset(40));
        let info = log.append(&batch(99, 2, 10, 0)).await.unwrap();
        assert_eq!(info.base_offset, Offset(40));
        let read = log.read(Offset(36), 1 << 20).await.unwrap();
        assert_eq!(bases(&read.to_vec()), vec![36, 40]);
        log.close().await.unwrap();
        let (log, report) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert_eq!(report.log_end, Offset(42));
        assert!(report.truncations.is_empty(), "{report:?}");
        log.close().await.unwrap();
    });
}

#[test]
fn advancing_the_log_start_deletes_whole_segments_and_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = filled_log(&path, 30).await;
        let segments = log.segments();
        let target = segments[2].base.plus(1);
        assert_eq!(log.advance_log_start(target).await.unwrap(), 2);
        assert_eq!(log.log_start_offset(), target);
        assert!(!path.join(format!("{:020}.log", segments[0].base.0)).exists());
        assert!(matches!(log.read(Offset(0), 1).await, Err(StorageError::OffsetOutOfRange { .. })));
        log.close().await.unwrap();
        let (log, report) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert_eq!(report.log_start, target);
        assert!(matches!(log.read(segments[2].base, 1).await, Err(StorageError::OffsetOutOfRange { .. })));
        log.close().await.unwrap();
    });
}

#[test]
fn offset_for_timestamp_finds_the_first_batch_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = filled_log(&path, 30).await;
        assert_eq!(log.offset_for_timestamp(0).await.unwrap(), Some(Offset(0)));
        assert_eq!(log.offset_for_timestamp(5003).await.unwrap(), Some(Offset(20)));
        assert_eq!(log.offset_for_timestamp(5004).await.unwrap(), Some(Offset(24)));
        assert_eq!(log.offset_for_timestamp(29_003).await.unwrap(), Some(Offset(116)));
        assert_eq!(log.offset_for_timestamp(29_004).await.unwrap(), None);
        log.close().await.unwrap();
    });
}

#[test]
fn a_failed_write_or_fsync_poisons_the_log_and_reopening_recovers_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        for point in [FaultPoint::Write, FaultPoint::Fsync] {
            let (log, _) = PartitionLog::open(&path, LogConfig { fsync: FsyncPolicy::Always, ..LogConfig::default() })
                .await
                .unwrap();
            let end = log.log_end_offset();
            log.append(&batch(1, 1, 10, 0)).await.unwrap();
            log.faults().arm(point);
            let e = log.append(&batch(2, 1, 10, 0)).await.unwrap_err();
            assert!(matches!(e, StorageError::Poisoned { .. }), "{e}");
            assert!(e.to_string().contains("injected fault"), "{e}");
            // Later appends fail with the same cause; nothing is reported written.
            let e = log.append(&batch(3, 1, 10, 0)).await.unwrap_err();
            assert!(e.to_string().contains("poisoned"), "{e}");
            assert_eq!(log.log_end_offset(), end.plus(1));
            log.close().await.unwrap();
        }
        let (log, _) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        // Each round kept its first batch; the failed write (if it reached the disk) is
        // a valid batch too, so the log holds 2 to 3 records, never a torn one.
        assert!((2..=3).contains(&log.log_end_offset().0), "{}", log.log_end_offset());
        log.close().await.unwrap();
    });
}

#[test]
fn the_tail_is_served_from_the_cache_and_older_data_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let config = LogConfig { cache_bytes_max: 64 * 1024, ..small_config() };
        let (log, _) = PartitionLog::open(&path, config).await.unwrap();
        for i in 0..200u64 {
            log.append(&batch(i, 1, 1000, 0)).await.unwrap();
        }
        assert!(log.cache_bytes() <= 64 * 1024);
        let tail = log.read(Offset(199), 1).await.unwrap();
        assert!(tail.from_cache);
        let head = log.read(Offset(0), 1).await.unwrap();
        assert!(!head.from_cache);
        log.close().await.unwrap();
    });
}

#[test]
fn appends_that_arrive_together_share_writes_and_report_their_durability() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        for (fsync, durability) in [
            (FsyncPolicy::Always, sluice_storage::Durability::Synced),
            (FsyncPolicy::Never, sluice_storage::Durability::Written),
        ] {
            let sub = path.join(fsync.to_string());
            let (log, _) = PartitionLog::open(&sub, LogConfig { fsync, ..LogConfig::default() }).await.unwrap();
            let log = std::rc::Rc::new(log);
            let tasks: Vec<_> = (0..32u64)
                .map(|i| {
                    let log = log.clone();
                    glommio::spawn_local(async move { log.append(&batch(i, 2, 100, 0)).await.unwrap() })
                })
                .collect();
            let mut infos = Vec::new();
            for t in tasks {
                infos.push(t.await);
            }
            assert!(infos.iter().all(|i| i.durability == durability));
            let mut bases: Vec<u64> = infos.iter().map(|i| i.base_offset.0).collect();
            bases.sort_unstable();
            assert_eq!(bases, (0..32).map(|i| 2 * i).collect::<Vec<_>>(), "distinct, contiguous offsets");
            let stats = log.stats();
            assert_eq!(stats.appends, 32);
            assert!(stats.writes < 32, "concurrent appends share writes: {stats:?}");
            if fsync == FsyncPolicy::Always {
                assert_eq!(stats.fsyncs, stats.writes, "one fdatasync per write");
            }
            std::rc::Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        }
    });
}

#[test]
fn retention_deletes_closed_segments_past_the_time_and_size_limits_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let clock = sluice_io::Clock::manual(1_000_000);
        let config = LogConfig { retention_ms: Some(10_000), clock: clock.clone(), ..small_config() };
        let (log, _) = PartitionLog::open(&path, config).await.unwrap();
        for i in 0..30u64 {
            // Batch i's records are stamped 1000*i (ms), far in the past for the clock.
            log.append(&batch(i, 4, 200, 1000 * i as i64)).await.unwrap();
        }
        let segments = log.segments();
        assert!(segments.len() >= 3);
        // Everything is older than 10 s at t=1000 s: every closed segment goes.
        let deleted = log.apply_retention().await.unwrap();
        assert_eq!(deleted, segments.len() - 1);
        assert_eq!(log.segments().len(), 1, "the active segment stays");
        assert_eq!(log.log_start_offset(), segments.last().unwrap().base);
        assert!(matches!(log.read(Offset(0), 1).await, Err(StorageError::OffsetOutOfRange { .. })));
        log.close().await.unwrap();

        // By size: keep the newest segments within 20 KiB, whatever their age.
        let sized = path.join("sized");
        let config = LogConfig { retention_ms: None, retention_bytes: Some(20 * 1024), ..small_config() };
        let (log, _) = PartitionLog::open(&sized, config).await.unwrap();
        for i in 0..60u64 {
            log.append(&batch(i, 4, 200, 0)).await.unwrap();
        }
        log.apply_retention().await.unwrap();
        let kept: u64 = log.segments().iter().map(|s| s.size_bytes).sum();
        assert!(kept <= 20 * 1024, "{kept}");
        assert!(log.log_start_offset() > Offset(0));
        log.close().await.unwrap();
    });
}

#[test]
fn log_append_time_topics_stamp_batches_with_the_nodes_clock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let clock = sluice_io::Clock::manual(1_700_000_000_000);
        let config = LogConfig {
            timestamp_type: sluice_schemas::batch::TimestampType::LogAppendTime,
            clock: clock.clone(),
            ..LogConfig::default()
        };
        let (log, _) = PartitionLog::open(&path, config).await.unwrap();
        let info = log.append(&batch(1, 3, 10, 5)).await.unwrap();
        assert_eq!(info.log_append_time_ms, Some(1_700_000_000_000));
        let stored = log.read(Offset(0), 1 << 20).await.unwrap().to_vec();
        let checked = sluice_schemas::batch::check_batch(&stored).unwrap();
        let header = checked.header();
        assert_eq!(header.attributes().timestamp_type(), sluice_schemas::batch::TimestampType::LogAppendTime);
        assert_eq!(header.max_timestamp(), 1_700_000_000_000);
        for r in sluice_schemas::records::RecordIter::from_bytes(&stored).unwrap() {
            assert_eq!(r.unwrap().timestamp, 1_700_000_000_000, "every record reads the append time");
        }
        assert_eq!(log.offset_for_timestamp(1_700_000_000_000).await.unwrap(), Some(Offset(0)));
        log.close().await.unwrap();
    });
}

/// A batch of one record with `key` and `value` (None: a tombstone) at `timestamp`.
fn keyed(key: &str, value: Option<&str>, timestamp: i64) -> Vec<u8> {
    let mut b = sluice_schemas::records::BatchBuilder::new(sluice_schemas::records::BatchConfig::default()).unwrap();
    b.push(Some(key.as_bytes()), value.map(str::as_bytes), &[], timestamp).unwrap();
    b.finish().unwrap()
}

/// Every record of the log as (offset, key, value).
async fn all_records(log: &PartitionLog) -> Vec<(u64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let fetched = log.read(offset, 1 << 20).await.unwrap();
        if fetched.chunks.is_empty() {
            break;
        }
        let bytes = fetched.to_vec();
        for r in BatchWalker::new(&bytes).flat_map(|b| {
            let (_, _, batch) = b.unwrap();
            sluice_schemas::records::RecordIter::from_bytes(batch)
                .unwrap()
                .map(|r| {
                    let r = r.unwrap();
                    (
                        r.offset.0,
                        String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                        r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                    )
                })
                .collect::<Vec<_>>()
        }) {
            out.push(r);
        }
        offset = fetched.next_offset;
    }
    out
}

#[test]
fn compaction_keeps_the_latest_value_of_each_key_at_its_offset_and_drops_old_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let clock = sluice_io::Clock::manual(1_000_000);
        let config =
            LogConfig { segment_bytes: 4096, index_interval_bytes: 256, clock: clock.clone(), ..LogConfig::default() };
        let (log, _) = PartitionLog::open(&path, config.clone()).await.unwrap();
        // 200 records over 10 keys: key k gets values 0..20; key 3 ends with a tombstone.
        let mut latest = std::collections::BTreeMap::new();
        for i in 0..200u64 {
            let key = format!("k{}", i % 10);
            let value = if i == 193 { None } else { Some(format!("v{i}")) };
            log.append(&keyed(&key, value.as_deref(), 1_000 + i as i64)).await.unwrap();
            latest.insert(key, (i, value));
        }
        let before = all_records(&log).await;
        assert_eq!(before.len(), 200);
        let closed_end = log.segments().last().unwrap().base.0;
        // Tombstones are young (delete.retention.ms 1 h): they stay for now.
        let report = log.compact(0, 3_600_000, 0).await.unwrap();
        assert!(report.segments_rewritten > 0 && report.records_removed > 0, "{report:?}");
        let after = all_records(&log).await;
        for (offset, key, value) in &after {
            // Offsets never change: each kept record is the one produced at its offset.
            assert_eq!(value.clone(), before[*offset as usize].2, "offset {offset}");
            if *offset < closed_end {
                assert_eq!(latest[key].0, *offset, "{key} at {offset} was superseded but kept");
            }
        }
        for (key, (offset, _)) in &latest {
            assert!(after.iter().any(|(o, k, _)| o == offset && k == key), "{key}'s latest record at {offset} is kept");
        }
        assert!(after.iter().any(|(o, _, v)| *o == 193 && v.is_none()), "a young tombstone stays");
        // The same after a reopen (the rewritten segments and their indexes are on disk).
        log.close().await.unwrap();
        let (log, report) = PartitionLog::open(&path, config.clone()).await.unwrap();
        assert!(report.truncations.is_empty(), "{report:?}");
        assert_eq!(all_records(&log).await, after);
        // Later, the tombstone's time has passed: it goes too, once its segment is
        // closed and compacted.
        for i in 200..260u64 {
            log.append(&keyed(&format!("x{i}"), Some("filler"), 2_000_000)).await.unwrap();
        }
        clock.set(10_000_000);
        log.compact(0, 3_600_000, 0).await.unwrap();
        let last = all_records(&log).await;
        assert!(!last.iter().any(|(o, _, _)| *o == 193), "an expired tombstone is removed");
        assert_eq!(log.log_end_offset(), Offset(260), "the log end never moves back");
        log.close().await.unwrap();
    });
}

#[test]
fn a_compacted_copy_left_by_a_crash_is_discarded_and_the_segment_is_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let config = LogConfig { segment_bytes: 4096, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(&path, config.clone()).await.unwrap();
        for i in 0..100u64 {
            log.append(&keyed(&format!("k{}", i % 5), Some("v"), 1_000)).await.unwrap();
        }
        let before = all_records(&log).await;
        let first = log.segments()[0].base;
        log.close().await.unwrap();
        // A crash after the cleaner wrote its copy but before the swap.
        let cleaned = path.join(format!("{:020}.cleaned", first.0));
        std::fs::write(&cleaned, b"half a compacted segment").unwrap();
        let (log, report) = PartitionLog::open(&path, config).await.unwrap();
        assert!(!cleaned.exists(), "the copy is removed at open");
        assert!(report.truncations.is_empty());
        assert_eq!(all_records(&log).await, before);
        log.close().await.unwrap();
    });
}

/// Appends waiting for room are served in arrival order: a small append that would fit
/// never passes a large one that waits, so a producer's pipelined batches keep their
/// order in the log.
#[test]
fn appends_waiting_for_room_keep_their_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let config = LogConfig { write_buffer_bytes: 64 << 10, unflushed_bytes_max: 64 << 10, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(&path, config).await.unwrap();
        let log = std::rc::Rc::new(log);
        let big = batch(1, 1, 40 << 10, 1000);
        let small = batch(2, 1, 100, 2000);
        let appends: Vec<_> = [&big, &big, &small]
            .into_iter()
            .map(|b| {
                let (log, b) = (log.clone(), b.clone());
                glommio::spawn_local(async move { log.append(&b).await.unwrap().base_offset })
            })
            .collect();
        let mut offsets = Vec::new();
        for a in appends {
            offsets.push(a.await);
        }
        assert_eq!(offsets, vec![Offset(0), Offset(1), Offset(2)], "in arrival order");
        std::rc::Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
    });
}

/// Epochs of a leader's appends: (epoch, first offset) per change.
fn epochs(pairs: &[(u32, u64)]) -> Vec<(LeaderEpoch, Offset)> {
    pairs.iter().map(|(e, o)| (LeaderEpoch(*e), Offset(*o))).collect()
}

#[test]
fn leader_appends_stamp_their_epoch_and_the_epoch_cache_survives_rolls_truncation_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        // 30 batches of 4 records over several 8 KiB segments: epoch 1 for 0..40,
        // epoch 3 for 40..100, epoch 4 from 100.
        for i in 0..30u64 {
            let epoch = match i {
                0..10 => 1,
                10..25 => 3,
                _ => 4,
            };
            let info = log
                .append_as_leader::<()>(&batch(i, 4, 200, 0), None, |base, span| {
                    assert_eq!((base, span), (Offset(4 * i), 4), "decide sees the offsets the batch gets");
                    Ok(LeaderEpoch(epoch))
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(info.base_offset, Offset(4 * i));
        }
        assert!(log.segments().len() > 3, "the epochs span rolled segments");
        assert_eq!(log.epoch_starts(), epochs(&[(1, 0), (3, 40), (4, 100)]));
        let read = log.read(Offset(40), 1 << 20).await.unwrap().to_vec();
        let (_, header, _) = BatchWalker::new(&read).next().unwrap().unwrap();
        assert_eq!(header.leader_epoch(), Some(LeaderEpoch(3)), "the batch carries its leader's epoch");
        // A refused append stores nothing.
        let refused = log.append_as_leader(&batch(99, 1, 10, 0), None, |_, _| Err("not the leader")).await;
        assert_eq!(refused.unwrap_err(), "not the leader");
        assert_eq!(log.log_end_offset(), Offset(120));
        log.close().await.unwrap();

        // Reopened: the epochs come back (closed segments' from the file written at each
        // roll, the active segment's from its scan).
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert_eq!(log.epoch_starts(), epochs(&[(1, 0), (3, 40), (4, 100)]));
        // Truncation drops the epochs that start at or after the new end, on disk too.
        assert_eq!(log.truncate_to(Offset(60)).await.unwrap(), Offset(60));
        assert_eq!(log.epoch_starts(), epochs(&[(1, 0), (3, 40)]));
        log.close().await.unwrap();
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert_eq!(log.epoch_starts(), epochs(&[(1, 0), (3, 40)]));
        // A stale leader cannot append in an older epoch.
        let stale = log.append_as_leader::<()>(&batch(5, 1, 10, 0), None, |_, _| Ok(LeaderEpoch(2))).await.unwrap();
        assert!(matches!(stale, Err(StorageError::EpochGoesBack { .. })), "{stale:?}");
        log.close().await.unwrap();
    });
}

#[test]
fn copied_batches_keep_the_leaders_offsets_and_epochs_and_must_continue_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (leader_path, follower_path) = (dir.path().join("leader"), dir.path().join("follower"));
    run(async move {
        let (leader, _) = PartitionLog::open(&leader_path, small_config()).await.unwrap();
        let (follower, _) = PartitionLog::open(&follower_path, small_config()).await.unwrap();
        for i in 0..6u64 {
            let epoch = LeaderEpoch(if i < 3 { 2 } else { 5 });
            leader.append_as_leader::<()>(&batch(i, 3, 50, 0), None, |_, _| Ok(epoch)).await.unwrap().unwrap();
        }
        let all = leader.read(Offset(0), 1 << 20).await.unwrap().to_vec();
        // Not at the log end: refused, nothing stored.
        let from_3 = leader.read(Offset(3), 1 << 20).await.unwrap().to_vec();
        let gap = follower.append_copied(&from_3).await;
        assert!(matches!(gap, Err(StorageError::NotContiguous { expected: Offset(0), got: Offset(3) })), "{gap:?}");
        assert_eq!(follower.log_end_offset(), Offset(0));
        let info = follower.append_copied(&all).await.unwrap();
        assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(17)));
        assert_eq!(follower.read(Offset(0), 1 << 20).await.unwrap().to_vec(), all, "byte for byte");
        assert_eq!(follower.epoch_starts(), epochs(&[(2, 0), (5, 9)]));
        // An older epoch after a newer one is refused.
        let old_epoch = {
            let mut b = batch(9, 1, 10, 0);
            sluice_schemas::batch::set_base_offset(&mut b, Offset(18));
            sluice_schemas::batch::set_leader_epoch(&mut b, LeaderEpoch(4));
            b
        };
        let back = follower.append_copied(&old_epoch).await;
        assert!(matches!(back, Err(StorageError::EpochGoesBack { .. })), "{back:?}");
        leader.close().await.unwrap();
        follower.close().await.unwrap();
    });
}

/// Producer `pid`'s idempotent batch of 4 records of `value_bytes` at `sequence`,
/// stamped `timestamp`.
fn idempotent(pid: u64, sequence: i32, value_bytes: usize, timestamp: i64) -> Vec<u8> {
    use sluice_schemas::ids::ProducerId;
    use sluice_schemas::records::{BatchBuilder, BatchConfig};
    let config = BatchConfig { producer_id: Some(ProducerId(pid)), base_sequence: sequence, ..BatchConfig::default() };
    let mut builder = BatchBuilder::new(config).unwrap();
    for i in 0..4 {
        builder.push(Some(b"k"), Some(&vec![(sequence + i) as u8; value_bytes]), &[], timestamp).unwrap();
    }
    builder.finish().unwrap()
}

/// What a reader sees of a log: its end, segments, epochs, producers, last stable offset,
/// the offset of timestamp `at` and every byte.
async fn log_view(log: &PartitionLog, at: i64) -> String {
    let mut bytes = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20).await.unwrap();
        bytes.extend(read.to_vec());
        offset = read.next_offset;
    }
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {}",
        log.log_end_offset(),
        log.segments(),
        log.epoch_starts(),
        log.producers(),
        log.last_stable_offset(),
        log.offset_for_timestamp(at).await.unwrap(),
        crc32c::crc32c(&bytes)
    )
}

/// A clean close leaves the active segment's index files, the leader-epoch cache and the
/// producers' state (`clean-close`), and the next open of a large active segment uses
/// them instead of scanning it whole, and reads the same log as a full scan does. The
/// record is removed before the log first changes, so a log that then dies without
/// closing is scanned at its next open (one that dies unchanged is not); a record that
/// does not match the segment (changed behind the log's back) is not used, and removed.
#[test]
fn a_cleanly_closed_log_reopens_without_scanning_its_active_segment_and_reads_the_same() {
    const VALUE: usize = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let clean_close = path.join("clean-close");
    // Recent timestamps: a segment whose first batch is older than segment.ms rolls.
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 60_000;
    let at = t0 + 5_000;
    run(async move {
        let config = || LogConfig { segment_bytes: 6 << 20, index_interval_bytes: 1024, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(&path, config()).await.unwrap();
        // 40 batches of 256 KiB, of two epochs and two idempotent producers: one closed
        // segment and an active one of over 4 MiB (smaller ones are scanned anyway).
        for i in 0..40u64 {
            let epoch = LeaderEpoch(if i < 30 { 1 } else { 2 });
            let b = idempotent(i % 2 + 7, (i / 2 * 4) as i32, VALUE, t0 + 1000 * i as i64);
            log.append_as_leader::<()>(&b, None, |_, _| Ok(epoch)).await.unwrap().unwrap();
        }
        let segments = log.segments();
        assert!(segments.len() == 2 && segments[1].size_bytes >= 4 << 20, "{segments:?}");
        let before = log_view(&log, at).await;
        log.close().await.unwrap();
        assert!(clean_close.exists(), "a clean close leaves its record");

        let (log, report) = PartitionLog::open(&path, config()).await.unwrap();
        assert!(report.clean && report.truncations.is_empty(), "{report:?}");
        assert_eq!(log_view(&log, at).await, before);
        drop(log); // A crash with nothing changed: the record still holds.
        let (log, report) = PartitionLog::open(&path, config()).await.unwrap();
        assert!(report.clean, "{report:?}");
        assert_eq!(log_view(&log, at).await, before);
        // The producers' state came through: a retry of the last batch is a duplicate.
        let retry = log.append(&idempotent(8, 76, VALUE, t0 + 39_000)).await.unwrap();
        assert!(retry.duplicate, "{retry:?}");
        log.close().await.unwrap();
        // The same log read by a full scan (the record removed) is the same.
        std::fs::remove_file(&clean_close).unwrap();
        let (log, report) = PartitionLog::open(&path, config()).await.unwrap();
        assert!(!report.clean);
        assert_eq!(log_view(&log, at).await, before);
        log.close().await.unwrap();

        // Opened cleanly, written (the record goes first), then dropped: scanned.
        let (log, report) = PartitionLog::open(&path, config()).await.unwrap();
        assert!(report.clean);
        log.append(&idempotent(7, 80, VALUE, t0 + 40_000)).await.unwrap();
        assert!(!clean_close.exists(), "removed before the first write");
        let written = log_view(&log, at).await;
        drop(log);
        let (log, report) = PartitionLog::open(&path, config()).await.unwrap();
        assert!(!report.clean, "no clean close since the last change");
        assert_eq!(log_view(&log, at).await, written);
        log.close().await.unwrap();

        // Bytes added to the active segment after the clean close: scanned, and cut.
        let active = common::newest_file(&path, "log");
        let mut file = std::fs::OpenOptions::new().append(true).open(&active).unwrap();
        std::io::Write::write_all(&mut file, &[0xab; 100]).unwrap();
        drop(file);
        let (log, report) = PartitionLog::open(&path, config()).await.unwrap();
        assert!(!report.clean && report.truncations.len() == 1, "{report:?}");
        assert!(!clean_close.exists(), "a record that does not match is removed");
        assert_eq!(log_view(&log, at).await, written);
        log.close().await.unwrap();
    });
}
