//! Metrics: per-shard counters and latency histograms, summed over shards into the
//! Prometheus text format served at `/metrics` (`--metrics-listen`).
//!
//! Each shard records into its own `Metrics` (no sharing, no locks); a scrape asks every
//! shard for a `Snapshot` over the mesh and renders their sum.

mod http;

pub use http::serve_metrics;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use sluice_schemas::wire::RequestBody;

/// The APIs metrics are kept for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    ApiVersions,
    Metadata,
    CreateTopics,
    DeleteTopics,
    CreatePartitions,
    DescribeConfigs,
    AlterConfigs,
    Produce,
    Fetch,
    ListOffsets,
    Other,
}

const APIS: [(Api, &str); 11] = [
    (Api::ApiVersions, "api_versions"),
    (Api::Metadata, "metadata"),
    (Api::CreateTopics, "create_topics"),
    (Api::DeleteTopics, "delete_topics"),
    (Api::CreatePartitions, "create_partitions"),
    (Api::DescribeConfigs, "describe_configs"),
    (Api::AlterConfigs, "alter_configs"),
    (Api::Produce, "produce"),
    (Api::Fetch, "fetch"),
    (Api::ListOffsets, "list_offsets"),
    (Api::Other, "other"),
];

impl Api {
    #[must_use]
    pub fn of(body: RequestBody) -> Api {
        match body {
            RequestBody::ApiVersionsRequest => Api::ApiVersions,
            RequestBody::MetadataRequest => Api::Metadata,
            RequestBody::CreateTopicsRequest => Api::CreateTopics,
            RequestBody::DeleteTopicsRequest => Api::DeleteTopics,
            RequestBody::CreatePartitionsRequest => Api::CreatePartitions,
            RequestBody::DescribeConfigsRequest => Api::DescribeConfigs,
            RequestBody::AlterConfigsRequest => Api::AlterConfigs,
            RequestBody::ProduceRequest => Api::Produce,
            RequestBody::FetchRequest => Api::Fetch,
            RequestBody::ListOffsetsRequest => Api::ListOffsets,
            _ => Api::Other,
        }
    }

    fn index(self) -> usize {
        APIS.iter().position(|(a, _)| *a == self).unwrap_or(APIS.len() - 1)
    }
}

/// Bytes and records in and out of one topic.
#[derive(Clone, Copy, Debug, Default)]
pub struct TopicCounters {
    pub bytes_in: u64,
    pub records_in: u64,
    pub bytes_out: u64,
    pub records_out: u64,
    /// Batches an idempotent producer sent again that were answered with the offsets
    /// they already have instead of being stored twice.
    pub duplicate_batches_in: u64,
}

/// One shard's metrics; also the snapshot a shard sends for a scrape (it is `Send`).
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: [u64; APIS.len()],
    latency_us: Vec<Histogram<u64>>,
    pub topics: BTreeMap<String, TopicCounters>,
    /// Record bytes copied while serving fetches (a partition of another shard).
    pub fetch_bytes_copied: u64,
    /// Record bytes sent in fetch responses.
    pub fetch_bytes_served: u64,
    /// Of those, bytes a follower served to consumers (fetch from follower, KIP-392).
    pub fetch_bytes_served_by_follower: u64,
    pub cross_shard_calls: u64,
    /// Client connections open (both protocols; filled in when a snapshot is taken).
    pub connections: u64,
    /// New connections closed at once: max-connections was reached.
    pub connections_refused: u64,
    /// New connections closed at once: max-connections-per-ip was reached for their address.
    pub connections_refused_per_ip: u64,
    /// New connections to a TLS listener closed because their handshake failed or timed out.
    pub tls_handshakes_failed: u64,
    /// SASL logins (and re-authentications) that succeeded, and that failed.
    pub sasl_authentications: u64,
    pub sasl_authentications_failed: u64,
    /// Requests (or parts of them) the ACLs denied.
    pub requests_denied: u64,
    /// Requests refused from their frame header (too large, inconsistent sizes).
    pub requests_refused_frame: u64,
    /// Request bodies that did not arrive within the body deadline.
    pub requests_refused_body_timeout: u64,
    /// Requests the protocol refused, closing their connection (malformed, unknown or
    /// unserved API or version).
    pub requests_refused_malformed: u64,
    /// The shard's storage counters (filled in when a snapshot is taken).
    pub storage: sluice_storage::DeviceStats,
    /// Logs refusing writes after a failed write or fsync, until they are reopened
    /// (filled in when a snapshot is taken).
    pub failed_logs: u64,
    /// Failed logs opened again (a counter).
    pub logs_reopened: u64,
    /// Produce requests refused because the data directory was below its free margin.
    pub produce_refused_no_space: u64,
    /// Bytes leaders sent replicas outside the ISR through the replication throttle, and
    /// milliseconds those answers waited on it (counters).
    pub replication_throttled_bytes: u64,
    pub replication_throttle_wait_ms: u64,
    /// The data directory's file system (filled in when a snapshot is taken).
    pub data_dir: Option<DataDirGauges>,
}

/// The data directory's file system, as a shard last read it.
#[derive(Clone, Copy, Debug, Default)]
pub struct DataDirGauges {
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub min_free_bytes: u64,
    /// Below `min_free_bytes`: produce is refused.
    pub full: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        let histogram =
            || Histogram::new_with_bounds(1, 60_000_000, 2).unwrap_or_else(|_| unreachable!("valid bounds"));
        Metrics {
            requests: [0; APIS.len()],
            latency_us: (0..APIS.len()).map(|_| histogram()).collect(),
            topics: BTreeMap::new(),
            fetch_bytes_copied: 0,
            fetch_bytes_served: 0,
            fetch_bytes_served_by_follower: 0,
            cross_shard_calls: 0,
            connections: 0,
            connections_refused: 0,
            connections_refused_per_ip: 0,
            tls_handshakes_failed: 0,
            sasl_authentications: 0,
            sasl_authentications_failed: 0,
            requests_denied: 0,
            requests_refused_frame: 0,
            requests_refused_body_timeout: 0,
            requests_refused_malformed: 0,
            storage: sluice_storage::DeviceStats::default(),
            failed_logs: 0,
            logs_reopened: 0,
            produce_refused_no_space: 0,
            replication_throttled_bytes: 0,
            replication_throttle_wait_ms: 0,
            data_dir: None,
        }
    }
}

impl Metrics {
    pub fn record(&mut self, api: Api, elapsed: Duration) {
        let i = api.index();
        self.requests[i] += 1;
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).clamp(1, 60_000_000);
        let _ = self.latency_us[i].record(us);
    }

    pub fn topic(&mut self, topic: &str) -> &mut TopicCounters {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_string(), TopicCounters::default());
        }
        self.topics.entry(topic.to_string()).or_default()
    }

    /// Adds another shard's metrics into these.
    pub fn merge(&mut self, other: &Metrics) {
        for i in 0..APIS.len() {
            self.requests[i] += other.requests[i];
            let _ = self.latency_us[i].add(&other.latency_us[i]);
        }
        for (name, c) in &other.topics {
            let t = self.topic(name);
            t.bytes_in += c.bytes_in;
            t.records_in += c.records_in;
            t.bytes_out += c.bytes_out;
            t.records_out += c.records_out;
            t.duplicate_batches_in += c.duplicate_batches_in;
        }
        self.fetch_bytes_copied += other.fetch_bytes_copied;
        self.fetch_bytes_served += other.fetch_bytes_served;
        self.fetch_bytes_served_by_follower += other.fetch_bytes_served_by_follower;
        self.cross_shard_calls += other.cross_shard_calls;
        self.connections += other.connections;
        self.connections_refused += other.connections_refused;
        self.connections_refused_per_ip += other.connections_refused_per_ip;
        self.tls_handshakes_failed += other.tls_handshakes_failed;
        self.sasl_authentications += other.sasl_authentications;
        self.sasl_authentications_failed += other.sasl_authentications_failed;
        self.requests_denied += other.requests_denied;
        self.requests_refused_frame += other.requests_refused_frame;
        self.requests_refused_body_timeout += other.requests_refused_body_timeout;
        self.requests_refused_malformed += other.requests_refused_malformed;
        self.storage.merge(&other.storage);
        self.failed_logs += other.failed_logs;
        self.logs_reopened += other.logs_reopened;
        self.produce_refused_no_space += other.produce_refused_no_space;
        self.replication_throttled_bytes += other.replication_throttled_bytes;
        self.replication_throttle_wait_ms += other.replication_throttle_wait_ms;
        // One file system: the lowest free figure any shard read, full if any saw it so.
        self.data_dir = match (self.data_dir, other.data_dir) {
            (Some(a), Some(b)) => {
                Some(DataDirGauges { free_bytes: a.free_bytes.min(b.free_bytes), full: a.full || b.full, ..a })
            }
            (a, b) => a.or(b),
        };
    }

    /// The Prometheus text exposition of these metrics.
    #[must_use]
    pub fn render(&self, shards: u16) -> String {
        let mut out = String::new();
        let _ =
            writeln!(out, "# HELP sluice_shards Executors (one per core) of this node.\n# TYPE sluice_shards gauge");
        let _ = writeln!(out, "sluice_shards {shards}");
        let _ = writeln!(
            out,
            "# HELP sluice_requests_total Requests handled, by API.\n# TYPE sluice_requests_total counter"
        );
        for (i, (_, name)) in APIS.iter().enumerate() {
            let _ = writeln!(out, "sluice_requests_total{{api=\"{name}\"}} {}", self.requests[i]);
        }
        let _ = writeln!(
            out,
            "# HELP sluice_request_latency_us Time from a request's frame read to its response ready, in microseconds.\n# TYPE sluice_request_latency_us summary"
        );
        for (i, (_, name)) in APIS.iter().enumerate() {
            let h = &self.latency_us[i];
            if h.is_empty() {
                continue;
            }
            for q in [0.5, 0.9, 0.99, 0.999] {
                let _ = writeln!(
                    out,
                    "sluice_request_latency_us{{api=\"{name}\",quantile=\"{q}\"}} {}",
                    h.value_at_quantile(q)
                );
            }
            let _ = writeln!(out, "sluice_request_latency_us_max{{api=\"{name}\"}} {}", h.max());
            let _ = writeln!(out, "sluice_request_latency_us_count{{api=\"{name}\"}} {}", h.len());
        }
        type Counter = (&'static str, &'static str, fn(&TopicCounters) -> u64);
        let counters: [Counter; 5] = [
            ("sluice_topic_bytes_in_total", "Record batch bytes appended, by topic.", |c| c.bytes_in),
            ("sluice_topic_records_in_total", "Records appended, by topic.", |c| c.records_in),
            ("sluice_topic_bytes_out_total", "Record batch bytes fetched, by topic.", |c| c.bytes_out),
            ("sluice_topic_records_out_total", "Records fetched, by topic.", |c| c.records_out),
            (
                "sluice_topic_duplicate_batches_total",
                "Retried idempotent batches answered with their stored offsets, by topic.",
                |c| c.duplicate_batches_in,
            ),
        ];
        for (metric, help, get) in counters {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for (topic, c) in &self.topics {
                let _ = writeln!(out, "{metric}{{topic=\"{topic}\"}} {}", get(c));
            }
        }
        let _ = writeln!(
            out,
            "# HELP sluice_fetch_bytes_copied_total Record bytes copied in memory while serving fetches (0 when each partition is fetched through its own shard).\n# TYPE sluice_fetch_bytes_copied_total counter"
        );
        let _ = writeln!(out, "sluice_fetch_bytes_copied_total {}", self.fetch_bytes_copied);
        let _ = writeln!(out, "# HELP sluice_fetch_bytes_served_total Record bytes sent in fetch responses.\n# TYPE sluice_fetch_bytes_served_total counter");
        let _ = writeln!(out, "sluice_fetch_bytes_served_total {}", self.fetch_bytes_served);
        let _ = writeln!(out, "# HELP sluice_fetch_bytes_served_by_follower_total Record bytes this node sent consumers from partitions it follows (fetch from the closest replica, KIP-392).\n# TYPE sluice_fetch_bytes_served_by_follower_total counter");
        let _ = writeln!(out, "sluice_fetch_bytes_served_by_follower_total {}", self.fetch_bytes_served_by_follower);
        let _ = writeln!(out, "# HELP sluice_cross_shard_calls_total Requests forwarded to another shard.\n# TYPE sluice_cross_shard_calls_total counter");
        let _ = writeln!(out, "sluice_cross_shard_calls_total {}", self.cross_shard_calls);
        let _ = writeln!(
            out,
            "# HELP sluice_connections Client connections open, both protocols.\n# TYPE sluice_connections gauge"
        );
        let _ = writeln!(out, "sluice_connections {}", self.connections);
        let _ = writeln!(
            out,
            "# HELP sluice_connections_refused_total New connections closed at once because max-connections was reached.\n# TYPE sluice_connections_refused_total counter"
        );
        let _ = writeln!(out, "sluice_connections_refused_total {}", self.connections_refused);
        let _ = writeln!(
            out,
            "# HELP sluice_connections_refused_per_ip_total New connections closed at once because max-connections-per-ip was reached for their address.\n# TYPE sluice_connections_refused_per_ip_total counter"
        );
        let _ = writeln!(out, "sluice_connections_refused_per_ip_total {}", self.connections_refused_per_ip);
        let _ = writeln!(
            out,
            "# HELP sluice_tls_handshakes_failed_total New connections to a TLS listener closed because their handshake failed or timed out.\n# TYPE sluice_tls_handshakes_failed_total counter"
        );
        let _ = writeln!(out, "sluice_tls_handshakes_failed_total {}", self.tls_handshakes_failed);
        let _ = writeln!(
            out,
            "# HELP sluice_sasl_authentications_total SASL logins and re-authentications on Kafka listeners, by result.\n# TYPE sluice_sasl_authentications_total counter"
        );
        let _ = writeln!(out, "sluice_sasl_authentications_total{{result=\"ok\"}} {}", self.sasl_authentications);
        let _ = writeln!(
            out,
            "sluice_sasl_authentications_total{{result=\"failed\"}} {}",
            self.sasl_authentications_failed
        );
        let _ = writeln!(
            out,
            "# HELP sluice_authorization_denied_total Checks of a request (or of one resource it names) that the ACLs denied.\n# TYPE sluice_authorization_denied_total counter"
        );
        let _ = writeln!(out, "sluice_authorization_denied_total {}", self.requests_denied);
        let _ = writeln!(
            out,
            "# HELP sluice_requests_refused_total Requests refused and their connections closed, by reason.\n# TYPE sluice_requests_refused_total counter"
        );
        for (reason, count) in [
            ("frame_header", self.requests_refused_frame),
            ("body_timeout", self.requests_refused_body_timeout),
            ("malformed", self.requests_refused_malformed),
        ] {
            let _ = writeln!(out, "sluice_requests_refused_total{{reason=\"{reason}\"}} {count}");
        }
        let s = &self.storage;
        let storage: [(&str, &str, &str, u64); 19] = [
            ("sluice_storage_writes_total", "counter", "Segment writes (data and zero-fills).", s.writes),
            ("sluice_storage_bytes_written_total", "counter", "Bytes of segment writes.", s.bytes_written),
            (
                "sluice_storage_zero_fill_bytes_total",
                "counter",
                "Bytes zero-filled ahead of writes.",
                s.zero_fill_bytes,
            ),
            (
                "sluice_storage_sync_rounds_total",
                "counter",
                "Sync rounds (one per shard at a time; each serves every log that joined).",
                s.sync_rounds,
            ),
            ("sluice_storage_syncs_served_total", "counter", "Log syncs the rounds served.", s.syncs_served),
            ("sluice_storage_fdatasyncs_total", "counter", "fdatasync calls made by sync rounds.", s.fdatasyncs),
            ("sluice_storage_syncfs_total", "counter", "syncfs calls made by sync rounds.", s.syncfs_calls),
            ("sluice_storage_sync_round_us_total", "counter", "Microseconds the sync rounds took.", s.sync_round_us),
            ("sluice_storage_reserved_bytes", "gauge", "Zero-filled bytes held ahead of writes.", s.reserved_bytes),
            ("sluice_storage_reserve_bytes_max", "gauge", "The node's budget for them.", s.reserve_bytes_max),
            ("sluice_storage_cache_bytes", "gauge", "Bytes of recent batches cached.", s.cache_bytes),
            ("sluice_storage_cache_bytes_max", "gauge", "The node's budget for them.", s.cache_bytes_max),
            (
                "sluice_storage_read_aheads_total",
                "counter",
                "Reads started ahead of sequential readers.",
                s.read_aheads,
            ),
            (
                "sluice_storage_reads_from_read_ahead_total",
                "counter",
                "Reads served from a read ahead.",
                s.reads_from_read_ahead,
            ),
            ("sluice_storage_read_ahead_bytes", "gauge", "Bytes read ahead and not yet served.", s.read_ahead_bytes),
            (
                "sluice_storage_segment_files_open",
                "gauge",
                "Closed segments' files open in the pool.",
                s.segment_files_open,
            ),
            (
                "sluice_storage_segment_files_max",
                "gauge",
                "The pool's limit (--segment-files-max).",
                s.segment_files_max,
            ),
            (
                "sluice_storage_segment_file_opens_total",
                "counter",
                "Closed segments' files opened into the pool.",
                s.segment_file_opens,
            ),
            (
                "sluice_storage_segment_file_evictions_total",
                "counter",
                "Closed segments' files closed to keep the pool within its limit.",
                s.segment_file_evictions,
            ),
        ];
        let d = self.data_dir.unwrap_or_default();
        let space: [(&str, &str, &str, u64); 9] = [
            (
                "sluice_storage_failed_logs",
                "gauge",
                "Partition logs refusing writes after a failed write or fsync, until they are reopened.",
                self.failed_logs,
            ),
            (
                "sluice_storage_logs_reopened_total",
                "counter",
                "Failed partition logs opened again.",
                self.logs_reopened,
            ),
            (
                "sluice_replication_throttled_bytes_total",
                "counter",
                "Bytes leaders sent replicas outside the ISR through --replication-throttled-rate.",
                self.replication_throttled_bytes,
            ),
            (
                "sluice_replication_throttle_wait_ms_total",
                "counter",
                "Milliseconds fetch answers to replicas outside the ISR waited on the replication throttle.",
                self.replication_throttle_wait_ms,
            ),
            (
                "sluice_produce_refused_no_space_total",
                "counter",
                "Produce requests refused because the data directory was below storage-min-free-bytes.",
                self.produce_refused_no_space,
            ),
            ("sluice_data_dir_free_bytes", "gauge", "Free bytes of the data directory's file system.", d.free_bytes),
            ("sluice_data_dir_total_bytes", "gauge", "Size of the data directory's file system.", d.total_bytes),
            (
                "sluice_data_dir_min_free_bytes",
                "gauge",
                "storage-min-free-bytes: below it produce is refused.",
                d.min_free_bytes,
            ),
            (
                "sluice_data_dir_full",
                "gauge",
                "1 while the data directory is below storage-min-free-bytes (produce refused).",
                u64::from(d.full),
            ),
        ];
        for (metric, kind, help, value) in storage.into_iter().chain(space) {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}\n{metric} {value}");
        }
        out
    }
}

/// Counts the records in whole batches (header walk, no decoding).
#[must_use]
pub fn records_in(batches: &[u8]) -> u64 {
    sluice_schemas::batch::BatchWalker::new(batches)
        .map_while(Result::ok)
        .map(|(_, h, _)| u64::try_from(h.record_count()).unwrap_or(0))
        .sum()
}
