//! Handlers of the metadata and admin APIs: ApiVersions, Metadata, CreateTopics,
//! DeleteTopics, CreatePartitions, DescribeConfigs, AlterConfigs.
//!
//! Reads of metadata are answered from this shard's copy; changes are forwarded to
//! shard 0, which owns the metadata (see `crate::shard`).

use std::collections::BTreeMap;
use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use sluice_schemas::wire::{self, ApiKey, ErrorCode, ResponseBody};

use super::{respond, topic_results};
use crate::errors::{error_code, ErrorKind, NodeError};
use crate::listener::{ResponseFrame, Server};
use crate::ops::admin::run_admin;
use crate::replication::NodeId;
use crate::shard::{AdminRequest, ConfigChange, NewTopic};

pub fn api_versions(correlation_id: u32) -> ResponseFrame {
    let mut b = FlatBufferBuilder::new();
    // Every API of the schema is served, each at version 0.
    let ranges: Vec<_> = ApiKey::ENUM_VALUES
        .iter()
        .map(|&api| {
            wire::ApiVersionRange::create(&mut b, &wire::ApiVersionRangeArgs { api, min_version: 0, max_version: 0 })
        })
        .collect();
    let apis = b.create_vector(&ranges);
    let version = b.create_string(env!("CARGO_PKG_VERSION"));
    let body = wire::ApiVersionsResponse::create(
        &mut b,
        &wire::ApiVersionsResponseArgs { error: ErrorCode::None, apis: Some(apis), node_version: Some(version) },
    );
    respond(b, correlation_id, ResponseBody::ApiVersionsResponse, body.as_union_value(), Vec::new())
}

/// Metadata of the named topics, or of every topic the caller may describe.
pub fn metadata(
    server: &Rc<Server>,
    caller: &crate::access::Caller,
    correlation_id: u32,
    request: wire::MetadataRequest<'_>,
) -> ResponseFrame {
    let shard = &server.shard;
    let metadata = shard.metadata();
    let names: Vec<String> = match request.topics() {
        Some(list) => list.iter().map(str::to_string).collect(),
        None => metadata
            .topics()
            .filter(|t| caller.sees(server, crate::acl::op::DESCRIBE, crate::acl::resource::TOPIC, &t.name))
            .map(|t| t.name.clone())
            .collect(),
    };
    let mut b = FlatBufferBuilder::new();
    let topics: Vec<_> = names
        .iter()
        .map(|name| {
            let name_offset = b.create_string(name);
            match metadata.topic(name) {
                Some(topic) => {
                    let partitions: Vec<_> = (0..topic.partitions)
                        .map(|p| {
                            let placement = shard.placement(name, p);
                            let ids = |nodes: &[NodeId]| nodes.iter().map(|n| n.0).collect::<Vec<u32>>();
                            let replicas = b.create_vector(&ids(&placement.replicas));
                            let isr = b.create_vector(&ids(&placement.isr));
                            let leader = placement.leader.map_or(-1, |l| i32::try_from(l.0).unwrap_or(-1));
                            wire::PartitionMetadata::create(
                                &mut b,
                                &wire::PartitionMetadataArgs {
                                    partition: p,
                                    error: if leader < 0 { ErrorCode::LeaderNotAvailable } else { ErrorCode::None },
                                    leader,
                                    leader_epoch: placement.leader_epoch.0,
                                    replicas: Some(replicas),
                                    isr: Some(isr),
                                },
                            )
                        })
                        .collect();
                    let partitions = b.create_vector(&partitions);
                    wire::TopicMetadata::create(
                        &mut b,
                        &wire::TopicMetadataArgs {
                            name: Some(name_offset),
                            error: ErrorCode::None,
                            message: None,
                            partitions: Some(partitions),
                        },
                    )
                }
                None => {
                    // A node that just started may not have the cluster's topics yet.
                    let (error, message) = if shard.has_metadata() {
                        (ErrorCode::UnknownTopicOrPartition, format!("topic {name:?} does not exist"))
                    } else {
                        (ErrorCode::LeaderNotAvailable, "this node has not loaded the cluster's topics yet".to_string())
                    };
                    let message = b.create_string(&message);
                    wire::TopicMetadata::create(
                        &mut b,
                        &wire::TopicMetadataArgs {
                            name: Some(name_offset),
                            error,
                            message: Some(message),
                            partitions: None,
                        },
                    )
                }
            }
        })
        .collect();
    let topics = b.create_vector(&topics);
    let nodes: Vec<_> = shard
        .node_addresses()
        .into_iter()
        .map(|node| {
            let host = b.create_string(&node.listen.ip().to_string());
            let rack = node.rack.as_deref().map(|r| b.create_string(r));
            wire::NodeInfo::create(
                &mut b,
                &wire::NodeInfoArgs { node_id: node.id.0, host: Some(host), port: node.listen.port(), rack },
            )
        })
        .collect();
    let nodes = b.create_vector(&nodes);
    let controller_id = shard.controller_id().map_or(-1, |c| i32::try_from(c.0).unwrap_or(-1));
    let body = wire::MetadataResponse::create(
        &mut b,
        &wire::MetadataResponseArgs { nodes: Some(nodes), controller_id, topics: Some(topics) },
    );
    respond(b, correlation_id, ResponseBody::MetadataResponse, body.as_union_value(), Vec::new())
}

fn results_frame(
    correlation_id: u32,
    results: &[(String, Result<(), NodeError>)],
    kind: ResponseBody,
) -> ResponseFrame {
    let mut b = FlatBufferBuilder::new();
    let results_offset = topic_results(&mut b, results);
    let body = match kind {
        ResponseBody::CreateTopicsResponse => wire::CreateTopicsResponse::create(
            &mut b,
            &wire::CreateTopicsResponseArgs { results: Some(results_offset) },
        )
        .as_union_value(),
        ResponseBody::DeleteTopicsResponse => wire::DeleteTopicsResponse::create(
            &mut b,
            &wire::DeleteTopicsResponseArgs { results: Some(results_offset) },
        )
        .as_union_value(),
        ResponseBody::CreatePartitionsResponse => wire::CreatePartitionsResponse::create(
            &mut b,
            &wire::CreatePartitionsResponseArgs { results: Some(results_offset) },
        )
        .as_union_value(),
        _ => wire::AlterConfigsResponse::create(
            &mut b,
            &wire::AlterConfigsResponseArgs { results: Some(results_offset) },
        )
        .as_union_value(),
    };
    respond(b, correlation_id, kind, body, Vec::new())
}

fn configs_of<'a>(
    entries: Option<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<wire::ConfigEntry<'a>>>>,
) -> Vec<(String, String)> {
    entries
        .map(|v| v.iter().map(|e| (e.key().unwrap_or("").to_string(), e.value().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

pub async fn create_topics(server: &Rc<Server>, cid: u32, request: wire::CreateTopicsRequest<'_>) -> ResponseFrame {
    let topics = request
        .topics()
        .map(|v| {
            v.iter()
                .map(|t| NewTopic {
                    name: t.name().unwrap_or("").to_string(),
                    partitions: t.partitions(),
                    replication_factor: t.replication_factor(),
                    configs: configs_of(t.configs()).into_iter().collect::<BTreeMap<_, _>>(),
                })
                .collect()
        })
        .unwrap_or_default();
    let results =
        run_admin(&server.shard, AdminRequest::CreateTopics { topics, validate_only: request.validate_only() }).await;
    results_frame(cid, &results, ResponseBody::CreateTopicsResponse)
}

pub async fn delete_topics(server: &Rc<Server>, cid: u32, request: wire::DeleteTopicsRequest<'_>) -> ResponseFrame {
    let names = request.names().map(|v| v.iter().map(str::to_string).collect()).unwrap_or_default();
    let results = run_admin(&server.shard, AdminRequest::DeleteTopics { names }).await;
    results_frame(cid, &results, ResponseBody::DeleteTopicsResponse)
}

pub async fn create_partitions(
    server: &Rc<Server>,
    cid: u32,
    request: wire::CreatePartitionsRequest<'_>,
) -> ResponseFrame {
    let topics = request
        .topics()
        .map(|v| v.iter().map(|t| (t.topic().unwrap_or("").to_string(), t.count())).collect())
        .unwrap_or_default();
    let results =
        run_admin(&server.shard, AdminRequest::CreatePartitions { topics, validate_only: request.validate_only() })
            .await;
    results_frame(cid, &results, ResponseBody::CreatePartitionsResponse)
}

pub async fn alter_configs(server: &Rc<Server>, cid: u32, request: wire::AlterConfigsRequest<'_>) -> ResponseFrame {
    let topics = request
        .topics()
        .map(|v| {
            v.iter()
                .map(|t| {
                    let delete = t.delete().map(|d| d.iter().map(str::to_string).collect()).unwrap_or_default();
                    ConfigChange { topic: t.name().unwrap_or("").to_string(), set: configs_of(t.set()), delete }
                })
                .collect()
        })
        .unwrap_or_default();
    let results =
        run_admin(&server.shard, AdminRequest::AlterConfigs { topics, validate_only: request.validate_only() }).await;
    results_frame(cid, &results, ResponseBody::AlterConfigsResponse)
}

/// The configs of the named topics, or of every topic the caller may describe the
/// configs of.
pub fn describe_configs(
    server: &Rc<Server>,
    caller: &crate::access::Caller,
    cid: u32,
    request: wire::DescribeConfigsRequest<'_>,
) -> ResponseFrame {
    let metadata = server.shard.metadata();
    let defaults = &server.shard.config.topic_defaults;
    let names: Vec<String> = match request.topics() {
        Some(v) => v.iter().map(str::to_string).collect(),
        None => metadata
            .topics()
            .filter(|t| caller.sees(server, crate::acl::op::DESCRIBE_CONFIGS, crate::acl::resource::TOPIC, &t.name))
            .map(|t| t.name.clone())
            .collect(),
    };
    let mut b = FlatBufferBuilder::new();
    let results: Vec<_> = names
        .iter()
        .map(|name| {
            let name_offset = b.create_string(name);
            match metadata.topic(name) {
                Some(topic) => {
                    let entries: Vec<_> = topic
                        .effective_configs(defaults)
                        .iter()
                        .map(|(k, v, is_default)| {
                            let key = b.create_string(k);
                            let value = b.create_string(v);
                            wire::ConfigEntry::create(
                                &mut b,
                                &wire::ConfigEntryArgs { key: Some(key), value: Some(value), is_default: *is_default },
                            )
                        })
                        .collect();
                    let configs = b.create_vector(&entries);
                    wire::TopicConfigs::create(
                        &mut b,
                        &wire::TopicConfigsArgs {
                            name: Some(name_offset),
                            error: ErrorCode::None,
                            message: None,
                            configs: Some(configs),
                        },
                    )
                }
                None => {
                    let message = b.create_string(&format!("topic {name:?} does not exist"));
                    wire::TopicConfigs::create(
                        &mut b,
                        &wire::TopicConfigsArgs {
                            name: Some(name_offset),
                            error: error_code(ErrorKind::UnknownTopicOrPartition),
                            message: Some(message),
                            configs: None,
                        },
                    )
                }
            }
        })
        .collect();
    let results = b.create_vector(&results);
    let body =
        wire::DescribeConfigsResponse::create(&mut b, &wire::DescribeConfigsResponseArgs { results: Some(results) });
    respond(b, cid, ResponseBody::DescribeConfigsResponse, body.as_union_value(), Vec::new())
}

/// InitProducerId (`ops::txn::init_producer`): a new producer sends id and epoch -1; a
/// transactional one its transactional id, to the id's coordinator.
pub async fn init_producer_id(
    server: &Rc<Server>,
    correlation_id: u32,
    request: wire::InitProducerIdRequest<'_>,
) -> ResponseFrame {
    let existing = (request.producer_id() >= 0 && request.producer_epoch() >= 0)
        .then_some((request.producer_id(), request.producer_epoch()));
    let result = crate::ops::txn::init_producer(
        &server.shard,
        request.transactional_id(),
        request.transaction_timeout_ms(),
        existing,
    )
    .await;
    let mut b = FlatBufferBuilder::new();
    let args = match &result {
        Ok((producer_id, producer_epoch)) => wire::InitProducerIdResponseArgs {
            error: ErrorCode::None,
            message: None,
            producer_id: *producer_id,
            producer_epoch: *producer_epoch,
        },
        Err(e) => wire::InitProducerIdResponseArgs {
            error: error_code(e.kind),
            message: Some(b.create_string(&e.message)),
            producer_id: -1,
            producer_epoch: -1,
        },
    };
    let body = wire::InitProducerIdResponse::create(&mut b, &args);
    respond(b, correlation_id, ResponseBody::InitProducerIdResponse, body.as_union_value(), Vec::new())
}
