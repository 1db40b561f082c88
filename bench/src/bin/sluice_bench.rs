//! `sluice-bench`: the load generator. Subcommands:
//!
//! - `produce`: N producers (each its own client and connection) send records of a size
//!   to a topic with P partitions, as fast as possible or at a fixed rate; ack latency is
//!   measured from the record's intended send time (corrected for coordinated omission
//!   at a fixed rate).
//! - `consume`: M consumers read the topic from the start (`--start earliest`, cold:
//!   from disk once the topic outgrows the node's cache) or its last `--tail-mib` per
//!   partition (`--start tail`, hot: from the cache).
//! - `e2e`: producers at a fixed rate and consumers at the tail; latency from each
//!   record's create timestamp to its arrival at a consumer.
//! - `baseline`: the machine's limits with no Sluice involved.
//! - `rtt`: a small request's round trip through the node next to a plain TCP echo.
//!
//! Every subcommand prints a progress line each second on stderr and a summary on stdout
//! (or one JSON object with `--json`, fields named with their units). Speed is never
//! asserted here: this measures.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sluice_bench::baseline::{self, Baseline};
use sluice_bench::{latency_histogram_us, mb_per_s, record_latency, BenchError, LatencySummary};
use sluice_client::consumer::{Consumer, ConsumerConfig, OffsetReset, SeekTo};
use sluice_client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use sluice_client::{Admin, NewTopic, SaslSettings, Security, TlsSettings};
use sluice_schemas::batch::Compression;

const USAGE: &str = "\
sluice-bench: Sluice's load generator

usage: sluice-bench SUBCOMMAND [flags]

subcommands: produce | consume | e2e | baseline | rtt

common flags:
  --bootstrap HOST:PORT[,HOST:PORT...]  node addresses (default 127.0.0.1:9292); with a
                          cluster, give them all: clients go to each partition's leader
  --topic NAME            (default bench; created with --partitions if missing)
  --partitions P          (default 16)
  --replication-factor R  of a topic the bench creates (default 1)
  --min-insync N          its min.insync.replicas (default: the node's)
  --record-bytes N        value bytes per record (default 1024)
  --duration-s S          measured seconds (default 10), after --warmup-s (default 2)
  --total-mib N           produce: stop after N MiB were acknowledged instead of after S
  --json                  print the summary as one JSON object
  --against-baseline      measure the machine's limits first and add the ratios
  --data-dir DIR          where the baseline measures disk bandwidth (default ./sluice-data)
  --node-pid PID          report the node's CPU seconds (from /proc); produce and consume
                          always report the bench's own (bench_cpu_*, per record too;
                          produce also per batch sent, with records_per_batch)
  --metrics HOST:PORT     the node's metrics endpoint: report bytes copied per byte fetched
  --security-protocol P   PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL, as the
                          node's --listen; with --tls-ca FILE (SSL, SASL_SSL) and
                          --sasl-username U, --sasl-mechanism M (default SCRAM-SHA-512),
                          the password from $SLUICE_SASL_PASSWORD (SASL_*)
produce / e2e:
  --producers N (1)  --acks 0|1|all (1)  --compression none|gzip|snappy|lz4|zstd
  --idempotence on|off (on; applies with --acks all: retries keep each partition's order)
  --transaction-records N (0: none) each producer is transactional and commits every N
                     records (needs --acks all); reports commit latency
  --batch-bytes N (16384)  --linger-ms N (5)  --rate R records/s, 0 = max (0; e2e: 10000)
  --keys none|uniform|zipf (none)
consume / e2e:
  --consumers M (1)  --start earliest|tail (earliest)  --tail-mib N (16, per partition)
rtt:
  --requests N (20000)";

struct Opts {
    sub: String,
    flags: HashMap<String, String>,
}

impl Opts {
    fn get(&self, key: &str, default: &str) -> String {
        self.flags.get(key).cloned().unwrap_or_else(|| default.to_string())
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, BenchError> {
        match self.flags.get(key) {
            Some(v) => v.parse().map_err(|_| BenchError(format!("--{key} {v:?} is not a valid number"))),
            None => Ok(default),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.flags.contains_key(key)
    }
}

fn parse_args() -> Result<Option<Opts>, BenchError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(sub) = args.first().cloned() else { return Ok(None) };
    if sub == "-h" || sub == "--help" {
        return Ok(None);
    }
    let mut flags = HashMap::new();
    let mut i = 1;
    while i < args.len() {
        let Some(flag) = args[i].strip_prefix("--") else {
            return Err(BenchError(format!("unexpected argument {:?}", args[i])));
        };
        if matches!(flag, "json" | "against-baseline" | "help") {
            flags.insert(flag.to_string(), String::new());
        } else {
            let value = args.get(i + 1).ok_or_else(|| BenchError(format!("--{flag} needs a value")))?;
            flags.insert(flag.to_string(), value.clone());
            i += 1;
        }
        i += 1;
    }
    if flags.contains_key("help") {
        return Ok(None);
    }
    Ok(Some(Opts { sub, flags }))
}

fn main() -> std::process::ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sluice-bench: {e}\n(see --help)");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn client_error(e: sluice_client::ClientError) -> BenchError {
    BenchError(e.to_string())
}

/// Results of a run, as (name with unit, value) pairs in print order.
#[derive(Default)]
struct Report {
    fields: Vec<(String, f64)>,
}

impl Report {
    fn add(&mut self, name: &str, value: f64) {
        self.fields.push((name.to_string(), value));
    }

    fn latency(&mut self, prefix: &str, l: &LatencySummary) {
        self.add(&format!("{prefix}_p50_us"), l.p50_us as f64);
        self.add(&format!("{prefix}_p90_us"), l.p90_us as f64);
        self.add(&format!("{prefix}_p99_us"), l.p99_us as f64);
        self.add(&format!("{prefix}_p999_us"), l.p999_us as f64);
        self.add(&format!("{prefix}_max_us"), l.max_us as f64);
    }

    fn print(&self, json: bool, title: &str) {
        if json {
            let body: Vec<String> = self.fields.iter().map(|(k, v)| format!("\"{k}\":{}", fmt_num(*v))).collect();
            println!("{{\"benchmark\":\"{title}\",{}}}", body.join(","));
        } else {
            println!("== {title}");
            for (k, v) in &self.fields {
                println!("  {k:<32} {}", fmt_num(*v));
            }
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

async fn run(opts: Opts) -> Result<(), BenchError> {
    let baseline = if opts.has("against-baseline") || opts.sub == "baseline" {
        let dir = PathBuf::from(opts.get("data-dir", "sluice-data"));
        let block = opts.num::<usize>("baseline-block-bytes", 1 << 20)?;
        eprintln!("measuring the machine's limits on {} (block {block} bytes)...", dir.display());
        Some(
            tokio::task::spawn_blocking(move || baseline::measure(&dir, block, 1 << 30, 3.0))
                .await
                .map_err(|e| BenchError(e.to_string()))??,
        )
    } else {
        None
    };
    let json = opts.has("json");
    match opts.sub.as_str() {
        "baseline" => {
            let Some(b) = baseline else { return Err(BenchError("no baseline".into())) };
            if json {
                println!("{}", b.to_json());
            } else {
                print_baseline(&b);
            }
            Ok(())
        }
        "produce" => {
            let mut report = produce(&opts, None).await?;
            add_ratios(&mut report, baseline.as_ref(), "throughput_mb_s");
            report.print(json, "produce");
            Ok(())
        }
        "consume" => {
            let mut report = consume(&opts).await?;
            add_ratios(&mut report, baseline.as_ref(), "throughput_mb_s");
            report.print(json, "consume");
            Ok(())
        }
        "e2e" => {
            let mut report = e2e(&opts).await?;
            add_ratios(&mut report, baseline.as_ref(), "throughput_mb_s");
            report.print(json, "e2e");
            Ok(())
        }
        "rtt" => {
            let report =
                tokio::task::spawn_blocking(move || rtt(&opts)).await.map_err(|e| BenchError(e.to_string()))??;
            report.print(json, "rtt");
            Ok(())
        }
        other => Err(BenchError(format!("unknown subcommand {other:?}"))),
    }
}

fn print_baseline(b: &Baseline) {
    println!("== baseline (no Sluice involved)");
    println!(
        "  direct_write_mb_s                {:.1}   (O_DIRECT, {} byte blocks, QD1)",
        b.direct_write_mb_s, b.block_bytes
    );
    println!("  direct_read_mb_s                 {:.1}", b.direct_read_mb_s);
    println!("  fdatasync_p50_us                 {}", b.fdatasync_latency_us.p50_us);
    println!("  fdatasync_p99_us                 {}", b.fdatasync_latency_us.p99_us);
    println!("  loopback_tcp_mb_s                {:.1}", b.loopback_tcp_mb_s);
}

fn add_ratios(report: &mut Report, baseline: Option<&Baseline>, field: &str) {
    let Some(b) = baseline else { return };
    let Some(&(_, v)) = report.fields.iter().find(|(k, _)| k == field) else { return };
    report.add("baseline_direct_write_mb_s", b.direct_write_mb_s);
    report.add("baseline_direct_read_mb_s", b.direct_read_mb_s);
    report.add("baseline_loopback_tcp_mb_s", b.loopback_tcp_mb_s);
    report.add("ratio_to_direct_write", v / b.direct_write_mb_s);
    report.add("ratio_to_loopback_tcp", v / b.loopback_tcp_mb_s);
}

/// The clients' security settings (`--security-protocol` and its companions).
fn security(opts: &Opts) -> Result<Security, BenchError> {
    let protocol = opts.get("security-protocol", "PLAINTEXT");
    let tls = TlsSettings { ca_file: opts.flags.get("tls-ca").map(Into::into), ..TlsSettings::default() };
    let sasl = opts.flags.get("sasl-username").map(|username| SaslSettings {
        mechanism: opts.get("sasl-mechanism", "SCRAM-SHA-512"),
        username: username.clone(),
        password: std::env::var("SLUICE_SASL_PASSWORD").unwrap_or_default(),
    });
    Security::from_kafka(&protocol, tls, sasl).map_err(client_error)
}

async fn ensure_topic(opts: &Opts) -> Result<(String, u32, Vec<String>), BenchError> {
    let bootstrap: Vec<String> = opts.get("bootstrap", "127.0.0.1:9292").split(',').map(str::to_string).collect();
    let topic = opts.get("topic", "bench");
    let partitions = opts.num::<u32>("partitions", 16)?;
    let replication_factor = opts.num::<u16>("replication-factor", 1)?;
    let configs = match opts.num::<u32>("min-insync", 0)? {
        0 => Vec::new(),
        n => vec![("min.insync.replicas".to_string(), n.to_string())],
    };
    let admin =
        Admin::connect_secured(&bootstrap, security(opts)?, Duration::from_secs(30)).await.map_err(client_error)?;
    match admin.describe_topic(&topic).await.map_err(client_error)?.partitions {
        Ok(p) => Ok((topic, p.len() as u32, bootstrap)),
        Err(_) => {
            let new = NewTopic { name: topic.clone(), partitions, replication_factor, configs };
            admin.create_topic(new).await.map_err(client_error)?;
            // Leaders take a moment to be elected and known everywhere.
            for _ in 0..100 {
                let ready = admin.describe_topic(&topic).await.ok().and_then(|t| t.partitions.ok());
                if ready.is_some_and(|p| p.iter().all(|p| p.leader.is_some())) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Ok((topic, partitions, bootstrap))
        }
    }
}

fn compression(s: &str) -> Result<Compression, BenchError> {
    s.parse().map_err(|e| BenchError(format!("--compression {e}")))
}

/// Keys for records: none, uniform over 10,000, or Zipf(1) over 10,000.
struct Keys {
    kind: String,
    zipf_cdf: Vec<f64>,
    state: u64,
}

impl Keys {
    fn new(kind: &str, seed: u64) -> Result<Keys, BenchError> {
        if !matches!(kind, "none" | "uniform" | "zipf") {
            return Err(BenchError(format!("--keys {kind:?}: none, uniform or zipf")));
        }
        let mut zipf_cdf = Vec::new();
        if kind == "zipf" {
            let total: f64 = (1..=10_000).map(|k| 1.0 / k as f64).sum();
            let mut acc = 0.0;
            for k in 1..=10_000 {
                acc += 1.0 / k as f64 / total;
                zipf_cdf.push(acc);
            }
        }
        Ok(Keys { kind: kind.to_string(), zipf_cdf, state: seed | 1 })
    }

    fn next_random(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn next(&mut self) -> Option<Vec<u8>> {
        let k = match self.kind.as_str() {
            "uniform" => self.next_random() % 10_000,
            "zipf" => {
                let u = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
                self.zipf_cdf.partition_point(|&c| c < u) as u64
            }
            _ => return None,
        };
        Some(format!("key-{k}").into_bytes())
    }
}

/// Shared counters of a run: acknowledged records and bytes, and latencies.
struct Meter {
    records: AtomicU64,
    bytes: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    /// Latencies in this second (progress line).
    window: Mutex<Histogram<u64>>,
    measuring: AtomicBool,
    errors: AtomicU64,
    /// Bytes of every record counted, measured or not (warm-up and drain included).
    bytes_total: AtomicU64,
    /// Transactional producers: each commit's latency (from its call to its answer).
    commits: Mutex<Histogram<u64>>,
}

impl Meter {
    fn new() -> Result<Arc<Meter>, BenchError> {
        Ok(Arc::new(Meter {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            latency: Mutex::new(latency_histogram_us()?),
            window: Mutex::new(latency_histogram_us()?),
            measuring: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            commits: Mutex::new(latency_histogram_us()?),
        }))
    }

    fn record(&self, bytes: u64, latency: Duration) {
        if let Ok(mut w) = self.window.lock() {
            record_latency(&mut w, latency);
        }
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
        if self.measuring.load(Ordering::Relaxed) {
            self.records.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            if let Ok(mut h) = self.latency.lock() {
                record_latency(&mut h, latency);
            }
        }
    }
}

/// Prints a progress line each second until `stop`.
fn progress(meter: Arc<Meter>, what: &'static str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let (mut last_records, mut last_bytes) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (records, bytes) = (meter.records.load(Ordering::Relaxed), meter.bytes.load(Ordering::Relaxed));
            let p99 = meter.window.lock().map(|mut w| {
                let p = w.value_at_quantile(0.99);
                w.reset();
                p
            });
            let phase = if meter.measuring.load(Ordering::Relaxed) { "" } else { " (warm-up)" };
            eprintln!(
                "[{:>4}s] {what}: {} records/s, {:.1} MB/s, p99 {} us{phase}",
                started.elapsed().as_secs(),
                records - last_records,
                (bytes - last_bytes) as f64 / 1e6,
                p99.unwrap_or(0)
            );
            (last_records, last_bytes) = (records, bytes);
        }
    })
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

/// A metric's value from the node's Prometheus endpoint.
fn scrape(address: &str, metric: &str) -> Option<f64> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines().find(|l| l.starts_with(metric) && l[metric.len()..].starts_with(' '))?.rsplit(' ').next()?.parse().ok()
}

/// Node-side numbers to report around a measured window.
struct NodeProbe {
    pid: Option<u32>,
    metrics: Option<String>,
    cpu: Option<f64>,
    /// This process's CPU seconds at the start: the client's cost is part of the product.
    bench_cpu: Option<f64>,
    copied: Option<f64>,
    served: Option<f64>,
}

impl NodeProbe {
    fn start(opts: &Opts) -> Result<NodeProbe, BenchError> {
        let pid = opts
            .flags
            .get("node-pid")
            .map(|p| p.parse::<u32>())
            .transpose()
            .map_err(|_| BenchError("--node-pid".into()))?;
        let metrics = opts.flags.get("metrics").cloned();
        Ok(NodeProbe {
            cpu: pid.and_then(cpu_seconds),
            bench_cpu: cpu_seconds(std::process::id()),
            copied: metrics.as_deref().and_then(|m| scrape(m, "sluice_fetch_bytes_copied_total")),
            served: metrics.as_deref().and_then(|m| scrape(m, "sluice_fetch_bytes_served_total")),
            pid,
            metrics,
        })
    }

    /// Adds the node's and this process's CPU over the run (seconds, cores, microseconds
    /// per record of the `records` it moved, and per batch of the `batches` produced when
    /// known) and the node's fetch copy counters.
    fn finish(&self, report: &mut Report, elapsed: Duration, records: u64, batches: Option<u64>) {
        let mut cpu = |name: &str, pid: Option<u32>, before: Option<f64>| {
            let Some(used) = pid.zip(before).and_then(|(pid, before)| Some(cpu_seconds(pid)? - before)) else {
                return;
            };
            report.add(&format!("{name}_cpu_seconds"), used);
            report.add(&format!("{name}_cpu_cores"), used / elapsed.as_secs_f64());
            report.add(&format!("{name}_cpu_us_per_record"), used * 1e6 / records.max(1) as f64);
            if let Some(batches) = batches {
                report.add(&format!("{name}_cpu_us_per_batch"), used * 1e6 / batches.max(1) as f64);
            }
        };
        cpu("node", self.pid, self.cpu);
        cpu("bench", Some(std::process::id()), self.bench_cpu);
        if let Some(m) = &self.metrics {
            let copied = scrape(m, "sluice_fetch_bytes_copied_total").zip(self.copied).map(|(a, b)| a - b);
            let served = scrape(m, "sluice_fetch_bytes_served_total").zip(self.served).map(|(a, b)| a - b);
            if let (Some(c), Some(s)) = (copied, served) {
                report.add("fetch_bytes_copied_per_byte_served", if s > 0.0 { c / s } else { 0.0 });
            }
        }
    }
}

async fn produce(opts: &Opts, rate_override: Option<u64>) -> Result<Report, BenchError> {
    let (topic, _, bootstrap) = ensure_topic(opts).await?;
    let producers = opts.num::<usize>("producers", 1)?.max(1);
    let record_bytes = opts.num::<usize>("record-bytes", 1024)?;
    let rate = rate_override.unwrap_or(opts.num::<u64>("rate", 0)?);
    let duration = Duration::from_secs_f64(opts.num::<f64>("duration-s", 10.0)?);
    let warmup = Duration::from_secs_f64(opts.num::<f64>("warmup-s", 2.0)?);
    let transaction_records = opts.num::<u64>("transaction-records", 0)?;
    let config = ProducerConfig {
        bootstrap_servers: bootstrap,
        client_id: "sluice-bench".into(),
        security: security(opts)?,
        acks: Acks::parse(&opts.get("acks", "1")).map_err(client_error)?,
        compression: compression(&opts.get("compression", "none"))?,
        batch_size: opts.num("batch-bytes", 16_384)?,
        linger_ms: opts.num("linger-ms", 5)?,
        enable_idempotence: match opts.get("idempotence", "on").as_str() {
            "on" => true,
            "off" => false,
            other => return Err(BenchError(format!("--idempotence {other:?}: on or off"))),
        },
        ..ProducerConfig::default()
    };
    let meter = Meter::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = progress(meter.clone(), "produce", stop.clone());
    let value = sluice_bench::pattern(record_bytes);
    let mut tasks = Vec::new();
    // Clones of the producers, to count the batches they send in the measured window.
    let mut handles = Vec::new();
    for i in 0..producers {
        let mut config = config.clone();
        if transaction_records > 0 {
            config.transactional_id = Some(format!("sluice-bench-{}-{i}", std::process::id()));
        }
        let producer = Producer::new(config).await.map_err(client_error)?;
        if transaction_records > 0 {
            producer.init_transactions().await.map_err(client_error)?;
            producer.begin_transaction().map_err(client_error)?;
        }
        handles.push(producer.clone());
        let (meter, stop, topic, value) = (meter.clone(), stop.clone(), topic.clone(), value.clone());
        let mut keys = Keys::new(&opts.get("keys", "none"), 0x9e37_79b9 + i as u64)?;
        let per_producer_rate = rate as f64 / producers as f64;
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // At a fixed rate, latency counts from when the record should have gone.
                let intended = if per_producer_rate > 0.0 {
                    let at = started + Duration::from_secs_f64(sent as f64 / per_producer_rate);
                    tokio::time::sleep_until(at.into()).await;
                    at
                } else {
                    Instant::now()
                };
                let mut record = ProducerRecord::new(topic.clone(), value.clone());
                record.key = keys.next();
                let delivered = meter.clone();
                let bytes = value.len() as u64;
                let sent_ok = producer
                    .send_with_callback(record, move |r| match r {
                        Ok(_) => delivered.record(bytes, intended.elapsed()),
                        Err(_) => {
                            delivered.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .await;
                if sent_ok.is_err() {
                    break;
                }
                sent += 1;
                if transaction_records > 0 && sent.is_multiple_of(transaction_records) {
                    let asked = Instant::now();
                    let committed = producer.commit_transaction().await;
                    if committed.is_err() || producer.begin_transaction().is_err() {
                        meter.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    if meter.measuring.load(Ordering::Relaxed) {
                        if let Ok(mut h) = meter.commits.lock() {
                            let _ = h.record(u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
                        }
                    }
                }
            }
            if transaction_records > 0 {
                let _ = producer.commit_transaction().await;
            }
            producer.flush().await;
            producer.close().await;
        }));
    }
    let batches_sent = || handles.iter().map(|p| p.stats().batches).sum::<u64>();
    tokio::time::sleep(warmup).await;
    let probe = NodeProbe::start(opts)?;
    let batches_before = batches_sent();
    meter.measuring.store(true, Ordering::Relaxed);
    let measured_from = Instant::now();
    match opts.num::<u64>("total-mib", 0)? {
        0 => tokio::time::sleep(duration).await,
        mib => {
            // Bounded: the byte count is reached, or 10 minutes pass.
            while meter.bytes.load(Ordering::Relaxed) < mib << 20 && measured_from.elapsed() < Duration::from_secs(600)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    meter.measuring.store(false, Ordering::Relaxed);
    let elapsed = measured_from.elapsed();
    let batches = batches_sent() - batches_before;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let _ = ticker.await;
    let records = meter.records.load(Ordering::Relaxed);
    let bytes = meter.bytes.load(Ordering::Relaxed);
    let latency = meter.latency.lock().map(|h| LatencySummary::of(&h)).unwrap_or_default();
    let mut report = Report::default();
    report.add("producers", producers as f64);
    report.add("record_bytes", record_bytes as f64);
    report.add("target_rate_records_s", rate as f64);
    report.add("records", records as f64);
    report.add("throughput_records_s", records as f64 / elapsed.as_secs_f64());
    report.add("throughput_mb_s", mb_per_s(bytes, elapsed));
    report.latency("ack_latency", &latency);
    report.add("errors", meter.errors.load(Ordering::Relaxed) as f64);
    report.add("value_bytes_acked_total", meter.bytes_total.load(Ordering::Relaxed) as f64);
    // Sent in the measured window (retries count again), against the records acknowledged in it.
    report.add("batches", batches as f64);
    report.add("records_per_batch", records as f64 / batches.max(1) as f64);
    if transaction_records > 0 {
        let commits = meter.commits.lock().map(|h| LatencySummary::of(&h)).unwrap_or_default();
        report.add("transaction_records", transaction_records as f64);
        report.add("transactions_committed", commits.count as f64);
        report.latency("commit_latency", &commits);
    }
    probe.finish(&mut report, elapsed, records, Some(batches));
    Ok(report)
}

async fn consume(opts: &Opts) -> Result<Report, BenchError> {
    let (topic, partitions, bootstrap) = ensure_topic(opts).await?;
    let security = security(opts)?;
    let consumers = opts.num::<usize>("consumers", 1)?.max(1);
    let start = opts.get("start", "earliest");
    let tail_bytes = opts.num::<u64>("tail-mib", 16)? << 20;
    let record_bytes = opts.num::<u64>("record-bytes", 1024)?.max(1);
    let duration = Duration::from_secs_f64(opts.num::<f64>("duration-s", 10.0)?);
    let meter = Meter::new()?;
    meter.measuring.store(true, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = progress(meter.clone(), "consume", stop.clone());
    let probe = NodeProbe::start(opts)?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..consumers {
        let (mine, config) = consumer_share(&bootstrap, &security, partitions, consumers, c, OffsetReset::Earliest);
        let (meter, stop, topic, start) = (meter.clone(), stop.clone(), topic.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let mut consumer = Consumer::new(config).await?;
            consumer.assign(mine.iter().map(|&p| (topic.clone(), p)).collect());
            let mut ends = HashMap::new();
            for &p in &mine {
                let end = consumer.seek(&topic, p, SeekTo::End).await?;
                ends.insert(p, end);
                let to = if start == "tail" {
                    SeekTo::Offset(end.saturating_sub(tail_bytes / record_bytes))
                } else {
                    SeekTo::Beginning
                };
                consumer.seek(&topic, p, to).await?;
            }
            // Read until every partition reaches the end it had at the start.
            while !stop.load(Ordering::Relaxed) {
                let records = consumer.poll(Duration::from_millis(200)).await?;
                // A poll's records arrived together: one clock read for all of them.
                let now = now_ms();
                for r in &records {
                    let latency = Duration::from_millis(u64::try_from(now - r.timestamp_ms).unwrap_or(0));
                    meter.record(r.value.as_ref().map_or(0, Vec::len) as u64, latency);
                }
                if mine.iter().all(|&p| consumer.position(&topic, p).unwrap_or(0) >= ends[&p]) {
                    break;
                }
            }
            Ok::<(), sluice_client::ClientError>(())
        }));
    }
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    let all = futures_join(tasks);
    tokio::pin!(all);
    let finished = tokio::select! {
        r = &mut all => Some(r),
        () = &mut deadline => None,
    };
    stop.store(true, Ordering::Relaxed);
    if let Some(results) = finished {
        for r in results {
            r.map_err(|e| BenchError(e.to_string()))?.map_err(client_error)?;
        }
    }
    let elapsed = started.elapsed();
    let _ = ticker.await;
    let records = meter.records.load(Ordering::Relaxed);
    let bytes = meter.bytes.load(Ordering::Relaxed);
    let mut report = Report::default();
    report.add("consumers", consumers as f64);
    report.add("records", records as f64);
    report.add("seconds", elapsed.as_secs_f64());
    report.add("throughput_records_s", records as f64 / elapsed.as_secs_f64());
    report.add("throughput_mb_s", mb_per_s(bytes, elapsed));
    probe.finish(&mut report, elapsed, records, None);
    Ok(report)
}

/// Consumer `c` of `consumers`: its partitions (round-robin) and its settings.
fn consumer_share(
    bootstrap: &[String],
    security: &Security,
    partitions: u32,
    consumers: usize,
    c: usize,
    reset: OffsetReset,
) -> (Vec<u32>, ConsumerConfig) {
    let mine = (0..partitions).filter(|p| *p as usize % consumers == c).collect();
    let config = ConsumerConfig {
        bootstrap_servers: bootstrap.to_vec(),
        security: security.clone(),
        client_id: format!("sluice-bench-{c}"),
        auto_offset_reset: reset,
        fetch_max_wait_ms: 100,
        ..ConsumerConfig::default()
    };
    (mine, config)
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await);
    }
    out
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

async fn e2e(opts: &Opts) -> Result<Report, BenchError> {
    let (topic, partitions, bootstrap) = ensure_topic(opts).await?;
    let security = security(opts)?;
    let rate = opts.num::<u64>("rate", 10_000)?;
    if rate == 0 {
        return Err(BenchError("e2e needs a fixed --rate".into()));
    }
    let warmup = opts.num::<f64>("warmup-s", 2.0)?;
    // Consumers at the tail, measuring from each record's create timestamp.
    let meter = Meter::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    let consumers = opts.num::<usize>("consumers", 1)?.max(1);
    let mut tasks = Vec::new();
    for c in 0..consumers {
        let (mine, config) = consumer_share(&bootstrap, &security, partitions, consumers, c, OffsetReset::Latest);
        let (meter, stop, topic) = (meter.clone(), stop.clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            let mut consumer = Consumer::new(config).await?;
            consumer.assign(mine.iter().map(|&p| (topic.clone(), p)).collect());
            for &p in &mine {
                consumer.seek(&topic, p, SeekTo::End).await?;
            }
            while !stop.load(Ordering::Relaxed) {
                let records = consumer.poll(Duration::from_millis(200)).await?;
                // A poll's records arrived together: one clock read for all of them.
                let now = now_ms();
                for r in records {
                    let latency_ms = now - r.timestamp_ms;
                    meter.record(
                        r.value.as_ref().map_or(0, Vec::len) as u64,
                        Duration::from_millis(latency_ms.max(0) as u64),
                    );
                }
            }
            Ok::<(), sluice_client::ClientError>(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let measuring = meter.clone();
    let switch = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
        measuring.measuring.store(true, Ordering::Relaxed);
    });
    let mut report = produce(opts, Some(rate)).await?;
    let _ = switch.await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let latency = meter.latency.lock().map(|h| LatencySummary::of(&h)).unwrap_or_default();
    report.add("e2e_records", meter.records.load(Ordering::Relaxed) as f64);
    report.latency("e2e_latency", &latency);
    Ok(report)
}

/// Round trips of the smallest request (ApiVersions, a 52-byte frame) through the node,
/// next to a 64-byte ping-pong with a plain blocking TCP echo server, in the same run.
/// The client runs on CPU 0 and the echo server on CPU 1 (when there are two), so the
/// echo crosses cores as a request to the node usually does; on one core the echo's
/// same-core hand-off would make it look several times faster than any real server.
fn rtt(opts: &Opts) -> Result<Report, BenchError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 1 {
        sluice_bench::pin_current_thread(0)?;
    }
    use sluice_schemas::wire;
    let requests = opts.num::<u64>("requests", 20_000)?;
    let address = opts.get("bootstrap", "127.0.0.1:9292");
    // Plain echo server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError(e.to_string()))?;
    let echo_address = listener.local_addr().map_err(|e| BenchError(e.to_string()))?;
    std::thread::spawn(move || {
        if cores > 1 {
            let _ = sluice_bench::pin_current_thread(1);
        }
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 64];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
        }
    });
    let mut echo = std::net::TcpStream::connect(echo_address).map_err(|e| BenchError(e.to_string()))?;
    echo.set_nodelay(true).map_err(|e| BenchError(e.to_string()))?;
    let mut echo_h = latency_histogram_us()?;
    let ping = [7u8; 64];
    let mut pong = [0u8; 64];
    for _ in 0..requests {
        let t = Instant::now();
        echo.write_all(&ping).map_err(|e| BenchError(e.to_string()))?;
        echo.read_exact(&mut pong).map_err(|e| BenchError(e.to_string()))?;
        record_latency(&mut echo_h, t.elapsed());
    }
    // The node: ApiVersions requests on one connection, one at a time.
    let mut node =
        std::net::TcpStream::connect(&address).map_err(|e| BenchError(format!("connecting to {address}: {e}")))?;
    node.set_nodelay(true).map_err(|e| BenchError(e.to_string()))?;
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let body = wire::ApiVersionsRequest::create(&mut b, &wire::ApiVersionsRequestArgs {});
    let envelope =
        wire::finish_request(&mut b, 1, 0, None, wire::RequestBody::ApiVersionsRequest, body.as_union_value());
    let frame = wire::frame(envelope, &[]);
    let mut node_h = latency_histogram_us()?;
    let mut header = [0u8; wire::FRAME_HEADER_BYTES];
    let mut body_buf = Vec::new();
    for _ in 0..requests {
        let t = Instant::now();
        node.write_all(&frame).map_err(|e| BenchError(e.to_string()))?;
        node.read_exact(&mut header).map_err(|e| BenchError(e.to_string()))?;
        let h = wire::FrameHeader::parse(&header, 1 << 20).map_err(|e| BenchError(e.to_string()))?;
        body_buf.resize(h.body_bytes() as usize, 0);
        node.read_exact(&mut body_buf).map_err(|e| BenchError(e.to_string()))?;
        record_latency(&mut node_h, t.elapsed());
    }
    let (e, n) = (LatencySummary::of(&echo_h), LatencySummary::of(&node_h));
    let mut report = Report::default();
    report.add("requests", requests as f64);
    report.add("request_frame_bytes", frame.len() as f64);
    report.latency("echo_rtt", &e);
    report.latency("node_rtt", &n);
    report.add("node_to_echo_p50_ratio", n.p50_us as f64 / e.p50_us.max(1) as f64);
    report.add("node_to_echo_p99_ratio", n.p99_us as f64 / e.p99_us.max(1) as f64);
    Ok(report)
}
