//! SASL users and ACLs: both live in the controller's replicated state (users' SCRAM
//! credentials: `Command::SetScramCredential`, `DeleteScramCredential`; access control
//! entries: `CreateAcls`, `DeleteAcls`), and every shard reads them from its cluster
//! view, so a login and an authorization are decided on the connection's shard with no
//! cross-shard hop. Changes run on shard 0 of the controller, like topic changes, and
//! are answered once committed and served by this node's shards; each is logged as an
//! audit line, and so is every request an ACL denies.

use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_replication::state::{ClusterState, Command, ScramCredential, ScramMechanism};
use sluice_replication::Message;
use tracing::{info, warn};

use super::cluster::{ADMIN_TIMEOUT, STATE_POLL};
use super::{Shard, ShardId, ShardReply, ShardRequest};
use crate::errors::{ErrorKind, NodeError};

impl crate::sasl::Users for Shard {
    fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.view.borrow().users.get(&(user.to_string(), mechanism)).cloned()
    }
}

impl Shard {
    /// Every user's mechanisms and iterations, as this shard serves them.
    #[must_use]
    pub fn users(&self) -> Vec<(String, ScramMechanism, u32)> {
        self.view.borrow().users.iter().map(|((user, m), c)| (user.clone(), *m, c.iterations)).collect()
    }

    /// Whether `principal` from `host` may do `operation` to a resource (`crate::acl`):
    /// always without `--authorizer acl`. Nothing logged: for filtering what a listing
    /// shows.
    #[must_use]
    pub fn permits(&self, principal: &str, host: &str, operation: u8, resource_type: u8, name: &str) -> bool {
        let config = &self.config;
        if !config.acl_authorizer
            || principal == crate::acl::INTER_NODE
            || config.super_users.iter().any(|u| u == principal)
        {
            return true;
        }
        self.view.borrow().acls.allowed(principal, host, operation, resource_type, name, config.allow_if_no_acl)
    }

    /// `permits`, with a denial counted and logged as an audit line.
    #[must_use]
    pub fn allowed(&self, principal: &str, host: &str, operation: u8, resource_type: u8, name: &str) -> bool {
        let allowed = self.permits(principal, host, operation, resource_type, name);
        if !allowed {
            self.metrics.borrow_mut().requests_denied += 1;
            let (operation, resource_type) =
                (crate::acl::operation_name(operation), crate::acl::resource_type_name(resource_type));
            info!(audit = true, principal, host, operation, resource_type, resource = name, "denied by the ACLs");
        }
        allowed
    }

    /// Every access control entry, as this shard serves them.
    #[must_use]
    pub fn acls(&self) -> std::sync::Arc<crate::acl::Acls> {
        self.view.borrow().acls.clone()
    }

    /// Applies changes of users or ACLs (`ShardRequest::Security`) through the controller,
    /// from any shard; one result per change.
    pub async fn change_security(self: &Rc<Self>, changes: Vec<Command>) -> Vec<Result<(), NodeError>> {
        let count = changes.len();
        match self.call(ShardId(0), ShardRequest::Security(changes)).await {
            ShardReply::SecurityChanged(results) => results,
            ShardReply::Failed(e) => vec![Err(e); count],
            other => vec![Err(NodeError::new(ErrorKind::Unknown, format!("unexpected reply {other:?}"))); count],
        }
    }

    /// Shard 0: has the controller apply each change and waits until it is committed and
    /// every shard of this node serves it. The controller proposes them itself; another
    /// node forwards them to it (`Message::ForwardSecurity`, sent again every
    /// `FORWARD_AGAIN` until they show: each applies idempotently).
    pub(super) async fn change_security_here(self: &Rc<Self>, changes: Vec<Command>) -> Vec<Result<(), NodeError>> {
        let Some(agent) = self.agent.get().cloned() else {
            let e = NodeError::new(ErrorKind::Unknown, format!("user change on shard {}, not shard 0", self.id.0));
            return vec![Err(e); changes.len()];
        };
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        let mut results = vec![Ok(()); changes.len()];
        let mut next_forward = Instant::now();
        if agent.is_controller() {
            for (change, result) in changes.iter().zip(&mut results) {
                if let Err(e) = agent.propose(change) {
                    let message = format!("the controller could not propose it: {e}");
                    *result = Err(NodeError::new(ErrorKind::NotController, message));
                }
            }
            next_forward = deadline;
        }
        while Instant::now() < deadline {
            if agent.with_state(|state| changes.iter().all(|c| applied(state, c))) == Some(true) {
                self.await_local_view(deadline).await;
                for (change, _) in changes.iter().zip(&results).filter(|(_, r)| r.is_ok()) {
                    audit(change);
                }
                return results;
            }
            if Instant::now() >= next_forward {
                agent.ask_controller(Message::ForwardSecurity { commands: changes.clone() });
                next_forward = Instant::now() + FORWARD_AGAIN;
            }
            crate::io::sleep(STATE_POLL).await;
        }
        let timeout = NodeError::new(
            ErrorKind::RequestTimedOut,
            format!("the change was not committed within {ADMIN_TIMEOUT:?} (is a quorum of voters up?)"),
        );
        results.into_iter().map(|r| r.and(Err(timeout.clone()))).collect()
    }

    /// Shard 0: creates `SLUICE_BOOTSTRAP_USER` once this node is the controller, unless
    /// the user already has a credential for its mechanism (a later password change
    /// through the Kafka API is never undone by a restart).
    pub(super) fn spawn_bootstrap_user(self: &Rc<Self>) {
        let Some(user) = self.config.bootstrap_user.clone() else { return };
        let weak = Rc::downgrade(self);
        crate::io::spawn_detached(async move {
            loop {
                let Some(shard) = weak.upgrade() else { return };
                let Some(agent) = shard.agent.get().cloned() else { return };
                let exists = agent.with_state(|s| s.scram_credential(&user.name, user.mechanism).is_some());
                if exists == Some(true) {
                    return;
                }
                if agent.is_controller() {
                    let credential = match crate::sasl::new_credential(
                        user.mechanism,
                        &user.password,
                        crate::sasl::ITERATIONS_DEFAULT,
                    ) {
                        Ok(c) => c,
                        Err(e) => {
                            warn!("SLUICE_BOOTSTRAP_USER: {e}");
                            return;
                        }
                    };
                    let set =
                        Command::SetScramCredential { user: user.name.clone(), mechanism: user.mechanism, credential };
                    match shard.change_security_here(vec![set]).await.pop() {
                        Some(Ok(())) => {
                            info!(user = %user.name, mechanism = user.mechanism.name(), "bootstrap SASL user created");
                            return;
                        }
                        Some(Err(e)) => warn!("creating the bootstrap SASL user {:?}: {e}", user.name),
                        None => {}
                    }
                }
                drop(shard);
                crate::io::sleep(Duration::from_millis(200)).await;
            }
        });
    }
}

/// How often a node that is not the controller forwards a change again while it waits.
const FORWARD_AGAIN: Duration = Duration::from_secs(1);

/// The audit line of a change that was applied.
fn audit(change: &Command) {
    match change {
        Command::SetScramCredential { user, mechanism, .. } => {
            info!(audit = true, user = %user, mechanism = mechanism.name(), "SASL user credential set");
        }
        Command::DeleteScramCredential { user, mechanism } => {
            info!(audit = true, user = %user, mechanism = mechanism.name(), "SASL user credential deleted");
        }
        Command::CreateAcls { acls } => acls.iter().for_each(|acl| info!(audit = true, ?acl, "ACL created")),
        Command::DeleteAcls { acls } => acls.iter().for_each(|acl| info!(audit = true, ?acl, "ACL deleted")),
        _ => {}
    }
}

/// Whether a change of users or ACLs shows in the committed state.
fn applied(state: &ClusterState, change: &Command) -> bool {
    match change {
        Command::SetScramCredential { user, mechanism, credential } => {
            state.scram_credential(user, *mechanism) == Some(credential)
        }
        Command::DeleteScramCredential { user, mechanism } => state.scram_credential(user, *mechanism).is_none(),
        Command::CreateAcls { acls } => acls.iter().all(|acl| state.acls().contains(acl)),
        Command::DeleteAcls { acls } => acls.iter().all(|acl| !state.acls().contains(acl)),
        _ => true,
    }
}
