//! Security end to end, over real TLS: the handshake refuses plaintext and
//! foreign certificates; a client certificate cannot speak raft or join
//! the servers; an agent certificate acts only as its own node; tokens
//! and policies scope what a caller sees and changes per namespace;
//! revoked and expired tokens are refused; every refusal is audited.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use berth_proto as pb;
use berth_tls::{Credentials, Paths, Role};
use common::{BERTH, Dev, wait_for};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A channel to `addr` over TLS checked against `ca_dir`'s CA, showing
/// `identity` (none: no client certificate).
async fn dial(addr: &str, ca_dir: &Path, identity: Option<(String, String)>) -> Option<Channel> {
    let ca = Credentials::load(&Paths::default().in_dir(ca_dir, Role::Client)).unwrap();
    let creds = Credentials {
        ca_pem: ca.ca_pem,
        identity,
    };
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(creds.client(Role::Server))
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .ok()
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn pem(dir: &Path, stem: &str) -> (String, String) {
    (
        std::fs::read_to_string(dir.join(format!("{stem}.pem"))).unwrap(),
        std::fs::read_to_string(dir.join(format!("{stem}-key.pem"))).unwrap(),
    )
}

#[test]
fn the_handshake_and_the_services_refuse_the_wrong_peers() {
    let dev = Dev::start();
    let data = dev.data.path();
    let token = std::fs::read_to_string(data.join("token")).unwrap();
    block(async {
        // The real client works (the control for what follows).
        let ch = dial(&dev.addr, data, Some(pem(data, "client")))
            .await
            .unwrap();
        let mut c = pb::control_client::ControlClient::new(ch.clone());
        assert!(
            c.list_apps(with_token(pb::ListAppsRequest {}, &token))
                .await
                .is_ok()
        );

        // Plaintext: refused (the server speaks only TLS).
        let plain = Endpoint::from_shared(format!("http://{}", dev.addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await;
        if let Ok(ch) = plain {
            let r = pb::control_client::ControlClient::new(ch)
                .list_apps(with_token(pb::ListAppsRequest {}, &token))
                .await;
            assert!(r.is_err(), "a plaintext call was answered: {r:?}");
        }

        // A certificate from another CA: refused at the handshake.
        let other = tempfile::tempdir().unwrap();
        berth_tls::init(other.path(), 30).unwrap();
        let foreign = berth_tls::issue(other.path(), Role::Client, "mallory", &[], 30).unwrap();
        let r = match dial(&dev.addr, data, Some((foreign.cert_pem, foreign.key_pem))).await {
            None => Err(tonic::Status::unavailable("handshake refused")),
            Some(ch) => pb::control_client::ControlClient::new(ch)
                .list_apps(with_token(pb::ListAppsRequest {}, &token))
                .await
                .map(|_| ()),
        };
        assert!(r.is_err(), "a foreign certificate was accepted");

        // No certificate at all: only the join exchange is open.
        let anon = dial(&dev.addr, data, None).await.unwrap();
        let r = pb::control_client::ControlClient::new(anon)
            .list_apps(with_token(pb::ListAppsRequest {}, &token))
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::Unauthenticated);

        // A client certificate cannot speak raft nor use the membership
        // service, even with the management token.
        let r = pb::raft_client::RaftClient::new(ch.clone())
            .messages(with_token(tokio_stream::empty(), &token))
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::PermissionDenied);
        let r = pb::membership_client::MembershipClient::new(ch.clone())
            .join(with_token(
                pb::JoinRequest {
                    id: 99,
                    address: "127.0.0.1:1".into(),
                },
                &token,
            ))
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::PermissionDenied);
        let r = pb::membership_client::MembershipClient::new(ch.clone())
            .members(with_token(pb::MembersRequest {}, &token))
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::PermissionDenied);
        // Operators list the members through the API, with a token.
        let r = pb::control_client::ControlClient::new(ch.clone())
            .server_members(with_token(pb::MembersRequest {}, &token))
            .await;
        assert!(r.is_ok(), "{r:?}");
        // Nor an agent's service: clients go through the servers.
        let r = pb::agent_client::AgentClient::new(ch)
            .list_images(with_token(pb::ListImagesRequest {}, &token))
            .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::PermissionDenied);
    });
}

#[test]
fn an_agent_certificate_acts_only_as_its_node() {
    let dev = Dev::start();
    let data = dev.data.path();
    dev.run_spec(
        "web",
        "name: web\nimage: busybox:latest\ncommand: [sleep, '1000']\n",
    );
    let task = dev.wait_task("web", Duration::from_secs(30), |t| t["state"] == "running");
    let task_id = task["id"].as_str().unwrap().to_string();
    let a = berth_tls::issue(data, Role::Agent, "node-a", &[], 1).unwrap();
    block(async {
        let ch = dial(&dev.addr, data, Some((a.cert_pem, a.key_pem)))
            .await
            .unwrap();
        let mut n = pb::node_api_client::NodeApiClient::new(ch);
        let reg = |name: &str| pb::RegisterRequest {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            ..Default::default()
        };
        // As another node: refused, whatever the call.
        let e = n.register(reg("node-b")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("may not act as node node-b"), "{e:?}");
        let e = n
            .heartbeat(pb::HeartbeatRequest {
                node: "node-b".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = n
            .watch_assignments(pb::WatchAssignmentsRequest {
                node: "node-b".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // As itself: fine; but it cannot report another node's task.
        n.register(reg("node-a")).await.unwrap();
        let e = n
            .report_tasks(pb::ReportTasksRequest {
                node: "node-a".into(),
                statuses: vec![pb::TaskStatus {
                    id: task_id.clone(),
                    state: pb::TaskState::Failed as i32,
                    exit_code: 137,
                    message: "forged".into(),
                    ..Default::default()
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("not assigned to node node-a"), "{e:?}");
    });
    // The task kept running; the refusals are in the audit log.
    let t = dev.wait_task("web", Duration::from_secs(5), |t| {
        t["id"] == task_id.as_str()
    });
    assert_eq!(t["state"], "running");
    let audit = wait_for(
        "the refusals in the audit log",
        Duration::from_secs(10),
        || {
            let v: Value = serde_json::from_str(&dev.ok(&["audit", "--json"])).ok()?;
            let entries = v.as_array()?.clone();
            let denied = |what: &str| {
                entries.iter().any(|e| {
                    e["who"] == "agent/node-a" && e["outcome"].as_str().unwrap().contains(what)
                })
            };
            (denied("may not act as node node-b") && denied("not assigned to node node-a"))
                .then_some(entries)
        },
    );
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "NodeApi/Register" && e["outcome"] == "ok")
    );
}

/// `berth ARGS` against `dev` with `token` (empty: none) and namespace `ns`.
fn as_token(dev: &Dev, token: &str, ns: &str, args: &[&str]) -> Output {
    Command::new(BERTH)
        .args(args)
        .env("BERTH_ADDR", &dev.addr)
        .env("BERTH_DATA_DIR", dev.data.path())
        .env("BERTH_TOKEN", token)
        .env("BERTH_NAMESPACE", ns)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn tokens_scope_what_a_caller_sees_and_changes_per_namespace() {
    let dev = Dev::start();
    let spec = |name: &str| {
        let p = dev.data.path().join(format!("{name}.yaml"));
        std::fs::write(
            &p,
            format!("name: {name}\nimage: busybox:latest\ncommand: [sleep, '1000']\n"),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let (a1, b1, a2) = (spec("a1"), spec("b1"), spec("a2"));
    dev.ok(&["-n", "team-a", "run", "-d", "-f", &a1]);
    dev.ok(&["-n", "team-b", "run", "-d", "-f", &b1]);
    // A spec that names another namespace than the call's is refused.
    let ns_spec = dev.data.path().join("ns.yaml");
    std::fs::write(
        &ns_spec,
        "name: x\nimage: busybox:latest\nnamespace: team-b\n",
    )
    .unwrap();
    let out = dev.berth(&["-n", "team-a", "run", "-d", "-f", ns_spec.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("namespace: the spec is in namespace team-b"),
        "{out:?}"
    );

    let policy = dev.data.path().join("ro.yaml");
    std::fs::write(&policy, "namespaces: {team-a: read}\n").unwrap();
    dev.ok(&[
        "acl",
        "policy",
        "apply",
        "team-a-read",
        policy.to_str().unwrap(),
    ]);
    let bad = dev.data.path().join("bad.yaml");
    std::fs::write(&bad, "namespaces: {team-a: root}\n").unwrap();
    let out = dev.berth(&["acl", "policy", "apply", "bad", bad.to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("unknown variant"),
        "{out:?}"
    );
    let created: Value = serde_json::from_str(&dev.ok(&[
        "acl",
        "token",
        "create",
        "--policy",
        "team-a-read",
        "--json",
    ]))
    .unwrap();
    let ro = created["secret"].as_str().unwrap().to_string();

    // Read on team-a: sees its apps and tasks only.
    let out = as_token(&dev, &ro, "team-a", &["apps", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let apps: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a1"]);
    let ps: Value =
        serde_json::from_slice(&as_token(&dev, &ro, "team-a", &["ps", "--json"]).stdout).unwrap();
    assert!(
        ps.as_array().unwrap().iter().all(|t| t["app"] == "a1"),
        "{ps}"
    );
    // Cannot run there, nor touch team-b's app, nor see team-b.
    let out = as_token(&dev, &ro, "team-a", &["run", "-d", "-f", &a2]);
    assert!(
        stderr(&out).contains("not allowed write on namespace team-a"),
        "{out:?}"
    );
    let out = as_token(&dev, &ro, "team-a", &["stop", "b1"]);
    assert!(!out.status.success(), "{out:?}");
    let out = as_token(&dev, &ro, "team-b", &["apps"]);
    assert!(
        stderr(&out).contains("not allowed read on namespace team-b"),
        "{out:?}"
    );
    let out = as_token(&dev, &ro, "team-a", &["nodes"]);
    assert!(
        stderr(&out).contains("not allowed read on nodes"),
        "{out:?}"
    );
    // The management token, from another namespace, does not find b1 in team-a.
    let out = dev.berth(&["-n", "team-a", "stop", "b1"]);
    assert!(
        stderr(&out).contains("no app named b1 in namespace team-a"),
        "{out:?}"
    );

    // Write on team-a runs apps there, but opting out of seccomp needs admin.
    let rw = dev.data.path().join("rw.yaml");
    std::fs::write(&rw, "namespaces: {team-a: write}\n").unwrap();
    dev.ok(&[
        "acl",
        "policy",
        "apply",
        "team-a-write",
        rw.to_str().unwrap(),
    ]);
    let w: Value = serde_json::from_str(&dev.ok(&[
        "acl",
        "token",
        "create",
        "--policy",
        "team-a-write",
        "--json",
    ]))
    .unwrap();
    let w = w["secret"].as_str().unwrap().to_string();
    let out = as_token(&dev, &w, "team-a", &["run", "-d", "-f", &a2]);
    assert!(out.status.success(), "{out:?}");
    let open = dev.data.path().join("open.yaml");
    std::fs::write(
        &open,
        "name: open\nimage: busybox:latest\nseccomp: unconfined\ncommand: [sleep, '1000']\n",
    )
    .unwrap();
    let out = as_token(
        &dev,
        &w,
        "team-a",
        &["run", "-d", "-f", open.to_str().unwrap()],
    );
    assert!(
        stderr(&out).contains("seccomp: unconfined needs"),
        "{out:?}"
    );
    dev.ok(&["-n", "team-a", "run", "-d", "-f", open.to_str().unwrap()]);

    // No token: every call refused.
    for args in [
        &["apps"][..],
        &["ps"],
        &["nodes"],
        &["audit"],
        &["run", "-d", "-f", &a2],
    ] {
        let out = as_token(&dev, "", "team-a", args);
        assert!(
            !out.status.success() && stderr(&out).contains("no token"),
            "{args:?}: {out:?}"
        );
    }
    // A wrong token, a revoked one, an expired one: refused.
    let out = as_token(&dev, "not-a-token-at-all", "team-a", &["apps"]);
    assert!(stderr(&out).contains("unknown or revoked"), "{out:?}");
    dev.ok(&[
        "acl",
        "token",
        "revoke",
        created["accessor"].as_str().unwrap(),
    ]);
    let out = as_token(&dev, &ro, "team-a", &["apps"]);
    assert!(stderr(&out).contains("unknown or revoked"), "{out:?}");
    let short: Value = serde_json::from_str(&dev.ok(&[
        "acl",
        "token",
        "create",
        "--policy",
        "team-a-read",
        "--ttl",
        "1s",
        "--json",
    ]))
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let out = as_token(&dev, short["secret"].as_str().unwrap(), "team-a", &["apps"]);
    assert!(stderr(&out).contains("expired"), "{out:?}");
    // The bootstrap happens once.
    let out = dev.berth(&["acl", "bootstrap"]);
    assert!(stderr(&out).contains("already bootstrapped"), "{out:?}");

    // Every refusal is in the audit log, with who and what.
    wait_for(
        "the refusals in the audit log",
        Duration::from_secs(10),
        || {
            let v: Value = serde_json::from_str(&dev.ok(&["audit", "--json"])).ok()?;
            let e = v.as_array()?;
            let has = |action: &str, ns: &str, outcome: &str| {
                e.iter().any(|x| {
                    x["action"] == action
                        && x["target"] == ns
                        && x["outcome"].as_str().unwrap_or("").contains(outcome)
                })
            };
            (has("Control/RunApp", "team-a", "not allowed write")
                && has("Control/ListApps", "team-b", "not allowed read")
                && has("Control/ListApps", "team-a", "no token")
                && has("Control/ListApps", "team-a", "unknown or revoked")
                && has("Control/ListApps", "team-a", "expired")
                && has("Control/StopApp", "team-a", "no app named b1")
                && has("Control/RunApp", "team-b", "ok"))
            .then_some(())
        },
    );
}
