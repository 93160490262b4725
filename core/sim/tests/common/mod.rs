//! Shared test helpers (not a test target by itself: included with `mod`).

use std::path::PathBuf;

/// The openb data folder (`shared/benchmarks/openb/data`), if present.
pub fn openb_data() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/benchmarks/openb/data");
    if p.join("openb_node_list_gpu_node.csv").is_file() {
        Some(p)
    } else {
        eprintln!("skipping: openb data not found at {}", p.display());
        None
    }
}
