//! Quotas per namespace: the most CPU, memory, GPUs (by model) and tasks
//! the namespace's running instances may hold together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most GPU models one quota names.
pub const MAX_GPU_MODELS: usize = 64;

/// A namespace's limits; a limit left out is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// CPU in millicores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// Memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// GPUs by model name as the inventory reports it (`H100`, `A100`):
    /// a model a GPU's name contains.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gpus: BTreeMap<String, u32>,
    /// Instances holding resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u32>,
}

/// What a namespace's instances hold (or one instance asks for).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Millicores.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory_bytes: u64,
    /// GPUs by their model name (the inventory's).
    pub gpus: BTreeMap<String, u32>,
    /// Instances.
    pub tasks: u32,
}

impl Usage {
    /// Adds (`sign` true) or takes away another usage.
    pub fn add(&mut self, other: &Usage, sign: bool) {
        let f = |a: u64, b: u64| {
            if sign {
                a.saturating_add(b)
            } else {
                a.saturating_sub(b)
            }
        };
        self.cpu_millis = f(self.cpu_millis, other.cpu_millis);
        self.memory_bytes = f(self.memory_bytes, other.memory_bytes);
        self.tasks = f(u64::from(self.tasks), u64::from(other.tasks)) as u32;
        for (m, n) in &other.gpus {
            let e = self.gpus.entry(m.clone()).or_insert(0);
            *e = f(u64::from(*e), u64::from(*n)) as u32;
            if *e == 0 {
                self.gpus.remove(m);
            }
        }
    }

    /// GPUs whose model name contains `model` (case-insensitive), and
    /// those of requests that named no single model.
    pub fn gpus_of(&self, model: &str) -> u32 {
        let m = model.to_ascii_lowercase();
        self.gpus
            .iter()
            .filter(|(k, _)| *k == ANY_MODEL || k.to_ascii_lowercase().contains(&m))
            .map(|(_, n)| *n)
            .sum()
    }
}

impl Usage {
    /// What one instance of `spec` holds, as quotas count it: its CPU
    /// (exclusive cores as whole cores), memory, one task, and its GPUs
    /// under the model it names (`*` when it names none or several: such
    /// a request counts against every model's limit).
    pub fn of_spec(spec: &crate::AppSpec) -> Usage {
        let r = &spec.resources;
        let cpu = if r.cores > 0 {
            u64::from(r.cores) * 1000
        } else {
            r.cpu.0
        };
        let mut gpus = BTreeMap::new();
        if let Some(g) = &r.gpus {
            let n = if g.milli < 1000 && g.mig_profile.is_none() {
                1
            } else {
                g.count
            };
            let model = match g.model.as_slice() {
                [one] => one.clone(),
                _ => ANY_MODEL.to_string(),
            };
            gpus.insert(model, n);
        }
        Usage {
            cpu_millis: cpu,
            memory_bytes: r.memory.0,
            gpus,
            tasks: 1,
        }
    }
}

/// The model key of a GPU request that names no single model.
pub const ANY_MODEL: &str = "*";

impl Quota {
    /// Checks the limits' names and sizes.
    pub fn check(&self) -> Result<(), String> {
        if self.gpus.len() > MAX_GPU_MODELS {
            return Err(format!("gpus: at most {MAX_GPU_MODELS} models"));
        }
        if let Some(m) = self.gpus.keys().find(|m| {
            m.is_empty()
                || m.len() > 64
                || !m
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        }) {
            return Err(format!(
                "gpus: {m:?} is not a GPU model name (letters, digits, '-', '_')"
            ));
        }
        Ok(())
    }

    /// Why `want` more does not fit next to `used` in namespace `ns`, if
    /// it does not: `quota: namespace team-a uses 8/8 H100`.
    pub fn refuses(&self, ns: &str, used: &Usage, want: &Usage) -> Option<String> {
        let over =
            |what: &str, used: u64, want: u64, limit: Option<u64>, fmt: &dyn Fn(u64) -> String| {
                let limit = limit?;
                (want > 0 && used.saturating_add(want) > limit).then(|| {
                    format!(
                        "quota: namespace {ns} uses {}/{} {what}",
                        fmt(used),
                        fmt(limit)
                    )
                })
            };
        let plain = |v: u64| v.to_string();
        let cores = |v: u64| crate::MilliCpu(v).to_string();
        let bytes = |v: u64| crate::Bytes(v).to_string();
        over(
            "tasks",
            u64::from(used.tasks),
            u64::from(want.tasks),
            self.tasks.map(u64::from),
            &plain,
        )
        .or_else(|| {
            over(
                "cpu",
                used.cpu_millis,
                want.cpu_millis,
                self.cpu_millis,
                &cores,
            )
        })
        .or_else(|| {
            over(
                "memory",
                used.memory_bytes,
                want.memory_bytes,
                self.memory_bytes,
                &bytes,
            )
        })
        .or_else(|| {
            self.gpus.iter().find_map(|(model, limit)| {
                over(
                    model,
                    u64::from(used.gpus_of(model)),
                    u64::from(want.gpus_of(model)),
                    Some(u64::from(*limit)),
                    &plain,
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus(model: &str, n: u32) -> Usage {
        Usage {
            gpus: [(model.to_string(), n)].into(),
            tasks: 1,
            ..Usage::default()
        }
    }

    #[test]
    fn a_request_over_a_limit_is_refused_with_the_use() {
        let q = Quota {
            gpus: [("H100".to_string(), 8)].into(),
            tasks: Some(10),
            ..Quota::default()
        };
        let mut used = Usage::default();
        for _ in 0..2 {
            assert_eq!(
                q.refuses("team-a", &used, &gpus("NVIDIA H100 80GB HBM3", 4)),
                None
            );
            used.add(&gpus("NVIDIA H100 80GB HBM3", 4), true);
        }
        assert_eq!(
            q.refuses("team-a", &used, &gpus("NVIDIA H100 80GB HBM3", 1))
                .unwrap(),
            "quota: namespace team-a uses 8/8 H100"
        );
        // Other models are not limited by the H100 rule.
        assert_eq!(q.refuses("team-a", &used, &gpus("NVIDIA A100", 1)), None);
        used.add(&gpus("NVIDIA H100 80GB HBM3", 4), false);
        assert_eq!(used.gpus_of("h100"), 4);
        assert_eq!(used.tasks, 1);
    }

    #[test]
    fn cpu_memory_and_task_limits() {
        let q = Quota {
            cpu_millis: Some(2000),
            memory_bytes: Some(1 << 30),
            tasks: Some(2),
            ..Quota::default()
        };
        let one = Usage {
            cpu_millis: 1500,
            memory_bytes: 1 << 29,
            tasks: 1,
            ..Usage::default()
        };
        assert_eq!(q.refuses("a", &Usage::default(), &one), None);
        assert!(q.refuses("a", &one, &one).unwrap().contains("cpu"));
        assert!(
            Quota {
                gpus: [("bad name".into(), 1)].into(),
                ..Quota::default()
            }
            .check()
            .unwrap_err()
            .starts_with("gpus:")
        );
    }
}
