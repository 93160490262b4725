//! Human and JSON renderings of API results.

use berth_model::quantity::MilliCpu;
use berth_proto as pb;
use berth_proto::typed;
use serde_json::{Value, json};

/// A task as `berth ps --json` prints it.
pub fn task_json(t: &pb::Task) -> Value {
    json!({
        "id": t.id,
        "app": t.app,
        "instance": t.instance,
        "version": t.version,
        "node": if t.node.is_empty() { Value::Null } else { json!(t.node) },
        "state": typed::state_name(t.state),
        "desired": typed::desired_name(t.desired),
        "exit_code": if t.has_exit_code { json!(t.exit_code) } else { Value::Null },
        "restarts": t.restarts,
        "given_up": t.given_up,
        "health": typed::health_from_wire(t.health).as_str(),
        "ready": t.ready,
        "ports": t.ports,
        "ip": if t.ip.is_empty() { Value::Null } else { json!(t.ip) },
        "message": t.message,
        "allocation": t.allocation.as_ref().map(|a| json!({
            "cpu_millis": a.cpu_millis,
            "memory_bytes": a.memory_bytes,
            "ports": a.ports,
            "cores": a.cores,
            "cpuset": a.cpuset,
            "numa_nodes": a.numa_nodes,
            "gpus": a.gpus.iter().map(|g| json!({"index": g.index, "uuid": g.uuid, "milli": g.milli})).collect::<Vec<_>>(),
            "nics": a.nics,
            "devices": a.devices,
        })),
    })
}

/// Prints rows as left-aligned columns.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

/// `berth ps` rows.
pub fn task_rows(tasks: &[pb::Task]) -> Vec<Vec<String>> {
    tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.app.clone(),
                if t.node.is_empty() {
                    "-".into()
                } else {
                    t.node.clone()
                },
                typed::state_name(t.state),
                if t.has_exit_code {
                    t.exit_code.to_string()
                } else {
                    "-".into()
                },
                t.restarts.to_string(),
                t.message.clone(),
            ]
        })
        .collect()
}

/// Bytes for people: `512Mi`, `23.5Gi`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// `berth nodes` rows.
pub fn node_rows(nodes: &[pb::Node]) -> Vec<Vec<String>> {
    nodes
        .iter()
        .map(|n| {
            let gpus = if n.gpus == 0 {
                "-".to_string()
            } else {
                n.gpu_model.clone()
            };
            vec![
                n.name.clone(),
                berth_proto::typed::node_status_text(n.state, n.drained),
                n.cores.to_string(),
                n.numa_nodes.to_string(),
                gpus,
                format!("{}/{}", MilliCpu(n.cpu_used), MilliCpu(n.cpu_millis)),
                format!(
                    "{}/{}",
                    human_bytes(n.memory_used),
                    human_bytes(n.memory_bytes)
                ),
                n.tasks.to_string(),
                n.address.clone(),
            ]
        })
        .collect()
}

/// A time in ms since the epoch as RFC 3339 (UTC, seconds).
pub fn time_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(0), "0");
        assert_eq!(human_bytes(64 << 20), "64Mi");
        assert_eq!(human_bytes(25_276_502_016), "23.5Gi");
        assert_eq!(human_bytes(1536), "1.5Ki");
    }
}
