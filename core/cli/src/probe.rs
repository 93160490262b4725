//! `berth probe`: this machine's hardware, a fixture, an hwloc synthetic
//! topology or an lstopo XML file, as a tree or JSON.

use std::path::PathBuf;

use anyhow::anyhow;
use berth_hostprobe::{hwloc, load_fixture, probe, render};

/// Runs `berth probe`.
pub fn run(
    json: bool,
    fixture: Option<String>,
    synthetic: Option<String>,
    xml: Option<PathBuf>,
    timings: bool,
) -> anyhow::Result<()> {
    let inv = if let Some(f) = fixture {
        load_fixture(&f)?
    } else if let Some(desc) = synthetic {
        hwloc::from_synthetic(&desc).map_err(|e| anyhow!("--synthetic: {e}"))?
    } else if let Some(path) = xml {
        hwloc::from_xml_file(&path).map_err(|e| anyhow!("--xml: {e}"))?
    } else {
        let (inv, times) = probe::probe_timed();
        if timings {
            for (backend, d) in times {
                eprintln!("{backend}: {:.1} ms", d.as_secs_f64() * 1000.0);
            }
        }
        inv
    };
    if crate::output::structured(json) {
        crate::output::print(&inv)?;
    } else {
        print!("{}", render::tree(&inv));
    }
    Ok(())
}
