//! Frames of Sluice's native protocol: the header that sizes them, verified reads of the
//! flatbuffers envelope, bounds-checked views of the payload, and helpers that build frames.
//!
//! A frame on the wire (integers big-endian; the layout is fixed by schemas/fbs/sluice.fbs):
//!
//! ```text
//! 0  frame_bytes u32      bytes after this field: 4 + envelope_bytes + payload bytes
//! 4  envelope_bytes u32   bytes of the flatbuffers envelope that follows
//! 8  envelope             a `Request` or `Response` table (flatbuffers, little-endian)
//! 8 + envelope_bytes      payload: raw record batches, named by `Slice`s in the envelope
//! ```
//!
//! Guarantees:
//! - `FrameHeader::parse` refuses a frame larger than the configured limit from its first
//!   8 bytes, so the reader never allocates or reads more than the limit.
//! - `parse_request` and `parse_response` run the flatbuffers verifier, with limits on
//!   depth, table count and apparent size that grow only linearly with the envelope, before
//!   any accessor is used; after they succeed every generated accessor is in bounds, and
//!   the body is present and of a type this version knows.
//! - `payload_slice` never indexes outside the payload, whatever the envelope says.
//!
//! Record bytes never pass through a flatbuffers builder: the payload is written and read
//! as it is, and the envelope only points into it.

use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, UnionWIPOffset, VerifierOptions, WIPOffset};
use thiserror::Error;

use super::{ApiKey, Request, RequestArgs, RequestBody, Response, ResponseArgs, ResponseBody, Slice};

/// Bytes of the frame header: `frame_bytes` and `envelope_bytes`, both u32.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Bytes that `frame_bytes` counts besides the envelope and the payload: the
/// `envelope_bytes` field itself, because `frame_bytes` counts everything after itself.
const ENVELOPE_BYTES_FIELD_BYTES: u32 = 4;

/// The deepest nesting of tables the verifier accepts. The schema has no recursive types
/// and its deepest path is 4 tables (Response > MetadataResponse > TopicMetadata >
/// PartitionMetadata, and likewise through ConfigEntry), so twice that leaves room for the
/// schema to grow while still stopping a forged buffer early.
pub const ENVELOPE_DEPTH_MAX: usize = 8;

/// How many times its own length the verifier may count while walking an envelope.
///
/// The verifier counts every byte it checks, and counts a shared object once per reference,
/// so a forged envelope whose offsets point many times at the same objects would make it
/// work far longer than the envelope's size suggests. A builder never shares tables, so an
/// honest envelope only re-counts vtables: per table at most 34 bytes here (soffset 4, vtable
/// length 2, a vtable of at most 16 bytes for the schema's widest table of 6 fields, and 2
/// per field looked up), against at least 4 bytes that each table occupies, plus vector
/// offsets that are counted twice. That is under 11 times the length (measured: about 3 times
/// for 20,000 PartitionMetadata tables with only their last field set); 16 leaves headroom.
pub const ENVELOPE_APPARENT_SIZE_FACTOR: usize = 16;

/// The apparent-size budget for envelopes so small that the factor above would refuse a
/// legitimate one (the fixed costs of the root table and its vtable dominate there).
const ENVELOPE_APPARENT_SIZE_MIN: usize = 4096;

/// Bytes each table occupies in a buffer at the least: its signed offset to the vtable.
/// A builder-made envelope therefore holds at most `len / 4` tables, and the verifier
/// counts a table once per visit, so a bigger count means the envelope shares tables.
const TABLE_BYTES_MIN: usize = 4;

/// Everything that can be wrong with a frame. Each message names what was wrong and the
/// sizes or limits involved, for the operator who reads it in a log.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The header announces more bytes than this side accepts; nothing after the header
    /// has been read.
    #[error("frame of {frame_bytes} bytes (after its size field) exceeds the limit of {limit} bytes")]
    FrameTooLarge { frame_bytes: u32, limit: u32 },
    /// The two sizes in the header contradict each other.
    #[error(
        "frame sizes are inconsistent: frame_bytes {frame_bytes} must be at least 4 and cover the \
         4-byte envelope size field plus envelope_bytes {envelope_bytes}"
    )]
    BadSizes { frame_bytes: u32, envelope_bytes: u32 },
    /// The bytes after the header are not as many as the header announced.
    #[error("frame body is {actual_bytes} bytes but its header announced {expected_bytes}")]
    WrongBodyLength { expected_bytes: u32, actual_bytes: usize },
    /// An envelope and payload too large for the u32 frame size (a sender's bug: it must
    /// check its frame size limit first).
    #[error(
        "a frame of {envelope_bytes} envelope bytes and {payload_bytes} payload bytes does not fit \
         the u32 frame size"
    )]
    Unencodable { envelope_bytes: usize, payload_bytes: usize },
    /// The flatbuffers verifier refused the envelope; the string says where and why.
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(String),
    /// The envelope verified but carries no body.
    #[error("envelope has no body")]
    MissingBody,
    /// The envelope verified but its body is of a type this version does not know (a newer
    /// peer). The correlation id is kept so the reply can still name the request.
    #[error("envelope with correlation id {correlation_id} has body type {body_type}, unknown to this version")]
    UnknownBody { correlation_id: u32, body_type: u8 },
    /// A `Slice` in the envelope reaches outside the frame's payload.
    #[error("slice at offset {offset} of {length} bytes reaches outside the {payload_bytes}-byte payload")]
    SliceOutOfBounds { offset: u32, length: u32, payload_bytes: usize },
}

/// The first 8 bytes of a frame, checked for consistency and against the size limit.
///
/// Headers made by `parse` always satisfy `frame_bytes >= 4` and
/// `envelope_bytes <= frame_bytes - 4`; the methods rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes after the `frame_bytes` field: the `envelope_bytes` field (4), the envelope
    /// and the payload.
    pub frame_bytes: u32,
    /// Bytes of the flatbuffers envelope.
    pub envelope_bytes: u32,
}

impl FrameHeader {
    /// Reads a header and refuses it before anything else is read when the frame exceeds
    /// `frame_bytes_max` (counted as `frame_bytes` is: everything after the first field) or
    /// when its sizes are inconsistent.
    pub fn parse(bytes: &[u8; FRAME_HEADER_BYTES], frame_bytes_max: u32) -> Result<FrameHeader, FrameError> {
        let [f0, f1, f2, f3, e0, e1, e2, e3] = *bytes;
        let frame_bytes = u32::from_be_bytes([f0, f1, f2, f3]);
        let envelope_bytes = u32::from_be_bytes([e0, e1, e2, e3]);
        // The limit comes first: it is what protects memory, and it is the more useful
        // message when a frame is both too large and inconsistent.
        if frame_bytes > frame_bytes_max {
            return Err(FrameError::FrameTooLarge { frame_bytes, limit: frame_bytes_max });
        }
        let consistent = frame_bytes
            .checked_sub(ENVELOPE_BYTES_FIELD_BYTES)
            .is_some_and(|after_envelope_field| envelope_bytes <= after_envelope_field);
        if !consistent {
            return Err(FrameError::BadSizes { frame_bytes, envelope_bytes });
        }
        Ok(FrameHeader { frame_bytes, envelope_bytes })
    }

    /// Bytes that follow the 8-byte header: envelope and payload. This is how much the
    /// reader reads next.
    ///
    /// Panics (overflow) on a header not made by `parse` whose `frame_bytes` is below 4.
    pub fn body_bytes(&self) -> u32 {
        self.frame_bytes - ENVELOPE_BYTES_FIELD_BYTES
    }

    /// Bytes of the payload that follows the envelope.
    ///
    /// Panics (overflow) on a header not made by `parse` whose sizes are inconsistent.
    pub fn payload_bytes(&self) -> u32 {
        self.frame_bytes - ENVELOPE_BYTES_FIELD_BYTES - self.envelope_bytes
    }

    /// Splits the bytes after the header into envelope and payload, refusing a body whose
    /// length is not the one the header announced.
    pub fn split<'a>(&self, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), FrameError> {
        let wrong_length =
            || FrameError::WrongBodyLength { expected_bytes: self.body_bytes(), actual_bytes: body.len() };
        if u32::try_from(body.len()).ok() != Some(self.body_bytes()) {
            return Err(wrong_length());
        }
        let envelope_bytes = usize::try_from(self.envelope_bytes).map_err(|_| wrong_length())?;
        body.split_at_checked(envelope_bytes).ok_or_else(wrong_length)
    }

    /// The header of a frame with this envelope and payload, or an error if together they
    /// do not fit the u32 `frame_bytes`.
    pub fn try_encode(envelope_bytes: usize, payload_bytes: usize) -> Result<[u8; FRAME_HEADER_BYTES], FrameError> {
        let unencodable = || FrameError::Unencodable { envelope_bytes, payload_bytes };
        let envelope = u32::try_from(envelope_bytes).map_err(|_| unencodable())?;
        let payload = u32::try_from(payload_bytes).map_err(|_| unencodable())?;
        let frame_bytes = ENVELOPE_BYTES_FIELD_BYTES
            .checked_add(envelope)
            .and_then(|sum| sum.checked_add(payload))
            .ok_or_else(unencodable)?;
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[..4].copy_from_slice(&frame_bytes.to_be_bytes());
        header[4..].copy_from_slice(&envelope.to_be_bytes());
        Ok(header)
    }

    /// The header of a frame with this envelope and payload: `frame_bytes = 4 + envelope +
    /// payload`, then `envelope_bytes`, both big-endian.
    ///
    /// Panics if the frame does not fit a u32: senders must check their frame size limit
    /// (far below 4 GiB) before building a frame, so reaching this is a bug. Use
    /// `try_encode` where the sizes are not already bounded.
    pub fn encode(envelope_bytes: usize, payload_bytes: usize) -> [u8; FRAME_HEADER_BYTES] {
        match Self::try_encode(envelope_bytes, payload_bytes) {
            Ok(header) => header,
            Err(error) => panic!("{error}"),
        }
    }
}

/// The verifier limits for an envelope of `envelope_bytes`: see the constants above for why
/// each bound is safe for honest envelopes and stops forged ones.
fn verifier_options(envelope_bytes: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: ENVELOPE_DEPTH_MAX,
        max_tables: envelope_bytes / TABLE_BYTES_MIN,
        max_apparent_size: envelope_bytes.saturating_mul(ENVELOPE_APPARENT_SIZE_FACTOR).max(ENVELOPE_APPARENT_SIZE_MIN),
        ignore_missing_null_terminator: false,
    }
}

/// The verifier's message on one line (it writes an error trace over several).
fn describe(what: &str, error: &InvalidFlatbuffer) -> String {
    let text = error.to_string();
    let lines: Vec<&str> =
        text.lines().map(|line| line.trim().trim_end_matches('.')).filter(|line| !line.is_empty()).collect();
    format!("{what}: {}", lines.join("; "))
}

/// Verifies a request envelope and returns its root table.
///
/// Refuses envelopes the verifier rejects (out-of-range offsets, bad UTF-8, unaligned
/// scalars, inconsistent unions, too deep, too many tables, too large an apparent size),
/// envelopes without a body, and bodies of a type this version does not know.
pub fn parse_request(envelope: &[u8]) -> Result<Request<'_>, FrameError> {
    let request = flatbuffers::root_with_opts::<Request>(&verifier_options(envelope.len()), envelope)
        .map_err(|error| FrameError::InvalidEnvelope(describe("request", &error)))?;
    // The verifier checks a union's table only for the variants this version knows, so the
    // type is checked before the body is touched: the offset of an unknown variant's body
    // may point anywhere.
    let body_type = request.body_type();
    if body_type == RequestBody::NONE {
        return Err(FrameError::MissingBody);
    }
    if api_key_of(body_type).is_none() {
        return Err(FrameError::UnknownBody { correlation_id: request.correlation_id(), body_type: body_type.0 });
    }
    if request.body().is_none() {
        return Err(FrameError::MissingBody);
    }
    Ok(request)
}

/// Verifies a response envelope and returns its root table; refuses what `parse_request`
/// refuses, for responses.
pub fn parse_response(envelope: &[u8]) -> Result<Response<'_>, FrameError> {
    let response = flatbuffers::root_with_opts::<Response>(&verifier_options(envelope.len()), envelope)
        .map_err(|error| FrameError::InvalidEnvelope(describe("response", &error)))?;
    let body_type = response.body_type();
    if body_type == ResponseBody::NONE {
        return Err(FrameError::MissingBody);
    }
    // `variant_name` knows exactly the variants this version was generated with.
    if body_type.variant_name().is_none() {
        return Err(FrameError::UnknownBody { correlation_id: response.correlation_id(), body_type: body_type.0 });
    }
    if response.body().is_none() {
        return Err(FrameError::MissingBody);
    }
    Ok(response)
}

/// The bytes of `payload` that `slice` names, or an error if any of them lies outside it
/// (including when `offset + length` overflows).
pub fn payload_slice<'a>(payload: &'a [u8], slice: &Slice) -> Result<&'a [u8], FrameError> {
    let (offset, length) = (slice.offset(), slice.length());
    let out_of_bounds = || FrameError::SliceOutOfBounds { offset, length, payload_bytes: payload.len() };
    let start = usize::try_from(offset).map_err(|_| out_of_bounds())?;
    let length_bytes = usize::try_from(length).map_err(|_| out_of_bounds())?;
    let end = start.checked_add(length_bytes).ok_or_else(out_of_bounds)?;
    payload.get(start..end).ok_or_else(out_of_bounds)
}

/// The API a request body belongs to; `None` for `RequestBody::NONE` and for body types
/// this version does not know.
pub fn api_key_of(body: RequestBody) -> Option<ApiKey> {
    match body {
        RequestBody::ApiVersionsRequest => Some(ApiKey::ApiVersions),
        RequestBody::MetadataRequest => Some(ApiKey::Metadata),
        RequestBody::CreateTopicsRequest => Some(ApiKey::CreateTopics),
        RequestBody::DeleteTopicsRequest => Some(ApiKey::DeleteTopics),
        RequestBody::CreatePartitionsRequest => Some(ApiKey::CreatePartitions),
        RequestBody::DescribeConfigsRequest => Some(ApiKey::DescribeConfigs),
        RequestBody::AlterConfigsRequest => Some(ApiKey::AlterConfigs),
        RequestBody::ProduceRequest => Some(ApiKey::Produce),
        RequestBody::FetchRequest => Some(ApiKey::Fetch),
        RequestBody::ListOffsetsRequest => Some(ApiKey::ListOffsets),
        RequestBody::JoinGroupRequest => Some(ApiKey::JoinGroup),
        RequestBody::HeartbeatRequest => Some(ApiKey::Heartbeat),
        RequestBody::LeaveGroupRequest => Some(ApiKey::LeaveGroup),
        RequestBody::OffsetCommitRequest => Some(ApiKey::OffsetCommit),
        RequestBody::OffsetFetchRequest => Some(ApiKey::OffsetFetch),
        RequestBody::ListGroupsRequest => Some(ApiKey::ListGroups),
        RequestBody::DescribeGroupsRequest => Some(ApiKey::DescribeGroups),
        RequestBody::DeleteGroupsRequest => Some(ApiKey::DeleteGroups),
        RequestBody::DeleteRecordsRequest => Some(ApiKey::DeleteRecords),
        RequestBody::InitProducerIdRequest => Some(ApiKey::InitProducerId),
        RequestBody::AddPartitionsToTxnRequest => Some(ApiKey::AddPartitionsToTxn),
        RequestBody::EndTxnRequest => Some(ApiKey::EndTxn),
        RequestBody::TxnOffsetCommitRequest => Some(ApiKey::TxnOffsetCommit),
        RequestBody::ListTransactionsRequest => Some(ApiKey::ListTransactions),
        RequestBody::AbortTransactionRequest => Some(ApiKey::AbortTransaction),
        RequestBody::SaslHandshakeRequest => Some(ApiKey::SaslHandshake),
        RequestBody::SaslAuthenticateRequest => Some(ApiKey::SaslAuthenticate),
        RequestBody::DescribeUsersRequest => Some(ApiKey::DescribeUsers),
        RequestBody::AlterUsersRequest => Some(ApiKey::AlterUsers),
        RequestBody::CreateAclsRequest => Some(ApiKey::CreateAcls),
        RequestBody::DescribeAclsRequest => Some(ApiKey::DescribeAcls),
        RequestBody::DeleteAclsRequest => Some(ApiKey::DeleteAcls),
        RequestBody::AlterReassignmentsRequest => Some(ApiKey::AlterReassignments),
        RequestBody::ListReassignmentsRequest => Some(ApiKey::ListReassignments),
        RequestBody::UnregisterNodeRequest => Some(ApiKey::UnregisterNode),
        RequestBody::AlterVotersRequest => Some(ApiKey::AlterVoters),
        RequestBody::DescribeQuorumRequest => Some(ApiKey::DescribeQuorum),
        _ => None,
    }
}

/// Finishes a request envelope around a body already built in `builder` and returns the
/// envelope's bytes (the builder owns them until it is reset).
///
/// `body` must be the offset of a table of the type `body_type` names; `body_type` must not
/// be `RequestBody::NONE` (a request without a body is a bug in the caller, and the peer
/// would refuse it).
pub fn finish_request<'b>(
    builder: &'b mut FlatBufferBuilder<'_>,
    correlation_id: u32,
    api_version: u16,
    client_id: Option<&str>,
    body_type: RequestBody,
    body: WIPOffset<UnionWIPOffset>,
) -> &'b [u8] {
    assert!(body_type != RequestBody::NONE, "a request needs a body type");
    let client_id = client_id.map(|id| builder.create_string(id));
    let request =
        Request::create(builder, &RequestArgs { correlation_id, api_version, client_id, body_type, body: Some(body) });
    builder.finish(request, None);
    builder.finished_data()
}

/// Finishes a response envelope around a body already built in `builder` and returns the
/// envelope's bytes; the same rules as `finish_request` apply.
pub fn finish_response<'b>(
    builder: &'b mut FlatBufferBuilder<'_>,
    correlation_id: u32,
    body_type: ResponseBody,
    body: WIPOffset<UnionWIPOffset>,
) -> &'b [u8] {
    assert!(body_type != ResponseBody::NONE, "a response needs a body type");
    let response = Response::create(builder, &ResponseArgs { correlation_id, body_type, body: Some(body) });
    builder.finish(response, None);
    builder.finished_data()
}

/// A whole frame: header, envelope, payload. It copies the payload, so it is for tests and
/// small frames; the node and client write the three parts to the socket separately.
///
/// Panics as `FrameHeader::encode` does if the frame does not fit a u32.
pub fn frame(envelope: &[u8], payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader::encode(envelope.len(), payload.len());
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + envelope.len() + payload.len());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(envelope);
    bytes.extend_from_slice(payload);
    bytes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::wire::{ErrorResponse, ErrorResponseArgs, MetadataRequest, MetadataRequestArgs};

    fn header(frame_bytes: u32, envelope_bytes: u32) -> [u8; FRAME_HEADER_BYTES] {
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        bytes[..4].copy_from_slice(&frame_bytes.to_be_bytes());
        bytes[4..].copy_from_slice(&envelope_bytes.to_be_bytes());
        bytes
    }

    #[test]
    fn header_encodes_both_sizes_big_endian_counting_the_envelope_size_field() {
        assert_eq!(FrameHeader::encode(0x0102, 0x0304), [0, 0, 0x04, 0x0A, 0, 0, 0x01, 0x02]);
        assert_eq!(FrameHeader::encode(0, 0), [0, 0, 0, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn header_round_trips_and_reports_payload_and_body_sizes() {
        let parsed = FrameHeader::parse(&FrameHeader::encode(100, 23), 1 << 20).unwrap();
        assert_eq!(parsed, FrameHeader { frame_bytes: 127, envelope_bytes: 100 });
        assert_eq!(parsed.payload_bytes(), 23);
        assert_eq!(parsed.body_bytes(), 123);
    }

    #[test]
    fn header_accepts_a_frame_exactly_at_the_limit_and_refuses_one_byte_more() {
        assert!(FrameHeader::parse(&header(1000, 10), 1000).is_ok());
        let error = FrameHeader::parse(&header(1001, 10), 1000).unwrap_err();
        assert!(matches!(error, FrameError::FrameTooLarge { frame_bytes: 1001, limit: 1000 }));
        let message = error.to_string();
        assert!(message.contains("1001") && message.contains("1000"), "{message}");
    }

    #[test]
    fn header_refuses_the_limit_before_inconsistency() {
        let error = FrameHeader::parse(&header(u32::MAX, u32::MAX), 1 << 20).unwrap_err();
        assert!(matches!(error, FrameError::FrameTooLarge { .. }), "{error}");
    }

    #[test]
    fn header_refuses_a_frame_too_short_for_its_envelope_size_field() {
        for frame_bytes in 0..4 {
            let error = FrameHeader::parse(&header(frame_bytes, 0), 1 << 20).unwrap_err();
            assert!(matches!(error, FrameError::BadSizes { .. }), "{error}");
        }
    }

    #[test]
    fn header_refuses_an_envelope_larger_than_the_frame() {
        assert!(FrameHeader::parse(&header(14, 10), 1 << 20).is_ok());
        let error = FrameHeader::parse(&header(14, 11), 1 << 20).unwrap_err();
        assert!(matches!(error, FrameError::BadSizes { frame_bytes: 14, envelope_bytes: 11 }));
        let message = error.to_string();
        assert!(message.contains("14") && message.contains("11"), "{message}");
    }

    #[test]
    fn try_encode_refuses_sizes_beyond_u32() {
        assert!(FrameHeader::try_encode(u32::MAX as usize - 4, 0).is_ok());
        assert!(matches!(FrameHeader::try_encode(u32::MAX as usize - 3, 0), Err(FrameError::Unencodable { .. })));
        assert!(matches!(FrameHeader::try_encode(1, u32::MAX as usize), Err(FrameError::Unencodable { .. })));
    }

    #[test]
    fn split_separates_envelope_and_payload_and_refuses_a_body_of_the_wrong_length() {
        let parsed = FrameHeader::parse(&FrameHeader::encode(3, 2), 1 << 20).unwrap();
        assert_eq!(parsed.split(b"envpl").unwrap(), (&b"env"[..], &b"pl"[..]));
        assert!(matches!(
            parsed.split(b"envp"),
            Err(FrameError::WrongBodyLength { expected_bytes: 5, actual_bytes: 4 })
        ));
        assert!(parsed.split(b"envpl!").is_err());
    }

    #[test]
    fn payload_slice_returns_exactly_the_named_bytes() {
        let payload = b"0123456789";
        assert_eq!(payload_slice(payload, &Slice::new(2, 3)).unwrap(), b"234");
        assert_eq!(payload_slice(payload, &Slice::new(0, 10)).unwrap(), payload);
        assert_eq!(payload_slice(payload, &Slice::new(10, 0)).unwrap(), b"");
    }

    #[test]
    fn payload_slice_refuses_ranges_outside_the_payload_including_overflowing_ones() {
        let payload = b"0123456789";
        for (offset, length) in [(0, 11), (10, 1), (11, 0), (5, 6), (u32::MAX, 1), (1, u32::MAX), (u32::MAX, u32::MAX)]
        {
            let error = payload_slice(payload, &Slice::new(offset, length)).unwrap_err();
            assert!(
                matches!(error, FrameError::SliceOutOfBounds { offset: o, length: l, payload_bytes: 10 } if o == offset && l == length),
                "{error}"
            );
        }
        assert!(payload_slice(b"", &Slice::new(0, 1)).is_err());
        assert_eq!(payload_slice(b"", &Slice::new(0, 0)).unwrap(), b"");
    }

    #[test]
    fn frame_is_header_then_envelope_then_payload() {
        let bytes = frame(b"env", b"payload");
        assert_eq!(&bytes[..FRAME_HEADER_BYTES], &FrameHeader::encode(3, 7));
        assert_eq!(&bytes[FRAME_HEADER_BYTES..], b"envpayload");
    }

    #[test]
    fn every_request_body_maps_to_its_api_and_only_those() {
        let expected = [
            (RequestBody::ApiVersionsRequest, ApiKey::ApiVersions),
            (RequestBody::MetadataRequest, ApiKey::Metadata),
            (RequestBody::CreateTopicsRequest, ApiKey::CreateTopics),
            (RequestBody::DeleteTopicsRequest, ApiKey::DeleteTopics),
            (RequestBody::CreatePartitionsRequest, ApiKey::CreatePartitions),
            (RequestBody::DescribeConfigsRequest, ApiKey::DescribeConfigs),
            (RequestBody::AlterConfigsRequest, ApiKey::AlterConfigs),
            (RequestBody::ProduceRequest, ApiKey::Produce),
            (RequestBody::FetchRequest, ApiKey::Fetch),
            (RequestBody::ListOffsetsRequest, ApiKey::ListOffsets),
            (RequestBody::JoinGroupRequest, ApiKey::JoinGroup),
            (RequestBody::HeartbeatRequest, ApiKey::Heartbeat),
            (RequestBody::LeaveGroupRequest, ApiKey::LeaveGroup),
            (RequestBody::OffsetCommitRequest, ApiKey::OffsetCommit),
            (RequestBody::OffsetFetchRequest, ApiKey::OffsetFetch),
            (RequestBody::ListGroupsRequest, ApiKey::ListGroups),
            (RequestBody::DescribeGroupsRequest, ApiKey::DescribeGroups),
            (RequestBody::DeleteGroupsRequest, ApiKey::DeleteGroups),
            (RequestBody::DeleteRecordsRequest, ApiKey::DeleteRecords),
            (RequestBody::InitProducerIdRequest, ApiKey::InitProducerId),
            (RequestBody::AddPartitionsToTxnRequest, ApiKey::AddPartitionsToTxn),
            (RequestBody::EndTxnRequest, ApiKey::EndTxn),
            (RequestBody::TxnOffsetCommitRequest, ApiKey::TxnOffsetCommit),
            (RequestBody::ListTransactionsRequest, ApiKey::ListTransactions),
            (RequestBody::AbortTransactionRequest, ApiKey::AbortTransaction),
            (RequestBody::SaslHandshakeRequest, ApiKey::SaslHandshake),
            (RequestBody::SaslAuthenticateRequest, ApiKey::SaslAuthenticate),
            (RequestBody::DescribeUsersRequest, ApiKey::DescribeUsers),
            (RequestBody::AlterUsersRequest, ApiKey::AlterUsers),
            (RequestBody::CreateAclsRequest, ApiKey::CreateAcls),
            (RequestBody::DescribeAclsRequest, ApiKey::DescribeAcls),
            (RequestBody::DeleteAclsRequest, ApiKey::DeleteAcls),
            (RequestBody::AlterReassignmentsRequest, ApiKey::AlterReassignments),
            (RequestBody::ListReassignmentsRequest, ApiKey::ListReassignments),
            (RequestBody::UnregisterNodeRequest, ApiKey::UnregisterNode),
            (RequestBody::AlterVotersRequest, ApiKey::AlterVoters),
            (RequestBody::DescribeQuorumRequest, ApiKey::DescribeQuorum),
        ];
        for (body, api) in expected {
            assert_eq!(api_key_of(body), Some(api), "{body:?}");
        }
        // Every ApiKey is reached, so a new API cannot be added to one enum and not the other.
        assert_eq!(expected.len(), ApiKey::ENUM_VALUES.len());
        assert_eq!(expected.len(), RequestBody::ENUM_VALUES.len() - 1);
        assert_eq!(api_key_of(RequestBody::NONE), None);
        assert_eq!(api_key_of(RequestBody(RequestBody::ENUM_MAX + 1)), None);
    }

    #[test]
    fn a_request_without_a_body_is_refused() {
        let mut builder = FlatBufferBuilder::new();
        let request = Request::create(&mut builder, &RequestArgs { correlation_id: 9, ..RequestArgs::default() });
        builder.finish(request, None);
        assert!(matches!(parse_request(builder.finished_data()), Err(FrameError::MissingBody)));
    }

    #[test]
    fn a_request_of_an_unknown_body_type_is_refused_with_its_correlation_id() {
        let mut builder = FlatBufferBuilder::new();
        let body = MetadataRequest::create(&mut builder, &MetadataRequestArgs::default());
        let envelope = finish_request(&mut builder, 77, 0, None, RequestBody(200), body.as_union_value());
        let error = parse_request(envelope).unwrap_err();
        assert!(matches!(error, FrameError::UnknownBody { correlation_id: 77, body_type: 200 }), "{error}");
    }

    /// Where, in `envelope`, the vtable entry of field `field` (a vtable offset) of the root
    /// table lies, and where the table is.
    fn vtable_entry(envelope: &[u8], field: flatbuffers::VOffsetT) -> (usize, usize) {
        let table = u32::from_le_bytes(envelope[..4].try_into().unwrap()) as usize;
        let back = i32::from_le_bytes(envelope[table..table + 4].try_into().unwrap());
        let vtable = table.checked_add_signed(-(back as isize)).unwrap();
        (vtable + usize::from(field), table)
    }

    /// The crafted frames of issue 19: an unknown body type whose vtable entry for the body
    /// points past the envelope (which panicked the shard: the verifier does not follow
    /// unknown union variants), or whose body offset points outside it.
    fn crafted(mut envelope: Vec<u8>, field: flatbuffers::VOffsetT) -> Vec<Vec<u8>> {
        let (entry, table) = vtable_entry(&envelope, field);
        let mut out = Vec::new();
        for past in [0xfff0u16, u16::try_from(envelope.len() - table).unwrap()] {
            let mut e = envelope.clone();
            e[entry..entry + 2].copy_from_slice(&past.to_le_bytes());
            out.push(e);
        }
        let at = table + usize::from(u16::from_le_bytes([envelope[entry], envelope[entry + 1]]));
        for target in [0x7fff_0000u32, 0xffff_fff0] {
            envelope[at..at + 4].copy_from_slice(&target.to_le_bytes());
            out.push(envelope.clone());
        }
        out
    }

    #[test]
    fn an_unknown_body_type_whose_body_lies_outside_the_envelope_is_refused_without_a_panic() {
        let mut builder = FlatBufferBuilder::new();
        let body = MetadataRequest::create(&mut builder, &MetadataRequestArgs::default());
        // One past the last type this version knows (issue 19's frame used 20, unknown then).
        let unknown = RequestBody::ENUM_MAX + 1;
        let envelope = finish_request(&mut builder, 5, 0, None, RequestBody(unknown), body.as_union_value()).to_vec();
        for envelope in crafted(envelope, Request::VT_BODY) {
            let error = parse_request(&envelope).unwrap_err();
            assert!(
                matches!(error, FrameError::UnknownBody { correlation_id: 5, body_type } if body_type == unknown),
                "{error}"
            );
        }
        let mut builder = FlatBufferBuilder::new();
        let body = ErrorResponse::create(&mut builder, &ErrorResponseArgs::default());
        let envelope = finish_response(&mut builder, 6, ResponseBody(200), body.as_union_value()).to_vec();
        for envelope in crafted(envelope, Response::VT_BODY) {
            assert!(matches!(parse_response(&envelope), Err(FrameError::UnknownBody { correlation_id: 6, .. })));
        }
    }

    /// Every single-byte change of a request envelope, to a few values that make offsets
    /// and types point elsewhere, is parsed or refused, never a panic; what parses can be
    /// read whole.
    #[test]
    fn single_byte_mutations_of_an_envelope_never_panic() {
        let mut builder = FlatBufferBuilder::new();
        let body = MetadataRequest::create(&mut builder, &MetadataRequestArgs::default());
        let envelope =
            finish_request(&mut builder, 1, 0, Some("client"), RequestBody::MetadataRequest, body.as_union_value())
                .to_vec();
        for at in 0..envelope.len() {
            for value in [0x00, 0x01, 0x14, 0x7f, 0x80, 0xff] {
                let mut mutated = envelope.clone();
                mutated[at] = value;
                if let Ok(request) = parse_request(&mutated) {
                    let _ = (request.client_id(), request.body_as_metadata_request().map(|m| m.topics()));
                }
            }
        }
    }

    #[test]
    fn a_response_of_an_unknown_body_type_is_refused_with_its_correlation_id() {
        let mut builder = FlatBufferBuilder::new();
        let body = ErrorResponse::create(&mut builder, &ErrorResponseArgs::default());
        let envelope =
            finish_response(&mut builder, 78, ResponseBody(ResponseBody::ENUM_MAX + 1), body.as_union_value());
        assert!(matches!(parse_response(envelope), Err(FrameError::UnknownBody { correlation_id: 78, .. })));
    }

    #[test]
    fn a_truncated_or_empty_envelope_is_refused_with_a_one_line_message() {
        let mut builder = FlatBufferBuilder::new();
        let body = MetadataRequest::create(&mut builder, &MetadataRequestArgs::default());
        let envelope =
            finish_request(&mut builder, 1, 0, Some("client"), RequestBody::MetadataRequest, body.as_union_value())
                .to_vec();
        for length in 0..envelope.len() {
            let error = parse_request(&envelope[..length]).unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, FrameError::InvalidEnvelope(_)), "{length}: {message}");
            assert!(!message.contains('\n'), "{message}");
            assert!(message.starts_with("invalid envelope: request: "), "{message}");
        }
        assert!(parse_request(&envelope).is_ok());
    }
}
