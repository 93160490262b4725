//! What a task asks for: CPU, memory, ports, cores, GPUs, NICs, devices,
//! NUMA policy and constraints.

use std::collections::BTreeMap;

/// How a multi-GPU task wants its GPUs connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interconnect {
    /// Any GPUs.
    #[default]
    Any,
    /// All on one NVLink island.
    NvLink,
}

/// GPUs a task asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuRequest {
    /// How many GPUs.
    pub count: u32,
    /// Thousandths of each: 1000 for whole GPUs; less shares one GPU (count 1).
    pub milli: u32,
    /// Allowed models (empty: any). A GPU matches if its model contains one.
    pub models: Vec<String>,
    /// Minimum memory per GPU, bytes.
    pub min_memory: u64,
    /// Connectivity between them.
    pub interconnect: Interconnect,
    /// A MIG instance of this profile instead of whole or shared GPUs.
    pub mig_profile: Option<String>,
}

impl GpuRequest {
    /// Total thousandths requested.
    pub fn total_milli(&self) -> u32 {
        self.count * self.milli
    }

    /// Whether a GPU model is allowed.
    pub fn model_ok(&self, model: &str) -> bool {
        self.models.is_empty()
            || self
                .models
                .iter()
                .any(|m| model == m || model.contains(m.as_str()))
    }
}

/// NICs a task asks for (exclusively).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NicRequest {
    /// How many.
    pub count: u32,
    /// Minimum speed, Mb/s.
    pub min_speed_mbps: u64,
    /// Must have RDMA.
    pub rdma: bool,
}

/// NUMA placement policy, with the semantics of Kubernetes' Topology Manager
/// policies, decided here rather than rejected later on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NumaPolicy {
    /// No NUMA consideration.
    #[default]
    None,
    /// Prefer one NUMA node; take what fits otherwise.
    BestEffort,
    /// Use the fewest NUMA nodes that can hold the request; fail otherwise.
    Restricted,
    /// Everything on one NUMA node, or not here.
    SingleNumaNode,
}

/// What a task asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskRequest {
    /// Task id.
    pub id: String,
    /// Shared CPU, millicores.
    pub cpu: u64,
    /// Memory, bytes.
    pub memory: u64,
    /// Host ports it needs.
    pub ports: Vec<u16>,
    /// Exclusive whole cores (instead of shared `cpu`).
    pub cores: u32,
    /// GPUs.
    pub gpus: Option<GpuRequest>,
    /// NICs.
    pub nics: Option<NicRequest>,
    /// NUMA policy.
    pub numa: NumaPolicy,
    /// Other devices: (CDI kind, count), exclusively.
    pub devices: Vec<(String, u32)>,
    /// The group (app) it belongs to, for constraints.
    pub group: String,
    /// Placement constraints.
    pub constraints: Vec<berth_model::placement::Constraint>,
    /// The app's labels (for plugins).
    pub labels: BTreeMap<String, String>,
    /// Priority: higher may preempt lower.
    pub priority: i32,
    /// The only node it may go to (a persistent volume of its instance is
    /// there), and the volume's name for the reason.
    pub pinned: Option<Pinned>,
}

/// A task held to one node by a persistent volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pinned {
    /// The node.
    pub node: String,
    /// The volume (`<app>-<instance>-<name>`).
    pub volume: String,
}

impl TaskRequest {
    /// What a task `id` of an app with `spec` asks for.
    pub fn for_spec(id: &str, spec: &berth_model::spec::AppSpec) -> TaskRequest {
        use berth_model::hardware;
        let r = &spec.resources;
        TaskRequest {
            id: id.to_string(),
            cpu: if r.cores > 0 { 0 } else { r.cpu.0 },
            memory: r.memory.0,
            ports: spec.ports.iter().filter_map(|p| p.host).collect(),
            cores: r.cores,
            gpus: r.gpus.as_ref().map(|g| GpuRequest {
                count: g.count,
                milli: g.milli,
                models: g.model.clone(),
                min_memory: g.min_memory.map(|b| b.0).unwrap_or(0),
                interconnect: match g.interconnect {
                    hardware::Interconnect::Nvlink => Interconnect::NvLink,
                    hardware::Interconnect::Any => Interconnect::Any,
                },
                mig_profile: g.mig_profile.clone(),
            }),
            nics: r.nics.as_ref().map(|n| NicRequest {
                count: n.count,
                min_speed_mbps: u64::from(n.min_speed) * 1000,
                rdma: n.rdma,
            }),
            numa: match r.numa {
                hardware::NumaPolicy::None => NumaPolicy::None,
                hardware::NumaPolicy::BestEffort => NumaPolicy::BestEffort,
                hardware::NumaPolicy::Restricted => NumaPolicy::Restricted,
                hardware::NumaPolicy::SingleNumaNode => NumaPolicy::SingleNumaNode,
            },
            devices: r.devices.iter().map(|(k, &n)| (k.clone(), n)).collect(),
            group: spec.name.clone(),
            constraints: spec.constraints.clone(),
            labels: spec.labels.clone(),
            priority: spec.priority,
            pinned: None,
        }
    }

    /// CPU demand in millicores, exclusive cores included.
    pub fn cpu_demand(&self) -> u64 {
        self.cpu + 1000 * u64::from(self.cores)
    }
}
