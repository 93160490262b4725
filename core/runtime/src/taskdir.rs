//! A task's directory on the node: its bundle, writable root, log, and the
//! small files through which the shim and the agent talk across restarts.
//!
//! ```text
//! <root>/tasks/<task>/
//!   launch.json      what to run and which attempt this is (agent)
//!   bundle/config.json  the OCI runtime config (agent)
//!   rootfs/ upper/ work/  the container's root (overlay or copy)
//!   overlay.json     the overlay the shim mounts in its own namespace (agent)
//!   container.log    the container's stdout and stderr
//!   shim.log         the shim's own log
//! <state root>/tasks/<task>/   on tmpfs: meaningless after a reboot
//!   shim.pid         the shim's pid and start time (shim)
//!   init.pid         the container init's pid (shim)
//!   exit.json        how the container ended (shim), absent while it runs
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::LaunchSpec;
use crate::image::OverlayMount;

/// How a container ended, written by its shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code; `128 + signal` when killed by a signal; -1 when it never started.
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Why it could not be started or waited for.
    pub error: Option<String>,
}

/// What the agent asked to run, kept for recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRecord {
    /// The launch spec.
    pub spec: LaunchSpec,
    /// Attempt number, from 0; a restart increments it.
    pub attempt: u32,
}

/// Paths and records of one task directory and its run directory.
#[derive(Debug, Clone)]
pub struct TaskDir {
    dir: PathBuf,
    run: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

impl TaskDir {
    /// Wraps a task directory and its run directory (pids, exit status).
    pub fn new(dir: PathBuf, run: PathBuf) -> TaskDir {
        TaskDir { dir, run }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The run directory (created by [`TaskDir::create_run_dir`]).
    pub fn run_path(&self) -> &Path {
        &self.run
    }

    /// Creates the run directory.
    pub fn create_run_dir(&self) -> io::Result<()> {
        fs::create_dir_all(&self.run)
    }

    /// Deletes the run directory.
    pub fn remove_run_dir(&self) -> io::Result<()> {
        match fs::remove_dir_all(&self.run) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The OCI bundle directory.
    pub fn bundle_dir(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// The container's combined stdout/stderr log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("container.log")
    }

    /// The shim's own log.
    pub fn shim_log_path(&self) -> PathBuf {
        self.dir.join("shim.log")
    }

    /// Records the container init pid (read only after the shim says so).
    pub fn write_pid(&self, pid: i32) -> io::Result<()> {
        fs::write(self.run.join("init.pid"), pid.to_string())
    }

    /// The container init pid, once started.
    pub fn read_pid(&self) -> Option<i32> {
        fs::read_to_string(self.run.join("init.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Records the shim's own pid and its start time (to detect pid reuse).
    pub fn write_shim_pid(&self, pid: i32) -> io::Result<()> {
        let start = proc_start_time(pid).unwrap_or(0);
        fs::write(self.run.join("shim.pid"), format!("{pid} {start}"))
    }

    /// The shim pid if that process is still the shim that wrote it.
    pub fn live_shim(&self) -> Option<i32> {
        let text = fs::read_to_string(self.run.join("shim.pid")).ok()?;
        let mut parts = text.split_whitespace();
        let pid: i32 = parts.next()?.parse().ok()?;
        let start: u64 = parts.next()?.parse().ok()?;
        (proc_start_time(pid) == Some(start)).then_some(pid)
    }

    /// Records how the container ended.
    pub fn write_exit(&self, rec: &ExitRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec(rec).map_err(io::Error::other)?;
        write_atomic(&self.run.join("exit.json"), &bytes)
    }

    /// How the container ended, if it did.
    pub fn read_exit(&self) -> Option<ExitRecord> {
        serde_json::from_slice(&fs::read(self.run.join("exit.json")).ok()?).ok()
    }

    /// Forgets the previous attempt's pids and exit before a restart.
    pub fn clear_run_files(&self) {
        for f in ["exit.json", "init.pid", "shim.pid"] {
            let _ = fs::remove_file(self.run.join(f));
        }
    }

    /// Records the overlay the shim must mount (or that there is none: a copy).
    pub fn write_overlay(&self, m: Option<&OverlayMount>) -> io::Result<()> {
        let path = self.dir.join("overlay.json");
        match m {
            Some(m) => write_atomic(&path, &serde_json::to_vec(m).map_err(io::Error::other)?),
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// The overlay the shim must mount, if any.
    pub fn read_overlay(&self) -> io::Result<Option<OverlayMount>> {
        match fs::read(self.dir.join("overlay.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves the launch record.
    pub fn write_launch(&self, rec: &LaunchRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
        write_atomic(&self.dir.join("launch.json"), &bytes)
    }

    /// The launch record, if any.
    pub fn read_launch(&self) -> Option<LaunchRecord> {
        serde_json::from_slice(&fs::read(self.dir.join("launch.json")).ok()?).ok()
    }
}

/// A process's start time in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` if it does not exist or has exited.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    // A zombie has exited: an adopted shim whose parent (an earlier agent)
    // is gone stays one until init reaps it.
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_a_live_shim_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let td = TaskDir::new(dir.path().to_path_buf(), dir.path().join("run"));
        td.create_run_dir().unwrap();
        assert_eq!(td.live_shim(), None);
        td.write_shim_pid(std::process::id() as i32).unwrap();
        assert_eq!(td.live_shim(), Some(std::process::id() as i32));
        fs::write(
            td.run_path().join("shim.pid"),
            format!("{} 1", std::process::id()),
        )
        .unwrap();
        assert_eq!(td.live_shim(), None, "start time mismatch means pid reuse");
    }

    #[test]
    fn exit_record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let td = TaskDir::new(dir.path().to_path_buf(), dir.path().join("run"));
        td.create_run_dir().unwrap();
        assert!(td.read_exit().is_none());
        let rec = ExitRecord {
            code: 3,
            signal: None,
            error: None,
        };
        td.write_exit(&rec).unwrap();
        assert_eq!(td.read_exit(), Some(rec));
        td.clear_run_files();
        assert!(td.read_exit().is_none());
    }
}
