//! The cost of the Wasm boundary, measured (run with `--release`; see
//! `ci/bench.sh wasm`):
//!
//! - per node: the same `binpack` rule native and as the shipped Wasm
//!   plugin, scoring 10,000 candidate nodes per call;
//! - a component's compile time (cold) and load time (from the disk
//!   cache), instantiation time, and resident memory per loaded plugin.
//!
//! Prints one JSON object.

use std::sync::Arc;
use std::time::Instant;

use berth_sched::builtin::BinPack;
use berth_sched::plugin::ScorePlugin;
use berth_sched::{Cluster, NodeState, TaskRequest};
use berth_wasm::{Host, Kind, Plugin, PluginSpec, WasmScore};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let nodes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let inv = berth_hostprobe::load_fixture("dgx-h100").unwrap();
    let cluster = Cluster::new(
        (0..nodes)
            .map(|i| {
                let mut n = NodeState {
                    name: format!("n{i:05}"),
                    ready: true,
                    cpu_capacity: 224_000,
                    mem_capacity: 2 << 40,
                    ..Default::default()
                }
                .with_inventory(&inv);
                n.cpu_used = (i as u64 * 7919) % 200_000;
                n
            })
            .collect(),
    );
    let view: Vec<&NodeState> = cluster.nodes().iter().collect();
    let task = TaskRequest {
        id: "t".into(),
        cpu: 1000,
        memory: 1 << 30,
        ..Default::default()
    };
    let bytes = std::fs::read(berth_plugins::path("binpack").unwrap()).unwrap();
    let wasm = WasmScore::new(Arc::new(
        Plugin::load(&bytes, PluginSpec::new("binpack", Kind::Score), None).unwrap(),
    ));
    let mut out = vec![0.0; nodes];
    let calls = 200;
    let time = |s: &dyn ScorePlugin, out: &mut [f64]| {
        s.prepare(&cluster);
        s.score(&task, &view, out);
        let t0 = Instant::now();
        for _ in 0..calls {
            s.score(&task, &view, out);
        }
        t0.elapsed().as_nanos() as f64 / calls as f64
    };
    let native_ns = time(&BinPack, &mut out);
    let mut cols = berth_wasm::convert::empty_nodes();
    let t0 = Instant::now();
    for _ in 0..calls {
        berth_wasm::convert::columns(&view, &mut cols);
    }
    let columns_ns = t0.elapsed().as_nanos() as f64 / calls as f64;
    let native = out.clone();
    let wasm_ns = time(&wasm, &mut out);
    assert_eq!(native, out, "the Wasm binpack scores as the native one");

    // Compile (cold), load from the disk cache, instantiate, memory.
    let host = Host::global().unwrap();
    let fgd = std::fs::read(berth_plugins::path("fgd").unwrap()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cold = host.load(&fgd, Some(cache.path())).unwrap().load_time;
    let warm = host.load(&fgd, Some(cache.path())).unwrap().load_time;
    let config = r#"{"typical": [[4000, 1000, 1, 0.5, ""], [2000, 500, 1, 0.5, ""]]}"#;
    let before = rss_kib();
    let loaded: Vec<Plugin> = (0..20)
        .map(|i| {
            let mut s = PluginSpec::new(&format!("fgd{i}"), Kind::Score);
            s.config = config.into();
            Plugin::load(&fgd, s, Some(cache.path())).unwrap()
        })
        .collect();
    let per_plugin_kib = (rss_kib().saturating_sub(before)) / loaded.len() as u64;
    let inst_us: f64 = loaded
        .iter()
        .map(|p| p.instantiate_time().as_secs_f64() * 1e6)
        .sum::<f64>()
        / loaded.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "nodes": nodes,
            "native_ns_per_call": native_ns.round(),
            "wasm_ns_per_call": wasm_ns.round(),
            "native_ns_per_node": (native_ns / nodes as f64 * 100.0).round() / 100.0,
            "wasm_ns_per_node": (wasm_ns / nodes as f64 * 100.0).round() / 100.0,
            "columns_ns_per_node": (columns_ns / nodes as f64 * 100.0).round() / 100.0,
            "boundary_ns_per_node": ((wasm_ns - native_ns) / nodes as f64 * 100.0).round() / 100.0,
            "fgd_compile_ms": cold.as_secs_f64() * 1000.0,
            "fgd_cached_load_ms": warm.as_secs_f64() * 1000.0,
            "instantiate_us": inst_us.round(),
            "rss_kib_per_loaded_plugin": per_plugin_kib,
        })
    );
}
