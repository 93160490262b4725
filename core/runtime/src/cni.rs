//! Bridge networking through the standard CNI plugins (Debian's
//! `containernetworking-plugins`), driven by the CNI protocol: a named
//! network namespace per task, `loopback` for `lo`, then the chain
//! `bridge` (with `host-local` IPAM on the node's /24) and `portmap` for
//! `eth0`. The result of ADD is kept under the node's state root so DEL
//! (on stop, removal, or after an agent crash) replays what was set up.
//!
//! Each ADD and DEL is a plugin process fed its configuration on stdin,
//! with `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and
//! `CNI_PATH` in its environment; chained plugins get the previous
//! result as `prevResult`, and `portmap` its mappings as
//! `runtimeConfig.portMappings`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The CNI version the configuration speaks (Debian bookworm's plugins
/// are 1.1.1, which speak 1.0.0).
const CNI_VERSION: &str = "1.0.0";

/// The plugins bridge networking needs.
pub const PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "loopback"];

/// Errors of bridge networking.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A plugin binary is missing.
    #[error(
        "CNI plugin {0:?} not found in {1} (install containernetworking-plugins, or set BERTH_CNI_PATH)"
    )]
    Missing(String, String),
    /// The node has no subnet yet (not registered).
    #[error("this node has no bridge subnet yet")]
    NoSubnet,
    /// A plugin failed.
    #[error("CNI {plugin} {command}: {message}")]
    Plugin {
        /// Which plugin.
        plugin: String,
        /// ADD or DEL.
        command: String,
        /// Its error message.
        message: String,
    },
    /// Something around the plugins failed (the namespace, a file).
    #[error("{0}")]
    Io(String),
}

/// A task's network, as ADD left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The named network namespace's path (`/run/netns/...`).
    pub netns: PathBuf,
    /// The task's address on the bridge.
    pub ip: Ipv4Addr,
    /// The bridge's address: the node's side (its DNS listens there).
    pub gateway: Ipv4Addr,
}

/// Bridge networking for one node.
#[derive(Debug)]
pub struct Cni {
    /// Where the plugin binaries are.
    pub plugin_dirs: Vec<PathBuf>,
    /// Where results and IPAM leases are kept (under the state root).
    pub state: PathBuf,
    /// Names this node's bridge, network and namespaces apart from other
    /// nodes on the same machine.
    pub tag: String,
    subnet: std::sync::Mutex<Option<String>>,
}

fn io(e: impl std::fmt::Display) -> CniError {
    CniError::Io(e.to_string())
}

impl Cni {
    /// Bridge networking with plugins in `plugin_dirs`, state under
    /// `state`, names tagged with `tag` (a few hex digits).
    pub fn new(plugin_dirs: Vec<PathBuf>, state: PathBuf, tag: &str) -> Cni {
        Cni {
            plugin_dirs,
            state,
            tag: tag.chars().take(8).collect(),
            subnet: std::sync::Mutex::new(None),
        }
    }

    /// Sets the node's /24 (`10.128.3.0/24`), given out by the servers.
    pub fn set_subnet(&self, subnet: &str) {
        *self.subnet.lock().unwrap_or_else(|p| p.into_inner()) = Some(subnet.to_string());
    }

    /// The node's /24, once known.
    pub fn subnet(&self) -> Option<String> {
        self.subnet
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The bridge's address (`.1` of the subnet), once known.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        let s = self.subnet()?;
        let base: Ipv4Addr = s.split('/').next()?.parse().ok()?;
        Some(Ipv4Addr::from(u32::from(base) + 1))
    }

    /// The bridge interface's name (at most 15 characters).
    pub fn bridge(&self) -> String {
        format!("berth{}", &self.tag[..self.tag.len().min(6)])
    }

    /// Creates the node's bridge with its gateway address, if it is not
    /// there yet (the `bridge` plugin then uses it as it is), so the
    /// node's DNS can listen on the gateway before the first task.
    pub async fn ensure_bridge(&self) -> Result<Ipv4Addr, CniError> {
        let gw = self.gateway().ok_or(CniError::NoSubnet)?;
        let br = self.bridge();
        if !Path::new("/sys/class/net").join(&br).exists() {
            run("ip", &["link", "add", "name", &br, "type", "bridge"]).await?;
        }
        let addrs = Command::new("ip")
            .args(["-4", "-o", "addr", "show", "dev", &br])
            .output()
            .await
            .map_err(io)?;
        if !String::from_utf8_lossy(&addrs.stdout).contains(&format!(" {gw}/24")) {
            // A subnet from before (the cluster was made anew) goes.
            run("ip", &["-4", "addr", "flush", "dev", &br]).await?;
            run("ip", &["addr", "add", &format!("{gw}/24"), "dev", &br]).await?;
        }
        run("ip", &["link", "set", &br, "up"]).await?;
        Ok(gw)
    }

    /// Checks that every plugin is installed.
    pub fn check(&self) -> Result<(), CniError> {
        for p in PLUGINS {
            self.plugin(p)?;
        }
        Ok(())
    }

    fn plugin(&self, name: &str) -> Result<PathBuf, CniError> {
        self.plugin_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::Missing(name.into(), self.path_list()))
    }

    fn path_list(&self) -> String {
        self.plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The named network namespace of `task`.
    pub fn netns_name(&self, task: &str) -> String {
        format!("b{}-{task}", self.tag)
    }

    fn result_path(&self, task: &str) -> PathBuf {
        self.state.join("results").join(format!("{task}.json"))
    }

    /// The network configuration list: bridge + host-local, then portmap.
    fn conflist(&self, subnet: &str) -> Value {
        json!({
            "cniVersion": CNI_VERSION,
            "name": format!("berth-{}", self.tag),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge(),
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": self.state.join("ipam"),
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]
        })
    }

    /// Sets up `task`'s network: its namespace, `lo`, and `eth0` on the
    /// bridge with `ports` (host, container) mapped. Idempotent: a task
    /// already attached (an agent restarted) gets its attachment back.
    pub async fn attach(&self, task: &str, ports: &[(u16, u16)]) -> Result<Attachment, CniError> {
        if let Some(a) = self.attachment(task) {
            return Ok(a);
        }
        let subnet = self.subnet().ok_or(CniError::NoSubnet)?;
        self.check()?;
        let netns = self.isolate(task).await?;
        let list = self.conflist(&subnet);
        let mappings: Vec<Value> = ports
            .iter()
            .map(|(h, c)| json!({"hostPort": h, "containerPort": c, "protocol": "tcp"}))
            .collect();
        let mut prev: Option<Value> = None;
        for conf in list["plugins"].as_array().into_iter().flatten() {
            let (kind, c) = chained(&list, conf, &mappings, prev.as_ref());
            match self.exec(&kind, "ADD", task, &netns, "eth0", &c).await {
                Ok(r) => prev = Some(r),
                Err(e) => {
                    // Undo what was done: nothing half set up stays.
                    let _ = self
                        .detach_with(task, &netns, &mappings, prev.as_ref())
                        .await;
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or(Value::Null);
        let saved = json!({"result": result, "portMappings": mappings});
        let path = self.result_path(task);
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
        std::fs::write(&path, serde_json::to_vec(&saved).map_err(io)?).map_err(io)?;
        self.attachment(task)
            .ok_or_else(|| CniError::Io(format!("CNI ADD for {task} returned no IPv4 address")))
    }

    /// The task's namespace with loopback up: all of `network: none`, and
    /// the start of a bridge attachment. Idempotent.
    pub async fn isolate(&self, task: &str) -> Result<PathBuf, CniError> {
        self.plugin("loopback")?;
        let ns = self.netns_name(task);
        let netns = Path::new("/run/netns").join(&ns);
        if !netns.exists() {
            run("ip", &["netns", "add", &ns]).await?;
            let lo = json!({"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"});
            self.exec("loopback", "ADD", task, &netns, "lo", &lo)
                .await?;
        }
        Ok(netns)
    }

    /// The attachment ADD left for `task`, if its namespace and result
    /// are still there.
    pub fn attachment(&self, task: &str) -> Option<Attachment> {
        let netns = Path::new("/run/netns").join(self.netns_name(task));
        let saved: Value =
            serde_json::from_slice(&std::fs::read(self.result_path(task)).ok()?).ok()?;
        // From the saved result alone: an agent that just restarted
        // adopts its containers before it learns its subnet again.
        let v4 = saved["result"]["ips"].as_array()?.iter().find_map(|i| {
            let ip = i["address"]
                .as_str()?
                .split('/')
                .next()?
                .parse::<Ipv4Addr>()
                .ok()?;
            let gw = i["gateway"]
                .as_str()
                .and_then(|g| g.parse::<Ipv4Addr>().ok());
            Some((ip, gw))
        })?;
        netns.exists().then_some(())?;
        Some(Attachment {
            netns,
            ip: v4.0,
            gateway: v4.1.or_else(|| self.gateway())?,
        })
    }

    /// Tears `task`'s network down: DEL through the chain (last first),
    /// `loopback`, then its namespace and saved result. Safe to repeat,
    /// and for a task never attached.
    pub async fn detach(&self, task: &str) -> Result<(), CniError> {
        let netns = Path::new("/run/netns").join(self.netns_name(task));
        let saved: Option<Value> = std::fs::read(self.result_path(task))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mappings: Vec<Value> = saved
            .as_ref()
            .and_then(|s| s["portMappings"].as_array().cloned())
            .unwrap_or_default();
        let result = saved.as_ref().map(|s| s["result"].clone());
        self.detach_with(task, &netns, &mappings, result.as_ref())
            .await
    }

    async fn detach_with(
        &self,
        task: &str,
        netns: &Path,
        mappings: &[Value],
        result: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first_err = None;
        if let Some(subnet) = self.subnet() {
            let list = self.conflist(&subnet);
            let plugins: Vec<Value> = list["plugins"].as_array().cloned().unwrap_or_default();
            for conf in plugins.iter().rev() {
                let prev = result.filter(|r| !r.is_null());
                let (kind, c) = chained(&list, conf, mappings, prev);
                if let Err(e) = self.exec(&kind, "DEL", task, netns, "eth0", &c).await {
                    first_err.get_or_insert(e);
                }
            }
        }
        if netns.exists() {
            let _ = run("ip", &["netns", "delete", &self.netns_name(task)]).await;
        }
        let _ = std::fs::remove_file(self.result_path(task));
        first_err.map_or(Ok(()), Err)
    }

    /// Tasks with a network left on this node (saved results or named
    /// namespaces), for recovery to compare with what should exist.
    pub fn attached(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.state.join("results"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".json").map(String::from)
            })
            .collect();
        let prefix = format!("b{}-", self.tag);
        for e in std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(task) = n.strip_prefix(&prefix)
                && !out.iter().any(|t| t == task)
            {
                out.push(task.to_string());
            }
        }
        out.sort();
        out
    }

    /// Runs one plugin command; its result on success.
    async fn exec(
        &self,
        plugin: &str,
        command: &str,
        task: &str,
        netns: &Path,
        ifname: &str,
        conf: &Value,
    ) -> Result<Value, CniError> {
        let exe = self.plugin(plugin)?;
        let mut child = Command::new(exe)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("{}-{task}", self.tag))
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", self.path_list())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io)?;
        let input = serde_json::to_vec(conf).map_err(io)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).await.map_err(io)?;
        }
        let out = child.wait_with_output().await.map_err(io)?;
        let body: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success() {
            return Ok(body);
        }
        let message = body["msg"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        Err(CniError::Plugin {
            plugin: plugin.into(),
            command: command.into(),
            message,
        })
    }
}

/// One plugin's configuration in the chain of `list`: the list's version
/// and name, `portmap`'s mappings as its runtime configuration, and the
/// result before it (ADD) or of the whole ADD (DEL) as `prevResult`.
fn chained(
    list: &Value,
    conf: &Value,
    mappings: &[Value],
    prev: Option<&Value>,
) -> (String, Value) {
    let mut c = conf.clone();
    c["cniVersion"] = list["cniVersion"].clone();
    c["name"] = list["name"].clone();
    if conf["type"] == "portmap" {
        c["runtimeConfig"] = json!({"portMappings": mappings});
    }
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    (conf["type"].as_str().unwrap_or_default().to_string(), c)
}

async fn run(cmd: &str, args: &[&str]) -> Result<(), CniError> {
    let out = Command::new(cmd).args(args).output().await.map_err(io)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CniError::Io(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
