//! `sluice-node`: the Sluice storage node.
//!
//! Starts one pinned glommio executor (shard) per core; every shard opens the
//! partitions it owns, listens on the same address (SO_REUSEPORT) and serves the native
//! protocol. Every node is part of a cluster (without `--peer`, a cluster of one: its own
//! controller). SIGTERM or SIGINT stop it cleanly: each shard closes its logs (writes
//! finished, synced, preallocation trimmed). After a kill -9 the next start recovers.
//! SIGHUP reads the TLS certificate and key again (for listeners that serve SSL).

use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use sluice_node::config::{Command, NodeConfig, USAGE};
use sluice_node::io::mesh::Mesh;
use sluice_node::io::rt::{self, LocalExecutorBuilder, Placement};
use sluice_node::listener::{self, Server};
use sluice_node::shard::cluster::ClusterSetup;
use sluice_node::shard::{Shard, MESH_CHANNEL_CAPACITY};
use tracing::{error, info, warn};

/// io_uring memory registered per shard: the log allocates its own buffers, so glommio's
/// arena only serves reads and sockets.
const SHARD_IO_MEMORY_BYTES: usize = 2 << 20;
/// How often a shard checks whether the node is stopping.
const STOP_POLL_MS: u64 = 50;
/// How long a node of a cluster waits, on SIGTERM, for its leaderships to move away.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a cluster of one waits at start to be its own controller and lead its
/// partitions before it serves.
const SOLE_CONTROLLER_TIMEOUT: Duration = Duration::from_secs(30);

/// mimalloc, not glibc's malloc: the node allocates per append (write buffers, the cache's
/// entries, completions), and at 1,024 partitions glibc spent 19% of a shard's CPU in
/// `_int_malloc`, `_int_free` and `unlink_chunk` (see ARCHITECTURE.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before the buffers are allocated (see the function for why).
    let huge_pages = sluice_node::io::disable_transparent_huge_pages();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match NodeConfig::from_args(&args) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{USAGE}");
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sluice-node: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    if let Err(e) = huge_pages {
        warn!("could not turn transparent huge pages off for the node: {e}");
    }
    raise_open_files_limit();
    if let Err(e) = check_memlock(config.shards) {
        error!("{e}");
        eprintln!("sluice-node: {e}");
        return ExitCode::from(2);
    }
    // One node per data directory: two writers on the same segment files would corrupt
    // them. The lock lives as long as the process.
    let _data_dir_lock = match lock_data_dir(&config.data_dir) {
        Ok(lock) => lock,
        Err(e) => {
            error!("{e}");
            eprintln!("sluice-node: {e}");
            return ExitCode::from(2);
        }
    };
    // The shards' listeners share the port with SO_REUSEPORT, which would also let them
    // share it with another process: check first that nobody else listens there.
    let kafka_addresses = config.kafka_listeners.iter().map(|l| l.address);
    for address in std::iter::once(config.listen).chain(kafka_addresses).chain(config.me().cluster) {
        if let Err(e) = check_port_free(address) {
            error!("{e}");
            eprintln!("sluice-node: {e}");
            return ExitCode::from(2);
        }
    }
    // The TLS files are checked here, once: the shards' listeners read them themselves.
    let checked = match &config.cluster_tls_ca {
        Some(ca) => sluice_node::tls::cluster(&config.tls, ca).map(|_| ()),
        None => Ok(()),
    };
    if let Err(e) =
        checked
            .and_then(|()| if config.serves_tls() { sluice_node::tls::load(&config.tls).map(|_| ()) } else { Ok(()) })
    {
        error!("{e}");
        eprintln!("sluice-node: {e}");
        return ExitCode::from(2);
    }
    // Shards inherit this mask, so only the main thread receives SIGTERM, SIGINT and
    // SIGHUP.
    let signals = block_signals();
    let life = Arc::new(Lifecycle {
        stop: AtomicBool::new(false),
        started: Barrier::new(config.shards),
        serving: AtomicBool::new(false),
        finished: AtomicUsize::new(0),
        handed_over: AtomicBool::new(false),
    });
    let stop = &life.stop;
    let mesh = Mesh::new(config.shards, MESH_CHANNEL_CAPACITY);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cluster = cluster_setup(&config);
    info!(listen = %config.listen, data_dir = %config.data_dir.display(), shards = config.shards, "starting");
    let mut handles = Vec::new();
    for i in 0..config.shards {
        let placement = if config.shards <= cores { Placement::Fixed(i) } else { Placement::Unbound };
        let (config, mesh, cluster, life) = (config.clone(), mesh.clone(), cluster.clone(), life.clone());
        let mut builder =
            LocalExecutorBuilder::new(placement).name(&format!("shard-{i}")).io_memory(SHARD_IO_MEMORY_BYTES);
        if config.spin_before_park_us > 0 {
            builder = builder.spin_before_park(Duration::from_micros(config.spin_before_park_us));
        }
        match builder.spawn(move || async move {
            let result = run_shard(config, cluster, mesh, &life).await;
            if result.is_err() {
                // One shard failing stops the node: a partial node would refuse its partitions.
                life.stop.store(true, Ordering::SeqCst);
            }
            life.finished.fetch_add(1, Ordering::SeqCst);
            result
        }) {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("sluice-node: starting shard {i}: {e}");
                stop.store(true, Ordering::SeqCst);
                return ExitCode::FAILURE;
            }
        }
    }
    while !stop.load(Ordering::SeqCst) {
        match wait_for_signal(&signals, Duration::from_millis(100)) {
            Some(libc::SIGHUP) if config.serves_tls() || config.cluster_tls_ca.is_some() => {
                match sluice_node::tls::reload(&config.tls, config.cluster_tls_ca.as_deref()) {
                    Ok(()) => info!("SIGHUP: TLS certificate and key read again; new connections get them"),
                    Err(e) => error!("SIGHUP: reading the TLS files again failed, the previous ones stay in use: {e}"),
                }
            }
            Some(libc::SIGHUP) => info!("SIGHUP: nothing to reload (no TLS listener)"),
            Some(_) => {
                info!("stop signal received; shutting down");
                stop.store(true, Ordering::SeqCst);
            }
            None => {}
        }
        if life.finished.load(Ordering::SeqCst) == handles.len() {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut ok = true;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!("{e}");
                eprintln!("sluice-node: {e}");
                ok = false;
            }
            Err(e) => {
                eprintln!("sluice-node: a shard failed: {e}");
                ok = false;
            }
        }
    }
    info!("stopped");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The cluster settings every shard starts with (a cluster of one without `--peer`). This
/// life's incarnation is the start time in milliseconds: larger than any earlier life's.
fn cluster_setup(config: &NodeConfig) -> ClusterSetup {
    use sluice_node::replication::{ControllerConfig, Incarnation, NodeId, ReplicaConfig};
    let peers = config.nodes().iter().map(|p| (NodeId(p.id), p.cluster)).collect();
    let incarnation =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64);
    let session = config.session_timeout_ms;
    ClusterSetup {
        node: NodeId(config.node_id),
        incarnation: Incarnation(incarnation),
        peers,
        voters: config.voter_ids().into_iter().map(NodeId).collect(),
        controller: ControllerConfig {
            session_timeout_ms: session,
            preferred_election_interval_ms: 5_000,
            proposal_retry_ms: 500,
        },
        replica: ReplicaConfig {
            heartbeat_interval_ms: (session / 6).max(50),
            replica_lag_time_max_ms: config.replica_lag_time_max_ms,
            fetch_timeout_ms: 2_000,
            fetch_backoff_ms: 1,
            fetch_entries_max: 1_000,
            alter_partition_retry_ms: 500,
            listeners: config.advertised_listeners(),
        },
        throttled_rate: (config.replication_throttled_rate > 0).then_some(config.replication_throttled_rate),
        endpoints: config.me().cluster.map(|cluster| sluice_node::replication::NodeEndpoints {
            native: config.listen.to_string(),
            cluster: cluster.to_string(),
            rack: config.rack.clone(),
        }),
        join: config.join,
    }
}

/// What the shards of a node share to start and stop together.
struct Lifecycle {
    /// The node is stopping (a signal, or a shard failed).
    stop: AtomicBool,
    /// Every shard started (joined the mesh, started its part of the cluster).
    started: Barrier,
    /// Set by shard 0 when the node may serve: at once, or for a cluster of one once it
    /// is its own controller and leads its partitions.
    serving: AtomicBool,
    /// Shards that returned.
    finished: AtomicUsize,
    /// Set by shard 0 once the node's leaderships moved away (or it gave up): the other
    /// shards serve until then.
    handed_over: AtomicBool,
}

async fn run_shard(
    config: NodeConfig,
    cluster: ClusterSetup,
    mesh: Mesh<sluice_node::shard::ShardMsg>,
    life: &Lifecycle,
) -> Result<(), String> {
    let listen = config.listen;
    let metrics_listen = config.metrics_listen;
    let config_metrics_tls = config.metrics_tls;
    let kafka_listeners = config.kafka_listeners.clone();
    let listen_security = config.listen_security;
    let sole_voter = config.sole_voter();
    let acl_authorizer = config.acl_authorizer;
    let has_peers = !config.peers.is_empty();
    let cluster_tls = config.cluster_tls_ca.is_some();
    let shard = Shard::start(Rc::new(config), &cluster, mesh).await?;
    life.started.wait();
    // A cluster of one serves once it is its own controller and leads its partitions
    // (every shard applied that), as a single node always did; the nodes of a larger
    // cluster serve at once (a quorum needs the others, which may start later).
    if shard.id.0 == 0 {
        if sole_voter {
            shard.await_sole_controller(SOLE_CONTROLLER_TIMEOUT).await?;
        }
        life.serving.store(true, Ordering::SeqCst);
    }
    while !life.serving.load(Ordering::SeqCst) {
        if life.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        sluice_node::io::sleep(Duration::from_millis(2)).await;
    }
    let listener = listener::bind(listen).map_err(|e| format!("listening on {listen}: {e}"))?;
    let server = Server::new(shard.clone());
    let serving = rt::spawn(sluice_node::native::serve_native(server.clone(), listener));
    let mut kafka = Vec::new();
    for l in &kafka_listeners {
        let address = l.address;
        let listener = listener::bind(address).map_err(|e| format!("Kafka listener {} on {address}: {e}", l.name))?;
        kafka.push(rt::spawn(sluice_node::kafka::serve(server.clone(), listener, l.clone())));
    }
    let metrics = match (shard.id.0, metrics_listen) {
        (0, Some(address)) => {
            let listener = listener::bind(address).map_err(|e| format!("metrics listener on {address}: {e}"))?;
            let tls = config_metrics_tls.then(|| sluice_node::tls::ShardTls::new(shard.config.tls.clone()));
            Some(rt::spawn(sluice_node::metrics::serve_metrics(shard.clone(), listener, tls)))
        }
        _ => None,
    };
    if shard.id.0 == 0 {
        let kafka_listen: Vec<String> = kafka_listeners
            .iter()
            .map(|l| match l.security.name() == l.name {
                true => format!("{}://{}", l.name, l.address),
                false => format!("{}://{} ({})", l.name, l.address, l.security.name()),
            })
            .collect();
        info!(
            listen = %listen,
            listen_security = listen_security.name(),
            kafka_listen = %if kafka_listen.is_empty() { "off".to_string() } else { kafka_listen.join(",") },
            "sluice-node ready"
        );
        // Friendly defaults stay loopback; an open port without logins is worth a warning.
        for l in kafka_listeners.iter().filter(|l| !l.address.ip().is_loopback() && !l.security.sasl()) {
            warn!(
                "the Kafka listener {} on {} ({}) lets every client in without authentication: \
                 use SASL_SSL:// (or SASL_PLAINTEXT://) to require a login",
                l.name,
                l.address,
                l.security.name()
            );
        }
        let secured = acl_authorizer || kafka_listeners.iter().any(|l| l.security.sasl()) || listen_security.sasl();
        if !listen.ip().is_loopback() && !listen_security.sasl() {
            warn!(
                "the native listener on {listen} ({}) lets every client in without authentication: use \
                 --listen SASL_SSL://{listen} (or SASL_PLAINTEXT://) to require a login",
                listen_security.name()
            );
        } else if acl_authorizer && !listen_security.sasl() {
            info!(
                "the native listener on {listen} has no logins: its clients are {} to the ACLs",
                sluice_node::acl::ANONYMOUS
            );
        }
        if secured && has_peers && !cluster_tls {
            warn!(
                "logins or ACLs are on but the cluster link is plaintext without authentication: whoever reaches a \
                 node's cluster port is a node; use --cluster-tls-ca"
            );
        }
    }
    while !life.stop.load(Ordering::SeqCst) {
        sluice_node::io::sleep(Duration::from_millis(STOP_POLL_MS)).await;
    }
    if shard.id.0 == 0 {
        shard.controlled_shutdown(CONTROLLED_SHUTDOWN_TIMEOUT).await;
        life.handed_over.store(true, Ordering::SeqCst);
    }
    let deadline = std::time::Instant::now() + CONTROLLED_SHUTDOWN_TIMEOUT + Duration::from_secs(1);
    while !life.handed_over.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
        sluice_node::io::sleep(Duration::from_millis(10)).await;
    }
    drop(serving);
    drop(kafka);
    drop(metrics);
    shard.close_logs().await;
    Ok(())
}

/// Takes an exclusive lock on `DATA_DIR/LOCK` (flock, released when the process exits,
/// whatever way it exits).
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::io::Write;
    use std::os::unix::io::AsRawFd;
    std::fs::create_dir_all(data_dir).map_err(|e| format!("creating data directory {}: {e}", data_dir.display()))?;
    let path = data_dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; it only changes the lock state.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(format!(
            "data directory {} is in use by another sluice-node (pid {})",
            data_dir.display(),
            holder.trim()
        ));
    }
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

/// Fails when another process listens on `address`. It asks by connecting: a bind test
/// would also fail on the closing connections a previous node left behind, which are
/// harmless. A node killed a moment ago can keep accepting for some milliseconds after
/// it died, so a listener that answers is asked again for a while before giving up.
fn check_port_free(address: std::net::SocketAddr) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
            Err(_) => return Ok(()),
            Ok(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(_) => return Err(format!("another process is listening on {address}")),
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

/// glommio registers memory with io_uring: each shard needs its arena locked.
/// Raises the soft limit on open files to the hard limit (segment files, index files
/// and connections each take a descriptor; distributions often start processes at a soft
/// limit of 1,024 under a hard limit hundreds of times that), and says what the node has.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write and read the struct we pass; no other memory.
    let (before, raised) = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let before = limit.rlim_cur;
        let wanted = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        (before, before < limit.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0)
    };
    if raised {
        info!("open files limit: {} (raised from {before})", limit.rlim_max);
    } else if before < limit.rlim_max {
        warn!("open files limit: {before}; raising it to the hard limit {} failed", limit.rlim_max);
    } else {
        info!("open files limit: {before}");
    }
}

fn check_memlock(shards: usize) -> Result<(), String> {
    let needed = (shards * SHARD_IO_MEMORY_BYTES) as u64 + (512 << 10);
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write and read the struct we pass; no other memory.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) != 0 {
            return Ok(());
        }
        if limit.rlim_cur >= needed || limit.rlim_cur == libc::RLIM_INFINITY {
            return Ok(());
        }
        let raised =
            libc::rlimit { rlim_cur: limit.rlim_max.min(needed.max(limit.rlim_cur)), rlim_max: limit.rlim_max };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) == 0 && raised.rlim_cur >= 512 << 10 {
            return Ok(());
        }
    }
    if limit.rlim_cur >= 512 << 10 {
        return Ok(()); // enough to start; glommio falls back to unregistered buffers
    }
    Err(format!(
        "locked memory limit (ulimit -l) is {} KiB; glommio needs at least 512 KiB (raise it: ulimit -l 65536)",
        limit.rlim_cur / 1024
    ))
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: the sigset is initialised by sigemptyset before use; pthread_sigmask only
    // changes this thread's mask (inherited by threads spawned after it).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits up to `timeout` for one of the blocked signals; the signal, if one arrived.
fn wait_for_signal(set: &libc::sigset_t, timeout: Duration) -> Option<libc::c_int> {
    let ts =
        libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: `set` is a valid, initialised sigset; a null siginfo pointer is allowed.
    let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (signal > 0).then_some(signal)
}
