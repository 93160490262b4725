//! One loaded plugin: its pre-linked component, one live instance reused
//! across calls (so the node table it was given stays), a fresh one after
//! any failure, the budget and memory cap on every call, and its metrics.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use berth_sched::Cluster;
use wasmtime::Store;

use crate::bindings::types::{Choice, NodeInfo, Nodes, ReviewRequest, Task, Verdict, Verdicts};
use crate::bindings::{admission, admission_review, allocate, filter, score};
use crate::engine::{Host, Loaded, TICK};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::state::State;
use crate::{Failure, Kind, PluginError, PluginSpec};

/// Budgets of `init` and `set-nodes`, relative to a call's.
const SETUP_FACTOR: u32 = 20;

enum Pre {
    Admission(admission::AdmissionPre<State>),
    Review(admission_review::AdmissionReviewPre<State>),
    Filter(filter::FilterPre<State>),
    Score(score::ScorePre<State>),
    Allocate(allocate::AllocatePre<State>),
}

enum Exports {
    Admission(admission::Admission),
    Review(admission_review::AdmissionReview),
    Filter(filter::Filter),
    Score(score::Score),
    Allocate(allocate::Allocate),
}

struct Live {
    store: Store<State>,
    exports: Exports,
    /// The fingerprint of the node table this instance was given.
    epoch: Option<u64>,
}

/// A plugin ready to be called.
pub struct Plugin {
    spec: PluginSpec,
    digest: String,
    host: &'static Host,
    pre: Pre,
    live: Mutex<Option<Live>>,
    /// The node table for the current snapshot: (fingerprint, nodes).
    nodes: Mutex<Option<(u64, Arc<Vec<NodeInfo>>)>>,
    metrics: Metrics,
    load_time: Duration,
    instantiate_time: Mutex<Duration>,
}

fn wasm_err(e: wasmtime::Error) -> String {
    let root = e.root_cause().to_string();
    root.strip_prefix("wasm trap: ")
        .unwrap_or(&root)
        .to_string()
}

impl Plugin {
    /// Compiles (or loads from `cache`) `bytes` as a plugin of `spec.kind`,
    /// and makes its first instance, which runs `init` with the
    /// configuration: a component of the wrong kind, a configuration that
    /// is not JSON, or an init that refuses it are errors naming the cause.
    pub fn load(
        bytes: &[u8],
        spec: PluginSpec,
        cache: Option<&std::path::Path>,
    ) -> Result<Plugin, PluginError> {
        if spec.budget.is_zero() || spec.budget > Duration::from_secs(10) {
            return Err(PluginError::Limits(format!(
                "budget {:?} is not between 1ms and 10s",
                spec.budget
            )));
        }
        if spec.memory < (1 << 20) || spec.memory > crate::engine::MAX_MEMORY {
            return Err(PluginError::Limits(format!(
                "memory {} MiB is not between 1 MiB and {} MiB",
                spec.memory >> 20,
                crate::engine::MAX_MEMORY >> 20
            )));
        }
        serde_json::from_str::<serde_json::Value>(&spec.config)
            .map_err(|e| PluginError::Config(format!("not JSON: {e}")))?;
        let host = Host::global()?;
        let Loaded {
            component,
            digest,
            load_time,
            ..
        } = host.load(bytes, cache)?;
        let world = |e: wasmtime::Error| PluginError::World {
            kind: spec.kind.as_str(),
            reason: format!("{e:#}"),
        };
        let ipre = host.linker().instantiate_pre(&component).map_err(world)?;
        let pre = match spec.kind {
            // An admission plugin is either world: `admission` (0.1) or
            // `admission-review` (0.2).
            Kind::Admission => match admission::AdmissionPre::new(ipre.clone()) {
                Ok(p) => Pre::Admission(p),
                Err(e) => Pre::Review(
                    admission_review::AdmissionReviewPre::new(ipre).map_err(|_| world(e))?,
                ),
            },
            Kind::Filter => Pre::Filter(filter::FilterPre::new(ipre).map_err(world)?),
            Kind::Score => Pre::Score(score::ScorePre::new(ipre).map_err(world)?),
            Kind::Allocate => Pre::Allocate(allocate::AllocatePre::new(ipre).map_err(world)?),
        };
        let plugin = Plugin {
            spec,
            digest,
            host,
            pre,
            live: Mutex::new(None),
            nodes: Mutex::new(None),
            metrics: Metrics::default(),
            load_time,
            instantiate_time: Mutex::new(Duration::ZERO),
        };
        let live = plugin
            .instantiate()
            .map_err(|f| PluginError::Init(f.to_string()))?;
        *plugin.live.lock().unwrap_or_else(PoisonError::into_inner) = Some(live);
        Ok(plugin)
    }

    /// How it runs.
    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// Hex sha256 of its component.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Its counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// How long compiling (or loading the cached compilation) took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// How long the latest instantiation (with `init`) took.
    pub fn instantiate_time(&self) -> Duration {
        *self
            .instantiate_time
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn ticks(budget: Duration) -> u64 {
        (budget.as_nanos() / TICK.as_nanos()).max(1) as u64 + 1
    }

    fn new_store(&self) -> Store<State> {
        let mut store = Store::new(
            self.host.engine(),
            State::new(
                &self.spec.name,
                self.spec.memory,
                self.metrics.logs_dropped.clone(),
            ),
        );
        store.limiter(|s| s);
        store
    }

    /// A new instance, initialised with the configuration.
    fn instantiate(&self) -> Result<Live, Failure> {
        let t0 = Instant::now();
        let mut store = self.new_store();
        store.set_epoch_deadline(Self::ticks(self.spec.budget * SETUP_FACTOR));
        let cfg = self.spec.config.as_str();
        let res = match &self.pre {
            Pre::Admission(p) => p.instantiate(&mut store).and_then(|e| {
                e.call_init(&mut store, cfg)
                    .map(|r| (Exports::Admission(e), r))
            }),
            Pre::Review(p) => p.instantiate(&mut store).and_then(|e| {
                e.call_init(&mut store, cfg)
                    .map(|r| (Exports::Review(e), r))
            }),
            Pre::Filter(p) => p.instantiate(&mut store).and_then(|e| {
                e.call_init(&mut store, cfg)
                    .map(|r| (Exports::Filter(e), r))
            }),
            Pre::Score(p) => p
                .instantiate(&mut store)
                .and_then(|e| e.call_init(&mut store, cfg).map(|r| (Exports::Score(e), r))),
            Pre::Allocate(p) => p.instantiate(&mut store).and_then(|e| {
                e.call_init(&mut store, cfg)
                    .map(|r| (Exports::Allocate(e), r))
            }),
        };
        self.metrics.instance();
        let out = match res {
            Ok((exports, Ok(()))) => Ok(Live {
                store,
                exports,
                epoch: None,
            }),
            Ok((_, Err(reason))) => Err(Failure::Init(reason)),
            Err(e) => Err(self.classify(&store, e, self.spec.budget * SETUP_FACTOR)),
        };
        *self
            .instantiate_time
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = t0.elapsed();
        out
    }

    fn classify(&self, store: &Store<State>, e: wasmtime::Error, budget: Duration) -> Failure {
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => Failure::Timeout(budget),
            _ if store.data().denied => Failure::Memory(self.spec.memory >> 20),
            _ => Failure::Trap(wasm_err(e)),
        }
    }

    /// Hands the plugin the node table of `cluster` when it changed since
    /// the last one (node-aware kinds only; cheap when nothing changed).
    pub fn sync_nodes(&self, cluster: &Cluster) {
        if matches!(self.pre, Pre::Admission(_) | Pre::Review(_)) {
            return;
        }
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if nodes
            .as_ref()
            .is_some_and(|(fp, _)| *fp == cluster.fingerprint())
        {
            return;
        }
        *nodes = Some((
            cluster.fingerprint(),
            Arc::new(crate::convert::node_table(cluster)),
        ));
    }

    /// Runs `f` on the live instance (making one, and handing it the node
    /// table, first if needed) within the call budget. A failure discards
    /// the instance and is counted.
    fn call<R>(
        &self,
        f: impl FnOnce(&mut Store<State>, &Exports) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let t0 = Instant::now();
        let result = self.call_live(&mut live, f);
        self.metrics.call(t0.elapsed());
        if let Err(fail) = &result {
            self.metrics.failure(fail);
            tracing::warn!(plugin = %self.spec.name, cause = fail.cause(), "plugin call failed: {fail}");
        }
        result
    }

    fn call_live<R>(
        &self,
        live: &mut Option<Live>,
        f: impl FnOnce(&mut Store<State>, &Exports) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        if live.is_none() {
            *live = Some(self.instantiate()?);
        }
        let l = live.as_mut().expect("just made");
        let table = self
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some((fp, nodes)) = table
            && l.epoch != Some(fp)
        {
            let setup = self.spec.budget * SETUP_FACTOR;
            l.store.set_epoch_deadline(Self::ticks(setup));
            let r = match &l.exports {
                Exports::Filter(e) => e.call_set_nodes(&mut l.store, &nodes),
                Exports::Score(e) => e.call_set_nodes(&mut l.store, &nodes),
                Exports::Allocate(e) => e.call_set_nodes(&mut l.store, &nodes),
                Exports::Admission(_) | Exports::Review(_) => Ok(()),
            };
            if let Err(e) = r {
                let fail = self.classify(&l.store, e, setup);
                *live = None;
                return Err(fail);
            }
            l.epoch = Some(fp);
        }
        l.store.data_mut().new_call();
        l.store.set_epoch_deadline(Self::ticks(self.spec.budget));
        match f(&mut l.store, &l.exports) {
            Ok(r) => Ok(r),
            Err(e) => {
                let fail = self.classify(&l.store, e, self.spec.budget);
                *live = None;
                Err(fail)
            }
        }
    }

    /// Counts an answer that broke the contract, and returns the failure.
    pub fn invalid(&self, why: String) -> Failure {
        let f = Failure::InvalidOutput(why);
        self.metrics.failure(&f);
        tracing::warn!(plugin = %self.spec.name, "plugin answer refused: {f}");
        f
    }

    /// `admit` (admission plugins).
    pub fn admit(&self, app: &Task) -> Result<Verdict, Failure> {
        self.call(|store, ex| match ex {
            Exports::Admission(e) => e.call_admit(store, app),
            _ => Err(wasmtime::Error::msg("not an admission plugin")),
        })
    }

    /// Whether it judges whole requests (`admission-review`, contract 0.2).
    pub fn reviews(&self) -> bool {
        matches!(self.pre, Pre::Review(_))
    }

    /// `review` (admission-review plugins).
    pub fn review(&self, req: &ReviewRequest) -> Result<Verdict, Failure> {
        self.call(|store, ex| match ex {
            Exports::Review(e) => e.call_review(store, req),
            _ => Err(wasmtime::Error::msg("not an admission-review plugin")),
        })
    }

    /// `filter` (filter plugins).
    pub fn filter(&self, task: &Task, nodes: &Nodes) -> Result<Verdicts, Failure> {
        self.call(|store, ex| match ex {
            Exports::Filter(e) => e.call_filter(store, task, nodes),
            _ => Err(wasmtime::Error::msg("not a filter plugin")),
        })
    }

    /// `score` (score plugins).
    pub fn score(&self, task: &Task, nodes: &Nodes) -> Result<Vec<f64>, Failure> {
        self.call(|store, ex| match ex {
            Exports::Score(e) => e.call_score(store, task, nodes),
            _ => Err(wasmtime::Error::msg("not a score plugin")),
        })
    }

    /// `allocate` (allocate plugins).
    pub fn allocate(&self, task: &Task, node: &Nodes) -> Result<Result<Choice, String>, Failure> {
        self.call(|store, ex| match ex {
            Exports::Allocate(e) => e.call_allocate(store, task, node),
            _ => Err(wasmtime::Error::msg("not an allocate plugin")),
        })
    }
}
