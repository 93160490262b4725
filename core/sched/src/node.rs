//! A node as the scheduler sees it: its GPUs (with MIG slots), cores, NICs
//! and other devices, what is allocated on them, and how an allocation is
//! taken and released.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use berth_hostprobe::Inventory;
use berth_model::task::Allocation;

use crate::free::Free;

/// Thousandths of a GPU in a whole GPU.
pub const GPU_MILLI: u32 = 1000;

/// One GPU of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuState {
    /// Index on the node.
    pub index: u32,
    /// uuid.
    pub uuid: String,
    /// Model name (or a short model label in simulations).
    pub model: String,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Thousandths already allocated (0 = idle, 1000 = full).
    pub milli_used: u32,
    /// NUMA node it hangs off.
    pub numa: Option<u32>,
    /// PCIe switch it sits behind.
    pub switch: Option<String>,
    /// NVLink peers: (peer index, link count).
    pub nvlinks: Vec<(u32, u32)>,
    /// MIG instances when MIG is on (the GPU is then only handed out by
    /// instance, never whole or shared).
    pub mig: Vec<MigSlot>,
}

/// One MIG instance of a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigSlot {
    /// `MIG-...` uuid.
    pub uuid: String,
    /// Profile, e.g. `1g.10gb`.
    pub profile: String,
    /// Held by a task.
    pub taken: bool,
}

impl GpuState {
    /// Free thousandths.
    pub fn milli_free(&self) -> u32 {
        GPU_MILLI.saturating_sub(self.milli_used)
    }
}

/// One physical core.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoreState {
    /// Inventory core id.
    pub id: u32,
    /// Its NUMA node.
    pub numa: u32,
    /// Its PUs.
    pub pus: Vec<u32>,
    /// Held exclusively by a task.
    pub taken: bool,
}

/// One NIC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NicState {
    /// Interface name.
    pub name: String,
    /// Mb/s (0 when unknown).
    pub speed_mbps: u64,
    /// Has an RDMA device.
    pub rdma: bool,
    /// Link is up.
    pub up: bool,
    /// NUMA node.
    pub numa: Option<u32>,
    /// PCIe switch.
    pub switch: Option<String>,
    /// Held exclusively by a task.
    pub taken: bool,
}

/// A device other than a GPU or NIC (an FPGA, an NPU), handed out whole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceState {
    /// CDI kind, `vendor.com/class`.
    pub kind: String,
    /// Qualified CDI name, `kind=name`.
    pub qualified: String,
    /// NUMA node.
    pub numa: Option<u32>,
    /// Held exclusively by a task.
    pub taken: bool,
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    /// Node name (unique).
    pub name: String,
    /// Position in its [`Cluster`](crate::cluster::Cluster) (set by
    /// [`Cluster::new`](crate::cluster::Cluster::new)).
    pub slot: u32,
    /// Whether the node takes new work.
    pub ready: bool,
    /// Allocatable CPU, millicores.
    pub cpu_capacity: u64,
    /// Allocatable memory, bytes.
    pub mem_capacity: u64,
    /// CPU already allocated, millicores (exclusive cores count 1000 each).
    pub cpu_used: u64,
    /// Memory already allocated, bytes.
    pub mem_used: u64,
    /// Host ports already taken.
    pub ports_used: BTreeSet<u16>,
    /// Where dynamic ports come from (none: [`crate::builtin::DYNAMIC_PORTS`]).
    pub dynamic_ports: Option<(u16, u16)>,
    /// GPUs.
    pub gpus: Vec<GpuState>,
    /// Physical cores (empty when the node registered no inventory).
    pub cores: Vec<CoreState>,
    /// Free cores per NUMA node, `(numa id, free)` by ascending id: the
    /// NUMA nodes that have cores. Kept like `gpu_free`.
    pub numa_free: Vec<(u32, u32)>,
    /// NICs.
    pub nics: Vec<NicState>,
    /// Other devices, by qualified name.
    pub devices: Vec<DeviceState>,
    /// Free thousandths of each GPU, in `gpus` order: a packed copy for
    /// plugins that read every candidate's GPUs (one small read per node
    /// instead of one per GPU). Kept by [`Cluster::new`](crate::cluster::Cluster::new),
    /// [`NodeState::take`] and [`NodeState::release`]; whoever changes
    /// `gpus` directly calls [`NodeState::repack`].
    pub gpu_free: Vec<u16>,
    /// What is free, in one cache line (kept like `gpu_free`).
    pub free: Free,
    /// Labels and facts for constraints (`hostname`, `gpu.model`, ...).
    pub attributes: BTreeMap<String, String>,
    /// Tasks per group (app) on this node, for constraints.
    pub groups: BTreeMap<String, u32>,
}

impl NodeState {
    /// Free CPU in millicores.
    pub fn cpu_free(&self) -> u64 {
        self.cpu_capacity.saturating_sub(self.cpu_used)
    }

    /// Free memory in bytes.
    pub fn mem_free(&self) -> u64 {
        self.mem_capacity.saturating_sub(self.mem_used)
    }

    /// Free GPU thousandths over all GPUs.
    pub fn gpu_milli_free(&self) -> u32 {
        self.gpus.iter().map(|g| g.milli_free()).sum()
    }

    /// NUMA node ids present on the node (those with cores), ascending.
    pub fn numa_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::with_capacity(4);
        for c in &self.cores {
            if ids.last() != Some(&c.numa) && !ids.contains(&c.numa) {
                ids.push(c.numa);
            }
        }
        ids.sort_unstable();
        ids
    }

    /// A ready node named `name` with the hardware of `inv` and its usual
    /// capacity: one CPU per PU and all the inventory's memory.
    pub fn from_inventory(name: &str, inv: &Inventory) -> NodeState {
        NodeState {
            name: name.to_string(),
            ready: true,
            cpu_capacity: inv.pu_count() as u64 * 1000,
            mem_capacity: inv.memory_bytes(),
            ..Default::default()
        }
        .with_inventory(inv)
    }

    /// Fills hardware from an inventory: GPUs, cores, NICs, and facts such
    /// as `gpu.model` and `gpu.count` for constraints.
    pub fn with_inventory(mut self, inv: &Inventory) -> NodeState {
        let index_of: HashMap<&str, u32> = inv
            .gpus
            .iter()
            .map(|g| (g.uuid.as_str(), g.index))
            .collect();
        self.gpus = inv
            .gpus
            .iter()
            .map(|g| GpuState {
                index: g.index,
                uuid: g.uuid.clone(),
                model: g.model.clone(),
                memory_bytes: g.memory_bytes,
                // A MIG-enabled GPU is only available by instance.
                milli_used: if g.mig.mode == berth_hostprobe::MigMode::Enabled {
                    GPU_MILLI
                } else {
                    0
                },
                mig: g
                    .mig
                    .instances
                    .iter()
                    .map(|m| MigSlot {
                        uuid: m.uuid.clone(),
                        profile: m.profile.clone(),
                        taken: false,
                    })
                    .collect(),
                numa: g.numa_node,
                switch: g.pcie_switch.clone(),
                nvlinks: g
                    .nvlinks
                    .iter()
                    .filter_map(|l| Some((*index_of.get(l.peer.as_str())?, l.links)))
                    .collect(),
            })
            .collect();
        self.gpus.sort_by_key(|g| g.index);
        self.cores = inv
            .numa_nodes()
            .flat_map(|n| {
                n.cores.iter().map(move |c| CoreState {
                    id: c.id,
                    numa: n.id,
                    pus: c.pus.clone(),
                    taken: false,
                })
            })
            .collect();
        self.cores.sort_by_key(|c| c.id);
        self.nics = inv
            .nics
            .iter()
            .map(|n| NicState {
                name: n.name.clone(),
                speed_mbps: n.speed_mbps.unwrap_or(0),
                rdma: n.rdma_device.is_some(),
                up: n.link_up,
                numa: n.numa_node,
                switch: n.pcie_switch.clone(),
                taken: false,
            })
            .collect();
        self.repack();
        self.devices = inv
            .devices
            .iter()
            .map(|d| DeviceState {
                kind: d.kind.clone(),
                qualified: d.qualified(),
                numa: d.numa_node,
                taken: false,
            })
            .collect();
        self.devices.sort_by(|a, b| a.qualified.cmp(&b.qualified));
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &inv.devices {
            *kinds.entry(d.kind.as_str()).or_default() += 1;
        }
        for (kind, n) in kinds {
            self.attributes
                .insert(format!("device.{kind}.count"), n.to_string());
        }
        if let Some(g) = inv.gpus.first() {
            self.attributes.insert("gpu.model".into(), g.model.clone());
        }
        self.attributes
            .insert("gpu.count".into(), inv.gpus.len().to_string());
        self.attributes
            .insert("cpu.cores".into(), inv.core_count().to_string());
        self.attributes
            .insert("numa.count".into(), inv.numa_nodes().count().to_string());
        self
    }

    /// Accounts an allocation on this node.
    pub fn take(&mut self, a: &Allocation) {
        self.cpu_used += a.cpu.0 + 1000 * a.cores.len() as u64;
        self.mem_used += a.memory.0;
        self.recount_memory();
        self.ports_used.extend(a.ports.iter().copied());
        for g in &a.gpus {
            if let Some(s) = self.gpus.iter_mut().find(|s| s.index == g.index) {
                s.milli_used = (s.milli_used + g.milli).min(GPU_MILLI);
                if let Some(m) = s.mig.iter_mut().find(|m| m.uuid == g.uuid) {
                    m.taken = true;
                }
            }
        }
        if !a.gpus.is_empty() {
            self.repack_gpus();
        }
        for c in &a.cores {
            if let Some(s) = self.cores.iter_mut().find(|s| s.id == *c) {
                s.taken = true;
            }
        }
        if !a.cores.is_empty() {
            self.recount_cores();
        }
        for n in &a.nics {
            if let Some(s) = self.nics.iter_mut().find(|s| &s.name == n) {
                s.taken = true;
            }
        }
        if !a.nics.is_empty() {
            self.recount_nics();
        }
        self.mark_devices(&a.devices, true);
    }

    fn mark_devices(&mut self, names: &[String], taken: bool) {
        for d in names {
            if let Some(s) = self.devices.iter_mut().find(|s| &s.qualified == d) {
                s.taken = taken;
            }
        }
    }
}

impl NodeState {
    /// Feeds what does not change with allocations into `h`.
    pub(crate) fn hash_static(&self, h: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        (&self.name, self.cpu_capacity, self.mem_capacity).hash(h);
        self.attributes.hash(h);
        for g in &self.gpus {
            (
                g.index,
                &g.uuid,
                &g.model,
                g.memory_bytes,
                g.numa,
                &g.nvlinks,
            )
                .hash(h);
            g.mig.len().hash(h);
        }
        (self.cores.len(), self.nics.len(), self.devices.len()).hash(h);
    }

    /// Undoes [`NodeState::take`]: the allocation's resources are free again.
    pub fn release(&mut self, a: &Allocation) {
        self.cpu_used = self
            .cpu_used
            .saturating_sub(a.cpu.0 + 1000 * a.cores.len() as u64);
        self.mem_used = self.mem_used.saturating_sub(a.memory.0);
        self.recount_memory();
        for p in &a.ports {
            self.ports_used.remove(p);
        }
        for g in &a.gpus {
            if let Some(s) = self.gpus.iter_mut().find(|s| s.index == g.index) {
                s.milli_used = s.milli_used.saturating_sub(g.milli);
                if let Some(m) = s.mig.iter_mut().find(|m| m.uuid == g.uuid) {
                    m.taken = false;
                }
            }
        }
        if !a.gpus.is_empty() {
            self.repack_gpus();
        }
        for c in &a.cores {
            if let Some(s) = self.cores.iter_mut().find(|s| s.id == *c) {
                s.taken = false;
            }
        }
        if !a.cores.is_empty() {
            self.recount_cores();
        }
        for n in &a.nics {
            if let Some(s) = self.nics.iter_mut().find(|s| &s.name == n) {
                s.taken = false;
            }
        }
        if !a.nics.is_empty() {
            self.recount_nics();
        }
        self.mark_devices(&a.devices, false);
    }
}
