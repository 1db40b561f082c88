//! Authorization, Kafka's model: access control entries (`AclBinding`, kept in the
//! controller's replicated state) say which principal may or may not do which operation
//! to which resources; `Acls` answers one question, "may this principal from this host do
//! this to this resource", from an index every shard holds (no cross-shard hop).
//!
//! Rules (Kafka's `AclAuthorizer`/`StandardAuthorizer`): super users may do everything; a
//! resource no entry names (literally, by the wildcard `*`, or by a prefix) is allowed
//! only with `--allow-everyone-if-no-acl-found`; otherwise a matching DENY wins over any
//! ALLOW, and an ALLOW of the operation, of ALL, or of an operation that implies it
//! (READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
//! DESCRIBE_CONFIGS) allows it. Principals match exactly or by `User:*`, hosts exactly or
//! by `*`.
//!
//! Numbers are Kafka's, as its requests carry them.

use std::collections::HashMap;

use sluice_replication::state::AclBinding;

/// Kafka's resource types.
pub mod resource {
    pub const ANY: u8 = 1;
    pub const TOPIC: u8 = 2;
    pub const GROUP: u8 = 3;
    pub const CLUSTER: u8 = 4;
    pub const TRANSACTIONAL_ID: u8 = 5;
    /// The one cluster resource's name.
    pub const CLUSTER_NAME: &str = "kafka-cluster";
}

/// Kafka's pattern types.
pub mod pattern {
    pub const ANY: u8 = 1;
    pub const MATCH: u8 = 2;
    pub const LITERAL: u8 = 3;
    pub const PREFIXED: u8 = 4;
}

/// Kafka's operations.
pub mod op {
    pub const ANY: u8 = 1;
    pub const ALL: u8 = 2;
    pub const READ: u8 = 3;
    pub const WRITE: u8 = 4;
    pub const CREATE: u8 = 5;
    pub const DELETE: u8 = 6;
    pub const ALTER: u8 = 7;
    pub const DESCRIBE: u8 = 8;
    pub const CLUSTER_ACTION: u8 = 9;
    pub const DESCRIBE_CONFIGS: u8 = 10;
    pub const ALTER_CONFIGS: u8 = 11;
    pub const IDEMPOTENT_WRITE: u8 = 12;
}

/// Kafka's permission types.
pub mod permission {
    pub const ANY: u8 = 1;
    pub const DENY: u8 = 2;
    pub const ALLOW: u8 = 3;
}

/// Kafka's name of an operation (`READ`), for log lines.
#[must_use]
pub fn operation_name(operation: u8) -> &'static str {
    const NAMES: [&str; 13] = [
        "UNKNOWN",
        "ANY",
        "ALL",
        "READ",
        "WRITE",
        "CREATE",
        "DELETE",
        "ALTER",
        "DESCRIBE",
        "CLUSTER_ACTION",
        "DESCRIBE_CONFIGS",
        "ALTER_CONFIGS",
        "IDEMPOTENT_WRITE",
    ];
    NAMES.get(usize::from(operation)).copied().unwrap_or("UNKNOWN")
}

/// Kafka's name of a resource type (`TOPIC`), for log lines.
#[must_use]
pub fn resource_type_name(resource_type: u8) -> &'static str {
    const NAMES: [&str; 6] = ["UNKNOWN", "ANY", "TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID"];
    NAMES.get(usize::from(resource_type)).copied().unwrap_or("UNKNOWN")
}

/// The principal of the requests nodes make of each other over the cluster link
/// (`shard::kafka_calls`); it may do everything. No login can have it: logins are
/// `User:` principals.
pub const INTER_NODE: &str = "Node:cluster";

/// The principal of a connection that did not authenticate (Kafka's).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Bytes of a name in an entry (or of a user name) at most: Kafka's strings hold 32,767.
pub const NAME_BYTES_MAX: usize = 32_767;

/// What an entry may name: checks a binding a client asks to create.
pub fn check_binding(acl: &AclBinding) -> Result<(), String> {
    if !matches!(acl.resource_type, resource::TOPIC | resource::GROUP | resource::CLUSTER | resource::TRANSACTIONAL_ID)
    {
        return Err(format!("resource type {} (TOPIC, GROUP, CLUSTER or TRANSACTIONAL_ID)", acl.resource_type));
    }
    if !matches!(acl.pattern_type, pattern::LITERAL | pattern::PREFIXED) {
        return Err(format!("pattern type {} (LITERAL or PREFIXED)", acl.pattern_type));
    }
    if acl.resource_name.is_empty() {
        return Err("an empty resource name".to_string());
    }
    for (what, text) in [("resource name", &acl.resource_name), ("principal", &acl.principal), ("host", &acl.host)] {
        if text.len() > NAME_BYTES_MAX {
            return Err(format!("a {what} of {} bytes (at most {NAME_BYTES_MAX})", text.len()));
        }
    }
    if acl.resource_type == resource::CLUSTER
        && (acl.resource_name != resource::CLUSTER_NAME || acl.pattern_type != pattern::LITERAL)
    {
        return Err(format!("the cluster resource is named {:?}, literally", resource::CLUSTER_NAME));
    }
    let Some((kind, name)) = acl.principal.split_once(':') else {
        return Err(format!("principal {:?} is not TYPE:NAME (User:alice)", acl.principal));
    };
    if kind != "User" || name.is_empty() {
        return Err(format!("principal {:?}: only User:NAME principals are known", acl.principal));
    }
    if acl.host.is_empty() {
        return Err("an empty host (use * for any)".to_string());
    }
    if !(op::ALL..=op::IDEMPOTENT_WRITE).contains(&acl.operation) {
        return Err(format!("operation {}", acl.operation));
    }
    if !matches!(acl.permission, permission::DENY | permission::ALLOW) {
        return Err(format!("permission {} (DENY or ALLOW)", acl.permission));
    }
    Ok(())
}

/// Whether `acl` matches a DescribeAcls / DeleteAcls filter (Kafka's `AclBindingFilter`):
/// ANY and null match everything; pattern MATCH matches every entry that applies to the
/// filter's name (literal equal, the wildcard, or a prefix of it).
#[allow(clippy::too_many_arguments)]
#[must_use]
pub fn filter_matches(
    acl: &AclBinding,
    resource_type: u8,
    pattern_type: u8,
    name: Option<&str>,
    principal: Option<&str>,
    host: Option<&str>,
    operation: u8,
    permission: u8,
) -> bool {
    let resource = (resource_type == resource::ANY || acl.resource_type == resource_type)
        && match (pattern_type, name) {
            (pattern::MATCH, Some(name)) => applies_to(acl, name),
            (pattern::MATCH, None) => true,
            (pattern::ANY, name) => name.is_none_or(|n| n == acl.resource_name),
            (kind, name) => acl.pattern_type == kind && name.is_none_or(|n| n == acl.resource_name),
        };
    resource
        && principal.is_none_or(|p| p == acl.principal)
        && host.is_none_or(|h| h == acl.host)
        && (operation == op::ANY || operation == acl.operation)
        && (permission == permission::ANY || permission == acl.permission)
}

/// Whether `acl`'s resource pattern names `name`.
fn applies_to(acl: &AclBinding, name: &str) -> bool {
    match acl.pattern_type {
        pattern::PREFIXED => name.starts_with(acl.resource_name.as_str()),
        _ => acl.resource_name == "*" || acl.resource_name == name,
    }
}

/// The entries of one resource type, indexed for `allowed`.
#[derive(Clone, Debug, Default)]
struct Index {
    literal: HashMap<String, Vec<AclBinding>>,
    /// Prefixed entries by their prefix: a name's matches are found by looking up each of
    /// its prefixes, so cost grows with the name's length, not with the entries.
    prefixed: HashMap<String, Vec<AclBinding>>,
    /// The `*` literal entries.
    wildcard: Vec<AclBinding>,
}

/// Every entry, indexed, with the node's authorization settings.
#[derive(Clone, Debug, Default)]
pub struct Acls {
    by_type: HashMap<u8, Index>,
    all: Vec<AclBinding>,
}

impl Acls {
    #[must_use]
    pub fn new<'a>(acls: impl IntoIterator<Item = &'a AclBinding>) -> Acls {
        let mut out = Acls::default();
        for acl in acls {
            let index = out.by_type.entry(acl.resource_type).or_default();
            if acl.pattern_type == pattern::PREFIXED {
                index.prefixed.entry(acl.resource_name.clone()).or_default().push(acl.clone());
            } else if acl.resource_name == "*" {
                index.wildcard.push(acl.clone());
            } else {
                index.literal.entry(acl.resource_name.clone()).or_default().push(acl.clone());
            }
            out.all.push(acl.clone());
        }
        out
    }

    /// Every entry, in the state's order.
    #[must_use]
    pub fn all(&self) -> &[AclBinding] {
        &self.all
    }

    /// Whether `principal` from `host` may do `operation` to the resource.
    #[must_use]
    pub fn allowed(
        &self,
        principal: &str,
        host: &str,
        operation: u8,
        resource_type: u8,
        name: &str,
        allow_if_none: bool,
    ) -> bool {
        let Some(index) = self.by_type.get(&resource_type) else { return allow_if_none };
        let literal = index.literal.get(name).map(Vec::as_slice).unwrap_or_default();
        let prefixes = (!index.prefixed.is_empty())
            .then(|| name.char_indices().map(|(at, c)| &name[..at + c.len_utf8()]))
            .into_iter()
            .flatten()
            .filter_map(|prefix| index.prefixed.get(prefix))
            .flatten();
        let mut matching = literal.iter().chain(index.wildcard.iter()).chain(prefixes).peekable();
        if matching.peek().is_none() {
            return allow_if_none;
        }
        let mut allowed = false;
        for acl in matching {
            let applies =
                (acl.principal == principal || acl.principal == "User:*") && (acl.host == host || acl.host == "*");
            if !applies {
                continue;
            }
            if acl.permission == permission::DENY && (acl.operation == operation || acl.operation == op::ALL) {
                return false;
            }
            if acl.permission == permission::ALLOW && (acl.operation == op::ALL || implies(acl.operation, operation)) {
                allowed = true;
            }
        }
        allowed
    }
}

/// Whether an ALLOW of `granted` allows `wanted`.
fn implies(granted: u8, wanted: u8) -> bool {
    granted == wanted
        || (wanted == op::DESCRIBE && matches!(granted, op::READ | op::WRITE | op::DELETE | op::ALTER))
        || (wanted == op::DESCRIBE_CONFIGS && granted == op::ALTER_CONFIGS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rt: u8, pt: u8, name: &str, principal: &str, host: &str, operation: u8, permission: u8) -> AclBinding {
        AclBinding {
            resource_type: rt,
            pattern_type: pt,
            resource_name: name.to_string(),
            principal: principal.to_string(),
            host: host.to_string(),
            operation,
            permission,
        }
    }

    #[test]
    fn deny_wins_prefixes_and_wildcards_match_and_operations_imply_describe() {
        use op::*;
        use permission::{ALLOW, DENY};
        use resource::{GROUP, TOPIC};
        let acls = Acls::new(&[
            acl(TOPIC, pattern::LITERAL, "orders", "User:alice", "*", READ, ALLOW),
            acl(TOPIC, pattern::PREFIXED, "logs-", "User:alice", "*", WRITE, ALLOW),
            acl(TOPIC, pattern::LITERAL, "logs-secret", "User:alice", "*", ALL, DENY),
            acl(TOPIC, pattern::LITERAL, "*", "User:*", "10.0.0.9", DESCRIBE, ALLOW),
            acl(TOPIC, pattern::LITERAL, "configs", "User:bob", "*", ALTER_CONFIGS, ALLOW),
            acl(GROUP, pattern::LITERAL, "readers", "User:alice", "127.0.0.1", READ, ALLOW),
        ]);
        let may =
            |who: &str, host: &str, operation, rt, name: &str| acls.allowed(who, host, operation, rt, name, false);
        assert!(may("User:alice", "1.2.3.4", READ, TOPIC, "orders"));
        assert!(may("User:alice", "1.2.3.4", DESCRIBE, TOPIC, "orders"), "READ implies DESCRIBE");
        assert!(!may("User:alice", "1.2.3.4", WRITE, TOPIC, "orders"));
        assert!(!may("User:bob", "1.2.3.4", READ, TOPIC, "orders"), "another principal");
        assert!(may("User:alice", "1.2.3.4", WRITE, TOPIC, "logs-app"), "by prefix");
        assert!(!may("User:alice", "1.2.3.4", WRITE, TOPIC, "logs-secret"), "a DENY beats the prefixed ALLOW");
        assert!(!may("User:alice", "1.2.3.4", WRITE, TOPIC, "log"), "a shorter name is not under the prefix");
        assert!(may("User:carol", "10.0.0.9", DESCRIBE, TOPIC, "anything"), "the wildcard from that host");
        assert!(!may("User:carol", "10.0.0.8", DESCRIBE, TOPIC, "anything"), "another host");
        assert!(may("User:bob", "h", DESCRIBE_CONFIGS, TOPIC, "configs"), "ALTER_CONFIGS implies DESCRIBE_CONFIGS");
        assert!(may("User:alice", "127.0.0.1", READ, GROUP, "readers"));
        assert!(!may("User:alice", "127.0.0.2", READ, GROUP, "readers"));
        assert!(!may("User:alice", "h", READ, GROUP, "writers"), "no entry for the group: denied");
        assert!(acls.allowed("User:alice", "h", READ, GROUP, "writers", true), "... unless allowed when none");
        assert!(!acls.allowed("User:alice", "h", READ, GROUP, "readers", true), "an entry exists: its rules hold");
        assert!(!may("User:x", "h", ALTER, resource::CLUSTER, resource::CLUSTER_NAME));
    }

    #[test]
    fn filters_match_as_kafkas_do_and_bindings_are_checked() {
        let a = acl(resource::TOPIC, pattern::PREFIXED, "logs-", "User:alice", "*", op::WRITE, permission::ALLOW);
        let f = |rt, pt, name, principal| filter_matches(&a, rt, pt, name, principal, None, op::ANY, permission::ANY);
        assert!(f(resource::ANY, pattern::ANY, None, None));
        assert!(f(resource::TOPIC, pattern::PREFIXED, Some("logs-"), Some("User:alice")));
        assert!(!f(resource::TOPIC, pattern::LITERAL, Some("logs-"), None), "not literal");
        assert!(f(resource::TOPIC, pattern::MATCH, Some("logs-app"), None), "MATCH: applies to the name");
        assert!(!f(resource::TOPIC, pattern::MATCH, Some("other"), None));
        assert!(!f(resource::GROUP, pattern::ANY, None, None));
        assert!(!f(resource::ANY, pattern::ANY, None, Some("User:bob")));
        assert!(check_binding(&a).is_ok());
        let bad = [
            acl(resource::ANY, pattern::LITERAL, "x", "User:a", "*", op::READ, permission::ALLOW),
            acl(resource::TOPIC, pattern::MATCH, "x", "User:a", "*", op::READ, permission::ALLOW),
            acl(resource::TOPIC, pattern::LITERAL, "", "User:a", "*", op::READ, permission::ALLOW),
            acl(resource::CLUSTER, pattern::LITERAL, "other", "User:a", "*", op::ALTER, permission::ALLOW),
            acl(resource::TOPIC, pattern::LITERAL, "x", "alice", "*", op::READ, permission::ALLOW),
            acl(resource::TOPIC, pattern::LITERAL, "x", "User:a", "*", op::ANY, permission::ALLOW),
            acl(resource::TOPIC, pattern::LITERAL, "x", "User:a", "*", op::READ, permission::ANY),
        ];
        for b in bad {
            assert!(check_binding(&b).is_err(), "{b:?}");
        }
    }
}
