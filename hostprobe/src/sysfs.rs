//! The sysfs probe: network interfaces and huge pages, read straight from
//! `/sys` (or any tree shaped like it, so tests can pass a fake one).
//!
//! Needs no cargo feature and no library: only `std::fs`. Every read is
//! allowed to fail; a missing or malformed file leaves its field empty and
//! never panics.

use std::fs;
use std::path::{Path, PathBuf};

use crate::inventory::{Hugepages, Nic, Sriov};

/// Network interfaces under `/sys/class/net`: see [`probe_nics_at`].
pub fn probe_nics() -> Vec<Nic> {
    probe_nics_at(Path::new("/sys"))
}

/// Network interfaces under `<root>/class/net`, sorted by name.
///
/// Only interfaces backed by a device (a `device` link) are kept: `lo`,
/// bridges, veths, bonds and the like are skipped. On a VM, virtio NICs
/// have a device link and are kept; their PCI address is that of the
/// virtio PCI function above the virtio device.
pub fn probe_nics_at(root: &Path) -> Vec<Nic> {
    let net = root.join("class/net");
    let entries = match fs::read_dir(&net) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::debug!(path = %net.display(), error = %e, "sysfs: cannot list interfaces");
            return Vec::new();
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|name| read_nic(root, &net.join(name), name))
        .collect()
}

/// One interface, or `None` when it has no (resolvable) device link.
fn read_nic(root: &Path, dir: &Path, name: &str) -> Option<Nic> {
    let link = dir.join("device");
    // No device link: a virtual interface.
    fs::symlink_metadata(&link).ok()?;
    let device = match fs::canonicalize(&link) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(nic = name, error = %e, "sysfs: dangling device link, skipped");
            return None;
        }
    };
    let pci_dir = pci_ancestor(&device);
    let numa_node = read_numa(&device).or_else(|| pci_dir.as_deref().and_then(read_numa));
    let sriov = read_sriov(&device).or_else(|| pci_dir.as_deref().and_then(read_sriov));
    let speed_mbps = read_trimmed(&dir.join("speed"))
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|&s| s > 0)
        .and_then(|s| u64::try_from(s).ok());
    let operstate_up = read_trimmed(&dir.join("operstate")).is_some_and(|s| s == "up");
    let carrier_up = read_trimmed(&dir.join("carrier")).is_some_and(|s| s == "1");
    Some(Nic {
        name: name.to_string(),
        mac: read_trimmed(&dir.join("address")).unwrap_or_default(),
        speed_mbps,
        link_up: operstate_up || carrier_up,
        numa_node,
        pci_bus_id: pci_dir
            .as_deref()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(normalize_pci_bus_id),
        pcie_switch: None,
        rdma_device: rdma_device(root, &device, pci_dir.as_deref()),
        sriov,
    })
}

/// The nearest directory at or above `device` whose name is a PCI address.
fn pci_ancestor(device: &Path) -> Option<PathBuf> {
    device
        .ancestors()
        .take(64)
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_pci_address)
        })
        .map(Path::to_path_buf)
}

/// `<dir>/numa_node`, with `-1` (no affinity) as `None`.
fn read_numa(dir: &Path) -> Option<u32> {
    read_trimmed(&dir.join("numa_node")).and_then(|s| s.parse::<u32>().ok())
}

/// `<dir>/sriov_numvfs` and `<dir>/sriov_totalvfs`, when the device has SR-IOV.
fn read_sriov(dir: &Path) -> Option<Sriov> {
    let total_vfs = read_trimmed(&dir.join("sriov_totalvfs"))?
        .parse::<u32>()
        .ok()?;
    let num_vfs = read_trimmed(&dir.join("sriov_numvfs"))
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(0);
    Some(Sriov { num_vfs, total_vfs })
}

/// The RDMA device sitting on the same device (or PCI function) as a NIC.
fn rdma_device(root: &Path, device: &Path, pci_dir: Option<&Path>) -> Option<String> {
    for dir in std::iter::once(device).chain(pci_dir) {
        if let Some(name) = first_entry_name(&dir.join("infiniband")) {
            return Some(name);
        }
    }
    let class = root.join("class/infiniband");
    let mut names: Vec<String> = fs::read_dir(&class)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().find(|name| {
        fs::canonicalize(class.join(name).join("device"))
            .is_ok_and(|d| d == device || Some(d.as_path()) == pci_dir)
    })
}

/// The first (sorted) entry name in a directory, if any.
fn first_entry_name(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Huge page pools of NUMA node `numa_id` under `/sys`: see [`hugepages_at`].
pub fn hugepages(numa_id: u32) -> Vec<Hugepages> {
    hugepages_at(Path::new("/sys"), numa_id)
}

/// Huge page pools of NUMA node `numa_id`, from
/// `<root>/devices/system/node/node<N>/hugepages/hugepages-<size>kB/nr_hugepages`,
/// sorted by page size. Sizes the kernel supports but has no pages of are
/// kept with a count of 0. Empty when the node or the files are missing.
pub fn hugepages_at(root: &Path, numa_id: u32) -> Vec<Hugepages> {
    let dir = root.join(format!("devices/system/node/node{numa_id}/hugepages"));
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<Hugepages> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse::<u64>()
                .ok()?;
            let count = read_trimmed(&e.path().join("nr_hugepages"))?
                .parse::<u64>()
                .ok()?;
            Some(Hugepages {
                size_bytes: kb.checked_mul(1024)?,
                count,
            })
        })
        .collect();
    out.sort_by_key(|h| h.size_bytes);
    out
}

/// NUMA node of a PCI device, from `<root>/bus/pci/devices/<bus id>/numa_node`
/// (`None` when unknown or `-1`).
pub fn pci_numa_node_at(root: &Path, bus_id: &str) -> Option<u32> {
    if !is_pci_address(bus_id) {
        return None;
    }
    read_numa(&root.join("bus/pci/devices").join(bus_id))
}

/// Whether `s` looks like a PCI address, `dddd:bb:dd.f` (lowercase or
/// uppercase hex; the domain may have 4 or more digits).
pub fn is_pci_address(s: &str) -> bool {
    let mut parts = s.split(':');
    let (Some(domain), Some(bus), Some(devfn), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((dev, func)) = devfn.split_once('.') else {
        return false;
    };
    let hex = |p: &str, min: usize, max: usize| {
        (min..=max).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit())
    };
    hex(domain, 4, 8) && hex(bus, 2, 2) && hex(dev, 2, 2) && hex(func, 1, 1)
}

/// A PCI bus id in Berth's form, lowercase `dddd:bb:dd.f` with (at least)
/// 4 domain digits, from the forms the kernel, hwloc and NVML write:
/// `0000:18:00.0`, `00000000:18:00.0` (NVML), `18:00.0` (no domain).
/// `None` when it is not a PCI address.
pub fn normalize_pci_bus_id(s: &str) -> Option<String> {
    let s = s.trim();
    let (domain, rest) = match s.matches(':').count() {
        2 => s.split_once(':')?,
        1 => ("0", s),
        _ => return None,
    };
    let (bus, devfn) = rest.split_once(':')?;
    let (dev, func) = devfn.split_once('.')?;
    let domain = u32::from_str_radix(domain, 16).ok()?;
    let bus = u8::from_str_radix(bus, 16).ok()?;
    let dev = u8::from_str_radix(dev, 16).ok()?;
    let func = u8::from_str_radix(func, 16).ok()?;
    if dev > 0x1f || func > 7 {
        return None;
    }
    Some(format!("{domain:04x}:{bus:02x}:{dev:02x}.{func:x}"))
}

/// A small sysfs file, trimmed; `None` when unreadable or not UTF-8.
fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids() {
        assert_eq!(
            normalize_pci_bus_id("00000000:18:00.0").as_deref(),
            Some("0000:18:00.0")
        );
        assert_eq!(
            normalize_pci_bus_id("0000:AF:1F.7").as_deref(),
            Some("0000:af:1f.7")
        );
        assert_eq!(
            normalize_pci_bus_id("3b:00.1").as_deref(),
            Some("0000:3b:00.1")
        );
        assert_eq!(
            normalize_pci_bus_id("10000:01:00.0").as_deref(),
            Some("10000:01:00.0")
        );
        for bad in [
            "",
            "eth0",
            "0000:18:00",
            "0000:18:00.8",
            "1:2:3:4.0",
            "zz:00.0",
        ] {
            assert_eq!(normalize_pci_bus_id(bad), None, "{bad}");
        }
        assert!(is_pci_address("0000:00:03.0"));
        assert!(!is_pci_address("pci0000:00"));
        assert!(!is_pci_address("virtio0"));
    }
}
