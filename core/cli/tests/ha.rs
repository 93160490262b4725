//! Fault tests of the replicated control plane with real `berth server`
//! processes on loopback: leaders killed with SIGKILL under a stream of
//! writes, a full stop and restart, a server added to a cluster whose log
//! was compacted (it catches up by snapshot) and removed again, and a
//! minority cut off by firewall rules. Each test cleans up its processes
//! and rules.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::servers::{Agent, Cluster, apps_on, block, write};
use common::wait_for;

/// A small deterministic generator for kill moments.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// An acknowledged write: app name, version, `changed`, when.
type Ack = (String, u64, bool, Instant);

#[test]
fn twenty_leader_kills_lose_no_acknowledged_write() {
    let mut c = Cluster::start(3, 21, &["--raft-tick", "50ms"]);
    c.wait_leader();
    let all = c.addrs();
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let writer = {
        let (stop, acks) = (stop.clone(), acks.clone());
        std::thread::spawn(move || {
            block(async move {
                let mut s = common::servers::connect(&all);
                s.deadline = Duration::from_secs(20);
                let mut unacked = 0;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w-{i}");
                    match write(&s, &name, &format!("ha-{i}")).await {
                        Ok(r) => {
                            acks.lock()
                                .unwrap()
                                .push((name, r.version, r.changed, Instant::now()))
                        }
                        Err(_) => unacked += 1,
                    }
                    i += 1;
                }
                unacked
            })
        })
    };
    let mut rng = Lcg(0x5eed_0000 ^ u64::from(std::process::id()));
    let mut kills = Vec::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        let l = c.wait_leader();
        kills.push(Instant::now());
        c.kill9(l);
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        c.spawn(l);
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let unacked = writer.join().unwrap();
    let acks = acks.lock().unwrap().clone();
    assert!(acks.len() > 100, "only {} writes acknowledged", acks.len());

    // After every kill the cluster acknowledged writes again (the time is
    // measured in BENCHMARKS.md; here only a generous bound).
    let mut gaps: Vec<Duration> = kills
        .iter()
        .map(|k| {
            let next = acks.iter().find(|a| a.3 > *k).map(|a| a.3 - *k);
            next.unwrap_or_else(|| panic!("no write acknowledged after a kill"))
        })
        .collect();
    gaps.sort();
    assert!(
        gaps[gaps.len() - 1] < Duration::from_secs(8),
        "writes stalled after a kill: {gaps:?}"
    );

    // Every acknowledged write is there, exactly once: its version is the
    // one acknowledged, and the acknowledgement came from the first apply
    // (a retry applied twice would answer `changed: false`).
    let l = c.wait_leader();
    let apps = block(apps_on(&c.members[l].addr(), false)).unwrap();
    let by_name: BTreeMap<String, u64> = apps.into_iter().map(|a| (a.name, a.version)).collect();
    for (name, version, changed, _) in &acks {
        assert!(changed, "{name}: a retried write was applied again");
        assert_eq!(by_name.get(name), Some(version), "{name}");
    }
    println!(
        "{} writes acknowledged, {unacked} not; time to the next acknowledged write after each kill: median {:?}, max {:?}",
        acks.len(),
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1]
    );
}

#[test]
fn restart_all_then_a_new_server_catches_up_by_snapshot_and_leaves() {
    let mut c = Cluster::start(3, 31, &["--raft-tick", "50ms", "--snapshot-every", "20"]);
    c.wait_leader();
    let s = common::servers::connect(&c.addrs());
    let before: BTreeMap<String, u64> = block(async {
        let mut m = BTreeMap::new();
        for i in 0..60 {
            let r = write(&s, &format!("a-{i}"), &format!("rs-{i}"))
                .await
                .unwrap();
            m.insert(format!("a-{i}"), r.version);
        }
        m
    });

    // Stop every server (gracefully), start them again: the same state.
    for i in 0..3 {
        c.stop(i);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    let l = c.wait_leader();
    let after: BTreeMap<String, u64> = block(apps_on(&c.members[l].addr(), false))
        .unwrap()
        .into_iter()
        .map(|a| (a.name, a.version))
        .collect();
    assert_eq!(after, before);

    // A fourth server joins a cluster whose log was compacted: it can only
    // catch up from a snapshot.
    let leader_snapshot = c.members_of(l).unwrap().snapshot;
    assert!(leader_snapshot >= 20, "the leader's log was not compacted");
    let d = c.add(34);
    let addr = c.members[d].addr();
    wait_for(
        "the new server to catch up",
        Duration::from_secs(20),
        || {
            let apps = block(apps_on(&addr, true)).ok()?;
            (apps.len() == before.len()).then_some(())
        },
    );
    let view = c.members_of(d).unwrap();
    assert!(
        view.snapshot >= 20,
        "caught up without a snapshot: {view:?}"
    );
    assert_eq!(view.members.len(), 4);

    // Remove it again: the quorum is three servers' again and writes go on.
    let out = c.berth(&["server", "leave", &addr]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.kill9(d);
    let l = c.wait_leader();
    assert_eq!(c.members_of(l).unwrap().members.len(), 3);
    let s = common::servers::connect(&c.addrs());
    block(write(&s, "after-leave", "rs-after")).unwrap();
    // Bad input names the cause and changes nothing.
    let out = c.berth(&["server", "leave", "127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no server at"));
}

/// `berth ps --json` through every server of `c`.
fn ps(c: &Cluster) -> Vec<serde_json::Value> {
    let out = c.berth(&["ps", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn wait_running(c: &Cluster, app: &str) -> serde_json::Value {
    wait_for(&format!("{app} to run"), Duration::from_secs(30), || {
        ps(c)
            .into_iter()
            .find(|t| t["app"] == app && t["state"] == "running")
    })
}

#[test]
fn an_agent_follows_the_leader_and_its_tasks_stay() {
    let mut c = Cluster::start(3, 51, &["--raft-tick", "50ms"]);
    c.wait_leader();
    let _agent = Agent::start(&c.addrs(), c.dir.path().join("agent"), "n1", "cpu-2s");
    let spec = |name: &str| {
        format!(
            "name: {name}\nimage: busybox:latest\ncommand: [/bin/busybox, sleep, '3600']\nresources: {{cpu: 0.1, memory: 16Mi}}\nstop_grace: 1s\n"
        )
    };
    let run = |c: &Cluster, name: &str| {
        let f = c.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, spec(name)).unwrap();
        let out = c.berth(&["run", "--detach", "-f", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&c, "one");
    let first = wait_running(&c, "one");

    // The leader dies: the agent moves to the new one, which places new
    // work there and leaves the running task alone.
    let l = c.wait_leader();
    c.kill9(l);
    run(&c, "two");
    wait_running(&c, "two");
    let now = ps(&c);
    let one: Vec<_> = now.iter().filter(|t| t["app"] == "one").collect();
    assert_eq!(one.len(), 1, "{now:?}");
    assert_eq!(one[0]["id"], first["id"]);
    assert_eq!(one[0]["state"], "running");
    c.spawn(l);

    for app in ["one", "two"] {
        let out = c.berth(&["rm", app]);
        assert!(out.status.success());
    }
    wait_for("the tasks to be removed", Duration::from_secs(30), || {
        ps(&c).is_empty().then_some(())
    });
}

/// Firewall rules that cut one address off from others; removed on drop.
struct Cut(Vec<Vec<String>>);

impl Cut {
    fn new(isolated: &str, others: &[String]) -> Cut {
        let mut rules = Vec::new();
        for o in others {
            rules.push(vec!["-s", isolated, "-d", o]);
            rules.push(vec!["-s", o, "-d", isolated]);
        }
        let rules: Vec<Vec<String>> = rules
            .into_iter()
            .map(|r| {
                let mut v: Vec<String> = r.into_iter().map(String::from).collect();
                v.extend(["-j".into(), "DROP".into()]);
                v
            })
            .collect();
        for r in &rules {
            let ok = Command::new("iptables")
                .arg("-I")
                .arg("INPUT")
                .args(r)
                .status()
                .expect("iptables (installed by ci/setup.sh)");
            assert!(ok.success(), "iptables -I INPUT {r:?}");
        }
        Cut(rules)
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for r in self.0.drain(..) {
            let _ = Command::new("iptables")
                .arg("-D")
                .arg("INPUT")
                .args(&r)
                .status();
        }
    }
}

#[test]
fn a_cut_off_minority_refuses_writes_and_reads_then_catches_up() {
    let c = Cluster::start(3, 41, &["--raft-tick", "50ms"]);
    let l = c.wait_leader();
    let s = common::servers::connect(&c.addrs());
    block(write(&s, "before", "p-0")).unwrap();
    // Cut the leader off from the other two.
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let other_ips: Vec<String> = others.iter().map(|i| c.members[*i].ip.clone()).collect();
    let cut = Cut::new(&c.members[l].ip, &other_ips);
    let majority = others
        .iter()
        .map(|i| c.members[*i].addr())
        .collect::<Vec<_>>()
        .join(",");
    let isolated = c.members[l].addr();

    // The majority elects a leader and keeps serving writes.
    let mut maj = common::servers::connect(&majority);
    maj.deadline = Duration::from_secs(20);
    block(write(&maj, "during", "p-1")).unwrap();

    // The isolated server refuses writes and linearizable reads...
    // (Asked directly: a client following redirects would find the new
    // leader, as it should.)
    let w = block(async {
        let s = common::servers::connect(&isolated);
        let mut c = berth_proto::control_client::ControlClient::with_interceptor(
            s.channel(),
            berth_proto::servers::Bearer,
        );
        let req = berth_proto::RunAppRequest {
            spec: common::servers::app_spec("lost"),
            request_id: "p-2".into(),
        };
        tokio::time::timeout(Duration::from_secs(15), c.run_app(req)).await
    });
    assert!(
        matches!(w, Ok(Err(_))),
        "the isolated server did not refuse a write: {w:?}"
    );
    assert!(block(apps_on(&isolated, false)).is_err());
    // ...but serves stale reads of what it had.
    let stale = block(apps_on(&isolated, true)).unwrap();
    assert!(stale.iter().any(|a| a.name == "before"));
    assert!(!stale.iter().any(|a| a.name == "during"));

    // Heal: it catches up (and never applied the refused write).
    drop(cut);
    wait_for("the minority to catch up", Duration::from_secs(20), || {
        let apps = block(apps_on(&isolated, false)).ok()?;
        apps.iter().any(|a| a.name == "during").then_some(apps)
    });
    let apps = block(apps_on(&isolated, false)).unwrap();
    assert!(!apps.iter().any(|a| a.name == "lost"));
}

/// A rollout outlives its leader: the leader is killed with SIGKILL in
/// the middle of a rolling update; the new leader carries the deployment
/// (kept in the replicated state) to its end, and no instance of the new
/// version is started twice.
#[test]
fn a_new_leader_finishes_a_rollout_and_starts_nothing_twice() {
    let mut c = Cluster::start(3, 61, &["--raft-tick", "50ms"]);
    c.wait_leader();
    let _agent = Agent::start(&c.addrs(), c.dir.path().join("agent"), "n1", "cpu-2s");
    let spec = |label: &str| {
        format!(
            "name: web\nimage: busybox:latest\ninstances: 4\nrestart: always\n\
             resources: {{cpu: 0.05, memory: 32Mi}}\nports: [{{name: http, host: 0}}]\n\
             env: {{LABEL: {label}}}\nstop_grace: 1s\n\
             command: [/bin/sh, -c, 'mkdir -p /w; echo $LABEL > /w/index.html; exec httpd -f -p $BERTH_PORT_HTTP -h /w']\n\
             ready: {{http: {{port: http}}, interval: 500ms, timeout: 400ms}}\n\
             update: {{max_surge: 1, max_unavailable: 0, min_ready_time: 2s, deadline: 2m}}\n"
        )
    };
    let run = |c: &Cluster, label: &str, detach: bool| {
        let f = c.dir.path().join(format!("{label}.yaml"));
        std::fs::write(&f, spec(label)).unwrap();
        let mut args = vec!["run", "-f", f.to_str().unwrap()];
        if detach {
            args.push("--detach");
        }
        let out = c.berth(&args);
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&c.berth(&["ps", "--json"]).stdout)
        );
    };
    let status = |c: &Cluster| -> serde_json::Value {
        let out = c.berth(&["deploy", "status", "web", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    run(&c, "one", false);
    run(&c, "two", true);
    // Mid-rollout: some new instances, some old ones left.
    wait_for(
        "the rollout to be half way",
        Duration::from_secs(60),
        || {
            let s = status(&c);
            (s["trigger"] == "update"
                && s["new"]["ready"].as_u64() >= Some(1)
                && s["old"]["total"].as_u64() >= Some(2))
            .then_some(())
        },
    );
    let l = c.wait_leader();
    c.kill9(l);
    let end = wait_for(
        "the new leader to finish it",
        Duration::from_secs(90),
        || {
            let s = status(&c);
            (s["phase"] != "running" && s["phase"].is_string()).then_some(s)
        },
    );
    assert_eq!(end["phase"], "succeeded", "{end}");
    let tasks: Vec<serde_json::Value> =
        wait_for("the old ones to go", Duration::from_secs(30), || {
            let t: Vec<_> = ps(&c).into_iter().filter(|t| t["app"] == "web").collect();
            (t.len() == 4).then_some(t)
        });
    let mut instances: Vec<u64> = tasks
        .iter()
        .map(|t| t["instance"].as_u64().unwrap())
        .collect();
    instances.sort();
    assert_eq!(instances, [0, 1, 2, 3], "{tasks:?}");
    for t in &tasks {
        assert_eq!(t["version"], end["version"], "{t}");
        assert_eq!(t["restarts"], 0, "{t}");
        // A second start of an instance would carry a `-d` id.
        let id = t["id"].as_str().unwrap();
        assert!(!id.contains("-d"), "{id} was started again");
        assert_eq!(t["ready"], true, "{t}");
    }
    c.spawn(l);
    let out = c.berth(&["rm", "web"]);
    assert!(out.status.success());
    wait_for("the tasks to be removed", Duration::from_secs(30), || {
        ps(&c).is_empty().then_some(())
    });
}
