//! `log-writer`: the process the crash tests kill. It opens a partition log and appends
//! generated batches forever, several at a time, printing one line per acknowledged
//! append, until it is killed.
//!
//! Usage: `log-writer --dir PATH --fsync always|never|interval:N --run R --segment-bytes N`
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

use sluice_node::storage::{Durability, FsyncPolicy, LogConfig, PartitionLog};
use sluice_tests::{crash_batch, Ack, BatchId, WRITER_TASKS};

struct Args {
    dir: PathBuf,
    fsync: FsyncPolicy,
    run: u32,
    segment_bytes: u64,
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
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else { fail(&format!("{flag} needs a value")) };
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value)),
            "--fsync" => fsync = Some(value.parse::<FsyncPolicy>().unwrap_or_else(|e| fail(&e))),
            "--run" => run = Some(value.parse::<u32>().unwrap_or_else(|e| fail(&format!("--run {value}: {e}")))),
            "--segment-bytes" => {
                segment_bytes =
                    Some(value.parse::<u64>().unwrap_or_else(|e| fail(&format!("--segment-bytes {value}: {e}"))))
            }
            other => fail(&format!("unknown flag {other}")),
        }
    }
    let usage = "usage: log-writer --dir PATH --fsync always|never|interval:N --run R --segment-bytes N";
    Args {
        dir: dir.unwrap_or_else(|| fail(usage)),
        fsync: fsync.unwrap_or_else(|| fail(usage)),
        run: run.unwrap_or_else(|| fail(usage)),
        segment_bytes: segment_bytes.unwrap_or_else(|| fail(usage)),
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
        let always = args.fsync == FsyncPolicy::Always;
        let run = args.run;
        let tasks: Vec<_> = (0..WRITER_TASKS)
            .map(|_| {
                let log = log.clone();
                let next_k = next_k.clone();
                glommio::spawn_local(async move {
                    loop {
                        let k = next_k.get();
                        next_k.set(k + 1);
                        let id = BatchId { run, k };
                        let batch = crash_batch(id);
                        let info = log.append(&batch).await.unwrap_or_else(|e| fail(&format!("append of {id}: {e}")));
                        if always && info.durability != Durability::Synced {
                            fail(&format!("append of {id} under fsync=always came back {:?}", info.durability));
                        }
                        let ack = Ack { id, base_offset: info.base_offset, last_offset: info.last_offset };
                        print_line(&ack.line());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
    });
}
