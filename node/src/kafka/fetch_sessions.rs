//! Kafka's fetch sessions (KIP-227), which the Java client uses by default: after a full
//! Fetch that opens a session, a client sends only the partitions whose fetch position
//! changed (and those to forget), and the answer carries only the partitions with news:
//! records, a moved high watermark or log start, or an error. Request and response sizes
//! then follow the activity, not the number of partitions a consumer has.
//!
//! Sessions belong to the shard whose Kafka listener opened them (a client keeps its
//! connection, so its fetches come back to the same shard; one that reconnects elsewhere
//! is told FETCH_SESSION_ID_NOT_FOUND and opens a new session with a full fetch, as
//! Kafka's clients do). At most `SESSIONS_MAX` per shard: a new one evicts the least
//! recently used.
//!
//! Epochs, as Kafka numbers them: a request with session 0 and epoch 0 opens a session
//! (the answer names its id), one with epoch -1 fetches without a session; a session's
//! next request carries epoch 1, then 2, ...; epoch 0 with a session id closes it and
//! opens a new one, -1 closes it. An epoch out of turn is INVALID_FETCH_SESSION_EPOCH.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kafka_protocol::messages::FetchRequest;

use super::fetch_response::FetchedPartition;
use crate::topics::{Metadata, TopicId};

/// Sessions kept per shard (Kafka's max.incremental.fetch.session.cache.slots is 1,000 per
/// broker).
pub const SESSIONS_MAX: usize = 1_000;

/// Kafka's FETCH_SESSION_ID_NOT_FOUND and INVALID_FETCH_SESSION_EPOCH.
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

/// A partition a fetch reads: its topic's name (`None`: a v13+ request named a topic id
/// no topic has), the id, the partition, and where and how much to read.
#[derive(Clone, Debug)]
pub struct Part {
    pub name: Option<String>,
    pub id: TopicId,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: u32,
}

/// How one Fetch is answered.
#[derive(Debug)]
pub enum Plan {
    /// Refused with this top-level error.
    Refused(i16),
    /// Every part asked is answered; `session` is the id to answer with (0: none).
    Full { session: i32, parts: Vec<Part> },
    /// Every part of the session is read; only those with news are answered.
    Incremental { session: i32, parts: Vec<Part> },
}

/// What the session remembers of a partition's last answer.
#[derive(Clone, Debug)]
struct Cached {
    part: Part,
    high_watermark: i64,
    log_start_offset: i64,
}

#[derive(Debug)]
struct Session {
    /// The epoch its next request must carry.
    next_epoch: i32,
    parts: BTreeMap<Key, Cached>,
    used: Instant,
}

/// A session's partitions by topic id (v13+ requests) or by name (older ones).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Id(TopicId, i32),
    Name(String, i32),
}

#[derive(Debug, Default)]
pub struct FetchSessions {
    sessions: RefCell<HashMap<i32, Session>>,
    last_id: Cell<i32>,
}

/// The parts a Fetch request names, with names and ids resolved through `metadata`.
fn parts_of(version: i16, fetch: &FetchRequest, metadata: &Metadata) -> Vec<Part> {
    let mut parts = Vec::new();
    for topic in &fetch.topics {
        let (name, id) = if version >= 13 {
            let id = TopicId(*topic.topic_id.as_bytes());
            (metadata.topic_by_id(id).map(|t| t.name.clone()), id)
        } else {
            let name = topic.topic.0.to_string();
            let id = metadata.topic(&name).map_or(TopicId::NONE, |t| t.id);
            (Some(name), id)
        };
        for p in &topic.partitions {
            parts.push(Part {
                name: name.clone(),
                id,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: u32::try_from(p.partition_max_bytes).unwrap_or(0),
            });
        }
    }
    parts
}

fn key(version: i16, part: &Part) -> Key {
    if version >= 13 {
        Key::Id(part.id, part.partition)
    } else {
        Key::Name(part.name.clone().unwrap_or_default(), part.partition)
    }
}

impl FetchSessions {
    /// Decides how `fetch` is answered, opening, updating or closing its session.
    pub fn plan(&self, version: i16, fetch: &FetchRequest, metadata: &Metadata) -> Plan {
        let parts = parts_of(version, fetch, metadata);
        if version < 7 {
            return Plan::Full { session: 0, parts };
        }
        let mut sessions = self.sessions.borrow_mut();
        let (id, epoch) = (fetch.session_id, fetch.session_epoch);
        if id != 0 && epoch <= 0 {
            // Closed (a new one opens with epoch 0).
            sessions.remove(&id);
        }
        match epoch {
            -1 => Plan::Full { session: 0, parts },
            0 => {
                if sessions.len() >= SESSIONS_MAX {
                    let oldest = sessions.iter().min_by_key(|(_, s)| s.used).map(|(id, _)| *id);
                    if let Some(oldest) = oldest {
                        sessions.remove(&oldest);
                    }
                }
                let session = self.new_id(&sessions);
                let cached = parts
                    .iter()
                    .map(|p| (key(version, p), Cached { part: p.clone(), high_watermark: -1, log_start_offset: -1 }))
                    .collect();
                sessions.insert(session, Session { next_epoch: 1, parts: cached, used: Instant::now() });
                Plan::Full { session, parts }
            }
            _ if id == 0 => Plan::Refused(INVALID_FETCH_SESSION_EPOCH),
            _ => {
                let Some(session) = sessions.get_mut(&id) else { return Plan::Refused(FETCH_SESSION_ID_NOT_FOUND) };
                if epoch != session.next_epoch {
                    return Plan::Refused(INVALID_FETCH_SESSION_EPOCH);
                }
                session.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
                session.used = Instant::now();
                for p in parts {
                    let k = key(version, &p);
                    match session.parts.get_mut(&k) {
                        Some(c) => c.part = p,
                        None => {
                            session.parts.insert(k, Cached { part: p, high_watermark: -1, log_start_offset: -1 });
                        }
                    }
                }
                for forgotten in &fetch.forgotten_topics_data {
                    for &p in &forgotten.partitions {
                        let k = if version >= 13 {
                            Key::Id(TopicId(*forgotten.topic_id.as_bytes()), p)
                        } else {
                            Key::Name(forgotten.topic.0.to_string(), p)
                        };
                        session.parts.remove(&k);
                    }
                }
                let parts = session.parts.values().map(|c| c.part.clone()).collect();
                Plan::Incremental { session: id, parts }
            }
        }
    }

    /// After a fetch of `session`: whether the answer for `part` must carry it (always
    /// for a full fetch), remembering what it was told.
    pub fn has_news(&self, version: i16, session: i32, part: &Part, answer: &FetchedPartition) -> bool {
        let mut sessions = self.sessions.borrow_mut();
        let Some(cached) = sessions.get_mut(&session).and_then(|s| s.parts.get_mut(&key(version, part))) else {
            return true;
        };
        let moved =
            cached.high_watermark != answer.high_watermark || cached.log_start_offset != answer.log_start_offset;
        cached.high_watermark = answer.high_watermark;
        cached.log_start_offset = answer.log_start_offset;
        moved || answer.records_bytes > 0 || answer.error_code != 0
    }

    fn new_id(&self, sessions: &HashMap<i32, Session>) -> i32 {
        loop {
            // Ids start from a random point so a client's old id is unlikely to name a
            // new session after a restart.
            let next = match self.last_id.get() {
                0 => (rand_seed() & 0x3fff_ffff) as i32 + 1,
                i if i == i32::MAX => 1,
                i => i + 1,
            };
            self.last_id.set(next);
            if !sessions.contains_key(&next) {
                return next;
            }
        }
    }
}

fn rand_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}
