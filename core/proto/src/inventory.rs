//! The hardware inventory on the wire: [`berth_hostprobe::Inventory`] as
//! the typed `Inventory` message, and back. Decoding checks what the types
//! cannot (a cache level past 255, a MIG mode the sender left unset) and
//! names the field; the server then validates the tree as it would a
//! fixture file.

use berth_hostprobe as hw;

use crate::v1 as pb;

/// Why a wire inventory cannot become a [`hw::Inventory`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InventoryError {
    /// The field, as a path (`gpus[2].mig_mode`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn bad(field: String, message: impl Into<String>) -> InventoryError {
    InventoryError {
        field,
        message: message.into(),
    }
}

impl From<&hw::Inventory> for pb::Inventory {
    fn from(i: &hw::Inventory) -> Self {
        pb::Inventory {
            version: i.version,
            hostname: i.hostname.clone(),
            source: i.source.clone(),
            spec_sheet: i.spec_sheet.clone(),
            packages: i.packages.iter().map(package).collect(),
            gpus: i.gpus.iter().map(gpu).collect(),
            nics: i.nics.iter().map(nic).collect(),
            devices: i
                .devices
                .iter()
                .map(|d| pb::Device {
                    kind: d.kind.clone(),
                    name: d.name.clone(),
                    numa_node: d.numa_node,
                })
                .collect(),
            probe_notes: i.probe_notes.clone(),
        }
    }
}

fn package(p: &hw::Package) -> pb::CpuPackage {
    pb::CpuPackage {
        id: p.id,
        model: p.model.clone(),
        numa_nodes: p
            .numa_nodes
            .iter()
            .map(|n| pb::NumaNode {
                id: n.id,
                memory_bytes: n.memory_bytes,
                hugepages: n
                    .hugepages
                    .iter()
                    .map(|h| pb::Hugepages {
                        size_bytes: h.size_bytes,
                        count: h.count,
                    })
                    .collect(),
                cores: n
                    .cores
                    .iter()
                    .map(|c| pb::Core {
                        id: c.id,
                        pus: c.pus.clone(),
                    })
                    .collect(),
            })
            .collect(),
        caches: p
            .caches
            .iter()
            .map(|c| pb::Cache {
                level: c.level.into(),
                kind: c.kind.clone(),
                size_bytes: c.size_bytes,
                pus: c.pus.clone(),
            })
            .collect(),
    }
}

fn gpu(g: &hw::Gpu) -> pb::Gpu {
    let mode = match g.mig.mode {
        hw::MigMode::Unsupported => pb::MigMode::Unsupported,
        hw::MigMode::Disabled => pb::MigMode::Disabled,
        hw::MigMode::Enabled => pb::MigMode::Enabled,
    };
    pb::Gpu {
        index: g.index,
        uuid: g.uuid.clone(),
        model: g.model.clone(),
        memory_bytes: g.memory_bytes,
        compute_capability: g.compute_capability.clone(),
        pci_bus_id: g.pci_bus_id.clone(),
        numa_node: g.numa_node,
        pcie_switch: g.pcie_switch.clone(),
        mig_mode: mode as i32,
        mig_instances: g
            .mig
            .instances
            .iter()
            .map(|m| pb::MigInstance {
                uuid: m.uuid.clone(),
                profile: m.profile.clone(),
                memory_bytes: m.memory_bytes,
                sm_count: m.sm_count,
            })
            .collect(),
        nvlinks: g
            .nvlinks
            .iter()
            .map(|l| pb::NvLink {
                peer: l.peer.clone(),
                links: l.links,
            })
            .collect(),
    }
}

fn nic(n: &hw::Nic) -> pb::Nic {
    pb::Nic {
        name: n.name.clone(),
        mac: n.mac.clone(),
        speed_mbps: n.speed_mbps,
        link_up: n.link_up,
        numa_node: n.numa_node,
        pci_bus_id: n.pci_bus_id.clone(),
        pcie_switch: n.pcie_switch.clone(),
        rdma_device: n.rdma_device.clone(),
        sriov: n.sriov.as_ref().map(|s| pb::Sriov {
            num_vfs: s.num_vfs,
            total_vfs: s.total_vfs,
        }),
    }
}

impl TryFrom<pb::Inventory> for hw::Inventory {
    type Error = InventoryError;

    fn try_from(i: pb::Inventory) -> Result<Self, InventoryError> {
        let packages = i
            .packages
            .into_iter()
            .enumerate()
            .map(|(k, p)| from_package(k, p))
            .collect::<Result<_, _>>()?;
        let gpus = i
            .gpus
            .into_iter()
            .enumerate()
            .map(|(k, g)| from_gpu(k, g))
            .collect::<Result<_, _>>()?;
        Ok(hw::Inventory {
            version: i.version,
            hostname: i.hostname,
            source: i.source,
            spec_sheet: i.spec_sheet,
            packages,
            gpus,
            nics: i.nics.into_iter().map(from_nic).collect(),
            devices: i
                .devices
                .into_iter()
                .map(|d| hw::Device {
                    kind: d.kind,
                    name: d.name,
                    numa_node: d.numa_node,
                })
                .collect(),
            probe_notes: i.probe_notes,
        })
    }
}

fn from_package(k: usize, p: pb::CpuPackage) -> Result<hw::Package, InventoryError> {
    let caches = p
        .caches
        .into_iter()
        .enumerate()
        .map(|(c, cache)| {
            let level = u8::try_from(cache.level).map_err(|_| {
                bad(
                    format!("packages[{k}].caches[{c}].level"),
                    format!("{} is not a cache level", cache.level),
                )
            })?;
            Ok(hw::Cache {
                level,
                kind: cache.kind,
                size_bytes: cache.size_bytes,
                pus: cache.pus,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(hw::Package {
        id: p.id,
        model: p.model,
        numa_nodes: p
            .numa_nodes
            .into_iter()
            .map(|n| hw::NumaNode {
                id: n.id,
                memory_bytes: n.memory_bytes,
                hugepages: n
                    .hugepages
                    .into_iter()
                    .map(|h| hw::Hugepages {
                        size_bytes: h.size_bytes,
                        count: h.count,
                    })
                    .collect(),
                cores: n
                    .cores
                    .into_iter()
                    .map(|c| hw::Core {
                        id: c.id,
                        pus: c.pus,
                    })
                    .collect(),
            })
            .collect(),
        caches,
    })
}

fn from_gpu(k: usize, g: pb::Gpu) -> Result<hw::Gpu, InventoryError> {
    let mode = match pb::MigMode::try_from(g.mig_mode) {
        Ok(pb::MigMode::Unsupported) => hw::MigMode::Unsupported,
        Ok(pb::MigMode::Disabled) => hw::MigMode::Disabled,
        Ok(pb::MigMode::Enabled) => hw::MigMode::Enabled,
        Ok(pb::MigMode::Unspecified) | Err(_) => {
            return Err(bad(
                format!("gpus[{k}].mig_mode"),
                format!("{} is not a MIG mode this server knows", g.mig_mode),
            ));
        }
    };
    Ok(hw::Gpu {
        index: g.index,
        uuid: g.uuid,
        model: g.model,
        memory_bytes: g.memory_bytes,
        compute_capability: g.compute_capability,
        pci_bus_id: g.pci_bus_id,
        numa_node: g.numa_node,
        pcie_switch: g.pcie_switch,
        mig: hw::Mig {
            mode,
            instances: g
                .mig_instances
                .into_iter()
                .map(|m| hw::MigInstance {
                    uuid: m.uuid,
                    profile: m.profile,
                    memory_bytes: m.memory_bytes,
                    sm_count: m.sm_count,
                })
                .collect(),
        },
        nvlinks: g
            .nvlinks
            .into_iter()
            .map(|l| hw::NvLink {
                peer: l.peer,
                links: l.links,
            })
            .collect(),
    })
}

fn from_nic(n: pb::Nic) -> hw::Nic {
    hw::Nic {
        name: n.name,
        mac: n.mac,
        speed_mbps: n.speed_mbps,
        link_up: n.link_up,
        numa_node: n.numa_node,
        pci_bus_id: n.pci_bus_id,
        pcie_switch: n.pcie_switch,
        rdma_device: n.rdma_device,
        sriov: n.sriov.map(|s| hw::Sriov {
            num_vfs: s.num_vfs,
            total_vfs: s.total_vfs,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fixture survives the trip through the wire form unchanged.
    #[test]
    fn fixtures_round_trip() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../hostprobe/fixtures");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let inv = hw::parse_inventory(&text, &path.display().to_string()).unwrap();
            let wire = pb::Inventory::from(&inv);
            let bytes = prost::Message::encode_to_vec(&wire);
            let back = <pb::Inventory as prost::Message>::decode(&bytes[..]).unwrap();
            assert_eq!(
                hw::Inventory::try_from(back).unwrap(),
                inv,
                "{}",
                path.display()
            );
            seen += 1;
        }
        assert!(seen >= 3, "only {seen} fixtures in {dir}");
    }

    #[test]
    fn unset_mig_mode_and_wide_cache_level_are_named() {
        let mut wire = pb::Inventory {
            version: 1,
            gpus: vec![pb::Gpu::default()],
            ..Default::default()
        };
        let e = hw::Inventory::try_from(wire.clone()).unwrap_err();
        assert_eq!(e.field, "gpus[0].mig_mode");
        wire.gpus.clear();
        wire.packages = vec![pb::CpuPackage {
            caches: vec![pb::Cache {
                level: 300,
                ..Default::default()
            }],
            ..Default::default()
        }];
        let e = hw::Inventory::try_from(wire).unwrap_err();
        assert_eq!(e.field, "packages[0].caches[0].level");
        assert!(e.message.contains("300"), "{e}");
    }
}
