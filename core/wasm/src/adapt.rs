//! Plugins as the scheduler sees them: [`WasmFilter`], [`WasmScore`] and
//! [`WasmAllocate`] implement `berth-sched`'s plugin traits, checking every
//! answer against the contract and applying the failure policy, so the
//! pipeline treats native and Wasm plugins alike. [`WasmAdmission`]
//! checks specs.

use std::sync::{Arc, Mutex, PoisonError};

use berth_model::spec::AppSpec;
use berth_model::task::Allocation;
use berth_sched::builtin::{DefaultAllocator, allocation};
use berth_sched::plugin::{AllocatePlugin, FilterPlugin, Rejection, ScorePlugin};
use berth_sched::{Cluster, NodeState, TaskRequest, chosen};

use crate::bindings::types::{Nodes, Verdict};
use crate::convert::{columns, empty_nodes, task};
use crate::{Failure, OnError, Plugin};

fn failed(plugin: &Plugin, f: &Failure) -> Rejection {
    Rejection::new(
        format!("plugin {} failed", plugin.spec().name),
        f.to_string(),
    )
}

/// Reusable column buffers.
#[derive(Default)]
struct Scratch(Mutex<Option<Nodes>>);

impl Scratch {
    fn with<R>(&self, nodes: &[&NodeState], f: impl FnOnce(&Nodes) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let cols = g.get_or_insert_with(empty_nodes);
        columns(nodes, cols);
        f(cols)
    }
}

/// A filter plugin.
pub struct WasmFilter {
    plugin: Arc<Plugin>,
    scratch: Scratch,
}

impl WasmFilter {
    /// Wraps a filter plugin.
    pub fn new(plugin: Arc<Plugin>) -> WasmFilter {
        WasmFilter {
            plugin,
            scratch: Scratch::default(),
        }
    }
}

impl FilterPlugin for WasmFilter {
    fn name(&self) -> &str {
        &self.plugin.spec().name
    }

    fn prepare(&self, cluster: &Cluster) {
        self.plugin.sync_nodes(cluster);
    }

    /// As its install settings declare (see [`crate::PluginSpec::class_pure`]).
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        self.plugin.spec().class_pure
    }

    fn filter(&self, t: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]) {
        let p = &self.plugin;
        let answer = self
            .scratch
            .with(nodes, |cols| p.filter(&task(t), cols))
            .and_then(|v| {
                if v.codes.len() != nodes.len() {
                    return Err(p.invalid(format!(
                        "{} verdicts for {} nodes",
                        v.codes.len(),
                        nodes.len()
                    )));
                }
                match v.codes.iter().find(|&&c| c as usize > v.reasons.len()) {
                    Some(c) => {
                        Err(p.invalid(format!("verdict {c} but {} reasons", v.reasons.len())))
                    }
                    None => Ok(v),
                }
            });
        match answer {
            Ok(v) => {
                for (o, c) in out.iter_mut().zip(&v.codes) {
                    if *c > 0 {
                        let reason = &v.reasons[*c as usize - 1];
                        *o = Some(Rejection::new(
                            reason.chars().take(200).collect::<String>(),
                            format!("plugin {}", p.spec().name),
                        ));
                    }
                }
            }
            Err(f) if p.spec().on_error == OnError::Fail => {
                let r = failed(p, &f);
                out.iter_mut().for_each(|o| *o = Some(r.clone()));
            }
            Err(_) => {}
        }
    }
}

/// A score plugin.
pub struct WasmScore {
    plugin: Arc<Plugin>,
    scratch: Scratch,
    failure: Mutex<Option<Rejection>>,
}

impl WasmScore {
    /// Wraps a score plugin.
    pub fn new(plugin: Arc<Plugin>) -> WasmScore {
        WasmScore {
            plugin,
            scratch: Scratch::default(),
            failure: Mutex::new(None),
        }
    }
}

impl ScorePlugin for WasmScore {
    fn name(&self) -> &str {
        &self.plugin.spec().name
    }

    fn prepare(&self, cluster: &Cluster) {
        self.plugin.sync_nodes(cluster);
    }

    /// As its install settings declare (see [`crate::PluginSpec::class_pure`]).
    fn class_pure(&self, _task: &TaskRequest) -> bool {
        self.plugin.spec().class_pure
    }

    fn score(&self, t: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
        let p = &self.plugin;
        let answer = self
            .scratch
            .with(nodes, |cols| p.score(&task(t), cols))
            .and_then(|s| {
                if s.len() != nodes.len() {
                    return Err(p.invalid(format!("{} scores for {} nodes", s.len(), nodes.len())));
                }
                match s.iter().find(|v| !(0.0..=100.0).contains(*v)) {
                    Some(v) => Err(p.invalid(format!("score {v} is not in 0..=100"))),
                    None => Ok(s),
                }
            });
        match answer {
            Ok(s) => out.copy_from_slice(&s),
            Err(f) => {
                out.fill(0.0);
                if p.spec().on_error == OnError::Fail {
                    *self.failure.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(failed(p, &f));
                }
            }
        }
    }

    fn take_failure(&self) -> Option<Rejection> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// An allocate plugin: it chooses the GPUs; cores, NICs, devices and NUMA
/// nodes follow the host's rules around that choice. Tasks without GPUs,
/// MIG requests and empty choices get the default allocator's answer.
pub struct WasmAllocate {
    plugin: Arc<Plugin>,
    scratch: Scratch,
}

impl WasmAllocate {
    /// Wraps an allocate plugin.
    pub fn new(plugin: Arc<Plugin>) -> WasmAllocate {
        WasmAllocate {
            plugin,
            scratch: Scratch::default(),
        }
    }
}

impl AllocatePlugin for WasmAllocate {
    fn name(&self) -> &str {
        &self.plugin.spec().name
    }

    fn prepare(&self, cluster: &Cluster) {
        self.plugin.sync_nodes(cluster);
    }

    fn allocate(&self, t: &TaskRequest, node: &NodeState) -> Result<Allocation, Rejection> {
        let asks_gpus = t.gpus.as_ref().is_some_and(|g| g.mig_profile.is_none());
        if !asks_gpus {
            return DefaultAllocator.allocate(t, node);
        }
        if node.cpu_free() < t.cpu_demand() || node.mem_free() < t.memory {
            return Err(Rejection::new(
                "insufficient resources",
                "changed since filtering",
            ));
        }
        let p = &self.plugin;
        let answer = self
            .scratch
            .with(&[node], |cols| p.allocate(&task(t), cols));
        let checked = match answer {
            Ok(Ok(choice)) if choice.gpus.is_empty() => return DefaultAllocator.allocate(t, node),
            Ok(Ok(choice)) => {
                let indices: Option<Vec<u32>> = choice
                    .gpus
                    .iter()
                    .map(|&pos| node.gpus.get(pos as usize).map(|g| g.index))
                    .collect();
                match indices {
                    None => Err(p.invalid(format!(
                        "GPU positions {:?} on a node with {} GPUs",
                        choice.gpus,
                        node.gpus.len()
                    ))),
                    Some(ix) => chosen::pick_with_gpus(t, node, &ix)
                        .map_err(|r| p.invalid(format!("{}: {}", r.reason, r.detail))),
                }
            }
            Ok(Err(why)) => {
                return Err(Rejection::new(
                    format!("plugin {} found no GPUs", p.spec().name),
                    why.chars().take(200).collect::<String>(),
                ));
            }
            Err(f) => Err(f),
        };
        match checked {
            Ok(pick) => Ok(allocation(t, node, pick)),
            Err(f) if p.spec().on_error == OnError::Fail => Err(failed(p, &f)),
            Err(_) => DefaultAllocator.allocate(t, node),
        }
    }
}

/// What an admission plugin made of a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionVerdict {
    /// Admitted as it is.
    Accept,
    /// Refused, with the plugin's reason.
    Reject(String),
    /// Admitted with changes; the new spec passed validation.
    Mutated(Box<AppSpec>),
}

/// An admission plugin.
pub struct WasmAdmission {
    plugin: Arc<Plugin>,
}

impl WasmAdmission {
    /// Wraps an admission plugin.
    pub fn new(plugin: Arc<Plugin>) -> WasmAdmission {
        WasmAdmission { plugin }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.plugin.spec().name
    }

    /// Asks the plugin about `spec`. A failure (or a mutation that does
    /// not validate) admits the spec unchanged under `ignore` and refuses
    /// it under `fail`.
    pub fn admit(&self, spec: &AppSpec) -> AdmissionVerdict {
        self.admit_by(spec, "")
    }

    /// [`WasmAdmission::admit`] for a request by `caller` (what an
    /// `admission-review` plugin sees of who submits it).
    pub fn admit_by(&self, spec: &AppSpec, caller: &str) -> AdmissionVerdict {
        let p = &self.plugin;
        let asked = if p.reviews() {
            p.review(&crate::convert::review(spec, caller))
        } else {
            let mut app = task(&TaskRequest::for_spec(&spec.name, spec));
            app.group.clear();
            p.admit(&app)
        };
        let answer = asked.and_then(|v| match v {
            Verdict::Accept => Ok(AdmissionVerdict::Accept),
            Verdict::Reject(why) => Ok(AdmissionVerdict::Reject(
                why.chars().take(500).collect::<String>(),
            )),
            Verdict::Mutate(patch) => {
                let mut s = spec.clone();
                if let Some(c) = patch.cpu {
                    s.resources.cpu = berth_model::quantity::MilliCpu(c);
                }
                if let Some(m) = patch.memory {
                    s.resources.memory = berth_model::quantity::Bytes(m);
                }
                if let Some(pr) = patch.priority {
                    s.priority = pr;
                }
                s.labels.extend(patch.labels);
                s.env.extend(patch.env);
                match s.validate() {
                    Ok(()) => Ok(AdmissionVerdict::Mutated(Box::new(s))),
                    Err(e) => Err(p.invalid(format!("the mutated spec is invalid: {e}"))),
                }
            }
        });
        match answer {
            Ok(v) => v,
            Err(f) if p.spec().on_error == OnError::Fail => {
                AdmissionVerdict::Reject(format!("admission plugin {} failed: {f}", p.spec().name))
            }
            Err(_) => AdmissionVerdict::Accept,
        }
    }
}
