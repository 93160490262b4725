//! The HTTP/JSON API on the servers' port: the same TLS listener as
//! gRPC, HTTP/1.1 and HTTP/2, a token alone (no client certificate, as a
//! browser or Prometheus), the same answers and refusals as gRPC, the
//! dashboard's login cookie, the event stream as Server-Sent Events with
//! resume, and `berth events`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Dev, wait_for};
use serde_json::Value;

/// A `curl` to the dev server: (HTTP status, headers and body).
fn curl(dev: &Dev, args: &[&str], path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-i",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(dev.data.path().join("ca.pem"))
        .args(args)
        .arg(format!("https://{}{path}", dev.addr))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The JSON body of a `curl -i` answer.
fn json(text: &str) -> Value {
    let body = text.split("\r\n\r\n").last().unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_json_api_serves_the_grpc_methods_with_the_same_rules() {
    let mut dev = Dev::start();
    dev.agent("dgx1", "dgx-h100");
    let token = std::fs::read_to_string(dev.data.path().join("token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let auth = ["-H", bearer.as_str()];

    // The OpenAPI document is open, over HTTP/1.1 as over HTTP/2.
    for proto in ["--http1.1", "--http2"] {
        let (code, text) = curl(&dev, &[proto], "/v1/openapi.json");
        assert_eq!(code, 200, "{text}");
        assert_eq!(
            json(&text)["paths"]["/v1/tasks"]["get"]["operationId"],
            "ListTasks"
        );
    }
    // No token: 401 as JSON, naming what is missing; an unknown route: 404.
    let (code, text) = curl(&dev, &["--http1.1"], "/v1/tasks");
    assert_eq!(code, 401, "{text}");
    assert_eq!(json(&text)["code"], "unauthenticated");
    let (code, _) = curl(&dev, &auth, "/v1/nope");
    assert_eq!(code, 404);

    // A token alone runs an app and lists its tasks, as gRPC would.
    let spec = serde_json::json!({
        "spec": "name: web\nimage: busybox:latest\ninstances: 2\ncommand: [sleep, '1000']\nresources: {cpu: 100m, memory: 32Mi}\n",
    });
    let body = spec.to_string();
    let post = [
        &auth[..],
        &["-H", "content-type: application/json", "-d", &body],
    ]
    .concat();
    let (code, text) = curl(&dev, &post, "/v1/apps");
    assert_eq!(code, 200, "{text}");
    assert_eq!(json(&text)["name"], "web");
    let tasks = wait_for("two running tasks", Duration::from_secs(30), || {
        let (_, text) = curl(&dev, &auth, "/v1/tasks?app=web");
        let v = json(&text);
        let running = v["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == 2)
            .count();
        (running == 2).then_some(v)
    });
    let grpc: Vec<Value> = dev.ps();
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), grpc.len());
    // Pages: one task at a time, by id, then no token.
    let (code, text) = curl(&dev, &auth, "/v1/tasks?app=web&page_size=1");
    assert_eq!(code, 200, "{text}");
    let first = json(&text);
    let next = first["next_page_token"].as_str().unwrap().to_string();
    assert_eq!(first["tasks"].as_array().unwrap().len(), 1);
    let (_, text) = curl(
        &dev,
        &auth,
        &format!("/v1/tasks?app=web&page_size=1&page_token={next}"),
    );
    let second = json(&text);
    assert_eq!(second["tasks"].as_array().unwrap().len(), 1);
    assert!(second["next_page_token"].as_str().unwrap_or("").is_empty());
    assert!(first["tasks"][0]["id"].as_str() < second["tasks"][0]["id"].as_str());
    // Nodes by page and by prefix; a page too large is refused by name.
    let (_, text) = curl(&dev, &auth, "/v1/nodes?page_size=1");
    let page = json(&text);
    assert_eq!(page["nodes"].as_array().unwrap().len(), 1, "{page}");
    assert!(
        !page["next_page_token"].as_str().unwrap().is_empty(),
        "{page}"
    );
    let (_, text) = curl(&dev, &auth, "/v1/nodes?prefix=dgx");
    let dgx = json(&text);
    assert_eq!(dgx["nodes"].as_array().unwrap().len(), 1, "{dgx}");
    assert_eq!(dgx["nodes"][0]["name"], "dgx1");
    let (code, text) = curl(&dev, &auth, "/v1/nodes?page_size=10001");
    assert_eq!(code, 400, "{text}");
    assert!(
        json(&text)["message"]
            .as_str()
            .unwrap()
            .starts_with("page_size:"),
        "{text}"
    );
    let id = tasks["tasks"][0]["id"].as_str().unwrap().to_string();
    let (code, text) = curl(&dev, &auth, &format!("/v1/tasks/{id}/explain"));
    assert_eq!(code, 200, "{text}");
    assert_eq!(json(&text)["task"], id);
    // The node page's data: the inventory and the tasks placed there.
    let (code, text) = curl(&dev, &auth, "/v1/nodes/dgx1");
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        json(&text)["inventory"]["gpus"].as_array().unwrap().len(),
        8
    );
    let (_, text) = curl(&dev, &auth, "/v1/overview");
    let o = json(&text);
    assert!(o["nodes_ready"].as_u64().unwrap() >= 2, "{o}");
    assert!(
        o["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "gpu" && r["allocatable"] == 8),
        "{o}"
    );
    // A bad body names the field; a bad namespace is refused.
    let bad = [
        &auth[..],
        &[
            "-H",
            "content-type: application/json",
            "-d",
            "{\"instances\": \"x\"}",
        ],
    ]
    .concat();
    let (code, text) = curl(&dev, &bad, "/v1/apps/web/scale");
    assert_eq!(code, 400, "{text}");
    assert!(
        json(&text)["message"]
            .as_str()
            .unwrap()
            .contains("instances"),
        "{text}"
    );
    let (code, _) = curl(&dev, &auth, "/v1/apps?namespace=Not_Valid");
    assert_eq!(code, 400);

    // A read-only token of another namespace sees none of it and cannot write.
    let p = dev.data.path().join("team-a.yaml");
    std::fs::write(&p, "namespaces: {team-a: read}\n").unwrap();
    dev.ok(&["acl", "policy", "apply", "team-a", p.to_str().unwrap()]);
    let ro: Value =
        serde_json::from_str(&dev.ok(&["acl", "token", "create", "--policy", "team-a", "--json"]))
            .unwrap();
    let ro_bearer = format!("Authorization: Bearer {}", ro["secret"].as_str().unwrap());
    let (code, text) = curl(&dev, &["-H", &ro_bearer], "/v1/tasks?namespace=team-a");
    assert_eq!(code, 200, "{text}");
    assert_eq!(json(&text)["tasks"].as_array().map_or(0, Vec::len), 0);
    let (code, _) = curl(&dev, &["-H", &ro_bearer], "/v1/tasks");
    assert_eq!(code, 403);
    let ro_post = [
        &["-H", ro_bearer.as_str()][..],
        &["-H", "content-type: application/json", "-d", &body],
    ]
    .concat();
    let (code, _) = curl(&dev, &ro_post, "/v1/apps?namespace=team-a");
    assert_eq!(code, 403);
    let (_, text) = curl(&dev, &["-H", &ro_bearer], "/v1/namespaces");
    let names: Vec<String> = json(&text)["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["team-a"], "only what the token may read");
    // The refusals are audited as the gRPC ones are.
    let audit = dev.ok(&["audit"]);
    assert!(audit.contains("Control/ListTasks"), "{audit}");

    // The dashboard's login: a bad token goes back to the form; a good
    // one sets an HTTP-only cookie that the API takes.
    let form = |t: &str| format!("token={t}");
    let (code, text) = curl(&dev, &["-d", &form("nope")], "/ui/login");
    assert_eq!(code, 303, "{text}");
    assert!(text.contains("location: /ui/login?error=token"), "{text}");
    let (code, text) = curl(&dev, &["-d", &form(token.trim())], "/ui/login");
    assert_eq!(code, 303, "{text}");
    let cookie = text
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let kv = cookie.split(';').next().unwrap();
    let (code, text) = curl(&dev, &["-H", &format!("Cookie: {kv}")], "/v1/apps");
    assert_eq!(code, 200, "{text}");
    let (code, text) = curl(&dev, &[], "/ui/");
    assert_eq!(code, 200);
    assert!(text.contains("/ui/app.js"));

    // Events: the deployment and node events are kept; a watcher resumes
    // after an id and gets only what came after it.
    let (_, text) = curl(&dev, &auth, "/v1/events");
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert!(text.contains("event: deployment"), "{text}");
    assert!(text.contains("event: node"), "{text}");
    let first = ids[0];
    let (_, after) = curl(&dev, &auth, &format!("/v1/events?since={first}"));
    assert!(!after.contains(&format!("id: {first}\n")), "{after}");
    assert!(after.contains(&format!("id: {}", ids[1])), "{after}");
    let (code, text) = curl(&dev, &auth, "/v1/events?since=x");
    assert_eq!(code, 400, "{text}");
    // The CLI's output formats and exit codes.
    let yaml = dev.ok(&["-o", "yaml", "ps"]);
    let rows: Vec<Value> = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(rows.len(), grpc.len(), "{yaml}");
    let wide = dev.ok(&["-o", "wide", "ps"]);
    assert!(
        wide.lines()
            .next()
            .unwrap()
            .contains("ALLOCATION.CPU_MILLIS"),
        "{wide}"
    );
    let code = |args: &[&str]| dev.berth(args).status.code();
    assert_eq!(code(&["explain", "no-such-task"]), Some(5));
    assert_eq!(code(&["--token", "nope", "apps"]), Some(4));
    assert_eq!(code(&["--addr", "127.0.0.1:1", "apps"]), Some(3));
    assert_eq!(code(&["scale", "web", "x"]), Some(2));
    let help = dev.ok(&["--help"]);
    assert!(
        help.contains("Exit codes:") && help.contains("5  not found"),
        "{help}"
    );
    // `berth events` over gRPC: the same ids.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--addr", &dev.addr, "events", "--json", "--no-follow"])
        .env("BERTH_DATA_DIR", dev.data.path())
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout);
    let got: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got[0]["id"], first, "{lines}");
}
