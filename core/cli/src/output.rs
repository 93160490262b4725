//! Human and JSON renderings of API results.

use berth_model::quantity::MilliCpu;
use berth_proto as pb;
use berth_proto::typed;
use serde_json::{Value, json};

/// A task as `berth ps --json` prints it.
pub fn task_json(t: &pb::Task) -> Value {
    json!({
        "id": t.id,
        "app": t.app,
        "instance": t.instance,
        "version": t.version,
        "node": if t.node.is_empty() { Value::Null } else { json!(t.node) },
        "state": typed::state_name(t.state),
        "desired": typed::desired_name(t.desired),
        "exit_code": if t.has_exit_code { json!(t.exit_code) } else { Value::Null },
        "restarts": t.restarts,
        "given_up": t.given_up,
        "health": typed::health_from_wire(t.health).as_str(),
        "ready": t.ready,
        "ports": t.ports,
        "ip": if t.ip.is_empty() { Value::Null } else { json!(t.ip) },
        "message": t.message,
        "allocation": t.allocation.as_ref().map(|a| json!({
            "cpu_millis": a.cpu_millis,
            "memory_bytes": a.memory_bytes,
            "ports": a.ports,
            "cores": a.cores,
            "cpuset": a.cpuset,
            "numa_nodes": a.numa_nodes,
            "gpus": a.gpus.iter().map(|g| json!({"index": g.index, "uuid": g.uuid, "milli": g.milli})).collect::<Vec<_>>(),
            "nics": a.nics,
            "devices": a.devices,
        })),
    })
}

/// Prints rows as left-aligned columns.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

/// `berth ps` rows.
pub fn task_rows(tasks: &[pb::Task]) -> Vec<Vec<String>> {
    tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.app.clone(),
                if t.node.is_empty() {
                    "-".into()
                } else {
                    t.node.clone()
                },
                typed::state_name(t.state),
                if t.has_exit_code {
                    t.exit_code.to_string()
                } else {
                    "-".into()
                },
                t.restarts.to_string(),
                t.message.clone(),
            ]
        })
        .collect()
}

/// Bytes for people: `512Mi`, `23.5Gi`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// `berth nodes` rows.
pub fn node_rows(nodes: &[pb::Node]) -> Vec<Vec<String>> {
    nodes
        .iter()
        .map(|n| {
            let gpus = if n.gpus == 0 {
                "-".to_string()
            } else {
                n.gpu_model.clone()
            };
            vec![
                n.name.clone(),
                berth_proto::typed::node_status_text(n.state, n.drained),
                n.cores.to_string(),
                n.numa_nodes.to_string(),
                gpus,
                format!("{}/{}", MilliCpu(n.cpu_used), MilliCpu(n.cpu_millis)),
                format!(
                    "{}/{}",
                    human_bytes(n.memory_used),
                    human_bytes(n.memory_bytes)
                ),
                n.tasks.to_string(),
                n.address.clone(),
            ]
        })
        .collect()
}

/// A time in ms since the epoch as RFC 3339 (UTC, seconds).
pub fn time_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(0), "0");
        assert_eq!(human_bytes(64 << 20), "64Mi");
        assert_eq!(human_bytes(25_276_502_016), "23.5Gi");
        assert_eq!(human_bytes(1536), "1.5Ki");
    }
}

/// How list commands print (`-o`, `BERTH_OUTPUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Columns for people.
    #[default]
    Table,
    /// Every field as a column.
    Wide,
    /// JSON (as `--json`).
    Json,
    /// YAML.
    Yaml,
}

static FORMAT: std::sync::OnceLock<Format> = std::sync::OnceLock::new();

/// Sets the output format (once, from the command line).
pub fn set(f: Format) {
    let _ = FORMAT.set(f);
}

fn format() -> Format {
    FORMAT.get().copied().unwrap_or_default()
}

/// Whether to print the data rather than the command's own table
/// (`--json`, `-o json|yaml|wide`): then [`print`] prints it.
pub fn structured(json_flag: bool) -> bool {
    json_flag || format() != Format::Table
}

/// Prints `v` as JSON (`--json`, `-o json`), YAML (`-o yaml`) or a table
/// of every field (`-o wide`: a list's items as rows).
pub fn print<T: serde::Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    match format() {
        Format::Yaml => print!("{}", serde_yaml::to_string(v)?),
        Format::Wide => match serde_json::to_value(v)? {
            Value::Array(rows) => wide_table(&rows),
            one => wide_table(&[one]),
        },
        _ => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

/// A table of every field of `rows` (`-o wide`): nested objects as
/// `a.b`, lists joined by commas.
pub fn wide_table(rows: &[Value]) {
    fn flat(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flat(&key, x, out);
                }
            }
            Value::Array(a) => out.push((
                prefix.to_string(),
                a.iter()
                    .map(|x| match x {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            )),
            Value::String(s) => out.push((prefix.to_string(), s.clone())),
            Value::Null => out.push((prefix.to_string(), String::new())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let flats: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            flat("", r, &mut out);
            out
        })
        .collect();
    let mut cols: Vec<String> = Vec::new();
    for f in &flats {
        for (k, _) in f {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    let headers: Vec<String> = cols.iter().map(|c| c.to_uppercase()).collect();
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let body = flats
        .into_iter()
        .map(|f| {
            cols.iter()
                .map(|c| {
                    f.iter()
                        .find(|(k, _)| k == c)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    table(&header_refs, body);
}

/// What `berth` exits with (listed in `berth --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Anything else went wrong (1).
    Failed = 1,
    /// No server could be reached (3).
    Unreachable = 3,
    /// No token, or one not allowed this call (4).
    Denied = 4,
    /// No such app, task, node, plugin... (5).
    NotFound = 5,
    /// The servers refused the request as invalid or impossible now (6).
    Refused = 6,
}

/// An error with the exit code it means.
#[derive(Debug)]
pub struct Coded {
    /// The exit code.
    pub exit: Exit,
    /// What to print.
    pub message: String,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

impl Exit {
    /// An error that exits with this code.
    pub fn with(self, message: String) -> anyhow::Error {
        anyhow::Error::new(Coded {
            exit: self,
            message,
        })
    }
}

/// The exit code of an error: its [`Coded`] code if it has one, else 1.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Coded>())
        .map_or(1, |c| c.exit as i32)
}

/// The exit codes, for `berth --help`.
pub const EXIT_CODES: &str = "Exit codes:\n  0  success\n  1  failure (bad input found by berth itself, a local error)\n  2  bad command line\n  3  no server could be reached\n  4  not authenticated, or not allowed (token, certificate)\n  5  not found (app, task, node, plugin...)\n  6  refused by the servers as invalid or impossible now (the message names the field or cause)";
