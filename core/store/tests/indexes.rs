//! The state machine's task indexes (by node, by app, pending) against a
//! scan of every task, after random command sequences.

use berth_model::node::{NodeInfo, NodeStatus};
use berth_model::quantity::{Bytes, MilliCpu};
use berth_model::spec::parse_spec;
use berth_model::task::{Allocation, TaskState, TaskStatus};
use berth_store::{ClusterState, Command, Envelope, Outcome, Placement};
use proptest::prelude::*;

const APPS: [&str; 3] = ["web", "db", "batch"];
const NODES: [&str; 3] = ["n1", "n2", "n3"];

#[derive(Debug, Clone)]
enum Op {
    Put(usize, u32, i32),
    Stop(usize),
    Scale(usize, u32),
    Remove(usize),
    Register(usize),
    Status(usize, bool),
    Drain(usize, bool),
    Place(usize, usize),
    Report(usize, u8, bool),
    Preempt(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..4u32, 0..3i32).prop_map(|(a, n, p)| Op::Put(a, n, p)),
        (0..3usize).prop_map(Op::Stop),
        (0..3usize, 0..6u32).prop_map(|(a, n)| Op::Scale(a, n)),
        (0..3usize).prop_map(Op::Remove),
        (0..3usize).prop_map(Op::Register),
        (0..3usize, any::<bool>()).prop_map(|(n, up)| Op::Status(n, up)),
        (0..3usize, any::<bool>()).prop_map(|(n, d)| Op::Drain(n, d)),
        (0..64usize, 0..3usize).prop_map(|(t, n)| Op::Place(t, n)),
        (0..64usize, 0..5u8, any::<bool>()).prop_map(|(t, s, g)| Op::Report(t, s, g)),
        (0..64usize, 0..64usize).prop_map(|(a, b)| Op::Preempt(a, b)),
    ]
}

/// The `i`-th task id (modulo the count), if there is any task.
fn nth(state: &ClusterState, i: usize) -> Option<String> {
    let n = state.tasks.len();
    (n > 0).then(|| state.tasks.keys().nth(i % n).cloned().unwrap_or_default())
}

fn command(state: &ClusterState, op: &Op) -> Option<Command> {
    Some(match *op {
        Op::Put(a, n, p) => Command::PutApp {
            spec: Box::new(
                parse_spec(&format!(
                    "name: {}\nimage: busybox:latest\ninstances: {n}\npriority: {p}\n",
                    APPS[a]
                ))
                .expect("a valid spec"),
            ),
        },
        Op::Stop(a) => Command::StopApp {
            name: APPS[a].into(),
        },
        Op::Scale(a, n) => Command::ScaleApp {
            name: APPS[a].into(),
            instances: n,
        },
        Op::Remove(a) => Command::RemoveApp {
            name: APPS[a].into(),
        },
        Op::Register(n) => Command::RegisterNode {
            subnets: None,
            info: NodeInfo {
                dynamic_ports: None,
                name: NODES[n].into(),
                address: String::new(),
                cpu: MilliCpu(4000),
                memory: Bytes(1 << 30),
                labels: Default::default(),
                inventory: None,
            },
        },
        Op::Status(n, up) => Command::SetNodeStatus {
            name: NODES[n].into(),
            status: if up {
                NodeStatus::Ready
            } else {
                NodeStatus::Down
            },
        },
        Op::Drain(n, drain) => Command::DrainNode {
            name: NODES[n].into(),
            drain,
        },
        Op::Place(t, n) => Command::Schedule {
            placements: vec![Placement {
                task: nth(state, t)?,
                node: NODES[n].into(),
                allocation: Allocation::default(),
            }],
            unplaced: vec![(nth(state, t + 1)?, format!("reason {t}"))],
        },
        Op::Report(t, s, gone) => {
            let id = nth(state, t)?;
            let node = state.tasks.get(&id)?.node.clone()?;
            let st = [
                TaskState::Pending,
                TaskState::Running,
                TaskState::Exited,
                TaskState::Failed,
                TaskState::Stopped,
            ][s as usize];
            Command::ReportTasks {
                node,
                statuses: vec![TaskStatus {
                    id,
                    state: st,
                    exit_code: None,
                    restarts: 0,
                    message: String::new(),
                    gone,
                    given_up: false,
                    health: Default::default(),
                    ready: false,
                    ip: String::new(),
                }],
            }
        }
        Op::Preempt(a, b) => {
            let victim = nth(state, b)?;
            Command::Preempt {
                task: nth(state, a)?,
                node: state.tasks.get(&victim)?.node.clone()?,
                evict: vec![victim],
            }
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn indexes_match_a_scan(ops in proptest::collection::vec(op(), 1..80)) {
        let mut state = ClusterState::default();
        for (i, op) in ops.iter().enumerate() {
            let Some(cmd) = command(&state, op) else { continue };
            let mut events = Vec::new();
            state.apply(i as u64 + 2, Envelope { at_ms: 0, request_id: None, command: cmd }, &mut events);
            prop_assert_eq!(state.tasks.check_indexes(), Ok(()));
            for n in NODES {
                let scan: Vec<&str> = state.tasks.values()
                    .filter(|t| t.node.as_deref() == Some(n)).map(|t| t.id.as_str()).collect();
                let idx: Vec<&str> = state.assignments_for(n).map(|t| t.id.as_str()).collect();
                prop_assert_eq!(scan, idx);
            }
        }
        // A snapshot round trip rebuilds the same indexes.
        let mut back: ClusterState = serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
        back.rebuild_indexes();
        prop_assert_eq!(back.tasks.check_indexes(), Ok(()));
        prop_assert!(back == state);
    }
}

#[test]
fn a_reused_request_id_is_refused_and_a_retry_answered() {
    let mut state = ClusterState::default();
    let put = |n: u32| Envelope {
        at_ms: 0,
        request_id: Some("r1".into()),
        command: Command::PutApp {
            spec: Box::new(
                parse_spec(&format!(
                    "name: web\nimage: busybox:latest\ninstances: {n}\n"
                ))
                .unwrap(),
            ),
        },
    };
    let mut ev = Vec::new();
    let first = state.apply(2, put(1), &mut ev);
    assert!(matches!(first, Outcome::App { changed: true, .. }));
    assert_eq!(
        state.apply(3, put(1), &mut ev),
        first,
        "a retry gets the first answer"
    );
    let Outcome::Rejected(why) = state.apply(4, put(2), &mut ev) else {
        panic!("a different request under the same id must be refused");
    };
    assert!(
        why.contains("already used for a different request"),
        "{why}"
    );
    let long = Envelope {
        at_ms: 0,
        request_id: Some("x".repeat(3 << 20)),
        command: Command::StopApp { name: "web".into() },
    };
    assert!(matches!(
        state.apply(5, long, &mut ev),
        Outcome::Rejected(_)
    ));
    assert_eq!(state.outcome_of(&"x".repeat(3 << 20)), None, "nothing kept");
}
