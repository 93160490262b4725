//! Every shipped fixture round-trips (JSON in, JSON out, equal) and has the
//! shape its spec sheet says.

use berth_hostprobe::fixture::FIXTURES;
use berth_hostprobe::{MigMode, load_fixture, parse_inventory};

#[test]
fn fixtures_round_trip() {
    for (name, text) in FIXTURES {
        let inv = parse_inventory(text, name).unwrap();
        let out = serde_json::to_string(&inv).unwrap();
        let a: serde_json::Value = serde_json::from_str(text).unwrap();
        let b: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(a, b, "{name}: JSON out differs from JSON in");
        assert_eq!(parse_inventory(&out, name).unwrap(), inv);
    }
}

#[test]
fn dgx_h100_shape() {
    let inv = load_fixture("dgx-h100").unwrap();
    assert_eq!(inv.packages.len(), 2);
    assert_eq!(inv.numa_nodes().count(), 2);
    assert_eq!(inv.core_count(), 112);
    assert_eq!(inv.gpus.len(), 8);
    for g in &inv.gpus {
        assert_eq!(
            g.nvlinks.len(),
            7,
            "NVSwitch: every GPU reaches every other"
        );
        assert!(g.nvlinks.iter().all(|l| l.links == 18));
        assert_eq!(g.numa_node, Some(if g.index < 4 { 0 } else { 1 }));
        // Its 400 Gb/s NIC sits behind the same PCIe switch, on the same NUMA node.
        let nic = inv
            .nics
            .iter()
            .find(|n| n.pcie_switch.is_some() && n.pcie_switch == g.pcie_switch)
            .unwrap();
        assert_eq!(nic.speed_mbps, Some(400_000));
        assert_eq!(nic.numa_node, g.numa_node);
        assert!(nic.rdma_device.is_some());
    }
    let fast: Vec<_> = inv
        .nics
        .iter()
        .filter(|n| n.speed_mbps == Some(400_000))
        .collect();
    assert_eq!(fast.len(), 8);
    assert_eq!(inv.nvlink_islands(), vec![(0..8).collect::<Vec<u32>>()]);
}

#[test]
fn a100_shapes() {
    let pcie = load_fixture("a100-pcie-4x").unwrap();
    assert_eq!(pcie.nvlink_islands(), vec![vec![0, 1], vec![2, 3]]);
    let mig = load_fixture("a100-mig").unwrap();
    assert_eq!(mig.gpus[0].mig.mode, MigMode::Enabled);
    assert_eq!(mig.gpus[0].mig.instances.len(), 4);
    assert_eq!(mig.gpus[1].mig.mode, MigMode::Disabled);
    let cpu = load_fixture("cpu-2s").unwrap();
    assert!(cpu.gpus.is_empty());
    assert_eq!((cpu.core_count(), cpu.pu_count()), (64, 128));
}

#[test]
fn files_load_by_path_and_bad_files_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("node.json");
    std::fs::write(&good, FIXTURES[3].1).unwrap();
    assert_eq!(
        load_fixture(good.to_str().unwrap()).unwrap().hostname,
        "cpu-2s"
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        FIXTURES[3]
            .1
            .replacen("\"link_up\": true", "\"link_up\": \"yes\"", 1),
    )
    .unwrap();
    let e = load_fixture(bad.to_str().unwrap()).unwrap_err();
    assert_eq!(e.path, "nics[0].link_up");
    assert!(e.to_string().contains("bad.json"), "{e}");
}
