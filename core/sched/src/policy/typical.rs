//! Typical pods: the most common task shapes of a workload and their
//! frequencies, the distribution FGD measures fragmentation against
//! (`GetTypicalPods` in the FGD simulator).

use std::collections::HashMap;

use crate::cluster::{GPU_MILLI, TaskRequest};

/// A task shape: what FGD groups tasks by.
///
/// The derived order (cpu, milli, count, spec) is the FGD simulator's
/// tie-break order between equally common shapes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodShape {
    /// CPU request, millicores.
    pub cpu: u64,
    /// Thousandths per GPU (0 for CPU-only shapes).
    pub milli: u32,
    /// Number of GPUs (0 for CPU-only shapes).
    pub count: u32,
    /// The raw allowed-model string (`V100M16|V100M32`; empty: any). Part of
    /// the key as written, so `A|B|B` and `A|B` are different shapes.
    pub spec: String,
}

impl PodShape {
    /// A shape; CPU-only shapes (no GPUs or no thousandths) are normalised
    /// to `(cpu, 0, 0, "")`.
    pub fn new(cpu: u64, milli: u32, count: u32, spec: &str) -> PodShape {
        if milli == 0 || count == 0 {
            return PodShape {
                cpu,
                milli: 0,
                count: 0,
                spec: String::new(),
            };
        }
        PodShape {
            cpu,
            milli,
            count,
            spec: spec.to_string(),
        }
    }

    /// The shape of a task (its models joined with `|`).
    pub fn of_task(task: &TaskRequest) -> PodShape {
        match &task.gpus {
            Some(g) => PodShape::new(
                task.cpu_demand(),
                g.milli.min(GPU_MILLI),
                g.count,
                &g.models.join("|"),
            ),
            None => PodShape::new(task.cpu_demand(), 0, 0, ""),
        }
    }

    /// Whether it asks for no GPU.
    pub fn cpu_only(&self) -> bool {
        self.milli == 0
    }

    /// Allowed models: the non-empty `|`-separated tokens (empty: any).
    pub fn models(&self) -> Vec<String> {
        self.spec
            .split('|')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Whether a GPU model label is allowed (exact token match, as the FGD
    /// simulator's `IsNodeAccessibleToPodByType`).
    pub fn model_ok(&self, model: &str) -> bool {
        let mut any = false;
        for t in self.spec.split('|').filter(|s| !s.is_empty()) {
            any = true;
            if t == model {
                return true;
            }
        }
        !any
    }
}

/// One typical shape and its weight (weights of a list sum to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct TypicalPod {
    /// The shape.
    pub shape: PodShape,
    /// Its share of the kept shapes.
    pub weight: f64,
}

/// The typical pods of a workload: shapes grouped and sorted by count
/// (descending; ties to the larger cpu, milli, count, spec), the shortest
/// prefix covering `threshold_pct` percent of all tasks, renormalised.
pub fn typical_pods<I: IntoIterator<Item = PodShape>>(
    shapes: I,
    threshold_pct: f64,
) -> Vec<TypicalPod> {
    let mut counts: HashMap<PodShape, u64> = HashMap::new();
    for s in shapes {
        *counts.entry(s).or_insert(0) += 1;
    }
    typical_from_counts(counts, threshold_pct)
}

/// [`typical_pods`] from shapes already counted (how many tasks have each),
/// for callers that keep the counts as tasks come and go.
pub fn typical_from_counts<I: IntoIterator<Item = (PodShape, u64)>>(
    counts: I,
    threshold_pct: f64,
) -> Vec<TypicalPod> {
    let mut list: Vec<(PodShape, f64)> = counts
        .into_iter()
        .filter(|(_, c)| *c > 0)
        .map(|(s, c)| (s, c as f64))
        .collect();
    let total: f64 = list.iter().map(|(_, c)| c).sum();
    if total == 0.0 {
        return Vec::new();
    }
    list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let expected = threshold_pct * total / 100.0;
    let mut cum = 0.0;
    let mut kept = 0;
    while cum < expected && kept < list.len() {
        cum += list[kept].1;
        kept += 1;
    }
    if kept >= list.len() {
        return list
            .into_iter()
            .map(|(shape, c)| TypicalPod {
                shape,
                weight: c / total,
            })
            .collect();
    }
    list.truncate(kept);
    list.into_iter()
        .map(|(shape, c)| TypicalPod {
            shape,
            weight: (c / total) / (cum / total),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_only_shapes_are_normalised() {
        assert_eq!(
            PodShape::new(4000, 0, 0, "T4"),
            PodShape::new(4000, 0, 0, "")
        );
        assert!(PodShape::new(4000, 0, 0, "").cpu_only());
        assert_eq!(
            PodShape::new(4000, 500, 1, "A|B|B").models(),
            vec!["A", "B", "B"]
        );
    }

    #[test]
    fn model_check_is_by_exact_token() {
        let s = PodShape::new(1, 500, 1, "V100M16|V100M32");
        assert!(s.model_ok("V100M32"));
        assert!(!s.model_ok("V100"));
        assert!(PodShape::new(1, 500, 1, "").model_ok("anything"));
        assert!(PodShape::new(1, 500, 1, "|").model_ok("anything"));
    }

    #[test]
    fn prefix_covers_the_threshold_and_renormalises() {
        let mut shapes = Vec::new();
        for _ in 0..60 {
            shapes.push(PodShape::new(1000, 500, 1, ""));
        }
        for _ in 0..30 {
            shapes.push(PodShape::new(2000, 1000, 1, ""));
        }
        for _ in 0..6 {
            shapes.push(PodShape::new(3000, 0, 0, ""));
        }
        for _ in 0..4 {
            shapes.push(PodShape::new(4000, 0, 0, ""));
        }
        let t = typical_pods(shapes.clone(), 95.0);
        assert_eq!(t.len(), 3);
        let sum: f64 = t.iter().map(|p| p.weight).sum();
        assert!((sum - 1.0).abs() < 1e-12);
        assert!((t[0].weight - 60.0 / 96.0).abs() < 1e-12);
        // Everything kept: plain frequencies.
        let all = typical_pods(shapes, 100.0);
        assert_eq!(all.len(), 4);
        assert!((all[3].weight - 0.04).abs() < 1e-12);
    }

    #[test]
    fn ties_go_to_the_larger_shape() {
        let shapes = vec![PodShape::new(1000, 0, 0, ""), PodShape::new(2000, 0, 0, "")];
        let t = typical_pods(shapes, 50.0);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].shape.cpu, 2000);
        assert!(typical_pods(Vec::new(), 95.0).is_empty());
    }
}
