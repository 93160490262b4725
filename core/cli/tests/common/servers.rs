//! A replicated control plane of real `berth server` processes on
//! loopback, each on its own 127.0.0.x address (so firewall rules can cut
//! servers apart while test clients on 127.0.0.1 still reach them all).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto as pb;
use berth_proto::control_client::ControlClient;
use berth_proto::servers::{Bearer, Servers};

use super::{BERTH, wait_for};

/// One server process and where it lives.
pub struct Member {
    pub ip: String,
    pub port: u16,
    pub data: PathBuf,
    pub child: Option<Child>,
}

impl Member {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// Servers started by a test; killed and cleaned up on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub extra: Vec<String>,
    /// Flags for the first server's first start only (`--restore FILE`).
    pub first: Vec<String>,
}

/// A free port on `ip`.
pub fn free_port_on(ip: &str) -> u16 {
    std::net::TcpListener::bind(format!("{ip}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// `n` servers: the first bootstraps, the others join it. `base` picks
    /// the addresses 127.0.0.<base+i>; `extra` are flags for every server.
    pub fn start(n: usize, base: u8, extra: &[&str]) -> Cluster {
        Cluster::start_first(n, base, extra, &[])
    }

    /// [`Cluster::start`] whose first server also gets `first` on its
    /// first start.
    pub fn start_first(n: usize, base: u8, extra: &[&str], first: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("berth-ha-")
            .tempdir()
            .unwrap();
        let mut c = Cluster {
            dir,
            members: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            first: first.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            c.add(base + i as u8);
        }
        c
    }

    /// Starts one more server at 127.0.0.<last>, joining the cluster (or
    /// bootstrapping it when it is the first); waits until it is a member.
    pub fn add(&mut self, last: u8) -> usize {
        let ip = format!("127.0.0.{last}");
        let port = free_port_on(&ip);
        let i = self.members.len();
        let data = self.dir.path().join(format!("s{i}"));
        self.members.push(Member {
            ip,
            port,
            data,
            child: None,
        });
        self.spawn(i);
        let addr = self.members[i].addr();
        if i == 0 {
            // The management token every test client uses (the same
            // secret for every cluster of this test binary).
            super::bootstrap(&addr);
        }
        wait_for(
            &format!("server {addr} to be a member"),
            Duration::from_secs(20),
            || {
                self.members_of(i)
                    .filter(|m| m.members.iter().any(|x| x.address == addr) && m.commit > 0)
                    .map(|_| ())
            },
        );
        i
    }

    /// Starts (or restarts) server `i` on its data dir.
    pub fn spawn(&mut self, i: usize) {
        let first = self.members.iter().position(|m| m.child.is_some());
        let m = &self.members[i];
        std::fs::create_dir_all(&m.data).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.data.join("server.log"))
            .unwrap();
        super::issue_into(&m.data, "server", &format!("s{i}"), &m.ip);
        let mut cmd = Command::new(BERTH);
        cmd.args(["server", "--listen", &m.addr(), "--data-dir"])
            .arg(&m.data)
            .args(&self.extra)
            .env("BERTH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(f) = first.filter(|f| *f != i) {
            cmd.args(["--join", &self.members[f].addr()]);
        } else if !m.data.join("server").exists() {
            cmd.arg("--bootstrap").args(&self.first);
        }
        let child = cmd.spawn().unwrap();
        self.members[i].child = Some(child);
    }

    /// `kill -9` server `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM server `i` and wait for it to exit (it hands leadership
    /// over first).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every running server's address, comma-separated.
    pub fn addrs(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(Member::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Server `i`'s view of the membership.
    pub fn members_of(&self, i: usize) -> Option<pb::MembersResponse> {
        let addr = self.members[i].addr();
        block(async move {
            let s = connect(&addr);
            let mut c = ControlClient::with_interceptor(s.channel(), Bearer);
            tokio::time::timeout(
                Duration::from_secs(2),
                c.server_members(pb::MembersRequest {}),
            )
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
        })
    }

    /// The index of the server that leads now (as a running server says).
    pub fn leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            if let Some(r) = self.members_of(i)
                && r.role == "leader"
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits for a leader among the running servers.
    pub fn wait_leader(&self) -> usize {
        wait_for("a leader", Duration::from_secs(20), || self.leader())
    }

    /// `berth` with `BERTH_ADDR` = every running server.
    pub fn berth(&self, args: &[&str]) -> std::process::Output {
        Command::new(BERTH)
            .args(args)
            .env("BERTH_ADDR", self.addrs())
            .env("BERTH_DATA_DIR", &super::pki().dir)
            .output()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }
}

/// The servers at `addrs` over TLS with the test CA (calls made with
/// [`Bearer`] carry the management token).
pub fn connect(addrs: &str) -> Servers {
    Servers::parse(addrs).unwrap().with_tls(Some(super::tls()))
}

/// Runs a future on a small runtime of its own.
pub fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// An app spec with no instances: a write that schedules nothing.
pub fn app_spec(name: &str) -> String {
    format!("name: {name}\nimage: busybox:latest\ninstances: 0\n")
}

/// `RunApp` through `servers` (following the leader, retrying).
pub async fn write(
    servers: &Servers,
    name: &str,
    request_id: &str,
) -> Result<pb::RunAppResponse, tonic::Status> {
    let req = pb::RunAppRequest {
        spec: app_spec(name),
        request_id: request_id.to_string(),
    };
    servers
        .call(|ch| {
            let r = req.clone();
            async move { ControlClient::with_interceptor(ch, Bearer).run_app(r).await }
        })
        .await
        .map(|r| r.into_inner())
}

/// The apps as server `addr` has applied them (a stale read), by name.
pub async fn apps_on(addr: &str, stale: bool) -> Result<Vec<pb::App>, tonic::Status> {
    let s = Servers::parse(addr)
        .map_err(tonic::Status::invalid_argument)?
        .with_tls(Some(super::tls()));
    let mut req = tonic::Request::new(pb::ListAppsRequest {});
    if stale {
        req.metadata_mut()
            .insert(berth_proto::servers::STALE_HEADER, "1".parse().unwrap());
    }
    let mut c = ControlClient::with_interceptor(s.channel(), Bearer);
    match tokio::time::timeout(Duration::from_secs(5), c.list_apps(req)).await {
        Ok(r) => r.map(|r| r.into_inner().apps),
        Err(_) => Err(tonic::Status::deadline_exceeded("list_apps took over 5 s")),
    }
}

/// A node agent of a [`Cluster`] with its own data dir and the demo image;
/// killed and cleaned up on drop.
pub struct Agent {
    pub data: PathBuf,
    pub child: Child,
}

impl Agent {
    /// Starts agent `name` simulating `inventory`, talking to `servers`.
    pub fn start(servers: &str, data: PathBuf, name: &str, inventory: &str) -> Agent {
        super::issue_into(&data, "agent", name, "127.0.0.1");
        let log = std::fs::File::create(data.join("agent.log")).unwrap();
        let child = Command::new(BERTH)
            .args(["agent", "--node-name", name, "--inventory", inventory])
            .args(["--listen", &format!("127.0.0.1:{}", super::free_port())])
            .env("BERTH_ADDR", servers)
            .env("BERTH_DATA_DIR", &data)
            .env("BERTH_DYNAMIC_PORTS", super::dynamic_range())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let agent = Agent { data, child };
        // Each node has its own image store, filled through its agent.
        super::wait_for(
            &format!("agent {name} to take the demo image"),
            Duration::from_secs(60),
            || {
                Command::new(BERTH)
                    .args(["image", "import", super::demo_image().to_str().unwrap()])
                    .args(["--node", name])
                    .env("BERTH_ADDR", servers)
                    .env("BERTH_DATA_DIR", &super::pki().dir)
                    .output()
                    .unwrap()
                    .status
                    .success()
                    .then_some(())
            },
        );
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        super::clean_up_node(&self.data);
    }
}
