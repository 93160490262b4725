//! The plugins a server runs: loaded from the replicated state (so every
//! server runs the same bytes), swapped without a restart when the state
//! changes, composed into the scheduling pipeline (enforced ones) or run
//! beside it (shadow ones), and asked about specs (admission).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use berth_model::spec::AppSpec;
use berth_sched::{Decision, Pipeline};
use berth_store::{ClusterState, Mode, PluginSettings};
use berth_wasm::{
    AdmissionVerdict, Kind, OnError, Plugin, PluginError, PluginSpec, WasmAdmission, WasmAllocate,
    WasmFilter, WasmScore,
};
use serde::Serialize;

/// How a shadow plugin's decisions compared with the enforced ones.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShadowStats {
    /// Decisions compared.
    pub decisions: u64,
    /// Decisions where the shadow pipeline chose another node (or none).
    pub differed: u64,
    /// The latest differences: `task: enforced -> shadow`.
    pub recent: VecDeque<String>,
}

struct Loaded {
    digest: String,
    settings: PluginSettings,
    plugin: Arc<Plugin>,
}

#[derive(Default)]
struct Inner {
    loaded: BTreeMap<String, Loaded>,
    errors: BTreeMap<String, String>,
    shadow: BTreeMap<String, ShadowStats>,
    generation: u64,
}

impl Inner {
    /// Whether the record's current version is loaded as it is, or is
    /// known not to load.
    fn settled(&self, record: &berth_store::PluginRecord) -> bool {
        let v = record.current();
        self.loaded
            .get(&record.name)
            .is_some_and(|l| l.digest == v.digest && l.settings == v.settings)
            || self
                .errors
                .get(&record.name)
                .is_some_and(|e| e.starts_with(&v.digest))
    }
}

/// The plugins of one server.
#[derive(Default)]
pub struct PluginSet {
    cache: Option<PathBuf>,
    inner: Mutex<Inner>,
}

/// The wasm host's spec for a plugin's settings; errors name the field.
pub fn spec(name: &str, s: &PluginSettings) -> Result<PluginSpec, String> {
    let kind = Kind::parse(&s.kind).ok_or_else(|| {
        format!(
            "kind: {:?} is not admission, filter, score or allocate",
            s.kind
        )
    })?;
    let on_error = OnError::parse(&s.on_error)
        .ok_or_else(|| format!("on_error: {:?} is not ignore or fail", s.on_error))?;
    if !(s.weight.is_finite() && (0.0..=100.0).contains(&s.weight)) {
        return Err(format!("weight: {} is not between 0 and 100", s.weight));
    }
    Ok(PluginSpec {
        name: name.to_string(),
        kind,
        config: s.config.clone(),
        on_error,
        budget: Duration::from_millis(s.budget_ms),
        memory: (s.memory_mib as usize).saturating_mul(1 << 20),
        class_pure: s.class_pure,
    })
}

impl PluginSet {
    /// A set compiling into `cache` (a directory of compiled components).
    pub fn new(cache: Option<PathBuf>) -> PluginSet {
        PluginSet {
            cache,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads `wasm` as `name` with `settings`: what install and upgrade
    /// check before anything is stored.
    pub fn check(&self, name: &str, wasm: &[u8], settings: &PluginSettings) -> Result<(), String> {
        let spec = spec(name, settings)?;
        Plugin::load(wasm, spec, self.cache.as_deref())
            .map(|_| ())
            .map_err(|e: PluginError| e.to_string())
    }

    /// Brings the loaded plugins in line with `state`: loads new versions,
    /// drops removed plugins. Returns a generation that changes whenever
    /// the set did.
    pub fn sync(&self, state: &ClusterState) -> u64 {
        let mut inner = self.lock();
        let mut changed = false;
        let names: Vec<String> = inner.loaded.keys().cloned().collect();
        for n in names {
            if !state.plugins.contains_key(&n) {
                inner.loaded.remove(&n);
                inner.shadow.remove(&n);
                changed = true;
            }
        }
        inner.errors.retain(|n, _| state.plugins.contains_key(n));
        for (record, bytes) in state.active_plugins() {
            let v = record.current();
            if inner.settled(record) {
                continue;
            }
            let loaded = spec(&record.name, &v.settings).and_then(|s| {
                Plugin::load(bytes, s, self.cache.as_deref()).map_err(|e| e.to_string())
            });
            match loaded {
                Ok(p) => {
                    tracing::info!(plugin = %record.name, digest = %v.digest, "plugin loaded");
                    inner.loaded.insert(
                        record.name.clone(),
                        Loaded {
                            digest: v.digest.clone(),
                            settings: v.settings.clone(),
                            plugin: Arc::new(p),
                        },
                    );
                    inner.errors.remove(&record.name);
                    inner.shadow.remove(&record.name);
                }
                Err(e) => {
                    tracing::error!(plugin = %record.name, error = %e, "plugin does not load");
                    inner.loaded.remove(&record.name);
                    inner
                        .errors
                        .insert(record.name.clone(), format!("{}: {e}", v.digest));
                }
            }
            changed = true;
        }
        if changed {
            inner.generation += 1;
        }
        inner.generation
    }

    /// Whether [`PluginSet::sync`] would change nothing for `state` (a
    /// cheap look: no component bytes are copied or loaded).
    pub fn in_step(&self, state: &ClusterState) -> bool {
        let inner = self.lock();
        inner.loaded.keys().all(|n| state.plugins.contains_key(n))
            && state.active_plugins().all(|(r, _)| inner.settled(r))
    }

    /// The generation [`PluginSet::sync`] last returned.
    pub fn sync_generation(&self) -> u64 {
        self.lock().generation
    }

    /// Whether any admission plugin is loaded (enforced or in shadow).
    pub fn has_admission(&self) -> bool {
        self.lock()
            .loaded
            .values()
            .any(|l| l.settings.kind == "admission")
    }

    fn of(&self, mode: Mode) -> Vec<(String, PluginSettings, Arc<Plugin>)> {
        self.lock()
            .loaded
            .iter()
            .filter(|(_, l)| l.settings.mode == mode)
            .map(|(n, l)| (n.clone(), l.settings.clone(), l.plugin.clone()))
            .collect()
    }

    /// Adds the enforced plugins to `base`: filters after the built-in
    /// ones, scorers with their weights, and an allocate plugin (the first
    /// by name) in place of the allocator.
    pub fn extend(&self, base: Pipeline) -> Pipeline {
        add(base, self.of(Mode::Enforce))
    }

    /// One pipeline per shadow plugin: `make()` (the enforced chain) with
    /// that plugin added, as [`PluginSet::extend`] would.
    pub fn shadows(&self, make: impl Fn() -> Pipeline) -> Vec<(String, Pipeline)> {
        self.of(Mode::Shadow)
            .into_iter()
            .filter(|(_, s, _)| s.kind != "admission")
            .map(|p| (p.0.clone(), add(make(), vec![p])))
            .collect()
    }

    /// Records how a shadow pipeline's decision compared with the enforced one.
    pub fn record_shadow(&self, name: &str, enforced: &Decision, shadow: &Decision) {
        let node = |d: &Decision| {
            d.placement
                .as_ref()
                .map_or("(pending)".to_string(), |p| p.0.clone())
        };
        let mut inner = self.lock();
        let stats = inner.shadow.entry(name.to_string()).or_default();
        stats.decisions += 1;
        let differs = enforced.placement.as_ref().map(|p| (&p.0, &p.1.gpus))
            != shadow.placement.as_ref().map(|p| (&p.0, &p.1.gpus));
        if differs {
            stats.differed += 1;
            stats.recent.push_front(format!(
                "{}: {} -> {}",
                enforced.task,
                node(enforced),
                node(shadow)
            ));
            stats.recent.truncate(5);
        }
    }

    /// Asks the admission plugins about `spec`, in name order: enforced
    /// ones may refuse it (the error says which and why) or change it;
    /// shadow ones are only counted.
    pub fn admit(&self, mut spec: AppSpec, caller: &str) -> Result<AppSpec, String> {
        for (name, s, p) in self.of(Mode::Enforce) {
            if s.kind != "admission" {
                continue;
            }
            match WasmAdmission::new(p).admit_by(&spec, caller) {
                AdmissionVerdict::Accept => {}
                AdmissionVerdict::Reject(why) => {
                    return Err(format!("refused by admission plugin {name}: {why}"));
                }
                AdmissionVerdict::Mutated(new) => spec = *new,
            }
        }
        for (name, s, p) in self.of(Mode::Shadow) {
            if s.kind == "admission" {
                let v = WasmAdmission::new(p).admit_by(&spec, caller);
                let mut inner = self.lock();
                let stats = inner.shadow.entry(name).or_default();
                stats.decisions += 1;
                if v != AdmissionVerdict::Accept {
                    stats.differed += 1;
                    stats.recent.push_front(format!("{}: {v:?}", spec.name));
                    stats.recent.truncate(5);
                }
            }
        }
        Ok(spec)
    }

    /// The plugins this server has loaded.
    pub fn loaded_names(&self) -> Vec<String> {
        self.lock().loaded.keys().cloned().collect()
    }

    /// What this server knows of plugin `name`: "yes" when loaded or why
    /// not; its metrics once loaded, and shadow statistics.
    pub fn status(
        &self,
        name: &str,
    ) -> (
        String,
        Option<berth_proto::PluginMetrics>,
        Option<berth_proto::ShadowStats>,
    ) {
        let inner = self.lock();
        let loaded = match (inner.loaded.get(name), inner.errors.get(name)) {
            (Some(_), _) => "yes".to_string(),
            (None, Some(e)) => e.clone(),
            (None, None) => "not yet".to_string(),
        };
        let metrics = inner.loaded.get(name).map(|l| {
            let m = l.plugin.metrics();
            berth_proto::PluginMetrics {
                calls: m.calls,
                failures: m.failures.into_iter().collect(),
                mean_us: m.mean_us,
                p50_us: m.p50_us,
                p99_us: m.p99_us,
                instances: m.instances,
                logs_dropped: m.logs_dropped,
                load_ms: l.plugin.load_time().as_secs_f64() * 1000.0,
                instantiate_ms: l.plugin.instantiate_time().as_secs_f64() * 1000.0,
            }
        });
        let shadow = inner.shadow.get(name).map(|s| berth_proto::ShadowStats {
            decisions: s.decisions,
            differed: s.differed,
            recent: s.recent.iter().cloned().collect(),
        });
        (loaded, metrics, shadow)
    }
}

fn add(mut pipe: Pipeline, plugins: Vec<(String, PluginSettings, Arc<Plugin>)>) -> Pipeline {
    let mut allocator = None;
    for (_, s, p) in plugins {
        match s.kind.as_str() {
            "filter" => pipe = pipe.filter(Box::new(WasmFilter::new(p))),
            "score" => pipe = pipe.score(Box::new(WasmScore::new(p)), s.weight),
            "allocate" if allocator.is_none() => allocator = Some(p),
            _ => {}
        }
    }
    match allocator {
        Some(p) => pipe.allocator(Box::new(WasmAllocate::new(p))),
        None => pipe,
    }
}
