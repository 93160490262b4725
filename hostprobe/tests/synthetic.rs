//! The hwloc conversion on synthetic topologies and XML files: every PU
//! once, cores and NUMA nodes where the shape says, errors instead of
//! panics, and the PCI locality map on a hand-written XML with a PCIe
//! switch.
#![cfg(feature = "hwloc")]

use std::collections::BTreeSet;

use berth_hostprobe::Inventory;
use berth_hostprobe::hwloc::{HwlocError, from_synthetic, from_xml_file, pci_numa_map};
use hwlocality::Topology;
use hwlocality::topology::builder::TypeFilter;
use hwlocality::topology::export::xml::XMLExportFlags;
use proptest::prelude::*;

/// A synthetic shape; `None` leaves the level out of the description.
#[derive(Debug, Clone, Copy)]
struct Shape {
    packages: Option<u32>,
    numa: Option<u32>,
    cores: u32,
    pus: u32,
}

impl Shape {
    fn desc(&self) -> String {
        let mut d = Vec::new();
        if let Some(p) = self.packages {
            d.push(format!("Package:{p}"));
        }
        if let Some(n) = self.numa {
            d.push(format!("NUMANode:{n}"));
        }
        d.push(format!("Core:{}", self.cores));
        d.push(format!("PU:{}", self.pus));
        d.join(" ")
    }
}

/// Checks the inventory of a synthetic shape.
fn check(shape: Shape, inv: &Inventory) {
    let p = shape.packages.unwrap_or(1);
    let n = shape.numa.unwrap_or(1);
    let cores = (p * n * shape.cores) as usize;
    let pus = cores * shape.pus as usize;
    let desc = shape.desc();
    assert_eq!(inv.source, format!("synthetic:{desc}"));
    assert_eq!(inv.core_count(), cores, "{desc}: cores");
    assert_eq!(inv.pu_count(), pus, "{desc}: PUs");

    // Every PU exactly once, numbered 0..pus.
    let mut seen: Vec<u32> = inv.cores().flat_map(|c| c.pus.iter().copied()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..pus as u32).collect::<Vec<_>>(), "{desc}: PU set");

    // Cores: unique ids, distinct PUs, t of them.
    let ids: BTreeSet<u32> = inv.cores().map(|c| c.id).collect();
    assert_eq!(ids.len(), cores, "{desc}: core ids unique");
    for c in inv.cores() {
        let set: BTreeSet<u32> = c.pus.iter().copied().collect();
        assert_eq!(set.len(), c.pus.len(), "{desc}: core {} PUs distinct", c.id);
        assert_eq!(c.pus.len(), shape.pus as usize, "{desc}: core {} PUs", c.id);
    }

    // NUMA nodes: unique ids, evenly filled.
    let numa_ids: BTreeSet<u32> = inv.numa_nodes().map(|n| n.id).collect();
    let numa_count = inv.numa_nodes().count();
    assert_eq!(numa_ids.len(), numa_count, "{desc}: NUMA ids unique");
    let expect_numa = if shape.numa.is_some() {
        (p * n) as usize
    } else {
        1
    };
    assert_eq!(numa_count, expect_numa, "{desc}: NUMA nodes");
    for node in inv.numa_nodes() {
        assert_eq!(
            node.cores.len(),
            cores / expect_numa,
            "{desc}: node {}",
            node.id
        );
    }

    // Packages: as given when NUMA nodes sit inside them, else one.
    let expect_pkgs = match (shape.packages, shape.numa) {
        (Some(p), Some(_)) => p as usize,
        _ => 1,
    };
    assert_eq!(inv.packages.len(), expect_pkgs, "{desc}: packages");
    let pkg_ids: BTreeSet<u32> = inv.packages.iter().map(|p| p.id).collect();
    assert_eq!(
        pkg_ids.len(),
        inv.packages.len(),
        "{desc}: package ids unique"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn synthetic_shapes(p in 1u32..=4, n in 1u32..=4, c in 1u32..=16, t in 1u32..=4) {
        let shape = Shape { packages: Some(p), numa: Some(n), cores: c, pus: t };
        let inv = from_synthetic(&shape.desc()).expect("valid synthetic description");
        check(shape, &inv);
    }
}

#[test]
fn hand_picked_shapes() {
    let shapes = [
        Shape {
            packages: Some(2),
            numa: Some(2),
            cores: 8,
            pus: 2,
        },
        Shape {
            packages: None,
            numa: Some(4),
            cores: 4,
            pus: 1,
        },
        Shape {
            packages: Some(2),
            numa: None,
            cores: 4,
            pus: 2,
        },
        Shape {
            packages: None,
            numa: None,
            cores: 3,
            pus: 4,
        },
        Shape {
            packages: Some(1),
            numa: Some(1),
            cores: 1,
            pus: 1,
        },
    ];
    for shape in shapes {
        let inv = from_synthetic(&shape.desc()).expect("valid synthetic description");
        check(shape, &inv);
    }
}

#[test]
fn numa_spanning_packages_and_bare_pus() {
    // One NUMA node above two packages: one package in the tree.
    let inv = from_synthetic("NUMANode:1 Package:2 Core:2 PU:2").expect("valid");
    assert_eq!(inv.packages.len(), 1);
    assert_eq!(inv.core_count(), 4);
    assert_eq!(inv.pu_count(), 8);
    // No Core level: each PU is a core.
    let inv = from_synthetic("Package:2 PU:3").expect("valid");
    assert_eq!(inv.core_count(), 6);
    assert!(inv.cores().all(|c| c.pus.len() == 1));
}

#[test]
fn caches_and_memory() {
    let inv = from_synthetic(
        "Package:2 NUMANode:1(memory=2GB) L3Cache:1(size=16MB) Core:4 L2Cache:1 L1dCache:1 PU:2",
    )
    .expect("valid");
    assert_eq!(inv.packages.len(), 2);
    for (i, p) in inv.packages.iter().enumerate() {
        assert_eq!(p.numa_nodes.len(), 1);
        assert_eq!(p.numa_nodes[0].memory_bytes, 2_000_000_000);
        let l3: Vec<_> = p.caches.iter().filter(|c| c.level == 3).collect();
        assert_eq!(l3.len(), 1, "package {i}: one L3");
        assert_eq!(l3[0].kind, "unified");
        assert_eq!(l3[0].size_bytes, 16_000_000);
        let base = 8 * i as u32;
        assert_eq!(l3[0].pus, (base..base + 8).collect::<Vec<_>>());
        assert_eq!(p.caches.iter().filter(|c| c.level == 2).count(), 4);
        let l1: Vec<_> = p.caches.iter().filter(|c| c.level == 1).collect();
        assert_eq!(l1.len(), 4);
        assert!(l1.iter().all(|c| c.kind == "data" && c.pus.len() == 2));
    }
}

#[test]
fn xml_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    for desc in [
        "Package:2 NUMANode:2 Core:8 PU:2",
        "NUMANode:4 Core:4 PU:1",
        "Package:2 Core:4 PU:2",
        "Package:1 NUMANode:1(memory=4GB) L3Cache:1 Core:6 L1dCache:1 PU:2",
    ] {
        let topo = Topology::builder()
            .from_synthetic(desc)
            .expect("valid")
            .build()
            .expect("builds");
        let path = dir.path().join(format!(
            "{}.xml",
            desc.replace([' ', ':', '(', ')', '='], "_")
        ));
        topo.export_xml_file(Some(&path), XMLExportFlags::empty())
            .expect("export");
        let direct = from_synthetic(desc).expect("valid");
        let loaded = from_xml_file(&path).expect("XML loads");
        assert_eq!(loaded.source, format!("xml:{}", path.display()));
        assert_eq!(loaded.packages, direct.packages, "{desc}");
        assert_eq!(loaded.core_count(), direct.core_count());
        assert_eq!(loaded.pu_count(), direct.pu_count());
    }
}

#[test]
fn bad_inputs_are_errors() {
    for bad in [
        "Bogus:2 PU:2",
        "Package:two PU:2",
        "Core:2 PU:2 Package:2",
        "with\0nul",
    ] {
        match from_synthetic(bad) {
            Err(e @ HwlocError::Synthetic { .. }) => {
                assert!(e.to_string().contains("bad synthetic topology"), "{e}")
            }
            other => panic!("{bad:?}: expected an error, got {other:?}"),
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.xml");
    let err = from_xml_file(&missing).expect_err("missing file");
    assert!(matches!(err, HwlocError::Xml { .. }));
    assert!(err.to_string().contains("missing.xml"), "{err}");

    let garbage = dir.path().join("garbage.xml");
    std::fs::write(&garbage, "<topology><object type=\"Nonsense\">").expect("write");
    assert!(matches!(
        from_xml_file(&garbage),
        Err(HwlocError::Xml { .. })
    ));
    std::fs::write(&garbage, "not xml at all").expect("write");
    assert!(matches!(
        from_xml_file(&garbage),
        Err(HwlocError::Xml { .. })
    ));
}

/// Two packages, a PCIe switch under package 1 with a NIC and a GPU
/// behind it, and an NVMe drive directly on a root port.
const SWITCH_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE topology SYSTEM "hwloc2.dtd">
<topology version="2.0">
 <object type="Machine" os_index="0" cpuset="0x0000000f" complete_cpuset="0x0000000f" allowed_cpuset="0x0000000f" nodeset="0x00000003" complete_nodeset="0x00000003" allowed_nodeset="0x00000003" gp_index="1">
  <object type="Package" os_index="0" cpuset="0x00000003" complete_cpuset="0x00000003" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="2">
   <info name="CPUModel" value="Test CPU 9000"/>
   <object type="NUMANode" os_index="0" cpuset="0x00000003" complete_cpuset="0x00000003" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="3" local_memory="1073741824">
    <page_type size="4096" count="262144"/>
    <page_type size="2097152" count="16"/>
    <page_type size="1073741824" count="0"/>
   </object>
   <object type="Core" os_index="0" cpuset="0x00000001" complete_cpuset="0x00000001" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="4">
    <object type="PU" os_index="0" cpuset="0x00000001" complete_cpuset="0x00000001" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="5"/>
   </object>
   <object type="Core" os_index="1" cpuset="0x00000002" complete_cpuset="0x00000002" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="6">
    <object type="PU" os_index="1" cpuset="0x00000002" complete_cpuset="0x00000002" nodeset="0x00000001" complete_nodeset="0x00000001" gp_index="7"/>
   </object>
  </object>
  <object type="Package" os_index="1" cpuset="0x0000000c" complete_cpuset="0x0000000c" nodeset="0x00000002" complete_nodeset="0x00000002" gp_index="8">
   <info name="CPUModel" value="Test CPU 9000"/>
   <object type="NUMANode" os_index="1" cpuset="0x0000000c" complete_cpuset="0x0000000c" nodeset="0x00000002" complete_nodeset="0x00000002" gp_index="9" local_memory="2147483648"/>
   <object type="Core" os_index="0" cpuset="0x00000004" complete_cpuset="0x00000004" nodeset="0x00000002" complete_nodeset="0x00000002" gp_index="10">
    <object type="PU" os_index="2" cpuset="0x00000004" complete_cpuset="0x00000004" nodeset="0x00000002" complete_nodeset="0x00000002" gp_index="11"/>
   </object>
   <object type="Core" os_index="1" cpuset="0x00000008" complete_cpuset="0x00000008" nodeset="0x00000002" complete_nodeset="0x00000002" gp_index="12">
    <object type="PU" os_index="3" cpuset="0x00000008" complete_cpuset="0x00000008" nodeset="0x00000002" complete_nodeset="0x00000002" gp_index="13"/>
   </object>
   <object type="Bridge" gp_index="20" bridge_type="0-1" depth="0" bridge_pci="0000:[14-20]">
    <object type="Bridge" gp_index="21" bridge_type="1-1" depth="1" bridge_pci="0000:[15-18]" pci_busid="0000:14:01.0" pci_type="0604 [8086:2030] [0000:0000] 00" pci_link_speed="0.000000">
     <object type="Bridge" gp_index="22" bridge_type="1-1" depth="2" bridge_pci="0000:[16-18]" pci_busid="0000:15:00.0" pci_type="0604 [1000:c030] [0000:0000] 00" pci_link_speed="0.000000">
      <object type="Bridge" gp_index="23" bridge_type="1-1" depth="3" bridge_pci="0000:[17-17]" pci_busid="0000:16:00.0" pci_type="0604 [1000:c030] [0000:0000] 00" pci_link_speed="0.000000">
       <object type="PCIDev" gp_index="24" pci_busid="0000:17:00.0" pci_type="0200 [15b3:1021] [15b3:0041] 00" pci_link_speed="0.000000"/>
      </object>
      <object type="Bridge" gp_index="25" bridge_type="1-1" depth="3" bridge_pci="0000:[18-18]" pci_busid="0000:16:01.0" pci_type="0604 [1000:c030] [0000:0000] 00" pci_link_speed="0.000000">
       <object type="PCIDev" gp_index="26" pci_busid="0000:18:00.0" pci_type="0302 [10de:2330] [10de:16c1] a1" pci_link_speed="0.000000"/>
      </object>
     </object>
    </object>
    <object type="Bridge" gp_index="27" bridge_type="1-1" depth="1" bridge_pci="0000:[20-20]" pci_busid="0000:14:02.0" pci_type="0604 [8086:2031] [0000:0000] 00" pci_link_speed="0.000000">
     <object type="PCIDev" gp_index="28" pci_busid="0000:20:00.0" pci_type="0108 [144d:a80a] [144d:a801] 00" pci_link_speed="0.000000"/>
    </object>
   </object>
  </object>
 </object>
</topology>
"#;

#[test]
fn xml_tree_hugepages_and_pci_switch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("switch.xml");
    std::fs::write(&path, SWITCH_XML).expect("write");

    let inv = from_xml_file(&path).expect("XML loads");
    assert_eq!(inv.packages.len(), 2);
    assert!(
        inv.packages
            .iter()
            .all(|p| p.model.as_deref() == Some("Test CPU 9000"))
    );
    let nodes: Vec<_> = inv.numa_nodes().collect();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].memory_bytes, 1 << 30);
    assert_eq!(nodes[1].memory_bytes, 2 << 30);
    let huge: Vec<(u64, u64)> = nodes[0]
        .hugepages
        .iter()
        .map(|h| (h.size_bytes, h.count))
        .collect();
    assert_eq!(
        huge,
        vec![(2 << 20, 16), (1 << 30, 0)],
        "base page left out"
    );
    assert!(nodes[1].hugepages.is_empty());
    assert_eq!(
        inv.packages[1].numa_nodes[0]
            .cores
            .iter()
            .map(|c| c.pus.clone())
            .collect::<Vec<_>>(),
        vec![vec![2], vec![3]]
    );

    let topo = Topology::builder()
        .from_xml_file(&path)
        .expect("path ok")
        .with_io_type_filter(TypeFilter::KeepAll)
        .expect("filter")
        .build()
        .expect("builds");
    let map = pci_numa_map(&topo);
    let switch = Some("0000:15:00.0".to_string());
    assert_eq!(
        map.get("0000:17:00.0"),
        Some(&(Some(1), switch.clone())),
        "NIC: {map:?}"
    );
    assert_eq!(
        map.get("0000:18:00.0"),
        Some(&(Some(1), switch)),
        "GPU: {map:?}"
    );
    assert_eq!(
        map.get("0000:20:00.0"),
        Some(&(Some(1), Some("0000:14:02.0".to_string()))),
        "NVMe on a root port: {map:?}"
    );
}

#[test]
fn synthetic_has_no_pci() {
    let topo = Topology::builder()
        .from_synthetic("Package:1 Core:2 PU:1")
        .expect("valid")
        .build()
        .expect("builds");
    assert!(pci_numa_map(&topo).is_empty());
}
