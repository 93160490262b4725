//! Berth's node runtime: OCI images, bundles, and containers run through
//! youki's `libcontainer`, one single-threaded `berth shim` per container.
//! It knows nothing of clusters: the agent tells it what to run.

pub mod bundle;
pub mod cdi;
pub mod cni;
pub mod containers;
pub mod exec;
pub mod logs;
pub use berth_image as image;
pub mod netns;
pub mod seccomp;
pub mod shim;
pub mod taskdir;
pub mod volume;

pub use bundle::{LaunchSpec, NetMode};
pub use containers::{Recovered, Runtime, RuntimeConfig, RuntimeError, Shim, state_root_for};
pub use taskdir::{ExitRecord, TaskDir};
