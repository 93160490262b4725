//! Builds every plugin of this directory into a Wasm component (see
//! `berth-sdk-c`): C sources, bindings from `sdk/wit`, clang-14 for
//! wasm32-wasi, wit-component. The components land in `OUT_DIR`; the
//! library lists them.

use std::path::{Path, PathBuf};

/// (name, world, sources, extra flags).
const PLUGINS: &[(&str, &str, &[&str], &[&str])] = &[
    ("binpack", "score", &["binpack/binpack.c"], &[]),
    ("fgd", "policy", &["fgd/fgd.c"], &["-lm"]),
    (
        "label-filter",
        "filter",
        &["label-filter/label_filter.c"],
        &[],
    ),
    (
        "team-admission",
        "admission",
        &["team-admission/team_admission.c"],
        &[],
    ),
    (
        "allowed-registries",
        "admission-review",
        &["allowed-registries/allowed_registries.c"],
        &[],
    ),
    ("last-gpu", "allocate", &["last-gpu/last_gpu.c"], &[]),
    ("hostile-loop", "score", &["hostile/loop.c"], &[]),
    ("hostile-hog", "score", &["hostile/hog.c"], &[]),
    ("hostile-trap", "filter", &["hostile/trap.c"], &[]),
    ("hostile-badlen", "score", &["hostile/badlen.c"], &["-lm"]),
    ("hostile-flood", "score", &["hostile/flood.c"], &[]),
    ("hostile-badgpu", "allocate", &["hostile/badgpu.c"], &[]),
];

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let include = here.join("../sdk/c/include");
    println!(
        "cargo:rerun-if-changed={}",
        here.join("../sdk/wit").display()
    );
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-env-changed=BERTH_CLANG");
    let mut list = String::from("/// (name, world, path of the built component).\n");
    list.push_str("pub const BUILT: &[(&str, &str, &str)] = &[\n");
    for (name, world, sources, flags) in PLUGINS {
        let mut b = berth_sdk_c::Build::new(world, &out).include(&include);
        for s in *sources {
            let path = here.join(s);
            println!("cargo:rerun-if-changed={}", path.display());
            b = b.source(path);
        }
        for f in *flags {
            b = b.flag(*f);
        }
        let wasm = b.compile().unwrap_or_else(|e| panic!("plugin {name}: {e}"));
        let path = out.join(format!("{name}.wasm"));
        std::fs::write(&path, wasm).unwrap();
        list.push_str(&format!(
            "    ({name:?}, {world:?}, {:?}),\n",
            path_str(&path)
        ));
    }
    list.push_str("];\n");
    std::fs::write(out.join("built.rs"), list).unwrap();
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}
