//! The control plane in-process over a real raft store: validation before
//! commit, scheduling with explanations, status reports and watches.

use std::sync::Arc;
use std::time::Duration;

use berth_proto as pb;
use berth_proto::control_server::Control;
use berth_proto::node_api_server::NodeApi;
use berth_server::Server;
use berth_store::{NoPeers, Store, StoreConfig};
use tokio_stream::StreamExt;
use tonic::{Code, Request};

fn start() -> (tempfile::TempDir, Server) {
    start_with("default")
}

fn start_with(policy: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        StoreConfig::single(dir.path().to_path_buf()),
        Arc::new(NoPeers),
    )
    .unwrap();
    (dir, Server::start(store, policy, None).unwrap())
}

async fn tasks(s: &Server) -> Vec<pb::Task> {
    s.api()
        .list_tasks(Request::new(pb::ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .tasks
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn run(spec: &str, rid: &str) -> Request<pb::RunAppRequest> {
    Request::new(pb::RunAppRequest {
        spec: spec.into(),
        request_id: rid.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_spec_is_rejected_before_commit() {
    let (_d, s) = start();
    let err = s
        .api()
        .run_app(run(
            "name: web\nimage: busybox:latest\nresources: {memory: lots}\n",
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("resources.memory"),
        "{}",
        err.message()
    );
    let apps = s
        .api()
        .list_apps(Request::new(pb::ListAppsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert!(apps.is_empty());
    let err = s
        .api()
        .stop_app(Request::new(pb::AppRequest {
            name: "Nope!".into(),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_wait_with_a_reason_then_place_and_report() {
    let (_d, s) = start();
    let spec = "name: web\nimage: busybox:latest\ninstances: 2\nresources: {cpu: 1, memory: 64Mi}\nports: [{host: 8080}]\n";
    let r = s.api().run_app(run(spec, "r1")).await.unwrap().into_inner();
    assert!(r.changed);
    assert_eq!(r.tasks.len(), 2);
    // A retry with the same request id applies once.
    let again = s.api().run_app(run(spec, "r1")).await.unwrap().into_inner();
    assert_eq!(again.version, r.version);
    assert_eq!(tasks(&s).await.len(), 2);
    eventually("the no-node reason", || async {
        tasks(&s)
            .await
            .iter()
            .all(|t| t.message == "0/0 nodes: no nodes registered")
    })
    .await;

    let mut watch = s
        .api()
        .watch_tasks(Request::new(pb::WatchTasksRequest::default()))
        .await
        .unwrap()
        .into_inner();
    s.api()
        .register(Request::new(pb::RegisterRequest {
            name: "n1".into(),
            address: "127.0.0.1:1".into(),
            cpu_millis: 4000,
            memory_bytes: 1 << 30,
            labels: Default::default(),
            inventory: None,
            ..Default::default()
        }))
        .await
        .unwrap();
    // Both want host port 8080 on the only node: one is placed, one waits.
    eventually("one placement", || async {
        tasks(&s).await.iter().any(|t| t.node == "n1")
    })
    .await;
    eventually("the port reason", || async {
        tasks(&s)
            .await
            .iter()
            .any(|t| t.node.is_empty() && t.message == "0/1 nodes: 1 port 8080 in use")
    })
    .await;
    let placed = tasks(&s)
        .await
        .into_iter()
        .find(|t| t.node == "n1")
        .unwrap();
    assert_eq!(placed.allocation.as_ref().unwrap().ports, vec![8080]);

    s.api()
        .report_tasks(Request::new(pb::ReportTasksRequest {
            node: "n1".into(),
            statuses: vec![pb::TaskStatus {
                id: placed.id.clone(),
                state: pb::TaskState::Exited as i32,
                has_exit_code: true,
                exit_code: 3,
                ..Default::default()
            }],
        }))
        .await
        .unwrap();
    // The watch stream sees the exit.
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = watch.next().await {
            let t = ev.unwrap().task.unwrap();
            if t.id == placed.id && t.state == pb::TaskState::Exited as i32 {
                return t;
            }
        }
        panic!("stream ended");
    })
    .await
    .unwrap();
    assert_eq!((seen.has_exit_code, seen.exit_code), (true, 3));
    // A report for a task on another node is ignored; a bad state is refused.
    let bad = s
        .api()
        .report_tasks(Request::new(pb::ReportTasksRequest {
            node: "n1".into(),
            statuses: vec![pb::TaskStatus {
                id: placed.id.clone(),
                state: 42,
                ..Default::default()
            }],
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_stores_the_inventory_and_refuses_a_bad_one() {
    let (_d, s) = start();
    let dgx =
        berth_hostprobe::parse_inventory(berth_hostprobe::fixture::FIXTURES[0].1, "dgx").unwrap();
    let reg = |inv: berth_hostprobe::Inventory| {
        Request::new(pb::RegisterRequest {
            name: "dgx1".into(),
            address: "127.0.0.1:1".into(),
            cpu_millis: 224_000,
            memory_bytes: 2 << 40,
            labels: Default::default(),
            inventory: Some(pb::Inventory::from(&inv)),
            ..Default::default()
        })
    };
    // Too large to keep in the replicated state: refused, naming it.
    let mut huge = dgx.clone();
    huge.probe_notes = vec!["x".repeat(2 << 20)];
    let err = s.api().register(reg(huge)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("inventory: "),
        "{}",
        err.message()
    );
    let mut backwards = reg(dgx.clone());
    backwards.get_mut().dynamic_port_min = 30000;
    backwards.get_mut().dynamic_port_max = 20000;
    let err = s.api().register(backwards).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("dynamic_port_min, dynamic_port_max: 30000-20000")
    );
    let mut bad = dgx.clone();
    bad.gpus[0].numa_node = Some(9);
    let err = s.api().register(reg(bad)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("gpus[0].numa_node"),
        "{}",
        err.message()
    );
    // More than any machine has, or than its own inventory: refused.
    for (cpu, mem, field) in [
        (u64::MAX, 2 << 40, "cpu_millis"),
        (1000, u64::MAX, "memory_bytes"),
        (225_000, 2 << 40, "cpu_millis"),
        (224_000, 4 << 40, "memory_bytes"),
    ] {
        let mut r = reg(dgx.clone());
        r.get_mut().cpu_millis = cpu;
        r.get_mut().memory_bytes = mem;
        let err = s.api().register(r).await.unwrap_err();
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let nodes = s
        .api()
        .list_nodes(Request::new(pb::ListNodesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert!(nodes.is_empty(), "nothing stored");

    s.api().register(reg(dgx)).await.unwrap();
    let n = s
        .api()
        .get_node(Request::new(pb::GetNodeRequest {
            name: "dgx1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((n.cores, n.numa_nodes, n.gpus), (112, 2, 8));
    assert_eq!(n.gpu_model, "8x NVIDIA H100 80GB HBM3");
    let inv = berth_hostprobe::Inventory::try_from(n.inventory.unwrap()).unwrap();
    assert_eq!(inv.nvlink_islands().len(), 1);
}

async fn register_fixture(s: &Server, name: &str, fixture: &str) {
    let inv = berth_hostprobe::load_fixture(fixture).unwrap();
    s.api()
        .register(Request::new(pb::RegisterRequest {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            cpu_millis: inv.pu_count() as u64 * 1000,
            memory_bytes: inv.memory_bytes(),
            labels: Default::default(),
            inventory: Some(pb::Inventory::from(&inv)),
            ..Default::default()
        }))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_that_does_not_fit_holds_nothing() {
    let (_d, s) = start();
    register_fixture(&s, "dgx1", "dgx-h100").await;
    register_fixture(&s, "dgx2", "dgx-h100").await;
    let gang = "name: gang\nimage: busybox:latest\ninstances: 3\ngang: true\nresources: {cpu: 1, memory: 1Gi, gpus: {count: 8, interconnect: nvlink}}\n";
    s.api().run_app(run(gang, "g1")).await.unwrap();
    eventually("the gang's reason", || async {
        let t = tasks(&s).await;
        t.len() == 3
            && t.iter()
                .all(|t| t.message.starts_with("gang of 3: 2 of 3 fit;"))
    })
    .await;
    assert!(
        tasks(&s).await.iter().all(|t| t.node.is_empty()),
        "nothing placed"
    );
    // Nothing is held: a non-gang 8-GPU task still finds a whole DGX.
    let one = "name: one\nimage: busybox:latest\nresources: {cpu: 1, memory: 1Gi, gpus: {count: 8, interconnect: nvlink}}\n";
    s.api().run_app(run(one, "o1")).await.unwrap();
    eventually("the single task to be placed", || async {
        tasks(&s)
            .await
            .iter()
            .any(|t| t.app == "one" && !t.node.is_empty())
    })
    .await;
    // On a fresh cluster, a gang of two fits the two DGXs and is placed at once.
    let (_d2, s) = start();
    register_fixture(&s, "dgx1", "dgx-h100").await;
    register_fixture(&s, "dgx2", "dgx-h100").await;
    let two = gang
        .replace("instances: 3", "instances: 2")
        .replace("name: gang", "name: pair");
    s.api().run_app(run(&two, "p1")).await.unwrap();
    eventually("the pair placed on both DGXs", || async {
        let placed: std::collections::BTreeSet<String> = tasks(&s)
            .await
            .into_iter()
            .filter(|t| t.app == "pair")
            .map(|t| t.node)
            .collect();
        placed
            == ["dgx1".to_string(), "dgx2".to_string()]
                .into_iter()
                .collect()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_shape_placement() {
    let (_d, s) = start();
    register_fixture(&s, "dgx1", "dgx-h100").await;
    register_fixture(&s, "cpu1", "cpu-2s").await;
    let spec =
        "name: web\nimage: busybox:latest\ninstances: 3\nconstraints: [[hostname, UNIQUE]]\n";
    s.api().run_app(run(spec, "w")).await.unwrap();
    eventually("two placed, one waiting on the constraint", || async {
        let t = tasks(&s).await;
        t.iter().filter(|t| !t.node.is_empty()).count() == 2
            && t.iter()
                .any(|t| t.message == "0/2 nodes: 2 constraint hostname UNIQUE")
    })
    .await;
    let gpu =
        "name: infer\nimage: busybox:latest\nconstraints: [[gpu.model, LIKE, \".*H100.*\"]]\n";
    s.api().run_app(run(gpu, "i")).await.unwrap();
    eventually("the H100 constraint", || async {
        tasks(&s)
            .await
            .iter()
            .any(|t| t.app == "infer" && t.node == "dgx1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_preempts_the_fewest_lower_tasks() {
    let (_d, s) = start();
    register_fixture(&s, "a100", "a100-pcie-4x").await;
    let low = "name: batch\nimage: busybox:latest\ninstances: 4\npriority: -10\nresources: {cpu: 1, memory: 1Gi, gpus: {count: 1}}\n";
    s.api().run_app(run(low, "l")).await.unwrap();
    eventually("four batch tasks placed", || async {
        tasks(&s)
            .await
            .iter()
            .filter(|t| !t.node.is_empty())
            .count()
            == 4
    })
    .await;
    let high = "name: train\nimage: busybox:latest\npriority: 100\nresources: {cpu: 1, memory: 1Gi, gpus: {count: 2, interconnect: nvlink}}\n";
    s.api().run_app(run(high, "h")).await.unwrap();
    eventually("two victims told why", || async {
        let t = tasks(&s).await;
        let victims: Vec<_> = t
            .iter()
            .filter(|t| t.desired == pb::Desired::Remove as i32)
            .collect();
        victims.len() == 2
            && victims.iter().all(|v| {
                v.message.starts_with("preempted by train-")
                    && v.message.contains("(priority 100 > -10)")
            })
            && t.iter()
                .filter(|t| {
                    t.app == "batch" && t.desired == pb::Desired::Run as i32 && t.node.is_empty()
                })
                .count()
                == 2
    })
    .await;
    // The victims stop (their agent reports them gone): the task is placed.
    let victims: Vec<pb::Task> = tasks(&s)
        .await
        .into_iter()
        .filter(|t| t.desired == pb::Desired::Remove as i32)
        .collect();
    let pair: Vec<u32> = victims
        .iter()
        .map(|v| v.allocation.as_ref().unwrap().gpus[0].index)
        .collect();
    s.api()
        .report_tasks(Request::new(pb::ReportTasksRequest {
            node: "a100".into(),
            statuses: victims
                .iter()
                .map(|v| pb::TaskStatus {
                    id: v.id.clone(),
                    state: pb::TaskState::Stopped as i32,
                    gone: true,
                    ..Default::default()
                })
                .collect(),
        }))
        .await
        .unwrap();
    eventually("the preemptor placed on the freed NVLink pair", || async {
        tasks(&s).await.iter().any(|t| {
            t.app == "train"
                && t.allocation.as_ref().is_some_and(|a| {
                    let mut got: Vec<u32> = a.gpus.iter().map(|g| g.index).collect();
                    got.sort();
                    let mut want = pair.clone();
                    want.sort();
                    got == want
                })
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_policy_decides_where_tasks_go() {
    // binpack and the default pack the second task next to the first;
    // spread puts it on the empty node.
    for (policy, want) in [("binpack", "n1"), ("spread", "n2"), ("default", "n1")] {
        let (_d, s) = start_with(policy);
        register_fixture(&s, "n1", "cpu-2s").await;
        register_fixture(&s, "n2", "cpu-2s").await;
        for app in ["a", "b"] {
            let spec =
                format!("name: {app}\nimage: busybox:latest\nresources: {{cpu: 8, memory: 1Gi}}\n");
            s.api().run_app(run(&spec, app)).await.unwrap();
            eventually("placement", || async {
                tasks(&s)
                    .await
                    .iter()
                    .any(|t| t.app == app && !t.node.is_empty())
            })
            .await;
        }
        let t = tasks(&s).await;
        let node = |app: &str| t.iter().find(|t| t.app == app).unwrap().node.clone();
        assert_eq!(node("a"), "n1", "{policy}");
        assert_eq!(node("b"), want, "{policy}");
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        StoreConfig::single(dir.path().to_path_buf()),
        Arc::new(NoPeers),
    )
    .unwrap();
    let e = Server::start(store, "nope", None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unknown policy \"nope\""), "{e}");
}
