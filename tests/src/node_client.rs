//! A real `sluice-node` process and a small blocking client of its native protocol, for
//! the node's integration tests (tests/node.rs).
//!
//! - `NodeProcess` starts the node binary on a free loopback port with its data in a
//!   directory the test owns, waits (bounded) until it answers a request, and stops it
//!   by its pid: SIGTERM (clean shutdown) or SIGKILL (crash), then waits until its port
//!   is released, so a restart on the same port talks only to the new process. Its Drop
//!   kills and reaps a node that is still running, so no test leaves a process behind,
//!   even when it fails.
//! - The node's Kafka listener is off (`--kafka-listen off`) unless the test asks for
//!   it: `start_with_kafka` puts it on a second free loopback port (`kafka_addr`), so
//!   parallel test nodes never fight over Kafka's default port 9092. A node with a Kafka
//!   listener counts as serving once both listeners answer an ApiVersions request.
//! - `Client` speaks the protocol over a `std::net::TcpStream` with read and write
//!   timeouts: one frame out, one frame in, with the correlation id checked. `request` is
//!   the generic sender, `send` and `receive_for` pipeline, `send_raw` writes any bytes
//!   (malformed frames). The typed helpers encode requests and decode responses with the
//!   client crate's `protocol::encode_x`/`decode_x` (one codec for both clients) and
//!   return plain values (an error code and message per topic or partition), so the
//!   tests read as what they check rather than as flatbuffers plumbing.
//!
//! Guarantees: every wait here is bounded (connect, read, write, process exit), and a
//! response is read only once its envelope verified (`Frame::response`).
//!
//! Where the node binary comes from: `CARGO_BIN_EXE_sluice-node` exists at compile time
//! only for tests of the package that owns the binary, and `sluice-node` is another
//! package. So `node_binary` asks cargo (`$CARGO`, which `cargo test` sets for the test
//! process) to build it, once per test process, into the target directory the tests were
//! built in; that is a no-op when it is up to date, and it means a plain
//! `cargo test -p sluice-tests --test node` never runs a stale or missing node.
//! `cargo test --workspace` builds the binary anyway (sluice-node has integration tests).
//! `SLUICE_NODE_BIN=/path/to/sluice-node` skips the build and uses that binary. The CLI
//! tests (tests/cli.rs) find the `sluice` binary of `sluice-client` the same way
//! (`cli_binary`, `SLUICE_CLI_BIN`).

// Only tests use this module, and a panic with a message is how a test fails: `expect`
// says what was expected where it is used.
#![allow(clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use sluice_client::connection::{Frame, RESPONSE_FRAME_BYTES_MAX};
use sluice_client::protocol::{
    self, EncodedBody, FetchLimits, FetchPartition, NewTopic, PartitionBatches, ProduceLayout,
};
use sluice_client::ClientError;
use sluice_schemas::wire::{self, ErrorCode, FrameHeader, RequestBody, Response, FRAME_HEADER_BYTES};

/// How long a started node may take to answer its first request.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to exit after SIGTERM (it finishes writes and syncs logs).
pub const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGKILLed node may take to be reaped (in-flight io_uring requests finish
/// before the kernel lets it go).
pub const NODE_REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// Read and write timeout of every client socket: no request of these tests waits for
/// longer (fetch waits are at most a few seconds).
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long building a binary (the node, the CLI) may take before the tests give up.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// How often waits for a process or a port poll.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `child` until it exits or `timeout` passes; `None` on timeout.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(POLL_INTERVAL),
            Err(e) => panic!("waiting for process {}: {e}", child.id()),
        }
    }
}

/// The `sluice-node` binary, built (or checked up to date) once per test process; see
/// the module documentation.
pub fn node_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| workspace_binary("sluice-node", "sluice-node", "SLUICE_NODE_BIN"))
}

/// The `sluice` command-line tool (package `sluice-client`), found and built as
/// `node_binary` finds and builds the node; `SLUICE_CLI_BIN` overrides it.
pub fn cli_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| workspace_binary("sluice-client", "sluice", "SLUICE_CLI_BIN"))
}

/// The binary `bin` of workspace package `package`: the path in `override_var` if set,
/// else `CARGO_BIN_EXE_<bin>` if cargo set it, else target/<profile>/<bin> after asking
/// `$CARGO` to build it into the profile the tests were built with.
fn workspace_binary(package: &str, bin: &str, override_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        return PathBuf::from(path);
    }
    if let Some(path) = std::env::var_os(format!("CARGO_BIN_EXE_{bin}")) {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test-exe>: the binary lands in target/<profile>/.
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()))
        .to_path_buf();
    let binary = profile_dir.join(bin);
    if let Some(cargo) = std::env::var_os("CARGO") {
        build_binary(&cargo, package, bin, &profile_dir);
    }
    assert!(
        binary.is_file(),
        "{} does not exist: build it with `cargo build -p {package} --bin {bin}` (or set {override_var})",
        binary.display()
    );
    binary
}

/// Runs `cargo build -p PACKAGE --bin BIN` into the profile the tests were built with
/// (bounded by `BUILD_TIMEOUT`).
fn build_binary(cargo: &std::ffi::OsStr, package: &str, bin: &str, profile_dir: &Path) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", package, "--bin", bin, "--manifest-path"]);
    command.arg(&manifest);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(other) => {
            command.args(["--profile", other]);
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        command.arg("--target-dir").arg(target_dir);
    }
    let mut child = command.spawn().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    let Some(status) = wait_with_timeout(&mut child, BUILD_TIMEOUT) else {
        let _ = child.kill();
        let _ = wait_with_timeout(&mut child, NODE_REAP_TIMEOUT);
        panic!("building {bin} took more than {BUILD_TIMEOUT:?}");
    };
    assert!(status.success(), "building {bin} failed ({status}): {command:?}");
}

/// A loopback address with a port that was free a moment ago, for a node to bind.
///
/// The ports come from below the kernel's ephemeral range (`ip_local_port_range`, 32768
/// and up by default), each handed out once per test process, from a start that differs
/// per process. Port-0 binds (the chaos test's link proxies, other tests' listeners) and
/// outbound connections take their ports from the ephemeral range, so none of them can
/// take a port handed out here before its node binds it (a proxy once took a node's
/// cluster port that way, and the node refused to start). Where the ephemeral range
/// leaves no room below it, the port is one a port-0 bind was given and released.
#[must_use]
pub fn free_loopback_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOWEST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|low| low.parse::<u32>().ok()))
        .unwrap_or(0);
    if ephemeral_low >= LOWEST + 1_000 {
        let span = ephemeral_low - LOWEST;
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let port = LOWEST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            let Ok(port) = u16::try_from(port) else { continue };
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                return listener.local_addr().expect("a bound listener has an address");
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("a bound listener has an address")
}

/// The value of a `--kafka-listen VALUE` (or `--kafka-listen=VALUE`) argument.
fn kafka_listen_value<S: AsRef<str>>(args: &[S]) -> Option<&str> {
    flag_value(args, "--kafka-listen")
}

/// The last value `args` give `flag` (as `FLAG VALUE` or `FLAG=VALUE`): the one the node uses.
fn flag_value<'a, S: AsRef<str>>(args: &'a [S], flag: &str) -> Option<&'a str> {
    args.iter()
        .enumerate()
        .filter_map(|(i, arg)| match arg.as_ref() {
            a if a == flag => args.get(i + 1).map(AsRef::as_ref),
            other => other.strip_prefix(flag).and_then(|rest| rest.strip_prefix('=')),
        })
        .last()
}

/// True when `args` set the Kafka listener (to an address or `off`).
fn has_kafka_listen<S: AsRef<str>>(args: &[S]) -> bool {
    args.iter().any(|arg| arg.as_ref() == "--kafka-listen" || arg.as_ref().starts_with("--kafka-listen="))
}

/// True when a Kafka listener at `addr` answers an ApiVersions v0 request within a
/// second: a response with the request's correlation id and error code 0 (NONE).
#[must_use]
pub fn kafka_answers(addr: SocketAddr) -> bool {
    const API_VERSIONS: i16 = 18;
    const CORRELATION_ID: i32 = 0x5eed;
    let probe = || -> std::io::Result<bool> {
        let timeout = Duration::from_secs(1);
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        // Request header v1 (api key, api version, correlation id, client id) and an
        // empty v0 body, after the 4-byte size.
        let client_id = b"sluice-tests";
        let mut request = Vec::new();
        request.extend_from_slice(&API_VERSIONS.to_be_bytes());
        request.extend_from_slice(&0i16.to_be_bytes());
        request.extend_from_slice(&CORRELATION_ID.to_be_bytes());
        request.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
        request.extend_from_slice(client_id);
        let mut frame = (request.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&request);
        stream.write_all(&frame)?;
        // Response: size, correlation id, error code, then the API list.
        let mut size = [0u8; 4];
        stream.read_exact(&mut size)?;
        let size = i32::from_be_bytes(size);
        if !(6..=1 << 20).contains(&size) {
            return Ok(false);
        }
        let mut body = vec![0u8; size as usize];
        stream.read_exact(&mut body)?;
        let correlation_id = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let error_code = i16::from_be_bytes([body[4], body[5]]);
        Ok(correlation_id == CORRELATION_ID && error_code == 0)
    };
    probe().unwrap_or(false)
}

/// The line a node logs once shard 0 listens (node/src/main.rs).
const READY_LINE: &str = "sluice-node ready";

/// What a node that was expected to refuse to start did.
#[derive(Debug)]
pub enum StartAttempt {
    /// It exited by itself with this status; the tail of its log.
    Exited(ExitStatus, String),
    /// It started serving, and was killed; the tail of its log.
    Started(String),
}

/// A running `sluice-node`, stopped by its pid when dropped.
pub struct NodeProcess {
    child: Option<Child>,
    addr: SocketAddr,
    data_dir: PathBuf,
    shards: usize,
    extra_args: Vec<String>,
    log_path: PathBuf,
    /// The soft limit on open files the node process starts with (`None`: this one's).
    /// The open files limit the process starts with: soft, and hard when given.
    open_files_limits: Option<(u64, Option<u64>)>,
    /// Environment variables the node process gets besides this process's.
    env: Vec<(String, String)>,
    /// The ready lines in the log when this life was launched (a native TLS listener is
    /// not probed in the clear: its life is ready when its log has one more).
    ready_lines_before: usize,
}

impl NodeProcess {
    /// Starts a node with `shards` shards and its data in `data_dir` (created if needed) on
    /// a free loopback port, with `extra_args` appended to the command line, and waits
    /// until it answers requests. Its stderr goes to `node-PORT.log` in `data_dir`'s parent
    /// (appended to across restarts), which a failing test prints.
    #[must_use]
    pub fn start(data_dir: &Path, shards: usize, extra_args: &[&str]) -> NodeProcess {
        NodeProcess::start_at(free_loopback_addr(), data_dir, shards, extra_args)
    }

    /// As `start`, with the Kafka listener on a second free loopback port (`kafka_addr`),
    /// after `extra_args` (which must not name `--kafka-listen` themselves).
    #[must_use]
    pub fn start_with_kafka(data_dir: &Path, shards: usize, extra_args: &[&str]) -> NodeProcess {
        assert!(!has_kafka_listen(extra_args), "start_with_kafka chooses the Kafka address: {extra_args:?}");
        let addr = free_loopback_addr();
        // Two ports bound and released one after the other are almost never the same;
        // when they are, ask again.
        let kafka = std::iter::repeat_with(free_loopback_addr).find(|k| *k != addr).expect("an endless iterator");
        let kafka = kafka.to_string();
        let mut args = extra_args.to_vec();
        args.extend(["--kafka-listen", kafka.as_str()]);
        NodeProcess::start_at(addr, data_dir, shards, &args)
    }

    /// As `start`, on a given address (to restart a node where its clients expect it).
    #[must_use]
    pub fn start_at(addr: SocketAddr, data_dir: &Path, shards: usize, extra_args: &[&str]) -> NodeProcess {
        let mut node = NodeProcess::not_started(addr, data_dir, shards, extra_args);
        node.spawn();
        node
    }

    /// Starts a node that should refuse to start (its port or data directory is taken)
    /// and reports what it did: exited by itself, or started serving, in which case it is
    /// killed and reaped here. Bounded by `NODE_START_TIMEOUT`.
    #[must_use]
    pub fn try_start_at(addr: SocketAddr, data_dir: &Path, shards: usize, extra_args: &[&str]) -> StartAttempt {
        let mut node = NodeProcess::not_started(addr, data_dir, shards, extra_args);
        node.launch();
        let mut child = node.child.take().expect("launched above");
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return StartAttempt::Exited(status, node.log_tail());
            }
            let log = std::fs::read_to_string(&node.log_path).unwrap_or_default();
            let started = log.contains(READY_LINE);
            if started || Instant::now() >= deadline {
                let _ = child.kill(); // SIGKILL to this child's pid
                let _ = wait_with_timeout(&mut child, NODE_REAP_TIMEOUT);
                assert!(started, "the node at {addr} neither exited nor started within {NODE_START_TIMEOUT:?}:\n{log}");
                return StartAttempt::Started(node.log_tail());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn not_started(addr: SocketAddr, data_dir: &Path, shards: usize, extra_args: &[&str]) -> NodeProcess {
        let parent = data_dir.parent().unwrap_or_else(|| panic!("{} has no parent", data_dir.display()));
        NodeProcess {
            child: None,
            addr,
            data_dir: data_dir.to_path_buf(),
            shards,
            extra_args: extra_args.iter().map(|s| (*s).to_string()).collect(),
            // One log per port: two nodes on one data directory keep separate logs.
            log_path: parent.join(format!("node-{}.log", addr.port())),
            open_files_limits: None,
            env: Vec::new(),
            ready_lines_before: 0,
        }
    }

    /// As `start`, with `env` set in the node's environment (kept across restarts).
    #[must_use]
    pub fn start_with_env(data_dir: &Path, shards: usize, extra_args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
        NodeProcess::start_at_with_env(free_loopback_addr(), data_dir, shards, extra_args, env)
    }

    /// As `start_at`, with `env` set in the node's environment (kept across restarts).
    #[must_use]
    pub fn start_at_with_env(
        addr: SocketAddr,
        data_dir: &Path,
        shards: usize,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let mut node = NodeProcess::not_started(addr, data_dir, shards, extra_args);
        node.env = env.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        node.spawn();
        node
    }

    /// As `start`, with the node process started at a soft limit of `soft` open files.
    #[must_use]
    pub fn start_with_open_files_soft_limit(data_dir: &Path, shards: usize, soft: u64) -> NodeProcess {
        NodeProcess::start_with_open_files_limits(data_dir, shards, soft, None)
    }

    /// As `start`, with the node process started at these open files limits (`hard`:
    /// lowered too, when given; the node cannot raise it).
    #[must_use]
    pub fn start_with_open_files_limits(data_dir: &Path, shards: usize, soft: u64, hard: Option<u64>) -> NodeProcess {
        let mut node = NodeProcess::not_started(free_loopback_addr(), data_dir, shards, &[]);
        node.open_files_limits = Some((soft, hard));
        node.spawn();
        node
    }

    /// Starts the process, without waiting for it to serve.
    fn launch(&mut self) {
        assert!(self.child.is_none(), "the node at {} is already running", self.addr);
        self.ready_lines_before = self.ready_lines();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log_path.display()));
        let mut command = Command::new(node_binary());
        command.arg("--data-dir").arg(&self.data_dir).args([
            "--listen",
            &self.addr.to_string(),
            "--shards",
            &self.shards.to_string(),
        ]);
        // No Kafka listener unless asked for: its default address (127.0.0.1:9092) would
        // be shared by every node of a parallel test run.
        if !has_kafka_listen(&self.extra_args) {
            command.args(["--kafka-listen", "off"]);
        }
        command.args(&self.extra_args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some((soft, hard)) = self.open_files_limits {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the child between fork and exec and only calls
            // getrlimit/setrlimit, which are async-signal-safe, on a local struct.
            unsafe {
                command.pre_exec(move || {
                    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    limit.rlim_max = hard.unwrap_or(limit.rlim_max).min(limit.rlim_max);
                    limit.rlim_cur = soft.min(limit.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        self.child = Some(child);
    }

    fn spawn(&mut self) {
        self.launch();
        self.wait_until_serving();
    }

    /// Polls until the node answers a request (ApiVersions) on its native address, and on
    /// its Kafka address if it has one, failing early if it exits.
    ///
    /// A bare TCP connect is not proof enough: after a kill -9 the old process's listening
    /// socket can outlive it for a few milliseconds (see `wait_until_port_released`), and
    /// the kernel completes handshakes on it.
    fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        // ApiVersions is answered in the clear before any login, so only TLS listeners
        // are not probed.
        let kafka = self.kafka_listener().filter(|(protocol, _)| !protocol.contains("SSL")).map(|(_, addr)| addr);
        let native_tls =
            flag_value(&self.extra_args, "--listen").is_some_and(|v| v.to_ascii_uppercase().contains("SSL://"));
        loop {
            let native = if native_tls {
                self.ready_lines() > self.ready_lines_before
                    && TcpStream::connect_timeout(&self.addr, SOCKET_TIMEOUT).is_ok()
            } else {
                Client::answers(self.addr)
            };
            if native && kafka.is_none_or(kafka_answers) {
                return;
            }
            let child = self.child.as_mut().expect("spawned above");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!("the node at {} exited during startup ({status}); its log:\n{}", self.addr, self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "the node at {} did not answer within {NODE_START_TIMEOUT:?}; its log:\n{}",
                self.addr,
                self.log_tail()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Polls (bounded) until connecting to the node's address, and to its Kafka address if
    /// it has one, is refused.
    ///
    /// Why: the node's listening sockets have io_uring requests (accept) in flight, and
    /// the kernel tears an exited process's rings down asynchronously, so a socket can keep
    /// listening, and completing handshakes, for milliseconds after `waitpid` returned. A
    /// node restarted on the same port in that window shares it through SO_REUSEPORT with
    /// the dying socket, whose queued connections are then reset. Waiting here makes a
    /// restart start from a free port.
    fn wait_until_port_released(&self) {
        let deadline = Instant::now() + NODE_REAP_TIMEOUT;
        for addr in std::iter::once(self.addr).chain(self.kafka_addr()) {
            loop {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                    _ => {}
                }
                assert!(
                    Instant::now() < deadline,
                    "{addr} still accepts connections {NODE_REAP_TIMEOUT:?} after its node exited"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Starts the node again after a stop, on the same address, data and arguments (so
    /// on the same Kafka address too).
    pub fn restart(&mut self) {
        self.spawn();
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the node's Kafka listener: the `--kafka-listen` argument it was
    /// started with, `None` when there is none or it is `off` (or not an IP:PORT).
    #[must_use]
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka_listener().map(|(_, addr)| addr)
    }

    /// The Kafka listener's security protocol (PLAINTEXT when not named) and address.
    /// How many times the log says a life of the node was ready.
    fn ready_lines(&self) -> usize {
        std::fs::read_to_string(&self.log_path).unwrap_or_default().matches(READY_LINE).count()
    }

    /// The first Kafka listener (the one probed): its name and address.
    fn kafka_listener(&self) -> Option<(String, SocketAddr)> {
        let value = kafka_listen_value(&self.extra_args)?.split(',').next()?;
        let (protocol, address) = value.split_once("://").unwrap_or(("PLAINTEXT", value));
        Some((protocol.to_ascii_uppercase(), address.parse().ok()?))
    }

    /// Whether the process runs (it was not stopped, or was started again).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The running process's id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or_else(|| panic!("the node at {} is not running", self.addr), Child::id)
    }

    /// A new client connection to this node.
    #[must_use]
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// The node's stderr so far (across restarts).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last lines of the node's stderr, for failure messages.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pids fit pid_t");
        // SAFETY: kill(2) only sends a signal; the pid is our own child, not yet reaped
        // (reaping happens only through `self.child`), so it cannot name another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }

    /// Stops the process where it is (SIGSTOP): it keeps its sockets but answers nothing,
    /// as a node that froze or lost the network would.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Asks the node to read its TLS files again (SIGHUP).
    pub fn reload(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Sends SIGTERM and waits (bounded) for the clean shutdown; returns the exit status.
    /// If the node does not exit in time it is killed and the test fails.
    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("signalled above");
        match wait_with_timeout(&mut child, NODE_STOP_TIMEOUT) {
            Some(status) => {
                self.wait_until_port_released();
                status
            }
            None => {
                let _ = child.kill();
                let _ = wait_with_timeout(&mut child, NODE_REAP_TIMEOUT);
                panic!("the node did not exit within {NODE_STOP_TIMEOUT:?} of SIGTERM; its log:\n{}", self.log_tail());
            }
        }
    }

    /// Sends SIGKILL and reaps the process (bounded); returns the exit status.
    pub fn kill9_and_wait(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        let mut child = self.child.take().expect("signalled above");
        let status = wait_with_timeout(&mut child, NODE_REAP_TIMEOUT)
            .unwrap_or_else(|| panic!("the SIGKILLed node {} was not reaped within {NODE_REAP_TIMEOUT:?}", child.id()));
        self.wait_until_port_released();
        status
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- last lines of the node log {} ---\n{}", self.log_path.display(), self.log_tail());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL to this child's pid
            let _ = wait_with_timeout(&mut child, NODE_REAP_TIMEOUT);
        }
    }
}

/// One response frame (its envelope verified when it was read), as the client crate
/// holds it, so its decoders read it.
pub struct ResponseBytes {
    frame: Frame,
}

impl ResponseBytes {
    /// The verified envelope; panics if it does not verify (a node bug).
    #[must_use]
    pub fn response(&self) -> Response<'_> {
        self.frame.response().unwrap_or_else(|e| panic!("the node sent a bad response: {e}"))
    }

    /// The frame, for the client crate's decoders (`protocol::decode_x`).
    #[must_use]
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// The `ErrorResponse` (code and message) if the node answered with one.
    #[must_use]
    pub fn error_response(&self) -> Option<(ErrorCode, String)> {
        let r = self.response().body_as_error_response()?;
        Some((r.error(), r.message().unwrap_or("").to_string()))
    }
}

/// A node's answer as the tests compare it: `NONE` and "" for a success, else the node's
/// error code and message (the code's name when the node sent none). An error that is
/// not the node's answer (a response that does not decode) fails the test.
fn code_and_message<T>(result: &sluice_client::Result<T>) -> (ErrorCode, String) {
    match result {
        Ok(_) => (ErrorCode::None, String::new()),
        Err(ClientError::Server { code, message }) => (ErrorCode(code.0), message.clone()),
        Err(e) => panic!("not an answer from the node: {e}"),
    }
}

/// A decoded response, or the test fails saying what was expected.
fn decoded<T>(what: &str, result: sluice_client::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// One topic's outcome of an admin request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicOutcome {
    pub name: String,
    pub error: ErrorCode,
    pub message: String,
}

impl TopicOutcome {
    fn of((name, result): (String, sluice_client::Result<()>)) -> TopicOutcome {
        let (error, message) = code_and_message(&result);
        TopicOutcome { name, error, message }
    }
}

/// One topic of a metadata response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub error: ErrorCode,
    /// The partition indexes listed, in the order listed.
    pub partitions: Vec<u32>,
}

/// One topic of a DescribeConfigs response: `(key, value, is_default)` per config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfigs {
    pub name: String,
    pub error: ErrorCode,
    pub message: String,
    pub configs: Vec<(String, String, bool)>,
}

impl TopicConfigs {
    /// The value of `key`, and whether it is the default.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<(&str, bool)> {
        self.configs.iter().find(|(k, _, _)| k == key).map(|(_, v, d)| (v.as_str(), *d))
    }
}

/// One partition's outcome of a produce request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Produced {
    pub topic: String,
    pub partition: u32,
    pub error: ErrorCode,
    pub message: String,
    /// The offset of the partition's first record; -1 when it was refused (the client
    /// crate keeps no offset for a refusal: check the raw response for what the wire says).
    pub base_offset: i64,
}

/// One partition's outcome of a fetch request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub topic: String,
    pub partition: u32,
    pub error: ErrorCode,
    pub message: String,
    /// -1 when the fetch was refused.
    pub high_watermark: i64,
    /// Whole record batches, as stored.
    pub records: Vec<u8>,
}

/// One partition to fetch: topic, partition, offset, the partition's max bytes.
pub type FetchTarget<'a> = (&'a str, u32, i64, u32);

/// The byte budget of every fetch request (each partition has its own in `FetchTarget`).
const FETCH_REQUEST_BYTES_MAX: u32 = 64 << 20;

/// The timeout every produce request carries.
const PRODUCE_TIMEOUT_MS: u32 = 30_000;

/// A blocking connection to a node. Requests are encoded and responses decoded by the
/// client crate (`sluice_client::protocol`); what is here is the blocking I/O, raw and
/// pipelined sending, and plain values (error code and message per topic or partition)
/// that read well in assertions.
pub struct Client {
    stream: TcpStream,
    next_correlation_id: u32,
}

impl Client {
    /// Connects with `SOCKET_TIMEOUT` on connect, reads and writes; panics if it cannot.
    #[must_use]
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr, SOCKET_TIMEOUT).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
    }

    /// Connects with `timeout` on connect, reads and writes.
    pub fn try_connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Client { stream, next_correlation_id: 1 })
    }

    /// True when a node at `addr` answers an ApiVersions request within a second.
    #[must_use]
    pub fn answers(addr: SocketAddr) -> bool {
        let Ok(mut client) = Client::try_connect(addr, Duration::from_secs(1)) else { return false };
        let mut builder = FlatBufferBuilder::new();
        let body = wire::ApiVersionsRequest::create(&mut builder, &wire::ApiVersionsRequestArgs {});
        let envelope = wire::finish_request(
            &mut builder,
            1,
            0,
            Some("probe"),
            RequestBody::ApiVersionsRequest,
            body.as_union_value(),
        );
        if client.send_raw(&wire::frame(envelope, &[])).is_err() {
            return false;
        }
        matches!(client.receive(), Ok(Some(r)) if r.response().body_as_api_versions_response().is_some())
    }

    /// Builds a request (`build` writes the body into the builder and returns it), sends
    /// it with `payload`, and returns its correlation id without reading a response.
    pub fn send(
        &mut self,
        body_type: RequestBody,
        build: impl FnOnce(&mut FlatBufferBuilder<'static>) -> EncodedBody,
        payload: &[u8],
    ) -> u32 {
        let correlation_id = self.next_correlation_id;
        self.try_send(body_type, build, payload).unwrap_or_else(|e| panic!("sending request {correlation_id}: {e}"))
    }

    /// `send`, returning the error when the connection is gone (a test that kills the
    /// node while it sends).
    pub fn try_send(
        &mut self,
        body_type: RequestBody,
        build: impl FnOnce(&mut FlatBufferBuilder<'static>) -> EncodedBody,
        payload: &[u8],
    ) -> std::io::Result<u32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut builder = FlatBufferBuilder::new();
        let body = build(&mut builder);
        let envelope = wire::finish_request(&mut builder, correlation_id, 0, Some("sluice-tests"), body_type, body);
        self.send_raw(&wire::frame(envelope, payload))?;
        Ok(correlation_id)
    }

    /// Reads one response frame; `Ok(None)` when the node closed the connection cleanly
    /// before a frame started.
    pub fn receive(&mut self) -> std::io::Result<Option<ResponseBytes>> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e),
        }
        let header = FrameHeader::parse(&header, RESPONSE_FRAME_BYTES_MAX).map_err(std::io::Error::other)?;
        let mut body = vec![0u8; header.body_bytes() as usize];
        self.stream.read_exact(&mut body)?;
        let frame = Frame::new(&header, body).map_err(std::io::Error::other)?;
        frame.response().map_err(std::io::Error::other)?;
        Ok(Some(ResponseBytes { frame }))
    }

    /// Reads the response to request `correlation_id`; panics if the connection closes or
    /// the next response is another request's.
    pub fn receive_for(&mut self, correlation_id: u32) -> ResponseBytes {
        let response = self
            .receive()
            .unwrap_or_else(|e| panic!("reading the response to request {correlation_id}: {e}"))
            .unwrap_or_else(|| panic!("the node closed the connection instead of answering request {correlation_id}"));
        let got = response.response().correlation_id();
        assert_eq!(got, correlation_id, "the response has the correlation id of another request");
        response
    }

    /// Sends a request and reads its response (see `send`).
    pub fn request(
        &mut self,
        body_type: RequestBody,
        build: impl FnOnce(&mut FlatBufferBuilder<'static>) -> EncodedBody,
        payload: &[u8],
    ) -> ResponseBytes {
        let correlation_id = self.send(body_type, build, payload);
        self.receive_for(correlation_id)
    }

    /// Writes bytes as they are (for malformed frames).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Closes the sending side, so the node sees end of file after what was sent.
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// True when the node has closed the connection: a read returns end of file (or a
    /// reset) within `SOCKET_TIMEOUT`, with no bytes before it.
    pub fn is_closed_by_node(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    // Admin ------------------------------------------------------------------------------

    /// The one topic's outcome of a request about one topic.
    fn only(results: sluice_client::Result<Vec<(String, sluice_client::Result<()>)>>, what: &str) -> TopicOutcome {
        let mut outcomes: Vec<TopicOutcome> = decoded(what, results).into_iter().map(TopicOutcome::of).collect();
        assert_eq!(outcomes.len(), 1, "{what}: one topic asked, {} results: {outcomes:?}", outcomes.len());
        outcomes.remove(0)
    }

    /// Creates a topic with `partitions` partitions and these configs.
    pub fn create_topic(&mut self, name: &str, partitions: u32, configs: &[(&str, &str)]) -> TopicOutcome {
        let configs = configs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        let topic = NewTopic { name: name.to_string(), partitions, replication_factor: 1, configs };
        let build = |b: &mut FlatBufferBuilder<'static>| protocol::encode_create_topics(b, &[topic], false);
        let response = self.request(RequestBody::CreateTopicsRequest, build, &[]);
        Self::only(protocol::decode_create_topics(&response.frame), "create_topic")
    }

    /// Deletes a topic.
    pub fn delete_topic(&mut self, name: &str) -> TopicOutcome {
        let response =
            self.request(RequestBody::DeleteTopicsRequest, |b| protocol::encode_delete_topics(b, &[name]), &[]);
        Self::only(protocol::decode_delete_topics(&response.frame), "delete_topic")
    }

    /// Sets a topic's partition count to `count` (it may only grow).
    pub fn create_partitions(&mut self, name: &str, count: u32) -> TopicOutcome {
        let build = |b: &mut FlatBufferBuilder<'static>| protocol::encode_create_partitions(b, &[(name, count)]);
        let response = self.request(RequestBody::CreatePartitionsRequest, build, &[]);
        Self::only(protocol::decode_create_partitions(&response.frame), "create_partitions")
    }

    /// The metadata of `topics`, or of every topic when `None`.
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> Vec<TopicInfo> {
        let response = self.request(RequestBody::MetadataRequest, |b| protocol::encode_metadata(b, topics), &[]);
        let metadata = decoded("metadata", protocol::decode_metadata(&response.frame));
        metadata
            .topics
            .into_iter()
            .map(|t| TopicInfo {
                error: code_and_message(&t.partitions).0,
                name: t.name,
                partitions: t.partitions.map(|ps| ps.iter().map(|p| p.partition).collect()).unwrap_or_default(),
            })
            .collect()
    }

    /// The configs of `topics`.
    pub fn describe_configs(&mut self, topics: &[&str]) -> Vec<TopicConfigs> {
        let build = |b: &mut FlatBufferBuilder<'static>| protocol::encode_describe_configs(b, topics);
        let response = self.request(RequestBody::DescribeConfigsRequest, build, &[]);
        decoded("describe_configs", protocol::decode_describe_configs(&response.frame))
            .into_iter()
            .map(|(name, configs)| {
                let (error, message) = code_and_message(&configs);
                let configs = configs.unwrap_or_default().into_iter().map(|c| (c.key, c.value, c.is_default)).collect();
                TopicConfigs { name, error, message, configs }
            })
            .collect()
    }

    /// Sets and deletes (returns to the default) configs of one topic.
    pub fn alter_configs(&mut self, name: &str, set: &[(&str, &str)], delete: &[&str]) -> TopicOutcome {
        let build = |b: &mut FlatBufferBuilder<'static>| protocol::encode_alter_configs(b, name, set, delete);
        let response = self.request(RequestBody::AlterConfigsRequest, build, &[]);
        Self::only(protocol::decode_alter_configs(&response.frame), "alter_configs")
    }

    // Produce ----------------------------------------------------------------------------

    /// Sends a produce request for several partitions (topic, partition, batch bytes) and
    /// returns its correlation id. The partitions' records are laid out in the payload in
    /// the order given, and grouped by topic in order of first appearance
    /// (`protocol::ProduceLayout`).
    pub fn send_produce(&mut self, acks: i16, parts: &[(&str, u32, &[u8])]) -> u32 {
        let correlation_id = self.next_correlation_id;
        self.try_send_produce(acks, parts).unwrap_or_else(|e| panic!("sending request {correlation_id}: {e}"))
    }

    /// `send_produce`, returning the error when the connection is gone.
    pub fn try_send_produce(&mut self, acks: i16, parts: &[(&str, u32, &[u8])]) -> std::io::Result<u32> {
        let parts: Vec<PartitionBatches<'_>> =
            parts.iter().map(|&(topic, partition, batches)| PartitionBatches { topic, partition, batches }).collect();
        let layout = ProduceLayout::new(&parts).expect("test payloads fit a frame");
        let build =
            |b: &mut FlatBufferBuilder<'static>| protocol::encode_produce(b, acks, PRODUCE_TIMEOUT_MS, None, &layout);
        self.try_send(RequestBody::ProduceRequest, build, &layout.payload())
    }

    /// Every partition's outcome in a produce response, in the order of the response; the
    /// test fails if the request was refused as a whole.
    #[must_use]
    pub fn produced(response: &ResponseBytes) -> Vec<Produced> {
        if let Some((code, message)) = response.error_response() {
            panic!("the produce request was refused as a whole: {code:?}: {message}");
        }
        decoded("a ProduceResponse", protocol::decode_produce(&response.frame))
            .into_iter()
            .map(|o| {
                let (error, message) = code_and_message(&o.base_offset);
                let base_offset = o.base_offset.map_or(-1, |offset| offset as i64);
                Produced { topic: o.topic, partition: o.partition, error, message, base_offset }
            })
            .collect()
    }

    /// Produces to several partitions at once (acks 1 or -1) and returns every
    /// partition's outcome, in the order of the response.
    pub fn produce_many(&mut self, acks: i16, parts: &[(&str, u32, &[u8])]) -> Vec<Produced> {
        assert_ne!(acks, 0, "acks=0 gets no response: use send_produce");
        let correlation_id = self.send_produce(acks, parts);
        Self::produced(&self.receive_for(correlation_id))
    }

    /// Produces batches to one partition (acks 1 or -1).
    pub fn produce(&mut self, topic: &str, partition: u32, batches: &[u8], acks: i16) -> Produced {
        let mut out = self.produce_many(acks, &[(topic, partition, batches)]);
        assert_eq!(out.len(), 1, "one partition produced to, {} results: {out:?}", out.len());
        out.remove(0)
    }

    // Fetch and offsets ------------------------------------------------------------------

    /// Fetches several partitions in one request and returns every partition's outcome,
    /// in the order of the response.
    pub fn fetch_many(&mut self, targets: &[FetchTarget<'_>], max_wait_ms: u32, min_bytes: u32) -> Vec<Fetched> {
        let correlation_id = self.send_fetch(targets, max_wait_ms, min_bytes);
        let response = self.receive_for(correlation_id);
        decoded("a FetchResponse", protocol::decode_fetch(Arc::new(response.frame)))
            .into_iter()
            .map(|f| {
                let (error, message) = code_and_message(&f.result);
                let (high_watermark, records) =
                    f.result.map_or((-1, Vec::new()), |d| (d.high_watermark as i64, d.records().to_vec()));
                Fetched { topic: f.topic, partition: f.partition, error, message, high_watermark, records }
            })
            .collect()
    }

    /// Sends a fetch request for several partitions (grouped by topic in order of first
    /// appearance) without reading its response, and returns its correlation id.
    pub fn send_fetch(&mut self, targets: &[FetchTarget<'_>], max_wait_ms: u32, min_bytes: u32) -> u32 {
        let parts: Vec<FetchPartition> = targets
            .iter()
            .map(|&(topic, partition, offset, max_bytes)| FetchPartition {
                topic: topic.to_string(),
                partition,
                // A negative offset (which the node must refuse) goes out as it is: the
                // encoder writes the offset back as an i64.
                offset: offset as u64,
                max_bytes,
            })
            .collect();
        let limits = FetchLimits { max_wait_ms, min_bytes, max_bytes: FETCH_REQUEST_BYTES_MAX };
        self.send(RequestBody::FetchRequest, |b| protocol::encode_fetch(b, limits, &parts), &[])
    }

    /// Fetches one partition from `offset`.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: u32,
        max_wait_ms: u32,
        min_bytes: u32,
    ) -> Fetched {
        let mut out = self.fetch_many(&[(topic, partition, offset, max_bytes)], max_wait_ms, min_bytes);
        assert_eq!(out.len(), 1, "one partition fetched, {} results: {out:?}", out.len());
        out.remove(0)
    }

    /// The offset for `timestamp` (-1: the log end, -2: the log start, else the first
    /// offset at or after that time): `(error, offset)`, the offset -1 when no record is
    /// that recent or the query was refused.
    pub fn list_offsets(&mut self, topic: &str, partition: u32, timestamp: i64) -> (ErrorCode, i64) {
        let build = |b: &mut FlatBufferBuilder<'static>| {
            protocol::encode_list_offsets(
                b,
                &[(topic, partition, timestamp)],
                protocol::IsolationLevel::ReadUncommitted,
            )
        };
        let response = self.request(RequestBody::ListOffsetsRequest, build, &[]);
        let mut answers = decoded("a ListOffsetsResponse", protocol::decode_list_offsets(&response.frame));
        assert_eq!(answers.len(), 1, "one partition asked, {} results", answers.len());
        let (_, _, result) = answers.remove(0);
        let (error, _) = code_and_message(&result);
        (error, result.ok().flatten().map_or(-1, |offset| offset as i64))
    }
}

/// `GET /metrics` from a node's `--metrics-listen` address; returns the body.
#[must_use]
pub fn scrape_metrics(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "the scrape failed: {body}");
    body
}

/// One HTTP/1.0 GET (so the server answers without chunking and closes): the status and
/// the body. Bounded by the socket timeouts.
#[must_use]
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream =
        TcpStream::connect_timeout(&addr, SOCKET_TIMEOUT).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.set_read_timeout(Some(SOCKET_TIMEOUT)).expect("setting a read timeout");
    stream.set_write_timeout(Some(SOCKET_TIMEOUT)).expect("setting a write timeout");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap_or_else(|e| panic!("sending GET {path}: {e}"));
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap_or_else(|e| panic!("reading the answer to GET {path}: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

/// The value of an unlabelled metric in a Prometheus text scrape.
#[must_use]
pub fn metric_value(scrape: &str, name: &str) -> Option<u64> {
    scrape.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What one run of a CLI process did.
#[derive(Debug)]
pub struct CliRun {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a prepared command (its stdin, stdout and stderr are set up here): feeds it
/// `stdin`, drains stdout and stderr on threads (a pipe holds only so much), polls until
/// it exits, and kills it by its pid and fails the test if it runs past `timeout`.
pub fn run_command(mut command: Command, stdin: &[u8], timeout: Duration) -> CliRun {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    // A process that exits without reading all of stdin closes the pipe: that write
    // error is not the caller's concern (the exit code and output are).
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the process") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill(); // SIGKILL to this child's pid
            let _ = child.wait();
            panic!("{command:?} ran longer than {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().expect("the stdin writer");
    CliRun { code: status.code(), stdout: stdout.join().expect("stdout"), stderr: stderr.join().expect("stderr") }
}

/// A group's committed offsets of partitions 0..`partitions` of `topic`, read through the
/// native protocol on `conn` (`None`: nothing committed).
pub async fn committed_offsets(
    conn: &sluice_client::connection::Connection,
    group: &str,
    topic: &str,
    partitions: u32,
) -> Vec<Option<u64>> {
    let query: Vec<(String, u32)> = (0..partitions).map(|p| (topic.to_string(), p)).collect();
    let answers = sluice_client::protocol::fetch_offsets(conn, group, Some(&query)).await.expect("OffsetFetch");
    (0..partitions)
        .map(|p| answers.iter().find(|(t, q, _, _)| t == topic && *q == p).and_then(|(_, _, o, _)| *o))
        .collect()
}

/// A process's resident memory (VmRSS of /proc/PID/status), in bytes.
#[must_use]
pub fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process's /proc status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc status");
    kib * 1024
}
