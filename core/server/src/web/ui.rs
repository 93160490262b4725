//! The dashboard: static pages and scripts under `/ui/` (no build step:
//! plain HTML, CSS and JavaScript, compiled into the binary) that call the
//! JSON API, and the login that turns a token into a session cookie.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use berth_store::Store;
use serde::Deserialize;

use super::SESSION_COOKIE;
use crate::Api;

/// The dashboard's files: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "login.html",
        "text/html; charset=utf-8",
        include_str!("../../ui/login.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "hardware.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/hardware.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];

/// The routes of `/ui/` (open: the pages hold no data; the API calls they
/// make are authorized).
pub(super) fn router(api: Api) -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(|| async { Redirect::to("/ui/") }))
        .route("/ui", axum::routing::get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", axum::routing::get(|| async { file("index.html") }))
        .route(
            "/ui/login",
            axum::routing::post(login).get(|| async { file("login.html") }),
        )
        .route("/ui/logout", axum::routing::post(logout))
        .route(
            "/ui/{file}",
            axum::routing::get(
                |axum::extract::Path(f): axum::extract::Path<String>| async move { file(&f) },
            ),
        )
        .with_state(api.store.clone())
}

fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ty, body)) => (
            [
                (http::header::CONTENT_TYPE, *ty),
                (http::header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (http::StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

/// The login form.
#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Checks the token and keeps it in an HTTP-only, same-site cookie; a
/// bad one goes back to the form with the reason.
async fn login(State(store): State<Store>, form: axum::Form<LoginForm>) -> Response {
    let secret = form.0.token.trim().to_string();
    let now = berth_store::command::now_ms();
    let known = secret.len() <= 256
        && store
            .read()
            .acl
            .token(&crate::auth::hash_secret(&secret), now)
            .is_ok();
    if !known {
        return Redirect::to("/ui/login?error=token").into_response();
    }
    let cookie = format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=43200"
    );
    ([(http::header::SET_COOKIE, cookie)], Redirect::to("/ui/")).into_response()
}

async fn logout() -> Response {
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    (
        [(http::header::SET_COOKIE, cookie)],
        Redirect::to("/ui/login"),
    )
        .into_response()
}
