//! The filter stage of a sampled scan ([`crate::Pipeline::place`]): nodes
//! flow through the filters in scan order, and each filter is called only
//! once it holds as many waiting nodes as the sample still needs (or the
//! scan is over).
//!
//! A filter with a fixed cost per call (a Wasm plugin: the call, the task,
//! the columns) is then called about once per decision instead of once per
//! scanned batch, while the cheap native filters in front of it thin the
//! nodes out. The result is the one a batch-by-batch scan gives: the first
//! nodes in scan order that pass every filter, because every filter sees
//! its waiting nodes in order and passes the survivors on in order.

use crate::cluster::{NodeState, TaskRequest};
use crate::plugin::{FilterPlugin, Rejection};

/// Where a node entered the scan: its offset from the scan's start, or
/// [`HOT`] for the remembered nodes that go first.
pub(crate) type Pos = usize;

/// The position of a remembered ("hot") node.
pub(crate) const HOT: Pos = usize::MAX;

/// Nodes on their way through the filters of one decision.
pub(crate) struct Scan<'a> {
    filters: &'a [Box<dyn FilterPlugin>],
    task: &'a TaskRequest,
    all: &'a [NodeState],
    limit: usize,
    /// `pending[i]`: passed the filters before `i`, waiting for filter `i`.
    pending: Vec<Vec<(usize, Pos)>>,
    /// Passed every filter, in scan order (at most `limit`).
    feasible: Vec<(usize, Pos)>,
    view: Vec<&'a NodeState>,
    out: Vec<Option<Rejection>>,
}

impl<'a> Scan<'a> {
    /// A scan that stops at `limit` feasible nodes (`usize::MAX`: none).
    pub(crate) fn new(
        filters: &'a [Box<dyn FilterPlugin>],
        task: &'a TaskRequest,
        all: &'a [NodeState],
        limit: usize,
    ) -> Scan<'a> {
        Scan {
            filters,
            task,
            all,
            limit,
            pending: vec![Vec::new(); filters.len()],
            feasible: Vec::new(),
            view: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Feasible nodes still wanted.
    pub(crate) fn need(&self) -> usize {
        self.limit - self.feasible.len()
    }

    /// Whether the sample is complete.
    pub(crate) fn full(&self) -> bool {
        self.feasible.len() >= self.limit
    }

    /// Queues nodes, in scan order, for the first filter.
    pub(crate) fn push(&mut self, nodes: impl Iterator<Item = (usize, Pos)>) {
        match self.pending.first_mut() {
            Some(p) => p.extend(nodes),
            None => {
                self.feasible.extend(nodes);
                self.feasible.truncate(self.limit);
            }
        }
    }

    /// Runs each filter whose queue holds as many nodes as are still
    /// needed, or every non-empty one when `last` (the scan is over).
    pub(crate) fn advance(&mut self, last: bool) {
        for i in 0..self.filters.len() {
            if self.full() {
                return;
            }
            let waiting = self.pending[i].len();
            if waiting == 0 || (!last && waiting < self.need()) {
                continue;
            }
            let mut batch = std::mem::take(&mut self.pending[i]);
            self.run(i, &mut batch);
            match self.pending.get_mut(i + 1) {
                Some(next) => next.extend_from_slice(&batch),
                None => {
                    self.feasible.extend_from_slice(&batch);
                    self.feasible.truncate(self.limit);
                }
            }
            batch.clear();
            self.pending[i] = batch;
        }
    }

    /// Keeps the nodes of `batch` that filter `i` passes.
    fn run(&mut self, i: usize, batch: &mut Vec<(usize, Pos)>) {
        let all = self.all;
        self.view.clear();
        self.view.extend(batch.iter().map(|&(n, _)| &all[n]));
        self.out.clear();
        self.out.resize(batch.len(), None);
        self.filters[i].filter(self.task, &self.view, &mut self.out);
        let mut k = 0;
        batch.retain(|_| {
            k += 1;
            self.out[k - 1].is_none()
        });
    }

    /// The feasible nodes, in scan order.
    pub(crate) fn feasible(&self) -> &[(usize, Pos)] {
        &self.feasible
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Rejects nodes whose slot is a multiple of `modulo`; counts calls.
    struct Every(u32, Arc<AtomicUsize>);

    impl FilterPlugin for Every {
        fn name(&self) -> &str {
            "every"
        }
        fn filter(&self, _: &TaskRequest, nodes: &[&NodeState], out: &mut [Option<Rejection>]) {
            self.1.fetch_add(1, Ordering::Relaxed);
            for (n, o) in nodes.iter().zip(out) {
                if n.slot % self.0 == 0 {
                    *o = Some(Rejection::new("no", ""));
                }
            }
        }
    }

    /// Scans nodes 0..96 in batches of 4 after the hot nodes 99 and 97.
    fn scan(filters: &[Box<dyn FilterPlugin>], limit: usize) -> Vec<(usize, Pos)> {
        let all: Vec<NodeState> = (0..100)
            .map(|slot| NodeState {
                slot,
                ..Default::default()
            })
            .collect();
        let task = TaskRequest::default();
        let mut scan = Scan::new(filters, &task, &all, limit);
        scan.push([(99, HOT), (97, HOT)].into_iter());
        let mut scanned = 0;
        while !scan.full() && scanned < 96 {
            scan.push((scanned..scanned + 4).map(|k| (k, k)));
            scanned += 4;
            scan.advance(scanned >= 96);
        }
        scan.feasible().to_vec()
    }

    #[test]
    fn first_nodes_in_scan_order_with_few_calls_to_the_last_filter() {
        let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let filters: Vec<Box<dyn FilterPlugin>> =
            vec![Box::new(Every(2, a.clone())), Box::new(Every(3, b.clone()))];
        // Odd and not a multiple of 3; hot nodes first (99 is rejected).
        assert_eq!(
            scan(&filters, 5),
            vec![(97, HOT), (1, 1), (5, 5), (7, 7), (11, 11)]
        );
        // Each filter ran once it held as many nodes as were still
        // needed: the first on 6 then 8 nodes, the second on 8.
        assert_eq!(a.load(Ordering::Relaxed), 2);
        assert_eq!(b.load(Ordering::Relaxed), 1);
        // Unbounded: everything that passes, each filter once at the end.
        let all = scan(&filters, usize::MAX);
        assert_eq!(a.load(Ordering::Relaxed), 3);
        assert_eq!(b.load(Ordering::Relaxed), 2);
        assert_eq!(all.len(), 1 + 32);
        assert!(all[1..].windows(2).all(|w| w[0].1 < w[1].1));
        // No filters: the first nodes pushed.
        assert_eq!(scan(&[], 2), vec![(99, HOT), (97, HOT)]);
    }
}
