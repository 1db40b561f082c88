//! Kafka's Fetch response (v4 to v17), written so that record bytes are not copied: the
//! fields go into small owned pieces and each partition's stored batches follow as the
//! log's own buffers (`Payload::Shared`). The layout is Kafka's FetchResponse.json; the
//! test decodes our output with the kafka-protocol crate for every version served.

use crate::listener::{Payload, ResponseFrame};
use crate::topics::TopicId;

/// Fetch v12 is the first flexible version (compact strings and arrays, tagged fields).
const FLEXIBLE_FROM: i16 = 12;
/// From Fetch v13 topics are named by id. (v14 to v17 change only the request, and add
/// tagged fields to the response that a leader without them leaves out.)
const TOPIC_IDS_FROM: i16 = 13;

pub struct FetchedTopic {
    /// Named by its name up to v12 and by its id from v13.
    pub name: String,
    pub id: TopicId,
    pub partitions: Vec<FetchedPartition>,
}

pub struct FetchedPartition {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// read_committed: aborted transactions (producer id, first offset) that may have
    /// records among these batches; clients skip their records.
    pub aborted: Vec<(i64, i64)>,
    /// Whole stored batches, as the log holds them.
    pub records: Vec<Payload>,
    pub records_bytes: u64,
    /// The replica the consumer should read from instead (KIP-392; -1: this one).
    pub preferred_read_replica: i32,
}

/// Builds the pieces of a response: owned field bytes between shared record bytes.
struct Pieces {
    flexible: bool,
    pieces: Vec<Payload>,
    current: Vec<u8>,
}

impl Pieces {
    fn i16(&mut self, v: i16) {
        self.current.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.current.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.current.extend_from_slice(&v.to_be_bytes());
    }
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.current.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.current.push(v as u8);
    }
    /// An array's length (or a nullable array's null, `None`).
    fn array(&mut self, len: Option<usize>) {
        match (self.flexible, len) {
            (true, Some(n)) => self.varint(n as u64 + 1),
            (true, None) => self.varint(0),
            (false, Some(n)) => self.i32(i32::try_from(n).unwrap_or(i32::MAX)),
            (false, None) => self.i32(-1),
        }
    }
    fn string(&mut self, s: &str) {
        if self.flexible {
            self.varint(s.len() as u64 + 1);
        } else {
            self.i16(i16::try_from(s.len()).unwrap_or(i16::MAX));
        }
        self.current.extend_from_slice(s.as_bytes());
    }
    /// Records: the length, then the stored buffers as they are.
    fn records(&mut self, bytes: u64, records: Vec<Payload>) {
        if self.flexible {
            self.varint(bytes + 1);
        } else {
            self.i32(i32::try_from(bytes).unwrap_or(i32::MAX));
        }
        if !records.is_empty() {
            self.pieces.push(Payload::Owned(std::mem::take(&mut self.current)));
            self.pieces.extend(records);
        }
    }
    fn tags(&mut self) {
        if self.flexible {
            self.varint(0);
        }
    }
    fn finish(mut self) -> ResponseFrame {
        if !self.current.is_empty() {
            self.pieces.push(Payload::Owned(self.current));
        }
        let size: usize = self.pieces.iter().map(|p| p.bytes().len()).sum();
        let mut pieces = self.pieces.into_iter();
        let mut head = u32::try_from(size).unwrap_or(u32::MAX).to_be_bytes().to_vec();
        let rest: Vec<Payload> = match pieces.next() {
            Some(Payload::Owned(first)) => {
                head.extend_from_slice(&first);
                pieces.collect()
            }
            Some(first) => std::iter::once(first).chain(pieces).collect(),
            None => Vec::new(),
        };
        ResponseFrame::new(head, rest)
    }
}

/// The response to a Fetch of `version` (4 to 17); v7+ carry the top-level error and the
/// fetch session's id (0: none).
pub fn encode(
    correlation_id: i32,
    version: i16,
    error_code: i16,
    session_id: i32,
    topics: Vec<FetchedTopic>,
) -> ResponseFrame {
    let flexible = version >= FLEXIBLE_FROM;
    let mut w = Pieces { flexible, pieces: Vec::new(), current: Vec::with_capacity(256) };
    w.i32(correlation_id);
    w.tags(); // response header v1
    w.i32(0); // throttle_time_ms
    if version >= 7 {
        w.i16(error_code);
        w.i32(session_id);
    }
    w.array(Some(topics.len()));
    for topic in topics {
        if version >= TOPIC_IDS_FROM {
            w.current.extend_from_slice(&topic.id.0);
        } else {
            w.string(&topic.name);
        }
        w.array(Some(topic.partitions.len()));
        for p in topic.partitions {
            w.i32(p.partition);
            w.i16(p.error_code);
            w.i64(p.high_watermark);
            w.i64(p.last_stable_offset);
            if version >= 5 {
                w.i64(p.log_start_offset);
            }
            w.array(Some(p.aborted.len()));
            for (producer_id, first_offset) in &p.aborted {
                w.i64(*producer_id);
                w.i64(*first_offset);
                w.tags();
            }
            if version >= 11 {
                w.i32(p.preferred_read_replica);
            }
            w.records(p.records_bytes, p.records);
            w.tags();
        }
        w.tags();
    }
    w.tags();
    w.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::{Buf, Bytes};
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    fn flatten(frame: &ResponseFrame) -> Vec<u8> {
        let mut out = frame.head().to_vec();
        for p in frame.payload() {
            out.extend_from_slice(p.bytes());
        }
        out
    }

    #[test]
    fn the_crate_decodes_our_fetch_responses_at_every_version() {
        let id = TopicId::derive("orders", 7);
        for version in 4..=17 {
            let topics = vec![
                FetchedTopic {
                    name: "orders".into(),
                    id,
                    partitions: vec![
                        FetchedPartition {
                            partition: 0,
                            error_code: 0,
                            high_watermark: 10,
                            last_stable_offset: 8,
                            log_start_offset: 2,
                            aborted: vec![(4001, 3), (4002, 6)],
                            records: vec![Payload::Owned(vec![1, 2, 3]), Payload::Owned(vec![4, 5])],
                            records_bytes: 5,
                            preferred_read_replica: -1,
                        },
                        FetchedPartition {
                            partition: 3,
                            error_code: 1,
                            high_watermark: -1,
                            last_stable_offset: -1,
                            log_start_offset: -1,
                            aborted: Vec::new(),
                            records: Vec::new(),
                            records_bytes: 0,
                            preferred_read_replica: 4,
                        },
                    ],
                },
                FetchedTopic { name: "empty".into(), id: TopicId::derive("empty", 9), partitions: Vec::new() },
            ];
            let bytes = flatten(&encode(77, version, 0, 0, topics));
            let mut buf = Bytes::from(bytes);
            let size = buf.get_u32() as usize;
            assert_eq!(size, buf.len(), "v{version}: the size prefix");
            let header_version = if version >= 12 { 1 } else { 0 };
            let header = ResponseHeader::decode(&mut buf, header_version).unwrap();
            assert_eq!(header.correlation_id, 77);
            let response = FetchResponse::decode(&mut buf, version).unwrap();
            assert_eq!(buf.remaining(), 0, "v{version}: trailing bytes");
            assert_eq!(response.responses.len(), 2);
            let orders = &response.responses[0];
            if version >= 13 {
                assert_eq!(orders.topic_id.as_bytes(), &id.0);
            } else {
                assert_eq!(orders.topic.0.as_str(), "orders");
            }
            let p0 = &orders.partitions[0];
            assert_eq!((p0.partition_index, p0.error_code, p0.high_watermark), (0, 0, 10));
            assert_eq!(p0.last_stable_offset, 8);
            let aborted: Vec<(i64, i64)> =
                p0.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset)).collect();
            assert_eq!(aborted, vec![(4001, 3), (4002, 6)], "v{version}: aborted transactions");
            if version >= 5 {
                assert_eq!(p0.log_start_offset, 2);
            }
            assert_eq!(p0.records.as_deref(), Some(&[1u8, 2, 3, 4, 5][..]));
            let p3 = &orders.partitions[1];
            assert_eq!((p3.partition_index, p3.error_code), (3, 1));
            if version >= 11 {
                assert_eq!((p0.preferred_read_replica.0, p3.preferred_read_replica.0), (-1, 4), "v{version}");
            }
            assert_eq!(p3.records.as_deref().map(<[u8]>::len), Some(0));
            assert!(response.responses[1].partitions.is_empty());
        }
    }
}
