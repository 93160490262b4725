//! Reporting a benchmark run: the curve as a table, the METHOD.md §6 style
//! row, and JSON.

use std::fmt::Write;

use serde_json::{Map, Value, json};

use crate::openb::metric::{self, COLUMNS};

/// Columns of the published table (METHOD.md §6).
pub const KEY_COLUMNS: [usize; 4] = [90, 100, 110, 130];

/// One seed's result.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// Allocation ratio (%) per arrived-demand column 0..=130.
    pub curve: Vec<Option<f64>>,
    /// Pods submitted.
    pub pods: usize,
    /// Pods placed.
    pub placed: usize,
    /// Pods that fit nowhere.
    pub failed: usize,
    /// Seconds this seed took.
    pub wall_s: f64,
}

/// The result of [`crate::run_openb`].
#[derive(Debug, Clone, PartialEq)]
pub struct OpenbReport {
    /// The trace file as given.
    pub trace: String,
    /// Its short name (`default`, `gpushare40`, ...).
    pub workload: String,
    /// The policy as given.
    pub policy: String,
    /// Per-seed results, in the order the seeds were given.
    pub runs: Vec<SeedRun>,
    /// Mean curve over the seeds.
    pub mean: Vec<Option<f64>>,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

impl OpenbReport {
    /// A report from its runs (the mean is computed here).
    pub fn new(
        trace: String,
        workload: String,
        policy: String,
        runs: Vec<SeedRun>,
        wall_s: f64,
    ) -> OpenbReport {
        let curves: Vec<Vec<Option<f64>>> = runs.iter().map(|r| r.curve.clone()).collect();
        let mean = metric::mean_curve(&curves);
        OpenbReport {
            trace,
            workload,
            policy,
            runs,
            mean,
            wall_s,
        }
    }

    /// The seeds run.
    pub fn seeds(&self) -> Vec<u64> {
        self.runs.iter().map(|r| r.seed).collect()
    }

    /// The mean allocation ratio at column `c` (0..=130).
    pub fn column(&self, c: usize) -> Option<f64> {
        self.mean.get(c).copied().flatten()
    }

    /// The allocation curve every 10 columns (90, 100, 110 and 130
    /// included), per-seed columns 90..130, and the METHOD.md §6 style row.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let n = self.runs.len().max(1);
        let pods: usize = self.runs.iter().map(|r| r.pods).sum::<usize>() / n;
        let failed: usize = self.runs.iter().map(|r| r.failed).sum::<usize>() / n;
        let _ = writeln!(
            s,
            "openb {} | policy {} | {} seeds | {pods} pods/seed, {failed} failed/seed (mean) | {:.1}s",
            self.workload,
            self.policy,
            self.runs.len(),
            self.wall_s
        );
        let _ = writeln!(s, "arrived%  alloc%");
        for c in (0..COLUMNS).step_by(10) {
            let _ = writeln!(s, "{c:>8}  {:>6}", fmt(self.column(c)));
        }
        let _ = writeln!(s, "\nseed    90      100     110     130     failed");
        for r in &self.runs {
            let cols: Vec<String> = KEY_COLUMNS
                .iter()
                .map(|&c| format!("{:<7}", fmt(r.curve.get(c).copied().flatten())))
                .collect();
            let _ = writeln!(s, "{:<7} {} {}", r.seed, cols.join(" "), r.failed);
        }
        let _ = writeln!(
            s,
            "\n|workload|policy|90|100|110|130|\n|---|---|---|---|---|---|"
        );
        let cols: Vec<String> = KEY_COLUMNS.iter().map(|&c| fmt(self.column(c))).collect();
        let _ = writeln!(s, "|{}|{}|{}|", self.workload, self.policy, cols.join("|"));
        s
    }

    /// `{"trace","policy","seeds","columns":{"90":x,"100":x,"110":x,"130":x}}`,
    /// the columns being means over the seeds (2 decimals; null if empty).
    pub fn json(&self) -> Value {
        let mut cols = Map::new();
        for c in KEY_COLUMNS {
            let v = self.column(c).map(metric::py_round2);
            cols.insert(c.to_string(), v.map_or(Value::Null, |v| json!(v)));
        }
        json!({
            "trace": self.workload,
            "policy": self.policy,
            "seeds": self.seeds(),
            "columns": Value::Object(cols),
        })
    }
}
