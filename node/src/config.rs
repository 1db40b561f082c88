//! The node's settings: command-line flags over an optional TOML file over defaults.
//!
//! Every limit has a name, a unit and a checked range; a bad flag or file gets an error
//! naming the key, the value and what is allowed. With no flags at all the node is a
//! single node on 127.0.0.1:9292 with its data in ./sluice-data.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::storage::{FsyncPolicy, LogConfig};

/// The port the native protocol listens on by default.
pub const DEFAULT_PORT: u16 = 9292;
/// The port the Kafka protocol listens on by default.
pub const DEFAULT_KAFKA_PORT: u16 = 9092;
/// Shards at most (one per core; more only multiply idle executors).
pub const SHARDS_MAX: usize = 256;

pub const USAGE: &str = "\
sluice-node: the Sluice storage node

usage: sluice-node [--config FILE] [--data-dir DIR] [--listen [PROTOCOL://]HOST:PORT]
                   [--kafka-listen [NAME://]HOST:PORT[,...]|off] [--kafka-advertised [NAME://]HOST:PORT[,...]]
                   [--listener-security-protocol-map NAME:PROTOCOL,...] [--shards N]
                   [--tls-cert FILE] [--tls-key FILE] [--tls-client-ca FILE]
                   [--cluster-tls-ca FILE]
                   [--sasl-mechanisms M,M,...] [--connections-max-reauth-ms N]
                   [--authorizer none|acl] [--super-users User:A;User:B]
                   [--allow-everyone-if-no-acl-found true|false] [--ssl-principal-mapping-rules RULES]
                   [--node-id N] [--metrics-listen [https://]HOST:PORT] [--fsync POLICY]
                   [--segment-bytes N] [--max-frame-bytes N] [--max-in-flight N] [--max-connections N]
                   [--max-connections-per-ip N] [--max-connections-per-ip-overrides IP:N,...]
                   [--request-memory-bytes N] [--reserve-bytes N] [--cache-bytes N]
                   [--storage-min-free-bytes N] [--segment-files-max N] [--storage-faults SPEC]
                   [--read-ahead-bytes N]
                   [--spin-before-park-us N]
                   [--retention-check-ms N]
                   [--compaction-check-ms N] [--compaction-bytes-per-s N]
                   [--auto-create-topics true|false] [--num-partitions N]
                   [--default-replication-factor N]
                   [--group-initial-rebalance-delay-ms N]
                   [--group-consumer-heartbeat-interval-ms N] [--group-consumer-session-timeout-ms N]
                   [--transactional-id-expiration-ms N]
                   [--peer ID=HOST:PORT,HOST:PORT[,HOST:PORT]]... [--voters ID,ID,...]
                   [--join HOST:PORT --cluster-listen HOST:PORT] [--rack NAME]
                   [--replica-selector-class rack|leader]
                   [--session-timeout-ms N]
                   [--replica-lag-time-max-ms N] [--replication-throttled-rate BYTES]

  --config FILE             TOML file with the same keys (e.g. `data-dir = \"/var/lib/sluice\"`,
                            `[topic-defaults]` with topic config keys); flags win over it
  --data-dir DIR            where logs and metadata live (default ./sluice-data)
  --listen [PROTOCOL://]HOST:PORT  native protocol listener (default 127.0.0.1:9292,
                            plaintext); PROTOCOL as for --kafka-listen
  --kafka-listen [NAME://]HOST:PORT[,[NAME://]HOST:PORT...]  Kafka protocol listeners for
                            existing Kafka clients and tools (default 127.0.0.1:9092,
                            plaintext; `off` turns them off), as Kafka's `listeners`. NAME is
                            a security protocol: PLAINTEXT (the default), SSL (TLS with
                            --tls-cert and --tls-key), SASL_PLAINTEXT or SASL_SSL (clients
                            authenticate as a user first; SASL_SSL over TLS), or a name of
                            --listener-security-protocol-map. Names are unique; Metadata
                            answers with every node's listener of the name asked through.
                            --peer entries give the first listener's address
  --listener-security-protocol-map NAME:PROTOCOL,...  Kafka's listener.security.protocol.map:
                            e.g. INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL
  --tls-cert FILE           PEM certificate chain (leaf first) of SSL listeners
  --tls-key FILE            PEM private key of --tls-cert; both are read again on SIGHUP
  --tls-client-ca FILE      PEM CA certificates: SSL clients must present a certificate
                            signed by one (mutual TLS; default: none asked for)
  --cluster-tls-ca FILE     PEM CA of the cluster's nodes: the cluster link (replication,
                            the controller quorum) uses mutual TLS, each node presenting
                            --tls-cert (naming its cluster address's IP), connecting only
                            to and accepting only nodes whose certificate this CA signed;
                            it must sign nodes only (not tls-client-ca); read again on SIGHUP
  --sasl-mechanisms M,M,... the SASL mechanisms SASL listeners accept, of SCRAM-SHA-256,
                            SCRAM-SHA-512 and PLAIN (default: all three). Users are SCRAM
                            credentials in the cluster's metadata (Kafka's
                            AlterUserScramCredentials, or SLUICE_BOOTSTRAP_USER below);
                            PLAIN checks the password against them
  --connections-max-reauth-ms N  how long a SASL login lasts before the client must
                            authenticate again on its connection (KIP-368; default 0: for
                            the connection's life)
  --authorizer none|acl     acl: every request, Kafka's and the native protocol's, is checked
                            against the ACLs (Kafka's model, managed with CreateAcls/DeleteAcls
                            or `sluice acl`) for the connection's principal (User:NAME after a
                            SASL login, else a TLS client certificate's, else User:ANONYMOUS);
                            default none: no checks
  --super-users P;P;...     principals allowed everything (Kafka's super.users)
  --ssl-principal-mapping-rules RULES  how a client certificate's subject becomes its
                            principal (Kafka's ssl.principal.mapping.rules): e.g.
                            'RULE:^CN=([^,]*).*$/$1/L,DEFAULT'; default DEFAULT (the subject)
  --allow-everyone-if-no-acl-found true|false  a resource no ACL names is open to all
                            (default false: denied, as Kafka's default)
  --kafka-advertised [NAME://]HOST:PORT[,...]  the addresses Kafka clients are told to
                            connect to, per listener name (HOST:PORT alone: the first
                            listener's; default: each listener's own address)
  --shards N                executors, one pinned per core (default: the number of cores)
  --node-id N               this node's id (default 0)
  --metrics-listen [https://]HOST:PORT  Prometheus text endpoint at /metrics (default:
                            off); https:// serves it over TLS with --tls-cert and --tls-key
                            (scrapers present a certificate too when --tls-client-ca is set)
  --fsync POLICY            default topic fsync policy: always, never or interval:N ms
                            (default always; every policy survives kill -9 of the node)
  --segment-bytes N         default topic segment size (default 1073741824)
  --max-frame-bytes N       largest request frame; bigger ones are refused before they are
                            read (default 104857600)
  --max-in-flight N         requests in flight per connection (default 64)
  --max-connections N       client connections open at once, both protocols, all shards
                            (default: half the open-files limit); past it a new one is
                            closed at once (sluice_connections_refused_total)
  --max-connections-per-ip N  client connections open at once from one IP address, node-wide
                            (Kafka's max.connections.per.ip; default: no limit); past it a new
                            one is closed at once (sluice_connections_refused_per_ip_total)
  --max-connections-per-ip-overrides IP:N,...  per-address exceptions to it (Kafka's
                            max.connections.per.ip.overrides, IP addresses only)
  --request-memory-bytes N  memory for request bodies per shard, reserved as they arrive
                            (default 268435456)
  --reserve-bytes N         disk space zero-filled ahead of small writes, for all partitions
                            together (default: 1% of the data directory's file system, from
                            64 MiB to 1 GiB): writes into it sync no metadata
  --storage-min-free-bytes N  produce is refused (KAFKA_STORAGE_ERROR naming the directory)
                            while the data directory's file system has less free (default:
                            5% of it, at most 1 GiB; 0 turns the guard off); logs that
                            failed on a full disk are reopened once a second
  --storage-faults SPEC     for fault-injection tests only: fail this share (per mille) of
                            partition-log writes and syncs with EIO, as a failing disk
                            would (seed=N,write-eio=P,sync-eio=P; the controller's log is
                            spared); the node warns at start
  --segment-files-max N     closed segments' files open at once, all partitions together
                            (default: an eighth of the open files limit, at most 1024);
                            each partition also holds its active segment open
  --cache-bytes N           memory for recently written batches, all partitions together
                            (default: an eighth of the machine's memory)
  --read-ahead-bytes N      memory for reading ahead of sequential readers from disk, all
                            partitions together (default 268435456)
  --spin-before-park-us N   an idle shard polls this long before sleeping (default 0): lower
                            latency for requests to an idle node, a busy core while polling
  --retention-check-ms N    how often retention deletes expired segments (default 300000)
  --compaction-check-ms N   how often compacted topics are cleaned (default 15000)
  --compaction-bytes-per-s N  the cleaner's read rate per shard, 0 unthrottled (default 67108864)
  --auto-create-topics true|false  a Kafka client's Metadata request for a topic that does
                            not exist creates it, as Kafka's auto.create.topics.enable
                            (default true; the controller's defaults below apply)
  --num-partitions N        partitions of an auto-created topic (default 1)
  --default-replication-factor N  replication factor of an auto-created topic (default 1)
  --group-initial-rebalance-delay-ms N  how long a new or empty Kafka (classic protocol)
                            group waits for more members before its first rebalance,
                            each join extending the wait up to the rebalance timeout, as
                            Kafka's group.initial.rebalance.delay.ms (default 3000; 0: none)
  --group-consumer-heartbeat-interval-ms N  how often members of Kafka's consumer protocol
                            (KIP-848) heartbeat (default 5000)
  --group-consumer-session-timeout-ms N  a KIP-848 member not heard from for this long is
                            removed from its group (default 45000)
  --transactional-id-expiration-ms N  a transactional id with no transaction open and
                            no request for this long is forgotten (its producer must
                            init again), as Kafka's transactional.id.expiration.ms
                            (default 604800000: 7 days)
  --peer ID=NATIVE,CLUSTER[,KAFKA]  a node of the cluster: its id, native listener, cluster
                            (replication) listener and Kafka listener; repeat for every node,
                            this one included (its entry must match --node-id, --listen and
                            --kafka-listen). Without --peer the node is a cluster of one: its
                            own controller (one voter) and every partition's only replica
  --voters ID,ID,...        the controller quorum's voters, 1, 3 or 5 of the peers (default:
                            every peer, if there are at most 7); the others follow its log.
                            They are where a new cluster starts: `sluice controller
                            add-voter|remove-voter` change them afterwards
  --join HOST:PORT          join a running cluster through this cluster listener of any of
                            its nodes, instead of --peer entries: the node announces itself
                            (--node-id, unique in the cluster; --listen; --cluster-listen)
                            and follows the controller quorum's log as a learner; restarted,
                            it rejoins from what its data directory holds
  --cluster-listen HOST:PORT  this node's cluster (replication) listener, an address the
                            other nodes reach; needed with --join (--peer entries give it)
  --rack NAME               the node's rack (Kafka's broker.rack): new partitions spread
                            their replicas over racks, and Metadata reports it
  --replica-selector-class rack|leader  with rack (Kafka's RackAwareReplicaSelector), a
                            partition's leader sends a consumer that names its rack
                            (client.rack) to an in-sync replica in that rack to fetch from
                            (KIP-392), which serves it. Default leader: consumers read
                            from leaders
  --session-timeout-ms N    a node not heard from for this long is fenced and loses its
                            leaderships (default 3000)
  --replica-lag-time-max-ms N  a follower that has not caught up for this long leaves the
                            ISR (replica.lag.time.max.ms, default 10000)
  --replication-throttled-rate BYTES  bytes per second this node's leaders send to
                            replicas outside the ISR: new replicas of a partition move,
                            followers catching up (Kafka's leader.replication.throttled.rate;
                            in-sync followers are never throttled). Default 0: no throttle
  -h, --help                this text

Environment: SLUICE_BOOTSTRAP_USER=NAME:PASSWORD[:MECHANISM] creates that SASL user
(SCRAM-SHA-256 unless MECHANISM says SCRAM-SHA-512) at start when it does not exist, so a
node whose Kafka listener needs SASL can be reached at all.
Logs go to stderr; RUST_LOG sets the filter (default info). SIGTERM or SIGINT shut the
node down cleanly (writes finished, files synced and closed).";

/// Everything `sluice-node` runs with.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: u32,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The Kafka wire protocol's listeners, named as Kafka names them (empty: off). The
    /// first is the one `--peer` entries give other nodes.
    pub kafka_listeners: Vec<KafkaListener>,
    /// `--kafka-listen` as given, `[NAME://]HOST:PORT` each: resolved into
    /// `kafka_listeners` once every setting is read (`resolve_listeners`).
    kafka_listen_given: Vec<(Option<String>, SocketAddr)>,
    /// `--kafka-advertised` as given: `HOST:PORT` for the first listener, or
    /// `NAME://HOST:PORT` each.
    kafka_advertised_given: Vec<(Option<String>, (String, u16))>,
    /// Kafka's `listener.security.protocol.map`: listener names that are not protocol names.
    pub listener_protocols: Vec<(String, SecurityProtocol)>,
    /// The native listener's security protocol (`--listen PROTOCOL://HOST:PORT`).
    pub listen_security: SecurityProtocol,
    /// The TLS certificate chain, its key and the CA clients' certificates must chain to
    /// (PEM files), for listeners whose protocol is SSL or SASL_SSL.
    pub tls: TlsFiles,
    /// The CA of the cluster's nodes: the cluster link uses mutual TLS (`tls::cluster`).
    pub cluster_tls_ca: Option<PathBuf>,
    /// The mechanisms SASL listeners accept (of `sasl::MECHANISMS`, in that order).
    pub sasl_mechanisms: Vec<&'static str>,
    /// How long a SASL login lasts (KIP-368's connections.max.reauth.ms; 0: no limit).
    pub reauth_ms: u64,
    /// The user `SLUICE_BOOTSTRAP_USER` asks for.
    pub bootstrap_user: Option<BootstrapUser>,
    /// Whether Kafka requests are checked against the ACLs (`--authorizer acl`).
    pub acl_authorizer: bool,
    /// Principals allowed everything.
    pub super_users: Vec<String>,
    /// How a TLS client certificate's subject becomes a principal's name (Kafka's
    /// ssl.principal.mapping.rules).
    pub principal_rules: crate::login::PrincipalRules,
    /// A resource no ACL names is open to every principal.
    pub allow_if_no_acl: bool,
    pub shards: usize,
    pub metrics_listen: Option<SocketAddr>,
    /// The metrics endpoint is served over TLS (`https://` before its address).
    pub metrics_tls: bool,
    /// Frames larger than this are refused before their body is read.
    pub frame_bytes_max: u32,
    /// Requests read from one connection whose responses are not yet written.
    pub in_flight_per_connection_max: usize,
    /// Client connections open at once, node-wide (`None`: half the open-files limit).
    pub connections_max: Option<usize>,
    /// Client connections open at once from one IP address, node-wide (`None`: no limit).
    pub connections_per_ip_max: Option<u32>,
    /// Per-address exceptions to `connections_per_ip_max`.
    pub connections_per_ip_overrides: Vec<(std::net::IpAddr, u32)>,
    /// Bytes of request bodies held at once by one shard.
    pub request_memory_bytes_max: u64,
    /// Produce is refused while the data directory's file system has less free space
    /// (`None`: 5% of it, at most 1 GiB; 0: never refused).
    pub storage_min_free_bytes: Option<u64>,
    /// Injected storage faults (`--storage-faults`, tests only).
    pub storage_faults: Option<StorageFaults>,
    /// Closed segments' files open at once, node-wide (`None`: an eighth of the open
    /// files limit, at most 1024).
    pub segment_files_max: Option<usize>,
    /// Bytes zero-filled ahead of the writes of all partitions together (divided among
    /// the shards); `None`: `shard::space::default_reserve` of the data directory.
    pub reserve_bytes_max: Option<u64>,
    /// Memory for the caches of recently written batches of all partitions together
    /// (divided among the shards).
    pub cache_bytes_max: u64,
    /// Memory for reading ahead of sequential readers (divided among the shards).
    pub read_ahead_bytes_max: u64,
    /// Log settings of topics that do not set their own.
    pub topic_defaults: LogConfig,
    /// How long an idle shard polls before it sleeps in the kernel (0: sleep at once).
    /// Polling cuts the wake-up latency of a request that arrives on an idle shard, at
    /// the cost of a busy core while it polls.
    pub spin_before_park_us: u64,
    /// How often each shard applies topics' retention (log.retention.check.interval.ms).
    pub retention_check_ms: u64,
    /// How often each shard compacts its compacted topics' partitions.
    pub compaction_check_ms: u64,
    /// The cleaner's read rate per shard, so appends keep their throughput.
    pub compaction_bytes_per_s: u64,
    /// Kafka's auto.create.topics.enable: a Kafka Metadata request for a missing topic
    /// creates it.
    pub auto_create_topics: bool,
    /// Kafka's num.partitions: partitions of an auto-created topic.
    pub num_partitions: u32,
    /// Kafka's default.replication.factor: of an auto-created topic.
    pub default_replication_factor: u16,
    /// Kafka's group.initial.rebalance.delay.ms: an empty classic group's first rebalance
    /// waits this long for more members.
    pub group_initial_rebalance_delay_ms: u64,
    /// Kafka's group.consumer.heartbeat.interval.ms and group.consumer.session.timeout.ms
    /// (KIP-848 groups).
    pub group_consumer_heartbeat_interval_ms: u32,
    pub group_consumer_session_timeout_ms: u64,
    /// Kafka's transactional.id.expiration.ms: an idle transactional id is forgotten.
    pub transactional_id_expiration_ms: u64,
    /// Every node of the cluster, this one included, as `--peer` named them; empty for a
    /// cluster of one (see `nodes`).
    pub peers: Vec<Peer>,
    /// The controller quorum's voters (empty: every peer).
    pub voters: Vec<u32>,
    /// A running cluster's node (its cluster listener) this node joins through, instead
    /// of `peers`.
    pub join: Option<SocketAddr>,
    /// This node's cluster listener, with `join` (`peers` give it otherwise).
    pub cluster_listen: Option<SocketAddr>,
    /// Kafka's broker.rack.
    pub rack: Option<String>,
    /// Kafka's replica.selector.class is RackAwareReplicaSelector: a partition's leader
    /// sends consumers that name a rack to an in-sync replica in it (KIP-392).
    pub rack_aware_replica_selector: bool,
    /// A node not heard from for this long is fenced (cluster only).
    pub session_timeout_ms: u64,
    /// replica.lag.time.max.ms (cluster only).
    pub replica_lag_time_max_ms: u64,
    /// Bytes per second to replicas outside the ISR (0: unthrottled).
    pub replication_throttled_rate: u64,
}

/// A node of the cluster and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: u32,
    /// Its native protocol listener.
    pub listen: SocketAddr,
    /// Its cluster listener (replication and the controller quorum); a cluster of one
    /// has none.
    pub cluster: Option<SocketAddr>,
    /// Its Kafka listener, if it has one.
    pub kafka: Option<SocketAddr>,
}

/// How a listener's connections are secured, as Kafka's `listener.security.protocol.map`
/// names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    /// TLS (rustls): the node's certificate, and the client's too when `tls-client-ca`
    /// is set.
    Ssl,
    /// SASL authentication before any other request, in the clear.
    SaslPlaintext,
    /// TLS, then SASL authentication.
    SaslSsl,
}

impl SecurityProtocol {
    const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections start with a TLS handshake.
    #[must_use]
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients must authenticate with SASL.
    #[must_use]
    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// One Kafka listener: Kafka's listener name (a security protocol's name, or one that
/// `listener-security-protocol-map` maps to a protocol), its protocol, where it listens, and
/// the address clients are told to connect to for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaListener {
    pub name: String,
    pub security: SecurityProtocol,
    pub address: SocketAddr,
    pub advertised: (String, u16),
}

/// A SASL user created at start when missing (`SLUICE_BOOTSTRAP_USER`); its password
/// never shows in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapUser {
    pub name: String,
    pub password: String,
    pub mechanism: sluice_replication::state::ScramMechanism,
}

impl std::fmt::Debug for BootstrapUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BootstrapUser({}, {})", self.name, self.mechanism.name())
    }
}

impl BootstrapUser {
    /// `NAME:PASSWORD[:MECHANISM]`.
    pub fn parse(value: &str) -> Result<BootstrapUser, String> {
        let what = "SLUICE_BOOTSTRAP_USER must be NAME:PASSWORD[:SCRAM-SHA-256|SCRAM-SHA-512]";
        let (name, rest) = value.split_once(':').ok_or_else(|| what.to_string())?;
        let (password, mechanism) = match rest.rsplit_once(':') {
            Some((password, m)) if m.to_ascii_uppercase().starts_with("SCRAM-") => {
                let mechanism = sluice_replication::state::ScramMechanism::from_name(m)
                    .ok_or_else(|| format!("{what}: unknown mechanism {m:?}"))?;
                (password, mechanism)
            }
            _ => (rest, sluice_replication::state::ScramMechanism::Sha256),
        };
        if name.is_empty() || password.is_empty() {
            return Err(format!("{what}: the name and the password must not be empty"));
        }
        Ok(BootstrapUser { name: name.to_string(), password: password.to_string(), mechanism })
    }
}

/// The PEM files TLS listeners use; read at start and again on SIGHUP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate chain (leaf first).
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// When set, clients must present a certificate that chains to one of these CAs
    /// (Kafka's ssl.client.auth=required).
    pub client_ca: Option<PathBuf>,
}

/// Controller voters at most.
pub const VOTERS_MAX: usize = 7;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 0,
            data_dir: PathBuf::from("sluice-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            kafka_listeners: Vec::new(),
            kafka_listen_given: vec![(None, SocketAddr::from(([127, 0, 0, 1], DEFAULT_KAFKA_PORT)))],
            kafka_advertised_given: Vec::new(),
            listener_protocols: Vec::new(),
            listen_security: SecurityProtocol::Plaintext,
            tls: TlsFiles::default(),
            cluster_tls_ca: None,
            sasl_mechanisms: crate::sasl::MECHANISMS.to_vec(),
            reauth_ms: 0,
            bootstrap_user: None,
            acl_authorizer: false,
            super_users: Vec::new(),
            principal_rules: crate::login::PrincipalRules::default(),
            allow_if_no_acl: false,
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()).min(SHARDS_MAX),
            metrics_listen: None,
            metrics_tls: false,
            frame_bytes_max: 100 << 20,
            in_flight_per_connection_max: 64,
            connections_max: None,
            connections_per_ip_max: None,
            connections_per_ip_overrides: Vec::new(),
            request_memory_bytes_max: 256 << 20,
            storage_min_free_bytes: None,
            storage_faults: None,
            segment_files_max: None,
            reserve_bytes_max: None,
            cache_bytes_max: memory_bytes() / 8,
            read_ahead_bytes_max: 256 << 20,
            topic_defaults: LogConfig { fsync: FsyncPolicy::Always, ..LogConfig::default() },
            spin_before_park_us: 0,
            retention_check_ms: 300_000,
            compaction_check_ms: 15_000,
            compaction_bytes_per_s: 64 << 20,
            auto_create_topics: true,
            num_partitions: 1,
            default_replication_factor: 1,
            group_initial_rebalance_delay_ms: 3_000,
            transactional_id_expiration_ms: 604_800_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            group_consumer_session_timeout_ms: 45_000,
            peers: Vec::new(),
            voters: Vec::new(),
            session_timeout_ms: 3_000,
            replica_lag_time_max_ms: 10_000,
            replication_throttled_rate: 0,
            join: None,
            cluster_listen: None,
            rack: None,
            rack_aware_replica_selector: false,
        }
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<NodeConfig>),
    Help,
}

/// The machine's memory (MemTotal in /proc/meminfo); 8 GiB when it cannot be read.
fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(8 << 30, |kib| kib << 10)
}

fn number<T: TryFrom<u64>>(key: &str, value: &str, min: u64, max: u64) -> Result<T, String> {
    let parsed = value.trim().parse::<u64>().ok().filter(|v| (min..=max).contains(v));
    parsed
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| format!("{key} = {value:?}: must be a whole number from {min} to {max}"))
}

/// `IP:N,IP:N` (an IPv6 address in brackets: `[::1]:N`); empty for none.
/// Storage faults a node injects into its own partition logs (`--storage-faults`): a
/// test's failing disk. Shares are per mille of writes and of syncs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageFaults {
    pub seed: u64,
    pub write_eio: u32,
    pub sync_eio: u32,
}

impl StorageFaults {
    fn parse(key: &str, value: &str) -> Result<StorageFaults, String> {
        let mut faults = StorageFaults::default();
        for item in value.split(',').filter(|i| !i.is_empty()) {
            let (name, n) = item.split_once('=').ok_or_else(|| format!("{key} = {value:?}: {item:?} is not NAME=N"))?;
            match name {
                "seed" => faults.seed = number(key, n, 0, u64::MAX)?,
                "write-eio" => faults.write_eio = number(key, n, 0, 1000)?,
                "sync-eio" => faults.sync_eio = number(key, n, 0, 1000)?,
                other => return Err(format!("{key} = {value:?}: unknown item {other:?} (seed, write-eio, sync-eio)")),
            }
        }
        Ok(faults)
    }
}

fn ip_counts(key: &str, value: &str) -> Result<Vec<(std::net::IpAddr, u32)>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let bad = || format!("{key} = {value:?}: {item:?} is not IP:N (an IP address and a count)");
            let (ip, count) = item.rsplit_once(':').ok_or_else(bad)?;
            let ip = ip.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| bad())?;
            Ok((ip, number(key, count, 0, 1 << 30)?))
        })
        .collect()
}

fn address(key: &str, value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("{key} = {value:?}: not a HOST:PORT address"))
}

/// `[PROTOCOL://]HOST:PORT`, PROTOCOL being PLAINTEXT (the default), SSL, SASL_PLAINTEXT
/// or SASL_SSL, as in Kafka's `listeners` (where the name before `://` maps to a protocol).
fn listener_address(key: &str, value: &str) -> Result<(SecurityProtocol, SocketAddr), String> {
    let (security, rest) = match value.split_once("://") {
        None => (SecurityProtocol::Plaintext, value),
        Some((name, rest)) => {
            let Some(security) = SecurityProtocol::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(name)) else {
                return Err(format!(
                    "{key} = {value:?}: unknown security protocol {name:?} (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
                ));
            };
            (security, rest)
        }
    };
    Ok((security, address(key, rest)?))
}

/// The items of a comma-separated list, trimmed, empty ones left out.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// `NAME://REST` as `(Some(NAME), REST)`, else `(None, item)`.
fn named(item: &str) -> (Option<String>, &str) {
    match item.split_once("://") {
        Some((name, rest)) => (Some(name.to_string()), rest),
        None => (None, item),
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key} = {value:?}: not true or false")),
    }
}

/// A list of SASL mechanism names, each one of `sasl::MECHANISMS`.
fn mechanisms(key: &str, value: &str) -> Result<Vec<&'static str>, String> {
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(known) = crate::sasl::MECHANISMS.iter().find(|m| m.eq_ignore_ascii_case(name)) else {
            return Err(format!(
                "{key} = {value:?}: unknown SASL mechanism {name:?} (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN)"
            ));
        };
        if !out.contains(known) {
            out.push(*known);
        }
    }
    if out.is_empty() {
        return Err(format!("{key} = {value:?}: no mechanism named"));
    }
    Ok(out)
}

/// `ID=NATIVE,CLUSTER[,KAFKA]`.
fn peer(key: &str, value: &str) -> Result<Peer, String> {
    let bad = || format!("{key} = {value:?}: expected ID=HOST:PORT,HOST:PORT[,HOST:PORT] (native, cluster, Kafka)");
    let (id, addresses) = value.split_once('=').ok_or_else(bad)?;
    let id = number(key, id, 0, i32::MAX as u64)?;
    let parts: Vec<&str> = addresses.split(',').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(bad());
    }
    Ok(Peer {
        id,
        listen: address(key, parts[0])?,
        cluster: Some(address(key, parts[1])?),
        kafka: parts.get(2).map(|a| address(key, a)).transpose()?,
    })
}

impl NodeConfig {
    /// The first Kafka listener's address (the one `--peer` entries give).
    #[must_use]
    pub fn kafka_listen(&self) -> Option<SocketAddr> {
        self.kafka_listeners.first().map(|l| l.address)
    }

    /// The first Kafka listener's security protocol.
    #[must_use]
    pub fn kafka_security(&self) -> SecurityProtocol {
        self.kafka_listeners.first().map_or(SecurityProtocol::Plaintext, |l| l.security)
    }

    /// The host and port Kafka clients are told to connect to (the first listener's).
    #[must_use]
    pub fn kafka_advertised(&self) -> Option<(String, u16)> {
        self.kafka_listeners.first().map(|l| l.advertised.clone())
    }

    /// The Kafka listeners as clients reach them, which the node registers with the
    /// controller for the others' Metadata answers.
    #[must_use]
    pub fn advertised_listeners(&self) -> Vec<crate::replication::AdvertisedListener> {
        self.kafka_listeners
            .iter()
            .map(|l| crate::replication::AdvertisedListener {
                name: l.name.clone(),
                host: l.advertised.0.clone(),
                port: l.advertised.1,
            })
            .collect()
    }

    /// Builds `kafka_listeners` from `--kafka-listen`, `--kafka-advertised` and
    /// `--listener-security-protocol-map`: every name maps to a protocol, names are
    /// unique, a listener on every address (0.0.0.0) is advertised by name or position.
    fn resolve_listeners(&mut self) -> Result<(), String> {
        let mut listeners: Vec<KafkaListener> = Vec::new();
        for (i, (name, address)) in self.kafka_listen_given.iter().enumerate() {
            let name = name.clone().unwrap_or_else(|| "PLAINTEXT".to_string()).to_ascii_uppercase();
            let security = match self.listener_protocols.iter().find(|(n, _)| *n == name) {
                Some((_, security)) => *security,
                None => SecurityProtocol::ALL.into_iter().find(|p| p.name() == name).ok_or_else(|| {
                    format!(
                        "kafka-listen: listener {name} has no security protocol: name one of PLAINTEXT, SSL, \
                         SASL_PLAINTEXT, SASL_SSL, or map it with listener-security-protocol-map = {name}:PROTOCOL"
                    )
                })?,
            };
            if listeners.iter().any(|l| l.name == name) {
                return Err(format!("kafka-listen: listener {name} is named twice (names must be unique)"));
            }
            let advertised = self.kafka_advertised_given.iter().find(|(n, _)| match n {
                Some(n) => n.eq_ignore_ascii_case(&name),
                None => i == 0,
            });
            let advertised = match advertised {
                Some((_, a)) => a.clone(),
                None if address.ip().is_unspecified() => {
                    return Err(format!(
                        "kafka-listen = {name}://{address} listens on every address: set kafka-advertised = \
                         {name}://HOST:PORT to the address Kafka clients should connect to"
                    ));
                }
                None => (address.ip().to_string(), address.port()),
            };
            listeners.push(KafkaListener { name, security, address: *address, advertised });
        }
        if let Some((Some(name), _)) = self
            .kafka_advertised_given
            .iter()
            .find(|(n, _)| n.as_ref().is_some_and(|n| !listeners.iter().any(|l| l.name.eq_ignore_ascii_case(n))))
        {
            return Err(format!("kafka-advertised: no Kafka listener is named {name}"));
        }
        if listeners.len() > crate::replication::state::LISTENERS_MAX {
            return Err(format!(
                "kafka-listen: {} listeners (at most {})",
                listeners.len(),
                crate::replication::state::LISTENERS_MAX
            ));
        }
        self.kafka_listeners = listeners;
        Ok(())
    }

    /// The cluster's nodes: the `--peer` entries, or this node alone (a cluster of one,
    /// without a cluster listener).
    #[must_use]
    pub fn nodes(&self) -> Vec<Peer> {
        if self.peers.is_empty() {
            return vec![self.alone()];
        }
        self.peers.clone()
    }

    /// This node as a cluster of one describes it (no cluster listener), or, joining a
    /// cluster, as it knows itself (the others are learned from the cluster).
    fn alone(&self) -> Peer {
        Peer { id: self.node_id, listen: self.listen, cluster: self.cluster_listen, kafka: self.kafka_listen() }
    }

    /// The controller voters a new cluster starts with: `voters`, or every node; none for
    /// a node that joins (it learns them from the cluster).
    #[must_use]
    pub fn voter_ids(&self) -> Vec<u32> {
        if self.join.is_some() {
            Vec::new()
        } else if self.voters.is_empty() {
            self.nodes().iter().map(|p| p.id).collect()
        } else {
            self.voters.clone()
        }
    }

    /// Whether this node is the controller quorum's only voter: nothing outside the node
    /// decides, so it can wait at start until it leads its partitions.
    #[must_use]
    pub fn sole_voter(&self) -> bool {
        self.voter_ids() == [self.node_id]
    }

    /// This node's entry among the nodes.
    #[must_use]
    pub fn me(&self) -> Peer {
        // Not among the nodes only if `check_cluster` refused the configuration.
        self.nodes().into_iter().find(|p| p.id == self.node_id).unwrap_or_else(|| self.alone())
    }

    fn check_cluster(&self) -> Result<(), String> {
        if let Some(join) = self.join {
            let Some(cluster) = self.cluster_listen else {
                return Err(format!("join = {join} needs cluster-listen = HOST:PORT, this node's cluster listener"));
            };
            if !self.peers.is_empty() || !self.voters.is_empty() {
                return Err("join: a joining node learns the cluster from it; give no --peer or --voters".to_string());
            }
            if cluster.ip().is_unspecified() {
                return Err(format!("cluster-listen = {cluster}: the other nodes must reach it (not 0.0.0.0 or ::)"));
            }
            if cluster == join || cluster == self.listen {
                return Err(format!("cluster-listen = {cluster} is also join or listen"));
            }
            return Ok(());
        }
        if let Some(cluster) = self.cluster_listen.filter(|_| !self.peers.is_empty()) {
            if self.me().cluster != Some(cluster) {
                return Err(format!("cluster-listen = {cluster} does not match this node's --peer entry"));
            }
        }
        if self.peers.is_empty() {
            if let Some(v) = self.voters.iter().find(|v| **v != self.node_id) {
                return Err(format!("voters: node {v} is not this node, and no --peer names other nodes"));
            }
            return Ok(());
        }
        let Some(me) = self.peers.iter().find(|p| p.id == self.node_id) else {
            return Err(format!("node-id = {} is not one of the --peer entries", self.node_id));
        };
        if me.listen != self.listen || me.kafka != self.kafka_listen() {
            return Err(format!(
                "peer {}'s entry ({}, Kafka {}) does not match this node's listen = {} and kafka-listen = {}",
                me.id,
                me.listen,
                me.kafka.map_or("off".to_string(), |a| a.to_string()),
                self.listen,
                self.kafka_listen().map_or("off".to_string(), |a| a.to_string())
            ));
        }
        let voters = self.voter_ids();
        if voters.len() > VOTERS_MAX {
            return Err(format!(
                "{} controller voters: at most {VOTERS_MAX} (choose 1, 3 or 5 peers with --voters)",
                voters.len()
            ));
        }
        if let Some(v) = voters.iter().find(|v| !self.peers.iter().any(|p| p.id == **v)) {
            return Err(format!("voters: node {v} is not one of the --peer entries"));
        }
        let mut ids: Vec<u32> = self.peers.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.peers.len() {
            return Err("two --peer entries have the same id".to_string());
        }
        Ok(())
    }

    /// Applies one setting by its name (the flag without `--`, or the TOML key).
    /// Whether some listener serves TLS.
    #[must_use]
    pub fn serves_tls(&self) -> bool {
        self.kafka_listeners.iter().any(|l| l.security.tls())
            || self.listen_security.tls()
            || (self.metrics_listen.is_some() && self.metrics_tls)
    }

    /// An SSL listener needs a certificate and its key; TLS files without an SSL listener
    /// are a mistake worth naming.
    fn check_tls(&self) -> Result<(), String> {
        let given = [("tls-cert", &self.tls.cert), ("tls-key", &self.tls.key), ("tls-client-ca", &self.tls.client_ca)];
        if self.serves_tls() {
            for (key, path) in &given[..2] {
                if path.is_none() {
                    let listener = if let Some(l) = self.kafka_listeners.iter().find(|l| l.security.tls()) {
                        format!("kafka-listen = {}://{}", l.name, l.address)
                    } else if self.listen_security.tls() {
                        format!("listen = {}://{}", self.listen_security.name(), self.listen)
                    } else {
                        format!(
                            "metrics-listen = https://{}",
                            self.metrics_listen.map(|a| a.to_string()).unwrap_or_default()
                        )
                    };
                    return Err(format!("{listener} needs {key} = FILE (PEM)"));
                }
            }
        } else if self.cluster_tls_ca.is_some() {
            if let Some((key, _)) = given[..2].iter().find(|(_, path)| path.is_none()) {
                return Err(format!("cluster-tls-ca needs {key} = FILE (PEM), the node's certificate"));
            }
            if self.tls.client_ca.is_some() {
                return Err("tls-client-ca is set but no Kafka listener uses TLS".to_string());
            }
        } else if let Some((key, _)) = given.iter().find(|(_, path)| path.is_some()) {
            return Err(format!(
                "{key} is set but no listener uses TLS (kafka-listen or listen = SSL://HOST:PORT or \
                 SASL_SSL://HOST:PORT, or cluster-tls-ca)"
            ));
        }
        if self.cluster_tls_ca.is_some() && self.peers.is_empty() && self.join.is_none() {
            return Err("cluster-tls-ca is set but the node has no peers (--peer): it has no cluster link".to_string());
        }
        Ok(())
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "data-dir" => self.data_dir = PathBuf::from(value),
            "listen" => (self.listen_security, self.listen) = listener_address(key, value)?,
            "kafka-listen" if value == "off" => self.kafka_listen_given.clear(),
            "kafka-listen" => {
                self.kafka_listen_given = list(value)
                    .map(|item| {
                        let (name, rest) = named(item);
                        Ok((name, address(key, rest)?))
                    })
                    .collect::<Result<_, String>>()?;
            }
            "listener-security-protocol-map" => {
                self.listener_protocols = list(value)
                    .map(|item| {
                        let bad = || format!("{key} = {value:?}: {item:?} is not NAME:PROTOCOL");
                        let (name, protocol) = item.split_once(':').ok_or_else(bad)?;
                        let security =
                            SecurityProtocol::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(protocol));
                        Ok((name.to_ascii_uppercase(), security.ok_or_else(bad)?))
                    })
                    .collect::<Result<_, String>>()?;
            }
            "tls-cert" => self.tls.cert = Some(PathBuf::from(value)),
            "tls-key" => self.tls.key = Some(PathBuf::from(value)),
            "tls-client-ca" => self.tls.client_ca = Some(PathBuf::from(value)),
            "sasl-mechanisms" => self.sasl_mechanisms = mechanisms(key, value)?,
            "cluster-tls-ca" => self.cluster_tls_ca = Some(PathBuf::from(value)),
            "connections-max-reauth-ms" => self.reauth_ms = number(key, value, 0, i64::MAX as u64)?,
            "authorizer" => {
                self.acl_authorizer = match value {
                    "none" => false,
                    "acl" => true,
                    _ => return Err(format!("{key} = {value:?}: none or acl")),
                }
            }
            "super-users" => {
                let users: Vec<String> =
                    value.split(';').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect();
                if let Some(bad) = users.iter().find(|u| u.strip_prefix("User:").is_none_or(str::is_empty)) {
                    return Err(format!("{key} = {value:?}: {bad:?} is not User:NAME"));
                }
                self.super_users = users;
            }
            "allow-everyone-if-no-acl-found" => self.allow_if_no_acl = boolean(key, value)?,
            "ssl-principal-mapping-rules" => {
                self.principal_rules =
                    crate::login::PrincipalRules::parse(value).map_err(|e| format!("{key} = {value:?}: {e}"))?;
            }
            "kafka-advertised" => {
                self.kafka_advertised_given = list(value)
                    .map(|item| {
                        let (name, rest) = named(item);
                        let (host, port) = rest
                            .rsplit_once(':')
                            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|p| *p > 0)?)))
                            .filter(|(h, _)| !h.is_empty())
                            .ok_or_else(|| {
                                format!("{key} = {value:?}: {item:?} is not a [NAME://]HOST:PORT address")
                            })?;
                        Ok((name, (host.to_string(), port)))
                    })
                    .collect::<Result<_, String>>()?;
            }
            "shards" => self.shards = number(key, value, 1, SHARDS_MAX as u64)?,
            "node-id" => self.node_id = number(key, value, 0, i32::MAX as u64)?,
            "metrics-listen" => {
                let (tls, rest) = match value.split_once("://") {
                    None => (false, value),
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
                    Some((scheme, _)) => {
                        return Err(format!("{key} = {value:?}: unknown scheme {scheme:?} (http or https)"))
                    }
                };
                self.metrics_tls = tls;
                self.metrics_listen = Some(address(key, rest)?);
            }
            "fsync" => {
                self.topic_defaults.fsync = value.parse().map_err(|e| format!("{key} = {value:?}: {e}"))?;
            }
            "segment-bytes" => {
                self.topic_defaults.segment_bytes = number(
                    key,
                    value,
                    crate::storage::config::SEGMENT_BYTES_MIN,
                    crate::storage::config::SEGMENT_BYTES_MAX,
                )?;
            }
            "max-frame-bytes" => self.frame_bytes_max = number(key, value, 1024, 1 << 30)?,
            "max-in-flight" => self.in_flight_per_connection_max = number(key, value, 1, 4096)?,
            "max-connections" => self.connections_max = Some(number(key, value, 1, 1 << 30)?),
            "max-connections-per-ip" => self.connections_per_ip_max = Some(number(key, value, 0, 1 << 30)?),
            "max-connections-per-ip-overrides" => self.connections_per_ip_overrides = ip_counts(key, value)?,
            "request-memory-bytes" => self.request_memory_bytes_max = number(key, value, 1 << 20, 1 << 40)?,
            "segment-files-max" => self.segment_files_max = Some(number(key, value, 1, 1 << 24)?),
            "storage-min-free-bytes" => self.storage_min_free_bytes = Some(number(key, value, 0, 1 << 50)?),
            "storage-faults" => self.storage_faults = Some(StorageFaults::parse(key, value)?),
            "reserve-bytes" => self.reserve_bytes_max = Some(number(key, value, 0, 1 << 40)?),
            "cache-bytes" => self.cache_bytes_max = number(key, value, 0, 1 << 44)?,
            "read-ahead-bytes" => self.read_ahead_bytes_max = number(key, value, 0, 1 << 40)?,
            "spin-before-park-us" => self.spin_before_park_us = number(key, value, 0, 1_000_000)?,
            "retention-check-ms" => self.retention_check_ms = number(key, value, 10, 86_400_000)?,
            "compaction-check-ms" => self.compaction_check_ms = number(key, value, 10, 86_400_000)?,
            "compaction-bytes-per-s" => self.compaction_bytes_per_s = number(key, value, 0, 1 << 40)?,
            "auto-create-topics" => self.auto_create_topics = boolean(key, value)?,
            "num-partitions" => self.num_partitions = number(key, value, 1, 1 << 20)?,
            "default-replication-factor" => self.default_replication_factor = number(key, value, 1, 16)?,
            "group-initial-rebalance-delay-ms" => {
                self.group_initial_rebalance_delay_ms = number(key, value, 0, 300_000)?;
            }
            "transactional-id-expiration-ms" => {
                self.transactional_id_expiration_ms = number(key, value, 1_000, i32::MAX as u64)?;
            }
            "group-consumer-heartbeat-interval-ms" => {
                self.group_consumer_heartbeat_interval_ms = number(key, value, 100, 600_000)?;
            }
            "group-consumer-session-timeout-ms" => {
                self.group_consumer_session_timeout_ms = number(key, value, 1_000, 3_600_000)?;
            }
            "peer" => self.peers.push(peer(key, value)?),
            "voters" => {
                self.voters = value
                    .split(',')
                    .map(|id| number(key, id, 0, i32::MAX as u64))
                    .collect::<Result<Vec<u32>, String>>()?;
                self.voters.sort_unstable();
                self.voters.dedup();
            }
            "session-timeout-ms" => self.session_timeout_ms = number(key, value, 100, 600_000)?,
            "replica-lag-time-max-ms" => self.replica_lag_time_max_ms = number(key, value, 100, 600_000)?,
            "replication-throttled-rate" => self.replication_throttled_rate = number(key, value, 0, 1 << 40)?,
            "replica-selector-class" => {
                self.rack_aware_replica_selector = match value {
                    "rack" | "org.apache.kafka.common.replica.RackAwareReplicaSelector" => true,
                    "" | "leader" | "org.apache.kafka.common.replica.LeaderSelector" => false,
                    other => {
                        return Err(format!(
                            "{key} = {other:?}: expected rack (Kafka's \
                             org.apache.kafka.common.replica.RackAwareReplicaSelector) or leader"
                        ))
                    }
                }
            }
            "join" => self.join = Some(address(key, value)?),
            "cluster-listen" => self.cluster_listen = Some(address(key, value)?),
            "rack" => {
                let valid = |c: char| c.is_ascii_alphanumeric() || "._-:/".contains(c);
                if value.is_empty() || value.len() > 255 || !value.chars().all(valid) {
                    return Err(format!("{key} = {value:?}: a rack is 1 to 255 letters, digits and . _ - : /"));
                }
                self.rack = Some(value.to_string());
            }
            _ => return Err(format!("unknown setting {key:?} (see --help)")),
        }
        Ok(())
    }

    /// Reads a TOML config file: top-level keys as the flags, and a `[topic-defaults]`
    /// table of topic config keys (`segment.bytes`, `fsync.policy`, ...).
    pub fn load_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("config file {}: {e}", path.display()))?;
        let table: toml::Table = text.parse().map_err(|e| format!("config file {}: {e}", path.display()))?;
        for (key, value) in &table {
            if key == "topic-defaults" {
                let defaults = value
                    .as_table()
                    .ok_or_else(|| format!("config file {}: topic-defaults must be a table", path.display()))?;
                let topic = crate::topics::Topic {
                    name: String::new(),
                    id: crate::topics::TopicId::NONE,
                    partitions: 1,
                    configs: defaults
                        .iter()
                        .map(|(k, v)| {
                            let v = match v {
                                toml::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            crate::topics::validate_config(k, &v)
                                .map(|()| (k.clone(), v))
                                .map_err(|e| format!("config file {}: [topic-defaults] {e}", path.display()))
                        })
                        .collect::<Result<_, _>>()?,
                };
                self.topic_defaults = topic.log_config(&self.topic_defaults);
                continue;
            }
            if let ("peer", toml::Value::Array(list)) = (key.as_str(), value) {
                for entry in list {
                    let entry = entry
                        .as_str()
                        .ok_or_else(|| format!("config file {}: peer entries must be strings", path.display()))?;
                    self.set(key, entry).map_err(|e| format!("config file {}: {e}", path.display()))?;
                }
                continue;
            }
            let value = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                other => {
                    return Err(format!(
                        "config file {}: {key} = {other}: expected a string or a number",
                        path.display()
                    ))
                }
            };
            self.set(key, &value).map_err(|e| format!("config file {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Parses the command line (without the program name): `--config` first, then every
    /// other flag over it.
    pub fn from_args(args: &[String]) -> Result<Command, String> {
        let mut config = NodeConfig::default();
        let mut pairs = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            if arg == "-h" || arg == "--help" {
                return Ok(Command::Help);
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?} (see --help)"));
            };
            let (key, value) = match flag.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => {
                    let value = args.get(i + 1).ok_or_else(|| format!("--{flag} needs a value"))?;
                    i += 1;
                    (flag.to_string(), value.clone())
                }
            };
            pairs.push((key, value));
            i += 1;
        }
        if let Some((_, file)) = pairs.iter().find(|(k, _)| k == "config") {
            config.load_file(Path::new(file))?;
        }
        for (key, value) in pairs.iter().filter(|(k, _)| k != "config") {
            config.set(key, value).map_err(|e| format!("--{e}"))?;
        }
        config.topic_defaults.validate()?;
        config.resolve_listeners()?;
        config.check_cluster()?;
        config.check_tls()?;
        if let Ok(value) = std::env::var("SLUICE_BOOTSTRAP_USER") {
            config.bootstrap_user = Some(BootstrapUser::parse(&value)?);
        }
        if config.request_memory_bytes_max < u64::from(config.frame_bytes_max) {
            return Err(format!(
                "request-memory-bytes = {} must be at least max-frame-bytes = {} (else a largest frame could never be read)",
                config.request_memory_bytes_max, config.frame_bytes_max
            ));
        }
        Ok(Command::Run(Box::new(config)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn no_flags_give_a_local_single_node() {
        let Command::Run(c) = NodeConfig::from_args(&[]).unwrap() else { panic!("help") };
        assert_eq!(c.listen.to_string(), "127.0.0.1:9292");
        assert_eq!(c.data_dir, PathBuf::from("sluice-data"));
        assert!(c.shards >= 1);
        assert_eq!(c.topic_defaults.fsync, FsyncPolicy::Always);
        // A cluster of one: this node alone, its only voter, without a cluster listener.
        assert_eq!(c.nodes(), vec![c.me()]);
        assert_eq!((c.me().id, c.me().cluster), (0, None));
        assert!(c.sole_voter());
    }

    #[test]
    fn flags_override_the_file_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "shards = 3\nlisten = \"127.0.0.1:7000\"\n[topic-defaults]\n\"segment.bytes\" = 65536\n")
            .unwrap();
        let cmd = NodeConfig::from_args(&args(&format!("--config {} --shards 2 --fsync never", file.display())));
        let Command::Run(c) = cmd.unwrap() else { panic!("help") };
        assert_eq!(c.shards, 2);
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.topic_defaults.segment_bytes, 65536);
        assert_eq!(c.topic_defaults.fsync, FsyncPolicy::Never);
        let e = NodeConfig::from_args(&args("--shards 0")).unwrap_err();
        assert!(e.contains("shards") && e.contains("\"0\"") && e.contains("1 to 256"), "{e}");
        let e = NodeConfig::from_args(&args("--fsync sometimes")).unwrap_err();
        assert!(e.contains("sometimes"), "{e}");
        assert!(NodeConfig::from_args(&args("--bogus 1")).unwrap_err().contains("unknown setting"));
        assert!(NodeConfig::from_args(&args("--listen nowhere")).unwrap_err().contains("HOST:PORT"));
        assert!(matches!(NodeConfig::from_args(&args("--help")), Ok(Command::Help)));
    }

    #[test]
    fn per_ip_connection_limits_and_overrides_parse_and_bad_ones_are_named() {
        let cmd = NodeConfig::from_args(&args(
            "--max-connections-per-ip 10 --max-connections-per-ip-overrides 127.0.0.2:3,[::1]:0",
        ));
        let Command::Run(c) = cmd.unwrap() else { panic!("help") };
        assert_eq!(c.connections_per_ip_max, Some(10));
        let expected: Vec<(std::net::IpAddr, u32)> =
            vec![("127.0.0.2".parse().unwrap(), 3), ("::1".parse().unwrap(), 0)];
        assert_eq!(c.connections_per_ip_overrides, expected);
        let e = NodeConfig::from_args(&args("--max-connections-per-ip-overrides localhost:3")).unwrap_err();
        assert!(e.contains("\"localhost:3\" is not IP:N"), "{e}");
        let e = NodeConfig::from_args(&args("--max-connections-per-ip-overrides 127.0.0.2:many")).unwrap_err();
        assert!(e.contains("many") && e.contains("whole number"), "{e}");
    }

    #[test]
    fn storage_faults_parse_and_bad_ones_are_named() {
        let cmd = NodeConfig::from_args(&args("--storage-faults seed=7,write-eio=30,sync-eio=5"));
        let Command::Run(c) = cmd.unwrap() else { panic!("help") };
        assert_eq!(c.storage_faults, Some(StorageFaults { seed: 7, write_eio: 30, sync_eio: 5 }));
        let e = NodeConfig::from_args(&args("--storage-faults read-eio=3")).unwrap_err();
        assert!(e.contains("unknown item \"read-eio\""), "{e}");
        let e = NodeConfig::from_args(&args("--storage-faults write-eio=1001")).unwrap_err();
        assert!(e.contains("write-eio=1001") || e.contains("1001"), "{e}");
        let e = NodeConfig::from_args(&args("--storage-faults seed")).unwrap_err();
        assert!(e.contains("is not NAME=N"), "{e}");
    }

    #[test]
    fn peers_name_every_node_and_must_include_this_one() {
        let peers = "--peer 1=127.0.0.1:7001,127.0.0.1:7101 --peer 2=127.0.0.1:7002,127.0.0.1:7102,127.0.0.1:7202";
        let cmd =
            NodeConfig::from_args(&args(&format!("--node-id 1 --listen 127.0.0.1:7001 --kafka-listen off {peers}")));
        let Command::Run(c) = cmd.unwrap() else { panic!("help") };
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.me().cluster.unwrap().port(), 7101);
        assert_eq!(c.peers[1].kafka.unwrap().port(), 7202);
        let e = NodeConfig::from_args(&args(&format!("--node-id 3 {peers}"))).unwrap_err();
        assert!(e.contains("node-id = 3"), "{e}");
        let e = NodeConfig::from_args(&args(&format!("--node-id 1 --kafka-listen off {peers}"))).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let e = NodeConfig::from_args(&args("--peer 1=127.0.0.1:7001")).unwrap_err();
        assert!(e.contains("ID=HOST:PORT"), "{e}");
        let base = "--node-id 1 --listen 127.0.0.1:7001 --kafka-listen off";
        let cmd = NodeConfig::from_args(&args(&format!("{base} {peers} --voters 1")));
        let Command::Run(c) = cmd.unwrap() else { panic!("help") };
        assert_eq!(c.voter_ids(), vec![1]);
        let e = NodeConfig::from_args(&args(&format!("{base} {peers} --voters 1,5"))).unwrap_err();
        assert!(e.contains("node 5 is not one of the --peer entries"), "{e}");
    }

    /// A joining node names its cluster listener and no peers; a node alone may open a
    /// cluster listener for others to join; a rack is a plain name.
    #[test]
    fn a_joining_node_names_its_cluster_listener_and_no_peers() {
        let join = "--node-id 4 --listen 127.0.0.1:7004 --kafka-listen off --join 127.0.0.1:7101";
        let cmd = NodeConfig::from_args(&args(&format!("{join} --cluster-listen 127.0.0.1:7104 --rack r2")));
        let Command::Run(c) = cmd.unwrap() else { panic!("help") };
        assert_eq!(c.join, Some("127.0.0.1:7101".parse().unwrap()));
        assert!(c.voter_ids().is_empty() && !c.sole_voter());
        assert_eq!(c.me().cluster, Some("127.0.0.1:7104".parse().unwrap()));
        assert_eq!(c.rack.as_deref(), Some("r2"));
        let e = NodeConfig::from_args(&args(join)).unwrap_err();
        assert!(e.contains("needs cluster-listen"), "{e}");
        let e = NodeConfig::from_args(&args(&format!("{join} --cluster-listen 0.0.0.0:7104"))).unwrap_err();
        assert!(e.contains("must reach it"), "{e}");
        let e =
            NodeConfig::from_args(&args(&format!("{join} --cluster-listen 127.0.0.1:7104 --voters 4"))).unwrap_err();
        assert!(e.contains("give no --peer or --voters"), "{e}");
        let e = NodeConfig::from_args(&args("--rack rack!1")).unwrap_err();
        assert!(e.contains("a rack is"), "{e}");
        let cmd = NodeConfig::from_args(&args("--cluster-listen 127.0.0.1:7101 --kafka-listen off"));
        let Command::Run(alone) = cmd.unwrap() else { panic!("help") };
        assert!(alone.sole_voter() && alone.me().cluster.is_some());
        let peers = "--peer 1=127.0.0.1:7001,127.0.0.1:7101 --peer 2=127.0.0.1:7002,127.0.0.1:7102";
        let mismatch =
            format!("--node-id 1 --listen 127.0.0.1:7001 --kafka-listen off {peers} --cluster-listen 127.0.0.1:9");
        let e = NodeConfig::from_args(&args(&mismatch)).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }

    /// `--kafka-listen` takes Kafka's `PROTOCOL://HOST:PORT` form: PLAINTEXT (also
    /// without a prefix) or SSL; SASL and unknown names are refused by name.
    #[test]
    fn kafka_listen_takes_a_security_protocol_and_refuses_unknown_ones() {
        let parse = |value: &str| super::listener_address("kafka-listen", value);
        let at = "127.0.0.1:9093".parse().unwrap();
        assert_eq!(parse("127.0.0.1:9093"), Ok((SecurityProtocol::Plaintext, at)));
        assert_eq!(parse("PLAINTEXT://127.0.0.1:9093"), Ok((SecurityProtocol::Plaintext, at)));
        assert_eq!(parse("ssl://127.0.0.1:9093"), Ok((SecurityProtocol::Ssl, at)));
        assert_eq!(parse("SASL_SSL://127.0.0.1:9093"), Ok((SecurityProtocol::SaslSsl, at)));
        assert_eq!(parse("sasl_plaintext://127.0.0.1:9093"), Ok((SecurityProtocol::SaslPlaintext, at)));
        assert!(parse("TLS://127.0.0.1:9093").unwrap_err().contains("unknown security protocol"));
        assert!(parse("SSL://nowhere").unwrap_err().contains("not a HOST:PORT"));
        // The native listener takes the same forms, and TLS there needs the node's files.
        let Ok(Command::Run(config)) = NodeConfig::from_args(&args("--listen SASL_PLAINTEXT://127.0.0.1:9393")) else {
            panic!("a SASL native listener")
        };
        assert_eq!(
            (config.listen_security, config.listen),
            (SecurityProtocol::SaslPlaintext, "127.0.0.1:9393".parse().unwrap())
        );
        let Err(e) = NodeConfig::from_args(&args("--listen SSL://127.0.0.1:9393")) else { panic!("TLS without files") };
        assert!(e.contains("listen = SSL://127.0.0.1:9393 needs tls-cert"), "{e}");
        // Several named Kafka listeners, as Kafka's listeners and listener.security.protocol.map.
        let Ok(Command::Run(config)) = NodeConfig::from_args(&args(
            "--kafka-listen INTERNAL://127.0.0.1:9092,SASL_PLAINTEXT://0.0.0.0:9094 \
             --listener-security-protocol-map internal:PLAINTEXT \
             --kafka-advertised SASL_PLAINTEXT://broker.example:9094",
        )) else {
            panic!("named listeners")
        };
        let listeners: Vec<(&str, SecurityProtocol, String, (String, u16))> = config
            .kafka_listeners
            .iter()
            .map(|l| (l.name.as_str(), l.security, l.address.to_string(), l.advertised.clone()))
            .collect();
        assert_eq!(
            listeners,
            [
                ("INTERNAL", SecurityProtocol::Plaintext, "127.0.0.1:9092".into(), ("127.0.0.1".into(), 9092)),
                (
                    "SASL_PLAINTEXT",
                    SecurityProtocol::SaslPlaintext,
                    "0.0.0.0:9094".into(),
                    ("broker.example".into(), 9094)
                ),
            ]
        );
        assert_eq!(config.kafka_listen(), Some("127.0.0.1:9092".parse().unwrap()), "the first is the peers'");
        for (bad, why) in [
            ("--kafka-listen EXTERNAL://127.0.0.1:9092", "listener EXTERNAL has no security protocol"),
            ("--kafka-listen SSL://127.0.0.1:9092,ssl://127.0.0.1:9093", "named twice"),
            ("--kafka-listen 0.0.0.0:9092", "listens on every address"),
            ("--kafka-listen 127.0.0.1:9092 --kafka-advertised OTHER://h:1", "no Kafka listener is named OTHER"),
            ("--listener-security-protocol-map A:TLS", "is not NAME:PROTOCOL"),
        ] {
            let Err(e) = NodeConfig::from_args(&args(bad)) else { panic!("{bad} was taken") };
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(e.contains("listen = SSL://127.0.0.1:9393 needs tls-cert"), "{e}");
    }

    #[test]
    fn sasl_settings_are_checked() {
        assert_eq!(super::mechanisms("m", "plain, SCRAM-SHA-512,PLAIN"), Ok(vec!["PLAIN", "SCRAM-SHA-512"]));
        assert!(super::mechanisms("m", "GSSAPI").unwrap_err().contains("unknown SASL mechanism"));
        assert!(super::mechanisms("m", " , ").unwrap_err().contains("no mechanism"));
        let user = BootstrapUser::parse("admin:se:cret:SCRAM-SHA-512").unwrap();
        assert_eq!((user.name.as_str(), user.password.as_str()), ("admin", "se:cret"));
        assert_eq!(user.mechanism, sluice_replication::state::ScramMechanism::Sha512);
        assert_eq!(BootstrapUser::parse("admin:a:b").unwrap().password, "a:b", "a colon in the password");
        assert!(!format!("{user:?}").contains("cret"), "the password never shows");
        for bad in ["admin", ":pw", "admin:", "admin:pw:SCRAM-MD5"] {
            assert!(BootstrapUser::parse(bad).is_err(), "{bad}");
        }
        let Ok(Command::Run(config)) = NodeConfig::from_args(&args(
            "--authorizer acl --super-users User:admin;User:ops --allow-everyone-if-no-acl-found true",
        )) else {
            panic!("authorization flags")
        };
        assert!(config.acl_authorizer && config.allow_if_no_acl);
        assert_eq!(config.super_users, ["User:admin", "User:ops"]);
        for bad in [
            "--authorizer simple",
            "--super-users admin",
            "--super-users User:",
            "--allow-everyone-if-no-acl-found yes",
        ] {
            assert!(NodeConfig::from_args(&args(bad)).is_err(), "{bad}");
        }
        let https = NodeConfig::from_args(&args("--metrics-listen https://127.0.0.1:9100")).unwrap_err();
        assert!(https.contains("metrics-listen = https://127.0.0.1:9100 needs tls-cert"), "{https}");
        assert!(NodeConfig::from_args(&args("--metrics-listen ftp://127.0.0.1:9100")).unwrap_err().contains("scheme"));
        assert!(NodeConfig::from_args(&args("--metrics-listen http://127.0.0.1:9100")).is_ok());
        let lone =
            NodeConfig::from_args(&args("--cluster-tls-ca ca.pem --tls-cert c.pem --tls-key k.pem")).unwrap_err();
        assert!(lone.contains("no peers"), "{lone}");
        let peers = "--node-id 1 --listen 127.0.0.1:9292 --kafka-listen off --peer 1=127.0.0.1:9292,127.0.0.1:9392 --cluster-tls-ca ca.pem";
        let no_cert = NodeConfig::from_args(&args(peers)).unwrap_err();
        assert!(no_cert.contains("cluster-tls-ca needs tls-cert"), "{no_cert}");
        assert!(NodeConfig::from_args(&args(&format!("{peers} --tls-cert c.pem --tls-key k.pem"))).is_ok());
        let tls = NodeConfig::from_args(&args("--kafka-listen SASL_SSL://127.0.0.1:9093")).unwrap_err();
        assert!(tls.contains("SASL_SSL://127.0.0.1:9093 needs tls-cert"), "{tls}");
    }
}
