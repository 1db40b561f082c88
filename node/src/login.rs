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
    /// A PLAIN password is being checked (off the shard thread): another token now is
    /// refused, so one connection runs one check at a time.
    Verifying,
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
            Some(Ok(check)) => {
                let exchanging = std::mem::replace(&mut *self.state.borrow_mut(), State::Verifying);
                let verified = crate::io::run_blocking(move || check.verify()).await;
                *self.state.borrow_mut() = exchanging;
                Some(verified)
            }
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

/// Kafka's `ssl.principal.mapping.rules`: how a TLS client certificate's subject (RFC 2253,
/// as `sluice_schemas::x509::subject` writes it) becomes a principal's name. A list of
/// `RULE:PATTERN/REPLACEMENT/[L|U]` and `DEFAULT`, separated by commas; a `/` inside a
/// pattern or replacement is written `\/`. The first rule whose pattern matches the whole
/// subject gives the name: the replacement with `$1`... for the pattern's groups, lower-
/// or upper-cased with `L` or `U`; `DEFAULT` gives the subject as it is. A subject no rule
/// matches has no principal (the connection stays anonymous, as Kafka refuses it). The
/// default list is `DEFAULT`.
#[derive(Clone, Debug)]
pub struct PrincipalRules(Vec<PrincipalRule>);

#[derive(Clone, Debug)]
enum PrincipalRule {
    Default,
    Rule { pattern: regex_lite::Regex, replacement: String, case: Option<char> },
}

impl Default for PrincipalRules {
    fn default() -> PrincipalRules {
        PrincipalRules(vec![PrincipalRule::Default])
    }
}

impl PrincipalRules {
    /// The rules of `text`; an error names what is wrong with which rule.
    pub fn parse(text: &str) -> Result<PrincipalRules, String> {
        let mut rules = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(PrincipalRule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after).ok_or_else(|| format!("{rest:?}: no / after the pattern"))?;
                let (replacement, after) =
                    until_slash(after).ok_or_else(|| format!("{rest:?}: no / after the replacement"))?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                // Kafka matches the whole subject (Java's Matcher::matches).
                let pattern = regex_lite::Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("RULE:{pattern}: not a regular expression: {e}"))?;
                let replacement = java_groups(&replacement.replace("\\/", "/"));
                rules.push(PrincipalRule::Rule { pattern, replacement, case });
                rest = after;
            } else {
                return Err(format!("{rest:?}: expected RULE:PATTERN/REPLACEMENT/[LU] or DEFAULT"));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("{rest:?}: rules are separated by commas")),
            }
        }
        if rules.is_empty() {
            return Err("no rule given (DEFAULT keeps the subject as it is)".to_string());
        }
        Ok(PrincipalRules(rules))
    }

    /// The principal name for certificate subject `subject`, by the first rule that
    /// matches it; `None` when none does.
    #[must_use]
    pub fn apply(&self, subject: &str) -> Option<String> {
        self.0.iter().find_map(|rule| match rule {
            PrincipalRule::Default => Some(subject.to_string()),
            PrincipalRule::Rule { pattern, replacement, case } => {
                let captures = pattern.captures(subject)?;
                let mut name = String::new();
                captures.expand(replacement, &mut name);
                // An empty name would be one principal for every subject the rule matches.
                (!name.is_empty()).then(|| match case {
                    Some('L') => name.to_lowercase(),
                    Some('U') => name.to_uppercase(),
                    _ => name,
                })
            }
        })
    }
}

/// A replacement with Java's group references (`$1` then any text) written as
/// regex-lite's (`${1}`): regex-lite reads `$1_x` as the group named `1_x`.
fn java_groups(replacement: &str) -> String {
    let mut out = String::with_capacity(replacement.len() + 4);
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push_str("${");
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                out.push(d);
            }
            out.push('}');
        } else {
            out.push(c);
        }
    }
    out
}

/// The text up to the first `/` not escaped as `\/`, and what follows that `/`.
fn until_slash(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'/' => return Some((&text[..i], &text[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::PrincipalRules;

    /// Kafka's documented examples, and its order: the first rule that matches wins.
    #[test]
    fn principal_rules_map_subjects_as_kafkas_do() {
        let rules = PrincipalRules::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, \
             RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L, DEFAULT",
        )
        .unwrap();
        assert_eq!(
            rules.apply("CN=serviceuser,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown").unwrap(),
            "serviceuser"
        );
        assert_eq!(
            rules.apply("CN=adminUser,OU=Admin,O=Unknown,L=Unknown,ST=Unknown,C=Unknown").unwrap(),
            "adminuser@admin"
        );
        assert_eq!(rules.apply("CN=Reader.One").unwrap(), "reader.one");
        assert_eq!(rules.apply("O=no-cn").unwrap(), "O=no-cn", "DEFAULT keeps the subject");
        let upper = PrincipalRules::parse(r"RULE:^CN=([^,]*)(,.*)?$/$1\/x/U").unwrap();
        assert_eq!(upper.apply("CN=bob,O=Acme").unwrap(), "BOB/X", "an escaped slash, upper case");
        assert_eq!(upper.apply("O=Acme"), None, "no rule matches: no principal");
        assert_eq!(PrincipalRules::default().apply("CN=a,O=b").unwrap(), "CN=a,O=b");
        // Java's `$1` followed by text, not a group named `1_svc`; an empty name matches nothing.
        let suffixed = PrincipalRules::parse("RULE:^CN=([^,]*),OU=(.*)$/$1_$2/, RULE:^CN=()$/$1/").unwrap();
        assert_eq!(suffixed.apply("CN=bob,OU=ops").unwrap(), "bob_ops");
        assert_eq!(suffixed.apply("CN="), None);
        for bad in ["", "RULE:^CN=(.*$/x/", "RULE:abc", "RULE:a/b/ junk", "SOMETHING"] {
            assert!(PrincipalRules::parse(bad).is_err(), "{bad:?}");
        }
    }
}
