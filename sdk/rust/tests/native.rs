//! A plugin written on the SDK, tested natively (no Wasm): the logic is
//! plain Rust over the contract's types.

use berth_sdk::types::*;
use berth_sdk::{Allocate, Filter, Score, Setup, gpus_of, testing};

/// Keeps nodes with a whole free GPU, scores by free GPU capacity, and
/// takes the last free GPU.
pub struct GpuFriendly;

impl Setup for GpuFriendly {
    fn init(config: &str) -> Result<(), String> {
        if config.trim().starts_with('{') {
            Ok(())
        } else {
            Err("config must be a JSON object".into())
        }
    }
}

impl Filter for GpuFriendly {
    fn filter(_task: &Task, nodes: &Nodes) -> Verdicts {
        let codes = (0..nodes.index.len())
            .map(|i| u8::from(!gpus_of(nodes, i).contains(&1000)))
            .collect();
        Verdicts {
            codes,
            reasons: vec!["no whole GPU free".into()],
        }
    }
}

impl Score for GpuFriendly {
    fn score(_task: &Task, nodes: &Nodes) -> Vec<f64> {
        (0..nodes.index.len())
            .map(|i| gpus_of(nodes, i).iter().map(|&f| f as f64).sum::<f64>() / 20.0)
            .collect()
    }
}

impl Allocate for GpuFriendly {
    fn allocate(task: &Task, node: &Nodes) -> Result<Choice, String> {
        let need = task.gpu.as_ref().map_or(0, |g| g.milli) as u16;
        let g = gpus_of(node, 0)
            .iter()
            .rposition(|&f| f >= need)
            .ok_or("no GPU fits")?;
        Ok(Choice {
            gpus: vec![g as u32],
        })
    }
}

berth_sdk::export_filter!(GpuFriendly);

#[test]
fn the_logic_runs_natively() {
    assert!(GpuFriendly::init("{}").is_ok());
    assert!(GpuFriendly::init("x").is_err());
    let nodes = testing::nodes(3);
    let v = GpuFriendly::filter(&testing::task(), &nodes);
    assert_eq!(v.codes, vec![0, 0, 0]);
    let s = GpuFriendly::score(&testing::task(), &nodes);
    assert_eq!(s, vec![50.0, 75.0, 50.0]);
    let mut one = testing::nodes(2);
    one.gpu_free[1] = 600;
    let c = GpuFriendly::allocate(&testing::gpu_task(1, 500), &one).unwrap();
    assert_eq!(c.gpus, vec![1]);
    assert_eq!(berth_sdk::keep_all(&nodes).codes.len(), 3);
    berth_sdk::log(Level::Info, "logged natively");
}
