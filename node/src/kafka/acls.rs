//! CreateAcls, DescribeAcls and DeleteAcls (Kafka's KIP-140 and KIP-290 model): access
//! control entries kept in the controller's replicated state (`shard::security`), checked
//! by `crate::acl`. Managing them needs ALTER (create, delete) or DESCRIBE (describe) on
//! the cluster. They can be managed whether or not `--authorizer acl` enforces them (as
//! Redpanda allows), so a cluster's ACLs can be put in place before it is switched on.
//! Versions 1 to 3 (Kafka 4.0's; v0, from before prefixed patterns, is gone from Kafka 4.0
//! and from the kafka-protocol crate).

use std::collections::BTreeMap;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_replication::state::{AclBinding, Command};

use super::{code, text, Request};
use crate::acl::{self, op};
use crate::errors::{ErrorKind, NodeError};
use crate::listener::Server;

/// A DescribeAcls or DeleteAcls filter.
struct Filter {
    resource_type: u8,
    pattern_type: u8,
    name: Option<String>,
    principal: Option<String>,
    host: Option<String>,
    operation: u8,
    permission: u8,
}

impl Filter {
    /// A filter from its fields as Kafka's requests carry them (null names: any).
    #[allow(clippy::too_many_arguments)]
    fn new(
        resource_type: i8,
        pattern_type: i8,
        name: Option<StrBytes>,
        principal: Option<StrBytes>,
        host: Option<StrBytes>,
        operation: i8,
        permission: i8,
    ) -> Filter {
        Filter {
            resource_type: byte(resource_type),
            pattern_type: byte(pattern_type),
            name: name.map(|n| n.to_string()),
            principal: principal.map(|n| n.to_string()),
            host: host.map(|n| n.to_string()),
            operation: byte(operation),
            permission: byte(permission),
        }
    }

    fn matches(&self, acl: &AclBinding) -> bool {
        acl::filter_matches(
            acl,
            self.resource_type,
            self.pattern_type,
            self.name.as_deref(),
            self.principal.as_deref(),
            self.host.as_deref(),
            self.operation,
            self.permission,
        )
    }
}

fn byte(v: i8) -> u8 {
    u8::try_from(v).unwrap_or(0)
}

fn invalid(message: String) -> NodeError {
    NodeError::new(ErrorKind::InvalidRequest, message)
}

pub async fn create_acls(server: &Server, r: &Request, request: CreateAclsRequest) -> CreateAclsResponse {
    let allowed = r.may_cluster(server, op::ALTER);
    let mut checked: Vec<Result<AclBinding, NodeError>> = request
        .creations
        .into_iter()
        .map(|c| {
            let binding = AclBinding {
                resource_type: byte(c.resource_type),
                pattern_type: byte(c.resource_pattern_type),
                resource_name: c.resource_name.to_string(),
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: byte(c.operation),
                permission: byte(c.permission_type),
            };
            if !allowed {
                return Err(NodeError::cluster_denied());
            }
            acl::check_binding(&binding).map_err(|why| invalid(format!("an invalid ACL: {why}")))?;
            Ok(binding)
        })
        .collect();
    let acls: Vec<AclBinding> = checked.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
    if !acls.is_empty() {
        if let Some(Err(e)) = server.shard.change_security(vec![Command::CreateAcls { acls }]).await.pop() {
            for c in &mut checked {
                if c.is_ok() {
                    *c = Err(e.clone());
                }
            }
        }
    }
    let results = checked
        .into_iter()
        .map(|c| match c {
            Ok(_) => AclCreationResult::default(),
            Err(e) => AclCreationResult::default().with_error_code(code(&e)).with_error_message(Some(text(&e.message))),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub fn describe_acls(server: &Server, r: &Request, request: DescribeAclsRequest) -> DescribeAclsResponse {
    if !r.may_cluster(server, op::DESCRIBE) {
        let e = NodeError::cluster_denied();
        return DescribeAclsResponse::default().with_error_code(code(&e)).with_error_message(Some(text(&e.message)));
    }
    let filter = Filter::new(
        request.resource_type_filter,
        request.pattern_type_filter,
        request.resource_name_filter,
        request.principal_filter,
        request.host_filter,
        request.operation,
        request.permission_type,
    );
    let acls = server.shard.acls();
    let mut by_resource: BTreeMap<(u8, String, u8), Vec<AclDescription>> = BTreeMap::new();
    for a in acls.all().iter().filter(|a| filter.matches(a)) {
        by_resource.entry((a.resource_type, a.resource_name.clone(), a.pattern_type)).or_default().push(
            AclDescription::default()
                .with_principal(text(&a.principal))
                .with_host(text(&a.host))
                .with_operation(a.operation as i8)
                .with_permission_type(a.permission as i8),
        );
    }
    let resources = by_resource
        .into_iter()
        .map(|((resource_type, name, pattern_type), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(resource_type as i8)
                .with_resource_name(text(&name))
                .with_pattern_type(pattern_type as i8)
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

pub async fn delete_acls(server: &Server, r: &Request, request: DeleteAclsRequest) -> DeleteAclsResponse {
    if !r.may_cluster(server, op::ALTER) {
        let e = NodeError::cluster_denied();
        let results = request
            .filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default().with_error_code(code(&e)).with_error_message(Some(text(&e.message)))
            })
            .collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let acls = server.shard.acls();
    let matched: Vec<Vec<AclBinding>> = request
        .filters
        .into_iter()
        .map(|f| {
            let filter = Filter::new(
                f.resource_type_filter,
                f.pattern_type_filter,
                f.resource_name_filter,
                f.principal_filter,
                f.host_filter,
                f.operation,
                f.permission_type,
            );
            acls.all().iter().filter(|a| filter.matches(a)).cloned().collect()
        })
        .collect();
    let all: Vec<AclBinding> = matched.iter().flatten().cloned().collect();
    let failed = if all.is_empty() {
        None
    } else {
        server.shard.change_security(vec![Command::DeleteAcls { acls: all }]).await.pop().and_then(Result::err)
    };
    let results = matched
        .into_iter()
        .map(|list| {
            if let Some(e) = &failed {
                return DeleteAclsFilterResult::default()
                    .with_error_code(code(e))
                    .with_error_message(Some(text(&e.message)));
            }
            let matching = list
                .into_iter()
                .map(|a| {
                    DeleteAclsMatchingAcl::default()
                        .with_resource_type(a.resource_type as i8)
                        .with_resource_name(text(&a.resource_name))
                        .with_pattern_type(a.pattern_type as i8)
                        .with_principal(text(&a.principal))
                        .with_host(text(&a.host))
                        .with_operation(a.operation as i8)
                        .with_permission_type(a.permission as i8)
                })
                .collect();
            DeleteAclsFilterResult::default().with_matching_acls(matching)
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
