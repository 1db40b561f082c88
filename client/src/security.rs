//! How the client secures its connections, as Kafka's listeners' security protocols:
//! PLAINTEXT, SSL (TLS), SASL_PLAINTEXT and SASL_SSL (`Security`), and the client side of
//! the SASL logins: SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) and PLAIN
//! (RFC 4616), with the tokens Kafka's clients send.
//!
//! A connection is secured before `Connection::connect` returns it: after TCP connect,
//! the TLS handshake (within the request timeout), then on a SASL listener a
//! SaslHandshake naming the mechanism and SaslAuthenticate requests carrying the
//! mechanism's tokens until the login is done. Nothing else is sent before that. A login
//! the node refuses is a `ClientError::Authentication` with the node's message; it is
//! never retried (the same credentials fail again), so a producer or consumer reports it
//! at once.
//!
//! Guarantees: the SCRAM client checks the node's signature in its last message, so a
//! server that does not hold the user's credential (an impostor) is refused even after it
//! accepted the proof; the password is never sent in a SCRAM login, and never printed by
//! `Debug`. A node that gives the login a lifetime (SaslAuthenticate's
//! `session_lifetime_ms`, Kafka's connections.max.reauth.ms) closes the connection when it
//! ends; rather than log in again on the same connection, the client treats a connection
//! with less than a tenth of its login's lifetime left (at least a second) as broken
//! (`Connection::is_broken`), so routers open a fresh connection, which logs in again,
//! before the node closes the old one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ring::rand::SecureRandom;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sluice_schemas::sasl::{self, ScramMechanism};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::connection::Connection;
use crate::error::{ClientError, ErrorCode, Result};
use crate::protocol;

/// The SASL mechanisms the client can log in with (the node's `sasl::MECHANISMS`).
pub const MECHANISMS: [&str; 3] = sasl::MECHANISMS;

/// The most SaslAuthenticate round trips of one login (SCRAM takes two, PLAIN one): a
/// node that keeps asking is refused rather than followed forever.
const LOGIN_ROUNDS_MAX: u32 = 4;

/// The handshake's answer to a mechanism the listener does not enable.
const UNSUPPORTED_SASL_MECHANISM: ErrorCode = ErrorCode(sluice_schemas::wire::ErrorCode::UnsupportedSaslMechanism.0);

/// How a connection is secured. `Default` is PLAINTEXT: no TLS, no login.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// TLS (SSL and SASL_SSL).
    pub tls: Option<TlsSettings>,
    /// A SASL login (SASL_PLAINTEXT and SASL_SSL).
    pub sasl: Option<SaslSettings>,
}

/// TLS settings: the CA that signed the nodes' certificates, and the client's own
/// certificate for mutual TLS. All files are PEM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// The CA certificates to check nodes' certificates with (Kafka's ssl.ca.location).
    /// Required: the client trusts no CA by default, and connecting without one fails
    /// saying so.
    pub ca_file: Option<PathBuf>,
    /// The client's certificate chain (ssl.certificate.location), for listeners that ask
    /// for one (mutual TLS); given together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (ssl.key.location).
    pub key_file: Option<PathBuf>,
}

/// A SASL login's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslSettings {
    /// SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN (sasl.mechanism).
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Security {
    /// No TLS and no login.
    #[must_use]
    pub fn plaintext() -> Security {
        Security::default()
    }

    /// The security of a Kafka-style `security.protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT or
    /// SASL_SSL, in any case), taking `tls` and `sasl` where the protocol uses them (and
    /// ignoring them where it does not, as Kafka's clients do). A SASL protocol needs
    /// `sasl` with one of `MECHANISMS` (in any case; kept as the node names it) and a
    /// username.
    pub fn from_kafka(security_protocol: &str, tls: TlsSettings, sasl: Option<SaslSettings>) -> Result<Security> {
        let (uses_tls, uses_sasl) = match security_protocol.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            _ => {
                return Err(ClientError::Config(format!(
                    "security.protocol {security_protocol:?}: must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                )))
            }
        };
        let sasl = if uses_sasl {
            let Some(mut sasl) = sasl else {
                return Err(ClientError::Config(format!(
                    "security.protocol {security_protocol}: needs sasl.mechanism, sasl.username and sasl.password"
                )));
            };
            sasl.mechanism = canonical_mechanism(&sasl.mechanism)?.to_string();
            if sasl.username.is_empty() {
                return Err(ClientError::Config(format!("security.protocol {security_protocol}: needs sasl.username")));
            }
            Some(sasl)
        } else {
            None
        };
        Ok(Security { tls: uses_tls.then_some(tls), sasl })
    }

    /// The Kafka name of this security protocol.
    #[must_use]
    pub fn protocol_name(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }
}

/// `mechanism` as the node names it (SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN).
fn canonical_mechanism(mechanism: &str) -> Result<&'static str> {
    MECHANISMS.into_iter().find(|m| m.eq_ignore_ascii_case(mechanism)).ok_or_else(|| {
        ClientError::Config(format!("sasl.mechanism {mechanism:?}: must be one of {}", MECHANISMS.join(", ")))
    })
}

impl TlsSettings {
    /// The rustls client configuration of these settings (the files read now). Every
    /// error names the file and what is wrong with it.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let bad = |m: String| ClientError::Config(m);
        let Some(ca_path) = &self.ca_file else {
            return Err(bad(
                "TLS needs a CA file (ssl.ca.location, the CLI's --tls-ca): the CA that signed the nodes' certificates"
                    .into(),
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates("CA file", ca_path)? {
            roots.add(cert).map_err(|e| bad(format!("CA file {}: {e}", ca_path.display())))?;
        }
        // ring's primitives, as the node's TLS (aws-lc-rs, rustls's default, needs cmake);
        // the provider is deprecated in rustls 0.23.48 only for lacking post-quantum key
        // exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS protocol versions: {e}")))?
            .with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert_path), Some(key_path)) => {
                let certs = certificates("certificate file", cert_path)?;
                let key = PrivateKeyDer::from_pem_file(key_path)
                    .map_err(|e| bad(format!("key file {}: no PEM private key read ({e})", key_path.display())))?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    bad(format!("certificate file {} with key file {}: {e}", cert_path.display(), key_path.display()))
                })?
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(bad("a TLS client certificate needs both its certificate file and its key file".into()))
            }
        };
        Ok(Arc::new(config))
    }
}

/// The certificates of a PEM file; at least one.
fn certificates(what: &str, path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| ClientError::Config(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ClientError::Config(format!("{what} {}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

/// The name a node's certificate must carry: the host part of `address` (HOST:PORT, or
/// [IPV6]:PORT); an IP address is checked as one.
fn server_name(address: &str) -> Result<ServerName<'static>> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(host.to_string())
        .map_err(|e| ClientError::Config(format!("{address}: {host:?} is not a name TLS can check ({e})")))
}

/// The TLS handshake over a connected socket, within `timeout`. A handshake the node or
/// the client refuses (an untrusted or misnamed certificate, a client certificate the
/// node wants) is an authentication error, as Kafka's SslAuthenticationException; a
/// socket that fails or stalls is a connection error (retriable).
pub(crate) async fn tls_handshake(
    tls: &TlsSettings,
    address: &str,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(tls.client_config()?);
    let name = server_name(address)?;
    let connect_error = |message: String| ClientError::Connect { address: address.to_string(), message };
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(refused) => {
                // Bytes that are not TLS: most likely a listener without TLS (PLAINTEXT or
                // SASL_PLAINTEXT) answering the client's hello with one of its frames.
                let hint = match refused {
                    rustls::Error::InvalidMessage(_) => " (is the listener's security protocol SSL or SASL_SSL?)",
                    _ => "",
                };
                Err(ClientError::Authentication(format!("TLS handshake with {address}: {refused}{hint}")))
            }
            None => Err(connect_error(format!("TLS handshake: {e}"))),
        },
        Err(_) => Err(connect_error(format!("TLS handshake timed out after {} ms", timeout.as_millis()))),
    }
}

/// Logs in on a new connection: SaslHandshake, then SaslAuthenticate until the
/// mechanism is done. Returns the login's lifetime (`None`: as long as the connection).
pub(crate) async fn login(conn: &Connection, settings: &SaslSettings) -> Result<Option<Duration>> {
    let address = conn.address();
    let refused = |e: ClientError| match e {
        // The node answers a failed login with an ErrorResponse (and closes), or a SASL
        // error code: either way a refusal, not a failure to retry.
        ClientError::Server { code, message } => {
            ClientError::Authentication(format!("SASL login to {address} refused: {message} ({})", code.name()))
        }
        other => other,
    };
    let (mut mechanism, mut token) = Login::start(settings)?;
    let handshake = protocol::sasl_handshake(conn, mechanism.name()).await.map_err(refused)?;
    if handshake.error == UNSUPPORTED_SASL_MECHANISM {
        return Err(ClientError::Authentication(format!(
            "{address} does not enable SASL mechanism {}; it enables {}",
            mechanism.name(),
            if handshake.mechanisms.is_empty() { "none".to_string() } else { handshake.mechanisms.join(", ") }
        )));
    }
    if handshake.error != ErrorCode::NONE {
        return Err(refused(ClientError::server(handshake.error.0, handshake.message.as_deref())));
    }
    for _ in 0..LOGIN_ROUNDS_MAX {
        let answer = protocol::sasl_authenticate(conn, &token).await.map_err(refused)?;
        if answer.error != ErrorCode::NONE {
            return Err(refused(ClientError::server(answer.error.0, answer.message.as_deref())));
        }
        match mechanism.step(&answer.token)? {
            Next::Send(next) => token = next,
            Next::Done => {
                let lifetime_ms = u64::try_from(answer.session_lifetime_ms).unwrap_or(0);
                return Ok((lifetime_ms > 0).then(|| Duration::from_millis(lifetime_ms)));
            }
        }
    }
    Err(ClientError::Authentication(format!(
        "SASL login to {address}: not done after {LOGIN_ROUNDS_MAX} rounds of {}",
        mechanism.name()
    )))
}

/// When a login of `lifetime` that began at `start` should no longer be used: with a
/// tenth of the lifetime left, and at least a second.
pub(crate) fn renew_at(start: std::time::Instant, lifetime: Duration) -> std::time::Instant {
    let margin = (lifetime / 10).max(Duration::from_secs(1));
    start + lifetime.saturating_sub(margin)
}

/// What a login sends next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// This token, in the next SaslAuthenticate.
    Send(Vec<u8>),
    /// The login is done (and the node proved itself, for SCRAM).
    Done,
}

/// The client side of one SASL login, over the node's tokens (no I/O).
pub(crate) enum Login {
    Plain { sent: bool },
    Scram(Box<ScramClient>),
}

impl Login {
    /// A login with `settings`, and its first token.
    pub(crate) fn start(settings: &SaslSettings) -> Result<(Login, Vec<u8>)> {
        let mechanism = canonical_mechanism(&settings.mechanism)?;
        if settings.username.is_empty() {
            return Err(ClientError::Config("SASL needs a username".into()));
        }
        match ScramMechanism::from_name(mechanism) {
            Some(scram) => {
                let (client, first) = ScramClient::start(scram, &settings.username, &settings.password)?;
                Ok((Login::Scram(Box::new(client)), first))
            }
            None => {
                // PLAIN (RFC 4616): no authorization id, NUL, user, NUL, password.
                let token = format!("\0{}\0{}", settings.username, settings.password).into_bytes();
                Ok((Login::Plain { sent: false }, token))
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Login::Plain { .. } => "PLAIN",
            Login::Scram(s) => s.mechanism.name(),
        }
    }

    /// Takes the node's answer to the last token.
    pub(crate) fn step(&mut self, server_token: &[u8]) -> Result<Next> {
        match self {
            // The node answers PLAIN's one token with an empty one.
            Login::Plain { sent } if !*sent => {
                *sent = true;
                Ok(Next::Done)
            }
            Login::Plain { .. } => {
                Err(ClientError::Authentication("PLAIN: the node asked for more than one token".into()))
            }
            Login::Scram(scram) => scram.step(server_token),
        }
    }
}

/// The client side of SCRAM (RFC 5802) without channel binding: client-first,
/// server-first, client-final, server-final.
pub(crate) struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    client_first_bare: String,
    client_nonce: String,
    state: ScramState,
}

enum ScramState {
    /// Waiting for server-first.
    First,
    /// Waiting for server-final, which must carry this signature.
    Final {
        server_signature: Vec<u8>,
    },
    Done,
}

fn authentication(mechanism: ScramMechanism, message: impl std::fmt::Display) -> ClientError {
    ClientError::Authentication(format!("{}: {message}", mechanism.name()))
}

/// `user` escaped for a SCRAM message (`,` and `=` are the syntax's own).
fn escape(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    /// A new exchange with a random nonce, and its client-first message.
    pub(crate) fn start(mechanism: ScramMechanism, user: &str, password: &str) -> Result<(ScramClient, Vec<u8>)> {
        let mut nonce = [0u8; 24];
        ring::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| authentication(mechanism, "no randomness for a nonce"))?;
        Ok(ScramClient::with_nonce(mechanism, user, password, &sasl::base64_encode(&nonce)))
    }

    fn with_nonce(mechanism: ScramMechanism, user: &str, password: &str, nonce: &str) -> (ScramClient, Vec<u8>) {
        let client_first_bare = format!("n={},r={nonce}", escape(user));
        let first = format!("n,,{client_first_bare}").into_bytes();
        let client = ScramClient {
            mechanism,
            password: password.to_string(),
            client_first_bare,
            client_nonce: nonce.to_string(),
            state: ScramState::First,
        };
        (client, first)
    }

    fn step(&mut self, server_token: &[u8]) -> Result<Next> {
        let mechanism = self.mechanism;
        let Ok(text) = std::str::from_utf8(server_token) else {
            return Err(authentication(mechanism, "a server message that is not UTF-8"));
        };
        if let Some(error) = text.strip_prefix("e=") {
            return Err(authentication(mechanism, format!("the node refused the login: {error}")));
        }
        match std::mem::replace(&mut self.state, ScramState::Done) {
            ScramState::First => self.client_final(text).map(Next::Send),
            ScramState::Final { server_signature } => {
                let Some(signature) = text.strip_prefix("v=").and_then(sasl::base64_decode) else {
                    return Err(authentication(mechanism, "a server-final message without a signature"));
                };
                if !sasl::constant_time_eq(&signature, &server_signature) {
                    return Err(authentication(
                        mechanism,
                        "the node's signature is wrong: it does not hold the user's credential (not the real node?)",
                    ));
                }
                Ok(Next::Done)
            }
            ScramState::Done => Err(authentication(mechanism, "a server message after the exchange ended")),
        }
    }

    /// The client-final message answering server-first (`r=NONCE,s=SALT,i=ITERATIONS`),
    /// with the proof; keeps the signature the server must answer with.
    fn client_final(&mut self, server_first: &str) -> Result<Vec<u8>> {
        let mechanism = self.mechanism;
        let mut fields = server_first.split(',');
        let mut field = |name: &str| fields.next().and_then(|f| f.strip_prefix(name)).map(str::to_string);
        let (Some(nonce), Some(salt), Some(iterations)) = (field("r="), field("s="), field("i=")) else {
            return Err(authentication(mechanism, format!("a malformed server-first message {server_first:?}")));
        };
        // The server's nonce extends ours: one that does not is another exchange's.
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(authentication(mechanism, "the server's nonce does not extend the client's"));
        }
        let Some(salt) = sasl::base64_decode(&salt).filter(|s| !s.is_empty()) else {
            return Err(authentication(mechanism, "a server salt that is not base64"));
        };
        // Kafka's bounds on iterations: fewer is weak, and more than a node accepts would
        // only make this client spend CPU on a server's say-so.
        let iterations = match iterations.parse::<u32>() {
            Ok(i) if (sasl::ITERATIONS_MIN..=sasl::ITERATIONS_MAX).contains(&i) => i,
            _ => {
                return Err(authentication(
                    mechanism,
                    format!("iterations {iterations:?} outside {}..={}", sasl::ITERATIONS_MIN, sasl::ITERATIONS_MAX),
                ))
            }
        };
        let salted = sasl::salted_password(mechanism, self.password.as_bytes(), &salt, iterations);
        // The keys the node keeps (StoredKey, ServerKey), from the same salted password.
        let keys = sasl::credential_of(mechanism, &salted, &salt, iterations);
        let client_key = sasl::scram_hmac(mechanism, &salted, b"Client Key");
        // c=biws: base64 of the GS2 header "n,," (no channel binding, no authzid).
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = sasl::scram_hmac(mechanism, &keys.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&client_signature).map(|(k, s)| k ^ s).collect();
        let server_signature = sasl::scram_hmac(mechanism, &keys.server_key, auth_message.as_bytes());
        self.state = ScramState::Final { server_signature };
        Ok(format!("{without_proof},p={}", sasl::base64_encode(&proof)).into_bytes())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use sluice_schemas::sasl::{new_credential, Exchange, ScramCredential, ScramMechanism, Step, Users};

    use super::*;

    struct Map(BTreeMap<(String, ScramMechanism), ScramCredential>);

    impl Users for Map {
        fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
            self.0.get(&(user.to_string(), mechanism)).cloned()
        }
    }

    fn users(user: &str, password: &str) -> Map {
        let mut map = BTreeMap::new();
        for mechanism in ScramMechanism::ALL {
            map.insert((user.to_string(), mechanism), new_credential(mechanism, password, 4096).unwrap());
        }
        Map(map)
    }

    fn settings(mechanism: &str, username: &str, password: &str) -> SaslSettings {
        SaslSettings { mechanism: mechanism.into(), username: username.into(), password: password.into() }
    }

    /// Runs the client's login against the node's server exchange; `forge` may change
    /// the server's last message. Returns the user the node logged in, or the first error
    /// (the node's as an authentication error, as `login` reports it).
    fn run(settings: &SaslSettings, users: &Map, forge: impl Fn(Vec<u8>) -> Vec<u8>) -> Result<String> {
        let mut server = Exchange::start(&settings.mechanism).expect("a mechanism the node knows");
        let (mut client, mut token) = Login::start(settings)?;
        for _ in 0..LOGIN_ROUNDS_MAX {
            let step = server.step(&token, users).map_err(|e| ClientError::Authentication(e.reason))?;
            match step {
                Step::Challenge(challenge) => match client.step(&challenge)? {
                    Next::Send(next) => token = next,
                    Next::Done => panic!("the client finished before the node"),
                },
                Step::Done { user, last } => {
                    assert_eq!(client.step(&forge(last))?, Next::Done);
                    return Ok(user);
                }
            }
        }
        panic!("no end to the exchange")
    }

    #[test]
    fn scram_logs_in_with_the_right_password_for_both_hashes() {
        let users = users("al,i=ce", "secret");
        for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let user = run(&settings(mechanism, "al,i=ce", "secret"), &users, |m| m).expect(mechanism);
            assert_eq!(user, "al,i=ce", "{mechanism}: the name is escaped and unescaped");
        }
    }

    #[test]
    fn scram_with_a_wrong_password_or_unknown_user_fails() {
        let users = users("alice", "secret");
        for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
            assert!(run(&settings(mechanism, "alice", "wrong"), &users, |m| m).is_err(), "{mechanism}");
            assert!(run(&settings(mechanism, "bob", "secret"), &users, |m| m).is_err(), "{mechanism}");
        }
    }

    /// A server that accepts any proof but does not hold the credential cannot make the
    /// signature: the client refuses to go on, whatever the server says.
    #[test]
    fn a_forged_server_signature_is_refused() {
        let users = users("alice", "secret");
        for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let forged = |last: Vec<u8>| {
                let mut signature = sasl::base64_decode(std::str::from_utf8(&last[2..]).unwrap()).unwrap();
                signature[0] ^= 1;
                format!("v={}", sasl::base64_encode(&signature)).into_bytes()
            };
            let e = run(&settings(mechanism, "alice", "secret"), &users, forged).unwrap_err();
            assert!(matches!(&e, ClientError::Authentication(m) if m.contains("signature")), "{e}");
            assert!(!e.is_retriable());
            let none = run(&settings(mechanism, "alice", "secret"), &users, |_| b"v=".to_vec());
            assert!(none.is_err(), "an empty signature");
        }
    }

    #[test]
    fn scram_refuses_a_server_first_message_that_is_not_its_exchanges() {
        let (mut client, _) = ScramClient::with_nonce(ScramMechanism::Sha256, "u", "p", "abc");
        assert!(client.step(b"r=xyzdef,s=c2FsdA==,i=4096").is_err(), "another nonce");
        for bad in ["r=abc,s=c2FsdA==,i=4096", "r=abcd,s=!,i=4096", "r=abcd,s=c2FsdA==,i=1", "r=abcd,i=4096", "e=no"] {
            let (mut client, _) = ScramClient::with_nonce(ScramMechanism::Sha256, "u", "p", "abc");
            assert!(client.step(bad.as_bytes()).is_err(), "{bad}");
        }
        let (mut client, first) = ScramClient::with_nonce(ScramMechanism::Sha512, "u=v", "p", "abc");
        assert_eq!(first, b"n,,n=u=3Dv,r=abc");
        let last = client.step(b"r=abcdef,s=c2FsdA==,i=4096").unwrap();
        let Next::Send(last) = last else { panic!("no client-final") };
        assert!(last.starts_with(b"c=biws,r=abcdef,p="));
    }

    #[test]
    fn plain_sends_nul_user_nul_password_and_the_node_checks_it() {
        let (mut login, token) = Login::start(&settings("plain", "alice", "secret")).unwrap();
        assert_eq!(token, b"\0alice\0secret");
        assert_eq!(login.step(b"").unwrap(), Next::Done);
        assert!(login.step(b"").is_err(), "PLAIN has one round");
        let users = users("alice", "secret");
        assert_eq!(run(&settings("PLAIN", "alice", "secret"), &users, |m| m).unwrap(), "alice");
        assert!(run(&settings("PLAIN", "alice", "wrong"), &users, |m| m).is_err());
    }

    #[test]
    fn security_protocols_are_kafkas() {
        let sasl = Some(settings("scram-sha-512", "alice", "secret"));
        let tls = TlsSettings { ca_file: Some("ca.pem".into()), ..TlsSettings::default() };
        let plain = Security::from_kafka("plaintext", tls.clone(), sasl.clone()).unwrap();
        assert_eq!(plain, Security::plaintext());
        let ssl = Security::from_kafka("SSL", tls.clone(), sasl.clone()).unwrap();
        assert_eq!((ssl.tls.is_some(), ssl.sasl.is_some(), ssl.protocol_name()), (true, false, "SSL"));
        let sasl_ssl = Security::from_kafka("Sasl_Ssl", tls.clone(), sasl.clone()).unwrap();
        assert_eq!(sasl_ssl.protocol_name(), "SASL_SSL");
        assert_eq!(sasl_ssl.sasl.as_ref().unwrap().mechanism, "SCRAM-SHA-512", "named as the node names it");
        let e = Security::from_kafka("SASL_SCRAM", tls.clone(), sasl.clone()).unwrap_err();
        assert!(e.to_string().contains("SASL_SCRAM"), "{e}");
        assert!(Security::from_kafka("SASL_PLAINTEXT", tls.clone(), None).is_err(), "no login settings");
        let gssapi = Some(settings("GSSAPI", "alice", "secret"));
        assert!(Security::from_kafka("SASL_PLAINTEXT", tls.clone(), gssapi).is_err(), "an unknown mechanism");
        let nobody = Some(settings("PLAIN", "", "secret"));
        assert!(Security::from_kafka("SASL_PLAINTEXT", tls, nobody).is_err(), "no username");
    }

    #[test]
    fn debug_does_not_print_the_password() {
        let security = Security { tls: None, sasl: Some(settings("PLAIN", "alice", "hunter2")) };
        let printed = format!("{security:?}");
        assert!(printed.contains("alice") && !printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn tls_needs_a_ca_and_both_halves_of_a_client_certificate() {
        let e = TlsSettings::default().client_config().unwrap_err();
        assert!(e.to_string().contains("CA file"), "{e}");
        let e = TlsSettings { ca_file: Some("/nonexistent/ca.pem".into()), ..TlsSettings::default() }
            .client_config()
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn the_server_name_is_the_host_of_the_address() {
        assert_eq!(server_name("node-1.example:9292").unwrap(), ServerName::try_from("node-1.example").unwrap());
        assert!(matches!(server_name("127.0.0.1:9292").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("[::1]:9292").unwrap(), ServerName::IpAddress(_)));
    }

    #[test]
    fn a_login_is_renewed_with_a_tenth_of_its_lifetime_left() {
        let start = std::time::Instant::now();
        assert_eq!(renew_at(start, Duration::from_secs(100)), start + Duration::from_secs(90));
        assert_eq!(renew_at(start, Duration::from_secs(5)), start + Duration::from_secs(4), "at least a second");
        assert_eq!(renew_at(start, Duration::from_millis(500)), start, "a lifetime under a second");
    }
}
