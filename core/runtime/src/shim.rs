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
        Ok((pid, pipes)) => {
            let _ = td.write_pid(pid);
            sync_line(&format!("started {pid}"));
            let rec = pump_and_wait(&td, pid, pipes);
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

/// The read ends of the container's stdout and stderr pipes.
type Pipes = (OwnedFd, OwnedFd);

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn start(td: &TaskDir, id: &str, state_root: &Path) -> Result<(i32, Pipes), String> {
    mount_root(td)?;
    // The container writes into pipes; the shim keeps the log (records
    // with their stream and time, rotated), so log writes are charged to
    // the shim, not the container.
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let stdin = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let mut container = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(state_root)
        .map_err(|e| format!("state root {}: {e}", state_root.display()))?
        .with_stdin(OwnedFd::from(stdin))
        .with_stdout(out_w)
        .with_stderr(err_w)
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
    Ok((pid, (out_r, err_r)))
}

/// Copies the container's output into its log until its init exits
/// (reaping every child meanwhile); returns how it ended.
fn pump_and_wait(td: &TaskDir, pid: i32, (out, err): Pipes) -> ExitRecord {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::{AsFd, AsRawFd};
    let limits = td.read_launch().map(|l| l.spec.logs).unwrap_or_default();
    let mut log = match crate::logs::LogWriter::open(&td.log_path(), limits) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(error = %e, "opening the container log; output is dropped");
            None
        }
    };
    for fd in [&out, &err] {
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let streams = [
        (&out, crate::logs::Stream::Stdout),
        (&err, crate::logs::Stream::Stderr),
    ];
    let mut open = [true, true];
    let mut buf = vec![0u8; 64 * 1024];
    let mut drain = |open: &mut [bool; 2], log: &mut Option<crate::logs::LogWriter>| {
        for (i, (fd, stream)) in streams.iter().enumerate() {
            while open[i] {
                match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                    Ok(0) => open[i] = false,
                    Ok(n) => {
                        if let Some(w) = log.as_mut() {
                            let _ = w.feed(*stream, &buf[..n]);
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break, // EAGAIN: nothing more now
                }
            }
        }
    };
    loop {
        {
            let mut fds: Vec<PollFd> = streams
                .iter()
                .zip(open)
                .filter(|(_, o)| *o)
                .map(|((fd, _), _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                .collect();
            if fds.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(200));
            } else {
                let _ = poll(&mut fds, PollTimeout::from(200u16));
            }
        }
        drain(&mut open, &mut log);
        if let Some(rec) = reap(pid) {
            // The container is gone (its pid namespace with it): take what
            // is left in the pipes.
            drain(&mut open, &mut log);
            if let Some(w) = log.as_mut() {
                let _ = w.flush_partial();
            }
            return rec;
        }
    }
}

/// Reaps whatever children have ended; the init's status once it has.
fn reap(pid: i32) -> Option<ExitRecord> {
    loop {
        match waitpid(
            None::<Pid>,
            Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG),
        ) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => {
                return Some(ExitRecord {
                    code,
                    signal: None,
                    error: None,
                });
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                return Some(ExitRecord {
                    code: 128 + sig as i32,
                    signal: Some(sig as i32),
                    error: None,
                });
            }
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECHILD) => {
                return Some(ExitRecord {
                    code: -1,
                    signal: None,
                    error: Some("the container's init is gone without a status".into()),
                });
            }
            Err(e) => {
                return Some(ExitRecord {
                    code: -1,
                    signal: None,
                    error: Some(format!("waiting for the container: {e}")),
                });
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
