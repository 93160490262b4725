//! Volumes with real containers: a redis-like instance keeps its file in
//! its persistent volume through kill -9, a rolling upgrade and a `berth
//! dev` restart; each instance has its own; the size is enforced; a
//! drained node keeps the instance until its volume is removed; host paths
//! only under the root, read-only when asked.

mod common;

use std::time::Duration;

use common::{Dev, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn db(version: &str) -> String {
    format!(
        "name: db\nimage: busybox:latest\ninstances: 2\nrestart: always\nstop_grace: 1s\n\
         resources: {{cpu: 0.05, memory: 16Mi}}\nenv: {{V: {version}}}\n\
         constraints: [[hostname, UNIQUE]]\n\
         volumes:\n  - {{name: data, path: /data, size: 16Mi}}\n\
         \x20 - {{name: scratch, path: /scratch, size: 8Mi, ephemeral: true}}\n\
         command: [/bin/sh, -c, 'echo $BERTH_INSTANCE-$V >> /data/log; cat /data/log; \
         dd if=/dev/zero of=/data/big bs=1M count=40 2>&1 | grep -o \"No space left on device\" | head -1; \
         rm -f /data/big; exec sleep 3600']\n"
    )
}

fn running(dev: &Dev, app: &str) -> Vec<Value> {
    dev.ps()
        .into_iter()
        .filter(|t| t["app"] == app && t["state"] == "running")
        .collect()
}

/// The running task of instance `i`.
fn instance(dev: &Dev, i: u32) -> Value {
    wait_for(&format!("instance {i} running"), T, || {
        running(dev, "db")
            .into_iter()
            .find(|t| t["instance"] == i && t["desired"] == "run")
    })
}

/// Waits until instance `i`'s task (of version `v`, if given) logs `want`.
fn wait_log(dev: &Dev, i: u32, want: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let t = running(dev, "db")
            .into_iter()
            .find(|t| t["instance"] == i && t["desired"] == "run");
        let mut last = String::new();
        if let Some(t) = t {
            last = dev.ok(&["logs", t["id"].as_str().unwrap()]);
            if last.contains(want) {
                return t;
            }
        }
        if start.elapsed() > T {
            panic!(
                "instance {i} did not log {want:?} (last: {last:?}): {}\n{}",
                dev.ok(&["ps"]),
                dev.ok(&["deploy", "status", "db"])
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn persistent_volumes_keep_their_data_and_pin_their_instance() {
    let root = tempfile::tempdir().unwrap();
    let root_s = root.path().to_str().unwrap().to_string();
    let mut dev = Dev::start_env(&[("BERTH_HOST_VOLUME_ROOT", root_s.as_str())]);
    dev.agent_with("n2", "cpu-2s", &["--host-volume-root", &root_s]);

    // Host paths: only under the root, refused at submit naming the field.
    let out = {
        let f = dev.data.path().join("bad.yaml");
        std::fs::write(
            &f,
            "name: bad\nimage: busybox:latest\n\
             volumes: [{name: etc, path: /x, host_path: /etc}]\n",
        )
        .unwrap();
        dev.berth(&["run", "--detach", "-f", f.to_str().unwrap()])
    };
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("volumes[0].host_path") && err.contains("outside"),
        "{err}"
    );
    // A read-only host path cannot be written.
    std::fs::write(root.path().join("app.conf"), "conf\n").unwrap();
    dev.run_spec(
        "cfg",
        &format!(
            "name: cfg\nimage: busybox:latest\nrestart: never\n\
             volumes: [{{name: cfg, path: /etc/app, host_path: {root_s}, read_only: true}}]\n\
             command: [/bin/sh, -c, 'cat /etc/app/app.conf; touch /etc/app/x 2>&1 | grep -o Read-only']\n"
        ),
    );
    let t = dev.wait_task("cfg", T, |t| t["state"] == "exited");
    assert_eq!(
        dev.ok(&["logs", t["id"].as_str().unwrap()]),
        "conf\nRead-only\n"
    );

    // Two instances, one per node, each with its own volume; writing past
    // the size fails with ENOSPC.
    dev.run_spec("db", &db("a"));
    let full = "No space left on device\n";
    let i0 = wait_log(&dev, 0, &format!("0-a\n{full}"));
    let i1 = wait_log(&dev, 1, &format!("1-a\n{full}"));
    let node0 = i0["node"].as_str().unwrap().to_string();
    let node1 = i1["node"].as_str().unwrap().to_string();
    assert_ne!(node0, node1);
    let vols: Value = serde_json::from_str(&dev.ok(&["volume", "ls", "--json"])).unwrap();
    let vols = vols.as_array().unwrap();
    assert_eq!(vols.len(), 2, "{vols:?}");
    for v in vols {
        let i = v["instance"].as_u64().unwrap();
        let want = if i == 0 { &node0 } else { &node1 };
        assert_eq!(&v["node"], want.as_str(), "{v}");
    }
    // The instance on the dev node: kill -9 of its process restarts it
    // with its data.
    let (k, knode) = if node0 != "n2" {
        (0, &node0)
    } else {
        (1, &node1)
    };
    let kt = instance(&dev, k);
    let pid = dev.init_pid(kt["id"].as_str().unwrap());
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_log(&dev, k, &format!("{k}-a\n{k}-a\n"));
    // A rolling upgrade: the new task of each instance goes to its node
    // and finds the data.
    dev.run_spec("db", &db("b"));
    let kt = wait_log(&dev, k, &format!("{k}-a\n{k}-a\n{k}-b\n"));
    assert_eq!(&kt["node"], knode.as_str());
    let d = 1 - k;
    wait_log(&dev, d, &format!("{d}-a\n{d}-b\n"));
    // A `berth dev` restart: the containers are adopted; the next version
    // still finds the data.
    dev.kill9();
    dev.spawn();
    dev.run_spec("db", &db("c"));
    wait_log(&dev, k, &format!("{k}-a\n{k}-a\n{k}-b\n{k}-c\n"));
    let dt = wait_log(&dev, d, &format!("{d}-a\n{d}-b\n{d}-c\n"));
    assert_eq!(dt["node"], "n2");

    // Draining n2 leaves the instance there, saying why.
    dev.ok(&["node", "drain", "n2"]);
    let held = wait_for("the drain to leave it with a reason", T, || {
        dev.ps().into_iter().find(|t| {
            t["instance"] == d
                && t["app"] == "db"
                && t["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("stays on drained node n2")
        })
    });
    assert_eq!(held["state"], "running", "{held}");
    assert_eq!(held["desired"], "run", "{held}");
    // Removing a volume in use on an open node is refused.
    let out = dev.berth(&["volume", "rm", &format!("db-{k}-data")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    // Removing the drained one moves the instance (to a new node, one
    // per node), with a fresh volume, and n2 deletes the old data.
    dev.agent_with("n3", "cpu-2s", &[]);
    dev.ok(&["volume", "rm", &format!("db-{d}-data")]);
    let moved = wait_log(&dev, d, &format!("{d}-c\n{full}"));
    assert_ne!(moved["node"], "n2");
    let n2_volume = dev
        .data
        .path()
        .join("agents/n2/node/volumes")
        .join(format!("db-{d}-data"));
    wait_for("n2 to delete the old volume", T, || {
        (!n2_volume.exists()).then_some(())
    });
}
