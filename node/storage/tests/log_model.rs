//! Property test: random sequences of append, read, segment roll (by size and by age),
//! truncate, log-start moves and close+reopen agree with a plain in-memory model of the
//! log. Real files, real io_uring; small segments and a small cache so that rolls,
//! index lookups and both the cache and disk read paths happen in nearly every case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use proptest::prelude::*;
use sluice_io::Clock;
use sluice_schemas::batch::BatchWalker;
use sluice_schemas::Offset;
use sluice_storage::{FsyncPolicy, LogConfig, PartitionLog, StorageError};

#[derive(Clone, Debug)]
enum Op {
    /// Append `batches` batches of `records` records with values of `value_bytes`.
    Append {
        batches: usize,
        records: usize,
        value_bytes: usize,
    },
    /// An append whose second batch is corrupt: refused whole.
    AppendCorrupt,
    /// Read from a point chosen by `at` (a fraction of the log), at most `max_bytes`.
    Read {
        at: u16,
        max_bytes: u64,
    },
    Truncate {
        at: u16,
    },
    AdvanceStart {
        at: u16,
    },
    /// Move the clock past segment.ms, so the next append rolls.
    Age,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..4, 1usize..6, 0usize..1500).prop_map(|(batches, records, value_bytes)| Op::Append { batches, records, value_bytes }),
        1 => Just(Op::AppendCorrupt),
        4 => (any::<u16>(), 1u64..20_000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => any::<u16>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u16>().prop_map(|at| Op::AdvanceStart { at }),
        1 => Just(Op::Age),
        1 => Just(Op::Reopen),
    ]
}

/// The model: every batch kept, as (base offset, next offset, bytes after the base
/// offset field), the log start and the log end.
#[derive(Default)]
struct Model {
    batches: Vec<(u64, u64, Vec<u8>)>,
    log_start: u64,
    end: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.end
    }

    fn pick(&self, at: u16) -> u64 {
        let span = self.end() - self.log_start;
        self.log_start + (u64::from(at) * (span + 1)) / 65536
    }

    /// The batches a read from `from` may return, in order.
    fn from(&self, from: u64) -> impl Iterator<Item = &(u64, u64, Vec<u8>)> {
        self.batches.iter().filter(move |b| b.1 > from)
    }
}

const SEGMENT_MS: u64 = 60_000;

fn config(clock: &Clock) -> LogConfig {
    LogConfig {
        segment_bytes: 8192,
        segment_ms: SEGMENT_MS,
        index_interval_bytes: 512,
        // Every reopen after a close goes through the clean-close record.
        clean_open_min_bytes: 0,
        cache_bytes_max: 16 * 1024,
        write_buffer_bytes: 8192,
        unflushed_bytes_max: 64 * 1024,
        preallocate_bytes: 16 * 1024,
        fsync: FsyncPolicy::Never,
        clock: clock.clone(),
        ..LogConfig::default()
    }
}

fn split(bytes: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    BatchWalker::new(bytes)
        .map(|b| {
            let (_, header, batch) = b.unwrap();
            (header.base_offset().0, header.next_offset().0, batch[8..].to_vec())
        })
        .collect()
}

async fn check_whole_log(log: &PartitionLog, model: &Model) {
    assert_eq!(log.log_start_offset().0, model.log_start, "log start");
    assert_eq!(log.log_end_offset().0, model.end(), "log end");
    let mut offset = model.log_start;
    let mut got = Vec::new();
    let mut reads = 0;
    while offset < model.end() {
        let fetched = log.read(Offset(offset), 4096).await.unwrap();
        assert!(!fetched.chunks.is_empty(), "no progress at offset {offset}");
        got.extend(split(&fetched.to_vec()));
        offset = fetched.next_offset.0;
        reads += 1;
        assert!(reads < 10_000, "read loop bounded");
    }
    let want: Vec<_> = model.from(model.log_start).cloned().collect();
    assert_eq!(got.len(), want.len(), "batch count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "batch at {}", w.0);
    }
}

async fn run_ops(dir: &Path, ops: Vec<Op>) {
    let clock = Clock::manual(1_000_000);
    let (mut log, _) = PartitionLog::open(dir, config(&clock)).await.unwrap();
    let mut model = Model::default();
    let mut seed = 0u64;
    for op in ops {
        match op {
            Op::Append { batches, records, value_bytes } => {
                let mut bytes = Vec::new();
                let mut produced = Vec::new();
                let mut next = model.end();
                for _ in 0..batches {
                    seed += 1;
                    let b = common::batch(seed, records, value_bytes, clock.now_ms());
                    produced.push((next, next + records as u64, b[8..].to_vec()));
                    next += records as u64;
                    bytes.extend(b);
                }
                let info = log.append(&bytes).await.unwrap();
                assert_eq!(info.base_offset.0, model.end());
                assert_eq!(info.last_offset.0, next - 1);
                model.batches.extend(produced);
                model.end = next;
            }
            Op::AppendCorrupt => {
                let mut bytes = common::batch(seed, 2, 10, 0);
                let mut bad = common::batch(seed + 1, 2, 10, 0);
                let n = bad.len();
                bad[n - 1] ^= 1;
                bytes.extend(bad);
                assert!(matches!(log.append(&bytes).await, Err(StorageError::InvalidBatch { .. })));
            }
            Op::Read { at, max_bytes } => {
                let from = model.pick(at);
                let fetched = log.read(Offset(from), max_bytes).await.unwrap();
                let got = split(&fetched.to_vec());
                let want: Vec<_> = model.from(from).collect();
                if from == model.end() {
                    assert!(got.is_empty());
                } else {
                    assert!(!got.is_empty(), "a read below the end returns at least one batch");
                    assert!(got.len() == 1 || fetched.bytes() <= max_bytes, "max_bytes respected");
                    for (g, w) in got.iter().zip(want) {
                        assert_eq!(g, w, "read from {from}");
                    }
                    assert_eq!(fetched.next_offset.0, got.last().unwrap().1);
                }
            }
            Op::Truncate { at } => {
                let to = model.pick(at);
                let new_end = log.truncate_to(Offset(to)).await.unwrap();
                // The batch holding `to` goes whole: the end falls to its base. A log
                // start inside that batch falls with it.
                if let Some(cut) = model.batches.iter().find(|b| b.1 > to) {
                    model.end = cut.0;
                }
                model.batches.retain(|b| b.1 <= to);
                model.log_start = model.log_start.min(model.end);
                assert_eq!(new_end.0, model.end(), "truncate_to({to})");
            }
            Op::AdvanceStart { at } => {
                let to = model.pick(at);
                log.advance_log_start(Offset(to)).await.unwrap();
                model.log_start = model.log_start.max(to);
                model.batches.retain(|b| b.1 > model.log_start);
            }
            Op::Age => clock.set(clock.now_ms() + SEGMENT_MS as i64),
            Op::Reopen => {
                log.close().await.unwrap();
                let (reopened, report) = PartitionLog::open(dir, config(&clock)).await.unwrap();
                assert!(report.truncations.is_empty(), "a clean close leaves nothing to cut: {report:?}");
                assert!(report.clean, "opened from the clean-close record: {report:?}");
                log = reopened;
            }
        }
        check_whole_log(&log, &model).await;
    }
    log.close().await.unwrap();
    let (log, _) = PartitionLog::open(dir, config(&clock)).await.unwrap();
    check_whole_log(&log, &model).await;
    log.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_log_agrees_with_an_in_memory_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        common::run(async move { run_ops(&path, ops).await });
    }
}

/// A log start inside a batch that truncation cuts falls back to the new end, and
/// appends continue from there.
#[test]
fn truncating_below_a_log_start_inside_a_batch_moves_the_start_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    common::run(async move {
        run_ops(
            &path,
            vec![
                Op::Append { batches: 1, records: 2, value_bytes: 0 },
                Op::AdvanceStart { at: 21846 },
                Op::Truncate { at: 0 },
                Op::Append { batches: 1, records: 1, value_bytes: 0 },
            ],
        )
        .await;
    });
}
