//! Conversions between the replicated records and the wire messages.

use berth_model::node::Node;
use berth_model::task::{Task, TaskStatus};
use berth_proto as pb;
use berth_proto::typed;
use tonic::Status;

/// A task record as a wire message.
pub fn task(t: &Task) -> pb::Task {
    pb::Task {
        id: t.id.clone(),
        app: t.app.clone(),
        instance: t.instance,
        version: t.version,
        node: t.node.clone().unwrap_or_default(),
        state: typed::state_to_wire(t.state) as i32,
        has_exit_code: t.exit_code.is_some(),
        exit_code: t.exit_code.unwrap_or(0),
        restarts: t.restarts,
        message: t.message.clone(),
        desired: typed::desired_to_wire(t.desired) as i32,
        given_up: t.given_up,
        health: typed::health_to_wire(t.health) as i32,
        ready: t.ready,
        ip: t.ip.clone(),
        ports: Default::default(),
        allocation: t.allocation.as_ref().map(|a| pb::Allocation {
            cpu_millis: a.cpu.0,
            memory_bytes: a.memory.0,
            ports: a.ports.iter().map(|&p| u32::from(p)).collect(),
            cores: a.cores.clone(),
            cpuset: a.cpuset.clone(),
            numa_nodes: a.numa_nodes.clone(),
            gpus: a
                .gpus
                .iter()
                .map(|g| pb::GpuGrant {
                    index: g.index,
                    uuid: g.uuid.clone(),
                    milli: g.milli,
                })
                .collect(),
            nics: a.nics.clone(),
            devices: a.devices.clone(),
        }),
    }
}

/// A task record as listings show it: with its host ports by name (by
/// position where a port has none), from the spec of its version.
pub fn listed(state: &berth_store::ClusterState, t: &Task) -> pb::Task {
    let mut w = task(t);
    let spec = state.apps.get(&t.app).and_then(|a| a.spec_of(t.version));
    if let (Some(spec), Some(a)) = (spec, &t.allocation) {
        let with_host = spec
            .ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.host.is_some());
        for ((i, p), host) in with_host.zip(&a.ports) {
            let name = p.name.clone().unwrap_or_else(|| i.to_string());
            w.ports.insert(name, u32::from(*host));
        }
    }
    w
}

/// A node record as a wire message, with what is allocated on it.
pub fn node(n: &Node, cpu_used: u64, mem_used: u64, tasks: u32) -> pb::Node {
    let inv = n.info.inventory.as_deref();
    pb::Node {
        name: n.info.name.clone(),
        address: n.info.address.clone(),
        cpu_millis: n.info.cpu.0,
        memory_bytes: n.info.memory.0,
        cpu_used,
        memory_used: mem_used,
        state: berth_proto::typed::node_state_to_wire(n.status) as i32,
        drained: n.drained,
        tasks,
        labels: n.info.labels.clone().into_iter().collect(),
        cores: inv.map(|i| i.core_count() as u32).unwrap_or(0),
        numa_nodes: inv.map(|i| i.numa_nodes().count() as u32).unwrap_or(0),
        gpus: inv.map(|i| i.gpus.len() as u32).unwrap_or(0),
        gpu_model: inv.map(gpu_summary).unwrap_or_default(),
        inventory: None,
        placed: Vec::new(),
    }
}

/// `8x NVIDIA H100 80GB HBM3`, or `2x A, 1x B` for mixed nodes.
fn gpu_summary(inv: &berth_hostprobe::Inventory) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for g in &inv.gpus {
        match counts.iter_mut().find(|(m, _)| *m == g.model) {
            Some((_, c)) => *c += 1,
            None => counts.push((&g.model, 1)),
        }
    }
    counts
        .iter()
        .map(|(m, c)| format!("{c}x {m}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A status report from the wire, checked.
pub fn status(s: pb::TaskStatus) -> Result<TaskStatus, Status> {
    let state = typed::state_from_wire(s.state).ok_or_else(|| {
        Status::invalid_argument(format!(
            "statuses[{}].state: unknown state {}",
            s.id, s.state
        ))
    })?;
    Ok(TaskStatus {
        id: s.id,
        state,
        exit_code: s.has_exit_code.then_some(s.exit_code),
        restarts: s.restarts,
        message: s.message,
        gone: s.gone,
        given_up: s.given_up,
        health: typed::health_from_wire(s.health),
        ready: s.ready,
        ip: s.ip,
    })
}

/// What a node needs of an app version to start its tasks.
pub fn launch(s: &berth_model::spec::AppSpec, version: u64) -> pb::Launch {
    pb::Launch {
        app: s.name.clone(),
        version,
        image: s.image.clone(),
        command: s.command.clone(),
        env: s.env.clone().into_iter().collect(),
        restart: typed::restart_to_wire(s.restart) as i32,
        stop_grace_ms: s.stop_grace.0,
        // The names of the ports with a host port: Allocation.ports order.
        port_names: s
            .ports
            .iter()
            .filter(|p| p.host.is_some())
            .map(|p| p.name.clone().unwrap_or_default())
            .collect(),
        network: match s.network() {
            berth_model::spec::Network::Host => pb::NetworkMode::Host,
            berth_model::spec::Network::Bridge => pb::NetworkMode::Bridge,
            berth_model::spec::Network::None => pb::NetworkMode::None,
        } as i32,
        ports: s
            .ports
            .iter()
            .map(|p| pb::LaunchPort {
                name: p.name.clone().unwrap_or_default(),
                container: u32::from(p.listen()),
                host: p.host.is_some(),
            })
            .collect(),
        namespace: s.namespace.clone(),
        volumes: s
            .volumes
            .iter()
            .map(berth_proto::spec::volume_to_wire)
            .collect(),
        logs: Some(pb::LogRotation {
            max_size: s.logs().max_size.0,
            files: s.logs().files,
        }),
        user: s.user.clone(),
        read_only_root: s.read_only_root,
        seccomp_unconfined: s.seccomp == berth_model::spec::Seccomp::Unconfined,
        // A job's task is retried `retries` times, however long it takes.
        restart_limit: Some(match s.kind {
            berth_model::spec::Kind::Job => pb::RestartLimit {
                count: s.retries.unwrap_or(berth_model::job::DEFAULT_RETRIES),
                window_ms: u64::MAX / 2,
            },
            berth_model::spec::Kind::Service => pb::RestartLimit {
                count: s.restart_limit().count,
                window_ms: s.restart_limit().window.0,
            },
        }),
        job: s.kind == berth_model::spec::Kind::Job,
        health: s.health.as_ref().map(berth_proto::spec::check_to_wire),
        ready: s.readiness().map(berth_proto::spec::check_to_wire),
    }
}
