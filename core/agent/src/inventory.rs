//! The node's hardware as the agent reports it: probed from the machine, or
//! read from a fixture to simulate hardware this machine does not have.
//! Watched for changes (a NIC goes down, the fixture file is edited), which
//! the agent re-registers.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use berth_hostprobe::{FixtureError, Inventory, load_fixture};
use tokio::sync::watch;

/// Where the inventory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventorySource {
    /// Probe this machine (hwloc, NVML, sysfs).
    Probe,
    /// A built-in fixture name or an inventory file path.
    Fixture(String),
}

/// Loads the inventory once.
pub async fn load(src: &InventorySource) -> Result<Inventory, FixtureError> {
    match src {
        InventorySource::Probe => Ok(tokio::task::spawn_blocking(berth_hostprobe::probe::probe)
            .await
            .unwrap_or_else(|e| fallback(format!("probe task failed: {e}")))),
        InventorySource::Fixture(f) => load_fixture(f),
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
pub async fn watch_changes(src: InventorySource, tx: watch::Sender<Inventory>, every: Duration) {
    let mut last_mtime = match &src {
        InventorySource::Fixture(f) => mtime(f),
        InventorySource::Probe => None,
    };
    loop {
        tokio::time::sleep(every).await;
        let next = match &src {
            InventorySource::Probe => {
                let mut inv = tx.borrow().clone();
                let fresh = tokio::task::spawn_blocking(berth_hostprobe::sysfs::probe_nics)
                    .await
                    .unwrap_or_default();
                merge_nics(&mut inv, fresh);
                inv
            }
            InventorySource::Fixture(f) => {
                let m = mtime(f);
                if m == last_mtime {
                    continue;
                }
                last_mtime = m;
                match load_fixture(f) {
                    Ok(inv) => inv,
                    Err(e) => {
                        tracing::warn!(error = %e, "inventory file changed but does not load; keeping the last one");
                        continue;
                    }
                }
            }
        };
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
