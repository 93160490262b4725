//! The inventory model: what a node has, as a tree. Plain serde types with
//! no heavy dependencies, so `berth-model` and the scheduler can use them.
//!
//! machine -> packages -> NUMA nodes (memory, hugepages) -> cores -> PUs,
//! with caches per package, and devices (GPUs, NICs) attached to a NUMA
//! node by id. The same type comes from a real probe or a fixture file.

use serde::{Deserialize, Serialize};

/// The inventory format version this build writes and reads.
pub const INVENTORY_VERSION: u32 = 1;

/// Everything Berth knows about one node's hardware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Format version ([`INVENTORY_VERSION`]).
    pub version: u32,
    /// Host name as probed (or the fixture's machine name).
    pub hostname: String,
    /// Where it came from: `probe`, `fixture:<name>`, `synthetic:<desc>`, `xml:<path>`.
    pub source: String,
    /// For fixtures: the public spec sheet the shape follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_sheet: Option<String>,
    /// CPU packages (sockets).
    pub packages: Vec<Package>,
    /// GPUs.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// Network interfaces.
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// Other devices handed out whole by the scheduler (FPGAs, NPUs,
    /// anything a CDI spec describes), by CDI kind and name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// What a backend could not see, and why (no driver means no GPUs, not an error).
    #[serde(default)]
    pub probe_notes: Vec<String>,
}

/// A CPU package (socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// OS index of the package.
    pub id: u32,
    /// CPU model name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// NUMA nodes in this package.
    pub numa_nodes: Vec<NumaNode>,
    /// Caches, with the PUs that share each.
    #[serde(default)]
    pub caches: Vec<Cache>,
}

/// A NUMA node: memory and the cores local to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumaNode {
    /// OS index (as in `/sys/devices/system/node/nodeN`).
    pub id: u32,
    /// Local memory in bytes.
    pub memory_bytes: u64,
    /// Huge pages by size.
    #[serde(default)]
    pub hugepages: Vec<Hugepages>,
    /// Cores local to this node.
    pub cores: Vec<Core>,
}

/// A pool of huge pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hugepages {
    /// Page size in bytes.
    pub size_bytes: u64,
    /// Pages configured.
    pub count: u64,
}

/// A physical core and its hardware threads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Core {
    /// Core index, unique in the machine (logical order).
    pub id: u32,
    /// OS indexes of its PUs (SMT siblings), as cpuset numbers.
    pub pus: Vec<u32>,
}

/// A CPU cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// 1, 2, 3...
    pub level: u8,
    /// `unified`, `data` or `instruction`.
    pub kind: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// OS indexes of the PUs sharing it.
    pub pus: Vec<u32>,
}

/// A GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// Index as the driver numbers it.
    pub index: u32,
    /// `GPU-...` uuid.
    pub uuid: String,
    /// Model name, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: String,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Compute capability, e.g. `9.0`.
    pub compute_capability: String,
    /// PCI bus id, `0000:18:00.0`.
    pub pci_bus_id: String,
    /// NUMA node it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// The PCIe switch it sits behind (a bus id), to pair it with NICs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie_switch: Option<String>,
    /// MIG mode and instances.
    #[serde(default)]
    pub mig: Mig,
    /// NVLink connections to other GPUs.
    #[serde(default)]
    pub nvlinks: Vec<NvLink>,
}

/// MIG state of a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Mig {
    /// `unsupported`, `disabled` or `enabled`.
    pub mode: MigMode,
    /// GPU instances, when enabled.
    #[serde(default)]
    pub instances: Vec<MigInstance>,
}

/// Whether MIG is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MigMode {
    /// The GPU cannot be partitioned.
    #[default]
    Unsupported,
    /// Partitioning is possible but off.
    Disabled,
    /// The GPU is partitioned into instances.
    Enabled,
}

/// One MIG GPU instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigInstance {
    /// `MIG-...` uuid.
    pub uuid: String,
    /// Profile, e.g. `1g.10gb`, `3g.40gb`.
    pub profile: String,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Streaming multiprocessors.
    pub sm_count: u32,
}

/// NVLinks from one GPU to a peer GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvLink {
    /// Peer GPU uuid.
    pub peer: String,
    /// Number of links (NV12, NV18...).
    pub links: u32,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// MAC address.
    pub mac: String,
    /// Link speed in Mb/s, when the driver reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u64>,
    /// Whether the link is up.
    pub link_up: bool,
    /// NUMA node it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// PCI bus id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    /// The PCIe switch it sits behind, to pair it with GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie_switch: Option<String>,
    /// RDMA device (e.g. `mlx5_0`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma_device: Option<String>,
    /// SR-IOV virtual functions: configured / supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov: Option<Sriov>,
}

/// A device other than a GPU or NIC, as CDI names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// CDI kind, `vendor.com/class` (e.g. `example.com/fpga`).
    pub kind: String,
    /// Device name within the kind (the CDI spec's `devices[].name`).
    pub name: String,
    /// NUMA node it is attached to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
}

impl Device {
    /// The qualified CDI name, `kind=name`.
    pub fn qualified(&self) -> String {
        format!("{}={}", self.kind, self.name)
    }
}

/// Whether `kind` is a CDI device kind, `vendor.com/class`: a vendor that
/// is a DNS name (lowercase letters, digits, `-` and `.`, with a dot) and
/// a class of 1 to 63 letters, digits, `-`, `_` and `.`.
pub fn valid_cdi_kind(kind: &str) -> bool {
    let Some((vendor, class)) = kind.split_once('/') else {
        return false;
    };
    let vendor_ok = vendor.contains('.')
        && !vendor.starts_with(['.', '-'])
        && !vendor.ends_with(['.', '-'])
        && vendor
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let class_ok = !class.is_empty()
        && class.len() <= 63
        && class
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    vendor_ok && class_ok
}

/// SR-IOV capability of a NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sriov {
    /// VFs configured.
    pub num_vfs: u32,
    /// VFs supported.
    pub total_vfs: u32,
}

impl Inventory {
    /// All NUMA nodes, in package order.
    pub fn numa_nodes(&self) -> impl Iterator<Item = &NumaNode> {
        self.packages.iter().flat_map(|p| p.numa_nodes.iter())
    }

    /// All cores.
    pub fn cores(&self) -> impl Iterator<Item = &Core> {
        self.numa_nodes().flat_map(|n| n.cores.iter())
    }

    /// Number of cores.
    pub fn core_count(&self) -> usize {
        self.cores().count()
    }

    /// Number of PUs (hardware threads).
    pub fn pu_count(&self) -> usize {
        self.cores().map(|c| c.pus.len()).sum()
    }

    /// Total memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.numa_nodes().map(|n| n.memory_bytes).sum()
    }

    /// GPUs grouped into NVLink islands: sets of GPU indexes connected by
    /// NVLink, directly or through peers. GPUs without links are islands of one.
    pub fn nvlink_islands(&self) -> Vec<Vec<u32>> {
        let n = self.gpus.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], i: usize) -> usize {
            let mut r = i;
            while p[r] != r {
                r = p[r];
            }
            let mut i = i;
            while p[i] != r {
                let next = p[i];
                p[i] = r;
                i = next;
            }
            r
        }
        for (i, g) in self.gpus.iter().enumerate() {
            for l in &g.nvlinks {
                if let Some(j) = self.gpus.iter().position(|o| o.uuid == l.peer) {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
        let mut groups: std::collections::BTreeMap<usize, Vec<u32>> = Default::default();
        for i in 0..n {
            let r = find(&mut parent, i);
            groups.entry(r).or_default().push(self.gpus[i].index);
        }
        let mut out: Vec<Vec<u32>> = groups.into_values().collect();
        out.sort();
        out
    }
}
