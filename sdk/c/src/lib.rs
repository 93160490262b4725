//! Builds Berth plugins written in C into WebAssembly components.
//!
//! The path: bindings for one world of the plugin contract (`sdk/wit`) are
//! generated with `wit-bindgen-c`; `clang-14 --target=wasm32-wasi
//! -mexec-model=reactor` compiles the plugin's sources with them into a
//! core module (wasi-libc gives `malloc`, `memcpy`, `snprintf`...); the
//! module must import nothing (a plugin gets no filesystem, clock or
//! other WASI call, so stdio is out); `wit-component` encodes it as a
//! component. No `cargo install` and no Rust wasm target are needed: this
//! runs in a `build.rs` or in `berth plugin build`.
//!
//! ```no_run
//! let wasm = berth_sdk_c::Build::new("score", "/tmp/out")
//!     .source("binpack.c")
//!     .compile()
//!     .unwrap();
//! std::fs::write("binpack.wasm", wasm).unwrap();
//! ```
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use wit_bindgen_core::wit_parser::Resolve;

/// The worlds of the contract a plugin can be built for.
pub const WORLDS: &[&str] = &[
    "admission",
    "admission-review",
    "filter",
    "score",
    "allocate",
    "policy",
];

/// Why a plugin did not build. Each names the step and the cause.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The contract does not parse, or has no such world.
    #[error("plugin contract {path}: {reason}")]
    Wit {
        /// The WIT directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// clang could not be run.
    #[error(
        "running {clang}: {source} (install clang-14, lld-14, wasi-libc and libclang-rt-14-dev-wasm32)"
    )]
    NoClang {
        /// The compiler.
        clang: String,
        /// The spawn error.
        source: std::io::Error,
    },
    /// clang failed.
    #[error("compiling {sources}:\n{stderr}")]
    Compile {
        /// The sources.
        sources: String,
        /// Its messages.
        stderr: String,
    },
    /// The module imports functions a plugin may not have.
    #[error(
        "the module imports {0}: plugins get no filesystem, clock or other WASI calls (printf, fopen, time...); log through the host instead"
    )]
    Imports(String),
    /// wit-component refused the module.
    #[error("encoding the component: {0}")]
    Encode(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The contract shipped with this crate (`sdk/wit`).
pub fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit")
}

/// One plugin build.
#[derive(Debug, Clone)]
pub struct Build {
    wit: PathBuf,
    world: String,
    sources: Vec<PathBuf>,
    includes: Vec<PathBuf>,
    out_dir: PathBuf,
    clang: String,
    flags: Vec<String>,
}

impl Build {
    /// A build of a plugin for `world`, with generated files under `out_dir`.
    pub fn new(world: &str, out_dir: impl Into<PathBuf>) -> Build {
        Build {
            wit: contract_dir(),
            world: world.to_string(),
            sources: Vec::new(),
            includes: Vec::new(),
            out_dir: out_dir.into(),
            clang: std::env::var("BERTH_CLANG").unwrap_or_else(|_| "clang-14".into()),
            flags: vec!["-O2".into(), "-Wall".into()],
        }
    }

    /// Uses the contract in `dir` instead of the shipped one.
    pub fn contract(mut self, dir: impl Into<PathBuf>) -> Build {
        self.wit = dir.into();
        self
    }

    /// Adds a C source file.
    pub fn source(mut self, path: impl Into<PathBuf>) -> Build {
        self.sources.push(path.into());
        self
    }

    /// Adds an include directory.
    pub fn include(mut self, dir: impl Into<PathBuf>) -> Build {
        self.includes.push(dir.into());
        self
    }

    /// Adds a compiler flag (e.g. `-DDEBUG`).
    pub fn flag(mut self, flag: impl Into<String>) -> Build {
        self.flags.push(flag.into());
        self
    }

    /// Generates the world's C bindings (`<world>.h`, `<world>.c` and
    /// `<world>_component_type.o`) and returns their directory.
    pub fn bindings(&self) -> Result<PathBuf, BuildError> {
        let wit_err = |reason: String| BuildError::Wit {
            path: self.wit.clone(),
            reason,
        };
        let mut resolve = Resolve::default();
        let (pkg, _) = resolve
            .push_dir(&self.wit)
            .map_err(|e| wit_err(format!("{e:#}")))?;
        let world = resolve
            .select_world(&[pkg], Some(&self.world))
            .map_err(|e| wit_err(format!("{e:#} (worlds: {})", WORLDS.join(", "))))?;
        let mut files = wit_bindgen_core::Files::default();
        wit_bindgen_c::Opts::default()
            .build()
            .generate(&mut resolve, world, &mut files)
            .map_err(|e| wit_err(format!("{e:#}")))?;
        let dir = self.out_dir.join(format!("bindings-{}", self.world));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for (name, bytes) in files.iter() {
            let path = dir.join(name);
            // Leave unchanged files alone so builds that watch them stay quiet.
            if std::fs::read(&path).ok().as_deref() != Some(bytes) {
                std::fs::write(&path, bytes).map_err(io(&path))?;
            }
        }
        Ok(dir)
    }

    /// Builds the component: bindings, clang, import check, encoding.
    pub fn compile(&self) -> Result<Vec<u8>, BuildError> {
        let bindings = self.bindings()?;
        let snake = self.world.replace('-', "_");
        let module = self.out_dir.join(format!(
            "{}.module.wasm",
            self.sources
                .first()
                .and_then(|s| s.file_stem())
                .and_then(|s| s.to_str())
                .unwrap_or("plugin")
        ));
        let mut cmd = Command::new(&self.clang);
        cmd.args(["--target=wasm32-wasi", "-mexec-model=reactor"])
            .args(&self.flags)
            .arg("-I")
            .arg(&bindings);
        for inc in &self.includes {
            cmd.arg("-I").arg(inc);
        }
        cmd.args(&self.sources)
            .arg(bindings.join(format!("{snake}.c")))
            .arg(bindings.join(format!("{snake}_component_type.o")))
            .arg("-o")
            .arg(&module);
        let out = cmd.output().map_err(|source| BuildError::NoClang {
            clang: self.clang.clone(),
            source,
        })?;
        let sources = || {
            self.sources
                .iter()
                .map(|s| s.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        if !out.status.success() {
            return Err(BuildError::Compile {
                sources: sources(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let bytes = std::fs::read(&module).map_err(io(&module))?;
        componentize(&bytes)
    }
}

/// Turns a core module that carries its world (a `component-type` section,
/// as wit-bindgen's C and Rust bindings embed) into a component, refusing
/// one that imports anything but the contract.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, BuildError> {
    let imports = imports(module).map_err(BuildError::Encode)?;
    if !imports.is_empty() {
        return Err(BuildError::Imports(imports.join(", ")));
    }
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|e| e.validate(true).encode())
        .map_err(|e| BuildError::Encode(format!("{e:#}")))
}

/// The functions a core module imports from anything but the contract's
/// own interfaces (`module::name`).
pub fn imports(module: &[u8]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ImportSection(reader) = payload.map_err(|e| e.to_string())? {
            for imp in reader.into_imports() {
                let imp = imp.map_err(|e| e.to_string())?;
                if !imp.module.starts_with("berth:plugin/") && !imp.module.starts_with('$') {
                    out.push(format!("{}::{}", imp.module, imp.name));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_world_has_bindings() {
        let out = tempfile::tempdir().unwrap();
        for w in WORLDS {
            let dir = Build::new(w, out.path()).bindings().unwrap();
            let snake = w.replace('-', "_");
            let h = std::fs::read_to_string(dir.join(format!("{snake}.h"))).unwrap();
            assert!(h.contains(&format!("exports_{snake}_init")), "{w}");
        }
        let e = Build::new("nope", out.path()).bindings().unwrap_err();
        assert!(e.to_string().contains("worlds: admission"), "{e}");
    }
}
