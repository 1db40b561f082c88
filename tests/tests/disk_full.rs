//! A full disk, with a real node process on a real (small) file system: the test makes a
//! 64 MiB ext4 image, loop-mounts it as the node's data directory, produces until every
//! partition refuses writes with "No space left on device", and checks that nothing
//! acknowledged was lost or changed: while the disk is full, after a clean restart on the
//! still-full disk, and after a kill -9 and another restart.
//!
//! The producer alternates large batches (~512 KiB, which the log writes as they come)
//! and small ones (~5 KB, which the log zero-fills ahead of), the pattern under which a
//! zero-fill used to start on the page holding the last acknowledged bytes: when the
//! disk filled during that zero-fill, those bytes stayed zeros.
//!
//! Then, without a restart: with the free-space guard (`storage-min-free-bytes`, on by
//! default) produce is refused with an error naming the full directory before the disk
//! is full, the CLI prints it at once and exits 1; with the guard off the disk fills to
//! ENOSPC and the failed logs are reopened by the node. Either way DeleteRecords frees
//! space on the full disk and produce works again.
//!
//! It needs root (mount, losetup) and a kernel with loop devices; without them it fails
//! saying so. The file system is unmounted and the node stopped by its pid on every exit
//! path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_schemas::batch::BatchWalker;
use sluice_schemas::records::{BatchBuilder, BatchConfig};
use sluice_schemas::wire::ErrorCode;
use sluice_tests::faults::LoopFs;
use sluice_tests::node_client::{
    cli_binary, free_loopback_addr, metric_value, run_command, scrape_metrics, Client, NodeProcess,
};

/// The file system's size: room for a few preallocated segments and some data.
const IMAGE_BYTES: u64 = 64 << 20;
const TOPIC: &str = "full";
const PARTITIONS: u32 = 4;
/// Large batches per cycle and partition: 8 records of 64 KiB.
const LARGE_PER_CYCLE: u32 = 8;
/// Small batches per cycle and partition: one record of ~5 KB.
const SMALL_PER_CYCLE: u32 = 16;
/// The produce loop's bound: a 64 MiB disk is full long before.
const PRODUCE_DEADLINE: Duration = Duration::from_secs(120);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const FETCH_BYTES: u32 = 4 << 20;
const FETCH_ROUNDS_MAX: usize = 10_000;

/// A batch of `records` records with keys `{tag}-{i}` and values of `value_bytes` bytes.
fn batch(tag: &str, records: u32, value_bytes: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new(BatchConfig::default()).unwrap();
    for i in 0..records {
        let key = format!("{tag}-{i}");
        let value: Vec<u8> = key.bytes().chain(std::iter::once(b'|')).cycle().take(value_bytes).collect();
        builder.push(Some(key.as_bytes()), Some(&value), &[], i64::from(i)).unwrap();
    }
    builder.finish().unwrap()
}

/// One acknowledged batch: its partition, its offset and the bytes produced.
struct Acked {
    partition: u32,
    base_offset: i64,
    bytes: Vec<u8>,
}

/// Every batch of `partition`, from offset 0 to the high watermark, by base offset.
fn fetch_all(client: &mut Client, partition: u32) -> Vec<(i64, Vec<u8>)> {
    let mut all = Vec::new();
    let mut offset = 0i64;
    for _ in 0..FETCH_ROUNDS_MAX {
        let fetched = client.fetch(TOPIC, partition, offset, FETCH_BYTES, 0, 0);
        assert_eq!(fetched.error, ErrorCode::None, "fetching {TOPIC}-{partition} at {offset}: {}", fetched.message);
        if fetched.records.is_empty() {
            assert_eq!(offset, fetched.high_watermark, "{TOPIC}-{partition}: an empty fetch below the high watermark");
            return all;
        }
        for b in BatchWalker::new(&fetched.records) {
            let (_, header, bytes) = b.unwrap_or_else(|e| panic!("{TOPIC}-{partition} at {offset}: {e}"));
            all.push((header.base_offset().0 as i64, bytes.to_vec()));
            offset = header.next_offset().0 as i64;
        }
    }
    panic!("{TOPIC}-{partition}: not read to its end in {FETCH_ROUNDS_MAX} fetches");
}

/// Checks that every acknowledged batch is stored at its offset, byte for byte but for the
/// base offset and leader epoch the node writes.
fn assert_all_acked_stored(node: &NodeProcess, acked: &[Acked], when: &str) {
    let mut client = node.client();
    let mut lost = Vec::new();
    for partition in 0..PARTITIONS {
        let stored = fetch_all(&mut client, partition);
        for a in acked.iter().filter(|a| a.partition == partition) {
            match stored.iter().find(|(base, _)| *base == a.base_offset) {
                Some((_, bytes)) if sluice_tests::stored_as_produced(bytes, &a.bytes) => {}
                Some(_) => lost.push(format!("partition {partition} offset {} changed", a.base_offset)),
                None => lost.push(format!(
                    "partition {partition} offset {} is gone (log end {})",
                    a.base_offset,
                    stored.last().map_or(0, |(base, _)| *base)
                )),
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{when}: {} of {} acknowledged batches lost or changed: {}",
        lost.len(),
        acked.len(),
        lost.join("; ")
    );
}

/// Produces the large-then-small cycles round-robin over the partitions until every
/// partition has refused a batch; returns what was acknowledged and the refusals.
fn fill_the_disk(node: &NodeProcess) -> (Vec<Acked>, Vec<String>) {
    let mut client = node.client();
    let mut acked = Vec::new();
    let mut refusals: Vec<Option<String>> = vec![None; PARTITIONS as usize];
    let deadline = Instant::now() + PRODUCE_DEADLINE;
    let large: Vec<u8> = batch("large", LARGE_PER_CYCLE, 64 << 10);
    let mut cycle = 0u32;
    while refusals.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "the disk did not fill within {PRODUCE_DEADLINE:?}");
        for partition in 0..PARTITIONS {
            if refusals[partition as usize].is_some() {
                continue;
            }
            let smalls = (0..SMALL_PER_CYCLE).map(|i| batch(&format!("c{cycle}-p{partition}-s{i}"), 1, 5000));
            for bytes in std::iter::repeat_n(large.clone(), LARGE_PER_CYCLE as usize).chain(smalls) {
                let produced = client.produce(TOPIC, partition, &bytes, 1);
                if produced.error != ErrorCode::None {
                    refusals[partition as usize] = Some(format!("{:?}: {}", produced.error, produced.message));
                    break;
                }
                acked.push(Acked { partition, base_offset: produced.base_offset, bytes });
            }
        }
        cycle += 1;
    }
    (acked, refusals.into_iter().flatten().collect())
}

#[test]
fn a_full_disk_loses_no_acknowledged_record_and_a_restart_recovers_every_one() {
    let fs = LoopFs::new(IMAGE_BYTES);
    let data: &Path = &fs.mount;
    // The guard off: the disk fills to ENOSPC, the case this test is about.
    let mut node = NodeProcess::start(data, 1, &["--kafka-listen", "off", "--storage-min-free-bytes", "0"]);
    let outcome = node.client().create_topic(TOPIC, PARTITIONS, &[]);
    assert_eq!(outcome.error, ErrorCode::None, "creating {TOPIC}: {}", outcome.message);

    let (acked, refusals) = fill_the_disk(&node);
    assert!(acked.len() > 100, "only {} batches fit on the disk: the test did not exercise much", acked.len());
    for refusal in &refusals {
        assert!(refusal.contains("No space left on device"), "a full disk is named as such: {refusal}");
    }
    println!("{} batches acknowledged before the disk filled; refusals: {refusals:?}", acked.len());
    assert_all_acked_stored(&node, &acked, "while the disk is full");

    node.sigterm_and_wait();
    node.restart();
    assert_all_acked_stored(&node, &acked, "after a clean restart on the full disk");

    node.kill9_and_wait();
    node.restart();
    assert_all_acked_stored(&node, &acked, "after kill -9 and a restart");
    node.sigterm_and_wait();
    drop(node);
    drop(fs);
}

/// Segments small enough that DeleteRecords frees most of the disk.
const SMALL_SEGMENT_BYTES: &str = "2097152";
/// How long the node may take to take writes again once space is freed (it reopens
/// failed logs each second, backing off while they keep failing).
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the CLI against `node` with `stdin`, bounded by `COMMAND_TIMEOUT`.
fn sluice(node: &NodeProcess, args: &[&str], stdin: &[u8]) -> sluice_tests::node_client::CliRun {
    let mut command = Command::new(cli_binary());
    command.args(["--bootstrap", &node.addr().to_string()]).args(args).env_remove("SLUICE_BOOTSTRAP");
    run_command(command, stdin, COMMAND_TIMEOUT)
}

/// Moves every partition's log start to its end (`topic delete-records`), retrying while
/// a log is being reopened; the closed segments are deleted.
fn delete_all_records(node: &NodeProcess) {
    for partition in 0..PARTITIONS {
        let deadline = Instant::now() + RECOVERY_DEADLINE;
        let p = partition.to_string();
        loop {
            let run = sluice(node, &["topic", "delete-records", TOPIC, "--partition", &p, "--offset", "end"], b"");
            if run.code == Some(0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "delete-records {TOPIC}-{partition} kept failing on the full disk: {run:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Once space is freed, every partition takes writes again without a restart: a batch to
/// each is acknowledged (retried while its log is reopened) and reads back as produced.
fn assert_writes_resume(node: &NodeProcess) {
    let mut client = node.client();
    for partition in 0..PARTITIONS {
        let bytes = batch(&format!("after-p{partition}"), 4, 1000);
        let deadline = Instant::now() + RECOVERY_DEADLINE;
        let produced = loop {
            let produced = client.produce(TOPIC, partition, &bytes, -1);
            if produced.error == ErrorCode::None {
                break produced;
            }
            assert!(
                Instant::now() < deadline,
                "{TOPIC}-{partition} still refuses writes {RECOVERY_DEADLINE:?} after space was freed: {:?}: {}",
                produced.error,
                produced.message
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let fetched = client.fetch(TOPIC, partition, produced.base_offset, FETCH_BYTES, 0, 0);
        assert_eq!(fetched.error, ErrorCode::None, "{}", fetched.message);
        let (_, _, stored) = BatchWalker::new(&fetched.records).next().expect("the new batch").expect("a whole batch");
        assert!(sluice_tests::stored_as_produced(stored, &bytes), "{TOPIC}-{partition}: the new batch changed");
    }
    // And a steady stream after it: 2 MiB more per partition, every batch acknowledged.
    let large = batch("resumed", LARGE_PER_CYCLE, 64 << 10);
    for partition in 0..PARTITIONS {
        for _ in 0..4 {
            let produced = client.produce(TOPIC, partition, &large, -1);
            assert_eq!(produced.error, ErrorCode::None, "{TOPIC}-{partition}: {}", produced.message);
        }
    }
}

fn start_on_small_disk(fs: &LoopFs, extra: &[&str]) -> (NodeProcess, std::net::SocketAddr) {
    let metrics = free_loopback_addr();
    let metrics_arg = metrics.to_string();
    let mut args = vec!["--kafka-listen", "off", "--metrics-listen", metrics_arg.as_str()];
    args.extend_from_slice(extra);
    let node = NodeProcess::start(&fs.mount, 1, &args);
    let outcome = node.client().create_topic(TOPIC, PARTITIONS, &[("segment.bytes", SMALL_SEGMENT_BYTES)]);
    assert_eq!(outcome.error, ErrorCode::None, "creating {TOPIC}: {}", outcome.message);
    (node, metrics)
}

/// The default guard (5% of the file system free) refuses produce before the disk is
/// full, naming the directory; the CLI says so at once and exits 1; metrics show it;
/// DeleteRecords frees space and produce resumes without a restart.
#[test]
fn below_the_free_space_margin_produce_is_refused_by_name_and_resumes_once_space_is_freed() {
    let fs = LoopFs::new(IMAGE_BYTES);
    let (mut node, metrics) = start_on_small_disk(&fs, &[]);
    let (mut acked, mut refusals) = fill_the_disk(&node);
    // The guard counts what it admits against its last read of the file system and reads
    // it again every 100 ms; appends into space a log zero-filled ahead take no new blocks,
    // so the next read can find room again (the guard then lets produce resume). Fill
    // until a read of the file system agrees that it is below the margin.
    let deadline = Instant::now() + PRODUCE_DEADLINE;
    let scrape = loop {
        let scrape = scrape_metrics(metrics);
        if metric_value(&scrape, "sluice_data_dir_full") == Some(1) {
            break scrape;
        }
        assert!(Instant::now() < deadline, "the file system never read as below the margin: {scrape}");
        std::thread::sleep(Duration::from_millis(150));
        let (more, again) = fill_the_disk(&node);
        acked.extend(more);
        refusals = again;
    };
    assert!(acked.len() > 100, "only {} batches fit on the disk", acked.len());
    let dir = fs.mount.display().to_string();
    for refusal in &refusals {
        assert!(
            refusal.contains(&format!("data directory {dir} is full")) && refusal.contains("storage-min-free-bytes"),
            "the guard names the full directory: {refusal}"
        );
    }
    assert_all_acked_stored(&node, &acked, "while the disk is below its margin");
    assert!(metric_value(&scrape, "sluice_produce_refused_no_space_total").unwrap_or(0) >= u64::from(PARTITIONS));
    assert_eq!(metric_value(&scrape, "sluice_storage_failed_logs"), Some(0), "the guard kept every log whole");
    let free = metric_value(&scrape, "sluice_data_dir_free_bytes").expect("free bytes");
    let min_free = metric_value(&scrape, "sluice_data_dir_min_free_bytes").expect("the margin");
    // The default margin: 5% of the file system (a little under 64 MiB after ext4's own).
    assert!(free < min_free && min_free > 0 && min_free <= IMAGE_BYTES / 100 * 5, "free {free}, margin {min_free}");

    // The CLI reports it at once (no retrying until the delivery timeout) and exits 1.
    // The guard's next read of the file system may find room again (appends into space
    // zero-filled ahead take no new blocks) and admit the line: then fill again and retry.
    let deadline = Instant::now() + PRODUCE_DEADLINE;
    let (run, took) = loop {
        let started = Instant::now();
        let run = sluice(&node, &["produce", TOPIC, "--partition", "0"], b"one more line\n");
        if run.code != Some(0) {
            break (run, started.elapsed());
        }
        assert!(Instant::now() < deadline, "the CLI's produce was never refused: {run:?}");
        fill_the_disk(&node);
    };
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("KAFKA_STORAGE_ERROR") && run.stderr.contains("is full"), "{run:?}");
    assert!(took < Duration::from_secs(10), "the CLI took {took:?} to report it");

    delete_all_records(&node);
    assert_writes_resume(&node);
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    while metric_value(&scrape_metrics(metrics), "sluice_data_dir_full") != Some(0) {
        assert!(Instant::now() < deadline, "sluice_data_dir_full stayed 1 after space was freed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(node.log().contains("data directory is full"), "the node's log names the full directory");
    node.sigterm_and_wait();
    drop(node);
    drop(fs);
}

/// With the guard off the disk fills to ENOSPC and the logs that failed refuse writes;
/// the node reopens them itself (no restart), DeleteRecords frees space on the full
/// disk, and produce resumes. Nothing acknowledged was lost on the way.
#[test]
fn logs_that_failed_on_a_full_disk_take_writes_again_once_space_is_freed_without_a_restart() {
    let fs = LoopFs::new(IMAGE_BYTES);
    let (mut node, metrics) = start_on_small_disk(&fs, &["--storage-min-free-bytes", "0"]);
    let (acked, refusals) = fill_the_disk(&node);
    assert!(acked.len() > 100, "only {} batches fit on the disk", acked.len());
    for refusal in &refusals {
        assert!(refusal.contains("No space left on device"), "a full disk is named as such: {refusal}");
    }
    assert_all_acked_stored(&node, &acked, "while the disk is full");
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    while metric_value(&scrape_metrics(metrics), "sluice_storage_logs_reopened_total").unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no failed log was reopened");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_all_acked_stored(&node, &acked, "after the failed logs were reopened on the full disk");
    delete_all_records(&node);
    assert_writes_resume(&node);
    let scrape = scrape_metrics(metrics);
    assert_eq!(metric_value(&scrape, "sluice_storage_failed_logs"), Some(0), "{scrape}");
    assert!(node.log().contains("reopened a log that had failed"), "the node's log says what it did");
    node.sigterm_and_wait();
    drop(node);
    drop(fs);
}
