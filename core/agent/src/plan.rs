//! What a supervisor runs for an assigned task: the launch spec built
//! from the assignment stream (or a launch record found on disk), with
//! the variables Berth sets in every container.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_model::quantity::DurationMs;
use berth_model::spec::volume_id;
use berth_model::spec::{RestartLimit, port_env_name};
use berth_proto as pb;
use berth_proto::typed;
use berth_runtime::taskdir::LaunchRecord;
use berth_runtime::volume::{VolumeMount, VolumeSource};
use berth_runtime::{LaunchSpec, NetMode};

use crate::health::{CheckPlan, Probe};
use crate::supervisor::TaskPlan;

/// What a task's plan has beyond its launch record, kept beside it in
/// the task directory (`plan.json`) so a container adopted after an agent
/// restart keeps its checks, restart limit and retries.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Kept {
    health: Option<CheckPlan>,
    ready: Option<CheckPlan>,
    restart_limit: Option<RestartLimit>,
    #[serde(default)]
    job: bool,
}

const KEPT: &str = "plan.json";

/// Keeps what [`plan_from_launch`] needs beside the task's files.
pub(crate) fn keep(dir: &std::path::Path, plan: &TaskPlan) {
    let kept = Kept {
        health: plan.health.clone(),
        ready: plan.ready.clone(),
        restart_limit: Some(plan.restart_limit),
        job: plan.job,
    };
    let write = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::write(
            dir.join(KEPT),
            serde_json::to_vec(&kept).unwrap_or_default(),
        )
    });
    if let Err(e) = write {
        tracing::warn!(task = %plan.id, error = %e, "keeping the task's plan");
    }
}

/// The plan of a container found after an agent restart: its launch
/// record and what was kept beside it (without that file, an older
/// agent's task: no checks, the default limit, until its next start).
pub(crate) fn plan_from_launch(
    task: &str,
    launch: &LaunchRecord,
    dir: &std::path::Path,
) -> TaskPlan {
    let kept: Kept = std::fs::read(dir.join(KEPT))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    TaskPlan {
        id: task.to_string(),
        restart: launch.spec.restart,
        restart_limit: kept.restart_limit.unwrap_or_default(),
        job: kept.job,
        health: kept.health,
        ready: kept.ready,
        stop_grace: Duration::from_millis(launch.spec.stop_grace_ms),
        launch: launch.spec.clone(),
    }
}

/// The variables Berth sets in every container (besides `BERTH_ATTEMPT`,
/// which the supervisor sets per start): the task, its app, instance and
/// node, each named port as `BERTH_PORT_<NAME>`, and `PORT` when there is
/// exactly one port and the spec does not set it.
fn berth_env(task: &pb::Task, launch: &pb::Launch, ports: &[u32]) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = launch.env.clone().into_iter().collect();
    env.insert("BERTH_TASK_ID".into(), task.id.clone());
    env.insert("BERTH_APP".into(), task.app.clone());
    env.insert("BERTH_INSTANCE".into(), task.instance.to_string());
    env.insert("BERTH_NODE".into(), task.node.clone());
    if launch.ports.is_empty() {
        // Host networking from an older server: host ports only.
        for (name, port) in launch.port_names.iter().zip(ports) {
            if !name.is_empty() {
                env.insert(port_env_name(name), port.to_string());
            }
        }
        if let [port] = ports {
            env.entry("PORT".into()).or_insert_with(|| port.to_string());
        }
        return env;
    }
    // BERTH_PORT_<NAME>: the port the app listens on (the host port on
    // the host's network, the container port on a bridge); with a bridge,
    // BERTH_HOST_PORT_<NAME> is the host port mapped to it.
    let bridge = launch.network == pb::NetworkMode::Bridge as i32;
    let mut host_ports = ports.iter();
    for p in &launch.ports {
        let host = if p.host {
            host_ports.next().copied()
        } else {
            None
        };
        let listen = if bridge { Some(p.container) } else { host };
        if p.name.is_empty() {
            continue;
        }
        if let Some(l) = listen {
            env.insert(port_env_name(&p.name), l.to_string());
        }
        if let (true, Some(h)) = (bridge, host) {
            env.insert(
                port_env_name(&p.name).replacen("_PORT_", "_HOST_PORT_", 1),
                h.to_string(),
            );
        }
    }
    if let [p] = launch.ports.as_slice() {
        let listen = if bridge {
            Some(p.container)
        } else {
            ports.first().copied()
        };
        if let Some(l) = listen {
            env.entry("PORT".into()).or_insert_with(|| l.to_string());
        }
    }
    env
}

/// The volumes a task mounts: a persistent one is its instance's.
fn volumes(task: &pb::Task, launch: &pb::Launch) -> Vec<VolumeMount> {
    launch
        .volumes
        .iter()
        .map(|v| VolumeMount {
            name: v.name.clone(),
            path: v.path.clone(),
            read_only: v.read_only,
            source: match (&v.host_path, v.ephemeral) {
                (Some(p), _) => VolumeSource::HostPath { path: p.clone() },
                (None, true) => VolumeSource::Ephemeral {
                    size: v.size.unwrap_or_default(),
                },
                (None, false) => VolumeSource::Persistent {
                    id: volume_id(&task.app, task.instance, &v.name),
                    size: v.size.unwrap_or_default(),
                },
            },
        })
        .collect()
}

/// The network a task's container gets: its (host, container) port pairs
/// mapped on a bridge, with the DNS search domains of its namespace.
fn net_mode(launch: &pb::Launch, ports: &[u32]) -> NetMode {
    match pb::NetworkMode::try_from(launch.network) {
        Ok(pb::NetworkMode::Bridge) => {
            let mut host_ports = ports.iter();
            let pairs = launch
                .ports
                .iter()
                .filter(|p| p.host)
                .filter_map(|p| Some((*host_ports.next()? as u16, p.container as u16)))
                .collect();
            let ns = if launch.namespace.is_empty() {
                "default"
            } else {
                &launch.namespace
            };
            NetMode::Bridge {
                ports: pairs,
                search: vec![format!("{ns}.berth"), "berth".into()],
            }
        }
        Ok(pb::NetworkMode::None) => NetMode::None,
        _ => NetMode::Host,
    }
}

pub(crate) fn plan_for(task: &pb::Task, launch: Option<&pb::Launch>) -> Result<TaskPlan, String> {
    let spec = launch.ok_or_else(|| {
        format!(
            "the assignment stream sent no launch spec for {} version {}",
            task.app, task.version
        )
    })?;
    let restart = typed::restart_from_wire(spec.restart).ok_or_else(|| {
        format!(
            "restart policy {} is unknown to this agent (upgrade the agent)",
            spec.restart
        )
    })?;
    let alloc = task.allocation.clone().unwrap_or_default();
    Ok(TaskPlan {
        id: task.id.clone(),
        launch: LaunchSpec {
            image: spec.image.clone(),
            command: spec.command.clone(),
            env: berth_env(task, spec, &alloc.ports),
            cpu_millis: (alloc.cpu_millis + 1000 * alloc.cores.len() as u64).max(1),
            memory_bytes: alloc.memory_bytes,
            hostname: task.id.clone(),
            restart,
            stop_grace_ms: spec.stop_grace_ms,
            cpuset: alloc.cpuset.clone(),
            mems: alloc.numa_nodes.clone(),
            // GPUs (and MIG instances) by uuid, as `nvidia-ctk cdi generate`
            // names them, then the other devices by their qualified names.
            devices: alloc
                .gpus
                .iter()
                .map(|g| format!("nvidia.com/gpu={}", g.uuid))
                .chain(alloc.devices.iter().cloned())
                .collect(),
            network: net_mode(spec, &alloc.ports),
            volumes: volumes(task, spec),
            logs: spec
                .logs
                .map(|l| berth_runtime::logs::LogLimits {
                    max_size: l.max_size,
                    files: l.files.max(1),
                })
                .unwrap_or_default(),
            user: spec.user.clone(),
            read_only_root: spec.read_only_root,
            seccomp_unconfined: spec.seccomp_unconfined,
        },
        restart,
        job: spec.job,
        restart_limit: spec
            .restart_limit
            .as_ref()
            .map_or_else(RestartLimit::default, |l| RestartLimit {
                count: l.count,
                window: DurationMs(l.window_ms),
            }),
        health: spec
            .health
            .as_ref()
            .map(|c| check_plan(c, spec, &alloc.ports))
            .transpose()?,
        ready: spec
            .ready
            .as_ref()
            .map(|c| check_plan(c, spec, &alloc.ports))
            .transpose()?,
        stop_grace: Duration::from_millis(spec.stop_grace_ms),
    })
}

/// A check from the wire, its port resolved: on the host's network, a
/// name to the host port allocated for it (a number as is) on
/// `127.0.0.1`; on a bridge, a name to its container port (a number as
/// is) on the task's address, filled in once its network is up.
fn check_plan(c: &pb::Check, launch: &pb::Launch, ports: &[u32]) -> Result<CheckPlan, String> {
    use pb::check::Probe as P;
    let bridge = launch.network == pb::NetworkMode::Bridge as i32;
    let ip = if bridge {
        std::net::Ipv4Addr::UNSPECIFIED
    } else {
        std::net::Ipv4Addr::LOCALHOST
    };
    let container: Vec<u32> = launch.ports.iter().map(|p| p.container).collect();
    let all_names: Vec<String> = launch.ports.iter().map(|p| p.name.clone()).collect();
    let (names, ports): (&[String], &[u32]) = if bridge {
        (&all_names, &container)
    } else {
        (&launch.port_names, ports)
    };
    let port = |r: &Option<pb::PortRef>| -> Result<u16, String> {
        let n = match r.as_ref().and_then(|r| r.port.as_ref()) {
            Some(pb::port_ref::Port::Number(n)) => *n,
            Some(pb::port_ref::Port::Name(name)) => names
                .iter()
                .zip(ports)
                .find(|(n, _)| *n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| format!("check port {name:?} names no allocated port"))?,
            None => return Err("a check without a port".into()),
        };
        u16::try_from(n).map_err(|_| format!("check port {n} is not a port"))
    };
    let probe = match &c.probe {
        Some(P::Http(h)) => Probe::Http {
            ip,
            port: port(&h.port)?,
            path: h.path.clone(),
        },
        Some(P::Tcp(t)) => Probe::Tcp {
            ip,
            port: port(&t.port)?,
        },
        Some(P::Exec(e)) => Probe::Exec {
            argv: e.command.clone(),
        },
        None => return Err("a check without a probe (upgrade the agent)".into()),
    };
    Ok(CheckPlan {
        probe,
        interval: Duration::from_millis(c.interval_ms.max(100)),
        timeout: Duration::from_millis(c.timeout_ms.max(10)),
        grace: Duration::from_millis(c.grace_ms),
        failures: c.failures.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_learns_who_and_where_it_is() {
        let task = pb::Task {
            id: "web-7-2".into(),
            app: "web".into(),
            instance: 2,
            node: "n1".into(),
            ..Default::default()
        };
        let launch = pb::Launch {
            env: [("GREETING".to_string(), "hi".to_string())].into(),
            port_names: vec!["http".into(), "metrics-v2".into()],
            ..Default::default()
        };
        let env = berth_env(&task, &launch, &[8080, 9100]);
        let want = [
            ("BERTH_APP", "web"),
            ("BERTH_INSTANCE", "2"),
            ("BERTH_NODE", "n1"),
            ("BERTH_PORT_HTTP", "8080"),
            ("BERTH_PORT_METRICS_V2", "9100"),
            ("BERTH_TASK_ID", "web-7-2"),
            ("GREETING", "hi"),
        ];
        assert_eq!(
            env.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            want
        );
        // One port: PORT too, unless the spec sets it.
        let one = pb::Launch {
            port_names: vec![String::new()],
            ..Default::default()
        };
        assert_eq!(berth_env(&task, &one, &[8080])["PORT"], "8080");
        let own = pb::Launch {
            env: [("PORT".to_string(), "1".to_string())].into(),
            ..one
        };
        assert_eq!(berth_env(&task, &own, &[8080])["PORT"], "1");
    }
}
