//! Quotas per namespace on a simulated DGX H100: instances past the
//! namespace's GPU quota wait with the quota's reason and start when room
//! frees up; another namespace's higher-priority work does not preempt a
//! namespace within its quota.

mod common;

use std::time::Duration;

use common::{Dev, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(40);

fn gpu_app(name: &str, instances: u32, priority: i32) -> String {
    format!(
        "name: {name}\nimage: busybox:latest\ninstances: {instances}\npriority: {priority}\n\
         command: [sleep, '1000']\nresources:\n  memory: 64Mi\n  gpus: {{count: 4, model: [H100]}}\n"
    )
}

fn states(dev: &Dev, ns: &str, app: &str) -> Vec<(String, String)> {
    let ps: Value = serde_json::from_str(&dev.ok(&["-n", ns, "ps", "--json"])).unwrap();
    ps.as_array()
        .unwrap()
        .iter()
        .filter(|t| t["app"] == app)
        .map(|t| {
            (
                t["state"].as_str().unwrap_or("").to_string(),
                t["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_namespace_over_its_gpu_quota_waits_and_keeps_what_it_has() {
    let mut dev = Dev::start();
    let cdi = dev.data.path().join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    common::write_gpu_cdi(&cdi);
    dev.agent_with("dgx1", "dgx-h100", &["--cdi-dir", cdi.to_str().unwrap()]);

    // Bad input names the flag and stores nothing.
    let out = dev.berth(&["quota", "set", "team-a", "--gpus", "H100=x"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--gpus"),
        "{out:?}"
    );
    dev.ok(&[
        "quota", "set", "team-a", "--gpus", "H100=8", "--tasks", "10",
    ]);

    let run = |ns: &str, name: &str, yaml: String| {
        let p = dev.data.path().join(format!("{name}.yaml"));
        std::fs::write(&p, yaml).unwrap();
        dev.ok(&["-n", ns, "run", "-d", "-f", p.to_str().unwrap()]);
    };
    run("team-a", "train", gpu_app("train", 2, 0));
    wait_for("train's two instances to run", T, || {
        (states(&dev, "team-a", "train")
            .iter()
            .filter(|(s, _)| s == "running")
            .count()
            == 2)
            .then_some(())
    });
    // The third 4-GPU instance would make 12 of 8.
    run("team-a", "extra", gpu_app("extra", 1, 0));
    let msg = wait_for("extra to wait on the quota", T, || {
        states(&dev, "team-a", "extra")
            .into_iter()
            .find(|(s, m)| s == "pending" && m.starts_with("quota:"))
            .map(|(_, m)| m)
    });
    assert_eq!(msg, "quota: namespace team-a uses 8/8 H100");
    let ls: Value = serde_json::from_str(&dev.ok(&["quota", "ls", "--json"])).unwrap();
    assert_eq!(ls[0]["namespace"], "team-a");
    assert_eq!(ls[0]["used"]["gpus"]["H100"], 8);
    assert_eq!(ls[0]["used"]["tasks"], 2);
    assert!(dev.ok(&["quota", "ls"]).contains("H100 8/8"));

    // Another namespace's higher-priority task does not take team-a's
    // GPUs: team-a is within its quota.
    run("team-b", "urgent", gpu_app("urgent", 1, 100));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        states(&dev, "team-b", "urgent")
            .iter()
            .all(|(s, _)| s == "pending"),
        "{:?}",
        states(&dev, "team-b", "urgent")
    );
    let train = states(&dev, "team-a", "train");
    assert_eq!(
        train.iter().filter(|(s, _)| s == "running").count(),
        2,
        "team-a lost an instance: {train:?}"
    );
    dev.ok(&["-n", "team-b", "rm", "urgent"]);

    // Room frees up: the waiting instance starts.
    dev.ok(&["-n", "team-a", "scale", "train", "1"]);
    wait_for("extra to run once train shrank", T, || {
        states(&dev, "team-a", "extra")
            .iter()
            .any(|(s, _)| s == "running")
            .then_some(())
    });
}
