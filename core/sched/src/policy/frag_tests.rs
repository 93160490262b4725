//! Tests of the fragmentation measure (a child module of `frag`).

use super::*;
use crate::cluster::{GpuRequest, GpuState};
use crate::policy::typical::typical_pods;

pub(crate) fn gpu_node(model: &str, cpu: u64, used: &[u32]) -> NodeState {
    NodeState {
        name: "n".into(),
        ready: true,
        cpu_capacity: cpu,
        mem_capacity: 1 << 40,
        gpus: used
            .iter()
            .enumerate()
            .map(|(i, u)| GpuState {
                index: i as u32,
                model: model.into(),
                milli_used: *u,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn share(cpu: u64, milli: u32) -> TaskRequest {
    TaskRequest {
        cpu,
        gpus: Some(GpuRequest {
            count: 1,
            milli,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(shapes: Vec<PodShape>) -> FragModel {
    FragModel::new(&typical_pods(shapes, 100.0))
}

#[test]
fn frag_follows_the_definition() {
    // Half the tasks want 500 of a GPU, half a whole GPU.
    let m = model(vec![
        PodShape::new(1000, 500, 1, ""),
        PodShape::new(1000, 1000, 1, ""),
    ]);
    let mut s = m.session();
    // Idle 2-GPU node: nothing is fragment.
    assert_eq!(s.node_frag(&gpu_node("T4", 8000, &[0, 0])), 0.0);
    // 700 used on one GPU: its 300 free are fragment for both shapes,
    // and the whole-GPU shape still fits on the other GPU.
    assert_eq!(s.node_frag(&gpu_node("T4", 8000, &[700, 0])), 300.0);
    // 400 used: 600 free serve the 500 shape but not the whole one.
    assert_eq!(s.node_frag(&gpu_node("T4", 8000, &[400, 0])), 300.0);
    // No CPU left: everything is fragment.
    assert_eq!(s.node_frag(&gpu_node("T4", 500, &[400, 0])), 1600.0);
}

#[test]
fn model_constraints_and_cpu_only_shapes_count_all_free() {
    let m = model(vec![
        PodShape::new(1000, 500, 1, "V100M32"),
        PodShape::new(1000, 0, 0, ""),
    ]);
    let mut s = m.session();
    assert_eq!(s.node_frag(&gpu_node("T4", 8000, &[0, 0])), 2000.0);
    assert_eq!(s.node_frag(&gpu_node("V100M32", 8000, &[0, 0])), 1000.0);
    // Memoised: same answer again.
    assert_eq!(s.node_frag(&gpu_node("V100M32", 8000, &[0, 0])), 1000.0);
}

#[test]
fn share_choice_prefers_the_gpu_that_fragments_least() {
    let m = model(vec![PodShape::new(1000, 500, 1, "")]);
    let mut s = m.session();
    // GPU 0 has 600 free, GPU 1 has 500: taking 500 from GPU 1 leaves
    // nothing stranded, from GPU 0 leaves 100.
    let n = gpu_node("T4", 8000, &[400, 500]);
    let c = s.choose(&share(1000, 500), &n).unwrap();
    assert_eq!(c.gpu, Some(1));
    assert_eq!(c.score, fgd_score(0.0));
    assert_eq!(fgd_score(0.0), 50);
    // Nothing fits: no choice.
    assert!(s.choose(&share(1000, 700), &n).is_none());
}

#[test]
fn whole_and_cpu_tasks_are_scored() {
    let m = model(vec![
        PodShape::new(1000, 1000, 2, ""),
        PodShape::new(4000, 0, 0, ""),
    ]);
    let mut s = m.session();
    let n = gpu_node("G2", 8000, &[0, 0, 0, 0]);
    let whole = TaskRequest {
        cpu: 1000,
        gpus: Some(GpuRequest {
            count: 2,
            milli: 1000,
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = s.choose(&whole, &n).unwrap();
    assert_eq!(c.gpu, None);
    assert!(c.delta > 0.0, "{c:?}");
    let cpu = TaskRequest {
        cpu: 7500,
        ..Default::default()
    };
    let c = s.choose(&cpu, &n).unwrap();
    // Taking the CPU strands all four GPUs for the 2-GPU shape.
    assert!(c.delta < 0.0);
    let three = TaskRequest {
        cpu: 1,
        gpus: Some(GpuRequest {
            count: 5,
            milli: 1000,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(s.choose(&three, &n).is_none());
}

#[test]
fn labels_hash_apart() {
    assert_ne!(label_hash("NVIDIA A100"), label_hash("NVIDIA H100"));
}

/// What is kept per slot is read back only while the slot's GPU frees are
/// the ones it was computed for: after a placement the node's `F` and
/// choices are those of a model that never saw it.
#[test]
fn kept_per_slot_follows_the_node() {
    let shapes = || {
        vec![
            PodShape::new(1000, 500, 1, ""),
            PodShape::new(4000, 1000, 1, ""),
            PodShape::new(2000, 0, 0, ""),
        ]
    };
    let kept = model(shapes());
    let mut nodes = vec![gpu_node("T4", 8000, &[0, 0]), gpu_node("T4", 8000, &[0, 0])];
    nodes[1].name = "m".into();
    let mut c = crate::Cluster::new(nodes);
    let cpu = TaskRequest {
        cpu: 3000,
        ..Default::default()
    };
    for step in 0..4 {
        kept.prepare(&c);
        let fresh = model(shapes());
        for n in c.nodes() {
            let (a, b) = (kept.session().node_frag(n), fresh.session().node_frag(n));
            assert_eq!(a, b, "step {step}");
            for t in [&cpu, &share(1000, 500)] {
                assert_eq!(kept.session().choose(t, n), fresh.session().choose(t, n));
            }
        }
        let grant = berth_model::task::Allocation {
            cpu: berth_model::quantity::MilliCpu(1000),
            gpus: vec![berth_model::task::GpuGrant {
                index: step % 2,
                uuid: String::new(),
                milli: 250,
            }],
            ..Default::default()
        };
        assert!(c.commit("n", &grant));
    }
}
