//! Kafka's group APIs on the same coordinator as the native ones: JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup run Kafka's classic protocol (the leader client assigns);
//! OffsetCommit and OffsetFetch read and write the same committed offsets as native
//! groups; DescribeGroups, ListGroups and DeleteGroups see both kinds.
//! ConsumerGroupHeartbeat runs Kafka's consumer protocol (KIP-848: the coordinator
//! assigns, see `groups::consumer`) on the same coordinator.

use sluice_schemas::TopicPartition;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};

use sluice_schemas::wire::ErrorCode;

use super::{code, code_of, index_of, partition_index, text, Request};
use crate::acl::op;
use crate::errors::{ErrorKind, NodeError};
use crate::groups::{by_topic, consumer_protocol, ConsumerHeartbeat, GroupReply, GroupRequest, JoinArgs, JoinProtocol};
use crate::listener::Server;
use crate::topics::TopicId;
use std::collections::BTreeMap;

fn unexpected(reply: &GroupReply) -> NodeError {
    NodeError::new(ErrorKind::Unknown, format!("unexpected group reply {reply:?}"))
}

/// The error of a reply that is not the success asked for.
fn failure(reply: GroupReply) -> NodeError {
    match reply {
        GroupReply::Joined(Err(e))
        | GroupReply::Synced(Err(e))
        | GroupReply::Done(Err(e))
        | GroupReply::Committed(Err(e))
        | GroupReply::Offsets(Err(e))
        | GroupReply::Described(Err(e))
        | GroupReply::ConsumerHeartbeat(Err(e)) => e,
        other => unexpected(&other),
    }
}

fn done(reply: GroupReply) -> Result<(), NodeError> {
    match reply {
        GroupReply::Done(r) => r,
        other => Err(unexpected(&other)),
    }
}

pub async fn join(server: &Rc<Server>, request: &Request, r: JoinGroupRequest, peer: &str) -> JoinGroupResponse {
    let session_timeout_ms = u32::try_from(r.session_timeout_ms).unwrap_or(0);
    // JoinGroup v0 has no rebalance timeout: Kafka uses the session timeout.
    let rebalance_timeout_ms = u32::try_from(r.rebalance_timeout_ms).unwrap_or(session_timeout_ms);
    let protocol_type = r.protocol_type.to_string();
    if !request.caller.may_group(server, op::READ, &r.group_id.0) {
        return JoinGroupResponse::default()
            .with_error_code(code(&NodeError::group_denied(&r.group_id.0)))
            .with_generation_id(-1)
            .with_protocol_name(Some(text("")))
            .with_member_id(r.member_id);
    }
    let join = GroupRequest::Join {
        group: r.group_id.0.to_string(),
        join: JoinArgs {
            member_id: r.member_id.to_string(),
            client_id: request.client_id.clone(),
            client_host: peer.to_string(),
            session_timeout_ms,
            rebalance_timeout_ms,
            protocol: JoinProtocol::Classic {
                protocol_type: protocol_type.clone(),
                protocols: r.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata.to_vec())).collect(),
            },
            // v5+ (null before, and when the client has none).
            instance_id: r.group_instance_id.as_ref().map(ToString::to_string).filter(|i| !i.is_empty()),
        },
    };
    match server.shard.group_call(join).await {
        GroupReply::Joined(Ok(j)) => JoinGroupResponse::default()
            .with_generation_id(j.generation)
            .with_protocol_type((request.version >= 7).then(|| text(&protocol_type)))
            .with_protocol_name(Some(text(&j.strategy)))
            .with_leader(text(&j.leader_id))
            .with_member_id(text(&j.member_id))
            .with_members(
                j.members
                    .into_iter()
                    .map(|(id, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(text(&id))
                            .with_metadata(Bytes::from(metadata))
                    })
                    .collect(),
            ),
        other => {
            let e = failure(other);
            JoinGroupResponse::default()
                .with_error_code(code(&e))
                .with_generation_id(-1)
                .with_protocol_name(Some(text("")))
                .with_member_id(r.member_id)
        }
    }
}

pub async fn sync(server: &Rc<Server>, request: &Request, r: SyncGroupRequest) -> SyncGroupResponse {
    if !request.caller.may_group(server, op::READ, &r.group_id.0) {
        return SyncGroupResponse::default().with_error_code(code(&NodeError::group_denied(&r.group_id.0)));
    }
    let sync = GroupRequest::Sync {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        generation: r.generation_id,
        assignments: r.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment.to_vec())).collect(),
    };
    let response = SyncGroupResponse::default().with_protocol_type(r.protocol_type).with_protocol_name(r.protocol_name);
    match server.shard.group_call(sync).await {
        GroupReply::Synced(Ok(assignment)) => response.with_assignment(Bytes::from(assignment)),
        other => response.with_error_code(code(&failure(other))),
    }
}

pub async fn heartbeat(server: &Rc<Server>, request: &Request, r: HeartbeatRequest) -> HeartbeatResponse {
    if !request.caller.may_group(server, op::READ, &r.group_id.0) {
        return HeartbeatResponse::default().with_error_code(code(&NodeError::group_denied(&r.group_id.0)));
    }
    let request = GroupRequest::Heartbeat {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        generation: r.generation_id,
    };
    HeartbeatResponse::default().with_error_code(code_of(&done(server.shard.group_call(request).await)))
}

pub async fn leave(server: &Rc<Server>, request: &Request, r: LeaveGroupRequest) -> LeaveGroupResponse {
    let group = r.group_id.0.to_string();
    if !request.caller.may_group(server, op::READ, &group) {
        return LeaveGroupResponse::default().with_error_code(code(&NodeError::group_denied(&group)));
    }
    // v0-v2 name one member; v3+ a batch of them, static ones by instance id.
    let members: Vec<(String, Option<String>)> = if request.version < 3 {
        vec![(r.member_id.to_string(), None)]
    } else {
        r.members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(ToString::to_string)))
            .collect()
    };
    let mut responses = Vec::new();
    let mut first_error = 0;
    for (member_id, instance_id) in members {
        let leave = match &instance_id {
            Some(instance) => GroupRequest::LeaveStatic {
                group: group.clone(),
                instance_id: instance.clone(),
                member_id: member_id.clone(),
            },
            None => GroupRequest::Leave { group: group.clone(), member_id: member_id.clone() },
        };
        let error = code_of(&done(server.shard.group_call(leave).await));
        if first_error == 0 {
            first_error = error;
        }
        responses.push(
            MemberResponse::default()
                .with_member_id(text(&member_id))
                .with_group_instance_id(instance_id.map(|i| text(&i)))
                .with_error_code(error),
        );
    }
    let response = LeaveGroupResponse::default();
    if request.version < 3 {
        response.with_error_code(first_error)
    } else {
        response.with_members(responses)
    }
}

pub async fn commit(server: &Rc<Server>, req: &Request, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let mut asked = Vec::new();
    let mut refused: Vec<(String, u32, i16)> = Vec::new();
    let group_allowed = req.caller.may_group(server, op::READ, &r.group_id.0);
    for t in &r.topics {
        if !group_allowed || !req.caller.may_topic(server, op::READ, &t.name.0) {
            let e =
                if group_allowed { NodeError::topic_denied(&t.name.0) } else { NodeError::group_denied(&r.group_id.0) };
            refused.extend(
                t.partitions.iter().map(|p| (t.name.0.to_string(), partition_index(p.partition_index), code(&e))),
            );
            continue;
        }
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_ref().map(ToString::to_string).unwrap_or_default();
            asked.push((t.name.0.to_string(), partition_index(p.partition_index), p.committed_offset, metadata));
        }
    }
    let request = GroupRequest::Commit {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        generation: r.generation_id_or_member_epoch,
        offsets: asked.clone(),
    };
    let mut results: Vec<(String, u32, i16)> = match server.shard.group_call(request).await {
        _ if asked.is_empty() => Vec::new(),
        GroupReply::Committed(Ok(list)) => list.into_iter().map(|(t, p, r)| (t, p, code_of(&r))).collect(),
        other => {
            let e = failure(other);
            // A commit without a member to a group with members: Kafka says
            // UNKNOWN_MEMBER_ID (clients raise CommitFailedException).
            let error = if e.kind == ErrorKind::NonEmptyGroup { ErrorCode::UnknownMemberId.0 } else { code(&e) };
            asked.into_iter().map(|(t, p, _, _)| (t, p, error)).collect()
        }
    };
    results.extend(refused);
    let topics = by_topic(results)
        .into_iter()
        .map(|(name, partitions)| {
            OffsetCommitResponseTopic::default().with_name(TopicName(text(&name))).with_partitions(
                partitions
                    .into_iter()
                    .map(|(p, error)| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(index_of(p))
                            .with_error_code(error)
                    })
                    .collect(),
            )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// OffsetFetch: one group up to v7, a list of groups from v8 (KIP-709).
pub async fn fetch_offsets(server: &Rc<Server>, req: &Request, r: OffsetFetchRequest) -> OffsetFetchResponse {
    if req.version >= 8 {
        use kafka_protocol::messages::offset_fetch_response::{
            OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
        };
        let mut groups = Vec::new();
        for g in r.groups {
            let partitions = g.topics.map(|topics| {
                topics.into_iter().flat_map(|t| asked_partitions(t.name.0.to_string(), t.partition_indexes)).collect()
            });
            let response = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            let fetched = fetch_group_as(server, req, g.group_id.0.to_string(), partitions, r.require_stable).await;
            groups.push(match fetched {
                Ok(offsets) => response.with_topics(
                    by_topic(offsets)
                        .into_iter()
                        .map(|(name, partitions)| {
                            OffsetFetchResponseTopics::default().with_name(TopicName(text(&name))).with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|(p, (offset, metadata, error))| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(index_of(p))
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(-1)
                                            .with_metadata(Some(text(&metadata)))
                                            .with_error_code(error)
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
                Err(e) => response.with_error_code(code(&e)),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let partitions = r.topics.map(|topics| {
        topics.into_iter().flat_map(|t| asked_partitions(t.name.0.to_string(), t.partition_indexes)).collect()
    });
    let asked: Vec<TopicPartition> = partitions.clone().unwrap_or_default();
    match fetch_group_as(server, req, r.group_id.0.to_string(), partitions, r.require_stable).await {
        Ok(offsets) => OffsetFetchResponse::default().with_topics(offset_fetch_topics(offsets)),
        // v0 and v1 have no group-level error: the request's partitions carry it.
        Err(e) if req.version < 2 => {
            let failed = asked.into_iter().map(|tp| (tp.topic, tp.partition, (-1, String::new(), code(&e)))).collect();
            OffsetFetchResponse::default().with_topics(offset_fetch_topics(failed))
        }
        Err(e) => OffsetFetchResponse::default().with_error_code(code(&e)),
    }
}

fn asked_partitions(name: String, indexes: Vec<i32>) -> impl Iterator<Item = TopicPartition> {
    indexes.into_iter().map(move |p| TopicPartition::new(name.as_str(), partition_index(p)))
}

/// `fetch_group` for the request's principal: DESCRIBE on the group, and on each topic
/// (asked ones it may not describe are TOPIC_AUTHORIZATION_FAILED; when all are asked
/// for, those are left out), as Kafka checks.
async fn fetch_group_as(
    server: &Rc<Server>,
    req: &Request,
    group: String,
    partitions: Option<Vec<TopicPartition>>,
    require_stable: bool,
) -> Result<FetchedOffsets, NodeError> {
    if !req.caller.may_group(server, op::DESCRIBE, &group) {
        return Err(NodeError::group_denied(&group));
    }
    let mut describable: BTreeMap<String, bool> = BTreeMap::new();
    let mut may = |topic: &str| {
        *describable
            .entry(topic.to_string())
            .or_insert_with(|| req.caller.sees(server, op::DESCRIBE, crate::acl::resource::TOPIC, topic))
    };
    let Some(partitions) = partitions else {
        let mut all = fetch_group(server, group, None, require_stable).await?;
        all.retain(|(topic, _, _)| may(topic));
        return Ok(all);
    };
    let (allowed, denied): (Vec<TopicPartition>, Vec<TopicPartition>) =
        partitions.into_iter().partition(|tp| may(&tp.topic));
    let mut out =
        if allowed.is_empty() { Vec::new() } else { fetch_group(server, group, Some(allowed), require_stable).await? };
    let denied_code = code(&NodeError::topic_denied(""));
    out.extend(denied.into_iter().map(|tp| (tp.topic, tp.partition, (-1, String::new(), denied_code))));
    Ok(out)
}

/// One group's committed offsets of `partitions` (`None`: all it has). With
/// `require_stable` (v7+, a read_committed consumer), partitions with a transaction's
/// commit pending are answered UNSTABLE_OFFSET_COMMIT, which the client retries.
async fn fetch_group(
    server: &Rc<Server>,
    group: String,
    partitions: Option<Vec<TopicPartition>>,
    require_stable: bool,
) -> Result<FetchedOffsets, NodeError> {
    let asked = partitions.clone();
    match server.shard.group_call(GroupRequest::Fetch { group, partitions, require_stable }).await {
        GroupReply::Offsets(Ok(list)) => {
            Ok(list.into_iter().map(|(t, p, o, m)| (t, p, (o, m, ErrorCode::None.0))).collect())
        }
        GroupReply::Offsets(Err(e)) if e.kind == ErrorKind::UnstableOffsetCommit && asked.is_some() => {
            let unstable = code(&e);
            Ok(asked
                .unwrap_or_default()
                .into_iter()
                .map(|tp| (tp.topic, tp.partition, (-1, String::new(), unstable)))
                .collect())
        }
        other => Err(failure(other)),
    }
}

/// Committed offset, metadata and error code of each (topic, partition), by topic.
type FetchedOffsets = Vec<(String, u32, (i64, String, i16))>;

fn offset_fetch_topics(offsets: FetchedOffsets) -> Vec<OffsetFetchResponseTopic> {
    by_topic(offsets)
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default().with_name(TopicName(text(&name))).with_partitions(
                partitions
                    .into_iter()
                    .map(|(p, (offset, metadata, error))| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(index_of(p))
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1)
                            .with_metadata(Some(text(&metadata)))
                            .with_error_code(error)
                    })
                    .collect(),
            )
        })
        .collect()
}

pub async fn describe(server: &Rc<Server>, request: &Request, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut groups = Vec::new();
    for id in r.groups {
        let group = DescribedGroup::default().with_group_id(GroupId(id.0.clone()));
        if !request.caller.may_group(server, op::DESCRIBE, &id.0) {
            groups.push(group.with_error_code(code(&NodeError::group_denied(&id.0))));
            continue;
        }
        let reply = server.shard.group_call(GroupRequest::Describe { group: id.0.to_string() }).await;
        groups.push(match reply {
            GroupReply::Described(Ok(d)) => {
                let members = d
                    .members
                    .iter()
                    .map(|m| {
                        // Native members get the consumer protocol's encodings of what the
                        // coordinator assigned, so Kafka tools read both kinds alike.
                        let (metadata, assignment) = if d.classic {
                            (m.metadata.clone(), m.assignment_bytes.clone())
                        } else {
                            (
                                consumer_protocol::encode_subscription(&m.topics),
                                consumer_protocol::encode_assignment(&m.assignment),
                            )
                        };
                        DescribedGroupMember::default()
                            .with_member_id(text(&m.member_id))
                            .with_client_id(text(&m.client_id))
                            .with_client_host(text(&m.client_host))
                            .with_member_metadata(Bytes::from(metadata))
                            .with_member_assignment(Bytes::from(assignment))
                    })
                    .collect();
                group
                    .with_group_state(text(&d.state))
                    .with_protocol_type(text(&d.protocol_type))
                    .with_protocol_data(text(&d.strategy))
                    .with_members(members)
            }
            // Kafka describes a group it does not know as Dead, without an error.
            GroupReply::Described(Err(e)) if e.kind == ErrorKind::GroupIdNotFound => {
                group.with_group_state(text("Dead"))
            }
            other => group.with_error_code(code(&failure(other))),
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn list(server: &Rc<Server>, request: &Request, r: ListGroupsRequest) -> ListGroupsResponse {
    let groups = match server.shard.group_call(GroupRequest::List).await {
        GroupReply::Listed(list) => list,
        other => return ListGroupsResponse::default().with_error_code(code(&unexpected(&other))),
    };
    let wanted: Vec<String> = r.states_filter.iter().map(|s| s.to_lowercase()).collect();
    // DESCRIBE on the cluster lists every group; else those the principal may describe.
    let every =
        request.caller.sees(server, op::DESCRIBE, crate::acl::resource::CLUSTER, crate::acl::resource::CLUSTER_NAME);
    let visible = |group: &str| every || request.caller.sees(server, op::DESCRIBE, crate::acl::resource::GROUP, group);
    // v5's types: "classic" (and native groups), "consumer" (KIP-848).
    let typed = |t: &str| r.types_filter.is_empty() || r.types_filter.iter().any(|w| w.eq_ignore_ascii_case(t));
    let groups = groups
        .into_iter()
        .filter(|g| typed(g.group_type) && (wanted.is_empty() || wanted.contains(&g.state.to_lowercase())))
        .filter(|g| visible(&g.group))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(text(&g.group)))
                .with_protocol_type(text(&g.protocol_type))
                .with_group_state(if request.version >= 4 { text(&g.state) } else { Default::default() })
                .with_group_type(text(g.group_type))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn delete(server: &Rc<Server>, request: &Request, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for id in r.groups_names {
        let result = if request.caller.may_group(server, op::DELETE, &id.0) {
            done(server.shard.group_call(GroupRequest::Delete { group: id.0.to_string() }).await)
        } else {
            Err(NodeError::group_denied(&id.0))
        };
        results.push(DeletableGroupResult::default().with_group_id(id).with_error_code(code_of(&result)));
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// OffsetDelete: forgets a group's commits of partitions whose topics its members do not
/// subscribe to (those they do: GROUP_SUBSCRIBED_TO_TOPIC).
pub async fn delete_offsets(server: &Rc<Server>, req: &Request, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
    use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
    if !req.caller.may_group(server, op::DELETE, &r.group_id.0) {
        return OffsetDeleteResponse::default().with_error_code(code(&NodeError::group_denied(&r.group_id.0)));
    }
    let (readable, denied): (Vec<_>, Vec<_>) =
        r.topics.iter().partition(|t| req.caller.may_topic(server, op::READ, &t.name.0));
    let refused: Vec<(String, u32, i16)> = denied
        .iter()
        .flat_map(|t| {
            let e = code(&NodeError::topic_denied(&t.name.0));
            t.partitions.iter().map(move |p| (t.name.0.to_string(), partition_index(p.partition_index), e))
        })
        .collect();
    let partitions = readable
        .iter()
        .flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions.iter().map(move |p| TopicPartition::new(name.as_str(), partition_index(p.partition_index)))
        })
        .collect();
    let request = GroupRequest::DeleteOffsets { group: r.group_id.0.to_string(), partitions };
    let outcomes = match server.shard.group_call(request).await {
        GroupReply::Committed(Ok(list)) => list,
        other => return OffsetDeleteResponse::default().with_error_code(code(&failure(other))),
    };
    let mut outcomes: Vec<(String, u32, i16)> =
        outcomes.into_iter().map(|(t, p, result)| (t, p, code_of(&result))).collect();
    outcomes.extend(refused);
    let topics = by_topic(outcomes)
        .into_iter()
        .map(|(name, partitions)| {
            OffsetDeleteResponseTopic::default().with_name(TopicName(text(&name))).with_partitions(
                partitions
                    .into_iter()
                    .map(|(p, error)| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(index_of(p))
                            .with_error_code(error)
                    })
                    .collect(),
            )
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

/// ConsumerGroupHeartbeat (KIP-848): partitions cross as topic ids; a topic id no topic
/// has any more is left out of what the member reports owning.
pub async fn consumer_heartbeat(
    server: &Rc<Server>,
    request: &Request,
    r: ConsumerGroupHeartbeatRequest,
    peer: &str,
) -> ConsumerGroupHeartbeatResponse {
    if !request.caller.may_group(server, op::READ, &r.group_id.0) {
        let e = NodeError::group_denied(&r.group_id.0);
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code(&e))
            .with_error_message(Some(text(&e.message)));
    }
    let metadata = server.shard.metadata();
    let owned = r.topic_partitions.map(|list| {
        list.iter()
            .filter_map(|t| metadata.topic_by_id(TopicId(*t.topic_id.as_bytes())).map(|topic| (topic.name.clone(), t)))
            .flat_map(|(name, t)| {
                t.partitions
                    .iter()
                    .filter_map(move |p| Some(TopicPartition::new(name.as_str(), u32::try_from(*p).ok()?)))
            })
            .collect()
    });
    let heartbeat = ConsumerHeartbeat {
        member_id: r.member_id.to_string(),
        member_epoch: r.member_epoch,
        instance_id: r.instance_id.map(|i| i.to_string()).filter(|i| !i.is_empty()),
        rebalance_timeout_ms: u32::try_from(r.rebalance_timeout_ms).ok(),
        topics: r.subscribed_topic_names.map(|names| names.iter().map(|n| n.0.to_string()).collect()),
        assignor: r.server_assignor.map(|a| a.to_string()),
        owned,
        client_id: request.client_id.clone(),
        client_host: peer.to_string(),
    };
    if r.subscribed_topic_regex.is_some_and(|re| !re.is_empty()) {
        let e = NodeError::new(ErrorKind::InvalidRequest, "regular expression subscriptions are not supported yet");
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code(&e))
            .with_error_message(Some(text(&e.message)));
    }
    let call = GroupRequest::ConsumerHeartbeat { group: r.group_id.0.to_string(), heartbeat };
    match server.shard.group_call(call).await {
        GroupReply::ConsumerHeartbeat(Ok(result)) => {
            let assignment = result.assignment.map(|list| {
                let topics = by_topic(list.into_iter().map(|tp| (tp.topic, tp.partition, ())).collect())
                    .into_iter()
                    .filter_map(|(name, partitions)| {
                        let id = metadata.topic(&name)?.id;
                        Some(
                            TopicPartitions::default()
                                .with_topic_id(uuid::Uuid::from_bytes(id.0))
                                .with_partitions(partitions.iter().map(|(p, ())| *p as i32).collect()),
                        )
                    })
                    .collect();
                Assignment::default().with_topic_partitions(topics)
            });
            ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(text(&result.member_id)))
                .with_member_epoch(result.member_epoch)
                .with_heartbeat_interval_ms(i32::try_from(result.heartbeat_interval_ms).unwrap_or(i32::MAX))
                .with_assignment(assignment)
        }
        // An error of the group's or of the coordinator's (its groups are being loaded
        // after a failover: COORDINATOR_NOT_AVAILABLE, which the member retries; answered
        // as an unknown server error it was fatal to librdkafka's KIP-848 consumer).
        other => {
            let e = failure(other);
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(code(&e))
                .with_error_message(Some(text(&e.message)))
        }
    }
}

/// ConsumerGroupDescribe (KIP-848): a group of Kafka's consumer protocol with its epochs,
/// assignor and members (their epochs, current and target partitions). Any other group
/// is GROUP_ID_NOT_FOUND, as Kafka answers for a classic group (clients then describe it
/// with DescribeGroups).
pub async fn consumer_group_describe(
    server: &Rc<Server>,
    request: &Request,
    r: kafka_protocol::messages::ConsumerGroupDescribeRequest,
) -> kafka_protocol::messages::ConsumerGroupDescribeResponse {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment as Described, DescribedGroup as Group, Member, TopicPartitions as Partitions,
    };
    let metadata = server.shard.metadata();
    let assignment = |list: Vec<TopicPartition>| {
        let topics = by_topic(list.into_iter().map(|tp| (tp.topic, tp.partition, ())).collect())
            .into_iter()
            .map(|(name, partitions)| {
                let id = metadata.topic(&name).map_or(TopicId::NONE, |t| t.id);
                Partitions::default()
                    .with_topic_id(uuid::Uuid::from_bytes(id.0))
                    .with_topic_name(TopicName(text(&name)))
                    .with_partitions(partitions.iter().map(|(p, ())| index_of(*p)).collect())
            })
            .collect();
        Described::default().with_topic_partitions(topics)
    };
    let mut groups = Vec::new();
    for id in r.group_ids {
        let group = Group::default().with_group_id(id.clone()).with_authorized_operations(i32::MIN);
        if !request.caller.may_group(server, op::DESCRIBE, &id.0) {
            let e = NodeError::group_denied(&id.0);
            groups.push(group.with_error_code(code(&e)).with_error_message(Some(text(&e.message))));
            continue;
        }
        let described = match server.shard.group_call(GroupRequest::Describe { group: id.0.to_string() }).await {
            GroupReply::Described(Ok(d)) if d.kip848 => d,
            GroupReply::Described(Ok(_)) => {
                let e = NodeError::new(ErrorKind::GroupIdNotFound, format!("group {:?} is not a consumer group", id.0));
                groups.push(group.with_error_code(code(&e)).with_error_message(Some(text(&e.message))));
                continue;
            }
            other => {
                let e = failure(other);
                groups.push(group.with_error_code(code(&e)).with_error_message(Some(text(&e.message))));
                continue;
            }
        };
        let members = described
            .members
            .into_iter()
            .map(|m| {
                Member::default()
                    .with_member_id(text(&m.member_id))
                    .with_instance_id(m.instance_id.map(|i| text(&i)))
                    .with_member_epoch(m.member_epoch)
                    .with_client_id(text(&m.client_id))
                    .with_client_host(text(&m.client_host))
                    .with_subscribed_topic_names(m.topics.iter().map(|t| TopicName(text(t))).collect())
                    .with_assignment(assignment(m.assignment))
                    .with_target_assignment(assignment(m.target))
                    .with_member_type(1)
            })
            .collect();
        groups.push(
            group
                .with_group_state(text(&described.state))
                .with_group_epoch(described.generation)
                .with_assignment_epoch(described.assignment_epoch)
                .with_assignor_name(text(&described.strategy))
                .with_members(members),
        );
    }
    kafka_protocol::messages::ConsumerGroupDescribeResponse::default().with_groups(groups)
}
