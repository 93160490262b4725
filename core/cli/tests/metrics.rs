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

/// Debian's Prometheus, scraping `targets` by job every second; stopped
/// when dropped.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(config: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap();
        let port = common::free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's; ci/setup.sh --test installs it)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The first sample of an instant query, if any.
    fn query(&self, q: &str) -> Option<f64> {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", "--get", "--data-urlencode"])
            .arg(format!("query={q}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

#[test]
fn a_real_prometheus_scrapes_servers_and_agents() {
    let mut dev = Dev::start();
    dev.agent("dgx1", "dgx-h100");
    let d = dev.data.path().to_path_buf();
    let agent = dev
        .nodes()
        .into_iter()
        .find(|n| n["name"] == "dgx1")
        .and_then(|n| n["address"].as_str().map(str::to_string))
        .unwrap();
    // Servers: the CA and a token (no client certificate, as any
    // Prometheus); agents: a client certificate of the cluster.
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n\
         - job_name: berth-servers\n  scheme: https\n\
         \x20 authorization: {{credentials_file: {d}/token}}\n\
         \x20 tls_config: {{ca_file: {d}/ca.pem, server_name: server.berth}}\n\
         \x20 static_configs: [{{targets: ['{addr}']}}]\n\
         - job_name: berth-agents\n  scheme: https\n\
         \x20 tls_config: {{ca_file: {d}/ca.pem, cert_file: {d}/client.pem, key_file: {d}/client-key.pem, server_name: agent.berth}}\n\
         \x20 static_configs: [{{targets: ['{agent}']}}]\n",
        d = d.display(),
        addr = dev.addr,
    );
    let prom = Prometheus::start(&config);
    let q = |expr: &str| prom.query(expr);
    wait_for("both jobs up", Duration::from_secs(60), || {
        (q("sum(up)")? == 2.0).then_some(())
    });
    let placed = "berth_placements_total{job=\"berth-servers\",policy=\"default\"}";
    let before = q(placed).unwrap_or(0.0);
    dev.run_spec(
        "web",
        "name: web\nimage: busybox:latest\ninstances: 3\ncommand: [sleep, '1000']\n\
         resources: {cpu: 100m, memory: 32Mi}\n",
    );
    dev.wait_task("web", Duration::from_secs(30), |t| t["state"] == "running");
    wait_for(
        "placements to grow in Prometheus",
        Duration::from_secs(30),
        || (q(placed)? >= before + 3.0).then_some(()),
    );
    assert!(q("berth_scheduling_round_duration_seconds_count").unwrap() > 0.0);
    assert!(q("berth_raft_commit_duration_seconds_count").unwrap() > 0.0);
    assert_eq!(
        q("berth_node_allocatable_gpus{node=\"dgx1\",model=\"NVIDIA H100 80GB HBM3\"}"),
        Some(8.0)
    );
    // The agents' own metrics, from the standalone agent's port; the
    // in-process agent of `berth dev` through the servers' exposition.
    wait_for("agent heartbeats", Duration::from_secs(30), || {
        (q("berth_agent_heartbeat_round_trip_seconds_count{job=\"berth-agents\"}")? > 0.0)
            .then_some(())
    });
    wait_for("container starts", Duration::from_secs(30), || {
        (q("sum(berth_agent_containers_started_total)")? >= 3.0).then_some(())
    });
}
