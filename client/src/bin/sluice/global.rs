//! The flags every command takes, anywhere on the line: the bootstrap servers and how
//! connections are secured (security protocol, SASL login, TLS files), each with its
//! environment fallback. They are checked before anything connects: a missing or
//! contradictory setting is bad usage (exit code 2).

use std::path::PathBuf;
use std::time::Duration;

use sluice_client::{Admin, ClientError, SaslSettings, Security, TlsSettings};

use crate::Failure;

/// The default bootstrap server (when neither --bootstrap nor $SLUICE_BOOTSTRAP is set).
const BOOTSTRAP_DEFAULT: &str = "127.0.0.1:9292";
/// The SASL mechanism when a SASL protocol is given without one.
pub(crate) const MECHANISM_DEFAULT: &str = "SCRAM-SHA-512";
/// The admin client's request timeout.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Every global flag's name (without `--`), each taking a value.
const FLAGS: [&str; 8] = [
    "bootstrap",
    "security-protocol",
    "sasl-mechanism",
    "sasl-username",
    "sasl-password",
    "tls-ca",
    "tls-cert",
    "tls-key",
];

/// Where commands connect, and how.
pub(crate) struct Global {
    pub(crate) servers: Vec<String>,
    pub(crate) security: Security,
}

impl Global {
    /// Removes the global flags from `words` (`--flag VALUE` or `--flag=VALUE`, anywhere;
    /// the last one given wins) and reads their environment fallbacks through `env`.
    pub(crate) fn take(words: &mut Vec<String>, env: &dyn Fn(&str) -> Option<String>) -> Result<Global, Failure> {
        let mut given: Vec<(&'static str, String)> = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let Some(flag) = words[i].strip_prefix("--") else {
                i += 1;
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            let Some(name) = FLAGS.into_iter().find(|f| *f == name) else {
                i += 1;
                continue;
            };
            words.remove(i);
            let value = match inline {
                Some(value) => value,
                None if i < words.len() => words.remove(i),
                None => return Err(Failure::Usage(format!("--{name} needs a value"))),
            };
            given.push((name, value));
        }
        let flag = |name: &str| given.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        // An empty variable counts as unset.
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let bootstrap = flag("bootstrap").or_else(|| env("SLUICE_BOOTSTRAP")).unwrap_or(BOOTSTRAP_DEFAULT.into());
        let servers: Vec<String> =
            bootstrap.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        if servers.is_empty() {
            return Err(Failure::Usage("--bootstrap names no server".into()));
        }
        let protocol =
            flag("security-protocol").or_else(|| env("SLUICE_SECURITY_PROTOCOL")).unwrap_or("PLAINTEXT".into());
        let upper = protocol.to_ascii_uppercase();
        let (uses_tls, uses_sasl) = (matches!(upper.as_str(), "SSL" | "SASL_SSL"), upper.starts_with("SASL_"));
        // Flags the protocol would ignore are a mistake (a forgotten --security-protocol),
        // not something to ignore silently.
        for (name, used) in [
            ("tls-ca", uses_tls),
            ("tls-cert", uses_tls),
            ("tls-key", uses_tls),
            ("sasl-mechanism", uses_sasl),
            ("sasl-username", uses_sasl),
            ("sasl-password", uses_sasl),
        ] {
            if !used && flag(name).is_some() {
                let wanted = if name.starts_with("tls") { "SSL or SASL_SSL" } else { "SASL_PLAINTEXT or SASL_SSL" };
                return Err(Failure::Usage(format!(
                    "--{name} is for --security-protocol {wanted} (the security protocol is {upper})"
                )));
            }
        }
        let tls = TlsSettings {
            ca_file: flag("tls-ca").map(PathBuf::from),
            cert_file: flag("tls-cert").map(PathBuf::from),
            key_file: flag("tls-key").map(PathBuf::from),
        };
        if uses_tls && tls.ca_file.is_none() {
            return Err(Failure::Usage(format!(
                "--security-protocol {upper} needs --tls-ca FILE: the CA that signed the nodes' certificates"
            )));
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(Failure::Usage("a client certificate needs both --tls-cert and --tls-key".into()));
        }
        let sasl = if uses_sasl {
            let mechanism =
                flag("sasl-mechanism").or_else(|| env("SLUICE_SASL_MECHANISM")).unwrap_or(MECHANISM_DEFAULT.into());
            let Some(username) = flag("sasl-username").or_else(|| env("SLUICE_SASL_USERNAME")) else {
                return Err(Failure::Usage(format!(
                    "--security-protocol {upper} needs --sasl-username (or $SLUICE_SASL_USERNAME)"
                )));
            };
            let Some(password) = flag("sasl-password").or_else(|| env("SLUICE_SASL_PASSWORD")) else {
                return Err(Failure::Usage(format!(
                    "--security-protocol {upper} needs a password: $SLUICE_SASL_PASSWORD (or --sasl-password)"
                )));
            };
            Some(SaslSettings { mechanism, username, password })
        } else {
            None
        };
        // The library names settings as Kafka's properties; here they are flags.
        let security = Security::from_kafka(&protocol, tls, sasl).map_err(|e| {
            let message = match e {
                ClientError::Config(m) => m,
                other => other.to_string(),
            };
            Failure::Usage(message.replacen("security.protocol", "--security-protocol", 1).replacen(
                "sasl.mechanism",
                "--sasl-mechanism",
                1,
            ))
        })?;
        Ok(Global { servers, security })
    }

    /// An admin client, connected.
    pub(crate) async fn admin(&self) -> Result<Admin, ClientError> {
        Admin::connect_secured(&self.servers, self.security.clone(), ADMIN_TIMEOUT).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn take(line: &str, env: &[(&str, &str)]) -> (Result<Global, Failure>, Vec<String>) {
        let mut words = words(line);
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let global = Global::take(&mut words, &lookup);
        (global, words)
    }

    fn usage(result: Result<Global, Failure>) -> String {
        match result {
            Err(Failure::Usage(m)) => m,
            Err(_) => panic!("not a usage error"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn global_flags_are_taken_from_anywhere_and_the_rest_is_left() {
        let (global, rest) = take(
            "topic --bootstrap=a:1,b:2 list --security-protocol sasl_ssl --tls-ca ca.pem --sasl-username u",
            &[("SLUICE_SASL_PASSWORD", "p")],
        );
        let global = global.ok().expect("accepted");
        assert_eq!(rest, ["topic", "list"]);
        assert_eq!(global.servers, ["a:1", "b:2"]);
        assert_eq!(global.security.protocol_name(), "SASL_SSL");
        let sasl = global.security.sasl.expect("a login");
        assert_eq!(
            (sasl.mechanism.as_str(), sasl.username.as_str(), sasl.password.as_str()),
            (MECHANISM_DEFAULT, "u", "p")
        );
        assert_eq!(global.security.tls.expect("TLS").ca_file, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn plaintext_is_the_default_and_the_environment_fills_in() {
        let (global, rest) = take("topic list", &[]);
        let global = global.ok().expect("accepted");
        assert_eq!(
            (global.servers, global.security, rest),
            (vec![BOOTSTRAP_DEFAULT.to_string()], Security::plaintext(), words("topic list"))
        );
        let env = [
            ("SLUICE_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("SLUICE_SASL_MECHANISM", "plain"),
            ("SLUICE_SASL_USERNAME", "env-user"),
            ("SLUICE_SASL_PASSWORD", "env-secret"),
        ];
        let global = take("topic list --sasl-username flag-user", &env).0.ok().expect("accepted");
        let sasl = global.security.sasl.expect("a login");
        assert_eq!(
            (sasl.mechanism.as_str(), sasl.username.as_str(), sasl.password.as_str()),
            ("PLAIN", "flag-user", "env-secret")
        );
    }

    #[test]
    fn missing_and_contradictory_security_settings_are_bad_usage() {
        assert!(usage(take("topic list --security-protocol SASL_TLS", &[]).0).contains("SASL_TLS"));
        assert!(usage(take("topic list --security-protocol SSL", &[]).0).contains("--tls-ca"));
        assert!(usage(take("topic list --security-protocol SASL_PLAINTEXT", &[]).0).contains("--sasl-username"));
        let no_password = take("topic list --security-protocol SASL_PLAINTEXT --sasl-username u", &[]).0;
        assert!(usage(no_password).contains("SLUICE_SASL_PASSWORD"));
        let gssapi = take(
            "x --security-protocol SASL_PLAINTEXT --sasl-mechanism GSSAPI --sasl-username u --sasl-password p",
            &[],
        );
        assert!(usage(gssapi.0).contains("GSSAPI"));
        assert!(usage(take("topic list --tls-ca ca.pem", &[]).0).contains("SSL or SASL_SSL"), "TLS on PLAINTEXT");
        assert!(usage(take("topic list --sasl-username u", &[]).0).contains("SASL_PLAINTEXT or SASL_SSL"));
        let half = take("topic list --security-protocol SSL --tls-ca ca.pem --tls-cert c.pem", &[]).0;
        assert!(usage(half).contains("--tls-key"));
        assert!(usage(take("topic list --tls-ca", &[]).0).contains("needs a value"));
    }
}
