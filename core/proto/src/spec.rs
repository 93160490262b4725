//! An app's spec on the wire: [`AppSpec`] as the typed `AppSpec` message,
//! and back. Decoding names the field that holds a value this build does
//! not know (an unset enum, an operator from a newer server).

use berth_model::hardware::{GpuSpec, Interconnect, NicSpec, NumaPolicy};
use berth_model::placement::{Constraint, Operator};
use berth_model::quantity::{Bytes, DurationMs, MilliCpu};
use berth_model::spec::{AppSpec, PortSpec, Resources};

mod service;

/// A spec's check on the wire (for `Launch`).
pub fn check_to_wire(c: &berth_model::spec::Check) -> pb::Check {
    service::check_to(c)
}

use crate::typed::{restart_from_wire, restart_to_wire};
use crate::v1 as pb;

/// Why a wire spec cannot become an [`AppSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct WireSpecError {
    /// The field, as a path (`constraints[1].op`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

pub(crate) fn unknown(field: impl Into<String>, v: i32) -> WireSpecError {
    WireSpecError {
        field: field.into(),
        message: format!("{v} is not a value this build knows"),
    }
}

impl From<&AppSpec> for pb::AppSpec {
    fn from(s: &AppSpec) -> Self {
        pb::AppSpec {
            name: s.name.clone(),
            image: s.image.clone(),
            command: s.command.clone(),
            env: s.env.clone().into_iter().collect(),
            resources: Some(resources(&s.resources)),
            instances: s.instances,
            volumes: s.volumes.iter().map(volume_to_wire).collect(),
            logs: s.logs.map(|l| pb::LogRotation {
                max_size: l.max_size.0,
                files: l.files,
            }),
            user: s.user.clone(),
            read_only_root: s.read_only_root,
            seccomp_unconfined: s.seccomp == berth_model::spec::Seccomp::Unconfined,
            ports: s
                .ports
                .iter()
                .map(|p| pb::PortSpec {
                    name: p.name.clone(),
                    host: p.host.map(u32::from),
                    container: p.container.map(u32::from),
                })
                .collect(),
            restart: restart_to_wire(s.restart) as i32,
            stop_grace_ms: s.stop_grace.0,
            constraints: s
                .constraints
                .iter()
                .map(|c| pb::Constraint {
                    field: c.field.clone(),
                    op: operator(c.op) as i32,
                    value: c.value.clone(),
                })
                .collect(),
            gang: s.gang,
            priority: s.priority,
            labels: s.labels.clone().into_iter().collect(),
            health: s.health.as_ref().map(service::check_to),
            ready: s.ready.as_ref().map(service::check_to),
            update: s.update.as_ref().map(service::update_to),
            restart_limit: s.restart_limit.as_ref().map(service::limit_to),
            kind: service::kind_to(s.kind) as i32,
            retries: s.retries,
            deadline_ms: s.deadline.map(|d| d.0),
            schedule: s.schedule.as_ref().map(|x| x.0.clone()),
            concurrency: service::concurrency_to(s.concurrency) as i32,
            network: service::network_to(s.network) as i32,
            namespace: s.namespace.clone(),
        }
    }
}

fn resources(r: &Resources) -> pb::Resources {
    pb::Resources {
        cpu_millis: r.cpu.0,
        memory_bytes: r.memory.0,
        cores: r.cores,
        gpus: r.gpus.as_ref().map(|g| pb::GpuRequest {
            count: g.count,
            models: g.model.clone(),
            min_memory_bytes: g.min_memory.map(|b| b.0),
            milli: g.milli,
            mig_profile: g.mig_profile.clone(),
            interconnect: match g.interconnect {
                Interconnect::Any => pb::Interconnect::Any,
                Interconnect::Nvlink => pb::Interconnect::Nvlink,
            } as i32,
        }),
        nics: r.nics.as_ref().map(|n| pb::NicRequest {
            count: n.count,
            min_speed_gbps: n.min_speed,
            rdma: n.rdma,
        }),
        numa: match r.numa {
            NumaPolicy::None => pb::NumaPolicy::None,
            NumaPolicy::BestEffort => pb::NumaPolicy::BestEffort,
            NumaPolicy::Restricted => pb::NumaPolicy::Restricted,
            NumaPolicy::SingleNumaNode => pb::NumaPolicy::SingleNumaNode,
        } as i32,
        devices: r.devices.clone().into_iter().collect(),
    }
}

fn operator(op: Operator) -> pb::ConstraintOperator {
    match op {
        Operator::Unique => pb::ConstraintOperator::Unique,
        Operator::Cluster => pb::ConstraintOperator::Cluster,
        Operator::GroupBy => pb::ConstraintOperator::GroupBy,
        Operator::Like => pb::ConstraintOperator::Like,
        Operator::Unlike => pb::ConstraintOperator::Unlike,
        Operator::MaxPer => pb::ConstraintOperator::MaxPer,
    }
}

impl TryFrom<pb::AppSpec> for AppSpec {
    type Error = WireSpecError;

    fn try_from(s: pb::AppSpec) -> Result<Self, WireSpecError> {
        let restart = restart_from_wire(s.restart).ok_or_else(|| unknown("restart", s.restart))?;
        let constraints = s
            .constraints
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let op = match pb::ConstraintOperator::try_from(c.op) {
                    Ok(pb::ConstraintOperator::Unique) => Operator::Unique,
                    Ok(pb::ConstraintOperator::Cluster) => Operator::Cluster,
                    Ok(pb::ConstraintOperator::GroupBy) => Operator::GroupBy,
                    Ok(pb::ConstraintOperator::Like) => Operator::Like,
                    Ok(pb::ConstraintOperator::Unlike) => Operator::Unlike,
                    Ok(pb::ConstraintOperator::MaxPer) => Operator::MaxPer,
                    Ok(pb::ConstraintOperator::Unspecified) | Err(_) => {
                        return Err(unknown(format!("constraints[{i}].op"), c.op));
                    }
                };
                Ok(Constraint {
                    field: c.field,
                    op,
                    value: c.value,
                })
            })
            .collect::<Result<_, _>>()?;
        let ports = s
            .ports
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let port = |field: &str, v: Option<u32>| {
                    v.map(u16::try_from).transpose().map_err(|_| WireSpecError {
                        field: format!("ports[{i}].{field}"),
                        message: format!("{} is not a port", v.unwrap_or(0)),
                    })
                };
                Ok(PortSpec {
                    host: port("host", p.host)?,
                    container: port("container", p.container)?,
                    name: p.name,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(AppSpec {
            name: s.name,
            image: s.image,
            command: s.command,
            env: s.env.into_iter().collect(),
            resources: from_resources(s.resources.unwrap_or_default())?,
            instances: s.instances,
            ports,
            volumes: s.volumes.into_iter().map(volume_from_wire).collect(),
            logs: s.logs.map(|l| berth_model::spec::Logs {
                max_size: berth_model::Bytes(l.max_size),
                files: l.files,
            }),
            user: s.user,
            read_only_root: s.read_only_root,
            seccomp: if s.seccomp_unconfined {
                berth_model::spec::Seccomp::Unconfined
            } else {
                berth_model::spec::Seccomp::Default
            },
            restart,
            stop_grace: DurationMs(s.stop_grace_ms),
            constraints,
            gang: s.gang,
            priority: s.priority,
            labels: s.labels.into_iter().collect(),
            health: s
                .health
                .map(|c| service::check_from("health", c))
                .transpose()?,
            ready: s
                .ready
                .map(|c| service::check_from("ready", c))
                .transpose()?,
            update: s.update.map(service::update_from).transpose()?,
            restart_limit: s.restart_limit.map(service::limit_from),
            kind: service::kind_from(s.kind)?,
            retries: s.retries,
            deadline: s.deadline_ms.map(DurationMs),
            schedule: s.schedule.map(berth_model::spec::Schedule),
            concurrency: service::concurrency_from(s.concurrency)?,
            network: service::network_from(s.network)?,
            namespace: if s.namespace.is_empty() {
                berth_model::spec::DEFAULT_NAMESPACE.into()
            } else {
                s.namespace
            },
        })
    }
}

/// A volume on the wire.
pub fn volume_to_wire(v: &berth_model::spec::Volume) -> pb::VolumeSpec {
    pb::VolumeSpec {
        name: v.name.clone(),
        path: v.path.clone(),
        size: v.size.map(|b| b.0),
        host_path: v.host_path.clone(),
        read_only: v.read_only,
        ephemeral: v.ephemeral,
    }
}

/// A volume from the wire (checked with the rest of the spec).
pub fn volume_from_wire(v: pb::VolumeSpec) -> berth_model::spec::Volume {
    berth_model::spec::Volume {
        name: v.name,
        path: v.path,
        size: v.size.map(berth_model::Bytes),
        host_path: v.host_path,
        read_only: v.read_only,
        ephemeral: v.ephemeral,
    }
}

fn from_resources(r: pb::Resources) -> Result<Resources, WireSpecError> {
    let gpus = match r.gpus {
        None => None,
        Some(g) => Some(GpuSpec {
            count: g.count,
            model: g.models,
            min_memory: g.min_memory_bytes.map(Bytes),
            milli: g.milli,
            mig_profile: g.mig_profile,
            interconnect: match pb::Interconnect::try_from(g.interconnect) {
                Ok(pb::Interconnect::Any) => Interconnect::Any,
                Ok(pb::Interconnect::Nvlink) => Interconnect::Nvlink,
                _ => return Err(unknown("resources.gpus.interconnect", g.interconnect)),
            },
        }),
    };
    let numa = match pb::NumaPolicy::try_from(r.numa) {
        Ok(pb::NumaPolicy::None) => NumaPolicy::None,
        Ok(pb::NumaPolicy::BestEffort) => NumaPolicy::BestEffort,
        Ok(pb::NumaPolicy::Restricted) => NumaPolicy::Restricted,
        Ok(pb::NumaPolicy::SingleNumaNode) => NumaPolicy::SingleNumaNode,
        _ => return Err(unknown("resources.numa", r.numa)),
    };
    Ok(Resources {
        cpu: MilliCpu(r.cpu_millis),
        memory: Bytes(r.memory_bytes),
        cores: r.cores,
        gpus,
        nics: r.nics.map(|n| NicSpec {
            count: n.count,
            min_speed: n.min_speed_gbps,
            rdma: n.rdma,
        }),
        numa,
        devices: r.devices.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::spec::parse_spec;

    /// The spec through the wire form and back.
    fn round_trip(spec: &AppSpec) -> AppSpec {
        let bytes = prost::Message::encode_to_vec(&pb::AppSpec::from(spec));
        let back = <pb::AppSpec as prost::Message>::decode(&bytes[..]).unwrap();
        AppSpec::try_from(back).unwrap()
    }

    #[test]
    fn a_full_spec_round_trips() {
        let spec = parse_spec(
            r#"
name: trainer
image: registry.local/train:1
command: [python, train.py]
env: {A: "1"}
instances: 3
ports: [{name: http, host: 8080}]
restart: always
stop_grace: 20s
constraints: [[hostname, UNIQUE], [rack, LIKE, "r[12]"], [zone, MAX_PER, "2"]]
gang: true
priority: 50
labels: {team: ml}
resources:
  cpu: 2
  memory: 8Gi
  gpus: {count: 2, model: [H100], min_memory: 40Gi, interconnect: nvlink}
  nics: {count: 1, min_speed: 100, rdma: true}
  numa: single-numa-node
  devices: {example.com/fpga: 1}
health: {http: {port: http, path: /ok}, interval: 5s}
ready: {exec: [/bin/true]}
update: {max_surge: 25%, max_unavailable: 1, deadline: 2m}
restart_limit: {count: 5, window: 1m}
"#,
        )
        .unwrap();
        assert_eq!(round_trip(&spec), spec);
    }

    #[test]
    fn a_periodic_job_round_trips() {
        let spec = parse_spec(
            "name: nightly\nimage: busybox:latest\nkind: job\nretries: 2\ndeadline: 10m\nschedule: \"@every 30s\"\nconcurrency: replace\nhealth: {tcp: {port: 80}}\n",
        )
        .unwrap();
        assert_eq!(round_trip(&spec), spec);
    }

    #[test]
    fn unknown_enum_values_are_named() {
        let mut wire = pb::AppSpec::from(&AppSpec::new("a", "busybox:latest"));
        wire.constraints.push(pb::Constraint {
            field: "rack".into(),
            op: 42,
            value: None,
        });
        let e = AppSpec::try_from(wire.clone()).unwrap_err();
        assert_eq!(e.field, "constraints[0].op");
        wire.constraints.clear();
        wire.restart = 0;
        assert_eq!(AppSpec::try_from(wire).unwrap_err().field, "restart");
    }
}
