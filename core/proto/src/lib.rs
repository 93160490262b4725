//! Berth's gRPC contract, generated from `proto/berth.proto` with protox and
//! tonic-prost-build (no `protoc` needed).
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::all)]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("berth.v1");
}

pub use v1::*;

pub mod assignments;
pub mod inventory;
pub mod servers;
pub mod spec;
pub mod typed;

/// Whether `v` is its type's default (JSON leaves such fields out, as
/// proto3's JSON mapping does).
pub fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The largest gRPC message either side sends or accepts (both sides set
/// it: tonic's default of 4 MiB is too small for a node holding 20,000
/// tasks).
pub const MAX_MESSAGE: usize = 64 << 20;

/// The largest app spec accepted (bytes of YAML or JSON).
pub const MAX_SPEC: usize = 1 << 20;
