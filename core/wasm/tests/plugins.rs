//! The shipped plugins, built from C in this build, loaded into the real
//! host: each does what it says, and the Wasm policies decide exactly as
//! their native twins.

use std::sync::Arc;

use berth_hostprobe::load_fixture;
use berth_model::spec::parse_spec;
use berth_sched::builtin::BinPack;
use berth_sched::plugin::{AllocatePlugin, ScorePlugin};
use berth_sched::policy::{self, PodShape, PolicyContext};
use berth_sched::{Cluster, GpuRequest, NodeState, Pipeline, TaskRequest};
use berth_wasm::{
    AdmissionVerdict, Kind, Plugin, PluginError, PluginSpec, WasmAdmission, WasmAllocate,
    WasmFilter, WasmScore,
};

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(berth_plugins::path(name).unwrap()).unwrap()
}

fn load(name: &str, kind: Kind, config: &str) -> Result<Arc<Plugin>, PluginError> {
    let mut spec = PluginSpec::new(name, kind);
    spec.config = config.into();
    Plugin::load(&bytes(name), spec, None).map(Arc::new)
}

fn node(name: &str, fixture: &str) -> NodeState {
    NodeState::from_inventory(name, &load_fixture(fixture).unwrap())
}

fn gpu_task(id: &str, count: u32, milli: u32) -> TaskRequest {
    TaskRequest {
        id: id.into(),
        cpu: 2000,
        memory: 1 << 30,
        gpus: Some(GpuRequest {
            count,
            milli,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn scores(s: &dyn ScorePlugin, c: &Cluster, t: &TaskRequest) -> Vec<f64> {
    s.prepare(c);
    let view: Vec<&NodeState> = c.nodes().iter().collect();
    let mut out = vec![0.0; view.len()];
    s.score(t, &view, &mut out);
    out
}

#[test]
fn wasm_binpack_scores_as_the_native_one() {
    let mut a = node("a", "a100-pcie-4x");
    a.cpu_used = 12_000;
    a.mem_used = 100 << 30;
    let c = Cluster::new(vec![a, node("b", "dgx-h100"), node("c", "cpu-2s")]);
    let wasm = WasmScore::new(load("binpack", Kind::Score, "{}").unwrap());
    for t in [gpu_task("t", 1, 1000), gpu_task("u", 1, 0)] {
        assert_eq!(scores(&wasm, &c, &t), scores(&BinPack, &c, &t));
    }
}

#[test]
fn wasm_fgd_decides_as_the_native_fgd() {
    let shapes = vec![
        PodShape::new(4000, 1000, 1, ""),
        PodShape::new(2000, 500, 1, ""),
        PodShape::new(8000, 1000, 2, ""),
        PodShape::new(1000, 250, 1, "A100"),
        PodShape::new(16000, 0, 0, ""),
    ];
    let ctx = PolicyContext::from_shapes(shapes, 1);
    let config = serde_json::json!({
        "typical": ctx.typical.iter().map(|t| serde_json::json!(
            [t.shape.cpu, t.shape.milli, t.shape.count, t.weight, t.shape.spec])).collect::<Vec<_>>()
    });
    let plugin = load("fgd", Kind::Score, &config.to_string()).unwrap();
    let alloc_plugin = load("fgd", Kind::Allocate, &config.to_string()).unwrap();
    let wasm = Pipeline::new(Box::new(WasmAllocate::new(alloc_plugin)))
        .filter(Box::new(policy::FastFit))
        .score(Box::new(WasmScore::new(plugin)), 1.0);
    let native = policy::pipeline("fgd", &ctx).unwrap();
    let nodes = vec![
        node("a1", "a100-pcie-4x"),
        node("a2", "a100-pcie-4x"),
        node("d1", "dgx-h100"),
        node("c1", "cpu-2s"),
    ];
    let (mut cw, mut cn) = (Cluster::new(nodes.clone()), Cluster::new(nodes));
    let mut placed = 0;
    for i in 0..120u32 {
        let t = match i % 5 {
            0 => gpu_task(&format!("t{i}"), 1, 250 * (1 + i % 3)),
            1 => gpu_task(&format!("t{i}"), 1, 1000),
            2 => gpu_task(&format!("t{i}"), 2, 1000),
            3 => TaskRequest {
                id: format!("t{i}"),
                cpu: 4000,
                memory: 1 << 30,
                ..Default::default()
            },
            _ => gpu_task(&format!("t{i}"), 1, 500),
        };
        let (w, n) = (wasm.place(&cw, &t), native.place(&cn, &t));
        assert_eq!(w, n, "task {i}");
        if let Some((k, a)) = w {
            let name = cw.nodes()[k].name.clone();
            assert!(cw.commit(&name, &a) && cn.commit(&name, &a));
            placed += 1;
        }
    }
    assert!(placed > 40, "{placed}");
}

#[test]
fn label_filter_keeps_allowed_nodes_and_says_why() {
    let mut a = node("a", "cpu-2s");
    a.attributes.insert("pool".into(), "batch".into());
    let mut b = node("b", "cpu-2s");
    b.attributes.insert("pool".into(), "web".into());
    let c = Cluster::new(vec![a, b, node("c", "cpu-2s")]);
    let f = WasmFilter::new(
        load(
            "label-filter",
            Kind::Filter,
            r#"{"key": "pool", "allow": ["batch", "gpu"]}"#,
        )
        .unwrap(),
    );
    let d = Pipeline::default().filter(Box::new(f)).decide(
        &c,
        &TaskRequest {
            id: "t".into(),
            cpu: 100,
            memory: 1,
            ..Default::default()
        },
    );
    assert_eq!(d.placement.unwrap().0, "a");
    let why = d.nodes.iter().find(|n| n.node == "b").unwrap();
    let (plugin, r) = why.filtered.as_ref().unwrap();
    assert_eq!(plugin, "label-filter");
    assert_eq!(r.reason, "label pool not in [batch, gpu]");
    // A bad configuration is refused at load, naming the field.
    let e = load("label-filter", Kind::Filter, r#"{"allow": []}"#)
        .err()
        .unwrap();
    assert!(e.to_string().contains("config.key"), "{e}");
    let e = load("label-filter", Kind::Filter, "not json")
        .err()
        .unwrap();
    assert!(matches!(e, PluginError::Config(_)), "{e}");
}

#[test]
fn team_admission_rejects_and_mutates() {
    let a = WasmAdmission::new(
        load(
            "team-admission",
            Kind::Admission,
            r#"{"min_cpu": 500, "min_memory": 268435456}"#,
        )
        .unwrap(),
    );
    let gpu = parse_spec(
        "name: train\nimage: busybox:latest\nresources: {cpu: 1, memory: 1Gi, gpus: {count: 1}}\n",
    )
    .unwrap();
    match a.admit(&gpu) {
        AdmissionVerdict::Reject(why) => assert!(why.contains("team label"), "{why}"),
        v => panic!("{v:?}"),
    }
    let mut labelled = gpu.clone();
    labelled.labels.insert("team".into(), "ml".into());
    assert_eq!(a.admit(&labelled), AdmissionVerdict::Accept);
    let small = parse_spec("name: web\nimage: busybox:latest\nresources: {cpu: 100m}\n").unwrap();
    match a.admit(&small) {
        AdmissionVerdict::Mutated(s) => {
            assert_eq!(s.resources.cpu.0, 500);
            assert_eq!(s.resources.memory.0, 256 << 20);
            assert_eq!(s.labels["admitted-by"], "team-admission");
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn last_gpu_chooses_the_highest_free_gpus_and_the_host_checks_it() {
    let dgx = node("d", "dgx-h100");
    let c = Cluster::new(vec![dgx]);
    let a = WasmAllocate::new(load("last-gpu", Kind::Allocate, "{}").unwrap());
    a.prepare(&c);
    let got = a.allocate(&gpu_task("t", 2, 1000), &c.nodes()[0]).unwrap();
    let idx: Vec<u32> = got.gpus.iter().map(|g| g.index).collect();
    assert_eq!(idx, vec![7, 6]);
    // CPU-only tasks never reach the plugin.
    let cpu = TaskRequest {
        id: "c".into(),
        cpu: 100,
        memory: 1,
        ..Default::default()
    };
    assert!(a.allocate(&cpu, &c.nodes()[0]).unwrap().gpus.is_empty());
}

#[test]
fn wrong_kinds_and_bad_bytes_are_refused_with_the_cause() {
    let e = load("binpack", Kind::Filter, "{}").err().unwrap();
    assert!(
        e.to_string()
            .starts_with("the component is not a filter plugin"),
        "{e}"
    );
    let e = Plugin::load(b"\0asm\x01\0\0\0", PluginSpec::new("x", Kind::Score), None)
        .err()
        .unwrap();
    assert!(matches!(e, PluginError::Component { .. }), "{e}");
    let e = Plugin::load(b"hello", PluginSpec::new("x", Kind::Score), None)
        .err()
        .unwrap();
    assert!(
        e.to_string().starts_with("not a valid Wasm component"),
        "{e}"
    );
}

#[test]
fn compiled_components_are_cached_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let host = berth_wasm::Host::global().unwrap();
    let b = bytes("binpack");
    let first = host.load(&b, Some(dir.path())).unwrap();
    let second = host.load(&b, Some(dir.path())).unwrap();
    assert!(!first.cached && second.cached);
    assert_eq!(first.digest, berth_wasm::digest(&b));
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
}
