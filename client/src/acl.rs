//! Access control entries, Kafka's model: a principal (`User:NAME`) from a host is allowed
//! or denied an operation on resources (topics, groups, the cluster, transactional ids)
//! named literally or by a prefix.
//!
//! The wire carries Kafka's numbers (AclBinding's enums), so they are kept as `u8` here,
//! with a named constant for each and, per kind, `name` (the upper- or lower-case name
//! the CLI prints) and `parse` (any case, `_` or `-` between words, as kafka-acls and rpk
//! accept them). As a filter, `ANY` (1) matches every value of a number, and an absent
//! string every string.

use std::fmt;

/// A filter's "any value" for each number.
pub const ANY: u8 = 1;

/// `name` lower-cased without word separators, for comparing names people type.
fn squash(name: &str) -> String {
    name.chars().filter(|c| !matches!(c, '_' | '-' | ' ')).flat_map(char::to_lowercase).collect()
}

fn name_of(names: &[(u8, &'static str)], number: u8) -> &'static str {
    names.iter().find(|(n, _)| *n == number).map_or("UNKNOWN", |(_, name)| name)
}

fn parse_in(names: &[(u8, &'static str)], text: &str) -> Option<u8> {
    let wanted = squash(text);
    names.iter().find(|(_, name)| squash(name) == wanted).map(|(n, _)| *n)
}

/// Resource types.
pub mod resource {
    pub const TOPIC: u8 = 2;
    pub const GROUP: u8 = 3;
    pub const CLUSTER: u8 = 4;
    pub const TRANSACTIONAL_ID: u8 = 5;
    /// The one name a cluster resource has (Kafka's).
    pub const CLUSTER_NAME: &str = "kafka-cluster";

    const NAMES: [(u8, &str); 4] =
        [(TOPIC, "topic"), (GROUP, "group"), (CLUSTER, "cluster"), (TRANSACTIONAL_ID, "transactional-id")];

    #[must_use]
    pub fn name(number: u8) -> &'static str {
        super::name_of(&NAMES, number)
    }

    #[must_use]
    pub fn parse(name: &str) -> Option<u8> {
        super::parse_in(&NAMES, name)
    }
}

/// Resource pattern types.
pub mod pattern {
    /// A filter's: the patterns that match a name (the literal name, `*`, and prefixes of it).
    pub const MATCH: u8 = 2;
    pub const LITERAL: u8 = 3;
    pub const PREFIXED: u8 = 4;

    const NAMES: [(u8, &str); 3] = [(MATCH, "MATCH"), (LITERAL, "LITERAL"), (PREFIXED, "PREFIXED")];

    #[must_use]
    pub fn name(number: u8) -> &'static str {
        super::name_of(&NAMES, number)
    }

    #[must_use]
    pub fn parse(name: &str) -> Option<u8> {
        super::parse_in(&NAMES, name)
    }
}

/// Operations.
pub mod operation {
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

    const NAMES: [(u8, &str); 11] = [
        (ALL, "ALL"),
        (READ, "READ"),
        (WRITE, "WRITE"),
        (CREATE, "CREATE"),
        (DELETE, "DELETE"),
        (ALTER, "ALTER"),
        (DESCRIBE, "DESCRIBE"),
        (CLUSTER_ACTION, "CLUSTER_ACTION"),
        (DESCRIBE_CONFIGS, "DESCRIBE_CONFIGS"),
        (ALTER_CONFIGS, "ALTER_CONFIGS"),
        (IDEMPOTENT_WRITE, "IDEMPOTENT_WRITE"),
    ];

    #[must_use]
    pub fn name(number: u8) -> &'static str {
        super::name_of(&NAMES, number)
    }

    #[must_use]
    pub fn parse(name: &str) -> Option<u8> {
        super::parse_in(&NAMES, name)
    }

    /// Every operation's name, for messages.
    #[must_use]
    pub fn names() -> Vec<&'static str> {
        NAMES.iter().map(|(_, n)| *n).collect()
    }
}

/// Permissions.
pub mod permission {
    pub const DENY: u8 = 2;
    pub const ALLOW: u8 = 3;

    const NAMES: [(u8, &str); 2] = [(DENY, "DENY"), (ALLOW, "ALLOW")];

    #[must_use]
    pub fn name(number: u8) -> &'static str {
        super::name_of(&NAMES, number)
    }

    #[must_use]
    pub fn parse(name: &str) -> Option<u8> {
        super::parse_in(&NAMES, name)
    }
}

/// One access control entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Acl {
    /// `resource::TOPIC`, `GROUP`, `CLUSTER` or `TRANSACTIONAL_ID`.
    pub resource_type: u8,
    /// The resource's name, or its prefix (`*`: every resource of the type).
    pub resource_name: String,
    /// `pattern::LITERAL` or `pattern::PREFIXED`.
    pub pattern_type: u8,
    /// `User:NAME` (`User:*`: every user).
    pub principal: String,
    /// The client's address, or `*`.
    pub host: String,
    /// One of `operation::*`.
    pub operation: u8,
    /// `permission::ALLOW` or `permission::DENY`.
    pub permission: u8,
}

/// As kafka-acls lists entries: `User:alice ALLOW READ topic orders LITERAL host=*`.
impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {} host={}",
            self.principal,
            permission::name(self.permission),
            operation::name(self.operation),
            resource::name(self.resource_type),
            self.resource_name,
            pattern::name(self.pattern_type),
            self.host
        )
    }
}

/// Which entries a describe or delete applies to: each number `ANY` or a value (the
/// pattern type also `pattern::MATCH`), each string `None` (any) or a value. `Default`
/// matches every entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: u8,
    pub resource_name: Option<String>,
    pub pattern_type: u8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: u8,
    pub permission: u8,
}

impl Default for AclFilter {
    fn default() -> Self {
        AclFilter {
            resource_type: ANY,
            resource_name: None,
            pattern_type: ANY,
            principal: None,
            host: None,
            operation: ANY,
            permission: ANY,
        }
    }
}

impl AclFilter {
    /// The filter matching exactly `acl`.
    #[must_use]
    pub fn exact(acl: &Acl) -> AclFilter {
        AclFilter {
            resource_type: acl.resource_type,
            resource_name: Some(acl.resource_name.clone()),
            pattern_type: acl.pattern_type,
            principal: Some(acl.principal.clone()),
            host: Some(acl.host.clone()),
            operation: acl.operation,
            permission: acl.permission,
        }
    }

    /// Whether the filter matches every entry.
    #[must_use]
    pub fn is_everything(&self) -> bool {
        *self == AclFilter::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case_with_either_separator() {
        assert_eq!(operation::parse("read"), Some(operation::READ));
        assert_eq!(operation::parse("Describe_Configs"), Some(operation::DESCRIBE_CONFIGS));
        assert_eq!(operation::parse("describe-configs"), Some(operation::DESCRIBE_CONFIGS));
        assert_eq!(operation::parse("IdempotentWrite"), Some(operation::IDEMPOTENT_WRITE));
        assert_eq!(operation::parse("any"), None, "a filter's any is a missing flag, not a name");
        assert_eq!(resource::parse("transactional_id"), Some(resource::TRANSACTIONAL_ID));
        assert_eq!(pattern::parse("prefixed"), Some(pattern::PREFIXED));
        assert_eq!(permission::parse("Deny"), Some(permission::DENY));
        for n in 2..=12 {
            assert_eq!(operation::parse(operation::name(n)), Some(n), "every operation's name parses back");
        }
    }

    #[test]
    fn an_entry_prints_as_kafka_acls_lists_it() {
        let acl = Acl {
            resource_type: resource::TOPIC,
            resource_name: "orders".into(),
            pattern_type: pattern::LITERAL,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: operation::READ,
            permission: permission::ALLOW,
        };
        assert_eq!(acl.to_string(), "User:alice ALLOW READ topic orders LITERAL host=*");
        assert!(AclFilter::default().is_everything() && !AclFilter::exact(&acl).is_everything());
    }
}
