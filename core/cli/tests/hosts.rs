//! Two "hosts" on one machine: network namespaces on a bridge of their
//! own, each with its own address and a real agent; one server in the
//! root namespace. A client container on host A resolves the SRV name of
//! an app on host B and gets its page through B's address and mapped
//! host port (Nomad's bridge model). Needs root.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BERTH, wait_for};
use serde_json::Value;

const NET: &str = "172.30.77";

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap()
        .success();
    assert!(ok, "{cmd}");
}

/// The hosts' wiring; torn down on drop.
struct Hosts {
    procs: Vec<Child>,
    dirs: Vec<tempfile::TempDir>,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for d in &self.dirs {
            common::clean_up_node(d.path());
        }
        for h in ["ha", "hb"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("bt-{h}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", "bt-hosts"])
            .status();
    }
}

fn berth(addr: &str, args: &[&str]) -> std::process::Output {
    Command::new(BERTH)
        .args(args)
        .env("BERTH_ADDR", addr)
        .env("BERTH_DATA_DIR", &common::pki().dir)
        .output()
        .unwrap()
}

#[test]
fn a_client_on_one_host_reaches_an_app_on_another_by_its_srv_name() {
    let mut hosts = Hosts {
        procs: Vec::new(),
        dirs: Vec::new(),
    };
    // Leftovers of an interrupted run first.
    let _ = Command::new("ip")
        .args(["link", "del", "bt-hosts"])
        .status();
    sh(&format!(
        "ip link add bt-hosts type bridge && ip addr add {NET}.1/24 dev bt-hosts && ip link set bt-hosts up"
    ));
    for (i, h) in ["ha", "hb"].iter().enumerate() {
        let ns = format!("bt-{h}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        sh(&format!(
            "ip netns add {ns} && ip link add bt-{h}0 type veth peer name eth0 netns {ns} && \
             ip link set bt-{h}0 master bt-hosts up && \
             ip -n {ns} addr add {NET}.{}/24 dev eth0 && ip -n {ns} link set eth0 up && \
             ip -n {ns} link set lo up && ip -n {ns} route add default via {NET}.1",
            i + 2
        ));
    }
    // One server, on the hosts' network.
    let server_dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let addr = format!("{NET}.1:{port}");
    common::issue_into(server_dir.path(), "server", "s0", &format!("{NET}.1"));
    hosts.procs.push(
        Command::new(BERTH)
            .args(["server", "--bootstrap", "--listen", &addr])
            .env("BERTH_DATA_DIR", server_dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::bootstrap(&addr);
    wait_for("the server", Duration::from_secs(20), || {
        berth(&addr, &["nodes"]).status.success().then_some(())
    });
    // An agent per host, inside its namespace.
    for (i, h) in ["ha", "hb"].iter().enumerate() {
        let dir = tempfile::Builder::new()
            .prefix("berth-host-")
            .tempdir()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        common::issue_into(dir.path(), "agent", h, &format!("{NET}.{}", i + 2));
        hosts.procs.push(
            // nsenter switches only the network namespace (`ip netns exec`
            // would also remount /sys, hiding the cgroups).
            Command::new("nsenter")
                .arg(format!("--net=/run/netns/bt-{h}"))
                .args([BERTH, "agent"])
                .args([
                    "--node-name",
                    h,
                    "--listen",
                    &format!("{NET}.{}:7701", i + 2),
                ])
                .env("BERTH_ADDR", &addr)
                .env("BERTH_DATA_DIR", dir.path())
                .env("BERTH_DNS_LISTEN", "off")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        hosts.dirs.push(dir);
    }
    wait_for("both hosts", Duration::from_secs(30), || {
        let out = berth(&addr, &["nodes", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let ready = v
            .as_array()?
            .iter()
            .filter(|n| n["status"] == "ready")
            .count();
        (ready == 2).then_some(())
    });
    // Into both hosts' stores, through their agents.
    let import = berth(
        &addr,
        &["image", "import", common::demo_image().to_str().unwrap()],
    );
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let run = |name: &str, yaml: &str| {
        let f = server_dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        let out = berth(&addr, &["run", "--detach", "-f", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        "web",
        "name: web\nimage: busybox:latest\nconstraints: [[hostname, CLUSTER, hb]]\nrestart: always\n\
         ports: [{name: http, container: 8080, host: 0}]\n\
         command: [/bin/sh, -c, 'mkdir -p /w; hostname > /w/index.html; exec httpd -f -p 8080 -h /w']\n\
         ready: {http: {port: http}, interval: 1s, timeout: 500ms, grace: 0s}\n",
    );
    let web = wait_for("web to be ready on hb", Duration::from_secs(30), || {
        let out = berth(&addr, &["ps", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|t| t["app"] == "web" && t["ready"] == true)
            .cloned()
    });
    assert_eq!(web["node"], "hb");
    run(
        "client",
        "name: client\nimage: busybox:latest\nnetwork: bridge\nrestart: never\n\
         constraints: [[hostname, CLUSTER, ha]]\n\
         command: [/bin/sh, -c, 'nslookup -type=SRV _http._tcp.web.default.berth > /tmp/srv; cat /tmp/srv; \
         set -- $(grep \"service =\" /tmp/srv | head -1 | sed \"s/.*service = //\"); \
         echo target $4 port $3; wget -qO- http://$4:$3/']\n",
    );
    let client = wait_for("the client to end", Duration::from_secs(30), || {
        let out = berth(&addr, &["ps", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|t| t["app"] == "client" && t["state"] == "exited")
            .cloned()
    });
    assert_eq!(client["node"], "ha");
    let logs =
        String::from_utf8_lossy(&berth(&addr, &["logs", client["id"].as_str().unwrap()]).stdout)
            .into_owned();
    let port = web["ports"]["http"].as_u64().unwrap();
    assert!(
        logs.contains(&format!("target hb.node.berth. port {port}"))
            || logs.contains(&format!("target hb.node.berth port {port}")),
        "{logs}"
    );
    assert!(
        logs.contains(web["id"].as_str().unwrap()),
        "B's page reached from A: {logs}"
    );
    assert_eq!(client["exit_code"], 0, "{client}");
    for app in ["web", "client"] {
        berth(&addr, &["rm", app]);
    }
    wait_for("the tasks to go", Duration::from_secs(30), || {
        let out = berth(&addr, &["ps", "--json"]);
        out.stdout.starts_with(b"[]").then_some(())
    });
}
