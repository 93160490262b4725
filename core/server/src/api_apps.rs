//! `RunApp`, `ListApps` and `ListTasks`: submitting a spec (namespace,
//! admission plugins, image pinning) and listing what the caller's
//! namespace holds.

use berth_model::spec::parse_spec;
use berth_proto as pb;
use berth_store::Command;
use tonic::{Request, Response, Status};

use crate::api::{Api, request_id};
use crate::convert;

impl Api {
    pub(crate) async fn run_app_of(
        &self,
        req: Request<pb::RunAppRequest>,
    ) -> Result<Response<pb::RunAppResponse>, Status> {
        let probe = Request::from_parts(req.metadata().clone(), req.extensions().clone(), ());
        let req = req.into_inner();
        let rid = request_id(req.request_id)?;
        if req.spec.len() > berth_proto::MAX_SPEC {
            return Err(Status::invalid_argument(format!(
                "spec: {} bytes, more than {}",
                req.spec.len(),
                berth_proto::MAX_SPEC
            )));
        }
        // Validation happens before anything is proposed: a bad spec stores nothing.
        let mut spec =
            parse_spec(&req.spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A spec that names no namespace is in the call's.
        if spec.namespace == berth_model::spec::DEFAULT_NAMESPACE
            && let Some(ns) = self.scope(&probe)
        {
            spec.namespace = ns;
        }
        self.admit_namespace(&probe, &spec)?;
        self.check_host_volumes(&spec)?;
        // Admission plugins may refuse or change it (also before anything is stored).
        // Plugins are loaded from a copy, without the state's lock, and
        // only when they changed.
        let changed = {
            let state = self.store.read();
            (!self.plugins.in_step(&state)).then(|| state.plugins_only())
        };
        if let Some(plugins) = changed {
            self.plugins.sync(&plugins);
        }
        let mut spec = if self.plugins.has_admission() {
            let plugins = self.plugins.clone();
            let who = crate::auth::caller(&probe)
                .map(|c| c.who())
                .unwrap_or_default();
            tokio::task::spawn_blocking(move || plugins.admit(spec, &who))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(Status::invalid_argument)?
        } else {
            spec
        };
        // A registry tag becomes the digest it names now: the version runs
        // those bytes everywhere, whatever later happens to the tag.
        self.pin_image(&mut spec).await?;
        let name = spec.name.clone();
        let (_, outcome) = self
            .commit(
                rid,
                Command::PutApp {
                    spec: Box::new(spec),
                },
            )
            .await?;
        Ok(Response::new(self.app_response(name, outcome)))
    }

    pub(crate) async fn list_apps_of(
        &self,
        req: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::ListAppsResponse>, Status> {
        self.barrier(&req).await?;
        let scope = self.scope(&req);
        let state = self.store.read();
        let apps = state
            .apps
            .values()
            .filter(|a| scope.as_ref().is_none_or(|ns| a.spec.namespace == *ns))
            .map(|a| pb::App {
                name: a.spec.name.clone(),
                image: a.spec.image.clone(),
                instances: a.spec.instances,
                version: a.version,
                stopped: a.stopped,
                running: state
                    .tasks_of(&a.spec.name)
                    .filter(|t| {
                        t.version == a.version && t.state == berth_model::task::TaskState::Running
                    })
                    .count() as u32,
                spec: Some(pb::AppSpec::from(&a.spec)),
            })
            .collect();
        Ok(Response::new(pb::ListAppsResponse { apps }))
    }

    pub(crate) async fn list_tasks_of(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.barrier(&req).await?;
        let scope = self.scope(&req);
        let r = req.into_inner();
        let app = r.app;
        if !app.is_empty() && !berth_model::spec::valid_name(&app) {
            return Err(Status::invalid_argument(format!(
                "app: {app:?} is not a valid app name"
            )));
        }
        let page = crate::paging::Page::new(r.page_size, r.page_token)?;
        let state = self.store.read();
        let visible = |t: &&berth_model::task::Task| {
            crate::api_acl::in_scope(&state, scope.as_deref(), &t.app)
        };
        fn listed<'t>(
            state: &berth_store::ClusterState,
            t: &'t berth_model::task::Task,
        ) -> (&'t str, pb::Task) {
            (t.id.as_str(), convert::listed(state, t))
        }
        let (tasks, next_page_token) = if app.is_empty() {
            page.take(
                state
                    .tasks
                    .range::<str, _>((page.start(), std::ops::Bound::Unbounded))
                    .map(|(_, t)| t)
                    .filter(visible)
                    .map(|t| listed(&state, t)),
            )
        } else {
            page.take(
                state
                    .tasks
                    .of_app_from(&app, page.start())
                    .filter(visible)
                    .map(|t| listed(&state, t)),
            )
        };
        Ok(Response::new(pb::ListTasksResponse {
            tasks,
            next_page_token,
        }))
    }
}
