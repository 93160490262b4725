//! A real `berth dev` cluster for integration tests: its own data dir and
//! port, the demo image imported, real containers, and a cleanup that
//! leaves no container, mount or cgroup behind.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod registry;
pub mod servers;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A range of 100 host ports for one test cluster's dynamic ports, apart
/// from every other cluster of this test process (and below the kernel's
/// ephemeral ports).
pub fn dynamic_range() -> String {
    let n = next_cluster();
    let first = 20000 + n * 100;
    format!("{first}-{}", first + 99)
}

/// A number per test cluster of this process, 0..120, for the ranges
/// clusters running at once must not share.
fn next_cluster() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 120
}

/// A range of node subnets for one test cluster, apart from the others
/// (and from the default 10.128.0.0/9 a real node on this machine uses).
pub fn node_subnets() -> String {
    format!("10.{}.0.0/16", 130 + next_cluster())
}

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The demo image layout, built once per test binary with ci/make-demo-image.sh.
pub fn demo_image() -> &'static Path {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("demo-image-{}", std::process::id()));
        let status = Command::new(repo().join("ci/make-demo-image.sh"))
            .arg(&out)
            .arg(repo().join("examples/hello/www"))
            .stdout(Stdio::null())
            .status()
            .expect("running ci/make-demo-image.sh");
        assert!(status.success(), "ci/make-demo-image.sh failed");
        out
    })
}

/// One CA, an admin client certificate and a management token shared by
/// the `berth server` clusters of this test binary (`berth dev` makes its
/// own in its data dir). Its directory works as a client's
/// `BERTH_DATA_DIR`: `ca.pem`, `client.pem`, `client-key.pem`, `token`.
pub struct Pki {
    pub dir: PathBuf,
    pub secret: String,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.to_str().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(BERTH).args(args).output().unwrap();
            assert!(out.status.success(), "berth {args:?}: {out:?}");
        };
        run(&["tls", "init", "--dir", d]);
        run(&["tls", "issue", "client", "admin", "--dir", d]);
        std::fs::rename(dir.join("client-admin.pem"), dir.join("client.pem")).unwrap();
        std::fs::rename(dir.join("client-admin-key.pem"), dir.join("client-key.pem")).unwrap();
        let secret = format!(
            "test-management-{:x}",
            std::process::id() as u64 * 7919 + 12345
        );
        std::fs::write(dir.join("token"), &secret).unwrap();
        berth_proto::servers::set_token(&secret).unwrap();
        Pki { dir, secret }
    })
}

/// Issues a `role` certificate for `name` (reached at `ip`) with the test
/// CA into `data` as `<role>.pem`, `<role>-key.pem`, with `ca.pem` and
/// (for servers, which sign joining agents) `ca-key.pem`.
pub fn issue_into(data: &Path, role: &str, name: &str, ip: &str) {
    let p = pki();
    std::fs::create_dir_all(data).unwrap();
    if data.join(format!("{role}.pem")).exists() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(p.dir.join(f), tmp.path().join(f)).unwrap();
    }
    let out = Command::new(BERTH)
        .args(["tls", "issue", role, name, "--san", ip, "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "issuing {role} {name}: {out:?}");
    std::fs::copy(
        tmp.path().join(format!("{role}-{name}.pem")),
        data.join(format!("{role}.pem")),
    )
    .unwrap();
    std::fs::copy(
        tmp.path().join(format!("{role}-{name}-key.pem")),
        data.join(format!("{role}-key.pem")),
    )
    .unwrap();
    std::fs::copy(p.dir.join("ca.pem"), data.join("ca.pem")).unwrap();
    if role == "server" {
        std::fs::copy(p.dir.join("ca-key.pem"), data.join("ca-key.pem")).unwrap();
    }
}

/// Bootstraps the ACLs of the servers at `addr` with the test [`Pki`]'s
/// management token (once the servers answer).
pub fn bootstrap(addr: &str) {
    let token = pki().dir.join("token");
    wait_for("the ACL bootstrap", Duration::from_secs(20), || {
        let out = Command::new(BERTH)
            .args(["acl", "bootstrap", "--secret-file"])
            .arg(&token)
            .env("BERTH_ADDR", addr)
            .env("BERTH_DATA_DIR", &pki().dir)
            .output()
            .unwrap();
        (out.status.success()
            || String::from_utf8_lossy(&out.stderr).contains("already bootstrapped"))
        .then_some(())
    });
}

/// TLS for in-process clients of `berth server` clusters (the token is
/// set for the whole process: see [`Pki`]).
pub fn tls() -> tonic::transport::ClientTlsConfig {
    let p = pki();
    let creds = berth_tls::Credentials::load(
        &berth_tls::Paths::default().in_dir(&p.dir, berth_tls::Role::Client),
    )
    .unwrap();
    creds.client(berth_tls::Role::Server)
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `berth ARGS` (against `dev`, if given) with `input` on its
/// standard input.
pub fn berth_stdin(dev: Option<&Dev>, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(BERTH);
    if let Some(dev) = dev {
        cmd.env("BERTH_ADDR", &dev.addr)
            .env("BERTH_DATA_DIR", dev.data.path());
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct Dev {
    pub addr: String,
    pub data: tempfile::TempDir,
    pub child: Option<Child>,
    /// Extra agents started with [`Dev::agent`].
    pub agents: Vec<Child>,
    /// Environment of the `berth dev` process.
    pub env: Vec<(String, String)>,
}

impl Dev {
    /// Starts `berth dev` with the demo image imported; waits for its node.
    pub fn start() -> Dev {
        Dev::start_env(&[])
    }

    /// [`Dev::start`] with extra environment for `berth dev`.
    pub fn start_env(env: &[(&str, &str)]) -> Dev {
        let data = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut dev = Dev {
            addr,
            data,
            child: None,
            agents: Vec::new(),
            // Clusters of tests running at once share the host's ports:
            // each takes its own dynamic range.
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain([
                    ("BERTH_DYNAMIC_PORTS".to_string(), dynamic_range()),
                    // Clusters running at once cannot share loopback's port
                    // 53: each node's DNS is on its bridge address only.
                    ("BERTH_DNS_LISTEN".to_string(), "off".to_string()),
                    ("BERTH_NODE_SUBNETS".to_string(), node_subnets()),
                ])
                .collect(),
        };
        dev.spawn();
        // Through the node's agent, into the store it runs containers from.
        dev.ok(&["image", "import", demo_image().to_str().unwrap()]);
        dev
    }

    /// Starts (or restarts) the `berth dev` process.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("dev.log"))
            .unwrap();
        let child = Command::new(BERTH)
            .arg("dev")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("BERTH_ADDR", &self.addr)
            .env("BERTH_DATA_DIR", self.data.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for("the node to register", Duration::from_secs(30), || {
            let out = self.berth(&["nodes", "--json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            (v.as_array()?.first()?["status"] == "ready").then_some(())
        });
    }

    /// Starts an extra agent named `name` simulating `inventory` (a fixture
    /// name or file), with its own data dir; waits until it is ready.
    pub fn agent(&mut self, name: &str, inventory: &str) {
        self.agent_with(name, inventory, &[]);
    }

    /// [`Dev::agent`] with extra flags.
    pub fn agent_with(&mut self, name: &str, inventory: &str, extra: &[&str]) {
        self.agent_bare(name, inventory, extra);
        // Each node has its own image store.
        self.ok(&[
            "image",
            "import",
            demo_image().to_str().unwrap(),
            "--node",
            name,
        ]);
    }

    /// [`Dev::agent_with`] without importing the demo image.
    pub fn agent_bare(&mut self, name: &str, inventory: &str, extra: &[&str]) {
        let data = self.data.path().join("agents").join(name);
        std::fs::create_dir_all(&data).unwrap();
        let log = std::fs::File::create(data.join("agent.log")).unwrap();
        // A new node joins with a token, as an operator's would.
        let token: Value =
            serde_json::from_str(&self.ok(&["node", "token", "create", "--json"])).unwrap();
        let child = Command::new(BERTH)
            .args(["agent", "--node-name", name, "--inventory", inventory])
            .args(extra)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--join-token", token["secret"].as_str().unwrap()])
            .env("BERTH_ADDR", &self.addr)
            .env("BERTH_CA", self.data.path().join("ca.pem"))
            .env("BERTH_DATA_DIR", &data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agents.push(child);
        wait_for(
            &format!("agent {name} to register"),
            Duration::from_secs(30),
            || {
                let out = self.berth(&["nodes", "--json"]);
                let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                v.as_array()?
                    .iter()
                    .any(|n| n["name"] == name && n["status"] == "ready")
                    .then_some(())
            },
        );
    }

    /// `berth nodes --json`.
    pub fn nodes(&self) -> Vec<Value> {
        let out = self.ok(&["nodes", "--json"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// SIGKILLs the `berth dev` process (its containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs the CLI against this cluster.
    pub fn berth(&self, args: &[&str]) -> Output {
        Command::new(BERTH)
            .args(args)
            .env("BERTH_ADDR", &self.addr)
            .env("BERTH_DATA_DIR", self.data.path())
            .output()
            .unwrap()
    }

    /// Runs the CLI and returns stdout, asserting success.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a spec file and submits it.
    pub fn run_spec(&self, name: &str, yaml: &str) -> String {
        let path = self.data.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        self.ok(&["run", "--detach", "-f", path.to_str().unwrap()])
    }

    /// `berth ps --json`.
    pub fn ps(&self) -> Vec<Value> {
        let out = self.ok(&["ps", "--json"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The first task of `app`, once `pred` holds for it.
    pub fn wait_task(&self, app: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for(
            &format!("a task of {app} to reach the expected state"),
            timeout,
            || self.ps().into_iter().find(|t| t["app"] == app && pred(t)),
        )
    }

    /// The task's directory on the node.
    pub fn task_dir(&self, task: &str) -> PathBuf {
        self.data.path().join("node/tasks").join(task)
    }

    /// The task's run directory (pids, exit status) on tmpfs.
    pub fn run_dir(&self, task: &str) -> PathBuf {
        berth_runtime::state_root_for(self.data.path())
            .join("tasks")
            .join(task)
    }

    /// The pid of the task's container init.
    pub fn init_pid(&self, task: &str) -> i32 {
        std::fs::read_to_string(self.run_dir(task).join("init.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // Remove every app so the agent stops containers and deletes files.
        if self.child.is_some() {
            if let Ok(out) = std::panic::catch_unwind(|| self.berth(&["apps", "--json"]))
                && let Ok(Value::Array(apps)) = serde_json::from_slice::<Value>(&out.stdout)
            {
                for a in apps {
                    if let Some(n) = a["name"].as_str() {
                        let _ = self.berth(&["rm", n]);
                    }
                }
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                let out = self.berth(&["ps", "--json"]);
                if out.stdout.starts_with(b"[]") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.kill9();
        for a in &mut self.agents {
            let _ = a.kill();
            let _ = a.wait();
        }
        clean_up_node(self.data.path());
    }
}

/// Whatever a node's data dir `dir` left behind (a failed test): kills
/// its containers, then its shims and agent, removes its runtime state
/// and unmounts what is mounted under it.
pub fn clean_up_node(dir: &Path) {
    let run = berth_runtime::state_root_for(dir).join("tasks");
    for entry in std::fs::read_dir(&run).into_iter().flatten().flatten() {
        if let Ok(pid) = std::fs::read_to_string(entry.path().join("init.pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }
    let d = dir.to_string_lossy().into_owned();
    let _ = Command::new("pkill").args(["-9", "-f", &d]).status();
    // The node's bridge (its tasks' networks were released with them).
    let root = berth_runtime::state_root_for(dir);
    let tag: String = root
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(6).collect())
        .unwrap_or_default();
    let _ = Command::new("ip")
        .args(["link", "del", &format!("berth{tag}")])
        .stderr(Stdio::null())
        .status();
    // Rules of its tasks' networks a killed agent could not release: a
    // stale DNAT would send the next cluster's host port to a dead task.
    let tag8: String = root
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(8).collect())
        .unwrap_or_default();
    for table in ["nat", "filter"] {
        let Ok(out) = Command::new("iptables-save").args(["-t", table]).output() else {
            continue;
        };
        for rule in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(r) = rule.strip_prefix("-A ")
                && !tag8.is_empty()
                && r.contains(&format!("{tag8}-"))
            {
                let _ = Command::new("sh")
                    .args(["-c", &format!("iptables -t {table} -D {r}")])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    let _ = std::fs::remove_dir_all(berth_runtime::state_root_for(dir));
    if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
        for m in mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&d))
        {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

/// A CDI spec for the DGX fixture's GPUs with fake device nodes (they are
/// /dev/null's numbers, so harmless) and one env var per device.
pub fn write_gpu_cdi(dir: &std::path::Path) {
    let inv = berth_hostprobe::load_fixture("dgx-h100").unwrap();
    let mut yaml = String::from("cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ndevices:\n");
    for g in &inv.gpus {
        let node = dir.join(format!("nvidia{}", g.index));
        mknod_null(&node);
        yaml.push_str(&format!(
            "- name: {}\n  containerEdits:\n    env: [BERTH_TEST_GPU_{}=present]\n    deviceNodes: [{{path: /dev/nvidia{}, hostPath: {}}}]\n",
            g.uuid,
            g.index,
            g.index,
            node.display()
        ));
    }
    std::fs::write(dir.join("nvidia.yaml"), yaml).unwrap();
}

/// Makes a character device with /dev/null's numbers at `path` (a harmless
/// fake device node for CDI specs).
pub fn mknod_null(path: &Path) {
    let st = Command::new("mknod")
        .arg(path)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success(), "mknod {}", path.display());
}
