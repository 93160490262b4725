//! Semantic checks on an inventory: unique ids, references that resolve,
//! values in range. Errors are `(field path, message)`.

use std::collections::HashSet;

use crate::inventory::{INVENTORY_VERSION, Inventory, MigMode};

type Problem = (String, String);

fn err(path: impl Into<String>, msg: impl Into<String>) -> Result<(), Problem> {
    Err((path.into(), msg.into()))
}

/// Checks an inventory; returns the first problem with its field path.
pub fn validate(inv: &Inventory) -> Result<(), Problem> {
    if inv.version != INVENTORY_VERSION {
        return err(
            "version",
            format!(
                "unsupported inventory version {} (this build reads {INVENTORY_VERSION})",
                inv.version
            ),
        );
    }
    if inv.packages.is_empty() {
        return err("packages", "an inventory needs at least one package");
    }
    let (mut pkgs, mut numas, mut cores, mut pus) = (
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
    );
    for (pi, p) in inv.packages.iter().enumerate() {
        let at = format!("packages[{pi}]");
        if !pkgs.insert(p.id) {
            return err(
                format!("{at}.id"),
                format!("package id {} appears twice", p.id),
            );
        }
        if p.numa_nodes.is_empty() {
            return err(
                format!("{at}.numa_nodes"),
                "a package needs at least one NUMA node",
            );
        }
        for (ni, n) in p.numa_nodes.iter().enumerate() {
            let at = format!("{at}.numa_nodes[{ni}]");
            if !numas.insert(n.id) {
                return err(
                    format!("{at}.id"),
                    format!("NUMA node {} appears twice", n.id),
                );
            }
            for (hi, h) in n.hugepages.iter().enumerate() {
                if !h.size_bytes.is_power_of_two() || h.size_bytes < 4096 {
                    return err(
                        format!("{at}.hugepages[{hi}].size_bytes"),
                        "must be a power of two of at least 4096",
                    );
                }
            }
            for (ci, c) in n.cores.iter().enumerate() {
                let at = format!("{at}.cores[{ci}]");
                if !cores.insert(c.id) {
                    return err(format!("{at}.id"), format!("core {} appears twice", c.id));
                }
                if c.pus.is_empty() {
                    return err(format!("{at}.pus"), "a core needs at least one PU");
                }
                for (ui, u) in c.pus.iter().enumerate() {
                    if !pus.insert(*u) {
                        return err(format!("{at}.pus[{ui}]"), format!("PU {u} appears twice"));
                    }
                }
            }
        }
    }
    for (pi, p) in inv.packages.iter().enumerate() {
        for (ci, c) in p.caches.iter().enumerate() {
            let at = format!("packages[{pi}].caches[{ci}]");
            if !matches!(c.kind.as_str(), "unified" | "data" | "instruction") {
                return err(
                    format!("{at}.kind"),
                    format!("{:?} is not unified, data or instruction", c.kind),
                );
            }
            if let Some(u) = c.pus.iter().find(|u| !pus.contains(u)) {
                return err(format!("{at}.pus"), format!("PU {u} is not in any core"));
            }
        }
    }
    let numa_ok = |n: Option<u32>| n.is_none_or(|n| numas.contains(&n));
    let mut indexes = HashSet::new();
    let uuids: HashSet<&str> = inv.gpus.iter().map(|g| g.uuid.as_str()).collect();
    if uuids.len() != inv.gpus.len() {
        return err("gpus", "two GPUs share a uuid");
    }
    for (gi, g) in inv.gpus.iter().enumerate() {
        let at = format!("gpus[{gi}]");
        if !indexes.insert(g.index) {
            return err(
                format!("{at}.index"),
                format!("GPU index {} appears twice", g.index),
            );
        }
        if !numa_ok(g.numa_node) {
            return err(
                format!("{at}.numa_node"),
                format!("NUMA node {} does not exist", g.numa_node.unwrap_or(0)),
            );
        }
        let cc_ok = g.compute_capability.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.chars().chain(b.chars()).all(|c| c.is_ascii_digit())
        });
        if !cc_ok {
            return err(
                format!("{at}.compute_capability"),
                format!("{:?} is not major.minor", g.compute_capability),
            );
        }
        if g.memory_bytes == 0 {
            return err(format!("{at}.memory_bytes"), "must be positive");
        }
        if g.mig.mode != MigMode::Enabled && !g.mig.instances.is_empty() {
            return err(
                format!("{at}.mig.instances"),
                "MIG instances on a GPU whose MIG mode is not enabled",
            );
        }
        let mig_mem: u64 = g.mig.instances.iter().map(|m| m.memory_bytes).sum();
        if mig_mem > g.memory_bytes {
            return err(
                format!("{at}.mig.instances"),
                "MIG instances hold more memory than the GPU",
            );
        }
        for (li, l) in g.nvlinks.iter().enumerate() {
            let at = format!("{at}.nvlinks[{li}]");
            if l.peer == g.uuid {
                return err(format!("{at}.peer"), "a GPU cannot link to itself");
            }
            if !uuids.contains(l.peer.as_str()) {
                return err(format!("{at}.peer"), format!("no GPU with uuid {}", l.peer));
            }
            if l.links == 0 {
                return err(format!("{at}.links"), "must be positive");
            }
        }
    }
    let mut names = HashSet::new();
    for (ni, n) in inv.nics.iter().enumerate() {
        let at = format!("nics[{ni}]");
        if n.name.is_empty() || !names.insert(n.name.as_str()) {
            return err(
                format!("{at}.name"),
                format!("{:?} is empty or appears twice", n.name),
            );
        }
        if !numa_ok(n.numa_node) {
            return err(
                format!("{at}.numa_node"),
                format!("NUMA node {} does not exist", n.numa_node.unwrap_or(0)),
            );
        }
        if let Some(s) = &n.sriov
            && s.num_vfs > s.total_vfs
        {
            return err(
                format!("{at}.sriov.num_vfs"),
                "more VFs configured than supported",
            );
        }
    }
    let mut devices = HashSet::new();
    for (di, d) in inv.devices.iter().enumerate() {
        let at = format!("devices[{di}]");
        if !crate::inventory::valid_cdi_kind(&d.kind) {
            return err(
                format!("{at}.kind"),
                format!("{:?} is not a CDI kind like example.com/fpga", d.kind),
            );
        }
        if d.name.is_empty() || d.name.contains(['=', '/']) || !devices.insert(d.qualified()) {
            return err(
                format!("{at}.name"),
                format!("{:?} is empty, has = or /, or appears twice", d.name),
            );
        }
        if !numa_ok(d.numa_node) {
            return err(
                format!("{at}.numa_node"),
                format!("NUMA node {} does not exist", d.numa_node.unwrap_or(0)),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::fixture::{load_fixture, parse_inventory};

    fn broken(edit: impl Fn(&mut serde_json::Value)) -> String {
        let mut v = serde_json::to_value(load_fixture("dgx-h100").unwrap()).unwrap();
        edit(&mut v);
        let e = parse_inventory(&v.to_string(), "t").unwrap_err();
        e.path
    }

    #[test]
    fn references_and_duplicates_are_named() {
        assert_eq!(
            broken(|v| v["gpus"][3]["numa_node"] = 7.into()),
            "gpus[3].numa_node"
        );
        assert_eq!(
            broken(|v| v["gpus"][1]["nvlinks"][0]["peer"] = "GPU-nope".into()),
            "gpus[1].nvlinks[0].peer"
        );
        assert_eq!(
            broken(|v| v["gpus"][2]["index"] = 1.into()),
            "gpus[2].index"
        );
        assert_eq!(
            broken(|v| v["packages"][1]["numa_nodes"][0]["id"] = 0.into()),
            "packages[1].numa_nodes[0].id"
        );
        assert_eq!(
            broken(|v| v["packages"][0]["numa_nodes"][0]["cores"][1]["pus"][0] = 0.into()),
            "packages[0].numa_nodes[0].cores[1].pus[0]"
        );
        assert_eq!(
            broken(|v| v["nics"][0]["numa_node"] = 9.into()),
            "nics[0].numa_node"
        );
        assert_eq!(
            broken(|v| v["gpus"][0]["compute_capability"] = "nine".into()),
            "gpus[0].compute_capability"
        );
        assert_eq!(broken(|v| v["version"] = 2.into()), "version");
        let fpga = |kind: &str, name: &str, numa: u32| serde_json::json!({"kind": kind, "name": name, "numa_node": numa});
        assert_eq!(
            broken(|v| v["devices"] = serde_json::json!([fpga("fpga", "a", 0)])),
            "devices[0].kind"
        );
        assert_eq!(
            broken(|v| v["devices"] = serde_json::json!([
                fpga("example.com/fpga", "a", 0),
                fpga("example.com/fpga", "a", 1)
            ])),
            "devices[1].name"
        );
        assert_eq!(
            broken(|v| v["devices"] = serde_json::json!([fpga("example.com/fpga", "a", 5)])),
            "devices[0].numa_node"
        );
        assert_eq!(
            broken(|v| v["packages"] = serde_json::json!([])),
            "packages"
        );
    }
}
