//! The node's container manager: prepares a task's root and bundle, starts
//! its shim, waits for it, signals and removes it, and finds live shims
//! again after an agent restart. Knows nothing of clusters.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::bundle::{LaunchSpec, runtime_config};
use crate::image::{ImageError, ImageStore, plan_rootfs, release_rootfs};
use crate::taskdir::{ExitRecord, LaunchRecord, TaskDir};

/// Errors of the container manager.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image could not be found or prepared.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
    /// The shim reported that the container could not start.
    #[error("container failed to start: {0}")]
    StartFailed(String),
    /// A CDI spec or device problem.
    #[error(transparent)]
    Cdi(#[from] crate::cdi::CdiError),
    /// A shim for this task is already running.
    #[error("task {0} already has a running container")]
    AlreadyRunning(String),
    /// Its network could not be set up (CNI).
    #[error("network: {0}")]
    Network(String),
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |e| RuntimeError::Io(format!("{what}: {e}"))
}

/// Where the runtime keeps things.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Node data root: `images/` and `tasks/` live here.
    pub root: PathBuf,
    /// libcontainer's state root (on tmpfs, like runc's /run/runc).
    pub state_root: PathBuf,
    /// The executable that implements `shim` (the `berth` binary).
    pub shim_exe: PathBuf,
    /// Directories holding CDI specs (default `/etc/cdi`, `/var/run/cdi`).
    pub cdi_dirs: Vec<PathBuf>,
    /// Directories holding the CNI plugins (default Debian's
    /// `/usr/lib/cni`, then `/opt/cni/bin`).
    pub cni_paths: Vec<PathBuf>,
    /// Where host-path volumes may come from (none: nowhere).
    pub host_volume_root: Option<PathBuf>,
}

impl RuntimeConfig {
    /// The layout `berth` uses under a data directory: `<data>/node` for
    /// images and tasks, and a state root on tmpfs (see [`state_root_for`]).
    pub fn for_data_dir(data_dir: &Path, shim_exe: PathBuf) -> RuntimeConfig {
        RuntimeConfig {
            root: data_dir.join("node"),
            state_root: state_root_for(data_dir),
            shim_exe,
            cdi_dirs: crate::cdi::CDI_DIRS.iter().map(PathBuf::from).collect(),
            cni_paths: ["/usr/lib/cni", "/opt/cni/bin"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            host_volume_root: None,
        }
    }
}

/// Where the runtime state of the node under `data_dir` lives. It is on
/// tmpfs (`/run/berth/<hash of the data dir>`), like runc's `/run/runc`:
/// written for every container and meaningless after a reboot. One
/// directory per data dir, so several agents can share a machine.
pub fn state_root_for(data_dir: &Path) -> PathBuf {
    let abs = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    // FNV-1a: a short, stable name for the data dir.
    let hash = abs
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
    let run = Path::new("/run");
    let base = if run.is_dir() {
        run.join("berth")
    } else {
        data_dir.join("run")
    };
    base.join(format!("{hash:016x}"))
}

/// A shim that is running a container.
pub struct Shim {
    /// The shim's pid.
    pub pid: i32,
    /// The container init's pid.
    pub init_pid: i32,
    child: Option<Child>,
}

/// What a task directory held when the agent started.
#[derive(Debug, Clone)]
pub enum Recovered {
    /// Its shim is alive: reattach.
    Running {
        /// Task id.
        task: String,
        /// What it runs.
        launch: LaunchRecord,
        /// The live shim's pid.
        shim_pid: i32,
    },
    /// Its container ended (possibly while the agent was away).
    Exited {
        /// Task id.
        task: String,
        /// What it ran.
        launch: Option<LaunchRecord>,
        /// How it ended.
        exit: ExitRecord,
    },
}

/// The container manager.
pub struct Runtime {
    cfg: RuntimeConfig,
    images: ImageStore,
    /// Bounds concurrent container starts: beyond a few per core, starting
    /// more at once only makes every start slower.
    starts: tokio::sync::Semaphore,
    /// Bridge networking (CNI).
    pub(crate) cni: crate::cni::Cni,
}

impl Runtime {
    /// Opens the image store and task directories under `cfg.root`.
    pub fn open(cfg: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        for d in [cfg.root.join("tasks"), cfg.state_root.clone()] {
            std::fs::create_dir_all(&d).map_err(io_err(d.display()))?;
        }
        let images = ImageStore::open(&cfg.root.join("images"))?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let tag = cfg
            .state_root
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(8).collect::<String>())
            .unwrap_or_default();
        let cni = crate::cni::Cni::new(cfg.cni_paths.clone(), cfg.state_root.join("cni"), &tag);
        Ok(Runtime {
            cfg,
            images,
            starts: tokio::sync::Semaphore::new((4 * cores).max(4)),
            cni,
        })
    }

    /// The node's image store.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// A task's directory.
    pub fn task_dir(&self, task: &str) -> TaskDir {
        TaskDir::new(
            self.cfg.root.join("tasks").join(task),
            self.cfg.state_root.join("tasks").join(task),
        )
    }

    /// Prepares a fresh root for `task` from its image, writes the bundle,
    /// and starts a shim that creates and starts the container. Returns once
    /// the container runs (or failed to start).
    pub async fn start(
        &self,
        task: &str,
        attempt: u32,
        spec: &LaunchSpec,
    ) -> Result<Shim, RuntimeError> {
        let _permit = self
            .starts
            .acquire()
            .await
            .map_err(|e| RuntimeError::Io(e.to_string()))?;
        let td = self.task_dir(task);
        if td.live_shim().is_some() {
            return Err(RuntimeError::AlreadyRunning(task.to_string()));
        }
        let id = container_id(task, attempt);
        let cgroups = self.cgroup_of(&id);
        let image = self.images.resolve(&spec.image)?;
        // The image's User, as OCI runtimes honour it.
        let wanted = spec.user.as_deref().or(image.config.user.as_deref());
        let user =
            crate::image::resolve_user(wanted, &image.layers).map_err(RuntimeError::StartFailed)?;
        let dir = td.path().to_path_buf();
        std::fs::create_dir_all(td.bundle_dir()).map_err(io_err(td.bundle_dir().display()))?;
        td.create_run_dir()
            .map_err(io_err(td.run_path().display()))?;
        td.clear_run_files();
        let rec = LaunchRecord {
            spec: spec.clone(),
            attempt,
        };
        td.write_launch(&rec)
            .map_err(io_err("writing launch.json"))?;
        // The task's network lives across its container's restarts.
        let net = self.prepare_network(task, &td, spec).await?;
        // Each attempt starts from a clean writable layer.
        let spec2 = spec.clone();
        let td2 = td.clone();
        let cdi_dirs = self.cfg.cdi_dirs.clone();
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || -> Result<(), RuntimeError> {
            let mut mounts = prepare_volumes(&cfg, &dir, &spec2.volumes, user)?;
            // /etc/hostname names the task, as other runtimes do.
            let hostname = dir.join("hostname");
            std::fs::write(&hostname, format!("{}\n", spec2.hostname))
                .map_err(io_err(hostname.display()))?;
            mounts.insert(0, ("/etc/hostname".into(), hostname, true));
            // The overlay is mounted by the shim in its own mount namespace.
            let overlay = plan_rootfs(&image, &dir)?;
            td2.write_overlay(overlay.as_ref())
                .map_err(io_err("writing overlay.json"))?;
            let rootfs = dir.join("rootfs");
            let mut config =
                runtime_config(&spec2, &image.config, &rootfs, &cgroups, net.as_ref(), user);
            crate::bundle::add_binds(&mut config, &mounts);
            if !spec2.devices.is_empty() {
                let dirs: Vec<&Path> = cdi_dirs.iter().map(|d| d.as_path()).collect();
                crate::cdi::Registry::load(&dirs)?.apply(&spec2.devices, &mut config)?;
            }
            let bytes =
                serde_json::to_vec_pretty(&config).map_err(|e| RuntimeError::Io(e.to_string()))?;
            std::fs::write(td2.bundle_dir().join("config.json"), bytes)
                .map_err(io_err("writing config.json"))
        })
        .await
        .map_err(|e| RuntimeError::Io(e.to_string()))??;
        self.spawn_shim(&td, &id).await
    }

    async fn spawn_shim(&self, td: &TaskDir, id: &str) -> Result<Shim, RuntimeError> {
        let shim_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(td.shim_log_path())
            .map_err(io_err(td.shim_log_path().display()))?;
        let mut cmd = Command::new(&self.cfg.shim_exe);
        cmd.arg("shim")
            .arg("--dir")
            .arg(td.path())
            .arg("--run")
            .arg(td.run_path())
            .arg("--id")
            .arg(id)
            .arg("--state-root")
            .arg(&self.cfg.state_root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(shim_log))
            .kill_on_drop(false);
        // No pre_exec hook, so std can use posix_spawn (vfork-like) instead of
        // forking the whole agent; the shim calls setsid itself.
        let mut child = cmd
            .spawn()
            .map_err(io_err(format!("spawning {}", self.cfg.shim_exe.display())))?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| RuntimeError::Io("shim stdout".into()))?;
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(60),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(RuntimeError::Io(format!("reading from shim: {e}"))),
            Err(_) => {
                return Err(RuntimeError::StartFailed(
                    "shim did not answer within 60 s".into(),
                ));
            }
        }
        let line = line.trim();
        if let Some(p) = line.strip_prefix("started ") {
            let init_pid = p.parse().unwrap_or(0);
            return Ok(Shim {
                pid,
                init_pid,
                child: Some(child),
            });
        }
        let _ = child.wait().await;
        let msg = line.strip_prefix("error ").unwrap_or(line);
        let msg = if msg.is_empty() {
            td.read_exit().and_then(|e| e.error).unwrap_or_else(|| {
                format!(
                    "shim exited without a word; see {}",
                    td.shim_log_path().display()
                )
            })
        } else {
            msg.to_string()
        };
        Err(RuntimeError::StartFailed(msg))
    }

    /// What `berth exec-shim` needs to run a process in `task`'s running
    /// container.
    pub fn exec_target(&self, task: &str) -> Result<crate::exec::ExecTarget, RuntimeError> {
        let td = self.task_dir(task);
        if td.live_shim().is_none() {
            return Err(RuntimeError::StartFailed(format!(
                "task {task} has no running container on this node"
            )));
        }
        let launch = td
            .read_launch()
            .ok_or_else(|| RuntimeError::Io(format!("task {task} has no launch record")))?;
        let config: serde_json::Value = std::fs::read(td.bundle_dir().join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let id = |k: &str| config["process"]["user"][k].as_u64().unwrap_or(0) as u32;
        Ok(crate::exec::ExecTarget {
            container: container_id(task, launch.attempt),
            state_root: self.cfg.state_root.clone(),
            bundle: td.bundle_dir(),
            uid: id("uid"),
            gid: id("gid"),
        })
    }

    /// The `berth exec-shim` command for `target`.
    pub fn exec_command(
        &self,
        target: &crate::exec::ExecTarget,
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> Command {
        let mut cmd = Command::new(&self.cfg.shim_exe);
        cmd.arg("exec-shim")
            .arg("--bundle")
            .arg(&target.bundle)
            .arg("--state-root")
            .arg(&target.state_root)
            .arg("--id")
            .arg(&target.container)
            .arg("--uid")
            .arg(target.uid.to_string())
            .arg("--gid")
            .arg(target.gid.to_string());
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg("--").args(args);
        cmd
    }

    /// The persistent volumes on this node (ids).
    pub fn volumes(&self) -> Vec<String> {
        crate::volume::list(&self.cfg.root.join("volumes"))
    }

    /// The persistent volumes a task directory on this node still names
    /// (its task is not removed yet).
    pub fn volumes_in_use(&self) -> std::collections::HashSet<String> {
        let mut out = std::collections::HashSet::new();
        let Ok(rd) = std::fs::read_dir(self.cfg.root.join("tasks")) else {
            return out;
        };
        for entry in rd.flatten() {
            let task = entry.file_name().to_string_lossy().into_owned();
            let Some(l) = self.task_dir(&task).read_launch() else {
                continue;
            };
            for v in l.spec.volumes {
                if let crate::volume::VolumeSource::Persistent { id, .. } = v.source {
                    out.insert(id);
                }
            }
        }
        out
    }

    /// The images task directories on this node still name (their tasks
    /// may start again): what image GC keeps.
    pub fn images_in_use(&self) -> std::collections::HashSet<String> {
        let Ok(rd) = std::fs::read_dir(self.cfg.root.join("tasks")) else {
            return Default::default();
        };
        rd.flatten()
            .filter_map(|e| {
                let task = e.file_name().to_string_lossy().into_owned();
                self.task_dir(&task).read_launch().map(|l| l.spec.image)
            })
            .collect()
    }

    /// Deletes persistent volume `id` and its data.
    pub fn remove_volume(&self, id: &str) -> Result<(), RuntimeError> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(RuntimeError::Io(format!("{id:?} is not a volume id")));
        }
        crate::volume::remove_sized(&self.cfg.root.join("volumes").join(id))
    }

    /// Re-adopts a live shim found by [`Runtime::recover`].
    pub fn adopt(&self, task: &str, shim_pid: i32) -> Shim {
        Shim {
            pid: shim_pid,
            init_pid: self.task_dir(task).read_pid().unwrap_or(0),
            child: None,
        }
    }

    /// Waits until the shim exits and returns how the container ended.
    pub async fn wait(&self, task: &str, shim: &mut Shim) -> ExitRecord {
        match shim.child.as_mut() {
            Some(child) => {
                let _ = child.wait().await;
            }
            None => wait_pid_exit(shim.pid).await,
        }
        self.task_dir(task).read_exit().unwrap_or(ExitRecord {
            code: -1,
            signal: None,
            error: Some("the shim died without recording an exit status".into()),
        })
    }

    /// Sends `signal` to the container's init process. No-op if it is gone.
    pub fn signal(&self, task: &str, signal: i32) {
        let td = self.task_dir(task);
        if td.live_shim().is_none() {
            return;
        }
        if let Some(pid) = td.read_pid() {
            // Not nix's `kill`: its `Signal` enum cannot carry every number a
            // caller may pass (real-time signals, 0), and this sends any.
            // SAFETY: kill(2) takes no pointers and touches no memory of ours;
            // a stale or invalid pid or signal is an error we ignore.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Deletes everything of a task whose container has ended.
    pub fn remove(&self, task: &str) -> Result<(), RuntimeError> {
        let td = self.task_dir(task);
        if td.live_shim().is_some() {
            return Err(RuntimeError::AlreadyRunning(task.to_string()));
        }
        if td.path().exists() {
            release_rootfs(td.path())?;
            // Ephemeral volumes go with the task.
            for name in crate::volume::list(&td.path().join("volumes")) {
                crate::volume::remove_sized(&td.path().join("volumes").join(name))?;
            }
            std::fs::remove_dir_all(td.path()).map_err(io_err(td.path().display()))?;
        }
        td.remove_run_dir()
            .map_err(io_err(td.run_path().display()))?;
        Ok(())
    }

    /// Scans task directories: live shims to reattach and exits that
    /// happened while nobody watched.
    pub fn recover(&self) -> Vec<Recovered> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.cfg.root.join("tasks")) else {
            return out;
        };
        for entry in rd.flatten() {
            let task = entry.file_name().to_string_lossy().into_owned();
            let td = self.task_dir(&task);
            let launch = td.read_launch();
            if let (Some(shim_pid), Some(launch)) = (td.live_shim(), launch.clone()) {
                out.push(Recovered::Running {
                    task,
                    launch,
                    shim_pid,
                });
            } else if let Some(exit) = td.read_exit() {
                out.push(Recovered::Exited { task, launch, exit });
            } else if let Some(l) = &launch {
                // The shim died without a word. If its container outlived it,
                // kill it: a restart must never run beside a stray copy.
                kill_stray(&td, &self.cgroup_of(&container_id(&task, l.attempt)));
                out.push(Recovered::Exited {
                    task,
                    launch,
                    exit: ExitRecord {
                        code: -1,
                        signal: None,
                        error: Some("the shim is gone and left no exit status".into()),
                    },
                });
            }
        }
        out
    }

    /// The log file of a task.
    pub fn log_path(&self, task: &str) -> PathBuf {
        self.task_dir(task).log_path()
    }

    /// The data root.
    pub fn root(&self) -> &Path {
        &self.cfg.root
    }

    /// The cgroup of container `id`: named after this node's state root
    /// too, so two agents (or clusters) on one machine whose task ids
    /// coincide never share a cgroup, and one never kills the other's.
    pub fn cgroup_of(&self, id: &str) -> String {
        let node = self
            .cfg
            .state_root
            .file_name()
            .map(|n| n.to_string_lossy().chars().take(8).collect::<String>())
            .unwrap_or_default();
        format!("/berth/{node}-{id}")
    }
}

/// SIGKILLs the container init recorded in `td` if it is still alive and
/// still in the container's cgroup (so a reused pid is never hit).
fn kill_stray(td: &TaskDir, cgroup: &str) {
    let Some(pid) = td.read_pid() else { return };
    let in_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|c| c.lines().any(|l| l.ends_with(cgroup)))
        .unwrap_or(false);
    if in_cgroup {
        tracing::warn!(pid, cgroup, "killing a container whose shim is gone");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The libcontainer id of a task's attempt.
pub fn container_id(task: &str, attempt: u32) -> String {
    format!("{task}.{attempt}")
}

/// Waits for a process that is not our child to exit, using a pidfd.
async fn wait_pid_exit(pid: i32) {
    // nix 0.29 has no pidfd_open.
    // SAFETY: pidfd_open(2) takes a pid and flags, no pointers; it returns a
    // new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return; // already gone
    }
    // SAFETY: `fd` was just returned by pidfd_open, is open, and nothing
    // else owns it, so the OwnedFd is its sole owner and closes it once.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and refers
    // to the same pidfd until the AsyncFd is dropped; nothing else
    // registers it.
    match unsafe { AsyncFd::register(fd) } {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(_) => {
            while crate::taskdir::proc_start_time(pid).is_some() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Makes each volume ready on the node; returns (container path, host
/// path, read-only) for the bind mounts.
fn prepare_volumes(
    cfg: &RuntimeConfig,
    task_dir: &Path,
    volumes: &[crate::volume::VolumeMount],
    user: (u32, u32),
) -> Result<Vec<(String, PathBuf, bool)>, RuntimeError> {
    use crate::volume::{VolumeSource, ensure_sized};
    let mut out = Vec::with_capacity(volumes.len());
    for v in volumes {
        let src = match &v.source {
            VolumeSource::Persistent { id, size } => {
                ensure_sized(&cfg.root.join("volumes").join(id), *size, user)?
            }
            VolumeSource::Ephemeral { size } => {
                ensure_sized(&task_dir.join("volumes").join(&v.name), *size, user)?
            }
            VolumeSource::HostPath { path } => {
                let allowed = cfg.host_volume_root.as_ref().is_some_and(|root| {
                    berth_model::spec::path_under(path, &root.to_string_lossy())
                });
                if !allowed {
                    return Err(RuntimeError::StartFailed(format!(
                        "volume {}: host path {path} is outside this node's --host-volume-root",
                        v.name
                    )));
                }
                let p = PathBuf::from(path);
                if !p.is_dir() {
                    return Err(RuntimeError::StartFailed(format!(
                        "volume {}: host path {path} is not a directory on this node",
                        v.name
                    )));
                }
                p
            }
        };
        out.push((v.path.clone(), src, v.read_only));
    }
    Ok(out)
}
