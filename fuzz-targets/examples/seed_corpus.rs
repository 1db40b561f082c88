//! Writes the seed inputs of the fuzz corpus (`fuzz/corpus/<target>/seed-*`) from the real
//! encoders: native requests as the client builds them, record batches under every codec,
//! replication messages, controller commands and a cluster state. libFuzzer grows the
//! corpus from these; `cargo fuzz cmin` keeps it small (see fuzz/README.md).
//!
//!     cargo run -p sluice-fuzz-targets --example seed_corpus

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;

use sluice_replication::state::{ClusterState, Command};
use sluice_replication::ClusterPartitionId;
use sluice_replication::{wire, AdvertisedListener, Endpoint, Envelope, Incarnation, Message, NodeId, PartitionConfig};
use sluice_schemas::batch::Compression;
use sluice_schemas::compression::compress;
use sluice_schemas::records::{BatchBuilder, BatchConfig, RecordHeader};
use sluice_schemas::wire::{self as w, finish_request, frame, RequestBody};

fn batch(records: usize, compression: Compression) -> Vec<u8> {
    let mut b = BatchBuilder::new(BatchConfig::default()).unwrap();
    for i in 0..records {
        let key = format!("key-{i}");
        let value = format!("value {i} {}", "x".repeat(i % 50));
        b.push(
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[RecordHeader { key: "h", value: Some(b"v") }],
            1_000 + i as i64,
        )
        .unwrap();
    }
    if compression == Compression::None {
        return b.finish().unwrap();
    }
    let packed = compress(compression, b.records_bytes()).unwrap();
    b.finish_compressed(&packed, compression).unwrap()
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    println!("{target}/seed-{name}: {} bytes", bytes.len());
}

fn native() {
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let body = w::MetadataRequest::create(&mut b, &w::MetadataRequestArgs::default());
    let env = finish_request(&mut b, 1, 0, Some("seed"), RequestBody::MetadataRequest, body.as_union_value()).to_vec();
    write("native_frame", "metadata", &frame(&env, &[]));

    let payload = [batch(3, Compression::None), batch(5, Compression::Lz4)].concat();
    let first = payload.len() - batch(5, Compression::Lz4).len();
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let parts = [(0u32, 0u32, first as u32), (1, first as u32, (payload.len() - first) as u32)];
    let partitions: Vec<_> = parts
        .iter()
        .map(|&(partition, offset, length)| {
            let slice = w::Slice::new(offset, length);
            w::PartitionProduce::create(&mut b, &w::PartitionProduceArgs { partition, records: Some(&slice) })
        })
        .collect();
    let partitions = b.create_vector(&partitions);
    let topic = b.create_string("orders");
    let topic =
        w::TopicProduce::create(&mut b, &w::TopicProduceArgs { topic: Some(topic), partitions: Some(partitions) });
    let topics = b.create_vector(&[topic]);
    let body = w::ProduceRequest::create(
        &mut b,
        &w::ProduceRequestArgs { acks: -1, timeout_ms: 30_000, topics: Some(topics), transactional_id: None },
    );
    let env = finish_request(&mut b, 2, 0, Some("seed"), RequestBody::ProduceRequest, body.as_union_value()).to_vec();
    write("native_frame", "produce", &frame(&env, &payload));

    let mut b = flatbuffers::FlatBufferBuilder::new();
    let transactional_id = Some(b.create_string("payments-1"));
    let body = w::InitProducerIdRequest::create(
        &mut b,
        &w::InitProducerIdRequestArgs {
            producer_id: -1,
            producer_epoch: -1,
            transactional_id,
            transaction_timeout_ms: 60_000,
        },
    );
    let env = finish_request(&mut b, 3, 0, None, RequestBody::InitProducerIdRequest, body.as_union_value()).to_vec();
    write("native_frame", "init-producer-id", &frame(&env, &[]));

    let mut b = flatbuffers::FlatBufferBuilder::new();
    let transactional_id = Some(b.create_string("payments-1"));
    let body = w::EndTxnRequest::create(
        &mut b,
        &w::EndTxnRequestArgs { transactional_id, producer_id: 7, producer_epoch: 0, commit: true },
    );
    let env = finish_request(&mut b, 5, 0, None, RequestBody::EndTxnRequest, body.as_union_value()).to_vec();
    write("native_frame", "end-txn", &frame(&env, &[]));

    let mut b = flatbuffers::FlatBufferBuilder::new();
    let group = b.create_string("readers");
    let member = b.create_string("");
    let body = w::HeartbeatRequest::create(
        &mut b,
        &w::HeartbeatRequestArgs { group_id: Some(group), member_id: Some(member), generation: 3 },
    );
    let env = finish_request(&mut b, 4, 0, Some("seed"), RequestBody::HeartbeatRequest, body.as_union_value()).to_vec();
    write("native_frame", "heartbeat", &frame(&env, &[]));

    let mut b = flatbuffers::FlatBufferBuilder::new();
    let mechanism = Some(b.create_string("SCRAM-SHA-512"));
    let body = w::SaslHandshakeRequest::create(&mut b, &w::SaslHandshakeRequestArgs { mechanism });
    let env = finish_request(&mut b, 6, 0, None, RequestBody::SaslHandshakeRequest, body.as_union_value()).to_vec();
    write("native_frame", "sasl-handshake", &frame(&env, &[]));

    let mut b = flatbuffers::FlatBufferBuilder::new();
    let token = Some(b.create_vector(b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL"));
    let body = w::SaslAuthenticateRequest::create(&mut b, &w::SaslAuthenticateRequestArgs { token });
    let env = finish_request(&mut b, 7, 0, None, RequestBody::SaslAuthenticateRequest, body.as_union_value()).to_vec();
    write("native_frame", "sasl-authenticate", &frame(&env, &[]));

    let mut b = flatbuffers::FlatBufferBuilder::new();
    let (user, mechanism) = (Some(b.create_string("alice")), Some(b.create_string("SCRAM-SHA-256")));
    let (salt, salted_password) = (Some(b.create_vector(&[7u8; 16])), Some(b.create_vector(&[9u8; 32])));
    let change = w::UserChange::create(
        &mut b,
        &w::UserChangeArgs { user, mechanism, delete: false, iterations: 4_096, salt, salted_password },
    );
    let changes = Some(b.create_vector(&[change]));
    let body = w::AlterUsersRequest::create(&mut b, &w::AlterUsersRequestArgs { changes });
    let env = finish_request(&mut b, 8, 0, None, RequestBody::AlterUsersRequest, body.as_union_value()).to_vec();
    write("native_frame", "alter-users", &frame(&env, &[]));

    let mut b = flatbuffers::FlatBufferBuilder::new();
    let args = w::AclArgs {
        resource_type: 2,
        resource_name: Some(b.create_string("orders")),
        pattern_type: 4,
        principal: Some(b.create_string("User:alice")),
        host: Some(b.create_string("*")),
        operation: 3,
        permission: 3,
    };
    let acl = w::Acl::create(&mut b, &args);
    let acls = Some(b.create_vector(&[acl]));
    let body = w::CreateAclsRequest::create(&mut b, &w::CreateAclsRequestArgs { acls });
    let env = finish_request(&mut b, 9, 0, None, RequestBody::CreateAclsRequest, body.as_union_value()).to_vec();
    write("native_frame", "create-acls", &frame(&env, &[]));
}

fn batches() {
    for (name, codec) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        write("record_batch", name, &batch(7, codec));
    }
    write("record_batch", "two", &[batch(2, Compression::None), batch(3, Compression::Gzip)].concat());
}

fn listener() -> AdvertisedListener {
    AdvertisedListener { name: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: 9092 }
}

fn replication() {
    let messages = [
        Message::Heartbeat {
            node: NodeId(2),
            incarnation: Incarnation(7),
            want_shutdown: false,
            listeners: vec![listener()],
        },
        Message::AllocateProducerIds { node: NodeId(2), incarnation: Incarnation(7), after: Some(1_000) },
        Message::Fetch {
            partition: ClusterPartitionId(3),
            replica: NodeId(2),
            leader_epoch: sluice_schemas::ids::LeaderEpoch(4),
            fetch_offset: sluice_schemas::Offset(100),
            last_fetched_epoch: Some(sluice_schemas::ids::LeaderEpoch(3)),
            request_id: 9,
        },
    ];
    for (i, message) in messages.into_iter().enumerate() {
        // A heartbeat carries no data (its listeners come after its envelope).
        let data: &[u8] = if matches!(message, Message::Heartbeat { .. }) { b"" } else { b"data" };
        let envelope = Envelope { from: Endpoint::Node(NodeId(2)), to: Endpoint::Node(NodeId(1)), message };
        write("replication_message", &format!("message-{i}"), &wire::encode(&envelope, data).unwrap());
    }
}

fn controller() {
    let config = PartitionConfig { min_insync_replicas: 2, unclean_leader_election: false };
    let nodes = [NodeId(1), NodeId(2), NodeId(3)];
    let mut state = ClusterState::new(&nodes, &[(ClusterPartitionId(0), nodes.to_vec(), config)]);
    let commands = [
        Command::RegisterNode { node: NodeId(1), incarnation: Incarnation(1) },
        Command::SetTopic {
            name: "orders".into(),
            replication_factor: 3,
            configs: vec![("retention.ms".into(), "1000".into())],
            assignments: vec![nodes.to_vec()],
            config,
        },
        Command::AllocateProducerIds { node: NodeId(1), incarnation: Incarnation(1), after: None },
        Command::SetListeners { node: NodeId(1), incarnation: Incarnation(1), listeners: vec![listener()] },
    ];
    for (i, command) in commands.iter().enumerate() {
        write("controller_state", &format!("command-{i}"), &command.encode());
        let outcome = state.apply_command(command);
        write("controller_state", &format!("outcome-{i}"), &outcome.encode());
    }
    write("controller_state", "state", &state.encode_snapshot());
}

/// Kafka requests as clients encode them (header and body, without the size prefix).
fn kafka() {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    fn request(key: ApiKey, version: i16, body: &impl Encodable) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("seed")))
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.to_vec()
    }
    let topic = || TopicName(StrBytes::from_static_str("orders"));
    write("kafka_request", "api-versions-v3", &request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()));
    write("kafka_request", "metadata-v12", &request(ApiKey::Metadata, 12, &MetadataRequest::default()));
    let records = bytes::Bytes::from(batch(3, Compression::None));
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        produce_request::TopicProduceData::default().with_name(topic()).with_partition_data(vec![
            produce_request::PartitionProduceData::default().with_index(0).with_records(Some(records)),
        ]),
    ]);
    write("kafka_request", "produce-v9", &request(ApiKey::Produce, 9, &produce));
    let fetch = FetchRequest::default().with_max_wait_ms(500).with_topics(vec![fetch_request::FetchTopic::default()
        .with_topic(topic())
        .with_partitions(vec![fetch_request::FetchPartition::default().with_partition(0).with_fetch_offset(5)])]);
    write("kafka_request", "fetch-v12", &request(ApiKey::Fetch, 12, &fetch));
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("readers")))
        .with_session_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(bytes::Bytes::from_static(b"\0\x01"))]);
    write("kafka_request", "join-group-v7", &request(ApiKey::JoinGroup, 7, &join));
    let handshake = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
    write("kafka_request", "sasl-handshake-v1", &request(ApiKey::SaslHandshake, 1, &handshake));
    let token = SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from_static(b"\0user\0pencil"));
    write("kafka_request", "sasl-authenticate-v2", &request(ApiKey::SaslAuthenticate, 2, &token));
    let upsert = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_static_str("user"))
            .with_mechanism(1)
            .with_iterations(4096)
            .with_salt(bytes::Bytes::from_static(b"salt"))
            .with_salted_password(bytes::Bytes::from_static(&[7; 32])),
    ]);
    write("kafka_request", "alter-user-scram-credentials-v0", &request(ApiKey::AlterUserScramCredentials, 0, &upsert));
}

/// SASL logins: PLAIN, and SCRAM client-first and client-final messages (the proof is
/// wrong, so the exchange ends with an error after reading the whole message).
fn sasl() {
    write("sasl_exchange", "plain", b"\x02\0user\0pencil");
    let scram = b"\x00n,,n=user,r=rOprNGfwEbeRWgbNEkqO\xffc=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    write("sasl_exchange", "scram-sha-256", scram);
    write("sasl_exchange", "scram-sha-512-extension", b"\x01n,,n=user,r=abc,tokenauth=true");
}

/// A closed segment's index files and a producer snapshot, as a log writes them.
fn storage() {
    use sluice_storage::index::SegmentIndex;
    use sluice_storage::producers::{BatchIdentity, ProducerBatch, ProducerStates};
    let mut index = SegmentIndex::new(sluice_schemas::Offset(1_000), 4096);
    let mut position = 0;
    for i in 0..20u64 {
        index.on_batch(sluice_schemas::Offset(1_000 + 10 * i), position, 3_000, 1_700_000_000_000 + i as i64);
        position += 3_000;
    }
    let (offsets, times) = index.encode();
    let mut bytes = position.to_be_bytes().to_vec();
    bytes.extend_from_slice(&4096u64.to_be_bytes());
    bytes.extend_from_slice(&offsets);
    bytes.extend_from_slice(&times);
    write("storage_files", "index", &bytes);
    let mut states = ProducerStates::default();
    for (pid, base) in [(1_000i64, 0u64), (1_001, 10), (1_000, 20), (2_000, 35)] {
        let id = BatchIdentity { producer_id: pid, epoch: 0, first_sequence: 0, last_sequence: 9 };
        states.record(ProducerBatch { id, base: sluice_schemas::Offset(base), last: sluice_schemas::Offset(base + 9) });
    }
    write("storage_files", "producers", &states.encode());
    // Two segments as a log writes them (base offsets stamped), a checkpoint, epochs and
    // the first segment's offset index; then the same with the second segment's tail torn.
    let stamped = |base: u64, records: usize, compression: Compression| {
        let mut b = batch(records, compression);
        b[..8].copy_from_slice(&base.to_be_bytes());
        b
    };
    let first: Vec<u8> = [stamped(0, 4, Compression::None), stamped(4, 6, Compression::Lz4)].concat();
    let second: Vec<u8> = [stamped(10, 3, Compression::None), stamped(13, 5, Compression::Zstd)].concat();
    let mut dir = vec![1 | 4 | 8 | 16];
    for (step, bytes) in [(0u16, &first), (10, &second)] {
        dir.extend_from_slice(&step.to_be_bytes());
        dir.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
        dir.extend_from_slice(bytes);
    }
    let mut whole = dir.clone();
    whole.extend_from_slice(b"\xFF\xFE0\n\xFF0 0\n1 10\n\xFF");
    let mut index = SegmentIndex::new(sluice_schemas::Offset(0), 512);
    index.on_batch(sluice_schemas::Offset(0), 0, first.len() as u64, 1_000);
    whole.extend_from_slice(&index.encode().0);
    write("segment_recovery", "two-segments", &whole);
    write("segment_recovery", "torn-tail", &dir[..dir.len() - 7]);
}

/// A certificate's DER as the node reads it: version, serial, algorithm, issuer,
/// validity, then a subject of three RDNs (one with two attributes), built by hand.
fn certificates() {
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, contents.len() as u8];
        out.extend_from_slice(contents);
        out
    }
    let attribute = |oid: &[u8], tag: u8, value: &[u8]| tlv(0x30, &[tlv(0x06, oid), tlv(tag, value)].concat());
    let subject = [
        tlv(0x31, &attribute(&[0x55, 4, 6], 0x13, b"US")),
        tlv(0x31, &attribute(&[0x55, 4, 10], 0x0c, b"Acme, Inc.")),
        tlv(
            0x31,
            &[attribute(&[0x55, 4, 3], 0x0c, b"client"), attribute(&[0x55, 4, 11], 0x1e, &[0, b'o', 0, b'u'])].concat(),
        ),
    ]
    .concat();
    let tbs = [
        tlv(0xa0, &tlv(0x02, &[2])),
        tlv(0x02, &[1, 2, 3]),
        tlv(0x30, &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 2])),
        tlv(0x30, &[]),
        tlv(0x30, &[]),
        tlv(0x30, &subject),
    ]
    .concat();
    write("certificate_subject", "client", &tlv(0x30, &tlv(0x30, &tbs)));
}

fn main() {
    certificates();
    sasl();
    storage();
    kafka();
    native();
    batches();
    replication();
    controller();
}
