//! The placement pipeline: filter, score, allocate, explain.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_model::task::Allocation;

use crate::builtin::{BinPack, DefaultAllocator, HardwareFit, HostPorts, NodeReady, ResourceFit};
use crate::cluster::{Cluster, NodeState, TaskRequest};
use crate::constraints::Constraints;
use crate::memo::ScoreMemo;
use crate::plugin::{AllocatePlugin, FilterPlugin, Rejection, ScorePlugin};
use crate::sample::HotSet;
use crate::scan::{HOT, Scan};
use crate::topology::{GpuTopology, NumaAlign};

/// What the pipeline found out about one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeExplain {
    /// Node name.
    pub node: String,
    /// The plugin that filtered it out and why, if it was.
    pub filtered: Option<(String, Rejection)>,
    /// Each scorer's score, when it was feasible.
    pub scores: Vec<(String, f64)>,
    /// Weighted total.
    pub total: f64,
}

/// A placement decision with its explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Task id.
    pub task: String,
    /// Chosen node and allocation, or `None` when nothing fits.
    pub placement: Option<(String, Allocation)>,
    /// One line: why the task went where it went, or why it is pending.
    pub summary: String,
    /// Per-node detail.
    pub nodes: Vec<NodeExplain>,
}

/// An ordered chain of plugins.
pub struct Pipeline {
    pub(crate) filters: Vec<Box<dyn FilterPlugin>>,
    pub(crate) scorers: Vec<(Box<dyn ScorePlugin>, f64)>,
    pub(crate) allocator: Box<dyn AllocatePlugin>,
    /// Decide one node class at a time (see [`crate::classes`]) when
    /// every node is considered: `Some(true)` always, `Some(false)` never
    /// (node by node), `None` (the default) when classes are fewer than
    /// two thirds of the nodes.
    by_class: Option<bool>,
    /// [`Pipeline::place`] stops filtering once this many feasible nodes
    /// are found (`None`: filter every node).
    sample: Option<usize>,
    /// Where the next sampled scan starts (advanced past the nodes each
    /// scan examined, like kube-scheduler's `nextStartNodeIndex`).
    next_start: AtomicUsize,
    /// Nodes recently chosen per kind of task, also scored when sampling.
    hot: HotSet,
    /// Totals kept per node class and task key (the lean path by class).
    pub(crate) memo: ScoreMemo,
}

/// Nodes filtered per batch while sampling.
const SAMPLE_BATCH: usize = 32;

impl Default for Pipeline {
    /// The built-in chain: constraints, node-ready, resource-fit,
    /// host-ports, hardware-fit; binpack, numa-align, gpu-topology; the
    /// default allocator.
    fn default() -> Pipeline {
        Pipeline::filters_only(Box::new(DefaultAllocator))
            .score(Box::new(BinPack), 1.0)
            .numa_and_topology()
    }
}

impl Pipeline {
    /// An empty chain with the given allocator.
    pub fn new(allocator: Box<dyn AllocatePlugin>) -> Pipeline {
        Pipeline {
            filters: Vec::new(),
            scorers: Vec::new(),
            allocator,
            sample: None,
            next_start: AtomicUsize::new(0),
            hot: HotSet::default(),
            by_class: None,
            memo: ScoreMemo::default(),
        }
    }

    /// Whether decisions over every node run once per node class or once
    /// per node, whatever the classes. Both decide the same, task for
    /// task. By default a decision goes by class when the classes are
    /// fewer than two thirds of the nodes and every scorer is class-pure
    /// for the task: where nearly every node is a class of its own, or
    /// every node must be scored anyway, node by node costs less.
    pub fn by_class(mut self, yes: bool) -> Pipeline {
        self.by_class = Some(yes);
        self
    }

    /// Whether a decision for `task` on `cluster` goes by class.
    fn classes_pay(&self, cluster: &Cluster, task: &TaskRequest) -> bool {
        self.by_class.unwrap_or_else(|| {
            cluster.classes().len() * 3 <= cluster.nodes().len() * 2
                && self.scorers.iter().all(|(s, _)| s.class_pure(task))
        })
    }

    /// Every built-in filter (constraints, node-ready, resource-fit,
    /// host-ports, hardware-fit) and no scorer, with `allocator`.
    pub fn filters_only(allocator: Box<dyn AllocatePlugin>) -> Pipeline {
        Pipeline::new(allocator)
            .filter(Box::new(Constraints))
            .filter(Box::new(NodeReady))
            .filter(Box::new(ResourceFit))
            .filter(Box::new(HostPorts))
            .filter(Box::new(HardwareFit))
    }

    /// Appends the `numa-align` and `gpu-topology` scorers (weight 1 each).
    pub fn numa_and_topology(self) -> Pipeline {
        self.score(Box::new(NumaAlign), 1.0)
            .score(Box::new(GpuTopology), 1.0)
    }

    /// Bounded sampling for [`Pipeline::place`], like kube-scheduler's
    /// `percentageOfNodesToScore`: filtering stops once `n` feasible nodes
    /// are found, and each scan starts where the previous one stopped, so
    /// every node gets its turn. `None` (or 0) filters every node.
    /// [`Pipeline::decide`] always considers every node.
    ///
    /// Half of the sample is kept for the nodes most recently chosen for
    /// the same kind of task (see [`crate::sample`]), when they are still
    /// feasible; [`Pipeline::remember`] changes how many.
    pub fn sample(mut self, n: Option<usize>) -> Pipeline {
        self.sample = n.filter(|&n| n > 0);
        self.hot = HotSet::new(self.sample.map_or(0, |n| n / 2));
        self
    }

    /// While sampling, also score up to `k` nodes most recently chosen
    /// for the same kind of task (0: the plain rotating sample).
    pub fn remember(mut self, k: usize) -> Pipeline {
        self.hot = HotSet::new(k);
        self
    }

    /// Lets every plugin see the snapshot before a decision.
    fn prepare(&self, cluster: &Cluster) {
        for f in &self.filters {
            f.prepare(cluster);
        }
        for (s, _) in &self.scorers {
            s.prepare(cluster);
        }
        self.allocator.prepare(cluster);
    }

    /// Replaces the allocator.
    pub fn allocator(mut self, a: Box<dyn AllocatePlugin>) -> Pipeline {
        self.allocator = a;
        self
    }

    /// Appends a filter.
    pub fn filter(mut self, f: Box<dyn FilterPlugin>) -> Pipeline {
        self.filters.push(f);
        self
    }

    /// Appends a scorer with a weight.
    pub fn score(mut self, s: Box<dyn ScorePlugin>, weight: f64) -> Pipeline {
        self.memo.clear();
        self.scorers.push((s, weight));
        self
    }

    /// Decides where `task` goes in `cluster`. Does not change the cluster:
    /// the caller commits the placement (see [`Cluster::commit`]).
    pub fn decide(&self, cluster: &Cluster, task: &TaskRequest) -> Decision {
        self.prepare(cluster);
        if self.classes_pay(cluster, task) {
            return self.decide_by_class(cluster, task);
        }
        let all = cluster.nodes();
        let mut explain = blank_explain(all);
        // Indexes of nodes still feasible.
        let mut alive: Vec<usize> = (0..all.len()).collect();

        // 1. Filters, each over the nodes the previous ones kept.
        for f in &self.filters {
            if alive.is_empty() {
                break;
            }
            let view: Vec<&NodeState> = alive.iter().map(|&i| &all[i]).collect();
            let mut out = vec![None; view.len()];
            f.filter(task, &view, &mut out);
            let mut keep = Vec::with_capacity(alive.len());
            for (&i, verdict) in alive.iter().zip(out) {
                match verdict {
                    Some(r) => explain[i].filtered = Some((f.name().to_string(), r)),
                    None => keep.push(i),
                }
            }
            alive = keep;
        }

        // 2. Scores, weighted and summed.
        if !alive.is_empty() {
            let view: Vec<&NodeState> = alive.iter().map(|&i| &all[i]).collect();
            for (s, weight) in &self.scorers {
                let mut out = vec![0.0; view.len()];
                s.score(task, &view, &mut out);
                if let Some(r) = s.take_failure() {
                    for &i in &alive {
                        explain[i].filtered = Some((s.name().to_string(), r.clone()));
                    }
                    alive.clear();
                    break;
                }
                for (&i, v) in alive.iter().zip(out) {
                    let v = if v.is_finite() {
                        v.clamp(0.0, 100.0)
                    } else {
                        0.0
                    };
                    explain[i].scores.push((s.name().to_string(), v));
                    explain[i].total += v * weight;
                }
            }
        }

        // 3. Best first; ties go to the node that sorts first by name.
        alive.sort_by(|&a, &b| {
            explain[b]
                .total
                .total_cmp(&explain[a].total)
                .then(a.cmp(&b))
        });

        // 4. Allocate on the best node that can.
        for &i in &alive {
            match self.allocator.allocate(task, &all[i]) {
                Ok(a) => {
                    let summary = format!(
                        "placed on {} (score {:.1}; {}/{} nodes feasible)",
                        all[i].name,
                        explain[i].total,
                        alive.len(),
                        all.len()
                    );
                    return Decision {
                        task: task.id.clone(),
                        placement: Some((all[i].name.clone(), a)),
                        summary,
                        nodes: explain,
                    };
                }
                Err(r) => explain[i].filtered = Some((self.allocator.name().to_string(), r)),
            }
        }
        let summary = pending_summary(all.len(), &explain);
        Decision {
            task: task.id.clone(),
            placement: None,
            summary,
            nodes: explain,
        }
    }
}

impl Pipeline {
    /// The lean path for simulations and bulk placement: the same filters,
    /// scores, tie-break (best total, then the node that sorts first) and
    /// allocation as [`Pipeline::decide`], without building explanations.
    /// Returns the chosen node's index in `cluster.nodes()` and the
    /// allocation, or `None` when nothing fits. With [`Pipeline::sample`],
    /// only the first feasible nodes found from a rotating start are scored.
    pub fn place(&self, cluster: &Cluster, task: &TaskRequest) -> Option<(usize, Allocation)> {
        self.prepare(cluster);
        let all = cluster.nodes();
        let n = all.len();
        if n == 0 {
            return None;
        }
        let (start, limit) = match self.sample {
            Some(s) if s < n => (self.next_start.load(Ordering::Relaxed) % n, s),
            _ if self.classes_pay(cluster, task) => return self.place_by_class(cluster, task),
            _ => (0, usize::MAX),
        };
        let hot = if limit == usize::MAX || self.hot.cap() == 0 {
            Vec::new()
        } else {
            self.hot.nodes(task, n)
        };
        let mut scan = Scan::new(&self.filters, task, all, limit);
        scan.push(hot.iter().map(|&i| (i, HOT)));
        // Where the hot nodes fall in the scan, ascending: the scan skips
        // them (they were queued first) as it walks past.
        let mut hot_at: Vec<usize> = hot.iter().map(|&i| (i + n - start) % n).collect();
        hot_at.sort_unstable();
        let mut next_hot = 0;
        let mut not_hot = |k: &usize| {
            while hot_at.get(next_hot).is_some_and(|&h| h < *k) {
                next_hot += 1;
            }
            hot_at.get(next_hot) != Some(k)
        };
        let mut scanned = 0;
        while scanned < n && !scan.full() {
            let batch = if limit == usize::MAX {
                n
            } else {
                scan.need().max(SAMPLE_BATCH).min(n - scanned)
            };
            scan.push(
                (scanned..scanned + batch)
                    .filter(&mut not_hot)
                    .map(|k| ((start + k) % n, k)),
            );
            scanned += batch;
            scan.advance(scanned >= n);
        }
        if scan.full() {
            // The scan goes on after the last node it used.
            scanned = match scan.feasible().last() {
                Some(&(_, k)) if k != HOT => k + 1,
                _ => 0,
            };
        }
        if limit != usize::MAX {
            self.next_start
                .store((start + scanned) % n, Ordering::Relaxed);
        }
        let feasible: Vec<usize> = scan.feasible().iter().map(|&(i, _)| i).collect();
        if feasible.is_empty() {
            return None;
        }

        let view: Vec<&NodeState> = feasible.iter().map(|&i| &all[i]).collect();
        let mut total = vec![0.0; feasible.len()];
        let mut scores = vec![0.0; feasible.len()];
        for (s, weight) in &self.scorers {
            scores.fill(0.0);
            s.score(task, &view, &mut scores);
            if s.take_failure().is_some() {
                return None;
            }
            for (t, v) in total.iter_mut().zip(&scores) {
                let v = if v.is_finite() {
                    v.clamp(0.0, 100.0)
                } else {
                    0.0
                };
                *t += v * weight;
            }
        }
        let better = |a: usize, b: usize| {
            total[b]
                .total_cmp(&total[a])
                .then(feasible[a].cmp(&feasible[b]))
        };
        let best = (0..feasible.len()).min_by(|&a, &b| better(a, b))?;
        let chosen = match self.allocator.allocate(task, &all[feasible[best]]) {
            Ok(a) => Some((feasible[best], a)),
            Err(_) => {
                let mut order: Vec<usize> = (0..feasible.len()).filter(|&k| k != best).collect();
                order.sort_by(|&a, &b| better(a, b));
                order.into_iter().find_map(|k| {
                    let i = feasible[k];
                    self.allocator.allocate(task, &all[i]).ok().map(|a| (i, a))
                })
            }
        };
        if let Some((i, _)) = &chosen {
            self.hot.record(task, *i);
        }
        chosen
    }
}

/// One empty explanation per node.
pub(crate) fn blank_explain(all: &[NodeState]) -> Vec<NodeExplain> {
    all.iter()
        .map(|n| NodeExplain {
            node: n.name.clone(),
            filtered: None,
            scores: Vec::new(),
            total: 0.0,
        })
        .collect()
}

/// `0/3 nodes: 2 insufficient memory, 1 port 8080 in use`.
pub(crate) fn pending_summary(total: usize, explain: &[NodeExplain]) -> String {
    if total == 0 {
        return "0/0 nodes: no nodes registered".into();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in explain {
        if let Some((_, r)) = &e.filtered {
            *counts.entry(r.reason.as_ref()).or_default() += 1;
        }
    }
    let mut parts: Vec<(&str, usize)> = counts.into_iter().collect();
    parts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let body: Vec<String> = parts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    format!("0/{total} nodes: {}", body.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: u64, mem: u64) -> NodeState {
        NodeState {
            name: name.into(),
            ready: true,
            cpu_capacity: cpu,
            mem_capacity: mem,
            ..Default::default()
        }
    }

    fn task(cpu: u64, mem: u64, ports: &[u16]) -> TaskRequest {
        TaskRequest {
            id: "t".into(),
            cpu,
            memory: mem,
            ports: ports.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn binpack_prefers_the_fuller_node() {
        let mut a = node("a", 4000, 4 << 30);
        a.cpu_used = 2000;
        a.mem_used = 2 << 30;
        let c = Cluster::new(vec![node("b", 4000, 4 << 30), a]);
        let d = Pipeline::default().decide(&c, &task(500, 1 << 20, &[]));
        assert_eq!(d.placement.unwrap().0, "a");
    }

    #[test]
    fn ties_go_to_the_first_name() {
        let c = Cluster::new(vec![node("z", 1000, 1 << 30), node("m", 1000, 1 << 30)]);
        let d = Pipeline::default().decide(&c, &task(100, 1, &[]));
        assert_eq!(d.placement.unwrap().0, "m");
    }

    #[test]
    fn pending_reason_counts_each_cause() {
        let mut p = node("p", 8000, 8 << 30);
        p.ports_used.insert(8080);
        let mut down = node("d", 8000, 8 << 30);
        down.ready = false;
        let c = Cluster::new(vec![
            node("small1", 100, 1 << 30),
            node("small2", 100, 1 << 30),
            p,
            down,
        ]);
        let d = Pipeline::default().decide(&c, &task(500, 1 << 20, &[8080]));
        assert!(d.placement.is_none());
        assert_eq!(
            d.summary,
            "0/4 nodes: 2 insufficient cpu, 1 node not ready, 1 port 8080 in use"
        );
        let small = d.nodes.iter().find(|n| n.node == "small1").unwrap();
        let (plugin, r) = small.filtered.as_ref().unwrap();
        assert_eq!(plugin, "resource-fit");
        assert_eq!(r.detail, "need 500m, free 100m");
    }

    #[test]
    fn committed_placements_are_accounted() {
        let mut c = Cluster::new(vec![node("a", 1000, 1 << 30)]);
        let p = Pipeline::default();
        for _ in 0..4 {
            let d = p.decide(&c, &task(250, 1 << 20, &[]));
            let (n, a) = d.placement.unwrap();
            assert!(c.commit(&n, &a));
        }
        assert!(p.decide(&c, &task(250, 1 << 20, &[])).placement.is_none());
    }

    #[test]
    fn no_nodes_is_explained() {
        let d = Pipeline::default().decide(&Cluster::new(vec![]), &task(1, 1, &[]));
        assert_eq!(d.summary, "0/0 nodes: no nodes registered");
    }

    #[test]
    fn place_agrees_with_decide() {
        let mut nodes = Vec::new();
        for i in 0..12u64 {
            let mut n = node(
                &format!("n{:02}", (i * 7) % 12),
                1000 + 500 * (i % 4),
                4 << 30,
            );
            n.cpu_used = 250 * (i % 3);
            nodes.push(n);
        }
        let mut c = Cluster::new(nodes);
        let p = Pipeline::default();
        for k in 0..40u64 {
            let t = task(100 + 50 * (k % 5), 1 << 20, &[]);
            let d = p.decide(&c, &t);
            let fast = p.place(&c, &t);
            match (d.placement, fast) {
                (Some((name, a)), Some((i, b))) => {
                    assert_eq!(c.nodes()[i].name, name);
                    assert_eq!(a, b);
                    assert!(c.commit(&name, &a));
                }
                (None, None) => {}
                (x, y) => panic!("decide {x:?} vs place {y:?}"),
            }
        }
    }

    #[test]
    fn sampling_bounds_the_scan_and_rotates() {
        let nodes: Vec<NodeState> = (0..10)
            .map(|i| node(&format!("n{i}"), 1000, 1 << 30))
            .collect();
        let c = Cluster::new(nodes);
        let p = Pipeline::default().sample(Some(2)).remember(0);
        // All nodes tie; each scan sees 2 nodes from a rotating start.
        let picks: Vec<usize> = (0..5)
            .map(|_| p.place(&c, &task(1, 1, &[])).unwrap().0)
            .collect();
        assert_eq!(picks, vec![0, 2, 4, 6, 8]);
        // Unsampled: always the first name.
        let full = Pipeline::default();
        assert_eq!(full.place(&c, &task(1, 1, &[])).unwrap().0, 0);
        assert!(full.place(&c, &task(5000, 1, &[])).is_none());
        assert!(
            full.place(&Cluster::new(vec![]), &task(1, 1, &[]))
                .is_none()
        );
    }

    #[test]
    fn sampling_also_scores_the_nodes_last_chosen() {
        let nodes: Vec<NodeState> = (0..10)
            .map(|i| node(&format!("n{i}"), 1000, 1 << 30))
            .collect();
        for (remember, want) in [(1, vec![0, 0, 0]), (0, vec![0, 2, 4])] {
            let mut c = Cluster::new(nodes.clone());
            let p = Pipeline::default().sample(Some(2)).remember(remember);
            let mut picks = Vec::new();
            for _ in 0..3 {
                let (i, a) = p.place(&c, &task(100, 1, &[])).unwrap();
                let name = c.nodes()[i].name.clone();
                assert!(c.commit(&name, &a));
                picks.push(i);
            }
            // Binpack prefers the partly used node when it is scored.
            assert_eq!(picks, want, "remember {remember}");
        }
    }

    #[test]
    fn dynamic_ports_are_the_lowest_free_of_the_range() {
        let mut a = node("a", 8000, 8 << 30);
        a.ports_used.insert(20000);
        let mut c = Cluster::new(vec![a]);
        let p = Pipeline::default();
        // Fixed 20001 is skipped for the dynamic ones; order is kept.
        let (_, first) = p.place(&c, &task(1, 1, &[0, 20001, 0])).unwrap();
        assert_eq!(first.ports, vec![20002, 20001, 20003]);
        assert!(c.commit("a", &first));
        let (_, second) = p.place(&c, &task(1, 1, &[0])).unwrap();
        assert_eq!(second.ports, vec![20004], "committed ports are taken");
        // A full range filters the node out, naming the range.
        let mut full = node("f", 8000, 8 << 30);
        full.ports_used.extend(crate::builtin::DYNAMIC_PORTS);
        let d = p.decide(&Cluster::new(vec![full]), &task(1, 1, &[0]));
        assert!(d.placement.is_none());
        assert_eq!(d.summary, "0/1 nodes: 1 no dynamic port free");
    }
}
