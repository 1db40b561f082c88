//! Crash tests of the storage engine with real processes: a `log-writer` child appends
//! generated batches to a partition log with several appends in flight and is killed
//! with SIGKILL at a random moment, round after round on the same directory; after each
//! round this process opens the log and checks what the engine promises
//! (`sluice_node::storage::log`): an append completes only after its O_DIRECT write
//! completed, so under every fsync policy
//! - every acknowledged batch is there after kill -9, at exactly the offsets it was
//!   acknowledged with, byte for byte what the writer sent (but for the base offset);
//! - no torn or corrupt batch is visible: the log is a contiguous run of whole batches,
//!   each with a good CRC, each one a batch the writer really sent, none twice;
//! - nothing a previous round left in the log is lost or changed by a later crash.
//!
//! Every wait is bounded (a deadline per test); every child is killed and reaped by its
//! pid on every exit path. The random kill delays come from a seeded xorshift generator:
//! round `r` uses seed `base + r`, both are printed, and `SLUICE_CRASH_SEED=<base>` replays
//! the same delays (the kill still lands wherever the child happens to be then).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_node::storage::{FsyncPolicy, LogConfig};
use sluice_schemas::Offset;
use sluice_tests::log_check::{verify, Stored};
use sluice_tests::{Ack, Pattern, Rng, LARGE_BATCHES, WRITER_TASKS};

/// Rounds of start, append, kill -9, verify per test.
const ROUNDS: u32 = 24;
/// Small segments, so that every round rolls several (a 0.1 s round writes megabytes).
const SEGMENT_BYTES: u64 = 256 << 10;
/// How long a child may run before it is killed: uniform in this range, per round.
const RUN_MS_MIN: u64 = 20;
const RUN_MS_MAX: u64 = 200;
/// The whole test, every round included, must finish within this.
const TEST_DEADLINE: Duration = Duration::from_secs(120);
/// How long a SIGKILLed child may take to be reaped (in-flight io_uring requests must
/// finish before the kernel lets it go).
const REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// The default base of the per-round seeds; `SLUICE_CRASH_SEED` overrides it.
const SEED_BASE: u64 = 0x00c0_ffee_5eed_0001;

fn seed_base() -> u64 {
    match std::env::var("SLUICE_CRASH_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("SLUICE_CRASH_SEED={s:?} is not a number: {e}"))
        }
        Err(_) => SEED_BASE,
    }
}

fn time_left(deadline: Instant, what: &str) -> Duration {
    let left = deadline.saturating_duration_since(Instant::now());
    assert!(!left.is_zero(), "test deadline ({TEST_DEADLINE:?}) passed while {what}");
    left
}

/// Everything a child wrote to one pipe, collected by a thread of its own so that the
/// child never blocks on a full pipe; `finished` reports EOF.
struct PipeReader {
    bytes: Arc<Mutex<Vec<u8>>>,
    finished: mpsc::Receiver<()>,
}

impl PipeReader {
    fn start(mut pipe: impl Read + Send + 'static) -> PipeReader {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (tx, finished) = mpsc::channel();
        let sink = bytes.clone();
        std::thread::spawn(move || {
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
            let _ = tx.send(());
        });
        PipeReader { bytes, finished }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    /// Waits for EOF (bounded by `deadline`) and returns all that was read.
    fn finish(self, deadline: Instant) -> Vec<u8> {
        let left = time_left(deadline, "waiting for a child's pipe to close");
        self.finished.recv_timeout(left).expect("the child's pipe closes once the child is dead");
        std::mem::take(&mut *self.bytes.lock().unwrap())
    }
}

/// The complete lines of `bytes`: an unterminated last line (the child was killed while
/// writing it, or before its newline reached the pipe) is left out.
fn complete_lines(bytes: &[u8]) -> Vec<String> {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&bytes[..end]).lines().map(str::to_owned).collect()
}

/// A running `log-writer`. Dropping it (on any exit path, panics included) kills it by
/// its pid and reaps it.
struct WriterProcess {
    child: Option<Child>,
}

/// What a writer is started with.
#[derive(Clone, Copy, Debug)]
struct WriterArgs {
    fsync: FsyncPolicy,
    run: u32,
    segment_bytes: u64,
    pattern: Pattern,
    die_after_zero_fill: bool,
}

impl WriterArgs {
    /// The mixed pattern of the first crash tests, on `SEGMENT_BYTES` segments.
    fn mixed(fsync: FsyncPolicy, run: u32) -> WriterArgs {
        WriterArgs { fsync, run, segment_bytes: SEGMENT_BYTES, pattern: Pattern::Mixed, die_after_zero_fill: false }
    }
}

/// When a round's writer dies.
#[derive(Clone, Copy, Debug)]
enum KillPlan {
    /// SIGKILL `ms` after the writer is ready (and not before its first ack).
    AfterMs(u64),
    /// SIGKILL `delay_ms` after the ack of small batch number `small_acks` (those after the
    /// `LARGE_BATCHES` of the large-then-small pattern).
    AfterSmallAcks { small_acks: usize, delay_ms: u64 },
    /// The writer kills itself (`--die-after-zero-fill`).
    ByItself,
}

impl WriterProcess {
    fn spawn(dir: &Path, args: WriterArgs) -> (WriterProcess, PipeReader, PipeReader) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_log-writer"));
        command
            .arg("--dir")
            .arg(dir)
            .args(["--fsync", &args.fsync.to_string()])
            .args(["--run", &args.run.to_string()])
            .args(["--segment-bytes", &args.segment_bytes.to_string()])
            .args(["--pattern", &args.pattern.to_string()]);
        if args.die_after_zero_fill {
            command.arg("--die-after-zero-fill");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start log-writer");
        let stdout = PipeReader::start(child.stdout.take().expect("piped stdout"));
        let stderr = PipeReader::start(child.stderr.take().expect("piped stderr"));
        (WriterProcess { child: Some(child) }, stdout, stderr)
    }

    fn pid(&self) -> libc::pid_t {
        let child = self.child.as_ref().expect("the child is not reaped yet");
        libc::pid_t::try_from(child.id()).expect("pids fit pid_t")
    }

    /// Whether the child exited by itself (it should only ever die of our SIGKILL).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait on the child"))
    }

    /// Reaps a child that exited by itself (`exited` said so); returns how it ended.
    fn reaped(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the child is not reaped yet");
        child.wait().expect("the exit status of a child that has exited")
    }

    /// Sends SIGKILL to the child's pid and reaps it, waiting at most `REAP_TIMEOUT`.
    /// Returns how it ended.
    fn kill_9(&mut self) -> std::process::ExitStatus {
        self.kill_and_reap().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kill_9` without panicking, for `drop` (a panic while unwinding aborts).
    fn kill_and_reap(&mut self) -> Result<std::process::ExitStatus, String> {
        let Some(mut child) = self.child.take() else { return Err("the child was reaped already".into()) };
        let pid = libc::pid_t::try_from(child.id()).map_err(|e| format!("pid {}: {e}", child.id()))?;
        // SAFETY: kill(2) with the pid of a child we started and have not reaped yet (so
        // the pid cannot have been reused) and a valid signal number; no memory is passed.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        let kill_error = (rc != 0).then(std::io::Error::last_os_error);
        let give_up = Instant::now() + REAP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => {}
                Err(e) => return Err(format!("waiting for log-writer {pid}: {e}")),
            }
            if Instant::now() >= give_up {
                return Err(format!(
                    "log-writer {pid} not reaped {REAP_TIMEOUT:?} after SIGKILL (kill error: {kill_error:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for WriterProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            match self.kill_and_reap() {
                Ok(status) => eprintln!("killed a leftover log-writer: {status}"),
                Err(e) => eprintln!("could not stop a leftover log-writer: {e}"),
            }
        }
    }
}

fn log_config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig { fsync, segment_bytes: SEGMENT_BYTES, ..LogConfig::default() }
}

/// What one round's child did.
struct Round {
    acks: Vec<Ack>,
    ready_end: Offset,
}

/// Starts a writer, waits for it to open the log, lets it append until `plan` says (and
/// at least until its first ack, so no round is vacuous), sees it die of SIGKILL and
/// returns its complete ack lines.
fn crash_one_writer(dir: &Path, args: WriterArgs, plan: KillPlan, deadline: Instant) -> Round {
    let run = args.run;
    let (mut writer, stdout, stderr) = WriterProcess::spawn(dir, args);
    let pid = writer.pid();
    let child_died = |writer: &mut WriterProcess, stderr_bytes: &[u8]| {
        if let Some(status) = writer.exited() {
            panic!(
                "log-writer {pid} (run {run}) exited by itself with {status}: {}",
                String::from_utf8_lossy(stderr_bytes)
            );
        }
    };
    // Wait for `ready`, then for the moment the plan names and the first ack.
    let mut ready_at = None;
    let status = loop {
        let lines = complete_lines(&stdout.snapshot());
        if let (None, Some(first)) = (ready_at, lines.first()) {
            assert!(first.starts_with("ready "), "log-writer's first line is `ready END`, not {first:?}");
            ready_at = Some(Instant::now());
        }
        if let Some(ready) = ready_at.filter(|_| lines.len() > 1) {
            match plan {
                KillPlan::AfterMs(ms) if ready.elapsed() >= Duration::from_millis(ms) => break writer.kill_9(),
                KillPlan::AfterSmallAcks { small_acks, delay_ms } => {
                    let small = lines[1..].iter().filter_map(|l| Ack::parse(l)).filter(|a| a.id.k >= LARGE_BATCHES);
                    if small.count() >= small_acks {
                        std::thread::sleep(Duration::from_millis(delay_ms));
                        break writer.kill_9();
                    }
                }
                _ => {}
            }
        }
        if let KillPlan::ByItself = plan {
            if writer.exited().is_some() {
                break writer.reaped();
            }
        } else {
            child_died(&mut writer, &stderr.snapshot());
        }
        time_left(deadline, "waiting for log-writer to open the log, acknowledge appends and die");
        std::thread::sleep(Duration::from_millis(1));
    };
    let out = stdout.finish(deadline);
    let err = stderr.finish(deadline);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "log-writer {pid} (run {run}) died of our SIGKILL, not {status}: {}",
        String::from_utf8_lossy(&err)
    );
    let lines = complete_lines(&out);
    let ready_end = lines[0]
        .strip_prefix("ready ")
        .and_then(|n| n.parse().ok())
        .map(Offset)
        .unwrap_or_else(|| panic!("bad ready line {:?}", lines[0]));
    let acks: Vec<Ack> = lines[1..]
        .iter()
        .map(|l| Ack::parse(l).unwrap_or_else(|| panic!("log-writer printed a line that is not an ack: {l:?}")))
        .collect();
    for ack in &acks {
        assert_eq!(ack.id.run, run, "log-writer acked a batch of another run: {ack:?}");
    }
    Round { acks, ready_end }
}

/// The crash test: `ROUNDS` rounds of writer, kill -9, verification on one directory,
/// then a final check of every batch and every ack of every round.
fn acknowledged_batches_survive_kill_9(fsync: FsyncPolicy) {
    let started = Instant::now();
    let deadline = started + TEST_DEADLINE;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir: PathBuf = tmp.path().join("log");
    let base_seed = seed_base();
    let mut previous: Vec<Stored> = Vec::new();
    let mut log_end = Offset(0);
    let mut all_acks: Vec<Ack> = Vec::new();
    let mut truncations = 0;
    for round in 0..ROUNDS {
        let run = round + 1;
        let seed = base_seed.wrapping_add(u64::from(round));
        let run_ms = Rng::new(seed).between(RUN_MS_MIN, RUN_MS_MAX);
        let context = format!("fsync={fsync} round {round} (run {run}, seed {seed:#x} = SLUICE_CRASH_SEED {base_seed:#x} + {round}, killed after {run_ms} ms)");
        let r = crash_one_writer(&dir, WriterArgs::mixed(fsync, run), KillPlan::AfterMs(run_ms), deadline);
        assert_eq!(r.ready_end, log_end, "{context}: the writer opened the log at another end than verified");
        assert!(!r.acks.is_empty(), "{context}: the writer acknowledged nothing, so the round proves nothing");
        let v = verify(
            &dir,
            log_config(fsync),
            Pattern::Mixed,
            &previous,
            run,
            &r.acks,
            false,
            WRITER_TASKS as usize,
            &context,
        );
        println!(
            "{context}: {} acks, {} batches now stored ({} new), log end {}, {} segments, {} torn tails cut",
            r.acks.len(),
            v.batches.len(),
            v.batches.len() - previous.len(),
            v.log_end,
            v.segments,
            v.truncations
        );
        truncations += v.truncations;
        previous = v.batches;
        log_end = v.log_end;
        all_acks.extend(r.acks);
        time_left(deadline, "running crash rounds");
    }
    // Once more, every batch against its regenerated bytes and every ack of every run.
    let context = format!("fsync={fsync} final check");
    let v =
        verify(&dir, log_config(fsync), Pattern::Mixed, &previous, 0, &all_acks, true, WRITER_TASKS as usize, &context);
    assert_eq!(v.batches, previous, "{context}: a clean reopen changed the log");
    assert!(!all_acks.is_empty());
    println!(
        "fsync={fsync}: {ROUNDS} rounds, {} acknowledged batches verified, {} batches stored, log end {}, \
         {truncations} torn tails cut, {:?}",
        all_acks.len(),
        v.batches.len(),
        v.log_end,
        started.elapsed()
    );
}

/// Under `always`, an acknowledged append was written and fdatasync'd, so it survives
/// the writer being killed with SIGKILL at any moment, with any number of appends in
/// flight, during segment rolls included; recovery leaves only whole, valid batches.
#[test]
fn acknowledged_batches_survive_kill_9_with_fsync_always() {
    acknowledged_batches_survive_kill_9(FsyncPolicy::Always);
}

/// Under `never`, an acknowledged append was only written (O_DIRECT, no fdatasync), and
/// that is enough to survive the process being killed: nothing acknowledged is lost and
/// nothing torn is visible.
#[test]
fn acknowledged_batches_survive_kill_9_with_fsync_never() {
    acknowledged_batches_survive_kill_9(FsyncPolicy::Never);
}

/// Under `interval:N`, the periodic fdatasync runs between writes; a kill at any moment
/// still loses nothing acknowledged.
#[test]
fn acknowledged_batches_survive_kill_9_with_fsync_interval() {
    acknowledged_batches_survive_kill_9(FsyncPolicy::IntervalMs(5));
}

/// Rounds of the large-then-small test per fsync policy; `SLUICE_CRASH_PATTERN_ROUNDS`
/// overrides it.
const PATTERN_ROUNDS: u32 = 100;
/// Segments large enough that a round never rolls: the pattern is about one file.
const PATTERN_SEGMENT_BYTES: u64 = 64 << 20;
/// Every fourth round the writer kills itself right after a zero-fill.
const PATTERN_DIE_EVERY: u32 = 4;
/// The pattern test's deadline, every round included.
const PATTERN_DEADLINE: Duration = Duration::from_secs(600);

fn pattern_rounds() -> u32 {
    match std::env::var("SLUICE_CRASH_PATTERN_ROUNDS") {
        Ok(s) => s.trim().parse().unwrap_or_else(|e| panic!("SLUICE_CRASH_PATTERN_ROUNDS={s:?}: {e}")),
        Err(_) => PATTERN_ROUNDS,
    }
}

/// The large-then-small crash test. Each round, on a fresh directory, a writer appends
/// sixteen ~1 MB batches (four in flight), then ~5 KB batches one at a time, and is
/// killed with SIGKILL 0 to 12 ms after the 9th to 14th small ack: about when the
/// shrinking writes start zero-filling again, behind data the large writes put past the
/// zero-filled space. Every fourth round the writer instead kills itself right after its
/// first zero-fill, before the data write that follows. After each death the log is
/// reopened and every acknowledged batch checked byte for byte. Rounds are independent:
/// every round runs, and the test fails at the end naming each round that lost or
/// changed an acknowledged batch.
fn large_then_small_survives_kill_9(fsync: FsyncPolicy) {
    let started = Instant::now();
    let deadline = started + PATTERN_DEADLINE;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let base_seed = seed_base();
    let rounds = pattern_rounds();
    let mut failures = Vec::new();
    let mut acked = 0;
    let mut truncations = 0;
    for round in 0..rounds {
        let run = round + 1;
        let seed = base_seed.wrapping_add(u64::from(round));
        let mut rng = Rng::new(seed);
        let plan = if round % PATTERN_DIE_EVERY == PATTERN_DIE_EVERY - 1 {
            KillPlan::ByItself
        } else {
            KillPlan::AfterSmallAcks { small_acks: rng.between(9, 14) as usize, delay_ms: rng.between(0, 12) }
        };
        let dir = tmp.path().join(format!("round-{round}"));
        let args = WriterArgs {
            fsync,
            run,
            segment_bytes: PATTERN_SEGMENT_BYTES,
            pattern: Pattern::LargeThenSmall,
            die_after_zero_fill: matches!(plan, KillPlan::ByItself),
        };
        let context =
            format!("fsync={fsync} large-then-small round {round} (seed {seed:#x} = SLUICE_CRASH_SEED {base_seed:#x} + {round}, {plan:?})");
        let r = crash_one_writer(&dir, args, plan, deadline);
        assert_eq!(r.ready_end, Offset(0), "{context}: a fresh directory opens empty");
        let large = r.acks.iter().filter(|a| a.id.k < LARGE_BATCHES).count();
        assert_eq!(
            large, LARGE_BATCHES as usize,
            "{context}: the writer died before its large batches were acknowledged"
        );
        let checked = std::panic::catch_unwind(|| {
            verify(
                &dir,
                log_config(fsync),
                Pattern::LargeThenSmall,
                &[],
                run,
                &r.acks,
                false,
                WRITER_TASKS as usize,
                &context,
            )
        });
        match checked {
            Ok(v) => {
                truncations += v.truncations;
                std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                failures.push(message);
            }
        }
        acked += r.acks.len();
        time_left(deadline, "running large-then-small rounds");
    }
    println!(
        "fsync={fsync}: {rounds} large-then-small rounds, {acked} acknowledged batches, {} rounds lost or changed \
         one, {truncations} torn tails cut, {:?}",
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "fsync={fsync}: {} of {rounds} rounds lost or changed acknowledged batches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn large_then_small_writes_survive_kill_9_with_fsync_always() {
    large_then_small_survives_kill_9(FsyncPolicy::Always);
}

#[test]
fn large_then_small_writes_survive_kill_9_with_fsync_never() {
    large_then_small_survives_kill_9(FsyncPolicy::Never);
}

#[test]
fn large_then_small_writes_survive_kill_9_with_fsync_interval() {
    large_then_small_survives_kill_9(FsyncPolicy::IntervalMs(5));
}
