//! Topic metadata: names, partition counts and per-topic configs, their validation, and
//! the file they persist in.
//!
//! Pure logic, no I/O: the node's metadata shard reads and writes the file through
//! `crate::io` and hands copies of `Metadata` to every shard.
//!
//! Guarantees: every topic in a `Metadata` has a valid name, at least one partition and
//! only known config keys with valid values; a topic's partition count only grows.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::storage::{FsyncPolicy, LogConfig};

/// Longest topic name, as Kafka (its directory name must stay under 255 bytes).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most partitions a topic may have on this node.
pub const PARTITIONS_MAX: u32 = 10_000;

/// Why a topic operation was refused. The node maps each to its wire error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicError {
    InvalidName(String),
    AlreadyExists(String),
    Unknown(String),
    InvalidPartitions(String),
    InvalidReplicationFactor(String),
    InvalidConfig(String),
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::InvalidName(m)
            | TopicError::InvalidPartitions(m)
            | TopicError::InvalidReplicationFactor(m)
            | TopicError::InvalidConfig(m) => f.write_str(m),
            TopicError::AlreadyExists(name) => write!(f, "topic {name:?} already exists"),
            TopicError::Unknown(name) => write!(f, "topic {name:?} does not exist"),
        }
    }
}

/// Checks a topic name against Kafka's rules: 1 to 249 of `[a-zA-Z0-9._-]`, not `.`
/// or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let bad = |why: &str| Err(TopicError::InvalidName(format!("topic name {name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return bad(&format!("is longer than {TOPIC_NAME_BYTES_MAX} characters"));
    }
    if name == "." || name == ".." {
        return bad("is reserved");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return bad("may only contain ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// One settable topic config key: its name, its check, and how it applies to a log.
struct ConfigKey {
    name: &'static str,
    doc: &'static str,
    check: fn(&str) -> Result<(), String>,
    apply: fn(&str, &mut LogConfig),
    default: fn(&LogConfig) -> String,
}

fn parse_range(value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!("must be a whole number from {min} to {max}")),
    }
}

/// A limit that may be -1 (none): `None` for -1, else a whole number from 0.
fn parse_limit(value: &str) -> Result<Option<u64>, String> {
    match value.trim() {
        "-1" => Ok(None),
        v => v.parse::<u64>().map(Some).map_err(|_| "must be -1 (no limit) or a whole number from 0".to_string()),
    }
}

/// `delete`, `compact` or both (comma-separated, any order): (delete, compact).
fn parse_cleanup(value: &str) -> Result<(bool, bool), String> {
    let mut policy = (false, false);
    for part in value.split(',').map(str::trim) {
        match part {
            "delete" => policy.0 = true,
            "compact" => policy.1 = true,
            _ => return Err("must be delete, compact or delete,compact".to_string()),
        }
    }
    Ok(policy)
}

/// The topic configs the node implements today. Keys for features that do not exist yet
/// (retention, compaction, replication) are refused rather than silently ignored.
const CONFIG_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "segment.bytes",
        doc: "roll to a new segment file past this size",
        check: |v| parse_range(v, 4096, i32::MAX as u64).map(|_| ()),
        apply: |v, c| c.segment_bytes = v.trim().parse().unwrap_or(c.segment_bytes),
        default: |c| c.segment_bytes.to_string(),
    },
    ConfigKey {
        name: "segment.ms",
        doc: "roll to a new segment file when the active one is this old",
        check: |v| parse_range(v, 1, i64::MAX as u64).map(|_| ()),
        apply: |v, c| c.segment_ms = v.trim().parse().unwrap_or(c.segment_ms),
        default: |c| c.segment_ms.to_string(),
    },
    ConfigKey {
        name: "max.message.bytes",
        doc: "the largest record batch accepted",
        check: |v| parse_range(v, 61, crate::storage::config::BATCH_BYTES_LIMIT).map(|_| ()),
        apply: |v, c| c.batch_bytes_max = v.trim().parse().unwrap_or(c.batch_bytes_max),
        default: |c| c.batch_bytes_max.to_string(),
    },
    ConfigKey {
        name: "index.interval.bytes",
        doc: "bytes of batches between two sparse index entries",
        check: |v| parse_range(v, 1, i32::MAX as u64).map(|_| ()),
        apply: |v, c| c.index_interval_bytes = v.trim().parse().unwrap_or(c.index_interval_bytes),
        default: |c| c.index_interval_bytes.to_string(),
    },
    ConfigKey {
        name: "retention.ms",
        doc: "delete closed segments whose newest record is older than this; -1 keeps forever",
        check: |v| parse_limit(v).map(|_| ()),
        apply: |v, c| c.retention_ms = parse_limit(v).unwrap_or(c.retention_ms),
        default: |c| c.retention_ms.map_or("-1".to_string(), |v| v.to_string()),
    },
    ConfigKey {
        name: "retention.bytes",
        doc: "delete the oldest closed segments while a partition is larger; -1 is no limit",
        check: |v| parse_limit(v).map(|_| ()),
        apply: |v, c| c.retention_bytes = parse_limit(v).unwrap_or(c.retention_bytes),
        default: |c| c.retention_bytes.map_or("-1".to_string(), |v| v.to_string()),
    },
    ConfigKey {
        name: "message.timestamp.type",
        doc: "CreateTime (the producer's) or LogAppendTime (the node's clock at append)",
        check: |v| match v {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err("must be CreateTime or LogAppendTime".to_string()),
        },
        apply: |v, c| {
            c.timestamp_type = if v == "LogAppendTime" {
                sluice_schemas::batch::TimestampType::LogAppendTime
            } else {
                sluice_schemas::batch::TimestampType::CreateTime
            }
        },
        default: |c| match c.timestamp_type {
            sluice_schemas::batch::TimestampType::LogAppendTime => "LogAppendTime".to_string(),
            sluice_schemas::batch::TimestampType::CreateTime => "CreateTime".to_string(),
        },
    },
    ConfigKey {
        name: "cleanup.policy",
        doc: "delete (retention), compact (latest value per key) or delete,compact",
        check: |v| parse_cleanup(v).map(|_| ()),
        apply: |v, c| {
            if let Ok((delete, compact)) = parse_cleanup(v) {
                c.cleanup_delete = delete;
                c.cleanup_compact = compact;
            }
        },
        default: |c| match (c.cleanup_delete, c.cleanup_compact) {
            (true, true) => "delete,compact".to_string(),
            (false, true) => "compact".to_string(),
            _ => "delete".to_string(),
        },
    },
    ConfigKey {
        name: "min.compaction.lag.ms",
        doc: "segments younger than this are not compacted",
        check: |v| parse_range(v, 0, i64::MAX as u64).map(|_| ()),
        apply: |v, c| c.min_compaction_lag_ms = v.trim().parse().unwrap_or(c.min_compaction_lag_ms),
        default: |c| c.min_compaction_lag_ms.to_string(),
    },
    ConfigKey {
        name: "delete.retention.ms",
        doc: "how long compaction keeps tombstones (null values) after their batch",
        check: |v| parse_range(v, 0, i64::MAX as u64).map(|_| ()),
        apply: |v, c| c.delete_retention_ms = v.trim().parse().unwrap_or(c.delete_retention_ms),
        default: |c| c.delete_retention_ms.to_string(),
    },
    ConfigKey {
        name: "min.insync.replicas",
        doc: "acks=all needs this many in-sync replicas (a single node has 1)",
        check: |v| parse_range(v, 1, 32).map(|_| ()),
        apply: |v, c| c.min_insync_replicas = v.trim().parse().unwrap_or(c.min_insync_replicas),
        default: |c| c.min_insync_replicas.to_string(),
    },
    ConfigKey {
        name: "unclean.leader.election.enable",
        doc: "in a cluster, elect a replica outside the ISR when no ISR member is left (may lose acknowledged records)",
        check: |v| match v {
            "true" | "false" => Ok(()),
            _ => Err("must be true or false".to_string()),
        },
        apply: |v, c| c.unclean_leader_election = v == "true",
        default: |c| c.unclean_leader_election.to_string(),
    },
    ConfigKey {
        name: "fsync.policy",
        doc: "always, never or interval:N (milliseconds): when appends are fdatasync'd",
        check: |v| v.parse::<FsyncPolicy>().map(|_| ()),
        apply: |v, c| c.fsync = v.parse().unwrap_or(c.fsync),
        default: |c| c.fsync.to_string(),
    },
];

/// The config keys a topic accepts, with a line of documentation each.
pub fn config_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    CONFIG_KEYS.iter().map(|k| (k.name, k.doc))
}

/// Checks one key and value; the message names the key, the value and what is allowed.
pub fn validate_config(key: &str, value: &str) -> Result<(), TopicError> {
    let Some(k) = CONFIG_KEYS.iter().find(|k| k.name == key) else {
        let known: Vec<&str> = CONFIG_KEYS.iter().map(|k| k.name).collect();
        return Err(TopicError::InvalidConfig(format!(
            "unknown topic config {key:?}; known keys: {}",
            known.join(", ")
        )));
    };
    (k.check)(value).map_err(|why| TopicError::InvalidConfig(format!("{key} = {value:?}: {why}")))
}

/// A topic's id: the UUID Kafka's Metadata (v10+) and Fetch (v13+) name topics by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub [u8; 16]);

impl TopicId {
    /// No id (Kafka's zero UUID): a topic only being checked, or read from the topics
    /// file a single node kept before it was a cluster of one.
    pub const NONE: TopicId = TopicId([0; 16]);

    /// The id of the topic `name` whose first partition has the cluster-wide number
    /// `first_partition`. The controller gives each partition its number once and never
    /// again (its counter is in the replicated state and its snapshots), so every node
    /// derives the same id from the state it applied, the id survives restarts, and a
    /// topic deleted and created again under the same name gets a new one, as Kafka's
    /// ids do. FNV-1a (128 bits) of both, marked as a UUID of version 8 (so it is never
    /// zero, nor Kafka's reserved id 1).
    #[must_use]
    pub fn derive(name: &str, first_partition: u32) -> TopicId {
        const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
        let mut hash = OFFSET_BASIS;
        for byte in name.as_bytes().iter().chain(&[0xff]).chain(&first_partition.to_be_bytes()) {
            hash ^= u128::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
        let mut bytes = hash.to_be_bytes();
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        TopicId(bytes)
    }
}

/// A topic as the node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub id: TopicId,
    pub partitions: u32,
    /// Only the configs set on the topic; the rest come from the node's defaults.
    pub configs: BTreeMap<String, String>,
}

impl Topic {
    /// The log settings of this topic's partitions: the node defaults with the topic's
    /// own configs applied.
    #[must_use]
    pub fn log_config(&self, defaults: &LogConfig) -> LogConfig {
        let mut config = defaults.clone();
        for (key, value) in &self.configs {
            if let Some(k) = CONFIG_KEYS.iter().find(|k| k.name == key) {
                (k.apply)(value, &mut config);
            }
        }
        config
    }

    /// Every config with its effective value, and whether it is the node default.
    #[must_use]
    pub fn effective_configs(&self, defaults: &LogConfig) -> Vec<(String, String, bool)> {
        CONFIG_KEYS
            .iter()
            .map(|k| match self.configs.get(k.name) {
                Some(v) => (k.name.to_string(), v.clone(), false),
                None => (k.name.to_string(), (k.default)(defaults), true),
            })
            .collect()
    }
}

/// All topics of the node. Changes go through the methods, which keep the guarantees in
/// the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    topics: BTreeMap<String, Topic>,
    /// Topic names by id (topics without one are not in it).
    ids: HashMap<TopicId, String>,
    /// In a cluster, the nodes that may hold replicas now (a single node: `None`, one).
    live_nodes: Option<u32>,
}

impl Metadata {
    #[must_use]
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    /// The topic with this id.
    #[must_use]
    pub fn topic_by_id(&self, id: TopicId) -> Option<&Topic> {
        self.ids.get(&id).and_then(|name| self.topics.get(name))
    }

    /// Metadata a cluster's controller state holds (already checked when it was made),
    /// with the number of live nodes new topics may be placed on.
    #[must_use]
    pub fn of_cluster(topics: impl IntoIterator<Item = Topic>, live_nodes: u32) -> Metadata {
        let topics: BTreeMap<String, Topic> = topics.into_iter().map(|t| (t.name.clone(), t)).collect();
        let ids = topics.values().filter(|t| t.id != TopicId::NONE).map(|t| (t.id, t.name.clone())).collect();
        Metadata { topics, ids, live_nodes: Some(live_nodes) }
    }

    /// Checks a new topic without adding it.
    pub fn check_create(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        validate_topic_name(name)?;
        if self.topics.contains_key(name) {
            return Err(TopicError::AlreadyExists(name.to_string()));
        }
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err(TopicError::InvalidPartitions(format!(
                "topic {name:?}: {partitions} partitions is out of range (1 to {PARTITIONS_MAX})"
            )));
        }
        let live = self.live_nodes.unwrap_or(1);
        if replication_factor == 0 || u32::from(replication_factor) > live {
            return Err(TopicError::InvalidReplicationFactor(format!(
                "topic {name:?}: replication factor {replication_factor} is {} the {live} live node{}",
                if replication_factor == 0 { "below 1; it must be 1 to" } else { "more than" },
                if live == 1 { "" } else { "s" }
            )));
        }
        for (key, value) in configs {
            validate_config(key, value)?;
        }
        Ok(())
    }

    pub fn create(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: BTreeMap<String, String>,
    ) -> Result<&Topic, TopicError> {
        self.check_create(name, partitions, replication_factor, &configs)?;
        let topic = Topic { name: name.to_string(), id: TopicId::NONE, partitions, configs };
        Ok(self.topics.entry(name.to_string()).or_insert(topic))
    }

    pub fn delete(&mut self, name: &str) -> Result<Topic, TopicError> {
        self.topics.remove(name).ok_or_else(|| TopicError::Unknown(name.to_string()))
    }

    /// Checks growing a topic to `count` partitions without doing it.
    pub fn check_partitions(&self, name: &str, count: u32) -> Result<(), TopicError> {
        let topic = self.topics.get(name).ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        if count < topic.partitions {
            return Err(TopicError::InvalidPartitions(format!(
                "topic {name:?} has {} partitions; partitions can only be added, never removed \
                 (removing one would lose its records and remap keys)",
                topic.partitions
            )));
        }
        if count == topic.partitions {
            return Err(TopicError::InvalidPartitions(format!("topic {name:?} already has {count} partitions")));
        }
        if count > PARTITIONS_MAX {
            return Err(TopicError::InvalidPartitions(format!(
                "topic {name:?}: {count} partitions is more than the limit of {PARTITIONS_MAX}"
            )));
        }
        Ok(())
    }

    pub fn set_partitions(&mut self, name: &str, count: u32) -> Result<&Topic, TopicError> {
        self.check_partitions(name, count)?;
        let topic = self.topics.get_mut(name).ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        topic.partitions = count;
        Ok(topic)
    }

    /// Checks an incremental config change without applying it.
    pub fn check_alter(&self, name: &str, set: &[(String, String)], delete: &[String]) -> Result<(), TopicError> {
        if !self.topics.contains_key(name) {
            return Err(TopicError::Unknown(name.to_string()));
        }
        for (key, value) in set {
            validate_config(key, value)?;
        }
        for key in delete {
            if !CONFIG_KEYS.iter().any(|k| k.name == key) {
                return Err(TopicError::InvalidConfig(format!("unknown topic config {key:?}")));
            }
        }
        Ok(())
    }

    pub fn alter(&mut self, name: &str, set: &[(String, String)], delete: &[String]) -> Result<&Topic, TopicError> {
        self.check_alter(name, set, delete)?;
        let topic = self.topics.get_mut(name).ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        for key in delete {
            topic.configs.remove(key);
        }
        for (key, value) in set {
            topic.configs.insert(key.clone(), value.clone());
        }
        Ok(topic)
    }

    /// Reads the topics file a single node kept before it was a cluster of one
    /// (`metadata.toml`, migrated at the first start), checking every topic as `create`
    /// would.
    pub fn decode(text: &str) -> Result<Metadata, String> {
        let root: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
        let mut metadata = Metadata::default();
        let Some(topics) = root.get("topics") else { return Ok(metadata) };
        let topics = topics.as_table().ok_or("`topics` is not a table")?;
        for (name, t) in topics {
            let t = t.as_table().ok_or_else(|| format!("topic {name:?} is not a table"))?;
            let partitions = t
                .get("partitions")
                .and_then(toml::Value::as_integer)
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| format!("topic {name:?} has no valid partition count"))?;
            let mut configs = BTreeMap::new();
            if let Some(c) = t.get("configs").and_then(toml::Value::as_table) {
                for (k, v) in c {
                    let v = v.as_str().ok_or_else(|| format!("topic {name:?} config {k:?} is not a string"))?;
                    configs.insert(k.clone(), v.to_string());
                }
            }
            metadata.create(name, partitions, 1, configs).map_err(|e| format!("topic {name:?}: {e}"))?;
        }
        Ok(metadata)
    }
}

/// Whether `name` is an internal topic (consumer group offsets, transaction states):
/// only their coordinators write to them, and they are not deleted or given partitions.
#[must_use]
pub fn is_internal(name: &str) -> bool {
    name == crate::groups::OFFSETS_TOPIC || name == crate::txn::TXN_TOPIC
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        for good in ["orders", "a.b_c-D9", &"x".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "with space", "slash/no", &"x".repeat(250), "ünï"] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn partitions_only_grow_and_the_error_says_why() {
        let mut m = Metadata::default();
        m.create("t", 3, 1, BTreeMap::new()).unwrap();
        let e = m.set_partitions("t", 2).unwrap_err().to_string();
        assert!(e.contains("can only be added, never removed"), "{e}");
        assert!(m.set_partitions("t", 3).is_err());
        assert_eq!(m.set_partitions("t", 5).unwrap().partitions, 5);
        assert!(matches!(m.set_partitions("nope", 5), Err(TopicError::Unknown(_))));
    }

    #[test]
    fn configs_are_checked_by_key_value_and_range() {
        let mut m = Metadata::default();
        let bad = BTreeMap::from([("segment.bytes".to_string(), "12".to_string())]);
        let e = m.create("t", 1, 1, bad).unwrap_err().to_string();
        assert!(e.contains("segment.bytes") && e.contains("\"12\"") && e.contains("4096"), "{e}");
        let unknown = BTreeMap::from([("retention.mss".to_string(), "1".to_string())]);
        assert!(m.create("t", 1, 1, unknown).unwrap_err().to_string().contains("unknown topic config"));
        m.create("t", 1, 1, BTreeMap::from([("fsync.policy".into(), "never".into())])).unwrap();
        let topic = m.alter("t", &[("segment.bytes".into(), "8192".into())], &["fsync.policy".into()]).unwrap();
        let config = topic.log_config(&LogConfig::default());
        assert_eq!(config.segment_bytes, 8192);
        assert_eq!(config.fsync, LogConfig::default().fsync);
        let effective = topic.effective_configs(&LogConfig::default());
        assert!(effective.contains(&("segment.bytes".into(), "8192".into(), false)));
        assert!(effective.iter().any(|(k, _, default)| k == "fsync.policy" && *default));
        assert!(m.create("u", 1, 3, BTreeMap::new()).unwrap_err().to_string().contains("replication factor 3"));
    }

    #[test]
    fn a_single_nodes_old_topics_file_reads_back() {
        let text = "# Sluice topic metadata. Written by the node; do not edit while it runs.\n\
                    [topics.a]\npartitions = 3\n[topics.a.configs]\n\"segment.ms\" = \"1000\"\n\
                    [topics.\"b.c\"]\npartitions = 1\n[topics.\"b.c\".configs]\n";
        let mut m = Metadata::default();
        m.create("a", 3, 1, BTreeMap::from([("segment.ms".into(), "1000".into())])).unwrap();
        m.create("b.c", 1, 1, BTreeMap::new()).unwrap();
        assert_eq!(Metadata::decode(text).unwrap(), m);
        assert!(Metadata::decode("topics = 3").is_err());
        assert!(Metadata::decode("[topics.x]\npartitions = 0").is_err());
    }
}
