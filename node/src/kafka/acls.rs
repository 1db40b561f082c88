//! CreateAcls, DescribeAcls and DeleteAcls (Kafka's KIP-140 and KIP-290 model) on Kafka's
//! wire: what they do is `crate::access`'s, checked by `crate::acl`. Versions 1 to 3 (Kafka 4.0's; v0, from before prefixed patterns, is gone from Kafka 4.0
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
use sluice_replication::state::AclBinding;

use super::{code, text, Request};
use crate::access::{self, Filter};
use crate::listener::Server;

/// A filter from its fields as Kafka's requests carry them (null strings: any).
#[allow(clippy::too_many_arguments)]
fn filter(
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

fn byte(v: i8) -> u8 {
    u8::try_from(v).unwrap_or(0)
}

pub async fn create_acls(server: &Server, r: &Request, request: CreateAclsRequest) -> CreateAclsResponse {
    let acls = request
        .creations
        .into_iter()
        .map(|c| AclBinding {
            resource_type: byte(c.resource_type),
            pattern_type: byte(c.resource_pattern_type),
            resource_name: c.resource_name.to_string(),
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: byte(c.operation),
            permission: byte(c.permission_type),
        })
        .collect();
    let results = access::create_acls(server, &r.caller, acls)
        .await
        .into_iter()
        .map(|c| match c {
            Ok(()) => AclCreationResult::default(),
            Err(e) => AclCreationResult::default().with_error_code(code(&e)).with_error_message(Some(text(&e.message))),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub fn describe_acls(server: &Server, r: &Request, request: DescribeAclsRequest) -> DescribeAclsResponse {
    let filter = filter(
        request.resource_type_filter,
        request.pattern_type_filter,
        request.resource_name_filter,
        request.principal_filter,
        request.host_filter,
        request.operation,
        request.permission_type,
    );
    let acls = match access::describe_acls(server, &r.caller, &filter) {
        Ok(acls) => acls,
        Err(e) => {
            return DescribeAclsResponse::default()
                .with_error_code(code(&e))
                .with_error_message(Some(text(&e.message)));
        }
    };
    let mut by_resource: BTreeMap<(u8, String, u8), Vec<AclDescription>> = BTreeMap::new();
    for a in acls {
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
    let filters: Vec<Filter> = request
        .filters
        .into_iter()
        .map(|f| {
            filter(
                f.resource_type_filter,
                f.pattern_type_filter,
                f.resource_name_filter,
                f.principal_filter,
                f.host_filter,
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let results = access::delete_acls(server, &r.caller, &filters)
        .await
        .into_iter()
        .map(|result| match result {
            Err(e) => {
                DeleteAclsFilterResult::default().with_error_code(code(&e)).with_error_message(Some(text(&e.message)))
            }
            Ok(list) => {
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
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
