//! `log-bench`: the storage engine micro-benchmark. It measures how close
//! `PartitionLog::append` comes to the raw sequential O_DIRECT write bandwidth of the
//! file system it runs on.
//!
//! For each batch size, in one run and on one file system, it measures:
//! 1. raw `pwrite(2)` O_DIRECT writes of that size from a plain thread, queue depth 1;
//! 2. raw io_uring O_DIRECT writes through a glommio `DmaFile`, queue depth 1, from the
//!    same kind of buffer the log writes from (the ceiling of the node's own I/O path);
//! 3. `PartitionLog` appends one at a time (each awaited before the next);
//! 4. `PartitionLog` appends with N in flight (N tasks appending in a loop), which shows
//!    how well group commit merges appends into shared writes.
//!
//! On request (`--only`), the two baselines also run writing into space reserved ahead
//! with fallocate(2), to tell the file system's share of a gap from the log's own.
//!
//! Every measurement writes to a fresh file or a fresh log directory (so segment
//! creation and preallocation count, as in real use), applies the same fsync policy, and
//! discards a warm-up (`--warmup-mib`, 64 MiB) before timing `--total-mib`. The baselines write batches
//! rounded up to the 4 KiB I/O alignment; the log is given batches of exactly the size.
//! Bandwidths are decimal MB/s (10^6 bytes per second) of batch bytes.
//!
//! The raw `pwrite` thread is pinned to the CPU the glommio executor is pinned to, so
//! that all four measurements compete for the same core with whatever else runs.

// A benchmark's output is its product: it prints its tables to stdout.
#![allow(clippy::print_stdout)]

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use sluice_bench::{
    exact_batch, latency_histogram_us, mb_per_s, pin_current_thread, record_latency, AlignedBlock, BenchError,
    LatencySummary, DIRECT_IO_ALIGNMENT_BYTES,
};
use sluice_node::storage::{FsyncPolicy, LogConfig, LogStats, PartitionLog};

/// The CPU both the glommio executor and the raw `pwrite` thread run on.
const BENCH_CPU: usize = 0;
/// glommio's registered I/O arena; the log allocates its own buffers, so this stays small.
const IO_MEMORY_BYTES: usize = 2 << 20;
/// The largest batch the log accepts by default is 1 MiB plus Kafka's 12-byte log
/// overhead, so 1 MiB is the largest batch size offered.
const BATCH_KIB_MAX: u64 = 1024;
/// Appends in flight at most for `--in-flight`: a bound, not a recommendation.
const IN_FLIGHT_MAX: usize = 1024;

const USAGE: &str = "\
usage: log-bench [--dir PATH] [--total-mib N] [--warmup-mib N] [--batch-kib LIST]
                 [--fsync never|always|interval:N] [--in-flight N] [--only LIST] [--json]

  --dir PATH         where to write (default: a new directory under ./bench-data,
                     removed at the end); each measurement uses a fresh subdirectory
  --total-mib N      bytes measured per measurement, in MiB (default 1024)
  --warmup-mib N     bytes written and discarded before timing, in MiB (default 64)
  --batch-kib LIST   comma-separated batch sizes in KiB, at most 1024 (default 1024,64,16)
  --fsync POLICY     never, always or interval:N milliseconds (default never)
  --in-flight N      appends in flight for the group-commit measurement (default 8);
                     one-at-a-time appends are always measured too
  --only LIST        the measurements to run, from pwrite, glommio, log, log-qdn,
                     pwrite-prealloc, glommio-prealloc (default: the first four; the
                     last two repeat the baselines writing into space reserved
                     ahead with fallocate)
  --json             print the results as JSON instead of tables";

type Result<T, E = BenchError> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
struct Args {
    dir: Option<PathBuf>,
    total_bytes: u64,
    warmup_bytes: u64,
    batch_kib: Vec<u64>,
    fsync: FsyncPolicy,
    in_flight: usize,
    only: Vec<Kind>,
    json: bool,
}

/// The measurements, as `--only` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pwrite,
    Glommio,
    /// The baselines again, but writing into space reserved ahead with fallocate.
    PwritePrealloc,
    GlommioPrealloc,
    Log,
    LogQdn,
}

impl Kind {
    const DEFAULT: [Kind; 4] = [Kind::Pwrite, Kind::Glommio, Kind::Log, Kind::LogQdn];

    fn parse(s: &str) -> Result<Kind> {
        match s {
            "pwrite" => Ok(Kind::Pwrite),
            "glommio" => Ok(Kind::Glommio),
            "pwrite-prealloc" => Ok(Kind::PwritePrealloc),
            "glommio-prealloc" => Ok(Kind::GlommioPrealloc),
            "log" => Ok(Kind::Log),
            "log-qdn" => Ok(Kind::LogQdn),
            other => Err(BenchError(format!(
                "--only: {other:?} is not one of pwrite, glommio, pwrite-prealloc, glommio-prealloc, log, log-qdn"
            ))),
        }
    }
}

/// Whether a baseline writes into a fresh file as it grows, or into space reserved
/// ahead of it with fallocate(2), `LogConfig::preallocate_bytes` at a time (the log
/// itself zero-fills ahead of small writes instead; see ARCHITECTURE.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Space {
    Appending,
    Preallocated { ahead_bytes: u64 },
}

impl Space {
    /// The size the file should be preallocated to before a write that ends at `end`,
    /// when `preallocated` bytes are already; `None` when no call is needed. Mirrors the
    /// log's `write_pending`.
    fn target(self, preallocated: u64, end: u64) -> Option<u64> {
        match self {
            Space::Preallocated { ahead_bytes } if end > preallocated => {
                Some((preallocated + ahead_bytes).max(end).next_multiple_of(DIRECT_IO_ALIGNMENT_BYTES as u64))
            }
            _ => None,
        }
    }
}

fn parse_args() -> Result<Option<Args>> {
    let mut args = Args {
        dir: None,
        total_bytes: 1024 << 20,
        warmup_bytes: 64 << 20,
        batch_kib: vec![1024, 64, 16],
        fsync: FsyncPolicy::Never,
        in_flight: 8,
        only: Kind::DEFAULT.to_vec(),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| BenchError(format!("{flag} needs a value\n{USAGE}")));
        match flag.as_str() {
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--total-mib" => args.total_bytes = parse_mib(&flag, &value()?, 1)?,
            "--warmup-mib" => args.warmup_bytes = parse_mib(&flag, &value()?, 0)?,
            "--batch-kib" => {
                args.batch_kib = value()?
                    .split(',')
                    .map(|s| parse_number(&flag, s.trim(), 1, BATCH_KIB_MAX))
                    .collect::<Result<_>>()?;
            }
            "--fsync" => args.fsync = value()?.parse().map_err(|e: String| BenchError(format!("--fsync: {e}")))?,
            "--in-flight" => args.in_flight = parse_number(&flag, &value()?, 1, IN_FLIGHT_MAX as u64)? as usize,
            "--only" => args.only = value()?.split(',').map(|s| Kind::parse(s.trim())).collect::<Result<_>>()?,
            "--json" => args.json = true,
            "--help" | "-h" => return Ok(None),
            other => return Err(BenchError(format!("unknown argument {other:?}\n{USAGE}"))),
        }
    }
    Ok(Some(args))
}

fn parse_number(flag: &str, s: &str, min: u64, max: u64) -> Result<u64> {
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(BenchError(format!("{flag} {s:?} must be a whole number from {min} to {max}"))),
    }
}

fn parse_mib(flag: &str, s: &str, min: u64) -> Result<u64> {
    Ok(parse_number(flag, s, min, 1 << 20)? << 20)
}

/// What one timed run of writes or appends did.
#[derive(Clone, Copy, Debug, Default)]
struct Measurement {
    /// Batch bytes in the timed part (the warm-up excluded).
    bytes: u64,
    /// Writes or appends in the timed part.
    ops: u64,
    elapsed: Duration,
    latency: LatencySummary,
}

impl Measurement {
    fn mb_per_s(&self) -> f64 {
        mb_per_s(self.bytes, self.elapsed)
    }

    fn ops_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }
}

/// A log measurement with what the log's counters say it did in the timed part.
#[derive(Clone, Copy, Debug, Default)]
struct LogMeasurement {
    in_flight: usize,
    timed: Measurement,
    stats: LogStats,
}

/// The measurements at one batch size (`None`: not asked for with `--only`).
#[derive(Clone, Copy, Debug, Default)]
struct SizeResult {
    batch_bytes: usize,
    pwrite: Option<Measurement>,
    glommio: Option<Measurement>,
    pwrite_prealloc: Option<Measurement>,
    glommio_prealloc: Option<Measurement>,
    log_qd1: Option<LogMeasurement>,
    log_qdn: Option<LogMeasurement>,
}

impl SizeResult {
    fn pwrite_mb_per_s(&self) -> f64 {
        self.pwrite.as_ref().map_or(0.0, Measurement::mb_per_s)
    }
}

/// The node's allocator, so the log's costs here are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // As the node does.
    let _ = sluice_node::io::disable_transparent_huge_pages();
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("log-bench: {e}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<()> {
    let Some(args) = parse_args()? else {
        println!("{USAGE}");
        return Ok(());
    };
    let (root, remove_root) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (PathBuf::from("bench-data").join(format!("log-bench-{}", std::process::id())), true),
    };
    std::fs::create_dir_all(&root).map_err(|e| BenchError(format!("creating {}: {e}", root.display())))?;
    // glommio opens directories with openat(-1, path), which fails with EBADF for a
    // relative path, and the log syncs its directory through it: so hand it an
    // absolute one.
    let root =
        std::path::absolute(&root).map_err(|e| BenchError(format!("making {} absolute: {e}", root.display())))?;
    let results = measure_all(&args, &root);
    if remove_root {
        if let Err(e) = std::fs::remove_dir_all(&root) {
            eprintln!("log-bench: could not remove {}: {e}", root.display());
        }
        // ./bench-data itself too, unless another run is using it.
        if let Some(parent) = root.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    let results = results?;
    if args.json {
        println!("{}", to_json(&args, &root, &results));
    } else {
        print_tables(&args, &root, &results);
    }
    Ok(())
}

fn measure_all(args: &Args, root: &Path) -> Result<Vec<SizeResult>> {
    let mut results = Vec::with_capacity(args.batch_kib.len());
    for &kib in &args.batch_kib {
        let batch_bytes = (kib << 10) as usize;
        let batch = exact_batch(batch_bytes, 1_700_000_000_000)?;
        eprintln!("log-bench: {kib} KiB batches, fsync {}", args.fsync);
        let pwrite_thread = |space: Space| -> Result<Measurement> {
            let path = root.join(format!("{kib}k-pwrite.raw"));
            let (args, batch) = (args.clone(), batch.clone());
            std::thread::Builder::new()
                .name("log-bench-pwrite".into())
                .spawn(move || raw_pwrite(&path, &batch, &args, space))
                .map_err(|e| BenchError(format!("starting the pwrite thread: {e}")))?
                .join()
                .map_err(|_| BenchError("the pwrite thread panicked".into()))?
        };
        let mut result = SizeResult { batch_bytes, ..SizeResult::default() };
        if args.only.contains(&Kind::Pwrite) {
            let m = pwrite_thread(Space::Appending)?;
            eprintln!("  raw pwrite:           {:8.1} MB/s", m.mb_per_s());
            result.pwrite = Some(m);
        }
        if args.only.contains(&Kind::PwritePrealloc) {
            let m = pwrite_thread(log_space())?;
            eprintln!("  raw pwrite, prealloc: {:8.1} MB/s", m.mb_per_s());
            result.pwrite_prealloc = Some(m);
        }
        let on_executor = {
            let (args, root, batch) = (args.clone(), root.to_path_buf(), batch.clone());
            LocalExecutorBuilder::new(Placement::Fixed(BENCH_CPU))
                .io_memory(IO_MEMORY_BYTES)
                .name("log-bench")
                .spawn(move || async move { measure_on_executor(&root, kib, &batch, &args).await.map_err(|e| e.0) })
                .map_err(|e| BenchError(format!("starting the glommio executor (is ulimit -l at least 2 MiB?): {e}")))?
                .join()
                .map_err(|e| BenchError(format!("the glommio executor failed: {e}")))??
        };
        result.glommio = on_executor.glommio;
        result.glommio_prealloc = on_executor.glommio_prealloc;
        result.log_qd1 = on_executor.log_qd1;
        result.log_qdn = on_executor.log_qdn;
        results.push(result);
    }
    Ok(results)
}

/// Space reserved with fallocate, as much at a time as the log zero-fills.
fn log_space() -> Space {
    Space::Preallocated { ahead_bytes: LogConfig::default().preallocate_bytes }
}

/// What the glommio executor measured (`None`: not asked for).
#[derive(Clone, Copy, Debug, Default)]
struct ExecutorResults {
    glommio: Option<Measurement>,
    glommio_prealloc: Option<Measurement>,
    log_qd1: Option<LogMeasurement>,
    log_qdn: Option<LogMeasurement>,
}

/// The measurements that run on the glommio executor: raw DmaFile writes, then the log
/// at one and at N appends in flight.
async fn measure_on_executor(root: &Path, kib: u64, batch: &[u8], args: &Args) -> Result<ExecutorResults> {
    // The raw DmaFile below is the first direct-I/O file this thread opens on the
    // device; a fresh empty one would make glommio misjudge io-poll support.
    sluice_node::io::probe_device(root)
        .await
        .map_err(|e| BenchError(format!("probing the device of {}: {e}", root.display())))?;
    let mut out = ExecutorResults::default();
    let raw_path = root.join(format!("{kib}k-glommio.raw"));
    if args.only.contains(&Kind::Glommio) {
        let m = raw_glommio(&raw_path, batch, args, Space::Appending).await?;
        eprintln!("  raw glommio:          {:8.1} MB/s", m.mb_per_s());
        out.glommio = Some(m);
    }
    if args.only.contains(&Kind::GlommioPrealloc) {
        let m = raw_glommio(&raw_path, batch, args, log_space()).await?;
        eprintln!("  raw glommio, prealloc:{:8.1} MB/s", m.mb_per_s());
        out.glommio_prealloc = Some(m);
    }
    if args.only.contains(&Kind::Log) {
        let m = log_appends(&root.join(format!("{kib}k-log-qd1")), batch, args, 1).await?;
        eprintln!("  log QD1:              {:8.1} MB/s", m.timed.mb_per_s());
        out.log_qd1 = Some(m);
    }
    if args.in_flight > 1 && args.only.contains(&Kind::LogQdn) {
        let n = args.in_flight;
        let m = log_appends(&root.join(format!("{kib}k-log-qd{n}")), batch, args, n).await?;
        eprintln!("  log QD{n}:              {:8.1} MB/s", m.timed.mb_per_s());
        out.log_qdn = Some(m);
    }
    Ok(out)
}

/// When the baselines call fdatasync, mirroring the log's policy: after every write,
/// after the first write that comes `interval` after the last sync, or never.
struct SyncClock {
    policy: FsyncPolicy,
    last_sync: Instant,
}

impl SyncClock {
    fn new(policy: FsyncPolicy) -> SyncClock {
        SyncClock { policy, last_sync: Instant::now() }
    }

    fn due(&mut self) -> bool {
        let due = match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Never => false,
            FsyncPolicy::IntervalMs(ms) => self.last_sync.elapsed() >= Duration::from_millis(ms),
        };
        if due {
            self.last_sync = Instant::now();
        }
        due
    }
}

/// How many blocks of `block_bytes` the warm-up and the timed part write.
fn block_counts(block_bytes: usize, args: &Args) -> (u64, u64) {
    let block = block_bytes as u64;
    (args.warmup_bytes.div_ceil(block), args.total_bytes.div_ceil(block).max(1))
}

/// Measurement 1: pwrite(2) of aligned blocks to a fresh O_DIRECT file, one at a time,
/// on a thread pinned to the executor's CPU.
fn raw_pwrite(path: &Path, batch: &[u8], args: &Args, space: Space) -> Result<Measurement> {
    pin_current_thread(BENCH_CPU)?;
    let block_bytes = batch.len().next_multiple_of(DIRECT_IO_ALIGNMENT_BYTES);
    let block = AlignedBlock::filled_with(block_bytes, batch)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| BenchError(format!("opening {} with O_DIRECT: {e}", path.display())))?;
    let fd = file.as_raw_fd();
    let (warmup_blocks, timed_blocks) = block_counts(block_bytes, args);
    let mut histogram = latency_histogram_us()?;
    let mut sync = SyncClock::new(args.fsync);
    let mut position: u64 = 0;
    let mut preallocated: u64 = 0;
    let mut started = Instant::now();
    for i in 0..warmup_blocks + timed_blocks {
        if i == warmup_blocks {
            started = Instant::now();
        }
        let op_started = Instant::now();
        if let Some(target) = space.target(preallocated, position + block_bytes as u64) {
            // SAFETY: fd is open for as long as `file` lives.
            if unsafe { libc::fallocate(fd, 0, 0, target as libc::off_t) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(BenchError(format!("fallocate of {} to {target}: {e}", path.display())));
            }
            preallocated = target;
        }
        let mut done = 0;
        while done < block_bytes {
            // SAFETY: the pointer and length stay inside `block`, which outlives the call.
            let n = unsafe {
                libc::pwrite(
                    fd,
                    block.as_ptr().add(done).cast(),
                    block_bytes - done,
                    (position + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(BenchError(format!("pwrite to {} at {position}: {e}", path.display())));
            }
            if n == 0 {
                return Err(BenchError(format!("pwrite to {} at {position} wrote nothing", path.display())));
            }
            done += n as usize;
        }
        if sync.due() {
            // SAFETY: fd is open for as long as `file` lives.
            if unsafe { libc::fdatasync(fd) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(BenchError(format!("fdatasync of {}: {e}", path.display())));
            }
        }
        position += block_bytes as u64;
        if i >= warmup_blocks {
            record_latency(&mut histogram, op_started.elapsed());
        }
    }
    let elapsed = started.elapsed();
    drop(file);
    std::fs::remove_file(path).map_err(|e| BenchError(format!("removing {}: {e}", path.display())))?;
    Ok(Measurement {
        bytes: timed_blocks * batch.len() as u64,
        ops: timed_blocks,
        elapsed,
        latency: LatencySummary::of(&histogram),
    })
}

/// Measurement 2: io_uring O_DIRECT writes of aligned blocks through a glommio
/// `DmaFile` (the call the log's I/O seam makes), one at a time, to a fresh file.
async fn raw_glommio(path: &Path, batch: &[u8], args: &Args, space: Space) -> Result<Measurement> {
    let block_bytes = batch.len().next_multiple_of(DIRECT_IO_ALIGNMENT_BYTES);
    let file = glommio::io::OpenOptions::new()
        .write(true)
        .create_new(true)
        .dma_open(path)
        .await
        .map_err(|e| BenchError(format!("opening {} as a DMA file: {e}", path.display())))?;
    // The log's kind of buffer: aligned heap memory, written with a plain io_uring WRITE
    // (`file.alloc_dma_buffer` would take glommio's registered arena and WRITE_FIXED,
    // which the log does not use; it made no measurable difference here).
    let mut buffer = glommio::allocate_dma_buffer_global(block_bytes);
    for chunk in buffer.as_bytes_mut().chunks_mut(batch.len()) {
        chunk.copy_from_slice(&batch[..chunk.len()]);
    }
    let buffer = Rc::new(buffer);
    let (warmup_blocks, timed_blocks) = block_counts(block_bytes, args);
    let mut histogram = latency_histogram_us()?;
    let mut sync = SyncClock::new(args.fsync);
    let mut position: u64 = 0;
    let mut preallocated: u64 = 0;
    let mut started = Instant::now();
    for i in 0..warmup_blocks + timed_blocks {
        if i == warmup_blocks {
            started = Instant::now();
        }
        let op_started = Instant::now();
        if let Some(target) = space.target(preallocated, position + block_bytes as u64) {
            file.pre_allocate(target, false)
                .await
                .map_err(|e| BenchError(format!("preallocating {} to {target}: {e}", path.display())))?;
            preallocated = target;
        }
        let written = file
            .write_rc_at(buffer.clone(), position)
            .await
            .map_err(|e| BenchError(format!("writing {} at {position}: {e}", path.display())))?;
        if written != block_bytes {
            return Err(BenchError(format!(
                "short write to {} at {position}: {written} of {block_bytes} bytes",
                path.display()
            )));
        }
        if sync.due() {
            file.fdatasync().await.map_err(|e| BenchError(format!("fdatasync of {}: {e}", path.display())))?;
        }
        position += block_bytes as u64;
        if i >= warmup_blocks {
            record_latency(&mut histogram, op_started.elapsed());
        }
    }
    let elapsed = started.elapsed();
    file.close().await.map_err(|e| BenchError(format!("closing {}: {e}", path.display())))?;
    std::fs::remove_file(path).map_err(|e| BenchError(format!("removing {}: {e}", path.display())))?;
    Ok(Measurement {
        bytes: timed_blocks * batch.len() as u64,
        ops: timed_blocks,
        elapsed,
        latency: LatencySummary::of(&histogram),
    })
}

/// Measurements 3 and 4: appends of `batch` to a fresh log with `in_flight` appends
/// outstanding (1: each awaited before the next), first a warm-up pass, then the timed
/// pass. The log is closed and its directory removed afterwards, untimed.
async fn log_appends(dir: &Path, batch: &[u8], args: &Args, in_flight: usize) -> Result<LogMeasurement> {
    let config = LogConfig { fsync: args.fsync, ..LogConfig::default() };
    let (log, _report) = PartitionLog::open(dir, config)
        .await
        .map_err(|e| BenchError(format!("opening a log in {}: {e}", dir.display())))?;
    let log = Rc::new(log);
    let batch: Rc<[u8]> = Rc::from(batch);
    let (warmup_appends, timed_appends) = block_counts(batch.len(), args);
    append_pass(&log, &batch, warmup_appends, in_flight, &mut latency_histogram_us()?).await?;
    let before = log.stats();
    let mut histogram = latency_histogram_us()?;
    let started = Instant::now();
    append_pass(&log, &batch, timed_appends, in_flight, &mut histogram).await?;
    let elapsed = started.elapsed();
    let stats = stats_since(&log.stats(), &before);
    let log = Rc::try_unwrap(log).map_err(|_| BenchError("an append task still holds the log".into()))?;
    log.close().await.map_err(|e| BenchError(format!("closing the log in {}: {e}", dir.display())))?;
    std::fs::remove_dir_all(dir).map_err(|e| BenchError(format!("removing {}: {e}", dir.display())))?;
    Ok(LogMeasurement {
        in_flight,
        timed: Measurement {
            bytes: timed_appends * batch.len() as u64,
            ops: timed_appends,
            elapsed,
            latency: LatencySummary::of(&histogram),
        },
        stats,
    })
}

/// Makes `appends` appends of `batch` with `in_flight` tasks, each taking the next
/// append from a shared count until none is left, and records each append's latency.
async fn append_pass(
    log: &Rc<PartitionLog>,
    batch: &Rc<[u8]>,
    appends: u64,
    in_flight: usize,
    histogram: &mut Histogram<u64>,
) -> Result<()> {
    if in_flight == 1 {
        // No tasks at all: the plainest possible caller.
        for _ in 0..appends {
            let started = Instant::now();
            log.append(batch).await.map_err(|e| BenchError(format!("append: {e}")))?;
            record_latency(histogram, started.elapsed());
        }
        return Ok(());
    }
    let left = Rc::new(Cell::new(appends));
    let shared_histogram = Rc::new(RefCell::new(histogram.clone()));
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (log, batch, left, histogram) = (log.clone(), batch.clone(), left.clone(), shared_histogram.clone());
            glommio::spawn_local(async move {
                while left.get() > 0 {
                    left.set(left.get() - 1);
                    let started = Instant::now();
                    log.append(&batch).await.map_err(|e| format!("append: {e}"))?;
                    record_latency(&mut histogram.borrow_mut(), started.elapsed());
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let merged = shared_histogram.borrow();
    histogram.clone_from(&merged);
    Ok(())
}

fn stats_since(now: &LogStats, before: &LogStats) -> LogStats {
    LogStats {
        appends: now.appends - before.appends,
        batches_appended: now.batches_appended - before.batches_appended,
        bytes_appended: now.bytes_appended - before.bytes_appended,
        writes: now.writes - before.writes,
        bytes_written: now.bytes_written - before.bytes_written,
        fsyncs: now.fsyncs - before.fsyncs,
        reads_from_cache: now.reads_from_cache - before.reads_from_cache,
        reads_from_disk: now.reads_from_disk - before.reads_from_disk,
        rolls: now.rolls - before.rolls,
        duplicates: now.duplicates - before.duplicates,
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn size_label(batch_bytes: usize) -> String {
    if batch_bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", batch_bytes >> 20)
    } else {
        format!("{} KiB", batch_bytes >> 10)
    }
}

fn print_tables(args: &Args, root: &Path, results: &[SizeResult]) {
    let n = args.in_flight;
    println!(
        "log-bench: fsync {}, {} MiB timed per measurement after {} MiB warm-up, in {}",
        args.fsync,
        args.total_bytes >> 20,
        args.warmup_bytes >> 20,
        root.display()
    );
    println!("MB/s = 10^6 bytes/s of batch bytes; latencies in microseconds.");
    println!();
    let qdn = |label: &str| if n > 1 { format!("{label}{n}") } else { "-".to_string() };
    println!(
        "| batch | raw pwrite MB/s | raw glommio MB/s | log QD1 MB/s | QD1/pwrite | QD1/glommio | {} MB/s | {}/pwrite | log QD1 p99 µs |",
        qdn("log QD"),
        qdn("QD")
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let cell = |m: Option<f64>, precision: usize| m.map_or("-".to_string(), |v| format!("{v:.precision$}"));
    for r in results {
        let raw = r.pwrite.as_ref().map(Measurement::mb_per_s);
        let qd1 = r.log_qd1.as_ref().map(|m| m.timed.mb_per_s());
        let qdn = r.log_qdn.as_ref().map(|m| m.timed.mb_per_s());
        let glommio = r.glommio.as_ref().map(Measurement::mb_per_s);
        let vs_raw = |log: Option<f64>| log.zip(raw).map(|(log, raw)| ratio(log, raw));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            size_label(r.batch_bytes),
            cell(raw, 1),
            cell(glommio, 1),
            cell(qd1, 1),
            cell(vs_raw(qd1), 2),
            cell(qd1.zip(glommio).map(|(log, raw)| ratio(log, raw)), 2),
            cell(qdn, 1),
            cell(vs_raw(qdn), 2),
            cell(r.log_qd1.as_ref().map(|m| m.timed.latency.p99_us as f64), 0)
        );
    }
    println!();
    println!("| batch | measurement | MB/s | ops/s | p50 | p99 | p99.9 | max | writes | MB written | appends/write | fsyncs | rolls |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let size = size_label(r.batch_bytes);
        for (name, m) in [
            ("raw pwrite QD1", &r.pwrite),
            ("raw glommio QD1", &r.glommio),
            ("raw pwrite QD1, prealloc", &r.pwrite_prealloc),
            ("raw glommio QD1, prealloc", &r.glommio_prealloc),
        ] {
            let Some(m) = m else { continue };
            println!(
                "| {size} | {name} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {:.1} | - | - | - |",
                m.mb_per_s(),
                m.ops_per_s(),
                m.latency.p50_us,
                m.latency.p99_us,
                m.latency.p999_us,
                m.latency.max_us,
                m.ops,
                m.bytes as f64 / 1e6
            );
        }
        for m in r.log_qd1.iter().chain(r.log_qdn.iter()) {
            let t = &m.timed;
            println!(
                "| {size} | log QD{} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {} | {} |",
                m.in_flight,
                t.mb_per_s(),
                t.ops_per_s(),
                t.latency.p50_us,
                t.latency.p99_us,
                t.latency.p999_us,
                t.latency.max_us,
                m.stats.writes,
                m.stats.bytes_written as f64 / 1e6,
                ratio(m.stats.appends as f64, m.stats.writes as f64),
                m.stats.fsyncs,
                m.stats.rolls
            );
        }
    }
}

fn measurement_json(m: &Measurement) -> String {
    format!(
        "{{\"bytes\":{},\"ops\":{},\"elapsed_s\":{:.6},\"mb_per_s\":{:.3},\"ops_per_s\":{:.3},\
         \"latency_us\":{{\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{}}}}}",
        m.bytes,
        m.ops,
        m.elapsed.as_secs_f64(),
        m.mb_per_s(),
        m.ops_per_s(),
        m.latency.p50_us,
        m.latency.p99_us,
        m.latency.p999_us,
        m.latency.max_us
    )
}

fn log_json(m: &LogMeasurement, raw_mb_per_s: f64) -> String {
    let s = &m.stats;
    format!(
        "{{\"in_flight\":{},\"timed\":{},\"ratio_to_pwrite\":{:.4},\"stats\":{{\"appends\":{},\"writes\":{},\
         \"bytes_appended\":{},\"bytes_written\":{},\"fsyncs\":{},\"rolls\":{}}}}}",
        m.in_flight,
        measurement_json(&m.timed),
        ratio(m.timed.mb_per_s(), raw_mb_per_s),
        s.appends,
        s.writes,
        s.bytes_appended,
        s.bytes_written,
        s.fsyncs,
        s.rolls
    )
}

fn to_json(args: &Args, root: &Path, results: &[SizeResult]) -> String {
    let mut out = String::new();
    let dir = root.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    let _ = write!(
        out,
        "{{\"fsync\":\"{}\",\"total_bytes\":{},\"warmup_bytes\":{},\"dir\":\"{dir}\",\"results\":[",
        args.fsync, args.total_bytes, args.warmup_bytes
    );
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let raw = r.pwrite_mb_per_s();
        let null = || "null".to_string();
        let _ = write!(
            out,
            "{{\"batch_bytes\":{},\"raw_pwrite\":{},\"raw_glommio\":{},\"raw_pwrite_prealloc\":{},\
             \"raw_glommio_prealloc\":{},\"log_qd1\":{},\"log_qdn\":{}}}",
            r.batch_bytes,
            r.pwrite.as_ref().map_or_else(null, measurement_json),
            r.glommio.as_ref().map_or_else(null, measurement_json),
            r.pwrite_prealloc.as_ref().map_or_else(null, measurement_json),
            r.glommio_prealloc.as_ref().map_or_else(null, measurement_json),
            r.log_qd1.as_ref().map_or_else(null, |m| log_json(m, raw)),
            r.log_qdn.as_ref().map_or_else(null, |m| log_json(m, raw))
        );
    }
    out.push_str("]}");
    out
}
