//! FGD's fragmentation measure (Weng et al., USENIX ATC'23), memoised.
//!
//! For a node `n` and a typical shape `p`, `frag_p(n)` is the GPU capacity
//! of `n` that `p` cannot use: all of it when `p` is CPU-only, when `n`'s
//! model is not allowed, or when `n` lacks the GPUs or CPU for `p`;
//! otherwise only the GPUs with less free than `p` asks per GPU. The node's
//! fragmentation is `F(n) = Σ_p w_p · frag_p(n)`, with the same floating
//! point accumulation as the FGD simulator (per-kind buckets, summed in a
//! fixed order) so truncated scores match it.
//!
//! `F` depends only on the node's model, on which of the shapes' CPU
//! requests its free CPU covers, and on the multiset of its GPUs' free
//! thousandths, so it is memoised on that signature: idle nodes of one
//! kind share one entry, and a placement changes one node only. Optional
//! terms for policies built on FGD (a CPU-stranding term and a value per
//! model, see [`crate::policy::pack`]) are added outside the memo.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::cluster::{GPU_MILLI, NodeState, TaskRequest};
use crate::policy::hash::{FxBuild, FxHasher};
use crate::policy::typical::{PodShape, TypicalPod};

/// Most GPUs per node for which `F` is memoised (more are computed directly).
const MEMO_GPUS: usize = 8;
/// The memo is cleared when it grows past this many entries.
const MEMO_CAP: usize = 4 << 20;
/// Most CPU levels for which FGD's part of `F` is also kept per node slot.
const SLOT_LEVELS: usize = 64;

struct Class {
    shape: PodShape,
    weight: f64,
    /// Index of its CPU request among the distinct requests, ascending.
    cpu_rank: usize,
}

/// A node model label as seen by the memo.
struct ModelEntry {
    hash: u64,
    label: String,
    /// Per class: whether the label is allowed.
    allowed: Vec<bool>,
    /// Value per free thousandth.
    value: f64,
}

struct Memo {
    models: Vec<ModelEntry>,
    /// The cluster whose slots `slot_model` describes ([`FragModel::prepare`]).
    fingerprint: Option<u64>,
    /// Model id per node slot (`u32::MAX`: not looked up yet).
    slot_model: Vec<u32>,
    /// Per node slot, the GPU frees its `slot_base` row was computed for.
    slot_frees: Vec<SlotFrees>,
    /// Per node slot, FGD's part of `F` by CPU level for those frees
    /// (NaN: not computed); `levels + 1` values a slot.
    slot_base: Vec<f64>,
    /// FGD's part of `F`, keyed by model, CPU level and sorted free GPUs.
    map: HashMap<[u64; 3], f64, FxBuild>,
}

/// The free thousandths a slot's row of bases holds for (`n == u8::MAX`:
/// none yet).
#[derive(Clone, Copy, PartialEq, Eq)]
struct SlotFrees {
    n: u8,
    frees: [u16; MEMO_GPUS],
}

impl SlotFrees {
    const NONE: SlotFrees = SlotFrees {
        n: u8::MAX,
        frees: [0; MEMO_GPUS],
    };

    /// `frees` as kept (`None` when there are too many GPUs to keep).
    fn of(frees: &[u32]) -> Option<SlotFrees> {
        if frees.len() > MEMO_GPUS {
            return None;
        }
        let mut s = SlotFrees {
            n: frees.len() as u8,
            frees: [0; MEMO_GPUS],
        };
        for (k, f) in s.frees.iter_mut().zip(frees) {
            *k = u16::try_from(*f).ok()?;
        }
        Some(s)
    }
}

fn label_hash(label: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(label.as_bytes());
    h.write_u64(label.len() as u64);
    h.finish()
}

/// The fragmentation measure for one typical-pod distribution.
pub struct FragModel {
    classes: Vec<Class>,
    /// Distinct CPU requests of the classes, ascending: `F` depends on a
    /// node's free CPU only through how many of them it covers (and the
    /// CPU term, computed outside the memo).
    cpu_levels: Vec<u64>,
    memo: Mutex<Memo>,
    /// Optional CPU-stranding term: (weight, CPU millicores per GPU thousandth).
    cpu_term: Option<(f64, f64)>,
    /// Value per free GPU thousandth by model label (subtracted from `F`).
    values: Vec<(String, f64)>,
}

impl FragModel {
    /// A model for `typical` (see [`crate::policy::typical_pods`]).
    pub fn new(typical: &[TypicalPod]) -> FragModel {
        let mut cpu_levels: Vec<u64> = typical.iter().map(|t| t.shape.cpu).collect();
        cpu_levels.sort_unstable();
        cpu_levels.dedup();
        FragModel {
            classes: typical
                .iter()
                .map(|t| Class {
                    shape: t.shape.clone(),
                    weight: t.weight,
                    cpu_rank: cpu_levels.partition_point(|&c| c < t.shape.cpu),
                })
                .collect(),
            cpu_levels,
            memo: Mutex::new(Memo {
                models: Vec::new(),
                fingerprint: None,
                slot_model: Vec::new(),
                slot_frees: Vec::new(),
                slot_base: Vec::new(),
                map: HashMap::default(),
            }),
            cpu_term: None,
            values: Vec::new(),
        }
    }

    /// Subtracts `value × S` from `F` on nodes of each listed model label:
    /// free GPUs of that model are worth keeping free.
    pub fn with_model_values(mut self, values: Vec<(String, f64)>) -> FragModel {
        self.values = values;
        self
    }

    /// Adds `weight × max(0, S − cpu_free / ratio)` to `F`: the free GPU
    /// thousandths the node's free CPU cannot serve at `ratio` millicores
    /// per GPU thousandth.
    pub fn with_cpu_term(mut self, weight: f64, ratio: f64) -> FragModel {
        self.cpu_term = (weight > 0.0 && ratio > 0.0).then_some((weight, ratio));
        self
    }

    /// The typical shapes, with weights.
    pub fn classes(&self) -> impl Iterator<Item = (&PodShape, f64)> {
        self.classes.iter().map(|c| (&c.shape, c.weight))
    }

    /// Before a decision on `cluster`: nodes' model ids are then kept by
    /// slot (looked up once per node, not hashed per call), and FGD's part
    /// of `F` per slot and CPU level for the slot's GPU frees as last seen
    /// (read back when the frees are still those: no sort, no hash), until
    /// the cluster's fingerprint changes. Nodes evaluated afterwards must
    /// be that cluster's.
    pub fn prepare(&self, cluster: &crate::Cluster) {
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        let fp = cluster.fingerprint();
        let n = cluster.nodes().len();
        if memo.fingerprint != Some(fp) || memo.slot_model.len() != n {
            memo.fingerprint = Some(fp);
            memo.slot_model.clear();
            memo.slot_model.resize(n, u32::MAX);
            memo.slot_frees.clear();
            memo.slot_base.clear();
            if self.cpu_levels.len() < SLOT_LEVELS {
                memo.slot_frees.resize(n, SlotFrees::NONE);
                memo.slot_base
                    .resize(n * (self.cpu_levels.len() + 1), f64::NAN);
            }
        }
    }

    /// Locks the memo for a batch of evaluations.
    pub fn session(&self) -> FragSession<'_> {
        FragSession {
            model: self,
            memo: self.memo.lock().unwrap_or_else(PoisonError::into_inner),
            buf: Vec::new(),
        }
    }

    /// FGD's `F` for a node whose free CPU covers the first `level` CPU
    /// levels and whose GPUs' free thousandths are `sorted` (ascending).
    fn compute(&self, allowed: &[bool], level: usize, sorted: &[u32]) -> f64 {
        let total: u32 = sorted.iter().sum();
        let s = f64::from(total);
        // Buckets as in the FGD simulator: q1 lack both, q2 lack gpu, q4 lack
        // cpu, xl/xr cpu-only, na no access (q3, the usable part, excluded).
        let (mut q1, mut q2, mut q4, mut xl, mut xr, mut na) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (c, ok) in self.classes.iter().zip(allowed) {
            let w = c.weight;
            let cpu_ok = c.cpu_rank < level;
            if c.shape.cpu_only() {
                if cpu_ok {
                    xl += w * s;
                } else {
                    xr += w * s;
                }
                continue;
            }
            if !ok {
                na += w * s;
                continue;
            }
            let small = sorted.partition_point(|&f| f < c.shape.milli);
            let fits = (sorted.len() - small) as u32 >= c.shape.count;
            match (fits, cpu_ok) {
                (true, true) => {
                    let frag: u32 = sorted[..small].iter().sum();
                    q2 += w * f64::from(frag);
                }
                (true, false) => q4 += w * s,
                (false, true) => q2 += w * s,
                (false, false) => q1 += w * s,
            }
        }
        q1 + q2 + q4 + xl + xr + na
    }

    /// How many of the typical shapes' distinct CPU requests `cpu_free`
    /// covers.
    fn level(&self, cpu_free: u64) -> usize {
        self.cpu_levels.partition_point(|&c| c <= cpu_free)
    }

    /// `F` from FGD's part: the model's value and the CPU term added.
    fn finish(&self, base: f64, value: f64, cpu_free: u64, frees: &[u32]) -> f64 {
        let s = f64::from(frees.iter().sum::<u32>());
        let f = base - value * s;
        match self.cpu_term {
            Some((w, ratio)) => f + w * (s - cpu_free as f64 / ratio).max(0.0),
            None => f,
        }
    }
}

/// A locked view of a [`FragModel`] for a batch of evaluations.
pub struct FragSession<'a> {
    model: &'a FragModel,
    memo: MutexGuard<'a, Memo>,
    buf: Vec<u32>,
}

/// FGD's verdict for one task on one node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FgdChoice {
    /// `trunc(100·σ((F(n) − F(n′))/1000))`.
    pub score: i64,
    /// `F(n) − F(n′)`: positive when the placement lowers fragmentation.
    pub delta: f64,
    /// For shared GPU requests, the GPU chosen (first index reaching the
    /// best truncated score).
    pub gpu: Option<u32>,
}

/// The free thousandths of a node's GPUs, from the packed copy (walking
/// the GPUs only for a node built without [`NodeState::repack`]).
fn frees_of(node: &NodeState, out: &mut Vec<u32>) {
    if node.gpu_free.len() == node.gpus.len() {
        out.extend(node.gpu_free.iter().map(|&f| u32::from(f)));
    } else {
        out.extend(node.gpus.iter().map(|g| g.milli_free()));
    }
}

/// Whether a GPU's model and memory suit `req`.
fn gpu_ok(req: &crate::cluster::GpuRequest, g: &crate::cluster::GpuState) -> bool {
    req.model_ok(&g.model) && g.memory_bytes >= req.min_memory
}

/// `trunc(100·σ(delta/1000))`.
pub fn fgd_score(delta: f64) -> i64 {
    if delta == 0.0 {
        // The common case (a placement that leaves F as it was), without
        // the exponential.
        return 50;
    }
    (1.0 / (1.0 + (-(delta / 1000.0)).exp()) * 100.0) as i64
}

impl FragSession<'_> {
    /// The interned id of a node's GPU model (that of its first GPU): by
    /// slot once [`FragModel::prepare`] has seen the cluster.
    fn model_id(&mut self, node: &NodeState) -> usize {
        let slot = node.slot as usize;
        if let Some(&id) = self.memo.slot_model.get(slot)
            && id != u32::MAX
        {
            return id as usize;
        }
        let id = self.intern(node);
        if let Some(s) = self.memo.slot_model.get_mut(slot) {
            *s = id as u32;
        }
        id
    }

    fn intern(&mut self, node: &NodeState) -> usize {
        let label = node.gpus.first().map_or("", |g| g.model.as_str());
        let hash = label_hash(label);
        if let Some(i) = self
            .memo
            .models
            .iter()
            .position(|m| m.hash == hash && m.label == label)
        {
            return i;
        }
        let allowed = self
            .model
            .classes
            .iter()
            .map(|c| c.shape.model_ok(label))
            .collect();
        let value = self
            .model
            .values
            .iter()
            .find(|(m, _)| m == label)
            .map_or(0.0, |v| v.1);
        self.memo.models.push(ModelEntry {
            hash,
            label: label.to_string(),
            allowed,
            value,
        });
        self.memo.models.len() - 1
    }

    /// `F` for a node of model `model` with `cpu_free` and GPUs' `frees`.
    fn frag(&mut self, model: usize, cpu_free: u64, frees: &[u32]) -> f64 {
        if frees.is_empty() {
            return 0.0;
        }
        let base = self.base(model, self.model.level(cpu_free), frees);
        self.finish(model, base, cpu_free, frees)
    }

    /// `F` from FGD's part `base` (see [`FragModel::finish`]).
    fn finish(&self, model: usize, base: f64, cpu_free: u64, frees: &[u32]) -> f64 {
        let value = self.memo.models[model].value;
        self.model.finish(base, value, cpu_free, frees)
    }

    /// FGD's part of `F` (memoised) for a node of `model` whose free CPU
    /// covers `level` CPU levels and whose GPUs have `frees` (not empty).
    fn base(&mut self, model: usize, level: usize, frees: &[u32]) -> f64 {
        if frees.len() > MEMO_GPUS || level >= 1 << 40 || model >= 1 << 16 {
            let mut sorted = frees.to_vec();
            sorted.sort_unstable();
            return self
                .model
                .compute(&self.memo.models[model].allowed, level, &sorted);
        }
        let mut sorted = [0u32; MEMO_GPUS];
        let n = frees.len();
        sorted[..n].copy_from_slice(frees);
        sorted[..n].sort_unstable();
        let mut key = [(model as u64) << 48 | (n as u64) << 40 | level as u64, 0, 0];
        for (i, f) in sorted[..n].iter().enumerate() {
            key[1 + i / 4] |= u64::from((*f).min(0xFFFF)) << (16 * (i % 4));
        }
        match self.memo.map.get(&key) {
            Some(v) => *v,
            None => {
                let v = self
                    .model
                    .compute(&self.memo.models[model].allowed, level, &sorted[..n]);
                if self.memo.map.len() >= MEMO_CAP {
                    self.memo.map.clear();
                }
                self.memo.map.insert(key, v);
                v
            }
        }
    }

    /// [`FragSession::base`] for `node` with its own GPU frees `frees`:
    /// kept per slot and level while the frees stay.
    fn node_base(&mut self, node: &NodeState, model: usize, level: usize, frees: &[u32]) -> f64 {
        let slot = node.slot as usize;
        let width = self.model.cpu_levels.len() + 1;
        let at = slot * width + level;
        let Some(key) = SlotFrees::of(frees)
            .filter(|_| slot < self.memo.slot_frees.len() && level < width && model < 1 << 16)
        else {
            return self.base(model, level, frees);
        };
        if self.memo.slot_frees[slot] != key {
            self.memo.slot_frees[slot] = key;
            self.memo.slot_base[slot * width..(slot + 1) * width].fill(f64::NAN);
        }
        let kept = self.memo.slot_base[at];
        if !kept.is_nan() {
            return kept;
        }
        let v = self.base(model, level, frees);
        self.memo.slot_base[at] = v;
        v
    }

    /// `F(n)` for a node as it is.
    pub fn node_frag(&mut self, node: &NodeState) -> f64 {
        let model = self.model_id(node);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        frees_of(node, &mut buf);
        let cpu = node.cpu_free();
        let f = if buf.is_empty() {
            0.0
        } else {
            let base = self.node_base(node, model, self.model.level(cpu), &buf);
            self.finish(model, base, cpu, &buf)
        };
        self.buf = buf;
        f
    }

    /// What FGD makes of `task` on `node`: `None` if its GPUs cannot hold it.
    pub fn choose(&mut self, task: &TaskRequest, node: &NodeState) -> Option<FgdChoice> {
        let model = self.model_id(node);
        let mut frees = std::mem::take(&mut self.buf);
        frees.clear();
        frees_of(node, &mut frees);
        let cpu = node.cpu_free();
        let level0 = self.model.level(cpu);
        let base0 = (!frees.is_empty()).then(|| self.node_base(node, model, level0, &frees));
        let f0 = base0.map_or(0.0, |b| self.finish(model, b, cpu, &frees));
        let cpu1 = cpu.saturating_sub(task.cpu_demand());
        // Only a request naming models or memory reads the GPU records.
        let picky = task
            .gpus
            .as_ref()
            .is_some_and(|r| !r.models.is_empty() || r.min_memory > 0);
        let result = match &task.gpus {
            Some(req)
                if req.mig_profile.is_none()
                    && req.milli > 0
                    && req.count > 0
                    && req.milli < GPU_MILLI =>
            {
                // A share of one GPU: try each GPU with room, in index order.
                let mut best: Option<FgdChoice> = None;
                let mut seen: [(u32, i64, f64); MEMO_GPUS] = [(u32::MAX, 0, 0.0); MEMO_GPUS];
                let mut nseen = 0;
                for i in 0..frees.len() {
                    let free = frees[i];
                    if free < req.milli || (picky && !gpu_ok(req, &node.gpus[i])) {
                        continue;
                    }
                    let (score, delta) = match seen[..nseen].iter().find(|s| s.0 == free) {
                        Some(s) => (s.1, s.2),
                        None => {
                            frees[i] = free - req.milli;
                            let delta = f0 - self.frag(model, cpu1, &frees);
                            frees[i] = free;
                            let score = fgd_score(delta);
                            if nseen < MEMO_GPUS {
                                seen[nseen] = (free, score, delta);
                                nseen += 1;
                            }
                            (score, delta)
                        }
                    };
                    if best.is_none_or(|b| score > b.score) {
                        best = Some(FgdChoice {
                            score,
                            delta,
                            gpu: Some(node.gpus[i].index),
                        });
                    }
                }
                best
            }
            Some(req) if req.mig_profile.is_none() && req.milli > 0 && req.count > 0 => {
                // Whole GPUs: the lowest-index idle ones.
                let mut need = req.count;
                for (i, f) in frees.iter_mut().enumerate() {
                    if need > 0 && *f >= GPU_MILLI && (!picky || gpu_ok(req, &node.gpus[i])) {
                        *f = 0;
                        need -= 1;
                    }
                }
                (need == 0).then(|| {
                    let delta = f0 - self.frag(model, cpu1, &frees);
                    FgdChoice {
                        score: fgd_score(delta),
                        delta,
                        gpu: None,
                    }
                })
            }
            _ if self.model.cpu_term.is_none()
                && self.model.level(cpu) == self.model.level(cpu1) =>
            {
                // Nothing on the node's GPUs or CPU level changes: F stays.
                Some(FgdChoice {
                    score: fgd_score(0.0),
                    delta: 0.0,
                    gpu: None,
                })
            }
            _ => {
                // The same GPUs: FGD's part at the new CPU level, kept
                // per slot; the terms added outside the memo move.
                let f1 = match base0 {
                    Some(b) => {
                        let level1 = self.model.level(cpu1);
                        let b1 = if level1 == level0 {
                            b
                        } else {
                            self.node_base(node, model, level1, &frees)
                        };
                        self.finish(model, b1, cpu1, &frees)
                    }
                    None => 0.0,
                };
                let delta = f0 - f1;
                Some(FgdChoice {
                    score: fgd_score(delta),
                    delta,
                    gpu: None,
                })
            }
        };
        self.buf = frees;
        result
    }
}

#[cfg(test)]
#[path = "frag_tests.rs"]
mod tests;
