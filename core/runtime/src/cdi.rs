//! Container Device Interface: reads CDI spec files (`/etc/cdi`,
//! `/var/run/cdi`; the JSON or YAML that `nvidia-ctk cdi generate` writes)
//! and applies the container edits of exactly the requested devices to an
//! OCI runtime config: device nodes (and their cgroup allow rules), mounts,
//! environment and hooks.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

/// Where CDI specs live, in increasing priority.
pub const CDI_DIRS: &[&str] = &["/etc/cdi", "/var/run/cdi"];

/// CDI errors name the file or the device.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    /// A spec file does not parse.
    #[error("CDI spec {path}: {reason}")]
    Spec {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A requested device is in no spec.
    #[error("CDI device {0} is not defined in any spec under {dirs}", dirs = CDI_DIRS.join(", "))]
    Unknown(String),
    /// A device node cannot be resolved.
    #[error("CDI device node {path}: {reason}")]
    Node {
        /// The node path.
        path: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[allow(dead_code)]
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Vec<Device>,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Device {
    name: String,
    #[serde(default)]
    container_edits: Edits,
}

/// The edits a CDI device (or spec) makes to a container.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    mounts: Vec<Mount>,
    #[serde(default)]
    hooks: Vec<Hook>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceNode {
    path: String,
    host_path: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    major: Option<i64>,
    minor: Option<i64>,
    file_mode: Option<u32>,
    permissions: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mount {
    host_path: String,
    container_path: String,
    #[serde(default)]
    options: Vec<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Hook {
    hook_name: String,
    path: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
}

/// All devices of all specs under `dirs`, by qualified name
/// (`vendor.com/class=name`), with the spec-wide edits of their spec.
#[derive(Debug, Default)]
pub struct Registry {
    devices: BTreeMap<String, (Edits, Edits)>,
}

impl Registry {
    /// Loads every `*.json`, `*.yaml` and `*.yml` spec under `dirs`; later
    /// directories override earlier ones for the same device.
    pub fn load(dirs: &[&Path]) -> Result<Registry, CdiError> {
        let mut reg = Registry::default();
        for dir in dirs {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            files.sort();
            for path in files {
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if !matches!(ext, "json" | "yaml" | "yml") {
                    continue;
                }
                let err = |reason: String| CdiError::Spec {
                    path: path.clone(),
                    reason,
                };
                let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
                let spec: Spec = if ext == "json" {
                    serde_json::from_str(&text).map_err(|e| err(e.to_string()))?
                } else {
                    serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?
                };
                if !spec.kind.contains('/') {
                    return Err(err(format!("kind {:?} is not vendor.com/class", spec.kind)));
                }
                for d in spec.devices {
                    reg.devices.insert(
                        format!("{}={}", spec.kind, d.name),
                        (spec.container_edits.clone(), d.container_edits),
                    );
                }
            }
        }
        Ok(reg)
    }

    /// Loads the standard directories.
    pub fn load_default() -> Result<Registry, CdiError> {
        let dirs: Vec<&Path> = CDI_DIRS.iter().map(Path::new).collect();
        Registry::load(&dirs)
    }

    /// Every device: (kind, name), in name order.
    pub fn devices(&self) -> impl Iterator<Item = (&str, &str)> {
        self.devices.keys().filter_map(|q| q.split_once('='))
    }

    /// Whether a qualified device name is known.
    pub fn has(&self, name: &str) -> bool {
        self.devices.contains_key(name)
    }

    /// Applies the edits of `names` (qualified CDI names) to an OCI config.
    pub fn apply(&self, names: &[String], config: &mut Value) -> Result<(), CdiError> {
        let mut applied_spec_edits = std::collections::BTreeSet::new();
        for name in names {
            let (spec_edits, dev_edits) = self
                .devices
                .get(name)
                .ok_or_else(|| CdiError::Unknown(name.clone()))?;
            let kind = name.split('=').next().unwrap_or_default().to_string();
            if applied_spec_edits.insert(kind) {
                apply_edits(spec_edits, config)?;
            }
            apply_edits(dev_edits, config)?;
        }
        Ok(())
    }
}

fn push(config: &mut Value, pointer: &str, item: Value) {
    let mut cur = &mut *config;
    for key in pointer.split('/').filter(|k| !k.is_empty()) {
        if cur.get(key).is_none() {
            cur[key] = if key == "devices"
                || key == "env"
                || key == "mounts"
                || key == "prestart"
                || key.starts_with("create")
                || key.starts_with("start")
                || key == "poststart"
                || key == "poststop"
            {
                json!([])
            } else {
                json!({})
            };
        }
        cur = &mut cur[key];
    }
    if let Some(a) = cur.as_array_mut() {
        a.push(item);
    }
}

fn apply_edits(e: &Edits, config: &mut Value) -> Result<(), CdiError> {
    for kv in &e.env {
        push(config, "process/env", json!(kv));
    }
    for d in &e.device_nodes {
        let host = d.host_path.clone().unwrap_or_else(|| d.path.clone());
        let (kind, major, minor) = match (d.major, d.minor) {
            (Some(ma), Some(mi)) => (d.kind.clone().unwrap_or_else(|| "c".into()), ma, mi),
            _ => {
                let meta = std::fs::metadata(&host).map_err(|e| CdiError::Node {
                    path: host.clone(),
                    reason: e.to_string(),
                })?;
                let ft = meta.file_type();
                let kind = if ft.is_char_device() {
                    "c"
                } else if ft.is_block_device() {
                    "b"
                } else {
                    return Err(CdiError::Node {
                        path: host.clone(),
                        reason: "not a device node".into(),
                    });
                };
                let rdev = meta.rdev();
                (
                    kind.to_string(),
                    libc::major(rdev) as i64,
                    libc::minor(rdev) as i64,
                )
            }
        };
        let mode = d.file_mode.unwrap_or(0o666);
        push(
            config,
            "linux/devices",
            json!({"path": d.path, "type": kind, "major": major, "minor": minor, "fileMode": mode, "uid": d.uid.unwrap_or(0), "gid": d.gid.unwrap_or(0)}),
        );
        let access = d.permissions.clone().unwrap_or_else(|| "rwm".into());
        push(
            config,
            "linux/resources/devices",
            json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": access}),
        );
    }
    for m in &e.mounts {
        let kind = m.kind.clone().unwrap_or_else(|| "bind".into());
        let mut opts = m.options.clone();
        if kind == "bind" && !opts.iter().any(|o| o == "bind" || o == "rbind") {
            opts.push("bind".into());
        }
        push(
            config,
            "mounts",
            json!({"source": m.host_path, "destination": m.container_path, "type": kind, "options": opts}),
        );
    }
    for h in &e.hooks {
        let key = match h.hook_name.as_str() {
            "prestart" | "createRuntime" | "createContainer" | "startContainer" | "poststart"
            | "poststop" => h.hook_name.clone(),
            other => {
                return Err(CdiError::Spec {
                    path: PathBuf::from("(hook)"),
                    reason: format!("unknown hook {other}"),
                });
            }
        };
        let mut hook = json!({"path": h.path, "args": h.args});
        if !h.env.is_empty() {
            hook["env"] = json!(h.env);
        }
        push(config, &format!("hooks/{key}"), hook);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_only_the_named_devices() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vendor.yaml"),
            "cdiVersion: 0.6.0\nkind: example.com/gpu\ncontainerEdits:\n  env: [EXAMPLE_DRIVER=1]\ndevices:\n- name: gpu0\n  containerEdits:\n    env: [EXAMPLE_VISIBLE=0]\n    deviceNodes: [{path: /dev/ex0, type: c, major: 240, minor: 0}]\n- name: gpu1\n  containerEdits:\n    deviceNodes: [{path: /dev/ex1, type: c, major: 240, minor: 1}]\n    mounts: [{hostPath: /opt/lib, containerPath: /usr/lib/ex, options: [ro]}]\n    hooks: [{hookName: createContainer, path: /bin/true, args: [true]}]\n",
        )
        .unwrap();
        let reg = Registry::load(&[dir.path()]).unwrap();
        let mut cfg = json!({"process": {"env": ["PATH=/bin"]}, "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}}});
        reg.apply(&["example.com/gpu=gpu1".into()], &mut cfg)
            .unwrap();
        assert_eq!(cfg["linux"]["devices"].as_array().unwrap().len(), 1);
        assert_eq!(cfg["linux"]["devices"][0]["path"], "/dev/ex1");
        assert_eq!(cfg["linux"]["resources"]["devices"][1]["minor"], 1);
        assert!(
            cfg["process"]["env"]
                .as_array()
                .unwrap()
                .contains(&json!("EXAMPLE_DRIVER=1"))
        );
        assert!(
            !cfg["process"]["env"]
                .as_array()
                .unwrap()
                .contains(&json!("EXAMPLE_VISIBLE=0"))
        );
        assert_eq!(cfg["mounts"][0]["destination"], "/usr/lib/ex");
        assert_eq!(cfg["hooks"]["createContainer"][0]["path"], "/bin/true");
        let e = reg
            .apply(&["example.com/gpu=gpu7".into()], &mut cfg)
            .unwrap_err();
        assert!(e.to_string().contains("gpu=gpu7"));
    }

    #[test]
    fn bad_spec_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.json"), "{\"cdiVersion\": 1}").unwrap();
        let e = Registry::load(&[dir.path()]).unwrap_err();
        assert!(e.to_string().contains("bad.json"), "{e}");
    }
}
