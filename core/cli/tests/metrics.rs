//! Prometheus metrics at `/metrics` on the servers' port, over the same
//! TLS and behind the same guard as the API: refused without a token or
//! without `operator` read; with one, the scheduler's counters and
//! histogram move after a run, and each node's allocatable and allocated
//! resources are there, GPUs by model.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Dev, wait_for};
use serde_json::Value;

/// `curl` of `/metrics` as dev's client, with `token` (none: no header):
/// (HTTP status, body).
fn scrape(dev: &Dev, token: Option<&str>) -> (u16, String) {
    let d = dev.data.path();
    let mut c = Command::new("curl");
    c.args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(d.join("ca.pem"))
        .arg("--cert")
        .arg(d.join("client.pem"))
        .arg("--key")
        .arg(d.join("client-key.pem"));
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c
        .arg(format!("https://{}/metrics", dev.addr))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of the sample line starting with `series` (name and labels).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn servers_serve_prometheus_metrics_behind_the_guard() {
    let mut dev = Dev::start();
    dev.agent("dgx1", "dgx-h100");
    let token = std::fs::read_to_string(dev.data.path().join("token")).unwrap();

    // No token: 401; a token without operator read: 403.
    let (code, body) = scrape(&dev, None);
    assert_eq!(code, 401, "{body}");
    let p = dev.data.path().join("ro.yaml");
    std::fs::write(&p, "namespaces: {default: read}\n").unwrap();
    dev.ok(&["acl", "policy", "apply", "ro", p.to_str().unwrap()]);
    let ro: Value =
        serde_json::from_str(&dev.ok(&["acl", "token", "create", "--policy", "ro", "--json"]))
            .unwrap();
    let (code, body) = scrape(&dev, ro["secret"].as_str());
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("not allowed read on operator"), "{body}");

    let (code, before) = scrape(&dev, Some(token.trim()));
    assert_eq!(code, 200, "{before}");
    let placed_before =
        sample(&before, "berth_placements_total{policy=\"default\"}").unwrap_or(0.0);
    dev.run_spec(
        "web",
        "name: web\nimage: busybox:latest\ninstances: 2\ncommand: [sleep, '1000']\n\
         resources: {cpu: 100m, memory: 32Mi}\n",
    );
    dev.wait_task("web", Duration::from_secs(30), |t| t["state"] == "running");
    let body = wait_for(
        "the placements in the metrics",
        Duration::from_secs(10),
        || {
            let (_, body) = scrape(&dev, Some(token.trim()));
            (sample(&body, "berth_placements_total{policy=\"default\"}")? >= placed_before + 2.0)
                .then_some(body)
        },
    );
    assert!(
        sample(&body, "berth_scheduling_round_duration_seconds_count").unwrap() > 0.0,
        "{body}"
    );
    assert_eq!(sample(&body, "berth_raft_is_leader"), Some(1.0));
    assert_eq!(sample(&body, "berth_nodes{status=\"ready\"}"), Some(2.0));
    assert_eq!(
        sample(
            &body,
            "berth_node_allocatable_gpus{node=\"dgx1\",model=\"NVIDIA H100 80GB HBM3\"}"
        ),
        Some(8.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "berth_node_allocatable_cpu_cores{node=\"dgx1\"}"),
        Some(224.0),
        "{body}"
    );
    // Both web instances hold 100m and 32Mi on some node.
    let held: f64 = body
        .lines()
        .filter(|l| l.starts_with("berth_node_allocated_memory_bytes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(held >= (64 << 20) as f64, "{body}");
}
