//! From the scheduler's types to the contract's: the node table (once per
//! snapshot), a task (once per call) and the candidate columns (per call,
//! numeric, one bulk copy per column).

use berth_sched::{Cluster, NodeState, NumaPolicy, TaskRequest};

use crate::bindings::types::{self, GpuInfo, GpuRequest, NodeInfo, Nodes, Task};

/// NVLink island of each GPU of `node` (connected components, numbered
/// from 0 in GPU order).
fn islands(node: &NodeState) -> Vec<u32> {
    let n = node.gpus.len();
    let pos = |index: u32| node.gpus.iter().position(|g| g.index == index);
    let mut island = vec![u32::MAX; n];
    let mut next = 0;
    for start in 0..n {
        if island[start] != u32::MAX {
            continue;
        }
        island[start] = next;
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for (peer, _) in &node.gpus[i].nvlinks {
                if let Some(p) = pos(*peer)
                    && island[p] == u32::MAX
                {
                    island[p] = next;
                    stack.push(p);
                }
            }
        }
        next += 1;
    }
    island
}

/// The node table of a snapshot, in the cluster's order.
pub fn node_table(cluster: &Cluster) -> Vec<NodeInfo> {
    cluster
        .nodes()
        .iter()
        .map(|n| {
            let island = islands(n);
            NodeInfo {
                name: n.name.clone(),
                labels: n
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                cpu_capacity: n.cpu_capacity,
                mem_capacity: n.mem_capacity,
                cores: n.cores.len() as u32,
                numa_nodes: n.numa_ids().len() as u32,
                gpus: n
                    .gpus
                    .iter()
                    .zip(island)
                    .map(|(g, island)| GpuInfo {
                        model: g.model.clone(),
                        memory: g.memory_bytes,
                        numa: g.numa.map_or(-1, |x| x as i32),
                        island,
                        mig: !g.mig.is_empty(),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A task as the contract has it.
pub fn task(t: &TaskRequest) -> Task {
    Task {
        id: t.id.clone(),
        group: t.group.clone(),
        cpu: t.cpu,
        memory: t.memory,
        cores: t.cores,
        gpu: t.gpus.as_ref().map(|g| GpuRequest {
            count: g.count,
            milli: g.milli,
            min_memory: g.min_memory,
            nvlink: g.interconnect == berth_sched::Interconnect::NvLink,
            models: g.models.clone(),
            mig_profile: g.mig_profile.clone().unwrap_or_default(),
        }),
        nics: t.nics.as_ref().map_or(0, |n| n.count),
        numa: match t.numa {
            NumaPolicy::None => types::NumaPolicy::None,
            NumaPolicy::BestEffort => types::NumaPolicy::BestEffort,
            NumaPolicy::Restricted => types::NumaPolicy::Restricted,
            NumaPolicy::SingleNumaNode => types::NumaPolicy::SingleNumaNode,
        },
        priority: t.priority,
        labels: t
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Empty columns.
pub fn empty_nodes() -> Nodes {
    Nodes {
        index: Vec::new(),
        cpu_free: Vec::new(),
        mem_free: Vec::new(),
        cores_free: Vec::new(),
        nics_free: Vec::new(),
        gpu_start: Vec::new(),
        gpu_free: Vec::new(),
    }
}

/// Fills `out` with the columns of `nodes` (reusing its buffers).
pub fn columns(nodes: &[&NodeState], out: &mut Nodes) {
    out.index.clear();
    out.cpu_free.clear();
    out.mem_free.clear();
    out.cores_free.clear();
    out.nics_free.clear();
    out.gpu_start.clear();
    out.gpu_free.clear();
    for n in nodes {
        out.index.push(n.slot);
        out.cpu_free.push(n.free.cpu);
        out.mem_free.push(n.free.memory);
        out.cores_free.push(n.free.cores);
        out.nics_free.push(n.free.nics);
        out.gpu_start.push(out.gpu_free.len() as u32);
        out.gpu_free.extend_from_slice(&n.gpu_free);
    }
    out.gpu_start.push(out.gpu_free.len() as u32);
}

/// The whole request of `spec` by `caller`, for `admission-review`
/// plugins (contract 0.2).
pub fn review(spec: &berth_model::AppSpec, caller: &str) -> types::ReviewRequest {
    use berth_model::spec::{Seccomp, VolumeKind};
    let mut app = task(&TaskRequest::for_spec(&spec.name, spec));
    app.group.clear();
    types::ReviewRequest {
        app,
        namespace: spec.namespace.clone(),
        image: spec.image.clone(),
        command: spec.command.clone(),
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ports: spec
            .ports
            .iter()
            .map(|p| types::Port {
                name: p.name.clone().unwrap_or_default(),
                host: p.host,
                container: p.container,
            })
            .collect(),
        volumes: spec
            .volumes
            .iter()
            .map(|v| types::Volume {
                name: v.name.clone(),
                path: v.path.clone(),
                kind: match v.kind() {
                    VolumeKind::Persistent => "persistent",
                    VolumeKind::HostPath => "host",
                    VolumeKind::Ephemeral => "ephemeral",
                }
                .to_string(),
                host_path: v.host_path.clone().unwrap_or_default(),
                read_only: v.read_only,
            })
            .collect(),
        network: spec.network().as_str().to_string(),
        user: spec.user.clone().unwrap_or_default(),
        read_only_root: spec.read_only_root,
        seccomp: match spec.seccomp {
            Seccomp::Default => "default",
            Seccomp::Unconfined => "unconfined",
        }
        .to_string(),
        caller: caller.to_string(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_review_request_carries_the_whole_spec_and_the_caller() {
        let spec = berth_model::parse_spec(
            "name: web\nnamespace: team-a\nimage: registry.example.com/web:1\n\
             command: [httpd, -f]\nenv: {MODE: prod}\nnetwork: host\n\
             ports: [{name: http, host: 8080}]\nuser: \"1000\"\nread_only_root: true\n\
             volumes: [{name: data, path: /data, size: 1Gi}]\nlabels: {team: a}\n",
        )
        .unwrap();
        let r = review(&spec, "client/alice token 0123");
        assert_eq!(r.app.id, "web");
        assert_eq!(r.namespace, "team-a");
        assert_eq!(r.image, "registry.example.com/web:1");
        assert_eq!(r.command, ["httpd", "-f"]);
        assert_eq!(r.env, [("MODE".to_string(), "prod".to_string())]);
        assert_eq!(r.network, "host");
        assert_eq!(r.ports[0].name, "http");
        assert_eq!(r.ports[0].host, Some(8080));
        assert_eq!(r.volumes[0].kind, "persistent");
        assert_eq!(r.user, "1000");
        assert!(r.read_only_root);
        assert_eq!(r.seccomp, "default");
        assert_eq!(r.caller, "client/alice token 0123");
        assert!(
            r.app
                .labels
                .contains(&("team".to_string(), "a".to_string()))
        );
    }

    use super::*;
    use berth_sched::GpuState;

    #[test]
    fn columns_and_islands() {
        let gpu = |index: u32, peer: Option<u32>, used: u32| GpuState {
            index,
            nvlinks: peer.map(|p| vec![(p, 2)]).unwrap_or_default(),
            milli_used: used,
            ..Default::default()
        };
        let a = NodeState {
            name: "a".into(),
            cpu_capacity: 4000,
            cpu_used: 1000,
            gpus: vec![gpu(0, Some(1), 0), gpu(1, Some(0), 250), gpu(2, None, 0)],
            ..Default::default()
        };
        let b = NodeState {
            name: "b".into(),
            ..Default::default()
        };
        assert_eq!(islands(&a), vec![0, 0, 1]);
        let c = Cluster::new(vec![b, a]);
        let view: Vec<&NodeState> = vec![&c.nodes()[0], &c.nodes()[1]];
        let mut out = empty_nodes();
        columns(&view, &mut out);
        assert_eq!(out.index, vec![0, 1]);
        assert_eq!(out.cpu_free, vec![3000, 0]);
        assert_eq!(out.gpu_start, vec![0, 3, 3]);
        assert_eq!(out.gpu_free, vec![1000, 750, 1000]);
        let table = node_table(&c);
        assert_eq!(table[0].gpus[2].island, 1);
        assert_eq!(table[1].name, "b");
    }
}
