//! The JSON API's streaming routes: the event stream as Server-Sent
//! Events, and a task's logs as text.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use berth_proto as pb;
use berth_proto::control_server::Control;
use serde::Deserialize;
use tokio_stream::StreamExt as _;

use super::error::{ApiError, Errors};
use super::v1::{P, Q};
use super::{Api, Ctx};

/// How often a quiet event stream sends a comment.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// `GET /v1/events` parameters.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub(crate) struct EventsQuery {
    /// Resume after this event id (`INDEX.SEQ`; also the `Last-Event-ID`
    /// header); `now`: only new events; none: every kept event.
    since: String,
    /// Every task change too (default: failed tasks only).
    all: bool,
    /// Only this app's events.
    app: String,
    /// End after the kept events instead of waiting for more.
    no_follow: bool,
}

#[utoipa::path(get, path = "/v1/events", operation_id = "WatchEvents", tag = "cluster",
    params(EventsQuery, super::v1::Ns),
    responses(
        (status = 200, description = "Server-Sent Events: `id` is the event id, `event` its kind, `data` a ClusterEvent as JSON",
         content_type = "text/event-stream", body = pb::ClusterEvent),
        Errors))]
pub(crate) async fn watch_events(
    State(api): State<Api>,
    ctx: Ctx,
    headers: http::HeaderMap,
    Q(q): Q<EventsQuery>,
) -> Result<Response, ApiError> {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let since = match last {
        Some(id) => id.to_string(),
        None => q.since,
    };
    let r = ctx.req(pb::WatchEventsRequest {
        since,
        all: q.all,
        app: q.app,
        no_follow: q.no_follow,
    });
    let mut stream = api.watch_events(r).await?.into_inner();
    // Events as they come, and a comment after 15 s of quiet so proxies
    // and load balancers keep the stream open; the SSE stream ends with
    // the events (at once when not following).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        loop {
            let next = tokio::time::timeout(KEEP_ALIVE, stream.next()).await;
            let ev = match next {
                Err(_) => Event::default().comment(""),
                Ok(Some(Ok(e))) => {
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    Event::default().id(e.id).event(e.kind).data(data)
                }
                Ok(_) => return,
            };
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response())
}

/// `GET /v1/tasks/{id}/logs` parameters.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub(crate) struct LogsQuery {
    /// Only the last N lines (0: all).
    tail: u64,
    /// Keep the response open and send new lines as they come.
    follow: bool,
    /// Only lines from then on (ms since the epoch).
    since_ms: i64,
    /// Prefix each line with its time and stream.
    timestamps: bool,
}

#[utoipa::path(get, path = "/v1/tasks/{id}/logs", operation_id = "Logs", tag = "tasks",
    params(("id" = String, Path, description = "task id"), LogsQuery,
        super::v1::Ns),
    responses(
        (status = 200, description = "the task's output", content_type = "text/plain", body = String),
        Errors))]
pub(crate) async fn logs(
    State(api): State<Api>,
    ctx: Ctx,
    P(task): P,
    Q(q): Q<LogsQuery>,
) -> Result<Response, ApiError> {
    let r = ctx.req(pb::LogsRequest {
        task,
        follow: q.follow,
        tail: q.tail,
        since_ms: q.since_ms,
        timestamps: q.timestamps,
        ..Default::default()
    });
    let stream = api.logs(r).await?.into_inner();
    let body = axum::body::Body::from_stream(
        stream
            .map_while(|c| c.ok())
            .map(|c| Ok::<_, Infallible>(bytes::Bytes::from(c.data))),
    );
    Ok((
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response())
}
