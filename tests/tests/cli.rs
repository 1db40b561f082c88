//! Specifications of the `sluice` command-line tool (package `sluice-client`) against
//! real node processes: what a script driving it can rely on, its output and its exit
//! codes (0 success, 1 the operation failed, 2 bad usage, 3 no node reachable).
//!
//! Each test starts its own `sluice-node` (two shards) with its data in a temporary
//! directory; `NodeProcess` stops it by its pid when the test ends. The `sluice` binary
//! is found, and built if needed, by `node_client::cli_binary` (as the node binary is:
//! `CARGO_BIN_EXE_sluice` exists only for tests of `sluice-client` itself). Every run of
//! it is bounded by `CLI_TIMEOUT`: one that runs longer is killed by its pid and reaped,
//! and the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sluice_client::partitioner::partition_for_key;
use sluice_tests::node_client::{cli_binary, free_loopback_addr, resident_bytes, run_command, CliRun, NodeProcess};
use tempfile::TempDir;

/// The shards of every node here: the test machines have two cores.
const SHARDS: usize = 2;
/// The longest one run of the CLI may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn start_node() -> (TempDir, NodeProcess) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let data: PathBuf = dir.path().join("data");
    let node = NodeProcess::start(&data, SHARDS, &[]);
    (dir, node)
}

type Run = CliRun;

/// Runs `sluice --bootstrap BOOTSTRAP ARGS...` with `stdin` as its standard input, and
/// waits (bounded by `CLI_TIMEOUT`) for it to exit.
fn sluice(bootstrap: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut command = Command::new(cli_binary());
    command.args(["--bootstrap", bootstrap]).args(args).env_remove("SLUICE_BOOTSTRAP");
    sluice_command(command, stdin)
}

/// Runs a prepared CLI command with `stdin`, bounded by `CLI_TIMEOUT`.
fn sluice_command(command: Command, stdin: &[u8]) -> Run {
    run_command(command, stdin, CLI_TIMEOUT)
}

/// Runs the CLI against `node` and checks that it succeeded.
fn sluice_ok(node: &NodeProcess, args: &[&str], stdin: &[u8]) -> Run {
    let run = sluice(&node.addr().to_string(), args, stdin);
    assert_eq!(run.code, Some(0), "sluice {args:?} failed: {run:?}");
    run
}

/// Lines written as `key-i:value-i` with `--key-separator :` are produced as records
/// with key `key-i` and value `value-i`: 10,000 of them to a 3-partition topic come back
/// (all, once each) through `consume --format '%k=%s\n'`, and each key is in the
/// partition Kafka's Java client would pick (`--format '%p %k\n'`).
#[test]
fn produce_then_consume_10000_keyed_lines_round_trip() {
    const LINES: usize = 10_000;
    const PARTITIONS: u32 = 3;
    let (_dir, node) = start_node();
    sluice_ok(&node, &["topic", "create", "lines", "--partitions", "3"], b"");
    let input: String = (0..LINES).map(|i| format!("key-{i}:value-{i}\n")).collect();
    let produced = sluice_ok(&node, &["produce", "lines", "--key-separator", ":"], input.as_bytes());
    assert!(produced.stderr.contains("produced 10000 of 10000 records"), "the summary: {}", produced.stderr);

    let consume = |format: &str| {
        let args = ["consume", "lines", "--format", format, "--max-messages", "10000", "--timeout-ms", "5000"];
        sluice_ok(&node, &args, b"").stdout
    };
    let consumed: Vec<String> = consume("%k=%s\\n").lines().map(str::to_string).collect();
    assert_eq!(consumed.len(), LINES, "one line per record");
    let consumed: BTreeSet<String> = consumed.into_iter().collect();
    let expected: BTreeSet<String> = (0..LINES).map(|i| format!("key-{i}=value-{i}")).collect();
    assert_eq!(consumed, expected, "every line comes back once, as key=value");

    let placed = consume("%p %k\\n");
    let mut keys = BTreeSet::new();
    for line in placed.lines() {
        let (partition, key) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?} is not 'PARTITION KEY'"));
        let partition: u32 = partition.parse().unwrap();
        assert_eq!(partition, partition_for_key(key.as_bytes(), PARTITIONS), "the partition of key {key:?}");
        keys.insert(key.to_string());
    }
    assert_eq!(keys.len(), LINES, "every key was placed");
}

/// The exit codes a script can rely on: `--help` 0 (usage on stdout); no command, an
/// unknown command, an unknown topic subcommand or an unknown codec 2 (naming the codecs
/// there are), even with no node reachable (usage is checked before connecting); an operation the node refuses (creating a topic that
/// exists, producing to or consuming from one that does not) 1 with the node's reason; no node at the bootstrap address 3, for the topic,
/// produce and consume commands alike.
#[test]
fn exit_codes_tell_success_failure_bad_usage_and_an_unreachable_node_apart() {
    let (_dir, node) = start_node();
    let addr = node.addr().to_string();
    // Nothing listens here: the port was bound and released.
    let closed = free_loopback_addr().to_string();

    let help = sluice(&addr, &["--help"], b"");
    assert_eq!(help.code, Some(0), "{help:?}");
    assert!(help.stdout.contains("usage: sluice"), "--help prints the usage: {help:?}");

    let mut command = Command::new(cli_binary());
    command.env_remove("SLUICE_BOOTSTRAP");
    let bare = sluice_command(command, b"");
    assert_eq!(bare.code, Some(2), "no command is bad usage: {bare:?}");

    for bootstrap in [&addr, &closed] {
        let unknown = sluice(bootstrap, &["frobnicate"], b"");
        assert_eq!(unknown.code, Some(2), "{unknown:?}");
        assert!(unknown.stderr.contains("unknown command \"frobnicate\""), "{unknown:?}");
        let unknown = sluice(bootstrap, &["topic", "frobnicate"], b"");
        assert_eq!(unknown.code, Some(2), "{unknown:?}");
        assert!(unknown.stderr.contains("unknown topic subcommand"), "{unknown:?}");
        let missing = sluice(bootstrap, &["topic", "create", "no-partitions"], b"");
        assert_eq!(missing.code, Some(2), "{missing:?}");
        assert!(missing.stderr.contains("--partitions is required"), "{missing:?}");
        let codec = sluice(bootstrap, &["produce", "taken", "--compression", "brotli"], b"a line\n");
        assert_eq!(codec.code, Some(2), "{codec:?}");
        let names = r#"--compression "brotli" is not a compression codec (none, gzip, snappy, lz4 or zstd)"#;
        assert!(codec.stderr.contains(names), "{codec:?}");
    }

    sluice_ok(&node, &["topic", "create", "taken", "--partitions", "1"], b"");
    let again = sluice(&addr, &["topic", "create", "taken", "--partitions", "1"], b"");
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("TOPIC_ALREADY_EXISTS") && again.stderr.contains("already exists"), "{again:?}");

    for args in [&["produce", "no-such-topic"][..], &["consume", "no-such-topic", "--timeout-ms", "100"]] {
        let refused = sluice(&addr, args, b"a line\n");
        assert_eq!(refused.code, Some(1), "sluice {args:?}: {refused:?}");
        assert!(refused.stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{refused:?}");
    }

    for args in [&["topic", "list"][..], &["produce", "taken"], &["consume", "taken", "--timeout-ms", "100"]] {
        let unreachable = sluice(&closed, args, b"a line\n");
        assert_eq!(unreachable.code, Some(3), "sluice {args:?} with no node at {closed}: {unreachable:?}");
        assert!(unreachable.stderr.contains("cannot connect"), "{unreachable:?}");
    }
}

/// `topic describe` lists a topic's partitions; `topic config --set` changes a config
/// (shown without "(default)" from then on) and `--delete` returns it to the default; a
/// value the node refuses is exit code 1; `topic add-partitions` grows a topic (the new
/// partition takes records) and refuses to shrink it (exit code 1, "can only be added").
#[test]
fn topic_describe_config_and_add_partitions_work_and_partitions_never_shrink() {
    let (_dir, node) = start_node();
    let addr = node.addr().to_string();
    sluice_ok(&node, &["topic", "create", "admin", "--partitions", "2"], b"");

    let described = sluice_ok(&node, &["topic", "describe", "admin"], b"").stdout;
    let lines: Vec<&str> = described.lines().collect();
    assert_eq!(lines.first(), Some(&"topic admin: 2 partitions"), "{described}");
    assert!(
        lines[1].trim_start().starts_with("partition 0:") && lines[2].trim_start().starts_with("partition 1:"),
        "{described}"
    );
    assert_eq!(lines.len(), 3, "{described}");

    let set = sluice_ok(&node, &["topic", "config", "admin", "--set", "segment.ms=3600000"], b"").stdout;
    assert!(set.lines().any(|l| l == "segment.ms=3600000"), "the set value, not marked default: {set}");
    assert!(set.lines().any(|l| l.starts_with("segment.bytes=") && l.ends_with(" (default)")), "{set}");
    let shown = sluice_ok(&node, &["topic", "config", "admin"], b"").stdout;
    assert!(shown.lines().any(|l| l == "segment.ms=3600000"), "the change is kept: {shown}");
    let reset = sluice_ok(&node, &["topic", "config", "admin", "--delete", "segment.ms"], b"").stdout;
    assert!(!reset.lines().any(|l| l.starts_with("segment.ms=3600000")), "back to the default: {reset}");
    let refused = sluice(&addr, &["topic", "config", "admin", "--set", "segment.bytes=1"], b"");
    assert_eq!(refused.code, Some(1), "a segment.bytes of 1 is refused: {refused:?}");

    let grown = sluice_ok(&node, &["topic", "add-partitions", "admin", "--partitions", "4"], b"");
    assert!(grown.stderr.contains("now has 4 partitions"), "{grown:?}");
    let described = sluice_ok(&node, &["topic", "describe", "admin"], b"").stdout;
    assert!(described.starts_with("topic admin: 4 partitions\n"), "{described}");
    assert!(described.contains("partition 3:"), "{described}");
    sluice_ok(&node, &["produce", "admin", "--partition", "3"], b"in the new partition\n");
    let consumed = sluice_ok(
        &node,
        &[
            "consume",
            "admin",
            "--partition",
            "3",
            "--format",
            "%p@%o %s\\n",
            "--max-messages",
            "1",
            "--timeout-ms",
            "5000",
        ],
        b"",
    );
    assert_eq!(consumed.stdout, "3@0 in the new partition\n");

    let shrink = sluice(&addr, &["topic", "add-partitions", "admin", "--partitions", "3"], b"");
    assert_eq!(shrink.code, Some(1), "{shrink:?}");
    assert!(shrink.stderr.contains("can only be added"), "{shrink:?}");
    let described = sluice_ok(&node, &["topic", "describe", "admin"], b"").stdout;
    assert!(described.starts_with("topic admin: 4 partitions\n"), "still 4: {described}");
}

/// Memory is bounded by the node-wide budgets, not by the partition count (issue 19):
/// 1,000 partitions, 192 MB written to them and read back whole, with a 32 MiB cache and
/// a 16 MiB read-ahead budget, leave the node's resident memory under 256 MiB. (A cache
/// limit per log, as before the node-wide budgets, would let it grow to the data written.)
#[test]
fn resident_memory_stays_within_the_budgets_at_1000_partitions() {
    const RESIDENT_MAX: u64 = 256 << 20;
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let flags = ["--cache-bytes", "33554432", "--read-ahead-bytes", "16777216"];
    let node = NodeProcess::start(&dir.path().join("data"), SHARDS, &flags);
    sluice_ok(&node, &["topic", "create", "wide", "--partitions", "1000"], b"");
    let line = "x".repeat(1000) + "\n";
    let input = line.repeat(192_000);
    let produced = sluice_ok(&node, &["produce", "wide"], input.as_bytes());
    assert!(produced.stderr.contains("produced 192000 of 192000"), "{produced:?}");
    let after_writes = resident_bytes(node.pid());
    let consumed = sluice_ok(&node, &["consume", "wide", "--max-messages", "192000", "--timeout-ms", "5000"], b"");
    assert_eq!(consumed.stdout.lines().count(), 192_000);
    // The node gives freed memory back to the system every few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut after_reads = resident_bytes(node.pid());
    while after_reads > RESIDENT_MAX && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        after_reads = resident_bytes(node.pid());
    }
    eprintln!("resident: {} MiB after the writes, {} MiB after the reads", after_writes >> 20, after_reads >> 20);
    assert!(after_writes < RESIDENT_MAX, "{} MiB resident after the writes", after_writes >> 20);
    assert!(after_reads < RESIDENT_MAX, "{} MiB resident after the reads", after_reads >> 20);
}
