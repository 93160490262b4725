//! `berth exec-shim`: runs one more process in a running container (its
//! namespaces, cgroup, user and environment) through libcontainer's tenant
//! builder, from a single-threaded process as libcontainer needs. Its
//! stdin, stdout and stderr (pipes, or a pseudo-terminal the agent holds)
//! become the process's; it exits with the process's exit code (128 + the
//! signal when killed).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// What the agent needs to start `berth exec-shim` for a task.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    /// The running container's id.
    pub container: String,
    /// libcontainer's state root.
    pub state_root: std::path::PathBuf,
    /// The container's user.
    pub uid: u32,
    /// The container's group.
    pub gid: u32,
}

fn dup(fd: i32) -> Result<OwnedFd, String> {
    use std::os::fd::{AsFd, BorrowedFd};
    // SAFETY: 0, 1 and 2 are open for the life of this process (the agent
    // starts it with all three set).
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    b.as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("dup {fd}: {e}"))
}

/// Runs `args` in container `id`; returns the exit code for the process.
pub fn run(
    state_root: &Path,
    id: &str,
    (uid, gid): (u32, u32),
    env: HashMap<String, String>,
    args: Vec<String>,
) -> i32 {
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let built = (|| -> Result<i32, String> {
        ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(state_root)
            .map_err(|e| format!("state root: {e}"))?
            .with_stdin(dup(0)?)
            .with_stdout(dup(1)?)
            .with_stderr(dup(2)?)
            .as_tenant()
            .with_container_args(args)
            .with_env(env)
            .with_user(Some(uid))
            .with_group(Some(gid))
            .with_detach(false)
            .build()
            .map(|p| p.as_raw())
            .map_err(|e| format!("exec: {e}"))
    })();
    let pid = match built {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("berth exec: {e}");
            return 126;
        }
    };
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("berth exec: waiting for the process: {e}");
                return 125;
            }
        }
    }
}
