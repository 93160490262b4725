//! Hardware-aware feasibility and allocation: GPUs (whole, shared by
//! thousandths, by model and memory, on one NVLink island), exclusive
//! cores, NICs, and NUMA policies. The scheduler decides the whole
//! allocation here, so a placed task never fails for topology on the node.

use std::collections::BTreeSet;

use crate::cluster::{GPU_MILLI, GpuRequest, Interconnect, NodeState, NumaPolicy, TaskRequest};
use crate::nvlink::{self, Links};
use crate::plugin::Rejection;

/// Which NUMA nodes a pick may use.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// Any.
    Any,
    /// Only these.
    Only(&'a [u32]),
}

impl<'a> Scope<'a> {
    /// One NUMA node, or any.
    fn of(one: Option<&'a [u32; 1]>) -> Scope<'a> {
        one.map_or(Scope::Any, |o| Scope::Only(o))
    }

    pub(crate) fn allows(self, n: Option<u32>) -> bool {
        match self {
            Scope::Any => true,
            Scope::Only(set) => n.is_some_and(|n| set.contains(&n)),
        }
    }
}

/// GPUs chosen on a node: (index, thousandths, MIG instance uuid if any).
pub type GpuPick = Vec<(u32, u32)>;

/// A free MIG instance of `profile` (on a GPU the request allows, in NUMA
/// node `numa` if given): (GPU index, instance uuid). Lowest index first.
pub fn choose_mig(
    req: &GpuRequest,
    node: &NodeState,
    numa: Option<u32>,
    profile: &str,
) -> Option<(u32, String)> {
    let one = numa.map(|n| [n]);
    choose_mig_in(req, node, Scope::of(one.as_ref()), profile)
}

fn choose_mig_in(
    req: &GpuRequest,
    node: &NodeState,
    scope: Scope<'_>,
    profile: &str,
) -> Option<(u32, String)> {
    eligible(req, node)
        .filter(|g| scope.allows(g.numa))
        .find_map(|g| {
            g.mig
                .iter()
                .find(|m| !m.taken && m.profile == profile)
                .map(|m| (g.index, m.uuid.clone()))
        })
}

/// GPUs of `node` that the request's model and memory allow.
pub(crate) fn eligible<'a>(
    req: &'a GpuRequest,
    node: &'a NodeState,
) -> impl Iterator<Item = &'a crate::cluster::GpuState> + 'a {
    node.gpus
        .iter()
        .filter(move |g| req.model_ok(&g.model) && g.memory_bytes >= req.min_memory)
}

/// Links between the GPUs of `set` (each pair counted once).
pub fn links_within(node: &NodeState, set: &[u32]) -> u32 {
    let mut total = 0;
    for (i, a) in set.iter().enumerate() {
        if let Some(g) = node.gpus.iter().find(|g| g.index == *a) {
            total += g
                .nvlinks
                .iter()
                .filter(|(p, _)| set[i + 1..].contains(p))
                .map(|(_, l)| *l)
                .sum::<u32>();
        }
    }
    total
}

/// Whether `set` is connected by NVLink (a single GPU is).
pub(crate) fn connected(node: &NodeState, set: &[u32]) -> bool {
    let Some(&first) = set.first() else {
        return true;
    };
    let mut seen = BTreeSet::from([first]);
    let mut stack = vec![first];
    while let Some(i) = stack.pop() {
        if let Some(g) = node.gpus.iter().find(|g| g.index == i) {
            for (p, _) in &g.nvlinks {
                if set.contains(p) && seen.insert(*p) {
                    stack.push(*p);
                }
            }
        }
    }
    seen.len() == set.len()
}

/// The best `k` of `pool` (ascending indexes): the most NVLink links among
/// them; with `need_connected`, only NVLink-connected sets; ties go to the
/// lexicographically smallest set. Exhaustive for the pool sizes of real
/// nodes (up to 16 GPUs); greedy beyond.
fn best_set(node: &NodeState, pool: &[u32], k: usize, need_connected: bool) -> Option<Vec<u32>> {
    if k == 0 {
        return Some(Vec::new());
    }
    if pool.len() < k {
        return None;
    }
    if pool.len() > nvlink::MAX_POOL {
        let set: Vec<u32> = pool[..k].to_vec();
        return (!need_connected || connected(node, &set)).then_some(set);
    }
    // Every k-subset in lexicographic order, as bitmasks over the pool;
    // the first with the most links wins.
    fn rec(
        links: &Links,
        n: usize,
        start: usize,
        left: usize,
        need: bool,
        cur: u32,
        best: &mut Option<(u32, u32)>,
    ) {
        if left == 0 {
            if need && !links.connected(cur) {
                return;
            }
            let l = links.within(cur);
            if best.is_none_or(|(bl, _)| l > bl) {
                *best = Some((l, cur));
            }
            return;
        }
        for i in start..n {
            if n - i < left {
                break;
            }
            rec(links, n, i + 1, left - 1, need, cur | 1 << i, best);
        }
    }
    let links = Links::new(node, pool);
    let mut best = None;
    rec(&links, pool.len(), 0, k, need_connected, 0, &mut best);
    best.map(|(_, set)| nvlink::members(pool, set))
}

/// How shared (fractional) GPU requests pick their GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharePick {
    /// The GPU with the least free capacity that fits, lowest index on ties.
    #[default]
    BestFit,
}

/// Chooses GPUs for `req` on `node`, restricted to NUMA node `numa` if given.
/// Whole GPUs: the lowest-index idle ones, or for NVLink requests (and any
/// multi-GPU request) the set with the most links between them.
pub fn choose_gpus(req: &GpuRequest, node: &NodeState, numa: Option<u32>) -> Option<GpuPick> {
    let one = numa.map(|n| [n]);
    choose_gpus_in(req, node, Scope::of(one.as_ref()))
}

fn choose_gpus_in(req: &GpuRequest, node: &NodeState, scope: Scope<'_>) -> Option<GpuPick> {
    if let Some(p) = &req.mig_profile {
        return choose_mig_in(req, node, scope, p).map(|(i, _)| vec![(i, 0)]);
    }
    let in_numa = |g: &&crate::cluster::GpuState| scope.allows(g.numa);
    if req.milli < GPU_MILLI {
        // A share of one GPU: best fit.
        let g = eligible(req, node)
            .filter(in_numa)
            .filter(|g| g.milli_free() >= req.milli)
            .min_by_key(|g| (g.milli_free(), g.index))?;
        return Some(vec![(g.index, req.milli)]);
    }
    let idle: Vec<u32> = eligible(req, node)
        .filter(in_numa)
        .filter(|g| g.milli_used == 0)
        .map(|g| g.index)
        .collect();
    let k = req.count as usize;
    let set = if k <= 1
        || (req.interconnect == Interconnect::Any && node.gpus.iter().all(|g| g.nvlinks.is_empty()))
    {
        (idle.len() >= k).then(|| idle[..k].to_vec())?
    } else {
        best_set(node, &idle, k, req.interconnect == Interconnect::NvLink)?
    };
    Some(set.into_iter().map(|i| (i, GPU_MILLI)).collect())
}

/// Whether [`choose_gpus`] would find GPUs for `req` anywhere on `node`,
/// without choosing them: for NVLink sets, whether some connected set of
/// idle GPUs is large enough, instead of searching for the best one. When
/// every GPU is eligible, the node's kept [`crate::Free`] counts answer.
pub fn gpus_available(req: &GpuRequest, node: &NodeState) -> bool {
    if req.mig_profile.is_none() && req.models.is_empty() && req.min_memory == 0 {
        // Every GPU is eligible: the node's kept counts decide.
        let f = &node.free;
        if req.milli < GPU_MILLI {
            return !node.gpu_free.is_empty() && f.gpu_share >= req.milli;
        }
        if f.gpus_idle < req.count {
            return false;
        }
        if req.count <= 1 || req.interconnect == Interconnect::Any {
            return true;
        }
        if f.nvlink_idle != u32::MAX {
            return f.nvlink_idle >= req.count;
        }
    }
    if req.mig_profile.is_some() || req.milli < GPU_MILLI || req.count <= 1 {
        return choose_gpus(req, node, None).is_some();
    }
    let idle: Vec<u32> = eligible(req, node)
        .filter(|g| g.milli_used == 0)
        .map(|g| g.index)
        .collect();
    let k = req.count as usize;
    if idle.len() < k {
        false
    } else if req.interconnect == Interconnect::Any {
        true
    } else if idle.len() > nvlink::MAX_POOL {
        choose_gpus(req, node, None).is_some()
    } else {
        Links::new(node, &idle).has_connected(idle.len(), k)
    }
}

/// Whether `req` fits `node` at all (ignoring NUMA), with the reason if not.
pub fn gpu_fit(req: &GpuRequest, node: &NodeState) -> Result<(), Rejection> {
    if choose_gpus(req, node, None).is_some() {
        return Ok(());
    }
    let what = if req.models.is_empty() {
        "GPUs".to_string()
    } else {
        format!("{} GPUs", req.models.join("|"))
    };
    let reason = if let Some(p) = &req.mig_profile {
        format!("lack a free MIG {p} instance")
    } else if req.milli < GPU_MILLI {
        format!("lack {} free thousandths on one of their {what}", req.milli)
    } else if req.interconnect == Interconnect::NvLink && req.count > 1 {
        format!("lack {} free {what} on one NVLink island", req.count)
    } else {
        format!("lack {} free {what}", req.count)
    };
    let free: u32 = eligible(req, node).map(|g| g.milli_free()).sum();
    Err(Rejection::new(
        reason,
        format!(
            "{} eligible GPUs, {free} thousandths free",
            eligible(req, node).count()
        ),
    ))
}

/// A complete hardware choice on one node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HwPick {
    /// GPUs and thousandths.
    pub gpus: GpuPick,
    /// The MIG instance uuid, for MIG requests.
    pub mig: Option<String>,
    /// Exclusive cores.
    pub cores: Vec<u32>,
    /// NICs.
    pub nics: Vec<String>,
    /// Other devices, by qualified CDI name.
    pub devices: Vec<String>,
    /// NUMA nodes used.
    pub numa: Vec<u32>,
}

fn free_cores(node: &NodeState, numa: Scope<'_>) -> Vec<u32> {
    node.cores
        .iter()
        .filter(|c| !c.taken && numa.allows(Some(c.numa)))
        .map(|c| c.id)
        .collect()
}

/// NICs matching `task.nics`, best first: behind the same PCIe switch as a
/// chosen GPU, then on the same NUMA node, then faster, then by name.
fn choose_nics(
    task: &TaskRequest,
    node: &NodeState,
    gpus: &GpuPick,
    numa: Scope<'_>,
) -> Option<Vec<String>> {
    let Some(req) = &task.nics else {
        return Some(Vec::new());
    };
    let switches: BTreeSet<&str> = gpus
        .iter()
        .filter_map(|(i, _)| node.gpus.iter().find(|g| g.index == *i)?.switch.as_deref())
        .collect();
    let gpu_numa: BTreeSet<u32> = gpus
        .iter()
        .filter_map(|(i, _)| node.gpus.iter().find(|g| g.index == *i)?.numa)
        .collect();
    let mut cands: Vec<&crate::cluster::NicState> = node
        .nics
        .iter()
        .filter(|n| !n.taken && n.up && n.speed_mbps >= req.min_speed_mbps && (!req.rdma || n.rdma))
        .filter(|n| numa.allows(n.numa))
        .collect();
    cands.sort_by_key(|n| {
        let same_switch = n.switch.as_deref().is_some_and(|s| switches.contains(s));
        let same_numa = n.numa.is_some_and(|x| gpu_numa.contains(&x));
        (
            !same_switch,
            !same_numa,
            std::cmp::Reverse(n.speed_mbps),
            n.name.clone(),
        )
    });
    (cands.len() >= req.count as usize).then(|| {
        cands[..req.count as usize]
            .iter()
            .map(|n| n.name.clone())
            .collect()
    })
}

/// Devices of each requested kind: free, allowed by `numa`, on the GPUs'
/// NUMA nodes first, then by name.
fn choose_devices(
    task: &TaskRequest,
    node: &NodeState,
    gpus: &GpuPick,
    numa: Scope<'_>,
) -> Option<Vec<String>> {
    let gpu_numa: BTreeSet<u32> = gpus
        .iter()
        .filter_map(|(i, _)| node.gpus.iter().find(|g| g.index == *i)?.numa)
        .collect();
    let mut out = Vec::new();
    for (kind, count) in &task.devices {
        let mut cands: Vec<&crate::cluster::DeviceState> = node
            .devices
            .iter()
            .filter(|d| !d.taken && &d.kind == kind && numa.allows(d.numa))
            .collect();
        if cands.len() < *count as usize {
            return None;
        }
        cands.sort_by_key(|d| (!d.numa.is_some_and(|n| gpu_numa.contains(&n)), &d.qualified));
        out.extend(cands[..*count as usize].iter().map(|d| d.qualified.clone()));
    }
    Some(out)
}

/// Picks everything within the NUMA scope `numa`, around the GPUs `fixed`
/// when given (they must lie in the scope).
pub(crate) fn pick_within(
    task: &TaskRequest,
    node: &NodeState,
    numa: Scope<'_>,
    fixed: Option<&GpuPick>,
) -> Option<HwPick> {
    let gpus = match (&task.gpus, fixed) {
        (Some(_), Some(f)) => {
            let inside = f.iter().all(|(i, _)| {
                node.gpus
                    .iter()
                    .find(|g| g.index == *i)
                    .is_some_and(|g| numa.allows(g.numa))
            });
            inside.then(|| f.clone())?
        }
        (Some(req), None) => choose_gpus_in(req, node, numa)?,
        (None, _) => Vec::new(),
    };
    let want = task.cores as usize;
    let cores: Vec<u32> = if want == 0 {
        Vec::new()
    } else {
        // Prefer the NUMA nodes of the chosen GPUs.
        let gpu_numa: BTreeSet<u32> = gpus
            .iter()
            .filter_map(|(i, _)| node.gpus.iter().find(|g| g.index == *i)?.numa)
            .collect();
        let mut free: Vec<&crate::cluster::CoreState> = node
            .cores
            .iter()
            .filter(|c| !c.taken && numa.allows(Some(c.numa)))
            .collect();
        free.sort_by_key(|c| (!gpu_numa.contains(&c.numa), c.numa, c.id));
        if free.len() < want {
            return None;
        }
        free[..want].iter().map(|c| c.id).collect()
    };
    let nics = choose_nics(task, node, &gpus, numa)?;
    let devices = choose_devices(task, node, &gpus, numa)?;
    let mut used: BTreeSet<u32> = BTreeSet::new();
    for c in &cores {
        if let Some(s) = node.cores.iter().find(|s| s.id == *c) {
            used.insert(s.numa);
        }
    }
    for (i, _) in &gpus {
        if let Some(n) = node
            .gpus
            .iter()
            .find(|g| g.index == *i)
            .and_then(|g| g.numa)
        {
            used.insert(n);
        }
    }
    for name in &nics {
        if let Some(n) = node
            .nics
            .iter()
            .find(|x| &x.name == name)
            .and_then(|x| x.numa)
        {
            used.insert(n);
        }
    }
    for name in &devices {
        if let Some(n) = node
            .devices
            .iter()
            .find(|d| &d.qualified == name)
            .and_then(|d| d.numa)
        {
            used.insert(n);
        }
    }
    if let Scope::Only([n]) = numa {
        used.insert(*n);
    }
    let mig = match task
        .gpus
        .as_ref()
        .and_then(|g| g.mig_profile.as_deref().map(|p| (g, p)))
    {
        Some((req, p)) => Some(choose_mig_in(req, node, numa, p)?.1),
        None => None,
    };
    Some(HwPick {
        gpus,
        mig,
        cores,
        nics,
        devices,
        numa: used.into_iter().collect(),
    })
}

/// Whether a task needs any device-level decision.
pub fn needs_hardware(task: &TaskRequest) -> bool {
    task.gpus.is_some()
        || task.nics.is_some()
        || task.cores > 0
        || task.numa != NumaPolicy::None
        || !task.devices.is_empty()
}

/// The hardware choice for `task` on `node` under its NUMA policy, or why
/// there is none.
pub fn pick(task: &TaskRequest, node: &NodeState) -> Result<HwPick, Rejection> {
    if task.cores > 0 && node.cores.is_empty() {
        return Err(Rejection::new(
            "no core inventory",
            "the node registered no hardware inventory",
        ));
    }
    let numas = node.numa_ids();
    let single = || {
        numas
            .iter()
            .find_map(|n| pick_within(task, node, Scope::Only(std::slice::from_ref(n)), None))
    };
    // Machine-wide first: if even that fails, say which device is missing.
    let Some(anywhere) = pick_within(task, node, Scope::Any, None) else {
        return Err(why_not(task, node));
    };
    match task.numa {
        NumaPolicy::SingleNumaNode => single().ok_or_else(|| {
            Rejection::new(
                "cannot satisfy single-numa-node",
                "no NUMA node holds the GPUs, cores and NICs together",
            )
        }),
        NumaPolicy::BestEffort => Ok(single().unwrap_or(anywhere)),
        // Restricted: the fewest NUMA nodes that can hold it (sets of
        // increasing size, lowest ids first).
        NumaPolicy::Restricted => Ok(fewest_numa(task, node, &numas).unwrap_or(anywhere)),
        NumaPolicy::None => Ok(anywhere),
    }
}

/// The pick confined to the smallest set of NUMA nodes that holds it.
fn fewest_numa(task: &TaskRequest, node: &NodeState, numas: &[u32]) -> Option<HwPick> {
    let n = numas.len().min(16);
    for size in 1..=n {
        // All subsets of `size` NUMA nodes, in lexicographic order.
        let mut idx: Vec<usize> = (0..size).collect();
        loop {
            let set: Vec<u32> = idx.iter().map(|&i| numas[i]).collect();
            if let Some(p) = pick_within(task, node, Scope::Only(&set), None) {
                return Some(p);
            }
            let mut i = size;
            while i > 0 && idx[i - 1] == n - size + i - 1 {
                i -= 1;
            }
            if i == 0 {
                break;
            }
            idx[i - 1] += 1;
            for j in i..size {
                idx[j] = idx[j - 1] + 1;
            }
        }
    }
    None
}

/// The most specific reason a task's hardware does not fit a node.
fn why_not(task: &TaskRequest, node: &NodeState) -> Rejection {
    if let Some(req) = &task.gpus
        && let Err(r) = gpu_fit(req, node)
    {
        return r;
    }
    let free = free_cores(node, Scope::Any).len();
    if free < task.cores as usize {
        return Rejection::new(
            format!("lack {} free cores", task.cores),
            format!("{free} free"),
        );
    }
    for (kind, count) in &task.devices {
        let free = node
            .devices
            .iter()
            .filter(|d| !d.taken && &d.kind == kind)
            .count();
        if free < *count as usize {
            return Rejection::new(format!("lack {count} free {kind}"), format!("{free} free"));
        }
    }
    match &task.nics {
        Some(n) => Rejection::new(
            format!(
                "lack {} free NICs of {} Gb/s{}",
                n.count,
                n.min_speed_mbps / 1000,
                if n.rdma { " with RDMA" } else { "" }
            ),
            "not enough matching NICs".to_string(),
        ),
        None => Rejection::new("hardware does not fit", "no combination of devices fits"),
    }
}
