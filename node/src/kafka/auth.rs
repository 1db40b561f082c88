//! SASL on the Kafka listener (SASL_PLAINTEXT and SASL_SSL), and the users' admin APIs.
//!
//! A connection to a SASL listener must authenticate before anything but ApiVersions:
//! SaslHandshake picks a mechanism (`--sasl-mechanisms`), then the mechanism's tokens
//! travel in SaslAuthenticate requests (handshake v1) or, after a v0 handshake, as raw
//! size-prefixed frames (Kafka's original framing, which older clients use). Any other
//! request first closes the connection, as Kafka does; so does a failed login, after its
//! answer. With `--connections-max-reauth-ms`, a login lasts that long (KIP-368: the
//! answer tells the client, which authenticates again on the same connection as the same
//! user); a request after it expired closes the connection.
//!
//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554) read and change
//! the users, which the controller keeps (`shard::users`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use sluice_replication::state::{Command, ScramMechanism};
use tracing::{info, warn};

use super::{decode, text, KafkaServer, Request};
use crate::errors::ErrorKind;
use crate::listener::{Outcome, ResponseFrame};
use crate::sasl::{Exchange, Step};

/// Kafka's error codes for SASL and users.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const NOT_CONTROLLER: i16 = 41;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;

/// One connection's SASL state, and its TLS client certificate's principal.
#[derive(Default)]
pub struct Session {
    state: RefCell<State>,
    tls_principal: RefCell<Option<std::rc::Rc<str>>>,
}

#[derive(Default)]
enum State {
    /// Nothing yet (or a listener without SASL).
    #[default]
    Anonymous,
    /// A mechanism was chosen; its tokens come raw (`raw`: handshake v0) or in
    /// SaslAuthenticate requests. `previous`: the user a re-authentication must keep.
    Exchanging {
        mechanism: &'static str,
        raw: bool,
        exchange: Exchange,
        previous: Option<String>,
    },
    Authenticated {
        user: String,
        mechanism: &'static str,
        expires: Option<Instant>,
    },
}

impl Session {
    /// Whether the next frame is a raw SASL token (after a v0 handshake).
    pub(super) fn expects_raw(&self) -> bool {
        matches!(&*self.state.borrow(), State::Exchanging { raw: true, .. })
    }

    pub(super) fn set_tls_principal(&self, principal: std::rc::Rc<str>) {
        *self.tls_principal.borrow_mut() = Some(principal);
    }

    /// The connection's principal: `User:NAME` after a SASL login, else its TLS client
    /// certificate's (`User:` and the subject), else `acl::ANONYMOUS` (Kafka's order).
    pub(super) fn principal(&self) -> std::rc::Rc<str> {
        if let Some(user) = self.user() {
            return format!("User:{user}").into();
        }
        self.tls_principal.borrow().clone().unwrap_or_else(|| crate::acl::ANONYMOUS.into())
    }

    /// The authenticated user, if any.
    #[must_use]
    pub fn user(&self) -> Option<String> {
        match &*self.state.borrow() {
            State::Authenticated { user, .. } => Some(user.clone()),
            _ => None,
        }
    }

    /// Whether a request of `api` may run now on a listener that does (`sasl`) or does
    /// not require SASL; `Err` says why not (the connection is then closed).
    pub(super) fn check(&self, sasl: bool, api: ApiKey) -> Result<(), &'static str> {
        if !sasl || matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
            return Ok(());
        }
        match &*self.state.borrow() {
            State::Authenticated { expires, .. } if expires.is_none_or(|at| Instant::now() < at) => Ok(()),
            State::Authenticated { .. } => {
                Err("its SASL login expired (connections-max-reauth-ms) and it did not authenticate again")
            }
            _ => Err("the connection has not authenticated (SASL) yet"),
        }
    }
}

impl KafkaServer {
    /// SaslHandshake and SaslAuthenticate.
    pub(super) fn sasl_request(&self, session: &Session, r: &Request, mut body: Bytes, peer: &str) -> Outcome {
        let answer = |frame: Result<ResponseFrame, crate::errors::NodeError>, close: bool| match frame {
            Ok(frame) => Outcome { response: Some(frame), close },
            Err(_) => Outcome { response: None, close: true },
        };
        let malformed = |e: crate::errors::NodeError| {
            warn!(%peer, "{e}; closing the connection");
            Outcome { response: None, close: true }
        };
        let enabled = &self.server.shard.config.sasl_mechanisms;
        let mechanisms = || enabled.iter().map(|m| text(m)).collect::<Vec<_>>();
        if r.key == ApiKey::SaslHandshake {
            let request: SaslHandshakeRequest = match decode(r, &mut body) {
                Ok(request) => request,
                Err(e) => return malformed(e),
            };
            let refuse = |code: i16, why: String| {
                warn!(%peer, "SASL handshake refused: {why}; closing the connection");
                answer(
                    r.respond(&SaslHandshakeResponse::default().with_error_code(code).with_mechanisms(mechanisms())),
                    true,
                )
            };
            if !self.security.sasl() {
                let response = SaslHandshakeResponse::default().with_error_code(ILLEGAL_SASL_STATE);
                return answer(r.respond(&response), false);
            }
            let name = request.mechanism.to_string();
            let previous = match &*session.state.borrow() {
                State::Anonymous => None,
                // KIP-368: re-authentication keeps the user and the mechanism.
                State::Authenticated { user, mechanism, .. } if r.version >= 1 && *mechanism == name => {
                    Some(user.clone())
                }
                State::Authenticated { mechanism, .. } if r.version >= 1 => {
                    let why = format!("re-authentication with {name} on a connection that logged in with {mechanism}");
                    return refuse(ILLEGAL_SASL_STATE, why);
                }
                _ => return refuse(ILLEGAL_SASL_STATE, "a handshake in the middle of an authentication".to_string()),
            };
            let chosen = enabled.iter().find(|m| **m == name).and_then(|m| Some((*m, Exchange::start(m)?)));
            let Some((mechanism, exchange)) = chosen else {
                return refuse(
                    UNSUPPORTED_SASL_MECHANISM,
                    format!("mechanism {name:?} is not enabled ({})", enabled.join(", ")),
                );
            };
            *session.state.borrow_mut() = State::Exchanging { mechanism, raw: r.version == 0, exchange, previous };
            return answer(r.respond(&SaslHandshakeResponse::default().with_mechanisms(mechanisms())), false);
        }
        let request: SaslAuthenticateRequest = match decode(r, &mut body) {
            Ok(request) => request,
            Err(e) => return malformed(e),
        };
        if !matches!(&*session.state.borrow(), State::Exchanging { raw: false, .. }) {
            warn!(%peer, "SaslAuthenticate without a SaslHandshake v1 before it; closing the connection");
            let response = SaslAuthenticateResponse::default()
                .with_error_code(ILLEGAL_SASL_STATE)
                .with_error_message(Some(text("SaslAuthenticate needs a SaslHandshake (v1) first")));
            return answer(r.respond(&response), true);
        }
        match self.sasl_step(session, &request.auth_bytes, peer) {
            Ok((bytes, lifetime)) => {
                let response = SaslAuthenticateResponse::default()
                    .with_auth_bytes(Bytes::from(bytes))
                    .with_session_lifetime_ms(lifetime.map_or(0, |l| l.as_millis() as i64));
                answer(r.respond(&response), false)
            }
            Err(mechanism) => {
                let message = format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                );
                let response = SaslAuthenticateResponse::default()
                    .with_error_code(SASL_AUTHENTICATION_FAILED)
                    .with_error_message(Some(text(&message)));
                answer(r.respond(&response), true)
            }
        }
    }

    /// A raw token after a v0 handshake, answered with a raw token (a failure closes the
    /// connection without one, as Kafka does).
    pub(super) fn sasl_raw_token(&self, session: &Session, token: &[u8], peer: &str) -> Outcome {
        match self.sasl_step(session, token, peer) {
            Ok((bytes, _)) => {
                let mut frame = (bytes.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&bytes);
                Outcome { response: Some(ResponseFrame::new(frame, Vec::new())), close: false }
            }
            Err(_) => Outcome { response: None, close: true },
        }
    }

    /// Runs one token through the connection's exchange: the bytes to send back and, once
    /// authenticated, how long the login lasts; `Err(mechanism)` when it failed (logged
    /// and counted).
    fn sasl_step(
        &self,
        session: &Session,
        token: &[u8],
        peer: &str,
    ) -> Result<(Vec<u8>, Option<Duration>), &'static str> {
        let mut state = session.state.borrow_mut();
        let State::Exchanging { mechanism, exchange, previous, .. } = &mut *state else {
            return Err("none");
        };
        let mechanism = *mechanism;
        let shard = &self.server.shard;
        let result = exchange.step(token, &**shard);
        let failed = |reason: String| {
            shard.metrics.borrow_mut().sasl_authentications_failed += 1;
            warn!(audit = true, %peer, mechanism, "SASL authentication failed: {reason}");
        };
        match result {
            Ok(Step::Challenge(bytes)) => Ok((bytes, None)),
            Ok(Step::Done { user, last }) => {
                if previous.as_ref().is_some_and(|p| *p != user) {
                    let reason = format!(
                        "re-authentication as {user:?} on a connection of {:?}",
                        previous.as_deref().unwrap_or("")
                    );
                    *state = State::Anonymous;
                    failed(reason);
                    return Err(mechanism);
                }
                let reauth = shard.config.reauth_ms;
                let lifetime = (reauth > 0).then(|| Duration::from_millis(reauth));
                let again = previous.is_some();
                shard.metrics.borrow_mut().sasl_authentications += 1;
                if again {
                    tracing::debug!(%peer, user = %user, mechanism, "SASL re-authentication");
                } else {
                    tracing::debug!(%peer, user = %user, mechanism, "SASL login");
                }
                *state = State::Authenticated { user, mechanism, expires: lifetime.map(|l| Instant::now() + l) };
                Ok((last, lifetime))
            }
            Err(e) => {
                *state = State::Anonymous;
                failed(e.reason);
                Err(mechanism)
            }
        }
    }
}

/// DescribeUserScramCredentials: every user (no names, or none given) or the ones named.
pub fn describe_users(
    server: &crate::listener::Server,
    r: &Request,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !r.may_cluster(server, crate::acl::op::DESCRIBE) {
        let e = crate::errors::NodeError::cluster_denied();
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(super::code(&e))
            .with_error_message(Some(text(&e.message)));
    }
    let mut known: BTreeMap<String, Vec<CredentialInfo>> = BTreeMap::new();
    for (user, mechanism, iterations) in server.shard.users() {
        let info =
            CredentialInfo::default().with_mechanism(mechanism.number() as i8).with_iterations(iterations as i32);
        known.entry(user).or_default().push(info);
    }
    let result = |user: &str, code: i16, message: Option<String>, infos: Vec<CredentialInfo>| {
        DescribeUserScramCredentialsResult::default()
            .with_user(text(user))
            .with_error_code(code)
            .with_error_message(message.map(|m| text(&m)))
            .with_credential_infos(infos)
    };
    let names: Vec<String> = request.users.unwrap_or_default().iter().map(|u| u.name.to_string()).collect();
    let results = if names.is_empty() {
        known.into_iter().map(|(user, infos)| result(&user, 0, None, infos)).collect()
    } else {
        let mut seen = BTreeMap::new();
        for name in &names {
            *seen.entry(name.clone()).or_insert(0) += 1;
        }
        seen.into_iter()
            .map(|(name, count)| match known.remove(&name) {
                _ if count > 1 => {
                    result(&name, DUPLICATE_RESOURCE, Some(format!("user {name:?} named more than once")), Vec::new())
                }
                Some(infos) => result(&name, 0, None, infos),
                None => result(
                    &name,
                    RESOURCE_NOT_FOUND,
                    Some(format!("Attempt to describe a user credential that does not exist: {name}")),
                    Vec::new(),
                ),
            })
            .collect()
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// AlterUserScramCredentials: upsertions carry the salted password (the client salted
/// it); the node keeps the keys derived from it. Every change of a user is checked
/// before any is made, and a user with one bad change gets that error for all of them.
pub async fn alter_users(
    server: &crate::listener::Server,
    r: &Request,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    type Check = Result<Command, (i16, String)>;
    let allowed = r.may_cluster(server, crate::acl::op::ALTER);
    let mut per_user: BTreeMap<String, Vec<Check>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let shard = &server.shard;
    let mut check = |user: &str, mechanism: i8, make: &dyn Fn(ScramMechanism) -> Check| {
        let checked = if !allowed {
            Err((super::code(&crate::errors::NodeError::cluster_denied()), "not authorized to alter users".to_string()))
        } else if user.is_empty() || user.len() > crate::acl::NAME_BYTES_MAX {
            let why = format!("the user name must not be empty nor longer than {} bytes", crate::acl::NAME_BYTES_MAX);
            Err((UNACCEPTABLE_CREDENTIAL, why))
        } else if let Some(m) = u8::try_from(mechanism).ok().and_then(ScramMechanism::from_number) {
            if seen.insert((user.to_string(), m)) {
                make(m)
            } else {
                Err((DUPLICATE_RESOURCE, format!("user {user:?} has more than one change for {}", m.name())))
            }
        } else {
            Err((UNSUPPORTED_SASL_MECHANISM, format!("unknown SCRAM mechanism {mechanism}")))
        };
        per_user.entry(user.to_string()).or_default().push(checked);
    };
    for deletion in &request.deletions {
        let user = deletion.name.to_string();
        check(&user, deletion.mechanism, &|m| {
            if crate::sasl::Users::credential(&**shard, &user, m).is_none() {
                return Err((RESOURCE_NOT_FOUND, format!("user {user:?} has no {} credential to delete", m.name())));
            }
            Ok(Command::DeleteScramCredential { user: user.clone(), mechanism: m })
        });
    }
    for upsertion in &request.upsertions {
        let user = upsertion.name.to_string();
        check(&user, upsertion.mechanism, &|m| {
            let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
            if !(crate::sasl::ITERATIONS_MIN..=crate::sasl::ITERATIONS_MAX).contains(&iterations) {
                return Err((
                    UNACCEPTABLE_CREDENTIAL,
                    format!(
                        "{} iterations for {}: from {} to {}",
                        upsertion.iterations,
                        m.name(),
                        crate::sasl::ITERATIONS_MIN,
                        crate::sasl::ITERATIONS_MAX
                    ),
                ));
            }
            let bad = |v: &Bytes| v.is_empty() || v.len() > sluice_replication::state::SCRAM_FIELD_BYTES_MAX;
            if bad(&upsertion.salt) || bad(&upsertion.salted_password) {
                return Err((UNACCEPTABLE_CREDENTIAL, "an empty or oversized salt or salted password".to_string()));
            }
            let credential = crate::sasl::credential_of(m, &upsertion.salted_password, &upsertion.salt, iterations);
            Ok(Command::SetScramCredential { user: user.clone(), mechanism: m, credential })
        });
    }
    let mut results = Vec::new();
    let mut changes = Vec::new();
    let mut users_changed = Vec::new();
    for (user, checks) in per_user {
        match checks.iter().find_map(|c| c.as_ref().err()) {
            Some((code, message)) => results.push((user, *code, Some(message.clone()))),
            None => {
                users_changed.push((user, checks.len()));
                changes.extend(checks.into_iter().flatten());
            }
        }
    }
    if !changes.is_empty() {
        let mut outcomes = shard.change_security(changes).await.into_iter();
        for (user, count) in users_changed {
            let failed = outcomes.by_ref().take(count).find_map(Result::err);
            results.push(match failed {
                None => (user, 0, None),
                Some(e) if e.kind == ErrorKind::NotController => (user, NOT_CONTROLLER, Some(e.message)),
                Some(e) => (user, super::code(&e), Some(e.message)),
            });
        }
    }
    info!(audit = true, users = results.len(), "AlterUserScramCredentials");
    let results = results
        .into_iter()
        .map(|(user, code, message)| {
            AlterUserScramCredentialsResult::default()
                .with_user(text(&user))
                .with_error_code(code)
                .with_error_message(message.map(|m| text(&m)))
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
