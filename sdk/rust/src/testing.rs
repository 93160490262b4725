//! Builders for native tests of plugin logic: candidate columns and tasks
//! without a host.

use crate::types::*;

/// `n` candidate rows: node `i` has `4000·(i+1)` millicores and `4·(i+1)`
/// GiB free, `i+1` free cores and NICs, and two GPUs with `1000` and
/// `500·i mod 1000` thousandths free.
pub fn nodes(n: usize) -> Nodes {
    let mut out = Nodes {
        index: Vec::new(),
        cpu_free: Vec::new(),
        mem_free: Vec::new(),
        cores_free: Vec::new(),
        nics_free: Vec::new(),
        gpu_start: Vec::new(),
        gpu_free: Vec::new(),
    };
    for i in 0..n {
        let k = i as u64 + 1;
        out.index.push(i as u32);
        out.cpu_free.push(4000 * k);
        out.mem_free.push((4 << 30) * k);
        out.cores_free.push(k as u32);
        out.nics_free.push(k as u32);
        out.gpu_start.push(out.gpu_free.len() as u32);
        out.gpu_free.extend([1000, (500 * i % 1000) as u16]);
    }
    out.gpu_start.push(out.gpu_free.len() as u32);
    out
}

/// A task asking for 1 CPU and 1 GiB, nothing else.
pub fn task() -> Task {
    Task {
        id: "test-1-0".into(),
        group: "test".into(),
        cpu: 1000,
        memory: 1 << 30,
        cores: 0,
        gpu: None,
        nics: 0,
        numa: NumaPolicy::None,
        priority: 0,
        labels: Vec::new(),
    }
}

/// [`task`] asking for `count` GPUs of `milli` thousandths each.
pub fn gpu_task(count: u32, milli: u32) -> Task {
    Task {
        gpu: Some(GpuRequest {
            count,
            milli,
            min_memory: 0,
            nvlink: false,
            models: Vec::new(),
            mig_profile: String::new(),
        }),
        ..task()
    }
}
