//! A readable tree of an inventory, for `berth probe` and `berth node show`.

use std::fmt::Write;

use crate::inventory::{Device, Gpu, Inventory, MigMode, Nic};

/// `0-3,8,10-11` from a list of numbers.
pub fn ranges(xs: &[u32]) -> String {
    let mut v = xs.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        while i + 1 < v.len() && v[i + 1] == v[i] + 1 {
            i += 1;
        }
        out.push(if v[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", v[i])
        });
        i += 1;
    }
    out.join(",")
}

/// Bytes for people: `80 GiB`, `1.5 TiB`.
pub fn bytes(b: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < U.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", U[u])
    } else {
        format!("{v:.1} {}", U[u])
    }
}

fn gpu_line(inv: &Inventory, g: &Gpu) -> String {
    let mut s = format!(
        "gpu {}: {}, {}, cc {}, {}",
        g.index,
        g.model,
        bytes(g.memory_bytes),
        g.compute_capability,
        g.pci_bus_id
    );
    if let Some(sw) = &g.pcie_switch {
        let _ = write!(s, ", switch {sw}");
    }
    match g.mig.mode {
        MigMode::Enabled => {
            let profiles: Vec<&str> = g.mig.instances.iter().map(|m| m.profile.as_str()).collect();
            let _ = write!(
                s,
                ", MIG: {}",
                if profiles.is_empty() {
                    "enabled, no instances".into()
                } else {
                    profiles.join(" + ")
                }
            );
        }
        MigMode::Disabled => s.push_str(", MIG off"),
        MigMode::Unsupported => {}
    }
    if !g.nvlinks.is_empty() {
        let peers: Vec<String> = g
            .nvlinks
            .iter()
            .map(|l| {
                let idx = inv
                    .gpus
                    .iter()
                    .find(|o| o.uuid == l.peer)
                    .map(|o| o.index.to_string())
                    .unwrap_or_else(|| l.peer.clone());
                format!("{idx}(NV{})", l.links)
            })
            .collect();
        let _ = write!(s, ", NVLink to {}", peers.join(" "));
    }
    s
}

fn nic_line(inv: &Inventory, n: &Nic) -> String {
    let speed = n.speed_mbps.map(|m| {
        if m % 1000 == 0 {
            format!("{} Gb/s", m / 1000)
        } else {
            format!("{m} Mb/s")
        }
    });
    let mut s = format!(
        "nic {}: {}, {}, {}",
        n.name,
        speed.unwrap_or_else(|| "speed unknown".into()),
        if n.link_up { "up" } else { "DOWN" },
        n.mac
    );
    if let Some(r) = &n.rdma_device {
        let _ = write!(s, ", rdma {r}");
    }
    if let Some(b) = &n.pci_bus_id {
        let _ = write!(s, ", {b}");
    }
    if let Some(v) = &n.sriov {
        let _ = write!(s, ", SR-IOV {}/{}", v.num_vfs, v.total_vfs);
    }
    if let Some(sw) = &n.pcie_switch {
        let paired: Vec<String> = inv
            .gpus
            .iter()
            .filter(|g| g.pcie_switch.as_ref() == Some(sw))
            .map(|g| g.index.to_string())
            .collect();
        if !paired.is_empty() {
            let _ = write!(s, ", shares PCIe switch {sw} with gpu {}", paired.join(","));
        }
    }
    s
}

/// The whole tree as text.
pub fn tree(inv: &Inventory) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} ({}): {} packages, {} NUMA nodes, {} cores / {} PUs, {}, {} GPUs, {} NICs",
        inv.hostname,
        inv.source,
        inv.packages.len(),
        inv.numa_nodes().count(),
        inv.core_count(),
        inv.pu_count(),
        bytes(inv.memory_bytes()),
        inv.gpus.len(),
        inv.nics.len()
    );
    if let Some(sheet) = &inv.spec_sheet {
        let _ = writeln!(o, "spec sheet: {sheet}");
    }
    for p in &inv.packages {
        let caches: Vec<String> = p
            .caches
            .iter()
            .filter(|c| c.level >= 3)
            .map(|c| format!("L{} {}", c.level, bytes(c.size_bytes)))
            .collect();
        let _ = writeln!(
            o,
            "package {}: {}{}",
            p.id,
            p.model.as_deref().unwrap_or("unknown CPU"),
            if caches.is_empty() {
                String::new()
            } else {
                format!(", {}", caches.join(", "))
            }
        );
        for n in &p.numa_nodes {
            let core_ids: Vec<u32> = n.cores.iter().map(|c| c.id).collect();
            let pus: Vec<u32> = n.cores.iter().flat_map(|c| c.pus.iter().copied()).collect();
            let huge: Vec<String> = n
                .hugepages
                .iter()
                .filter(|h| h.count > 0)
                .map(|h| format!("{}x{}", h.count, bytes(h.size_bytes)))
                .collect();
            let _ = writeln!(
                o,
                "  numa {}: {}, {} cores ({}), PUs {}{}",
                n.id,
                bytes(n.memory_bytes),
                n.cores.len(),
                ranges(&core_ids),
                ranges(&pus),
                if huge.is_empty() {
                    String::new()
                } else {
                    format!(", hugepages {}", huge.join(" "))
                }
            );
            for g in inv.gpus.iter().filter(|g| g.numa_node == Some(n.id)) {
                let _ = writeln!(o, "    {}", gpu_line(inv, g));
            }
            for nic in inv.nics.iter().filter(|x| x.numa_node == Some(n.id)) {
                let _ = writeln!(o, "    {}", nic_line(inv, nic));
            }
            for d in inv.devices.iter().filter(|d| d.numa_node == Some(n.id)) {
                let _ = writeln!(o, "    device {}", d.qualified());
            }
        }
    }
    let loose_gpus: Vec<&Gpu> = inv.gpus.iter().filter(|g| g.numa_node.is_none()).collect();
    let loose_nics: Vec<&Nic> = inv.nics.iter().filter(|n| n.numa_node.is_none()).collect();
    let loose_devices: Vec<&Device> = inv
        .devices
        .iter()
        .filter(|d| d.numa_node.is_none())
        .collect();
    if !loose_gpus.is_empty() || !loose_nics.is_empty() || !loose_devices.is_empty() {
        let _ = writeln!(o, "devices with no NUMA affinity:");
        for g in loose_gpus {
            let _ = writeln!(o, "  {}", gpu_line(inv, g));
        }
        for n in loose_nics {
            let _ = writeln!(o, "  {}", nic_line(inv, n));
        }
        for d in loose_devices {
            let _ = writeln!(o, "  device {}", d.qualified());
        }
    }
    if !inv.gpus.is_empty() {
        let islands: Vec<String> = inv
            .nvlink_islands()
            .iter()
            .map(|i| format!("[{}]", ranges(i)))
            .collect();
        let _ = writeln!(o, "NVLink islands: {}", islands.join(" "));
    }
    for note in &inv.probe_notes {
        let _ = writeln!(o, "note: {note}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::load_fixture;

    #[test]
    fn ranges_compress() {
        assert_eq!(ranges(&[3, 0, 1, 2, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(ranges(&[]), "");
    }

    #[test]
    fn dgx_tree_shows_gpus_nics_and_islands() {
        let t = tree(&load_fixture("dgx-h100").unwrap());
        assert!(t.contains("112 cores / 224 PUs"), "{t}");
        assert!(
            t.contains("  numa 0: 1 TiB, 56 cores (0-55), PUs 0-55,112-167"),
            "{t}"
        );
        assert!(
            t.contains("gpu 0: NVIDIA H100 80GB HBM3, 80 GiB, cc 9.0"),
            "{t}"
        );
        assert!(t.contains("nic ibp24s0: 400 Gb/s, up"), "{t}");
        assert!(
            t.contains("shares PCIe switch 0000:15:00.0 with gpu 0"),
            "{t}"
        );
        assert!(t.contains("NVLink islands: [0-7]"), "{t}");
    }

    #[test]
    fn a100_pairs_are_two_islands_and_mig_shows() {
        assert!(
            tree(&load_fixture("a100-pcie-4x").unwrap()).contains("NVLink islands: [0-1] [2-3]")
        );
        let t = tree(&load_fixture("a100-mig").unwrap());
        assert!(
            t.contains("MIG: 3g.40gb + 2g.20gb + 1g.10gb + 1g.10gb"),
            "{t}"
        );
    }
}
