//! Handlers of the consumer group APIs: JoinGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, ListGroups, DescribeGroups, DeleteGroups. Each runs on the group's
//! coordinator shard (`Shard::group_call`).

use sluice_schemas::TopicPartition;
use std::rc::Rc;

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use sluice_schemas::wire::{self, ErrorCode, ResponseBody};

use super::{respond, topic_results};
use crate::errors::{error_code, ErrorKind, NodeError};
use crate::groups::{by_topic, GroupReply, GroupRequest, JoinArgs, JoinProtocol};
use crate::listener::{ResponseFrame, Server};

fn unexpected(reply: &GroupReply) -> NodeError {
    NodeError::new(ErrorKind::Unknown, format!("unexpected group reply {reply:?}"))
}

fn code_and_message<'b>(
    b: &mut FlatBufferBuilder<'b>,
    r: &Result<(), NodeError>,
) -> (ErrorCode, Option<WIPOffset<&'b str>>) {
    match r {
        Ok(()) => (ErrorCode::None, None),
        Err(e) => (error_code(e.kind), Some(b.create_string(&e.message))),
    }
}

fn topic_partitions<'b>(
    b: &mut FlatBufferBuilder<'b>,
    assignment: &[TopicPartition],
) -> WIPOffset<flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<wire::TopicPartitions<'b>>>> {
    let with_unit: Vec<(String, u32, ())> = assignment.iter().map(|tp| (tp.topic.clone(), tp.partition, ())).collect();
    let items: Vec<_> = by_topic(with_unit)
        .into_iter()
        .map(|(topic, parts)| {
            let topic = b.create_string(&topic);
            let partitions: Vec<u32> = parts.iter().map(|(p, ())| *p).collect();
            let partitions = b.create_vector(&partitions);
            wire::TopicPartitions::create(
                b,
                &wire::TopicPartitionsArgs { topic: Some(topic), partitions: Some(partitions) },
            )
        })
        .collect();
    b.create_vector(&items)
}

fn str_of(s: Option<&str>) -> String {
    s.unwrap_or("").to_string()
}

pub async fn join(
    server: &Rc<Server>,
    cid: u32,
    r: wire::JoinGroupRequest<'_>,
    client_id: &str,
    peer: &str,
) -> ResponseFrame {
    let request = GroupRequest::Join {
        group: str_of(r.group_id()),
        join: JoinArgs {
            member_id: str_of(r.member_id()),
            client_id: client_id.to_string(),
            client_host: peer.to_string(),
            session_timeout_ms: r.session_timeout_ms(),
            rebalance_timeout_ms: r.rebalance_timeout_ms(),
            protocol: JoinProtocol::Native {
                topics: r.topics().map(|t| t.iter().map(str::to_string).collect()).unwrap_or_default(),
                strategy: r.strategy().filter(|s| !s.is_empty()).unwrap_or("range").to_string(),
            },
            instance_id: None,
        },
    };
    let reply = server.shard.group_call(request).await;
    let mut b = FlatBufferBuilder::new();
    let args = match reply {
        GroupReply::Joined(Ok(j)) => {
            let assignment = topic_partitions(&mut b, &j.assignment);
            wire::JoinGroupResponseArgs {
                error: ErrorCode::None,
                message: None,
                generation: j.generation,
                member_id: Some(b.create_string(&j.member_id)),
                leader_id: Some(b.create_string(&j.leader_id)),
                strategy: Some(b.create_string(&j.strategy)),
                assignment: Some(assignment),
            }
        }
        other => {
            let e = match other {
                GroupReply::Joined(Err(e)) | GroupReply::Done(Err(e)) => e,
                other => unexpected(&other),
            };
            wire::JoinGroupResponseArgs {
                error: error_code(e.kind),
                message: Some(b.create_string(&e.message)),
                generation: -1,
                ..Default::default()
            }
        }
    };
    let body = wire::JoinGroupResponse::create(&mut b, &args);
    respond(b, cid, ResponseBody::JoinGroupResponse, body.as_union_value(), Vec::new())
}

fn done(reply: GroupReply) -> Result<(), NodeError> {
    match reply {
        GroupReply::Done(r) => r,
        other => Err(unexpected(&other)),
    }
}

pub async fn heartbeat(server: &Rc<Server>, cid: u32, r: wire::HeartbeatRequest<'_>) -> ResponseFrame {
    let request = GroupRequest::Heartbeat {
        group: str_of(r.group_id()),
        member_id: str_of(r.member_id()),
        generation: r.generation(),
    };
    let result = done(server.shard.group_call(request).await);
    let mut b = FlatBufferBuilder::new();
    let (error, message) = code_and_message(&mut b, &result);
    let body = wire::HeartbeatResponse::create(&mut b, &wire::HeartbeatResponseArgs { error, message });
    respond(b, cid, ResponseBody::HeartbeatResponse, body.as_union_value(), Vec::new())
}

pub async fn leave(server: &Rc<Server>, cid: u32, r: wire::LeaveGroupRequest<'_>) -> ResponseFrame {
    let request = GroupRequest::Leave { group: str_of(r.group_id()), member_id: str_of(r.member_id()) };
    let result = done(server.shard.group_call(request).await);
    let mut b = FlatBufferBuilder::new();
    let (error, message) = code_and_message(&mut b, &result);
    let body = wire::LeaveGroupResponse::create(&mut b, &wire::LeaveGroupResponseArgs { error, message });
    respond(b, cid, ResponseBody::LeaveGroupResponse, body.as_union_value(), Vec::new())
}

pub async fn commit(server: &Rc<Server>, cid: u32, r: wire::OffsetCommitRequest<'_>) -> ResponseFrame {
    let offsets = commit_offsets(r.topics());
    let request = GroupRequest::Commit {
        group: str_of(r.group_id()),
        member_id: str_of(r.member_id()),
        generation: r.generation(),
        offsets,
    };
    commit_response(server, cid, request).await
}

/// TxnOffsetCommit: offsets committed in a transaction, counted once it commits;
/// answered as OffsetCommit.
pub async fn txn_commit(server: &Rc<Server>, cid: u32, r: wire::TxnOffsetCommitRequest<'_>) -> ResponseFrame {
    let request = GroupRequest::TxnCommit {
        group: str_of(r.group_id()),
        producer_id: r.producer_id(),
        producer_epoch: r.producer_epoch(),
        member_id: str_of(r.member_id()),
        generation: r.generation(),
        offsets: commit_offsets(r.topics()),
    };
    commit_response(server, cid, request).await
}

type CommitTopics<'a> = Option<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<wire::OffsetCommitTopic<'a>>>>;

fn commit_offsets(topics: CommitTopics<'_>) -> Vec<(String, u32, i64, String)> {
    let mut offsets = Vec::new();
    for t in topics.iter().flatten() {
        for p in t.partitions().iter().flatten() {
            offsets.push((str_of(t.topic()), p.partition(), p.offset(), str_of(p.metadata())));
        }
    }
    offsets
}

/// Runs a commit on the group's coordinator and answers it as OffsetCommit.
async fn commit_response(server: &Rc<Server>, cid: u32, request: GroupRequest) -> ResponseFrame {
    let reply = server.shard.group_call(request).await;
    let mut b = FlatBufferBuilder::new();
    let (result, per_partition) = match reply {
        GroupReply::Committed(Ok(list)) => (Ok(()), list),
        GroupReply::Committed(Err(e)) | GroupReply::Done(Err(e)) => (Err(e), Vec::new()),
        other => (Err(unexpected(&other)), Vec::new()),
    };
    let topics: Vec<_> = by_topic(per_partition)
        .into_iter()
        .map(|(topic, parts)| {
            let items: Vec<_> = parts
                .iter()
                .map(|(p, r)| {
                    let (error, message) = code_and_message(&mut b, r);
                    wire::PartitionResult::create(&mut b, &wire::PartitionResultArgs { partition: *p, error, message })
                })
                .collect();
            let partitions = b.create_vector(&items);
            let topic = b.create_string(&topic);
            wire::OffsetCommitTopicResult::create(
                &mut b,
                &wire::OffsetCommitTopicResultArgs { topic: Some(topic), partitions: Some(partitions) },
            )
        })
        .collect();
    let topics = b.create_vector(&topics);
    let (error, message) = code_and_message(&mut b, &result);
    let body = wire::OffsetCommitResponse::create(
        &mut b,
        &wire::OffsetCommitResponseArgs { error, message, topics: Some(topics) },
    );
    respond(b, cid, ResponseBody::OffsetCommitResponse, body.as_union_value(), Vec::new())
}

/// The group's committed offsets: of the partitions named, or of every topic the caller
/// may describe.
pub async fn fetch(
    server: &Rc<Server>,
    caller: &crate::access::Caller,
    cid: u32,
    r: wire::OffsetFetchRequest<'_>,
) -> ResponseFrame {
    let partitions = r.topics().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                let topic = str_of(t.topic());
                t.partitions()
                    .map(|p| p.iter().collect::<Vec<u32>>())
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |p| TopicPartition::new(topic.as_str(), p))
            })
            .collect()
    });
    let reply = server
        .shard
        .group_call(GroupRequest::Fetch { group: str_of(r.group_id()), partitions, require_stable: false })
        .await;
    let mut b = FlatBufferBuilder::new();
    let (result, mut offsets) = match reply {
        GroupReply::Offsets(Ok(list)) => (Ok(()), list),
        GroupReply::Offsets(Err(e)) | GroupReply::Done(Err(e)) => (Err(e), Vec::new()),
        other => (Err(unexpected(&other)), Vec::new()),
    };
    if r.topics().is_none() {
        offsets.retain(|(t, ..)| caller.sees(server, crate::acl::op::DESCRIBE, crate::acl::resource::TOPIC, t));
    }
    let triples: Vec<(String, u32, (i64, String))> = offsets.into_iter().map(|(t, p, o, m)| (t, p, (o, m))).collect();
    let topics: Vec<_> = by_topic(triples)
        .into_iter()
        .map(|(topic, parts)| {
            let items: Vec<_> = parts
                .iter()
                .map(|(p, (offset, metadata))| {
                    let metadata = b.create_string(metadata);
                    wire::OffsetFetchPartition::create(
                        &mut b,
                        &wire::OffsetFetchPartitionArgs { partition: *p, offset: *offset, metadata: Some(metadata) },
                    )
                })
                .collect();
            let partitions = b.create_vector(&items);
            let topic = b.create_string(&topic);
            wire::OffsetFetchTopic::create(
                &mut b,
                &wire::OffsetFetchTopicArgs { topic: Some(topic), partitions: Some(partitions) },
            )
        })
        .collect();
    let topics = b.create_vector(&topics);
    let (error, message) = code_and_message(&mut b, &result);
    let body = wire::OffsetFetchResponse::create(
        &mut b,
        &wire::OffsetFetchResponseArgs { error, message, topics: Some(topics) },
    );
    respond(b, cid, ResponseBody::OffsetFetchResponse, body.as_union_value(), Vec::new())
}

/// Every group the caller may describe (every group with DESCRIBE on the cluster).
pub async fn list(server: &Rc<Server>, caller: &crate::access::Caller, cid: u32) -> ResponseFrame {
    use crate::acl::{op, resource};
    let mut groups = match server.shard.group_call(GroupRequest::List).await {
        GroupReply::Listed(list) => list,
        _ => Vec::new(),
    };
    if !caller.sees(server, op::DESCRIBE, resource::CLUSTER, resource::CLUSTER_NAME) {
        groups.retain(|g| caller.sees(server, op::DESCRIBE, resource::GROUP, &g.group));
    }
    let mut b = FlatBufferBuilder::new();
    let items: Vec<_> = groups
        .iter()
        .map(|g| {
            let group_id = b.create_string(&g.group);
            let state = b.create_string(&g.state);
            wire::GroupListing::create(
                &mut b,
                &wire::GroupListingArgs { group_id: Some(group_id), state: Some(state), members: g.members },
            )
        })
        .collect();
    let groups = b.create_vector(&items);
    let body = wire::ListGroupsResponse::create(&mut b, &wire::ListGroupsResponseArgs { groups: Some(groups) });
    respond(b, cid, ResponseBody::ListGroupsResponse, body.as_union_value(), Vec::new())
}

pub async fn describe(server: &Rc<Server>, cid: u32, r: wire::DescribeGroupsRequest<'_>) -> ResponseFrame {
    let ids: Vec<String> = r.group_ids().map(|v| v.iter().map(str::to_string).collect()).unwrap_or_default();
    let mut replies = Vec::new();
    for id in &ids {
        replies.push((id.clone(), server.shard.group_call(GroupRequest::Describe { group: id.clone() }).await));
    }
    let mut b = FlatBufferBuilder::new();
    let items: Vec<_> = replies
        .into_iter()
        .map(|(id, reply)| {
            let group_id = b.create_string(&id);
            match reply {
                GroupReply::Described(Ok(d)) => {
                    let members: Vec<_> = d
                        .members
                        .iter()
                        .map(|m| {
                            let member_id = b.create_string(&m.member_id);
                            let client_id = b.create_string(&m.client_id);
                            let client_host = b.create_string(&m.client_host);
                            let assignment = topic_partitions(&mut b, &m.assignment);
                            wire::GroupMember::create(
                                &mut b,
                                &wire::GroupMemberArgs {
                                    member_id: Some(member_id),
                                    client_id: Some(client_id),
                                    client_host: Some(client_host),
                                    assignment: Some(assignment),
                                },
                            )
                        })
                        .collect();
                    let members = b.create_vector(&members);
                    let state = b.create_string(&d.state);
                    let strategy = b.create_string(&d.strategy);
                    wire::GroupDescription::create(
                        &mut b,
                        &wire::GroupDescriptionArgs {
                            group_id: Some(group_id),
                            error: ErrorCode::None,
                            message: None,
                            state: Some(state),
                            strategy: Some(strategy),
                            generation: d.generation,
                            members: Some(members),
                        },
                    )
                }
                other => {
                    let e = match other {
                        GroupReply::Described(Err(e)) | GroupReply::Done(Err(e)) => e,
                        other => unexpected(&other),
                    };
                    let message = b.create_string(&e.message);
                    wire::GroupDescription::create(
                        &mut b,
                        &wire::GroupDescriptionArgs {
                            group_id: Some(group_id),
                            error: error_code(e.kind),
                            message: Some(message),
                            ..Default::default()
                        },
                    )
                }
            }
        })
        .collect();
    let groups = b.create_vector(&items);
    let body = wire::DescribeGroupsResponse::create(&mut b, &wire::DescribeGroupsResponseArgs { groups: Some(groups) });
    respond(b, cid, ResponseBody::DescribeGroupsResponse, body.as_union_value(), Vec::new())
}

pub async fn delete(server: &Rc<Server>, cid: u32, r: wire::DeleteGroupsRequest<'_>) -> ResponseFrame {
    let ids: Vec<String> = r.group_ids().map(|v| v.iter().map(str::to_string).collect()).unwrap_or_default();
    let mut results = Vec::new();
    for id in ids {
        let result = done(server.shard.group_call(GroupRequest::Delete { group: id.clone() }).await);
        results.push((id, result));
    }
    let mut b = FlatBufferBuilder::new();
    let results = topic_results(&mut b, &results);
    let body = wire::DeleteGroupsResponse::create(&mut b, &wire::DeleteGroupsResponseArgs { results: Some(results) });
    respond(b, cid, ResponseBody::DeleteGroupsResponse, body.as_union_value(), Vec::new())
}
