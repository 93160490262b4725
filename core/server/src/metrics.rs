//! The servers' Prometheus metrics (`prometheus-client`), served at
//! `/metrics` beside the gRPC services: what the scheduler decided and how
//! long it took, raft's progress and leadership, and each node's
//! allocatable and allocated resources. Counters and histograms are kept
//! as things happen; gauges about the state are read from it at scrape
//! time (one pass over the nodes and their tasks: a scrape costs the
//! cluster's size, a decision nothing more).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use berth_store::Store;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The metrics of one server.
pub struct ServerMetrics {
    registry: Registry,
    /// Tasks placed, by placement policy.
    pub placements: Family<Labels, Counter>,
    /// Tasks a round left pending with a new reason.
    pub unplaced: Counter,
    /// Preemptions committed.
    pub preemptions: Counter,
    /// How long each scheduling decision round took.
    pub round_seconds: Histogram,
    /// Times this server saw the leader change.
    pub leader_changes: Counter,
    /// From proposing a change to its commit and apply on this server.
    pub commit_seconds: Histogram,
    pending: Gauge,
    pending_by_reason: Family<Labels, Gauge>,
    snapshot_bytes: Gauge,
    snapshot_index: Gauge,
    plugin_calls: Family<Labels, Counter>,
    plugin_failures: Family<Labels, Counter>,
    plugin_latency: Family<Labels, FloatGauge>,
    /// The plugin counters last read, to add only what is new (a
    /// reloaded plugin starts its own counters at zero).
    plugin_seen: std::sync::Mutex<std::collections::HashMap<Labels, u64>>,
    applied: Gauge,
    is_leader: Gauge,
    nodes: Family<Labels, Gauge>,
    allocatable_cpu: Family<Labels, FloatGauge>,
    allocatable_memory: Family<Labels, Gauge>,
    allocatable_gpus: Family<Labels, Gauge>,
    allocated_cpu: Family<Labels, FloatGauge>,
    allocated_memory: Family<Labels, Gauge>,
    allocated_gpus: Family<Labels, Gauge>,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerMetrics")
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics::new()
    }
}

impl ServerMetrics {
    /// Registers every metric.
    pub fn new() -> ServerMetrics {
        let mut r = Registry::with_prefix("berth");
        let m = ServerMetrics {
            registry: Registry::default(),
            placements: Family::default(),
            unplaced: Counter::default(),
            preemptions: Counter::default(),
            round_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            leader_changes: Counter::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
            pending: Gauge::default(),
            pending_by_reason: Family::default(),
            snapshot_bytes: Gauge::default(),
            snapshot_index: Gauge::default(),
            plugin_calls: Family::default(),
            plugin_failures: Family::default(),
            plugin_latency: Family::default(),
            plugin_seen: Default::default(),
            applied: Gauge::default(),
            is_leader: Gauge::default(),
            nodes: Family::default(),
            allocatable_cpu: Family::default(),
            allocatable_memory: Family::default(),
            allocatable_gpus: Family::default(),
            allocated_cpu: Family::default(),
            allocated_memory: Family::default(),
            allocated_gpus: Family::default(),
        };
        r.register(
            "placements",
            "Tasks placed, by placement policy",
            m.placements.clone(),
        );
        r.register(
            "unplaced",
            "Tasks a scheduling round left pending with a new reason",
            m.unplaced.clone(),
        );
        r.register(
            "preemptions",
            "Preemptions committed",
            m.preemptions.clone(),
        );
        r.register(
            "scheduling_round_duration_seconds",
            "Time to decide one scheduling round (every pending task in it)",
            m.round_seconds.clone(),
        );
        r.register(
            "raft_leader_changes",
            "Leader changes this server saw",
            m.leader_changes.clone(),
        );
        r.register(
            "pending_tasks",
            "Tasks waiting for a node",
            m.pending.clone(),
        );
        r.register(
            "pending_tasks_by_reason",
            "Tasks waiting for a node, by the class of their reason",
            m.pending_by_reason.clone(),
        );
        r.register(
            "raft_commit_duration_seconds",
            "Time from proposing a change to its commit and apply here",
            m.commit_seconds.clone(),
        );
        r.register(
            "raft_snapshot_bytes",
            "Size of this server's latest raft snapshot",
            m.snapshot_bytes.clone(),
        );
        r.register(
            "raft_snapshot_index",
            "Log index of this server's latest raft snapshot",
            m.snapshot_index.clone(),
        );
        r.register(
            "plugin_calls",
            "Calls into each loaded plugin on this server",
            m.plugin_calls.clone(),
        );
        r.register(
            "plugin_failures",
            "Plugin calls that failed, by plugin and cause",
            m.plugin_failures.clone(),
        );
        r.register(
            "plugin_call_latency_seconds",
            "Plugin call latency quantiles (bucket upper bounds) since load",
            m.plugin_latency.clone(),
        );
        r.register(
            "raft_applied_index",
            "The log index this server applied",
            m.applied.clone(),
        );
        r.register("raft_is_leader", "1 on the leader", m.is_leader.clone());
        r.register("nodes", "Nodes by status", m.nodes.clone());
        r.register(
            "node_allocatable_cpu_cores",
            "CPU a node offers",
            m.allocatable_cpu.clone(),
        );
        r.register(
            "node_allocatable_memory_bytes",
            "Memory a node offers",
            m.allocatable_memory.clone(),
        );
        r.register(
            "node_allocatable_gpus",
            "GPUs a node has, by model",
            m.allocatable_gpus.clone(),
        );
        r.register(
            "node_allocated_cpu_cores",
            "CPU held by a node's tasks (exclusive cores count whole)",
            m.allocated_cpu.clone(),
        );
        r.register(
            "node_allocated_memory_bytes",
            "Memory held by a node's tasks",
            m.allocated_memory.clone(),
        );
        r.register(
            "node_allocated_gpus",
            "GPUs held by a node's tasks (shares in thousandths summed), by model",
            m.allocated_gpus.clone(),
        );
        ServerMetrics { registry: r, ..m }
    }

    /// Follows leadership changes of `store` (for the counter).
    pub fn watch_leader(self: &Arc<Self>, store: &Store) {
        let mut role = store.role();
        let me = self.clone();
        tokio::spawn(async move {
            let mut last = role.borrow().1;
            while role.changed().await.is_ok() {
                let leader = role.borrow().1;
                if leader != last && leader != 0 {
                    me.leader_changes.inc();
                }
                last = leader;
            }
        });
    }

    /// The text exposition, with the state's gauges read now.
    pub async fn render(&self, store: &Store, plugins: &crate::plugins::PluginSet) -> String {
        if let Ok(st) = store.status().await {
            self.snapshot_bytes
                .set(i64::try_from(st.snapshot_bytes).unwrap_or(i64::MAX));
            self.snapshot_index
                .set(i64::try_from(st.snapshot).unwrap_or(i64::MAX));
        }
        self.refresh_plugins(plugins);
        self.refresh(store);
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            return String::new();
        }
        out
    }

    fn refresh(&self, store: &Store) {
        self.is_leader.set(i64::from(store.is_leader()));
        let applied = *store.applied().borrow();
        self.applied.set(i64::try_from(applied).unwrap_or(i64::MAX));
        let state = store.read();
        self.pending
            .set(i64::try_from(state.tasks.pending_count()).unwrap_or(i64::MAX));
        self.pending_by_reason.clear();
        let mut classes: std::collections::BTreeMap<&str, i64> = Default::default();
        for t in state.tasks.pending() {
            *classes.entry(reason_class(&t.message)).or_default() += 1;
        }
        for (c, n) in classes {
            self.pending_by_reason
                .get_or_create(&vec![("reason".to_string(), c.to_string())])
                .set(n);
        }
        for f in [
            &self.allocatable_memory,
            &self.allocatable_gpus,
            &self.allocated_memory,
            &self.allocated_gpus,
            &self.nodes,
        ] {
            f.clear();
        }
        self.allocatable_cpu.clear();
        self.allocated_cpu.clear();
        let label = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let mut by_status: std::collections::BTreeMap<&str, i64> = Default::default();
        for (name, n) in &state.nodes {
            let u = crate::usage::of_node(&state, name, n);
            *by_status.entry(u.status).or_default() += 1;
            let node = label("node", name);
            self.allocatable_cpu
                .get_or_create(&node)
                .set(u.cpu as f64 / 1000.0);
            self.allocatable_memory
                .get_or_create(&node)
                .set(i64::try_from(u.memory).unwrap_or(i64::MAX));
            self.allocated_cpu
                .get_or_create(&node)
                .set(u.cpu_held as f64 / 1000.0);
            self.allocated_memory
                .get_or_create(&node)
                .set(i64::try_from(u.memory_held).unwrap_or(i64::MAX));
            for (model, (have, held)) in u.gpus {
                let l = vec![
                    ("node".to_string(), name.clone()),
                    ("model".to_string(), model),
                ];
                self.allocatable_gpus.get_or_create(&l).set(have as i64);
                self.allocated_gpus.get_or_create(&l).set(held as i64);
            }
        }
        for (s, n) in by_status {
            self.nodes.get_or_create(&label("status", s)).set(n);
        }
        drop(state);
    }
}

impl ServerMetrics {
    fn refresh_plugins(&self, plugins: &crate::plugins::PluginSet) {
        let mut seen = self.plugin_seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut add = |family: &Family<Labels, Counter>, labels: Labels, raw: u64| {
            let last = seen.insert(labels.clone(), raw).unwrap_or(0);
            // A reloaded plugin counts from zero again.
            let new = if raw >= last { raw - last } else { raw };
            family.get_or_create(&labels).inc_by(new);
        };
        self.plugin_latency.clear();
        for name in plugins.loaded_names() {
            let (_, Some(m), _) = plugins.status(&name) else {
                continue;
            };
            let plugin = ("plugin".to_string(), name.clone());
            add(&self.plugin_calls, vec![plugin.clone()], m.calls);
            for (cause, n) in m.failures {
                add(
                    &self.plugin_failures,
                    vec![plugin.clone(), ("cause".to_string(), cause)],
                    n,
                );
            }
            for (q, us) in [("0.5", m.p50_us), ("0.99", m.p99_us)] {
                self.plugin_latency
                    .get_or_create(&vec![
                        plugin.clone(),
                        ("quantile".to_string(), q.to_string()),
                    ])
                    .set(us / 1e6);
            }
        }
    }
}

/// The class of a pending task's reason, for a label with few values:
/// the words before its first colon (`quota`, `no node fits`...), else
/// `other`; `waiting` when it has none yet.
pub fn reason_class(message: &str) -> &str {
    if message.is_empty() {
        return "waiting";
    }
    match message.split_once(':') {
        Some((head, _)) if head.len() <= 32 && !head.contains(['/', '"']) => head.trim(),
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fall_into_few_classes() {
        assert_eq!(reason_class(""), "waiting");
        assert_eq!(reason_class("quota: namespace a uses 8/8 H100"), "quota");
        assert_eq!(
            reason_class("a very long sentence without any colon"),
            "other"
        );
        assert_eq!(
            reason_class("x".repeat(40).as_str()),
            "other",
            "no colon at all"
        );
    }
}
