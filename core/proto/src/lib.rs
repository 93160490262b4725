//! Berth's gRPC contract, generated from `proto/berth.proto` with protox and
//! tonic-prost-build (no `protoc` needed).

#![allow(missing_docs, clippy::all)]

/// Version 1 of the API.
pub mod v1 {
    tonic::include_proto!("berth.v1");
}

pub use v1::*;

pub mod servers;
