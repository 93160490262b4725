//! Bridge networking and discovery with real containers and Debian's CNI
//! plugins: instances on one container port each behind their own host
//! port, found by name through the node's DNS (A and SRV), leaving the
//! answers when not ready; nothing left behind after stop, removal or an
//! agent crash. Needs root.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Dev, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// Two httpd instances on container port 8080, ready while /w/ready exists.
const WEB: &str = "name: web\nimage: busybox:latest\ninstances: 2\nrestart: always\nstop_grace: 1s\n\
ports: [{name: http, container: 8080, host: 0}]\n\
command: [/bin/sh, -c, 'mkdir -p /w; hostname > /w/index.html; echo ok > /w/ready; exec httpd -f -p 8080 -h /w']\n\
ready: {http: {port: http, path: /ready}, interval: 1s, timeout: 500ms, grace: 0s, failures: 1}\n";

fn ready_web(dev: &Dev, n: usize) -> Vec<Value> {
    wait_for("the web instances to be ready", T, || {
        let t: Vec<Value> = dev
            .ps()
            .into_iter()
            .filter(|t| t["app"] == "web" && t["ready"] == true && t["ip"].is_string())
            .collect();
        (t.len() == n).then_some(t)
    })
}

/// `dig +short` against the node's DNS on its bridge address.
fn dig(gateway: &str, name: &str, kind: &str) -> Vec<String> {
    let out = Command::new("dig")
        .args([
            "+short",
            "+time=2",
            "+tries=1",
            &format!("@{gateway}"),
            name,
            kind,
        ])
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

fn gateway_of(ip: &str) -> String {
    let mut parts: Vec<&str> = ip.split('.').collect();
    parts[3] = "1";
    parts.join(".")
}

fn get(port: u64) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "3",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What a node's networking holds: named namespaces, veths on its bridge,
/// iptables rules of its network, IPAM leases.
fn leftovers(dev: &Dev) -> (usize, usize, usize, usize) {
    let root = berth_runtime::state_root_for(dev.data.path());
    let tag: String = root
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .take(8)
        .collect();
    let netns = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("b{tag}-"))
        })
        .count();
    let bridge = format!("berth{}", &tag[..6]);
    let veths = Command::new("ip")
        .args(["-o", "link", "show", "master", &bridge])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    let rules = ["filter", "nat"]
        .iter()
        .map(|t| {
            let out = Command::new("iptables-save")
                .args(["-t", t])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("-A") && l.contains(&format!("{tag}-")))
                .count()
        })
        .sum();
    let leases = std::fs::read_dir(root.join("cni/ipam").join(format!("berth-{tag}")))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .count();
    (netns, veths, rules, leases)
}

fn none_left(dev: &Dev, when: &str) {
    wait_for(&format!("nothing left {when}"), T, || {
        (leftovers(dev) == (0, 0, 0, 0)).then_some(())
    });
}

#[test]
fn instances_are_found_by_name_and_leave_nothing_behind() {
    let dev = Dev::start();
    dev.run_spec("web", WEB);
    let web = ready_web(&dev, 2);
    let ips: Vec<String> = web
        .iter()
        .map(|t| t["ip"].as_str().unwrap().to_string())
        .collect();
    // Each on its own host port, both serving their own page.
    for t in &web {
        let port = t["ports"]["http"].as_u64().unwrap();
        assert_eq!(get(port).as_deref(), t["id"].as_str(), "{t}");
    }
    let gw = gateway_of(&ips[0]);
    let mut want = ips.clone();
    want.sort();
    assert_eq!(dig(&gw, "web.default.berth", "A"), want);
    let srv = dig(&gw, "_http._tcp.web.default.berth", "SRV");
    assert_eq!(srv.len(), 2, "{srv:?}");
    for t in &web {
        let port = t["ports"]["http"].as_u64().unwrap().to_string();
        assert!(
            srv.iter().any(|s| s.contains(&format!(" {port} "))),
            "{srv:?}"
        );
    }
    assert!(dig(&gw, "nope.default.berth", "A").is_empty());

    // A third container finds them by name, both of them.
    dev.run_spec(
        "client",
        "name: client\nimage: busybox:latest\nnetwork: bridge\nrestart: never\n\
         command: [/bin/sh, -c, 'nslookup web.default.berth; for i in 1 2 3 4 5 6 7 8; do wget -qO- http://web.default.berth:8080/; done']\n",
    );
    let c = dev.wait_task("client", T, |t| t["state"] == "exited");
    assert_eq!(c["exit_code"], 0, "{c}");
    let logs = dev.ok(&["logs", c["id"].as_str().unwrap()]);
    for ip in &ips {
        assert!(logs.contains(ip.as_str()), "nslookup shows {ip}: {logs}");
    }
    for t in &web {
        assert!(
            logs.contains(t["id"].as_str().unwrap()),
            "both answer: {logs}"
        );
    }

    // Not ready: out of the answers within 5 s; ready again: back.
    let pid = dev.init_pid(web[0]["id"].as_str().unwrap());
    let nsenter = |cmd: &str| {
        let ok = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "-p", "/bin/sh", "-c", cmd])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{cmd}");
    };
    nsenter("rm /w/ready");
    wait_for(
        "the unready instance to leave",
        Duration::from_secs(5),
        || (dig(&gw, "web.default.berth", "A") == vec![ips[1].clone()]).then_some(()),
    );
    assert_eq!(dig(&gw, "_http._tcp.web.default.berth", "SRV").len(), 1);
    nsenter("echo ok > /w/ready");
    wait_for("it to come back", Duration::from_secs(5), || {
        (dig(&gw, "web.default.berth", "A") == want).then_some(())
    });

    let e: Value = serde_json::from_str(&dev.ok(&["endpoints", "web", "--json"])).unwrap();
    assert_eq!(e.as_array().unwrap().len(), 2, "{e}");
    assert_eq!(e[0]["ports"][0]["port"], 8080, "{e}");

    dev.ok(&["stop", "web"]);
    dev.wait_task("web", T, |t| t["state"] == "stopped");
    dev.ok(&["rm", "client"]);
    none_left(&dev, "after a stop");
    dev.ok(&["rm", "web"]);
    none_left(&dev, "after removal");
}

#[test]
fn networking_survives_an_agent_crash() {
    let mut dev = Dev::start();
    dev.run_spec("web", &WEB.replace("instances: 2", "instances: 1"));
    let before = ready_web(&dev, 1).remove(0);
    let port = before["ports"]["http"].as_u64().unwrap();
    dev.kill9();
    // The container keeps serving while no agent runs.
    assert_eq!(get(port).as_deref(), before["id"].as_str());
    dev.spawn();
    let after = ready_web(&dev, 1).remove(0);
    assert_eq!((&after["id"], &after["ip"]), (&before["id"], &before["ip"]));
    assert_eq!(after["restarts"], 0, "{after}");
    assert_eq!(get(port).as_deref(), before["id"].as_str());
    let gw = gateway_of(after["ip"].as_str().unwrap());
    wait_for("its name after the restart", T, || {
        (dig(&gw, "web.default.berth", "A") == vec![after["ip"].as_str().unwrap().to_string()])
            .then_some(())
    });
    assert_eq!(leftovers(&dev), (1, 1, leftovers(&dev).2, 1));
    dev.ok(&["rm", "web"]);
    none_left(&dev, "after removal");
}

#[test]
fn a_node_without_the_plugins_fails_the_task_saying_why() {
    let dev = Dev::start_env(&[("BERTH_CNI_PATH", "/nonexistent")]);
    dev.run_spec("web", &WEB.replace("instances: 2", "instances: 1"));
    let t = dev.wait_task("web", T, |t| {
        t["message"]
            .as_str()
            .is_some_and(|m| m.contains("CNI plugin"))
    });
    let msg = t["message"].as_str().unwrap();
    assert!(
        msg.contains("network: CNI plugin \"bridge\" not found in /nonexistent (install containernetworking-plugins"),
        "{msg}"
    );
    assert_eq!(leftovers(&dev), (0, 0, 0, 0));
}
