//! Scores kept per node class: a class's state does not change while it
//! lives ([`crate::classes`]), so a scorer whose answer depends on the
//! node alone and on a part of the task it can name
//! ([`ScorePlugin::task_key`]) answers the same for every later task with
//! that key. The lean path ([`crate::Pipeline::place`] by class) asks
//! only about classes born since the key was last seen, and reads the
//! rest.
//!
//! The totals kept are the pipeline's own weighted sums, computed as an
//! unkept decision computes them (same scorers, same order, same
//! clamping), so a kept total is the same number to the bit.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::cluster::{NodeState, TaskRequest};
use crate::plugin::{Rejection, ScorePlugin};
use crate::policy::hash::FxBuild;

/// Task keys kept at once; past this the memo starts afresh.
const MAX_KEYS: usize = 256;

/// Weighted totals per (task key, class).
#[derive(Default)]
pub(crate) struct ScoreMemo {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Every scorer's key for a task → column.
    keys: HashMap<Vec<u64>, u32, FxBuild>,
    /// Per column, per class id: (class birth, total); birth 0 is never a
    /// class's.
    cols: Vec<Vec<(u64, f64)>>,
}

/// One class to total: its id and birth, and the node that stands for it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClassRef {
    pub(crate) id: usize,
    pub(crate) birth: u64,
    pub(crate) node: usize,
}

impl ScoreMemo {
    /// Forgets everything (the scorers changed).
    pub(crate) fn clear(&mut self) {
        *self.inner.get_mut().unwrap_or_else(PoisonError::into_inner) = Inner::default();
    }

    /// Every scorer's key for `task`, when each is class-pure for it and
    /// names one: then [`ScoreMemo::totals`] applies.
    pub(crate) fn key(
        scorers: &[(Box<dyn ScorePlugin>, f64)],
        task: &TaskRequest,
    ) -> Option<Vec<u64>> {
        scorers
            .iter()
            .map(|(s, _)| s.class_pure(task).then(|| s.task_key(task)).flatten())
            .collect()
    }

    /// The totals of `classes` for a task whose scorers' keys are `key`
    /// (see [`ScoreMemo::key`]): kept ones read, the others scored in one
    /// batch and kept. `Err` when a scorer's failure fails the decision.
    pub(crate) fn totals(
        &self,
        key: Vec<u64>,
        classes: &[ClassRef],
        scorers: &[(Box<dyn ScorePlugin>, f64)],
        task: &TaskRequest,
        all: &[NodeState],
    ) -> Result<Vec<f64>, (String, Rejection)> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let col = match inner.keys.get(&key) {
            Some(&col) => col as usize,
            None => {
                if inner.keys.len() >= MAX_KEYS {
                    *inner = Inner::default();
                }
                let col = inner.cols.len();
                inner.keys.insert(key, col as u32);
                inner.cols.push(Vec::new());
                col
            }
        };
        let kept = &mut inner.cols[col];
        let mut total = vec![0.0; classes.len()];
        let mut missing = Vec::new();
        for (k, c) in classes.iter().enumerate() {
            match kept.get(c.id) {
                Some(&(birth, t)) if birth == c.birth => total[k] = t,
                _ => missing.push(k),
            }
        }
        if missing.is_empty() {
            return Ok(total);
        }
        let view: Vec<&NodeState> = missing.iter().map(|&k| &all[classes[k].node]).collect();
        let fresh = weigh(scorers, task, &view, &mut |_, _, _| {})?;
        for (&k, t) in missing.iter().zip(fresh) {
            let c = classes[k];
            if kept.len() <= c.id {
                kept.resize(c.id + 1, (0, 0.0));
            }
            kept[c.id] = (c.birth, t);
            total[k] = t;
        }
        Ok(total)
    }
}

/// Weighted, clamped totals of `scorers` for `view`, one per node: each
/// score clamped to `0..=100` (not finite: 0), times its weight, summed in
/// scorer order. `scored` hears of each score (node position, scorer,
/// score). `Err` when a scorer's failure fails the decision.
pub(crate) fn weigh(
    scorers: &[(Box<dyn ScorePlugin>, f64)],
    task: &TaskRequest,
    view: &[&NodeState],
    scored: &mut dyn FnMut(usize, &str, f64),
) -> Result<Vec<f64>, (String, Rejection)> {
    let mut total = vec![0.0; view.len()];
    let mut scores = vec![0.0; view.len()];
    for (s, weight) in scorers {
        scores.fill(0.0);
        s.score(task, view, &mut scores);
        if let Some(r) = s.take_failure() {
            return Err((s.name().to_string(), r));
        }
        for (k, (t, v)) in total.iter_mut().zip(&scores).enumerate() {
            let v = if v.is_finite() {
                v.clamp(0.0, 100.0)
            } else {
                0.0
            };
            scored(k, s.name(), v);
            *t += v * weight;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::builtin::DefaultAllocator;
    use crate::cluster::{Cluster, NodeState, TaskRequest};
    use crate::plugin::ScorePlugin;
    use crate::{Pipeline, policy::FastFit};

    /// Scores by free CPU after the task, counting the nodes it is asked
    /// about.
    struct Counting(&'static AtomicUsize);

    impl ScorePlugin for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn class_pure(&self, _task: &TaskRequest) -> bool {
            true
        }
        fn task_key(&self, task: &TaskRequest) -> Option<u64> {
            Some(task.cpu)
        }
        fn score(&self, task: &TaskRequest, nodes: &[&NodeState], out: &mut [f64]) {
            self.0.fetch_add(nodes.len(), Ordering::Relaxed);
            for (n, o) in nodes.iter().zip(out.iter_mut()) {
                *o = 100.0 - (n.cpu_free() - task.cpu) as f64 / 100.0;
            }
        }
    }

    fn nodes(n: usize) -> Vec<NodeState> {
        (0..n)
            .map(|i| NodeState {
                name: format!("n{i:03}"),
                ready: true,
                cpu_capacity: 8000,
                mem_capacity: 1 << 34,
                ..Default::default()
            })
            .collect()
    }

    fn task(cpu: u64) -> TaskRequest {
        TaskRequest {
            id: "t".into(),
            cpu,
            memory: 1 << 20,
            ..Default::default()
        }
    }

    /// A task key seen before is scored only on the classes born since;
    /// another key starts its own column; a class's total is its own.
    #[test]
    fn kept_totals_are_read_and_new_classes_scored() {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let p = Pipeline::new(Box::new(DefaultAllocator))
            .filter(Box::new(FastFit))
            .score(Box::new(Counting(&CALLS)), 1.0)
            .by_class(true);
        let mut c = Cluster::new(nodes(50));
        let asked = || CALLS.swap(0, Ordering::Relaxed);
        let (i, a) = p.place(&c, &task(1000)).unwrap();
        assert_eq!((i, asked()), (0, 1), "one class, asked once");
        assert_eq!(p.place(&c, &task(1000)).unwrap().0, 0);
        assert_eq!(asked(), 0, "nothing new: every total read");
        let name = c.nodes()[i].name.clone();
        assert!(c.commit(&name, &a));
        // n000 is in a class of its own now, fuller: binpack-like scores
        // send the next task there, asking about that class only.
        assert_eq!(p.place(&c, &task(1000)).unwrap().0, 0);
        assert_eq!(asked(), 1);
        // Another key: both classes asked once.
        assert_eq!(p.place(&c, &task(2000)).unwrap().0, 0);
        assert_eq!(asked(), 2);
        // The decisions are those of scoring every node every time.
        let plain = Pipeline::new(Box::new(DefaultAllocator))
            .filter(Box::new(FastFit))
            .score(Box::new(Counting(&CALLS)), 1.0)
            .by_class(false);
        for cpu in [1000, 2000, 7000, 7500] {
            assert_eq!(
                p.place(&c, &task(cpu)),
                plain.place(&c, &task(cpu)),
                "{cpu}"
            );
        }
    }
}
