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
//! the users, which the controller keeps (`access`, `shard::security`).

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
use sluice_replication::state::ScramMechanism;
use tracing::warn;

use super::{decode, text, KafkaServer, Request};
use crate::access::{SaltedPassword, UserChange};
use crate::listener::{Outcome, ResponseFrame};

/// Kafka's ILLEGAL_SASL_STATE.
const ILLEGAL_SASL_STATE: i16 = 34;

pub use crate::login::Session;

impl KafkaServer {
    /// SaslHandshake and SaslAuthenticate.
    pub(super) async fn sasl_request(&self, session: &Session, r: &Request, mut body: Bytes, peer: &str) -> Outcome {
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
            if let Err(e) = session.begin(&name, enabled, r.version == 0, r.version >= 1) {
                return refuse(super::code(&e), e.message);
            }
            return answer(r.respond(&SaslHandshakeResponse::default().with_mechanisms(mechanisms())), false);
        }
        let request: SaslAuthenticateRequest = match decode(r, &mut body) {
            Ok(request) => request,
            Err(e) => return malformed(e),
        };
        if !session.exchanging() {
            warn!(%peer, "SaslAuthenticate without a SaslHandshake v1 before it; closing the connection");
            let response = SaslAuthenticateResponse::default()
                .with_error_code(ILLEGAL_SASL_STATE)
                .with_error_message(Some(text("SaslAuthenticate needs a SaslHandshake (v1) first")));
            return answer(r.respond(&response), true);
        }
        match session.step(&self.server.shard, &request.auth_bytes, peer).await {
            Ok((bytes, lifetime)) => {
                let response = SaslAuthenticateResponse::default()
                    .with_auth_bytes(Bytes::from(bytes))
                    .with_session_lifetime_ms(lifetime.map_or(0, |l| l.as_millis() as i64));
                answer(r.respond(&response), false)
            }
            Err(e) => {
                let response = SaslAuthenticateResponse::default()
                    .with_error_code(super::code(&e))
                    .with_error_message(Some(text(&e.message)));
                answer(r.respond(&response), true)
            }
        }
    }

    /// A raw token after a v0 handshake, answered with a raw token (a failure closes the
    /// connection without one, as Kafka does).
    pub(super) async fn sasl_raw_token(&self, session: &Session, token: &[u8], peer: &str) -> Outcome {
        match session.step(&self.server.shard, token, peer).await {
            Ok((bytes, _)) => {
                let mut frame = (bytes.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&bytes);
                Outcome { response: Some(ResponseFrame::new(frame, Vec::new())), close: false }
            }
            Err(_) => Outcome { response: None, close: true },
        }
    }
}

/// DescribeUserScramCredentials: every user (no names, or none given) or the ones named.
pub fn describe_users(
    server: &crate::listener::Server,
    r: &Request,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let names: Vec<String> = request.users.unwrap_or_default().iter().map(|u| u.name.to_string()).collect();
    let users = match crate::access::describe_users(server, &r.caller, &names) {
        Ok(users) => users,
        Err(e) => {
            return DescribeUserScramCredentialsResponse::default()
                .with_error_code(super::code(&e))
                .with_error_message(Some(text(&e.message)));
        }
    };
    let results = users
        .into_iter()
        .map(|(user, credentials)| {
            let result = DescribeUserScramCredentialsResult::default().with_user(text(&user));
            match credentials {
                Ok(credentials) => result.with_credential_infos(
                    credentials
                        .into_iter()
                        .map(|(mechanism, iterations)| {
                            CredentialInfo::default()
                                .with_mechanism(mechanism.number() as i8)
                                .with_iterations(iterations as i32)
                        })
                        .collect(),
                ),
                Err(e) => result.with_error_code(super::code(&e)).with_error_message(Some(text(&e.message))),
            }
        })
        .collect();
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// AlterUserScramCredentials: upsertions carry the salted password (the client salted
/// it); see `access::alter_users`.
pub async fn alter_users(
    server: &crate::listener::Server,
    r: &Request,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mechanism = |n: i8| u8::try_from(n).ok().and_then(ScramMechanism::from_number).ok_or_else(|| n.to_string());
    let deletions = request.deletions.iter().map(|d| UserChange {
        user: d.name.to_string(),
        mechanism: mechanism(d.mechanism),
        set: None,
    });
    let upsertions = request.upsertions.iter().map(|u| UserChange {
        user: u.name.to_string(),
        mechanism: mechanism(u.mechanism),
        set: Some(SaltedPassword {
            iterations: u32::try_from(u.iterations).unwrap_or(0),
            salt: u.salt.to_vec(),
            salted_password: u.salted_password.to_vec(),
        }),
    });
    let results = crate::access::alter_users(server, &r.caller, deletions.chain(upsertions).collect()).await;
    let results = results
        .into_iter()
        .map(|(user, result)| {
            let out = AlterUserScramCredentialsResult::default().with_user(text(&user));
            match result {
                Ok(()) => out,
                Err(e) => out.with_error_code(super::code(&e)).with_error_message(Some(text(&e.message))),
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
