//! Backup and restore: `berth snapshot save` on a 3-server cluster with
//! apps, a plugin, ACL policies and tokens; `berth server --restore`
//! starts a fresh cluster from it with the same apps, plugins and
//! tokens, which more servers join; a snapshot of a newer format, a
//! damaged one and a non-empty data directory are refused with a clear
//! message.

mod common;

use std::time::Duration;

use common::servers::{Cluster, app_spec};
use common::wait_for;
use serde_json::Value;

fn ok(c: &Cluster, args: &[&str]) -> String {
    let out = c.berth(args);
    assert!(
        out.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn names(json: &str, key: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(json).unwrap();
    let mut n: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[key].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn a_snapshot_restores_into_a_fresh_cluster() {
    let c = Cluster::start(3, 71, &["--raft-tick", "50ms"]);
    c.wait_leader();
    // Outside the cluster's directory, which goes with it.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    for app in ["web", "db", "batch"] {
        let p = dir.join(format!("{app}.yaml"));
        std::fs::write(&p, app_spec(app)).unwrap();
        ok(&c, &["run", "-d", "-f", p.to_str().unwrap()]);
    }
    let wasm = berth_plugins::path("binpack").unwrap();
    ok(
        &c,
        &[
            "plugin",
            "install",
            wasm.to_str().unwrap(),
            "--name",
            "binpack",
            "--kind",
            "score",
        ],
    );
    let policy = dir.join("team.yaml");
    std::fs::write(&policy, "namespaces: {default: read}\n").unwrap();
    ok(
        &c,
        &[
            "acl",
            "policy",
            "apply",
            "readers",
            policy.to_str().unwrap(),
        ],
    );
    let token: Value = serde_json::from_str(&ok(
        &c,
        &["acl", "token", "create", "--policy", "readers", "--json"],
    ))
    .unwrap();
    let reader = token["secret"].as_str().unwrap().to_string();
    let apps_before = names(&ok(&c, &["apps", "--json"]), "name");
    let tokens_before = names(&ok(&c, &["acl", "token", "ls", "--json"]), "accessor");

    // A reader may not take a snapshot; the management token may.
    let file = dir.join("backup.snap");
    let out = c.berth(&[
        "--token",
        &reader,
        "snapshot",
        "save",
        file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("operator"),
        "{out:?}"
    );
    let said = ok(&c, &["snapshot", "save", file.to_str().unwrap()]);
    assert!(
        said.contains("3 apps") && said.contains("1 plugins"),
        "{said}"
    );
    let info: Value = serde_json::from_str(&ok(
        &c,
        &["snapshot", "inspect", file.to_str().unwrap(), "--json"],
    ))
    .unwrap();
    assert_eq!(
        (info["format"].as_u64(), info["servers"].as_u64()),
        (Some(1), Some(3))
    );
    drop(c);

    // Refused before anything is stored: a newer format, a damaged file.
    let bytes = std::fs::read(&file).unwrap();
    let text = String::from_utf8_lossy(&bytes).replacen("\"format\":1", "\"format\":2", 1);
    let newer = dir.join("newer.snap");
    std::fs::write(&newer, text.as_bytes()).unwrap();
    let damaged = dir.join("damaged.snap");
    std::fs::write(&damaged, &bytes[..bytes.len() - 10]).unwrap();
    for (f, why) in [
        (&newer, "snapshot format 2 was written by Berth"),
        (&damaged, "damaged"),
    ] {
        let empty = tempfile::tempdir().unwrap();
        common::issue_into(empty.path(), "server", "r", "127.0.0.1");
        let out = std::process::Command::new(common::BERTH)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(empty.path())
            .arg("--restore")
            .arg(f)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("--restore") && e.contains(why), "{e}");
        assert!(
            !empty.path().join("server/raft.redb").exists(),
            "nothing stored"
        );
    }

    // A fresh cluster from it: one server restores, two join.
    let file_arg = file.to_str().unwrap().to_string();
    let mut r = Cluster::start_first(1, 81, &["--raft-tick", "50ms"], &["--restore", &file_arg]);
    r.add(82);
    r.add(83);
    r.wait_leader();
    let members: Value = serde_json::from_str(&ok(&r, &["server", "members", "--json"])).unwrap();
    assert_eq!(members["members"].as_array().unwrap().len(), 3, "{members}");
    assert_eq!(names(&ok(&r, &["apps", "--json"]), "name"), apps_before);
    let plugins: Value = serde_json::from_str(&ok(&r, &["plugin", "ls", "--json"])).unwrap();
    assert_eq!(plugins[0]["name"], "binpack", "{plugins}");
    wait_for("the plugin to load", Duration::from_secs(20), || {
        let p: Value = serde_json::from_str(&ok(&r, &["plugin", "ls", "--json"])).ok()?;
        (p[0]["loaded"] == "yes").then_some(())
    });
    assert_eq!(
        names(&ok(&r, &["acl", "token", "ls", "--json"]), "accessor"),
        tokens_before
    );
    // The old reader token still reads, and still may not write.
    let out = r.berth(&["--token", &reader, "apps", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let p = dir.join("more.yaml");
    std::fs::write(&p, app_spec("more")).unwrap();
    let out = r.berth(&["--token", &reader, "run", "-d", "-f", p.to_str().unwrap()]);
    assert!(!out.status.success());
    // The restored cluster takes writes.
    ok(&r, &["run", "-d", "-f", p.to_str().unwrap()]);
    // Restoring over a cluster's data directory is refused.
    let s0 = r.members[0].data.clone();
    let out = std::process::Command::new(common::BERTH)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&s0)
        .arg("--restore")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty data directory"),
        "{out:?}"
    );
}
