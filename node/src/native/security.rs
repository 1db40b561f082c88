//! Security on the native listener: the SASL login (`login::Session`, as on the Kafka
//! listener), the ACL check of every request, and the users' and ACLs' admin requests
//! (`crate::access`).
//!
//! Each request needs what the matching Kafka API needs (Kafka's operations and resource
//! types); a request denied anything is answered with an `ErrorResponse` whose code is
//! Kafka's TOPIC_/GROUP_/CLUSTER_/TRANSACTIONAL_ID_AUTHORIZATION_FAILED and whose message
//! names the resource, and the connection stays open. Listings (Metadata of every topic,
//! ListGroups, ListTransactions) quietly leave out what the caller may not describe.

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use sluice_replication::state::{AclBinding, ScramMechanism};
use sluice_schemas::wire::{self, ErrorCode, RequestBody, ResponseBody};

use super::respond;
use crate::access::{self, Caller, Filter, SaltedPassword, UserChange};
use crate::acl::{op, resource};
use crate::errors::{error_code, ErrorKind, NodeError};
use crate::listener::{Outcome, ResponseFrame, Server};
use crate::login::Session;

/// ApiVersions and the login requests: the only ones a SASL listener serves before a login.
#[must_use]
pub fn is_login_body(body: RequestBody) -> bool {
    matches!(
        body,
        RequestBody::ApiVersionsRequest | RequestBody::SaslHandshakeRequest | RequestBody::SaslAuthenticateRequest
    )
}

/// Whether `caller` may run `request`: `Err` names what it may not do.
pub fn authorize(
    server: &Server,
    caller: &Caller,
    request: &wire::Request<'_>,
    payload: &[u8],
) -> Result<(), NodeError> {
    let topic = |operation: u8, name: &str| {
        if caller.may_topic(server, operation, name) {
            Ok(())
        } else {
            Err(NodeError::topic_denied(name))
        }
    };
    let topics = |operation: u8, names: &mut dyn Iterator<Item = &str>| {
        for name in names {
            topic(operation, name)?;
        }
        Ok(())
    };
    let group = |operation: u8, name: &str| {
        if caller.may_group(server, operation, name) {
            Ok(())
        } else {
            Err(NodeError::group_denied(name))
        }
    };
    let cluster = |operation: u8| {
        if caller.may_cluster(server, operation) {
            Ok(())
        } else {
            Err(NodeError::cluster_denied())
        }
    };
    let txn = |id: &str| {
        if caller.may(server, op::WRITE, resource::TRANSACTIONAL_ID, id) {
            Ok(())
        } else {
            Err(NodeError::txn_denied(id))
        }
    };
    match request.body_type() {
        // Listings filter what they show; logins and users' and ACLs' requests check
        // their own (`access`).
        RequestBody::ApiVersionsRequest
        | RequestBody::ListGroupsRequest
        | RequestBody::ListTransactionsRequest
        | RequestBody::SaslHandshakeRequest
        | RequestBody::SaslAuthenticateRequest
        | RequestBody::DescribeUsersRequest
        | RequestBody::AlterUsersRequest
        | RequestBody::CreateAclsRequest
        | RequestBody::DescribeAclsRequest
        | RequestBody::DeleteAclsRequest => Ok(()),
        // The internal topics' metadata is how native clients find a group's or a
        // transactional id's coordinator (Kafka's FindCoordinator, which needs no topic
        // ACL): their leaders are not hidden.
        RequestBody::MetadataRequest => match request.body_as_metadata_request().and_then(|r| r.topics()) {
            Some(names) => topics(
                op::DESCRIBE,
                &mut names.iter().filter(|n| *n != crate::groups::OFFSETS_TOPIC && *n != crate::txn::TXN_TOPIC),
            ),
            None => Ok(()),
        },
        // CREATE on the cluster, or on each topic.
        RequestBody::CreateTopicsRequest => {
            if caller.sees(server, op::CREATE, resource::CLUSTER, resource::CLUSTER_NAME) {
                return Ok(());
            }
            let list = request.body_as_create_topics_request().and_then(|r| r.topics());
            topics(op::CREATE, &mut list.iter().flatten().map(|t| t.name().unwrap_or("")))
        }
        RequestBody::DeleteTopicsRequest => {
            let names = strings(request.body_as_delete_topics_request().and_then(|r| r.names()));
            topics(op::DELETE, &mut names.into_iter())
        }
        RequestBody::CreatePartitionsRequest => {
            let list = request.body_as_create_partitions_request().and_then(|r| r.topics());
            topics(op::ALTER, &mut list.iter().flatten().map(|t| t.topic().unwrap_or("")))
        }
        RequestBody::DescribeConfigsRequest => {
            let names = strings(request.body_as_describe_configs_request().and_then(|r| r.topics()));
            topics(op::DESCRIBE_CONFIGS, &mut names.into_iter())
        }
        RequestBody::AlterConfigsRequest => {
            let list = request.body_as_alter_configs_request().and_then(|r| r.topics());
            topics(op::ALTER_CONFIGS, &mut list.iter().flatten().map(|t| t.name().unwrap_or("")))
        }
        // WRITE on each topic, and, for transactional batches, on the transactional id the
        // request names (or on "" when it names none, as Kafka's Produce checks).
        RequestBody::ProduceRequest => {
            let Some(r) = request.body_as_produce_request() else { return Ok(()) };
            topics(op::WRITE, &mut r.topics().iter().flatten().map(|t| t.topic().unwrap_or("")))?;
            let transactional =
                r.topics().iter().flatten().flat_map(|t| t.partitions().into_iter().flatten()).any(|p| {
                    p.records()
                        .and_then(|slice| wire::payload_slice(payload, slice).ok())
                        .and_then(|bytes| sluice_schemas::batch::BatchHeader::view(bytes).ok())
                        .is_some_and(|h| h.attributes().is_transactional())
                });
            match r.transactional_id().filter(|id| !id.is_empty()) {
                Some(id) if transactional => txn(id),
                None if transactional && !caller.may(server, op::WRITE, resource::TRANSACTIONAL_ID, "") => {
                    Err(NodeError::txn_denied("(none: transactional batches without a transactional id)"))
                }
                _ => Ok(()),
            }
        }
        RequestBody::FetchRequest => {
            let list = request.body_as_fetch_request().and_then(|r| r.topics());
            topics(op::READ, &mut list.iter().flatten().map(|t| t.topic().unwrap_or("")))
        }
        RequestBody::ListOffsetsRequest => {
            let list = request.body_as_list_offsets_request().and_then(|r| r.topics());
            topics(op::DESCRIBE, &mut list.iter().flatten().map(|t| t.topic().unwrap_or("")))
        }
        RequestBody::DeleteRecordsRequest => {
            let list = request.body_as_delete_records_request().and_then(|r| r.topics());
            topics(op::DELETE, &mut list.iter().flatten().map(|t| t.topic().unwrap_or("")))
        }
        RequestBody::JoinGroupRequest => {
            group(op::READ, request.body_as_join_group_request().and_then(|r| r.group_id()).unwrap_or(""))
        }
        RequestBody::HeartbeatRequest => {
            group(op::READ, request.body_as_heartbeat_request().and_then(|r| r.group_id()).unwrap_or(""))
        }
        RequestBody::LeaveGroupRequest => {
            group(op::READ, request.body_as_leave_group_request().and_then(|r| r.group_id()).unwrap_or(""))
        }
        RequestBody::OffsetCommitRequest => {
            let Some(r) = request.body_as_offset_commit_request() else { return Ok(()) };
            group(op::READ, r.group_id().unwrap_or(""))?;
            topics(op::READ, &mut r.topics().iter().flatten().map(|t| t.topic().unwrap_or("")))
        }
        RequestBody::OffsetFetchRequest => {
            let Some(r) = request.body_as_offset_fetch_request() else { return Ok(()) };
            group(op::DESCRIBE, r.group_id().unwrap_or(""))?;
            topics(op::DESCRIBE, &mut r.topics().iter().flatten().map(|t| t.topic().unwrap_or("")))
        }
        RequestBody::DescribeGroupsRequest => {
            let ids = strings(request.body_as_describe_groups_request().and_then(|r| r.group_ids()));
            ids.into_iter().try_for_each(|id| group(op::DESCRIBE, id))
        }
        RequestBody::DeleteGroupsRequest => {
            let ids = strings(request.body_as_delete_groups_request().and_then(|r| r.group_ids()));
            ids.into_iter().try_for_each(|id| group(op::DELETE, id))
        }
        RequestBody::InitProducerIdRequest => {
            match request
                .body_as_init_producer_id_request()
                .and_then(|r| r.transactional_id())
                .filter(|id| !id.is_empty())
            {
                Some(id) => txn(id),
                None if caller.may_write_idempotently(server) => Ok(()),
                None => Err(NodeError::cluster_denied()),
            }
        }
        RequestBody::AddPartitionsToTxnRequest => {
            let Some(r) = request.body_as_add_partitions_to_txn_request() else { return Ok(()) };
            txn(r.transactional_id().unwrap_or(""))?;
            topics(op::WRITE, &mut r.topics().iter().flatten().map(|t| t.topic().unwrap_or("")))
        }
        RequestBody::EndTxnRequest => {
            txn(request.body_as_end_txn_request().and_then(|r| r.transactional_id()).unwrap_or(""))
        }
        RequestBody::TxnOffsetCommitRequest => {
            let Some(r) = request.body_as_txn_offset_commit_request() else { return Ok(()) };
            txn(r.transactional_id().unwrap_or(""))?;
            group(op::READ, r.group_id().unwrap_or(""))?;
            topics(op::READ, &mut r.topics().iter().flatten().map(|t| t.topic().unwrap_or("")))
        }
        // An operator's abort fences another producer: ALTER on the cluster.
        RequestBody::AbortTransactionRequest => cluster(op::ALTER),
        // Partition moves, as Kafka's: ALTER on the cluster to move, DESCRIBE to list.
        RequestBody::AlterReassignmentsRequest => cluster(op::ALTER),
        RequestBody::ListReassignmentsRequest => cluster(op::DESCRIBE),
        RequestBody::UnregisterNodeRequest | RequestBody::AlterVotersRequest => cluster(op::ALTER),
        RequestBody::DescribeQuorumRequest => cluster(op::DESCRIBE),
        // Unknown bodies are refused by the dispatcher.
        _ => Ok(()),
    }
}

/// The strings of a list that may be absent.
fn strings<'a>(list: Option<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<&'a str>>>) -> Vec<&'a str> {
    list.into_iter().flatten().collect()
}

/// SaslHandshakeRequest: the mechanism is chosen (or the connection closed, after the
/// answer, when it cannot be).
pub fn sasl_handshake(server: &Server, session: &Session, cid: u32, r: wire::SaslHandshakeRequest<'_>) -> Outcome {
    let enabled = &server.shard.config.sasl_mechanisms;
    let result = if server.shard.config.listen_security.sasl() {
        session.begin(r.mechanism().unwrap_or(""), enabled, false, true)
    } else {
        Err(NodeError::new(
            ErrorKind::IllegalSaslState,
            "this listener has no SASL logins (its protocol is not SASL_*)",
        ))
    };
    let mut b = FlatBufferBuilder::new();
    let names: Vec<_> = enabled.iter().map(|m| b.create_string(m)).collect();
    let mechanisms = Some(b.create_vector(&names));
    let (error, message) = error_parts(&mut b, result.as_ref().err());
    let body =
        wire::SaslHandshakeResponse::create(&mut b, &wire::SaslHandshakeResponseArgs { error, message, mechanisms });
    let frame = respond(b, cid, ResponseBody::SaslHandshakeResponse, body.as_union_value(), Vec::new());
    Outcome { response: Some(frame), close: result.is_err() }
}

/// SaslAuthenticateRequest: one token of the exchange; a failed login closes the
/// connection after its answer.
pub async fn sasl_authenticate(
    server: &Server,
    session: &Session,
    cid: u32,
    r: wire::SaslAuthenticateRequest<'_>,
    peer: &str,
) -> Outcome {
    let result = if session.exchanging() {
        session.step(&server.shard, r.token().map(|t| t.bytes()).unwrap_or_default(), peer).await
    } else {
        Err(NodeError::new(ErrorKind::IllegalSaslState, "SaslAuthenticate needs a SaslHandshake first"))
    };
    let mut b = FlatBufferBuilder::new();
    let (error, message) = error_parts(&mut b, result.as_ref().err());
    let (token, lifetime) = match &result {
        Ok((token, lifetime)) => (Some(b.create_vector(token)), lifetime.map_or(0, |l| l.as_millis() as i64)),
        Err(_) => (None, 0),
    };
    let body = wire::SaslAuthenticateResponse::create(
        &mut b,
        &wire::SaslAuthenticateResponseArgs { error, message, token, session_lifetime_ms: lifetime },
    );
    let frame = respond(b, cid, ResponseBody::SaslAuthenticateResponse, body.as_union_value(), Vec::new());
    Outcome { response: Some(frame), close: result.is_err() }
}

/// An error's code and message for a response (none: `ErrorCode::None`).
fn error_parts<'b>(
    b: &mut FlatBufferBuilder<'b>,
    error: Option<&NodeError>,
) -> (ErrorCode, Option<WIPOffset<&'b str>>) {
    match error {
        Some(e) => (error_code(e.kind), Some(b.create_string(&e.message))),
        None => (ErrorCode::None, None),
    }
}

pub fn describe_users(server: &Server, caller: &Caller, cid: u32, r: wire::DescribeUsersRequest<'_>) -> ResponseFrame {
    let names: Vec<String> = r.users().iter().flatten().map(str::to_string).collect();
    let mut b = FlatBufferBuilder::new();
    let (users, denied) = match access::describe_users(server, caller, &names) {
        Ok(users) => (users, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    // A named user that is unknown is the request's error (the first such).
    let missing = users.iter().find_map(|(_, r)| r.as_ref().err()).cloned();
    let mut credentials = Vec::new();
    for (user, result) in &users {
        for (mechanism, iterations) in result.iter().flatten() {
            let user = b.create_string(user);
            let mechanism = b.create_string(mechanism.name());
            credentials.push(wire::UserCredential::create(
                &mut b,
                &wire::UserCredentialArgs { user: Some(user), mechanism: Some(mechanism), iterations: *iterations },
            ));
        }
    }
    let credentials = Some(b.create_vector(&credentials));
    let (error, message) = error_parts(&mut b, denied.as_ref().or(missing.as_ref()));
    let body =
        wire::DescribeUsersResponse::create(&mut b, &wire::DescribeUsersResponseArgs { error, message, credentials });
    respond(b, cid, ResponseBody::DescribeUsersResponse, body.as_union_value(), Vec::new())
}

pub async fn alter_users(server: &Server, caller: &Caller, cid: u32, r: wire::AlterUsersRequest<'_>) -> ResponseFrame {
    let changes = r
        .changes()
        .iter()
        .flatten()
        .map(|c| {
            let name = c.mechanism().unwrap_or("");
            UserChange {
                user: c.user().unwrap_or("").to_string(),
                mechanism: ScramMechanism::from_name(name).ok_or_else(|| format!("{name:?}")),
                set: (!c.delete()).then(|| SaltedPassword {
                    iterations: c.iterations(),
                    salt: c.salt().map(|v| v.bytes().to_vec()).unwrap_or_default(),
                    salted_password: c.salted_password().map(|v| v.bytes().to_vec()).unwrap_or_default(),
                }),
            }
        })
        .collect();
    let results = access::alter_users(server, caller, changes).await;
    let mut b = FlatBufferBuilder::new();
    let items: Vec<_> = results
        .iter()
        .map(|(user, result)| {
            let user = b.create_string(user);
            let (error, message) = error_parts(&mut b, result.as_ref().err());
            wire::UserResult::create(&mut b, &wire::UserResultArgs { user: Some(user), error, message })
        })
        .collect();
    let results = Some(b.create_vector(&items));
    let body = wire::AlterUsersResponse::create(&mut b, &wire::AlterUsersResponseArgs { results });
    respond(b, cid, ResponseBody::AlterUsersResponse, body.as_union_value(), Vec::new())
}

pub async fn create_acls(server: &Server, caller: &Caller, cid: u32, r: wire::CreateAclsRequest<'_>) -> ResponseFrame {
    let acls = r
        .acls()
        .iter()
        .flatten()
        .map(|a| AclBinding {
            resource_type: a.resource_type(),
            resource_name: a.resource_name().unwrap_or("").to_string(),
            pattern_type: a.pattern_type(),
            principal: a.principal().unwrap_or("").to_string(),
            host: a.host().unwrap_or("").to_string(),
            operation: a.operation(),
            permission: a.permission(),
        })
        .collect();
    let results = access::create_acls(server, caller, acls).await;
    acls_response(cid, results.into_iter().map(|r| r.map(|()| Vec::new())).collect())
}

pub fn describe_acls(server: &Server, caller: &Caller, cid: u32, r: wire::DescribeAclsRequest<'_>) -> ResponseFrame {
    let filter = r.filter().map_or_else(any_acl, filter_of);
    acls_response(cid, vec![access::describe_acls(server, caller, &filter)])
}

pub async fn delete_acls(server: &Server, caller: &Caller, cid: u32, r: wire::DeleteAclsRequest<'_>) -> ResponseFrame {
    let filters: Vec<Filter> = r.filters().iter().flatten().map(filter_of).collect();
    acls_response(cid, access::delete_acls(server, caller, &filters).await)
}

/// A filter that matches every entry.
fn any_acl() -> Filter {
    Filter {
        resource_type: resource::ANY,
        pattern_type: crate::acl::pattern::ANY,
        name: None,
        principal: None,
        host: None,
        operation: op::ANY,
        permission: crate::acl::permission::ANY,
    }
}

fn filter_of(a: wire::Acl<'_>) -> Filter {
    Filter {
        resource_type: a.resource_type(),
        pattern_type: a.pattern_type(),
        name: a.resource_name().map(str::to_string),
        principal: a.principal().map(str::to_string),
        host: a.host().map(str::to_string),
        operation: a.operation(),
        permission: a.permission(),
    }
}

/// An `AclsResponse`: per entry or filter, its error or the entries it matched.
fn acls_response(cid: u32, results: Vec<Result<Vec<AclBinding>, NodeError>>) -> ResponseFrame {
    let mut b = FlatBufferBuilder::new();
    let items: Vec<_> = results
        .iter()
        .map(|result| {
            let (error, message) = error_parts(&mut b, result.as_ref().err());
            let acls: Vec<_> = result
                .iter()
                .flatten()
                .map(|a| {
                    let args = wire::AclArgs {
                        resource_type: a.resource_type,
                        resource_name: Some(b.create_string(&a.resource_name)),
                        pattern_type: a.pattern_type,
                        principal: Some(b.create_string(&a.principal)),
                        host: Some(b.create_string(&a.host)),
                        operation: a.operation,
                        permission: a.permission,
                    };
                    wire::Acl::create(&mut b, &args)
                })
                .collect();
            let acls = Some(b.create_vector(&acls));
            wire::AclResult::create(&mut b, &wire::AclResultArgs { error, message, acls })
        })
        .collect();
    let results = Some(b.create_vector(&items));
    let body = wire::AclsResponse::create(&mut b, &wire::AclsResponseArgs { results });
    respond(b, cid, ResponseBody::AclsResponse, body.as_union_value(), Vec::new())
}
