//! Wasm plugins in a running dev cluster, built from C in this build:
//! a filter changes placement, admission refuses and mutates, an allocate
//! plugin's GPU choice is what the container gets, upgrade / rollback /
//! remove / shadow mode work, plugins survive a server restart, and a bad
//! plugin is refused with its cause and stores nothing.

mod common;

use std::time::Duration;

use common::{Dev, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(40);

fn wasm(name: &str) -> String {
    berth_plugins::path(name).unwrap().display().to_string()
}

fn plugin(dev: &Dev, name: &str) -> Value {
    serde_json::from_str(&dev.ok(&["plugin", "show", name, "--json"])).unwrap()
}

fn fails(dev: &Dev, args: &[&str]) -> String {
    let out = dev.berth(args);
    assert!(!out.status.success(), "berth {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn plugins_roll_out_live_and_survive_a_restart() {
    let mut dev = Dev::start();
    let cdi = dev.data.path().join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    common::write_gpu_cdi(&cdi);
    dev.agent_with(
        "dgx1",
        "dgx-h100",
        &["--cdi-dir", cdi.to_str().unwrap(), "--label", "pool=gpu"],
    );
    dev.agent("cpu1", "cpu-2s");

    // Bad plugins are refused with the cause, and nothing is stored.
    let junk = dev.data.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let e = fails(
        &dev,
        &[
            "plugin",
            "install",
            junk.to_str().unwrap(),
            "--name",
            "junk",
            "--kind",
            "score",
        ],
    );
    assert!(e.contains("not a valid Wasm component"), "{e}");
    let e = fails(
        &dev,
        &[
            "plugin",
            "install",
            &wasm("binpack"),
            "--name",
            "x",
            "--kind",
            "filter",
        ],
    );
    assert!(e.contains("is not a filter plugin"), "{e}");
    let e = fails(
        &dev,
        &[
            "plugin",
            "install",
            &wasm("label-filter"),
            "--name",
            "x",
            "--kind",
            "filter",
            "--config",
            "{}",
        ],
    );
    assert!(e.contains("config.key"), "{e}");
    assert_eq!(dev.ok(&["plugin", "list", "--json"]).trim(), "[]");

    // A filter: only nodes labelled pool=gpu take work. It reads one
    // label, so it is asked once per node class.
    dev.ok(&[
        "plugin",
        "install",
        &wasm("label-filter"),
        "--name",
        "pools",
        "--kind",
        "filter",
        "--config",
        r#"{"key": "pool", "allow": ["gpu"]}"#,
        "--class-pure",
        "true",
    ]);
    assert_eq!(plugin(&dev, "pools")["class_pure"], true);
    dev.run_spec("web", "name: web\nimage: busybox:latest\ninstances: 2\nresources: {cpu: 0.1, memory: 16Mi}\ncommand: [/bin/sleep, '60']\n");
    wait_for("web on dgx1", T, || {
        let ps = dev.ps();
        let web: Vec<&Value> = ps.iter().filter(|t| t["app"] == "web").collect();
        (web.len() == 2 && web.iter().all(|t| t["node"] == "dgx1")).then_some(())
    });
    let ps = dev.ps();
    let web = ps.iter().find(|t| t["app"] == "web").unwrap();
    let ex = dev.ok(&["explain", web["id"].as_str().unwrap()]);
    assert!(
        ex.contains("filtered by pools: label pool not in [gpu]"),
        "{ex}"
    );

    // Settings-only upgrade, rollback.
    dev.ok(&[
        "plugin",
        "upgrade",
        "pools",
        "--config",
        r#"{"key": "pool", "allow": ["gpu", "cpu"]}"#,
    ]);
    assert_eq!(plugin(&dev, "pools")["version"], 2);
    dev.ok(&["plugin", "rollback", "pools"]);
    let p = plugin(&dev, "pools");
    assert_eq!(
        (p["version"].clone(), p["config"]["allow"].clone()),
        (1.into(), serde_json::json!(["gpu"]))
    );
    assert_eq!(p["class_pure"], true, "kept through upgrade and rollback");
    assert!(fails(&dev, &["plugin", "rollback", "pools"]).contains("no earlier version"));

    // Admission: GPU apps need a team label; small requests are raised.
    dev.ok(&[
        "plugin",
        "install",
        &wasm("team-admission"),
        "--name",
        "teams",
        "--kind",
        "admission",
        "--config",
        r#"{"min_cpu": 200, "min_memory": 33554432}"#,
    ]);
    let gpu_app = dev.data.path().join("train.yaml");
    std::fs::write(&gpu_app, "name: train\nimage: busybox:latest\nrestart: never\nresources: {memory: 64Mi, gpus: {count: 1}}\ncommand: [/bin/sh, -c, 'ls /dev | grep nvidia']\n").unwrap();
    let e = fails(&dev, &["run", "-f", gpu_app.to_str().unwrap()]);
    assert!(
        e.contains("refused by admission plugin teams: apps that ask for GPUs need a team label"),
        "{e}"
    );
    assert!(
        dev.ps().iter().all(|t| t["app"] != "train"),
        "nothing stored"
    );
    dev.run_spec("small", "name: small\nimage: busybox:latest\nresources: {cpu: 0.05, memory: 8Mi}\ncommand: [/bin/sleep, '60']\n");
    let t = dev.wait_task("small", T, |t| !t["node"].is_null());
    assert_eq!(t["allocation"]["cpu_millis"], 200, "{t}");
    assert_eq!(t["allocation"]["memory_bytes"], 32 << 20, "{t}");

    // Allocate: the highest free GPUs, and the container gets exactly those.
    dev.ok(&[
        "plugin",
        "install",
        &wasm("last-gpu"),
        "--name",
        "last",
        "--kind",
        "allocate",
    ]);
    std::fs::write(
        &gpu_app,
        std::fs::read_to_string(&gpu_app)
            .unwrap()
            .replace("restart: never\n", "restart: never\nlabels: {team: ml}\n"),
    )
    .unwrap();
    dev.ok(&["run", "--detach", "-f", gpu_app.to_str().unwrap()]);
    let t = dev.wait_task("train", T, |t| t["state"] == "exited");
    assert_eq!(t["allocation"]["gpus"][0]["index"], 7, "{t}");
    assert_eq!(dev.ok(&["logs", "train"]).trim(), "nvidia7");

    // Shadow: a scorer that would prefer other nodes is compared, not enforced.
    dev.ok(&[
        "plugin",
        "install",
        &wasm("binpack"),
        "--name",
        "shadowpack",
        "--kind",
        "score",
        "--mode",
        "shadow",
        "--weight",
        "50",
    ]);
    dev.run_spec("more", "name: more\nimage: busybox:latest\ninstances: 2\nresources: {cpu: 0.2, memory: 16Mi}\ncommand: [/bin/sleep, '60']\n");
    let shadow = wait_for("shadow decisions", T, || {
        let p = plugin(&dev, "shadowpack");
        (p["shadow"]["decisions"].as_u64()? >= 2).then_some(p)
    });
    assert_eq!(shadow["mode"], "shadow");
    assert!(
        shadow["metrics"]["calls"].as_u64().unwrap() >= 2,
        "{shadow}"
    );

    // Restart the server: every plugin is back and loaded.
    dev.kill9();
    dev.spawn();
    let list: Value = serde_json::from_str(&dev.ok(&["plugin", "list", "--json"])).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["last", "pools", "shadowpack", "teams"]);
    wait_for("plugins loaded after restart", T, || {
        (plugin(&dev, "teams")["loaded"] == "yes").then_some(())
    });
    let again = dev.data.path().join("train2.yaml");
    std::fs::write(
        &again,
        "name: train2\nimage: busybox:latest\nresources: {gpus: {count: 1}}\n",
    )
    .unwrap();
    let e = fails(&dev, &["run", "-f", again.to_str().unwrap()]);
    assert!(e.contains("refused by admission plugin teams"), "{e}");

    // Remove: placement is unconstrained again.
    dev.ok(&["plugin", "remove", "pools"]);
    dev.run_spec("wide", "name: wide\nimage: busybox:latest\ninstances: 3\nconstraints: [[hostname, UNIQUE]]\nresources: {cpu: 0.1, memory: 16Mi}\ncommand: [/bin/sleep, '60']\n");
    wait_for("wide on every node", T, || {
        let ps = dev.ps();
        let nodes: std::collections::BTreeSet<String> = ps
            .iter()
            .filter(|t| t["app"] == "wide" && !t["node"].is_null())
            .map(|t| t["node"].as_str().unwrap().to_string())
            .collect();
        (nodes.len() == 3).then_some(())
    });
    assert!(fails(&dev, &["plugin", "show", "pools"]).contains("no plugin named pools"));
}

#[test]
fn the_allowed_registries_plugin_sees_the_whole_request() {
    let dev = Dev::start();
    // A 0.2 (`admission-review`) component installs as an admission plugin.
    dev.ok(&[
        "plugin",
        "install",
        &wasm("allowed-registries"),
        "--name",
        "registries",
        "--kind",
        "admission",
        "--config",
        r#"{"registries": ["registry.example.com:5000"]}"#,
    ]);
    let spec = dev.data.path().join("other.yaml");
    std::fs::write(
        &spec,
        "name: other\nimage: other.example.com/team/app:1\ncommand: [sleep, '60']\n",
    )
    .unwrap();
    let e = fails(&dev, &["run", "-f", spec.to_str().unwrap()]);
    assert!(
        e.contains(
            "refused by admission plugin registries: image: registry other.example.com is not \
             allowed (allowed: registry.example.com:5000)"
        ),
        "{e}"
    );
    assert!(
        dev.ps().iter().all(|t| t["app"] != "other"),
        "nothing stored"
    );
    // The allowed registry passes the plugin (and then fails to resolve:
    // there is no such registry here), and node-local images pass.
    std::fs::write(
        &spec,
        "name: other\nimage: registry.example.com:5000/team/app:1\ncommand: [sleep, '60']\n",
    )
    .unwrap();
    let e = fails(&dev, &["run", "-f", spec.to_str().unwrap()]);
    assert!(!e.contains("refused by admission plugin"), "{e}");
    assert!(e.contains("image:"), "{e}");
    dev.run_spec(
        "local",
        "name: local\nimage: busybox:latest\ncommand: [sleep, '60']\n",
    );
    // 0.1 admission plugins keep working beside it.
    dev.ok(&[
        "plugin",
        "install",
        &wasm("team-admission"),
        "--name",
        "teams",
        "--kind",
        "admission",
    ]);
    dev.run_spec(
        "local2",
        "name: local2\nimage: busybox:latest\ncommand: [sleep, '60']\n",
    );
    let t = dev.wait_task("local2", T, |t| !t["node"].is_null());
    assert_eq!(t["allocation"]["cpu_millis"], 250, "{t}");
}
