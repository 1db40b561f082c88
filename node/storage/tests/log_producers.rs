//! Idempotent producers' state as part of the log: retries are answered with the stored
//! batch's offsets across segment rolls, reopens (from the roll snapshots or, without
//! them, a scan), truncation, and on a follower that copied the batches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::run;
use sluice_schemas::ids::ProducerId;
use sluice_schemas::records::{BatchBuilder, BatchConfig};
use sluice_schemas::Offset;
use sluice_storage::{LogConfig, PartitionLog, StorageError};

fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 8 * 1024, index_interval_bytes: 1024, ..LogConfig::default() }
}

/// Producer `pid`'s batch of 4 records of 200 bytes starting at sequence `sequence`.
fn idempotent(pid: u64, epoch: i16, sequence: i32) -> Vec<u8> {
    let config = BatchConfig {
        producer_id: Some(ProducerId(pid)),
        producer_epoch: epoch,
        base_sequence: sequence,
        ..BatchConfig::default()
    };
    let mut builder = BatchBuilder::new(config).unwrap();
    for i in 0..4 {
        let value = vec![(sequence + i) as u8; 200];
        builder.push(Some(format!("k{pid}-{}", sequence + i).as_bytes()), Some(&value), &[], 1000).unwrap();
    }
    builder.finish().unwrap()
}

fn snapshots(path: &std::path::Path) -> usize {
    std::fs::read_dir(path)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".producers"))
        .count()
}

#[test]
fn a_retry_is_answered_with_the_stored_offsets_across_rolls_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        for k in 0..20 {
            let info = log.append(&idempotent(7, 0, k * 4)).await.unwrap();
            assert_eq!(info.base_offset, Offset(k as u64 * 4));
            assert!(!info.duplicate);
        }
        // The retry of the last batch appends nothing and answers with its offsets.
        let info = log.append(&idempotent(7, 0, 76)).await.unwrap();
        assert!(info.duplicate);
        assert_eq!((info.base_offset, info.last_offset), (Offset(76), Offset(79)));
        assert_eq!(log.log_end_offset(), Offset(80));
        // A gap and an old epoch are refused; nothing is stored.
        assert!(matches!(
            log.append(&idempotent(7, 0, 84)).await,
            Err(StorageError::SequenceGap { sequence: 84, expected: 80, .. })
        ));
        let segments = log.segments().len();
        assert!(segments >= 3, "the batches span several segments ({segments})");
        assert_eq!(snapshots(&path), segments - 1, "one snapshot per rolled segment");
        log.close().await.unwrap();

        // Reopened: the roll snapshot plus the active segment's scan.
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert_eq!(log.producers().len(), 1);
        assert_eq!(log.producers()[0].last_sequence, 79);
        let info = log.append(&idempotent(7, 0, 76)).await.unwrap();
        assert!(info.duplicate && info.base_offset == Offset(76));
        let info = log.append(&idempotent(7, 0, 80)).await.unwrap();
        assert!(!info.duplicate && info.base_offset == Offset(80));
        // A newer epoch fences the older one.
        assert!(!log.append(&idempotent(7, 1, 0)).await.unwrap().duplicate);
        assert!(matches!(log.append(&idempotent(7, 0, 84)).await, Err(StorageError::ProducerFenced { .. })));
        log.close().await.unwrap();

        // Without snapshots (a data directory from before them): the last segments are
        // scanned instead.
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().ends_with(".producers") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        let info = log.append(&idempotent(7, 1, 0)).await.unwrap();
        assert!(info.duplicate && info.base_offset == Offset(84));
        log.close().await.unwrap();
    });
}

#[test]
fn a_follower_that_copied_the_batches_answers_retries_and_truncation_forgets_what_it_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (leader_path, follower_path) = (dir.path().join("leader"), dir.path().join("follower"));
    run(async move {
        let (leader, _) = PartitionLog::open(&leader_path, small_config()).await.unwrap();
        for k in 0..5 {
            leader.append(&idempotent(9, 2, k * 4)).await.unwrap();
            leader.append(&common::batch(k as u64, 2, 50, 1000)).await.unwrap();
        }
        let (follower, _) = PartitionLog::open(&follower_path, small_config()).await.unwrap();
        let mut at = Offset(0);
        while at < leader.log_end_offset() {
            let fetched = leader.read(at, 1 << 20).await.unwrap();
            follower.append_copied(&fetched.to_vec()).await.unwrap();
            at = fetched.next_offset;
        }
        assert_eq!(follower.producers(), leader.producers());
        // The follower, leading now, answers the producer's retry as the leader would.
        let info = follower.append(&idempotent(9, 2, 16)).await.unwrap();
        assert!(info.duplicate);
        assert_eq!(info.base_offset, Offset(24));
        // Cut at the third batch: its retry is appended again, the one before it is not.
        follower.truncate_to(Offset(12)).await.unwrap();
        assert!(follower.append(&idempotent(9, 2, 4)).await.unwrap().duplicate);
        assert!(matches!(follower.append(&idempotent(9, 2, 12)).await, Err(StorageError::SequenceGap { .. })));
        let info = follower.append(&idempotent(9, 2, 8)).await.unwrap();
        assert!(!info.duplicate);
        assert_eq!(info.base_offset, Offset(12));
        leader.close().await.unwrap();
        follower.close().await.unwrap();
    });
}
