//! Berth's hardware inventory: the model of a node (packages, NUMA nodes,
//! cores, PUs, caches, GPUs with NVLink and MIG, NICs), the probes that
//! fill it from the real machine (hwloc, NVML, sysfs; behind cargo
//! features), and fixture files that stand in for machines we do not have.
#![forbid(unsafe_code)]

pub mod fixture;
pub mod inventory;
pub mod render;
pub mod validate;

#[cfg(feature = "hwloc")]
pub mod hwloc;
#[cfg(feature = "nvml")]
pub mod nvml;
#[cfg(feature = "probe")]
pub mod probe;
pub mod sysfs;

pub use fixture::{FixtureError, load_fixture, parse_inventory};
pub use inventory::*;
