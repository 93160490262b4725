//! OCI runtime bundle generation: the `config.json` a container runs with.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::image::ImageConfig;

/// What to run, independent of any cluster concept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaunchSpec {
    /// Image name (`name:tag`) in the node's image store.
    pub image: String,
    /// Arguments; empty means the image's entrypoint + cmd.
    pub command: Vec<String>,
    /// Extra environment, on top of the image's.
    pub env: BTreeMap<String, String>,
    /// CPU request in millicores. It sets the container's CPU weight
    /// (`cpu.shares`), as Kubernetes and Nomad do for requests: a
    /// guaranteed share under contention, not a hard cap.
    pub cpu_millis: u64,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Hostname inside the container.
    pub hostname: String,
    /// Whether the node restarts the container when it ends.
    pub restart: berth_model::spec::RestartPolicy,
    /// Grace between SIGTERM and SIGKILL when stopping, in milliseconds.
    pub stop_grace_ms: u64,
    /// PUs the container may run on (`cpuset.cpus`); empty: any.
    #[serde(default)]
    pub cpuset: Vec<u32>,
    /// NUMA nodes whose memory it may use (`cpuset.mems`); empty: any.
    #[serde(default)]
    pub mems: Vec<u32>,
    /// CDI devices (`vendor.com/class=name`) to inject.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Its network: the host's, its own on the node's bridge, or none.
    #[serde(default)]
    pub network: NetMode,
    /// Volumes to mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volume::VolumeMount>,
    /// How its log rotates.
    #[serde(default)]
    pub logs: crate::logs::LogLimits,
    /// Run as this user instead of the image's `User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A read-only root filesystem.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root: bool,
    /// No seccomp filter (the spec's explicit opt-out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seccomp_unconfined: bool,
}

/// A container's network.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum NetMode {
    /// The host's network namespace.
    #[default]
    Host,
    /// A namespace of its own on the node's bridge (CNI), with these
    /// (host, container) ports mapped and these DNS search domains.
    Bridge {
        /// (host port, container port) pairs for `portmap`.
        ports: Vec<(u16, u16)>,
        /// DNS search domains (`default.berth berth`).
        search: Vec<String>,
    },
    /// A namespace of its own with only loopback.
    None,
}

/// Comma-separated list for cgroup cpuset files: `0,1,8`.
pub fn cpu_list(xs: &[u32]) -> String {
    xs.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether every PU and NUMA node exists on this machine. An allocation
/// made for simulated hardware (a fixture node) is recorded, not enforced.
pub fn host_has(cpus: &[u32], mems: &[u32]) -> bool {
    let online = |path: &str| -> Vec<u32> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.trim()
            .split(',')
            .filter(|p| !p.is_empty())
            .flat_map(|p| match p.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
                    (a..=b).collect::<Vec<u32>>()
                }
                None => p.parse().map(|x| vec![x]).unwrap_or_default(),
            })
            .collect()
    };
    let cpus_ok = cpus.is_empty() || {
        let on = online("/sys/devices/system/cpu/online");
        cpus.iter().all(|c| on.contains(c))
    };
    let mems_ok = mems.is_empty() || {
        let on = online("/sys/devices/system/node/online");
        let on = if on.is_empty() { vec![0] } else { on };
        mems.iter().all(|m| on.contains(m))
    };
    cpus_ok && mems_ok
}

/// Default capabilities, the same set runc and Docker grant.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The process arguments: the spec's command, else the image's entrypoint + cmd.
pub fn effective_args(spec: &LaunchSpec, image: &ImageConfig) -> Vec<String> {
    if !spec.command.is_empty() {
        return spec.command.clone();
    }
    image
        .entrypoint
        .iter()
        .chain(image.cmd.iter())
        .cloned()
        .collect()
}

/// The environment: the image's, overridden by the spec's, with a PATH.
pub fn effective_env(spec: &LaunchSpec, image: &ImageConfig) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    for kv in &image.env {
        if let Some((k, v)) = kv.split_once('=') {
            env.insert(k.into(), v.into());
        }
    }
    env.extend(spec.env.clone());
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Builds the OCI runtime config for a container with host networking.
/// `cgroups_path` is set explicitly so cgroups are found and cleaned.
pub fn runtime_config(
    spec: &LaunchSpec,
    image: &ImageConfig,
    rootfs: &Path,
    cgroups_path: &str,
    net: Option<&crate::netns::NetFiles>,
    user: (u32, u32),
) -> Value {
    let args = effective_args(spec, image);
    let cwd = image.working_dir.clone().filter(|d| d.starts_with('/'));
    let mut cpu = json!({});
    // cpu.shares: 1024 per core, as Kubernetes maps requests. No CFS quota:
    // a request is a weight, and a quota would throttle even the container's
    // own setup under small requests.
    let shares = (spec.cpu_millis * 1024 / 1000).clamp(2, 262_144);
    cpu["shares"] = json!(shares);
    let enforce = host_has(&spec.cpuset, &spec.mems);
    if enforce && !spec.cpuset.is_empty() {
        cpu["cpus"] = json!(cpu_list(&spec.cpuset));
    }
    if enforce && !spec.mems.is_empty() {
        cpu["mems"] = json!(cpu_list(&spec.mems));
    }
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": user.0, "gid": user.1},
            "args": args,
            "env": effective_env(spec, image),
            "cwd": cwd.unwrap_or_else(|| "/".into()),
            "capabilities": {
                "bounding": CAPS, "effective": CAPS, "permitted": CAPS
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": spec.read_only_root},
        // What was allocated, also when it cannot be enforced here.
        "annotations": {
            "berth.cpuset": cpu_list(&spec.cpuset),
            "berth.mems": cpu_list(&spec.mems),
            "berth.devices": spec.devices.join(","),
            "berth.topology-enforced": enforce.to_string()
        },
        "hostname": spec.hostname.chars().take(63).collect::<String>(),
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            // Host networking: the network namespace is the host's, so sysfs
            // is bound read-only rather than mounted fresh.
            {"destination": "/sys", "type": "bind", "source": "/sys",
             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "cgroupsPath": cgroups_path,
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": spec.memory_bytes},
                "cpu": cpu
            },
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    });
    if !spec.seccomp_unconfined {
        config["linux"]["seccomp"] = crate::seccomp::default_profile();
    }
    if let Some(n) = net {
        // Its own network: join the task's namespace; its resolver and
        // name come from files the runtime wrote.
        if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
            ns.push(json!({"type": "network", "path": n.netns}));
        }
        if let Some(m) = config["mounts"].as_array_mut() {
            for (dest, src) in [("/etc/resolv.conf", &n.resolv), ("/etc/hosts", &n.hosts)] {
                m.push(json!({"destination": dest, "type": "bind", "source": src,
                              "options": ["rbind", "ro"]}));
            }
        }
    }
    config
}

/// Adds bind mounts (container path, host path, read-only) to a bundle
/// config.
pub fn add_binds(config: &mut Value, binds: &[(String, std::path::PathBuf, bool)]) {
    if let Some(m) = config["mounts"].as_array_mut() {
        for (dest, src, ro) in binds {
            let mode = if *ro { "ro" } else { "rw" };
            m.push(json!({"destination": dest, "type": "bind", "source": src,
                          "options": ["rbind", "nosuid", "nodev", mode]}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            image: "busybox:latest".into(),
            command: vec![],
            env: [("GREETING".to_string(), "hi".to_string())].into(),
            cpu_millis: 250,
            memory_bytes: 64 << 20,
            hostname: "web-1-0".into(),
            restart: berth_model::spec::RestartPolicy::Never,
            stop_grace_ms: 1000,
            cpuset: vec![],
            mems: vec![],
            network: NetMode::Host,
            volumes: Vec::new(),
            logs: Default::default(),
            user: None,
            read_only_root: false,
            seccomp_unconfined: false,
            devices: vec![],
        }
    }

    #[test]
    fn config_is_a_valid_oci_spec_with_limits() {
        let image = ImageConfig {
            env: vec!["PATH=/bin".into(), "A=1".into()],
            entrypoint: vec!["/bin/sh".into()],
            cmd: vec!["-c".into(), "true".into()],
            working_dir: Some("/www".into()),
            user: None,
        };
        let v = runtime_config(
            &spec(),
            &image,
            Path::new("/x/rootfs"),
            "/berth/t",
            None,
            (0, 0),
        );
        let parsed: oci_spec::runtime::Spec = serde_json::from_value(v.clone()).unwrap();
        let process = parsed.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["/bin/sh", "-c", "true"]);
        let env = process.env().as_ref().unwrap();
        assert!(env.contains(&"PATH=/bin".to_string()));
        assert!(env.contains(&"GREETING=hi".to_string()));
        assert_eq!(process.cwd(), Path::new("/www"));
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 256);
        assert!(
            v["linux"]["resources"]["cpu"]["quota"].is_null(),
            "a request is not a cap"
        );
        assert_eq!(v["linux"]["cgroupsPath"], "/berth/t");
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!ns.contains(&"network"), "host networking");
    }

    #[test]
    fn spec_command_overrides_image() {
        let mut s = spec();
        s.command = vec!["/bin/true".into()];
        let image = ImageConfig {
            entrypoint: vec!["/bin/sh".into()],
            ..Default::default()
        };
        assert_eq!(effective_args(&s, &image), vec!["/bin/true"]);
    }
}
