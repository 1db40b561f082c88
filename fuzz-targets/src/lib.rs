//! The fuzz targets: one function per parser of bytes that come from outside the node
//! (clients, other nodes, files), each taking any bytes and never panicking. What a
//! parser accepts is read whole (every field of a verified envelope, every record of a
//! batch), and what decodes is encoded again and must decode to the same value.
//!
//! libFuzzer runs them through the cargo-fuzz crate in `fuzz/` (nightly; see its
//! README); this crate's test replays every input of the committed corpus
//! (`fuzz/corpus/<target>/`) on stable, in CI. An input that made a target fail goes
//! into the corpus with its fix.

use sluice_replication::state::{ClusterState, Command, Outcome};
use sluice_replication::wire;
use sluice_schemas::batch::{check_batch, check_producer_batch, BatchWalker};
use sluice_schemas::compression::with_records;
use sluice_schemas::wire::{parse_request, parse_response, payload_slice, FrameHeader, FRAME_HEADER_BYTES};

/// The largest frame the fuzzed parsers accept (the node's default max-frame-bytes).
const FRAME_BYTES_MAX: u32 = 100 << 20;
/// Decompressed records a batch may expand to here (the node allows more; a fuzzer input
/// is small).
const RECORDS_BYTES_MAX: usize = 16 << 20;

/// A fuzz target: any bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// Every target by name (the corpus directory's name), for the replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("native_frame", native_frame),
    ("record_batch", record_batch),
    ("replication_message", replication_message),
    ("controller_state", controller_state),
    ("kafka_request", kafka_request),
    ("storage_files", storage_files),
    ("sasl_exchange", sasl_exchange),
    ("certificate_subject", certificate_subject),
    ("segment_recovery", segment_recovery),
];

/// A TLS client certificate (DER) whose subject becomes the connection's principal.
pub fn certificate_subject(data: &[u8]) {
    if let Ok(subject) = sluice_schemas::x509::subject(data) {
        let _ = format!("User:{subject}");
    }
}

/// A SASL login as a client drives it: the first byte picks the mechanism (PLAIN,
/// SCRAM-SHA-256 or SCRAM-SHA-512), the rest is the client's tokens, split at each 0xFF
/// byte (never in a SCRAM or PLAIN token sent as UTF-8), against one user "user" whose
/// password is "pencil". Every step must end in a challenge, a login or an error.
pub fn sasl_exchange(data: &[u8]) {
    use sluice_schemas::sasl::{credential_of, salted_password, Exchange, ScramCredential, ScramMechanism, Users};
    struct One;
    impl Users for One {
        fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
            // Few iterations: the fuzzer runs this for every input.
            let salted = salted_password(mechanism, b"pencil", b"salt", 2);
            (user == "user").then(|| credential_of(mechanism, &salted, b"salt", 2))
        }
    }
    let Some((&which, tokens)) = data.split_first() else { return };
    let mechanism = sluice_schemas::sasl::MECHANISMS[usize::from(which) % 3];
    let Some(mut exchange) = Exchange::start(mechanism) else { return };
    for token in tokens.split(|b| *b == 0xFF).take(4) {
        if exchange.step(token, &One).is_err() {
            return;
        }
    }
}

/// The small files a log reads at open, which a crash or a disk may have damaged: a
/// closed segment's index files (the first 16 bytes give the segment's size and the
/// index interval, the rest is split between the offset and time indexes), a
/// producer-state snapshot and a clean-close record (each the whole input). What decodes
/// encodes again to the same.
pub fn storage_files(data: &[u8]) {
    use sluice_schemas::Offset;
    use sluice_storage::index::SegmentIndex;
    use sluice_storage::producers::ProducerStates;
    if let Ok(states) = ProducerStates::decode(data) {
        let again = ProducerStates::decode(&states.encode()).map(|s| s.summaries());
        assert_eq!(again, Ok(states.summaries()), "a producer snapshot changed in a round trip");
    }
    let Some((sizes, files)) = data.split_first_chunk::<16>() else { return };
    let segment_bytes = u64::from_be_bytes(sizes[..8].try_into().unwrap_or_default());
    let interval = u64::from_be_bytes(sizes[8..].try_into().unwrap_or_default()).max(1);
    let (offsets, times) = files.split_at(files.len() / 2);
    let base = Offset(1_000);
    if let Ok(index) = SegmentIndex::decode(base, interval, offsets, times, segment_bytes) {
        let (offsets, times) = index.encode();
        let again = SegmentIndex::decode(base, interval, &offsets, &times, segment_bytes).map(|i| i.entries().to_vec());
        assert_eq!(again, Ok(index.entries().to_vec()), "an index changed in a round trip");
    }
    let seen =
        |c: &sluice_storage::log::CleanClose| (c.base, c.size, c.next_offset, c.created_ms, c.producers.summaries());
    if let Ok(clean) = sluice_storage::log::CleanClose::decode(data) {
        let again = sluice_storage::log::CleanClose::decode(&clean.encode()).map(|c| seen(&c));
        assert_eq!(again, Ok(seen(&clean)), "a clean-close record changed in a round trip");
    }
}

/// A Kafka request as the node's Kafka listener reads it (after the 4-byte size): API
/// key, version, then the header of that version and the body, for every API the node
/// serves, at any version the kafka-protocol crate knows (a superset of what it serves).
/// What decodes is read whole.
pub fn kafka_request(data: &[u8]) {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Decodable;
    fn body<T: Decodable + std::fmt::Debug>(body: &mut bytes::Bytes, version: i16) {
        if let Ok(request) = T::decode(body, version) {
            let _ = format!("{request:?}");
        }
    }
    let Some((key, rest)) = data.split_first_chunk::<2>() else { return };
    let Ok(api) = ApiKey::try_from(i16::from_be_bytes(*key)) else { return };
    let Some((version, _)) = rest.split_first_chunk::<2>() else { return };
    let versions = api.valid_versions();
    let span = (i32::from(versions.max) - i32::from(versions.min) + 1).max(1);
    let version = (i32::from(versions.min) + i32::from(i16::from_be_bytes(*version)).rem_euclid(span)) as i16;
    let mut b = bytes::Bytes::copy_from_slice(data);
    let Ok(header) = RequestHeader::decode(&mut b, api.request_header_version(version)) else { return };
    let _ = format!("{header:?}");
    match api {
        ApiKey::Produce => body::<ProduceRequest>(&mut b, version),
        ApiKey::Fetch => body::<FetchRequest>(&mut b, version),
        ApiKey::ListOffsets => body::<ListOffsetsRequest>(&mut b, version),
        ApiKey::Metadata => body::<MetadataRequest>(&mut b, version),
        ApiKey::OffsetCommit => body::<OffsetCommitRequest>(&mut b, version),
        ApiKey::OffsetFetch => body::<OffsetFetchRequest>(&mut b, version),
        ApiKey::FindCoordinator => body::<FindCoordinatorRequest>(&mut b, version),
        ApiKey::JoinGroup => body::<JoinGroupRequest>(&mut b, version),
        ApiKey::Heartbeat => body::<HeartbeatRequest>(&mut b, version),
        ApiKey::LeaveGroup => body::<LeaveGroupRequest>(&mut b, version),
        ApiKey::SyncGroup => body::<SyncGroupRequest>(&mut b, version),
        ApiKey::DescribeGroups => body::<DescribeGroupsRequest>(&mut b, version),
        ApiKey::ListGroups => body::<ListGroupsRequest>(&mut b, version),
        ApiKey::DeleteGroups => body::<DeleteGroupsRequest>(&mut b, version),
        ApiKey::ApiVersions => body::<ApiVersionsRequest>(&mut b, version),
        ApiKey::CreateTopics => body::<CreateTopicsRequest>(&mut b, version),
        ApiKey::DeleteTopics => body::<DeleteTopicsRequest>(&mut b, version),
        ApiKey::InitProducerId => body::<InitProducerIdRequest>(&mut b, version),
        ApiKey::DescribeConfigs => body::<DescribeConfigsRequest>(&mut b, version),
        ApiKey::AlterConfigs => body::<AlterConfigsRequest>(&mut b, version),
        ApiKey::IncrementalAlterConfigs => body::<IncrementalAlterConfigsRequest>(&mut b, version),
        ApiKey::DeleteRecords => body::<DeleteRecordsRequest>(&mut b, version),
        ApiKey::CreatePartitions => body::<CreatePartitionsRequest>(&mut b, version),
        ApiKey::SaslHandshake => body::<SaslHandshakeRequest>(&mut b, version),
        ApiKey::SaslAuthenticate => body::<SaslAuthenticateRequest>(&mut b, version),
        ApiKey::DescribeUserScramCredentials => body::<DescribeUserScramCredentialsRequest>(&mut b, version),
        ApiKey::AlterUserScramCredentials => body::<AlterUserScramCredentialsRequest>(&mut b, version),
        ApiKey::CreateAcls => body::<CreateAclsRequest>(&mut b, version),
        ApiKey::DescribeAcls => body::<DescribeAclsRequest>(&mut b, version),
        ApiKey::DeleteAcls => body::<DeleteAclsRequest>(&mut b, version),
        _ => {}
    }
}

/// A native-protocol frame as the node reads it: the 8-byte header, then the envelope
/// and payload. A verified request is read whole (its `Debug` visits every field), and a
/// produce request's record slices are taken from the payload and walked as batches.
pub fn native_frame(data: &[u8]) {
    let Some((header, body)) = data.split_first_chunk::<FRAME_HEADER_BYTES>() else { return };
    let Ok(header) = FrameHeader::parse(header, FRAME_BYTES_MAX) else { return };
    let Ok((envelope, payload)) = header.split(body) else {
        // The body as sent may be short or long: parse what is there as an envelope too.
        let _ = parse_request(body).map(|r| format!("{r:?}"));
        return;
    };
    if let Ok(request) = parse_request(envelope) {
        let _ = format!("{request:?}");
        if let Some(produce) = request.body_as_produce_request() {
            for topic in produce.topics().iter().flatten() {
                for partition in topic.partitions().iter().flatten() {
                    let Some(slice) = partition.records() else { continue };
                    if let Ok(records) = payload_slice(payload, slice) {
                        record_batch(records);
                    }
                }
            }
        }
    }
    if let Ok(response) = parse_response(envelope) {
        let _ = format!("{response:?}");
    }
}

/// Record batches as a producer or a replica sends them: checked as the log checks
/// them, walked, and every record of each batch read (decompressed first).
pub fn record_batch(data: &[u8]) {
    let _ = check_producer_batch(data);
    if let Ok(checked) = check_batch(data) {
        let _ = format!("{:?}", checked.header());
    }
    for item in BatchWalker::new(data) {
        let Ok((_, _, batch)) = item else { break };
        let _ = with_records(batch, RECORDS_BYTES_MAX, |records| {
            for record in records {
                let Ok(record) = record else { break };
                let _ = format!("{record:?}");
            }
        });
    }
}

/// A replication message between nodes: what decodes encodes again to an envelope that
/// decodes the same.
pub fn replication_message(data: &[u8]) {
    let Ok((envelope, payload)) = wire::decode(data) else { return };
    let Some(again) = wire::encode(&envelope, payload) else {
        panic!("a decoded envelope does not encode: {envelope:?}");
    };
    match wire::decode(&again) {
        Ok((decoded, data)) => {
            assert_eq!(decoded, envelope, "an envelope changed in a round trip");
            assert_eq!(data, payload, "an envelope's data changed in a round trip");
        }
        Err(e) => panic!("a re-encoded envelope does not decode: {e}"),
    }
}

/// The controller's encodings, read from its log and snapshots: a command, an outcome,
/// a whole cluster state. What decodes encodes again to the same value.
pub fn controller_state(data: &[u8]) {
    if let Ok(command) = Command::decode(data) {
        assert_eq!(Command::decode(&command.encode()).ok(), Some(command), "a command changed in a round trip");
    }
    if let Ok(outcome) = Outcome::decode(data) {
        assert_eq!(Outcome::decode(&outcome.encode()).ok(), Some(outcome), "an outcome changed in a round trip");
    }
    if let Ok(state) = ClusterState::decode_snapshot(data) {
        let again = ClusterState::decode_snapshot(&state.encode_snapshot());
        assert_eq!(again.ok(), Some(state), "a cluster state changed in a round trip");
    }
}

/// A partition log's directory as a crash, a failing disk or a hand with access to the
/// data directory may leave it, opened by `PartitionLog::open` (recovery). The first byte
/// gives the number of segment files (1 to 3) and which other files are there; then, per
/// segment, 2 bytes of base offset past the previous segment's and 3 bytes of length, then
/// that many bytes of contents (the rest for the last). The other files take what is left after
/// a 0xFF 0xFE marker: the log-start checkpoint and the leader epochs as text, the first
/// segment's offset index. Recovery must not panic: it opens, or refuses with an error; a
/// log that opens reads back, from its start to its end, as contiguous whole batches
/// that check, takes an append after them and reads that back.
pub fn segment_recovery(data: &[u8]) {
    use sluice_schemas::batch::{check_batch, BatchWalker};
    use sluice_schemas::Offset;
    use sluice_storage::segment::{segment_path, INDEX_SUFFIX, LOG_SUFFIX};
    use sluice_storage::{LogConfig, PartitionLog};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local!(static EXECUTOR: glommio::LocalExecutor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(2 << 20)
        .make()
        .unwrap_or_else(|e| panic!("a glommio executor (is ulimit -l at least 512 KiB?): {e}")));

    let Some((&layout, rest)) = data.split_first() else { return };
    let (files, extra) = match rest.windows(2).position(|w| w == [0xFF, 0xFE]) {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (rest, &[][..]),
    };
    let dir = std::env::temp_dir().join(format!(
        "sluice-fuzz-recovery-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let segments = 1 + usize::from(layout & 3) % 3;
    let mut base = 0u64;
    let mut left = files;
    let mut first_base = None;
    for i in 0..segments {
        let Some((head, body)) = left.split_first_chunk::<5>() else { break };
        base += u64::from(u16::from_be_bytes([head[0], head[1]]));
        let len = if i + 1 == segments {
            body.len()
        } else {
            (u32::from_be_bytes([0, head[2], head[3], head[4]]) as usize).min(body.len())
        };
        let path = segment_path(&dir, Offset(base), LOG_SUFFIX);
        std::fs::write(&path, &body[..len]).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        first_base.get_or_insert(base);
        left = &body[len..];
    }
    let mut parts = extra.splitn(3, |b| *b == 0xFF);
    if layout & 4 != 0 {
        let _ = std::fs::write(dir.join("log-start-offset"), parts.next().unwrap_or_default());
    }
    if layout & 8 != 0 {
        let _ = std::fs::write(dir.join("leader-epochs"), parts.next().unwrap_or_default());
    }
    if let (true, Some(first)) = (layout & 16 != 0, first_base) {
        let _ = std::fs::write(segment_path(&dir, Offset(first), INDEX_SUFFIX), parts.next().unwrap_or_default());
    }
    let config = LogConfig { segment_bytes: 64 << 10, index_interval_bytes: 512, ..LogConfig::default() };
    let opened = dir.clone();
    EXECUTOR.with(|ex| {
        ex.run(async move {
            let Ok((log, _)) = PartitionLog::open(&opened, config).await else { return };
            let (start, end) = (log.log_start_offset(), log.log_end_offset());
            assert!(start <= end, "log start {start} past log end {end}");
            let mut offset = start;
            while offset < end {
                let fetched =
                    log.read(offset, 1 << 20).await.unwrap_or_else(|e| panic!("reading at {offset} (end {end}): {e}"));
                assert!(fetched.next_offset > offset, "no progress reading at {offset} (end {end})");
                let bytes = fetched.to_vec();
                let mut expected = fetched.first_offset;
                for item in BatchWalker::new(&bytes) {
                    let (_, header, batch) = item.unwrap_or_else(|e| panic!("a partial batch read at {offset}: {e}"));
                    check_batch(batch).unwrap_or_else(|e| {
                        panic!("a recovered batch at {} does not check: {e}", header.base_offset())
                    });
                    assert!(header.base_offset() >= expected, "batches overlap at {}", header.base_offset());
                    expected = header.next_offset();
                }
                offset = fetched.next_offset;
            }
            let batch = sluice_schemas::records::BatchBuilder::new(sluice_schemas::records::BatchConfig::default())
                .and_then(|mut b| {
                    b.push(Some(b"k"), Some(b"after recovery"), &[], 1)?;
                    b.finish()
                })
                .unwrap_or_else(|e| panic!("a one-record batch: {e}"));
            // Offsets near the top of the range may refuse an append; anywhere else it works.
            let info = match log.append(&batch).await {
                Ok(info) => info,
                Err(_) if end.0 > u64::MAX / 4 => return,
                Err(e) => panic!("appending after recovery (end {end}): {e}"),
            };
            assert_eq!(info.base_offset, end, "the append went elsewhere than the log end");
            let back =
                log.read(info.base_offset, 1 << 20).await.unwrap_or_else(|e| panic!("reading the append back: {e}"));
            let bytes = back.to_vec();
            let first = BatchWalker::new(&bytes).next().and_then(Result::ok);
            assert!(
                first.is_some_and(|(_, h, b)| h.base_offset() == end && b[8..] == batch[8..]),
                "the append reads back"
            );
            let _ = log.close().await;
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
}
