//! Hardware requests in an app spec: exclusive cores, GPUs (whole, shared
//! by thousandths, by model, memory, MIG profile and interconnect), NICs
//! and a NUMA policy. Parsed strictly and validated with field paths.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::quantity::Bytes;
use crate::spec::FieldError;

/// GPUs for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    /// How many GPUs (1..=16).
    #[serde(default = "one")]
    pub count: u32,
    /// Allowed models; a GPU matches if its model name contains one (`H100`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model: Vec<String>,
    /// Minimum memory per GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_memory: Option<Bytes>,
    /// Thousandths of one GPU to share it (1..=1000; 1000 = whole; below
    /// 1000 needs `count: 1`).
    #[serde(default = "thousand")]
    pub milli: u32,
    /// A MIG instance of this profile (e.g. `1g.10gb`) instead of whole GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig_profile: Option<String>,
    /// `nvlink`: all GPUs on one NVLink island; `any` (default).
    #[serde(default)]
    pub interconnect: Interconnect,
}

/// GPU interconnect requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interconnect {
    /// Any GPUs.
    #[default]
    Any,
    /// One NVLink island.
    Nvlink,
}

/// NICs for one instance, held exclusively.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// How many (1..=16).
    #[serde(default = "one")]
    pub count: u32,
    /// Minimum link speed in Gb/s.
    #[serde(default)]
    pub min_speed: u32,
    /// Must have an RDMA device.
    #[serde(default)]
    pub rdma: bool,
}

/// NUMA placement policy (Kubernetes Topology Manager semantics, decided
/// by the scheduler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NumaPolicy {
    /// No NUMA consideration.
    #[default]
    None,
    /// Prefer one NUMA node.
    BestEffort,
    /// The fewest NUMA nodes that can hold it.
    Restricted,
    /// One NUMA node or not at all.
    SingleNumaNode,
}

fn one() -> u32 {
    1
}

fn thousand() -> u32 {
    1000
}

/// Checks the hardware part of `resources`, pushing problems.
pub fn validate(
    cores: u32,
    gpus: Option<&GpuSpec>,
    nics: Option<&NicSpec>,
    devices: &BTreeMap<String, u32>,
    problems: &mut Vec<FieldError>,
) {
    let mut p = |path: &str, msg: String| problems.push(FieldError::new(path, msg));
    if cores > 1024 {
        p(
            "resources.cores",
            format!("{cores} is more than the maximum of 1024"),
        );
    }
    if let Some(g) = gpus {
        if g.count == 0 || g.count > 16 {
            p(
                "resources.gpus.count",
                format!("{} is not between 1 and 16", g.count),
            );
        }
        if g.milli == 0 || g.milli > 1000 {
            p(
                "resources.gpus.milli",
                format!("{} is not between 1 and 1000", g.milli),
            );
        } else if g.milli < 1000 && g.count != 1 {
            p(
                "resources.gpus.milli",
                "sharing a GPU (milli below 1000) needs count: 1".into(),
            );
        }
        for (i, m) in g.model.iter().enumerate() {
            if m.trim().is_empty() {
                p(
                    &format!("resources.gpus.model[{i}]"),
                    "must not be empty".into(),
                );
            }
        }
        if let Some(profile) = &g.mig_profile {
            let ok = profile.split_once('.').is_some_and(|(a, b)| {
                a.ends_with('g')
                    && a[..a.len() - 1].parse::<u8>().is_ok()
                    && b.ends_with("gb")
                    && b[..b.len() - 2].parse::<u16>().is_ok()
            });
            if !ok {
                p(
                    "resources.gpus.mig_profile",
                    format!("{profile:?} is not a MIG profile like 1g.10gb"),
                );
            } else if g.count != 1 || g.milli != 1000 {
                p(
                    "resources.gpus.mig_profile",
                    "a MIG instance is requested with count: 1 and no milli".into(),
                );
            }
        }
        if g.interconnect == Interconnect::Nvlink && g.milli < 1000 {
            p(
                "resources.gpus.interconnect",
                "nvlink applies to whole GPUs".into(),
            );
        }
    }
    if let Some(n) = nics
        && (n.count == 0 || n.count > 16)
    {
        p(
            "resources.nics.count",
            format!("{} is not between 1 and 16", n.count),
        );
    }
    for (kind, &count) in devices {
        let path = format!("resources.devices{}", crate::spec::key_segment(kind));
        if let Err(why) = check_device_kind(kind) {
            p(&path, why);
        } else if count == 0 || count > 64 {
            p(&path, format!("{count} is not between 1 and 64"));
        }
    }
}

/// Checks a device kind a spec asks for: a CDI kind (see
/// [`berth_hostprobe::valid_cdi_kind`]) other than GPUs, which are asked for
/// with `resources.gpus` (it knows their topology).
pub fn check_device_kind(kind: &str) -> Result<(), String> {
    if !berth_hostprobe::valid_cdi_kind(kind) {
        return Err(format!("{kind:?} is not a CDI kind like example.com/fpga"));
    }
    if kind == "nvidia.com/gpu" {
        return Err("GPUs are requested with resources.gpus".into());
    }
    Ok(())
}
