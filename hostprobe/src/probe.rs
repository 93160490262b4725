//! The whole-host probe: hwloc for the CPU tree, NVML for GPUs, sysfs for
//! NICs and huge pages, joined by PCI bus id.
//!
//! Never fails and never panics: a backend that cannot run leaves a note
//! in [`Inventory::probe_notes`], and when hwloc itself fails the CPU tree
//! comes from `/proc/cpuinfo` and `/proc/meminfo`.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::inventory::{Core, INVENTORY_VERSION, Inventory, NumaNode, Package};
use crate::{hwloc, nvml, sysfs};

/// PCI bus id -> (NUMA node, PCIe switch), from [`hwloc::pci_numa_map`].
type PciMap = HashMap<String, (Option<u32>, Option<String>)>;

/// Probes this machine. See [`probe_timed`].
pub fn probe() -> Inventory {
    probe_timed().0
}

/// Probes this machine and says how long each backend took (`hwloc`,
/// `nvml`, `sysfs`, in that order).
///
/// - hwloc: the CPU tree and the PCI locality map. On failure, a note and
///   [`inventory_from_proc`] (one package, one NUMA node).
/// - NVML: GPUs, with `numa_node` and `pcie_switch` joined from the hwloc
///   map by bus id (NUMA node from sysfs when hwloc has none).
/// - sysfs: NICs (`numa_node` from sysfs, else the hwloc map;
///   `pcie_switch` from the map), and huge pages for NUMA nodes hwloc
///   gave none.
pub fn probe_timed() -> (Inventory, Vec<(&'static str, Duration)>) {
    let sys = Path::new("/sys");
    let mut times = Vec::with_capacity(3);
    let mut notes = Vec::new();

    let t = Instant::now();
    let hw = catch_unwind(hwloc::probe_host).unwrap_or_else(|_| {
        Err(hwloc::HwlocError::Host {
            step: "probe",
            reason: "panicked".to_string(),
        })
    });
    let (mut inv, map): (Inventory, PciMap) = match hw {
        Ok((topo, inv)) => {
            let map = catch_unwind(AssertUnwindSafe(|| hwloc::pci_numa_map(&topo))).unwrap_or_else(
                |_| {
                    notes.push("hwloc: PCI locality map failed; devices unplaced".to_string());
                    HashMap::new()
                },
            );
            (inv, map)
        }
        Err(e) => {
            tracing::warn!(error = %e, "hwloc probe failed; using /proc");
            notes.push(format!("hwloc: {e}; CPU tree from /proc/cpuinfo"));
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
            (inventory_from_proc(&cpuinfo, &meminfo), HashMap::new())
        }
    };
    times.push(("hwloc", t.elapsed()));

    let t = Instant::now();
    let mut gpus =
        catch_unwind(AssertUnwindSafe(|| nvml::probe_gpus(&mut notes))).unwrap_or_else(|_| {
            notes.push("nvml: probe panicked: no GPUs".to_string());
            Vec::new()
        });
    for gpu in &mut gpus {
        let (numa, switch) = map.get(&gpu.pci_bus_id).cloned().unwrap_or_default();
        gpu.numa_node = numa.or_else(|| sysfs::pci_numa_node_at(sys, &gpu.pci_bus_id));
        gpu.pcie_switch = switch;
    }
    times.push(("nvml", t.elapsed()));

    let t = Instant::now();
    let mut nics = sysfs::probe_nics_at(sys);
    for nic in &mut nics {
        let (numa, switch) = nic
            .pci_bus_id
            .as_ref()
            .and_then(|b| map.get(b))
            .cloned()
            .unwrap_or_default();
        nic.numa_node = nic.numa_node.or(numa);
        nic.pcie_switch = switch;
    }
    if nics.is_empty() {
        notes.push("sysfs: no network interface with a device".to_string());
    }
    for pkg in &mut inv.packages {
        for node in &mut pkg.numa_nodes {
            if node.hugepages.is_empty() {
                node.hugepages = sysfs::hugepages_at(sys, node.id);
            }
        }
    }
    times.push(("sysfs", t.elapsed()));

    inv.version = INVENTORY_VERSION;
    inv.source = "probe".to_string();
    inv.hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    inv.gpus = gpus;
    inv.nics = nics;
    inv.probe_notes.extend(notes);
    (inv, times)
}

/// A rough CPU tree from the text of `/proc/cpuinfo` and `/proc/meminfo`,
/// for when hwloc cannot run: one package (the first `model name`), one
/// NUMA node 0 with `MemTotal`, and cores grouped by (`physical id`,
/// `core id`) when the file has them, else one core per processor. With
/// no processors listed, `available_parallelism` PUs numbered from 0.
pub fn inventory_from_proc(cpuinfo: &str, meminfo: &str) -> Inventory {
    let mut model = None;
    // (physical id, core id) or (processor, MAX) -> PUs, in first-seen order.
    let mut groups: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
    let mut order: Vec<(u32, u32)> = Vec::new();
    for block in cpuinfo.split("\n\n") {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        let Some(pu) = field("processor").and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if model.is_none() {
            model = field("model name").filter(|m| !m.is_empty());
        }
        let phys = field("physical id").and_then(|v| v.parse::<u32>().ok());
        let core = field("core id").and_then(|v| v.parse::<u32>().ok());
        let key = match (phys, core) {
            (Some(p), Some(c)) => (p, c),
            (None, Some(c)) => (0, c),
            _ => (pu, u32::MAX),
        };
        if !groups.contains_key(&key) {
            order.push(key);
        }
        groups.entry(key).or_default().push(pu);
    }
    let mut cores: Vec<Core> = order
        .iter()
        .zip(0u32..)
        .filter_map(|(key, id)| {
            let mut pus = groups.remove(key)?;
            pus.sort_unstable();
            Some(Core { id, pus })
        })
        .collect();
    if cores.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores = (0..u32::try_from(n).unwrap_or(1))
            .map(|i| Core {
                id: i,
                pus: vec![i],
            })
            .collect();
    }
    let memory_bytes = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024));
    Inventory {
        version: INVENTORY_VERSION,
        hostname: String::new(),
        source: "probe".to_string(),
        spec_sheet: None,
        packages: vec![Package {
            id: 0,
            model,
            numa_nodes: vec![NumaNode {
                id: 0,
                memory_bytes,
                hugepages: Vec::new(),
                cores,
            }],
            caches: Vec::new(),
        }],
        gpus: Vec::new(),
        nics: Vec::new(),
        devices: Vec::new(),
        probe_notes: Vec::new(),
    }
}
