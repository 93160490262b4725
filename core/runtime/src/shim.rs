//! `berth shim`: the single-threaded parent of one container.
//!
//! libcontainer changes the process's working directory and forks with raw
//! `clone3`, which is unsafe in a multi-threaded process. So the agent never
//! calls it: it starts one shim process per container. The shim creates and
//! starts the container, tells the agent the init pid on its stdout (a sync
//! pipe, closed right after), stays the container's parent, reaps it, records
//! the exit status in the task directory and deletes the container (its
//! cgroups and libcontainer state). Because the shim is in its own session
//! and not tied to the agent, containers survive an agent crash.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::taskdir::{ExitRecord, TaskDir};

/// Runs the shim for the container `id` whose bundle is in `dir`, with its
/// pid and exit files in `run` and libcontainer state under `state_root`.
/// Returns the process exit code.
pub fn run(dir: &Path, run: &Path, id: &str, state_root: &Path) -> i32 {
    // Its own session: signals aimed at the agent's terminal or process
    // group never reach the shim, so containers outlive the agent.
    let _ = nix::unistd::setsid();
    // The agent may be gone when we write to the sync pipe.
    // SAFETY: SIG_IGN installs no handler code, so there is no
    // async-signal-safety to uphold; the shim has a single thread here and
    // nothing else in it changes SIGPIPE's disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // Adopt any orphan the container leaves so nothing escapes reaping.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let td = TaskDir::new(dir.to_path_buf(), run.to_path_buf());
    let _ = td.create_run_dir();
    let _ = td.write_shim_pid(std::process::id() as i32);
    match start(&td, id, state_root) {
        Ok(pid) => {
            let _ = td.write_pid(pid);
            sync_line(&format!("started {pid}"));
            let rec = wait_for(pid);
            tracing::info!(id, code = rec.code, signal = ?rec.signal, "container exited");
            let _ = td.write_exit(&rec);
            cleanup(state_root, id);
            0
        }
        Err(e) => {
            tracing::error!(id, error = %e, "container failed to start");
            let rec = ExitRecord {
                code: -1,
                signal: None,
                error: Some(e.clone()),
            };
            let _ = td.write_exit(&rec);
            sync_line(&format!("error {e}"));
            cleanup(state_root, id);
            1
        }
    }
}

fn sync_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    // Close the sync pipe so the agent's reader sees EOF.
    if let Ok(devnull) = nix::fcntl::open(
        c"/dev/null",
        nix::fcntl::OFlag::O_WRONLY,
        nix::sys::stat::Mode::empty(),
    ) {
        let _ = nix::unistd::dup2(devnull, 1);
        let _ = nix::unistd::close(devnull);
    }
}

/// Gives the shim a private mount namespace and mounts the container's
/// overlay root there. The host's mount table stays small no matter how many
/// containers run (every new mount namespace copies it), and the mount
/// disappears with the shim and its container.
fn mount_root(td: &TaskDir) -> Result<(), String> {
    let Some(overlay) = td
        .read_overlay()
        .map_err(|e| format!("reading overlay.json: {e}"))?
    else {
        return Ok(()); // a copied root: nothing to mount
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare mount namespace: {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making mounts private: {e}"))?;
    overlay.mount().map_err(|e| e.to_string())
}

fn start(td: &TaskDir, id: &str, state_root: &Path) -> Result<i32, String> {
    mount_root(td)?;
    let log = || -> Result<OwnedFd, String> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(td.log_path())
            .map(OwnedFd::from)
            .map_err(|e| format!("opening {}: {e}", td.log_path().display()))
    };
    let stdin = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let mut container = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(state_root)
        .map_err(|e| format!("state root {}: {e}", state_root.display()))?
        .with_stdin(OwnedFd::from(stdin))
        .with_stdout(log()?)
        .with_stderr(log()?)
        .validate_id()
        .map_err(|e| format!("container id {id}: {e}"))?
        .as_init(td.bundle_dir())
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("creating container: {e}"))?;
    let pid = container
        .pid()
        .ok_or_else(|| "created container has no init pid".to_string())?
        .as_raw();
    if let Err(e) = container.start() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
        return Err(format!("starting container: {e}"));
    }
    Ok(pid)
}

/// Reaps children until the container's init exits; returns its status.
fn wait_for(pid: i32) -> ExitRecord {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => {
                return ExitRecord {
                    code,
                    signal: None,
                    error: None,
                };
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                return ExitRecord {
                    code: 128 + sig as i32,
                    signal: Some(sig as i32),
                    error: None,
                };
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return ExitRecord {
                    code: -1,
                    signal: None,
                    error: Some(format!("waiting for the container: {e}")),
                };
            }
        }
    }
}

fn cleanup(state_root: &Path, id: &str) {
    let root = state_root.join(id);
    if !root.exists() {
        return;
    }
    match Container::load(root) {
        Ok(mut c) => {
            if let Err(e) = c.delete(true) {
                tracing::warn!(id, error = %e, "deleting container state");
            }
        }
        Err(e) => tracing::warn!(id, error = %e, "loading container state for delete"),
    }
}
