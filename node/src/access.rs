//! Who is asking (`Caller`), and the users' and ACLs' admin operations as both protocols
//! serve them: the Kafka listener's DescribeUserScramCredentials, AlterUserScramCredentials
//! (KIP-554), CreateAcls, DescribeAcls and DeleteAcls, and the native protocol's
//! DescribeUsers, AlterUsers and its ACL requests encode what these functions decide.
//!
//! Users and ACLs live in the controller's replicated state (`shard::security`). Reading
//! them needs DESCRIBE on the cluster, changing them ALTER. ACLs can be managed whether or
//! not `--authorizer acl` enforces them (as Redpanda allows), so a cluster's ACLs can be in
//! place before it is switched on.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use sluice_replication::state::{AclBinding, Command, ScramMechanism};
use tracing::info;

use crate::acl::{self, op, resource};
use crate::errors::{ErrorKind, NodeError};
use crate::listener::Server;

/// A request's principal (`login::Session::principal`) and the client's address, which
/// the ACLs are checked for.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Rc<str>,
    pub host: Rc<str>,
}

impl Caller {
    /// Whether the caller may do `operation` to a resource (`crate::acl`); a denial is
    /// counted and logged as an audit line.
    #[must_use]
    pub fn may(&self, server: &Server, operation: u8, resource_type: u8, name: &str) -> bool {
        server.shard.allowed(&self.principal, &self.host, operation, resource_type, name)
    }

    /// `may` for a topic.
    #[must_use]
    pub fn may_topic(&self, server: &Server, operation: u8, topic: &str) -> bool {
        self.may(server, operation, resource::TOPIC, topic)
    }

    /// `may` for a group.
    #[must_use]
    pub fn may_group(&self, server: &Server, operation: u8, group: &str) -> bool {
        self.may(server, operation, resource::GROUP, group)
    }

    /// `may` for the cluster.
    #[must_use]
    pub fn may_cluster(&self, server: &Server, operation: u8) -> bool {
        self.may(server, operation, resource::CLUSTER, resource::CLUSTER_NAME)
    }

    /// IDEMPOTENT_WRITE on the cluster, or WRITE on any topic (Kafka 3.0+, KIP-679): what
    /// an idempotent producer's InitProducerId needs.
    #[must_use]
    pub fn may_write_idempotently(&self, server: &Server) -> bool {
        self.sees(server, op::IDEMPOTENT_WRITE, resource::CLUSTER, resource::CLUSTER_NAME)
            || server.shard.metadata().topics().any(|t| self.sees(server, op::WRITE, resource::TOPIC, &t.name))
            // Denied: asked again to log and count it.
            || self.may_cluster(server, op::IDEMPOTENT_WRITE)
    }

    /// Whether the caller may see a resource in a listing (nothing logged: a listing
    /// quietly leaves out what the caller may not describe).
    #[must_use]
    pub fn sees(&self, server: &Server, operation: u8, resource_type: u8, name: &str) -> bool {
        server.shard.permits(&self.principal, &self.host, operation, resource_type, name)
    }
}

/// One user's credentials (mechanism, iterations), or why they could not be described.
pub type UserCredentials = (String, Result<Vec<(ScramMechanism, u32)>, NodeError>);

/// Every user's credentials (no `names`), or the named users' (an unknown or repeated
/// name gets its error).
pub fn describe_users(server: &Server, caller: &Caller, names: &[String]) -> Result<Vec<UserCredentials>, NodeError> {
    if !caller.may_cluster(server, op::DESCRIBE) {
        return Err(NodeError::cluster_denied());
    }
    let mut known: BTreeMap<String, Vec<(ScramMechanism, u32)>> = BTreeMap::new();
    for (user, mechanism, iterations) in server.shard.users() {
        known.entry(user).or_default().push((mechanism, iterations));
    }
    if names.is_empty() {
        return Ok(known.into_iter().map(|(user, credentials)| (user, Ok(credentials))).collect());
    }
    let mut seen = BTreeMap::new();
    for name in names {
        *seen.entry(name.clone()).or_insert(0) += 1;
    }
    Ok(seen
        .into_iter()
        .map(|(name, count)| {
            let result = match known.remove(&name) {
                _ if count > 1 => {
                    Err(NodeError::new(ErrorKind::DuplicateResource, format!("user {name:?} named more than once")))
                }
                Some(credentials) => Ok(credentials),
                None => Err(NodeError::new(
                    ErrorKind::ResourceNotFound,
                    format!("Attempt to describe a user credential that does not exist: {name}"),
                )),
            };
            (name, result)
        })
        .collect())
}

/// A change of one user's credential for one mechanism.
pub struct UserChange {
    pub user: String,
    /// The mechanism, or its name or number as the request gave it when no mechanism has it.
    pub mechanism: Result<ScramMechanism, String>,
    /// `None`: delete the credential; else set it from the client's salted password.
    pub set: Option<SaltedPassword>,
}

/// What a client sends to set a password: the password never travels.
pub struct SaltedPassword {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
}

/// Applies `changes` through the controller, the node keeping the keys derived from each
/// salted password. Every change of a user is checked before any is made, and a user with
/// one bad change gets that error for all of them. One result per user.
pub async fn alter_users(
    server: &Server,
    caller: &Caller,
    changes: Vec<UserChange>,
) -> Vec<(String, Result<(), NodeError>)> {
    let allowed = caller.may_cluster(server, op::ALTER);
    let shard = &server.shard;
    let unacceptable = |why: String| NodeError::new(ErrorKind::UnacceptableCredential, why);
    let mut per_user: BTreeMap<String, Vec<Result<Command, NodeError>>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for change in changes {
        let user = change.user;
        let checked = if !allowed {
            Err(NodeError::new(ErrorKind::ClusterAuthorizationFailed, "not authorized to alter users"))
        } else if user.is_empty() || user.len() > acl::NAME_BYTES_MAX {
            Err(unacceptable(format!("the user name must not be empty nor longer than {} bytes", acl::NAME_BYTES_MAX)))
        } else {
            match change.mechanism {
                Err(name) => {
                    Err(NodeError::new(ErrorKind::UnsupportedSaslMechanism, format!("unknown SCRAM mechanism {name}")))
                }
                Ok(m) if !seen.insert((user.clone(), m)) => Err(NodeError::new(
                    ErrorKind::DuplicateResource,
                    format!("user {user:?} has more than one change for {}", m.name()),
                )),
                Ok(m) => match change.set {
                    None if crate::sasl::Users::credential(&**shard, &user, m).is_none() => Err(NodeError::new(
                        ErrorKind::ResourceNotFound,
                        format!("user {user:?} has no {} credential to delete", m.name()),
                    )),
                    None => Ok(Command::DeleteScramCredential { user: user.clone(), mechanism: m }),
                    Some(set) => set_credential(&user, m, &set).map_err(unacceptable),
                },
            }
        };
        per_user.entry(user).or_default().push(checked);
    }
    let mut results = Vec::new();
    let mut commands = Vec::new();
    let mut users_changed = Vec::new();
    for (user, checks) in per_user {
        match checks.iter().find_map(|c| c.as_ref().err()) {
            Some(e) => results.push((user, Err(e.clone()))),
            None => {
                users_changed.push((user, checks.len()));
                commands.extend(checks.into_iter().flatten());
            }
        }
    }
    if !commands.is_empty() {
        let mut outcomes = shard.change_security(commands).await.into_iter();
        for (user, count) in users_changed {
            let failed = outcomes.by_ref().take(count).find_map(Result::err);
            results.push((user, failed.map_or(Ok(()), Err)));
        }
    }
    info!(audit = true, users = results.len(), principal = %caller.principal, "users altered");
    results
}

/// The command that sets `user`'s credential for `mechanism`, or why the credential is
/// unacceptable.
fn set_credential(user: &str, mechanism: ScramMechanism, set: &SaltedPassword) -> Result<Command, String> {
    if !(crate::sasl::ITERATIONS_MIN..=crate::sasl::ITERATIONS_MAX).contains(&set.iterations) {
        return Err(format!(
            "{} iterations for {}: from {} to {}",
            set.iterations,
            mechanism.name(),
            crate::sasl::ITERATIONS_MIN,
            crate::sasl::ITERATIONS_MAX
        ));
    }
    let bad = |v: &[u8]| v.is_empty() || v.len() > sluice_replication::state::SCRAM_FIELD_BYTES_MAX;
    if bad(&set.salt) || bad(&set.salted_password) {
        return Err("an empty or oversized salt or salted password".to_string());
    }
    let credential = crate::sasl::credential_of(mechanism, &set.salted_password, &set.salt, set.iterations);
    Ok(Command::SetScramCredential { user: user.to_string(), mechanism, credential })
}

/// A DescribeAcls or DeleteAcls filter (Kafka's `AclBindingFilter`): `acl::*::ANY` and
/// absent strings match everything.
pub struct Filter {
    pub resource_type: u8,
    pub pattern_type: u8,
    pub name: Option<String>,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: u8,
    pub permission: u8,
}

impl Filter {
    #[must_use]
    pub fn matches(&self, acl: &AclBinding) -> bool {
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

/// Creates `acls` through the controller; one result per entry (an invalid entry gets
/// its error and the others are created).
pub async fn create_acls(server: &Server, caller: &Caller, acls: Vec<AclBinding>) -> Vec<Result<(), NodeError>> {
    let allowed = caller.may_cluster(server, op::ALTER);
    let mut checked: Vec<Result<AclBinding, NodeError>> = acls
        .into_iter()
        .map(|binding| {
            if !allowed {
                return Err(NodeError::cluster_denied());
            }
            acl::check_binding(&binding)
                .map_err(|why| NodeError::new(ErrorKind::InvalidRequest, format!("an invalid ACL: {why}")))?;
            Ok(binding)
        })
        .collect();
    let valid: Vec<AclBinding> = checked.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
    if !valid.is_empty() {
        if let Some(Err(e)) = server.shard.change_security(vec![Command::CreateAcls { acls: valid }]).await.pop() {
            for c in checked.iter_mut().filter(|c| c.is_ok()) {
                *c = Err(e.clone());
            }
        }
    }
    checked.into_iter().map(|c| c.map(|_| ())).collect()
}

/// The entries `filter` matches.
pub fn describe_acls(server: &Server, caller: &Caller, filter: &Filter) -> Result<Vec<AclBinding>, NodeError> {
    if !caller.may_cluster(server, op::DESCRIBE) {
        return Err(NodeError::cluster_denied());
    }
    Ok(server.shard.acls().all().iter().filter(|a| filter.matches(a)).cloned().collect())
}

/// Deletes the entries each filter matches, through the controller; per filter, the
/// entries it deleted.
pub async fn delete_acls(
    server: &Server,
    caller: &Caller,
    filters: &[Filter],
) -> Vec<Result<Vec<AclBinding>, NodeError>> {
    if !caller.may_cluster(server, op::ALTER) {
        return filters.iter().map(|_| Err(NodeError::cluster_denied())).collect();
    }
    let acls = server.shard.acls();
    let matched: Vec<Vec<AclBinding>> =
        filters.iter().map(|f| acls.all().iter().filter(|a| f.matches(a)).cloned().collect()).collect();
    let all: Vec<AclBinding> = matched.iter().flatten().cloned().collect();
    let failed = if all.is_empty() {
        None
    } else {
        server.shard.change_security(vec![Command::DeleteAcls { acls: all }]).await.pop().and_then(Result::err)
    };
    matched.into_iter().map(|list| failed.clone().map_or(Ok(list), Err)).collect()
}
