//! Placement simulations that drive Berth's real scheduler pipeline
//! (`berth-sched`) on synthetic or recorded workloads.
//!
//! - [`openb`]: the openb GPU-fragmentation benchmark (Alibaba's production
//!   GPU traces as used by the FGD paper), reproduced number for number.
//! - [`scale`]: placements per second and latency on a large synthetic
//!   cluster built from the hardware fixtures, with and without sampling.
#![forbid(unsafe_code)]

pub mod openb;
pub mod scale;
pub mod wasm;

use std::path::PathBuf;

pub use openb::{OpenbOpts, OpenbReport, parse_seeds, run_openb};
pub use scale::{ScaleOpts, ScaleReport, run_scale};
pub use wasm::{ExtraPlugin, WasmPlugins};

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A CSV file is malformed: names the file, line (1-based) and column.
    #[error("{}:{line}: column {column}: {msg}", file.display())]
    Csv {
        /// The file.
        file: PathBuf,
        /// Line number, 1-based.
        line: usize,
        /// Column, by header name (or position when there is none).
        column: String,
        /// What is wrong.
        msg: String,
    },
    /// The policy name is not known.
    #[error(transparent)]
    Policy(#[from] berth_sched::policy::UnknownPolicy),
    /// A seed list could not be parsed.
    #[error("bad seed list {input:?}: {msg}")]
    Seeds {
        /// What was given.
        input: String,
        /// What is wrong.
        msg: String,
    },
    /// The options or inputs make no sense (no seeds, no nodes, ...).
    #[error("{0}")]
    Invalid(String),
    /// A hardware fixture could not be loaded.
    #[error("fixture: {0}")]
    Fixture(String),
}
