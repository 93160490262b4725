//! Deciding once per node class ([`crate::classes`]): the candidates of a
//! decision are classes, filters and scorers run on one member of each,
//! and what they say holds for every member. A filter or scorer that is
//! not class-pure for the task ([`FilterPlugin::class_pure`]) runs on
//! every member instead, in node order, as in a scan of every node; a
//! filter then keeps the part of each class that passes. The best class
//! is the one with the best total, ties going to the class whose first
//! surviving member sorts first: the node a scan of every node picks.

use std::collections::BinaryHeap;

use berth_model::task::Allocation;

use crate::classes::Class;
use crate::cluster::{Cluster, NodeState, TaskRequest};
use crate::memo::{ClassRef, ScoreMemo, weigh};
use crate::pipeline::{Decision, NodeExplain, Pipeline, blank_explain, pending_summary};
use crate::plugin::{FilterPlugin, Rejection, ScorePlugin};

/// Some or all members of one class, still feasible.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unit<'a> {
    class: &'a Class,
    /// `None`: every member; else a range of [`Candidates::parts`].
    part: Option<(u32, u32)>,
}

/// The feasible nodes of a decision, by class.
pub(crate) struct Candidates<'a> {
    pub(crate) units: Vec<Unit<'a>>,
    parts: Vec<u32>,
}

/// Where a rejection or a score lands: a whole unit or one node.
pub(crate) enum Target<'u, 'a> {
    /// Every member of the unit.
    Unit(&'u Unit<'a>, &'u Candidates<'a>),
    /// One node.
    Node(usize),
}

impl Target<'_, '_> {
    /// The nodes it stands for.
    pub(crate) fn nodes(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        match self {
            Target::Unit(u, c) => c.members(u),
            Target::Node(i) => Box::new(std::iter::once(*i)),
        }
    }
}

impl<'a> Candidates<'a> {
    /// Every class of the cluster.
    pub(crate) fn all(cluster: &'a Cluster) -> Candidates<'a> {
        Candidates::meeting(cluster, crate::Need::default())
    }

    /// The classes of the cluster that `need` does not rule out, whole.
    fn meeting(cluster: &'a Cluster, need: crate::Need) -> Candidates<'a> {
        Candidates {
            units: cluster
                .classes()
                .meeting(need)
                .map(|class| Unit { class, part: None })
                .collect(),
            parts: Vec::new(),
        }
    }

    /// The classes of the cluster that meet the filters' needs, and how
    /// many filters (from the first) those were: the lean path's start (a
    /// class short of a need is turned down by that filter, and the lean
    /// path does not say why). Every filter's need is checked here, in
    /// one pass, unless a filter is not class-pure for `task` (it may
    /// weigh a node against the others it is given): the needs of the
    /// filters after it wait for their turn.
    pub(crate) fn lean(
        cluster: &'a Cluster,
        filters: &[Box<dyn FilterPlugin>],
        task: &TaskRequest,
    ) -> (Candidates<'a>, usize) {
        let mut need = crate::Need::default();
        let mut folded = 0;
        for f in filters {
            if let Some(n) = f.need(task) {
                need = need.and(n);
            }
            folded += 1;
            if !f.need_decides(task) && !f.class_pure(task) {
                break;
            }
        }
        (Candidates::meeting(cluster, need), folded)
    }

    /// Drops the units short of `need`.
    fn keep_meeting(&mut self, need: crate::Need) {
        self.units
            .retain(|u| need.met(u.class.ready, &u.class.free));
    }

    /// The member of `u` that sorts first.
    pub(crate) fn first(&self, u: &Unit<'a>) -> usize {
        match u.part {
            None => u.class.first(),
            Some((start, _)) => self.parts[start as usize] as usize,
        }
    }

    /// The members of `u`, ascending.
    pub(crate) fn members<'s>(&'s self, u: &'s Unit<'a>) -> Box<dyn Iterator<Item = usize> + 's> {
        match u.part {
            None => Box::new(u.class.members()),
            Some((start, len)) => Box::new(
                self.parts[start as usize..(start + len) as usize]
                    .iter()
                    .map(|&i| i as usize),
            ),
        }
    }

    /// How many members `u` has.
    pub(crate) fn len_of(&self, u: &Unit<'a>) -> usize {
        u.part.map_or(u.class.len(), |(_, len)| len as usize)
    }

    /// Feasible nodes in all.
    pub(crate) fn nodes(&self) -> usize {
        self.units.iter().map(|u| self.len_of(u)).sum()
    }

    /// Every feasible node with its unit, by node.
    fn by_node(&self) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = Vec::with_capacity(self.nodes());
        for (k, u) in self.units.iter().enumerate() {
            v.extend(self.members(u).map(|i| (i as u32, k as u32)));
        }
        v.sort_unstable();
        v
    }

    /// Runs one filter: on the first member of each unit when it is
    /// class-pure for `task`, else on every member in node order.
    /// `rejected` hears of each rejection.
    pub(crate) fn filter(
        &mut self,
        f: &dyn FilterPlugin,
        task: &TaskRequest,
        all: &[NodeState],
        rejected: &mut dyn FnMut(Target<'_, 'a>, &Rejection),
    ) {
        if self.units.is_empty() {
            return;
        }
        if f.class_pure(task) {
            let view: Vec<&NodeState> = self.units.iter().map(|u| &all[self.first(u)]).collect();
            let mut out = vec![None; view.len()];
            f.filter(task, &view, &mut out);
            let mut kept = Vec::with_capacity(self.units.len());
            for (u, verdict) in self.units.iter().zip(&out) {
                match verdict {
                    Some(r) => rejected(Target::Unit(u, self), r),
                    None => kept.push(*u),
                }
            }
            self.units = kept;
            return;
        }
        let nodes = self.by_node();
        let view: Vec<&NodeState> = nodes.iter().map(|&(i, _)| &all[i as usize]).collect();
        let mut out = vec![None; view.len()];
        f.filter(task, &view, &mut out);
        // Survivors per unit, in node order.
        let mut count = vec![0u32; self.units.len()];
        for (&(i, k), verdict) in nodes.iter().zip(&out) {
            match verdict {
                Some(r) => rejected(Target::Node(i as usize), r),
                None => count[k as usize] += 1,
            }
        }
        let mut start = Vec::with_capacity(count.len());
        let mut at = 0u32;
        for c in &count {
            start.push(at);
            at += c;
        }
        let mut parts = vec![0u32; at as usize];
        let mut fill = start.clone();
        for (&(i, k), verdict) in nodes.iter().zip(&out) {
            if verdict.is_none() {
                parts[fill[k as usize] as usize] = i;
                fill[k as usize] += 1;
            }
        }
        let units = std::mem::take(&mut self.units);
        for (k, u) in units.into_iter().enumerate() {
            let n = count[k];
            if n == 0 {
                continue;
            }
            let part = if n as usize == u.class.len() {
                None
            } else {
                Some((start[k], n))
            };
            self.units.push(Unit {
                class: u.class,
                part,
            });
        }
        self.parts = parts;
    }

    /// Weighted, clamped totals: one per unit when every scorer is
    /// class-pure for `task`, else one per feasible node (the candidates
    /// are then split into single nodes). `Err` when a scorer's failure
    /// fails the decision. `scored` hears of each score.
    pub(crate) fn score(
        &mut self,
        scorers: &[(Box<dyn ScorePlugin>, f64)],
        task: &TaskRequest,
        all: &[NodeState],
        scored: &mut dyn FnMut(Target<'_, 'a>, &str, f64),
    ) -> Result<Vec<f64>, (String, Rejection)> {
        if !scorers.iter().all(|(s, _)| s.class_pure(task)) {
            self.split();
        }
        let view: Vec<&NodeState> = self.units.iter().map(|u| &all[self.first(u)]).collect();
        weigh(scorers, task, &view, &mut |k, name, v| {
            scored(Target::Unit(&self.units[k], self), name, v);
        })
    }

    /// [`Candidates::score`] on the lean path: totals kept per class
    /// ([`crate::memo`]) when every scorer names a key for `task`.
    fn score_lean(
        &mut self,
        pipe: &Pipeline,
        task: &TaskRequest,
        all: &[NodeState],
    ) -> Result<Vec<f64>, (String, Rejection)> {
        let Some(key) = ScoreMemo::key(&pipe.scorers, task) else {
            return self.score(&pipe.scorers, task, all, &mut |_, _, _| {});
        };
        let classes: Vec<ClassRef> = self
            .units
            .iter()
            .map(|u| ClassRef {
                id: u.class.id(),
                birth: u.class.birth(),
                node: self.first(u),
            })
            .collect();
        pipe.memo.totals(key, &classes, &pipe.scorers, task, all)
    }

    /// One unit per feasible node, in node order.
    fn split(&mut self) {
        let nodes = self.by_node();
        let units: Vec<Unit<'a>> = nodes
            .iter()
            .enumerate()
            .map(|(at, &(_, k))| Unit {
                class: self.units[k as usize].class,
                part: Some((at as u32, 1)),
            })
            .collect();
        self.parts = nodes.into_iter().map(|(i, _)| i).collect();
        self.units = units;
    }

    /// The unit with the best total, ties to the one whose first member
    /// sorts first.
    pub(crate) fn best(&self, total: &[f64]) -> Option<usize> {
        (0..self.units.len()).min_by(|&a, &b| {
            total[b]
                .total_cmp(&total[a])
                .then(self.first(&self.units[a]).cmp(&self.first(&self.units[b])))
        })
    }

    /// Every feasible node, best total first (ties by node): the order a
    /// scan of every node tries allocations in. Lazy: each node taken
    /// costs a heap step, so a refusal or two do not sort the cluster.
    pub(crate) fn ranked<'s>(&'s self, total: &'s [f64]) -> impl Iterator<Item = usize> + 's {
        let mut heap: BinaryHeap<Next> = self
            .units
            .iter()
            .enumerate()
            .map(|(k, u)| Next {
                total: total[k],
                node: self.first(u),
                unit: k,
            })
            .collect();
        std::iter::from_fn(move || {
            let top = heap.pop()?;
            if let Some(node) = self.after(&self.units[top.unit], top.node) {
                heap.push(Next { node, ..top });
            }
            Some(top.node)
        })
    }

    /// The member of `u` after node `i`.
    fn after(&self, u: &Unit<'a>, i: usize) -> Option<usize> {
        match u.part {
            None => u.class.after(i),
            Some((start, len)) => {
                let part = &self.parts[start as usize..(start + len) as usize];
                let at = part.partition_point(|&m| m as usize <= i);
                part.get(at).map(|&m| m as usize)
            }
        }
    }
}

/// A unit's next node in [`Candidates::ranked`]: the greatest is the best
/// total, then the smallest node.
#[derive(Debug, Clone, Copy)]
struct Next {
    total: f64,
    node: usize,
    unit: usize,
}

impl Ord for Next {
    fn cmp(&self, other: &Next) -> std::cmp::Ordering {
        self.total
            .total_cmp(&other.total)
            .then(other.node.cmp(&self.node))
    }
}

impl PartialOrd for Next {
    fn partial_cmp(&self, other: &Next) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Next {
    fn eq(&self, other: &Next) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Next {}

impl Pipeline {
    /// [`Pipeline::place`] over every node, one class at a time.
    pub(crate) fn place_by_class(
        &self,
        cluster: &Cluster,
        task: &TaskRequest,
    ) -> Option<(usize, Allocation)> {
        let all = cluster.nodes();
        let (mut c, folded) = Candidates::lean(cluster, &self.filters, task);
        for (k, f) in self.filters.iter().enumerate() {
            if k >= folded
                && let Some(need) = f.need(task)
            {
                c.keep_meeting(need);
            }
            if !f.need_decides(task) {
                c.filter(f.as_ref(), task, all, &mut |_, _| {});
            }
            if c.units.is_empty() {
                return None;
            }
        }
        let total = c.score_lean(self, task, all).ok()?;
        let best = c.first(&c.units[c.best(&total)?]);
        match self.allocator.allocate(task, &all[best]) {
            Ok(a) => Some((best, a)),
            Err(_) => c
                .ranked(&total)
                .skip(1)
                .find_map(|i| self.allocator.allocate(task, &all[i]).ok().map(|a| (i, a))),
        }
    }

    /// [`Pipeline::decide`] one class at a time, each node's verdict
    /// expanded from its class's.
    pub(crate) fn decide_by_class(&self, cluster: &Cluster, task: &TaskRequest) -> Decision {
        let all = cluster.nodes();
        let mut explain = blank_explain(all);
        let mut c = Candidates::all(cluster);
        for f in &self.filters {
            if c.units.is_empty() {
                break;
            }
            let name = f.name();
            c.filter(f.as_ref(), task, all, &mut |t, r| {
                for i in t.nodes() {
                    explain[i].filtered = Some((name.to_string(), r.clone()));
                }
            });
        }
        let mut feasible = 0;
        let mut chosen = None;
        if !c.units.is_empty() {
            let scored = c.score(&self.scorers, task, all, &mut |t, name, v| {
                for i in t.nodes() {
                    explain[i].scores.push((name.to_string(), v));
                }
            });
            match scored {
                Err((name, r)) => {
                    for u in &c.units {
                        for i in c.members(u) {
                            explain[i].filtered = Some((name.clone(), r.clone()));
                        }
                    }
                }
                Ok(total) => {
                    for (u, t) in c.units.iter().zip(&total) {
                        for i in c.members(u) {
                            explain[i].total = *t;
                        }
                    }
                    feasible = c.nodes();
                    chosen = self.allocate_in_order(task, all, &c, &total, &mut explain);
                }
            }
        }
        match chosen {
            Some((i, a)) => Decision {
                task: task.id.clone(),
                summary: format!(
                    "placed on {} (score {:.1}; {}/{} nodes feasible)",
                    all[i].name,
                    explain[i].total,
                    feasible,
                    all.len()
                ),
                placement: Some((all[i].name.clone(), a)),
                nodes: explain,
            },
            None => Decision {
                task: task.id.clone(),
                placement: None,
                summary: pending_summary(all.len(), &explain),
                nodes: explain,
            },
        }
    }

    /// Allocates on the best node, else on the next best that can (each
    /// refusal recorded), as a scan of every node does.
    fn allocate_in_order(
        &self,
        task: &TaskRequest,
        all: &[NodeState],
        c: &Candidates<'_>,
        total: &[f64],
        explain: &mut [NodeExplain],
    ) -> Option<(usize, Allocation)> {
        let best = c.first(&c.units[c.best(total)?]);
        let refused = |i: usize, r: Rejection, explain: &mut [NodeExplain]| {
            explain[i].filtered = Some((self.allocator.name().to_string(), r));
        };
        match self.allocator.allocate(task, &all[best]) {
            Ok(a) => return Some((best, a)),
            Err(r) => refused(best, r, explain),
        }
        for i in c.ranked(total).skip(1) {
            match self.allocator.allocate(task, &all[i]) {
                Ok(a) => return Some((i, a)),
                Err(r) => refused(i, r, explain),
            }
        }
        None
    }
}
