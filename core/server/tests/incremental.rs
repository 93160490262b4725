//! The incremental paths against building from scratch, over a real raft
//! store and a pseudo-random command sequence: the scheduler's live view
//! equals a fresh snapshot after every apply, and a node's assignment
//! deltas, applied in order, equal its full set.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_model::node::{NodeInfo, NodeStatus};
use berth_model::quantity::{Bytes, MilliCpu};
use berth_model::spec::parse_spec;
use berth_model::task::{Allocation, TaskState, TaskStatus};
use berth_proto::assignments::View;
use berth_server::assign::{self, Routed, Stream};
use berth_server::convert;
use berth_server::live::{self, Live};
use berth_store::{Command, Envelope, Event, NoPeers, Placement, Store, StoreConfig};

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const APPS: [&str; 3] = ["web", "db", "batch"];

/// A small deterministic generator (no clock, no OS randomness).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn command(state: &berth_store::ClusterState, r: &mut Lcg) -> Option<Command> {
    let ids: Vec<&String> = state.tasks.keys().collect();
    let pick =
        |r: &mut Lcg| (!ids.is_empty()).then(|| ids[r.next(ids.len() as u64) as usize].clone());
    Some(match r.next(9) {
        0 | 1 => Command::PutApp {
            spec: Box::new(
                parse_spec(&format!(
                    "name: {}\nimage: busybox:latest\ninstances: {}\nrestart: {}\nresources: {{cpu: {}m, memory: 16Mi}}\n",
                    APPS[r.next(3) as usize],
                    r.next(5),
                    ["always", "on-failure", "never"][r.next(3) as usize],
                    100 * (1 + r.next(4)),
                ))
                .expect("a valid spec"),
            ),
        },
        2 if r.next(2) == 0 => Command::StopApp { name: APPS[r.next(3) as usize].into() },
        2 => Command::ScaleApp {
            name: APPS[r.next(3) as usize].into(),
            instances: r.next(6) as u32,
        },
        3 => Command::RegisterNode {
            subnets: None,
            info: NodeInfo {
                dynamic_ports: None,
                name: NODES[r.next(3) as usize].into(),
                address: String::new(),
                cpu: MilliCpu(4000 + 1000 * r.next(2)),
                memory: Bytes(1 << 30),
                labels: Default::default(),
                inventory: None,
            },
        },
        4 => Command::SetNodeStatus {
            name: NODES[r.next(3) as usize].into(),
            status: if r.next(2) == 0 { NodeStatus::Ready } else { NodeStatus::Down },
        },
        5 | 6 => {
            let task = pick(r)?;
            Command::Schedule {
                placements: vec![Placement {
                    task,
                    node: NODES[r.next(3) as usize].into(),
                    allocation: Allocation {
                        cpu: MilliCpu(100 * (1 + r.next(5))),
                        memory: Bytes(1 << 20),
                        // Host ports are exclusive per node (the scheduler's
                        // host-ports filter): one of its own per task.
                        ports: vec![8000 + r.next(50_000) as u16],
                        ..Default::default()
                    },
                }],
                unplaced: Vec::new(),
            }
        }
        _ => {
            let id = pick(r)?;
            let node = state.tasks.get(&id)?.node.clone()?;
            Command::ReportTasks {
                node,
                statuses: vec![TaskStatus {
                    id,
                    state: [TaskState::Running, TaskState::Exited, TaskState::Failed, TaskState::Stopped]
                        [r.next(4) as usize],
                    exit_code: Some(r.next(2) as i32),
                    restarts: 0,
                    message: String::new(),
                    gone: r.next(3) == 0,
                    given_up: r.next(4) == 0,
                    health: berth_model::task::Health::Unknown,
                    ready: r.next(2) == 0,
                    ip: String::new(),
                }],
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_view_and_deltas_match_building_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        StoreConfig::single(dir.path().to_path_buf()),
        Arc::new(NoPeers),
    )
    .unwrap();
    let mut role = store.role();
    role.wait_for(|_| store.is_leader()).await.unwrap();
    let mut live = Live::new(&store);
    let mut sub = store.subscribe();
    let mut streams: Vec<(Stream, View)> = NODES
        .iter()
        .map(|n| {
            let mut s = Stream::new(n.to_string());
            let mut v = View::default();
            v.apply(s.full(&store.read())).unwrap();
            (s, v)
        })
        .collect();
    let mut r = Lcg(42);
    let mut applied = 0;
    for _ in 0..1500 {
        let cmd = { command(&store.read(), &mut r) };
        let Some(cmd) = cmd else { continue };
        store
            .propose(Envelope {
                at_ms: 0,
                request_id: None,
                command: cmd,
            })
            .await
            .unwrap();
        applied += 1;
        let state = store.read();
        // The live view, against a snapshot built from scratch.
        assert!(live.sync(&state));
        let fresh = live::snapshot(&state);
        assert_eq!(
            live.cluster.nodes(),
            fresh.nodes(),
            "after {applied} commands"
        );
        assert_eq!(live.context(), live::workload_context(&state));
        // Each node's deltas, against its full set.
        while let Ok(Some(batch)) = sub.try_recv() {
            for (i, (stream, view)) in streams.iter_mut().enumerate() {
                let idx: Vec<u32> = batch
                    .events
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| match e {
                        Event::TaskUpdated(t) | Event::TaskRemoved(t) => {
                            t.node.as_deref() == Some(NODES[i])
                        }
                        _ => false,
                    })
                    .map(|(k, _)| k as u32)
                    .collect();
                if idx.is_empty() {
                    continue;
                }
                let mut touched = Default::default();
                assert!(assign::touched(
                    &Routed::Events(batch.clone(), idx),
                    &mut touched
                ));
                if let Some(u) = stream.delta(&state, &touched) {
                    view.apply(u).expect("deltas follow one another");
                }
            }
        }
        for (i, (_, view)) in streams.iter().enumerate() {
            let full: BTreeMap<String, berth_proto::Task> = state
                .tasks
                .on_node(NODES[i])
                .map(|t| (t.id.clone(), convert::task(t)))
                .collect();
            assert_eq!(
                view.tasks, full,
                "node {} after {applied} commands",
                NODES[i]
            );
            for t in view.tasks.values() {
                if t.desired == berth_proto::Desired::Run as i32
                    && state
                        .apps
                        .get(&t.app)
                        .is_some_and(|a| a.version == t.version)
                {
                    assert!(view.launch_for(t).is_some(), "launch spec for {}", t.id);
                }
            }
        }
    }
    assert!(applied > 300, "only {applied} commands applied");
    store.shutdown().await;
}
