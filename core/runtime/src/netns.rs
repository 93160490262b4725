//! A task's own network, as the runtime sets it up for its container:
//! the network namespace from [`crate::cni`], and the `/etc/resolv.conf`
//! and `/etc/hosts` the container sees (the node's DNS, and its own name).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::bundle::NetMode;
use crate::containers::{Runtime, RuntimeError};
use crate::taskdir::TaskDir;

/// What a container with its own network joins and mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetFiles {
    /// The network namespace to join.
    pub netns: PathBuf,
    /// Bound at `/etc/resolv.conf`.
    pub resolv: PathBuf,
    /// Bound at `/etc/hosts`.
    pub hosts: PathBuf,
}

fn net_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Network(e.to_string())
}

impl Runtime {
    /// Bridge networking for this node.
    pub fn cni(&self) -> &crate::cni::Cni {
        &self.cni
    }

    /// Sets up the network `spec` asks for (none for host networking).
    pub(crate) async fn prepare_network(
        &self,
        task: &str,
        td: &TaskDir,
        spec: &crate::LaunchSpec,
    ) -> Result<Option<NetFiles>, RuntimeError> {
        let (netns, ip, resolv) = match &spec.network {
            NetMode::Host => return Ok(None),
            NetMode::Bridge { ports, search } => {
                let a = self.cni.attach(task, ports).await.map_err(net_err)?;
                let mut r = format!("nameserver {}\n", a.gateway);
                if !search.is_empty() {
                    r.push_str(&format!("search {}\n", search.join(" ")));
                }
                r.push_str("options ndots:2 timeout:1 attempts:2\n");
                (a.netns, Some(a.ip), r)
            }
            NetMode::None => {
                let netns = self.cni.isolate(task).await.map_err(net_err)?;
                (netns, None, String::new())
            }
        };
        let mut hosts =
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string();
        if let Some(ip) = ip {
            hosts.push_str(&format!("{ip}\t{}\n", spec.hostname));
        }
        let dir = td.path().join("net");
        std::fs::create_dir_all(&dir).map_err(net_err)?;
        let files = NetFiles {
            netns,
            resolv: dir.join("resolv.conf"),
            hosts: dir.join("hosts"),
        };
        std::fs::write(&files.resolv, resolv).map_err(net_err)?;
        std::fs::write(&files.hosts, hosts).map_err(net_err)?;
        Ok(Some(files))
    }

    /// Tears down `task`'s own network, if it has one (idempotent).
    pub async fn release_network(&self, task: &str) -> Result<(), RuntimeError> {
        self.cni.detach(task).await.map_err(net_err)
    }

    /// The address of `task` on the node's bridge, if it has one.
    pub fn task_ip(&self, task: &str) -> Option<Ipv4Addr> {
        self.cni.attachment(task).map(|a| a.ip)
    }
}
