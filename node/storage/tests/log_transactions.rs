//! Kafka transactions (KIP-98) as part of the log: transactional batches open their
//! producer's transaction, the coordinator's markers close it; the last stable offset
//! stops at the earliest open transaction and the aborted list names the aborted ones.
//! Both survive reopens (clean, after a crash, without the newest snapshot), truncation
//! and copying to a follower; markers of old epochs are refused and new ones fence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::run;
use sluice_schemas::batch::{Attributes, BatchError};
use sluice_schemas::control::{control_batch, ControlType};
use sluice_schemas::ids::{LeaderEpoch, ProducerId};
use sluice_schemas::records::{BatchBuilder, BatchConfig};
use sluice_schemas::Offset;
use sluice_storage::producers::AbortedTxn;
use sluice_storage::{LogConfig, PartitionLog, StorageError};

fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 4 * 1024, index_interval_bytes: 1024, ..LogConfig::default() }
}

/// Producer `pid`'s transactional batch of 4 records of 200 bytes at sequence `sequence`
/// (`None`: without a sequence, as Kafka's group coordinator writes offset commits).
fn txn(pid: u64, epoch: i16, sequence: Option<i32>) -> Vec<u8> {
    txn_at(pid, epoch, sequence, 1000)
}

/// `txn` with its records stamped `timestamp`.
fn txn_at(pid: u64, epoch: i16, sequence: Option<i32>, timestamp: i64) -> Vec<u8> {
    let config = BatchConfig {
        producer_id: Some(ProducerId(pid)),
        producer_epoch: epoch,
        base_sequence: sequence.unwrap_or(-1),
        attributes: Attributes(Attributes::TRANSACTIONAL_BIT),
        ..BatchConfig::default()
    };
    let mut builder = BatchBuilder::new(config).unwrap();
    for i in 0..4 {
        builder.push(Some(format!("k{pid}-{i}").as_bytes()), Some(&[i as u8; 200]), &[], timestamp).unwrap();
    }
    builder.finish().unwrap()
}

fn plain(seed: u64) -> Vec<u8> {
    common::batch(seed, 2, 50, 1000)
}

async fn marker(log: &PartitionLog, pid: u64, epoch: i16, control: ControlType) -> Result<Offset, StorageError> {
    let batch = control_batch(pid as i64, epoch, control, 5, 2000);
    let info = log.append_control_as_leader(&batch, |_, _| Ok::<_, ()>(LeaderEpoch(1))).await.unwrap()?;
    assert_eq!(info.base_offset, info.last_offset, "a marker is one record");
    Ok(info.base_offset)
}

fn aborted(pid: u64, first: u64, last: u64) -> AbortedTxn {
    AbortedTxn { producer_id: pid as i64, first_offset: Offset(first), last_offset: Offset(last) }
}

/// Everything a read_committed reader and DescribeProducers see of the transactions:
/// the LSO, the aborted list, and each producer's open transaction.
type TxnView = (Offset, Vec<AbortedTxn>, Vec<(i64, Option<Offset>)>);

fn txn_view(log: &PartitionLog) -> TxnView {
    let producers = log.producers().iter().map(|p| (p.producer_id, p.current_txn_start_offset)).collect();
    (log.last_stable_offset(), log.aborted_transactions(Offset(0), Offset(u64::MAX)), producers)
}

#[test]
fn the_lso_stops_at_the_first_open_transaction_and_aborted_ones_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        assert_eq!(log.append(&plain(0)).await.unwrap().base_offset, Offset(0)); // 0-1
        assert_eq!(log.last_stable_offset(), Offset(2), "no transaction: the log end");
        assert_eq!(log.append(&txn(1, 0, Some(0))).await.unwrap().base_offset, Offset(2)); // 2-5
        assert_eq!(log.last_stable_offset(), Offset(2), "producer 1's transaction is open");
        log.append(&plain(1)).await.unwrap(); // 6-7
        assert_eq!(log.append(&txn(2, 0, Some(0))).await.unwrap().base_offset, Offset(8)); // 8-11
        log.append(&txn(1, 0, Some(4))).await.unwrap(); // 12-15
        assert_eq!(log.last_stable_offset(), Offset(2));
        let summary = log.producers();
        assert_eq!(
            summary.iter().map(|p| p.current_txn_start_offset).collect::<Vec<_>>(),
            [Some(Offset(2)), Some(Offset(8))]
        );
        assert_eq!(marker(&log, 1, 0, ControlType::Commit).await.unwrap(), Offset(16));
        assert_eq!(log.last_stable_offset(), Offset(8), "the next open transaction");
        log.append(&plain(2)).await.unwrap(); // 17-18
        assert_eq!(marker(&log, 2, 0, ControlType::Abort).await.unwrap(), Offset(19));
        assert_eq!(log.last_stable_offset(), Offset(20), "none open: the log end");
        assert_eq!(log.producers().iter().map(|p| p.current_txn_start_offset).collect::<Vec<_>>(), [None, None]);
        // Producer 2's aborted transaction covers 8..=19; the committed one is not listed.
        let b = aborted(2, 8, 19);
        assert_eq!(log.aborted_transactions(Offset(0), Offset(100)), [b]);
        assert_eq!(log.aborted_transactions(Offset(0), Offset(9)), [b]);
        assert_eq!(log.aborted_transactions(Offset(19), Offset(20)), [b]);
        assert_eq!(log.aborted_transactions(Offset(0), Offset(8)), [], "ends before it starts");
        assert_eq!(log.aborted_transactions(Offset(20), Offset(30)), [], "starts after its marker");
        // Producer 2 goes on with a transaction without sequence numbers; then an abort
        // marker with no transaction open is listed at its own offset.
        assert_eq!(log.append(&txn(2, 0, None)).await.unwrap().base_offset, Offset(20)); // 20-23
        assert_eq!(log.last_stable_offset(), Offset(20));
        assert_eq!(marker(&log, 2, 0, ControlType::Abort).await.unwrap(), Offset(24));
        assert_eq!(marker(&log, 3, 0, ControlType::Abort).await.unwrap(), Offset(25));
        assert_eq!(log.last_stable_offset(), Offset(26));
        assert_eq!(log.aborted_transactions(Offset(10), Offset(26)), [b, aborted(2, 20, 24), aborted(3, 25, 25)]);
        assert_eq!(log.aborted_transactions(Offset(22), Offset(23)), [aborted(2, 20, 24)]);
        log.close().await.unwrap();
    });
}

/// Three producers over many small segments: 1 commits every fourth round, 2 aborts
/// every third, 3 writes transactions without sequences and commits every other round.
async fn write_rounds(log: &PartitionLog, rounds: std::ops::Range<i32>) {
    for round in rounds {
        log.append(&txn(1, 0, Some(round * 4))).await.unwrap();
        log.append(&plain(round as u64)).await.unwrap();
        log.append(&txn(2, 0, Some(round * 4))).await.unwrap();
        log.append(&txn(3, 0, None)).await.unwrap();
        if round % 4 == 3 {
            marker(log, 1, 0, ControlType::Commit).await.unwrap();
        }
        if round % 3 == 2 {
            marker(log, 2, 0, ControlType::Abort).await.unwrap();
        }
        if round % 2 == 1 {
            marker(log, 3, 0, ControlType::Commit).await.unwrap();
        }
    }
}

#[test]
fn reopens_restore_the_lso_and_the_aborted_list_across_rolls_crashes_and_lost_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        write_rounds(&log, 0..14).await;
        let before = txn_view(&log);
        assert!(log.segments().len() >= 10, "many rolls ({})", log.segments().len());
        assert_eq!(before.1.len(), 4, "rounds 2, 5, 8, 11 aborted");
        assert!(before.0 < log.log_end_offset(), "transactions are open at the end");
        log.close().await.unwrap();

        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert_eq!(txn_view(&log), before, "after a clean close");
        write_rounds(&log, 14..20).await;
        let before = txn_view(&log);
        assert_eq!(before.1.len(), 6);
        drop(log); // A crash: no close, the writes completed.

        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert_eq!(txn_view(&log), before, "after a crash");
        log.close().await.unwrap();

        // Without the newest snapshot, the one before it and the segments after it.
        let newest = common::newest_file(&path, "producers");
        std::fs::remove_file(&newest).unwrap();
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert_eq!(txn_view(&log), before, "without {}", newest.display());
        // The open transactions still commit and abort where they were.
        marker(&log, 1, 0, ControlType::Abort).await.unwrap();
        marker(&log, 2, 0, ControlType::Commit).await.unwrap();
        marker(&log, 3, 0, ControlType::Commit).await.unwrap();
        assert_eq!(log.last_stable_offset(), log.log_end_offset());
        assert_eq!(log.aborted_transactions(Offset(0), Offset(u64::MAX)).len(), 7);
        log.close().await.unwrap();
    });
}

#[test]
fn moving_the_log_start_forgets_aborted_transactions_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        write_rounds(&log, 0..14).await;
        let all = log.aborted_transactions(Offset(0), Offset(u64::MAX));
        let start = Offset(all[1].last_offset.0 + 1);
        log.advance_log_start(start).await.unwrap();
        assert_eq!(log.aborted_transactions(Offset(0), Offset(u64::MAX)), all[2..]);
        log.close().await.unwrap();
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        assert_eq!(log.aborted_transactions(Offset(0), Offset(u64::MAX)), all[2..], "and after a reopen");
        log.close().await.unwrap();
    });
}

#[test]
fn truncation_reopens_a_transaction_whose_marker_was_cut_and_removes_one_whose_start_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        log.append(&plain(0)).await.unwrap(); // 0-1
        log.append(&txn(1, 0, Some(0))).await.unwrap(); // 2-5
        log.append(&txn(1, 0, Some(4))).await.unwrap(); // 6-9
        assert_eq!(marker(&log, 1, 0, ControlType::Abort).await.unwrap(), Offset(10));
        log.append(&plain(1)).await.unwrap(); // 11-12
        assert_eq!(log.last_stable_offset(), Offset(13));
        assert_eq!(log.aborted_transactions(Offset(0), Offset(13)), [aborted(1, 2, 10)]);

        // Cut the marker: the transaction is open again and no longer aborted.
        assert_eq!(log.truncate_to(Offset(10)).await.unwrap(), Offset(10));
        assert_eq!(log.last_stable_offset(), Offset(2));
        assert_eq!(log.aborted_transactions(Offset(0), Offset(10)), []);
        assert_eq!(log.producers()[0].current_txn_start_offset, Some(Offset(2)));
        // Its producer goes on in it, and a commit closes it this time.
        log.append(&txn(1, 0, Some(8))).await.unwrap(); // 10-13
        assert_eq!(marker(&log, 1, 0, ControlType::Commit).await.unwrap(), Offset(14));
        assert_eq!(log.last_stable_offset(), Offset(15));
        assert_eq!(log.aborted_transactions(Offset(0), Offset(15)), []);

        // A second transaction, cut at its first batch: gone, the LSO is the log end.
        log.append(&txn(1, 0, Some(12))).await.unwrap(); // 15-18
        assert_eq!(log.last_stable_offset(), Offset(15));
        assert_eq!(log.truncate_to(Offset(15)).await.unwrap(), Offset(15));
        assert_eq!(log.last_stable_offset(), Offset(15));
        assert_eq!(log.producers()[0].current_txn_start_offset, None);
        log.close().await.unwrap();
        // A reopen agrees.
        let (log, _) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        assert_eq!(log.last_stable_offset(), Offset(15));
        assert_eq!(log.aborted_transactions(Offset(0), Offset(15)), []);
        log.close().await.unwrap();
    });
}

#[test]
fn a_follower_that_copied_the_log_derives_the_same_lso_and_aborted_list() {
    let dir = tempfile::tempdir().unwrap();
    let (leader_path, follower_path) = (dir.path().join("leader"), dir.path().join("follower"));
    run(async move {
        let (leader, _) = PartitionLog::open(&leader_path, small_config()).await.unwrap();
        write_rounds(&leader, 0..9).await;
        let (follower, _) = PartitionLog::open(&follower_path, small_config()).await.unwrap();
        let mut at = Offset(0);
        while at < leader.log_end_offset() {
            let fetched = leader.read(at, 3000).await.unwrap();
            follower.append_copied(&fetched.to_vec()).await.unwrap();
            at = fetched.next_offset;
            assert!(follower.last_stable_offset() <= at, "the LSO never passes what was copied");
        }
        assert_eq!(txn_view(&follower), txn_view(&leader));
        assert_eq!(follower.producers(), leader.producers());
        assert_eq!(txn_view(&follower).1.len(), 3);
        leader.close().await.unwrap();
        follower.close().await.unwrap();
    });
}

#[test]
fn markers_of_older_epochs_are_refused_and_newer_ones_fence_the_producer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        log.append(&txn(1, 3, Some(0))).await.unwrap(); // 0-3
        assert!(matches!(
            marker(&log, 1, 2, ControlType::Commit).await,
            Err(StorageError::ProducerFenced { producer_id: 1, epoch: 2, current: 3 })
        ));
        assert_eq!(log.log_end_offset(), Offset(4), "nothing stored");
        // The coordinator aborts a timed-out transaction with a bumped epoch.
        assert_eq!(marker(&log, 1, 4, ControlType::Abort).await.unwrap(), Offset(4));
        assert_eq!(log.aborted_transactions(Offset(0), Offset(5)), [aborted(1, 0, 4)]);
        assert_eq!(log.producers()[0].epoch, 4);
        assert!(matches!(
            log.append(&txn(1, 3, Some(4))).await,
            Err(StorageError::ProducerFenced { producer_id: 1, epoch: 3, current: 4 })
        ));
        assert!(matches!(log.append(&txn(1, 3, None)).await, Err(StorageError::ProducerFenced { .. })));
        assert!(matches!(marker(&log, 1, 3, ControlType::Abort).await, Err(StorageError::ProducerFenced { .. })));
        assert_eq!(log.last_stable_offset(), Offset(5));
        // The producer's new epoch starts at sequence 0.
        assert_eq!(log.append(&txn(1, 4, Some(0))).await.unwrap().base_offset, Offset(5));
        assert_eq!(log.last_stable_offset(), Offset(5));
        log.close().await.unwrap();
    });
}

#[test]
fn only_the_coordinator_appends_markers_and_it_appends_only_markers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        let abort = control_batch(1, 0, ControlType::Abort, 0, 0);
        assert!(matches!(
            log.append(&abort).await,
            Err(StorageError::InvalidBatch { source: BatchError::ControlBatchFromProducer, .. })
        ));
        let led = log.append_as_leader(&abort, None, |_, _| Ok::<_, ()>(LeaderEpoch(1))).await.unwrap();
        assert!(matches!(led, Err(StorageError::InvalidBatch { source: BatchError::ControlBatchFromProducer, .. })));
        for not_a_marker in [plain(0), txn(1, 0, Some(0))] {
            let led = log.append_control_as_leader(&not_a_marker, |_, _| Ok::<_, ()>(LeaderEpoch(1))).await.unwrap();
            assert!(matches!(led, Err(StorageError::InvalidBatch { source: BatchError::NotAMarker, .. })));
        }
        assert_eq!(log.log_end_offset(), Offset(0), "nothing stored");
        assert!(marker(&log, 1, 0, ControlType::Abort).await.is_ok());
        log.close().await.unwrap();
    });
}

/// KIP-890 part 1: with a guard, a transactional batch that would open its producer's
/// transaction is appended only when the coordinator confirmed it after the guard was
/// taken and no marker of that producer came since; one joining an open transaction
/// needs neither. A late batch of an aborted transaction is refused so, not left open
/// for good.
#[test]
fn a_guarded_append_opens_a_transaction_only_when_verified_and_no_marker_came_since() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, LogConfig::default()).await.unwrap();
        let lead = |batch: Vec<u8>, guard: sluice_storage::producers::TxnGuard| {
            let log = &log;
            async move { log.append_as_leader(&batch, Some(&guard), |_, _| Ok::<_, ()>(LeaderEpoch(1))).await.unwrap() }
        };
        let not_verified =
            |r: Result<_, StorageError>| matches!(r, Err(StorageError::TransactionNotVerified { producer_id: 1, .. }));
        let unverified = log.txn_guard(1);
        assert_eq!((unverified.open, unverified.last_marker, unverified.verified), (false, None, false));
        assert!(not_verified(lead(txn(1, 0, Some(0)), unverified).await), "not confirmed by the coordinator");
        let verified = sluice_storage::producers::TxnGuard { verified: true, ..log.txn_guard(1) };
        assert_eq!(lead(txn(1, 0, Some(0)), verified).await.unwrap().base_offset, Offset(0)); // 0-3
                                                                                              // Open now: a guard taken while open lets a batch join without asking.
        let open = log.txn_guard(1);
        assert!(open.open);
        assert_eq!(lead(txn(1, 0, Some(4)), open).await.unwrap().base_offset, Offset(4)); // 4-7
                                                                                          // The transaction is aborted (its marker at 8); the late batch would open a new one.
        assert_eq!(marker(&log, 1, 0, ControlType::Abort).await.unwrap(), Offset(8));
        assert!(not_verified(lead(txn(1, 0, Some(8)), open).await), "the guard predates the marker");
        assert!(not_verified(lead(txn(1, 0, Some(8)), verified).await), "verified before the marker");
        // A retry of a stored batch is answered as one (duplicates are checked first).
        let retry = lead(txn(1, 0, Some(4)), open).await.unwrap();
        assert_eq!((retry.base_offset, retry.duplicate), (Offset(4), true));
        assert_eq!(log.log_end_offset(), Offset(9), "nothing stored");
        assert_eq!(log.last_stable_offset(), Offset(9), "no transaction left open");
        // The next transaction, verified after the marker.
        let next = sluice_storage::producers::TxnGuard { verified: true, ..log.txn_guard(1) };
        assert_eq!(next.last_marker, Some(Offset(8)));
        assert_eq!(lead(txn(1, 0, Some(8)), next).await.unwrap().base_offset, Offset(9));
        assert_eq!(log.last_stable_offset(), Offset(9), "open again");
        // Unguarded appends (followers' copies, the native protocol) are not checked.
        assert!(log
            .append_as_leader(&txn(2, 0, Some(0)), None, |_, _| Ok::<_, ()>(LeaderEpoch(1)))
            .await
            .unwrap()
            .is_ok());
        log.close().await.unwrap();
    });
}

/// Compaction removes aborted transactions' batches and keeps open transactions'
/// batches whole, and an aborted or still open transaction's key never removes the
/// committed record of that key. A marker stays while its transaction has records and
/// until it is older than delete.retention.ms.
#[test]
fn compaction_lets_only_committed_records_supersede_keys_and_removes_empty_transactions_markers_late() {
    // (delete.retention.ms, records removed, batch bases left below offset 24); the
    // batches carry timestamps of 1970, so only an unbounded retention keeps markers.
    let cases: [(u64, u64, &[u64]); 2] = [
        (i64::MAX as u64, 8, &[0, 4, 9, 14, 15, 19, 20]),
        // The markers at 9 (its aborted data is gone) and 14 (its records all superseded).
        (0, 10, &[0, 4, 15, 19, 20]),
    ];
    for (delete_retention_ms, removed, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(async move {
            let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
            // Producer 1's keys k1-0..3: committed at 0-3, aborted at 5-8, open from 20.
            log.append(&txn(1, 0, Some(0))).await.unwrap(); // 0-3
            marker(&log, 1, 0, ControlType::Commit).await.unwrap(); // 4
            log.append(&txn(1, 0, Some(4))).await.unwrap(); // 5-8
            marker(&log, 1, 0, ControlType::Abort).await.unwrap(); // 9
                                                                   // Producer 2 commits its keys k2-0..3 twice: the first copy may go.
            log.append(&txn(2, 0, Some(0))).await.unwrap(); // 10-13
            marker(&log, 2, 0, ControlType::Commit).await.unwrap(); // 14
            log.append(&txn(2, 0, Some(4))).await.unwrap(); // 15-18
            marker(&log, 2, 0, ControlType::Commit).await.unwrap(); // 19
            log.append(&txn(1, 0, Some(8))).await.unwrap(); // 20-23
            for seed in 0..60 {
                log.append(&plain(100 + seed)).await.unwrap();
            }
            assert!(log.segments().len() >= 4);
            let before = txn_view(&log);
            let report = log.compact(0, delete_retention_ms, 0).await.unwrap();
            assert_eq!(report.records_removed, removed, "delete.retention.ms {delete_retention_ms}: {report:?}");
            let mut bases = Vec::new();
            let mut at = log.log_start_offset();
            while at < log.log_end_offset() {
                let fetched = log.read(at, 1 << 20).await.unwrap();
                for batch in sluice_schemas::batch::BatchWalker::new(&fetched.to_vec()) {
                    bases.push(batch.unwrap().1.base_offset().0);
                }
                at = fetched.next_offset;
            }
            bases.retain(|b| *b < 24);
            bases.dedup();
            assert_eq!(bases, expected, "delete.retention.ms {delete_retention_ms}");
            assert_eq!(txn_view(&log), before);
            log.close().await.unwrap();
            let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
            assert_eq!(txn_view(&log), before, "the same after reopening the compacted log");
            log.close().await.unwrap();
        });
    }
}

/// A pass that skips a segment too young to compact (`min_lag_ms`) keeps the markers of
/// transactions that may have records in it, even when it kept none it saw itself.
#[test]
fn compaction_keeps_the_marker_of_a_transaction_with_records_in_a_skipped_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let (log, _) = PartitionLog::open(&path, small_config()).await.unwrap();
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        for seed in 0..30 {
            log.append(&plain(seed)).await.unwrap();
        }
        let young = log.append(&txn_at(3, 0, Some(0), now_ms)).await.unwrap().base_offset;
        let mut seed = 100;
        while log.segments().last().unwrap().base <= young {
            log.append(&plain(seed)).await.unwrap();
            seed += 1;
        }
        let closing = marker(&log, 3, 0, ControlType::Commit).await.unwrap();
        for seed in 200..260 {
            log.append(&plain(seed)).await.unwrap();
        }
        let segments = log.segments();
        let segment_of = |offset: Offset| segments.iter().rposition(|s| s.base <= offset).unwrap();
        assert!(segment_of(young) < segment_of(closing), "the transaction's data and marker in different segments");
        assert!(segment_of(closing) + 1 < segments.len(), "the marker's segment is closed");
        log.compact(3_600_000, 0, 0).await.unwrap();
        let fetched = log.read(closing, 1 << 20).await.unwrap().to_vec();
        let (_, first, _) = sluice_schemas::batch::BatchWalker::new(&fetched).next().unwrap().unwrap();
        assert_eq!(first.base_offset(), closing, "the marker stays");
        assert!(first.attributes().is_control());
        log.close().await.unwrap();
    });
}
