//! How a task's log rotates: `logs: {max_size: 10Mi, files: 3}`.

use serde::{Deserialize, Serialize};

use super::{AppSpec, FieldError};
use crate::quantity::Bytes;

/// Default rotation size: 10Mi.
pub const DEFAULT_LOG_SIZE: Bytes = Bytes(10 << 20);
/// Default number of files kept (the current one included).
pub const DEFAULT_LOG_FILES: u32 = 3;
/// Smallest rotation size: 1Ki.
pub const MIN_LOG_SIZE: Bytes = Bytes(1 << 10);
/// Largest rotation size: 1Gi.
pub const MAX_LOG_SIZE: Bytes = Bytes(1 << 30);
/// Most files kept.
pub const MAX_LOG_FILES: u32 = 20;

/// Log rotation of an app's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    /// Rotate once the current file is this big (1Ki to 1Gi; default 10Mi).
    #[serde(default = "default_size")]
    pub max_size: Bytes,
    /// Files kept, the current one included (1 to 20; default 3).
    #[serde(default = "default_files")]
    pub files: u32,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            max_size: DEFAULT_LOG_SIZE,
            files: DEFAULT_LOG_FILES,
        }
    }
}

fn default_size() -> Bytes {
    DEFAULT_LOG_SIZE
}

fn default_files() -> u32 {
    DEFAULT_LOG_FILES
}

impl AppSpec {
    /// The log rotation in force.
    pub fn logs(&self) -> Logs {
        self.logs.unwrap_or_default()
    }

    pub(super) fn validate_logs(&self, p: &mut Vec<FieldError>) {
        let l = self.logs();
        if l.max_size < MIN_LOG_SIZE || l.max_size > MAX_LOG_SIZE {
            p.push(FieldError::new(
                "logs.max_size",
                format!(
                    "{} is out of range ({MIN_LOG_SIZE} to {MAX_LOG_SIZE})",
                    l.max_size
                ),
            ));
        }
        if l.files == 0 || l.files > MAX_LOG_FILES {
            p.push(FieldError::new(
                "logs.files",
                format!("{} is out of range (1 to {MAX_LOG_FILES})", l.files),
            ));
        }
    }
}
