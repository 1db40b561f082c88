//! The partition log under the faults a bad day brings: a process that dies between a
//! zero-fill and the data write after it, and a disk that fills part-way through a
//! write. Each test drives a real log on real files, fails it at a named fault point,
//! reopens the directory as the next process would, and checks every acknowledged batch
//! byte for byte: **no write ever changes an acknowledged byte**.
//!
//! The pattern that matters is large writes, then small ones: the log zero-fills ahead of
//! small writes only, so after large writes its zero-filled end lags behind the data, and
//! the first zero-fill after the switch starts near the last acknowledged page.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::rc::Rc;

use common::{batch, run};
use sluice_schemas::batch::BatchWalker;
use sluice_schemas::Offset;
use sluice_storage::{FaultPoint, FsyncPolicy, LogConfig, PartitionLog};

/// Large batches: 16 records of 60 KiB, about 1 MB each (the default batch limit is 1 MiB), far above the size under which
/// writes zero-fill ahead of themselves (256 KiB by default); 16 of them write past the
/// space zero-filled before the first (8 MiB by default).
const LARGE_BATCHES: u64 = 16;
/// Small batches: about 5 KB, as a trickle of single records.
const SMALL_RECORD_BYTES: usize = 5000;
/// Enough small appends for the write-size average to fall below the zero-fill limit.
const SMALL_BATCHES_MAX: u64 = 40;

fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig { fsync, ..LogConfig::default() }
}

/// The large batches, made once per test (they take a while in a debug build).
fn large_batches() -> Rc<Vec<Vec<u8>>> {
    Rc::new((0..LARGE_BATCHES).map(|i| batch(i, 16, 60 << 10, 0)).collect())
}

/// What one life of the log acknowledged, and how it ended.
struct Life {
    /// (base offset, bytes as appended) of every acknowledged append.
    acked: Vec<(Offset, Vec<u8>)>,
    /// The error of the first append that failed (the fault fired), if one did.
    failure: Option<String>,
}

/// Opens the log in `path`, appends `large` (several in flight, as a busy
/// producer does) and then small ones one at a time; before small append number
/// `arm_at` it arms `fault`. Stops at the first failed append (the fault fired) or after
/// `SMALL_BATCHES_MAX` small ones, and drops the log without closing it, as a dead process
/// would.
async fn large_then_small(path: &Path, large: &[Vec<u8>], fsync: FsyncPolicy, fault: FaultPoint, arm_at: u64) -> Life {
    let (log, _) = PartitionLog::open(path, config(fsync)).await.unwrap();
    let mut acked = Vec::new();
    for (i, pair) in large.chunks(2).enumerate() {
        // Two appends in flight at a time.
        let (a, b) = futures_lite::future::zip(log.append(&pair[0]), log.append(&pair[1])).await;
        let (a, b) = (a.unwrap(), b.unwrap());
        acked.push((a.base_offset, pair[0].clone()));
        acked.push((b.base_offset, pair[1].clone()));
        assert!(b.base_offset > a.base_offset, "large pair {i}");
    }
    let mut failure = None;
    for k in 0..SMALL_BATCHES_MAX {
        if k == arm_at {
            log.faults().arm(fault);
        }
        let small = batch(1000 + k, 1, SMALL_RECORD_BYTES, 0);
        match log.append(&small).await {
            Ok(info) => acked.push((info.base_offset, small)),
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    drop(log);
    Life { acked, failure }
}

/// Reopens the log in `path` and checks that every acknowledged batch is there, at its
/// offset, byte for byte (but for the base offset, which the log writes).
async fn assert_holds(path: &Path, acked: &[(Offset, Vec<u8>)], context: &str) {
    let (log, report) = PartitionLog::open(path, LogConfig::default()).await.unwrap();
    let end = log.log_end_offset();
    let mut stored = Vec::new();
    let mut offset = Offset(0);
    while offset < end {
        let fetched = log.read(offset, 4 << 20).await.unwrap();
        let bytes = fetched.to_vec();
        for item in BatchWalker::new(&bytes) {
            let (_, header, b) = item.unwrap();
            stored.push((header.base_offset(), b.to_vec()));
        }
        assert!(fetched.next_offset > offset, "{context}: no progress at {offset}");
        offset = fetched.next_offset;
    }
    for (base, sent) in acked {
        let found = stored.iter().find(|(b, _)| b == base);
        let Some((_, bytes)) = found else {
            panic!(
                "{context}: acknowledged batch at offset {base} is gone after reopening (log end {end}, truncations {:?})",
                report.truncations
            );
        };
        assert!(bytes[8..] == sent[8..], "{context}: acknowledged batch at offset {base} changed on disk");
    }
    log.close().await.unwrap();
}

/// The process dies between the first zero-fill after large writes and the data write
/// it precedes: nothing acknowledged may be lost, whichever fsync policy.
#[test]
fn dying_between_zero_fill_and_data_write_loses_nothing_acknowledged() {
    for fsync in [FsyncPolicy::Never, FsyncPolicy::Always, FsyncPolicy::IntervalMs(5)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(async move {
            let life = large_then_small(&path, &large_batches(), fsync, FaultPoint::DieAfterZeroFill, 0).await;
            let failure = life.failure.unwrap_or_else(|| {
                panic!("fsync={fsync}: {SMALL_BATCHES_MAX} small appends after large ones never zero-filled")
            });
            assert!(failure.contains("DieAfterZeroFill"), "fsync={fsync}: {failure}");
            assert_holds(&path, &life.acked, &format!("fsync={fsync}, died after zero-fill")).await;
        });
    }
}

/// The disk fills part-way through a write, at every point of the switch from large to
/// small writes (data writes and the first zero-fill alike): the failed write poisons
/// the log, and after reopening every acknowledged batch is there.
#[test]
fn a_write_that_fills_the_disk_part_way_changes_no_acknowledged_byte() {
    let mut zero_fills_hit = 0;
    let large: Vec<Vec<u8>> = large_batches().to_vec();
    for arm_at in 0..SMALL_BATCHES_MAX {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let large = large.clone();
        let hit_zero_fill = run(async move {
            let life = large_then_small(&path, &large, FsyncPolicy::Never, FaultPoint::NoSpace, arm_at).await;
            let failure = life.failure.unwrap_or_else(|| panic!("arm_at {arm_at}: the armed ENOSPC never fired"));
            assert!(failure.contains("No space left on device"), "arm_at {arm_at}: {failure}");
            assert_holds(&path, &life.acked, &format!("ENOSPC armed before small append {arm_at}")).await;
            failure.contains("zero-filling")
        });
        zero_fills_hit += u32::from(hit_zero_fill);
    }
    assert!(zero_fills_hit > 0, "no armed ENOSPC landed in a zero-fill: the test did not try the case that matters");
}
