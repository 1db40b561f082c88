//! `log-writer`: the process the crash tests kill. It opens a partition log and appends
//! generated batches forever, several at a time, printing one line per acknowledged
//! append, until it is killed.
//!
//! Usage: `log-writer --dir PATH --fsync always|never|interval:N --run R --segment-bytes N
//! [--pattern mixed|large-then-small] [--die-after-zero-fill]`
//!
//! `--pattern` chooses the batches and how many are in flight (`sluice_tests::Pattern`;
//! `mixed` by default). `--die-after-zero-fill` (with `large-then-small`) arms the log's
//! `DieAfterZeroFill` fault when the small batches start, and the process kills itself
//! with SIGKILL when an append fails with it: it dies between a zero-fill and the data
//! write after it, the moment the crash tests aim their kills at.
//!
//! Output on stdout, one whole line per `write` (a line is never split across writes, so
//! a kill leaves at most an unterminated last line, which readers ignore):
//! - `ready LOG_END` once the log is open (after its recovery);
//! - `ack R K BASE LAST` after the append of `crash_batch((R, K))` completed, with the
//!   offsets the log gave it.
//!
//! It exits with status 2 (and a message on stderr) if an append fails, if an `always`
//! append comes back without being synced, or if stdout is closed (its reader is gone:
//! nobody is left to kill it).

use std::cell::Cell;
use std::io::Write;
use std::path::PathBuf;
use std::process::exit;
use std::rc::Rc;

use sluice_node::storage::{Durability, FaultPoint, FsyncPolicy, LogConfig, PartitionLog};
use sluice_tests::{Ack, BatchId, Pattern, LARGE_BATCHES, WRITER_TASKS};

struct Args {
    dir: PathBuf,
    fsync: FsyncPolicy,
    run: u32,
    segment_bytes: u64,
    pattern: Pattern,
    die_after_zero_fill: bool,
}

fn fail(message: &str) -> ! {
    eprintln!("log-writer: {message}");
    exit(2)
}

fn parse_args() -> Args {
    let mut dir = None;
    let mut fsync = None;
    let mut run = None;
    let mut segment_bytes = None;
    let mut pattern = Pattern::Mixed;
    let mut die_after_zero_fill = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--die-after-zero-fill" {
            die_after_zero_fill = true;
            continue;
        }
        let Some(value) = args.next() else { fail(&format!("{flag} needs a value")) };
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value)),
            "--fsync" => fsync = Some(value.parse::<FsyncPolicy>().unwrap_or_else(|e| fail(&e))),
            "--run" => run = Some(value.parse::<u32>().unwrap_or_else(|e| fail(&format!("--run {value}: {e}")))),
            "--segment-bytes" => {
                segment_bytes =
                    Some(value.parse::<u64>().unwrap_or_else(|e| fail(&format!("--segment-bytes {value}: {e}"))))
            }
            "--pattern" => pattern = value.parse().unwrap_or_else(|e: String| fail(&e)),
            other => fail(&format!("unknown flag {other}")),
        }
    }
    let usage = "usage: log-writer --dir PATH --fsync always|never|interval:N --run R --segment-bytes N";
    Args {
        dir: dir.unwrap_or_else(|| fail(usage)),
        fsync: fsync.unwrap_or_else(|| fail(usage)),
        run: run.unwrap_or_else(|| fail(usage)),
        segment_bytes: segment_bytes.unwrap_or_else(|| fail(usage)),
        pattern,
        die_after_zero_fill,
    }
}

/// Writes one whole line with a single `write_all` on the locked stdout, then flushes,
/// so the line is in the pipe before the next append is acknowledged.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
        fail(&format!("stdout is gone ({e}); stopping"));
    }
}

fn main() {
    sluice_node::io::tune_allocator();
    let args = parse_args();
    let config = LogConfig { fsync: args.fsync, segment_bytes: args.segment_bytes, ..LogConfig::default() };
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(2 << 20)
        .make()
        .unwrap_or_else(|e| fail(&format!("cannot start a glommio executor (is ulimit -l at least 512 KiB?): {e}")));
    executor.run(async move {
        let (log, _report) = PartitionLog::open(&args.dir, config)
            .await
            .unwrap_or_else(|e| fail(&format!("opening {}: {e}", args.dir.display())));
        print_line(&format!("ready {}\n", log.log_end_offset().0));
        let log = Rc::new(log);
        // The next sequence number to append; each task takes one before each append.
        let next_k = Rc::new(Cell::new(0u32));
        let writer = Rc::new(Writer {
            log: log.clone(),
            run: args.run,
            pattern: args.pattern,
            always: args.fsync == FsyncPolicy::Always,
        });
        // Mixed: every task appends forever. Large-then-small: the tasks share the large
        // batches, then one appends the small ones.
        let stop_at = match args.pattern {
            Pattern::Mixed => u32::MAX,
            Pattern::LargeThenSmall => LARGE_BATCHES,
        };
        let tasks: Vec<_> = (0..WRITER_TASKS)
            .map(|_| {
                let writer = writer.clone();
                let next_k = next_k.clone();
                glommio::spawn_local(async move {
                    while next_k.get() < stop_at {
                        let k = next_k.get();
                        next_k.set(k + 1);
                        writer.append(k).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        if args.die_after_zero_fill {
            log.faults().arm(FaultPoint::DieAfterZeroFill);
        }
        for k in stop_at.. {
            writer.append(k).await;
        }
    });
}

/// Appends batches of one run and prints their acks.
struct Writer {
    log: Rc<PartitionLog>,
    run: u32,
    pattern: Pattern,
    always: bool,
}

impl Writer {
    /// Appends batch `k` and prints its ack line, or exits (killing itself when the
    /// `DieAfterZeroFill` fault fired).
    async fn append(&self, k: u32) {
        let id = BatchId { run: self.run, k };
        let batch = self.pattern.batch(id);
        let info = match self.log.append(&batch).await {
            Ok(info) => info,
            Err(e) if e.to_string().contains("DieAfterZeroFill") => die(),
            Err(e) => fail(&format!("append of {id}: {e}")),
        };
        if self.always && info.durability != Durability::Synced {
            fail(&format!("append of {id} under fsync=always came back {:?}", info.durability));
        }
        let ack = Ack { id, base_offset: info.base_offset, last_offset: info.last_offset };
        print_line(&ack.line());
    }
}

/// Kills this process with SIGKILL, as the crash tests do from outside.
fn die() -> ! {
    // SAFETY: kill(2) on our own pid with a valid signal; no memory is passed.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    fail("SIGKILL to itself returned")
}
