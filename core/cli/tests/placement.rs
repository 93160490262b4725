//! Hardware-aware placement end to end: a simulated DGX H100 and a CPU-only
//! server beside the real node; a 4-GPU NVLink, single-NUMA-node task lands
//! on the DGX with NUMA-local cores and NIC, and its container sees exactly
//! its GPUs (CDI, fake device nodes); real cpusets on the real node; an
//! impossible request waits with a one-line reason.

mod common;

use std::time::Duration;

use common::{Dev, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(40);

#[test]
fn gpus_land_on_one_nvlink_island_with_local_cores_and_nic() {
    let mut dev = Dev::start();
    let cdi = dev.data.path().join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    common::write_gpu_cdi(&cdi);
    dev.agent_with("dgx1", "dgx-h100", &["--cdi-dir", cdi.to_str().unwrap()]);
    dev.agent_with("dgx2", "dgx-h100", &["--cdi-dir", cdi.to_str().unwrap()]);
    dev.agent("cpu1", "cpu-2s");

    dev.run_spec(
        "train",
        "name: train\nimage: busybox:latest\nrestart: never\n\
         command: [/bin/sh, -c, 'ls /dev | grep nvidia; env | grep BERTH_TEST_GPU | sort']\n\
         resources:\n  cores: 8\n  memory: 1Gi\n  gpus: {count: 4, interconnect: nvlink}\n  nics: {count: 1, min_speed: 400, rdma: true}\n  numa: single-numa-node\n",
    );
    let t = dev.wait_task("train", T, |t| t["state"] == "exited");
    let dgx = t["node"].as_str().unwrap().to_string();
    assert!(dgx.starts_with("dgx"), "{t}");
    assert_eq!(t["exit_code"], 0, "{t}");
    let a = &t["allocation"];
    let inv = berth_hostprobe::load_fixture("dgx-h100").unwrap();
    let gpus: Vec<u32> = a["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["index"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(gpus.len(), 4);
    let numa = inv.gpus[gpus[0] as usize].numa_node.unwrap();
    assert!(
        gpus.iter()
            .all(|g| inv.gpus[*g as usize].numa_node == Some(numa)),
        "one NUMA node"
    );
    assert_eq!(a["numa_nodes"], serde_json::json!([numa]));
    let local: Vec<u32> = inv
        .numa_nodes()
        .find(|n| n.id == numa)
        .unwrap()
        .cores
        .iter()
        .map(|c| c.id)
        .collect();
    let cores: Vec<u32> = a["cores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(cores.len(), 8);
    assert!(cores.iter().all(|c| local.contains(c)), "NUMA-local cores");
    let nic = inv
        .nics
        .iter()
        .find(|n| a["nics"][0] == n.name.as_str())
        .unwrap();
    assert_eq!(nic.numa_node, Some(numa));
    assert!(
        gpus.iter()
            .any(|g| inv.gpus[*g as usize].pcie_switch == nic.pcie_switch),
        "NIC paired with a GPU"
    );

    // Explain: the chosen node, and why each other node was not.
    let ex = dev.ok(&["explain", "train"]);
    assert!(ex.contains(&format!("placed on {dgx}")), "{ex}");
    let cpu_line = ex.lines().find(|l| l.starts_with("cpu1")).unwrap();
    assert!(
        cpu_line.contains("filtered by hardware-fit: lack 4 free GPUs on one NVLink island"),
        "{ex}"
    );
    assert!(
        ex.lines()
            .any(|l| l.starts_with("dgx1") && l.contains("<- chosen")),
        "{ex}"
    );

    // The container saw exactly its GPUs.
    let logs = dev.ok(&["logs", "train"]);
    let mut expect: Vec<String> = gpus.iter().map(|g| format!("nvidia{g}")).collect();
    expect.sort();
    let seen: Vec<&str> = logs.lines().filter(|l| l.starts_with("nvidia")).collect();
    assert_eq!(seen, expect, "{logs}");
    let envs = logs
        .lines()
        .filter(|l| l.starts_with("BERTH_TEST_GPU_"))
        .count();
    assert_eq!(envs, 4, "{logs}");

    // The allocation's cpuset is in the bundle (recorded: this machine lacks the DGX's CPUs).
    let id = t["id"].as_str().unwrap();
    let bundle = dev
        .data
        .path()
        .join("agents/dgx1/node/tasks")
        .join(id)
        .join("bundle/config.json");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(bundle).unwrap()).unwrap();
    let want: Vec<String> = a["cpuset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(cfg["annotations"]["berth.cpuset"], want.join(","));
    assert_eq!(cfg["annotations"]["berth.mems"], numa.to_string());

    // An impossible request stays pending with a one-line reason; nothing is held.
    dev.run_spec(
        "huge",
        "name: huge\nimage: busybox:latest\nresources:\n  gpus: {count: 16, interconnect: nvlink}\n",
    );
    let t = dev.wait_task("huge", T, |t| {
        t["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("0/4 nodes"))
    });
    assert_eq!(t["state"], "pending");
    let msg = t["message"].as_str().unwrap();
    assert!(
        msg.contains("lack 16 free GPUs on one NVLink island"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    let ex: Value = serde_json::from_str(&dev.ok(&["explain", "huge", "--json"])).unwrap();
    assert_eq!(ex["nodes"].as_array().unwrap().len(), 4);
    assert!(
        ex["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["filtered_by"] != ""),
        "{ex}"
    );

    // A gang of 3 x 8 GPUs on two DGXs: pending, all or none, nothing held.
    let before: Value = serde_json::from_str(&dev.ok(&["nodes", "--json"])).unwrap();
    dev.run_spec(
        "gang",
        "name: gang\nimage: busybox:latest\ninstances: 3\ngang: true\nresources:\n  memory: 1Gi\n  gpus: {count: 8, interconnect: nvlink}\n",
    );
    wait_for("the gang's reason", T, || {
        let ps = dev.ps();
        let g: Vec<&Value> = ps.iter().filter(|t| t["app"] == "gang").collect();
        let waiting = g.iter().all(|t| {
            t["state"] == "pending"
                && t["node"].is_null()
                && t["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("gang of 3: 2 of 3 fit"))
        });
        (g.len() == 3 && waiting).then_some(())
    });
    let after: Value = serde_json::from_str(&dev.ok(&["nodes", "--json"])).unwrap();
    assert_eq!(before, after, "the gang holds nothing");
}

#[test]
fn exclusive_cores_are_enforced_on_the_real_node() {
    let dev = Dev::start();
    dev.run_spec(
        "pinned",
        "name: pinned\nimage: busybox:latest\nrestart: never\n\
         command: [/bin/sh, -c, 'grep -E \"Cpus_allowed_list|Mems_allowed_list\" /proc/self/status']\n\
         resources: {cores: 1, memory: 64Mi, numa: single-numa-node}\n",
    );
    let t = dev.wait_task("pinned", T, |t| t["state"] == "exited");
    assert_eq!(t["exit_code"], 0, "{t}");
    let cpuset = &t["allocation"]["cpuset"];
    assert_eq!(cpuset.as_array().unwrap().len(), 1, "{t}");
    let logs = dev.ok(&["logs", "pinned"]);
    let cpus = logs
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list"))
        .unwrap();
    assert_eq!(
        cpus.split_whitespace().last().unwrap(),
        cpuset[0].to_string(),
        "{logs}"
    );
    let mems = logs
        .lines()
        .find(|l| l.starts_with("Mems_allowed_list"))
        .unwrap();
    assert_eq!(
        mems.split_whitespace().last().unwrap(),
        t["allocation"]["numa_nodes"][0].to_string()
    );
}

/// A CDI spec of two fake FPGAs (device nodes with /dev/null's numbers).
fn write_fpga_cdi(dir: &std::path::Path) {
    let mut yaml = String::from("cdiVersion: 0.6.0\nkind: example.com/fpga\ndevices:\n");
    for i in 0..2 {
        let node = dir.join(format!("fpga{i}"));
        common::mknod_null(&node);
        yaml.push_str(&format!(
            "- name: fpga{i}\n  containerEdits:\n    deviceNodes: [{{path: /dev/fpga{i}, hostPath: {}}}]\n",
            node.display()
        ));
    }
    std::fs::write(dir.join("fpga.yaml"), yaml).unwrap();
}

#[test]
fn custom_devices_come_from_cdi_and_are_held_exclusively() {
    let mut dev = Dev::start();
    let cdi = dev.data.path().join("cdi-fpga");
    std::fs::create_dir_all(&cdi).unwrap();
    write_fpga_cdi(&cdi);
    dev.agent_with("fpga1", "cpu-2s", &["--cdi-dir", cdi.to_str().unwrap()]);
    let show = dev.ok(&["node", "show", "fpga1"]);
    assert!(show.contains("device example.com/fpga=fpga0"), "{show}");

    dev.run_spec(
        "fpga",
        "name: fpga\nimage: busybox:latest\nrestart: never\n\
         command: [/bin/sh, -c, 'ls /dev | grep fpga; sleep 30']\n\
         resources: {memory: 64Mi, devices: {example.com/fpga: 1}}\n",
    );
    let t = dev.wait_task("fpga", T, |t| t["state"] == "running");
    assert_eq!(t["node"], "fpga1", "{t}");
    let held = t["allocation"]["devices"][0].as_str().unwrap().to_string();
    assert!(held.starts_with("example.com/fpga=fpga"), "{t}");
    let logs = wait_for("the device listing", T, || {
        let l = dev.ok(&["logs", "fpga"]);
        (!l.trim().is_empty()).then_some(l)
    });
    let seen: Vec<&str> = logs.lines().filter(|l| l.starts_with("fpga")).collect();
    assert_eq!(seen, vec![held.split('=').nth(1).unwrap()], "{logs}");

    // One of two is held: a task asking for two waits and says why.
    dev.run_spec(
        "fpga2",
        "name: fpga2\nimage: busybox:latest\nresources: {devices: {example.com/fpga: 2}}\n",
    );
    let t = dev.wait_task("fpga2", T, |t| {
        t["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("0/2 nodes"))
    });
    assert_eq!(t["state"], "pending");
    assert_eq!(
        t["message"], "0/2 nodes: 2 lack 2 free example.com/fpga",
        "{t}"
    );
    // A bad kind is refused naming the field, and nothing is stored.
    let bad = dev.data.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: bad\nimage: busybox:latest\nresources: {devices: {fpga: 1}}\n",
    )
    .unwrap();
    let out = dev.berth(&["run", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resources.devices.fpga:"), "{err}");
    assert!(dev.ps().iter().all(|t| t["app"] != "bad"));
}
