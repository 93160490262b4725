//! The node's hardware as the agent reports it: probed from the machine, or
//! read from a fixture to simulate hardware this machine does not have.
//! Watched for changes (a NIC goes down, the fixture file is edited), which
//! the agent re-registers.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use berth_hostprobe::{Device, FixtureError, Inventory, load_fixture};
use tokio::sync::watch;

/// Where the inventory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventorySource {
    /// Probe this machine (hwloc, NVML, sysfs).
    Probe,
    /// A built-in fixture name or an inventory file path.
    Fixture(String),
}

/// Loads the inventory once, with the devices the CDI specs under
/// `cdi_dirs` describe (see [`add_cdi_devices`]).
pub async fn load(src: &InventorySource, cdi_dirs: &[PathBuf]) -> Result<Inventory, FixtureError> {
    let mut inv = match src {
        InventorySource::Probe => tokio::task::spawn_blocking(berth_hostprobe::probe::probe)
            .await
            .unwrap_or_else(|e| fallback(format!("probe task failed: {e}"))),
        InventorySource::Fixture(f) => load_fixture(f)?,
    };
    add_cdi_devices(&mut inv, cdi_dirs);
    Ok(inv)
}

/// Adds every device of the CDI specs under `dirs` that the inventory
/// does not list yet, except GPUs (`nvidia.com/gpu`: the inventory knows
/// them, with their topology, from NVML). CDI says nothing of locality, so
/// these devices have no NUMA node; list them in an inventory file to give
/// them one. A spec that does not parse is logged and skipped.
pub fn add_cdi_devices(inv: &mut Inventory, dirs: &[PathBuf]) {
    let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let reg = match berth_runtime::cdi::Registry::load(&dirs) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "CDI specs do not load; no devices from them");
            return;
        }
    };
    for (kind, name) in reg.devices() {
        let known = inv.devices.iter().any(|d| d.kind == kind && d.name == name);
        if kind != "nvidia.com/gpu" && berth_hostprobe::valid_cdi_kind(kind) && !known {
            inv.devices.push(Device {
                kind: kind.to_string(),
                name: name.to_string(),
                numa_node: None,
            });
        }
    }
}

fn fallback(note: String) -> Inventory {
    Inventory {
        version: berth_hostprobe::INVENTORY_VERSION,
        hostname: String::new(),
        source: "probe".into(),
        spec_sheet: None,
        packages: Vec::new(),
        gpus: Vec::new(),
        nics: Vec::new(),
        devices: Vec::new(),
        probe_notes: vec![note],
    }
}

fn mtime(path: &str) -> Option<SystemTime> {
    std::fs::metadata(PathBuf::from(path)).ok()?.modified().ok()
}

/// Re-reads the inventory every `every` and publishes it when it changed.
/// For a probed machine only NIC state is re-read (cheap; the CPU and GPU
/// topology does not change under a running agent); a fixture file is
/// re-read when its modification time changes. A fixture that stops
/// parsing keeps the last good inventory and logs why.
pub async fn watch_changes(
    src: InventorySource,
    cdi_dirs: Vec<PathBuf>,
    tx: watch::Sender<Inventory>,
    every: Duration,
) {
    let mut last_mtime = match &src {
        InventorySource::Fixture(f) => mtime(f),
        InventorySource::Probe => None,
    };
    // The devices the source itself lists (CDI ones are re-read each time).
    let mut base_devices = match &src {
        InventorySource::Fixture(f) => load_fixture(f).map(|i| i.devices).unwrap_or_default(),
        InventorySource::Probe => Vec::new(),
    };
    loop {
        tokio::time::sleep(every).await;
        let mut next = tx.borrow().clone();
        match &src {
            InventorySource::Probe => {
                let fresh = tokio::task::spawn_blocking(berth_hostprobe::sysfs::probe_nics)
                    .await
                    .unwrap_or_default();
                merge_nics(&mut next, fresh);
            }
            InventorySource::Fixture(f) => {
                let m = mtime(f);
                if m != last_mtime {
                    last_mtime = m;
                    match load_fixture(f) {
                        Ok(inv) => {
                            base_devices = inv.devices.clone();
                            next = inv;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "inventory file changed but does not load; keeping the last one");
                        }
                    }
                }
            }
        }
        next.devices = base_devices.clone();
        add_cdi_devices(&mut next, &cdi_dirs);
        tx.send_if_modified(|cur| {
            let changed = *cur != next;
            if changed {
                tracing::info!("node inventory changed");
                *cur = next;
            }
            changed
        });
    }
}

/// Replaces NIC state with a fresh sysfs reading, keeping what only the full
/// probe knows (NUMA node and PCIe switch from hwloc).
fn merge_nics(inv: &mut Inventory, fresh: Vec<berth_hostprobe::Nic>) {
    let old = std::mem::take(&mut inv.nics);
    inv.nics = fresh
        .into_iter()
        .map(|mut n| {
            if let Some(o) = old.iter().find(|o| o.name == n.name) {
                n.numa_node = n.numa_node.or(o.numa_node);
                n.pcie_switch = n.pcie_switch.take().or_else(|| o.pcie_switch.clone());
            }
            n
        })
        .collect();
}
