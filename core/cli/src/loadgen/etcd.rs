//! The etcd side of `berth loadgen --etcd`: the same writers, each write an
//! etcd v3 `KV/Put`, so Berth and etcd are compared through one client.
//!
//! Only the two messages a put needs are declared here (field numbers from
//! etcd's `rpc.proto`); everything else in a response is skipped by prost
//! as unknown fields.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// etcd members, the first one used until it fails, then the next.
pub struct Members {
    channels: Vec<Channel>,
    timeout: Duration,
    current: AtomicUsize,
}

impl Members {
    /// Parses a comma-separated list of member URLs (connected lazily);
    /// a put that takes longer than `timeout` fails, and the next goes to
    /// the next member.
    pub fn parse(list: &str, timeout: Duration) -> Result<Members, String> {
        let channels = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                Endpoint::from_shared(u.to_string())
                    .map(|e| e.timeout(timeout).connect_lazy())
                    .map_err(|e| format!("{u:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if channels.is_empty() {
            return Err(format!("{list:?}: no etcd member"));
        }
        Ok(Members {
            channels,
            timeout,
            current: AtomicUsize::new(0),
        })
    }

    /// Puts `key`; on failure the next write goes to the next member
    /// (etcd forwards a follower's proposals to the leader).
    pub async fn put(&self, key: String, value: String) -> Result<(), Status> {
        let i = self.current.load(Ordering::Relaxed);
        let ch = self.channels[i % self.channels.len()].clone();
        let r = put(ch, key, value, self.timeout).await;
        if r.is_err() {
            let _ = self.current.compare_exchange(
                i,
                (i + 1) % self.channels.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        r
    }
}

/// `etcdserverpb.PutRequest`: key and value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    /// The key to write.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Its value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `etcdserverpb.PutResponse`; its fields are not needed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {}

/// One put, acknowledged by etcd once committed by a quorum and applied.
async fn put(ch: Channel, key: String, value: String, timeout: Duration) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<PutRequest, PutResponse>::default();
    let req = PutRequest {
        key: key.into_bytes(),
        value: value.into_bytes(),
    };
    // Like etcdctl's --command-timeout: a put stranded on a member that
    // lost its leader fails and moves on instead of waiting out etcd's
    // own request timeout (7 s).
    let mut req = Request::new(req);
    req.set_timeout(timeout);
    grpc.unary(
        req,
        PathAndQuery::from_static("/etcdserverpb.KV/Put"),
        codec,
    )
    .await
    .map(|_| ())
}
