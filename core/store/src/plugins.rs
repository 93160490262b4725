//! Plugins in the replicated state: each plugin's record (kind, mode,
//! failure policy, weight, configuration, its versions) and the component
//! bytes, content-addressed, so every server runs the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::state::{ClusterState, Event, Outcome};

/// Component bytes (base64 in snapshots and the log).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        use base64::Engine;
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Blob)
            .map_err(serde::de::Error::custom)
    }
}

/// Whether a plugin's decisions count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Part of the pipeline.
    #[default]
    Enforce,
    /// Runs beside the pipeline; how its decisions would differ is reported.
    Shadow,
}

impl Mode {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// How a plugin runs (what `install` and `upgrade` set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginSettings {
    /// `admission`, `filter`, `score` or `allocate`.
    pub kind: String,
    /// Weight of a score plugin.
    pub weight: f64,
    /// JSON configuration.
    pub config: String,
    /// Enforce or shadow.
    pub mode: Mode,
    /// `ignore` or `fail`.
    pub on_error: String,
    /// Time budget per call, ms.
    pub budget_ms: u64,
    /// Memory cap, MiB.
    pub memory_mib: u64,
    /// Asked once per node class (see `berth_wasm::PluginSpec::class_pure`).
    #[serde(default)]
    pub class_pure: bool,
}

/// One version of a plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginVersion {
    /// sha256 of the component.
    pub digest: String,
    /// How it ran in this version.
    pub settings: PluginSettings,
    /// Log index at which it was committed.
    pub index: u64,
}

/// A plugin and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Name (unique).
    pub name: String,
    /// Every version, oldest first.
    pub versions: Vec<PluginVersion>,
    /// The version in use (index into `versions`).
    pub active: usize,
}

impl PluginRecord {
    /// The version in use.
    pub fn current(&self) -> &PluginVersion {
        &self.versions[self.active.min(self.versions.len() - 1)]
    }
}

/// A change to plugins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PluginCommand {
    /// Install a new plugin, or (with `upgrade`) add a version to one.
    Put {
        /// Name.
        name: String,
        /// sha256 of `wasm`.
        digest: String,
        /// The component (omitted when the digest is already stored).
        wasm: Option<Blob>,
        /// How it runs.
        settings: PluginSettings,
        /// Add a version to an existing plugin instead of installing.
        upgrade: bool,
    },
    /// Go back to the previous version.
    Rollback {
        /// Name.
        name: String,
    },
    /// Remove a plugin (and the bytes no plugin uses any more).
    Remove {
        /// Name.
        name: String,
    },
}

/// Versions kept per plugin (older ones are dropped with their bytes).
pub const MAX_VERSIONS: usize = 16;

impl ClusterState {
    /// Applies a plugin command.
    pub(crate) fn apply_plugin(
        &mut self,
        index: u64,
        cmd: PluginCommand,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let outcome = match cmd {
            PluginCommand::Put {
                name,
                digest,
                wasm,
                settings,
                upgrade,
            } => {
                if let Some(b) = wasm {
                    self.blobs.entry(digest.clone()).or_insert(b);
                }
                if !self.blobs.contains_key(&digest) {
                    return Outcome::Rejected(format!("no component stored with digest {digest}"));
                }
                let version = PluginVersion {
                    digest,
                    settings,
                    index,
                };
                match (self.plugins.get_mut(&name), upgrade) {
                    (Some(_), false) => {
                        return Outcome::Rejected(format!(
                            "plugin {name} is installed already (use upgrade)"
                        ));
                    }
                    (None, true) => return Outcome::Rejected(format!("no plugin named {name}")),
                    (Some(r), true) => {
                        if r.current().settings.kind != version.settings.kind {
                            return Outcome::Rejected(format!(
                                "plugin {name} is a {} plugin, not {}",
                                r.current().settings.kind,
                                version.settings.kind
                            ));
                        }
                        r.versions.truncate(r.active + 1);
                        r.versions.push(version);
                        if r.versions.len() > MAX_VERSIONS {
                            r.versions.remove(0);
                        }
                        r.active = r.versions.len() - 1;
                    }
                    (None, false) => {
                        self.plugins.insert(
                            name.clone(),
                            PluginRecord {
                                name: name.clone(),
                                versions: vec![version],
                                active: 0,
                            },
                        );
                    }
                }
                let (action, v) = match self.plugins.get(&name) {
                    Some(r) if r.versions.len() > 1 => ("upgraded", r.versions.len()),
                    _ => ("installed", 1),
                };
                let m = format!("plugin {name} {action} (version {v})");
                self.notice("plugin", &name, None, action, m);
                events.push(Event::PluginChanged(name));
                Outcome::Ok
            }
            PluginCommand::Rollback { name } => match self.plugins.get_mut(&name) {
                None => return Outcome::Rejected(format!("no plugin named {name}")),
                Some(r) if r.active == 0 => {
                    return Outcome::Rejected(format!(
                        "plugin {name} has no earlier version to roll back to"
                    ));
                }
                Some(r) => {
                    r.active -= 1;
                    let m = format!("plugin {name} rolled back to version {}", r.active + 1);
                    self.notice("plugin", &name, None, "rolled-back", m);
                    events.push(Event::PluginChanged(name));
                    Outcome::Ok
                }
            },
            PluginCommand::Remove { name } => {
                if self.plugins.remove(&name).is_none() {
                    return Outcome::Rejected(format!("no plugin named {name}"));
                }
                self.notice(
                    "plugin",
                    &name,
                    None,
                    "removed",
                    format!("plugin {name} removed"),
                );
                events.push(Event::PluginChanged(name));
                Outcome::Ok
            }
        };
        self.collect_blobs();
        outcome
    }

    /// Drops component bytes no plugin version refers to.
    fn collect_blobs(&mut self) {
        let used: std::collections::BTreeSet<&str> = self
            .plugins
            .values()
            .flat_map(|r| r.versions.iter().map(|v| v.digest.as_str()))
            .collect();
        let unused: Vec<String> = self
            .blobs
            .keys()
            .filter(|d| !used.contains(d.as_str()))
            .cloned()
            .collect();
        for d in unused {
            self.blobs.remove(&d);
        }
    }

    /// The plugins in use, by name, with their component bytes.
    pub fn active_plugins(&self) -> impl Iterator<Item = (&PluginRecord, &[u8])> {
        self.plugins.values().filter_map(|r| {
            let b = self.blobs.get(&r.current().digest)?;
            Some((r, b.0.as_slice()))
        })
    }
}

/// The bytes of every stored component, by digest.
pub type Blobs = BTreeMap<String, Blob>;

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: &str) -> PluginSettings {
        PluginSettings {
            kind: kind.into(),
            weight: 1.0,
            config: "{}".into(),
            mode: Mode::Enforce,
            on_error: "ignore".into(),
            budget_ms: 50,
            memory_mib: 64,
            class_pure: false,
        }
    }

    fn put(name: &str, digest: &str, upgrade: bool) -> PluginCommand {
        PluginCommand::Put {
            name: name.into(),
            digest: digest.into(),
            wasm: Some(Blob(digest.as_bytes().to_vec())),
            settings: settings("score"),
            upgrade,
        }
    }

    #[test]
    fn install_upgrade_rollback_remove() {
        let mut s = ClusterState::default();
        let mut ev = Vec::new();
        assert_eq!(
            s.apply_plugin(1, put("p", "a", false), &mut ev),
            Outcome::Ok
        );
        assert!(
            matches!(s.apply_plugin(2, put("p", "b", false), &mut ev), Outcome::Rejected(m) if m.contains("use upgrade"))
        );
        assert_eq!(s.apply_plugin(3, put("p", "b", true), &mut ev), Outcome::Ok);
        assert_eq!(s.plugins["p"].current().digest, "b");
        assert_eq!(
            s.apply_plugin(4, PluginCommand::Rollback { name: "p".into() }, &mut ev),
            Outcome::Ok
        );
        assert_eq!(s.plugins["p"].current().digest, "a");
        assert!(matches!(
            s.apply_plugin(5, PluginCommand::Rollback { name: "p".into() }, &mut ev),
            Outcome::Rejected(_)
        ));
        // Upgrading after a rollback drops the rolled-back version.
        assert_eq!(s.apply_plugin(6, put("p", "c", true), &mut ev), Outcome::Ok);
        let digests: Vec<&str> = s.plugins["p"]
            .versions
            .iter()
            .map(|v| v.digest.as_str())
            .collect();
        assert_eq!(digests, vec!["a", "c"]);
        assert!(!s.blobs.contains_key("b"), "unused bytes are dropped");
        let mut kind = put("p", "d", true);
        if let PluginCommand::Put { settings, .. } = &mut kind {
            settings.kind = "filter".into();
        }
        assert!(
            matches!(s.apply_plugin(7, kind, &mut ev), Outcome::Rejected(m) if m.contains("not filter"))
        );
        assert_eq!(
            s.apply_plugin(8, PluginCommand::Remove { name: "p".into() }, &mut ev),
            Outcome::Ok
        );
        assert!(s.plugins.is_empty() && s.blobs.is_empty());
        // A snapshot keeps the bytes.
        s.apply_plugin(9, put("q", "z", false), &mut ev);
        let json = serde_json::to_string(&s).unwrap();
        let back: ClusterState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.blobs["z"], Blob(b"z".to_vec()));
    }
}
