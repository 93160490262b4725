//! `Overview`, `ListNamespaces` and `WatchEvents`: the cluster at a
//! glance, the namespaces a caller may read, and the event stream. The
//! dashboard's first page and its live updates come from here, as does
//! `berth events`.

use std::collections::BTreeMap;

use berth_model::acl::{Area, Level, Need};
use berth_proto as pb;
use tonic::{Request, Response, Status};

use crate::api::{Api, BoxStream};
use crate::auth::caller;
use crate::events::{self, Entry};

/// Pending tasks an overview lists by default, and at most.
pub const PENDING_LISTED: (u32, u32) = (50, 1000);

impl Api {
    /// Whether the caller may read cluster area `area` (no caller: yes).
    fn may_read<T>(&self, req: &Request<T>, area: Area) -> bool {
        crate::auth::check(&self.store, caller(req), &Need::Cluster(area, Level::Read)).is_ok()
            || caller(req).is_some_and(|c| c.sees_all())
    }

    pub(crate) async fn overview_of(
        &self,
        req: Request<pb::OverviewRequest>,
    ) -> Result<Response<pb::ClusterOverview>, Status> {
        self.barrier(&req).await?;
        let nodes_visible = self.may_read(&req, Area::Nodes);
        let servers = if self.may_read(&req, Area::Operator) {
            let r = Request::new(pb::MembersRequest {});
            <Api as pb::membership_server::Membership>::members(self, r)
                .await
                .ok()
                .map(Response::into_inner)
        } else {
            None
        };
        let scope = self.scope(&req);
        let limit = match req.get_ref().pending_limit {
            0 => PENDING_LISTED.0,
            n if n > PENDING_LISTED.1 => {
                return Err(Status::invalid_argument(format!(
                    "pending_limit: {n} is more than {}",
                    PENDING_LISTED.1
                )));
            }
            n => n,
        } as usize;
        let state = self.store.read();
        let mut o = pb::ClusterOverview {
            servers,
            ..Default::default()
        };
        if nodes_visible {
            let mut gpus: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            let (mut cpu, mut mem) = ((0, 0), (0, 0));
            for (name, n) in &state.nodes {
                if n.drained {
                    o.nodes_draining += 1;
                }
                if n.status != berth_model::node::NodeStatus::Ready {
                    o.nodes_down += 1;
                    continue;
                }
                o.nodes_ready += 1;
                let u = crate::usage::of_node(&state, name, n);
                cpu = (cpu.0 + u.cpu, cpu.1 + u.cpu_held);
                mem = (mem.0 + u.memory, mem.1 + u.memory_held);
                for (model, (have, held)) in u.gpus {
                    let e = gpus.entry(model).or_default();
                    *e = (e.0 + have, e.1 + held);
                }
            }
            let used = |kind: &str, model: String, (a, b): (u64, u64)| pb::ResourceUse {
                kind: kind.into(),
                model,
                allocatable: a,
                allocated: b,
            };
            o.resources.push(used("cpu", String::new(), cpu));
            o.resources.push(used("memory", String::new(), mem));
            for (model, g) in gpus {
                o.resources.push(used("gpu", model, g));
            }
        }
        let ns_of = |app: &str| state.apps.get(app).map(|a| a.spec.namespace.as_str());
        let mine = |app: &str| scope.as_deref().is_none_or(|ns| ns_of(app) == Some(ns));
        o.apps = state.apps.values().filter(|a| mine(&a.spec.name)).count() as u32;
        for t in state.tasks.pending() {
            if !mine(&t.app) {
                continue;
            }
            o.pending += 1;
            if o.pending_tasks.len() < limit {
                o.pending_tasks.push(pb::PendingTask {
                    task: t.id.clone(),
                    app: t.app.clone(),
                    namespace: ns_of(&t.app).unwrap_or_default().to_string(),
                    reason: t.message.clone(),
                });
            }
        }
        o.tasks_running = match &scope {
            None => state
                .tasks
                .values()
                .filter(|t| t.state == berth_model::task::TaskState::Running)
                .count() as u32,
            Some(_) => state
                .apps
                .keys()
                .filter(|a| mine(a))
                .map(|a| {
                    state
                        .tasks_of(a)
                        .filter(|t| t.state == berth_model::task::TaskState::Running)
                        .count() as u32
                })
                .sum(),
        };
        Ok(Response::new(o))
    }

    pub(crate) async fn list_namespaces_of(
        &self,
        req: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        self.barrier(&req).await?;
        let c = caller(&req).cloned();
        let state = self.store.read();
        let mut names: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
        names.insert(berth_model::acl::DEFAULT_NAMESPACE, (0, 0));
        for a in state.apps.values() {
            let e = names.entry(a.spec.namespace.as_str()).or_default();
            e.0 += 1;
            e.1 += state.tasks_of(&a.spec.name).count() as u32;
        }
        for ns in state.acl.quotas.keys() {
            names.entry(ns.as_str()).or_default();
        }
        // The namespaces the caller's policies name, even if empty.
        let granted = c.as_ref().and_then(|c| c.token.as_ref());
        for p in granted.iter().flat_map(|t| &t.policies) {
            for ns in state
                .acl
                .policies
                .get(p)
                .iter()
                .flat_map(|p| p.namespaces.keys())
            {
                if ns != "*" {
                    names.entry(ns.as_str()).or_default();
                }
            }
        }
        let visible = |ns: &str| match &c {
            None => true,
            Some(c) if c.sees_all() => true,
            Some(c) => c.token.as_ref().is_some_and(|t| {
                state
                    .acl
                    .allows(t, &Need::Namespace(ns.to_string(), Level::Read))
            }),
        };
        let namespaces = names
            .into_iter()
            .filter(|(ns, _)| visible(ns))
            .map(|(ns, (apps, tasks))| {
                let quota = state.acl.quotas.get(ns);
                pb::NamespaceInfo {
                    name: ns.to_string(),
                    apps,
                    tasks,
                    quota: quota
                        .map(|q| serde_json::to_string(q).unwrap_or_default())
                        .unwrap_or_default(),
                    used: quota
                        .map(|_| {
                            serde_json::to_string(&state.namespace_usage(ns)).unwrap_or_default()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(pb::ListNamespacesResponse { namespaces }))
    }

    pub(crate) async fn watch_events_of(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<BoxStream<pb::ClusterEvent>>, Status> {
        let scope = self.scope(&req);
        let nodes = self.may_read(&req, Area::Nodes);
        let plugins = self.may_read(&req, Area::Plugins);
        let r = req.into_inner();
        let now = r.since == "now";
        let since = match r.since.as_str() {
            "" | "now" => None,
            s => Some(events::parse_id(s).map_err(Status::invalid_argument)?),
        };
        let (all, app, follow) = (r.all, r.app, !r.no_follow);
        let wanted = move |e: &Entry| -> bool {
            let cluster_wide = e.namespace.is_empty() && e.task.is_none();
            let seen = match e.kind {
                "node" => nodes,
                "plugin" => plugins,
                _ if cluster_wide => nodes,
                _ => scope.as_deref().is_none_or(|ns| e.namespace == ns),
            };
            let of_app = app.is_empty()
                || e.task.as_ref().is_some_and(|t| t.app == app)
                || (e.kind == "deployment" && e.subject == app);
            seen && of_app && (all || e.notable())
        };
        let start = self.events.watch(since, now);
        let log = self.events.clone();
        let stream = async_stream(start, log, follow, wanted);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Bytes per chunk of a backup.
const BACKUP_CHUNK: usize = 1 << 20;

impl Api {
    pub(crate) async fn snapshot_save_of(
        &self,
        req: Request<pb::SnapshotSaveRequest>,
    ) -> Result<Response<BoxStream<pb::BackupChunk>>, Status> {
        if !self.store.is_leader() {
            return Err(self.not_leader());
        }
        // Everything committed before the call is in it.
        self.barrier(&req).await?;
        let store = self.store.clone();
        let bytes = tokio::task::spawn_blocking(move || store.backup())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let chunks: Vec<Result<pb::BackupChunk, Status>> = bytes
            .chunks(BACKUP_CHUNK)
            .map(|c| Ok(pb::BackupChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// A `lost` event: the history no longer holds what came after the
/// watcher's point, up to `dropped`.
fn lost(dropped: events::Key) -> pb::ClusterEvent {
    pb::ClusterEvent {
        id: events::id_of(dropped),
        kind: "lost".into(),
        action: "lost".into(),
        message: format!(
            "events up to {} are no longer kept; what follows is complete",
            events::id_of(dropped)
        ),
        at_ms: berth_store::command::now_ms(),
        ..Default::default()
    }
}

/// The backlog, then the live feed; a watcher that falls behind the feed
/// picks up from the history (or hears what it lost).
fn async_stream(
    start: events::Start,
    log: std::sync::Arc<events::EventLog>,
    follow: bool,
    wanted: impl Fn(&Entry) -> bool + Send + 'static,
) -> impl tokio_stream::Stream<Item = Result<pb::ClusterEvent, Status>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::ClusterEvent, Status>>(256);
    tokio::spawn(async move {
        let events::Start {
            backlog,
            lost: gone,
            mut live,
        } = start;
        let mut last = (0, 0);
        if let Some(d) = gone
            && tx.send(Ok(lost(d))).await.is_err()
        {
            return;
        }
        let mut pending = backlog;
        loop {
            for e in pending.drain(..) {
                if e.key <= last {
                    continue;
                }
                last = e.key;
                if wanted(&e) && tx.send(Ok(e.to_proto())).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            match live.recv().await {
                Ok(e) => pending.push(e),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let (kept, gone) = log.since(last);
                    if let Some(d) = gone
                        && tx.send(Ok(lost(d))).await.is_err()
                    {
                        return;
                    }
                    pending = kept;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
