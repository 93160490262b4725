//! The wire's enums against the model's: states travel as proto enums, not
//! strings, and a value a receiver does not know is refused by name.

use berth_model::spec::RestartPolicy as ModelRestart;
use berth_model::task::{Desired as ModelDesired, TaskState as ModelState};

use berth_model::node::NodeStatus as ModelNodeStatus;

use crate::v1::{Desired, NodeState, RestartPolicy, TaskState};

/// A model task state on the wire.
pub fn state_to_wire(s: ModelState) -> TaskState {
    match s {
        ModelState::Pending => TaskState::Pending,
        ModelState::Running => TaskState::Running,
        ModelState::Exited => TaskState::Exited,
        ModelState::Failed => TaskState::Failed,
        ModelState::Stopped => TaskState::Stopped,
    }
}

/// A task state from the wire (`None`: unspecified or unknown).
pub fn state_from_wire(v: i32) -> Option<ModelState> {
    Some(match TaskState::try_from(v).ok()? {
        TaskState::Unspecified => return None,
        TaskState::Pending => ModelState::Pending,
        TaskState::Running => ModelState::Running,
        TaskState::Exited => ModelState::Exited,
        TaskState::Failed => ModelState::Failed,
        TaskState::Stopped => ModelState::Stopped,
    })
}

/// The lowercase name of a wire task state (`unknown(N)` for others).
pub fn state_name(v: i32) -> String {
    state_from_wire(v).map_or_else(|| format!("unknown({v})"), |s| s.as_str().to_string())
}

/// A model desired state on the wire.
pub fn desired_to_wire(d: ModelDesired) -> Desired {
    match d {
        ModelDesired::Run => Desired::Run,
        ModelDesired::Stop => Desired::Stop,
        ModelDesired::Remove => Desired::Remove,
    }
}

/// A desired state from the wire (`None`: unspecified or unknown, which an
/// agent refuses rather than guess).
pub fn desired_from_wire(v: i32) -> Option<ModelDesired> {
    Some(match Desired::try_from(v).ok()? {
        Desired::Unspecified => return None,
        Desired::Run => ModelDesired::Run,
        Desired::Stop => ModelDesired::Stop,
        Desired::Remove => ModelDesired::Remove,
    })
}

/// The lowercase name of a wire desired state (`unknown(N)` for others).
pub fn desired_name(v: i32) -> String {
    desired_from_wire(v).map_or_else(|| format!("unknown({v})"), |d| d.as_str().to_string())
}

/// A restart policy on the wire.
pub fn restart_to_wire(r: ModelRestart) -> RestartPolicy {
    match r {
        ModelRestart::Always => RestartPolicy::Always,
        ModelRestart::OnFailure => RestartPolicy::OnFailure,
        ModelRestart::Never => RestartPolicy::Never,
    }
}

/// A restart policy from the wire (`None`: unspecified or unknown).
pub fn restart_from_wire(v: i32) -> Option<ModelRestart> {
    Some(match RestartPolicy::try_from(v).ok()? {
        RestartPolicy::Unspecified => return None,
        RestartPolicy::Always => ModelRestart::Always,
        RestartPolicy::OnFailure => ModelRestart::OnFailure,
        RestartPolicy::Never => ModelRestart::Never,
    })
}

/// A model health verdict on the wire.
pub fn health_to_wire(h: berth_model::task::Health) -> crate::v1::HealthState {
    use berth_model::task::Health;
    match h {
        Health::Unknown => crate::v1::HealthState::Unknown,
        Health::Healthy => crate::v1::HealthState::Healthy,
        Health::Unhealthy => crate::v1::HealthState::Unhealthy,
    }
}

/// A health verdict from the wire (a value this build does not know
/// reads as unknown: health only informs, it never starts anything).
pub fn health_from_wire(v: i32) -> berth_model::task::Health {
    use berth_model::task::Health;
    match crate::v1::HealthState::try_from(v) {
        Ok(crate::v1::HealthState::Healthy) => Health::Healthy,
        Ok(crate::v1::HealthState::Unhealthy) => Health::Unhealthy,
        _ => Health::Unknown,
    }
}

/// A model node status on the wire.
pub fn node_state_to_wire(s: ModelNodeStatus) -> NodeState {
    match s {
        ModelNodeStatus::Ready => NodeState::Ready,
        ModelNodeStatus::Down => NodeState::Down,
    }
}

/// How a node reads in lists: `ready` or `down`, with `,drained` when
/// drained (`unknown(N)` for a state this build does not know).
pub fn node_status_text(state: i32, drained: bool) -> String {
    let base = match NodeState::try_from(state) {
        Ok(NodeState::Ready) => ModelNodeStatus::Ready.as_str().to_string(),
        Ok(NodeState::Down) => ModelNodeStatus::Down.as_str().to_string(),
        _ => format!("unknown({state})"),
    };
    if drained {
        format!("{base},drained")
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refusals() {
        for s in [
            ModelState::Pending,
            ModelState::Running,
            ModelState::Exited,
            ModelState::Failed,
            ModelState::Stopped,
        ] {
            assert_eq!(state_from_wire(state_to_wire(s) as i32), Some(s));
        }
        for d in [ModelDesired::Run, ModelDesired::Stop, ModelDesired::Remove] {
            assert_eq!(desired_from_wire(desired_to_wire(d) as i32), Some(d));
        }
        for r in [
            ModelRestart::Always,
            ModelRestart::OnFailure,
            ModelRestart::Never,
        ] {
            assert_eq!(restart_from_wire(restart_to_wire(r) as i32), Some(r));
        }
        assert_eq!(desired_from_wire(0), None);
        assert_eq!(desired_from_wire(42), None);
        assert_eq!(desired_name(42), "unknown(42)");
        assert_eq!(state_from_wire(0), None);
    }
}

/// A deployment phase on the wire.
pub fn phase_to_wire(p: berth_model::deploy::Phase) -> crate::v1::DeployPhase {
    use crate::v1::DeployPhase as W;
    use berth_model::deploy::Phase;
    match p {
        Phase::Running => W::Running,
        Phase::Paused => W::Paused,
        Phase::Succeeded => W::Succeeded,
        Phase::Failed => W::Failed,
        Phase::RolledBack => W::RolledBack,
        Phase::Superseded => W::Superseded,
    }
}

/// A deployment phase from the wire; a value this build does not know is
/// an error naming it.
pub fn phase_from_wire(v: i32) -> Result<berth_model::deploy::Phase, String> {
    use crate::v1::DeployPhase as W;
    use berth_model::deploy::Phase;
    Ok(match W::try_from(v) {
        Ok(W::Running) => Phase::Running,
        Ok(W::Paused) => Phase::Paused,
        Ok(W::Succeeded) => Phase::Succeeded,
        Ok(W::Failed) => Phase::Failed,
        Ok(W::RolledBack) => Phase::RolledBack,
        Ok(W::Superseded) => Phase::Superseded,
        _ => return Err(format!("phase: unknown deployment phase {v}")),
    })
}
