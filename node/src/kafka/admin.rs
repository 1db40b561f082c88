//! Kafka's metadata and admin APIs: ApiVersions, Metadata, FindCoordinator, CreateTopics,
//! DeleteTopics, CreatePartitions, DescribeConfigs, InitProducerId. Topic changes go to
//! shard 0 through `run_admin`, as the native protocol's do.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiVersionsResponse, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    DescribeLogDirsRequest, DescribeLogDirsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, InitProducerIdRequest, InitProducerIdResponse,
    MetadataRequest, MetadataResponse, ProducerId, TopicName,
};

use sluice_schemas::wire::ErrorCode;

use super::{code, text, Request, APIS};
use crate::acl::op;
use crate::errors::{ErrorKind, NodeError};
use crate::listener::Server;
use crate::ops::admin::run_admin;
use crate::replication::NodeId;
use crate::shard::{AdminRequest, ConfigChange, NewTopic};
use crate::topics::TopicId;

/// What Kafka clients see as the cluster id.
pub const CLUSTER_ID: &str = "sluice";
/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_STATIC_BROKER: i8 = 4;
/// FindCoordinator key types.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Kafka's feature flag for the transaction protocol, and the level finalized: 2 is
/// transactions v2 (KIP-890 part 2), which Kafka 4 clients then use (Produce v12 joins
/// partitions to the transaction, EndTxn v5 bumps the epoch, TxnOffsetCommit v5 without
/// AddOffsetsToTxn). Clients that do not read features (librdkafka, kafka-python) keep
/// transactions v1, which is served alongside.
pub const TRANSACTION_VERSION_FEATURE: &str = "transaction.version";
pub const TRANSACTION_VERSION: i16 = 2;
/// The epoch of the finalized features (they never change on a running cluster).
const FINALIZED_FEATURES_EPOCH: i64 = 1;

pub fn api_versions(error_code: i16) -> ApiVersionsResponse {
    use kafka_protocol::messages::api_versions_response::{FinalizedFeatureKey, SupportedFeatureKey};
    let api_keys = APIS
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default().with_api_key(*key as i16).with_min_version(*min).with_max_version(*max)
        })
        .collect();
    let feature = kafka_protocol::protocol::StrBytes::from_static_str(TRANSACTION_VERSION_FEATURE);
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
        .with_supported_features(vec![SupportedFeatureKey::default()
            .with_name(feature.clone())
            .with_min_version(0)
            .with_max_version(TRANSACTION_VERSION)])
        .with_finalized_features_epoch(FINALIZED_FEATURES_EPOCH)
        .with_finalized_features(vec![FinalizedFeatureKey::default()
            .with_name(feature)
            .with_min_version_level(TRANSACTION_VERSION)
            .with_max_version_level(TRANSACTION_VERSION)])
}

/// The topics a Metadata request asks for by name that do not exist and that it may
/// auto-create: with `--auto-create-topics` on, when the request allows it (v4+ say so;
/// older versions always do), on a node that has caught up with the cluster's topics
/// (else a topic it does not know yet may exist), and not internal ones (`__` names).
pub fn to_auto_create(server: &Rc<Server>, r: &Request, request: &MetadataRequest) -> Vec<String> {
    let shard = &server.shard;
    let allowed = r.version < 4 || request.allow_auto_topic_creation;
    if !shard.config.auto_create_topics || !allowed || !shard.has_metadata() {
        return Vec::new();
    }
    let metadata = shard.metadata();
    let mut names: Vec<String> = request
        .topics
        .iter()
        .flatten()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .filter(|n| !n.is_empty() && !n.starts_with("__") && metadata.topic(n).is_none())
        .collect();
    names.sort();
    names.dedup();
    // Kafka's check: CREATE on the cluster, or on each topic (quiet: the answer says
    // UNKNOWN_TOPIC_OR_PARTITION for the others).
    let caller = &r.caller;
    if !caller.sees(server, op::CREATE, crate::acl::resource::CLUSTER, crate::acl::resource::CLUSTER_NAME) {
        names.retain(|n| caller.sees(server, op::CREATE, crate::acl::resource::TOPIC, n));
    }
    names
}

pub fn metadata(server: &Rc<Server>, r: &Request, request: MetadataRequest) -> MetadataResponse {
    let v = r.version;
    let shard = &server.shard;
    let metadata = shard.metadata();
    let broker = |id: NodeId| BrokerId(i32::try_from(id.0).unwrap_or(-1));
    // A topic is asked for by name, or (v12+) by id alone.
    let request_topics_given = request.topics.as_ref().map(Vec::len);
    let asked: Vec<(Option<String>, TopicId)> = match request.topics {
        // v0 has no null: an empty list asks for every topic.
        Some(list) if !(v == 0 && list.is_empty()) => list
            .into_iter()
            .map(|t| match t.name {
                Some(n) if !n.0.is_empty() || t.topic_id.is_nil() => (Some(n.0.to_string()), TopicId::NONE),
                _ => {
                    let id = TopicId(*t.topic_id.as_bytes());
                    (metadata.topic_by_id(id).map(|t| t.name.clone()), id)
                }
            })
            .collect(),
        // Every topic: those the principal may not describe are left out.
        _ => metadata
            .topics()
            .filter(|t| r.caller.sees(server, op::DESCRIBE, crate::acl::resource::TOPIC, &t.name))
            .map(|t| (Some(t.name.clone()), t.id))
            .collect(),
    };
    let listing_all = request_lists_all(v, request_topics_given);
    // The nodes with a listener of the request's listener name: a partition led by
    // another is answered as leaderless (retriable), as Kafka answers it. Down nodes
    // stay listed (see `registered_node_addresses`).
    let brokers: Vec<MetadataResponseBroker> = shard
        .registered_node_addresses()
        .into_iter()
        .filter_map(|node| {
            let (host, port) = node.kafka_endpoint(&r.listener)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(broker(node.id))
                    .with_host(text(&host))
                    .with_port(i32::from(port))
                    .with_rack(node.rack.as_deref().map(text)),
            )
        })
        .collect();
    let listed = |leader: BrokerId| brokers.iter().any(|b| b.node_id == leader);
    let topics = asked
        .into_iter()
        .map(|(name, id)| {
            let Some(name) = name else {
                return MetadataResponseTopic::default()
                    .with_topic_id(uuid::Uuid::from_bytes(id.0))
                    .with_error_code(super::UNKNOWN_TOPIC_ID);
            };
            let topic = MetadataResponseTopic::default()
                .with_name(Some(TopicName(text(&name))))
                .with_is_internal(v >= 1 && crate::topics::is_internal(&name));
            if !listing_all && !r.caller.may_topic(server, op::DESCRIBE, &name) {
                let denied = crate::errors::error_code(ErrorKind::TopicAuthorizationFailed).0;
                // Asked by id: the name is not told (Kafka's answer).
                let topic = if id == TopicId::NONE { topic } else { topic.with_name(None) };
                return topic.with_error_code(denied);
            }
            match metadata.topic(&name) {
                Some(t) => topic.with_topic_id(uuid::Uuid::from_bytes(t.id.0)).with_partitions(
                    (0..t.partitions)
                        .map(|p| {
                            let placement = shard.placement(&name, p);
                            let leader = placement.leader.map_or(BrokerId(-1), broker);
                            let leader = if listed(leader) { leader } else { BrokerId(-1) };
                            let epoch = i32::try_from(placement.leader_epoch.0).unwrap_or(i32::MAX);
                            MetadataResponsePartition::default()
                                .with_error_code(if leader.0 < 0 { ErrorCode::LeaderNotAvailable.0 } else { 0 })
                                .with_partition_index(super::index_of(p))
                                .with_leader_id(leader)
                                .with_leader_epoch(if v >= 7 { epoch } else { -1 })
                                .with_replica_nodes(placement.replicas.into_iter().map(broker).collect())
                                .with_isr_nodes(placement.isr.into_iter().map(broker).collect())
                        })
                        .collect(),
                ),
                // A node that has not caught up with the cluster's topics even after
                // `wait_for_metadata`: a retriable answer, not "no such topic".
                None if !shard.has_metadata() => topic.with_error_code(ErrorCode::LeaderNotAvailable.0),
                None => topic.with_error_code(ErrorCode::UnknownTopicOrPartition.0),
            }
        })
        .collect();
    let controller = shard.controller_id().map_or(BrokerId(-1), broker);
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id((v >= 2).then(|| text(CLUSTER_ID)))
        .with_controller_id(if v >= 1 { controller } else { BrokerId(-1) })
        .with_topics(topics)
}

/// Whether a Metadata request's topics (`None`: null; `Some(n)`: a list of `n`) ask for
/// every topic (v0 has no null: an empty list does).
fn request_lists_all(version: i16, topics: Option<usize>) -> bool {
    match topics {
        None => true,
        Some(0) => version == 0,
        Some(_) => false,
    }
}

/// FindCoordinator: one key up to v3, a list of keys from v4 (KIP-699).
/// The first FindCoordinator for a transactional id creates the transactions' state
/// topic, as Kafka does (and waits, bounded, for its partitions to have leaders).
pub async fn create_txn_topic_for(server: &Rc<Server>, r: &Request, request: &FindCoordinatorRequest) {
    if request.key_type != KEY_TYPE_TRANSACTION {
        return;
    }
    // Only for a principal that may describe one of the ids asked about.
    let txn = crate::acl::resource::TRANSACTIONAL_ID;
    let mut keys = request.coordinator_keys.iter().map(|k| k.as_str()).chain(std::iter::once(request.key.as_str()));
    if keys.any(|key| r.caller.sees(server, op::DESCRIBE, txn, key)) {
        crate::ops::txn::ensure_txn_topic(&server.shard).await;
    }
}

pub fn find_coordinator(server: &Rc<Server>, r: &Request, request: FindCoordinatorRequest) -> FindCoordinatorResponse {
    if r.version >= 4 {
        use kafka_protocol::messages::find_coordinator_response::Coordinator;
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match may_find(server, r, request.key_type, key)
                    .and_then(|()| coordinator_of(server, &r.listener, request.key_type, key))
                {
                    Ok((id, host, port)) => c.with_node_id(id).with_host(text(&host)).with_port(port),
                    Err((error, message)) => c
                        .with_error_code(error.0)
                        .with_error_message(Some(text(message)))
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match may_find(server, r, request.key_type, &request.key)
        .and_then(|()| coordinator_of(server, &r.listener, request.key_type, &request.key))
    {
        Ok((id, host, port)) => {
            FindCoordinatorResponse::default().with_node_id(id).with_host(text(&host)).with_port(port)
        }
        Err((error, message)) => FindCoordinatorResponse::default()
            .with_error_code(error.0)
            .with_error_message((r.version >= 1).then(|| text(message)))
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}

/// DESCRIBE on the group or transactional id whose coordinator is asked for.
fn may_find(server: &Rc<Server>, r: &Request, key_type: i8, key: &str) -> Result<(), (ErrorCode, &'static str)> {
    if key_type == KEY_TYPE_TRANSACTION {
        if !r.caller.may(server, op::DESCRIBE, crate::acl::resource::TRANSACTIONAL_ID, key) {
            let code = crate::errors::error_code(ErrorKind::TransactionalIdAuthorizationFailed);
            return Err((code, "not authorized to describe this transactional id"));
        }
    } else if !r.caller.may_group(server, op::DESCRIBE, key) {
        return Err((
            crate::errors::error_code(ErrorKind::GroupAuthorizationFailed),
            "not authorized to describe this group",
        ));
    }
    Ok(())
}

/// The node coordinating `key`: the leader of the group's offsets partition, at its
/// Kafka listener named `listener`.
fn coordinator_of(
    server: &Rc<Server>,
    listener: &str,
    key_type: i8,
    key: &str,
) -> Result<(BrokerId, String, i32), (ErrorCode, &'static str)> {
    let (topic, partition) = if key_type == KEY_TYPE_TRANSACTION {
        (crate::txn::TXN_TOPIC, crate::txn::txn_partition(key))
    } else {
        (crate::groups::OFFSETS_TOPIC, crate::groups::offsets_partition(key))
    };
    let leader = server.shard.placement(topic, partition).leader;
    let address = leader.and_then(|l| server.shard.node_addresses().into_iter().find(|n| n.id == l));
    match address.and_then(|n| Some((n.id, n.kafka_endpoint(listener)?))) {
        Some((id, (host, port))) => Ok((BrokerId(i32::try_from(id.0).unwrap_or(-1)), host, i32::from(port))),
        None => Err((ErrorCode::CoordinatorNotAvailable, "the coordinator's internal partition has no leader yet")),
    }
}

fn error_message(r: &Result<(), NodeError>) -> Option<kafka_protocol::protocol::StrBytes> {
    r.as_ref().err().map(|e| text(&e.message))
}

pub async fn create_topics(server: &Rc<Server>, r: &Request, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut refused: BTreeMap<String, NodeError> = BTreeMap::new();
    let mut asked: Vec<(String, i32, i16)> = Vec::new();
    let mut topics = Vec::new();
    let may_create = r.caller.may_cluster(server, op::CREATE);
    for t in request.topics {
        let name = t.name.0.to_string();
        // Kafka's defaults: num.partitions 1, default.replication.factor 1.
        let partitions = if t.num_partitions == -1 { 1 } else { t.num_partitions };
        let replication_factor = if t.replication_factor == -1 { 1 } else { t.replication_factor };
        asked.push((name.clone(), partitions, replication_factor));
        if !may_create && !r.caller.may_topic(server, op::CREATE, &name) {
            refused.insert(name.clone(), NodeError::topic_denied(&name));
            continue;
        }
        if !t.assignments.is_empty() {
            let e = NodeError::new(ErrorKind::InvalidRequest, "manual replica assignment is not supported");
            refused.insert(name, e);
            continue;
        }
        let (Ok(partitions), Ok(replication_factor)) = (u32::try_from(partitions), u16::try_from(replication_factor))
        else {
            let e = NodeError::new(
                ErrorKind::InvalidPartitions,
                format!("topic {name:?}: {partitions} partitions and replication factor {replication_factor}"),
            );
            refused.insert(name, e);
            continue;
        };
        let configs = t.configs.into_iter().filter_map(|c| Some((c.name.to_string(), c.value?.to_string()))).collect();
        topics.push(NewTopic { name, partitions, replication_factor, configs });
    }
    let mut results: BTreeMap<String, Result<(), NodeError>> = BTreeMap::new();
    if !topics.is_empty() {
        let request = AdminRequest::CreateTopics { topics, validate_only: request.validate_only };
        results.extend(run_admin(&server.shard, request).await);
    }
    results.extend(refused.into_iter().map(|(n, e)| (n, Err(e))));
    let metadata = server.shard.metadata();
    let topics = asked
        .into_iter()
        .map(|(name, partitions, replication_factor)| {
            let result = results.get(&name).cloned().unwrap_or(Ok(()));
            // Kafka v5+ echoes the topic's partitions and replication factor.
            let ok = result.is_ok() && r.version >= 5;
            // v7+ names the new topic's id.
            let id = metadata.topic(&name).filter(|_| result.is_ok()).map_or(TopicId::NONE, |t| t.id);
            CreatableTopicResult::default()
                .with_name(TopicName(text(&name)))
                .with_topic_id(uuid::Uuid::from_bytes(id.0))
                .with_error_code(super::code_of(&result))
                .with_error_message(error_message(&result))
                .with_num_partitions(if ok { partitions } else { -1 })
                .with_replication_factor(if ok { replication_factor } else { -1 })
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// DeleteTopics: topics by name, or (v6+) by name or id.
pub async fn delete_topics(server: &Rc<Server>, r: &Request, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let metadata = server.shard.metadata();
    let mut names: Vec<String> = request.topic_names.into_iter().map(|n| n.0.to_string()).collect();
    let mut unknown_ids = Vec::new();
    // Topics named by id: a principal that may not delete one is not told its name.
    let mut by_id = std::collections::BTreeSet::new();
    for t in request.topics {
        match t.name {
            Some(n) => names.push(n.0.to_string()),
            None => match metadata.topic_by_id(TopicId(*t.topic_id.as_bytes())) {
                Some(topic) => {
                    by_id.insert(topic.name.clone());
                    names.push(topic.name.clone());
                }
                None => unknown_ids.push(t.topic_id),
            },
        }
    }
    let ids: BTreeMap<String, TopicId> =
        names.iter().filter_map(|n| Some((n.clone(), metadata.topic(n)?.id))).collect();
    let (names, denied): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| r.caller.may_topic(server, op::DELETE, n));
    let mut results = run_admin(&server.shard, AdminRequest::DeleteTopics { names }).await;
    results.extend(denied.into_iter().map(|n| {
        let e = if by_id.contains(&n) {
            NodeError::new(ErrorKind::TopicAuthorizationFailed, "not authorized to delete this topic")
        } else {
            NodeError::topic_denied(&n)
        };
        (n, Err(e))
    }));
    let mut responses: Vec<DeletableTopicResult> = results
        .into_iter()
        .map(|(name, result)| {
            let hidden =
                by_id.contains(&name) && result.as_ref().is_err_and(|e| e.kind == ErrorKind::TopicAuthorizationFailed);
            DeletableTopicResult::default()
                .with_topic_id(uuid::Uuid::from_bytes(ids.get(&name).copied().unwrap_or(TopicId::NONE).0))
                .with_name((!hidden).then(|| TopicName(text(&name))))
                .with_error_code(super::code_of(&result))
                .with_error_message(if r.version >= 5 { error_message(&result) } else { None })
        })
        .collect();
    responses.extend(unknown_ids.into_iter().map(|id| {
        DeletableTopicResult::default()
            .with_topic_id(id)
            .with_error_code(super::UNKNOWN_TOPIC_ID)
            .with_error_message(Some(text(&format!("no topic has id {id}"))))
    }));
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    server: &Rc<Server>,
    r: &Request,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    type Counts = Vec<(String, u32)>;
    let (topics, denied): (Counts, Counts) = request
        .topics
        .into_iter()
        .map(|t| (t.name.0.to_string(), u32::try_from(t.count).unwrap_or(0)))
        .partition(|(name, _)| r.caller.may_topic(server, op::ALTER, name));
    let mut results =
        run_admin(&server.shard, AdminRequest::CreatePartitions { topics, validate_only: request.validate_only }).await;
    results.extend(denied.into_iter().map(|(n, _)| {
        let e = NodeError::topic_denied(&n);
        (n, Err(e))
    }));
    let results = results
        .into_iter()
        .map(|(name, result)| {
            CreatePartitionsTopicResult::default()
                .with_name(TopicName(text(&name)))
                .with_error_code(super::code_of(&result))
                .with_error_message(error_message(&result))
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

pub fn describe_configs(server: &Rc<Server>, r: &Request, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let metadata = server.shard.metadata();
    let defaults = &server.shard.config.topic_defaults;
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            if let Err(e) = may_configure(server, r, op::DESCRIBE_CONFIGS, resource.resource_type, &name) {
                return result.with_error_code(code(&e)).with_error_message(Some(text(&e.message)));
            }
            if resource.resource_type == RESOURCE_BROKER {
                return broker_configs(server, &name, resource.configuration_keys.as_deref(), result);
            }
            if resource.resource_type != RESOURCE_TOPIC {
                return result;
            }
            let Some(topic) = metadata.topic(&name) else {
                let e = NodeError::new(ErrorKind::UnknownTopicOrPartition, format!("topic {name:?} does not exist"));
                return result.with_error_code(code(&e)).with_error_message(Some(text(&e.message)));
            };
            let wanted =
                resource.configuration_keys.map(|keys| keys.iter().map(ToString::to_string).collect::<Vec<_>>());
            let configs = topic
                .effective_configs(defaults)
                .into_iter()
                .filter(|(k, _, _)| wanted.as_ref().is_none_or(|w| w.contains(k)))
                .map(|(k, v, is_default)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(text(&k))
                        .with_value(Some(text(&v)))
                        .with_config_source(if is_default { SOURCE_DEFAULT } else { SOURCE_TOPIC })
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Kafka's broker config names of the topic configs whose node defaults they are.
const BROKER_NAMES: &[(&str, &str)] = &[
    ("segment.bytes", "log.segment.bytes"),
    ("segment.ms", "log.roll.ms"),
    ("max.message.bytes", "message.max.bytes"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("retention.ms", "log.retention.ms"),
    ("retention.bytes", "log.retention.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    ("cleanup.policy", "log.cleanup.policy"),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("unclean.leader.election.enable", "unclean.leader.election.enable"),
];

/// A broker resource of DescribeConfigs: this node's settings under Kafka's broker config
/// names (its flags and config file: static, read only), for resource name "" (the
/// cluster's dynamic defaults: none) or this node's id. Another node's id is refused, as
/// Kafka refuses it: each node describes its own.
fn broker_configs(
    server: &Rc<Server>,
    name: &str,
    keys: Option<&[kafka_protocol::protocol::StrBytes]>,
    result: DescribeConfigsResult,
) -> DescribeConfigsResult {
    let config = &server.shard.config;
    if name.is_empty() {
        return result;
    }
    if name != config.node_id.to_string() {
        let e = NodeError::new(
            ErrorKind::InvalidRequest,
            format!("this is node {}; node {name}'s configs are described by node {name}", config.node_id),
        );
        return result.with_error_code(code(&e)).with_error_message(Some(text(&e.message)));
    }
    let each = |f: &dyn Fn(&crate::config::KafkaListener) -> String| {
        config.kafka_listeners.iter().map(f).collect::<Vec<_>>().join(",")
    };
    let mut settings: Vec<(String, String)> = vec![
        ("broker.id".into(), config.node_id.to_string()),
        ("node.id".into(), config.node_id.to_string()),
        ("log.dirs".into(), config.data_dir.display().to_string()),
        ("listeners".into(), each(&|l| format!("{}://{}", l.name, l.address))),
        ("advertised.listeners".into(), each(&|l| format!("{}://{}:{}", l.name, l.advertised.0, l.advertised.1))),
        ("listener.security.protocol.map".into(), each(&|l| format!("{}:{}", l.name, l.security.name()))),
        ("auto.create.topics.enable".into(), config.auto_create_topics.to_string()),
        ("num.partitions".into(), config.num_partitions.to_string()),
        ("default.replication.factor".into(), config.default_replication_factor.to_string()),
        ("offsets.topic.num.partitions".into(), crate::groups::OFFSETS_PARTITIONS.to_string()),
        ("group.initial.rebalance.delay.ms".into(), config.group_initial_rebalance_delay_ms.to_string()),
        ("group.coordinator.rebalance.protocols".into(), "classic,consumer".into()),
        ("group.consumer.heartbeat.interval.ms".into(), config.group_consumer_heartbeat_interval_ms.to_string()),
        ("group.consumer.session.timeout.ms".into(), config.group_consumer_session_timeout_ms.to_string()),
        ("socket.request.max.bytes".into(), config.frame_bytes_max.to_string()),
        ("transactional.id.expiration.ms".into(), config.transactional_id_expiration_ms.to_string()),
    ];
    let defaults =
        crate::topics::Topic { name: String::new(), id: TopicId::NONE, partitions: 0, configs: BTreeMap::new() };
    for (key, value, _) in defaults.effective_configs(&config.topic_defaults) {
        if let Some((_, broker)) = BROKER_NAMES.iter().find(|(topic, _)| *topic == key) {
            settings.push(((*broker).to_string(), value));
        }
    }
    let configs = settings
        .into_iter()
        .filter(|(k, _)| keys.is_none_or(|w| w.iter().any(|w| w.as_str() == k)))
        .map(|(k, v)| {
            DescribeConfigsResourceResult::default()
                .with_name(text(&k))
                .with_value(Some(text(&v)))
                .with_read_only(true)
                .with_config_source(SOURCE_STATIC_BROKER)
        })
        .collect();
    result.with_configs(configs)
}

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Topic config changes of both AlterConfigs flavours: each resource's change, or why it
/// is refused before it reaches shard 0.
type Changes = Vec<(i8, String, Result<ConfigChange, NodeError>)>;

async fn apply_config_changes(
    server: &Rc<Server>,
    changes: Changes,
    validate_only: bool,
) -> Vec<AlterConfigsResourceResponse> {
    let ok: Vec<ConfigChange> = changes.iter().filter_map(|(_, _, c)| c.as_ref().ok().cloned()).collect();
    let mut results: BTreeMap<String, Result<(), NodeError>> = BTreeMap::new();
    if !ok.is_empty() {
        results.extend(run_admin(&server.shard, AdminRequest::AlterConfigs { topics: ok, validate_only }).await);
    }
    changes
        .into_iter()
        .map(|(resource_type, name, change)| {
            let result = change.and_then(|_| results.get(&name).cloned().unwrap_or(Ok(())));
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(text(&name))
                .with_error_code(super::code_of(&result))
                .with_error_message(error_message(&result))
        })
        .collect()
}

/// DESCRIBE_CONFIGS or ALTER_CONFIGS on a config resource: a topic, or the cluster for a
/// broker's settings.
fn may_configure(
    server: &Rc<Server>,
    r: &Request,
    operation: u8,
    resource_type: i8,
    name: &str,
) -> Result<(), NodeError> {
    match resource_type {
        RESOURCE_TOPIC if !r.caller.may_topic(server, operation, name) => Err(NodeError::topic_denied(name)),
        RESOURCE_BROKER if !r.caller.may_cluster(server, operation) => Err(NodeError::cluster_denied()),
        _ => Ok(()),
    }
}

fn topic_resource(resource_type: i8, name: &str) -> Result<(), NodeError> {
    if resource_type == RESOURCE_TOPIC {
        return Ok(());
    }
    Err(NodeError::new(
        ErrorKind::InvalidRequest,
        format!("resource type {resource_type} of {name:?}: only topic configs change at run time (node settings are flags and a file)"),
    ))
}

/// Kafka's legacy AlterConfigs replaces a topic's whole set of configs: those not named
/// return to their defaults.
pub async fn alter_configs(server: &Rc<Server>, req: &Request, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let metadata = server.shard.metadata();
    let changes = request
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let allowed = may_configure(server, req, op::ALTER_CONFIGS, r.resource_type, &name);
            let change = allowed.and_then(|()| topic_resource(r.resource_type, &name)).map(|()| {
                let set: Vec<(String, String)> = r
                    .configs
                    .iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                    .collect();
                let delete = metadata
                    .topic(&name)
                    .map(|t| t.configs.keys().filter(|k| !set.iter().any(|(s, _)| s == *k)).cloned().collect())
                    .unwrap_or_default();
                ConfigChange { topic: name.clone(), set, delete }
            });
            (r.resource_type, name, change)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(apply_config_changes(server, changes, request.validate_only).await)
}

/// Kafka's IncrementalAlterConfigs: SET, DELETE, and APPEND or SUBTRACT an element of a
/// list value (`cleanup.policy`).
pub async fn incremental_alter_configs(
    server: &Rc<Server>,
    req: &Request,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let metadata = server.shard.metadata();
    let defaults = &server.shard.config.topic_defaults;
    let changes = request
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let allowed = may_configure(server, req, op::ALTER_CONFIGS, r.resource_type, &name);
            let change = allowed.and_then(|()| topic_resource(r.resource_type, &name)).and_then(|()| {
                let current: BTreeMap<String, String> = metadata
                    .topic(&name)
                    .map(|t| t.effective_configs(defaults).into_iter().map(|(k, v, _)| (k, v)).collect())
                    .unwrap_or_default();
                let mut change = ConfigChange { topic: name.clone(), set: Vec::new(), delete: Vec::new() };
                for c in &r.configs {
                    let key = c.name.to_string();
                    let value = c.value.as_ref().map(ToString::to_string).unwrap_or_default();
                    match c.config_operation {
                        OP_SET => change.set.push((key, value)),
                        OP_DELETE => change.delete.push(key),
                        OP_APPEND | OP_SUBTRACT => {
                            let mut items: Vec<String> = current
                                .get(&key)
                                .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                                .unwrap_or_default();
                            if c.config_operation == OP_APPEND {
                                if !items.contains(&value) {
                                    items.push(value);
                                }
                            } else {
                                items.retain(|i| *i != value);
                            }
                            change.set.push((key, items.join(",")));
                        }
                        op => {
                            return Err(NodeError::new(
                                ErrorKind::InvalidRequest,
                                format!("config operation {op} on {key:?} is not SET, DELETE, APPEND or SUBTRACT"),
                            ))
                        }
                    }
                }
                Ok(change)
            });
            (r.resource_type, name, change)
        })
        .collect();
    let responses = apply_config_changes(server, changes, request.validate_only).await;
    let responses = responses
        .into_iter()
        .map(|r| {
            kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(r.error_code)
                .with_error_message(r.error_message)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// An idempotent producer's id and epoch (`ops::admin::init_producer`).
pub async fn init_producer_id(
    server: &Rc<Server>,
    r: &Request,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let existing = (request.producer_id.0 >= 0 && request.producer_epoch >= 0)
        .then_some((request.producer_id.0, request.producer_epoch));
    let id = request.transactional_id.as_ref().map(|id| id.0.as_str()).filter(|id| !id.is_empty());
    // Kafka's checks: WRITE on the transactional id; an idempotent producer needs
    // IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (KIP-679).
    let allowed = match id {
        Some(id) => r
            .caller
            .may(server, op::WRITE, crate::acl::resource::TRANSACTIONAL_ID, id)
            .then_some(())
            .ok_or_else(|| NodeError::txn_denied(id)),
        None => r.caller.may_write_idempotently(server).then_some(()).ok_or_else(NodeError::cluster_denied),
    };
    let result = match allowed {
        Ok(()) => crate::ops::txn::init_producer(&server.shard, id, request.transaction_timeout_ms, existing).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((id, epoch)) => {
            InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch)
        }
        Err(e) => {
            tracing::warn!("InitProducerId: {}", e.message);
            InitProducerIdResponse::default()
                .with_error_code(super::code_of::<()>(&Err(e)))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}

/// DescribeCluster: the cluster id, the controller and every node's Kafka address (v1
/// may ask for controllers' endpoints instead, which a node does not serve, as Kafka's
/// brokers do not).
pub fn describe_cluster(server: &Rc<Server>, r: &Request, request: DescribeClusterRequest) -> DescribeClusterResponse {
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    /// Endpoint types (v1): brokers, controllers.
    const BROKERS: i8 = 1;
    const UNSUPPORTED_ENDPOINT_TYPE: i16 = 115;
    let shard = &server.shard;
    let broker = |id: NodeId| BrokerId(i32::try_from(id.0).unwrap_or(-1));
    let response = DescribeClusterResponse::default().with_endpoint_type(BROKERS).with_cluster_id(text(CLUSTER_ID));
    // Kafka answers DescribeCluster to every principal (only the authorized operations
    // it may be asked for depend on the ACLs, and those are not computed here).
    if r.version >= 1 && request.endpoint_type != BROKERS {
        return response
            .with_error_code(UNSUPPORTED_ENDPOINT_TYPE)
            .with_error_message(Some(text("a node answers for brokers' endpoints only (endpoint type 1)")));
    }
    let brokers = shard
        .node_addresses()
        .into_iter()
        .filter_map(|node| {
            let (host, port) = node.kafka_endpoint(&r.listener)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(broker(node.id))
                    .with_host(text(&host))
                    .with_port(i32::from(port))
                    .with_rack(node.rack.as_deref().map(text)),
            )
        })
        .collect();
    response
        .with_controller_id(shard.controller_id().map_or(BrokerId(-1), broker))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN)
}

/// DescribeLogDirs: this node's one log directory (`--data-dir`) with the size of every
/// partition replica it holds (all, or those asked), its file system's total and usable
/// bytes (v4), and offset lag 0 (no replica is being moved between directories).
pub async fn describe_log_dirs(
    server: &Rc<Server>,
    r: &Request,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    let shard = &server.shard;
    if !r.caller.may_cluster(server, op::DESCRIBE) {
        // v3+ carry the error; older versions get no directories, as Kafka answers.
        return DescribeLogDirsResponse::default().with_error_code(code(&NodeError::cluster_denied()));
    }
    let mut sizes: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
    for s in 0..shard.shards {
        if let crate::shard::ShardReply::LogSizes(list) =
            shard.call(crate::shard::ShardId(s), crate::shard::ShardRequest::LogSizes).await
        {
            for (tp, bytes) in list {
                sizes.entry(tp.topic).or_default().insert(tp.partition, bytes);
            }
        }
    }
    let wanted: Option<BTreeMap<String, Vec<u32>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.into_iter().map(super::partition_index).collect()))
            .collect()
    });
    let topics = sizes
        .into_iter()
        .filter_map(|(name, partitions)| {
            let asked = match &wanted {
                Some(w) => Some(w.get(&name)?),
                None => None,
            };
            let partitions: Vec<DescribeLogDirsPartition> = partitions
                .into_iter()
                .filter(|(p, _)| asked.is_none_or(|a| a.contains(p)))
                .map(|(p, bytes)| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(super::index_of(p))
                        .with_partition_size(i64::try_from(bytes).unwrap_or(i64::MAX))
                })
                .collect();
            (!partitions.is_empty())
                .then(|| DescribeLogDirsTopic::default().with_name(TopicName(text(&name))).with_partitions(partitions))
        })
        .collect();
    let (free, total) = shard.space.free_and_total();
    let dir = shard.config.data_dir.canonicalize().unwrap_or_else(|_| shard.config.data_dir.clone());
    let result = DescribeLogDirsResult::default()
        .with_log_dir(text(&dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(i64::try_from(total).unwrap_or(i64::MAX))
        .with_usable_bytes(i64::try_from(free).unwrap_or(i64::MAX));
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// Kafka's ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE and
/// ELIGIBLE_LEADERS_NOT_AVAILABLE.
const ELECTION_NOT_NEEDED: i16 = 84;
const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;

/// A partition's ElectLeaders answer: error code and message.
type Answer = (i16, String);

/// ElectLeaders. Preferred (v0, and election type 0): a partition whose first replica is
/// live and in sync but does not lead is handed to it by the controller, whose preferred
/// election runs every second (the answer waits, within the request's timeout, until the
/// cluster's state shows it); one it already leads is ELECTION_NOT_NEEDED, one whose
/// preferred replica is down or out of sync PREFERRED_LEADER_NOT_AVAILABLE. Unclean
/// (type 1) is refused for a leaderless partition: electing a replica outside the ISR
/// would lose acknowledged records, which Sluice never does. No partitions named: every
/// partition, and only those that needed an election are answered (as Kafka does).
pub async fn elect_leaders(
    server: &Rc<Server>,
    request: &Request,
    r: kafka_protocol::messages::ElectLeadersRequest,
) -> kafka_protocol::messages::ElectLeadersResponse {
    use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
    let shard = &server.shard;
    if !request.caller.may_cluster(server, op::ALTER) {
        // v1+ carry a top-level error; v0 gets it for every partition named.
        let code = code(&NodeError::cluster_denied());
        let results = r
            .topic_partitions
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionResult::default().with_partition_id(p).with_error_code(code))
                    .collect();
                ReplicaElectionResult::default().with_topic(t.topic).with_partition_result(partitions)
            })
            .collect();
        return kafka_protocol::messages::ElectLeadersResponse::default()
            .with_error_code(code)
            .with_replica_election_results(results);
    }
    let unclean = request.version >= 1 && r.election_type == 1;
    let metadata = shard.metadata();
    let explicit = r.topic_partitions.is_some();
    let asked: Vec<(String, Vec<i32>)> = match r.topic_partitions {
        Some(list) => list.into_iter().map(|t| (t.topic.0.to_string(), t.partitions)).collect(),
        None => metadata.topics().map(|t| (t.name.clone(), (0..t.partitions).map(super::index_of).collect())).collect(),
    };
    let live = shard.cluster_view().live.clone();
    // (topic, partition, the answer so far; `None`: waiting for the election).
    let mut answers: Vec<(String, i32, Option<Answer>)> = Vec::new();
    for (topic, partitions) in asked {
        for p in partitions {
            let known = metadata.topic(&topic).is_some_and(|t| u32::try_from(p).is_ok_and(|p| p < t.partitions));
            if !known {
                let message = format!("{topic}-{p} does not exist");
                answers.push((topic.clone(), p, Some((ErrorCode::UnknownTopicOrPartition.0, message))));
                continue;
            }
            let placement = shard.placement(&topic, p as u32);
            let preferred = placement.replicas.first().copied();
            let answer = if unclean {
                if placement.leader.is_some() {
                    Some((ELECTION_NOT_NEEDED, format!("{topic}-{p} has a leader")))
                } else {
                    Some((
                        ELIGIBLE_LEADERS_NOT_AVAILABLE,
                        format!(
                            "{topic}-{p} has no leader; unclean election (a replica outside the ISR) is not \
                             supported: it would lose acknowledged records"
                        ),
                    ))
                }
            } else if placement.leader.is_some() && placement.leader == preferred {
                Some((ELECTION_NOT_NEEDED, format!("{topic}-{p} is led by its preferred replica")))
            } else if preferred.is_none_or(|n| !placement.isr.contains(&n) || !live.contains(&n)) {
                Some((
                    PREFERRED_LEADER_NOT_AVAILABLE,
                    format!("{topic}-{p}'s preferred replica {preferred:?} is not live and in sync"),
                ))
            } else {
                None
            };
            answers.push((topic.clone(), p, answer));
        }
    }
    let limit = Duration::from_millis(u64::try_from(r.timeout_ms).unwrap_or(0).clamp(1_000, 60_000));
    let elected = |t: &str, p: i32| {
        let placement = shard.placement(t, p as u32);
        placement.leader.is_some() && placement.leader == placement.replicas.first().copied()
    };
    let _ = crate::io::timeout(limit, async {
        while answers.iter().any(|(t, p, a)| a.is_none() && !elected(t, *p)) {
            crate::io::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for (topic, p, answer) in answers {
        let (code, message) = match answer {
            Some(a) => a,
            None if elected(&topic, p) => (0, String::new()),
            None => (ErrorCode::RequestTimedOut.0, format!("{topic}-{p}'s preferred replica was not elected in time")),
        };
        if !explicit && code == ELECTION_NOT_NEEDED {
            continue;
        }
        let result = PartitionResult::default()
            .with_partition_id(p)
            .with_error_code(code)
            .with_error_message((code != 0).then(|| text(&message)));
        match results.iter_mut().find(|r| r.topic.0.as_str() == topic) {
            Some(r) => r.partition_result.push(result),
            None => results.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(text(&topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    kafka_protocol::messages::ElectLeadersResponse::default().with_replica_election_results(results)
}
