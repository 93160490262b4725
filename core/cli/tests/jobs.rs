//! Jobs with real containers: retries with `BERTH_ATTEMPT`, a job that
//! runs out of retries, and a periodic job that never overlaps itself.
//! Needs root.

mod common;

use std::time::Duration;

use common::{Dev, wait_for};
use serde_json::Value;

fn runs(dev: &Dev, app: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&dev.ok(&["job", "runs", app, "--json"])).unwrap();
    v["runs"].as_array().unwrap().clone()
}

/// The newest run of `app` once it has ended.
fn ended(dev: &Dev, app: &str) -> Value {
    wait_for(
        &format!("a run of {app} to end"),
        Duration::from_secs(60),
        || {
            runs(dev, app)
                .into_iter()
                .next()
                .filter(|r| r["phase"] != "running")
        },
    )
}

#[test]
fn a_job_retries_until_it_succeeds_or_runs_out() {
    let dev = Dev::start();
    dev.run_spec(
        "flaky",
        "name: flaky\nimage: busybox:latest\nkind: job\nretries: 3\n\
         command: [/bin/sh, -c, 'echo attempt $BERTH_ATTEMPT; test $BERTH_ATTEMPT -ge 1']\n",
    );
    dev.run_spec(
        "broken",
        "name: broken\nimage: busybox:latest\nkind: job\nretries: 2\n\
         command: [/bin/sh, -c, 'echo attempt $BERTH_ATTEMPT; exit 4']\n",
    );
    let run = ended(&dev, "flaky");
    assert_eq!(run["phase"], "succeeded", "{run}");
    assert_eq!(
        (run["done"].as_u64(), run["trigger"].as_str()),
        (Some(1), Some("submit"))
    );
    let id = run["tasks"][0].as_str().unwrap();
    let task = dev.ps().into_iter().find(|t| t["id"] == id).unwrap();
    assert_eq!(
        (task["restarts"].as_u64(), task["exit_code"].as_i64()),
        (Some(1), Some(0)),
        "{task}"
    );
    assert_eq!(dev.ok(&["logs", id]), "attempt 0\nattempt 1\n");

    let run = ended(&dev, "broken");
    assert_eq!(run["phase"], "failed", "{run}");
    let msg = run["message"].as_str().unwrap();
    assert!(
        msg.contains("failed after 2 retries") && msg.contains("out of retries"),
        "{msg}"
    );
    let id = run["tasks"][0].as_str().unwrap();
    let task = dev.ps().into_iter().find(|t| t["id"] == id).unwrap();
    assert_eq!(task["restarts"], 2, "{task}");
    assert_eq!(dev.ok(&["logs", id]), "attempt 0\nattempt 1\nattempt 2\n");

    // A manual start of a job whose run ended: a new run.
    let out = dev.ok(&["job", "start", "flaky"]);
    assert!(out.contains("run "), "{out}");
    let all = runs(&dev, "flaky");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["trigger"], "manual");
}

#[test]
fn a_periodic_job_under_forbid_never_overlaps_itself() {
    let dev = Dev::start();
    dev.run_spec(
        "tick",
        "name: tick\nimage: busybox:latest\nkind: job\nschedule: '@every 5s'\nconcurrency: forbid\n\
         stop_grace: 1s\ncommand: [/bin/sh, -c, 'sleep 8']\n",
    );
    // Runs start at about 5 s and 15 s (10 s is skipped: the first still runs).
    let all = wait_for("two ended runs", Duration::from_secs(60), || {
        let r = runs(&dev, "tick");
        let done = r.iter().filter(|x| x["phase"] == "succeeded").count();
        (done >= 2).then_some(r)
    });
    let mut spans: Vec<(u64, u64)> = all
        .iter()
        .map(|r| {
            let end = r["ended_ms"].as_u64().unwrap_or(u64::MAX);
            (r["started_ms"].as_u64().unwrap(), end)
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "runs overlap: {all:?}");
    }
    assert!(all.iter().all(|r| r["trigger"] == "schedule"), "{all:?}");
    let skipped: u64 = all.iter().map(|r| r["skipped"].as_u64().unwrap()).sum();
    assert!(skipped >= 1, "a due run was skipped: {all:?}");
    // forbid: a manual start while one runs is refused, naming why.
    wait_for("a run to be going", Duration::from_secs(20), || {
        runs(&dev, "tick")
            .first()
            .filter(|r| r["phase"] == "running")
            .map(|_| ())
    });
    let out = dev.berth(&["job", "start", "tick"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("concurrency is forbid"));
}
