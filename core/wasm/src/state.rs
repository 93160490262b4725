//! What a plugin's store holds: its memory limit (noting when it was hit),
//! and its log budget. The only host function, `log`, lives here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use crate::bindings::Level;
use crate::bindings::policy::berth::plugin::host;

/// Lines a plugin may log per call; the rest are dropped and counted.
pub const LOG_LINES_PER_CALL: u32 = 32;
/// Bytes a plugin may log per call.
pub const LOG_BYTES_PER_CALL: usize = 16 << 10;
/// Longest line kept (longer ones are cut).
pub const LOG_LINE_MAX: usize = 1024;

/// A store's data.
pub struct State {
    plugin: String,
    limits: StoreLimits,
    /// Set when a memory or table growth was refused.
    pub denied: bool,
    lines: u32,
    bytes: usize,
    dropped: Arc<AtomicU64>,
}

impl State {
    /// State for the plugin `plugin` with `memory` bytes of linear memory
    /// at most; dropped log lines are added to `dropped`.
    pub fn new(plugin: &str, memory: usize, dropped: Arc<AtomicU64>) -> State {
        State {
            plugin: plugin.to_string(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .table_elements(1 << 20)
                .instances(16)
                .tables(16)
                .memories(4)
                .build(),
            denied: false,
            lines: 0,
            bytes: 0,
            dropped,
        }
    }

    /// Starts a new call's log budget.
    pub fn new_call(&mut self) {
        self.lines = 0;
        self.bytes = 0;
    }
}

impl ResourceLimiter for State {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        self.denied |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.table_growing(current, desired, maximum)?;
        self.denied |= !ok;
        Ok(ok)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl host::Host for State {
    fn log(&mut self, level: Level, mut message: String) -> wasmtime::Result<()> {
        self.lines += 1;
        self.bytes += message.len();
        if self.lines > LOG_LINES_PER_CALL || self.bytes > LOG_BYTES_PER_CALL {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if message.len() > LOG_LINE_MAX {
            let mut cut = LOG_LINE_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        let p = self.plugin.as_str();
        match level {
            Level::Error => tracing::error!(plugin = p, "{message}"),
            Level::Warn => tracing::warn!(plugin = p, "{message}"),
            Level::Info => tracing::info!(plugin = p, "{message}"),
            Level::Debug => tracing::debug!(plugin = p, "{message}"),
        }
        Ok(())
    }
}
