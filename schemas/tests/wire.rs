//! Specification tests of the native protocol's frames and envelopes (`sluice_schemas::wire`).
//!
//! What these tests pin down:
//! - a request of every API, with every field set to a value other than its default, goes
//!   through `finish_request`, `frame`, `FrameHeader::parse`, `FrameHeader::split` and
//!   `parse_request` and comes out with every field as it went in; record bytes travel in the
//!   payload and come back through `payload_slice`;
//! - the same for a response of every API and for `ErrorResponse`;
//! - large envelopes built honestly pass the verifier's limits, and envelopes that share
//!   objects to multiply the verifier's work are refused;
//! - random bytes, and random single-byte corruptions of valid envelopes, never panic the
//!   parsers, and whatever they accept can be read in full (every accessor, every payload
//!   slice) without panicking.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, UnionWIPOffset, Vector, WIPOffset};
use proptest::prelude::*;
use sluice_schemas::wire::*;

const FRAME_BYTES_MAX: u32 = 1 << 20;
const CORRELATION_ID: u32 = 0xDEAD_BEEF;
const API_VERSION: u16 = 3;
const CLIENT_ID: &str = "sluice-test-client";
/// Two record batches as they would lie in a produce request's or fetch response's payload;
/// the envelope names each by a `Slice`. Their content is opaque to the envelope.
const BATCH_ONE: &[u8] = b"first record batch bytes";
const BATCH_TWO: &[u8] = b"second, longer record batch bytes";
/// SCRAM tokens as a login's SaslAuthenticate requests and responses carry them, and a
/// credential's salt and salted password as AlterUsers carries them; opaque to the envelope.
const CLIENT_FIRST_TOKEN: &[u8] = b"n,,n=alice,r=rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST_TOKEN: &[u8] =
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const SALT: &[u8] = &[0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81];
const SALTED_PASSWORD: &[u8] =
    &[0xc4, 0xa4, 0x95, 0x10, 0x32, 0x3a, 0xb4, 0xf9, 0x52, 0xca, 0xc1, 0xfa, 0x99, 0x44, 0x19, 0x39];

fn strings<'f>(builder: &mut FlatBufferBuilder<'f>, items: &[&str]) -> WIPOffset<Vector<'f, ForwardsUOffset<&'f str>>> {
    let offsets: Vec<_> = items.iter().map(|item| builder.create_string(item)).collect();
    builder.create_vector(&offsets)
}

fn config_entries<'f>(builder: &mut FlatBufferBuilder<'f>) -> WIPOffset<Vector<'f, ForwardsUOffset<ConfigEntry<'f>>>> {
    let key = builder.create_string("retention.ms");
    let value = builder.create_string("86400000");
    let entry = ConfigEntry::create(builder, &ConfigEntryArgs { key: Some(key), value: Some(value), is_default: true });
    builder.create_vector(&[entry])
}

fn check_config_entries(entries: Option<Vector<'_, ForwardsUOffset<ConfigEntry<'_>>>>) {
    let entries = entries.unwrap();
    assert_eq!(entries.len(), 1);
    let entry = entries.get(0);
    assert_eq!(entry.key(), Some("retention.ms"));
    assert_eq!(entry.value(), Some("86400000"));
    assert!(entry.is_default());
}

fn string_list(list: Option<Vector<'_, ForwardsUOffset<&str>>>) -> Vec<String> {
    list.unwrap().iter().map(str::to_owned).collect()
}

/// The assignment `[orders: 0, 2, 5]`, as join responses, group descriptions and offset
/// fetches carry it.
fn topic_partitions<'f>(
    builder: &mut FlatBufferBuilder<'f>,
) -> WIPOffset<Vector<'f, ForwardsUOffset<TopicPartitions<'f>>>> {
    let topic = builder.create_string("orders");
    let partitions = builder.create_vector(&[0u32, 2, 5]);
    let assignment =
        TopicPartitions::create(builder, &TopicPartitionsArgs { topic: Some(topic), partitions: Some(partitions) });
    builder.create_vector(&[assignment])
}

fn check_topic_partitions(list: Option<Vector<'_, ForwardsUOffset<TopicPartitions<'_>>>>) {
    let list = list.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list.get(0).topic(), Some("orders"));
    assert_eq!(list.get(0).partitions().unwrap().iter().collect::<Vec<_>>(), [0, 2, 5]);
}

/// The access control entry "User:alice may describe the topics prefixed `orders` from
/// 10.0.0.7" (its four numbers distinct), as the ACL requests and responses carry it.
fn acl<'f>(builder: &mut FlatBufferBuilder<'f>) -> WIPOffset<Acl<'f>> {
    let resource_name = builder.create_string("orders");
    let principal = builder.create_string("User:alice");
    let host = builder.create_string("10.0.0.7");
    Acl::create(
        builder,
        &AclArgs {
            resource_type: 2,
            resource_name: Some(resource_name),
            pattern_type: 4,
            principal: Some(principal),
            host: Some(host),
            operation: 8,
            permission: 3,
        },
    )
}

fn acls<'f>(builder: &mut FlatBufferBuilder<'f>) -> WIPOffset<Vector<'f, ForwardsUOffset<Acl<'f>>>> {
    let acl = acl(builder);
    builder.create_vector(&[acl])
}

fn check_acl(acl: Option<Acl<'_>>) {
    let acl = acl.unwrap();
    assert_eq!((acl.resource_type(), acl.pattern_type(), acl.operation(), acl.permission()), (2, 4, 8, 3));
    assert_eq!(acl.resource_name(), Some("orders"));
    assert_eq!(acl.principal(), Some("User:alice"));
    assert_eq!(acl.host(), Some("10.0.0.7"));
}

fn check_acls(list: Option<Vector<'_, ForwardsUOffset<Acl<'_>>>>) {
    let list = list.unwrap();
    assert_eq!(list.len(), 1);
    check_acl(Some(list.get(0)));
}

/// The payload of a frame that carries both batches, and the slices that name them.
fn two_batches() -> (Vec<u8>, Slice, Slice) {
    let payload = [BATCH_ONE, BATCH_TWO].concat();
    let one = Slice::new(0, BATCH_ONE.len() as u32);
    let two = Slice::new(BATCH_ONE.len() as u32, BATCH_TWO.len() as u32);
    (payload, one, two)
}

// Requests ------------------------------------------------------------------------------

/// Builds a request body of `body_type` with every field set to a non-default value, and
/// the payload it refers to.
fn build_request_body(
    builder: &mut FlatBufferBuilder<'_>,
    body_type: RequestBody,
) -> (WIPOffset<UnionWIPOffset>, Vec<u8>) {
    let no_payload = Vec::new();
    match body_type {
        RequestBody::ApiVersionsRequest => {
            (ApiVersionsRequest::create(builder, &ApiVersionsRequestArgs {}).as_union_value(), no_payload)
        }
        RequestBody::MetadataRequest => {
            let topics = strings(builder, &["orders", "payments"]);
            (
                MetadataRequest::create(builder, &MetadataRequestArgs { topics: Some(topics) }).as_union_value(),
                no_payload,
            )
        }
        RequestBody::CreateTopicsRequest => {
            let name = builder.create_string("orders");
            let configs = config_entries(builder);
            let topic = CreatableTopic::create(
                builder,
                &CreatableTopicArgs { name: Some(name), partitions: 12, replication_factor: 3, configs: Some(configs) },
            );
            let topics = builder.create_vector(&[topic]);
            let body = CreateTopicsRequest::create(
                builder,
                &CreateTopicsRequestArgs { topics: Some(topics), timeout_ms: 1234, validate_only: true },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::DeleteTopicsRequest => {
            let names = strings(builder, &["orders", "payments"]);
            let body =
                DeleteTopicsRequest::create(builder, &DeleteTopicsRequestArgs { names: Some(names), timeout_ms: 4321 });
            (body.as_union_value(), no_payload)
        }
        RequestBody::CreatePartitionsRequest => {
            let topic = builder.create_string("orders");
            let increase =
                PartitionsIncrease::create(builder, &PartitionsIncreaseArgs { topic: Some(topic), count: 24 });
            let topics = builder.create_vector(&[increase]);
            let body = CreatePartitionsRequest::create(
                builder,
                &CreatePartitionsRequestArgs { topics: Some(topics), timeout_ms: 999, validate_only: true },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::DescribeConfigsRequest => {
            let topics = strings(builder, &["orders"]);
            let body = DescribeConfigsRequest::create(builder, &DescribeConfigsRequestArgs { topics: Some(topics) });
            (body.as_union_value(), no_payload)
        }
        RequestBody::AlterConfigsRequest => {
            let name = builder.create_string("orders");
            let set = config_entries(builder);
            let delete = strings(builder, &["cleanup.policy"]);
            let change = TopicConfigChange::create(
                builder,
                &TopicConfigChangeArgs { name: Some(name), set: Some(set), delete: Some(delete) },
            );
            let topics = builder.create_vector(&[change]);
            let body = AlterConfigsRequest::create(
                builder,
                &AlterConfigsRequestArgs { topics: Some(topics), validate_only: true },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::ProduceRequest => {
            let (payload, one, two) = two_batches();
            let partitions = [(3, one), (4, two)].map(|(partition, records)| {
                PartitionProduce::create(builder, &PartitionProduceArgs { partition, records: Some(&records) })
            });
            let partitions = builder.create_vector(&partitions);
            let topic = builder.create_string("orders");
            let topic =
                TopicProduce::create(builder, &TopicProduceArgs { topic: Some(topic), partitions: Some(partitions) });
            let topics = builder.create_vector(&[topic]);
            let transactional_id = Some(builder.create_string("payments-1"));
            let body = ProduceRequest::create(
                builder,
                &ProduceRequestArgs { acks: 1, timeout_ms: 5000, topics: Some(topics), transactional_id },
            );
            (body.as_union_value(), payload)
        }
        RequestBody::FetchRequest => {
            let partition = PartitionFetch::create(
                builder,
                &PartitionFetchArgs { partition: 2, fetch_offset: 42, max_bytes: 2048 },
            );
            let partitions = builder.create_vector(&[partition]);
            let topic = builder.create_string("orders");
            let topic =
                TopicFetch::create(builder, &TopicFetchArgs { topic: Some(topic), partitions: Some(partitions) });
            let topics = builder.create_vector(&[topic]);
            let body = FetchRequest::create(
                builder,
                &FetchRequestArgs {
                    max_wait_ms: 100,
                    min_bytes: 1024,
                    max_bytes: 4096,
                    topics: Some(topics),
                    isolation_level: 1,
                },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::ListOffsetsRequest => {
            let partition =
                PartitionListOffsets::create(builder, &PartitionListOffsetsArgs { partition: 1, timestamp: -2 });
            let partitions = builder.create_vector(&[partition]);
            let topic = builder.create_string("orders");
            let topic = TopicListOffsets::create(
                builder,
                &TopicListOffsetsArgs { topic: Some(topic), partitions: Some(partitions) },
            );
            let topics = builder.create_vector(&[topic]);
            let body = ListOffsetsRequest::create(
                builder,
                &ListOffsetsRequestArgs { topics: Some(topics), isolation_level: 1 },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::JoinGroupRequest => {
            let group_id = builder.create_string("billing");
            let member_id = builder.create_string("member-1");
            let topics = strings(builder, &["orders", "payments"]);
            let strategy = builder.create_string("roundrobin");
            let body = JoinGroupRequest::create(
                builder,
                &JoinGroupRequestArgs {
                    group_id: Some(group_id),
                    member_id: Some(member_id),
                    session_timeout_ms: 30_000,
                    rebalance_timeout_ms: 60_000,
                    topics: Some(topics),
                    strategy: Some(strategy),
                },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::HeartbeatRequest => {
            let group_id = builder.create_string("billing");
            let member_id = builder.create_string("member-1");
            let body = HeartbeatRequest::create(
                builder,
                &HeartbeatRequestArgs { group_id: Some(group_id), member_id: Some(member_id), generation: 4 },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::LeaveGroupRequest => {
            let group_id = builder.create_string("billing");
            let member_id = builder.create_string("member-1");
            let body = LeaveGroupRequest::create(
                builder,
                &LeaveGroupRequestArgs { group_id: Some(group_id), member_id: Some(member_id) },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::OffsetCommitRequest => {
            let metadata = builder.create_string("checkpoint");
            let partition = OffsetCommitPartition::create(
                builder,
                &OffsetCommitPartitionArgs { partition: 2, offset: 42, metadata: Some(metadata) },
            );
            let partitions = builder.create_vector(&[partition]);
            let topic = builder.create_string("orders");
            let topic = OffsetCommitTopic::create(
                builder,
                &OffsetCommitTopicArgs { topic: Some(topic), partitions: Some(partitions) },
            );
            let topics = builder.create_vector(&[topic]);
            let group_id = builder.create_string("billing");
            let member_id = builder.create_string("member-1");
            let body = OffsetCommitRequest::create(
                builder,
                &OffsetCommitRequestArgs {
                    group_id: Some(group_id),
                    member_id: Some(member_id),
                    generation: 4,
                    topics: Some(topics),
                },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::OffsetFetchRequest => {
            let group_id = builder.create_string("billing");
            let topics = topic_partitions(builder);
            let body = OffsetFetchRequest::create(
                builder,
                &OffsetFetchRequestArgs { group_id: Some(group_id), topics: Some(topics) },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::ListGroupsRequest => {
            (ListGroupsRequest::create(builder, &ListGroupsRequestArgs {}).as_union_value(), no_payload)
        }
        RequestBody::DescribeGroupsRequest => {
            let group_ids = strings(builder, &["billing", "audit"]);
            let body =
                DescribeGroupsRequest::create(builder, &DescribeGroupsRequestArgs { group_ids: Some(group_ids) });
            (body.as_union_value(), no_payload)
        }
        RequestBody::DeleteGroupsRequest => {
            let group_ids = strings(builder, &["billing", "audit"]);
            let body = DeleteGroupsRequest::create(builder, &DeleteGroupsRequestArgs { group_ids: Some(group_ids) });
            (body.as_union_value(), no_payload)
        }
        RequestBody::DeleteRecordsRequest => {
            let partition = PartitionOffset::create(builder, &PartitionOffsetArgs { partition: 2, offset: 42 });
            let partitions = builder.create_vector(&[partition]);
            let topic = builder.create_string("orders");
            let topic = TopicDeleteRecords::create(
                builder,
                &TopicDeleteRecordsArgs { topic: Some(topic), partitions: Some(partitions) },
            );
            let topics = builder.create_vector(&[topic]);
            let body = DeleteRecordsRequest::create(
                builder,
                &DeleteRecordsRequestArgs { topics: Some(topics), timeout_ms: 7500 },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::InitProducerIdRequest => {
            let transactional_id = builder.create_string("billing-tx");
            let body = InitProducerIdRequest::create(
                builder,
                &InitProducerIdRequestArgs {
                    producer_id: 4_000_000_123,
                    producer_epoch: 7,
                    transactional_id: Some(transactional_id),
                    transaction_timeout_ms: 15_000,
                },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::AddPartitionsToTxnRequest => {
            let transactional_id = builder.create_string("billing-tx");
            let topics = topic_partitions(builder);
            let body = AddPartitionsToTxnRequest::create(
                builder,
                &AddPartitionsToTxnRequestArgs {
                    transactional_id: Some(transactional_id),
                    producer_id: 4_000_000_123,
                    producer_epoch: 7,
                    topics: Some(topics),
                },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::EndTxnRequest => {
            let transactional_id = builder.create_string("billing-tx");
            let body = EndTxnRequest::create(
                builder,
                &EndTxnRequestArgs {
                    transactional_id: Some(transactional_id),
                    producer_id: 4_000_000_123,
                    producer_epoch: 7,
                    commit: true,
                },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::TxnOffsetCommitRequest => {
            let metadata = builder.create_string("checkpoint");
            let partition = OffsetCommitPartition::create(
                builder,
                &OffsetCommitPartitionArgs { partition: 2, offset: 42, metadata: Some(metadata) },
            );
            let partitions = builder.create_vector(&[partition]);
            let topic = builder.create_string("orders");
            let topic = OffsetCommitTopic::create(
                builder,
                &OffsetCommitTopicArgs { topic: Some(topic), partitions: Some(partitions) },
            );
            let topics = builder.create_vector(&[topic]);
            let transactional_id = builder.create_string("billing-tx");
            let group_id = builder.create_string("billing");
            let member_id = builder.create_string("member-1");
            let body = TxnOffsetCommitRequest::create(
                builder,
                &TxnOffsetCommitRequestArgs {
                    transactional_id: Some(transactional_id),
                    producer_id: 4_000_000_123,
                    producer_epoch: 7,
                    group_id: Some(group_id),
                    member_id: Some(member_id),
                    generation: 4,
                    topics: Some(topics),
                },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::ListTransactionsRequest => {
            (ListTransactionsRequest::create(builder, &ListTransactionsRequestArgs {}).as_union_value(), no_payload)
        }
        RequestBody::AbortTransactionRequest => {
            let transactional_id = builder.create_string("billing-tx");
            let body = AbortTransactionRequest::create(
                builder,
                &AbortTransactionRequestArgs { transactional_id: Some(transactional_id) },
            );
            (body.as_union_value(), no_payload)
        }
        RequestBody::SaslHandshakeRequest => {
            let mechanism = builder.create_string("SCRAM-SHA-512");
            let body = SaslHandshakeRequest::create(builder, &SaslHandshakeRequestArgs { mechanism: Some(mechanism) });
            (body.as_union_value(), no_payload)
        }
        RequestBody::SaslAuthenticateRequest => {
            let token = builder.create_vector(CLIENT_FIRST_TOKEN);
            let body = SaslAuthenticateRequest::create(builder, &SaslAuthenticateRequestArgs { token: Some(token) });
            (body.as_union_value(), no_payload)
        }
        RequestBody::DescribeUsersRequest => {
            let users = strings(builder, &["alice", "bob"]);
            let body = DescribeUsersRequest::create(builder, &DescribeUsersRequestArgs { users: Some(users) });
            (body.as_union_value(), no_payload)
        }
        RequestBody::AlterUsersRequest => {
            let user = builder.create_string("alice");
            let mechanism = builder.create_string("SCRAM-SHA-512");
            let salt = builder.create_vector(SALT);
            let salted_password = builder.create_vector(SALTED_PASSWORD);
            let change = UserChange::create(
                builder,
                &UserChangeArgs {
                    user: Some(user),
                    mechanism: Some(mechanism),
                    delete: true,
                    iterations: 8192,
                    salt: Some(salt),
                    salted_password: Some(salted_password),
                },
            );
            let changes = builder.create_vector(&[change]);
            let body = AlterUsersRequest::create(builder, &AlterUsersRequestArgs { changes: Some(changes) });
            (body.as_union_value(), no_payload)
        }
        RequestBody::CreateAclsRequest => {
            let acls = acls(builder);
            let body = CreateAclsRequest::create(builder, &CreateAclsRequestArgs { acls: Some(acls) });
            (body.as_union_value(), no_payload)
        }
        RequestBody::DescribeAclsRequest => {
            let filter = acl(builder);
            let body = DescribeAclsRequest::create(builder, &DescribeAclsRequestArgs { filter: Some(filter) });
            (body.as_union_value(), no_payload)
        }
        RequestBody::DeleteAclsRequest => {
            let filters = acls(builder);
            let body = DeleteAclsRequest::create(builder, &DeleteAclsRequestArgs { filters: Some(filters) });
            (body.as_union_value(), no_payload)
        }
        RequestBody::AlterReassignmentsRequest => {
            let topic = builder.create_string("orders");
            let replicas = builder.create_vector(&[4u32, 2, 3]);
            let to = PartitionMove::create(
                builder,
                &PartitionMoveArgs { topic: Some(topic), partition: 7, replicas: Some(replicas) },
            );
            let cancel =
                PartitionMove::create(builder, &PartitionMoveArgs { topic: Some(topic), partition: 8, replicas: None });
            let moves = builder.create_vector(&[to, cancel]);
            let body =
                AlterReassignmentsRequest::create(builder, &AlterReassignmentsRequestArgs { moves: Some(moves) });
            (body.as_union_value(), no_payload)
        }
        RequestBody::UnregisterNodeRequest => {
            let body = UnregisterNodeRequest::create(builder, &UnregisterNodeRequestArgs { node: 4 });
            (body.as_union_value(), no_payload)
        }
        RequestBody::AlterVotersRequest => {
            let body = AlterVotersRequest::create(builder, &AlterVotersRequestArgs { node: 4, add: true });
            (body.as_union_value(), no_payload)
        }
        RequestBody::DescribeQuorumRequest => {
            let body = DescribeQuorumRequest::create(builder, &DescribeQuorumRequestArgs {});
            (body.as_union_value(), no_payload)
        }
        RequestBody::ListReassignmentsRequest => {
            let topic = builder.create_string("orders");
            let topics = builder.create_vector(&[topic]);
            let body =
                ListReassignmentsRequest::create(builder, &ListReassignmentsRequestArgs { topics: Some(topics) });
            (body.as_union_value(), no_payload)
        }
        other => panic!("no request body of type {other:?}"),
    }
}

/// Asserts that `request` carries exactly what `build_request_body` put in.
fn check_request(request: &Request<'_>, payload: &[u8]) {
    assert_eq!(request.correlation_id(), CORRELATION_ID);
    assert_eq!(request.api_version(), API_VERSION);
    assert_eq!(request.client_id(), Some(CLIENT_ID));
    match request.body_type() {
        RequestBody::ApiVersionsRequest => {
            request.body_as_api_versions_request().unwrap();
        }
        RequestBody::MetadataRequest => {
            let body = request.body_as_metadata_request().unwrap();
            assert_eq!(string_list(body.topics()), ["orders", "payments"]);
        }
        RequestBody::CreateTopicsRequest => {
            let body = request.body_as_create_topics_request().unwrap();
            assert_eq!(body.timeout_ms(), 1234);
            assert!(body.validate_only());
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            let topic = topics.get(0);
            assert_eq!(topic.name(), Some("orders"));
            assert_eq!(topic.partitions(), 12);
            assert_eq!(topic.replication_factor(), 3);
            check_config_entries(topic.configs());
        }
        RequestBody::DeleteTopicsRequest => {
            let body = request.body_as_delete_topics_request().unwrap();
            assert_eq!(string_list(body.names()), ["orders", "payments"]);
            assert_eq!(body.timeout_ms(), 4321);
        }
        RequestBody::CreatePartitionsRequest => {
            let body = request.body_as_create_partitions_request().unwrap();
            assert_eq!(body.timeout_ms(), 999);
            assert!(body.validate_only());
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            assert_eq!(topics.get(0).count(), 24);
        }
        RequestBody::DescribeConfigsRequest => {
            let body = request.body_as_describe_configs_request().unwrap();
            assert_eq!(string_list(body.topics()), ["orders"]);
        }
        RequestBody::AlterConfigsRequest => {
            let body = request.body_as_alter_configs_request().unwrap();
            assert!(body.validate_only());
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            let change = topics.get(0);
            assert_eq!(change.name(), Some("orders"));
            check_config_entries(change.set());
            assert_eq!(string_list(change.delete()), ["cleanup.policy"]);
        }
        RequestBody::ProduceRequest => {
            let body = request.body_as_produce_request().unwrap();
            assert_eq!(body.transactional_id(), Some("payments-1"));
            assert_eq!(body.acks(), 1);
            assert_eq!(body.timeout_ms(), 5000);
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            let topic = topics.get(0);
            assert_eq!(topic.topic(), Some("orders"));
            let partitions = topic.partitions().unwrap();
            let read: Vec<(u32, &[u8])> = partitions
                .iter()
                .map(|partition| (partition.partition(), payload_slice(payload, partition.records().unwrap()).unwrap()))
                .collect();
            assert_eq!(read, [(3, BATCH_ONE), (4, BATCH_TWO)]);
        }
        RequestBody::FetchRequest => {
            let body = request.body_as_fetch_request().unwrap();
            assert_eq!((body.max_wait_ms(), body.min_bytes(), body.max_bytes()), (100, 1024, 4096));
            assert_eq!(body.isolation_level(), 1);
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            let partitions = topics.get(0).partitions().unwrap();
            assert_eq!(partitions.len(), 1);
            let partition = partitions.get(0);
            assert_eq!((partition.partition(), partition.fetch_offset(), partition.max_bytes()), (2, 42, 2048));
        }
        RequestBody::ListOffsetsRequest => {
            let body = request.body_as_list_offsets_request().unwrap();
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            let partitions = topics.get(0).partitions().unwrap();
            assert_eq!(partitions.len(), 1);
            assert_eq!((partitions.get(0).partition(), partitions.get(0).timestamp()), (1, -2));
            assert_eq!(body.isolation_level(), 1);
        }
        RequestBody::JoinGroupRequest => {
            let body = request.body_as_join_group_request().unwrap();
            assert_eq!(body.group_id(), Some("billing"));
            assert_eq!(body.member_id(), Some("member-1"));
            assert_eq!((body.session_timeout_ms(), body.rebalance_timeout_ms()), (30_000, 60_000));
            assert_eq!(string_list(body.topics()), ["orders", "payments"]);
            assert_eq!(body.strategy(), Some("roundrobin"));
        }
        RequestBody::HeartbeatRequest => {
            let body = request.body_as_heartbeat_request().unwrap();
            assert_eq!(body.group_id(), Some("billing"));
            assert_eq!(body.member_id(), Some("member-1"));
            assert_eq!(body.generation(), 4);
        }
        RequestBody::LeaveGroupRequest => {
            let body = request.body_as_leave_group_request().unwrap();
            assert_eq!(body.group_id(), Some("billing"));
            assert_eq!(body.member_id(), Some("member-1"));
        }
        RequestBody::OffsetCommitRequest => {
            let body = request.body_as_offset_commit_request().unwrap();
            assert_eq!(body.group_id(), Some("billing"));
            assert_eq!(body.member_id(), Some("member-1"));
            assert_eq!(body.generation(), 4);
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            let partitions = topics.get(0).partitions().unwrap();
            assert_eq!(partitions.len(), 1);
            let partition = partitions.get(0);
            assert_eq!((partition.partition(), partition.offset()), (2, 42));
            assert_eq!(partition.metadata(), Some("checkpoint"));
        }
        RequestBody::OffsetFetchRequest => {
            let body = request.body_as_offset_fetch_request().unwrap();
            assert_eq!(body.group_id(), Some("billing"));
            check_topic_partitions(body.topics());
        }
        RequestBody::ListGroupsRequest => {
            request.body_as_list_groups_request().unwrap();
        }
        RequestBody::DescribeGroupsRequest => {
            let body = request.body_as_describe_groups_request().unwrap();
            assert_eq!(string_list(body.group_ids()), ["billing", "audit"]);
        }
        RequestBody::DeleteGroupsRequest => {
            let body = request.body_as_delete_groups_request().unwrap();
            assert_eq!(string_list(body.group_ids()), ["billing", "audit"]);
        }
        RequestBody::DeleteRecordsRequest => {
            let body = request.body_as_delete_records_request().unwrap();
            assert_eq!(body.timeout_ms(), 7500);
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            let partitions = topics.get(0).partitions().unwrap();
            assert_eq!(partitions.len(), 1);
            assert_eq!((partitions.get(0).partition(), partitions.get(0).offset()), (2, 42));
        }
        RequestBody::InitProducerIdRequest => {
            let body = request.body_as_init_producer_id_request().unwrap();
            assert_eq!((body.producer_id(), body.producer_epoch()), (4_000_000_123, 7));
            assert_eq!(body.transactional_id(), Some("billing-tx"));
            assert_eq!(body.transaction_timeout_ms(), 15_000);
        }
        RequestBody::AddPartitionsToTxnRequest => {
            let body = request.body_as_add_partitions_to_txn_request().unwrap();
            assert_eq!(body.transactional_id(), Some("billing-tx"));
            assert_eq!((body.producer_id(), body.producer_epoch()), (4_000_000_123, 7));
            check_topic_partitions(body.topics());
        }
        RequestBody::EndTxnRequest => {
            let body = request.body_as_end_txn_request().unwrap();
            assert_eq!(body.transactional_id(), Some("billing-tx"));
            assert_eq!((body.producer_id(), body.producer_epoch()), (4_000_000_123, 7));
            assert!(body.commit());
        }
        RequestBody::TxnOffsetCommitRequest => {
            let body = request.body_as_txn_offset_commit_request().unwrap();
            assert_eq!(body.transactional_id(), Some("billing-tx"));
            assert_eq!((body.producer_id(), body.producer_epoch()), (4_000_000_123, 7));
            assert_eq!(body.group_id(), Some("billing"));
            assert_eq!(body.member_id(), Some("member-1"));
            assert_eq!(body.generation(), 4);
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            let partitions = topics.get(0).partitions().unwrap();
            assert_eq!(partitions.len(), 1);
            let partition = partitions.get(0);
            assert_eq!((partition.partition(), partition.offset()), (2, 42));
            assert_eq!(partition.metadata(), Some("checkpoint"));
        }
        RequestBody::ListTransactionsRequest => {
            request.body_as_list_transactions_request().unwrap();
        }
        RequestBody::AbortTransactionRequest => {
            let body = request.body_as_abort_transaction_request().unwrap();
            assert_eq!(body.transactional_id(), Some("billing-tx"));
        }
        RequestBody::SaslHandshakeRequest => {
            let body = request.body_as_sasl_handshake_request().unwrap();
            assert_eq!(body.mechanism(), Some("SCRAM-SHA-512"));
        }
        RequestBody::SaslAuthenticateRequest => {
            let body = request.body_as_sasl_authenticate_request().unwrap();
            assert_eq!(body.token().unwrap().bytes(), CLIENT_FIRST_TOKEN);
        }
        RequestBody::DescribeUsersRequest => {
            let body = request.body_as_describe_users_request().unwrap();
            assert_eq!(string_list(body.users()), ["alice", "bob"]);
        }
        RequestBody::AlterUsersRequest => {
            let body = request.body_as_alter_users_request().unwrap();
            let changes = body.changes().unwrap();
            assert_eq!(changes.len(), 1);
            let change = changes.get(0);
            assert_eq!(change.user(), Some("alice"));
            assert_eq!(change.mechanism(), Some("SCRAM-SHA-512"));
            assert!(change.delete());
            assert_eq!(change.iterations(), 8192);
            assert_eq!(change.salt().unwrap().bytes(), SALT);
            assert_eq!(change.salted_password().unwrap().bytes(), SALTED_PASSWORD);
        }
        RequestBody::CreateAclsRequest => {
            check_acls(request.body_as_create_acls_request().unwrap().acls());
        }
        RequestBody::DescribeAclsRequest => {
            check_acl(request.body_as_describe_acls_request().unwrap().filter());
        }
        RequestBody::DeleteAclsRequest => {
            check_acls(request.body_as_delete_acls_request().unwrap().filters());
        }
        RequestBody::AlterReassignmentsRequest => {
            let moves = request.body_as_alter_reassignments_request().unwrap().moves().unwrap();
            assert_eq!(moves.len(), 2);
            let (to, cancel) = (moves.get(0), moves.get(1));
            assert_eq!((to.topic(), to.partition()), (Some("orders"), 7));
            assert_eq!(to.replicas().unwrap().iter().collect::<Vec<u32>>(), vec![4, 2, 3]);
            assert_eq!((cancel.topic(), cancel.partition(), cancel.replicas().is_none()), (Some("orders"), 8, true));
        }
        RequestBody::UnregisterNodeRequest => {
            assert_eq!(request.body_as_unregister_node_request().unwrap().node(), 4);
        }
        RequestBody::AlterVotersRequest => {
            let body = request.body_as_alter_voters_request().unwrap();
            assert_eq!((body.node(), body.add()), (4, true));
        }
        RequestBody::DescribeQuorumRequest => {
            assert!(request.body_as_describe_quorum_request().is_some());
        }
        RequestBody::ListReassignmentsRequest => {
            let topics = request.body_as_list_reassignments_request().unwrap().topics().unwrap();
            assert_eq!(topics.iter().collect::<Vec<&str>>(), vec!["orders"]);
        }
        other => panic!("unexpected body type {other:?}"),
    }
}

/// A complete request frame of `body_type` (header, envelope, payload).
fn request_frame(body_type: RequestBody) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let (body, payload) = build_request_body(&mut builder, body_type);
    let envelope = finish_request(&mut builder, CORRELATION_ID, API_VERSION, Some(CLIENT_ID), body_type, body);
    frame(envelope, &payload)
}

/// Reads a frame as the node does: the header, then the announced body, split in two.
fn read_frame(bytes: &[u8]) -> (&[u8], &[u8]) {
    let (header, body) = bytes.split_first_chunk::<FRAME_HEADER_BYTES>().unwrap();
    let header = FrameHeader::parse(header, FRAME_BYTES_MAX).unwrap();
    assert_eq!(header.body_bytes() as usize, body.len());
    let (envelope, payload) = header.split(body).unwrap();
    assert_eq!(header.payload_bytes() as usize, payload.len());
    (envelope, payload)
}

fn round_trip_request(body_type: RequestBody) {
    let bytes = request_frame(body_type);
    let (envelope, payload) = read_frame(&bytes);
    let request = parse_request(envelope).unwrap();
    assert_eq!(request.body_type(), body_type);
    assert!(api_key_of(request.body_type()).is_some());
    check_request(&request, payload);
}

#[test]
fn api_versions_request_round_trips() {
    round_trip_request(RequestBody::ApiVersionsRequest);
}

#[test]
fn metadata_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::MetadataRequest);
}

#[test]
fn create_topics_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::CreateTopicsRequest);
}

#[test]
fn delete_topics_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::DeleteTopicsRequest);
}

#[test]
fn create_partitions_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::CreatePartitionsRequest);
}

#[test]
fn describe_configs_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::DescribeConfigsRequest);
}

#[test]
fn alter_configs_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::AlterConfigsRequest);
}

#[test]
fn produce_request_round_trips_with_its_batches_in_the_payload() {
    round_trip_request(RequestBody::ProduceRequest);
    // The record bytes are not copied into the envelope: they follow it, untouched.
    let bytes = request_frame(RequestBody::ProduceRequest);
    let (envelope, payload) = read_frame(&bytes);
    assert_eq!(payload, [BATCH_ONE, BATCH_TWO].concat());
    assert!(!envelope.windows(BATCH_ONE.len()).any(|window| window == BATCH_ONE));
}

#[test]
fn fetch_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::FetchRequest);
}

#[test]
fn list_offsets_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::ListOffsetsRequest);
}

#[test]
fn join_group_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::JoinGroupRequest);
}

#[test]
fn heartbeat_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::HeartbeatRequest);
}

#[test]
fn leave_group_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::LeaveGroupRequest);
}

#[test]
fn offset_commit_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::OffsetCommitRequest);
}

#[test]
fn offset_fetch_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::OffsetFetchRequest);
}

#[test]
fn list_groups_request_round_trips() {
    round_trip_request(RequestBody::ListGroupsRequest);
}

#[test]
fn describe_groups_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::DescribeGroupsRequest);
}

#[test]
fn delete_groups_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::DeleteGroupsRequest);
}

#[test]
fn delete_records_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::DeleteRecordsRequest);
}

#[test]
fn init_producer_id_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::InitProducerIdRequest);
}

#[test]
fn add_partitions_to_txn_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::AddPartitionsToTxnRequest);
}

#[test]
fn end_txn_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::EndTxnRequest);
}

#[test]
fn txn_offset_commit_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::TxnOffsetCommitRequest);
}

#[test]
fn list_transactions_request_round_trips() {
    round_trip_request(RequestBody::ListTransactionsRequest);
}

#[test]
fn abort_transaction_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::AbortTransactionRequest);
}

#[test]
fn sasl_handshake_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::SaslHandshakeRequest);
}

#[test]
fn sasl_authenticate_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::SaslAuthenticateRequest);
}

#[test]
fn describe_users_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::DescribeUsersRequest);
}

#[test]
fn alter_users_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::AlterUsersRequest);
}

#[test]
fn create_acls_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::CreateAclsRequest);
}

#[test]
fn describe_acls_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::DescribeAclsRequest);
}

#[test]
fn delete_acls_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::DeleteAclsRequest);
}

#[test]
fn alter_reassignments_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::AlterReassignmentsRequest);
}

#[test]
fn list_reassignments_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::ListReassignmentsRequest);
}

#[test]
fn unregister_node_request_round_trips_with_every_field_set() {
    round_trip_request(RequestBody::UnregisterNodeRequest);
}

#[test]
fn voter_requests_round_trip_with_every_field_set() {
    round_trip_request(RequestBody::AlterVotersRequest);
    round_trip_request(RequestBody::DescribeQuorumRequest);
}

#[test]
fn every_request_body_type_is_covered_by_these_tests() {
    let covered = ALL_REQUEST_BODIES.len();
    assert_eq!(covered, RequestBody::ENUM_VALUES.len() - 1, "a request body type was added: add it to the tests");
}

#[test]
fn a_response_envelope_is_not_taken_for_a_request() {
    // The two roots share no file identifier, so this is not guaranteed to fail in
    // general; it must at least never panic and never yield a request with a body.
    let bytes = response_frame(ResponseBody::MetadataResponse);
    let (envelope, _) = read_frame(&bytes);
    if let Ok(request) = parse_request(envelope) {
        let _ = format!("{request:?}");
    }
}

const ALL_REQUEST_BODIES: [RequestBody; 37] = [
    RequestBody::ApiVersionsRequest,
    RequestBody::MetadataRequest,
    RequestBody::CreateTopicsRequest,
    RequestBody::DeleteTopicsRequest,
    RequestBody::CreatePartitionsRequest,
    RequestBody::DescribeConfigsRequest,
    RequestBody::AlterConfigsRequest,
    RequestBody::ProduceRequest,
    RequestBody::FetchRequest,
    RequestBody::ListOffsetsRequest,
    RequestBody::JoinGroupRequest,
    RequestBody::HeartbeatRequest,
    RequestBody::LeaveGroupRequest,
    RequestBody::OffsetCommitRequest,
    RequestBody::OffsetFetchRequest,
    RequestBody::ListGroupsRequest,
    RequestBody::DescribeGroupsRequest,
    RequestBody::DeleteGroupsRequest,
    RequestBody::DeleteRecordsRequest,
    RequestBody::InitProducerIdRequest,
    RequestBody::AddPartitionsToTxnRequest,
    RequestBody::EndTxnRequest,
    RequestBody::TxnOffsetCommitRequest,
    RequestBody::ListTransactionsRequest,
    RequestBody::AbortTransactionRequest,
    RequestBody::SaslHandshakeRequest,
    RequestBody::SaslAuthenticateRequest,
    RequestBody::DescribeUsersRequest,
    RequestBody::AlterUsersRequest,
    RequestBody::CreateAclsRequest,
    RequestBody::DescribeAclsRequest,
    RequestBody::DeleteAclsRequest,
    RequestBody::AlterReassignmentsRequest,
    RequestBody::ListReassignmentsRequest,
    RequestBody::UnregisterNodeRequest,
    RequestBody::AlterVotersRequest,
    RequestBody::DescribeQuorumRequest,
];

// Responses -----------------------------------------------------------------------------

fn topic_results<'f>(builder: &mut FlatBufferBuilder<'f>) -> WIPOffset<Vector<'f, ForwardsUOffset<TopicResult<'f>>>> {
    let name = builder.create_string("orders");
    let message = builder.create_string("topic 'orders' already exists");
    let result = TopicResult::create(
        builder,
        &TopicResultArgs { name: Some(name), error: ErrorCode::TopicAlreadyExists, message: Some(message) },
    );
    builder.create_vector(&[result])
}

fn check_topic_results(results: Option<Vector<'_, ForwardsUOffset<TopicResult<'_>>>>) {
    let results = results.unwrap();
    assert_eq!(results.len(), 1);
    let result = results.get(0);
    assert_eq!(result.name(), Some("orders"));
    assert_eq!(result.error(), ErrorCode::TopicAlreadyExists);
    assert_eq!(result.message(), Some("topic 'orders' already exists"));
}

/// The aborted transactions (producer id, first offset) the fetch response gives partition
/// `partition`: two, distinct per partition.
fn aborted_transactions_of(partition: i64) -> [(i64, i64); 2] {
    [(4_000_000_123, 20 + partition), (4_000_000_456, 90 + partition)]
}

/// Builds a response body of `body_type` with every field set to a non-default value, and
/// the payload it refers to.
fn build_response_body(
    builder: &mut FlatBufferBuilder<'_>,
    body_type: ResponseBody,
) -> (WIPOffset<UnionWIPOffset>, Vec<u8>) {
    let no_payload = Vec::new();
    match body_type {
        ResponseBody::ApiVersionsResponse => {
            let range = ApiVersionRange::create(
                builder,
                &ApiVersionRangeArgs { api: ApiKey::Fetch, min_version: 1, max_version: 2 },
            );
            let apis = builder.create_vector(&[range]);
            let node_version = builder.create_string("0.1.0");
            let body = ApiVersionsResponse::create(
                builder,
                &ApiVersionsResponseArgs {
                    error: ErrorCode::UnsupportedVersion,
                    apis: Some(apis),
                    node_version: Some(node_version),
                },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::MetadataResponse => {
            let host = builder.create_string("broker-1.example");
            let rack = builder.create_string("rack-a");
            let node =
                NodeInfo::create(builder, &NodeInfoArgs { node_id: 1, host: Some(host), port: 9092, rack: Some(rack) });
            let nodes = builder.create_vector(&[node]);
            let replicas = builder.create_vector(&[1u32, 2, 3]);
            let isr = builder.create_vector(&[2u32, 3]);
            let partition = PartitionMetadata::create(
                builder,
                &PartitionMetadataArgs {
                    partition: 5,
                    error: ErrorCode::NotLeaderOrFollower,
                    leader: 2,
                    leader_epoch: 7,
                    replicas: Some(replicas),
                    isr: Some(isr),
                },
            );
            let partitions = builder.create_vector(&[partition]);
            let name = builder.create_string("orders");
            let message = builder.create_string("leader moved");
            let topic = TopicMetadata::create(
                builder,
                &TopicMetadataArgs {
                    name: Some(name),
                    error: ErrorCode::LeaderNotAvailable,
                    message: Some(message),
                    partitions: Some(partitions),
                },
            );
            let topics = builder.create_vector(&[topic]);
            let body = MetadataResponse::create(
                builder,
                &MetadataResponseArgs { nodes: Some(nodes), controller_id: 1, topics: Some(topics) },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::CreateTopicsResponse => {
            let results = topic_results(builder);
            (
                CreateTopicsResponse::create(builder, &CreateTopicsResponseArgs { results: Some(results) })
                    .as_union_value(),
                no_payload,
            )
        }
        ResponseBody::DeleteTopicsResponse => {
            let results = topic_results(builder);
            (
                DeleteTopicsResponse::create(builder, &DeleteTopicsResponseArgs { results: Some(results) })
                    .as_union_value(),
                no_payload,
            )
        }
        ResponseBody::CreatePartitionsResponse => {
            let results = topic_results(builder);
            let body =
                CreatePartitionsResponse::create(builder, &CreatePartitionsResponseArgs { results: Some(results) });
            (body.as_union_value(), no_payload)
        }
        ResponseBody::DescribeConfigsResponse => {
            let name = builder.create_string("orders");
            let message = builder.create_string("partly described");
            let configs = config_entries(builder);
            let result = TopicConfigs::create(
                builder,
                &TopicConfigsArgs {
                    name: Some(name),
                    error: ErrorCode::InvalidConfig,
                    message: Some(message),
                    configs: Some(configs),
                },
            );
            let results = builder.create_vector(&[result]);
            let body =
                DescribeConfigsResponse::create(builder, &DescribeConfigsResponseArgs { results: Some(results) });
            (body.as_union_value(), no_payload)
        }
        ResponseBody::AlterConfigsResponse => {
            let results = topic_results(builder);
            (
                AlterConfigsResponse::create(builder, &AlterConfigsResponseArgs { results: Some(results) })
                    .as_union_value(),
                no_payload,
            )
        }
        ResponseBody::ProduceResponse => {
            let message = builder.create_string("not enough replicas in sync");
            let partition = PartitionProduceResult::create(
                builder,
                &PartitionProduceResultArgs {
                    partition: 3,
                    error: ErrorCode::NotEnoughReplicas,
                    message: Some(message),
                    base_offset: 100,
                    log_append_time_ms: 1_700_000_000_000,
                    log_start_offset: 5,
                },
            );
            let partitions = builder.create_vector(&[partition]);
            let topic = builder.create_string("orders");
            let topic = TopicProduceResult::create(
                builder,
                &TopicProduceResultArgs { topic: Some(topic), partitions: Some(partitions) },
            );
            let topics = builder.create_vector(&[topic]);
            (
                ProduceResponse::create(builder, &ProduceResponseArgs { topics: Some(topics) }).as_union_value(),
                no_payload,
            )
        }
        ResponseBody::FetchResponse => {
            let (payload, one, two) = two_batches();
            let mut partitions = Vec::new();
            for (partition, error, records) in [(0, ErrorCode::None, one), (1, ErrorCode::OffsetOutOfRange, two)] {
                let message = builder.create_string(&format!("partition {partition}"));
                let aborted = aborted_transactions_of(i64::from(partition)).map(|(producer_id, first_offset)| {
                    AbortedTransaction::create(builder, &AbortedTransactionArgs { producer_id, first_offset })
                });
                let aborted_transactions = builder.create_vector(&aborted);
                partitions.push(PartitionFetchResult::create(
                    builder,
                    &PartitionFetchResultArgs {
                        partition,
                        error,
                        message: Some(message),
                        high_watermark: 200 + i64::from(partition),
                        log_start_offset: 10,
                        records: Some(&records),
                        last_stable_offset: 150 + i64::from(partition),
                        aborted_transactions: Some(aborted_transactions),
                    },
                ));
            }
            let partitions = builder.create_vector(&partitions);
            let topic = builder.create_string("orders");
            let topic = TopicFetchResult::create(
                builder,
                &TopicFetchResultArgs { topic: Some(topic), partitions: Some(partitions) },
            );
            let topics = builder.create_vector(&[topic]);
            (FetchResponse::create(builder, &FetchResponseArgs { topics: Some(topics) }).as_union_value(), payload)
        }
        ResponseBody::ListOffsetsResponse => {
            let message = builder.create_string("offset found");
            let partition = PartitionOffsetResult::create(
                builder,
                &PartitionOffsetResultArgs {
                    partition: 1,
                    error: ErrorCode::OffsetOutOfRange,
                    message: Some(message),
                    timestamp: 1_234_567,
                    offset: 56,
                },
            );
            let partitions = builder.create_vector(&[partition]);
            let topic = builder.create_string("orders");
            let topic = TopicListOffsetsResult::create(
                builder,
                &TopicListOffsetsResultArgs { topic: Some(topic), partitions: Some(partitions) },
            );
            let topics = builder.create_vector(&[topic]);
            (
                ListOffsetsResponse::create(builder, &ListOffsetsResponseArgs { topics: Some(topics) })
                    .as_union_value(),
                no_payload,
            )
        }
        ResponseBody::ErrorResponse => {
            let message = builder.create_string("frame of 2000000 bytes exceeds the limit of 1048576 bytes");
            let body = ErrorResponse::create(
                builder,
                &ErrorResponseArgs { error: ErrorCode::InvalidRequest, message: Some(message) },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::JoinGroupResponse => {
            let message = builder.create_string("session timeout out of range");
            let member_id = builder.create_string("member-1");
            let leader_id = builder.create_string("member-0");
            let strategy = builder.create_string("range");
            let assignment = topic_partitions(builder);
            let body = JoinGroupResponse::create(
                builder,
                &JoinGroupResponseArgs {
                    error: ErrorCode::InvalidSessionTimeout,
                    message: Some(message),
                    generation: 4,
                    member_id: Some(member_id),
                    leader_id: Some(leader_id),
                    strategy: Some(strategy),
                    assignment: Some(assignment),
                },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::HeartbeatResponse => {
            let message = builder.create_string("group 'billing' is rebalancing");
            let body = HeartbeatResponse::create(
                builder,
                &HeartbeatResponseArgs { error: ErrorCode::RebalanceInProgress, message: Some(message) },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::LeaveGroupResponse => {
            let message = builder.create_string("no member 'member-1' in group 'billing'");
            let body = LeaveGroupResponse::create(
                builder,
                &LeaveGroupResponseArgs { error: ErrorCode::UnknownMemberId, message: Some(message) },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::OffsetCommitResponse => {
            let partition_message = builder.create_string("no partition 2 of 'orders'");
            let partition = PartitionResult::create(
                builder,
                &PartitionResultArgs {
                    partition: 2,
                    error: ErrorCode::UnknownTopicOrPartition,
                    message: Some(partition_message),
                },
            );
            let partitions = builder.create_vector(&[partition]);
            let topic = builder.create_string("orders");
            let topic = OffsetCommitTopicResult::create(
                builder,
                &OffsetCommitTopicResultArgs { topic: Some(topic), partitions: Some(partitions) },
            );
            let topics = builder.create_vector(&[topic]);
            let message = builder.create_string("generation 4 is stale");
            let body = OffsetCommitResponse::create(
                builder,
                &OffsetCommitResponseArgs {
                    error: ErrorCode::IllegalGeneration,
                    message: Some(message),
                    topics: Some(topics),
                },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::OffsetFetchResponse => {
            let metadata = builder.create_string("checkpoint");
            let partition = OffsetFetchPartition::create(
                builder,
                &OffsetFetchPartitionArgs { partition: 2, offset: 42, metadata: Some(metadata) },
            );
            let partitions = builder.create_vector(&[partition]);
            let topic = builder.create_string("orders");
            let topic = OffsetFetchTopic::create(
                builder,
                &OffsetFetchTopicArgs { topic: Some(topic), partitions: Some(partitions) },
            );
            let topics = builder.create_vector(&[topic]);
            let message = builder.create_string("invalid group id");
            let body = OffsetFetchResponse::create(
                builder,
                &OffsetFetchResponseArgs {
                    error: ErrorCode::InvalidGroupId,
                    message: Some(message),
                    topics: Some(topics),
                },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::ListGroupsResponse => {
            let group_id = builder.create_string("billing");
            let state = builder.create_string("Stable");
            let listing = GroupListing::create(
                builder,
                &GroupListingArgs { group_id: Some(group_id), state: Some(state), members: 3 },
            );
            let groups = builder.create_vector(&[listing]);
            let body = ListGroupsResponse::create(builder, &ListGroupsResponseArgs { groups: Some(groups) });
            (body.as_union_value(), no_payload)
        }
        ResponseBody::DescribeGroupsResponse => {
            let member_id = builder.create_string("member-1");
            let client_id = builder.create_string(CLIENT_ID);
            let client_host = builder.create_string("10.0.0.7");
            let assignment = topic_partitions(builder);
            let member = GroupMember::create(
                builder,
                &GroupMemberArgs {
                    member_id: Some(member_id),
                    client_id: Some(client_id),
                    client_host: Some(client_host),
                    assignment: Some(assignment),
                },
            );
            let members = builder.create_vector(&[member]);
            let group_id = builder.create_string("billing");
            let message = builder.create_string("group 'billing' not found");
            let state = builder.create_string("PreparingRebalance");
            let strategy = builder.create_string("cooperative-sticky");
            let description = GroupDescription::create(
                builder,
                &GroupDescriptionArgs {
                    group_id: Some(group_id),
                    error: ErrorCode::GroupIdNotFound,
                    message: Some(message),
                    state: Some(state),
                    strategy: Some(strategy),
                    generation: 4,
                    members: Some(members),
                },
            );
            let groups = builder.create_vector(&[description]);
            let body = DescribeGroupsResponse::create(builder, &DescribeGroupsResponseArgs { groups: Some(groups) });
            (body.as_union_value(), no_payload)
        }
        ResponseBody::DeleteGroupsResponse => {
            let name = builder.create_string("billing");
            let message = builder.create_string("group 'billing' has members");
            let result = TopicResult::create(
                builder,
                &TopicResultArgs { name: Some(name), error: ErrorCode::NonEmptyGroup, message: Some(message) },
            );
            let results = builder.create_vector(&[result]);
            let body = DeleteGroupsResponse::create(builder, &DeleteGroupsResponseArgs { results: Some(results) });
            (body.as_union_value(), no_payload)
        }
        ResponseBody::DeleteRecordsResponse => {
            let message = builder.create_string("offset 42 is beyond the log end");
            let partition = PartitionLowWatermark::create(
                builder,
                &PartitionLowWatermarkArgs {
                    partition: 2,
                    error: ErrorCode::OffsetOutOfRange,
                    message: Some(message),
                    low_watermark: 17,
                },
            );
            let partitions = builder.create_vector(&[partition]);
            let topic = builder.create_string("orders");
            let topic = TopicDeleteRecordsResult::create(
                builder,
                &TopicDeleteRecordsResultArgs { topic: Some(topic), partitions: Some(partitions) },
            );
            let topics = builder.create_vector(&[topic]);
            let body = DeleteRecordsResponse::create(builder, &DeleteRecordsResponseArgs { topics: Some(topics) });
            (body.as_union_value(), no_payload)
        }
        ResponseBody::InitProducerIdResponse => {
            let message = builder.create_string("no producer ids from the controller");
            let body = InitProducerIdResponse::create(
                builder,
                &InitProducerIdResponseArgs {
                    error: ErrorCode::CoordinatorNotAvailable,
                    message: Some(message),
                    producer_id: 12_000,
                    producer_epoch: 3,
                },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::AddPartitionsToTxnResponse => {
            let message = builder.create_string("another transaction of 'billing-tx' is completing");
            let body = AddPartitionsToTxnResponse::create(
                builder,
                &AddPartitionsToTxnResponseArgs { error: ErrorCode::ConcurrentTransactions, message: Some(message) },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::EndTxnResponse => {
            let message = builder.create_string("producer epoch 7 of 'billing-tx' is fenced");
            let body = EndTxnResponse::create(
                builder,
                &EndTxnResponseArgs { error: ErrorCode::ProducerFenced, message: Some(message) },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::ListTransactionsResponse => {
            let transactional_id = builder.create_string("billing-tx");
            let state = builder.create_string("Ongoing");
            let partitions = topic_partitions(builder);
            let description = TransactionDescription::create(
                builder,
                &TransactionDescriptionArgs {
                    transactional_id: Some(transactional_id),
                    producer_id: 12_000,
                    producer_epoch: 3,
                    state: Some(state),
                    timeout_ms: 15_000,
                    start_ms: 1_700_000_000_000,
                    partitions: Some(partitions),
                },
            );
            let transactions = builder.create_vector(&[description]);
            let message = builder.create_string("transaction state still loading");
            let body = ListTransactionsResponse::create(
                builder,
                &ListTransactionsResponseArgs {
                    error: ErrorCode::CoordinatorLoadInProgress,
                    message: Some(message),
                    transactions: Some(transactions),
                },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::SaslHandshakeResponse => {
            let message = builder.create_string("mechanism 'GSSAPI' is not enabled");
            let mechanisms = strings(builder, &["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]);
            let body = SaslHandshakeResponse::create(
                builder,
                &SaslHandshakeResponseArgs {
                    error: ErrorCode::UnsupportedSaslMechanism,
                    message: Some(message),
                    mechanisms: Some(mechanisms),
                },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::SaslAuthenticateResponse => {
            let message = builder.create_string("authentication of 'alice' failed");
            let token = builder.create_vector(SERVER_FIRST_TOKEN);
            let body = SaslAuthenticateResponse::create(
                builder,
                &SaslAuthenticateResponseArgs {
                    error: ErrorCode::SaslAuthenticationFailed,
                    message: Some(message),
                    token: Some(token),
                    session_lifetime_ms: 3_600_000,
                },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::DescribeUsersResponse => {
            let user = builder.create_string("alice");
            let mechanism = builder.create_string("SCRAM-SHA-256");
            let credential = UserCredential::create(
                builder,
                &UserCredentialArgs { user: Some(user), mechanism: Some(mechanism), iterations: 4096 },
            );
            let credentials = builder.create_vector(&[credential]);
            let message = builder.create_string("no user 'bob'");
            let body = DescribeUsersResponse::create(
                builder,
                &DescribeUsersResponseArgs {
                    error: ErrorCode::ResourceNotFound,
                    message: Some(message),
                    credentials: Some(credentials),
                },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::AlterUsersResponse => {
            let user = builder.create_string("alice");
            let message = builder.create_string("iterations 8192 out of range");
            let result = UserResult::create(
                builder,
                &UserResultArgs { user: Some(user), error: ErrorCode::UnacceptableCredential, message: Some(message) },
            );
            let results = builder.create_vector(&[result]);
            let body = AlterUsersResponse::create(builder, &AlterUsersResponseArgs { results: Some(results) });
            (body.as_union_value(), no_payload)
        }
        ResponseBody::AclsResponse => {
            let message = builder.create_string("not authorized to alter the cluster");
            let acls = acls(builder);
            let result = AclResult::create(
                builder,
                &AclResultArgs {
                    error: ErrorCode::ClusterAuthorizationFailed,
                    message: Some(message),
                    acls: Some(acls),
                },
            );
            let results = builder.create_vector(&[result]);
            let body = AclsResponse::create(builder, &AclsResponseArgs { results: Some(results) });
            (body.as_union_value(), no_payload)
        }
        ResponseBody::AlterReassignmentsResponse => {
            let topic = builder.create_string("orders");
            let why = builder.create_string("orders-8: no reassignment is in progress");
            let result = PartitionMoveResult::create(
                builder,
                &PartitionMoveResultArgs { topic: Some(topic), partition: 8, error: ErrorCode(85), message: Some(why) },
            );
            let results = builder.create_vector(&[result]);
            let message = builder.create_string("node 2 is not the controller");
            let body = AlterReassignmentsResponse::create(
                builder,
                &AlterReassignmentsResponseArgs {
                    error: ErrorCode::NotController,
                    message: Some(message),
                    results: Some(results),
                },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::AlterVotersResponse => {
            let message = builder.create_string("node 4 is not a member");
            let body = AlterVotersResponse::create(
                builder,
                &AlterVotersResponseArgs { error: ErrorCode::InvalidRequest, message: Some(message) },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::DescribeQuorumResponse => {
            let voters = builder.create_vector(&[1u32, 2, 3]);
            let learners = builder.create_vector(&[4u32]);
            let body = DescribeQuorumResponse::create(
                builder,
                &DescribeQuorumResponseArgs {
                    error: ErrorCode::None,
                    message: None,
                    leader: 2,
                    voters: Some(voters),
                    learners: Some(learners),
                },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::UnregisterNodeResponse => {
            let message = builder.create_string("node 4 is live: stop it first");
            let body = UnregisterNodeResponse::create(
                builder,
                &UnregisterNodeResponseArgs { error: ErrorCode::InvalidRequest, message: Some(message) },
            );
            (body.as_union_value(), no_payload)
        }
        ResponseBody::ListReassignmentsResponse => {
            let topic = builder.create_string("orders");
            let replicas = builder.create_vector(&[4u32, 2, 3, 1]);
            let adding = builder.create_vector(&[4u32]);
            let removing = builder.create_vector(&[1u32]);
            let moving = PartitionMoveInProgress::create(
                builder,
                &PartitionMoveInProgressArgs {
                    topic: Some(topic),
                    partition: 7,
                    replicas: Some(replicas),
                    adding: Some(adding),
                    removing: Some(removing),
                },
            );
            let moves = builder.create_vector(&[moving]);
            let body = ListReassignmentsResponse::create(
                builder,
                &ListReassignmentsResponseArgs { error: ErrorCode::None, message: None, moves: Some(moves) },
            );
            (body.as_union_value(), no_payload)
        }
        other => panic!("no response body of type {other:?}"),
    }
}

/// Asserts that `response` carries exactly what `build_response_body` put in.
fn check_response(response: &Response<'_>, payload: &[u8]) {
    assert_eq!(response.correlation_id(), CORRELATION_ID);
    match response.body_type() {
        ResponseBody::ApiVersionsResponse => {
            let body = response.body_as_api_versions_response().unwrap();
            assert_eq!(body.error(), ErrorCode::UnsupportedVersion);
            assert_eq!(body.node_version(), Some("0.1.0"));
            let apis = body.apis().unwrap();
            assert_eq!(apis.len(), 1);
            let range = apis.get(0);
            assert_eq!((range.api(), range.min_version(), range.max_version()), (ApiKey::Fetch, 1, 2));
        }
        ResponseBody::MetadataResponse => {
            let body = response.body_as_metadata_response().unwrap();
            assert_eq!(body.controller_id(), 1);
            let nodes = body.nodes().unwrap();
            assert_eq!(nodes.len(), 1);
            let node = nodes.get(0);
            assert_eq!((node.node_id(), node.host(), node.port()), (1, Some("broker-1.example"), 9092));
            assert_eq!(node.rack(), Some("rack-a"));
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            let topic = topics.get(0);
            assert_eq!(topic.name(), Some("orders"));
            assert_eq!(topic.error(), ErrorCode::LeaderNotAvailable);
            assert_eq!(topic.message(), Some("leader moved"));
            let partitions = topic.partitions().unwrap();
            assert_eq!(partitions.len(), 1);
            let partition = partitions.get(0);
            assert_eq!(partition.partition(), 5);
            assert_eq!(partition.error(), ErrorCode::NotLeaderOrFollower);
            assert_eq!((partition.leader(), partition.leader_epoch()), (2, 7));
            assert_eq!(partition.replicas().unwrap().iter().collect::<Vec<_>>(), [1, 2, 3]);
            assert_eq!(partition.isr().unwrap().iter().collect::<Vec<_>>(), [2, 3]);
        }
        ResponseBody::CreateTopicsResponse => {
            check_topic_results(response.body_as_create_topics_response().unwrap().results());
        }
        ResponseBody::DeleteTopicsResponse => {
            check_topic_results(response.body_as_delete_topics_response().unwrap().results());
        }
        ResponseBody::CreatePartitionsResponse => {
            check_topic_results(response.body_as_create_partitions_response().unwrap().results());
        }
        ResponseBody::DescribeConfigsResponse => {
            let results = response.body_as_describe_configs_response().unwrap().results().unwrap();
            assert_eq!(results.len(), 1);
            let result = results.get(0);
            assert_eq!(result.name(), Some("orders"));
            assert_eq!(result.error(), ErrorCode::InvalidConfig);
            assert_eq!(result.message(), Some("partly described"));
            check_config_entries(result.configs());
        }
        ResponseBody::AlterConfigsResponse => {
            check_topic_results(response.body_as_alter_configs_response().unwrap().results());
        }
        ResponseBody::ProduceResponse => {
            let topics = response.body_as_produce_response().unwrap().topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            let partitions = topics.get(0).partitions().unwrap();
            assert_eq!(partitions.len(), 1);
            let partition = partitions.get(0);
            assert_eq!(partition.partition(), 3);
            assert_eq!(partition.error(), ErrorCode::NotEnoughReplicas);
            assert_eq!(partition.message(), Some("not enough replicas in sync"));
            assert_eq!(partition.base_offset(), 100);
            assert_eq!(partition.log_append_time_ms(), 1_700_000_000_000);
            assert_eq!(partition.log_start_offset(), 5);
        }
        ResponseBody::FetchResponse => {
            let topics = response.body_as_fetch_response().unwrap().topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            let partitions = topics.get(0).partitions().unwrap();
            assert_eq!(partitions.len(), 2);
            for (index, (error, batch)) in
                [(ErrorCode::None, BATCH_ONE), (ErrorCode::OffsetOutOfRange, BATCH_TWO)].into_iter().enumerate()
            {
                let partition = partitions.get(index);
                assert_eq!(partition.partition(), index as u32);
                assert_eq!(partition.error(), error);
                assert_eq!(partition.message(), Some(format!("partition {index}").as_str()));
                assert_eq!(partition.high_watermark(), 200 + index as i64);
                assert_eq!(partition.log_start_offset(), 10);
                assert_eq!(payload_slice(payload, partition.records().unwrap()).unwrap(), batch);
                assert_eq!(partition.last_stable_offset(), 150 + index as i64);
                let aborted: Vec<(i64, i64)> = partition
                    .aborted_transactions()
                    .unwrap()
                    .iter()
                    .map(|aborted| (aborted.producer_id(), aborted.first_offset()))
                    .collect();
                assert_eq!(aborted, aborted_transactions_of(index as i64));
            }
        }
        ResponseBody::ListOffsetsResponse => {
            let topics = response.body_as_list_offsets_response().unwrap().topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            let partitions = topics.get(0).partitions().unwrap();
            assert_eq!(partitions.len(), 1);
            let partition = partitions.get(0);
            assert_eq!(partition.partition(), 1);
            assert_eq!(partition.error(), ErrorCode::OffsetOutOfRange);
            assert_eq!(partition.message(), Some("offset found"));
            assert_eq!((partition.timestamp(), partition.offset()), (1_234_567, 56));
        }
        ResponseBody::ErrorResponse => {
            let body = response.body_as_error_response().unwrap();
            assert_eq!(body.error(), ErrorCode::InvalidRequest);
            assert_eq!(body.message(), Some("frame of 2000000 bytes exceeds the limit of 1048576 bytes"));
        }
        ResponseBody::JoinGroupResponse => {
            let body = response.body_as_join_group_response().unwrap();
            assert_eq!(body.error(), ErrorCode::InvalidSessionTimeout);
            assert_eq!(body.message(), Some("session timeout out of range"));
            assert_eq!(body.generation(), 4);
            assert_eq!(body.member_id(), Some("member-1"));
            assert_eq!(body.leader_id(), Some("member-0"));
            assert_eq!(body.strategy(), Some("range"));
            check_topic_partitions(body.assignment());
        }
        ResponseBody::HeartbeatResponse => {
            let body = response.body_as_heartbeat_response().unwrap();
            assert_eq!(body.error(), ErrorCode::RebalanceInProgress);
            assert_eq!(body.message(), Some("group 'billing' is rebalancing"));
        }
        ResponseBody::LeaveGroupResponse => {
            let body = response.body_as_leave_group_response().unwrap();
            assert_eq!(body.error(), ErrorCode::UnknownMemberId);
            assert_eq!(body.message(), Some("no member 'member-1' in group 'billing'"));
        }
        ResponseBody::OffsetCommitResponse => {
            let body = response.body_as_offset_commit_response().unwrap();
            assert_eq!(body.error(), ErrorCode::IllegalGeneration);
            assert_eq!(body.message(), Some("generation 4 is stale"));
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            let partitions = topics.get(0).partitions().unwrap();
            assert_eq!(partitions.len(), 1);
            let partition = partitions.get(0);
            assert_eq!(partition.partition(), 2);
            assert_eq!(partition.error(), ErrorCode::UnknownTopicOrPartition);
            assert_eq!(partition.message(), Some("no partition 2 of 'orders'"));
        }
        ResponseBody::OffsetFetchResponse => {
            let body = response.body_as_offset_fetch_response().unwrap();
            assert_eq!(body.error(), ErrorCode::InvalidGroupId);
            assert_eq!(body.message(), Some("invalid group id"));
            let topics = body.topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            let partitions = topics.get(0).partitions().unwrap();
            assert_eq!(partitions.len(), 1);
            let partition = partitions.get(0);
            assert_eq!((partition.partition(), partition.offset()), (2, 42));
            assert_eq!(partition.metadata(), Some("checkpoint"));
        }
        ResponseBody::ListGroupsResponse => {
            let groups = response.body_as_list_groups_response().unwrap().groups().unwrap();
            assert_eq!(groups.len(), 1);
            let listing = groups.get(0);
            assert_eq!((listing.group_id(), listing.state(), listing.members()), (Some("billing"), Some("Stable"), 3));
        }
        ResponseBody::DescribeGroupsResponse => {
            let groups = response.body_as_describe_groups_response().unwrap().groups().unwrap();
            assert_eq!(groups.len(), 1);
            let group = groups.get(0);
            assert_eq!(group.group_id(), Some("billing"));
            assert_eq!(group.error(), ErrorCode::GroupIdNotFound);
            assert_eq!(group.message(), Some("group 'billing' not found"));
            assert_eq!(group.state(), Some("PreparingRebalance"));
            assert_eq!(group.strategy(), Some("cooperative-sticky"));
            assert_eq!(group.generation(), 4);
            let members = group.members().unwrap();
            assert_eq!(members.len(), 1);
            let member = members.get(0);
            assert_eq!(member.member_id(), Some("member-1"));
            assert_eq!(member.client_id(), Some(CLIENT_ID));
            assert_eq!(member.client_host(), Some("10.0.0.7"));
            check_topic_partitions(member.assignment());
        }
        ResponseBody::DeleteGroupsResponse => {
            let results = response.body_as_delete_groups_response().unwrap().results().unwrap();
            assert_eq!(results.len(), 1);
            let result = results.get(0);
            assert_eq!(result.name(), Some("billing"));
            assert_eq!(result.error(), ErrorCode::NonEmptyGroup);
            assert_eq!(result.message(), Some("group 'billing' has members"));
        }
        ResponseBody::DeleteRecordsResponse => {
            let topics = response.body_as_delete_records_response().unwrap().topics().unwrap();
            assert_eq!(topics.len(), 1);
            assert_eq!(topics.get(0).topic(), Some("orders"));
            let partitions = topics.get(0).partitions().unwrap();
            assert_eq!(partitions.len(), 1);
            let partition = partitions.get(0);
            assert_eq!(partition.partition(), 2);
            assert_eq!(partition.error(), ErrorCode::OffsetOutOfRange);
            assert_eq!(partition.message(), Some("offset 42 is beyond the log end"));
            assert_eq!(partition.low_watermark(), 17);
        }
        ResponseBody::InitProducerIdResponse => {
            let body = response.body_as_init_producer_id_response().unwrap();
            assert_eq!(body.error(), ErrorCode::CoordinatorNotAvailable);
            assert_eq!(body.message(), Some("no producer ids from the controller"));
            assert_eq!((body.producer_id(), body.producer_epoch()), (12_000, 3));
        }
        ResponseBody::AddPartitionsToTxnResponse => {
            let body = response.body_as_add_partitions_to_txn_response().unwrap();
            assert_eq!(body.error(), ErrorCode::ConcurrentTransactions);
            assert_eq!(body.message(), Some("another transaction of 'billing-tx' is completing"));
        }
        ResponseBody::EndTxnResponse => {
            let body = response.body_as_end_txn_response().unwrap();
            assert_eq!(body.error(), ErrorCode::ProducerFenced);
            assert_eq!(body.message(), Some("producer epoch 7 of 'billing-tx' is fenced"));
        }
        ResponseBody::ListTransactionsResponse => {
            let body = response.body_as_list_transactions_response().unwrap();
            assert_eq!(body.error(), ErrorCode::CoordinatorLoadInProgress);
            assert_eq!(body.message(), Some("transaction state still loading"));
            let transactions = body.transactions().unwrap();
            assert_eq!(transactions.len(), 1);
            let transaction = transactions.get(0);
            assert_eq!(transaction.transactional_id(), Some("billing-tx"));
            assert_eq!((transaction.producer_id(), transaction.producer_epoch()), (12_000, 3));
            assert_eq!(transaction.state(), Some("Ongoing"));
            assert_eq!(transaction.timeout_ms(), 15_000);
            assert_eq!(transaction.start_ms(), 1_700_000_000_000);
            check_topic_partitions(transaction.partitions());
        }
        ResponseBody::SaslHandshakeResponse => {
            let body = response.body_as_sasl_handshake_response().unwrap();
            assert_eq!(body.error(), ErrorCode::UnsupportedSaslMechanism);
            assert_eq!(body.message(), Some("mechanism 'GSSAPI' is not enabled"));
            assert_eq!(string_list(body.mechanisms()), ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]);
        }
        ResponseBody::SaslAuthenticateResponse => {
            let body = response.body_as_sasl_authenticate_response().unwrap();
            assert_eq!(body.error(), ErrorCode::SaslAuthenticationFailed);
            assert_eq!(body.message(), Some("authentication of 'alice' failed"));
            assert_eq!(body.token().unwrap().bytes(), SERVER_FIRST_TOKEN);
            assert_eq!(body.session_lifetime_ms(), 3_600_000);
        }
        ResponseBody::DescribeUsersResponse => {
            let body = response.body_as_describe_users_response().unwrap();
            assert_eq!(body.error(), ErrorCode::ResourceNotFound);
            assert_eq!(body.message(), Some("no user 'bob'"));
            let credentials = body.credentials().unwrap();
            assert_eq!(credentials.len(), 1);
            let credential = credentials.get(0);
            assert_eq!(credential.user(), Some("alice"));
            assert_eq!(credential.mechanism(), Some("SCRAM-SHA-256"));
            assert_eq!(credential.iterations(), 4096);
        }
        ResponseBody::AlterUsersResponse => {
            let results = response.body_as_alter_users_response().unwrap().results().unwrap();
            assert_eq!(results.len(), 1);
            let result = results.get(0);
            assert_eq!(result.user(), Some("alice"));
            assert_eq!(result.error(), ErrorCode::UnacceptableCredential);
            assert_eq!(result.message(), Some("iterations 8192 out of range"));
        }
        ResponseBody::AclsResponse => {
            let results = response.body_as_acls_response().unwrap().results().unwrap();
            assert_eq!(results.len(), 1);
            let result = results.get(0);
            assert_eq!(result.error(), ErrorCode::ClusterAuthorizationFailed);
            assert_eq!(result.message(), Some("not authorized to alter the cluster"));
            check_acls(result.acls());
        }
        ResponseBody::AlterReassignmentsResponse => {
            let body = response.body_as_alter_reassignments_response().unwrap();
            assert_eq!(
                (body.error(), body.message()),
                (ErrorCode::NotController, Some("node 2 is not the controller"))
            );
            let result = body.results().unwrap().get(0);
            assert_eq!((result.topic(), result.partition(), result.error()), (Some("orders"), 8, ErrorCode(85)));
            assert_eq!(result.message(), Some("orders-8: no reassignment is in progress"));
        }
        ResponseBody::AlterVotersResponse => {
            let body = response.body_as_alter_voters_response().unwrap();
            assert_eq!((body.error(), body.message()), (ErrorCode::InvalidRequest, Some("node 4 is not a member")));
        }
        ResponseBody::DescribeQuorumResponse => {
            let body = response.body_as_describe_quorum_response().unwrap();
            assert_eq!((body.error(), body.leader()), (ErrorCode::None, 2));
            assert_eq!(body.voters().unwrap().iter().collect::<Vec<u32>>(), vec![1, 2, 3]);
            assert_eq!(body.learners().unwrap().iter().collect::<Vec<u32>>(), vec![4]);
        }
        ResponseBody::UnregisterNodeResponse => {
            let body = response.body_as_unregister_node_response().unwrap();
            assert_eq!(
                (body.error(), body.message()),
                (ErrorCode::InvalidRequest, Some("node 4 is live: stop it first"))
            );
        }
        ResponseBody::ListReassignmentsResponse => {
            let body = response.body_as_list_reassignments_response().unwrap();
            assert_eq!((body.error(), body.message()), (ErrorCode::None, None));
            let moving = body.moves().unwrap().get(0);
            assert_eq!((moving.topic(), moving.partition()), (Some("orders"), 7));
            let list = |v: Option<flatbuffers::Vector<'_, u32>>| v.unwrap().iter().collect::<Vec<u32>>();
            assert_eq!(list(moving.replicas()), vec![4, 2, 3, 1]);
            assert_eq!((list(moving.adding()), list(moving.removing())), (vec![4], vec![1]));
        }
        other => panic!("unexpected body type {other:?}"),
    }
}

fn response_frame(body_type: ResponseBody) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let (body, payload) = build_response_body(&mut builder, body_type);
    let envelope = finish_response(&mut builder, CORRELATION_ID, body_type, body);
    frame(envelope, &payload)
}

fn round_trip_response(body_type: ResponseBody) {
    let bytes = response_frame(body_type);
    let (envelope, payload) = read_frame(&bytes);
    let response = parse_response(envelope).unwrap();
    assert_eq!(response.body_type(), body_type);
    check_response(&response, payload);
}

const ALL_RESPONSE_BODIES: [ResponseBody; 34] = [
    ResponseBody::ApiVersionsResponse,
    ResponseBody::MetadataResponse,
    ResponseBody::CreateTopicsResponse,
    ResponseBody::DeleteTopicsResponse,
    ResponseBody::CreatePartitionsResponse,
    ResponseBody::DescribeConfigsResponse,
    ResponseBody::AlterConfigsResponse,
    ResponseBody::ProduceResponse,
    ResponseBody::FetchResponse,
    ResponseBody::ListOffsetsResponse,
    ResponseBody::ErrorResponse,
    ResponseBody::JoinGroupResponse,
    ResponseBody::HeartbeatResponse,
    ResponseBody::LeaveGroupResponse,
    ResponseBody::OffsetCommitResponse,
    ResponseBody::OffsetFetchResponse,
    ResponseBody::ListGroupsResponse,
    ResponseBody::DescribeGroupsResponse,
    ResponseBody::DeleteGroupsResponse,
    ResponseBody::DeleteRecordsResponse,
    ResponseBody::InitProducerIdResponse,
    ResponseBody::AddPartitionsToTxnResponse,
    ResponseBody::EndTxnResponse,
    ResponseBody::ListTransactionsResponse,
    ResponseBody::SaslHandshakeResponse,
    ResponseBody::SaslAuthenticateResponse,
    ResponseBody::DescribeUsersResponse,
    ResponseBody::AlterUsersResponse,
    ResponseBody::AclsResponse,
    ResponseBody::AlterReassignmentsResponse,
    ResponseBody::ListReassignmentsResponse,
    ResponseBody::UnregisterNodeResponse,
    ResponseBody::AlterVotersResponse,
    ResponseBody::DescribeQuorumResponse,
];

#[test]
fn produce_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::ProduceResponse);
}

#[test]
fn fetch_response_round_trips_with_its_batches_in_the_payload() {
    round_trip_response(ResponseBody::FetchResponse);
}

#[test]
fn metadata_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::MetadataResponse);
}

#[test]
fn list_offsets_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::ListOffsetsResponse);
}

#[test]
fn error_response_round_trips() {
    round_trip_response(ResponseBody::ErrorResponse);
}

#[test]
fn admin_and_api_versions_responses_round_trip_with_every_field_set() {
    for body_type in [
        ResponseBody::ApiVersionsResponse,
        ResponseBody::CreateTopicsResponse,
        ResponseBody::DeleteTopicsResponse,
        ResponseBody::CreatePartitionsResponse,
        ResponseBody::DescribeConfigsResponse,
        ResponseBody::AlterConfigsResponse,
    ] {
        round_trip_response(body_type);
    }
}

#[test]
fn join_group_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::JoinGroupResponse);
}

#[test]
fn heartbeat_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::HeartbeatResponse);
}

#[test]
fn leave_group_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::LeaveGroupResponse);
}

#[test]
fn offset_commit_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::OffsetCommitResponse);
}

#[test]
fn offset_fetch_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::OffsetFetchResponse);
}

#[test]
fn list_groups_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::ListGroupsResponse);
}

#[test]
fn describe_groups_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::DescribeGroupsResponse);
}

#[test]
fn delete_groups_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::DeleteGroupsResponse);
}

#[test]
fn delete_records_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::DeleteRecordsResponse);
}

#[test]
fn init_producer_id_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::InitProducerIdResponse);
}

#[test]
fn add_partitions_to_txn_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::AddPartitionsToTxnResponse);
}

#[test]
fn end_txn_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::EndTxnResponse);
}

#[test]
fn list_transactions_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::ListTransactionsResponse);
}

#[test]
fn sasl_handshake_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::SaslHandshakeResponse);
}

#[test]
fn sasl_authenticate_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::SaslAuthenticateResponse);
}

#[test]
fn describe_users_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::DescribeUsersResponse);
}

#[test]
fn alter_users_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::AlterUsersResponse);
}

#[test]
fn acls_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::AclsResponse);
}

#[test]
fn alter_reassignments_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::AlterReassignmentsResponse);
}

#[test]
fn list_reassignments_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::ListReassignmentsResponse);
}

#[test]
fn unregister_node_response_round_trips_with_every_field_set() {
    round_trip_response(ResponseBody::UnregisterNodeResponse);
}

#[test]
fn voter_responses_round_trip_with_every_field_set() {
    round_trip_response(ResponseBody::AlterVotersResponse);
    round_trip_response(ResponseBody::DescribeQuorumResponse);
}

#[test]
fn every_response_body_type_is_covered_by_these_tests() {
    assert_eq!(
        ALL_RESPONSE_BODIES.len(),
        ResponseBody::ENUM_VALUES.len() - 1,
        "a response body type was added: add it to the tests"
    );
}

#[test]
fn a_fetch_response_whose_slice_overruns_the_payload_is_caught_by_payload_slice() {
    // The envelope verifies (the verifier knows nothing of the payload); the reader must
    // still refuse the slice rather than read past the frame.
    let bytes = response_frame(ResponseBody::FetchResponse);
    let (envelope, payload) = read_frame(&bytes);
    let short_payload = &payload[..payload.len() - 1];
    let response = parse_response(envelope).unwrap();
    let partitions = response.body_as_fetch_response().unwrap().topics().unwrap().get(0).partitions().unwrap();
    assert!(payload_slice(short_payload, partitions.get(0).records().unwrap()).is_ok());
    let error = payload_slice(short_payload, partitions.get(1).records().unwrap()).unwrap_err();
    assert!(matches!(error, FrameError::SliceOutOfBounds { .. }), "{error}");
}

// Verifier limits -----------------------------------------------------------------------

#[test]
fn large_honest_envelopes_pass_the_verifier_limits() {
    // Many tables of only default fields: the most tables per envelope byte a builder makes.
    let mut builder = FlatBufferBuilder::new();
    let partitions: Vec<_> =
        (0..20_000).map(|_| PartitionFetch::create(&mut builder, &PartitionFetchArgs::default())).collect();
    let partitions = builder.create_vector(&partitions);
    let topic = TopicFetch::create(&mut builder, &TopicFetchArgs { topic: None, partitions: Some(partitions) });
    let topics = builder.create_vector(&[topic]);
    let body =
        FetchRequest::create(&mut builder, &FetchRequestArgs { topics: Some(topics), ..FetchRequestArgs::default() });
    let envelope = finish_request(&mut builder, 1, 0, None, RequestBody::FetchRequest, body.as_union_value());
    assert_eq!(
        parse_request(envelope)
            .unwrap()
            .body_as_fetch_request()
            .unwrap()
            .topics()
            .unwrap()
            .get(0)
            .partitions()
            .unwrap()
            .len(),
        20_000
    );

    // Many tables of the widest vtable with only the last field set: the most vtable bytes
    // the verifier re-counts per envelope byte.
    let mut builder = FlatBufferBuilder::new();
    let mut partitions = Vec::new();
    for _ in 0..20_000 {
        let isr = builder.create_vector::<u32>(&[]);
        partitions.push(PartitionMetadata::create(
            &mut builder,
            &PartitionMetadataArgs { isr: Some(isr), ..PartitionMetadataArgs::default() },
        ));
    }
    let partitions = builder.create_vector(&partitions);
    let topic = TopicMetadata::create(
        &mut builder,
        &TopicMetadataArgs { partitions: Some(partitions), ..TopicMetadataArgs::default() },
    );
    let topics = builder.create_vector(&[topic]);
    let body = MetadataResponse::create(
        &mut builder,
        &MetadataResponseArgs { topics: Some(topics), ..MetadataResponseArgs::default() },
    );
    let envelope = finish_response(&mut builder, 1, ResponseBody::MetadataResponse, body.as_union_value());
    parse_response(envelope).unwrap();

    // A realistic large produce request: 5,000 partitions with their slices.
    let mut builder = FlatBufferBuilder::new();
    let partitions: Vec<_> = (0..5_000)
        .map(|partition| {
            let records = Slice::new(partition * 100, 100);
            PartitionProduce::create(&mut builder, &PartitionProduceArgs { partition, records: Some(&records) })
        })
        .collect();
    let partitions = builder.create_vector(&partitions);
    let name = builder.create_string("orders");
    let topic =
        TopicProduce::create(&mut builder, &TopicProduceArgs { topic: Some(name), partitions: Some(partitions) });
    let topics = builder.create_vector(&[topic]);
    let body = ProduceRequest::create(
        &mut builder,
        &ProduceRequestArgs { topics: Some(topics), ..ProduceRequestArgs::default() },
    );
    let envelope =
        finish_request(&mut builder, 1, 0, Some(CLIENT_ID), RequestBody::ProduceRequest, body.as_union_value());
    parse_request(envelope).unwrap();
}

#[test]
fn an_envelope_that_shares_a_large_string_many_times_is_refused() {
    // 1,000 references to one 4 KiB string: about 8 KiB on the wire, 4 MiB for a verifier
    // (or a node) that follows every reference.
    let mut builder = FlatBufferBuilder::new();
    let name = builder.create_string(&"x".repeat(4096));
    let topics = builder.create_vector(&vec![name; 1000]);
    let body = MetadataRequest::create(&mut builder, &MetadataRequestArgs { topics: Some(topics) });
    let envelope = finish_request(&mut builder, 1, 0, None, RequestBody::MetadataRequest, body.as_union_value());
    let error = parse_request(envelope).unwrap_err();
    assert!(matches!(&error, FrameError::InvalidEnvelope(message) if message.contains("pparent")), "{error}");
}

#[test]
fn an_envelope_that_shares_tables_to_multiply_them_is_refused() {
    // 200 references to one topic whose 200 references go to one partition: 40,000 tables
    // to visit in about 2 KiB.
    let mut builder = FlatBufferBuilder::new();
    let partition =
        PartitionFetch::create(&mut builder, &PartitionFetchArgs { partition: 1, ..PartitionFetchArgs::default() });
    let partitions = builder.create_vector(&vec![partition; 200]);
    let topic = TopicFetch::create(&mut builder, &TopicFetchArgs { topic: None, partitions: Some(partitions) });
    let topics = builder.create_vector(&vec![topic; 200]);
    let body =
        FetchRequest::create(&mut builder, &FetchRequestArgs { topics: Some(topics), ..FetchRequestArgs::default() });
    let envelope = finish_request(&mut builder, 1, 0, None, RequestBody::FetchRequest, body.as_union_value());
    assert!(envelope.len() < 4096);
    let error = parse_request(envelope).unwrap_err();
    assert!(matches!(error, FrameError::InvalidEnvelope(_)), "{error}");
}

// Robustness ----------------------------------------------------------------------------

/// Reads everything a verified request offers, as a careless handler might: every field
/// (the generated `Debug` visits each one, through the union and every vector) and every
/// payload slice. Only the absence of panics is checked.
fn read_all_of_request(request: &Request<'_>, payload: &[u8]) {
    let _ = format!("{request:?}");
    let _ = api_key_of(request.body_type());
    if let Some(produce) = request.body_as_produce_request() {
        for topic in produce.topics().iter().flatten() {
            for partition in topic.partitions().iter().flatten() {
                if let Some(records) = partition.records() {
                    let _ = payload_slice(payload, records);
                }
            }
        }
    }
}

fn read_all_of_response(response: &Response<'_>, payload: &[u8]) {
    let _ = format!("{response:?}");
    if let Some(fetch) = response.body_as_fetch_response() {
        for topic in fetch.topics().iter().flatten() {
            for partition in topic.partitions().iter().flatten() {
                if let Some(records) = partition.records() {
                    let _ = payload_slice(payload, records);
                }
            }
        }
    }
}

/// One valid envelope of every request type and its payload.
fn valid_request_envelopes() -> Vec<(Vec<u8>, Vec<u8>)> {
    ALL_REQUEST_BODIES
        .iter()
        .map(|&body_type| {
            let bytes = request_frame(body_type);
            let (envelope, payload) = read_frame(&bytes);
            (envelope.to_vec(), payload.to_vec())
        })
        .collect()
}

fn valid_response_envelopes() -> Vec<(Vec<u8>, Vec<u8>)> {
    ALL_RESPONSE_BODIES
        .iter()
        .map(|&body_type| {
            let bytes = response_frame(body_type);
            let (envelope, payload) = read_frame(&bytes);
            (envelope.to_vec(), payload.to_vec())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        if let Ok(request) = parse_request(&bytes) {
            read_all_of_request(&request, &bytes);
        }
        if let Ok(response) = parse_response(&bytes) {
            read_all_of_response(&response, &bytes);
        }
    }

    #[test]
    fn a_corrupted_byte_in_a_valid_request_never_panics_the_reader(
        which in 0..ALL_REQUEST_BODIES.len(),
        position in any::<prop::sample::Index>(),
        flip in 1..=u8::MAX,
    ) {
        let (mut envelope, payload) = valid_request_envelopes().swap_remove(which);
        let at = position.index(envelope.len());
        envelope[at] ^= flip;
        if let Ok(request) = parse_request(&envelope) {
            read_all_of_request(&request, &payload);
        }
    }

    #[test]
    fn a_corrupted_byte_in_a_valid_response_never_panics_the_reader(
        which in 0..ALL_RESPONSE_BODIES.len(),
        position in any::<prop::sample::Index>(),
        flip in 1..=u8::MAX,
    ) {
        let (mut envelope, payload) = valid_response_envelopes().swap_remove(which);
        let at = position.index(envelope.len());
        envelope[at] ^= flip;
        if let Ok(response) = parse_response(&envelope) {
            read_all_of_response(&response, &payload);
        }
    }

    #[test]
    fn any_header_either_is_refused_or_describes_a_consistent_frame_within_the_limit(
        bytes in any::<[u8; FRAME_HEADER_BYTES]>(),
        limit in any::<u32>(),
    ) {
        if let Ok(header) = FrameHeader::parse(&bytes, limit) {
            prop_assert!(header.frame_bytes <= limit);
            prop_assert_eq!(
                u64::from(header.payload_bytes()) + u64::from(header.envelope_bytes) + 4,
                u64::from(header.frame_bytes)
            );
            prop_assert_eq!(FrameHeader::encode(header.envelope_bytes as usize, header.payload_bytes() as usize), bytes);
        }
    }

    #[test]
    fn any_slice_is_either_refused_or_inside_the_payload(
        payload_bytes in 0usize..256,
        offset in prop_oneof![0u32..300, any::<u32>()],
        length in prop_oneof![0u32..300, any::<u32>()],
    ) {
        let payload = vec![7u8; payload_bytes];
        match payload_slice(&payload, &Slice::new(offset, length)) {
            Ok(bytes) => {
                prop_assert_eq!(bytes.len(), length as usize);
                prop_assert!(u64::from(offset) + u64::from(length) <= payload_bytes as u64);
            }
            Err(FrameError::SliceOutOfBounds { .. }) => {
                prop_assert!(u64::from(offset) + u64::from(length) > payload_bytes as u64);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}
