//! Preemption: when a task fits nowhere, find the node where evicting the
//! smallest set of lower-priority tasks makes it fit. Pure, like the rest
//! of the scheduler: the caller commits the evictions.

use berth_model::task::Allocation;

use crate::cluster::{Cluster, NodeState, TaskRequest};
use crate::pipeline::Pipeline;

/// A task that holds resources on a node and might be evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    /// Task id.
    pub id: String,
    /// Its node.
    pub node: String,
    /// Its group (app).
    pub group: String,
    /// Its priority.
    pub priority: i32,
    /// What it holds.
    pub allocation: Allocation,
    /// Already being stopped (evicted earlier, or removed): its resources
    /// are as good as free and it is never chosen again.
    pub leaving: bool,
}

/// The eviction plan for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    /// The node the task will take once the victims are gone.
    pub node: String,
    /// Tasks to evict now (lowest priority first).
    pub evict: Vec<String>,
    /// Tasks already leaving whose resources the task waits for.
    pub waiting_on: Vec<String>,
}

fn fits(p: &Pipeline, node: &NodeState, task: &TaskRequest) -> bool {
    p.decide(&Cluster::new(vec![node.clone()]), task)
        .placement
        .is_some()
}

/// Finds the node where the fewest evictions (then the lowest victim
/// priority, then the node name) make `task` fit. Only tasks of strictly
/// lower priority are candidates.
pub fn find(
    p: &Pipeline,
    cluster: &Cluster,
    task: &TaskRequest,
    victims: &[Victim],
) -> Option<Preemption> {
    let mut best: Option<(usize, i32, Preemption)> = None;
    for node in cluster.nodes().iter().filter(|n| n.ready) {
        let here: Vec<&Victim> = victims.iter().filter(|v| v.node == node.name).collect();
        let mut n = node.clone();
        let leaving: Vec<String> = here
            .iter()
            .filter(|v| v.leaving)
            .map(|v| v.id.clone())
            .collect();
        for v in here.iter().filter(|v| v.leaving) {
            n.release(&v.allocation);
        }
        let mut cands: Vec<&&Victim> = here
            .iter()
            .filter(|v| !v.leaving && v.priority < task.priority)
            .collect();
        cands.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.id.cmp(&b.id)));
        let mut chosen: Vec<&Victim> = Vec::new();
        let mut ok = fits(p, &n, task);
        for v in &cands {
            if ok {
                break;
            }
            n.release(&v.allocation);
            chosen.push(v);
            ok = fits(p, &n, task);
        }
        if !ok {
            continue;
        }
        // Keep only the victims that are needed.
        let mut i = chosen.len();
        while i > 0 {
            i -= 1;
            n.take(&chosen[i].allocation);
            if fits(p, &n, task) {
                chosen.remove(i);
            } else {
                n.release(&chosen[i].allocation);
            }
        }
        let max_prio = chosen.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
        let plan = Preemption {
            node: node.name.clone(),
            evict: chosen.iter().map(|v| v.id.clone()).collect(),
            waiting_on: leaving,
        };
        let key = (plan.evict.len(), max_prio);
        if best.as_ref().is_none_or(|(l, m, _)| key < (*l, *m)) {
            best = Some((key.0, key.1, plan));
        }
    }
    best.map(|(_, _, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::quantity::{Bytes, MilliCpu};

    fn node(name: &str, cpu: u64) -> NodeState {
        NodeState {
            name: name.into(),
            ready: true,
            cpu_capacity: cpu,
            mem_capacity: 1 << 30,
            ..Default::default()
        }
    }

    fn victim(id: &str, node: &str, prio: i32, cpu: u64) -> Victim {
        Victim {
            id: id.into(),
            node: node.into(),
            group: "low".into(),
            priority: prio,
            allocation: Allocation {
                cpu: MilliCpu(cpu),
                memory: Bytes(1),
                ..Default::default()
            },
            leaving: false,
        }
    }

    #[test]
    fn evicts_the_fewest_lowest_priority_tasks() {
        let vs = vec![
            victim("a1", "a", 0, 1000),
            victim("a2", "a", 0, 1000),
            victim("b1", "b", 0, 2000),
            victim("b2", "b", 5, 500),
        ];
        let mut c = Cluster::new(vec![node("a", 2000), node("b", 2500)]);
        for v in &vs {
            c.commit(&v.node, &v.allocation);
        }
        let task = TaskRequest {
            id: "hi".into(),
            cpu: 2000,
            memory: 1,
            priority: 10,
            ..Default::default()
        };
        let p = find(&Pipeline::default(), &c, &task, &vs).unwrap();
        assert_eq!(p.node, "b", "one victim on b beats two on a");
        assert_eq!(p.evict, vec!["b1"]);
        // Equal priority is never evicted.
        let task = TaskRequest {
            priority: 0,
            ..task
        };
        assert!(find(&Pipeline::default(), &c, &task, &vs).is_none());
    }

    #[test]
    fn tasks_already_leaving_count_as_free() {
        let mut vs = vec![victim("a1", "a", 0, 2000)];
        vs[0].leaving = true;
        let mut c = Cluster::new(vec![node("a", 2000)]);
        c.commit("a", &vs[0].allocation);
        let task = TaskRequest {
            id: "hi".into(),
            cpu: 2000,
            memory: 1,
            priority: 1,
            ..Default::default()
        };
        let p = find(&Pipeline::default(), &c, &task, &vs).unwrap();
        assert!(p.evict.is_empty());
        assert_eq!(p.waiting_on, vec!["a1"]);
    }
}
