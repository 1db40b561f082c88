//! `sluice`: the command-line tool for topics, producing and consuming, users and ACLs
//! (like kcat and rpk). Exit codes a script can rely on: 0 success, 1 the operation failed
//! (the message says why; a refused login too), 2 bad usage, 3 no node could be reached.
//!
//! The global flags (bootstrap servers and security) are in `sluice/global.rs`, the user
//! and acl commands in `sluice/access.rs`, the partition and node commands (moves, drains)
//! in `sluice/moves.rs`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "sluice/access.rs"]
mod access;
#[path = "sluice/global.rs"]
mod global;
#[path = "sluice/moves.rs"]
mod moves;

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_client::consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, SeekTo};
use sluice_client::group::{GroupConfig, GroupConsumer};
use sluice_client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use sluice_client::{ClientError, NewTopic};
use sluice_schemas::batch::Compression;

use crate::global::Global;

const USAGE: &str = "\
sluice: the Sluice command-line tool

usage: sluice [--bootstrap HOST:PORT[,HOST:PORT...]] [SECURITY FLAGS] COMMAND ...

commands:
  topic create NAME --partitions N [--replication-factor R] [--config KEY=VALUE]...
  topic list
  topic describe NAME
  topic delete NAME
  topic add-partitions NAME --partitions N      (partitions can only be added)
  topic config NAME [--set KEY=VALUE]... [--delete KEY]...   (no flags: show)
  topic delete-records NAME --partition P --offset N|end   (records below N become
                            unreadable; their whole segments are deleted)
  produce TOPIC [--acks 0|1|all] [--key-separator SEP] [--compression none|gzip|snappy|lz4|zstd]
                [--partition P] [--header KEY=VALUE]...
      one record per line of stdin; with --key-separator the text before the first
      separator is the key. With --acks all (the default) the producer is idempotent:
      a record retried after a failure is stored once. A summary goes to stderr.
  consume TOPIC [--partition P] [--offset beginning|end|N] [--max-messages N]
                [--timeout-ms T] [--format FMT] [--isolation-level read_uncommitted|read_committed]
                [--group G [--session-timeout-ms N] [--heartbeat-interval-ms N]
                 [--strategy range|roundrobin|cooperative-sticky]]
      prints records to stdout. Stops after --max-messages, or when no record came for
      --timeout-ms; otherwise follows the topic until interrupted.
      FMT tokens (kcat's): %t topic, %p partition, %o offset, %k key, %s value,
      %T timestamp (ms), %h headers (k=v,...), \\n newline, \\t tab. Default: \"%s\\n\".
      With --group it joins consumer group G (the group assigns partitions and the
      consumer starts at the committed offsets, or the beginning) and commits after
      printing each batch of records. read_committed (default read_uncommitted) prints
      only committed transactions' records and stops at an open transaction.
  cluster status            the controller, the live nodes, and the partitions that are
                            offline (no leader) or under-replicated (ISR below replicas)
  cluster balance [--dry-run] [--wait [--timeout-ms T]]
                            evens out the live nodes: moves replicas from the nodes with
                            the most to those with the fewest (until they differ by one at
                            most), then spreads preferred leaders (leaderships follow)
  partition move TOPIC:P=ID,ID,... ... [--wait [--timeout-ms T]]
                            moves each partition to those replicas (the first preferred
                            as leader), as kafka-reassign-partitions: the new replicas
                            copy the log and join the ISR, then the others leave and
                            delete their copies. Returns once the moves started; --wait
                            until they are done (default 10 min)
  partition cancel TOPIC:P ... [--wait]   cancels moves in progress (back to the replicas
                            each had before)
  partition moves [TOPIC...]   the moves in progress: replicas, adding, removing
  node drain ID [--dry-run] [--wait [--timeout-ms T]]
                            moves every replica node ID holds to the other live nodes
                            (each to the least loaded one the partition is not on); its
                            leaderships move with them. --dry-run prints the plan
  node remove ID            forgets node ID once it is stopped for good and holds no
                            replica (Kafka's UnregisterBroker; not a controller voter),
                            and takes it out of the controller quorum; if it starts
                            again it joins again
  controller status         the controller quorum: its leader, voters and learners (the
                            nodes that follow its log without voting)
  controller add-voter ID   makes node ID (one that joined: sluice-node --join) a
                            controller voter once it caught up with the log
  controller remove-voter ID
                            takes node ID's vote away (it keeps following the log; the
                            controller hands its leadership over first), one at a time
  group list
  group describe G [--isolation-level read_uncommitted|read_committed]
                            members, assignment, and per partition committed offset,
                            log end and lag; read_committed counts to the last stable
                            offset (an open transaction's records are not lag)
  group reset-offsets G --topic T --to earliest|latest|N   (only while G has no members)
  group delete G            (only while G has no members)
  transaction list          every transactional id: state, producer id and epoch,
                            how long its transaction has been open
  transaction describe ID   its state, timeout and the partitions of its transaction
  transaction abort ID      aborts its ongoing (hanging) transaction and fences its
                            producer; read_committed consumers move past it
  user create NAME [--mechanism SCRAM-SHA-256|SCRAM-SHA-512] [--iterations N] [--password P]
                            creates a SCRAM user (default SCRAM-SHA-512, 4096 iterations);
                            the password comes from $SLUICE_USER_PASSWORD (safer: not in
                            the process list or shell history) or --password
  user password NAME ...    sets a user's password (the same flags as create)
  user delete NAME [--mechanism M]   deletes the user's credential for M (default: all)
  user list [NAME...]       one line per credential: NAME MECHANISM iterations=N
  acl add --principal User:NAME (--topic T | --group G | --transactional-id ID | --cluster)
          --operation OP[,OP...] [--prefixed] [--deny] [--host H]
                            allows (or with --deny denies) the operations; the name is
                            literal unless --prefixed; host * unless --host. Operations:
                            all, read, write, create, delete, alter, describe,
                            cluster_action, describe_configs, alter_configs,
                            idempotent_write
  acl list [--principal P] [--topic T | --group G | --transactional-id ID | --cluster]
           [--operation OP[,OP...]] [--host H] [--literal | --prefixed | --match]
           [--allow | --deny]
                            the entries matching every selector given (none: all), one a
                            line: User:alice ALLOW READ topic orders LITERAL host=*;
                            --match: the entries that apply to the named resource
  acl remove [the selectors of list] [--all]
                            removes the entries list would show, and prints them; with
                            no selector, only with --all (every entry)

Security flags (anywhere on the line; as Kafka's client settings):
  --security-protocol PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL   (default PLAINTEXT)
  --sasl-mechanism SCRAM-SHA-256|SCRAM-SHA-512|PLAIN           (default SCRAM-SHA-512)
  --sasl-username U
  --sasl-password P         prefer $SLUICE_SASL_PASSWORD: a flag shows in the process
                            list and the shell history
  --tls-ca FILE             the CA (PEM) that signed the nodes' certificates (SSL, SASL_SSL)
  --tls-cert FILE --tls-key FILE   a client certificate (PEM), for mutual TLS

The bootstrap address also comes from $SLUICE_BOOTSTRAP (default 127.0.0.1:9292), and
the security settings from $SLUICE_SECURITY_PROTOCOL, $SLUICE_SASL_MECHANISM,
$SLUICE_SASL_USERNAME and $SLUICE_SASL_PASSWORD (a flag wins over its variable).
Exit codes: 0 success, 1 the operation failed (a refused login too), 2 bad usage,
3 no node reachable.";

enum Failure {
    Usage(String),
    Failed(String),
    Unreachable(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Connect { .. } => Failure::Unreachable(e.to_string()),
            // A node was reached and refused the login: the operation failed.
            ClientError::Authentication(_) => Failure::Failed(e.to_string()),
            other => Failure::Failed(other.to_string()),
        }
    }
}

/// Command-line arguments after the command words: flags (repeatable) and positionals.
struct Args {
    positional: Vec<String>,
    flags: Vec<(String, String)>,
}

impl Args {
    fn parse(words: &[String], boolean_flags: &[&str]) -> Result<Args, Failure> {
        let mut positional = Vec::new();
        let mut flags = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let w = &words[i];
            if let Some(flag) = w.strip_prefix("--") {
                if let Some((k, v)) = flag.split_once('=') {
                    flags.push((k.to_string(), v.to_string()));
                } else if boolean_flags.contains(&flag) {
                    flags.push((flag.to_string(), String::new()));
                } else {
                    let v = words.get(i + 1).ok_or_else(|| Failure::Usage(format!("--{flag} needs a value")))?;
                    flags.push((flag.to_string(), v.clone()));
                    i += 1;
                }
            } else {
                positional.push(w.clone());
            }
            i += 1;
        }
        Ok(Args { positional, flags })
    }

    fn one(&self, key: &str) -> Option<&str> {
        self.flags.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.flags.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    fn only(&self, allowed: &[&str]) -> Result<(), Failure> {
        match self.flags.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(Failure::Usage(format!("unknown flag --{k} (see --help)"))),
            None => Ok(()),
        }
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Failure> {
        self.one(key)
            .map(|v| v.parse::<T>().map_err(|_| Failure::Usage(format!("--{key} {v:?} is not a valid number"))))
            .transpose()
    }

    fn name(&self, what: &str) -> Result<String, Failure> {
        self.positional.first().cloned().ok_or_else(|| Failure::Usage(format!("missing {what}")))
    }
}

fn key_value(s: &str, flag: &str) -> Result<(String, String), Failure> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| Failure::Usage(format!("--{flag} {s:?} is not KEY=VALUE")))
}

fn compression(s: &str) -> Result<Compression, Failure> {
    s.parse().map_err(|e| Failure::Usage(format!("--compression {e}")))
}

fn main() -> ExitCode {
    // Like other Unix tools, stop quietly when the reader of stdout goes away
    // (`sluice consume ... | head`), instead of failing on the broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let mut words: Vec<String> = std::env::args().skip(1).collect();
    if words.is_empty() || words.iter().any(|w| w == "-h" || w == "--help" || w == "help") {
        println!("{USAGE}");
        return if words.is_empty() { ExitCode::from(2) } else { ExitCode::SUCCESS };
    }
    let global = match Global::take(&mut words, &|name| std::env::var(name).ok()) {
        Ok(g) => g,
        Err(e) => return finish(Err(e)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return finish(Err(Failure::Failed(format!("starting the runtime: {e}")))),
    };
    finish(runtime.block_on(run(&global, words)))
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("sluice: {m}\n(run `sluice --help` for usage)");
            ExitCode::from(2)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("sluice: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(m)) => {
            eprintln!("sluice: {m}");
            ExitCode::from(3)
        }
    }
}

async fn run(global: &Global, words: Vec<String>) -> Result<(), Failure> {
    match words.first().map(String::as_str) {
        Some("topic") => topic(global, &words[1..]).await,
        Some("group") => group(global, &words[1..]).await,
        Some("produce") => produce(global, &words[1..]).await,
        Some("consume") => consume(global, &words[1..]).await,
        Some("cluster") => cluster(global, &words[1..]).await,
        Some("transaction") => transaction(global, &words[1..]).await,
        Some("user") => access::user(global, &words[1..]).await,
        Some("acl") => access::acl(global, &words[1..]).await,
        Some("partition") => moves::partition(global, &words[1..]).await,
        Some("node") => moves::node(global, &words[1..]).await,
        Some("controller") => moves::controller(global, &words[1..]).await,
        Some(other) => Err(Failure::Usage(format!("unknown command {other:?}"))),
        None => Err(Failure::Usage("missing command".into())),
    }
}

/// `cluster status`: the live nodes, the controller, and the partitions that are offline
/// (no leader) or under-replicated (fewer in sync than replicas).
async fn cluster(global: &Global, words: &[String]) -> Result<(), Failure> {
    match words.first().map(String::as_str) {
        Some("status") => {}
        Some("balance") => return moves::balance(global, &words[1..]).await,
        Some(other) => return Err(Failure::Usage(format!("unknown cluster subcommand {other:?}"))),
        None => return Err(Failure::Usage("cluster needs a subcommand".into())),
    }
    Args::parse(&words[1..], &[])?.only(&[])?;
    let metadata = global.admin().await?.metadata(None).await?;
    let controller = metadata.controller_id.map_or_else(|| "none elected".to_string(), |c| format!("node {c}"));
    println!("controller: {controller}");
    println!("live nodes: {}", metadata.nodes.len());
    for node in &metadata.nodes {
        println!("  node {}: {}:{}", node.node_id, node.host, node.port);
    }
    let (mut total, mut offline, mut under) = (0, Vec::new(), Vec::new());
    for topic in &metadata.topics {
        let Ok(partitions) = &topic.partitions else { continue };
        for p in partitions {
            total += 1;
            let name = format!("{}-{}", topic.name, p.partition);
            if p.leader.is_none() {
                offline.push(format!("  {name}: no leader, replicas {:?}, isr {:?}", p.replicas, p.isr));
            } else if p.isr.len() < p.replicas.len() {
                under.push(format!("  {name}: isr {:?} of replicas {:?}", p.isr, p.replicas));
            }
        }
    }
    println!("partitions: {total}, offline: {}, under-replicated: {}", offline.len(), under.len());
    for line in offline.iter().chain(&under) {
        println!("{line}");
    }
    Ok(())
}

async fn topic(global: &Global, words: &[String]) -> Result<(), Failure> {
    let Some(sub) = words.first() else { return Err(Failure::Usage("topic needs a subcommand".into())) };
    let args = Args::parse(&words[1..], &[])?;
    // Each subcommand checks its arguments before it connects: bad usage is exit code 2
    // whether or not a node is reachable.
    let connect = || global.admin();
    match sub.as_str() {
        "create" => {
            args.only(&["partitions", "replication-factor", "config"])?;
            let name = args.name("topic name")?;
            let partitions =
                args.number::<u32>("partitions")?.ok_or_else(|| Failure::Usage("--partitions is required".into()))?;
            let replication_factor = args.number::<u16>("replication-factor")?.unwrap_or(1);
            let configs = args.all("config").iter().map(|c| key_value(c, "config")).collect::<Result<Vec<_>, _>>()?;
            let admin = connect().await?;
            admin.create_topic(NewTopic { name: name.clone(), partitions, replication_factor, configs }).await?;
            eprintln!("created topic {name} with {partitions} partitions");
        }
        "list" => {
            args.only(&[])?;
            let admin = connect().await?;
            for name in admin.list_topics().await? {
                println!("{name}");
            }
        }
        "describe" => {
            args.only(&[])?;
            let name = args.name("topic name")?;
            let admin = connect().await?;
            let info = admin.describe_topic(&name).await?;
            let partitions = info.partitions?;
            println!("topic {name}: {} partitions", partitions.len());
            for p in partitions {
                let leader = p.leader.map_or_else(|| "none".to_string(), |l| l.to_string());
                println!("  partition {}: leader {leader}, replicas {:?}, isr {:?}", p.partition, p.replicas, p.isr);
            }
        }
        "delete" => {
            args.only(&[])?;
            let name = args.name("topic name")?;
            let admin = connect().await?;
            admin.delete_topic(&name).await?;
            eprintln!("deleted topic {name}");
        }
        "delete-records" => {
            args.only(&["partition", "offset"])?;
            let name = args.name("topic name")?;
            let partition =
                args.number::<u32>("partition")?.ok_or_else(|| Failure::Usage("--partition is required".into()))?;
            let offset = match args.one("offset").ok_or_else(|| Failure::Usage("--offset is required".into()))? {
                "end" => -1,
                n => n.parse::<u64>().map_err(|_| Failure::Usage(format!("--offset {n:?}: an offset or end")))? as i64,
            };
            let admin = connect().await?;
            let start = admin.delete_records(&name, partition, offset).await?;
            eprintln!("{name}-{partition} now starts at offset {start}");
        }
        "add-partitions" => {
            args.only(&["partitions"])?;
            let name = args.name("topic name")?;
            let count =
                args.number::<u32>("partitions")?.ok_or_else(|| Failure::Usage("--partitions is required".into()))?;
            let admin = connect().await?;
            admin.add_partitions(&name, count).await?;
            eprintln!("topic {name} now has {count} partitions");
        }
        "config" => {
            args.only(&["set", "delete"])?;
            let name = args.name("topic name")?;
            let set = args.all("set").iter().map(|c| key_value(c, "set")).collect::<Result<Vec<_>, _>>()?;
            let delete: Vec<String> = args.all("delete").iter().map(|s| s.to_string()).collect();
            let admin = connect().await?;
            if !set.is_empty() || !delete.is_empty() {
                admin.alter_configs(&name, &set, &delete).await?;
            }
            for c in admin.describe_configs(&name).await? {
                let origin = if c.is_default { " (default)" } else { "" };
                println!("{}={}{origin}", c.key, c.value);
            }
        }
        other => return Err(Failure::Usage(format!("unknown topic subcommand {other:?}"))),
    }
    Ok(())
}

async fn produce(global: &Global, words: &[String]) -> Result<(), Failure> {
    let args = Args::parse(words, &[])?;
    args.only(&["acks", "key-separator", "compression", "partition", "header"])?;
    let topic = args.name("topic")?;
    let acks = Acks::parse(args.one("acks").unwrap_or("all")).map_err(|e| Failure::Usage(e.to_string()))?;
    let headers = args.all("header").iter().map(|h| key_value(h, "header")).collect::<Result<Vec<_>, _>>()?;
    let config = ProducerConfig {
        bootstrap_servers: global.servers.clone(),
        security: global.security.clone(),
        client_id: "sluice-cli".into(),
        acks,
        compression: compression(args.one("compression").unwrap_or("none"))?,
        ..ProducerConfig::default()
    };
    let partition = args.number::<u32>("partition")?;
    let separator = args.one("key-separator").map(str::to_string);
    let producer = Producer::new(config).await?;
    let started = Instant::now();
    let mut deliveries = Vec::new();
    let (mut lines, mut bytes) = (0u64, 0u64);
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Failure::Failed(format!("reading stdin: {e}")))?;
        let (key, value) = match &separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.as_bytes().to_vec()), v.as_bytes().to_vec()),
                None => (None, line.as_bytes().to_vec()),
            },
            None => (None, line.as_bytes().to_vec()),
        };
        bytes += value.len() as u64;
        let mut record =
            ProducerRecord { topic: topic.clone(), partition, key, value: Some(value), ..ProducerRecord::default() };
        for (k, v) in &headers {
            record = record.header(k.clone(), v.as_bytes().to_vec());
        }
        deliveries.push(producer.send(record).await?);
        lines += 1;
    }
    producer.flush().await;
    let mut failed = 0u64;
    let mut first_error = None;
    for d in deliveries {
        if let Err(e) = d.await {
            failed += 1;
            first_error.get_or_insert(e);
        }
    }
    producer.close().await;
    let elapsed = started.elapsed();
    eprintln!(
        "produced {} of {lines} records ({bytes} value bytes) to {topic} in {:.3} s (acks={})",
        lines - failed,
        elapsed.as_secs_f64(),
        args.one("acks").unwrap_or("all")
    );
    match first_error {
        Some(e) => Err(Failure::Failed(format!("{failed} records failed; first error: {e}"))),
        None => Ok(()),
    }
}

/// Where `consume` reads from: assigned partitions, or a consumer group.
enum Source {
    Plain(Box<Consumer>),
    Group(Box<GroupConsumer>),
}

impl Source {
    async fn poll(&mut self, wait: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        match self {
            Source::Plain(c) => c.poll(wait).await,
            Source::Group(g) => g.poll(wait).await,
        }
    }
}

async fn consume(global: &Global, words: &[String]) -> Result<(), Failure> {
    let args = Args::parse(words, &[])?;
    args.only(&[
        "partition",
        "offset",
        "max-messages",
        "timeout-ms",
        "format",
        "group",
        "session-timeout-ms",
        "heartbeat-interval-ms",
        "strategy",
        "isolation-level",
    ])?;
    let isolation_level =
        sluice_client::consumer::IsolationLevel::parse(args.one("isolation-level").unwrap_or("read_uncommitted"))
            .map_err(|e| Failure::Usage(e.to_string()))?;
    let topic = args.name("topic")?;
    let max_messages = args.number::<u64>("max-messages")?;
    let idle_timeout = args.number::<u64>("timeout-ms")?.map(Duration::from_millis);
    let format = args.one("format").unwrap_or("%s\\n").to_string();
    let offset = args.one("offset").unwrap_or("beginning");
    let seek = match offset {
        "beginning" => SeekTo::Beginning,
        "end" => SeekTo::End,
        n => SeekTo::Offset(
            n.parse().map_err(|_| Failure::Usage(format!("--offset {n:?}: beginning, end or a number")))?,
        ),
    };
    let group = args.one("group").map(str::to_string);
    if group.is_some() && (args.one("partition").is_some() || args.one("offset").is_some()) {
        return Err(Failure::Usage("--group takes no --partition or --offset: the group assigns partitions".into()));
    }
    let group_config = match &group {
        Some(g) => Some(GroupConfig {
            group_id: g.clone(),
            session_timeout_ms: args.number::<u32>("session-timeout-ms")?.unwrap_or(10_000),
            heartbeat_interval_ms: args.number::<u64>("heartbeat-interval-ms")?.unwrap_or(1_000),
            strategy: args.one("strategy").unwrap_or("cooperative-sticky").to_string(),
            // Offsets are committed after each printed batch instead.
            enable_auto_commit: false,
            ..GroupConfig::default()
        }),
        None => None,
    };
    let config = ConsumerConfig {
        bootstrap_servers: global.servers.clone(),
        security: global.security.clone(),
        client_id: "sluice-cli".into(),
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 200,
        isolation_level,
        ..ConsumerConfig::default()
    };
    let mut source = match group_config {
        Some(gc) => {
            let mut g = GroupConsumer::new(config, gc).await?;
            g.subscribe(vec![topic.clone()]).await?;
            Source::Group(Box::new(g))
        }
        None => {
            let partition = args.number::<u32>("partition")?;
            let mut consumer = Consumer::new(config).await?;
            let partitions: Vec<u32> = match partition {
                Some(p) => vec![p],
                None => {
                    let admin = global.admin().await?;
                    let info = admin.describe_topic(&topic).await?;
                    info.partitions?.iter().map(|p| p.partition).collect()
                }
            };
            consumer.assign(partitions.iter().map(|&p| (topic.clone(), p)).collect());
            for &p in &partitions {
                consumer.seek(&topic, p, seek).await?;
            }
            Source::Plain(Box::new(consumer))
        }
    };
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let stdout = std::io::stdout();
    loop {
        if max_messages.is_some_and(|m| printed >= m) {
            break;
        }
        if idle_timeout.is_some_and(|t| last_record.elapsed() >= t) {
            break;
        }
        let wait = idle_timeout.map_or(Duration::from_millis(500), |t| {
            t.saturating_sub(last_record.elapsed()).min(Duration::from_millis(500))
        });
        // SIGINT or SIGTERM end the loop, so a group member leaves at once and its
        // partitions move without waiting for its session to expire.
        let records = tokio::select! {
            r = source.poll(wait) => r?,
            () = stop_signal() => break,
        };
        if !records.is_empty() {
            last_record = Instant::now();
        }
        let mut committed_up_to = Vec::new();
        {
            let mut out = stdout.lock();
            for r in records {
                if max_messages.is_some_and(|m| printed >= m) {
                    break;
                }
                out.write_all(&render(&format, &r)).map_err(|e| Failure::Failed(format!("writing stdout: {e}")))?;
                committed_up_to.retain(|(t, p, _): &(String, u32, u64)| !(t == &r.topic && *p == r.partition));
                committed_up_to.push((r.topic.clone(), r.partition, r.offset + 1));
                printed += 1;
            }
            out.flush().map_err(|e| Failure::Failed(format!("writing stdout: {e}")))?;
        }
        // In a group: commit what was printed (at-least-once: a crash before this
        // commit re-delivers these records to the partition's next owner).
        if let Source::Group(g) = &mut source {
            if !committed_up_to.is_empty() {
                if let Err(e) = g.commit_offsets(&committed_up_to).await {
                    eprintln!("sluice: commit failed ({e}); the records will be delivered again");
                }
            }
        }
    }
    if let Source::Group(g) = source {
        g.close().await?;
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (never, if the handlers cannot be installed).
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// `transaction list|describe|abort`: transactional ids as their coordinators know them.
async fn transaction(global: &Global, words: &[String]) -> Result<(), Failure> {
    let Some(sub) = words.first() else { return Err(Failure::Usage("transaction needs a subcommand".into())) };
    let args = Args::parse(&words[1..], &[])?;
    args.only(&[])?;
    let admin = global.admin().await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let open_for = |start_ms: i64| if start_ms < 0 { "-".to_string() } else { format!("{} ms", now_ms - start_ms) };
    match sub.as_str() {
        "list" => {
            println!(
                "{:<32} {:<15} {:>12} {:>6} {:>12}",
                "TRANSACTIONAL-ID", "STATE", "PRODUCER-ID", "EPOCH", "OPEN-FOR"
            );
            for t in admin.list_transactions().await? {
                println!(
                    "{:<32} {:<15} {:>12} {:>6} {:>12}",
                    t.transactional_id,
                    t.state,
                    t.producer_id,
                    t.producer_epoch,
                    open_for(t.start_ms)
                );
            }
        }
        "describe" => {
            let id = args.name("transactional id")?;
            let t = admin.describe_transaction(&id).await?;
            println!(
                "transactional id {}: {} (producer {} epoch {}), timeout {} ms, open for {}",
                t.transactional_id,
                t.state,
                t.producer_id,
                t.producer_epoch,
                t.timeout_ms,
                open_for(t.start_ms)
            );
            for (topic, partition) in &t.partitions {
                println!("  {topic}-{partition}");
            }
        }
        "abort" => {
            let id = args.name("transactional id")?;
            admin.abort_transaction(&id).await?;
            eprintln!("aborted the transaction of {id}");
        }
        other => return Err(Failure::Usage(format!("unknown transaction subcommand {other:?}"))),
    }
    Ok(())
}

async fn group(global: &Global, words: &[String]) -> Result<(), Failure> {
    let Some(sub) = words.first() else { return Err(Failure::Usage("group needs a subcommand".into())) };
    let args = Args::parse(&words[1..], &[])?;
    match sub.as_str() {
        "list" => {
            args.only(&[])?;
            let admin = global.admin().await?;
            for (group, state, members) in admin.list_groups().await? {
                println!("{group}\t{state}\t{members} members");
            }
        }
        "describe" => {
            args.only(&["isolation-level"])?;
            let name = args.name("group id")?;
            let isolation = sluice_client::consumer::IsolationLevel::parse(
                args.one("isolation-level").unwrap_or("read_uncommitted"),
            )?;
            let admin = global.admin().await?;
            let info = admin.describe_group(&name).await?;
            println!(
                "group {}: {} (generation {}, strategy {}), {} members",
                info.group,
                info.state,
                info.generation,
                if info.strategy.is_empty() { "-" } else { &info.strategy },
                info.members.len()
            );
            for m in &info.members {
                println!(
                    "  member {} ({} at {}): {} partitions",
                    m.member_id,
                    m.client_id,
                    m.client_host,
                    m.assignment.len()
                );
            }
            let end = match isolation {
                sluice_client::consumer::IsolationLevel::ReadCommitted => "STABLE-END",
                sluice_client::consumer::IsolationLevel::ReadUncommitted => "LOG-END",
            };
            println!("{:<24} {:>9} {:>12} {:>12} {:>10}  MEMBER", "TOPIC", "PARTITION", "COMMITTED", end, "LAG");
            for l in admin.group_lag(&name, isolation).await? {
                let committed = l.committed.map_or_else(|| "-".to_string(), |c| c.to_string());
                let member = l.member_id.unwrap_or_else(|| "-".to_string());
                println!(
                    "{:<24} {:>9} {:>12} {:>12} {:>10}  {member}",
                    l.topic, l.partition, committed, l.log_end, l.lag
                );
            }
        }
        "reset-offsets" => {
            args.only(&["topic", "to"])?;
            let name = args.name("group id")?;
            let topic = args.one("topic").ok_or_else(|| Failure::Usage("--topic is required".into()))?.to_string();
            let to = match args.one("to").ok_or_else(|| Failure::Usage("--to is required".into()))? {
                "earliest" => sluice_client::protocol::EARLIEST,
                "latest" => sluice_client::protocol::LATEST,
                n => n
                    .parse::<u64>()
                    .map_err(|_| Failure::Usage(format!("--to {n:?}: earliest, latest or an offset")))?
                    as i64,
            };
            let admin = global.admin().await?;
            for (p, o) in admin.reset_offsets(&name, &topic, to).await? {
                println!("{topic}\t{p}\t{o}");
            }
        }
        "delete" => {
            args.only(&[])?;
            let name = args.name("group id")?;
            let admin = global.admin().await?;
            admin.delete_group(&name).await?;
            eprintln!("deleted group {name}");
        }
        other => return Err(Failure::Usage(format!("unknown group subcommand {other:?}"))),
    }
    Ok(())
}

/// Renders a record with kcat's format tokens.
fn render(format: &str, r: &ConsumerRecord) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('%', Some(t)) => {
                chars.next();
                match t {
                    't' => out.extend_from_slice(r.topic.as_bytes()),
                    'p' => out.extend_from_slice(r.partition.to_string().as_bytes()),
                    'o' => out.extend_from_slice(r.offset.to_string().as_bytes()),
                    'k' => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
                    's' => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
                    'T' => out.extend_from_slice(r.timestamp_ms.to_string().as_bytes()),
                    'h' => {
                        let h: Vec<String> = r
                            .headers
                            .iter()
                            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v.as_deref().unwrap_or_default())))
                            .collect();
                        out.extend_from_slice(h.join(",").as_bytes());
                    }
                    '%' => out.push(b'%'),
                    other => {
                        out.push(b'%');
                        out.extend_from_slice(other.to_string().as_bytes());
                    }
                }
            }
            ('\\', Some('n')) => {
                chars.next();
                out.push(b'\n');
            }
            ('\\', Some('t')) => {
                chars.next();
                out.push(b'\t');
            }
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}
