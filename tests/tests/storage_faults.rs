//! The partition log on a bad disk, simulated at the I/O seam (`sluice_node::io::faults`,
//! issue 19 item 7): writes that fail with EIO, writes that fill the disk part-way
//! (ENOSPC), syncs that fail (and leave what they covered uncertain for good, as Linux
//! does), reads that fail while the log recovers, and power losses that keep, lose or tear
//! at a sector every write no completed sync covered, and drop files whose directory entry
//! was never synced.
//!
//! One seeded test per fsync policy runs lives of a log on the same directory. A life
//! opens the log (its recovery under the same faults: an open that fails on one is
//! tried again, without faults after three tries, and must have lost nothing), appends with
//! `WRITER_TASKS` appends in flight and now and then an explicit `sync`, with the
//! injected faults on, and ends as a clean close, a kill (the log dropped unclosed: what
//! a kill -9 leaves) or a power loss. The seam tracks the device across lives, so a power
//! loss also reverts what earlier lives wrote and nobody synced. After each life
//! `log_check::verify` (the crash tests' check) opens the log without faults and checks:
//! - the log is whole, contiguous batches with good CRCs, each one a batch that was sent,
//!   none twice, the batches earlier lives left in place unchanged;
//! - every acknowledgement that the policy and the end of the life make durable is there
//!   at its offsets: after a kill, every acknowledged batch; after a power loss, those
//!   acknowledged as `Synced` (fsync `always`), those acknowledged before an explicit
//!   `sync` that succeeded, and everything a clean close (the previous verification's
//!   included) left behind.
//!
//! The seed is printed; `SLUICE_STORAGE_FAULT_SEED` repeats a run's choices (their order
//! still depends on when the device completes each request) and
//! `SLUICE_STORAGE_FAULT_LIVES` runs longer: `SLUICE_STORAGE_FAULT_LIVES=2000 cargo test
//! --release -p sluice-tests --test storage_faults -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_node::io::faults::{self, Counts, Op, Survival, Verdict};
use sluice_node::storage::{Durability, FsyncPolicy, LogConfig, PartitionLog};
use sluice_tests::log_check::{run_glommio, verify, Stored};
use sluice_tests::{Ack, BatchId, Pattern, Rng, WRITER_TASKS};

/// Lives per test (each policy's), unless `SLUICE_STORAGE_FAULT_LIVES` says otherwise.
const LIVES: u32 = 60;
/// The most appends in one life.
const APPENDS_MAX: u64 = 160;
/// Small segments, so that lives roll several and power losses hit older segments too.
const SEGMENT_BYTES: u64 = 256 << 10;
/// How long a life's dropped log may take to finish the writes it had in flight.
const QUIET_TIMEOUT: Duration = Duration::from_secs(10);
/// Opens tried with faults on before one without.
const OPEN_TRIES_WITH_FAULTS: u32 = 3;
/// The whole test must finish within this, and this much more per life (each check reads
/// the whole log, which grows: long runs take longer per life).
const TEST_DEADLINE: Duration = Duration::from_secs(240);
const DEADLINE_PER_LIFE: Duration = Duration::from_secs(2);

/// How a life ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Close,
    Kill,
    PowerLoss,
}

/// Fault rates of one life, in faults per 1,000 operations of the kind.
#[derive(Clone, Copy, Debug, Default)]
struct Rates {
    write_eio: u64,
    write_enospc: u64,
    sync_eio: u64,
    read_eio: u64,
}

impl Rates {
    /// Each kind on or off at random; about one life in four has none.
    fn draw(rng: &mut Rng) -> Rates {
        let mut pick = |per_mille: u64| if rng.below(2) == 0 { per_mille } else { 0 };
        Rates { write_eio: pick(8), write_enospc: pick(8), sync_eio: pick(15), read_eio: pick(30) }
    }
}

/// What one life did.
struct Life {
    /// Acknowledgements a power loss may not take back, and the others.
    durable: Vec<Ack>,
    volatile: Vec<Ack>,
    /// Opens that failed under injected read errors before one succeeded.
    failed_opens: u32,
    /// The first append error (the log is poisoned after it).
    failure: Option<String>,
    end: End,
}

fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig { fsync, segment_bytes: SEGMENT_BYTES, ..LogConfig::default() }
}

/// Installs the seam with choices drawn from `seed` at the rates `rates` says.
fn install(seed: u64, rates: Rc<Cell<Rates>>) {
    let mut rng = Rng::new(seed);
    faults::install(move |op: Op<'_>| {
        let r = rates.get();
        let mut hit = |per_mille: u64| per_mille > 0 && rng.below(1000) < per_mille as usize;
        match op {
            Op::Write { len, .. } => {
                if hit(r.write_eio) {
                    Verdict::Fail(libc::EIO)
                } else if hit(r.write_enospc) {
                    Verdict::Partial { bytes: len / 2, errno: libc::ENOSPC }
                } else {
                    Verdict::Proceed
                }
            }
            Op::Sync { .. } if hit(r.sync_eio) => Verdict::Fail(libc::EIO),
            Op::Read { .. } if hit(r.read_eio) => Verdict::Fail(libc::EIO),
            _ => Verdict::Proceed,
        }
    });
}

/// One life of the log in `dir`: open (again while the recovery fails on an injected fault),
/// append batches of run `run` until `appends` were taken or the log fails, and end as
/// `end` says (a failed log is never closed cleanly).
async fn live(dir: &Path, fsync: FsyncPolicy, run: u32, appends: u64, end: End, rng: &mut Rng) -> Life {
    // A recovery reads every segment: past a few failed tries (a log of many segments
    // meets a read fault nearly every time) it runs without faults.
    let mut failed_opens = 0;
    let log = loop {
        faults::pause(failed_opens >= OPEN_TRIES_WITH_FAULTS);
        let opened = PartitionLog::open(dir, config(fsync)).await;
        faults::pause(false);
        match opened {
            Ok((log, _)) => break Rc::new(log),
            Err(e) => {
                assert!(e.to_string().contains("injected"), "run {run}: opening failed without an injected fault: {e}");
                assert!(failed_opens < OPEN_TRIES_WITH_FAULTS, "run {run}: the open failed without faults: {e}");
                failed_opens += 1;
            }
        }
    };
    let next_k = Rc::new(Cell::new(0u64));
    let acks: Rc<RefCell<Vec<(Ack, Durability, u64)>>> = Rc::default();
    let failure: Rc<RefCell<Option<String>>> = Rc::default();
    // Each explicit sync that succeeded: how many acks had come before it started.
    let synced_upto = Rc::new(Cell::new(0usize));
    let sync_every = 8 + rng.below(24) as u64;
    let tasks: Vec<_> = (0..WRITER_TASKS)
        .map(|_| {
            let (log, next_k, acks, failure, synced_upto) =
                (log.clone(), next_k.clone(), acks.clone(), failure.clone(), synced_upto.clone());
            glommio::spawn_local(async move {
                while failure.borrow().is_none() && next_k.get() < appends {
                    let k = next_k.get();
                    next_k.set(k + 1);
                    if k > 0 && k % sync_every == 0 {
                        let before = acks.borrow().len();
                        match log.sync().await {
                            Ok(()) => synced_upto.set(synced_upto.get().max(before)),
                            Err(e) => {
                                failure.borrow_mut().get_or_insert(e.to_string());
                                break;
                            }
                        }
                    }
                    let id = BatchId { run, k: k as u32 };
                    match log.append(&Pattern::Mixed.batch(id)).await {
                        Ok(info) => {
                            let ack = Ack { id, base_offset: info.base_offset, last_offset: info.last_offset };
                            acks.borrow_mut().push((ack, info.durability, k));
                        }
                        Err(e) => {
                            failure.borrow_mut().get_or_insert(e.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let failure = failure.borrow().clone();
    let end = if failure.is_some() && end == End::Close { End::Kill } else { end };
    let log = Rc::try_unwrap(log).unwrap_or_else(|_| panic!("run {run}: the appenders still hold the log"));
    let mut acks = acks.borrow().clone();
    if end == End::Close {
        faults::pause(true);
        log.close().await.unwrap_or_else(|e| panic!("run {run}: closing a healthy log: {e}"));
        faults::pause(false);
    } else {
        drop(log);
    }
    // Let the flusher finish what it had in flight, as the kernel does for a dead process.
    let quiet_by = Instant::now() + QUIET_TIMEOUT;
    while faults::writes_in_flight() > 0 {
        assert!(Instant::now() < quiet_by, "run {run}: writes still in flight after {QUIET_TIMEOUT:?}");
        sluice_node::io::sleep(Duration::from_millis(1)).await;
    }
    let synced = synced_upto.get();
    let durable_after_power_loss = |i: usize, d: Durability| d == Durability::Synced || i < synced;
    let (mut durable, mut volatile) = (Vec::new(), Vec::new());
    for (i, (ack, durability, _)) in acks.drain(..).enumerate() {
        match end {
            End::PowerLoss if !durable_after_power_loss(i, durability) => volatile.push(ack),
            _ => durable.push(ack),
        }
    }
    if fsync == FsyncPolicy::Always {
        assert!(volatile.is_empty(), "run {run}: an fsync=always append came back unsynced");
    }
    if end == End::PowerLoss {
        let rng = RefCell::new(rng);
        faults::power_loss(
            |_, _, len| {
                let mut rng = rng.borrow_mut();
                match rng.below(5) {
                    0 | 1 => Survival::Kept,
                    2 | 3 => Survival::Lost,
                    _ => Survival::Torn { sectors: rng.below(len / faults::SECTOR_BYTES) },
                }
            },
            |_| rng.borrow_mut().below(2) == 0,
        )
        .unwrap_or_else(|e| panic!("run {run}: the power loss could not rewrite the files: {e}"));
    }
    Life { durable, volatile, failed_opens, failure, end }
}

fn storage_faults(fsync: FsyncPolicy) {
    let seed = std::env::var("SLUICE_STORAGE_FAULT_SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("SLUICE_STORAGE_FAULT_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
    let lives =
        std::env::var("SLUICE_STORAGE_FAULT_LIVES").ok().map_or(LIVES, |s| s.parse().expect("a number of lives"));
    eprintln!(
        "storage faults, fsync={fsync}: seed {seed} (SLUICE_STORAGE_FAULT_SEED={seed} repeats it), {lives} lives"
    );
    let deadline = Instant::now() + TEST_DEADLINE + DEADLINE_PER_LIFE * lives;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut rng = Rng::new(seed);
    let rates = Rc::new(Cell::new(Rates::default()));
    install(seed ^ 0x5eed_fa17, rates.clone());
    let mut previous: Vec<Stored> = Vec::new();
    let (mut ends, mut failed_opens, mut failed_lives, mut acked, mut lost_volatile) = ([0u32; 3], 0, 0, 0, 0);
    for run in 1..=lives {
        assert!(Instant::now() < deadline, "the test ran past its deadline at life {run} of {lives}");
        let life_rates = Rates::draw(&mut rng);
        let end = [End::Close, End::Kill, End::PowerLoss, End::PowerLoss][rng.below(4)];
        let appends = rng.between(0, APPENDS_MAX);
        let life_seed = rng.next_u64();
        rates.set(life_rates);
        let life_dir = dir.clone();
        let life = run_glommio(async move {
            let mut rng = Rng::new(life_seed);
            live(&life_dir, fsync, run, appends, end, &mut rng).await
        });
        rates.set(Rates::default());
        faults::pause(true);
        let context = format!(
            "seed {seed}, life {run} ({:?}, {appends} appends, rates {life_rates:?}, failure {:?})",
            life.end, life.failure
        );
        // A power loss may keep or lose what was not durable, and what the appenders had
        // in flight may be stored unacknowledged.
        let unacked_max = WRITER_TASKS as usize + life.volatile.len();
        let v =
            verify(&dir, config(fsync), Pattern::Mixed, &previous, run, &life.durable, false, unacked_max, &context);
        faults::pause(false);
        let ids: std::collections::HashSet<BatchId> = v.batches.iter().map(|s| s.id).collect();
        lost_volatile += life.volatile.iter().filter(|a| !ids.contains(&a.id)).count();
        acked += life.durable.len() + life.volatile.len();
        ends[life.end as usize] += 1;
        failed_opens += life.failed_opens;
        failed_lives += u32::from(life.failure.is_some());
        previous = v.batches;
    }
    let counts: Counts = faults::uninstall();
    eprintln!(
        "storage faults, fsync={fsync}: {lives} lives ({} closed, {} killed, {} power losses), {acked} appends \
         acknowledged, {} batches stored at the end, {lost_volatile} unsynced acknowledgements lost to power losses \
         (allowed), {failed_lives} lives failed by a fault, {failed_opens} opens failed by a read fault; seam: {counts:?}",
        ends[0],
        ends[1],
        ends[2],
        previous.len()
    );
    assert!(counts.writes_lost + counts.writes_torn > 0, "no power loss undid a write: the test tried nothing");
    assert!(counts.write_errors + counts.partial_writes + counts.sync_errors > 0, "no write or sync fault fired");
}

#[test]
fn the_log_keeps_every_durable_acknowledgement_through_disk_faults_and_power_losses_fsync_always() {
    storage_faults(FsyncPolicy::Always);
}

#[test]
fn the_log_keeps_every_durable_acknowledgement_through_disk_faults_and_power_losses_fsync_never() {
    storage_faults(FsyncPolicy::Never);
}

#[test]
fn the_log_keeps_every_durable_acknowledgement_through_disk_faults_and_power_losses_fsync_interval() {
    storage_faults(FsyncPolicy::IntervalMs(5));
}
