//! Shared test helpers (not a test target by itself: included with `mod`).

use std::path::PathBuf;

/// The openb data folder, `shared/benchmarks/openb/data` in the `shared/`
/// folder beside the checkout (CI always has it). Panics when it is
/// missing, so a test that needs it never passes without running.
pub fn openb_data() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/benchmarks/openb/data");
    let nodes = p.join("openb_node_list_gpu_node.csv");
    assert!(
        nodes.is_file(),
        "openb data not found: {} is missing; this test needs the `shared/` \
         folder beside the checkout (shared/benchmarks/openb/data)",
        nodes.display()
    );
    p
}
