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
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxSeccomp, Spec};

/// What the agent needs to start `berth exec-shim` for a task.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    /// The running container's id.
    pub container: String,
    /// libcontainer's state root.
    pub state_root: std::path::PathBuf,
    /// The container's bundle (its seccomp profile is read from there).
    pub bundle: std::path::PathBuf,
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

/// Loads the container's seccomp filter in the exec'd process just before
/// it execs: libcontainer 0.7's tenant builder leaves `linux.seccomp` out
/// of the process it starts, which would let `berth exec` escape the
/// container's profile.
#[derive(Clone)]
struct SeccompExecutor {
    seccomp: Option<LinuxSeccomp>,
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(s) = &self.seccomp {
            libcontainer::seccomp::initialize_seccomp(s)
                .map_err(|e| ExecutorError::Other(format!("loading the seccomp profile: {e}")))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// The seccomp section of the container's bundle (none: unconfined).
fn bundle_seccomp(bundle: &Path) -> Result<Option<LinuxSeccomp>, String> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec: Spec =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(spec.linux().as_ref().and_then(|l| l.seccomp().clone()))
}

/// Runs `args` in container `id` (whose bundle is `bundle`); returns the
/// exit code for the process.
pub fn run(
    bundle: &Path,
    state_root: &Path,
    id: &str,
    (uid, gid): (u32, u32),
    env: HashMap<String, String>,
    args: Vec<String>,
) -> i32 {
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let built = (|| -> Result<i32, String> {
        let seccomp = bundle_seccomp(bundle)?;
        ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_executor(SeccompExecutor { seccomp })
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
