//! The client's secured connections against a scripted node: a TLS listener (certificates
//! made with the openssl CLI) that speaks the native protocol's SASL handshake with the
//! node's own SCRAM and PLAIN server (`sluice_schemas::sasl::Exchange`), and answers
//! Metadata, the user APIs and the ACL APIs from memory. The real node's listeners are
//! tested in the tests crate; these pin down the client's side: the TLS handshake and
//! name check, the login through request frames, its errors, session lifetimes, and the
//! user and ACL requests' encoding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flatbuffers::FlatBufferBuilder;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice_client::acl::{self, operation, pattern, permission, resource, Acl, AclFilter};
use sluice_client::connection::Connection;
use sluice_client::schemas::sasl::{self, Exchange, ScramCredential, ScramMechanism, Step, Users};
use sluice_client::schemas::wire::{self, ErrorCode, ResponseBody, FRAME_HEADER_BYTES};
use sluice_client::{Admin, ClientError, SaslSettings, Security, TlsSettings};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

// A test PKI -------------------------------------------------------------------------------

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running the openssl CLI (Debian package openssl; .ci/run installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA `NAME.pem`/`NAME.key` in `dir`.
fn ca(dir: &Path, name: &str) -> PathBuf {
    let (cert, key, subject) = (format!("{name}.pem"), format!("{name}.key"), format!("/CN={name}"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-subj",
            &subject,
        ],
    );
    dir.join(cert)
}

/// A certificate for IP 127.0.0.1 signed by CA `ca`: (certificate, key).
fn leaf(dir: &Path, name: &str, ca: &str) -> (PathBuf, PathBuf) {
    let (cert, key, csr, ext) =
        (format!("{name}.pem"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"));
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subject,
        ],
    );
    let (ca_cert, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    (dir.join(cert), dir.join(key))
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    node: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = ca(dir.path(), "ca");
    let other_ca = ca(dir.path(), "other");
    let node = leaf(dir.path(), "node", "ca");
    let client = leaf(dir.path(), "client", "ca");
    Pki { ca: ca_path, other_ca, node, client, _dir: dir }
}

// The scripted node ----------------------------------------------------------------------

struct Map(BTreeMap<(String, ScramMechanism), ScramCredential>);

impl Users for Map {
    fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.0.get(&(user.to_string(), mechanism)).cloned()
    }
}

#[derive(Clone)]
struct Script {
    /// Mechanisms the listener enables (empty: no SASL).
    mechanisms: Vec<&'static str>,
    session_lifetime_ms: i64,
    /// Ask clients for a certificate signed by this CA.
    client_ca: Option<PathBuf>,
}

/// A user change as the node got it.
#[derive(Clone, Debug)]
struct SeenChange {
    user: String,
    mechanism: String,
    delete: bool,
    iterations: u32,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    logins: AtomicUsize,
    user_changes: Mutex<Vec<SeenChange>>,
    acls: Mutex<Vec<Acl>>,
}

struct Node {
    address: String,
    /// `address` as bootstrap servers.
    servers: Vec<String>,
    seen: Arc<Seen>,
}

/// Starts a TLS listener (with `script`'s SASL, if any) on 127.0.0.1; user `alice` has
/// password `secret` for both SCRAM mechanisms.
async fn start(pki: &Pki, script: Script) -> Node {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&pki.node.0).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(&pki.node.1).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match &script.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let mut users = BTreeMap::new();
    for mechanism in ScramMechanism::ALL {
        users.insert(("alice".to_string(), mechanism), sasl::new_credential(mechanism, "secret", 4096).unwrap());
    }
    let users = Arc::new(Map(users));
    let seen = Arc::new(Seen::default());
    let node_seen = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            node_seen.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, script, users, seen) = (acceptor.clone(), script.clone(), users.clone(), node_seen.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    serve(stream, &script, &users, &seen).await;
                }
            });
        }
    });
    Node { servers: vec![address.clone()], address, seen }
}

/// The response frame of a body built by `body`.
fn respond(
    correlation_id: u32,
    body_type: ResponseBody,
    body: impl FnOnce(&mut FlatBufferBuilder<'static>) -> flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let offset = body(&mut b);
    let envelope = wire::finish_response(&mut b, correlation_id, body_type, offset);
    wire::frame(envelope, &[])
}

fn error_response(correlation_id: u32, error: ErrorCode, message: &str) -> Vec<u8> {
    respond(correlation_id, ResponseBody::ErrorResponse, |b| {
        let message = Some(b.create_string(message));
        wire::ErrorResponse::create(b, &wire::ErrorResponseArgs { error, message }).as_union_value()
    })
}

fn acl_of(a: &wire::Acl<'_>) -> Acl {
    Acl {
        resource_type: a.resource_type(),
        resource_name: a.resource_name().unwrap_or("").to_string(),
        pattern_type: a.pattern_type(),
        principal: a.principal().unwrap_or("").to_string(),
        host: a.host().unwrap_or("").to_string(),
        operation: a.operation(),
        permission: a.permission(),
    }
}

/// Whether filter `f` (as the wire carries it) matches `acl` (a literal match of each
/// given value: enough for these tests).
fn matches(f: &wire::Acl<'_>, acl: &Acl) -> bool {
    let number = |want: u8, have: u8| want == acl::ANY || want == have;
    let string = |want: Option<&str>, have: &str| want.is_none_or(|w| w == have);
    number(f.resource_type(), acl.resource_type)
        && string(f.resource_name(), &acl.resource_name)
        && number(f.pattern_type(), acl.pattern_type)
        && string(f.principal(), &acl.principal)
        && string(f.host(), &acl.host)
        && number(f.operation(), acl.operation)
        && number(f.permission(), acl.permission)
}

fn acls_response(correlation_id: u32, results: Vec<Vec<Acl>>) -> Vec<u8> {
    respond(correlation_id, ResponseBody::AclsResponse, |b| {
        let results: Vec<_> = results
            .iter()
            .map(|acls| {
                let tables: Vec<_> = acls
                    .iter()
                    .map(|a| {
                        let args = wire::AclArgs {
                            resource_type: a.resource_type,
                            resource_name: Some(b.create_string(&a.resource_name)),
                            pattern_type: a.pattern_type,
                            principal: Some(b.create_string(&a.principal)),
                            host: Some(b.create_string(&a.host)),
                            operation: a.operation,
                            permission: a.permission,
                        };
                        wire::Acl::create(b, &args)
                    })
                    .collect();
                let acls = Some(b.create_vector(&tables));
                wire::AclResult::create(b, &wire::AclResultArgs { acls, ..wire::AclResultArgs::default() })
            })
            .collect();
        let results = Some(b.create_vector(&results));
        wire::AclsResponse::create(b, &wire::AclsResponseArgs { results }).as_union_value()
    })
}

async fn serve(mut stream: impl AsyncRead + AsyncWrite + Unpin, script: &Script, users: &Map, seen: &Seen) {
    let mut logged_in = script.mechanisms.is_empty();
    let mut exchange: Option<Exchange> = None;
    loop {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        if stream.read_exact(&mut header).await.is_err() {
            return;
        }
        let header = wire::FrameHeader::parse(&header, 1 << 20).unwrap();
        let mut body = vec![0u8; header.body_bytes() as usize];
        stream.read_exact(&mut body).await.unwrap();
        let (envelope, _) = header.split(&body).unwrap();
        let request = wire::parse_request(envelope).unwrap();
        let id = request.correlation_id();
        let (reply, close) = if let Some(r) = request.body_as_sasl_handshake_request() {
            let mechanism = r.mechanism().unwrap_or("");
            let enabled = script.mechanisms.contains(&mechanism);
            exchange = if enabled { Exchange::start(mechanism) } else { None };
            let error = if enabled { ErrorCode::None } else { ErrorCode::UnsupportedSaslMechanism };
            let reply = respond(id, ResponseBody::SaslHandshakeResponse, |b| {
                let names: Vec<_> = script.mechanisms.iter().map(|m| b.create_string(m)).collect();
                let mechanisms = Some(b.create_vector(&names));
                let args = wire::SaslHandshakeResponseArgs { error, message: None, mechanisms };
                wire::SaslHandshakeResponse::create(b, &args).as_union_value()
            });
            (reply, !enabled)
        } else if let Some(r) = request.body_as_sasl_authenticate_request() {
            let token = r.token().map(|t| t.bytes().to_vec()).unwrap_or_default();
            match exchange.as_mut().map(|e| e.step(&token, users)) {
                Some(Ok(step)) => {
                    let (token, lifetime) = match step {
                        Step::Challenge(t) => (t, 0),
                        Step::Done { last, .. } => {
                            logged_in = true;
                            seen.logins.fetch_add(1, Ordering::SeqCst);
                            (last, script.session_lifetime_ms)
                        }
                    };
                    let reply = respond(id, ResponseBody::SaslAuthenticateResponse, |b| {
                        let token = Some(b.create_vector(&token));
                        let args = wire::SaslAuthenticateResponseArgs {
                            error: ErrorCode::None,
                            message: None,
                            token,
                            session_lifetime_ms: lifetime,
                        };
                        wire::SaslAuthenticateResponse::create(b, &args).as_union_value()
                    });
                    (reply, false)
                }
                _ => {
                    let message = "SASL authentication failed: invalid credentials";
                    (error_response(id, ErrorCode::SaslAuthenticationFailed, message), true)
                }
            }
        } else if !logged_in {
            (error_response(id, ErrorCode::IllegalSaslState, "log in first"), true)
        } else if request.body_as_metadata_request().is_some() {
            let reply = respond(id, ResponseBody::MetadataResponse, |b| {
                wire::MetadataResponse::create(b, &wire::MetadataResponseArgs::default()).as_union_value()
            });
            (reply, false)
        } else if request.body_as_describe_users_request().is_some() {
            let reply = respond(id, ResponseBody::DescribeUsersResponse, |b| {
                let (user, mechanism) = (Some(b.create_string("alice")), Some(b.create_string("SCRAM-SHA-256")));
                let c =
                    wire::UserCredential::create(b, &wire::UserCredentialArgs { user, mechanism, iterations: 8192 });
                let credentials = Some(b.create_vector(&[c]));
                let args =
                    wire::DescribeUsersResponseArgs { credentials, ..wire::DescribeUsersResponseArgs::default() };
                wire::DescribeUsersResponse::create(b, &args).as_union_value()
            });
            (reply, false)
        } else if let Some(r) = request.body_as_alter_users_request() {
            let mut names = Vec::new();
            for c in r.changes().iter().flatten() {
                let user = c.user().unwrap_or("").to_string();
                let bytes = |v: Option<flatbuffers::Vector<'_, u8>>| v.map(|v| v.bytes().to_vec()).unwrap_or_default();
                seen.user_changes.lock().unwrap().push(SeenChange {
                    user: user.clone(),
                    mechanism: c.mechanism().unwrap_or("").to_string(),
                    delete: c.delete(),
                    iterations: c.iterations(),
                    salt: bytes(c.salt()),
                    salted_password: bytes(c.salted_password()),
                });
                names.push(user);
            }
            let reply = respond(id, ResponseBody::AlterUsersResponse, |b| {
                let results: Vec<_> = names
                    .iter()
                    .map(|n| {
                        let user = Some(b.create_string(n));
                        // "bob" does not exist: deleting him fails, as the node answers.
                        let (error, message) = if n == "bob" {
                            (ErrorCode::ResourceNotFound, Some(b.create_string("no user bob")))
                        } else {
                            (ErrorCode::None, None)
                        };
                        wire::UserResult::create(b, &wire::UserResultArgs { user, error, message })
                    })
                    .collect();
                let results = Some(b.create_vector(&results));
                wire::AlterUsersResponse::create(b, &wire::AlterUsersResponseArgs { results }).as_union_value()
            });
            (reply, false)
        } else if let Some(r) = request.body_as_create_acls_request() {
            let created: Vec<Acl> = r.acls().iter().flatten().map(|a| acl_of(&a)).collect();
            let results = created.iter().map(|_| Vec::new()).collect();
            seen.acls.lock().unwrap().extend(created);
            (acls_response(id, results), false)
        } else if let Some(r) = request.body_as_describe_acls_request() {
            let filter = r.filter().unwrap();
            let acls = seen.acls.lock().unwrap().iter().filter(|a| matches(&filter, a)).cloned().collect();
            (acls_response(id, vec![acls]), false)
        } else if let Some(r) = request.body_as_delete_acls_request() {
            let mut all = seen.acls.lock().unwrap();
            let mut results = Vec::new();
            for filter in r.filters().iter().flatten() {
                let (gone, kept): (Vec<Acl>, Vec<Acl>) = all.drain(..).partition(|a| matches(&filter, a));
                *all = kept;
                results.push(gone);
            }
            drop(all);
            (acls_response(id, results), false)
        } else {
            (error_response(id, ErrorCode::InvalidRequest, "not scripted"), true)
        };
        if stream.write_all(&reply).await.is_err() || close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

// The tests ------------------------------------------------------------------------------

fn sasl_ssl(pki: &Pki, mechanism: &str, password: &str) -> Security {
    let tls = TlsSettings { ca_file: Some(pki.ca.clone()), ..TlsSettings::default() };
    let sasl = SaslSettings { mechanism: mechanism.into(), username: "alice".into(), password: password.into() };
    Security::from_kafka("SASL_SSL", tls, Some(sasl)).unwrap()
}

fn script(mechanisms: &[&'static str]) -> Script {
    Script { mechanisms: mechanisms.to_vec(), session_lifetime_ms: 0, client_ca: None }
}

const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn sasl_ssl_logs_in_with_each_mechanism_before_any_request() {
    let pki = pki();
    let node = start(&pki, script(&sasl::MECHANISMS)).await;
    for mechanism in sasl::MECHANISMS {
        let admin =
            Admin::connect_secured(&node.servers, sasl_ssl(&pki, mechanism, "secret"), TIMEOUT).await.expect(mechanism);
        admin.metadata(None).await.expect("metadata after the login");
    }
    assert_eq!(node.seen.logins.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_refused_login_is_an_authentication_error_with_the_nodes_message() {
    let pki = pki();
    let node = start(&pki, script(&["SCRAM-SHA-512"])).await;
    let wrong = sasl_ssl(&pki, "SCRAM-SHA-512", "wrong");
    let e = Admin::connect_secured(&node.servers, wrong, TIMEOUT).await.unwrap_err();
    assert!(matches!(&e, ClientError::Authentication(m) if m.contains("invalid credentials")), "{e}");
    assert!(!e.is_retriable(), "the same credentials would fail again");
    let plain = sasl_ssl(&pki, "PLAIN", "secret");
    let e = Admin::connect_secured(&node.servers, plain, TIMEOUT).await.unwrap_err();
    assert!(matches!(&e, ClientError::Authentication(m) if m.contains("it enables SCRAM-SHA-512")), "{e}");
}

#[tokio::test]
async fn tls_checks_the_nodes_certificate_and_can_present_the_clients() {
    let pki = pki();
    let node = start(&pki, script(&[])).await;
    let ssl = |ca: &Path| {
        let tls = TlsSettings { ca_file: Some(ca.to_path_buf()), ..TlsSettings::default() };
        Security::from_kafka("SSL", tls, None).unwrap()
    };
    let admin = Admin::connect_secured(&node.servers, ssl(&pki.ca), TIMEOUT).await.expect("SSL");
    admin.metadata(None).await.expect("metadata over TLS");
    let e = Admin::connect_secured(&node.servers, ssl(&pki.other_ca), TIMEOUT).await.unwrap_err();
    assert!(matches!(&e, ClientError::Authentication(m) if m.contains("TLS handshake")), "another CA's: {e}");
    let e = Admin::connect_secured(
        &node.servers,
        Security::from_kafka("SSL", TlsSettings::default(), None).unwrap(),
        TIMEOUT,
    )
    .await
    .unwrap_err();
    assert!(matches!(&e, ClientError::Config(m) if m.contains("CA")), "no CA: {e}");

    let mutual = start(&pki, Script { client_ca: Some(pki.ca.clone()), ..script(&[]) }).await;
    // TLS 1.3: the node checks the client's certificate after the client's handshake is
    // done, so its refusal comes as the answer to the first request.
    let without_cert =
        async { Admin::connect_secured(&mutual.servers, ssl(&pki.ca), TIMEOUT).await?.metadata(None).await };
    assert!(without_cert.await.is_err(), "a node that wants a client certificate refuses a client without one");
    let tls = TlsSettings {
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client.0.clone()),
        key_file: Some(pki.client.1.clone()),
    };
    let with_cert = Security::from_kafka("SSL", tls, None).unwrap();
    let admin = Admin::connect_secured(&mutual.servers, with_cert, TIMEOUT).await.expect("mutual TLS");
    admin.metadata(None).await.expect("metadata over mutual TLS");
}

/// A login whose lifetime is nearly over makes the connection count as broken, so a
/// router opens a new one and logs in again; a login without one lasts.
#[tokio::test]
async fn a_login_near_its_end_breaks_the_connection_so_routers_log_in_again() {
    let pki = pki();
    let lasting = start(&pki, script(&["SCRAM-SHA-256"])).await;
    let security = sasl_ssl(&pki, "SCRAM-SHA-256", "secret");
    let conn = Connection::connect(&lasting.address, "t", 4, TIMEOUT, &security).await.unwrap();
    assert!(!conn.is_broken());
    // A second of lifetime is all margin: renewed at once.
    let short = start(&pki, Script { session_lifetime_ms: 1_000, ..script(&["SCRAM-SHA-256"]) }).await;
    let conn = Connection::connect(&short.address, "t", 4, TIMEOUT, &security).await.unwrap();
    assert!(conn.is_broken());
    let long = start(&pki, Script { session_lifetime_ms: 3_600_000, ..script(&["SCRAM-SHA-256"]) }).await;
    assert!(!Connection::connect(&long.address, "t", 4, TIMEOUT, &security).await.unwrap().is_broken());

    let admin = Admin::connect_secured(&short.servers, security, TIMEOUT).await.unwrap();
    admin.metadata(None).await.unwrap();
    admin.metadata(None).await.unwrap();
    assert!(short.seen.logins.load(Ordering::SeqCst) >= 3, "a new login per connection");
    assert_eq!(short.seen.logins.load(Ordering::SeqCst), short.seen.connections.load(Ordering::SeqCst));
}

#[tokio::test]
async fn users_are_set_with_a_salted_password_and_deleted_by_mechanism() {
    let pki = pki();
    let node = start(&pki, script(&["SCRAM-SHA-512"])).await;
    let admin =
        Admin::connect_secured(&node.servers, sasl_ssl(&pki, "SCRAM-SHA-512", "secret"), TIMEOUT).await.unwrap();
    admin.set_user_password("carol", "scram-sha-256", "pencil", 4096).await.unwrap();
    admin.delete_user("carol", "SCRAM-SHA-512").await.unwrap();
    let e = admin.delete_user("bob", "SCRAM-SHA-512").await.unwrap_err();
    assert_eq!(e.code(), Some(91), "{e}");
    assert!(e.to_string().contains("no user bob"), "{e}");
    assert!(matches!(admin.set_user_password("carol", "PLAIN", "p", 4096).await, Err(ClientError::Config(_))));
    let changes = node.seen.user_changes.lock().unwrap().clone();
    let set = &changes[0];
    assert_eq!(
        (set.user.as_str(), set.mechanism.as_str(), set.delete, set.iterations),
        ("carol", "SCRAM-SHA-256", false, 4096)
    );
    assert_eq!(set.salt.len(), 32);
    let salted = sasl::salted_password(ScramMechanism::Sha256, b"pencil", &set.salt, 4096);
    assert_eq!(set.salted_password, salted, "the password salted, never the password");
    let delete = &changes[1];
    assert_eq!(
        (delete.mechanism.as_str(), delete.delete, delete.salted_password.is_empty()),
        ("SCRAM-SHA-512", true, true)
    );
    let users = admin.describe_users(&[]).await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(
        (users[0].user.as_str(), users[0].mechanism.as_str(), users[0].iterations),
        ("alice", "SCRAM-SHA-256", 8192)
    );
}

#[tokio::test]
async fn acls_are_created_described_and_deleted() {
    let pki = pki();
    let node = start(&pki, script(&["SCRAM-SHA-512"])).await;
    let admin =
        Admin::connect_secured(&node.servers, sasl_ssl(&pki, "SCRAM-SHA-512", "secret"), TIMEOUT).await.unwrap();
    let entry = |principal: &str, resource_type, name: &str, operation| Acl {
        resource_type,
        resource_name: name.into(),
        pattern_type: pattern::LITERAL,
        principal: principal.into(),
        host: "*".into(),
        operation,
        permission: permission::ALLOW,
    };
    let read = entry("User:alice", resource::TOPIC, "orders", operation::READ);
    let write = entry("User:bob", resource::TOPIC, "orders", operation::WRITE);
    let group = entry("User:alice", resource::GROUP, "g", operation::READ);
    admin.create_acls(vec![read.clone(), write.clone(), group.clone()]).await.unwrap();
    let alices = AclFilter { principal: Some("User:alice".into()), ..AclFilter::default() };
    let mut expected = vec![read.clone(), group.clone()];
    expected.sort();
    assert_eq!(admin.describe_acls(&alices).await.unwrap(), expected);
    let topics = AclFilter { resource_type: resource::TOPIC, ..AclFilter::default() };
    assert_eq!(admin.delete_acls(&[topics, AclFilter::exact(&group)]).await.unwrap().len(), 3);
    assert!(admin.describe_acls(&AclFilter::default()).await.unwrap().is_empty());
}
