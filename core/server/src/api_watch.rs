//! `Control.WatchTasks`: the tasks as they are, then every change, for
//! the caller's namespace.

use std::collections::HashMap;

use berth_proto as pb;
use berth_store::Event;
use tonic::{Request, Response, Status};

use crate::api::{Api, BoxStream};
use crate::convert;

impl Api {
    pub(crate) async fn watch_tasks_of(
        &self,
        req: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<BoxStream<pb::TaskEvent>>, Status> {
        let scope = self.scope(&req);
        let app = req.into_inner().app;
        let store = self.store.clone();
        // Whether an app's tasks are the caller's to see (remembered, so a
        // removed app's last events still go out).
        let mut seen: HashMap<String, bool> = HashMap::new();
        let mut visible = move |name: &str| -> bool {
            let Some(ns) = &scope else { return true };
            if let Some(v) = seen.get(name) {
                return *v;
            }
            let v = store
                .read()
                .apps
                .get(name)
                .is_some_and(|a| a.spec.namespace == *ns);
            seen.insert(name.to_string(), v);
            v
        };
        // Subscribe before reading the current state so nothing falls between.
        let mut events = self.store.subscribe();
        let initial: Vec<pb::TaskEvent> = {
            let state = self.store.read();
            let tasks: Box<dyn Iterator<Item = &berth_model::task::Task>> = if app.is_empty() {
                Box::new(state.tasks.values())
            } else {
                Box::new(state.tasks_of(&app))
            };
            tasks
                .filter(|t| visible(&t.app))
                .map(|t| pb::TaskEvent {
                    task: Some(convert::task(t)),
                    removed: false,
                })
                .collect()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            for ev in initial {
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            // One apply is one batch, however many tasks it touched: a
            // watcher is dropped only if it falls millions of events behind.
            while let Some(batch) = events.recv().await {
                for e in &batch.events {
                    let ev = match e {
                        Event::TaskUpdated(t)
                            if (app.is_empty() || t.app == app) && visible(&t.app) =>
                        {
                            pb::TaskEvent {
                                task: Some(convert::task(t)),
                                removed: false,
                            }
                        }
                        Event::TaskRemoved(t)
                            if (app.is_empty() || t.app == app) && visible(&t.app) =>
                        {
                            pb::TaskEvent {
                                task: Some(pb::Task {
                                    id: t.id.clone(),
                                    app: t.app.clone(),
                                    ..Default::default()
                                }),
                                removed: true,
                            }
                        }
                        _ => continue,
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
            }
            let _ = tx
                .send(Err(Status::data_loss(
                    "watcher fell too far behind (or the server stopped); watch again",
                )))
                .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
