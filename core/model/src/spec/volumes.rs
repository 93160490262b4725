//! Volumes an app's instances mount:
//!
//! ```yaml
//! volumes:
//!   - {name: data, path: /var/lib/redis, size: 1Gi}          # persistent, bound to the instance
//!   - {name: cfg, path: /etc/app, host_path: /srv/app, read_only: true}   # a host directory
//!   - {name: scratch, path: /tmp, size: 256Mi, ephemeral: true}          # emptied when the task goes
//! ```
//!
//! A persistent volume is created on the node an instance is first placed
//! on, named `<app>-<instance>-<name>`, and pins the instance there (like
//! Marathon's local persistent volumes) until `berth volume rm`. Sizes are
//! enforced (a write past them fails with ENOSPC).

use serde::{Deserialize, Serialize};

use super::{AppSpec, FieldError, Update, quoted, valid_name};
use crate::quantity::Bytes;

/// Most volumes one app may mount.
pub const MAX_VOLUMES: usize = 16;
/// Smallest volume size: 4Mi (a filesystem needs room for itself).
pub const MIN_VOLUME: Bytes = Bytes(4 << 20);
/// Largest volume size: 64Ti.
pub const MAX_VOLUME: Bytes = Bytes(64 << 40);
/// Longest path, in bytes.
pub const MAX_PATH: usize = 1024;

/// One volume of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Its name within the app (a DNS label).
    pub name: String,
    /// Where it appears in the container (absolute).
    pub path: String,
    /// Its size (persistent and ephemeral volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Bytes>,
    /// A directory of the node instead (under the agent's
    /// `--host-volume-root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Emptied when the task goes (not bound to the instance).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
}

/// What a volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    /// Bound to the instance and its node; outlives tasks.
    Persistent,
    /// A node directory.
    HostPath,
    /// The task's own; gone with it.
    Ephemeral,
}

impl Volume {
    /// Which kind it is.
    pub fn kind(&self) -> VolumeKind {
        if self.host_path.is_some() {
            VolumeKind::HostPath
        } else if self.ephemeral {
            VolumeKind::Ephemeral
        } else {
            VolumeKind::Persistent
        }
    }
}

/// The name of instance `instance`'s persistent volume `name` of `app`.
pub fn volume_id(app: &str, instance: u32, name: &str) -> String {
    format!("{app}-{instance}-{name}")
}

/// Whether `path` is absolute and clean (no `.`, `..` or empty parts).
pub fn clean_absolute(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= MAX_PATH
        && !path.contains('\0')
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Whether `path` is `root` or below it (both clean and absolute).
pub fn under(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    path == root || root.is_empty() || path.starts_with(&format!("{root}/"))
}

impl AppSpec {
    /// Whether any volume is persistent (the instance is pinned to a node).
    pub fn has_persistent_volumes(&self) -> bool {
        self.volumes
            .iter()
            .any(|v| v.kind() == VolumeKind::Persistent)
    }

    /// The rollout rules in force: an app with persistent volumes replaces
    /// an instance in place (its volume is used by one container at a
    /// time), so it never surges.
    pub(super) fn pinned_update(&self, mut u: Update) -> Update {
        if self.has_persistent_volumes() {
            u.max_surge = super::Amount::Count(0);
            if u.max_unavailable.of(self.instances.max(1), false) == 0 {
                u.max_unavailable = super::Amount::Count(1);
            }
        }
        u
    }

    /// The rules of `volumes`.
    pub(super) fn validate_volumes(&self, p: &mut Vec<FieldError>) {
        if self.volumes.len() > MAX_VOLUMES {
            p.push(FieldError::new(
                "volumes",
                format!("{} volumes; at most {MAX_VOLUMES}", self.volumes.len()),
            ));
            return;
        }
        let mut names = std::collections::BTreeSet::new();
        let mut paths = std::collections::BTreeSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let f = |field: &str| format!("volumes[{i}].{field}");
            if !valid_name(&v.name) {
                p.push(FieldError::new(
                    f("name"),
                    format!(
                        "{} is not a valid volume name ([a-z0-9-], 1-63 characters)",
                        quoted(&v.name)
                    ),
                ));
            } else if !names.insert(v.name.as_str()) {
                p.push(FieldError::new(
                    f("name"),
                    format!("{} is used twice", quoted(&v.name)),
                ));
            }
            if !clean_absolute(&v.path) || v.path == "/" {
                p.push(FieldError::new(
                    f("path"),
                    format!(
                        "{} must be an absolute path without '.', '..' or '//' (not /)",
                        quoted(&v.path)
                    ),
                ));
            } else if !paths.insert(v.path.as_str()) {
                p.push(FieldError::new(
                    f("path"),
                    format!("{} is used twice", quoted(&v.path)),
                ));
            }
            match (&v.host_path, v.size, v.ephemeral) {
                (Some(h), None, false) => {
                    if !clean_absolute(h) {
                        p.push(FieldError::new(
                            f("host_path"),
                            format!("{} must be an absolute path without '.' or '..'", quoted(h)),
                        ));
                    }
                }
                (Some(_), Some(_), _) => p.push(FieldError::new(
                    f("size"),
                    "a host_path volume has no size (it is the node's directory)",
                )),
                (Some(_), None, true) => p.push(FieldError::new(
                    f("ephemeral"),
                    "a host_path volume cannot be ephemeral",
                )),
                (None, None, _) => p.push(FieldError::new(
                    f("size"),
                    "required (e.g. 1Gi) unless host_path is given",
                )),
                (None, Some(s), _) if s < MIN_VOLUME || s > MAX_VOLUME => p.push(FieldError::new(
                    f("size"),
                    format!("{s} is out of range ({MIN_VOLUME} to {MAX_VOLUME})"),
                )),
                (None, Some(_), _) => {}
            }
        }
        if self.has_persistent_volumes() && self.gang {
            p.push(FieldError::new(
                "gang",
                "a gang cannot have persistent volumes (each instance is pinned to its node)",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(vols: &str) -> Vec<String> {
        let text = format!("name: a\nimage: busybox:latest\nvolumes: {vols}\n");
        match crate::spec::parse_spec(&text) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(|p| p.path.clone()).collect(),
        }
    }

    #[test]
    fn each_mistake_names_its_field() {
        assert!(problems("[{name: d, path: /d, size: 1Gi}]").is_empty());
        assert!(problems("[{name: c, path: /c, host_path: /srv, read_only: true}]").is_empty());
        assert!(problems("[{name: t, path: /t, size: 8Mi, ephemeral: true}]").is_empty());
        for (bad, field) in [
            ("[{name: d, path: /d}]", "volumes[0].size"),
            ("[{name: d, path: /d, size: 1Ki}]", "volumes[0].size"),
            ("[{name: d, path: d, size: 1Gi}]", "volumes[0].path"),
            ("[{name: d, path: /a/../b, size: 1Gi}]", "volumes[0].path"),
            ("[{name: D, path: /d, size: 1Gi}]", "volumes[0].name"),
            (
                "[{name: c, path: /c, host_path: etc}]",
                "volumes[0].host_path",
            ),
            (
                "[{name: c, path: /c, host_path: /srv, size: 1Gi}]",
                "volumes[0].size",
            ),
            (
                "[{name: c, path: /c, host_path: /srv, ephemeral: true}]",
                "volumes[0].ephemeral",
            ),
            (
                "[{name: d, path: /d, size: 1Gi}, {name: d, path: /e, size: 1Gi}]",
                "volumes[1].name",
            ),
            (
                "[{name: d, path: /d, size: 1Gi}, {name: e, path: /d, size: 1Gi}]",
                "volumes[1].path",
            ),
        ] {
            assert_eq!(problems(bad), vec![field.to_string()], "{bad}");
        }
    }

    #[test]
    fn persistent_volumes_never_surge() {
        let s = crate::spec::parse_spec(
            "name: a\nimage: busybox:latest\ninstances: 3\n\
             volumes: [{name: d, path: /d, size: 1Gi}]\nupdate: {max_surge: 2}\n",
        )
        .unwrap();
        let u = s.update();
        assert_eq!(u.max_surge, crate::spec::Amount::Count(0));
        assert_eq!(u.max_unavailable, crate::spec::Amount::Count(1));
    }

    #[test]
    fn paths() {
        assert!(clean_absolute("/var/lib/redis"));
        for bad in ["", "var", "/a/../b", "/a//b", "/a/./b", "/a/"] {
            assert!(!clean_absolute(bad), "{bad}");
        }
        assert!(under("/srv/app", "/srv"));
        assert!(under("/srv", "/srv/"));
        assert!(!under("/srvx", "/srv"));
        assert!(!under("/etc", "/srv"));
    }
}
