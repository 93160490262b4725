//! Rolling deployments with real containers: busybox `httpd` instances on
//! dynamic host ports, HTTP readiness, sampled every 100 ms through the
//! rollout; a bad version that rolls back by itself. Needs root.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{BERTH, Dev};
use serde_json::Value;

/// An app of `instances` httpd instances on a dynamic port, ready when
/// `ready_path` answers; `label` is served at `/` so versions differ.
fn web(instances: u32, label: &str, ready_path: &str, update: &str) -> String {
    format!(
        "name: web\nimage: busybox:latest\ninstances: {instances}\nrestart: always\n\
         resources: {{cpu: 0.05, memory: 32Mi}}\n\
         ports: [{{name: http, host: 0}}]\n\
         env: {{LABEL: {label}}}\n\
         command: [/bin/sh, -c, 'mkdir -p /w; echo $LABEL > /w/index.html; exec httpd -f -p $BERTH_PORT_HTTP -h /w']\n\
         ready: {{http: {{port: http, path: {ready_path}}}, interval: 1s, timeout: 500ms}}\n\
         update: {update}\n"
    )
}

/// `GET /` on `port`: the status code and body (a few tries: the tests
/// share two cores with other clusters).
fn get(port: u64) -> Option<(u16, String)> {
    (0..5).find_map(|i| {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        get_once(port)
    })
}

fn get_once(port: u64) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port as u16)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((code, body))
}

/// `berth run -f` of `yaml`, waiting, in the background.
fn run_waiting(dev: &Dev, yaml: &str, name: &str) -> std::thread::JoinHandle<Output> {
    let path = dev.data.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let (addr, data) = (dev.addr.clone(), dev.data.path().to_path_buf());
    std::thread::spawn(move || {
        Command::new(BERTH)
            .args(["run", "-f", path.to_str().unwrap()])
            .env("BERTH_ADDR", addr)
            .env("BERTH_DATA_DIR", data)
            .output()
            .unwrap()
    })
}

/// The tasks of `web` meant to run.
fn live(dev: &Dev) -> Vec<Value> {
    dev.ps()
        .into_iter()
        .filter(|t| t["app"] == "web" && t["desired"] == "run")
        .collect()
}

/// Samples every 100 ms until `done` finishes: the ready instances meant
/// to run are never fewer than `floor`, and each answers 200 on its port
/// (unless it was retired in between). Returns the samples taken.
fn sample_until(dev: &Dev, floor: usize, done: &std::thread::JoinHandle<Output>) -> usize {
    let mut samples = 0;
    while !done.is_finished() {
        let all = live(dev);
        let ready: Vec<&Value> = all.iter().filter(|t| t["ready"] == true).collect();
        assert!(ready.len() >= floor, "only {} ready: {all:#?}", ready.len());
        for t in ready {
            let port = t["ports"]["http"].as_u64().expect("a named port");
            if get(port).map(|(c, _)| c) != Some(200) {
                let still = live(dev).iter().any(|x| x["id"] == t["id"]);
                assert!(
                    !still,
                    "{} is ready but port {port} does not answer 200",
                    t["id"]
                );
            }
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    samples
}

fn json(dev: &Dev, args: &[&str]) -> Value {
    serde_json::from_str(&dev.ok(args)).unwrap()
}

#[test]
fn a_rolling_update_keeps_ready_instances_serving() {
    let dev = Dev::start();
    let update = "{max_surge: 1, max_unavailable: 0}";
    let first = run_waiting(&dev, &web(4, "one", "/", update), "v1")
        .join()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let v1 = live(&dev);
    assert_eq!(v1.len(), 4);
    let old_version = v1[0]["version"].clone();
    let ports: Vec<u64> = v1
        .iter()
        .map(|t| t["ports"]["http"].as_u64().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&u64> = ports.iter().collect();
    assert_eq!(distinct.len(), 4, "one dynamic port each: {ports:?}");

    let started = Instant::now();
    let second = run_waiting(&dev, &web(4, "two", "/", update), "v2");
    let samples = sample_until(&dev, 4, &second);
    let out = second.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        samples >= 10,
        "{samples} samples in {:?}",
        started.elapsed()
    );
    assert!(stderr.contains("new ready"), "progress lines: {stderr}");

    // All new, all serving the new page; the old ones are gone.
    common::wait_for("the old tasks to go", Duration::from_secs(20), || {
        let all: Vec<Value> = dev.ps().into_iter().filter(|t| t["app"] == "web").collect();
        (all.len() == 4 && all.iter().all(|t| t["version"] != old_version)).then_some(())
    });
    for t in live(&dev) {
        let (code, body) = get(t["ports"]["http"].as_u64().unwrap()).unwrap();
        assert_eq!((code, body.trim()), (200, "two"), "{t}");
    }
    let status = json(&dev, &["deploy", "status", "web", "--json"]);
    assert_eq!(status["phase"], "succeeded", "{status}");
    assert_eq!(status["trigger"], "update");
    assert_eq!(status["new"]["ready"], 4);
    let history = json(&dev, &["deploy", "history", "web", "--json"]);
    let phases: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["succeeded", "succeeded"], "{history}");
}

#[test]
fn a_bad_version_rolls_back_by_itself() {
    let dev = Dev::start();
    let update = "{max_surge: 1, max_unavailable: 0, deadline: 8s}";
    let first = run_waiting(&dev, &web(2, "good", "/", update), "good")
        .join()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let good: Vec<String> = live(&dev).iter().map(|t| t["id"].to_string()).collect();

    // Its readiness path does not exist: it never becomes ready.
    let bad = run_waiting(&dev, &web(2, "bad", "/nope", update), "bad");
    sample_until(&dev, 2, &bad);
    let out = bad.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a rolled-back run fails: {stderr}");
    assert!(
        stderr.contains("rolled-back") && stderr.contains("deadline"),
        "{stderr}"
    );

    let status = json(&dev, &["deploy", "status", "web", "--json"]);
    assert_eq!(status["phase"], "rolled-back", "{status}");
    let msg = status["message"].as_str().unwrap();
    assert!(
        msg.starts_with("deadline of 8s passed with 0/2 new instances ready"),
        "{msg}"
    );
    assert!(msg.contains("rolled back to version"), "{msg}");
    assert_eq!(status["rollback"]["phase"], "succeeded", "{status}");
    // The good instances were never touched.
    let now: Vec<String> = live(&dev).iter().map(|t| t["id"].to_string()).collect();
    assert_eq!(now, good);
    for t in live(&dev) {
        assert_eq!(t["restarts"], 0, "{t}");
        let (code, body) = get(t["ports"]["http"].as_u64().unwrap()).unwrap();
        assert_eq!((code, body.trim()), (200, "good"));
    }
}
