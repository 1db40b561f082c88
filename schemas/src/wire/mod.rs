//! Sluice's native protocol: the flatbuffers envelopes of `schemas/fbs/sluice.fbs` and the
//! frames that carry them.
//!
//! - The generated types (`Request`, `Response`, every body table, `Slice`, `ErrorCode`,
//!   `ApiKey`, the `RequestBody` and `ResponseBody` unions) are re-exported here from
//!   `sluice_generated.rs`, which flatc writes and nobody edits: see schemas/REGENERATE.md.
//! - `frame`: the 8-byte frame header, verified envelope reads, bounds-checked payload
//!   slices and the helpers that build frames.
//!
//! Guarantee: nothing in this module panics on bytes from the network. Every envelope is
//! run through the flatbuffers verifier, with limits, before any accessor touches it; the
//! generated accessors are only sound (and only panic-free) on verified buffers, so the
//! unchecked `root_as_*_unchecked` functions must not be used on received bytes.

// flatc's output is not written to this workspace's lints (it unwraps defaults that the
// verifier guarantees are there, elides lifetimes, and has unsafe calls inside unsafe fns)
// and is not ours to restyle, so lints and rustfmt leave it alone. It is committed, so a
// build never needs flatc. `unknown_lints` is allowed because compilers as old as the
// workspace's rust-version do not know every lint named here (`mismatched_lifetime_syntaxes`).
#[allow(
    unknown_lints,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used,
    clippy::expect_used,
    unused_imports,
    dead_code,
    deprecated,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_docs,
    unsafe_op_in_unsafe_fn,
    unused_lifetimes,
    mismatched_lifetime_syntaxes,
    elided_lifetimes_in_paths
)]
#[rustfmt::skip]
mod sluice_generated;

pub mod frame;

pub use frame::{
    api_key_of, finish_request, finish_response, frame, parse_request, parse_response, payload_slice, FrameError,
    FrameHeader, FRAME_HEADER_BYTES,
};
pub use sluice_generated::sluice::wire::*;
