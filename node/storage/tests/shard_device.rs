//! Specifications of what the logs of one shard share (`sluice_storage::device`): sync
//! rounds that serve many logs' writes with one device flush, one zero-fill reserve budget
//! and one cache budget for all of them. Real files, real io_uring, one shard (this
//! test's thread).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::rc::Rc;

use common::{batch, run};
use sluice_io::{join_all, LocalFuture};
use sluice_schemas::batch::BatchWalker;
use sluice_schemas::Offset;
use sluice_storage::{configure_shard, shard_stats, LogConfig, PartitionLog, ShardLimits};

/// Many logs appending at once under fsync `always`: the shard's sync rounds serve
/// several logs each, the zero-filled reserve never passes the shard's budget and is all
/// given back when the logs close, and every acknowledged batch reads back after reopening.
#[test]
fn a_shards_logs_share_sync_rounds_and_one_reserve_budget() {
    const LOGS: usize = 16;
    const BATCHES: u64 = 20;
    const RESERVE: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(async move {
        configure_shard(ShardLimits {
            reserve_bytes_max: RESERVE,
            cache_bytes_max: 256 << 10,
            ..ShardLimits::default()
        });
        let config = LogConfig { preallocate_bytes: 512 << 10, ..LogConfig::default() };
        let mut logs = Vec::new();
        for i in 0..LOGS {
            logs.push(Rc::new(PartitionLog::open(&root.join(format!("p{i}")), config.clone()).await.unwrap().0));
        }
        let before = shard_stats();
        let appends: Vec<LocalFuture<'_, ()>> = logs
            .iter()
            .enumerate()
            .map(|(i, log)| -> LocalFuture<'_, ()> {
                Box::pin(async move {
                    for k in 0..BATCHES {
                        log.append(&batch(i as u64 * 1000 + k, 3, 1200, 0)).await.unwrap();
                        assert!(shard_stats().reserved_bytes <= RESERVE, "the reserve stays within the budget");
                    }
                })
            })
            .collect();
        join_all(appends).await;
        let after = shard_stats();
        let rounds = after.sync_rounds - before.sync_rounds;
        let served = after.syncs_served - before.syncs_served;
        assert!(served >= LOGS as u64 * BATCHES, "every write was synced: {served}");
        assert!(served > rounds, "rounds serve several logs each: {served} syncs in {rounds} rounds");
        assert!(after.fdatasyncs - before.fdatasyncs + after.syncfs_calls - before.syncfs_calls <= rounds * 4);
        assert!(after.zero_fill_bytes > before.zero_fill_bytes, "small writes zero-fill ahead");
        assert!(after.cache_bytes <= 256 << 10, "the shard's caches stay within their budget");
        for log in logs {
            Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        }
        assert_eq!(shard_stats().reserved_bytes, 0, "closed logs give their reserve back");
        for i in 0..LOGS {
            let (log, _) = PartitionLog::open(&root.join(format!("p{i}")), config.clone()).await.unwrap();
            let read = log.read(Offset(0), 1 << 20).await.unwrap();
            let bytes = read.to_vec();
            let stored: Vec<_> = BatchWalker::new(&bytes).map(|b| b.unwrap().2.to_vec()).collect();
            assert_eq!(stored.len() as u64, BATCHES, "log {i}");
            for (k, s) in stored.iter().enumerate() {
                assert_eq!(s[8..], batch(i as u64 * 1000 + k as u64, 3, 1200, 0)[8..], "log {i} batch {k}");
            }
            log.close().await.unwrap();
        }
    });
}

/// The cache budget is the shard's, not each log's: when it is full, the oldest entries
/// of the whole shard go first, whichever log holds them.
#[test]
fn the_shards_cache_budget_evicts_the_oldest_entries_of_any_log() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(async move {
        configure_shard(ShardLimits {
            reserve_bytes_max: 1 << 20,
            cache_bytes_max: 64 << 10,
            ..ShardLimits::default()
        });
        let config = LogConfig { cache_bytes_max: 1 << 20, ..LogConfig::default() };
        let (a, _) = PartitionLog::open(&root.join("a"), config.clone()).await.unwrap();
        let (b, _) = PartitionLog::open(&root.join("b"), config).await.unwrap();
        for k in 0..4 {
            a.append(&batch(k, 1, 3000, 0)).await.unwrap();
        }
        assert!(a.read(Offset(3), 1).await.unwrap().from_cache, "a's tail is cached while there is room");
        for k in 0..32 {
            b.append(&batch(100 + k, 1, 3000, 0)).await.unwrap();
        }
        assert!(shard_stats().cache_bytes <= 64 << 10, "{}", shard_stats().cache_bytes);
        assert!(b.read(Offset(31), 1).await.unwrap().from_cache, "b's tail, the newest, is cached");
        assert!(!a.read(Offset(3), 1).await.unwrap().from_cache, "a's entries, the oldest, were evicted for b's");
        a.close().await.unwrap();
        b.close().await.unwrap();
    });
}

/// A reader that reads on from where its last read ended is served from the windows read
/// ahead of it: the same batches, byte for byte, as reads from disk; windows that end at
/// indexed batch starts are read at once, up to four; a reader that jumps, or a
/// truncation, drops the windows; their memory goes back to the shard's budget.
#[test]
fn sequential_readers_are_served_from_a_read_ahead() {
    const BATCHES: u64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        configure_shard(ShardLimits::default());
        // No cache: every read goes to disk or to the read ahead.
        let config = LogConfig { cache_bytes_max: 0, ..LogConfig::default() };
        let (log, _) = PartitionLog::open(&path, config).await.unwrap();
        let sent: Vec<Vec<u8>> = (0..BATCHES).map(|k| batch(k, 4, 4000, 0)).collect();
        for b in &sent {
            log.append(b).await.unwrap();
        }
        let before = shard_stats();
        let mut offset = Offset(0);
        let mut stored = Vec::new();
        let mut reads = 0;
        while offset < log.log_end_offset() {
            reads += 1;
            let fetched = log.read(offset, 64 << 10).await.unwrap();
            assert!(!fetched.from_cache);
            if reads == 2 {
                // The second read continued the first: windows are read ahead of the
                // reader while it is away. Every batch here starts an index entry (each is
                // over index.interval.bytes), so each window ends at one and where the
                // next starts is known before it is read: four are reading at once.
                let now = shard_stats();
                assert_eq!(now.read_aheads - before.read_aheads, 4, "four windows at once: {now:?}");
                // Each holds as many whole batches as this read got (the same size limit).
                let got = BatchWalker::new(&fetched.to_vec()).count();
                let windows = &sent[2 * got..6 * got];
                let ahead_bytes: u64 = windows.iter().map(|b| b.len() as u64).sum();
                assert_eq!(now.read_ahead_bytes, ahead_bytes, "four windows of {got} whole batches");
            }
            if reads == 3 {
                sluice_io::sleep(std::time::Duration::from_millis(20)).await;
                assert!(shard_stats().read_ahead_bytes <= 4 * (64 << 10), "four windows at most");
            }
            assert!(fetched.next_offset > offset, "progress at {offset}");
            stored.extend(fetched.to_vec());
            offset = fetched.next_offset;
        }
        let batches: Vec<_> = BatchWalker::new(&stored).map(|b| b.unwrap().2.to_vec()).collect();
        assert_eq!(batches.len() as u64, BATCHES);
        for (k, (got, want)) in batches.iter().zip(&sent).enumerate() {
            assert_eq!(got[8..], want[8..], "batch {k}");
        }
        let after = shard_stats();
        assert!(after.read_aheads > before.read_aheads, "reads ahead were started");
        let served = after.reads_from_read_ahead - before.reads_from_read_ahead;
        assert!(served >= 4, "most sequential reads were served from reads ahead: {served}");
        // A jump drops the window; a truncation drops it too, and reads stop at the new end.
        log.read(Offset(8), 64 << 10).await.unwrap();
        log.read(Offset(40), 64 << 10).await.unwrap();
        log.truncate_to(Offset(40)).await.unwrap();
        let tail = log.read(Offset(36), 1 << 20).await.unwrap();
        assert_eq!(tail.next_offset, Offset(40), "nothing past the truncation is served");
        log.close().await.unwrap();
        assert_eq!(shard_stats().read_ahead_bytes, 0, "the budget is all given back");
    });
}

/// Descriptors of this process open on files under `root` (other tests run beside this
/// one in the same process), and how many of those files are deleted.
fn descriptors(root: &std::path::Path) -> (usize, usize) {
    let targets: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| t.starts_with(&*root.to_string_lossy()))
        .collect();
    let deleted = targets.iter().filter(|t| t.ends_with("(deleted)")).count();
    (targets.len(), deleted)
}

/// A log holds only its active segment's file open; closed segments' files come from the
/// shard's pool, which keeps at most `segment_files_max` of them: eight logs of five
/// segments each, read from the start (past a cache too small to serve them), hold eight
/// active files plus four from the pool, and every record reads back. A segment deleted
/// by DeleteRecords leaves the pool (no descriptor keeps its space), and closed logs leave
/// nothing in it.
#[test]
fn closed_segments_are_opened_from_a_bounded_pool() {
    const LOGS: usize = 8;
    const BATCHES: u64 = 20;
    const POOL: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(async move {
        configure_shard(ShardLimits { cache_bytes_max: 4096, segment_files_max: POOL, ..ShardLimits::default() });
        let config = LogConfig { segment_bytes: 8 << 10, index_interval_bytes: 1024, ..LogConfig::default() };
        let mut logs = Vec::new();
        for i in 0..LOGS {
            let (log, _) = PartitionLog::open(&root.join(format!("p{i}")), config.clone()).await.unwrap();
            for k in 0..BATCHES {
                log.append(&batch(i as u64 * 1000 + k, 1, 1800, 0)).await.unwrap();
            }
            assert!(log.segments().len() >= 4, "log {i} rolled: {} segments", log.segments().len());
            logs.push(log);
        }
        for (i, log) in logs.iter().enumerate() {
            let mut offset = Offset(0);
            let mut k = 0;
            while offset < log.log_end_offset() {
                let read = log.read(offset, 4096).await.unwrap();
                let bytes = read.to_vec();
                for b in BatchWalker::new(&bytes) {
                    let (_, header, stored) = b.unwrap();
                    assert_eq!(stored[8..], batch(i as u64 * 1000 + k, 1, 1800, 0)[8..], "log {i} batch {k}");
                    k += 1;
                    offset = header.next_offset();
                }
                let stats = shard_stats();
                assert!(stats.segment_files_open <= POOL as u64, "{stats:?}");
            }
            assert_eq!(k, BATCHES, "log {i}");
        }
        let stats = shard_stats();
        assert!(stats.segment_file_evictions > 0 && stats.segment_file_opens > POOL as u64, "{stats:?}");
        let (open, _) = descriptors(&root);
        assert!(open <= LOGS + POOL, "{open} descriptors on the logs' files: one per log plus the pool");

        let first = &logs[0];
        // Its first segment's file goes into the pool again, then the segment goes.
        first.read(Offset(0), 4096).await.unwrap();
        let deleted = first.advance_log_start(first.segments()[2].base).await.unwrap();
        assert_eq!(deleted, 2);
        assert_eq!(descriptors(&root).1, 0, "no descriptor keeps a deleted segment");
        for log in logs {
            log.close().await.unwrap();
        }
        assert_eq!(shard_stats().segment_files_open, 0, "closed logs leave nothing in the pool");
    });
}
