//! The service and job fields of a spec on the wire: checks, the rollout
//! strategy, the restart limit, the kind and the job's concurrency.

use berth_model::quantity::DurationMs;
use berth_model::spec::{
    Amount, Check, Concurrency, HttpCheck, Kind, Network, PortRef, RestartLimit, TcpCheck, Update,
};

use super::{WireSpecError, unknown};
use crate::v1 as pb;

fn missing(field: String) -> WireSpecError {
    WireSpecError {
        field,
        message: "is missing".into(),
    }
}

fn port_to(p: &PortRef) -> pb::PortRef {
    pb::PortRef {
        port: Some(match p {
            PortRef::Number(n) => pb::port_ref::Port::Number((*n).into()),
            PortRef::Name(n) => pb::port_ref::Port::Name(n.clone()),
        }),
    }
}

fn port_from(field: String, p: Option<pb::PortRef>) -> Result<PortRef, WireSpecError> {
    match p.and_then(|p| p.port) {
        Some(pb::port_ref::Port::Name(n)) => Ok(PortRef::Name(n)),
        Some(pb::port_ref::Port::Number(n)) => u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .map(PortRef::Number)
            .ok_or_else(|| WireSpecError {
                field,
                message: format!("{n} is not a port"),
            }),
        None => Err(missing(field)),
    }
}

/// A check on the wire.
pub(super) fn check_to(c: &Check) -> pb::Check {
    use pb::check::Probe;
    let probe = match (&c.http, &c.tcp, &c.exec) {
        (Some(h), _, _) => Some(Probe::Http(pb::HttpProbe {
            port: Some(port_to(&h.port)),
            path: h.path.clone(),
        })),
        (None, Some(t), _) => Some(Probe::Tcp(pb::TcpProbe {
            port: Some(port_to(&t.port)),
        })),
        (None, None, Some(cmd)) => Some(Probe::Exec(pb::ExecProbe {
            command: cmd.clone(),
        })),
        (None, None, None) => None,
    };
    pb::Check {
        probe,
        interval_ms: c.interval.0,
        timeout_ms: c.timeout.0,
        grace_ms: c.grace.0,
        failures: c.failures,
    }
}

/// A check from the wire; `path` names it in errors.
pub(super) fn check_from(path: &str, c: pb::Check) -> Result<Check, WireSpecError> {
    use pb::check::Probe;
    let mut out = Check {
        http: None,
        tcp: None,
        exec: None,
        interval: DurationMs(c.interval_ms),
        timeout: DurationMs(c.timeout_ms),
        grace: DurationMs(c.grace_ms),
        failures: c.failures,
    };
    match c.probe {
        Some(Probe::Http(h)) => {
            out.http = Some(HttpCheck {
                port: port_from(format!("{path}.http.port"), h.port)?,
                path: h.path,
            });
        }
        Some(Probe::Tcp(t)) => {
            out.tcp = Some(TcpCheck {
                port: port_from(format!("{path}.tcp.port"), t.port)?,
            });
        }
        Some(Probe::Exec(e)) => out.exec = Some(e.command),
        None => return Err(missing(format!("{path}.probe"))),
    }
    Ok(out)
}

fn amount_to(a: Amount) -> pb::Amount {
    pb::Amount {
        amount: Some(match a {
            Amount::Count(n) => pb::amount::Amount::Count(n),
            Amount::Percent(p) => pb::amount::Amount::Percent(p),
        }),
    }
}

fn amount_from(field: &str, a: Option<pb::Amount>) -> Result<Amount, WireSpecError> {
    match a.and_then(|a| a.amount) {
        Some(pb::amount::Amount::Count(n)) => Ok(Amount::Count(n)),
        Some(pb::amount::Amount::Percent(p)) => Ok(Amount::Percent(p)),
        None => Err(missing(field.into())),
    }
}

/// The rollout strategy on the wire.
pub(super) fn update_to(u: &Update) -> pb::UpdateStrategy {
    pb::UpdateStrategy {
        max_surge: Some(amount_to(u.max_surge)),
        max_unavailable: Some(amount_to(u.max_unavailable)),
        min_ready_time_ms: u.min_ready_time.0,
        deadline_ms: u.deadline.0,
        auto_rollback: u.auto_rollback,
    }
}

/// The rollout strategy from the wire.
pub(super) fn update_from(u: pb::UpdateStrategy) -> Result<Update, WireSpecError> {
    Ok(Update {
        max_surge: amount_from("update.max_surge", u.max_surge)?,
        max_unavailable: amount_from("update.max_unavailable", u.max_unavailable)?,
        min_ready_time: DurationMs(u.min_ready_time_ms),
        deadline: DurationMs(u.deadline_ms),
        auto_rollback: u.auto_rollback,
    })
}

/// The restart limit on the wire.
pub(super) fn limit_to(l: &RestartLimit) -> pb::RestartLimit {
    pb::RestartLimit {
        count: l.count,
        window_ms: l.window.0,
    }
}

/// The restart limit from the wire.
pub(super) fn limit_from(l: pb::RestartLimit) -> RestartLimit {
    RestartLimit {
        count: l.count,
        window: DurationMs(l.window_ms),
    }
}

/// The kind on the wire.
pub(super) fn kind_to(k: Kind) -> pb::AppKind {
    match k {
        Kind::Service => pb::AppKind::Service,
        Kind::Job => pb::AppKind::Job,
    }
}

/// The kind from the wire.
pub(super) fn kind_from(v: i32) -> Result<Kind, WireSpecError> {
    match pb::AppKind::try_from(v) {
        Ok(pb::AppKind::Service) => Ok(Kind::Service),
        Ok(pb::AppKind::Job) => Ok(Kind::Job),
        _ => Err(unknown("kind", v)),
    }
}

/// A job's concurrency policy on the wire (unspecified: not given).
pub(super) fn concurrency_to(c: Option<Concurrency>) -> pb::JobConcurrency {
    match c {
        None => pb::JobConcurrency::Unspecified,
        Some(Concurrency::Allow) => pb::JobConcurrency::Allow,
        Some(Concurrency::Forbid) => pb::JobConcurrency::Forbid,
        Some(Concurrency::Replace) => pb::JobConcurrency::Replace,
    }
}

/// A job's concurrency policy from the wire.
pub(super) fn concurrency_from(v: i32) -> Result<Option<Concurrency>, WireSpecError> {
    match pb::JobConcurrency::try_from(v) {
        Ok(pb::JobConcurrency::Unspecified) => Ok(None),
        Ok(pb::JobConcurrency::Allow) => Ok(Some(Concurrency::Allow)),
        Ok(pb::JobConcurrency::Forbid) => Ok(Some(Concurrency::Forbid)),
        Ok(pb::JobConcurrency::Replace) => Ok(Some(Concurrency::Replace)),
        Err(_) => Err(unknown("concurrency", v)),
    }
}

/// A network mode on the wire (unspecified: not given).
pub(super) fn network_to(n: Option<Network>) -> pb::NetworkMode {
    match n {
        None => pb::NetworkMode::Unspecified,
        Some(Network::Host) => pb::NetworkMode::Host,
        Some(Network::Bridge) => pb::NetworkMode::Bridge,
        Some(Network::None) => pb::NetworkMode::None,
    }
}

/// A network mode from the wire.
pub(super) fn network_from(v: i32) -> Result<Option<Network>, WireSpecError> {
    match pb::NetworkMode::try_from(v) {
        Ok(pb::NetworkMode::Unspecified) => Ok(None),
        Ok(pb::NetworkMode::Host) => Ok(Some(Network::Host)),
        Ok(pb::NetworkMode::Bridge) => Ok(Some(Network::Bridge)),
        Ok(pb::NetworkMode::None) => Ok(Some(Network::None)),
        Err(_) => Err(unknown("network", v)),
    }
}
