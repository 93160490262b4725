//! `berth endpoints APP`: every ready instance with its node, address and
//! ports.

use berth_proto as pb;
use serde_json::{Value, json};

use crate::client::ctl;
use crate::output::table;

/// An endpoint as `--json` prints it.
pub fn endpoint_json(e: &pb::Endpoint) -> Value {
    json!({
        "app": e.app,
        "namespace": e.namespace,
        "task": e.task,
        "node": e.node,
        "node_ip": e.node_ip,
        "ip": e.ip,
        "ports": e.ports.iter().map(|p| json!({
            "name": p.name,
            "port": p.port,
            "host_port": if p.host_port == 0 { Value::Null } else { json!(p.host_port) },
        })).collect::<Vec<_>>(),
    })
}

/// `berth endpoints APP [--json]`.
pub async fn run(addr: &str, app: &str, json: bool) -> anyhow::Result<()> {
    let r = ctl!(addr, endpoints, pb::EndpointsRequest { app: app.into() })?.into_inner();
    if crate::output::structured(json) {
        let v: Vec<Value> = r.endpoints.iter().map(endpoint_json).collect();
        crate::output::print(&v)?;
        return Ok(());
    }
    let rows = r
        .endpoints
        .iter()
        .map(|e| {
            let ports: Vec<String> = e
                .ports
                .iter()
                .map(|p| match p.host_port {
                    0 => format!("{}:{}", p.name, p.port),
                    h => format!("{}:{}->{}:{h}", p.name, p.port, e.node_ip),
                })
                .collect();
            vec![
                e.task.clone(),
                e.node.clone(),
                e.ip.clone(),
                ports.join(" "),
                format!("{}.{}.berth", e.app, e.namespace),
            ]
        })
        .collect();
    table(&["TASK", "NODE", "IP", "PORTS", "NAME"], rows);
    Ok(())
}
