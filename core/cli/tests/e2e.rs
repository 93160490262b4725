//! End to end through the real binary: specs become real containers via
//! raft, the scheduler, the agent, the shim and libcontainer. Needs root.

mod common;

use std::time::Duration;

use common::{Dev, wait_for};

const T: Duration = Duration::from_secs(30);

#[test]
fn demo_app_serves_its_page() {
    let dev = Dev::start();
    let port = common::free_port();
    let spec = std::fs::read_to_string(common::repo().join("examples/hello/app.yaml"))
        .unwrap()
        .replace("8080", &port.to_string());
    dev.run_spec("hello", &spec);
    let task = dev.wait_task("hello", T, |t| t["state"] == "running");
    assert_eq!(task["node"].as_str().map(|s| !s.is_empty()), Some(true));
    let body = wait_for("the page", T, || {
        let out = std::process::Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/")])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(body.contains("Hello from Berth"), "{body}");
    let apps = dev.ok(&["apps"]);
    assert!(apps.contains("hello") && apps.contains("1/1"), "{apps}");
    let nodes = dev.ok(&["nodes"]);
    assert!(
        nodes.contains("ready") && nodes.contains("250m/"),
        "{nodes}"
    );
}

#[test]
fn exit_code_logs_and_restart_backoff() {
    let dev = Dev::start();
    dev.run_spec(
        "three",
        "name: three\nimage: busybox:latest\ncommand: [/bin/sh, -c, 'echo hello; exit 3']\nrestart: never\n",
    );
    let t = dev.wait_task("three", T, |t| t["state"] == "exited");
    assert_eq!(t["exit_code"], 3);
    assert_eq!(t["restarts"], 0);
    let id = t["id"].as_str().unwrap();
    assert_eq!(dev.ok(&["logs", id]), "hello\n");
    assert_eq!(
        dev.ok(&["logs", "three"]),
        "hello\n",
        "an app name picks its task"
    );
    // Following the log of an ended container returns once it is drained.
    assert_eq!(dev.ok(&["logs", "-f", id]), "hello\n");

    dev.run_spec(
        "flaky",
        "name: flaky\nimage: busybox:latest\ncommand: [/bin/sh, -c, 'echo hello; exit 3']\nrestart: on-failure\n",
    );
    let t = dev.wait_task("flaky", T, |t| {
        t["restarts"].as_u64() >= Some(3) && t["state"] == "exited"
    });
    assert_eq!(t["exit_code"], 3);
    // Backoff: 0.5 s, 1 s, 2 s... so three restarts take at least 1.5 s and
    // the restart count stays small.
    assert!(t["restarts"].as_u64().unwrap() < 8, "{t}");
    let logs = dev.ok(&["logs", "flaky"]);
    assert!(logs.matches("hello").count() >= 3, "{logs}");
}

/// Every container learns who and where it is (`BERTH_*`, named ports);
/// one that crashes in a loop ends `failed` once over its restart limit,
/// and is not restarted again.
#[test]
fn berth_variables_and_a_crash_loop_over_the_restart_limit() {
    let dev = Dev::start();
    let port = common::free_port();
    dev.run_spec(
        "loop",
        &format!(
            "name: loop\nimage: busybox:latest\nrestart: always\nports: [{{name: http, host: {port}}}]\n\
             restart_limit: {{count: 2, window: 1m}}\n\
             command: [/bin/sh, -c, 'echo attempt=$BERTH_ATTEMPT task=$BERTH_TASK_ID app=$BERTH_APP instance=$BERTH_INSTANCE node=$BERTH_NODE http=$BERTH_PORT_HTTP port=$PORT; exit 1']\n"
        ),
    );
    let t = dev.wait_task("loop", T, |t| t["state"] == "failed");
    let msg = t["message"].as_str().unwrap();
    assert!(msg.starts_with("crash loop: 2 restarts within 1m"), "{t}");
    assert_eq!(t["restarts"], 2, "{t}");
    assert_eq!(t["given_up"], true, "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    let node = t["node"].as_str().unwrap().to_string();
    let logs = dev.ok(&["logs", &id]);
    for attempt in 0..3 {
        let want = format!(
            "attempt={attempt} task={id} app=loop instance=0 node={node} http={port} port={port}"
        );
        assert!(logs.contains(&want), "{want} not in:\n{logs}");
    }
    // Given up: longer than the next backoff, and nothing restarts it.
    std::thread::sleep(Duration::from_secs(3));
    let t = dev.wait_task("loop", T, |t| t["state"] == "failed");
    assert_eq!(t["restarts"], 2, "{t}");
    assert_eq!(dev.ok(&["logs", &id]).matches("attempt=").count(), 3);
}

/// `berth scale` 4 -> 6 -> 2: the survivors keep their ids, their
/// containers (0 restarts) and the app's version.
#[test]
fn scale_keeps_the_running_instances() {
    let dev = Dev::start();
    dev.run_spec(
        "sc",
        "name: sc\nimage: busybox:latest\ninstances: 4\nresources: {cpu: 10m, memory: 16Mi}\ncommand: [/bin/sleep, '3600']\n",
    );
    let running = |n: usize| {
        wait_for(&format!("{n} running instances of sc"), T, || {
            let tasks: Vec<_> = dev
                .ps()
                .into_iter()
                .filter(|t| t["app"] == "sc" && t["desired"] == "run")
                .collect();
            (tasks.len() == n && tasks.iter().all(|t| t["state"] == "running")).then_some(tasks)
        })
    };
    let ids = |tasks: &[serde_json::Value]| -> std::collections::BTreeSet<String> {
        tasks
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let four = running(4);
    let version = four[0]["version"].clone();
    assert!(dev.ok(&["scale", "sc", "6"]).contains("6 instances"));
    let six = running(6);
    assert!(ids(&four).is_subset(&ids(&six)), "{four:?} -> {six:?}");
    assert_eq!(
        dev.ok(&["scale", "sc", "2"]).trim(),
        format!("app sc: 2 instances (version {version})")
    );
    let two = running(2);
    assert!(ids(&two).is_subset(&ids(&four)), "{two:?}");
    for t in &two {
        assert_eq!(t["restarts"], 0, "{t}");
        assert_eq!(t["version"], version, "{t}");
    }
    let instances: Vec<_> = two
        .iter()
        .map(|t| t["instance"].as_u64().unwrap())
        .collect();
    assert_eq!(
        instances
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [0, 1].into()
    );
    // Refused before anything is proposed, naming the cause.
    let out = dev.berth(&["scale", "nope", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no app named nope"));
    let out = dev.berth(&["scale", "sc", "5000"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("instances: 5000"));
}

/// Liveness and readiness: a container reports healthy and ready while
/// its checks pass; once its liveness check fails `failures` times in a
/// row it is restarted, the message naming the check.
#[test]
fn a_failing_liveness_check_restarts_the_container() {
    let dev = Dev::start();
    let port = common::free_port();
    dev.run_spec(
        "live",
        &format!(
            "name: live\nimage: busybox:latest\nrestart: always\nports: [{{name: http, host: {port}}}]\n\
             command: [/bin/sh, -c, 'mkdir -p /www; echo ok > /www/index.html; touch /tmp/ok; (sleep 4; rm /tmp/ok) & exec httpd -f -p {port} -h /www']\n\
             health: {{exec: [/bin/sh, -c, 'test -f /tmp/ok'], interval: 500ms, timeout: 400ms, grace: 0s, failures: 2}}\n\
             ready: {{http: {{port: http, path: /index.html}}, interval: 500ms, timeout: 400ms}}\n"
        ),
    );
    let t = dev.wait_task("live", T, |t| {
        t["state"] == "running" && t["health"] == "healthy" && t["ready"] == true
    });
    assert_eq!(t["restarts"], 0, "{t}");
    // The reason stands for the restart backoff (500 ms): polled every 100 ms.
    let t = dev.wait_task("live", T, |t| {
        t["message"]
            .as_str()
            .is_some_and(|m| m.contains("health check failed"))
    });
    let msg = t["message"].as_str().unwrap();
    assert!(
        msg.starts_with("health check failed: exec /bin/sh -c test -f /tmp/ok (")
            && msg.contains("2 in a row")
            && msg.contains("restarting in"),
        "{t}"
    );
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["ready"], false, "{t}");
    // After the restart it is healthy again (the new container made /tmp/ok).
    dev.wait_task("live", T, |t| {
        t["restarts"].as_u64() >= Some(1) && t["health"] == "healthy" && t["ready"] == true
    });
}

#[test]
fn bad_specs_are_rejected_and_store_nothing() {
    let dev = Dev::start();
    let cases = [
        (
            "name: ok\nimage: busybox:latest\nresources: {memory: lots}\n",
            "resources.memory",
        ),
        ("name: Bad_Name\nimage: busybox:latest\n", "name"),
        ("name: ok\nimage: busybox:latest\nbogus: 1\n", "bogus"),
        (
            "name: ok\nimage: busybox:latest\nrestart: sometimes\n",
            "restart",
        ),
        (
            "name: ok\nimage: busybox:latest\nports: [{host: 65536}]\n",
            "ports[0].host",
        ),
        (
            "{\"name\": \"ok\", \"image\": \"busybox:latest\", \"resources\": {\"cpu\": \"x\"}}",
            "resources.cpu",
        ),
        // The fields of issue 13: each refusal names its field.
        (
            "name: ok\nimage: busybox:latest\nupdate: {max_surge: 0, max_unavailable: 0}\n",
            "update",
        ),
        (
            "name: ok\nimage: busybox:latest\nhealth: {http: {port: web}}\n",
            "health.http.port",
        ),
        (
            "name: ok\nimage: busybox:latest\nkind: job\nschedule: \"61 * * * *\"\n",
            "schedule",
        ),
        ("name: ok\nimage: busybox:latest\nretries: 3\n", "retries"),
        (
            "name: ok\nimage: busybox:latest\nrestart_limit: {count: 0}\n",
            "restart_limit.count",
        ),
        (
            "name: ok\nimage: busybox:latest\nenv: {BERTH_APP: x}\n",
            "env.BERTH_APP",
        ),
        (
            "name: ok\nimage: busybox:latest\nkind: job\nupdate: {max_surge: 2}\n",
            "update: a job does not roll out",
        ),
        (
            "name: ok\nimage: busybox:latest\nkind: job\nconcurrency: allow\n",
            "concurrency: only a periodic job",
        ),
        (
            "name: ok\nimage: busybox:latest\nkind: job\nrestart: always\n",
            "restart: a job runs to completion",
        ),
        (
            "name: ok\nimage: busybox:latest\ndeadline: 5m\n",
            "deadline: only a job",
        ),
        (
            "name: ok\nimage: busybox:latest\nupdate: {max_surge: 101%}\n",
            "update.max_surge",
        ),
        // Networking (issue 14).
        (
            "name: ok\nimage: busybox:latest\nnamespace: Not_OK\n",
            "namespace: \"Not_OK\" is not a valid namespace",
        ),
        (
            "name: ok\nimage: busybox:latest\nports: [{container: 70000}]\n",
            "ports[0].container",
        ),
        (
            "name: ok\nimage: busybox:latest\nports: [{name: a, container: 80}, {name: a, container: 81}]\n",
            "ports[1].name",
        ),
        (
            "name: ok\nimage: busybox:latest\nnetwork: host\nports: [{host: 80, container: 80}]\n",
            "ports[0].container: only with network: bridge",
        ),
    ];
    for (i, (yaml, field)) in cases.iter().enumerate() {
        let path = dev.data.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let out = dev.berth(&["run", "-f", path.to_str().unwrap()]);
        assert!(!out.status.success(), "case {i} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(field),
            "case {i}: error does not name {field}: {err}"
        );
    }
    let out = dev.berth(&["run", "-f", "/nonexistent.yaml"]);
    assert!(!out.status.success());
    assert_eq!(dev.ok(&["apps", "--json"]).trim(), "[]");
    assert!(dev.ps().is_empty());
}

#[test]
fn containers_survive_an_agent_crash_and_are_reattached() {
    let mut dev = Dev::start();
    dev.run_spec(
        "ticker",
        "name: ticker\nimage: busybox:latest\ncommand: [/bin/sh, -c, 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done']\n",
    );
    let t = dev.wait_task("ticker", T, |t| t["state"] == "running");
    let id = t["id"].as_str().unwrap().to_string();
    let pid = dev.init_pid(&id);
    dev.kill9();
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with the agent"
    );
    let log = dev.task_dir(&id).join("container.log");
    let before = std::fs::metadata(&log).unwrap().len();
    dev.spawn();
    let t = dev.wait_task("ticker", T, |t| t["state"] == "running");
    assert_eq!(t["id"], id.as_str());
    // Longer than the first restart backoff: a wrongly restarted task would show.
    std::thread::sleep(Duration::from_millis(1500));
    let t = dev.wait_task("ticker", T, |t| t["state"] == "running");
    assert_eq!(t["restarts"], 0);
    // Same init process, and no second container for the task.
    let pid2 = dev.init_pid(&id);
    assert_eq!(pid, pid2);
    let shims = std::process::Command::new("pgrep")
        .args(["-f", &format!("shim --dir {}", dev.task_dir(&id).display())])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&shims.stdout).lines().count(),
        1,
        "exactly one shim"
    );
    let containers = std::process::Command::new("pgrep")
        .args(["-f", "echo tick"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&containers.stdout).lines().count(),
        1,
        "exactly one container"
    );
    std::thread::sleep(Duration::from_millis(700));
    let after = std::fs::metadata(&log).unwrap().len();
    assert!(after > before, "logs continue after the restart");
    let logs = dev.ok(&["logs", &id]);
    assert!(logs.starts_with("tick 0\n"), "{logs}");
    assert!(logs.starts_with("tick 0\n"));
}

#[test]
fn stop_and_rm_clean_up_everything() {
    let dev = Dev::start();
    dev.run_spec(
        "sleeper",
        "name: sleeper\nimage: busybox:latest\ncommand: [/bin/sleep, '1000']\nstop_grace: 500ms\n",
    );
    let t = dev.wait_task("sleeper", T, |t| t["state"] == "running");
    let id = t["id"].as_str().unwrap().to_string();
    let pid = dev.init_pid(&id);
    // Its memory cgroup, named after the node and the container.
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory = cgroups
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .unwrap();
    assert!(
        memory.starts_with("/berth/") && memory.ends_with(&format!("-{id}.0")),
        "{memory}"
    );
    dev.ok(&["stop", "sleeper"]);
    // sleep ignores SIGTERM as pid 1: SIGKILL after the 500 ms grace.
    let t = dev.wait_task("sleeper", T, |t| t["state"] == "stopped");
    assert_eq!(t["exit_code"], 137);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/memory{memory}")).exists(),
        "cgroup removed"
    );
    assert!(
        dev.task_dir(&id).join("container.log").exists(),
        "stopped tasks keep their logs"
    );
    dev.ok(&["rm", "sleeper"]);
    wait_for("the task to be deleted", T, || {
        dev.ps().is_empty().then_some(())
    });
    assert!(!dev.task_dir(&id).exists(), "task files removed");
    assert!(!dev.run_dir(&id).exists(), "run files removed");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(dev.data.path().to_str().unwrap()),
        "rootfs unmounted"
    );
    assert_eq!(dev.ok(&["apps", "--json"]).trim(), "[]");
    let out = dev.berth(&["stop", "sleeper"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no app named sleeper"));
}

/// The image's `User` is honoured: a uid as is, a name through the
/// image's own /etc/passwd (the demo image has `nobody`, 65534).
#[test]
fn the_images_user_runs_the_container() {
    let dev = Dev::start();
    for (user, tag) in [("1000", "u1000"), ("nobody", "nobody")] {
        let dir = dev.data.path().join(format!("image-{tag}"));
        let ok = std::process::Command::new("cp")
            .args([
                "-a",
                common::demo_image().to_str().unwrap(),
                dir.to_str().unwrap(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let ok = std::process::Command::new("umoci")
            .args([
                "config",
                "--image",
                &format!("{}:busybox:latest", dir.display()),
            ])
            .args(["--config.user", user])
            .status()
            .unwrap()
            .success();
        assert!(ok, "umoci config");
        dev.ok(&[
            "image",
            "import",
            dir.to_str().unwrap(),
            "--name",
            &format!("{tag}:latest"),
        ]);
        dev.run_spec(
            tag,
            &format!(
                "name: {tag}\nimage: {tag}:latest\nrestart: never\ncommand: [/bin/sh, -c, 'id -u; id -g']\n"
            ),
        );
        let t = dev.wait_task(tag, T, |t| t["state"] == "exited");
        assert_eq!(t["exit_code"], 0, "{t}");
        let want = if user == "1000" {
            "1000\n0\n"
        } else {
            "65534\n65534\n"
        };
        assert_eq!(dev.ok(&["logs", t["id"].as_str().unwrap()]), want, "{user}");
    }
}
