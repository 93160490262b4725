//! Hardware inventories end to end: the real probe, fixtures, simulated
//! nodes registering their hardware, and inventory changes reaching the
//! server.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BERTH, Dev, wait_for};
use serde_json::Value;

fn berth(args: &[&str]) -> std::process::Output {
    Command::new(BERTH).args(args).output().unwrap()
}

#[test]
fn probe_sees_this_machine() {
    let out = berth(&["probe", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inv: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pus: usize = inv["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["numa_nodes"].as_array().unwrap())
        .flat_map(|n| n["cores"].as_array().unwrap())
        .map(|c| c["pus"].as_array().unwrap().len())
        .sum();
    let nproc = std::thread::available_parallelism().unwrap().get();
    assert_eq!(pus, nproc, "PUs equal nproc");
    let numa = &inv["packages"][0]["numa_nodes"][0];
    assert!(numa["memory_bytes"].as_u64().unwrap() > 0);
    assert!(inv["gpus"].as_array().unwrap().is_empty());
    let notes = inv["probe_notes"].to_string();
    assert!(
        notes.contains("nvml"),
        "a note says NVML is absent: {notes}"
    );
    let nic = &inv["nics"][0];
    assert!(nic["name"].as_str().is_some_and(|n| !n.is_empty()), "{inv}");
    let tree = String::from_utf8(berth(&["probe"]).stdout).unwrap();
    assert!(tree.contains("numa 0:"), "{tree}");
}

#[test]
fn probe_shows_fixtures_and_refuses_bad_ones() {
    let out = berth(&["probe", "--fixture", "dgx-h100"]);
    assert!(out.status.success());
    let tree = String::from_utf8(out.stdout).unwrap();
    let gpu_lines = |t: &str| {
        t.lines()
            .filter(|l| l.trim_start().starts_with("gpu "))
            .count()
    };
    assert_eq!(gpu_lines(&tree), 8, "{tree}");
    assert_eq!(tree.matches("NVLink to").count(), 8);
    let fast_nics = tree
        .lines()
        .filter(|l| l.trim_start().starts_with("nic ") && l.contains("400 Gb/s"))
        .count();
    assert_eq!(fast_nics, 8);
    assert_eq!(tree.matches("shares PCIe switch").count(), 8);
    assert!(tree.contains("NVLink islands: [0-7]"));

    let out = berth(&[
        "probe",
        "--synthetic",
        "Package:2 NUMANode:2 Core:8 PU:2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packages"].as_array().unwrap().len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    let text =
        berth_hostprobe::fixture::FIXTURES[0]
            .1
            .replacen("\"numa_node\": 0", "\"numa_node\": 5", 1);
    std::fs::write(&bad, text).unwrap();
    let out = berth(&["probe", "--fixture", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gpus[0].numa_node"), "{err}");
    let out = berth(&["probe", "--fixture", "no-such-machine"]);
    assert!(!out.status.success());
    let out = berth(&["probe", "--synthetic", "Banana:3"]);
    assert!(!out.status.success());
}

#[test]
fn simulated_nodes_register_their_hardware_and_changes() {
    let mut dev = Dev::start();
    dev.agent("dgx1", "dgx-h100");
    // A fixture file we can edit: the CPU-only server.
    let file = dev.data.path().join("cpu2s.json");
    std::fs::write(&file, berth_hostprobe::fixture::FIXTURES[3].1).unwrap();
    dev.agent("cpu1", file.to_str().unwrap());
    let nodes = dev.nodes();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let dgx = nodes.iter().find(|n| n["name"] == "dgx1").unwrap();
    assert_eq!(dgx["cores"], 112);
    assert_eq!(dgx["gpus"], 8);
    assert_eq!(dgx["gpu_model"], "8x NVIDIA H100 80GB HBM3");
    assert_eq!(dgx["cpu_millis"], 224_000, "one CPU per PU");
    assert_eq!(dgx["memory_bytes"], 2u64 << 40);
    let cpu = nodes.iter().find(|n| n["name"] == "cpu1").unwrap();
    assert_eq!(
        (cpu["cores"].as_u64(), cpu["gpus"].as_u64()),
        (Some(64), Some(0))
    );
    let table = dev.ok(&["nodes"]);
    assert!(table.contains("8x NVIDIA H100 80GB HBM3"), "{table}");

    let show = dev.ok(&["node", "show", "dgx1"]);
    let gpu_lines = show
        .lines()
        .filter(|l| l.trim_start().starts_with("gpu "))
        .count();
    assert_eq!(gpu_lines, 8, "{show}");
    assert!(show.contains("NVLink islands: [0-7]"));

    // A NIC goes down on the simulated node: the server hears of it.
    std::fs::write(
        &file,
        berth_hostprobe::fixture::FIXTURES[3].1.replacen(
            "\"link_up\": true",
            "\"link_up\": false",
            1,
        ),
    )
    .unwrap();
    wait_for(
        "the NIC change to reach the server",
        Duration::from_secs(20),
        || {
            dev.ok(&["node", "show", "cpu1"])
                .contains("nic ens1f0: 25 Gb/s, DOWN")
                .then_some(())
        },
    );

    let out = dev.berth(&["node", "show", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node named nope"));
}

#[test]
fn an_agent_with_a_bad_fixture_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BERTH)
        .args([
            "agent",
            "--inventory",
            "dgx-h1000",
            "--listen",
            "127.0.0.1:1",
        ])
        .env("BERTH_DATA_DIR", dir.path())
        .env("BERTH_ADDR", "127.0.0.1:9")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--inventory") && err.contains("dgx-h100"),
        "{err}"
    );
}

#[test]
fn shell_completions_are_generated_and_load() {
    for (shell, marker) in [
        ("bash", "complete -F _berth"),
        ("zsh", "#compdef berth"),
        ("fish", "complete -c berth"),
    ] {
        let out = berth(&["completion", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}");
        assert!(text.contains("quota"), "{shell}: subcommands are in it");
    }
    // bash loads it and registers the function.
    let out = Command::new("bash")
        .args([
            "-c",
            &format!("source <({BERTH} completion bash) && complete -p berth"),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("-F _berth berth"),
        "{out:?}"
    );
    let out = berth(&["completion", "tcsh"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}
