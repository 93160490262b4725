//! Loading the openb node and pod CSV files (`data/csv/*.csv` of the FGD
//! simulator's repository). Errors name the file, line and column.

use std::path::{Path, PathBuf};

use berth_sched::cluster::{GPU_MILLI, GpuRequest, GpuState, NodeState, TaskRequest};
use berth_sched::policy::PodShape;

use crate::SimError;

/// One GPU node: `sn, cpu_milli, memory_mib, gpu, model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenbNode {
    /// Serial name.
    pub sn: String,
    /// CPU, millicores.
    pub cpu_milli: u64,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Number of GPUs (1000 thousandths each).
    pub gpu: u32,
    /// GPU model label (`P100`, `T4`, `V100M16`, `V100M32`, `G2`, `G3`, `A10`).
    pub model: String,
}

impl OpenbNode {
    /// The scheduler's view of this node, named `name`.
    pub fn state(&self, name: String) -> NodeState {
        NodeState {
            gpus: (0..self.gpu)
                .map(|i| GpuState {
                    index: i,
                    uuid: format!("{}/{i}", self.sn),
                    model: self.model.clone(),
                    ..Default::default()
                })
                .collect(),
            name,
            ready: true,
            cpu_capacity: self.cpu_milli,
            mem_capacity: self.memory_mib << 20,
            ..Default::default()
        }
    }
}

/// One pod: `name, cpu_milli, memory_mib, num_gpu, gpu_milli[, gpu_spec, ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenbPod {
    /// Pod name.
    pub name: String,
    /// CPU request, millicores.
    pub cpu_milli: u64,
    /// Memory request, MiB.
    pub memory_mib: u64,
    /// GPUs (0..=8).
    pub num_gpu: u32,
    /// Thousandths per GPU (0..=1000).
    pub gpu_milli: u32,
    /// Allowed models, `|`-separated (empty: any).
    pub gpu_spec: String,
}

impl OpenbPod {
    /// Whether it asks for GPU.
    pub fn is_gpu(&self) -> bool {
        self.num_gpu > 0 && self.gpu_milli > 0
    }

    /// GPU demand in thousandths: `num_gpu × gpu_milli`.
    pub fn gpu_demand(&self) -> u64 {
        if self.is_gpu() {
            u64::from(self.num_gpu) * u64::from(self.gpu_milli)
        } else {
            0
        }
    }

    /// Its FGD shape (CPU-only pods: `(cpu, 0, 0, "")`).
    pub fn shape(&self) -> PodShape {
        PodShape::new(self.cpu_milli, self.gpu_milli, self.num_gpu, &self.gpu_spec)
    }

    /// The scheduler's task for this pod.
    pub fn task(&self) -> TaskRequest {
        TaskRequest {
            id: self.name.clone(),
            cpu: self.cpu_milli,
            memory: self.memory_mib << 20,
            gpus: self.is_gpu().then(|| GpuRequest {
                count: self.num_gpu,
                milli: self.gpu_milli,
                models: self.shape().models(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Splits one CSV record (double quotes may wrap a field; `""` escapes one).
fn split_record(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// A parsed CSV file: header and records with their line numbers.
struct Table {
    file: PathBuf,
    header: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    fn parse(path: &Path, text: &str) -> Result<Table, SimError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, head)) = lines.next() else {
            return Err(SimError::Csv {
                file: path.to_path_buf(),
                line: 1,
                column: "-".into(),
                msg: "empty file: no header".into(),
            });
        };
        let header: Vec<String> = split_record(head)
            .into_iter()
            .map(|h| h.trim().to_string())
            .collect();
        let mut rows = Vec::new();
        for (n, l) in lines {
            let fields = split_record(l);
            if fields.len() != header.len() {
                return Err(SimError::Csv {
                    file: path.to_path_buf(),
                    line: n,
                    column: format!("{}", fields.len().min(header.len()) + 1),
                    msg: format!("expected {} fields, found {}", header.len(), fields.len()),
                });
            }
            rows.push((n, fields));
        }
        Ok(Table {
            file: path.to_path_buf(),
            header,
            rows,
        })
    }

    /// Index of a column, or an error naming it.
    fn col(&self, name: &str) -> Result<usize, SimError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| SimError::Csv {
                file: self.file.clone(),
                line: 1,
                column: name.into(),
                msg: format!("missing column (header has: {})", self.header.join(", ")),
            })
    }

    fn err(&self, line: usize, col: usize, msg: String) -> SimError {
        SimError::Csv {
            file: self.file.clone(),
            line,
            column: format!("{} ({})", col + 1, self.header[col]),
            msg,
        }
    }

    /// A non-negative integer field (`12000` or `12000.0`), at most `max`.
    fn int(&self, line: usize, row: &[String], col: usize, max: u64) -> Result<u64, SimError> {
        let raw = row[col].trim();
        let v = raw.parse::<u64>().ok().or_else(|| {
            raw.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1e18)
                .map(|f| f as u64)
        });
        match v {
            Some(v) if v <= max => Ok(v),
            Some(v) => Err(self.err(line, col, format!("{v} is more than {max}"))),
            None => Err(self.err(line, col, format!("{raw:?} is not a non-negative integer"))),
        }
    }

    fn text(&self, line: usize, row: &[String], col: usize) -> Result<String, SimError> {
        let v = row[col].trim();
        if v.is_empty() {
            return Err(self.err(line, col, "empty".into()));
        }
        Ok(v.to_string())
    }
}

/// Largest CPU or memory figure accepted (far beyond any real node).
const MAX_QUANTITY: u64 = 1 << 40;

/// Parses a node list (`sn, cpu_milli, memory_mib, gpu, model`).
pub fn parse_nodes(path: &Path, text: &str) -> Result<Vec<OpenbNode>, SimError> {
    let t = Table::parse(path, text)?;
    let (sn, cpu, mem, gpu, model) = (
        t.col("sn")?,
        t.col("cpu_milli")?,
        t.col("memory_mib")?,
        t.col("gpu")?,
        t.col("model")?,
    );
    t.rows
        .iter()
        .map(|(n, r)| {
            let gpus = t.int(*n, r, gpu, 64)? as u32;
            let label = r[model].trim().to_string();
            if gpus > 0 && label.is_empty() {
                return Err(t.err(*n, model, "a GPU node needs a model".into()));
            }
            Ok(OpenbNode {
                sn: t.text(*n, r, sn)?,
                cpu_milli: t.int(*n, r, cpu, MAX_QUANTITY)?,
                memory_mib: t.int(*n, r, mem, MAX_QUANTITY)?,
                gpu: gpus,
                model: label,
            })
        })
        .collect()
}

/// Parses a pod list (`name, cpu_milli, memory_mib, num_gpu, gpu_milli`,
/// optional `gpu_spec`; other columns are ignored).
pub fn parse_pods(path: &Path, text: &str) -> Result<Vec<OpenbPod>, SimError> {
    let t = Table::parse(path, text)?;
    let (name, cpu, mem, num, milli) = (
        t.col("name")?,
        t.col("cpu_milli")?,
        t.col("memory_mib")?,
        t.col("num_gpu")?,
        t.col("gpu_milli")?,
    );
    let spec = t.col("gpu_spec").ok();
    t.rows
        .iter()
        .map(|(n, r)| {
            let raw_spec = spec.map(|c| r[c].trim().to_string()).unwrap_or_default();
            let gpu_spec = if raw_spec.eq_ignore_ascii_case("nan") {
                String::new()
            } else {
                raw_spec
            };
            Ok(OpenbPod {
                name: t.text(*n, r, name)?,
                cpu_milli: t.int(*n, r, cpu, MAX_QUANTITY)?,
                memory_mib: t.int(*n, r, mem, MAX_QUANTITY)?,
                num_gpu: t.int(*n, r, num, 64)? as u32,
                gpu_milli: t.int(*n, r, milli, u64::from(GPU_MILLI))? as u32,
                gpu_spec,
            })
        })
        .collect()
}

/// Loads a node list file.
pub fn load_nodes(path: &Path) -> Result<Vec<OpenbNode>, SimError> {
    let t = std::fs::read_to_string(path).map_err(|source| SimError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_nodes(path, &t)
}

/// Loads a pod list file.
pub fn load_pods(path: &Path) -> Result<Vec<OpenbPod>, SimError> {
    let t = std::fs::read_to_string(path).map_err(|source| SimError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_pods(path, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_with_quotes() {
        assert_eq!(
            split_record("a,\"b,c\",,\"d\"\"e\""),
            vec!["a", "b,c", "", "d\"e"]
        );
    }

    #[test]
    fn pods_parse_with_and_without_spec() {
        let p = Path::new("p.csv");
        let full = parse_pods(p, "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos\nx,6000,12288,1,460,T4|P100,LS\ny,1000,1,0,0,NaN,BE\n").unwrap();
        assert_eq!(full[0].task().gpus.unwrap().models, vec!["T4", "P100"]);
        assert_eq!(full[0].gpu_demand(), 460);
        assert!(full[1].task().gpus.is_none());
        assert_eq!(full[1].gpu_spec, "");
        let short = parse_pods(
            p,
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\r\nz,1000.0,2,8,1000\r\n\r\n",
        )
        .unwrap();
        assert_eq!(short[0].gpu_demand(), 8000);
        assert_eq!(short[0].cpu_milli, 1000);
    }

    #[test]
    fn nodes_map_to_states() {
        let n = parse_nodes(
            Path::new("n.csv"),
            "sn,cpu_milli,memory_mib,gpu,model\nnode-1,96000,393216,8,G2\n",
        )
        .unwrap();
        let s = n[0].state("0001-node-1".into());
        assert_eq!(
            (s.gpus.len(), s.cpu_capacity, s.mem_capacity),
            (8, 96000, 393216 << 20)
        );
        assert_eq!(s.gpus[7].model, "G2");
    }
}
