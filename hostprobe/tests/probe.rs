//! The real probe on this machine, and the sysfs NIC reader on fake trees.
#![cfg(feature = "probe")]

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::Path;

use berth_hostprobe::probe::{inventory_from_proc, probe, probe_timed};
use berth_hostprobe::sysfs::{hugepages_at, probe_nics_at};
use berth_hostprobe::{INVENTORY_VERSION, Nic, Sriov};

#[test]
fn probe_this_machine() {
    let t = std::time::Instant::now();
    let (inv, times) = probe_timed();
    println!("probe: total {:?}", t.elapsed());
    println!(
        "{}",
        serde_json::to_string_pretty(&inv).expect("serialises")
    );
    for (backend, d) in &times {
        println!("probe: {backend} took {d:?}");
    }
    assert_eq!(
        times.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
        ["hwloc", "nvml", "sysfs"]
    );
    assert_eq!(inv.version, INVENTORY_VERSION);
    assert_eq!(inv.source, "probe");
    assert!(!inv.hostname.is_empty(), "hostname");

    // Every usable CPU once: PUs == nproc, cores == PUs / SMT width.
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pus: Vec<u32> = inv.cores().flat_map(|c| c.pus.iter().copied()).collect();
    let distinct: BTreeSet<u32> = pus.iter().copied().collect();
    assert_eq!(distinct.len(), pus.len(), "a PU in two cores");
    assert_eq!(inv.pu_count(), nproc, "PUs == nproc");
    let smt = inv.cores().map(|c| c.pus.len()).max().unwrap_or(1);
    let cores: BTreeSet<u32> = inv.cores().map(|c| c.id).collect();
    assert_eq!(cores.len(), inv.core_count(), "core ids unique");
    assert_eq!(
        inv.core_count(),
        nproc.div_ceil(smt),
        "cores == nproc / SMT"
    );

    assert!(
        inv.numa_nodes().any(|n| n.memory_bytes > 0),
        "a NUMA node with memory"
    );

    // NICs: at least one real interface, placed on a NUMA node or noted.
    assert!(
        !inv.nics.is_empty(),
        "no NIC found; notes: {:?}",
        inv.probe_notes
    );
    for nic in &inv.nics {
        assert!(!nic.name.is_empty());
        assert_ne!(nic.name, "lo");
        assert!(
            nic.numa_node.is_some() || !inv.probe_notes.is_empty(),
            "{} has no NUMA node and no note",
            nic.name
        );
    }

    // No NVIDIA driver here: no GPUs, and a note saying so.
    if inv.gpus.is_empty() {
        assert!(
            inv.probe_notes.iter().any(|n| n.starts_with("nvml:")),
            "notes: {:?}",
            inv.probe_notes
        );
    }
    for gpu in &inv.gpus {
        assert!(gpu.uuid.starts_with("GPU-"), "{}", gpu.uuid);
        assert!(berth_hostprobe::sysfs::is_pci_address(&gpu.pci_bus_id));
    }
}

#[test]
fn probe_is_stable() {
    let a = probe();
    let b = probe();
    assert_eq!(a.packages, b.packages);
    assert_eq!(a.gpus, b.gpus);
    assert_eq!(
        a.nics.iter().map(|n| &n.name).collect::<Vec<_>>(),
        b.nics.iter().map(|n| &n.name).collect::<Vec<_>>()
    );
}

/// Writes `content` to `root/rel`, creating directories.
fn put(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
    std::fs::write(p, content).expect("write");
}

/// Makes `root/rel` a symlink to `target`.
fn link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
    symlink(target, p).expect("symlink");
}

#[test]
fn sysfs_fake_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let pci = "devices/pci0000:00/0000:3b:00.0";
    put(root, &format!("{pci}/numa_node"), "1\n");
    put(root, &format!("{pci}/sriov_numvfs"), "4\n");
    put(root, &format!("{pci}/sriov_totalvfs"), "8\n");

    put(root, "class/net/eth9/address", "b8:ce:f6:00:11:22\n");
    put(root, "class/net/eth9/speed", "100000\n");
    put(root, "class/net/eth9/operstate", "up\n");
    link(
        root,
        "class/net/eth9/device",
        "../../../devices/pci0000:00/0000:3b:00.0",
    );

    put(root, "class/net/lo/address", "00:00:00:00:00:00\n");
    put(root, "class/net/lo/operstate", "unknown\n");
    put(root, "class/net/veth0/address", "7a:00:00:00:00:01\n");
    put(root, "class/net/veth0/operstate", "up\n");

    link(
        root,
        "class/infiniband/mlx5_3/device",
        "../../../devices/pci0000:00/0000:3b:00.0",
    );

    let nics = probe_nics_at(root);
    assert_eq!(
        nics,
        vec![Nic {
            name: "eth9".into(),
            mac: "b8:ce:f6:00:11:22".into(),
            speed_mbps: Some(100_000),
            link_up: true,
            numa_node: Some(1),
            pci_bus_id: Some("0000:3b:00.0".into()),
            pcie_switch: None,
            rdma_device: Some("mlx5_3".into()),
            sriov: Some(Sriov {
                num_vfs: 4,
                total_vfs: 8
            }),
        }]
    );
}

#[test]
fn sysfs_virtio_and_odd_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // A virtio NIC: the device is virtio1 below the PCI function.
    let pci = "devices/pci0000:00/0000:00:03.0";
    put(root, &format!("{pci}/numa_node"), "-1\n");
    put(root, &format!("{pci}/virtio1/vendor"), "0x1af4\n");
    put(root, "class/net/ens3/address", "52:54:00:12:34:56\n");
    put(root, "class/net/ens3/speed", "-1\n");
    put(root, "class/net/ens3/operstate", "unknown\n");
    put(root, "class/net/ens3/carrier", "1\n");
    link(
        root,
        "class/net/ens3/device",
        "../../../devices/pci0000:00/0000:00:03.0/virtio1",
    );
    // A NIC whose files are garbage or missing, and one with a dangling link.
    put(root, "devices/platform/ff000000.eth/numa_node", "banana");
    put(root, "class/net/end0/speed", "fast");
    link(
        root,
        "class/net/end0/device",
        "../../../devices/platform/ff000000.eth",
    );
    put(root, "class/net/gone0/address", "00:11:22:33:44:55\n");
    link(root, "class/net/gone0/device", "../../../devices/nowhere");

    let nics = probe_nics_at(root);
    let names: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["end0", "ens3"]);
    let end0 = &nics[0];
    assert_eq!(end0.mac, "");
    assert_eq!(end0.speed_mbps, None);
    assert!(!end0.link_up);
    assert_eq!(end0.numa_node, None);
    assert_eq!(end0.pci_bus_id, None);
    let ens3 = &nics[1];
    assert_eq!(ens3.pci_bus_id.as_deref(), Some("0000:00:03.0"));
    assert_eq!(ens3.speed_mbps, None);
    assert!(ens3.link_up, "carrier 1");
    assert_eq!(ens3.numa_node, None);
    assert_eq!(ens3.rdma_device, None);
    assert_eq!(ens3.sriov, None);

    // Nothing at all.
    assert!(probe_nics_at(&root.join("nope")).is_empty());
}

#[test]
fn sysfs_hugepages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let node = "devices/system/node/node1/hugepages";
    put(
        root,
        &format!("{node}/hugepages-1048576kB/nr_hugepages"),
        "2\n",
    );
    put(
        root,
        &format!("{node}/hugepages-2048kB/nr_hugepages"),
        "512\n",
    );
    put(root, &format!("{node}/hugepages-64kB/nr_hugepages"), "x\n");
    put(root, &format!("{node}/junk/nr_hugepages"), "1\n");
    let h: Vec<(u64, u64)> = hugepages_at(root, 1)
        .iter()
        .map(|h| (h.size_bytes, h.count))
        .collect();
    assert_eq!(h, vec![(2 << 20, 512), (1 << 30, 2)]);
    assert!(hugepages_at(root, 0).is_empty());
}

#[test]
fn proc_fallback() {
    let cpuinfo = "processor\t: 0\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t\t: 0\n\n\
                   processor\t: 1\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t\t: 1\n\n\
                   processor\t: 2\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t\t: 0\n\n\
                   processor\t: 3\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t\t: 1\n";
    let meminfo = "MemTotal:        8000000 kB\nMemFree:  1 kB\n";
    let inv = inventory_from_proc(cpuinfo, meminfo);
    assert_eq!(inv.packages.len(), 1);
    assert_eq!(inv.packages[0].model.as_deref(), Some("Test CPU"));
    assert_eq!(inv.memory_bytes(), 8_000_000 * 1024);
    let cores: Vec<Vec<u32>> = inv.cores().map(|c| c.pus.clone()).collect();
    assert_eq!(cores, vec![vec![0, 2], vec![1, 3]]);

    // No topology fields (some ARM kernels): one core per processor.
    let inv = inventory_from_proc("processor : 0\n\nprocessor : 1\n", "");
    assert_eq!(inv.core_count(), 2);
    assert_eq!(inv.memory_bytes(), 0);

    // Garbage: still a tree, with available_parallelism PUs.
    let inv = inventory_from_proc("\u{0}\u{1}garbage", "MemTotal: lots");
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(inv.pu_count(), nproc);
}
