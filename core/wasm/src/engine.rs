//! One wasmtime engine for every plugin of the process: the pooling
//! allocator, epoch interruption driven by a ticker thread, and compiled
//! components cached on disk by content hash.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::PluginError;
use crate::state::State;

/// How often the epoch advances: the granularity of call budgets.
pub const TICK: Duration = Duration::from_millis(1);

/// Most memory any one plugin may be given.
pub const MAX_MEMORY: usize = 1 << 30;

/// The engine, its linker (the host functions every world imports) and the
/// ticker that bounds calls in time.
pub struct Host {
    engine: Engine,
    linker: Linker<State>,
    stop: Arc<AtomicBool>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A compiled component and the sha256 of its bytes.
#[derive(Clone)]
pub struct Loaded {
    /// The component.
    pub component: Component,
    /// Hex sha256 of the component's bytes: its content address.
    pub digest: String,
    /// How long compiling (or loading from the cache) took.
    pub load_time: Duration,
    /// Whether it came from the on-disk cache.
    pub cached: bool,
}

/// Hex sha256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Host {
    /// The process-wide host, made on first use.
    pub fn global() -> Result<&'static Host, PluginError> {
        static HOST: OnceLock<Result<Host, String>> = OnceLock::new();
        HOST.get_or_init(|| Host::new().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| PluginError::Engine(e.clone()))
    }

    /// A new engine (trimmed wasmtime: Cranelift, components, pooling
    /// allocator; epoch interruption) and its ticker thread.
    pub fn new() -> Result<Host, PluginError> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(256)
            .total_core_instances(1024)
            .total_memories(256)
            .total_tables(512)
            .max_memory_size(MAX_MEMORY)
            .max_core_instances_per_component(8)
            .max_memories_per_component(2)
            .max_tables_per_component(4);
        let mut cfg = Config::new();
        cfg.epoch_interruption(true)
            .wasm_backtrace_max_frames(None)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if std::env::var_os("BERTH_WASM_PERFMAP").is_some() {
            // `perf` then names the plugins' functions (/tmp/perf-PID.map).
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&cfg).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        crate::bindings::policy::berth::plugin::host::add_to_linker::<
            State,
            wasmtime::component::HasSelf<State>,
        >(&mut linker, |s| s)
        .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("berth-wasm-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    e.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Engine(format!("starting the epoch ticker: {e}")))?;
        Ok(Host {
            engine,
            linker,
            stop,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker with the host's imports.
    pub fn linker(&self) -> &Linker<State> {
        &self.linker
    }

    /// Compiles `bytes`, or loads the compiled form from `cache` (a
    /// directory of `<sha256>-<engine>.cwasm` files), writing it there
    /// after a compile. Bytes that are not a component are an error naming
    /// the cause; a cache entry that does not load is replaced.
    pub fn load(&self, bytes: &[u8], cache: Option<&Path>) -> Result<Loaded, PluginError> {
        let t0 = Instant::now();
        let digest = digest(bytes);
        let cached_path = cache.map(|dir| dir.join(format!("{digest}-{}.cwasm", self.compat())));
        if let Some(path) = &cached_path
            && path.exists()
        {
            // SAFETY: the cache directory holds only what this host wrote
            // with `serialize` for the same engine settings (the file name
            // carries the compatibility hash); a mismatch is an error, not
            // undefined behaviour.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => {
                    return Ok(Loaded {
                        component,
                        digest,
                        load_time: t0.elapsed(),
                        cached: true,
                    });
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "replacing a bad cache entry")
                }
            }
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| PluginError::Component {
                reason: format!("{e:#}"),
            })?;
        if let Some(path) = &cached_path
            && let Err(e) = write_cache(path, &component)
        {
            tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled plugin");
        }
        Ok(Loaded {
            component,
            digest,
            load_time: t0.elapsed(),
            cached: false,
        })
    }

    fn compat(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }
}

fn write_cache(path: &PathBuf, component: &Component) -> Result<(), String> {
    let bytes = component.serialize().map_err(|e| format!("{e:#}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}
