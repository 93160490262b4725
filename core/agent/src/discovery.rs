//! Service discovery on the node: the agent's DNS server (`berth-dns`),
//! on the node's bridge address and on loopback, answering from a table
//! kept in step with the servers' endpoint watch (the current set, then
//! each change), and the host's resolver for the rest.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_dns::{Dns, Endpoint, Port, Table};
use berth_proto as pb;
use berth_proto::servers::Servers;

/// A wire endpoint as the DNS table holds it (none if its addresses do
/// not parse).
pub fn endpoint(e: pb::Endpoint) -> Option<Endpoint> {
    Some(Endpoint {
        ip: e.ip.parse().ok()?,
        node_ip: e.node_ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        ports: e
            .ports
            .into_iter()
            .filter(|p| !p.name.is_empty())
            .map(|p| Port {
                name: p.name,
                port: p.port as u16,
                host: (p.host_port != 0).then_some(p.host_port as u16),
            })
            .collect(),
        app: e.app,
        namespace: e.namespace,
        task: e.task,
        node: e.node,
    })
}

/// Keeps `table` in step with the endpoint watch, reconnecting (to the
/// leader the servers' list follows) whenever the stream ends.
pub async fn watch(servers: Arc<Servers>, table: Arc<RwLock<Table>>) {
    loop {
        let stream = servers
            .call(|ch| async move {
                pb::control_client::ControlClient::new(ch)
                    .max_decoding_message_size(pb::MAX_MESSAGE)
                    .watch_endpoints(pb::EndpointsRequest::default())
                    .await
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(e) => {
                tracing::debug!(error = %e, "watching endpoints failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // The initial set is built apart and swapped in whole.
        let mut fresh = Some(Table::default());
        while let Ok(Some(ev)) = stream.message().await {
            let apply = |t: &mut Table| {
                if let Some(e) = ev.endpoint.clone().and_then(endpoint) {
                    t.upsert(e);
                } else if !ev.removed.is_empty() {
                    t.remove(&ev.removed);
                }
            };
            match fresh.as_mut() {
                Some(f) => {
                    apply(f);
                    if ev.synced {
                        let f = fresh.take().unwrap_or_default();
                        *table.write().unwrap_or_else(|p| p.into_inner()) = f;
                    }
                }
                None => apply(&mut table.write().unwrap_or_else(|p| p.into_inner())),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Serves DNS on `gateway:53` and `loopback` from `table`, forwarding
/// other names to the host's resolver. Runs until the process ends.
pub async fn serve(table: Arc<RwLock<Table>>, gateway: Ipv4Addr, loopback: Option<SocketAddr>) {
    let mut addrs = vec![SocketAddr::new(gateway.into(), 53)];
    addrs.extend(loopback);
    let upstream = berth_dns::host_resolver(&addrs);
    match berth_dns::serve(Dns::new(table, upstream), &addrs).await {
        Ok(mut server) => {
            tracing::info!(?addrs, ?upstream, "DNS is up");
            if let Err(e) = server.block_until_done().await {
                tracing::warn!(error = %e, "DNS stopped");
            }
        }
        Err(e) => tracing::warn!(error = %e, "DNS could not start"),
    }
}

/// Creates the node's bridge and starts its DNS and the endpoint watch
/// that feeds it; both end when `shutdown` turns true (an open watch
/// would hold a server's graceful shutdown: `berth dev` serves its own
/// agent).
pub async fn start(
    rt: &berth_runtime::Runtime,
    servers: Arc<Servers>,
    loopback: Option<SocketAddr>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let gateway = match rt.cni().ensure_bridge().await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "no bridge: bridge networking and DNS are off on this node");
            return;
        }
    };
    let table = Arc::new(RwLock::new(Table::default()));
    let watcher = tokio::spawn(watch(servers, table.clone()));
    let server = tokio::spawn(serve(table, gateway, loopback));
    let mut stop = shutdown;
    tokio::spawn(async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        watcher.abort();
        server.abort();
    });
}
