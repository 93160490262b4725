//! The hwloc probe: CPU packages, NUMA nodes, cores, PUs and caches from an
//! hwloc topology (the real host, a synthetic description, or an XML file
//! written by `lstopo --of xml`), plus the PCI locality map that joins GPUs
//! and NICs to NUMA nodes and PCIe switches.
//!
//! hwlocality asserts on some inputs it considers impossible; every load
//! here runs under `catch_unwind`, so a bad input is an [`HwlocError`],
//! never a panic that escapes.

use std::collections::{BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use hwlocality::Topology;
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::object::TopologyObject;
use hwlocality::object::attributes::{ObjectAttributes, UpstreamAttributes};
use hwlocality::object::types::{BridgeType, CacheType, ObjectType};
use hwlocality::topology::builder::TypeFilter;

use crate::inventory::{Cache, Core, Hugepages, INVENTORY_VERSION, Inventory, NumaNode, Package};

/// Why an hwloc topology could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HwlocError {
    /// hwloc rejected a synthetic topology description.
    #[error("bad synthetic topology {desc:?}: {reason}")]
    Synthetic {
        /// The description as given.
        desc: String,
        /// What hwloc (or hwlocality) said.
        reason: String,
    },
    /// An XML topology file could not be read or parsed.
    #[error("cannot load hwloc XML {}: {reason}", path.display())]
    Xml {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Discovering the host topology failed.
    #[error("hwloc host discovery failed at {step}: {reason}")]
    Host {
        /// The step that failed.
        step: &'static str,
        /// What hwloc (or hwlocality) said.
        reason: String,
    },
}

/// Runs `f`, turning its error, or a panic inside hwlocality, into `err(message)`.
fn guarded<T>(
    err: impl FnOnce(String) -> HwlocError,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, HwlocError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(err),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(err(format!("hwlocality panicked: {msg}")))
        }
    }
}

/// Discovers the real host topology, with important I/O objects (PCI
/// devices, bridges on their path, OS devices) kept for [`pci_numa_map`],
/// and converts it (source `probe`).
pub fn probe_host() -> Result<(Topology, Inventory), HwlocError> {
    let host = |step| move |reason| HwlocError::Host { step, reason };
    let topo = guarded(host("build"), || {
        Topology::builder()
            .with_io_type_filter(TypeFilter::KeepImportant)
            .map_err(|e| format!("I/O type filter: {e}"))?
            .build()
            .map_err(|e| e.to_string())
    })?;
    let inv = guarded(host("convert"), || Ok(from_topology(&topo, "probe")))?;
    Ok((topo, inv))
}

/// Builds the inventory of a synthetic topology such as
/// `Package:2 NUMANode:2 Core:8 PU:2` (source `synthetic:<desc>`).
/// Synthetic topologies have no memory sizes unless the description gives them.
pub fn from_synthetic(desc: &str) -> Result<Inventory, HwlocError> {
    let bad = |reason| HwlocError::Synthetic {
        desc: desc.to_string(),
        reason,
    };
    guarded(bad, || {
        let topo = Topology::builder()
            .from_synthetic(desc)
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())?;
        Ok(from_topology(&topo, &format!("synthetic:{desc}")))
    })
}

/// Builds the inventory of an hwloc XML file (`lstopo --of xml`), source
/// `xml:<path>`.
pub fn from_xml_file(path: &Path) -> Result<Inventory, HwlocError> {
    let bad = |reason| HwlocError::Xml {
        path: path.to_path_buf(),
        reason,
    };
    guarded(bad, || {
        // hwloc only says "invalid"; name the real cause when it is the file.
        std::fs::File::open(path).map_err(|e| e.to_string())?;
        let topo = Topology::builder()
            .from_xml_file(path)
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())?;
        Ok(from_topology(&topo, &format!("xml:{}", path.display())))
    })
}

/// A core on its way into the tree.
struct CoreRec {
    id: u32,
    pus: Vec<u32>,
    cpuset: Option<CpuSet>,
    package: Option<usize>,
    numa: usize,
}

/// A NUMA node on its way into the tree.
struct NumaRec {
    node: NumaNode,
    cpuset: Option<CpuSet>,
    package: Option<usize>,
    /// The package it lies in, by ancestry or cpuset.
    hint: Option<usize>,
}

/// A package as hwloc has it.
struct PkgRec {
    id: u32,
    model: Option<String>,
    gp: u64,
    cpuset: Option<CpuSet>,
}

/// Converts an hwloc topology into an inventory tree: packages -> NUMA
/// nodes -> cores -> PUs, with caches per package.
///
/// A core goes to the NUMA node whose cpuset contains its own (the
/// smallest such node, so memory-only nodes spanning many cores lose to the
/// local one). A PU without a Core object becomes a core of its own.
/// When the machine has no Package objects, or a NUMA node's cores lie in
/// more than one package, the tree has one package (id 0, or the lowest
/// package id) holding all NUMA nodes. NUMA nodes without cores go to the
/// package they lie in, else the first package their cpuset touches, else
/// the first. Huge pages are hwloc's page types other than the base page.
/// `version` is [`INVENTORY_VERSION`]; `hostname` is empty.
pub fn from_topology(topo: &Topology, source: &str) -> Inventory {
    let pkgs: Vec<PkgRec> = topo
        .objects_with_type(ObjectType::Package)
        .map(|p| PkgRec {
            id: os_or_logical(p),
            model: p
                .info("CPUModel")
                .map(|m| m.to_string_lossy().trim().to_string())
                .filter(|m| !m.is_empty()),
            gp: p.global_persistent_index(),
            cpuset: p.cpuset().map(|c| c.clone_target()),
        })
        .collect();
    let package_of = |obj: &TopologyObject| -> Option<usize> {
        if let Some(p) = obj.first_ancestor_with_type(ObjectType::Package) {
            let gp = p.global_persistent_index();
            return pkgs.iter().position(|r| r.gp == gp);
        }
        let set = obj.cpuset()?;
        if set.is_empty() {
            return None;
        }
        let mut within = pkgs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.cpuset.as_ref().is_some_and(|c| c.includes(&*set)));
        match (within.next(), within.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    };

    // NUMA nodes.
    let mut numas: Vec<NumaRec> = topo
        .objects_with_type(ObjectType::NUMANode)
        .map(|n| NumaRec {
            node: NumaNode {
                id: os_or_logical(n),
                memory_bytes: numa_memory(n),
                hugepages: numa_hugepages(n),
                cores: Vec::new(),
            },
            cpuset: n.cpuset().map(|c| c.clone_target()),
            package: None,
            hint: package_of(n),
        })
        .collect();

    // Cores, with their PUs; PUs outside any Core become cores of their own.
    let core_objs: Vec<&TopologyObject> = topo.objects_with_type(ObjectType::Core).collect();
    let mut cores: Vec<CoreRec> = core_objs
        .iter()
        .map(|c| CoreRec {
            id: u32::try_from(c.logical_index()).unwrap_or(u32::MAX),
            pus: Vec::new(),
            cpuset: c.cpuset().map(|s| s.clone_target()),
            package: package_of(c),
            numa: 0,
        })
        .collect();
    let mut next_id = u32::try_from(cores.len()).unwrap_or(u32::MAX);
    for pu in topo.objects_with_type(ObjectType::PU) {
        let os = os_or_logical(pu);
        let owner = pu.first_ancestor_with_type(ObjectType::Core).and_then(|c| {
            let gp = c.global_persistent_index();
            core_objs
                .iter()
                .position(|o| o.global_persistent_index() == gp)
        });
        match owner {
            Some(i) => {
                if let Some(c) = cores.get_mut(i) {
                    c.pus.push(os);
                }
            }
            None => {
                cores.push(CoreRec {
                    id: next_id,
                    pus: vec![os],
                    cpuset: pu.cpuset().map(|s| s.clone_target()),
                    package: package_of(pu),
                    numa: 0,
                });
                next_id = next_id.saturating_add(1);
            }
        }
    }
    cores.retain(|c| !c.pus.is_empty());

    // Core -> NUMA node: the smallest node whose cpuset holds the core.
    if numas.is_empty() {
        numas.push(NumaRec {
            node: NumaNode {
                id: 0,
                memory_bytes: topo.root_object().total_memory(),
                hugepages: Vec::new(),
                cores: Vec::new(),
            },
            cpuset: None,
            package: None,
            hint: None,
        });
    }
    for core in &mut cores {
        let best = core
            .cpuset
            .as_ref()
            .filter(|s| !s.is_empty())
            .and_then(|cs| {
                numas
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| {
                        let ns = n.cpuset.as_ref()?;
                        ns.includes(cs)
                            .then(|| (ns.weight().unwrap_or(usize::MAX), n.node.id, i))
                    })
                    .min()
            });
        core.numa = best.map_or_else(
            || {
                tracing::warn!(core = core.id, "hwloc: core in no NUMA node's cpuset");
                0
            },
            |(_, _, i)| i,
        );
    }

    // NUMA node -> package; decide whether the per-package tree holds.
    let mut collapse = pkgs.is_empty() || cores.iter().any(|c| c.package.is_none());
    if !collapse {
        for (i, numa) in numas.iter_mut().enumerate() {
            let of_cores: BTreeSet<usize> = cores
                .iter()
                .filter(|c| c.numa == i)
                .filter_map(|c| c.package)
                .collect();
            numa.package = match of_cores.len() {
                0 => None,
                1 => of_cores.first().copied(),
                _ => {
                    tracing::info!(numa = numa.node.id, "hwloc: NUMA node spans packages");
                    collapse = true;
                    break;
                }
            };
        }
    }
    if !collapse {
        for numa in numas.iter_mut().filter(|n| n.package.is_none()) {
            let by_touch = numa.cpuset.as_ref().and_then(|ns| {
                pkgs.iter()
                    .position(|p| p.cpuset.as_ref().is_some_and(|c| c.intersects(ns)))
            });
            numa.package = Some(numa.hint.or(by_touch).unwrap_or(0));
        }
    }

    // Caches, per package.
    let mut caches: Vec<(Option<usize>, Cache)> = Vec::new();
    for obj in topo
        .normal_objects()
        .filter(|o| o.object_type().is_cpu_cache())
    {
        if let Some(cache) = cache_of(obj) {
            caches.push((package_of(obj), cache));
        }
    }

    // Assemble.
    for core in cores {
        let mut pus = core.pus;
        pus.sort_unstable();
        pus.dedup();
        if let Some(n) = numas.get_mut(core.numa) {
            n.node.cores.push(Core { id: core.id, pus });
        }
    }
    let mut packages: Vec<Package> = if collapse {
        let first = pkgs.first().and_then(|p| p.model.clone());
        let model = first.filter(|m| pkgs.iter().all(|p| p.model.as_ref() == Some(m)));
        vec![Package {
            id: pkgs.iter().map(|p| p.id).min().unwrap_or(0),
            model,
            numa_nodes: numas.into_iter().map(|n| n.node).collect(),
            caches: caches.into_iter().map(|(_, c)| c).collect(),
        }]
    } else {
        let mut out: Vec<Package> = pkgs
            .iter()
            .map(|p| Package {
                id: p.id,
                model: p.model.clone(),
                numa_nodes: Vec::new(),
                caches: Vec::new(),
            })
            .collect();
        for n in numas {
            let i = n.package.unwrap_or(0);
            if let Some(p) = out.get_mut(i) {
                p.numa_nodes.push(n.node);
            }
        }
        for (pkg, c) in caches {
            if let Some(p) = out.get_mut(pkg.unwrap_or(0)) {
                p.caches.push(c);
            }
        }
        out
    };
    for p in &mut packages {
        for n in &mut p.numa_nodes {
            n.cores.sort_by_key(|c| c.id);
        }
        p.numa_nodes.sort_by_key(|n| n.id);
        p.caches.sort_by(|a, b| {
            (a.level, &a.kind, a.pus.first()).cmp(&(b.level, &b.kind, b.pus.first()))
        });
    }
    packages.sort_by_key(|p| p.id);

    Inventory {
        version: INVENTORY_VERSION,
        hostname: String::new(),
        source: source.to_string(),
        spec_sheet: None,
        packages,
        gpus: Vec::new(),
        nics: Vec::new(),
        devices: Vec::new(),
        probe_notes: Vec::new(),
    }
}

/// One cache object, or `None` when its cpuset is missing or infinite.
fn cache_of(obj: &TopologyObject) -> Option<Cache> {
    let Some(ObjectAttributes::Cache(a)) = obj.attributes() else {
        return None;
    };
    let kind = match a.cache_type() {
        CacheType::Data => "data",
        CacheType::Instruction => "instruction",
        _ => "unified",
    };
    Some(Cache {
        level: u8::try_from(a.depth()).unwrap_or(u8::MAX),
        kind: kind.to_string(),
        size_bytes: a.size().map_or(0, |s| s.get()),
        pus: set_members(&*obj.cpuset()?)?,
    })
}

/// The indexes set in a finite cpuset, as `u32`s.
fn set_members(set: &CpuSet) -> Option<Vec<u32>> {
    set.weight()?;
    Some(
        set.iter_set()
            .filter_map(|i| u32::try_from(usize::from(i)).ok())
            .collect(),
    )
}

/// An object's OS index, else its logical index.
fn os_or_logical(obj: &TopologyObject) -> u32 {
    let i = obj.os_index().unwrap_or_else(|| obj.logical_index());
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// Local memory of a NUMA node object, 0 when unknown.
fn numa_memory(obj: &TopologyObject) -> u64 {
    match obj.attributes() {
        Some(ObjectAttributes::NUMANode(a)) => a.local_memory().map_or(0, |m| m.get()),
        _ => 0,
    }
}

/// Huge page pools of a NUMA node object: every page type after the first
/// (hwloc lists the base page first), sizes hwloc knows but has no pages
/// of included with a count of 0.
fn numa_hugepages(obj: &TopologyObject) -> Vec<Hugepages> {
    let Some(ObjectAttributes::NUMANode(a)) = obj.attributes() else {
        return Vec::new();
    };
    let mut out: Vec<Hugepages> = a
        .page_types()
        .iter()
        .skip(1)
        .filter_map(|pt| {
            // hwlocality asserts sizes are non-zero; an odd XML file may disagree.
            let size = catch_unwind(AssertUnwindSafe(|| pt.size().get())).ok()?;
            Some(Hugepages {
                size_bytes: size,
                count: pt.count(),
            })
        })
        .collect();
    out.sort_by_key(|h| h.size_bytes);
    out
}

/// PCI locality of every PCI device in `topo` (which must have been loaded
/// with I/O objects, as [`probe_host`] does), by lowercase bus id
/// `dddd:bb:dd.f`: the local NUMA node's OS index (when the device's
/// nearest CPU-side object has exactly one) and the PCIe switch it sits
/// behind.
///
/// The switch is named by the bus id of the bridge above the device's own
/// port: for a device behind a PCIe switch that is the switch's upstream
/// port, shared by every device under the switch (the device's own
/// downstream port is never shared, so it could not pair a GPU with a
/// NIC). A device directly on a root port gets the root port. Host bridges
/// are never named.
pub fn pci_numa_map(topo: &Topology) -> HashMap<String, (Option<u32>, Option<String>)> {
    let mut out = HashMap::new();
    for dev in topo.objects_with_type(ObjectType::PCIDevice) {
        let Some(ObjectAttributes::PCIDevice(pci)) = dev.attributes() else {
            continue;
        };
        let id = bus_id(
            u32::from(pci.domain()),
            pci.bus_id(),
            pci.bus_device(),
            pci.function(),
        );
        let numa = dev
            .first_non_io_ancestor()
            .and_then(|a| a.nodeset())
            .filter(|ns| ns.weight() == Some(1))
            .and_then(|ns| ns.first_set())
            .and_then(|i| u32::try_from(usize::from(i)).ok());
        let bridges: Vec<String> = dev
            .ancestors()
            .take_while(|a| a.object_type().is_io())
            .filter_map(pci_bridge_id)
            .collect();
        let switch = bridges.get(1).or(bridges.first()).cloned();
        out.insert(id, (numa, switch));
    }
    out
}

/// The bus id of a bridge with a PCI upstream side (not a host bridge).
fn pci_bridge_id(obj: &TopologyObject) -> Option<String> {
    let Some(ObjectAttributes::Bridge(b)) = obj.attributes() else {
        return None;
    };
    if b.upstream_type() != BridgeType::PCI {
        return None;
    }
    match b.upstream_attributes()? {
        UpstreamAttributes::PCI(p) => Some(bus_id(
            u32::from(p.domain()),
            p.bus_id(),
            p.bus_device(),
            p.function(),
        )),
    }
}

/// `dddd:bb:dd.f`, lowercase.
fn bus_id(domain: u32, bus: u8, dev: u8, func: u8) -> String {
    format!("{domain:04x}:{bus:02x}:{dev:02x}.{func:x}")
}
