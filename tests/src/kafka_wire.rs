//! Raw Kafka requests on a plain socket, built with the kafka-protocol crate (the client
//! side of Kafka's message definitions): for tests that drive the Kafka listener byte by
//! byte (`tests/kafka_wire.rs`, and the cluster tests of Kafka APIs no client here speaks).
//! Every read and write is bounded by `TIMEOUT`; a failure panics the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_schemas::batch::Attributes;
use sluice_schemas::records::{BatchBuilder, BatchConfig};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

pub fn send_raw(stream: &mut TcpStream, bytes: &[u8]) {
    let mut frame = (bytes.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).unwrap();
}

/// Encodes a request (header and body) of `key` at `version`.
pub fn request(key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("kafka-wire-test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

/// Reads one response; `None` when the node closed the connection.
pub fn receive(stream: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

pub fn response<T: Decodable>(key: ApiKey, version: i16, correlation_id: i32, mut bytes: Bytes) -> T {
    let header = ResponseHeader::decode(&mut bytes, key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    let body = T::decode(&mut bytes, version).unwrap();
    assert_eq!(bytes.remaining(), 0, "{key:?} v{version}: trailing bytes");
    body
}

/// One connection's requests with increasing correlation ids.
pub struct Wire {
    pub stream: TcpStream,
    pub correlation_id: i32,
}

impl Wire {
    /// A new connection to a Kafka listener.
    #[must_use]
    pub fn connect(addr: SocketAddr) -> Wire {
        Wire { stream: connect(addr), correlation_id: 0 }
    }

    /// Sends `body` (the crate's type) at `version` and decodes the answer at `version`.
    pub fn call<R: Decodable>(&mut self, key: ApiKey, version: i16, body: &impl Encodable) -> R {
        self.call_as(key, version, version, body)
    }

    /// Sends `body` encoded in the layout of `layout` under the header of `version` (an
    /// old version whose layout a later one kept), and decodes the answer as `layout`.
    pub fn call_as<R: Decodable>(&mut self, key: ApiKey, version: i16, layout: i16, body: &impl Encodable) -> R {
        let mut buf = BytesMut::new();
        body.encode(&mut buf, layout).unwrap();
        let mut bytes = self.call_raw(key, version, &buf);
        let r = R::decode(&mut bytes, layout).unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
        assert_eq!(bytes.remaining(), 0, "{key:?} v{version}: trailing bytes");
        r
    }

    /// Sends a body encoded by hand; returns the answer's body.
    pub fn call_raw(&mut self, key: ApiKey, version: i16, body: &[u8]) -> Bytes {
        self.correlation_id += 1;
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("kafka-wire-test")))
            .encode(&mut frame, key.request_header_version(version))
            .unwrap();
        frame.extend_from_slice(body);
        send_raw(&mut self.stream, &frame);
        let mut bytes = receive(&mut self.stream).unwrap_or_else(|| panic!("{key:?} v{version}: connection closed"));
        let header = ResponseHeader::decode(&mut bytes, key.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id, "{key:?} v{version}");
        bytes
    }
}

/// InitProducerId for a new producer of transactional id `id` (timeout `timeout_ms`).
#[must_use]
pub fn init_transactional(id: &str, timeout_ms: i32) -> kafka_protocol::messages::InitProducerIdRequest {
    use kafka_protocol::messages::{InitProducerIdRequest, ProducerId, TransactionalId};
    InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.to_string()))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

/// EndTxn of producer `pid` at `epoch` for transactional id `id`: commit or abort.
#[must_use]
pub fn end_txn(
    id: &kafka_protocol::messages::TransactionalId,
    pid: kafka_protocol::messages::ProducerId,
    epoch: i16,
    committed: bool,
) -> kafka_protocol::messages::EndTxnRequest {
    kafka_protocol::messages::EndTxnRequest::default()
        .with_transactional_id(id.clone())
        .with_producer_id(pid)
        .with_producer_epoch(epoch)
        .with_committed(committed)
}

impl Wire {
    /// Asks DescribeTransactions until `id`'s transaction is in `state` (panics after
    /// `within`); returns that answer's state.
    pub fn wait_for_transaction_state(
        &mut self,
        id: &kafka_protocol::messages::TransactionalId,
        state: &str,
        within: Duration,
    ) -> kafka_protocol::messages::describe_transactions_response::TransactionState {
        use kafka_protocol::messages::{DescribeTransactionsRequest, DescribeTransactionsResponse};
        let describe = DescribeTransactionsRequest::default().with_transactional_ids(vec![id.clone()]);
        let deadline = std::time::Instant::now() + within;
        loop {
            let r: DescribeTransactionsResponse = self.call(ApiKey::DescribeTransactions, 0, &describe);
            if r.transaction_states[0].transaction_state.as_str() == state {
                return r.transaction_states[0].clone();
            }
            assert!(std::time::Instant::now() < deadline, "{:?} did not reach {state}: {r:?}", id.0);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A transactional batch of producer `pid` at `epoch`, from sequence `sequence`.
#[must_use]
pub fn txn_batch(pid: i64, epoch: i16, sequence: i32, values: &[&[u8]]) -> Bytes {
    let config = BatchConfig {
        producer_id: Some(sluice_schemas::ProducerId(pid as u64)),
        producer_epoch: epoch,
        base_sequence: sequence,
        attributes: Attributes(Attributes::TRANSACTIONAL_BIT),
        ..BatchConfig::default()
    };
    let mut builder = BatchBuilder::new(config).unwrap();
    for v in values {
        builder.push(Some(b"k"), Some(v), &[], 1_700_000_000_000).unwrap();
    }
    Bytes::from(builder.finish().unwrap())
}
