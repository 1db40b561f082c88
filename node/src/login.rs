//! A connection's login (SASL) and principal, the same for both protocols' listeners.
//!
//! On a listener whose security protocol is SASL_PLAINTEXT or SASL_SSL, a connection must
//! log in before anything but ApiVersions: a handshake picks a mechanism
//! (`--sasl-mechanisms`), then the mechanism's tokens go back and forth (`Session::step`)
//! until the user is known. A failed login is logged as an audit line and counted. With
//! `--connections-max-reauth-ms` a login lasts that long (KIP-368): the client logs in
//! again on the same connection, as the same user with the same mechanism, or opens a new
//! connection; a request after the login expired closes the connection.
//!
//! The principal the ACLs are checked for: `User:NAME` after a login, else the TLS client
//! certificate's (`User:` and its subject), else `acl::ANONYMOUS`, in Kafka's order.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::errors::{ErrorKind, NodeError};
use crate::sasl::{Exchange, PlainCheck, Step};
use crate::shard::Shard;

/// One connection's SASL state, and its TLS client certificate's principal.
#[derive(Default)]
pub struct Session {
    state: RefCell<State>,
    tls_principal: RefCell<Option<Rc<str>>>,
}

#[derive(Default)]
enum State {
    /// Nothing yet (or a listener without SASL).
    #[default]
    Anonymous,
    /// A mechanism was chosen; its tokens come raw (`raw`: Kafka's handshake v0) or in
    /// authenticate requests. `previous`: the user a re-authentication must keep.
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
    /// Whether the next frame is a raw SASL token (after a Kafka v0 handshake).
    #[must_use]
    pub fn expects_raw(&self) -> bool {
        matches!(&*self.state.borrow(), State::Exchanging { raw: true, .. })
    }

    /// Whether a handshake chose a mechanism whose tokens come in authenticate requests.
    #[must_use]
    pub fn exchanging(&self) -> bool {
        matches!(&*self.state.borrow(), State::Exchanging { raw: false, .. })
    }

    pub fn set_tls_principal(&self, principal: Rc<str>) {
        *self.tls_principal.borrow_mut() = Some(principal);
    }

    /// The connection's principal (see the module documentation).
    #[must_use]
    pub fn principal(&self) -> Rc<str> {
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

    /// Whether a request may run now on a listener that does (`sasl`) or does not require
    /// a login; `login_api`: ApiVersions or a login request, which always may. `Err` says
    /// why not (the connection is then closed).
    pub fn check(&self, sasl: bool, login_api: bool) -> Result<(), &'static str> {
        if !sasl || login_api {
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

    /// A handshake for mechanism `name`, of those `enabled`: the exchange starts (its
    /// tokens raw when `raw`). `reauth`: whether this handshake may re-authenticate a
    /// logged-in connection (Kafka's v1 and later; the native protocol's always), which
    /// must keep its mechanism (and, at the end, its user).
    pub fn begin(&self, name: &str, enabled: &[&'static str], raw: bool, reauth: bool) -> Result<(), NodeError> {
        let illegal = |why: String| NodeError::new(ErrorKind::IllegalSaslState, why);
        let previous = match &*self.state.borrow() {
            State::Anonymous => None,
            State::Authenticated { user, mechanism, .. } if reauth && *mechanism == name => Some(user.clone()),
            State::Authenticated { mechanism, .. } if reauth => {
                return Err(illegal(format!(
                    "re-authentication with {name} on a connection that logged in with {mechanism}"
                )));
            }
            _ => return Err(illegal("a handshake in the middle of an authentication".to_string())),
        };
        let chosen = enabled.iter().find(|m| **m == name).and_then(|m| Some((*m, Exchange::start(m)?)));
        let Some((mechanism, exchange)) = chosen else {
            return Err(NodeError::new(
                ErrorKind::UnsupportedSaslMechanism,
                format!("mechanism {name:?} is not enabled ({})", enabled.join(", ")),
            ));
        };
        *self.state.borrow_mut() = State::Exchanging { mechanism, raw, exchange, previous };
        Ok(())
    }

    /// Runs one token through the connection's exchange: the bytes to send back and, once
    /// logged in, how long the login lasts. A failed login (logged as an audit line and
    /// counted) is `SaslAuthenticationFailed` with Kafka's message. PLAIN's check of the
    /// password (one PBKDF2: 1 ms against a SCRAM-SHA-256 credential, 2.3 ms against a
    /// SCRAM-SHA-512 one) runs on the blocking thread pool, so a burst of logins does not
    /// stall the shard's requests.
    pub async fn step(
        &self,
        shard: &Shard,
        token: &[u8],
        peer: &str,
    ) -> Result<(Vec<u8>, Option<Duration>), NodeError> {
        let without_handshake =
            || NodeError::new(ErrorKind::IllegalSaslState, "an authenticate request without a handshake");
        let plain = match &*self.state.borrow() {
            State::Exchanging { exchange: Exchange::Plain, .. } => Some(PlainCheck::of(token, shard)),
            State::Exchanging { .. } => None,
            _ => return Err(without_handshake()),
        };
        let plain = match plain {
            Some(Ok(check)) => Some(crate::io::run_blocking(move || check.verify()).await),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        let mut state = self.state.borrow_mut();
        // Another request of the connection may have changed its state meanwhile.
        let State::Exchanging { mechanism, exchange, previous, .. } = &mut *state else {
            return Err(without_handshake());
        };
        let mechanism = *mechanism;
        let failed = |reason: String| {
            shard.metrics.borrow_mut().sasl_authentications_failed += 1;
            warn!(audit = true, %peer, mechanism, "SASL authentication failed: {reason}");
            NodeError::new(
                ErrorKind::SaslAuthenticationFailed,
                format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism \
                     {mechanism}"
                ),
            )
        };
        match plain.unwrap_or_else(|| exchange.step(token, shard)) {
            Ok(Step::Challenge(bytes)) => Ok((bytes, None)),
            Ok(Step::Done { user, last }) => {
                if let Some(previous) = previous.as_ref().filter(|p| **p != user) {
                    let reason = format!("re-authentication as {user:?} on a connection of {previous:?}");
                    *state = State::Anonymous;
                    return Err(failed(reason));
                }
                let reauth = shard.config.reauth_ms;
                let lifetime = (reauth > 0).then(|| Duration::from_millis(reauth));
                shard.metrics.borrow_mut().sasl_authentications += 1;
                let again = if previous.is_some() { "SASL re-authentication" } else { "SASL login" };
                tracing::debug!(%peer, user = %user, mechanism, "{again}");
                *state = State::Authenticated { user, mechanism, expires: lifetime.map(|l| Instant::now() + l) };
                Ok((last, lifetime))
            }
            Err(e) => {
                *state = State::Anonymous;
                Err(failed(e.reason))
            }
        }
    }
}
