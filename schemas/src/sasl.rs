//! SASL authentication of Kafka clients: the PLAIN and SCRAM-SHA-256/512 mechanisms on
//! the server side (RFC 4616, RFC 5802 and RFC 7677, with Kafka's SCRAM extensions
//! accepted and ignored), as plain state machines over the tokens a client sends; the
//! node's Kafka listener (`sluice_node::kafka::auth`) carries the tokens in SaslAuthenticate requests or
//! raw frames.
//!
//! Users live in the node's replicated cluster state as SCRAM credentials
//! (`ScramCredential`: salt, iterations, stored key, server key; never the password). PLAIN checks a password against the user's SCRAM credential
//! (derived again with its salt and iterations), as Redpanda does, so one user store
//! serves every mechanism.
//!
//! Guarantees: every input is untrusted; malformed tokens, unknown users and wrong
//! proofs all end in `Err(AuthError)` (never a panic), and the message a client gets does
//! not say which of user and password was wrong. Comparisons of keys are constant-time.

use std::fmt;

use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

/// A SCRAM mechanism, by Kafka's number for it (AlterUserScramCredentials' `mechanism`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// Kafka's number: 1 for SCRAM-SHA-256, 2 for SCRAM-SHA-512.
    #[must_use]
    pub fn number(self) -> u8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    #[must_use]
    pub fn from_number(n: u8) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.number() == n)
    }

    /// The SASL mechanism name (`SCRAM-SHA-256`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

/// What a node keeps of a SCRAM password (RFC 5802): never the password, only the salt,
/// the iteration count and the two keys derived from the salted password, which let the
/// node check a client's proof and prove itself, but not log in as the user.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// Bytes in one field of a SCRAM credential at most (salts and keys are 16 to 64 bytes).
pub const SCRAM_FIELD_BYTES_MAX: usize = 1_024;

/// The SASL mechanisms a listener can enable, in the order a handshake lists them.
pub const MECHANISMS: [&str; 3] = ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"];

/// Kafka's bounds on a SCRAM credential's iterations (`ScramMechanism.minIterations`,
/// and the maximum its AlterUserScramCredentials accepts).
pub const ITERATIONS_MIN: u32 = 4_096;
pub const ITERATIONS_MAX: u32 = 16_384;
/// The iterations a credential made from a password here gets (Kafka's default for
/// `kafka-configs --add-config SCRAM-...`).
pub const ITERATIONS_DEFAULT: u32 = 4_096;
/// Bytes of a token at most (a username, a nonce and a proof fit many times over).
pub const TOKEN_BYTES_MAX: usize = 8 << 10;

/// A failed authentication: `reason` is for the node's log; clients get one message for
/// every cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub reason: String,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

fn fail<T>(reason: impl Into<String>) -> Result<T, AuthError> {
    Err(AuthError { reason: reason.into() })
}

fn algorithms(mechanism: ScramMechanism) -> (pbkdf2::Algorithm, hmac::Algorithm, &'static digest::Algorithm) {
    match mechanism {
        ScramMechanism::Sha256 => (pbkdf2::PBKDF2_HMAC_SHA256, hmac::HMAC_SHA256, &digest::SHA256),
        ScramMechanism::Sha512 => (pbkdf2::PBKDF2_HMAC_SHA512, hmac::HMAC_SHA512, &digest::SHA512),
    }
}

fn hmac_of(algorithm: hmac::Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(algorithm, key), data).as_ref().to_vec()
}

/// HMAC with `mechanism`'s hash (RFC 5802's HMAC), for the client side of SCRAM.
#[must_use]
pub fn scram_hmac(mechanism: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac_of(algorithms(mechanism).1, key, data)
}

/// The password salted (RFC 5802's SaltedPassword: PBKDF2 with HMAC of the mechanism's
/// hash).
#[must_use]
pub fn salted_password(mechanism: ScramMechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let (algorithm, _, hash) = algorithms(mechanism);
    let mut out = vec![0u8; hash.output_len()];
    let iterations = std::num::NonZeroU32::new(iterations.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(algorithm, iterations, salt, password, &mut out);
    out
}

/// The credential a node keeps for a salted password (what AlterUserScramCredentials
/// carries): StoredKey = H(HMAC(SaltedPassword, "Client Key")), ServerKey =
/// HMAC(SaltedPassword, "Server Key").
#[must_use]
pub fn credential_of(mechanism: ScramMechanism, salted: &[u8], salt: &[u8], iterations: u32) -> ScramCredential {
    let (_, mac, hash) = algorithms(mechanism);
    let client_key = hmac_of(mac, salted, b"Client Key");
    ScramCredential {
        salt: salt.to_vec(),
        iterations,
        stored_key: digest::digest(hash, &client_key).as_ref().to_vec(),
        server_key: hmac_of(mac, salted, b"Server Key"),
    }
}

/// A credential for `password` with a fresh random salt.
pub fn new_credential(mechanism: ScramMechanism, password: &str, iterations: u32) -> Result<ScramCredential, String> {
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut salt).map_err(|_| "no randomness for a salt".to_string())?;
    let salted = salted_password(mechanism, password.as_bytes(), &salt, iterations);
    Ok(credential_of(mechanism, &salted, &salt, iterations))
}

/// Whether `password` is the one `credential` was made from.
#[must_use]
pub fn password_matches(mechanism: ScramMechanism, credential: &ScramCredential, password: &str) -> bool {
    let salted = salted_password(mechanism, password.as_bytes(), &credential.salt, credential.iterations);
    let candidate = credential_of(mechanism, &salted, &credential.salt, credential.iterations);
    constant_time_eq(&candidate.stored_key, &credential.stored_key)
}

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Finds a user's credential for a mechanism (the node's replicated users).
pub trait Users {
    fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;
}

/// One authentication exchange on the server side.
pub enum Exchange {
    Plain,
    Scram(Box<Scram>),
}

/// What a step of an exchange decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes; the client answers with its next token.
    Challenge(Vec<u8>),
    /// Authenticated as this user; send these bytes (empty for PLAIN) as the last
    /// server message.
    Done { user: String, last: Vec<u8> },
}

impl Exchange {
    /// A new exchange for a mechanism named as in a SaslHandshake (`None`: not one of
    /// `MECHANISMS`).
    #[must_use]
    pub fn start(mechanism: &str) -> Option<Exchange> {
        if mechanism == "PLAIN" {
            return Some(Exchange::Plain);
        }
        ScramMechanism::from_name(mechanism)
            .filter(|m| m.name() == mechanism)
            .map(|m| Exchange::Scram(Box::new(Scram::new(m))))
    }

    /// Takes the client's next token. PLAIN's check of the password (one PBKDF2, about a
    /// millisecond) runs here; a caller that keeps a thread for other work uses
    /// `PlainCheck` instead, and runs `PlainCheck::verify` where it may take the time.
    pub fn step(&mut self, token: &[u8], users: &dyn Users) -> Result<Step, AuthError> {
        match self {
            Exchange::Plain => PlainCheck::of(token, users)?.verify(),
            Exchange::Scram(scram) => {
                check_token(token)?;
                scram.step(token, users)
            }
        }
    }
}

fn check_token(token: &[u8]) -> Result<(), AuthError> {
    if token.len() > TOKEN_BYTES_MAX {
        return fail(format!("a SASL token of {} bytes (at most {TOKEN_BYTES_MAX})", token.len()));
    }
    Ok(())
}

/// A PLAIN token read and its user's credential found: what is left is the password's
/// check, `verify`, which costs one PBKDF2 of the credential's iterations.
pub struct PlainCheck {
    user: String,
    password: String,
    mechanism: ScramMechanism,
    credential: ScramCredential,
}

impl PlainCheck {
    /// PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`; the authorization id, if any,
    /// must be the user itself, and the user must have a SCRAM credential.
    pub fn of(token: &[u8], users: &dyn Users) -> Result<PlainCheck, AuthError> {
        check_token(token)?;
        let Ok(text) = std::str::from_utf8(token) else { return fail("a PLAIN token that is not UTF-8") };
        let parts: Vec<&str> = text.split('\0').collect();
        let [authzid, user, password] = parts.as_slice() else {
            return fail("a PLAIN token that is not authzid NUL user NUL password");
        };
        if user.is_empty() || password.is_empty() {
            return fail("a PLAIN token with an empty user or password");
        }
        if !authzid.is_empty() && authzid != user {
            return fail(format!("PLAIN user {user:?} asked to act as {authzid:?}"));
        }
        for mechanism in ScramMechanism::ALL {
            if let Some(credential) = users.credential(user, mechanism) {
                return Ok(PlainCheck {
                    user: (*user).to_string(),
                    password: (*password).to_string(),
                    mechanism,
                    credential,
                });
            }
        }
        fail(format!("PLAIN: no user {user:?}"))
    }

    /// Checks the password against the credential: the exchange's last step.
    pub fn verify(&self) -> Result<Step, AuthError> {
        if password_matches(self.mechanism, &self.credential, &self.password) {
            return Ok(Step::Done { user: self.user.clone(), last: Vec::new() });
        }
        fail(format!("PLAIN: a wrong password for user {:?}", self.user))
    }
}

/// The server side of SCRAM (RFC 5802): client-first, server-first, client-final,
/// server-final. Channel binding is not supported (a client that asks for it is refused).
pub struct Scram {
    mechanism: ScramMechanism,
    state: ScramState,
}

enum ScramState {
    First,
    Final {
        user: String,
        credential: ScramCredential,
        /// The client-first message's GS2 header, which the final message must echo.
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Over,
}

impl Scram {
    #[must_use]
    pub fn new(mechanism: ScramMechanism) -> Scram {
        Scram { mechanism, state: ScramState::First }
    }

    fn step(&mut self, token: &[u8], users: &dyn Users) -> Result<Step, AuthError> {
        let Ok(text) = std::str::from_utf8(token) else { return fail("a SCRAM message that is not UTF-8") };
        match std::mem::replace(&mut self.state, ScramState::Over) {
            ScramState::First => {
                let mut nonce = [0u8; 24];
                ring::rand::SystemRandom::new()
                    .fill(&mut nonce)
                    .map_err(|_| AuthError { reason: "no randomness for a SCRAM nonce".to_string() })?;
                self.first(text, &base64_encode(&nonce), users)
            }
            ScramState::Final { user, credential, gs2_header, client_first_bare, server_first, nonce } => {
                let (_, mac, hash) = algorithms(self.mechanism);
                let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
                    return fail("a SCRAM client-final message without a proof");
                };
                let mut fields = without_proof.split(',');
                // "n,," base64: the client used no channel binding and no authzid (or its own).
                let binding = fields.next().and_then(|f| f.strip_prefix("c="));
                let Some(header) = binding.and_then(base64_decode) else {
                    return fail("a SCRAM client-final message without channel binding data");
                };
                if header != gs2_header.as_bytes() {
                    return fail("SCRAM channel binding data that does not match the client-first message");
                }
                // librdkafka sends its own nonce again before the whole one (client's and
                // server's); Kafka accepts a nonce that ends with the one it sent, so do we.
                if !fields.next().and_then(|f| f.strip_prefix("r=")).is_some_and(|r| r.ends_with(nonce.as_str())) {
                    return fail("a SCRAM client-final message with another nonce");
                }
                let Some(proof) = base64_decode(proof) else { return fail("a SCRAM proof that is not base64") };
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let signature = hmac_of(mac, &credential.stored_key, auth_message.as_bytes());
                if proof.len() != signature.len() {
                    return fail(format!("SCRAM: a proof of the wrong length for user {user:?}"));
                }
                let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
                if !constant_time_eq(digest::digest(hash, &client_key).as_ref(), &credential.stored_key) {
                    return fail(format!("SCRAM: a wrong password for user {user:?}"));
                }
                let server_signature = hmac_of(mac, &credential.server_key, auth_message.as_bytes());
                let last = format!("v={}", base64_encode(&server_signature)).into_bytes();
                Ok(Step::Done { user, last })
            }
            ScramState::Over => fail("a SCRAM message after the exchange ended"),
        }
    }

    /// The client-first message, answered with the server-first one (`server_nonce` is
    /// appended to the client's nonce).
    fn first(&mut self, text: &str, server_nonce: &str, users: &dyn Users) -> Result<Step, AuthError> {
        // gs2-header: "n," or "y," (no channel binding), an optional "a=authzid", ",".
        let mut parts = text.splitn(3, ',');
        let (Some(binding), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
            return fail("a SCRAM client-first message without a GS2 header");
        };
        if binding != "n" && binding != "y" {
            return fail("a SCRAM client that asks for channel binding, which is not supported");
        }
        let mut user = None;
        let mut client_nonce = None;
        for (i, field) in bare.split(',').enumerate() {
            match (i, field.split_once('=')) {
                (0, Some(("n", name))) => user = unescape(name),
                (1, Some(("r", nonce))) => client_nonce = Some(nonce),
                (0 | 1, _) => return fail("a SCRAM client-first message without n= then r="),
                // Extensions (Kafka's tokenauth=true and others) are accepted and ignored.
                _ => {}
            }
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return fail("a SCRAM client-first message with a malformed user or nonce");
        };
        if user.is_empty()
            || client_nonce.is_empty()
            || !client_nonce.bytes().all(|b| b.is_ascii_graphic() && b != b',')
        {
            return fail("a SCRAM client-first message with an empty user or a malformed nonce");
        }
        if let Some(authzid) = authzid.strip_prefix("a=") {
            if unescape(authzid).as_deref() != Some(user.as_str()) {
                return fail(format!("SCRAM user {user:?} asked to act as {authzid:?}"));
            }
        } else if !authzid.is_empty() {
            return fail("a SCRAM GS2 header with a malformed authorization id");
        }
        let Some(credential) = users.credential(&user, self.mechanism) else {
            return fail(format!("{}: no user {user:?} with such a credential", self.mechanism.name()));
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={}", base64_encode(&credential.salt), credential.iterations);
        let challenge = server_first.clone().into_bytes();
        let gs2_header = format!("{binding},{authzid},");
        let client_first_bare = bare.to_string();
        self.state = ScramState::Final { user, credential, gs2_header, client_first_bare, server_first, nonce };
        Ok(Step::Challenge(challenge))
    }
}

/// A SCRAM name unescaped; `None` for a `=` not followed by `2C` or `3D`.
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if after.starts_with("=2C") {
            out.push(',');
        } else if after.starts_with("=3D") {
            out.push('=');
        } else {
            return None;
        }
        rest = &after[3..];
    }
    out.push_str(rest);
    Some(out)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648), as SCRAM uses it.
#[must_use]
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard padded base64; `None` for anything else.
#[must_use]
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (index, chunk) in bytes.chunks(4).enumerate() {
        let last = index + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            let v = BASE64.iter().position(|b| *b == c)? as u32;
            n = (n << 6) | v;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use super::*;

    struct Map(BTreeMap<(String, ScramMechanism), ScramCredential>);

    impl Users for Map {
        fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
            self.0.get(&(user.to_string(), mechanism)).cloned()
        }
    }

    /// RFC 7677's example: user "user", password "pencil".
    fn rfc_users() -> Map {
        let salt = base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        let credential = credential_of(ScramMechanism::Sha256, &salted, &salt, 4096);
        Map(BTreeMap::from([(("user".to_string(), ScramMechanism::Sha256), credential)]))
    }

    #[test]
    fn base64_round_trips_and_refuses_malformed_text() {
        for len in 0..20 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)), Some(bytes));
        }
        assert_eq!(base64_encode(b"n,,"), "biws");
        for bad in ["a", "ab=c", "a===", "ab==cdef", "ab!c", "=abc"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    /// RFC 7677's SCRAM-SHA-256 exchange, byte for byte, with its server nonce.
    #[test]
    fn scram_sha_256_follows_rfc_7677() {
        let users = rfc_users();
        let mut scram = Scram::new(ScramMechanism::Sha256);
        let first = scram.first("n,,n=user,r=rOprNGfwEbeRWgbNEkqO", "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", &users).unwrap();
        assert_eq!(
            first,
            Step::Challenge(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".to_vec()
            )
        );
        let last = scram
            .step(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                &users,
            )
            .unwrap();
        assert_eq!(
            last,
            Step::Done { user: "user".to_string(), last: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec() }
        );
        assert!(scram.step(b"c=biws", &users).is_err(), "nothing after the end");
    }

    /// A client side written from RFC 5802 authenticates against both mechanisms; a
    /// wrong password, another nonce, channel binding, an unknown user and garbage fail.
    #[test]
    fn scram_refuses_wrong_proofs_and_malformed_messages() {
        let mut map = BTreeMap::new();
        for mechanism in ScramMechanism::ALL {
            map.insert(("al,ice".to_string(), mechanism), new_credential(mechanism, "secret", 4096).unwrap());
        }
        let users = Map(map);
        for mechanism in ScramMechanism::ALL {
            assert!(client(mechanism, "al=2Cice", "secret", &users, |m| m).is_ok());
            assert!(client(mechanism, "al=2Cice", "wrong", &users, |m| m).is_err());
            assert!(client(mechanism, "bob", "secret", &users, |m| m).is_err());
            assert!(client(mechanism, "al=2Cice", "secret", &users, |m| format!("{m}x")).is_err(), "another nonce");
            let librdkafka = |m: String| m.replacen("r=", "r=clientnonce", 1);
            assert!(client(mechanism, "al=2Cice", "secret", &users, librdkafka).is_ok(), "librdkafka's nonce");
            let other_header = |m: String| m.replacen("c=biws", "c=eSws", 1);
            assert!(client(mechanism, "al=2Cice", "secret", &users, other_header).is_err(), "y,, echoed for n,,");
        }
        let mut scram = Scram::new(ScramMechanism::Sha256);
        assert!(scram.step(b"p=tls-unique,,n=al=2Cice,r=abc", &users).is_err(), "channel binding");
        for garbage in [&b""[..], b"n,,", b"n,,r=abc", b"n,,n=,r=abc", b"n,,n=a=zz,r=x", b"\xff\xfe", b"x,,n=a,r=b"] {
            assert!(Scram::new(ScramMechanism::Sha512).step(garbage, &users).is_err(), "{garbage:?}");
        }
    }

    /// Runs a whole client exchange; `tamper` may change the client-final message.
    fn client(
        mechanism: ScramMechanism,
        user: &str,
        password: &str,
        users: &dyn Users,
        tamper: impl Fn(String) -> String,
    ) -> Result<(), AuthError> {
        let (_, mac, hash) = algorithms(mechanism);
        let mut exchange = Exchange::start(mechanism.name()).unwrap();
        let bare = format!("n={user},r=clientnonce,tokenauth=false");
        let Step::Challenge(server_first) = exchange.step(format!("n,,{bare}").as_bytes(), users)? else {
            panic!("no challenge")
        };
        let server_first = String::from_utf8(server_first).unwrap();
        let fields: BTreeMap<&str, &str> = server_first.split(',').filter_map(|f| f.split_once('=')).collect();
        let salt = base64_decode(fields["s"]).unwrap();
        let salted = salted_password(mechanism, password.as_bytes(), &salt, fields["i"].parse().unwrap());
        let client_key = hmac_of(mac, &salted, b"Client Key");
        let stored_key = digest::digest(hash, &client_key);
        let without_proof = tamper(format!("c=biws,r={}", fields["r"]));
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let signature = hmac_of(mac, stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let final_message = format!("{without_proof},p={}", base64_encode(&proof));
        let Step::Done { user: who, last } = exchange.step(final_message.as_bytes(), users)? else {
            panic!("not done")
        };
        assert_eq!(who, user.replace("=2C", ","));
        let server_key = hmac_of(mac, &salted, b"Server Key");
        let expected = format!("v={}", base64_encode(&hmac_of(mac, &server_key, auth_message.as_bytes())));
        assert_eq!(String::from_utf8(last).unwrap(), expected, "the server proves it knows the credential");
        Ok(())
    }

    #[test]
    fn plain_checks_the_password_against_the_scram_credential() {
        let users = rfc_users();
        let step = |token: &[u8]| Exchange::start("PLAIN").unwrap().step(token, &users);
        assert_eq!(step(b"\0user\0pencil"), Ok(Step::Done { user: "user".to_string(), last: Vec::new() }));
        assert!(step(b"user\0user\0pencil").is_ok(), "an authzid naming the user itself");
        for bad in [
            &b"\0user\0pen"[..],
            b"other\0user\0pencil",
            b"\0nobody\0pencil",
            b"\0user",
            b"\0\0",
            b"",
            b"\0user\0pencil\0x",
        ] {
            assert!(step(bad).is_err(), "{bad:?}");
        }
        assert!(Exchange::start("GSSAPI").is_none() && Exchange::start("scram-sha-256").is_none());
    }
}
