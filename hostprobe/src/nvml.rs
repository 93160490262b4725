//! The NVML probe: NVIDIA GPUs, their MIG instances and NVLink peers.
//!
//! The NVML library is loaded at run time; a machine without the NVIDIA
//! driver has no GPUs, which is a probe note, not an error. Every NVML
//! call may fail on its own; a failure leaves that field at a neutral
//! value and adds a note.

use std::collections::{BTreeMap, HashMap};

use nvml_wrapper::Device;
use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use crate::inventory::{Gpu, Mig, MigInstance, MigMode, NvLink};
use crate::sysfs::normalize_pci_bus_id;

/// NVML's `NVML_NVLINK_MAX_LINKS` (NVML 12): link indexes are `0..18`.
pub const NVML_NVLINK_MAX_LINKS: u32 = 18;

/// NVIDIA's PCI vendor id.
const NVIDIA_VENDOR: u32 = 0x10de;

/// What one GPU's active NVLinks lead to.
#[derive(Default)]
struct Links {
    /// Remote bus id -> links, for remotes that may be GPUs.
    remotes: BTreeMap<String, u32>,
    /// PCI device id (device << 16 | vendor) of each remote.
    remote_ids: HashMap<String, u32>,
}

/// The GPUs NVML sees, sorted by index. On a machine without the NVIDIA
/// driver, pushes a note (`nvml: NVIDIA driver library not found
/// (libnvidia-ml.so.1): no GPUs`) and returns nothing; never fails.
///
/// `numa_node` and `pcie_switch` are left `None` (the caller joins them
/// from hwloc by bus id). NVLink peers: each active link's remote PCI
/// device is matched to a GPU by bus id and links are counted per peer.
/// Links to an NVSwitch (a remote NVIDIA device that is not one of the
/// GPUs) put the GPU on the NVSwitch fabric: every such GPU gets a peer
/// entry for every other one, with its own NVSwitch link count.
pub fn probe_gpus(notes: &mut Vec<String>) -> Vec<Gpu> {
    let nvml = match Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            let note = init_note(&e);
            tracing::info!("{note}");
            notes.push(note);
            return Vec::new();
        }
    };
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!("nvml: cannot count devices: {e}: no GPUs"));
            return Vec::new();
        }
    };
    let mut gpus: Vec<(Gpu, Links)> = Vec::new();
    for i in 0..count {
        match nvml.device_by_index(i) {
            Ok(dev) => {
                if let Some(g) = read_gpu(&dev, i, notes) {
                    gpus.push(g);
                }
            }
            Err(e) => notes.push(format!("nvml: GPU {i}: cannot open: {e}")),
        }
    }
    if count == 0 {
        notes.push("nvml: driver loaded, 0 GPUs".to_string());
    }
    connect(gpus, notes)
}

/// The note for a failed `nvmlInit`.
fn init_note(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => {
            "nvml: NVIDIA driver library not found (libnvidia-ml.so.1): no GPUs".to_string()
        }
        NvmlError::DriverNotLoaded => "nvml: NVIDIA driver not loaded: no GPUs".to_string(),
        NvmlError::NoPermission => {
            "nvml: no permission to talk to the NVIDIA driver: no GPUs".to_string()
        }
        other => format!("nvml: init failed ({other}): no GPUs"),
    }
}

/// One GPU and its raw NVLink remotes; `None` (with a note) without a uuid.
fn read_gpu(dev: &Device<'_>, i: u32, notes: &mut Vec<String>) -> Option<(Gpu, Links)> {
    let uuid = match dev.uuid() {
        Ok(u) => u,
        Err(e) => {
            notes.push(format!("nvml: GPU {i}: no uuid ({e}), skipped"));
            return None;
        }
    };
    let mut field = |what: &str, e: NvmlError| notes.push(format!("nvml: GPU {i}: {what}: {e}"));
    let index = dev.index().unwrap_or(i);
    let model = dev.name().unwrap_or_else(|e| {
        field("name", e);
        "unknown".to_string()
    });
    let memory_bytes = dev.memory_info().map(|m| m.total).unwrap_or_else(|e| {
        field("memory", e);
        0
    });
    let compute_capability = dev
        .cuda_compute_capability()
        .map(|c| format!("{}.{}", c.major, c.minor))
        .unwrap_or_else(|e| {
            field("compute capability", e);
            "unknown".to_string()
        });
    let pci_bus_id = match dev.pci_info() {
        Ok(p) => normalize_pci_bus_id(&p.bus_id).unwrap_or_else(|| {
            notes.push(format!("nvml: GPU {i}: odd PCI bus id {:?}", p.bus_id));
            p.bus_id.to_lowercase()
        }),
        Err(e) => {
            notes.push(format!("nvml: GPU {i}: PCI info: {e}"));
            String::new()
        }
    };
    let mig = read_mig(dev, i, notes);
    let links = read_links(dev, i, notes);
    let gpu = Gpu {
        index,
        uuid,
        model,
        memory_bytes,
        compute_capability,
        pci_bus_id,
        numa_node: None,
        pcie_switch: None,
        mig,
        nvlinks: Vec::new(),
    };
    Some((gpu, links))
}

/// MIG mode and, when enabled, the MIG devices.
///
/// nvml-wrapper 0.13 exposes MIG *devices* (compute instances), not GPU
/// instance profiles: the profile is taken from the MIG device's name
/// (`... MIG 3g.40gb`), memory from its memory info and the SM count from
/// its attributes. A GPU instance split into several compute instances
/// shows as several entries.
fn read_mig(dev: &Device<'_>, i: u32, notes: &mut Vec<String>) -> Mig {
    let mode = match dev.mig_mode() {
        Ok(m) if m.current == 1 => MigMode::Enabled,
        Ok(_) => MigMode::Disabled,
        Err(NvmlError::NotSupported) => MigMode::Unsupported,
        Err(e) => {
            notes.push(format!("nvml: GPU {i}: MIG mode: {e}"));
            MigMode::Unsupported
        }
    };
    let mut instances = Vec::new();
    if mode == MigMode::Enabled {
        let max = dev.mig_device_count().unwrap_or_else(|e| {
            notes.push(format!("nvml: GPU {i}: MIG device count: {e}"));
            0
        });
        for j in 0..max {
            let mig = match dev.mig_device_by_index(j) {
                Ok(m) => m,
                // Slots are sparse: an unused one is NotFound / InvalidArg.
                Err(NvmlError::NotFound | NvmlError::InvalidArg) => continue,
                Err(e) => {
                    notes.push(format!("nvml: GPU {i}: MIG device {j}: {e}"));
                    continue;
                }
            };
            let Ok(uuid) = mig.uuid() else {
                notes.push(format!("nvml: GPU {i}: MIG device {j}: no uuid, skipped"));
                continue;
            };
            let name = mig.name().unwrap_or_default();
            instances.push(MigInstance {
                uuid,
                profile: mig_profile(&name),
                memory_bytes: mig.memory_info().map(|m| m.total).unwrap_or(0),
                sm_count: mig
                    .attributes()
                    .map(|a| a.multiprocessor_count)
                    .unwrap_or(0),
            });
        }
    }
    Mig { mode, instances }
}

/// `NVIDIA A100-SXM4-40GB MIG 1g.5gb` -> `1g.5gb`; the whole name otherwise.
fn mig_profile(name: &str) -> String {
    match name.rsplit_once("MIG ") {
        Some((_, p)) if !p.trim().is_empty() => p.trim().to_string(),
        _ if name.is_empty() => "unknown".to_string(),
        _ => name.to_string(),
    }
}

/// The remote PCI device of every active NVLink.
///
/// nvml-wrapper 0.13's `remote_device_type` writes its answer into a
/// temporary and always says `Unknown`, so NVSwitch links are recognised
/// by the remote not being one of the GPUs (see [`connect`]).
fn read_links(dev: &Device<'_>, i: u32, notes: &mut Vec<String>) -> Links {
    let mut links = Links::default();
    for l in 0..NVML_NVLINK_MAX_LINKS {
        let link = dev.link_wrapper_for(l);
        match link.is_active() {
            Ok(true) => {}
            Ok(false) => continue,
            // No NVLink on this GPU, or no link with this index: stop.
            Err(NvmlError::NotSupported | NvmlError::InvalidArg) => break,
            Err(e) => {
                notes.push(format!("nvml: GPU {i}: NVLink {l}: {e}"));
                continue;
            }
        }
        match link.remote_pci_info() {
            Ok(p) => {
                let id = normalize_pci_bus_id(&p.bus_id).unwrap_or_else(|| p.bus_id.to_lowercase());
                links.remote_ids.insert(id.clone(), p.pci_device_id);
                *links.remotes.entry(id).or_insert(0) += 1;
            }
            Err(e) => notes.push(format!("nvml: GPU {i}: NVLink {l} remote: {e}")),
        }
    }
    links
}

/// Turns raw link remotes into peer entries, NVSwitch fabric included.
fn connect(gpus: Vec<(Gpu, Links)>, notes: &mut Vec<String>) -> Vec<Gpu> {
    let by_bus: HashMap<String, String> = gpus
        .iter()
        .filter(|(g, _)| !g.pci_bus_id.is_empty())
        .map(|(g, _)| (g.pci_bus_id.clone(), g.uuid.clone()))
        .collect();
    // uuid -> NVSwitch link count.
    let mut fabric: Vec<(String, u32)> = Vec::new();
    let mut out: Vec<Gpu> = Vec::new();
    for (mut gpu, links) in gpus {
        let mut peers: BTreeMap<String, u32> = BTreeMap::new();
        let mut switch_links = 0u32;
        for (remote, n) in &links.remotes {
            match by_bus.get(remote) {
                Some(peer) if *peer != gpu.uuid => *peers.entry(peer.clone()).or_insert(0) += n,
                Some(_) => {}
                None => {
                    let id = links.remote_ids.get(remote).copied().unwrap_or(0);
                    if id & 0xffff == NVIDIA_VENDOR || id == 0 {
                        switch_links += n;
                    } else {
                        notes.push(format!(
                            "nvml: GPU {}: {n} NVLink(s) to non-NVIDIA device {remote} ignored",
                            gpu.index
                        ));
                    }
                }
            }
        }
        if switch_links > 0 {
            fabric.push((gpu.uuid.clone(), switch_links));
        }
        gpu.nvlinks = peers
            .into_iter()
            .map(|(peer, links)| NvLink { peer, links })
            .collect();
        out.push(gpu);
    }
    if !fabric.is_empty() {
        notes.push(format!(
            "nvml: {} GPU(s) on an NVSwitch fabric, connected pairwise",
            fabric.len()
        ));
    }
    for gpu in &mut out {
        let Some((_, n)) = fabric.iter().find(|(u, _)| *u == gpu.uuid) else {
            continue;
        };
        let n = *n;
        for (peer, _) in fabric.iter().filter(|(u, _)| *u != gpu.uuid) {
            match gpu.nvlinks.iter_mut().find(|l| l.peer == *peer) {
                Some(l) => l.links += n,
                None => gpu.nvlinks.push(NvLink {
                    peer: peer.clone(),
                    links: n,
                }),
            }
        }
        gpu.nvlinks.sort_by(|a, b| a.peer.cmp(&b.peer));
    }
    out.sort_by_key(|g| g.index);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, bus: &str) -> Gpu {
        Gpu {
            index,
            uuid: format!("GPU-{index}"),
            model: "test".into(),
            memory_bytes: 0,
            compute_capability: "9.0".into(),
            pci_bus_id: bus.into(),
            numa_node: None,
            pcie_switch: None,
            mig: Mig::default(),
            nvlinks: Vec::new(),
        }
    }

    fn links(remotes: &[(&str, u32, u32)]) -> Links {
        let mut l = Links::default();
        for (bus, n, id) in remotes {
            l.remotes.insert(bus.to_string(), *n);
            l.remote_ids.insert(bus.to_string(), *id);
        }
        l
    }

    #[test]
    fn direct_links_and_nvswitch_fabric() {
        let mut notes = Vec::new();
        let gpus = vec![
            (
                gpu(0, "0000:18:00.0"),
                links(&[("0000:2a:00.0", 4, 0x2330_10de)]),
            ),
            (
                gpu(1, "0000:2a:00.0"),
                links(&[("0000:18:00.0", 4, 0x2330_10de)]),
            ),
            (
                gpu(2, "0000:3a:00.0"),
                links(&[("0000:c1:00.0", 18, 0x22a3_10de)]),
            ),
            (
                gpu(3, "0000:4a:00.0"),
                links(&[("0000:c2:00.0", 18, 0x22a3_10de)]),
            ),
            (
                gpu(4, "0000:5a:00.0"),
                links(&[("0000:c3:00.0", 2, 0x1234_1014)]),
            ),
        ];
        let out = connect(gpus, &mut notes);
        assert_eq!(
            out[0].nvlinks,
            vec![NvLink {
                peer: "GPU-1".into(),
                links: 4
            }]
        );
        assert_eq!(
            out[2].nvlinks,
            vec![NvLink {
                peer: "GPU-3".into(),
                links: 18
            }]
        );
        assert_eq!(
            out[3].nvlinks,
            vec![NvLink {
                peer: "GPU-2".into(),
                links: 18
            }]
        );
        assert!(out[4].nvlinks.is_empty());
        assert!(notes.iter().any(|n| n.contains("NVSwitch")));
        assert!(notes.iter().any(|n| n.contains("non-NVIDIA")));
    }

    #[test]
    fn profiles() {
        assert_eq!(mig_profile("NVIDIA A100-SXM4-40GB MIG 1g.5gb"), "1g.5gb");
        assert_eq!(mig_profile("NVIDIA H100 MIG 1c.3g.40gb"), "1c.3g.40gb");
        assert_eq!(mig_profile(""), "unknown");
    }
}
