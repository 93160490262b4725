//! `berth loadgen --read-tasks APP --via grpc|http`: the same read through
//! both surfaces of the servers, on one HTTP/2 connection of the same
//! client library (tonic's channel, TLS, the same token), each answer
//! decoded into the same message: the difference is the surface alone
//! (protobuf and gRPC framing against JSON and a REST route).

use anyhow::{anyhow, bail};
use berth_proto as pb;
use berth_proto::control_client::ControlClient;
use berth_proto::servers::Servers;
use http_body_util::BodyExt as _;
use tonic::transport::Channel;
use tower::ServiceExt as _;

/// One kind of read against one server.
pub struct Reads {
    channel: Channel,
    app: String,
    http: Option<http::Uri>,
}

impl Reads {
    /// Reads of `app`'s tasks from the first server of `servers`.
    pub fn new(servers: &Servers, app: &str, via: &str) -> anyhow::Result<Reads> {
        let http = match via {
            "grpc" => None,
            "http" => {
                let scheme = if crate::access::insecure() {
                    "http"
                } else {
                    "https"
                };
                let uri = format!("{scheme}://{}/v1/tasks?app={app}", servers.current());
                Some(uri.parse().map_err(|e| anyhow!("--read-tasks: {e}"))?)
            }
            other => bail!("--via: {other:?} is neither grpc nor http"),
        };
        Ok(Reads {
            channel: servers.channel(),
            app: app.to_string(),
            http,
        })
    }

    /// One read, decoded.
    pub async fn once(&self) -> Result<(), tonic::Status> {
        let fail = |e: &dyn std::fmt::Display| tonic::Status::internal(e.to_string());
        match &self.http {
            None => {
                let r = crate::client::request(pb::ListTasksRequest {
                    app: self.app.clone(),
                    ..Default::default()
                });
                ControlClient::new(self.channel.clone())
                    .max_decoding_message_size(pb::MAX_MESSAGE)
                    .list_tasks(r)
                    .await
                    .map(|_| ())
            }
            Some(uri) => {
                let mut req = http::Request::get(uri.clone());
                if let Some(t) = berth_proto::servers::token_header() {
                    req = req.header(http::header::AUTHORIZATION, t.as_bytes());
                }
                let req = req.body(tonic::body::Body::empty()).map_err(|e| fail(&e))?;
                let resp = self
                    .channel
                    .clone()
                    .oneshot(req)
                    .await
                    .map_err(|e| fail(&e))?;
                if !resp.status().is_success() {
                    return Err(tonic::Status::unknown(resp.status().to_string()));
                }
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| fail(&e))?
                    .to_bytes();
                serde_json::from_slice::<pb::ListTasksResponse>(&body)
                    .map(|_| ())
                    .map_err(|e| fail(&e))
            }
        }
    }
}
