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

/// The native listener with a login and the ACLs (`--listen SASL_SSL://`), driven
/// through the CLI as a user would: the bootstrap user (a super user) creates topics, a
/// user and ACLs over TLS with SCRAM-SHA-512; the user produces to and consumes (in a
/// group) the topic the ACLs give it, is refused another topic with
/// TOPIC_AUTHORIZATION_FAILED, and does not see it listed; a wrong password, a plaintext
/// client and a deleted user are refused; the users and ACLs list as made, and removed
/// ACLs stop applying.
#[test]
fn the_native_listener_asks_for_a_login_over_tls_and_applies_the_acls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = sluice_tests::pki::Pki::new(&dir.path().join("pki"));
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("node", "ca");
    let addr = free_loopback_addr();
    let listen = format!("SASL_SSL://{addr}");
    let args = [
        "--listen",
        &listen,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--authorizer",
        "acl",
        "--super-users",
        "User:admin",
    ];
    let env = [("SLUICE_BOOTSTRAP_USER", "admin:admin-secret:SCRAM-SHA-512")];
    let node = NodeProcess::start_at_with_env(addr, &dir.path().join("data"), SHARDS, &args, &env);
    let bootstrap = addr.to_string();
    let as_user = |user: &str, password: &str, args: &[&str], stdin: &[u8]| {
        let mut command = Command::new(cli_binary());
        command
            .args(["--bootstrap", &bootstrap, "--security-protocol", "SASL_SSL", "--tls-ca", &ca])
            .args(["--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", user])
            .args(args)
            .env_remove("SLUICE_BOOTSTRAP")
            .env("SLUICE_SASL_PASSWORD", password);
        sluice_command(command, stdin)
    };
    let ok = |run: Run, what: &str| {
        assert_eq!(run.code, Some(0), "{what}: {run:?}");
        run
    };
    // The bootstrap user is made once the node is its own controller.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while as_user("admin", "admin-secret", &["topic", "list"], b"").code != Some(0) {
        assert!(std::time::Instant::now() < deadline, "the bootstrap user never logged in: {}", node.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
    for topic in ["orders", "secrets"] {
        ok(as_user("admin", "admin-secret", &["topic", "create", topic, "--partitions", "2"], b""), "topic create");
    }
    let mut create = Command::new(cli_binary());
    create
        .args(["--bootstrap", &bootstrap, "--security-protocol", "SASL_SSL", "--tls-ca", &ca])
        .args(["--sasl-username", "admin", "user", "create", "alice"])
        .env_remove("SLUICE_BOOTSTRAP")
        .env("SLUICE_SASL_PASSWORD", "admin-secret")
        .env("SLUICE_USER_PASSWORD", "alice-pw");
    ok(sluice_command(create, b""), "user create");
    let users = ok(as_user("admin", "admin-secret", &["user", "list"], b""), "user list").stdout;
    assert!(users.lines().any(|l| l.starts_with("alice SCRAM-SHA-512 iterations=4096")), "{users}");
    assert!(!users.contains("alice-pw"), "{users}");
    let acl = |args: &[&str]| {
        let mut all = vec!["acl", "add", "--principal", "User:alice"];
        all.extend_from_slice(args);
        ok(as_user("admin", "admin-secret", &all, b""), "acl add");
    };
    acl(&["--topic", "ord", "--prefixed", "--operation", "read,write"]);
    acl(&["--group", "readers", "--operation", "read"]);
    let listed = ok(as_user("admin", "admin-secret", &["acl", "list", "--principal", "User:alice"], b""), "acl list");
    assert_eq!(listed.stdout.lines().count(), 3, "{listed:?}");
    assert!(listed.stdout.contains("User:alice ALLOW READ topic ord PREFIXED host=*"), "{listed:?}");

    // Alice: the prefixed ACL gives her orders, in her group, and nothing else.
    let lines: String = (0..20).map(|i| format!("value-{i}\n")).collect();
    ok(as_user("alice", "alice-pw", &["produce", "orders"], lines.as_bytes()), "alice produces");
    let read = ok(
        as_user("alice", "alice-pw", &["consume", "orders", "--group", "readers", "--max-messages", "20"], b""),
        "alice consumes",
    );
    let got: BTreeSet<&str> = read.stdout.lines().collect();
    assert_eq!(
        got,
        (0..20).map(|i| format!("value-{i}")).collect::<BTreeSet<String>>().iter().map(String::as_str).collect()
    );
    let denied = as_user("alice", "alice-pw", &["produce", "secrets"], b"nope\n");
    assert_eq!(denied.code, Some(1), "{denied:?}");
    assert!(
        denied.stderr.contains("TOPIC_AUTHORIZATION_FAILED") || denied.stderr.contains("not authorized"),
        "{denied:?}"
    );
    let denied = as_user("alice", "alice-pw", &["consume", "orders", "--group", "others", "--max-messages", "1"], b"");
    assert_eq!(denied.code, Some(1), "another group: {denied:?}");
    let topics = ok(as_user("alice", "alice-pw", &["topic", "list"], b""), "alice lists topics").stdout;
    assert!(topics.contains("orders") && !topics.contains("secrets"), "{topics}");
    let denied = as_user("alice", "alice-pw", &["user", "list"], b"");
    assert_eq!(denied.code, Some(1), "users need DESCRIBE on the cluster: {denied:?}");

    // Refused logins and connections.
    let wrong = as_user("alice", "not-her-password", &["topic", "list"], b"");
    assert_eq!(wrong.code, Some(1), "{wrong:?}");
    assert!(wrong.stderr.contains("Authentication failed"), "{wrong:?}");
    let plaintext = sluice(&bootstrap, &["topic", "list"], b"");
    assert_ne!(plaintext.code, Some(0), "a plaintext client: {plaintext:?}");

    // Removed ACLs stop applying; a deleted user cannot log in.
    let removed = ok(
        as_user(
            "admin",
            "admin-secret",
            &["acl", "remove", "--principal", "User:alice", "--topic", "ord", "--prefixed"],
            b"",
        ),
        "acl remove",
    );
    assert_eq!(removed.stdout.lines().count(), 2, "{removed:?}");
    let denied = as_user("alice", "alice-pw", &["produce", "orders"], b"late\n");
    assert_eq!(denied.code, Some(1), "after the ACL went: {denied:?}");
    ok(as_user("admin", "admin-secret", &["user", "delete", "alice"], b""), "user delete");
    let gone = as_user("alice", "alice-pw", &["topic", "list"], b"");
    assert_eq!(gone.code, Some(1), "{gone:?}");
    let log = node.log();
    assert!(log.contains("denied by the ACLs") && log.contains("SASL authentication failed"), "audit lines");
}
