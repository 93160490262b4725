//! Hostile plugins, built from C in this build: an endless loop, a memory
//! hog, a trap, wrong output, a log flood, an impossible GPU. Each is
//! stopped, its failure policy applied and counted, the scheduler keeps
//! placing, and nothing panics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_sched::{Cluster, NodeState, Pipeline, TaskRequest};
use berth_wasm::{Kind, OnError, Plugin, PluginSpec, WasmAllocate, WasmFilter, WasmScore};

fn plugin(name: &str, kind: Kind, on_error: OnError, config: &str) -> Arc<Plugin> {
    plugin_with(name, kind, on_error, config, Duration::from_millis(20))
}

fn plugin_with(
    name: &str,
    kind: Kind,
    on_error: OnError,
    config: &str,
    budget: Duration,
) -> Arc<Plugin> {
    let mut spec = PluginSpec::new(name, kind);
    spec.on_error = on_error;
    spec.config = config.into();
    spec.budget = budget;
    spec.memory = 16 << 20;
    let bytes = std::fs::read(berth_plugins::path(name).unwrap()).unwrap();
    Arc::new(Plugin::load(&bytes, spec, None).unwrap())
}

fn cluster() -> Cluster {
    let inv = berth_hostprobe::load_fixture("dgx-h100").unwrap();
    let nodes = (0..3)
        .map(|i| {
            NodeState {
                name: format!("n{i}"),
                ready: true,
                cpu_capacity: 8000,
                mem_capacity: 8 << 30,
                ..Default::default()
            }
            .with_inventory(&inv)
        })
        .collect();
    Cluster::new(nodes)
}

fn task(i: u32) -> TaskRequest {
    TaskRequest {
        id: format!("t{i}"),
        cpu: 100,
        memory: 1 << 20,
        ..Default::default()
    }
}

/// Places `n` tasks with `p`; returns how many were placed.
fn place(p: &Pipeline, c: &mut Cluster, n: u32) -> u32 {
    let mut placed = 0;
    for i in 0..n {
        if let Some((node, a)) = p.decide(c, &task(i)).placement {
            assert!(c.commit(&node, &a));
            placed += 1;
        }
    }
    placed
}

fn score_pipeline(s: &Arc<Plugin>) -> Pipeline {
    Pipeline::default().score(Box::new(WasmScore::new(s.clone())), 1.0)
}

#[test]
fn an_endless_loop_is_stopped_by_the_budget() {
    let p = plugin("hostile-loop", Kind::Score, OnError::Ignore, "{}");
    let t0 = Instant::now();
    let mut c = cluster();
    assert_eq!(
        place(&score_pipeline(&p), &mut c, 3),
        3,
        "ignored: placing goes on"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let m = p.metrics();
    assert_eq!(m.failures["timeout"], 3, "{m:?}");
    assert!(
        m.instances >= 3,
        "a fresh instance after each failure: {m:?}"
    );
    // Under `fail`, the decision fails and says which plugin and why.
    let f = plugin("hostile-loop", Kind::Score, OnError::Fail, "{}");
    let d = score_pipeline(&f).decide(&cluster(), &task(0));
    assert!(d.placement.is_none());
    assert!(
        d.summary.contains("3 plugin hostile-loop failed"),
        "{}",
        d.summary
    );
    let (_, r) = d.nodes[0].filtered.as_ref().unwrap();
    assert!(r.detail.starts_with("ran past its 20ms budget"), "{r:?}");
}

#[test]
fn a_memory_hog_is_stopped_by_its_cap() {
    // A budget long enough that the cap, not the clock, stops it.
    let p = plugin_with(
        "hostile-hog",
        Kind::Score,
        OnError::Fail,
        "{}",
        Duration::from_secs(5),
    );
    let d = score_pipeline(&p).decide(&cluster(), &task(0));
    assert!(d.placement.is_none());
    let (_, r) = d.nodes[0].filtered.as_ref().unwrap();
    assert_eq!(r.detail, "exceeded its memory cap of 16 MiB");
    assert_eq!(p.metrics().failures["memory"], 1);
    // The next call gets a fresh instance and fails the same way, cleanly.
    let d = score_pipeline(&p).decide(&cluster(), &task(1));
    assert!(d.placement.is_none());
    assert_eq!(p.metrics().failures["memory"], 2);
}

#[test]
fn a_trap_is_contained() {
    let ignore = plugin("hostile-trap", Kind::Filter, OnError::Ignore, "{}");
    let p = Pipeline::default().filter(Box::new(WasmFilter::new(ignore.clone())));
    let mut c = cluster();
    assert_eq!(place(&p, &mut c, 4), 4);
    assert_eq!(ignore.metrics().failures["trap"], 4);
    let fail = plugin("hostile-trap", Kind::Filter, OnError::Fail, "{}");
    let p = Pipeline::default().filter(Box::new(WasmFilter::new(fail)));
    let d = p.decide(&cluster(), &task(0));
    let (by, r) = d.nodes[0].filtered.as_ref().unwrap();
    assert_eq!(by, "hostile-trap");
    assert!(r.detail.starts_with("trapped: "), "{r:?}");
}

#[test]
fn wrong_output_is_refused() {
    for (mode, why) in [
        ("length", "4 scores for 3 nodes"),
        ("range", "score 1000 is not in 0..=100"),
        ("nan", "score NaN is not in 0..=100"),
    ] {
        let cfg = format!(r#"{{"mode": "{mode}"}}"#);
        let p = plugin("hostile-badlen", Kind::Score, OnError::Fail, &cfg);
        let d = score_pipeline(&p).decide(&cluster(), &task(0));
        assert!(d.placement.is_none(), "{mode}");
        let (_, r) = d.nodes[0].filtered.as_ref().unwrap();
        assert_eq!(r.detail, format!("invalid output: {why}"), "{mode}");
        assert_eq!(p.metrics().failures["invalid-output"], 1);
    }
    // An allocate plugin naming a GPU the node lacks: refused; under
    // `ignore` the host's own choice is used.
    let c = cluster();
    let gpu = TaskRequest {
        gpus: Some(berth_sched::GpuRequest {
            count: 1,
            milli: 1000,
            ..Default::default()
        }),
        ..task(0)
    };
    // Under `fail` the allocation fails on every feasible node in turn.
    for (policy, placed, refusals) in [(OnError::Ignore, true, 1), (OnError::Fail, false, 3)] {
        let p = plugin("hostile-badgpu", Kind::Allocate, policy, "{}");
        let pipe = Pipeline::default().allocator(Box::new(WasmAllocate::new(p.clone())));
        let d = pipe.decide(&c, &gpu);
        assert_eq!(d.placement.is_some(), placed, "{policy:?}: {}", d.summary);
        assert_eq!(p.metrics().failures["invalid-output"], refusals);
    }
}

#[test]
fn a_log_flood_is_cut_and_the_answer_kept() {
    let p = plugin("hostile-flood", Kind::Score, OnError::Fail, "{}");
    let d = score_pipeline(&p).decide(&cluster(), &task(0));
    let placed = d.placement.is_some();
    let m = p.metrics();
    if placed {
        assert!(m.logs_dropped >= 99_000, "{m:?}");
        assert!(m.failures.is_empty(), "{m:?}");
        assert!(
            d.nodes[0]
                .scores
                .iter()
                .any(|(n, s)| n == "hostile-flood" && *s == 50.0)
        );
    } else {
        // On a slow machine the flood itself may outrun the budget: then it
        // is a timeout, still contained.
        assert_eq!(m.failures["timeout"], 1, "{m:?}");
    }
}
