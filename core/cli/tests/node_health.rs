//! Node health with real agents and containers: an agent that goes silent
//! has its tasks running elsewhere within twice the heartbeat timeout, and
//! when it comes back its stale copies are stopped; a drained node's tasks
//! move off it.

mod common;

use std::time::{Duration, Instant};

use common::{Dev, wait_for};

const SLEEPER: &str = "name: mover
image: busybox:latest
command: [/bin/busybox, sleep, '3600']
resources: {cpu: 0.1, memory: 16Mi}
";

#[test]
fn a_silent_node_loses_its_tasks_and_a_drained_one_gives_them_up() {
    let timeout = Duration::from_secs(3);
    let mut dev = Dev::start_env(&[("BERTH_HEARTBEAT_TIMEOUT", "3s")]);
    let local = dev.nodes()[0]["name"].as_str().unwrap().to_string();
    dev.agent("n2", "cpu-2s");
    dev.agent("n3", "cpu-2s");
    // Keep work off the dev node itself, so the task lands on n2 or n3.
    dev.ok(&["node", "drain", &local]);
    let out = dev.berth(&["node", "drain", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node named nope"));
    dev.run_spec("mover", SLEEPER);
    let first = dev.wait_task("mover", Duration::from_secs(30), |t| {
        t["state"] == "running"
    });
    let first_node = first["node"].as_str().unwrap().to_string();
    let first_id = first["id"].as_str().unwrap().to_string();
    assert!(first_node == "n2" || first_node == "n3", "{first}");
    let (gone, other) = if first_node == "n2" {
        (0, "n3")
    } else {
        (1, "n2")
    };

    // The agent dies without a word (its container keeps running).
    let killed = Instant::now();
    let _ = dev.agents[gone].kill();
    let _ = dev.agents[gone].wait();
    let moved = dev.wait_task("mover", 4 * timeout, |t| {
        t["state"] == "running" && t["node"] == other
    });
    let took = killed.elapsed();
    println!("the task ran elsewhere {took:?} after its node fell silent");
    assert!(
        took <= 2 * timeout,
        "the task ran elsewhere only after {took:?} (heartbeat timeout {timeout:?})"
    );
    assert_ne!(
        moved["id"],
        first_id.as_str(),
        "a replacement, not the old task"
    );
    let down = dev
        .nodes()
        .into_iter()
        .find(|n| n["name"] == first_node.as_str())
        .unwrap();
    assert_eq!(down["status"], "down");

    // It comes back: the stale copy is stopped and removed, the replacement
    // stays where it is.
    dev.agent(&first_node, "cpu-2s");
    wait_for(
        "the stale copy to be removed",
        Duration::from_secs(30),
        || {
            let ps = dev.ps();
            (!ps.iter().any(|t| t["id"] == first_id.as_str())).then_some(())
        },
    );
    let ps = dev.ps();
    let running: Vec<_> = ps
        .iter()
        .filter(|t| t["app"] == "mover" && t["state"] == "running")
        .collect();
    assert_eq!(running.len(), 1, "{ps:?}");
    assert_eq!(running[0]["node"], other);

    // Draining the node it runs on moves it back.
    dev.ok(&["node", "drain", other]);
    dev.wait_task("mover", Duration::from_secs(30), |t| {
        t["state"] == "running" && t["node"] == first_node.as_str()
    });
    let nodes = dev.nodes();
    let drained = nodes.iter().find(|n| n["name"] == other).unwrap();
    assert_eq!(drained["status"], "ready,drained");
    dev.ok(&["node", "undrain", other]);
}
