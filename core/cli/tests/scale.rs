//! The control plane at scale, not timed: 200 hollow nodes and 20,000
//! tasks through 3 real servers, with the leader killed halfway. Every task
//! ends running exactly once, no node is marked down, and every watcher
//! that stayed connected saw every event (its view equals the state).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto as pb;
use berth_proto::control_client::ControlClient;
use common::servers::{Cluster, block};
use common::{BERTH, wait_for};

const NODES: usize = 200;
const APPS: usize = 20;
const PER_APP: usize = 1000;

/// What one watcher saw: task id -> state, and whether its stream ended.
#[derive(Default)]
struct Seen {
    tasks: BTreeMap<String, i32>,
    ended: Option<String>,
}

fn watch(addr: String, seen: Arc<Mutex<Seen>>) {
    std::thread::spawn(move || {
        block(async move {
            let s = common::servers::connect(&addr);
            let mut c = ControlClient::with_interceptor(s.channel(), berth_proto::servers::Bearer)
                .max_decoding_message_size(pb::MAX_MESSAGE);
            let mut stream = match c.watch_tasks(pb::WatchTasksRequest::default()).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    seen.lock().unwrap().ended = Some(e.to_string());
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(ev)) => {
                        let t = ev.task.unwrap_or_default();
                        let mut g = seen.lock().unwrap();
                        if ev.removed {
                            g.tasks.remove(&t.id);
                        } else {
                            g.tasks.insert(t.id, t.state);
                        }
                    }
                    Ok(None) => {
                        seen.lock().unwrap().ended = Some("stream closed".into());
                        return;
                    }
                    Err(e) => {
                        seen.lock().unwrap().ended = Some(e.to_string());
                        return;
                    }
                }
            }
        })
    });
}

fn hollow_stats(path: &std::path::Path) -> serde_json::Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

#[test]
fn twenty_thousand_tasks_on_hollow_nodes_survive_a_leader_kill() {
    let mut c = Cluster::start(3, 70, &[]);
    let stats = c.dir.path().join("hollow.json");
    let mut hollow = Command::new(BERTH)
        .args([
            "agent",
            "--hollow",
            &NODES.to_string(),
            "--inventory",
            "cpu-2s",
        ])
        .args(["--node-name", "hollow", "--stats"])
        .arg(&stats)
        .env("BERTH_ADDR", c.addrs())
        .env("BERTH_DATA_DIR", &common::pki().dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(c.dir.path().join("hollow.log")).unwrap())
        .spawn()
        .unwrap();
    wait_for("hollow nodes to register", Duration::from_secs(60), || {
        (hollow_stats(&stats)["registered"].as_u64() == Some(NODES as u64)).then_some(())
    });
    let watchers: Vec<(usize, Arc<Mutex<Seen>>)> = (0..3)
        .map(|i| {
            let seen = Arc::new(Mutex::new(Seen::default()));
            watch(c.members[i].addr(), seen.clone());
            (i, seen)
        })
        .collect();
    let mut killed = None;
    for a in 0..APPS {
        if a == APPS / 2 {
            let leader = c.wait_leader();
            c.kill9(leader);
            killed = Some(leader);
        }
        let spec = c.dir.path().join(format!("app{a}.yaml"));
        std::fs::write(
            &spec,
            format!(
                "name: scale-{a}\nimage: busybox:latest\ninstances: {PER_APP}\n\
                 resources: {{cpu: 10m, memory: 16Mi}}\n"
            ),
        )
        .unwrap();
        let out = c.berth(&["run", "--detach", "-f", spec.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let total = (APPS * PER_APP) as u64;
    wait_for("every task running", Duration::from_secs(600), || {
        (hollow_stats(&stats)["running"].as_u64() == Some(total)).then_some(())
    });

    // Every task runs exactly once: one running task per app instance.
    let tasks: Vec<serde_json::Value> =
        serde_json::from_slice(&c.berth(&["ps", "--json"]).stdout).unwrap();
    assert_eq!(
        tasks.len() as u64,
        total,
        "no task was replaced or duplicated"
    );
    let mut instances = std::collections::HashSet::new();
    for t in &tasks {
        assert_eq!(t["state"], "running", "{t}");
        assert_eq!(t["desired"], "run", "{t}");
        assert!(instances.insert((t["app"].to_string(), t["instance"].as_u64())));
    }
    // No node was ever marked down (nothing was replaced, all are ready).
    let nodes: Vec<serde_json::Value> =
        serde_json::from_slice(&c.berth(&["nodes", "--json"]).stdout).unwrap();
    assert_eq!(nodes.len(), NODES);
    assert!(
        nodes.iter().all(|n| n["status"] == "ready"),
        "a node was marked down"
    );

    // Watchers on the surviving servers stayed connected and saw it all.
    let running = pb::TaskState::Running as i32;
    for (i, seen) in &watchers {
        if Some(*i) == killed {
            continue;
        }
        wait_for(
            &format!("watcher on server {i} to see every task running"),
            Duration::from_secs(60),
            || {
                let g = seen.lock().unwrap();
                assert_eq!(g.ended, None, "watcher on server {i} was dropped");
                (g.tasks.len() as u64 == total && g.tasks.values().all(|s| *s == running))
                    .then_some(())
            },
        );
    }
    let _ = hollow.kill();
    let _ = hollow.wait();
}
